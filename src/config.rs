//! The command line (argh) and its validation into a [`Config`].
//!
//! Flag names and defaults are the seed's, so existing scripts and service files keep working.
//! Every rejected value names its flag and the allowed range; the binary exits with code 2.
#![forbid(unsafe_code)]

use crate::capture::{AudioParams, CameraType, VideoParams};
use argh::FromArgs;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

/// Where the browser client is installed by the Pi images.
pub const INSTALLED_PUBLIC_DIR: &str = "/usr/share/rpi-streamer/public";

/// Stream a camera and microphone to browsers over one WebSocket at /stream.
#[derive(FromArgs, Debug, PartialEq)]
pub struct Args {
    /// camera to use: rpi (libcamera), usb (V4L2 webcam) or test (synthetic pattern)
    #[argh(option)]
    pub camera_type: String,
    /// address to listen on (default 0.0.0.0)
    #[argh(option, default = "String::from(\"0.0.0.0\")")]
    pub host: String,
    /// TCP port to listen on, 1-65535 (default 8080)
    #[argh(option, default = "8080")]
    pub port: u32,
    /// width of the streamed video, even, 16-4096 (default 640)
    #[argh(option, default = "640")]
    pub width: u32,
    /// height of the streamed video, even, 16-4096 (default 480)
    #[argh(option, default = "480")]
    pub height: u32,
    /// width to capture at before scaling (usb only; default = --width)
    #[argh(option)]
    pub capture_width: Option<u32>,
    /// height to capture at before scaling (usb only; default = --height)
    #[argh(option)]
    pub capture_height: Option<u32>,
    /// frames per second, 1-120 (default 15)
    #[argh(option, default = "15")]
    pub fps: u32,
    /// JPEG quality, 1-100 (default 70)
    #[argh(option, default = "70")]
    pub quality: u32,
    /// video device number N for /dev/videoN (usb only; default 0)
    #[argh(option, default = "0")]
    pub device_id: u32,
    /// V4L2 device path, e.g. /dev/v4l/by-id/usb-...-video-index0 (usb only; overrides --device-id)
    #[argh(option)]
    pub device: Option<PathBuf>,
    /// libcamera camera number N, as listed by --list-devices (rpi only; default 0)
    #[argh(option, default = "0")]
    pub camera_index: u32,
    /// print the cameras the chosen --camera-type can open (and the microphones), then exit
    #[argh(switch)]
    pub list_devices: bool,
    /// also stream audio (test: a synthetic tone; usb/rpi: the microphone)
    #[argh(switch)]
    pub enable_audio: bool,
    /// ALSA capture device: a card number or a PCM name such as plughw:CARD=Mic,DEV=0 (default: system default input)
    #[argh(option)]
    pub audio_device: Option<String>,
    /// audio channels, 1-2 (default 1)
    #[argh(option, default = "1")]
    pub audio_channels: u32,
    /// audio sample rate in Hz, 8000-192000 (default: the device's rate; 48000 for test)
    #[argh(option)]
    pub audio_samplerate: Option<u32>,
    /// frames that may wait between the capture thread and the server, 1-10000 (default 50)
    #[argh(option, default = "50")]
    pub video_queue_size: u32,
    /// audio chunks that may wait for the server and per client, 1-100000 (default 500)
    #[argh(option, default = "500")]
    pub audio_queue_size: u32,
    /// oldest audio a client is sent, in ms: older chunks are dropped for that client, 100-60000 (default 1000)
    #[argh(option, default = "1000")]
    pub max_audio_age: u32,
    /// seconds between pings to each client; one silent for three intervals is dropped, 1-300 (default 15)
    #[argh(option, default = "15")]
    pub ping_interval: u32,
    /// folder with the browser client (default /usr/share/rpi-streamer/public if present, else the built-in copy)
    #[argh(option)]
    pub public_dir: Option<PathBuf>,
    /// serve only the stream, no browser client
    #[argh(switch)]
    pub no_client: bool,
    /// require this token for /stream, /status, /metrics and /snapshot.jpg, as "Authorization: Bearer <token>" or "?token=<token>"
    #[argh(option)]
    pub auth_token: Option<String>,
    /// require HTTP Basic credentials USER:PASSWORD for everything but /healthz
    #[argh(option)]
    pub basic_auth: Option<String>,
    /// most simultaneous stream clients, 1-1000 (default 16)
    #[argh(option, default = "16")]
    pub max_clients: u32,
    /// accept WebSocket upgrades only from this browser Origin (repeatable; default: any)
    #[argh(option)]
    pub allowed_origin: Vec<String>,
    /// inject a fault into the test source: stall|fail|hang|garbage:AFTER_S:DURATION_S (repeatable; for tests)
    #[argh(option)]
    pub test_fault: Vec<String>,
}

/// Where the browser client's files come from.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientFiles {
    /// Not served (`--no-client`).
    Disabled,
    /// Read from this folder on each request.
    Dir(PathBuf),
    /// The copy compiled into the binary.
    Builtin,
}

/// The validated configuration the daemon runs with.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Camera backend.
    pub camera: CameraType,
    /// Video request.
    pub video: VideoParams,
    /// JPEG quality 1-100.
    pub quality: u8,
    /// Audio request, when `--enable-audio`.
    pub audio: Option<AudioParams>,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Capture-to-server video channel capacity (frames).
    pub video_queue_size: usize,
    /// Capture-to-server audio channel capacity and per-client audio backlog (chunks).
    pub audio_queue_size: usize,
    /// The oldest audio chunk a client is sent.
    pub max_audio_age: Duration,
    /// Interval between pings to each client.
    pub ping_interval: Duration,
    /// The browser client.
    pub client: ClientFiles,
    /// Access control.
    pub access: Access,
    /// Faults injected into the test source.
    pub faults: Vec<Fault>,
}

/// Who may use the daemon.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Access {
    /// Token accepted as Bearer or `?token=`.
    pub token: Option<String>,
    /// `user:password` accepted as HTTP Basic.
    pub basic: Option<String>,
    /// Most simultaneous stream clients.
    pub max_clients: usize,
    /// Browser origins allowed to open the stream; empty = any.
    pub allowed_origins: Vec<String>,
}

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

/// Parses `KIND:AFTER:DURATION`.
pub fn parse_fault(spec: &str) -> Result<Fault, ConfigError> {
    let bad = || {
        invalid(
            "--test-fault",
            format!("want stall|fail|hang|garbage:AFTER_SECONDS:DURATION_SECONDS (got {spec:?})"),
        )
    };
    let mut parts = spec.split(':');
    let kind = match parts.next() {
        Some("stall") => FaultKind::Stall,
        Some("fail") => FaultKind::Fail,
        Some("hang") => FaultKind::Hang,
        Some("garbage") => FaultKind::Garbage,
        _ => return Err(bad()),
    };
    let mut number = || -> Result<f64, ConfigError> {
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

/// A flag value outside what the daemon can run with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{flag}: {message}")]
pub struct ConfigError {
    /// The offending flag, e.g. `--quality`.
    pub flag: &'static str,
    /// What is allowed and what was given.
    pub message: String,
}

fn invalid(flag: &'static str, message: String) -> ConfigError {
    ConfigError { flag, message }
}

fn in_range(flag: &'static str, value: u32, min: u32, max: u32) -> Result<u32, ConfigError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(invalid(
            flag,
            format!("must be between {min} and {max} (got {value})"),
        ))
    }
}

/// JPEG 4:2:0 works on 2x2 pixel blocks, so sizes must be even.
fn frame_side(flag: &'static str, value: u32) -> Result<u32, ConfigError> {
    if (16..=4096).contains(&value) && value % 2 == 0 {
        Ok(value)
    } else {
        Err(invalid(
            flag,
            format!("must be an even number between 16 and 4096 (got {value})"),
        ))
    }
}

/// Parses a `--camera-type` value.
pub fn parse_camera_type(value: &str) -> Result<CameraType, ConfigError> {
    match value {
        "rpi" => Ok(CameraType::Rpi),
        "usb" => Ok(CameraType::Usb),
        "test" => Ok(CameraType::Test),
        other => Err(invalid(
            "--camera-type",
            format!("must be one of rpi, usb, test (got {other:?})"),
        )),
    }
}

fn resolve_listen(host: &str, port: u16) -> Result<SocketAddr, ConfigError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| {
            invalid(
                "--host",
                format!("{host:?} is not an IP address or a resolvable host name"),
            )
        })
}

impl Args {
    /// Checks every value and builds the [`Config`].
    pub fn validate(&self) -> Result<Config, ConfigError> {
        let camera = parse_camera_type(&self.camera_type)?;
        let port = in_range("--port", self.port, 1, 65535)? as u16;
        let width = frame_side("--width", self.width)?;
        let height = frame_side("--height", self.height)?;
        let capture_width = match self.capture_width {
            Some(w) => frame_side("--capture-width", w)?,
            None => width,
        };
        let capture_height = match self.capture_height {
            Some(h) => frame_side("--capture-height", h)?,
            None => height,
        };
        let fps = in_range("--fps", self.fps, 1, 120)?;
        let quality = in_range("--quality", self.quality, 1, 100)? as u8;
        let channels = in_range("--audio-channels", self.audio_channels, 1, 2)? as u16;
        let sample_rate = match self.audio_samplerate {
            Some(rate) => Some(in_range("--audio-samplerate", rate, 8000, 192_000)?),
            None => None,
        };
        let video_queue_size = in_range("--video-queue-size", self.video_queue_size, 1, 10_000)?;
        let audio_queue_size = in_range("--audio-queue-size", self.audio_queue_size, 1, 100_000)?;
        let max_audio_age = in_range("--max-audio-age", self.max_audio_age, 100, 60_000)?;
        let ping_interval = in_range("--ping-interval", self.ping_interval, 1, 300)?;
        if let Some(device) = &self.audio_device {
            if device.trim().is_empty() {
                return Err(invalid("--audio-device", "must not be empty".into()));
            }
        }
        let listen = resolve_listen(&self.host, port)?;
        let client = match (&self.public_dir, self.no_client) {
            (_, true) => ClientFiles::Disabled,
            (Some(dir), false) => {
                if !dir.join("index.html").is_file() {
                    return Err(invalid(
                        "--public-dir",
                        format!("{} has no index.html", dir.display()),
                    ));
                }
                ClientFiles::Dir(dir.clone())
            }
            (None, false) => {
                let installed = PathBuf::from(INSTALLED_PUBLIC_DIR);
                if installed.join("index.html").is_file() {
                    ClientFiles::Dir(installed)
                } else {
                    ClientFiles::Builtin
                }
            }
        };
        if let Some(token) = &self.auth_token {
            if token.len() < 8 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(invalid(
                    "--auth-token",
                    "must be at least 8 characters without spaces".into(),
                ));
            }
        }
        if let Some(basic) = &self.basic_auth {
            if !basic
                .split_once(':')
                .is_some_and(|(u, p)| !u.is_empty() && !p.is_empty())
            {
                return Err(invalid(
                    "--basic-auth",
                    "must be USER:PASSWORD, both non-empty".into(),
                ));
            }
        }
        let max_clients = in_range("--max-clients", self.max_clients, 1, 1000)? as usize;
        for origin in &self.allowed_origin {
            if !(origin.starts_with("http://") || origin.starts_with("https://"))
                || origin.ends_with('/')
            {
                return Err(invalid(
                    "--allowed-origin",
                    format!("must look like https://host[:port] with no path (got {origin:?})"),
                ));
            }
        }
        let faults = self
            .test_fault
            .iter()
            .map(|f| parse_fault(f))
            .collect::<Result<Vec<_>, _>>()?;
        if !faults.is_empty() && camera != CameraType::Test {
            return Err(invalid(
                "--test-fault",
                "only applies to --camera-type test".into(),
            ));
        }
        Ok(Config {
            camera,
            video: VideoParams {
                width,
                height,
                capture_width,
                capture_height,
                fps,
                device_id: self.device_id,
                device_path: self.device.clone(),
                camera_index: self.camera_index,
            },
            quality,
            audio: self.enable_audio.then(|| AudioParams {
                sample_rate,
                channels,
                device: self.audio_device.clone(),
            }),
            listen,
            video_queue_size: video_queue_size as usize,
            audio_queue_size: audio_queue_size as usize,
            max_audio_age: Duration::from_millis(max_audio_age.into()),
            ping_interval: Duration::from_secs(ping_interval.into()),
            client,
            access: Access {
                token: self.auth_token.clone(),
                basic: self.basic_auth.clone(),
                max_clients,
                allowed_origins: self.allowed_origin.clone(),
            },
            faults,
        })
    }
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Parsed {
    /// Run with this configuration.
    Run(Box<Config>),
    /// Print the devices of this camera type and exit (`--list-devices`).
    ListDevices(crate::capture::CameraType),
    /// Print this (help) on stdout and exit 0.
    Help(String),
    /// Print this error on stderr and exit 2.
    Error(String),
}

/// Parses and validates `args` (without the program name).
pub fn parse(program: &str, args: &[&str]) -> Parsed {
    // argh knows only --help; accept the usual short form too.
    let args: Vec<&str> = args
        .iter()
        .map(|a| if *a == "-h" { "--help" } else { a })
        .collect();
    match Args::from_args(&[program], &args) {
        Ok(parsed) => match parsed.validate() {
            Ok(config) if parsed.list_devices => Parsed::ListDevices(config.camera),
            Ok(config) => Parsed::Run(Box::new(config)),
            Err(e) => Parsed::Error(format!("error: {e}\nRun {program} --help for every flag.")),
        },
        Err(early) => match early.status {
            Ok(()) => Parsed::Help(early.output),
            Err(()) => Parsed::Error(format!(
                "error: {}\nRun {program} --help for every flag.",
                early.output.trim_end()
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Config, String> {
        match parse("rpi-streamer", args) {
            Parsed::Run(config) => Ok(*config),
            Parsed::ListDevices(camera) => Err(format!("list: {camera:?}")),
            Parsed::Help(text) => Err(format!("help: {text}")),
            Parsed::Error(text) => Err(text),
        }
    }

    #[test]
    fn usb_list_devices_and_device_takes_a_path() {
        assert!(matches!(
            parse("rpi-streamer", &["--camera-type", "usb", "--list-devices"]),
            Parsed::ListDevices(CameraType::Usb)
        ));
        let c = run(&[
            "--camera-type",
            "usb",
            "--device",
            "/dev/v4l/by-id/usb-cam-video-index0",
        ])
        .unwrap();
        assert_eq!(
            c.video.device_path.as_deref(),
            Some(std::path::Path::new("/dev/v4l/by-id/usb-cam-video-index0"))
        );
        assert_eq!(
            run(&["--camera-type", "usb"]).unwrap().video.device_path,
            None
        );
    }

    fn error_of(args: &[&str]) -> String {
        run(args).expect_err("should be rejected")
    }

    #[test]
    fn defaults_match_the_seed() {
        let c = run(&["--camera-type", "test"]).unwrap();
        assert_eq!(c.camera, CameraType::Test);
        assert_eq!(c.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!((c.video.width, c.video.height), (640, 480));
        assert_eq!((c.video.capture_width, c.video.capture_height), (640, 480));
        assert_eq!(c.video.fps, 15);
        assert_eq!(c.quality, 70);
        assert_eq!(c.video.device_id, 0);
        assert_eq!(c.audio, None);
        assert_eq!(c.video_queue_size, 50);
        assert_eq!(c.audio_queue_size, 500);
        assert_eq!(c.max_audio_age, Duration::from_secs(1));
        assert_eq!(c.ping_interval, Duration::from_secs(15));
    }

    #[test]
    fn client_bounds_are_range_checked() {
        assert!(
            error_of(&["--camera-type", "test", "--max-audio-age", "50"])
                .contains("--max-audio-age: must be between 100 and 60000")
        );
        assert!(error_of(&["--camera-type", "test", "--ping-interval", "0"])
            .contains("--ping-interval: must be between 1 and 300"));
    }

    #[test]
    fn every_seed_flag_is_accepted() {
        let c = run(&[
            "--camera-type",
            "usb",
            "--host",
            "127.0.0.1",
            "--port",
            "9000",
            "--width",
            "1280",
            "--height",
            "720",
            "--capture-width",
            "1920",
            "--capture-height",
            "1080",
            "--fps",
            "30",
            "--quality",
            "90",
            "--device-id",
            "2",
            "--enable-audio",
            "--audio-device",
            "1",
            "--audio-channels",
            "2",
            "--audio-samplerate",
            "44100",
            "--video-queue-size",
            "5",
            "--audio-queue-size",
            "10",
            "--no-client",
        ])
        .unwrap();
        assert_eq!(c.camera, CameraType::Usb);
        assert_eq!(c.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(
            (c.video.capture_width, c.video.capture_height),
            (1920, 1080)
        );
        assert_eq!(c.video.device_id, 2);
        let audio = c.audio.unwrap();
        assert_eq!(audio.channels, 2);
        assert_eq!(audio.sample_rate, Some(44100));
        assert_eq!(audio.device.as_deref(), Some("1"));
        assert_eq!(c.client, ClientFiles::Disabled);
        assert_eq!((c.video_queue_size, c.audio_queue_size), (5, 10));
    }

    #[test]
    fn camera_type_is_required_and_checked() {
        assert!(error_of(&[]).contains("--camera-type"));
        let e = error_of(&["--camera-type", "webcam"]);
        assert!(
            e.contains("--camera-type: must be one of rpi, usb, test"),
            "{e}"
        );
    }

    #[test]
    fn each_bad_value_names_its_flag_and_range() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["--quality", "0"],
                "--quality: must be between 1 and 100 (got 0)",
            ),
            (
                &["--quality", "101"],
                "--quality: must be between 1 and 100 (got 101)",
            ),
            (&["--fps", "0"], "--fps: must be between 1 and 120 (got 0)"),
            (
                &["--fps", "121"],
                "--fps: must be between 1 and 120 (got 121)",
            ),
            (
                &["--width", "0"],
                "--width: must be an even number between 16 and 4096 (got 0)",
            ),
            (&["--width", "641"], "--width: must be an even number"),
            (&["--height", "481"], "--height: must be an even number"),
            (
                &["--height", "8192"],
                "--height: must be an even number between 16 and 4096",
            ),
            (
                &["--capture-width", "3"],
                "--capture-width: must be an even number",
            ),
            (
                &["--capture-height", "0"],
                "--capture-height: must be an even number",
            ),
            (
                &["--audio-channels", "0"],
                "--audio-channels: must be between 1 and 2 (got 0)",
            ),
            (
                &["--audio-channels", "3"],
                "--audio-channels: must be between 1 and 2 (got 3)",
            ),
            (
                &["--audio-samplerate", "100"],
                "--audio-samplerate: must be between 8000",
            ),
            (
                &["--video-queue-size", "0"],
                "--video-queue-size: must be between 1 and 10000",
            ),
            (
                &["--audio-queue-size", "0"],
                "--audio-queue-size: must be between 1 and 100000",
            ),
            (
                &["--port", "0"],
                "--port: must be between 1 and 65535 (got 0)",
            ),
            (
                &["--port", "70000"],
                "--port: must be between 1 and 65535 (got 70000)",
            ),
            (
                &["--host", "no such host.invalid"],
                "--host: \"no such host.invalid\" is not",
            ),
            (
                &["--audio-device", " "],
                "--audio-device: must not be empty",
            ),
            (
                &["--public-dir", "/nonexistent"],
                "--public-dir: /nonexistent has no index.html",
            ),
        ];
        for (extra, expected) in cases {
            let mut args = vec!["--camera-type", "test"];
            args.extend_from_slice(extra);
            let e = error_of(&args);
            assert!(e.contains(expected), "{extra:?}: {e}");
            assert!(e.contains("--help"), "{e}");
        }
    }

    #[test]
    fn non_numbers_and_unknown_flags_are_errors_not_help() {
        let e = error_of(&["--camera-type", "test", "--fps", "fast"]);
        assert!(e.contains("--fps"), "{e}");
        let e = error_of(&["--camera-type", "test", "--frobnicate"]);
        assert!(e.contains("--frobnicate"), "{e}");
    }

    #[test]
    fn help_lists_every_flag() {
        let Parsed::Help(text) = parse("rpi-streamer", &["--help"]) else {
            panic!("--help should print help");
        };
        let Parsed::Help(short) = parse("rpi-streamer", &["-h"]) else {
            panic!("-h should print help");
        };
        assert_eq!(short, text);
        for flag in [
            "--camera-type",
            "--host",
            "--port",
            "--width",
            "--height",
            "--capture-width",
            "--capture-height",
            "--fps",
            "--quality",
            "--device-id",
            "--enable-audio",
            "--audio-device",
            "--audio-channels",
            "--audio-samplerate",
            "--video-queue-size",
            "--audio-queue-size",
            "--public-dir",
            "--no-client",
        ] {
            assert!(text.contains(flag), "{flag} missing from help");
        }
    }

    #[test]
    fn access_and_fault_flags_parse() {
        let c = run(&[
            "--camera-type",
            "test",
            "--auth-token",
            "s3cret-token",
            "--basic-auth",
            "me:pw",
            "--max-clients",
            "3",
            "--allowed-origin",
            "https://cam.example",
            "--allowed-origin",
            "http://10.0.0.2:8080",
            "--test-fault",
            "stall:1.5:2",
            "--test-fault",
            "fail:5:1",
        ])
        .unwrap();
        assert_eq!(c.access.token.as_deref(), Some("s3cret-token"));
        assert_eq!(c.access.basic.as_deref(), Some("me:pw"));
        assert_eq!(c.access.max_clients, 3);
        assert_eq!(c.access.allowed_origins.len(), 2);
        assert_eq!(
            c.faults,
            vec![
                Fault {
                    kind: FaultKind::Stall,
                    after: 1.5,
                    duration: 2.0
                },
                Fault {
                    kind: FaultKind::Fail,
                    after: 5.0,
                    duration: 1.0
                },
            ]
        );
        let e = error_of(&["--camera-type", "usb", "--test-fault", "stall:1:1"]);
        assert!(e.contains("only applies to --camera-type test"), "{e}");
        assert_eq!(
            run(&["--camera-type", "test"]).unwrap().access.max_clients,
            16
        );
    }

    #[test]
    fn enable_audio_builds_audio_params_with_device_default_rate() {
        let c = run(&["--camera-type", "test", "--enable-audio"]).unwrap();
        let audio = c.audio.unwrap();
        assert_eq!(audio.channels, 1);
        assert_eq!(audio.sample_rate, None);
        assert_eq!(audio.device, None);
    }

    #[test]
    fn camera_index_defaults_to_0_and_list_devices_names_the_camera_type() {
        assert_eq!(
            run(&["--camera-type", "rpi"]).unwrap().video.camera_index,
            0
        );
        let c = run(&["--camera-type", "rpi", "--camera-index", "2"]).unwrap();
        assert_eq!(c.video.camera_index, 2);
        assert!(matches!(
            parse("rpi-streamer", &["--camera-type", "rpi", "--list-devices"]),
            Parsed::ListDevices(CameraType::Rpi)
        ));
        assert!(matches!(
            parse(
                "rpi-streamer",
                &["--list-devices", "--camera-type", "bogus"]
            ),
            Parsed::Error(_)
        ));
    }
}
