//! One WebSocket session: the upgrade handshake, then the client's slot drained to its socket.
//!
//! Messages from the client are read (so pings and closes work) and otherwise ignored, with a
//! small size cap; an oversized or invalid frame ends that session only. Before each message
//! the writer waits until the socket has sent what it was given (TCP_NOTSENT_LOWAT), so the
//! kernel never holds more than about one frame per client: a stalled client's queue stays in
//! its slot, where newer frames replace older ones.
#![forbid(unsafe_code)]

use super::http::{write_response, Request, Response};
use super::Conn;
use crate::hub::Hub;
use crate::media::WireFormat;
use crate::stats::Stats;
use async_tungstenite::tungstenite::handshake::derive_accept_key;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use futures_lite::{future, StreamExt};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

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

/// Completes the upgrade on `stream` and runs the session until either side ends it.
pub async fn run(stream: Conn, req: Request, peer: SocketAddr, hub: Rc<Hub>, stats: Arc<Stats>) {
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
    let client = hub.register(peer, format);
    log::info!(
        "client {peer} connected ({} format, {} clients)",
        if format == WireFormat::Binary {
            "binary"
        } else {
            "text"
        },
        hub.client_count()
    );

    let reader = async {
        while let Some(msg) = rx.next().await {
            match msg {
                Ok(Message::Close(_)) => return Ended::ClientClosed,
                Ok(_) => {}
                Err(e) => return Ended::Error(format!("client sent: {e}")),
            }
        }
        Ended::ClientClosed
    };
    let writer = async {
        loop {
            // Wait for the socket first, then take what is newest *now*: a frame picked
            // before a stall would be stale by the time it could be written.
            if let Err(e) = stream.0.writable().await {
                return Ended::Error(e.to_string());
            }
            let Some(batch) = client.slot.next_batch().await else {
                break;
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
        Ended::Shutdown
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
