//! Counters shared by the capture threads and the server, for logs and status endpoints.
#![forbid(unsafe_code)]

use crate::clock::MonoTime;
use crate::encode::demand::Codec;
use crate::pipeline::supervisor::{SourceKind, SourceState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    /// Camera JPEG frames dropped as corrupt or truncated (never sent).
    pub video_corrupt_dropped: AtomicU64,
    /// Frames pushed out of the capture→server queue because the server was behind.
    pub video_queue_dropped: AtomicU64,
    /// Frames the encoder pool dropped: replaced by a newer one while every thread was
    /// busy, or finished after a newer one was sent.
    pub video_encoder_dropped: AtomicU64,
    /// Total encode time in microseconds (with `video_captured`: the mean).
    pub video_encode_micros: AtomicU64,
    /// Audio chunks captured.
    pub audio_chunks: AtomicU64,
    /// Audio chunks pushed out of the capture→server queue.
    pub audio_queue_dropped: AtomicU64,
    /// Audio overruns/suspends the source recovered from (samples were lost).
    pub audio_xruns: AtomicU64,
    /// Video frames a client skipped because a newer one replaced it before it was sent.
    pub client_video_skipped: AtomicU64,
    /// Audio chunks dropped from a slow client's full backlog.
    pub client_audio_dropped: AtomicU64,
    /// Audio chunks dropped because they were older than `--max-audio-age` by the time the
    /// client could take them.
    pub client_audio_stale: AtomicU64,
    /// Clients closed for breaking a per-client bound, by reason (indexed by [`ClientLimit`]).
    pub clients_closed: [AtomicU64; ClientLimit::ALL.len()],
    /// Messages written to clients (WebSocket messages and multipart MJPEG parts).
    pub messages_sent: AtomicU64,
    /// Payload bytes written to clients (WebSocket payloads, MJPEG parts' JPEGs).
    pub bytes_sent: AtomicU64,
    /// Current state of each source, for status pages: [video, audio].
    pub source_state: Mutex<[SourceState; 2]>,
    /// When the newest captured (not placeholder) frame was published, CLOCK_MONOTONIC ns.
    pub last_live_frame: AtomicU64,
    /// When the video thread last published anything (frame or placeholder), for the watchdog.
    pub last_output: AtomicU64,
    /// True while the video source is missing, failing or stalled.
    pub video_failing: AtomicBool,
    /// Encode-time histogram: counts per bucket of [`ENCODE_BUCKETS`], last = +Inf.
    pub encode_buckets: [AtomicU64; ENCODE_BUCKETS.len() + 1],
    /// Per codec, indexed by [`Codec`]: what its encoder stage produced.
    pub codecs: [CodecStats; Codec::ALL.len()],
    /// The H.264 stream's codec string (`avc1.PPCCLL`) once a keyframe was encoded.
    pub h264_codec: Mutex<Option<String>>,
    /// Which H.264 encoder runs (`v4l2 /dev/video11` or `software`); `None` before the first.
    pub h264_encoder: Mutex<Option<String>>,
    /// Times the hardware H.264 encoder failed or vanished and OpenH264 took over.
    pub h264_encoder_fallbacks: AtomicU64,
    /// H.264 units from the hardware (V4L2 memory-to-memory) encoder.
    pub h264_hardware_units: AtomicU64,
    /// H.264 units from OpenH264.
    pub h264_software_units: AtomicU64,
    /// What made the latest JPEG (`v4l2 /dev/video31`, `cpu` or `camera`); `None` before the
    /// first.
    pub jpeg_encoder: Mutex<Option<String>>,
    /// Times the hardware JPEG encoder failed or vanished and libjpeg-turbo took over.
    pub jpeg_encoder_fallbacks: AtomicU64,
    /// JPEG frames from the hardware (V4L2 memory-to-memory) encoder.
    pub jpeg_hardware_units: AtomicU64,
    /// JPEG frames from libjpeg-turbo (placeholders included).
    pub jpeg_cpu_units: AtomicU64,
    /// JPEG frames the hardware encoder read in place from the camera's buffer (DMABUF).
    pub jpeg_zero_copy_units: AtomicU64,
    /// H.264 pictures handed over from the hardware JPEG encoder's conversion instead of
    /// converting the frame again.
    pub h264_shared_pictures: AtomicU64,
    /// H.264 units the hardware encoder read in place from the camera's buffer (DMABUF).
    pub h264_zero_copy_units: AtomicU64,
}

/// One plain counter of [`Stats`] as `/status` and `/metrics` show it: adding a counter is
/// one field and one row of [`COUNTERS`].
pub struct Counter {
    /// Its key in `/status`'s `counters` object.
    pub status_key: &'static str,
    /// Its Prometheus family, without the `rpi_streamer_` prefix; rows of one family are
    /// adjacent and share `help`.
    pub metric: &'static str,
    /// Its labels in that family (`{reason="queue_full"}`), or empty.
    pub labels: &'static str,
    /// The family's help text.
    pub help: &'static str,
    /// The counter.
    pub get: fn(&Stats) -> &AtomicU64,
}

/// Every plain counter, grouped by Prometheus family.
pub const COUNTERS: &[Counter] = &[
    Counter {
        status_key: "video_captured",
        metric: "video_frames_total",
        labels: "{outcome=\"captured\"}",
        help: "Video frames by outcome.",
        get: |s| &s.video_captured,
    },
    Counter {
        status_key: "video_placeholders",
        metric: "video_frames_total",
        labels: "{outcome=\"placeholder\"}",
        help: "Video frames by outcome.",
        get: |s| &s.video_placeholders,
    },
    Counter {
        status_key: "video_encode_errors",
        metric: "video_frames_dropped_total",
        labels: "{reason=\"encode_error\"}",
        help: "Video frames dropped, by reason.",
        get: |s| &s.video_encode_errors,
    },
    Counter {
        status_key: "video_corrupt_dropped",
        metric: "video_frames_dropped_total",
        labels: "{reason=\"corrupt_mjpeg\"}",
        help: "Video frames dropped, by reason.",
        get: |s| &s.video_corrupt_dropped,
    },
    Counter {
        status_key: "video_queue_dropped",
        metric: "video_frames_dropped_total",
        labels: "{reason=\"queue_full\"}",
        help: "Video frames dropped, by reason.",
        get: |s| &s.video_queue_dropped,
    },
    Counter {
        status_key: "video_encoder_dropped",
        metric: "video_frames_dropped_total",
        labels: "{reason=\"encoders_busy\"}",
        help: "Video frames dropped, by reason.",
        get: |s| &s.video_encoder_dropped,
    },
    Counter {
        status_key: "client_video_skipped",
        metric: "video_frames_dropped_total",
        labels: "{reason=\"client_skipped\"}",
        help: "Video frames dropped, by reason.",
        get: |s| &s.client_video_skipped,
    },
    Counter {
        status_key: "h264_encoder_fallbacks",
        metric: "encoder_fallbacks_total",
        labels: "{codec=\"h264\"}",
        help: "Times a hardware encoder failed or vanished and software took over, by codec.",
        get: |s| &s.h264_encoder_fallbacks,
    },
    Counter {
        status_key: "jpeg_encoder_fallbacks",
        metric: "encoder_fallbacks_total",
        labels: "{codec=\"jpeg\"}",
        help: "Times a hardware encoder failed or vanished and software took over, by codec.",
        get: |s| &s.jpeg_encoder_fallbacks,
    },
    Counter {
        status_key: "h264_hardware_units",
        metric: "h264_units_by_encoder_total",
        labels: "{encoder=\"v4l2\"}",
        help: "H.264 units by the encoder that made them.",
        get: |s| &s.h264_hardware_units,
    },
    Counter {
        status_key: "h264_software_units",
        metric: "h264_units_by_encoder_total",
        labels: "{encoder=\"software\"}",
        help: "H.264 units by the encoder that made them.",
        get: |s| &s.h264_software_units,
    },
    Counter {
        status_key: "jpeg_hardware_units",
        metric: "jpeg_units_by_encoder_total",
        labels: "{encoder=\"v4l2\"}",
        help:
            "JPEG frames by the encoder that made them (camera JPEGs passed through are neither).",
        get: |s| &s.jpeg_hardware_units,
    },
    Counter {
        status_key: "jpeg_cpu_units",
        metric: "jpeg_units_by_encoder_total",
        labels: "{encoder=\"cpu\"}",
        help:
            "JPEG frames by the encoder that made them (camera JPEGs passed through are neither).",
        get: |s| &s.jpeg_cpu_units,
    },
    Counter {
        status_key: "jpeg_zero_copy_units",
        metric: "jpeg_zero_copy_frames_total",
        labels: "",
        help: "JPEG frames the hardware encoder read in place from the camera's buffer (DMABUF).",
        get: |s| &s.jpeg_zero_copy_units,
    },
    Counter {
        status_key: "h264_shared_pictures",
        metric: "h264_shared_pictures_total",
        labels: "",
        help: "H.264 pictures taken from the hardware JPEG encoder's conversion of the frame, not converted again.",
        get: |s| &s.h264_shared_pictures,
    },
    Counter {
        status_key: "h264_zero_copy_units",
        metric: "h264_zero_copy_units_total",
        labels: "",
        help: "H.264 units the hardware encoder read in place from the camera's buffer (DMABUF).",
        get: |s| &s.h264_zero_copy_units,
    },
    Counter {
        status_key: "audio_chunks",
        metric: "audio_chunks_total",
        labels: "",
        help: "Audio chunks captured.",
        get: |s| &s.audio_chunks,
    },
    Counter {
        status_key: "audio_queue_dropped",
        metric: "audio_chunks_dropped_total",
        labels: "{reason=\"queue_full\"}",
        help: "Audio chunks dropped, by reason.",
        get: |s| &s.audio_queue_dropped,
    },
    Counter {
        status_key: "client_audio_dropped",
        metric: "audio_chunks_dropped_total",
        labels: "{reason=\"client_backlog\"}",
        help: "Audio chunks dropped, by reason.",
        get: |s| &s.client_audio_dropped,
    },
    Counter {
        status_key: "client_audio_stale",
        metric: "audio_chunks_dropped_total",
        labels: "{reason=\"client_stale\"}",
        help: "Audio chunks dropped, by reason.",
        get: |s| &s.client_audio_stale,
    },
    Counter {
        status_key: "audio_xruns",
        metric: "audio_xruns_total",
        labels: "",
        help: "Audio overruns and suspends recovered from (samples lost).",
        get: |s| &s.audio_xruns,
    },
    Counter {
        status_key: "messages_sent",
        metric: "messages_sent_total",
        labels: "",
        help: "Messages written to clients (WebSocket messages and MJPEG parts).",
        get: |s| &s.messages_sent,
    },
    Counter {
        status_key: "bytes_sent",
        metric: "bytes_sent_total",
        labels: "",
        help: "Payload bytes written to clients (WebSocket payloads, MJPEG JPEGs).",
        get: |s| &s.bytes_sent,
    },
];

/// What one codec's encoder stage did.
#[derive(Debug, Default)]
pub struct CodecStats {
    /// Units encoded (JPEG pictures, H.264 access units), placeholders included.
    pub units: AtomicU64,
    /// Bytes of those units.
    pub bytes: AtomicU64,
    /// Time spent encoding them, microseconds.
    pub encode_micros: AtomicU64,
    /// Keyframes among them (H.264).
    pub keyframes: AtomicU64,
    /// Keyframes made on request (a client joined or had to skip), not by the interval.
    pub keyframes_forced: AtomicU64,
    /// Units a client skipped: replaced by a newer JPEG before it could be sent, or H.264
    /// units dropped while the client waited for the next keyframe.
    pub client_skipped: AtomicU64,
    /// Pictures the encoder was still busy for and never saw (newest-frame rule).
    pub encoder_skipped: AtomicU64,
    /// Encoder failures.
    pub errors: AtomicU64,
    /// Output rate over the last few seconds, bit/s.
    pub recent_bps: AtomicU64,
}

/// Measures an output rate over the last few seconds, for [`CodecStats::recent_bps`].
#[derive(Debug, Default)]
pub struct RecentRate {
    sent: std::collections::VecDeque<(std::time::Instant, usize)>,
}

impl RecentRate {
    /// The window the rate is averaged over.
    pub const WINDOW: std::time::Duration = std::time::Duration::from_secs(4);

    /// Counts `bytes` produced now and stores the rate in bit/s in `into`.
    pub fn record(&mut self, bytes: usize, into: &AtomicU64) {
        let now = std::time::Instant::now();
        self.sent.push_back((now, bytes));
        while self
            .sent
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > Self::WINDOW)
        {
            self.sent.pop_front();
        }
        let total: usize = self.sent.iter().map(|(_, n)| n).sum();
        let bps = total as f64 * 8.0 / Self::WINDOW.as_secs_f64();
        into.store(bps as u64, Ordering::Relaxed);
    }
}

impl Stats {
    /// The counters of `codec`'s stage.
    pub fn codec(&self, codec: Codec) -> &CodecStats {
        &self.codecs[codec as usize]
    }
}

/// A per-client bound whose breach makes the daemon close that client; each has a counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientLimit {
    /// A message over the size limit (close code 1009).
    MessageTooBig,
    /// Frames that break RFC 6455 (1002).
    ProtocolError,
    /// More frames or bytes per second than the flood limit (1008).
    Flooding,
    /// Could not keep up with the audio stream (1008).
    TooSlow,
    /// No answer to pings (1001).
    PingTimeout,
    /// The socket accepted nothing for too long (no close frame can get through).
    WriteStalled,
}

impl ClientLimit {
    /// Every limit, in the order of [`Stats::clients_closed`].
    pub const ALL: [ClientLimit; 6] = [
        ClientLimit::MessageTooBig,
        ClientLimit::ProtocolError,
        ClientLimit::Flooding,
        ClientLimit::TooSlow,
        ClientLimit::PingTimeout,
        ClientLimit::WriteStalled,
    ];

    /// The name used in `/metrics` and `/status`.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientLimit::MessageTooBig => "message_too_big",
            ClientLimit::ProtocolError => "protocol_error",
            ClientLimit::Flooding => "flooding",
            ClientLimit::TooSlow => "too_slow",
            ClientLimit::PingTimeout => "ping_timeout",
            ClientLimit::WriteStalled => "write_stalled",
        }
    }

    /// Its counter in `stats`.
    pub fn counter(self, stats: &Stats) -> &AtomicU64 {
        &stats.clients_closed[self as usize]
    }
}

/// Upper bounds (seconds) of the encode-time histogram buckets.
pub const ENCODE_BUCKETS: [f64; 8] = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25];

impl Stats {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Records one encode duration in the histogram and the total.
    pub fn record_encode(&self, seconds: f64) {
        let bucket = ENCODE_BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(ENCODE_BUCKETS.len());
        Stats::add(&self.encode_buckets[bucket], 1);
        Stats::add(&self.video_encode_micros, (seconds * 1e6) as u64);
    }

    /// Stores an instant in a timestamp field.
    pub fn mark(field: &AtomicU64, at: MonoTime) {
        field.store(at.as_nanos(), Ordering::Relaxed);
    }

    /// Reads an instant from a timestamp field; `None` if never set.
    pub fn instant(field: &AtomicU64) -> Option<MonoTime> {
        match field.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(MonoTime::from_nanos(ns)),
        }
    }

    /// Records a source's state; the video one's failing feeds the health check.
    pub fn set_source(&self, kind: SourceKind, state: SourceState) {
        if kind == SourceKind::Video {
            self.video_failing
                .store(state.is_failing(), Ordering::Relaxed);
        }
        if let Ok(mut s) = self.source_state.lock() {
            s[kind as usize] = state;
        }
    }

    /// A source's state.
    pub fn source(&self, kind: SourceKind) -> SourceState {
        self.source_state
            .lock()
            .map(|s| s[kind as usize].clone())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_times_land_in_their_buckets() {
        let s = Stats::default();
        s.record_encode(0.0005);
        s.record_encode(0.001);
        s.record_encode(0.03);
        s.record_encode(5.0);
        let counts: Vec<u64> = s.encode_buckets.iter().map(Stats::get).collect();
        assert_eq!(counts, vec![2, 0, 0, 0, 0, 1, 0, 0, 1]);
        assert_eq!(Stats::get(&s.video_encode_micros), 5_031_500);
    }
}
