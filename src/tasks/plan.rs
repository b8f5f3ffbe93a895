//! Planning what clients and processes ask: a [`Command`] checked against
//! the state as the batch leaves it and turned into a [`Change`], and the
//! release of a row whose bound process exited.
//!
//! The limits on rows and bindings and the rule against taking a bound
//! name are checked here; who may change what is `ownership.rs`'s.

use std::time::Duration;

use super::batch::Replaced;
use super::{
    Batch, Binding, Change, Claim, Command, Outcome, Removal, Task, TaskError, TaskName, Tasks,
    Trip,
};
use crate::time::Timestamp;

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

impl Tasks {
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
                self.retire_due_row(batch, &name, now);
                self.check_not_tripped(batch, &name)?;
                let task = self.new_task(batch, name, expire, claim, caller, now)?;
                // No live row (refused above), and a due one retired.
                self.push_replacing(
                    batch,
                    Change::Put {
                        task: task.clone(),
                        created: true,
                    },
                    Replaced::NOTHING,
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
                    let replaced = Replaced::row(Some(existing));
                    self.check_may_change(existing, caller)?;
                    check_rebinding(existing, &claim)?;
                    let expires_at = now.checked_add(expire).ok_or(TaskError::TimeOverflow)?;
                    let binding = claim.binding.or(existing.binding);
                    let max_held_for = claim.max_held_for.or(existing.max_held_for);
                    if existing.binding.is_none() && binding.is_some() {
                        self.check_bound_room(batch)?;
                    }
                    let task = Task {
                        name,
                        started_at: existing.started_at,
                        expires_at,
                        holder: claim.holder.or_else(|| existing.holder.clone()),
                        reason: claim.reason.or_else(|| existing.reason.clone()),
                        binding,
                        owner: existing.owner,
                        max_held_for,
                    }
                    .capped(self.max_held_for);
                    self.push_replacing(
                        batch,
                        Change::Put {
                            task: task.clone(),
                            created: false,
                        },
                        replaced,
                    );
                    Ok(Outcome::Upserted {
                        task,
                        created: false,
                    })
                }
                None => {
                    self.retire_due_row(batch, &name, now);
                    self.check_not_tripped(batch, &name)?;
                    let task = self.new_task(batch, name, expire, claim, caller, now)?;
                    // No live row, and a due one retired.
                    self.push_replacing(
                        batch,
                        Change::Put {
                            task: task.clone(),
                            created: true,
                        },
                        Replaced::NOTHING,
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
                    self.retire_due_row(batch, &name, now);
                    // A holder releasing what it took (`bound_to`) found
                    // it gone; only a plain DELETE re-arms a tripped name.
                    if bound_to.is_some() {
                        return Err(TaskError::NotFound(name));
                    }
                    return self.rearm(batch, name, caller);
                };
                self.check_may_change(existing, caller)?;
                if let Some(pid) = bound_to
                    && existing.binding.is_none_or(|binding| binding.pid != pid)
                {
                    return Err(TaskError::NotBoundTo { name, pid });
                }
                let replaced = Replaced::row(Some(existing));
                self.push_replacing(
                    batch,
                    Change::Remove {
                        name,
                        cause: Removal::Deleted,
                    },
                    replaced,
                );
                Ok(Outcome::Deleted)
            }
        }
    }

    /// Plans the release of `name` because process `binding` exited, if the
    /// row (as `batch` leaves it) is still bound to that very process.
    /// Returns whether it was planned. A row past its deadline is released
    /// too: the release is the truer cause.
    pub fn release(&self, batch: &mut Batch, name: &TaskName, binding: Binding) -> bool {
        if self.row_binding(batch, name) != Some(binding) {
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
        let rows = self.by_name.len() as isize + batch.rows_delta();
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
            max_held_for: claim.max_held_for,
        }
        .capped(self.max_held_for))
    }

    /// Plans the removal of the row called `name` if it is past its
    /// deadline but not yet removed (more fell due at once than a turn
    /// expires, or the timer has not fired yet), for the cause its deadline
    /// had: a name taken again starts a new hold only after the old one has
    /// ended, in the events and the usage history alike.
    fn retire_due_row(&self, batch: &mut Batch, name: &TaskName, now: Timestamp) {
        let Some(row) = self.row(batch, name).filter(|row| !row.is_live(now)) else {
            return;
        };
        let cause = row.removal_when_due(self.max_held_for);
        self.push(
            batch,
            Change::Remove {
                name: name.clone(),
                cause,
            },
        );
    }

    /// The trip of `name` as `batch` leaves it.
    fn trip(&self, batch: &Batch, name: &TaskName) -> Option<Trip> {
        match batch.trip_of(name) {
            Some(planned) => planned,
            None => self.tripped.get(name).copied(),
        }
    }

    /// Refuses to take a name its hold limit released.
    ///
    /// # Errors
    /// [`TaskError::Tripped`].
    fn check_not_tripped(&self, batch: &Batch, name: &TaskName) -> Result<(), TaskError> {
        match self.trip(batch, name) {
            Some(trip) => Err(TaskError::Tripped {
                name: name.clone(),
                trip,
            }),
            None => Ok(()),
        }
    }

    /// A `DELETE` of a name with no live task: re-arms it if its hold
    /// limit tripped it (its owner or root, as for a task), else 404.
    fn rearm(
        &self,
        batch: &mut Batch,
        name: TaskName,
        caller: Option<u32>,
    ) -> Result<Outcome, TaskError> {
        let Some(trip) = self.trip(batch, &name) else {
            return Err(TaskError::NotFound(name));
        };
        let mut released = Task::new(name, trip.at, trip.at);
        released.owner = trip.owner;
        self.check_may_change(&released, caller)?;
        batch.rearm(released.name);
        Ok(Outcome::Deleted)
    }

    /// Whether one more row may be bound.
    fn check_bound_room(&self, batch: &Batch) -> Result<(), TaskError> {
        if self.bound as isize + batch.bound_delta() >= self.max_bound as isize {
            return Err(TaskError::TooManyBound {
                limit: self.max_bound,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::Holder;
    use crate::tasks::fixtures::*;

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
}

#[cfg(test)]
mod hold_limit_tests {
    use super::*;
    use crate::tasks::fixtures::*;

    fn limited(limit: u64) -> Tasks {
        Tasks::new(10).with_max_held_for(Some(secs(limit)))
    }

    fn expire(tasks: &mut Tasks, now: Timestamp) -> Vec<Change> {
        let mut batch = Batch::new();
        tasks.expire_due(&mut batch, now);
        let changes = batch.changes().to_vec();
        tasks.apply(batch);
        changes
    }

    fn trip(held: u64, limit: u64, at_: u64) -> Trip {
        Trip {
            owner: None,
            at: at(at_),
            held: secs(held),
            limit: secs(limit),
        }
    }

    #[test]
    fn refreshes_never_carry_a_task_past_its_limit() {
        let mut tasks = limited(10);
        let Outcome::Upserted { task, .. } = run(&mut tasks, upsert("loop", 4), at(0)).unwrap()
        else {
            panic!("not an upsert")
        };
        assert_eq!(task.expires_at, at(4));
        for now in [3, 6, 8] {
            run(&mut tasks, upsert("loop", 4), at(now)).unwrap();
        }
        let task = tasks.get(&name("loop"), at(9)).unwrap();
        assert_eq!((task.started_at, task.expires_at), (at(0), at(10)));
        let changes = expire(&mut tasks, at(10));
        assert_eq!(
            changes,
            [Change::Remove {
                name: name("loop"),
                cause: Removal::Capped {
                    trip: trip(10, 10, 10)
                },
            }]
        );
        assert_eq!(tasks.tripped().get(&name("loop")), Some(&trip(10, 10, 10)));
    }

    #[test]
    fn a_task_that_lapses_before_its_limit_just_expires() {
        let mut tasks = limited(10);
        run(&mut tasks, upsert("short", 4), at(0)).unwrap();
        let changes = expire(&mut tasks, at(4));
        assert!(matches!(
            changes[..],
            [Change::Remove {
                cause: Removal::Expired,
                ..
            }]
        ));
        assert!(tasks.tripped().is_empty());
    }

    #[test]
    fn a_tripped_name_is_refused_until_a_plain_delete_rearms_it() {
        let mut tasks = limited(5);
        run(&mut tasks, upsert("loop", 5), at(0)).unwrap();
        expire(&mut tasks, at(5));
        for command in [upsert("loop", 5), create("loop", 5)] {
            assert_eq!(
                run(&mut tasks, command, at(6)),
                Err(TaskError::Tripped {
                    name: name("loop"),
                    trip: trip(5, 5, 5)
                })
            );
        }
        // A holder releasing what it took does not re-arm the name.
        let conditional = Command::Delete {
            name: name("loop"),
            caller: None,
            bound_to: Some(7),
        };
        assert_eq!(
            run(&mut tasks, conditional, at(6)),
            Err(TaskError::NotFound(name("loop")))
        );
        assert_eq!(run(&mut tasks, delete("loop"), at(6)), Ok(Outcome::Deleted));
        assert!(tasks.tripped().is_empty());
        assert!(run(&mut tasks, upsert("loop", 5), at(7)).is_ok());
        // A name never tripped and not live is still 404.
        assert_eq!(
            run(&mut tasks, delete("other"), at(7)),
            Err(TaskError::NotFound(name("other")))
        );
    }

    #[test]
    fn a_due_row_is_retired_before_its_name_is_taken_again() {
        // The cap fell due but no expiry batch ran yet: the refresh finds
        // the row past its deadline, plans its capped removal, and is
        // refused; it never starts a fresh hold under the same name.
        let mut tasks = limited(5);
        run(&mut tasks, upsert("loop", 5), at(0)).unwrap();
        let mut batch = Batch::new();
        let refused = tasks.plan(&mut batch, upsert("loop", 5), at(6));
        assert!(matches!(refused, Err(TaskError::Tripped { .. })));
        assert!(matches!(
            batch.changes(),
            [Change::Remove {
                cause: Removal::Capped { .. },
                ..
            }]
        ));
        // Without a limit, the old hold expires and a new one is created.
        let mut tasks = Tasks::new(10);
        run(&mut tasks, upsert("job", 5), at(0)).unwrap();
        let mut batch = Batch::new();
        tasks.plan(&mut batch, upsert("job", 5), at(6)).unwrap();
        assert!(matches!(
            batch.changes(),
            [
                Change::Remove {
                    cause: Removal::Expired,
                    ..
                },
                Change::Put { created: true, .. }
            ]
        ));
    }

    #[test]
    fn a_tasks_own_limit_lowers_the_daemons_and_applies_alone() {
        let own = |n: &str, limit: u64| {
            let claim = Claim {
                max_held_for: Some(secs(limit)),
                ..Claim::default()
            };
            Command::Upsert {
                name: name(n),
                expire: secs(100),
                claim,
                caller: None,
            }
        };
        let mut tasks = limited(10);
        run(&mut tasks, own("lower", 3), at(0)).unwrap();
        run(&mut tasks, own("higher", 60), at(0)).unwrap();
        assert_eq!(tasks.get(&name("lower"), at(1)).unwrap().expires_at, at(3));
        assert_eq!(
            tasks.get(&name("higher"), at(1)).unwrap().expires_at,
            at(10)
        );
        // A refresh without the field keeps the task's own limit.
        run(&mut tasks, upsert("lower", 100), at(2)).unwrap();
        assert_eq!(tasks.get(&name("lower"), at(2)).unwrap().expires_at, at(3));
        let mut unlimited = Tasks::new(10);
        run(&mut unlimited, own("alone", 3), at(0)).unwrap();
        let changes = expire(&mut unlimited, at(3));
        assert!(matches!(
            changes[..],
            [Change::Remove {
                cause: Removal::Capped { .. },
                ..
            }]
        ));
    }

    #[test]
    fn a_limit_set_while_down_applies_to_the_rows_loaded() {
        let mut tasks = limited(10);
        tasks.load([
            Task::new(name("old"), at(0), at(100)),
            Task::new(name("young"), at(50), at(100)),
        ]);
        let mut batch = Batch::new();
        let planned = tasks.plan_load(&mut batch, at(55), secs(3600), None, usize::MAX);
        assert_eq!(planned.expired, 1);
        tasks.apply(batch);
        assert!(tasks.tripped().contains_key(&name("old")));
        assert_eq!(
            tasks.get(&name("young"), at(55)).unwrap().expires_at,
            at(60)
        );
    }
}
