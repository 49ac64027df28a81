//! `--rotation`, `--hflip`, `--vflip` end to end on the synthetic source: the wire sizes
//! follow the rotation, and the test pattern's per-frame colour square (top-right when
//! upright) shows up in the corner the orientation takes it to, in MJPEG (decoded with
//! zune-jpeg) and in H.264 (decoded with Debian's ffmpeg).

mod common;

use common::*;
use std::collections::BTreeSet;
use tungstenite::Message;

const PALETTE: [[u8; 3]; 6] = TEST_PALETTE_RGB;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Corner {
    TopLeft,
    TopRight,
    BottomLeft,
    BottomRight,
}

const CORNERS: [Corner; 4] = [
    Corner::TopLeft,
    Corner::TopRight,
    Corner::BottomLeft,
    Corner::BottomRight,
];

/// Which palette colour the middle of the square-sized box at `corner` shows, if any.
fn corner_colour(rgb: &[u8], width: usize, height: usize, corner: Corner) -> Option<usize> {
    // The square's side follows the upright picture's height: the shorter side after turns.
    let side = (width.min(height) / 6).max(8) & !1;
    let (x0, y0) = match corner {
        Corner::TopLeft => (0, 0),
        Corner::TopRight => (width - side, 0),
        Corner::BottomLeft => (0, height - side),
        Corner::BottomRight => (width - side, height - side),
    };
    let mut sum = [0u64; 3];
    let n = side / 2;
    for y in y0 + side / 4..y0 + side / 4 + n {
        for x in x0 + side / 4..x0 + side / 4 + n {
            for k in 0..3 {
                sum[k] += u64::from(rgb[(y * width + x) * 3 + k]);
            }
        }
    }
    let mean = sum.map(|s| (s / (n * n) as u64) as i32);
    PALETTE.iter().position(|p| {
        p.iter()
            .zip(mean)
            .all(|(&want, got)| (i32::from(want) - got).abs() <= 60)
    })
}

/// Corners showing at least three different palette colours over `frames`.
fn square_corners(frames: &[(usize, usize, Vec<u8>)]) -> Vec<Corner> {
    CORNERS
        .into_iter()
        .filter(|&c| {
            let seen: BTreeSet<usize> = frames
                .iter()
                .filter_map(|(w, h, rgb)| corner_colour(rgb, *w, *h, c))
                .collect();
            seen.len() >= 3
        })
        .collect()
}

/// Six consecutive MJPEG frames: wire size, decoded size, RGB.
fn mjpeg_frames(daemon: &Daemon) -> Vec<(usize, usize, Vec<u8>)> {
    let mut ws = daemon.connect("/stream?format=binary");
    let mut frames = Vec::new();
    for _ in 0..200 {
        if frames.len() == 6 {
            break;
        }
        if let Message::Binary(b) = ws.read().expect("message") {
            if b.first() != Some(&1) {
                continue;
            }
            let wire = (
                u16::from_le_bytes([b[12], b[13]]) as usize,
                u16::from_le_bytes([b[14], b[15]]) as usize,
            );
            let (w, h, rgb) = decode_jpeg(&b[16..]).expect("a JPEG");
            assert_eq!(wire, (w, h), "the header says the JPEG's size");
            frames.push((w, h, rgb));
        }
    }
    frames
}

fn daemon_turned(flags: &[&str]) -> Daemon {
    TestDaemon::new().fps(30).args(flags).start()
}

#[test]
fn every_orientation_puts_the_corner_square_where_it_belongs() {
    let cases: [(&[&str], (usize, usize), Corner); 8] = [
        (&[], (640, 480), Corner::TopRight),
        (&["--hflip"], (640, 480), Corner::TopLeft),
        (&["--vflip"], (640, 480), Corner::BottomRight),
        (&["--rotation", "180"], (640, 480), Corner::BottomLeft),
        (&["--rotation", "90"], (480, 640), Corner::BottomRight),
        (&["--rotation", "270"], (480, 640), Corner::TopLeft),
        (
            &["--rotation", "90", "--hflip"],
            (480, 640),
            Corner::TopRight,
        ),
        (
            &["--rotation", "270", "--hflip", "--vflip"],
            (480, 640),
            Corner::BottomRight,
        ),
    ];
    for (flags, size, corner) in cases {
        let daemon = daemon_turned(flags);
        let frames = mjpeg_frames(&daemon);
        assert_eq!(frames.len(), 6, "{flags:?}");
        for (w, h, _) in &frames {
            assert_eq!((*w, *h), size, "{flags:?}");
        }
        assert_eq!(square_corners(&frames), [corner], "{flags:?}");
        let status = daemon
            .get_with("/status", &[("Connection", "close")])
            .text();
        let sizes = format!("\"width\":{},\"height\":{},", size.0, size.1);
        assert!(status.contains(&sizes), "{flags:?}: {status}");
    }
}

#[test]
fn a_turned_h264_stream_decodes_at_the_turned_size_with_the_square_in_place() {
    if !have_ffmpeg_tool("ffmpeg") {
        return;
    }
    let daemon = daemon_turned(&["--rotation", "90"]);
    let mut ws = daemon.connect("/stream?video=h264&format=binary");
    let mut stream = Vec::new();
    let mut units = 0;
    while units < 12 {
        if let Message::Binary(b) = ws.read().expect("message") {
            if b.first() == Some(&3) {
                let wire = (
                    u16::from_le_bytes([b[12], b[13]]),
                    u16::from_le_bytes([b[14], b[15]]),
                );
                assert_eq!(wire, (480, 640));
                stream.extend_from_slice(&b[16..]);
                units += 1;
            }
        }
    }
    let out = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-f", "h264", "-i", "-", "-f", "rawvideo"])
        .args(["-pix_fmt", "rgb24", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().expect("stdin").write_all(&stream)?;
            child.wait_with_output()
        })
        .expect("run ffmpeg");
    let frame = 480 * 640 * 3;
    assert!(out.stdout.len() >= 6 * frame, "{} bytes", out.stdout.len());
    let frames: Vec<_> = out
        .stdout
        .chunks_exact(frame)
        .map(|rgb| (480, 640, rgb.to_vec()))
        .collect();
    assert_eq!(square_corners(&frames), [Corner::BottomRight]);
}
