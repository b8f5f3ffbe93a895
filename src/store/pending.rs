//! What the log holds that the tables do not yet: the changes made durable
//! since the last checkpoint, in order, read back folded by name
//! ([`Pending`]), and the point in the log the tables reach ([`LogMark`]).
//!
//! Pure; depends on [`crate::tasks`] only. The reactor adds each committed
//! batch, recovery adds the frames it replays, and
//! [`tables`](super::tables) writes a `Pending` to redb in one checkpoint.

use std::sync::Arc;

use crate::events::{EventLines, LineBatches};
use crate::tasks::{Change, Task, TaskName};

/// Which part of the log the tables contain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogMark {
    /// The last frame checkpointed (0: none).
    pub lsn: u64,
    /// Where the frame after it goes.
    pub position: u64,
}

/// Most rows a spent [`Pending`] keeps room for when it is
/// [`recycled`](Pending::recycled) to collect the changes after the next
/// checkpoint. Growing a new one from empty at each checkpoint put one
/// page fault in every three or four writes on the reactor (the hash map
/// the rows were then kept in re-doubling into freshly mapped pages;
/// faults were 10% of its CPU over pipelined deletes, `perf record -e
/// page-faults`). Kept, the room costs 1.6 MiB for the rows (208 bytes
/// each), twice (the one filling and the spare), and only while writes
/// keep coming: the store drops both when a checkpoint ends with nothing
/// new pending. A checkpoint of more changes than this grows the room
/// once; with the rows appended to a vector, 100k creates and then 100k
/// deletes pipelined on one connection fault 0.20 and 0.14 times a change
/// over the whole daemon, against 0.33 and 0.28 with the hash map
/// (`minflt` of `/proc/PID/stat`). The events are the batches' own lines,
/// shared, not copied ([`LineBatches`]).
pub const RECYCLED_ROOM: usize = 8_192;

/// Changes a [`Pending`] holds before it folds them to one row per name in
/// place. Checkpoints start at 16k changes by default, so only a failing
/// or lagging one lets this many wait: a checkpoint that keeps failing
/// while the log still takes writes, with a log of up to 1 GiB, would
/// otherwise hold every change of a name refreshed over and over (208
/// bytes each), where the hash map the rows were once kept in held one.
/// 128k changes are 27 MB. The fold runs on the reactor: 10 ms for 128k
/// changes of distinct names, 33 ms for 128k changes of 1,000 names
/// (dropping the replaced rows), all sharing their first 16 bytes so that
/// the sort compares whole names (release build).
pub const FOLD_AT: usize = 1 << 17;

/// Changes made durable in the log since the last checkpoint, with their
/// events; [`rows`](Self::rows) folds them to one row per name (the latest
/// wins).
///
/// Invariant: `mark` is the log mark just after the last frame added;
/// `events` are in increasing sequence order; `rows` are in the order
/// their changes were made durable.
#[derive(Debug, Default)]
pub struct Pending {
    /// Appended, not ordered or hashed: the reactor appends every change,
    /// and the checkpoint worker sorts once. A `BTreeMap` cost the reactor
    /// some 800 instructions a change comparing names (callgrind, 1,000
    /// tasks); a hash map by name, folding as it went, held 16k changes in
    /// 32k buckets of 208 bytes, every page touched: 6.8 MB, with two
    /// more maps of 3.4 MB kept for reuse, at the 100k-task bench's peak
    /// (massif). Appended, a change costs its 208 bytes and a vector's
    /// unused room is never touched. A name changed again and again is
    /// held once per change until the checkpoint (which starts at
    /// `--checkpoint-changes` changes or a quarter of the log), or until
    /// [`FOLD_AT`] changes wait, when checkpoints fail or fall behind.
    rows: Vec<(TaskName, Option<Task>)>,
    /// How many rows the last fold in place left (0: none yet): the next
    /// one waits for twice as many, so that folding costs each change a
    /// bounded share whatever the names.
    folded_len: usize,
    events: LineBatches,
    keep_events_from: u64,
    trim_slack: u64,
    /// The usage history's floor when the checkpoint started
    /// ([`Store::set_usage_floor`](super::Store::set_usage_floor)).
    usage_floor: u64,
    /// Changes added (before folding by name): the policy's measure.
    changes: usize,
    /// Frames added.
    frames: usize,
    mark: LogMark,
}

impl Pending {
    /// Adds one frame's batch, which ends at `mark`.
    pub fn add(
        &mut self,
        changes: &[Change],
        events: &Arc<EventLines>,
        bounds: (u64, u64),
        mark: LogMark,
    ) {
        let rows = changes.iter().map(|change| match change {
            Change::Put { task, .. } => (task.name.clone(), Some(task.clone())),
            Change::Remove { name, .. } => (name.clone(), None),
        });
        self.push_frame(rows, Some(Arc::clone(events)), bounds, mark);
    }

    /// [`add`](Self::add) for a batch the caller is done with (recovery's
    /// replay): its rows move in instead of being copied. Its events come
    /// with every replayed frame's, in one
    /// [`add_replayed_events`](Self::add_replayed_events): one text for
    /// the whole replay rather than three allocations kept per frame.
    pub fn add_owned(&mut self, changes: Vec<Change>, bounds: (u64, u64), mark: LogMark) {
        let rows = changes.into_iter().map(|change| match change {
            Change::Put { task, .. } => (task.name.clone(), Some(task)),
            Change::Remove { name, .. } => (name, None),
        });
        self.push_frame(rows, None, bounds, mark);
    }

    /// The events of the frames [`add_owned`](Self::add_owned) added,
    /// in order, after them.
    pub fn add_replayed_events(&mut self, lines: EventLines) {
        self.events.push(Arc::new(lines));
    }

    /// Appends one frame's rows and events, and where it ends.
    fn push_frame(
        &mut self,
        rows: impl ExactSizeIterator<Item = (TaskName, Option<Task>)>,
        events: Option<Arc<EventLines>>,
        (keep_events_from, trim_slack): (u64, u64),
        mark: LogMark,
    ) {
        self.changes += rows.len();
        self.rows.extend(rows);
        self.fold_if_long();
        if let Some(events) = events {
            self.events.push(events);
        }
        self.keep_events_from = self.keep_events_from.max(keep_events_from);
        self.trim_slack = trim_slack;
        self.frames += 1;
        self.mark = mark;
    }

    /// Folds `newer` (what was logged after `self`) over `self`.
    pub fn absorb(&mut self, newer: Pending) {
        if newer.is_empty() {
            return;
        }
        self.rows.extend(newer.rows);
        self.fold_if_long();
        self.events.append(&newer.events);
        self.keep_events_from = self.keep_events_from.max(newer.keep_events_from);
        self.trim_slack = newer.trim_slack;
        self.usage_floor = self.usage_floor.max(newer.usage_floor);
        self.changes += newer.changes;
        self.frames += newer.frames;
        self.mark = newer.mark;
    }

    /// This one emptied for reuse (a checkpoint wrote it), keeping its
    /// room for up to [`RECYCLED_ROOM`] rows.
    #[must_use]
    pub fn recycled(mut self) -> Pending {
        self.rows.clear();
        self.rows.shrink_to(RECYCLED_ROOM);
        self.events.clear();
        Pending {
            rows: self.rows,
            events: self.events,
            ..Pending::default()
        }
    }

    /// Whether nothing is waiting: no frame was added.
    pub fn is_empty(&self) -> bool {
        self.frames == 0
    }

    /// Frames added.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Changes added.
    pub fn changes(&self) -> usize {
        self.changes
    }

    /// Keeps only each name's latest row once [`FOLD_AT`] rows (or twice
    /// what the last fold left) wait.
    fn fold_if_long(&mut self) {
        if self.rows.len() < FOLD_AT.max(2 * self.folded_len) {
            return;
        }
        let mut keep = vec![false; self.rows.len()];
        for at in self.latest_positions() {
            keep[at] = true;
        }
        let mut at = 0;
        self.rows.retain(|_| {
            at += 1;
            keep[at - 1]
        });
        self.folded_len = self.rows.len();
    }

    /// Each name's latest row (`None`: removed), sorted by name as redb
    /// keeps them. Sorts: call it off the reactor, on the worker.
    pub fn rows(&self) -> Vec<(&TaskName, &Option<Task>)> {
        self.latest_positions()
            .into_iter()
            .map(|at| {
                let (name, row) = &self.rows[at];
                (name, row)
            })
            .collect()
    }

    /// Where each name's latest row is in `rows`, in name order.
    fn latest_positions(&self) -> Vec<usize> {
        let name = |at: usize| &self.rows[at].0;
        // By the prefix (a compare of two integers), then by position: a
        // name's changes stay in the order they were made.
        let mut order: Vec<(u128, usize)> = self
            .rows
            .iter()
            .enumerate()
            .map(|(at, (name, _))| (name.order_prefix(), at))
            .collect();
        order.sort_unstable();
        // The rare names that share their first 16 bytes in full, yet
        // differ: by name, then by position. A run of one name's changes
        // is in order already.
        let mut at = 0;
        while at < order.len() {
            let prefix = order[at].0;
            let end = at + order[at..].iter().take_while(|row| row.0 == prefix).count();
            let first = name(order[at].1);
            if order[at + 1..end].iter().any(|row| name(row.1) != first) {
                order[at..end]
                    .sort_unstable_by(|a, b| name(a.1).cmp(name(b.1)).then(a.1.cmp(&b.1)));
            }
            at = end;
        }
        // Each name's last change.
        let mut latest = Vec::with_capacity(order.len());
        for (i, &(prefix, at)) in order.iter().enumerate() {
            let last = order
                .get(i + 1)
                .is_none_or(|&(next_prefix, next)| next_prefix != prefix || name(next) != name(at));
            if last {
                latest.push(at);
            }
        }
        latest
    }

    /// The events, in order.
    pub fn events(&self) -> &LineBatches {
        &self.events
    }

    pub fn keep_events_from(&self) -> u64 {
        self.keep_events_from
    }

    pub fn trim_slack(&self) -> u64 {
        self.trim_slack
    }

    /// Ended holds before this instant (ns) leave the usage history.
    pub fn usage_floor(&self) -> u64 {
        self.usage_floor
    }

    pub fn set_usage_floor(&mut self, floor: u64) {
        self.usage_floor = floor;
    }

    /// The log mark the tables reach once this is checkpointed.
    pub fn mark(&self) -> LogMark {
        self.mark
    }

    /// Sets that mark, for a caller that folded in frames without knowing
    /// where each one ends: recovery knows only where the last one does.
    pub fn set_mark(&mut self, mark: LogMark) {
        self.mark = mark;
    }

    /// The checkpointed rows (sorted by name, as redb keeps them) with
    /// these rows laid over them: one merge of two sorted sequences.
    pub fn overlay(&self, checkpointed: Vec<Task>) -> Vec<Task> {
        let rows = self.rows();
        let mut out = Vec::with_capacity(checkpointed.len() + rows.len());
        let mut old = checkpointed.into_iter().peekable();
        for (name, row) in rows {
            while let Some(task) = old.next_if(|task| task.name < *name) {
                out.push(task);
            }
            old.next_if(|task| task.name == *name);
            if let Some(task) = row {
                out.push(task.clone());
            }
        }
        out.extend(old);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fixtures::{put, remove, task};

    use crate::time::Timestamp;

    fn mark(lsn: u64) -> LogMark {
        LogMark {
            lsn,
            position: lsn * 64,
        }
    }

    #[test]
    fn the_latest_row_wins_and_events_keep_their_order() {
        let mut older = Pending::default();
        assert!(older.is_empty());
        let mut events = EventLines::default();
        events.push_line(1, b"one\n", None);
        events.push_line(2, b"two\n", Some(Timestamp::from_nanos(7)));
        older.add(
            &[put("a", 1), put("b", 1)],
            &Arc::new(events),
            (0, 8),
            mark(1),
        );
        let mut newer = Pending::default();
        let mut events = EventLines::default();
        events.push_line(3, b"three\n", None);
        events.push_line(4, b"four\n", Some(Timestamp::from_nanos(9)));
        newer.add(
            &[remove("a"), put("b", 2)],
            &Arc::new(events),
            (2, 4),
            mark(2),
        );
        older.absorb(newer);
        let rows: Vec<_> = older
            .rows()
            .into_iter()
            .map(|(name, row)| (name.as_str(), row.clone()))
            .collect();
        assert_eq!(rows, [("a", None), ("b", Some(task("b", 2)))]);
        let events: Vec<_> = older.events().iter().collect();
        assert_eq!(
            events,
            [
                (1, b"one\n".as_slice()),
                (2, b"two\n"),
                (3, b"three\n"),
                (4, b"four\n")
            ]
        );
        // The usage history's events keep their instants across folds.
        let usage: Vec<_> = older.events().usage().collect();
        assert_eq!(
            usage,
            [
                (Timestamp::from_nanos(7), 2, b"two\n".as_slice()),
                (Timestamp::from_nanos(9), 4, b"four\n")
            ]
        );
        assert_eq!(
            (older.frames(), older.changes(), older.mark()),
            (2, 4, mark(2))
        );
        assert_eq!((older.keep_events_from(), older.trim_slack()), (2, 4));
    }

    #[test]
    fn rows_come_in_name_order_past_the_sixteen_bytes_a_prefix_compares() {
        let names = [
            "shared-prefix-16bytes-b",
            "b",
            "shared-prefix-16bytes-a",
            "shared-prefix-16bytes",
            "a",
            "shared-prefix-16",
            "shared-prefix-1",
            "zzz",
            "shared-prefix-16bytes-a0",
        ];
        let mut pending = Pending::default();
        let changes: Vec<_> = names.iter().map(|name| put(name, 1)).collect();
        pending.add(&changes, &Arc::default(), (0, 0), mark(1));
        let got: Vec<&str> = pending
            .rows()
            .into_iter()
            .map(|(name, _)| name.as_str())
            .collect();
        let mut expected = names.to_vec();
        expected.sort_unstable();
        assert_eq!(got, expected);
    }

    /// What a pending's rows must say: each name's last change, by name
    /// (`None`: removed).
    #[derive(Default)]
    struct Model(std::collections::BTreeMap<String, Option<u64>>);

    impl Model {
        /// A change of `name` to expire at `expires` (`None`: its removal),
        /// noted.
        fn change(&mut self, name: &str, expires: Option<u64>) -> Change {
            self.0.insert(name.to_owned(), expires);
            match expires {
                Some(expires) => put(name, expires),
                None => remove(name),
            }
        }

        fn names(&self) -> usize {
            self.0.len()
        }

        /// Asserts that `pending`'s rows are the model's.
        fn check(&self, pending: &Pending) {
            let got: Vec<(&str, Option<u64>)> = pending
                .rows()
                .into_iter()
                .map(|(name, row)| {
                    (
                        name.as_str(),
                        row.as_ref().map(|task| task.expires_at.as_nanos()),
                    )
                })
                .collect();
            let expected: Vec<(&str, Option<u64>)> = self
                .0
                .iter()
                .map(|(name, expires)| (name.as_str(), *expires))
                .collect();
            assert_eq!(got, expected);
        }
    }

    /// A pseudo-random sequence, the same on every run.
    fn sequence(mut seed: u64) -> impl FnMut() -> u64 {
        move || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            seed >> 33
        }
    }

    /// Adds `changes` as frame `lsn`, without events.
    fn add(pending: &mut Pending, changes: &[Change], lsn: u64) {
        pending.add(changes, &Arc::default(), (0, 0), mark(lsn));
    }

    /// Every name's last change wins, in name order, whatever the order
    /// the changes came in: names that share their first 16 bytes and
    /// differ after them, names that are a prefix of others, short names,
    /// each changed many times, over several frames and an absorbed
    /// newer batch.
    #[test]
    fn each_names_last_change_wins_in_name_order() {
        let names = [
            "a",
            "ab",
            "build-2026-12-07-a",
            "build-2026-12-07-b",
            "build-2026-12-07",
            "build-2026-12-07-aa",
            "z",
            "build-2026-12-0",
        ];
        let mut model = Model::default();
        let mut next = sequence(7);
        let mut batch = |n: usize, model: &mut Model| -> Vec<Change> {
            (0..n)
                .map(|_| {
                    let name = names[next() as usize % names.len()];
                    let expires = next() % 1000;
                    model.change(name, (!expires.is_multiple_of(4)).then_some(expires))
                })
                .collect()
        };
        let mut pending = Pending::default();
        for lsn in 1..=20 {
            add(&mut pending, &batch(1 + lsn as usize * 3, &mut model), lsn);
        }
        let mut newer = Pending::default();
        add(&mut newer, &batch(40, &mut model), 21);
        pending.absorb(newer);
        model.check(&pending);
        assert_eq!(
            pending.changes(),
            (1..=20).map(|lsn| 1 + lsn * 3).sum::<usize>() + 40
        );
    }

    /// Once [`FOLD_AT`] changes wait, they are folded to one row per name
    /// in place: what `rows` says is unchanged, the count of changes too.
    #[test]
    fn a_long_backlog_is_folded_in_place() {
        let mut model = Model::default();
        let mut pending = Pending::default();
        let mut changes = |from: usize, n: usize| -> Vec<Change> {
            (from..from + n)
                .map(|i| model.change(&format!("n{}", i % 1000), Some(i as u64)))
                .collect()
        };
        add(&mut pending, &changes(0, FOLD_AT - 10), 1);
        assert_eq!(
            pending.rows.len(),
            FOLD_AT - 10,
            "not folded below the bound"
        );
        add(&mut pending, &changes(FOLD_AT - 10, 20), 2);
        assert_eq!(pending.rows.len(), 1000, "one row per name");
        assert_eq!(pending.changes(), FOLD_AT + 10);
        // Changes after the fold still win over the folded rows.
        add(&mut pending, &changes(FOLD_AT + 10, 5), 3);
        model.check(&pending);
    }

    /// A fold waits for twice what the last one left, and one reached
    /// through [`Pending::absorb`] (a failed checkpoint's rows taking the
    /// newer ones) keeps each name's last change as well: names in random
    /// order, sharing their first 16 bytes.
    #[test]
    fn folds_wait_for_twice_what_the_last_left_and_absorb_folds_too() {
        const NAMES: u64 = 100_000;
        let mut model = Model::default();
        let mut next = sequence(11);
        let mut changes = |n: usize, model: &mut Model| -> Vec<Change> {
            (0..n)
                .map(|_| {
                    let name = format!("agent-session-2026-12-07-{:06}", next() % NAMES);
                    model.change(&name, Some(next()))
                })
                .collect()
        };
        let mut failed = Pending::default();
        add(&mut failed, &changes(FOLD_AT, &mut model), 1);
        let folded = failed.rows.len();
        assert_eq!(
            folded,
            model.names(),
            "the first fold leaves one row a name"
        );
        assert!(
            folded > FOLD_AT / 2,
            "{folded}: the next fold waits past FOLD_AT"
        );
        // Past FOLD_AT but short of twice the fold: no fold.
        let short_of_twice = (FOLD_AT + 2 * folded) / 2 - folded;
        add(&mut failed, &changes(short_of_twice, &mut model), 2);
        assert!(failed.rows.len() > FOLD_AT);
        assert_eq!(failed.rows.len(), folded + short_of_twice);
        // A newer batch absorbed takes it past twice the fold.
        let mut newer = Pending::default();
        add(&mut newer, &changes(2 * folded, &mut model), 3);
        failed.absorb(newer);
        assert_eq!(failed.rows.len(), model.names(), "folded through absorb");
        model.check(&failed);
        assert_eq!(failed.mark(), mark(3));
    }

    #[test]
    fn recycled_is_empty_and_keeps_bounded_room() {
        let mut pending = Pending::default();
        let many = RECYCLED_ROOM * 3;
        let changes: Vec<_> = (0..many).map(|i| put(&format!("t{i}"), 1)).collect();
        let mut events = EventLines::default();
        for seq in 0..many as u64 {
            events.push_line(seq, b"{\"seq\":1}\n", Some(Timestamp::from_nanos(seq)));
        }
        pending.add(&changes, &Arc::new(events), (5, 6), mark(3));
        let recycled = pending.recycled();
        assert!(recycled.is_empty());
        assert!(recycled.rows().is_empty() && recycled.events().is_empty());
        assert_eq!(recycled.events().usage().count(), 0);
        assert_eq!(
            (
                recycled.changes(),
                recycled.mark(),
                recycled.keep_events_from(),
                recycled.trim_slack()
            ),
            (0, LogMark::default(), 0, 0)
        );
        // Room for the bound, not for the three times as much it held.
        let room = recycled.rows.capacity();
        assert!((RECYCLED_ROOM..2 * RECYCLED_ROOM).contains(&room), "{room}");
        // Filled again, it is the same as a new one.
        let mut again = recycled;
        again.add(&[put("a", 2)], &Arc::default(), (1, 2), mark(4));
        let rows: Vec<_> = again
            .rows()
            .into_iter()
            .map(|(name, row)| (name.as_str(), row.clone()))
            .collect();
        assert_eq!(rows, [("a", Some(task("a", 2)))]);
        assert_eq!(
            (again.frames(), again.changes(), again.mark()),
            (1, 1, mark(4))
        );
    }

    #[test]
    fn overlay_replaces_removes_and_inserts_in_name_order() {
        let mut pending = Pending::default();
        let changes = [put("b", 2), remove("c"), put("e", 5)];
        pending.add(&changes, &Arc::default(), (0, 0), mark(1));
        let checkpointed = vec![task("a", 1), task("b", 1), task("c", 1), task("d", 1)];
        assert_eq!(
            pending.overlay(checkpointed),
            [task("a", 1), task("b", 2), task("d", 1), task("e", 5)]
        );
    }
}
