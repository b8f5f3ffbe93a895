//! The task tables of a closed database, read and damaged as a test needs:
//! what the store holds after a checkpoint, without decoding it the way a
//! load would.

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};

use crate::store::chunk::{Chunk, Read, Row, Writer};
use crate::store::tables::{BASE, RUNS, read_rows};

/// The task rows in the tables (the newest of each name, as a load merges
/// them): each name and its record's bytes, in name order.
///
/// # Panics
/// If the database cannot be read: a test's failure.
pub fn task_rows(db: &Database) -> Vec<(Vec<u8>, Vec<u8>)> {
    let txn = db.begin_read().expect("a read transaction");
    read_rows(&txn).expect("the task tables read")
}

/// Changes the bytes of `name`'s newest record in place with `damage`
/// (which must keep its length), leaving its chunk's checksum as it was:
/// a bit flipped on disk. Returns the record's bytes as damaged.
///
/// # Panics
/// If no chunk holds a record of `name`, or the database cannot be written.
pub fn damage_record(db: &Database, name: &str, damage: impl FnOnce(&mut [u8])) -> Vec<u8> {
    let txn = db.begin_write().expect("a write transaction");
    let damaged;
    {
        let mut runs = txn.open_table(RUNS).expect("the runs");
        let mut base = txn.open_table(BASE).expect("the base");
        // Newest first: the runs from the last, then the base.
        let mut in_run = None;
        for row in runs.iter().expect("runs read").rev() {
            let (key, chunk) = row.expect("a run's chunk");
            if let Some(at) = record_at(chunk.value(), name) {
                in_run = Some((key.value(), chunk.value().to_vec(), at));
                break;
            }
        }
        let mut in_base = None;
        if in_run.is_none() {
            for row in base.iter().expect("base read") {
                let (key, chunk) = row.expect("a base chunk");
                if let Some(at) = record_at(chunk.value(), name) {
                    in_base = Some((key.value(), chunk.value().to_vec(), at));
                    break;
                }
            }
        }
        let damage_at = |chunk: &mut Vec<u8>, at: usize| {
            let len = u32::from_le_bytes(chunk[at - 4..at].try_into().unwrap()) as usize;
            damage(&mut chunk[at..at + len]);
            chunk[at..at + len].to_vec()
        };
        if let Some((key, mut chunk, at)) = in_run {
            damaged = damage_at(&mut chunk, at);
            runs.insert(key, chunk.as_slice()).expect("written back");
        } else if let Some((key, mut chunk, at)) = in_base {
            damaged = damage_at(&mut chunk, at);
            base.insert(key, chunk.as_slice()).expect("written back");
        } else {
            panic!("no record of {name}");
        }
    }
    txn.commit().expect("committed");
    damaged
}

/// Where `name`'s record starts in `chunk`, if it holds one.
fn record_at(chunk: &[u8], name: &str) -> Option<usize> {
    let opened = Chunk::open(chunk)?;
    opened.rows().find_map(|read| match read {
        Read::Row(Row {
            name: found,
            value: Some(value),
        }) if found == name.as_bytes() => Some(value.as_ptr() as usize - chunk.as_ptr() as usize),
        _ => None,
    })
}

/// Writes one row, `value` under `key` (whatever their bytes), as a run
/// newer than any: what a checkpoint would have written had it held those
/// bytes. A load decides it as it does any row.
///
/// # Panics
/// If the database cannot be written.
pub fn write_raw_run(db: &Database, key: &[u8], value: &[u8]) {
    let mut writer = Writer::default();
    writer.put_raw(key, value);
    let chunk = writer.seal();
    let txn = db.begin_write().expect("a write transaction");
    {
        let mut runs = txn.open_table(RUNS).expect("the runs");
        let run = runs
            .last()
            .expect("runs read")
            .map_or(1, |(key, _)| key.value().0 + 1);
        runs.insert((run, 0), chunk.as_slice()).expect("written");
    }
    txn.commit().expect("committed");
}

/// Changes chunk `pick` (modulo their number) of the base and the runs, in
/// that order, with `damage`, which may also change its length. Nothing if
/// there is none.
///
/// # Panics
/// If the database cannot be written.
pub fn damage_chunk(db: &Database, pick: u8, damage: impl FnOnce(&mut Vec<u8>)) {
    let txn = db.begin_write().expect("a write transaction");
    {
        let mut base = txn.open_table(BASE).expect("the base");
        let mut runs = txn.open_table(RUNS).expect("the runs");
        let in_base = base.len().expect("base read");
        let all = in_base + runs.len().expect("runs read");
        if all > 0 {
            let pick = u64::from(pick) % all;
            if pick < in_base {
                let (key, mut chunk) = {
                    let (key, value) = base
                        .iter()
                        .expect("base read")
                        .nth(pick as usize)
                        .unwrap()
                        .unwrap();
                    (key.value(), value.value().to_vec())
                };
                damage(&mut chunk);
                base.insert(key, chunk.as_slice()).expect("written back");
            } else {
                let (key, mut chunk) = {
                    let (key, value) = runs
                        .iter()
                        .expect("runs read")
                        .nth((pick - in_base) as usize)
                        .unwrap()
                        .unwrap();
                    (key.value(), value.value().to_vec())
                };
                damage(&mut chunk);
                runs.insert(key, chunk.as_slice()).expect("written back");
            }
        }
    }
    txn.commit().expect("committed");
}
