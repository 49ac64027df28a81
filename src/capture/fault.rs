//! Injected faults (`--test-fault`), to exercise placeholder, recovery and watchdog paths
//! without hardware. A [`Faulty`] source wraps a real one and misbehaves inside time windows
//! measured from the capture epoch, so a reopened source stays on the same schedule.
#![forbid(unsafe_code)]

use super::{CaptureError, Frame, Picture, VideoSource};
use crate::clock::MonoTime;
use std::time::Duration;

/// What an injected fault does to the test source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// No frames, the source stays open.
    Stall,
    /// The source fails and cannot be reopened.
    Fail,
    /// The capture thread blocks (a wedged driver).
    Hang,
    /// Frames with corrupt geometry that the encoder must refuse.
    Garbage,
}

/// A fault window, relative to the start of capture.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fault {
    /// What happens.
    pub kind: FaultKind,
    /// Seconds after capture starts.
    pub after: f64,
    /// How long it lasts, seconds.
    pub duration: f64,
}

/// Parses `KIND:AFTER:DURATION`; the error says what is wanted.
pub fn parse_fault(spec: &str) -> Result<Fault, String> {
    let bad =
        || format!("want stall|fail|hang|garbage:AFTER_SECONDS:DURATION_SECONDS (got {spec:?})");
    let mut parts = spec.split(':');
    let kind = match parts.next() {
        Some("stall") => FaultKind::Stall,
        Some("fail") => FaultKind::Fail,
        Some("hang") => FaultKind::Hang,
        Some("garbage") => FaultKind::Garbage,
        _ => return Err(bad()),
    };
    let mut number = || -> Result<f64, String> {
        parts
            .next()
            .and_then(|p| p.parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0 && *v <= 86_400.0)
            .ok_or_else(bad)
    };
    let (after, duration) = (number()?, number()?);
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(Fault {
        kind,
        after,
        duration,
    })
}

/// The fault active at `now`, if any.
pub fn active(faults: &[Fault], epoch: MonoTime, now: MonoTime) -> Option<Fault> {
    let t = now.since(epoch).as_secs_f64();
    faults
        .iter()
        .copied()
        .find(|f| t >= f.after && t < f.after + f.duration)
}

/// An error if a `fail` fault forbids opening the source now.
pub fn check_open(faults: &[Fault], epoch: MonoTime) -> Result<(), CaptureError> {
    match active(faults, epoch, MonoTime::now()) {
        Some(f) if f.kind == FaultKind::Fail => Err(CaptureError::unavailable(
            "opening the test source",
            "injected failure",
        )),
        _ => Ok(()),
    }
}

/// A source that misbehaves on schedule.
pub struct Faulty {
    inner: Box<dyn VideoSource>,
    faults: Vec<Fault>,
    epoch: MonoTime,
}

impl Faulty {
    /// Wraps `inner` with `faults` timed from `epoch`.
    pub fn new(inner: Box<dyn VideoSource>, faults: Vec<Fault>, epoch: MonoTime) -> Faulty {
        Faulty {
            inner,
            faults,
            epoch,
        }
    }
}

impl VideoSource for Faulty {
    fn describe(&self) -> String {
        format!("{} (with injected faults)", self.inner.describe())
    }

    fn controls(&self) -> Vec<super::controls::ControlInfo> {
        self.inner.controls()
    }

    fn set_control(
        &mut self,
        info: &super::controls::ControlInfo,
        value: super::controls::Value,
    ) -> Result<(), String> {
        self.inner.set_control(info, value)
    }

    fn mirror(&mut self, hflip: bool, vflip: bool) -> bool {
        self.inner.mirror(hflip, vflip)
    }

    fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        let now = MonoTime::now();
        match active(&self.faults, self.epoch, now) {
            None => self.inner.next_frame(),
            Some(f) => match f.kind {
                // Frames keep being captured on schedule but never come out.
                FaultKind::Stall => {
                    let _ = self.inner.next_frame()?;
                    Ok(None)
                }
                FaultKind::Fail => Err(CaptureError::unavailable(
                    "reading the test source",
                    "injected failure",
                )),
                // A wedged driver ignores the poll timeout on purpose.
                FaultKind::Hang => {
                    let end = Duration::from_secs_f64(f.after + f.duration);
                    std::thread::sleep(self.epoch.later_by(end).since(now));
                    Ok(None)
                }
                FaultKind::Garbage => {
                    let Some(frame) = self.inner.next_frame()? else {
                        return Ok(None);
                    };
                    let picture = match frame.picture {
                        Picture::I420 {
                            width,
                            height,
                            planes,
                            strides,
                        } => Picture::I420 {
                            width,
                            height,
                            planes: [&planes[0][..planes[0].len() / 3], planes[1], planes[2]],
                            strides,
                        },
                        other => other,
                    };
                    // The picture no longer matches the buffer: nothing to import.
                    Ok(Some(Frame {
                        captured: frame.captured,
                        picture,
                        dmabuf: None,
                    }))
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_half_open_and_relative_to_the_epoch() {
        let epoch = MonoTime::from_nanos(1_000_000_000);
        let faults = [Fault {
            kind: FaultKind::Stall,
            after: 1.0,
            duration: 2.0,
        }];
        let at = |s: f64| epoch.later_by(Duration::from_secs_f64(s));
        assert_eq!(active(&faults, epoch, at(0.5)), None);
        assert!(active(&faults, epoch, at(1.0)).is_some());
        assert!(active(&faults, epoch, at(2.9)).is_some());
        assert_eq!(active(&faults, epoch, at(3.0)), None);
    }
}
