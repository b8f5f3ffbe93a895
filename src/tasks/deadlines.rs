//! The rows' deadlines in time order: when the next expiry is due, and
//! which rows are due at a given time.
//!
//! A `BTreeSet<(Timestamp, TaskName)>` did this, but the changes of one
//! turn share one wall-clock reading, so a turn's creates with the same
//! `expire` share a deadline and the set told them apart by comparing
//! names (`memcmp`) all the way down: about 1,200 instructions an insert
//! or a removal with 20k tasks (callgrind), twice for a refresh. Here the
//! ordered map is keyed by the instant alone (an integer compare), and
//! the names that share one sit in a short sorted deque: a turn's names
//! come and go mostly in order, at its ends. Past [`FEW`] names (a load
//! that bounded many deadlines to one instant) they move to an ordered
//! set, so that a removal from the middle is not a shift of them all.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, VecDeque, btree_set};

use super::TaskName;
use crate::time::Timestamp;

/// Invariant: every instant in `at` has at least one name; a `Few` holds
/// two to [`FEW`] names, a `Many` more than [`FEW`] / 2, sorted and
/// distinct.
#[derive(Debug, Default)]
pub(super) struct Deadlines {
    at: BTreeMap<Timestamp, Names>,
}

/// Most names one instant keeps in a deque: a turn's creates, at most
/// 64 a connection, share theirs.
const FEW: usize = 256;

/// The names of the rows that expire at one instant.
#[derive(Debug)]
enum Names {
    One(TaskName),
    Few(VecDeque<TaskName>),
    Many(BTreeSet<TaskName>),
}

impl Names {
    fn iter(&self) -> NamesIter<'_> {
        match self {
            Names::One(name) => NamesIter::Few(std::slice::from_ref(name).iter().chain(&[])),
            Names::Few(names) => {
                let (front, back) = names.as_slices();
                NamesIter::Few(front.iter().chain(back))
            }
            Names::Many(names) => NamesIter::Many(names.iter()),
        }
    }
}

/// The names of one instant, in order.
enum NamesIter<'a> {
    Few(std::iter::Chain<std::slice::Iter<'a, TaskName>, std::slice::Iter<'a, TaskName>>),
    Many(btree_set::Iter<'a, TaskName>),
}

impl<'a> Iterator for NamesIter<'a> {
    type Item = &'a TaskName;

    fn next(&mut self) -> Option<&'a TaskName> {
        match self {
            NamesIter::Few(names) => names.next(),
            NamesIter::Many(names) => names.next(),
        }
    }
}

impl Deadlines {
    /// Notes that the row `name` expires at `at`. A name already noted
    /// at `at` is noted once.
    pub(super) fn insert(&mut self, at: Timestamp, name: TaskName) {
        use std::collections::btree_map::Entry;
        let names = match self.at.entry(at) {
            Entry::Vacant(entry) => {
                entry.insert(Names::One(name));
                return;
            }
            Entry::Occupied(entry) => entry.into_mut(),
        };
        match names {
            Names::One(first) => match (*first).cmp(&name) {
                Ordering::Less => *names = Names::Few([first.clone(), name].into()),
                Ordering::Greater => *names = Names::Few([name, first.clone()].into()),
                Ordering::Equal => {}
            },
            Names::Few(few) => {
                // A turn's names mostly come in order: try the end first.
                if few.back().is_some_and(|last| *last < name) {
                    few.push_back(name);
                } else if let Err(place) = few.binary_search(&name) {
                    few.insert(place, name);
                }
                if few.len() > FEW {
                    *names = Names::Many(few.drain(..).collect());
                }
            }
            Names::Many(many) => {
                many.insert(name);
            }
        }
    }

    /// Forgets that `name` expires at `at`; nothing if it was not noted.
    pub(super) fn remove(&mut self, at: Timestamp, name: &TaskName) {
        let Some(names) = self.at.get_mut(&at) else {
            return;
        };
        match names {
            Names::One(only) => {
                if only == name {
                    self.at.remove(&at);
                }
            }
            Names::Few(few) => {
                if let Ok(place) = few.binary_search(name) {
                    few.remove(place);
                    if few.len() == 1
                        && let Some(last) = few.pop_front()
                    {
                        *names = Names::One(last);
                    }
                }
            }
            Names::Many(many) => {
                if many.remove(name) && many.len() <= FEW / 2 {
                    *names = Names::Few(std::mem::take(many).into_iter().collect());
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

    /// Every deadline and its row's name, earliest first, names in order
    /// within an instant.
    pub(super) fn iter(&self) -> impl Iterator<Item = (Timestamp, &TaskName)> {
        self.at
            .iter()
            .flat_map(|(at, names)| names.iter().map(move |name| (*at, name)))
    }

    /// How many rows are noted.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.at.values().map(|names| names.iter().count()).sum()
    }
}

/// Sorted first and built in one pass (a load's 100k rows, which may share
/// one instant): inserting them one by one cost a start-up about 20 ms of
/// B-tree descents, comparing names within a shared instant.
impl FromIterator<(Timestamp, TaskName)> for Deadlines {
    fn from_iter<I: IntoIterator<Item = (Timestamp, TaskName)>>(rows: I) -> Self {
        let mut rows: Vec<_> = rows.into_iter().collect();
        rows.sort_unstable();
        rows.dedup();
        let mut groups: Vec<(Timestamp, Vec<TaskName>)> = Vec::new();
        for (at, name) in rows {
            match groups.last_mut() {
                Some((last, names)) if *last == at => names.push(name),
                _ => groups.push((at, vec![name])),
            }
        }
        let at = groups
            .into_iter()
            .map(|(at, mut names)| {
                let names = match names.len() {
                    1 => Names::One(names.remove(0)),
                    // Sorted: the set is built without a search.
                    n if n > FEW => Names::Many(names.into_iter().collect()),
                    _ => Names::Few(names.into()),
                };
                (at, names)
            })
            .collect();
        Deadlines { at }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn name(text: &str) -> TaskName {
        TaskName::parse(text).unwrap()
    }

    /// Random inserts and removals, many sharing an instant, against the
    /// ordered set of pairs this replaces.
    #[test]
    fn it_orders_and_forgets_as_a_set_of_pairs_does() {
        // Few names an instant, then groups that grow past FEW and shrink
        // back below half of it (the remove-heavy half of the second run).
        for (instants, names, steps) in [(7, 40, 20_000u32), (2, 3 * FEW as u64, 40_000)] {
            pairs_against_a_set(instants, names, steps);
        }
    }

    fn pairs_against_a_set(instants: u64, names: u64, steps: u32) {
        let mut deadlines = Deadlines::default();
        let mut model: BTreeSet<(Timestamp, TaskName)> = BTreeSet::new();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for step in 0..steps {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let at = Timestamp::from_nanos(state % instants);
            let row = name(&format!("t{}", (state >> 8) % names));
            // A third of the steps remove in the first half, nine in ten
            // in the second.
            let remove = if step < steps / 2 {
                (state >> 20).is_multiple_of(3)
            } else {
                !(state >> 20).is_multiple_of(10)
            };
            if step == steps / 2 && names > FEW as u64 {
                assert!(deadlines.at.values().all(|n| matches!(n, Names::Many(_))));
            }
            if remove {
                deadlines.remove(at, &row);
                model.remove(&(at, row));
            } else {
                deadlines.insert(at, row.clone());
                model.insert((at, row));
            }
            if step.is_multiple_of(97) {
                let got: Vec<_> = deadlines.iter().map(|(at, n)| (at, n.clone())).collect();
                let want: Vec<_> = model.iter().cloned().collect();
                assert_eq!(got, want, "step {step}");
                // Built at once from the same pairs (twice over, out of
                // order), it is the same.
                let rebuilt: Deadlines = model.iter().rev().chain(&model).cloned().collect();
                let again: Vec<_> = rebuilt.iter().map(|(at, n)| (at, n.clone())).collect();
                assert_eq!(again, want, "step {step}");
                assert!(rebuilt.at.values().all(|names| match names {
                    Names::One(_) => true,
                    Names::Few(few) => (2..=FEW).contains(&few.len()),
                    Names::Many(many) => many.len() > FEW,
                }));
                assert_eq!(deadlines.len(), model.len());
                assert_eq!(deadlines.first(), model.first().map(|(at, _)| *at));
                assert_eq!(deadlines.last(), model.last().map(|(at, _)| *at));
            }
        }
        if names > FEW as u64 {
            // Shrunk below half of FEW, the groups are deques again.
            assert!(deadlines.at.values().all(|n| matches!(n, Names::Few(_))));
        }
        // Emptied, nothing is left behind.
        for (at, row) in std::mem::take(&mut model) {
            deadlines.remove(at, &row);
        }
        assert!(deadlines.at.is_empty() && deadlines.first().is_none());
    }

    #[test]
    fn a_name_not_noted_at_that_instant_is_left_alone() {
        let mut deadlines: Deadlines = [
            (Timestamp::from_nanos(5), name("a")),
            (Timestamp::from_nanos(5), name("b")),
            (Timestamp::from_nanos(9), name("a")),
        ]
        .into_iter()
        .collect();
        deadlines.remove(Timestamp::from_nanos(9), &name("b"));
        deadlines.remove(Timestamp::from_nanos(6), &name("a"));
        deadlines.remove(Timestamp::from_nanos(5), &name("c"));
        assert_eq!(deadlines.len(), 3);
        deadlines.insert(Timestamp::from_nanos(5), name("a"));
        assert_eq!(deadlines.len(), 3);
        deadlines.remove(Timestamp::from_nanos(5), &name("a"));
        let left: Vec<_> = deadlines.iter().map(|(at, n)| (at, n.as_str())).collect();
        assert_eq!(
            left,
            [
                (Timestamp::from_nanos(5), "b"),
                (Timestamp::from_nanos(9), "a")
            ]
        );
        assert!(matches!(
            deadlines.at[&Timestamp::from_nanos(5)],
            Names::One(_)
        ));
    }
}
