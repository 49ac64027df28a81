//! systemd's notification protocol (`sd_notify`) without linking libsystemd: `READY=1` once
//! the daemon serves, `WATCHDOG=1` while capture is alive, `STOPPING=1` on shutdown.
//!
//! The watchdog ping is withheld when the video thread has produced nothing (not even a
//! placeholder) for [`CAPTURE_STALL_LIMIT`]: a capture thread wedged in a driver call then
//! makes systemd restart the daemon (`WatchdogSec=` in the unit).
#![forbid(unsafe_code)]

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// The video thread publishes at least once a second while alive (frames or placeholders).
pub const CAPTURE_STALL_LIMIT: Duration = Duration::from_secs(3);

/// A connection to the service manager's notification socket.
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
}

/// Parses `NOTIFY_SOCKET`: a path, or `@name` for the abstract namespace.
fn socket_addr(spec: &str) -> std::io::Result<SocketAddr> {
    match spec.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())
        }
        None => SocketAddr::from_pathname(spec),
    }
}

impl Notifier {
    /// The notifier for `NOTIFY_SOCKET`, if the daemon runs under a service manager.
    pub fn from_env() -> Option<Notifier> {
        let spec = std::env::var("NOTIFY_SOCKET").ok()?;
        let addr = match socket_addr(&spec) {
            Ok(a) => a,
            Err(e) => {
                log::warn!("NOTIFY_SOCKET={spec:?} unusable: {e}");
                return None;
            }
        };
        match UnixDatagram::unbound() {
            Ok(socket) => Some(Notifier { socket, addr }),
            Err(e) => {
                log::warn!("cannot create the notification socket: {e}");
                None
            }
        }
    }

    /// Sends one notification (e.g. `READY=1`); failures are logged, not fatal.
    pub fn send(&self, message: &str) {
        if let Err(e) = self.socket.send_to_addr(message.as_bytes(), &self.addr) {
            log::warn!("sd_notify {message:?}: {e}");
        }
    }
}

/// Half of `WATCHDOG_USEC` when the watchdog is enabled for this process.
pub fn watchdog_interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim() != std::process::id().to_string() {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_reach_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("rpi-streamer-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            socket: UnixDatagram::unbound().unwrap(),
            addr: socket_addr(path.to_str().unwrap()).unwrap(),
        };
        n.send("READY=1");
        let mut buf = [0u8; 64];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn abstract_names_are_accepted() {
        assert!(socket_addr("@rpi-streamer-test").is_ok());
    }
}
