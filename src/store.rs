//! The durable store: the only module that knows redb.
//!
//! One table, `tasks`, maps a task name to its [`record`](crate::record).
//! Rows that cannot be trusted on load are moved to `quarantine`, never served
//! and never silently deleted. Every batch is one write transaction committed
//! with `Durability::Immediate` (one `fdatasync`) before any response that
//! depends on it is written.
//!
//! After a failed write or sync redb refuses further writes until the
//! `Database` is dropped and reopened, so a failed commit drops it; the next
//! call reopens it and the caller reloads its state from what is on disk.

use std::fmt;
use std::path::{Path, PathBuf};

use redb::{Database, DatabaseError, ReadableTable, TableDefinition};
use tracing::{error, warn};

use crate::events::{Event, EventLines};
use crate::record::{self, RecordError};
use crate::tasks::{Change, Task};

const TASKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("tasks");
const QUARANTINE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("quarantine");
/// The retained event history: sequence number to the event's JSON.
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");

/// Opens (or reopens) the database. A file path in production; tests pass a
/// backend that fails on purpose.
pub type Opener = Box<dyn FnMut() -> Result<Database, DatabaseError>>;

/// What the store holds.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Every trusted row, expired or not.
    pub tasks: Vec<Task>,
    /// Rows moved to quarantine on this load: key and reason.
    pub quarantined: Vec<(String, RecordError)>,
    /// The retained event history, in order. Unreadable events are skipped.
    pub events: Vec<Event>,
}

/// Errors at the store boundary.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process (another daemon) holds the database.
    Locked(PathBuf),
    /// The file exists but is not a redb database, or is damaged beyond
    /// redb's repair. It is left untouched.
    Unreadable { path: PathBuf, reason: String },
    /// Any other failure to open.
    Open(String),
    /// A read or write transaction failed; the database has been dropped and
    /// will be reopened by the next call.
    Io(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Locked(path) => write!(
                f,
                "database {} is in use by another process (is another sprite-tasksd running?)",
                path.display()
            ),
            StoreError::Unreadable { path, reason } => write!(
                f,
                "{} is not a sprite-tasks database or is damaged ({reason}); it was left untouched: move it away or pass another --db",
                path.display()
            ),
            StoreError::Open(reason) => write!(f, "cannot open the database: {reason}"),
            StoreError::Io(reason) => write!(f, "database write failed: {reason}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// The redb database and how to reopen it.
pub struct Store {
    db: Option<Database>,
    opener: Opener,
    path: PathBuf,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("open", &self.db.is_some())
            .finish()
    }
}

impl Store {
    /// Opens or creates the database file at `path`, taking its lock.
    ///
    /// # Errors
    /// [`StoreError::Locked`] if another process holds it,
    /// [`StoreError::Unreadable`] if it is not a redb file.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let file = path.to_path_buf();
        Store::with_opener(path, Box::new(move || Database::create(&file)))
    }

    /// Opens through `opener`; `path` is only used in messages.
    ///
    /// # Errors
    /// As [`Store::open`].
    pub fn with_opener(path: &Path, mut opener: Opener) -> Result<Store, StoreError> {
        let db = opener().map_err(|e| open_error(path, e))?;
        Ok(Store {
            db: Some(db),
            opener,
            path: path.to_path_buf(),
        })
    }

    /// The database's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads every row. Rows that fail to decode are logged, moved to the
    /// quarantine table in one commit, and left out.
    ///
    /// # Errors
    /// [`StoreError::Io`] if the database cannot be read or the quarantine
    /// cannot be committed.
    pub fn load(&mut self) -> Result<Loaded, StoreError> {
        self.guard(|db| {
            let txn = db.begin_write().map_err(io)?;
            let mut loaded = Loaded::default();
            {
                let mut tasks = txn.open_table(TASKS).map_err(io)?;
                let mut bad: Vec<(Vec<u8>, Vec<u8>, RecordError)> = Vec::new();
                for row in tasks.iter().map_err(io)? {
                    let (key, value) = row.map_err(io)?;
                    match record::decode(key.value(), value.value()) {
                        Ok(task) => loaded.tasks.push(task),
                        Err(reason) => bad.push((key.value().to_vec(), value.value().to_vec(), reason)),
                    }
                }
                let events = txn.open_table(EVENTS).map_err(io)?;
                for row in events.iter().map_err(io)? {
                    let (seq, value) = row.map_err(io)?;
                    match Event::from_json(value.value()) {
                        Some(event) => loaded.events.push(event),
                        None => warn!(seq = seq.value(), "unreadable event skipped"),
                    }
                }
                let mut quarantine = txn.open_table(QUARANTINE).map_err(io)?;
                for (key, value, reason) in bad {
                    let shown = String::from_utf8_lossy(&key).into_owned();
                    error!(key = %shown, %reason, "damaged task record moved to the quarantine table; it will not be served");
                    quarantine.insert(key.as_slice(), value.as_slice()).map_err(io)?;
                    tasks.remove(key.as_slice()).map_err(io)?;
                    loaded.quarantined.push((shown, reason));
                }
            }
            if loaded.quarantined.is_empty() {
                // Nothing changed (the tables exist already or are created
                // by the first commit): no fsync needed.
                txn.abort().map_err(io)?;
            } else {
                txn.commit().map_err(io)?;
            }
            Ok(loaded)
        })
    }

    /// Makes `changes` durable in one write transaction.
    ///
    /// # Errors
    /// [`StoreError::Io`]: nothing of the batch may be assumed written. The
    /// database has been dropped; call [`Store::load`] to reopen it and learn
    /// what is on disk.
    pub fn commit(&mut self, changes: &[Change]) -> Result<(), StoreError> {
        self.commit_batch(changes, &EventLines::default(), 0, 0)
    }

    /// Makes `changes` and their `events` durable in one write transaction.
    /// Events numbered below `keep_events_from` are deleted, all at once,
    /// when the oldest stored one is more than `trim_slack` below it; until
    /// then they stay, so a commit usually writes one leaf of the history.
    ///
    /// # Errors
    /// As [`Store::commit`].
    pub fn commit_batch(
        &mut self,
        changes: &[Change],
        events: &EventLines,
        keep_events_from: u64,
        trim_slack: u64,
    ) -> Result<(), StoreError> {
        self.guard(|db| {
            let txn = db.begin_write().map_err(io)?;
            if !events.is_empty() {
                let mut table = txn.open_table(EVENTS).map_err(io)?;
                for (seq, line) in events.iter() {
                    table.insert(seq, line).map_err(io)?;
                }
                let oldest = table.first().map_err(io)?.map(|(seq, _)| seq.value());
                if oldest.is_some_and(|seq| seq.saturating_add(trim_slack) < keep_events_from) {
                    table
                        .retain_in(..keep_events_from, |_, _| false)
                        .map_err(io)?;
                }
            }
            {
                let mut tasks = txn.open_table(TASKS).map_err(io)?;
                for change in changes {
                    match change {
                        Change::Put { task, .. } => {
                            tasks
                                .insert(
                                    task.name.as_str().as_bytes(),
                                    record::encode(task).as_slice(),
                                )
                                .map_err(io)?;
                        }
                        Change::Remove { name, .. } => {
                            tasks.remove(name.as_str().as_bytes()).map_err(io)?;
                        }
                    }
                }
            }
            txn.commit().map_err(io)
        })
    }

    /// Runs `work` on an open database, reopening it first if an earlier
    /// failure dropped it, and dropping it if `work` fails.
    fn guard<T>(
        &mut self,
        work: impl FnOnce(&Database) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if self.db.is_none() {
            let db =
                (self.opener)().map_err(|e| StoreError::Io(format!("reopening failed: {e}")))?;
            warn!(path = %self.path.display(), "database reopened after a failed write");
            self.db = Some(db);
        }
        let Some(db) = self.db.as_ref() else {
            return Err(StoreError::Io("database unavailable".into()));
        };
        let result = work(db);
        if result.is_err() {
            // redb refuses writes after an I/O error until reopened.
            self.db = None;
        }
        result
    }
}

fn io(error: impl fmt::Display) -> StoreError {
    StoreError::Io(error.to_string())
}

fn open_error(path: &Path, error: DatabaseError) -> StoreError {
    match error {
        DatabaseError::DatabaseAlreadyOpen => StoreError::Locked(path.to_path_buf()),
        DatabaseError::Storage(storage) => StoreError::Unreadable {
            path: path.to_path_buf(),
            reason: storage.to_string(),
        },
        other => StoreError::Open(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::TaskName;
    use crate::time::Timestamp;

    fn task(name: &str, expires: u64) -> Task {
        Task {
            name: TaskName::parse(name).unwrap(),
            started_at: Timestamp::from_nanos(1),
            expires_at: Timestamp::from_nanos(expires),
        }
    }

    #[test]
    fn commits_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.redb");
        {
            let mut store = Store::open(&path).unwrap();
            assert!(store.load().unwrap().tasks.is_empty());
            store
                .commit(&[
                    Change::Put {
                        task: task("a", 10),
                        created: true,
                    },
                    Change::Put {
                        task: task("b", 20),
                        created: true,
                    },
                ])
                .unwrap();
            store
                .commit(&[Change::Remove {
                    name: TaskName::parse("a").unwrap(),
                    expired: false,
                }])
                .unwrap();
        }
        let mut store = Store::open(&path).unwrap();
        assert_eq!(store.load().unwrap().tasks, vec![task("b", 20)]);
    }

    #[test]
    fn a_second_open_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.redb");
        let _first = Store::open(&path).unwrap();
        assert!(matches!(Store::open(&path), Err(StoreError::Locked(_))));
    }

    #[test]
    fn a_foreign_file_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.redb");
        let content = b"these are somebody's notes, not a database\n".repeat(100);
        std::fs::write(&path, &content).unwrap();
        let error = Store::open(&path).unwrap_err();
        assert!(matches!(error, StoreError::Unreadable { .. }), "{error}");
        assert_eq!(std::fs::read(&path).unwrap(), content);
    }

    #[test]
    fn damaged_rows_are_quarantined_not_served() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.redb");
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut tasks = txn.open_table(TASKS).unwrap();
                tasks
                    .insert(
                        b"good".as_slice(),
                        record::encode(&task("good", 5)).as_slice(),
                    )
                    .unwrap();
                let mut flipped = record::encode(&task("bad", 5));
                flipped[3] ^= 0x40;
                tasks.insert(b"bad".as_slice(), flipped.as_slice()).unwrap();
                tasks
                    .insert(b"short".as_slice(), b"\x01\x02".as_slice())
                    .unwrap();
            }
            txn.commit().unwrap();
        }
        let mut store = Store::open(&path).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.tasks, vec![task("good", 5)]);
        let keys: Vec<_> = loaded.quarantined.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["bad", "short"]);
        // Moved, not deleted; and not reported again.
        drop(store);
        let db = Database::create(&path).unwrap();
        let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
        let quarantine = txn.open_table(QUARANTINE).unwrap();
        assert_eq!(redb::ReadableTableMetadata::len(&quarantine).unwrap(), 2);
        drop(quarantine);
        drop(txn);
        drop(db);
        let mut store = Store::open(&path).unwrap();
        assert!(store.load().unwrap().quarantined.is_empty());
    }
}
