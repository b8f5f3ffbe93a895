//! The rows by name: a hash map for finding one (what every request and
//! every change does) beside the names in order (what a list, a sweep and
//! a load walk).
//!
//! A `BTreeMap` keyed by name did both, but each lookup compared the name
//! with 13 to 30 others (`memcmp`, about 900 instructions a lookup with
//! 1,000 tasks, callgrind); the map hashes it once with the standard,
//! seeded SipHash, since names are chosen by clients. The ordered set
//! changes only when a name comes or goes, not on a refresh.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};

use super::{Task, TaskName};

/// Invariant: `order` holds exactly the keys of `by_name`, and each row is
/// keyed by its own name.
#[derive(Debug, Default)]
pub(super) struct Rows {
    by_name: HashMap<TaskName, Task>,
    order: BTreeSet<TaskName>,
}

impl Rows {
    pub(super) fn get(&self, name: &TaskName) -> Option<&Task> {
        self.by_name.get(name)
    }

    /// Puts `task` under its name; the row it replaces, if any.
    pub(super) fn insert(&mut self, task: Task) -> Option<Task> {
        match self.by_name.entry(task.name.clone()) {
            Entry::Occupied(mut row) => Some(std::mem::replace(row.get_mut(), task)),
            Entry::Vacant(row) => {
                self.order.insert(task.name.clone());
                row.insert(task);
                None
            }
        }
    }

    pub(super) fn remove(&mut self, name: &TaskName) -> Option<Task> {
        let task = self.by_name.remove(name)?;
        self.order.remove(name);
        Some(task)
    }

    pub(super) fn len(&self) -> usize {
        self.by_name.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Every row, in name order.
    pub(super) fn values(&self) -> impl Iterator<Item = &Task> {
        self.order.iter().filter_map(|name| self.by_name.get(name))
    }
}

impl FromIterator<Task> for Rows {
    /// A name given twice keeps its last row, as inserting would.
    fn from_iter<I: IntoIterator<Item = Task>>(tasks: I) -> Self {
        let tasks = tasks.into_iter();
        let mut by_name = HashMap::with_capacity(tasks.size_hint().0);
        for task in tasks {
            by_name.insert(task.name.clone(), task);
        }
        let order = by_name.keys().cloned().collect();
        Rows { by_name, order }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Timestamp;

    fn task(name: &str, expires: u64) -> Task {
        Task::new(
            TaskName::parse(name).unwrap(),
            Timestamp::from_nanos(0),
            Timestamp::from_nanos(expires),
        )
    }

    fn names(rows: &Rows) -> Vec<(&str, u64)> {
        rows.values()
            .map(|task| (task.name.as_str(), task.expires_at.as_nanos()))
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
        assert_eq!(
            rows.remove(&TaskName::parse("b").unwrap()),
            Some(task("b", 3))
        );
        assert_eq!(rows.remove(&TaskName::parse("b").unwrap()), None);
        assert_eq!(names(&rows), [("a", 5), ("c", 4)]);
        assert_eq!((rows.len(), rows.order.len()), (2, 2));
        assert_eq!(
            rows.get(&TaskName::parse("c").unwrap()),
            Some(&task("c", 4))
        );
        assert!(!rows.is_empty());
    }
}
