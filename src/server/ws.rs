//! One WebSocket session: the upgrade handshake, then the client's slot drained to its socket.
//!
//! Messages from the client are read (so pings and closes work) and otherwise ignored, with a
//! small size cap; an oversized or invalid frame ends that session only. Before each message
//! the writer waits until the socket has sent what it was given (TCP_NOTSENT_LOWAT), so the
//! kernel never holds more than about one frame per client: a stalled client's queue stays in
//! its slot, where newer frames replace older ones.
#![forbid(unsafe_code)]

use super::http::{write_response, Request, Response};
use super::{Conn, Server};
use crate::media::WireFormat;
use crate::stats::Stats;
use async_tungstenite::tungstenite::handshake::derive_accept_key;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use futures_lite::{future, StreamExt};
use smol::Timer;
use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Largest message a client may send us (we expect none but control frames).
pub const MAX_CLIENT_MESSAGE: usize = 64 * 1024;
/// Unsent bytes in the kernel below which a socket counts as ready for the next message.
pub const NOTSENT_LOWAT: u32 = 16 * 1024;

/// Checks the upgrade headers; on success, the `Sec-WebSocket-Accept` value.
pub fn accept_key(req: &Request) -> Result<String, &'static str> {
    if req.method != "GET" {
        return Err("a WebSocket upgrade must be a GET");
    }
    if !req.header_has_token("upgrade", "websocket")
        || !req.header_has_token("connection", "upgrade")
    {
        return Err(
            "this is the WebSocket endpoint: connect with a WebSocket client (Upgrade: websocket)",
        );
    }
    if req.header("sec-websocket-version").map(str::trim) != Some("13") {
        return Err("unsupported WebSocket version (need 13)");
    }
    let key = req
        .header("sec-websocket-key")
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or("missing Sec-WebSocket-Key")?;
    Ok(derive_accept_key(key.as_bytes()))
}

/// How a session ended, for the disconnect log line.
#[derive(Debug)]
enum Ended {
    ClientClosed,
    Shutdown,
    Error(String),
}

/// Interval between our pings; browsers and tungstenite answer them automatically.
pub const PING_INTERVAL: Duration = Duration::from_secs(15);
/// A client we have not heard from (not even a pong) for this long is dropped.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(45);
/// A client whose socket accepts nothing for this long is dropped.
pub const WRITE_STALL_LIMIT: Duration = Duration::from_secs(30);

/// Checks the request against `--max-clients` and `--allowed-origin`.
pub fn admit(server: &Server, req: &Request) -> Result<(), Response> {
    let access = &server.config.access;
    if let Some(origin) = req.header("origin") {
        if !access.allowed_origins.is_empty()
            && !access
                .allowed_origins
                .iter()
                .any(|o| o.eq_ignore_ascii_case(origin.trim()))
        {
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

/// Completes the upgrade on `stream` and runs the session until either side ends it.
pub async fn run(stream: Conn, req: Request, peer: SocketAddr, server: Rc<Server>) {
    let mut raw = stream.clone();
    let accept = match accept_key(&req) {
        Ok(a) => a,
        Err(why) => {
            let resp = Response::text(426, why)
                .with("Upgrade", "websocket")
                .with("Sec-WebSocket-Version", "13");
            let _ = write_response(&mut raw, &resp, false).await;
            log::debug!("{peer}: refused upgrade: {why}");
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
    let format = match req.query_param("format") {
        Some("binary") => WireFormat::Binary,
        _ => WireFormat::Text,
    };
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    if futures_lite::AsyncWriteExt::write_all(&mut raw, head.as_bytes())
        .await
        .is_err()
    {
        return;
    }
    if let Err(e) = socket2::SockRef::from(stream.0.get_ref()).set_tcp_notsent_lowat(NOTSENT_LOWAT)
    {
        log::debug!("{peer}: TCP_NOTSENT_LOWAT unavailable ({e}); relying on socket buffers");
    }
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_CLIENT_MESSAGE))
        .max_frame_size(Some(MAX_CLIENT_MESSAGE));
    let ws =
        WebSocketStream::from_partially_read(raw, req.leftover, Role::Server, Some(config)).await;
    let (mut tx, mut rx) = ws.split();
    let stats = server.stats.clone();
    let client = server.hub.register(peer, format);
    log::info!(
        "client {peer} connected ({} format, {} clients)",
        match format {
            WireFormat::Binary => "binary",
            WireFormat::Text => "text",
        },
        server.hub.client_count()
    );

    let last_heard = Cell::new(Instant::now());
    let reader = async {
        while let Some(msg) = rx.next().await {
            last_heard.set(Instant::now());
            match msg {
                Ok(Message::Close(_)) => return Ended::ClientClosed,
                Ok(_) => {}
                Err(e) => return Ended::Error(format!("client sent: {e}")),
            }
        }
        Ended::ClientClosed
    };
    let writer = async {
        let mut next_ping = Instant::now() + PING_INTERVAL;
        loop {
            // Wait for the socket first, then take what is newest *now*: a frame picked
            // before a stall would be stale by the time it could be written.
            let ready = future::or(async { Some(stream.0.writable().await) }, async {
                Timer::after(WRITE_STALL_LIMIT).await;
                None
            })
            .await;
            match ready {
                None => {
                    return Ended::Error(format!(
                        "not reading for {} s",
                        WRITE_STALL_LIMIT.as_secs()
                    ))
                }
                Some(Err(e)) => return Ended::Error(e.to_string()),
                Some(Ok(())) => {}
            }
            let next = future::or(async { Some(client.slot.next_batch().await) }, async {
                Timer::at(next_ping).await;
                None
            })
            .await;
            let batch = match next {
                Some(Some(batch)) => batch,
                Some(None) => return Ended::Shutdown,
                None => {
                    if last_heard.get().elapsed() > SILENCE_LIMIT {
                        return Ended::Error(format!(
                            "no answer to pings for {} s",
                            SILENCE_LIMIT.as_secs()
                        ));
                    }
                    next_ping = Instant::now() + PING_INTERVAL;
                    if let Err(e) = tx.send(Message::Ping(Default::default())).await {
                        return Ended::Error(e.to_string());
                    }
                    continue;
                }
            };
            let messages = batch
                .audio
                .iter()
                .map(|a| a.message(format))
                .chain(batch.video.iter().map(|v| v.message(format)));
            for msg in messages {
                let len = msg.len() as u64;
                if let Err(e) = tx.send(msg).await {
                    return Ended::Error(e.to_string());
                }
                Stats::add(&stats.messages_sent, 1);
                Stats::add(&stats.bytes_sent, len);
            }
        }
    };
    let ended = future::or(reader, writer).await;
    let close = match &ended {
        Ended::Shutdown => Some(CloseFrame {
            code: CloseCode::Away,
            reason: "server shutting down".into(),
        }),
        Ended::Error(e) if e.contains("too long") || e.contains("Space limit") => {
            Some(CloseFrame {
                code: CloseCode::Size,
                reason: "message too big".into(),
            })
        }
        Ended::Error(_) => Some(CloseFrame {
            code: CloseCode::Protocol,
            reason: "protocol error".into(),
        }),
        Ended::ClientClosed => None,
    };
    // Bounded: a client that stopped reading must not hold shutdown up.
    let _ = future::or(
        async {
            match close {
                Some(frame) => tx.close(Some(frame)).await.ok(),
                // After the client's Close, tungstenite has queued the reply and refuses
                // to send anything (`close` would fail with "sending after closing"): one
                // more read flushes the reply, then the stream ends.
                None => rx.next().await.map(|_| ()),
            }
        },
        async {
            smol::Timer::after(Duration::from_millis(300)).await;
            None
        },
    )
    .await;
    let skipped = client.slot.video_skipped.get();
    drop(client);
    match ended {
        Ended::Error(e) => log::info!("client {peer} disconnected: {e} ({skipped} frames skipped)"),
        Ended::ClientClosed => log::info!("client {peer} disconnected ({skipped} frames skipped)"),
        Ended::Shutdown => log::debug!("client {peer} closed for shutdown"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::http::parse_head;

    #[test]
    fn accept_key_matches_rfc6455_example() {
        let req = parse_head(
            b"GET /stream HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(accept_key(&req).unwrap(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn plain_gets_and_bad_versions_are_refused() {
        let plain = parse_head(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(accept_key(&plain).unwrap_err().contains("WebSocket client"));
        let v8 = parse_head(
            b"GET /stream HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: a\r\nSec-WebSocket-Version: 8\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert!(accept_key(&v8).unwrap_err().contains("version"));
    }
}
