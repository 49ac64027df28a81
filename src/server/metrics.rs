//! `/metrics` in the Prometheus text exposition format.
#![forbid(unsafe_code)]

use crate::encode::demand::Codec;
use crate::stats::{ClientLimit, Stats, COUNTERS, ENCODE_BUCKETS};
use std::fmt::Write as _;

/// Values that are not plain counters in [`Stats`].
pub struct Gauges {
    /// Connected stream clients.
    pub clients: usize,
    /// Age of the newest live frame in seconds, if any.
    pub frame_age: Option<f64>,
    /// 1 while the video source is failing or stalled.
    pub video_failing: bool,
    /// Connected clients per codec, indexed by [`Codec`].
    pub clients_by_codec: [usize; Codec::ALL.len()],
}

/// Renders every counter, the encode histogram and the gauges.
pub fn render(s: &Stats, g: &Gauges) -> String {
    let mut out = String::with_capacity(4096);
    let mut family = |name: &str, kind: &str, help: &str, samples: &[(&str, f64)]| {
        let _ = writeln!(out, "# HELP rpi_streamer_{name} {help}");
        let _ = writeln!(out, "# TYPE rpi_streamer_{name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "rpi_streamer_{name}{labels} {value}");
        }
    };
    let c = |x: &std::sync::atomic::AtomicU64| Stats::get(x) as f64;
    // The plain counters, one family per run of rows that share a name.
    for run in COUNTERS.chunk_by(|a, b| a.metric == b.metric) {
        let samples: Vec<(&str, f64)> = run.iter().map(|k| (k.labels, c((k.get)(s)))).collect();
        family(run[0].metric, "counter", run[0].help, &samples);
    }
    let closed: Vec<(String, f64)> = ClientLimit::ALL
        .iter()
        .map(|l| (format!("{{reason=\"{}\"}}", l.as_str()), c(l.counter(s))))
        .collect();
    family(
        "clients_closed_total",
        "counter",
        "Stream clients the daemon closed for breaking a per-client bound, by reason.",
        &closed
            .iter()
            .map(|(l, v)| (l.as_str(), *v))
            .collect::<Vec<_>>(),
    );
    family(
        "clients",
        "gauge",
        "Connected stream clients.",
        &[("", g.clients as f64)],
    );
    let per_codec = |value: &dyn Fn(Codec) -> f64| -> Vec<(String, f64)> {
        Codec::ALL
            .iter()
            .map(|&codec| (format!("{{codec=\"{}\"}}", codec.as_str()), value(codec)))
            .collect()
    };
    for (name, kind, help, samples) in [
        (
            "clients_by_codec",
            "gauge",
            "Connected stream clients by the video codec they are sent.",
            per_codec(&|codec| g.clients_by_codec[codec as usize] as f64),
        ),
        (
            "encoded_units_total",
            "counter",
            "Units encoded (JPEG pictures, H.264 access units), by codec.",
            per_codec(&|codec| c(&s.codec(codec).units)),
        ),
        (
            "encoded_bytes_total",
            "counter",
            "Bytes of the encoded units, by codec.",
            per_codec(&|codec| c(&s.codec(codec).bytes)),
        ),
        (
            "encode_seconds_total",
            "counter",
            "Time spent encoding, by codec.",
            per_codec(&|codec| c(&s.codec(codec).encode_micros) / 1e6),
        ),
        (
            "encoded_bits_per_second",
            "gauge",
            "Output rate of each codec's encoder over the last seconds.",
            per_codec(&|codec| c(&s.codec(codec).recent_bps)),
        ),
        (
            "client_units_skipped_total",
            "counter",
            "Units clients skipped (a newer JPEG replaced one; H.264 units until a keyframe).",
            per_codec(&|codec| c(&s.codec(codec).client_skipped)),
        ),
        (
            "encode_errors_total",
            "counter",
            "Encoder failures, by codec.",
            per_codec(&|codec| c(&s.codec(codec).errors)),
        ),
    ] {
        let samples: Vec<(&str, f64)> = samples.iter().map(|(l, x)| (l.as_str(), *x)).collect();
        family(name, kind, help, &samples);
    }
    let h264 = s.codec(Codec::H264);
    let forced = c(&h264.keyframes_forced);
    family(
        "h264_keyframes_total",
        "counter",
        "H.264 keyframes, by cause: the keyframe interval (or the encoder's start) or a request.",
        &[
            ("{cause=\"interval\"}", c(&h264.keyframes) - forced),
            ("{cause=\"forced\"}", forced),
        ],
    );
    family(
        "video_source_failing",
        "gauge",
        "1 while the video source is missing, failing or stalled.",
        &[("", f64::from(u8::from(g.video_failing)))],
    );
    if let Some(age) = g.frame_age {
        family(
            "frame_age_seconds",
            "gauge",
            "Age of the newest captured frame.",
            &[("", age)],
        );
    }
    let _ = writeln!(
        out,
        "# HELP rpi_streamer_encode_seconds JPEG encode time per frame."
    );
    let _ = writeln!(out, "# TYPE rpi_streamer_encode_seconds histogram");
    let mut cumulative = 0;
    for (i, bound) in ENCODE_BUCKETS.iter().enumerate() {
        cumulative += Stats::get(&s.encode_buckets[i]);
        let _ = writeln!(
            out,
            "rpi_streamer_encode_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
        );
    }
    cumulative += Stats::get(&s.encode_buckets[ENCODE_BUCKETS.len()]);
    let _ = writeln!(
        out,
        "rpi_streamer_encode_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
    );
    let _ = writeln!(
        out,
        "rpi_streamer_encode_seconds_sum {}",
        Stats::get(&s.video_encode_micros) as f64 / 1e6
    );
    let _ = writeln!(out, "rpi_streamer_encode_seconds_count {cumulative}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_of_the_table_is_exposed_once_under_its_family() {
        let s = Stats::default();
        for (i, k) in COUNTERS.iter().enumerate() {
            Stats::add((k.get)(&s), 100 + i as u64);
        }
        let g = Gauges {
            clients: 0,
            frame_age: None,
            video_failing: false,
            clients_by_codec: [0, 0],
        };
        let text = render(&s, &g);
        for (i, k) in COUNTERS.iter().enumerate() {
            let line = format!("rpi_streamer_{}{} {}\n", k.metric, k.labels, 100 + i);
            assert_eq!(text.matches(&line).count(), 1, "{line}");
        }
        // Rows of one family are adjacent: each family is declared once.
        let families: Vec<&str> = COUNTERS
            .chunk_by(|a, b| a.metric == b.metric)
            .map(|run| run[0].metric)
            .collect();
        for f in &families {
            let help = format!("# TYPE rpi_streamer_{f} counter\n");
            assert_eq!(text.matches(&help).count(), 1, "{f}");
        }
    }

    #[test]
    fn exposition_lines_are_well_formed_and_histogram_cumulative() {
        let s = Stats::default();
        s.record_encode(0.0015);
        s.record_encode(0.2);
        Stats::add(&s.video_captured, 2);
        let text = render(
            &s,
            &Gauges {
                clients: 3,
                frame_age: Some(0.01),
                video_failing: false,
                clients_by_codec: [0, 0],
            },
        );
        for line in text.lines() {
            if line.starts_with('#') {
                assert!(
                    line.starts_with("# HELP rpi_streamer_")
                        || line.starts_with("# TYPE rpi_streamer_")
                );
                continue;
            }
            let (name, value) = line.rsplit_once(' ').expect("name value");
            assert!(name.starts_with("rpi_streamer_"), "{line}");
            value.parse::<f64>().expect("numeric value");
        }
        assert!(text.contains("rpi_streamer_video_frames_total{outcome=\"captured\"} 2\n"));
        assert!(text.contains("rpi_streamer_clients 3\n"));
        assert!(text.contains("rpi_streamer_clients_closed_total{reason=\"flooding\"} 0\n"));
        assert!(text.contains("rpi_streamer_encode_seconds_bucket{le=\"0.002\"} 1\n"));
        assert!(text.contains("rpi_streamer_encode_seconds_bucket{le=\"0.25\"} 2\n"));
        assert!(text.contains("rpi_streamer_encode_seconds_count 2\n"));
    }
}
