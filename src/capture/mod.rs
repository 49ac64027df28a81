//! Capture sources: where frames and audio come from.
//!
//! Each backend is one file behind one of two traits, [`VideoSource`] and [`AudioSource`].
//! A source only captures: it hands out borrowed pictures (often straight from a driver
//! buffer) with their CLOCK_MONOTONIC capture instant. Encoding, placeholders on failure,
//! reopening and pacing of the hand-off live in [`crate::pipeline`], so a new backend is one
//! file plus one arm in [`open_video`] / [`open_audio`].
//!
//! Contract for implementors:
//! - `next_*` blocks for at most [`POLL_TIMEOUT`] and returns `Ok(None)` when nothing arrived
//!   in that time, so the capture thread can notice shutdown promptly.
//! - [`CaptureError::Unavailable`] means "device gone or failing, try to reopen later"; the
//!   pipeline drops the source, shows placeholder frames and calls `open_*` again every second.
//! - [`CaptureError::Config`] means the request can never work (bad flag for this device);
//!   it is reported and the pipeline still retries, slower, since hardware can change.

use crate::clock::MonoTime;
use std::time::Duration;

#[cfg(feature = "alsa")]
pub mod alsa;
pub mod controls;
pub mod draw;
pub mod fault;
#[cfg(feature = "libcamera")]
pub mod libcamera;
#[cfg(feature = "libcamera")]
pub mod libcamera_controls;
pub mod negotiate;
pub mod placeholder;
pub mod test;
#[cfg(feature = "v4l")]
pub mod v4l;
#[cfg(feature = "v4l")]
pub mod v4l_buffers;
#[cfg(feature = "v4l")]
pub mod v4l_controls;

/// Longest time a `next_frame` / `next_chunk` call may block.
pub const POLL_TIMEOUT: Duration = Duration::from_millis(200);

/// Which kind of camera to open (`--camera-type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CameraType {
    /// A Raspberry Pi camera through libcamera.
    Rpi,
    /// A USB (UVC) webcam through V4L2.
    Usb,
    /// The synthetic test pattern; needs no hardware.
    Test,
}

impl CameraType {
    /// Every type, for parsing and for messages that list them.
    pub const ALL: [CameraType; 3] = [CameraType::Rpi, CameraType::Usb, CameraType::Test];

    /// The name in `--camera-type`, logs and `/status`.
    pub fn as_str(self) -> &'static str {
        match self {
            CameraType::Rpi => "rpi",
            CameraType::Usb => "usb",
            CameraType::Test => "test",
        }
    }

    /// The type named `name`, if there is one.
    pub fn from_name(name: &str) -> Option<CameraType> {
        CameraType::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

/// What a video source is asked for, from the command line.
#[derive(Clone, Debug, PartialEq)]
pub struct VideoParams {
    /// Output size on the wire.
    pub width: u32,
    /// Output size on the wire.
    pub height: u32,
    /// Size to capture at (USB); equal to the output size unless `--capture-*` was given.
    pub capture_width: u32,
    /// Size to capture at (USB); equal to the output size unless `--capture-*` was given.
    pub capture_height: u32,
    /// Requested frames per second.
    pub fps: u32,
    /// `/dev/videoN` index (`--device-id`).
    pub device_id: u32,
    /// V4L2 device path (`--device`, e.g. a `/dev/v4l/by-id/...` link); overrides `device_id`.
    pub device_path: Option<std::path::PathBuf>,
    /// Which libcamera camera, in libcamera's order (`--camera-index`).
    pub camera_index: u32,
    /// What the synthetic source shows (`--test-scene`).
    pub scene: test::TestScene,
    /// Left-right and top-bottom mirroring a camera that can is asked to do itself (at
    /// configure time: libcamera's orientation); what is left of `--rotation` is the
    /// pipeline's. See [`VideoSource::mirror`].
    pub mirror: (bool, bool),
}

impl VideoParams {
    /// `width`×`height` at `fps`, captured at the output size from the first device: the
    /// defaults of every other flag.
    pub fn at(width: u32, height: u32, fps: u32) -> VideoParams {
        VideoParams {
            width,
            height,
            capture_width: width,
            capture_height: height,
            fps,
            device_id: 0,
            device_path: None,
            camera_index: 0,
            scene: test::TestScene::Pattern,
            mirror: (false, false),
        }
    }

    /// Time between two frames at the requested rate.
    pub fn frame_interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / f64::from(self.fps.max(1)))
    }
}

/// What an audio source is asked for, from the command line.
#[derive(Clone, Debug, PartialEq)]
pub struct AudioParams {
    /// Sample rate; `None` = the device's own rate (48000 for the synthetic source).
    pub sample_rate: Option<u32>,
    /// 1 (mono) or 2 (stereo).
    pub channels: u16,
    /// ALSA device: a card number or a PCM name; `None` = the default input.
    pub device: Option<String>,
}

/// The format an audio source actually delivers: interleaved signed 16-bit little-endian.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AudioFormat {
    /// Samples per second per channel.
    pub sample_rate: u32,
    /// Interleaved channels.
    pub channels: u16,
}

impl AudioFormat {
    /// Bytes of one frame (one sample of every channel).
    pub fn bytes_per_frame(&self) -> usize {
        usize::from(self.channels) * 2
    }

    /// Frames in a chunk of `d`.
    pub fn frames_in(&self, d: Duration) -> usize {
        (f64::from(self.sample_rate) * d.as_secs_f64()).round() as usize
    }
}

/// One captured picture, borrowed from wherever the source keeps it.
#[derive(Clone, Copy, Debug)]
pub enum Picture<'a> {
    /// Planar YUV 4:2:0 (I420/YU12): full-size Y, quarter-size U and V.
    I420 {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// Y, U, V planes.
        planes: [&'a [u8]; 3],
        /// Bytes per row of each plane.
        strides: [usize; 3],
    },
    /// Semi-planar YUV 4:2:0: Y plane then one interleaved UV plane.
    Nv12 {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// Y plane and UV plane.
        planes: [&'a [u8]; 2],
        /// Bytes per row of each plane.
        strides: [usize; 2],
    },
    /// Packed YUV 4:2:2, Y0 U Y1 V.
    Yuyv {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// The packed rows.
        data: &'a [u8],
        /// Bytes per row.
        stride: usize,
    },
    /// A complete JPEG image (a camera's MJPEG frame).
    Jpeg {
        /// Width in pixels, as negotiated.
        width: u32,
        /// Height in pixels, as negotiated.
        height: u32,
        /// The bytes the camera produced (only `bytesused` of the buffer).
        data: &'a [u8],
    },
}

impl Picture<'_> {
    /// Width and height of the picture.
    pub fn size(&self) -> (u32, u32) {
        match *self {
            Picture::I420 { width, height, .. }
            | Picture::Nv12 { width, height, .. }
            | Picture::Yuyv { width, height, .. }
            | Picture::Jpeg { width, height, .. } => (width, height),
        }
    }
}

/// A copy of a [`Picture`] that another thread can own (the encoder pool's frames): the
/// same layout, planes in reusable buffers.
#[derive(Debug, Default)]
pub struct OwnedPicture {
    kind: PictureKind,
    width: u32,
    height: u32,
    planes: [Vec<u8>; 3],
    strides: [usize; 3],
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum PictureKind {
    #[default]
    I420,
    Nv12,
    Yuyv,
    Jpeg,
}

impl OwnedPicture {
    /// Copies `picture` in, reusing the buffers' room.
    pub fn copy_from(&mut self, picture: &Picture<'_>) {
        let (kind, planes, strides): (_, &[&[u8]], [usize; 3]) = match *picture {
            Picture::I420 {
                ref planes,
                strides,
                ..
            } => (PictureKind::I420, planes, strides),
            Picture::Nv12 {
                ref planes,
                strides: [y, uv],
                ..
            } => (PictureKind::Nv12, planes, [y, uv, 0]),
            Picture::Yuyv {
                ref data, stride, ..
            } => (
                PictureKind::Yuyv,
                std::slice::from_ref(data),
                [stride, 0, 0],
            ),
            Picture::Jpeg { ref data, .. } => {
                (PictureKind::Jpeg, std::slice::from_ref(data), [0; 3])
            }
        };
        (self.width, self.height) = picture.size();
        self.kind = kind;
        self.strides = strides;
        for (k, dst) in self.planes.iter_mut().enumerate() {
            dst.clear();
            if let Some(src) = planes.get(k) {
                dst.extend_from_slice(src);
            }
        }
    }

    /// The copy, as the encoders take pictures.
    pub fn picture(&self) -> Picture<'_> {
        let (width, height) = (self.width, self.height);
        let [a, b, c] = &self.planes;
        let [sa, sb, sc] = self.strides;
        match self.kind {
            PictureKind::I420 => Picture::I420 {
                width,
                height,
                planes: [a, b, c],
                strides: [sa, sb, sc],
            },
            PictureKind::Nv12 => Picture::Nv12 {
                width,
                height,
                planes: [a, b],
                strides: [sa, sb],
            },
            PictureKind::Yuyv => Picture::Yuyv {
                width,
                height,
                data: a,
                stride: sa,
            },
            PictureKind::Jpeg => Picture::Jpeg {
                width,
                height,
                data: a,
            },
        }
    }
}

/// A picture and the instant its exposure was captured.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    /// Capture instant on CLOCK_MONOTONIC (driver/sensor timestamp where there is one).
    pub captured: MonoTime,
    /// The image.
    pub picture: Picture<'a>,
    /// The buffer the picture lies in (from its first byte, in its layout) as a DMABUF,
    /// where the source can give one: a hardware encoder may read it in place.
    pub dmabuf: Option<DmaBuf<'a>>,
}

/// A frame's buffer as a DMABUF file descriptor, for a hardware encoder to import.
#[derive(Clone, Copy, Debug)]
pub struct DmaBuf<'a> {
    /// The descriptor (V4L2 `EXPBUF`), valid while the frame is.
    pub fd: std::os::fd::BorrowedFd<'a>,
    /// Bytes of the buffer the picture fills.
    pub bytesused: usize,
    /// The buffer's whole length.
    pub length: usize,
    /// The device it comes from, for the log.
    pub source: &'a str,
}

/// A run of audio frames and the capture instant of its first sample.
#[derive(Clone, Copy, Debug)]
pub struct AudioBlock<'a> {
    /// Capture instant of the first sample, on CLOCK_MONOTONIC.
    pub captured: MonoTime,
    /// Interleaved s16le samples, a whole number of frames.
    pub pcm: &'a [u8],
}

/// Why a source could not deliver.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The device is missing or failing; reopening later may help.
    #[error("{context}: {reason}")]
    Unavailable {
        /// What was being done, e.g. "opening /dev/video0".
        context: String,
        /// What went wrong, with a hint for the user where one helps.
        reason: String,
    },
    /// The request cannot be satisfied by this device or build.
    #[error("{0}")]
    Config(String),
}

impl CaptureError {
    /// An [`CaptureError::Unavailable`] with context.
    pub fn unavailable(context: impl Into<String>, reason: impl ToString) -> CaptureError {
        CaptureError::Unavailable {
            context: context.into(),
            reason: reason.to_string(),
        }
    }
}

/// A camera (or anything that yields pictures).
pub trait VideoSource: Send {
    /// One line describing the negotiated format, for the log and status.
    fn describe(&self) -> String;
    /// The next picture, or `None` if none arrived within [`POLL_TIMEOUT`].
    fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError>;
    /// The controls the camera offers, with their values now (none by default).
    fn controls(&self) -> Vec<controls::ControlInfo> {
        Vec::new()
    }
    /// Sets one control to a value already checked against [`VideoSource::controls`];
    /// on refusal, the device's reason.
    fn set_control(
        &mut self,
        info: &controls::ControlInfo,
        _value: controls::Value,
    ) -> Result<(), String> {
        Err(format!("{} cannot be set on this camera", info.name))
    }
    /// Asks the camera to mirror its pictures itself (sensor or driver flips), exactly as
    /// asked, `false`/`false` meaning unmirrored; true if it does, false (changing nothing)
    /// if it cannot, and the pipeline then turns the pictures.
    fn mirror(&mut self, hflip: bool, vflip: bool) -> bool {
        !hflip && !vflip
    }
}

/// A microphone (or anything that yields PCM).
pub trait AudioSource: Send {
    /// One line describing the negotiated format, for the log and status.
    fn describe(&self) -> String;
    /// The format every block is in.
    fn format(&self) -> AudioFormat;
    /// The next block (20 ms nominal), or `None` if none arrived within [`POLL_TIMEOUT`].
    fn next_chunk(&mut self) -> Result<Option<AudioBlock<'_>>, CaptureError>;
    /// Overruns (samples lost and recovered from) since the last call, for the counters.
    fn take_xruns(&mut self) -> u64 {
        0
    }
}

/// Opens the video source for `camera`; the one place backends are chosen.
pub fn open_video(
    camera: CameraType,
    params: &VideoParams,
    epoch: MonoTime,
) -> Result<Box<dyn VideoSource>, CaptureError> {
    match camera {
        CameraType::Test => Ok(Box::new(test::TestPattern::new(params, epoch)?)),
        #[cfg(feature = "v4l")]
        CameraType::Usb => Ok(Box::new(v4l::V4lCamera::open(params)?)),
        #[cfg(not(feature = "v4l"))]
        CameraType::Usb => Err(CaptureError::Config(
            "this build has no USB camera (V4L2) backend (build with --features v4l)".into(),
        )),
        #[cfg(feature = "libcamera")]
        CameraType::Rpi => Ok(Box::new(libcamera::LibcameraSource::open(params)?)),
        #[cfg(not(feature = "libcamera"))]
        CameraType::Rpi => Err(CaptureError::Config(
            "this build has no Raspberry Pi camera (libcamera) backend".into(),
        )),
    }
}

/// What `--list-devices` prints for `camera`: the cameras a backend can open, the hardware
/// (V4L2 memory-to-memory) encoders when the build has V4L2, then the microphones when it
/// has the ALSA backend.
pub fn list_devices(camera: CameraType) -> Result<String, CaptureError> {
    let video = list_video_devices(camera)?;
    #[cfg(feature = "v4l")]
    let video = format!("{video}\n{}", list_m2m_encoders());
    #[cfg(feature = "alsa")]
    return Ok(format!("{video}\n{}", alsa::list_devices()));
    #[cfg(not(feature = "alsa"))]
    Ok(video)
}

/// The M2M encoders (`--h264-encoder v4l2` uses the first that makes H.264).
#[cfg(feature = "v4l")]
fn list_m2m_encoders() -> String {
    let (found, skipped) = crate::encode::m2m::list();
    let mut out = String::from("hardware encoders (V4L2 memory-to-memory):\n");
    if found.is_empty() {
        out.push_str("  none (H.264 is encoded by OpenH264)\n");
    }
    for device in found {
        out.push_str(&format!("  {device}\n"));
    }
    for why in skipped {
        out.push_str(&format!("  not examined: {why}\n"));
    }
    out
}

fn list_video_devices(camera: CameraType) -> Result<String, CaptureError> {
    match camera {
        CameraType::Test => Ok(format!(
            "test: the synthetic pattern (always available)\n{}",
            controls::list_lines(&test::controls_at(None))
        )),
        #[cfg(feature = "libcamera")]
        CameraType::Rpi => libcamera::list_devices(),
        #[cfg(not(feature = "libcamera"))]
        CameraType::Rpi => Err(CaptureError::Config(
            "this build has no Raspberry Pi camera (libcamera) backend".into(),
        )),
        #[cfg(feature = "v4l")]
        CameraType::Usb => Ok(v4l::list_devices()),
        #[cfg(not(feature = "v4l"))]
        CameraType::Usb => Err(CaptureError::Config(
            "this build has no USB camera (V4L2) backend (build with --features v4l)".into(),
        )),
    }
}

/// Opens the audio source; the synthetic tone unless a real device is asked for.
pub fn open_audio(
    camera: CameraType,
    params: &AudioParams,
    epoch: MonoTime,
) -> Result<Box<dyn AudioSource>, CaptureError> {
    match (camera, &params.device) {
        // The test camera keeps its synthetic tone unless a device is named explicitly.
        (CameraType::Test, None) => Ok(Box::new(test::TestTone::new(params, epoch)?)),
        #[cfg(feature = "alsa")]
        _ => Ok(Box::new(alsa::AlsaSource::open(params)?)),
        #[cfg(not(feature = "alsa"))]
        _ => Err(CaptureError::Config(
            "this build has no microphone (ALSA) backend".into(),
        )),
    }
}
