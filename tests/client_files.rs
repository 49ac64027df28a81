//! The browser client's files over real HTTP: every file of public/ is built into the binary
//! and served with its content type and caching headers; a `--public-dir` is served without
//! escaping it; `--no-client` serves none.

mod common;

use common::TestDaemon;
use std::path::{Path, PathBuf};

fn public_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("public")
}

fn expected_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, e)| e) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        other => panic!("public/{name}: add a content type check for {other:?}"),
    }
}

#[test]
fn every_public_file_is_built_in_with_type_and_cache_headers() {
    let daemon = TestDaemon::new().start();
    let mut names: Vec<String> = std::fs::read_dir(public_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert!(names.len() >= 2, "public/ has {names:?}");
    for name in &names {
        let reply = daemon.get(&format!("/{name}"));
        assert_eq!(
            reply.code, 200,
            "/{name}: {reply} (missing from files::BUILTIN?)"
        );
        let on_disk = std::fs::read(public_dir().join(name)).unwrap();
        assert_eq!(reply.body, on_disk, "/{name} differs from public/{name}");
        assert_eq!(reply.header("content-type"), Some(expected_type(name)));
        assert_eq!(reply.header("cache-control"), Some("no-cache"), "/{name}");
        assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
        let tag = reply.header("etag").expect("an ETag").to_string();
        let again = daemon.get_with(&format!("/{name}"), &[("If-None-Match", &tag)]);
        assert_eq!(again.code, 304, "/{name} revalidation: {again}");
        assert!(again.body.is_empty());
    }
    let root = daemon.get("/");
    assert_eq!(root.code, 200);
    assert_eq!(
        root.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let index = std::fs::read(public_dir().join("index.html")).unwrap();
    assert_eq!(root.body, index);
    let head = daemon.send(b"HEAD /app.js HTTP/1.1\r\n\r\n");
    assert_eq!(head.code, 200);
    assert!(head.body.is_empty(), "HEAD sent a body");
    assert_eq!(daemon.get("/nope.js").code, 404);
    assert_eq!(daemon.get("/index.html/").code, 404);
    assert_eq!(daemon.send(b"POST /index.html HTTP/1.1\r\n\r\n").code, 405);
}

#[test]
fn a_public_dir_is_served_and_nothing_outside_it() {
    let base = std::env::temp_dir().join(format!("rpi-streamer-public-{}", std::process::id()));
    let public = base.join("public");
    std::fs::create_dir_all(public.join("sub")).unwrap();
    std::fs::write(public.join("index.html"), "<p>custom page</p>").unwrap();
    std::fs::write(public.join("sub/x.css"), "p{}").unwrap();
    std::fs::write(public.join(".hidden"), "hidden").unwrap();
    std::fs::write(base.join("secret.txt"), "TOP SECRET").unwrap();
    let daemon = TestDaemon::new()
        .arg("--public-dir")
        .arg(public.to_str().unwrap())
        .start();
    assert_eq!(daemon.get("/").body, b"<p>custom page</p>");
    let css = daemon.get("/sub/x.css");
    assert_eq!(css.code, 200);
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    // Edits on disk show up without a restart (no stale copy kept).
    std::fs::write(public.join("index.html"), "<p>edited</p>").unwrap();
    assert_eq!(daemon.get("/").body, b"<p>edited</p>");
    for attempt in [
        "/../secret.txt",
        "/sub/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E%2Fsecret.txt",
        "/..%2fsecret.txt",
        "/.%2e/secret.txt",
        "/%2e./secret.txt",
        "/sub/%2e%2e/%2e%2e/secret.txt",
        "/..\\secret.txt",
        "/%5c..%5csecret.txt",
        "/..%5csecret.txt",
        "//secret.txt",
        "/.hidden",
        "/%2ehidden",
        "/sub/..",
        "/%00",
        "/%2",
    ] {
        let reply = daemon.get(attempt);
        assert!(matches!(reply.code, 400 | 404), "{attempt}: {reply}");
        assert!(
            !reply.text().contains("SECRET"),
            "{attempt} leaked the file"
        );
        assert!(
            !reply.text().contains("hidden"),
            "{attempt} served a dot file"
        );
    }
    let absolute = base.join("secret.txt");
    let reply = daemon.get(absolute.to_str().unwrap());
    assert_eq!(reply.code, 404, "absolute path: {reply}");
    drop(daemon);
    std::fs::remove_dir_all(base).unwrap();
}

#[test]
fn no_client_serves_no_files_but_still_streams() {
    let daemon = TestDaemon::new().arg("--no-client").start();
    for path in ["/", "/index.html", "/app.js", "/style.css"] {
        assert_eq!(daemon.get(path).code, 404, "{path}");
    }
    assert_eq!(daemon.get("/status").code, 200);
    let mut ws = daemon.connect("/stream?format=binary");
    common::set_read_timeout(&ws, std::time::Duration::from_secs(5));
    let msg = ws.read().expect("a stream message");
    assert!(msg.is_binary(), "{msg:?}");
}
