//! TLS clients for the integration tests: rustls (the same crate the daemon serves with, as a
//! client), trusting only the certificate a test names, so a handshake that succeeds for a
//! name proves the daemon's certificate is valid for it.

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A TLS stream to the daemon.
pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;
/// A WebSocket client of the daemon over TLS.
pub type TlsClient = tungstenite::WebSocket<TlsStream>;

/// The certificates of a PEM file.
pub fn read_certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()))
}

/// A client configuration whose only trust anchor is the (first) certificate in `pem`.
pub fn trusting(pem: &Path) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(read_certs(pem).remove(0))
        .expect("a certificate rustls can anchor on");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// SHA-256 of a certificate, `AB:CD:…`.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    ring::digest::digest(&ring::digest::SHA256, cert)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Connects to 127.0.0.1:`port` and completes a handshake for `name` (a DNS name or an IP
/// address); the error says why the handshake failed.
pub fn connect(port: u16, name: &str, config: &Arc<ClientConfig>) -> Result<TlsStream, String> {
    let server_name = ServerName::try_from(name.to_string()).map_err(|e| format!("{name}: {e}"))?;
    let conn = ClientConnection::new(config.clone(), server_name).map_err(|e| e.to_string())?;
    let sock = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut stream = StreamOwned::new(conn, sock);
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .map_err(|e| format!("handshake for {name}: {e}"))?;
    }
    Ok(stream)
}

/// GETs `path` over HTTPS as `name`; the whole response (head and body) as text.
pub fn get(port: u16, name: &str, config: &Arc<ClientConfig>, path: &str) -> String {
    let mut stream = connect(port, name, config).unwrap_or_else(|e| panic!("{e}"));
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .expect("send the request");
    let mut out = Vec::new();
    // The daemon closes after its answer, with or without close_notify.
    match stream.read_to_end(&mut out) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => panic!("reading {path}: {e}"),
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Opens `wss://name:port{path}`.
pub fn websocket(port: u16, name: &str, config: &Arc<ClientConfig>, path: &str) -> TlsClient {
    let stream = connect(port, name, config).unwrap_or_else(|e| panic!("{e}"));
    let url = format!("wss://{name}:{port}{path}");
    let (ws, _) = tungstenite::client(url.as_str(), stream)
        .unwrap_or_else(|e| panic!("WebSocket upgrade of {url}: {e}"));
    ws
}
