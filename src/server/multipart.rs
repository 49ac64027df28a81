//! One multipart MJPEG session: `GET /stream.mjpg` (and mjpg-streamer's `/?action=stream`)
//! answered with `multipart/x-mixed-replace`, one JPEG part per frame, for the software that
//! reads that rather than our WebSocket (`<img src>`, VLC, ffmpeg, Home Assistant, OctoPrint).
//!
//! The client is a hub client like a WebSocket one ([`crate::stream::hub::ClientKind::Mjpeg`]): it
//! counts in `--max-clients`, `/status` and `/metrics`, holds only the newest frame and is
//! never handed audio. Parts are written one at a time, and the next frame is taken only once
//! the socket has sent what it was given (`TCP_NOTSENT_LOWAT`), so a slow reader skips frames
//! instead of queueing them. Each part is our few header bytes plus the frame's shared JPEG
//! buffer, written in place (no copy per client). The client is not read from after its head:
//! whatever it sends waits in its own socket buffer, which bounds it.
//!
//! Part layout (as mjpg-streamer and ustreamer write it; the boundary closes each part at
//! once, since browsers show a part only when the next boundary arrives):
//!
//! ```text
//! --rpi-streamer-frame\r\n
//! Content-Type: image/jpeg\r\n
//! Content-Length: <bytes>\r\n
//! X-Timestamp: <UNIX seconds, 6 decimals: the capture time>\r\n
//! \r\n
//! <JPEG>\r\n
//! --rpi-streamer-frame\r\n
//! ```
#![forbid(unsafe_code)]

use super::http::{write_response, Request, Response};
use super::ws::{admit, within, NOTSENT_LOWAT, WRITE_STALL_LIMIT};
use super::{Conn, Sent, Server};
use crate::clock::{format_unix, MonoTime};
use crate::stats::{ClientLimit, Stats};
use crate::stream::hub::{ClientHandle, Item};
use futures_lite::AsyncWriteExt;
use std::net::SocketAddr;
use std::rc::Rc;

/// The path of the multipart stream.
pub const STREAM_PATH: &str = "/stream.mjpg";
/// The path of the single-JPEG snapshot.
pub const SNAPSHOT_PATH: &str = "/snapshot.jpg";
/// The multipart boundary between JPEG parts.
pub const BOUNDARY: &str = "rpi-streamer-frame";
/// Highest `?fps=` accepted (the highest `--fps`).
pub const MAX_FPS: u32 = 120;

/// The endpoint an mjpg-streamer URL stands for: `/?action=stream` is [`STREAM_PATH`] and
/// `/?action=snapshot` is [`SNAPSHOT_PATH`], so that 3D-printer hosts configured for
/// mjpg-streamer work unchanged. `None` for every other request.
pub fn alias(req: &Request) -> Option<&'static str> {
    if req.path != "/" {
        return None;
    }
    match req.query_param("action")? {
        "stream" => Some(STREAM_PATH),
        "snapshot" => Some(SNAPSHOT_PATH),
        _ => None,
    }
}

/// The frame rate a client asked for with `?fps=N`: `Ok(None)` for the full rate (no `fps`,
/// or one at or above `source_fps`), a 400 for anything but a whole number 1–[`MAX_FPS`].
pub fn requested_fps(req: &Request, source_fps: u32) -> Result<Option<u32>, Response> {
    let Some(value) = req.query_param("fps") else {
        return Ok(None);
    };
    match value.parse::<u32>() {
        Ok(fps) if (1..=MAX_FPS).contains(&fps) => Ok((fps < source_fps).then_some(fps)),
        _ => Err(Response::text(
            400,
            &format!(
                "fps={:?}: want a whole number of frames per second, 1-{MAX_FPS}",
                value.chars().take(16).collect::<String>()
            ),
        )),
    }
}

/// Picks the frames a `?fps=N` client gets: at most N a second, evenly spaced by capture
/// time (frames are dropped, never re-encoded).
#[derive(Debug, Clone, Copy)]
pub struct Pacer {
    interval: f64,
    tolerance: f64,
    next_due: Option<f64>,
}

impl Pacer {
    /// A pacer for `fps` frames a second out of a `source_fps` stream; `None` lets every
    /// frame through.
    pub fn new(fps: Option<u32>, source_fps: u32) -> Pacer {
        Pacer {
            interval: fps.map_or(0.0, |f| 1.0 / f64::from(f)),
            // Capture stamps jitter: a frame half a source interval early is on time.
            tolerance: 0.5 / f64::from(source_fps.max(1)),
            next_due: None,
        }
    }

    /// True if the frame captured at `ts` should be sent (and it is then counted as sent).
    pub fn due(&mut self, ts: f64) -> bool {
        if let Some(due) = self.next_due {
            if ts + self.tolerance < due {
                return false;
            }
        }
        // Keep to the grid while on time; after a gap (a stall, a slow reader), restart it.
        self.next_due = Some(match self.next_due {
            Some(due) if ts - due < self.interval => due + self.interval,
            _ => ts + self.interval,
        });
        true
    }
}

/// The response head of a stream (also the whole answer to a HEAD request).
pub fn response_head() -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary={BOUNDARY}\r\n\
         Cache-Control: no-store, no-cache, must-revalidate, max-age=0\r\nPragma: no-cache\r\n\
         Access-Control-Allow-Origin: *\r\nConnection: close\r\n\r\n"
    )
}

/// The headers of one part holding `jpeg_len` bytes captured at UNIX time `ts`.
pub fn part_head(jpeg_len: usize, ts: f64) -> String {
    format!(
        "Content-Type: image/jpeg\r\nContent-Length: {jpeg_len}\r\nX-Timestamp: {}\r\n\r\n",
        format_unix(ts)
    )
}

/// How a session ended.
#[derive(Debug)]
enum Ended {
    /// The daemon is shutting down.
    Shutdown,
    /// The socket accepted nothing for [`WRITE_STALL_LIMIT`].
    Stalled(String),
    /// A socket error (the client went away).
    Io(std::io::Error),
}

/// Writes the client's frames, one part at a time, until shutdown or the socket fails.
async fn send_parts(
    conn: &Conn,
    client: &ClientHandle,
    mut pacer: Pacer,
    server: &Server,
) -> Ended {
    let slot = &client.slot;
    let stats = &server.stats;
    let tail = format!("\r\n--{BOUNDARY}\r\n");
    let stalled = || {
        Ended::Stalled(format!(
            "accepted nothing for {} s",
            WRITE_STALL_LIMIT.as_secs()
        ))
    };
    // After a socket that was not ready, wait for it, then take what is newest *now*
    // (see ws.rs's write_client).
    let mut blocked = false;
    let mut waited = false;
    loop {
        if blocked {
            match within(WRITE_STALL_LIMIT, conn.writable()).await {
                None => return stalled(),
                Some(Err(e)) => return Ended::Io(e),
                Some(Ok(())) => {}
            }
            blocked = false;
            waited = true;
        }
        let frame = match slot.take(MonoTime::now().to_unix()) {
            Some(Item::Video(frame)) => frame,
            // Registered for JPEG video only; nothing else to send if it ever came.
            Some(Item::Audio(_) | Item::H264(_)) => continue,
            None => {
                if !slot.ready().await {
                    return Ended::Shutdown;
                }
                continue;
            }
        };
        let paced = pacer;
        if !pacer.due(frame.ts) {
            continue;
        }
        let head = part_head(frame.jpeg().len(), frame.ts);
        let parts = [head.as_bytes(), frame.jpeg(), tail.as_bytes()];
        match conn.write_now(parts, std::mem::take(&mut waited)).await {
            Ok(Sent::Whole) => {}
            Ok(Sent::Full) => {
                // Not started: after the wait, the newest frame goes instead, paced as
                // if this one had not been taken.
                pacer = paced;
                slot.put_back(Item::Video(frame));
                blocked = true;
                continue;
            }
            Ok(Sent::Stalled) => return stalled(),
            Err(e) => return Ended::Io(e),
        }
        Stats::add(&stats.messages_sent, 1);
        Stats::add(&stats.bytes_sent, frame.jpeg().len() as u64);
    }
}

/// Answers a GET or HEAD of the stream on `conn` (already authorised) and, for a GET,
/// streams parts until the client goes away or the daemon shuts down.
pub async fn run(conn: Conn, req: Request, peer: SocketAddr, server: Rc<Server>) {
    let mut raw = conn.clone();
    let source_fps = server.config.video.fps;
    let fps = match requested_fps(&req, source_fps) {
        Ok(fps) => fps,
        Err(refusal) => {
            let _ = write_response(&mut raw, &refusal, req.method == "HEAD").await;
            return;
        }
    };
    if let Err(refusal) = admit(&server, &req) {
        log::info!(
            "mjpeg client {peer} refused: {}",
            String::from_utf8_lossy(&refusal.body).trim()
        );
        let _ = write_response(&mut raw, &refusal, req.method == "HEAD").await;
        return;
    }
    let head = response_head();
    if req.method == "HEAD" {
        let _ = within(WRITE_STALL_LIMIT, async {
            raw.write_all(head.as_bytes()).await?;
            raw.flush().await
        })
        .await;
        return;
    }
    // Registered before the first await, so racing clients all see it in `--max-clients`.
    let client = server.hub.register_mjpeg(peer);
    if let Err(e) =
        socket2::SockRef::from(conn.tcp().get_ref()).set_tcp_notsent_lowat(NOTSENT_LOWAT)
    {
        log::debug!("{peer}: TCP_NOTSENT_LOWAT unavailable ({e}); relying on socket buffers");
    }
    let opening = format!("{head}--{BOUNDARY}\r\n");
    match within(WRITE_STALL_LIMIT, raw.write_all(opening.as_bytes())).await {
        Some(Ok(())) => {}
        _ => return,
    }
    log::info!(
        "mjpeg client {peer} connected ({}, {} clients)",
        fps.map_or("full rate".to_string(), |f| format!("{f} fps")),
        server.hub.client_count()
    );
    let ended = send_parts(&conn, &client, Pacer::new(fps, source_fps), &server).await;
    let skipped = client.slot.video_skipped.get();
    drop(client);
    match &ended {
        Ended::Stalled(why) => {
            Stats::add(ClientLimit::WriteStalled.counter(&server.stats), 1);
            log::info!("mjpeg client {peer} closed: {why} ({skipped} frames skipped)");
        }
        Ended::Io(e) => {
            log::info!("mjpeg client {peer} disconnected: {e} ({skipped} frames skipped)")
        }
        Ended::Shutdown => log::debug!("mjpeg client {peer} closed for shutdown"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::http::parse_head;

    fn get(target: &str) -> Request {
        parse_head(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .unwrap()
            .unwrap()
    }

    #[test]
    fn mjpg_streamer_urls_are_aliases() {
        assert_eq!(alias(&get("/?action=stream")), Some(STREAM_PATH));
        assert_eq!(alias(&get("/?action=snapshot&n=1")), Some(SNAPSHOT_PATH));
        assert_eq!(alias(&get("/?action=bogus")), None);
        assert_eq!(alias(&get("/index.html?action=stream")), None);
        assert_eq!(alias(&get("/")), None);
    }

    #[test]
    fn fps_must_be_a_whole_number_in_range() {
        assert_eq!(requested_fps(&get("/stream.mjpg"), 15), Ok(None));
        assert_eq!(requested_fps(&get("/stream.mjpg?fps=5"), 15), Ok(Some(5)));
        assert_eq!(requested_fps(&get("/stream.mjpg?fps=30"), 15), Ok(None));
        for bad in ["0", "-1", "2.5", "", "121", "99999999999"] {
            let refusal = requested_fps(&get(&format!("/stream.mjpg?fps={bad}")), 15).unwrap_err();
            assert_eq!(refusal.status, 400, "fps={bad}");
        }
    }

    fn sent(pacer: &mut Pacer, source_fps: u32, seconds: u32) -> usize {
        (0..source_fps * seconds)
            .filter(|k| pacer.due(1000.0 + f64::from(*k) / f64::from(source_fps)))
            .count()
    }

    #[test]
    fn the_pacer_keeps_the_requested_rate() {
        assert_eq!(sent(&mut Pacer::new(Some(5), 15), 15, 10), 50);
        assert_eq!(sent(&mut Pacer::new(Some(4), 15), 15, 10), 40);
        assert_eq!(sent(&mut Pacer::new(Some(1), 30), 30, 10), 10);
        assert_eq!(sent(&mut Pacer::new(None, 15), 15, 10), 150);
    }

    #[test]
    fn the_pacer_restarts_its_grid_after_a_gap() {
        let mut pacer = Pacer::new(Some(2), 10);
        assert!(pacer.due(0.0));
        assert!(!pacer.due(0.1));
        // A 5 s stall: the next frame goes at once, and the grid continues from it.
        assert!(pacer.due(5.05));
        assert!(!pacer.due(5.3));
        assert!(pacer.due(5.55));
    }

    #[test]
    fn parts_carry_length_and_capture_time() {
        assert_eq!(
            part_head(1234, 1_700_000_000.25),
            "Content-Type: image/jpeg\r\nContent-Length: 1234\r\n\
             X-Timestamp: 1700000000.250000\r\n\r\n"
        );
        let head = response_head();
        assert!(head.contains(&format!(
            "Content-Type: multipart/x-mixed-replace; boundary={BOUNDARY}\r\n"
        )));
        assert!(head.ends_with("Connection: close\r\n\r\n"));
    }
}
