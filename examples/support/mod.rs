//! Shared by the examples that drive the release daemon from outside (bench, soak): find the
//! binary beside them, pick a port, start it and wait until it listens.

use std::io::{BufRead, BufReader, Lines};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::{Duration, Instant};

/// The daemon built alongside this example (`target/<profile>/rpi-streamer`).
pub fn release_daemon() -> Result<PathBuf, String> {
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
            Some(Ok(line)) if line.contains("listening on") => return Ok((child, lines)),
            Some(Ok(_)) if Instant::now() < deadline => continue,
            _ => {
                let _ = child.kill();
                return Err("daemon did not start".into());
            }
        }
    }
}
