//! Builders the unit tests of every file under `tasks` share: instants and
//! durations in whole seconds, names, commands and claims, and a one-command
//! commit.

use std::time::Duration;

use super::{Batch, Binding, Claim, Command, Holder, Outcome, Task, TaskError, TaskName, Tasks};
use crate::time::Timestamp;

const SECOND: u64 = 1_000_000_000;

pub(super) fn at(seconds: u64) -> Timestamp {
    Timestamp::from_nanos(seconds * SECOND)
}

pub(super) fn name(text: &str) -> TaskName {
    TaskName::parse(text).unwrap()
}

/// A task started at 0 that expires at `expires` seconds.
pub(super) fn task(n: &str, expires: u64) -> Task {
    Task::new(name(n), at(0), at(expires))
}

pub(super) fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Plans one command in its own batch and applies it, as a commit would.
pub(super) fn run(
    tasks: &mut Tasks,
    command: Command,
    now: Timestamp,
) -> Result<Outcome, TaskError> {
    let mut batch = Batch::new();
    let outcome = tasks.plan(&mut batch, command, now);
    tasks.apply(batch);
    outcome
}

pub(super) fn create(n: &str, expire: u64) -> Command {
    Command::Create {
        name: name(n),
        expire: secs(expire),
        claim: Claim::default(),
        caller: None,
    }
}

pub(super) fn upsert(n: &str, expire: u64) -> Command {
    Command::Upsert {
        name: name(n),
        expire: secs(expire),
        claim: Claim::default(),
        caller: None,
    }
}

pub(super) fn claim(reason: Option<&str>, pid: Option<u32>) -> Claim {
    Claim {
        holder: None,
        reason: reason.map(str::to_owned),
        binding: pid.map(|pid| Binding {
            pid,
            start_time: u64::from(pid) * 10,
        }),
        max_held_for: None,
    }
}

/// A refresh by process `from`, binding the task to process `to`.
pub(super) fn handed(n: &str, from: u32, to: u32) -> Command {
    let mut claim = claim(None, Some(to));
    claim.holder = Some(Holder {
        pid: Some(from),
        ..Holder::default()
    });
    Command::Upsert {
        name: name(n),
        expire: secs(5),
        claim,
        caller: None,
    }
}

pub(super) fn delete(n: &str) -> Command {
    Command::Delete {
        name: name(n),
        caller: None,
        bound_to: None,
    }
}
