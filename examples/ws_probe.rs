//! A WebSocket client for scripted checks (scripts/checks/vm-v4l): connects to the daemon's
//! `/stream`, and for `SECONDS` prints one line per video frame:
//! `<receive unix time> <ts> <width> <height> <decoded width> <decoded height> <mean luma>`.
//! Exits 1 on a malformed message or an undecodable JPEG, 2 if it cannot connect.
//!
//! Usage: `ws_probe PORT SECONDS`

use base64::Engine as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::Message;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(port), Some(seconds)) = (
        args.first().and_then(|p| p.parse::<u16>().ok()),
        args.get(1).and_then(|s| s.parse::<f64>().ok()),
    ) else {
        eprintln!("usage: ws_probe PORT SECONDS");
        std::process::exit(2);
    };
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let url = format!("ws://127.0.0.1:{port}/stream");
    let mut ws = loop {
        match tungstenite::connect(url.as_str()) {
            Ok((ws, _)) => break ws,
            Err(e) if Instant::now() < deadline => {
                eprintln!("ws_probe: {e}; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => {
                eprintln!("ws_probe: cannot connect to {url}: {e}");
                std::process::exit(2);
            }
        }
    };
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    while Instant::now() < deadline {
        let text = match ws.read() {
            Ok(Message::Text(t)) => t,
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => {
                eprintln!("ws_probe: connection lost: {e}");
                std::process::exit(1);
            }
        };
        let Some(rest) = text.as_str().strip_prefix("video:") else {
            continue;
        };
        let fields: Vec<&str> = rest.splitn(4, ':').collect();
        let fail = |why: String| -> ! {
            eprintln!("ws_probe: bad video message: {why}");
            std::process::exit(1)
        };
        if fields.len() != 4 {
            fail(format!("{} fields", fields.len()));
        }
        let jpeg = b64
            .decode(fields[3])
            .unwrap_or_else(|e| fail(format!("base64: {e}")));
        let mut decoder =
            zune_jpeg::JpegDecoder::new(zune_jpeg::zune_core::bytestream::ZCursor::new(&jpeg));
        let pixels = decoder
            .decode()
            .unwrap_or_else(|e| fail(format!("JPEG: {e:?}")));
        let info = decoder
            .info()
            .unwrap_or_else(|| fail("no JPEG header".into()));
        let luma: u64 = pixels
            .chunks_exact(3)
            .map(|p| (299 * u64::from(p[0]) + 587 * u64::from(p[1]) + 114 * u64::from(p[2])) / 1000)
            .sum();
        let mean = luma / (pixels.len() as u64 / 3).max(1);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        println!(
            "{now:.6} {} {} {} {} {} {mean}",
            fields[0], fields[1], fields[2], info.width, info.height
        );
    }
}
