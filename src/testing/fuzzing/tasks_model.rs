//! The `tasks_model` target: the task state machine ([`Tasks`]) driven by
//! random commands, clock steps, expiries and batch ends, checked after
//! every step against a naive model ([`ModelState`]) written from the
//! README's rules.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::api;
use crate::expire::MAX_EXPIRE_CEILING;
use crate::tasks::{Batch, Command, Outcome, Ownership, Task, TaskError, TaskName, Tasks};
use crate::time::Timestamp;

use super::{Input, START_NANOS, name_at};

/// An expiry as the API would pass it: 1 s to a week, sometimes with nanos.
fn expire_of(byte: u8) -> Duration {
    match byte {
        0xF0..=0xFF => MAX_EXPIRE_CEILING,
        _ => {
            let nanos = if byte & 0x08 != 0 { 999_999_999 } else { 0 };
            Duration::new(1 + u64::from(byte & 0x07) + u64::from(byte >> 4), nanos)
        }
    }
}

/// The naive reference: rows by name, each `(started_at, expires_at)` in
/// nanoseconds and its owner, with liveness, ownership and the limits
/// spelled out from the README.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct ModelState {
    pub(super) rows: BTreeMap<String, (u64, u64)>,
    pub(super) owners: BTreeMap<String, Option<u32>>,
}

/// The rules the model is run under: the task limit and, when owned, the
/// per-uid quota.
#[derive(Clone, Copy, Debug)]
pub(super) struct ModelRules {
    pub(super) max: usize,
    pub(super) max_per_uid: Option<usize>,
}

/// Callers the model draws from: unknown, root and two users.
const CALLERS: [Option<u32>; 4] = [None, Some(0), Some(1000), Some(1001)];

impl ModelState {
    fn live(&self, name: &str, now: u64) -> Option<(u64, u64)> {
        self.rows
            .get(name)
            .copied()
            .filter(|&(_, expires)| expires > now)
    }

    fn task(&self, name: &str, (started, expires): (u64, u64)) -> Task {
        Task {
            owner: self.owners.get(name).copied().flatten(),
            ..Task::new(
                TaskName::parse(name).expect("valid"),
                Timestamp::from_nanos(started),
                Timestamp::from_nanos(expires),
            )
        }
    }

    pub(super) fn put(&mut self, name: &str, row: (u64, u64), owner: Option<u32>) {
        self.rows.insert(name.to_owned(), row);
        self.owners.insert(name.to_owned(), owner);
    }

    fn remove(&mut self, name: &str) {
        self.rows.remove(name);
        self.owners.remove(name);
    }

    /// A new row's `(started_at, expires_at)`, if ownership, the limits and
    /// the clock allow it.
    fn fresh(
        &self,
        name: &str,
        expire: Duration,
        now: u64,
        caller: Option<u32>,
        rules: ModelRules,
    ) -> Result<(u64, u64), TaskError> {
        if let Some(limit) = rules.max_per_uid {
            let uid = caller.ok_or(TaskError::UnknownCaller)?;
            let owns = |owner: &Option<u32>| *owner == Some(uid);
            let count = self.owners.values().filter(|owner| owns(owner)).count();
            let replaces_own = self.owners.get(name).is_some_and(owns);
            if uid != 0 && !replaces_own && count >= limit {
                return Err(TaskError::UidFull { uid, count, limit });
            }
        }
        if !self.rows.contains_key(name) && self.rows.len() >= rules.max {
            return Err(TaskError::Full { limit: rules.max });
        }
        let expires = until(now, expire)?;
        Ok((now, expires))
    }

    /// Whether `caller` may refresh or delete the live row `name`.
    fn may_change(
        &self,
        name: &TaskName,
        caller: Option<u32>,
        rules: ModelRules,
    ) -> Result<(), TaskError> {
        if rules.max_per_uid.is_none() {
            return Ok(());
        }
        let uid = caller.ok_or(TaskError::UnknownCaller)?;
        let owner = self.owners.get(name.as_str()).copied().flatten();
        if uid == 0 || owner == Some(uid) {
            return Ok(());
        }
        Err(TaskError::NotOwner {
            name: name.clone(),
            owner,
        })
    }

    /// Runs `command` at `now` on the model: its outcome, as
    /// [`Tasks::plan`] must give it.
    pub(super) fn run(
        &mut self,
        command: &Command,
        now: u64,
        rules: ModelRules,
    ) -> Result<Outcome, TaskError> {
        let caller = command.caller();
        match command {
            Command::Create { name, expire, .. } => {
                let key = name.as_str();
                if self.live(key, now).is_some() {
                    return Err(TaskError::NameTaken(name.clone()));
                }
                let row = self.fresh(key, *expire, now, caller, rules)?;
                self.put(key, row, caller);
                Ok(Outcome::Created(self.task(key, row)))
            }
            Command::Upsert { name, expire, .. } => {
                let key = name.as_str();
                let (row, created) = match self.live(key, now) {
                    Some((started, _)) => {
                        self.may_change(name, caller, rules)?;
                        ((started, until(now, *expire)?), false)
                    }
                    None => (self.fresh(key, *expire, now, caller, rules)?, true),
                };
                let owner = if created {
                    caller
                } else {
                    self.owners.get(key).copied().flatten()
                };
                self.put(key, row, owner);
                Ok(Outcome::Upserted {
                    task: self.task(key, row),
                    created,
                })
            }
            Command::Delete { name, .. } => {
                if self.live(name.as_str(), now).is_none() {
                    return Err(TaskError::NotFound(name.clone()));
                }
                self.may_change(name, caller, rules)?;
                self.remove(name.as_str());
                Ok(Outcome::Deleted)
            }
        }
    }
}

/// `now + expire` in nanoseconds, refused past `u64::MAX`.
fn until(now: u64, expire: Duration) -> Result<u64, TaskError> {
    let sum = u128::from(now) + expire.as_nanos();
    u64::try_from(sum).map_err(|_| TaskError::TimeOverflow)
}

/// `tasks_model`: byte 0 is the task limit (1 to 6) and the ownership (shared,
/// or owned with a per-uid quota of 1 to 4), then operations of two or three
/// bytes each: create, upsert, delete (from the caller the op byte's high
/// bits pick), get, list, advance the clock, plan due expiries, and end the
/// batch (applied as a successful commit, or dropped as a failed one).
///
/// The state machine is checked after every step against [`ModelState`]:
/// each outcome, every read, the deadlines, the row count and the batch's
/// size and row delta. Commands planned in an open batch see each other but
/// not the state; the state changes only when a batch is applied.
pub fn tasks_model(data: &[u8]) {
    let mut input = Input::new(data);
    let mut run = ModelRun::new(input.byte());
    while !input.is_empty() {
        let op = input.byte();
        match op % 8 {
            0..=2 => run.plan(op, &mut input),
            3 => run.get(&name_at(input.byte())),
            4 => run.list(),
            5 => run.advance(input.byte()),
            6 => run.expire_due(),
            _ => run.end_batch(op & 0x80 == 0),
        }
        run.check();
    }
}

/// The state machine and its model, side by side, with the open batch.
///
/// `pending` is `committed` with the open batch's changes; `touched` names
/// the rows the open batch changes (expiry leaves those alone), and
/// `planned` counts its changes.
struct ModelRun {
    rules: ModelRules,
    tasks: Tasks,
    batch: Batch,
    committed: ModelState,
    pending: ModelState,
    touched: BTreeSet<String>,
    planned: usize,
    now: u64,
}

impl ModelRun {
    /// Empty state under the rules byte 0 of the input picks.
    fn new(first: u8) -> Self {
        let max = 1 + usize::from(first % 6);
        let max_per_uid = match first / 6 % 5 {
            0 => None,
            quota => Some(usize::from(quota)),
        };
        let ownership = match max_per_uid {
            None => Ownership::Shared,
            Some(max_per_uid) => Ownership::Owned { max_per_uid },
        };
        ModelRun {
            rules: ModelRules { max, max_per_uid },
            tasks: Tasks::new(max).with_ownership(ownership),
            batch: Batch::new(),
            committed: ModelState::default(),
            pending: ModelState::default(),
            touched: BTreeSet::new(),
            planned: 0,
            now: START_NANOS,
        }
    }

    /// Plans a create (`op % 8 == 0`), upsert (1) or delete (2) into the
    /// open batch; its name and expiry come from `input`.
    fn plan(&mut self, op: u8, input: &mut Input) {
        let name = name_at(input.byte());
        let caller = CALLERS[usize::from(op / 8) % CALLERS.len()];
        let command = match op % 8 {
            0 => Command::Create {
                name,
                expire: expire_of(input.byte()),
                claim: Default::default(),
                caller,
            },
            1 => Command::Upsert {
                name,
                expire: expire_of(input.byte()),
                claim: Default::default(),
                caller,
            },
            _ => Command::Delete {
                name,
                caller,
                bound_to: None,
            },
        };
        let now = self.now;
        // A row past its deadline that no expiry removed yet is retired
        // (its removal planned) before any command on its name.
        let key = command.name().as_str().to_owned();
        if self
            .pending
            .rows
            .get(&key)
            .is_some_and(|&(_, expires)| expires <= now)
        {
            self.pending.remove(&key);
            self.touched.insert(key);
            self.planned += 1;
        }
        let expected = self.pending.run(&command, now, self.rules);
        let actual = self
            .tasks
            .plan(&mut self.batch, command.clone(), Timestamp::from_nanos(now));
        assert_eq!(actual, expected, "{command:?} at {now}");
        if let Ok(outcome) = actual {
            self.touched.insert(command.name().as_str().to_owned());
            self.planned += 1;
            let _ = api::outcome(&Ok(outcome));
        }
    }

    fn get(&self, name: &TaskName) {
        let now = self.now;
        let expected = self
            .committed
            .live(name.as_str(), now)
            .map(|row| self.committed.task(name.as_str(), row));
        assert_eq!(
            self.tasks.get(name, Timestamp::from_nanos(now)).cloned(),
            expected,
            "get {name} at {now}"
        );
    }

    fn list(&self) {
        let now = self.now;
        let expected: Vec<Task> = self
            .committed
            .rows
            .iter()
            .filter(|(_, (_, expires))| *expires > now)
            .map(|(name, row)| self.committed.task(name, *row))
            .collect();
        let actual: Vec<Task> = self
            .tasks
            .live(Timestamp::from_nanos(now))
            .cloned()
            .collect();
        assert_eq!(actual, expected, "list at {now}");
    }

    /// Moves the clock on by nothing, a nanosecond, whole or quarter
    /// seconds, or to the end of time, as `step` says.
    fn advance(&mut self, step: u8) {
        let by = match step & 3 {
            0 => 0,
            1 => 1,
            2 => u64::from(step >> 2) * 1_000_000_000,
            _ if step == 0xFF => u64::MAX,
            _ => u64::from(step >> 2) * 250_000_000,
        };
        self.now = self.now.saturating_add(by);
    }

    /// Plans the expiry of the committed rows due now that the open batch
    /// does not change already.
    fn expire_due(&mut self) {
        let now = self.now;
        let due: Vec<String> = self
            .committed
            .rows
            .iter()
            .filter(|(name, (_, expires))| *expires <= now && !self.touched.contains(*name))
            .map(|(name, _)| name.clone())
            .collect();
        let count = self
            .tasks
            .expire_due(&mut self.batch, Timestamp::from_nanos(now));
        assert_eq!(count, due.len(), "expiries planned at {now}");
        for name in due {
            self.pending.remove(&name);
            self.touched.insert(name);
        }
        self.planned += count;
    }

    /// Ends the open batch: applied if its commit `succeeded`, dropped
    /// unapplied if not.
    fn end_batch(&mut self, succeeded: bool) {
        let finished = std::mem::take(&mut self.batch);
        if succeeded {
            self.tasks.apply(finished);
            self.committed = self.pending.clone();
        } else {
            drop(finished);
            self.pending = self.committed.clone();
        }
        self.touched.clear();
        self.planned = 0;
    }

    /// The state's indexes and the batch's counts agree with the model.
    fn check(&self) {
        let (tasks, committed) = (&self.tasks, &self.committed);
        assert_eq!(tasks.len(), committed.rows.len(), "row count");
        let deadlines = committed.rows.values().map(|&(_, expires)| expires);
        assert_eq!(
            tasks.next_deadline().map(Timestamp::as_nanos),
            deadlines.clone().min(),
            "next deadline"
        );
        assert_eq!(
            tasks.last_deadline().map(Timestamp::as_nanos),
            deadlines.max(),
            "last deadline"
        );
        assert_eq!(self.batch.len(), self.planned, "changes in the batch");
        for uid in CALLERS.into_iter().flatten() {
            let owned = committed
                .owners
                .values()
                .filter(|owner| **owner == Some(uid));
            assert_eq!(tasks.owned_by(uid), owned.count(), "rows of uid {uid}");
        }
        assert_eq!(
            self.batch.rows_delta(),
            self.pending.rows.len() as isize - committed.rows.len() as isize,
            "the batch's row delta"
        );
    }
}
