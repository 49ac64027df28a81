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
//!
//! Zero copy (feature `v4l`): a frame whose camera buffer the hardware encoder can read in
//! place ([`super::import::Import`]: a raw picture going out as captured, in a layout the
//! encoder shares) is not converted but *lent* ([`H264Stage::lend`]): the stage gets the
//! buffer's DMABUF, its encoder's OUTPUT queue imports it, and the capture thread waits in
//! [`H264Stage::returned`] until the driver has let go of it (the JPEG of the frame is made
//! meanwhile) before the camera may fill it again. This is the one place capture waits for
//! H.264: for its own frame's encode (13–20 ms at 1080p on a Pi's bcm2835-codec), at most
//! [`LEND_WAIT`]. While OpenH264 stands in, or once the driver refused the camera's buffers
//! (one info line), or with `--no-zero-copy`, frames are converted and offered as before.
//! `h264_zero_copy_units` counts the units read in place.
#![forbid(unsafe_code)]

use super::demand::{Codec, Demand};
use super::fallback::Fallback;
use super::h264::{
    codec_string, AccessUnit, H264Encoder, H264EncoderKind, H264Error, H264Settings, I420,
};
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
/// Longest the capture thread waits for a lent frame: past it the frame goes back to the
/// camera anyway (a hung driver costs one torn picture, not a stalled camera), and frames
/// are offered as copies until the encoder answers.
pub const LEND_WAIT: Duration = Duration::from_secs(1);

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

/// A frame lent in the camera's own buffer, for the hardware encoder to read in place.
#[cfg(feature = "v4l")]
struct Lent {
    /// The buffer's DMABUF (a duplicate of the camera's descriptor).
    fd: std::os::fd::OwnedFd,
    /// Bytes of the buffer the picture fills.
    bytesused: usize,
    /// The buffer's whole length.
    length: usize,
    /// The camera it comes from, for the log.
    source: String,
    /// The picture's layout in it.
    import: super::import::Import,
    captured: MonoTime,
    ts: f64,
    ticket: u64,
}

/// Without V4L2 nothing is lent.
#[cfg(not(feature = "v4l"))]
enum Lent {}

/// What the encoder thread is given.
enum Work {
    Picture(Job),
    #[cfg_attr(not(feature = "v4l"), allow(dead_code))]
    Lent(Lent),
}

/// What became of a lent frame ([`H264Stage::returned`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Returned {
    /// Encoded in place: the buffer is the camera's again.
    Encoded,
    /// Not read (OpenH264 stands in, or the driver refused the camera's buffers): the
    /// picture is to be converted and offered ([`H264Stage::offer`]).
    Copy,
    /// No answer within [`LEND_WAIT`]: the frame goes back to the camera anyway.
    Late,
}

/// The receipt for a lent frame, to wait on with [`H264Stage::returned`].
#[must_use = "a lent frame must be waited for before the camera has its buffer back"]
pub struct Ticket(u64);

#[derive(Default)]
struct Mail {
    job: Option<Work>,
    spare: Option<I420Image>,
    stop: bool,
    /// Frames may be lent: zero copy is on and the encoder reads them in place (or would,
    /// the hardware being due).
    lending: bool,
    /// The driver refused the camera's buffers: no frame is lent again.
    import_refused: bool,
    /// The lent frame the thread has not answered for yet.
    lent_out: Option<u64>,
    /// The last answer: ticket, and what became of the frame.
    returned: Option<(u64, Returned)>,
    #[cfg_attr(not(feature = "v4l"), allow(dead_code))]
    next_ticket: u64,
}

#[derive(Default)]
struct Mailbox {
    mail: Mutex<Mail>,
    /// Work for the encoder thread.
    cond: Condvar,
    /// A lent frame answered, for the capture thread.
    back: Condvar,
}

impl Mailbox {
    fn lock(&self) -> MutexGuard<'_, Mail> {
        // A poisoned lock means the other side panicked (and, with panic = abort, that the
        // process is ending); the data is plain buffers, still usable.
        self.mail.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answers for lent frame `ticket`: the capture thread may hand its buffer back.
    fn give_back(&self, ticket: u64, returned: Returned) {
        let mut mail = self.lock();
        if mail.lent_out == Some(ticket) {
            mail.lent_out = None;
        }
        mail.returned = Some((ticket, returned));
        drop(mail);
        self.back.notify_all();
    }
}

/// The running stage; dropping it ends its thread.
pub struct H264Stage {
    mailbox: Arc<Mailbox>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<Stats>,
}

impl H264Stage {
    /// Starts the encoder thread; units go to `tx`. `zero_copy`: frames may be lent to the
    /// hardware encoder ([`H264Stage::lend`]); false with `--no-zero-copy`.
    pub fn start(
        settings: H264Settings,
        fps: u32,
        zero_copy: bool,
        demand: Arc<Demand>,
        stats: Arc<Stats>,
        tx: Sender<Arc<H264Unit>>,
    ) -> std::io::Result<H264Stage> {
        let zero_copy =
            zero_copy && cfg!(feature = "v4l") && settings.encoder != H264EncoderKind::Software;
        let mailbox = Arc::new(Mailbox::default());
        mailbox.lock().lending = zero_copy;
        let worker = Worker {
            settings,
            fps,
            zero_copy,
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
        self.put(Work::Picture(job));
    }

    fn put(&self, work: Work) {
        let mut mail = self.mailbox.lock();
        if let Some(old) = mail.job.replace(work) {
            Stats::add(&self.stats.codec(Codec::H264).encoder_skipped, 1);
            // (Irrefutable without V4L2, where nothing is lent.)
            #[allow(irrefutable_let_patterns)]
            if let Work::Picture(old) = old {
                mail.spare = Some(old.image);
            }
        }
        drop(mail);
        self.mailbox.cond.notify_one();
    }

    /// Lends the frame in the camera's buffer `buf` (its picture laid out as `import` says,
    /// captured at `captured`, `ts` on the wire) to the hardware encoder to read in place;
    /// `None` when frames are not lent now (zero copy off or refused, OpenH264 standing in,
    /// a frame still out): then convert and [`H264Stage::offer`] it. With a ticket, the
    /// frame must not go back to the camera before [`H264Stage::returned`].
    #[cfg(feature = "v4l")]
    pub fn lend(
        &self,
        buf: crate::capture::DmaBuf<'_>,
        import: super::import::Import,
        captured: MonoTime,
        ts: f64,
    ) -> Option<Ticket> {
        let mut mail = self.mailbox.lock();
        if !mail.lending || mail.lent_out.is_some() || mail.stop {
            return None;
        }
        let fd = match buf.fd.try_clone_to_owned() {
            Ok(fd) => fd,
            Err(e) => {
                log::debug!("H.264: cannot duplicate {}'s DMABUF: {e}", buf.source);
                return None;
            }
        };
        let ticket = mail.next_ticket;
        mail.next_ticket += 1;
        mail.lent_out = Some(ticket);
        drop(mail);
        self.put(Work::Lent(Lent {
            fd,
            bytesused: buf.bytesused,
            length: buf.length,
            source: buf.source.to_string(),
            import,
            captured,
            ts,
            ticket,
        }));
        Some(Ticket(ticket))
    }

    /// Waits, at most [`LEND_WAIT`], until the encoder has let go of the lent frame.
    pub fn returned(&self, ticket: Ticket) -> Returned {
        let deadline = Instant::now() + LEND_WAIT;
        let mut mail = self.mailbox.lock();
        loop {
            if let Some((t, returned)) = mail.returned {
                if t == ticket.0 {
                    mail.returned = None;
                    return returned;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                log::warn!(
                    "H.264: the encoder did not let go of the camera's buffer within \
                     {LEND_WAIT:?}; the frame goes back to the camera, the next ones are \
                     copied until it answers"
                );
                return Returned::Late;
            }
            mail = match self.mailbox.back.wait_timeout(mail, left) {
                Ok((m, _)) => m,
                Err(e) => e.into_inner().0,
            };
        }
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
    /// Frames may be lent at all (zero copy asked for, the hardware possibly used).
    zero_copy: bool,
    demand: Arc<Demand>,
    stats: Arc<Stats>,
    tx: Sender<Arc<H264Unit>>,
    mailbox: Arc<Mailbox>,
}

/// The encoder thread's state between pictures.
struct Run {
    encoder: Option<H264Encoder>,
    hw: Fallback,
    /// The next unit's number.
    seq: u64,
    /// Frames since the last keyframe; `None` before the encoder's first.
    since_key: Option<usize>,
    recent: RecentRate,
    last_error: Option<String>,
}

/// What is known of a picture besides its pixels.
struct Meta {
    ts: f64,
    size: (u32, u32),
    placeholder: bool,
}

impl Worker {
    /// The next work; `None` once stopping. Drops the encoder after [`IDLE_DROP`] idle.
    fn next_job(
        &self,
        encoder: &mut Option<H264Encoder>,
        idle_since: &mut Instant,
    ) -> Option<Work> {
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

    /// Whether frames are lent from now on: only while the hardware works (or is due), with
    /// zero copy on and never refused by the driver.
    fn set_lending(&self, on: bool) {
        let mut mail = self.mailbox.lock();
        mail.lending = on && self.zero_copy && !mail.import_refused;
    }

    /// A new encoder for `size` pictures: the hardware one when it is due, else OpenH264.
    fn open(&self, hw: &mut Fallback, size: (u32, u32)) -> Result<H264Encoder, H264Error> {
        match self.try_hardware(hw, size, None) {
            Some(e) => Ok(e),
            None => H264Encoder::new(&self.settings, self.fps),
        }
    }

    /// The hardware encoder for `size` pictures (reading `lent`'s buffers in place, if
    /// given) if the settings ask for it, it is due (never tried, or failed a retry period
    /// ago) and it opens.
    fn try_hardware(
        &self,
        hw: &mut Fallback,
        size: (u32, u32),
        lent: Option<&Lent>,
    ) -> Option<H264Encoder> {
        if !hw.due() {
            return None;
        }
        let counter = &self.stats.h264_encoder_fallbacks;
        let opened = match lent {
            None => H264Encoder::hardware(&self.settings, self.fps, size.0, size.1),
            #[cfg(feature = "v4l")]
            Some(lent) => H264Encoder::hardware_importing(
                &self.settings,
                self.fps,
                &lent.import,
                &lent.source,
            ),
            #[cfg(not(feature = "v4l"))]
            Some(lent) => match *lent {},
        };
        match opened {
            Ok(e) => {
                hw.opened(&e.description);
                self.set_lending(true);
                return Some(e);
            }
            Err(e @ H264Error::NotImportable(_)) => self.refuse_imports(&e),
            Err(H264Error::NoHardware(why)) if !hw.has_failed() => {
                // v4l2 checked for one at start, so this one went away before the first
                // picture; auto without one (a Pi 5) is OpenH264 for good.
                if self.settings.encoder == H264EncoderKind::V4l2 {
                    hw.fail(why, counter);
                } else {
                    hw.none_here(&why);
                }
                self.set_lending(false);
            }
            Err(e) if hw.has_failed() => hw.still_failing(&e),
            Err(e) => {
                hw.fail(e.to_string(), counter);
                self.set_lending(false);
            }
        }
        None
    }

    /// The hardware encoder in use failed: it is dropped (OpenH264 encodes until the retry,
    /// nothing is lent meanwhile), counted and logged once.
    fn hardware_failed(&self, run: &mut Run, why: &H264Error) {
        run.hw
            .fail(why.to_string(), &self.stats.h264_encoder_fallbacks);
        self.set_lending(false);
        run.encoder = None;
        run.since_key = None;
    }

    /// The driver cannot read the camera's buffers: pictures are copied from now on.
    fn refuse_imports(&self, why: &H264Error) {
        log::info!(
            "H.264: the hardware encoder cannot read the camera's buffers in place ({why}); \
             pictures are copied into its own"
        );
        self.mailbox.lock().import_refused = true;
        self.set_lending(false);
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

    /// Whether this picture is to be a forced keyframe: a fresh encoder starts with one
    /// anyway; otherwise a request is honoured once the gap since the last keyframe allows
    /// it (the request waits until then).
    fn keyframe_due(&self, since_key: Option<usize>) -> bool {
        let force =
            since_key.is_some_and(|n| n >= KEY_GAP_FRAMES) && self.demand.take_keyframe_request();
        if since_key.is_none() {
            self.demand.take_keyframe_request();
        }
        force
    }

    fn run(self) {
        let mut run = Run {
            encoder: None,
            hw: Fallback::new(
                "H.264",
                "OpenH264",
                self.settings.encoder == H264EncoderKind::Software,
            ),
            seq: 0,
            since_key: None,
            recent: RecentRate::default(),
            last_error: None,
        };
        let mut idle_since = Instant::now();
        while let Some(work) = self.next_job(&mut run.encoder, &mut idle_since) {
            idle_since = Instant::now();
            let sent = match work {
                Work::Picture(job) => {
                    let sent = self.encode_picture(&mut run, &job);
                    self.mailbox.lock().spare = Some(job.image);
                    sent
                }
                Work::Lent(lent) => self.encode_lent(&mut run, lent),
            };
            if !sent {
                break;
            }
        }
        // Stopping: a frame still lent is not going to be read.
        let out = self.mailbox.lock().lent_out;
        if let Some(ticket) = out {
            self.mailbox.give_back(ticket, Returned::Copy);
        }
    }

    /// Encodes a converted picture; false once the hub is gone.
    fn encode_picture(&self, run: &mut Run, job: &Job) -> bool {
        let size = (job.image.width, job.image.height);
        let counters = self.stats.codec(Codec::H264);
        // On OpenH264 after a failure: the hardware again once its retry is due.
        if run
            .encoder
            .as_ref()
            .is_some_and(|e| e.hardware_device().is_none() && run.hw.has_failed() && run.hw.due())
        {
            if let Some(e) = self.try_hardware(&mut run.hw, size, None) {
                self.in_use(&e);
                run.since_key = None;
                run.encoder = Some(e);
            }
        }
        // An encoder that reads the camera's buffers in place has none to copy into: this
        // picture (a placeholder, a frame not lent) goes to one that copies.
        #[cfg(feature = "v4l")]
        if run.encoder.as_ref().is_some_and(|e| e.import().is_some()) {
            run.encoder = None;
        }
        let enc = match run.encoder.as_mut() {
            Some(e) => e,
            None => match self.open(&mut run.hw, size) {
                Ok(e) => {
                    self.in_use(&e);
                    run.since_key = None;
                    run.encoder.insert(e)
                }
                Err(e) => {
                    Stats::add(&counters.errors, 1);
                    if run.last_error.as_deref() != Some(&e.to_string()) {
                        log::error!("cannot start the H.264 encoder: {e}");
                        run.last_error = Some(e.to_string());
                    }
                    return true;
                }
            },
        };
        let force = self.keyframe_due(run.since_key);
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
            self.hardware_failed(run, e);
            hardware = false;
            result = match H264Encoder::new(&self.settings, self.fps) {
                Ok(mut e) => {
                    self.in_use(&e);
                    let r = e.encode(picture, millis, false);
                    run.encoder = Some(e);
                    r
                }
                Err(e) => Err(e),
            };
        }
        let meta = Meta {
            ts: job.ts,
            size,
            placeholder: job.placeholder,
        };
        self.publish(run, result, started.elapsed(), hardware, force, &meta)
    }

    /// Encodes a lent frame in place, answering for it as soon as the driver let go of its
    /// buffer; false once the hub is gone.
    #[cfg(feature = "v4l")]
    fn encode_lent(&self, run: &mut Run, lent: Lent) -> bool {
        use std::os::fd::AsFd;
        let meta = Meta {
            ts: lent.ts,
            size: lent.import.size,
            placeholder: false,
        };
        let copy = |why: Option<&str>| {
            if let Some(why) = why {
                log::debug!("H.264: lent frame not read in place: {why}");
            }
            self.mailbox.give_back(lent.ticket, Returned::Copy);
            true
        };
        // The encoder reading this layout in place: the one running, or the hardware
        // opened for it (a copying one, or OpenH264 once the hardware is due again, is
        // replaced).
        if let Some(e) = run.encoder.as_ref() {
            if e.import() != Some(lent.import) {
                if e.hardware_device().is_none() && !run.hw.due() {
                    return copy(Some("OpenH264 stands in for the hardware"));
                }
                run.encoder = None;
            }
        }
        let enc = match run.encoder.as_mut() {
            Some(e) => e,
            None => match self.try_hardware(&mut run.hw, lent.import.size, Some(&lent)) {
                Some(e) => {
                    self.in_use(&e);
                    run.since_key = None;
                    run.encoder.insert(e)
                }
                None => return copy(Some("no hardware encoder reads it")),
            },
        };
        let force = self.keyframe_due(run.since_key);
        let buf = crate::capture::DmaBuf {
            fd: lent.fd.as_fd(),
            bytesused: lent.bytesused,
            length: lent.length,
            source: &lent.source,
        };
        let started = Instant::now();
        let millis = lent.captured.as_nanos() / 1_000_000;
        let result = enc.encode_import(buf, millis, force);
        match result {
            Err(e) if !e.is_gone() && !enc.imported_once() => {
                // The very first import failed: the driver cannot read this camera's
                // buffers. Dropping the encoder hands the buffer back (STREAMOFF).
                run.encoder = None;
                self.refuse_imports(&e);
                copy(None)
            }
            Err(e) => {
                // The hardware failed or vanished: this frame is converted and OpenH264
                // encodes it, like the next ones until the hardware is back.
                self.hardware_failed(run, &e);
                copy(None)
            }
            Ok(unit) => {
                self.mailbox.give_back(lent.ticket, Returned::Encoded);
                if unit.is_some() {
                    Stats::add(&self.stats.h264_zero_copy_units, 1);
                }
                self.publish(run, Ok(unit), started.elapsed(), true, force, &meta)
            }
        }
    }

    #[cfg(not(feature = "v4l"))]
    fn encode_lent(&self, _run: &mut Run, lent: Lent) -> bool {
        match lent {}
    }

    /// Counts an encoder's result and sends its unit to the hub; false once it is gone.
    fn publish(
        &self,
        run: &mut Run,
        result: Result<Option<AccessUnit>, H264Error>,
        took: Duration,
        hardware: bool,
        force: bool,
        meta: &Meta,
    ) -> bool {
        let counters = self.stats.codec(Codec::H264);
        match result {
            Ok(Some(au)) => {
                run.last_error = None;
                run.since_key = run.since_key.map(|n| n + 1);
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
                    run.since_key = Some(0);
                    if let (Some(codec), Ok(mut slot)) =
                        (codec_string(&au.data), self.stats.h264_codec.lock())
                    {
                        *slot = Some(codec);
                    }
                }
                run.recent.record(au.data.len(), &counters.recent_bps);
                let unit = H264Unit::new(meta.ts, meta.size, au.keyframe, au.data)
                    .with(meta.placeholder, run.seq);
                run.seq += 1;
                match self.tx.force_send(Arc::new(unit)) {
                    Ok(None) => {}
                    // The hub sees the gap in `seq` and restarts its clients at a keyframe.
                    Ok(Some(_)) => Stats::add(&self.stats.video_queue_dropped, 1),
                    Err(_) => return false,
                }
            }
            Ok(None) => {}
            Err(e) => {
                Stats::add(&counters.errors, 1);
                if run.last_error.as_deref() != Some(&e.to_string()) {
                    log::warn!("H.264: dropping a frame the encoder refused: {e}");
                    run.last_error = Some(e.to_string());
                }
            }
        }
        true
    }
}

#[cfg(all(test, feature = "v4l", feature = "h264"))]
mod tests {
    use super::*;
    use crate::capture::DmaBuf;
    use crate::encode::import::Import;
    use crate::encode::m2m;
    use std::os::fd::AsFd;

    const SIZE: (u32, u32) = (64, 48);

    type Started = (
        H264Stage,
        async_channel::Receiver<Arc<H264Unit>>,
        Arc<Stats>,
    );

    fn stage(encoder: H264EncoderKind, zero_copy: bool) -> Started {
        let (tx, rx) = async_channel::bounded(8);
        let stats = Arc::new(Stats::default());
        let settings = H264Settings {
            encoder,
            ..H264Settings::default_for_tests()
        };
        let stage = H264Stage::start(
            settings,
            15,
            zero_copy,
            Arc::new(Demand::default()),
            stats.clone(),
            tx,
        )
        .unwrap();
        (stage, rx, stats)
    }

    /// A frame "in a DMABUF": any descriptor will do where nothing reads it.
    fn lend(stage: &H264Stage, file: &std::fs::File) -> Option<Ticket> {
        let len = (SIZE.0 * SIZE.1 * 3 / 2) as usize;
        let buf = DmaBuf {
            fd: file.as_fd(),
            bytesused: len,
            length: len,
            source: "/dev/video0",
        };
        let import = Import {
            fourcc: m2m::PIX_FMT_YUV420,
            size: SIZE,
            stride: SIZE.0 as usize,
            image_len: len,
        };
        stage.lend(buf, import, MonoTime::now(), 1.0)
    }

    fn picture() -> Job {
        Job {
            image: I420Image::new(SIZE.0, SIZE.1),
            captured: MonoTime::now(),
            ts: 1.0,
            placeholder: false,
        }
    }

    #[test]
    fn without_a_hardware_encoder_one_frame_is_lent_back_for_a_copy_and_no_more() {
        if super::super::h264::find_hardware().is_ok() {
            return; // a machine with an M2M encoder: tests/m2m_vm.rs covers that
        }
        let file = std::fs::File::open("/dev/null").unwrap();
        let (stage, rx, stats) = stage(H264EncoderKind::Auto, true);
        let ticket = lend(&stage, &file).expect("auto may find hardware: the first frame is lent");
        assert_eq!(stage.returned(ticket), Returned::Copy);
        assert!(
            lend(&stage, &file).is_none(),
            "no hardware here: frames are not lent again"
        );
        stage.offer(picture());
        let unit = rx.recv_blocking().expect("OpenH264 encodes the copy");
        assert!(unit.keyframe);
        assert_eq!(Stats::get(&stats.h264_zero_copy_units), 0);
        assert_eq!(Stats::get(&stats.h264_software_units), 1);
        assert_eq!(
            Stats::get(&stats.h264_encoder_fallbacks),
            0,
            "auto: not a fallback"
        );
    }

    #[test]
    fn nothing_is_lent_with_no_zero_copy_or_the_software_encoder() {
        let file = std::fs::File::open("/dev/null").unwrap();
        for (kind, zero_copy) in [
            (H264EncoderKind::Auto, false),
            (H264EncoderKind::V4l2, false),
            (H264EncoderKind::Software, true),
        ] {
            let (stage, _rx, _stats) = stage(kind, zero_copy);
            assert!(
                lend(&stage, &file).is_none(),
                "{kind:?}, zero copy {zero_copy}"
            );
        }
    }

    #[test]
    fn a_required_encoder_missing_at_the_first_lent_frame_is_a_fallback_and_lending_stops() {
        if super::super::h264::find_hardware().is_ok() {
            return;
        }
        let file = std::fs::File::open("/dev/null").unwrap();
        let (stage, rx, stats) = stage(H264EncoderKind::V4l2, true);
        let ticket = lend(&stage, &file).expect("v4l2: the first frame is lent");
        assert_eq!(stage.returned(ticket), Returned::Copy);
        assert_eq!(Stats::get(&stats.h264_encoder_fallbacks), 1);
        assert!(
            lend(&stage, &file).is_none(),
            "OpenH264 stands in: nothing lent"
        );
        stage.offer(picture());
        assert!(
            rx.recv_blocking()
                .expect("OpenH264 encodes the copy")
                .keyframe
        );
    }
}
