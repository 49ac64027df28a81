//! USB webcams (UVC) and other V4L2 capture devices, through the `v4l` crate.
//!
//! Opening negotiates a format ([`super::negotiate`]: MJPEG when offered at the capture size,
//! else I420/NV12/YUYV), the frame interval for `--fps`, and maps 4 driver buffers (mmap,
//! [`super::v4l_buffers`]: the crate's own stream panics on some teardown errors).
//! Each frame is handed on borrowed straight from its driver buffer, only `bytesused` of it;
//! the buffer goes back to the driver on the next call. Timestamps are the driver's
//! CLOCK_MONOTONIC stamps when they pass the sources' common check (set, not ahead of the
//! dequeue, not stale: [`clock::checked_stamp`]), else the arrival time. Every device error (ENODEV/EIO after an unplug, a stalled stream)
//! is [`CaptureError::Unavailable`]: the pipeline shows placeholders and reopens the device
//! every second, by path, so a `/dev/v4l/by-id/...` link finds the camera again under
//! whatever `/dev/videoN` it comes back as.
#![forbid(unsafe_code)]

use super::controls::{self, ControlInfo, Value};
use super::negotiate::{self, Offer, PixelFormat, Sizes};
use super::v4l_buffers::MmapStream;
use super::v4l_controls;
use super::{CaptureError, DmaBuf, Frame, Picture, VideoParams, VideoSource, POLL_TIMEOUT};
use crate::clock::{self, MonoTime};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;
use v4l::buffer::Flags;
use v4l::video::Capture;
use v4l::{Device, FourCC, Fraction};

/// Driver buffers to map: enough to absorb a slow encode, few enough to keep latency low.
const BUFFERS: u32 = 4;

/// How long opening waits for the first frame (a camera may need to adjust exposure).
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(3);

/// poll(2)'s "data to read" event (the same on every Linux architecture).
const POLLIN: i16 = 0x1;

/// An open, streaming V4L2 capture device.
pub struct V4lCamera {
    // Dropped before `_device`: stops streaming and unmaps the buffers.
    stream: MmapStream,
    _device: Device,
    format: PixelFormat,
    width: u32,
    height: u32,
    stride: usize,
    description: String,
    /// The device path, for the log of a hardware encoder importing its buffers.
    path: String,
    clock_warned: bool,
    errored_buffers: u64,
    /// The device's controls as found at open: ids and types for setting them by name.
    known_controls: Vec<v4l_controls::V4lControl>,
}

/// The device path for the request: `--device PATH`, else `/dev/video<--device-id>`.
pub fn device_path(params: &VideoParams) -> PathBuf {
    params
        .device_path
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("/dev/video{}", params.device_id)))
}

fn io_reason(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(2) => "no such device — is the camera plugged in?".to_string(),
        Some(13) => "permission denied — is the user in the video group?".to_string(),
        Some(16) => "device busy — is another program using the camera?".to_string(),
        Some(19) => "device gone (ENODEV) — unplugged?".to_string(),
        Some(5) => "I/O error (EIO) — unplugged or a USB fault?".to_string(),
        _ => e.to_string(),
    }
}

fn unavailable(context: impl Into<String>, e: &io::Error) -> CaptureError {
    CaptureError::unavailable(context, io_reason(e))
}

fn fps_of(interval: Fraction) -> f64 {
    if interval.numerator == 0 {
        0.0
    } else {
        f64::from(interval.denominator) / f64::from(interval.numerator)
    }
}

/// What the device offers, in the negotiator's terms (formats we cannot use are skipped).
fn offers(device: &Device) -> io::Result<Vec<Offer>> {
    let mut out = Vec::new();
    for desc in device.enum_formats()? {
        let Some(format) = PixelFormat::from_fourcc(&desc.fourcc.repr) else {
            continue;
        };
        let mut discrete = Vec::new();
        let mut stepwise = None;
        for size in device.enum_framesizes(desc.fourcc)? {
            match size.size {
                v4l::framesize::FrameSizeEnum::Discrete(d) => {
                    let rates = device
                        .enum_frameintervals(desc.fourcc, d.width, d.height)
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|i| match i.interval {
                            v4l::frameinterval::FrameIntervalEnum::Discrete(f) => Some(fps_of(f)),
                            v4l::frameinterval::FrameIntervalEnum::Stepwise(_) => None,
                        })
                        .collect();
                    discrete.push((d.width, d.height, rates));
                }
                v4l::framesize::FrameSizeEnum::Stepwise(s) => {
                    stepwise = Some(Sizes::Stepwise {
                        min: (s.min_width, s.min_height),
                        max: (s.max_width, s.max_height),
                        step: (s.step_width, s.step_height),
                    });
                }
            }
        }
        let sizes = match stepwise {
            Some(s) if discrete.is_empty() => s,
            _ => Sizes::Discrete(discrete),
        };
        out.push(Offer { format, sizes });
    }
    Ok(out)
}

impl V4lCamera {
    /// Opens the device, negotiates, maps the buffers and waits for the first frame.
    pub fn open(params: &VideoParams) -> Result<V4lCamera, CaptureError> {
        let path = device_path(params);
        let shown = path.display().to_string();
        let device =
            Device::with_path(&path).map_err(|e| unavailable(format!("opening {shown}"), &e))?;
        let caps = device
            .query_caps()
            .map_err(|e| unavailable(format!("querying {shown}"), &e))?;
        let can = v4l::capability::Flags::VIDEO_CAPTURE | v4l::capability::Flags::STREAMING;
        if !caps.capabilities.contains(can) {
            return Err(CaptureError::Config(format!(
                "{shown} ({}) is not a streaming video capture device; see --list-devices",
                caps.card
            )));
        }
        let offers =
            offers(&device).map_err(|e| unavailable(format!("listing formats of {shown}"), &e))?;
        let want = (params.capture_width, params.capture_height);
        let choice = negotiate::choose(&offers, want, params.fps).ok_or_else(|| {
            CaptureError::Config(format!(
                "{shown} ({}) offers none of MJPEG, YU12, NV12, YUYV; see --list-devices",
                caps.card
            ))
        })?;
        for note in &choice.notes {
            log::warn!("{shown}: {note}");
        }
        let fourcc = FourCC::new(&choice.format.fourcc());
        let set = device
            .set_format(&v4l::Format::new(choice.width, choice.height, fourcc))
            .map_err(|e| unavailable(format!("setting the format of {shown}"), &e))?;
        let format = PixelFormat::from_fourcc(&set.fourcc.repr).ok_or_else(|| {
            CaptureError::Config(format!(
                "{shown} switched to {} instead of {}",
                String::from_utf8_lossy(&set.fourcc.repr),
                String::from_utf8_lossy(&choice.format.fourcc())
            ))
        })?;
        if (set.width, set.height) != (choice.width, choice.height) {
            log::warn!(
                "{shown}: asked for {}x{}, the driver set {}x{}",
                choice.width,
                choice.height,
                set.width,
                set.height
            );
        }
        // The frame interval for the rate; drivers round it to what they support.
        let wanted = Fraction::new(1000, (choice.fps * 1000.0).round().max(1.0) as u32);
        let granted = match device.set_params(&v4l::video::capture::Parameters::new(wanted)) {
            Ok(p) => fps_of(p.interval),
            Err(e) => {
                log::warn!("{shown}: cannot set the frame rate: {}", io_reason(&e));
                device.params().map(|p| fps_of(p.interval)).unwrap_or(0.0)
            }
        };
        if (granted - f64::from(params.fps)).abs() > 0.05 {
            log::info!(
                "{shown}: asked for {} fps, the driver granted {granted:.2} fps",
                params.fps
            );
        }
        let mut stream = MmapStream::new(device.handle(), BUFFERS)
            .map_err(|e| unavailable(format!("mapping buffers of {shown}"), &e))?;
        stream
            .start()
            .map_err(|e| unavailable(format!("starting {shown}"), &e))?;
        // Wait for a first frame (a camera may need to adjust exposure), then drop it.
        let first = FIRST_FRAME_TIMEOUT.as_millis() as i32;
        match stream.handle().poll(POLLIN, first) {
            Ok(0) => {
                let waited = FIRST_FRAME_TIMEOUT.as_secs();
                let e = io::Error::new(io::ErrorKind::TimedOut, format!("no frame in {waited} s"));
                return Err(unavailable(format!("starting {shown}"), &e));
            }
            Ok(_) => {}
            Err(e) => return Err(unavailable(format!("starting {shown}"), &e)),
        }
        stream
            .dequeue()
            .map_err(|e| unavailable(format!("starting {shown}"), &e))?;
        let name = |f: PixelFormat| String::from_utf8_lossy(&f.fourcc()).into_owned();
        let description = format!(
            "{shown} ({}, {}) {} {}x{} at {granted:.1} fps, {BUFFERS} mmap buffers{}",
            caps.card,
            caps.driver,
            name(format),
            set.width,
            set.height,
            if format == PixelFormat::Mjpeg {
                if (set.width, set.height) == (params.width, params.height) {
                    ", JPEG passthrough"
                } else {
                    ", JPEG scaled"
                }
            } else {
                ""
            }
        );
        let device_fd = device.handle().fd();
        Ok(V4lCamera {
            stream,
            _device: device,
            format,
            width: set.width,
            height: set.height,
            stride: set.stride as usize,
            description,
            path: shown.clone(),
            clock_warned: false,
            errored_buffers: 0,
            known_controls: v4l_controls::query(device_fd).unwrap_or_else(|e| {
                log::warn!("listing the controls of {shown}: {e}");
                Vec::new()
            }),
        })
    }
}

impl V4lCamera {
    fn fd(&self) -> i32 {
        self._device.handle().fd()
    }
}

impl VideoSource for V4lCamera {
    fn describe(&self) -> String {
        self.description.clone()
    }

    fn controls(&self) -> Vec<ControlInfo> {
        match v4l_controls::query(self.fd()) {
            Ok(list) => list.into_iter().map(|c| c.info).collect(),
            Err(e) => {
                log::warn!("listing the camera's controls: {e}");
                Vec::new()
            }
        }
    }

    fn set_control(&mut self, info: &ControlInfo, value: Value) -> Result<(), String> {
        let c = self
            .known_controls
            .iter()
            .find(|c| c.info.name == info.name)
            .ok_or_else(|| format!("the camera did not offer {} when it opened", info.name))?;
        v4l_controls::set(self.fd(), c.id, c.kind, v4l_controls::raw_value(value))
            .map_err(|e| e.to_string())
    }

    fn mirror(&mut self, hflip: bool, vflip: bool) -> bool {
        let fd = self.fd();
        let list = &self.known_controls;
        let find = |id| list.iter().find(|c| c.id == id && !c.info.read_only);
        let wanted = [
            (v4l_controls::CID_HFLIP, hflip),
            (v4l_controls::CID_VFLIP, vflip),
        ];
        if wanted.iter().any(|&(id, on)| on && find(id).is_none()) {
            return false;
        }
        // Also sets them back off: a driver keeps its controls from the last user.
        wanted.iter().all(|&(id, on)| match find(id) {
            Some(c) => v4l_controls::set(fd, c.id, c.kind, i64::from(on))
                .map_err(|e| log::warn!("setting {} on the camera: {e}", c.info.name))
                .is_ok(),
            None => true,
        })
    }

    fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        // Poll first: the buffer we hold goes back to the driver only inside `next`, so a
        // timeout here leaves the queue as it was.
        let timeout = POLL_TIMEOUT.as_millis() as i32;
        match self.stream.handle().poll(POLLIN, timeout) {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(None),
            Err(e) => return Err(unavailable("waiting for a frame", &e)),
        }
        let (width, height, stride, format) = (self.width, self.height, self.stride, self.format);
        let (buffer, meta, exported) = self
            .stream
            .dequeue()
            .map_err(|e| unavailable("reading a frame", &e))?;
        let flags = meta.flags;
        if flags.contains(Flags::ERROR) {
            self.errored_buffers += 1;
            log::debug!(
                "driver marked a buffer as corrupt ({} so far)",
                self.errored_buffers
            );
            return Ok(None);
        }
        let now = MonoTime::now();
        let captured = match buffer_instant(flags, meta.timestamp, now) {
            Ok(t) => t,
            Err(why) => {
                if !self.clock_warned {
                    log::warn!("{why}; using the arrival time instead");
                    self.clock_warned = true;
                }
                now
            }
        };
        let used = (meta.bytesused as usize).min(buffer.len());
        let data = &buffer[..used];
        let part = |from: usize, len: usize| data.get(from..from + len).unwrap_or(&[]);
        let rows = height as usize;
        let picture = match format {
            PixelFormat::Mjpeg => Picture::Jpeg {
                width,
                height,
                data,
            },
            PixelFormat::Yuyv => Picture::Yuyv {
                width,
                height,
                data,
                stride,
            },
            PixelFormat::Nv12 => Picture::Nv12 {
                width,
                height,
                planes: [
                    part(0, stride * rows),
                    part(stride * rows, stride * rows / 2),
                ],
                strides: [stride, stride],
            },
            PixelFormat::I420 => {
                let (luma, chroma) = (stride * rows, (stride / 2) * (rows / 2));
                Picture::I420 {
                    width,
                    height,
                    planes: [
                        part(0, luma),
                        part(luma, chroma),
                        part(luma + chroma, chroma),
                    ],
                    strides: [stride, stride / 2, stride / 2],
                }
            }
        };
        let dmabuf = exported.map(|fd| DmaBuf {
            fd,
            bytesused: used,
            length: buffer.len(),
            source: &self.path,
        });
        Ok(Some(Frame {
            captured,
            picture,
            dmabuf,
        }))
    }
}

/// The capture instant of a buffer dequeued at `now`, from its driver stamp (seconds and
/// microseconds) when that is on CLOCK_MONOTONIC and passes [`clock::checked_stamp`].
fn buffer_instant(
    flags: Flags,
    (sec, usec): (i64, i64),
    now: MonoTime,
) -> Result<MonoTime, String> {
    if flags & Flags::TIMESTAMP_MASK != Flags::TIMESTAMP_MONOTONIC {
        return Err("the driver's timestamps are not on CLOCK_MONOTONIC".into());
    }
    let stamp = MonoTime::from_timespec(sec, usec.saturating_mul(1000));
    clock::checked_stamp(stamp, now, clock::VIDEO_STAMP_MAX_AGE)
        .map_err(|why| format!("a V4L2 buffer's {why}"))
}

/// `--list-devices`: every V4L2 node with its formats, sizes and frame rates.
pub fn list_devices() -> String {
    let mut out = String::new();
    let mut nodes = v4l::context::enum_devices();
    nodes.sort_by_key(|n| n.index());
    if nodes.is_empty() {
        out.push_str("no V4L2 devices (/dev/video*) found\n");
    }
    for node in nodes {
        let path = node.path().to_path_buf();
        out.push_str(&describe_node(&path));
    }
    if let Ok(links) = std::fs::read_dir("/dev/v4l/by-id") {
        out.push_str("\nstable names (use with --device):\n");
        for link in links.flatten() {
            let target = std::fs::canonicalize(link.path()).unwrap_or_default();
            out.push_str(&format!(
                "  {} -> {}\n",
                link.path().display(),
                target.display()
            ));
        }
    }
    out
}

fn describe_node(path: &Path) -> String {
    let mut out = String::new();
    let device = match Device::with_path(path) {
        Ok(d) => d,
        Err(e) => return format!("{}: {}\n", path.display(), io_reason(&e)),
    };
    let caps = match device.query_caps() {
        Ok(c) => c,
        Err(e) => return format!("{}: {}\n", path.display(), io_reason(&e)),
    };
    out.push_str(&format!(
        "{}: {} ({}, {})\n",
        path.display(),
        caps.card,
        caps.driver,
        caps.bus
    ));
    if !caps
        .capabilities
        .contains(v4l::capability::Flags::VIDEO_CAPTURE)
    {
        out.push_str("  not a video capture node\n");
        return out;
    }
    let listed = v4l_controls::query(device.handle().fd()).unwrap_or_default();
    let offered: Vec<ControlInfo> = listed.into_iter().map(|c| c.info).collect();
    out.push_str(&controls::list_lines(&offered));
    for desc in device.enum_formats().unwrap_or_default() {
        let usable = if PixelFormat::from_fourcc(&desc.fourcc.repr).is_some() {
            ""
        } else {
            " (not used by rpi-streamer)"
        };
        out.push_str(&format!(
            "  {} {}{usable}\n",
            String::from_utf8_lossy(&desc.fourcc.repr),
            desc.description
        ));
        for size in device.enum_framesizes(desc.fourcc).unwrap_or_default() {
            match size.size {
                v4l::framesize::FrameSizeEnum::Discrete(d) => {
                    let rates: Vec<String> = device
                        .enum_frameintervals(desc.fourcc, d.width, d.height)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|i| match i.interval {
                            v4l::frameinterval::FrameIntervalEnum::Discrete(f) => {
                                format!("{:.4}", fps_of(f))
                                    .trim_end_matches('0')
                                    .trim_end_matches('.')
                                    .to_string()
                            }
                            v4l::frameinterval::FrameIntervalEnum::Stepwise(s) => {
                                format!("{:.1}-{:.1}", fps_of(s.max), fps_of(s.min))
                            }
                        })
                        .collect();
                    out.push_str(&format!(
                        "    {}x{}: {} fps\n",
                        d.width,
                        d.height,
                        rates.join(", ")
                    ));
                }
                v4l::framesize::FrameSizeEnum::Stepwise(s) => out.push_str(&format!(
                    "    {}x{} to {}x{} in steps of {}x{}\n",
                    s.min_width,
                    s.min_height,
                    s.max_width,
                    s.max_height,
                    s.step_width,
                    s.step_height
                )),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_stamps_ahead_of_the_dequeue_or_off_clock_are_refused() {
        let now = MonoTime::from_nanos(500_000_000_000);
        let monotonic = Flags::TIMESTAMP_MONOTONIC;
        // 499.970 s: 30 ms before the dequeue.
        assert_eq!(
            buffer_instant(monotonic, (499, 970_000), now),
            Ok(MonoTime::from_nanos(499_970_000_000))
        );
        // 100 ms in the future, as vivid stamps in a VM.
        let ahead = buffer_instant(monotonic, (500, 100_000), now).unwrap_err();
        assert!(ahead.contains("0.100 s ahead of the present"), "{ahead}");
        // Unset, stale, and absurd microseconds.
        assert!(buffer_instant(monotonic, (0, 0), now).is_err());
        assert!(buffer_instant(monotonic, (490, 0), now).is_err());
        assert!(buffer_instant(monotonic, (499, i64::MAX), now).is_err());
        // Not on CLOCK_MONOTONIC at all.
        let other = buffer_instant(Flags::empty(), (499, 970_000), now).unwrap_err();
        assert!(other.contains("not on CLOCK_MONOTONIC"), "{other}");
    }
}
