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
//! come and go mostly in order, at its ends.

use std::collections::{BTreeMap, VecDeque};

use super::TaskName;
use crate::time::Timestamp;

/// Invariant: every instant in `at` has at least one name; a `Many` holds
/// two or more names, sorted and distinct.
#[derive(Debug, Default)]
pub(super) struct Deadlines {
    at: BTreeMap<Timestamp, Names>,
}

/// The names of the rows that expire at one instant.
#[derive(Debug)]
enum Names {
    One(TaskName),
    Many(VecDeque<TaskName>),
}

impl Names {
    /// The names in order, as two runs.
    fn as_slices(&self) -> (&[TaskName], &[TaskName]) {
        match self {
            Names::One(name) => (std::slice::from_ref(name), &[]),
            Names::Many(names) => names.as_slices(),
        }
    }

    fn iter(&self) -> impl Iterator<Item = &TaskName> {
        let (front, back) = self.as_slices();
        front.iter().chain(back)
    }
}

impl Deadlines {
    /// Notes that the row `name` expires at `at`. A name already noted
    /// at `at` is noted once.
    pub(super) fn insert(&mut self, at: Timestamp, name: TaskName) {
        use std::collections::btree_map::Entry;
        match self.at.entry(at) {
            Entry::Vacant(entry) => {
                entry.insert(Names::One(name));
            }
            Entry::Occupied(mut entry) => {
                let names = entry.get_mut();
                match names {
                    Names::One(first) => match (*first).cmp(&name) {
                        std::cmp::Ordering::Less => {
                            *names = Names::Many([first.clone(), name].into());
                        }
                        std::cmp::Ordering::Greater => {
                            *names = Names::Many([name, first.clone()].into());
                        }
                        std::cmp::Ordering::Equal => {}
                    },
                    Names::Many(many) => {
                        // A turn's names mostly come in order: try the end
                        // first.
                        if many.back().is_some_and(|last| *last < name) {
                            many.push_back(name);
                        } else if let Err(place) = many.binary_search(&name) {
                            many.insert(place, name);
                        }
                    }
                }
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
            Names::Many(many) => {
                if let Ok(place) = many.binary_search(name) {
                    many.remove(place);
                    if many.len() == 1
                        && let Some(last) = many.pop_front()
                    {
                        *names = Names::One(last);
                    }
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

impl FromIterator<(Timestamp, TaskName)> for Deadlines {
    fn from_iter<I: IntoIterator<Item = (Timestamp, TaskName)>>(rows: I) -> Self {
        let mut deadlines = Deadlines::default();
        for (at, name) in rows {
            deadlines.insert(at, name);
        }
        deadlines
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
        let mut deadlines = Deadlines::default();
        let mut model: BTreeSet<(Timestamp, TaskName)> = BTreeSet::new();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for step in 0..20_000u32 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let at = Timestamp::from_nanos(state % 7);
            let row = name(&format!("t{}", (state >> 8) % 40));
            if (state >> 20).is_multiple_of(3) {
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
                assert_eq!(deadlines.len(), model.len());
                assert_eq!(deadlines.first(), model.first().map(|(at, _)| *at));
                assert_eq!(deadlines.last(), model.last().map(|(at, _)| *at));
            }
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
