//! Raspberry Pi cameras (and any other libcamera camera) through libcamera, natively.
//!
//! The `libcamera` crate's manager and camera handles are neither `Send` nor `Sync`, while a
//! [`VideoSource`] must be `Send`. Rather than assert thread-safety with `unsafe impl Send`,
//! [`LibcameraSource`] owns a small camera thread that creates the camera manager, acquires
//! and configures the camera, allocates and maps its buffers, queues requests and, at the end,
//! stops and releases everything; the manager and camera never leave it. What crosses threads
//! is the crate's `Request` (which is `Send`): libcamera completes a request, the source
//! borrows the planes of its memory-mapped buffer straight into a [`Picture`] (no copy: the
//! encoder reads the camera's buffer), and on the next call hands the request back to the
//! camera thread to be queued again. So the only per-frame copy is the JPEG encoder's NV12
//! chroma de-interleave (none at all for I420, which a Pi's ISP outputs natively).
//!
//! The buffers are DMABUFs (the Pi's ISP and CMA heap; udmabuf for the virtual camera): a
//! frame whose planes lie one after the other in one of them, from its start, is lent with it
//! ([`Frame::dmabuf`]), so that a hardware encoder reads it in place (zero copy). Borrowing a
//! plane's raw descriptor is this module's one `unsafe` block.
//!
//! Needs libcamera >= 0.4 at build and run time (the crate binds the installed headers); see
//! docs/rpi-camera.md. CI exercises this exact file against libcamera's `virtual` camera.
#![deny(unsafe_code)]

use super::libcamera_controls::{self, Offered};
use super::{CaptureError, DmaBuf, Frame, Picture, VideoParams, VideoSource, POLL_TIMEOUT};
use crate::clock::{self, MonoTime};
use libcamera::camera::{
    ActiveCamera, Camera, CameraConfiguration, Orientation as CameraOrientation,
};
use libcamera::camera_manager::{CameraList, CameraManager};
use libcamera::color_space::{ColorSpace, Range};
use libcamera::control::ControlList;
use libcamera::control_value::ControlValue;
use libcamera::controls;
use libcamera::formats;
use libcamera::framebuffer::AsFrameBuffer;
use libcamera::framebuffer_allocator::{FrameBuffer, FrameBufferAllocator};
use libcamera::framebuffer_map::MemoryMappedFrameBuffer;
use libcamera::geometry::Size;
use libcamera::pixel_format::PixelFormat;
use libcamera::properties;
use libcamera::request::{Request, RequestStatus, ReuseFlag};
use libcamera::stream::{Stream, StreamRole};
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Buffers (and requests) in flight: enough that encoding one frame never starves the sensor.
const BUFFER_COUNT: u32 = 4;

/// How long opening (manager start, acquire, configure, allocate, start) may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// libcamera allows one camera manager per process (a second one aborts it), so a new
/// session waits until the previous camera thread has really ended.
static SESSION_ALIVE: AtomicBool = AtomicBool::new(false);

/// Marks the libcamera session as ended when the camera thread finishes.
struct SessionGuard;

impl SessionGuard {
    fn claim(context: &str) -> Result<SessionGuard, CaptureError> {
        if SESSION_ALIVE.swap(true, Ordering::SeqCst) {
            return Err(CaptureError::unavailable(
                context,
                "the previous libcamera session is still shutting down",
            ));
        }
        Ok(SessionGuard)
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        SESSION_ALIVE.store(false, Ordering::SeqCst);
    }
}

/// The two YUV 4:2:0 layouts the encoder takes without an RGB round-trip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum YuvFormat {
    /// Planar Y, U, V (libcamera `YUV420`); chroma rows are half the luma stride.
    I420,
    /// Y then interleaved UV (libcamera `NV12`); the UV rows share the luma stride.
    Nv12,
}

impl YuvFormat {
    fn pixel_format(self) -> PixelFormat {
        match self {
            YuvFormat::I420 => formats::YUV420,
            YuvFormat::Nv12 => formats::NV12,
        }
    }

    fn from_pixel_format(format: PixelFormat) -> Option<YuvFormat> {
        if format == formats::YUV420 {
            Some(YuvFormat::I420)
        } else if format == formats::NV12 {
            Some(YuvFormat::Nv12)
        } else {
            None
        }
    }

    fn name(self) -> &'static str {
        match self {
            YuvFormat::I420 => "YUV420",
            YuvFormat::Nv12 => "NV12",
        }
    }
}

/// Where the planes of one granted frame are: format, size and the luma stride.
///
/// libcamera reports one stride (the first plane's); the others follow from the format, as
/// V4L2 defines them: half of it for I420 chroma, all of it for NV12's interleaved UV.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlaneLayout {
    /// Pixel layout.
    pub format: YuvFormat,
    /// Width in pixels (even).
    pub width: u32,
    /// Height in pixels (even).
    pub height: u32,
    /// Bytes per luma row, at least `width`.
    pub stride: usize,
}

impl PlaneLayout {
    /// Bytes per row of each plane.
    fn strides(&self) -> [usize; 3] {
        match self.format {
            YuvFormat::I420 => [self.stride, self.stride / 2, self.stride / 2],
            YuvFormat::Nv12 => [self.stride, self.stride, 0],
        }
    }

    /// Bytes of each whole plane (every row padded to its stride).
    fn plane_sizes(&self) -> [usize; 3] {
        let [ys, cs, vs] = self.strides();
        let (h, ch) = (self.height as usize, self.height as usize / 2);
        [ys * h, cs * ch, vs * ch]
    }

    fn plane_count(&self) -> usize {
        match self.format {
            YuvFormat::I420 => 3,
            YuvFormat::Nv12 => 2,
        }
    }

    /// Checks what the camera granted before any frame is mapped against it.
    pub fn check(&self) -> Result<(), String> {
        if self.width == 0 || self.height == 0 || self.width % 2 == 1 || self.height % 2 == 1 {
            return Err(format!(
                "granted size {}x{} is not even; 4:2:0 needs even sides",
                self.width, self.height
            ));
        }
        let chroma_row = match self.format {
            YuvFormat::I420 => self.width as usize / 2,
            YuvFormat::Nv12 => self.width as usize,
        };
        if self.stride < self.width as usize || self.strides()[1] < chroma_row {
            return Err(format!(
                "granted stride {} is too small for {} {}x{}",
                self.stride,
                self.format.name(),
                self.width,
                self.height
            ));
        }
        Ok(())
    }

    /// The picture in `planes`, as a frame buffer's mapped planes: one slice per colour plane,
    /// or a single slice holding all planes back to back (some pipelines describe it so).
    pub fn picture<'a>(&self, planes: &[&'a [u8]]) -> Result<Picture<'a>, String> {
        let [ys, cs, _] = self.strides();
        let sizes = self.plane_sizes();
        let split: [&'a [u8]; 3] = match planes.len() {
            n if n == self.plane_count() => {
                let mut out: [&'a [u8]; 3] = [&[], &[], &[]];
                out[..n].copy_from_slice(planes);
                out
            }
            1 => {
                let all = planes[0];
                let needed: usize = sizes.iter().sum();
                if all.len() < needed {
                    return Err(format!(
                        "{} {}x{} stride {}: buffer has {} bytes, needs {needed}",
                        self.format.name(),
                        self.width,
                        self.height,
                        self.stride,
                        all.len()
                    ));
                }
                let (y, rest) = all.split_at(sizes[0]);
                let (u, rest) = rest.split_at(sizes[1]);
                let v = &rest[..sizes[2]];
                [y, u, v]
            }
            n => {
                return Err(format!(
                    "{} frame buffer has {n} planes, expected {} or 1",
                    self.format.name(),
                    self.plane_count()
                ))
            }
        };
        let (width, height) = (self.width, self.height);
        Ok(match self.format {
            YuvFormat::I420 => Picture::I420 {
                width,
                height,
                planes: split,
                strides: [ys, cs, cs],
            },
            YuvFormat::Nv12 => Picture::Nv12 {
                width,
                height,
                planes: [split[0], split[1]],
                strides: [ys, cs],
            },
        })
    }
}

/// The capture instant of a frame from libcamera's `SensorTimestamp` (CLOCK_MONOTONIC ns).
///
/// A value that is missing, negative, or fails [`clock::checked_stamp`] (ahead of `now`,
/// older than [`clock::VIDEO_STAMP_MAX_AGE`]) is not on that clock in those units (a
/// pipeline bug, µs instead of ns, another clock); the caller then falls back to the
/// arrival time and says so once.
pub fn sensor_instant(sensor_ns: Option<i64>, now: MonoTime) -> Result<MonoTime, String> {
    let ns = sensor_ns.ok_or("no SensorTimestamp in the request metadata")?;
    let ns = u64::try_from(ns).map_err(|_| format!("negative SensorTimestamp {ns}"))?;
    clock::checked_stamp(MonoTime::from_nanos(ns), now, clock::VIDEO_STAMP_MAX_AGE).map_err(|why| {
        format!(
            "SensorTimestamp {ns} against CLOCK_MONOTONIC {} ns: {why}",
            now.as_nanos()
        )
    })
}

/// What the camera thread reports once the camera streams.
struct Granted {
    layout: PlaneLayout,
    stream: Stream,
    /// The camera, for the log ("libcamera ID").
    name: String,
    describe: String,
    controls: Vec<Offered>,
    mirrored: (bool, bool),
}

/// A libcamera camera streaming planar (or semi-planar) YUV 4:2:0.
pub struct LibcameraSource {
    layout: PlaneLayout,
    stream: Stream,
    /// The camera, for the log ("libcamera ID").
    name: String,
    describe: String,
    /// Completed requests, straight from libcamera's completion callback.
    completed: Option<Receiver<Request>>,
    /// Requests to queue again, then at the end everything the source holds, to the camera
    /// thread.
    requeue: Option<Sender<ToCamera>>,
    /// The request whose buffer the last returned [`Frame`] borrows.
    lent: Option<Request>,
    /// Why the camera thread gave up (disconnect, queueing failure), if it did.
    failure: Arc<Mutex<Option<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    timestamp_warned: bool,
    /// The camera's controls, with the values set so far.
    controls: Vec<Offered>,
    /// Controls set since the last request went back: they travel with the next one.
    pending: Vec<(u32, ControlValue)>,
    /// The mirroring the camera was configured to do.
    mirrored: (bool, bool),
}

impl LibcameraSource {
    /// Opens camera number `params.camera_index` and starts streaming.
    pub fn open(params: &VideoParams) -> Result<LibcameraSource, CaptureError> {
        let session = SessionGuard::claim("opening the libcamera camera")?;
        let (ready_tx, ready_rx) = mpsc::channel();
        let (completed_tx, completed_rx) = mpsc::channel();
        let (requeue_tx, requeue_rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let failure = Arc::new(Mutex::new(None));
        let camera = CameraThread {
            params: params.clone(),
            completed: completed_tx,
            requeue: requeue_rx,
            stop: stop.clone(),
            failure: failure.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("libcamera".into())
            .spawn(move || {
                let _session = session;
                camera.run(ready_tx)
            })
            .map_err(|e| CaptureError::unavailable("starting the libcamera thread", e))?;
        let granted = match ready_rx.recv_timeout(OPEN_TIMEOUT) {
            Ok(Ok(granted)) => granted,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                stop.store(true, Ordering::SeqCst);
                // A thread stuck inside libcamera is left detached; SESSION_ALIVE keeps a
                // second manager from being created until it ends.
                return Err(CaptureError::unavailable(
                    "opening the libcamera camera",
                    format!("no answer within {}s", OPEN_TIMEOUT.as_secs()),
                ));
            }
        };
        Ok(LibcameraSource {
            layout: granted.layout,
            stream: granted.stream,
            name: granted.name,
            describe: granted.describe,
            completed: Some(completed_rx),
            requeue: Some(requeue_tx),
            lent: None,
            failure,
            stop,
            thread: Some(thread),
            timestamp_warned: false,
            controls: granted.controls,
            pending: Vec::new(),
            mirrored: granted.mirrored,
        })
    }

    fn failure(&self, fallback: &str) -> CaptureError {
        let reason = self
            .failure
            .lock()
            .ok()
            .and_then(|f| f.clone())
            .unwrap_or_else(|| fallback.to_string());
        CaptureError::unavailable("libcamera camera", reason)
    }

    /// No frame now: `Ok(None)`, or the camera thread's failure if it reported one.
    fn nothing_yet(&self) -> Result<Option<Frame<'_>>, CaptureError> {
        let failed = self.failure.lock().map(|f| f.is_some()).unwrap_or(true);
        if failed {
            Err(self.failure("the camera stopped"))
        } else {
            Ok(None)
        }
    }

    fn give_back(&mut self, mut request: Request) {
        request.reuse(ReuseFlag::REUSE_BUFFERS);
        for (id, value) in self.pending.drain(..) {
            if let Err(e) = request.controls_mut().set_raw(id, value) {
                log::warn!("libcamera refused control {id:#x}: {e}");
            }
        }
        if let Some(requeue) = &self.requeue {
            // The camera thread waits for the source's Shutdown before it ends, so this only
            // fails if it panicked; then the request is leaked rather than freed here.
            if let Err(mpsc::SendError(back)) = requeue.send(ToCamera::Requeue(request)) {
                std::mem::forget(back);
            }
        }
    }
}

impl VideoSource for LibcameraSource {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn controls(&self) -> Vec<super::controls::ControlInfo> {
        self.controls.iter().map(|c| c.info.clone()).collect()
    }

    fn set_control(
        &mut self,
        info: &super::controls::ControlInfo,
        value: super::controls::Value,
    ) -> Result<(), String> {
        let c = self
            .controls
            .iter_mut()
            .find(|c| c.info.name == info.name)
            .ok_or_else(|| format!("the camera does not offer {}", info.name))?;
        let id = c.id;
        self.pending.retain(|(pending, _)| *pending != id);
        self.pending
            .push((id, libcamera_controls::control_value(c, value)));
        c.info.value = value;
        Ok(())
    }

    fn mirror(&mut self, hflip: bool, vflip: bool) -> bool {
        self.mirrored == (hflip, vflip)
    }

    fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        if let Some(done) = self.lent.take() {
            self.give_back(done);
        }
        let Some(completed) = &self.completed else {
            return Err(self.failure("the camera stopped"));
        };
        let request = match completed.recv_timeout(POLL_TIMEOUT) {
            Ok(request) => request,
            Err(RecvTimeoutError::Timeout) => return self.nothing_yet(),
            Err(RecvTimeoutError::Disconnected) => {
                return Err(self.failure("the libcamera thread ended"))
            }
        };
        if request.status() != RequestStatus::Complete {
            // Cancelled: the camera is stopping or was unplugged; the failure says which.
            self.give_back(request);
            return self.nothing_yet();
        }
        let now = MonoTime::now();
        let sensor_ns = request
            .metadata()
            .get::<controls::SensorTimestamp>()
            .ok()
            .map(|t| t.0);
        let captured = match sensor_instant(sensor_ns, now) {
            Ok(t) => t,
            Err(why) => {
                if !self.timestamp_warned {
                    log::warn!("{why}; using the arrival time instead");
                    self.timestamp_warned = true;
                }
                now
            }
        };
        let request = self.lent.insert(request);
        let buffer: &MemoryMappedFrameBuffer<FrameBuffer> =
            request.buffer(&self.stream).ok_or_else(|| {
                CaptureError::unavailable("libcamera camera", "completed request has no buffer")
            })?;
        let planes = buffer.data();
        let picture = self
            .layout
            .picture(&planes)
            .map_err(|e| CaptureError::unavailable("libcamera camera", e))?;
        let dmabuf = contiguous_dmabuf(buffer, &self.layout, &self.name);
        Ok(Some(Frame {
            captured,
            picture,
            dmabuf,
        }))
    }
}

/// `buffer` as one DMABUF holding the picture laid out as `layout` says, its planes one
/// after the other from the buffer's first byte (what an encoder can import); `None` when
/// libcamera placed them otherwise (separate descriptors, gaps, an offset).
fn contiguous_dmabuf<'a>(
    buffer: &'a MemoryMappedFrameBuffer<FrameBuffer>,
    layout: &PlaneLayout,
    source: &'a str,
) -> Option<DmaBuf<'a>> {
    let planes = buffer.planes();
    let fd = planes.get(0)?.fd();
    let sizes = layout.plane_sizes();
    let laid_out = match planes.len() {
        1 => planes.get(0)?.len() >= sizes.iter().sum(),
        n => {
            n == layout.plane_count()
                && (&*planes).into_iter().zip(sizes).all(|(p, s)| p.len() == s)
        }
    };
    if fd < 0 || !laid_out {
        return None;
    }
    let mut end = 0usize;
    for plane in &*planes {
        if plane.fd() != fd || plane.offset() != Some(end) {
            return None;
        }
        end += plane.len();
    }
    Some(DmaBuf {
        fd: plane_fd(fd, buffer),
        bytesused: end,
        length: end,
        source,
    })
}

/// Plane descriptor `raw` of `buffer`, borrowed for as long as `buffer` is.
#[allow(unsafe_code)]
fn plane_fd(raw: i32, _buffer: &MemoryMappedFrameBuffer<FrameBuffer>) -> BorrowedFd<'_> {
    // SAFETY: `raw` (not -1, checked by the caller) is a plane descriptor of `buffer`'s
    // FrameBuffer, which libcamera keeps open for as long as the FrameBuffer exists; the
    // FrameBuffers are freed only after the camera stopped and this source let go of every
    // request (see `Drop`), and the borrow cannot outlive `buffer`.
    unsafe { BorrowedFd::borrow_raw(raw) }
}

impl Drop for LibcameraSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // No request is freed here: the lent one and the channel of completed ones go to the
        // camera thread, which frees them after the camera stopped and before the buffers
        // go. (libcamera's virtual camera still walks a request's buffer map on its own
        // thread after it posted the completion: a request freed by this thread the moment
        // it arrived was a SIGSEGV at about one shutdown in 40.)
        let leftovers = ToCamera::Shutdown(Leftovers {
            lent: self.lent.take(),
            completed: self.completed.take(),
        });
        if let Some(requeue) = self.requeue.take() {
            if let Err(mpsc::SendError(leftovers)) = requeue.send(leftovers) {
                // The camera thread panicked: its camera may be half torn down, and freeing
                // requests now could crash; the process is ending anyway.
                std::mem::forget(leftovers);
            }
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("the libcamera thread panicked");
            }
        }
        log::debug!("libcamera camera closed");
    }
}

/// What the source sends the camera thread.
enum ToCamera {
    /// A request the source is done with, to queue again.
    Requeue(Request),
    /// The source is gone: these are freed once the camera stopped.
    Shutdown(Leftovers),
}

/// The requests a dropped source still held.
struct Leftovers {
    lent: Option<Request>,
    completed: Option<Receiver<Request>>,
}

/// Everything the camera thread owns; see the module comment.
struct CameraThread {
    params: VideoParams,
    completed: Sender<Request>,
    requeue: Receiver<ToCamera>,
    stop: Arc<AtomicBool>,
    failure: Arc<Mutex<Option<String>>>,
}

impl CameraThread {
    fn run(self, ready: Sender<Result<Granted, CaptureError>>) {
        let manager = match CameraManager::new() {
            Ok(m) => m,
            Err(e) => {
                let _ = ready.send(Err(CaptureError::unavailable(
                    "starting the libcamera camera manager",
                    e,
                )));
                return;
            }
        };
        self.stream(&manager, ready);
        // `manager` drops last, after the camera, buffers and requests of `stream`.
    }

    /// Opens, configures, allocates and starts the camera, reports what was granted, then
    /// requeues requests until told to stop.
    fn stream(self, manager: &CameraManager, ready: Sender<Result<Granted, CaptureError>>) {
        let cameras = manager.cameras();
        let started = match find_camera(&cameras, self.params.camera_index as usize)
            .and_then(|(camera, name)| self.start(camera, name))
        {
            Ok(started) => started,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        log::info!("granted {}", started.granted.describe);
        let Started {
            retired,
            allocator,
            config,
            mut active,
            camera,
            name,
            granted,
        } = started;
        if ready.send(Ok(granted)).is_err() {
            return; // open() gave up waiting.
        }
        drop(ready);
        let mut held = Vec::new();
        let leftovers = self.requeue_loop(&active, self.params.frame_interval(), &name, &mut held);
        if let Err(e) = active.stop() {
            log::debug!("stopping {name}: {e}");
        }
        // Only now, with the camera stopped, are requests freed, and every one (each holds a
        // mapping of one of the allocator's buffers) before the allocator: those held back,
        // those the stop cancelled, and all the source still had, which arrives with its
        // Shutdown (it may come later if the camera failed first: the source then reports
        // the failure and is dropped). Freed with `self` instead, after the buffers and the
        // camera, they were a SIGSEGV at shutdown on loaded machines.
        let leftovers = leftovers.or_else(|| self.wait_for_shutdown(&mut held));
        drop(held);
        if let Some(Leftovers { lent, completed }) = leftovers {
            drop(lent);
            if let Some(completed) = completed {
                let arrived: Vec<Request> = completed.try_iter().collect();
                drop(arrived);
            }
        }
        let cancelled = retired.lock().map(|mut r| std::mem::take(&mut *r));
        drop(cancelled);
        // libcamera's order: the buffers' allocator, then the configuration, then the
        // camera (and, in `run`, the manager last).
        drop(allocator);
        drop(config);
        drop(active);
        drop(camera);
    }

    /// Acquires `camera`, configures it, maps its buffers and starts it with every request
    /// queued.
    fn start<'d>(&self, camera: Camera<'d>, name: String) -> Result<Started<'d>, CaptureError> {
        let mut active = camera.acquire().map_err(|e| {
            CaptureError::unavailable(
                format!("acquiring {name}"),
                format!("{e} (is another program such as rpicam-vid using it?)"),
            )
        })?;
        let configured = configure(&mut active, &self.params, &name)?;
        let (allocator, requests) = allocate(&mut active, &configured.stream, &name)?;

        let completed = self.completed.clone();
        let retired = Arc::new(Mutex::new(Vec::new()));
        let keep = retired.clone();
        active.on_request_completed(move |request| {
            // The source's channel lives until the camera stopped (its Shutdown hands it to
            // this thread), so this only catches a completion after that: kept, not freed on
            // libcamera's thread, and freed here before the buffers.
            if let Err(mpsc::SendError(request)) = completed.send(request) {
                if let Ok(mut kept) = keep.lock() {
                    kept.push(request);
                }
            }
        });
        let failure = self.failure.clone();
        let disconnected_name = name.clone();
        active.on_disconnected(move || {
            if let Ok(mut f) = failure.lock() {
                f.get_or_insert(format!("{disconnected_name} was disconnected"));
            }
        });

        let (start_controls, duration_note) =
            frame_duration_controls(&active, self.params.frame_interval());
        active
            .start(Some(&start_controls))
            .map_err(|e| CaptureError::unavailable(format!("starting {name}"), e))?;
        for request in requests {
            active.queue_request(request).map_err(|(_, e)| {
                CaptureError::unavailable(format!("queueing requests for {name}"), e)
            })?;
        }

        let Configured {
            mirrored,
            config,
            layout,
            stream,
            buffer_count,
            colour,
        } = configured;
        let requested = (self.params.width, self.params.height);
        let adjusted = if (layout.width, layout.height) != requested {
            format!(" (asked {}x{})", requested.0, requested.1)
        } else {
            String::new()
        };
        let colour = colour.map_or_else(|| "default".to_string(), |c| c.to_string());
        let controls = libcamera_controls::offered(active.controls());
        let describe = format!(
            "libcamera {name}: {} {}x{}{adjusted} stride {}, {buffer_count} buffers, colour {colour}, {duration_note}",
            layout.format.name(),
            layout.width,
            layout.height,
            layout.stride,
        );
        let source = format!("libcamera {name}");
        Ok(Started {
            retired,
            allocator,
            config,
            active,
            camera,
            name,
            granted: Granted {
                layout,
                stream,
                name: source,
                describe,
                controls,
                mirrored,
            },
        })
    }

    /// After the camera stopped: frees requeued requests into `held` until the source's
    /// Shutdown arrives (or the source is gone without one).
    fn wait_for_shutdown(&self, held: &mut Vec<Request>) -> Option<Leftovers> {
        loop {
            match self.requeue.recv() {
                Ok(ToCamera::Requeue(request)) => held.push(request),
                Ok(ToCamera::Shutdown(leftovers)) => return Some(leftovers),
                Err(_) => return None,
            }
        }
    }

    /// Queues returned requests until the source is dropped (its leftovers are returned) or
    /// the camera fails. Requests not queued again go to `held`, to be freed after the stop.
    ///
    /// Requeueing is paced to about `interval`: a camera that honours FrameDurationLimits
    /// (every Pi camera) is never held back, one that ignores them (libcamera's virtual test
    /// camera produces frames as fast as it can) does not burn a CPU core on unseen frames.
    fn requeue_loop(
        &self,
        active: &libcamera::camera::ActiveCamera<'_>,
        interval: Duration,
        name: &str,
        held: &mut Vec<Request>,
    ) -> Option<Leftovers> {
        let pace = interval.mul_f64(0.9);
        let mut next_slot = Instant::now();
        loop {
            let request = match self.requeue.recv_timeout(POLL_TIMEOUT) {
                Ok(ToCamera::Requeue(r)) => r,
                Ok(ToCamera::Shutdown(leftovers)) => return Some(leftovers),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return None,
            };
            let now = Instant::now();
            // A slot schedule with a little slack: late requeues may catch up, early ones wait.
            next_slot = next_slot.max(now.checked_sub(pace * 2).unwrap_or(now));
            if next_slot > now {
                std::thread::sleep(next_slot - now);
            }
            next_slot += pace;
            if self.stop.load(Ordering::SeqCst) {
                held.push(request);
                continue; // The Shutdown is on its way.
            }
            if let Err((request, e)) = active.queue_request(request) {
                held.push(request);
                if let Ok(mut f) = self.failure.lock() {
                    f.get_or_insert(format!("queueing a request on {name}: {e}"));
                }
                return None;
            }
        }
    }
}

/// A started camera and what it needs kept alive while it streams.
struct Started<'d> {
    /// Requests completed after the source stopped taking them.
    retired: Arc<Mutex<Vec<Request>>>,
    allocator: FrameBufferAllocator,
    config: CameraConfiguration,
    active: ActiveCamera<'d>,
    camera: Camera<'d>,
    name: String,
    granted: Granted,
}

/// libcamera's orientation for mirroring `(hflip, vflip)` (a top-bottom flip is a half turn
/// and a left-right mirror).
fn mirror_orientation((hflip, vflip): (bool, bool)) -> CameraOrientation {
    match (hflip, vflip) {
        (false, false) => CameraOrientation::Rotate0,
        (true, false) => CameraOrientation::Rotate0Mirror,
        (true, true) => CameraOrientation::Rotate180,
        (false, true) => CameraOrientation::Rotate180Mirror,
    }
}

/// Asks the camera (its sensor's flips) for the mirroring `wanted`; what it does: `wanted`,
/// or no mirroring at all when it cannot (the pipeline then turns the pictures).
fn ask_orientation(config: &mut CameraConfiguration, wanted: (bool, bool)) -> (bool, bool) {
    let orientation = mirror_orientation(wanted);
    config.set_orientation(orientation);
    if !config.validate().is_invalid() && config.orientation() == orientation {
        return wanted;
    }
    config.set_orientation(CameraOrientation::Rotate0);
    let _ = config.validate();
    (false, false)
}

/// A configured camera's stream.
struct Configured {
    /// The mirroring the camera does itself.
    mirrored: (bool, bool),
    config: CameraConfiguration,
    layout: PlaneLayout,
    stream: Stream,
    buffer_count: u32,
    colour: Option<ColorSpace>,
}

/// The camera's model as libcamera names it.
fn camera_model(camera: &Camera<'_>) -> String {
    camera
        .properties()
        .get::<properties::Model>()
        .map(|m| m.0)
        .unwrap_or_else(|_| "unknown model".into())
}

/// Camera number `index`, and the name logs and errors call it by.
fn find_camera<'d>(
    cameras: &CameraList<'d>,
    index: usize,
) -> Result<(Camera<'d>, String), CaptureError> {
    let Some(camera) = cameras.get(index) else {
        let found = cameras.len();
        let reason = if found == 0 {
            "libcamera found no camera (is it connected and enabled? try `rpicam-hello --list-cameras`)".to_string()
        } else {
            format!("there is no camera {index}; libcamera found {found} (see --list-devices)")
        };
        return Err(CaptureError::unavailable(
            "opening the libcamera camera",
            reason,
        ));
    };
    let name = format!(
        "camera {index} ({}, {})",
        camera_model(&camera),
        camera.id()
    );
    Ok((camera, name))
}

/// Configures one video stream: planar YUV 4:2:0 if the camera gives it, else NV12, at the
/// requested size (or what the camera adjusts it to), full-range BT.601.
fn configure(
    active: &mut ActiveCamera<'_>,
    params: &VideoParams,
    name: &str,
) -> Result<Configured, CaptureError> {
    let fail = |reason: String| CaptureError::unavailable(format!("configuring {name}"), reason);
    let mut config = active
        .generate_configuration(&[StreamRole::VideoRecording])
        .ok_or_else(|| fail("no video configuration".into()))?;
    let requested = Size {
        width: params.width,
        height: params.height,
    };
    let mut granted_format = None;
    // Planar first (the encoder takes it as is), then NV12 (chroma split only).
    for format in [YuvFormat::I420, YuvFormat::Nv12] {
        let Some(mut stream_config) = config.get_mut(0) else {
            break;
        };
        stream_config.set_pixel_format(format.pixel_format());
        stream_config.set_size(requested);
        stream_config.set_buffer_count(BUFFER_COUNT);
        // Full-range BT.601 is what JPEG (JFIF) means by YCbCr.
        stream_config.set_color_space(Some(ColorSpace::sycc()));
        if config.validate().is_invalid() {
            continue;
        }
        let granted = config.get(0).map(|c| c.get_pixel_format());
        if let Some(f) = granted.and_then(YuvFormat::from_pixel_format) {
            granted_format = Some(f);
            break;
        }
    }
    let format = granted_format
        .ok_or_else(|| fail("the camera offers neither YUV420 nor NV12 for video".into()))?;
    // A sensor pipeline (the Pi's) sets PixelArraySize and honours the orientation through
    // the sensor's flips; the virtual camera has neither, and its validate() accepts any
    // orientation without doing it (seen with libcamera 0.7), so it is not asked.
    let has_sensor = active
        .properties()
        .get::<properties::PixelArraySize>()
        .is_ok();
    let mirrored = if has_sensor {
        ask_orientation(&mut config, params.mirror)
    } else {
        (false, false)
    };
    active
        .configure(&mut config)
        .map_err(|e| fail(e.to_string()))?;
    let stream_config = config.get(0).ok_or_else(|| fail("no stream".into()))?;
    let size = stream_config.get_size();
    let layout = PlaneLayout {
        format,
        width: size.width,
        height: size.height,
        stride: stream_config.get_stride() as usize,
    };
    layout.check().map_err(fail)?;
    let colour = stream_config.get_color_space();
    if colour.as_ref().is_some_and(|c| c.range == Range::Limited) {
        log::warn!("{name} granted limited-range colour; pictures will look slightly flat");
    }
    let buffer_count = stream_config.get_buffer_count();
    let stream = stream_config
        .stream()
        .ok_or_else(|| fail("no stream".into()))?;
    Ok(Configured {
        mirrored,
        config,
        layout,
        stream,
        buffer_count,
        colour,
    })
}

/// Allocates and maps the stream's buffers, one request each.
fn allocate(
    active: &mut ActiveCamera<'_>,
    stream: &Stream,
    name: &str,
) -> Result<(FrameBufferAllocator, Vec<Request>), CaptureError> {
    let mut allocator = FrameBufferAllocator::new(active);
    let buffers = allocator.alloc(stream).map_err(|e| {
        CaptureError::unavailable(format!("allocating buffers for {name}"), e.to_string())
    })?;
    let requests_failed =
        |e: String| CaptureError::unavailable(format!("creating requests for {name}"), e);
    let mut requests = Vec::with_capacity(buffers.len());
    for (i, buffer) in buffers.into_iter().enumerate() {
        let mapped = MemoryMappedFrameBuffer::new(buffer).map_err(|e| {
            CaptureError::unavailable(format!("mapping buffers of {name}"), e.to_string())
        })?;
        let mut request = active
            .create_request(Some(i as u64))
            .ok_or_else(|| requests_failed("refused".into()))?;
        request
            .add_buffer(stream, mapped)
            .map_err(|e| requests_failed(e.to_string()))?;
        requests.push(request);
    }
    Ok((allocator, requests))
}

/// The start controls asking for one frame per `interval`, and a note for the log.
fn frame_duration_controls(
    active: &ActiveCamera<'_>,
    interval: Duration,
) -> (libcamera::utils::UniquePtr<ControlList>, String) {
    let frame_us = i64::try_from(interval.as_nanos() / 1000).unwrap_or(i64::MAX);
    let mut start_controls = ControlList::new();
    let note = match active
        .controls()
        .find(controls::ControlId::FrameDurationLimits as u32)
    {
        Ok(info) => {
            let range = match (i64::try_from(info.min()), i64::try_from(info.max())) {
                (Ok(min), Ok(max)) => format!(" (camera allows {min}-{max} µs)"),
                _ => String::new(),
            };
            match start_controls.set(controls::FrameDurationLimits([frame_us, frame_us])) {
                Ok(()) => format!("frame duration {frame_us} µs{range}"),
                Err(e) => format!("frame duration not set: {e}"),
            }
        }
        Err(_) => "no frame duration control; paced by requeueing".into(),
    };
    (start_controls, note)
}

/// Lists libcamera's cameras with their models and video modes, for `--list-devices`.
pub fn list_devices() -> Result<String, CaptureError> {
    let _session = SessionGuard::claim("listing libcamera cameras")?;
    let manager = CameraManager::new()
        .map_err(|e| CaptureError::unavailable("starting the libcamera camera manager", e))?;
    let cameras = manager.cameras();
    let mut out = format!(
        "libcamera {}: {} camera(s)\n",
        manager.version(),
        cameras.len()
    );
    for index in 0..cameras.len() {
        let Some(camera) = cameras.get(index) else {
            continue;
        };
        let model = camera_model(&camera);
        out += &format!(
            "{index}: {model} ({})  --camera-index {index}\n",
            camera.id()
        );
        for (role, label) in [
            (StreamRole::VideoRecording, "video"),
            (StreamRole::Raw, "sensor"),
        ] {
            let Some(config) = camera.generate_configuration(&[role]) else {
                continue;
            };
            let Some(stream_config) = config.get(0) else {
                continue;
            };
            let formats = stream_config.formats();
            for format in formats.pixel_formats().into_iter() {
                let sizes = formats.sizes(format);
                let sizes = if sizes.is_empty() {
                    let r = formats.range(format);
                    format!(
                        "{}x{} to {}x{}",
                        r.min.width, r.min.height, r.max.width, r.max.height
                    )
                } else {
                    sizes
                        .iter()
                        .map(|s| format!("{}x{}", s.width, s.height))
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                out += &format!("    {label} {format}: {sizes}\n");
            }
        }
        let offered: Vec<_> = libcamera_controls::offered(camera.controls())
            .into_iter()
            .map(|c| c.info)
            .collect();
        out += &super::controls::list_lines(&offered);
    }
    if cameras.is_empty() {
        out += "no camera found (on a Pi: is it connected, and enabled in config.txt?)\n";
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame whose every sample says where it is, with `pad` in the row padding.
    fn plane(
        width: usize,
        rows: usize,
        stride: usize,
        value: impl Fn(usize, usize) -> u8,
    ) -> Vec<u8> {
        const PAD: u8 = 0xEE;
        let mut p = vec![PAD; stride * rows];
        for y in 0..rows {
            for x in 0..width {
                p[y * stride + x] = value(x, y);
            }
        }
        p
    }

    fn sample(data: &[u8], stride: usize, x: usize, y: usize) -> u8 {
        data[y * stride + x]
    }

    #[test]
    fn i420_with_odd_strides_maps_every_pixel_and_no_padding() {
        // Width 6, luma stride 11 (odd), chroma stride 5 (odd, V4L2's half of 11).
        let layout = PlaneLayout {
            format: YuvFormat::I420,
            width: 6,
            height: 4,
            stride: 11,
        };
        layout.check().unwrap();
        let y = plane(6, 4, 11, |x, y| (10 * y + x) as u8);
        let u = plane(3, 2, 5, |x, y| (100 + 10 * y + x) as u8);
        let v = plane(3, 2, 5, |x, y| (200 + 10 * y + x) as u8);
        let picture = layout.picture(&[&y, &u, &v]).unwrap();
        let Picture::I420 {
            width,
            height,
            planes,
            strides,
        } = picture
        else {
            panic!("not I420: {picture:?}");
        };
        assert_eq!((width, height), (6, 4));
        assert_eq!(strides, [11, 5, 5]);
        for row in 0..4 {
            for col in 0..6 {
                assert_eq!(
                    sample(planes[0], strides[0], col, row),
                    (10 * row + col) as u8
                );
            }
        }
        for row in 0..2 {
            for col in 0..3 {
                assert_eq!(
                    sample(planes[1], strides[1], col, row),
                    (100 + 10 * row + col) as u8
                );
                assert_eq!(
                    sample(planes[2], strides[2], col, row),
                    (200 + 10 * row + col) as u8
                );
            }
        }
    }

    #[test]
    fn nv12_in_one_contiguous_buffer_with_odd_stride_is_split_at_the_stride() {
        let layout = PlaneLayout {
            format: YuvFormat::Nv12,
            width: 6,
            height: 4,
            stride: 9,
        };
        let mut all = plane(6, 4, 9, |x, y| (10 * y + x) as u8);
        all.extend(plane(6, 2, 9, |x, y| (100 + 10 * y + x) as u8));
        let picture = layout.picture(&[&all]).unwrap();
        let Picture::Nv12 {
            planes, strides, ..
        } = picture
        else {
            panic!("not NV12: {picture:?}");
        };
        assert_eq!(strides, [9, 9]);
        assert_eq!(planes[0].len(), 36);
        assert_eq!(sample(planes[0], 9, 5, 3), 35);
        assert_eq!(sample(planes[1], 9, 0, 0), 100);
        assert_eq!(sample(planes[1], 9, 5, 1), 115);
    }

    #[test]
    fn short_or_oddly_split_buffers_are_errors_not_panics() {
        let layout = PlaneLayout {
            format: YuvFormat::I420,
            width: 6,
            height: 4,
            stride: 7,
        };
        let short = vec![0u8; 7 * 4 + 3 * 2 * 2 - 1];
        assert!(layout.picture(&[&short]).unwrap_err().contains("needs"));
        assert!(layout
            .picture(&[&short, &short])
            .unwrap_err()
            .contains("2 planes"));
        let odd = PlaneLayout { width: 5, ..layout };
        assert!(odd.check().unwrap_err().contains("even"));
        let narrow = PlaneLayout {
            stride: 5,
            ..layout
        };
        assert!(narrow.check().unwrap_err().contains("stride"));
    }

    #[test]
    fn padded_odd_stride_frames_encode_to_the_right_colours() {
        // 32x16 I420 in a stride of 45 (odd), chroma 22: left half red, right half blue
        // (full-range BT.601); padding is bright green, which must not leak in.
        let (w, h, stride) = (32usize, 16usize, 45usize);
        let layout = PlaneLayout {
            format: YuvFormat::I420,
            width: w as u32,
            height: h as u32,
            stride,
        };
        let red = (76u8, 85u8, 255u8);
        let blue = (29u8, 255u8, 107u8);
        let pick = |x: usize, half: usize| if x < half { red } else { blue };
        let mut y = plane(w, h, stride, |x, _| pick(x, w / 2).0);
        let mut u = plane(w / 2, h / 2, stride / 2, |x, _| pick(x, w / 4).1);
        let mut v = plane(w / 2, h / 2, stride / 2, |x, _| pick(x, w / 4).2);
        for p in [&mut y, &mut u, &mut v] {
            for b in p.iter_mut().filter(|b| **b == 0xEE) {
                *b = 0; // Y=0,U=0,V=0 is saturated green.
            }
        }
        let picture = layout.picture(&[&y, &u, &v]).unwrap();
        let jpeg = crate::encode::jpeg::Encoder::new(95)
            .unwrap()
            .encode(&picture)
            .unwrap();
        let (dw, dh, rgb) = crate::encode::jpeg::decode_for_tests(&jpeg).unwrap();
        assert_eq!((dw, dh), (w, h));
        let at = |x: usize, y: usize| {
            let i = (y * w + x) * 3;
            (rgb[i], rgb[i + 1], rgb[i + 2])
        };
        let near = |got: (u8, u8, u8), want: (u8, u8, u8)| {
            got.0.abs_diff(want.0) < 24
                && got.1.abs_diff(want.1) < 24
                && got.2.abs_diff(want.2) < 24
        };
        for (x, yy) in [(2, 2), (8, 12), (13, 7)] {
            assert!(near(at(x, yy), (255, 0, 0)), "({x},{yy}) = {:?}", at(x, yy));
        }
        for (x, yy) in [(18, 2), (29, 13), (31, 15)] {
            assert!(near(at(x, yy), (0, 0, 255)), "({x},{yy}) = {:?}", at(x, yy));
        }
    }

    #[test]
    fn sensor_timestamps_must_be_monotonic_nanoseconds_near_now() {
        let now = MonoTime::from_nanos(1_000_000_000_000);
        let frame = now.earlier_by(Duration::from_millis(30));
        assert_eq!(
            sensor_instant(Some(frame.as_nanos() as i64), now),
            Ok(frame)
        );
        // Microseconds instead of nanoseconds, a missing stamp, a negative one.
        assert!(sensor_instant(Some(1_000_000_000), now).is_err());
        assert!(sensor_instant(None, now).is_err());
        assert!(sensor_instant(Some(-5), now).is_err());
        // Ahead of the instant the request completed: no frame is captured in the future.
        let ahead = now.later_by(Duration::from_millis(2));
        assert!(sensor_instant(Some(ahead.as_nanos() as i64), now).is_err());
    }
}
