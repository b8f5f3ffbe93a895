//! The rows' deadlines in time order: when the next expiry is due, the
//! latest one, and which rows are due at a given time.
//!
//! A `BTreeSet<(Timestamp, TaskName)>` did this first. The changes of one
//! turn share one wall-clock reading, so the set told a turn's creates
//! apart by comparing names all the way down (about 1,200 instructions a
//! change with 20k tasks, callgrind). Then an ordered map keyed by the
//! instant alone kept the names of one instant in a sorted deque. Under
//! the latency bench's 64 clients a refresh had to find its row's name
//! among the ~40 of its old instant: a binary search whose every
//! comparison read another name from memory, some 0.6 µs of a refresh's
//! 10 µs of user time (perf, docs/performance.md, the eleventh round).
//!
//! Here an instant keeps the positions of its rows in [`Rows`], in the
//! order they were noted, and nothing is ever searched for. A row that
//! takes a new deadline, or leaves, leaves its old entry behind, stale:
//! whoever reads an entry asks whether it is live (the position holds a
//! row with that deadline). Two things keep that cheap:
//!
//! - the first and the last instant each end in a live entry
//!   ([`Deadlines::trim_ends`], called when a row leaves one of them), so
//!   the next deadline and the latest are read at once;
//! - once stale entries outnumber the rows (plus [`REBUILD_SLACK`]), the
//!   owner builds the deadlines again from its rows: an O(n log n) sort
//!   every n or so changes (about 3 ms with 100k tasks).
//!
//! A position may hold a different row by the time an entry is read, when
//! a row left and a new one took its place; if that row has the same
//! deadline the entry is live and names it, and it is named twice (its
//! own entry is there too). Readers of [`Deadlines::due`] skip a row they
//! already took.
//!
//! [`Rows`]: super::rows::Rows

use std::collections::BTreeMap;

use crate::time::Timestamp;

/// Stale entries tolerated beyond one per row before a rebuild, so that a
/// handful of rows refreshed in a loop are not rebuilt at every change.
pub(super) const REBUILD_SLACK: usize = 1024;

/// Invariant: every instant in `at` has at least one entry; `entries`
/// counts them all; the last entry of the first instant and of the last
/// instant are live (the owner's part: it calls [`Deadlines::trim_ends`]
/// whenever one of them may have become stale).
#[derive(Debug, Default)]
pub(super) struct Deadlines {
    at: BTreeMap<Timestamp, Positions>,
    entries: usize,
}

/// The positions of the rows noted at one instant, in the order noted:
/// most instants have one (a turn of one change), so it sits in place.
#[derive(Debug)]
enum Positions {
    One(u32),
    Many(Vec<u32>),
}

impl Positions {
    fn as_slice(&self) -> &[u32] {
        match self {
            Positions::One(at) => std::slice::from_ref(at),
            Positions::Many(all) => all,
        }
    }
}

impl Deadlines {
    /// Notes that the row at `position` expires at `at`.
    pub(super) fn push(&mut self, at: Timestamp, position: u32) {
        use std::collections::btree_map::Entry;
        self.entries += 1;
        match self.at.entry(at) {
            Entry::Vacant(entry) => {
                entry.insert(Positions::One(position));
            }
            Entry::Occupied(mut entry) => {
                let positions = entry.get_mut();
                match positions {
                    Positions::One(first) => *positions = Positions::Many(vec![*first, position]),
                    Positions::Many(all) => all.push(position),
                }
            }
        }
    }

    /// The earliest deadline.
    pub(super) fn first(&self) -> Option<Timestamp> {
        self.at.first_key_value().map(|(at, _)| *at)
    }

    /// The latest deadline.
    pub(super) fn last(&self) -> Option<Timestamp> {
        self.at.last_key_value().map(|(at, _)| *at)
    }

    /// Whether `at` is the first or the last instant: a row leaving it
    /// must [`trim_ends`](Self::trim_ends).
    pub(super) fn is_an_end(&self, at: Timestamp) -> bool {
        self.first() == Some(at) || self.last() == Some(at)
    }

    /// Entries noted, live and stale.
    pub(super) fn entries(&self) -> usize {
        self.entries
    }

    /// Drops the entries `live` refuses from the end of the first and the
    /// last instant, and the instants that empties, until each ends in a
    /// live one. Each entry is dropped once: amortised O(1) a change.
    pub(super) fn trim_ends(&mut self, live: impl Fn(Timestamp, u32) -> bool) {
        self.trim(&live, true);
        self.trim(&live, false);
    }

    fn trim(&mut self, live: &impl Fn(Timestamp, u32) -> bool, first: bool) {
        loop {
            let entry = if first {
                self.at.first_entry()
            } else {
                self.at.last_entry()
            };
            let Some(mut entry) = entry else {
                return;
            };
            let at = *entry.key();
            match entry.get_mut() {
                Positions::One(position) => {
                    if live(at, *position) {
                        return;
                    }
                }
                Positions::Many(all) => {
                    while let Some(&position) = all.last() {
                        if live(at, position) {
                            return;
                        }
                        all.pop();
                        self.entries -= 1;
                    }
                    // Emptied: the instant goes (counted above).
                    entry.remove();
                    continue;
                }
            }
            entry.remove();
            self.entries -= 1;
        }
    }

    /// Every entry of the instants up to `now`, earliest instant first,
    /// the latest noted first within one (so that what an expiry takes is
    /// what [`trim_ends`](Self::trim_ends) drops next). Stale entries
    /// included: the reader checks each.
    pub(super) fn due(&self, now: Timestamp) -> impl Iterator<Item = (Timestamp, u32)> {
        self.at.range(..=now).flat_map(|(at, positions)| {
            positions
                .as_slice()
                .iter()
                .rev()
                .map(move |&position| (*at, position))
        })
    }

    /// Every entry, earliest instant first, in the order noted within one.
    #[cfg(test)]
    pub(super) fn iter(&self) -> impl Iterator<Item = (Timestamp, u32)> {
        self.at.iter().flat_map(|(at, positions)| {
            positions
                .as_slice()
                .iter()
                .map(move |&position| (*at, position))
        })
    }
}

/// Built in one pass from every row's deadline and position (a load, a
/// rebuild): sorted first, so each instant's entries are one run.
impl FromIterator<(Timestamp, u32)> for Deadlines {
    fn from_iter<I: IntoIterator<Item = (Timestamp, u32)>>(rows: I) -> Self {
        let mut rows: Vec<_> = rows.into_iter().collect();
        rows.sort_unstable();
        let entries = rows.len();
        let mut at: BTreeMap<Timestamp, Positions> = BTreeMap::new();
        let mut rows = rows.into_iter().peekable();
        while let Some((instant, first)) = rows.next() {
            let mut positions = Positions::One(first);
            while let Some((_, position)) = rows.next_if(|(next, _)| *next == instant) {
                match &mut positions {
                    Positions::One(only) => positions = Positions::Many(vec![*only, position]),
                    Positions::Many(all) => all.push(position),
                }
            }
            at.insert(instant, positions);
        }
        Deadlines { at, entries }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn at(nanos: u64) -> Timestamp {
        Timestamp::from_nanos(nanos)
    }

    /// Random deadlines given to and taken from a few positions, against
    /// a map of each position's one deadline, trimmed as the rows do: the
    /// ends are always exact, and the live entries are exactly the map.
    #[test]
    fn the_ends_stay_exact_and_the_live_entries_are_the_rows() {
        let mut deadlines = Deadlines::default();
        let mut rows: BTreeMap<u32, Timestamp> = BTreeMap::new();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for step in 0..40_000u32 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let instant = at(state % 9);
            let position = u32::try_from((state >> 8) % 50).unwrap();
            let old = if (state >> 20).is_multiple_of(3) {
                rows.remove(&position)
            } else {
                let old = rows.insert(position, instant);
                if old != Some(instant) {
                    deadlines.push(instant, position);
                }
                old.filter(|&old| old != instant)
            };
            if let Some(old) = old
                && deadlines.is_an_end(old)
            {
                deadlines.trim_ends(|at, position| rows.get(&position) == Some(&at));
            }
            assert_eq!(deadlines.first(), rows.values().min().copied(), "{step}");
            assert_eq!(deadlines.last(), rows.values().max().copied(), "{step}");
            if step.is_multiple_of(97) {
                let mut live: Vec<(Timestamp, u32)> = deadlines
                    .iter()
                    .filter(|(at, position)| rows.get(position) == Some(at))
                    .collect();
                live.sort_unstable();
                live.dedup();
                let mut want: Vec<(Timestamp, u32)> =
                    rows.iter().map(|(&position, &at)| (at, position)).collect();
                want.sort_unstable();
                assert_eq!(live, want, "{step}");
                // Due at an instant: the live entries up to it, and only
                // those instants.
                let now = at(4);
                assert!(deadlines.due(now).all(|(at, _)| at <= now));
                let mut due: Vec<_> = deadlines
                    .due(now)
                    .filter(|(at, position)| rows.get(position) == Some(at))
                    .collect();
                due.sort_unstable();
                due.dedup();
                want.retain(|(at, _)| *at <= now);
                assert_eq!(due, want, "{step}");
                // Rebuilt from the rows, nothing stale is left.
                let rebuilt: Deadlines = rows.iter().map(|(&p, &at)| (at, p)).collect();
                assert_eq!(rebuilt.entries(), rows.len());
                assert_eq!(rebuilt.iter().count(), rows.len());
                assert_eq!(rebuilt.first(), deadlines.first());
                assert_eq!(rebuilt.last(), deadlines.last());
            }
            assert_eq!(deadlines.entries(), deadlines.iter().count());
        }
        // Every row gone and the ends trimmed: nothing is left.
        let instants: Vec<Timestamp> = rows.values().copied().collect();
        rows.clear();
        for instant in instants {
            if deadlines.is_an_end(instant) {
                deadlines.trim_ends(|_, _| false);
            }
        }
        assert_eq!((deadlines.first(), deadlines.last()), (None, None));
    }

    #[test]
    fn due_gives_the_latest_noted_first_within_an_instant() {
        let mut deadlines: Deadlines = [(at(5), 2), (at(9), 0), (at(5), 1)].into_iter().collect();
        deadlines.push(at(5), 7);
        deadlines.push(at(3), 4);
        let due: Vec<_> = deadlines.due(at(5)).collect();
        assert_eq!(due, [(at(3), 4), (at(5), 7), (at(5), 2), (at(5), 1)]);
        assert_eq!(deadlines.entries(), 5);
        // Trimming drops what is stale from the ends of the first and the
        // last instant, and stops at a live entry: 1 at 5 is stale too,
        // but sits before the live 2, and stays for a rebuild.
        deadlines.trim_ends(|_, position| ![4, 7, 1].contains(&position));
        assert_eq!(
            (deadlines.first(), deadlines.last()),
            (Some(at(5)), Some(at(9)))
        );
        let left: Vec<_> = deadlines.iter().collect();
        assert_eq!(left, [(at(5), 1), (at(5), 2), (at(9), 0)]);
        assert_eq!(deadlines.entries(), 3);
    }
}
