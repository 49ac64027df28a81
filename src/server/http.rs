//! HTTP/1.1 request heads (parsed with `httparse`), responses, and the endpoints that are not
//! the stream: the browser client's files and `/status`.
//!
//! Heads are read with a size cap and a deadline, so a client that sends a huge or endless
//! head costs one bounded buffer for a bounded time and then gets an error.
#![forbid(unsafe_code)]

use async_tungstenite::tungstenite::Bytes;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use std::fmt::Write as _;

/// Largest request head accepted.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most headers accepted.
pub const MAX_HEADERS: usize = 64;

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// Path without the query, still percent-encoded.
    pub path: String,
    /// The raw query string after `?`, if any.
    pub query: Option<String>,
    /// Header names (lower-cased) and values.
    pub headers: Vec<(String, String)>,
    /// Bytes received after the head (e.g. a WebSocket frame sent eagerly).
    pub leftover: Vec<u8>,
}

impl Request {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// True if header `name` holds `token` in its comma-separated list (case-insensitive).
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// The value of query parameter `key` (not percent-decoded; ours are plain words).
    pub fn query_param(&self, key: &str) -> Option<&str> {
        self.query
            .as_deref()?
            .split('&')
            .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }
}

/// Why a request head could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    /// Connection closed before a full head arrived.
    #[error("connection closed before the request head was complete")]
    Closed,
    /// Head larger than [`MAX_HEAD_BYTES`].
    #[error("request head larger than {MAX_HEAD_BYTES} bytes")]
    TooLarge,
    /// More than [`MAX_HEADERS`] header lines, however short.
    #[error("more than {MAX_HEADERS} headers")]
    TooManyHeaders,
    /// Not HTTP.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// Socket error.
    #[error("reading request: {0}")]
    Io(#[from] std::io::Error),
}

impl HeadError {
    /// The status a client gets for this error (431 for the size caps, else 400; after
    /// [`HeadError::Closed`] nobody is left to get it).
    pub fn status(&self) -> u16 {
        match self {
            HeadError::TooLarge | HeadError::TooManyHeaders => 431,
            HeadError::Closed | HeadError::Malformed(_) | HeadError::Io(_) => 400,
        }
    }
}

/// Splits a request target into its path and query.
///
/// Besides the usual origin form (`/healthz?x`), a server must accept the absolute form
/// (`http://host:port/healthz?x`, RFC 9112 §3.2.2) that proxies send; its scheme and
/// authority say nothing we route on, so they are dropped.
fn split_target(target: &str) -> (String, Option<String>) {
    let scheme_len = ["http://", "https://"]
        .iter()
        .find(|scheme| {
            target
                .get(..scheme.len())
                .is_some_and(|t| t.eq_ignore_ascii_case(scheme))
        })
        .map_or(0, |scheme| scheme.len());
    let (target, absolute) = if scheme_len == 0 {
        (target, false)
    } else {
        let after_scheme = &target[scheme_len..];
        let authority_end = after_scheme.find(['/', '?']).unwrap_or(after_scheme.len());
        (&after_scheme[authority_end..], true)
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (target, None),
    };
    // `http://host` and `http://host?q` name the root (RFC 9112 §3.2.2's empty path).
    let path = if path.is_empty() && absolute {
        "/"
    } else {
        path
    };
    (path.to_string(), query)
}

/// Parses a complete head from `buf`; `Ok(None)` if more bytes are needed.
pub fn parse_head(buf: &[u8]) -> Result<Option<Request>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    // Only what [`read_head`] can hold is looked at, so the verdict on a long input does not
    // depend on bytes past the cap (a 65th header there is "too large", not "too many").
    let seen = &buf[..buf.len().min(MAX_HEAD_BYTES + 1)];
    match req.parse(seen) {
        Ok(httparse::Status::Partial) => {
            if seen.len() >= MAX_HEAD_BYTES {
                Err(HeadError::TooLarge)
            } else {
                Ok(None)
            }
        }
        // A complete head that is too long is refused like an incomplete one: how many bytes
        // arrived in one read must not decide whether the cap applies.
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD_BYTES => Err(HeadError::TooLarge),
        Ok(httparse::Status::Complete(len)) => {
            let (path, query) = split_target(req.path.unwrap_or("/"));
            let headers = req
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            Ok(Some(Request {
                method: req.method.unwrap_or("").to_string(),
                path,
                query,
                headers,
                leftover: buf[len..].to_vec(),
            }))
        }
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooManyHeaders),
        Err(e) => Err(HeadError::Malformed(e.to_string())),
    }
}

/// Reads one request head from `stream`.
pub async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Request, HeadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let want = (MAX_HEAD_BYTES + 1 - buf.len()).min(chunk.len());
        let n = stream.read(&mut chunk[..want]).await?;
        buf.extend_from_slice(&chunk[..n]);
        // Parse only when a line ended (a head can only complete with one), at EOF and at
        // the size cap: a client dribbling bytes then costs a parse per line, and
        // MAX_HEADERS bounds the lines, instead of a parse per byte.
        let line_ended = chunk[..n].contains(&b'\n');
        if line_ended || n == 0 || buf.len() > MAX_HEAD_BYTES {
            if let Some(req) = parse_head(&buf)? {
                return Ok(req);
            }
        }
        if n == 0 {
            return Err(HeadError::Closed);
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(HeadError::TooLarge);
        }
    }
}

/// A complete response, written in one go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// Body (shared: a snapshot's JPEG or a built-in file is not copied).
    pub body: Bytes,
}

/// Every status the server sends and its reason phrase (RFC 9110 §15).
pub const STATUSES: &[(u16, &str)] = &[
    (101, "Switching Protocols"),
    (200, "OK"),
    (202, "Accepted"),
    (204, "No Content"),
    (304, "Not Modified"),
    (400, "Bad Request"),
    (401, "Unauthorized"),
    (403, "Forbidden"),
    (404, "Not Found"),
    (405, "Method Not Allowed"),
    (408, "Request Timeout"),
    (409, "Conflict"),
    (411, "Length Required"),
    (413, "Content Too Large"),
    (426, "Upgrade Required"),
    (431, "Request Header Fields Too Large"),
    (500, "Internal Server Error"),
    (501, "Not Implemented"),
    (503, "Service Unavailable"),
];

/// The reason phrase of `status`, from [`STATUSES`].
pub fn reason(status: u16) -> &'static str {
    STATUSES
        .iter()
        .find(|(code, _)| *code == status)
        .map_or("Unknown", |(_, phrase)| phrase)
}

impl Response {
    /// A response with a body of `content_type`.
    pub fn new(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type", content_type.to_string())],
            body: body.into(),
        }
    }

    /// A plain-text error or notice.
    pub fn text(status: u16, message: &str) -> Response {
        Response::new(status, "text/plain; charset=utf-8", format!("{message}\n"))
    }

    /// Adds a header.
    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// The head: status line and headers.
    pub fn head(&self) -> String {
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (name, value) in &self.headers {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        let _ = write!(
            head,
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.body.len()
        );
        head
    }

    /// The bytes on the wire; `head_only` leaves the body out (HEAD requests).
    pub fn to_bytes(&self, head_only: bool) -> Vec<u8> {
        let mut out = self.head().into_bytes();
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

/// Writes `response` and flushes.
pub async fn write_response<S: AsyncWrite + Unpin>(
    stream: &mut S,
    response: &Response,
    head_only: bool,
) -> std::io::Result<()> {
    if head_only || response.body.len() <= 4096 {
        // One write, one segment.
        stream.write_all(&response.to_bytes(head_only)).await?;
    } else {
        // A large body (a snapshot) goes from its shared buffer, not copied behind the head.
        stream.write_all(response.head().as_bytes()).await?;
        stream.write_all(&response.body).await?;
    }
    stream.flush().await
}

/// Escapes a string for a JSON string literal.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_websocket_upgrade_head() {
        let raw = b"GET /stream?format=binary&x HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\
                    Connection: keep-alive, Upgrade\r\n\r\nEXTRA";
        let req = parse_head(raw).unwrap().unwrap();
        assert_eq!(req.method, "GET");
        assert_eq!(req.path, "/stream");
        assert_eq!(req.query_param("format"), Some("binary"));
        assert_eq!(req.query_param("x"), Some(""));
        assert_eq!(req.query_param("y"), None);
        assert!(req.header_has_token("connection", "upgrade"));
        assert_eq!(req.header("UPGRADE"), Some("websocket"));
        assert_eq!(req.leftover, b"EXTRA");
    }

    #[test]
    fn partial_heads_wait_and_oversized_or_garbage_heads_fail() {
        assert!(parse_head(b"GET / HTTP/1.1\r\nHost: a\r\n")
            .unwrap()
            .is_none());
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_HEAD_BYTES + 10, b'a');
        assert!(matches!(parse_head(&big), Err(HeadError::TooLarge)));
        // Complete but one byte over: refused too, however it arrived.
        let mut over = b"GET / HTTP/1.1\r\nX: ".to_vec();
        over.resize(MAX_HEAD_BYTES + 1 - 4, b'a');
        over.extend_from_slice(b"\r\n\r\n");
        assert!(matches!(parse_head(&over), Err(HeadError::TooLarge)));
        over.remove(20);
        assert!(parse_head(&over).unwrap().is_some());
        assert!(matches!(
            parse_head(b"\x16\x03\x01\x02\x00garbage\r\n\r\n"),
            Err(HeadError::Malformed(_))
        ));
    }

    #[test]
    fn responses_carry_length_and_close() {
        let r = Response::text(404, "no such page").with("X-Test", "1");
        let bytes = String::from_utf8(r.to_bytes(false)).unwrap();
        assert!(bytes.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(bytes.contains("Content-Length: 13\r\n"));
        assert!(bytes.contains("X-Test: 1\r\n"));
        assert!(bytes.ends_with("\r\n\r\nno such page\n"));
        let head = String::from_utf8(r.to_bytes(true)).unwrap();
        assert!(head.ends_with("\r\n\r\n"));
    }

    #[test]
    fn many_small_headers_are_refused_as_too_many_not_too_large() {
        let mut head = String::from("GET / HTTP/1.1\r\n");
        for i in 0..MAX_HEADERS {
            head.push_str(&format!("X-{i}: 1\r\n"));
        }
        let at_the_cap = format!("{head}\r\n");
        assert!(at_the_cap.len() < MAX_HEAD_BYTES);
        assert_eq!(
            parse_head(at_the_cap.as_bytes())
                .unwrap()
                .unwrap()
                .headers
                .len(),
            MAX_HEADERS
        );
        let one_more = format!("{head}X-last: 1\r\n\r\n");
        let err = parse_head(one_more.as_bytes()).unwrap_err();
        assert!(matches!(err, HeadError::TooManyHeaders), "{err:?}");
        // Known before the head ends, as read_head sees it line by line.
        let unfinished = format!("{head}X-last: 1\r\n");
        assert!(matches!(
            parse_head(unfinished.as_bytes()),
            Err(HeadError::TooManyHeaders)
        ));
        // Past the size cap, the cap decides, whatever follows.
        let mut long = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD_BYTES));
        long.push_str(&one_more["GET / HTTP/1.1\r\n".len()..]);
        assert!(matches!(
            parse_head(long.as_bytes()),
            Err(HeadError::TooLarge)
        ));
        assert_eq!(err.to_string(), "more than 64 headers");
        assert_eq!(err.status(), 431);
        assert_eq!(HeadError::TooLarge.status(), 431);
        assert_eq!(HeadError::Malformed("x".into()).status(), 400);
    }

    #[test]
    fn absolute_form_targets_route_like_origin_form() {
        let cases = [
            ("http://127.0.0.1:8080/healthz", "/healthz", None),
            (
                "HTTP://cam.example/status?token=abc",
                "/status",
                Some("token=abc"),
            ),
            (
                "https://cam.example:443/stream?format=binary",
                "/stream",
                Some("format=binary"),
            ),
            ("http://cam.example", "/", None),
            ("http://cam.example?token=t", "/", Some("token=t")),
            ("/healthz?x=1", "/healthz", Some("x=1")),
            ("?x", "", Some("x")),
            // A path that merely contains a scheme is a path.
            ("/files/http://x", "/files/http://x", None),
        ];
        for (target, path, query) in cases {
            let raw = format!("GET {target} HTTP/1.1\r\nHost: cam.example\r\n\r\n");
            let req = parse_head(raw.as_bytes()).unwrap().unwrap();
            assert_eq!(req.path, path, "{target}");
            assert_eq!(req.query.as_deref(), query, "{target}");
        }
    }

    #[test]
    fn every_status_the_server_sends_has_its_reason_phrase() {
        assert_eq!(reason(401), "Unauthorized");
        let r = Response::text(401, "authentication required");
        assert!(String::from_utf8(r.to_bytes(true))
            .unwrap()
            .starts_with("HTTP/1.1 401 Unauthorized\r\n"));
        // The statuses written as literals where responses are built.
        let sources = [
            include_str!("auth.rs"),
            include_str!("files.rs"),
            include_str!("http.rs"),
            include_str!("metrics.rs"),
            include_str!("mod.rs"),
            include_str!("ws.rs"),
        ];
        let mut seen = vec![];
        for source in sources {
            for call in ["Response::text(", "Response::new(", "refuse("] {
                for (at, _) in source.match_indices(call) {
                    let digits: String = source[at + call.len()..]
                        .trim_start()
                        .chars()
                        .take_while(char::is_ascii_digit)
                        .collect();
                    if let Ok(status) = digits.parse::<u16>() {
                        seen.push(status);
                    }
                }
            }
        }
        seen.extend([
            HeadError::TooManyHeaders.status(),
            HeadError::Malformed(String::new()).status(),
        ]);
        for needed in [200, 304, 401, 403, 404, 405, 408, 426, 503] {
            assert!(
                seen.contains(&needed),
                "{needed} not found: the scan is broken"
            );
        }
        for status in seen {
            assert_ne!(
                reason(status),
                "Unknown",
                "status {status} has no reason phrase"
            );
        }
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
    }
}
