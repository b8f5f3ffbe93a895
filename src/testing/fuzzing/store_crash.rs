//! The `store_crash` target: the store ([`Store`]) under injected faults
//! ([`FaultSwitch`]) or power cuts ([`powercut`]), reopened and compared
//! with what it acknowledged; and raw rows written behind its back, which
//! the record decoder must serve or quarantine without panicking.
//!
//! Both runs are over [`powercut::Disk`], in memory, starting from a copy
//! of a freshly created store ([`powercut::Disk::fresh`]): no file, no
//! sync, no redb creation per input. The same fault rules over real files
//! ([`faulty`](crate::testing::faulty)) are checked by the store's unit
//! tests and `tests/faults.rs`.

use std::collections::BTreeMap;

use crate::record;
use crate::store::Store;
use crate::tasks::{Change, Removal, Task};
use crate::testing::faulty::{FaultOn, FaultSwitch};
use crate::testing::powercut::{self, Disk};
use crate::time::Timestamp;

use super::{Input, START_NANOS, name_at};

/// Power cuts per input. Each round costs a redb open, a recovery and a
/// close (about 0.3 ms; five times that under AddressSanitizer): one per
/// input keeps the target over 1,000 inputs a second, and the corpus
/// carries the runs that lead to interesting states.
const MAX_CUTS: u64 = 1;

/// Restarts and raw rows per input (each reopens redb), for the same
/// reason; further ones are skipped.
const MAX_REOPENS: u32 = 2;

/// Operations per input in the fault run, for the same reason: each
/// commit or checkpoint is a redb transaction or a log append and sync.
const MAX_OPS: usize = 32;

fn task_of(input: &mut Input) -> Task {
    let name = name_at(input.byte());
    let started = START_NANOS + u64::from(input.byte()) * 1_000_000_000;
    let expires = started + u64::from(input.byte()) * 1_000_000_000;
    let holder = powercut::simulated_holder(u64::from(input.byte()));
    Task {
        holder,
        ..Task::new(
            name,
            Timestamp::from_nanos(started),
            Timestamp::from_nanos(expires),
        )
    }
}

fn change_of(input: &mut Input) -> Change {
    let kind = input.byte();
    if kind & 1 == 0 {
        Change::Put {
            task: task_of(input),
            created: kind & 2 != 0,
        }
    } else {
        Change::Remove {
            name: name_at(input.byte()),
            cause: match kind & 6 {
                0 => Removal::Deleted,
                2 => Removal::Expired,
                _ => Removal::Released {
                    pid: u32::from(kind),
                },
            },
        }
    }
}

/// What the table holds after `changes`, applied in order to `rows`.
fn applied(mut rows: BTreeMap<String, Task>, changes: &[Change]) -> BTreeMap<String, Task> {
    for change in changes {
        match change {
            Change::Put { task, .. } => {
                rows.insert(task.name.as_str().to_owned(), task.clone());
            }
            Change::Remove { name, .. } => {
                rows.remove(name.as_str());
            }
        }
    }
    rows
}

fn by_name(tasks: Vec<Task>) -> BTreeMap<String, Task> {
    tasks
        .into_iter()
        .map(|task| (task.name.as_str().to_owned(), task))
        .collect()
}

/// Loads through `store` and checks nothing was quarantined.
fn load_rows(store: &mut Store, after: &str) -> BTreeMap<String, Task> {
    let loaded = store
        .load()
        .unwrap_or_else(|e| panic!("the healed store does not load {after}: {e}"));
    assert!(
        loaded.quarantined.is_empty(),
        "rows we wrote were quarantined {after}: {:?}",
        loaded.quarantined
    );
    assert_eq!(
        (loaded.recounted, loaded.missing_texts),
        (0, 0),
        "stored command lines were miscounted or missing {after}"
    );
    by_name(loaded.tasks)
}

/// Fuzz input as the power-cut simulation's choices.
impl powercut::Choices for Input<'_> {
    fn below(&mut self, n: u64) -> u64 {
        u64::from(self.u16()) % n.max(1)
    }

    fn exhausted(&self) -> bool {
        self.data.is_empty()
    }
}

/// `store_crash`: the first byte picks one of two runs.
///
/// Odd: [`powercut::run`] with the input as its choices: commits,
/// checkpoints and recoveries through the real store (log and redb) over a
/// simulated disk, power cut at input-chosen operations with a random
/// prefix of the unsynced writes kept and the last one torn.
///
/// Even: operations of a few bytes each against a [`Store`] over a
/// simulated disk whose writes and syncs fail as a [`FaultSwitch`] says
/// (the log and the database alike):
///
/// - arm the fault switch: fail after N more writes and/or syncs, once or
///   for good, with torn writes or not;
/// - commit a batch of one to four puts and removes;
/// - checkpoint the log into the database now;
/// - drop the store and reopen it (a restart: a clean stop, or `kill -9`
///   with the page cache kept);
/// - write one raw row behind the store's back, valid, damaged or garbage,
///   and reopen.
///
/// Properties: a batch that was acknowledged is on disk after every later
/// failure and reopen; after a failed commit the reloaded store (the switch
/// healed, as after a disk is freed) holds the batch entirely or not at all;
/// a failed checkpoint loses nothing; a store that reloads after a failure
/// still accepts commits; nothing the store wrote is ever quarantined; and
/// whatever a raw row holds, the record decoder decides it without
/// panicking: served if it decodes, quarantined if not.
pub fn store_crash(data: &[u8]) {
    let mut input = Input::new(data);
    if input.byte() & 1 == 1 {
        if let Err(violation) = powercut::run(&mut input, MAX_CUTS) {
            panic!("{violation}");
        }
        return;
    }
    let disk = Disk::fresh();
    let switch = FaultSwitch::new();
    disk.inject_faults(&switch);
    let options = powercut::sim_options();
    let reopen = |switch: &FaultSwitch| {
        switch.heal();
        powercut::open_store(&disk, &options)
            .unwrap_or_else(|e| panic!("a healthy open failed: {e}"))
    };
    let mut store = reopen(&switch);
    let mut model = load_rows(&mut store, "when new");
    let mut reopens = 0;
    let mut ops = 0;
    while !input.is_empty() && ops < MAX_OPS {
        ops += 1;
        let op = input.byte();
        match op % 6 {
            0 => {
                let after = u64::from(input.byte() % 64);
                let on = match (op >> 3) % 3 {
                    0 => FaultOn::Any,
                    1 => FaultOn::Writes,
                    _ => FaultOn::Syncs,
                };
                let errno = if op & 0x20 != 0 {
                    libc::ENOSPC
                } else {
                    libc::EIO
                };
                switch.set_torn_writes(op & 0x40 != 0);
                if op & 0x80 != 0 {
                    switch.fail_after(after, on, errno);
                } else {
                    switch.fail_once_after(after, on, errno);
                }
            }
            1 | 2 => {
                let count = 1 + input.byte() % 4;
                let changes: Vec<Change> = (0..count).map(|_| change_of(&mut input)).collect();
                match store.commit(&changes) {
                    Ok(()) => model = applied(model, &changes),
                    Err(crate::store::StoreError::Full(_)) => {}
                    Err(_) => {
                        switch.heal();
                        let seen = load_rows(&mut store, "after a failed commit");
                        let with_batch = applied(model.clone(), &changes);
                        assert!(
                            seen == model || seen == with_batch,
                            "after a failed commit of {changes:?} the store holds {seen:?}, \
                             neither the acknowledged {model:?} nor {with_batch:?}"
                        );
                        model = seen;
                    }
                }
            }
            3 | 5 if reopens >= MAX_REOPENS => {}
            3 => {
                reopens += 1;
                switch.heal();
                if op & 0x40 != 0 {
                    // kill -9: redb does not close; the page cache stays.
                    disk.kill_process();
                    drop(store);
                    disk.revive();
                } else {
                    drop(store);
                }
                store = reopen(&switch);
                let seen = load_rows(&mut store, "after a restart");
                assert_eq!(seen, model, "a restart changed the store");
            }
            4 => {
                // A failed checkpoint is retried later; nothing is lost.
                let _ = store.checkpoint_now();
            }
            _ => {
                reopens += 1;
                switch.heal();
                // The raw row goes over the checkpointed state, as the
                // newest run: nothing of the log may be replayed over it.
                store.checkpoint_now().expect("a healthy checkpoint");
                disk.kill_process();
                drop(store);
                disk.revive();
                let expected = if input.byte().is_multiple_of(4) {
                    damage_chunk(&disk, &mut input);
                    None
                } else {
                    Some(write_raw_row(&disk, &mut input, model.clone()))
                };
                store = reopen(&switch);
                let loaded = store.load().expect("a store with a raw row loads");
                let served = by_name(loaded.tasks);
                if let Some(expected) = expected {
                    assert_eq!(served, expected, "a raw row was served wrongly");
                    let quarantined: Vec<&str> = loaded
                        .quarantined
                        .iter()
                        .map(|(key, _)| key.as_str())
                        .collect();
                    assert!(quarantined.len() <= 1, "{quarantined:?}");
                } else {
                    // Whatever is served after damage is what was
                    // acknowledged, at most without a command line the
                    // damage took: never an older version, never a task
                    // that was removed.
                    for (name, task) in &served {
                        let wanted = model.get(name).unwrap_or_else(|| {
                            panic!("{name} served after damage, but the store does not hold it: {task:?}")
                        });
                        assert!(
                            *task == without_lost_lines(wanted, task),
                            "{name} served after damage as {task:?}, but the store holds {wanted:?}"
                        );
                    }
                    // A damaged chunk is set aside whole: if nothing was,
                    // nothing was lost.
                    if loaded.quarantined.is_empty() {
                        assert_eq!(served, model, "damage lost rows without a word");
                    }
                    // Rewritten without it: the next load finds no more.
                    drop(store);
                    store = reopen(&switch);
                    let again = load_rows(&mut store, "after a damaged chunk was set aside");
                    assert_eq!(again, served, "a second load changed the store");
                }
                model = served;
            }
        }
    }
    switch.heal();
    disk.kill_process();
    drop(store);
    disk.revive();
    let mut store = reopen(&switch);
    let seen = load_rows(&mut store, "at the end");
    assert_eq!(seen, model, "acknowledged batches were lost");
    // The disk is thrown away: no clean close to pay for.
    disk.kill_process();
}

/// Writes one row straight into the task table: a valid record, the record
/// of another name, a record with one bit flipped, or arbitrary bytes under
/// an arbitrary key. Returns what a load must serve afterwards.
/// `wanted` without the holder's command lines that `served` lacks.
fn without_lost_lines(wanted: &Task, served: &Task) -> Task {
    let mut task = wanted.clone();
    if let (Some(holder), Some(served)) = (task.holder.as_mut(), served.holder.as_ref()) {
        if served.command.is_none() {
            holder.command = None;
        }
        if served.parent_command.is_none() {
            holder.parent_command = None;
        }
    }
    task
}

/// Flips a few bits of one stored chunk of the task tables (base or run),
/// or cuts it short, behind the store's back.
fn damage_chunk(disk: &Disk, input: &mut Input) {
    let db = powercut::open_database(disk).expect("a healthy open for damage");
    let pick = input.byte();
    let flips: Vec<(u8, u8)> = (0..1 + input.byte() % 3)
        .map(|_| (input.byte(), input.byte()))
        .collect();
    let cut = input.byte();
    crate::testing::tables::damage_chunk(&db, pick, |chunk| {
        if cut.is_multiple_of(8) {
            let keep = usize::from(cut) * chunk.len() / 256;
            chunk.truncate(keep);
        }
        for (at, bit) in &flips {
            if chunk.is_empty() {
                break;
            }
            let at = usize::from(*at) * 257 % chunk.len();
            chunk[at] ^= 1 << (bit % 8);
        }
    });
    disk.kill_process();
    drop(db);
    disk.revive();
}

fn write_raw_row(
    disk: &Disk,
    input: &mut Input,
    mut rows: BTreeMap<String, Task>,
) -> BTreeMap<String, Task> {
    let mode = input.byte();
    let (key, value): (Vec<u8>, Vec<u8>) = match mode % 4 {
        0 => {
            let task = task_of(input);
            (
                task.name.as_bytes().to_vec(),
                record::encode(&task).to_vec(),
            )
        }
        1 => {
            let task = task_of(input);
            let key = name_at(input.byte());
            (
                key.as_str().as_bytes().to_vec(),
                record::encode(&task).to_vec(),
            )
        }
        2 => {
            let task = task_of(input);
            let mut value = record::encode(&task);
            let bit = usize::from(input.byte()) % (value.len() * 8);
            value[bit / 8] ^= 1 << (bit % 8);
            (task.name.as_bytes().to_vec(), value.to_vec())
        }
        _ => {
            let key_len = usize::from(input.byte() % 8);
            let key: Vec<u8> = (0..key_len).map(|_| input.byte()).collect();
            let value_len = usize::from(input.byte() % 32);
            let value: Vec<u8> = (0..value_len).map(|_| input.byte()).collect();
            (key, value)
        }
    };
    let db = powercut::open_database(disk).expect("a healthy open for a raw row");
    crate::testing::tables::write_raw_run(&db, &key, &value);
    disk.kill_process();
    drop(db);
    disk.revive();
    let served = record::decode(&key, &value, &mut record::Texts::default());
    if let Ok(key) = std::str::from_utf8(&key) {
        rows.remove(key);
    }
    if let Ok(task) = served {
        rows.insert(task.name.as_str().to_owned(), task);
    }
    rows
}
