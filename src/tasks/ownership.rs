//! Who may change a task and how many rows one uid may hold: the
//! [`Ownership`] modes, root's exemption and the per-uid quota.
//!
//! The rules read the owner index the state keeps (`Tasks::owned_by`) and
//! the batch's count of rows each uid adds or removes.

use super::{Batch, Task, TaskError, TaskName, Tasks};

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

impl Tasks {
    /// Whether `caller` may refresh or delete `task`.
    pub(super) fn check_may_change(
        &self,
        task: &Task,
        caller: Option<u32>,
    ) -> Result<(), TaskError> {
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
    pub(super) fn check_may_create(
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
        let replaces_own = self.row_owner(batch, name) == Some(uid);
        let count = self.owned_by(uid) as isize + batch.owned_delta(uid);
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::fixtures::*;
    use crate::tasks::{Binding, Command, DEFAULT_MAX_TASKS, Outcome};

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
}
