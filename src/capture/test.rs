//! The synthetic source (`--camera-type test`): a moving pattern and a tone with clicks.
//!
//! Both are paced by CLOCK_MONOTONIC from one shared epoch: frame k is due at
//! `epoch + k/fps` and audio sample s at `epoch + s/rate`. Every `fps`-th frame (one per
//! second) is *marked* with a white bar, and the tone carries a click starting exactly at the
//! same instant, so A/V sync can be measured end to end. A late frame is skipped, never
//! bunched: the next frame shown is the one due now.
#![forbid(unsafe_code)]

use super::controls::{ControlInfo, Value};
use super::draw::{clock_text, text_width, I420Image, Yuv, BLACK, WHITE};
use super::{
    AudioBlock, AudioFormat, AudioParams, AudioSource, CaptureError, Frame, VideoParams,
    VideoSource, POLL_TIMEOUT,
};
use crate::clock::MonoTime;
use std::time::Duration;

/// Colours of the region that changes every frame: consecutive frames always differ.
pub const FRAME_PALETTE: [Yuv; 6] = [
    Yuv::from_rgb(255, 0, 0),
    Yuv::from_rgb(0, 255, 0),
    Yuv::from_rgb(0, 0, 255),
    Yuv::from_rgb(255, 255, 0),
    Yuv::from_rgb(0, 255, 255),
    Yuv::from_rgb(255, 0, 255),
];

const BARS: [Yuv; 7] = [
    Yuv::from_rgb(192, 192, 192),
    Yuv::from_rgb(192, 192, 0),
    Yuv::from_rgb(0, 192, 192),
    Yuv::from_rgb(0, 192, 0),
    Yuv::from_rgb(192, 0, 192),
    Yuv::from_rgb(192, 0, 0),
    Yuv::from_rgb(0, 0, 192),
];

/// Side of the per-frame colour square in the top-right corner, as a fraction of the height.
pub fn frame_marker_rect(width: u32, height: u32) -> (u32, u32, u32, u32) {
    let side = (height / 6).max(8) & !1;
    (width - side, 0, side, side)
}

/// The synthetic tone's rate when `--audio-samplerate` does not set one.
pub const TONE_SAMPLE_RATE: u32 = 48_000;

/// Width of the black box behind the caption lines at `scale`.
fn caption_width(lines: &[String], scale: i64) -> i64 {
    lines
        .iter()
        .map(|l| text_width(l, scale))
        .max()
        .unwrap_or(0)
        + 2 * scale
}

/// The caption's text scale: about a sixtieth of the height, smaller where the box would
/// otherwise reach the colour square at `marker_x` (which would cover its last letters).
fn caption_scale(lines: &[String], marker_x: i64, height: i64) -> i64 {
    let mut scale = (height / 60).max(1);
    while scale > 1 && caption_width(lines, scale) > marker_x {
        scale -= 1;
    }
    scale
}

/// Sleeps until `due` or for [`POLL_TIMEOUT`], whichever is first; true if `due` was reached.
fn wait_until(due: MonoTime) -> bool {
    let now = MonoTime::now();
    if now >= due {
        return true;
    }
    let left = due.since(now);
    if left > POLL_TIMEOUT {
        std::thread::sleep(POLL_TIMEOUT);
        return false;
    }
    std::thread::sleep(left);
    true
}

/// What the synthetic source shows (`--test-scene`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestScene {
    /// Scrolling bars, a bouncing box, a caption and the frame markers: every frame differs
    /// a lot (a hard case for inter-frame coding).
    Pattern,
    /// What a camera on a wall sees: a still picture with sensor-like temporal noise (σ ≈ 2.8
    /// levels on luma, ≈ 0.8 on chroma) and only the caption's clock and the corner square
    /// changing. H.264's gain over MJPEG depends on scenes like this one.
    StaticNoisy,
}

impl TestScene {
    /// Every scene, for parsing and for messages that list them.
    pub const ALL: [TestScene; 2] = [TestScene::Pattern, TestScene::StaticNoisy];

    /// The flag's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TestScene::Pattern => "pattern",
            TestScene::StaticNoisy => "static-noisy",
        }
    }

    /// The scene named `name`, if there is one.
    pub fn from_name(name: &str) -> Option<TestScene> {
        TestScene::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// The moving test pattern.
pub struct TestPattern {
    image: I420Image,
    fps: u32,
    epoch: MonoTime,
    next_index: u64,
    /// False for [`TestPattern::unpaced`]: every frame is rendered at once.
    paced: bool,
    scene: TestScene,
    /// The still picture of [`TestScene::StaticNoisy`], rendered once.
    still: Option<I420Image>,
    noise: u64,
    /// `Brightness`, `Contrast`, `Saturation`: libcamera's names, ranges and defaults.
    tone: [f64; 3],
    /// The luma and chroma maps for `tone`, when it is not the identity.
    maps: Option<([u8; 256], [u8; 256])>,
}

/// The test source's controls: (name, min, max, default), as libcamera defines them.
pub const TEST_CONTROLS: [(&str, f64, f64, f64); 3] = [
    // Added to luma: -1 makes the picture black, 1 white.
    ("Brightness", -1.0, 1.0, 0.0),
    // Luma's distance from mid-grey is multiplied by this.
    ("Contrast", 0.0, 32.0, 1.0),
    // Chroma's distance from grey is multiplied by this (0 = black and white).
    ("Saturation", 0.0, 32.0, 1.0),
];

/// The defaults of [`TEST_CONTROLS`]: the picture unchanged.
const NEUTRAL_TONE: [f64; 3] = [TEST_CONTROLS[0].3, TEST_CONTROLS[1].3, TEST_CONTROLS[2].3];

/// The test source's controls with values `tone` (the defaults for `None`).
pub fn controls_at(tone: Option<[f64; 3]>) -> Vec<ControlInfo> {
    let tone = tone.unwrap_or(NEUTRAL_TONE);
    TEST_CONTROLS
        .iter()
        .zip(tone)
        .map(|(&(name, min, max, default), value)| {
            ControlInfo::float(name, (min, max), default, value)
        })
        .collect()
}

/// The byte maps for brightness `b`, contrast `c` and saturation `s`.
fn tone_maps([b, c, s]: [f64; 3]) -> ([u8; 256], [u8; 256]) {
    let (mut luma, mut chroma) = ([0u8; 256], [0u8; 256]);
    for i in 0..256 {
        let x = i as f64;
        luma[i] = ((x - 128.0) * c + 128.0 + b * 255.0)
            .round()
            .clamp(0.0, 255.0) as u8;
        chroma[i] = ((x - 128.0) * s + 128.0).round().clamp(0.0, 255.0) as u8;
    }
    (luma, chroma)
}

/// xorshift64*: fast, good enough for noise, the same sequence every run.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// Adds noise to every sample of `plane`: the sum of two uniform steps in 0..=span, centred.
fn add_noise(plane: &mut [u8], span: u8, state: &mut u64) {
    let m = u64::from(span) + 1;
    for pair in plane.chunks_mut(4) {
        let mut r = next_random(state);
        for px in pair {
            let n = (r & 0xff) % m + ((r >> 8) & 0xff) % m;
            r >>= 16;
            *px = (i16::from(*px) + n as i16 - i16::from(span)).clamp(0, 255) as u8;
        }
    }
}

impl TestPattern {
    /// A pattern at the requested size and rate, frame 0 due at `epoch`.
    pub fn new(params: &VideoParams, epoch: MonoTime) -> Result<TestPattern, CaptureError> {
        Ok(TestPattern {
            image: I420Image::new(params.width, params.height),
            fps: params.fps.max(1),
            epoch,
            next_index: 0,
            paced: true,
            scene: params.scene,
            still: None,
            noise: 0x9E37_79B9_7F4A_7C15,
            tone: NEUTRAL_TONE,
            maps: None,
        })
    }

    /// A pattern that renders each frame as soon as it is asked for, frames 0, 1, 2, ...
    /// stamped with the time they were rendered: for measuring drawing and encoding
    /// (benchmarks).
    pub fn unpaced(params: &VideoParams) -> Result<TestPattern, CaptureError> {
        let mut pattern = TestPattern::new(params, MonoTime::now())?;
        pattern.paced = false;
        Ok(pattern)
    }

    fn due(&self, index: u64) -> MonoTime {
        self.epoch.later_by(Duration::from_nanos(
            index * 1_000_000_000 / u64::from(self.fps),
        ))
    }

    fn render(&mut self, index: u64, captured: MonoTime) {
        if self.scene == TestScene::StaticNoisy {
            return self.render_still(index, captured);
        }
        self.render_pattern(index, captured);
        // The once-a-second mark: its timestamp equals the audio click's.
        if index.is_multiple_of(u64::from(self.fps)) {
            let (w, h) = (i64::from(self.image.width), i64::from(self.image.height));
            self.image.fill(0, h - h / 10, w, h / 10, WHITE);
        }
        self.apply_tone();
    }

    /// Brightness, contrast and saturation, as a camera's ISP would apply them.
    fn apply_tone(&mut self) {
        if let Some((luma, chroma)) = &self.maps {
            let img = &mut self.image;
            img.y.iter_mut().for_each(|p| *p = luma[usize::from(*p)]);
            for plane in [&mut img.u, &mut img.v] {
                plane.iter_mut().for_each(|p| *p = chroma[usize::from(*p)]);
            }
        }
    }

    /// The still scene: frame 0 of the pattern, then per frame fresh noise, the caption and
    /// the corner square.
    fn render_still(&mut self, index: u64, captured: MonoTime) {
        if self.still.is_none() {
            self.render_pattern(0, captured);
            self.still = Some(self.image.clone());
        }
        if let Some(still) = &self.still {
            self.image.y.copy_from_slice(&still.y);
            self.image.u.copy_from_slice(&still.u);
            self.image.v.copy_from_slice(&still.v);
        }
        add_noise(&mut self.image.y, 6, &mut self.noise);
        add_noise(&mut self.image.u, 2, &mut self.noise);
        add_noise(&mut self.image.v, 2, &mut self.noise);
        self.draw_overlay(index, captured);
        self.apply_tone();
    }

    fn render_pattern(&mut self, index: u64, captured: MonoTime) {
        let (w, h) = (i64::from(self.image.width), i64::from(self.image.height));
        let img = &mut self.image;
        // Colour bars scrolling left by 4 px a frame.
        let bar_w = (w / BARS.len() as i64).max(2);
        let shift = (index as i64 * 4) % (bar_w * BARS.len() as i64);
        // Draw one 2-pixel band and copy it down: a third of the cost of filling every bar.
        for i in 0..=BARS.len() as i64 {
            let x = i * bar_w - shift;
            img.fill(x, 0, bar_w, 2, BARS[(i as usize) % BARS.len()]);
        }
        img.repeat_first_band();
        // A box bouncing across the lower half.
        let span = (w - h / 8).max(1);
        let pos = (index as i64 * 8) % (2 * span);
        let bx = if pos < span { pos } else { 2 * span - pos };
        img.fill(bx, h * 5 / 8, h / 8, h / 8, BLACK);
        self.draw_overlay(index, captured);
    }

    /// Caption (frame number, capture time) and the per-frame colour square.
    fn draw_overlay(&mut self, index: u64, captured: MonoTime) {
        let h = i64::from(self.image.height);
        let img = &mut self.image;
        // Frame number and capture time, big enough to read in a screenshot.
        let lines = [
            "RPI-STREAMER TEST".to_string(),
            format!("FRAME {index:06}"),
            clock_text(captured.to_unix()),
        ];
        let (marker_x, _, _, _) = frame_marker_rect(img.width, img.height);
        let scale = caption_scale(&lines, marker_x.into(), h);
        let line = 9 * scale;
        img.fill(
            0,
            0,
            caption_width(&lines, scale),
            line * lines.len() as i64 + scale,
            BLACK,
        );
        for (i, l) in lines.iter().enumerate() {
            img.text(scale, scale + i as i64 * line, scale, l, WHITE);
        }
        // The per-frame colour square, drawn last so nothing covers it.
        let (mx, my, ms, _) = frame_marker_rect(img.width, img.height);
        let colour = FRAME_PALETTE[(index % FRAME_PALETTE.len() as u64) as usize];
        img.fill(mx.into(), my.into(), ms.into(), ms.into(), colour);
    }
}

impl VideoSource for TestPattern {
    fn describe(&self) -> String {
        format!(
            "test {} {}x{} I420 at {} fps",
            self.scene.as_str(),
            self.image.width,
            self.image.height,
            self.fps
        )
    }

    fn controls(&self) -> Vec<ControlInfo> {
        controls_at(Some(self.tone))
    }

    fn set_control(&mut self, info: &ControlInfo, value: Value) -> Result<(), String> {
        let i = TEST_CONTROLS
            .iter()
            .position(|(name, ..)| *name == info.name)
            .ok_or_else(|| format!("the test source has no control {}", info.name))?;
        self.tone[i] = value.as_f64();
        self.maps = (self.tone != NEUTRAL_TONE).then(|| tone_maps(self.tone));
        Ok(())
    }

    fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        if !self.paced {
            let (index, captured) = (self.next_index, MonoTime::now());
            self.next_index += 1;
            self.render(index, captured);
            return Ok(Some(Frame {
                captured,
                picture: self.image.picture(),
                dmabuf: None,
            }));
        }
        let due = self.due(self.next_index);
        if !wait_until(due) {
            return Ok(None);
        }
        // Skip frames whose slot has passed: show the one due now.
        let now = MonoTime::now();
        let elapsed = now.since(self.epoch).as_nanos() as u64;
        let current = elapsed.saturating_mul(u64::from(self.fps)) / 1_000_000_000;
        let index = current.max(self.next_index);
        let captured = self.due(index);
        self.next_index = index + 1;
        self.render(index, captured);
        Ok(Some(Frame {
            captured,
            picture: self.image.picture(),
            dmabuf: None,
        }))
    }
}

/// Frequency of the synthetic tone.
pub const TONE_HZ: f64 = 440.0;
/// Length of the once-a-second click.
pub const CLICK: Duration = Duration::from_millis(5);
/// Length of one audio chunk.
pub const CHUNK: Duration = Duration::from_millis(20);

/// The synthetic tone with a click at every whole second after the epoch.
pub struct TestTone {
    format: AudioFormat,
    epoch: MonoTime,
    next_chunk: u64,
    frames_per_chunk: u64,
    pcm: Vec<u8>,
}

impl TestTone {
    /// A tone at the requested rate (48000 by default) and channels.
    pub fn new(params: &AudioParams, epoch: MonoTime) -> Result<TestTone, CaptureError> {
        let format = AudioFormat {
            sample_rate: params.sample_rate.unwrap_or(TONE_SAMPLE_RATE),
            channels: params.channels,
        };
        let frames_per_chunk = format.frames_in(CHUNK) as u64;
        Ok(TestTone {
            format,
            epoch,
            next_chunk: 0,
            frames_per_chunk,
            pcm: Vec::with_capacity(frames_per_chunk as usize * format.bytes_per_frame()),
        })
    }

    fn sample_time(&self, sample: u64) -> MonoTime {
        let nanos = u128::from(sample) * 1_000_000_000 / u128::from(self.format.sample_rate);
        self.epoch.later_by(Duration::from_nanos(nanos as u64))
    }

    /// The value of sample `s` (absolute index since the epoch).
    pub fn sample(rate: u32, s: u64) -> i16 {
        let rate_u = u64::from(rate);
        let in_second = s % rate_u;
        let click_len = (u128::from(rate_u) * CLICK.as_nanos() / 1_000_000_000) as u64;
        if in_second < click_len {
            // A loud square burst: easy to find by threshold.
            return if (in_second / 8).is_multiple_of(2) {
                30_000
            } else {
                -30_000
            };
        }
        let phase = (s as f64 / f64::from(rate)) * TONE_HZ * std::f64::consts::TAU;
        (phase.sin() * 8_000.0) as i16
    }
}

impl AudioSource for TestTone {
    fn describe(&self) -> String {
        format!(
            "test tone {} Hz, {} Hz x {} ch s16le, click every second",
            TONE_HZ, self.format.sample_rate, self.format.channels
        )
    }

    fn format(&self) -> AudioFormat {
        self.format
    }

    fn next_chunk(&mut self) -> Result<Option<AudioBlock<'_>>, CaptureError> {
        let first = self.next_chunk * self.frames_per_chunk;
        let end = first + self.frames_per_chunk;
        if !wait_until(self.sample_time(end)) {
            return Ok(None);
        }
        // More than a second behind (machine suspended, debugger): jump to now instead of
        // bursting out the backlog.
        let now = MonoTime::now();
        if now.since(self.sample_time(end)) > Duration::from_secs(1) {
            let elapsed = now.since(self.epoch).as_nanos();
            let frames = elapsed * u128::from(self.format.sample_rate) / 1_000_000_000;
            self.next_chunk = (frames / u128::from(self.frames_per_chunk)) as u64 - 1;
            return self.next_chunk();
        }
        self.next_chunk += 1;
        self.pcm.clear();
        for s in first..end {
            let value = TestTone::sample(self.format.sample_rate, s).to_le_bytes();
            for _ in 0..self.format.channels {
                self.pcm.extend_from_slice(&value);
            }
        }
        Ok(Some(AudioBlock {
            captured: self.sample_time(first),
            pcm: &self.pcm,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::Picture;

    fn params(fps: u32) -> VideoParams {
        VideoParams::at(64, 48, fps)
    }

    #[test]
    fn the_still_scene_changes_only_by_noise_of_the_stated_size() {
        let mut p = VideoParams::at(320, 240, 30);
        p.scene = TestScene::StaticNoisy;
        let mut src = TestPattern::unpaced(&p).unwrap();
        let grab = |src: &mut TestPattern| match src.next_frame().unwrap().unwrap().picture {
            Picture::I420 { planes, .. } => planes[0].to_vec(),
            other => panic!("{other:?}"),
        };
        let (a, b) = (grab(&mut src), grab(&mut src));
        // Below the caption and left of the corner square: only noise differs there.
        let region = |y: &[u8]| -> Vec<i32> {
            (120..240)
                .flat_map(|row| (0..240).map(move |col| (row, col)))
                .map(|(row, col)| i32::from(y[row * 320 + col]))
                .collect()
        };
        let (ra, rb) = (region(&a), region(&b));
        let diffs: Vec<f64> = ra.iter().zip(&rb).map(|(x, y)| f64::from(x - y)).collect();
        let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
        let var = diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / diffs.len() as f64;
        // The difference of two independent noises has sqrt(2) times their sigma.
        let sigma = (var / 2.0).sqrt();
        assert!(mean.abs() < 0.2, "no drift: {mean}");
        assert!((2.0..=3.0).contains(&sigma), "noise sigma {sigma:.2}");
        assert!(src.describe().starts_with("test static-noisy 320x240"));
    }

    #[test]
    fn an_unpaced_pattern_renders_consecutive_frames_at_once() {
        let mut src = TestPattern::unpaced(&params(1)).unwrap();
        let stamps: Vec<MonoTime> = (0..5)
            .map(|_| src.next_frame().unwrap().unwrap().captured)
            .collect();
        // Paced at 1 fps these would be stamped exactly 1 s apart (their due times).
        assert!(stamps[4].since(stamps[0]) < Duration::from_secs(4));
        assert!(stamps.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(src.next_index, 5, "frames 0..4, none skipped");
    }

    #[test]
    fn scene_names_go_both_ways() {
        for s in TestScene::ALL {
            assert_eq!(TestScene::from_name(s.as_str()), Some(s));
        }
        assert_eq!(TestScene::from_name("bogus"), None);
    }

    #[test]
    fn frames_are_due_on_the_epoch_grid_without_drift() {
        let epoch = MonoTime::now();
        let mut p = TestPattern::new(&params(50), epoch).unwrap();
        let mut stamps = Vec::new();
        while stamps.len() < 10 {
            if let Some(f) = p.next_frame().unwrap() {
                stamps.push(f.captured);
            }
        }
        for s in &stamps {
            let offset = s.since(epoch).as_nanos();
            assert_eq!(
                offset % 20_000_000,
                0,
                "frame not on the 20 ms grid: {offset}"
            );
        }
        assert!(stamps.windows(2).all(|w| w[1] > w[0]));
    }

    #[test]
    fn a_late_source_skips_to_the_frame_due_now() {
        let epoch = MonoTime::now().earlier_by(Duration::from_secs(2));
        let mut p = TestPattern::new(&params(10), epoch).unwrap();
        let f = p.next_frame().unwrap().expect("overdue frame is immediate");
        let index = f.captured.since(epoch).as_millis() / 100;
        assert!(index >= 20, "expected about frame 20, got {index}");
    }

    #[test]
    fn the_caption_ends_left_of_the_marker_square() {
        for (width, height) in [
            (320, 240),
            (640, 480),
            (1280, 720),
            (1920, 1080),
            (4096, 2160),
        ] {
            let lines = [
                "RPI-STREAMER TEST".to_string(),
                "FRAME 000123".to_string(),
                clock_text(1_795_468_548.538_965),
            ];
            let (marker_x, _, _, _) = frame_marker_rect(width, height);
            let scale = caption_scale(&lines, marker_x.into(), height.into());
            assert!(
                caption_width(&lines, scale) <= i64::from(marker_x),
                "{width}x{height}: caption {} px wide at scale {scale}, square at x {marker_x}",
                caption_width(&lines, scale)
            );
            assert!(scale >= 1);
        }
    }

    #[test]
    fn consecutive_frames_differ_in_the_marker_square() {
        let mut p = TestPattern::new(&params(30), MonoTime::now()).unwrap();
        let (mx, my, _, _) = frame_marker_rect(64, 48);
        let at = (my as usize + 2) * 64 + mx as usize + 2;
        let mut seen = Vec::new();
        while seen.len() < 3 {
            if let Some(f) = p.next_frame().unwrap() {
                let super::super::Picture::I420 { planes, .. } = f.picture else {
                    panic!("I420 expected")
                };
                let cat = (at / 64 / 2) * 32 + (at % 64) / 2;
                seen.push((planes[0][at], planes[1][cat], planes[2][cat]));
            }
        }
        assert_ne!(seen[0], seen[1]);
        assert_ne!(seen[1], seen[2]);
    }

    #[test]
    fn the_click_starts_on_each_whole_second() {
        let rate = 48_000;
        assert!(TestTone::sample(rate, 0).abs() >= 30_000);
        assert!(TestTone::sample(rate, rate as u64).abs() >= 30_000);
        assert!(TestTone::sample(rate, 2 * rate as u64 + 100).abs() >= 30_000);
        // The tone itself stays well below the click level.
        assert!((rate as u64 / 2..rate as u64 / 2 + 500)
            .all(|s| TestTone::sample(rate, s).abs() <= 8_000));
    }

    #[test]
    fn audio_chunks_are_20ms_contiguous_and_stamped_on_the_sample_grid() {
        let epoch = MonoTime::now();
        let mut tone = TestTone::new(
            &AudioParams {
                sample_rate: Some(44_100),
                channels: 2,
                device: None,
            },
            epoch,
        )
        .unwrap();
        let mut stamps = Vec::new();
        while stamps.len() < 5 {
            if let Some(block) = tone.next_chunk().unwrap() {
                assert_eq!(block.pcm.len(), 882 * 4);
                stamps.push(block.captured);
            }
        }
        for (j, s) in stamps.iter().enumerate() {
            let expected = (j as u128 * 882 * 1_000_000_000 / 44_100) as u64;
            assert_eq!(s.since(epoch).as_nanos() as u64, expected);
        }
    }
}
