//! A [`Batch`]: the row-level [`Change`]s planned in one reactor turn, to
//! be committed together, and the state's view of each row as the batch
//! leaves it.
//!
//! Every change enters a batch through `Tasks::push` or
//! `Tasks::push_replacing` (for a caller that has just read the row the
//! change replaces, which debug builds check), the one place that keeps
//! the batch invariant; the views here (`current`, `row_exists`,
//! `row_binding`, `row_owner`) show each later plan the rows as the changes
//! before it leave them.

use std::collections::BTreeMap;

use super::{Binding, Task, TaskName, Tasks, Trip};
use crate::ids::IdMap;
use crate::time::{ClockStep, Timestamp};

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
    /// It was held for its whole hold limit (`--max-held-for`, or its own
    /// `max_held_for`): its deadline was the limit's, and its name trips.
    Capped { trip: Trip },
}

impl Removal {
    /// The cause as the metrics and the usage report name it.
    pub fn label(self) -> &'static str {
        match self {
            Removal::Deleted => "deleted",
            Removal::Expired => "expired",
            Removal::Released { .. } => "holder_exited",
            Removal::Capped { .. } => "max_held_for",
        }
    }
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

/// Changes planned in one reactor turn, to be committed together.
///
/// Invariant: `latest` holds, for every name in `changes`, the index of its
/// last change (a `Put` leaves that row, a `Remove` none), `rows_delta` is the number of
/// rows the batch adds minus the number it removes, `bound_delta` the
/// same for rows bound to a process, and `owned_delta` the same for the
/// rows of each owner uid.
#[derive(Debug, Default)]
pub struct Batch {
    changes: Vec<Change>,
    latest: IdMap<TaskName, usize>,
    rows_delta: isize,
    /// The wall-clock step this batch records (its `clock_stepped` event).
    clock_step: Option<ClockStep>,
    bound_delta: isize,
    owned_delta: BTreeMap<u32, isize>,
    /// Names this batch trips (`Some`, by a capped removal) or re-arms
    /// (`None`), the last word for each.
    trips: IdMap<TaskName, Option<Trip>>,
    /// Names re-armed, in the order planned: each a `rearmed` event.
    rearmed: Vec<TaskName>,
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

    /// Whether nothing was planned: no change, no re-arming and no clock
    /// step.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.rearmed.is_empty() && self.clock_step.is_none()
    }

    /// The tripped names this batch re-arms, in order.
    pub fn rearmed(&self) -> &[TaskName] {
        &self.rearmed
    }

    /// What the batch says of `name`'s trip: `Some(Some(trip))` if it trips
    /// it, `Some(None)` if it re-arms it, `None` if neither.
    pub(super) fn trip_of(&self, name: &TaskName) -> Option<Option<Trip>> {
        self.trips.get(name).copied()
    }

    /// Re-arms the tripped `name`.
    pub(super) fn rearm(&mut self, name: TaskName) {
        self.trips.insert(name.clone(), None);
        self.rearmed.push(name);
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

    /// Whether the batch already changes the row called `name`.
    pub(super) fn touches(&self, name: &TaskName) -> bool {
        self.latest.contains_key(name)
    }

    /// Rows bound to a process the batch adds minus those it removes.
    pub(super) fn bound_delta(&self) -> isize {
        self.bound_delta
    }

    /// Rows owned by `uid` the batch adds minus those it removes.
    pub(super) fn owned_delta(&self, uid: u32) -> isize {
        self.owned_delta.get(&uid).copied().unwrap_or(0)
    }

    /// Takes the changes in the order they were planned and the names
    /// re-armed, to apply; leaves the batch empty, its room kept for the
    /// next turn's (bounded by [`trim_room`](Self::trim_room) once the
    /// changes are taken).
    pub(super) fn drain(&mut self) -> (std::vec::Drain<'_, Change>, std::vec::Drain<'_, TaskName>) {
        self.latest.clear();
        self.trips.clear();
        self.owned_delta.clear();
        self.rows_delta = 0;
        self.bound_delta = 0;
        self.clock_step = None;
        (self.changes.drain(..), self.rearmed.drain(..))
    }

    /// Gives back the room of an emptied batch beyond [`KEPT_ROOM`]
    /// changes (a vector keeps at least its length, so this follows the
    /// drain).
    pub(super) fn trim_room(&mut self) {
        if self.changes.capacity() > KEPT_ROOM {
            self.changes.shrink_to(KEPT_ROOM);
            self.latest.shrink_to(KEPT_ROOM);
            self.trips.shrink_to(KEPT_ROOM);
            self.rearmed.shrink_to(KEPT_ROOM);
        }
    }
}

/// Most changes a spent batch keeps room for ([`Batch::drain`]): a turn's
/// batch grew from nothing each turn, and its vector and map re-doubling
/// cost the reactor about 240 instructions a write at 64 requests a turn
/// (callgrind). A turn that expires thousands at once gives most of it
/// back.
const KEPT_ROOM: usize = 1024;

/// What a change replaces, as [`Tasks::push_replacing`] counts it: whether
/// a row (live or not) was there, whether it was bound, and whose it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Replaced {
    existed: bool,
    bound: bool,
    owner: Option<u32>,
}

impl Replaced {
    /// No row: a name new to the state, or one this batch removed.
    pub(super) const NOTHING: Replaced = Replaced {
        existed: false,
        bound: false,
        owner: None,
    };

    /// The row as `batch` leaves it ([`Tasks::row`]), if any.
    pub(super) fn row(row: Option<&Task>) -> Replaced {
        row.map_or(Replaced::NOTHING, |task| Replaced {
            existed: true,
            bound: task.binding.is_some(),
            owner: task.owner,
        })
    }
}

impl Tasks {
    /// The live task as `batch` leaves it.
    pub(super) fn current<'a>(
        &'a self,
        batch: &'a Batch,
        name: &TaskName,
        now: Timestamp,
    ) -> Option<&'a Task> {
        self.row(batch, name).filter(|task| task.is_live(now))
    }

    /// The row (live or not) called `name` as `batch` leaves it: one lookup
    /// in the batch, then one in the state.
    pub(super) fn row<'a>(&'a self, batch: &'a Batch, name: &TaskName) -> Option<&'a Task> {
        match batch.latest.get(name) {
            Some(&last) => match &batch.changes[last] {
                Change::Put { task, .. } => Some(task),
                Change::Remove { .. } => None,
            },
            None => self.by_name.get(name),
        }
    }

    /// Whether a row (live or not) is called `name` as `batch` leaves it.
    pub(super) fn row_exists(&self, batch: &Batch, name: &TaskName) -> bool {
        self.row(batch, name).is_some()
    }

    /// The binding of the row (live or not) as `batch` leaves it.
    pub(super) fn row_binding(&self, batch: &Batch, name: &TaskName) -> Option<Binding> {
        self.row(batch, name).and_then(|task| task.binding)
    }

    /// The owner of the row (live or not) as `batch` leaves it.
    pub(super) fn row_owner(&self, batch: &Batch, name: &TaskName) -> Option<u32> {
        self.row(batch, name).and_then(|task| task.owner)
    }

    /// Adds `change` to `batch`, over the row `batch` leaves for its name.
    pub(super) fn push(&self, batch: &mut Batch, change: Change) {
        let replaced = Replaced::row(self.row(batch, change.name()));
        self.push_replacing(batch, change, replaced);
    }

    /// [`push`](Self::push) for a caller that has just read the row the
    /// change replaces: the second lookup of its name was about 100
    /// instructions of a write (callgrind).
    pub(super) fn push_replacing(&self, batch: &mut Batch, change: Change, replaced: Replaced) {
        let name = change.name().clone();
        debug_assert_eq!(
            replaced,
            Replaced::row(self.row(batch, &name)),
            "{name}: the caller's row is not the one the batch leaves"
        );
        let Replaced {
            existed,
            bound: was_bound,
            owner: old_owner,
        } = replaced;
        let row = match &change {
            Change::Put { task, .. } => Some(task),
            Change::Remove { .. } => None,
        };
        batch.rows_delta += match (existed, row.is_some()) {
            (false, true) => 1,
            (true, false) => -1,
            _ => 0,
        };
        let is_bound = row.is_some_and(|task| task.binding.is_some());
        batch.bound_delta += isize::from(is_bound) - isize::from(was_bound);
        if let Some(uid) = old_owner {
            *batch.owned_delta.entry(uid).or_default() -= 1;
        }
        if let Some(uid) = row.and_then(|task| task.owner) {
            *batch.owned_delta.entry(uid).or_default() += 1;
        }
        if let Change::Remove {
            cause: Removal::Capped { trip },
            ..
        } = &change
        {
            batch.trips.insert(name.clone(), Some(*trip));
        }
        batch.latest.insert(name, batch.changes.len());
        batch.changes.push(change);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::fixtures::*;
    use crate::tasks::{Outcome, TaskError};

    #[test]
    fn a_batch_with_only_a_clock_step_is_not_empty() {
        let mut batch = Batch::new();
        assert!(batch.is_empty());
        batch.note_clock_step(ClockStep::Forward(secs(5)));
        assert!(!batch.is_empty());
        assert_eq!(batch.len(), 0);
    }

    #[test]
    fn an_applied_batch_comes_back_empty_with_bounded_room() {
        let mut tasks = Tasks::new(10_000);
        let mut batch = Batch::new();
        for i in 0..3 * KEPT_ROOM {
            tasks
                .plan(&mut batch, create(&format!("t{i}"), 5), at(0))
                .unwrap();
        }
        let spent = tasks.apply(batch);
        assert_eq!(tasks.len(), 3 * KEPT_ROOM);
        assert!(spent.is_empty() && spent.latest.is_empty() && spent.rows_delta() == 0);
        assert!(
            spent.changes.capacity() <= KEPT_ROOM,
            "{}",
            spent.changes.capacity()
        );
        // Planned into again, it is as a new one.
        let mut again = spent;
        assert!(tasks.plan(&mut again, delete("t0"), at(1)).is_ok());
        assert_eq!((again.len(), again.rows_delta()), (1, -1));
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
}
