//! The `texts` table: holder command lines stored once, each with the
//! number of rows outside the chunks that refer to it.
//!
//! An agent's tasks all carry its parent's command line (up to
//! [`MAX_PARENT_COMMAND`](crate::process::MAX_PARENT_COMMAND), 256 bytes).
//! The release before chunks kept a row per task and each such line once
//! here, counted by its references; its rows name a line by its key
//! ([`key_of`]). Rows in chunks name the texts of their own chunk instead
//! ([`chunk`](super::chunk)). What stays here: the lines that quarantined
//! rows name (a quarantined row keeps the line it names,
//! `keep_for_quarantine`),
//! and, until the first load of this release moves them into chunks, the
//! earlier release's.
//!
//! Each value is the number of rows that refer to the text (`u64`,
//! little-endian) and the text's UTF-8 bytes. A load counts the references
//! again (a quarantined row's too) and puts right any count that differs
//! ([`recount`]). A key is [`key_of`] the text, so a load checks each
//! stored text against its key: one that does not hash to it was damaged,
//! is left as it is and not served, and the tasks that name it load
//! without it (`Loaded::missing_texts`). A text whose key is already
//! another text's is not stored, so a collision costs a line, never a
//! wrong one.

use std::collections::HashMap;
use std::sync::Arc;

use redb::{ReadableTable, Table, TableDefinition};
use tracing::warn;

use super::StoreError;
use crate::record::{self, Texts};

pub(crate) const TEXTS: TableDefinition<u64, &[u8]> = TableDefinition::new("texts");

/// Shortest command line stored once rather than in its rows: a reference
/// takes 10 bytes, and the text's entry among its chunk's texts 10 more,
/// so shorter texts (a process's `comm`, at most 15 bytes, is always one)
/// stay where they are.
pub const SHARE_TEXT_AT: usize = 32;

/// The key of `text` in the table: its 64-bit FNV-1a hash. Fixed, so that
/// every build finds the texts an earlier one stored.
pub fn key_of(text: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    text.bytes().fold(OFFSET, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

/// A row of the table: its count of references, then the text.
fn encode(count: u64, text: &str) -> Vec<u8> {
    let mut value = Vec::with_capacity(8 + text.len());
    value.extend_from_slice(&count.to_le_bytes());
    value.extend_from_slice(text.as_bytes());
    value
}

/// A row's count and text; `None` if it does not read as one.
fn decode(value: &[u8]) -> Option<(u64, &str)> {
    let (count, text) = value.split_first_chunk::<8>()?;
    Some((u64::from_le_bytes(*count), std::str::from_utf8(text).ok()?))
}

/// Reads the table into `texts`, for the rows about to be decoded.
pub(crate) fn load(
    table: &impl ReadableTable<u64, &'static [u8]>,
    texts: &mut Texts,
) -> Result<(), StoreError> {
    for row in table.iter().map_err(super::tables::io)? {
        let (key, value) = row.map_err(super::tables::io)?;
        match decode(value.value()) {
            // The key is the text's hash: a text that does not hash to it
            // was damaged on disk, and is not served.
            Some((count, text)) if key_of(text) == key.value() => {
                texts.store(key.value(), text, count);
            }
            // Rows referring to it load without it, and say so.
            _ => warn!(
                key = key.value(),
                "a stored command line is damaged (unreadable, or not what its key says); left as it is, not served"
            ),
        }
    }
    Ok(())
}

/// Stores the texts that rows just quarantined name (`named`: each key,
/// with its text if the row's chunk still had it), each counted by the
/// rows of the whole quarantine that refer to it, as a load would count
/// them. A text its chunk lost counts only if another row kept it; a text
/// whose key holds another is not stored.
pub(crate) fn keep_for_quarantine(
    table: &mut Table<'_, u64, &'static [u8]>,
    quarantine: &impl ReadableTable<&'static [u8], &'static [u8]>,
    named: &[(u64, Option<Arc<str>>)],
) -> Result<(), StoreError> {
    let mut tally: HashMap<u64, (Option<Arc<str>>, u64)> = HashMap::new();
    for (key, text) in named {
        let entry = tally.entry(*key).or_default();
        if entry.0.is_none() {
            entry.0.clone_from(text);
        }
    }
    for row in quarantine.iter().map_err(super::tables::io)? {
        let (_, value) = row.map_err(super::tables::io)?;
        for key in record::references_kept(value.value()).into_iter().flatten() {
            if let Some((_, count)) = tally.get_mut(&key) {
                *count += 1;
            }
        }
    }
    for (key, (text, count)) in tally {
        let stored = table
            .get(key)
            .map_err(super::tables::io)?
            .map(|value| decode(value.value()).map(|(n, t)| (n, t.to_owned())));
        let text = match (stored, text) {
            (Some(Some((stored, stored_text))), text) => {
                if text.is_some_and(|text| *text != *stored_text) || stored == count {
                    continue;
                }
                stored_text
            }
            (None, Some(text)) if key_of(&text) == key => text.to_string(),
            // Absent with no text to store, or a row that does not read
            // (damaged: left as it is).
            _ => continue,
        };
        table
            .insert(key, encode(count, &text).as_slice())
            .map_err(super::tables::io)?;
    }
    Ok(())
}

/// Puts right the counts a load found wrong in `texts` (after it decoded
/// every row): a count that differs is rewritten, a text no row refers to
/// deleted. Returns how many rows it changed. Nothing is wrong unless a
/// row was damaged (and quarantined) or an earlier build miscounted.
pub(crate) fn recount(
    table: &mut Table<'_, u64, &'static [u8]>,
    texts: &Texts,
) -> Result<usize, StoreError> {
    let mut changed = 0;
    for (key, text, used) in texts.miscounted() {
        if used == 0 {
            table.remove(key).map_err(super::tables::io)?;
        } else {
            table
                .insert(key, encode(used, text).as_slice())
                .map_err(super::tables::io)?;
        }
        changed += 1;
    }
    Ok(changed)
}

/// What a load does to the table as the earlier release's rows move into
/// chunks: the references they give back, counted per key and written
/// once at the end.
#[derive(Default)]
pub(crate) struct Plan {
    planned: Vec<Planned>,
    /// Where each key is in `planned`. SipHash: keys are hashes of texts
    /// that clients choose.
    by_key: HashMap<u64, usize>,
}

struct Planned {
    key: u64,
    text: Arc<str>,
    /// The count in the table before this load; `None` if absent.
    stored: Option<u64>,
    delta: i64,
}

impl Plan {
    /// Adds a key to the plan; returns where it went.
    fn push(&mut self, key: u64, text: Arc<str>, stored: Option<u64>, delta: i64) -> usize {
        let at = self.planned.len();
        self.planned.push(Planned {
            key,
            text,
            stored,
            delta,
        });
        self.by_key.insert(key, at);
        at
    }

    /// A row that referred to `key` moved into a chunk.
    pub fn release(
        &mut self,
        table: &Table<'_, u64, &'static [u8]>,
        key: u64,
    ) -> Result<(), StoreError> {
        if !self.count(table, key, -1)? {
            // Miscounted: the next load recounts.
            warn!(key, "a row referred to a text that is not stored");
        }
        Ok(())
    }

    /// Adds `delta` to the count of the text under `key`; `false` if no
    /// text is stored or planned under it.
    fn count(
        &mut self,
        table: &Table<'_, u64, &'static [u8]>,
        key: u64,
        delta: i64,
    ) -> Result<bool, StoreError> {
        if let Some(&at) = self.by_key.get(&key) {
            self.planned[at].delta += delta;
            return Ok(true);
        }
        let stored = table.get(key).map_err(super::tables::io)?;
        Ok(
            match stored.as_ref().and_then(|value| decode(value.value())) {
                Some((count, text)) => {
                    self.push(key, Arc::from(text), Some(count), delta);
                    true
                }
                None => false,
            },
        )
    }

    /// Writes each changed count; a text no longer referred to is deleted.
    pub fn apply(self, table: &mut Table<'_, u64, &'static [u8]>) -> Result<(), StoreError> {
        for planned in self.planned {
            let key = planned.key;
            if planned.delta == 0 {
                continue;
            }
            let before = planned.stored.unwrap_or(0);
            let count = i128::from(before) + i128::from(planned.delta);
            match u64::try_from(count) {
                Ok(0) => {
                    if planned.stored.is_some() {
                        table.remove(key).map_err(super::tables::io)?;
                    }
                }
                Ok(count) => {
                    table
                        .insert(key, encode(count, &planned.text).as_slice())
                        .map_err(super::tables::io)?;
                }
                // Rows gave back more than the count held: left as it is
                // (a row may still refer to it) for the next load to
                // recount.
                Err(_) => warn!(
                    key,
                    before,
                    delta = planned.delta,
                    "a stored text's count went below zero"
                ),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record;
    use crate::store::fixtures::{PARENT, held, remove};
    use crate::store::tables::{BASE, QUARANTINE, RUNS, TASKS};
    use crate::store::{Change, MIN_LOG_SIZE, Store, StoreOptions};
    use crate::tasks::Task;
    use crate::time::Timestamp;
    use redb::{Database, ReadableDatabase, ReadableTableMetadata};
    use std::path::Path;

    const OTHER: &str = "python3 -m worker --queue nightly --retries 3";

    fn options() -> StoreOptions {
        StoreOptions {
            log_size: MIN_LOG_SIZE,
            background: false,
            ..StoreOptions::default()
        }
    }

    /// `task` with its holder's parent command line lost.
    fn without_parent(task: Task) -> Task {
        let mut task = task;
        if let Some(holder) = task.holder.as_mut() {
            holder.parent_command = None;
        }
        task
    }

    /// A version-5 row of the per-name table, its command lines of
    /// [`SHARE_TEXT_AT`] bytes or more written as references.
    fn legacy_row(task: &Task) -> Vec<u8> {
        let mut row = Vec::new();
        record::encode_into(task, &mut row, |text| {
            (text.len() >= SHARE_TEXT_AT).then(|| key_of(text))
        });
        row
    }

    /// A database as the version before chunks left it: `tasks` as rows of
    /// the per-name table, and `texts` (key, count, text) in the texts
    /// table.
    fn legacy(path: &Path, tasks: &[Task], texts: &[(u64, u64, &str)]) {
        drop(Store::open(path, &options()).unwrap());
        let db = Database::open(path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut rows = txn.open_table(TASKS).unwrap();
            for task in tasks {
                let row = legacy_row(task);
                rows.insert(task.name.as_bytes(), row.as_slice()).unwrap();
            }
            let mut table = txn.open_table(TEXTS).unwrap();
            for &(key, count, text) in texts {
                table.insert(key, encode(count, text).as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
    }

    /// A texts row as read back: key, count, text.
    type TextRow = (u64, u64, String);

    /// The texts table, read from the closed database.
    fn texts_table(path: &Path) -> Vec<TextRow> {
        let db = Database::open(path).unwrap();
        let read = db.begin_read().unwrap();
        let Ok(texts) = read.open_table(TEXTS) else {
            return Vec::new();
        };
        texts
            .iter()
            .unwrap()
            .map(|row| {
                let (key, value) = row.unwrap();
                let (count, text) = decode(value.value()).unwrap();
                (key.value(), count, text.to_owned())
            })
            .collect()
    }

    /// Loads the store at `path`, commits `changes`, checkpoints, and
    /// returns what the load found.
    fn loaded(path: &Path, changes: &[Change]) -> crate::store::Loaded {
        let mut store = Store::open(path, &options()).unwrap();
        let loaded = store.load().unwrap();
        store.commit(changes).unwrap();
        store.checkpoint_now().unwrap();
        loaded
    }

    #[test]
    fn rows_of_the_per_name_table_move_into_chunks_and_their_lines_with_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.redb");
        let tasks = [held("a", PARENT), held("b", PARENT), held("c", OTHER)];
        legacy(
            &path,
            &tasks,
            &[(key_of(PARENT), 2, PARENT), (key_of(OTHER), 1, OTHER)],
        );
        let first = loaded(&path, &[]);
        assert_eq!(first.tasks, tasks);
        assert!(first.quarantined.is_empty());
        assert_eq!((first.recounted, first.missing_texts), (0, 0));
        // The per-name table is gone; no row refers to the texts table.
        assert!(texts_table(&path).is_empty());
        {
            let db = Database::open(&path).unwrap();
            let read = db.begin_read().unwrap();
            assert!(read.open_table(TASKS).is_err(), "deleted");
            assert_eq!(
                read.open_table(BASE).unwrap().len().unwrap(),
                1,
                "one chunk"
            );
            assert!(read.open_table(RUNS).is_err(), "none");
        }
        // Read back from the chunk, the tasks of one line share one copy.
        let again = loaded(&path, &[remove("b")]);
        assert_eq!(again.tasks, tasks);
        let holders: Vec<_> = again
            .tasks
            .iter()
            .map(|t| t.holder.as_ref().unwrap())
            .collect();
        assert!(holders[0].shares_texts_with(holders[1]));
        assert_eq!(
            loaded(&path, &[]).tasks,
            [held("a", PARENT), held("c", OTHER)]
        );
    }

    #[test]
    fn a_damaged_stored_line_is_not_served_and_its_tasks_load_without_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.redb");
        let tasks = [held("a", PARENT), held("b", PARENT)];
        // One flipped bit in the text: it no longer hashes to its key.
        let damaged = PARENT.replacen("sleep", "sleeq", 1);
        legacy(&path, &tasks, &[(key_of(PARENT), 2, &damaged)]);
        let first = loaded(&path, &[]);
        assert_eq!(first.tasks, tasks.clone().map(without_parent));
        assert!(first.quarantined.is_empty());
        assert_eq!((first.missing_texts, first.recounted), (2, 0));
        // Left as it is, for whoever inspects the file.
        assert_eq!(texts_table(&path), vec![(key_of(PARENT), 2, damaged)]);
        let again = loaded(&path, &[]);
        assert_eq!(again.tasks, tasks.map(without_parent));
        assert_eq!((again.missing_texts, again.recounted), (0, 0));
    }

    #[test]
    fn a_load_puts_wrong_counts_right_and_serves_a_row_whose_line_is_gone_without_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.redb");
        let tasks = [held("a", PARENT), held("b", PARENT), held("c", OTHER)];
        // PARENT's count is wrong, OTHER is missing, one text no row names.
        let unused = "a line no row refers to any more, at all";
        legacy(
            &path,
            &tasks,
            &[(key_of(PARENT), 7, PARENT), (key_of(unused), 1, unused)],
        );
        let first = loaded(&path, &[]);
        assert_eq!(
            first.tasks,
            vec![
                held("a", PARENT),
                held("b", PARENT),
                without_parent(held("c", OTHER))
            ]
        );
        assert!(first.quarantined.is_empty());
        assert_eq!((first.recounted, first.missing_texts), (2, 1));
        assert!(texts_table(&path).is_empty());
    }

    #[test]
    fn a_quarantined_row_keeps_the_line_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.redb");
        // A row that refers to the line, checksummed, but starting after
        // it expires: it will not load.
        let backwards = Task {
            started_at: Timestamp::from_nanos(10),
            expires_at: Timestamp::from_nanos(5),
            ..held("b", PARENT)
        };
        legacy(
            &path,
            &[held("a", PARENT), backwards],
            &[(key_of(PARENT), 2, PARENT)],
        );
        // Quarantined on this load and still there on the next; "a" goes,
        // and the line stays for the quarantined row.
        let first = loaded(&path, &[remove("a")]);
        assert_eq!(first.tasks, [held("a", PARENT)]);
        assert_eq!(first.quarantined.len(), 1);
        let again = loaded(&path, &[]);
        assert!(again.tasks.is_empty());
        assert_eq!((again.quarantined.len(), again.recounted), (0, 0));
        assert_eq!(
            texts_table(&path),
            vec![(key_of(PARENT), 1, PARENT.to_owned())]
        );
    }

    #[test]
    fn a_chunk_row_that_fails_its_checksum_keeps_the_line_it_names_in_quarantine() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.redb");
        let mut store = Store::open(&path, &options()).unwrap();
        store.load().unwrap();
        let put = |task: Task| Change::Put {
            task,
            created: true,
        };
        store
            .commit(&[put(held("a", PARENT)), put(held("b", OTHER))])
            .unwrap();
        store.checkpoint_now().unwrap();
        drop(store);
        // A flipped bit in a's record, inside its run's chunk.
        {
            let db = Database::open(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut runs = txn.open_table(RUNS).unwrap();
                let (key, mut chunk) = {
                    let (key, value) = runs.first().unwrap().unwrap();
                    (key.value(), value.value().to_vec())
                };
                let at = chunk.windows(3).position(|w| w == [1, 0, b'a']).unwrap();
                chunk[at + 3 + 4 + 5] ^= 0x40;
                runs.insert(key, chunk.as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        let first = loaded(&path, &[]);
        assert_eq!(first.tasks, [held("b", OTHER)]);
        // The chunk, kept whole, and a's record.
        let keys: Vec<&str> = first
            .quarantined
            .iter()
            .map(|(key, _)| key.as_str())
            .collect();
        assert_eq!(keys, ["~tasks.runs/1.0", "a"]);
        for _ in 0..2 {
            let again = loaded(&path, &[]);
            assert_eq!(again.tasks, [held("b", OTHER)]);
            assert_eq!((again.quarantined.len(), again.recounted), (0, 0));
        }
        assert_eq!(
            texts_table(&path),
            vec![(key_of(PARENT), 1, PARENT.to_owned())]
        );
        let db = Database::open(&path).unwrap();
        let read = db.begin_read().unwrap();
        let quarantine = read.open_table(QUARANTINE).unwrap();
        let row = quarantine.get(b"a".as_slice()).unwrap().unwrap();
        assert_eq!(
            record::references_kept(row.value()),
            [None, Some(key_of(PARENT))]
        );
    }

    #[test]
    fn the_key_is_fnv_1a() {
        // The published FNV-1a 64 test vectors: a build that hashed
        // otherwise would not find the texts stored before it.
        assert_eq!(key_of(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(key_of("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(key_of("foobar"), 0x8594_4171_f739_67e8);
    }
}
