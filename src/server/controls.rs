//! `/controls`: the open camera's controls as JSON, and live changes to them.
//!
//! - `GET /controls` → `[{"name":"Brightness","type":"float","min":-1,"max":1,"step":0,
//!   "default":0,"value":0.25,"read_only":false,"menu":[]}, …]`; `[]` while no camera is open.
//! - `POST /controls` with a JSON object `{"Brightness": 0.5, "AwbMode": "Indoor"}` sets them
//!   all or none: every name and value is checked against what the camera offers first (400
//!   with the valid ones listed), then the capture thread applies them before its next frame
//!   and the answer is the list as the camera then reports it (202 if it has not done so within
//!   [`APPLY_WAIT`], e.g. while the camera is stalled).
//!
//! Both are protected like the stream (`--auth-token`, `--basic-auth`). Changes are refused
//! for cross-origin browsers (an `Origin` that is neither this host nor an `--allowed-origin`),
//! whatever the content type, since a form or a `text/plain` fetch needs no preflight; allowed
//! origins get their CORS preflight answered. The body is bounded ([`MAX_BODY`]) and read
//! under the head's deadline.
#![forbid(unsafe_code)]

use super::http::{json_string, write_response, Request, Response};
use super::{Conn, Server, HEAD_TIMEOUT};
use crate::capture::controls::{ControlInfo, Input, Number};
use crate::config::Access;
use futures_lite::AsyncReadExt;
use smol::Timer;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// The path.
pub const PATH: &str = "/controls";
/// Largest request body accepted.
pub const MAX_BODY: usize = 8 * 1024;
/// How long a change may take to reach the camera before the answer is sent anyway.
pub const APPLY_WAIT: Duration = Duration::from_secs(2);

/// The controls as the JSON array `GET /controls` returns.
pub fn to_json(controls: &[ControlInfo]) -> String {
    let mut out = String::from("[");
    for (i, c) in controls.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            "{{\"name\":{},\"type\":\"{}\",\"min\":{},\"max\":{},\"step\":{},\"default\":{},\
             \"value\":{},\"read_only\":{},\"menu\":[",
            json_string(&c.name),
            c.kind.as_str(),
            Number(c.min),
            Number(c.max),
            Number(c.step),
            c.default,
            c.value,
            c.read_only
        );
        for (j, e) in c.menu.iter().enumerate() {
            let _ = write!(
                out,
                "{}{{\"value\":{},\"name\":{}}}",
                if j > 0 { "," } else { "" },
                e.value,
                json_string(&e.name)
            );
        }
        out.push_str("]}");
    }
    out.push(']');
    out
}

/// A JSON error body.
fn error(status: u16, message: &str) -> Response {
    Response::new(
        status,
        "application/json",
        format!("{{\"error\":{}}}", json_string(message)),
    )
}

/// A flat JSON object of numbers, booleans and strings, as `POST /controls` takes it.
pub fn parse_object(body: &[u8]) -> Result<Vec<(String, Input)>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8".to_string())?;
    let mut p = Parser {
        s: text.as_bytes(),
        at: 0,
    };
    p.expect(b'{')?;
    let mut out = Vec::new();
    if p.peek() == Some(b'}') {
        p.at += 1;
    } else {
        loop {
            let name = p.string()?;
            p.expect(b':')?;
            let value = match p.peek() {
                Some(b'"') => Input::Text(p.string()?),
                Some(b't') => p.word("true", Input::Bool(true))?,
                Some(b'f') => p.word("false", Input::Bool(false))?,
                Some(b'-' | b'0'..=b'9') => Input::Number(p.number()?),
                _ => return Err(p.unexpected("a number, true, false or a string")),
            };
            out.push((name, value));
            match p.peek() {
                Some(b',') => p.at += 1,
                Some(b'}') => {
                    p.at += 1;
                    break;
                }
                _ => return Err(p.unexpected("',' or '}'")),
            }
        }
    }
    if p.peek().is_some() {
        return Err(p.unexpected("the end of the body"));
    }
    Ok(out)
}

struct Parser<'a> {
    s: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    /// The next byte that is not whitespace (skipping it).
    fn peek(&mut self) -> Option<u8> {
        while self.s.get(self.at).is_some_and(u8::is_ascii_whitespace) {
            self.at += 1;
        }
        self.s.get(self.at).copied()
    }

    fn unexpected(&self, wanted: &str) -> String {
        match self.s.get(self.at) {
            Some(&b) => format!(
                "expected {wanted} at byte {}, found {:?}",
                self.at,
                char::from(b)
            ),
            None => format!("expected {wanted}, found the end of the body"),
        }
    }

    fn expect(&mut self, b: u8) -> Result<(), String> {
        if self.peek() == Some(b) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.unexpected(&format!("'{}'", char::from(b))))
        }
    }

    fn word(&mut self, w: &str, value: Input) -> Result<Input, String> {
        if self.s[self.at..].starts_with(w.as_bytes()) {
            self.at += w.len();
            Ok(value)
        } else {
            Err(self.unexpected(w))
        }
    }

    fn number(&mut self) -> Result<f64, String> {
        let start = self.at;
        while self
            .s
            .get(self.at)
            .is_some_and(|b| b.is_ascii_digit() || b"+-.eE".contains(b))
        {
            self.at += 1;
        }
        std::str::from_utf8(&self.s[start..self.at])
            .ok()
            .and_then(|t| t.parse::<f64>().ok())
            .filter(|n| n.is_finite())
            .ok_or_else(|| format!("not a number at byte {start}"))
    }

    fn string(&mut self) -> Result<String, String> {
        self.expect(b'"')?;
        let mut out = String::new();
        loop {
            let rest = std::str::from_utf8(&self.s[self.at..]).map_err(|e| e.to_string())?;
            let mut chars = rest.char_indices();
            let Some((_, c)) = chars.next() else {
                return Err("unterminated string".into());
            };
            self.at += c.len_utf8();
            match c {
                '"' => return Ok(out),
                '\\' => {
                    let esc = self.s.get(self.at).copied();
                    self.at += 1;
                    out.push(match esc {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'n') => '\n',
                        Some(b't') => '\t',
                        _ => return Err(format!("unsupported escape at byte {}", self.at - 1)),
                    });
                }
                c if (c as u32) < 0x20 => return Err("control character in a string".into()),
                c => out.push(c),
            }
        }
    }
}

/// `Ok(None)` for a request with no `Origin` (not a browser) or this host's own;
/// `Ok(Some(origin))` for an allowed other origin (to echo in CORS headers); else the 403.
pub fn check_origin(access: &Access, req: &Request) -> Result<Option<String>, Response> {
    let Some(origin) = req.header("origin").map(str::trim) else {
        return Ok(None);
    };
    let host = req.header("host").map(str::trim).unwrap_or("");
    let origin_host = origin.split_once("://").map_or("", |(_, h)| h);
    if !host.is_empty() && origin_host.eq_ignore_ascii_case(host) {
        return Ok(None);
    }
    if access.lists_origin(origin) {
        return Ok(Some(origin.to_string()));
    }
    Err(error(
        403,
        &format!(
            "camera controls may not be changed from {origin} \
             (allow it with --allowed-origin {origin})"
        ),
    ))
}

fn cors(r: Response, origin: &Option<String>) -> Response {
    let r = r.with("Cache-Control", "no-store");
    match origin {
        Some(o) => r
            .with("Access-Control-Allow-Origin", o.clone())
            .with("Vary", "Origin"),
        None => r,
    }
}

/// The response to any request for [`PATH`]; reads a POST's body from `conn`.
pub async fn respond(server: &Server, conn: &Conn, req: &Request) -> Response {
    let access = &server.config.access;
    let origin = match (req.method.as_str(), check_origin(access, req)) {
        // Reading is as open as /status: any page may, if it has the credentials.
        ("GET" | "HEAD", Err(_)) => Some("*".to_string()),
        (_, Err(denied)) => return denied,
        (_, Ok(origin)) => origin,
    };
    if req.method == "OPTIONS" {
        // A preflight carries no credentials; only the allowed origin learns it may ask.
        return cors(Response::new(204, "text/plain", ""), &origin)
            .with("Access-Control-Allow-Methods", "GET, POST")
            .with(
                "Access-Control-Allow-Headers",
                "Content-Type, Authorization",
            )
            .with("Access-Control-Max-Age", "600");
    }
    if let Err(denied) = super::auth::check(access, req, super::auth::Resource::Data) {
        return cors(denied, &origin);
    }
    let board = &server.controls;
    let response = match req.method.as_str() {
        "GET" | "HEAD" => Response::new(
            200,
            "application/json",
            to_json(&board.offered().unwrap_or_default()),
        ),
        "POST" => post(server, conn, req).await,
        _ => Response::text(405, "GET, HEAD or POST").with("Allow", "GET, HEAD, POST, OPTIONS"),
    };
    cors(response, &origin)
}

async fn post(server: &Server, conn: &Conn, req: &Request) -> Response {
    let body = match read_body(conn, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let changes = match parse_object(&body) {
        Ok(c) => c,
        Err(why) => {
            return error(
                400,
                &format!("the body must be a JSON object of control names and values: {why}"),
            )
        }
    };
    let board = &server.controls;
    let ticket = match board.request(changes) {
        Ok(ticket) => ticket,
        Err(e) if e.is_bad_request() => return error(400, &e.to_string()),
        Err(e) => return error(503, &e.to_string()),
    };
    let deadline = Instant::now() + APPLY_WAIT;
    let status = loop {
        match board.outcome(&ticket) {
            Some(refused) => match refused.first() {
                Some(e) => return error(409, &e.to_string()),
                None => break 200,
            },
            None if Instant::now() >= deadline => break 202,
            None => Timer::after(Duration::from_millis(5)).await,
        };
    };
    let list = to_json(&board.offered().unwrap_or_default());
    Response::new(status, "application/json", list)
}

/// The request's body: `Content-Length` bytes (at most [`MAX_BODY`]), the first of them
/// already read behind the head.
async fn read_body(conn: &Conn, req: &Request) -> Result<Vec<u8>, Response> {
    if req.header("transfer-encoding").is_some() {
        return Err(error(411, "send the body with a Content-Length"));
    }
    let length: usize = match req.header("content-length").map(|v| v.trim().parse()) {
        Some(Ok(n)) => n,
        Some(Err(_)) => return Err(error(400, "Content-Length is not a number")),
        None => return Err(error(411, "send the body with a Content-Length")),
    };
    if length > MAX_BODY {
        return Err(error(
            413,
            &format!("the body may be at most {MAX_BODY} bytes"),
        ));
    }
    let mut body = req.leftover.clone();
    if body.len() > length {
        return Err(error(400, "more bytes than Content-Length after the head"));
    }
    let start = body.len();
    body.resize(length, 0);
    let mut reader = conn;
    let read = super::ws::within(HEAD_TIMEOUT, reader.read_exact(&mut body[start..])).await;
    match read {
        Some(Ok(())) => Ok(body),
        Some(Err(_)) => Err(error(400, "the body ended before Content-Length bytes")),
        None => Err(error(408, "the body took too long")),
    }
}

/// Answers a request for [`PATH`] on `conn`.
pub async fn run(server: &Server, conn: Conn, req: Request) {
    let response = respond(server, &conn, &req).await;
    let mut writer = conn;
    let _ = write_response(&mut writer, &response, req.method == "HEAD").await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::controls::{ControlType, MenuEntry, Value};
    use crate::server::http::parse_head;

    #[test]
    fn bodies_are_flat_objects_of_scalars() {
        assert_eq!(
            parse_object(br#" { "Brightness": -0.5, "AeEnable" :true, "AwbMode":"Indoor" } "#),
            Ok(vec![
                ("Brightness".into(), Input::Number(-0.5)),
                ("AeEnable".into(), Input::Bool(true)),
                ("AwbMode".into(), Input::Text("Indoor".into())),
            ])
        );
        assert_eq!(parse_object(b"{}"), Ok(vec![]));
        for bad in [
            &b""[..],
            b"[]",
            b"{\"a\":{}}",
            b"{\"a\":[1]}",
            b"{\"a\":1,}",
            b"{\"a\":1} x",
            b"{\"a\":nan}",
            b"{\"a\":1e999}",
            b"{\"a\":\"\\u0041\"}",
            b"{a:1}",
            b"{\"a\":1",
            b"{\"a",
            b"\xff",
        ] {
            assert!(
                parse_object(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn the_json_lists_every_field() {
        let c = ControlInfo {
            name: "AwbMode".into(),
            kind: ControlType::Menu,
            min: 0.0,
            max: 1.0,
            step: 1.0,
            default: Value::Int(0),
            value: Value::Int(1),
            menu: vec![
                MenuEntry {
                    value: 0,
                    name: "AwbAuto".into(),
                },
                MenuEntry {
                    value: 1,
                    name: "AwbIndoor".into(),
                },
            ],
            read_only: false,
        };
        assert_eq!(
            to_json(&[c]),
            "[{\"name\":\"AwbMode\",\"type\":\"menu\",\"min\":0,\"max\":1,\"step\":1,\
             \"default\":0,\"value\":1,\"read_only\":false,\"menu\":[{\"value\":0,\
             \"name\":\"AwbAuto\"},{\"value\":1,\"name\":\"AwbIndoor\"}]}]"
        );
    }

    #[test]
    fn only_this_host_and_allowed_origins_may_change_controls() {
        let req = |origin: &str| {
            let head = format!("POST /controls HTTP/1.1\r\nHost: cam.local:8080\r\n{origin}\r\n");
            parse_head(head.as_bytes()).unwrap().unwrap()
        };
        let mut access = Access::default();
        assert_eq!(check_origin(&access, &req("")), Ok(None));
        assert_eq!(
            check_origin(&access, &req("Origin: http://cam.local:8080\r\n")),
            Ok(None)
        );
        let other = req("Origin: https://evil.example\r\n");
        let denied = check_origin(&access, &other).unwrap_err();
        assert_eq!(denied.status, 403);
        access.allowed_origins = vec!["https://evil.example".into()];
        assert_eq!(
            check_origin(&access, &other),
            Ok(Some("https://evil.example".into()))
        );
    }
}
