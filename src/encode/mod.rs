//! Encoder stages: from a captured picture to the units clients are sent, one stage per codec.
//!
//! - [`h264`]: H.264 access units (OpenH264 in software); [`stage`] runs it on its own
//!   thread, fed the newest picture.
//! - JPEG lives in [`crate::jpeg`] (libjpeg-turbo) with [`crate::scale`] and
//!   [`crate::mjpeg`] for camera JPEGs.
//!
//! A stage runs only while somebody consumes its codec ([`Demand`]): nothing is encoded for
//! nobody.
#![forbid(unsafe_code)]

pub mod demand;
pub mod h264;
pub mod stage;

pub use demand::Demand;
