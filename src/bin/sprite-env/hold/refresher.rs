//! The refresh loop of `tasks hold`, on its own thread: refreshes the task
//! every `--every`, reports and retries a failed refresh, and stops when
//! told to (or when the command it is bound to is gone).

use std::io;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sprite_tasks::client::{self, Client, HoldDetails, retry_delay};

use super::say;

/// The refresh loop, on its own thread so that a slow or stuck daemon
/// never delays forwarding a signal or noticing the command's exit.
pub struct Refresher {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Refresher {
    /// Starts refreshing task `name` every `every`, each refresh for
    /// `expire` with `details`.
    pub fn start(
        client: Client,
        name: String,
        expire_json: serde_json::Value,
        details: HoldDetails,
        (expire, every): (Duration, Duration),
    ) -> io::Result<Refresher> {
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("refresh".into())
            .spawn(move || {
                let hold = (name.as_str(), &expire_json, &details);
                refresh_loop(&client, hold, expire, every, &stopped)
            })?;
        Ok(Refresher {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops refreshing; `true` the first time.
    pub fn stop(&mut self) -> bool {
        self.stop.take().is_some()
    }

    /// Stops refreshing and waits for a refresh in flight, so that none
    /// can land after the release and hold the task again.
    pub fn finish(mut self) {
        self.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Refreshes every `every` until told to stop (or its sender is gone),
/// repeating the reason and binding, so that a task lost with a
/// daemon's database comes back whole.
fn refresh_loop(
    client: &Client,
    (name, expire_json, details): (&str, &serde_json::Value, &HoldDetails),
    expire: Duration,
    every: Duration,
    stopped: &mpsc::Receiver<()>,
) {
    let mut next = Instant::now() + every;
    let mut held_until = Instant::now() + expire;
    let mut failing = false;
    loop {
        let wait = next.saturating_duration_since(Instant::now());
        if stopped.recv_timeout(wait) != Err(mpsc::RecvTimeoutError::Timeout) {
            return;
        }
        let attempt = Instant::now();
        match client.refresh_with(name, expire_json, details) {
            Ok(_) => {
                if failing {
                    say(format!("task {name:?} refreshed again"));
                }
                failing = false;
                held_until = attempt + expire;
                next = attempt + every;
            }
            // The command ended while this refresh was on its way (the
            // daemon released the task at its exit): nothing to retry,
            // nothing to report.
            Err(_) if details.pid.is_some_and(|pid| !process_exists(pid)) => return,
            // Refused for good, not failed: the name's hold limit tripped,
            // another process holds it, or another uid owns it. Retrying
            // would only repeat the refusal until someone acts.
            Err(
                e @ client::ClientError::Api {
                    status: 403 | 409, ..
                },
            ) => {
                say(format!(
                    "refreshing task {name:?} was refused: {e}; no longer refreshing it (the command keeps running)"
                ));
                return;
            }
            Err(e) => {
                failing = true;
                let delay = retry_delay(every);
                let left = held_until.saturating_duration_since(Instant::now());
                let lapse = if left.is_zero() {
                    "the hold has lapsed".to_owned()
                } else {
                    format!(
                        "the hold lapses in {} unless a refresh succeeds",
                        client::format_span(left)
                    )
                };
                say(format!(
                    "refreshing task {name:?} failed: {e}; retrying in {} ({lapse})",
                    humantime::format_duration(delay)
                ));
                next = Instant::now() + delay;
            }
        }
    }
}

/// Whether process `pid` still exists (a zombie not yet reaped does).
fn process_exists(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) with signal 0 sends nothing; it only checks.
    let result = unsafe { libc::kill(pid, 0) };
    result == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}
