//! Wiring at run time: listener, capture threads, hub and server on one executor, and a
//! clean shutdown on SIGINT/SIGTERM (clients closed with 1001, threads joined, exit 0).
#![forbid(unsafe_code)]

use crate::capture::controls::ControlBoard;
use crate::capture::CameraType;
use crate::clock::MonoTime;
use crate::config::Config;
use crate::notify::{watchdog_interval, Notifier, CAPTURE_STALL_LIMIT};
use crate::pipeline::{Outputs, Pipelines};
use crate::server::Server;
use crate::stats::Stats;
use crate::stream::hub::Hub;
use async_signal::{Signal, Signals};
use futures_lite::StreamExt;
use smol::{Async, LocalExecutor, Timer};
use std::net::TcpListener;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Binding the listening socket failed.
    #[error("listening on {addr}: {source}{hint}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
        /// What to try.
        hint: &'static str,
    },
    /// Another startup step failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Runs until SIGINT or SIGTERM.
pub fn run(config: Config) -> Result<(), DaemonError> {
    let listener = Async::<TcpListener>::bind(config.listen).map_err(|source| {
        let hint = match source.kind() {
            std::io::ErrorKind::AddrInUse => " (is another streamer running? pick --port)",
            std::io::ErrorKind::PermissionDenied => " (ports below 1024 need root)",
            _ => "",
        };
        DaemonError::Listen {
            addr: config.listen,
            source,
            hint,
        }
    })?;
    let local = listener
        .get_ref()
        .local_addr()
        .map_err(|source| DaemonError::Io {
            context: "reading the listening address",
            source,
        })?;
    let mut signals =
        Signals::new([Signal::Term, Signal::Int]).map_err(|source| DaemonError::Io {
            context: "installing signal handlers",
            source,
        })?;

    let stats = Arc::new(Stats::default());
    let (video_tx, video_rx) = async_channel::bounded(config.video_queue_size);
    let (h264_tx, h264_rx) = async_channel::bounded(config.video_queue_size);
    let (audio_tx, audio_rx) = async_channel::bounded(config.audio_queue_size);
    let hub = Hub::new(config.audio_queue_size, config.max_audio_age, stats.clone());
    let controls = ControlBoard::new(config.camera_controls.clone());
    let outputs = Outputs {
        video: video_tx,
        h264: h264_tx,
        audio: audio_tx,
        demand: hub.demand(),
        controls: controls.clone(),
    };
    let pipelines =
        Pipelines::start(&config, outputs, stats.clone()).map_err(|source| DaemonError::Io {
            context: "starting capture threads",
            source,
        })?;
    #[cfg(feature = "tls")]
    if let Some(tls) = &config.tls {
        log::info!(
            "TLS: {}; SHA-256 fingerprint {} (compare it with what the browser shows)",
            tls.origin,
            tls.fingerprint
        );
    }
    log::info!(
        "rpi-streamer {} listening on {}://{local} (WebSocket at /stream): camera {} \
         {}x{} @ {} fps q{}, audio {}, client {}",
        env!("CARGO_PKG_VERSION"),
        if config.tls.is_some() {
            "https"
        } else {
            "http"
        },
        config.camera.as_str(),
        config.video.width,
        config.video.height,
        config.video.fps,
        config.quality,
        match &config.audio {
            // No device with the test camera: the synthetic tone, whose rate is known now.
            Some(a) if config.camera == CameraType::Test && a.device.is_none() => format!(
                "{} ch @ {} Hz synthetic tone",
                a.channels,
                a.sample_rate
                    .unwrap_or(crate::capture::test::TONE_SAMPLE_RATE)
            ),
            Some(a) => format!(
                "{} ch @ {} from {}",
                a.channels,
                a.sample_rate
                    .map_or("the device's rate".to_string(), |r| format!("{r} Hz")),
                a.device.as_deref().unwrap_or("default")
            ),
            None => "off".into(),
        },
        match &config.client {
            crate::config::ClientFiles::Disabled => "off".to_string(),
            crate::config::ClientFiles::Builtin => "built-in".to_string(),
            crate::config::ClientFiles::Dir(d) => d.display().to_string(),
        }
    );

    let ex = Rc::new(LocalExecutor::new());
    let server = Rc::new(Server {
        config,
        hub: hub.clone(),
        stats: stats.clone(),
        tls_handshakes: std::cell::Cell::new(0),
        controls,
    });
    ex.spawn(hub.clone().run(video_rx, h264_rx, audio_rx))
        .detach();
    ex.spawn(server.accept_loop(ex.clone(), listener)).detach();
    let notifier = Notifier::from_env().map(Rc::new);
    if let Some(n) = &notifier {
        n.send(&format!("READY=1\nSTATUS=streaming on {local}"));
        if let Some(interval) = watchdog_interval() {
            log::info!(
                "systemd watchdog: pinging every {} ms while capture is alive",
                interval.as_millis()
            );
            ex.spawn(watchdog(n.clone(), interval, stats.clone()))
                .detach();
        }
    }

    // smol::block_on drives the reactor on this thread while it would otherwise sleep, so a
    // socket turning ready wakes the executor directly, not through the async-io thread.
    let signal = smol::block_on(ex.run(async {
        let signal = signals.next().await;
        // Stop accepting, tell every session to close with 1001, and give them a moment.
        hub.close_all();
        let deadline = Instant::now() + Duration::from_millis(500);
        while hub.client_count() > 0 && Instant::now() < deadline {
            Timer::after(Duration::from_millis(10)).await;
        }
        signal
    }));
    log::info!(
        "{} received, shutting down",
        match signal {
            Some(Ok(Signal::Int)) => "SIGINT",
            _ => "SIGTERM",
        }
    );
    if let Some(n) = &notifier {
        n.send("STOPPING=1");
    }
    pipelines.stop();
    log::debug!("capture threads stopped");
    drop(ex);
    Ok(())
}

/// Pings the systemd watchdog while the video thread keeps publishing.
async fn watchdog(notifier: Rc<Notifier>, interval: Duration, stats: Arc<Stats>) {
    let mut withheld = false;
    loop {
        let alive = Stats::instant(&stats.last_output)
            .is_some_and(|t| MonoTime::now().since(t) < CAPTURE_STALL_LIMIT);
        if alive {
            if withheld {
                log::info!("capture is alive again; watchdog pings resume");
                withheld = false;
            }
            notifier.send("WATCHDOG=1");
        } else if !withheld {
            log::warn!("capture thread stalled; withholding watchdog pings");
            withheld = true;
        }
        Timer::after(interval).await;
    }
}
