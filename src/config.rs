//! The command line (argh) and its validation into a [`Config`].
//!
//! Flag names and defaults are the seed's, so existing scripts and service files keep working.
//! Every rejected value names its flag and the allowed range; the binary exits with code 2.
//!
//! Two steps: [`Args::validate`] checks the flags (and the secrets given in the environment)
//! without reading files, giving a [`Validated`]; [`Validated::resolve`] then reads the
//! secret files (`--auth-token-file`, `--basic-auth-file`) and is the only way to a
//! [`Config`], so a configured secret can never be skipped.
#![forbid(unsafe_code)]

use crate::capture::controls::{self, Input};
use crate::capture::fault::{parse_fault, Fault};
use crate::capture::test::TestScene;
use crate::capture::{AudioParams, CameraType, VideoParams};
use crate::encode::h264::{H264EncoderKind, H264Profile, H264Settings};
use crate::encode::jpeg_hw::JpegEncoderKind;
use crate::encode::orient::Orientation;
pub use crate::tls::TlsRequest;
use argh::FromArgs;
use std::io::Read as _;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
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
    /// turn the picture clockwise: 0, 90, 180 or 270 degrees (after --hflip/--vflip; 90 and 270 swap width and height on the wire) (default 0)
    #[argh(option, default = "0")]
    pub rotation: u32,
    /// mirror the picture left-right
    #[argh(switch)]
    pub hflip: bool,
    /// mirror the picture top-bottom
    #[argh(switch)]
    pub vflip: bool,
    /// set a camera control by its native name, e.g. Brightness=0.1 or AfMode=Continuous (libcamera, test), brightness=140 (V4L2, as v4l2-ctl --list-ctrls names it); repeatable; --list-devices and GET /controls list them
    #[argh(option)]
    pub camera_control: Vec<String>,
    /// exposure time in microseconds (rpicam's --shutter: the control ExposureTime)
    #[argh(option)]
    pub shutter: Option<String>,
    /// analogue gain (rpicam's --gain: AnalogueGain)
    #[argh(option)]
    pub gain: Option<String>,
    /// exposure compensation in stops (rpicam's --ev: ExposureValue)
    #[argh(option)]
    pub ev: Option<String>,
    /// white balance: auto, incandescent, tungsten, fluorescent, indoor, daylight, cloudy or custom (rpicam's --awb: AwbMode)
    #[argh(option)]
    pub awb: Option<String>,
    /// autofocus: manual, auto or continuous (rpicam's --autofocus-mode: AfMode)
    #[argh(option)]
    pub autofocus_mode: Option<String>,
    /// lens position in dioptres, 0 = infinity (rpicam's --lens-position: LensPosition; sets --autofocus-mode manual unless given)
    #[argh(option)]
    pub lens_position: Option<String>,
    /// brightness, -1.0 to 1.0, 0 = unchanged (rpicam's --brightness: Brightness)
    #[argh(option)]
    pub brightness: Option<String>,
    /// contrast, 1.0 = normal (rpicam's --contrast: Contrast)
    #[argh(option)]
    pub contrast: Option<String>,
    /// colour saturation, 1.0 = normal, 0 = greyscale (rpicam's --saturation: Saturation)
    #[argh(option)]
    pub saturation: Option<String>,
    /// sharpening, 1.0 = normal, 0 = none (rpicam's --sharpness: Sharpness)
    #[argh(option)]
    pub sharpness: Option<String>,
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
    /// require this token for /stream, /status, /metrics and /snapshot.jpg, as "Authorization: Bearer <token>" or "?token=<token>" (or set RPI_STREAMER_AUTH_TOKEN)
    #[argh(option)]
    pub auth_token: Option<String>,
    /// read the --auth-token value from this file (trailing whitespace ignored), so that it stays out of `ps`
    #[argh(option)]
    pub auth_token_file: Option<PathBuf>,
    /// require HTTP Basic credentials USER:PASSWORD for everything but /healthz (or set RPI_STREAMER_BASIC_AUTH)
    #[argh(option)]
    pub basic_auth: Option<String>,
    /// read the --basic-auth value from this file (trailing whitespace ignored), so that it stays out of `ps`
    #[argh(option)]
    pub basic_auth_file: Option<PathBuf>,
    /// threads encoding JPEG frames from raw cameras in parallel, 1-16 (default: one per
    /// core, at most 4)
    #[argh(option)]
    pub encoder_threads: Option<u32>,
    /// encoder for JPEG frames from raw cameras: auto (the hardware one if there is one), v4l2 (require the hardware V4L2 memory-to-memory encoder) or cpu (libjpeg-turbo) (default auto)
    #[argh(option, default = "String::from(\"auto\")")]
    pub jpeg_encoder: String,
    /// hardware encoders copy every picture into their own buffers instead of reading the camera's in place (DMABUF), for drivers that mishandle imported buffers
    #[argh(switch)]
    pub no_zero_copy: bool,
    /// most simultaneous stream clients, 1-1000 (default 16)
    #[argh(option, default = "16")]
    pub max_clients: u32,
    /// accept WebSocket upgrades only from this browser Origin (repeatable; default: any)
    #[argh(option)]
    pub allowed_origin: Vec<String>,
    /// encoder for /stream?video=h264 (H.264): auto (the hardware one if there is one), v4l2 (require the hardware V4L2 memory-to-memory encoder) or software (OpenH264) (default auto)
    #[argh(option, default = "String::from(\"auto\")")]
    pub h264_encoder: String,
    /// target bitrate of the H.264 stream in kbit/s, 100-50000 (default 1000)
    #[argh(option, default = "1000")]
    pub h264_bitrate: u32,
    /// most seconds between two H.264 keyframes, 1-60 (default 2)
    #[argh(option, default = "2")]
    pub keyframe_interval: u32,
    /// profile of the H.264 stream: baseline, main or high (default baseline)
    #[argh(option, default = "String::from(\"baseline\")")]
    pub h264_profile: String,
    /// what --camera-type test shows: pattern (moving) or static-noisy (a still scene with sensor-like noise) (default pattern)
    #[argh(option, default = "String::from(\"pattern\")")]
    pub test_scene: String,
    /// serve HTTPS and WSS with this certificate: a PEM file, leaf first, its chain after it (needs --tls-key; see docs/tls.md)
    #[argh(option)]
    pub tls_cert: Option<PathBuf>,
    /// the private key of --tls-cert: a PEM file (PKCS#8, RSA or EC; RSA, ECDSA or Ed25519)
    #[argh(option)]
    pub tls_key: Option<PathBuf>,
    /// serve HTTPS and WSS with a self-signed certificate for this host's names and addresses, made on first start and kept in $STATE_DIRECTORY, /var/lib/rpi-streamer or ~/.local/state/rpi-streamer
    #[argh(switch)]
    pub tls_self_signed: bool,
    /// an extra DNS name or IP address for the --tls-self-signed certificate (repeatable)
    #[argh(option)]
    pub tls_name: Vec<String>,
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
    /// Threads encoding JPEG frames (1: the capture thread does it).
    pub encoder_threads: usize,
    /// Which encoder makes JPEG frames from raw pictures (`--jpeg-encoder`).
    pub jpeg_encoder: JpegEncoderKind,
    /// Hardware encoders may read camera buffers in place (not `--no-zero-copy`).
    pub zero_copy: bool,
    /// How pictures are turned before encoding (`--rotation`, `--hflip`, `--vflip`).
    pub orientation: Orientation,
    /// Camera controls to set when the camera opens (`--camera-control` and the aliases).
    pub camera_controls: Vec<(String, Input)>,
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
    /// H.264 encoding, for clients that ask for it.
    pub h264: H264Settings,
    /// HTTPS and WSS on the same port, when a certificate was configured.
    pub tls: Option<crate::tls::Acceptor>,
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
    /// Browser origins allowed to open the stream (empty = any) and to change the camera's
    /// controls (empty = only pages from the daemon itself).
    pub allowed_origins: Vec<String>,
}

impl Access {
    /// Is `origin` one of the `--allowed-origin`s (compared ignoring case)?
    pub fn lists_origin(&self, origin: &str) -> bool {
        let origin = origin.trim();
        self.allowed_origins
            .iter()
            .any(|o| o.eq_ignore_ascii_case(origin))
    }
}

/// The environment variable that may hold the `--auth-token` value.
pub const AUTH_TOKEN_ENV: &str = "RPI_STREAMER_AUTH_TOKEN";
/// The environment variable that may hold the `--basic-auth` value.
pub const BASIC_AUTH_ENV: &str = "RPI_STREAMER_BASIC_AUTH";

/// What the environment offers: the secrets ([`AUTH_TOKEN_ENV`], [`BASIC_AUTH_ENV`]; the
/// command line wins over them; unlike argv, a process's environment is readable only by its
/// user) and where state may be kept (`STATE_DIRECTORY`, `XDG_STATE_HOME`, `HOME`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Env {
    /// The value of [`AUTH_TOKEN_ENV`], if set.
    pub auth_token: Option<String>,
    /// The value of [`BASIC_AUTH_ENV`], if set.
    pub basic_auth: Option<String>,
    /// `STATE_DIRECTORY`, set by systemd's `StateDirectory=` (colon-separated).
    pub state_directory: Option<PathBuf>,
    /// `XDG_STATE_HOME`.
    pub xdg_state_home: Option<PathBuf>,
    /// `HOME`.
    pub home: Option<PathBuf>,
}

impl Env {
    /// The variables of this process. One that is set but not UTF-8 is an error, not
    /// "unset": a secret that was meant to be required must not be silently dropped.
    pub fn from_process() -> Result<Env, ConfigError> {
        let var = |name: &'static str| match std::env::var(name) {
            Ok(value) => Ok(Some(value)),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(invalid(name, "is set but not valid UTF-8".into()))
            }
        };
        let path = |name: &str| std::env::var_os(name).map(PathBuf::from);
        Ok(Env {
            auth_token: var(AUTH_TOKEN_ENV)?,
            basic_auth: var(BASIC_AUTH_ENV)?,
            state_directory: path("STATE_DIRECTORY"),
            xdg_state_home: path("XDG_STATE_HOME"),
            home: path("HOME"),
        })
    }
}

/// A secret as validation leaves it.
#[derive(Clone, Debug, PartialEq)]
enum Secret {
    /// Already checked (from a flag or the environment).
    Value(String),
    /// To be read from this file by [`Validated::resolve`].
    File(PathBuf),
}

/// Flags that passed validation, with their secret files not yet read.
#[derive(Debug, PartialEq)]
pub struct Validated {
    /// Everything but what [`Validated::resolve`] reads or looks up: the secrets
    /// (`access.token` and `access.basic` are unset), the listen address (`listen` has the
    /// port and an unspecified address until `host` is resolved) and the client files.
    config: Config,
    /// `--host`, an IP address or a name to resolve.
    host: String,
    /// `--public-dir` and `--no-client`.
    client: ClientRequest,
    token: Option<Secret>,
    basic: Option<Secret>,
    tls: TlsRequest,
    on_command_line: Vec<&'static str>,
}

/// Where the browser client's files should come from, before the filesystem is looked at.
#[derive(Debug, PartialEq)]
enum ClientRequest {
    Disabled,
    Dir(PathBuf),
    /// The installed copy if there is one, else the built-in one.
    Default,
}

impl ClientRequest {
    /// Looks at the filesystem.
    fn resolve(&self) -> Result<ClientFiles, ConfigError> {
        Ok(match self {
            ClientRequest::Disabled => ClientFiles::Disabled,
            ClientRequest::Dir(dir) => {
                if !dir.join("index.html").is_file() {
                    return Err(invalid(
                        "--public-dir",
                        format!("{} has no index.html", dir.display()),
                    ));
                }
                ClientFiles::Dir(dir.clone())
            }
            ClientRequest::Default => {
                let installed = PathBuf::from(INSTALLED_PUBLIC_DIR);
                if installed.join("index.html").is_file() {
                    ClientFiles::Dir(installed)
                } else {
                    ClientFiles::Builtin
                }
            }
        })
    }
}

/// Secret files are a line or two; anything much longer is the wrong file.
const MAX_SECRET_FILE_BYTES: u64 = 4096;

/// Reads a secret file: its text without trailing whitespace (the newline editors add).
fn read_secret_file(flag: &'static str, path: &Path) -> Result<String, ConfigError> {
    let shown = path.display();
    let fail = |e: std::io::Error| {
        let why = match e.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_string(),
            std::io::ErrorKind::PermissionDenied => {
                "permission denied (it must be readable by the user the daemon runs as)".to_string()
            }
            _ => e.to_string(),
        };
        invalid(flag, format!("{shown}: {why}"))
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_SECRET_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(fail)?;
    if bytes.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(invalid(
            flag,
            format!("{shown}: larger than {MAX_SECRET_FILE_BYTES} bytes, not a secret file"),
        ));
    }
    let text =
        String::from_utf8(bytes).map_err(|_| invalid(flag, format!("{shown}: not UTF-8 text")))?;
    Ok(text.trim_end().to_string())
}

/// What is wrong with a token, if anything.
fn token_problem(token: &str) -> Option<&'static str> {
    (token.len() < 8 || token.chars().any(|c| c.is_whitespace() || c.is_control()))
        .then_some("must be at least 8 characters without spaces")
}

/// What is wrong with Basic credentials, if anything.
fn basic_problem(basic: &str) -> Option<&'static str> {
    (!basic
        .split_once(':')
        .is_some_and(|(u, p)| !u.is_empty() && !p.is_empty()))
    .then_some("must be USER:PASSWORD, both non-empty")
}

/// One secret's three sources: its flag, its file flag and its environment variable.
struct SecretFlags<'a> {
    flag: &'static str,
    value: &'a Option<String>,
    file_flag: &'static str,
    file: &'a Option<PathBuf>,
    var: &'static str,
    from_env: &'a Option<String>,
    problem: fn(&str) -> Option<&'static str>,
}

impl SecretFlags<'_> {
    /// Picks the source (a flag and its file form together are refused; either wins over
    /// the environment) and checks the value when it is already known.
    fn choose(&self) -> Result<Option<Secret>, ConfigError> {
        let checked = |name: &'static str, value: &str| match (self.problem)(value) {
            Some(problem) => Err(invalid(name, problem.into())),
            None => Ok(Secret::Value(value.to_string())),
        };
        match (self.value, self.file) {
            (Some(_), Some(_)) => Err(invalid(
                self.file_flag,
                format!(
                    "cannot be combined with {}: give the secret once",
                    self.flag
                ),
            )),
            (Some(value), None) => checked(self.flag, value).map(Some),
            (None, Some(path)) => Ok(Some(Secret::File(path.clone()))),
            (None, None) => self
                .from_env
                .as_deref()
                .map(|value| checked(self.var, value))
                .transpose(),
        }
    }
}

/// The value of a secret, reading its file if it has one; a bad value names the file.
fn resolve_secret(
    secret: Option<Secret>,
    file_flag: &'static str,
    problem: fn(&str) -> Option<&'static str>,
) -> Result<Option<String>, ConfigError> {
    match secret {
        None => Ok(None),
        Some(Secret::Value(value)) => Ok(Some(value)),
        Some(Secret::File(path)) => {
            let value = read_secret_file(file_flag, &path)?;
            match problem(&value) {
                Some(problem) => Err(invalid(file_flag, format!("{}: {problem}", path.display()))),
                None => Ok(Some(value)),
            }
        }
    }
}

/// Checks the `--tls-*` flags: a certificate and its key together, or `--tls-self-signed`
/// (with `--tls-name`s), never both; on a build without TLS, any of them is an error.
fn validate_tls(args: &Args, env: &Env) -> Result<TlsRequest, ConfigError> {
    let given = [
        ("--tls-cert", args.tls_cert.is_some()),
        ("--tls-key", args.tls_key.is_some()),
        ("--tls-self-signed", args.tls_self_signed),
        ("--tls-name", !args.tls_name.is_empty()),
    ];
    let Some(&(first, _)) = given.iter().find(|(_, on)| *on) else {
        return Ok(TlsRequest::Off);
    };
    if !crate::tls::AVAILABLE {
        return Err(invalid(
            first,
            "this build has no TLS (cargo feature tls); rebuild with it, or put a TLS \
             reverse proxy in front"
                .into(),
        ));
    }
    match (&args.tls_cert, &args.tls_key, args.tls_self_signed) {
        (Some(_), _, true) | (_, Some(_), true) => Err(invalid(
            "--tls-self-signed",
            "cannot be combined with --tls-cert/--tls-key: use your certificate or a \
             self-signed one"
                .into(),
        )),
        (Some(_), None, false) => Err(invalid(
            "--tls-cert",
            "needs --tls-key, the certificate's private key".into(),
        )),
        (None, Some(_), false) => Err(invalid(
            "--tls-key",
            "needs --tls-cert, the certificate it is the key of".into(),
        )),
        (Some(cert), Some(key), false) => {
            if !args.tls_name.is_empty() {
                return Err(invalid(
                    "--tls-name",
                    "only applies to --tls-self-signed (your certificate has its own names)".into(),
                ));
            }
            Ok(TlsRequest::Files {
                cert: cert.clone(),
                key: key.clone(),
            })
        }
        (None, None, false) => Err(invalid(
            "--tls-name",
            "only applies to --tls-self-signed".into(),
        )),
        (None, None, true) => {
            for name in &args.tls_name {
                if name.parse::<IpAddr>().is_err() && !crate::tls::names::is_dns_name(name) {
                    return Err(invalid(
                        "--tls-name",
                        format!("must be a DNS name or an IP address (got {name:?})"),
                    ));
                }
            }
            Ok(TlsRequest::SelfSigned {
                state_dirs: crate::tls::state_dir_candidates(
                    env.state_directory.as_deref(),
                    env.xdg_state_home.as_deref(),
                    env.home.as_deref(),
                ),
                extra_names: args.tls_name.clone(),
            })
        }
    }
}

/// Loads what [`validate_tls`] asked for.
#[cfg(feature = "tls")]
fn resolve_tls(request: &TlsRequest) -> Result<Option<crate::tls::Acceptor>, ConfigError> {
    use crate::tls::identity;
    let loaded = match request {
        TlsRequest::Off => return Ok(None),
        TlsRequest::Files { cert, key } => identity::from_files(cert, key),
        TlsRequest::SelfSigned {
            state_dirs,
            extra_names,
        } => identity::self_signed(state_dirs, &crate::tls::names::host_names(extra_names)),
    };
    loaded
        .map(Some)
        .map_err(|e| invalid(e.flag(), e.to_string()))
}

/// Without the `tls` feature, validation refuses every TLS flag.
#[cfg(not(feature = "tls"))]
fn resolve_tls(_request: &TlsRequest) -> Result<Option<crate::tls::Acceptor>, ConfigError> {
    Ok(None)
}

impl Validated {
    /// The camera type (all `--list-devices` needs).
    pub fn camera(&self) -> CameraType {
        self.config.camera
    }

    /// The secret flags given with their value in argv, which every local user can read
    /// (`ps`, /proc/PID/cmdline): worth a warning.
    pub fn secrets_on_command_line(&self) -> &[&'static str] {
        &self.on_command_line
    }

    /// What validation leaves for later because it does I/O: resolves `--host`, finds the
    /// client files (`--public-dir` must hold an index.html), reads the secret files and
    /// checks their content like the flags' values, then loads the TLS certificate
    /// (`--tls-cert`/`--tls-key`: reads and checks the PEM files; `--tls-self-signed`:
    /// reuses or makes the stored one, which logs why); errors name the flag and the file.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let mut config = self.config;
        config.listen = resolve_listen(&self.host, config.listen.port())?;
        config.client = self.client.resolve()?;
        config.access.token = resolve_secret(self.token, "--auth-token-file", token_problem)?;
        config.access.basic = resolve_secret(self.basic, "--basic-auth-file", basic_problem)?;
        config.tls = resolve_tls(&self.tls)?;
        resolve_h264_encoder(config.h264.encoder)?;
        resolve_jpeg_encoder(config.jpeg_encoder)?;
        Ok(config)
    }

    /// The TLS request, as validated (no file read yet).
    pub fn tls(&self) -> &TlsRequest {
        &self.tls
    }
}

/// `--h264-encoder v4l2` needs the hardware encoder to be there at start (later, a failing
/// one falls back to software).
fn resolve_h264_encoder(kind: H264EncoderKind) -> Result<(), ConfigError> {
    if kind != H264EncoderKind::V4l2 {
        return Ok(());
    }
    crate::encode::h264::find_hardware().map(drop).map_err(|e| {
        invalid(
            "--h264-encoder",
            format!("v4l2: {e} (use auto or software to encode with OpenH264)"),
        )
    })
}

/// `--jpeg-encoder v4l2` needs the hardware encoder to be there at start, like
/// `--h264-encoder v4l2`.
fn resolve_jpeg_encoder(kind: JpegEncoderKind) -> Result<(), ConfigError> {
    if kind != JpegEncoderKind::V4l2 {
        return Ok(());
    }
    crate::encode::jpeg_hw::find_hardware()
        .map(drop)
        .map_err(|e| {
            invalid(
                "--jpeg-encoder",
                format!("v4l2: {e} (use auto or cpu to encode with libjpeg-turbo)"),
            )
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

/// One JPEG encoder thread per core, at most 4 (a Pi 4's or 5's cores); 1 on a single core.
fn default_encoder_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
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
    if (16..=4096).contains(&value) && value.is_multiple_of(2) {
        Ok(value)
    } else {
        Err(invalid(
            flag,
            format!("must be an even number between 16 and 4096 (got {value})"),
        ))
    }
}

/// The entry of `all` whose name is `value`, else an error listing the names.
fn named<T: Copy>(
    flag: &'static str,
    value: &str,
    all: impl IntoIterator<Item = T> + Copy,
    name: impl Fn(T) -> &'static str,
) -> Result<T, ConfigError> {
    all.into_iter().find(|v| name(*v) == value).ok_or_else(|| {
        let names: Vec<&str> = all.into_iter().map(&name).collect();
        invalid(
            flag,
            format!("must be one of {} (got {value:?})", names.join(", ")),
        )
    })
}

/// Parses a `--camera-type` value.
pub fn parse_camera_type(value: &str) -> Result<CameraType, ConfigError> {
    named("--camera-type", value, CameraType::ALL, CameraType::as_str)
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

/// The rpicam-apps flags that are camera controls: flag, control, and whether it is a number.
const CONTROL_ALIASES: [(&str, &str, bool); 10] = [
    ("--shutter", "ExposureTime", true),
    ("--gain", "AnalogueGain", true),
    ("--ev", "ExposureValue", true),
    ("--awb", "AwbMode", false),
    ("--autofocus-mode", "AfMode", false),
    ("--lens-position", "LensPosition", true),
    ("--brightness", "Brightness", true),
    ("--contrast", "Contrast", true),
    ("--saturation", "Saturation", true),
    ("--sharpness", "Sharpness", true),
];

impl Args {
    /// `--camera-control NAME=VALUE` and the rpicam-style aliases, in that order (an alias
    /// wins over a `--camera-control` of the same name). Checked against the camera when it
    /// opens; here only their form.
    fn camera_controls(&self) -> Result<Vec<(String, Input)>, ConfigError> {
        let mut out = Vec::new();
        for text in &self.camera_control {
            out.push(
                controls::parse_assignment(text).map_err(|why| invalid("--camera-control", why))?,
            );
        }
        let given = [
            &self.shutter,
            &self.gain,
            &self.ev,
            &self.awb,
            &self.autofocus_mode,
            &self.lens_position,
            &self.brightness,
            &self.contrast,
            &self.saturation,
            &self.sharpness,
        ];
        for ((flag, control, numeric), value) in CONTROL_ALIASES.iter().zip(given) {
            let Some(value) = value else { continue };
            let value = value.trim();
            if *numeric && !value.parse::<f64>().is_ok_and(f64::is_finite) {
                return Err(invalid(flag, format!("must be a number (got {value:?})")));
            }
            out.push((control.to_string(), Input::Text(value.to_string())));
        }
        // rpicam: a lens position means manual focus unless a mode was given.
        if self.lens_position.is_some() && self.autofocus_mode.is_none() {
            out.push(("AfMode".into(), Input::Text("Manual".into())));
        }
        if out.len() > controls::MAX_CHANGES {
            return Err(invalid(
                "--camera-control",
                format!(
                    "at most {} controls (got {})",
                    controls::MAX_CHANGES,
                    out.len()
                ),
            ));
        }
        Ok(out)
    }

    /// Checks every value, with the secrets `env` offers, and gives what only the secret
    /// files are missing from (see [`Validated::resolve`]). Reads no file of its own.
    pub fn validate(&self, env: &Env) -> Result<Validated, ConfigError> {
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
        let rotation = Orientation::ROTATIONS
            .into_iter()
            .find(|&r| u32::from(r) == self.rotation)
            .ok_or_else(|| {
                invalid(
                    "--rotation",
                    format!("must be 0, 90, 180 or 270 (got {})", self.rotation),
                )
            })?;
        let orientation = Orientation {
            rotation,
            hflip: self.hflip,
            vflip: self.vflip,
        };
        let camera_controls = self.camera_controls()?;
        if camera == CameraType::Test {
            // Its controls are known now: refuse a bad one before starting.
            let offered = crate::capture::test::controls_at(None);
            for (name, input) in &camera_controls {
                controls::find(&offered, name)
                    .and_then(|c| c.check(input))
                    .map_err(|e| invalid("--camera-control", e.to_string()))?;
            }
        }
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
        // Resolved (DNS, the filesystem) in `Validated::resolve`; until then the port alone.
        let listen = SocketAddr::new(IpAddr::from([0, 0, 0, 0]), port);
        let client_request = match (&self.public_dir, self.no_client) {
            (_, true) => ClientRequest::Disabled,
            (Some(dir), false) => ClientRequest::Dir(dir.clone()),
            (None, false) => ClientRequest::Default,
        };
        let client = ClientFiles::Builtin;
        let token = SecretFlags {
            flag: "--auth-token",
            value: &self.auth_token,
            file_flag: "--auth-token-file",
            file: &self.auth_token_file,
            var: AUTH_TOKEN_ENV,
            from_env: &env.auth_token,
            problem: token_problem,
        }
        .choose()?;
        let basic = SecretFlags {
            flag: "--basic-auth",
            value: &self.basic_auth,
            file_flag: "--basic-auth-file",
            file: &self.basic_auth_file,
            var: BASIC_AUTH_ENV,
            from_env: &env.basic_auth,
            problem: basic_problem,
        }
        .choose()?;
        let max_clients = in_range("--max-clients", self.max_clients, 1, 1000)? as usize;
        let jpeg_encoder = named(
            "--jpeg-encoder",
            &self.jpeg_encoder,
            JpegEncoderKind::ALL,
            |k| k.as_str(),
        )?;
        let encoder_threads = match self.encoder_threads {
            Some(n) => in_range("--encoder-threads", n, 1, 16)? as usize,
            None => default_encoder_threads(),
        };
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
        let h264 = H264Settings {
            encoder: named(
                "--h264-encoder",
                &self.h264_encoder,
                H264EncoderKind::ALL,
                |k| k.as_str(),
            )?,
            bitrate_kbps: in_range("--h264-bitrate", self.h264_bitrate, 100, 50_000)?,
            keyframe_interval: Duration::from_secs(
                in_range("--keyframe-interval", self.keyframe_interval, 1, 60)?.into(),
            ),
            profile: named(
                "--h264-profile",
                &self.h264_profile,
                H264Profile::ALL,
                |p| p.as_str(),
            )?,
        };
        let scene = named("--test-scene", &self.test_scene, TestScene::ALL, |s| {
            s.as_str()
        })?;
        if scene != TestScene::Pattern && camera != CameraType::Test {
            return Err(invalid(
                "--test-scene",
                "only applies to --camera-type test".into(),
            ));
        }
        let faults = self
            .test_fault
            .iter()
            .map(|f| parse_fault(f).map_err(|why| invalid("--test-fault", why)))
            .collect::<Result<Vec<_>, _>>()?;
        if !faults.is_empty() && camera != CameraType::Test {
            return Err(invalid(
                "--test-fault",
                "only applies to --camera-type test".into(),
            ));
        }
        let config = Config {
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
                scene,
                mirror: {
                    let (hflip, vflip, _) = orientation.split_mirror();
                    (hflip, vflip)
                },
            },
            quality,
            encoder_threads,
            jpeg_encoder,
            zero_copy: !self.no_zero_copy,
            orientation,
            camera_controls,
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
                token: None,
                basic: None,
                max_clients,
                allowed_origins: self.allowed_origin.clone(),
            },
            faults,
            h264,
            tls: None,
        };
        let on_command_line = [
            ("--auth-token", self.auth_token.is_some()),
            ("--basic-auth", self.basic_auth.is_some()),
        ]
        .into_iter()
        .filter_map(|(flag, given)| given.then_some(flag))
        .collect();
        Ok(Validated {
            config,
            host: self.host.clone(),
            client: client_request,
            token,
            basic,
            tls: validate_tls(self, env)?,
            on_command_line,
        })
    }
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Parsed {
    /// Run with this configuration once its secret files are read ([`Validated::resolve`]).
    Run(Box<Validated>),
    /// Print the devices of this camera type and exit (`--list-devices`).
    ListDevices(crate::capture::CameraType),
    /// Print this (help) on stdout and exit 0.
    Help(String),
    /// Print this error on stderr and exit 2.
    Error(String),
}

/// How main prints a configuration error (it then exits with code 2).
pub fn error_text(program: &str, e: &ConfigError) -> String {
    format!("error: {e}\nRun {program} --help for every flag.")
}

/// Parses and validates `args` (without the program name) with the secrets in `env`.
pub fn parse(program: &str, args: &[&str], env: &Env) -> Parsed {
    // argh knows only --help; accept the usual short form too.
    let args: Vec<&str> = args
        .iter()
        .map(|a| if *a == "-h" { "--help" } else { a })
        .collect();
    match Args::from_args(&[program], &args) {
        Ok(parsed) => match parsed.validate(env) {
            Ok(valid) if parsed.list_devices => Parsed::ListDevices(valid.camera()),
            Ok(valid) => Parsed::Run(Box::new(valid)),
            Err(e) => Parsed::Error(error_text(program, &e)),
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
    use crate::capture::fault::FaultKind;

    fn run(args: &[&str]) -> Result<Config, String> {
        run_with_env(args, &Env::default())
    }

    fn run_with_env(args: &[&str], env: &Env) -> Result<Config, String> {
        match parse("rpi-streamer", args, env) {
            Parsed::Run(valid) => valid.resolve().map_err(|e| error_text("rpi-streamer", &e)),
            Parsed::ListDevices(camera) => Err(format!("list: {camera:?}")),
            Parsed::Help(text) => Err(format!("help: {text}")),
            Parsed::Error(text) => Err(text),
        }
    }

    #[test]
    fn usb_list_devices_and_device_takes_a_path() {
        assert!(matches!(
            parse(
                "rpi-streamer",
                &["--camera-type", "usb", "--list-devices"],
                &Env::default()
            ),
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
    fn validation_looks_nothing_up_and_resolving_does_with_the_same_messages() {
        let args = [
            "--camera-type",
            "test",
            "--host",
            "no-such-host.invalid",
            "--public-dir",
            "/nonexistent/public",
        ];
        // Validation alone (what --list-devices needs) succeeds: no DNS, no filesystem.
        let Parsed::Run(valid) = parse("rpi-streamer", &args, &Env::default()) else {
            panic!("validation failed");
        };
        let e = valid.resolve().expect_err("the host cannot resolve");
        assert_eq!(e.flag, "--host", "{e}");
        let e = error_of(&[
            "--camera-type",
            "test",
            "--public-dir",
            "/nonexistent/public",
        ]);
        assert!(
            e.contains("--public-dir: /nonexistent/public has no index.html"),
            "{e}"
        );
    }

    #[test]
    fn orientation_flags_default_to_none_and_take_only_quarter_turns() {
        let c = run(&["--camera-type", "test"]).unwrap();
        assert!(c.orientation.is_identity());
        let c = run(&[
            "--camera-type",
            "test",
            "--rotation",
            "270",
            "--hflip",
            "--vflip",
        ])
        .unwrap();
        assert_eq!(
            c.orientation,
            Orientation {
                rotation: 270,
                hflip: true,
                vflip: true
            }
        );
        for bad in ["45", "360", "-90"] {
            let e = error_of(&["--camera-type", "test", "--rotation", bad]);
            assert!(e.contains("--rotation"), "{bad}: {e}");
        }
        let e = error_of(&["--camera-type", "test", "--rotation", "45"]);
        assert!(
            e.contains("--rotation: must be 0, 90, 180 or 270 (got 45)"),
            "{e}"
        );
    }

    #[test]
    fn h264_flags_have_their_defaults_and_the_test_scene_needs_the_test_camera() {
        let c = run(&["--camera-type", "test"]).unwrap();
        assert_eq!(
            c.h264,
            H264Settings {
                encoder: H264EncoderKind::Auto,
                bitrate_kbps: crate::encode::h264::DEFAULT_BITRATE_KBPS,
                keyframe_interval: Duration::from_secs(2),
                profile: H264Profile::Baseline,
            }
        );
        assert_eq!(c.video.scene, TestScene::Pattern);
        let c = run(&[
            "--camera-type",
            "test",
            "--h264-profile",
            "high",
            "--h264-bitrate",
            "4000",
            "--test-scene",
            "static-noisy",
        ])
        .unwrap();
        assert_eq!(c.h264.profile, H264Profile::High);
        assert_eq!(c.h264.bitrate_kbps, 4000);
        assert_eq!(c.video.scene, TestScene::StaticNoisy);
        let e = error_of(&["--camera-type", "usb", "--test-scene", "static-noisy"]);
        assert!(
            e.contains("--test-scene: only applies to --camera-type test"),
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
            (
                &["--h264-bitrate", "99"],
                "--h264-bitrate: must be between 100 and 50000 (got 99)",
            ),
            (
                &["--keyframe-interval", "0"],
                "--keyframe-interval: must be between 1 and 60 (got 0)",
            ),
            (
                &["--h264-profile", "extended"],
                "--h264-profile: must be one of baseline, main, high (got \"extended\")",
            ),
            (
                &["--h264-encoder", "hardware"],
                "--h264-encoder: must be one of auto, v4l2, software (got \"hardware\")",
            ),
            (
                &["--test-scene", "night"],
                "--test-scene: must be one of pattern, static-noisy (got \"night\")",
            ),
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
            (
                &["--auth-token", "short"],
                "--auth-token: must be at least 8 characters without spaces",
            ),
            (
                &["--basic-auth", "nocolon"],
                "--basic-auth: must be USER:PASSWORD, both non-empty",
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
        let Parsed::Help(text) = parse("rpi-streamer", &["--help"], &Env::default()) else {
            panic!("--help should print help");
        };
        let Parsed::Help(short) = parse("rpi-streamer", &["-h"], &Env::default()) else {
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
            "--auth-token",
            "--auth-token-file",
            "--basic-auth",
            "--basic-auth-file",
            "--tls-cert",
            "--tls-key",
            "--tls-self-signed",
            "--tls-name",
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
            parse(
                "rpi-streamer",
                &["--camera-type", "rpi", "--list-devices"],
                &Env::default()
            ),
            Parsed::ListDevices(CameraType::Rpi)
        ));
        assert!(matches!(
            parse(
                "rpi-streamer",
                &["--list-devices", "--camera-type", "bogus"],
                &Env::default()
            ),
            Parsed::Error(_)
        ));
    }

    /// A file in a fresh folder of the temporary directory, removed with it at drop.
    struct SecretFile {
        dir: PathBuf,
        path: PathBuf,
    }

    impl SecretFile {
        fn new(test: &str, content: &[u8]) -> SecretFile {
            let dir = std::env::temp_dir()
                .join(format!("rpi-streamer-config-{}-{test}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("temporary folder");
            let path = dir.join("secret");
            std::fs::write(&path, content).expect("write the secret file");
            SecretFile { dir, path }
        }

        fn arg(&self) -> &str {
            self.path.to_str().expect("temporary paths are UTF-8")
        }
    }

    impl Drop for SecretFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn secrets_are_read_from_files_without_their_trailing_newline() {
        let token = SecretFile::new("token", b"s3cret-token\n");
        let basic = SecretFile::new("basic", b"me:pass word \r\n");
        let c = run(&[
            "--camera-type",
            "test",
            "--auth-token-file",
            token.arg(),
            "--basic-auth-file",
            basic.arg(),
        ])
        .unwrap();
        assert_eq!(c.access.token.as_deref(), Some("s3cret-token"));
        assert_eq!(c.access.basic.as_deref(), Some("me:pass word"));
    }

    #[test]
    fn validation_reads_no_secret_file_and_resolving_names_flag_and_path() {
        let args = [
            "--camera-type",
            "test",
            "--auth-token-file",
            "/nonexistent/auth-token",
        ];
        let Parsed::Run(valid) = parse("rpi-streamer", &args, &Env::default()) else {
            panic!("a missing secret file must not fail validation");
        };
        let e = valid.resolve().unwrap_err().to_string();
        assert_eq!(
            e,
            "--auth-token-file: /nonexistent/auth-token: no such file"
        );
        // Bad content is refused like the flag's value, naming the file, not echoing it.
        let short = SecretFile::new("short", b"abc\n");
        let e = error_of(&["--camera-type", "test", "--auth-token-file", short.arg()]);
        assert!(
            e.contains(&format!(
                "--auth-token-file: {}: must be at least 8 characters",
                short.arg()
            )),
            "{e}"
        );
        let no_colon = SecretFile::new("no-colon", b"mepassword\n");
        let e = error_of(&["--camera-type", "test", "--basic-auth-file", no_colon.arg()]);
        assert!(
            e.contains("--basic-auth-file: ") && e.contains("must be USER:PASSWORD"),
            "{e}"
        );
        assert!(!e.contains("mepassword"), "{e}");
        let huge = SecretFile::new("huge", &[b'x'; 5000]);
        let e = error_of(&["--camera-type", "test", "--auth-token-file", huge.arg()]);
        assert!(e.contains("larger than 4096 bytes"), "{e}");
        let binary = SecretFile::new("binary", b"\xff\xfe12345678");
        let e = error_of(&["--camera-type", "test", "--auth-token-file", binary.arg()]);
        assert!(e.contains("not UTF-8 text"), "{e}");
    }

    #[test]
    fn a_secret_flag_and_its_file_form_together_are_refused() {
        let file = SecretFile::new("both", b"s3cret-token\n");
        let e = error_of(&[
            "--camera-type",
            "test",
            "--auth-token",
            "s3cret-token",
            "--auth-token-file",
            file.arg(),
        ]);
        assert!(
            e.contains("--auth-token-file: cannot be combined with --auth-token"),
            "{e}"
        );
        let e = error_of(&[
            "--camera-type",
            "test",
            "--basic-auth",
            "me:pw",
            "--basic-auth-file",
            file.arg(),
        ]);
        assert!(
            e.contains("--basic-auth-file: cannot be combined with --basic-auth"),
            "{e}"
        );
    }

    #[test]
    fn secrets_come_from_the_environment_unless_the_command_line_has_them() {
        let env = Env {
            auth_token: Some("env-token-123".into()),
            basic_auth: Some("env:pw".into()),
            ..Env::default()
        };
        let c = run_with_env(&["--camera-type", "test"], &env).unwrap();
        assert_eq!(c.access.token.as_deref(), Some("env-token-123"));
        assert_eq!(c.access.basic.as_deref(), Some("env:pw"));
        let file = SecretFile::new("env", b"file-token-123\n");
        let c = run_with_env(
            &[
                "--camera-type",
                "test",
                "--auth-token-file",
                file.arg(),
                "--basic-auth",
                "flag:pw",
            ],
            &env,
        )
        .unwrap();
        assert_eq!(c.access.token.as_deref(), Some("file-token-123"));
        assert_eq!(c.access.basic.as_deref(), Some("flag:pw"));
        let Parsed::Run(valid) = parse(
            "rpi-streamer",
            &["--camera-type", "test", "--basic-auth", "flag:pw"],
            &env,
        ) else {
            panic!("valid flags");
        };
        assert_eq!(valid.secrets_on_command_line(), ["--basic-auth"]);
        // A bad value names the variable; an empty one is refused, not taken as "no auth".
        let bad = Env {
            auth_token: Some(String::new()),
            basic_auth: None,
            ..Env::default()
        };
        let e = run_with_env(&["--camera-type", "test"], &bad).unwrap_err();
        assert!(
            e.contains("RPI_STREAMER_AUTH_TOKEN: must be at least 8 characters"),
            "{e}"
        );
        let bad = Env {
            auth_token: None,
            basic_auth: Some("nocolon".into()),
            ..Env::default()
        };
        let e = run_with_env(&["--camera-type", "test"], &bad).unwrap_err();
        assert!(
            e.contains("RPI_STREAMER_BASIC_AUTH: must be USER:PASSWORD"),
            "{e}"
        );
    }

    #[cfg(feature = "tls")]
    #[test]
    fn tls_flags_come_in_pairs_and_exclude_each_other() {
        let cases: &[(&[&str], &str)] = &[
            (&["--tls-cert", "c.pem"], "--tls-cert: needs --tls-key"),
            (&["--tls-key", "k.pem"], "--tls-key: needs --tls-cert"),
            (
                &[
                    "--tls-self-signed",
                    "--tls-cert",
                    "c.pem",
                    "--tls-key",
                    "k.pem",
                ],
                "--tls-self-signed: cannot be combined with --tls-cert/--tls-key",
            ),
            (
                &["--tls-name", "cam"],
                "--tls-name: only applies to --tls-self-signed",
            ),
            (
                &["--tls-self-signed", "--tls-name", "bad name"],
                "--tls-name: must be a DNS name or an IP address (got \"bad name\")",
            ),
        ];
        for (extra, expected) in cases {
            let mut args = vec!["--camera-type", "test"];
            args.extend_from_slice(extra);
            let e = error_of(&args);
            assert!(e.contains(expected), "{extra:?}: {e}");
        }
        let Parsed::Run(valid) = parse(
            "rpi-streamer",
            &[
                "--camera-type",
                "test",
                "--tls-cert",
                "/nonexistent/c.pem",
                "--tls-key",
                "k",
            ],
            &Env::default(),
        ) else {
            panic!("validation reads no certificate file");
        };
        assert_eq!(
            valid.resolve().unwrap_err().to_string(),
            "--tls-cert: /nonexistent/c.pem: no such file"
        );
        let env = Env {
            state_directory: Some("/run/state/rpi-streamer".into()),
            ..Env::default()
        };
        let Parsed::Run(valid) = parse(
            "rpi-streamer",
            &[
                "--camera-type",
                "test",
                "--tls-self-signed",
                "--tls-name",
                "10.0.0.9",
            ],
            &env,
        ) else {
            panic!("valid TLS flags");
        };
        assert_eq!(
            valid.tls(),
            &TlsRequest::SelfSigned {
                state_dirs: vec!["/run/state/rpi-streamer".into()],
                extra_names: vec!["10.0.0.9".into()],
            }
        );
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn a_build_without_tls_refuses_the_tls_flags() {
        for flag in [&["--tls-self-signed"][..], &["--tls-cert", "c.pem"]] {
            let mut args = vec!["--camera-type", "test"];
            args.extend_from_slice(flag);
            let e = error_of(&args);
            assert!(
                e.contains(&format!("{}: this build has no TLS", flag[0])),
                "{e}"
            );
        }
    }
}
