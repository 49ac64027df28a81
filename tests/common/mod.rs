//! Shared helpers for the integration tests: run the real daemon on a free loopback port,
//! connect WebSocket clients, and parse the seed wire format strictly.
#![allow(dead_code)]

use base64::Engine as _;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// FRAME_PALETTE of src/capture/test.rs in RGB: the test pattern's per-frame corner square
/// cycles through these.
pub const TEST_PALETTE_RGB: [[u8; 3]; 6] = [
    [255, 0, 0],
    [0, 255, 0],
    [0, 0, 255],
    [255, 255, 0],
    [0, 255, 255],
    [255, 0, 255],
];

/// A WebSocket client of the daemon.
pub type Client = WebSocket<MaybeTlsStream<TcpStream>>;

/// The daemon binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_rpi-streamer")
}

/// A command running the daemon binary; `RPI_STREAMER_TEST_RUNNER` (e.g. `qemu-aarch64`)
/// is put in front when set, for cross-built test runs without binfmt_misc.
pub fn daemon_command() -> Command {
    match std::env::var("RPI_STREAMER_TEST_RUNNER") {
        Ok(runner) if !runner.trim().is_empty() => {
            let mut parts = runner.split_whitespace();
            let mut cmd = Command::new(parts.next().unwrap_or("env"));
            cmd.args(parts).arg(binary());
            cmd
        }
        _ => Command::new(binary()),
    }
}

/// Current UNIX time in seconds.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// Flags and environment for a daemon under test: the synthetic camera at the daemon's own
/// defaults unless told otherwise, then [`TestDaemon::start`].
#[derive(Debug, Clone)]
pub struct TestDaemon {
    camera: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Default for TestDaemon {
    fn default() -> TestDaemon {
        TestDaemon::new()
    }
}

impl TestDaemon {
    /// `--camera-type test`, no other flag.
    pub fn new() -> TestDaemon {
        TestDaemon {
            camera: "test".to_string(),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// `--camera-type kind` instead of `test`.
    pub fn camera(mut self, kind: &str) -> TestDaemon {
        self.camera = kind.to_string();
        self
    }

    /// `--width w --height h`.
    pub fn size(self, width: u32, height: u32) -> TestDaemon {
        self.arg("--width")
            .arg(width.to_string())
            .arg("--height")
            .arg(height.to_string())
    }

    /// `--fps fps`.
    pub fn fps(self, fps: u32) -> TestDaemon {
        self.arg("--fps").arg(fps.to_string())
    }

    /// `--enable-audio` (the test tone with the synthetic camera).
    pub fn audio(self) -> TestDaemon {
        self.arg("--enable-audio")
    }

    /// Any other flag or flag value, in order.
    pub fn arg(mut self, arg: impl AsRef<str>) -> TestDaemon {
        self.args.push(arg.as_ref().to_string());
        self
    }

    /// An environment variable for the daemon.
    pub fn env(mut self, name: &str, value: &str) -> TestDaemon {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// More flags or flag values, in order.
    pub fn args<S: AsRef<str>>(self, args: impl IntoIterator<Item = S>) -> TestDaemon {
        args.into_iter().fold(self, TestDaemon::arg)
    }

    /// Starts the daemon on a free loopback port and waits until it listens.
    pub fn start(&self) -> Daemon {
        let mut args = vec!["--camera-type", self.camera.as_str()];
        args.extend(self.args.iter().map(String::as_str));
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        Daemon::start(&args, &env)
    }
}

/// A running daemon; killed on drop if still alive.
pub struct Daemon {
    pub child: Child,
    pub port: u16,
    pub log: Arc<Mutex<Vec<String>>>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Daemon {
    /// Starts the daemon with `args` (plus host/port) and `env`, and waits until it listens;
    /// tests build both with [`TestDaemon`].
    fn start(args: &[&str], env: &[(&str, &str)]) -> Daemon {
        for _attempt in 0..5 {
            let port = free_port();
            let mut cmd = daemon_command();
            cmd.args(args)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .env("RUST_LOG", "debug")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            for (k, v) in env {
                cmd.env(k, v);
            }
            let mut child = cmd.spawn().expect("spawn the daemon");
            let stderr = child.stderr.take().expect("stderr piped");
            let log = Arc::new(Mutex::new(Vec::new()));
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let sink = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    // The bind error reads "listening on 127.0.0.1:N: Address already in
                    // use", so it is told apart first; the ready line names the URL.
                    if line.contains("Address already in use") {
                        let _ = ready_tx.send(false);
                    } else if line.contains("listening on http") {
                        let _ = ready_tx.send(true);
                    }
                    sink.lock().unwrap().push(line);
                }
            });
            match ready_rx.recv_timeout(Duration::from_secs(20)) {
                Ok(true) => return Daemon { child, port, log },
                Ok(false) => {
                    let _ = child.wait();
                    continue;
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!("daemon did not start; log: {:?}", log.lock().unwrap());
                }
            }
        }
        panic!("no free port after 5 attempts");
    }

    /// `ws://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{}", self.port, path)
    }

    /// Connects a WebSocket client to `path` with a read timeout.
    pub fn connect(&self, path: &str) -> Client {
        let (ws, _) = tungstenite::connect(self.url(path)).unwrap_or_else(|e| {
            let exited = self.child_status();
            panic!(
                "WebSocket connect to {path}: {e}; daemon {exited}; its log:\n{}",
                self.log_text()
            )
        });
        set_read_timeout(&ws, Duration::from_secs(5));
        ws
    }

    /// Sends a raw request and returns everything the server answered until it closed.
    pub fn raw_request(&self, bytes: &[u8]) -> String {
        self.send(bytes).raw_text()
    }

    /// Sends a raw request (any method, any bytes) and parses what came back.
    pub fn send(&self, bytes: &[u8]) -> Reply {
        use std::io::{Read, Write};
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(bytes);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        Reply::parse(out)
    }

    /// GETs `path` from this daemon; see [`http_get`].
    pub fn get(&self, path: &str) -> Reply {
        http_get(self.port, path, &[])
    }

    /// GETs `path` with extra request `headers`; see [`http_get`].
    pub fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        http_get(self.port, path, headers)
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).expect("pid");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("kill");
    }

    /// Waits up to `limit` for exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    /// "still running" or how it exited (for failure messages).
    pub fn child_status(&self) -> String {
        let pid = self.child.id() as i32;
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) if !stat.contains(") Z ") => "still running".to_string(),
            _ => "has exited".to_string(),
        }
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An HTTP response as the daemon sent it, until it closed the connection.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    /// The status code; 0 when nothing (or no status line) came back.
    pub code: u16,
    /// Header names lower-cased, values trimmed, in the order sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Everything received, head and body, for failure messages and raw checks.
    pub raw: Vec<u8>,
}

impl Reply {
    /// Splits a raw response into status code, headers and body.
    pub fn parse(raw: Vec<u8>) -> Reply {
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n");
        let (head, body) = match split {
            Some(at) => (&raw[..at], raw[at + 4..].to_vec()),
            None => (&raw[..], Vec::new()),
        };
        let head = String::from_utf8_lossy(head);
        let mut lines = head.lines();
        let code = lines
            .next()
            .and_then(|status| status.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Reply {
            code,
            headers,
            body,
            raw,
        }
    }

    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The whole response as text (lossy UTF-8).
    pub fn raw_text(&self) -> String {
        String::from_utf8_lossy(&self.raw).into_owned()
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.raw_text())
    }
}

/// GETs `path` from the daemon on `port` with `Host: x` and extra `headers`; an empty
/// [`Reply`] (code 0) if it cannot connect. Usable from any thread.
pub fn http_get(port: u16, path: &str, headers: &[(&str, &str)]) -> Reply {
    use std::io::{Read, Write};
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return Reply::default();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: x\r\n");
    for (name, value) in headers {
        head += &format!("{name}: {value}\r\n");
    }
    head += "\r\n";
    let _ = s.write_all(head.as_bytes());
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    Reply::parse(out)
}

/// Sets the read timeout of a client's socket.
pub fn set_read_timeout(ws: &Client, d: Duration) {
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(d)).expect("set timeout");
    }
}

/// One video frame of the seed format.
#[derive(Debug, Clone)]
pub struct Video {
    pub ts: f64,
    pub width: u32,
    pub height: u32,
    pub jpeg: Vec<u8>,
}

/// One audio chunk of the seed format.
#[derive(Debug, Clone)]
pub struct Audio {
    pub ts: f64,
    pub pcm: Vec<u8>,
}

/// A parsed seed-format message.
#[derive(Debug, Clone)]
pub enum Media {
    Video(Video),
    Audio(Audio),
}

impl Media {
    pub fn ts(&self) -> f64 {
        match self {
            Media::Video(Video { ts, .. }) | Media::Audio(Audio { ts, .. }) => *ts,
        }
    }
}

/// `<seconds>.<6 digits>`, strictly.
fn parse_ts(s: &str) -> Result<f64, String> {
    let (int, frac) = s
        .split_once('.')
        .ok_or(format!("timestamp {s:?} has no '.'"))?;
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("timestamp {s:?}: bad seconds"));
    }
    if frac.len() != 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("timestamp {s:?}: want 6 fractional digits"));
    }
    s.parse().map_err(|e| format!("timestamp {s:?}: {e}"))
}

fn parse_dim(s: &str) -> Result<u32, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("dimension {s:?} is not a decimal number"));
    }
    s.parse().map_err(|e| format!("dimension {s:?}: {e}"))
}

/// Parses one text message of the seed format, checking the grammar exactly.
pub fn parse_text(msg: &str) -> Result<Media, String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    if let Some(rest) = msg.strip_prefix("video:") {
        let mut parts = rest.splitn(4, ':');
        let ts = parse_ts(parts.next().unwrap_or(""))?;
        let width = parse_dim(parts.next().unwrap_or(""))?;
        let height = parse_dim(parts.next().unwrap_or(""))?;
        let data = parts.next().ok_or("video message without payload")?;
        let jpeg = b64.decode(data).map_err(|e| format!("video base64: {e}"))?;
        Ok(Media::Video(Video {
            ts,
            width,
            height,
            jpeg,
        }))
    } else if let Some(rest) = msg.strip_prefix("audio:") {
        let (ts, data) = rest
            .split_once(':')
            .ok_or("audio message without payload")?;
        let ts = parse_ts(ts)?;
        let pcm = b64.decode(data).map_err(|e| format!("audio base64: {e}"))?;
        Ok(Media::Audio(Audio { ts, pcm }))
    } else {
        Err(format!("unknown message {:?}", &msg[..msg.len().min(40)]))
    }
}

/// Reads the next media message (text), skipping pings; panics on anything malformed.
pub fn next_media(ws: &mut Client) -> Media {
    loop {
        match ws.read().expect("read a message") {
            Message::Text(t) => return parse_text(t.as_str()).expect("seed grammar"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected message {other:?}"),
        }
    }
}

/// Reads messages until a video frame arrives; returns it.
pub fn next_video(ws: &mut Client) -> Video {
    loop {
        if let Media::Video(video) = next_media(ws) {
            return video;
        }
    }
}

/// The median of `lags` (seconds), e.g. arrival time minus capture stamp.
///
/// # Panics
/// If `lags` is empty.
pub fn median_lag(mut lags: Vec<f64>) -> f64 {
    lags.sort_by(f64::total_cmp);
    lags[lags.len() / 2]
}

/// Decodes a JPEG to (width, height, RGB pixels) with zune-jpeg.
pub fn decode_jpeg(jpeg: &[u8]) -> Result<(usize, usize, Vec<u8>), String> {
    let mut d = zune_jpeg::JpegDecoder::new(zune_jpeg::zune_core::bytestream::ZCursor::new(jpeg));
    let pixels = d.decode().map_err(|e| format!("{e:?}"))?;
    let info = d.info().ok_or("no header")?;
    Ok((info.width as usize, info.height as usize, pixels))
}

/// True if Debian's ffmpeg tool `name` (ffmpeg, ffprobe) runs; in CI (`CI` set), where
/// scripts/test installs it, a missing tool fails the test instead of skipping it.
pub fn have_ffmpeg_tool(name: &str) -> bool {
    let found = Command::new(name)
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is missing in CI: scripts/test installs Debian's ffmpeg (apt-get install ffmpeg)"
        );
        eprintln!("SKIPPED: {name} not found (apt-get install ffmpeg); CI runs this test");
    }
    found
}

#[cfg(feature = "tls")]
pub mod tls;

/// A fresh folder in the temporary directory, removed with its contents at drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    /// `<tmp>/rpi-streamer-<name>-<pid>`, emptied if it was left over.
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("rpi-streamer-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temporary folder");
        TempDir(dir)
    }

    /// A path inside, as a string for flags.
    pub fn file(&self, name: &str) -> String {
        self.0
            .join(name)
            .to_str()
            .expect("UTF-8 temp path")
            .to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the daemon with `args` (on port 1, which it must never get to) and `env`, expecting
/// it to exit on its own within 20 s; its exit status and stderr.
pub fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String) {
    let env: Vec<(&str, &std::ffi::OsStr)> = env.iter().map(|(k, v)| (*k, v.as_ref())).collect();
    let out = exit_output(args, &env);
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`run_to_exit`] with any environment values, and stdout too.
pub fn exit_output(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> std::process::Output {
    let mut cmd = daemon_command();
    cmd.args(args)
        .args(["--host", "127.0.0.1", "--port", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn the daemon");
    let start = Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("the daemon did not exit for {args:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("the daemon's output")
}
