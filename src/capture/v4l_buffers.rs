//! V4L2 streaming I/O with driver buffers mapped into the process (mmap), for the USB backend.
//!
//! This replaces the `v4l` crate's `io::mmap::Stream`, whose `Drop` panics when STREAMOFF or
//! freeing the buffers fails with anything but ENODEV. A camera on a failing USB link can
//! answer EIO or EPROTO there, and with `panic = "abort"` that ended the daemon instead of
//! showing placeholders and reopening the camera. Here teardown errors are logged, never
//! fatal. The system calls are the crate's own wrappers (`v4l::v4l2::{ioctl, mmap, munmap}`)
//! over its `v4l_sys` structures.
//!
//! A dequeued buffer is lent out as a `&[u8]` until the next [`MmapStream::dequeue`], which
//! queues it again first: the driver never writes a buffer while a frame borrows it. Each
//! buffer is also exported as a DMABUF (`VIDIOC_EXPBUF`) where the driver can, and lent out
//! with it, so that a hardware encoder can read the frame in place (zero copy).

use std::ffi::c_void;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use v4l::buffer::{Flags, Type};
use v4l::device::Handle;
use v4l::memory::Memory;
use v4l::v4l2::{self, vidioc};
use v4l::v4l_sys::{v4l2_buffer, v4l2_exportbuffer, v4l2_requestbuffers};

/// mmap(2) protection and flags: the same values on every Linux architecture.
const PROT_READ: i32 = 0x1;
const MAP_SHARED: i32 = 0x01;

/// What the driver says about a filled buffer.
#[derive(Clone, Copy, Debug)]
pub struct BufferInfo {
    /// Bytes of the buffer that hold the frame.
    pub bytesused: u32,
    /// V4L2_BUF_FLAG_*: the error flag and the timestamp clock matter here.
    pub flags: Flags,
    /// The driver's capture timestamp, seconds and microseconds.
    pub timestamp: (i64, i64),
}

/// One driver buffer mapped into the process.
struct Mapping {
    start: *mut c_void,
    len: usize,
}

/// A capture stream over mapped driver buffers; stops and frees them when dropped.
pub struct MmapStream {
    handle: Arc<Handle>,
    mappings: Vec<Mapping>,
    /// Each buffer as a DMABUF, when the driver exports them (empty when it does not).
    exported: Vec<OwnedFd>,
    /// The buffer the last `dequeue` lent out; queued again by the next one.
    lent: Option<u32>,
    streaming: bool,
}

// SAFETY: the mappings are memory owned by this stream alone (nothing else holds their
// addresses), so moving the stream to the capture thread moves sole access with it.
unsafe impl Send for MmapStream {}

impl MmapStream {
    /// Asks the driver for `count` capture buffers and maps each of them.
    pub fn new(handle: Arc<Handle>, count: u32) -> io::Result<MmapStream> {
        let mut request = v4l2_requestbuffers {
            count,
            type_: Type::VideoCapture as u32,
            memory: Memory::Mmap as u32,
            // SAFETY: v4l2_requestbuffers is plain C data; all-zero is its documented reset.
            ..unsafe { std::mem::zeroed() }
        };
        // SAFETY: VIDIOC_REQBUFS reads and writes one v4l2_requestbuffers, which `request`
        // is, alive for the whole call.
        unsafe {
            v4l2::ioctl(
                handle.fd(),
                vidioc::VIDIOC_REQBUFS,
                &mut request as *mut v4l2_requestbuffers as *mut c_void,
            )?
        };
        let mut stream = MmapStream {
            handle,
            mappings: Vec::with_capacity(request.count as usize),
            exported: Vec::new(),
            lent: None,
            streaming: false,
        };
        // On an error below, dropping `stream` unmaps what was mapped and frees the buffers.
        for index in 0..request.count {
            let mut buffer = stream.describe(index);
            stream.buffer_ioctl(vidioc::VIDIOC_QUERYBUF, &mut buffer)?;
            let len = buffer.length as usize;
            // SAFETY: maps the buffer the driver just described (its offset and length, from
            // VIDIOC_QUERYBUF on this file descriptor), read-only and shared with the driver;
            // reading `offset` from the union is right for MMAP buffers.
            let start = unsafe {
                v4l2::mmap(
                    std::ptr::null_mut(),
                    len,
                    PROT_READ,
                    MAP_SHARED,
                    stream.handle.fd(),
                    buffer.m.offset as _,
                )?
            };
            stream.mappings.push(Mapping { start, len });
        }
        let exported: io::Result<Vec<OwnedFd>> =
            (0..request.count).map(|i| stream.export(i)).collect();
        match exported {
            Ok(fds) => stream.exported = fds,
            Err(e) => log::debug!("V4L2: the driver does not export its buffers (EXPBUF): {e}"),
        }
        Ok(stream)
    }

    /// Buffer `index` as a DMABUF, read-only (VIDIOC_EXPBUF).
    fn export(&self, index: u32) -> io::Result<OwnedFd> {
        let mut request = v4l2_exportbuffer {
            type_: Type::VideoCapture as u32,
            index,
            flags: (rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC).bits(),
            // SAFETY: v4l2_exportbuffer is plain C data; all-zero is its documented reset.
            ..unsafe { std::mem::zeroed() }
        };
        // SAFETY: VIDIOC_EXPBUF reads and writes one v4l2_exportbuffer, which `request` is,
        // alive for the whole call.
        unsafe {
            v4l2::ioctl(
                self.handle.fd(),
                vidioc::VIDIOC_EXPBUF,
                &mut request as *mut v4l2_exportbuffer as *mut c_void,
            )?
        };
        // SAFETY: on success the kernel put a new file descriptor in `fd`, which nothing
        // else owns; it is closed once, when the OwnedFd is dropped.
        Ok(unsafe { OwnedFd::from_raw_fd(request.fd) })
    }

    /// Whether the buffers are exported as DMABUFs (lent out by [`MmapStream::dequeue`]).
    pub fn exports_dmabuf(&self) -> bool {
        !self.exported.is_empty()
    }

    /// The device handle, to poll for a filled buffer.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Queues every buffer and starts streaming.
    pub fn start(&mut self) -> io::Result<()> {
        for index in 0..self.mappings.len() as u32 {
            self.queue(index)?;
        }
        let mut kind = Type::VideoCapture as u32;
        // SAFETY: VIDIOC_STREAMON reads one buffer type (a 32-bit int), alive for the call.
        unsafe {
            v4l2::ioctl(
                self.handle.fd(),
                vidioc::VIDIOC_STREAMON,
                &mut kind as *mut u32 as *mut c_void,
            )?
        };
        self.streaming = true;
        Ok(())
    }

    /// The next filled buffer (call after polling says one is ready, or it blocks), and the
    /// same buffer as a DMABUF when the driver exports them: the one lent out before goes
    /// back to the driver first.
    pub fn dequeue(&mut self) -> io::Result<(&[u8], BufferInfo, Option<BorrowedFd<'_>>)> {
        if let Some(index) = self.lent.take() {
            self.queue(index)?;
        }
        let mut buffer = self.describe(0);
        self.buffer_ioctl(vidioc::VIDIOC_DQBUF, &mut buffer)?;
        let Some(mapping) = self.mappings.get(buffer.index as usize) else {
            return Err(io::Error::other(format!(
                "the driver returned buffer {} of {}",
                buffer.index,
                self.mappings.len()
            )));
        };
        self.lent = Some(buffer.index);
        // SAFETY: the mapping is `len` readable bytes, alive until `self` is dropped. The
        // buffer is dequeued, so the driver does not write it until it is queued again,
        // which only the next `dequeue` or `drop` does: both need `self` mutably, after this
        // borrow has ended.
        let data = unsafe { std::slice::from_raw_parts(mapping.start as *const u8, mapping.len) };
        let info = BufferInfo {
            bytesused: buffer.bytesused,
            flags: Flags::from(buffer.flags),
            // time_t and suseconds_t are 32-bit on armv7: widen.
            #[allow(clippy::useless_conversion)]
            timestamp: (
                i64::from(buffer.timestamp.tv_sec),
                i64::from(buffer.timestamp.tv_usec),
            ),
        };
        let dmabuf = self
            .exported
            .get(buffer.index as usize)
            .map(|fd| fd.as_fd());
        Ok((data, info, dmabuf))
    }

    fn describe(&self, index: u32) -> v4l2_buffer {
        v4l2_buffer {
            index,
            type_: Type::VideoCapture as u32,
            memory: Memory::Mmap as u32,
            // SAFETY: v4l2_buffer is plain C data; all-zero is its documented reset.
            ..unsafe { std::mem::zeroed() }
        }
    }

    fn queue(&mut self, index: u32) -> io::Result<()> {
        let mut buffer = self.describe(index);
        self.buffer_ioctl(vidioc::VIDIOC_QBUF, &mut buffer)
    }

    /// QUERYBUF, QBUF and DQBUF: each reads and writes one v4l2_buffer.
    fn buffer_ioctl(&self, request: vidioc::_IOC_TYPE, buffer: &mut v4l2_buffer) -> io::Result<()> {
        // SAFETY: `request` is one of the buffer ioctls, whose argument is a v4l2_buffer;
        // `buffer` is one, alive and exclusively borrowed for the call.
        unsafe {
            v4l2::ioctl(
                self.handle.fd(),
                request,
                buffer as *mut v4l2_buffer as *mut c_void,
            )
        }
    }
}

impl Drop for MmapStream {
    fn drop(&mut self) {
        // ENODEV (unplugged) is expected here and not worth a line; anything else is logged.
        let report = |what: &str, e: io::Error| {
            if e.raw_os_error() != Some(19) {
                log::warn!("V4L2 teardown: {what}: {e}");
            }
        };
        if self.streaming {
            let mut kind = Type::VideoCapture as u32;
            // SAFETY: VIDIOC_STREAMOFF reads one buffer type, alive for the call.
            let stopped = unsafe {
                v4l2::ioctl(
                    self.handle.fd(),
                    vidioc::VIDIOC_STREAMOFF,
                    &mut kind as *mut u32 as *mut c_void,
                )
            };
            if let Err(e) = stopped {
                report("stopping the stream", e);
            }
        }
        // The exports hold the buffers too: closed before the buffers are freed.
        self.exported.clear();
        for mapping in self.mappings.drain(..) {
            // SAFETY: unmaps a mapping made in `new` with this length; no borrow of it can
            // outlive `self` (frames borrow the stream), and it is unmapped once (drained).
            if let Err(e) = unsafe { v4l2::munmap(mapping.start, mapping.len) } {
                report("unmapping a buffer", e);
            }
        }
        let mut request = v4l2_requestbuffers {
            count: 0,
            type_: Type::VideoCapture as u32,
            memory: Memory::Mmap as u32,
            // SAFETY: v4l2_requestbuffers is plain C data; all-zero is its documented reset.
            ..unsafe { std::mem::zeroed() }
        };
        // SAFETY: as in `new`; a count of 0 frees the driver's buffers.
        let freed = unsafe {
            v4l2::ioctl(
                self.handle.fd(),
                vidioc::VIDIOC_REQBUFS,
                &mut request as *mut v4l2_requestbuffers as *mut c_void,
            )
        };
        if let Err(e) = freed {
            report("freeing the buffers", e);
        }
    }
}
