//! The store as the reactor core sees it, in memory: what was committed,
//! and failures to inject (a lost write, a torn one that reached the disk
//! but reported failure, a full log, an unreadable disk). For the core's
//! unit tests and the `reactor` fuzz target, which drive
//! [`crate::server::core::Core`] as the shell does.

use std::collections::{BTreeMap, VecDeque};

use crate::events::Event;
use crate::server::core::Commit;
use crate::store::{Loaded, StoreError};
use crate::tasks::{Change, Task};

/// What the next commit does on the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Nothing reaches the disk; the write fails.
    Lost,
    /// Everything reaches the disk, but the sync reports a failure.
    Torn,
    /// The log is full: refused before touching the disk.
    Full,
    /// The reload fails too.
    Unreadable,
}

/// The store, in memory: what was committed, and faults to inject.
#[derive(Debug, Default)]
pub struct MemoryStore {
    pub rows: BTreeMap<String, Task>,
    pub events: Vec<Event>,
    /// Faults the next commits and loads meet, in order.
    pub faults: VecDeque<Fault>,
    pub commits: usize,
    pub loads: usize,
}

impl MemoryStore {
    /// Writes `commit`, or fails as the next fault says.
    ///
    /// # Errors
    /// The injected failure.
    pub fn commit(&mut self, commit: &Commit) -> Result<(), StoreError> {
        self.commits += 1;
        let fault = self.faults.front().copied();
        if matches!(fault, Some(Fault::Lost | Fault::Torn | Fault::Full)) {
            self.faults.pop_front();
        }
        match fault {
            Some(Fault::Full) => return Err(StoreError::Full("the log is full".into())),
            Some(Fault::Lost) => return Err(StoreError::Io("write failed".into())),
            _ => {}
        }
        for change in commit.changes() {
            match change {
                Change::Put { task, .. } => {
                    self.rows
                        .insert(task.name.as_str().to_owned(), task.clone());
                }
                Change::Remove { name, .. } => {
                    self.rows.remove(name.as_str());
                }
            }
        }
        self.events.extend(commit.events().iter().cloned());
        match fault {
            Some(Fault::Torn) => Err(StoreError::Io("sync failed".into())),
            _ => Ok(()),
        }
    }

    /// What a reload finds.
    ///
    /// # Errors
    /// An injected [`Fault::Unreadable`].
    pub fn load(&mut self) -> Result<Loaded, StoreError> {
        self.loads += 1;
        if self.faults.front() == Some(&Fault::Unreadable) {
            self.faults.pop_front();
            return Err(StoreError::Io("read failed".into()));
        }
        Ok(Loaded {
            tasks: self.rows.values().cloned().collect(),
            quarantined: Vec::new(),
            recounted: 0,
            missing_texts: 0,
            events: self.events.clone(),
            usage: self
                .events
                .iter()
                .filter(|event| event.usage_instant().is_some())
                .cloned()
                .collect(),
            // Every usage event is kept: the history was never cut.
            usage_floor: 0,
            replayed: 0,
            torn_tail: None,
        })
    }
}
