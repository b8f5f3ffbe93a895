//! Hook commands run at the held/idle edges: `--while-held` runs while at
//! least one task is live, `--on-idle` runs once each time the last one goes.
//!
//! Each hook runs as `sh -c CMD` in its own process group, so a stop signal
//! reaches everything it started (`systemd-inhibit … sleep infinity`). Its
//! stdout and stderr go to the daemon's stderr, which is the daemon's log.
//! Children are reaped by the reactor on SIGCHLD and at every turn: no
//! zombies, and a hook that fails is logged, never fatal.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tracing::{info, warn};

/// Time a stopped `--while-held` command gets between SIGTERM and SIGKILL.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

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
        let spawned = Command::new("/bin/sh")
            .arg("-c")
            .arg(command)
            .stdin(Stdio::null())
            .stdout(log_output())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn();
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

/// The daemon's stderr, duplicated, so a hook's stdout goes to the log too.
fn log_output() -> Stdio {
    use std::os::fd::AsFd;
    match std::io::stderr().as_fd().try_clone_to_owned() {
        Ok(fd) => Stdio::from(fd),
        Err(_) => Stdio::null(),
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
