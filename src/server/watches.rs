//! The pidfds that watch bound tasks' processes, registered with the poll
//! under tokens of their own, and the [`Processes`] the core asks while
//! planning (a pidfd opened for a new binding is kept until the commit's
//! [`WatchChange`] says to watch it).

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use tracing::warn;

use super::core::{Core, Processes, WatchChange};
use crate::ids::IdMap;
use crate::process::{self, Credentials};
use crate::tasks::{Binding, Holder, TaskName};

/// Tokens of the pidfds start here, far above any connection token (2^62
/// connections would take centuries), and are never reused: a late event
/// for a dropped watch finds no owner.
pub const FIRST_WATCH: usize = 1 << (usize::BITS - 2);

/// A pidfd watching a bound task's process, registered under `token`.
#[derive(Debug)]
struct Watch {
    token: Token,
    pidfd: OwnedFd,
    binding: Binding,
}

/// The watched processes.
///
/// Invariant: `by_token` maps each watch's token to its task, one entry
/// per entry of `by_task`; both change only through `watch` and `unwatch`.
pub struct Watches {
    registry: Registry,
    by_task: IdMap<TaskName, Watch>,
    by_token: HashMap<Token, TaskName>,
    next_token: usize,
    /// Pidfds opened while planning this turn's bindings, watched once the
    /// batch is committed (dropped if it is not).
    staged: IdMap<TaskName, (Binding, OwnedFd)>,
}

impl Watches {
    pub fn new(registry: Registry) -> Watches {
        Watches {
            registry,
            by_task: IdMap::default(),
            by_token: HashMap::new(),
            next_token: FIRST_WATCH,
            staged: IdMap::default(),
        }
    }

    /// Carries out the core's watch changes; a process that cannot be
    /// watched any more is reported to the core.
    pub fn apply(&mut self, core: &mut Core) {
        let changes = core.take_watch_changes();
        if changes.is_empty() && self.staged.is_empty() {
            // Most turns: clearing an empty map still wipes its control
            // bytes, three times a turn.
            return;
        }
        for change in changes {
            match change {
                WatchChange::Unwatch(name) => {
                    self.unwatch(&name);
                }
                WatchChange::Watch(name, binding) => {
                    self.unwatch(&name);
                    let pidfd = match self.staged.remove(&name) {
                        Some((staged, pidfd)) if staged == binding => Some(pidfd),
                        _ => reopen(binding),
                    };
                    match pidfd {
                        Some(pidfd) => {
                            if !self.watch(name.clone(), binding, pidfd) {
                                core.watch_failed(&name);
                            }
                        }
                        None => core.process_exited(name, binding),
                    }
                }
            }
        }
        self.staged.clear();
    }

    /// The readiness of `token`, a watch's: its process exited.
    pub fn exited(&mut self, token: Token, core: &mut Core) {
        let Some(name) = self.by_token.get(&token).cloned() else {
            return;
        };
        if let Some(binding) = self.unwatch(&name) {
            core.process_exited(name, binding);
        }
    }

    fn watch(&mut self, name: TaskName, binding: Binding, pidfd: OwnedFd) -> bool {
        let token = Token(self.next_token);
        self.next_token += 1;
        let registered =
            self.registry
                .register(&mut SourceFd(&pidfd.as_raw_fd()), token, Interest::READABLE);
        if let Err(e) = registered {
            warn!(task = %name, pid = binding.pid, error = %e, "cannot watch a bound process; the task ends at its expiry");
            return false;
        }
        self.by_token.insert(token, name.clone());
        self.by_task.insert(
            name,
            Watch {
                token,
                pidfd,
                binding,
            },
        );
        true
    }

    /// Stops watching `name`'s process; returns the binding it watched.
    fn unwatch(&mut self, name: &TaskName) -> Option<Binding> {
        let watch = self.by_task.remove(name)?;
        self.by_token.remove(&watch.token);
        let _ = self
            .registry
            .deregister(&mut SourceFd(&watch.pidfd.as_raw_fd()));
        Some(watch.binding)
    }
}

impl Processes for Watches {
    fn bind(&mut self, name: &TaskName, pid: u32) -> Result<Binding, (u16, String)> {
        let (pidfd, start_time) = process::open_binding(pid)?;
        let binding = Binding { pid, start_time };
        self.staged.insert(name.clone(), (binding, pidfd));
        Ok(binding)
    }

    fn holder(&mut self, credentials: Credentials) -> Holder {
        process::holder(credentials)
    }
}

/// A fresh pidfd for `binding`'s process, if it still runs: the same pid
/// with the same start time (a reused pid has a later one).
fn reopen(binding: Binding) -> Option<OwnedFd> {
    match process::open_binding(binding.pid) {
        Ok((pidfd, started)) if started == binding.start_time => Some(pidfd),
        _ => None,
    }
}
