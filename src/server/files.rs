//! The browser client's files: from `--public-dir`, or the copy compiled into the binary.
//!
//! Request paths are percent-decoded and then must be plain relative names: any `..`, `.`,
//! empty or backslash segment is refused, so nothing outside the folder can be read.
#![forbid(unsafe_code)]

use super::http::Response;
use crate::config::ClientFiles;
use async_tungstenite::tungstenite::Bytes;
use std::path::PathBuf;

/// The client compiled into the binary: (name, bytes). Add new files of `public/` here.
pub const BUILTIN: &[(&str, &[u8])] = &[
    ("index.html", include_bytes!("../../public/index.html")),
    ("app.js", include_bytes!("../../public/app.js")),
    ("audio.js", include_bytes!("../../public/audio.js")),
    ("clock.js", include_bytes!("../../public/clock.js")),
    ("controls.js", include_bytes!("../../public/controls.js")),
    ("h264.js", include_bytes!("../../public/h264.js")),
    ("mse.js", include_bytes!("../../public/mse.js")),
    ("style.css", include_bytes!("../../public/style.css")),
];

/// Content type by file extension.
pub fn content_type(name: &str) -> &'static str {
    match name
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .as_deref()
    {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("webmanifest") => "application/manifest+json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("ico") => "image/x-icon",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Decodes `%XX` escapes; `None` for malformed escapes or non-UTF-8 results.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The relative file name a request path asks for, or `None` if it tries to leave the folder.
pub fn safe_relative_path(path: &str) -> Option<String> {
    let decoded = percent_decode(path)?;
    let trimmed = decoded.strip_prefix('/')?;
    if trimmed.is_empty() {
        return Some("index.html".into());
    }
    let ok = trimmed.split('/').all(|seg| {
        !seg.is_empty()
            && seg != "."
            && seg != ".."
            && !seg.contains('\\')
            && !seg.contains('\0')
            && !seg.starts_with('.')
    });
    ok.then(|| trimmed.to_string())
}

/// A weak validator for caching: FNV-1a of the bytes.
fn etag(body: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in body {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("\"{h:016x}\"")
}

/// Serves `path` from the client files; `None` when there is no such file.
pub fn serve(files: &ClientFiles, path: &str, if_none_match: Option<&str>) -> Option<Response> {
    let name = safe_relative_path(path)?;
    let body: Bytes = match files {
        ClientFiles::Disabled => return None,
        // Served from the binary's own copy, not copied per request.
        ClientFiles::Builtin => BUILTIN
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, bytes)| Bytes::from_static(bytes))?,
        ClientFiles::Dir(dir) => {
            let full: PathBuf = dir.join(&name);
            if !full.is_file() {
                return None;
            }
            std::fs::read(full).ok()?.into()
        }
    };
    let tag = etag(&body);
    // The client changes with the daemon: always revalidate, usually with a cheap 304.
    if if_none_match == Some(tag.as_str()) {
        return Some(
            Response::new(304, content_type(&name), Vec::new())
                .with("ETag", tag)
                .with("Cache-Control", "no-cache"),
        );
    }
    Some(
        Response::new(200, content_type(&name), body)
            .with("ETag", tag)
            .with("Cache-Control", "no-cache")
            .with("X-Content-Type-Options", "nosniff"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_attempts_are_refused() {
        for bad in [
            "/../etc/passwd",
            "/a/../../etc/passwd",
            "/%2e%2e/etc/passwd",
            "/%2E%2E%2Fetc%2Fpasswd",
            "/..%2fetc",
            "/.hidden",
            "//etc/passwd",
            "/a\\..\\b",
            "/%00",
            "/%zz",
            "relative",
        ] {
            assert_eq!(safe_relative_path(bad), None, "{bad}");
        }
        assert_eq!(safe_relative_path("/").as_deref(), Some("index.html"));
        assert_eq!(
            safe_relative_path("/js/app.js").as_deref(),
            Some("js/app.js")
        );
        assert_eq!(safe_relative_path("/a%20b.css").as_deref(), Some("a b.css"));
    }

    #[test]
    fn content_types_by_extension() {
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("app.JS"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("style.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("blob"), "application/octet-stream");
    }

    #[test]
    fn builtin_index_is_served_and_revalidates() {
        let r = serve(&ClientFiles::Builtin, "/", None).expect("index");
        assert_eq!(r.status, 200);
        let tag = r
            .headers
            .iter()
            .find(|(n, _)| *n == "ETag")
            .unwrap()
            .1
            .clone();
        let again = serve(&ClientFiles::Builtin, "/index.html", Some(&tag)).unwrap();
        assert_eq!(again.status, 304);
        assert!(serve(&ClientFiles::Builtin, "/nope.js", None).is_none());
        assert!(serve(&ClientFiles::Disabled, "/", None).is_none());
    }

    #[test]
    fn a_folder_is_served_without_escaping_it() {
        let dir = std::env::temp_dir().join(format!("rpi-streamer-files-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("index.html"), "<p>hi</p>").unwrap();
        std::fs::write(dir.join("sub/app.js"), "1").unwrap();
        let files = ClientFiles::Dir(dir.clone());
        assert_eq!(serve(&files, "/", None).unwrap().body, &b"<p>hi</p>"[..]);
        assert_eq!(serve(&files, "/sub/app.js", None).unwrap().body, &b"1"[..]);
        assert!(serve(&files, "/sub", None).is_none());
        assert!(serve(&files, "/../index.html", None).is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
