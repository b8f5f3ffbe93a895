//! `sprite-env tasks hold`: the seed's heartbeat script as one command.
//!
//! Takes the task bound to the holder, runs COMMAND and binds the task to
//! it, refreshes the task ([`refresher`]) while forwarding stop signals to
//! COMMAND ([`signals`]), releases the task when COMMAND exits, and exits as
//! COMMAND did. The rules (the refresh interval, the retry delay, the
//! default reason) are the library's ([`sprite_tasks::client::hold`]).

mod refresher;
mod signals;

use std::ffi::OsString;
use std::io::{self, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitCode, ExitStatus};
use std::time::{Duration, Instant};

use sprite_tasks::client::{
    Client, ClientError, HoldDetails, check_interval, default_interval, default_reason,
    parse_interval,
};
use sprite_tasks::expire::MAX_EXPIRE_CEILING;

use crate::cli::HoldArgs;
use crate::exit_codes::{EXIT_CANNOT_EXECUTE, EXIT_HOLD_FAILED, EXIT_NOT_FOUND, EXIT_USAGE};
use crate::output::in_cli_terms;
use refresher::Refresher;
use signals::{Received, SignalPipe};

/// Time allowed to release the task when the command is done: a few
/// attempts, since a missed release keeps the machine awake until the
/// expiry.
const RELEASE_DEADLINE: Duration = Duration::from_secs(5);

/// Pause between release attempts.
const RELEASE_RETRY: Duration = Duration::from_millis(200);

fn say(message: impl std::fmt::Display) {
    eprintln!("sprite-env tasks hold: {message}");
}

/// Runs `tasks hold`: exits with COMMAND's status (or dies of its signal);
/// [`EXIT_USAGE`] for a bad `--expire` or `--every`, [`EXIT_HOLD_FAILED`]
/// when the task could not be held, [`EXIT_NOT_FOUND`] or
/// [`EXIT_CANNOT_EXECUTE`] when COMMAND cannot be run.
pub fn run(client: &Client, args: HoldArgs) -> ExitCode {
    let Some((program, program_args)) = args.command.split_first() else {
        say("no command given after `--`");
        return ExitCode::from(EXIT_USAGE);
    };
    let (expire_json, expire, every) = match timing(&args) {
        Ok(timing) => timing,
        Err(message) => {
            say(message);
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // Signals are caught before the hold exists, so none can end the
    // holder between taking the hold and watching the command.
    let signals = match SignalPipe::install() {
        Ok(signals) => signals,
        Err(e) => {
            say(format!("cannot set up signal handling: {e}"));
            return ExitCode::from(EXIT_HOLD_FAILED);
        }
    };
    // Bound to the holder until COMMAND runs, then to COMMAND: whichever
    // dies first, the daemon releases the task at once.
    let mut details = HoldDetails {
        reason: Some(
            args.reason
                .clone()
                .unwrap_or_else(|| default_reason(&args.command)),
        ),
        pid: Some(std::process::id()),
    };
    // The processes the task may be bound to, in the order bound.
    let mut bound = vec![std::process::id()];
    if let Err(status) = take_hold(client, &args.name, (&expire_json, &details), &signals) {
        return status;
    }
    let mut child = match spawn(program, program_args) {
        Ok(child) => child,
        Err(e) => {
            release(client, &args.name, &bound);
            say(format!("cannot run {}: {e}", program.to_string_lossy()));
            return ExitCode::from(match e.kind() {
                io::ErrorKind::NotFound => EXIT_NOT_FOUND,
                _ => EXIT_CANNOT_EXECUTE,
            });
        }
    };
    details.pid = Some(child.id());
    bound.push(child.id());
    // A COMMAND that already exited is not visible to bind: the hold
    // stays bound to the holder, which releases it below.
    let _ = client.refresh_with(&args.name, &expire_json, &details);
    let mut refresher = match Refresher::start(
        client.clone(),
        args.name.clone(),
        expire_json,
        details,
        (expire, every),
    ) {
        Ok(refresher) => refresher,
        Err(e) => {
            // Without refreshes the hold would lapse under the command.
            say(format!(
                "cannot start refreshing: {e}; stopping the command"
            ));
            // SAFETY: kill(2) on our own unreaped child.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let _ = child.wait();
            release(client, &args.name, &bound);
            return ExitCode::from(EXIT_HOLD_FAILED);
        }
    };
    let outcome = supervise(&mut child, &signals, &mut refresher, &args.name, expire);
    refresher.finish();
    release(client, &args.name, &bound);
    match outcome {
        Ok(status) => exit_like(status),
        Err(e) => {
            say(format!("lost track of the command: {e}"));
            ExitCode::from(EXIT_HOLD_FAILED)
        }
    }
}

/// `--expire` as sent to the daemon and as a duration, and the refresh
/// interval: `--every` checked against it, or its default.
///
/// # Errors
///
/// The usage error to report, when either is not a valid duration or
/// `--every` is not well below `--expire`.
fn timing(args: &HoldArgs) -> Result<(serde_json::Value, Duration, Duration), String> {
    let expire_json = sprite_tasks::expire::arg_value(&args.expire);
    let expire = sprite_tasks::expire::decode(&expire_json, MAX_EXPIRE_CEILING)
        .map_err(|e| format!("--expire {:?}: {e}", args.expire))?;
    let every = match args.every.as_deref() {
        None => default_interval(expire),
        Some(every) => {
            let every = parse_interval(every)?;
            check_interval(expire, every)?;
            every
        }
    };
    Ok((expire_json, expire, every))
}

/// Takes the hold, bound to the holder, before COMMAND is started.
///
/// # Errors
///
/// The status to exit with when COMMAND must not start: the hold could not
/// be taken, or a stop signal came meanwhile (the hold is then released
/// and the holder dies of that signal).
fn take_hold(
    client: &Client,
    name: &str,
    (expire_json, details): (&serde_json::Value, &HoldDetails),
    signals: &SignalPipe,
) -> Result<(), ExitCode> {
    if let Err(e) = client.refresh_with(name, expire_json, details) {
        say(format!(
            "cannot hold task {name:?}: {}; the command was not started",
            in_cli_terms(e, name)
        ));
        return Err(ExitCode::from(EXIT_HOLD_FAILED));
    }
    let holder = [std::process::id()];
    // Told to stop (or Ctrl-C) while the hold was being taken: the
    // command never starts.
    let pending = match signals.wait(Some(Duration::ZERO)) {
        Ok(pending) => pending,
        Err(e) => {
            release(client, name, &holder);
            say(format!("cannot read signals: {e}"));
            return Err(ExitCode::from(EXIT_HOLD_FAILED));
        }
    };
    if let Some(stop) = pending.iter().find(|r| r.signal != libc::SIGCHLD) {
        release(client, name, &holder);
        return Err(die_of(stop.signal));
    }
    Ok(())
}

/// Starts COMMAND, to end with the holder ([`end_with_holder`]).
fn spawn(program: &OsString, program_args: &[OsString]) -> io::Result<Child> {
    let mut command = Command::new(program);
    command.args(program_args);
    end_with_holder(&mut command);
    command.spawn()
}

/// Makes the command get SIGTERM if the holder dies without passing on a
/// signal (kill -9, a crash): without its holder nobody refreshes the
/// task, so the command must not go on believing itself held.
///
/// Linux's `PR_SET_PDEATHSIG` fires when the *thread* that forked the
/// child ends; the child is spawned, and supervised, by the main thread,
/// which lives until the holder exits. A holder that died between the
/// fork and the `prctl` is caught by comparing `getppid()` with the pid
/// it had before the fork. Elsewhere this is a no-op, and the task
/// lapses at its expiry as before.
fn end_with_holder(command: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: getpid(2) cannot fail.
        let holder = unsafe { libc::getpid() };
        // SAFETY: the closure runs in the forked child before exec and
        // calls only async-signal-safe functions (prctl, getppid, kill).
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::getppid() != holder {
                    // The holder is gone already: end as SIGTERM
                    // would have ended the command. (Not by raising
                    // it: the holder's handler is still installed.)
                    libc::_exit(128 + libc::SIGTERM);
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = command;
}

/// Forwards stop signals to `child` until it exits, and returns its
/// status. The refresher is told to stop at the first forwarded signal.
fn supervise(
    child: &mut Child,
    signals: &SignalPipe,
    refresher: &mut Refresher,
    name: &str,
    expire: Duration,
) -> io::Result<ExitStatus> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        for Received {
            signal,
            from_terminal,
        } in signals.wait(None)?
        {
            if signal == libc::SIGCHLD || from_terminal {
                // The terminal signalled the whole foreground group,
                // the command included.
                continue;
            }
            // SAFETY: kill(2) on our own child, not yet reaped (only
            // this thread reaps it), so the pid is still its own.
            unsafe { libc::kill(child.id() as libc::pid_t, signal) };
            if refresher.stop() {
                say(format!(
                    "forwarded {} to the command; no more refreshes, task {name:?} is deleted when it exits (or lapses in at most {})",
                    signal_name(signal),
                    humantime::format_duration(expire)
                ));
            }
        }
    }
}

/// Deletes the task while it is bound to one of `pids` (the holder's own
/// pid, then COMMAND's), retrying briefly. A task already gone is fine,
/// and so is one that another holder took since (409): that hold is
/// theirs, not ours to end.
fn release(client: &Client, name: &str, pids: &[u32]) {
    let deadline = Instant::now() + RELEASE_DEADLINE;
    let mut pids = pids.iter().rev();
    let Some(mut pid) = pids.next().copied() else {
        return;
    };
    loop {
        let client = client.clone().with_timeout(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(100)),
        );
        match client.delete_bound(name, pid) {
            Ok(()) | Err(ClientError::Api { status: 404, .. }) => return,
            Err(ClientError::Api { status: 409, .. }) => match pids.next() {
                Some(next) => pid = *next,
                None => return,
            },
            Err(e) if Instant::now() + RELEASE_RETRY >= deadline => {
                say(format!(
                    "could not delete task {name:?}: {e}; it lapses on its own at its expiry"
                ));
                return;
            }
            Err(_) => std::thread::sleep(RELEASE_RETRY),
        }
    }
}

fn signal_name(signal: libc::c_int) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

/// Ends the holder as the command ended: the same exit code, or death by
/// the same signal (without a core file), so the caller sees what it
/// would have seen running the command itself.
fn exit_like(status: ExitStatus) -> ExitCode {
    if let Some(code) = status.code() {
        return ExitCode::from(u8::try_from(code).unwrap_or(EXIT_HOLD_FAILED));
    }
    match status.signal() {
        Some(signal) => die_of(signal),
        None => ExitCode::from(EXIT_HOLD_FAILED),
    }
}

/// Dies of `signal` (without a core file); for a signal whose default
/// is not to terminate, exits 128 + its number as a shell would report.
fn die_of(signal: libc::c_int) -> ExitCode {
    let _ = io::stderr().flush();
    // SAFETY: plain libc calls on our own process with valid arguments.
    unsafe {
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &no_core);
        libc::signal(signal, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(signal);
    }
    // Still alive: a signal whose default is not to terminate.
    ExitCode::from(u8::try_from(128 + signal).unwrap_or(EXIT_HOLD_FAILED))
}
