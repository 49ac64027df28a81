//! The V4L2 memory-to-memory encoder (src/encode/m2m.rs) against a real kernel driver:
//! vicodec, the kernel's virtual stateful FWHT codec, inside the test VM. vicodec speaks the
//! same stateful encoder ioctls as the Pi's bcm2835-codec; Debian does not build it, so
//! scripts/vm/vicodec builds it out of tree and `scripts/vm/run --module vicodec` loads it.
//!
//! Ignored by default: it needs vicodec and root. Run it in the VM, single- and
//! multi-planar (bcm2835-codec's queues):
//!
//! ```text
//! bin=$(cargo test --features v4l --test m2m_vm --no-run --message-format=json | \
//!       jq -r 'select(.executable and .target.name == "m2m_vm") | .executable')
//! scripts/vm/run --module vicodec -- "$bin" --ignored --test-threads=1 --nocapture
//! scripts/vm/run --module 'vicodec multiplanar=1' -- "$bin" --ignored --test-threads=1 --nocapture
//! ```
#![cfg(feature = "v4l")]

use rpi_streamer::capture::{self, CameraType, Picture, VideoParams};
use rpi_streamer::clock::MonoTime;
use rpi_streamer::encode::h264::{H264Encoder, H264EncoderKind, H264Settings, I420};
use rpi_streamer::encode::h264_stage::{H264Stage, Job, Returned};
use rpi_streamer::encode::import::Import;
use rpi_streamer::encode::m2m::{self, Codec, Encoder, M2mError, Settings, Unit};
use rpi_streamer::encode::Demand;
use rpi_streamer::stats::Stats;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const WIDTH: u32 = 640;
const HEIGHT: u32 = 480;
/// Every wait on the device is bounded by this.
const WAIT: Duration = Duration::from_secs(5);

/// vicodec's frame header (drivers/media/test-drivers/vicodec/codec-fwht.h): two magic words,
/// then big-endian version, width, height, flags, colorspace, xfer_func, ycbcr_enc,
/// quantization and the size of the coded data after the header.
const FWHT_MAGIC1: u32 = 0x4f4f_4f4f;
const FWHT_MAGIC2: u32 = 0xffff_ffff;
const FWHT_HEADER_LEN: usize = 11 * 4;
/// `V4L2_FWHT_VERSION` and `V4L2_FWHT_FL_I_FRAME` (linux/v4l2-controls.h).
const FWHT_VERSION: u32 = 3;
const FWHT_FL_I_FRAME: u32 = 1 << 10;

/// The fields of an FWHT frame header that are checked.
#[derive(Debug)]
struct FwhtHeader {
    version: u32,
    width: u32,
    height: u32,
    flags: u32,
    size: usize,
}

fn fwht_header(unit: &[u8]) -> FwhtHeader {
    assert!(
        unit.len() >= FWHT_HEADER_LEN,
        "a unit of {} bytes is shorter than an FWHT header",
        unit.len()
    );
    let word = |i: usize| u32::from_be_bytes(unit[i * 4..i * 4 + 4].try_into().unwrap());
    // The magic words are written in CPU order, the rest big-endian.
    let magic = |i: usize| u32::from_ne_bytes(unit[i * 4..i * 4 + 4].try_into().unwrap());
    assert_eq!(
        (magic(0), magic(1)),
        (FWHT_MAGIC1, FWHT_MAGIC2),
        "FWHT magic"
    );
    FwhtHeader {
        version: word(2),
        width: word(3),
        height: word(4),
        flags: word(5),
        size: word(10) as usize,
    }
}

/// A test picture, tightly packed I420: a luma ramp with a bright square that moves with
/// `n`, grey chroma.
fn picture(n: u32) -> Vec<u8> {
    let (w, h) = (WIDTH as usize, HEIGHT as usize);
    let mut out = vec![128u8; w * h + 2 * (w / 2) * (h / 2)];
    let square = (n as usize * 8) % (w - 64);
    for y in 0..h {
        for x in 0..w {
            let inside = (square..square + 64).contains(&x) && (200..264).contains(&y);
            out[y * w + x] = if inside {
                235
            } else {
                ((x + y) % 200) as u8 + 16
            };
        }
    }
    out
}

/// Whether vicodec was loaded with `multiplanar=1`.
fn vicodec_multiplanar() -> bool {
    std::fs::read_to_string("/sys/module/vicodec/parameters/multiplanar")
        .map(|s| s.trim() == "Y")
        .unwrap_or(false)
}

fn guest(args: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/vm/guest");
    let status = Command::new(script)
        .args(args)
        .status()
        .expect("run scripts/vm/guest");
    assert!(
        status.success(),
        "scripts/vm/guest {args:?} failed: {status}"
    );
}

fn open_vicodec(keyframe_interval: u32) -> Encoder {
    let device = m2m::find(Codec::Fwht).expect("an FWHT encoder");
    eprintln!("found {device}");
    assert_eq!(device.driver, "vicodec");
    assert_eq!(
        device.multiplanar,
        vicodec_multiplanar(),
        "the queue flavour vicodec was loaded with"
    );
    let mut settings = Settings::new(Codec::Fwht, WIDTH, HEIGHT, m2m::PIX_FMT_YUV420);
    settings.keyframe_interval = Some(keyframe_interval);
    // vicodec offers a GOP size, but none of the H.264, bitrate or JPEG controls.
    settings.bitrate = Some(1_000_000);
    settings.fps = Some(30);
    let encoder = Encoder::open(&device, &settings).expect("open vicodec's encoder");
    eprintln!(
        "layout {:?}; controls set: {:?}; not offered: {:?}",
        encoder.layout(),
        encoder.applied(),
        encoder.not_offered()
    );
    assert_eq!(encoder.applied(), ["video_gop_size=5".to_owned()]);
    assert_eq!(encoder.not_offered(), ["bitrate", "frame rate"]);
    encoder
}

/// Checks `unit` is an FWHT frame of the test size and says whether it is an I-frame (by
/// its header: vicodec's encoder, unlike its decoder and bcm2835-codec, does not set
/// V4L2_BUF_FLAG_KEYFRAME on its units).
fn check_fwht(unit: &Unit, index: u32) -> bool {
    let header = fwht_header(&unit.data);
    assert_eq!(header.version, FWHT_VERSION, "unit {index}: FWHT version");
    assert_eq!(
        (header.width, header.height),
        (WIDTH, HEIGHT),
        "unit {index}: size in the header"
    );
    assert_eq!(
        unit.data.len(),
        FWHT_HEADER_LEN + header.size,
        "unit {index}: header size field"
    );
    let i_frame = header.flags & FWHT_FL_I_FRAME != 0;
    assert!(
        !unit.keyframe || i_frame,
        "unit {index}: flagged a keyframe but its header says P-frame"
    );
    assert!(!unit.error, "unit {index}: flagged corrupt");
    i_frame
}

#[test]
#[ignore = "needs vicodec (with scripts/vm/vicodec.patch): run in scripts/vm/run --module vicodec"]
fn a_forced_keyframe_is_the_next_unit_whatever_the_gop() {
    // V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME, as bcm2835-codec takes it (vicodec by our patch):
    // the next picture is an I-frame and starts a new group of pictures.
    let mut encoder = open_vicodec(5);
    let layout = encoder.layout().clone();
    let mut i_frames = Vec::new();
    for n in 0..16u32 {
        if n == 3 || n == 4 {
            encoder
                .force_keyframe()
                .expect("vicodec takes FORCE_KEY_FRAME");
        }
        let yu12 = layout.from_i420(&picture(n)).unwrap();
        let unit = encoder.encode(&yu12, i64::from(n), WAIT).expect("a unit");
        if check_fwht(&unit, n) {
            i_frames.push(n);
        }
    }
    assert_eq!(
        i_frames,
        [0, 3, 4, 9, 14],
        "forced at 3 and 4, then every 5 from there"
    );
}

#[test]
#[ignore = "needs vicodec: run in scripts/vm/run --module vicodec"]
fn vicodec_encodes_fwht_frames_with_keyframes_and_drains() {
    let mut encoder = open_vicodec(5);
    let layout = encoder.layout().clone();
    assert_eq!(layout.bytesperline, [WIDTH]);
    assert_eq!(layout.sizeimage, [WIDTH * HEIGHT * 3 / 2]);

    let start = Instant::now();
    let frames = 30;
    let mut bytes = 0;
    let mut i_frames: Vec<u32> = Vec::new();
    for n in 0..frames {
        let yu12 = layout.from_i420(&picture(n)).expect("a YU12 picture");
        let timestamp_us = 1_000_000 + i64::from(n) * 33_333;
        let unit = encoder
            .encode(&yu12, timestamp_us, WAIT)
            .expect("an encoded unit");
        let i_frame = check_fwht(&unit, n);
        assert_eq!(
            unit.timestamp_us, timestamp_us,
            "unit {n}: the picture's timestamp is copied"
        );
        if i_frame {
            i_frames.push(n);
        }
        bytes += unit.data.len();
    }
    eprintln!("I-frames at {i_frames:?}");
    let every_fifth: Vec<u32> = (0..frames).step_by(5).collect();
    assert_eq!(
        i_frames, every_fifth,
        "I-frames every GOP size (5) pictures"
    );
    let elapsed = start.elapsed();
    eprintln!(
        "{frames} FWHT frames of {WIDTH}x{HEIGHT} in {elapsed:?} ({:.1} ms each, {} bytes on average)",
        elapsed.as_secs_f64() * 1000.0 / f64::from(frames),
        bytes / frames as usize
    );

    // V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME: the next unit is a keyframe (bcm2835-codec, and
    // vicodec with scripts/vm/vicodec.patch); a driver without it must say so, not pretend.
    match encoder.force_keyframe() {
        Err(M2mError::Unsupported { what, .. }) => {
            eprintln!("forced keyframe: unsupported ({what})")
        }
        Ok(()) => {
            let yu12 = layout.from_i420(&picture(frames)).unwrap();
            let unit = encoder
                .encode(&yu12, 0, WAIT)
                .expect("a unit after the forced keyframe");
            assert!(
                check_fwht(&unit, frames),
                "the unit after a forced keyframe is one"
            );
        }
        Err(e) => panic!("force_keyframe: {e}"),
    }

    // Three pictures in flight, then STOP: their units come out, the last one flagged LAST.
    let queued: Vec<i64> = (0..3).map(|n| 5_000_000 + n * 33_333).collect();
    for (n, &ts) in queued.iter().enumerate() {
        let yu12 = layout.from_i420(&picture(n as u32)).unwrap();
        encoder
            .queue_picture(&yu12, ts, WAIT)
            .expect("queue a picture");
    }
    let drained = encoder.drain(WAIT).expect("drain");
    eprintln!(
        "drain: {} units, flags last={:?}, sizes {:?}",
        drained.len(),
        drained.iter().map(|u| u.last).collect::<Vec<_>>(),
        drained.iter().map(|u| u.data.len()).collect::<Vec<_>>()
    );
    assert!(
        drained.last().is_some_and(|u| u.last),
        "the drain ends with the LAST buffer"
    );
    let coded: Vec<&Unit> = drained.iter().filter(|u| !u.data.is_empty()).collect();
    assert_eq!(
        coded.iter().map(|u| u.timestamp_us).collect::<Vec<_>>(),
        queued,
        "every queued picture came out"
    );
    for (n, unit) in coded.iter().enumerate() {
        check_fwht(unit, n as u32);
    }
    // After LAST, the capture queue is done: no unit, no hang.
    let t = Instant::now();
    assert!(encoder
        .next_unit(Duration::from_millis(500))
        .expect("after the drain")
        .is_none());
    assert!(t.elapsed() < Duration::from_secs(2));

    // V4L2_ENC_CMD_START: the same encoder encodes again.
    encoder.restart().expect("restart after the drain");
    let yu12 = layout.from_i420(&picture(0)).unwrap();
    let unit = encoder
        .encode(&yu12, 7_000_000, WAIT)
        .expect("a unit after the restart");
    check_fwht(&unit, 0);
    assert!(!unit.last);
}

#[test]
#[ignore = "needs vicodec: run in scripts/vm/run --module vicodec"]
fn vicodec_refuses_a_size_it_cannot_encode_and_says_what_it_takes() {
    let device = m2m::find(Codec::Fwht).expect("an FWHT encoder");
    let settings = Settings::new(Codec::Fwht, 16, 16, m2m::PIX_FMT_YUV420);
    match Encoder::open(&device, &settings) {
        Err(e @ M2mError::Format { .. }) => {
            let message = e.to_string();
            eprintln!("{message}");
            assert!(message.contains("YU12 16x16"), "{message}");
            assert!(
                message.contains(" to "),
                "the accepted range is listed: {message}"
            );
        }
        Err(e) => panic!("expected a format refusal, got {e}"),
        Ok(_) => panic!("vicodec took 16x16 (below its 64x64 minimum)"),
    }
    let settings = Settings::new(Codec::H264, WIDTH, HEIGHT, m2m::PIX_FMT_YUV420);
    assert!(matches!(
        Encoder::open(&device, &settings),
        Err(M2mError::Unsupported { .. })
    ));
    assert!(matches!(
        m2m::find(Codec::H264),
        Err(M2mError::NotFound { .. })
    ));
}

#[test]
#[ignore = "needs vicodec: run in scripts/vm/run --module vicodec"]
fn unbinding_vicodec_mid_stream_is_an_error_not_a_hang() {
    let mut encoder = open_vicodec(5);
    let layout = encoder.layout().clone();
    let yu12 = layout.from_i420(&picture(0)).unwrap();
    for n in 0..5 {
        encoder
            .encode(&yu12, n, WAIT)
            .expect("frames before the unbind");
    }
    let unbound = std::thread::spawn(|| guest(&["unplug", "vicodec.0"]));
    let start = Instant::now();
    let mut encoded_after = 0;
    let error = loop {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "still encoding 30 s after the unbind"
        );
        match encoder.encode(&yu12, 100, WAIT) {
            Ok(_) => encoded_after += 1,
            Err(e) => break e,
        }
    };
    eprintln!(
        "after the unbind: {encoded_after} more units, then after {:?}: {error}",
        start.elapsed()
    );
    assert!(
        error.is_gone(),
        "the error says the device is gone: {error:?}"
    );
    drop(encoder);
    unbound.join().expect("unbind thread");
    guest(&["replug", "vicodec.0"]);
    let t = Instant::now();
    let device = loop {
        match m2m::find(Codec::Fwht) {
            Ok(d) => break d,
            Err(e) if t.elapsed() > Duration::from_secs(10) => {
                panic!("vicodec did not come back: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    eprintln!("back as {device}");
    let mut encoder = Encoder::open(
        &device,
        &Settings::new(Codec::Fwht, WIDTH, HEIGHT, m2m::PIX_FMT_YUV420),
    )
    .expect("open after the rebind");
    let unit = encoder
        .encode(&yu12, 0, WAIT)
        .expect("a unit after the rebind");
    check_fwht(&unit, 0);
}

#[test]
#[ignore = "needs vicodec: run in scripts/vm/run --module vicodec"]
fn vicodec_encodes_nv12_laid_out_by_the_drivers_strides() {
    let device = m2m::find(Codec::Fwht).expect("an FWHT encoder");
    let settings = Settings::new(Codec::Fwht, WIDTH, HEIGHT, m2m::PIX_FMT_NV12);
    let mut encoder = Encoder::open(&device, &settings).expect("open vicodec for NV12");
    let layout = encoder.layout().clone();
    eprintln!("NV12 layout {layout:?}");
    assert_eq!(layout.fourcc, m2m::PIX_FMT_NV12);
    for n in 0..5 {
        let nv12 = layout.from_i420(&picture(n)).expect("an NV12 picture");
        let unit = encoder
            .encode(&nv12, i64::from(n), WAIT)
            .expect("an NV12 unit");
        check_fwht(&unit, n);
        // Three components, 4:2:0 (neither chroma full width nor full height), YUV.
        let flags = fwht_header(&unit.data).flags;
        assert_eq!((flags >> 16) & 7, 2, "unit {n}: components - 1");
        assert_eq!(flags & (3 << 7), 0, "unit {n}: 4:2:0 chroma");
        assert_eq!((flags >> 19) & 3, 1, "unit {n}: YUV pixel encoding");
    }
    let wrong = vec![0u8; layout.picture_len() - 1];
    assert!(matches!(
        encoder.queue_picture(&wrong, 0, WAIT),
        Err(M2mError::PictureSize { .. })
    ));
}

#[test]
#[ignore = "needs vicodec and vivid at /dev/video0: run in the VM (scripts/checks/vm-v4l)"]
fn a_camera_buffer_imported_as_a_dmabuf_encodes_like_a_copy_of_its_bytes() {
    // vivid's buffers, exported by the capture backend (EXPBUF), read in place by vicodec
    // (V4L2_MEMORY_DMABUF on its OUTPUT queue); a second vicodec context is given copies of
    // the same bytes. Equal FWHT units, P-frames included, mean the driver read the
    // camera's pixels, and output_done hands each buffer back before the camera refills it.
    let params = VideoParams::at(WIDTH, HEIGHT, 15);
    let camera =
        capture::open_video(CameraType::Usb, &params, MonoTime::now()).expect("vivid's camera");
    let i_frames = imported_frames_encode_like_copies(camera, "vivid");
    assert_eq!(
        i_frames, 5,
        "vivid's still picture: I-frames every 4 pictures only"
    );
}

#[cfg(feature = "libcamera")]
#[test]
#[ignore = "needs vicodec, udmabuf and the test libcamera: run in the VM (scripts/checks/vm-v4l)"]
fn a_libcamera_buffer_imported_as_a_dmabuf_encodes_like_a_copy_of_its_bytes() {
    // The same with libcamera's virtual camera (its 640x480 test pattern, camera 0 of the
    // test libcamera's virtual.yaml), whose buffers come from /dev/udmabuf in the VM: the
    // planes libcamera describes are lent as one DMABUF (src/capture/libcamera.rs).
    assert!(
        std::path::Path::new("/dev/udmabuf").exists(),
        "no /dev/udmabuf: load udmabuf (scripts/vm/run --module udmabuf)"
    );
    let params = VideoParams::at(WIDTH, HEIGHT, 15);
    let camera = capture::open_video(CameraType::Rpi, &params, MonoTime::now())
        .expect("libcamera's virtual camera");
    imported_frames_encode_like_copies(camera, "libcamera");
}

/// `camera`'s frames (`name` for messages), each read in place by one vicodec context and
/// given as a copy of its bytes to another: the units must be equal. Returns the I-frames
/// among 20 (every 4th at least; vicodec codes a P-frame whose every block changed as an
/// I-frame too).
fn imported_frames_encode_like_copies(
    mut camera: Box<dyn capture::VideoSource>,
    name: &str,
) -> u32 {
    // The camera's format, as the backend negotiated it (YU12 from vivid, NV12 from libcamera).
    let first_by = Instant::now() + Duration::from_secs(10);
    let fourcc = loop {
        assert!(Instant::now() < first_by, "no frame from {name} in 10 s");
        if let Some(frame) = camera.next_frame().expect("the camera's frames") {
            break match frame.picture {
                Picture::Yuyv { .. } => m2m::PIX_FMT_YUYV,
                Picture::I420 { .. } => m2m::PIX_FMT_YUV420,
                Picture::Nv12 { .. } => m2m::PIX_FMT_NV12,
                Picture::Jpeg { .. } => panic!("{name} sends no JPEG"),
            };
        }
    };
    eprintln!("{name} gives {}", m2m::fourcc_str(fourcc));
    let device = m2m::find(Codec::Fwht).expect("an FWHT encoder");
    let mut settings = Settings::new(Codec::Fwht, WIDTH, HEIGHT, fourcc);
    settings.keyframe_interval = Some(4);
    let mut copy = Encoder::open(&device, &settings).expect("vicodec, copying");
    settings.import_dmabuf = true;
    let mut import = Encoder::open(&device, &settings).expect("vicodec, importing DMABUFs");
    assert!(import.imports_dmabuf() && !copy.imports_dmabuf());
    let refused = import.queue_picture(&vec![0; import.layout().picture_len()], 0, WAIT);
    assert!(
        matches!(refused, Err(M2mError::Unsupported { .. })),
        "an importing encoder has no buffers to copy into: {refused:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut done, mut i_frames) = (0u32, 0u32);
    while done < 20 {
        assert!(
            Instant::now() < deadline,
            "{done} frames from {name} in 20 s"
        );
        let Some(frame) = camera.next_frame().expect("the camera's frames") else {
            continue;
        };
        // The picture's bytes as they lie in the buffer: its planes, one after the other.
        let (bytes, stride): (Vec<u8>, usize) = match frame.picture {
            Picture::Yuyv { data, stride, .. } => (data.to_vec(), stride),
            Picture::I420 {
                planes, strides, ..
            } => (planes.concat(), strides[0]),
            Picture::Nv12 {
                planes, strides, ..
            } => (planes.concat(), strides[0]),
            Picture::Jpeg { .. } => unreachable!("checked above"),
        };
        let buf = frame
            .dmabuf
            .unwrap_or_else(|| panic!("{name} lends no DMABUF"));
        let layout = import.layout().clone();
        assert_eq!(
            (layout.bytesperline[0] as usize, layout.picture_len()),
            (stride, bytes.len()),
            "vicodec lays the picture out as {name} does"
        );
        if done == 0 {
            let short = import.queue_dmabuf(buf.fd, 100, buf.length, 0, WAIT);
            assert!(
                matches!(short, Err(M2mError::PictureSize { .. })),
                "{short:?}"
            );
        }
        let ts = 1_000_000 + i64::from(done) * 66_666;
        let want = copy.encode(&bytes, ts, WAIT).expect("a unit from the copy");
        import
            .queue_dmabuf(buf.fd, buf.bytesused, buf.length, ts, WAIT)
            .expect("the DMABUF queued");
        let got = import
            .next_unit(WAIT)
            .expect("no error")
            .expect("a unit from the import");
        import.output_done(WAIT).expect("the buffer given back");
        if check_fwht(&got, done) {
            i_frames += 1;
        }
        assert_eq!(got.timestamp_us, ts);
        assert!(
            got.data == want.data,
            "frame {done}: {} bytes read in place, {} from the copy, not the same",
            got.data.len(),
            want.data.len()
        );
        done += 1;
    }
    eprintln!(
        "{done} {name} frames through vicodec read in place, equal to copies; {i_frames} I-frames"
    );
    assert!(
        i_frames >= 5,
        "{i_frames} I-frames: one every 4 pictures at least"
    );
    i_frames
}

/// vivid's next frame lent to `stage` (waiting at most until `deadline` for one): what
/// became of it, and its YU12 planes (copied after the stage gave the buffer back).
fn lend_next(
    camera: &mut Box<dyn capture::VideoSource>,
    stage: &H264Stage,
    deadline: Instant,
) -> (Option<Returned>, [Vec<u8>; 3]) {
    loop {
        assert!(Instant::now() < deadline, "vivid's frames stopped");
        let Some(frame) = camera.next_frame().expect("vivid's frames") else {
            continue;
        };
        let buf = frame.dmabuf.expect("vivid exports its buffers (EXPBUF)");
        let import = Import::of(&frame.picture, (WIDTH, HEIGHT), &buf)
            .expect("vivid's picture can be read in place");
        let returned = stage
            .lend(buf, import, frame.captured, frame.captured.to_unix())
            .map(|ticket| stage.returned(ticket));
        let Picture::I420 { planes, .. } = frame.picture else {
            panic!("vivid gives YU12 here");
        };
        return (returned, planes.map(|p| p.to_vec()));
    }
}

/// The stage's next unit, waiting at most 10 s.
fn next_unit(
    rx: &async_channel::Receiver<Arc<rpi_streamer::stream::media::H264Unit>>,
) -> Arc<rpi_streamer::stream::media::H264Unit> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match rx.try_recv() {
            Ok(unit) => return unit,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("no unit from the stage within 10 s: {e}"),
        }
    }
}

/// A copy of `planes` (tight YU12 at the test size) for the stage.
fn job(planes: &[Vec<u8>; 3]) -> Job {
    let mut image = rpi_streamer::capture::draw::I420Image::new(WIDTH, HEIGHT);
    image.y.copy_from_slice(&planes[0]);
    image.u.copy_from_slice(&planes[1]);
    image.v.copy_from_slice(&planes[2]);
    Job {
        image,
        captured: MonoTime::now(),
        ts: 1.0,
        placeholder: false,
    }
}

#[test]
#[ignore = "needs vivid and vicodec: run in scripts/vm/run --module vivid --module vicodec"]
fn the_h264_stage_reads_lent_camera_buffers_in_place_falls_back_and_takes_them_again() {
    // The H.264 stage's hardware path, vicodec standing in (FWHT), fed vivid's buffers by
    // DMABUF as the pipeline lends them. A second vicodec context given copies of the same
    // pictures, opened as the stage opens its encoder, must give the same units.
    std::env::set_var(m2m::M2M_CODEC_ENV, "FWHT");
    let params = VideoParams::at(WIDTH, HEIGHT, 15);
    let mut camera =
        capture::open_video(CameraType::Usb, &params, MonoTime::now()).expect("vivid's camera");
    let settings = H264Settings {
        encoder: H264EncoderKind::V4l2,
        // 15 pictures: vicodec's GOP size goes up to 16.
        keyframe_interval: Duration::from_secs(1),
        ..H264Settings::default_for_tests()
    };
    let stats = Arc::new(Stats::default());
    let demand = Arc::new(Demand::default());
    let (tx, rx) = async_channel::bounded(64);
    let stage = H264Stage::start(
        settings.clone(),
        15,
        true,
        demand.clone(),
        stats.clone(),
        tx,
    )
    .expect("the stage");
    let mut copies = H264Encoder::hardware(&settings, 15, WIDTH, HEIGHT).expect("vicodec, copying");
    let deadline = Instant::now() + Duration::from_secs(90);
    // A viewer joining at frame 10 (since the keyframe, 9 frames: more than KEY_GAP_FRAMES)
    // gets a forced keyframe; the copies are forced at the same picture.
    const JOIN: u64 = 10;
    for n in 0..20 {
        if n == JOIN {
            demand.request_keyframe();
        }
        let (returned, planes) = lend_next(&mut camera, &stage, deadline);
        assert_eq!(returned, Some(Returned::Encoded), "frame {n}");
        let unit = next_unit(&rx);
        let picture = I420 {
            width: WIDTH,
            height: HEIGHT,
            planes: [&planes[0], &planes[1], &planes[2]],
            strides: [WIDTH as usize, WIDTH as usize / 2, WIDTH as usize / 2],
        };
        let want = copies
            .encode(picture, n, n == JOIN)
            .expect("the copy encoded")
            .expect("a unit from the copy");
        assert!(
            unit.data == want.data,
            "frame {n}: {} bytes read in place, {} from the copy, not the same",
            unit.data.len(),
            want.data.len()
        );
        assert_eq!(unit.seq, n);
        assert_eq!(
            unit.keyframe,
            n == 0 || n == JOIN,
            "frame {n}: the GOP restarts at the forced one"
        );
    }
    let forced = Stats::get(
        &stats
            .codec(rpi_streamer::encode::demand::Codec::H264)
            .keyframes_forced,
    );
    assert_eq!(forced, 1, "the keyframe request was honoured by the driver");
    assert_eq!(Stats::get(&stats.h264_zero_copy_units), 20);
    assert_eq!(Stats::get(&stats.h264_hardware_units), 20);
    let in_use = stats
        .h264_encoder
        .lock()
        .unwrap()
        .clone()
        .unwrap_or_default();
    assert!(in_use.starts_with("v4l2 /dev/video"), "{in_use}");
    drop(copies);

    // vicodec unbound: the frame lent then comes back to be copied, OpenH264 encodes the
    // copy, and nothing more is lent while it stands in.
    guest(&["unplug", "vicodec.0"]);
    let (returned, planes) = lend_next(&mut camera, &stage, deadline);
    assert_eq!(
        returned,
        Some(Returned::Copy),
        "the frame lent as vicodec went"
    );
    assert_eq!(Stats::get(&stats.h264_encoder_fallbacks), 1);
    stage.offer(job(&planes));
    let unit = next_unit(&rx);
    assert!(
        unit.keyframe && unit.data.starts_with(&[0, 0, 0, 1]),
        "H.264 from OpenH264"
    );
    let (returned, _) = lend_next(&mut camera, &stage, deadline);
    assert_eq!(returned, None, "nothing lent while OpenH264 stands in");

    // vicodec back: at the retry the hardware takes over (a copy first), and lent frames
    // are read in place again.
    guest(&["replug", "vicodec.0"]);
    let hardware_before = Stats::get(&stats.h264_hardware_units);
    let back_by = Instant::now() + Duration::from_secs(25);
    let returned = loop {
        assert!(
            Instant::now() < back_by,
            "the hardware did not take over again within 25 s of the rebind"
        );
        let (returned, planes) = lend_next(&mut camera, &stage, deadline);
        match returned {
            Some(r) => break r,
            None => {
                stage.offer(job(&planes));
                next_unit(&rx);
            }
        }
    };
    assert!(Stats::get(&stats.h264_hardware_units) > hardware_before);
    assert_eq!(
        returned,
        Returned::Encoded,
        "read in place after the rebind"
    );
    assert_eq!(Stats::get(&stats.h264_zero_copy_units), 21);
    eprintln!(
        "20 frames read in place equal to copies; after the unbind OpenH264, after the \
         rebind in place again ({} units in all)",
        Stats::get(&stats.codec(rpi_streamer::encode::demand::Codec::H264).units)
    );
}
