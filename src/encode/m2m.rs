//! Hardware encoders behind the V4L2 memory-to-memory (stateful encoder) API: the Pi's
//! bcm2835-codec (H.264 on /dev/video11, JPEG on /dev/video31 on a Pi <= 4) and, for tests,
//! the kernel's virtual vicodec (FWHT).
//!
//! An M2M encoder is one device node with two queues: raw pictures go in on its OUTPUT
//! queue, encoded units come out of its CAPTURE queue. The steps, as the kernel's stateful
//! encoder interface describes them (Documentation/userspace-api/media/v4l/dev-encoder.rst):
//!
//! 1. [`find`]: every `/dev/video*` whose capabilities say memory-to-memory (single- or
//!    multi-planar) and whose CAPTURE queue offers the wanted coded format. Paths are not
//!    assumed: the numbers move with the drivers loaded before (vivid takes 0-3 in the VM).
//! 2. [`Encoder::open`]: S_FMT of the coded format on CAPTURE, then of the raw format on
//!    OUTPUT; the driver's bytesperline and sizeimage are what the pictures are laid out by,
//!    and a size it changes is refused with the sizes it accepts ([`M2mError::Format`]).
//!    Then the encoder controls it offers (bitrate, GOP / IDR period, profile, level,
//!    repeated headers, JPEG quality), REQBUFS with MMAP buffers on both queues, STREAMON.
//! 3. [`Encoder::queue_picture`] / [`Encoder::next_unit`] cycle the buffers: a picture is
//!    copied into a free OUTPUT buffer, an encoded unit copied out of a filled CAPTURE buffer,
//!    which goes back to the driver at once.
//! 4. [`Encoder::drain`]: `V4L2_ENC_CMD_STOP`, then units until the one flagged LAST.
//!
//! Zero copy: with [`Settings::import_dmabuf`] the OUTPUT queue takes no buffers of its own
//! (`V4L2_MEMORY_DMABUF`): [`Encoder::queue_dmabuf`] hands the driver a camera buffer's
//! DMABUF file descriptor (V4L2 `EXPBUF`, libcamera's planes), which it reads in place, and
//! [`Encoder::output_done`] waits until it has let go of it, before the camera may fill it
//! again. The camera's layout must then be the encoder's: same format, line stride and size.
//!
//! Both queue flavours are handled: the single-planar VIDEO_OUTPUT/VIDEO_CAPTURE (vicodec's
//! default) and the multi-planar OUTPUT_MPLANE/CAPTURE_MPLANE, which bcm2835-codec uses (and
//! vicodec with `multiplanar=1`). Every wait is bounded by a timeout, and a device that went
//! away (unbound, unplugged) is reported as [`M2mError::Gone`], never waited on.
//!
//! The ioctls go through the `v4l` crate's syscall wrappers over its `v4l_sys` structures,
//! like [`crate::capture::v4l_buffers`]; the controls through
//! [`crate::capture::v4l_controls`].

use crate::capture::v4l_controls;
use rustix::event::{poll, PollFd, PollFlags};
use rustix::fs::{Mode, OFlags};
use std::ffi::c_void;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use v4l::v4l2::{self, vidioc};
use v4l::v4l_sys::{
    v4l2_buffer, v4l2_capability, v4l2_encoder_cmd, v4l2_fmtdesc, v4l2_format, v4l2_fract,
    v4l2_frmsizeenum, v4l2_plane, v4l2_requestbuffers, v4l2_streamparm,
};

/// A V4L2 pixel or coded format code, `v4l2_fourcc(a, b, c, d)` (linux/videodev2.h).
pub const fn fourcc(code: &[u8; 4]) -> u32 {
    (code[0] as u32) | (code[1] as u32) << 8 | (code[2] as u32) << 16 | (code[3] as u32) << 24
}

/// `V4L2_PIX_FMT_H264`: H.264 with start codes (Annex B).
pub const PIX_FMT_H264: u32 = fourcc(b"H264");
/// `V4L2_PIX_FMT_JPEG`: JFIF JPEG.
pub const PIX_FMT_JPEG: u32 = fourcc(b"JPEG");
/// `V4L2_PIX_FMT_FWHT`: vicodec's Fast Walsh Hadamard Transform frames.
pub const PIX_FMT_FWHT: u32 = fourcc(b"FWHT");
/// `V4L2_PIX_FMT_YUV420` ("YU12"): planar Y, U, V, 4:2:0.
pub const PIX_FMT_YUV420: u32 = fourcc(b"YU12");
/// `V4L2_PIX_FMT_NV12`: planar Y, interleaved UV, 4:2:0.
pub const PIX_FMT_NV12: u32 = fourcc(b"NV12");
/// `V4L2_PIX_FMT_YUYV`: packed YUV 4:2:2.
pub const PIX_FMT_YUYV: u32 = fourcc(b"YUYV");

/// `V4L2_CAP_*` (linux/videodev2.h).
pub const CAP_VIDEO_M2M_MPLANE: u32 = 0x0000_4000;
/// See [`CAP_VIDEO_M2M_MPLANE`].
pub const CAP_VIDEO_M2M: u32 = 0x0000_8000;
/// See [`CAP_VIDEO_M2M_MPLANE`].
pub const CAP_STREAMING: u32 = 0x0400_0000;
/// See [`CAP_VIDEO_M2M_MPLANE`]: `device_caps` is filled in.
pub const CAP_DEVICE_CAPS: u32 = 0x8000_0000;

/// `enum v4l2_buf_type` values of the four queues an encoder can have.
pub const BUF_TYPE_VIDEO_CAPTURE: u32 = 1;
/// See [`BUF_TYPE_VIDEO_CAPTURE`].
pub const BUF_TYPE_VIDEO_OUTPUT: u32 = 2;
/// See [`BUF_TYPE_VIDEO_CAPTURE`].
pub const BUF_TYPE_VIDEO_CAPTURE_MPLANE: u32 = 9;
/// See [`BUF_TYPE_VIDEO_CAPTURE`].
pub const BUF_TYPE_VIDEO_OUTPUT_MPLANE: u32 = 10;
/// `V4L2_MEMORY_MMAP`.
pub const MEMORY_MMAP: u32 = 1;
/// `V4L2_MEMORY_DMABUF`.
pub const MEMORY_DMABUF: u32 = 4;
/// `V4L2_FIELD_NONE`: progressive pictures.
const FIELD_NONE: u32 = 1;
/// `VIDEO_MAX_PLANES`.
const MAX_PLANES: usize = 8;

/// `V4L2_BUF_FLAG_*` on dequeued buffers.
pub const BUF_FLAG_KEYFRAME: u32 = 0x0000_0008;
/// See [`BUF_FLAG_KEYFRAME`].
pub const BUF_FLAG_ERROR: u32 = 0x0000_0040;
/// See [`BUF_FLAG_KEYFRAME`]: the last buffer of a drain.
pub const BUF_FLAG_LAST: u32 = 0x0010_0000;
/// `V4L2_FMT_FLAG_COMPRESSED` in `v4l2_fmtdesc.flags`.
pub const FMT_FLAG_COMPRESSED: u32 = 0x0001;
/// `V4L2_ENC_CMD_START`: encode again after a stop.
pub const ENC_CMD_START: u32 = 0;
/// `V4L2_ENC_CMD_STOP`: finish the pictures queued so far, then flag the last unit.
pub const ENC_CMD_STOP: u32 = 1;
/// `V4L2_FRMSIZE_TYPE_DISCRETE`; the other two (continuous, stepwise) carry a range.
const FRMSIZE_TYPE_DISCRETE: u32 = 1;

/// Encoder control ids (linux/v4l2-controls.h). `V4L2_CID_CODEC_BASE` =
/// `V4L2_CTRL_CLASS_CODEC | 0x900` = 0x00990900.
pub const CID_MPEG_VIDEO_GOP_SIZE: u32 = 0x0099_0900 + 203;
/// See [`CID_MPEG_VIDEO_GOP_SIZE`].
pub const CID_MPEG_VIDEO_BITRATE: u32 = 0x0099_0900 + 207;
/// See [`CID_MPEG_VIDEO_GOP_SIZE`].
pub const CID_MPEG_VIDEO_REPEAT_SEQ_HEADER: u32 = 0x0099_0900 + 226;
/// See [`CID_MPEG_VIDEO_GOP_SIZE`]: a button; writing it makes the next unit a keyframe.
pub const CID_MPEG_VIDEO_FORCE_KEY_FRAME: u32 = 0x0099_0900 + 229;
/// See [`CID_MPEG_VIDEO_GOP_SIZE`]: bcm2835-codec's keyframe interval.
pub const CID_MPEG_VIDEO_H264_I_PERIOD: u32 = 0x0099_0900 + 358;
/// See [`CID_MPEG_VIDEO_GOP_SIZE`].
pub const CID_MPEG_VIDEO_H264_LEVEL: u32 = 0x0099_0900 + 359;
/// See [`CID_MPEG_VIDEO_GOP_SIZE`].
pub const CID_MPEG_VIDEO_H264_PROFILE: u32 = 0x0099_0900 + 363;
/// `V4L2_CID_JPEG_COMPRESSION_QUALITY`: `V4L2_CID_JPEG_CLASS_BASE` (0x009d0900) + 3.
pub const CID_JPEG_COMPRESSION_QUALITY: u32 = 0x009d_0900 + 3;
/// `V4L2_CTRL_TYPE_INTEGER`, how a button is written too.
const CTRL_TYPE_INTEGER: u32 = 1;

/// mmap(2) protection and flags: the same values on every Linux architecture.
const PROT_READ: i32 = 0x1;
const PROT_WRITE: i32 = 0x2;
const MAP_SHARED: i32 = 0x01;
/// errno values the state machine tells apart (the same on every Linux architecture).
const EINVAL: i32 = 22;
const ENODEV: i32 = 19;
const ENXIO: i32 = 6;
const EAGAIN: i32 = 11;
const EPIPE: i32 = 32;
const ENOTTY: i32 = 25;
/// Longest single poll: an unbound device may not wake a sleeping poll, the next one sees it.
const POLL_SLICE: Duration = Duration::from_millis(100);

/// The coded formats an M2M encoder can produce here, one row each: the one table for
/// parsing, printing and the fourcc looked for.
const CODECS: [(Codec, &str, u32); 3] = [
    (Codec::H264, "h264", PIX_FMT_H264),
    (Codec::Jpeg, "jpeg", PIX_FMT_JPEG),
    (Codec::Fwht, "fwht", PIX_FMT_FWHT),
];

/// What an encoder's CAPTURE queue produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// H.264 Annex B (bcm2835-codec's /dev/video11).
    H264,
    /// JPEG (bcm2835-codec's /dev/video31).
    Jpeg,
    /// vicodec's FWHT, for tests: the same ioctls, a format nobody streams.
    Fwht,
}

impl Codec {
    /// The name in flags and logs.
    pub fn as_str(self) -> &'static str {
        CODECS
            .iter()
            .find(|(c, ..)| *c == self)
            .map_or("?", |row| row.1)
    }

    /// The V4L2 coded format.
    pub fn fourcc(self) -> u32 {
        CODECS
            .iter()
            .find(|(c, ..)| *c == self)
            .map_or(0, |row| row.2)
    }

    /// The codec named `name` (`h264`, `jpeg`, `fwht`).
    pub fn from_name(name: &str) -> Option<Codec> {
        CODECS.iter().find(|(_, n, _)| *n == name).map(|row| row.0)
    }
}

/// The environment variable that makes the hardware paths look for an FWHT encoder instead
/// of an H.264 or a JPEG one. For tests in the VM only (scripts/checks/vm-v4l): the kernel's
/// virtual vicodec speaks the Pi's stateful M2M ioctls but encodes FWHT alone, so with
/// `RPI_STREAMER_M2M_CODEC=FWHT` the whole hardware path (find, open, stream, fallback,
/// retry) runs against it and its FWHT frames go out as the "H.264" units or "JPEG" frames,
/// which no real client can decode.
pub const M2M_CODEC_ENV: &str = "RPI_STREAMER_M2M_CODEC";

/// The codec a hardware path that wants `codec` looks for: FWHT instead when
/// [`M2M_CODEC_ENV`] says so (tests in the VM), else `codec`.
pub fn wanted(codec: Codec) -> Codec {
    match std::env::var(M2M_CODEC_ENV) {
        Ok(v) if v.eq_ignore_ascii_case("fwht") => Codec::Fwht,
        _ => codec,
    }
}

/// A fourcc as its four characters (`YU12`), for messages.
pub fn fourcc_str(code: u32) -> String {
    code.to_le_bytes()
        .iter()
        .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
        .collect()
}

/// Why an M2M encoder could not be found, opened or used.
#[derive(Debug, thiserror::Error)]
pub enum M2mError {
    /// No device node offers the codec.
    #[error("no V4L2 memory-to-memory encoder offers {codec} (looked at {looked} video devices){}", if .skipped.is_empty() { String::new() } else { format!("; unusable: {}", .skipped.join("; ")) })]
    NotFound {
        /// The codec asked for.
        codec: &'static str,
        /// How many /dev/video* were examined.
        looked: usize,
        /// Nodes that could not be examined, with why.
        skipped: Vec<String>,
    },
    /// A system call failed.
    #[error("{device}: {what}: {source}")]
    Io {
        /// The device node.
        device: String,
        /// What was being done.
        what: &'static str,
        /// The error.
        source: io::Error,
    },
    /// The driver does not take the requested format or size.
    #[error("{device}: the encoder does not take {requested} (it proposes {proposed}); it accepts {accepts}")]
    Format {
        /// The device node.
        device: String,
        /// What was asked for (`YU12 1366x768`).
        requested: String,
        /// What the driver answered.
        proposed: String,
        /// Its sizes and raw formats.
        accepts: String,
    },
    /// A control value out of the driver's range.
    #[error("{device}: {control} {value} is out of the encoder's range {min}..{max}")]
    ControlRange {
        /// The device node.
        device: String,
        /// The control's name.
        control: &'static str,
        /// The value asked for.
        value: i64,
        /// The driver's minimum.
        min: i64,
        /// The driver's maximum.
        max: i64,
    },
    /// The device does not offer something asked for.
    #[error("{device}: the encoder ({driver}) does not offer {what}")]
    Unsupported {
        /// The device node.
        device: String,
        /// Its driver.
        driver: String,
        /// What it lacks.
        what: &'static str,
    },
    /// A picture of the wrong size.
    #[error("{device}: a picture of {got} bytes, the encoder takes {want}")]
    PictureSize {
        /// The device node.
        device: String,
        /// Bytes given.
        got: usize,
        /// Bytes expected.
        want: usize,
    },
    /// The encoder cannot read the camera's buffers in place ([`super::import::Import`]).
    #[error("{device}: cannot read the camera's buffers in place: {why}")]
    NotImportable {
        /// The device node.
        device: String,
        /// What differs (the format, the layout).
        why: String,
    },
    /// Nothing happened in time.
    #[error("{device}: no {what} within {timeout:?}")]
    Timeout {
        /// The device node.
        device: String,
        /// What was waited for.
        what: &'static str,
        /// How long.
        timeout: Duration,
    },
    /// The device went away (unbound, unplugged, driver removed).
    #[error(
        "{device}: the encoder is gone ({what}: {source}) — was its driver unbound or removed?"
    )]
    Gone {
        /// The device node.
        device: String,
        /// What was being done.
        what: &'static str,
        /// The error (ENODEV, usually).
        source: io::Error,
    },
}

impl M2mError {
    /// True when the device itself disappeared: the caller falls back and retries later.
    pub fn is_gone(&self) -> bool {
        matches!(self, M2mError::Gone { .. })
    }
}

/// An M2M encoder node as found: what it is and what it takes.
#[derive(Clone, Debug)]
pub struct Device {
    /// `/dev/videoN`.
    pub path: PathBuf,
    /// The driver (`bcm2835-codec`, `vicodec`).
    pub driver: String,
    /// The card name.
    pub card: String,
    /// The bus (`platform:vicodec`).
    pub bus: String,
    /// Multi-planar queues (`V4L2_CAP_VIDEO_M2M_MPLANE`).
    pub multiplanar: bool,
    /// Coded formats of the CAPTURE queue.
    pub coded: Vec<u32>,
    /// Raw formats of the OUTPUT queue.
    pub raw: Vec<u32>,
}

impl Device {
    /// True if its CAPTURE queue produces `codec`.
    pub fn encodes(&self, codec: Codec) -> bool {
        self.coded.contains(&codec.fourcc())
    }

    /// The device node's path, for messages.
    pub fn name(&self) -> String {
        self.path.display().to_string()
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |codes: &[u32]| {
            codes
                .iter()
                .map(|&c| fourcc_str(c))
                .collect::<Vec<_>>()
                .join(",")
        };
        write!(
            f,
            "{} ({}, {}{}): {} from {}",
            self.path.display(),
            self.driver,
            self.bus,
            if self.multiplanar {
                ", multi-planar"
            } else {
                ""
            },
            list(&self.coded),
            list(&self.raw),
        )
    }
}

/// The `/dev/video*` nodes, by number.
fn video_nodes() -> Vec<PathBuf> {
    let mut nodes: Vec<(u32, PathBuf)> = std::fs::read_dir("/dev")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let number = name.strip_prefix("video")?.parse().ok()?;
            Some((number, entry.path()))
        })
        .collect();
    nodes.sort();
    nodes.into_iter().map(|(_, path)| path).collect()
}

/// Every M2M encoder (a memory-to-memory node whose CAPTURE queue offers a compressed
/// format), by node number, and the nodes that could not be examined with why.
pub fn list() -> (Vec<Device>, Vec<String>) {
    let mut found = Vec::new();
    let mut skipped = Vec::new();
    for path in video_nodes() {
        match probe(&path) {
            Ok(Some(device)) => found.push(device),
            Ok(None) => {}
            Err(e) => skipped.push(e.to_string()),
        }
    }
    (found, skipped)
}

/// The first M2M encoder that produces `codec`.
pub fn find(codec: Codec) -> Result<Device, M2mError> {
    let looked = video_nodes().len();
    let (found, skipped) = list();
    found
        .into_iter()
        .find(|d| d.encodes(codec))
        .ok_or(M2mError::NotFound {
            codec: codec.as_str(),
            looked,
            skipped,
        })
}

/// What `path` is: an M2M encoder, or `None` for anything else (a camera, a decoder).
pub fn probe(path: &Path) -> Result<Option<Device>, M2mError> {
    let device = path.display().to_string();
    let fd = open_node(path)?;
    let fd = fd.as_raw_fd();
    let mut cap: v4l2_capability = zeroed();
    // SAFETY: VIDIOC_QUERYCAP writes one v4l2_capability, which `cap` is, alive for the call.
    unsafe {
        v4l2::ioctl(
            fd,
            vidioc::VIDIOC_QUERYCAP,
            &mut cap as *mut _ as *mut c_void,
        )
    }
    .map_err(|e| io_error(&device, "querying its capabilities", e))?;
    let caps = if cap.capabilities & CAP_DEVICE_CAPS != 0 {
        cap.device_caps
    } else {
        cap.capabilities
    };
    let multiplanar = caps & CAP_VIDEO_M2M_MPLANE != 0;
    if caps & (CAP_VIDEO_M2M | CAP_VIDEO_M2M_MPLANE) == 0 || caps & CAP_STREAMING == 0 {
        return Ok(None);
    }
    let queues = Queues::new(multiplanar);
    let coded = formats(fd, queues.capture, true);
    let raw = formats(fd, queues.output, false);
    // A decoder is M2M too, the other way round: compressed in, raw out.
    if coded.is_empty() || raw.is_empty() {
        return Ok(None);
    }
    Ok(Some(Device {
        path: path.to_owned(),
        driver: c_str(&cap.driver),
        card: c_str(&cap.card),
        bus: c_str(&cap.bus_info),
        multiplanar,
        coded,
        raw,
    }))
}

/// The formats of queue `kind` that are (`compressed`) or are not coded formats.
fn formats(fd: i32, kind: u32, compressed: bool) -> Vec<u32> {
    let mut out = Vec::new();
    for index in 0..64 {
        let mut desc = v4l2_fmtdesc {
            index,
            type_: kind,
            ..zeroed()
        };
        // SAFETY: VIDIOC_ENUM_FMT reads and writes one v4l2_fmtdesc, which `desc` is.
        let listed = unsafe {
            v4l2::ioctl(
                fd,
                vidioc::VIDIOC_ENUM_FMT,
                &mut desc as *mut _ as *mut c_void,
            )
        };
        if listed.is_err() {
            break;
        }
        if (desc.flags & FMT_FLAG_COMPRESSED != 0) == compressed {
            out.push(desc.pixelformat);
        }
    }
    out
}

/// The buffer types of an encoder's two queues.
#[derive(Clone, Copy, Debug)]
struct Queues {
    multiplanar: bool,
    /// Raw pictures in.
    output: u32,
    /// Coded units out.
    capture: u32,
}

impl Queues {
    fn new(multiplanar: bool) -> Queues {
        if multiplanar {
            Queues {
                multiplanar,
                output: BUF_TYPE_VIDEO_OUTPUT_MPLANE,
                capture: BUF_TYPE_VIDEO_CAPTURE_MPLANE,
            }
        } else {
            Queues {
                multiplanar,
                output: BUF_TYPE_VIDEO_OUTPUT,
                capture: BUF_TYPE_VIDEO_CAPTURE,
            }
        }
    }
}

/// The raw format to copy pictures in as: YU12, else NV12, whichever `device` takes.
pub fn tight_input(device: &Device) -> Result<u32, M2mError> {
    [PIX_FMT_YUV420, PIX_FMT_NV12]
        .into_iter()
        .find(|f| device.raw.contains(f))
        .ok_or_else(|| M2mError::Unsupported {
            device: device.name(),
            driver: device.driver.clone(),
            what: "YU12 or NV12 pictures",
        })
}

/// Bad units in a row (flagged corrupt, or not what the codec makes) that make an encoder
/// count as failed; one alone is dropped.
pub const MAX_BAD_UNITS: u32 = 3;

/// Counts bad units in a row: one is dropped, a run of [`MAX_BAD_UNITS`] is a device in
/// trouble (cancelled queues hand every buffer back flagged corrupt).
#[derive(Debug, Default)]
pub struct BadUnits {
    run: u32,
}

impl BadUnits {
    /// A bad unit from `device` (`problem` says how): `Err` with the reason once it makes a
    /// run of [`MAX_BAD_UNITS`].
    pub fn bad(&mut self, device: &str, problem: &str) -> Result<(), String> {
        self.run += 1;
        log::debug!("{device}: a unit {problem}");
        if self.run >= MAX_BAD_UNITS {
            return Err(format!(
                "{device}: {MAX_BAD_UNITS} units in a row were bad, the last {problem}"
            ));
        }
        Ok(())
    }

    /// A good unit ends the run.
    pub fn good(&mut self) {
        self.run = 0;
    }
}

/// What to encode and how. Controls left `None` keep the driver's defaults; a control the
/// driver does not offer is skipped and listed in [`Encoder::not_offered`].
#[derive(Clone, Debug)]
pub struct Settings {
    /// The coded format wanted from the CAPTURE queue.
    pub codec: Codec,
    /// Picture width in pixels.
    pub width: u32,
    /// Picture height in pixels.
    pub height: u32,
    /// Raw format of the pictures given ([`PIX_FMT_YUV420`], [`PIX_FMT_NV12`]…).
    pub input: u32,
    /// Bits per second (`V4L2_CID_MPEG_VIDEO_BITRATE`).
    pub bitrate: Option<u32>,
    /// Pictures from one keyframe to the next (GOP size and H.264 IDR period).
    pub keyframe_interval: Option<u32>,
    /// `V4L2_MPEG_VIDEO_H264_PROFILE_*` (0 baseline, 2 main, 4 high).
    pub h264_profile: Option<i32>,
    /// `V4L2_MPEG_VIDEO_H264_LEVEL_*` (11 = 4.0, 13 = 4.2).
    pub h264_level: Option<i32>,
    /// Repeat SPS/PPS before every keyframe, so a client can join at any keyframe.
    pub repeat_sequence_header: bool,
    /// JPEG quality 1..100 (`V4L2_CID_JPEG_COMPRESSION_QUALITY`).
    pub quality: Option<u8>,
    /// Pictures per second, for the driver's rate control (`VIDIOC_S_PARM` on OUTPUT).
    pub fps: Option<u32>,
    /// Buffers asked for on each queue (the driver may give more).
    pub buffers: u32,
    /// The OUTPUT queue imports DMABUFs ([`Encoder::queue_dmabuf`]) instead of having
    /// buffers of its own to copy pictures into.
    pub import_dmabuf: bool,
}

impl Settings {
    /// `codec` from `width`x`height` pictures in `input` format, driver defaults for
    /// everything else, headers repeated at keyframes, 4 buffers a queue.
    pub fn new(codec: Codec, width: u32, height: u32, input: u32) -> Settings {
        Settings {
            codec,
            width,
            height,
            input,
            bitrate: None,
            keyframe_interval: None,
            h264_profile: None,
            h264_level: None,
            repeat_sequence_header: true,
            quality: None,
            fps: None,
            buffers: 4,
            import_dmabuf: false,
        }
    }
}

/// How the driver wants the raw pictures laid out (from S_FMT on the OUTPUT queue).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Raw format.
    pub fourcc: u32,
    /// Bytes per line of each memory plane (one for YU12 or NV12 even on MPLANE queues).
    pub bytesperline: Vec<u32>,
    /// Bytes of each memory plane.
    pub sizeimage: Vec<u32>,
}

impl Layout {
    /// Bytes of a whole picture: every plane's sizeimage, one after the other.
    pub fn picture_len(&self) -> usize {
        self.sizeimage.iter().map(|&s| s as usize).sum()
    }

    /// Lays a tightly packed I420 picture (`width`x`height` Y, then U, then V) out in this
    /// layout's YU12 or NV12 single-plane form ([`Layout::write_i420`]). `None` for other
    /// formats or a wrong-sized `i420`.
    pub fn from_i420(&self, i420: &[u8]) -> Option<Vec<u8>> {
        let (w, h) = (self.width as usize, self.height as usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        if i420.len() != w * h + 2 * cw * ch || self.sizeimage.len() != 1 {
            return None;
        }
        let (y, chroma) = i420.split_at(w * h);
        let (u, v) = chroma.split_at(cw * ch);
        let mut out = vec![0u8; self.sizeimage[0] as usize];
        self.write_i420([y, u, v], [w, cw, cw], &mut out)
            .then_some(out)
    }

    /// Writes an I420 picture (three planes with their line strides, `width`x`height`) into
    /// `out` in this layout's YU12 or NV12 single-plane form, with the driver's line
    /// strides and the luma height its sizeimage implies (bcm2835-codec pads 1080 to 1088
    /// lines); padding is left as it was. False, writing nothing, for other formats, planes
    /// too short for the size, or an `out` smaller than the sizeimage.
    pub fn write_i420(&self, planes: [&[u8]; 3], strides: [usize; 3], out: &mut [u8]) -> bool {
        let (w, h) = (self.width as usize, self.height as usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        if self.sizeimage.len() != 1 || !matches!(self.fourcc, PIX_FMT_YUV420 | PIX_FMT_NV12) {
            return false;
        }
        let fits = |plane: &[u8], stride: usize, pw: usize, ph: usize| {
            ph == 0 || (stride >= pw && plane.len() >= stride * (ph - 1) + pw)
        };
        if !fits(planes[0], strides[0], w, h)
            || !fits(planes[1], strides[1], cw, ch)
            || !fits(planes[2], strides[2], cw, ch)
        {
            return false;
        }
        let stride = self.bytesperline[0] as usize;
        let size = self.sizeimage[0] as usize;
        // The luma plane's rows: sizeimage = stride * rows * 3 / 2 for both formats.
        let rows = size * 2 / 3 / stride.max(1);
        if stride < w || rows < h || out.len() < size {
            return false;
        }
        let row_of = |plane: usize, row: usize, len: usize| {
            let start = row * strides[plane];
            &planes[plane][start..start + len]
        };
        for row in 0..h {
            out[row * stride..row * stride + w].copy_from_slice(row_of(0, row, w));
        }
        let base = stride * rows;
        if self.fourcc == PIX_FMT_YUV420 {
            let cstride = stride / 2;
            let v_base = base + cstride * (rows / 2);
            for row in 0..ch {
                out[base + row * cstride..][..cw].copy_from_slice(row_of(1, row, cw));
                out[v_base + row * cstride..][..cw].copy_from_slice(row_of(2, row, cw));
            }
        } else {
            for row in 0..ch {
                let line = &mut out[base + row * stride..][..2 * cw];
                let (us, vs) = (row_of(1, row, cw), row_of(2, row, cw));
                for (pair, (&cb, &cr)) in line.chunks_exact_mut(2).zip(us.iter().zip(vs)) {
                    pair[0] = cb;
                    pair[1] = cr;
                }
            }
        }
        true
    }
}

/// One encoded unit.
#[derive(Clone, Debug)]
pub struct Unit {
    /// The coded bytes (an H.264 access unit, a JPEG, an FWHT frame); empty for an empty
    /// LAST buffer.
    pub data: Vec<u8>,
    /// The driver flagged it a keyframe.
    pub keyframe: bool,
    /// The last unit of a drain ([`Encoder::drain`]).
    pub last: bool,
    /// The driver flagged it corrupt.
    pub error: bool,
    /// The driver's CAPTURE sequence number.
    pub sequence: u32,
    /// The timestamp of the picture it came from, microseconds, as given to
    /// [`Encoder::queue_picture`].
    pub timestamp_us: i64,
}

/// One driver buffer mapped into the process, plane by plane.
struct Mapped {
    planes: Vec<(*mut c_void, usize)>,
}

/// A `v4l2_buffer` and the plane array its `m.planes` points to on MPLANE queues.
struct BufferArg {
    buffer: v4l2_buffer,
    planes: [v4l2_plane; MAX_PLANES],
}

/// An open, streaming M2M encoder. Dropping it stops both queues and frees the buffers.
pub struct Encoder {
    fd: OwnedFd,
    device: Device,
    /// What it makes.
    codec: Codec,
    queues: Queues,
    layout: Layout,
    output: Vec<Mapped>,
    capture: Vec<Mapped>,
    /// OUTPUT buffers the driver has given back (or never had).
    free_output: Vec<u32>,
    /// Controls set, as `name=value`, for the log.
    applied: Vec<String>,
    /// Controls asked for that the driver does not offer.
    not_offered: Vec<&'static str>,
    /// The LAST buffer was dequeued: the capture queue answers EPIPE from now on.
    drained: bool,
    /// How OUTPUT buffers are given: [`MEMORY_MMAP`] (ours, copied into) or
    /// [`MEMORY_DMABUF`] (imported).
    output_memory: u32,
}

// SAFETY: the mappings are memory owned by this encoder alone (nothing else holds their
// addresses), so moving the encoder to another thread moves sole access with it.
unsafe impl Send for Encoder {}

impl Encoder {
    /// Opens `device`, negotiates formats, sets the controls, maps the buffers and starts
    /// streaming.
    pub fn open(device: &Device, settings: &Settings) -> Result<Encoder, M2mError> {
        let name = device.name();
        if !device.encodes(settings.codec) {
            return Err(M2mError::Unsupported {
                device: name,
                driver: device.driver.clone(),
                what: settings.codec.as_str(),
            });
        }
        let codec = settings.codec.fourcc();
        let fd = open_node(&device.path)?;
        let queues = Queues::new(device.multiplanar);
        let raw = fd.as_raw_fd();
        // The stateful encoder order: the coded format first (it can constrain the raw one).
        let mut coded = set_format(
            raw,
            queues,
            queues.capture,
            settings.width,
            settings.height,
            codec,
        )
        .map_err(|e| io_error(&name, "setting the coded format (CAPTURE)", e))?;
        let asked = set_format(
            raw,
            queues,
            queues.output,
            settings.width,
            settings.height,
            settings.input,
        )
        .map_err(|e| io_error(&name, "setting the raw format (OUTPUT)", e))?;
        let layout = layout_of(queues, &asked);
        if (layout.width, layout.height, layout.fourcc)
            != (settings.width, settings.height, settings.input)
        {
            return Err(M2mError::Format {
                device: name,
                requested: format!(
                    "{} {}x{}",
                    fourcc_str(settings.input),
                    settings.width,
                    settings.height
                ),
                proposed: format!(
                    "{} {}x{}",
                    fourcc_str(layout.fourcc),
                    layout.width,
                    layout.height
                ),
                accepts: accepted(raw, device, &[settings.input, codec]),
            });
        }
        // The driver may have changed the coded side to match: read it back.
        coded.type_ = queues.capture;
        // SAFETY: VIDIOC_G_FMT reads and writes one v4l2_format, which `coded` is.
        unsafe {
            v4l2::ioctl(
                raw,
                vidioc::VIDIOC_G_FMT,
                &mut coded as *mut _ as *mut c_void,
            )
        }
        .map_err(|e| io_error(&name, "reading the coded format back", e))?;
        let mut encoder = Encoder {
            fd,
            device: device.clone(),
            codec: settings.codec,
            queues,
            layout,
            output: Vec::new(),
            capture: Vec::new(),
            free_output: Vec::new(),
            applied: Vec::new(),
            not_offered: Vec::new(),
            drained: false,
            output_memory: if settings.import_dmabuf {
                MEMORY_DMABUF
            } else {
                MEMORY_MMAP
            },
        };
        encoder.set_controls(settings)?;
        if let Some(fps) = settings.fps {
            encoder.set_frame_rate(fps)?;
        }
        // On an error below, dropping `encoder` unmaps what was mapped and frees the buffers.
        encoder.output = if settings.import_dmabuf {
            encoder.import_slots(settings.buffers)?
        } else {
            encoder.map_buffers(queues.output, settings.buffers, PROT_READ | PROT_WRITE)?
        };
        encoder.capture = encoder.map_buffers(queues.capture, settings.buffers, PROT_READ)?;
        encoder.free_output = (0..encoder.output.len() as u32).collect();
        for index in 0..encoder.capture.len() as u32 {
            encoder.queue_capture(index)?;
        }
        for (kind, what) in [
            (queues.output, "starting OUTPUT"),
            (queues.capture, "starting CAPTURE"),
        ] {
            encoder
                .stream(vidioc::VIDIOC_STREAMON, kind)
                .map_err(|e| encoder.error(what, e))?;
        }
        Ok(encoder)
    }

    /// The device this encoder runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// How pictures given to [`Encoder::queue_picture`] must be laid out.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The controls set at open, `name=value`.
    pub fn applied(&self) -> &[String] {
        &self.applied
    }

    /// The controls asked for that the driver does not offer (and were skipped).
    pub fn not_offered(&self) -> &[&'static str] {
        &self.not_offered
    }

    /// One line for the log: device, driver, codec, input format and size, then `how`
    /// (how pictures reach it), the controls set and those not offered.
    pub fn summary(&self, how: Option<&str>) -> String {
        let l = &self.layout;
        let mut line = format!(
            "V4L2 M2M {} ({}), {} from {} {}x{}",
            self.device.path.display(),
            self.device.driver,
            self.codec.as_str(),
            fourcc_str(l.fourcc),
            l.width,
            l.height,
        );
        if let Some(how) = how {
            line += &format!(", {how}");
        }
        if !self.applied.is_empty() {
            line += &format!(", {}", self.applied.join(" "));
        }
        if !self.not_offered.is_empty() {
            line += &format!(", not offered: {}", self.not_offered.join(", "));
        }
        line
    }

    /// Copies `picture` (laid out as [`Encoder::layout`] says: its planes one after the
    /// other) into a free OUTPUT buffer and queues it, waiting at most `timeout` for the
    /// driver to give one back when all are busy.
    pub fn queue_picture(
        &mut self,
        picture: &[u8],
        timestamp_us: i64,
        timeout: Duration,
    ) -> Result<(), M2mError> {
        let want = self.layout.picture_len();
        if picture.len() != want {
            return Err(M2mError::PictureSize {
                device: self.device.name(),
                got: picture.len(),
                want,
            });
        }
        self.own_buffers("copying a picture in")?;
        let index = self.free_output_buffer(timeout)?;
        let mut offset = 0;
        let mut sizes = [0usize; MAX_PLANES];
        for (plane, &(start, len)) in self.output[index as usize].planes.iter().enumerate() {
            let size = (self.layout.sizeimage.get(plane).copied().unwrap_or(0) as usize).min(len);
            let part = &picture[offset..offset + size];
            // SAFETY: the mapping is `len` writable bytes (mapped in `map_buffers`, alive
            // until drop) and `size <= len`; the buffer is not queued (it was taken from
            // `free_output`), so the driver does not touch it while it is written.
            unsafe { std::ptr::copy_nonoverlapping(part.as_ptr(), start as *mut u8, size) };
            offset += size;
            sizes[plane] = size;
        }
        self.submit_output(index, &sizes, timestamp_us)
    }

    /// Writes an I420 picture (three planes with their strides) straight into a free
    /// OUTPUT buffer in the driver's layout ([`Layout::write_i420`]: one copy, no
    /// intermediate picture) and queues it, waiting at most `timeout` for a free buffer.
    pub fn queue_i420(
        &mut self,
        planes: [&[u8]; 3],
        strides: [usize; 3],
        timestamp_us: i64,
        timeout: Duration,
    ) -> Result<(), M2mError> {
        let want = self.layout.picture_len();
        self.own_buffers("writing a picture in")?;
        let index = self.free_output_buffer(timeout)?;
        let &(start, len) = &self.output[index as usize].planes[0];
        let written = {
            // SAFETY: the mapping is `len` writable bytes (mapped in `map_buffers`, alive until
            // drop); the buffer is not queued (it was taken from `free_output`), so neither
            // the driver nor anything else touches it while this slice lives.
            let out = unsafe { std::slice::from_raw_parts_mut(start as *mut u8, len) };
            self.layout.write_i420(planes, strides, out)
        };
        if !written {
            self.free_output.push(index);
            return Err(M2mError::PictureSize {
                device: self.device.name(),
                got: planes.iter().map(|p| p.len()).sum(),
                want,
            });
        }
        let mut sizes = [0usize; MAX_PLANES];
        sizes[0] = want.min(len);
        self.submit_output(index, &sizes, timestamp_us)
    }

    /// Queues the picture in the DMABUF `fd` (`bytesused` of its `length` bytes, laid out as
    /// [`Encoder::layout`] says) for the driver to read in place, waiting at most `timeout`
    /// for a free OUTPUT slot. The buffer must not be written until [`Encoder::output_done`]
    /// says the driver let go of it. Only on an encoder opened with
    /// [`Settings::import_dmabuf`].
    pub fn queue_dmabuf(
        &mut self,
        fd: BorrowedFd<'_>,
        bytesused: usize,
        length: usize,
        timestamp_us: i64,
        timeout: Duration,
    ) -> Result<(), M2mError> {
        if self.output_memory != MEMORY_DMABUF {
            return Err(M2mError::Unsupported {
                device: self.device.name(),
                driver: self.device.driver.clone(),
                what: "importing a DMABUF (it was opened to copy pictures in)",
            });
        }
        let want = self.layout.picture_len();
        if bytesused < want || length < bytesused {
            return Err(M2mError::PictureSize {
                device: self.device.name(),
                got: bytesused.min(length),
                want,
            });
        }
        let index = self.free_output_buffer(timeout)?;
        let mut arg = self.describe(self.queues.output, index);
        if self.queues.multiplanar {
            arg.planes[0].m.fd = fd.as_raw_fd();
            arg.planes[0].length = length as u32;
            arg.planes[0].bytesused = bytesused as u32;
        } else {
            arg.buffer.m.fd = fd.as_raw_fd();
            arg.buffer.length = length as u32;
            arg.buffer.bytesused = bytesused as u32;
        }
        self.submit(index, arg, timestamp_us)
    }

    /// Waits at most `timeout` until the driver has given back every OUTPUT buffer: after
    /// [`Encoder::queue_dmabuf`], the imported buffer is the camera's again.
    pub fn output_done(&mut self, timeout: Duration) -> Result<(), M2mError> {
        let deadline = Instant::now() + timeout;
        loop {
            self.reclaim_output()?;
            if self.free_output.len() >= self.output.len() {
                return Ok(());
            }
            if !self.wait(PollFlags::OUT, deadline)? {
                return Err(self.timeout("the driver to let go of an imported picture", timeout));
            }
        }
    }

    /// Whether the OUTPUT queue imports DMABUFs ([`Settings::import_dmabuf`]).
    pub fn imports_dmabuf(&self) -> bool {
        self.output_memory == MEMORY_DMABUF
    }

    /// `Unsupported` on an encoder that imports its pictures: it has no buffers to write.
    fn own_buffers(&self, what: &'static str) -> Result<(), M2mError> {
        if self.output_memory == MEMORY_MMAP {
            return Ok(());
        }
        Err(M2mError::Unsupported {
            device: self.device.name(),
            driver: self.device.driver.clone(),
            what,
        })
    }

    /// A free OUTPUT buffer's index, taken out of `free_output`, waiting at most `timeout`
    /// for the driver to give one back.
    fn free_output_buffer(&mut self, timeout: Duration) -> Result<u32, M2mError> {
        let deadline = Instant::now() + timeout;
        loop {
            self.reclaim_output()?;
            if let Some(index) = self.free_output.pop() {
                return Ok(index);
            }
            if !self.wait(PollFlags::OUT, deadline)? {
                return Err(self.timeout("free OUTPUT buffer", timeout));
            }
        }
    }

    /// Queues OUTPUT buffer `index` of our own, filled with `sizes` bytes per plane.
    fn submit_output(
        &mut self,
        index: u32,
        sizes: &[usize; MAX_PLANES],
        timestamp_us: i64,
    ) -> Result<(), M2mError> {
        let mut arg = self.describe(self.queues.output, index);
        for (plane, &(_, len)) in self.output[index as usize].planes.iter().enumerate() {
            if self.queues.multiplanar {
                arg.planes[plane].bytesused = sizes[plane] as u32;
                arg.planes[plane].length = len as u32;
            } else {
                arg.buffer.bytesused = sizes[plane] as u32;
            }
        }
        self.submit(index, arg, timestamp_us)
    }

    /// Queues OUTPUT buffer `index` as `arg` describes it, stamped `timestamp_us`; on an
    /// error the slot is free again.
    fn submit(
        &mut self,
        index: u32,
        mut arg: BufferArg,
        timestamp_us: i64,
    ) -> Result<(), M2mError> {
        arg.buffer.field = FIELD_NONE;
        arg.buffer.timestamp.tv_sec = (timestamp_us.div_euclid(1_000_000)) as _;
        arg.buffer.timestamp.tv_usec = (timestamp_us.rem_euclid(1_000_000)) as _;
        if let Err(e) = self.buffer_ioctl(vidioc::VIDIOC_QBUF, &mut arg) {
            self.free_output.push(index);
            return Err(self.error("queueing a picture", e));
        }
        Ok(())
    }

    /// The next encoded unit, waiting at most `timeout`; `None` if none came in that time.
    /// The CAPTURE buffer goes straight back to the driver.
    pub fn next_unit(&mut self, timeout: Duration) -> Result<Option<Unit>, M2mError> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut arg = self.describe(self.queues.capture, 0);
            match self.buffer_ioctl(vidioc::VIDIOC_DQBUF, &mut arg) {
                Ok(()) => return self.take_unit(&arg).map(Some),
                Err(e) if e.raw_os_error() == Some(EAGAIN) => {}
                // After the LAST buffer the queue answers EPIPE until restarted.
                Err(e) if e.raw_os_error() == Some(EPIPE) => {
                    self.drained = true;
                    return Ok(None);
                }
                Err(e) => return Err(self.error("dequeuing a unit", e)),
            }
            if !self.wait(PollFlags::IN, deadline)? {
                return Ok(None);
            }
        }
    }

    /// Queues `picture` and waits at most `timeout` for its unit.
    pub fn encode(
        &mut self,
        picture: &[u8],
        timestamp_us: i64,
        timeout: Duration,
    ) -> Result<Unit, M2mError> {
        let deadline = Instant::now() + timeout;
        self.queue_picture(picture, timestamp_us, timeout)?;
        self.next_unit(deadline.saturating_duration_since(Instant::now()))?
            .ok_or_else(|| self.timeout("encoded unit", timeout))
    }

    /// Makes the next unit a keyframe (`V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME`), for a client
    /// that joins or lost data. [`M2mError::Unsupported`] if the driver has no such control
    /// (vicodec: its keyframes come every GOP size pictures only).
    pub fn force_keyframe(&mut self) -> Result<(), M2mError> {
        match v4l_controls::set(
            self.fd.as_raw_fd(),
            CID_MPEG_VIDEO_FORCE_KEY_FRAME,
            CTRL_TYPE_INTEGER,
            1,
        ) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(EINVAL) => Err(M2mError::Unsupported {
                device: self.device.name(),
                driver: self.device.driver.clone(),
                what: "a forced keyframe (V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME)",
            }),
            Err(e) => Err(self.error("forcing a keyframe", e)),
        }
    }

    /// Finishes the pictures queued so far (`V4L2_ENC_CMD_STOP`) and returns their units, the
    /// last one flagged [`Unit::last`], waiting at most `timeout` in all.
    pub fn drain(&mut self, timeout: Duration) -> Result<Vec<Unit>, M2mError> {
        let deadline = Instant::now() + timeout;
        self.command(ENC_CMD_STOP)
            .map_err(|e| self.error("stopping the encoder (V4L2_ENC_CMD_STOP)", e))?;
        let mut units = Vec::new();
        while !self.drained {
            match self.next_unit(deadline.saturating_duration_since(Instant::now()))? {
                Some(unit) => {
                    let last = unit.last;
                    units.push(unit);
                    if last {
                        return Ok(units);
                    }
                }
                None if self.drained => break,
                None => return Err(self.timeout("LAST buffer after V4L2_ENC_CMD_STOP", timeout)),
            }
        }
        Ok(units)
    }

    /// Encodes again after a [`Encoder::drain`], without reopening: the CAPTURE queue is
    /// restarted (STREAMOFF, every buffer queued again, STREAMON), then
    /// `V4L2_ENC_CMD_START`. The command alone is not enough everywhere: vicodec (6.1) then
    /// keeps answering EPIPE, as after the LAST buffer, until CAPTURE is restarted.
    pub fn restart(&mut self) -> Result<(), M2mError> {
        let capture = self.queues.capture;
        self.stream(vidioc::VIDIOC_STREAMOFF, capture)
            .map_err(|e| self.error("stopping CAPTURE", e))?;
        for index in 0..self.capture.len() as u32 {
            self.queue_capture(index)?;
        }
        self.stream(vidioc::VIDIOC_STREAMON, capture)
            .map_err(|e| self.error("starting CAPTURE", e))?;
        self.command(ENC_CMD_START)
            .map_err(|e| self.error("restarting the encoder (V4L2_ENC_CMD_START)", e))?;
        self.drained = false;
        Ok(())
    }

    fn command(&self, cmd: u32) -> io::Result<()> {
        let mut command = v4l2_encoder_cmd { cmd, ..zeroed() };
        // SAFETY: VIDIOC_ENCODER_CMD reads and writes one v4l2_encoder_cmd, which `command` is.
        unsafe {
            v4l2::ioctl(
                self.fd.as_raw_fd(),
                vidioc::VIDIOC_ENCODER_CMD,
                &mut command as *mut _ as *mut c_void,
            )
        }
    }

    /// Copies the unit out of a dequeued CAPTURE buffer and queues the buffer again.
    fn take_unit(&mut self, arg: &BufferArg) -> Result<Unit, M2mError> {
        let index = arg.buffer.index;
        let Some(mapped) = self.capture.get(index as usize) else {
            return Err(self.error(
                "dequeuing a unit",
                io::Error::other(format!(
                    "the driver returned buffer {index} of {}",
                    self.capture.len()
                )),
            ));
        };
        let (start, len) = mapped.planes[0];
        let (used, offset) = if self.queues.multiplanar {
            (
                arg.planes[0].bytesused as usize,
                arg.planes[0].data_offset as usize,
            )
        } else {
            (arg.buffer.bytesused as usize, 0)
        };
        let used = used.min(len);
        let offset = offset.min(used);
        // SAFETY: the mapping is `len` readable bytes alive until drop, and `offset <= used
        // <= len`; the buffer is dequeued, so the driver does not write it until it is
        // queued again below, after the copy.
        let data =
            unsafe { std::slice::from_raw_parts((start as *const u8).add(offset), used - offset) }
                .to_vec();
        let flags = arg.buffer.flags;
        let last = flags & BUF_FLAG_LAST != 0;
        if last {
            self.drained = true;
        }
        self.queue_capture(index)?;
        // time_t and suseconds_t are 32-bit on armv7: widen.
        #[allow(clippy::useless_conversion)]
        let timestamp_us = i64::from(arg.buffer.timestamp.tv_sec) * 1_000_000
            + i64::from(arg.buffer.timestamp.tv_usec);
        Ok(Unit {
            data,
            keyframe: flags & BUF_FLAG_KEYFRAME != 0,
            last,
            error: flags & BUF_FLAG_ERROR != 0,
            sequence: arg.buffer.sequence,
            timestamp_us,
        })
    }

    /// Takes back the OUTPUT buffers the driver is done with, without waiting.
    fn reclaim_output(&mut self) -> Result<(), M2mError> {
        loop {
            let mut arg = self.describe(self.queues.output, 0);
            match self.buffer_ioctl(vidioc::VIDIOC_DQBUF, &mut arg) {
                Ok(()) => self.free_output.push(arg.buffer.index),
                Err(e) if e.raw_os_error() == Some(EAGAIN) => return Ok(()),
                Err(e) => return Err(self.error("taking back a picture buffer", e)),
            }
        }
    }

    /// Waits until `want` (IN: a unit, OUT: a free picture buffer) or the deadline, in
    /// slices; false at the deadline. An error or hang-up on the node means it is gone, or
    /// the next ioctl says what else.
    fn wait(&self, want: PollFlags, deadline: Instant) -> Result<bool, M2mError> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            let slice =
                rustix::time::Timespec::try_from(left.min(POLL_SLICE)).expect("a short slice");
            let mut fds = [PollFd::new(&self.fd, want)];
            match poll(&mut fds, Some(&slice)) {
                Ok(0) => continue,
                Ok(_) => {
                    let got = fds[0].revents();
                    if got.intersects(PollFlags::ERR | PollFlags::HUP) && !got.intersects(want) {
                        // vb2 also says ERR when neither queue holds a buffer: a device that
                        // still answers is only quiet; pause instead of spinning.
                        self.check_alive()?;
                        std::thread::sleep(left.min(Duration::from_millis(10)));
                        return Ok(true);
                    }
                    return Ok(true);
                }
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(self.error("waiting for the encoder", e.into())),
            }
        }
    }

    /// Gone if the driver no longer answers a harmless ioctl.
    fn check_alive(&self) -> Result<(), M2mError> {
        let mut cap: v4l2_capability = zeroed();
        // SAFETY: VIDIOC_QUERYCAP writes one v4l2_capability, which `cap` is.
        unsafe {
            v4l2::ioctl(
                self.fd.as_raw_fd(),
                vidioc::VIDIOC_QUERYCAP,
                &mut cap as *mut _ as *mut c_void,
            )
        }
        .map_err(|e| self.error("checking the device", e))
    }

    fn set_controls(&mut self, settings: &Settings) -> Result<(), M2mError> {
        let fd = self.fd.as_raw_fd();
        let offered = v4l_controls::query(fd).map_err(|e| self.error("listing its controls", e))?;
        let interval = settings.keyframe_interval.map(i64::from);
        let wanted: [(&'static str, u32, Option<i64>); 7] = [
            (
                "bitrate",
                CID_MPEG_VIDEO_BITRATE,
                settings.bitrate.map(i64::from),
            ),
            ("GOP size", CID_MPEG_VIDEO_GOP_SIZE, interval),
            ("H.264 IDR period", CID_MPEG_VIDEO_H264_I_PERIOD, interval),
            (
                "H.264 profile",
                CID_MPEG_VIDEO_H264_PROFILE,
                settings.h264_profile.map(i64::from),
            ),
            (
                "H.264 level",
                CID_MPEG_VIDEO_H264_LEVEL,
                settings.h264_level.map(i64::from),
            ),
            (
                "repeat sequence header",
                CID_MPEG_VIDEO_REPEAT_SEQ_HEADER,
                Some(i64::from(settings.repeat_sequence_header)),
            ),
            (
                "JPEG quality",
                CID_JPEG_COMPRESSION_QUALITY,
                settings.quality.map(i64::from),
            ),
        ];
        for (name, id, value) in wanted {
            let Some(value) = value else { continue };
            let Some(control) = offered.iter().find(|c| c.id == id) else {
                // A GOP size or an IDR period is enough; the repeated header is only asked.
                let spare = matches!(
                    id,
                    CID_MPEG_VIDEO_H264_I_PERIOD | CID_MPEG_VIDEO_REPEAT_SEQ_HEADER
                ) || (id == CID_MPEG_VIDEO_GOP_SIZE
                    && offered.iter().any(|c| c.id == CID_MPEG_VIDEO_H264_I_PERIOD));
                if !spare {
                    self.not_offered.push(name);
                }
                continue;
            };
            let (min, max) = (control.info.min as i64, control.info.max as i64);
            if value < min || value > max {
                return Err(M2mError::ControlRange {
                    device: self.device.name(),
                    control: name,
                    value,
                    min,
                    max,
                });
            }
            v4l_controls::set(fd, id, control.kind, value)
                .map_err(|e| self.error("setting a control", e))?;
            self.applied.push(format!("{}={value}", control.info.name));
        }
        Ok(())
    }

    /// The frame rate rate control aims at: `VIDIOC_S_PARM`'s time per frame on OUTPUT.
    fn set_frame_rate(&mut self, fps: u32) -> Result<(), M2mError> {
        let mut parm = v4l2_streamparm {
            type_: self.queues.output,
            ..zeroed()
        };
        parm.parm.output.timeperframe = v4l2_fract {
            numerator: 1,
            denominator: fps,
        };
        // SAFETY: VIDIOC_S_PARM reads and writes one v4l2_streamparm, which `parm` is.
        let set = unsafe {
            v4l2::ioctl(
                self.fd.as_raw_fd(),
                vidioc::VIDIOC_S_PARM,
                &mut parm as *mut _ as *mut c_void,
            )
        };
        match set {
            Ok(()) => self.applied.push(format!("frame_rate={fps}")),
            // vicodec has no S_PARM at all (ENOTTY); some drivers refuse the OUTPUT type.
            Err(e) if matches!(e.raw_os_error(), Some(ENOTTY) | Some(EINVAL)) => {
                self.not_offered.push("frame rate")
            }
            Err(e) => return Err(self.error("setting the frame rate", e)),
        }
        Ok(())
    }

    /// REQBUFS `count` MMAP buffers on queue `kind` and maps every plane of each.
    /// REQBUFS of `count` DMABUF slots on the OUTPUT queue: nothing to map, each is given
    /// a buffer when queued.
    fn import_slots(&self, count: u32) -> Result<Vec<Mapped>, M2mError> {
        let granted = self
            .request_buffers(self.queues.output, MEMORY_DMABUF, count)
            .map_err(|e| self.error("asking for DMABUF import slots (REQBUFS)", e))?;
        Ok((0..granted)
            .map(|_| Mapped { planes: Vec::new() })
            .collect())
    }

    /// VIDIOC_REQBUFS: `count` buffers of `memory` on queue `kind` (0 frees them); how many
    /// the driver granted.
    fn request_buffers(&self, kind: u32, memory: u32, count: u32) -> io::Result<u32> {
        let mut request = v4l2_requestbuffers {
            count,
            type_: kind,
            memory,
            ..zeroed()
        };
        // SAFETY: VIDIOC_REQBUFS reads and writes one v4l2_requestbuffers, which `request` is.
        unsafe {
            v4l2::ioctl(
                self.fd.as_raw_fd(),
                vidioc::VIDIOC_REQBUFS,
                &mut request as *mut _ as *mut c_void,
            )
        }?;
        Ok(request.count)
    }

    fn map_buffers(&self, kind: u32, count: u32, protection: i32) -> Result<Vec<Mapped>, M2mError> {
        let granted = self
            .request_buffers(kind, MEMORY_MMAP, count)
            .map_err(|e| self.error("asking for buffers (REQBUFS)", e))?;
        let mut mapped = Vec::with_capacity(granted as usize);
        for index in 0..granted {
            let mut arg = self.describe(kind, index);
            self.buffer_ioctl(vidioc::VIDIOC_QUERYBUF, &mut arg)
                .map_err(|e| self.error("describing a buffer (QUERYBUF)", e))?;
            let places: Vec<(u32, usize)> = if self.queues.multiplanar {
                let n = (arg.buffer.length as usize).min(MAX_PLANES);
                // SAFETY: for MMAP planes the kernel fills the union's `mem_offset`.
                arg.planes[..n]
                    .iter()
                    .map(|p| (unsafe { p.m.mem_offset }, p.length as usize))
                    .collect()
            } else {
                // SAFETY: for MMAP buffers the kernel fills the union's `offset`.
                vec![(unsafe { arg.buffer.m.offset }, arg.buffer.length as usize)]
            };
            let mut planes = Vec::with_capacity(places.len());
            for (offset, len) in places {
                // SAFETY: maps a buffer plane the driver just described (its offset and
                // length, from VIDIOC_QUERYBUF on this file descriptor), shared with it.
                let start = unsafe {
                    v4l2::mmap(
                        std::ptr::null_mut(),
                        len,
                        protection,
                        MAP_SHARED,
                        self.fd.as_raw_fd(),
                        offset as _,
                    )
                };
                match start {
                    Ok(start) => planes.push((start, len)),
                    Err(e) => {
                        mapped.push(Mapped { planes });
                        unmap(&mut mapped);
                        return Err(self.error("mapping a buffer", e));
                    }
                }
            }
            mapped.push(Mapped { planes });
        }
        Ok(mapped)
    }

    fn queue_capture(&self, index: u32) -> Result<(), M2mError> {
        let mut arg = self.describe(self.queues.capture, index);
        self.buffer_ioctl(vidioc::VIDIOC_QBUF, &mut arg)
            .map_err(|e| self.error("queueing a unit buffer", e))
    }

    fn describe(&self, kind: u32, index: u32) -> BufferArg {
        let memory = if kind == self.queues.output {
            self.output_memory
        } else {
            MEMORY_MMAP
        };
        BufferArg {
            buffer: v4l2_buffer {
                index,
                type_: kind,
                memory,
                ..zeroed()
            },
            planes: [zeroed(); MAX_PLANES],
        }
    }

    /// QUERYBUF, QBUF and DQBUF: each reads and writes one v4l2_buffer (and, on MPLANE
    /// queues, the plane array it points to).
    fn buffer_ioctl(&self, request: vidioc::_IOC_TYPE, arg: &mut BufferArg) -> io::Result<()> {
        if self.queues.multiplanar {
            arg.buffer.m.planes = arg.planes.as_mut_ptr();
            arg.buffer.length = MAX_PLANES as u32;
        }
        // SAFETY: `request` is one of the buffer ioctls, whose argument is a v4l2_buffer;
        // `arg.buffer` is one and, on MPLANE queues, points at `arg.planes`, MAX_PLANES
        // entries as `length` says; both alive and exclusively borrowed for the call.
        unsafe {
            v4l2::ioctl(
                self.fd.as_raw_fd(),
                request,
                &mut arg.buffer as *mut _ as *mut c_void,
            )
        }
    }

    fn stream(&self, request: vidioc::_IOC_TYPE, kind: u32) -> io::Result<()> {
        let mut kind = kind;
        // SAFETY: VIDIOC_STREAMON/OFF read one buffer type (a 32-bit int), alive for the call.
        unsafe {
            v4l2::ioctl(
                self.fd.as_raw_fd(),
                request,
                &mut kind as *mut u32 as *mut c_void,
            )
        }
    }

    fn error(&self, what: &'static str, e: io::Error) -> M2mError {
        io_error(&self.device.name(), what, e)
    }

    fn timeout(&self, what: &'static str, timeout: Duration) -> M2mError {
        M2mError::Timeout {
            device: self.device.name(),
            what,
            timeout,
        }
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        // ENODEV (unbound, unplugged) is expected here and not worth a line.
        let report = |what: &str, e: io::Error| {
            if !matches!(e.raw_os_error(), Some(ENODEV) | Some(ENXIO)) {
                log::warn!("{}: V4L2 M2M teardown: {what}: {e}", self.device.name());
            }
        };
        for kind in [self.queues.output, self.queues.capture] {
            if let Err(e) = self.stream(vidioc::VIDIOC_STREAMOFF, kind) {
                report("stopping a queue", e);
            }
        }
        unmap(&mut self.output);
        unmap(&mut self.capture);
        for (kind, memory) in [
            (self.queues.output, self.output_memory),
            (self.queues.capture, MEMORY_MMAP),
        ] {
            // A count of 0 frees the driver's buffers (or import slots).
            if let Err(e) = self.request_buffers(kind, memory, 0) {
                report("freeing the buffers", e);
            }
        }
    }
}

/// Unmaps every plane of `buffers` (each once: they are drained).
fn unmap(buffers: &mut Vec<Mapped>) {
    for buffer in buffers.drain(..) {
        for (start, len) in buffer.planes {
            // SAFETY: unmaps a mapping made in `map_buffers` with this length; no borrow of it
            // outlives the encoder (units are copies), and it is unmapped once (drained).
            if let Err(e) = unsafe { v4l2::munmap(start, len) } {
                log::warn!("V4L2 M2M teardown: unmapping a buffer: {e}");
            }
        }
    }
}

/// S_FMT of `fourcc` at `width`x`height` on queue `kind`; the driver's answer.
fn set_format(
    fd: i32,
    queues: Queues,
    kind: u32,
    width: u32,
    height: u32,
    fourcc: u32,
) -> io::Result<v4l2_format> {
    let mut format = v4l2_format {
        type_: kind,
        ..zeroed()
    };
    if queues.multiplanar {
        // SAFETY: writing plain integers into the union's member for MPLANE queues.
        let pix = unsafe { &mut format.fmt.pix_mp };
        pix.width = width;
        pix.height = height;
        pix.pixelformat = fourcc;
        pix.field = FIELD_NONE;
        pix.num_planes = 1;
    } else {
        // SAFETY: writing plain integers into the union's member for single-planar queues.
        let pix = unsafe { &mut format.fmt.pix };
        pix.width = width;
        pix.height = height;
        pix.pixelformat = fourcc;
        pix.field = FIELD_NONE;
    }
    // SAFETY: VIDIOC_S_FMT reads and writes one v4l2_format, which `format` is.
    unsafe {
        v4l2::ioctl(
            fd,
            vidioc::VIDIOC_S_FMT,
            &mut format as *mut _ as *mut c_void,
        )
    }?;
    Ok(format)
}

/// The raw layout in a driver's S_FMT answer.
fn layout_of(queues: Queues, format: &v4l2_format) -> Layout {
    if queues.multiplanar {
        // SAFETY: the driver answered an MPLANE queue's format: `pix_mp` is the member.
        let pix = unsafe { &format.fmt.pix_mp };
        let n = (pix.num_planes as usize).clamp(1, MAX_PLANES);
        Layout {
            width: pix.width,
            height: pix.height,
            fourcc: pix.pixelformat,
            bytesperline: pix.plane_fmt[..n].iter().map(|p| p.bytesperline).collect(),
            sizeimage: pix.plane_fmt[..n].iter().map(|p| p.sizeimage).collect(),
        }
    } else {
        // SAFETY: the driver answered a single-planar queue's format: `pix` is the member.
        let pix = unsafe { &format.fmt.pix };
        Layout {
            width: pix.width,
            height: pix.height,
            fourcc: pix.pixelformat,
            bytesperline: vec![pix.bytesperline],
            sizeimage: vec![pix.sizeimage],
        }
    }
}

/// The sizes (VIDIOC_ENUM_FRAMESIZES, of the first of `fourccs` the driver lists sizes of:
/// encoders answer for the raw or for the coded format) and raw formats a device accepts,
/// for messages.
fn accepted(fd: i32, device: &Device, fourccs: &[u32]) -> String {
    let sizes = fourccs
        .iter()
        .map(|&fourcc| frame_sizes(fd, fourcc))
        .find(|sizes| !sizes.is_empty())
        .unwrap_or_default();
    let formats: Vec<String> = device.raw.iter().map(|&c| fourcc_str(c)).collect();
    format!(
        "{} in {}",
        if sizes.is_empty() {
            "sizes it does not list".to_owned()
        } else {
            sizes.join(", ")
        },
        formats.join(", ")
    )
}

/// The sizes VIDIOC_ENUM_FRAMESIZES lists for `fourcc`: discrete ones, or one range.
fn frame_sizes(fd: i32, fourcc: u32) -> Vec<String> {
    let mut sizes = Vec::new();
    for index in 0..32 {
        let mut size = v4l2_frmsizeenum {
            index,
            pixel_format: fourcc,
            ..zeroed()
        };
        // SAFETY: VIDIOC_ENUM_FRAMESIZES reads and writes one v4l2_frmsizeenum, which `size` is.
        let listed = unsafe {
            v4l2::ioctl(
                fd,
                vidioc::VIDIOC_ENUM_FRAMESIZES,
                &mut size as *mut _ as *mut c_void,
            )
        };
        if listed.is_err() {
            break;
        }
        if size.type_ == FRMSIZE_TYPE_DISCRETE {
            // SAFETY: a discrete answer fills the union's `discrete` member.
            let d = unsafe { size.__bindgen_anon_1.discrete };
            sizes.push(format!("{}x{}", d.width, d.height));
        } else {
            // SAFETY: continuous and stepwise answers fill the union's `stepwise` member.
            let s = unsafe { size.__bindgen_anon_1.stepwise };
            sizes.push(format!(
                "{}x{} to {}x{} in steps of {}x{}",
                s.min_width, s.min_height, s.max_width, s.max_height, s.step_width, s.step_height
            ));
            break;
        }
    }
    sizes
}

fn open_node(path: &Path) -> Result<OwnedFd, M2mError> {
    // Non-blocking: DQBUF answers EAGAIN instead of sleeping, and every wait is a bounded poll.
    rustix::fs::open(
        path,
        OFlags::RDWR | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_error(&path.display().to_string(), "opening", e.into()))
}

fn io_error(device: &str, what: &'static str, source: io::Error) -> M2mError {
    if matches!(source.raw_os_error(), Some(ENODEV) | Some(ENXIO)) {
        M2mError::Gone {
            device: device.to_owned(),
            what,
            source,
        }
    } else {
        M2mError::Io {
            device: device.to_owned(),
            what,
            source,
        }
    }
}

/// A NUL-terminated name from a fixed array, lossily as UTF-8.
fn c_str(raw: &[u8]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// All-zero V4L2 structures, the reset every one of these ioctls expects.
fn zeroed<T: Zeroable>() -> T {
    // SAFETY: only implemented (below) for bindgen's plain C structures of integers, arrays,
    // unions of those and raw pointers, for which all-zero bytes are a valid value.
    unsafe { std::mem::zeroed() }
}

/// Plain C data for which all-zero is valid (see [`zeroed`]).
trait Zeroable {}
impl Zeroable for v4l2_buffer {}
impl Zeroable for v4l2_plane {}
impl Zeroable for v4l2_capability {}
impl Zeroable for v4l2_encoder_cmd {}
impl Zeroable for v4l2_fmtdesc {}
impl Zeroable for v4l2_format {}
impl Zeroable for v4l2_frmsizeenum {}
impl Zeroable for v4l2_requestbuffers {}
impl Zeroable for v4l2_streamparm {}

/// The fd, for callers that poll it with other sources.
impl AsFd for Encoder {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fourccs_are_the_kernel_uapi_values() {
        // v4l2_fourcc(a, b, c, d) = a | b << 8 | c << 16 | d << 24 (linux/videodev2.h).
        assert_eq!(PIX_FMT_H264, 0x3436_3248);
        assert_eq!(PIX_FMT_JPEG, 0x4745_504a);
        assert_eq!(PIX_FMT_FWHT, 0x5448_5746);
        assert_eq!(PIX_FMT_YUV420, 0x3231_5559);
        assert_eq!(PIX_FMT_NV12, 0x3231_564e);
        assert_eq!(PIX_FMT_YUYV, 0x5659_5559);
        assert_eq!(fourcc_str(PIX_FMT_FWHT), "FWHT");
    }

    #[test]
    fn control_ids_are_the_kernel_uapi_values() {
        // linux/v4l2-controls.h of Linux 6.1 (Debian's linux-source-6.1 6.1.192-3):
        // V4L2_CID_CODEC_BASE + 203, 207, 226, 229, 358, 359, 363; V4L2_CID_JPEG_CLASS_BASE + 3.
        // 0x009909cb is also what `v4l2-ctl -l` prints for vicodec's video_gop_size.
        assert_eq!(CID_MPEG_VIDEO_GOP_SIZE, 0x0099_09cb);
        assert_eq!(CID_MPEG_VIDEO_BITRATE, 0x0099_09cf);
        assert_eq!(CID_MPEG_VIDEO_REPEAT_SEQ_HEADER, 0x0099_09e2);
        assert_eq!(CID_MPEG_VIDEO_FORCE_KEY_FRAME, 0x0099_09e5);
        assert_eq!(CID_MPEG_VIDEO_H264_I_PERIOD, 0x0099_0a66);
        assert_eq!(CID_MPEG_VIDEO_H264_LEVEL, 0x0099_0a67);
        assert_eq!(CID_MPEG_VIDEO_H264_PROFILE, 0x0099_0a6b);
        assert_eq!(CID_JPEG_COMPRESSION_QUALITY, 0x009d_0903);
    }

    #[test]
    fn capability_and_buffer_flags_are_the_kernel_uapi_values() {
        // linux/videodev2.h of Linux 6.1; bcm2835-codec reports VIDEO_M2M_MPLANE | STREAMING.
        assert_eq!(CAP_VIDEO_M2M_MPLANE, 0x0000_4000);
        assert_eq!(CAP_VIDEO_M2M, 0x0000_8000);
        assert_eq!(CAP_STREAMING, 0x0400_0000);
        assert_eq!(CAP_DEVICE_CAPS, 0x8000_0000);
        // vicodec's device caps as v4l2-ctl --info printed them in the VM.
        assert_eq!(0x0420_8000, CAP_VIDEO_M2M | CAP_STREAMING | 0x0020_0000);
        assert_eq!(
            (BUF_TYPE_VIDEO_CAPTURE, BUF_TYPE_VIDEO_OUTPUT),
            (1, 2),
            "enum v4l2_buf_type"
        );
        assert_eq!(
            (BUF_TYPE_VIDEO_CAPTURE_MPLANE, BUF_TYPE_VIDEO_OUTPUT_MPLANE),
            (9, 10)
        );
        assert_eq!(MEMORY_MMAP, 1);
        assert_eq!(MEMORY_DMABUF, 4);
        assert_eq!(BUF_FLAG_KEYFRAME, 0x0000_0008);
        assert_eq!(BUF_FLAG_ERROR, 0x0000_0040);
        assert_eq!(BUF_FLAG_LAST, 0x0010_0000);
        assert_eq!(FMT_FLAG_COMPRESSED, 0x0001);
        assert_eq!((ENC_CMD_START, ENC_CMD_STOP), (0, 1));
        assert_eq!(MAX_PLANES, 8);
    }

    /// The ioctl numbers as the v4l crate computes them from its bindgen structures, against
    /// `_IOWR('V', nr, struct ...)` of linux/videodev2.h on a 64-bit target (the sizes of
    /// v4l2_buffer and v4l2_format differ on 32-bit ones). Every hard-coded number in these
    /// tests was also printed by a C program from linux-libc-dev 6.1.187's <linux/videodev2.h>.
    #[cfg(target_pointer_width = "64")]
    #[test]
    fn ioctl_numbers_are_the_kernel_uapi_values() {
        let numbers = [
            (vidioc::VIDIOC_QUERYCAP, 0x8068_5600u32, "VIDIOC_QUERYCAP"),
            (vidioc::VIDIOC_ENUM_FMT, 0xc040_5602, "VIDIOC_ENUM_FMT"),
            (vidioc::VIDIOC_G_FMT, 0xc0d0_5604, "VIDIOC_G_FMT"),
            (vidioc::VIDIOC_S_FMT, 0xc0d0_5605, "VIDIOC_S_FMT"),
            (vidioc::VIDIOC_REQBUFS, 0xc014_5608, "VIDIOC_REQBUFS"),
            (vidioc::VIDIOC_QUERYBUF, 0xc058_5609, "VIDIOC_QUERYBUF"),
            (vidioc::VIDIOC_QBUF, 0xc058_560f, "VIDIOC_QBUF"),
            (vidioc::VIDIOC_EXPBUF, 0xc040_5610, "VIDIOC_EXPBUF"),
            (vidioc::VIDIOC_DQBUF, 0xc058_5611, "VIDIOC_DQBUF"),
            (vidioc::VIDIOC_STREAMON, 0x4004_5612, "VIDIOC_STREAMON"),
            (vidioc::VIDIOC_STREAMOFF, 0x4004_5613, "VIDIOC_STREAMOFF"),
            (vidioc::VIDIOC_S_PARM, 0xc0cc_5616, "VIDIOC_S_PARM"),
            (
                vidioc::VIDIOC_S_EXT_CTRLS,
                0xc020_5648,
                "VIDIOC_S_EXT_CTRLS",
            ),
            (
                vidioc::VIDIOC_ENUM_FRAMESIZES,
                0xc02c_564a,
                "VIDIOC_ENUM_FRAMESIZES",
            ),
            (
                vidioc::VIDIOC_ENCODER_CMD,
                0xc028_564d,
                "VIDIOC_ENCODER_CMD",
            ),
        ];
        for (computed, header, name) in numbers {
            // c_ulong on glibc, c_int on musl: the low 32 bits are the number either way.
            assert_eq!(computed as u32, header, "{name}");
        }
    }

    #[test]
    fn errors_name_the_device_and_what_it_accepts() {
        let none = M2mError::NotFound {
            codec: "h264",
            looked: 4,
            skipped: vec!["/dev/video2: opening: Permission denied (os error 13)".into()],
        };
        assert_eq!(
            none.to_string(),
            "no V4L2 memory-to-memory encoder offers h264 (looked at 4 video devices); \
             unusable: /dev/video2: opening: Permission denied (os error 13)"
        );
        let gone = io_error(
            "/dev/video11",
            "dequeuing a unit",
            io::Error::from_raw_os_error(ENODEV),
        );
        assert!(gone.is_gone(), "{gone}");
        assert!(gone
            .to_string()
            .starts_with("/dev/video11: the encoder is gone"));
        let busy = io_error("/dev/video11", "opening", io::Error::from_raw_os_error(16));
        assert!(!busy.is_gone(), "EBUSY is not a vanished device");
    }

    #[test]
    fn codecs_parse_and_print_by_one_table() {
        for (codec, name, code) in CODECS {
            assert_eq!(Codec::from_name(name), Some(codec));
            assert_eq!(codec.as_str(), name);
            assert_eq!(codec.fourcc(), code);
        }
        assert_eq!(Codec::from_name("vp8"), None);
    }

    #[test]
    fn i420_is_laid_out_with_the_drivers_strides_and_padded_rows() {
        // 4x2 I420: Y 0..8, U 100, 101, V 200, 201; the driver pads lines to 8 bytes and the
        // luma to 4 rows (sizeimage = 8 * 4 * 3 / 2).
        let i420: Vec<u8> = (0..8).chain([100, 101, 200, 201]).collect();
        let yu12 = Layout {
            width: 4,
            height: 2,
            fourcc: PIX_FMT_YUV420,
            bytesperline: vec![8],
            sizeimage: vec![48],
        };
        let out = yu12.from_i420(&i420).unwrap();
        assert_eq!(&out[0..4], &[0, 1, 2, 3]);
        assert_eq!(&out[8..12], &[4, 5, 6, 7]);
        assert_eq!(&out[32..34], &[100, 101], "U after 4 padded luma rows");
        assert_eq!(
            &out[40..42],
            &[200, 201],
            "V after 2 chroma rows of 4 bytes"
        );
        let nv12 = Layout {
            fourcc: PIX_FMT_NV12,
            ..yu12.clone()
        };
        let out = nv12.from_i420(&i420).unwrap();
        assert_eq!(&out[32..36], &[100, 200, 101, 201]);
        assert_eq!(yu12.from_i420(&i420[1..]), None, "a wrong-sized picture");
    }

    #[test]
    fn a_run_of_bad_units_is_a_failure_and_a_good_one_ends_it() {
        let mut bad = BadUnits::default();
        assert!(bad.bad("/dev/video11", "flagged corrupt").is_ok());
        assert!(bad.bad("/dev/video11", "flagged corrupt").is_ok());
        bad.good();
        for _ in 1..MAX_BAD_UNITS {
            assert!(bad.bad("/dev/video11", "flagged corrupt").is_ok());
        }
        let err = bad.bad("/dev/video11", "not a sound JPEG").unwrap_err();
        assert_eq!(
            err,
            "/dev/video11: 3 units in a row were bad, the last not a sound JPEG"
        );
    }

    #[test]
    fn strided_planes_are_written_row_by_row_and_short_ones_refused() {
        // The same 4x2 picture with its planes padded to strides 6, 3 and 3.
        let y = [0, 1, 2, 3, 9, 9, 4, 5, 6, 7];
        let (u, v) = ([100, 101, 9], [200, 201, 9]);
        let nv12 = Layout {
            width: 4,
            height: 2,
            fourcc: PIX_FMT_NV12,
            bytesperline: vec![8],
            sizeimage: vec![48],
        };
        let mut out = vec![7u8; 48];
        assert!(nv12.write_i420([&y, &u, &v], [6, 3, 3], &mut out));
        assert_eq!(&out[0..5], &[0, 1, 2, 3, 7], "padding left as it was");
        assert_eq!(&out[8..12], &[4, 5, 6, 7]);
        assert_eq!(&out[32..36], &[100, 200, 101, 201]);
        let mut fresh = vec![7u8; 48];
        assert!(
            !nv12.write_i420([&y[..9], &u, &v], [6, 3, 3], &mut fresh),
            "short luma"
        );
        assert!(
            !nv12.write_i420([&y, &u, &v], [3, 3, 3], &mut fresh),
            "stride below width"
        );
        assert!(
            !nv12.write_i420([&y, &u, &v], [6, 3, 3], &mut fresh[..47]),
            "small buffer"
        );
        assert!(
            fresh.iter().all(|&b| b == 7),
            "nothing written when refused"
        );
        let rgb = Layout {
            fourcc: fourcc(b"RGB3"),
            ..nv12
        };
        assert!(!rgb.write_i420([&y, &u, &v], [6, 3, 3], &mut fresh));
    }
}
