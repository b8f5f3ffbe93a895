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
//!
//! The files say the concerns: `name.rs` the rules for names and reasons,
//! `task.rs` one row, `command.rs` what a client asks and gets back,
//! `batch.rs` the changes of one turn and the rows as they leave them,
//! `plan.rs` commands and process exits turned into changes, `expiry.rs`
//! what time does to the rows, `ownership.rs` who may change what. This
//! file holds the state itself, [`Tasks`], and the indexes that change
//! with it.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use crate::time::Timestamp;
use rows::Rows;

mod batch;
mod command;
mod deadlines;
mod expiry;
mod name;
mod ownership;
mod plan;
mod rows;
mod task;

pub use batch::{Batch, Change, Removal};
pub use command::{Claim, Command, Outcome, TaskError};
pub use expiry::Rebased;
pub use name::{MAX_NAME_LEN, MAX_REASON_LEN, NameError, TaskName, check_reason};
pub use ownership::{
    MIN_DEFAULT_MAX_TASKS_PER_UID, Ownership, ROOT_UID, default_max_tasks_per_uid,
};
pub use task::{Binding, Holder, Task, Times, Trip};

/// Default cap on live tasks. Each costs about 300 bytes of memory and a row
/// on disk; a client that leaks names in a loop is refused (507) long before
/// it can exhaust either, and nothing is ever evicted to make room.
pub const DEFAULT_MAX_TASKS: usize = 10_000;

/// The largest `--max-tasks` accepted: 100 million rows take some 60 GiB
/// of memory, past any machine this daemon holds awake, and the row index
/// stores positions in 32 bits.
pub const MAX_TASKS_CEILING: usize = 100_000_000;

/// Default cap on tasks bound to a process. Each binding holds one
/// descriptor (a pidfd) for its lifetime: with the default 512 connections
/// this fits under a hard descriptor limit of 4096, the smallest common
/// one, once the daemon has raised its soft limit to it.
pub const DEFAULT_MAX_BOUND: usize = 1024;

/// All tasks, indexed by name and by deadline.
///
/// Invariant: `bound` counts the rows of `by_name` with a binding, and
/// `owned` maps each owner uid to the number of rows it owns (no zero
/// counts). `by_name` (which keeps the rows' deadlines with them) changes
/// only through `insert`, `remove` and the bulk `load`; `bound` and
/// `owned` only through `count_row`, which all three call. The files beside this one read the
/// fields; only this one writes them.
/// Rows whose deadline has passed may remain until the next expiry batch
/// removes them, but no read or command ever sees them.
#[derive(Debug)]
pub struct Tasks {
    by_name: Rows,
    bound: usize,
    owned: BTreeMap<u32, usize>,
    max_tasks: usize,
    max_bound: usize,
    ownership: Ownership,
    /// `--max-held-for`: no task is held longer in one stretch.
    max_held_for: Option<Duration>,
    /// Names released by their hold limit, refused until re-armed.
    tripped: BTreeMap<TaskName, Trip>,
}

impl Tasks {
    /// An empty state that refuses to hold more than `max_tasks` tasks.
    pub fn new(max_tasks: usize) -> Self {
        Tasks {
            by_name: Rows::default(),
            bound: 0,
            owned: BTreeMap::new(),
            max_tasks,
            max_bound: DEFAULT_MAX_BOUND,
            ownership: Ownership::Shared,
            max_held_for: None,
            tripped: BTreeMap::new(),
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

    /// Every row, live or awaiting expiry, in no particular order (the
    /// usage report orders its own rows).
    pub fn stored_rows(&self) -> impl Iterator<Item = &Task> {
        self.by_name.values_unordered()
    }

    /// The row called `name`, live or awaiting expiry.
    pub fn stored(&self, name: &TaskName) -> Option<&Task> {
        self.by_name.get(name)
    }

    /// The owner of the row called `name`, live or awaiting expiry.
    pub fn owner_of(&self, name: &TaskName) -> Option<u32> {
        self.by_name.get(name).and_then(|task| task.owner)
    }

    /// Rows bound to a process, each with the binding, in no particular
    /// order.
    pub fn bound(&self) -> impl Iterator<Item = (&TaskName, Binding)> {
        self.by_name
            .values_unordered()
            .filter_map(|task| Some((&task.name, task.binding?)))
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
        // Into an empty state (start-up, a reload): built in bulk, several
        // times faster than one insert at a time for 100k tasks. A name
        // given twice keeps its last task, as inserting would.
        // Rows read from the tables share their command lines, and rows
        // replayed from the log theirs (`record::Texts`), but not across
        // the two: the tasks of one agent share one copy again, as live.
        let mut commands = HashSet::new();
        self.by_name = tasks
            .into_iter()
            .map(|mut task| {
                if let Some(holder) = &mut task.holder {
                    for text in [&mut holder.command, &mut holder.parent_command]
                        .into_iter()
                        .flatten()
                    {
                        *text = share(&mut commands, text);
                    }
                }
                task
            })
            .collect();
        self.bound = 0;
        self.owned.clear();
        let by_name = std::mem::take(&mut self.by_name);
        for task in by_name.values_unordered() {
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

    /// The first `k` live tasks by name: [`live`](Self::live)'s first `k`,
    /// with no sort of all the names when one came or went since the last
    /// walk.
    pub fn first_live(&self, now: Timestamp, k: usize) -> Vec<&Task> {
        self.by_name.first(k, |task| task.is_live(now))
    }

    /// How many tasks are live: [`live`](Self::live)'s count, from the
    /// rows due at `now` rather than a walk of them all.
    pub fn live_count(&self, now: Timestamp) -> usize {
        self.by_name.live_count(now)
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
        self.by_name.next_deadline()
    }

    /// The latest deadline of any row.
    pub fn last_deadline(&self) -> Option<Timestamp> {
        self.by_name.last_deadline()
    }

    /// Applies a batch that the store has made durable; returns it
    /// emptied, its room kept for planning the next (`Batch::drain`).
    pub fn apply(&mut self, mut batch: Batch) -> Batch {
        let (changes, rearmed) = batch.drain();
        for change in changes {
            match change {
                Change::Put { task, .. } => self.insert(task),
                Change::Remove { name, cause } => {
                    self.remove(&name);
                    if let Removal::Capped { trip } = cause {
                        self.tripped.insert(name, trip);
                    }
                }
            }
        }
        for name in rearmed {
            self.tripped.remove(&name);
        }
        batch.trim_room();
        batch
    }

    /// Names released by their hold limit and not re-armed since.
    pub fn tripped(&self) -> &BTreeMap<TaskName, Trip> {
        &self.tripped
    }

    /// Sets the tripped names, as the usage history recovered them.
    pub fn set_tripped(&mut self, tripped: BTreeMap<TaskName, Trip>) {
        self.tripped = tripped;
    }

    /// The daemon's hold limit (`--max-held-for`), if set.
    pub fn hold_limit(&self) -> Option<Duration> {
        self.max_held_for
    }

    /// The same state releasing every task held longer than `limit` in one
    /// stretch.
    pub fn with_max_held_for(mut self, limit: Option<Duration>) -> Self {
        self.max_held_for = limit;
        self
    }

    fn insert(&mut self, task: Task) {
        self.count_row(&task, true);
        if let Some(old) = self.by_name.insert(task) {
            self.count_row(&old, false);
        }
    }

    fn remove(&mut self, name: &TaskName) {
        if let Some(old) = self.by_name.remove(name) {
            self.count_row(&old, false);
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

/// The value equal to `value` already in `seen`, or `value` added there:
/// one copy of a name or command line shared by every row that has it.
pub fn share<T, S>(seen: &mut HashSet<T, S>, value: &T) -> T
where
    T: Clone + Eq + std::hash::Hash,
    S: std::hash::BuildHasher,
{
    match seen.get(value) {
        Some(shared) => shared.clone(),
        None => {
            seen.insert(value.clone());
            value.clone()
        }
    }
}

#[cfg(test)]
mod fixtures;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::tasks::fixtures::*;

    #[test]
    fn a_bulk_load_keeps_the_last_task_of_a_name_and_indexes_every_deadline() {
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
    fn a_bulk_load_shares_one_copy_of_each_command_line() {
        let held = |n: &str| Task {
            holder: Some(Holder {
                command: Some(Arc::from("agent")),
                parent_command: Some(Arc::from("bash ./loop.sh")),
                ..Holder::default()
            }),
            ..Task::new(name(n), at(0), at(9))
        };
        let mut tasks = Tasks::new(10);
        tasks.load([held("a"), held("b")]);
        let holder = |n: &str| tasks.get(&name(n), at(1)).unwrap().holder.clone().unwrap();
        let (a, b) = (holder("a"), holder("b"));
        assert_eq!(a, b);
        assert!(a.shares_texts_with(&b));
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
