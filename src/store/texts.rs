//! Holder command lines stored once in the database, however many rows
//! carry them: the `texts` table and what a checkpoint does to it.
//!
//! An agent's tasks all carry its parent's command line (up to
//! [`MAX_PARENT_COMMAND`](crate::process::MAX_PARENT_COMMAND), 256 bytes).
//! Written into every row it was most of a row's ~300 bytes, and the
//! checkpoint thread's B-tree work (pages read back and written out) grows
//! with the bytes: with the command line taken out of the rows, the
//! thread's CPU per refresh fell from 3.7-4.1 to 2.3 µs and per create
//! from 2.4-2.7 to 1.7-1.9 (`cargo bench --bench latency`, 64 clients).
//!
//! A row of version 5 ([`record`]) may name a text by its key here instead
//! of holding it. Each value is the number of rows that refer to the text
//! (`u64`, little-endian) and the text's UTF-8 bytes. A checkpoint counts
//! the references its rows take and give back and writes each changed
//! count once, in the same transaction as the rows, deleting a text no row
//! refers to; a load counts the references again (a quarantined row's too,
//! so that it keeps the line it names) and puts right any count that
//! differs ([`recount`]). A key is [`key_of`] the text, so a load checks
//! each stored text against its key: one that does not hash to it was
//! damaged, is left as it is and not served, and the tasks that name it
//! load without it (`Loaded::missing_texts`). A text whose key is already
//! another text's stays in its rows, so a collision costs bytes, never a
//! wrong text.

use std::collections::HashMap;
use std::sync::Arc;

use redb::{ReadableTable, Table, TableDefinition};
use tracing::warn;

use super::StoreError;
use crate::ids::IdMap;
use crate::record::{self, Texts};
use crate::tasks::Task;

pub(crate) const TEXTS: TableDefinition<u64, &[u8]> = TableDefinition::new("texts");

/// Shortest command line stored once rather than in its rows: a reference
/// takes 10 bytes and a count to keep, so shorter texts (a process's
/// `comm`, at most 15 bytes, is always one) stay where they are.
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

/// What one checkpoint does to the table: the references its rows take
/// and give back, counted per key and written once at the end.
#[derive(Default)]
pub(crate) struct Plan {
    planned: Vec<Planned>,
    /// Where each key is in `planned`. SipHash: keys are hashes of texts
    /// that clients choose.
    by_key: HashMap<u64, usize>,
    /// Where the text seen so far went in `planned` (`None`: it stays in
    /// its rows), by the address and length of its shared copy: the tasks
    /// of one connection share one `Arc`, so most rows find theirs here by
    /// one cheap hash of a number of ours, without hashing or comparing
    /// the text. The pending rows the checkpoint writes keep every such
    /// copy alive while the plan lives.
    seen: IdMap<(usize, usize), Option<usize>>,
}

struct Planned {
    key: u64,
    text: Arc<str>,
    /// The count in the table before this checkpoint; `None` if absent.
    stored: Option<u64>,
    delta: i64,
}

impl Plan {
    /// Encodes `task`'s row into `value`, each of its holder's command
    /// lines that is shared as a reference (one more to it).
    pub fn encode_row(
        &mut self,
        table: &Table<'_, u64, &'static [u8]>,
        task: &Task,
        value: &mut Vec<u8>,
    ) -> Result<(), StoreError> {
        let mut keys: [Option<(&Arc<str>, u64)>; 2] = [None; 2];
        if let Some(holder) = &task.holder {
            let texts = [&holder.command, &holder.parent_command];
            for (slot, text) in keys.iter_mut().zip(texts) {
                if let Some(text) = text {
                    *slot = self.refer(table, text)?.map(|key| (text, key));
                }
            }
        }
        record::encode_into(task, value, |text| {
            keys.iter()
                .flatten()
                .find(|(shared, _)| Arc::ptr_eq(shared, text))
                .map(|&(_, key)| key)
        });
        Ok(())
    }

    /// A row stored under `name` as `old` was replaced or removed: the
    /// references it held are given back.
    pub fn release_row(
        &mut self,
        table: &Table<'_, u64, &'static [u8]>,
        name: &[u8],
        old: &[u8],
    ) -> Result<(), StoreError> {
        for key in record::references(name, old).into_iter().flatten() {
            self.release(table, key)?;
        }
        Ok(())
    }

    /// The key `text` is written under in a row (one more reference to
    /// it), or `None` if it stays in the row: too short to share, or its
    /// key holds another text.
    fn refer(
        &mut self,
        table: &Table<'_, u64, &'static [u8]>,
        text: &Arc<str>,
    ) -> Result<Option<u64>, StoreError> {
        if text.len() < SHARE_TEXT_AT {
            return Ok(None);
        }
        let address = (Arc::as_ptr(text).cast::<u8>() as usize, text.len());
        let at = match self.seen.get(&address) {
            Some(&at) => at,
            None => {
                let at = self.plan_for(table, text)?;
                self.seen.insert(address, at);
                at
            }
        };
        Ok(at.map(|at| {
            let planned = &mut self.planned[at];
            planned.delta += 1;
            planned.key
        }))
    }

    /// Where in `planned` a text not seen by address goes; `None` if its
    /// key holds another text.
    fn plan_for(
        &mut self,
        table: &Table<'_, u64, &'static [u8]>,
        text: &Arc<str>,
    ) -> Result<Option<usize>, StoreError> {
        let key = key_of(text);
        if let Some(&at) = self.by_key.get(&key) {
            return Ok((*self.planned[at].text == **text).then_some(at));
        }
        let stored = table.get(key).map_err(super::tables::io)?;
        let stored = match stored.as_ref().map(|value| decode(value.value())) {
            None => None,
            Some(Some((count, stored))) if stored == &**text => Some(count),
            // Another text under this key, or one that does not read.
            Some(_) => return Ok(None),
        };
        Ok(Some(self.push(key, Arc::clone(text), stored, 0)))
    }

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

    /// A row that referred to `key` was replaced or removed.
    fn release(
        &mut self,
        table: &Table<'_, u64, &'static [u8]>,
        key: u64,
    ) -> Result<(), StoreError> {
        if let Some(&at) = self.by_key.get(&key) {
            self.planned[at].delta -= 1;
            return Ok(());
        }
        let stored = table.get(key).map_err(super::tables::io)?;
        match stored.as_ref().and_then(|value| decode(value.value())) {
            Some((count, text)) => {
                self.push(key, Arc::from(text), Some(count), -1);
            }
            // Miscounted: the next load recounts.
            None => warn!(key, "a row referred to a text that is not stored"),
        }
        Ok(())
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
    use crate::store::tables::TASKS;
    use crate::store::{Change, MIN_LOG_SIZE, Store, StoreOptions};
    use crate::tasks::{Holder, Removal, TaskName};
    use crate::time::Timestamp;
    use redb::{Database, ReadableDatabase};
    use std::path::Path;

    const PARENT: &str = "bash -c while sleep 30; do sprite-env tasks refresh build; done";

    fn options() -> StoreOptions {
        StoreOptions {
            log_size: MIN_LOG_SIZE,
            background: false,
            ..StoreOptions::default()
        }
    }

    /// A task held by `curl` under `parent`, each text its own copy (as
    /// tasks of different requests have).
    fn held(name: &str, parent: &str) -> Task {
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

    fn put(task: Task) -> Change {
        Change::Put {
            task,
            created: true,
        }
    }

    fn remove(name: &str) -> Change {
        Change::Remove {
            name: TaskName::parse(name).unwrap(),
            cause: Removal::Deleted,
        }
    }

    /// Commits `changes` and checkpoints them.
    fn checkpointed(path: &Path, changes: &[Change]) -> Vec<Task> {
        let mut store = Store::open(path, &options()).unwrap();
        let loaded = store.load().unwrap();
        store.commit(changes).unwrap();
        store.checkpoint_now().unwrap();
        loaded.tasks
    }

    /// A texts row as read back: key, count, text.
    type TextRow = (u64, u64, String);

    /// The texts table and each task row's name and length, read from the
    /// closed database.
    fn tables(path: &Path) -> (Vec<TextRow>, Vec<(String, usize)>) {
        let db = Database::open(path).unwrap();
        let read = db.begin_read().unwrap();
        let texts = read.open_table(TEXTS).unwrap();
        let texts = texts
            .iter()
            .unwrap()
            .map(|row| {
                let (key, value) = row.unwrap();
                let (count, text) = decode(value.value()).unwrap();
                (key.value(), count, text.to_owned())
            })
            .collect();
        let tasks = read.open_table(TASKS).unwrap();
        let rows = tasks
            .iter()
            .unwrap()
            .map(|row| {
                let (key, value) = row.unwrap();
                let name = String::from_utf8(key.value().to_vec()).unwrap();
                (name, value.value().len())
            })
            .collect();
        (texts, rows)
    }

    /// Rewrites the texts table's row under `key`.
    fn forge(path: &Path, key: u64, count: u64, text: &str) {
        let db = Database::open(path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(TEXTS)
            .unwrap()
            .insert(key, encode(count, text).as_slice())
            .unwrap();
        txn.commit().unwrap();
    }

    #[test]
    fn a_long_command_line_is_stored_once_and_counted_until_no_row_refers_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.redb");
        let names = ["a", "b", "c"];
        checkpointed(&path, &names.map(|name| put(held(name, PARENT))));
        let (texts, rows) = tables(&path);
        assert_eq!(texts, vec![(key_of(PARENT), 3, PARENT.to_owned())]);
        let inline = record::encode(&held("a", PARENT)).len();
        for (_, len) in &rows {
            assert_eq!(*len, inline - PARENT.len() + 8, "{rows:?}");
        }

        // Loaded back whole, the three share one copy; a refresh of one
        // (its row replaced) keeps the count, a removal gives one back.
        let loaded = checkpointed(&path, &[put(held("a", PARENT)), remove("b")]);
        assert_eq!(loaded, names.map(|name| held(name, PARENT)));
        let holders: Vec<_> = loaded.iter().map(|t| t.holder.as_ref().unwrap()).collect();
        assert!(holders[0].shares_texts_with(holders[1]));
        assert!(holders[1].shares_texts_with(holders[2]));
        assert_eq!(
            tables(&path).0,
            vec![(key_of(PARENT), 2, PARENT.to_owned())]
        );

        // Another holder's line beside it; then the last rows of the first
        // go and its text with them.
        let other = "node /srv/agent/index.js --queue builds --concurrency 4";
        checkpointed(&path, &[put(held("d", other)), remove("a")]);
        let mut expected = vec![
            (key_of(PARENT), 1, PARENT.to_owned()),
            (key_of(other), 1, other.to_owned()),
        ];
        expected.sort();
        assert_eq!(tables(&path).0, expected);
        let loaded = checkpointed(&path, &[remove("c")]);
        assert_eq!(loaded, vec![held("c", PARENT), held("d", other)]);
        assert_eq!(tables(&path).0, vec![(key_of(other), 1, other.to_owned())]);

        // A short line stays in its row.
        checkpointed(&path, &[put(held("e", "sh ./short.sh"))]);
        assert_eq!(tables(&path).0.len(), 1);
        let mut store = Store::open(&path, &options()).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(
            loaded.tasks,
            vec![held("d", other), held("e", "sh ./short.sh")]
        );
        assert!(loaded.quarantined.is_empty());
    }

    #[test]
    fn a_text_whose_key_holds_another_stays_in_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.redb");
        drop(Store::open(&path, &options()).unwrap());
        // Another text under the key PARENT hashes to: what a collision
        // looks like to a checkpoint (a load serves no such row).
        let impostor = "a different text under the same key as PARENT";
        forge(&path, key_of(PARENT), 1, impostor);
        checkpointed(&path, &[put(held("a", PARENT)), put(held("b", PARENT))]);
        let (texts, rows) = tables(&path);
        assert_eq!(texts, vec![(key_of(PARENT), 1, impostor.to_owned())]);
        let inline = record::encode(&held("a", PARENT)).len();
        assert_eq!(rows, [("a".to_owned(), inline), ("b".to_owned(), inline)]);
        let loaded = checkpointed(&path, &[]);
        assert_eq!(loaded, vec![held("a", PARENT), held("b", PARENT)]);
    }

    /// `task` with its holder's parent command line lost.
    fn without_parent(task: Task) -> Task {
        let mut task = task;
        if let Some(holder) = task.holder.as_mut() {
            holder.parent_command = None;
        }
        task
    }

    #[test]
    fn a_damaged_stored_line_is_not_served_and_its_tasks_load_without_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.redb");
        checkpointed(&path, &[put(held("a", PARENT)), put(held("b", PARENT))]);
        // One flipped bit in the text: it no longer hashes to its key.
        let damaged = PARENT.replacen("sleep", "sleeq", 1);
        forge(&path, key_of(PARENT), 2, &damaged);
        let mut store = Store::open(&path, &options()).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(
            loaded.tasks,
            vec![
                without_parent(held("a", PARENT)),
                without_parent(held("b", PARENT))
            ]
        );
        assert!(loaded.quarantined.is_empty());
        assert_eq!((loaded.missing_texts, loaded.recounted), (2, 0));
        drop(store);
        // Left as it is, for whoever inspects the file.
        assert_eq!(tables(&path).0, vec![(key_of(PARENT), 2, damaged)]);
    }

    #[test]
    fn a_load_puts_wrong_counts_right_and_serves_a_row_whose_line_is_gone_without_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.redb");
        let other = "python3 -m worker --queue nightly --retries 3";
        checkpointed(
            &path,
            &[
                put(held("a", PARENT)),
                put(held("b", PARENT)),
                put(held("c", other)),
            ],
        );
        forge(&path, key_of(PARENT), 7, PARENT);
        let unused = "a line no row refers to any more, at all";
        forge(&path, key_of(unused), 1, unused);
        {
            let db = Database::open(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(TEXTS)
                .unwrap()
                .remove(key_of(other))
                .unwrap();
            txn.commit().unwrap();
        }
        let mut store = Store::open(&path, &options()).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(
            loaded.tasks,
            vec![
                held("a", PARENT),
                held("b", PARENT),
                without_parent(held("c", other))
            ]
        );
        assert!(loaded.quarantined.is_empty());
        assert_eq!((loaded.recounted, loaded.missing_texts), (2, 1));
        drop(store);
        assert_eq!(
            tables(&path).0,
            vec![(key_of(PARENT), 2, PARENT.to_owned())]
        );
    }

    #[test]
    fn a_quarantined_row_keeps_the_line_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.redb");
        checkpointed(&path, &[put(held("a", PARENT))]);
        // A row that refers to the line, checksummed, but starting after
        // it expires: it will not load.
        let backwards = Task {
            started_at: Timestamp::from_nanos(10),
            expires_at: Timestamp::from_nanos(5),
            ..held("b", PARENT)
        };
        {
            let db = Database::open(&path).unwrap();
            let txn = db.begin_write().unwrap();
            let mut row = Vec::new();
            record::encode_into(&backwards, &mut row, |t| {
                (&**t == PARENT).then_some(key_of(PARENT))
            });
            txn.open_table(TASKS)
                .unwrap()
                .insert(b"b".as_slice(), row.as_slice())
                .unwrap();
            forge_in(&txn, key_of(PARENT), 2, PARENT);
            txn.commit().unwrap();
        }
        // Quarantined on this load and still there on the next; "a" goes,
        // and the line stays for the quarantined row.
        for changes in [vec![remove("a")], vec![]] {
            let mut store = Store::open(&path, &options()).unwrap();
            let loaded = store.load().unwrap();
            assert_eq!(loaded.recounted, 0, "{changes:?}");
            store.commit(&changes).unwrap();
            store.checkpoint_now().unwrap();
        }
        assert_eq!(
            tables(&path).0,
            vec![(key_of(PARENT), 1, PARENT.to_owned())]
        );
    }

    #[test]
    fn a_row_that_fails_its_checksum_keeps_the_line_it_names_in_quarantine() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.redb");
        checkpointed(&path, &[put(held("a", PARENT))]);
        {
            let db = Database::open(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut tasks = txn.open_table(TASKS).unwrap();
                let mut row = tasks
                    .get(b"a".as_slice())
                    .unwrap()
                    .unwrap()
                    .value()
                    .to_vec();
                row[3] ^= 0x40;
                tasks.insert(b"a".as_slice(), row.as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        for _ in 0..2 {
            let mut store = Store::open(&path, &options()).unwrap();
            let loaded = store.load().unwrap();
            assert!(loaded.tasks.is_empty());
            assert_eq!(loaded.recounted, 0);
        }
        assert_eq!(
            tables(&path).0,
            vec![(key_of(PARENT), 1, PARENT.to_owned())]
        );
    }

    /// Writes the texts table's row under `key` in `txn`.
    fn forge_in(txn: &redb::WriteTransaction, key: u64, count: u64, text: &str) {
        txn.open_table(TEXTS)
            .unwrap()
            .insert(key, encode(count, text).as_slice())
            .unwrap();
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
