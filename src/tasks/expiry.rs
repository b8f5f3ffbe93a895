//! What time does to the rows: removing those due, following a wall clock
//! set back, and checking rows loaded at start-up against the clock. Each
//! plans into a [`Batch`] like any command, so expiry takes the same
//! commit path.
//!
//! Time is the `now` argument; nothing here reads a clock.

use std::time::Duration;

use super::{Batch, Change, Task, TaskName, Tasks, Times};
use crate::time::{ClockStep, Timestamp};

/// What [`Tasks::plan_step_back`] or [`Tasks::plan_load`] planned, row by row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rebased {
    /// Rows moved back with the clock.
    pub moved: usize,
    /// Rows whose expiry lay more than the maximum expiry ahead, bounded.
    pub clamped: Vec<TaskName>,
    /// Rows due, removed as expired.
    pub expired: usize,
    /// Rows due beyond the removals asked for, left for later batches.
    pub due_later: usize,
}

impl Tasks {
    /// Plans the removal of every row due at `now` into `batch`, unless the
    /// batch already changes that row. Returns how many were planned.
    pub fn expire_due(&self, batch: &mut Batch, now: Timestamp) -> usize {
        self.expire_due_at_most(batch, now, usize::MAX)
    }

    /// As [`expire_due`](Self::expire_due), planning at most `limit`
    /// removals (the earliest deadlines first); the rest stay due, invisible
    /// to every request, for a later batch.
    pub fn expire_due_at_most(&self, batch: &mut Batch, now: Timestamp, limit: usize) -> usize {
        // Every reactor turn asks; most have nothing due, and the first
        // deadline says so without a range search of the deadlines.
        if self.next_deadline().is_none_or(|first| first > now) {
            return 0;
        }
        let mut planned = 0;
        for task in self.by_name.due(now) {
            if planned == limit {
                break;
            }
            // A row the batch already changes, or took from an earlier
            // entry of the deadlines (a row may have two).
            if !batch.touches(&task.name) {
                self.push(
                    batch,
                    Change::Remove {
                        name: task.name.clone(),
                        cause: task.removal_when_due(self.max_held_for),
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
        self.plan_rows(
            batch,
            now,
            usize::MAX,
            |task| task.times().moved_back(behind),
            |_| false,
        )
    }

    /// Plans the checks on rows just loaded at start-up, at `now`: when the
    /// clock was set back while the daemon was down (`step_back`), every row
    /// moves back with it as in [`plan_step_back`](Self::plan_step_back);
    /// then a row whose expiry lies more than `max_expire` ahead (no sane
    /// clock wrote it under this limit) is bounded to `now + max_expire`;
    /// and rows due are removed, at most `limit` of them unless the clock
    /// was set back (the rest stay due, invisible to every request, for
    /// later batches: a commit of every row of a large state would not fit
    /// in the log). After a step back every row is planned in this batch,
    /// so that each one moves back with the step it records.
    pub fn plan_load(
        &self,
        batch: &mut Batch,
        now: Timestamp,
        max_expire: Duration,
        step_back: Option<Duration>,
        limit: usize,
    ) -> Rebased {
        if let Some(behind) = step_back {
            batch.note_clock_step(ClockStep::Backward(behind));
        }
        let behind = step_back.unwrap_or(Duration::ZERO);
        let latest = now.checked_add(max_expire).unwrap_or(now);
        let limit = if step_back.is_some() {
            usize::MAX
        } else {
            limit
        };
        self.plan_rows(
            batch,
            now,
            limit,
            |task| task.times().moved_back(behind).bounded(now, max_expire),
            |task| task.times().moved_back(behind).expires_at > latest,
        )
    }

    /// Puts the row with `adjust(row)`'s instants for every row the batch
    /// does not already change, or removes it as expired when that is due
    /// at `now` (at most `limit` removals; other rows due are left as they
    /// are); counts the rows for which `clamped` holds apart from the
    /// ones merely moved. Only a row that changes is copied.
    fn plan_rows(
        &self,
        batch: &mut Batch,
        now: Timestamp,
        limit: usize,
        adjust: impl Fn(&Task) -> Times,
        clamped: impl Fn(&Task) -> bool,
    ) -> Rebased {
        let mut planned = Rebased::default();
        for task in self.by_name.values() {
            if batch.touches(&task.name) {
                continue;
            }
            let times = task.capped_times(adjust(task), self.max_held_for);
            if times.expires_at <= now {
                if planned.expired == limit {
                    planned.due_later += 1;
                    continue;
                }
                planned.expired += 1;
                let cause = task.with_times(times).removal_when_due(self.max_held_for);
                self.push(
                    batch,
                    Change::Remove {
                        name: task.name.clone(),
                        cause,
                    },
                );
            } else if times != task.times() {
                if clamped(task) {
                    planned.clamped.push(task.name.clone());
                } else {
                    planned.moved += 1;
                }
                self.push(
                    batch,
                    Change::Put {
                        task: task.with_times(times),
                        created: false,
                    },
                );
            }
        }
        planned
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::fixtures::*;

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
                expired: 1,
                due_later: 0
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
        let planned = tasks.plan_load(&mut batch, now, max_expire, None, usize::MAX);
        assert_eq!(
            planned,
            Rebased {
                moved: 0,
                clamped: vec![name("ahead")],
                expired: 1,
                due_later: 0
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
        let planned = tasks.plan_load(&mut batch, now, max_expire, Some(behind), usize::MAX);
        assert_eq!(
            planned,
            Rebased {
                moved: 1,
                clamped: vec![],
                expired: 1,
                due_later: 0
            }
        );
        assert_eq!(batch.clock_step(), Some(ClockStep::Backward(behind)));
        let mut tasks = tasks;
        tasks.apply(batch);
        assert_eq!(remaining(&tasks, "ahead", now), secs(10));
        assert_eq!(tasks.len(), 1);
    }

    #[test]
    fn a_load_removes_at_most_its_limit_of_due_rows_unless_the_clock_stepped_back() {
        let rows = [("a", 1), ("b", 2), ("c", 3), ("live", 500)];
        let mut tasks = Tasks::new(10);
        tasks.load(
            rows.iter()
                .map(|&(n, expires)| Task::new(name(n), at(0), at(expires))),
        );
        let mut batch = Batch::new();
        let planned = tasks.plan_load(&mut batch, at(100), secs(3600), None, 2);
        assert_eq!((planned.expired, planned.due_later), (2, 1));
        assert_eq!(batch.len(), 2);
        tasks.apply(batch);
        // The one left is due: invisible, and the next expiry takes it.
        assert_eq!(tasks.len(), 2);
        assert!(tasks.get(&name("c"), at(100)).is_none());
        let mut batch = Batch::new();
        assert_eq!(tasks.expire_due(&mut batch, at(100)), 1);
        tasks.apply(batch);
        assert_eq!(tasks.len(), 1);

        // After a step back every row is planned with the step it records.
        let mut tasks = Tasks::new(10);
        tasks.load(
            rows.iter()
                .map(|&(n, expires)| Task::new(name(n), at(0), at(expires))),
        );
        let mut batch = Batch::new();
        let planned = tasks.plan_load(&mut batch, at(100), secs(3600), Some(secs(1)), 2);
        assert_eq!((planned.expired, planned.due_later), (3, 0));
    }
}
