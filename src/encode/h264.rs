//! H.264 in software: Cisco's OpenH264 through the `openh264` crate (feature `h264`).
//!
//! Settings are the real-time ones: the camera-video usage type, low complexity, one slice,
//! one temporal layer (so no B-frames and no reordering: every access unit is displayed as
//! soon as it is decoded), bitrate rate control, an IDR every `--keyframe-interval` and on
//! request. OpenH264 writes SPS and PPS in front of every IDR, so each keyframe is a
//! complete entry point for a decoder that joins there. The output is Annex-B (start codes).
//!
//! The hardware encoders of #17 implement the same [`H264Encoder`] surface: one picture in,
//! at most one access unit out, `force_keyframe` before the picture that must be one.
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
    /// The best one this machine has (today: software).
    Auto,
    /// OpenH264 on the CPU.
    Software,
}

impl H264EncoderKind {
    /// Every kind, for parsing and for messages that list them.
    pub const ALL: [H264EncoderKind; 2] = [H264EncoderKind::Auto, H264EncoderKind::Software];

    /// The flag's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            H264EncoderKind::Auto => "auto",
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

/// The implementations behind [`H264Encoder`], chosen by `--h264-encoder`. The V4L2
/// memory-to-memory encoder of the Pi's hardware (#17) becomes the next variant; without the
/// `h264` feature there is none, and no encoder can be made.
enum Backend {
    /// OpenH264 on the CPU.
    #[cfg(feature = "h264")]
    Software(software::Software),
}

/// The H.264 encoder the pipeline runs: one picture in, at most one access unit out.
pub struct H264Encoder {
    backend: Backend,
    /// What it was made with, for logs and `/status`.
    pub description: String,
}

impl H264Encoder {
    /// An encoder for `settings` at `fps` (keyframe period and rate control use it).
    pub fn new(settings: &H264Settings, fps: u32) -> Result<H264Encoder, H264Error> {
        match settings.encoder {
            // Today "auto" has one candidate; with #17 it tries the hardware first.
            H264EncoderKind::Auto | H264EncoderKind::Software => {
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
                    let _ = fps;
                    Err(H264Error::NotBuilt)
                }
            }
        }
    }

    /// True when this binary can encode H.264 at all.
    pub const fn available() -> bool {
        cfg!(feature = "h264")
    }

    /// Encodes `picture` (captured `millis` after some fixed origin), as a keyframe when
    /// `force_keyframe`. `None` when the encoder produced nothing for it.
    pub fn encode(
        &mut self,
        picture: I420<'_>,
        millis: u64,
        force_keyframe: bool,
    ) -> Result<Option<AccessUnit>, H264Error> {
        match &mut self.backend {
            #[cfg(feature = "h264")]
            Backend::Software(s) => s.encode(picture, millis, force_keyframe),
            #[cfg(not(feature = "h264"))]
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
}
