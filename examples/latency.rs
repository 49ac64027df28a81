//! A Rust client of the stream: connects to `/stream` with tungstenite and prints each video
//! frame's latency, receive time − capture time (true when both clocks are synchronised,
//! e.g. by NTP), then a summary:
//!
//! ```text
//! 1796231061.483359 640x480 25850 bytes latency 3.1 ms
//! ...
//! 45 frames, 150 audio chunks in 3.0 s: latency median 2.9 ms, p90 4.1 ms, max 7.8 ms
//! ```
//!
//! Usage: `cargo run --example latency -- [HOST:PORT] [--seconds S] [--format text|binary]
//! [--h264] [--token TOKEN]` (default `127.0.0.1:8080`, until Ctrl-C; the token can also
//! come from `RPI_STREAMER_AUTH_TOKEN`). Exits 1 on a malformed message or a lost
//! connection, 2 when it cannot connect or is refused. The Python package in
//! `clients/python` does the same and more (`python -m rpi_streamer.stats`).

use base64::Engine as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tungstenite::client::IntoClientRequest as _;
use tungstenite::http::HeaderValue;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::Message;

/// What the command line asked for.
struct Options {
    address: String,
    seconds: Option<f64>,
    format: String,
    h264: bool,
    token: Option<String>,
}

/// One picture's header fields, from either framing.
struct Picture {
    ts: f64,
    width: u32,
    height: u32,
    bytes: usize,
}

const USAGE: &str = "usage: latency [HOST:PORT] [--seconds S] [--format text|binary] [--h264] \
                     [--token TOKEN]";

fn main() {
    let options = parse_args(std::env::args().skip(1)).unwrap_or_else(|why| {
        eprintln!("latency: {why}\n{USAGE}");
        std::process::exit(2)
    });
    std::process::exit(match run(&options) {
        Ok(()) => 0,
        Err(Failure::Connect(why)) => {
            eprintln!("latency: {why}");
            2
        }
        Err(Failure::Stream(why)) => {
            eprintln!("latency: {why}");
            1
        }
    })
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut options = Options {
        address: "127.0.0.1:8080".into(),
        seconds: None,
        format: "text".into(),
        h264: false,
        token: std::env::var("RPI_STREAMER_AUTH_TOKEN").ok(),
    };
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| args.next().ok_or(format!("{flag} needs a value"));
        match arg.as_str() {
            "--seconds" => {
                let s = value("--seconds")?;
                let seconds = s.parse::<f64>().ok().filter(|s| *s > 0.0);
                options.seconds = Some(seconds.ok_or(format!("--seconds {s}: not a duration"))?);
            }
            "--format" => {
                options.format = value("--format")?;
                if !matches!(options.format.as_str(), "text" | "binary") {
                    return Err(format!("--format {}: text or binary", options.format));
                }
            }
            "--h264" => options.h264 = true,
            "--token" => options.token = Some(value("--token")?),
            flag if flag.starts_with('-') => return Err(format!("unknown flag {flag}")),
            address => options.address = address.to_string(),
        }
    }
    Ok(options)
}

enum Failure {
    /// No connection: refused, unreachable, not a WebSocket.
    Connect(String),
    /// The connection broke or sent something that is not the wire format.
    Stream(String),
}

fn run(options: &Options) -> Result<(), Failure> {
    let mut url = format!("ws://{}/stream?format={}", options.address, options.format);
    if options.h264 {
        url.push_str("&video=h264");
    }
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| Failure::Connect(format!("{url}: {e}")))?;
    if let Some(token) = &options.token {
        let header = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| Failure::Connect("the token is not a valid header value".into()))?;
        request.headers_mut().insert("Authorization", header);
    }
    let (mut ws, _) = tungstenite::connect(request).map_err(|e| match e {
        tungstenite::Error::Http(response) => Failure::Connect(format!(
            "{url}: the daemon answered {} (a token is needed, or a wrong one was given?)",
            response.status()
        )),
        e => Failure::Connect(format!("cannot connect to {url}: {e}")),
    })?;
    // A read timeout, so that --seconds ends the run even when nothing arrives.
    if let MaybeTlsStream::Plain(socket) = ws.get_ref() {
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .map_err(|e| Failure::Connect(format!("setting a read timeout: {e}")))?;
    }

    let started = Instant::now();
    let deadline = options
        .seconds
        .map(|s| started + Duration::from_secs_f64(s));
    let mut latencies_ms: Vec<f64> = Vec::new();
    let mut audio_chunks = 0u64;
    while deadline.is_none_or(|d| Instant::now() < d) {
        let message = match ws.read() {
            Ok(message) => message,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => return Err(Failure::Stream(format!("connection lost: {e}"))),
        };
        let picture = match &message {
            Message::Text(text) => parse_text(text.as_str()),
            Message::Binary(bytes) => parse_binary(bytes),
            Message::Close(frame) => {
                return Err(Failure::Stream(format!(
                    "the daemon closed the stream: {frame:?}"
                )))
            }
            _ => continue, // pings are answered by tungstenite
        }
        .map_err(|why| Failure::Stream(format!("malformed message: {why}")))?;
        let Some(picture) = picture else {
            audio_chunks += 1;
            continue;
        };
        let latency_ms = (unix_now() - picture.ts) * 1e3;
        latencies_ms.push(latency_ms);
        println!(
            "{:.6} {}x{} {} bytes latency {latency_ms:.1} ms",
            picture.ts, picture.width, picture.height, picture.bytes
        );
    }
    let _ = ws.close(None);
    println!(
        "{} frames, {audio_chunks} audio chunks in {:.1} s: {}",
        latencies_ms.len(),
        started.elapsed().as_secs_f64(),
        summary(&mut latencies_ms)
    );
    Ok(())
}

/// A text message: a picture (`video:`, `h264:`) or `None` for audio.
fn parse_text(text: &str) -> Result<Option<Picture>, String> {
    let (kind, rest) = text.split_once(':').ok_or("no kind")?;
    let fields: Vec<&str> = match kind {
        "video" => rest.splitn(4, ':').collect(),
        "h264" => rest.splitn(5, ':').collect(),
        "audio" => return Ok(None),
        other => return Err(format!("unknown kind {other:?}")),
    };
    let expected = if kind == "video" { 4 } else { 5 };
    if fields.len() != expected {
        return Err(format!(
            "{kind}: {} fields, expected {expected}",
            fields.len()
        ));
    }
    let number = |field: &str, what: &str| -> Result<u32, String> {
        field
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=65535).contains(n))
            .ok_or(format!("{kind}: {what} {field:?}"))
    };
    let payload = base64::engine::general_purpose::STANDARD
        .decode(fields[expected - 1])
        .map_err(|e| format!("{kind}: base64: {e}"))?;
    Ok(Some(Picture {
        ts: timestamp(fields[0].parse::<f64>().unwrap_or(f64::NAN))?,
        width: number(fields[1], "width")?,
        height: number(fields[2], "height")?,
        bytes: payload.len(),
    }))
}

/// A binary message: kind 1 (JPEG) or 3 (H.264) is a picture, kind 2 (audio) `None`.
fn parse_binary(bytes: &[u8]) -> Result<Option<Picture>, String> {
    let header: &[u8; 16] = bytes
        .get(..16)
        .and_then(|h| h.try_into().ok())
        .ok_or(format!("{} bytes, shorter than the header", bytes.len()))?;
    match header[0] {
        1 | 3 => {}
        2 => return Ok(None),
        kind => return Err(format!("unknown kind {kind}")),
    }
    let [_, _, _, _, t0, t1, t2, t3, t4, t5, t6, t7, w0, w1, h0, h1] = *header;
    Ok(Some(Picture {
        ts: timestamp(f64::from_le_bytes([t0, t1, t2, t3, t4, t5, t6, t7]))?,
        width: u16::from_le_bytes([w0, w1]).into(),
        height: u16::from_le_bytes([h0, h1]).into(),
        bytes: bytes.len() - 16,
    }))
}

fn timestamp(ts: f64) -> Result<f64, String> {
    if ts.is_finite() && ts > 0.0 {
        Ok(ts)
    } else {
        Err(format!("timestamp {ts} is not a UNIX time"))
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `latency median …, p90 …, max …` of the frames seen.
fn summary(latencies_ms: &mut [f64]) -> String {
    if latencies_ms.is_empty() {
        return "no frames".into();
    }
    latencies_ms.sort_by(f64::total_cmp);
    let at = |q: f64| latencies_ms[((latencies_ms.len() - 1) as f64 * q).round() as usize];
    format!(
        "latency median {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        at(0.5),
        at(0.9),
        at(1.0)
    )
}
