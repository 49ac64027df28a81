//! The per-frame cost of the path the release profile's `opt-level` matters most for: draw a
//! synthetic frame, JPEG-encode it (libjpeg-turbo) and base64-frame it (the seed's text
//! message), in this thread, measured with the thread's CPU clock. No daemon, no sockets, so
//! it runs the same natively and under qemu-user.
//!
//! Used to choose the release opt-level (docs/cross.md): build with e.g.
//! `CARGO_PROFILE_RELEASE_OPT_LEVEL=s cargo run --release --example encode_floor`.
//!
//! Flags: `--frames N` (default 200), `--sizes 640x480,1280x720`, `--quality 70`.

use rpi_streamer::capture::test::TestPattern;
use rpi_streamer::capture::{VideoParams, VideoSource};
use rpi_streamer::encode::jpeg::Encoder;
use rpi_streamer::stream::media::{VideoFrame, BINARY_HEADER_LEN};
use rustix::time::{clock_gettime, ClockId, Timespec};
use std::time::Duration;

fn cpu_between(a: Timespec, b: Timespec) -> Duration {
    let nanos = (b.tv_sec - a.tv_sec) as i128 * 1_000_000_000 + (b.tv_nsec - a.tv_nsec) as i128;
    Duration::from_nanos(nanos.max(0) as u64)
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s.split_once('x').ok_or(format!("size {s:?}: want WxH"))?;
    let dim = |v: &str| v.parse::<u32>().map_err(|e| format!("size {s:?}: {e}"));
    Ok((dim(w)?, dim(h)?))
}

/// (draw, encode, base64 framing) CPU ms per frame, and the mean text message length.
fn measure(
    (w, h): (u32, u32),
    frames: usize,
    quality: u8,
) -> Result<(f64, f64, f64, usize), String> {
    let params = VideoParams::at(w, h, 30);
    let mut source = TestPattern::unpaced(&params).map_err(|e| e.to_string())?;
    let mut encoder = Encoder::new(quality)
        .map_err(|e| e.to_string())?
        .reserving(BINARY_HEADER_LEN);
    let (mut draw, mut encode, mut frame_cpu) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut bytes = 0usize;
    for _ in 0..frames {
        let t0 = clock_gettime(ClockId::ThreadCPUTime);
        let frame = source
            .next_frame()
            .map_err(|e| e.to_string())?
            .ok_or("pattern not ready")?;
        let t1 = clock_gettime(ClockId::ThreadCPUTime);
        let jpeg = encoder.encode(&frame.picture).map_err(|e| e.to_string())?;
        let t2 = clock_gettime(ClockId::ThreadCPUTime);
        let framed = VideoFrame::behind_header(0.0, w, h, jpeg, false);
        bytes += framed.text().len();
        let t3 = clock_gettime(ClockId::ThreadCPUTime);
        draw += cpu_between(t0, t1);
        encode += cpu_between(t1, t2);
        frame_cpu += cpu_between(t2, t3);
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0 / frames as f64;
    Ok((ms(draw), ms(encode), ms(frame_cpu), bytes / frames.max(1)))
}

fn run() -> Result<(), String> {
    let mut frames = 200usize;
    let mut sizes = vec![(640, 480), (1280, 720)];
    let mut quality = 70u8;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--frames" => frames = value.parse().map_err(|e| format!("--frames: {e}"))?,
            "--quality" => quality = value.parse().map_err(|e| format!("--quality: {e}"))?,
            "--sizes" => sizes = value.split(',').map(parse_size).collect::<Result<_, _>>()?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if frames == 0 {
        return Err("--frames must be at least 1".into());
    }
    println!("{frames} frames, quality {quality}; CPU ms per frame");
    for size in sizes {
        let (draw, encode, base64, len) = measure(size, frames, quality)?;
        println!(
            "{:>4}x{:<4} draw {draw:7.3}  jpeg {encode:7.3}  base64 {base64:7.3}  \
             jpeg+base64 {:7.3}  (message {len} bytes)",
            size.0,
            size.1,
            encode + base64
        );
    }
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("encode_floor: {e}");
        std::process::exit(2);
    }
}
