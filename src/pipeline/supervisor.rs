//! One supervisor for every source: open, retry, stall, recover, with a typed state.
//!
//! Video and audio threads both keep their source in a [`Supervisor`]. It opens the source
//! when none is open and a retry is due (every [`RETRY_INTERVAL`]), drops it when it fails,
//! records a stall when it is open but silent, logs each distinct failure once (not every
//! second), and publishes the [`SourceState`] that `/status`, `/healthz` and the page read.
#![forbid(unsafe_code)]

use super::RETRY_INTERVAL;
use crate::capture::CaptureError;
use crate::stats::Stats;
use std::sync::Arc;
use std::time::Instant;

/// Which source a supervisor looks after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// The camera.
    Video,
    /// The microphone.
    Audio,
}

impl SourceKind {
    /// For logs: "video source", "audio source".
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Video => "video source",
            SourceKind::Audio => "audio source",
        }
    }
}

/// Where a source stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SourceState {
    /// Not opened yet.
    #[default]
    Starting,
    /// Open and delivering; the source's own description.
    Streaming(String),
    /// Open but delivering nothing; why.
    Stalled(String),
    /// Not open (gone, failing, refused); why. Reopened every [`RETRY_INTERVAL`].
    Unavailable(String),
}

impl SourceState {
    /// Stalled or unavailable: `/healthz` fails and viewers get placeholders.
    pub fn is_failing(&self) -> bool {
        matches!(self, SourceState::Stalled(_) | SourceState::Unavailable(_))
    }

    /// The one-word condition, for `/status`.
    pub fn condition(&self) -> &'static str {
        match self {
            SourceState::Starting => "starting",
            SourceState::Streaming(_) => "streaming",
            SourceState::Stalled(_) => "stalled",
            SourceState::Unavailable(_) => "unavailable",
        }
    }
}

impl std::fmt::Display for SourceState {
    /// `starting`, `streaming: <source>`, `unavailable: <why>` (a stall too: the page and
    /// scripts read that prefix as "no picture").
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceState::Starting => f.write_str("starting"),
            SourceState::Streaming(source) => write!(f, "streaming: {source}"),
            SourceState::Stalled(why) | SourceState::Unavailable(why) => {
                write!(f, "unavailable: {why}")
            }
        }
    }
}

/// Keeps one source open, or keeps trying.
pub struct Supervisor<S> {
    kind: SourceKind,
    stats: Arc<Stats>,
    source: Option<S>,
    next_open: Instant,
    /// The failure last logged; a repeat is not logged again.
    logged: Option<String>,
    state: SourceState,
}

impl<S> Supervisor<S> {
    /// No source yet; the first open is due now.
    pub fn new(kind: SourceKind, stats: Arc<Stats>) -> Supervisor<S> {
        Supervisor {
            kind,
            stats,
            source: None,
            next_open: Instant::now(),
            logged: None,
            state: SourceState::Starting,
        }
    }

    /// The current state.
    pub fn state(&self) -> &SourceState {
        &self.state
    }

    /// Why there is no picture, for placeholders (empty while streaming).
    pub fn reason(&self) -> &str {
        match &self.state {
            SourceState::Starting => "starting",
            SourceState::Streaming(_) => "",
            SourceState::Stalled(why) | SourceState::Unavailable(why) => why,
        }
    }

    /// Is a source open?
    pub fn is_open(&self) -> bool {
        self.source.is_some()
    }

    /// When the next open attempt is due (meaningful while no source is open).
    pub fn next_open(&self) -> Instant {
        self.next_open
    }

    fn set(&mut self, state: SourceState) {
        self.stats.set_source(self.kind, state.clone());
        self.state = state;
    }

    fn log_failure(&mut self, why: &str) {
        if self.logged.as_deref() != Some(why) {
            log::warn!(
                "{}: {why}; retrying every {}s",
                self.kind.as_str(),
                RETRY_INTERVAL.as_secs()
            );
            self.logged = Some(why.to_string());
        }
    }

    /// The open source; when none is open and a retry is due, opens one first with `open`
    /// (described by `describe` in logs and the state).
    pub fn source(
        &mut self,
        open: impl FnOnce() -> Result<S, CaptureError>,
        describe: impl Fn(&S) -> String,
    ) -> Option<&mut S> {
        if self.source.is_none() && Instant::now() >= self.next_open {
            self.next_open = Instant::now() + RETRY_INTERVAL;
            match open() {
                Ok(s) => {
                    let description = describe(&s);
                    let back = self.logged.take().is_some();
                    log::info!(
                        "{} {}: {description}",
                        self.kind.as_str(),
                        if back { "back" } else { "open" }
                    );
                    self.set(SourceState::Streaming(description));
                    self.source = Some(s);
                }
                Err(e) => self.lost(e.to_string()),
            }
        }
        self.source.as_mut()
    }

    /// The source failed: it is dropped and reopened after [`RETRY_INTERVAL`].
    pub fn lost(&mut self, why: String) {
        self.source = None;
        self.next_open = Instant::now() + RETRY_INTERVAL;
        self.log_failure(&why);
        self.set(SourceState::Unavailable(why));
    }

    /// The source is open but silent.
    pub fn stalled(&mut self, why: String) {
        self.log_failure(&why);
        self.set(SourceState::Stalled(why));
    }

    /// Data is flowing: after a stall, that is news.
    pub fn flowing(&mut self, describe: impl Fn(&S) -> String) {
        if let SourceState::Stalled(_) = self.state {
            self.logged = None;
            log::info!("{}: data flowing again", self.kind.as_str());
            if let Some(description) = self.source.as_ref().map(describe) {
                self.set(SourceState::Streaming(description));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake(u32);

    fn describe(f: &Fake) -> String {
        format!("fake {}", f.0)
    }

    #[test]
    fn open_fail_stall_and_recover_move_the_state_and_the_stats() {
        let stats = Arc::new(Stats::default());
        let mut sup: Supervisor<Fake> = Supervisor::new(SourceKind::Video, stats.clone());
        assert_eq!(sup.state(), &SourceState::Starting);
        let none = sup.source(
            || Err(CaptureError::unavailable("opening", "gone")),
            describe,
        );
        assert!(none.is_none());
        assert!(sup.state().is_failing() && sup.reason().contains("gone"));
        assert!(stats
            .video_failing
            .load(std::sync::atomic::Ordering::Relaxed));
        // Not due yet: `open` is not called.
        assert!(sup.source(|| panic!("too early"), describe).is_none());
        sup.next_open = Instant::now();
        assert!(sup.source(|| Ok(Fake(1)), describe).is_some());
        assert_eq!(sup.state(), &SourceState::Streaming("fake 1".into()));
        assert_eq!(
            stats.source(SourceKind::Video).to_string(),
            "streaming: fake 1"
        );
        sup.stalled("no frames".into());
        assert_eq!(sup.state().condition(), "stalled");
        assert_eq!(sup.state().to_string(), "unavailable: no frames");
        sup.flowing(describe);
        assert_eq!(sup.state().condition(), "streaming");
        assert!(!stats
            .video_failing
            .load(std::sync::atomic::Ordering::Relaxed));
        sup.lost("unplugged".into());
        assert!(sup.source.is_none());
        assert_eq!(stats.source(SourceKind::Video).condition(), "unavailable");
    }
}
