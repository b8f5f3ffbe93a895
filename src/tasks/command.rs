//! What a client asks of the state and what it gets back: a [`Command`]
//! with its [`Claim`], the [`Outcome`] of one that was planned, and the
//! [`TaskError`] of one that was refused.
//!
//! Plain data and the client's messages; the rules that decide between
//! them live in `plan.rs` and `ownership.rs`.

use std::fmt;
use std::time::Duration;

use super::{Binding, Holder, Task, TaskName, Trip};

/// What a create or refresh says about the hold besides its expiry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Claim {
    /// Who asked; replaces the previous holder.
    pub holder: Option<Holder>,
    /// Why; `None` keeps the task's reason on a refresh.
    pub reason: Option<String>,
    /// The process the hold ends with; `None` keeps the task's binding on
    /// a refresh.
    pub binding: Option<Binding>,
    /// The longest the task may be held in one stretch; `None` keeps the
    /// task's on a refresh.
    pub max_held_for: Option<Duration>,
}

/// A request to change the state. `caller` is the uid of the process that
/// sent it (`None`: unknown), the owner of what it creates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `POST /v1/tasks`: create, refusing a name held by a live task.
    Create {
        name: TaskName,
        expire: Duration,
        claim: Claim,
        caller: Option<u32>,
    },
    /// `PUT`: refresh the expiry, or create when missing.
    Upsert {
        name: TaskName,
        expire: Duration,
        claim: Claim,
        caller: Option<u32>,
    },
    /// `DELETE`: remove a live task; with `bound_to`, only while it is
    /// still bound to that process (a hold releasing what it took, never
    /// what another holder took since).
    Delete {
        name: TaskName,
        caller: Option<u32>,
        bound_to: Option<u32>,
    },
}

impl Command {
    /// The task the command names.
    pub fn name(&self) -> &TaskName {
        match self {
            Command::Create { name, .. }
            | Command::Upsert { name, .. }
            | Command::Delete { name, .. } => name,
        }
    }

    /// The uid of the caller.
    pub fn caller(&self) -> Option<u32> {
        match self {
            Command::Create { caller, .. }
            | Command::Upsert { caller, .. }
            | Command::Delete { caller, .. } => *caller,
        }
    }

    /// The same command from `caller`.
    pub fn from_caller(mut self, uid: Option<u32>) -> Command {
        match &mut self {
            Command::Create { caller, .. }
            | Command::Upsert { caller, .. }
            | Command::Delete { caller, .. } => *caller = uid,
        }
        self
    }
}

/// What a planned command did, for its response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `Create` made the task.
    Created(Task),
    /// `Upsert` refreshed the task, or created it (`created`).
    Upserted { task: Task, created: bool },
    /// `Delete` removed it.
    Deleted,
}

/// Why a command was refused by the state. The `Display` is the client's
/// message.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaskError {
    /// `POST` of a name held by a live task.
    NameTaken(TaskName),
    /// The named task does not exist (or has expired).
    NotFound(TaskName),
    /// Creating would exceed the live task limit.
    Full { limit: usize },
    /// Binding would exceed the bound task limit.
    TooManyBound { limit: usize },
    /// `now + expire` is past the year 2554.
    TimeOverflow,
    /// A refresh or delete of a task `owner` created, by another uid.
    NotOwner { name: TaskName, owner: Option<u32> },
    /// A change by a caller whose uid the daemon could not read.
    UnknownCaller,
    /// Creating would take `uid` past its quota; it holds `count` rows.
    UidFull {
        uid: u32,
        count: usize,
        limit: usize,
    },
    /// A refresh binding `name` to another process while the process it
    /// is bound to still runs, sent by some other process: two holders of
    /// one name would end each other's hold.
    BoundElsewhere {
        name: TaskName,
        binding: Binding,
        owner: Option<u32>,
        reason: Option<String>,
    },
    /// A `DELETE` on condition that the task is bound to `pid`, and it is
    /// not (any more).
    NotBoundTo { name: TaskName, pid: u32 },
    /// A create or refresh of a name its hold limit released: it stays
    /// refused until a `DELETE` re-arms it.
    Tripped { name: TaskName, trip: Trip },
}

impl TaskError {
    /// Whether ownership refused the command (403), as opposed to the
    /// state (404, 409) or a limit.
    pub fn is_forbidden(&self) -> bool {
        matches!(self, TaskError::NotOwner { .. } | TaskError::UnknownCaller)
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::NameTaken(name) => write!(
                f,
                "task \"{name}\" already exists; refresh it with PUT /v1/tasks/{name} or choose another name"
            ),
            TaskError::NotFound(name) => write!(f, "task \"{name}\" does not exist or has expired"),
            TaskError::Full { limit } => write!(
                f,
                "the daemon already holds its limit of {limit} tasks; delete tasks you no longer need"
            ),
            TaskError::TooManyBound { limit } => write!(
                f,
                "the daemon already holds its limit of {limit} tasks bound to a process; drop \"pid\" or delete bound tasks you no longer need"
            ),
            TaskError::TimeOverflow => write!(f, "the expiry would be past the year 2554"),
            TaskError::NotOwner { name, owner } => {
                let owner = match owner {
                    Some(uid) => format!("uid {uid}"),
                    None => "a uid the daemon could not read".to_string(),
                };
                write!(
                    f,
                    "task \"{name}\" belongs to {owner}; only its owner or root may refresh or delete it: ask its owner, or root, to release it, or choose another name (a daemon run with --shared lets every local user change every task)"
                )
            }
            TaskError::UnknownCaller => write!(
                f,
                "the daemon could not read this connection's credentials (SO_PEERCRED), so it cannot tell whose tasks are yours and changes nothing; run the daemon with --shared if every local user is trusted"
            ),
            TaskError::UidFull { uid, count, limit } => write!(
                f,
                "uid {uid} already holds {count} tasks, its limit of {limit} (--max-tasks-per-uid); delete tasks it no longer needs"
            ),
            TaskError::BoundElsewhere {
                name,
                binding,
                owner,
                reason,
            } => {
                let owner =
                    owner.map_or_else(|| "an unknown uid".to_string(), |uid| format!("uid {uid}"));
                let what = reason
                    .as_deref()
                    .map_or_else(String::new, |reason| format!(", {reason:?}"));
                write!(
                    f,
                    "task \"{name}\" is held by process {} ({owner}{what}) until it exits; a second holder of the name would end the first one's hold when it finished: choose another name, or wait for that process to exit",
                    binding.pid
                )
            }
            TaskError::NotBoundTo { name, pid } => write!(
                f,
                "task \"{name}\" is no longer bound to process {pid} (another holder took it since); it was not deleted"
            ),
            TaskError::Tripped { name, trip } => write!(
                f,
                "task \"{name}\" was released at {} after being held for {}, its limit (max-held-for {}); a heartbeat may have outlived its purpose. DELETE /v1/tasks/{name} re-arms the name once that is checked",
                trip.at,
                crate::time::human_span(trip.held),
                crate::time::human_span(trip.limit),
            ),
        }
    }
}

impl std::error::Error for TaskError {}
