//! Builders the unit tests of every file under `store` share: tasks by
//! name and expiry, with or without a holder, and the changes that put or
//! remove them.

use crate::tasks::{Change, Holder, Removal, Task, TaskName};
use crate::time::Timestamp;

/// A parent command line long enough to be shared among rows.
pub(super) const PARENT: &str = "bash -c while sleep 30; do sprite-env tasks refresh build; done";

/// A task started at 0 that expires at `expires` ns.
pub(super) fn task(name: &str, expires: u64) -> Task {
    Task::new(
        TaskName::parse(name).unwrap(),
        Timestamp::from_nanos(0),
        Timestamp::from_nanos(expires),
    )
}

/// A task held by `curl` under `parent`, each text its own copy (as tasks
/// of different requests have).
pub(super) fn held(name: &str, parent: &str) -> Task {
    Task {
        holder: Some(Holder {
            pid: Some(42),
            uid: Some(1000),
            command: Some("curl".into()),
            parent_pid: Some(41),
            parent_command: Some(parent.into()),
        }),
        ..Task::new(
            TaskName::parse(name).unwrap(),
            Timestamp::from_nanos(1),
            Timestamp::from_nanos(1_000_000),
        )
    }
}

pub(super) fn put(name: &str, expires: u64) -> Change {
    Change::Put {
        task: task(name, expires),
        created: true,
    }
}

pub(super) fn remove(name: &str) -> Change {
    Change::Remove {
        name: TaskName::parse(name).unwrap(),
        cause: Removal::Deleted,
    }
}
