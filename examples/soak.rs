//! Soak test: the release daemon on the synthetic source (video and audio) with steady clients
//! and one client that keeps reconnecting, for a long time; the daemon's RSS, open fds and
//! threads are sampled at an interval and judged flat or growing at the end. Not part of CI:
//! run it with `scripts/soak` (default one hour, 8 clients, a sample a minute).
//!
//! Flags: `--seconds N` (3600), `--interval N` (60), `--clients N` (8), `--width`, `--height`,
//! `--fps` (640x480 @ 15). Exit status 0 when flat and every client kept receiving, 1 otherwise.

#[path = "support/mod.rs"]
mod support;

use std::net::TcpStream;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Options {
    seconds: u64,
    interval: u64,
    clients: usize,
    width: u32,
    height: u32,
    fps: u32,
}

fn parse_options() -> Result<Options, String> {
    let mut o = Options {
        seconds: 3600,
        interval: 60,
        clients: 8,
        width: 640,
        height: 480,
        fps: 15,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: std::num::ParseIntError| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--seconds" => o.seconds = value.parse().map_err(bad)?,
            "--interval" => o.interval = value.parse().map_err(bad)?,
            "--clients" => o.clients = value.parse().map_err(bad)?,
            "--width" => o.width = value.parse().map_err(bad)?,
            "--height" => o.height = value.parse().map_err(bad)?,
            "--fps" => o.fps = value.parse().map_err(bad)?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if o.interval == 0 || o.seconds < o.interval {
        return Err("want --interval > 0 and --seconds >= --interval".into());
    }
    Ok(o)
}

fn start_daemon(o: &Options) -> Result<(Child, u16), String> {
    let daemon = support::release_daemon()?;
    let port = support::free_port()?;
    let (child, lines) = support::spawn_until_listening(
        Command::new(&daemon)
            .args(["--camera-type", "test", "--enable-audio", "--no-client"])
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--width",
                &o.width.to_string(),
                "--height",
                &o.height.to_string(),
            ])
            .args(["--fps", &o.fps.to_string()])
            .env("RUST_LOG", "warn,rpi_streamer::daemon=info"),
    )?;
    // Warnings during the soak are worth seeing; keep the pipe drained either way.
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            eprintln!("daemon: {line}");
        }
    });
    Ok((child, port))
}

/// Reads messages until `stop`; counts video frames.
fn steady_client(port: u16, frames: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) else {
            std::thread::sleep(Duration::from_secs(1));
            continue;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let url = format!("ws://127.0.0.1:{port}/stream");
        let Ok((mut ws, _)) = tungstenite::client(url.as_str(), stream) else {
            std::thread::sleep(Duration::from_secs(1));
            continue;
        };
        while !stop.load(Ordering::Relaxed) {
            match ws.read() {
                Ok(tungstenite::Message::Text(t)) if t.as_str().starts_with("video:") => {
                    frames.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let _ = ws.close(None);
    }
}

/// Connects, reads a little, leaves (cleanly or not), every two seconds.
fn churn_client(port: u16, cycles: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        if let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let url = format!("ws://127.0.0.1:{port}/stream");
            if let Ok((mut ws, _)) = tungstenite::client(url.as_str(), stream) {
                for _ in 0..5 {
                    if ws.read().is_err() {
                        break;
                    }
                }
                if n.is_multiple_of(2) {
                    let _ = ws.close(None);
                    let _ = ws.flush();
                }
                cycles.fetch_add(1, Ordering::Relaxed);
            }
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

#[derive(Clone, Copy)]
struct Sample {
    at_s: f64,
    rss_kib: u64,
    fds: usize,
    threads: usize,
}

fn sample(pid: u32, at_s: f64) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let count = |dir: &str| std::fs::read_dir(format!("/proc/{pid}/{dir}")).map(|d| d.count());
    Some(Sample {
        at_s,
        rss_kib,
        fds: count("fd").ok()?,
        threads: count("task").ok()?,
    })
}

/// Least-squares slope of RSS in KiB per hour.
fn rss_slope_kib_per_hour(samples: &[Sample]) -> f64 {
    let n = samples.len() as f64;
    let mean_t = samples.iter().map(|s| s.at_s).sum::<f64>() / n;
    let mean_r = samples.iter().map(|s| s.rss_kib as f64).sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for s in samples {
        num += (s.at_s - mean_t) * (s.rss_kib as f64 - mean_r);
        den += (s.at_s - mean_t).powi(2);
    }
    if den == 0.0 {
        0.0
    } else {
        num / den * 3600.0
    }
}

fn main() {
    let o = match parse_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("soak: {e}");
            std::process::exit(2);
        }
    };
    let (mut child, port) = match start_daemon(&o) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("soak: {e}");
            std::process::exit(1);
        }
    };
    let pid = child.id();
    println!(
        "soak: daemon pid {pid} on 127.0.0.1:{port}, test source {}x{} @ {} fps + audio, \
         {} steady clients + 1 reconnecting every 2 s, {} s, a sample every {} s",
        o.width, o.height, o.fps, o.clients, o.seconds, o.interval
    );
    let stop = Arc::new(AtomicBool::new(false));
    let frames: Vec<Arc<AtomicU64>> = (0..o.clients).map(|_| Arc::default()).collect();
    let churned = Arc::new(AtomicU64::new(0));
    let mut threads: Vec<_> = frames
        .iter()
        .map(|f| {
            let (f, s) = (f.clone(), stop.clone());
            std::thread::spawn(move || steady_client(port, f, s))
        })
        .collect();
    {
        let (c, s) = (churned.clone(), stop.clone());
        threads.push(std::thread::spawn(move || churn_client(port, c, s)));
    }

    println!(
        "{:>8} {:>9} {:>5} {:>7} {:>11} {:>9}",
        "time s", "RSS KiB", "fds", "threads", "min fps/cl", "churned"
    );
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut last_frames: Vec<u64> = vec![0; o.clients];
    let mut stalled = false;
    let mut died = false;
    let intervals = o.seconds / o.interval;
    for i in 1..=intervals {
        let due = start + Duration::from_secs(i * o.interval);
        while Instant::now() < due {
            if let Ok(Some(status)) = child.try_wait() {
                eprintln!("soak: the daemon exited: {status}");
                died = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        if died {
            break;
        }
        let at = start.elapsed().as_secs_f64();
        let Some(s) = sample(pid, at) else {
            died = true;
            break;
        };
        let now_frames: Vec<u64> = frames.iter().map(|f| f.load(Ordering::Relaxed)).collect();
        let min_fps = now_frames
            .iter()
            .zip(&last_frames)
            .map(|(now, before)| (now - before) as f64 / o.interval as f64)
            .fold(f64::INFINITY, f64::min);
        last_frames = now_frames;
        // Below half the configured rate for a whole interval is a stall, not jitter.
        if min_fps < o.fps as f64 / 2.0 {
            stalled = true;
        }
        println!(
            "{:>8.0} {:>9} {:>5} {:>7} {:>11.1} {:>9}",
            at,
            s.rss_kib,
            s.fds,
            s.threads,
            min_fps,
            churned.load(Ordering::Relaxed)
        );
        samples.push(s);
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let _ = child.kill();
    let _ = child.wait();

    // The first sample is the baseline: by then every buffer has been grown once.
    let verdict = match samples.as_slice() {
        _ if died => "FAIL: the daemon died".to_string(),
        [] | [_] => "FAIL: too few samples for a verdict (raise --seconds)".to_string(),
        [first, .., last] => {
            let rss_growth = last.rss_kib as i64 - first.rss_kib as i64;
            let slope = rss_slope_kib_per_hour(&samples[..]);
            let growing =
                last.fds > first.fds + 2 || last.threads > first.threads || rss_growth > 1024;
            format!(
                "{}: RSS {} -> {} KiB ({rss_growth:+} KiB, trend {slope:+.0} KiB/h), fds {} -> {}, \
                 threads {} -> {}{}",
                if growing { "GROWING" } else { "flat" },
                first.rss_kib,
                last.rss_kib,
                first.fds,
                last.fds,
                first.threads,
                last.threads,
                if stalled {
                    "; a client stalled (below half the frame rate for an interval)"
                } else {
                    ""
                }
            )
        }
    };
    println!("verdict: {verdict}");
    if !verdict.starts_with("flat") || stalled {
        std::process::exit(1);
    }
}
