//! Who consumes which codec, so that a stage encodes only while somebody watches.
//!
//! The hub counts its clients per codec here as they come and go; a `/snapshot.jpg` request
//! asks for JPEG for a while; a session that must (re)start at a keyframe asks for one. The
//! capture and encoder threads read it before each frame. Plain atomics: the threads never
//! wait on the executor or each other for it.
#![forbid(unsafe_code)]

use crate::clock::MonoTime;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// A codec a client can be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// JPEG pictures (the seed's `video:` messages, multipart MJPEG, snapshots).
    Jpeg,
    /// H.264 access units (`/stream?video=h264`).
    H264,
}

impl Codec {
    /// Every codec, for parsing and for messages that list them.
    pub const ALL: [Codec; 2] = [Codec::Jpeg, Codec::H264];

    /// The name in `?video=`, `/status` and `/metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            Codec::Jpeg => "mjpeg",
            Codec::H264 => "h264",
        }
    }

    /// The codec named `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Codec> {
        Codec::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

/// Consumers per codec, shared by the hub (writer) and the capture threads (readers).
#[derive(Debug, Default)]
pub struct Demand {
    clients: [AtomicUsize; Codec::ALL.len()],
    /// Until when (CLOCK_MONOTONIC ns) JPEG is wanted with no client: a snapshot was asked.
    jpeg_until: AtomicU64,
    keyframe: AtomicBool,
}

impl Demand {
    fn slot(&self, codec: Codec) -> &AtomicUsize {
        &self.clients[codec as usize]
    }

    /// A client of `codec` arrived.
    pub fn add(&self, codec: Codec) {
        self.slot(codec).fetch_add(1, Ordering::SeqCst);
    }

    /// A client of `codec` left.
    pub fn remove(&self, codec: Codec) {
        let _ = self
            .slot(codec)
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }

    /// Clients of `codec` now.
    pub fn clients(&self, codec: Codec) -> usize {
        self.slot(codec).load(Ordering::SeqCst)
    }

    /// Keeps JPEG encoding on for `how_long` from now although no client watches.
    pub fn want_jpeg_for(&self, how_long: Duration) {
        let until = MonoTime::now().later_by(how_long).as_nanos();
        self.jpeg_until.fetch_max(until, Ordering::SeqCst);
    }

    /// Should the frame captured at `now` be JPEG-encoded?
    pub fn wants(&self, codec: Codec, now: MonoTime) -> bool {
        self.clients(codec) > 0
            || (codec == Codec::Jpeg && now.as_nanos() < self.jpeg_until.load(Ordering::SeqCst))
    }

    /// Asks the H.264 stage for a keyframe (it rate-limits these).
    pub fn request_keyframe(&self) {
        self.keyframe.store(true, Ordering::SeqCst);
    }

    /// Is a keyframe request pending? (Left pending; see [`Demand::take_keyframe_request`].)
    pub fn keyframe_requested(&self) -> bool {
        self.keyframe.load(Ordering::SeqCst)
    }

    /// Takes a pending keyframe request.
    pub fn take_keyframe_request(&self) -> bool {
        self.keyframe.swap(false, Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_clients_and_never_go_below_zero() {
        let d = Demand::default();
        let now = MonoTime::now();
        assert!(!d.wants(Codec::Jpeg, now) && !d.wants(Codec::H264, now));
        d.add(Codec::H264);
        assert!(d.wants(Codec::H264, now) && !d.wants(Codec::Jpeg, now));
        d.remove(Codec::H264);
        d.remove(Codec::H264);
        assert_eq!(d.clients(Codec::H264), 0);
    }

    #[test]
    fn a_snapshot_keeps_jpeg_on_for_a_while() {
        let d = Demand::default();
        d.want_jpeg_for(Duration::from_secs(5));
        assert!(d.wants(Codec::Jpeg, MonoTime::now()));
        assert!(!d.wants(Codec::H264, MonoTime::now()));
    }

    #[test]
    fn keyframe_requests_are_taken_once() {
        let d = Demand::default();
        d.request_keyframe();
        d.request_keyframe();
        assert!(d.take_keyframe_request());
        assert!(!d.take_keyframe_request());
    }

    #[test]
    fn codec_names_go_both_ways() {
        for c in Codec::ALL {
            assert_eq!(Codec::from_name(c.as_str()), Some(c));
        }
        assert_eq!(Codec::from_name("vp8"), None);
    }
}
