//! The ALSA backend against a real kernel driver: snd-aloop inside the test VM
//! (scripts/vm/run, driven by scripts/checks/vm-alsa). `aplay` plays a known signal into
//! the loopback's playback side; the daemon captures the other side through
//! `--audio-device N` (plughw:N,0); a WebSocket client must receive exactly those samples,
//! with chunk timestamps that advance by 20 ms ± 1 ms at the real rate. Then the daemon is
//! stopped long enough to overrun (counted, recovered), and the card is unplugged (unbind)
//! and plugged back while video keeps streaming.
//!
//! Ignored by default: it needs the loopback card and root; the check runs it in the VM with
//! `--ignored`.
#![cfg(feature = "alsa")]

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RATE: usize = 48_000;
const CHUNK_BYTES: usize = RATE / 50 * 2;

fn loopback_card() -> u32 {
    let cards = std::fs::read_to_string("/proc/asound/cards").expect("read /proc/asound/cards");
    cards
        .lines()
        .find(|l| l.contains("[Loopback"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no Loopback card in:\n{cards}"))
}

fn signal(frames: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(frames * 2);
    for _ in 0..frames {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out.extend_from_slice(&((x >> 16) as i16).to_le_bytes());
    }
    out
}

fn status_of(port: u16) -> String {
    http_get(port, "/status", &[]).text()
}

fn counter(status: &str, name: &str) -> u64 {
    let key = format!("\"{name}\":");
    status
        .split_once(&key)
        .and_then(|(_, rest)| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or_else(|| panic!("no {name} in {status}"))
}

fn guest(args: &[&str]) -> std::thread::JoinHandle<bool> {
    let helper = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/vm/guest");
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    std::thread::spawn(move || {
        Command::new(helper)
            .args(&args)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    })
}

/// (timestamp, pcm, arrival) of each audio message and the count of video frames, over `secs`.
fn collect(ws: &mut Client, secs: f64) -> (Vec<(f64, Vec<u8>, f64)>, usize) {
    let start = Instant::now();
    let (mut audio, mut video) = (Vec::new(), 0);
    while start.elapsed().as_secs_f64() < secs {
        match next_media(ws) {
            Media::Audio(Audio { ts, pcm }) => audio.push((ts, pcm, unix_now())),
            Media::Video(_) => video += 1,
        }
    }
    (audio, video)
}

#[test]
#[ignore = "needs snd-aloop and root: run by scripts/checks/vm-alsa inside the VM"]
fn loopback_capture_is_sample_exact_real_time_and_survives_overrun_and_unplug() {
    let card = loopback_card();
    let dir = std::env::temp_dir();
    let sent = signal(3 * RATE, 0x5eed_1234);
    let file = dir.join("aloop-signal.raw");
    std::fs::write(&file, &sent).expect("write the signal");

    let card_flag = card.to_string();
    let daemon = TestDaemon::new()
        .size(160, 120)
        .fps(5)
        .audio()
        .arg("--audio-device")
        .arg(&card_flag)
        .start();
    let mut ws = daemon.connect("/stream");
    // Let capture settle (silence from the idle loopback), then play.
    let _ = collect(&mut ws, 1.0);
    let mut aplay = Command::new("aplay")
        .args([
            "-q",
            "-D",
            &format!("hw:{card},1,0"),
            "-f",
            "S16_LE",
            "-c",
            "1",
        ])
        .args(["-r", "48000", "-t", "raw"])
        .arg(&file)
        .stdin(Stdio::null())
        .spawn()
        .expect("run aplay");
    // Until aplay is done (it starts slowly under emulation), then one more buffer's worth.
    let started = Instant::now();
    let mut audio = Vec::new();
    let played = loop {
        audio.extend(collect(&mut ws, 0.25).0);
        if let Some(status) = aplay.try_wait().expect("aplay") {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "aplay hangs");
    };
    assert!(played.success(), "aplay failed: {played:?}");
    audio.extend(collect(&mut ws, 0.5).0);

    // Sample-exact: the signal appears once, whole, in the captured stream.
    for (k, (_, pcm, _)) in audio.iter().enumerate() {
        assert_eq!(pcm.len(), CHUNK_BYTES, "chunk {k} is not 20 ms of mono");
    }
    let stream: Vec<u8> = audio.iter().flat_map(|c| c.1.iter().copied()).collect();
    let at = stream
        .windows(64)
        .position(|w| w == &sent[..64])
        .expect("the played signal's start is not in the captured audio");
    assert!(
        stream.len() >= at + sent.len(),
        "capture ended {} bytes into the signal",
        stream.len() - at
    );
    assert!(
        stream[at..at + sent.len()] == sent[..],
        "captured samples differ from the played ones"
    );
    println!(
        "sample-exact: {} bytes found at stream offset {at}",
        sent.len()
    );

    // Timestamps: one chunk apart (±1 ms) in steady state, at the real rate.
    let steps: Vec<f64> = audio.windows(2).map(|p| p[1].0 - p[0].0).collect();
    let (worst_at, worst) = steps
        .iter()
        .enumerate()
        .skip(5)
        .map(|(k, s)| (k, (s - 0.020).abs()))
        .fold((0, 0.0), |a, b| if b.1 > a.1 { b } else { a });
    assert!(
        worst <= 0.001,
        "step {worst_at} is {worst:.6} s off 20 ms; steps around it: {:?}",
        &steps[worst_at.saturating_sub(3)..(worst_at + 4).min(steps.len())]
    );
    // At the real rate: the least-delayed arrivals (robust against a client reading in
    // bursts) keep the same lag behind the stamps from the first third to the last.
    let third = audio.len() / 3;
    let min_lag =
        |part: &[(f64, Vec<u8>, f64)]| part.iter().map(|c| c.2 - c.0).fold(f64::INFINITY, f64::min);
    let (early, late) = (min_lag(&audio[..third]), min_lag(&audio[2 * third..]));
    let between = audio[2 * third].0 - audio[third].0;
    let drift = late - early;
    assert!(
        drift.abs() < 0.01 * between + 0.005,
        "the lag behind the stamps drifts by {drift:.4} s over {between:.2} s"
    );
    let median = median_lag(audio.iter().map(|c| c.2 - c.0).collect());
    assert!(
        (0.019..0.3).contains(&median),
        "chunks arrive a median {median:.4} s after their first sample"
    );
    println!(
        "timestamps: {} chunks, steps within {:.3} ms of 20 ms, lag drift {:.1} ms over {:.2} s, median lag {:.1} ms",
        audio.len(),
        worst * 1e3,
        drift * 1e3,
        between,
        median * 1e3
    );
    let status = status_of(daemon.port);
    assert!(
        status.contains("\"sample_rate\":48000,\"channels\":1"),
        "status: {status}"
    );
    assert!(
        daemon
            .log_text()
            .contains("chunks stamped from driver timestamps"),
        "log:\n{}",
        daemon.log_text()
    );
    let xruns_before = counter(&status, "audio_xruns");

    // Overrun: freeze the daemon for longer than its 0.5 s buffer.
    let pid = rustix::process::Pid::from_raw(daemon.child.id() as i32).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::STOP).expect("SIGSTOP");
    std::thread::sleep(Duration::from_millis(1500));
    rustix::process::kill_process(pid, rustix::process::Signal::CONT).expect("SIGCONT");
    let (after, _) = collect(&mut ws, 1.5);
    assert!(
        after.len() >= 30,
        "{} chunks after the overrun",
        after.len()
    );
    let status = status_of(daemon.port);
    let xruns = counter(&status, "audio_xruns");
    assert!(xruns > xruns_before, "no overrun counted: {status}");
    println!("overrun: audio_xruns {xruns_before} -> {xruns}, audio continued");

    // Unplug: the card goes away (unbind waits until the daemon closes it), video goes on.
    let unplug = guest(&["unplug", "snd_aloop.0"]);
    let (gone_audio, gone_video) = collect(&mut ws, 3.0);
    assert!(unplug.join().unwrap_or(false), "unplug failed");
    assert!(
        gone_video >= 10,
        "only {gone_video} video frames (and {} audio chunks) in 3 s while unplugging; log:\n{}",
        gone_audio.len(),
        daemon.log_text()
    );
    let status = status_of(daemon.port);
    assert!(
        status.contains("\"state\":\"unavailable:"),
        "audio not reported unavailable: {status}"
    );
    println!(
        "unplugged: {} audio chunks then none, {gone_video} video frames in 3 s",
        gone_audio.len()
    );

    // Replug: audio comes back by itself within a few seconds.
    assert!(
        guest(&["replug", "snd_aloop.0"]).join().unwrap_or(false),
        "replug failed"
    );
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut back = 0;
    while back < 25 && Instant::now() < deadline {
        if let Media::Audio(Audio { pcm, .. }) = next_media(&mut ws) {
            assert_eq!(pcm.len(), CHUNK_BYTES);
            back += 1;
        }
    }
    assert!(back >= 25, "audio did not come back after replug");
    assert!(
        daemon
            .log_text()
            .contains("audio source back: ALSA plughw:"),
        "log:\n{}",
        daemon.log_text()
    );
    println!("replugged: audio back");
    daemon.terminate();
}
