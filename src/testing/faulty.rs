//! Storage that fails on purpose, for the crash and fault-injection tests
//! and the fuzz targets.
//!
//! [`FaultyBackend`] wraps redb's own `FileBackend` over a real file and
//! [`FaultyLog`] wraps the log file; both consult a shared [`FaultSwitch`]
//! before every write, `set_len` and sync. Tests hold a clone of the switch
//! and arm it ("fail after N more writes or syncs, with `ENOSPC`"), then
//! heal it; [`opener`] turns a path and a switch into a
//! [`store::Opener`](crate::store::Opener), so the store's drop-and-reopen
//! after a failed checkpoint goes through the same switch, and [`store`]
//! builds a whole [`Store`] over both. Reads and the file-lock methods are
//! delegated untouched, so the lock that keeps a second daemon out still
//! works.

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, AtomicU64, Ordering};

use redb::backends::FileBackend;
use redb::{BackendError, Builder, Database, DatabaseError, StorageBackend};

use crate::store::{self, LogIo, Opener, Store, StoreError, StoreOptions};

/// Which operations a fault counts and fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOn {
    /// Writes, `set_len` and syncs alike.
    Any,
    /// Writes and `set_len` only (a disk that fills up).
    Writes,
    /// `sync_data` only (a disk that cannot flush).
    Syncs,
}

impl FaultOn {
    fn code(self) -> u8 {
        match self {
            FaultOn::Any => 0,
            FaultOn::Writes => 1,
            FaultOn::Syncs => 2,
        }
    }

    fn matches(code: u8, op: Op) -> bool {
        match code {
            1 => op == Op::Write,
            2 => op == Op::Sync,
            _ => true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Write,
    Sync,
}

/// The shared state behind a [`FaultSwitch`].
///
/// Invariant: while `armed`, `countdown` is how many more matching
/// operations succeed before the first failure.
#[derive(Debug, Default)]
struct SwitchState {
    armed: AtomicBool,
    /// Stay failing after the first failure (a full disk) rather than fail
    /// once (a transient error).
    sticky: AtomicBool,
    /// Write half the bytes of a failing write before failing it.
    torn: AtomicBool,
    on: AtomicU8,
    countdown: AtomicU64,
    errno: AtomicI32,
    failing: AtomicBool,
    writes: AtomicU64,
    syncs: AtomicU64,
    injected: AtomicU64,
}

/// A cloneable handle that decides when the backends built with it fail.
///
/// All clones share one state; a new switch is healthy.
#[derive(Debug, Clone, Default)]
pub struct FaultSwitch {
    state: Arc<SwitchState>,
}

impl FaultSwitch {
    /// A healthy switch.
    pub fn new() -> Self {
        FaultSwitch::default()
    }

    /// After `ops` more successful operations of kind `on`, every such
    /// operation fails with `errno` (e.g. `libc::ENOSPC`) until [`heal`].
    ///
    /// [`heal`]: FaultSwitch::heal
    pub fn fail_after(&self, ops: u64, on: FaultOn, errno: i32) {
        self.arm(ops, on, errno, true);
    }

    /// As [`fail_after`](Self::fail_after), but only one operation fails;
    /// the ones after it succeed again (a transient `EIO`).
    pub fn fail_once_after(&self, ops: u64, on: FaultOn, errno: i32) {
        self.arm(ops, on, errno, false);
    }

    /// Whether a failing write first writes half its bytes (a torn write),
    /// as a disk that fills up part way through a write does.
    pub fn set_torn_writes(&self, torn: bool) {
        self.state.torn.store(torn, Ordering::SeqCst);
    }

    /// Stops failing; operations succeed again.
    pub fn heal(&self) {
        let state = &self.state;
        state.armed.store(false, Ordering::SeqCst);
        state.failing.store(false, Ordering::SeqCst);
    }

    /// Whether operations are failing now (armed and the countdown spent).
    pub fn is_failing(&self) -> bool {
        self.state.failing.load(Ordering::SeqCst)
    }

    /// Writes and `set_len` calls that succeeded, ever.
    pub fn writes(&self) -> u64 {
        self.state.writes.load(Ordering::SeqCst)
    }

    /// Syncs that succeeded, ever.
    pub fn syncs(&self) -> u64 {
        self.state.syncs.load(Ordering::SeqCst)
    }

    /// Operations failed on purpose, ever.
    pub fn injected(&self) -> u64 {
        self.state.injected.load(Ordering::SeqCst)
    }

    fn arm(&self, ops: u64, on: FaultOn, errno: i32, sticky: bool) {
        let state = &self.state;
        state.armed.store(false, Ordering::SeqCst);
        state.failing.store(false, Ordering::SeqCst);
        state.on.store(on.code(), Ordering::SeqCst);
        state.errno.store(errno, Ordering::SeqCst);
        state.sticky.store(sticky, Ordering::SeqCst);
        state.countdown.store(ops, Ordering::SeqCst);
        state.armed.store(true, Ordering::SeqCst);
    }

    /// Decides the fate of one operation: `Err` with the errno to fail it.
    fn check(&self, op: Op) -> Result<(), io::Error> {
        let state = &self.state;
        let armed = state.armed.load(Ordering::SeqCst);
        if armed && FaultOn::matches(state.on.load(Ordering::SeqCst), op) {
            let fail = state.failing.load(Ordering::SeqCst)
                || state
                    .countdown
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                        left.checked_sub(1)
                    })
                    .is_err();
            if fail {
                if state.sticky.load(Ordering::SeqCst) {
                    state.failing.store(true, Ordering::SeqCst);
                } else {
                    state.armed.store(false, Ordering::SeqCst);
                    state.failing.store(false, Ordering::SeqCst);
                }
                state.injected.fetch_add(1, Ordering::SeqCst);
                return Err(io::Error::from_raw_os_error(
                    state.errno.load(Ordering::SeqCst),
                ));
            }
        }
        Ok(())
    }

    /// For other simulated storage ([`powercut::Disk`]): `Err` with the
    /// errno when the next write (or `set_len`) must fail.
    ///
    /// [`powercut::Disk`]: crate::testing::powercut::Disk
    pub(crate) fn check_write(&self) -> Result<(), io::Error> {
        self.check(Op::Write)
    }

    /// As [`check_write`](Self::check_write), for a sync.
    pub(crate) fn check_sync(&self) -> Result<(), io::Error> {
        self.check(Op::Sync)
    }

    /// Whether a failing write first writes half its bytes.
    pub(crate) fn tears_writes(&self) -> bool {
        self.state.torn.load(Ordering::SeqCst)
    }

    /// Counts one operation that succeeded.
    pub(crate) fn count_success(&self, sync: bool) {
        self.count(if sync { Op::Sync } else { Op::Write });
    }

    fn count(&self, op: Op) {
        let counter = match op {
            Op::Write => &self.state.writes,
            Op::Sync => &self.state.syncs,
        };
        counter.fetch_add(1, Ordering::SeqCst);
    }
}

/// redb's `FileBackend`, failing when its [`FaultSwitch`] says so.
#[derive(Debug)]
pub struct FaultyBackend {
    inner: FileBackend,
    switch: FaultSwitch,
}

impl FaultyBackend {
    /// Wraps an open read-write file.
    ///
    /// # Errors
    /// As redb's `FileBackend::new`.
    pub fn new(file: File, switch: FaultSwitch) -> Result<Self, DatabaseError> {
        Ok(FaultyBackend {
            inner: FileBackend::new(file)?,
            switch,
        })
    }
}

impl StorageBackend for FaultyBackend {
    fn len(&self) -> Result<u64, io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.switch.check(Op::Write)?;
        self.inner.set_len(len)?;
        self.switch.count(Op::Write);
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.switch.check(Op::Sync)?;
        self.inner.sync_data()?;
        self.switch.count(Op::Sync);
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        if let Err(error) = self.switch.check(Op::Write) {
            if self.switch.state.torn.load(Ordering::SeqCst) && data.len() > 1 {
                // Best effort: the point is the error, not the torn bytes.
                let _ = self.inner.write(offset, &data[..data.len() / 2]);
            }
            return Err(error);
        }
        self.inner.write(offset, data)?;
        self.switch.count(Op::Write);
        Ok(())
    }

    fn close(&self) -> Result<(), io::Error> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

/// Opens (or creates) the database at `path` through a [`FaultyBackend`]
/// governed by `switch`. Opening an existing file keeps its contents.
///
/// # Errors
/// As `Database::create`; an armed switch can fail the open itself.
pub fn open(path: &Path, switch: &FaultSwitch) -> Result<Database, DatabaseError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    Builder::new()
        .set_cache_size(FAULTY_CACHE_BYTES)
        .create_with_backend(FaultyBackend::new(file, switch.clone())?)
}

/// redb's default cache is 1 GiB, allocated as it fills; fault runs open
/// thousands of databases of a few pages each. A small cache keeps each
/// open cheap and changes nothing that is written.
const FAULTY_CACHE_BYTES: usize = 256 * 1024;

/// A [`store::Opener`](crate::store::Opener) for `path` whose every
/// (re)open goes through `switch`: pass it to
/// [`Store::with_opener`](crate::store::Store::with_opener).
pub fn opener(path: &Path, switch: FaultSwitch) -> Opener {
    let path = path.to_path_buf();
    Box::new(move || open(&path, &switch))
}

/// The log file, failing when its [`FaultSwitch`] says so.
#[derive(Debug)]
pub struct FaultyLog {
    file: File,
    switch: FaultSwitch,
}

impl LogIo for FaultyLog {
    fn len(&self) -> Result<u64, io::Error> {
        LogIo::len(&self.file)
    }

    fn read_at(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        LogIo::read_at(&self.file, offset, out)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        if let Err(error) = self.switch.check(Op::Write) {
            if self.switch.state.torn.load(Ordering::SeqCst) && data.len() > 1 {
                let _ = LogIo::write_at(&self.file, offset, &data[..data.len() / 2]);
            }
            return Err(error);
        }
        LogIo::write_at(&self.file, offset, data)?;
        self.switch.count(Op::Write);
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.switch.check(Op::Sync)?;
        LogIo::sync_data(&self.file)?;
        self.switch.count(Op::Sync);
        Ok(())
    }
}

/// A [`Store`] at `path` whose database and log both obey `switch`. The
/// files are created (healthy) when missing.
///
/// # Errors
/// As [`Store::open`].
pub fn store(
    path: &Path,
    switch: &FaultSwitch,
    options: &StoreOptions,
) -> Result<Store, StoreError> {
    store_with(path, switch, switch, options)
}

/// A [`Store`] at `path` whose database obeys `db_switch` and whose log
/// obeys `log_switch`: a disk that fills up fails the checkpoints, not the
/// preallocated log.
///
/// # Errors
/// As [`Store::open`].
pub fn store_with(
    path: &Path,
    db_switch: &FaultSwitch,
    log_switch: &FaultSwitch,
    options: &StoreOptions,
) -> Result<Store, StoreError> {
    let switch = db_switch;
    // Create both files the ordinary way, then reopen them through the switch.
    drop(Store::open(
        path,
        &StoreOptions {
            background: false,
            ..options.clone()
        },
    )?);
    let db = open(path, switch).map_err(|e| StoreError::Open(e.to_string()))?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(store::files::log_path(path))
        .map_err(|e| StoreError::Open(e.to_string()))?;
    let log = FaultyLog {
        file,
        switch: log_switch.clone(),
    };
    Store::with_backends(
        path,
        db,
        opener(path, switch.clone()),
        Arc::new(log),
        options,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{ReadableDatabase, TableDefinition};

    const TABLE: TableDefinition<u64, u64> = TableDefinition::new("t");

    fn put(db: &Database, key: u64, value: u64) -> Result<(), redb::Error> {
        let txn = db.begin_write()?;
        {
            let mut table = txn.open_table(TABLE)?;
            table.insert(key, value)?;
        }
        txn.commit()?;
        Ok(())
    }

    fn get(db: &Database, key: u64) -> Option<u64> {
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(TABLE).unwrap();
        table.get(key).unwrap().map(|v| v.value())
    }

    fn os_error(error: &redb::Error) -> Option<i32> {
        match error {
            redb::Error::Io(io) => io.raw_os_error(),
            _ => None,
        }
    }

    #[test]
    fn a_healthy_switch_behaves_like_a_file_and_reopens_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.redb");
        let switch = FaultSwitch::new();
        let mut open = opener(&path, switch.clone());
        let db = open().unwrap();
        put(&db, 1, 10).unwrap();
        assert!(switch.writes() > 0 && switch.syncs() > 0);
        drop(db);
        let db = open().unwrap();
        assert_eq!(get(&db, 1), Some(10));
        assert_eq!(switch.injected(), 0);
    }

    #[test]
    fn the_file_lock_is_delegated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.redb");
        let mut open = opener(&path, FaultSwitch::new());
        let _first = open().unwrap();
        assert!(matches!(open(), Err(DatabaseError::DatabaseAlreadyOpen)));
        assert!(matches!(
            Database::create(&path),
            Err(DatabaseError::DatabaseAlreadyOpen)
        ));
    }

    #[test]
    fn a_full_disk_fails_the_commit_until_reopened_and_loses_nothing_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.redb");
        let switch = FaultSwitch::new();
        let mut open = opener(&path, switch.clone());
        let db = open().unwrap();
        put(&db, 1, 10).unwrap();

        switch.fail_after(0, FaultOn::Any, libc::ENOSPC);
        let error = put(&db, 2, 20).unwrap_err();
        assert_eq!(os_error(&error), Some(libc::ENOSPC), "{error}");
        assert!(switch.is_failing());
        switch.heal();
        // redb latches the failure: the same handle refuses to write again.
        assert!(put(&db, 3, 30).is_err());
        drop(db);

        let db = open().unwrap();
        assert_eq!(get(&db, 1), Some(10));
        assert_eq!(get(&db, 2), None);
        put(&db, 4, 40).unwrap();
        assert_eq!(get(&db, 4), Some(40));
    }

    #[test]
    fn a_failed_sync_is_not_a_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.redb");
        let switch = FaultSwitch::new();
        let mut open = opener(&path, switch.clone());
        let db = open().unwrap();
        put(&db, 1, 10).unwrap();
        switch.fail_once_after(0, FaultOn::Syncs, libc::EIO);
        let error = put(&db, 1, 11).unwrap_err();
        assert_eq!(os_error(&error), Some(libc::EIO), "{error}");
        assert!(!switch.is_failing(), "a one-shot fault heals itself");
        drop(db);
        let db = open().unwrap();
        // The write itself reached the file before the sync failed, so
        // either value is a legal outcome of an unacknowledged commit; the
        // database must simply be usable and consistent.
        assert!(matches!(get(&db, 1), Some(10 | 11)));
        put(&db, 2, 20).unwrap();
    }

    #[test]
    fn every_fault_point_of_a_commit_leaves_the_previous_state_or_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.redb");
        let switch = FaultSwitch::new();
        let mut open = opener(&path, switch.clone());
        {
            let db = open().unwrap();
            put(&db, 1, 0).unwrap();
        }
        // Count the operations of one commit, then fail at each of them.
        let before = switch.writes() + switch.syncs();
        {
            let db = open().unwrap();
            put(&db, 1, 1).unwrap();
        }
        let per_round = switch.writes() + switch.syncs() - before;
        assert!(per_round > 0);
        let mut acknowledged = 1;
        for (round, point) in (0..per_round + 2).enumerate() {
            let value = round as u64 + 2;
            switch.set_torn_writes(round % 2 == 0);
            switch.fail_after(point, FaultOn::Any, libc::EIO);
            let outcome = open()
                .map_err(|e| e.to_string())
                .and_then(|db| put(&db, 1, value).map_err(|e| e.to_string()));
            switch.heal();
            let db = open().unwrap();
            let seen = get(&db, 1).unwrap();
            if outcome.is_ok() {
                acknowledged = value;
                assert_eq!(seen, value, "an acknowledged commit was lost at {point}");
            } else {
                assert!(
                    seen == acknowledged || seen == value,
                    "fault at {point}: saw {seen}, expected {acknowledged} or {value}"
                );
                acknowledged = seen;
            }
        }
    }
}
