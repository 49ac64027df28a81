//! H.264 in software: Cisco's OpenH264 through the `openh264` crate (feature `h264`).
//!
//! Settings are the real-time ones: the camera-video usage type, low complexity, one slice,
//! one temporal layer (so no B-frames and no reordering: every access unit is displayed as
//! soon as it is decoded), bitrate rate control, an IDR every `--keyframe-interval` and on
//! request. OpenH264 writes SPS and PPS in front of every IDR, so each keyframe is a
//! complete entry point for a decoder that joins there. The output is Annex-B (start codes).
//!
//! The Pi's hardware encoder (a V4L2 memory-to-memory device, [`super::m2m`], feature `v4l`)
//! implements the same [`H264Encoder`] surface ([`H264Encoder::hardware`]): one picture in,
//! at most one access unit out, a keyframe on request where the driver offers one. Which of
//! the two runs, and the fallback from one to the other, is [`super::h264_stage`]'s choice.
#![forbid(unsafe_code)]

use std::time::Duration;

/// `--h264-profile`: what the SPS announces. Baseline decodes everywhere and is what
/// OpenH264 is built for (CAVLC); main and high switch it to CABAC, which saves bits at some
/// encode cost. None of them adds B-frames here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum H264Profile {
    /// Constrained baseline (profile_idc 66).
    Baseline,
    /// Main (77).
    Main,
    /// High (100).
    High,
}

impl H264Profile {
    /// Every profile, for parsing and for messages that list them.
    pub const ALL: [H264Profile; 3] = [H264Profile::Baseline, H264Profile::Main, H264Profile::High];

    /// The flag's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            H264Profile::Baseline => "baseline",
            H264Profile::Main => "main",
            H264Profile::High => "high",
        }
    }

    /// The profile named `name`, if there is one.
    pub fn from_name(name: &str) -> Option<H264Profile> {
        H264Profile::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

/// `--h264-encoder`: which implementation encodes H.264.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum H264EncoderKind {
    /// The hardware encoder when the machine has one (found by capability), else software.
    Auto,
    /// The hardware encoder (V4L2 memory-to-memory), required at start; software only as a
    /// fallback while it fails.
    V4l2,
    /// OpenH264 on the CPU.
    Software,
}

impl H264EncoderKind {
    /// Every kind, for parsing and for messages that list them.
    pub const ALL: [H264EncoderKind; 3] = [
        H264EncoderKind::Auto,
        H264EncoderKind::V4l2,
        H264EncoderKind::Software,
    ];

    /// The flag's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            H264EncoderKind::Auto => "auto",
            H264EncoderKind::V4l2 => "v4l2",
            H264EncoderKind::Software => "software",
        }
    }

    /// The kind named `name`, if there is one.
    pub fn from_name(name: &str) -> Option<H264EncoderKind> {
        H264EncoderKind::ALL
            .into_iter()
            .find(|k| k.as_str() == name)
    }
}

/// How the stream is encoded, from the command line.
#[derive(Clone, Debug, PartialEq)]
pub struct H264Settings {
    /// Which encoder.
    pub encoder: H264EncoderKind,
    /// Target bitrate in kbit/s.
    pub bitrate_kbps: u32,
    /// Longest time between two keyframes.
    pub keyframe_interval: Duration,
    /// The profile the SPS announces.
    pub profile: H264Profile,
}

impl H264Settings {
    /// The defaults of `--h264-*` and `--keyframe-interval`.
    pub fn default_for_tests() -> H264Settings {
        H264Settings {
            encoder: H264EncoderKind::Auto,
            bitrate_kbps: DEFAULT_BITRATE_KBPS,
            keyframe_interval: Duration::from_secs(2),
            profile: H264Profile::Baseline,
        }
    }
}

/// `--h264-bitrate` default, kbit/s, for the default 640x480@15. Measured (BENCHMARKS.md):
/// H.264 matches MJPEG q70's SSIM at 137-149 kbit/s on the synthetic scenes and the still,
/// noisy one gains little above ~300; real cameras add detail and motion those lack, so the
/// default keeps a wide margin while costing 0.25 of MJPEG's bytes (docs/h264.md).
pub const DEFAULT_BITRATE_KBPS: u32 = 1000;

/// Why H.264 could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum H264Error {
    /// This binary was built without the `h264` feature.
    #[error("this build has no H.264 encoder (build with the cargo feature h264)")]
    NotBuilt,
    /// The picture's planes are shorter than its size and strides say.
    #[error("H.264: {0}")]
    BadPicture(String),
    /// OpenH264 refused the settings or the picture.
    #[error("OpenH264: {0}")]
    Encoder(String),
    /// No hardware (V4L2 memory-to-memory) H.264 encoder on this machine.
    #[error("{0}")]
    NoHardware(String),
    /// The hardware encoder could not be opened or failed (its message names the device).
    #[error("{0}")]
    Hardware(String),
    /// The hardware encoder went away (unbound, unplugged).
    #[error("{0}")]
    Gone(String),
    /// The hardware encoder cannot read the camera's buffers in place (their format or
    /// layout): pictures are to be copied into its own.
    #[error("{0}")]
    NotImportable(String),
}

impl H264Error {
    /// True when the hardware device itself disappeared.
    pub fn is_gone(&self) -> bool {
        matches!(self, H264Error::Gone(_))
    }
}

/// A picture in I420 (planar 4:2:0), as the encoder takes it.
#[derive(Clone, Copy, Debug)]
pub struct I420<'a> {
    /// Width in pixels (even).
    pub width: u32,
    /// Height in pixels (even).
    pub height: u32,
    /// Y, U, V.
    pub planes: [&'a [u8]; 3],
    /// Bytes per row of each plane.
    pub strides: [usize; 3],
}

impl I420<'_> {
    /// Checks that every plane holds the rows its size and stride say.
    pub fn check(&self) -> Result<(), H264Error> {
        let (w, h) = (self.width as usize, self.height as usize);
        if w < 2 || h < 2 || w % 2 != 0 || h % 2 != 0 {
            return Err(H264Error::BadPicture(format!(
                "size {w}x{h} is not even and at least 2x2"
            )));
        }
        let dims = [(w, h), (w / 2, h / 2), (w / 2, h / 2)];
        for (i, (plane, ((pw, ph), stride))) in self
            .planes
            .iter()
            .zip(dims.iter().zip(self.strides))
            .enumerate()
        {
            let needed = (ph - 1) * stride + pw;
            if stride < *pw || plane.len() < needed {
                return Err(H264Error::BadPicture(format!(
                    "plane {i}: {} bytes with stride {stride}, needs {needed} for {pw}x{ph}",
                    plane.len()
                )));
            }
        }
        Ok(())
    }
}

/// One encoded picture: the NAL units of one access unit, Annex-B.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessUnit {
    /// Start-code-prefixed NAL units (SPS and PPS first on a keyframe).
    pub data: Vec<u8>,
    /// An IDR picture: a decoder can start here.
    pub keyframe: bool,
}

/// The NAL units of an Annex-B stream, without their start codes.
pub fn nal_units(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let ends: Vec<usize> = starts
        .iter()
        .skip(1)
        .map(|&s| {
            // The next start code begins 3 bytes before its payload, or 4 with a leading zero.
            let mut e = s - 3;
            while e > 0 && data[e - 1] == 0 {
                e -= 1;
            }
            e
        })
        .chain(std::iter::once(data.len()))
        .collect();
    starts
        .into_iter()
        .zip(ends)
        .map(move |(s, e)| &data[s..e.max(s)])
}

/// The WebCodecs/RFC 6381 codec string of the SPS in `data` (`avc1.PPCCLL`, hex of
/// profile_idc, the constraint flags and level_idc), if `data` carries an SPS.
pub fn codec_string(data: &[u8]) -> Option<String> {
    nal_units(data)
        .find(|nal| nal.first().is_some_and(|b| b & 0x1f == 7) && nal.len() >= 4)
        .map(|sps| format!("avc1.{:02X}{:02X}{:02X}", sps[1], sps[2], sps[3]))
}

#[cfg(feature = "h264")]
mod software {
    use super::{AccessUnit, H264Error, H264Profile, H264Settings, I420};
    use openh264::encoder::{
        BitRate, Complexity, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod,
        Profile, RateControlMode, SpsPpsStrategy, UsageType,
    };
    use openh264::formats::YUVSource;
    use openh264::{OpenH264API, Timestamp};

    /// A checked [`I420`] as OpenH264's source trait.
    struct Planes<'a>(I420<'a>);

    impl YUVSource for Planes<'_> {
        fn dimensions(&self) -> (usize, usize) {
            (self.0.width as usize, self.0.height as usize)
        }
        fn strides(&self) -> (usize, usize, usize) {
            (self.0.strides[0], self.0.strides[1], self.0.strides[2])
        }
        fn y(&self) -> &[u8] {
            self.0.planes[0]
        }
        fn u(&self) -> &[u8] {
            self.0.planes[1]
        }
        fn v(&self) -> &[u8] {
            self.0.planes[2]
        }
    }

    /// OpenH264, set up for live streaming.
    pub struct Software {
        encoder: Encoder,
    }

    impl Software {
        pub fn new(settings: &H264Settings, fps: u32) -> Result<Software, H264Error> {
            let fps = fps.max(1);
            let period = (settings.keyframe_interval.as_secs_f64() * f64::from(fps)).round();
            let config = EncoderConfig::new()
                .usage_type(UsageType::CameraVideoRealTime)
                .complexity(Complexity::Low)
                .rate_control_mode(RateControlMode::Bitrate)
                .bitrate(BitRate::from_bps(
                    settings.bitrate_kbps.saturating_mul(1000),
                ))
                .max_frame_rate(FrameRate::from_hz(fps as f32))
                // A skipped frame is a frame a viewer never sees; the bitrate overshoots a
                // little instead and rate control catches up over the next frames.
                .skip_frames(false)
                .sps_pps_strategy(SpsPpsStrategy::ConstantId)
                .intra_frame_period(IntraFramePeriod::from_num_frames(period.max(1.0) as u32))
                .scene_change_detect(false)
                .num_threads(1)
                .profile(match settings.profile {
                    H264Profile::Baseline => Profile::Baseline,
                    H264Profile::Main => Profile::Main,
                    H264Profile::High => Profile::High,
                });
            let encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
                .map_err(|e| H264Error::Encoder(e.to_string()))?;
            Ok(Software { encoder })
        }

        pub fn encode(
            &mut self,
            picture: I420<'_>,
            millis: u64,
            force_keyframe: bool,
        ) -> Result<Option<AccessUnit>, H264Error> {
            picture.check()?;
            if force_keyframe {
                self.encoder.force_intra_frame();
            }
            let stream = self
                .encoder
                .encode_at(&Planes(picture), Timestamp::from_millis(millis))
                .map_err(|e| H264Error::Encoder(e.to_string()))?;
            let keyframe = match stream.frame_type() {
                FrameType::IDR => true,
                FrameType::I | FrameType::P | FrameType::IPMixed => false,
                FrameType::Skip => return Ok(None),
                FrameType::Invalid => {
                    return Err(H264Error::Encoder("the encoder is not ready".into()))
                }
            };
            let data = stream.to_vec();
            Ok((!data.is_empty()).then_some(AccessUnit { data, keyframe }))
        }
    }
}

/// The coded format the hardware path looks for: H.264, or FWHT in tests
/// ([`super::m2m::M2M_CODEC_ENV`]).
#[cfg(feature = "v4l")]
pub fn hardware_codec() -> super::m2m::Codec {
    super::m2m::wanted(super::m2m::Codec::H264)
}

/// The hardware encoder this machine has for the H.264 stream, if any: `Err` says why not.
/// `--h264-encoder v4l2` requires one at start.
pub fn find_hardware() -> Result<String, H264Error> {
    #[cfg(feature = "v4l")]
    {
        super::m2m::find(hardware_codec())
            .map(|d| d.to_string())
            .map_err(|e| H264Error::NoHardware(e.to_string()))
    }
    #[cfg(not(feature = "v4l"))]
    Err(H264Error::NoHardware(NO_V4L2.into()))
}

#[cfg(not(feature = "v4l"))]
const NO_V4L2: &str = "this build has no V4L2 support (build with the cargo feature v4l)";

/// Whether an access unit holds a slice (NAL types 1-5), not parameter sets alone.
#[cfg_attr(not(feature = "v4l"), allow(dead_code))]
fn has_slice(data: &[u8]) -> bool {
    nal_units(data).any(|n| n.first().is_some_and(|b| (1..=5).contains(&(b & 0x1f))))
}

/// Whether an access unit holds an IDR slice (NAL type 5): hardware buffer flags are not
/// trusted alone.
pub fn is_idr(data: &[u8]) -> bool {
    nal_units(data).any(|n| n.first().is_some_and(|b| b & 0x1f == 5))
}

/// `V4L2_FWHT_FL_I_FRAME` in an FWHT frame header's flags word (the sixth, big-endian after
/// the two magic words: drivers/media/test-drivers/vicodec/codec-fwht.h).
const FWHT_FL_I_FRAME: u32 = 1 << 10;
/// The two magic words an FWHT frame starts with.
pub const FWHT_MAGIC: [u8; 8] = [0x4f, 0x4f, 0x4f, 0x4f, 0xff, 0xff, 0xff, 0xff];

/// Whether an FWHT frame (vicodec's) is an I-frame, by its header.
pub fn fwht_is_iframe(data: &[u8]) -> bool {
    data.len() >= 24
        && data[..8] == FWHT_MAGIC
        && u32::from_be_bytes([data[20], data[21], data[22], data[23]]) & FWHT_FL_I_FRAME != 0
}

#[cfg(feature = "v4l")]
mod hardware {
    use super::{has_slice, AccessUnit, H264Error, H264Profile, H264Settings, I420};
    use crate::capture::DmaBuf;
    use crate::encode::import::{self, Import};
    use crate::encode::m2m::{self, BadUnits, Codec, Encoder, M2mError};
    use std::time::Duration;

    /// Longest wait for the driver: a free input buffer, then the unit.
    const WAIT: Duration = Duration::from_secs(2);
    /// Buffers of parameter sets alone (bcm2835-codec's first) joined to the next one.
    const MAX_HEADER_BUFFERS: usize = 4;

    fn hw(e: M2mError) -> H264Error {
        match e {
            M2mError::Gone { .. } => H264Error::Gone(e.to_string()),
            M2mError::NotImportable { .. } => H264Error::NotImportable(e.to_string()),
            e => H264Error::Hardware(e.to_string()),
        }
    }

    fn micros(millis: u64) -> i64 {
        i64::try_from(millis.saturating_mul(1000)).unwrap_or(i64::MAX)
    }

    /// A V4L2 M2M encoder producing the H.264 stream (or FWHT, in tests).
    pub struct Hardware {
        encoder: Encoder,
        codec: Codec,
        /// The camera layout it reads in place, if it imports.
        import: Option<Import>,
        /// A picture was read in place.
        imported_once: bool,
        /// False once the driver said it cannot force a keyframe.
        can_force: bool,
        /// Units in a row the driver flagged corrupt.
        bad: BadUnits,
        pub description: String,
    }

    impl Hardware {
        pub fn open(
            settings: &H264Settings,
            fps: u32,
            size: (u32, u32),
            lent: Option<(&Import, &str)>,
        ) -> Result<Hardware, H264Error> {
            let codec = super::hardware_codec();
            let device = m2m::find(codec).map_err(|e| H264Error::NoHardware(e.to_string()))?;
            let fps = fps.max(1);
            let mut m2m_settings = m2m::Settings::new(codec, size.0, size.1, 0);
            m2m_settings.bitrate = Some(settings.bitrate_kbps.saturating_mul(1000));
            let period = (settings.keyframe_interval.as_secs_f64() * f64::from(fps)).round();
            m2m_settings.keyframe_interval = Some(period.max(1.0) as u32);
            // V4L2_MPEG_VIDEO_H264_PROFILE_*: constrained baseline is what OpenH264's
            // baseline is too (and what every browser decodes).
            m2m_settings.h264_profile = Some(match settings.profile {
                H264Profile::Baseline => 1,
                H264Profile::Main => 2,
                H264Profile::High => 4,
            });
            m2m_settings.fps = Some(fps);
            let (encoder, how) = import::open_encoder(&device, m2m_settings, lent).map_err(hw)?;
            let description = encoder.summary(Some(&how));
            Ok(Hardware {
                encoder,
                codec,
                import: lent.map(|(import, _)| *import),
                imported_once: false,
                can_force: true,
                bad: BadUnits::default(),
                description,
            })
        }

        /// The camera layout it reads in place; `None` when pictures are copied in.
        pub fn import(&self) -> Option<Import> {
            self.import
        }

        /// Whether a picture was read in place yet: an import that fails before that is
        /// the driver refusing the camera's buffers, not the hardware failing.
        pub fn imported_once(&self) -> bool {
            self.imported_once
        }

        pub fn device(&self) -> String {
            self.encoder.device().path.display().to_string()
        }

        pub fn encode(
            &mut self,
            picture: I420<'_>,
            millis: u64,
            force_keyframe: bool,
        ) -> Result<Option<AccessUnit>, H264Error> {
            picture.check()?;
            self.force(force_keyframe)?;
            self.encoder
                .queue_i420(picture.planes, picture.strides, micros(millis), WAIT)
                .map_err(hw)?;
            self.collect()
        }

        /// Encodes the picture in the camera's buffer `buf`, read in place (an encoder
        /// opened with an [`Import`]); the buffer is the camera's again when this returns,
        /// whatever the result, or once the encoder is dropped.
        pub fn encode_import(
            &mut self,
            buf: DmaBuf<'_>,
            millis: u64,
            force_keyframe: bool,
        ) -> Result<Option<AccessUnit>, H264Error> {
            self.force(force_keyframe)?;
            self.encoder
                .queue_dmabuf(buf.fd, buf.bytesused, buf.length, micros(millis), WAIT)
                .map_err(hw)?;
            let unit = self.collect();
            self.encoder.output_done(WAIT).map_err(hw)?;
            let unit = unit?;
            self.imported_once = true;
            Ok(unit)
        }

        /// Asks for a keyframe next, where the driver can.
        fn force(&mut self, force_keyframe: bool) -> Result<(), H264Error> {
            if force_keyframe && self.can_force {
                match self.encoder.force_keyframe() {
                    Ok(()) => {}
                    Err(e @ M2mError::Unsupported { .. }) => {
                        // A driver without the control: its GOP alone makes keyframes.
                        log::debug!("H.264: {e}; keyframes come every GOP only");
                        self.can_force = false;
                    }
                    Err(e) => return Err(hw(e)),
                }
            }
            Ok(())
        }

        /// The access unit of the picture just queued.
        fn collect(&mut self) -> Result<Option<AccessUnit>, H264Error> {
            let mut data = Vec::new();
            for _ in 0..MAX_HEADER_BUFFERS {
                let unit = self.encoder.next_unit(WAIT).map_err(hw)?.ok_or_else(|| {
                    H264Error::Hardware(format!(
                        "{}: no encoded unit within {WAIT:?}",
                        self.device()
                    ))
                })?;
                if unit.error {
                    let device = self.device();
                    self.bad
                        .bad(&device, "flagged corrupt (V4L2_BUF_FLAG_ERROR)")
                        .map_err(H264Error::Hardware)?;
                    return Ok(None);
                }
                self.bad.good();
                if self.codec != Codec::H264 {
                    // FWHT (tests in the VM), sent as it comes.
                    let keyframe = super::fwht_is_iframe(&unit.data);
                    return Ok(Some(AccessUnit {
                        data: unit.data,
                        keyframe,
                    }));
                }
                data.extend_from_slice(&unit.data);
                if has_slice(&data) {
                    let keyframe = super::is_idr(&data);
                    return Ok(Some(AccessUnit { data, keyframe }));
                }
            }
            Err(H264Error::Hardware(format!(
                "{}: {MAX_HEADER_BUFFERS} buffers without a picture",
                self.device()
            )))
        }
    }
}

/// The implementations behind [`H264Encoder`]; without the `h264` and `v4l` features there
/// is none, and no encoder can be made.
// One encoder per stage, made rarely and never moved in a hot path: the size difference
// between OpenH264's ~7 KB of state and the hardware's few hundred bytes costs nothing.
#[allow(clippy::large_enum_variant)]
enum Backend {
    /// OpenH264 on the CPU.
    #[cfg(feature = "h264")]
    Software(software::Software),
    /// A V4L2 memory-to-memory encoder.
    #[cfg(feature = "v4l")]
    Hardware(hardware::Hardware),
}

/// The H.264 encoder the pipeline runs: one picture in, at most one access unit out.
pub struct H264Encoder {
    backend: Backend,
    /// What it was made with, for logs and `/status`.
    pub description: String,
}

impl H264Encoder {
    /// OpenH264 for `settings` at `fps` (keyframe period and rate control use it), whatever
    /// `settings.encoder` says: the hardware one is [`H264Encoder::hardware`].
    pub fn new(settings: &H264Settings, fps: u32) -> Result<H264Encoder, H264Error> {
        #[cfg(feature = "h264")]
        {
            let description = format!(
                "OpenH264 (software), {} profile, {} kbit/s, keyframe every {:.1} s",
                settings.profile.as_str(),
                settings.bitrate_kbps,
                settings.keyframe_interval.as_secs_f64()
            );
            Ok(H264Encoder {
                backend: Backend::Software(software::Software::new(settings, fps)?),
                description,
            })
        }
        #[cfg(not(feature = "h264"))]
        {
            let _ = (settings, fps);
            Err(H264Error::NotBuilt)
        }
    }

    /// The hardware (V4L2 memory-to-memory) encoder found by capability, opened for
    /// `width`x`height` pictures copied into its buffers. [`H264Error::NoHardware`] when
    /// there is none.
    pub fn hardware(
        settings: &H264Settings,
        fps: u32,
        width: u32,
        height: u32,
    ) -> Result<H264Encoder, H264Error> {
        #[cfg(feature = "v4l")]
        {
            Self::open_hardware(settings, fps, (width, height), None)
        }
        #[cfg(not(feature = "v4l"))]
        {
            let _ = (settings, fps, width, height);
            Err(H264Error::NoHardware(NO_V4L2.into()))
        }
    }

    /// The hardware encoder opened to read pictures in place from the camera's buffers,
    /// laid out as `import` says (`source`: the camera, for the log):
    /// [`H264Error::NotImportable`] when the driver cannot.
    #[cfg(feature = "v4l")]
    pub fn hardware_importing(
        settings: &H264Settings,
        fps: u32,
        import: &super::import::Import,
        source: &str,
    ) -> Result<H264Encoder, H264Error> {
        Self::open_hardware(settings, fps, import.size, Some((import, source)))
    }

    #[cfg(feature = "v4l")]
    fn open_hardware(
        settings: &H264Settings,
        fps: u32,
        size: (u32, u32),
        lent: Option<(&super::import::Import, &str)>,
    ) -> Result<H264Encoder, H264Error> {
        let hw = hardware::Hardware::open(settings, fps, size, lent)?;
        Ok(H264Encoder {
            description: hw.description.clone(),
            backend: Backend::Hardware(hw),
        })
    }

    /// The camera layout this encoder reads in place; `None` when pictures are copied in
    /// (always for OpenH264).
    #[cfg(feature = "v4l")]
    pub fn import(&self) -> Option<super::import::Import> {
        match &self.backend {
            Backend::Hardware(h) => h.import(),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// Whether this encoder has read a picture in place yet.
    #[cfg(feature = "v4l")]
    pub fn imported_once(&self) -> bool {
        match &self.backend {
            Backend::Hardware(h) => h.imported_once(),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Encodes the picture in the camera's buffer `buf`, read in place, like
    /// [`H264Encoder::encode`]; only an encoder with an [`H264Encoder::import`] can. The
    /// buffer is the camera's again when this returns, whatever the result.
    #[cfg(feature = "v4l")]
    pub fn encode_import(
        &mut self,
        buf: crate::capture::DmaBuf<'_>,
        millis: u64,
        force_keyframe: bool,
    ) -> Result<Option<AccessUnit>, H264Error> {
        match &mut self.backend {
            Backend::Hardware(h) if h.import().is_some() => {
                h.encode_import(buf, millis, force_keyframe)
            }
            _ => Err(H264Error::NotImportable(format!(
                "{}: copies its pictures",
                self.description
            ))),
        }
    }

    /// The hardware device node this encoder runs on; `None` for OpenH264.
    pub fn hardware_device(&self) -> Option<String> {
        match &self.backend {
            #[cfg(feature = "v4l")]
            Backend::Hardware(h) => Some(h.device()),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// True when this binary can encode H.264 at all.
    pub const fn available() -> bool {
        cfg!(feature = "h264")
    }

    /// Encodes `picture` (captured `millis` after some fixed origin), as a keyframe when
    /// `force_keyframe` (where the hardware cannot, its next GOP keyframe serves). `None`
    /// when the encoder produced nothing for it.
    pub fn encode(
        &mut self,
        picture: I420<'_>,
        millis: u64,
        force_keyframe: bool,
    ) -> Result<Option<AccessUnit>, H264Error> {
        match &mut self.backend {
            #[cfg(feature = "h264")]
            Backend::Software(s) => s.encode(picture, millis, force_keyframe),
            #[cfg(feature = "v4l")]
            Backend::Hardware(h) => h.encode(picture, millis, force_keyframe),
            #[cfg(not(any(feature = "h264", feature = "v4l")))]
            _ => {
                let _ = (picture, millis, force_keyframe);
                Err(H264Error::NotBuilt)
            }
        }
    }
}

#[cfg(all(test, feature = "h264"))]
mod tests {
    use super::*;
    use crate::capture::draw::I420Image;

    fn gradient(width: u32, height: u32, shift: u32) -> I420Image {
        let mut img = I420Image::new(width, height);
        for y in 0..height as usize {
            for x in 0..width as usize {
                img.y[y * width as usize + x] = ((x + y + shift as usize) % 256) as u8;
            }
        }
        img
    }

    fn view(img: &I420Image) -> I420<'_> {
        let w = img.width as usize;
        I420 {
            width: img.width,
            height: img.height,
            planes: [&img.y, &img.u, &img.v],
            strides: [w, w / 2, w / 2],
        }
    }

    fn nal_types(data: &[u8]) -> Vec<u8> {
        nal_units(data).map(|n| n[0] & 0x1f).collect()
    }

    #[test]
    fn the_first_unit_is_a_keyframe_with_parameter_sets_and_a_baseline_codec_string() {
        let mut enc = H264Encoder::new(&H264Settings::default_for_tests(), 30).unwrap();
        let img = gradient(64, 48, 0);
        let au = enc.encode(view(&img), 0, false).unwrap().unwrap();
        assert!(au.keyframe);
        let types = nal_types(&au.data);
        assert_eq!(&types[..2], &[7, 8], "SPS, PPS first: {types:?}");
        assert!(types.contains(&5), "an IDR slice: {types:?}");
        let codec = codec_string(&au.data).unwrap();
        assert!(codec.starts_with("avc1.42"), "{codec}");
    }

    #[test]
    fn later_units_are_p_frames_until_a_keyframe_is_forced_which_repeats_sps_and_pps() {
        let mut enc = H264Encoder::new(&H264Settings::default_for_tests(), 30).unwrap();
        for i in 0..5u32 {
            let img = gradient(64, 48, i);
            let au = enc
                .encode(view(&img), u64::from(i) * 33, false)
                .unwrap()
                .unwrap();
            assert_eq!(au.keyframe, i == 0, "frame {i}");
            if i > 0 {
                assert_eq!(nal_types(&au.data), vec![1], "frame {i}: one non-IDR slice");
            }
        }
        let img = gradient(64, 48, 9);
        let au = enc.encode(view(&img), 200, true).unwrap().unwrap();
        assert!(au.keyframe);
        assert_eq!(&nal_types(&au.data)[..2], &[7, 8]);
    }

    #[test]
    fn the_keyframe_interval_is_kept() {
        let settings = H264Settings {
            keyframe_interval: Duration::from_millis(500),
            ..H264Settings::default_for_tests()
        };
        let mut enc = H264Encoder::new(&settings, 10).unwrap();
        let keys: Vec<u32> = (0..16u32)
            .filter(|&i| {
                let img = gradient(64, 48, i);
                enc.encode(view(&img), u64::from(i) * 100, false)
                    .unwrap()
                    .unwrap()
                    .keyframe
            })
            .collect();
        assert_eq!(keys, vec![0, 5, 10, 15]);
    }

    #[test]
    fn main_and_high_profiles_are_announced() {
        for (profile, idc) in [(H264Profile::Main, "4D"), (H264Profile::High, "64")] {
            let settings = H264Settings {
                profile,
                ..H264Settings::default_for_tests()
            };
            let mut enc = H264Encoder::new(&settings, 30).unwrap();
            let img = gradient(64, 48, 0);
            let au = enc.encode(view(&img), 0, false).unwrap().unwrap();
            let codec = codec_string(&au.data).unwrap();
            assert_eq!(&codec[5..7], idc, "{profile:?}: {codec}");
        }
    }

    #[test]
    fn short_planes_are_errors_not_panics() {
        let mut enc = H264Encoder::new(&H264Settings::default_for_tests(), 30).unwrap();
        let img = gradient(64, 48, 0);
        let mut bad = view(&img);
        bad.planes[2] = &img.v[..10];
        assert!(matches!(
            enc.encode(bad, 0, false),
            Err(H264Error::BadPicture(_))
        ));
        let mut odd = view(&img);
        odd.width = 63;
        assert!(enc.encode(odd, 0, false).is_err());
    }

    #[test]
    fn nal_units_split_on_three_and_four_byte_start_codes() {
        let data = [
            0, 0, 0, 1, 0x67, 0x42, 0xC0, 0x1E, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4,
        ];
        let nals: Vec<&[u8]> = nal_units(&data).collect();
        assert_eq!(
            nals,
            vec![&[0x67, 0x42, 0xC0, 0x1E][..], &[0x68, 3], &[0x65, 4]]
        );
        assert_eq!(codec_string(&data).as_deref(), Some("avc1.42C01E"));
        assert_eq!(codec_string(&[0, 0, 1, 0x65, 1]), None);
    }

    #[test]
    fn hardware_keyframes_are_read_from_the_nal_types_and_the_fwht_header() {
        let idr = [
            0, 0, 0, 1, 0x67, 0x42, 0, 0, 0, 1, 0x68, 1, 0, 0, 1, 0x65, 2,
        ];
        assert!(is_idr(&idr) && has_slice(&idr));
        let p = [0, 0, 0, 1, 0x41, 9];
        assert!(!is_idr(&p) && has_slice(&p));
        let headers_only = [0, 0, 0, 1, 0x67, 0x42, 0, 0, 0, 1, 0x68, 1];
        assert!(!has_slice(&headers_only));
        let mut fwht = vec![0u8; 44];
        fwht[..8].copy_from_slice(&FWHT_MAGIC);
        assert!(!fwht_is_iframe(&fwht));
        fwht[20..24].copy_from_slice(&(1u32 << 10).to_be_bytes());
        assert!(fwht_is_iframe(&fwht));
        assert!(!fwht_is_iframe(&fwht[..20]));
        assert!(!fwht_is_iframe(&idr));
    }
}
