//! `sprite-env tasks wait-idle`: follows the event stream until the
//! held -> idle edge, through daemon restarts, with an optional timeout.

use std::io;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use sprite_tasks::client::{self, Client, ClientError};

use crate::exit_codes::{EXIT_FAILED, EXIT_UNAVAILABLE};
use crate::watch::{WATCH_RETRY_FIRST, WATCH_RETRY_MAX};

/// How long a daemon that went away mid-wait (a restart, an upgrade)
/// is waited for before giving up: far longer than a restart takes
/// (systemd's default RestartSec is 100 ms), short enough that a
/// script learns of a daemon that is gone for good.
const REACHABLE_AGAIN_WITHIN: Duration = Duration::from_secs(30);

fn say(message: &str) {
    eprintln!("sprite-env tasks wait-idle: {message}");
}

/// How one wait on the stream ended.
enum Ended {
    Idle,
    TimedOut,
    /// The stream broke or ended: reconnect (why).
    Lost(String),
    /// The daemon answered the stream but not the status request (it is
    /// stopping, or refuses a second connection): try again after a pause.
    Interrupted(ClientError),
}

/// Waits until the machine is idle: success then, [`EXIT_FAILED`] when
/// `timeout` passes first, [`EXIT_UNAVAILABLE`] when the daemon cannot be
/// reached.
pub fn run(client: &Client, timeout: Option<Duration>) -> ExitCode {
    let started = Instant::now();
    let deadline = timeout.map(|t| started + t);
    let timed_out = || {
        if let Some(after) = timeout {
            say(&format!(
                "timed out after {}: the machine is still held",
                humantime::format_duration(after)
            ));
        }
        ExitCode::from(EXIT_FAILED)
    };
    let mut unreachable_since: Option<Instant> = None;
    let mut retry = WATCH_RETRY_FIRST;
    let mut first = true;
    loop {
        if deadline.is_some_and(|at| at <= Instant::now()) {
            return timed_out();
        }
        let attempt = wait_once(client, deadline);
        let was_first = std::mem::replace(&mut first, false);
        let (reached, e) = match attempt {
            Ok(Ended::Idle) => return ExitCode::SUCCESS,
            Ok(Ended::TimedOut) => return timed_out(),
            Ok(Ended::Lost(why)) => {
                say(&format!("{why}; reconnecting"));
                unreachable_since = None;
                retry = WATCH_RETRY_FIRST;
                continue;
            }
            Ok(Ended::Interrupted(e)) => {
                say(&format!("{e}; reconnecting"));
                (true, e)
            }
            Err(e) => (false, e),
        };
        let since = *unreachable_since.get_or_insert_with(Instant::now);
        // No daemon to begin with, or one gone for too long.
        if (was_first && !reached) || since.elapsed() >= REACHABLE_AGAIN_WITHIN {
            say(&e.to_string());
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
        let mut pause = retry;
        if let Some(at) = deadline {
            pause = pause.min(at.saturating_duration_since(Instant::now()));
        }
        std::thread::sleep(pause);
        retry = (retry * 2).min(WATCH_RETRY_MAX);
    }
}

/// Opens the event stream, then asks for the status: an idle edge
/// between the two is seen by one of them. Then reads events until
/// `idle`, the deadline, or the end of the stream.
fn wait_once(client: &Client, deadline: Option<Instant>) -> Result<Ended, ClientError> {
    let left =
        |deadline: Option<Instant>| deadline.map(|at| at.saturating_duration_since(Instant::now()));
    let bounded = match left(deadline) {
        Some(left) if left.is_zero() => return Ok(Ended::TimedOut),
        Some(left) => client
            .clone()
            .with_timeout(left.min(client::REQUEST_TIMEOUT)),
        None => client.clone(),
    };
    let timed_out = |e: &ClientError| {
        matches!(e, ClientError::Timeout { .. }) && deadline.is_some_and(|at| at <= Instant::now())
    };
    let mut stream = match bounded.events(None) {
        Ok(stream) => stream,
        Err(e) if timed_out(&e) => return Ok(Ended::TimedOut),
        Err(e) => return Err(e),
    };
    // The daemon answered the stream: a failure of the status request (it
    // stopping between the two) is a daemon to wait for, not a missing one.
    match bounded.status() {
        Ok((_, status)) if !status.held => return Ok(Ended::Idle),
        Ok(_) => {}
        Err(e) if timed_out(&e) => return Ok(Ended::TimedOut),
        Err(e) => return Ok(Ended::Interrupted(e)),
    }
    loop {
        let wait = match left(deadline) {
            Some(left) if left.is_zero() => return Ok(Ended::TimedOut),
            other => other,
        };
        stream.set_read_timeout(wait)?;
        let line = match stream.next_line() {
            Ok(Some(line)) => line,
            Ok(None) => return Ok(Ended::Lost("the daemon ended the event stream".into())),
            Err(ClientError::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(Ended::TimedOut);
            }
            Err(e) => return Ok(Ended::Lost(e.to_string())),
        };
        if client::is_lagged(&line) {
            return Ok(Ended::Lost(
                "this waiter fell behind and was cut off".into(),
            ));
        }
        let event = serde_json::from_slice::<serde_json::Value>(&line).ok();
        if event
            .as_ref()
            .and_then(|event| event.get("event"))
            .and_then(serde_json::Value::as_str)
            == Some("idle")
        {
            return Ok(Ended::Idle);
        }
    }
}
