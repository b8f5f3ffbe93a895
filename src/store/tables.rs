//! The redb side of the store: the state as of the last checkpoint.
//!
//! Tables: `tasks` maps a task name to its [`record`](crate::record);
//! `quarantine` keeps rows that could not be trusted on load, never served
//! and never silently deleted; `events` is the retained event history;
//! `usage` keeps the events that ended a hold, tripped or re-armed a name,
//! in chunks keyed by the latest instant among them (when a hold ended or
//! a name was re-armed) and their first sequence number, for the usage
//! retention; `meta` says which log frames the tables already contain
//! (`log.lsn`, the last one, and `log.position`, where the frame after it
//! goes). A database written before the log existed has no `meta` and
//! covers nothing of it.
//!
//! After a failed write or sync redb refuses further writes until the
//! `Database` is dropped and reopened, so a failure drops it and the next
//! call reopens it through the [`Opener`].

use std::fmt;
use std::time::Duration;

use redb::{Database, DatabaseError, ReadableTable, ReadableTableMetadata, TableDefinition};
use tracing::{error, warn};

use super::pending::{LogMark, Pending};
use super::texts::{self, TEXTS};
use super::{Loaded, StoreError};
use crate::events::Event;
use crate::record::{self, RecordError};

pub(crate) const TASKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("tasks");
pub(crate) const QUARANTINE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("quarantine");
/// The retained event history, in chunks: the sequence number of a chunk's
/// first event to its events' JSON lines, each ending in a newline, in
/// order. A chunk runs up to the next one's first event. Rows written
/// before chunks existed hold one line each, which is a chunk of one.
pub(crate) const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");

/// Most bytes of event lines in one row of [`EVENTS`]. One row per event
/// made the history three quarters of a checkpoint's work (a redb insert is
/// about 4,600 instructions, callgrind); one per checkpoint would make a
/// row of up to 16k events. At 256 KiB, about 1,500 events share a row.
pub(crate) const EVENT_CHUNK_BYTES: usize = 256 << 10;
/// The usage history, in chunks as [`EVENTS`]: (the latest instant in ns
/// among a chunk's events, its first event's sequence number) to their JSON
/// lines. One row per event cost each ended hold a redb insert (about 6,000
/// instructions, callgrind); keyed by its latest instant, a chunk is pruned
/// once all of it is past the retention. Rows written before chunks
/// existed hold one line each, keyed by its own instant: a chunk of one.
pub(crate) const USAGE: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("usage");
/// Where the tables stand in the log.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_LSN: &str = "log.lsn";
const META_POSITION: &str = "log.position";

/// Opens (or reopens) the database. Production opens the file; tests pass
/// storage that fails on purpose or loses power.
pub type Opener = Box<dyn FnMut() -> Result<Database, DatabaseError> + Send>;

/// Most rows a load sizes its buffer for from the table's own count, so a
/// damaged count cannot ask for gigabytes; a larger table still loads, its
/// buffer growing as it goes.
const PRESIZE_ROWS_AT_MOST: usize = 1 << 20;

/// The redb database and how to reopen it.
pub struct Tables {
    db: Option<Database>,
    opener: Opener,
    usage_retention: Duration,
}

impl fmt::Debug for Tables {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tables")
            .field("open", &self.db.is_some())
            .finish()
    }
}

impl Tables {
    /// Wraps an open database whose usage history keeps holds for
    /// `usage_retention`.
    pub fn new(db: Database, opener: Opener, usage_retention: Duration) -> Tables {
        Tables {
            db: Some(db),
            opener,
            usage_retention,
        }
    }

    /// Reads every row and the log mark. Rows that fail to decode are
    /// logged, moved to the quarantine table in one commit, and left out.
    ///
    /// # Errors
    /// [`StoreError::Io`] if the database cannot be read or the quarantine
    /// cannot be committed.
    pub fn load(&mut self) -> Result<(Loaded, LogMark), StoreError> {
        let retention = self.usage_retention;
        self.guard(|db| {
            let txn = db.begin_write().map_err(io)?;
            let mut loaded = Loaded::default();
            let mut mark = LogMark::default();
            let mut changed = false;
            {
                let mut tasks = txn.open_table(TASKS).map_err(io)?;
                let mut bad: Vec<(Vec<u8>, Vec<u8>, RecordError)> = Vec::new();
                // Sized once: growing by doubling copied 100k rows 17 times.
                let rows = usize::try_from(tasks.len().map_err(io)?).unwrap_or(0);
                loaded.tasks.reserve_exact(rows.min(PRESIZE_ROWS_AT_MOST));
                let mut texts = record::Texts::default();
                let mut stored_texts = txn.open_table(TEXTS).map_err(io)?;
                texts::load(&stored_texts, &mut texts)?;
                for row in tasks.iter().map_err(io)? {
                    let (key, value) = row.map_err(io)?;
                    match record::decode(key.value(), value.value(), &mut texts) {
                        Ok(task) => {
                            texts.count_resolved();
                            loaded.tasks.push(task);
                        }
                        Err(reason) => {
                            // Quarantined, it keeps the lines it names.
                            for text in record::references_kept(value.value()).into_iter().flatten() {
                                texts.count_reference(text);
                            }
                            bad.push((key.value().to_vec(), value.value().to_vec(), reason));
                        }
                    }
                }
                let events = txn.open_table(EVENTS).map_err(io)?;
                for row in events.iter().map_err(io)? {
                    let (first, chunk) = row.map_err(io)?;
                    for event in events_in(chunk.value()) {
                        match event {
                            Some(event) => loaded.events.push(event),
                            None => warn!(chunk = first.value(), "unreadable event skipped"),
                        }
                    }
                }
                // A chunk stays until its latest event passes the horizon;
                // its older events are left out here, so that a name
                // trips for the retention and no longer.
                let horizon = usage_horizon(retention);
                let usage = txn.open_table(USAGE).map_err(io)?;
                for row in usage.iter().map_err(io)? {
                    let (key, chunk) = row.map_err(io)?;
                    for event in events_in(chunk.value()) {
                        match event {
                            Some(event) => {
                                if event.usage_instant().is_some_and(|at| at.as_nanos() >= horizon) {
                                    loaded.usage.push(event);
                                }
                            }
                            None => warn!(chunk = key.value().1, "unreadable usage event skipped"),
                        }
                    }
                }
                loaded.usage.sort_by_key(|event| event.seq);
                let meta = txn.open_table(META).map_err(io)?;
                if let Some(lsn) = meta.get(META_LSN).map_err(io)? {
                    mark.lsn = lsn.value();
                }
                if let Some(position) = meta.get(META_POSITION).map_err(io)? {
                    mark.position = position.value();
                }
                let mut quarantine = txn.open_table(QUARANTINE).map_err(io)?;
                // Rows quarantined before keep the lines they name too.
                for row in quarantine.iter().map_err(io)? {
                    let (_, value) = row.map_err(io)?;
                    for text in record::references_kept(value.value()).into_iter().flatten() {
                        texts.count_reference(text);
                    }
                }
                if !texts.missing().is_empty() {
                    warn!(
                        tasks = texts.missing().len(),
                        "holder command lines missing or damaged in the texts table; those tasks are served without them"
                    );
                }
                loaded.missing_texts = texts.missing().len();
                let recounted = texts::recount(&mut stored_texts, &texts)?;
                if recounted > 0 {
                    warn!(recounted, "stored command lines recounted");
                }
                changed |= recounted > 0;
                loaded.recounted = recounted;
                for (key, value, reason) in bad {
                    let shown = String::from_utf8_lossy(&key).into_owned();
                    error!(key = %shown, %reason, "damaged task record moved to the quarantine table; it will not be served");
                    let at = quarantine_key(&quarantine, &key)?;
                    quarantine.insert(at.as_slice(), value.as_slice()).map_err(io)?;
                    tasks.remove(key.as_slice()).map_err(io)?;
                    loaded.quarantined.push((shown, reason));
                }
            }
            if !changed && loaded.quarantined.is_empty() {
                // Nothing changed: no fsync needed.
                txn.abort().map_err(io)?;
            } else {
                txn.commit().map_err(io)?;
            }
            Ok((loaded, mark))
        })
    }

    /// Writes `pending` (rows, events, and the log mark it reaches) in one
    /// `Durability::Immediate` transaction. Its events numbered below
    /// `keep_events_from` are not written; stored ones below it are
    /// deleted, all at once, when the oldest is more than `trim_slack`
    /// below it.
    ///
    /// # Errors
    /// [`StoreError::Io`]: nothing of it may be assumed written. The
    /// database has been dropped and the next call reopens it.
    pub fn checkpoint(&mut self, pending: &Pending) -> Result<(), StoreError> {
        let retention = self.usage_retention;
        self.guard(|db| {
            let txn = db.begin_write().map_err(io)?;
            {
                let mut table = txn.open_table(EVENTS).map_err(io)?;
                let keep_from = pending.keep_events_from();
                // Events already past the retained history would be trimmed
                // by this very transaction or the next: under churn most of
                // a checkpoint's events are, and writing them is waste.
                let retained = pending.events().iter().filter(|(seq, _)| *seq >= keep_from);
                in_chunks(retained, |seqs, chunk| {
                    table.insert(seqs[0], chunk).map_err(io).map(drop)
                })?;
                // Whole chunks only: the last one starting at or before
                // `keep_from` may hold retained events, and stays; what it
                // holds below `keep_from` is dropped at the next load.
                let oldest = table.first().map_err(io)?.map(|(seq, _)| seq.value());
                if oldest.is_some_and(|seq| seq.saturating_add(pending.trim_slack()) < keep_from) {
                    let keep_chunk = table
                        .range(..=keep_from)
                        .map_err(io)?
                        .next_back()
                        .transpose()
                        .map_err(io)?
                        .map(|(seq, _)| seq.value());
                    if let Some(keep_chunk) = keep_chunk {
                        table.retain_in(..keep_chunk, |_, _| false).map_err(io)?;
                    }
                }
            }
            {
                let mut usage = txn.open_table(USAGE).map_err(io)?;
                let lines = pending
                    .events()
                    .usage()
                    .map(|(at, seq, line)| ((at, seq), line));
                in_chunks(lines, |keys, chunk| {
                    let latest = keys.iter().map(|(at, _)| at.as_nanos()).max().unwrap_or(0);
                    usage
                        .insert((latest, keys[0].1), chunk)
                        .map_err(io)
                        .map(drop)
                })?;
                let horizon = usage_horizon(retention);
                let oldest = usage.first().map_err(io)?.map(|(key, _)| key.value().0);
                if oldest.is_some_and(|at| at < horizon) {
                    usage.retain_in(..(horizon, 0), |_, _| false).map_err(io)?;
                }
            }
            {
                let mut tasks = txn.open_table(TASKS).map_err(io)?;
                let mut stored_texts = txn.open_table(TEXTS).map_err(io)?;
                let mut plan = texts::Plan::default();
                let mut value = Vec::new();
                for (name, row) in pending.rows() {
                    let name = name.as_bytes();
                    let replaced = match row {
                        Some(task) => {
                            plan.encode_row(&stored_texts, task, &mut value)?;
                            tasks.insert(name, value.as_slice()).map_err(io)?
                        }
                        None => tasks.remove(name).map_err(io)?,
                    };
                    if let Some(old) = replaced {
                        plan.release_row(&stored_texts, name, old.value())?;
                    }
                }
                plan.apply(&mut stored_texts)?;
            }
            {
                let mut meta = txn.open_table(META).map_err(io)?;
                let mark = pending.mark();
                meta.insert(META_LSN, mark.lsn).map_err(io)?;
                meta.insert(META_POSITION, mark.position).map_err(io)?;
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
            let db = (self.opener)()
                .map_err(|e| StoreError::Io(format!("reopening the database failed: {e}")))?;
            warn!("database reopened after a failed write");
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

/// Where a quarantined row goes: under its own key, or, when a row of that
/// name is already quarantined, under `KEY~2`, `KEY~3`, … (no task name
/// has a `~`), so that no quarantined row is ever replaced.
fn quarantine_key(
    quarantine: &impl ReadableTable<&'static [u8], &'static [u8]>,
    key: &[u8],
) -> Result<Vec<u8>, StoreError> {
    let mut at = key.to_vec();
    let mut n = 1u64;
    while quarantine.get(at.as_slice()).map_err(io)?.is_some() {
        n += 1;
        at = [key, b"~", n.to_string().as_bytes()].concat();
    }
    Ok(at)
}

/// The instant, in ns, before which the usage history keeps nothing. The
/// worker's own reading of the clock: pruning a day late or early after a
/// clock step loses nothing a report needs.
fn usage_horizon(retention: Duration) -> u64 {
    let retention = u64::try_from(retention.as_nanos()).unwrap_or(u64::MAX);
    crate::time::wall_now().as_nanos().saturating_sub(retention)
}

/// The events of a chunk's lines, in order; `None` for a line this build
/// cannot read.
fn events_in(chunk: &[u8]) -> impl Iterator<Item = Option<Event>> + '_ {
    chunk
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .map(Event::from_json)
}

/// Packs `lines` (each with its key) into chunks of up to
/// [`EVENT_CHUNK_BYTES`] (a longer line makes a chunk of its own), each
/// line ending in a newline, and hands `write` each chunk with the keys of
/// its lines, in order.
fn in_chunks<'a, K>(
    lines: impl Iterator<Item = (K, &'a [u8])>,
    mut write: impl FnMut(&[K], &[u8]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut chunk: Vec<u8> = Vec::new();
    let mut keys = Vec::new();
    for (key, line) in lines {
        if !keys.is_empty() && chunk.len() + line.len() > EVENT_CHUNK_BYTES {
            write(&keys, &chunk)?;
            chunk.clear();
            keys.clear();
        }
        keys.push(key);
        chunk.extend_from_slice(line);
        if !line.ends_with(b"\n") {
            chunk.push(b'\n');
        }
    }
    if keys.is_empty() {
        return Ok(());
    }
    write(&keys, &chunk)
}

pub(super) fn io(error: impl fmt::Display) -> StoreError {
    StoreError::Io(error.to_string())
}
