//! H.264 on `/stream?video=h264`, end to end on the synthetic source, checked with an
//! independent decoder (Debian's ffmpeg/ffprobe): every access unit decodes, sizes and
//! timestamps match the headers, colours come out right, late joiners and stalled clients
//! start at keyframes, the bitrate follows `--h264-bitrate`, and MJPEG clients beside them
//! see no change.
//!
//! The ffmpeg tests skip with a message when ffmpeg is missing, except in CI (`CI` set),
//! where scripts/test installs it and a skip would hide a failure.

#![cfg(feature = "h264")]

mod common;

use base64::Engine as _;
use common::*;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tungstenite::Message;

/// True if ffmpeg can run; panics in CI when it cannot.
fn have_ffmpeg() -> bool {
    have_ffmpeg_tool("ffmpeg")
}

/// One H.264 message, from either framing.
#[derive(Debug, Clone)]
struct Unit {
    ts: f64,
    width: u32,
    height: u32,
    key: bool,
    data: Vec<u8>,
    /// When the client read it.
    received: Instant,
}

/// `h264:<ts>:<w>:<h>:<key>:<base64>`, strictly.
fn parse_h264_text(msg: &str) -> Result<Unit, String> {
    let rest = msg
        .strip_prefix("h264:")
        .ok_or_else(|| format!("not an h264 message: {:?}", &msg[..msg.len().min(30)]))?;
    let mut f = rest.splitn(5, ':');
    let mut next = |what: &str| f.next().ok_or(format!("no {what}"));
    let ts_text = next("ts")?;
    let (_, frac) = ts_text.split_once('.').ok_or("ts without '.'")?;
    if frac.len() != 6 {
        return Err(format!("ts {ts_text:?}: want 6 fractional digits"));
    }
    let ts: f64 = ts_text.parse().map_err(|e| format!("ts: {e}"))?;
    let width = next("width")?.parse().map_err(|e| format!("width: {e}"))?;
    let height = next("height")?
        .parse()
        .map_err(|e| format!("height: {e}"))?;
    let key = match next("key")? {
        "1" => true,
        "0" => false,
        other => return Err(format!("key field {other:?} is not 0 or 1")),
    };
    let data = base64::engine::general_purpose::STANDARD
        .decode(next("payload")?)
        .map_err(|e| format!("base64: {e}"))?;
    Ok(Unit {
        ts,
        width,
        height,
        key,
        data,
        received: Instant::now(),
    })
}

/// A binary kind-3 message: the 16-byte header, then the access unit.
fn parse_h264_binary(b: &[u8]) -> Result<Unit, String> {
    if b.len() < 16 || b[0] != 3 {
        return Err(format!("not a kind-3 message: {:?}", &b[..b.len().min(4)]));
    }
    if b[2] != 0 || b[3] != 0 {
        return Err("reserved header bytes are not 0".into());
    }
    Ok(Unit {
        ts: f64::from_le_bytes(b[4..12].try_into().map_err(|_| "ts")?),
        width: u16::from_le_bytes([b[12], b[13]]).into(),
        height: u16::from_le_bytes([b[14], b[15]]).into(),
        key: b[1] & 2 != 0,
        data: b[16..].to_vec(),
        received: Instant::now(),
    })
}

/// Reads H.264 messages for `how_long` (audio and pings are skipped).
fn read_units(ws: &mut Client, how_long: Duration) -> Vec<Unit> {
    let start = Instant::now();
    let mut units = Vec::new();
    while start.elapsed() < how_long {
        match ws.read().expect("read a message") {
            Message::Text(t) if t.as_str().starts_with("audio:") => {}
            Message::Text(t) => units.push(parse_h264_text(t.as_str()).expect("h264 grammar")),
            Message::Binary(b) if b.first() == Some(&2) => {}
            Message::Binary(b) => units.push(parse_h264_binary(&b).expect("kind 3 layout")),
            _ => {}
        }
    }
    units
}

/// The NAL unit types in an Annex-B access unit.
fn nal_types(data: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    let mut i = 0;
    while i + 3 < data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            types.push(data[i + 3] & 0x1f);
            i += 3;
        } else {
            i += 1;
        }
    }
    types
}

/// Decodes an Annex-B stream with ffmpeg: (frames as RGB24, ffmpeg's error output).
fn ffmpeg_decode(stream: &[u8], width: u32, height: u32) -> (Vec<Vec<u8>>, String) {
    let mut child = Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-f", "h264", "-i", "pipe:0"])
        .args([
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-vsync",
            "passthrough",
            "pipe:1",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ffmpeg");
    let mut stdin = child.stdin.take().expect("stdin");
    let data = stream.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().expect("ffmpeg output");
    let _ = feeder.join();
    let size = (width * height * 3) as usize;
    let frames = out.stdout.chunks_exact(size).map(<[u8]>::to_vec).collect();
    (frames, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn concat(units: &[Unit]) -> Vec<u8> {
    units.iter().flat_map(|u| u.data.iter().copied()).collect()
}

fn status(daemon: &Daemon) -> String {
    daemon.get("/status").text()
}

/// The number after `"key":` inside the `"codec"` object of `/status`.
fn codec_counter(status: &str, codec: &str, key: &str) -> f64 {
    let at = status
        .find(&format!("\"{codec}\":{{\"clients\""))
        .unwrap_or_else(|| panic!("no {codec} entry in {status}"));
    let rest = &status[at..];
    let k = rest
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("no {key} in {rest}"));
    rest[k + key.len() + 3..]
        .split([',', '}'])
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{key} is not a number in {rest}"))
}

#[test]
fn ten_seconds_of_h264_decode_with_ffmpeg_at_the_target_bitrate_beside_an_mjpeg_client() {
    if !have_ffmpeg() {
        return;
    }
    let daemon = TestDaemon::new()
        .fps(15)
        .arg("--h264-bitrate")
        .arg("1000")
        .audio()
        // A camera-like scene: its noise needs every bit it is given, so rate control is
        // what sets the bitrate (the flat test pattern needs less than 1000 kbit/s).
        .arg("--test-scene")
        .arg("static-noisy")
        .start();
    let mut mjpeg = daemon.connect("/stream");
    let mjpeg_reader = std::thread::spawn(move || {
        let start = Instant::now();
        let mut frames = 0;
        while start.elapsed() < Duration::from_secs(10) {
            if let Media::Video(Video {
                width,
                height,
                jpeg,
                ..
            }) = next_media(&mut mjpeg)
            {
                assert_eq!((width, height), (640, 480));
                if frames % 15 == 0 {
                    decode_jpeg(&jpeg).expect("MJPEG frames still decode");
                }
                frames += 1;
            }
        }
        frames
    });
    let mut ws = daemon.connect("/stream?video=h264");
    let units = read_units(&mut ws, Duration::from_secs(10));
    let mjpeg_frames = mjpeg_reader.join().expect("mjpeg reader");

    assert!(
        units.len() >= 100,
        "{} units in 10 s at 15 fps",
        units.len()
    );
    assert!(units[0].key, "the first unit is a keyframe");
    for pair in units.windows(2) {
        assert!(pair[1].ts > pair[0].ts, "timestamps increase: {pair:?}");
    }
    let now = unix_now();
    assert!(
        units.iter().all(|u| (now - u.ts).abs() < 30.0),
        "UNIX capture times"
    );
    assert!(units.iter().all(|u| (u.width, u.height) == (640, 480)));
    for u in units.iter().filter(|u| u.key) {
        assert_eq!(
            &nal_types(&u.data)[..2],
            &[7, 8],
            "SPS and PPS on every keyframe"
        );
        assert!(nal_types(&u.data).contains(&5), "an IDR slice");
    }
    let keys = units.iter().filter(|u| u.key).count();
    assert!(
        (4..=8).contains(&keys),
        "{keys} keyframes in 10 s at the 2 s interval"
    );

    let (frames, errors) = ffmpeg_decode(&concat(&units), 640, 480);
    assert_eq!(errors.trim(), "", "ffmpeg reported errors");
    assert_eq!(
        frames.len(),
        units.len(),
        "every access unit is one decoded frame"
    );
    // The colour bars' top-left band is light grey (192,192,192) or the next bar: check the
    // frame-marker square instead, which is one of six saturated colours in every frame.
    let palette = TEST_PALETTE_RGB;
    let side = 480 / 6;
    for (i, f) in frames.iter().enumerate().step_by(15) {
        let (x, y) = (640 - side / 2, side / 2);
        let px = &f[(y * 640 + x) * 3..][..3];
        let near = palette.iter().any(|c| {
            c.iter()
                .zip(px)
                .all(|(a, b)| (i32::from(*a) - i32::from(*b)).abs() < 40)
        });
        assert!(
            near,
            "frame {i}: marker colour {px:?} is not one of the palette"
        );
    }

    let seconds = units.last().unwrap().ts - units[0].ts;
    let kbps = concat(&units[1..]).len() as f64 * 8.0 / seconds / 1e3;
    println!(
        "{} units, {keys} keyframes, {kbps:.0} kbit/s over {seconds:.1} s",
        units.len()
    );
    assert!(
        (750.0..=1250.0).contains(&kbps),
        "bitrate {kbps:.0} kbit/s is not within 25 % of --h264-bitrate 1000"
    );
    // Same camera, same rate: the H.264 client costs the MJPEG one nothing.
    assert!(
        mjpeg_frames * 10 >= units.len() * 9,
        "the MJPEG client beside it got {mjpeg_frames} frames, the H.264 one {}",
        units.len()
    );
}

#[test]
fn binary_framing_flags_keyframes_and_a_late_joiner_starts_at_one_that_decodes_at_once() {
    if !have_ffmpeg() {
        return;
    }
    let daemon = TestDaemon::new().fps(30).start();
    let mut first = daemon.connect("/stream?video=h264&format=binary");
    let early = read_units(&mut first, Duration::from_secs(2));
    assert!(early[0].key && early.len() > 40, "{} units", early.len());
    assert!(
        early[1..].iter().any(|u| !u.key),
        "delta units have flag bit 1 clear"
    );
    // Join in the middle of a group of pictures, several times.
    let mut waits = Vec::new();
    for round in 0..4 {
        std::thread::sleep(Duration::from_millis(330 + round * 170));
        let joined = Instant::now();
        let mut late = daemon.connect("/stream?video=h264&format=binary");
        let units = read_units(&mut late, Duration::from_millis(600));
        assert!(units[0].key, "round {round}: the first unit is a keyframe");
        waits.push(units[0].received.duration_since(joined));
        let (frames, errors) = ffmpeg_decode(&units[0].data, 640, 480);
        assert_eq!(errors.trim(), "", "round {round}");
        assert_eq!(
            frames.len(),
            1,
            "round {round}: the first unit alone decodes"
        );
        let (all, errors) = ffmpeg_decode(&concat(&units), 640, 480);
        assert_eq!(errors.trim(), "", "round {round}");
        assert_eq!(all.len(), units.len(), "round {round}");
    }
    println!("first keyframe after connecting: {waits:?}");
    let s = status(&daemon);
    assert!(
        codec_counter(&s, "h264", "keyframes_forced") >= 1.0,
        "joins forced keyframes: {s}"
    );
}

#[test]
fn a_stalled_client_resumes_at_a_keyframe_and_decodes_without_errors() {
    if !have_ffmpeg() {
        return;
    }
    let daemon = TestDaemon::new()
        .fps(30)
        .arg("--keyframe-interval")
        .arg("10")
        .start();
    let stream = std::net::TcpStream::connect(("127.0.0.1", daemon.port)).expect("connect");
    rustix::net::sockopt::set_socket_recv_buffer_size(&stream, 4096).expect("SO_RCVBUF");
    let (mut ws, _) = tungstenite::client(
        daemon.url("/stream?video=h264"),
        tungstenite::stream::MaybeTlsStream::Plain(stream),
    )
    .expect("upgrade");
    set_read_timeout(&ws, Duration::from_secs(5));
    let mut units = read_units(&mut ws, Duration::from_secs(1));
    std::thread::sleep(Duration::from_secs(3));
    units.extend(read_units(&mut ws, Duration::from_secs(2)));
    // Where the stall was: the largest gap between capture times.
    let (gap_at, gap) = units
        .windows(2)
        .enumerate()
        .map(|(i, w)| (i + 1, w[1].ts - w[0].ts))
        .fold((0, 0.0), |best, x| if x.1 > best.1 { x } else { best });
    assert!(
        gap > 0.5,
        "the stall skipped units (largest gap {gap:.3} s)"
    );
    // Units already in socket buffers may come first; the first after the skip is a keyframe.
    let resumed = units[gap_at..]
        .iter()
        .position(|u| u.key)
        .expect("a keyframe after the stall");
    assert!(
        units[gap_at..gap_at + resumed].iter().all(|u| !u.key) && resumed <= 1,
        "resumed at a keyframe ({resumed} units before it)"
    );
    let (frames, errors) = ffmpeg_decode(&concat(&units), 640, 480);
    assert_eq!(errors.trim(), "", "ffmpeg reported errors");
    assert_eq!(frames.len(), units.len());
    let s = status(&daemon);
    assert!(codec_counter(&s, "h264", "client_skipped") > 10.0, "{s}");
}

#[test]
fn each_codec_is_encoded_only_while_someone_watches_it() {
    let daemon = TestDaemon::new().fps(30).start();
    std::thread::sleep(Duration::from_millis(500));
    let idle = status(&daemon);
    assert_eq!(codec_counter(&idle, "mjpeg", "units"), 0.0, "{idle}");
    assert_eq!(codec_counter(&idle, "h264", "units"), 0.0, "{idle}");

    let mut h264 = daemon.connect("/stream?video=h264");
    let got = read_units(&mut h264, Duration::from_secs(1));
    assert!(got.len() > 20);
    let s = status(&daemon);
    assert_eq!(codec_counter(&s, "mjpeg", "units"), 0.0, "H.264 only: {s}");
    assert_eq!(codec_counter(&s, "h264", "clients"), 1.0, "{s}");
    // No memory-to-memory encoder on this machine: auto chose OpenH264.
    assert!(s.contains("\"encoder_in_use\":\"software\""), "{s}");
    drop(h264);

    let mut mjpeg = daemon.connect("/stream");
    next_video(&mut mjpeg);
    std::thread::sleep(Duration::from_millis(300));
    let before = codec_counter(&status(&daemon), "h264", "units");
    for _ in 0..20 {
        next_video(&mut mjpeg);
    }
    let after = status(&daemon);
    assert_eq!(
        codec_counter(&after, "h264", "units"),
        before,
        "MJPEG only: {after}"
    );
    assert!(codec_counter(&after, "mjpeg", "units") >= 20.0);
    let metrics = daemon.get("/metrics");
    assert!(
        metrics
            .text()
            .contains("rpi_streamer_clients_by_codec{codec=\"mjpeg\"} 1"),
        "{metrics}"
    );
}

#[test]
fn unknown_codecs_are_refused_with_the_list() {
    let daemon = TestDaemon::new().start();
    let answer = daemon.raw_request(
        b"GET /stream?video=vp8 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("mjpeg, h264"), "{answer}");
}

#[test]
fn a_crowd_of_joiners_all_start_at_keyframes_without_turning_the_stream_into_keyframes() {
    let daemon = TestDaemon::new().fps(30).start();
    let mut first = daemon.connect("/stream?video=h264&format=binary");
    read_units(&mut first, Duration::from_millis(500));
    let before = codec_counter(&status(&daemon), "h264", "keyframes_forced");
    let frames_before = codec_counter(&status(&daemon), "h264", "units");
    let mut crowd = Vec::new();
    for _ in 0..12 {
        crowd.push(daemon.connect("/stream?video=h264&format=binary"));
        std::thread::sleep(Duration::from_millis(40));
    }
    for (i, ws) in crowd.iter_mut().enumerate() {
        let units = read_units(ws, Duration::from_millis(200));
        assert!(
            units.first().is_some_and(|u| u.key),
            "joiner {i} starts at a keyframe"
        );
    }
    let s = status(&daemon);
    let forced = codec_counter(&s, "h264", "keyframes_forced") - before;
    let frames = codec_counter(&s, "h264", "units") - frames_before;
    // No forced keyframe sooner than 8 frames after the last one.
    assert!(
        forced <= (frames / 8.0).ceil() + 1.0,
        "{forced} keyframes forced for 12 joiners over {frames} frames"
    );
    println!("12 joiners: {forced} forced keyframes over {frames} frames");
}

#[test]
fn a_client_asking_for_a_keyframe_gets_one_within_a_few_frames() {
    // Intervals of 10 s: within the test no keyframe comes but the requested ones.
    let daemon = TestDaemon::new()
        .fps(30)
        .arg("--keyframe-interval")
        .arg("10")
        .start();
    let mut ws = daemon.connect("/stream?video=h264&format=binary");
    let start = read_units(&mut ws, Duration::from_secs(1));
    assert!(start[0].key, "starts at a keyframe");
    assert!(
        start[1..].iter().all(|u| !u.key),
        "no keyframe but the first within 1 s"
    );
    for round in 0..3 {
        ws.send(Message::text("keyframe")).expect("send keyframe");
        let asked = Instant::now();
        let units = read_units(&mut ws, Duration::from_millis(700));
        let key = units
            .iter()
            .position(|u| u.key)
            .unwrap_or_else(|| panic!("round {round}: no keyframe in {} units", units.len()));
        println!(
            "round {round}: keyframe after {:?} ({key} units before it)",
            units[key].received.duration_since(asked)
        );
        assert!(
            units[key + 1..].iter().all(|u| !u.key),
            "round {round}: one keyframe per request"
        );
    }
    let s = status(&daemon);
    assert!(
        codec_counter(&s, "h264", "keyframes_forced") >= 3.0,
        "requests forced keyframes: {s}"
    );
}
