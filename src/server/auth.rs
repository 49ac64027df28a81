//! Access control: an optional token (Bearer header or `?token=`) and optional HTTP Basic
//! credentials, compared in constant time.
//!
//! Browsers cannot set headers on a WebSocket, so the page passes the token it was opened with
//! (`/?token=…`) on to `/stream?token=…`. With Basic credentials configured the page itself is
//! protected too, so the browser asks once and then sends them with the WebSocket upgrade.
//! `/healthz` stays open for liveness probes: it reveals no image data.
#![forbid(unsafe_code)]

use super::files::percent_decode;
use super::http::{Request, Response};
use crate::config::Access;
use base64::Engine as _;

/// What a request is for, as far as access control cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    /// Media and state: `/stream`, `/status`, `/metrics`, `/snapshot.jpg`.
    Data,
    /// The browser client's files.
    Page,
    /// `/healthz`.
    Health,
}

/// Equality that takes the same time wherever the inputs first differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let len = a.len().max(b.len());
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for i in 0..len {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    diff == 0
}

/// The credentials of an `Authorization: <scheme> <credentials>` header if its scheme is
/// `scheme`; schemes are case-insensitive (RFC 7235 §2.1), so `bearer` and `BASIC` count.
fn credentials<'a>(req: &'a Request, scheme: &str) -> Option<&'a str> {
    let (given, rest) = req.header("authorization")?.trim_start().split_once(' ')?;
    given.eq_ignore_ascii_case(scheme).then_some(rest.trim())
}

fn bearer_ok(access: &Access, req: &Request) -> bool {
    let Some(token) = &access.token else {
        return false;
    };
    let header = credentials(req, "Bearer");
    let query = req.query_param("token").and_then(percent_decode);
    header.is_some_and(|h| constant_time_eq(h.as_bytes(), token.as_bytes()))
        | query.is_some_and(|q| constant_time_eq(q.as_bytes(), token.as_bytes()))
}

fn basic_ok(access: &Access, req: &Request) -> bool {
    let Some(expected) = &access.basic else {
        return false;
    };
    credentials(req, "Basic")
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .is_some_and(|given| constant_time_eq(&given, expected.as_bytes()))
}

/// `Ok` if `req` may use `resource`; otherwise the 401 to send.
pub fn check(access: &Access, req: &Request, resource: Resource) -> Result<(), Response> {
    let protected = match resource {
        Resource::Health => false,
        Resource::Page => access.basic.is_some(),
        Resource::Data => access.basic.is_some() || access.token.is_some(),
    };
    if !protected || bearer_ok(access, req) || basic_ok(access, req) {
        return Ok(());
    }
    let challenge = if access.basic.is_some() {
        "Basic realm=\"rpi-streamer\", charset=\"UTF-8\""
    } else {
        "Bearer realm=\"rpi-streamer\""
    };
    Err(Response::text(401, "authentication required").with("WWW-Authenticate", challenge))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::http::parse_head;

    fn req(head: &str) -> Request {
        parse_head(head.as_bytes()).unwrap().unwrap()
    }

    fn access(token: Option<&str>, basic: Option<&str>) -> Access {
        Access {
            token: token.map(String::from),
            basic: basic.map(String::from),
            max_clients: 16,
            allowed_origins: vec![],
        }
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn open_when_nothing_is_configured() {
        let r = req("GET /stream HTTP/1.1\r\n\r\n");
        assert!(check(&access(None, None), &r, Resource::Data).is_ok());
    }

    #[test]
    fn token_in_header_or_query_and_nothing_else() {
        let a = access(Some("s3cret-token"), None);
        let ok_header = req("GET /status HTTP/1.1\r\nAuthorization: Bearer s3cret-token\r\n\r\n");
        let ok_query = req("GET /stream?format=binary&token=s3cret-token HTTP/1.1\r\n\r\n");
        let wrong = req("GET /stream?token=s3cret-tokeN HTTP/1.1\r\n\r\n");
        let missing = req("GET /stream HTTP/1.1\r\n\r\n");
        assert!(check(&a, &ok_header, Resource::Data).is_ok());
        assert!(check(&a, &ok_query, Resource::Data).is_ok());
        let denied = check(&a, &wrong, Resource::Data).unwrap_err();
        assert_eq!(denied.status, 401);
        assert!(check(&a, &missing, Resource::Data).is_err());
        // The page and the health check stay open with a token alone.
        assert!(check(&a, &missing, Resource::Page).is_ok());
        assert!(check(&a, &missing, Resource::Health).is_ok());
    }

    #[test]
    fn basic_credentials_protect_the_page_too() {
        let a = access(None, Some("me:pw"));
        // "me:pw" in base64.
        let good = req("GET / HTTP/1.1\r\nAuthorization: Basic bWU6cHc=\r\n\r\n");
        let bad = req("GET / HTTP/1.1\r\nAuthorization: Basic bWU6cHg=\r\n\r\n");
        assert!(check(&a, &good, Resource::Page).is_ok());
        assert!(check(&a, &good, Resource::Data).is_ok());
        let denied = check(&a, &bad, Resource::Page).unwrap_err();
        assert!(denied
            .headers
            .iter()
            .any(|(n, v)| *n == "WWW-Authenticate" && v.starts_with("Basic")));
        assert!(check(&a, &bad, Resource::Health).is_ok());
    }

    #[test]
    fn auth_schemes_are_case_insensitive() {
        let both = access(Some("s3cret-token"), Some("me:pw"));
        for header in [
            "bearer s3cret-token",
            "BEARER s3cret-token",
            "Bearer   s3cret-token",
            "basic bWU6cHc=",
            "BASIC bWU6cHc=",
        ] {
            let r = req(&format!(
                "GET /status HTTP/1.1\r\nAuthorization: {header}\r\n\r\n"
            ));
            assert!(check(&both, &r, Resource::Data).is_ok(), "{header}");
        }
        // The scheme must still be the whole word, and the credentials still right.
        for header in [
            "Bearers3cret-token",
            "Bearer-x s3cret-token",
            "bearer s3cret-tokeN",
            "s3cret-token",
            "basic bWU6cHg=",
            "Basic s3cret-token",
        ] {
            let r = req(&format!(
                "GET /status HTTP/1.1\r\nAuthorization: {header}\r\n\r\n"
            ));
            assert!(check(&both, &r, Resource::Data).is_err(), "{header}");
        }
    }
}
