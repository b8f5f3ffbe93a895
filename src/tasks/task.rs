//! One row of the state: a [`Task`], the process that last wrote it
//! ([`Holder`]) and the process its hold may be bound to ([`Binding`]).
//!
//! Plain data with the few rules a row knows about itself (whether it is
//! live, how it moves with the clock); depends only on [`crate::time`].

use std::sync::Arc;
use std::time::Duration;

use super::TaskName;
use crate::time::Timestamp;

/// The process that last created or refreshed a task, as the daemon saw it
/// on the socket. Every field is `None` where it is unknown (a peer in
/// another PID namespace, a process gone before `/proc` was read).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Holder {
    pub pid: Option<u32>,
    pub uid: Option<u32>,
    /// The peer's command name (`/proc/PID/comm`).
    pub command: Option<Arc<str>>,
    pub parent_pid: Option<u32>,
    /// The parent's command line, arguments joined by spaces.
    pub parent_command: Option<Arc<str>>,
}

/// A hold bound to a process: it ends when that process exits.
///
/// `start_time` (`/proc/PID/stat` field 22, clock ticks since boot) tells
/// the process apart from a later one given the same pid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding {
    pub pid: u32,
    pub start_time: u64,
}

/// A hold on the machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    pub name: TaskName,
    /// When the task was created; a refresh keeps it.
    pub started_at: Timestamp,
    /// When the hold lapses. The task does not exist at or after this instant.
    pub expires_at: Timestamp,
    /// The latest writer.
    pub holder: Option<Holder>,
    /// Why the machine is held, in the client's words.
    pub reason: Option<String>,
    /// The process whose exit ends the hold.
    pub binding: Option<Binding>,
    /// The uid that created the task; a refresh keeps it. `None` when the
    /// creator's uid was unknown (possible only under
    /// [`Ownership::Shared`](super::Ownership::Shared)). Rows written before owners existed are
    /// root's.
    pub owner: Option<u32>,
}

impl Task {
    /// A task with no holder, reason, binding or owner.
    pub fn new(name: TaskName, started_at: Timestamp, expires_at: Timestamp) -> Task {
        Task {
            name,
            started_at,
            expires_at,
            holder: None,
            reason: None,
            binding: None,
            owner: None,
        }
    }

    /// Whether the hold is still in force at `now`.
    pub fn is_live(&self, now: Timestamp) -> bool {
        self.expires_at > now
    }

    /// The same hold moved `behind` earlier: it keeps its length and, seen
    /// from a clock set back by `behind`, its remaining time.
    pub fn moved_back(&self, behind: Duration) -> Task {
        Task {
            started_at: self.started_at.saturating_sub(behind),
            expires_at: self.expires_at.saturating_sub(behind),
            ..self.clone()
        }
    }

    /// The hold bounded to what a sane clock could have written at `now`:
    /// an expiry at most `max_expire` ahead, a start not in the future.
    pub(super) fn bounded(&self, now: Timestamp, max_expire: Duration) -> Task {
        let latest = now.checked_add(max_expire).unwrap_or(now);
        Task {
            started_at: self.started_at.min(now),
            expires_at: self.expires_at.min(latest),
            ..self.clone()
        }
    }
}
