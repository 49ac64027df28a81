//! The daemon end to end on the synthetic source: wire grammar, decodable frames, timestamps,
//! audio byte rate, fan-out isolation, late joins, shutdown, and hostile input.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::Message;

struct Run {
    videos: Vec<(f64, u32, u32, Vec<u8>, f64)>,
    audios: Vec<(f64, usize, f64)>,
}

/// Collects every message for `secs`, checking grammar as it goes.
fn collect(ws: &mut Client, secs: f64) -> Run {
    let start = Instant::now();
    let mut run = Run {
        videos: Vec::new(),
        audios: Vec::new(),
    };
    while start.elapsed().as_secs_f64() < secs {
        let received = unix_now();
        match next_media(ws) {
            Media::Video(Video {
                ts,
                width,
                height,
                jpeg,
            }) => run.videos.push((ts, width, height, jpeg, received)),
            Media::Audio(Audio { ts, pcm }) => run.audios.push((ts, pcm.len(), received)),
        }
    }
    run
}

fn check_stream(run: &Run, width: u32, height: u32, rate: usize, channels: usize, fps: f64) {
    assert!(!run.videos.is_empty(), "no video");
    for (ts, w, h, jpeg, received) in &run.videos {
        assert_eq!((*w, *h), (width, height), "advertised size");
        let (dw, dh, _) = decode_jpeg(jpeg).expect("JPEG decodes");
        assert_eq!((dw as u32, dh as u32), (width, height), "decoded size");
        assert!(
            (received - ts).abs() < 1.0,
            "video ts {ts} vs now {received}"
        );
    }
    for pair in run.videos.windows(2) {
        assert!(pair[1].0 > pair[0].0, "video timestamps must increase");
    }
    let span = run.videos.last().unwrap().0 - run.videos[0].0;
    let measured_fps = (run.videos.len() - 1) as f64 / span;
    assert!(
        (measured_fps - fps).abs() / fps < 0.25,
        "timestamps advance at {measured_fps:.1} fps, want {fps}"
    );

    assert!(run.audios.len() > 10, "audio chunks: {}", run.audios.len());
    for (ts, len, received) in &run.audios {
        assert_eq!(len % (2 * channels), 0, "whole frames");
        assert!(
            (received - ts).abs() < 1.0,
            "audio ts {ts} vs now {received}"
        );
    }
    for pair in run.audios.windows(2) {
        assert!(pair[1].0 > pair[0].0, "audio timestamps must increase");
    }
    // Bytes received match rate x channels x 2 over the time the chunks cover (±3 %).
    let first = run.audios[0].0;
    let (last_ts, last_len, _) = *run.audios.last().unwrap();
    let covered = last_ts + last_len as f64 / (2 * channels * rate) as f64 - first;
    let bytes: usize = run.audios.iter().map(|a| a.1).sum();
    let expected = covered * (rate * channels * 2) as f64;
    assert!(
        (bytes as f64 - expected).abs() / expected < 0.03,
        "audio bytes {bytes}, expected {expected:.0} over {covered:.2}s"
    );
}

#[test]
fn every_message_follows_the_seed_format_and_decodes() {
    let daemon = TestDaemon::new().audio().size(320, 240).fps(15).start();
    let mut ws = daemon.connect("/stream");
    let run = collect(&mut ws, 3.0);
    check_stream(&run, 320, 240, 48_000, 1, 15.0);
}

#[test]
fn stereo_audio_at_a_chosen_rate_has_the_right_byte_rate() {
    let daemon = TestDaemon::new()
        .audio()
        .arg("--audio-channels")
        .arg("2")
        .arg("--audio-samplerate")
        .arg("44100")
        .size(160, 120)
        .fps(10)
        .start();
    let mut ws = daemon.connect("/stream");
    let run = collect(&mut ws, 2.5);
    check_stream(&run, 160, 120, 44_100, 2, 10.0);
}

#[test]
fn a_stalled_client_slows_nobody_and_resumes_with_a_fresh_frame() {
    let fps = 15.0;
    let interval = 1.0 / fps;
    let daemon = TestDaemon::new().fps(15).start();
    let mut steady = daemon.connect("/stream");
    let mut stalled = daemon.connect("/stream");
    // Kernel buffers on the client's side are out of the server's reach: keep the stalled
    // client's small so what it reads after resuming is what the server chose to send.
    let client_rcvbuf = match stalled.get_ref() {
        tungstenite::stream::MaybeTlsStream::Plain(s) => {
            rustix::net::sockopt::set_socket_recv_buffer_size(s, 32 * 1024).expect("SO_RCVBUF");
            rustix::net::sockopt::socket_recv_buffer_size(s).expect("SO_RCVBUF")
        }
        _ => unreachable!("plain TCP"),
    };
    next_video(&mut stalled);
    next_video(&mut steady);

    // The stalled client reads nothing for 3 s; the steady one keeps counting frames.
    let start = Instant::now();
    let mut frames = 0;
    while start.elapsed() < Duration::from_secs(3) {
        next_video(&mut steady);
        frames += 1;
    }
    let steady_fps = f64::from(frames) / start.elapsed().as_secs_f64();
    assert!(
        steady_fps > fps * 0.8,
        "steady client got {steady_fps:.1} fps while another stalled"
    );

    // On resume the client first reads what its own kernel buffered during the stall (out of
    // the server's reach). Behind that, the server may have had at most about one frame in
    // flight (plus TCP_NOTSENT_LOWAT); everything after must be fresh. A server that queued
    // frames for the stalled client would hand it seconds of backlog here instead.
    let mut stale_bytes = 0usize;
    let mut largest = 0usize;
    let mut first_fresh_age = None;
    for _ in 0..200 {
        let Video { ts, jpeg, .. } = next_video(&mut stalled);
        let age = unix_now() - ts;
        let message_len = jpeg.len().div_ceil(3) * 4 + 40;
        largest = largest.max(message_len);
        if age <= 2.0 * interval {
            first_fresh_age = Some(age);
            break;
        }
        stale_bytes += message_len;
    }
    let age = first_fresh_age.expect("a fresh frame after resuming");
    assert!(age <= 2.0 * interval, "first fresh frame is {age:.3}s old");
    let bound = client_rcvbuf + 3 * largest + 16 * 1024;
    assert!(
        stale_bytes <= bound,
        "{stale_bytes} bytes of stale frames after resuming; client buffer {client_rcvbuf}, \
         frames of {largest} bytes: the server queued a backlog"
    );
}

#[test]
fn a_late_client_gets_a_fresh_first_frame() {
    let interval = 1.0 / 15.0;
    let daemon = TestDaemon::new().fps(15).start();
    std::thread::sleep(Duration::from_secs(3));
    let mut ws = daemon.connect("/stream");
    let ts = next_video(&mut ws).ts;
    let age = unix_now() - ts;
    assert!(age < 2.0 * interval, "first frame is {age:.3}s old");
}

#[test]
fn sigterm_closes_clients_with_1001_and_exits_zero_within_a_second() {
    let mut daemon = TestDaemon::new().audio().start();
    let mut clients = vec![
        daemon.connect("/stream"),
        daemon.connect("/stream?format=binary"),
    ];
    for c in &mut clients {
        c.read().expect("a first message");
    }
    let sent = Instant::now();
    daemon.terminate();
    let status = daemon
        .wait_exit(Duration::from_secs(5))
        .expect("daemon exits");
    let took = sent.elapsed();
    assert!(status.success(), "exit status {status:?}");
    assert!(took < Duration::from_secs(1), "shutdown took {took:?}");
    for mut c in clients {
        let code = loop {
            match c.read() {
                Ok(Message::Close(frame)) => break frame.map(|f| f.code),
                Ok(_) => continue,
                Err(e) => panic!("connection ended without a close frame: {e}"),
            }
        };
        assert_eq!(code, Some(CloseCode::Away));
    }
}

/// A second client keeps streaming while the first misbehaves.
fn still_serving(daemon: &Daemon, witness: &mut Client) {
    let before = next_video(witness).ts;
    let after = next_video(witness).ts;
    assert!(after > before, "witness stream stalled");
    let mut fresh = daemon.connect("/stream");
    next_video(&mut fresh);
}

#[test]
fn hostile_requests_end_only_their_own_connection() {
    let daemon = TestDaemon::new().fps(20).start();
    let mut witness = daemon.connect("/stream");

    let plain = daemon.raw_request(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(plain.starts_with("HTTP/1.1 426 "), "{plain}");
    still_serving(&daemon, &mut witness);

    let garbage = daemon.raw_request(b"\x16\x03\x01\x00\xa5garbage\r\n\r\n");
    assert!(garbage.starts_with("HTTP/1.1 400 "), "{garbage}");
    still_serving(&daemon, &mut witness);

    let mut big = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
    big.resize(64 * 1024, b'a');
    big.extend_from_slice(b"\r\n\r\n");
    let answer = daemon.raw_request(&big);
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    still_serving(&daemon, &mut witness);

    let missing = daemon.get("/no-such-page");
    assert!(missing.raw.starts_with(b"HTTP/1.1 404 "), "{missing}");

    // A 1 MiB text frame from a client: that client is closed, nobody else notices.
    let mut loud = daemon.connect("/stream");
    let _ = loud.send(Message::text("x".repeat(1 << 20)));
    let ended = loop {
        match loud.read() {
            Ok(Message::Close(frame)) => break frame.map(|f| f.code),
            Ok(_) => continue,
            Err(_) => break None,
        }
    };
    assert!(
        matches!(ended, Some(CloseCode::Size) | None),
        "oversized message ended with {ended:?}"
    );
    still_serving(&daemon, &mut witness);
}

#[test]
fn half_sent_heads_time_out_without_blocking_others() {
    let daemon = TestDaemon::new().start();
    let mut idle = TcpStream::connect(("127.0.0.1", daemon.port)).unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    let mut witness = daemon.connect("/stream");
    still_serving(&daemon, &mut witness);
    idle.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut answer = String::new();
    let _ = idle.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
}

#[test]
fn binary_clients_get_headers_and_raw_jpeg() {
    let daemon = TestDaemon::new().audio().size(320, 240).start();
    let mut ws = daemon.connect("/stream?format=binary");
    let (mut video, mut audio) = (0, 0);
    while video < 3 || audio < 3 {
        match ws.read().expect("message") {
            Message::Binary(b) => {
                assert!(b.len() > 16);
                let ts = f64::from_le_bytes(b[4..12].try_into().unwrap());
                assert!((unix_now() - ts).abs() < 1.0);
                match b[0] {
                    1 => {
                        let w = u16::from_le_bytes([b[12], b[13]]);
                        let h = u16::from_le_bytes([b[14], b[15]]);
                        assert_eq!((w, h), (320, 240));
                        let (dw, dh, _) = decode_jpeg(&b[16..]).expect("raw JPEG");
                        assert_eq!((dw, dh), (320, 240));
                        video += 1;
                    }
                    2 => {
                        assert_eq!(b[1], 1, "channels");
                        let rate = u32::from_le_bytes(b[12..16].try_into().unwrap());
                        assert_eq!(rate, 48_000);
                        assert_eq!((b.len() - 16) % 2, 0);
                        audio += 1;
                    }
                    k => panic!("unknown kind {k}"),
                }
            }
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("binary client got {other:?}"),
        }
    }
}

/// Sends `clock:<client_time>` and reads until the answer: (received, sent) server times.
fn clock_exchange(ws: &mut Client, client_time: &str) -> (f64, f64) {
    ws.send(Message::text(format!("clock:{client_time}")))
        .expect("send clock");
    for _ in 0..500 {
        if let Message::Text(t) = ws.read().expect("message") {
            let Some(rest) = t.as_str().strip_prefix("clock:") else {
                continue;
            };
            let parts: Vec<&str> = rest.split(':').collect();
            assert_eq!(parts.len(), 3, "clock:<client>:<received>:<sent>: {t}");
            assert_eq!(parts[0].parse::<f64>(), client_time.parse::<f64>(), "{t}");
            let received: f64 = parts[1].parse().expect("received time");
            let sent: f64 = parts[2].parse().expect("sent time");
            return (received, sent);
        }
    }
    panic!("no clock answer within 500 messages");
}

#[test]
fn clock_requests_are_answered_in_both_framings_and_other_text_is_ignored() {
    let daemon = TestDaemon::new().audio().start();
    for path in ["/stream", "/stream?format=binary"] {
        let mut ws = daemon.connect(path);
        // Not commands: ignored, the session goes on.
        ws.send(Message::text("hello")).expect("send");
        ws.send(Message::text("keyframe")).expect("send"); // an MJPEG client: nothing to do
        for client_time in ["1733140000123.5", "-7", "0"] {
            let before = unix_now();
            let (received, sent) = clock_exchange(&mut ws, client_time);
            let after = unix_now();
            assert!(
                received <= sent,
                "{path}: received {received} > sent {sent}"
            );
            // The capture clock is this machine's clock here: within the exchange.
            assert!(
                received > before - 0.05 && sent < after + 0.05,
                "{path}: {before} ≤ {received} ≤ {sent} ≤ {after}"
            );
        }
        // And the stream itself continues in its framing.
        let video = (0..500).find_map(|_| match ws.read().expect("message") {
            Message::Text(t) if t.as_str().starts_with("video:") => Some("text"),
            Message::Binary(b) if b.first() == Some(&1) => Some("binary"),
            _ => None,
        });
        let want = if path.contains("binary") {
            "binary"
        } else {
            "text"
        };
        assert_eq!(video, Some(want), "{path}: video after the commands");
    }
}

#[test]
fn status_reports_configuration_and_the_client_page_is_served() {
    let daemon = TestDaemon::new().audio().fps(12).start();
    std::thread::sleep(Duration::from_millis(300));
    let status = daemon.get("/status");
    assert!(status.raw.starts_with(b"HTTP/1.1 200 "), "{status}");
    let json = status.header("content-type");
    assert!(json.is_some_and(|t| t.contains("application/json")));
    assert!(status.text().contains("\"fps\":12"), "{status}");
    assert!(status.text().contains("\"sample_rate\":48000"), "{status}");
    let page = daemon.get("/");
    assert!(page.raw.starts_with(b"HTTP/1.1 200 "));
    let html = page.header("content-type");
    assert!(html.is_some_and(|t| t.contains("text/html")));
    let nope = daemon.get("/../Cargo.toml");
    assert!(nope.raw.starts_with(b"HTTP/1.1 404 "), "{nope}");
}

#[test]
fn no_client_serves_only_the_stream() {
    let daemon = TestDaemon::new().arg("--no-client").start();
    let page = daemon.get("/");
    assert!(page.raw.starts_with(b"HTTP/1.1 404 "), "{page}");
    let mut ws = daemon.connect("/stream");
    next_video(&mut ws);
}

/// Runs the daemon with `args` (test camera) and checks it exits 2 with `said` on stderr.
fn refused(args: &[&str], said: &str) {
    let out = daemon_command()
        .args(["--camera-type", "test"])
        .args(args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{args:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(said), "{args:?}: {err}");
}

#[test]
fn bad_flags_exit_2_naming_the_flag_and_help_exits_0() {
    refused(
        &["--quality", "0"],
        "--quality: must be between 1 and 100 (got 0)",
    );

    let out = daemon_command()
        .arg("--camera-type")
        .arg("webcam")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    let out = daemon_command().arg("-h").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--audio-queue-size"));
}

#[test]
fn an_unavailable_camera_streams_placeholders_instead_of_exiting() {
    // The default build has no USB backend: the daemon must keep serving "NO SIGNAL".
    // (With the backend, /dev/video99 does not exist here either.)
    let daemon = TestDaemon::new()
        .camera("usb")
        .arg("--device-id")
        .arg("99")
        .size(320, 240)
        .start();
    let mut ws = daemon.connect("/stream");
    let Video {
        width,
        height,
        jpeg,
        ..
    } = next_video(&mut ws);
    assert_eq!((width, height), (320, 240));
    let (w, h, _) = decode_jpeg(&jpeg).unwrap();
    assert_eq!((w, h), (320, 240));
    assert!(
        daemon.log_text().contains("video source: "),
        "log explains why: {}",
        daemon.log_text()
    );
}

/// Names of the daemon's threads, from /proc.
fn thread_names(daemon: &Daemon) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{}/task", daemon.child.id())).expect("/proc");
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect()
}

#[test]
fn every_encoder_thread_count_sends_decodable_frames_in_capture_order() {
    for threads in [1, 3] {
        let daemon = TestDaemon::new()
            .size(640, 480)
            .fps(15)
            .args(["--encoder-threads", &threads.to_string()])
            .start();
        let mut ws = daemon.connect("/stream");
        let run = collect(&mut ws, 2.0);
        assert!(run.videos.len() >= 10, "{threads} threads: frames arrive");
        for (ts, w, h, jpeg, received) in &run.videos {
            assert_eq!((*w, *h), (640, 480));
            let (dw, dh, _) = decode_jpeg(jpeg).expect("JPEG decodes");
            assert_eq!((dw, dh), (640, 480));
            assert!((received - ts).abs() < 1.0, "ts {ts} vs now {received}");
        }
        for pair in run.videos.windows(2) {
            assert!(pair[1].0 > pair[0].0, "{threads} threads: in capture order");
        }
        let span = run.videos.last().unwrap().0 - run.videos[0].0;
        let fps = (run.videos.len() - 1) as f64 / span;
        assert!(
            (fps - 15.0).abs() / 15.0 < 0.25,
            "{threads} threads: {fps:.1} fps, want 15"
        );
        let encoders = thread_names(&daemon)
            .into_iter()
            .filter(|n| n.starts_with("jpeg-encode"))
            .count();
        // One thread: the capture thread encodes, no pool.
        assert_eq!(encoders, if threads == 1 { 0 } else { threads });
        let status = daemon.get("/status").text();
        assert!(status.contains("\"video_encoder_dropped\":"), "{status}");
    }
    refused(
        &["--encoder-threads", "17"],
        "--encoder-threads: must be between 1 and 16 (got 17)",
    );
}

#[test]
fn jpeg_encoder_flag_runs_libjpeg_turbo_here_and_v4l2_without_hardware_exits_2() {
    // No memory-to-memory JPEG encoder on this machine (or CI's): auto and cpu encode with
    // libjpeg-turbo, /status and /metrics say so, and v4l2 is refused at start.
    for kind in ["auto", "cpu"] {
        let daemon = TestDaemon::new()
            .size(320, 240)
            .fps(15)
            .args(["--jpeg-encoder", kind])
            .start();
        let mut ws = daemon.connect("/stream");
        let run = collect(&mut ws, 1.0);
        assert!(run.videos.len() >= 5, "{kind}: frames arrive");
        for (_, _, _, jpeg, _) in &run.videos {
            assert_eq!(decode_jpeg(jpeg).expect("JPEG decodes").0, 320);
        }
        let status = daemon.get("/status").text();
        let want = format!("\"encoder\":\"{kind}\",\"encoder_in_use\":\"cpu\"");
        assert!(status.contains(&want), "{kind}: {status}");
        assert!(status.contains("\"jpeg_hardware_units\":0,"), "{status}");
        assert!(!status.contains("\"jpeg_cpu_units\":0,"), "{status}");
        let metrics = daemon.get("/metrics").text();
        for line in [
            "rpi_streamer_encoder_fallbacks_total{codec=\"jpeg\"} 0",
            "rpi_streamer_jpeg_units_by_encoder_total{encoder=\"v4l2\"} 0",
            // Only the hardware's conversion is shared with H.264.
            "rpi_streamer_h264_shared_pictures_total 0",
            // The synthetic camera lends no buffer to read in place.
            "rpi_streamer_h264_zero_copy_units_total 0",
        ] {
            assert!(metrics.lines().any(|l| l == line), "{kind}: no {line}");
        }
    }
    for (value, said) in [
        ("v4l2", "--jpeg-encoder: v4l2: "),
        (
            "gpu",
            "--jpeg-encoder: must be one of auto, cpu, v4l2 (got \"gpu\")",
        ),
    ] {
        refused(&["--jpeg-encoder", value], said);
    }
}
