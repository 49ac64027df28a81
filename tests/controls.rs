//! Camera controls end to end on the synthetic source: `--camera-control` and the rpicam
//! aliases at start, `GET/POST /controls` live (the decoded picture changes), refusals that
//! list what is valid, and the same access rules as the stream.

mod common;

use common::{
    decode_jpeg, exit_output, next_video, run_to_exit, unix_now, Daemon, Reply, TestDaemon,
};

/// `POST /controls` with `json` and extra header lines.
fn post(d: &Daemon, json: &str, headers: &str) -> Reply {
    d.send(
        format!(
            "POST /controls HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{headers}Content-Type: \
             application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
            d.port,
            json.len()
        )
        .as_bytes(),
    )
}

const AUTH: (&str, &str) = ("Authorization", "Bearer s3cret-token");

/// Waits (at most 10 s) until the camera is open and `GET /controls` lists its controls.
fn wait_for_camera(d: &Daemon, headers: &[(&str, &str)]) {
    for _ in 0..200 {
        let reply = d.get_with("/controls", headers);
        if reply.code == 200 && reply.text().starts_with("[{") {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("the camera did not open; log:\n{}", d.log_text());
}

/// A test-source daemon with `args`, its camera open.
fn started(args: &[&str], headers: &[(&str, &str)]) -> Daemon {
    let d = TestDaemon::new().args(args).start();
    wait_for_camera(&d, headers);
    d
}

/// The mean of every decoded RGB sample of a frame.
fn mean_level(jpeg: &[u8]) -> f64 {
    let (_, _, rgb) = decode_jpeg(jpeg).expect("a JPEG");
    rgb.iter().map(|&v| f64::from(v)).sum::<f64>() / rgb.len() as f64
}

/// The first frame captured after `t`.
fn first_frame_after(ws: &mut common::Client, t: f64) -> Vec<u8> {
    for _ in 0..100 {
        let frame = next_video(ws);
        if frame.ts > t {
            return frame.jpeg;
        }
    }
    panic!("no frame captured after {t} in 100 frames");
}

const BRIGHTNESS_AT: &str =
    r#""name":"Brightness","type":"float","min":-1,"max":1,"step":0,"default":0,"value":"#;

#[test]
fn a_live_brightness_change_shows_in_the_next_frame() {
    let d = started(&["--width", "320", "--height", "240", "--fps", "15"], &[]);
    let mut ws = d.connect("/stream");
    let before = mean_level(&first_frame_after(&mut ws, 0.0));

    let answer = post(&d, r#"{"Brightness": 0.6}"#, "");
    assert_eq!(answer.code, 200, "{answer}");
    assert!(
        answer.text().contains(&format!("{BRIGHTNESS_AT}0.6,")),
        "{answer}"
    );
    // Applied before the camera's next frame: every frame captured after the answer has it.
    let bright = mean_level(&first_frame_after(&mut ws, unix_now()));
    assert!(
        bright > before + 60.0,
        "brightness 0.6: {before:.1} -> {bright:.1}"
    );

    let answer = post(&d, r#"{"Brightness": -1, "Contrast": 1}"#, "");
    assert_eq!(answer.code, 200, "{answer}");
    let dark = mean_level(&first_frame_after(&mut ws, unix_now()));
    assert!(
        dark < 45.0,
        "brightness -1 leaves a dark picture, got {dark:.1}"
    );

    let listed = d.get("/controls");
    assert_eq!(listed.code, 200);
    let body = listed.text();
    assert!(body.contains(&format!("{BRIGHTNESS_AT}-1,")), "{body}");
    assert!(body.contains(r#""name":"Contrast""#) && body.contains(r#""name":"Saturation""#));
}

#[test]
fn bad_changes_are_refused_whole_with_what_is_valid() {
    let d = started(&["--width", "160", "--height", "120"], &[]);
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
        assert_eq!(answer.code, 400, "{json}: {answer}");
        assert!(answer.text().contains(expect), "{json}: {answer}");
    }
    // Nothing of a refused request was applied.
    let body = d.get("/controls").text();
    assert!(body.contains(&format!("{BRIGHTNESS_AT}0,")), "{body}");

    let no_length = d.send(b"POST /controls HTTP/1.1\r\nHost: x\r\n\r\n{}");
    assert_eq!(no_length.code, 411, "{no_length}");
    let huge = format!("{{\"Brightness\": {}0}}", " ".repeat(9000));
    assert_eq!(post(&d, &huge, "").code, 413);
    let put = d.send(b"PUT /controls HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(put.code, 405, "{put}");
}

#[test]
fn controls_are_protected_like_the_stream_and_refused_to_other_origins() {
    let d = started(
        &[
            "--width",
            "160",
            "--height",
            "120",
            "--auth-token",
            "s3cret-token",
            "--allowed-origin",
            "https://dash.example",
        ],
        &[AUTH],
    );
    let auth = format!("{}: {}\r\n", AUTH.0, AUTH.1);
    assert_eq!(d.get("/controls").code, 401);
    assert_eq!(post(&d, r#"{"Brightness":0.1}"#, "").code, 401);
    assert_eq!(d.get_with("/controls", &[AUTH]).code, 200);
    assert_eq!(post(&d, r#"{"Brightness":0.1}"#, &auth).code, 200);

    // A page from this host may; a page elsewhere may not, even with the token.
    let same = format!("{auth}Origin: http://127.0.0.1:{}\r\n", d.port);
    assert_eq!(post(&d, r#"{"Brightness":0.2}"#, &same).code, 200);
    let evil = format!("{auth}Origin: https://evil.example\r\n");
    let answer = post(&d, r#"{"Brightness":0.3}"#, &evil);
    assert_eq!(answer.code, 403, "{answer}");
    assert!(
        answer
            .text()
            .contains("--allowed-origin https://evil.example"),
        "{answer}"
    );

    // An allowed origin gets its preflight answered and its change applied.
    let preflight = d.send(
        b"OPTIONS /controls HTTP/1.1\r\nHost: x\r\nOrigin: https://dash.example\r\n\
          Access-Control-Request-Method: POST\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(preflight.code, 204, "{preflight}");
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("https://dash.example")
    );
    assert_eq!(
        preflight.header("access-control-allow-methods"),
        Some("GET, POST")
    );
    let answer = post(
        &d,
        r#"{"Brightness":0.4}"#,
        &format!("{auth}Origin: https://dash.example\r\n"),
    );
    assert_eq!(answer.code, 200, "{answer}");
    assert_eq!(
        answer.header("access-control-allow-origin"),
        Some("https://dash.example")
    );
    assert!(answer.text().contains(&format!("{BRIGHTNESS_AT}0.4,")));
}

#[test]
fn command_line_controls_apply_at_start_and_bad_ones_exit_2() {
    let d = started(
        &[
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
        ],
        &[],
    );
    let body = d.get("/controls").text();
    for want in [
        format!("{BRIGHTNESS_AT}0.25,"),
        r#""name":"Contrast","type":"float","min":0,"max":32,"step":0,"default":1,"value":1.5,"#
            .to_string(),
        r#""name":"Saturation","type":"float","min":0,"max":32,"step":0,"default":1,"value":0,"#
            .to_string(),
    ] {
        assert!(body.contains(&want), "{want} in {body}");
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
