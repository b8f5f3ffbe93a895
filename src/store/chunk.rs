//! Task rows packed into chunks: the form the `tasks.base` and `tasks.runs`
//! tables hold them in.
//!
//! A checkpoint used to insert or remove one redb row per changed task:
//! some 6,000 instructions of B-tree work each (callgrind), most of the
//! checkpoint thread's 8,000-13,000 per write, and the reason a durable
//! write cost more CPU than Redis's. Now a checkpoint writes its rows,
//! sorted by name, as one *run* of chunks of up to [`CHUNK_BYTES`], and
//! now and then a *compaction* merges the base and the runs into a new
//! base ([`tables`](super::tables)).
//!
//! A chunk, little-endian:
//!
//! ```text
//! version u8 (1) | rows u32 | texts_at u32
//! rows:  name_len u16, name, then either value_len u32 and a task record
//!        (version 5), or REMOVED (u32::MAX) and the CRC-32 of the name
//! texts: (at texts_at) key u64, len u16, the UTF-8 text; to the checksum
//! crc u32: CRC-32 of every byte before it
//! ```
//!
//! Rows ascend by name, within a chunk and from one chunk of a run or of
//! the base to the next. A record names a holder command line of
//! [`SHARE_TEXT_AT`] bytes or more by its key
//! ([`key_of`]) in its own chunk's texts, so that a chunk reads by itself:
//! an agent's tasks share one copy of its parent's command line per chunk.
//!
//! A chunk whose checksum fails is read as far as it goes: each record has
//! a checksum of its own and each removal the CRC of its name, each text
//! must hash to its key, and where the rows stop reading, or may have gone
//! on past where they seem to end, [`Rows`] says so ([`Read::Unframed`]),
//! so that a reader can tell which names the damage may have taken (the
//! store keeps the whole chunk in its quarantine).

use std::collections::HashMap;
use std::sync::Arc;

use super::texts::{SHARE_TEXT_AT, key_of};
use crate::ids::IdMap;
use crate::record;
use crate::tasks::Task;

/// Most bytes in a chunk (one row longer than that makes a chunk of its
/// own). Big enough that a 16k-row checkpoint is some 30 redb rows, not
/// 16k; small enough that a damaged chunk is a few hundred tasks to read
/// row by row.
/// redb stores a value this large alone in a leaf of a power-of-two size:
/// 64 KiB less [`PAGE_SLACK`] fills a 64 KiB leaf, where one byte more
/// took a 128 KiB one, half zeroes, cleared, checksummed and written.
pub const CHUNK_BYTES: usize = (64 << 10) - PAGE_SLACK;

/// What redb's leaf takes beside one value (its header, the entry's
/// offsets and key: some 40 bytes), with room to spare.
pub const PAGE_SLACK: usize = 256;

const VERSION: u8 = 1;
const HEADER_LEN: usize = 9;
const CRC_LEN: usize = 4;
/// A row's value length that marks a removal.
const REMOVED: u32 = u32::MAX;

/// One row as stored: a task's record, or its removal (`None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row<'a> {
    pub name: &'a [u8],
    pub value: Option<&'a [u8]>,
}

/// The CRC that marks a removal of `name`.
fn removal_crc(name: &[u8]) -> u32 {
    crc32fast::hash(name)
}

/// Builds chunks, one at a time.
#[derive(Default)]
pub struct Writer {
    /// The header's room, then the rows.
    buf: Vec<u8>,
    rows: u32,
    /// The chunk's texts, in the order first referred to.
    texts: Vec<(u64, Arc<str>)>,
    by_key: HashMap<u64, usize>,
    /// Keys of the texts already seen in this chunk by the address and
    /// length of their shared copy (`None`: it stays in its rows), so that
    /// rows of one holder hash its command line once a chunk.
    seen: IdMap<(usize, usize), Option<u64>>,
    /// Bytes the texts will take.
    texts_len: usize,
    value: Vec<u8>,
    /// Chunks sealed to make room, for [`Writer::take_sealed`].
    sealed: Vec<Vec<u8>>,
    /// The keys stored rows last brought, each with the address of the
    /// texts it came from (which live as long as the merge that writes
    /// this chunk), that this chunk holds as the same text.
    recent: [Option<(u64, usize)>; 2],
}

/// What a text takes in a chunk beside its bytes: its key and length.
const TEXT_OVERHEAD: usize = 8 + 2;

impl Writer {
    /// Whether the chunk being built holds no row.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The chunks sealed because the next row would not have fitted: to be
    /// stored, in order, before the one being built.
    pub fn take_sealed(&mut self) -> std::vec::Drain<'_, Vec<u8>> {
        self.sealed.drain(..)
    }

    /// Seals the chunk being built if a row of at most `bound` bytes (with
    /// the texts it may add) would take it past [`CHUNK_BYTES`].
    fn make_room(&mut self, bound: usize) {
        let len = self.buf.len().max(HEADER_LEN) + self.texts_len + CRC_LEN;
        if !self.is_empty() && len + bound > CHUNK_BYTES {
            let chunk = self.seal();
            self.sealed.push(chunk);
        }
    }

    /// Most bytes a row of `name` and a `value` of `value_len` takes, with
    /// `texts` it may add.
    fn bound(name: &[u8], value_len: usize, texts: impl Iterator<Item = usize>) -> usize {
        2 + name.len() + 4 + value_len + texts.map(|len| TEXT_OVERHEAD + len).sum::<usize>()
    }

    fn start_row(&mut self, name: &[u8]) {
        if self.buf.is_empty() {
            // Room for a whole chunk at once: grown by doubling, each
            // chunk of a compaction was copied some 16 times over (4 % of
            // a checkpoint's instructions under deletes, callgrind).
            self.buf.reserve(CHUNK_BYTES);
            self.buf.resize(HEADER_LEN, 0);
        }
        let len = u16::try_from(name.len()).expect("task names are short");
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf.extend_from_slice(name);
        self.rows += 1;
    }

    /// Appends `task`'s record.
    pub fn put_task(&mut self, task: &Task) {
        let shareable = task.holder.iter().flat_map(|holder| {
            [&holder.command, &holder.parent_command]
                .into_iter()
                .flatten()
                .map(|text| text.len())
                .filter(|&len| (SHARE_TEXT_AT..=record::MAX_TEXT_LEN).contains(&len))
        });
        let value_len = record::FIXED_LEN + record::details_len(task) + record::CRC_LEN;
        self.make_room(Self::bound(task.name.as_bytes(), value_len, shareable));
        let mut keys: [Option<(&Arc<str>, u64)>; 2] = [None; 2];
        if let Some(holder) = &task.holder {
            for (slot, text) in keys
                .iter_mut()
                .zip([&holder.command, &holder.parent_command])
            {
                if let Some(text) = text {
                    *slot = self.refer(text).map(|key| (text, key));
                }
            }
        }
        let mut value = std::mem::take(&mut self.value);
        record::encode_into(task, &mut value, |text| {
            keys.iter()
                .flatten()
                .find(|(shared, _)| Arc::ptr_eq(shared, text))
                .map(|&(_, key)| key)
        });
        self.put_value(task.name.as_bytes(), &value);
        self.value = value;
    }

    /// Appends the removal of `name`.
    pub fn put_removed(&mut self, name: &[u8]) {
        self.make_room(Self::bound(name, 4, std::iter::empty()));
        self.start_row(name);
        self.buf.extend_from_slice(&REMOVED.to_le_bytes());
        self.buf.extend_from_slice(&removal_crc(name).to_le_bytes());
    }

    /// Appends a stored row as it is, with the texts it names (`texts`:
    /// those of the chunk it came from). Returns `false`, appending
    /// nothing, if one of them is under a key this chunk already gives to
    /// another text, or is missing from `texts`: the caller writes that
    /// row's task instead.
    pub fn put_stored(&mut self, row: Row<'_>, texts: &HashMap<u64, Arc<str>>) -> bool {
        let Some(value) = row.value else {
            self.put_removed(row.name);
            return true;
        };
        let keys = record::references_kept(value);
        // Rows of one holder follow one another: when this row's keys are
        // those the last rows brought from the same chunk, they are here
        // already, as the same texts, and no map is looked up.
        let source = std::ptr::from_ref(texts) as usize;
        if keys
            .iter()
            .flatten()
            .all(|&key| self.recent.contains(&Some((key, source))))
        {
            self.make_room(Self::bound(row.name, value.len(), std::iter::empty()));
            if !self.is_empty() {
                self.put_value(row.name, value);
                return true;
            }
            // Sealed to make room: the texts go into the next chunk.
        }
        let new = keys
            .iter()
            .flatten()
            .filter(|key| !self.by_key.contains_key(key))
            .filter_map(|key| texts.get(key))
            .map(|text| text.len());
        self.make_room(Self::bound(row.name, value.len(), new));
        for key in keys.iter().flatten() {
            match (self.by_key.get(key), texts.get(key)) {
                (Some(&at), Some(text)) => {
                    let here = &self.texts[at].1;
                    if !Arc::ptr_eq(here, text) && **here != **text {
                        return false;
                    }
                    self.remember(*key, source);
                }
                (None, Some(text)) => {
                    self.add_text(*key, Arc::clone(text));
                    self.remember(*key, source);
                }
                // A text its own chunk lost: copied as it is, the row's
                // key could come to name a text this chunk takes later
                // (another one, were two to share a hash). The caller
                // writes its task instead, without that line.
                (_, None) => return false,
            }
        }
        self.put_value(row.name, value);
        true
    }

    /// Appends a row as given, naming no text of this chunk's: what a test
    /// writes behind the store's back.
    pub fn put_raw(&mut self, name: &[u8], value: &[u8]) {
        self.make_room(Self::bound(name, value.len(), std::iter::empty()));
        self.put_value(name, value);
    }

    fn put_value(&mut self, name: &[u8], value: &[u8]) {
        self.start_row(name);
        let len = u32::try_from(value.len()).expect("a record is far below 4 GiB");
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf.extend_from_slice(value);
    }

    /// Notes that `key`, from the texts at `source`, is here as the same
    /// text (the two most recent).
    fn remember(&mut self, key: u64, source: usize) {
        if !self.recent.contains(&Some((key, source))) {
            self.recent = [Some((key, source)), self.recent[0]];
        }
    }

    fn add_text(&mut self, key: u64, text: Arc<str>) {
        self.texts_len += TEXT_OVERHEAD + text.len();
        self.by_key.insert(key, self.texts.len());
        self.texts.push((key, text));
    }

    /// The key `text` is written under (added to the chunk's texts), or
    /// `None` if it stays in its row: too short, or its key is another
    /// text's.
    fn refer(&mut self, text: &Arc<str>) -> Option<u64> {
        // A text longer than a record keeps is cut in its row, as written
        // in place; only whole texts go into the chunk's.
        if text.len() < SHARE_TEXT_AT || text.len() > record::MAX_TEXT_LEN {
            return None;
        }
        let address = (Arc::as_ptr(text).cast::<u8>() as usize, text.len());
        if let Some(&key) = self.seen.get(&address) {
            return key;
        }
        let key = key_of(text);
        let key = match self.by_key.get(&key) {
            Some(&at) => (*self.texts[at].1 == **text).then_some(key),
            None => {
                self.add_text(key, Arc::clone(text));
                Some(key)
            }
        };
        self.seen.insert(address, key);
        key
    }

    /// Seals the chunk: its bytes, and the writer empty for the next one.
    pub fn seal(&mut self) -> Vec<u8> {
        if self.buf.is_empty() {
            self.buf.resize(HEADER_LEN, 0);
        }
        let texts_at = u32::try_from(self.buf.len()).expect("a chunk is far below 4 GiB");
        for (key, text) in &self.texts {
            self.buf.extend_from_slice(&key.to_le_bytes());
            let len = u16::try_from(text.len())
                .expect("a chunk's texts are at most MAX_TEXT_LEN or read with a u16 length");
            self.buf.extend_from_slice(&len.to_le_bytes());
            self.buf.extend_from_slice(text.as_bytes());
        }
        self.buf[0] = VERSION;
        self.buf[1..5].copy_from_slice(&self.rows.to_le_bytes());
        self.buf[5..9].copy_from_slice(&texts_at.to_le_bytes());
        let crc = crc32fast::hash(&self.buf);
        self.buf.extend_from_slice(&crc.to_le_bytes());
        self.rows = 0;
        self.texts_len = 0;
        self.recent = [None; 2];
        self.texts.clear();
        self.by_key.clear();
        self.seen.clear();
        std::mem::take(&mut self.buf)
    }
}

/// A stored chunk, opened for reading.
#[derive(Debug, Clone, Copy)]
pub struct Chunk<'a> {
    count: usize,
    rows: &'a [u8],
    texts: &'a [u8],
    /// The rows end where the chunk says (always, if it is intact).
    end_trusted: bool,
    /// Its checksum matches: every row and text is as written. If not,
    /// each row must pass its own check.
    pub intact: bool,
}

impl<'a> Chunk<'a> {
    /// Opens `bytes`; `None` if nothing of it can be read: too short for a
    /// header, or whole (its checksum passes) but of another version or
    /// inconsistent. A chunk whose checksum fails is opened for reading row
    /// by row: its rows end where two of the header's count, where it says
    /// the texts start, and the first text's check agree; failing that,
    /// they are read as far as they go and end in [`Read::Unframed`].
    pub fn open(bytes: &'a [u8]) -> Option<Chunk<'a>> {
        if bytes.len() < HEADER_LEN + CRC_LEN {
            return None;
        }
        let (body, crc) = bytes.split_at(bytes.len() - CRC_LEN);
        let intact = crc32fast::hash(body) == u32::from_le_bytes(crc.try_into().ok()?);
        let count = usize::try_from(u32::from_le_bytes(bytes[1..5].try_into().ok()?)).ok()?;
        let texts_at = usize::try_from(u32::from_le_bytes(bytes[5..9].try_into().ok()?)).ok()?;
        let texts_at = (HEADER_LEN..=body.len())
            .contains(&texts_at)
            .then_some(texts_at);
        let chunk = |end: usize, end_trusted| Chunk {
            count,
            rows: &body[HEADER_LEN..end],
            texts: &body[end..],
            intact,
            end_trusted,
        };
        if intact {
            return match texts_at {
                Some(at) if bytes[0] == VERSION => Some(chunk(at, true)),
                _ => None,
            };
        }
        // Where the texts start, if the rows frame exactly up to it and
        // either the count agrees or the first text there checks.
        let framed_to = |at: usize| frame(&body[HEADER_LEN..at], usize::MAX);
        if let Some(at) = texts_at
            && let Some((seen, end)) = framed_to(at)
            && end == at - HEADER_LEN
            && (seen == count || first_text_checks(&body[at..]))
        {
            return Some(chunk(at, true));
        }
        // After `count` rows, if they frame and a text that checks (or
        // nothing) follows.
        if let Some((seen, end)) = frame(&body[HEADER_LEN..], count) {
            let at = HEADER_LEN + end;
            if seen == count && (at == body.len() || first_text_checks(&body[at..])) {
                return Some(chunk(at, true));
            }
        }
        // Neither: as far as the rows read; what follows may be lost.
        Some(chunk(texts_at.unwrap_or(body.len()), false))
    }

    /// How many rows its header says it holds.
    pub fn row_count(&self) -> usize {
        self.count
    }

    /// The rows, in order.
    pub fn rows(&self) -> Rows<'a> {
        Rows {
            rest: self.rows,
            at: HEADER_LEN,
            intact: self.intact,
            end_trusted: self.end_trusted,
            done: false,
        }
    }

    /// The texts, each checked against its key; one that does not hash to
    /// it (or, in a damaged chunk, does not read) is left out, and the rows
    /// that name it load without it.
    pub fn texts(&self) -> impl Iterator<Item = (u64, &'a str)> + 'a {
        let mut rest = self.texts;
        std::iter::from_fn(move || {
            loop {
                let (key, after) = rest.split_first_chunk::<8>()?;
                let (len, after) = after.split_first_chunk::<2>()?;
                let len = usize::from(u16::from_le_bytes(*len));
                if after.len() < len {
                    rest = &[];
                    return None;
                }
                let (text, after) = after.split_at(len);
                rest = after;
                let key = u64::from_le_bytes(*key);
                match std::str::from_utf8(text) {
                    Ok(text) if key_of(text) == key => return Some((key, text)),
                    _ => continue,
                }
            }
        })
    }
}

/// Walks the framing of the rows in `bytes`, checking nothing else, for
/// at most `limit` rows: how many, and where they end; `None` if one does
/// not frame.
fn frame(bytes: &[u8], limit: usize) -> Option<(usize, usize)> {
    let (mut at, mut seen) = (0, 0);
    while seen < limit && at < bytes.len() {
        let rest = &bytes[at..];
        let (len, after) = rest.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_le_bytes(*len));
        let (value_len, _) = after.get(len..)?.split_first_chunk::<4>()?;
        let value_len = u32::from_le_bytes(*value_len);
        let value = if value_len == REMOVED {
            4
        } else {
            usize::try_from(value_len).ok()?
        };
        let used = (2 + len + 4).checked_add(value)?;
        if used > rest.len() {
            return None;
        }
        at += used;
        seen += 1;
    }
    Some((seen, at))
}

/// Whether `bytes` starts with a text that hashes to its key.
fn first_text_checks(bytes: &[u8]) -> bool {
    let Some((key, after)) = bytes.split_first_chunk::<8>() else {
        return false;
    };
    let Some((len, after)) = after.split_first_chunk::<2>() else {
        return false;
    };
    after
        .get(..usize::from(u16::from_le_bytes(*len)))
        .and_then(|text| std::str::from_utf8(text).ok())
        .is_some_and(|text| key_of(text) == u64::from_le_bytes(*key))
}

/// What a chunk's rows read as.
///
/// In a chunk that fails its checksum, [`Read::Row`] is a row as framed:
/// its record must pass its own check; and the rows end with
/// [`Read::Unframed`] unless they read to the end of the rows as framed and
/// as many as the header says, so that a reader can tell what may be lost.
#[derive(Debug, PartialEq, Eq)]
pub enum Read<'a> {
    Row(Row<'a>),
    /// A removal whose name does not match its CRC (a damaged chunk only):
    /// the name as read, and the row's bytes.
    BadRemoval {
        name: &'a [u8],
        row: &'a [u8],
    },
    /// The rows stop reading here: the rest of them, from this offset in
    /// the chunk, does not frame as rows.
    Unframed {
        at: usize,
        rest: &'a [u8],
    },
}

/// The rows of a [`Chunk`].
pub struct Rows<'a> {
    rest: &'a [u8],
    at: usize,
    intact: bool,
    end_trusted: bool,
    done: bool,
}

impl<'a> Iterator for Rows<'a> {
    type Item = Read<'a>;

    fn next(&mut self) -> Option<Read<'a>> {
        if self.done {
            return None;
        }
        if self.rest.is_empty() {
            self.done = true;
            return (!self.end_trusted).then_some(Read::Unframed {
                at: self.at,
                rest: self.rest,
            });
        }
        let whole = self.rest;
        let unframed = |rows: &mut Rows<'a>| {
            rows.rest = &[];
            rows.done = true;
            Some(Read::Unframed {
                at: rows.at,
                rest: whole,
            })
        };
        let Some((len, after)) = whole.split_first_chunk::<2>() else {
            return unframed(self);
        };
        let len = usize::from(u16::from_le_bytes(*len));
        let Some((value_len, after)) = after.get(len..).and_then(|a| a.split_first_chunk::<4>())
        else {
            return unframed(self);
        };
        let name = &whole[2..2 + len];
        let value_len = u32::from_le_bytes(*value_len);
        let (read, used) = if value_len == REMOVED {
            let Some((crc, _)) = after.split_first_chunk::<4>() else {
                return unframed(self);
            };
            let read = if self.intact || u32::from_le_bytes(*crc) == removal_crc(name) {
                Read::Row(Row { name, value: None })
            } else {
                Read::BadRemoval {
                    name,
                    row: &whole[..2 + len + 4 + 4],
                }
            };
            (read, 2 + len + 4 + 4)
        } else {
            let Some(value) = usize::try_from(value_len).ok().and_then(|n| after.get(..n)) else {
                return unframed(self);
            };
            let row = Row {
                name,
                value: Some(value),
            };
            (Read::Row(row), 2 + len + 4 + value.len())
        };
        self.rest = &whole[used..];
        self.at += used;
        Some(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Texts;
    use crate::store::fixtures::{PARENT, held};

    /// The tasks and removals a chunk reads as, decoded with its texts.
    fn read(bytes: &[u8]) -> Vec<Result<Task, String>> {
        let chunk = Chunk::open(bytes).expect("opens");
        let mut texts = Texts::default();
        texts.set_namespace(1);
        for (key, text) in chunk.texts() {
            texts.store(key, text, 0);
        }
        chunk
            .rows()
            .map(|read| match read {
                Read::Row(Row {
                    name,
                    value: Some(value),
                }) => record::decode(name, value, &mut texts).map_err(|e| e.to_string()),
                Read::Row(Row { name, value: None }) => {
                    Err(format!("removed {}", String::from_utf8_lossy(name)))
                }
                other => Err(format!("{other:?}")),
            })
            .collect()
    }

    #[test]
    fn rows_read_back_with_one_copy_of_a_shared_command_line() {
        let mut writer = Writer::default();
        let shared: Arc<str> = PARENT.into();
        let tasks: Vec<Task> = ["a", "b", "c"]
            .iter()
            .map(|name| {
                let mut task = held(name, PARENT);
                task.holder.as_mut().unwrap().parent_command = Some(Arc::clone(&shared));
                task
            })
            .collect();
        for task in &tasks {
            writer.put_task(task);
        }
        writer.put_removed(b"d");
        let bytes = writer.seal();
        assert_eq!(
            bytes
                .windows(PARENT.len())
                .filter(|w| *w == PARENT.as_bytes())
                .count(),
            1
        );
        let mut expected: Vec<Result<Task, String>> = tasks.into_iter().map(Ok).collect();
        expected.push(Err("removed d".into()));
        assert_eq!(read(&bytes), expected);
        assert!(writer.is_empty(), "sealing starts the next chunk");
        assert_eq!(
            read(&writer.seal()),
            vec![],
            "an empty chunk reads as no rows"
        );
    }

    #[test]
    fn a_stored_row_moves_to_another_chunk_with_its_text() {
        let mut first = Writer::default();
        first.put_task(&held("a", PARENT));
        let bytes = first.seal();
        let chunk = Chunk::open(&bytes).unwrap();
        let texts: HashMap<u64, Arc<str>> = chunk
            .texts()
            .map(|(key, text)| (key, Arc::from(text)))
            .collect();
        let Some(Read::Row(row)) = chunk.rows().next() else {
            panic!("a row")
        };
        let mut second = Writer::default();
        second.put_task(&held("0", "a short parent"));
        assert!(second.put_stored(row, &texts));
        assert_eq!(
            read(&second.seal()),
            vec![Ok(held("0", "a short parent")), Ok(held("a", PARENT))]
        );
    }

    #[test]
    fn chunks_fill_up_to_their_size_and_no_further() {
        let mut writer = Writer::default();
        let mut chunks = Vec::new();
        let tasks: Vec<Task> = (0..5000)
            .map(|i| held(&format!("t{i:05}"), &format!("{PARENT} {}", i / 7)))
            .collect();
        for task in &tasks {
            writer.put_task(task);
            chunks.extend(writer.take_sealed());
        }
        chunks.push(writer.seal());
        assert!(chunks.len() > 4, "{}", chunks.len());
        let mut read_back = Vec::new();
        for chunk in &chunks {
            assert!(chunk.len() <= CHUNK_BYTES, "{}", chunk.len());
            assert!(Chunk::open(chunk).unwrap().intact);
            read_back.extend(read(chunk).into_iter().map(Result::unwrap));
        }
        assert_eq!(read_back, tasks);
        // Copied on into other chunks, with their texts: the same.
        let mut copied = Vec::new();
        for chunk in &chunks {
            let opened = Chunk::open(chunk).unwrap();
            let texts: HashMap<u64, Arc<str>> = opened
                .texts()
                .map(|(key, text)| (key, Arc::from(text)))
                .collect();
            for read in opened.rows() {
                let Read::Row(row) = read else {
                    panic!("{read:?}")
                };
                assert!(writer.put_stored(row, &texts));
                copied.extend(writer.take_sealed());
            }
        }
        copied.push(writer.seal());
        let again: Vec<Task> = copied
            .iter()
            .flat_map(|c| read(c))
            .map(Result::unwrap)
            .collect();
        assert_eq!(again, tasks);
        assert!(copied.iter().all(|c| c.len() <= CHUNK_BYTES));
    }

    #[test]
    fn a_stored_row_whose_key_holds_another_text_here_is_refused() {
        let mut first = Writer::default();
        first.put_task(&held("a", PARENT));
        let bytes = first.seal();
        let chunk = Chunk::open(&bytes).unwrap();
        let Some(Read::Row(row)) = chunk.rows().next() else {
            panic!("a row")
        };
        let mut second = Writer::default();
        // A forged collision: this chunk gives PARENT's key to another text.
        second.add_text(
            key_of(PARENT),
            Arc::from("another text of 32 bytes or more....."),
        );
        let texts = HashMap::from([(key_of(PARENT), Arc::from(PARENT))]);
        assert!(!second.put_stored(row, &texts));
        assert!(second.is_empty());
        // Written from its task, it keeps the text in its row.
        second.seen.clear();
        second.put_task(&held("a", PARENT));
        let bytes = second.seal();
        assert_eq!(read(&bytes), vec![Ok(held("a", PARENT))]);
    }

    #[test]
    fn a_damaged_chunk_reads_row_by_row_and_reports_where_it_stops() {
        let mut writer = Writer::default();
        for name in ["a", "b", "c"] {
            writer.put_task(&held(name, PARENT));
        }
        writer.put_removed(b"d");
        let bytes = writer.seal();
        assert!(Chunk::open(&bytes).unwrap().intact);

        // A flipped bit in b's record: b fails its own checksum, the rest
        // reads.
        let at_b = bytes.windows(3).position(|w| w == [1, 0, b'b']).unwrap() + 3 + 4 + 10;
        let mut flipped = bytes.clone();
        flipped[at_b] ^= 0x10;
        assert!(!Chunk::open(&flipped).unwrap().intact);
        let rows = read(&flipped);
        assert_eq!(rows[0], Ok(held("a", PARENT)));
        assert!(
            rows[1].as_ref().unwrap_err().contains("checksum"),
            "{rows:?}"
        );
        assert_eq!(rows[2], Ok(held("c", PARENT)));
        assert_eq!(rows[3], Err("removed d".into()));

        // A removal whose name was changed is not trusted.
        let mut renamed = bytes.clone();
        let at_d = renamed.windows(3).rposition(|w| w == [1, 0, b'd']).unwrap() + 2;
        renamed[at_d] = b'e';
        let chunk = Chunk::open(&renamed).unwrap();
        let Some(Read::BadRemoval { name, row }) = chunk.rows().nth(3) else {
            panic!("a removal that does not check")
        };
        assert_eq!((name, row.len()), (b"e".as_slice(), 2 + 1 + 8));

        // A length that runs past the rows: the rest is reported whole.
        let mut cut = bytes.clone();
        let at_c_len = cut.windows(3).position(|w| w == [1, 0, b'c']).unwrap() + 3;
        cut[at_c_len + 3] = 0x7f;
        let chunk = Chunk::open(&cut).unwrap();
        let reads: Vec<Read<'_>> = chunk.rows().collect();
        assert_eq!(reads.len(), 3, "{reads:?}");
        let Read::Unframed { at, rest } = reads[2] else {
            panic!("{reads:?}")
        };
        assert_eq!(at, at_c_len - 3);
        assert_eq!(rest, &cut[at..at + rest.len()]);

        // A damaged text is left out: its rows load without it.
        let mut text = bytes.clone();
        let at_text = text
            .windows(PARENT.len())
            .position(|w| w == PARENT.as_bytes())
            .unwrap();
        text[at_text] ^= 0x01;
        let chunk = Chunk::open(&text).unwrap();
        assert_eq!(chunk.texts().count(), 0);

        // A damaged header: the rows still read, each by its own check.
        let mut version = bytes.clone();
        version[0] = 9;
        assert_eq!(read(&version).len(), 4);
        assert!(read(&version)[..3].iter().all(Result::is_ok));
        // A damaged count, where the rows frame up to where the texts
        // start and the first text checks: nothing is missing.
        let mut count = bytes.clone();
        count[1] = 7;
        assert_eq!(read(&count).len(), 4);
        // Where the texts start, damaged: the count's rows frame, and a
        // text that checks follows them.
        let mut texts_at = bytes.clone();
        texts_at[8] = 0x7f;
        assert_eq!(read(&texts_at).len(), 4);
        assert_eq!(Chunk::open(&texts_at).unwrap().texts().count(), 1);
        // Both damaged: the rows read as far as they go, and end in an
        // `Unframed`, so that what may be missing is known.
        let mut both = texts_at.clone();
        both[1] = 7;
        let reads: Vec<Read<'_>> = Chunk::open(&both).unwrap().rows().collect();
        assert!(
            matches!(reads.last(), Some(Read::Unframed { .. })),
            "{reads:?}"
        );
        // A damaged count in a chunk with no texts to check it by.
        let mut plain = Writer::default();
        plain.put_task(&held("a", "short"));
        plain.put_removed(b"b");
        let mut plain = plain.seal();
        plain[1] = 3;
        let reads: Vec<Read<'_>> = Chunk::open(&plain).unwrap().rows().collect();
        assert_eq!(reads.len(), 3, "{reads:?}");
        assert!(matches!(reads[2], Read::Unframed { rest: [], .. }));
        // Too short for a header, or whole but of another version: nothing
        // can be read.
        assert!(Chunk::open(&bytes[..12]).is_none());
        let mut other = bytes.clone();
        other[0] = 2;
        let len = other.len();
        let crc = crc32fast::hash(&other[..len - 4]);
        other[len - 4..].copy_from_slice(&crc.to_le_bytes());
        assert!(Chunk::open(&other).is_none());
    }
}
