//! The rows by name: one vector of rows, a hash table of their positions
//! for finding one by name (what every request and every change does),
//! and the name order for walking them (a list, a load's checks, a clock
//! step), sorted when first asked for after a name came or went.
//!
//! A `BTreeMap` of rows keyed by name did both, but each lookup compared
//! the name with 13 to 30 others (`memcmp`, about 900 instructions a
//! lookup with 1,000 tasks, callgrind); the hash table uses the keyed
//! SipHash each name carries from its parsing ([`crate::ids`]), since
//! names are chosen by clients.
//!
//! An ordered map of the names beside it (keyed by their 16-byte prefix as
//! an integer, then the name) kept the order at every create and delete:
//! a walk down a tree of 90k names, most of it cache misses, about 1 µs of
//! the reactor's 10 µs of user time per create or delete at 64 clients
//! (perf), and some 8 MiB of nodes with 100k tasks. Writes far outnumber
//! walks in name order (a list, a status answer), and a walk's answer
//! costs more than the sort: the order is now a sorted vector of
//! positions, built on demand and kept until a name comes or goes (a
//! refresh keeps it). With 100k tasks a walk takes 2.5 ms with the order
//! kept and 16 ms right after a change (`cargo bench --bench micro --
//! churn`); a client reading the list of 100k waits some 350 ms.

use std::cell::OnceCell;

use hashbrown::HashTable;

use super::deadlines::{Deadlines, REBUILD_SLACK};
use super::{Task, TaskName};
use crate::time::Timestamp;

/// Invariant: `slots` holds each row once, and `None` at exactly the
/// positions `free` lists; `index` holds exactly the positions of the
/// rows, each hashed by its row's name ([`TaskName::hash_key`]); `order`,
/// when set, lists exactly those positions, the rows' names ascending;
/// `deadlines` notes each row's deadline at its position (and stale
/// entries, see [`Deadlines`]).
///
/// The rows sit back to back in one vector (a hash table of rows would
/// leave an eighth of its 176-byte buckets empty and page-fault all of
/// them at start-up); the hash table holds a position each, and a lookup
/// compares the name at the position it finds. Holding the name as well
/// (a map from name to position) took 40 bytes a row instead of 4: 10 MiB
/// of table for 200k rows, and a tenth of a start-up inserting into it
/// (perf). A
/// removed row leaves a hole that the next new row fills: moving the last
/// row into it, as a swap-remove would, cost each removal a second hash
/// lookup for the moved row's name.
#[derive(Debug, Default)]
pub(super) struct Rows {
    slots: Vec<Option<Task>>,
    free: Vec<u32>,
    index: HashTable<u32>,
    /// The positions in name order, once a walk asked for it; dropped
    /// when a name comes or goes.
    order: OnceCell<Vec<u32>>,
    /// The rows' deadlines, by position.
    deadlines: Deadlines,
}

impl Rows {
    pub(super) fn get(&self, name: &TaskName) -> Option<&Task> {
        self.position(name).and_then(|at| self.at(at))
    }

    /// Where the row named `name` is.
    fn position(&self, name: &TaskName) -> Option<u32> {
        let slots = &self.slots;
        self.index
            .find(name.hash_key(), |&at| named(slots, at, name))
            .copied()
    }

    /// Puts `task` under its name; the row it replaces, if any.
    pub(super) fn insert(&mut self, task: Task) -> Option<Task> {
        let expires_at = task.expires_at;
        if let Some(at) = self.position(&task.name) {
            let old = self.slots[at as usize].replace(task);
            if let Some(old) = &old
                && old.expires_at != expires_at
            {
                self.deadlines.push(expires_at, at);
                self.left(old.expires_at);
            }
            return old;
        }
        let at = match self.free.pop() {
            Some(at) => at,
            None => {
                self.slots.push(None);
                slot(self.slots.len() - 1)
            }
        };
        let hash = task.name.hash_key();
        self.slots[at as usize] = Some(task);
        let slots = &self.slots;
        self.index.insert_unique(hash, at, |&at| hash_at(slots, at));
        self.deadlines.push(expires_at, at);
        self.order.take();
        None
    }

    pub(super) fn remove(&mut self, name: &TaskName) -> Option<Task> {
        let slots = &self.slots;
        let (at, _) = self
            .index
            .find_entry(name.hash_key(), |&at| named(slots, at, name))
            .ok()?
            .remove();
        let task = self.slots[at as usize].take();
        self.free.push(at);
        self.order.take();
        if let Some(task) = &task {
            self.left(task.expires_at);
        }
        // After a mass expiry the vector and the hash table would keep room
        // (and holes) for every row they ever held (16 MiB for 100k tasks):
        // once three quarters of the vector are holes, the rows move
        // together into room for twice what is left, and once a quarter of
        // the table is used it shrinks to twice that. Amortised: each
        // follows at least three removals a row it moves.
        if self.slots.len() > SHRINK_ABOVE && self.index.len() < self.slots.len() / 4 {
            self.compact();
        }
        if self.index.capacity() > SHRINK_ABOVE && self.index.len() < self.index.capacity() / 4 {
            let slots = &self.slots;
            self.index
                .shrink_to(self.index.len() * 2, |&at| hash_at(slots, at));
        }
        task
    }

    /// Moves the rows together, in the order they sit, with no holes.
    fn compact(&mut self) {
        let mut slots = Vec::with_capacity(self.index.len() * 2);
        slots.extend(self.slots.drain(..).filter(Option::is_some));
        self.slots = slots;
        self.index = index_of(&self.slots, self.slots.capacity());
        self.free = Vec::new();
        self.order.take();
        self.deadlines = deadlines_of(&self.slots);
    }

    /// A row left the deadline `at` (for another, or for good): its entry
    /// there is stale. The ends are trimmed if it was one of them, and
    /// the deadlines rebuilt once stale entries outnumber the rows.
    fn left(&mut self, at: Timestamp) {
        if self.deadlines.is_an_end(at) {
            let slots = &self.slots;
            self.deadlines
                .trim_ends(|at, position| live_at(slots, at, position));
        }
        if self.deadlines.entries() > 2 * self.index.len() + REBUILD_SLACK {
            self.deadlines = deadlines_of(&self.slots);
        }
    }

    /// The earliest deadline of any row.
    pub(super) fn next_deadline(&self) -> Option<Timestamp> {
        self.deadlines.first()
    }

    /// The latest deadline of any row.
    pub(super) fn last_deadline(&self) -> Option<Timestamp> {
        self.deadlines.last()
    }

    /// The rows due at `now`, earliest deadline first (in no particular
    /// order within one instant). A row may come twice (see
    /// [`Deadlines`]): the caller skips one it already took.
    pub(super) fn due(&self, now: Timestamp) -> impl Iterator<Item = &Task> {
        self.deadlines
            .due(now)
            .filter_map(|(at, position)| self.at(position).filter(|task| task.expires_at == at))
    }

    /// How many rows expire after `now`: every row but those due at `now`,
    /// which the deadlines name, without a walk of every row. `GET
    /// /metrics` and `GET /v1/status` ask for it; the walk read every row
    /// from memory, about 1.4 % of the daemon's CPU in the latency bench,
    /// which polls the metrics while a phase's checkpoint runs (perf).
    ///
    /// An expiry batch takes the due rows within a turn, so there are few,
    /// if any. Not always: after downtime, or when many fall due at once,
    /// a commit takes the server core's `MAX_EXPIRIES_PER_TURN`, and a
    /// failing store takes none. Past [`DUE_BEFORE_WALK`] entries (or an
    /// eighth of the rows) the walk is cheaper than reading and sorting
    /// scattered positions, and is taken instead.
    pub(super) fn live_count(&self, now: Timestamp) -> usize {
        let walk = || {
            self.values_unordered()
                .filter(|task| task.is_live(now))
                .count()
        };
        let mut due = Vec::new();
        for (seen, (at, position)) in self.deadlines.due(now).enumerate() {
            if seen >= DUE_BEFORE_WALK.max(self.len() / 8) {
                return walk();
            }
            if live_at(&self.slots, at, position) {
                due.push(position);
            }
        }
        // A row may be named twice (see `Deadlines`).
        due.sort_unstable();
        due.dedup();
        self.len() - due.len()
    }

    fn at(&self, at: u32) -> Option<&Task> {
        self.slots.get(at as usize).and_then(Option::as_ref)
    }

    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Every row, in name order: sorted here first if a name came or went
    /// since the last walk.
    pub(super) fn values(&self) -> impl Iterator<Item = &Task> {
        let order = self.order.get_or_init(|| {
            name_order(
                self.slots
                    .iter()
                    .enumerate()
                    .filter_map(|(at, task)| Some((slot(at), task.as_ref()?))),
            )
        });
        order.iter().filter_map(|&at| self.at(at))
    }

    /// The first `k` rows in name order of those `keep` admits: the start
    /// of the walk when the order is kept, else picked from all of them
    /// with no sort of the rest (a status answer after a change, with 100k
    /// rows: 3.3 ms against 10.8 for a sorted walk, `cargo bench --bench
    /// micro -- churn`).
    pub(super) fn first(&self, k: usize, keep: impl Fn(&Task) -> bool) -> Vec<&Task> {
        if self.order.get().is_some() {
            return self.values().filter(|task| keep(task)).take(k).collect();
        }
        let mut kept: Vec<(u128, &Task)> = self
            .slots
            .iter()
            .flatten()
            .filter(|task| keep(task))
            .map(|task| (task.name.order_prefix(), task))
            .collect();
        let by_name = |a: &(u128, &Task), b: &(u128, &Task)| {
            by_prefix_then_name((a.0, &a.1.name), (b.0, &b.1.name))
        };
        if kept.len() > k {
            if k == 0 {
                return Vec::new();
            }
            kept.select_nth_unstable_by(k - 1, by_name);
            kept.truncate(k);
        }
        kept.sort_unstable_by(by_name);
        kept.into_iter().map(|(_, task)| task).collect()
    }

    /// Every row, in no particular order: for passes that only count or
    /// collect, a walk through memory with no sort.
    pub(super) fn values_unordered(&self) -> impl Iterator<Item = &Task> {
        self.slots.iter().flatten()
    }
}

/// The positions of `rows` with their names ascending, sorted by
/// [`by_prefix_then_name`].
fn name_order<'a>(rows: impl Iterator<Item = (u32, &'a Task)>) -> Vec<u32> {
    let mut keyed: Vec<(u128, u32, &TaskName)> = rows
        .map(|(at, task)| (task.name.order_prefix(), at, &task.name))
        .collect();
    keyed.sort_unstable_by(|a, b| by_prefix_then_name((a.0, a.2), (b.0, b.2)));
    keyed.into_iter().map(|(_, at, _)| at).collect()
}

/// Name order over names held beside their 16-byte prefix as an integer
/// ([`TaskName::order_prefix`]): the integers decide, and the names
/// themselves only where two share those bytes, so most comparisons look
/// at no name at all.
fn by_prefix_then_name(a: (u128, &TaskName), b: (u128, &TaskName)) -> std::cmp::Ordering {
    a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1))
}

/// Whether the row at `position` expires at `at`: an entry of the
/// deadlines that is not stale.
fn live_at(slots: &[Option<Task>], at: Timestamp, position: u32) -> bool {
    slots
        .get(position as usize)
        .and_then(Option::as_ref)
        .is_some_and(|task| task.expires_at == at)
}

/// Whether the row at `at` is named `name`.
fn named(slots: &[Option<Task>], at: u32, name: &TaskName) -> bool {
    slots[at as usize]
        .as_ref()
        .is_some_and(|task| task.name == *name)
}

/// The hash of the row at `at`, to place it in the index.
fn hash_at(slots: &[Option<Task>], at: u32) -> u64 {
    slots[at as usize]
        .as_ref()
        .expect("every indexed position holds a row")
        .name
        .hash_key()
}

/// The index of every row, with room for `room` of them.
fn index_of(slots: &[Option<Task>], room: usize) -> HashTable<u32> {
    let mut index = HashTable::with_capacity(room);
    for (at, task) in slots.iter().enumerate() {
        if let Some(task) = task {
            index.insert_unique(task.name.hash_key(), slot(at), |&at| hash_at(slots, at));
        }
    }
    index
}

/// Every row's deadline at its position, with nothing stale.
fn deadlines_of(slots: &[Option<Task>]) -> Deadlines {
    slots
        .iter()
        .enumerate()
        .filter_map(|(at, task)| Some((task.as_ref()?.expires_at, slot(at))))
        .collect()
}

/// Due deadline entries (stale ones included) that [`Rows::live_count`]
/// reads before it walks every row instead; at least an eighth of the rows
/// with many, where the walk's sequential reads cost less than the
/// entries' scattered ones.
const DUE_BEFORE_WALK: usize = 64;

/// Below this many rows of room, removals never shrink the storage.
const SHRINK_ABOVE: usize = 1024;

/// A position in `slots` as the maps store it: 4 bytes, not 8. The task
/// limit is at most [`MAX_TASKS_CEILING`](super::MAX_TASKS_CEILING), far
/// below `u32::MAX` (a load is not refused for the limit, but a database
/// holds what the limit let in).
fn slot(at: usize) -> u32 {
    u32::try_from(at).expect("fewer than 2^32 rows")
}

impl FromIterator<Task> for Rows {
    /// A name given twice keeps its last row, as inserting would. Built in
    /// bulk: over rows already sorted by name (a load), with no comparison
    /// sort at all, and in name order from the start.
    ///
    /// A pass over 200k rows of 176 bytes costs some 5 ms in cache misses
    /// alone, so the rows move into their slots in the caller's pass (a
    /// load's sharing of command lines), and one more checks their order,
    /// indexes them and notes their deadlines. Five passes (move, check,
    /// move again, index, deadlines) made a load of 200k rows take 44-50
    /// ms; two take 34-40 (start-up over 100k tasks and 100k frames).
    fn from_iter<I: IntoIterator<Item = Task>>(tasks: I) -> Self {
        let mut slots: Vec<Option<Task>> = tasks.into_iter().map(Some).collect();
        let (index, deadlines) = match index_in_order(&slots) {
            Some(indexed) => indexed,
            None => {
                // Stable: of equal names the last given stays last, and
                // is the one kept.
                let mut rows: Vec<Task> = slots.into_iter().flatten().collect();
                rows.sort_by(|a, b| a.name.cmp(&b.name));
                rows.reverse();
                rows.dedup_by(|later, kept| later.name == kept.name);
                rows.reverse();
                slots = rows.into_iter().map(Some).collect();
                index_in_order(&slots).expect("rows just sorted by name")
            }
        };
        let order = OnceCell::from((0..slots.len()).map(slot).collect::<Vec<u32>>());
        Rows {
            slots,
            free: Vec::new(),
            index,
            order,
            deadlines,
        }
    }
}

/// The index of `slots` (every one a row) and each row's deadline, in one
/// pass; `None` if the rows are not in strictly ascending name order.
fn index_in_order(slots: &[Option<Task>]) -> Option<(HashTable<u32>, Deadlines)> {
    let mut index = HashTable::with_capacity(slots.len());
    let mut due = Vec::with_capacity(slots.len());
    let mut last: Option<(u128, &TaskName)> = None;
    for (at, task) in slots.iter().enumerate() {
        let task = task.as_ref()?;
        let name = (task.name.order_prefix(), &task.name);
        if last.is_some_and(|last| by_prefix_then_name(last, name).is_ge()) {
            return None;
        }
        last = Some(name);
        index.insert_unique(task.name.hash_key(), slot(at), |&at| hash_at(slots, at));
        due.push((task.expires_at, slot(at)));
    }
    Some((index, due.into_iter().collect()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::fixtures::{at, name, task};

    fn names(rows: &Rows) -> Vec<(&str, u64)> {
        rows.values()
            .map(|task| {
                (
                    task.name.as_str(),
                    task.expires_at.as_nanos() / 1_000_000_000,
                )
            })
            .collect()
    }

    #[test]
    fn rows_stay_in_name_order_through_every_change() {
        let mut rows: Rows = [task("b", 1), task("a", 2), task("b", 3)]
            .into_iter()
            .collect();
        assert_eq!(
            names(&rows),
            [("a", 2), ("b", 3)],
            "the last of a name wins"
        );
        assert_eq!(rows.insert(task("c", 4)), None);
        assert_eq!(rows.insert(task("a", 5)), Some(task("a", 2)));
        assert_eq!(names(&rows), [("a", 5), ("b", 3), ("c", 4)]);
        assert_eq!(rows.remove(&name("b")), Some(task("b", 3)));
        assert_eq!(rows.remove(&name("b")), None);
        assert_eq!(names(&rows), [("a", 5), ("c", 4)]);
        assert_eq!((rows.len(), rows.values_unordered().count()), (2, 2));
        assert_eq!(rows.order.get().map(Vec::len), Some(2));
        assert_eq!(rows.get(&name("c")), Some(&task("c", 4)));
        assert!(!rows.is_empty());
    }

    #[test]
    fn the_name_order_is_kept_through_refreshes_and_sorted_again_after_a_name_comes_or_goes() {
        let mut rows: Rows = [task("b", 1), task("d", 2)].into_iter().collect();
        assert!(
            rows.order.get().is_some(),
            "a load is in name order already"
        );
        assert_eq!(rows.insert(task("b", 3)), Some(task("b", 1)));
        assert!(rows.order.get().is_some(), "a refresh keeps the order");
        assert_eq!(names(&rows), [("b", 3), ("d", 2)]);
        assert_eq!(rows.insert(task("a", 4)), None);
        assert!(rows.order.get().is_none(), "a new name drops it");
        assert_eq!(names(&rows), [("a", 4), ("b", 3), ("d", 2)]);
        assert!(rows.order.get().is_some(), "a walk sorts it again");
        rows.remove(&name("b"));
        assert!(rows.order.get().is_none(), "a removal drops it");
        // The new row takes the hole "b" left, before "d" in the vector.
        assert_eq!(rows.insert(task("e", 5)), None);
        assert_eq!(names(&rows), [("a", 4), ("d", 2), ("e", 5)]);
    }

    #[test]
    fn every_position_follows_the_rows_through_inserts_and_removes() {
        // Against a BTreeMap model, with a small deterministic generator:
        // names come and go in an order that moves rows around.
        let mut rows = Rows::default();
        let mut model = std::collections::BTreeMap::new();
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for step in 0..4_000u64 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Some names share their first 16 bytes (or more): the sort
            // compares those in full.
            let text = match state % 4 {
                0 => format!("shared-16-bytes-{}", state % 29),
                1 => format!("shared-16-bytes{}", state % 7),
                _ => format!("t{}", state % 97),
            };
            if state.is_multiple_of(3) {
                let key = name(&text);
                assert_eq!(rows.remove(&key).map(|t| t.expires_at), model.remove(&text));
            } else {
                // Deadlines from a few instants: rows share them, and
                // come back to one they left.
                let row = task(&text, state % 11);
                assert_eq!(
                    rows.insert(row.clone()).map(|t| t.expires_at),
                    model.insert(text, row.expires_at)
                );
            }
            // The next and the latest deadline are exact at every step, and
            // so is the count of rows live at any instant.
            assert_eq!(rows.next_deadline(), model.values().min().copied());
            assert_eq!(rows.last_deadline(), model.values().max().copied());
            for now in [0, 1, 5, 10, 11].map(at) {
                let live = model.values().filter(|&&expires| expires > now).count();
                assert_eq!(rows.live_count(now), live, "at {now:?}, step {step}");
            }
            // Stale entries stay bounded by the rows (and the slack).
            assert!(rows.deadlines.entries() <= 2 * rows.len() + REBUILD_SLACK);
            if step.is_multiple_of(97) {
                let walked: Vec<_> = rows
                    .values()
                    .map(|t| (t.name.as_str().to_owned(), t.expires_at))
                    .collect();
                let expected: Vec<_> = model.iter().map(|(n, &e)| (n.clone(), e)).collect();
                assert_eq!(walked, expected);
                for (text, &expires) in &model {
                    let key = name(text);
                    assert_eq!(rows.get(&key).map(|t| t.expires_at), Some(expires));
                }
                assert_eq!(rows.values_unordered().count(), model.len());
                // Due at an instant: each row due once it is deduplicated,
                // earliest first, and no other row.
                let now = at(5);
                let mut due: Vec<(Timestamp, &str)> = rows
                    .due(now)
                    .map(|t| (t.expires_at, t.name.as_str()))
                    .collect();
                assert!(due.is_sorted_by_key(|(at, _)| *at));
                due.sort_unstable();
                due.dedup();
                let mut want: Vec<(Timestamp, &str)> = model
                    .iter()
                    .filter(|(_, e)| **e <= now)
                    .map(|(n, &e)| (e, n.as_str()))
                    .collect();
                want.sort_unstable();
                assert_eq!(due, want, "step {step}");
            }
            // Holes are exactly the free positions, and are filled first.
            assert_eq!(rows.free.len() + rows.len(), rows.slots.len());
            assert!(
                rows.free
                    .iter()
                    .all(|&at| rows.slots[at as usize].is_none())
            );
            // No more room than names: 29 + 7 + 97 of them.
            assert!(rows.slots.len() <= 29 + 7 + 97);
        }
        // A row is stored in place: an optional row costs no more room.
        assert_eq!(
            std::mem::size_of::<Option<Task>>(),
            std::mem::size_of::<Task>()
        );
    }

    #[test]
    fn the_first_rows_by_name_are_the_walks_first_with_the_order_kept_or_not() {
        // Names that share their first 16 bytes are told apart in full.
        let texts = [
            "zeta",
            "shared-16-bytes-b",
            "alpha",
            "shared-16-bytes-a",
            "mid",
            "b",
        ];
        let mut rows: Rows = texts.iter().map(|text| task(text, 1)).collect();
        rows.insert(task("aa", 2));
        let odd = |task: &Task| task.name.as_str().len() % 2 == 1;
        for k in 0..=8 {
            assert!(rows.order.get().is_none());
            let picked: Vec<&str> = rows.first(k, odd).iter().map(|t| t.name.as_str()).collect();
            let walked: Vec<&str> = rows
                .values()
                .filter(|task| odd(task))
                .take(k)
                .map(|t| t.name.as_str())
                .collect();
            assert_eq!(picked, walked, "k = {k}");
            let kept: Vec<&str> = rows.first(k, odd).iter().map(|t| t.name.as_str()).collect();
            assert_eq!(kept, walked, "k = {k}, the order kept");
            rows.order.take();
        }
        assert_eq!(
            rows.first(3, |_| true)
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>(),
            ["aa", "alpha", "b"]
        );
    }

    #[test]
    fn storage_shrinks_after_most_rows_go() {
        let mut rows: Rows = (0..4_000).map(|i| task(&format!("t{i:04}"), 9)).collect();
        let room = rows.slots.capacity();
        for i in 0..3_900 {
            assert!(rows.remove(&name(&format!("t{i:04}"))).is_some());
        }
        // Compacted into room for twice the rows left once fewer than a
        // quarter were left, and no further below SHRINK_ABOVE (the hash
        // table rounds its room up to a power of two).
        assert!(room >= 4_000);
        assert!(
            rows.slots.capacity() <= 2 * SHRINK_ABOVE,
            "{}",
            rows.slots.capacity()
        );
        assert_eq!(rows.free.len() + rows.len(), rows.slots.len());
        assert!(
            rows.index.capacity() <= 2 * SHRINK_ABOVE,
            "{}",
            rows.index.capacity()
        );
        let left: Vec<_> = rows.values().map(|t| t.name.as_str().to_owned()).collect();
        let expected: Vec<_> = (3_900..4_000).map(|i| format!("t{i:04}")).collect();
        assert_eq!(left, expected);
        // The deadlines follow the rows to their new positions (the
        // removals since the compaction left stale entries behind).
        assert!(rows.deadlines.entries() <= 2 * 100 + REBUILD_SLACK);
        let due: Vec<&str> = rows.due(at(9)).map(|t| t.name.as_str()).collect();
        assert_eq!(due.len(), 100);
        assert!(due.iter().all(|n| n.as_bytes()[1] == b'3'));
        assert_eq!(rows.get(&name("t3950")).map(|t| t.expires_at), Some(at(9)));
    }

    #[test]
    fn compaction_moves_rows_that_sit_out_of_name_order() {
        // Names inserted in a scattered order, holes refilled by later
        // names, then most removed: the compacted rows keep their
        // positions in the index and walk in name order.
        let text = |i: usize| format!("t{:05}", i * 7919 % 5_000);
        let mut rows = Rows::default();
        for i in 0..4_000 {
            assert!(rows.insert(task(&text(i), 1)).is_none());
        }
        for i in (0..4_000).step_by(2) {
            assert!(rows.remove(&name(&text(i))).is_some());
        }
        for i in 4_000..5_000 {
            assert!(rows.insert(task(&text(i), 2)).is_none());
        }
        let room = rows.slots.len();
        let mut left: Vec<String> = (1..4_000)
            .step_by(2)
            .chain(4_000..5_000)
            .map(text)
            .collect();
        for gone in left.drain(..2_700) {
            assert!(rows.remove(&name(&gone)).is_some());
        }
        assert!(
            rows.slots.len() < room,
            "compacted: {} of {room}",
            rows.slots.len()
        );
        assert_eq!(rows.free.len() + rows.len(), rows.slots.len());
        left.sort();
        let walked: Vec<&str> = rows.values().map(|t| t.name.as_str()).collect();
        assert_eq!(walked, left);
        for text in &left {
            assert_eq!(
                rows.get(&name(text)).map(|t| t.name.as_str()),
                Some(text.as_str())
            );
        }
    }

    #[test]
    fn a_load_keeps_the_last_of_each_name_sorted_or_not() {
        let sorted: Rows = [task("a", 1), task("b", 2)].into_iter().collect();
        assert_eq!(names(&sorted), [("a", 1), ("b", 2)]);
        let unsorted: Rows = [
            task("c", 1),
            task("a", 2),
            task("c", 3),
            task("a", 4),
            task("b", 5),
        ]
        .into_iter()
        .collect();
        assert_eq!(names(&unsorted), [("a", 4), ("b", 5), ("c", 3)]);
        assert_eq!(unsorted.len(), 3);
        assert_eq!(unsorted.get(&name("c")).map(|t| t.expires_at), Some(at(3)));
        // In order but for a name given twice in a row.
        let repeated: Rows = [task("a", 1), task("a", 2), task("b", 3)]
            .into_iter()
            .collect();
        assert_eq!(names(&repeated), [("a", 2), ("b", 3)]);
        assert_eq!(repeated.len(), 2);
        // Names that share their first 16 bytes, in order and not.
        let long = |tail: &str, expires| task(&format!("a-long-shared-prefix-{tail}"), expires);
        for given in [
            vec![long("x", 1), long("y", 2), long("z", 3)],
            vec![long("z", 3), long("x", 1), long("y", 2)],
        ] {
            let rows: Rows = given.clone().into_iter().collect();
            let mut expected = given;
            expected.sort_by(|a, b| a.name.cmp(&b.name));
            assert!(rows.values().eq(expected.iter()));
            for task in &expected {
                assert_eq!(rows.get(&task.name), Some(task));
            }
            assert_eq!(rows.next_deadline(), Some(at(1)));
            assert_eq!(rows.last_deadline(), Some(at(3)));
        }
    }
}
