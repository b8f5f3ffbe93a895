//! Power cuts, simulated deterministically: a [`Disk`] in memory that keeps
//! only what was synced, under both the log ([`SimLog`]) and redb
//! ([`SimBackend`]), and a driver ([`run`]) that puts the real store through
//! commits, checkpoints and recoveries, cuts the power at a chosen
//! operation, and checks what comes back against a model.
//!
//! The cut model: every write since a file's last sync is lost, or a prefix
//! of them survives in order, the last one torn at a 512-byte boundary. A
//! new name in the directory survives only once the directory was synced.
//! After the cut nothing more reaches the disk.
//!
//! What [`run`] checks after each cut: the store opens and loads (a cut
//! never refuses a start), and what it loads is the state after the last
//! acknowledged commit or after one of the commits attempted since (those
//! got no answer): nothing acknowledged is lost or undone, nothing appears
//! that was never attempted. Events are checked the same way.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use redb::{Builder, Database, DatabaseError, StorageBackend};

use crate::events::{Event, EventKind, EventLines};
use crate::store::{LogIo, Opener, Store, StoreOptions};
use crate::tasks::{Change, Holder, Removal, Task, TaskName};
use crate::testing::faulty::FaultSwitch;
use crate::time::Timestamp;

/// Sector size: a torn write keeps a whole number of these.
const SECTOR: u64 = 512;

/// The database's name on the simulated disk, and the log's.
const DB: &str = "tasks.redb";
const LOG: &str = "tasks.redb.wal";
const DB_NEW: &str = "tasks.redb.new";

/// A simulated machine's disk. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct Disk {
    state: Arc<Mutex<DiskState>>,
}

#[derive(Debug, Default, Clone)]
struct DiskState {
    files: BTreeMap<&'static str, SimFile>,
    /// Names that survive a cut (the directory as last synced).
    durable_names: BTreeSet<&'static str>,
    /// Operations (writes, set_len, syncs) left before the power goes;
    /// `None`: no cut armed.
    ops_left: Option<u64>,
    /// The power is out, or the process was killed: every operation
    /// fails and changes nothing.
    dead: bool,
    ops: u64,
    /// Injected failures (a full disk, an I/O error), on top of the cut.
    faults: Option<FaultSwitch>,
}

/// A file's bytes are shared until written (copy on write): copying a
/// disk, or syncing a file, copies no bytes.
#[derive(Debug, Default, Clone)]
struct SimFile {
    /// What a cut keeps for sure.
    durable: Arc<Vec<u8>>,
    /// What reads see (the page cache).
    current: Arc<Vec<u8>>,
    /// Writes since the last sync, in order.
    unsynced: Vec<Pending>,
}

#[derive(Debug, Clone)]
enum Pending {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

fn apply(bytes: &mut Vec<u8>, write: &Pending) {
    match write {
        Pending::Write { offset, data } => {
            let end = *offset as usize + data.len();
            if bytes.len() < end {
                bytes.resize(end, 0);
            }
            bytes[*offset as usize..end].copy_from_slice(data);
        }
        Pending::SetLen(len) => bytes.resize(*len as usize, 0),
    }
}

fn power_out() -> io::Error {
    io::Error::other("the power is out")
}

impl Disk {
    pub fn new() -> Disk {
        Disk::default()
    }

    fn lock(&self) -> MutexGuard<'_, DiskState> {
        // A panic elsewhere poisons nothing we rely on.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The disk of a store just created by [`open_store`] and closed (the
    /// files created whole), with no cut armed: built once per process and
    /// copied, so a run need not pay for redb's creation.
    pub fn fresh() -> Disk {
        static FRESH: OnceLock<DiskState> = OnceLock::new();
        let state = FRESH.get_or_init(|| {
            let disk = Disk::new();
            let store = open_store(&disk, &sim_options()).expect("a store on a healthy disk");
            drop(store);
            let mut state = disk.lock().clone();
            state.ops = 0;
            state
        });
        Disk {
            state: Arc::new(Mutex::new(state.clone())),
        }
    }

    /// Failures of writes, `set_len`s and syncs, as `switch` decides (the
    /// [`faulty`](crate::testing::faulty) rules: torn writes keep half).
    pub fn inject_faults(&self, switch: &FaultSwitch) {
        self.lock().faults = Some(switch.clone());
    }

    /// The process dies (`kill -9`): nothing more is written, but what was
    /// written stays in the page cache. [`revive`](Self::revive) starts
    /// the next process on the same files.
    pub fn kill_process(&self) {
        self.lock().dead = true;
    }

    /// A new process after [`kill_process`](Self::kill_process): the files
    /// as the page cache holds them.
    pub fn revive(&self) {
        let mut state = self.lock();
        state.dead = false;
        state.ops_left = None;
    }

    /// The power goes out after `ops` more writes, `set_len`s and syncs.
    pub fn cut_after(&self, ops: u64) {
        self.lock().ops_left = Some(ops);
    }

    /// Whether the power is out.
    pub fn is_dead(&self) -> bool {
        self.lock().dead
    }

    /// The power goes out now.
    pub fn kill(&self) {
        self.lock().dead = true;
    }

    /// Operations so far.
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// Brings the power back: each file keeps what was synced plus
    /// `keep(file, unsynced writes)` of the writes after it, the last of
    /// those torn at a sector boundary chosen by `tear(write length in
    /// sectors)`. Names not in the synced directory are gone.
    pub fn restore(&self, mut keep: impl FnMut(usize) -> usize, mut tear: impl FnMut(u64) -> u64) {
        let mut state = self.lock();
        let durable = state.durable_names.clone();
        state.files.retain(|name, _| durable.contains(name));
        for file in state.files.values_mut() {
            let kept = keep(file.unsynced.len()).min(file.unsynced.len());
            let mut bytes = std::mem::take(&mut file.durable);
            let bytes_mut = Arc::make_mut(&mut bytes);
            for (i, write) in file.unsynced.iter().take(kept).enumerate() {
                if i + 1 == kept
                    && let Pending::Write { offset, data } = write
                {
                    // Torn at an absolute sector boundary inside the write.
                    let first = offset.div_ceil(SECTOR) * SECTOR;
                    let end = offset + data.len() as u64;
                    let sectors = end.saturating_sub(first) / SECTOR;
                    let cut = (first + tear(sectors + 1) * SECTOR).min(end);
                    let torn = Pending::Write {
                        offset: *offset,
                        data: data[..(cut.max(*offset) - offset) as usize].to_vec(),
                    };
                    apply(bytes_mut, &torn);
                } else {
                    apply(bytes_mut, write);
                }
            }
            file.current = bytes.clone();
            file.durable = bytes;
            file.unsynced.clear();
        }
        state.dead = false;
        state.ops_left = None;
    }

    /// Counts one operation; `Err` once the power is out.
    fn spend(state: &mut DiskState) -> io::Result<()> {
        if state.dead {
            return Err(power_out());
        }
        if let Some(left) = state.ops_left.as_mut() {
            if *left == 0 {
                state.dead = true;
                return Err(power_out());
            }
            *left -= 1;
        }
        state.ops += 1;
        Ok(())
    }

    fn exists(&self, name: &'static str) -> bool {
        self.lock().files.contains_key(name)
    }

    fn create(&self, name: &'static str) -> io::Result<()> {
        let mut state = self.lock();
        Disk::spend(&mut state)?;
        state.files.entry(name).or_default();
        Ok(())
    }

    /// `link(from, to)` then `unlink(from)` then a directory sync, as
    /// [`crate::store::files::create_whole`] does.
    fn rename_and_sync_dir(&self, from: &'static str, to: &'static str) -> io::Result<()> {
        let mut state = self.lock();
        Disk::spend(&mut state)?;
        let file = state
            .files
            .remove(from)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        state.files.insert(to, file);
        Disk::spend(&mut state)?;
        state.durable_names = state.files.keys().copied().collect();
        Ok(())
    }

    fn with_file<T>(
        &self,
        name: &'static str,
        op: impl FnOnce(&mut SimFile) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut state = self.lock();
        let file = state
            .files
            .get_mut(name)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        op(file)
    }

    fn len(&self, name: &'static str) -> io::Result<u64> {
        self.with_file(name, |file| Ok(file.current.len() as u64))
    }

    fn read(&self, name: &'static str, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.with_file(name, |file| {
            let end = offset as usize + out.len();
            if end > file.current.len() {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
            }
            out.copy_from_slice(&file.current[offset as usize..end]);
            Ok(())
        })
    }

    /// Spends one operation of kind `kind` on `name`, then runs `op` on
    /// it; an injected fault fails it first, after `torn` (a failing
    /// write's half that reaches the file) when the switch tears writes.
    fn operate(
        &self,
        name: &'static str,
        kind: FaultKind,
        torn: impl FnOnce(&mut SimFile),
        op: impl FnOnce(&mut SimFile),
    ) -> io::Result<()> {
        let mut state = self.lock();
        Disk::spend(&mut state)?;
        let fault = match &state.faults {
            Some(switch) => match kind {
                FaultKind::Write => switch.check_write(),
                FaultKind::Sync => switch.check_sync(),
            }
            .err()
            .map(|error| (error, switch.tears_writes())),
            None => None,
        };
        let file = state
            .files
            .get_mut(name)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        if let Some((error, tears)) = fault {
            if tears {
                torn(file);
            }
            return Err(error);
        }
        op(file);
        if let Some(switch) = &state.faults {
            switch.count_success(kind == FaultKind::Sync);
        }
        Ok(())
    }

    fn change(&self, name: &'static str, write: Pending) -> io::Result<()> {
        let half = match &write {
            Pending::Write { offset, data } if data.len() > 1 => Some(Pending::Write {
                offset: *offset,
                data: data[..data.len() / 2].to_vec(),
            }),
            _ => None,
        };
        self.operate(
            name,
            FaultKind::Write,
            |file| {
                if let Some(half) = half {
                    apply(Arc::make_mut(&mut file.current), &half);
                    file.unsynced.push(half);
                }
            },
            |file| {
                apply(Arc::make_mut(&mut file.current), &write);
                file.unsynced.push(write);
            },
        )
    }

    fn sync(&self, name: &'static str) -> io::Result<()> {
        self.operate(
            name,
            FaultKind::Sync,
            |_| {},
            |file| {
                file.durable = file.current.clone();
                file.unsynced.clear();
            },
        )
    }
}

/// Which switch counter an operation spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FaultKind {
    /// A write or `set_len`.
    Write,
    Sync,
}

/// The log file on a [`Disk`].
#[derive(Debug)]
pub struct SimLog {
    disk: Disk,
}

impl LogIo for SimLog {
    fn len(&self) -> io::Result<u64> {
        self.disk.len(LOG)
    }

    fn read_at(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.disk.read(LOG, offset, out)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.disk.change(
            LOG,
            Pending::Write {
                offset,
                data: data.to_vec(),
            },
        )
    }

    fn sync_data(&self) -> io::Result<()> {
        self.disk.sync(LOG)
    }
}

/// A redb storage backend over one file of a [`Disk`].
#[derive(Debug)]
pub struct SimBackend {
    disk: Disk,
    name: &'static str,
}

impl StorageBackend for SimBackend {
    fn len(&self) -> Result<u64, io::Error> {
        self.disk.len(self.name)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.disk.read(self.name, offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.disk.change(self.name, Pending::SetLen(len))
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.disk.sync(self.name)
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.disk.change(
            self.name,
            Pending::Write {
                offset,
                data: data.to_vec(),
            },
        )
    }
}

/// A small redb cache: a run opens thousands of tiny databases.
const SIM_CACHE_BYTES: usize = 256 * 1024;

/// Opens the database file of a disk that [`open_store`] set up, as the
/// store's reopen does: for writing rows behind the store's back.
///
/// # Errors
/// As redb's open.
pub fn open_database(disk: &Disk) -> Result<Database, DatabaseError> {
    open_db(disk, DB)
}

fn open_db(disk: &Disk, name: &'static str) -> Result<Database, DatabaseError> {
    Builder::new()
        .set_cache_size(SIM_CACHE_BYTES)
        .create_with_backend(SimBackend {
            disk: disk.clone(),
            name,
        })
}

/// Opens the store on `disk` as [`Store::open`] does on files: each file is
/// created whole (built under a temporary name, synced, renamed, the
/// directory synced) when missing.
///
/// # Errors
/// A message saying what failed.
pub fn open_store(disk: &Disk, options: &StoreOptions) -> Result<Store, String> {
    if !disk.exists(DB) {
        disk.create(DB_NEW).map_err(|e| e.to_string())?;
        drop(open_db(disk, DB_NEW).map_err(|e| e.to_string())?);
        disk.rename_and_sync_dir(DB_NEW, DB)
            .map_err(|e| e.to_string())?;
    }
    if !disk.exists(LOG) {
        let log = SimLog { disk: disk.clone() };
        disk.create(LOG).map_err(|e| e.to_string())?;
        log.write_at(0, &vec![0u8; options.log_size as usize])
            .map_err(|e| e.to_string())?;
        log.sync_data().map_err(|e| e.to_string())?;
        disk.rename_and_sync_dir(LOG, LOG)
            .map_err(|e| e.to_string())?;
    }
    let db = open_db(disk, DB).map_err(|e| format!("the database does not open: {e}"))?;
    let reopen = disk.clone();
    let opener: Opener = Box::new(move || open_db(&reopen, DB));
    let log = Arc::new(SimLog { disk: disk.clone() });
    Store::with_backends(std::path::Path::new(DB), db, opener, log, options)
        .map_err(|e| e.to_string())
}

/// Where a run's choices come from: a seeded generator or fuzz input.
pub trait Choices {
    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64;
    /// Whether the run should end (fuzz input used up).
    fn exhausted(&self) -> bool {
        false
    }
}

/// xorshift64*: small and seedable.
#[derive(Debug, Clone)]
pub struct Seeded(u64);

impl Seeded {
    pub fn new(seed: u64) -> Seeded {
        Seeded(seed.max(1))
    }
}

impl Choices for Seeded {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// The model: tasks by name and the last event number.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct State {
    tasks: BTreeMap<String, Task>,
    events: u64,
}

/// What a run did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Report {
    pub cuts: u64,
    pub acknowledged: u64,
    pub unanswered: u64,
    pub recovered_unanswered: u64,
    pub checkpoints: u64,
}

/// Names a run uses: few, so changes overwrite each other.
const NAMES: u64 = 12;

/// Events the simulated history keeps (and half as many again before it
/// trims), so the database stays small however long the run.
const EVENTS_KEPT: u64 = 64;

/// Options of a simulated store: the smallest log (it wraps often) and
/// checkpoints after a handful of changes, inline so a run is repeatable.
pub fn sim_options() -> StoreOptions {
    StoreOptions {
        log_size: crate::store::MIN_LOG_SIZE,
        checkpoint_interval: Duration::from_millis(50),
        checkpoint_changes: 24,
        background: false,
        // A few checkpoints' worth: cuts land in runs written over runs,
        // and in compactions.
        compact_at: 32,
        ..StoreOptions::default()
    }
}

/// Runs `cuts` power cuts. Each round: open and recover, check against the
/// model, arm a cut some operations ahead, commit random batches (with
/// checkpoints when due) until the power goes, then restore a random
/// prefix of the unsynced writes.
///
/// # Errors
/// The first violation, described.
pub fn run(choices: &mut impl Choices, cuts: u64) -> Result<Report, String> {
    let options = sim_options();
    // A cut during the first start-up hits the files' creation: that run
    // starts from an empty disk; the others from a copy of a fresh one,
    // which is what a healthy creation leaves.
    let creation_cut = cuts > 0 && !choices.exhausted() && choices.below(4) == 0;
    let disk = match creation_cut {
        true => Disk::new(),
        false => Disk::fresh(),
    };
    let mut report = Report::default();
    // States the disk may hold: [0] acknowledged, the rest attempted since.
    let mut possible = vec![State::default()];
    let start = Instant::now();
    let mut clock = Duration::ZERO;
    for round in 0..=cuts {
        let start_up_cut = match round {
            0 => creation_cut,
            _ => round < cuts && !choices.exhausted() && choices.below(4) == 0,
        };
        if start_up_cut {
            // This cut may hit the start-up: creating the files (the first
            // round), redb's repair, the replay.
            disk.cut_after(choices.below(40));
        }
        let mut store = match open_store(&disk, &options) {
            Ok(store) => store,
            Err(e) if disk.is_dead() => {
                // The cut hit the start-up itself: bring the power back.
                let _ = e;
                restore(&disk, choices);
                report.cuts += 1;
                continue;
            }
            Err(e) => return Err(format!("round {round}: start-up refused after a cut: {e}")),
        };
        let loaded = match store.load() {
            Ok(loaded) => loaded,
            Err(_) if disk.is_dead() => {
                drop(store);
                restore(&disk, choices);
                report.cuts += 1;
                continue;
            }
            Err(e) => return Err(format!("round {round}: recovery failed after a cut: {e}")),
        };
        if !loaded.quarantined.is_empty() {
            return Err(format!(
                "round {round}: rows quarantined: {:?}",
                loaded.quarantined
            ));
        }
        if loaded.recounted > 0 || loaded.missing_texts > 0 {
            // The counts change in the rows' own transaction: a cut
            // cannot leave them wrong.
            return Err(format!(
                "round {round}: {} stored command lines were miscounted, {} missing",
                loaded.recounted, loaded.missing_texts
            ));
        }
        let seen = State {
            tasks: loaded
                .tasks
                .into_iter()
                .map(|task| (task.name.as_str().to_owned(), task))
                .collect(),
            events: loaded.events.last().map_or(0, |event| event.seq),
        };
        let Some(index) = possible.iter().position(|state| *state == seen) else {
            return Err(format!(
                "round {round}: recovered {seen:?}, but the last acknowledged state was {:?} and {} commits were attempted since",
                possible[0],
                possible.len() - 1
            ));
        };
        if index > 0 {
            report.recovered_unanswered += 1;
        }
        possible = vec![seen];
        if round == cuts || choices.exhausted() {
            // The disk is thrown away: no clean close to pay for.
            disk.kill();
            drop(store);
            break;
        }

        disk.cut_after(choices.below(120));
        let mut state = possible[0].clone();
        while !disk.is_dead() && !choices.exhausted() {
            clock += Duration::from_millis(choices.below(30));
            match choices.below(8) {
                0 => store.poll(start + clock),
                1 => {
                    let _ = store.checkpoint_now();
                }
                _ => {
                    let changes = random_changes(choices, &state);
                    let next = applied(&state, &changes);
                    let events = events_for(&state, &changes);
                    // The history is trimmed as the daemon trims it, so the
                    // database stays small however long the run.
                    let keep_from = next.events.saturating_sub(EVENTS_KEPT);
                    match store.commit_batch(
                        &changes,
                        &Arc::new(events),
                        keep_from,
                        EVENTS_KEPT / 2,
                    ) {
                        Ok(()) => {
                            report.acknowledged += 1;
                            possible = vec![next.clone()];
                            state = next;
                        }
                        Err(_) => {
                            report.unanswered += 1;
                            possible.push(next);
                            // Memory stays as acknowledged; the next commit
                            // is refused until a reload, so stop here.
                            disk.kill();
                        }
                    }
                    store.poll(start + clock);
                }
            }
        }
        report.checkpoints += store.counters().checkpoints;
        disk.kill();
        drop(store);
        restore(&disk, choices);
        report.cuts += 1;
    }
    Ok(report)
}

fn restore(disk: &Disk, choices: &mut impl Choices) {
    let mut pick = |n: u64| choices.below(n.max(1));
    let mut keeps = Vec::new();
    let mut tears = Vec::new();
    for _ in 0..4 {
        keeps.push(pick(4));
        tears.push(pick(1 << 20));
    }
    let mut k = keeps.into_iter();
    let mut t = tears.into_iter();
    disk.restore(
        |unsynced| match k.next().unwrap_or(0) {
            0 => 0,
            1 => unsynced,
            n => (unsynced as u64 * n / 4) as usize + 1,
        },
        |sectors| t.next().unwrap_or(0) % sectors.max(1),
    );
}

fn name(i: u64) -> TaskName {
    // ok: a fixed, valid name.
    TaskName::parse(&format!("task-{i}")).expect("a valid name")
}

/// The parent command lines of the simulated tasks' holders: two long
/// enough to be stored once in the texts table and counted across every
/// cut, one short enough to stay in its rows.
const PARENTS: [&str; 3] = [
    "bash ./agent-loop.sh --queue builds --retries 3",
    "python3 -m worker --queue nightly --concurrency 4",
    "sh ./x.sh",
];

/// A simulated task's holder by `choice` (taken modulo 4): one of
/// [`PARENTS`] as its parent command line, or none for a fourth of the
/// choices. Each call makes a copy of its own, as each connection has.
/// The power-cut simulation and the `store_crash` fuzz target share it.
pub(crate) fn simulated_holder(choice: u64) -> Option<Holder> {
    let parent = usize::try_from(choice % 4)
        .ok()
        .and_then(|k| PARENTS.get(k))?;
    Some(Holder {
        pid: Some(4242),
        uid: Some(1000),
        command: Some("curl".into()),
        parent_pid: Some(4200),
        parent_command: Some((*parent).into()),
    })
}

fn random_changes(choices: &mut impl Choices, state: &State) -> Vec<Change> {
    let count = 1 + choices.below(4);
    let mut changes = Vec::new();
    for _ in 0..count {
        let name = name(choices.below(NAMES));
        let exists = state.tasks.contains_key(name.as_str());
        if exists && choices.below(3) == 0 {
            changes.push(Change::Remove {
                name,
                cause: if choices.below(2) == 0 {
                    Removal::Expired
                } else {
                    Removal::Deleted
                },
            });
        } else {
            let started = 1_000_000_000 + choices.below(1 << 30);
            let holder = simulated_holder(choices.below(4));
            changes.push(Change::Put {
                task: Task {
                    holder,
                    ..Task::new(
                        name,
                        Timestamp::from_nanos(started),
                        Timestamp::from_nanos(started + choices.below(1 << 40)),
                    )
                },
                created: !exists,
            });
        }
    }
    changes
}

fn applied(state: &State, changes: &[Change]) -> State {
    let mut next = state.clone();
    for change in changes {
        match change {
            Change::Put { task, .. } => {
                next.tasks
                    .insert(task.name.as_str().to_owned(), task.clone());
            }
            Change::Remove { name, .. } => {
                next.tasks.remove(name.as_str());
            }
        }
        next.events += 1;
    }
    next
}

fn events_for(state: &State, changes: &[Change]) -> EventLines {
    let events: Vec<Event> = changes
        .iter()
        .enumerate()
        .map(|(i, change)| Event {
            seq: state.events + 1 + i as u64,
            at: Timestamp::from_nanos(1),
            kind: match change {
                Change::Put { created: true, .. } => EventKind::Created,
                Change::Put { .. } => EventKind::Refreshed,
                Change::Remove {
                    cause: Removal::Expired,
                    ..
                } => EventKind::Expired,
                Change::Remove { .. } => EventKind::Deleted,
            },
            task: Some(change.name().clone()),
            expires_at: match change {
                Change::Put { task, .. } => Some(task.expires_at),
                Change::Remove { .. } => None,
            },
            step_ns: None,
            reason: None,
            pid: None,
            ended: None,
            limit: None,
        })
        .collect();
    EventLines::new(&events)
}
