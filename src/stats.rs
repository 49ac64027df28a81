//! Counters shared by the capture threads and the server, for logs and status endpoints.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Monotonic counters; all updates are relaxed (they are statistics, not synchronisation).
#[derive(Debug, Default)]
pub struct Stats {
    /// Frames delivered by the video source.
    pub video_captured: AtomicU64,
    /// Placeholder frames produced while the camera was unavailable.
    pub video_placeholders: AtomicU64,
    /// Frames the encoder failed on.
    pub video_encode_errors: AtomicU64,
    /// Frames pushed out of the capture→server queue because the server was behind.
    pub video_queue_dropped: AtomicU64,
    /// Total encode time in microseconds (with `video_captured`: the mean).
    pub video_encode_micros: AtomicU64,
    /// Audio chunks captured.
    pub audio_chunks: AtomicU64,
    /// Audio chunks pushed out of the capture→server queue.
    pub audio_queue_dropped: AtomicU64,
    /// Video frames a client skipped because a newer one replaced it before it was sent.
    pub client_video_skipped: AtomicU64,
    /// Audio chunks dropped from a slow client's backlog.
    pub client_audio_dropped: AtomicU64,
    /// Messages written to clients.
    pub messages_sent: AtomicU64,
    /// Bytes of WebSocket payload written to clients.
    pub bytes_sent: AtomicU64,
    /// Current state of each source, for status pages: (video, audio).
    pub source_state: Mutex<(String, String)>,
}

impl Stats {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Records the video source's state line.
    pub fn set_video_state(&self, state: String) {
        if let Ok(mut s) = self.source_state.lock() {
            s.0 = state;
        }
    }

    /// Records the audio source's state line.
    pub fn set_audio_state(&self, state: String) {
        if let Ok(mut s) = self.source_state.lock() {
            s.1 = state;
        }
    }
}
