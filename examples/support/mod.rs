//! Shared by the examples that drive the release daemon from outside (bench, soak): find the
//! binary beside them, pick a port, start it and wait until it listens.

use std::io::{BufRead, BufReader, Lines};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::{Duration, Instant};

/// The daemon built alongside this example (`target/<profile>/rpi-streamer`), or the one
/// `RPI_STREAMER_DAEMON` names (to measure another build with the same benchmark).
pub fn release_daemon() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("RPI_STREAMER_DAEMON") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let daemon = exe
        .parent()
        .and_then(|examples| examples.parent())
        .map(|dir| dir.join("rpi-streamer"))
        .ok_or("cannot locate target dir")?;
    if !daemon.is_file() {
        return Err(format!(
            "{} missing: build it first (scripts/bench)",
            daemon.display()
        ));
    }
    Ok(daemon)
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> Result<u16, String> {
    Ok(TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port())
}

/// Spawns `cmd` with stderr piped and waits (10 s at most) for its "listening on" line; the
/// remaining stderr lines are returned for the caller to drain.
pub fn spawn_until_listening(
    cmd: &mut Command,
) -> Result<(Child, Lines<BufReader<ChildStderr>>), String> {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting the daemon: {e}"))?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match lines.next() {
            // "listening on http(s)://…", not the bind error "listening on ADDR: …".
            Some(Ok(line)) if line.contains("listening on http") => return Ok((child, lines)),
            Some(Ok(_)) if Instant::now() < deadline => continue,
            _ => {
                let _ = child.kill();
                return Err("daemon did not start".into());
            }
        }
    }
}

/// Starts the release daemon on the synthetic source at `(width, height)`, `fps` and JPEG
/// `quality` on a free loopback port, with `extra` flags; waits until it listens and keeps
/// draining its stderr so it never blocks on a full pipe. (The soak starts its own: it shows
/// the daemon's warnings instead of dropping them.)
#[allow(dead_code)]
pub fn start_test_daemon(
    size: (u32, u32),
    fps: u32,
    quality: u8,
    extra: &[&str],
) -> Result<(Child, u16), String> {
    start_test_daemon_with_env(size, fps, quality, extra, &[])
}

/// [`start_test_daemon`] with extra environment variables (e.g. `STATE_DIRECTORY`).
#[allow(dead_code)]
pub fn start_test_daemon_with_env(
    (width, height): (u32, u32),
    fps: u32,
    quality: u8,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Result<(Child, u16), String> {
    let daemon = release_daemon()?;
    let port = free_port()?;
    let (child, lines) = spawn_until_listening(
        Command::new(&daemon)
            .args([
                "--camera-type",
                "test",
                "--host",
                "127.0.0.1",
                "--no-client",
            ])
            .args(["--port", &port.to_string(), "--fps", &fps.to_string()])
            .args([
                "--width",
                &width.to_string(),
                "--height",
                &height.to_string(),
            ])
            .args(["--quality", &quality.to_string()])
            .args(extra)
            .envs(env.iter().copied())
            // The "listening on" line the start waits for is the daemon's info log.
            .env("RUST_LOG", "warn,rpi_streamer::daemon=info"),
    )?;
    std::thread::spawn(move || for _ in lines {});
    Ok((child, port))
}
