//! Multipart MJPEG over HTTP (`/stream.mjpg`, mjpg-streamer's `/?action=stream|snapshot`)
//! read by real clients: Debian's ffprobe and ffmpeg, and a strict raw-socket reader.
//!
//! The ffmpeg tests skip with a message when ffprobe is missing, except in CI (`CI` set),
//! where scripts/test installs it (Debian's ffmpeg) and a skip would hide a failure.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

const BOUNDARY: &str = "rpi-streamer-frame";

/// True if ffprobe can run; panics in CI when it cannot.
fn have_ffmpeg() -> bool {
    have_ffmpeg_tool("ffprobe")
}

/// One JPEG part of the stream.
struct Part {
    ts: f64,
    jpeg: Vec<u8>,
}

/// A strict multipart reader on a raw socket.
struct MjpegReader {
    head: String,
    reader: BufReader<TcpStream>,
    parts_read: usize,
}

impl MjpegReader {
    /// Sends `request` (a whole head) on a new socket and reads the response head; with
    /// `rcvbuf`, the socket's receive buffer is set that small before connecting.
    fn open(daemon: &Daemon, request: &str, rcvbuf: Option<usize>) -> MjpegReader {
        let stream = TcpStream::connect(("127.0.0.1", daemon.port)).expect("connect");
        if let Some(size) = rcvbuf {
            rustix::net::sockopt::set_socket_recv_buffer_size(&stream, size).expect("SO_RCVBUF");
        }
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        (&stream).write_all(request.as_bytes()).expect("send head");
        let mut reader = BufReader::with_capacity(4096, stream);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("read response head");
            if line.is_empty() || line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        MjpegReader {
            head,
            reader,
            parts_read: 0,
        }
    }

    fn get(daemon: &Daemon, target: &str) -> MjpegReader {
        MjpegReader::open(
            daemon,
            &format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n"),
            None,
        )
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("read a line");
        assert!(line.ends_with("\r\n"), "line {line:?} does not end in CRLF");
        line
    }

    /// The next part, checking the framing exactly.
    fn next_part(&mut self) -> Part {
        let mut line = self.line();
        if self.parts_read > 0 {
            assert_eq!(line, "\r\n", "a part's body ends with CRLF");
            line = self.line();
        }
        assert_eq!(line, format!("--{BOUNDARY}\r\n"), "boundary");
        let (mut length, mut ts, mut content_type) = (None, None, None);
        loop {
            let line = self.line();
            if line == "\r\n" {
                break;
            }
            let (name, value) = line.trim_end().split_once(": ").expect("a header line");
            match name {
                "Content-Type" => content_type = Some(value.to_string()),
                "Content-Length" => length = Some(value.parse::<usize>().expect("a length")),
                "X-Timestamp" => ts = Some(value.parse::<f64>().expect("a timestamp")),
                other => panic!("unexpected part header {other}"),
            }
        }
        assert_eq!(content_type.as_deref(), Some("image/jpeg"));
        let mut jpeg = vec![0; length.expect("Content-Length")];
        self.reader.read_exact(&mut jpeg).expect("the JPEG");
        self.parts_read += 1;
        Part {
            ts: ts.expect("X-Timestamp"),
            jpeg,
        }
    }
}

#[test]
fn ffprobe_reads_five_seconds_at_the_configured_rate_and_every_frame_decodes() {
    if !have_ffmpeg() {
        return;
    }
    let fps = 15.0;
    let daemon = TestDaemon::new().fps(15).start();
    let url = format!("http://127.0.0.1:{}/stream.mjpg", daemon.port);
    // Wall-clock timestamps make `%+5` mean five seconds of reading, not of stream time.
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-use_wallclock_as_timestamps", "1"])
        .args(["-read_intervals", "%+5", "-select_streams", "v"])
        .args([
            "-show_entries",
            "frame=width,height,pix_fmt",
            "-of",
            "csv=p=0",
        ])
        .arg(&url)
        .output()
        .expect("run ffprobe");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ffprobe failed: {stderr}");
    assert!(
        stderr.trim().is_empty(),
        "ffprobe reported errors: {stderr}"
    );
    let frames: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    for frame in &frames {
        assert!(frame.starts_with("640,480,"), "decoded frame {frame}");
    }
    let measured = frames.len() as f64 / 5.0;
    eprintln!(
        "ffprobe: {} frames in 5 s = {measured:.1} fps",
        frames.len()
    );
    assert!(
        (measured - fps).abs() / fps <= 0.10,
        "ffprobe read {} frames in 5 s ({measured:.1} fps), want {fps} fps within 10 %",
        frames.len()
    );
}

#[test]
fn ffmpeg_decodes_the_mjpg_streamer_url_at_the_requested_fps() {
    if !have_ffmpeg() {
        return;
    }
    let daemon = TestDaemon::new().fps(15).start();
    let url = format!("http://127.0.0.1:{}/?action=stream&fps=5", daemon.port);
    // framemd5 decodes every frame; -xerror makes any decode error fatal.
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-xerror"])
        .args(["-use_wallclock_as_timestamps", "1", "-i", &url])
        .args(["-t", "5", "-f", "framemd5", "-"])
        .output()
        .expect("run ffmpeg");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ffmpeg failed: {stderr}");
    assert!(stderr.trim().is_empty(), "ffmpeg reported errors: {stderr}");
    let digests: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit(',').next().map(|d| d.trim().to_string()))
        .collect();
    let measured = digests.len() as f64 / 5.0;
    eprintln!(
        "ffmpeg ?fps=5: {} frames in 5 s = {measured:.1} fps",
        digests.len()
    );
    assert!(
        (measured - 5.0).abs() / 5.0 <= 0.10,
        "?fps=5 gave {} frames in 5 s",
        digests.len()
    );
    let distinct: std::collections::HashSet<&String> = digests.iter().collect();
    assert_eq!(
        distinct.len(),
        digests.len(),
        "every frame shows new pixels"
    );
}

#[test]
fn parts_carry_decodable_jpegs_and_capture_timestamps() {
    let daemon = TestDaemon::new().fps(15).size(320, 240).audio().start();
    let mut mjpeg = MjpegReader::get(&daemon, "/stream.mjpg");
    assert!(
        mjpeg.head.starts_with("HTTP/1.1 200 OK\r\n"),
        "{}",
        mjpeg.head
    );
    assert!(mjpeg.head.contains(&format!(
        "Content-Type: multipart/x-mixed-replace; boundary={BOUNDARY}\r\n"
    )));
    assert!(mjpeg.head.contains("Cache-Control: no-store"));
    let parts: Vec<(Part, f64)> = (0..20).map(|_| (mjpeg.next_part(), unix_now())).collect();
    for (part, received) in &parts {
        let (w, h, _) = decode_jpeg(&part.jpeg).expect("the part is a JPEG");
        assert_eq!((w, h), (320, 240));
        assert!(
            (received - part.ts).abs() < 1.0,
            "ts {} received at {received}",
            part.ts
        );
    }
    for pair in parts.windows(2) {
        assert!(pair[1].0.ts > pair[0].0.ts, "capture times increase");
    }
    // The WebSocket's grammar is untouched by the MJPEG client beside it, and the MJPEG
    // client got no audio (the strict reader above would have failed on it).
    let mut ws = daemon.connect("/stream");
    next_video(&mut ws);
}

#[test]
fn a_stalled_reader_resumes_with_a_fresh_part_while_others_keep_the_rate() {
    let fps = 15.0;
    let interval = 1.0 / fps;
    let daemon = TestDaemon::new().fps(15).start();
    let request = "GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut stalled = MjpegReader::open(&daemon, request, Some(32 * 1024));
    let client_rcvbuf =
        rustix::net::sockopt::socket_recv_buffer_size(stalled.reader.get_ref()).expect("rcvbuf");
    let mut steady = MjpegReader::get(&daemon, "/stream.mjpg");
    stalled.next_part();
    steady.next_part();

    let start = Instant::now();
    let mut frames = 0;
    while start.elapsed() < Duration::from_secs(3) {
        steady.next_part();
        frames += 1;
    }
    let steady_fps = f64::from(frames) / start.elapsed().as_secs_f64();
    assert!(
        steady_fps > fps * 0.8,
        "steady reader got {steady_fps:.1} fps"
    );

    // What the stalled reader's own kernel (and reader) buffered is stale and out of the
    // server's reach; behind it the server had at most about one part in flight, and the
    // next must be fresh. A server that queued parts would hand over seconds of backlog.
    let mut stale_bytes = 0;
    let mut largest = 0;
    let mut fresh_age = None;
    for _ in 0..200 {
        let part = stalled.next_part();
        let age = unix_now() - part.ts;
        largest = largest.max(part.jpeg.len() + 120);
        if age <= 2.0 * interval {
            fresh_age = Some(age);
            break;
        }
        stale_bytes += part.jpeg.len() + 120;
    }
    let age = fresh_age.expect("a fresh part after resuming");
    let bound = client_rcvbuf + 4096 + 3 * largest + 16 * 1024;
    eprintln!(
        "stalled reader: {stale_bytes} stale bytes (bound {bound}), then a part {:.0} ms old",
        age * 1e3
    );
    assert!(
        stale_bytes <= bound,
        "{stale_bytes} bytes of stale parts after resuming: the server queued a backlog"
    );
}

#[test]
fn http_1_0_connection_close_and_head_are_served() {
    let daemon = TestDaemon::new().fps(15).start();
    let mut old = MjpegReader::open(&daemon, "GET /stream.mjpg HTTP/1.0\r\n\r\n", None);
    assert!(old.head.contains(" 200 OK\r\n"), "{}", old.head);
    old.next_part();
    old.next_part();
    let mut closing = MjpegReader::open(
        &daemon,
        "GET /?action=stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        None,
    );
    assert!(
        closing.head.contains("Connection: close\r\n"),
        "{}",
        closing.head
    );
    closing.next_part();
    // HEAD: the stream's headers, no body, and the connection ends.
    let head = daemon.raw_request(b"HEAD /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("multipart/x-mixed-replace"), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "HEAD got a body: {head:?}");
    let post = daemon.raw_request(b"POST /stream.mjpg HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    let bad = daemon.get("/stream.mjpg?fps=0");
    assert_eq!(bad.code, 400, "{bad}");
}

#[test]
fn mjpeg_clients_count_in_max_clients_status_and_metrics() {
    let daemon = TestDaemon::new().arg("--max-clients").arg("2").start();
    let mut a = MjpegReader::get(&daemon, "/stream.mjpg");
    let mut b = MjpegReader::get(&daemon, "/?action=stream&fps=2");
    a.next_part();
    b.next_part();
    let refused = daemon.get("/stream.mjpg");
    assert_eq!(refused.code, 503, "{refused}");
    assert!(refused.header("retry-after").is_some(), "{refused}");
    // The limit is shared with WebSocket clients.
    assert!(tungstenite::connect(daemon.url("/stream")).is_err());
    let status = daemon.get("/status");
    assert_eq!(
        status.text().matches("\"format\":\"mjpeg\"").count(),
        2,
        "{status}"
    );
    let metrics = daemon.get("/metrics");
    assert!(
        metrics.text().contains("\nrpi_streamer_clients 2\n"),
        "{metrics}"
    );
    drop(a);
    // The closed client is noticed at its next write and leaves the count.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !daemon
        .get("/metrics")
        .text()
        .contains("\nrpi_streamer_clients 1\n")
    {
        assert!(Instant::now() < deadline, "the closed client still counts");
        std::thread::sleep(Duration::from_millis(100));
    }
    b.next_part();
}

#[test]
fn the_token_and_basic_auth_cover_the_stream_and_its_aliases() {
    let daemon = TestDaemon::new()
        .arg("--auth-token")
        .arg("s3cret-token")
        .start();
    for target in ["/stream.mjpg", "/?action=stream", "/?action=snapshot"] {
        let denied = daemon.get(target);
        assert_eq!(denied.code, 401, "{target}: {denied}");
    }
    let mut by_query = MjpegReader::get(&daemon, "/stream.mjpg?token=s3cret-token");
    by_query.next_part();
    let mut by_header = MjpegReader::open(
        &daemon,
        "GET /?action=stream HTTP/1.1\r\nAuthorization: Bearer s3cret-token\r\n\r\n",
        None,
    );
    by_header.next_part();
    let snapshot = daemon.raw_request(b"GET /?action=snapshot&token=s3cret-token HTTP/1.1\r\n\r\n");
    assert!(snapshot.starts_with("HTTP/1.1 200"), "{snapshot}");
    assert!(
        snapshot.contains("Content-Type: image/jpeg\r\n"),
        "{snapshot}"
    );

    let daemon = TestDaemon::new().arg("--basic-auth").arg("me:pw").start();
    let denied = daemon.get("/stream.mjpg");
    assert_eq!(denied.code, 401, "{denied}");
    assert!(
        denied
            .header("www-authenticate")
            .is_some_and(|v| v.starts_with("Basic")),
        "{denied}"
    );
    let mut basic = MjpegReader::open(
        &daemon,
        "GET /stream.mjpg HTTP/1.1\r\nAuthorization: Basic bWU6cHc=\r\n\r\n",
        None,
    );
    basic.next_part();
}

#[test]
fn sigterm_ends_mjpeg_sessions_and_exits_zero_within_a_second() {
    let mut daemon = TestDaemon::new().start();
    let mut mjpeg = MjpegReader::get(&daemon, "/stream.mjpg");
    mjpeg.next_part();
    let start = Instant::now();
    daemon.terminate();
    let status = daemon
        .wait_exit(Duration::from_secs(2))
        .expect("daemon exits");
    assert!(status.success(), "exit status {status}");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "took {:?}",
        start.elapsed()
    );
    let mut rest = Vec::new();
    let ended = mjpeg.reader.read_to_end(&mut rest);
    assert!(ended.is_ok(), "the stream ends with EOF: {ended:?}");
}

fn rss_kib(daemon: &Daemon) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/status", daemon.child.id()))
        .expect("daemon status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .expect("VmRSS")
}

#[test]
fn readers_that_never_read_cost_bounded_memory_and_slow_nobody() {
    let fps = 15.0;
    let daemon = TestDaemon::new()
        .fps(15)
        .arg("--max-clients")
        .arg("40")
        .start();
    let mut witness = MjpegReader::get(&daemon, "/stream.mjpg");
    witness.next_part();
    let before = rss_kib(&daemon);
    // Thirty readers that read the head and then nothing, and try to send a megabyte each
    // (never read by the daemon: it waits in their sockets).
    let request = "GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut idle: Vec<MjpegReader> = (0..30)
        .map(|_| MjpegReader::open(&daemon, request, Some(8 * 1024)))
        .collect();
    for reader in &mut idle {
        let sock = reader.reader.get_mut();
        sock.set_nonblocking(true).unwrap();
        let _ = sock.write(&vec![b'x'; 1 << 20]);
    }
    let start = Instant::now();
    let mut frames = 0;
    while start.elapsed() < Duration::from_secs(3) {
        witness.next_part();
        frames += 1;
    }
    let witness_fps = f64::from(frames) / start.elapsed().as_secs_f64();
    let grown = rss_kib(&daemon).saturating_sub(before);
    eprintln!("30 idle readers: daemon RSS +{grown} KiB, witness {witness_fps:.1} fps");
    assert!(witness_fps > fps * 0.8, "witness got {witness_fps:.1} fps");
    assert!(
        grown < 4096,
        "daemon RSS grew {grown} KiB for 30 idle readers"
    );
    let status = daemon.get("/status");
    assert_eq!(
        status.text().matches("\"format\":\"mjpeg\"").count(),
        31,
        "{status}"
    );
}
