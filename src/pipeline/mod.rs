//! Capture threads: source → encoder stages → wire-ready units → the server's queues.
//!
//! One blocking thread per source. The video thread owns its source and the JPEG encoder,
//! and feeds the H.264 stage ([`crate::encode::h264_stage`], its own thread): each frame is
//! encoded once per codec somebody consumes ([`Demand`]) and not at all when nobody watches
//! (a `/snapshot.jpg` asks for JPEG for a while). What every backend needs on
//! failure lives here once: when a source errors or stalls, it is dropped, clients get a
//! "NO SIGNAL" placeholder about once a second, and the source is reopened every second until
//! it comes back. The queue to the server is bounded and never blocks capture: when it is
//! full the oldest item is dropped and counted.
#![forbid(unsafe_code)]

pub mod supervisor;

use crate::capture::controls::ControlBoard;
use crate::capture::{
    self, fault, placeholder, AudioSource, CameraType, VideoSource, POLL_TIMEOUT,
};
use crate::clock::{MonoTime, MonotonicStamps};
use crate::config::Config;
use crate::encode::demand::{Codec, Demand};
use crate::encode::h264_stage::{H264Stage, Job, Returned, Ticket};
use crate::encode::jpeg::Encoder;
use crate::encode::jpeg_hw::{HardwareJpeg, MadeBy};
use crate::encode::orient::Orientation;
use crate::encode::pool::{EncoderPool, Job as JpegJob, JpegSink};
use crate::encode::scale::{FrameShaper, ShapeError};
use crate::stats::{RecentRate, Stats};
use crate::stream::media::{AudioChunk, H264Unit, VideoFrame};
use async_channel::Sender;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use supervisor::{SourceKind, Supervisor};

/// How often a missing source is reopened, and placeholders are sent.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// Running capture threads; [`Pipelines::stop`] ends and joins them.
pub struct Pipelines {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// Where the capture threads' output goes.
pub struct Outputs {
    /// JPEG frames to the hub.
    pub video: Sender<Arc<VideoFrame>>,
    /// H.264 units to the hub.
    pub h264: Sender<Arc<H264Unit>>,
    /// Audio chunks to the hub.
    pub audio: Sender<Arc<AudioChunk>>,
    /// Which codecs are wanted (the hub's [`crate::stream::hub::Hub::demand`]).
    pub demand: Arc<Demand>,
    /// The camera's controls, shared with the server's `/controls`.
    pub controls: Arc<ControlBoard>,
}

impl Pipelines {
    /// Starts the video thread (and the audio thread when audio is enabled).
    pub fn start(config: &Config, out: Outputs, stats: Arc<Stats>) -> std::io::Result<Pipelines> {
        let stop = Arc::new(AtomicBool::new(false));
        // The watchdog counts from here until the first frame.
        Stats::mark(&stats.last_output, MonoTime::now());
        // One epoch for both synthetic sources: the click lands on a marked frame.
        let epoch = MonoTime::now();
        let mut threads = Vec::new();
        let h264 = H264Stage::start(
            config.h264.clone(),
            config.video.fps,
            config.zero_copy,
            out.demand.clone(),
            stats.clone(),
            out.h264,
        )?;
        let jpeg = Arc::new(JpegOut {
            tx: out.video,
            size: config
                .orientation
                .turned_size((config.video.width, config.video.height)),
            rate: Default::default(),
            stats: stats.clone(),
            stop: stop.clone(),
        });
        let pool = match config.encoder_threads {
            0 | 1 => None,
            n => Some(EncoderPool::start(
                n,
                config.quality,
                crate::stream::media::BINARY_HEADER_LEN,
                jpeg.clone(),
            )?),
        };
        let video = VideoLoop {
            config: config.clone(),
            epoch,
            jpeg,
            pool,
            h264,
            demand: out.demand,
            controls: out.controls,
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
                tx: out.audio,
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

/// Where JPEG frames go, from the video thread or the encoder pool's threads.
struct JpegOut {
    tx: Sender<Arc<VideoFrame>>,
    /// What clients are sent: `--width`x`--height`, turned by the orientation.
    size: (u32, u32),
    rate: std::sync::Mutex<RecentRate>,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
}

impl JpegOut {
    fn publish(&self, frame: VideoFrame) {
        let counters = self.stats.codec(Codec::Jpeg);
        Stats::add(&counters.units, 1);
        Stats::add(&counters.bytes, frame.jpeg().len() as u64);
        if let Ok(mut rate) = self.rate.lock() {
            rate.record(frame.jpeg().len(), &counters.recent_bps);
        }
        match self.tx.force_send(Arc::new(frame)) {
            Ok(None) => {}
            Ok(Some(_displaced)) => Stats::add(&self.stats.video_queue_dropped, 1),
            Err(_) => self.stop.store(true, Ordering::SeqCst),
        }
    }

    fn record_encode(&self, took: Duration) {
        self.stats.record_encode(took.as_secs_f64());
        Stats::add(
            &self.stats.codec(Codec::Jpeg).encode_micros,
            took.as_micros() as u64,
        );
    }
}

impl JpegOut {
    /// A frame's JPEG (behind the wire header's room), made in `took`; by libjpeg-turbo
    /// when `cpu`, else by the hardware or the camera.
    fn encoded_by(&self, ts: f64, jpeg: Vec<u8>, took: Duration, cpu: bool) {
        if cpu {
            Stats::add(&self.stats.jpeg_cpu_units, 1);
        }
        self.record_encode(took);
        let (w, h) = self.size;
        self.publish(VideoFrame::behind_header(ts, w, h, jpeg, false));
    }
}

impl JpegSink for JpegOut {
    fn encoded(&self, ts: f64, jpeg: Vec<u8>, took: Duration) {
        self.encoded_by(ts, jpeg, took, true);
    }

    fn failed(&self, error: ShapeError) {
        count_refused(&self.stats, &error);
    }

    fn dropped(&self) {
        Stats::add(&self.stats.video_encoder_dropped, 1);
    }
}

/// Counts (and logs) a frame the shaper refused.
fn count_refused(stats: &Stats, error: &ShapeError) {
    if let ShapeError::Corrupt(e) = error {
        Stats::add(&stats.video_corrupt_dropped, 1);
        log::debug!("dropping a corrupt camera frame: {e}");
    } else {
        Stats::add(&stats.video_encode_errors, 1);
        log::warn!("dropping a frame the encoder refused: {error}");
    }
}

struct VideoLoop {
    config: Config,
    epoch: MonoTime,
    jpeg: Arc<JpegOut>,
    /// `--encoder-threads` above 1: raw pictures are encoded there, in parallel.
    pool: Option<EncoderPool>,
    h264: H264Stage,
    demand: Arc<Demand>,
    controls: Arc<ControlBoard>,
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

    /// The thread produced a picture (captured, or a placeholder when `!live`), whether or
    /// not anyone wanted it encoded: for the watchdog and `/healthz`.
    fn mark_output(&self, live: bool) {
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
        // Drawn upright at the turned size: its text stays readable.
        let (width, height) = self.jpeg.size;
        let now = MonoTime::now();
        let unix = now.to_unix();
        let image = placeholder::render(width, height, unix, reason);
        Stats::add(&self.stats.video_placeholders, 1);
        self.mark_output(false);
        let ts = stamps.next(unix);
        if self.demand.wants(Codec::Jpeg, now) {
            match encoder.encode(&image.picture()) {
                Ok(wire) => {
                    Stats::add(&self.stats.jpeg_cpu_units, 1);
                    self.jpeg
                        .publish(VideoFrame::behind_header(ts, width, height, wire, true))
                }
                Err(e) => log::error!("placeholder: {e}"),
            }
        }
        if self.demand.wants(Codec::H264, now) {
            self.h264.offer(Job {
                image,
                captured: now,
                ts,
                placeholder: true,
            });
        }
    }

    fn run(self) {
        // JPEGs come behind the binary header's room: the frame's one wire buffer.
        let mut encoder = match Encoder::new(self.config.quality) {
            Ok(e) => e.reserving(crate::stream::media::BINARY_HEADER_LEN),
            Err(e) => {
                log::error!("cannot start the JPEG encoder: {e}");
                return;
            }
        };
        let mut shaper = FrameShaper::turning(self.config.orientation);
        let mut hardware = HardwareJpeg::new(
            self.config.jpeg_encoder,
            self.config.quality,
            crate::stream::media::BINARY_HEADER_LEN,
            self.stats.clone(),
            self.config.zero_copy,
        );
        let mut stamps = MonotonicStamps::default();
        let mut sup: Supervisor<Box<dyn VideoSource>> =
            Supervisor::new(SourceKind::Video, self.stats.clone());
        // The supervisor holds the box; it hands the closure what it holds.
        #[allow(clippy::borrowed_box)]
        let describe = |s: &Box<dyn VideoSource>| s.describe();
        let mut next_placeholder = Instant::now();
        let mut last_frame = Instant::now();

        while !self.stop.load(Ordering::SeqCst) {
            let was_open = sup.is_open();
            let Some(src) = sup.source(|| self.open(), describe) else {
                if Instant::now() >= next_placeholder {
                    next_placeholder = Instant::now() + RETRY_INTERVAL;
                    self.placeholder(&mut encoder, &mut stamps, sup.reason());
                }
                let wake = sup.next_open().min(next_placeholder);
                let nap = wake
                    .saturating_duration_since(Instant::now())
                    .min(POLL_TIMEOUT);
                std::thread::sleep(nap);
                continue;
            };
            if !was_open {
                // Just opened: the stall clock starts now, not at the last frame before.
                last_frame = Instant::now();
                shaper.set_orientation(self.mirror_in_camera(src.as_mut()));
                self.controls.opened(src.as_mut());
            } else {
                self.controls.refresh(src.as_mut());
            }
            match src.next_frame() {
                Ok(Some(frame)) => {
                    last_frame = Instant::now();
                    Stats::add(&self.stats.video_captured, 1);
                    self.mark_output(true);
                    let now = MonoTime::now();
                    let ts = stamps.next(frame.captured.to_unix());
                    hardware.new_frame();
                    // A frame lent to H.264 is encoded there while its JPEG is made here;
                    // it goes back to the camera only once H.264 let go of it.
                    let lent = self.lend_h264(&shaper, &frame, ts, now);
                    let jpeg = self.encode_jpeg(
                        &mut shaper,
                        (&mut encoder, &mut hardware),
                        &frame,
                        ts,
                        now,
                    );
                    let returned = lent.map(|ticket| self.h264.returned(ticket));
                    let result = jpeg.and_then(|()| match returned {
                        Some(Returned::Encoded | Returned::Late) => Ok(()),
                        Some(Returned::Copy) | None => {
                            self.offer_h264(&mut shaper, &mut hardware, &frame, ts, now)
                        }
                    });
                    if let Err(e) = result {
                        count_refused(&self.stats, &e);
                    }
                    // Only a stall that was reported (placeholder sent) is news when it
                    // ends; a merely slow frame is not.
                    sup.flowing(describe);
                }
                Ok(None) => {
                    let quiet = last_frame.elapsed();
                    if quiet > self.reopen_after() {
                        sup.lost(format!("no frame for {:.1}s", quiet.as_secs_f64()));
                        self.controls.closed();
                        next_placeholder = Instant::now();
                    } else if quiet > self.placeholder_after() && Instant::now() >= next_placeholder
                    {
                        // Tell viewers at once, keep waiting on the source a little longer.
                        sup.stalled("no frames from the camera".to_string());
                        next_placeholder = Instant::now() + RETRY_INTERVAL;
                        self.placeholder(&mut encoder, &mut stamps, sup.reason());
                    }
                }
                Err(e) => {
                    sup.lost(e.to_string());
                    self.controls.closed();
                    next_placeholder = Instant::now();
                }
            }
        }
        self.controls.closed();
    }
}

impl VideoLoop {
    /// JPEG for the frame, if anyone wants it: camera JPEGs pass through (repaired) or are
    /// scaled; raw pictures go to the hardware encoder when there is one working
    /// (`--jpeg-encoder`), else to libjpeg-turbo, here or, with an encoder pool, copied
    /// and encoded there.
    fn encode_jpeg(
        &self,
        shaper: &mut FrameShaper,
        (encoder, hardware): (&mut Encoder, &mut HardwareJpeg),
        frame: &capture::Frame<'_>,
        ts: f64,
        now: MonoTime,
    ) -> Result<(), ShapeError> {
        if !self.demand.wants(Codec::Jpeg, now) {
            hardware.idle();
            return Ok(());
        }
        let picture = &frame.picture;
        let out_size = (self.config.video.width, self.config.video.height);
        let started = Instant::now();
        if shaper.passes_through(picture, out_size) {
            let (jpeg, _path) = shaper.shape(encoder, picture, out_size)?;
            hardware.made_by(MadeBy::Camera);
            self.jpeg.encoded_by(ts, jpeg, started.elapsed(), false);
            return Ok(());
        }
        if let Some(jpeg) = hardware.encode(shaper, picture, out_size, frame.dmabuf)? {
            self.jpeg.encoded_by(ts, jpeg, started.elapsed(), false);
            return Ok(());
        }
        hardware.made_by(MadeBy::Cpu);
        if let Some(pool) = self.pool.as_ref() {
            let mut copy = pool.buffer();
            copy.copy_from(picture);
            pool.submit(JpegJob {
                picture: copy,
                ts,
                out: out_size,
                orientation: shaper.orientation(),
            });
            return Ok(());
        }
        let (jpeg, _path) = shaper.shape(encoder, picture, out_size)?;
        self.jpeg.encoded(ts, jpeg, started.elapsed());
        Ok(())
    }

    /// Lets a newly opened camera do the orientation's mirroring itself, leaving the
    /// pipeline only a quarter turn (or nothing); returns what the pipeline still does.
    fn mirror_in_camera(&self, src: &mut dyn VideoSource) -> Orientation {
        let wanted = self.config.orientation;
        let (hflip, vflip, rest) = wanted.split_mirror();
        if src.mirror(hflip, vflip) {
            if hflip || vflip {
                log::info!(
                    "the camera mirrors the picture itself (hflip {hflip}, vflip {vflip}); \
                     turned in the pipeline: {} degrees",
                    rest.rotation
                );
            }
            rest
        } else {
            if !wanted.is_identity() {
                log::info!("the camera cannot mirror: the pipeline turns every picture");
            }
            wanted
        }
    }

    /// Lends the frame's camera buffer to the H.264 stage, if anyone wants H.264 and the
    /// hardware encoder can read the picture in place: a raw one going out as captured
    /// (the output size, not turned) in a DMABUF. `None`: offer a converted copy instead
    /// (always without V4L2, where no camera lends its buffers).
    fn lend_h264(
        &self,
        shaper: &FrameShaper,
        frame: &capture::Frame<'_>,
        ts: f64,
        now: MonoTime,
    ) -> Option<Ticket> {
        if !self.demand.wants(Codec::H264, now) || !shaper.orientation().is_identity() {
            return None;
        }
        #[cfg(feature = "v4l")]
        {
            let buf = frame.dmabuf?;
            let out_size = (self.config.video.width, self.config.video.height);
            let import = crate::encode::import::Import::of(&frame.picture, out_size, &buf)?;
            self.h264.lend(buf, import, frame.captured, ts)
        }
        #[cfg(not(feature = "v4l"))]
        {
            let _ = (frame, ts);
            None
        }
    }

    /// The frame as I420 at the output size to the H.264 stage, if anyone wants H.264: the
    /// picture the hardware JPEG encoder was given if it was converted for it (the same
    /// conversion), else converted here.
    fn offer_h264(
        &self,
        shaper: &mut FrameShaper,
        hardware: &mut HardwareJpeg,
        frame: &capture::Frame<'_>,
        ts: f64,
        now: MonoTime,
    ) -> Result<(), ShapeError> {
        if !self.demand.wants(Codec::H264, now) {
            return Ok(());
        }
        let out_size = (self.config.video.width, self.config.video.height);
        let mut image = self.h264.buffer();
        if hardware.trade_converted(&mut image) {
            Stats::add(&self.stats.h264_shared_pictures, 1);
        } else {
            shaper.to_i420(&frame.picture, out_size, &mut image)?;
        }
        self.h264.offer(Job {
            image,
            captured: frame.captured,
            ts,
            placeholder: false,
        });
        Ok(())
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
        let mut sup: Supervisor<Box<dyn AudioSource>> =
            Supervisor::new(SourceKind::Audio, self.stats.clone());
        let open = || capture::open_audio(self.camera, &self.params, self.epoch);
        #[allow(clippy::borrowed_box)]
        let describe = |s: &Box<dyn AudioSource>| s.describe();
        while !self.stop.load(Ordering::SeqCst) {
            let Some(src) = sup.source(open, describe) else {
                let nap = sup.next_open().saturating_duration_since(Instant::now());
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
                    sup.lost(e.to_string());
                }
            }
        }
    }
}
