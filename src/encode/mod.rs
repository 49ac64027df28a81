//! Encoder stages: from a captured picture to the units clients are sent, one per codec.
//!
//! - JPEG: [`jpeg`] (libjpeg-turbo) encodes raw pictures; camera JPEGs are repaired by
//!   [`mjpeg`] and passed through, or rescaled, by [`scale`]. It runs on the capture thread.
//! - H.264: [`h264`] (OpenH264 in software) on its own thread, [`h264_stage`], fed the
//!   newest picture as I420 ([`scale::FrameShaper::to_i420`]).
//! - Hardware (V4L2 memory-to-memory) H.264 and JPEG encoders, such as the Pi's
//!   bcm2835-codec: `m2m` (feature `v4l`), found by capability; [`jpeg_hw`] puts the JPEG
//!   one on the capture thread (`--jpeg-encoder`), and both fall back to software through
//!   [`fallback`]. Both read a V4L2 camera's buffer in place where they can (`import`:
//!   zero copy; H.264 is lent the buffer for the frame's encode).
//!
//! A stage runs only while somebody consumes its codec ([`Demand`]): nothing is encoded for
//! nobody.
// Denied rather than forbidden so that `m2m`, which maps driver buffers and makes ioctls,
// can allow it for itself alone.
#![deny(unsafe_code)]

pub mod demand;
pub mod fallback;
pub mod h264;
pub mod h264_stage;
#[cfg(feature = "v4l")]
pub mod import;
pub mod jpeg;
pub mod jpeg_hw;
#[cfg(feature = "v4l")]
#[allow(unsafe_code)]
pub mod m2m;
pub mod mjpeg;
pub mod orient;
pub mod pool;
pub mod scale;

pub use demand::Demand;
