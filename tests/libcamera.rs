//! `--camera-type rpi` end to end against libcamera's `virtual` camera: the daemon runs the
//! same libcamera code path a Pi uses, and what reaches a WebSocket client is checked pixel by
//! pixel. Needs a libcamera with the virtual pipeline, from `scripts/libcamera/build`:
//!
//! ```sh
//! eval "$(scripts/libcamera/build)"
//! LIBCAMERA_LOG_LEVELS='*:WARN' cargo test --features libcamera --test libcamera
//! ```
//!
//! The virtual camera reads its cameras from `<prefix>/share/libcamera/pipeline/virtual/
//! virtual.yaml` only, so the tests write that file (always the same content, atomically) and
//! a folder of known-colour JPEGs inside the prefix.
#![cfg(feature = "libcamera")]

mod common;

use common::{decode_jpeg, next_video, unix_now, Daemon, TestDaemon, Video};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The frames camera plays 0.jpg, 1.jpg, … in this order, each for 4 frames, then loops.
/// Mid-range colours, so no channel clips through the YUV round trips.
const FRAME_COLOURS: [(u8, u8, u8); 4] =
    [(200, 40, 40), (40, 180, 60), (50, 60, 200), (220, 210, 60)];
const FRAMES_SIZE: (u32, u32) = (320, 240);
const FRAMES_ID: &str = "RpiStreamerFrames";
const BARS_ID: &str = "RpiStreamerBars";

fn prefix() -> PathBuf {
    match std::env::var_os("LIBCAMERA_PREFIX") {
        Some(p) => PathBuf::from(p),
        None => panic!(
            "LIBCAMERA_PREFIX is not set: run `eval \"$(scripts/libcamera/build)\"` first \
             (it builds libcamera with the virtual camera and prints the environment)"
        ),
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a concurrent reader
/// (another test run's camera manager) never sees half a file.
fn write_atomically(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", tmp.display()));
    std::fs::rename(&tmp, path).unwrap_or_else(|e| panic!("renaming to {}: {e}", path.display()));
}

fn flat_jpeg((r, g, b): (u8, u8, u8), (w, h): (u32, u32)) -> Vec<u8> {
    let pixels: Vec<u8> = std::iter::repeat_n([r, g, b], (w * h) as usize)
        .flatten()
        .collect();
    let image = turbojpeg::Image {
        pixels: pixels.as_slice(),
        width: w as usize,
        pitch: w as usize * 3,
        height: h as usize,
        format: turbojpeg::PixelFormat::RGB,
    };
    turbojpeg::compress(image, 95, turbojpeg::Subsamp::Sub2x2)
        .expect("encode a test JPEG")
        .to_vec()
}

/// Installs the virtual cameras once per test process.
fn virtual_cameras() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let prefix = prefix();
        let frames = prefix.join("share/rpi-streamer-tests/frames");
        std::fs::create_dir_all(&frames).expect("frames folder");
        for (i, colour) in FRAME_COLOURS.iter().enumerate() {
            write_atomically(
                &frames.join(format!("{i}.jpg")),
                &flat_jpeg(*colour, FRAMES_SIZE),
            );
        }
        let yaml = format!(
            "%YAML 1.1\n---\n\
             \"{BARS_ID}\":\n  supported_formats:\n  - width: 640\n    height: 480\n    frame_rates:\n    - 15\n    - 30\n  \
             test_pattern: \"bars\"\n  location: \"CameraLocationFront\"\n  model: \"rpi-streamer bars\"\n\
             \"{FRAMES_ID}\":\n  supported_formats:\n  - width: {}\n    height: {}\n  \
             frames:\n    path: \"{}\"\n  location: \"CameraLocationBack\"\n  model: \"rpi-streamer frames\"\n",
            FRAMES_SIZE.0,
            FRAMES_SIZE.1,
            frames.display()
        );
        let dir = prefix.join("share/libcamera/pipeline/virtual");
        std::fs::create_dir_all(&dir).expect("virtual pipeline folder");
        write_atomically(&dir.join("virtual.yaml"), yaml.as_bytes());
    });
}

/// The `--camera-index` of the camera with libcamera id `id`, from `--list-devices`.
fn camera_index(id: &str) -> String {
    let out = common::daemon_command()
        .args(["--camera-type", "rpi", "--list-devices"])
        .output()
        .expect("run --list-devices");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "--list-devices failed: {text}");
    text.lines()
        .find(|l| l.contains(&format!("({id})")))
        .and_then(|l| l.split(':').next())
        .map(|n| n.trim().to_string())
        .unwrap_or_else(|| panic!("{id} not listed by --list-devices:\n{text}"))
}

struct Received {
    ts: f64,
    arrived: f64,
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

impl Received {
    fn at(&self, x: u32, y: u32) -> (u8, u8, u8) {
        let i = ((y * self.width + x) * 3) as usize;
        (self.rgb[i], self.rgb[i + 1], self.rgb[i + 2])
    }
}

/// Reads video frames for `secs`, then decodes them (decoding in a debug build is slower than
/// the stream, and a slow reader would only see every few frames).
fn receive(daemon: &Daemon, secs: f64) -> Vec<Received> {
    let mut ws = daemon.connect("/stream");
    let start = Instant::now();
    let mut raw = Vec::new();
    while start.elapsed().as_secs_f64() < secs {
        raw.push((next_video(&mut ws), unix_now()));
    }
    raw.into_iter()
        .map(|(video, arrived)| {
            let Video {
                ts,
                width,
                height,
                jpeg,
            } = video;
            let (w, h, rgb) = decode_jpeg(&jpeg).expect("frames decode");
            assert_eq!((w as u32, h as u32), (width, height), "header matches JPEG");
            Received {
                ts,
                arrived,
                width,
                height,
                rgb,
            }
        })
        .collect()
}

fn close(a: (u8, u8, u8), b: (u8, u8, u8), tolerance: u8) -> bool {
    a.0.abs_diff(b.0) <= tolerance
        && a.1.abs_diff(b.1) <= tolerance
        && a.2.abs_diff(b.2) <= tolerance
}

fn check_timestamps(frames: &[Received], started: f64) {
    for pair in frames.windows(2) {
        assert!(
            pair[1].ts > pair[0].ts,
            "timestamps increase: {} then {}",
            pair[0].ts,
            pair[1].ts
        );
    }
    for f in frames {
        // Capture happens before arrival, and after the daemon started.
        assert!(
            f.ts <= f.arrived + 0.01,
            "ts {} after arrival {}",
            f.ts,
            f.arrived
        );
        assert!(
            f.ts >= started - 0.01,
            "ts {} before the daemon started at {started}",
            f.ts
        );
        assert!(
            f.arrived - f.ts < 1.0,
            "frame {}s old on arrival",
            f.arrived - f.ts
        );
    }
}

fn start_rpi(index: &str, size: (u32, u32)) -> Daemon {
    TestDaemon::new()
        .camera("rpi")
        .arg("--camera-index")
        .arg(index)
        .size(size.0, size.1)
        .fps(15)
        .arg("--quality")
        .arg("85")
        .arg("--no-client")
        .env("LIBCAMERA_LOG_LEVELS", "*:WARN")
        .start()
}

#[test]
fn frames_from_a_folder_of_jpegs_arrive_with_their_colours_size_and_rising_timestamps() {
    virtual_cameras();
    let index = camera_index(FRAMES_ID);
    let started = unix_now();
    let mut daemon = start_rpi(&index, FRAMES_SIZE);
    let frames = receive(&daemon, 3.0);
    let log = daemon.log_text();
    assert!(
        frames.len() >= 20,
        "{} frames in 3 s at 15 fps; log:\n{log}",
        frames.len()
    );
    assert!(log.contains("granted libcamera camera"), "log:\n{log}");
    assert!(
        !log.contains("arrival time"),
        "SensorTimestamp was used; log:\n{log}"
    );

    let mut sequence = Vec::new();
    for (n, f) in frames.iter().enumerate() {
        assert_eq!((f.width, f.height), FRAMES_SIZE, "frame {n} size");
        let centre = f.at(f.width / 2, f.height / 2);
        let which = FRAME_COLOURS
            .iter()
            .position(|c| close(centre, *c, 20))
            .unwrap_or_else(|| panic!("frame {n}: centre {centre:?} is none of {FRAME_COLOURS:?}"));
        for (x, y) in [
            (2, 2),
            (f.width - 3, 2),
            (2, f.height - 3),
            (f.width - 3, f.height - 3),
        ] {
            assert!(
                close(f.at(x, y), FRAME_COLOURS[which], 20),
                "frame {n} is flat: ({x},{y}) = {:?}, centre {centre:?}",
                f.at(x, y)
            );
        }
        sequence.push(which);
    }
    // Files play in order: every change of colour moves forward by one file (two if a whole
    // 4-frame run was skipped by the latest-frame-only hub).
    let mut changes = 0;
    for pair in sequence.windows(2) {
        let step = (pair[1] + FRAME_COLOURS.len() - pair[0]) % FRAME_COLOURS.len();
        assert!(
            step <= 2,
            "colour went from file {} to file {}: {sequence:?}",
            pair[0],
            pair[1]
        );
        changes += usize::from(step != 0);
    }
    assert!(
        changes >= 3,
        "the camera moves through its files: {sequence:?}"
    );
    check_timestamps(&frames, started);

    daemon.terminate();
    let status = daemon
        .wait_exit(Duration::from_secs(1))
        .expect("exits within a second of SIGTERM");
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        daemon.log_text()
    );
}

/// Colour bars, classified by which channels are lit.
const BARS: [(bool, bool, bool); 8] = [
    (true, true, true),    // white
    (true, true, false),   // yellow
    (false, true, true),   // cyan
    (false, true, false),  // green
    (true, false, true),   // magenta
    (true, false, false),  // red
    (false, false, true),  // blue
    (false, false, false), // black
];

/// The bars along row `y` as (class, width) runs, the wrapped-around bar joined up.
fn bar_runs(f: &Received, y: u32) -> Vec<((bool, bool, bool), u32)> {
    let mut runs: Vec<((bool, bool, bool), u32)> = Vec::new();
    for x in 0..f.width {
        let (r, g, b) = f.at(x, y);
        let class = (r > 128, g > 128, b > 128);
        match runs.last_mut() {
            Some((c, n)) if *c == class => *n += 1,
            _ => runs.push((class, 1)),
        }
    }
    if runs.len() > 1 && runs[0].0 == runs[runs.len() - 1].0 {
        let (_, n) = runs.pop().expect("non-empty");
        runs[0].1 += n;
    }
    // JPEG ringing at an edge can make a pixel or two of a third class; drop those slivers.
    runs.retain(|(_, n)| *n > 3);
    runs
}

#[test]
fn the_test_pattern_camera_streams_moving_colour_bars() {
    virtual_cameras();
    let index = camera_index(BARS_ID);
    let started = unix_now();
    let daemon = start_rpi(&index, (640, 480));
    let frames = receive(&daemon, 2.0);
    assert!(
        frames.len() >= 12,
        "{} frames in 2 s at 15 fps",
        frames.len()
    );
    let mut white_starts = Vec::new();
    for (n, f) in frames.iter().enumerate() {
        assert_eq!((f.width, f.height), (640, 480));
        let runs = bar_runs(f, 240);
        assert_eq!(runs.len(), 8, "frame {n}: 8 bars, got {runs:?}");
        let first = BARS
            .iter()
            .position(|b| *b == runs[0].0)
            .unwrap_or_else(|| panic!("frame {n}: unknown bar {:?}", runs[0].0));
        for (i, (class, width)) in runs.iter().enumerate() {
            assert_eq!(
                *class,
                BARS[(first + i) % 8],
                "frame {n}: bar order {runs:?}"
            );
            assert!((70..=90).contains(width), "frame {n}: bar widths {runs:?}");
        }
        // Where the white bar starts: the pattern scrolls a column per camera frame.
        let white = |x: u32| {
            let (r, g, b) = f.at(x % f.width, 240);
            r > 128 && g > 128 && b > 128
        };
        let start = (0..f.width).find(|&x| white(x) && !white(x + f.width - 1));
        white_starts.push(start.unwrap_or_else(|| panic!("frame {n}: no white bar")));
    }
    white_starts.dedup();
    assert!(white_starts.len() > 1, "the bars move between frames");
    check_timestamps(&frames, started);
}

#[test]
fn a_missing_camera_index_streams_placeholders_and_says_why() {
    virtual_cameras();
    let daemon = start_rpi("7", (320, 240));
    let mut ws = daemon.connect("/stream");
    let Video {
        width,
        height,
        jpeg,
        ..
    } = next_video(&mut ws);
    assert_eq!((width, height), (320, 240));
    decode_jpeg(&jpeg).expect("placeholder decodes");
    let deadline = Instant::now() + Duration::from_secs(2);
    while !daemon.log_text().contains("there is no camera 7") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = daemon.log_text();
    assert!(log.contains("there is no camera 7"), "log:\n{log}");
    // It keeps retrying (a camera may appear) and keeps serving placeholders.
    let second = next_video(&mut ws);
    assert!(second.ts > 0.0);
}

/// libcamera's virtual camera offers no scalar control (only FrameDurationLimits, an array
/// the daemon sets itself, and one id the crate does not know): `/controls` lists none, and
/// a control asked for is refused with that said, while the camera streams on; and it is
/// not asked to mirror (its pipeline accepts an orientation without doing it).
#[test]
fn the_virtual_cameras_controls_are_listed_and_unknown_ones_refused() {
    virtual_cameras();
    let index = camera_index(BARS_ID);
    let daemon = TestDaemon::new()
        .camera("rpi")
        .args(["--camera-index", &index, "--fps", "15", "--no-client"])
        .args(["--camera-control", "AfMode=Continuous", "--hflip"])
        .env("LIBCAMERA_LOG_LEVELS", "*:WARN")
        .start();
    let refused = "camera control AfMode=\"Continuous\": no control named \"AfMode\"; \
                   this camera offers: no controls";
    let deadline = Instant::now() + Duration::from_secs(10);
    while !daemon.log_text().contains(refused) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        daemon.log_text().contains(refused),
        "log:\n{}",
        daemon.log_text()
    );
    let listed = daemon.get("/controls");
    assert_eq!(
        (listed.code, listed.text().as_str()),
        (200, "[]"),
        "{listed}"
    );
    let body = r#"{"Brightness": 0.1}"#;
    let answer = daemon.send(
        format!(
            "POST /controls HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!(answer.code, 400, "{answer}");
    assert!(
        answer.text().contains("this camera offers: no controls"),
        "{answer}"
    );
    let mut ws = daemon.connect("/stream");
    let first = next_video(&mut ws);
    assert!(next_video(&mut ws).ts > first.ts, "the camera streams on");
}

#[test]
fn the_virtual_cameras_frames_are_lent_as_one_buffer_holding_their_planes() {
    // What a hardware encoder would import (zero copy): the frame's buffer, its planes one
    // after the other from the start. Here the test libcamera's buffers are memfds (no
    // DMABUF provider on this machine), which can be read back: the bytes at the lent
    // descriptor must be the picture's. (In the VM, with udmabuf, scripts/checks/vm-v4l has
    // vicodec read them in place.)
    use rpi_streamer::capture::{self, CameraType, Picture, VideoParams};
    use std::os::unix::fs::FileExt;
    virtual_cameras();
    let mut params = VideoParams::at(640, 480, 15);
    params.camera_index = camera_index(BARS_ID).parse().expect("an index");
    let mut camera = capture::open_video(
        CameraType::Rpi,
        &params,
        rpi_streamer::clock::MonoTime::now(),
    )
    .expect("the bars camera");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut checked = 0;
    while checked < 5 {
        assert!(
            Instant::now() < deadline,
            "{checked} frames from the bars camera in 20 s"
        );
        let Some(frame) = camera.next_frame().expect("frames") else {
            continue;
        };
        let buf = frame.dmabuf.expect("the frame's buffer is lent");
        let planes: Vec<&[u8]> = match frame.picture {
            Picture::Nv12 { planes, .. } => planes.to_vec(),
            Picture::I420 { planes, .. } => planes.to_vec(),
            other => panic!("a raw picture, not {other:?}"),
        };
        let picture = planes.concat();
        assert_eq!(
            buf.bytesused,
            picture.len(),
            "the planes fill the buffer's start"
        );
        assert!(buf.source.starts_with("libcamera camera ") && buf.source.contains(BARS_ID));
        let file = std::fs::File::from(buf.fd.try_clone_to_owned().expect("dup"));
        let mut lent = vec![0u8; buf.bytesused];
        file.read_exact_at(&mut lent, 0)
            .expect("a memfd reads back");
        assert!(
            lent == picture,
            "the lent buffer holds the picture, planes in order"
        );
        checked += 1;
    }
}
