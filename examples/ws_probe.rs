//! A WebSocket client for scripted checks (scripts/checks/vm-v4l): connects to the daemon's
//! `/stream`, and for `SECONDS` prints one line per video frame:
//! `<receive unix time> <ts> <width> <height> <JPEG width> <JPEG height> <mean luma>`
//! (the JPEG is fully decoded about once a second; mean luma is -1 on the other lines).
//! Exits 1 on a malformed message or an undecodable JPEG, 2 if it cannot connect.
//!
//! With `--h264 FILE` it asks for `/stream?video=h264&format=binary` instead, appends every
//! access unit to FILE (an H.264 elementary stream for ffprobe) and prints one line per unit:
//! `<receive unix time> <ts> <width> <height> <key 0|1> <bytes> <kind>`, kind `h264`
//! (Annex-B), `fwht` (vicodec's frames, standing in for hardware H.264 in the VM) or `?`.
//!
//! With `--kinds` it reads `/stream` and prints the same line per video frame (key always
//! 1), kind `jpeg` (a JPEG at the message's size; one a second is fully decoded), `fwht` or
//! `?`, without exiting on a frame that is no JPEG: for the hardware JPEG path, where vicodec
//! stands in.
//!
//! Usage: `ws_probe PORT SECONDS [--h264 FILE | --kinds]`

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
        eprintln!("usage: ws_probe PORT SECONDS [--h264 FILE]");
        std::process::exit(2);
    };
    let (h264_file, kinds) = match (args.get(2).map(String::as_str), args.get(3)) {
        (Some("--h264"), Some(path)) => (Some(path.clone()), false),
        (Some("--kinds"), None) => (None, true),
        (None, _) => (None, false),
        _ => {
            eprintln!("usage: ws_probe PORT SECONDS [--h264 FILE | --kinds]");
            std::process::exit(2);
        }
    };
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let url = match h264_file {
        Some(_) => format!("ws://127.0.0.1:{port}/stream?video=h264&format=binary"),
        None => format!("ws://127.0.0.1:{port}/stream"),
    };
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
    if let Some(path) = h264_file {
        h264(&mut ws, deadline, &path);
        return;
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut last_decode: Option<Instant> = None;
    while Instant::now() < deadline {
        let Some(Message::Text(text)) = next_message(&mut ws) else {
            continue;
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
        if kinds {
            let kind = if jpeg.starts_with(&FWHT_MAGIC) {
                "fwht"
            } else if jpeg_size(&jpeg).map(|(w, h)| format!("{w}:{h}"))
                == Some(format!("{}:{}", fields[1], fields[2]))
            {
                if last_decode.is_none_or(|t: Instant| t.elapsed() > Duration::from_secs(1)) {
                    last_decode = Some(Instant::now());
                    mean_luma(&jpeg).unwrap_or_else(|e| fail(e));
                }
                "jpeg"
            } else {
                "?"
            };
            println!(
                "{:.6} {} {} {} 1 {} {kind}",
                unix_now(),
                fields[0],
                fields[1],
                fields[2],
                jpeg.len()
            );
            continue;
        }
        let (width, height) =
            jpeg_size(&jpeg).unwrap_or_else(|| fail("no JPEG frame header".into()));
        // Decoding is slow in a debug build under emulation: check one frame a second fully.
        let mut mean = -1i64;
        if last_decode.is_none_or(|t: Instant| t.elapsed() > Duration::from_secs(1)) {
            last_decode = Some(Instant::now());
            mean = mean_luma(&jpeg).unwrap_or_else(|e| fail(e));
        }
        let now = unix_now();
        println!(
            "{now:.6} {} {} {} {width} {height} {mean}",
            fields[0], fields[1], fields[2]
        );
    }
}

/// The two magic words vicodec's FWHT frames start with.
const FWHT_MAGIC: [u8; 8] = [0x4f, 0x4f, 0x4f, 0x4f, 0xff, 0xff, 0xff, 0xff];

/// Decodes the JPEG fully: its mean luma.
fn mean_luma(jpeg: &[u8]) -> Result<i64, String> {
    let mut decoder =
        zune_jpeg::JpegDecoder::new(zune_jpeg::zune_core::bytestream::ZCursor::new(jpeg));
    let pixels = decoder.decode().map_err(|e| format!("JPEG: {e:?}"))?;
    let luma: u64 = pixels
        .chunks_exact(3)
        .map(|p| (299 * u64::from(p[0]) + 587 * u64::from(p[1]) + 114 * u64::from(p[2])) / 1000)
        .sum();
    Ok((luma / (pixels.len() as u64 / 3).max(1)) as i64)
}

/// The next message; `None` when the read timed out. Exits 1 when the connection is lost.
fn next_message<S: std::io::Read + std::io::Write>(
    ws: &mut tungstenite::WebSocket<S>,
) -> Option<Message> {
    match ws.read() {
        Ok(m) => Some(m),
        Err(tungstenite::Error::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(e) => {
            eprintln!("ws_probe: connection lost: {e}");
            std::process::exit(1);
        }
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The `--h264` mode: kind-3 messages to `path` and one line each on stdout.
fn h264<S: std::io::Read + std::io::Write>(
    ws: &mut tungstenite::WebSocket<S>,
    deadline: Instant,
    path: &str,
) {
    use std::io::Write as _;
    let mut out = std::fs::File::create(path).unwrap_or_else(|e| {
        eprintln!("ws_probe: cannot create {path}: {e}");
        std::process::exit(2)
    });
    while Instant::now() < deadline {
        let Some(Message::Binary(b)) = next_message(ws) else {
            continue;
        };
        if b.first() == Some(&2) {
            continue; // audio
        }
        if b.len() < 16 || b[0] != 3 {
            eprintln!("ws_probe: not an H.264 message: {:?}", &b[..b.len().min(4)]);
            std::process::exit(1);
        }
        let ts = f64::from_le_bytes(b[4..12].try_into().unwrap_or([0; 8]));
        let (w, h) = (
            u16::from_le_bytes([b[12], b[13]]),
            u16::from_le_bytes([b[14], b[15]]),
        );
        if let Err(e) = out.write_all(&b[16..]) {
            eprintln!("ws_probe: writing {path}: {e}");
            std::process::exit(1);
        }
        let unit = &b[16..];
        let kind = if unit.starts_with(&FWHT_MAGIC) {
            "fwht"
        } else if unit.starts_with(&[0, 0, 0, 1]) || unit.starts_with(&[0, 0, 1]) {
            "h264"
        } else {
            "?"
        };
        println!(
            "{:.6} {ts:.6} {w} {h} {} {} {kind}",
            unix_now(),
            u8::from(b[1] & 2 != 0),
            unit.len()
        );
    }
}

/// Width and height from the JPEG's frame header (SOFn).
fn jpeg_size(jpeg: &[u8]) -> Option<(u32, u32)> {
    let mut pos = 2;
    while pos + 9 < jpeg.len() {
        if jpeg[pos] != 0xFF {
            return None;
        }
        let marker = jpeg[pos + 1];
        let len = usize::from(u16::from_be_bytes([jpeg[pos + 2], jpeg[pos + 3]]));
        if (0xC0..=0xCF).contains(&marker) && !matches!(marker, 0xC4 | 0xC8 | 0xCC) {
            let h = u16::from_be_bytes([jpeg[pos + 5], jpeg[pos + 6]]);
            let w = u16::from_be_bytes([jpeg[pos + 7], jpeg[pos + 8]]);
            return Some((w.into(), h.into()));
        }
        pos += 2 + len;
    }
    None
}
