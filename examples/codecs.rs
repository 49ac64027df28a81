//! The codec benchmark of #16: MJPEG against H.264 at equal quality, in this process, and the
//! late joiner's wait for its first H.264 picture, against the release daemon.
//!
//! **Codecs.** For each scene (`pattern`, the moving test pattern; `static-noisy`, a still
//! picture with sensor-like temporal noise) and size, a clip is rendered once with the
//! synthetic source (from its frame 0, every frame) and kept in memory, so that every encode
//! sees the same pictures. Each frame is JPEG-encoded at `--quality` (libjpeg-turbo, the
//! daemon's [`Encoder`]) and decoded again with turbojpeg; the clip is H.264-encoded with the
//! daemon's [`H264Encoder`] (OpenH264, baseline, the daemon's settings and its default
//! keyframe interval of 2 s) and decoded with OpenH264's decoder. Quality is SSIM on luma of
//! each decoded frame against its source picture: 8x8 windows on a 4-pixel grid (the layout
//! of x264's and FFmpeg's `ssim`), uniform weights, the constants of Wang et al. (C1 =
//! (0.01·255)², C2 = (0.03·255)²), averaged over the windows of a frame and then over frames.
//! (FFmpeg's and x264's `ssim` use a 64 times smaller C1, which makes small DC errors in
//! near-black areas count far more; their figures are not comparable with these.) Bytes are
//! the payloads (JPEG, Annex-B access unit) without wire framing. Encode CPU is this thread's
//! CPU clock around each encode call.
//!
//! All figures are over the *measured span* (`--seconds`, default 2 s = one group of
//! pictures, so it holds exactly one keyframe) that follows a warm-up (`--warmup`, default
//! 1 s): the warm-up holds the stream's first keyframe and gives OpenH264's rate control time
//! to settle; it is encoded and decoded but not counted. The H.264 bitrate whose SSIM matches
//! the JPEG's is searched (bracketing in ×4 steps, then interpolation in log bitrate with a
//! bisection safeguard, at most [`MAX_EVALUATIONS`] encodes of the clip) within the daemon's
//! `--h264-bitrate` range; the figure of merit is H.264 bytes ÷ JPEG bytes at that bitrate.
//! OpenH264 runs without frame skipping (as in the daemon), so below some bitrate its output
//! stops shrinking; where even that is better than the JPEG, the ratio is an upper bound
//! (marked `>`).
//!
//! **Late joiner.** The daemon runs with one H.264 client connected; a second client then
//! connects `--joins` times, each after a random part of the keyframe interval, and the time
//! from starting its TCP connect to its first message is measured, in ms and in frame
//! intervals. That message must be an H.264 keyframe (kind 3, flags bit 1) that a fresh
//! OpenH264 decoder decodes.
//!
//! **Default bitrate.** `--recommend WxH@FPS` (default 640x480@15, the daemon's default size
//! and rate) repeats the match there, for the static scene (the figure) and the pattern.
//!
//! Flags: `--sizes 640x480,1280x720,1920x1080`, `--scenes pattern,static-noisy`, `--fps 30`,
//! `--quality 70`, `--seconds 2`, `--warmup 1`, `--tolerance 0.002` (SSIM distance at which
//! the search stops; results within 0.005 count as equal), `--joins 10`,
//! `--join-sizes 640x480,1280x720`, `--recommend 640x480@15` (`none` skips it), `--sweep
//! 100,300,1000` (also print H.264 at these bitrates, for each clip). `none` empties a list.
//! Run with `scripts/bench` (builds the release binaries first). Timing is reported, never
//! asserted; each failure is one line on stderr and makes the exit status 1.

#[path = "support/mod.rs"]
mod support;

use openh264::decoder::Decoder;
use openh264::formats::YUVSource;
use rpi_streamer::capture::draw::I420Image;
use rpi_streamer::capture::test::{TestPattern, TestScene};
use rpi_streamer::capture::{Picture, VideoParams, VideoSource};
use rpi_streamer::encode::h264::{H264Encoder, DEFAULT_BITRATE_KBPS};
use rpi_streamer::encode::h264::{H264EncoderKind, H264Profile, H264Settings, I420};
use rpi_streamer::encode::jpeg::Encoder;
use rustix::time::{clock_gettime, ClockId, Timespec};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The daemon's default `--keyframe-interval`.
const KEYFRAME_INTERVAL: Duration = Duration::from_secs(2);
/// The daemon's `--h264-bitrate` range, kbit/s: the search stays inside it.
const BITRATE_RANGE: (u32, u32) = (100, 50_000);
/// SSIM distance within which two codecs count as equal (issue #16).
const EQUAL_SSIM: f64 = 0.005;
/// Most encodes of one clip while searching for the matching bitrate.
const MAX_EVALUATIONS: usize = 10;
/// Issue #16's targets for H.264 bytes ÷ MJPEG bytes at equal SSIM, at 1280x720.
const RATIO_TARGETS: [(TestScene, f64); 2] =
    [(TestScene::StaticNoisy, 0.1), (TestScene::Pattern, 0.6)];
/// Sizes OpenH264 must encode in real time on one core (issue #16).
const REAL_TIME_SIZES: [(u32, u32); 2] = [(640, 480), (1280, 720)];
/// A late joiner's first decodable picture should arrive within this many frame intervals.
const JOIN_TARGET_INTERVALS: f64 = 2.0;

type Size = (u32, u32);

struct Options {
    sizes: Vec<Size>,
    scenes: Vec<TestScene>,
    fps: u32,
    quality: u8,
    seconds: f64,
    warmup: f64,
    tolerance: f64,
    joins: usize,
    join_sizes: Vec<Size>,
    recommend: Option<(Size, u32)>,
    sweep: Vec<u32>,
}

fn parse_size(s: &str) -> Result<Size, String> {
    let (w, h) = s.split_once('x').ok_or(format!("size {s:?}: want WxH"))?;
    let dim = |v: &str| v.parse::<u32>().map_err(|e| format!("size {s:?}: {e}"));
    let size = (dim(w)?, dim(h)?);
    if size.0 < 16 || size.1 < 16 || size.0 % 2 == 1 || size.1 % 2 == 1 {
        return Err(format!("size {s:?}: want even sides of at least 16"));
    }
    Ok(size)
}

fn parse_list<T>(value: &str, item: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
    if value.is_empty() || value == "none" {
        return Ok(Vec::new());
    }
    value.split(',').map(item).collect()
}

fn parse_options() -> Result<Options, String> {
    let mut o = Options {
        sizes: vec![(640, 480), (1280, 720), (1920, 1080)],
        scenes: vec![TestScene::Pattern, TestScene::StaticNoisy],
        fps: 30,
        quality: 70,
        seconds: KEYFRAME_INTERVAL.as_secs_f64(),
        warmup: 1.0,
        tolerance: 0.002,
        joins: 10,
        join_sizes: vec![(640, 480), (1280, 720)],
        recommend: Some(((640, 480), 15)),
        sweep: Vec::new(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--sizes" => o.sizes = parse_list(value, parse_size)?,
            "--join-sizes" => o.join_sizes = parse_list(value, parse_size)?,
            "--scenes" => {
                o.scenes = parse_list(value, |s| {
                    TestScene::from_name(s).ok_or(format!("{flag}: unknown scene {s:?}"))
                })?
            }
            "--fps" => o.fps = value.parse().map_err(|e| bad(&e))?,
            "--quality" => o.quality = value.parse().map_err(|e| bad(&e))?,
            "--seconds" => o.seconds = value.parse().map_err(|e| bad(&e))?,
            "--warmup" => o.warmup = value.parse().map_err(|e| bad(&e))?,
            "--tolerance" => o.tolerance = value.parse().map_err(|e| bad(&e))?,
            "--joins" => o.joins = value.parse().map_err(|e| bad(&e))?,
            "--sweep" => o.sweep = parse_list(value, |k| k.parse().map_err(|e| bad(&e)))?,
            "--recommend" if value == "none" => o.recommend = None,
            "--recommend" => {
                let (size, fps) = value.split_once('@').ok_or(bad(&"want WxH@FPS"))?;
                o.recommend = Some((parse_size(size)?, fps.parse().map_err(|e| bad(&e))?));
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if o.fps == 0 || o.seconds <= 0.0 || o.warmup < 0.0 {
        return Err("--fps and --seconds must be positive, --warmup not negative".into());
    }
    if !(0.0..=EQUAL_SSIM).contains(&o.tolerance) {
        return Err(format!("--tolerance must be within 0..={EQUAL_SSIM}"));
    }
    Ok(o)
}

fn cpu_between(a: Timespec, b: Timespec) -> Duration {
    let nanos = (b.tv_sec - a.tv_sec) as i128 * 1_000_000_000 + (b.tv_nsec - a.tv_nsec) as i128;
    Duration::from_nanos(nanos.max(0) as u64)
}

fn thread_cpu() -> Timespec {
    clock_gettime(ClockId::ThreadCPUTime)
}

fn label((w, h): Size) -> String {
    format!("{w}x{h}")
}

/// Mean SSIM of two luma planes of `w`×`h`: 8x8 windows on a 4-pixel grid (x264's and
/// FFmpeg's layout), uniform weights, Wang et al.'s constants for 8-bit samples.
fn ssim(a: &[u8], a_stride: usize, b: &[u8], b_stride: usize, (w, h): (usize, usize)) -> f64 {
    const C1: f64 = (0.01 * 255.0) * (0.01 * 255.0);
    const C2: f64 = (0.03 * 255.0) * (0.03 * 255.0);
    let (bw, bh) = (w / 4, h / 4);
    if bw < 2 || bh < 2 {
        return f64::NAN;
    }
    // Per 4x4 block: Σa, Σb, Σ(a² + b²), Σab.
    let mut blocks = vec![[0u32; 4]; bw * bh];
    for y in 0..bh * 4 {
        let (ra, rb) = (&a[y * a_stride..][..bw * 4], &b[y * b_stride..][..bw * 4]);
        let row = &mut blocks[(y / 4) * bw..][..bw];
        for (block, (pa, pb)) in row.iter_mut().zip(ra.chunks(4).zip(rb.chunks(4))) {
            for (&x, &y) in pa.iter().zip(pb) {
                let (x, y) = (u32::from(x), u32::from(y));
                block[0] += x;
                block[1] += y;
                block[2] += x * x + y * y;
                block[3] += x * y;
            }
        }
    }
    let mut total = 0.0;
    for by in 0..bh - 1 {
        for bx in 0..bw - 1 {
            let mut s = [0u32; 4];
            for i in [
                by * bw + bx,
                by * bw + bx + 1,
                (by + 1) * bw + bx,
                (by + 1) * bw + bx + 1,
            ] {
                for (sum, part) in s.iter_mut().zip(blocks[i]) {
                    *sum += part;
                }
            }
            let n = 64.0;
            let (ma, mb) = (f64::from(s[0]) / n, f64::from(s[1]) / n);
            let variances = f64::from(s[2]) / n - ma * ma - mb * mb;
            let covariance = f64::from(s[3]) / n - ma * mb;
            total += (2.0 * ma * mb + C1) * (2.0 * covariance + C2)
                / ((ma * ma + mb * mb + C1) * (variances + C2));
        }
    }
    total / ((bw - 1) * (bh - 1)) as f64
}

/// Frames of one scene at one size, rendered once so that every encode sees the same ones.
struct Clip {
    scene: TestScene,
    size: Size,
    fps: u32,
    frames: Vec<I420Image>,
    /// Frames before the measured span.
    warmup: usize,
}

impl Clip {
    /// Renders `warmup + seconds` worth of frames, frame 0 first, unpaced (as fast as they
    /// draw): every run shows the same pictures (but for the caption's clock).
    fn render(
        scene: TestScene,
        size: Size,
        fps: u32,
        warmup: f64,
        seconds: f64,
    ) -> Result<Clip, String> {
        let params = VideoParams {
            scene,
            ..VideoParams::at(size.0, size.1, fps)
        };
        let warmup = (warmup * f64::from(fps)).round() as usize;
        let count = warmup + ((seconds * f64::from(fps)).round() as usize).max(1);
        let mut source = TestPattern::unpaced(&params).map_err(|e| e.to_string())?;
        let mut frames = Vec::with_capacity(count);
        while frames.len() < count {
            let frame = source
                .next_frame()
                .map_err(|e| e.to_string())?
                .ok_or("the unpaced test pattern gave no frame")?;
            let Picture::I420 {
                width,
                height,
                planes,
                strides,
            } = frame.picture
            else {
                return Err("the test pattern gave no I420 picture".into());
            };
            let mut image = I420Image::new(width, height);
            let w = width as usize;
            for (dst, src, stride, row) in [
                (&mut image.y, planes[0], strides[0], w),
                (&mut image.u, planes[1], strides[1], w / 2),
                (&mut image.v, planes[2], strides[2], w / 2),
            ] {
                for (d, s) in dst.chunks_mut(row).zip(src.chunks(stride)) {
                    d.copy_from_slice(&s[..row]);
                }
            }
            frames.push(image);
        }
        Ok(Clip {
            scene,
            size,
            fps,
            frames,
            warmup,
        })
    }

    fn measured(&self) -> usize {
        self.frames.len() - self.warmup
    }

    fn label(&self) -> String {
        format!("{} {}@{}", self.scene.as_str(), label(self.size), self.fps)
    }
}

/// One codec's figures over a clip's measured span.
#[derive(Clone, Copy, Debug)]
struct Figures {
    encode_ms: f64,
    bytes: f64,
    ssim: f64,
    /// Largest keyframe in the span (H.264), bytes.
    key_bytes: usize,
}

fn jpeg_figures(clip: &Clip, quality: u8) -> Result<Figures, String> {
    let mut encoder = Encoder::new(quality).map_err(|e| e.to_string())?;
    let mut decoder = turbojpeg::Decompressor::new().map_err(|e| format!("turbojpeg: {e}"))?;
    let (w, h) = (clip.size.0 as usize, clip.size.1 as usize);
    let mut yuv = turbojpeg::YuvImage {
        pixels: vec![
            0;
            turbojpeg::yuv_pixels_len(w, 1, h, turbojpeg::Subsamp::Sub2x2)
                .map_err(|e| format!("turbojpeg: {e}"))?
        ],
        width: w,
        align: 1,
        height: h,
        subsamp: turbojpeg::Subsamp::Sub2x2,
    };
    let (mut cpu, mut bytes, mut ssim_sum) = (Duration::ZERO, 0, 0.0);
    for image in &clip.frames[clip.warmup..] {
        let t0 = thread_cpu();
        let jpeg = encoder
            .encode(&image.picture())
            .map_err(|e| e.to_string())?;
        cpu += cpu_between(t0, thread_cpu());
        bytes += jpeg.len();
        decoder
            .decompress_to_yuv(&jpeg, yuv.as_deref_mut())
            .map_err(|e| format!("turbojpeg decoding our own JPEG: {e}"))?;
        // With align 1 the Y plane comes first, `w` bytes a row.
        ssim_sum += ssim(&image.y, w, &yuv.pixels, w, (w, h));
    }
    let n = clip.measured() as f64;
    Ok(Figures {
        encode_ms: cpu.as_secs_f64() * 1000.0 / n,
        bytes: bytes as f64 / n,
        ssim: ssim_sum / n,
        key_bytes: 0,
    })
}

fn h264_figures(clip: &Clip, kbps: u32) -> Result<Figures, String> {
    let settings = H264Settings {
        encoder: H264EncoderKind::Software,
        bitrate_kbps: kbps,
        keyframe_interval: KEYFRAME_INTERVAL,
        profile: H264Profile::Baseline,
    };
    let mut encoder = H264Encoder::new(&settings, clip.fps).map_err(|e| e.to_string())?;
    let mut decoder = Decoder::new().map_err(|e| format!("OpenH264 decoder: {e}"))?;
    let (w, h) = (clip.size.0 as usize, clip.size.1 as usize);
    // What a viewer sees: the last decoded picture (a frame the encoder skips shows it again).
    let mut shown: Vec<u8> = Vec::new();
    let (mut cpu, mut bytes, mut ssim_sum, mut key_bytes) = (Duration::ZERO, 0, 0.0, 0);
    for (i, image) in clip.frames.iter().enumerate() {
        let picture = I420 {
            width: image.width,
            height: image.height,
            planes: [&image.y, &image.u, &image.v],
            strides: [w, w / 2, w / 2],
        };
        let millis = i as u64 * 1000 / u64::from(clip.fps);
        let t0 = thread_cpu();
        let unit = encoder
            .encode(picture, millis, false)
            .map_err(|e| e.to_string())?;
        let t1 = thread_cpu();
        if let Some(unit) = &unit {
            let decoded = decoder
                .decode(&unit.data)
                .map_err(|e| format!("OpenH264 decoder, frame {i}: {e}"))?
                .ok_or(format!("OpenH264 decoder gave no picture for frame {i}"))?;
            if decoded.dimensions() != (w, h) {
                return Err(format!(
                    "decoded frame {i} is {:?}, not {w}x{h}",
                    decoded.dimensions()
                ));
            }
            let stride = decoded.strides().0;
            shown.clear();
            for row in decoded.y().chunks(stride).take(h) {
                shown.extend_from_slice(&row[..w]);
            }
        }
        if i < clip.warmup {
            continue;
        }
        if shown.is_empty() {
            return Err(format!("no picture decoded by frame {i}"));
        }
        cpu += cpu_between(t0, t1);
        if let Some(unit) = &unit {
            bytes += unit.data.len();
            if unit.keyframe {
                key_bytes = key_bytes.max(unit.data.len());
            }
        }
        ssim_sum += ssim(&image.y, w, &shown, w, (w, h));
    }
    let n = clip.measured() as f64;
    Ok(Figures {
        encode_ms: cpu.as_secs_f64() * 1000.0 / n,
        bytes: bytes as f64 / n,
        ssim: ssim_sum / n,
        key_bytes,
    })
}

/// The H.264 run whose SSIM is closest to the target, and how it relates to it.
struct Matched {
    kbps: u32,
    figures: Figures,
    evaluations: usize,
}

impl Matched {
    /// `=` within [`EQUAL_SSIM`] of `target`; `>` better even at the lowest bitrate tried
    /// (the ratio is an upper bound); `<` worse even at the highest (a lower bound).
    fn relation(&self, target: f64) -> char {
        let d = self.figures.ssim - target;
        if d.abs() <= EQUAL_SSIM {
            '='
        } else if d > 0.0 {
            '>'
        } else {
            '<'
        }
    }
}

/// Searches the bitrate at which H.264's SSIM on `clip` is `target` (within `tolerance`).
fn match_ssim(
    clip: &Clip,
    target: f64,
    tolerance: f64,
    start_kbps: f64,
) -> Result<Matched, String> {
    let (min, max) = (f64::from(BITRATE_RANGE.0), f64::from(BITRATE_RANGE.1));
    // Highest bitrate known to fall short of the target, lowest known to reach it.
    let mut below: Option<(f64, f64)> = None;
    let mut above: Option<(f64, f64)> = None;
    let mut best: Option<Matched> = None;
    let mut kbps = start_kbps.clamp(min, max).round();
    for evaluations in 1..=MAX_EVALUATIONS {
        let figures = h264_figures(clip, kbps as u32)?;
        let closer = best
            .as_ref()
            .is_none_or(|b| (figures.ssim - target).abs() < (b.figures.ssim - target).abs());
        if closer {
            best = Some(Matched {
                kbps: kbps as u32,
                figures,
                evaluations,
            });
        }
        if let Some(b) = best.as_mut() {
            b.evaluations = evaluations;
        }
        if (figures.ssim - target).abs() <= tolerance {
            break;
        }
        if figures.ssim < target {
            below = Some((kbps, figures.ssim));
        } else {
            above = Some((kbps, figures.ssim));
        }
        let next = match (below, above) {
            (Some((lo, s_lo)), Some((hi, s_hi))) => {
                // Interpolate in log bitrate, kept inside the middle of the bracket.
                let (llo, lhi) = (lo.ln(), hi.ln());
                let t = ((target - s_lo) / (s_hi - s_lo)).clamp(0.15, 0.85);
                (llo + t * (lhi - llo)).exp()
            }
            (Some((lo, _)), None) if lo < max => (lo * 4.0).min(max),
            (None, Some((hi, _))) if hi > min => (hi / 4.0).max(min),
            // Out of the flag's range: the target cannot be met inside it.
            _ => break,
        }
        .round();
        if next == kbps
            || below
                .zip(above)
                .is_some_and(|((lo, _), (hi, _))| hi - lo <= 1.0)
        {
            break;
        }
        kbps = next;
    }
    best.ok_or("no H.264 run".into())
}

/// JPEG's figures and the H.264 run matched to its SSIM, for one clip.
struct Row {
    clip_label: String,
    scene: TestScene,
    size: Size,
    fps: u32,
    jpeg: Figures,
    h264: Matched,
    /// `--sweep`: H.264 at fixed bitrates.
    sweep: Vec<(u32, Figures)>,
}

impl Row {
    fn ratio(&self) -> f64 {
        self.h264.figures.bytes / self.jpeg.bytes
    }
}

fn compare(clip: &Clip, o: &Options) -> Result<Row, String> {
    let jpeg = jpeg_figures(clip, o.quality)?;
    // Start the search at a power of two near a tenth of the JPEG stream's bitrate, so that
    // runs whose JPEG figures differ a little still try the same bitrates.
    let jpeg_kbps = jpeg.bytes * 8.0 * f64::from(clip.fps) / 1000.0;
    let start = (0.1 * jpeg_kbps).log2().round().exp2();
    let h264 = match_ssim(clip, jpeg.ssim, o.tolerance, start)?;
    let sweep = o
        .sweep
        .iter()
        .map(|&kbps| h264_figures(clip, kbps).map(|f| (kbps, f)))
        .collect::<Result<_, _>>()?;
    Ok(Row {
        clip_label: clip.label(),
        scene: clip.scene,
        size: clip.size,
        fps: clip.fps,
        jpeg,
        h264,
        sweep,
    })
}

/// The span's keyframe size, `-` when the span holds none (shorter than a keyframe interval).
fn key_label(f: &Figures) -> String {
    match f.key_bytes {
        0 => "-".into(),
        n => n.to_string(),
    }
}

/// The `--sweep` lines of a row: H.264 at each bitrate asked for.
fn print_sweep(r: &Row) {
    for (kbps, f) in &r.sweep {
        println!(
            "  {} at {kbps:>5} kbit/s set: {:>5.0} out, {:>7.0} B/frame (key {:>6}), SSIM {:.4}, \
             {:.3} ms/frame, ratio {:.3}",
            r.clip_label,
            f.bytes * 8.0 * f64::from(r.fps) / 1000.0,
            f.bytes,
            key_label(f),
            f.ssim,
            f.encode_ms,
            f.bytes / r.jpeg.bytes
        );
    }
}

fn print_row_header() {
    println!(
        "{:<23} {:>7} {:>8} {:>6}  {:>6} {:>6} {:>7} {:>7} {:>7} {:>6} {:>1} {:>5} {:>6}",
        "scene size@fps",
        "jpeg ms",
        "jpeg B",
        "SSIM",
        "kbit/s",
        "(out)",
        "h264 ms",
        "h264 B",
        "key B",
        "SSIM",
        "",
        "evals",
        "ratio"
    );
}

fn print_row(r: &Row) {
    let h = &r.h264.figures;
    println!(
        "{:<23} {:>7.3} {:>8.0} {:>6.4}  {:>6} {:>6.0} {:>7.3} {:>7.0} {:>7} {:>6.4} {:>1} {:>5} {:>6.3}",
        r.clip_label,
        r.jpeg.encode_ms,
        r.jpeg.bytes,
        r.jpeg.ssim,
        r.h264.kbps,
        h.bytes * 8.0 * f64::from(r.fps) / 1000.0,
        h.encode_ms,
        h.bytes,
        key_label(h),
        h.ssim,
        r.h264.relation(r.jpeg.ssim),
        r.h264.evaluations,
        r.ratio()
    );
}

fn verdict(pass: bool) -> &'static str {
    if pass {
        "PASS"
    } else {
        "MISS"
    }
}

fn print_targets(rows: &[Row], fps: u32) {
    for (scene, limit) in RATIO_TARGETS {
        let Some(r) = rows
            .iter()
            .find(|r| r.scene == scene && r.size == (1280, 720))
        else {
            continue;
        };
        let relation = r.h264.relation(r.jpeg.ssim);
        println!(
            "target: 1280x720 {}: H.264 ÷ MJPEG bytes at equal SSIM ≤ {limit}: {:.3} (SSIM {:.4} \
             vs {:.4}) {}",
            scene.as_str(),
            r.ratio(),
            r.h264.figures.ssim,
            r.jpeg.ssim,
            verdict(r.ratio() <= limit && relation != '<')
        );
    }
    let budget = 1000.0 / f64::from(fps);
    for size in REAL_TIME_SIZES {
        let here: Vec<&Row> = rows.iter().filter(|r| r.size == size).collect();
        let Some(worst) = here
            .iter()
            .map(|r| r.h264.figures.encode_ms)
            .max_by(f64::total_cmp)
        else {
            continue;
        };
        let each: Vec<String> = here
            .iter()
            .map(|r| format!("{} {:.1} ms", r.scene.as_str(), r.h264.figures.encode_ms))
            .collect();
        println!(
            "target: OpenH264 {}@{fps} in real time on one core (encode ≤ {budget:.1} ms/frame): \
             {} {}",
            label(size),
            each.join(", "),
            verdict(worst <= budget)
        );
    }
}

/// One late joiner: connect → first message, and what that message was.
struct Join {
    ms: f64,
    /// Of which the TCP connect and WebSocket handshake.
    handshake_ms: f64,
    keyframe: bool,
    decodable: bool,
    /// The keyframe was captured before the client connected (mostly: a replayed group).
    captured_before: bool,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn h264_url(port: u16) -> String {
    format!("ws://127.0.0.1:{port}/stream?video=h264&format=binary")
}

type Socket = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>;

fn connect(port: u16) -> Result<Socket, String> {
    let (ws, _) = tungstenite::connect(h264_url(port)).map_err(|e| format!("connecting: {e}"))?;
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
        let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
    }
    Ok(ws)
}

/// The next binary message (pings and anything else skipped).
fn next_binary(ws: &mut Socket) -> Result<tungstenite::Bytes, String> {
    loop {
        match ws.read().map_err(|e| format!("reading: {e}"))? {
            tungstenite::Message::Binary(b) if b.len() >= 16 => return Ok(b),
            tungstenite::Message::Close(c) => return Err(format!("closed by the daemon: {c:?}")),
            _ => {}
        }
    }
}

fn late_joins(o: &Options, (w, h): Size) -> Result<Vec<Join>, String> {
    let (mut child, port) = support::start_test_daemon((w, h), o.fps, o.quality, &[])?;
    let result: Result<Vec<Join>, String> = (|| {
        // The client that keeps the H.264 stage running; joiners come on top of it.
        let mut first = connect(port)?;
        next_binary(&mut first)?;
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) && next_binary(&mut first).is_ok() {}
                let _ = first.close(None);
            })
        };
        std::thread::sleep(Duration::from_secs(1));
        let mut random = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            | 1;
        let mut joins = Vec::new();
        for _ in 0..o.joins {
            // xorshift: a random point of the group of pictures.
            random ^= random << 13;
            random ^= random >> 7;
            random ^= random << 17;
            let wait = KEYFRAME_INTERVAL.mul_f64((random >> 11) as f64 / (1u64 << 53) as f64);
            std::thread::sleep(wait);
            let (started, started_unix) = (Instant::now(), unix_now());
            let mut ws = connect(port)?;
            let handshake_ms = started.elapsed().as_secs_f64() * 1000.0;
            let message = next_binary(&mut ws)?;
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            let _ = ws.close(None);
            let ts = f64::from_le_bytes(message[4..12].try_into().unwrap_or_default());
            let mut decoder = Decoder::new().map_err(|e| format!("OpenH264 decoder: {e}"))?;
            joins.push(Join {
                ms,
                handshake_ms,
                keyframe: message[0] == 3 && message[1] & 2 != 0,
                decodable: matches!(decoder.decode(&message[16..]), Ok(Some(_))),
                captured_before: ts < started_unix,
            });
        }
        stop.store(true, Ordering::Relaxed);
        let _ = reader.join();
        Ok(joins)
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn print_joins(size: Size, fps: u32, joins: &[Join]) {
    let interval_ms = 1000.0 / f64::from(fps);
    let sorted = |f: fn(&Join) -> f64| {
        let mut v: Vec<f64> = joins.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let (ms, handshake) = (sorted(|j| j.ms), sorted(|j| j.handshake_ms));
    let (median, max) = (ms[ms.len() / 2], ms[ms.len() - 1]);
    let good = joins.iter().filter(|j| j.keyframe && j.decodable).count();
    let each: Vec<String> = joins
        .iter()
        .map(|j| format!("{:.1}{}", j.ms, if j.captured_before { "r" } else { "" }))
        .collect();
    println!(
        "late joiner {}@{fps}: {} joins, connect → first message median {median:.1} ms ({:.2} \
         intervals), max {max:.1} ms ({:.2} intervals), of which connect + handshake median \
         {:.1} ms; {good} of {} first messages were decodable keyframes; target ≤ \
         {JOIN_TARGET_INTERVALS} intervals: {}",
        label(size),
        joins.len(),
        median / interval_ms,
        max / interval_ms,
        handshake[handshake.len() / 2],
        joins.len(),
        verdict(max <= JOIN_TARGET_INTERVALS * interval_ms && good == joins.len())
    );
    println!(
        "  each (ms; r = its keyframe was captured before the connect: the current group of \
         pictures replayed, or a forced keyframe of a frame already in hand): {}",
        each.join(" ")
    );
}

fn main() {
    let o = match parse_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("codecs: {e}");
            std::process::exit(2);
        }
    };
    let mut failed = false;
    let mut fail = |what: &str, e: String| {
        eprintln!("codecs: {what}: {e}");
        failed = true;
    };
    println!(
        "codec benchmark: MJPEG q{} (libjpeg-turbo) vs H.264 (OpenH264 baseline, keyframe every \
         {} s) at the bitrate whose SSIM matches; {} fps; figures over {} s after a {} s warm-up",
        o.quality,
        KEYFRAME_INTERVAL.as_secs(),
        o.fps,
        o.seconds,
        o.warmup
    );
    let mut rows = Vec::new();
    if !o.sizes.is_empty() && !o.scenes.is_empty() {
        print_row_header();
    }
    for &size in &o.sizes {
        for &scene in &o.scenes {
            let what = format!("{} {}", scene.as_str(), label(size));
            match Clip::render(scene, size, o.fps, o.warmup, o.seconds)
                .and_then(|c| compare(&c, &o))
            {
                Ok(row) => {
                    print_row(&row);
                    print_sweep(&row);
                    rows.push(row);
                }
                Err(e) => fail(&what, e),
            }
        }
    }
    if !rows.is_empty() {
        println!(
            "ms: encode CPU per frame (this thread's clock, encode call only); B: payload bytes \
             per frame (JPEG / Annex-B access unit), key B: the span's keyframe; SSIM: luma, 8x8 \
             windows on a 4-px grid, mean over frames; kbit/s: the H.264 bitrate set, (out): \
             what came out; `=`: H.264 SSIM within {EQUAL_SSIM} of the JPEG's (`>`/`<`: above/ \
             below it at the end of the bitrate range, so the ratio is an upper/lower bound); \
             evals: encodes of the clip in the search; ratio: H.264 B ÷ JPEG B."
        );
        print_targets(&rows, o.fps);
    }
    if let Some((size, fps)) = o.recommend {
        // The figure is the static scene's (a camera on a wall); the pattern's is beside it.
        for scene in [TestScene::StaticNoisy, TestScene::Pattern] {
            let what = format!("default bitrate {} {}@{fps}", scene.as_str(), label(size));
            match Clip::render(scene, size, fps, o.warmup, o.seconds).and_then(|c| compare(&c, &o))
            {
                Ok(r) => {
                    let h = &r.h264.figures;
                    println!(
                        "default --h264-bitrate, {}: H.264 matches MJPEG q{}'s SSIM {:.4} at {} \
                         kbit/s set ({:.0} out, SSIM {:.4} {}, {:.0} B/frame = {:.3} of MJPEG's \
                         {:.0}); the daemon's default is {DEFAULT_BITRATE_KBPS}",
                        r.clip_label,
                        o.quality,
                        r.jpeg.ssim,
                        r.h264.kbps,
                        h.bytes * 8.0 * f64::from(fps) / 1000.0,
                        h.ssim,
                        r.h264.relation(r.jpeg.ssim),
                        h.bytes,
                        r.ratio(),
                        r.jpeg.bytes
                    );
                    print_sweep(&r);
                }
                Err(e) => fail(&what, e),
            }
        }
    }
    if o.joins > 0 {
        for &size in &o.join_sizes {
            match late_joins(&o, size) {
                Ok(joins) => print_joins(size, o.fps, &joins),
                Err(e) => fail(&format!("late joiner {}", label(size)), e),
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
}
