//! `--jpeg-encoder`: JPEG from the hardware (V4L2 memory-to-memory) encoder or from
//! libjpeg-turbo ([`super::jpeg`]).
//!
//! A Pi <= 4's bcm2835-codec has a JPEG encoder (usually /dev/video31), found by capability
//! like the H.264 one ([`super::m2m`]). Under `auto` (the default) and `v4l2`,
//! [`HardwareJpeg::encode`] converts each raw picture to I420 at the output size on the
//! capture thread ([`FrameShaper::to_i420`], which also turns it), writes it straight into
//! the encoder's buffer and waits for the JPEG: one picture at a time, so `--encoder-threads`
//! applies to libjpeg-turbo only. Camera JPEGs sent as they are still pass through
//! untouched. The hardware's JPEGs get the webcam frames' hygiene check
//! ([`super::mjpeg::sanitize`]); a unit that fails it (or that the driver flags corrupt) is
//! encoded by libjpeg-turbo instead, and a run of them counts as a failure.
//!
//! Zero copy: when the camera's buffer is a DMABUF ([`crate::capture::DmaBuf`], V4L2
//! `EXPBUF`), the picture goes out unscaled and unturned, and the encoder takes the camera's
//! format with the camera's line stride and size, the encoder reads the camera's buffer in
//! place: no conversion and no copy on the CPU. Otherwise, or when the driver refuses the
//! import (logged once at info; `--no-zero-copy` asks for it), pictures are copied as above.
//! `jpeg_zero_copy_units` counts the frames read in place.
//!
//! A failure (an error, the device unbound) hands that very picture to libjpeg-turbo, with
//! one warning and a count in `jpeg_encoder_fallbacks` ([`Fallback`]); the hardware is tried
//! again every [`super::fallback::HARDWARE_RETRY`]. With nobody wanting JPEG for
//! [`super::h264_stage::IDLE_DROP`], the hardware encoder is closed (its buffers freed) until the next picture.
#![forbid(unsafe_code)]

use super::fallback::Fallback;
#[cfg(feature = "v4l")]
use super::h264_stage::IDLE_DROP;
use super::scale::{FrameShaper, ShapeError};
use crate::capture::draw::I420Image;
use crate::capture::{DmaBuf, Picture};
use crate::stats::Stats;
use std::sync::Arc;
use std::time::Instant;

/// `--jpeg-encoder`: which implementation encodes JPEG from raw pictures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JpegEncoderKind {
    /// The hardware encoder when the machine has one (found by capability), else the CPU.
    Auto,
    /// libjpeg-turbo on the CPU.
    Cpu,
    /// The hardware encoder (V4L2 memory-to-memory), required at start; the CPU only as a
    /// fallback while it fails.
    V4l2,
}

impl JpegEncoderKind {
    /// Every kind, for parsing and for messages that list them.
    pub const ALL: [JpegEncoderKind; 3] = [
        JpegEncoderKind::Auto,
        JpegEncoderKind::Cpu,
        JpegEncoderKind::V4l2,
    ];

    /// The flag's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            JpegEncoderKind::Auto => "auto",
            JpegEncoderKind::Cpu => "cpu",
            JpegEncoderKind::V4l2 => "v4l2",
        }
    }
}

/// Why the hardware JPEG encoder cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JpegHwError {
    /// This machine (or this build) has none.
    #[error("{0}")]
    NoHardware(String),
    /// It is there but failed: opening, a refused size, an error.
    #[error("{0}")]
    Hardware(String),
    /// It went away (unbound, unplugged).
    #[error("{0}")]
    Gone(String),
}

impl JpegHwError {
    /// Whether the device itself is gone, rather than refusing something.
    pub fn is_gone(&self) -> bool {
        matches!(self, JpegHwError::Gone(_))
    }
}

/// The hardware JPEG encoder this machine has, described, or why there is none.
/// `--jpeg-encoder v4l2` requires one at start.
pub fn find_hardware() -> Result<String, JpegHwError> {
    #[cfg(feature = "v4l")]
    {
        use super::m2m::{self, Codec};
        m2m::find(m2m::wanted(Codec::Jpeg))
            .map(|d| d.to_string())
            .map_err(|e| JpegHwError::NoHardware(e.to_string()))
    }
    #[cfg(not(feature = "v4l"))]
    Err(JpegHwError::NoHardware(NO_V4L2.into()))
}

#[cfg(not(feature = "v4l"))]
const NO_V4L2: &str = "this build has no V4L2 support (build with the cargo feature v4l)";

/// What made a frame's JPEG, for `/status` (`encoder_in_use`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MadeBy {
    /// The hardware encoder on this device node.
    Hardware(String),
    /// libjpeg-turbo.
    Cpu,
    /// The camera: its JPEG passed through.
    Camera,
}

impl MadeBy {
    fn status(&self) -> String {
        match self {
            MadeBy::Hardware(device) => format!("v4l2 {device}"),
            MadeBy::Cpu => "cpu".into(),
            MadeBy::Camera => "camera".into(),
        }
    }
}

/// Tells `/status` what made the latest JPEG when that changed (`last`: what it was told).
fn note_made_by(stats: &Stats, last: &mut Option<MadeBy>, by: &MadeBy) {
    if last.as_ref() != Some(by) {
        if let Ok(mut slot) = stats.jpeg_encoder.lock() {
            *slot = Some(by.status());
        }
        *last = Some(by.clone());
    }
}

/// The capture thread's hardware JPEG encoder, opened on demand, with libjpeg-turbo
/// standing in while there is none.
pub struct HardwareJpeg {
    fallback: Fallback,
    kind: JpegEncoderKind,
    quality: u8,
    /// Bytes left free in front of every JPEG (the wire header's room).
    reserve: usize,
    stats: Arc<Stats>,
    /// The picture converted for the encoder, reused.
    image: I420Image,
    /// `image` holds this frame's picture (see [`HardwareJpeg::trade_converted`]).
    converted: bool,
    #[cfg(feature = "v4l")]
    encoder: Option<backend::Hardware>,
    /// When the last picture was encoded here.
    last_used: Instant,
    /// What `/status` was last told.
    made_by: Option<MadeBy>,
    /// Whether camera buffers may be imported: false with `--no-zero-copy`, or once the
    /// driver refused one.
    zero_copy: bool,
}

impl HardwareJpeg {
    /// The encoder `--jpeg-encoder kind` asks for at `quality`, its JPEGs `reserve` bytes
    /// into their buffers, importing camera buffers where it can when `zero_copy`; nothing
    /// is opened before the first picture.
    pub fn new(
        kind: JpegEncoderKind,
        quality: u8,
        reserve: usize,
        stats: Arc<Stats>,
        zero_copy: bool,
    ) -> HardwareJpeg {
        HardwareJpeg {
            fallback: Fallback::new("JPEG", "libjpeg-turbo", kind == JpegEncoderKind::Cpu),
            kind,
            quality,
            reserve,
            stats,
            image: I420Image::new(2, 2),
            converted: false,
            #[cfg(feature = "v4l")]
            encoder: None,
            last_used: Instant::now(),
            made_by: None,
            zero_copy,
        }
    }

    /// Notes what made the latest JPEG, for `/status`.
    pub fn made_by(&mut self, by: MadeBy) {
        note_made_by(&self.stats, &mut self.made_by, &by);
    }

    /// A new frame: nothing converted for it yet.
    pub fn new_frame(&mut self) {
        self.converted = false;
    }

    /// If this frame's picture was converted to I420 at the output size for the hardware
    /// (it was not read in place), swaps it into `image`, leaving `image`'s old buffer here:
    /// the H.264 stage takes the same picture without converting the frame a second time.
    pub fn trade_converted(&mut self, image: &mut I420Image) -> bool {
        if !std::mem::take(&mut self.converted) {
            return false;
        }
        std::mem::swap(&mut self.image, image);
        true
    }

    /// Nobody wants JPEG now: the hardware encoder is closed once that lasted
    /// [`super::h264_stage::IDLE_DROP`].
    pub fn idle(&mut self) {
        #[cfg(feature = "v4l")]
        if self.encoder.is_some() && self.last_used.elapsed() >= IDLE_DROP {
            log::info!(
                "JPEG: no viewer for {} s, hardware encoder closed",
                IDLE_DROP.as_secs()
            );
            self.encoder = None;
        }
    }

    /// The JPEG of `picture` at `out` (before the orientation's turn) from the hardware,
    /// behind the reserved room; `Ok(None)` when libjpeg-turbo is to encode it (no hardware,
    /// not due for a retry, or it failed just now: logged and counted). `dmabuf` is the
    /// camera's buffer holding the picture, if the source lends it. Errors are the picture's
    /// own (a corrupt camera frame), whichever encoder would take it.
    pub fn encode(
        &mut self,
        shaper: &mut FrameShaper,
        picture: &Picture<'_>,
        out: (u32, u32),
        dmabuf: Option<DmaBuf<'_>>,
    ) -> Result<Option<Vec<u8>>, ShapeError> {
        #[cfg(feature = "v4l")]
        {
            if self.encoder.is_none() && !self.fallback.due() {
                return Ok(None);
            }
            self.last_used = Instant::now();
            let direct = dmabuf
                .filter(|_| self.zero_copy && shaper.orientation().is_identity())
                .and_then(|buf| {
                    Some((crate::encode::import::Import::of(picture, out, &buf)?, buf))
                });
            let input = match direct {
                Some((import, _)) => backend::Input::Import(import),
                None => {
                    shaper.to_i420(picture, out, &mut self.image)?;
                    self.converted = true;
                    backend::Input::Copy(self.image.width, self.image.height)
                }
            };
            if self.encoder.as_ref().is_some_and(|e| e.input != input) {
                self.encoder = None;
            }
            if self.encoder.is_none() {
                let source = direct.map(|(_, buf)| buf.source);
                self.encoder = self.open(&input, source);
            }
            let Some(encoder) = self.encoder.as_mut() else {
                return Ok(None);
            };
            let result = match &direct {
                Some((_, buf)) => encoder.encode_import(*buf, self.reserve),
                None => encoder.encode(&self.image, self.reserve),
            };
            match result {
                Ok(Some(jpeg)) => {
                    Stats::add(&self.stats.jpeg_hardware_units, 1);
                    if direct.is_some() {
                        Stats::add(&self.stats.jpeg_zero_copy_units, 1);
                    }
                    note_made_by(&self.stats, &mut self.made_by, &encoder.made_by);
                    Ok(Some(jpeg))
                }
                Ok(None) => Ok(None),
                Err(e) if direct.is_some() && !e.is_gone() && !encoder.imported_once => {
                    // The driver cannot read this camera's buffers: copy from now on.
                    log::info!(
                        "JPEG: the hardware encoder does not take the camera's buffers ({e}); \
                         pictures are copied into its own"
                    );
                    self.zero_copy = false;
                    self.encoder = None;
                    Ok(None)
                }
                Err(e) => {
                    self.fallback
                        .fail(e.to_string(), &self.stats.jpeg_encoder_fallbacks);
                    self.encoder = None;
                    Ok(None)
                }
            }
        }
        #[cfg(not(feature = "v4l"))]
        {
            let _ = (shaper, picture, out, dmabuf, self.kind, self.quality);
            let _ = (&self.image, self.last_used, &mut self.fallback);
            let _ = (self.reserve, self.zero_copy);
            Ok(None)
        }
    }

    /// The hardware encoder for `input`, if it opens (`source`: the camera imported from);
    /// else the reason is logged (and counted when it is a failure).
    #[cfg(feature = "v4l")]
    fn open(&mut self, input: &backend::Input, source: Option<&str>) -> Option<backend::Hardware> {
        let counter = &self.stats.jpeg_encoder_fallbacks;
        match backend::Hardware::open(self.quality, input, source) {
            Ok(e) => {
                log::info!("JPEG encoder started: {}", e.description);
                self.fallback.opened(&e.description);
                return Some(e);
            }
            Err(JpegHwError::NoHardware(why)) if !self.fallback.has_failed() => {
                // v4l2 checked for one at start: it went away before the first picture.
                if self.kind == JpegEncoderKind::V4l2 {
                    self.fallback.fail(why, counter);
                } else {
                    self.fallback.none_here(&why);
                }
            }
            Err(e) if self.fallback.has_failed() => self.fallback.still_failing(&e),
            Err(e) if matches!(input, backend::Input::Import(_)) && !e.is_gone() => {
                // A layout or a memory type the driver refuses for imports: copy instead.
                log::info!(
                    "JPEG: the hardware encoder cannot read the camera's buffers in place \
                     ({e}); pictures are copied into its own"
                );
                self.zero_copy = false;
            }
            Err(e) => self.fallback.fail(e.to_string(), counter),
        }
        None
    }
}

#[cfg(feature = "v4l")]
mod backend {
    use super::{JpegHwError, MadeBy};
    use crate::capture::draw::I420Image;
    use crate::capture::DmaBuf;
    use crate::encode::import::{self, Import};
    use crate::encode::m2m::{self, BadUnits, Codec, Encoder, M2mError};
    use crate::encode::mjpeg;
    use std::time::{Duration, Instant};

    /// Longest wait for the driver: a free input buffer, then the JPEG.
    const WAIT: Duration = Duration::from_secs(2);

    fn hw(e: M2mError) -> JpegHwError {
        if e.is_gone() {
            JpegHwError::Gone(e.to_string())
        } else {
            JpegHwError::Hardware(e.to_string())
        }
    }

    /// How pictures reach the encoder.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Input {
        /// Copied, as I420 of this size, into its own buffers.
        Copy(u32, u32),
        /// Read in place from the camera's buffers.
        Import(Import),
    }

    /// A V4L2 M2M encoder making the JPEG frames (FWHT in tests).
    pub struct Hardware {
        encoder: Encoder,
        codec: Codec,
        /// How pictures reach it.
        pub input: Input,
        /// The pictures' size.
        size: (u32, u32),
        /// Bad units in a row.
        bad: BadUnits,
        /// At least one imported picture came back encoded: a later error is the device's.
        pub imported_once: bool,
        /// What it runs on and how, for the log.
        pub description: String,
        /// What `/status` says of the JPEGs it makes (its device node).
        pub made_by: MadeBy,
        /// Where timestamps count from.
        epoch: Instant,
    }

    impl Hardware {
        /// The encoder found by capability, opened for `input` at `quality`; `source`
        /// names the camera an import comes from, for the log.
        pub fn open(
            quality: u8,
            input: &Input,
            source: Option<&str>,
        ) -> Result<Hardware, JpegHwError> {
            let codec = m2m::wanted(Codec::Jpeg);
            let device = m2m::find(codec).map_err(|e| JpegHwError::NoHardware(e.to_string()))?;
            let (size, lent) = match input {
                Input::Copy(w, h) => ((*w, *h), None),
                Input::Import(import) => {
                    (import.size, Some((import, source.unwrap_or("the camera"))))
                }
            };
            let mut settings = m2m::Settings::new(codec, size.0, size.1, 0);
            settings.quality = Some(quality);
            // Every JPEG stands alone: nothing to repeat, no GOP.
            settings.repeat_sequence_header = false;
            let (encoder, how) = import::open_encoder(&device, settings, lent).map_err(hw)?;
            let description = encoder.summary(Some(&how));
            let made_by = MadeBy::Hardware(encoder.device().path.display().to_string());
            Ok(Hardware {
                encoder,
                codec,
                input: *input,
                made_by,
                size,
                bad: BadUnits::default(),
                imported_once: false,
                description,
                epoch: Instant::now(),
            })
        }

        /// The device node it runs on.
        pub fn device(&self) -> String {
            self.encoder.device().path.display().to_string()
        }

        fn micros(&self) -> i64 {
            i64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(i64::MAX)
        }

        /// `image`'s JPEG, `reserve` bytes into the buffer; `None` for a bad unit the CPU is
        /// to redo.
        pub fn encode(
            &mut self,
            image: &I420Image,
            reserve: usize,
        ) -> Result<Option<Vec<u8>>, JpegHwError> {
            let w = image.width as usize;
            let micros = self.micros();
            self.encoder
                .queue_i420(
                    [&image.y, &image.u, &image.v],
                    [w, w / 2, w / 2],
                    micros,
                    WAIT,
                )
                .map_err(hw)?;
            self.finish(reserve)
        }

        /// The JPEG of the picture in the camera's buffer `buf`, read in place; the buffer
        /// is the camera's again when this returns (the driver let go of it).
        pub fn encode_import(
            &mut self,
            buf: DmaBuf<'_>,
            reserve: usize,
        ) -> Result<Option<Vec<u8>>, JpegHwError> {
            let micros = self.micros();
            self.encoder
                .queue_dmabuf(buf.fd, buf.bytesused, buf.length, micros, WAIT)
                .map_err(hw)?;
            let jpeg = self.finish(reserve);
            // Whatever came of it, the camera must not refill the buffer while the driver
            // may still read it.
            self.encoder.output_done(WAIT).map_err(hw)?;
            let jpeg = jpeg?;
            self.imported_once = true;
            Ok(jpeg)
        }

        /// The unit of the picture just queued, checked.
        fn finish(&mut self, reserve: usize) -> Result<Option<Vec<u8>>, JpegHwError> {
            let unit = self.encoder.next_unit(WAIT).map_err(hw)?.ok_or_else(|| {
                JpegHwError::Hardware(format!("{}: no JPEG within {WAIT:?}", self.device()))
            })?;
            let problem = if unit.error {
                Some("flagged corrupt (V4L2_BUF_FLAG_ERROR)".to_string())
            } else if self.codec == Codec::Jpeg {
                mjpeg::sanitize(&unit.data, Some(self.size))
                    .err()
                    .map(|e| format!("not a sound JPEG: {e}"))
            } else {
                // FWHT (tests in the VM), sent as it comes.
                None
            };
            if let Some(problem) = problem {
                let device = self.device();
                self.bad
                    .bad(&device, &problem)
                    .map_err(JpegHwError::Hardware)?;
                return Ok(None);
            }
            self.bad.good();
            let mut out = Vec::with_capacity(reserve + unit.data.len());
            out.resize(reserve, 0);
            out.extend_from_slice(&unit.data);
            Ok(Some(out))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_print_as_the_flag_spells_them() {
        let names: Vec<_> = JpegEncoderKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names, ["auto", "cpu", "v4l2"]);
    }

    #[test]
    fn without_hardware_the_cpu_encodes_and_status_says_so() {
        // This machine (and CI's) has no M2M JPEG encoder: auto finds none, gives up for
        // good without counting a fallback, and leaves every picture to libjpeg-turbo.
        if find_hardware().is_ok() {
            return;
        }
        let stats = Arc::new(Stats::default());
        let mut hw = HardwareJpeg::new(JpegEncoderKind::Auto, 70, 0, stats.clone(), true);
        let mut shaper = FrameShaper::turning(Default::default());
        let image = I420Image::new(64, 48);
        for _ in 0..3 {
            let got = hw
                .encode(&mut shaper, &image.picture(), (64, 48), None)
                .unwrap();
            assert!(got.is_none());
            hw.made_by(MadeBy::Cpu);
        }
        assert_eq!(Stats::get(&stats.jpeg_encoder_fallbacks), 0);
        assert_eq!(Stats::get(&stats.jpeg_hardware_units), 0);
        assert_eq!(stats.jpeg_encoder.lock().unwrap().as_deref(), Some("cpu"));
    }

    #[test]
    fn a_converted_picture_is_handed_on_once_and_only_in_its_frame() {
        let stats = Arc::new(Stats::default());
        let mut hw = HardwareJpeg::new(JpegEncoderKind::Cpu, 70, 0, stats, true);
        let mut spare = I420Image::new(2, 2);
        assert!(!hw.trade_converted(&mut spare), "nothing was converted yet");
        hw.image = I420Image::new(64, 48);
        hw.converted = true;
        assert!(hw.trade_converted(&mut spare));
        assert_eq!((spare.width, spare.height), (64, 48));
        assert_eq!(
            (hw.image.width, hw.image.height),
            (2, 2),
            "the spare stays here"
        );
        assert!(!hw.trade_converted(&mut spare), "a picture goes on once");
        hw.converted = true;
        hw.new_frame();
        assert!(
            !hw.trade_converted(&mut spare),
            "a new frame forgets the last one's"
        );
    }

    #[test]
    fn v4l2_without_hardware_is_one_fallback_not_one_per_picture() {
        if find_hardware().is_ok() {
            return;
        }
        let stats = Arc::new(Stats::default());
        let mut hw = HardwareJpeg::new(JpegEncoderKind::V4l2, 70, 0, stats.clone(), true);
        let mut shaper = FrameShaper::turning(Default::default());
        let image = I420Image::new(64, 48);
        for _ in 0..5 {
            assert!(hw
                .encode(&mut shaper, &image.picture(), (64, 48), None)
                .unwrap()
                .is_none());
        }
        let expected = u64::from(cfg!(feature = "v4l"));
        assert_eq!(Stats::get(&stats.jpeg_encoder_fallbacks), expected);
    }
}
