//! Request heads that strict-but-legal clients send, against the real binary: absolute-form
//! targets (RFC 9112 §3.2.2), auth schemes in any case (RFC 7235 §2.1), and the reason
//! phrase of a 401.

mod common;

use common::{Daemon, TestDaemon};
use std::time::Duration;

const TOKEN: &str = "s3cret-token";

fn request(daemon: &Daemon, target: &str, extra_headers: &str) -> String {
    daemon.raw_request(
        format!("GET {target} HTTP/1.1\r\nHost: cam.example\r\n{extra_headers}\r\n").as_bytes(),
    )
}

#[test]
fn absolute_form_targets_reach_their_endpoint_with_their_query() {
    let daemon = TestDaemon::new().arg("--auth-token").arg(TOKEN).start();
    let port = daemon.port;
    // Healthy once the first frames are out; the origin form says when.
    let start = std::time::Instant::now();
    while !request(&daemon, "/healthz", "").starts_with("HTTP/1.1 200") {
        assert!(start.elapsed() < Duration::from_secs(10), "never healthy");
        std::thread::sleep(Duration::from_millis(20));
    }
    let health = request(&daemon, &format!("http://127.0.0.1:{port}/healthz"), "");
    assert!(health.starts_with("HTTP/1.1 200 OK\r\n"), "{health}");
    // The query survives: the token in it opens /status.
    let status = request(
        &daemon,
        &format!("http://127.0.0.1:{port}/status?token={TOKEN}"),
        "",
    );
    assert!(status.starts_with("HTTP/1.1 200 OK\r\n"), "{status}");
    let page = request(&daemon, &format!("HTTP://cam.example:{port}"), "");
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(page.contains("text/html"), "{page}");
}

#[test]
fn a_401_says_unauthorized() {
    let daemon = TestDaemon::new().arg("--auth-token").arg(TOKEN).start();
    let denied = request(&daemon, "/status", "");
    assert!(
        denied.starts_with("HTTP/1.1 401 Unauthorized\r\n"),
        "{denied}"
    );
}

#[test]
fn auth_schemes_are_accepted_in_any_case() {
    let daemon = TestDaemon::new().arg("--auth-token").arg(TOKEN).start();
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let ok = request(
            &daemon,
            "/status",
            &format!("Authorization: {scheme} {TOKEN}\r\n"),
        );
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{scheme}: {ok}");
    }
    let basic = TestDaemon::new().arg("--basic-auth").arg("me:pw").start();
    // "me:pw" in base64.
    let ok = request(&basic, "/", "Authorization: basic bWU6cHc=\r\n");
    assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
}

#[test]
fn too_many_small_headers_are_refused_as_such_with_431() {
    let daemon = TestDaemon::new().start();
    let headers: String = (0..65).map(|i| format!("X-{i}: 1\r\n")).collect();
    let response = request(&daemon, "/healthz", &headers);
    assert!(
        response.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{response}"
    );
    assert!(
        response.ends_with("\r\n\r\nmore than 64 headers\n"),
        "{response}"
    );
}
