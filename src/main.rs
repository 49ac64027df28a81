//! The `rpi-streamer` binary: flags → configuration → daemon.
#![forbid(unsafe_code)]

use rpi_streamer::config::{self, Parsed};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let program = args
        .first()
        .and_then(|p| std::path::Path::new(p).file_name())
        .and_then(|p| p.to_str())
        .unwrap_or("rpi-streamer")
        .to_string();
    let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    let env = match config::Env::from_process() {
        Ok(env) => env,
        Err(e) => {
            eprintln!("{}", config::error_text(&program, &e));
            return ExitCode::from(2);
        }
    };
    let valid = match config::parse(&program, &rest, &env) {
        Parsed::Run(valid) => valid,
        Parsed::ListDevices(camera) => {
            return match rpi_streamer::capture::list_devices(camera) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Parsed::Help(text) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Parsed::Error(text) => {
            eprintln!("{text}");
            return ExitCode::from(2);
        }
    };
    let exposed = valid.secrets_on_command_line().to_vec();
    // Before resolving: making the self-signed certificate logs why it was (re)made.
    rpi_streamer::logger::init();
    let config = match valid.resolve() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{}", config::error_text(&program, &e));
            return ExitCode::from(2);
        }
    };
    for flag in exposed {
        log::warn!(
            "{flag} on the command line is visible to every local user (ps); \
             use {flag}-file or the environment instead"
        );
    }
    // The last line names the exit status: under a SysV/BusyBox init the daemon's parent is
    // init, so its log (syslog) is the only place a clean stop can be seen.
    match rpi_streamer::daemon::run(config) {
        Ok(()) => {
            log::info!("stopped, exit status 0");
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!("{e}; exit status 1");
            ExitCode::FAILURE
        }
    }
}
