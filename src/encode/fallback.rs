//! A hardware encoder with software standing in: what the H.264 stage and the JPEG path
//! both do when the V4L2 memory-to-memory encoder cannot be opened or fails mid-stream.
//!
//! One warning naming the reason and one count per failure, a retry every
//! [`HARDWARE_RETRY`] (a retry that fails again is logged at debug only), one info line when
//! the hardware is back. A machine without any hardware encoder under `auto` (a Pi 5) gives
//! up at the first look, and that is not a failure.
#![forbid(unsafe_code)]

use crate::stats::Stats;
use std::fmt::Display;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

/// How often a hardware encoder that failed is tried again.
pub const HARDWARE_RETRY: Duration = Duration::from_secs(10);

/// What a stage knows of its hardware encoder.
pub struct Fallback {
    /// The codec, for the log (`H.264`, `JPEG`).
    codec: &'static str,
    /// The software encoder standing in, for the log (`OpenH264`).
    software: &'static str,
    /// Not to be tried: the software encoder was asked for, or there is no hardware.
    never: bool,
    /// Why it failed last, while software stands in.
    failed: Option<String>,
    /// When it may be tried again; `None`: at once.
    retry_at: Option<Instant>,
    /// The pause between tries.
    retry: Duration,
}

impl Fallback {
    /// The state before the first try; `never` when the hardware is not to be used at all.
    pub fn new(codec: &'static str, software: &'static str, never: bool) -> Fallback {
        Fallback {
            codec,
            software,
            never,
            failed: None,
            retry_at: None,
            retry: HARDWARE_RETRY,
        }
    }

    /// The same with another pause between tries (tests).
    pub fn retrying_every(mut self, retry: Duration) -> Fallback {
        self.retry = retry;
        self
    }

    /// Whether the hardware encoder is to be tried now.
    pub fn due(&self) -> bool {
        !self.never && self.retry_at.is_none_or(|t| Instant::now() >= t)
    }

    /// Whether software stands in for a hardware encoder that failed.
    pub fn has_failed(&self) -> bool {
        self.failed.is_some()
    }

    /// No hardware encoder on this machine, and none was required: software for good.
    pub fn none_here(&mut self, why: &str) {
        log::info!(
            "{}: no hardware encoder ({why}); {} encodes",
            self.codec,
            self.software
        );
        self.never = true;
    }

    /// The hardware failed (or vanished): one warning, one count in `counter`, a retry
    /// later.
    pub fn fail(&mut self, why: String, counter: &AtomicU64) {
        log::warn!(
            "{}: the hardware encoder failed, {} takes over (retry every {} s): {why}",
            self.codec,
            self.software,
            self.retry.as_secs()
        );
        Stats::add(counter, 1);
        self.failed = Some(why);
        self.retry_at = Some(Instant::now() + self.retry);
    }

    /// A retry failed as well: noted at debug level, the next one later.
    pub fn still_failing(&mut self, why: &dyn Display) {
        log::debug!(
            "{}: the hardware encoder is still unusable: {why}",
            self.codec
        );
        self.retry_at = Some(Instant::now() + self.retry);
    }

    /// The hardware encoder opened (`description` says which); after a failure, that it is
    /// back.
    pub fn opened(&mut self, description: &str) {
        if let Some(why) = self.failed.take() {
            log::info!(
                "{}: the hardware encoder is back (it had failed: {why}): {description}",
                self.codec
            );
        }
        self.retry_at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_counts_once_and_waits_for_the_retry() {
        let counter = AtomicU64::new(0);
        let mut hw =
            Fallback::new("JPEG", "libjpeg-turbo", false).retrying_every(Duration::from_millis(40));
        assert!(hw.due() && !hw.has_failed(), "tried at once");
        hw.fail("gone".into(), &counter);
        assert_eq!(Stats::get(&counter), 1);
        assert!(hw.has_failed() && !hw.due(), "not again before the retry");
        std::thread::sleep(Duration::from_millis(60));
        assert!(hw.due(), "due once the pause is over");
        hw.still_failing(&"still gone");
        assert!(!hw.due(), "a failed retry waits again");
        assert_eq!(
            Stats::get(&counter),
            1,
            "a failed retry is not a new fallback"
        );
        hw.opened("the device");
        assert!(!hw.has_failed() && hw.due());
    }

    #[test]
    fn without_hardware_it_is_never_tried() {
        assert!(!Fallback::new("H.264", "OpenH264", true).due());
        let mut auto = Fallback::new("H.264", "OpenH264", false);
        auto.none_here("no device");
        assert!(!auto.due() && !auto.has_failed());
    }
}
