//! Ten thousand connect/disconnect cycles against the real daemon on loopback, every way a
//! client can come and go (clean WebSocket close, FIN or RST right after the upgrade, a head
//! cut off halfway, plain HTTP requests, a bare connect), then the daemon's open files,
//! threads and resident memory must be back where they were after warm-up: a leak of one fd,
//! task or buffer per connection would show as thousands.

mod common;

use common::{Daemon, TestDaemon};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use tungstenite::WebSocket;

/// Cycles in the measured run.
const CYCLES: usize = 10_000;
/// Client threads sharing them (the daemon serves all connections on one executor).
const WORKERS: usize = 4;
/// Cycles before the baseline, so lazily grown buffers and pools are already grown.
const WARM_UP: usize = 600;
/// The whole measured run must fit in this (a debug build on 2 busy cores took 2-7 s).
const RUN_LIMIT: Duration = Duration::from_secs(240);

#[derive(Debug, Clone, Copy)]
enum Cycle {
    /// Upgrade, then a clean close handshake.
    CleanClose,
    /// Upgrade, then close the socket without a close frame (FIN).
    DropAfterUpgrade,
    /// Upgrade, then reset the connection (RST, SO_LINGER 0).
    ResetAfterUpgrade,
    /// Half a request head, then close.
    DropMidHead,
    /// A complete plain request (`/status`), read to the end.
    PlainHttp,
    /// Connect and close without sending a byte.
    ConnectOnly,
}

const KINDS: [Cycle; 6] = [
    Cycle::CleanClose,
    Cycle::DropAfterUpgrade,
    Cycle::ResetAfterUpgrade,
    Cycle::DropMidHead,
    Cycle::PlainHttp,
    Cycle::ConnectOnly,
];

fn open(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the daemon");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

fn upgrade(port: u16) -> WebSocket<TcpStream> {
    let url = format!("ws://127.0.0.1:{port}/stream");
    let (ws, response) = tungstenite::client(url.as_str(), open(port)).expect("upgrade");
    assert_eq!(response.status(), 101);
    ws
}

fn run_cycle(port: u16, kind: Cycle) {
    match kind {
        Cycle::CleanClose => {
            let mut ws = upgrade(port);
            ws.close(None).expect("send close");
            // Frames sent before the server saw our close may come first; its close ends it.
            for _ in 0..1000 {
                match ws.read() {
                    Ok(_) => continue,
                    Err(tungstenite::Error::ConnectionClosed) => return,
                    Err(e) => panic!("clean close ended with {e}"),
                }
            }
            panic!("no end to the close handshake");
        }
        Cycle::DropAfterUpgrade => drop(upgrade(port)),
        Cycle::ResetAfterUpgrade => {
            let ws = upgrade(port);
            socket2::SockRef::from(ws.get_ref())
                .set_linger(Some(Duration::ZERO))
                .expect("SO_LINGER");
        }
        Cycle::DropMidHead => {
            let mut s = open(port);
            s.write_all(b"GET /stream HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgr")
                .expect("send half a head");
        }
        Cycle::PlainHttp => {
            let mut s = open(port);
            s.write_all(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                .expect("send request");
            let mut answer = Vec::new();
            s.read_to_end(&mut answer).expect("read the answer");
            assert!(
                answer.starts_with(b"HTTP/1.1 200 OK\r\n"),
                "status answered {:?}",
                String::from_utf8_lossy(&answer[..answer.len().min(80)])
            );
        }
        Cycle::ConnectOnly => drop(open(port)),
    }
}

/// Runs `count` cycles over [`WORKERS`] threads, all kinds interleaved; fails past `limit`.
fn run_cycles(port: u16, count: usize, limit: Duration) -> Duration {
    let start = Instant::now();
    let deadline = start + limit;
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            std::thread::spawn(move || {
                for i in (w..count).step_by(WORKERS) {
                    assert!(
                        Instant::now() < deadline,
                        "cycle {i} not reached within {limit:?}"
                    );
                    run_cycle(port, KINDS[i % KINDS.len()]);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a client worker failed");
    }
    start.elapsed()
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Usage {
    fds: usize,
    threads: usize,
    rss_kib: u64,
}

fn usage(pid: u32) -> Usage {
    let count = |dir: &str| {
        std::fs::read_dir(format!("/proc/{pid}/{dir}"))
            .unwrap_or_else(|e| panic!("/proc/{pid}/{dir}: {e}"))
            .count()
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    Usage {
        fds: count("fd"),
        threads: count("task"),
        rss_kib,
    }
}

/// Stream clients registered, as `/healthz` reports them.
fn clients_connected(daemon: &Daemon) -> Option<u64> {
    let status = daemon.get("/healthz").text();
    let rest = &status[status.find("\"clients\":")? + "\"clients\":".len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Waits (bounded) until no session is left and the fd count has stopped changing.
fn settled_usage(daemon: &Daemon) -> Usage {
    let pid = daemon.child.id();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = usage(pid);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        let now = usage(pid);
        if clients_connected(daemon) == Some(0) && now.fds == last.fds {
            return now;
        }
        last = now;
    }
    last
}

#[test]
fn ten_thousand_connects_and_disconnects_leak_no_fds_threads_or_memory() {
    let daemon = TestDaemon::new()
        .size(160, 120)
        .fps(15)
        .arg("--no-client")
        // Info, not the helpers' debug: two log lines per session are enough.
        .env("RUST_LOG", "info")
        .start();
    run_cycles(daemon.port, WARM_UP, Duration::from_secs(60));
    let baseline = settled_usage(&daemon);

    let took = run_cycles(daemon.port, CYCLES, RUN_LIMIT);
    let after = settled_usage(&daemon);
    eprintln!(
        "{CYCLES} cycles in {:.1} s ({:.0}/s); baseline {baseline:?}, after {after:?}",
        took.as_secs_f64(),
        CYCLES as f64 / took.as_secs_f64()
    );

    assert_eq!(clients_connected(&daemon), Some(0), "sessions left behind");
    assert!(
        after.fds.abs_diff(baseline.fds) <= 2,
        "open fds went from {} to {}",
        baseline.fds,
        after.fds
    );
    assert_eq!(after.threads, baseline.threads, "thread count changed");
    assert!(
        after.rss_kib <= baseline.rss_kib + 2048,
        "RSS grew from {} KiB to {} KiB",
        baseline.rss_kib,
        after.rss_kib
    );
    // And it still streams.
    let mut ws = daemon.connect("/stream");
    let frame = common::next_video(&mut ws);
    assert_eq!(frame.width, 160);
    assert!(
        !daemon.log_text().contains("panicked"),
        "the daemon panicked"
    );
}
