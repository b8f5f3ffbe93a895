//! `sprite-env curl`: the system curl pointed at the daemon's socket. The
//! argument rewriting is the library's ([`sprite_tasks::client::curl_args`]);
//! this file checks that the socket is served and then becomes curl.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

use sprite_tasks::client::{Client, curl_args};

use crate::exit_codes::{EXIT_CANNOT_EXECUTE, EXIT_CURL_NO_CONNECTION, EXIT_NOT_FOUND, EXIT_USAGE};

/// Runs curl with `user_args` rewritten for the socket; returns only when
/// curl could not be run (or was not run), with the status that says why.
pub fn run(client: &Client, user_args: &[OsString]) -> ExitCode {
    let args = match curl_args(user_args, client.socket()) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("sprite-env curl: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Err(e) = client.probe() {
        eprintln!("sprite-env curl: {e}");
        return ExitCode::from(EXIT_CURL_NO_CONNECTION);
    }
    // exec: curl's exit status, signals and output are the caller's directly.
    let error = Command::new("curl").args(&args).exec();
    if error.kind() == io::ErrorKind::NotFound {
        eprintln!(
            "sprite-env curl: curl was not found on PATH; install it (e.g. apt-get install curl), or use `sprite-env tasks`, which needs no curl"
        );
        ExitCode::from(EXIT_NOT_FOUND)
    } else {
        eprintln!("sprite-env curl: cannot run curl: {error}");
        ExitCode::from(EXIT_CANNOT_EXECUTE)
    }
}
