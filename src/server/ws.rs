//! One WebSocket session: the upgrade handshake, then the client's slot drained to its socket
//! and the client's frames read under fixed bounds.
//!
//! Writing: one message at a time, taken from the slot only once the socket has sent what it
//! was given (TCP_NOTSENT_LOWAT), so the kernel holds at most about one message per client
//! and a stalled client's backlog stays in its slot, where newer frames replace older ones
//! and audio past its age bound is dropped. Control frames go first: a pong (only the latest
//! ping is answered, RFC 6455 §5.5.3), then our ping every `--ping-interval` (a client silent for three intervals is dropped).
//!
//! Reading ([`super::wsframe`]): client frames are parsed as they arrive into a fixed buffer;
//! data payloads are skipped, not stored, except short text messages that are [`Command`]s
//! (a clock exchange, a keyframe request), each answered at most once, the latest. A client may send at most [`FLOOD_FRAMES_PER_S`]
//! frames and [`FLOOD_BYTES_PER_S`] bytes per second (with bursts of twice that), and the
//! reader yields to the other tasks after every read, so no connection can monopolise the
//! single executor. Breaking a bound closes that client with a code that says which
//! ([`Ended::close`]), logged once; after our close frame the socket lingers, discarding what
//! the client still sends, so that it reads the close instead of a reset.
#![forbid(unsafe_code)]

use super::http::{write_response, Request, Response};
use super::woken::WokenOnly;
use super::wsframe::{
    self, ClientEvent, ClientFrames, FrameError, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT,
};
use super::{Conn, Sent, Server};
use crate::clock::MonoTime;
use crate::encode::demand::Codec;
use crate::encode::h264::H264Encoder;
use crate::stats::{ClientLimit, Stats};
use crate::stream::hub::Item;
use crate::stream::media::WireFormat;
use async_tungstenite::tungstenite::handshake::derive_accept_key;
use base64::Engine as _;
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use smol::Timer;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Largest message a client may send us (we expect only control frames and short commands).
pub const MAX_CLIENT_MESSAGE: usize = 64 * 1024;
/// Unsent bytes in the kernel below which a socket counts as ready for the next message.
pub const NOTSENT_LOWAT: u32 = 16 * 1024;
/// Frames per second a client may send on average (bursts: twice this).
pub const FLOOD_FRAMES_PER_S: u32 = 100;
/// Bytes per second a client may send on average (bursts: twice this, so one message of
/// [`MAX_CLIENT_MESSAGE`] always fits).
pub const FLOOD_BYTES_PER_S: u32 = 128 * 1024;
/// A client that has been losing audio to the age bound for this long without catching up
/// is closed: it cannot keep up with the stream.
pub const SLOW_CLIENT_LIMIT: Duration = Duration::from_secs(10);
/// A client whose socket accepts nothing for this long is dropped.
pub const WRITE_STALL_LIMIT: Duration = Duration::from_secs(30);
/// Bytes read per read call; with one control frame's worth of leftovers, all a session
/// buffers of what the client sends.
const READ_CHUNK: usize = 8 * 1024;
/// How long a closed session keeps reading (and discarding) so the client sees our close.
const LINGER: Duration = Duration::from_secs(2);
/// Most bytes discarded while lingering.
const LINGER_BYTES: usize = 4 << 20;
/// Time a close frame may take to go out.
const CLOSE_WRITE_LIMIT: Duration = Duration::from_secs(1);

/// Why the upgrade was refused: the status to send and a sentence for the body and log.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    /// 400 for a malformed upgrade, 426 for a request that is not an upgrade at all.
    pub status: u16,
    /// What was wrong.
    pub why: String,
}

fn refuse(status: u16, why: impl Into<String>) -> Refusal {
    Refusal {
        status,
        why: why.into(),
    }
}

/// Checks the upgrade headers; on success, the `Sec-WebSocket-Accept` value.
pub fn accept_key(req: &Request) -> Result<String, Refusal> {
    if req.method != "GET" {
        return Err(refuse(400, "a WebSocket upgrade must be a GET"));
    }
    if !req.header_has_token("upgrade", "websocket")
        || !req.header_has_token("connection", "upgrade")
    {
        return Err(refuse(
            426,
            "this is the WebSocket endpoint: connect with a WebSocket client (Upgrade: websocket)",
        ));
    }
    if req.header("sec-websocket-version").map(str::trim) != Some("13") {
        return Err(refuse(426, "unsupported WebSocket version (need 13)"));
    }
    let key = req
        .header("sec-websocket-key")
        .map(str::trim)
        .ok_or_else(|| refuse(400, "missing Sec-WebSocket-Key"))?;
    // RFC 6455 §4.2.1: the key is 16 random bytes, base64-encoded.
    let decoded = base64::engine::general_purpose::STANDARD.decode(key);
    if decoded.map_or(true, |k| k.len() != 16) {
        return Err(refuse(
            400,
            "Sec-WebSocket-Key must be 16 bytes in base64 (RFC 6455 4.2.1)",
        ));
    }
    Ok(derive_accept_key(key.as_bytes()))
}

/// The wire format a client asked for with `?format=`; text if it named none.
pub fn wire_format(req: &Request) -> Result<WireFormat, Refusal> {
    match req.query_param("format") {
        None => Ok(WireFormat::Text),
        Some(name) => WireFormat::from_name(name).ok_or_else(|| {
            let known: Vec<&str> = WireFormat::ALL.iter().map(|f| f.as_str()).collect();
            refuse(
                400,
                format!(
                    "unknown format {:?}: use one of {}",
                    name.chars().take(32).collect::<String>(),
                    known.join(", ")
                ),
            )
        }),
    }
}

/// The video codec a client asked for with `?video=`; MJPEG if it named none. H.264 is
/// refused with the reason when this binary cannot encode it.
pub fn video_codec(req: &Request) -> Result<Codec, Refusal> {
    let Some(name) = req.query_param("video") else {
        return Ok(Codec::Jpeg);
    };
    match Codec::from_name(name) {
        Some(Codec::H264) if !H264Encoder::available() => Err(refuse(
            501,
            "this build has no H.264 encoder (cargo feature h264); use ?video=mjpeg",
        )),
        Some(codec) => Ok(codec),
        None => {
            let known: Vec<&str> = Codec::ALL.iter().map(|c| c.as_str()).collect();
            Err(refuse(
                400,
                format!(
                    "unknown video codec {:?}: use one of {}",
                    name.chars().take(32).collect::<String>(),
                    known.join(", ")
                ),
            ))
        }
    }
}

/// How a session ended; the close frame we send follows from it.
#[derive(Debug)]
pub enum Ended {
    /// The client sent a close frame (with this code, if any).
    ClientClosed(Option<u16>),
    /// The client's connection ended without a close frame.
    Disconnected,
    /// The daemon is shutting down.
    Shutdown,
    /// The client broke a per-client bound.
    Limit(ClientLimit, String),
    /// A socket error.
    Io(std::io::Error),
}

impl Ended {
    /// The close code and reason we send, if a close frame is due.
    pub fn close(&self) -> Option<(u16, String)> {
        match self {
            // Echo the client's code (§5.5.1); a close without one gets an empty close.
            Ended::ClientClosed(code) => Some((code.unwrap_or(0), String::new())),
            Ended::Shutdown => Some((1001, "server shutting down".into())),
            Ended::Limit(limit, why) => {
                let code = match limit {
                    ClientLimit::MessageTooBig => 1009,
                    ClientLimit::ProtocolError => 1002,
                    ClientLimit::Flooding | ClientLimit::TooSlow => 1008,
                    ClientLimit::PingTimeout => 1001,
                    // Nothing gets through a socket that accepts nothing.
                    ClientLimit::WriteStalled => return None,
                };
                Some((code, why.clone()))
            }
            Ended::Disconnected | Ended::Io(_) => None,
        }
    }

    fn limit(limit: ClientLimit, why: impl Into<String>) -> Ended {
        Ended::Limit(limit, why.into())
    }
}

impl From<FrameError> for Ended {
    fn from(e: FrameError) -> Ended {
        let limit = match e {
            FrameError::Protocol(_) => ClientLimit::ProtocolError,
            FrameError::TooBig { .. } => ClientLimit::MessageTooBig,
        };
        Ended::limit(limit, e.to_string())
    }
}

/// Checks the request against `--max-clients` and `--allowed-origin`.
pub fn admit(server: &Server, req: &Request) -> Result<(), Response> {
    let access = &server.config.access;
    if let Some(origin) = req.header("origin") {
        if !access.allowed_origins.is_empty() && !access.lists_origin(origin) {
            return Err(Response::text(403, "this origin may not open the stream"));
        }
    }
    if server.hub.client_count() >= access.max_clients {
        return Err(Response::text(
            503,
            &format!(
                "too many clients ({} connected, --max-clients {}); try again later",
                server.hub.client_count(),
                access.max_clients
            ),
        )
        .with("Retry-After", "5"));
    }
    Ok(())
}

/// A token bucket: `rate` per second on average, bursts up to `capacity`.
struct Bucket {
    level: f64,
    capacity: f64,
    rate: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u32) -> Bucket {
        let capacity = 2.0 * f64::from(rate);
        Bucket {
            level: capacity,
            capacity,
            rate: f64::from(rate),
            at: Instant::now(),
        }
    }

    /// Takes `n` tokens; false if there were not enough.
    fn take(&mut self, n: f64) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * self.rate;
        self.level = (self.level + refill).min(self.capacity) - n;
        self.at = now;
        self.level >= 0.0
    }
}

/// A command a client may send as a short text message (docs/client.md, "Commands").
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Command {
    /// `clock:<client time>`: the client's clock reading (any finite number, usually its
    /// `Date.now()` in ms), answered with `clock:<client time>:<received>:<sent>`, the
    /// capture clock's UNIX seconds when the request was read and when the answer went out:
    /// the four times of an NTP exchange, from which the client gets the offset between the
    /// two clocks without NTP.
    Clock(f64),
    /// `keyframe`: an H.264 client's decoder needs a fresh start (an error, a gap): skip to
    /// the next keyframe, requested from the encoder.
    Keyframe,
}

impl Command {
    /// Parses a command; `None` for anything else (ignored, like any other client data).
    pub fn parse(message: &[u8]) -> Option<Command> {
        let text = std::str::from_utf8(message).ok()?;
        if text == "keyframe" {
            return Some(Command::Keyframe);
        }
        let client_time: f64 = text.strip_prefix("clock:")?.parse().ok()?;
        client_time
            .is_finite()
            .then_some(Command::Clock(client_time))
    }
}

/// The answer to a `clock:` command: `clock:<client time>:<received>:<sent>`.
pub fn clock_reply(client_time: f64, received: f64, sent: f64) -> String {
    format!("clock:{client_time}:{received:.6}:{sent:.6}")
}

/// What the reader hands the writer.
struct Shared {
    /// The payload of the latest ping not answered yet.
    pong: RefCell<Option<Vec<u8>>>,
    /// The latest clock request not answered yet: the client's time and when it was read.
    clock: Cell<Option<(f64, f64)>>,
    last_heard: Cell<Instant>,
    wake_tx: async_channel::Sender<()>,
    wake_rx: async_channel::Receiver<()>,
}

/// Runs `f` for at most `limit`; `None` if it did not finish.
pub(crate) async fn within<T>(limit: Duration, f: impl Future<Output = T>) -> Option<T> {
    future::or(async { Some(f.await) }, async {
        Timer::after(limit).await;
        None
    })
    .await
}

/// Writes one frame: our header, then `payload` straight from the shared buffer.
async fn write_frame(conn: &Conn, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
    let (header, header_len) = wsframe::header(opcode, payload.len());
    conn.write_all_vectored([&header[..header_len], payload])
        .await
}

/// Sends one frame if the socket is ready for it now ([`Conn::write_now`]): `Ok(false)` if
/// not (the caller waits for it and takes what is newest then).
async fn try_send_frame(
    conn: &Conn,
    opcode: u8,
    payload: &[u8],
    just_waited: bool,
) -> Result<bool, Ended> {
    let (header, header_len) = wsframe::header(opcode, payload.len());
    match conn
        .write_now([&header[..header_len], payload], just_waited)
        .await
    {
        Ok(Sent::Whole) => Ok(true),
        Ok(Sent::Full) => Ok(false),
        Ok(Sent::Stalled) => Err(stalled_mid_message()),
        Err(e) => Err(Ended::Io(e)),
    }
}

/// Writes a control frame (or a clock reply), within the stall limit.
async fn send_control(conn: &Conn, opcode: u8, payload: &[u8]) -> Result<(), Ended> {
    match within(WRITE_STALL_LIMIT, write_frame(conn, opcode, payload)).await {
        None => Err(stalled_mid_message()),
        Some(Err(e)) => Err(Ended::Io(e)),
        Some(Ok(())) => Ok(()),
    }
}

fn stalled_mid_message() -> Ended {
    Ended::limit(
        ClientLimit::WriteStalled,
        format!(
            "took more than {} s for one message",
            WRITE_STALL_LIMIT.as_secs()
        ),
    )
}

/// Reads the client's frames until it closes, breaks a bound or goes away.
async fn read_client(
    conn: &Conn,
    leftover: &[u8],
    shared: &Shared,
    slot: &crate::stream::hub::ClientSlot,
) -> Ended {
    let mut frames = ClientFrames::new(MAX_CLIENT_MESSAGE as u64);
    let mut frame_budget = Bucket::new(FLOOD_FRAMES_PER_S);
    let mut byte_budget = Bucket::new(FLOOD_BYTES_PER_S);
    // What came with the request head (at most the 16 KiB head cap) is parsed first.
    let mut buf = leftover.to_vec();
    let mut filled = buf.len();
    buf.resize(
        filled.max(READ_CHUNK + wsframe::MAX_HEADER_LEN + wsframe::MAX_CONTROL_PAYLOAD),
        0,
    );
    let mut reader = conn;
    let mut first = true;
    loop {
        if !first {
            let space_end = (filled + READ_CHUNK).min(buf.len());
            let n = match reader.read(&mut buf[filled..space_end]).await {
                Ok(0) => return Ended::Disconnected,
                Ok(n) => n,
                Err(e) => return Ended::Io(e),
            };
            filled += n;
            if !byte_budget.take(n as f64) {
                return Ended::limit(
                    ClientLimit::Flooding,
                    format!("sent more than {FLOOD_BYTES_PER_S} bytes/s"),
                );
            }
        }
        first = false;
        shared.last_heard.set(Instant::now());
        let mut at = 0;
        while at < filled {
            let (n, event) = match frames.next(&buf[at..filled]) {
                Ok(step) => step,
                Err(e) => return e.into(),
            };
            at += n;
            let Some(event) = event else {
                if n == 0 {
                    break; // an incomplete header or control frame: read more
                }
                continue;
            };
            if !frame_budget.take(1.0) {
                return Ended::limit(
                    ClientLimit::Flooding,
                    format!("sent more than {FLOOD_FRAMES_PER_S} frames/s"),
                );
            }
            match event {
                ClientEvent::Ping(payload) => {
                    // Only the latest ping needs an answer (§5.5.3): replace, never queue.
                    *shared.pong.borrow_mut() = Some(payload);
                    let _ = shared.wake_tx.try_send(());
                }
                ClientEvent::Close(code) => return Ended::ClientClosed(code),
                ClientEvent::Command(message) => match Command::parse(&message) {
                    Some(Command::Clock(client_time)) => {
                        // Like pings: only the latest is answered.
                        let received = MonoTime::now().to_unix();
                        shared.clock.set(Some((client_time, received)));
                        let _ = shared.wake_tx.try_send(());
                    }
                    Some(Command::Keyframe) => slot.resync(),
                    None => {}
                },
                ClientEvent::Pong | ClientEvent::Data { .. } => {}
            }
        }
        buf.copy_within(at..filled, 0);
        filled -= at;
        // Let every other connection run before this one reads again.
        future::yield_now().await;
    }
}

/// Writes the client's messages, pongs and pings until shutdown or a bound is broken.
async fn write_client(
    conn: &Conn,
    client: &crate::stream::hub::ClientHandle,
    shared: &Shared,
    server: &Server,
) -> Ended {
    let slot = &client.slot;
    let stats = &server.stats;
    let ping_interval = server.config.ping_interval;
    let mut next_ping = Instant::now() + ping_interval;
    // One timer for the pings, kept registered across waits: a timer made per wait would
    // cost a reactor wakeup per message.
    let mut ping_timer = Timer::at(next_ping);
    // Set when the socket was not ready for a message: wait for it, then take what is
    // newest *now* (a frame picked before a stall would be stale by the time it could be
    // written). `waited` says the wait just ended, so the socket need not be asked again.
    let mut blocked = false;
    let mut waited = false;
    loop {
        if blocked {
            match within(WRITE_STALL_LIMIT, conn.writable()).await {
                None => {
                    return Ended::limit(
                        ClientLimit::WriteStalled,
                        format!("accepted nothing for {} s", WRITE_STALL_LIMIT.as_secs()),
                    )
                }
                Some(Err(e)) => return Ended::Io(e),
                Some(Ok(())) => {}
            }
            blocked = false;
            waited = true;
        }
        let pong = shared.pong.borrow_mut().take();
        if let Some(payload) = pong {
            if let Err(e) = send_control(conn, OP_PONG, &payload).await {
                return e;
            }
            continue;
        }
        if let Some((client_time, received)) = shared.clock.take() {
            let reply = clock_reply(client_time, received, MonoTime::now().to_unix());
            if let Err(e) = send_control(conn, OP_TEXT, reply.as_bytes()).await {
                return e;
            }
            continue;
        }
        if Instant::now() >= next_ping {
            let silent = shared.last_heard.get().elapsed();
            if silent > 3 * ping_interval {
                return Ended::limit(
                    ClientLimit::PingTimeout,
                    format!("no answer to pings for {} s", silent.as_secs()),
                );
            }
            if let Err(e) = send_control(conn, OP_PING, &[]).await {
                return e;
            }
            next_ping = Instant::now() + ping_interval;
            ping_timer.set_at(next_ping);
            continue;
        }
        if slot.behind_for() > SLOW_CLIENT_LIMIT {
            return Ended::limit(
                ClientLimit::TooSlow,
                format!(
                    "too slow for the stream: losing audio for {} s",
                    SLOW_CLIENT_LIMIT.as_secs()
                ),
            );
        }
        let Some(item) = slot.take(MonoTime::now().to_unix()) else {
            let ready = future::or(
                async { Some(slot.ready().await) },
                future::or(
                    async {
                        let _ = shared.wake_rx.recv().await;
                        Some(true)
                    },
                    async {
                        (&mut ping_timer).await;
                        Some(true)
                    },
                ),
            )
            .await;
            if ready == Some(false) {
                return Ended::Shutdown;
            }
            continue;
        };
        let payload = match &item {
            Item::Audio(a) => a.payload(slot.format),
            Item::Video(v) => v.payload(slot.format),
            Item::H264(u) => u.payload(slot.format),
        };
        let just_waited = std::mem::take(&mut waited);
        match try_send_frame(conn, slot.format.opcode(), payload, just_waited).await {
            Err(ended) => return ended,
            Ok(true) => {}
            Ok(false) => {
                slot.put_back(item);
                blocked = true;
                continue;
            }
        }
        Stats::add(&stats.messages_sent, 1);
        Stats::add(&stats.bytes_sent, payload.len() as u64);
    }
}

/// After our close frame: stop sending, and read and discard what the client still sends
/// (bounded in time and bytes) so that closing the socket does not reset the connection
/// while the client has yet to read our close.
async fn linger(conn: &Conn, limit: Duration) {
    conn.shutdown_write(CLOSE_WRITE_LIMIT).await;
    let mut reader = conn;
    let mut scratch = [0u8; 4096];
    let mut discarded = 0;
    let _ = within(limit, async {
        while discarded < LINGER_BYTES {
            match reader.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => discarded += n,
            }
        }
    })
    .await;
}

/// Completes the upgrade on `stream` and runs the session until either side ends it.
pub async fn run(stream: Conn, req: Request, peer: SocketAddr, server: Rc<Server>) {
    let mut raw = stream.clone();
    let checked =
        accept_key(&req).and_then(|accept| Ok((accept, wire_format(&req)?, video_codec(&req)?)));
    let (accept, format, codec) = match checked {
        Ok(ok) => ok,
        Err(refusal) => {
            let mut resp = Response::text(refusal.status, &refusal.why);
            if refusal.status == 426 {
                resp = resp
                    .with("Upgrade", "websocket")
                    .with("Sec-WebSocket-Version", "13");
            }
            let _ = write_response(&mut raw, &resp, false).await;
            log::debug!("{peer}: refused upgrade: {}", refusal.why);
            return;
        }
    };
    if let Err(refusal) = admit(&server, &req) {
        log::info!(
            "client {peer} refused: {}",
            String::from_utf8_lossy(&refusal.body).trim()
        );
        let _ = write_response(&mut raw, &refusal, false).await;
        return;
    }
    // Registered before the first await, so that upgrades racing each other all see it in
    // `--max-clients`.
    let client = server.hub.register_codec(peer, format, codec);
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    if raw.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    if let Err(e) =
        socket2::SockRef::from(stream.tcp().get_ref()).set_tcp_notsent_lowat(NOTSENT_LOWAT)
    {
        log::debug!("{peer}: TCP_NOTSENT_LOWAT unavailable ({e}); relying on socket buffers");
    }
    log::info!(
        "client {peer} connected ({} {}, {} clients)",
        codec.as_str(),
        format.as_str(),
        server.hub.client_count()
    );

    let (wake_tx, wake_rx) = async_channel::bounded(1);
    let shared = Shared {
        pong: RefCell::new(None),
        clock: Cell::new(None),
        last_heard: Cell::new(Instant::now()),
        wake_tx,
        wake_rx,
    };
    // The reader is polled only when the socket woke it, not on every frame sent.
    let ended = future::or(
        WokenOnly::new(read_client(&stream, &req.leftover, &shared, &client.slot)),
        write_client(&stream, &client, &shared, &server),
    )
    .await;
    if let Some((code, reason)) = ended.close() {
        let frame = if code == 0 {
            wsframe::control_frame(OP_CLOSE, &[])
        } else {
            wsframe::close_frame(code, &reason)
        };
        // Flushed: over TLS the frame is not on the socket until then.
        let _ = within(CLOSE_WRITE_LIMIT, async {
            raw.write_all(&frame).await?;
            raw.flush().await
        })
        .await;
    }
    if let Ended::Limit(limit, _) = &ended {
        Stats::add(limit.counter(&server.stats), 1);
    }
    let skipped = client.slot.video_skipped.get();
    drop(client);
    match &ended {
        Ended::Limit(_, why) => {
            log::info!("client {peer} closed: {why} ({skipped} frames skipped)")
        }
        Ended::Io(e) => log::info!("client {peer} disconnected: {e} ({skipped} frames skipped)"),
        Ended::ClientClosed(_) | Ended::Disconnected => {
            log::info!("client {peer} disconnected ({skipped} frames skipped)")
        }
        Ended::Shutdown => log::debug!("client {peer} closed for shutdown"),
    }
    // At shutdown the daemon waits for every session; elsewhere the client gets longer.
    let linger_for = match ended {
        Ended::Shutdown => Duration::from_millis(300),
        Ended::Limit(ClientLimit::WriteStalled, _) | Ended::Io(_) | Ended::Disconnected => return,
        _ => LINGER,
    };
    linger(&stream, linger_for).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::http::parse_head;

    fn upgrade(key: &str, query: &str) -> Request {
        parse_head(
            format!(
                "GET /stream{query} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n\
                 Sec-WebSocket-Version: 13\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap()
        .unwrap()
    }

    #[test]
    fn accept_key_matches_rfc6455_example() {
        let req = upgrade("dGhlIHNhbXBsZSBub25jZQ==", "");
        assert_eq!(accept_key(&req).unwrap(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn plain_gets_and_bad_versions_are_refused() {
        let plain = parse_head(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap()
            .unwrap();
        let refusal = accept_key(&plain).unwrap_err();
        assert_eq!(refusal.status, 426);
        assert!(refusal.why.contains("WebSocket client"));
        let v8 = parse_head(
            b"GET /stream HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert!(accept_key(&v8).unwrap_err().why.contains("version"));
    }

    #[test]
    fn a_key_that_is_not_16_bytes_of_base64_is_a_bad_request() {
        for key in [
            "abc",
            "",
            "dGhlIHNhbXBsZSBub25jZQ",
            "dGhlIHNhbXBsZSBub25jZSE=",
        ] {
            let refusal = accept_key(&upgrade(key, "")).unwrap_err();
            assert_eq!(refusal.status, 400, "key {key:?}");
        }
    }

    #[test]
    fn unknown_formats_are_refused_and_known_ones_parsed() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        assert_eq!(wire_format(&upgrade(key, "")), Ok(WireFormat::Text));
        assert_eq!(
            wire_format(&upgrade(key, "?format=binary")),
            Ok(WireFormat::Binary)
        );
        let refusal = wire_format(&upgrade(key, "?format=bogus")).unwrap_err();
        assert_eq!(refusal.status, 400);
        assert!(refusal.why.contains("\"bogus\"") && refusal.why.contains("text, binary"));
    }

    #[test]
    fn close_codes_follow_from_why_the_session_ended() {
        let code = |e: Ended| e.close().map(|(c, _)| c);
        assert_eq!(code(Ended::Shutdown), Some(1001));
        assert_eq!(code(FrameError::TooBig { limit: 65536 }.into()), Some(1009));
        assert_eq!(
            code(FrameError::Protocol("unknown opcode").into()),
            Some(1002)
        );
        assert_eq!(code(Ended::limit(ClientLimit::Flooding, "x")), Some(1008));
        assert_eq!(code(Ended::limit(ClientLimit::TooSlow, "x")), Some(1008));
        assert_eq!(
            code(Ended::limit(ClientLimit::PingTimeout, "x")),
            Some(1001)
        );
        assert_eq!(code(Ended::limit(ClientLimit::WriteStalled, "x")), None);
        assert_eq!(code(Ended::ClientClosed(Some(1000))), Some(1000));
        assert_eq!(code(Ended::Disconnected), None);
    }

    #[test]
    fn commands_are_parsed_strictly_and_clock_replies_carry_four_times() {
        assert_eq!(Command::parse(b"keyframe"), Some(Command::Keyframe));
        assert_eq!(
            Command::parse(b"clock:1712345678901.25"),
            Some(Command::Clock(1712345678901.25))
        );
        for bad in [
            &b"clock:"[..],
            b"clock:NaN",
            b"clock:inf",
            b"clock:1:2",
            b"Keyframe",
            b"keyframe ",
            b"\xff",
        ] {
            assert_eq!(Command::parse(bad), None, "{bad:?}");
        }
        assert_eq!(
            clock_reply(1712.5, 100.0, 100.000_25),
            "clock:1712.5:100.000000:100.000250"
        );
    }

    #[test]
    fn the_token_bucket_allows_bursts_then_the_rate() {
        let mut bucket = Bucket::new(100);
        assert!(
            (0..200).all(|_| bucket.take(1.0)),
            "a burst of twice the rate"
        );
        assert!(!bucket.take(1.0));
    }
}
