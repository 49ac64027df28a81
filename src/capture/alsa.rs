//! Microphones through ALSA (cargo feature `alsa`).
//!
//! A PCM is opened non-blocking, set to interleaved S16_LE with a 20 ms period and a buffer
//! of [`PERIODS`] periods, and read a whole 20 ms chunk at a time. Each chunk is stamped
//! with the capture instant of its first sample, taken from the driver's status right after
//! the read: `htstamp − (delay + frames) / rate` on CLOCK_MONOTONIC, the clock video uses.
//! A driver without usable timestamps falls back to the read time minus the frames still
//! buffered. The raw stamps jitter by the driver's pointer granularity (a jiffy on
//! snd-aloop, 1 ms on USB audio), so [`ChunkClock`] advances them by exactly one chunk and
//! pulls them gently towards the measurement, which also follows a sound card whose clock
//! drifts from the system's.
//!
//! Overruns (EPIPE) and suspends (ESTRPIPE) are recovered in place and counted; anything
//! else (ENODEV when a USB microphone is pulled out) is [`CaptureError::Unavailable`], and
//! the pipeline reopens the device every second while video keeps streaming.
#![forbid(unsafe_code)]

use super::{AudioBlock, AudioFormat, AudioParams, AudioSource, CaptureError, POLL_TIMEOUT};
use crate::clock::{self, MonoTime};
use alsa::pcm::{Access, Format, Frames, HwParams, State, TstampType, PCM};
use alsa::{Direction, ValueOr};
use rustix::io::Errno;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// Length of one chunk on the wire, and of one ALSA period.
pub const CHUNK: Duration = super::test::CHUNK;
/// Periods in the ALSA buffer (0.5 s): the margin before an overrun when the machine is
/// busy. Capture latency is one period whatever the buffer size, and the stamps of chunks
/// read late still come from the driver, so a deep buffer costs only memory.
pub const PERIODS: u32 = 25;
/// The rate used when `--audio-samplerate` is not given and the device offers it.
pub const PREFERRED_RATE: u32 = 48_000;
/// A running device that delivers nothing for this long is treated as gone.
pub const STALL_LIMIT: Duration = Duration::from_secs(3);
/// How old the driver's `htstamp` may be at the status read. It is the time of the last
/// pointer update, which moves every period, so even a read late by the whole buffer
/// (`PERIODS` × `CHUNK`, 0.5 s) finds it fresh; one older than this is on another clock.
pub const STAMP_MAX_AGE: Duration = Duration::from_secs(1);
/// A measured stamp further than this from the predicted one is an outlier.
pub const SNAP: Duration = Duration::from_millis(20);
/// This many outliers in a row restart the chunk clock from the measurement.
pub const OUTLIERS_TO_SNAP: u32 = 5;
/// The chunk clock corrects 1/`CORRECTION` of the measured error per chunk.
pub const CORRECTION: i128 = 32;

/// The ALSA PCM name for `--audio-device`: a bare number N is card N through the plug layer
/// (`plughw:N,0`, so rate and channel conversion work), anything else is a PCM name, and no
/// flag is the system's default input.
pub fn pcm_name(device: Option<&str>) -> String {
    match device.map(str::trim) {
        None | Some("") => "default".to_string(),
        Some(d) if d.bytes().all(|b| b.is_ascii_digit()) => format!("plughw:{d},0"),
        Some(d) => d.to_string(),
    }
}

/// The raw device behind a `plughw:` name, whose own rates tell the card's native rate.
fn hardware_name(name: &str) -> Option<String> {
    name.strip_prefix("plughw:")
        .map(|rest| format!("hw:{rest}"))
}

/// The rate to ask for: the flag's; else 48000 when the device offers it; else the offered
/// rate nearest 48000 (`offered` is the device's `(min, max)`).
pub fn choose_rate(requested: Option<u32>, offered: (u32, u32), offers_preferred: bool) -> u32 {
    match requested {
        Some(rate) => rate,
        None if offers_preferred => PREFERRED_RATE,
        None => PREFERRED_RATE.clamp(offered.0.min(offered.1), offered.1.max(offered.0)),
    }
}

/// What to do about an errno from a PCM call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// An overrun (EPIPE): count it, prepare and restart the stream.
    Xrun,
    /// The system suspended (ESTRPIPE): count it, resume (or prepare) and restart.
    Suspended,
    /// Nothing wrong (EAGAIN, EINTR): try again.
    Retry,
    /// The device is gone or broken (ENODEV, EIO, EBADFD, …): close it and reopen later.
    Reopen,
}

/// Decides how to handle `errno` (positive) from a PCM call.
pub fn recovery_for(errno: i32) -> Recovery {
    match Errno::from_raw_os_error(errno) {
        Errno::PIPE => Recovery::Xrun,
        Errno::STRPIPE => Recovery::Suspended,
        Errno::AGAIN | Errno::INTR => Recovery::Retry,
        _ => Recovery::Reopen,
    }
}

/// A user-facing reason for an ALSA failure, with a hint where one helps.
fn explain(e: &alsa::Error) -> String {
    let hint = match Errno::from_raw_os_error(e.errno()) {
        Errno::NOENT | Errno::NXIO => {
            "no such capture device; `arecord -l` lists them (use --audio-device CARD_NUMBER)"
        }
        Errno::NODEV => "the device is gone (unplugged?)",
        Errno::BUSY => "the device is busy: another program is recording from it",
        Errno::ACCESS | Errno::PERM => {
            "permission denied: the user needs to be in the `audio` group"
        }
        Errno::INVAL => "the device refused the settings; a plughw: name converts formats",
        _ => "",
    };
    if hint.is_empty() {
        e.to_string()
    } else {
        format!("{hint} ({e})")
    }
}

/// Capture instant of the first of `frames` frames just read, from the status taken right
/// after the read. `htstamp` is the driver's time of its last pointer update, `delay` the
/// frames captured but not yet read at that instant, `now` the time just after the status.
///
/// The driver stamp is used when it passes the check every source applies
/// ([`clock::checked_stamp`]: set, not after `now`, at most [`STAMP_MAX_AGE`] old; a stamp
/// from another clock, or a driver that never sets it, fails this). Otherwise `now` stands
/// in for it. Returns the instant and whether the driver's was used.
pub fn first_sample_instant(
    now: MonoTime,
    htstamp: MonoTime,
    delay: i64,
    frames: usize,
    rate: u32,
) -> (MonoTime, bool) {
    let checked = clock::checked_stamp(htstamp, now, STAMP_MAX_AGE);
    let plausible = checked.is_ok();
    let base = checked.unwrap_or(now);
    let rate = u64::from(rate.max(1));
    // A negative delay (some plugins) means nothing is buffered; a huge one is nonsense.
    let buffered = delay.clamp(0, 10 * rate as i64) as u64;
    let span_frames = buffered + frames as u64;
    let span =
        Duration::from_nanos((u128::from(span_frames) * 1_000_000_000 / u128::from(rate)) as u64);
    (base.earlier_by(span), plausible)
}

/// Turns jittery per-chunk measurements into stamps that advance by exactly one chunk,
/// corrected by 1/[`CORRECTION`] of the error each time.
///
/// While no samples are lost the true instants are exactly one chunk apart, so a single
/// measurement further than [`SNAP`] off (a preempted status call, a late interrupt) is
/// noise and ignored; only [`OUTLIERS_TO_SNAP`] in a row, or a [`ChunkClock::reset`] after
/// lost samples, restart the clock from the measurement.
#[derive(Debug, Default)]
pub struct ChunkClock {
    next: Option<i128>,
    outliers: u32,
}

impl ChunkClock {
    /// The stamp for a chunk measured at `measured`, lasting `duration`.
    pub fn stamp(&mut self, measured: MonoTime, duration: Duration) -> MonoTime {
        let m = i128::from(measured.as_nanos());
        let t = match self.next {
            Some(predicted) if (m - predicted).abs() <= SNAP.as_nanos() as i128 => {
                self.outliers = 0;
                predicted + (m - predicted) / CORRECTION
            }
            Some(predicted) if self.outliers + 1 < OUTLIERS_TO_SNAP => {
                self.outliers += 1;
                predicted
            }
            _ => {
                self.outliers = 0;
                m
            }
        };
        self.next = Some(t + duration.as_nanos() as i128);
        MonoTime::from_nanos(t.clamp(0, i128::from(u64::MAX)) as u64)
    }

    /// Forgets the prediction: samples were lost, the next measurement is taken as is.
    pub fn reset(&mut self) {
        self.next = None;
        self.outliers = 0;
    }
}

/// A microphone (or any ALSA capture PCM).
pub struct AlsaSource {
    pcm: PCM,
    name: String,
    format: AudioFormat,
    chunk_frames: usize,
    period_frames: Frames,
    buffer_frames: Frames,
    chunk: Vec<u8>,
    filled: usize,
    clock: ChunkClock,
    xruns_total: u64,
    xruns_unreported: u64,
    last_data: Instant,
    driver_stamps: Option<bool>,
}

fn setup_error(name: &str, what: &str, e: alsa::Error) -> CaptureError {
    CaptureError::unavailable(format!("setting up {name} ({what})"), explain(&e))
}

/// The native rate range of the raw device behind a `plughw:` name, and whether it offers
/// [`PREFERRED_RATE`]; `None` if there is no such device or it is busy.
fn native_rates(name: &str) -> Option<((u32, u32), bool)> {
    let hw = hardware_name(name)?;
    let pcm = PCM::new(&hw, Direction::Capture, true).ok()?;
    let hwp = HwParams::any(&pcm).ok()?;
    let range = (hwp.get_rate_min().ok()?, hwp.get_rate_max().ok()?);
    Some((range, hwp.test_rate(PREFERRED_RATE).is_ok()))
}

/// Runs `f` with alsa-lib's own error messages on this thread going to the log at debug
/// level instead of stderr. alsa-lib prints one ("cannot find card '1'", "open … failed") on
/// every failed open: once a second while a microphone is missing, on top of our own
/// warning, which already says what failed and is given once.
fn quietly<T>(f: impl FnOnce() -> T) -> T {
    // A fresh thread-local buffer each time (the crate's way of emptying it); the previous
    // one, with anything said outside `quietly`, is dropped with its contents.
    let messages = alsa::Output::local_error_handler();
    let result = f();
    if let Ok(messages) = messages {
        for line in messages.borrow().to_string().lines() {
            log::debug!("alsa-lib: {line}");
        }
    }
    result
}

impl AlsaSource {
    /// Opens and starts the capture device `params` names.
    pub fn open(params: &AudioParams) -> Result<AlsaSource, CaptureError> {
        quietly(|| AlsaSource::open_device(params))
    }

    fn open_device(params: &AudioParams) -> Result<AlsaSource, CaptureError> {
        let name = pcm_name(params.device.as_deref());
        // Probe before opening the plug device: both may be the same exclusive hardware.
        let native = native_rates(&name);
        let pcm = PCM::new(&name, Direction::Capture, true).map_err(|e| {
            CaptureError::unavailable(format!("opening ALSA capture device {name}"), explain(&e))
        })?;
        let channels = u32::from(params.channels);
        let (rate, period_frames, buffer_frames) = {
            let hwp = HwParams::any(&pcm).map_err(|e| setup_error(&name, "parameters", e))?;
            hwp.set_access(Access::RWInterleaved)
                .map_err(|e| setup_error(&name, "interleaved access", e))?;
            hwp.set_format(Format::S16LE).map_err(|_| {
                CaptureError::Config(format!(
                    "{name} cannot capture S16_LE samples; use a plughw: device to convert"
                ))
            })?;
            if hwp.set_channels(channels).is_err() {
                let (min, max) = (
                    hwp.get_channels_min().unwrap_or(0),
                    hwp.get_channels_max().unwrap_or(0),
                );
                return Err(CaptureError::Config(format!(
                    "{name} captures {min}-{max} channels, not {channels}; \
                     change --audio-channels or use a plughw: device to convert"
                )));
            }
            let (offered, offers_preferred) = native.unwrap_or_else(|| {
                (
                    (
                        hwp.get_rate_min().unwrap_or(PREFERRED_RATE),
                        hwp.get_rate_max().unwrap_or(PREFERRED_RATE),
                    ),
                    hwp.test_rate(PREFERRED_RATE).is_ok(),
                )
            });
            let wanted = choose_rate(params.sample_rate, offered, offers_preferred);
            let rate = hwp
                .set_rate_near(wanted, ValueOr::Nearest)
                .map_err(|e| setup_error(&name, "sample rate", e))?;
            if rate != wanted {
                log::warn!("{name}: asked for {wanted} Hz, the device gives {rate} Hz");
            }
            let chunk_frames = AudioFormat {
                sample_rate: rate,
                channels: params.channels,
            }
            .frames_in(CHUNK) as Frames;
            let period = hwp
                .set_period_size_near(chunk_frames, ValueOr::Nearest)
                .map_err(|e| setup_error(&name, "period size", e))?;
            let buffer = hwp
                .set_buffer_size_near(period * PERIODS as Frames) // Frames is 32-bit on armv7
                .map_err(|e| setup_error(&name, "buffer size", e))?;
            pcm.hw_params(&hwp)
                .map_err(|e| setup_error(&name, "hardware parameters", e))?;
            (rate, period, buffer)
        };
        let format = AudioFormat {
            sample_rate: rate,
            channels: params.channels,
        };
        let chunk_frames = format.frames_in(CHUNK);
        {
            let swp = pcm
                .sw_params_current()
                .map_err(|e| setup_error(&name, "software parameters", e))?;
            swp.set_avail_min(chunk_frames as Frames)
                .map_err(|e| setup_error(&name, "wake-up threshold", e))?;
            swp.set_start_threshold(1)
                .map_err(|e| setup_error(&name, "start threshold", e))?;
            swp.set_tstamp_mode(true)
                .map_err(|e| setup_error(&name, "timestamp mode", e))?;
            // Older kernels and some plugins only stamp with the wall clock; the sanity check
            // in `first_sample_instant` then falls back to read times.
            if let Err(e) = swp.set_tstamp_type(TstampType::Monotonic) {
                log::debug!("{name}: no CLOCK_MONOTONIC timestamps: {e}");
            }
            pcm.sw_params(&swp)
                .map_err(|e| setup_error(&name, "software parameters", e))?;
        }
        pcm.prepare()
            .map_err(|e| setup_error(&name, "prepare", e))?;
        pcm.start().map_err(|e| setup_error(&name, "start", e))?;
        Ok(AlsaSource {
            pcm,
            name,
            format,
            chunk_frames,
            period_frames,
            buffer_frames,
            chunk: vec![0; chunk_frames * format.bytes_per_frame()],
            filled: 0,
            clock: ChunkClock::default(),
            xruns_total: 0,
            xruns_unreported: 0,
            last_data: Instant::now(),
            driver_stamps: None,
        })
    }

    /// Restarts capture after an overrun or suspend; the partial chunk is dropped since
    /// samples are missing after it.
    fn restart(&mut self, suspended: bool) -> Result<(), CaptureError> {
        self.xruns_total += 1;
        self.xruns_unreported += 1;
        // Log the 1st, 2nd, 4th, 8th… so an overrun storm cannot flood the log.
        if self.xruns_total.is_power_of_two() {
            log::warn!(
                "{}: {} (#{} since open); recovered, samples lost",
                self.name,
                if suspended { "suspended" } else { "overrun" },
                self.xruns_total
            );
        }
        if suspended {
            // resume() says EAGAIN while the hardware wakes up; bounded so stop stays prompt.
            let mut resumed = false;
            for _ in 0..10 {
                match self.pcm.resume() {
                    Ok(()) => {
                        resumed = true;
                        break;
                    }
                    Err(e) if e.errno() == Errno::AGAIN.raw_os_error() => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(_) => break,
                }
            }
            if resumed && self.pcm.state() == State::Running {
                self.filled = 0;
                self.clock.reset();
                return Ok(());
            }
        }
        self.pcm.prepare().map_err(|e| {
            CaptureError::unavailable(format!("recovering {}", self.name), explain(&e))
        })?;
        self.pcm.start().map_err(|e| {
            CaptureError::unavailable(format!("restarting {}", self.name), explain(&e))
        })?;
        self.filled = 0;
        self.clock.reset();
        Ok(())
    }

    /// Handles an error from a PCM call: recovered in place, or the device must be reopened.
    fn recover(&mut self, e: alsa::Error) -> Result<(), CaptureError> {
        match recovery_for(e.errno()) {
            Recovery::Xrun => self.restart(false),
            Recovery::Suspended => self.restart(true),
            Recovery::Retry => Ok(()),
            Recovery::Reopen => Err(CaptureError::unavailable(
                format!("capturing from {}", self.name),
                explain(&e),
            )),
        }
    }

    /// Nothing complete arrived in time: check the stream is alive, then report "nothing".
    fn idle(&mut self) -> Result<Option<AudioBlock<'_>>, CaptureError> {
        match self.pcm.state() {
            State::XRun => self.restart(false)?,
            State::Suspended => self.restart(true)?,
            State::Disconnected => {
                return Err(CaptureError::unavailable(
                    format!("capturing from {}", self.name),
                    "the device is gone (unplugged?)",
                ))
            }
            State::Prepared | State::Setup => {
                let _ = self.pcm.start();
            }
            _ => {}
        }
        if self.last_data.elapsed() > STALL_LIMIT {
            return Err(CaptureError::unavailable(
                format!("capturing from {}", self.name),
                format!("no audio for {}s", STALL_LIMIT.as_secs()),
            ));
        }
        Ok(None)
    }

    /// Stamps the chunk just completed.
    // time_t, long and snd_pcm_sframes_t are 32-bit on 32-bit ARM: the conversions matter there.
    #[allow(clippy::useless_conversion)]
    fn stamp_chunk(&mut self) -> MonoTime {
        let (htstamp, delay) = match self.pcm.status() {
            Ok(status) => {
                let ts = status.get_htstamp();
                (
                    MonoTime::from_timespec(i64::from(ts.tv_sec), i64::from(ts.tv_nsec)),
                    i64::from(status.get_delay()),
                )
            }
            Err(_) => (MonoTime::default(), 0),
        };
        let now = MonoTime::now();
        let (measured, from_driver) = first_sample_instant(
            now,
            htstamp,
            delay,
            self.chunk_frames,
            self.format.sample_rate,
        );
        if self.driver_stamps != Some(from_driver) {
            if from_driver {
                log::info!("{}: chunks stamped from driver timestamps", self.name);
            } else {
                log::info!(
                    "{}: the driver gives no usable timestamps; stamping from read times",
                    self.name
                );
            }
            self.driver_stamps = Some(from_driver);
        }
        let duration = Duration::from_nanos(
            (self.chunk_frames as u64 * 1_000_000_000) / u64::from(self.format.sample_rate),
        );
        self.clock.stamp(measured, duration)
    }
}

impl AudioSource for AlsaSource {
    fn describe(&self) -> String {
        format!(
            "ALSA {}: {} Hz x {} ch s16le, period {} frames, buffer {} frames",
            self.name,
            self.format.sample_rate,
            self.format.channels,
            self.period_frames,
            self.buffer_frames
        )
    }

    fn format(&self) -> AudioFormat {
        self.format
    }

    fn next_chunk(&mut self) -> Result<Option<AudioBlock<'_>>, CaptureError> {
        let deadline = Instant::now() + POLL_TIMEOUT;
        let frame_bytes = self.format.bytes_per_frame();
        while self.filled < self.chunk.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return self.idle();
            }
            match self.pcm.wait(Some(left.as_millis().max(1) as u32)) {
                Ok(true) => {}
                Ok(false) => return self.idle(),
                Err(e) => {
                    self.recover(e)?;
                    continue;
                }
            }
            let read = self.pcm.io_bytes().readi(&mut self.chunk[self.filled..]);
            match read {
                Ok(0) => {
                    // Only file-backed plugins at end of input do this; don't spin.
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(frames) => {
                    self.filled += frames * frame_bytes;
                    self.last_data = Instant::now();
                }
                Err(e) => self.recover(e)?,
            }
        }
        let captured = self.stamp_chunk();
        self.filled = 0;
        Ok(Some(AudioBlock {
            captured,
            pcm: &self.chunk,
        }))
    }

    fn take_xruns(&mut self) -> u64 {
        std::mem::take(&mut self.xruns_unreported)
    }
}

/// Every capture device, as `arecord -l` would list them, and the capture PCMs the ALSA
/// configuration defines, with the `--audio-device` value for each.
pub fn list_devices() -> String {
    quietly(describe_devices)
}

fn describe_devices() -> String {
    let mut out = String::from("ALSA capture devices (--audio-device CARD or a PCM name):\n");
    let mut found = false;
    for card in alsa::card::Iter::new().flatten() {
        let index = card.get_index();
        let Ok(ctl) = alsa::Ctl::from_card(&card, false) else {
            continue;
        };
        let (id, card_name) = match ctl.card_info() {
            Ok(info) => (
                info.get_id().unwrap_or("?").to_string(),
                info.get_name().unwrap_or("?").to_string(),
            ),
            Err(_) => ("?".to_string(), "?".to_string()),
        };
        for device in alsa::ctl::DeviceIter::new(&ctl) {
            let Ok(info) = ctl.pcm_info(device as u32, 0, Direction::Capture) else {
                continue;
            };
            found = true;
            let _ = writeln!(
                out,
                "  card {index}: {id} [{card_name}], device {device}: {}\n    \
                 --audio-device {} or --audio-device plughw:CARD={id},DEV={device}",
                info.get_name().unwrap_or("?"),
                if device == 0 {
                    index.to_string()
                } else {
                    format!("plughw:{index},{device}")
                },
            );
        }
    }
    if !found {
        out.push_str("  (no sound card with a capture device)\n");
    }
    out.push_str("Capture PCMs in the ALSA configuration:\n");
    let mut described = false;
    if let Ok(hints) = alsa::device_name::HintIter::new_str(None, "pcm") {
        for hint in hints {
            if hint.direction == Some(Direction::Playback) {
                continue;
            }
            let Some(name) = hint.name else { continue };
            if name == "null" {
                continue;
            }
            let desc = hint.desc.unwrap_or_default().replace('\n', " - ");
            let _ = writeln!(out, "  {name}: {desc}");
            described = true;
        }
    }
    if !described {
        out.push_str("  (none described; `default` is the system's default input)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_flag_maps_numbers_to_plughw_cards_and_keeps_names() {
        assert_eq!(pcm_name(None), "default");
        assert_eq!(pcm_name(Some("1")), "plughw:1,0");
        assert_eq!(pcm_name(Some(" 0 ")), "plughw:0,0");
        assert_eq!(
            pcm_name(Some("plughw:CARD=Mic,DEV=0")),
            "plughw:CARD=Mic,DEV=0"
        );
        assert_eq!(pcm_name(Some("default")), "default");
        assert_eq!(pcm_name(Some("dsnoop:1")), "dsnoop:1");
        assert_eq!(hardware_name("plughw:1,0").as_deref(), Some("hw:1,0"));
        assert_eq!(hardware_name("default"), None);
    }

    #[test]
    fn rate_prefers_the_flag_then_48k_then_the_nearest_offered() {
        assert_eq!(choose_rate(Some(44_100), (8_000, 48_000), true), 44_100);
        assert_eq!(choose_rate(None, (8_000, 192_000), true), 48_000);
        assert_eq!(choose_rate(None, (44_100, 44_100), false), 44_100);
        assert_eq!(choose_rate(None, (8_000, 16_000), false), 16_000);
        assert_eq!(choose_rate(None, (96_000, 192_000), false), 96_000);
    }

    #[test]
    fn overruns_and_suspends_recover_in_place_and_unplug_reopens() {
        assert_eq!(recovery_for(Errno::PIPE.raw_os_error()), Recovery::Xrun);
        assert_eq!(
            recovery_for(Errno::STRPIPE.raw_os_error()),
            Recovery::Suspended
        );
        assert_eq!(recovery_for(Errno::AGAIN.raw_os_error()), Recovery::Retry);
        assert_eq!(recovery_for(Errno::INTR.raw_os_error()), Recovery::Retry);
        for gone in [Errno::NODEV, Errno::IO, Errno::BADFD, Errno::NOENT] {
            assert_eq!(recovery_for(gone.raw_os_error()), Recovery::Reopen);
        }
    }

    #[test]
    fn first_sample_is_delay_plus_chunk_before_the_driver_stamp() {
        let now = MonoTime::from_nanos(100_000_000_000);
        let htstamp = MonoTime::from_nanos(99_999_000_000); // 1 ms before now
                                                            // 480 frames still buffered + the 960 just read = 30 ms at 48 kHz.
        let (t, from_driver) = first_sample_instant(now, htstamp, 480, 960, 48_000);
        assert!(from_driver);
        assert_eq!(t.as_nanos(), 99_999_000_000 - 30_000_000);
    }

    #[test]
    fn absurd_driver_stamps_fall_back_to_the_read_time() {
        let now = MonoTime::from_nanos(100_000_000_000);
        // Never set, from the wall clock (far future), stale, or a little ahead of the read
        // (which the old rule let through by up to 1 ms: a negative latency on the wire).
        for bad in [
            0,
            1_700_000_000_000_000_000,
            98_000_000_000,
            100_000_500_000,
        ] {
            let (t, from_driver) =
                first_sample_instant(now, MonoTime::from_nanos(bad), 0, 882, 44_100);
            assert!(!from_driver, "{bad} accepted");
            assert_eq!(t.as_nanos(), 100_000_000_000 - 20_000_000);
        }
        // A negative delay counts as nothing buffered.
        let (t, _) = first_sample_instant(now, now, -5, 320, 16_000);
        assert_eq!(t.as_nanos(), 100_000_000_000 - 20_000_000);
    }

    #[test]
    fn chunk_clock_advances_by_one_chunk_despite_jitter() {
        let chunk = Duration::from_millis(20);
        let mut clock = ChunkClock::default();
        let start = 50_000_000_000u64;
        let mut stamps = Vec::new();
        for k in 0..200u64 {
            // A jiffy-granular driver: ±4 ms of jitter around the true instant.
            let jitter = [0i64, 4_000_000, -4_000_000, 2_000_000][(k % 4) as usize];
            let truth = start + k * 20_000_000;
            let measured = MonoTime::from_nanos((truth as i64 + jitter) as u64);
            stamps.push(clock.stamp(measured, chunk).as_nanos());
        }
        for pair in stamps.windows(2) {
            let step = pair[1] as i64 - pair[0] as i64;
            assert!(
                (step - 20_000_000).abs() <= 1_000_000,
                "step {step} ns is not 20 ms ± 1 ms"
            );
        }
        let last_truth = start + 199 * 20_000_000;
        let err = stamps[199] as i64 - last_truth as i64;
        assert!(
            err.abs() < 2_000_000,
            "stamps wander {err} ns from the truth"
        );
    }

    #[test]
    fn chunk_clock_follows_a_drifting_card_and_snaps_after_a_gap() {
        let chunk = Duration::from_millis(20);
        let mut clock = ChunkClock::default();
        // The card runs 0.1 % slow against the system clock: 20.02 ms per chunk.
        let mut last = 0;
        for k in 0..2_000u64 {
            let truth = 10_000_000_000 + k * 20_020_000;
            last = clock.stamp(MonoTime::from_nanos(truth), chunk).as_nanos();
            let err = last as i64 - truth as i64;
            assert!(err.abs() < 1_000_000, "chunk {k}: off by {err} ns");
        }
        // After an overrun (reset) the next stamp is the measurement itself.
        clock.reset();
        let after_gap = last + 220_000_000;
        assert_eq!(
            clock
                .stamp(MonoTime::from_nanos(after_gap), chunk)
                .as_nanos(),
            after_gap
        );
    }

    #[test]
    fn chunk_clock_ignores_a_lone_outlier_but_follows_a_lasting_jump() {
        let chunk = Duration::from_millis(20);
        let ms = 1_000_000u64;
        let mut clock = ChunkClock::default();
        for k in 0..10 {
            clock.stamp(MonoTime::from_nanos(1_000 * ms + k * 20 * ms), chunk);
        }
        // One status call preempted for 30 ms: the stamp stays on the grid.
        let lone = clock.stamp(
            MonoTime::from_nanos(1_000 * ms + 10 * 20 * ms + 30 * ms),
            chunk,
        );
        assert_eq!(lone.as_nanos(), 1_000 * ms + 10 * 20 * ms);
        let next = clock.stamp(MonoTime::from_nanos(1_000 * ms + 11 * 20 * ms), chunk);
        assert_eq!(next.as_nanos(), 1_000 * ms + 11 * 20 * ms);
        // Every measurement 100 ms later from now on: followed after OUTLIERS_TO_SNAP chunks.
        let mut stamps = Vec::new();
        for k in 12..20 {
            let shifted = 1_000 * ms + k * 20 * ms + 100 * ms;
            stamps.push((
                clock.stamp(MonoTime::from_nanos(shifted), chunk).as_nanos(),
                shifted,
            ));
        }
        let snapped = OUTLIERS_TO_SNAP as usize - 1;
        assert!(stamps[..snapped].iter().all(|(t, m)| t + 100 * ms == *m));
        assert!(stamps[snapped..].iter().all(|(t, m)| t == m), "{stamps:?}");
    }
}
