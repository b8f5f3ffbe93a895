//! Hook commands run at the held/idle edges: `--while-held` runs while at
//! least one task is live, `--on-idle` runs once each time the last one goes
//! (or, with `--on-idle-after`, once the machine has stayed idle that long:
//! [`IdleDelay`], the rule, pure and with time as an argument).
//!
//! Each hook runs as `sh -c CMD` in its own process group, so a stop signal
//! reaches everything it started (`systemd-inhibit … sleep infinity`). Its
//! stdout and stderr go to one pipe, read line by line by a small thread
//! per run and re-logged with the hook's name and pid, so hook output never
//! interleaves raw with the daemon's log lines (and a hook never writes to
//! the daemon's stderr directly). Children are reaped by the reactor on
//! SIGCHLD and at every turn: no zombies, and a hook that fails is logged,
//! never fatal.

use std::io::{BufRead, BufReader, PipeReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::time::Timestamp;

/// Time a stopped `--while-held` command gets between SIGTERM and SIGKILL.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// Longest line of hook output logged as one line; a longer one is logged
/// in pieces of this size, so a hook that never prints a newline cannot
/// grow the daemon's memory.
pub const MAX_HOOK_LINE: usize = 4096;

/// What the hooks are configured to run.
#[derive(Debug, Clone, Default)]
pub struct HookConfig {
    pub while_held: Option<String>,
    pub on_idle: Option<String>,
    /// Run `on_idle` once the machine has been idle this long, instead of
    /// at the edge.
    pub on_idle_after: Option<Duration>,
    pub grace: Duration,
}

/// When `--on-idle` runs under `--on-idle-after DELAY`: once the machine has
/// stayed idle for DELAY. The rule:
///
/// - The held -> idle edge at `at` arms it for `at + DELAY`; a hold before
///   then disarms it; it never runs while held. Once run, it waits for the
///   next held -> idle edge.
/// - At start-up with nothing held, idle time counts from the last recorded
///   idle edge (persisted in the event history), so a restart does not
///   postpone it. If that edge plus DELAY is already past at start-up, the
///   delay ran out before this start (the previous daemon ran the command,
///   or the machine was off): it counts afresh from start-up, so a machine
///   powered off by `--on-idle` is not powered off again the moment it
///   boots. With no idle edge recorded it counts from start-up.
/// - At start-up with tasks live it waits for the next edge. Tasks that
///   expired while the daemon was down make that edge at start-up.
///
/// Times are the reactor's wall-clock `now`, passed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdleDelay {
    delay: Duration,
    /// When the command is due, while armed.
    due: Option<Timestamp>,
}

impl IdleDelay {
    /// A rule for `delay`, disarmed.
    pub fn new(delay: Duration) -> IdleDelay {
        IdleDelay { delay, due: None }
    }

    /// Arms it at start-up when nothing is held: from `last_idle_edge`
    /// unless that ran out before `now`, else from `now`. Keeps an arming
    /// already made (by an edge committed during start-up).
    pub fn start_idle(&mut self, last_idle_edge: Option<Timestamp>, now: Timestamp) {
        if self.due.is_some() {
            return;
        }
        let resumed = last_idle_edge
            .and_then(|edge| edge.checked_add(self.delay))
            .filter(|due| *due > now);
        self.due = resumed.or_else(|| now.checked_add(self.delay));
    }

    /// The held -> idle edge at `at`.
    pub fn idle(&mut self, at: Timestamp) {
        self.due = at.checked_add(self.delay);
    }

    /// The idle -> held edge: whatever was armed is cancelled.
    pub fn held(&mut self) {
        self.due = None;
    }

    /// Whether the command runs now: `true` once when due, then disarmed.
    pub fn take_due(&mut self, now: Timestamp) -> bool {
        let due = self.due.is_some_and(|due| due <= now);
        if due {
            self.due = None;
        }
        due
    }

    /// When the command is due, while armed.
    pub fn due(&self) -> Option<Timestamp> {
        self.due
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    WhileHeld,
    OnIdle,
}

impl Kind {
    fn flag(self) -> &'static str {
        match self {
            Kind::WhileHeld => "--while-held",
            Kind::OnIdle => "--on-idle",
        }
    }

    /// The hook's name in the log lines of its output.
    fn name(self) -> &'static str {
        match self {
            Kind::WhileHeld => "while-held",
            Kind::OnIdle => "on-idle",
        }
    }
}

#[derive(Debug)]
struct Running {
    child: Child,
    kind: Kind,
    /// Set once SIGTERM was sent: SIGKILL follows at this instant.
    kill_at: Option<Instant>,
}

/// Outcome counts for the metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct HookCounts {
    pub started: u64,
    pub failed: u64,
}

/// The running hook children.
#[derive(Debug, Default)]
pub struct Hooks {
    config: HookConfig,
    running: Vec<Running>,
    counts: HookCounts,
    /// Set with `--on-idle-after`.
    idle_delay: Option<IdleDelay>,
}

impl Hooks {
    pub fn new(config: HookConfig) -> Self {
        let idle_delay = config
            .on_idle_after
            .filter(|_| config.on_idle.is_some())
            .map(IdleDelay::new);
        Hooks {
            config,
            running: Vec::new(),
            counts: HookCounts::default(),
            idle_delay,
        }
    }

    /// The daemon starts with nothing held; the last idle edge recorded
    /// (if any) was at `last_idle_edge`. Arms `--on-idle-after`.
    pub fn start_idle(&mut self, last_idle_edge: Option<Timestamp>, now: Timestamp) {
        if let Some(delay) = &mut self.idle_delay
            && delay.due().is_none()
        {
            delay.start_idle(last_idle_edge, now);
            if let Some(due) = delay.due() {
                info!(on_idle_at = %due, "--on-idle-after armed at start-up (nothing held): --on-idle runs then unless a task is held first");
            }
        }
    }

    /// Runs `--on-idle` if `--on-idle-after` has run out at `now`. Never
    /// while `held`.
    pub fn poll_idle(&mut self, now: Timestamp, held: bool) {
        let Some(delay) = &mut self.idle_delay else {
            return;
        };
        if held {
            delay.held();
            return;
        }
        if delay.take_due(now)
            && let Some(command) = self.config.on_idle.clone()
        {
            info!("idle for --on-idle-after: running --on-idle");
            self.spawn(Kind::OnIdle, &command);
        }
    }

    /// When `--on-idle` is due under `--on-idle-after`, while armed.
    pub fn on_idle_due(&self) -> Option<Timestamp> {
        self.idle_delay.as_ref().and_then(IdleDelay::due)
    }

    /// The machine became held: start `--while-held` unless one is running.
    pub fn held(&mut self) {
        if let Some(delay) = &mut self.idle_delay {
            if delay.due().is_some() {
                info!("held before --on-idle-after ran out: --on-idle cancelled");
            }
            delay.held();
        }
        let active = self
            .running
            .iter()
            .any(|r| r.kind == Kind::WhileHeld && r.kill_at.is_none());
        if !active && let Some(command) = self.config.while_held.clone() {
            self.spawn(Kind::WhileHeld, &command);
        }
    }

    /// The machine became idle at `now`: stop `--while-held`, run
    /// `--on-idle` once (now, or when `--on-idle-after` runs out).
    pub fn idle(&mut self, now: Timestamp, mono: Instant) {
        self.stop_while_held(mono);
        if let Some(delay) = &mut self.idle_delay {
            delay.idle(now);
            if let Some(due) = delay.due() {
                info!(on_idle_at = %due, "--on-idle-after armed at the idle edge: --on-idle runs then unless a task is held first");
            }
        } else if let Some(command) = self.config.on_idle.clone() {
            self.spawn(Kind::OnIdle, &command);
        }
    }

    /// Sends SIGTERM to every `--while-held` command still running.
    pub fn stop_while_held(&mut self, mono: Instant) {
        let grace = self.config.grace;
        for running in &mut self.running {
            if running.kind == Kind::WhileHeld && running.kill_at.is_none() {
                signal_group(&running.child, libc::SIGTERM);
                running.kill_at = Some(mono + grace);
                info!(
                    pid = running.child.id(),
                    "--while-held command stopped (SIGTERM)"
                );
            }
        }
    }

    /// Reaps exited children and SIGKILLs those past their grace.
    pub fn poll(&mut self, mono: Instant) {
        let counts = &mut self.counts;
        self.running.retain_mut(|running| {
            if running.kill_at.is_some_and(|at| at <= mono) {
                warn!(pid = running.child.id(), "{} command ignored SIGTERM; sending SIGKILL", running.kind.flag());
                signal_group(&running.child, libc::SIGKILL);
                running.kill_at = None;
                // Reaped below or on the next SIGCHLD.
            }
            match running.child.try_wait() {
                Ok(Some(status)) => {
                    let stopped = running.kind == Kind::WhileHeld;
                    if status.success() || (stopped && status.code().is_none()) {
                        info!(pid = running.child.id(), %status, "{} command exited", running.kind.flag());
                    } else {
                        counts.failed += 1;
                        warn!(pid = running.child.id(), %status, "{} command failed", running.kind.flag());
                    }
                    false
                }
                Ok(None) => true,
                Err(e) => {
                    warn!(error = %e, "cannot wait for a hook command");
                    false
                }
            }
        });
    }

    /// The next SIGKILL deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.running.iter().filter_map(|r| r.kill_at).min()
    }

    /// Whether no hook child is left.
    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// Kills and reaps everything left (the daemon is exiting).
    pub fn kill_all(&mut self) {
        for running in &mut self.running {
            signal_group(&running.child, libc::SIGKILL);
            let _ = running.child.wait();
        }
        self.running.clear();
    }

    /// Hooks started and failed so far.
    pub fn counts(&self) -> HookCounts {
        self.counts
    }

    fn spawn(&mut self, kind: Kind, command: &str) {
        self.counts.started += 1;
        let spawned = output_pipe().and_then(|(reader, stdout, stderr)| {
            let child = Command::new("/bin/sh")
                .arg("-c")
                .arg(command)
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(stderr)
                .process_group(0)
                .spawn()?;
            // The Command and its copies of the write end are gone: the
            // reader sees the end of output when the hook's group closes it.
            relog_output(kind, child.id(), reader);
            Ok(child)
        });
        match spawned {
            Ok(child) => {
                info!(pid = child.id(), command, "{} command started", kind.flag());
                self.running.push(Running {
                    child,
                    kind,
                    kill_at: None,
                });
            }
            Err(e) => {
                self.counts.failed += 1;
                warn!(error = %e, command, "{} command could not start", kind.flag());
            }
        }
    }
}

/// One pipe for a hook's stdout and stderr: the read end and the write end
/// twice.
fn output_pipe() -> std::io::Result<(PipeReader, Stdio, Stdio)> {
    let (reader, writer) = std::io::pipe()?;
    let stderr = writer.try_clone()?;
    Ok((reader, Stdio::from(writer), Stdio::from(stderr)))
}

/// Logs each line the hook prints, with its name and pid, on a thread of
/// its own that ends when the output does. If the thread cannot start, the
/// output is not read and the hook's writes fail (it may stop on SIGPIPE);
/// that is logged.
fn relog_output(kind: Kind, pid: u32, reader: PipeReader) {
    let started = std::thread::Builder::new()
        .name(format!("{}-output", kind.name()))
        .spawn(move || {
            let mut reader = BufReader::with_capacity(MAX_HOOK_LINE, reader);
            let mut line = Vec::with_capacity(MAX_HOOK_LINE);
            while read_line(&mut reader, &mut line, MAX_HOOK_LINE) {
                let text = String::from_utf8_lossy(&line);
                info!(hook = %kind.name(), pid, "hook output: {}", text.trim_end());
            }
        });
    if let Err(e) = started {
        warn!(error = %e, pid, "cannot read a {} command's output", kind.flag());
    }
}

/// Reads one line (without its newline) of at most `max` bytes into `line`;
/// `false` at the end of the output.
fn read_line(reader: &mut impl BufRead, line: &mut Vec<u8>, max: usize) -> bool {
    line.clear();
    loop {
        let available = match reader.fill_buf() {
            Ok([]) => return !line.is_empty(),
            Ok(available) => available,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return !line.is_empty(),
        };
        let room = max - line.len();
        let window = &available[..available.len().min(room)];
        match window.iter().position(|b| *b == b'\n') {
            Some(end) => {
                line.extend_from_slice(&window[..end]);
                reader.consume(end + 1);
                return true;
            }
            None => {
                let taken = window.len();
                line.extend_from_slice(window);
                reader.consume(taken);
                if line.len() >= max {
                    // A newline right after a full piece ends it.
                    if reader
                        .fill_buf()
                        .is_ok_and(|next| next.first() == Some(&b'\n'))
                    {
                        reader.consume(1);
                    }
                    return true;
                }
            }
        }
    }
}

fn signal_group(child: &Child, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill(2) on the process group we created for this child.
    unsafe {
        libc::kill(-pid, signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn at(minutes: u64) -> Timestamp {
        Timestamp::from_nanos(1_800_000_000_000_000_000 + minutes * 60_000_000_000)
    }

    #[test]
    fn idle_delay_runs_once_after_the_delay_never_while_held() {
        let mut delay = IdleDelay::new(15 * MINUTE);
        delay.idle(at(0));
        assert!(!delay.take_due(at(14)));
        assert!(delay.take_due(at(15)));
        assert!(!delay.take_due(at(16)), "once per edge");
        // A hold before the delay runs out cancels it; the next edge re-arms.
        delay.idle(at(20));
        delay.held();
        assert!(!delay.take_due(at(40)));
        delay.idle(at(41));
        assert_eq!(delay.due(), Some(at(56)));
        assert!(delay.take_due(at(56)));
    }

    #[test]
    fn idle_delay_at_start_up() {
        // (last idle edge, start-up, due)
        let cases: &[(Option<u64>, u64, u64, &str)] = &[
            (None, 100, 115, "no edge recorded: counts from start-up"),
            (Some(95), 100, 110, "a restart neither postpones it"),
            (Some(99), 100, 114, "...nor fires it early"),
            (
                Some(50),
                100,
                115,
                "ran out before this start (run, or the machine was off): afresh",
            ),
            (Some(85), 100, 115, "ran out exactly at start-up: afresh"),
        ];
        for (edge, start, due, why) in cases {
            let mut delay = IdleDelay::new(15 * MINUTE);
            delay.start_idle(edge.map(at), at(*start));
            assert_eq!(delay.due(), Some(at(*due)), "{why}");
        }
        // An edge committed during start-up (tasks that expired while the
        // daemon was down) has armed it already: start-up keeps it.
        let mut delay = IdleDelay::new(15 * MINUTE);
        delay.idle(at(100));
        delay.start_idle(Some(at(10)), at(100));
        assert_eq!(delay.due(), Some(at(115)));
    }

    #[test]
    fn output_lines_are_split_and_bounded() {
        let cases: &[(&[u8], &[&str])] = &[
            (b"", &[]),
            (b"one\n", &["one"]),
            (b"one\ntwo", &["one", "two"]),
            (b"\n\nx\n", &["", "", "x"]),
            (b"abcdefghij\n", &["abcd", "efgh", "ij"]),
            (b"abcd\nef\n", &["abcd", "ef"]),
            (b"abcdefgh", &["abcd", "efgh"]),
        ];
        for (input, expected) in cases {
            let mut reader = BufReader::with_capacity(3, *input);
            let mut line = Vec::new();
            let mut lines = Vec::new();
            while read_line(&mut reader, &mut line, 4) {
                lines.push(String::from_utf8(line.clone()).unwrap());
            }
            assert_eq!(&lines, expected, "{input:?}");
        }
    }
}
