//! Capture threads: source → encoder → wire-ready frame → the server's queue.
//!
//! One blocking thread per source. Each owns its source and (for video) its JPEG encoder, so
//! a frame is encoded exactly once, right where it was captured. What every backend needs on
//! failure lives here once: when a source errors or stalls, it is dropped, clients get a
//! "NO SIGNAL" placeholder about once a second, and the source is reopened every second until
//! it comes back. The queue to the server is bounded and never blocks capture: when it is
//! full the oldest item is dropped and counted.
#![forbid(unsafe_code)]

use crate::capture::{
    self, fault, placeholder, AudioSource, CameraType, VideoSource, POLL_TIMEOUT,
};
use crate::clock::{MonoTime, MonotonicStamps};
use crate::config::Config;
use crate::jpeg::Encoder;
use crate::media::{AudioChunk, VideoFrame};
use crate::scale::{FrameShaper, ShapeError};
use crate::stats::Stats;
use async_channel::Sender;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often a missing source is reopened, and placeholders are sent.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// Running capture threads; [`Pipelines::stop`] ends and joins them.
pub struct Pipelines {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Pipelines {
    /// Starts the video thread (and the audio thread when audio is enabled).
    pub fn start(
        config: &Config,
        video_tx: Sender<Arc<VideoFrame>>,
        audio_tx: Sender<Arc<AudioChunk>>,
        stats: Arc<Stats>,
    ) -> std::io::Result<Pipelines> {
        let stop = Arc::new(AtomicBool::new(false));
        // The watchdog counts from here until the first frame.
        Stats::mark(&stats.last_output, MonoTime::now());
        // One epoch for both synthetic sources: the click lands on a marked frame.
        let epoch = MonoTime::now();
        let mut threads = Vec::new();
        let video = VideoLoop {
            config: config.clone(),
            epoch,
            tx: video_tx,
            stats: stats.clone(),
            stop: stop.clone(),
        };
        threads.push(
            std::thread::Builder::new()
                .name("video-capture".into())
                .spawn(move || video.run())?,
        );
        if let Some(audio_params) = config.audio.clone() {
            let audio = AudioLoop {
                camera: config.camera,
                params: audio_params,
                epoch,
                tx: audio_tx,
                stats,
                stop: stop.clone(),
            };
            threads.push(
                std::thread::Builder::new()
                    .name("audio-capture".into())
                    .spawn(move || audio.run())?,
            );
        }
        Ok(Pipelines { stop, threads })
    }

    /// Asks every capture thread to stop and waits for them.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            if t.join().is_err() {
                log::error!("a capture thread panicked");
            }
        }
    }
}

/// Remembers the last failure so a device that stays gone logs once, not every second.
#[derive(Default)]
struct FailureLog {
    last: Option<String>,
}

impl FailureLog {
    fn report(&mut self, what: &str, message: String) {
        if self.last.as_deref() != Some(message.as_str()) {
            log::warn!(
                "{what}: {message}; retrying every {}s",
                RETRY_INTERVAL.as_secs()
            );
            self.last = Some(message);
        }
    }

    fn recovered(&mut self) -> bool {
        self.last.take().is_some()
    }
}

struct VideoLoop {
    config: Config,
    epoch: MonoTime,
    tx: Sender<Arc<VideoFrame>>,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
}

impl VideoLoop {
    /// No frame for this long: clients get a placeholder (and /healthz says so).
    fn placeholder_after(&self) -> Duration {
        stale_after(self.config.video.frame_interval())
    }

    /// No frame for this long: the source is treated as gone and reopened.
    fn reopen_after(&self) -> Duration {
        (self.config.video.frame_interval() * 4).max(Duration::from_secs(2))
    }

    fn publish(&self, frame: VideoFrame) {
        let live = !frame.placeholder;
        match self.tx.force_send(Arc::new(frame)) {
            Ok(None) => {}
            Ok(Some(_displaced)) => Stats::add(&self.stats.video_queue_dropped, 1),
            Err(_) => self.stop.store(true, Ordering::SeqCst),
        }
        let now = MonoTime::now();
        Stats::mark(&self.stats.last_output, now);
        if live {
            Stats::mark(&self.stats.last_live_frame, now);
        }
    }

    fn open(&self) -> Result<Box<dyn VideoSource>, capture::CaptureError> {
        let faults = &self.config.faults;
        fault::check_open(faults, self.epoch)?;
        let source = capture::open_video(self.config.camera, &self.config.video, self.epoch)?;
        Ok(if faults.is_empty() {
            source
        } else {
            Box::new(fault::Faulty::new(source, faults.clone(), self.epoch))
        })
    }

    fn placeholder(&self, encoder: &mut Encoder, stamps: &mut MonotonicStamps, reason: &str) {
        let (width, height) = (self.config.video.width, self.config.video.height);
        let unix = MonoTime::now().to_unix();
        let image = placeholder::render(width, height, unix, reason);
        match encoder.encode(&image.picture()) {
            Ok(jpeg) => {
                Stats::add(&self.stats.video_placeholders, 1);
                let ts = stamps.next(unix);
                self.publish(VideoFrame::new(ts, width, height, jpeg, true));
            }
            Err(e) => log::error!("placeholder: {e}"),
        }
    }

    fn fail(&self, failures: &mut FailureLog, reason: &str) {
        failures.report("video source", reason.to_string());
        self.stats
            .set_video_state(format!("unavailable: {reason}"), true);
    }

    fn run(self) {
        let mut encoder = match Encoder::new(self.config.quality) {
            Ok(e) => e,
            Err(e) => {
                log::error!("cannot start the JPEG encoder: {e}");
                return;
            }
        };
        let mut shaper = FrameShaper::new();
        let out_size = (self.config.video.width, self.config.video.height);
        let mut stamps = MonotonicStamps::default();
        let mut failures = FailureLog::default();
        let mut source: Option<Box<dyn VideoSource>> = None;
        let mut next_open = Instant::now();
        let mut next_placeholder = Instant::now();
        let mut last_frame = Instant::now();
        let mut reason = String::from("starting");
        let mut described = String::new();

        while !self.stop.load(Ordering::SeqCst) {
            let Some(src) = source.as_mut() else {
                if Instant::now() >= next_open {
                    next_open = Instant::now() + RETRY_INTERVAL;
                    match self.open() {
                        Ok(s) => {
                            let was_failing = failures.recovered();
                            log::info!(
                                "video source {}: {}",
                                if was_failing { "back" } else { "open" },
                                s.describe()
                            );
                            described = s.describe();
                            self.stats
                                .set_video_state(format!("streaming: {described}"), false);
                            source = Some(s);
                            last_frame = Instant::now();
                            continue;
                        }
                        Err(e) => {
                            reason = e.to_string();
                            self.fail(&mut failures, &reason);
                        }
                    }
                }
                if Instant::now() >= next_placeholder {
                    next_placeholder = Instant::now() + RETRY_INTERVAL;
                    self.placeholder(&mut encoder, &mut stamps, &reason);
                }
                let wake = next_open.min(next_placeholder);
                let nap = wake
                    .saturating_duration_since(Instant::now())
                    .min(POLL_TIMEOUT);
                std::thread::sleep(nap);
                continue;
            };

            match src.next_frame() {
                Ok(Some(frame)) => {
                    // Only a stall that was reported (placeholder sent) is news when it ends;
                    // a merely slow frame is not.
                    if failures.recovered() {
                        log::info!("video source: frames flowing again");
                        self.stats
                            .set_video_state(format!("streaming: {described}"), false);
                    }
                    last_frame = Instant::now();
                    Stats::add(&self.stats.video_captured, 1);
                    let unix = frame.captured.to_unix();
                    let started = Instant::now();
                    // Camera JPEGs pass through (repaired) or are scaled; raw is encoded.
                    match shaper.shape(&mut encoder, &frame.picture, out_size) {
                        Ok((jpeg, _path)) => {
                            self.stats.record_encode(started.elapsed().as_secs_f64());
                            let ts = stamps.next(unix);
                            let (w, h) = out_size;
                            self.publish(VideoFrame::new(ts, w, h, jpeg, false));
                        }
                        Err(ShapeError::Corrupt(e)) => {
                            Stats::add(&self.stats.video_corrupt_dropped, 1);
                            log::debug!("dropping a corrupt camera frame: {e}");
                        }
                        Err(e) => {
                            Stats::add(&self.stats.video_encode_errors, 1);
                            log::warn!("dropping a frame the encoder refused: {e}");
                        }
                    }
                }
                Ok(None) => {
                    let quiet = last_frame.elapsed();
                    if quiet > self.reopen_after() {
                        reason = format!("no frame for {:.1}s", quiet.as_secs_f64());
                        self.fail(&mut failures, &reason);
                        source = None;
                        next_placeholder = Instant::now();
                        next_open = Instant::now() + RETRY_INTERVAL;
                    } else if quiet > self.placeholder_after() && Instant::now() >= next_placeholder
                    {
                        // Tell viewers at once, keep waiting on the source a little longer.
                        reason = "no frames from the camera".to_string();
                        self.fail(&mut failures, &reason);
                        next_placeholder = Instant::now() + RETRY_INTERVAL;
                        self.placeholder(&mut encoder, &mut stamps, &reason);
                    }
                }
                Err(e) => {
                    reason = e.to_string();
                    self.fail(&mut failures, &reason);
                    source = None;
                    next_placeholder = Instant::now();
                    next_open = Instant::now() + RETRY_INTERVAL;
                }
            }
        }
    }
}

/// How old the newest frame may get before the stream counts as stalled: two frame
/// intervals, plus a little grace for scheduling jitter.
pub fn stale_after(frame_interval: Duration) -> Duration {
    frame_interval * 2 + Duration::from_millis(50)
}

struct AudioLoop {
    camera: CameraType,
    params: capture::AudioParams,
    epoch: MonoTime,
    tx: Sender<Arc<AudioChunk>>,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
}

impl AudioLoop {
    fn run(self) {
        let mut stamps = MonotonicStamps::default();
        let mut failures = FailureLog::default();
        let mut source: Option<Box<dyn AudioSource>> = None;
        let mut next_open = Instant::now();
        while !self.stop.load(Ordering::SeqCst) {
            let Some(src) = source.as_mut() else {
                if Instant::now() >= next_open {
                    next_open = Instant::now() + RETRY_INTERVAL;
                    match capture::open_audio(self.camera, &self.params, self.epoch) {
                        Ok(s) => {
                            let was_failing = failures.recovered();
                            log::info!(
                                "audio source {}: {}",
                                if was_failing { "back" } else { "open" },
                                s.describe()
                            );
                            self.stats
                                .set_audio_state(format!("streaming: {}", s.describe()));
                            source = Some(s);
                            continue;
                        }
                        Err(e) => {
                            self.stats.set_audio_state(format!("unavailable: {e}"));
                            failures.report("audio source", e.to_string());
                        }
                    }
                }
                let nap = next_open.saturating_duration_since(Instant::now());
                std::thread::sleep(nap.min(POLL_TIMEOUT));
                continue;
            };
            let format = src.format();
            Stats::add(&self.stats.audio_xruns, src.take_xruns());
            match src.next_chunk() {
                Ok(Some(block)) => {
                    Stats::add(&self.stats.audio_chunks, 1);
                    let ts = stamps.next(block.captured.to_unix());
                    let chunk = AudioChunk::new(
                        ts,
                        format.sample_rate,
                        format.channels,
                        block.pcm.to_vec(),
                    );
                    match self.tx.force_send(Arc::new(chunk)) {
                        Ok(None) => {}
                        Ok(Some(_)) => Stats::add(&self.stats.audio_queue_dropped, 1),
                        Err(_) => return,
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    Stats::add(&self.stats.audio_xruns, src.take_xruns());
                    self.stats.set_audio_state(format!("unavailable: {e}"));
                    failures.report("audio source", e.to_string());
                    source = None;
                    next_open = Instant::now() + RETRY_INTERVAL;
                }
            }
        }
    }
}
