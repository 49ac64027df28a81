//! Operating the daemon: health, metrics, snapshots, access control, client limits,
//! injected faults and the systemd watchdog.

mod common;

use common::*;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;

/// A placeholder is uniformly dark grey at the right edge; the test pattern never is.
fn is_placeholder(jpeg: &[u8]) -> bool {
    let (w, h, px) = decode_jpeg(jpeg).expect("decodable frame");
    let i = ((h / 2) * w + w - 4) * 3;
    px[i..i + 3].iter().all(|&c| (36..=60).contains(&c))
}

#[test]
fn healthz_metrics_and_snapshot_describe_a_healthy_stream() {
    let daemon = TestDaemon::new().size(320, 240).fps(10).start();
    let mut ws = daemon.connect("/stream");
    next_video(&mut ws);
    let health = daemon.get("/healthz");
    assert_eq!(health.code, 200, "{health}");
    assert!(health.text().starts_with("{\"status\":\"ok\""), "{health}");

    let metrics = daemon.get("/metrics");
    assert_eq!(metrics.code, 200);
    let metrics = metrics.text();
    for family in [
        "rpi_streamer_video_frames_total{outcome=\"captured\"}",
        "rpi_streamer_video_frames_dropped_total{reason=\"client_skipped\"}",
        "rpi_streamer_encode_seconds_bucket{le=\"+Inf\"}",
        "rpi_streamer_clients 1",
        "rpi_streamer_frame_age_seconds",
        "rpi_streamer_bytes_sent_total",
    ] {
        assert!(metrics.contains(family), "{family} missing:\n{metrics}");
    }

    let snapshot = daemon.get("/snapshot.jpg");
    assert!(snapshot.raw.starts_with(b"HTTP/1.1 200 "));
    assert_eq!(snapshot.header("content-type"), Some("image/jpeg"));
    let (w, h, _) = decode_jpeg(&snapshot.body).expect("snapshot decodes");
    assert_eq!((w, h), (320, 240));

    let status = daemon.get("/status");
    assert!(
        status
            .text()
            .contains("\"clients\":[{\"address\":\"127.0.0.1:"),
        "{status}"
    );
}

#[test]
fn an_injected_stall_turns_health_red_with_placeholders_and_recovers() {
    let fps = 10.0;
    let interval = 1.0 / fps;
    let daemon = TestDaemon::new()
        .size(320, 240)
        .fps(10)
        .arg("--test-fault")
        .arg("stall:2:3")
        .start();
    let mut ws = daemon.connect("/stream");
    // Poll /healthz from a second thread while this one reads frames.
    let port = daemon.port;
    let poller = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(9) {
            let answer = http_get(port, "/healthz", &[]);
            seen.push((unix_now(), answer.code, answer.text()));
            std::thread::sleep(Duration::from_millis(100));
        }
        seen
    });
    let mut frames = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(9) {
        let Video { ts, jpeg, .. } = next_video(&mut ws);
        frames.push((ts, is_placeholder(&jpeg)));
    }
    let health = poller.join().unwrap();

    let first_placeholder = frames
        .iter()
        .position(|f| f.1)
        .expect("placeholders during the stall");
    assert!(first_placeholder > 0, "live frames first");
    let last_live = frames[first_placeholder - 1].0;
    let gap = frames[first_placeholder].0 - last_live;
    // Two intervals (+50 ms grace) of silence, noticed at the source's next poll (one
    // interval), plus scheduling slack.
    assert!(
        gap <= 3.0 * interval + 0.15,
        "placeholder came {gap:.3}s after the last frame"
    );
    let resumed = frames[first_placeholder..]
        .iter()
        .find(|f| !f.1)
        .expect("live frames after the stall")
        .0;
    let outage = resumed - last_live;
    assert!(
        (2.8..=3.0 + 2.0).contains(&outage),
        "live again {outage:.2}s after the stall began"
    );

    let healthy = health
        .iter()
        .position(|h| h.1 == 200)
        .expect("healthy before the stall");
    let red = healthy
        + health[healthy..]
            .iter()
            .position(|h| h.1 == 503)
            .expect("503 during the stall");
    assert!(
        health[red].2.contains("\"status\":\"unhealthy\""),
        "{:?}",
        health[red]
    );
    let green = health[red..]
        .iter()
        .find(|h| h.1 == 200)
        .expect("200 after the stall");
    assert!(
        green.0 - resumed <= 2.0,
        "health green {:.2}s after frames resumed",
        green.0 - resumed
    );
    assert!(
        health[healthy].0 < last_live + 0.2,
        "healthy while frames flowed"
    );
}

#[test]
fn a_failing_source_is_reopened_and_garbage_frames_are_dropped() {
    let daemon = TestDaemon::new()
        .size(320, 240)
        .fps(10)
        .arg("--test-fault")
        .arg("fail:1:2")
        .arg("--test-fault")
        .arg("garbage:4:1")
        .start();
    let mut ws = daemon.connect("/stream");
    let start = Instant::now();
    let (mut placeholders, mut live_after) = (0, 0);
    while start.elapsed() < Duration::from_secs(6) {
        if is_placeholder(&next_video(&mut ws).jpeg) {
            placeholders += 1;
        } else if placeholders > 0 {
            live_after += 1;
        }
    }
    assert!(placeholders >= 1, "no placeholder while the source failed");
    assert!(
        live_after >= 5,
        "stream did not come back: {live_after} live frames after"
    );
    let log = daemon.log_text();
    assert!(log.contains("injected failure"), "{log}");
    assert!(log.contains("video source back"), "{log}");
    let errors: f64 = daemon
        .get("/metrics")
        .text()
        .lines()
        .find(|l| l.starts_with("rpi_streamer_video_frames_dropped_total{reason=\"encode_error\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(
        errors >= 5.0,
        "garbage frames counted as encode errors: {errors}"
    );
}

#[test]
fn the_watchdog_is_fed_while_capture_lives_and_starved_while_it_hangs() {
    let dir = std::env::temp_dir().join(format!("rpi-streamer-wd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut daemon = TestDaemon::new()
        .fps(10)
        .arg("--test-fault")
        .arg("hang:1:6")
        .env("NOTIFY_SOCKET", path.to_str().unwrap())
        .env("WATCHDOG_USEC", "400000")
        .start();
    let mut messages = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(9) {
        let mut buf = [0u8; 256];
        if let Ok(n) = socket.recv(&mut buf) {
            messages.push((
                start.elapsed().as_secs_f64(),
                String::from_utf8_lossy(&buf[..n]).into_owned(),
            ));
        }
    }
    daemon.terminate();
    let status = daemon.wait_exit(Duration::from_secs(5)).expect("exits");
    assert!(status.success());
    let mut buf = [0u8; 256];
    let mut stopping = false;
    while let Ok(n) = socket.recv(&mut buf) {
        stopping |= buf[..n].starts_with(b"STOPPING=1");
    }
    std::fs::remove_dir_all(&dir).unwrap();

    assert!(
        messages.first().is_some_and(|m| m.1.starts_with("READY=1")),
        "{messages:?}"
    );
    let pings: Vec<f64> = messages
        .iter()
        .filter(|m| m.1 == "WATCHDOG=1")
        .map(|m| m.0)
        .collect();
    assert!(pings.len() >= 10, "pings: {pings:?}");
    let longest_gap = pings.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    // The hang lasts 6 s; pings stop once nothing was published for 3 s.
    assert!(longest_gap >= 2.0, "pings never paused: {pings:?}");
    assert!(
        pings.last().unwrap() > &7.5,
        "pings resumed after the hang: {pings:?}"
    );
    assert!(stopping, "STOPPING=1 on shutdown");
}

#[test]
fn a_token_guards_every_data_endpoint_and_the_stream() {
    let token = "s3cret-token-123";
    let daemon = TestDaemon::new().arg("--auth-token").arg(token).start();
    for path in ["/status", "/metrics", "/snapshot.jpg"] {
        let none = daemon.get(path);
        assert_eq!(none.code, 401, "{path} without token: {none}");
        let wrong = daemon.get_with(path, &[("Authorization", "Bearer s3cret-token-124")]);
        assert_eq!(wrong.code, 401, "{path} with a wrong token");
        let bearer = format!("Bearer {token}");
        let header = daemon.get_with(path, &[("Authorization", bearer.as_str())]);
        assert_ne!(header.code, 401, "{path} with the token: {header}");
        let query = daemon.get(&format!("{path}?token={token}"));
        assert_ne!(query.code, 401, "{path}?token=");
    }
    assert!(matches!(daemon.get("/healthz").code, 200 | 503));
    assert_eq!(daemon.get("/").code, 200, "the page itself is public");

    let refused = tungstenite::connect(daemon.url("/stream"));
    assert!(
        matches!(refused, Err(tungstenite::Error::Http(ref r)) if r.status() == 401),
        "stream without token: {refused:?}"
    );
    let refused = tungstenite::connect(daemon.url("/stream?token=nope-nope-nope"));
    assert!(matches!(refused, Err(tungstenite::Error::Http(ref r)) if r.status() == 401));
    let mut ws = daemon.connect(&format!("/stream?token={token}"));
    next_video(&mut ws);
    let mut req = daemon.url("/stream").into_client_request().unwrap();
    req.headers_mut().insert(
        "Authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    let (mut ws, _) = tungstenite::connect(req).expect("bearer header accepted");
    next_video(&mut ws);
}

#[test]
fn basic_credentials_guard_the_page_and_the_stream() {
    let daemon = TestDaemon::new()
        .arg("--basic-auth")
        .arg("viewer:pw")
        .start();
    let page = daemon.get("/");
    assert_eq!(page.code, 401);
    assert!(
        page.header("www-authenticate")
            .is_some_and(|v| v.starts_with("Basic")),
        "{page}"
    );
    // viewer:pw
    let ok = daemon.get_with("/", &[("Authorization", "Basic dmlld2VyOnB3")]);
    assert_eq!(ok.code, 200);
    let bad = daemon.get_with("/status", &[("Authorization", "Basic dmlld2VyOnB4")]);
    assert_eq!(bad.code, 401);
    let mut req = daemon.url("/stream").into_client_request().unwrap();
    req.headers_mut().insert(
        "Authorization",
        HeaderValue::from_static("Basic dmlld2VyOnB3"),
    );
    let (mut ws, _) = tungstenite::connect(req).expect("basic credentials accepted");
    next_video(&mut ws);
}

#[test]
fn client_limit_and_origin_checks_refuse_clearly() {
    let daemon = TestDaemon::new()
        .arg("--max-clients")
        .arg("2")
        .arg("--allowed-origin")
        .arg("http://cam.local:8080")
        .start();
    let mut a = daemon.connect("/stream");
    let mut b = daemon.connect("/stream");
    next_video(&mut a);
    next_video(&mut b);
    match tungstenite::connect(daemon.url("/stream")) {
        Err(tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), 503);
            let text =
                String::from_utf8_lossy(r.body().as_deref().unwrap_or_default()).into_owned();
            assert!(text.contains("--max-clients 2"), "{text}");
        }
        other => panic!("third client should be refused: {other:?}"),
    }
    drop(b);
    // The slot frees once the server notices the close.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut origin_ok = None;
    while Instant::now() < deadline {
        let mut req = daemon.url("/stream").into_client_request().unwrap();
        req.headers_mut()
            .insert("Origin", HeaderValue::from_static("http://cam.local:8080"));
        match tungstenite::connect(req) {
            Ok((ws, _)) => {
                origin_ok = Some(ws);
                break;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    let mut ws = origin_ok.expect("allowed origin admitted once a slot is free");
    next_video(&mut ws);
    drop(ws);
    std::thread::sleep(Duration::from_millis(300));
    let mut req = daemon.url("/stream").into_client_request().unwrap();
    req.headers_mut()
        .insert("Origin", HeaderValue::from_static("http://evil.example"));
    match tungstenite::connect(req) {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("foreign origin should be refused: {other:?}"),
    }
    next_video(&mut a);
}
