//! Capture instants on CLOCK_MONOTONIC and their mapping to UNIX wall time.
//!
//! Drivers stamp frames and audio periods on CLOCK_MONOTONIC (V4L2 buffers, libcamera's
//! SensorTimestamp, ALSA htstamps). The wire carries UNIX seconds, so every source keeps its
//! instants as [`MonoTime`] and converts once, here. The offset between the two clocks is read
//! fresh on each conversion: a Pi has no RTC and its wall clock jumps when NTP syncs after boot.
#![forbid(unsafe_code)]

use rustix::time::{clock_gettime, ClockId};
use std::time::Duration;

/// A point on CLOCK_MONOTONIC, in nanoseconds since boot (the kernel's own timestamp clock).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MonoTime(u64);

impl MonoTime {
    /// The current instant.
    pub fn now() -> MonoTime {
        let ts = clock_gettime(ClockId::Monotonic);
        MonoTime::from_timespec(ts.tv_sec as i64, ts.tv_nsec as i64)
    }

    /// An instant from nanoseconds on CLOCK_MONOTONIC.
    pub const fn from_nanos(nanos: u64) -> MonoTime {
        MonoTime(nanos)
    }

    /// An instant from a `timespec`/`timeval`-style pair; negative parts clamp to zero.
    pub fn from_timespec(secs: i64, nanos: i64) -> MonoTime {
        let total = secs as i128 * 1_000_000_000 + nanos as i128;
        MonoTime(total.clamp(0, u64::MAX as i128) as u64)
    }

    /// Nanoseconds since boot.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// This instant moved later by `d` (saturating).
    pub fn later_by(self, d: Duration) -> MonoTime {
        MonoTime(
            self.0
                .saturating_add(d.as_nanos().min(u64::MAX as u128) as u64),
        )
    }

    /// This instant moved earlier by `d` (saturating at boot).
    pub fn earlier_by(self, d: Duration) -> MonoTime {
        MonoTime(
            self.0
                .saturating_sub(d.as_nanos().min(u64::MAX as u128) as u64),
        )
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: MonoTime) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// This instant as UNIX seconds, through the current wall-clock offset.
    pub fn to_unix(self) -> f64 {
        mono_to_unix(self, wall_offset_nanos())
    }
}

/// UNIX time minus monotonic time, in nanoseconds, sampled now.
///
/// The wall clock is read between two monotonic reads and paired with their midpoint, which
/// bounds the pairing error by half the (sub-microsecond) gap between them. A thread
/// preempted between the reads (a loaded machine, a VM's vCPU descheduled) widens the gap to
/// milliseconds, so up to three pairings are taken and the tightest one wins.
pub fn wall_offset_nanos() -> i128 {
    let nanos = |ts: rustix::time::Timespec| ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128;
    let mut best: Option<(i128, i128)> = None; // (gap, offset)
    for _ in 0..3 {
        let before = nanos(clock_gettime(ClockId::Monotonic));
        let wall = nanos(clock_gettime(ClockId::Realtime));
        let after = nanos(clock_gettime(ClockId::Monotonic));
        let sample = (after - before, wall - (before + after) / 2);
        match best {
            Some(b) if b.0 <= sample.0 => {}
            _ => best = Some(sample),
        }
        if sample.0 < 20_000 {
            break;
        }
    }
    best.map_or(0, |b| b.1)
}

/// Maps a monotonic instant to UNIX seconds with a given offset (see [`wall_offset_nanos`]).
pub fn mono_to_unix(t: MonoTime, offset_nanos: i128) -> f64 {
    let unix_nanos = t.0 as i128 + offset_nanos;
    // Split before converting so the float keeps sub-microsecond precision.
    let secs = unix_nanos.div_euclid(1_000_000_000);
    let frac = unix_nanos.rem_euclid(1_000_000_000);
    secs as f64 + frac as f64 / 1e9
}

/// How old a video frame's driver stamp may be when the frame is dequeued. A frame can wait
/// in the driver's queue for a few frame intervals, and a libcamera stamp marks the start of
/// an exposure that may last a second at `--fps 1`; a stamp older than this is on another
/// clock or in other units (µs for ns).
pub const VIDEO_STAMP_MAX_AGE: Duration = Duration::from_secs(5);

/// Why a driver's capture stamp is not used (the caller falls back to the arrival time).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadStamp {
    /// Zero: the driver set none.
    #[error("the driver set no timestamp")]
    Unset,
    /// Later than the instant it was read, which no capture can be: a driver stamping the
    /// end of a transfer it predicts (vivid in a VM: ~100 ms ahead), or another clock.
    #[error("timestamp {:.3} s ahead of the present", .0.as_secs_f64())]
    Ahead(Duration),
    /// Older than the source can hold a capture.
    #[error("timestamp {:.3} s old, more than the {:.3} s a capture can wait", .age.as_secs_f64(), .max_age.as_secs_f64())]
    TooOld {
        /// How far before the read it lies.
        age: Duration,
        /// The source's bound.
        max_age: Duration,
    },
}

/// The one rule every capture source applies to its driver's stamps: a stamp is used when
/// it is set, not after `read_at` (the instant just after the buffer or status was read)
/// and at most `max_age` before it. Anything else would put a wrong, even negative,
/// latency on the wire.
pub fn checked_stamp(
    stamp: MonoTime,
    read_at: MonoTime,
    max_age: Duration,
) -> Result<MonoTime, BadStamp> {
    if stamp.as_nanos() == 0 {
        return Err(BadStamp::Unset);
    }
    if stamp > read_at {
        return Err(BadStamp::Ahead(stamp.since(read_at)));
    }
    let age = read_at.since(stamp);
    if age > max_age {
        return Err(BadStamp::TooOld { age, max_age });
    }
    Ok(stamp)
}

/// Keeps one stream's wire timestamps strictly increasing.
///
/// A wall-clock step backwards (NTP after boot) or two buffers with the same driver stamp
/// must not make a client see time run backwards; such a stamp is nudged 1 µs past the last.
/// The work is done in whole microseconds, the wire's resolution ([`format_unix`]): a
/// nudge of 1e-6 added in floating point (about 2e-7 s apart at today's UNIX times) could
/// print the same six decimals as the stamp before it.
#[derive(Debug, Default)]
pub struct MonotonicStamps {
    last_micros: Option<i64>,
}

impl MonotonicStamps {
    /// The UNIX timestamp to put on the wire for an item captured at `unix`.
    pub fn next(&mut self, unix: f64) -> f64 {
        let micros = (unix * 1e6).round() as i64;
        let micros = match self.last_micros {
            Some(last) if micros <= last => last + 1,
            _ => micros,
        };
        self.last_micros = Some(micros);
        micros as f64 / 1e6
    }
}

/// Formats a UNIX timestamp the way the wire carries it: seconds with microsecond digits.
pub fn format_unix(unix: f64) -> String {
    format!("{unix:.6}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{SystemTime, UNIX_EPOCH};

    #[test]
    fn now_maps_to_the_system_wall_clock() {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs_f64();
        let mapped = MonoTime::now().to_unix();
        assert!((mapped - wall).abs() < 0.01, "mapped {mapped} wall {wall}");
    }

    #[test]
    fn an_older_instant_maps_to_an_older_unix_time_by_the_same_amount() {
        let now = MonoTime::now();
        let earlier = now.earlier_by(Duration::from_millis(1500));
        let offset = wall_offset_nanos();
        let delta = mono_to_unix(now, offset) - mono_to_unix(earlier, offset);
        assert!((delta - 1.5).abs() < 1e-6, "delta {delta}");
    }

    #[test]
    fn mapping_keeps_microseconds_for_current_dates() {
        let offset: i128 = 1_700_000_000_000_000_000;
        let t = MonoTime::from_nanos(123_456_789_000);
        let unix = mono_to_unix(t, offset);
        assert_eq!(format_unix(unix), "1700000123.456789");
    }

    #[test]
    fn timespec_parts_combine_and_negative_clamps() {
        assert_eq!(MonoTime::from_timespec(2, 500).as_nanos(), 2_000_000_500);
        assert_eq!(MonoTime::from_timespec(-1, 0).as_nanos(), 0);
    }

    #[test]
    fn stamps_strictly_increase_even_when_the_clock_steps_back() {
        let mut stamps = MonotonicStamps::default();
        assert_eq!(stamps.next(100.0), 100.0);
        let second = stamps.next(99.0);
        assert!(second > 100.0 && second < 100.001);
        let third = stamps.next(second);
        assert!(third > second);
        assert_eq!(stamps.next(200.0), 200.0);
    }

    #[test]
    fn nudged_stamps_differ_on_the_wire() {
        // At today's UNIX times, as the wire prints them (whole microseconds).
        let mut stamps = MonotonicStamps::default();
        let base = 1_795_485_125.000_000_5;
        let mut printed = vec![format_unix(stamps.next(base))];
        for _ in 0..1000 {
            printed.push(format_unix(stamps.next(base)));
        }
        for pair in printed.windows(2) {
            assert!(pair[1] > pair[0], "{} then {}", pair[0], pair[1]);
        }
        assert_eq!(printed[1000], "1795485125.001001");
    }

    #[test]
    fn driver_stamps_must_be_set_past_and_recent() {
        let read_at = MonoTime::from_nanos(1_000_000_000_000);
        let max_age = Duration::from_secs(5);
        let frame = read_at.earlier_by(Duration::from_millis(30));
        assert_eq!(checked_stamp(frame, read_at, max_age), Ok(frame));
        assert_eq!(checked_stamp(read_at, read_at, max_age), Ok(read_at));
        let oldest = read_at.earlier_by(max_age);
        assert_eq!(checked_stamp(oldest, read_at, max_age), Ok(oldest));
        assert_eq!(
            checked_stamp(MonoTime::from_nanos(0), read_at, max_age),
            Err(BadStamp::Unset)
        );
        // Ahead of the present by any amount: the latency it implies would be negative.
        for ahead in [Duration::from_micros(1), Duration::from_millis(100)] {
            assert_eq!(
                checked_stamp(read_at.later_by(ahead), read_at, max_age),
                Err(BadStamp::Ahead(ahead))
            );
        }
        // Microseconds for nanoseconds, or a stale stamp.
        let micros = MonoTime::from_nanos(read_at.as_nanos() / 1000);
        assert!(matches!(
            checked_stamp(micros, read_at, max_age),
            Err(BadStamp::TooOld { .. })
        ));
        let stale = oldest.earlier_by(Duration::from_nanos(1));
        assert!(matches!(
            checked_stamp(stale, read_at, max_age),
            Err(BadStamp::TooOld { .. })
        ));
        // Another clock far ahead (CLOCK_REALTIME for CLOCK_MONOTONIC).
        let wall = MonoTime::from_nanos(1_795_000_000_000_000_000);
        assert!(matches!(
            checked_stamp(wall, read_at, max_age),
            Err(BadStamp::Ahead(_))
        ));
        assert_eq!(
            BadStamp::Ahead(Duration::from_millis(100)).to_string(),
            "timestamp 0.100 s ahead of the present"
        );
    }

    #[test]
    fn since_saturates() {
        let a = MonoTime::from_nanos(10);
        let b = MonoTime::from_nanos(5);
        assert_eq!(a.since(b), Duration::from_nanos(5));
        assert_eq!(b.since(a), Duration::ZERO);
    }
}
