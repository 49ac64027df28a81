//! The project's benchmark: the release daemon on the synthetic source, measured from outside.
//!
//! For each size and client count it runs the daemon for a fixed time and prints, from the
//! same run: daemon CPU ms per produced and per delivered frame, peak RSS, latency p50/p99
//! (receive time − capture timestamp), delivered fps per client (mean and the slowest
//! client's), the CPU the benchmark's own clients used (they share the machine with the
//! daemon), and the *floor*: CPU ms to JPEG-encode + base64 the same frames in this process.
//! The ratio pipeline ÷ floor is the figure of merit. Run with `scripts/bench` (builds the
//! release binaries first).
//!
//! Flags: `--seconds N` (default 10), `--sizes 640x480,1280x720`, `--clients 1,8,32,16+16`,
//! `--framings text,binary` (default both), `--large 1920x1080:16` (or `none`) with
//! `--encoder-threads 1,2,N` (default 1, 2 and the core count): the large rows run that size
//! with that many clients once per encoder thread count,
//! `--fps 30`, `--quality 70`, `--transports plain,tls` (default both: every row is run over
//! plain TCP and again with the same clients over TLS, the daemon on `--tls-self-signed`,
//! and each size ends with the per-client cost of both: the slope of daemon CPU per produced
//! frame between the fewest and the most WebSocket-only clients). A client count `N+M` runs N WebSocket clients beside M
//! multipart MJPEG clients (`GET /stream.mjpg`), all counted in the same columns. Many clients, e.g. `--sizes 640x480 --fps 15 --clients 100`:
//! each client is a thread that blocks in a read, so idle clients cost nothing and the
//! clients' CPU column shows what they took from the daemon.

#[path = "support/mod.rs"]
mod support;

use rpi_streamer::capture::test::TestPattern;
use rpi_streamer::capture::{Picture, VideoParams, VideoSource};
use rpi_streamer::encode::jpeg::Encoder;
use rpi_streamer::encode::scale::FrameShaper;
use rpi_streamer::stream::media::{VideoFrame, BINARY_HEADER_LEN};
use rustix::time::{clock_gettime, ClockId};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How many clients of each kind a run has.
#[derive(Clone, Copy)]
struct Mix {
    websocket: usize,
    mjpeg: usize,
}

impl Mix {
    fn total(self) -> usize {
        self.websocket + self.mjpeg
    }

    /// `N` (WebSocket only) or `N+M` (N WebSocket, M MJPEG).
    fn parse(s: &str) -> Result<Mix, String> {
        let number = |n: &str| n.parse::<usize>().map_err(|e| format!("{n:?}: {e}"));
        match s.split_once('+') {
            None => Ok(Mix {
                websocket: number(s)?,
                mjpeg: 0,
            }),
            Some((ws, mjpeg)) => Ok(Mix {
                websocket: number(ws)?,
                mjpeg: number(mjpeg)?,
            }),
        }
    }

    fn label(self) -> String {
        match self.mjpeg {
            0 => self.websocket.to_string(),
            m => format!("{}+{m}", self.websocket),
        }
    }
}

/// How the clients reach the daemon.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    Plain,
    Tls,
}

impl Transport {
    fn as_str(self) -> &'static str {
        match self {
            Transport::Plain => "plain",
            Transport::Tls => "tls",
        }
    }

    fn parse(s: &str) -> Result<Transport, String> {
        match s {
            "plain" => Ok(Transport::Plain),
            "tls" if cfg!(feature = "tls") => Ok(Transport::Tls),
            "tls" => Err("this build has no TLS (cargo feature tls)".into()),
            other => Err(format!("{other:?}: want plain or tls")),
        }
    }
}

/// How the WebSocket clients ask for their messages.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// The seed's text messages (`/stream`).
    Text,
    /// The opt-in binary ones (`/stream?format=binary`).
    Binary,
}

impl Framing {
    fn as_str(self) -> &'static str {
        match self {
            Framing::Text => "text",
            Framing::Binary => "bin",
        }
    }

    fn parse(s: &str) -> Result<Framing, String> {
        match s {
            "text" => Ok(Framing::Text),
            "binary" | "bin" => Ok(Framing::Binary),
            other => Err(format!("{other:?}: want text or binary")),
        }
    }
}

/// The large-frame rows: one size and client count, run with each encoder thread count.
#[derive(Clone)]
struct Large {
    size: (u32, u32),
    clients: usize,
    threads: Vec<usize>,
}

struct Options {
    seconds: f64,
    sizes: Vec<(u32, u32)>,
    clients: Vec<Mix>,
    fps: u32,
    quality: u8,
    transports: Vec<Transport>,
    framings: Vec<Framing>,
    large: Option<Large>,
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s.split_once('x').ok_or("want WxH")?;
    Ok((
        w.parse().map_err(|e| format!("{w:?}: {e}"))?,
        h.parse().map_err(|e| format!("{h:?}: {e}"))?,
    ))
}

fn parse_options() -> Result<Options, String> {
    let mut o = Options {
        seconds: 10.0,
        sizes: vec![(640, 480), (1280, 720)],
        clients: ["1", "8", "32", "16+16"]
            .iter()
            .map(|c| Mix::parse(c))
            .collect::<Result<_, _>>()?,
        fps: 30,
        quality: 70,
        transports: if cfg!(feature = "tls") {
            vec![Transport::Plain, Transport::Tls]
        } else {
            vec![Transport::Plain]
        },
        framings: vec![Framing::Text, Framing::Binary],
        large: Some(Large {
            size: (1920, 1080),
            clients: 16,
            threads: default_encoder_threads(),
        }),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--seconds" => o.seconds = value.parse().map_err(|e| bad(&e))?,
            "--fps" => o.fps = value.parse().map_err(|e| bad(&e))?,
            "--quality" => o.quality = value.parse().map_err(|e| bad(&e))?,
            "--transports" => {
                o.transports = value
                    .split(',')
                    .map(|t| Transport::parse(t).map_err(|e| bad(&e)))
                    .collect::<Result<_, _>>()?
            }
            "--clients" => {
                o.clients = value
                    .split(',')
                    .map(|c| Mix::parse(c).map_err(|e| bad(&e)))
                    .collect::<Result<_, _>>()?
            }
            "--sizes" => {
                o.sizes = value
                    .split(',')
                    .map(|s| parse_size(s).map_err(|e| bad(&e)))
                    .collect::<Result<_, String>>()?
            }
            "--framings" => {
                o.framings = value
                    .split(',')
                    .map(|f| Framing::parse(f).map_err(|e| bad(&e)))
                    .collect::<Result<_, _>>()?
            }
            "--large" if value == "none" => o.large = None,
            "--large" => {
                let (size, clients) = value.split_once(':').ok_or(bad(&"want WxH:CLIENTS"))?;
                let threads = o
                    .large
                    .take()
                    .map_or_else(default_encoder_threads, |l| l.threads);
                o.large = Some(Large {
                    size: parse_size(size).map_err(|e| bad(&e))?,
                    clients: clients.parse().map_err(|e| bad(&e))?,
                    threads,
                });
            }
            "--encoder-threads" => {
                let threads = value
                    .split(',')
                    .map(|t| t.parse::<usize>().map_err(|e| bad(&e)))
                    .collect::<Result<Vec<_>, _>>()?;
                if let Some(large) = o.large.as_mut() {
                    large.threads = threads;
                }
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(o)
}

/// 1, 2 and the core count (each once).
fn default_encoder_threads() -> Vec<usize> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut threads = vec![1, 2, cores];
    threads.dedup();
    threads.retain(|&t| t <= cores.max(2));
    threads
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A process's CPU time in milliseconds, split by what its threads do (from their names).
#[derive(Clone, Copy, Default)]
struct ThreadCpu {
    /// The main thread: the executor (HTTP, WebSocket fan-out).
    executor: f64,
    /// `async-io`: the reactor thread.
    reactor: f64,
    /// `video-capture`, `audio-capture`, `libcamera`: sources (and inline JPEG encoding).
    capture: f64,
    /// `jpeg-encode-N`, `h264-encode`: encoder threads.
    encoders: f64,
    /// Everything else (blocking pool threads for files, TLS setup...).
    other: f64,
}

impl ThreadCpu {
    fn total(&self) -> f64 {
        self.executor + self.reactor + self.capture + self.encoders + self.other
    }

    fn since(&self, before: &ThreadCpu) -> ThreadCpu {
        ThreadCpu {
            executor: self.executor - before.executor,
            reactor: self.reactor - before.reactor,
            capture: self.capture - before.capture,
            encoders: self.encoders - before.encoders,
            other: self.other - before.other,
        }
    }

    fn per(&self, frames: u64) -> ThreadCpu {
        let n = frames.max(1) as f64;
        ThreadCpu {
            executor: self.executor / n,
            reactor: self.reactor / n,
            capture: self.capture / n,
            encoders: self.encoders / n,
            other: self.other / n,
        }
    }

    /// Nanosecond run times from each thread's schedstat (or utime + stime in 10 ms ticks
    /// where schedstat is missing), by thread name. Threads that ended are not counted.
    fn of(pid: u32) -> ThreadCpu {
        let mut cpu = ThreadCpu::default();
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return cpu;
        };
        for task in tasks.filter_map(Result::ok) {
            let path = task.path();
            let tid: u32 = task
                .file_name()
                .to_str()
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            let ms = thread_cpu_ms(&path);
            let bucket = match name.trim() {
                _ if tid == pid => &mut cpu.executor,
                "async-io" => &mut cpu.reactor,
                "video-capture" | "audio-capture" | "libcamera" => &mut cpu.capture,
                n if n.starts_with("jpeg-encode") || n == "h264-encode" => &mut cpu.encoders,
                _ => &mut cpu.other,
            };
            *bucket += ms;
        }
        cpu
    }
}

/// One thread's CPU time in ms (`path` is its /proc/<pid>/task/<tid>).
fn thread_cpu_ms(path: &std::path::Path) -> f64 {
    let schedstat = std::fs::read_to_string(path.join("schedstat")).ok();
    let ns = schedstat.and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok());
    if let Some(ns) = ns.filter(|ns| *ns > 0) {
        return ns as f64 / 1e6;
    }
    let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<f64>().ok()))
        .sum();
    // USER_HZ is 100 on every Linux we target.
    ticks * 10.0
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn status_counter(net: &Net, name: &str) -> Option<u64> {
    let mut s = net.open(Duration::from_secs(5))?;
    s.write_all(b"GET /status HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut bytes = Vec::new();
    // Over TLS the daemon may close without close_notify: keep what was read.
    let _ = s.read_to_end(&mut bytes);
    let body = String::from_utf8_lossy(&bytes);
    let key = format!("\"{name}\":");
    let start = body.find(&key)? + key.len();
    let digits: String = body[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// A byte stream to the daemon, plain or TLS.
trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// How to reach the running daemon: its port and, over TLS, a client trusting its certificate.
#[derive(Clone)]
struct Net {
    port: u16,
    #[cfg(feature = "tls")]
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Net {
    /// A connection (TLS handshake done) with `timeout` on reads.
    fn open(&self, timeout: Duration) -> Option<Box<dyn Stream>> {
        let sock = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        sock.set_read_timeout(Some(timeout)).ok()?;
        #[cfg(feature = "tls")]
        if let Some(config) = &self.tls {
            let name = rustls::pki_types::ServerName::try_from("localhost").ok()?;
            let conn = rustls::ClientConnection::new(config.clone(), name).ok()?;
            let mut stream = rustls::StreamOwned::new(conn, sock);
            while stream.conn.is_handshaking() {
                stream.conn.complete_io(&mut stream.sock).ok()?;
            }
            return Some(Box::new(stream));
        }
        Some(Box::new(sock))
    }
}

/// Where the TLS runs keep their self-signed certificate (made by the first, reused).
fn tls_state_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("rpi-streamer-bench-{}", std::process::id()))
}

/// A client configuration trusting only the certificate the daemon made in `state`.
#[cfg(feature = "tls")]
fn trust_daemon(state: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject as _;
    let cert = rustls::pki_types::CertificateDer::from_pem_file(state.join("self-signed-cert.pem"))
        .map_err(|e| format!("the daemon's certificate: {e:?}"))?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

fn start_daemon(o: &Options, row: &Row) -> Result<(Child, Net), String> {
    let (size, transport) = (row.size, row.transport);
    // Room for every client of the run (the default cap is 16).
    let max_clients = row.clients.total().max(16).to_string();
    let mut extra = vec!["--max-clients", &max_clients];
    if transport == Transport::Tls {
        extra.push("--tls-self-signed");
    }
    let threads = row.threads.map(|t| t.to_string());
    if let Some(threads) = &threads {
        extra.extend(["--encoder-threads", threads]);
    }
    let state = tls_state_dir();
    let state_env = [("STATE_DIRECTORY", state.to_str().unwrap_or_default())];
    let env: &[(&str, &str)] = if transport == Transport::Tls {
        &state_env
    } else {
        &[]
    };
    let (child, port) = support::start_test_daemon_with_env(size, o.fps, o.quality, &extra, env)?;
    Ok((
        child,
        Net {
            port,
            #[cfg(feature = "tls")]
            tls: match transport {
                Transport::Plain => None,
                Transport::Tls => Some(trust_daemon(&state)?),
            },
        },
    ))
}

#[derive(Default)]
struct ClientTally {
    connected: bool,
    frames: u64,
    latencies_ms: Vec<f64>,
}

fn run_client(
    net: Net,
    framing: Framing,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<ClientTally>>,
) {
    let Some(stream) = net.open(Duration::from_secs(2)) else {
        return;
    };
    let url = match framing {
        Framing::Text => "ws://localhost/stream",
        Framing::Binary => "ws://localhost/stream?format=binary",
    };
    let Ok((mut ws, _)) = tungstenite::client(url, stream) else {
        return;
    };
    tally.lock().unwrap_or_else(|e| e.into_inner()).connected = true;
    while !stop.load(Ordering::Relaxed) {
        let Ok(msg) = ws.read() else { break };
        let received = unix_now();
        // A picture's capture timestamp, in either framing (docs/client.md).
        let ts = match &msg {
            tungstenite::Message::Text(text) => text
                .as_str()
                .strip_prefix("video:")
                .and_then(|rest| rest.split(':').next()?.parse::<f64>().ok()),
            tungstenite::Message::Binary(b) if b.len() > 12 && b[0] == 1 => {
                b[4..12].try_into().ok().map(f64::from_le_bytes)
            }
            _ => None,
        };
        if let (Some(ts), true) = (ts, measuring.load(Ordering::Relaxed)) {
            let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
            t.frames += 1;
            t.latencies_ms.push((received - ts) * 1000.0);
        }
    }
    let _ = ws.close(None);
}

/// Reads `GET /stream.mjpg` part by part, as `run_client` reads WebSocket messages.
fn run_mjpeg_client(
    net: Net,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<ClientTally>>,
) {
    use std::io::BufRead;
    let Some(mut stream) = net.open(Duration::from_secs(2)) else {
        return;
    };
    if stream
        .write_all(b"GET /stream.mjpg HTTP/1.1\r\nHost: bench\r\n\r\n")
        .is_err()
    {
        return;
    }
    let mut reader = std::io::BufReader::new(stream);
    let mut line = String::new();
    let read_line = |reader: &mut std::io::BufReader<Box<dyn Stream>>, line: &mut String| {
        line.clear();
        matches!(reader.read_line(line), Ok(n) if n > 0)
    };
    if !read_line(&mut reader, &mut line) || !line.starts_with("HTTP/1.1 200") {
        return;
    }
    tally.lock().unwrap_or_else(|e| e.into_inner()).connected = true;
    let mut jpeg = Vec::new();
    let (mut length, mut ts) = (None, 0.0);
    while !stop.load(Ordering::Relaxed) && read_line(&mut reader, &mut line) {
        if let Some(v) = line.strip_prefix("Content-Length: ") {
            length = v.trim().parse::<usize>().ok();
        } else if let Some(v) = line.strip_prefix("X-Timestamp: ") {
            ts = v.trim().parse().unwrap_or(0.0);
        } else if line == "\r\n" {
            // The blank line ends the response head or a part's headers.
            let Some(len) = length.take() else { continue };
            jpeg.resize(len, 0);
            if reader.read_exact(&mut jpeg).is_err() {
                break;
            }
            let received = unix_now();
            if measuring.load(Ordering::Relaxed) {
                let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
                t.frames += 1;
                t.latencies_ms.push((received - ts) * 1000.0);
            }
        }
    }
}

/// What one run measures.
#[derive(Clone, Copy)]
struct Row {
    size: (u32, u32),
    clients: Mix,
    transport: Transport,
    framing: Framing,
    /// `--encoder-threads` for the daemon (its default when `None`).
    threads: Option<usize>,
}

struct Scenario {
    row: Row,
    produced: u64,
    /// Daemon CPU ms per produced frame, by thread.
    split: ThreadCpu,
    cpu_per_produced: f64,
    cpu_per_delivered: f64,
    rss_mib: f64,
    p50: f64,
    p99: f64,
    fps_per_client: f64,
    min_fps: f64,
    connected: usize,
    clients_cpu_pct: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn run_scenario(o: &Options, row: Row) -> Result<Scenario, String> {
    let clients = row.clients;
    let (mut child, net) = start_daemon(o, &row)?;
    let pid = child.id();
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let tallies: Vec<_> = (0..clients.total())
        .map(|_| Arc::new(Mutex::new(ClientTally::default())))
        .collect();
    let threads: Vec<_> = tallies
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let (m, s, t) = (measuring.clone(), stop.clone(), t.clone());
            let mjpeg = i >= clients.websocket;
            let net = net.clone();
            std::thread::spawn(move || {
                if mjpeg {
                    run_mjpeg_client(net, m, s, t)
                } else {
                    run_client(net, row.framing, m, s, t)
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let produced_before = status_counter(&net, "video_captured").unwrap_or(0);
    let cpu_before = ThreadCpu::of(pid);
    let clients_cpu_before = ThreadCpu::of(std::process::id()).total();
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(o.seconds));
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let split = ThreadCpu::of(pid).since(&cpu_before);
    let cpu = split.total();
    let clients_cpu = ThreadCpu::of(std::process::id()).total() - clients_cpu_before;
    let produced = status_counter(&net, "video_captured").unwrap_or(0) - produced_before;
    let rss = peak_rss_kib(pid);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let _ = child.kill();
    let _ = child.wait();

    let mut latencies = Vec::new();
    let mut delivered = 0;
    let mut fewest = u64::MAX;
    let mut connected = 0;
    for t in &tallies {
        let t = t.lock().unwrap_or_else(|e| e.into_inner());
        delivered += t.frames;
        fewest = fewest.min(t.frames);
        connected += usize::from(t.connected);
        latencies.extend_from_slice(&t.latencies_ms);
    }
    latencies.sort_by(f64::total_cmp);
    Ok(Scenario {
        row,
        produced,
        split: split.per(produced),
        cpu_per_produced: cpu / produced.max(1) as f64,
        cpu_per_delivered: cpu / delivered.max(1) as f64,
        rss_mib: rss as f64 / 1024.0,
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
        fps_per_client: delivered as f64 / clients.total() as f64 / elapsed,
        min_fps: fewest as f64 / elapsed,
        connected,
        clients_cpu_pct: clients_cpu / (elapsed * 10.0),
    })
}

/// What [`floor_ms`] measured, per frame.
struct Floor {
    /// CPU ms to JPEG-encode and base64 a frame.
    encode: f64,
    /// CPU ms the synthetic source spends drawing one (part of the pipeline, not the floor).
    render: f64,
    /// Mean size of a binary video message, bytes.
    message: usize,
}

/// The floor of the synthetic frames, encoded in this thread.
fn floor_ms(o: &Options, (w, h): (u32, u32), frames: usize) -> Result<Floor, String> {
    let params = VideoParams::at(w, h, o.fps);
    let mut source = TestPattern::unpaced(&params).map_err(|e| e.to_string())?;
    let mut encoder = Encoder::new(o.quality)
        .map_err(|e| e.to_string())?
        .reserving(BINARY_HEADER_LEN);
    let mut cpu = Duration::ZERO;
    let mut render = Duration::ZERO;
    let mut bytes = 0usize;
    let mut binary = 0usize;
    for _ in 0..frames {
        let r0 = clock_gettime(ClockId::ThreadCPUTime);
        let frame = source
            .next_frame()
            .map_err(|e| e.to_string())?
            .ok_or("pattern not ready")?;
        let t0 = clock_gettime(ClockId::ThreadCPUTime);
        render += cpu_between(r0, t0);
        let jpeg = encoder.encode(&frame.picture).map_err(|e| e.to_string())?;
        let framed = VideoFrame::behind_header(0.0, w, h, jpeg, false);
        bytes += framed.text().len();
        binary += framed.binary().len();
        let t1 = clock_gettime(ClockId::ThreadCPUTime);
        cpu += cpu_between(t0, t1);
    }
    std::hint::black_box(bytes);
    let per_frame = |d: Duration| d.as_secs_f64() * 1000.0 / frames as f64;
    Ok(Floor {
        encode: per_frame(cpu),
        render: per_frame(render),
        message: binary / frames.max(1),
    })
}

/// Removes the Huffman tables from a JPEG, as MJPEG webcams send their frames.
fn strip_dht(jpeg: &[u8]) -> Vec<u8> {
    let mut out = jpeg[..2].to_vec();
    let mut pos = 2;
    while pos + 4 <= jpeg.len() {
        let marker = jpeg[pos + 1];
        if marker == 0xDA {
            break;
        }
        let len = usize::from(u16::from_be_bytes([jpeg[pos + 2], jpeg[pos + 3]]));
        if marker != 0xC4 {
            out.extend_from_slice(&jpeg[pos..pos + 2 + len]);
        }
        pos += 2 + len;
    }
    out.extend_from_slice(&jpeg[pos.min(jpeg.len())..]);
    out
}

/// USB camera paths through the daemon's own [`FrameShaper`], CPU ms per frame: MJPEG
/// passthrough (hygiene + Huffman tables inserted), raw YUYV encoded, and MJPEG at this size
/// scaled to half of it. The "recording" is the test pattern encoded at q85 with its Huffman
/// tables stripped, as webcams send it.
fn usb_paths_ms(o: &Options, (w, h): (u32, u32), frames: usize) -> Result<[f64; 3], String> {
    let params = VideoParams::at(w, h, o.fps);
    let mut source = TestPattern::unpaced(&params).map_err(|e| e.to_string())?;
    let mut camera = Encoder::new(85).map_err(|e| e.to_string())?;
    let mut recording = Vec::new();
    let mut yuyv = Vec::new();
    for i in 0..frames.min(30) {
        let frame = source
            .next_frame()
            .map_err(|e| e.to_string())?
            .ok_or("pattern not ready")?;
        recording.push(strip_dht(
            &camera.encode(&frame.picture).map_err(|e| e.to_string())?,
        ));
        if i == 0 {
            if let Picture::I420 {
                planes, strides, ..
            } = frame.picture
            {
                for r in 0..h as usize {
                    for x in (0..w as usize).step_by(2) {
                        let c = (r / 2) * strides[1] + x / 2;
                        let y = r * strides[0] + x;
                        yuyv.extend_from_slice(&[
                            planes[0][y],
                            planes[1][c],
                            planes[0][y + 1],
                            planes[2][c],
                        ]);
                    }
                }
            }
        }
    }
    let mut encoder = Encoder::new(o.quality)
        .map_err(|e| e.to_string())?
        .reserving(BINARY_HEADER_LEN);
    let mut shaper = FrameShaper::new();
    fn run<'a>(
        shaper: &mut FrameShaper,
        encoder: &mut Encoder,
        frames: usize,
        picture: &dyn Fn(usize) -> Picture<'a>,
        out: (u32, u32),
    ) -> Result<f64, String> {
        let t0 = clock_gettime(ClockId::ThreadCPUTime);
        let mut bytes = 0;
        for i in 0..frames {
            let (jpeg, _) = shaper
                .shape(encoder, &picture(i), out)
                .map_err(|e| e.to_string())?;
            bytes += jpeg.len();
        }
        std::hint::black_box(bytes);
        let t1 = clock_gettime(ClockId::ThreadCPUTime);
        Ok(cpu_between(t0, t1).as_secs_f64() * 1000.0 / frames as f64)
    }
    let mjpeg = |i: usize| Picture::Jpeg {
        width: w,
        height: h,
        data: &recording[i % recording.len()],
    };
    let raw = |_: usize| Picture::Yuyv {
        width: w,
        height: h,
        data: &yuyv,
        stride: w as usize * 2,
    };
    let (sh, en) = (&mut shaper, &mut encoder);
    let passthrough = run(sh, en, frames, &mjpeg, (w, h))?;
    let encoded = run(sh, en, frames, &raw, (w, h))?;
    let scaled = run(sh, en, frames, &mjpeg, (w / 2 / 2 * 2, h / 2 / 2 * 2))?;
    Ok([passthrough, encoded, scaled])
}

/// Daemon CPU per produced frame added by each WebSocket client over `transport` with
/// `framing`: the least-squares slope over the WebSocket-only rows, and the fewest and most
/// clients it spans.
fn per_client_cost(
    rows: &[Scenario],
    transport: Transport,
    framing: Framing,
) -> Option<(f64, usize, usize)> {
    let points: Vec<(f64, f64)> = rows
        .iter()
        .filter(|r| r.row.transport == transport && r.row.framing == framing)
        .filter(|r| r.row.clients.mjpeg == 0 && r.row.threads.is_none())
        .map(|r| (r.row.clients.websocket as f64, r.cpu_per_produced))
        .collect();
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    let fewest = points.iter().map(|p| p.0 as usize).min()?;
    let most = points.iter().map(|p| p.0 as usize).max()?;
    (points.len() >= 2 && sxx > 0.0).then_some((sxy / sxx, fewest, most))
}

/// Column headings of [`print_row`].
fn print_heading() {
    println!(
        "{:>9} {:>7} {:>5} {:>4} {:>3} {:>6} {:>9} {:>9} {:>6} {:>5} {:>6} {:>6} {:>6} {:>6} {:>7} {:>7} {:>7} {:>6} {:>7} {:>5}",
        "size", "clients", "via", "fmt", "thr", "frames", "cpu/prod", "cpu/deliv", "floor",
        "ratio", "exec", "react", "capt", "enc", "rss MiB", "p50 ms", "p99 ms", "fps/cl",
        "min fps", "bench%"
    );
}

fn print_row(s: &Scenario, floor: f64) {
    let r = &s.row;
    println!(
        "{:>9} {:>7} {:>5} {:>4} {:>3} {:>6} {:>9.3} {:>9.3} {:>6.3} {:>5.2} {:>6.3} {:>6.3} {:>6.3} {:>6.3} {:>7.1} {:>7.1} {:>7.1} {:>6.1} {:>7.1} {:>5.0}",
        format!("{}x{}", r.size.0, r.size.1),
        r.clients.label(),
        r.transport.as_str(),
        r.framing.as_str(),
        r.threads.map_or("-".to_string(), |t| t.to_string()),
        s.produced,
        s.cpu_per_produced,
        s.cpu_per_delivered,
        floor,
        s.cpu_per_produced / floor,
        s.split.executor,
        s.split.reactor,
        s.split.capture,
        s.split.encoders,
        s.rss_mib,
        s.p50,
        s.p99,
        s.fps_per_client,
        s.min_fps,
        s.clients_cpu_pct
    );
}

/// Runs one row and prints it; `None` (and one line on stderr) if it failed.
fn run_and_print(o: &Options, row: Row, floor: f64) -> Option<Scenario> {
    let what = format!(
        "{}x{} with {} clients",
        row.size.0,
        row.size.1,
        row.clients.label()
    );
    match run_scenario(o, row) {
        Ok(s) if s.connected < row.clients.total() => {
            eprintln!(
                "{what}: only {} of {} clients connected",
                s.connected,
                row.clients.total()
            );
            None
        }
        Ok(s) => {
            print_row(&s, floor);
            Some(s)
        }
        Err(e) => {
            eprintln!("{what}: {e}");
            None
        }
    }
}

/// The size's floor line; the floor, or `None` (and one line on stderr) if it failed.
fn print_floor(o: &Options, size: (u32, u32)) -> Option<Floor> {
    let label = format!("{}x{}", size.0, size.1);
    match floor_ms(o, size, 200) {
        Ok(floor) => {
            println!(
                "{label:>9}: floor (encode + base64) {:.3} ms/frame, test-pattern drawing {:.3} ms/frame, {} bytes a message",
                floor.encode, floor.render, floor.message
            );
            Some(floor)
        }
        Err(e) => {
            eprintln!("floor {label}: {e}");
            None
        }
    }
}

/// CPU ms per frame this thread spends writing a `len`-byte message to each of `clients`
/// loopback sockets whose readers sleep in `read`, as the benchmark's clients do: one
/// `write` each, the floor of any fan-out here (on loopback the sender's system call also
/// runs the receiving side's TCP and wakes the reader). `frames` rounds, 5 ms apart.
fn send_floor_ms(len: usize, clients: usize, frames: usize) -> Result<f64, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let mut senders = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..clients {
        let mut reader = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        let (sender, _) = listener.accept().map_err(|e| e.to_string())?;
        senders.push(sender);
        readers.push(std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
        }));
    }
    let message = vec![0x55u8; len];
    let mut cpu = Duration::ZERO;
    for _ in 0..frames {
        let t0 = clock_gettime(ClockId::ThreadCPUTime);
        for s in &mut senders {
            s.write_all(&message).map_err(|e| e.to_string())?;
        }
        cpu += cpu_between(t0, clock_gettime(ClockId::ThreadCPUTime));
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(senders);
    for r in readers {
        let _ = r.join();
    }
    Ok(cpu.as_secs_f64() * 1000.0 / frames.max(1) as f64)
}

/// The per-client slopes of a size's rows, and fan-out against encode at the most clients.
fn print_costs(o: &Options, size: (u32, u32), rows: &[Scenario], floor: &Floor) {
    let label = format!("{}x{}", size.0, size.1);
    let mut costs = Vec::new();
    for &t in &o.transports {
        for &f in &o.framings {
            if let Some((ms, from, to)) = per_client_cost(rows, t, f) {
                costs.push(format!(
                    "{} {} {ms:.4} ms/frame ({from}..{to} clients)",
                    t.as_str(),
                    f.as_str()
                ));
            }
        }
    }
    if !costs.is_empty() {
        println!(
            "{label:>9}: per-client cost (WebSocket): {}",
            costs.join(", ")
        );
    }
    let most = rows
        .iter()
        .filter(|r| r.row.transport == Transport::Plain && r.row.clients.mjpeg == 0)
        .max_by_key(|r| r.row.clients.websocket);
    let Some(m) = most else { return };
    let n = m.row.clients.websocket;
    let fan_out = m.split.executor + m.split.reactor;
    let sends = send_floor_ms(floor.message, n, 100).and_then(|all| {
        let one = send_floor_ms(floor.message, 1, 100)?;
        Ok((all, (all - one) / (n.max(2) - 1) as f64))
    });
    let sends = match sends {
        Ok((all, slope)) => format!(
            "; the send floor (one write of {} bytes per reader) {all:.3} ms/frame for {n} readers, {slope:.4} ms per reader",
            floor.message
        ),
        Err(e) => format!("; send floor: {e}"),
    };
    println!(
        "{label:>9}: fan-out at {n} clients ({}): executor + reactor {fan_out:.3} ms/frame, encode (floor) {:.3} ms/frame{sends}",
        m.row.framing.as_str(),
        floor.encode
    );
}

fn cpu_between(a: rustix::time::Timespec, b: rustix::time::Timespec) -> Duration {
    let nanos = (b.tv_sec - a.tv_sec) as i128 * 1_000_000_000 + (b.tv_nsec - a.tv_nsec) as i128;
    Duration::from_nanos(nanos.max(0) as u64)
}

fn main() {
    let o = match parse_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(2);
        }
    };
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!(
        "rpi-streamer benchmark: test source @ {} fps q{}, {:.0} s per run; {cpu_model}, {cores} cores",
        o.fps, o.quality, o.seconds
    );
    print_heading();
    let mut failed = false;
    for &size in &o.sizes {
        let Some(floor) = print_floor(&o, size) else {
            failed = true;
            continue;
        };
        match usb_paths_ms(&o, size, 100) {
            Ok([passthrough, encoded, scaled]) => println!(
                "{:>9}: usb paths: MJPEG passthrough {passthrough:.3} ms/frame, YUYV encode \
                 {encoded:.3} ms/frame, MJPEG scaled to half size {scaled:.3} ms/frame",
                format!("{}x{}", size.0, size.1)
            ),
            Err(e) => {
                eprintln!("usb paths {}x{}: {e}", size.0, size.1);
                failed = true;
            }
        }
        let mut rows = Vec::new();
        for &clients in &o.clients {
            for &transport in &o.transports {
                for &framing in &o.framings {
                    let row = Row {
                        size,
                        clients,
                        transport,
                        framing,
                        threads: None,
                    };
                    match run_and_print(&o, row, floor.encode) {
                        Some(s) => rows.push(s),
                        None => failed = true,
                    }
                }
            }
        }
        print_costs(&o, size, &rows, &floor);
    }
    if let Some(large) = &o.large {
        match print_floor(&o, large.size) {
            None => failed = true,
            Some(floor) => {
                for &threads in &large.threads {
                    let row = Row {
                        size: large.size,
                        clients: Mix {
                            websocket: large.clients,
                            mjpeg: 0,
                        },
                        transport: Transport::Plain,
                        framing: Framing::Text,
                        threads: Some(threads),
                    };
                    failed |= run_and_print(&o, row, floor.encode).is_none();
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(tls_state_dir());
    println!(
        "cpu/prod, cpu/deliv: daemon CPU ms per produced / per delivered frame; floor: CPU ms to \
         encode + base64 one frame in-process; ratio = cpu/prod / floor; exec, react, capt, enc: \
         cpu/prod split by thread (executor = main thread, reactor = async-io, capture threads, \
         encoder threads); latency = receive time − capture timestamp; fps/cl, min fps: mean and \
         slowest client's delivered fps; bench%: CPU the benchmark's clients used (100 % = one \
         core); clients N+M: N WebSocket beside M multipart MJPEG clients; via: plain TCP or TLS \
         (--tls-self-signed, the clients rustls); fmt: text or binary WebSocket messages; thr: \
         the daemon's --encoder-threads (- = its default); per-client cost: the least-squares \
         slope of cpu/prod over the WebSocket-only rows' client counts."
    );
    if failed {
        std::process::exit(1);
    }
}
