//! HTTPS and WSS on the daemon's one port: which certificate, and where a self-signed one is
//! kept.
//!
//! Browsers give WebCodecs (H.264 decoding) only to a secure context, and a Pi opened as
//! `http://pi.local:8080/` is not one; with `--tls-cert FILE --tls-key FILE` or
//! `--tls-self-signed` every endpoint is served over TLS instead (docs/tls.md).
//!
//! The flags are checked without I/O into a [`TlsRequest`] (see [`crate::config`]); resolving
//! it reads the PEM files, or finds, checks and if need be makes the self-signed certificate
//! in the state directory ([`state_dir_candidates`]), giving an [`Acceptor`]: the rustls
//! server configuration and the certificate's SHA-256 fingerprint, logged at start so that
//! a user can compare it with what the browser shows. The connections themselves are
//! [`crate::server::tls`]. Everything here but the request and the directory choice needs
//! the cargo feature `tls` (rustls on ring, rcgen).
#![forbid(unsafe_code)]

#[cfg(feature = "tls")]
pub mod identity;
pub mod names;

use std::path::{Path, PathBuf};

/// What the command line asks for, checked but with nothing read yet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum TlsRequest {
    /// Plain HTTP (the default).
    #[default]
    Off,
    /// `--tls-cert` and `--tls-key`: the user's certificate chain and key, PEM.
    Files {
        /// The certificate chain, leaf first.
        cert: PathBuf,
        /// Its private key.
        key: PathBuf,
    },
    /// `--tls-self-signed`: made for this host's names, kept in the state directory.
    SelfSigned {
        /// Where to keep it, in order of preference ([`state_dir_candidates`]).
        state_dirs: Vec<PathBuf>,
        /// `--tls-name` values, on top of the host's own names.
        extra_names: Vec<String>,
    },
}

/// The folder of ours under `/var/lib`, `$XDG_STATE_HOME` and `~/.local/state`.
pub const STATE_SUBDIR: &str = "rpi-streamer";
/// The system-wide state directory, used when it is writable (root, or made for our user).
pub const SYSTEM_STATE_DIR: &str = "/var/lib/rpi-streamer";

/// Where `--tls-self-signed` may keep its certificate, best first: systemd's
/// `StateDirectory=` (the first entry of `$STATE_DIRECTORY`) when set, and then only it;
/// else [`SYSTEM_STATE_DIR`], `$XDG_STATE_HOME/rpi-streamer`, `$HOME/.local/state/rpi-streamer`
/// (relative values are ignored, as the XDG spec says). The first one that is writable wins.
pub fn state_dir_candidates(
    state_directory: Option<&Path>,
    xdg_state_home: Option<&Path>,
    home: Option<&Path>,
) -> Vec<PathBuf> {
    let absolute = |p: Option<&Path>| p.filter(|p| p.is_absolute()).map(Path::to_path_buf);
    // systemd joins several StateDirectory= entries with colons.
    let systemd = state_directory
        .and_then(|dirs| dirs.to_str())
        .and_then(|dirs| dirs.split(':').find(|d| !d.is_empty()))
        .map(PathBuf::from);
    if let Some(dir) = absolute(systemd.as_deref()) {
        return vec![dir];
    }
    let mut dirs = vec![PathBuf::from(SYSTEM_STATE_DIR)];
    dirs.extend(absolute(xdg_state_home).map(|d| d.join(STATE_SUBDIR)));
    dirs.extend(absolute(home).map(|h| h.join(".local/state").join(STATE_SUBDIR)));
    dirs
}

/// What the daemon serves TLS with: built once at start, shared by every connection.
#[cfg(feature = "tls")]
#[derive(Clone)]
pub struct Acceptor {
    /// The rustls server side (ring provider, TLS 1.2 and 1.3, ALPN http/1.1).
    pub config: std::sync::Arc<rustls::ServerConfig>,
    /// SHA-256 of the leaf certificate as browsers show it: 32 hex pairs joined by colons.
    pub fingerprint: String,
    /// Where the certificate came from and what it is for, for the start-up log.
    pub origin: String,
}

/// Without the `tls` feature there is nothing to accept with: no value of this type exists.
#[cfg(not(feature = "tls"))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Acceptor {}

#[cfg(feature = "tls")]
impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor")
            .field("fingerprint", &self.fingerprint)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "tls")]
impl PartialEq for Acceptor {
    fn eq(&self, other: &Acceptor) -> bool {
        self.fingerprint == other.fingerprint && self.origin == other.origin
    }
}

/// True when this build can serve TLS (cargo feature `tls`).
pub const AVAILABLE: bool = cfg!(feature = "tls");

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs(sd: Option<&str>, xdg: Option<&str>, home: Option<&str>) -> Vec<PathBuf> {
        state_dir_candidates(sd.map(Path::new), xdg.map(Path::new), home.map(Path::new))
    }

    #[test]
    fn systemds_state_directory_wins_and_is_the_only_choice() {
        assert_eq!(
            dirs(
                Some("/var/lib/cam:/var/lib/other"),
                Some("/x"),
                Some("/root")
            ),
            [PathBuf::from("/var/lib/cam")]
        );
    }

    #[test]
    fn without_systemd_var_lib_then_xdg_then_home() {
        assert_eq!(
            dirs(None, Some("/home/u/.state"), Some("/home/u")),
            [
                PathBuf::from("/var/lib/rpi-streamer"),
                PathBuf::from("/home/u/.state/rpi-streamer"),
                PathBuf::from("/home/u/.local/state/rpi-streamer"),
            ]
        );
        assert_eq!(
            dirs(Some(""), Some("relative"), None),
            [PathBuf::from("/var/lib/rpi-streamer")],
            "empty and relative values are ignored"
        );
    }
}
