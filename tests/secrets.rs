//! Secrets off the command line: `--auth-token-file`, `--basic-auth-file` and the
//! `RPI_STREAMER_AUTH_TOKEN` / `RPI_STREAMER_BASIC_AUTH` variables, against the real binary.
//! `ps` shows every process's argv to every local user; a file readable only by the daemon's
//! user, or its environment (readable only by that user too), does not leak.

mod common;

use base64::Engine as _;
use common::{exit_output, Daemon, TestDaemon};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::process::Output;

/// A secret file with mode 0600 in a fresh temporary folder, removed at drop.
struct SecretFile {
    dir: PathBuf,
    path: PathBuf,
}

impl SecretFile {
    fn new(test: &str, content: &str) -> SecretFile {
        let dir = std::env::temp_dir().join(format!(
            "rpi-streamer-secrets-{}-{test}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("temporary folder");
        let path = dir.join("secret");
        std::fs::write(&path, content).expect("write the secret file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .expect("chmod 0600");
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

/// The daemon's argv as every local user can read it (`ps`), NULs as spaces.
fn cmdline(daemon: &Daemon) -> String {
    let raw = std::fs::read(format!("/proc/{}/cmdline", daemon.child.id()))
        .expect("read the daemon's /proc/PID/cmdline");
    String::from_utf8_lossy(&raw).replace('\0', " ")
}

/// Runs the daemon expecting it to refuse its flags; gives up after 20 s.
fn refused(args: &[&str], env: &[(&str, &OsStr)]) -> Output {
    exit_output(args, env)
}

#[test]
fn a_token_from_a_file_protects_the_data_and_stays_out_of_the_command_line() {
    let token = "t0ken-from-a-file";
    let file = SecretFile::new("token-file", &format!("{token}\n"));
    let daemon = TestDaemon::new()
        .arg("--auth-token-file")
        .arg(file.arg())
        .start();
    let argv = cmdline(&daemon);
    assert!(argv.contains(file.arg()), "not the daemon's argv: {argv}");
    assert!(!argv.contains(token), "the token is in argv: {argv}");
    let denied = daemon.get("/status");
    assert!(
        denied.raw.starts_with(b"HTTP/1.1 401 Unauthorized\r\n"),
        "{denied}"
    );
    assert_eq!(
        daemon
            .get_with("/status", &[("Authorization", "Bearer wrong-token")])
            .code,
        401
    );
    let bearer = format!("Bearer {token}");
    assert_eq!(
        daemon
            .get_with("/status", &[("Authorization", bearer.as_str())])
            .code,
        200
    );
    // The trailing newline of the file is not part of the token.
    let query = format!("/status?token={token}");
    assert_eq!(daemon.get(&query).code, 200);
    assert_eq!(daemon.get("/status?token=t0ken-from-a-file%0A").code, 401);
}

#[test]
fn a_secret_on_the_command_line_still_works_but_is_warned_about() {
    let daemon = TestDaemon::new()
        .arg("--auth-token")
        .arg("s3cret-token")
        .start();
    let bearer = "Bearer s3cret-token";
    assert_eq!(
        daemon
            .get_with("/status", &[("Authorization", bearer)])
            .code,
        200
    );
    let log = daemon.log_text();
    assert!(
        log.contains("--auth-token on the command line is visible to every local user"),
        "{log}"
    );
    let file = SecretFile::new("no-warning", "s3cret-token\n");
    let quiet = TestDaemon::new()
        .arg("--auth-token-file")
        .arg(file.arg())
        .start();
    assert!(!quiet.log_text().contains("visible to every local user"));
}

#[test]
fn basic_credentials_from_a_file_protect_the_page() {
    let file = SecretFile::new("basic-file", "viewer:file-pw\n");
    let daemon = TestDaemon::new()
        .arg("--basic-auth-file")
        .arg(file.arg())
        .start();
    assert!(!cmdline(&daemon).contains("file-pw"));
    assert_eq!(daemon.get("/").code, 401);
    let good = base64::engine::general_purpose::STANDARD.encode("viewer:file-pw");
    assert_eq!(
        daemon
            .get_with("/", &[("Authorization", format!("Basic {good}").as_str())])
            .code,
        200
    );
    let newline = base64::engine::general_purpose::STANDARD.encode("viewer:file-pw\n");
    assert_eq!(
        daemon
            .get_with(
                "/",
                &[("Authorization", format!("Basic {newline}").as_str())]
            )
            .code,
        401
    );
}

#[test]
fn secrets_in_the_environment_work_and_stay_out_of_the_command_line() {
    let token = "t0ken-from-the-env";
    let daemon = TestDaemon::new()
        .env("RPI_STREAMER_AUTH_TOKEN", token)
        .env("RPI_STREAMER_BASIC_AUTH", "viewer:env-pw")
        .start();
    assert!(!cmdline(&daemon).contains(token));
    assert_eq!(daemon.get("/status").code, 401);
    let bearer = format!("Bearer {token}");
    assert_eq!(
        daemon
            .get_with("/status", &[("Authorization", bearer.as_str())])
            .code,
        200
    );
    let basic = base64::engine::general_purpose::STANDARD.encode("viewer:env-pw");
    assert_eq!(daemon.get("/").code, 401);
    assert_eq!(
        daemon
            .get_with("/", &[("Authorization", format!("Basic {basic}").as_str())])
            .code,
        200
    );
}

#[test]
fn a_secret_given_twice_or_unreadable_is_refused_with_exit_code_2() {
    let file = SecretFile::new("twice", "s3cret-token\n");
    let twice = refused(
        &[
            "--camera-type",
            "test",
            "--auth-token",
            "s3cret-token",
            "--auth-token-file",
            file.arg(),
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&twice.stderr);
    assert_eq!(twice.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--auth-token-file: cannot be combined with --auth-token"),
        "{stderr}"
    );
    let twice = refused(
        &[
            "--camera-type",
            "test",
            "--basic-auth",
            "me:pw",
            "--basic-auth-file",
            file.arg(),
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&twice.stderr);
    assert_eq!(twice.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--basic-auth-file: cannot be combined with --basic-auth"),
        "{stderr}"
    );
    let missing = file.dir.join("missing");
    let missing = missing.to_str().expect("UTF-8 path");
    let gone = refused(
        &["--camera-type", "test", "--auth-token-file", missing],
        &[],
    );
    let stderr = String::from_utf8_lossy(&gone.stderr);
    assert_eq!(gone.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("--auth-token-file: {missing}: no such file")),
        "{stderr}"
    );
    // Set but not UTF-8: refused, not taken as "no token".
    let garbled = refused(
        &["--camera-type", "test"],
        &[(
            "RPI_STREAMER_AUTH_TOKEN",
            OsStr::from_bytes(b"s3cret-\xff-token"),
        )],
    );
    let stderr = String::from_utf8_lossy(&garbled.stderr);
    assert_eq!(garbled.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("RPI_STREAMER_AUTH_TOKEN: is set but not valid UTF-8"),
        "{stderr}"
    );
    let short = refused(
        &["--camera-type", "test"],
        &[("RPI_STREAMER_AUTH_TOKEN", OsStr::new("short"))],
    );
    let stderr = String::from_utf8_lossy(&short.stderr);
    assert_eq!(short.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("RPI_STREAMER_AUTH_TOKEN: must be at least 8"),
        "{stderr}"
    );
}
