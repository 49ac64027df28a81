//! A small stderr logger for the `log` facade, configured by `RUST_LOG`.
//!
//! `RUST_LOG` takes a default level and per-module overrides, e.g. `info` or
//! `warn,rpi_streamer::server=debug`. Lines carry UTC time with milliseconds, which lines up
//! with the timestamps on the wire when debugging latency.
#![forbid(unsafe_code)]

use log::{LevelFilter, Log, Metadata, Record};
use std::io::Write;

/// The parsed `RUST_LOG` directives.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    default: LevelFilter,
    modules: Vec<(String, LevelFilter)>,
}

impl Filter {
    /// Parses a `RUST_LOG` value; unknown words are ignored, the default level is `info`.
    pub fn parse(spec: &str) -> Filter {
        let mut filter = Filter {
            default: LevelFilter::Info,
            modules: Vec::new(),
        };
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                Some((module, level)) => {
                    if let Ok(level) = level.trim().parse() {
                        filter.modules.push((module.trim().to_string(), level));
                    }
                }
                None => {
                    if let Ok(level) = part.parse() {
                        filter.default = level;
                    }
                }
            }
        }
        // Longest prefix first, so the most specific directive wins.
        filter
            .modules
            .sort_by_key(|(m, _)| std::cmp::Reverse(m.len()));
        filter
    }

    /// The level enabled for `target`.
    pub fn level_for(&self, target: &str) -> LevelFilter {
        self.modules
            .iter()
            .find(|(m, _)| target == m || target.starts_with(&format!("{m}::")))
            .map_or(self.default, |(_, l)| *l)
    }

    /// The most verbose level any directive enables.
    pub fn max(&self) -> LevelFilter {
        self.modules
            .iter()
            .map(|(_, l)| *l)
            .chain(std::iter::once(self.default))
            .max()
            .unwrap_or(LevelFilter::Info)
    }
}

struct StderrLogger {
    filter: Filter,
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= self.filter.level_for(metadata.target())
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let line = format!(
            "{} {:<5} {}: {}\n",
            crate::capture::draw::clock_text(now),
            record.level(),
            record.target(),
            record.args()
        );
        // One write per line so lines from different threads don't interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Installs the logger with the filter from `RUST_LOG`.
pub fn init() {
    let filter = Filter::parse(&std::env::var("RUST_LOG").unwrap_or_default());
    let max = filter.max();
    if log::set_boxed_logger(Box::new(StderrLogger { filter })).is_ok() {
        log::set_max_level(max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_info_and_modules_override() {
        let f = Filter::parse("");
        assert_eq!(f.level_for("rpi_streamer"), LevelFilter::Info);
        let f = Filter::parse("warn, rpi_streamer::server=debug,rpi_streamer=error,bogus");
        assert_eq!(f.level_for("other"), LevelFilter::Warn);
        assert_eq!(f.level_for("rpi_streamer::server::ws"), LevelFilter::Debug);
        assert_eq!(f.level_for("rpi_streamer::stream::hub"), LevelFilter::Error);
        assert_eq!(f.level_for("rpi_streamerx"), LevelFilter::Warn);
        assert_eq!(f.max(), LevelFilter::Debug);
    }

    #[test]
    fn off_silences() {
        assert_eq!(Filter::parse("off").level_for("x"), LevelFilter::Off);
    }
}
