//! The task state machine: tasks by name beside a deadline index, and the
//! plan / commit / apply cycle every change goes through.
//!
//! Pure: no socket, no disk, no clock. `now` is always an argument. Depends
//! only on [`crate::time`].
//!
//! A reactor turn builds a [`Batch`]: due expiries first, then each command
//! planned with [`Tasks::plan`], which sees the changes already in the batch.
//! The batch is made durable by the store and only then applied with
//! [`Tasks::apply`]. If the commit fails the batch is dropped and the state is
//! untouched, so memory never runs ahead of disk.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::time::{ClockStep, Timestamp};

/// Longest task name in bytes. Long enough for a UUID with a prefix or a
/// `host:agent@pid` label; short enough that a list of many tasks stays small.
pub const MAX_NAME_LEN: usize = 128;

/// Default cap on live tasks. Each costs about 300 bytes of memory and a row
/// on disk; a client that leaks names in a loop is refused (507) long before
/// it can exhaust either, and nothing is ever evicted to make room.
pub const DEFAULT_MAX_TASKS: usize = 10_000;

/// A valid task name: 1 to [`MAX_NAME_LEN`] bytes of ASCII letters, digits
/// and `.` `_` `-` `:` `@`, starting with a letter or digit.
///
/// The set is safe to print in a log line or a shell, needs no escaping in a
/// URL path, and cannot be `.` or `..`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskName(String);

impl TaskName {
    /// Validates a name.
    ///
    /// # Errors
    /// [`NameError`] saying which rule the name breaks.
    pub fn parse(name: &str) -> Result<TaskName, NameError> {
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong { len: name.len() });
        }
        if let Some(bad) = name.chars().find(|&c| !is_name_char(c)) {
            return Err(NameError::BadChar(bad));
        }
        if !name.as_bytes()[0].is_ascii_alphanumeric() {
            return Err(NameError::BadStart);
        }
        Ok(TaskName(name.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TaskName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '@')
}

/// Why a task name was refused. The `Display` is the client's message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameError {
    Empty,
    TooLong { len: usize },
    BadChar(char),
    BadStart,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const RULE: &str = "a task name is 1 to 128 characters of letters, digits, '.', '_', '-', ':' and '@', starting with a letter or digit";
        match self {
            NameError::Empty => write!(f, "the task name is empty; {RULE}"),
            NameError::TooLong { len } => write!(f, "the task name is {len} bytes long; {RULE}"),
            NameError::BadChar(c) if c.is_control() => {
                write!(f, "the task name contains U+{:04X}; {RULE}", u32::from(*c))
            }
            NameError::BadChar(c) => write!(f, "the task name contains '{c}'; {RULE}"),
            NameError::BadStart => {
                write!(f, "the task name must start with a letter or digit; {RULE}")
            }
        }
    }
}

impl std::error::Error for NameError {}

/// The uid that may refresh or delete any task, and whose rows are not
/// counted against a per-uid quota: root can stop the daemon anyway.
pub const ROOT_UID: u32 = 0;

/// The least default per-uid quota: a user's agents, their heartbeats and
/// a few leaked names fit many times over.
pub const MIN_DEFAULT_MAX_TASKS_PER_UID: usize = 100;

/// The default per-uid quota for a daemon holding at most `max_tasks`: a
/// tenth of it, so that ten users fill the table before one user's leak
/// can; never less than [`MIN_DEFAULT_MAX_TASKS_PER_UID`] nor more than
/// `max_tasks`.
pub fn default_max_tasks_per_uid(max_tasks: usize) -> usize {
    (max_tasks / 10)
        .max(MIN_DEFAULT_MAX_TASKS_PER_UID)
        .min(max_tasks)
}

/// Who may change a task, and how many rows one uid may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// Any caller may refresh or delete any task, and no per-uid quota
    /// applies (`--shared`: every local user is trusted).
    Shared,
    /// Only a task's owner (the uid that created it) and root may refresh
    /// or delete it; a caller whose uid is unknown may change nothing; a
    /// uid other than root holds at most `max_per_uid` rows.
    Owned { max_per_uid: usize },
}

/// Longest `reason` in bytes: a sentence or a command line, short enough
/// that a list of thousands of tasks stays small and a log line readable.
pub const MAX_REASON_LEN: usize = 256;

/// Default cap on tasks bound to a process. Each binding holds one
/// descriptor (a pidfd) for its lifetime: with the default 512 connections
/// this fits under a hard descriptor limit of 4096, the smallest common
/// one, once the daemon has raised its soft limit to it.
pub const DEFAULT_MAX_BOUND: usize = 1024;

/// A valid reason: 1 to [`MAX_REASON_LEN`] bytes of printable text (no
/// control characters or Unicode line and paragraph separators, so it
/// prints on one line of a log or a table).
///
/// # Errors
/// A sentence naming the rule.
pub fn check_reason(reason: &str) -> Result<(), String> {
    const RULE: &str = "a reason is 1 to 256 bytes of printable text";
    if reason.is_empty() {
        return Err(format!("the reason is empty; {RULE}"));
    }
    if reason.len() > MAX_REASON_LEN {
        return Err(format!("the reason is {} bytes long; {RULE}", reason.len()));
    }
    if let Some(bad) = reason
        .chars()
        .find(|&c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}'))
    {
        return Err(format!(
            "the reason contains U+{:04X}; {RULE}",
            u32::from(bad)
        ));
    }
    Ok(())
}

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
    /// [`Ownership::Shared`]). Rows written before owners existed are
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
    fn bounded(&self, now: Timestamp, max_expire: Duration) -> Task {
        let latest = now.checked_add(max_expire).unwrap_or(now);
        Task {
            started_at: self.started_at.min(now),
            expires_at: self.expires_at.min(latest),
            ..self.clone()
        }
    }
}

/// What [`Tasks::plan_step_back`] or [`Tasks::plan_load`] planned, row by row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rebased {
    /// Rows moved back with the clock.
    pub moved: usize,
    /// Rows whose expiry lay more than the maximum expiry ahead, bounded.
    pub clamped: Vec<TaskName>,
    /// Rows due, removed as expired.
    pub expired: usize,
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

/// One row-level change: what the store writes and the state applies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Insert or replace a task. `created` is false for a refresh.
    Put { task: Task, created: bool },
    /// Remove a task's row, for `cause`.
    Remove { name: TaskName, cause: Removal },
}

/// Why a task's row is removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removal {
    /// A `DELETE`.
    Deleted,
    /// Its deadline passed.
    Expired,
    /// The process it was bound to exited (or, found at start-up, is gone).
    Released { pid: u32 },
}

impl Change {
    /// The name of the task this change touches.
    pub fn name(&self) -> &TaskName {
        match self {
            Change::Put { task, .. } => &task.name,
            Change::Remove { name, .. } => name,
        }
    }
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
        }
    }
}

impl std::error::Error for TaskError {}

/// Refuses to bind `existing` to another process while the one it is bound
/// to runs, unless that very process asks (a holder handing its hold to the
/// command it started). A bound task's row lives exactly as long as its
/// process: the exit's release removes it.
///
/// # Errors
/// [`TaskError::BoundElsewhere`].
fn check_rebinding(existing: &Task, claim: &Claim) -> Result<(), TaskError> {
    let (Some(bound), Some(wanted)) = (existing.binding, claim.binding) else {
        return Ok(());
    };
    let asker = claim.holder.as_ref().and_then(|holder| holder.pid);
    if bound == wanted || asker == Some(bound.pid) {
        return Ok(());
    }
    Err(TaskError::BoundElsewhere {
        name: existing.name.clone(),
        binding: bound,
        owner: existing.owner,
        reason: existing.reason.clone(),
    })
}

/// Changes planned in one reactor turn, to be committed together.
///
/// Invariant: `latest` holds, for every name in `changes`, the row as the
/// last change leaves it (`None`: removed), `rows_delta` is the number of
/// rows the batch adds minus the number it removes, `bound_delta` the
/// same for rows bound to a process, and `owned_delta` the same for the
/// rows of each owner uid.
#[derive(Debug, Default)]
pub struct Batch {
    changes: Vec<Change>,
    latest: BTreeMap<TaskName, Option<Task>>,
    rows_delta: isize,
    /// The wall-clock step this batch records (its `clock_stepped` event).
    clock_step: Option<ClockStep>,
    bound_delta: isize,
    owned_delta: BTreeMap<u32, isize>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Batch::default()
    }

    /// The changes in the order they were planned.
    pub fn changes(&self) -> &[Change] {
        &self.changes
    }

    /// Whether nothing was planned: no change and no clock step.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.clock_step.is_none()
    }

    /// Records a step of the wall clock, for its event.
    pub fn note_clock_step(&mut self, step: ClockStep) {
        self.clock_step = Some(step);
    }

    /// The wall-clock step this batch records.
    pub fn clock_step(&self) -> Option<ClockStep> {
        self.clock_step
    }

    /// Number of changes.
    pub fn len(&self) -> usize {
        self.changes.len()
    }

    /// Rows the batch adds minus rows it removes.
    pub fn rows_delta(&self) -> isize {
        self.rows_delta
    }
}

/// All tasks, indexed by name and by deadline.
///
/// Invariant: `deadlines` holds exactly one `(expires_at, name)` for each
/// entry of `by_name`, `bound` counts the entries with a binding, and
/// `owned` maps each owner uid to the number of entries it owns (no zero
/// counts). `by_name` and `deadlines` change only through `insert`,
/// `remove` and the bulk `load`; `bound` and `owned` only through
/// `count_row`, which all three call.
/// Rows whose deadline has passed may remain until the next expiry batch
/// removes them, but no read or command ever sees them.
#[derive(Debug)]
pub struct Tasks {
    by_name: BTreeMap<TaskName, Task>,
    deadlines: BTreeSet<(Timestamp, TaskName)>,
    bound: usize,
    owned: BTreeMap<u32, usize>,
    max_tasks: usize,
    max_bound: usize,
    ownership: Ownership,
}

impl Tasks {
    /// An empty state that refuses to hold more than `max_tasks` tasks.
    pub fn new(max_tasks: usize) -> Self {
        Tasks {
            by_name: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            bound: 0,
            owned: BTreeMap::new(),
            max_tasks,
            max_bound: DEFAULT_MAX_BOUND,
            ownership: Ownership::Shared,
        }
    }

    /// The same state enforcing `ownership` (the default is
    /// [`Ownership::Shared`]).
    pub fn with_ownership(mut self, ownership: Ownership) -> Self {
        self.ownership = ownership;
        self
    }

    /// Rows owned by `uid`, live or awaiting expiry.
    pub fn owned_by(&self, uid: u32) -> usize {
        self.owned.get(&uid).copied().unwrap_or(0)
    }

    /// The same state refusing to bind more than `max_bound` tasks to a
    /// process.
    pub fn with_max_bound(mut self, max_bound: usize) -> Self {
        self.max_bound = max_bound;
        self
    }

    /// The binding of the row called `name`, live or awaiting expiry.
    pub fn binding_of(&self, name: &TaskName) -> Option<Binding> {
        self.by_name.get(name).and_then(|task| task.binding)
    }

    /// The owner of the row called `name`, live or awaiting expiry.
    pub fn owner_of(&self, name: &TaskName) -> Option<u32> {
        self.by_name.get(name).and_then(|task| task.owner)
    }

    /// Rows bound to a process, each with the binding.
    pub fn bound(&self) -> impl Iterator<Item = (&TaskName, Binding)> {
        self.by_name
            .values()
            .filter_map(|task| Some((&task.name, task.binding?)))
    }

    /// Plans the release of `name` because process `binding` exited, if the
    /// row (as `batch` leaves it) is still bound to that very process.
    /// Returns whether it was planned. A row past its deadline is released
    /// too: the release is the truer cause.
    pub fn release(&self, batch: &mut Batch, name: &TaskName, binding: Binding) -> bool {
        let row = match batch.latest.get(name) {
            Some(row) => row.clone(),
            None => self.by_name.get(name).cloned(),
        };
        if row.is_none_or(|task| task.binding != Some(binding)) {
            return false;
        }
        self.push(
            batch,
            Change::Remove {
                name: name.clone(),
                cause: Removal::Released { pid: binding.pid },
            },
        );
        true
    }

    /// Loads tasks read from the store, expired ones included: the first
    /// expiry batch removes those durably. Loading never refuses a task for
    /// the limit, since every one of them was acknowledged.
    pub fn load(&mut self, tasks: impl IntoIterator<Item = Task>) {
        if !self.by_name.is_empty() {
            for task in tasks {
                self.insert(task);
            }
            return;
        }
        // Into an empty state (start-up, a reload): built in bulk from
        // sorted input, several times faster than one insert at a time
        // for 100k tasks. A name given twice keeps its last task.
        let mut rows: Vec<(TaskName, Task)> = tasks
            .into_iter()
            .map(|task| (task.name.clone(), task))
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        rows.reverse();
        rows.dedup_by(|later, earlier| later.0 == earlier.0);
        self.by_name = rows.into_iter().rev().collect();
        self.deadlines = self
            .by_name
            .values()
            .map(|task| (task.expires_at, task.name.clone()))
            .collect();
        self.bound = 0;
        self.owned.clear();
        let by_name = std::mem::take(&mut self.by_name);
        for task in by_name.values() {
            self.count_row(task, true);
        }
        self.by_name = by_name;
    }

    /// The live task called `name`.
    pub fn get(&self, name: &TaskName, now: Timestamp) -> Option<&Task> {
        self.by_name.get(name).filter(|task| task.is_live(now))
    }

    /// Live tasks, ordered by name.
    pub fn live(&self, now: Timestamp) -> impl Iterator<Item = &Task> {
        self.by_name.values().filter(move |task| task.is_live(now))
    }

    /// Number of rows held, live or awaiting their expiry batch.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether no rows are held.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The earliest deadline: when the caller must come back to expire it.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// The latest deadline of any row.
    pub fn last_deadline(&self) -> Option<Timestamp> {
        self.deadlines.last().map(|(at, _)| *at)
    }

    /// Plans the removal of every row due at `now` into `batch`, unless the
    /// batch already changes that row. Returns how many were planned.
    pub fn expire_due(&self, batch: &mut Batch, now: Timestamp) -> usize {
        self.expire_due_at_most(batch, now, usize::MAX)
    }

    /// As [`expire_due`](Self::expire_due), planning at most `limit`
    /// removals (the earliest deadlines first); the rest stay due, invisible
    /// to every request, for a later batch.
    pub fn expire_due_at_most(&self, batch: &mut Batch, now: Timestamp, limit: usize) -> usize {
        let mut planned = 0;
        for (_, name) in self.deadlines.iter().take_while(|(at, _)| *at <= now) {
            if planned == limit {
                break;
            }
            if !batch.latest.contains_key(name) {
                self.push(
                    batch,
                    Change::Remove {
                        name: name.clone(),
                        cause: Removal::Expired,
                    },
                );
                planned += 1;
            }
        }
        planned
    }

    /// Plans following a wall clock set back by `behind`, `now` being the
    /// time after the step: every row moves back by `behind`, so each live
    /// hold keeps its remaining time exactly, and rows that were already due
    /// are removed. Rows the batch already changes are left to it. The batch
    /// records the step.
    pub fn plan_step_back(&self, batch: &mut Batch, behind: Duration, now: Timestamp) -> Rebased {
        batch.note_clock_step(ClockStep::Backward(behind));
        self.plan_rows(batch, now, |task| task.moved_back(behind), |_| false)
    }

    /// Plans the checks on rows just loaded at start-up, at `now`: when the
    /// clock was set back while the daemon was down (`step_back`), every row
    /// moves back with it as in [`plan_step_back`](Self::plan_step_back);
    /// then a row whose expiry lies more than `max_expire` ahead (no sane
    /// clock wrote it under this limit) is bounded to `now + max_expire`;
    /// and rows due are removed.
    pub fn plan_load(
        &self,
        batch: &mut Batch,
        now: Timestamp,
        max_expire: Duration,
        step_back: Option<Duration>,
    ) -> Rebased {
        if let Some(behind) = step_back {
            batch.note_clock_step(ClockStep::Backward(behind));
        }
        let behind = step_back.unwrap_or(Duration::ZERO);
        let latest = now.checked_add(max_expire).unwrap_or(now);
        self.plan_rows(
            batch,
            now,
            |task| task.moved_back(behind).bounded(now, max_expire),
            |task| task.moved_back(behind).expires_at > latest,
        )
    }

    /// Puts `adjust(row)` for every row the batch does not already change,
    /// or removes it as expired when that is due at `now`; counts the rows
    /// for which `clamped` holds apart from the ones merely moved.
    fn plan_rows(
        &self,
        batch: &mut Batch,
        now: Timestamp,
        adjust: impl Fn(&Task) -> Task,
        clamped: impl Fn(&Task) -> bool,
    ) -> Rebased {
        let mut planned = Rebased::default();
        for task in self.by_name.values() {
            if batch.latest.contains_key(&task.name) {
                continue;
            }
            let adjusted = adjust(task);
            if !adjusted.is_live(now) {
                planned.expired += 1;
                let name = task.name.clone();
                self.push(
                    batch,
                    Change::Remove {
                        name,
                        cause: Removal::Expired,
                    },
                );
            } else if adjusted != *task {
                if clamped(task) {
                    planned.clamped.push(task.name.clone());
                } else {
                    planned.moved += 1;
                }
                self.push(
                    batch,
                    Change::Put {
                        task: adjusted,
                        created: false,
                    },
                );
            }
        }
        planned
    }

    /// Checks `command` against the state as `batch` leaves it, and on
    /// success adds its change to the batch.
    ///
    /// # Errors
    /// [`TaskError`] when the state refuses the command; the batch is then
    /// unchanged.
    pub fn plan(
        &self,
        batch: &mut Batch,
        command: Command,
        now: Timestamp,
    ) -> Result<Outcome, TaskError> {
        match command {
            Command::Create {
                name,
                expire,
                claim,
                caller,
            } => {
                if self.current(batch, &name, now).is_some() {
                    return Err(TaskError::NameTaken(name));
                }
                let task = self.new_task(batch, name, expire, claim, caller, now)?;
                self.push(
                    batch,
                    Change::Put {
                        task: task.clone(),
                        created: true,
                    },
                );
                Ok(Outcome::Created(task))
            }
            Command::Upsert {
                name,
                expire,
                claim,
                caller,
            } => match self.current(batch, &name, now) {
                Some(existing) => {
                    self.check_may_change(&existing, caller)?;
                    check_rebinding(&existing, &claim)?;
                    let expires_at = now.checked_add(expire).ok_or(TaskError::TimeOverflow)?;
                    let binding = claim.binding.or(existing.binding);
                    if existing.binding.is_none() && binding.is_some() {
                        self.check_bound_room(batch)?;
                    }
                    let task = Task {
                        name,
                        started_at: existing.started_at,
                        expires_at,
                        holder: claim.holder.or(existing.holder),
                        reason: claim.reason.or(existing.reason),
                        binding,
                        owner: existing.owner,
                    };
                    self.push(
                        batch,
                        Change::Put {
                            task: task.clone(),
                            created: false,
                        },
                    );
                    Ok(Outcome::Upserted {
                        task,
                        created: false,
                    })
                }
                None => {
                    let task = self.new_task(batch, name, expire, claim, caller, now)?;
                    self.push(
                        batch,
                        Change::Put {
                            task: task.clone(),
                            created: true,
                        },
                    );
                    Ok(Outcome::Upserted {
                        task,
                        created: true,
                    })
                }
            },
            Command::Delete {
                name,
                caller,
                bound_to,
            } => {
                let Some(existing) = self.current(batch, &name, now) else {
                    return Err(TaskError::NotFound(name));
                };
                self.check_may_change(&existing, caller)?;
                if let Some(pid) = bound_to
                    && existing.binding.is_none_or(|binding| binding.pid != pid)
                {
                    return Err(TaskError::NotBoundTo { name, pid });
                }
                self.push(
                    batch,
                    Change::Remove {
                        name,
                        cause: Removal::Deleted,
                    },
                );
                Ok(Outcome::Deleted)
            }
        }
    }

    /// Applies a batch that the store has made durable.
    pub fn apply(&mut self, batch: Batch) {
        for change in batch.changes {
            match change {
                Change::Put { task, .. } => self.insert(task),
                Change::Remove { name, .. } => {
                    self.remove(&name);
                }
            }
        }
    }

    /// The live task as `batch` leaves it.
    fn current(&self, batch: &Batch, name: &TaskName, now: Timestamp) -> Option<Task> {
        match batch.latest.get(name) {
            Some(row) => row.clone().filter(|task| task.is_live(now)),
            None => self.get(name, now).cloned(),
        }
    }

    fn row_exists(&self, batch: &Batch, name: &TaskName) -> bool {
        match batch.latest.get(name) {
            Some(row) => row.is_some(),
            None => self.by_name.contains_key(name),
        }
    }

    /// Whether `caller` may refresh or delete `task`.
    fn check_may_change(&self, task: &Task, caller: Option<u32>) -> Result<(), TaskError> {
        match (self.ownership, caller) {
            (Ownership::Shared, _) => Ok(()),
            (Ownership::Owned { .. }, None) => Err(TaskError::UnknownCaller),
            (Ownership::Owned { .. }, Some(uid)) if uid == ROOT_UID || task.owner == Some(uid) => {
                Ok(())
            }
            (Ownership::Owned { .. }, Some(_)) => Err(TaskError::NotOwner {
                name: task.name.clone(),
                owner: task.owner,
            }),
        }
    }

    /// Whether `caller` may create the task called `name`: its uid is
    /// known and under its quota (a row of its own awaiting expiry is
    /// replaced, not added).
    fn check_may_create(
        &self,
        batch: &Batch,
        name: &TaskName,
        caller: Option<u32>,
    ) -> Result<(), TaskError> {
        let Ownership::Owned { max_per_uid } = self.ownership else {
            return Ok(());
        };
        let uid = caller.ok_or(TaskError::UnknownCaller)?;
        if uid == ROOT_UID {
            return Ok(());
        }
        let replaces_own = match batch.latest.get(name) {
            Some(row) => row.as_ref().is_some_and(|task| task.owner == Some(uid)),
            None => self
                .by_name
                .get(name)
                .is_some_and(|task| task.owner == Some(uid)),
        };
        let count = self.owned_by(uid) as isize + batch.owned_delta.get(&uid).copied().unwrap_or(0);
        let count = usize::try_from(count).unwrap_or(0);
        if !replaces_own && count >= max_per_uid {
            return Err(TaskError::UidFull {
                uid,
                count,
                limit: max_per_uid,
            });
        }
        Ok(())
    }

    /// A fresh task owned by `caller`, if ownership and the limits leave
    /// room for its row (and binding).
    fn new_task(
        &self,
        batch: &Batch,
        name: TaskName,
        expire: Duration,
        claim: Claim,
        caller: Option<u32>,
        now: Timestamp,
    ) -> Result<Task, TaskError> {
        self.check_may_create(batch, &name, caller)?;
        let rows = self.by_name.len() as isize + batch.rows_delta;
        let row_exists = self.row_exists(batch, &name);
        if !row_exists && rows >= self.max_tasks as isize {
            return Err(TaskError::Full {
                limit: self.max_tasks,
            });
        }
        let was_bound = self.row_binding(batch, &name).is_some();
        if claim.binding.is_some() && !was_bound {
            self.check_bound_room(batch)?;
        }
        let expires_at = now.checked_add(expire).ok_or(TaskError::TimeOverflow)?;
        Ok(Task {
            name,
            started_at: now,
            expires_at,
            holder: claim.holder,
            reason: claim.reason,
            binding: claim.binding,
            owner: caller,
        })
    }

    /// The binding of the row (live or not) as `batch` leaves it.
    fn row_binding(&self, batch: &Batch, name: &TaskName) -> Option<Binding> {
        match batch.latest.get(name) {
            Some(row) => row.as_ref().and_then(|task| task.binding),
            None => self.by_name.get(name).and_then(|task| task.binding),
        }
    }

    /// Whether one more row may be bound.
    fn check_bound_room(&self, batch: &Batch) -> Result<(), TaskError> {
        if self.bound as isize + batch.bound_delta >= self.max_bound as isize {
            return Err(TaskError::TooManyBound {
                limit: self.max_bound,
            });
        }
        Ok(())
    }

    /// Records `change` in `batch`, keeping the batch invariant.
    fn push(&self, batch: &mut Batch, change: Change) {
        let name = change.name().clone();
        let existed = self.row_exists(batch, &name);
        let was_bound = self.row_binding(batch, &name).is_some();
        let old_owner = match batch.latest.get(&name) {
            Some(row) => row.as_ref().and_then(|task| task.owner),
            None => self.by_name.get(&name).and_then(|task| task.owner),
        };
        let row = match &change {
            Change::Put { task, .. } => Some(task.clone()),
            Change::Remove { .. } => None,
        };
        batch.rows_delta += match (existed, row.is_some()) {
            (false, true) => 1,
            (true, false) => -1,
            _ => 0,
        };
        let is_bound = row.as_ref().is_some_and(|task| task.binding.is_some());
        batch.bound_delta += isize::from(is_bound) - isize::from(was_bound);
        if let Some(uid) = old_owner {
            *batch.owned_delta.entry(uid).or_default() -= 1;
        }
        if let Some(uid) = row.as_ref().and_then(|task| task.owner) {
            *batch.owned_delta.entry(uid).or_default() += 1;
        }
        batch.latest.insert(name, row);
        batch.changes.push(change);
    }

    fn insert(&mut self, task: Task) {
        let deadline = (task.expires_at, task.name.clone());
        self.count_row(&task, true);
        if let Some(old) = self.by_name.insert(task.name.clone(), task) {
            self.count_row(&old, false);
            self.deadlines.remove(&(old.expires_at, old.name));
        }
        self.deadlines.insert(deadline);
    }

    fn remove(&mut self, name: &TaskName) {
        if let Some(old) = self.by_name.remove(name) {
            self.count_row(&old, false);
            self.deadlines.remove(&(old.expires_at, old.name));
        }
    }

    /// Counts `task` in (`added`) or out of `bound` and `owned`.
    fn count_row(&mut self, task: &Task, added: bool) {
        if task.binding.is_some() {
            if added {
                self.bound += 1;
            } else {
                self.bound = self.bound.saturating_sub(1);
            }
        }
        if let Some(uid) = task.owner {
            if added {
                *self.owned.entry(uid).or_default() += 1;
            } else if let Some(count) = self.owned.get_mut(&uid) {
                *count -= 1;
                if *count == 0 {
                    self.owned.remove(&uid);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn at(seconds: u64) -> Timestamp {
        Timestamp::from_nanos(seconds * SECOND)
    }

    fn name(text: &str) -> TaskName {
        TaskName::parse(text).unwrap()
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// Plans one command in its own batch and applies it, as a commit would.
    fn run(tasks: &mut Tasks, command: Command, now: Timestamp) -> Result<Outcome, TaskError> {
        let mut batch = Batch::new();
        let outcome = tasks.plan(&mut batch, command, now);
        tasks.apply(batch);
        outcome
    }

    fn create(n: &str, expire: u64) -> Command {
        Command::Create {
            name: name(n),
            expire: secs(expire),
            claim: Claim::default(),
            caller: None,
        }
    }

    fn upsert(n: &str, expire: u64) -> Command {
        Command::Upsert {
            name: name(n),
            expire: secs(expire),
            claim: Claim::default(),
            caller: None,
        }
    }

    fn claim(reason: Option<&str>, pid: Option<u32>) -> Claim {
        Claim {
            holder: None,
            reason: reason.map(str::to_owned),
            binding: pid.map(|pid| Binding {
                pid,
                start_time: u64::from(pid) * 10,
            }),
        }
    }

    /// A refresh by process `from`, binding the task to process `to`.
    fn handed(n: &str, from: u32, to: u32) -> Command {
        let mut claim = claim(None, Some(to));
        claim.holder = Some(Holder {
            pid: Some(from),
            ..Holder::default()
        });
        Command::Upsert {
            name: name(n),
            expire: secs(5),
            claim,
            caller: None,
        }
    }

    fn delete(n: &str) -> Command {
        Command::Delete {
            name: name(n),
            caller: None,
            bound_to: None,
        }
    }

    #[test]
    fn a_bulk_load_keeps_the_last_task_of_a_name_and_indexes_every_deadline() {
        let task = |n: &str, expires: u64| Task::new(name(n), at(0), at(expires));
        let bound = |n: &str, expires: u64| Task {
            binding: Some(Binding {
                pid: 7,
                start_time: 1,
            }),
            ..task(n, expires)
        };
        let mut tasks = Tasks::new(10);
        tasks.load([bound("b", 5), task("a", 9), task("b", 7), bound("c", 3)]);
        assert_eq!(tasks.len(), 3);
        assert_eq!(tasks.bound().count(), 1);
        // The bound count follows the loaded rows: removing a bound task
        // must not underflow it.
        let mut alone = Tasks::new(10);
        alone.load([bound("c", 3)]);
        let mut batch = Batch::new();
        assert_eq!(alone.expire_due(&mut batch, at(4)), 1);
        alone.apply(batch);
        assert_eq!(alone.bound().count(), 0);
        assert_eq!(tasks.get(&name("b"), at(1)), Some(&task("b", 7)));
        assert_eq!(tasks.next_deadline(), Some(at(3)));
        assert_eq!(tasks.last_deadline(), Some(at(9)));
        // Loading into a state that has tasks goes one at a time.
        tasks.load([task("a", 2)]);
        assert_eq!(tasks.next_deadline(), Some(at(2)));
        assert_eq!(tasks.len(), 3);
        let mut batch = Batch::new();
        assert_eq!(tasks.expire_due(&mut batch, at(6)), 2);
    }

    #[test]
    fn names_follow_the_documented_rule() {
        for good in [
            "agent",
            "a",
            "A-1",
            "job_7.log",
            "host:agent@42",
            &"x".repeat(128),
        ] {
            assert!(TaskName::parse(good).is_ok(), "{good}");
        }
        let cases: &[(&str, NameError)] = &[
            ("", NameError::Empty),
            (&"x".repeat(129), NameError::TooLong { len: 129 }),
            ("a/b", NameError::BadChar('/')),
            ("a b", NameError::BadChar(' ')),
            ("a\0", NameError::BadChar('\0')),
            ("é", NameError::BadChar('é')),
            (".", NameError::BadStart),
            ("..", NameError::BadStart),
            ("-rf", NameError::BadStart),
        ];
        for (bad, expected) in cases {
            assert_eq!(&TaskName::parse(bad).unwrap_err(), expected, "{bad:?}");
        }
    }

    #[test]
    fn create_then_conflict_then_refresh_keeps_started_at() {
        let mut tasks = Tasks::new(10);
        let created = run(&mut tasks, create("agent", 3600), at(100)).unwrap();
        let expected = Task::new(name("agent"), at(100), at(3700));
        assert_eq!(created, Outcome::Created(expected.clone()));
        assert_eq!(
            run(&mut tasks, create("agent", 60), at(200)),
            Err(TaskError::NameTaken(name("agent")))
        );
        let refreshed = run(&mut tasks, upsert("agent", 60), at(200)).unwrap();
        assert_eq!(
            refreshed,
            Outcome::Upserted {
                task: Task {
                    expires_at: at(260),
                    ..expected
                },
                created: false,
            }
        );
        assert_eq!(
            tasks.get(&name("agent"), at(259)).unwrap().started_at,
            at(100)
        );
        assert_eq!(tasks.next_deadline(), Some(at(260)));
    }

    #[test]
    fn upsert_creates_when_missing() {
        let mut tasks = Tasks::new(10);
        assert!(matches!(
            run(&mut tasks, upsert("a", 5), at(1)),
            Ok(Outcome::Upserted { created: true, .. })
        ));
        assert!(matches!(
            run(&mut tasks, upsert("a", 5), at(2)),
            Ok(Outcome::Upserted { created: false, .. })
        ));
    }

    #[test]
    fn delete_and_not_found() {
        let mut tasks = Tasks::new(10);
        assert_eq!(
            run(&mut tasks, delete("a"), at(1)),
            Err(TaskError::NotFound(name("a")))
        );
        run(&mut tasks, create("a", 5), at(1)).unwrap();
        assert_eq!(run(&mut tasks, delete("a"), at(2)), Ok(Outcome::Deleted));
        assert!(tasks.is_empty());
        assert_eq!(tasks.next_deadline(), None);
    }

    #[test]
    fn an_expired_task_does_not_exist_before_its_timer_fires() {
        let mut tasks = Tasks::new(10);
        run(&mut tasks, create("a", 5), at(10)).unwrap();
        assert!(tasks.get(&name("a"), at(14)).is_some());
        // At the deadline exactly, the hold is over.
        assert!(tasks.get(&name("a"), at(15)).is_none());
        assert_eq!(tasks.live(at(15)).count(), 0);
        assert_eq!(
            run(&mut tasks, delete("a"), at(15)),
            Err(TaskError::NotFound(name("a")))
        );
        // POST creates it again, with a new started_at.
        let again = run(&mut tasks, create("a", 5), at(16)).unwrap();
        assert_eq!(
            again,
            Outcome::Created(Task::new(name("a"), at(16), at(21)))
        );
        // PUT of an expired task creates too.
        assert!(matches!(
            run(&mut tasks, upsert("a", 5), at(30)),
            Ok(Outcome::Upserted { created: true, .. })
        ));
    }

    #[test]
    fn expiry_plans_only_due_rows_and_goes_through_a_batch() {
        let mut tasks = Tasks::new(10);
        run(&mut tasks, create("a", 5), at(0)).unwrap();
        run(&mut tasks, create("b", 10), at(0)).unwrap();
        run(&mut tasks, create("c", 10), at(0)).unwrap();
        let mut batch = Batch::new();
        assert_eq!(tasks.expire_due(&mut batch, at(4)), 0);
        assert!(batch.is_empty());
        assert_eq!(tasks.expire_due(&mut batch, at(10)), 3);
        // Planned, not applied: memory is unchanged until the commit.
        assert_eq!(tasks.len(), 3);
        tasks.apply(batch);
        assert!(tasks.is_empty());
        assert_eq!(tasks.next_deadline(), None);
    }

    #[test]
    fn expiry_can_be_sliced() {
        let mut tasks = Tasks::new(10);
        for (n, expire) in [("a", 3), ("b", 1), ("c", 2)] {
            run(&mut tasks, create(n, expire), at(0)).unwrap();
        }
        let mut batch = Batch::new();
        assert_eq!(tasks.expire_due_at_most(&mut batch, at(5), 2), 2);
        let names: Vec<_> = batch.changes().iter().map(|c| c.name().as_str()).collect();
        assert_eq!(names, ["b", "c"]);
        tasks.apply(batch);
        assert_eq!(tasks.next_deadline(), Some(at(3)));
        assert_eq!(tasks.live(at(5)).count(), 0);
    }

    #[test]
    fn commands_in_one_batch_see_each_other() {
        let tasks = Tasks::new(10);
        let mut batch = Batch::new();
        assert!(tasks.plan(&mut batch, create("a", 5), at(0)).is_ok());
        assert_eq!(
            tasks.plan(&mut batch, create("a", 5), at(0)),
            Err(TaskError::NameTaken(name("a")))
        );
        assert_eq!(
            tasks.plan(&mut batch, delete("a"), at(0)),
            Ok(Outcome::Deleted)
        );
        assert_eq!(
            tasks.plan(&mut batch, delete("a"), at(0)),
            Err(TaskError::NotFound(name("a")))
        );
        assert_eq!(batch.len(), 2);
        // Nothing reached the state.
        assert!(tasks.get(&name("a"), at(0)).is_none());
    }

    #[test]
    fn a_refused_command_leaves_the_batch_alone() {
        let tasks = Tasks::new(10);
        let mut batch = Batch::new();
        assert!(tasks.plan(&mut batch, delete("nope"), at(0)).is_err());
        assert!(batch.is_empty());
    }

    #[test]
    fn dropping_a_batch_leaves_the_state_unchanged() {
        let mut tasks = Tasks::new(10);
        run(&mut tasks, create("a", 5), at(0)).unwrap();
        let mut batch = Batch::new();
        tasks.plan(&mut batch, delete("a"), at(1)).unwrap();
        tasks.plan(&mut batch, create("b", 5), at(1)).unwrap();
        drop(batch); // the commit failed
        assert!(tasks.get(&name("a"), at(1)).is_some());
        assert!(tasks.get(&name("b"), at(1)).is_none());
    }

    #[test]
    fn the_limit_refuses_new_names_and_evicts_nothing() {
        let mut tasks = Tasks::new(2);
        run(&mut tasks, create("a", 5), at(0)).unwrap();
        let mut batch = Batch::new();
        tasks.plan(&mut batch, create("b", 5), at(0)).unwrap();
        assert_eq!(
            tasks.plan(&mut batch, create("c", 5), at(0)),
            Err(TaskError::Full { limit: 2 })
        );
        assert_eq!(
            tasks.plan(&mut batch, upsert("c", 5), at(0)),
            Err(TaskError::Full { limit: 2 })
        );
        // Refreshing an existing task is always allowed at the limit.
        assert!(tasks.plan(&mut batch, upsert("a", 9), at(0)).is_ok());
        // Deleting makes room within the same batch.
        tasks.plan(&mut batch, delete("b"), at(0)).unwrap();
        assert!(tasks.plan(&mut batch, create("c", 5), at(0)).is_ok());
        tasks.apply(batch);
        assert_eq!(
            tasks
                .live(at(0))
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>(),
            ["a", "c"]
        );
    }

    #[test]
    fn expiry_does_not_override_a_change_in_the_same_batch() {
        let mut tasks = Tasks::new(10);
        run(&mut tasks, create("a", 5), at(0)).unwrap();
        let mut batch = Batch::new();
        // Recreated after expiry by a request in the same turn.
        tasks.plan(&mut batch, create("a", 5), at(6)).unwrap();
        assert_eq!(tasks.expire_due(&mut batch, at(6)), 0);
        tasks.apply(batch);
        assert_eq!(tasks.get(&name("a"), at(6)).unwrap().expires_at, at(11));
    }

    #[test]
    fn overflowing_time_is_refused() {
        let tasks = Tasks::new(10);
        let mut batch = Batch::new();
        let end = Timestamp::from_nanos(u64::MAX - 1);
        assert_eq!(
            tasks.plan(&mut batch, create("a", 5), end),
            Err(TaskError::TimeOverflow)
        );
        assert!(batch.is_empty());
    }

    fn remaining(tasks: &Tasks, n: &str, now: Timestamp) -> Duration {
        tasks
            .get(&name(n), now)
            .unwrap()
            .expires_at
            .saturating_since(now)
    }

    #[test]
    fn a_step_back_moves_every_hold_and_keeps_its_remaining_time() {
        let mut tasks = Tasks::new(10);
        run(&mut tasks, create("short", 10), at(10_000)).unwrap();
        run(&mut tasks, create("long", 3600), at(10_000)).unwrap();
        run(&mut tasks, create("due", 5), at(10_000)).unwrap();
        // The timeline reached 10_007 when the wall clock read 6_407: set
        // back an hour. "due" lapsed at 10_005 but awaits its expiry batch.
        let before = at(10_007);
        let behind = secs(3600);
        let after = before.saturating_sub(behind);
        let remaining_before = [
            remaining(&tasks, "short", before),
            remaining(&tasks, "long", before),
        ];
        let mut batch = Batch::new();
        let planned = tasks.plan_step_back(&mut batch, behind, after);
        assert_eq!(
            planned,
            Rebased {
                moved: 2,
                clamped: vec![],
                expired: 1
            }
        );
        assert_eq!(batch.clock_step(), Some(ClockStep::Backward(behind)));
        // Planned, not applied.
        assert_eq!(
            tasks.get(&name("long"), before).unwrap().started_at,
            at(10_000)
        );
        tasks.apply(batch);
        assert_eq!(
            [
                remaining(&tasks, "short", after),
                remaining(&tasks, "long", after)
            ],
            remaining_before
        );
        let long = tasks.get(&name("long"), after).unwrap();
        assert_eq!((long.started_at, long.expires_at), (at(6_400), at(10_000)));
        assert!(tasks.get(&name("due"), after).is_none());
        assert_eq!(tasks.len(), 2);
        // The short hold lapses 3 s later by the new clock, not an hour later.
        assert_eq!(tasks.next_deadline(), Some(at(6_410)));
    }

    #[test]
    fn a_step_back_leaves_rows_the_batch_already_changes() {
        let mut tasks = Tasks::new(10);
        run(&mut tasks, create("a", 60), at(1000)).unwrap();
        let mut batch = Batch::new();
        tasks.plan(&mut batch, delete("a"), at(1001)).unwrap();
        let planned = tasks.plan_step_back(&mut batch, secs(500), at(501));
        assert_eq!(planned, Rebased::default());
        assert_eq!(batch.len(), 1);
    }

    #[test]
    fn a_forward_step_expires_what_fell_due_and_nothing_else() {
        let mono = std::time::Instant::now();
        let mut clock = crate::time::ReactorClock::new(at(1000), mono);
        let mut tasks = Tasks::new(10);
        run(&mut tasks, create("ten-minutes", 600), clock.last()).unwrap();
        run(&mut tasks, create("two-hours", 7200), clock.last()).unwrap();
        // A wake after twenty minutes; one monotonic second.
        let reading = clock.observe(at(2201), mono + secs(1));
        assert_eq!(reading.step, Some(ClockStep::Forward(secs(1200))));
        let mut batch = Batch::new();
        batch.note_clock_step(reading.step.unwrap());
        assert_eq!(tasks.expire_due(&mut batch, reading.now), 1);
        tasks.apply(batch);
        assert_eq!(remaining(&tasks, "two-hours", reading.now), secs(6000 - 1));
        assert_eq!(tasks.len(), 1);
    }

    #[test]
    fn a_batch_with_only_a_clock_step_is_not_empty() {
        let mut batch = Batch::new();
        assert!(batch.is_empty());
        batch.note_clock_step(ClockStep::Forward(secs(5)));
        assert!(!batch.is_empty());
        assert_eq!(batch.len(), 0);
    }

    #[test]
    fn loading_bounds_what_no_sane_clock_wrote_and_follows_a_step_while_down() {
        let load = |rows: &[(&str, u64, u64)]| {
            let mut tasks = Tasks::new(10);
            tasks.load(
                rows.iter()
                    .map(|&(n, started, expires)| Task::new(name(n), at(started), at(expires))),
            );
            tasks
        };
        let max_expire = secs(3600);
        let now = at(100_000);
        // No step seen: a row 3 h ahead is bounded, one within the limit is
        // left alone, a due one is removed.
        let tasks = load(&[
            ("ahead", 110_000, 110_010),
            ("fine", 99_000, 100_600),
            ("due", 90_000, 100_000),
        ]);
        let mut batch = Batch::new();
        let planned = tasks.plan_load(&mut batch, now, max_expire, None);
        assert_eq!(
            planned,
            Rebased {
                moved: 0,
                clamped: vec![name("ahead")],
                expired: 1
            }
        );
        assert_eq!(batch.clock_step(), None);
        let mut tasks = tasks;
        tasks.apply(batch);
        let ahead = tasks.get(&name("ahead"), now).unwrap();
        assert_eq!((ahead.started_at, ahead.expires_at), (now, at(103_600)));
        assert_eq!(
            tasks.get(&name("fine"), now).unwrap().expires_at,
            at(100_600)
        );
        assert!(tasks.get(&name("due"), now).is_none());

        // The last commit was at 110_000 (3 h ahead of the clock now): the
        // rows move back with the step and keep the time they had left then.
        let tasks = load(&[("ahead", 110_000, 110_010), ("fine", 99_000, 100_600)]);
        let behind = ClockStep::back_while_down(Some(at(110_000)), now).unwrap();
        let mut batch = Batch::new();
        let planned = tasks.plan_load(&mut batch, now, max_expire, Some(behind));
        assert_eq!(
            planned,
            Rebased {
                moved: 1,
                clamped: vec![],
                expired: 1
            }
        );
        assert_eq!(batch.clock_step(), Some(ClockStep::Backward(behind)));
        let mut tasks = tasks;
        tasks.apply(batch);
        assert_eq!(remaining(&tasks, "ahead", now), secs(10));
        assert_eq!(tasks.len(), 1);
    }

    #[test]
    fn reason_and_binding_are_kept_by_a_refresh_that_does_not_give_them() {
        let mut tasks = Tasks::new(10);
        let command = Command::Create {
            name: name("a"),
            expire: secs(5),
            claim: claim(Some("build"), Some(7)),
            caller: None,
        };
        run(&mut tasks, command, at(0)).unwrap();
        run(&mut tasks, upsert("a", 5), at(1)).unwrap();
        let task = tasks.get(&name("a"), at(1)).unwrap();
        assert_eq!(task.reason.as_deref(), Some("build"));
        assert_eq!(task.binding.map(|b| b.pid), Some(7));
        // Bound process 7 hands the hold to process 8.
        let mut handover = claim(Some("test"), Some(8));
        handover.holder = Some(Holder {
            pid: Some(7),
            ..Holder::default()
        });
        let command = Command::Upsert {
            name: name("a"),
            expire: secs(5),
            claim: handover,
            caller: None,
        };
        run(&mut tasks, command, at(2)).unwrap();
        let task = tasks.get(&name("a"), at(2)).unwrap();
        assert_eq!(task.reason.as_deref(), Some("test"));
        assert_eq!(task.binding.map(|b| b.pid), Some(8));
        assert_eq!(tasks.bound().count(), 1);
    }

    #[test]
    fn a_release_removes_only_a_row_still_bound_to_that_process() {
        let mut tasks = Tasks::new(10);
        let bound = |n: &str, pid| Command::Upsert {
            name: name(n),
            expire: secs(5),
            claim: claim(None, Some(pid)),
            caller: None,
        };
        run(&mut tasks, bound("a", 7), at(0)).unwrap();
        let old = tasks.get(&name("a"), at(0)).unwrap().binding.unwrap();
        run(&mut tasks, handed("a", 7, 8), at(0)).unwrap();
        let mut batch = Batch::new();
        assert!(!tasks.release(&mut batch, &name("a"), old));
        assert!(!tasks.release(&mut batch, &name("nope"), old));
        let new = tasks.get(&name("a"), at(0)).unwrap().binding.unwrap();
        assert!(tasks.release(&mut batch, &name("a"), new));
        assert!(!tasks.release(&mut batch, &name("a"), new), "planned once");
        assert_eq!(
            batch.changes(),
            [Change::Remove {
                name: name("a"),
                cause: Removal::Released { pid: 8 }
            }]
        );
        tasks.apply(batch);
        assert!(tasks.is_empty());
        assert_eq!(tasks.bound().count(), 0);
    }

    #[test]
    fn a_bound_task_is_not_taken_by_another_process_while_its_own_runs() {
        let mut tasks = Tasks::new(10);
        run(&mut tasks, handed("agent", 7, 7), at(0)).unwrap();
        // The holder hands the hold to the command it started.
        run(&mut tasks, handed("agent", 7, 8), at(0)).unwrap();
        // Its heartbeat names the same process: a refresh.
        run(&mut tasks, handed("agent", 7, 8), at(1)).unwrap();
        // A second holder of the name is refused, naming the process.
        let refused = run(&mut tasks, handed("agent", 20, 20), at(1)).unwrap_err();
        assert_eq!(
            refused,
            TaskError::BoundElsewhere {
                name: name("agent"),
                binding: Binding {
                    pid: 8,
                    start_time: 80
                },
                owner: None,
                reason: None,
            }
        );
        assert!(refused.to_string().contains("process 8"), "{refused}");
        assert_eq!(tasks.binding_of(&name("agent")).map(|b| b.pid), Some(8));
        // A refresh that binds nothing keeps the binding (a curl heartbeat).
        run(&mut tasks, upsert("agent", 5), at(2)).unwrap();
        assert_eq!(tasks.binding_of(&name("agent")).map(|b| b.pid), Some(8));
        // Once the process is released, the name is free to bind again.
        let mut batch = Batch::new();
        let binding = tasks.binding_of(&name("agent")).unwrap();
        assert!(tasks.release(&mut batch, &name("agent"), binding));
        tasks
            .plan(&mut batch, handed("agent", 20, 20), at(3))
            .unwrap();
        tasks.apply(batch);
        assert_eq!(tasks.binding_of(&name("agent")).map(|b| b.pid), Some(20));
    }

    #[test]
    fn a_delete_on_condition_removes_only_a_task_bound_to_that_process() {
        let mut tasks = Tasks::new(10);
        let delete_if = |pid| Command::Delete {
            name: name("agent"),
            caller: None,
            bound_to: Some(pid),
        };
        run(&mut tasks, handed("agent", 7, 7), at(0)).unwrap();
        assert_eq!(
            run(&mut tasks, delete_if(8), at(1)),
            Err(TaskError::NotBoundTo {
                name: name("agent"),
                pid: 8
            })
        );
        assert!(tasks.get(&name("agent"), at(1)).is_some());
        assert_eq!(run(&mut tasks, delete_if(7), at(1)), Ok(Outcome::Deleted));
        assert_eq!(
            run(&mut tasks, delete_if(7), at(1)),
            Err(TaskError::NotFound(name("agent")))
        );
        // An unbound task is never bound to the process named.
        run(&mut tasks, upsert("agent", 5), at(2)).unwrap();
        assert!(matches!(
            run(&mut tasks, delete_if(7), at(2)),
            Err(TaskError::NotBoundTo { .. })
        ));
    }

    #[test]
    fn the_bound_limit_counts_bindings_not_rows() {
        let mut tasks = Tasks::new(10).with_max_bound(1);
        let bound = |n: &str, pid| Command::Upsert {
            name: name(n),
            expire: secs(5),
            claim: claim(None, Some(pid)),
            caller: None,
        };
        let mut batch = Batch::new();
        tasks.plan(&mut batch, bound("a", 1), at(0)).unwrap();
        assert_eq!(
            tasks.plan(&mut batch, bound("b", 2), at(0)),
            Err(TaskError::TooManyBound { limit: 1 })
        );
        // Unbound tasks and rebinding the bound one are fine.
        tasks.plan(&mut batch, create("b", 5), at(0)).unwrap();
        tasks.plan(&mut batch, handed("a", 1, 3), at(0)).unwrap();
        assert_eq!(
            tasks.plan(&mut batch, bound("b", 2), at(0)),
            Err(TaskError::TooManyBound { limit: 1 })
        );
        // Deleting the bound one makes room within the batch.
        tasks.plan(&mut batch, delete("a"), at(0)).unwrap();
        tasks.plan(&mut batch, bound("b", 2), at(0)).unwrap();
        tasks.apply(batch);
        assert_eq!(tasks.bound().count(), 1);
    }

    #[test]
    fn reasons_follow_the_rule() {
        assert!(check_reason("fix the failing tests: claude -p 'go'").is_ok());
        assert!(check_reason("été ✓").is_ok());
        assert!(check_reason(&"x".repeat(MAX_REASON_LEN)).is_ok());
        for bad in ["", "a\nb", "tab\there", "\u{7f}", "a\u{2028}b", "\u{85}"] {
            assert!(check_reason(bad).is_err(), "{bad:?}");
        }
        let long = check_reason(&"x".repeat(257)).unwrap_err();
        assert_eq!(
            long,
            "the reason is 257 bytes long; a reason is 1 to 256 bytes of printable text"
        );
    }

    fn owned(max_per_uid: usize) -> Tasks {
        Tasks::new(100).with_ownership(Ownership::Owned { max_per_uid })
    }

    fn by(uid: u32, command: Command) -> Command {
        command.from_caller(Some(uid))
    }

    #[test]
    fn only_the_owner_or_root_may_refresh_or_delete() {
        let mut tasks = owned(10);
        run(&mut tasks, by(1000, create("a", 60)), at(0)).unwrap();
        assert_eq!(tasks.get(&name("a"), at(0)).unwrap().owner, Some(1000));
        let not_owner = Err(TaskError::NotOwner {
            name: name("a"),
            owner: Some(1000),
        });
        assert_eq!(run(&mut tasks, by(1001, upsert("a", 5)), at(1)), not_owner);
        assert_eq!(run(&mut tasks, by(1001, delete("a")), at(1)), not_owner);
        // A create of a live name is a conflict whoever asks.
        assert_eq!(
            run(&mut tasks, by(1001, create("a", 5)), at(1)),
            Err(TaskError::NameTaken(name("a")))
        );
        // An unknown caller may change nothing.
        assert_eq!(
            run(&mut tasks, upsert("a", 5), at(1)),
            Err(TaskError::UnknownCaller)
        );
        assert_eq!(
            run(&mut tasks, create("b", 5), at(1)),
            Err(TaskError::UnknownCaller)
        );
        assert!(TaskError::UnknownCaller.is_forbidden());
        // Nothing changed.
        assert_eq!(tasks.get(&name("a"), at(1)).unwrap().expires_at, at(60));
        // Root refreshes without taking ownership; the owner deletes.
        run(&mut tasks, by(ROOT_UID, upsert("a", 5)), at(2)).unwrap();
        assert_eq!(tasks.get(&name("a"), at(2)).unwrap().owner, Some(1000));
        run(&mut tasks, by(1000, upsert("a", 5)), at(3)).unwrap();
        assert_eq!(
            run(&mut tasks, by(1000, delete("a")), at(3)),
            Ok(Outcome::Deleted)
        );
        // Once it is gone (or expired), a PUT by anyone creates it anew.
        run(&mut tasks, by(1000, create("a", 5)), at(4)).unwrap();
        assert!(matches!(
            run(&mut tasks, by(1001, upsert("a", 5)), at(9)),
            Ok(Outcome::Upserted { created: true, .. })
        ));
        assert_eq!(tasks.get(&name("a"), at(9)).unwrap().owner, Some(1001));
        assert_eq!((tasks.owned_by(1000), tasks.owned_by(1001)), (0, 1));
        run(&mut tasks, by(ROOT_UID, delete("a")), at(9)).unwrap();
        assert!(tasks.is_empty());
    }

    #[test]
    fn shared_lets_anyone_change_anything() {
        let mut tasks = Tasks::new(10);
        run(&mut tasks, by(1000, create("a", 60)), at(0)).unwrap();
        run(&mut tasks, by(1001, upsert("a", 5)), at(1)).unwrap();
        run(&mut tasks, upsert("a", 5), at(1)).unwrap();
        assert_eq!(tasks.get(&name("a"), at(1)).unwrap().owner, Some(1000));
        assert_eq!(
            run(&mut tasks, by(1001, delete("a")), at(2)),
            Ok(Outcome::Deleted)
        );
    }

    #[test]
    fn the_per_uid_quota_refuses_the_noisy_uid_only() {
        let mut tasks = owned(2);
        let mut batch = Batch::new();
        tasks
            .plan(&mut batch, by(1000, create("a", 5)), at(0))
            .unwrap();
        tasks
            .plan(&mut batch, by(1000, create("b", 5)), at(0))
            .unwrap();
        let full = Err(TaskError::UidFull {
            uid: 1000,
            count: 2,
            limit: 2,
        });
        assert_eq!(
            tasks.plan(&mut batch, by(1000, create("c", 5)), at(0)),
            full
        );
        assert_eq!(
            tasks.plan(&mut batch, by(1000, upsert("c", 5)), at(0)),
            full
        );
        // Others and root still create; the noisy uid still refreshes.
        tasks
            .plan(&mut batch, by(1001, create("d", 5)), at(0))
            .unwrap();
        tasks
            .plan(&mut batch, by(ROOT_UID, create("e", 5)), at(0))
            .unwrap();
        tasks
            .plan(&mut batch, by(ROOT_UID, create("f", 5)), at(0))
            .unwrap();
        tasks
            .plan(&mut batch, by(ROOT_UID, create("g", 5)), at(0))
            .unwrap();
        tasks
            .plan(&mut batch, by(1000, upsert("a", 9)), at(0))
            .unwrap();
        tasks.apply(batch);
        assert_eq!(
            (
                tasks.owned_by(1000),
                tasks.owned_by(1001),
                tasks.owned_by(0)
            ),
            (2, 1, 3)
        );
        assert_eq!(run(&mut tasks, by(1000, create("c", 5)), at(1)), full);
        // A delete by root makes room, within the same batch too.
        let mut batch = Batch::new();
        tasks
            .plan(&mut batch, by(ROOT_UID, delete("b")), at(1))
            .unwrap();
        tasks
            .plan(&mut batch, by(1000, create("c", 5)), at(1))
            .unwrap();
        assert_eq!(
            tasks.plan(&mut batch, by(1000, create("h", 5)), at(1)),
            full
        );
        tasks.apply(batch);
        // A row of its own awaiting expiry is replaced, not added; the
        // expiry frees the other.
        assert_eq!(tasks.len(), 6);
        run(&mut tasks, by(1000, upsert("a", 5)), at(9)).unwrap();
        assert_eq!(tasks.owned_by(1000), 2);
        let mut batch = Batch::new();
        assert_eq!(tasks.expire_due(&mut batch, at(9)), 5);
        tasks.apply(batch);
        assert_eq!(tasks.owned_by(1000), 1);
        assert_eq!(tasks.owned_by(ROOT_UID), 0);
    }

    #[test]
    fn the_owner_index_follows_every_path_a_row_takes() {
        let task = |n: &str, owner: Option<u32>, bound: bool| Task {
            owner,
            binding: bound.then_some(Binding {
                pid: 7,
                start_time: 70,
            }),
            ..Task::new(name(n), at(0), at(10))
        };
        // A bulk load counts owners and bindings (a name given twice once).
        let mut tasks = owned(10);
        tasks.load([
            task("a", Some(1000), true),
            task("b", Some(1000), false),
            task("b", Some(1001), false),
            task("c", None, false),
        ]);
        assert_eq!((tasks.owned_by(1000), tasks.owned_by(1001)), (1, 1));
        assert_eq!(tasks.bound().count(), 1);
        // A release, an expiry and a step back keep the counts right.
        let binding = tasks.binding_of(&name("a")).unwrap();
        let mut batch = Batch::new();
        assert!(tasks.release(&mut batch, &name("a"), binding));
        tasks.apply(batch);
        assert_eq!(tasks.owned_by(1000), 0);
        let mut batch = Batch::new();
        tasks.plan_step_back(&mut batch, secs(1), at(0));
        tasks.apply(batch);
        assert_eq!(tasks.owned_by(1001), 1);
        let mut batch = Batch::new();
        tasks.expire_due(&mut batch, at(10));
        tasks.apply(batch);
        assert!(tasks.is_empty());
        assert_eq!(tasks.owned_by(1001), 0);
        assert!(tasks.owned.is_empty(), "no zero counts are kept");
        assert_eq!(tasks.bound, 0);
    }

    #[test]
    fn the_default_quota_is_a_tenth_within_bounds() {
        assert_eq!(default_max_tasks_per_uid(DEFAULT_MAX_TASKS), 1000);
        assert_eq!(default_max_tasks_per_uid(500), 100);
        assert_eq!(default_max_tasks_per_uid(50), 50);
        assert_eq!(default_max_tasks_per_uid(100_000), 10_000);
    }

    #[test]
    fn list_is_ordered_by_name() {
        let mut tasks = Tasks::new(10);
        for n in ["b", "c", "a"] {
            run(&mut tasks, create(n, 5), at(0)).unwrap();
        }
        let names: Vec<_> = tasks
            .live(at(1))
            .map(|t| t.name.as_str().to_owned())
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
    }
}
