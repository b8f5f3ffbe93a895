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
    /// The longest this task may be held in one stretch, as its creator or
    /// latest refresh asked (`"max_held_for"`); the daemon's
    /// `--max-held-for` applies too, whichever is shorter.
    pub max_held_for: Option<Duration>,
}

/// A name released by its hold limit: creating it again is refused until
/// it is deleted (re-armed), so a forgotten refresh loop cannot simply take
/// it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trip {
    /// The owner of the task that was released.
    pub owner: Option<u32>,
    /// When it was released: its start plus the limit.
    pub at: Timestamp,
    /// How long it had been held.
    pub held: Duration,
    /// The limit that released it.
    pub limit: Duration,
}

#[cfg(test)]
impl Holder {
    /// Whether both command lines are the very copies `other` holds, not
    /// only equal ones: what the tests of sharing ask.
    pub(crate) fn shares_texts_with(&self, other: &Holder) -> bool {
        let same = |a: &Option<Arc<str>>, b: &Option<Arc<str>>| match (a, b) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        same(&self.command, &other.command) && same(&self.parent_command, &other.parent_command)
    }
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
            max_held_for: None,
        }
    }

    /// The limit on this task's stretch, under the daemon's `limit`: the
    /// shorter of the two, if either is set.
    pub fn hold_limit(&self, limit: Option<Duration>) -> Option<Duration> {
        match (limit, self.max_held_for) {
            (Some(daemon), Some(own)) => Some(daemon.min(own)),
            (daemon, own) => daemon.or(own),
        }
    }

    /// When the hold limit releases this task, if one applies.
    pub fn capped_at(&self, limit: Option<Duration>) -> Option<Timestamp> {
        let limit = self.hold_limit(limit)?;
        Some(
            self.started_at
                .checked_add(limit)
                .unwrap_or(Timestamp::from_nanos(u64::MAX)),
        )
    }

    /// The same task expiring no later than its hold limit allows.
    pub(super) fn capped(mut self, limit: Option<Duration>) -> Task {
        if let Some(at) = self.capped_at(limit) {
            self.expires_at = self.expires_at.min(at);
        }
        self
    }

    /// Why the task goes when its deadline passes: its hold limit, if that
    /// is what set the deadline, else its expiry.
    pub(super) fn removal_when_due(&self, limit: Option<Duration>) -> super::Removal {
        match (self.hold_limit(limit), self.capped_at(limit)) {
            (Some(limit), Some(at)) if self.expires_at >= at => super::Removal::Capped {
                trip: Trip {
                    owner: self.owner,
                    at: self.expires_at,
                    held: self.expires_at.saturating_since(self.started_at),
                    limit,
                },
            },
            _ => super::Removal::Expired,
        }
    }

    /// Whether the hold is still in force at `now`.
    pub fn is_live(&self, now: Timestamp) -> bool {
        self.expires_at > now
    }

    /// The task's two instants.
    pub fn times(&self) -> Times {
        Times {
            started_at: self.started_at,
            expires_at: self.expires_at,
        }
    }

    /// The same task with other instants.
    pub(super) fn with_times(&self, times: Times) -> Task {
        Task {
            started_at: times.started_at,
            expires_at: times.expires_at,
            ..self.clone()
        }
    }

    /// `times` for this task, expiring no later than its hold limit allows
    /// from the start they give: [`capped`](Self::capped) without a copy.
    pub(super) fn capped_times(&self, times: Times, limit: Option<Duration>) -> Times {
        match self.hold_limit(limit) {
            Some(limit) => Times {
                expires_at: times.expires_at.min(
                    times
                        .started_at
                        .checked_add(limit)
                        .unwrap_or(Timestamp::from_nanos(u64::MAX)),
                ),
                ..times
            },
            None => times,
        }
    }
}

/// A task's start and expiry: what a clock step or a load moves, worked out
/// before any task is copied (a load checks 100k of them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Times {
    pub started_at: Timestamp,
    pub expires_at: Timestamp,
}

impl Times {
    /// The same hold moved `behind` earlier: it keeps its length and, seen
    /// from a clock set back by `behind`, its remaining time.
    pub fn moved_back(self, behind: Duration) -> Times {
        Times {
            started_at: self.started_at.saturating_sub(behind),
            expires_at: self.expires_at.saturating_sub(behind),
        }
    }

    /// The hold bounded to what a sane clock could have written at `now`:
    /// an expiry at most `max_expire` ahead, a start not in the future.
    pub fn bounded(self, now: Timestamp, max_expire: Duration) -> Times {
        let latest = now.checked_add(max_expire).unwrap_or(now);
        Times {
            started_at: self.started_at.min(now),
            expires_at: self.expires_at.min(latest),
        }
    }
}
