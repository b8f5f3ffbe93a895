//! What the daemon logs about tasks and refusals, and how repeats are
//! folded (see [`Folder`]): nothing an outside party can repeat at will is
//! logged once per event.
//!
//! Pure apart from the log itself: time is passed in. Depends on
//! [`logging`](crate::logging), [`metrics`](crate::metrics) and
//! [`tasks`](crate::tasks).

use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::logging::{Folder, Summary};
use crate::metrics::{Metrics, Refusal};
use crate::tasks::{Change, Removal, TaskError, TaskName};

/// Per-task lines are folded by owner and kind.
pub type TaskLines = Folder<(Option<u32>, TaskLine)>;

/// Logs and counts a change that ownership or the per-uid quota refused:
/// the caller's uid, the task and the route, never the body. Repeats from
/// one uid are folded.
pub fn note_refusal(
    metrics: &mut Metrics,
    folder: &mut Folder<Noise>,
    (error, caller, task, route): (&TaskError, Option<u32>, &TaskName, &str),
    mono: Instant,
) {
    let why = match error {
        TaskError::NotOwner { .. } => Refusal::NotOwner,
        TaskError::UnknownCaller => Refusal::UnknownCaller,
        TaskError::UidFull { .. } => Refusal::UidQuota,
        _ => return,
    };
    metrics.refused(why);
    if !folder.admit(&Noise::ChangeRefused(why, caller), mono) {
        return;
    }
    let owner = match error {
        TaskError::NotOwner { owner, .. } => uid_text(*owner),
        _ => "-".to_string(),
    };
    info!(
        reason = why.as_str(),
        uid = %uid_text(caller),
        owner = %owner,
        task = %task,
        route,
        "refused a change"
    );
}

fn uid_text(uid: Option<u32>) -> String {
    uid.map_or_else(|| "unknown".to_string(), |uid| uid.to_string())
}

/// Logs a committed change to a task, folded per owner and kind:
/// creates, deletes, expiries and releases at info, refreshes at debug (a
/// heartbeat refreshes every minute).
pub fn log_change(folder: &mut TaskLines, change: &Change, owner: Option<u32>, mono: Instant) {
    let line = match change {
        Change::Put {
            task,
            created: false,
        } => {
            debug!(task = %task.name, expires_at = %task.expires_at, "task refreshed");
            return;
        }
        Change::Put { created: true, .. } => TaskLine::Created,
        Change::Remove { cause, .. } => match cause {
            Removal::Deleted => TaskLine::Deleted,
            Removal::Expired => TaskLine::Expired,
            Removal::Released { .. } => TaskLine::Released,
            Removal::Capped { .. } => TaskLine::Capped,
        },
    };
    if !folder.admit(&(owner, line), mono) {
        return;
    }
    let uid = uid_text(owner);
    match change {
        Change::Put { task, .. } => {
            info!(task = %task.name, uid, expires_at = %task.expires_at, "task created")
        }
        Change::Remove {
            name,
            cause: Removal::Released { pid },
        } => info!(task = %name, uid, pid, "task released: its process exited"),
        Change::Remove {
            name,
            cause: Removal::Capped { trip },
        } => warn!(
            task = %name,
            uid,
            held = %crate::time::human_span(trip.held),
            limit = %crate::time::human_span(trip.limit),
            "task released by its hold limit (max-held-for): a heartbeat may have outlived its purpose; the name is refused until a DELETE re-arms it"
        ),
        Change::Remove { name, .. } => info!(task = %name, uid, "task {}", line.as_str()),
    }
}

/// Logs the summaries of folded lines whose window has ended: one line per
/// kind of warning, and one per uid for its tasks' lines.
pub fn log_summaries(warnings: &mut Folder<Noise>, task_lines: &mut TaskLines, mono: Instant) {
    for Summary { key, folded, over } in warnings.take_due(mono) {
        warn!("{}", key.summary(folded, over));
    }
    let mut by_uid: Vec<Summary<(Option<u32>, TaskLine)>> = task_lines.take_due(mono);
    if by_uid.is_empty() {
        return;
    }
    by_uid.sort_by_key(|summary| summary.key);
    for group in by_uid.chunk_by(|a, b| a.key.0 == b.key.0) {
        let counts: Vec<String> = group
            .iter()
            .map(|summary| format!("{} {}", thousands(summary.folded), summary.key.1.as_str()))
            .collect();
        let over = group
            .iter()
            .map(|summary| summary.over)
            .max()
            .unwrap_or_default();
        info!(
            "uid {}: {} more tasks {} in the last {} s (each logged again once quieter)",
            uid_text(group[0].key.0),
            thousands(group.iter().map(|summary| summary.folded).sum()),
            counts.join(", "),
            over.as_secs()
        );
    }
}

/// `12345` as `12,345`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// A kind of task line, folded per owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TaskLine {
    Created,
    Deleted,
    Expired,
    Released,
    /// Released by its hold limit.
    Capped,
}

impl TaskLine {
    fn as_str(self) -> &'static str {
        match self {
            TaskLine::Created => "created",
            TaskLine::Deleted => "deleted",
            TaskLine::Expired => "expired",
            TaskLine::Released => "released",
            TaskLine::Capped => "released by their hold limit",
        }
    }
}

/// A warning an outside party can repeat at will, the key it is folded by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Noise {
    /// A connection or stream refused, by cause and uid.
    Refused(&'static str, Option<u32>),
    /// `accept` or registering a connection failed.
    AcceptFailed,
    /// A batch refused because the log is full.
    BatchRefused,
    /// A commit failed.
    CommitFailed,
    /// Reopening the store failed.
    StoreUnavailable,
    /// An event stream consumer fell behind and was cut off.
    StreamCutOff,
    /// A change refused by ownership or the quota, by reason and uid.
    ChangeRefused(Refusal, Option<u32>),
}

impl Noise {
    /// The line that stands for `folded` repeats over `over`.
    fn summary(&self, folded: u64, over: Duration) -> String {
        let n = thousands(folded);
        let secs = over.as_secs();
        match self {
            Noise::Refused(cause, uid) => format!(
                "refused {n} more connections or streams from uid {} in the last {secs} s ({cause})",
                uid_text(*uid)
            ),
            Noise::AcceptFailed => format!("{n} more accepts failed in the last {secs} s"),
            Noise::BatchRefused => {
                format!("refused {n} more batches in the last {secs} s: the log is full")
            }
            Noise::CommitFailed => format!("{n} more commits failed in the last {secs} s"),
            Noise::StoreUnavailable => {
                format!("the database could not be reopened {n} more times in the last {secs} s")
            }
            Noise::StreamCutOff => {
                format!("cut off {n} more event stream consumers in the last {secs} s")
            }
            Noise::ChangeRefused(why, uid) => format!(
                "refused {n} more changes from uid {} in the last {secs} s ({})",
                uid_text(*uid),
                why.as_str()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_grouped_by_thousands() {
        for (n, text) in [
            (0, "0"),
            (999, "999"),
            (1000, "1,000"),
            (12345, "12,345"),
            (1234567, "1,234,567"),
        ] {
            assert_eq!(thousands(n), text);
        }
    }

    #[test]
    fn a_summary_names_its_count_uid_and_cause() {
        let line =
            Noise::Refused("uid_connections", Some(65534)).summary(12345, Duration::from_secs(10));
        assert_eq!(
            line,
            "refused 12,345 more connections or streams from uid 65534 in the last 10 s (uid_connections)"
        );
    }
}
