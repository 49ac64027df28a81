//! The TLS side of a [`super::Conn`]: a rustls server connection over the connection's
//! non-blocking socket, shared by the session's reader and writer on the one executor.
//!
//! The session's reader and writer run as two futures of the same task (`future::or`), so the
//! rustls state is an `Rc<RefCell<…>>` borrowed only inside synchronous poll calls, never
//! across an await. rustls does the buffering and we drive the socket ourselves:
//!
//! - **Writing**: plaintext goes straight from the caller's slices (a frame header and the
//!   fan-out's shared payload, gathered by `write_vectored`) into rustls, which encrypts it
//!   record by record into its ciphertext buffer — the one per-client copy TLS cannot avoid;
//!   no plaintext is copied before that. A write first flushes what ciphertext is pending, so
//!   at most rustls' buffer limit (64 KiB) of ciphertext waits per client, and
//!   [`TlsConn::writable`] means "nothing pending here and the socket below its
//!   `TCP_NOTSENT_LOWAT`", the plaintext socket's meaning: the write-stall bound and the
//!   newest-frame rule work unchanged.
//! - **Reading**: records are read from the socket into rustls' buffer and decrypted in
//!   place; what the read side makes rustls want to send (alerts, key updates) is flushed
//!   when the socket takes it.
//! - **Handshake** ([`accept`]): under the caller's head timeout. A client that speaks plain
//!   HTTP to the TLS port is told so in a 400 and closed without a rustls connection.
#![forbid(unsafe_code)]

use futures_lite::future;
use rustls::ServerConnection;
use smol::Async;
use std::cell::RefCell;
use std::io::{self, IoSlice, Read as _, Write as _};
use std::net::TcpStream;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// A TLS connection, cheap to clone: clones share the socket and the rustls state.
#[derive(Clone)]
pub struct TlsConn {
    tcp: Arc<Async<TcpStream>>,
    session: Rc<RefCell<ServerConnection>>,
}

/// How a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The client closed before finishing it.
    #[error("closed during the TLS handshake")]
    Closed,
    /// The client sent something other than TLS, starting with this byte.
    #[error("not TLS (first byte {0:#04x}; plain HTTP to the HTTPS port?)")]
    NotTls(u8),
    /// [`crate::server::MAX_TLS_HANDSHAKES`] handshakes were in progress already.
    #[error("{0} TLS handshakes in progress already; closed")]
    Busy(usize),
    /// rustls refused what the client sent.
    #[error("TLS handshake failed: {0}")]
    Tls(rustls::Error),
    /// A socket error.
    #[error("TLS handshake: {0}")]
    Io(#[from] io::Error),
}

/// The socket as the blocking `Read`/`Write` rustls wants: `Pending` becomes `WouldBlock`,
/// with the task's waker registered.
struct SocketIo<'a, 'b> {
    tcp: &'a Async<TcpStream>,
    cx: &'a mut Context<'b>,
}

impl io::Read for SocketIo<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut tcp = self.tcp;
        match futures_lite::AsyncRead::poll_read(Pin::new(&mut tcp), self.cx, buf) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl io::Write for SocketIo<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut tcp = self.tcp;
        match futures_lite::AsyncWrite::poll_write_vectored(Pin::new(&mut tcp), self.cx, bufs) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Sends what ciphertext rustls holds until it holds none (`Ready`) or the socket is full.
fn poll_send(
    session: &mut ServerConnection,
    tcp: &Async<TcpStream>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    while session.wants_write() {
        match session.write_tls(&mut SocketIo { tcp, cx }) {
            Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
    Poll::Ready(Ok(()))
}

/// Reads what the socket has into rustls and processes it. `Ready(Ok(false))` at EOF.
fn poll_receive(
    session: &mut ServerConnection,
    tcp: &Async<TcpStream>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<bool>> {
    match session.read_tls(&mut SocketIo { tcp, cx }) {
        Ok(0) => return Poll::Ready(Ok(false)),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
        Err(e) => return Poll::Ready(Err(e)),
    }
    if let Err(e) = session.process_new_packets() {
        // rustls queued an alert saying why; send it if the socket takes it at once.
        let _ = poll_send(session, tcp, cx);
        return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
    }
    // Whatever the records asked us to answer goes out when it can; a full socket is the
    // writer's business.
    let _ = poll_send(session, tcp, cx);
    Poll::Ready(Ok(true))
}

/// Waits for the client's first byte and checks that it starts a TLS handshake (nothing is
/// allocated for a connection that has sent nothing).
pub async fn starts_tls(tcp: &Async<TcpStream>) -> Result<(), HandshakeError> {
    let mut first = [0u8; 1];
    if tcp.peek(&mut first).await? == 0 {
        return Err(HandshakeError::Closed);
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        return Err(HandshakeError::NotTls(first[0]));
    }
    Ok(())
}

/// Runs the server side of a TLS handshake on `tcp`, once [`starts_tls`] said it is one (the
/// caller bounds it in time).
pub async fn accept(
    tcp: Arc<Async<TcpStream>>,
    config: Arc<rustls::ServerConfig>,
) -> Result<TlsConn, HandshakeError> {
    let session = ServerConnection::new(config).map_err(HandshakeError::Tls)?;
    let conn = TlsConn {
        tcp,
        session: Rc::new(RefCell::new(session)),
    };
    future::poll_fn(|cx| {
        let mut session = conn.session.borrow_mut();
        loop {
            match poll_send(&mut session, &conn.tcp, cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(HandshakeError::Io(e))),
                Poll::Pending => return Poll::Pending,
            }
            if !session.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            match poll_receive(&mut session, &conn.tcp, cx) {
                Poll::Ready(Ok(true)) => {}
                Poll::Ready(Ok(false)) => return Poll::Ready(Err(HandshakeError::Closed)),
                Poll::Ready(Err(e)) => {
                    let inner = e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>());
                    return Poll::Ready(Err(match inner {
                        Some(tls) => HandshakeError::Tls(tls.clone()),
                        None => HandshakeError::Io(e),
                    }));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await?;
    Ok(conn)
}

impl TlsConn {
    /// The socket below.
    pub fn tcp(&self) -> &Async<TcpStream> {
        &self.tcp
    }

    /// Resolves once no ciphertext waits in rustls and the socket is writable.
    pub async fn writable(&self) -> io::Result<()> {
        future::poll_fn(|cx| self.poll_flush(cx)).await?;
        self.tcp.writable().await
    }

    /// Queues a `close_notify` alert (sent by the next flush).
    pub fn send_close_notify(&self) {
        self.session.borrow_mut().send_close_notify();
    }

    /// Reads decrypted bytes; `Ok(0)` at the end of the stream, with or without the peer's
    /// `close_notify` (we never rely on the length of what a client sends).
    pub fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut session = self.session.borrow_mut();
        loop {
            match session.reader().read(buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Poll::Ready(Ok(0)),
                Err(e) => return Poll::Ready(Err(e)),
            }
            match poll_receive(&mut session, &self.tcp, cx) {
                // At EOF the reader above now answers Ok(0) or UnexpectedEof.
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Encrypts as much of `bufs` as rustls' buffer takes, after sending what was pending
    /// (so a full socket holds the writer back here, as it would in plain TCP).
    pub fn poll_write_vectored(
        &self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut session = self.session.borrow_mut();
        match poll_send(&mut session, &self.tcp, cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
        let n = session.writer().write_vectored(bufs)?;
        // Out with it now if the socket takes it; what it does not is sent by the next
        // write, flush or `writable`.
        let _ = poll_send(&mut session, &self.tcp, cx);
        Poll::Ready(Ok(n))
    }

    /// Sends all pending ciphertext.
    pub fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        poll_send(&mut self.session.borrow_mut(), &self.tcp, cx)
    }
}
