//! The HTTP/WebSocket server: one single-threaded executor, one task per connection.
//!
//! `/stream` upgrades to the media WebSocket ([`ws`]); `/stream.mjpg` (and mjpg-streamer's
//! `/?action=stream`) is the multipart MJPEG stream ([`multipart`]); `/controls` lists and
//! sets the camera's controls ([`controls`]); `/status` reports the configuration and
//! counters; everything else is the browser client's files ([`files`]) or a 404. With a
//! certificate configured (`--tls-*`, [`crate::tls`]) every connection is TLS from its first
//! byte, on the same port ([`Conn`], `tls`).
#![forbid(unsafe_code)]

pub mod auth;
pub mod controls;
pub mod files;
pub mod http;
pub mod metrics;
pub mod multipart;
#[cfg(feature = "tls")]
pub mod tls;
pub mod woken;
pub mod ws;
pub mod wsframe;

use crate::clock::MonoTime;
use crate::config::Config;
use crate::encode::demand::Codec;
use crate::encode::h264::H264Encoder;
use crate::pipeline::stale_after;
use crate::pipeline::supervisor::SourceKind;
use crate::stats::{ClientLimit, Stats};
use crate::stream::hub::Hub;
use auth::Resource;
use futures_lite::AsyncWriteExt;
use http::{json_string, write_response, HeadError, Request, Response};
use smol::{Async, LocalExecutor, Timer};
use std::io::IoSlice;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// How long a client may take to send its request head (and, on a TLS port, as long again
/// for its TLS handshake).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Most TLS handshakes in progress at once (counted from the client's first byte); further
/// ones are closed at once. Each holds a rustls connection (its buffers, some tens of KiB)
/// and costs a signature.
pub const MAX_TLS_HANDSHAKES: usize = 64;
/// How long a plain-HTTP client on the TLS port gets to finish its request head before it is
/// told to use https.
pub const PLAIN_ON_TLS_GRACE: Duration = Duration::from_secs(1);
/// How long a `/snapshot.jpg` request keeps JPEG encoding on with no client watching, so
/// that a poller (a printer host, a home-automation camera card) gets fresh frames at once.
pub const SNAPSHOT_JPEG_FOR: Duration = Duration::from_secs(30);

/// Everything a connection task needs.
pub struct Server {
    /// The validated configuration.
    pub config: Config,
    /// The fan-out hub.
    pub hub: Rc<Hub>,
    /// Shared counters.
    pub stats: Arc<Stats>,
    /// TLS handshakes in progress (at most [`MAX_TLS_HANDSHAKES`]).
    pub tls_handshakes: std::cell::Cell<usize>,
    /// The camera's controls, shared with the capture thread.
    pub controls: Arc<crate::capture::controls::ControlBoard>,
}

impl Server {
    /// Accepts connections until `shutdown` resolves, spawning one task each on `ex`.
    pub async fn accept_loop(
        self: Rc<Self>,
        ex: Rc<LocalExecutor<'static>>,
        listener: Async<TcpListener>,
    ) {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let this = self.clone();
                    ex.spawn(this.handle(stream, peer)).detach();
                }
                Err(e) => {
                    // Out of fds or similar: back off instead of spinning.
                    log::warn!("accept failed: {e}");
                    Timer::after(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn handle(self: Rc<Self>, stream: Async<TcpStream>, peer: SocketAddr) {
        let _ = stream.get_ref().set_nodelay(true);
        let tcp = Arc::new(stream);
        let stream = match &self.config.tls {
            None => Conn::Plain(tcp),
            #[cfg(feature = "tls")]
            Some(acceptor) => match self.accept_tls(tcp, acceptor, peer).await {
                Some(conn) => conn,
                None => return,
            },
            #[cfg(not(feature = "tls"))]
            Some(never) => match *never {},
        };
        let mut reader = stream.clone();
        let head =
            futures_lite::future::or(async { Some(http::read_head(&mut reader).await) }, async {
                Timer::after(HEAD_TIMEOUT).await;
                None
            })
            .await;
        let req = match head {
            Some(Ok(req)) => req,
            Some(Err(HeadError::Closed)) => return,
            Some(Err(e)) => {
                let status = e.status();
                log::debug!("{peer}: {e}");
                let _ = write_response(&mut reader, &Response::text(status, &e.to_string()), false)
                    .await;
                return;
            }
            None => {
                let _ = write_response(
                    &mut reader,
                    &Response::text(408, "request head timed out"),
                    false,
                )
                .await;
                return;
            }
        };
        if req.path == "/stream" {
            if let Err(denied) = auth::check(&self.config.access, &req, Resource::Data) {
                let _ = write_response(&mut reader, &denied, false).await;
                return;
            }
            ws::run(stream, req, peer, self.clone()).await;
            return;
        }
        if req.path == controls::PATH {
            controls::run(&self, stream, req).await;
            return;
        }
        let path = multipart::alias(&req).unwrap_or(&req.path);
        if path == multipart::STREAM_PATH && (req.method == "GET" || req.method == "HEAD") {
            if let Err(denied) = auth::check(&self.config.access, &req, Resource::Data) {
                let _ = write_response(&mut reader, &denied, req.method == "HEAD").await;
                return;
            }
            multipart::run(stream, req, peer, self.clone()).await;
            return;
        }
        let may_see = || auth::check(&self.config.access, &req, Resource::Data).is_ok();
        if path == multipart::SNAPSHOT_PATH && may_see() {
            // JPEG is encoded only while someone wants it: a snapshot asks for it for a while
            // and waits for the next frame when the newest is stale.
            self.hub.demand().want_jpeg_for(SNAPSHOT_JPEG_FOR);
            if !self.has_fresh_jpeg() {
                let wait = self.config.video.frame_interval() * 3 + Duration::from_secs(1);
                self.hub.next_video(wait).await;
            }
        }
        let response = self.respond(&req);
        let _ = write_response(&mut reader, &response, req.method == "HEAD").await;
    }

    /// The TLS handshake of a new connection, under [`HEAD_TIMEOUT`] and
    /// [`MAX_TLS_HANDSHAKES`]; `None` (logged at debug level) if the client is not served.
    #[cfg(feature = "tls")]
    async fn accept_tls(
        &self,
        tcp: Arc<Async<TcpStream>>,
        acceptor: &crate::tls::Acceptor,
        peer: SocketAddr,
    ) -> Option<Conn> {
        let handshake = async {
            tls::starts_tls(&tcp).await?;
            // Counted from the first byte on: a connection that sends nothing holds no rustls
            // state and takes no handshake's place (the head timeout still closes it).
            let Some(_slot) = HandshakeSlot::take(&self.tls_handshakes) else {
                return Err(tls::HandshakeError::Busy(MAX_TLS_HANDSHAKES));
            };
            tls::accept(tcp.clone(), acceptor.config.clone()).await
        };
        let done = ws::within(HEAD_TIMEOUT, handshake).await;
        match done {
            Some(Ok(conn)) => Some(Conn::Tls(conn)),
            // A method name's first letter: plain HTTP. Read its head so that closing does
            // not reset the connection before the client reads why.
            Some(Err(tls::HandshakeError::NotTls(first))) if first.is_ascii_uppercase() => {
                let mut plain = Conn::Plain(tcp);
                let head = ws::within(PLAIN_ON_TLS_GRACE, http::read_head(&mut plain)).await;
                // The client's Host, echoed only if it looks like one.
                let host = match &head {
                    Some(Ok(req)) => req.header("host").map(str::trim).filter(|h| {
                        h.len() <= 255
                            && h.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
                    }),
                    _ => None,
                }
                .unwrap_or("this-host")
                .to_string();
                log::debug!("{peer}: plain HTTP on the TLS port; told to use https");
                let hint = Response::text(
                    400,
                    &format!("this port speaks HTTPS: open https://{host}/ instead"),
                );
                let _ =
                    ws::within(PLAIN_ON_TLS_GRACE, write_response(&mut plain, &hint, false)).await;
                None
            }
            Some(Err(e)) => {
                log::debug!("{peer}: {e}");
                None
            }
            None => {
                log::debug!("{peer}: TLS handshake timed out");
                None
            }
        }
    }

    /// Is the newest JPEG recent enough to be "now"?
    fn has_fresh_jpeg(&self) -> bool {
        let limit = stale_after(self.config.video.frame_interval()).as_secs_f64();
        self.hub
            .latest_video()
            .is_some_and(|f| MonoTime::now().to_unix() - f.ts <= limit)
    }

    /// The response to a plain (non-WebSocket) request.
    pub fn respond(&self, req: &Request) -> Response {
        if req.method != "GET" && req.method != "HEAD" {
            return Response::text(405, "only GET and HEAD are supported")
                .with("Allow", "GET, HEAD");
        }
        let path = multipart::alias(req).unwrap_or(&req.path);
        let resource = match path {
            "/healthz" => Resource::Health,
            "/status" | "/metrics" | "/snapshot.jpg" => Resource::Data,
            _ => Resource::Page,
        };
        if let Err(denied) = auth::check(&self.config.access, req, resource) {
            return denied;
        }
        let no_store = |r: Response| {
            r.with("Cache-Control", "no-store")
                .with("Access-Control-Allow-Origin", "*")
        };
        match path {
            "/healthz" => {
                let (status, body) = self.health();
                no_store(Response::new(status, "application/json", body))
            }
            "/status" => no_store(Response::new(200, "application/json", self.status_json())),
            "/metrics" => no_store(Response::new(
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                metrics::render(
                    &self.stats,
                    &metrics::Gauges {
                        clients: self.hub.client_count(),
                        frame_age: self.live_frame_age().map(|d| d.as_secs_f64()),
                        video_failing: self.stats.video_failing.load(Ordering::Relaxed),
                        clients_by_codec: Codec::ALL.map(|codec| self.hub.clients_of(codec)),
                    },
                ),
            )),
            multipart::SNAPSHOT_PATH => match self.hub.latest_video() {
                Some(frame) => no_store(Response::new(200, "image/jpeg", frame.jpeg_bytes())),
                None => no_store(Response::text(503, "no frame yet")),
            },
            path => files::serve(&self.config.client, path, req.header("if-none-match"))
                .unwrap_or_else(|| Response::text(404, "not found")),
        }
    }

    fn live_frame_age(&self) -> Option<Duration> {
        Stats::instant(&self.stats.last_live_frame).map(|t| MonoTime::now().since(t))
    }

    /// 200 when the newest captured frame is fresh and no source is failing, else 503, with
    /// a JSON body saying why.
    pub fn health(&self) -> (u16, String) {
        let video_state = self.stats.source(SourceKind::Video);
        let audio_state = self.stats.source(SourceKind::Audio);
        let limit = stale_after(self.config.video.frame_interval());
        let age = self.live_frame_age();
        let age_ms = age.map_or("null".to_string(), |a| {
            format!("{:.0}", a.as_secs_f64() * 1e3)
        });
        let problem = if self.stats.video_failing.load(Ordering::Relaxed) {
            Some(format!("video source {video_state}"))
        } else if age.is_none_or(|a| a > limit) {
            Some(format!(
                "newest frame is older than {} ms",
                limit.as_millis()
            ))
        } else if self.config.audio.is_some() && audio_state.is_failing() {
            Some(format!("audio source {audio_state}"))
        } else {
            None
        };
        match problem {
            None => (
                200,
                format!(
                    "{{\"status\":\"ok\",\"frame_age_ms\":{age_ms},\"clients\":{}}}",
                    self.hub.client_count()
                ),
            ),
            Some(reason) => (
                503,
                format!(
                    "{{\"status\":\"unhealthy\",\"reason\":{},\"frame_age_ms\":{age_ms}}}",
                    json_string(&reason)
                ),
            ),
        }
    }

    /// The configuration, sources and counters as JSON.
    pub fn status_json(&self) -> String {
        let c = &self.config;
        let s = &self.stats;
        let video_state = s.source(SourceKind::Video);
        let audio_state = s.source(SourceKind::Audio);
        let audio = match (&c.audio, self.hub.audio_format()) {
            (None, _) => "null".to_string(),
            (Some(a), fmt) => {
                let (rate, ch) = fmt.unwrap_or((a.sample_rate.unwrap_or(0), a.channels));
                format!(
                    "{{\"sample_rate\":{rate},\"channels\":{ch},\"state\":{},\
                     \"condition\":\"{}\"}}",
                    json_string(&audio_state.to_string()),
                    audio_state.condition()
                )
            }
        };
        let latest = self.hub.latest_video();
        let clients: Vec<String> = self
            .hub
            .clients()
            .iter()
            .map(|c| {
                format!(
                    "{{\"address\":{},\"format\":\"{}\",\"codec\":\"{}\",\
                     \"connected_s\":{:.1},\"video_skipped\":{},\"audio_dropped\":{}}}",
                    json_string(&c.addr.to_string()),
                    c.format_name(),
                    c.codec.as_str(),
                    c.connected_at.elapsed().as_secs_f64(),
                    c.video_skipped.get(),
                    c.audio_dropped.get()
                )
            })
            .collect();
        let counters: Vec<String> = crate::stats::COUNTERS
            .iter()
            .map(|k| format!("\"{}\":{}", k.status_key, Stats::get((k.get)(s))))
            .collect();
        let counters = counters.join(",");
        // What clients are sent: the configured size, turned.
        let sent_size = c.orientation.turned_size((c.video.width, c.video.height));
        format!(
            "{{\"version\":{},\"camera\":{},\"video\":{{\"width\":{},\"height\":{},\"fps\":{},\
             \"rotation\":{},\"hflip\":{},\"vflip\":{},\"quality\":{},\"state\":{},\"condition\":\"{}\",\"latest_ts\":{}}},\"audio\":{audio},\"clients\":[{}],\
             \"counters\":{{{counters}}},\"clients_closed\":{{{}}},\
             \"codecs\":{{{}}}}}",
            json_string(env!("CARGO_PKG_VERSION")),
            json_string(c.camera.as_str()),
            sent_size.0,
            sent_size.1,
            c.video.fps,
            c.orientation.rotation,
            c.orientation.hflip,
            c.orientation.vflip,
            c.quality,
            json_string(&video_state.to_string()),
            video_state.condition(),
            latest.map_or("null".to_string(), |f| format!("{:.6}", f.ts)),
            clients.join(","),
            ClientLimit::ALL
                .iter()
                .map(|l| format!("\"{}\":{}", l.as_str(), Stats::get(l.counter(s))))
                .collect::<Vec<_>>()
                .join(","),
            Codec::ALL
                .iter()
                .map(|&codec| self.codec_json(codec))
                .collect::<Vec<_>>()
                .join(","),
        )
    }

    /// One codec's entry in `/status`: its clients and what its stage produced.
    fn codec_json(&self, codec: Codec) -> String {
        let s = self.stats.codec(codec);
        let units = Stats::get(&s.units);
        let mean_ms = if units == 0 {
            0.0
        } else {
            Stats::get(&s.encode_micros) as f64 / units as f64 / 1e3
        };
        let extra = match codec {
            Codec::Jpeg => {
                let in_use = self.stats.jpeg_encoder.lock().ok().and_then(|c| c.clone());
                format!(
                    ",\"quality\":{},\"encoder\":\"{}\",\"encoder_in_use\":{}",
                    self.config.quality,
                    self.config.jpeg_encoder.as_str(),
                    in_use.map_or("null".to_string(), |n| json_string(&n)),
                )
            }
            Codec::H264 => {
                let h = &self.config.h264;
                let name = self.stats.h264_codec.lock().ok().and_then(|c| c.clone());
                let in_use = self.stats.h264_encoder.lock().ok().and_then(|c| c.clone());
                format!(
                    ",\"available\":{},\"encoder\":\"{}\",\"encoder_in_use\":{},\"profile\":\"{}\",\
                     \"target_kbps\":{},\"keyframe_interval_s\":{},\"codec\":{},\
                     \"keyframes\":{},\"keyframes_forced\":{},\"encoder_skipped\":{}",
                    H264Encoder::available(),
                    h.encoder.as_str(),
                    in_use.map_or("null".to_string(), |n| json_string(&n)),
                    h.profile.as_str(),
                    h.bitrate_kbps,
                    h.keyframe_interval.as_secs(),
                    name.map_or("null".to_string(), |n| json_string(&n)),
                    Stats::get(&s.keyframes),
                    Stats::get(&s.keyframes_forced),
                    Stats::get(&s.encoder_skipped),
                )
            }
        };
        format!(
            "\"{}\":{{\"clients\":{},\"units\":{units},\"bytes\":{},\"encode_ms_mean\":{mean_ms:.3},\
             \"recent_kbps\":{:.1},\"client_skipped\":{},\"errors\":{}{extra}}}",
            codec.as_str(),
            self.hub.clients_of(codec),
            Stats::get(&s.bytes),
            Stats::get(&s.recent_bps) as f64 / 1e3,
            Stats::get(&s.client_skipped),
            Stats::get(&s.errors),
        )
    }
}

/// One of the [`MAX_TLS_HANDSHAKES`] places, given back when dropped (also when the head
/// timeout drops the handshake).
#[cfg(feature = "tls")]
struct HandshakeSlot<'a>(&'a std::cell::Cell<usize>);

#[cfg(feature = "tls")]
impl<'a> HandshakeSlot<'a> {
    fn take(in_progress: &'a std::cell::Cell<usize>) -> Option<HandshakeSlot<'a>> {
        let n = in_progress.get();
        (n < MAX_TLS_HANDSHAKES).then(|| {
            in_progress.set(n + 1);
            HandshakeSlot(in_progress)
        })
    }
}

#[cfg(feature = "tls")]
impl Drop for HandshakeSlot<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// A connection shared by the session's reader, writer and readiness checks: plain TCP, or
/// TLS over it ([`tls`]).
///
/// `&Async<TcpStream>` does the I/O; this gives it an owned handle that a session's reader
/// and writer can each hold while the session keeps another to wait for writability. The
/// plain variant is what it always was: every call goes straight to the socket.
#[derive(Clone)]
pub enum Conn {
    /// Plain TCP.
    Plain(Arc<Async<TcpStream>>),
    /// TLS (cargo feature `tls`).
    #[cfg(feature = "tls")]
    Tls(tls::TlsConn),
}

impl Conn {
    /// The socket (for socket options).
    pub fn tcp(&self) -> &Async<TcpStream> {
        match self {
            Conn::Plain(tcp) => tcp,
            #[cfg(feature = "tls")]
            Conn::Tls(tls) => tls.tcp(),
        }
    }

    /// Resolves when a write would be taken at once: for TLS, once the ciphertext already
    /// encrypted has gone to the socket too.
    pub async fn writable(&self) -> std::io::Result<()> {
        match self {
            Conn::Plain(tcp) => tcp.writable().await,
            #[cfg(feature = "tls")]
            Conn::Tls(tls) => tls.writable().await,
        }
    }

    /// Whether a write would be taken now, by the rule a readiness wait uses (for TCP, with
    /// `TCP_NOTSENT_LOWAT` set: under half of it unsent): one `poll` with no timeout and no
    /// reactor, much cheaper than a wait. TLS says false: its ciphertext buffer is only
    /// known to [`Conn::writable`].
    fn writable_now(&self) -> bool {
        match self {
            Conn::Plain(tcp) => {
                use rustix::event::{poll, PollFd, PollFlags};
                let zero = rustix::time::Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                let mut fds = [PollFd::new(tcp.get_ref(), PollFlags::OUT)];
                matches!(poll(&mut fds, Some(&zero)), Ok(1))
                    && fds[0].revents().contains(PollFlags::OUT)
            }
            #[cfg(feature = "tls")]
            Conn::Tls(_) => false,
        }
    }

    /// Writes all of `parts` in order, in as few system calls as the socket allows.
    pub async fn write_all_vectored<const N: usize>(
        &self,
        mut parts: [&[u8]; N],
    ) -> std::io::Result<()> {
        let mut writer = self;
        while parts.iter().any(|p| !p.is_empty()) {
            let n = writer.write_vectored(&parts.map(IoSlice::new)).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            advance(&mut parts, n);
        }
        Ok(())
    }

    /// Writes `parts` if the socket is ready for them now, by the readiness wait's rule, so
    /// that a slow client skips messages instead of queueing them in the kernel
    /// (`just_waited`: a wait for [`Conn::writable`] has just ended, so it need not be asked
    /// again; TLS counts as ready only then). Waits only to finish a message the socket took
    /// part of (for at most [`ws::WRITE_STALL_LIMIT`]). A client that keeps up costs one
    /// `poll` and one `sendmsg` per message: no readiness wait, and no timer, whose
    /// registration wakes the reactor thread.
    pub async fn write_now<const N: usize>(
        &self,
        mut parts: [&[u8]; N],
        just_waited: bool,
    ) -> std::io::Result<Sent> {
        if !just_waited && !self.writable_now() {
            return Ok(Sent::Full);
        }
        let mut writer = self;
        let slices = parts.map(IoSlice::new);
        let n = match futures_lite::future::poll_once(writer.write_vectored(&slices)).await {
            None => return Ok(Sent::Full),
            Some(n) => n?,
        };
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        advance(&mut parts, n);
        if parts.iter().all(|p| p.is_empty()) {
            return Ok(Sent::Whole);
        }
        match ws::within(ws::WRITE_STALL_LIMIT, self.write_all_vectored(parts)).await {
            None => Ok(Sent::Stalled),
            Some(r) => r.map(|()| Sent::Whole),
        }
    }

    /// Ends our direction (TLS: with a `close_notify` first, sent within `limit`); the
    /// client can still send, which a lingering reader discards.
    pub async fn shutdown_write(&self, limit: Duration) {
        #[cfg(feature = "tls")]
        if let Conn::Tls(tls) = self {
            tls.send_close_notify();
            let _ = ws::within(
                limit,
                futures_lite::future::poll_fn(|cx| tls.poll_flush(cx)),
            )
            .await;
        }
        #[cfg(not(feature = "tls"))]
        let _ = limit;
        let _ = self.tcp().get_ref().shutdown(std::net::Shutdown::Write);
    }
}

/// What [`Conn::write_now`] came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    /// All of it was written.
    Whole,
    /// The socket was not ready, or took nothing: it is full.
    Full,
    /// It took part, and not the rest within the stall limit.
    Stalled,
}

/// Drops the first `n` bytes of `parts`.
fn advance(parts: &mut [&[u8]], mut n: usize) {
    for part in parts {
        let taken = n.min(part.len());
        *part = &part[taken..];
        n -= taken;
    }
}

impl futures_lite::AsyncRead for &Conn {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match *self {
            Conn::Plain(tcp) => std::pin::Pin::new(&mut &**tcp).poll_read(cx, buf),
            #[cfg(feature = "tls")]
            Conn::Tls(tls) => tls.poll_read(cx, buf),
        }
    }
}

impl futures_lite::AsyncWrite for &Conn {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match *self {
            Conn::Plain(tcp) => std::pin::Pin::new(&mut &**tcp).poll_write(cx, buf),
            #[cfg(feature = "tls")]
            Conn::Tls(tls) => tls.poll_write_vectored(cx, &[std::io::IoSlice::new(buf)]),
        }
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match *self {
            Conn::Plain(tcp) => std::pin::Pin::new(&mut &**tcp).poll_write_vectored(cx, bufs),
            #[cfg(feature = "tls")]
            Conn::Tls(tls) => tls.poll_write_vectored(cx, bufs),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match *self {
            Conn::Plain(tcp) => std::pin::Pin::new(&mut &**tcp).poll_flush(cx),
            #[cfg(feature = "tls")]
            Conn::Tls(tls) => tls.poll_flush(cx),
        }
    }

    fn poll_close(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match *self {
            Conn::Plain(tcp) => std::pin::Pin::new(&mut &**tcp).poll_close(cx),
            #[cfg(feature = "tls")]
            Conn::Tls(tls) => {
                tls.send_close_notify();
                match tls.poll_flush(cx) {
                    std::task::Poll::Ready(Ok(())) => {
                        std::pin::Pin::new(&mut tls.tcp()).poll_close(cx)
                    }
                    other => other,
                }
            }
        }
    }
}

impl futures_lite::AsyncRead for Conn {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut &*self).poll_read(cx, buf)
    }
}

impl futures_lite::AsyncWrite for Conn {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut &*self).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut &*self).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut &*self).poll_flush(cx)
    }

    fn poll_close(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut &*self).poll_close(cx)
    }
}
