//! The H.264 encoder stage: its own thread, fed the newest picture, run only on demand.
//!
//! The capture thread converts a frame to I420 at the output size and [`H264Stage::offer`]s
//! it; a picture not taken yet is replaced (newest-frame rule, counted), so a slow encoder
//! lowers the frame rate instead of adding latency, and capture never waits. The thread
//! encodes, honours keyframe requests from [`Demand`] (no forced keyframe sooner than
//! [`KEY_GAP_FRAMES`] frames after the last keyframe: a client joining within that span is
//! replayed the short group of pictures instead, so a crowd of joining clients cannot turn
//! the stream into keyframes only) and hands each access unit, numbered, to the hub. The encoder is made on
//! first demand and dropped after [`IDLE_DROP`] without any, so nobody pays for H.264 while
//! nobody watches it.
//!
//! Which encoder: `--h264-encoder` ([`H264EncoderKind`]). `auto` and `v4l2` open the hardware
//! (V4L2 memory-to-memory) encoder found by capability for the pictures' size; if it cannot
//! be opened or fails mid-stream (unbound, any error) OpenH264 encodes the following
//! pictures, with one warning naming the device and the reason, counted in
//! `h264_encoder_fallbacks`; the hardware is tried again every
//! [`super::fallback::HARDWARE_RETRY`] and takes over when it works (logged at info). `auto` on a machine without one (a Pi 5) is
//! OpenH264 from the start, and not a fallback.
#![forbid(unsafe_code)]

use super::demand::{Codec, Demand};
use super::fallback::Fallback;
use super::h264::{codec_string, H264Encoder, H264EncoderKind, H264Error, H264Settings, I420};
use crate::capture::draw::I420Image;
use crate::clock::MonoTime;
use crate::stats::{RecentRate, Stats};
use crate::stream::media::H264Unit;
use async_channel::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// No keyframe is forced sooner than this many frames after the last keyframe; the hub
/// replays a group of pictures at most this long to a joining client instead.
pub const KEY_GAP_FRAMES: usize = 8;
/// An encoder without work for this long is dropped (its memory freed).
pub const IDLE_DROP: Duration = Duration::from_secs(10);

/// One picture to encode.
pub struct Job {
    /// The picture, I420 at the output size.
    pub image: I420Image,
    /// Its capture instant.
    pub captured: MonoTime,
    /// Its UNIX timestamp on the wire (the same the JPEG of this frame carries).
    pub ts: f64,
    /// A "NO SIGNAL" placeholder rather than a captured picture.
    pub placeholder: bool,
}

#[derive(Default)]
struct Mail {
    job: Option<Job>,
    spare: Option<I420Image>,
    stop: bool,
}

#[derive(Default)]
struct Mailbox {
    mail: Mutex<Mail>,
    cond: Condvar,
}

impl Mailbox {
    fn lock(&self) -> MutexGuard<'_, Mail> {
        // A poisoned lock means the other side panicked (and, with panic = abort, that the
        // process is ending); the data is plain buffers, still usable.
        self.mail.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running stage; dropping it ends its thread.
pub struct H264Stage {
    mailbox: Arc<Mailbox>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<Stats>,
}

impl H264Stage {
    /// Starts the encoder thread; units go to `tx`.
    pub fn start(
        settings: H264Settings,
        fps: u32,
        demand: Arc<Demand>,
        stats: Arc<Stats>,
        tx: Sender<Arc<H264Unit>>,
    ) -> std::io::Result<H264Stage> {
        let mailbox = Arc::new(Mailbox::default());
        let worker = Worker {
            settings,
            fps,
            demand,
            stats: stats.clone(),
            tx,
            mailbox: mailbox.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("h264-encode".into())
            .spawn(move || worker.run())?;
        Ok(H264Stage {
            mailbox,
            thread: Some(thread),
            stats,
        })
    }

    /// A buffer to convert the next picture into (one the stage has finished with, if any).
    pub fn buffer(&self) -> I420Image {
        self.mailbox
            .lock()
            .spare
            .take()
            .unwrap_or_else(|| I420Image::new(2, 2))
    }

    /// Hands a picture to the encoder, replacing one it has not started on.
    pub fn offer(&self, job: Job) {
        let mut mail = self.mailbox.lock();
        if let Some(old) = mail.job.replace(job) {
            Stats::add(&self.stats.codec(Codec::H264).encoder_skipped, 1);
            mail.spare = Some(old.image);
        }
        drop(mail);
        self.mailbox.cond.notify_one();
    }
}

impl Drop for H264Stage {
    /// Ends the thread and waits for it.
    fn drop(&mut self) {
        self.mailbox.lock().stop = true;
        self.mailbox.cond.notify_one();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("the H.264 encoder thread panicked");
            }
        }
    }
}

struct Worker {
    settings: H264Settings,
    fps: u32,
    demand: Arc<Demand>,
    stats: Arc<Stats>,
    tx: Sender<Arc<H264Unit>>,
    mailbox: Arc<Mailbox>,
}

impl Worker {
    /// The next job; `None` once stopping. Drops the encoder after [`IDLE_DROP`] idle.
    fn next_job(&self, encoder: &mut Option<H264Encoder>, idle_since: &mut Instant) -> Option<Job> {
        let mut mail = self.mailbox.lock();
        loop {
            if mail.stop {
                return None;
            }
            if let Some(job) = mail.job.take() {
                return Some(job);
            }
            if encoder.is_some() && idle_since.elapsed() >= IDLE_DROP {
                log::info!(
                    "H.264: no viewer for {} s, encoder stopped",
                    IDLE_DROP.as_secs()
                );
                *encoder = None;
            }
            mail = match self.mailbox.cond.wait_timeout(mail, Duration::from_secs(1)) {
                Ok((m, _)) => m,
                Err(e) => e.into_inner().0,
            };
        }
    }

    /// A new encoder for `size` pictures: the hardware one when it is due, else OpenH264.
    fn open(&self, hw: &mut Fallback, size: (u32, u32)) -> Result<H264Encoder, H264Error> {
        match self.try_hardware(hw, size) {
            Some(e) => Ok(e),
            None => H264Encoder::new(&self.settings, self.fps),
        }
    }

    /// The hardware encoder for `size` pictures if the settings ask for it, it is due (never
    /// tried, or failed a retry period ago) and it opens.
    fn try_hardware(&self, hw: &mut Fallback, size: (u32, u32)) -> Option<H264Encoder> {
        if !hw.due() {
            return None;
        }
        let counter = &self.stats.h264_encoder_fallbacks;
        match H264Encoder::hardware(&self.settings, self.fps, size.0, size.1) {
            Ok(e) => {
                hw.opened(&e.description);
                return Some(e);
            }
            Err(H264Error::NoHardware(why)) if !hw.has_failed() => {
                // v4l2 checked for one at start, so this one went away before the first
                // picture; auto without one (a Pi 5) is OpenH264 for good.
                if self.settings.encoder == H264EncoderKind::V4l2 {
                    hw.fail(why, counter);
                } else {
                    hw.none_here(&why);
                }
            }
            Err(e) if hw.has_failed() => hw.still_failing(&e),
            Err(e) => hw.fail(e.to_string(), counter),
        }
        None
    }

    /// Notes which encoder runs, for `/status`.
    fn in_use(&self, encoder: &H264Encoder) {
        log::info!("H.264 encoder started: {}", encoder.description);
        let name = match encoder.hardware_device() {
            Some(device) => format!("v4l2 {device}"),
            None => "software".to_string(),
        };
        if let Ok(mut slot) = self.stats.h264_encoder.lock() {
            *slot = Some(name);
        }
    }

    fn run(self) {
        let counters = self.stats.codec(Codec::H264);
        let mut encoder: Option<H264Encoder> = None;
        let mut hw = Fallback::new(
            "H.264",
            "OpenH264",
            self.settings.encoder == H264EncoderKind::Software,
        );
        let mut seq = 0u64;
        // Frames since the last keyframe; `None` before the encoder's first.
        let mut since_key: Option<usize> = None;
        let mut idle_since = Instant::now();
        let mut recent = RecentRate::default();
        let mut last_error: Option<String> = None;
        while let Some(job) = self.next_job(&mut encoder, &mut idle_since) {
            idle_since = Instant::now();
            let size = (job.image.width, job.image.height);
            // On OpenH264 after a failure: the hardware again once its retry is due.
            if encoder
                .as_ref()
                .is_some_and(|e| e.hardware_device().is_none() && hw.has_failed() && hw.due())
            {
                if let Some(e) = self.try_hardware(&mut hw, size) {
                    self.in_use(&e);
                    since_key = None;
                    encoder = Some(e);
                }
            }
            let enc = match encoder.as_mut() {
                Some(e) => e,
                None => match self.open(&mut hw, size) {
                    Ok(e) => {
                        self.in_use(&e);
                        since_key = None;
                        encoder.insert(e)
                    }
                    Err(e) => {
                        Stats::add(&counters.errors, 1);
                        if last_error.as_deref() != Some(&e.to_string()) {
                            log::error!("cannot start the H.264 encoder: {e}");
                            last_error = Some(e.to_string());
                        }
                        self.mailbox.lock().spare = Some(job.image);
                        continue;
                    }
                },
            };
            // A fresh encoder starts with a keyframe anyway; otherwise honour a request once
            // the gap since the last keyframe allows it (the request waits until then).
            let force = since_key.is_some_and(|n| n >= KEY_GAP_FRAMES)
                && self.demand.take_keyframe_request();
            if since_key.is_none() {
                self.demand.take_keyframe_request();
            }
            let w = job.image.width as usize;
            let picture = I420 {
                width: job.image.width,
                height: job.image.height,
                planes: [&job.image.y, &job.image.u, &job.image.v],
                strides: [w, w / 2, w / 2],
            };
            let started = Instant::now();
            let millis = job.captured.as_nanos() / 1_000_000;
            let mut result = enc.encode(picture, millis, force);
            let mut hardware = enc.hardware_device().is_some();
            if let (true, Err(e)) = (hardware, &result) {
                // The hardware failed or vanished: OpenH264 encodes this picture already.
                hw.fail(e.to_string(), &self.stats.h264_encoder_fallbacks);
                encoder = None;
                hardware = false;
                since_key = None;
                result = match H264Encoder::new(&self.settings, self.fps) {
                    Ok(mut e) => {
                        self.in_use(&e);
                        let r = e.encode(picture, millis, false);
                        encoder = Some(e);
                        r
                    }
                    Err(e) => Err(e),
                };
            }
            let took = started.elapsed();
            match result {
                Ok(Some(au)) => {
                    last_error = None;
                    since_key = since_key.map(|n| n + 1);
                    Stats::add(&counters.units, 1);
                    Stats::add(&counters.bytes, au.data.len() as u64);
                    Stats::add(&counters.encode_micros, took.as_micros() as u64);
                    Stats::add(
                        if hardware {
                            &self.stats.h264_hardware_units
                        } else {
                            &self.stats.h264_software_units
                        },
                        1,
                    );
                    if au.keyframe {
                        Stats::add(&counters.keyframes, 1);
                        if force {
                            Stats::add(&counters.keyframes_forced, 1);
                        }
                        since_key = Some(0);
                        if let (Some(codec), Ok(mut slot)) =
                            (codec_string(&au.data), self.stats.h264_codec.lock())
                        {
                            *slot = Some(codec);
                        }
                    }
                    recent.record(au.data.len(), &counters.recent_bps);
                    let size = (job.image.width, job.image.height);
                    let unit = H264Unit::new(job.ts, size, au.keyframe, au.data)
                        .with(job.placeholder, seq);
                    seq += 1;
                    match self.tx.force_send(Arc::new(unit)) {
                        Ok(None) => {}
                        // The hub sees the gap in `seq` and restarts its clients at a keyframe.
                        Ok(Some(_)) => Stats::add(&self.stats.video_queue_dropped, 1),
                        Err(_) => return,
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    Stats::add(&counters.errors, 1);
                    if last_error.as_deref() != Some(&e.to_string()) {
                        log::warn!("H.264: dropping a frame the encoder refused: {e}");
                        last_error = Some(e.to_string());
                    }
                }
            }
            self.mailbox.lock().spare = Some(job.image);
        }
    }
}
