//! Camera controls end to end on the synthetic source: `--camera-control` and the rpicam
//! aliases at start, `GET/POST /controls` live (the decoded picture changes), refusals that
//! list what is valid, and the same access rules as the stream.

mod common;

use common::{decode_jpeg, exit_output, next_video, run_to_exit, unix_now, Daemon, Media};

/// Status code and body of a raw HTTP exchange.
fn status_and_body(answer: &str) -> (u16, &str) {
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"));
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body)
}

/// `POST /controls` with `json` and extra header lines; the whole answer.
fn post(d: &Daemon, json: &str, headers: &str) -> String {
    d.raw_request(
        format!(
            "POST /controls HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{headers}Content-Type: \
             application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
            d.port,
            json.len()
        )
        .as_bytes(),
    )
}

fn get_controls(d: &Daemon, headers: &str) -> String {
    d.raw_request(
        format!("GET /controls HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n")
            .as_bytes(),
    )
}

/// Waits (at most 10 s) until the camera is open and `GET /controls` lists its controls.
fn wait_for_camera(d: &Daemon, headers: &str) {
    for _ in 0..200 {
        let answer = get_controls(d, headers);
        let (status, body) = status_and_body(&answer);
        if status == 200 && body.starts_with("[{") {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("the camera did not open; log:\n{}", d.log_text());
}

/// The mean of every decoded RGB sample of a frame.
fn mean_level(jpeg: &[u8]) -> f64 {
    let (_, _, rgb) = decode_jpeg(jpeg).expect("a JPEG");
    rgb.iter().map(|&v| f64::from(v)).sum::<f64>() / rgb.len() as f64
}

/// The first frame captured after `t`, and how many frames came before it.
fn first_frame_after(ws: &mut common::Client, t: f64) -> Vec<u8> {
    for _ in 0..100 {
        let Media::Video { ts, jpeg, .. } = next_video(ws) else {
            unreachable!()
        };
        if ts > t {
            return jpeg;
        }
    }
    panic!("no frame captured after {t} in 100 frames");
}

#[test]
fn a_live_brightness_change_shows_in_the_next_frame() {
    let d = Daemon::start(&[
        "--camera-type",
        "test",
        "--width",
        "320",
        "--height",
        "240",
        "--fps",
        "15",
    ]);
    wait_for_camera(&d, "");
    let mut ws = d.connect("/stream");
    let before = mean_level(&first_frame_after(&mut ws, 0.0));

    let answer = post(&d, r#"{"Brightness": 0.6}"#, "");
    let (status, body) = status_and_body(&answer);
    assert_eq!(status, 200, "{answer}");
    assert!(body.contains(r#""name":"Brightness","type":"float","min":-1,"max":1,"step":0,"default":0,"value":0.6"#), "{body}");
    // Applied before the camera's next frame: every frame captured after the answer has it.
    let bright = mean_level(&first_frame_after(&mut ws, unix_now()));
    assert!(
        bright > before + 60.0,
        "brightness 0.6: {before:.1} -> {bright:.1}"
    );

    let answer = post(&d, r#"{"Brightness": -1, "Contrast": 1}"#, "");
    assert_eq!(status_and_body(&answer).0, 200, "{answer}");
    let dark = mean_level(&first_frame_after(&mut ws, unix_now()));
    assert!(
        dark < 45.0,
        "brightness -1 leaves a dark picture, got {dark:.1}"
    );

    let listed = get_controls(&d, "");
    let (status, body) = status_and_body(&listed);
    assert_eq!(status, 200);
    assert!(body.contains(r#""name":"Brightness","type":"float","min":-1,"max":1,"step":0,"default":0,"value":-1,"#), "{body}");
    assert!(body.contains(r#""name":"Contrast""#) && body.contains(r#""name":"Saturation""#));
}

#[test]
fn bad_changes_are_refused_whole_with_what_is_valid() {
    let d = Daemon::start(&["--camera-type", "test", "--width", "160", "--height", "120"]);
    wait_for_camera(&d, "");
    for (json, expect) in [
        (
            r#"{"Brightness": 0.5, "Gamma": 1}"#,
            r#"no control named \"Gamma\"; this camera offers: Brightness (a number in -1..1), Contrast (a number in 0..32), Saturation (a number in 0..32)"#,
        ),
        (
            r#"{"Brightness": 1.5}"#,
            "Brightness takes a number in -1..1 (got 1.5)",
        ),
        (
            r#"{"Contrast": "high"}"#,
            r#"Contrast takes a number in 0..32 (got \"high\")"#,
        ),
        (r#"{"Brightness": true}"#, "Brightness takes a number"),
        (r#"{"Brightness": [1]}"#, "must be a JSON object"),
        ("Brightness=1", "must be a JSON object"),
    ] {
        let answer = post(&d, json, "");
        let (status, body) = status_and_body(&answer);
        assert_eq!(status, 400, "{json}: {answer}");
        assert!(body.contains(expect), "{json}: {body}");
    }
    // Nothing of a refused request was applied.
    let listed = get_controls(&d, "");
    let (_, body) = status_and_body(&listed);
    assert!(
        body.contains(
            r#""name":"Brightness","type":"float","min":-1,"max":1,"step":0,"default":0,"value":0,"#
        ),
        "{body}"
    );

    let no_length = d.raw_request(b"POST /controls HTTP/1.1\r\nHost: x\r\n\r\n{}");
    assert_eq!(status_and_body(&no_length).0, 411, "{no_length}");
    let huge = format!("{{\"Brightness\": {}0}}", " ".repeat(9000));
    assert_eq!(status_and_body(&post(&d, &huge, "")).0, 413);
    let put = d.raw_request(b"PUT /controls HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(status_and_body(&put).0, 405, "{put}");
}

#[test]
fn controls_are_protected_like_the_stream_and_refused_to_other_origins() {
    let d = Daemon::start(&[
        "--camera-type",
        "test",
        "--width",
        "160",
        "--height",
        "120",
        "--auth-token",
        "s3cret-token",
        "--allowed-origin",
        "https://dash.example",
    ]);
    wait_for_camera(&d, "Authorization: Bearer s3cret-token\r\n");
    let auth = "Authorization: Bearer s3cret-token\r\n";
    assert_eq!(status_and_body(&get_controls(&d, "")).0, 401);
    assert_eq!(
        status_and_body(&post(&d, r#"{"Brightness":0.1}"#, "")).0,
        401
    );
    assert_eq!(status_and_body(&get_controls(&d, auth)).0, 200);
    assert_eq!(
        status_and_body(&post(&d, r#"{"Brightness":0.1}"#, auth)).0,
        200
    );

    // A page from this host may; a page elsewhere may not, even with the token.
    let same = format!("{auth}Origin: http://127.0.0.1:{}\r\n", d.port);
    assert_eq!(
        status_and_body(&post(&d, r#"{"Brightness":0.2}"#, &same)).0,
        200
    );
    let evil = format!("{auth}Origin: https://evil.example\r\n");
    let answer = post(&d, r#"{"Brightness":0.3}"#, &evil);
    let (status, body) = status_and_body(&answer);
    assert_eq!(status, 403, "{answer}");
    assert!(
        body.contains("--allowed-origin https://evil.example"),
        "{body}"
    );

    // An allowed origin gets its preflight answered and its change applied.
    let preflight = d.raw_request(
        b"OPTIONS /controls HTTP/1.1\r\nHost: x\r\nOrigin: https://dash.example\r\n\
          Access-Control-Request-Method: POST\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_and_body(&preflight).0, 204, "{preflight}");
    assert!(preflight.contains("Access-Control-Allow-Origin: https://dash.example"));
    assert!(preflight.contains("Access-Control-Allow-Methods: GET, POST"));
    let answer = post(
        &d,
        r#"{"Brightness":0.4}"#,
        &format!("{auth}Origin: https://dash.example\r\n"),
    );
    assert_eq!(status_and_body(&answer).0, 200, "{answer}");
    assert!(answer.contains("Access-Control-Allow-Origin: https://dash.example"));
    assert!(answer.contains(r#""value":0.4"#));
}

#[test]
fn command_line_controls_apply_at_start_and_bad_ones_exit_2() {
    let d = Daemon::start(&[
        "--camera-type",
        "test",
        "--width",
        "160",
        "--height",
        "120",
        "--brightness",
        "0.25",
        "--camera-control",
        "Contrast=1.5",
        "--camera-control",
        "saturation=0",
    ]);
    wait_for_camera(&d, "");
    let listed = get_controls(&d, "");
    let (_, body) = status_and_body(&listed);
    for want in [
        r#""name":"Brightness","type":"float","min":-1,"max":1,"step":0,"default":0,"value":0.25,"#,
        r#""name":"Contrast","type":"float","min":0,"max":32,"step":0,"default":1,"value":1.5,"#,
        r#""name":"Saturation","type":"float","min":0,"max":32,"step":0,"default":1,"value":0,"#,
    ] {
        assert!(body.contains(want), "{want} in {body}");
    }

    for (args, expect) in [
        (
            &["--camera-control", "Gamma=2"][..],
            "--camera-control: no control named \"Gamma\"; this camera offers: Brightness",
        ),
        (
            &["--camera-control", "Brightness"],
            "--camera-control: must be NAME=VALUE",
        ),
        (
            &["--contrast", "40"],
            "--camera-control: Contrast takes a number in 0..32 (got \"40\")",
        ),
        (&["--brightness", "lots"], "--brightness: must be a number"),
    ] {
        let mut all = vec!["--camera-type", "test"];
        all.extend_from_slice(args);
        let (status, stderr) = run_to_exit(&all, &[]);
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
    }

    let out = exit_output(&["--camera-type", "test", "--list-devices"], &[]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("    Brightness (float -1..1) default=0 value=0"),
        "{listed}"
    );
}
