//! The redb side of the store: the state as of the last checkpoint.
//!
//! Tables: `tasks.base` and `tasks.runs` hold the task rows, each a name
//! and its [`record`], in [`chunk`]s: the base as of the
//! last compaction, and a run per checkpoint since, merged by name (the
//! newest row wins) on every load and compaction; `tasks` is the per-name
//! table of the versions before chunks, which the first load moves into
//! them; `texts` keeps the command lines that quarantined rows name;
//! `quarantine` keeps rows that could not be trusted on load, never served
//! and never silently deleted; `events` is the retained event history but
//! for the events the usage history keeps; `usage` keeps those, the events
//! that ended a hold, tripped or re-armed a name, in chunks keyed by the
//! latest instant among them (when a hold ended or a name was re-armed)
//! and their first sequence number, for the usage retention and for as
//! long as the event history holds them: a delete's line, most of what its
//! checkpoint writes, is written once; `meta` says which log frames the
//! tables already contain (`log.lsn`, the last one, and `log.position`,
//! where the frame after it goes), how many rows the base and the runs
//! hold (when to compact), the usage history's floor and the event
//! history's first event. A database written before the log existed has no
//! `meta` and covers nothing of it.
//!
//! After a failed write or sync redb refuses further writes until the
//! `Database` is dropped and reopened, so a failure drops it and the next
//! call reopens it through the [`Opener`].

use std::fmt;
use std::time::Duration;

use redb::{
    Database, DatabaseError, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, Table, TableDefinition, WriteTransaction,
};
use tracing::warn;

use super::chunk;
use super::history::{
    events_in, in_chunks, in_event_history, keep_only_trips, last_seq, unbroken_from,
    usage_horizon, usage_in_batches,
};
use super::merge::{Merged, Opened, SetAside, merge, namespace, open_chunks, stored_chunks};
use super::pending::{LogMark, Pending};
use super::texts::{self, TEXTS};
use super::{Loaded, StoreError};
use crate::events::Event;
use crate::record::{self, RecordError};
use crate::tasks::{Task, TaskName};

/// The task rows as of the last compaction, in [`chunk`]s keyed by their
/// order: the base.
pub(crate) const BASE: TableDefinition<u64, &[u8]> = TableDefinition::new("tasks.base");
/// Where a compaction writes the next base, renamed to [`BASE`] in the
/// same commit.
const BASE_NEXT: TableDefinition<u64, &[u8]> = TableDefinition::new("tasks.base.next");
/// The rows each checkpoint since the last compaction changed: a run of
/// chunks per checkpoint, keyed by (its number, the chunk's order in it).
/// A name's row in a later run takes the place of its row in an earlier
/// one and in the base; a removal is a row too.
pub(crate) const RUNS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("tasks.runs");
/// The per-name table of versions before chunks: a task name to its
/// [`record`](crate::record). Read once, by the first load, which moves its
/// rows into chunks and deletes it.
pub(crate) const TASKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("tasks");
pub(crate) const QUARANTINE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("quarantine");
/// The retained event history, in chunks: the sequence number of a chunk's
/// first event to its events' JSON lines, each ending in a newline, in
/// order. A chunk runs up to the next one's first event. Rows written
/// before chunks existed hold one line each, which is a chunk of one. The
/// events the usage history keeps ([`Event::usage_instant`]) are in
/// [`USAGE`] alone, from [`META_EVENTS_FROM`]'s first checkpoint on;
/// before it, here as well.
pub(crate) const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");

/// Most bytes of event lines in one row of [`EVENTS`]. One row per event
/// made the history three quarters of a checkpoint's work (a redb insert is
/// about 4,600 instructions, callgrind); one per checkpoint would make a
/// row of up to 16k events. At 256 KiB, about 1,500 events share a row;
/// less [`PAGE_SLACK`](chunk::PAGE_SLACK), so that the row fills a 256 KiB
/// leaf of redb's instead of half a 512 KiB one (cleared, checksummed and
/// written whole: 2,400 instructions of `memset` per ended hold).
pub(crate) const EVENT_CHUNK_BYTES: usize = (256 << 10) - chunk::PAGE_SLACK;
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
/// The usage history's floor ([`Loaded::usage_floor`]), once it has one.
const META_USAGE_FLOOR: &str = "usage.floor";
/// The first event the event history keeps (the latest checkpoint's
/// `keep_events_from`, never lowered), once the usage table holds the
/// lines of the events that ended a hold for both histories: a load takes
/// the history from [`EVENTS`] and those lines from it on. A database
/// without it stored every event in [`EVENTS`].
const META_EVENTS_FROM: &str = "events.from";
/// Rows in the base and in the runs: when to compact.
const META_BASE_ROWS: &str = "tasks.base.rows";
const META_RUN_ROWS: &str = "tasks.runs.rows";

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
    compact_at: usize,
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
    /// `usage_retention` and whose checkpoints compact the task tables at
    /// `compact_at` rows of runs (see [`StoreOptions`](super::StoreOptions)).
    pub fn new(
        db: Database,
        opener: Opener,
        usage_retention: Duration,
        compact_at: usize,
    ) -> Tables {
        Tables {
            db: Some(db),
            opener,
            usage_retention,
            compact_at,
        }
    }

    /// Reads every row and the log mark. Rows that cannot be trusted are
    /// logged, moved to the quarantine table, and left out; the task tables
    /// are then rewritten without them, in the same commit. Rows of the
    /// per-name `tasks` table of an earlier version move into the chunks
    /// the same way.
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
            let mut texts = record::Texts::default();
            let mut aside = SetAside::default();
            let migrated = migrate_legacy(&txn, &mut texts, &mut aside, &mut loaded)?;
            let mut changed = migrated || loaded.recounted > 0;
            {
                let base = txn.open_table(BASE).map_err(io)?;
                let runs = txn.open_table(RUNS).map_err(io)?;
                let (stored, n_base) = stored_chunks(Some(&base), Some(&runs))?;
                let opened = open_chunks(&stored, &mut texts, &mut aside);
                // Counts as the headers of intact chunks say: a damaged
                // header's count is not trusted.
                let rows = opened
                    .iter()
                    .flatten()
                    .filter(|o| o.chunk.intact)
                    .map(|o| o.rows)
                    .sum::<usize>();
                // Sized once: growing by doubling copied 100k rows 17 times.
                loaded.tasks.reserve_exact(rows.min(PRESIZE_ROWS_AT_MOST));
                let mut bad = Vec::new();
                merge(&stored, &opened, n_base, &[], &mut aside, |merged| {
                    let Merged::Stored { chunk, row } = merged else {
                        return Ok(());
                    };
                    let value = row.value.unwrap_or_default();
                    texts.set_namespace(namespace(chunk));
                    match record::decode(row.name, value, &mut texts) {
                        Ok(task) => {
                            texts.count_resolved();
                            loaded.tasks.push(task);
                        }
                        Err(reason) => bad.push((chunk, row, reason)),
                    }
                    Ok(())
                })?;
                for (chunk, row, reason) in bad {
                    if let Some(opened) = &opened[chunk] {
                        let value = row.value.unwrap_or_default();
                        aside.chunk_row(row.name, value, reason, &opened.texts);
                    }
                }
            }
            if !texts.missing().is_empty() {
                warn!(
                    tasks = texts.missing().len(),
                    "holder command lines missing or damaged; those tasks are served without them"
                );
            }
            loaded.missing_texts = texts.missing().len();
            if migrated || !aside.is_empty() {
                // Written again without what was set aside, so that the
                // next load does not find it again.
                let written = {
                    let mut next = BaseWriter::open(&txn)?;
                    for task in &loaded.tasks {
                        next.put(Merged::Task(task), &[], &mut texts)?;
                    }
                    next.finish()?
                };
                swap_base(&txn)?;
                set_counts(&txn, written, 0)?;
                changed = true;
            }
            changed |= !aside.is_empty();
            aside.commit(&txn, &mut loaded.quarantined)?;
            {
                let meta = txn.open_table(META).map_err(io)?;
                // Before the usage table held the ended holds' lines for
                // both histories, every event was in EVENTS.
                let events_from = meta.get(META_EVENTS_FROM).map_err(io)?.map(|v| v.value());
                let events = txn.open_table(EVENTS).map_err(io)?;
                for row in events.iter().map_err(io)? {
                    let (first, chunk) = row.map_err(io)?;
                    for event in events_in(chunk.value()) {
                        match event {
                            Some(event) if event.seq >= events_from.unwrap_or(0) => {
                                loaded.events.push(event);
                            }
                            Some(_) => {}
                            None => warn!(chunk = first.value(), "unreadable event skipped"),
                        }
                    }
                }
                // A chunk stays until its latest event passes the horizon
                // (and the event history); its older events are left out
                // of the usage history here, so that a name trips for the
                // retention and no longer.
                let horizon = usage_horizon(retention);
                let in_usage = |event: &Event| {
                    event
                        .usage_instant()
                        .is_some_and(|at| at.as_nanos() >= horizon)
                };
                let in_events = |event: &Event| events_from.is_some_and(|from| event.seq >= from);
                let usage = txn.open_table(USAGE).map_err(io)?;
                let rows = usage.iter().map_err(io)?;
                let rows = rows.map(|row| row.map(|(key, chunk)| (key.value().1, chunk)));
                let keep = |event: &Event| in_usage(event) || in_events(event);
                let kept = usage_in_batches(rows, |chunk| chunk.value(), &keep).map_err(io)?;
                loaded.usage.reserve(kept.len());
                for event in kept {
                    if in_events(&event) {
                        loaded.events.push(event.clone());
                    }
                    if in_usage(&event) {
                        loaded.usage.push(event);
                    }
                }
                loaded.usage.sort_by_key(|event| event.seq);
                // A database written before kept the ended holds in both
                // tables; chunks of either age are read the same way.
                loaded.events.sort_by_key(|event| event.seq);
                loaded.events.dedup_by_key(|event| event.seq);
                if let Some(lsn) = meta.get(META_LSN).map_err(io)? {
                    mark.lsn = lsn.value();
                }
                if let Some(position) = meta.get(META_POSITION).map_err(io)? {
                    mark.position = position.value();
                }
                if let Some(floor) = meta.get(META_USAGE_FLOOR).map_err(io)? {
                    loaded.usage_floor = floor.value();
                }
            }
            if changed {
                txn.commit().map_err(io)?;
            } else {
                // Nothing changed: no fsync needed.
                txn.abort().map_err(io)?;
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
    /// Returns the rows of the new base if it compacted the task tables.
    ///
    /// # Errors
    /// [`StoreError::Io`]: nothing of it may be assumed written. The
    /// database has been dropped and the next call reopens it.
    pub fn checkpoint(&mut self, pending: &Pending) -> Result<Option<u64>, StoreError> {
        let retention = self.usage_retention;
        let compact_at = self.compact_at;
        self.guard(|db| {
            let txn = db.begin_write().map_err(io)?;
            // Never lowered: a restart with a longer --event-retention
            // keeps the history it has, without the gaps the usage
            // table's pruning may have left below it. A database of an
            // earlier release holds every event in EVENTS from where its
            // last unbroken stretch of chunks begins (a checkpoint whose
            // keep-from jumped past events it had not trimmed left a
            // hole), and nothing complete before it.
            let events_from = {
                let meta = txn.open_table(META).map_err(io)?;
                let stored = meta.get(META_EVENTS_FROM).map_err(io)?;
                match stored {
                    Some(from) => from.value(),
                    None => {
                        let events = txn.open_table(EVENTS).map_err(io)?;
                        let mut chunks = Vec::new();
                        for row in events.iter().map_err(io)? {
                            let (first, chunk) = row.map_err(io)?;
                            chunks.push((first.value(), last_seq(chunk.value())));
                        }
                        unbroken_from(&chunks)
                    }
                }
            }
            .max(pending.keep_events_from());
            {
                let mut table = txn.open_table(EVENTS).map_err(io)?;
                let keep_from = pending.keep_events_from();
                // Events already past the retained history would be trimmed
                // by this very transaction or the next: under churn most of
                // a checkpoint's events are, and writing them is waste. The
                // events that ended a hold are the usage table's: their
                // lines (a delete's is most of its checkpoint's bytes) are
                // written once, there.
                let retained = pending
                    .events()
                    .others()
                    .filter(|(seq, _)| *seq >= keep_from);
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
                // A chunk past the retention stays while the event
                // history holds its last line.
                let horizon = usage_horizon(retention);
                let oldest = usage.first().map_err(io)?.map(|(key, _)| key.value().0);
                if oldest.is_some_and(|at| at < horizon) {
                    usage
                        .retain_in(..(horizon, 0), |_, chunk| {
                            in_event_history(chunk, events_from)
                        })
                        .map_err(io)?;
                }
                let floor = pending.usage_floor();
                if floor > horizon && oldest.is_some_and(|at| at < floor) {
                    keep_only_trips(&mut usage, floor, events_from)?;
                }
            }
            let rows = pending.rows();
            let mut compacted = None;
            if !rows.is_empty() {
                let (base_rows, run_rows) = counts(&txn)?;
                let after = run_rows.saturating_add(rows.len() as u64);
                let mut runs = txn.open_table(RUNS).map_err(io)?;
                match next_run(&runs)? {
                    Some(run) if after < base_rows.max(compact_at as u64) => {
                        let rows = rows
                            .iter()
                            .map(|(name, row)| (name.as_bytes(), row.as_ref()));
                        write_run(&mut runs, run, rows)?;
                        drop(runs);
                        set_counts(&txn, base_rows, after)?;
                    }
                    // Due, or the run numbers are spent (only a damaged
                    // key would spend them).
                    _ => {
                        drop(runs);
                        compacted = Some(compact(&txn, &rows)?);
                    }
                }
            }
            {
                let mut meta = txn.open_table(META).map_err(io)?;
                let mark = pending.mark();
                meta.insert(META_LSN, mark.lsn).map_err(io)?;
                meta.insert(META_POSITION, mark.position).map_err(io)?;
                if pending.usage_floor() > 0 {
                    meta.insert(META_USAGE_FLOOR, pending.usage_floor())
                        .map_err(io)?;
                }
                meta.insert(META_EVENTS_FROM, events_from).map_err(io)?;
            }
            txn.commit().map_err(io)?;
            Ok(compacted)
        })
    }

    /// The log mark the tables hold: where the log's frames not yet in
    /// them begin. A read transaction, so that the log can be scanned
    /// while [`load`](Self::load) reads the rest.
    ///
    /// # Errors
    /// [`StoreError::Io`] if the database cannot be read.
    pub fn mark(&mut self) -> Result<LogMark, StoreError> {
        self.guard(|db| {
            let txn = db.begin_read().map_err(io)?;
            let meta = match txn.open_table(META) {
                Ok(meta) => meta,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(LogMark::default()),
                Err(e) => return Err(io(e)),
            };
            let mut mark = LogMark::default();
            if let Some(lsn) = meta.get(META_LSN).map_err(io)? {
                mark.lsn = lsn.value();
            }
            if let Some(position) = meta.get(META_POSITION).map_err(io)? {
                mark.position = position.value();
            }
            Ok(mark)
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

/// A task row's name and record bytes.
pub(crate) type RawRow = (Vec<u8>, Vec<u8>);

/// The task rows the tables hold, as a load merges them (the newest of
/// each name; removals and what a load would set aside left out): each
/// name and its record's bytes, in name order. For tests and inspection.
///
/// # Errors
/// [`StoreError::Io`] if the tables cannot be read.
pub(crate) fn read_rows(txn: &ReadTransaction) -> Result<Vec<RawRow>, StoreError> {
    // A table no checkpoint has written yet does not exist.
    let base = txn.open_table(BASE).ok();
    let runs = txn.open_table(RUNS).ok();
    let (stored, n_base) = stored_chunks(base.as_ref(), runs.as_ref())?;
    let mut texts = record::Texts::default();
    let mut aside = SetAside::default();
    let opened = open_chunks(&stored, &mut texts, &mut aside);
    let mut rows = Vec::new();
    merge(&stored, &opened, n_base, &[], &mut aside, |merged| {
        if let Merged::Stored { row, .. } = merged {
            rows.push((row.name.to_vec(), row.value.unwrap_or_default().to_vec()));
        }
        Ok(())
    })?;
    Ok(rows)
}

/// Reads the per-name `tasks` table of an earlier version and the `texts`
/// table its rows refer to, counts the references of its rows and of the
/// quarantined ones, and puts right any count that differs
/// (`loaded.recounted`). Its rows that decode move into a run, newer than
/// any, and the table is deleted; the others go to `aside`. Returns
/// whether there were any.
fn migrate_legacy(
    txn: &WriteTransaction,
    texts: &mut record::Texts,
    aside: &mut SetAside,
    loaded: &mut Loaded,
) -> Result<bool, StoreError> {
    let mut stored_texts = txn.open_table(TEXTS).map_err(io)?;
    texts::load(&stored_texts, texts)?;
    let mut kept = Vec::new();
    let mut released = Vec::new();
    let any = {
        let tasks = txn.open_table(TASKS).map_err(io)?;
        for row in tasks.iter().map_err(io)? {
            let (key, value) = row.map_err(io)?;
            match record::decode(key.value(), value.value(), texts) {
                Ok(task) => {
                    texts.count_resolved();
                    released.extend(
                        record::references(key.value(), value.value())
                            .into_iter()
                            .flatten(),
                    );
                    kept.push(task);
                }
                Err(reason) => {
                    // Quarantined, it keeps the lines it names.
                    for text in record::references_kept(value.value()).into_iter().flatten() {
                        texts.count_reference(text);
                    }
                    aside.row(key.value(), value.value(), reason);
                }
            }
        }
        !tasks.is_empty().map_err(io)?
    };
    // Rows quarantined before keep the lines they name too.
    let quarantine = txn.open_table(QUARANTINE).map_err(io)?;
    for row in quarantine.iter().map_err(io)? {
        let (_, value) = row.map_err(io)?;
        for text in record::references_kept(value.value()).into_iter().flatten() {
            texts.count_reference(text);
        }
    }
    let recounted = texts::recount(&mut stored_texts, texts)?;
    if recounted > 0 {
        warn!(recounted, "stored command lines recounted");
    }
    loaded.recounted = recounted;
    if !any {
        // Opening it made it; an empty one is not kept.
        txn.delete_table(TASKS).map_err(io)?;
        return Ok(false);
    }
    // The rows moved give their references back; what stays in the
    // table is what quarantined rows name, and texts that are damaged
    // (left as they are).
    let missing: std::collections::HashSet<u64> = texts.missing().iter().copied().collect();
    let mut plan = texts::Plan::default();
    for key in released {
        if !missing.contains(&key) {
            plan.release(&stored_texts, key)?;
        }
    }
    plan.apply(&mut stored_texts)?;
    let mut runs = txn.open_table(RUNS).map_err(io)?;
    let run = next_run(&runs)?.ok_or_else(|| StoreError::Io("run numbers exhausted".into()))?;
    write_run(
        &mut runs,
        run,
        kept.iter().map(|task| (task.name.as_bytes(), Some(task))),
    )?;
    drop(runs);
    txn.delete_table(TASKS).map_err(io)?;
    tracing::info!(
        rows = kept.len(),
        "task rows of an earlier version moved into chunks"
    );
    Ok(true)
}

/// The rows in the base and in the runs, as meta counts them.
fn counts(txn: &WriteTransaction) -> Result<(u64, u64), StoreError> {
    let meta = txn.open_table(META).map_err(io)?;
    let get = |key| -> Result<u64, StoreError> {
        Ok(meta.get(key).map_err(io)?.map_or(0, |value| value.value()))
    };
    Ok((get(META_BASE_ROWS)?, get(META_RUN_ROWS)?))
}

fn set_counts(txn: &WriteTransaction, base_rows: u64, run_rows: u64) -> Result<(), StoreError> {
    let mut meta = txn.open_table(META).map_err(io)?;
    meta.insert(META_BASE_ROWS, base_rows).map_err(io)?;
    meta.insert(META_RUN_ROWS, run_rows).map_err(io)?;
    Ok(())
}

/// The number the next run takes; `None` if the last one is `u64::MAX`
/// (only a damaged key would be): a compaction is due instead.
fn next_run(runs: &Table<'_, (u64, u64), &'static [u8]>) -> Result<Option<u64>, StoreError> {
    Ok(match runs.last().map_err(io)? {
        Some((key, _)) => key.value().0.checked_add(1),
        None => Some(1),
    })
}

/// Merges the base, the runs and `rows` (newer than any run) into a new
/// base, deletes the runs, and sets aside what could not be trusted.
/// Returns the new base's rows.
fn compact(txn: &WriteTransaction, rows: &[(&TaskName, &Option<Task>)]) -> Result<u64, StoreError> {
    let mut aside = SetAside::default();
    let written = {
        let base = txn.open_table(BASE).map_err(io)?;
        let runs = txn.open_table(RUNS).map_err(io)?;
        let (stored, n_base) = stored_chunks(Some(&base), Some(&runs))?;
        let mut texts = record::Texts::default();
        let opened = open_chunks(&stored, &mut texts, &mut aside);
        let mut next = BaseWriter::open(txn)?;
        merge(&stored, &opened, n_base, rows, &mut aside, |row| {
            next.put(row, &opened, &mut texts)
        })?;
        for (chunk, name, value, reason) in next.take_failed() {
            if let Some(from) = &opened[chunk] {
                aside.chunk_row(&name, &value, reason, &from.texts);
            }
        }
        next.finish()?
    };
    swap_base(txn)?;
    set_counts(txn, written, 0)?;
    tracing::debug!(rows = written, "task tables compacted into a new base");
    aside.commit(txn, &mut Vec::new())?;
    Ok(written)
}

/// Writes `rows` (by name, in order; `None`: removed) as run number `run`.
/// Returns how many.
fn write_run<'t>(
    runs: &mut Table<'_, (u64, u64), &'static [u8]>,
    run: u64,
    rows: impl Iterator<Item = (&'t [u8], Option<&'t Task>)>,
) -> Result<(), StoreError> {
    let mut writer = chunk::Writer::default();
    let mut part = 0;
    for (name, task) in rows {
        match task {
            Some(task) => writer.put_task(task),
            None => writer.put_removed(name),
        }
        for chunk in writer.take_sealed() {
            runs.insert((run, part), chunk.as_slice()).map_err(io)?;
            part += 1;
        }
    }
    if !writer.is_empty() {
        runs.insert((run, part), writer.seal().as_slice())
            .map_err(io)?;
    }
    Ok(())
}

/// Writes the next base into [`BASE_NEXT`], for [`swap_base`].
struct BaseWriter<'t> {
    table: Table<'t, u64, &'static [u8]>,
    writer: chunk::Writer,
    part: u64,
    rows: u64,
    failed: Vec<(usize, Vec<u8>, Vec<u8>, RecordError)>,
}

impl<'t> BaseWriter<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<BaseWriter<'t>, StoreError> {
        let mut table = txn.open_table(BASE_NEXT).map_err(io)?;
        // Left by nothing committed; cleared all the same.
        table.retain(|_, _| false).map_err(io)?;
        Ok(BaseWriter {
            table,
            writer: chunk::Writer::default(),
            part: 0,
            rows: 0,
            failed: Vec::new(),
        })
    }

    /// Appends a row, in name order: a stored one with the texts of its
    /// chunk, or a task.
    fn put(
        &mut self,
        row: Merged<'_>,
        opened: &[Option<Opened<'_>>],
        texts: &mut record::Texts,
    ) -> Result<(), StoreError> {
        match row {
            Merged::Task(task) => self.writer.put_task(task),
            Merged::Stored { chunk, row } => {
                let Some(from) = opened.get(chunk).and_then(Option::as_ref) else {
                    return Ok(());
                };
                if !self.writer.put_stored(row, &from.texts) {
                    // A text of its under a key this chunk gives another:
                    // written from its task, that text stays in the row.
                    texts.set_namespace(namespace(chunk));
                    let value = row.value.unwrap_or_default();
                    match record::decode(row.name, value, texts) {
                        Ok(task) => self.writer.put_task(&task),
                        Err(reason) => {
                            let failed = (chunk, row.name.to_vec(), value.to_vec(), reason);
                            self.failed.push(failed);
                            return Ok(());
                        }
                    }
                }
            }
        }
        self.rows += 1;
        for chunk in self.writer.take_sealed() {
            self.table.insert(self.part, chunk.as_slice()).map_err(io)?;
            self.part += 1;
        }
        Ok(())
    }

    /// The rows that could be neither copied nor decoded (a record whose
    /// checksum passed but whose fields do not decode), for the quarantine:
    /// the chunk each came from, its name, its bytes and why.
    fn take_failed(&mut self) -> Vec<(usize, Vec<u8>, Vec<u8>, RecordError)> {
        std::mem::take(&mut self.failed)
    }

    /// Seals the last chunk; returns the rows written.
    fn finish(mut self) -> Result<u64, StoreError> {
        if !self.writer.is_empty() {
            let chunk = self.writer.seal();
            self.table.insert(self.part, chunk.as_slice()).map_err(io)?;
        }
        Ok(self.rows)
    }
}

/// Makes the next base the base, and deletes the runs it contains.
fn swap_base(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.delete_table(BASE).map_err(io)?;
    txn.rename_table(BASE_NEXT, BASE).map_err(io)?;
    txn.delete_table(RUNS).map_err(io)?;
    Ok(())
}

pub(super) fn io(error: impl fmt::Display) -> StoreError {
    StoreError::Io(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fixtures::{put, remove, task};
    use crate::store::{Change, MIN_LOG_SIZE, Store, StoreOptions};
    use redb::TableHandle;
    use std::collections::BTreeMap;
    use std::path::Path;

    fn options(compact_at: usize) -> StoreOptions {
        StoreOptions {
            log_size: MIN_LOG_SIZE,
            background: false,
            compact_at,
            ..StoreOptions::default()
        }
    }

    /// Chunks in the base and in the runs, and the counts in meta.
    type Shape = (u64, u64, u64, u64);

    fn shape(path: &Path) -> Shape {
        let db = Database::open(path).unwrap();
        let read = db.begin_read().unwrap();
        let len = |name: &str| {
            let table: TableDefinition<'_, u64, &[u8]> = TableDefinition::new(name);
            read.open_table(table).map_or(0, |t| t.len().unwrap())
        };
        let runs = read.open_table(RUNS).map_or(0, |t| t.len().unwrap());
        let meta = read.open_table(META).unwrap();
        let count = |key| meta.get(key).unwrap().map_or(0, |v| v.value());
        (
            len(BASE.name()),
            runs,
            count(META_BASE_ROWS),
            count(META_RUN_ROWS),
        )
    }

    /// Loads a fresh store at `path`: what it serves, and what it set
    /// aside.
    fn reload(path: &Path, compact_at: usize) -> (Vec<Task>, Vec<String>) {
        let mut store = Store::open(path, &options(compact_at)).unwrap();
        let loaded = store.load().unwrap();
        let keys = loaded.quarantined.into_iter().map(|(key, _)| key).collect();
        (loaded.tasks, keys)
    }

    #[test]
    fn the_mark_read_alone_is_the_one_a_load_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.redb");
        let marks = |path: &Path| {
            let reopen = path.to_path_buf();
            let mut tables = Tables::new(
                Database::open(path).unwrap(),
                Box::new(move || Database::open(&reopen)),
                crate::usage::DEFAULT_USAGE_RETENTION,
                usize::MAX,
            );
            let alone = tables.mark().unwrap();
            let (_, loaded) = tables.load().unwrap();
            (alone, loaded)
        };
        // A new file: no meta table at all.
        drop(Database::create(&path).unwrap());
        let (alone, loaded) = marks(&path);
        assert_eq!(alone, LogMark::default());
        assert_eq!(alone, loaded);
        // After commits and a checkpoint of them.
        {
            let mut store = Store::open(&path, &options(usize::MAX)).unwrap();
            store.load().unwrap();
            store.commit(&[put("a", 1), put("b", 2)]).unwrap();
            store.commit(&[remove("a")]).unwrap();
            store.checkpoint_now().unwrap();
        }
        let (alone, loaded) = marks(&path);
        assert_eq!(alone.lsn, 2);
        assert!(alone.position > 0);
        assert_eq!(alone, loaded);
    }

    #[test]
    fn checkpoints_write_runs_that_a_compaction_merges_into_the_base() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.redb");
        let mut model: BTreeMap<String, u64> = BTreeMap::new();
        // Each step: its changes, then the chunks expected in the base and
        // the runs after its checkpoint, and the counts.
        let steps: Vec<(Vec<Change>, Shape)> = vec![
            (vec![put("b", 1), put("d", 1)], (0, 1, 0, 2)),
            // A run over a run: 3 rows, below 4.
            (vec![remove("d")], (0, 2, 0, 3)),
            // 3 + 2 = 5 >= max(0, 4): all of it merges into one base
            // chunk, and the removal of d leaves nothing of it.
            (vec![put("a", 2), put("b", 2)], (1, 0, 2, 0)),
            (vec![put("c", 3)], (1, 1, 2, 1)),
            (vec![remove("a"), put("e", 3)], (1, 2, 2, 3)),
            // 3 + 1 >= max(2, 4): b, c and e make the base.
            (vec![put("b", 4)], (1, 0, 3, 0)),
            (vec![put("f", 5), remove("c")], (1, 1, 3, 2)),
        ];
        for (changes, expected) in steps {
            for change in &changes {
                match change {
                    Change::Put { task, .. } => {
                        model.insert(task.name.as_str().to_owned(), task.expires_at.as_nanos());
                    }
                    Change::Remove { name, .. } => {
                        model.remove(name.as_str());
                    }
                }
            }
            let mut store = Store::open(&path, &options(4)).unwrap();
            store.load().unwrap();
            store.commit(&changes).unwrap();
            store.checkpoint_now().unwrap();
            // A compaction leaves no run, and is counted with its rows.
            let counters = store.counters();
            let compacted = (expected.1 == 0).then_some(expected.2);
            assert_eq!(
                (
                    counters.checkpoints,
                    counters.compactions,
                    counters.compacted_rows
                ),
                (1, u64::from(compacted.is_some()), compacted.unwrap_or(0)),
                "{changes:?}"
            );
            drop(store);
            assert_eq!(shape(&path), expected, "{changes:?}");
            let served: Vec<(String, u64)> = reload(&path, 4)
                .0
                .into_iter()
                .map(|t| (t.name.as_str().to_owned(), t.expires_at.as_nanos()))
                .collect();
            let wanted: Vec<(String, u64)> = model.clone().into_iter().collect();
            assert_eq!(served, wanted, "{changes:?}");
        }
    }

    /// Rewrites the first chunk of the base or of the runs with `damage`.
    fn damage_first(path: &Path, in_base: bool, damage: impl FnOnce(&mut Vec<u8>)) {
        let db = Database::open(path).unwrap();
        let txn = db.begin_write().unwrap();
        if in_base {
            let mut base = txn.open_table(BASE).unwrap();
            let (key, mut chunk) = {
                let (key, value) = base.first().unwrap().unwrap();
                (key.value(), value.value().to_vec())
            };
            damage(&mut chunk);
            base.insert(key, chunk.as_slice()).unwrap();
        } else {
            let mut runs = txn.open_table(RUNS).unwrap();
            let (key, mut chunk) = {
                let (key, value) = runs.first().unwrap().unwrap();
                (key.value(), value.value().to_vec())
            };
            damage(&mut chunk);
            runs.insert(key, chunk.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }

    /// Where `name`'s row starts in a chunk (names of one byte).
    fn row_of(chunk: &[u8], name: u8) -> usize {
        chunk.windows(3).position(|w| w == [1, 0, name]).unwrap()
    }

    /// A base of a, b, c (compacted), then the run `changes` over it.
    fn based(path: &Path, changes: &[Change]) {
        based_on(path, &["a", "b", "c"], changes);
    }

    /// A base of `names` (compacted), each expiring at 1, then the run
    /// `changes` over it.
    fn based_on(path: &Path, names: &[&str], changes: &[Change]) {
        let mut store = Store::open(path, &options(1)).unwrap();
        store.load().unwrap();
        let puts: Vec<Change> = names.iter().map(|name| put(name, 1)).collect();
        store.commit(&puts).unwrap();
        store.checkpoint_now().unwrap();
        drop(store);
        let mut store = Store::open(path, &options(1000)).unwrap();
        store.load().unwrap();
        if !changes.is_empty() {
            store.commit(changes).unwrap();
            store.checkpoint_now().unwrap();
        }
    }

    #[test]
    fn a_damaged_chunk_is_read_row_by_row_and_what_does_not_read_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.redb");
        based(&path, &[]);
        // A flipped bit in b's expiry: b alone is set aside.
        damage_first(&path, true, |chunk| {
            let at = row_of(chunk, b'b') + 3 + 4 + 9;
            chunk[at] ^= 0x01;
        });
        let (served, aside) = reload(&path, 1000);
        assert_eq!(served, [task("a", 1), task("c", 1)]);
        assert_eq!(aside, ["~tasks.base/0", "b"]);
        // Written again without it: the next load finds nothing to set
        // aside, and serves the same.
        assert_eq!(
            reload(&path, 1000),
            (vec![task("a", 1), task("c", 1)], vec![])
        );

        // A length that runs past the rows: the rows before it are served,
        // the chunk is kept whole.
        damage_first(&path, true, |chunk| {
            let at = row_of(chunk, b'c') + 3;
            chunk[at + 3] = 0x7f;
        });
        let (served, aside) = reload(&path, 1000);
        assert_eq!(served, [task("a", 1)]);
        assert_eq!(aside, ["~tasks.base/0"]);

        // A damaged header: the rows still read, each by its own check.
        damage_first(&path, true, |chunk| chunk[0] = 0xee);
        assert_eq!(
            reload(&path, 1000),
            (vec![task("a", 1)], vec!["~tasks.base/0".to_owned()])
        );
        // Too short to read at all: the whole chunk, and its rows with it.
        damage_first(&path, true, |chunk| chunk.truncate(12));
        assert_eq!(
            reload(&path, 1000),
            (vec![], vec!["~tasks.base/0".to_owned()])
        );
        assert_eq!(reload(&path, 1000), (vec![], vec![]));
        // Each beside the others, byte for byte as found.
        let db = Database::open(&path).unwrap();
        let read = db.begin_read().unwrap();
        let quarantine = read.open_table(QUARANTINE).unwrap();
        let keys: Vec<String> = quarantine
            .iter()
            .unwrap()
            .map(|row| String::from_utf8(row.unwrap().0.value().to_vec()).unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "b",
                "~tasks.base/0",
                "~tasks.base/0~2",
                "~tasks.base/0~3",
                "~tasks.base/0~4"
            ]
        );
    }

    #[test]
    fn a_run_hides_older_rows_of_its_names_even_when_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.redb");
        based(&path, &[remove("a"), put("b", 2), put("c", 2)]);
        assert_eq!(reload(&path, 1000).0, [task("b", 2), task("c", 2)]);
        // The run's row of c fails its checksum: the base's older c is not
        // served in its place.
        damage_first(&path, false, |chunk| {
            let at = row_of(chunk, b'c') + 3 + 4 + 9;
            chunk[at] ^= 0x01;
        });
        // Set aside: the chunk, its row of c, and the base's older c.
        let (served, aside) = reload(&path, 1000);
        assert_eq!(served, [task("b", 2)]);
        assert_eq!(aside, ["~tasks.runs/1.0", "c", "c"]);
        assert_eq!(reload(&path, 1000), (vec![task("b", 2)], vec![]));

        // Nor is an older row served in place of a removal that does not
        // check: its name as read cannot be trusted, so every older row
        // between the trusted rows around it is set aside (c), and those
        // outside are served (a, m).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.redb");
        based_on(
            &path,
            &["a", "c", "m"],
            &[put("b", 2), remove("c"), put("d", 2)],
        );
        damage_first(&path, false, |chunk| {
            let at = row_of(chunk, b'c') + 3 + 4;
            chunk[at] ^= 0x01;
        });
        let (served, aside) = reload(&path, 1000);
        assert_eq!(
            served,
            [task("a", 1), task("b", 2), task("d", 2), task("m", 1)]
        );
        assert_eq!(aside, ["~tasks.runs/1.0", "c", "c"]);
    }

    #[test]
    fn a_lost_stretch_of_a_run_brings_back_no_older_row() {
        // The run's removal of c is cut off with the end of its chunk: c's
        // base row may be stale, so it is set aside, not served.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.redb");
        based(&path, &[put("b", 2), remove("c")]);
        damage_first(&path, false, |chunk| {
            let cut = row_of(chunk, b'c');
            chunk.drain(cut + 2..chunk.len() - 4);
        });
        let (served, aside) = reload(&path, 1000);
        assert_eq!(served, [task("a", 1), task("b", 2)]);
        assert_eq!(aside, ["~tasks.runs/1.0", "c"]);

        // A run chunk that cannot be read at all: every older row is set
        // aside (the run might have said anything of any name).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.redb");
        based(&path, &[put("b", 2)]);
        damage_first(&path, false, |chunk| chunk.truncate(5));
        let (served, aside) = reload(&path, 1000);
        assert!(served.is_empty(), "{served:?}");
        assert_eq!(aside, ["~tasks.runs/1.0", "a", "b", "c"]);
    }

    #[test]
    fn a_trusted_row_out_of_order_in_a_run_brings_back_no_older_row() {
        // A run whose chunks read in the wrong order: [m, z] then [a, the
        // removal of c]. a and c are out of order there, so what the run
        // says of them is in doubt: the base's a and c are set aside, not
        // served.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.redb");
        based_on(&path, &["a", "c"], &[]);
        {
            let mut first = chunk::Writer::default();
            first.put_task(&task("m", 2));
            first.put_task(&task("z", 2));
            let mut second = chunk::Writer::default();
            second.put_task(&task("a", 2));
            second.put_removed(b"c");
            let db = Database::open(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut runs = txn.open_table(RUNS).unwrap();
                runs.insert((1, 0), first.seal().as_slice()).unwrap();
                runs.insert((1, 1), second.seal().as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        let (served, mut aside) = reload(&path, 1000);
        assert_eq!(served, [task("m", 2), task("z", 2)]);
        aside.sort();
        assert_eq!(aside, ["a", "a", "c"]);
    }

    #[test]
    fn a_damaged_name_in_the_base_moves_nothing_out_of_order() {
        // b's name flipped to r in the base: b is set aside, and the run's
        // removal of c and newer d still apply to the rows after it.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.redb");
        based_on(&path, &["a", "b", "c", "d"], &[remove("c"), put("d", 2)]);
        damage_first(&path, true, |chunk| {
            let at = row_of(chunk, b'b') + 2;
            chunk[at] = b'r';
        });
        let (served, aside) = reload(&path, 1000);
        assert_eq!(served, [task("a", 1), task("d", 2)]);
        assert_eq!(aside, ["~tasks.base/0", "r"]);
        assert_eq!(reload(&path, 1000), (served, vec![]));
    }
}
