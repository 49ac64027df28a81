//! The daemon's certificate: the user's PEM files, or a self-signed one kept in the state
//! directory, made on first start and reused while it is valid for this host's names.
//!
//! A stored certificate is checked the way a client would check it, with rustls' own WebPKI
//! verifier and the certificate as its only trust anchor: for every name and address the host
//! has now, at a time [`RENEW_BEFORE`] from now. So a certificate that has expired, is about
//! to, is not valid yet (a clock set back), misses a new address, or whose key no longer
//! matches is made anew, and the log says which. A new one is ECDSA P-256, valid for
//! [`VALIDITY_DAYS`] (Apple's limit for any TLS server certificate), for server
//! authentication only.
#![forbid(unsafe_code)]

use super::Acceptor;
use rustls::client::danger::ServerCertVerifier as _;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The stored self-signed certificate, in the state directory.
pub const CERT_FILE: &str = "self-signed-cert.pem";
/// Its private key (mode 0600).
pub const KEY_FILE: &str = "self-signed-key.pem";
/// How long a new self-signed certificate is valid.
pub const VALIDITY_DAYS: u64 = 825;
/// A stored certificate that expires sooner than this is replaced at start.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 86_400);
/// PEM files larger than this are not certificates or keys.
const MAX_PEM_BYTES: u64 = 1 << 20;

/// Why there is no certificate to serve with; each names the flag it comes from.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file cannot be read or holds nothing usable.
    #[error("{}: {why}", path.display())]
    File {
        /// `--tls-cert` or `--tls-key`.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// rustls refused the certificate and key together.
    #[error("{}: {why}", key.display())]
    Refused {
        /// The key file.
        key: PathBuf,
        /// rustls' reason, with a hint.
        why: String,
    },
    /// None of the state directories can be written.
    #[error(
        "no writable state directory for the certificate ({tried}); set STATE_DIRECTORY \
         (systemd's StateDirectory= does) or XDG_STATE_HOME"
    )]
    NoStateDir {
        /// Each directory tried and why it failed.
        tried: String,
    },
    /// Writing the new certificate or key failed.
    #[error("writing {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// rcgen could not make the certificate.
    #[error("making the certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

impl TlsError {
    /// The flag a user would change: `--tls-cert`, `--tls-key` or `--tls-self-signed`.
    pub fn flag(&self) -> &'static str {
        match self {
            TlsError::File { flag, .. } => flag,
            TlsError::Refused { .. } => "--tls-key",
            _ => "--tls-self-signed",
        }
    }
}

/// The crypto provider everything here uses: ring (see Cargo.toml for why not aws-lc-rs).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// SHA-256 of a certificate, `AB:CD:…` as browsers and `openssl x509 -fingerprint -sha256`
/// show it.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    ring::digest::digest(&ring::digest::SHA256, cert)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn read_pem(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let fail = |why: String| TlsError::File {
        flag,
        path: path.to_path_buf(),
        why,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_PEM_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| {
            fail(match e.kind() {
                std::io::ErrorKind::NotFound => "no such file".into(),
                std::io::ErrorKind::PermissionDenied => {
                    "permission denied (it must be readable by the user the daemon runs as)".into()
                }
                _ => e.to_string(),
            })
        })?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(fail(format!(
            "larger than {MAX_PEM_BYTES} bytes, not a PEM file"
        )));
    }
    Ok(bytes)
}

fn pem_problem(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a PEM block has no END line".into(),
        pem::Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed".into(),
        pem::Error::Base64Decode(why) => format!("a PEM block is not valid base64 ({why})"),
        other => format!("{other:?}"),
    }
}

/// The certificates of a PEM file, in order (leaf first, then its chain).
pub fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_pem("--tls-cert", path)?;
    let fail = |why: String| TlsError::File {
        flag: "--tls-cert",
        path: path.to_path_buf(),
        why,
    };
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(pem_problem(&e)))?;
    if chain.is_empty() {
        let hint = if PrivateKeyDer::from_pem_slice(&bytes).is_ok() {
            "it holds a private key, not a certificate: are --tls-cert and --tls-key swapped?"
        } else {
            "no PEM certificate in it (want -----BEGIN CERTIFICATE-----)"
        };
        return Err(fail(hint.into()));
    }
    Ok(chain)
}

/// The first private key of a PEM file: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_pem("--tls-key", path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::File {
        flag: "--tls-key",
        path: path.to_path_buf(),
        why: match e {
            pem::Error::NoItemsFound => {
                if CertificateDer::pem_slice_iter(&bytes).any(|c| c.is_ok()) {
                    "it holds a certificate, not a private key: are --tls-cert and --tls-key \
                     swapped?"
                        .into()
                } else {
                    "no PEM private key in it (want PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE \
                     KEY)"
                        .into()
                }
            }
            other => pem_problem(&other),
        },
    })
}

/// True when `/proc/cpuinfo` text lists the `aes` flag (x86 AES-NI, the ARMv8 crypto
/// extensions); unreadable text counts as yes, keeping rustls' default order.
pub fn cpu_has_aes(cpuinfo: &str) -> bool {
    let mut flag_lines = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags") || l.starts_with("Features"))
        .peekable();
    flag_lines.peek().is_none()
        || flag_lines.any(|l| {
            l.split_once(':')
                .is_some_and(|(_, flags)| flags.split_whitespace().any(|f| f == "aes"))
        })
}

fn is_chacha(suite: rustls::CipherSuite) -> bool {
    use rustls::CipherSuite as S;
    matches!(
        suite,
        S::TLS13_CHACHA20_POLY1305_SHA256
            | S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            | S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
    )
}

/// The rustls server configuration for `chain` and `key`; rustls checks that the key is of
/// a kind it signs with (RSA, ECDSA, Ed25519) and is the leaf certificate's.
///
/// Every byte of video is encrypted once per client, so the cipher matters: a Pi 2, 3, 4 or
/// Zero 2 has no AES instructions (a Pi 5 has); ChaCha20-Poly1305 is the cipher made for such
/// CPUs, where AES-GCM falls back to slower constant-time software (not measured on a Pi
/// here). Without the `aes` CPU flag it is put first and chosen over the client's
/// preference (clients with AES-NI would otherwise pick AES-GCM).
fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let mut provider = rustls::crypto::ring::default_provider();
    let chacha_first = !cpu_has_aes(&std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default());
    if chacha_first {
        provider
            .cipher_suites
            .sort_by_key(|s| !is_chacha(s.suite()));
        log::debug!("TLS: no AES instructions on this CPU; preferring ChaCha20-Poly1305");
    }
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.ignore_client_order = chacha_first;
    // One HTTP/1.1 server: say so, so that no client tries HTTP/2 on it.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn refusal_hint(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InconsistentKeys(_) => {
            format!("{e}: this key is not the key of the certificate in --tls-cert")
        }
        _ => format!("{e} (want an RSA, ECDSA P-256/P-384 or Ed25519 key)"),
    }
}

/// The user's certificate (`--tls-cert`) and key (`--tls-key`).
pub fn from_files(cert: &Path, key: &Path) -> Result<Acceptor, TlsError> {
    let chain = read_chain(cert)?;
    let private = read_key(key)?;
    let fingerprint = fingerprint(&chain[0]);
    let chain_len = chain.len();
    let config = server_config(chain, private).map_err(|e| TlsError::Refused {
        key: key.to_path_buf(),
        why: refusal_hint(&e),
    })?;
    Ok(Acceptor {
        config: Arc::new(config),
        fingerprint,
        origin: format!(
            "certificate {} ({chain_len} in the chain), key {}",
            cert.display(),
            key.display()
        ),
    })
}

/// The time `after` from now, as certificate checks take it.
pub fn unix_time_in(after: Duration) -> UnixTime {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    UnixTime::since_unix_epoch(now + after)
}

/// Why `leaf` will not do for `names` at `at`, if it will not.
pub fn fails_for(leaf: &CertificateDer<'_>, names: &[String], at: UnixTime) -> Option<String> {
    let mut roots = rustls::RootCertStore::empty();
    if let Err(e) = roots.add(leaf.clone().into_owned()) {
        return Some(format!("it cannot be parsed ({e})"));
    }
    let verifier = match rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider(),
    )
    .build()
    {
        Ok(v) => v,
        Err(e) => return Some(format!("it cannot be checked ({e})")),
    };
    for name in names {
        let Ok(server_name) = ServerName::try_from(name.as_str()) else {
            continue; // not a name a client could ask for; nothing to check
        };
        if let Err(e) = verifier.verify_server_cert(leaf, &[], &server_name, &[], at) {
            use rustls::CertificateError as C;
            return Some(match e {
                rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
                    format!(
                        "it has expired or expires within {} days",
                        RENEW_BEFORE.as_secs() / 86_400
                    )
                }
                rustls::Error::InvalidCertificate(
                    C::NotValidYet | C::NotValidYetContext { .. },
                ) => "it is not valid yet (was the clock set back?)".into(),
                rustls::Error::InvalidCertificate(
                    C::NotValidForName | C::NotValidForNameContext { .. },
                ) => format!("it is not valid for {name}"),
                other => format!("it does not verify for {name} ({other})"),
            });
        }
    }
    None
}

/// The first of `candidates` that exists or can be made (mode 0700) and is writable.
pub fn choose_state_dir(candidates: &[PathBuf]) -> Result<PathBuf, TlsError> {
    let mut tried = Vec::new();
    for dir in candidates {
        let ready = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .and_then(|()| {
                rustix::fs::access(
                    dir,
                    rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
                )
                .map_err(std::io::Error::from)
            });
        match ready {
            Ok(()) => return Ok(dir.clone()),
            Err(e) => tried.push(format!("{}: {e}", dir.display())),
        }
    }
    if tried.is_empty() {
        tried.push("none: HOME is not set".into());
    }
    Err(TlsError::NoStateDir {
        tried: tried.join("; "),
    })
}

/// The stored certificate if it is still good for `names`, else why not.
fn stored(
    cert_path: &Path,
    key_path: &Path,
    names: &[String],
) -> Result<(Acceptor, String), String> {
    if !cert_path.exists() {
        return Err("there is none yet".into());
    }
    let chain = read_chain(cert_path).map_err(|e| format!("the stored one is unusable: {e}"))?;
    let key = read_key(key_path).map_err(|e| format!("the stored key is unusable: {e}"))?;
    let renew_at = unix_time_in(RENEW_BEFORE);
    if let Some(why) = fails_for(&chain[0], names, renew_at) {
        return Err(format!("the stored one will not do: {why}"));
    }
    let fingerprint = fingerprint(&chain[0]);
    let config =
        server_config(chain, key).map_err(|e| format!("the stored one is refused: {e}"))?;
    Ok((
        Acceptor {
            config: Arc::new(config),
            fingerprint,
            origin: String::new(),
        },
        "reused".into(),
    ))
}

/// Writes `text` to `path` through a temporary file and a rename, so that a crash leaves
/// either the old file or the new one; `mode` is set at creation (no window where a key is
/// readable by others).
fn write_atomically(path: &Path, text: &str, mode: u32) -> Result<(), TlsError> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let fail = |source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let _ = std::fs::remove_file(&tmp);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            fail(e)
        })
}

/// Makes a new self-signed certificate for `names` (the first is its common name) and stores
/// it and its key.
fn generate(cert_path: &Path, key_path: &Path, names: &[String]) -> Result<Acceptor, TlsError> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    let mut subject = rcgen::DistinguishedName::new();
    subject.push(
        rcgen::DnType::CommonName,
        format!(
            "rpi-streamer on {}",
            names.first().map_or("", String::as_str)
        ),
    );
    params.distinguished_name = subject;
    let now = time::OffsetDateTime::now_utc();
    // A day of slack for a client whose clock is a little behind ours.
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(VALIDITY_DAYS as i64);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    let cert = params.self_signed(&key)?;
    // The key first: a crash between the two leaves a mismatch, which the next start mends.
    write_atomically(key_path, &key.serialize_pem(), 0o600)?;
    write_atomically(cert_path, &cert.pem(), 0o644)?;
    let der = cert.der().clone();
    let fingerprint = fingerprint(&der);
    let private = PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let config = server_config(vec![der], private).map_err(|e| TlsError::Refused {
        key: key_path.to_path_buf(),
        why: e.to_string(),
    })?;
    Ok(Acceptor {
        config: Arc::new(config),
        fingerprint,
        origin: String::new(),
    })
}

/// The self-signed certificate for `names`, kept in the first usable of `state_dirs`:
/// reused when it is still good, else made anew (the log says why).
pub fn self_signed(state_dirs: &[PathBuf], names: &[String]) -> Result<Acceptor, TlsError> {
    let dir = choose_state_dir(state_dirs)?;
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);
    let (mut acceptor, how) = match stored(&cert_path, &key_path, names) {
        Ok(found) => found,
        Err(why) => {
            log::info!(
                "TLS: making a self-signed certificate in {}: {why}",
                dir.display()
            );
            (generate(&cert_path, &key_path, names)?, "new".to_string())
        }
    };
    acceptor.origin = format!(
        "self-signed certificate {} ({how}) for {}",
        cert_path.display(),
        names.join(", ")
    );
    Ok(acceptor)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!(
                "rpi-streamer-identity-{}-{name}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_self_signed_certificate_is_made_once_then_reused() {
        let dir = TempDir::new("reuse");
        let wanted = names(&["cam", "cam.local", "localhost", "127.0.0.1", "::1"]);
        let first = self_signed(std::slice::from_ref(&dir.0), &wanted).unwrap();
        assert!(first.origin.contains("(new)"), "{}", first.origin);
        let key_mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.0.join(KEY_FILE))
                .unwrap()
                .permissions(),
        );
        assert_eq!(key_mode & 0o777, 0o600);
        let again = self_signed(std::slice::from_ref(&dir.0), &wanted).unwrap();
        assert!(again.origin.contains("(reused)"), "{}", again.origin);
        assert_eq!(again.fingerprint, first.fingerprint);
        assert_eq!(first.fingerprint.len(), 32 * 3 - 1);

        // A new address: the stored certificate no longer covers the host.
        let more = names(&["cam", "localhost", "10.1.2.3"]);
        let chain = read_chain(&dir.0.join(CERT_FILE)).unwrap();
        let why = fails_for(&chain[0], &more, UnixTime::now()).unwrap();
        assert!(why.contains("not valid for 10.1.2.3"), "{why}");
        let renewed = self_signed(std::slice::from_ref(&dir.0), &more).unwrap();
        assert!(renewed.origin.contains("(new)"));
        assert_ne!(renewed.fingerprint, first.fingerprint);
    }

    #[test]
    fn expiry_and_the_renewal_margin_are_checked() {
        let dir = TempDir::new("expiry");
        let wanted = names(&["localhost"]);
        self_signed(std::slice::from_ref(&dir.0), &wanted).unwrap();
        let chain = read_chain(&dir.0.join(CERT_FILE)).unwrap();
        assert_eq!(fails_for(&chain[0], &wanted, UnixTime::now()), None);
        let late = unix_time_in(Duration::from_secs((VALIDITY_DAYS + 1) * 86_400));
        let why = fails_for(&chain[0], &wanted, late).unwrap();
        assert!(why.contains("expired"), "{why}");
        let why = fails_for(
            &chain[0],
            &wanted,
            UnixTime::since_unix_epoch(Duration::ZERO),
        );
        assert!(why.unwrap().contains("not valid yet"));
    }

    #[test]
    fn a_mismatched_stored_key_makes_a_new_certificate() {
        let dir = TempDir::new("mismatch");
        let wanted = names(&["localhost"]);
        let first = self_signed(std::slice::from_ref(&dir.0), &wanted).unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        std::fs::write(dir.0.join(KEY_FILE), other.serialize_pem()).unwrap();
        let again = self_signed(std::slice::from_ref(&dir.0), &wanted).unwrap();
        assert!(again.origin.contains("(new)"));
        assert_ne!(again.fingerprint, first.fingerprint);
    }

    #[test]
    fn the_aes_flag_is_read_from_cpuinfo() {
        assert!(cpu_has_aes("flags\t\t: fpu sse2 aes avx\n"));
        assert!(cpu_has_aes("Features\t: fp asimd aes pmull sha1\n"));
        // Raspberry Pi 4 (Cortex-A72 without the crypto extensions).
        assert!(!cpu_has_aes(
            "processor\t: 0\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
        ));
        assert!(cpu_has_aes(""), "unknown: keep the default order");
    }

    #[test]
    fn bad_files_name_the_file_and_what_is_wrong() {
        let dir = TempDir::new("bad");
        std::fs::create_dir_all(&dir.0).unwrap();
        let garbage = dir.0.join("garbage.pem");
        std::fs::write(&garbage, "hello\n").unwrap();
        let key_only = dir.0.join("key.pem");
        std::fs::write(
            &key_only,
            rcgen::KeyPair::generate().unwrap().serialize_pem(),
        )
        .unwrap();
        let e = read_chain(&garbage).unwrap_err().to_string();
        assert!(e.contains("garbage.pem: no PEM certificate"), "{e}");
        let e = read_chain(&key_only).unwrap_err().to_string();
        assert!(e.contains("swapped"), "{e}");
        let e = read_key(&garbage).unwrap_err();
        assert_eq!(e.flag(), "--tls-key");
        assert!(e.to_string().contains("no PEM private key"), "{e}");
        let e = read_chain(&dir.0.join("missing.pem")).unwrap_err();
        assert_eq!(e.flag(), "--tls-cert");
        assert!(e.to_string().ends_with("missing.pem: no such file"), "{e}");
    }
}
