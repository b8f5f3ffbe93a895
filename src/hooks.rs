//! Hook commands run at the held/idle edges: `--while-held` runs while at
//! least one task is live, `--on-idle` runs once each time the last one goes.
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
    pub grace: Duration,
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
}

impl Hooks {
    pub fn new(config: HookConfig) -> Self {
        Hooks {
            config,
            running: Vec::new(),
            counts: HookCounts::default(),
        }
    }

    /// The machine became held: start `--while-held` unless one is running.
    pub fn held(&mut self) {
        let active = self
            .running
            .iter()
            .any(|r| r.kind == Kind::WhileHeld && r.kill_at.is_none());
        if !active && let Some(command) = self.config.while_held.clone() {
            self.spawn(Kind::WhileHeld, &command);
        }
    }

    /// The machine became idle: stop `--while-held`, run `--on-idle` once.
    pub fn idle(&mut self, mono: Instant) {
        self.stop_while_held(mono);
        if let Some(command) = self.config.on_idle.clone() {
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
