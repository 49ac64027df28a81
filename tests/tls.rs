//! HTTPS and WSS against the real daemon: `--tls-self-signed` in a temporary state directory
//! (the certificate's names, its reuse, its fingerprint in the log), `--tls-cert/--tls-key`
//! with a chain made here, refused flags and files (exit 2, naming the flag and the file), and
//! a plain-HTTP client on the TLS port. The client is rustls trusting only the certificate a
//! test names, so every successful handshake also checks the certificate for that name.

mod common;

use common::*;

#[cfg(feature = "tls")]
use common::tls;
#[cfg(feature = "tls")]
use std::time::{Duration, Instant};

#[cfg(feature = "tls")]
const CERT_FILE: &str = "self-signed-cert.pem";
#[cfg(feature = "tls")]
const KEY_FILE: &str = "self-signed-key.pem";

/// Reads WebSocket messages until a text video frame; its parsed form.
#[cfg(feature = "tls")]
fn next_video_over_tls(ws: &mut tls::TlsClient) -> Video {
    for _ in 0..200 {
        match ws.read().expect("read a message over WSS") {
            tungstenite::Message::Text(t) => {
                if let Media::Video(video) = parse_text(t.as_str()).expect("seed grammar") {
                    return video;
                }
            }
            tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_) => {}
            other => panic!("unexpected message {other:?}"),
        }
    }
    panic!("no video frame in 200 messages");
}

#[cfg(feature = "tls")]
fn status_of(response: &str) -> &str {
    response.split(' ').nth(1).unwrap_or("")
}

#[cfg(feature = "tls")]
fn self_signed_daemon(state: &TempDir, extra: &[&str]) -> Daemon {
    TestDaemon::new()
        .fps(15)
        .arg("--tls-self-signed")
        .args(extra)
        .env("STATE_DIRECTORY", state.0.to_str().unwrap())
        .start()
}

/// The fingerprint the daemon logged at start.
#[cfg(feature = "tls")]
fn logged_fingerprint(daemon: &Daemon) -> String {
    let log = daemon.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("SHA-256 fingerprint"))
        .unwrap_or_else(|| panic!("no fingerprint logged:\n{log}"));
    line.split("SHA-256 fingerprint ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or("")
        .to_string()
}

#[cfg(feature = "tls")]
#[test]
fn a_self_signed_certificate_serves_every_endpoint_and_is_reused_on_restart() {
    let state = TempDir::new("tls-state");
    let daemon = self_signed_daemon(&state, &["--tls-name", "cam.example"]);
    let cert = state.0.join(CERT_FILE);
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(state.0.join(KEY_FILE))
            .expect("the key is kept in STATE_DIRECTORY")
            .permissions(),
    );
    assert_eq!(key_mode & 0o777, 0o600, "the key file is private");
    let fingerprint = tls::fingerprint(&tls::read_certs(&cert)[0]);
    assert_eq!(logged_fingerprint(&daemon), fingerprint);

    // The client trusts only this certificate: each handshake checks it for that name.
    let trust = tls::trusting(&cert);
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let hostname = hostname.trim();
    let mut names = vec!["localhost", "127.0.0.1", "cam.example"];
    let mdns = format!("{hostname}.local");
    if rpi_streamer::tls::names::is_dns_name(hostname) && hostname != "localhost" {
        names.push(hostname);
        if !hostname.contains('.') {
            names.push(&mdns);
        }
    }
    if std::fs::read_to_string("/proc/net/if_inet6").is_ok_and(|t| t.contains("lo")) {
        names.push("::1");
    }
    for name in &names {
        tls::connect(daemon.port, name, &trust)
            .unwrap_or_else(|e| panic!("the certificate should cover {name}: {e}"));
    }
    assert!(
        tls::connect(daemon.port, "not-this-host.example", &trust).is_err(),
        "a name the certificate was not made for is refused"
    );

    let page = tls::get(daemon.port, "localhost", &trust, "/");
    assert_eq!(status_of(&page), "200", "{page:.200}");
    assert!(
        page.contains("<html") || page.contains("<!doctype"),
        "{page:.300}"
    );
    let status = tls::get(daemon.port, "localhost", &trust, "/status");
    assert_eq!(status_of(&status), "200");
    assert!(status.contains("\"camera\":\"test\""), "{status:.300}");
    for path in ["/healthz", "/metrics", "/snapshot.jpg"] {
        let response = tls::get(daemon.port, "127.0.0.1", &trust, path);
        assert!(
            ["200", "503"].contains(&status_of(&response)),
            "{path}: {response:.200}"
        );
    }

    let mut ws = tls::websocket(daemon.port, "localhost", &trust, "/stream");
    for _ in 0..3 {
        let Video { jpeg, width, .. } = next_video_over_tls(&mut ws);
        assert_eq!(width, 640);
        let (w, h, _) = decode_jpeg(&jpeg).expect("a whole JPEG over WSS");
        assert_eq!((w, h), (640, 480));
    }
    // Shutdown reaches a WSS client as a close frame (flushed through TLS).
    daemon.terminate();
    let deadline = Instant::now() + Duration::from_secs(5);
    let close = loop {
        assert!(Instant::now() < deadline, "no close frame within 5 s");
        match ws.read() {
            Ok(tungstenite::Message::Close(frame)) => break frame,
            Ok(_) => continue,
            Err(e) => panic!("connection ended without a close frame: {e}"),
        }
    };
    assert_eq!(close.map(|f| u16::from(f.code)), Some(1001));
    drop(ws);
    drop(daemon);

    let again = self_signed_daemon(&state, &["--tls-name", "cam.example"]);
    assert_eq!(
        logged_fingerprint(&again),
        fingerprint,
        "the stored certificate is reused"
    );
    assert!(
        again.log_text().contains("(reused)"),
        "{}",
        again.log_text()
    );
    let status = tls::get(again.port, "localhost", &trust, "/status");
    assert_eq!(status_of(&status), "200");
    drop(again);

    // A name the stored certificate lacks: a new one, and the log says why.
    let renamed = self_signed_daemon(&state, &["--tls-name", "other.example"]);
    assert_ne!(logged_fingerprint(&renamed), fingerprint);
    assert!(
        renamed
            .log_text()
            .contains("it is not valid for other.example"),
        "{}",
        renamed.log_text()
    );
}

/// A CA and a leaf it signed for localhost/127.0.0.1, written as PEM files: the chain (leaf
/// then CA), the leaf's key, and the CA alone (what a client trusts).
#[cfg(feature = "tls")]
fn write_chain(dir: &TempDir, alg: &'static rcgen::SignatureAlgorithm) -> (String, String, String) {
    let leaf_key = rcgen::KeyPair::generate_for(alg).expect("leaf key");
    let pem = leaf_key.serialize_pem();
    write_chain_with(dir, &leaf_key, &pem)
}

/// [`write_chain`] with a given leaf key, written to the key file as `key_pem`.
#[cfg(feature = "tls")]
fn write_chain_with(
    dir: &TempDir,
    leaf_key: &rcgen::KeyPair,
    key_pem: &str,
) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "test CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let leaf = leaf_params
        .signed_by(leaf_key, &issuer)
        .expect("leaf certificate");
    let (chain, key, ca) = (
        dir.file("chain.pem"),
        dir.file("key.pem"),
        dir.file("ca.pem"),
    );
    std::fs::write(&chain, format!("{}{}", leaf.pem(), ca_cert.pem())).unwrap();
    std::fs::write(&key, key_pem).unwrap();
    std::fs::write(&ca, ca_cert.pem()).unwrap();
    (chain, key, ca)
}

/// An RSA key made by the openssl CLI (ring cannot make one): as rcgen's signing key and as
/// the PKCS#1 PEM (`RSA PRIVATE KEY`) older tools write. `None` without openssl.
#[cfg(feature = "tls")]
fn openssl_rsa_key(dir: &TempDir) -> Option<(rcgen::KeyPair, String)> {
    let (pkcs8, pkcs1) = (dir.file("rsa8.pem"), dir.file("rsa1.pem"));
    let run = |args: &[&str]| {
        std::process::Command::new("openssl")
            .args(args)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let made = run(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        &pkcs8,
    ]) && run(&["rsa", "-in", &pkcs8, "-traditional", "-out", &pkcs1]);
    if !made {
        eprintln!("SKIPPED: the RSA case needs the openssl CLI");
        return None;
    }
    let pem8 = std::fs::read_to_string(&pkcs8).ok()?;
    let key = rcgen::KeyPair::from_pem_and_sign_algo(&pem8, &rcgen::PKCS_RSA_SHA256)
        .expect("rcgen takes the RSA key");
    let pem1 = std::fs::read_to_string(&pkcs1).ok()?;
    assert!(pem1.contains("BEGIN RSA PRIVATE KEY"), "{pem1:.40}");
    Some((key, pem1))
}

#[cfg(feature = "tls")]
#[test]
fn a_certificate_chain_and_key_from_files_are_served() {
    for label in ["ecdsa-p384", "ed25519", "rsa-pkcs1"] {
        let dir = TempDir::new(&format!("tls-files-{label}"));
        let (chain, key, ca) = match label {
            "ecdsa-p384" => write_chain(&dir, &rcgen::PKCS_ECDSA_P384_SHA384),
            "ed25519" => write_chain(&dir, &rcgen::PKCS_ED25519),
            _ => match openssl_rsa_key(&dir) {
                Some((rsa, pem)) => write_chain_with(&dir, &rsa, &pem),
                None => continue,
            },
        };
        let daemon = TestDaemon::new()
            .arg("--tls-cert")
            .arg(&chain)
            .arg("--tls-key")
            .arg(&key)
            .start();
        let leaf = &tls::read_certs(std::path::Path::new(&chain))[0];
        assert_eq!(
            logged_fingerprint(&daemon),
            tls::fingerprint(leaf),
            "{label}"
        );
        let trust = tls::trusting(std::path::Path::new(&ca));
        let status = tls::get(daemon.port, "127.0.0.1", &trust, "/status");
        assert_eq!(status_of(&status), "200", "{label}: {status:.200}");
        let mut ws = tls::websocket(daemon.port, "localhost", &trust, "/stream?format=text");
        next_video_over_tls(&mut ws);

        // curl (OpenSSL) as a second, independent client, when it is installed.
        let curl = std::process::Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "10",
                "--cacert",
                &ca,
                "-o",
                "/dev/null",
            ])
            .args(["-w", "%{http_code}"])
            .arg(format!("https://localhost:{}/healthz", daemon.port))
            .output();
        match curl {
            Ok(out) if out.status.success() => {
                let code = String::from_utf8_lossy(&out.stdout).to_string();
                assert!(code == "200" || code == "503", "{label}: curl got {code}");
            }
            Ok(out) => panic!(
                "{label}: curl --cacert failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(_) => eprintln!("SKIPPED: curl not installed"),
        }
    }
}

#[cfg(feature = "tls")]
#[test]
fn bad_certificate_flags_and_files_are_refused_with_exit_2_naming_them() {
    let dir = TempDir::new("tls-bad");
    let (chain, key, _) = write_chain(&dir, &rcgen::PKCS_ECDSA_P256_SHA256);
    let (_, other_key, _) = {
        let other = TempDir::new("tls-bad-other");
        let files = write_chain(&other, &rcgen::PKCS_ECDSA_P256_SHA256);
        let moved = dir.file("other-key.pem");
        std::fs::copy(&files.1, &moved).unwrap();
        (files.0, moved, files.2)
    };
    let garbage = dir.file("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let missing = dir.file("missing.pem");
    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["--tls-cert", &chain],
            "--tls-cert: needs --tls-key".into(),
        ),
        (
            vec!["--tls-key", &key],
            "--tls-key: needs --tls-cert".into(),
        ),
        (
            vec!["--tls-self-signed", "--tls-cert", &chain, "--tls-key", &key],
            "--tls-self-signed: cannot be combined".into(),
        ),
        (
            vec!["--tls-cert", &missing, "--tls-key", &key],
            format!("--tls-cert: {missing}: no such file"),
        ),
        (
            vec!["--tls-cert", &garbage, "--tls-key", &key],
            format!("--tls-cert: {garbage}: no PEM certificate"),
        ),
        (
            vec!["--tls-cert", &chain, "--tls-key", &garbage],
            format!("--tls-key: {garbage}: no PEM private key"),
        ),
        (
            vec!["--tls-cert", &key, "--tls-key", &chain],
            format!("--tls-cert: {key}: it holds a private key, not a certificate"),
        ),
        (
            vec!["--tls-cert", &chain, "--tls-key", &other_key],
            format!("--tls-key: {other_key}: "),
        ),
    ];
    for (flags, expected) in cases {
        let mut args = vec!["--camera-type", "test"];
        args.extend_from_slice(&flags);
        let (status, stderr) = run_to_exit(&args, &[]);
        assert_eq!(status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(
            stderr.contains(&expected),
            "{flags:?}: want {expected:?} in {stderr}"
        );
    }
    // The mismatched key says so.
    let args = [
        "--camera-type",
        "test",
        "--tls-cert",
        &chain,
        "--tls-key",
        &other_key,
    ];
    let (_, stderr) = run_to_exit(&args, &[]);
    assert!(
        stderr.contains("not the key of the certificate"),
        "{stderr}"
    );
    // A state directory that cannot be written names --tls-self-signed.
    let file_not_dir = dir.file("garbage.pem");
    let (status, stderr) = run_to_exit(
        &["--camera-type", "test", "--tls-self-signed"],
        &[("STATE_DIRECTORY", &file_not_dir)],
    );
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--tls-self-signed: no writable state directory"),
        "{stderr}"
    );
}

#[cfg(feature = "tls")]
#[test]
fn plain_http_on_the_tls_port_is_told_to_use_https_and_closed_at_once() {
    let state = TempDir::new("tls-plain");
    let daemon = self_signed_daemon(&state, &[]);
    let start = Instant::now();
    let answer = daemon.raw_request(b"GET /status HTTP/1.1\r\nHost: cam.local:8443\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("https://cam.local:8443/"), "{answer}");
    // Neither TLS nor HTTP: closed without an answer, long before the head timeout.
    let junk = daemon.raw_request(&[0u8; 64]);
    assert_eq!(junk, "");
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "took {:?}",
        start.elapsed()
    );
    // And the daemon still serves TLS clients.
    let trust = tls::trusting(&state.0.join(CERT_FILE));
    let status = tls::get(daemon.port, "localhost", &trust, "/status");
    assert_eq!(status_of(&status), "200");
}

#[cfg(feature = "tls")]
#[test]
fn handshakes_in_progress_are_bounded_and_idle_connections_take_no_place() {
    use std::io::Write as _;
    let state = TempDir::new("tls-handshakes");
    let daemon = self_signed_daemon(&state, &[]);
    let trust = tls::trusting(&state.0.join(CERT_FILE));
    let limit = rpi_streamer::server::MAX_TLS_HANDSHAKES;
    let connect = || std::net::TcpStream::connect(("127.0.0.1", daemon.port)).expect("connect");
    // Connections that never send a byte hold no handshake's place ...
    let idle: Vec<_> = (0..limit).map(|_| connect()).collect();
    // ... but ones that start a handshake (a TLS record's first byte) and stall do.
    let stalled: Vec<_> = (0..limit)
        .map(|_| {
            let mut s = connect();
            s.write_all(&[0x16]).expect("one byte");
            s
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let refused = tls::connect(daemon.port, "localhost", &trust);
    assert!(
        refused.is_err(),
        "a handshake past the limit is closed at once"
    );
    drop(stalled);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match tls::connect(daemon.port, "localhost", &trust) {
            Ok(_) => break,
            Err(e) if Instant::now() > deadline => {
                panic!("no handshake after the stalled ones left: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    drop(idle);
    let status = tls::get(daemon.port, "localhost", &trust, "/status");
    assert_eq!(status_of(&status), "200");
}

#[cfg(feature = "tls")]
#[test]
fn a_tls_client_that_stops_reading_leaves_the_others_their_frames() {
    let state = TempDir::new("tls-stall");
    let daemon = self_signed_daemon(&state, &[]);
    let trust = tls::trusting(&state.0.join(CERT_FILE));
    // Never read: its socket fills, its TLS buffer stays bounded, its slot keeps the newest.
    let stalled = tls::websocket(daemon.port, "localhost", &trust, "/stream?format=binary");
    let mut reader = tls::websocket(daemon.port, "localhost", &trust, "/stream");
    let start = Instant::now();
    let mut frames = 0;
    while start.elapsed() < Duration::from_secs(3) {
        next_video_over_tls(&mut reader);
        frames += 1;
    }
    // 15 fps for 3 s is 45; a loaded machine may lose some, never most.
    assert!(
        frames >= 30,
        "only {frames} frames in 3 s beside a stalled client"
    );
    // The stalled client really is held back (its socket and TLS buffer full): it skipped
    // frames, the newest replacing the one it could not take.
    let status = tls::get(daemon.port, "localhost", &trust, "/status");
    let skipped: Vec<u64> = status
        .split("\"video_skipped\":")
        .skip(1)
        .filter_map(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert!(
        skipped.iter().any(|&n| n > 0),
        "no client skipped a frame: {status:.600}"
    );
    drop(stalled);
}

#[cfg(not(feature = "tls"))]
#[test]
fn a_build_without_tls_refuses_the_tls_flags() {
    for flag in [
        &["--tls-self-signed"][..],
        &["--tls-cert", "c.pem", "--tls-key", "k.pem"],
    ] {
        let mut args = vec!["--camera-type", "test"];
        args.extend_from_slice(flag);
        let (status, stderr) = run_to_exit(&args, &[]);
        assert_eq!(status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(&format!("{}: this build has no TLS", flag[0])),
            "{stderr}"
        );
    }
}
