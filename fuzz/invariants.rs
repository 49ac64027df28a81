//! What must hold for *any* bytes a client sends as a request head, checked by the fuzz target
//! (`fuzz_targets/http_request.rs`) and by `tests/fuzz_corpus.rs`, which replays every file
//! of `fuzz/corpus/` through the same function under plain `cargo test`.
//!
//! The checks go beyond "does not panic": a parsed request must be a faithful, bounded view of
//! the input (the leftover is the input's tail, the head fits [`MAX_HEAD_BYTES`], no header
//! value carries a line break); the real socket reader must agree with the one-shot parser
//! however the bytes are split into reads; and the static-file name derived from any path
//! must stay inside the client folder; and access control must let a request through only
//! when it carries the configured token or credentials. The same bytes, read as the frames a
//! WebSocket client sends, must parse the same however they are split, never keep more than a
//! control frame's payload, and never ask for more bytes than a header and a control frame.
//! Read as a `POST /controls` body, they must give a bounded list of finite values (or an
//! error), which any control checks without panicking.

use base64::Engine as _;
use rpi_streamer::capture::controls::{ControlInfo, ControlType, Input, MenuEntry, Value};
use rpi_streamer::config::Access;
use rpi_streamer::server::auth::{self, constant_time_eq, Resource};
use rpi_streamer::server::controls::parse_object;
use rpi_streamer::server::files::{percent_decode, safe_relative_path};
use rpi_streamer::server::http::{parse_head, read_head, HeadError, Request, MAX_HEAD_BYTES};
use rpi_streamer::server::ws::accept_key;
use rpi_streamer::server::wsframe::{
    ClientEvent, ClientFrames, FrameError, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN,
};
use std::path::{Component, Path};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Checks every invariant for one input; panics (with the reason) on a violation.
pub fn check(data: &[u8]) {
    check_frames(data);
    check_controls_body(data);
    if let Some((_, body)) = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| data.split_at(i + 4))
    {
        check_controls_body(body);
    }
    let full = parse_head(data);
    if let Ok(Some(req)) = &full {
        check_request(data, req);
    }
    check_split_reads_agree(data, &full);
    let (a, b) = data.split_at(data.len() / 2);
    assert_eq!(
        constant_time_eq(a, b),
        a == b,
        "constant_time_eq is not equality"
    );
    check_path(&String::from_utf8_lossy(data));
    if let Some(line) = data.split(|&b| b == b'\n').next() {
        // The request target alone, as the path parser would see it from a real request.
        if let Some(target) = std::str::from_utf8(line)
            .ok()
            .and_then(|l| l.split(' ').nth(1))
        {
            check_path(target);
        }
    }
}

/// A `POST /controls` body: each entry takes at least `"":0` (4 bytes), numbers are finite,
/// and checking any value against a float, an int, a bool and a menu control never panics.
fn check_controls_body(body: &[u8]) {
    let Ok(entries) = parse_object(body) else {
        return;
    };
    assert!(
        entries.len() * 4 <= body.len(),
        "{} entries from {} bytes",
        entries.len(),
        body.len()
    );
    let control = |kind| ControlInfo {
        name: "AwbMode".into(),
        kind,
        min: -1.0,
        max: 2.0,
        step: 0.0,
        default: Value::Int(0),
        value: Value::Int(0),
        menu: vec![MenuEntry {
            value: 1,
            name: "AwbIndoor".into(),
        }],
        read_only: false,
    };
    for (_, input) in &entries {
        if let Input::Number(n) = input {
            assert!(n.is_finite(), "a non-finite number {n} was accepted");
        }
        for kind in [
            ControlType::Float,
            ControlType::Int,
            ControlType::Bool,
            ControlType::Menu,
        ] {
            if let Ok(Value::Float(x)) = control(kind).check(input) {
                assert!((-1.0..=2.0).contains(&x), "{x} passed a -1..2 check");
            }
        }
    }
}

/// A complete request: bounded, a faithful split of the input, and free of line breaks.
fn check_request(data: &[u8], req: &Request) {
    assert!(
        data.ends_with(&req.leftover),
        "leftover is not a suffix of the input"
    );
    let head_len = data.len() - req.leftover.len();
    assert!(
        head_len <= MAX_HEAD_BYTES,
        "accepted a {head_len}-byte head (limit {MAX_HEAD_BYTES})"
    );
    assert!(
        data[..head_len].ends_with(b"\n"),
        "head does not end at a line end"
    );
    assert!(
        !req.method.is_empty() && req.method.bytes().all(is_token_byte),
        "method {:?} is not an HTTP token",
        req.method
    );
    // The path may be empty ("GET ?x HTTP/1.1"): it then names no file (see check_path).
    for (what, text) in [("path", Some(&req.path)), ("query", req.query.as_ref())] {
        if let Some(text) = text {
            assert!(
                !text.bytes().any(|b| b.is_ascii_control() || b == b' '),
                "{what} {text:?} holds a space or control byte"
            );
        }
    }
    assert!(
        !req.path.contains('?'),
        "path {:?} kept its query",
        req.path
    );
    assert!(req.headers.len() <= rpi_streamer::server::http::MAX_HEADERS);
    for (name, value) in &req.headers {
        assert!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| is_token_byte(b) && !b.is_ascii_uppercase()),
            "header name {name:?} is not a lower-case token"
        );
        // A line break in a value could be echoed into a response as an injected header.
        assert!(
            !value.contains('\r') && !value.contains('\n') && !value.contains('\0'),
            "header {name} value {value:?} holds CR, LF or NUL"
        );
        assert_eq!(
            req.header(&name.to_ascii_uppercase()),
            req.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str()),
            "header lookup is not the first case-insensitive match"
        );
        for token in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            assert!(
                req.header_has_token(&name.to_ascii_uppercase(), &token.to_ascii_uppercase()),
                "token {token:?} of {name}: {value:?} not found"
            );
        }
    }
    assert!(
        !req.header_has_token("connection", "upgrade,close"),
        "a comma-joined token matched"
    );
    check_query(req);
    match accept_key(req) {
        Ok(accept) => {
            assert_eq!(req.method, "GET", "upgrade accepted for {}", req.method);
            assert!(req.header_has_token("upgrade", "websocket"));
            assert!(req.header_has_token("connection", "upgrade"));
            assert_eq!(
                req.header("sec-websocket-version").map(str::trim),
                Some("13")
            );
            // SHA-1 in base64: 28 characters that are safe in a response header.
            assert_eq!(accept.len(), 28, "accept key {accept:?}");
            assert!(accept
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)));
        }
        Err(refusal) => {
            assert!(
                matches!(refusal.status, 400 | 426),
                "status {}",
                refusal.status
            );
            assert!(!refusal.why.is_empty() && !refusal.why.contains('\n'));
        }
    }
    check_path(&req.path);
    check_auth(req);
}

/// The token and Basic credentials the access checks are run with.
const TOKEN: &str = "s3cret-token";
const BASIC: &str = "me:pw";

/// Every combination of configured token and credentials, and every resource: a protected
/// resource is granted only with a witness found here independently of `auth`; a refusal is
/// a 401 with a fixed challenge (nothing from the request echoed into the response head).
fn check_auth(req: &Request) {
    let authorization = req.header("authorization");
    // The credentials after `scheme` and a space; schemes are case-insensitive (RFC 7235).
    let credentials = |scheme: &str| {
        authorization.and_then(|v| {
            let v = v.trim_start();
            let rest = v.get(scheme.len()..)?;
            (v[..scheme.len()].eq_ignore_ascii_case(scheme) && rest.starts_with(' '))
                .then_some(rest)
        })
    };
    let bearer_given = credentials("Bearer").is_some_and(|t| t.trim() == TOKEN);
    let query_given = req.query.as_deref().is_some_and(|q| {
        q.split('&')
            .find(|pair| pair.split('=').next() == Some("token"))
            .and_then(|pair| percent_decode(pair.split_once('=').map_or("", |(_, v)| v)))
            .is_some_and(|t| t == TOKEN)
    });
    let basic_given = credentials("Basic")
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .is_some_and(|creds| creds == BASIC.as_bytes());
    for (token, basic) in [
        (None, None),
        (Some(TOKEN), None),
        (None, Some(BASIC)),
        (Some(TOKEN), Some(BASIC)),
    ] {
        let access = Access {
            token: token.map(String::from),
            basic: basic.map(String::from),
            max_clients: 16,
            allowed_origins: Vec::new(),
        };
        for resource in [Resource::Data, Resource::Page, Resource::Health] {
            let protected = match resource {
                Resource::Health => false,
                Resource::Page => basic.is_some(),
                Resource::Data => basic.is_some() || token.is_some(),
            };
            let witness = (token.is_some() && (bearer_given || query_given))
                || (basic.is_some() && basic_given);
            match auth::check(&access, req, resource) {
                Ok(()) => assert!(
                    !protected || witness,
                    "{resource:?} granted without credentials (token {token:?}, basic {basic:?})"
                ),
                Err(denied) => {
                    assert!(
                        protected && !witness,
                        "{resource:?} refused despite credentials"
                    );
                    assert_eq!(denied.status, 401);
                    for (_, value) in &denied.headers {
                        assert!(!value.contains('\r') && !value.contains('\n'));
                    }
                }
            }
        }
    }
}

/// `query_param` finds each `key=value` pair's first occurrence, and nothing else.
fn check_query(req: &Request) {
    let Some(query) = &req.query else {
        assert_eq!(req.query_param(""), None, "no query, yet a parameter");
        return;
    };
    for pair in query.split('&') {
        let key = pair.split_once('=').map_or(pair, |(k, _)| k);
        let value = req
            .query_param(key)
            .unwrap_or_else(|| panic!("parameter {key:?} of {query:?} not found"));
        assert!(!value.contains('&'), "value {value:?} crosses a '&'");
        assert!(
            query.contains(&format!("{key}={value}")) || value.is_empty(),
            "value {value:?} for {key:?} is not in {query:?}"
        );
    }
    assert_eq!(req.query_param("a&b"), None, "a key with '&' matched");
}

/// Whatever a path decodes to, the file name served stays inside the folder.
fn check_path(path: &str) {
    let decoded = percent_decode(path);
    if let Some(d) = &decoded {
        assert!(d.len() <= path.len(), "decoding grew {path:?}");
        if !path.contains('%') {
            assert_eq!(d, path, "decoding changed a path without escapes");
        }
        let reencoded: String = d.bytes().map(|b| format!("%{b:02X}")).collect();
        assert_eq!(
            percent_decode(&reencoded).as_deref(),
            Some(d.as_str()),
            "escape round trip"
        );
    }
    let Some(name) = safe_relative_path(path) else {
        return;
    };
    assert!(!name.is_empty(), "empty file name from {path:?}");
    assert!(
        !name.starts_with('/'),
        "absolute name {name:?} from {path:?}"
    );
    assert!(
        !name.contains('\\') && !name.contains('\0'),
        "{name:?} from {path:?} holds a backslash or NUL"
    );
    for segment in name.split('/') {
        assert!(
            !segment.is_empty() && segment != "." && segment != ".." && !segment.starts_with('.'),
            "segment {segment:?} of {name:?} from {path:?}"
        );
    }
    assert!(
        Path::new(&name)
            .components()
            .all(|c| matches!(c, Component::Normal(_))),
        "{name:?} from {path:?} has a non-normal component"
    );
    let root = Path::new("/srv/public");
    assert!(root.join(&name).starts_with(root), "{name:?} escapes");
    // The name is what the request asked for, not a rewrite of it.
    let decoded = decoded.expect("a served name implies a decodable path");
    assert!(
        (name == "index.html" && decoded == "/") || decoded == format!("/{name}"),
        "{path:?} decoded to {decoded:?} but serves {name:?}"
    );
}

/// The server reads heads with [`read_head`] in whatever pieces TCP delivers: for any split
/// it must give the same verdict as [`parse_head`] on the whole input, and no prefix of a
/// valid head may be rejected as malformed.
fn check_split_reads_agree(data: &[u8], full: &Result<Option<Request>, HeadError>) {
    // Each read re-parses the whole buffer, so tiny pieces cost O(n²): keep them to short
    // inputs, where the interesting splits (inside a CRLF, a token, an escape) are anyway.
    let mut chunk_sizes = vec![2048];
    if data.len() <= 4096 {
        chunk_sizes.push(61);
    }
    if data.len() <= 512 {
        chunk_sizes.push(1 + data.len() % 7);
    }
    for chunk in chunk_sizes {
        let mut reader = Chunked {
            data,
            pos: 0,
            chunk,
        };
        let got = futures_lite::future::block_on(read_head(&mut reader));
        match (full, &got) {
            (Ok(Some(want)), Ok(req)) => {
                assert_eq!(
                    (&req.method, &req.path, &req.query, &req.headers),
                    (&want.method, &want.path, &want.query, &want.headers),
                    "read in {chunk}-byte pieces, the head parsed differently"
                );
                assert!(
                    want.leftover.starts_with(&req.leftover),
                    "read_head invented leftover bytes"
                );
            }
            (Ok(None), Err(HeadError::Closed))
            | (Err(HeadError::TooLarge), Err(HeadError::TooLarge))
            | (Err(HeadError::TooManyHeaders), Err(HeadError::TooManyHeaders))
            | (Err(HeadError::Malformed(_)), Err(HeadError::Malformed(_))) => {}
            // Past the size cap the reader stops before it reaches the malformed byte.
            (Err(HeadError::Malformed(_)), Err(HeadError::TooLarge))
                if data.len() > MAX_HEAD_BYTES => {}
            (want, got) => panic!(
                "read in {chunk}-byte pieces: read_head gave {got:?}, parse_head {:?}",
                want.as_ref().map(Option::is_some)
            ),
        }
    }
}

/// An in-memory socket that hands out `chunk` bytes per read, then EOF.
struct Chunked<'a> {
    data: &'a [u8],
    pos: usize,
    chunk: usize,
}

impl futures_lite::AsyncRead for Chunked<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let n = self.chunk.min(buf.len()).min(self.data.len() - self.pos);
        let start = self.pos;
        buf[..n].copy_from_slice(&self.data[start..start + n]);
        self.pos += n;
        Poll::Ready(Ok(n))
    }
}

/// RFC 9110 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The client frames in `data`, fed `step` bytes at a time the way the session does (append,
/// parse what is complete, keep the rest), with the bounds every step must respect.
fn frames_in_steps(data: &[u8], step: usize) -> (Vec<ClientEvent>, Option<FrameError>) {
    let mut parser = ClientFrames::new(65_536);
    let mut pending: Vec<u8> = Vec::new();
    let mut events = Vec::new();
    for piece in data.chunks(step.max(1)) {
        pending.extend_from_slice(piece);
        loop {
            match parser.next(&pending) {
                Ok((n, event)) => {
                    assert!(
                        n <= pending.len(),
                        "consumed {n} of {} bytes",
                        pending.len()
                    );
                    if let Some(ClientEvent::Ping(payload)) = &event {
                        assert!(payload.len() <= MAX_CONTROL_PAYLOAD);
                    }
                    pending.drain(..n);
                    let done = n == 0;
                    events.extend(event);
                    if done {
                        // Waiting for more: only a header and a control frame may be pending.
                        assert!(
                            pending.len() < MAX_HEADER_LEN + MAX_CONTROL_PAYLOAD,
                            "{} bytes held waiting for more",
                            pending.len()
                        );
                        break;
                    }
                }
                Err(e) => return (events, Some(e)),
            }
        }
    }
    (events, None)
}

/// Frame parsing does not depend on how the bytes are split into reads.
fn check_frames(data: &[u8]) {
    let whole = frames_in_steps(data, data.len());
    for step in [1, 3, 7, 64] {
        assert_eq!(
            frames_in_steps(data, step),
            whole,
            "split into {step}-byte reads"
        );
    }
}
