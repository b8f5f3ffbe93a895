//! The write-ahead log's frames: encoding one committed batch into bytes,
//! and scanning a ring of bytes for the valid frames after a known point.
//!
//! Depends on [`crate::tasks`] and [`crate::time`] only; no I/O: a scan
//! asks a [`Ring`] for the bytes it reads.
//!
//! The log is a ring of `size` bytes. A *position* counts bytes written
//! since the log was created, so `position % size` is the offset in the file
//! and `position / size` is the frame's *generation* (how many times the
//! ring had wrapped when it was written). Frames are packed one after the
//! other, each starting on an 8-byte boundary; a frame never straddles the
//! end of the ring: when it does not fit, a [`FrameKind::Wrap`] marker (or,
//! when fewer than [`HEADER_LEN`] bytes remain, nothing) sends the reader to
//! the start of the next generation.
//!
//! Frame layout (integers little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `SPWL` |
//! | 4 | 2 | kind: 1 batch, 2 wrap |
//! | 6 | 2 | format version: 4 (1 to 3 are still read) |
//! | 8 | 4 | payload length |
//! | 12 | 4 | CRC-32 (IEEE) of bytes 0..12, 16..32 and the payload |
//! | 16 | 8 | log sequence number (LSN) |
//! | 24 | 8 | generation |
//! | 32 | n | payload, then zeros to the next 8-byte boundary |
//!
//! A batch's payload: `u32` change count, each change as a kind byte (1 put
//! of a new task, 2 put of a refresh, 3 removal by delete, 4 removal by
//! expiry, 5 release by the exit of the bound process, 6 release by the
//! hold limit), `u16` name length,
//! the name, and for a put `started_at` and `expires_at` (`u64` ns), the
//! owner's uid (`u32`, as a record stores it) and the task's details as a
//! record stores them
//! ([`record::encode_details`](crate::record::encode_details)), for a
//! release the `u32` pid, for a release by the hold limit the owner (`u32`)
//! and the trip's instant, length held and limit (`u64` ns each); then `u32` event count, each as `u64` sequence
//! number, `u32` length and the event's JSON line; then `u64`
//! keep-events-from and `u64` trim slack (see
//! [`Store::commit_batch`](super::Store::commit_batch)).
//!
//! Format 3 (the release before hold limits) is the same without the
//! details' hold limit and releases by it. Format 2 (the release before owners) is the same without the owner, and
//! format 1 (the release before holders) without details and releases
//! too; their frames are still replayed, their tasks owned by root
//! ([`record::LEGACY_OWNER`]).
//!
//! Invariant a reader relies on: frames of one generation are written in
//! increasing LSN order with no gaps, so the first frame that is short,
//! fails its CRC, or breaks the sequence or the generation ends the log.
//! Whatever follows it was never acknowledged.

use std::fmt;

use crate::record::{self, FieldError, Reader, read_u64};
use std::time::Duration;

use crate::tasks::{Change, Removal, Task, TaskName, Trip};
use crate::time::Timestamp;

/// Bytes of a frame header.
pub const HEADER_LEN: usize = 32;

/// Frames start on multiples of this.
pub const ALIGN: u64 = 8;

const MAGIC: [u8; 4] = *b"SPWL";
/// The format this build writes.
const FORMAT: u16 = 4;
/// The format before hold limits, still read.
const FORMAT_3: u16 = 3;
/// The format before task details, still read.
const FORMAT_1: u16 = 1;
/// The format before owners, still read.
const FORMAT_2: u16 = 2;

/// What a frame holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// One committed batch.
    Batch = 1,
    /// The rest of this generation is unused; continue at the next one.
    Wrap = 2,
}

/// One decoded batch: what a frame's payload says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchRecord {
    pub changes: Vec<Change>,
    /// Events as `(seq, JSON line)`.
    pub events: Vec<(u64, Vec<u8>)>,
    pub keep_events_from: u64,
    pub trim_slack: u64,
}

/// Why a scan stopped. Every reason but [`Stop::End`] means the bytes at
/// the stopping point were written (or half written) but never
/// acknowledged, or are left over from an earlier generation.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stop {
    /// Zeros: nothing was ever written here.
    End,
    /// Not a frame header.
    Magic,
    /// A header whose format or kind this build does not know.
    Format { kind: u16, version: u16 },
    /// The payload runs past the end of the ring.
    Short { length: u32 },
    /// The checksum does not match.
    Checksum,
    /// A frame of another generation (left over from the last lap).
    Generation { found: u64, expected: u64 },
    /// A frame out of sequence.
    Sequence { found: u64, expected: u64 },
    /// A valid frame whose payload does not decode: a bug, not a tear.
    Payload(PayloadError),
    /// The scan went once round the whole ring.
    Full,
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stop::End => write!(f, "end of the written log"),
            Stop::Magic => write!(f, "no frame header (bytes of an earlier generation)"),
            Stop::Format { kind, version } => {
                write!(f, "unknown frame kind {kind} or format {version}")
            }
            Stop::Short { length } => write!(f, "a {length}-byte frame runs past the ring"),
            Stop::Checksum => write!(f, "checksum mismatch (a torn write)"),
            Stop::Generation { found, expected } => {
                write!(f, "a frame of generation {found}, expected {expected}")
            }
            Stop::Sequence { found, expected } => {
                write!(f, "sequence number {found}, expected {expected}")
            }
            Stop::Payload(why) => write!(f, "undecodable payload: {why}"),
            Stop::Full => write!(f, "the whole ring was read"),
        }
    }
}

impl Stop {
    /// Whether the stop is the ordinary end of a log, as opposed to a torn
    /// or damaged frame worth a warning: zeros (never written), a frame of
    /// an earlier generation, or bytes that are no frame header at all (the
    /// middle of an earlier generation's frame: frames of two generations
    /// do not line up). A frame header whose frame does not check out is a
    /// torn write.
    pub fn is_clean(&self) -> bool {
        matches!(
            self,
            Stop::End | Stop::Magic | Stop::Generation { .. } | Stop::Full
        )
    }
}

/// Why a valid frame's batch payload does not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PayloadError {
    /// A field, or a put's details, does not read.
    Field(FieldError),
    /// A change's name is not a valid task name.
    Name,
    /// A put of a task that starts after it expires.
    Order(TaskName),
    /// A change kind that this frame format does not have.
    ChangeKind(u8),
    /// Bytes follow the batch.
    Trailing(usize),
}

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PayloadError::Field(why) => write!(f, "{why}"),
            PayloadError::Name => write!(f, "a change names no valid task"),
            PayloadError::Order(name) => write!(f, "task {name} starts after it expires"),
            PayloadError::ChangeKind(kind) => write!(f, "unknown change kind {kind}"),
            PayloadError::Trailing(len) => write!(f, "{len} bytes after the batch"),
        }
    }
}

impl std::error::Error for PayloadError {}

impl From<FieldError> for PayloadError {
    fn from(error: FieldError) -> Self {
        PayloadError::Field(error)
    }
}

/// Where a scan of the frames after a starting point ended, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Where the next frame goes: just after the last valid frame.
    pub end: u64,
    /// The LSN the next frame gets.
    pub next_lsn: u64,
    /// Why the scan stopped, and the position it stopped at.
    pub stop: Stop,
    pub stop_at: u64,
}

/// Rounds a length up to [`ALIGN`].
pub fn aligned(len: u64) -> u64 {
    len.div_ceil(ALIGN) * ALIGN
}

/// Where a frame of `len` bytes (aligned) goes when the ring's next free
/// position is `head`: `head` itself if it fits before the ring's end,
/// else the start of the next generation. The second value is whether a
/// wrap marker must be written at `head` (there is room for a header).
pub fn place(head: u64, len: u64, size: u64) -> (u64, bool) {
    let room = size - head % size;
    if len <= room {
        (head, false)
    } else {
        (head + room, room >= HEADER_LEN as u64)
    }
}

/// Where a frame goes: its LSN, its position and the ring's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub lsn: u64,
    pub position: u64,
    pub size: u64,
}

/// Appends a batch frame for `slot` to `out` (padded to [`ALIGN`]):
/// `changes`, `events` as `(seq, line)`, and the history trimming bounds
/// `(keep_events_from, trim_slack)`.
pub fn encode_batch<'a>(
    out: &mut Vec<u8>,
    slot: Slot,
    changes: &[Change],
    events: impl Iterator<Item = (u64, &'a [u8])>,
    (keep_events_from, trim_slack): (u64, u64),
) {
    let start = out.len();
    out.resize(start + HEADER_LEN, 0);
    out.extend_from_slice(&(changes.len() as u32).to_le_bytes());
    for change in changes {
        let kind = match change {
            Change::Put { created: true, .. } => 1u8,
            Change::Put { created: false, .. } => 2,
            Change::Remove { cause, .. } => match cause {
                Removal::Deleted => 3,
                Removal::Expired => 4,
                Removal::Released { .. } => 5,
                Removal::Capped { .. } => 6,
            },
        };
        out.push(kind);
        let name = change.name().as_bytes();
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name);
        match change {
            Change::Put { task, .. } => {
                out.extend_from_slice(&task.started_at.as_nanos().to_le_bytes());
                out.extend_from_slice(&task.expires_at.as_nanos().to_le_bytes());
                out.extend_from_slice(&record::encode_owner(task.owner).to_le_bytes());
                record::encode_details(task, out);
            }
            Change::Remove {
                cause: Removal::Released { pid },
                ..
            } => out.extend_from_slice(&pid.to_le_bytes()),
            Change::Remove {
                cause: Removal::Capped { trip },
                ..
            } => {
                out.extend_from_slice(&record::encode_owner(trip.owner).to_le_bytes());
                out.extend_from_slice(&trip.at.as_nanos().to_le_bytes());
                for span in [trip.held, trip.limit] {
                    let nanos = u64::try_from(span.as_nanos()).unwrap_or(u64::MAX);
                    out.extend_from_slice(&nanos.to_le_bytes());
                }
            }
            Change::Remove { .. } => {}
        }
    }
    let count_at = out.len();
    out.extend_from_slice(&0u32.to_le_bytes());
    let mut count = 0u32;
    for (seq, line) in events {
        out.extend_from_slice(&seq.to_le_bytes());
        out.extend_from_slice(&(line.len() as u32).to_le_bytes());
        out.extend_from_slice(line);
        count += 1;
    }
    out[count_at..count_at + 4].copy_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&keep_events_from.to_le_bytes());
    out.extend_from_slice(&trim_slack.to_le_bytes());
    seal(out, start, FrameKind::Batch, slot);
}

/// Appends a wrap marker at `slot`; its LSN is the one of the frame that
/// follows it at the start of the next generation.
pub fn encode_wrap(out: &mut Vec<u8>, slot: Slot) {
    let start = out.len();
    out.resize(start + HEADER_LEN, 0);
    seal(out, start, FrameKind::Wrap, slot);
}

/// Fills in the header of the frame starting at `start` and pads it.
fn seal(out: &mut Vec<u8>, start: usize, kind: FrameKind, slot: Slot) {
    let generation = slot.position / slot.size;
    let lsn = slot.lsn;
    let payload_len = (out.len() - start - HEADER_LEN) as u32;
    let header = &mut out[start..start + HEADER_LEN];
    header[0..4].copy_from_slice(&MAGIC);
    header[4..6].copy_from_slice(&(kind as u16).to_le_bytes());
    header[6..8].copy_from_slice(&FORMAT.to_le_bytes());
    header[8..12].copy_from_slice(&payload_len.to_le_bytes());
    header[16..24].copy_from_slice(&lsn.to_le_bytes());
    header[24..32].copy_from_slice(&generation.to_le_bytes());
    let crc = checksum(&out[start..]);
    out[start + 12..start + 16].copy_from_slice(&crc.to_le_bytes());
    let padded = start + aligned((out.len() - start) as u64) as usize;
    out.resize(padded, 0);
}

/// CRC of a whole frame (header and payload) with the CRC field skipped.
fn checksum(frame: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&frame[..12]);
    hasher.update(&frame[16..]);
    hasher.finalize()
}

/// The log's bytes, as a scan reads them: the file read a window at a
/// time ([`LogWindow`](super::files::LogWindow)), or a slice of all of it.
pub trait Ring {
    /// The ring's size: the log file's.
    fn size(&self) -> u64;
    /// The `len` bytes at `offset`; `offset + len` is at most the size.
    ///
    /// # Errors
    /// The read's, for a file.
    fn bytes(&mut self, offset: usize, len: usize) -> std::io::Result<&[u8]>;
}

impl Ring for &[u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn bytes(&mut self, offset: usize, len: usize) -> std::io::Result<&[u8]> {
        Ok(&self[offset..offset + len])
    }
}

/// Reads the frames of `ring` from `start`, expecting `first_lsn` first,
/// until the first frame that is not the valid next one, handing each
/// batch to `each` with its LSN as it is decoded. Never reads more than
/// once round the ring.
///
/// Batches are handed over rather than collected: 100k replayed frames,
/// each kept as a `Vec` of changes until the end, grew the worker's heap
/// by some 70 MB a page at a time (17,934 `mprotect` calls, strace, and
/// as many page faults). Replaying them took 170 ms of a 430 ms start-up;
/// handed over, 55 ms (`cargo bench --bench startup`).
///
/// # Errors
/// A read of the ring that failed: nothing is known past that point.
pub fn scan(
    mut ring: impl Ring,
    start: u64,
    first_lsn: u64,
    mut each: impl FnMut(u64, BatchRecord),
) -> std::io::Result<Scan> {
    let size = ring.size();
    let mut scan = Scan {
        end: start,
        next_lsn: first_lsn,
        stop: Stop::End,
        stop_at: start,
    };
    if size < HEADER_LEN as u64 {
        scan.stop = Stop::Full;
        return Ok(scan);
    }
    let mut position = start;
    let mut texts = record::Texts::default();
    loop {
        if position - start >= size {
            return Ok(stopped(scan, Stop::Full, position));
        }
        let offset = position % size;
        let generation = position / size;
        if size - offset < HEADER_LEN as u64 {
            // Too little room for a header: the writer moved on to the next
            // generation without a marker.
            position += size - offset;
            continue;
        }
        let offset = offset as usize;
        let header: [u8; HEADER_LEN] = ring
            .bytes(offset, HEADER_LEN)?
            .try_into()
            .map_err(|_| std::io::Error::other("a read of the log returned a short header"))?;
        if header.iter().all(|&b| b == 0) {
            return Ok(stopped(scan, Stop::End, position));
        }
        if header[0..4] != MAGIC {
            return Ok(stopped(scan, Stop::Magic, position));
        }
        let kind = u16::from_le_bytes([header[4], header[5]]);
        let version = u16::from_le_bytes([header[6], header[7]]);
        if !matches!(version, FORMAT_1 | FORMAT_2 | FORMAT_3 | FORMAT)
            || !(kind == FrameKind::Batch as u16 || kind == FrameKind::Wrap as u16)
        {
            return Ok(stopped(scan, Stop::Format { kind, version }, position));
        }
        let length = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        let frame_len = HEADER_LEN + length as usize;
        if (offset + frame_len) as u64 > size {
            return Ok(stopped(scan, Stop::Short { length }, position));
        }
        let frame = ring.bytes(offset, frame_len)?;
        let stored = u32::from_le_bytes([header[12], header[13], header[14], header[15]]);
        if stored != checksum(frame) {
            return Ok(stopped(scan, Stop::Checksum, position));
        }
        let lsn = read_u64(&header[16..24]);
        let found_generation = read_u64(&header[24..32]);
        if found_generation != generation {
            let stop = Stop::Generation {
                found: found_generation,
                expected: generation,
            };
            return Ok(stopped(scan, stop, position));
        }
        if lsn != scan.next_lsn {
            let stop = Stop::Sequence {
                found: lsn,
                expected: scan.next_lsn,
            };
            return Ok(stopped(scan, stop, position));
        }
        if kind == FrameKind::Wrap as u16 {
            position = (generation + 1) * size;
            continue;
        }
        match decode_batch(&frame[HEADER_LEN..], version, &mut texts) {
            Ok(batch) => each(lsn, batch),
            Err(why) => return Ok(stopped(scan, Stop::Payload(why), position)),
        }
        position += aligned(frame_len as u64);
        scan.next_lsn = lsn + 1;
        scan.end = position;
    }
}

fn stopped(mut scan: Scan, stop: Stop, at: u64) -> Scan {
    scan.stop = stop;
    scan.stop_at = at;
    scan
}

/// Decodes a batch payload of frame format `version` (1, 2 or 3);
/// `texts` holds the command lines read so far (see [`record::Texts`]).
///
/// # Errors
/// [`PayloadError`] saying what does not decode.
pub fn decode_batch(
    payload: &[u8],
    version: u16,
    texts: &mut record::Texts,
) -> Result<BatchRecord, PayloadError> {
    let details = version >= FORMAT_2;
    let owners = version >= FORMAT_3;
    let limits = version >= FORMAT;
    let mut reader = Reader::new(payload);
    let mut batch = BatchRecord::default();
    let changes = reader.u32()?;
    for _ in 0..changes {
        let kind = reader.u8()?;
        let name_len = reader.u16()? as usize;
        let name = reader.take(name_len)?;
        let name = std::str::from_utf8(name)
            .ok()
            .and_then(|name| TaskName::parse(name).ok())
            .ok_or(PayloadError::Name)?;
        let change = match kind {
            1 | 2 => {
                let started_at = Timestamp::from_nanos(reader.u64()?);
                let expires_at = Timestamp::from_nanos(reader.u64()?);
                if started_at > expires_at {
                    return Err(PayloadError::Order(name));
                }
                let mut task = Task::new(name, started_at, expires_at);
                task.owner = if owners {
                    record::decode_owner(reader.u32()?)
                } else {
                    Some(record::LEGACY_OWNER)
                };
                if details {
                    let (decoded, used) = record::decode_details(
                        reader.rest(),
                        record::Layout::frame(limits),
                        texts,
                    )?;
                    reader.take(used)?;
                    decoded.apply_to(&mut task);
                }
                Change::Put {
                    task,
                    created: kind == 1,
                }
            }
            3 => Change::Remove {
                name,
                cause: Removal::Deleted,
            },
            4 => Change::Remove {
                name,
                cause: Removal::Expired,
            },
            5 if details => Change::Remove {
                name,
                cause: Removal::Released { pid: reader.u32()? },
            },
            6 if limits => {
                let owner = record::decode_owner(reader.u32()?);
                let at = Timestamp::from_nanos(reader.u64()?);
                let held = Duration::from_nanos(reader.u64()?);
                let limit = Duration::from_nanos(reader.u64()?);
                Change::Remove {
                    name,
                    cause: Removal::Capped {
                        trip: Trip {
                            owner,
                            at,
                            held,
                            limit,
                        },
                    },
                }
            }
            other => return Err(PayloadError::ChangeKind(other)),
        };
        batch.changes.push(change);
    }
    let events = reader.u32()?;
    for _ in 0..events {
        let seq = reader.u64()?;
        let len = reader.u32()? as usize;
        batch.events.push((seq, reader.take(len)?.to_vec()));
    }
    batch.keep_events_from = reader.u64()?;
    batch.trim_slack = reader.u64()?;
    if !reader.rest().is_empty() {
        return Err(PayloadError::Trailing(reader.rest().len()));
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::files::{LogIo, LogWindow};

    /// A scan's batches, collected, and where it ended.
    struct Scanned {
        batches: Vec<(u64, BatchRecord)>,
        scan: Scan,
    }

    impl std::ops::Deref for Scanned {
        type Target = Scan;
        fn deref(&self) -> &Scan {
            &self.scan
        }
    }

    /// The log in memory, read as the file is; reads fail from the
    /// `fails_after`-th on.
    #[derive(Debug)]
    struct MemLog {
        bytes: Vec<u8>,
        fails_after: std::sync::atomic::AtomicUsize,
    }

    impl MemLog {
        fn new(bytes: &[u8], fails_after: usize) -> MemLog {
            MemLog {
                bytes: bytes.to_vec(),
                fails_after: fails_after.into(),
            }
        }
    }

    impl LogIo for MemLog {
        fn len(&self) -> std::io::Result<u64> {
            Ok(self.bytes.len() as u64)
        }

        fn read_at(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
            use std::sync::atomic::Ordering;
            if self.fails_after.load(Ordering::SeqCst) == 0 {
                return Err(std::io::Error::other("unreadable"));
            }
            self.fails_after.fetch_sub(1, Ordering::SeqCst);
            let offset = offset as usize;
            out.copy_from_slice(&self.bytes[offset..offset + out.len()]);
            Ok(())
        }

        fn write_at(&self, _: u64, _: &[u8]) -> std::io::Result<()> {
            unreachable!("scans only read")
        }

        fn sync_data(&self) -> std::io::Result<()> {
            unreachable!("scans only read")
        }
    }

    /// Scans `ring` whole, and checks that a scan of it as a file, read
    /// in windows of a byte, of less than a header, of a header and a
    /// bit, and of all of it, finds the same.
    fn scan(ring: &[u8], start: u64, first_lsn: u64) -> Scanned {
        let whole = scan_through(ring, start, first_lsn).expect("a slice reads");
        let log = MemLog::new(ring, usize::MAX);
        for read in [1, HEADER_LEN - 1, HEADER_LEN + 5, ring.len()] {
            let window = LogWindow::reading(&log, ring.len() as u64, read);
            let windowed = scan_through(window, start, first_lsn).expect("memory reads");
            assert_eq!(windowed.batches, whole.batches, "read {read} at a time");
            assert_eq!(windowed.scan, whole.scan, "read {read} at a time");
        }
        whole
    }

    fn scan_through(ring: impl Ring, start: u64, first_lsn: u64) -> std::io::Result<Scanned> {
        let mut batches = Vec::new();
        let scan = super::scan(ring, start, first_lsn, |lsn, batch| {
            batches.push((lsn, batch));
        })?;
        Ok(Scanned { batches, scan })
    }

    fn task(name: &str, started: u64, expires: u64) -> Task {
        Task::new(
            TaskName::parse(name).unwrap(),
            Timestamp::from_nanos(started),
            Timestamp::from_nanos(expires),
        )
    }

    fn hex(text: &str) -> Vec<u8> {
        let text = text.trim();
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Batches of one size, so laps of the ring end on frame boundaries.
    fn batch(n: u64) -> BatchRecord {
        BatchRecord {
            changes: vec![
                Change::Put {
                    task: task(&format!("t{n}"), n, n + 10),
                    created: n.is_multiple_of(2),
                },
                Change::Remove {
                    name: TaskName::parse("gone").unwrap(),
                    cause: if n.is_multiple_of(3) {
                        Removal::Expired
                    } else {
                        Removal::Deleted
                    },
                },
            ],
            events: vec![(n * 2, format!("{{\"seq\":{}}}\n", n * 2).into_bytes())],
            keep_events_from: n,
            trim_slack: 1024,
        }
    }

    /// Batches with every kind of change and detail.
    fn varied(n: u64) -> BatchRecord {
        let mut put = task(&format!("t{n}"), n, n + 10);
        put.owner = [None, Some(0), Some(1000)]
            .get(n as usize % 3)
            .copied()
            .flatten();
        if n.is_multiple_of(2) {
            put.reason = Some(format!("reason {n}"));
            put.holder = Some(crate::tasks::Holder {
                pid: Some(n as u32),
                command: Some("curl".into()),
                ..Default::default()
            });
            put.binding = Some(crate::tasks::Binding {
                pid: n as u32 + 1,
                start_time: n * 100,
            });
        }
        let cause = match n % 3 {
            0 => Removal::Expired,
            1 => Removal::Deleted,
            _ => Removal::Released { pid: n as u32 },
        };
        BatchRecord {
            changes: vec![
                Change::Put {
                    task: put,
                    created: n.is_multiple_of(2),
                },
                Change::Remove {
                    name: TaskName::parse("gone").unwrap(),
                    cause,
                },
            ],
            events: vec![(n * 2, format!("{{\"seq\":{}}}\n", n * 2).into_bytes())],
            keep_events_from: n,
            trim_slack: 1024,
        }
    }

    /// Writes `batches` into a ring of `size` bytes the way the store does,
    /// starting at `head` with `lsn`; returns the ring and the final head.
    fn write(ring: &mut [u8], mut head: u64, mut lsn: u64, batches: &[BatchRecord]) -> u64 {
        let size = ring.len() as u64;
        for b in batches {
            let encode = |frame: &mut Vec<u8>, position| {
                let slot = Slot {
                    lsn,
                    position,
                    size,
                };
                let events = b.events.iter().map(|(s, l)| (*s, l.as_slice()));
                encode_batch(
                    frame,
                    slot,
                    &b.changes,
                    events,
                    (b.keep_events_from, b.trim_slack),
                );
            };
            let mut frame = Vec::new();
            encode(&mut frame, 0);
            let (at, marker) = place(head, frame.len() as u64, size);
            if marker {
                let mut wrap = Vec::new();
                encode_wrap(
                    &mut wrap,
                    Slot {
                        lsn,
                        position: head,
                        size,
                    },
                );
                let off = (head % size) as usize;
                ring[off..off + wrap.len()].copy_from_slice(&wrap);
            }
            frame.clear();
            encode(&mut frame, at);
            let off = (at % size) as usize;
            ring[off..off + frame.len()].copy_from_slice(&frame);
            head = at + frame.len() as u64;
            lsn += 1;
        }
        head
    }

    #[test]
    fn batches_round_trip_in_order() {
        let mut ring = vec![0u8; 4096];
        let batches: Vec<_> = (1..=6).map(varied).collect();
        let head = write(&mut ring, 0, 1, &batches);
        let scan = scan(&ring, 0, 1);
        assert_eq!(scan.stop, Stop::End);
        assert_eq!(scan.end, head);
        assert_eq!(scan.next_lsn, 7);
        let found: Vec<_> = scan.batches.into_iter().map(|(_, b)| b).collect();
        assert_eq!(found, batches);
    }

    #[test]
    fn a_scan_starts_where_it_is_told_and_expects_that_lsn() {
        let mut ring = vec![0u8; 4096];
        let batches: Vec<_> = (1..=4).map(batch).collect();
        let head = write(&mut ring, 0, 1, &batches[..2]);
        write(&mut ring, head, 3, &batches[2..]);
        let scan_from = scan(&ring, head, 3);
        assert_eq!(scan_from.batches.len(), 2);
        assert_eq!(scan_from.batches[0].0, 3);
        let wrong = scan(&ring, head, 4);
        assert!(wrong.batches.is_empty());
        assert_eq!(
            wrong.stop,
            Stop::Sequence {
                found: 3,
                expected: 4
            }
        );
    }

    #[test]
    fn the_ring_wraps_and_old_generations_end_the_log() {
        let size = 1024u64;
        let mut ring = vec![0u8; size as usize];
        let batches: Vec<_> = (1..=40).map(batch).collect();
        // Fill several laps; each scan from the last checkpoint point must
        // find exactly what was written after it.
        let mut head = 0;
        let mut lsn = 1;
        for chunk in batches.chunks(3) {
            let start = head;
            head = write(&mut ring, head, lsn, chunk);
            let scan = scan(&ring, start, lsn);
            assert_eq!(scan.batches.len(), chunk.len(), "from {start}");
            assert_eq!(scan.end, head);
            assert!(scan.stop.is_clean(), "{:?} at {}", scan.stop, scan.stop_at);
            lsn += chunk.len() as u64;
        }
        assert!(
            head / size >= 3,
            "the test wrapped only {} times",
            head / size
        );
    }

    #[test]
    fn a_scan_a_window_at_a_time_crosses_the_end_of_the_ring_and_stops_at_a_tear() {
        let size = 4096u64;
        let mut ring = vec![0u8; size as usize];
        let batches: Vec<_> = (1..=40).map(varied).collect();
        let start = write(&mut ring, 0, 1, &batches[..20]);
        let head = write(&mut ring, start, 21, &batches[20..]);
        assert!(head > size && head - start < size, "{start}..{head}");
        // One more frame, its last byte flipped: a checksum stop.
        write(&mut ring, head, 41, &[varied(41)]);
        let length = u32::from_le_bytes(ring[(head % size) as usize..][8..12].try_into().unwrap());
        ring[(head % size) as usize + HEADER_LEN + length as usize - 1] ^= 1;
        // `scan` checks every window size against the whole ring.
        let found = scan(&ring, start, 21);
        assert_eq!(found.batches.len(), 20);
        assert_eq!(found.stop, Stop::Checksum);
        assert_eq!(found.stop_at, head);
    }

    #[test]
    fn a_read_that_fails_fails_the_scan() {
        struct Failing<'a>(&'a [u8], usize);
        impl Ring for Failing<'_> {
            fn size(&self) -> u64 {
                self.0.len() as u64
            }
            fn bytes(&mut self, offset: usize, len: usize) -> std::io::Result<&[u8]> {
                if self.1 == 0 {
                    return Err(std::io::Error::other("unreadable"));
                }
                self.1 -= 1;
                Ok(&self.0[offset..offset + len])
            }
        }
        let mut ring = vec![0u8; 4096];
        write(&mut ring, 0, 1, &[batch(1), batch(2)]);
        // A header and a frame a batch: the second batch's frame fails.
        let mut handed = 0;
        let failed = super::scan(Failing(&ring, 3), 0, 1, |_, _| handed += 1);
        assert_eq!(failed.unwrap_err().to_string(), "unreadable");
        assert_eq!(handed, 1);
        assert_eq!(scan(&ring, 0, 1).batches.len(), 2);
        // Through the file's windows: the second read fails.
        let log = MemLog::new(&ring, 1);
        let mut handed = 0;
        let window = LogWindow::reading(&log, 4096, HEADER_LEN);
        let failed = super::scan(window, 0, 1, |_, _| handed += 1);
        assert_eq!(failed.unwrap_err().to_string(), "unreadable");
        assert_eq!(handed, 0);
        // A window whose read failed holds nothing: the next ask reads.
        let log = MemLog::new(&ring, 1);
        let mut window = LogWindow::reading(&log, 4096, 4096);
        assert!(window.bytes(0, HEADER_LEN).is_ok());
        let mut window = LogWindow::reading(&log, 4096, 4096);
        assert!(window.bytes(0, HEADER_LEN).is_err());
        log.fails_after
            .store(1, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(window.bytes(8, 4).unwrap(), &ring[8..12]);
        // Past the end of the log is an error, not a panic.
        assert!(window.bytes(4090, 8).is_err());
    }

    #[test]
    fn every_torn_tail_ends_the_log_before_the_torn_frame() {
        let mut clean = vec![0u8; 2048];
        let batches: Vec<_> = (1..=3).map(batch).collect();
        let before = write(&mut clean, 0, 1, &batches[..2]);
        let mut full = clean.clone();
        write(&mut full, before, 3, &batches[2..]);
        // A cut past the last byte that differs from what was there is no
        // tear at all (trailing zeros of the payload, the padding).
        let changed_end = (0..full.len())
            .rev()
            .find(|&i| full[i] != clean[i])
            .unwrap() as u64
            + 1;
        for cut in before..changed_end {
            let mut torn = clean.clone();
            torn[before as usize..cut as usize]
                .copy_from_slice(&full[before as usize..cut as usize]);
            let scan = scan(&torn, 0, 1);
            assert_eq!(scan.batches.len(), 2, "cut at {cut}");
            assert_eq!(scan.end, before);
        }
    }

    #[test]
    fn every_flipped_bit_of_a_frame_is_caught() {
        let mut ring = vec![0u8; 512];
        write(&mut ring, 0, 1, &[batch(1)]);
        assert_eq!(scan(&ring, 0, 1).batches.len(), 1);
        // The padding after the payload is not part of the frame.
        let payload = u32::from_le_bytes([ring[8], ring[9], ring[10], ring[11]]) as usize;
        for bit in 0..(HEADER_LEN + payload) * 8 {
            let mut damaged = ring.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(scan(&damaged, 0, 1).batches.is_empty(), "bit {bit}");
        }
    }

    #[test]
    fn garbage_never_panics_and_is_never_a_frame() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..200 {
            let ring: Vec<u8> = (0..300)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            assert!(scan(&ring, 0, 1).batches.is_empty());
        }
    }

    /// Scans a fixture frame (hex) of format `format` placed at position 0
    /// of a 4096-byte ring.
    fn scan_fixture(fixture: &str, format: u16) -> Scanned {
        let bytes = hex(fixture);
        assert_eq!(u16::from_le_bytes([bytes[6], bytes[7]]), format);
        let mut ring = vec![0u8; 4096];
        ring[..bytes.len()].copy_from_slice(&bytes);
        scan(&ring, 0, 1)
    }

    /// A frame written by the release before task details (format 1), byte
    /// for byte: LSN 1 at position 0 of a 4096-byte ring, holding a create
    /// of `agent`, an expiry of `old`, a delete of `gone` and one event.
    const FORMAT_1_FRAME: &str = include_str!("../../tests/fixtures/frame-format-1-9c5260b.hex");

    #[test]
    fn a_format_1_frame_still_replays() {
        let scan = scan_fixture(FORMAT_1_FRAME, FORMAT_1);
        assert_eq!(scan.stop, Stop::End);
        assert_eq!(scan.batches.len(), 1);
        let name = |text: &str| TaskName::parse(text).unwrap();
        let expected = BatchRecord {
            changes: vec![
                Change::Put {
                    task: Task {
                        owner: Some(0),
                        ..task(
                            "agent",
                            1_780_420_274_555_839_485,
                            1_780_423_874_555_839_485,
                        )
                    },
                    created: true,
                },
                Change::Remove {
                    name: name("old"),
                    cause: Removal::Expired,
                },
                Change::Remove {
                    name: name("gone"),
                    cause: Removal::Deleted,
                },
            ],
            events: vec![(7, b"{\"seq\":7}\n".to_vec())],
            keep_events_from: 1,
            trim_slack: 1024,
        };
        assert_eq!(scan.batches[0], (1, expected));
        // A release (kind 5) has no meaning in format 1.
        let bytes = hex(FORMAT_1_FRAME);
        let length = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
        let mut payload = bytes[HEADER_LEN..HEADER_LEN + length].to_vec();
        assert!(decode_batch(&payload, FORMAT_1, &mut record::Texts::default()).is_ok());
        payload[4] = 5;
        assert_eq!(
            decode_batch(&payload, FORMAT_1, &mut record::Texts::default()),
            Err(PayloadError::ChangeKind(5))
        );
    }

    /// A frame written by the release before owners (format 2, commit
    /// 7ca5ad3), byte for byte: LSN 1 at position 0 of a 4096-byte ring,
    /// holding a create of `agent` with every detail, a refresh of `plain`
    /// without any, an expiry of `old`, a delete of `gone`, a release of
    /// `bound` and one event.
    const FORMAT_2_FRAME: &str = include_str!("../../tests/fixtures/frame-format-2-7ca5ad3.hex");

    #[test]
    fn a_format_2_frame_still_replays_as_roots() {
        let scan = scan_fixture(FORMAT_2_FRAME, FORMAT_2);
        assert_eq!(scan.stop, Stop::End);
        let name = |text: &str| TaskName::parse(text).unwrap();
        let agent = Task {
            holder: Some(crate::tasks::Holder {
                pid: Some(4242),
                uid: Some(1000),
                command: Some("curl".into()),
                parent_pid: Some(4200),
                parent_command: Some("bash ./heartbeat.sh".into()),
            }),
            reason: Some("fix the failing tests".into()),
            binding: Some(crate::tasks::Binding {
                pid: 4300,
                start_time: 123_456_789,
            }),
            owner: Some(0),
            ..task(
                "agent",
                1_780_420_274_555_839_485,
                1_780_423_874_555_839_485,
            )
        };
        let plain = Task {
            owner: Some(0),
            ..task(
                "plain",
                1_780_420_274_555_839_485,
                1_780_420_574_555_839_485,
            )
        };
        let expected = BatchRecord {
            changes: vec![
                Change::Put {
                    task: agent,
                    created: true,
                },
                Change::Put {
                    task: plain,
                    created: false,
                },
                Change::Remove {
                    name: name("old"),
                    cause: Removal::Expired,
                },
                Change::Remove {
                    name: name("gone"),
                    cause: Removal::Deleted,
                },
                Change::Remove {
                    name: name("bound"),
                    cause: Removal::Released { pid: 4301 },
                },
            ],
            events: vec![(7, b"{\"seq\":7}\n".to_vec())],
            keep_events_from: 1,
            trim_slack: 1024,
        };
        assert_eq!(scan.batches, [(1, expected)]);
    }

    /// A frame written by the release before hold limits (format 3, commit
    /// d3c46f3), byte for byte: the batch of [`FORMAT_2_FRAME`] with owners
    /// (`agent` uid 1000, `plain` unknown).
    const FORMAT_3_FRAME: &str = include_str!("../../tests/fixtures/frame-format-3-d3c46f3.hex");

    #[test]
    fn a_format_3_frame_still_replays_without_hold_limits() {
        let scan = scan_fixture(FORMAT_3_FRAME, FORMAT_3);
        assert_eq!(scan.stop, Stop::End);
        let (_, batch) = &scan.batches[0];
        let [
            Change::Put { task: agent, .. },
            Change::Put { task: plain, .. },
            ..,
        ] = &batch.changes[..]
        else {
            panic!("{batch:?}")
        };
        assert_eq!(agent.owner, Some(1000));
        assert_eq!(agent.reason.as_deref(), Some("fix the failing tests"));
        assert_eq!(agent.binding.map(|b| b.pid), Some(4300));
        assert_eq!((agent.max_held_for, plain.owner), (None, None));
        assert_eq!(batch.changes.len(), 5);
        assert_eq!(
            batch.changes[4],
            Change::Remove {
                name: TaskName::parse("bound").unwrap(),
                cause: Removal::Released { pid: 4301 },
            }
        );
    }

    #[test]
    fn a_capped_removal_and_a_hold_limit_round_trip() {
        let limited = Task {
            max_held_for: Some(Duration::from_millis(1500)),
            ..task("limited", 5, 10)
        };
        let batch = BatchRecord {
            changes: vec![
                Change::Put {
                    task: limited,
                    created: true,
                },
                Change::Remove {
                    name: TaskName::parse("loop").unwrap(),
                    cause: Removal::Capped {
                        trip: Trip {
                            owner: Some(1000),
                            at: Timestamp::from_nanos(30),
                            held: Duration::from_nanos(20),
                            limit: Duration::from_nanos(20),
                        },
                    },
                },
            ],
            events: Vec::new(),
            keep_events_from: 0,
            trim_slack: 0,
        };
        let mut frame = Vec::new();
        let slot = Slot {
            lsn: 1,
            position: 0,
            size: 4096,
        };
        encode_batch(&mut frame, slot, &batch.changes, std::iter::empty(), (0, 0));
        let mut ring = vec![0u8; 4096];
        ring[..frame.len()].copy_from_slice(&frame);
        assert_eq!(scan(&ring, 0, 1).batches, [(1, batch)]);
    }

    #[test]
    fn payloads_that_do_not_decode_say_why() {
        let payload_of = |batch: &BatchRecord| {
            let mut frame = Vec::new();
            let slot = Slot {
                lsn: 1,
                position: 0,
                size: 4096,
            };
            let events = batch.events.iter().map(|(s, l)| (*s, l.as_slice()));
            let bounds = (batch.keep_events_from, batch.trim_slack);
            encode_batch(&mut frame, slot, &batch.changes, events, bounds);
            let length = u32::from_le_bytes([frame[8], frame[9], frame[10], frame[11]]) as usize;
            frame[HEADER_LEN..HEADER_LEN + length].to_vec()
        };
        let good = payload_of(&batch(1));
        assert_eq!(
            decode_batch(&good, FORMAT, &mut record::Texts::default()),
            Ok(batch(1))
        );
        // The first change is a put of `t1`: kind, name length, name, then
        // `started_at` and `expires_at`.
        let mut bad_name = good.clone();
        bad_name[7] = b'/';
        let mut backwards = good.clone();
        backwards[9..17].copy_from_slice(&u64::MAX.to_le_bytes());
        let mut trailing = good.clone();
        trailing.push(0);
        let cases = [
            (
                good[..good.len() - 1].to_vec(),
                PayloadError::Field(FieldError::Short { wanted: 8, left: 7 }),
                "8 bytes wanted, 7 left",
            ),
            (bad_name, PayloadError::Name, "a change names no valid task"),
            (
                backwards,
                PayloadError::Order(TaskName::parse("t1").unwrap()),
                "task t1 starts after it expires",
            ),
            (
                trailing,
                PayloadError::Trailing(1),
                "1 bytes after the batch",
            ),
        ];
        for (payload, error, message) in cases {
            assert_eq!(
                decode_batch(&payload, FORMAT, &mut record::Texts::default()),
                Err(error.clone())
            );
            assert_eq!(error.to_string(), message);
        }
        assert_eq!(
            PayloadError::ChangeKind(9).to_string(),
            "unknown change kind 9"
        );
    }

    #[test]
    fn placement_wraps_with_or_without_a_marker() {
        assert_eq!(place(0, 64, 1024), (0, false));
        assert_eq!(place(960, 64, 1024), (960, false));
        assert_eq!(place(968, 64, 1024), (1024, true));
        assert_eq!(place(1000, 64, 1024), (1024, false));
        assert_eq!(place(2040, 8, 1024), (2040, false));
    }
}
