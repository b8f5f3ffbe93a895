//! The on-disk layout of one task row: a small versioned binary record with a
//! CRC-32 of its contents.
//!
//! Pure; depends on [`crate::time`] and [`crate::tasks`] only. The store keys
//! rows by task name and stores this record as the value. The checksum also
//! covers the name, so a record found under the wrong key fails it. The
//! write-ahead log's frames ([`crate::store::frame`]) carry a task's
//! [details](encode_details) in the same layout.
//!
//! Version 1 (21 bytes, integers little-endian), written by the releases
//! before holders existed and still read:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | version, `1` |
//! | 1 | 8 | `started_at`, ns since the epoch |
//! | 9 | 8 | `expires_at`, ns since the epoch |
//! | 17 | 4 | CRC-32 (IEEE) of version, name bytes, `started_at`, `expires_at` |
//!
//! Version 2 (the release with holders, still read; its rows are root's):
//! version `2`, `started_at`, `expires_at`, the *details*, then the CRC-32
//! of version, name bytes and everything after the version up to the CRC.
//!
//! Version 3 (still read) is version 2 with the owner's uid (`u32`,
//! [`UNKNOWN_OWNER`] when unknown) between `expires_at` and the details.
//!
//! Version 4 (still read) is version 3 whose details end with a second
//! presence byte: bit 0, the task's own hold limit (`max_held_for`)
//! follows as `u64` nanoseconds.
//!
//! Version 5 (what this build writes) is version 4 in which the holder's
//! command and parent command may each be a *reference*: the length
//! [`TEXT_REFERENCE`] (`0xFFFF`) then a `u64` key: the text's FNV-1a hash,
//! among the texts of the row's own chunk (`crate::store::chunk`), or, for
//! a row of the release before chunks or a quarantined row, in the
//! database's `texts` table. An agent's
//! tasks all carry its parent's command line, up to 256 bytes: stored in
//! each row it made rows of ~300 bytes where the rest is ~60, and the
//! checkpoint's B-tree work grows with the bytes. Log frames never hold
//! references.
//!
//! The details are a presence byte, then each present field in this order:
//!
//! | bit | field | encoding |
//! |---|---|---|
//! | 0 | `holder.pid` | `u32` |
//! | 1 | `holder.uid` | `u32` |
//! | 2 | `holder.command` | text |
//! | 3 | `holder.parent_pid` | `u32` |
//! | 4 | `holder.parent_command` | text |
//! | 5 | `reason` | text |
//! | 6 | `binding` | `u32` pid, `u64` start time (clock ticks since boot) |
//! | 7 | a holder is recorded (even if all its fields are unknown) | |
//!
//! Text is a `u16` byte length and UTF-8 bytes, at most [`MAX_TEXT_LEN`].
//! A task without details costs 26 bytes.

use std::fmt;
use std::sync::Arc;

mod texts;

pub use texts::Texts;

use crate::tasks::{Binding, Holder, NameError, Task, TaskName};
use crate::time::Timestamp;

/// The version this build writes.
pub const VERSION: u8 = 5;

/// The version before shared command lines, still read.
pub const VERSION_4: u8 = 4;

/// The version before hold limits, still read.
pub const VERSION_3: u8 = 3;

/// The first version, still read.
pub const VERSION_1: u8 = 1;

/// The version before owners, still read.
pub const VERSION_2: u8 = 2;

/// The stored owner of a task whose creator's uid was unknown: `(uid_t)-1`,
/// which `setuid` refuses, so no process has it.
pub const UNKNOWN_OWNER: u32 = u32::MAX;

/// The owner of rows written before owners existed: they were created by
/// whoever could reach the socket, and only root may now release them.
pub const LEGACY_OWNER: u32 = crate::tasks::ROOT_UID;

/// Size of a version-1 record.
pub const RECORD_V1_LEN: usize = 21;

/// The length of a text field that is a reference: a `u64` key (of the
/// chunk's texts, or the `texts` table's) follows instead of the text (version 5, holder command
/// lines only). Far above [`MAX_TEXT_LEN`], so no text has it.
pub const TEXT_REFERENCE: u16 = u16::MAX;

/// Longest text field accepted on decode. Holder fields and reasons are
/// bounded far below this when they are made; a longer one is damage.
pub const MAX_TEXT_LEN: usize = 1024;

const HOLDER_PID: u8 = 1;
const HOLDER_UID: u8 = 1 << 1;
const HOLDER_COMMAND: u8 = 1 << 2;
const HOLDER_PARENT_PID: u8 = 1 << 3;
const HOLDER_PARENT_COMMAND: u8 = 1 << 4;
const REASON: u8 = 1 << 5;
const BINDING: u8 = 1 << 6;
const HOLDER: u8 = 1 << 7;
/// Bit 0 of the second presence byte (version 4): the task's own hold limit.
const MAX_HELD_FOR: u8 = 1;

/// Bytes before the details: version and the two timestamps (and, from
/// version 3, the owner).
const FIXED_LEN_V2: usize = 17;
pub(crate) const FIXED_LEN: usize = 21;
pub(crate) const CRC_LEN: usize = 4;

/// Why a stored record could not be read back.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordError {
    /// Not the length of any known version.
    Length(usize),
    /// A version this build does not know.
    Version(u8),
    /// The checksum does not match the contents.
    Checksum { stored: u32, computed: u32 },
    /// The key is not UTF-8.
    KeyNotUtf8,
    /// The key is not a valid task name.
    Name(NameError),
    /// `started_at` is after `expires_at`.
    Order,
    /// The details do not decode.
    Details(FieldError),
    /// Bytes follow the details.
    TrailingDetails(usize),
    /// A chunk's checksum does not match: it is kept whole, and what of it
    /// still reads is served.
    ChunkChecksum,
    /// A removal whose name does not match its checksum (the chunk's
    /// checksum failed).
    Removal,
    /// A chunk whose header does not read: none of it can be read.
    Chunk,
    /// A row that a damaged stretch of a newer run may have replaced (with
    /// a newer version, or a removal): kept, not served.
    Shadowed,
    /// A row whose name is not after the row's before it, where names
    /// ascend: kept, not served.
    OutOfOrder,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Length(len) => write!(f, "record is {len} bytes, too short or too long"),
            RecordError::Version(v) => write!(
                f,
                "record version {v} is unknown (this build writes {VERSION})"
            ),
            RecordError::Checksum { stored, computed } => write!(
                f,
                "record checksum {stored:#010x} does not match its contents ({computed:#010x})"
            ),
            RecordError::KeyNotUtf8 => write!(f, "record key is not a task name: not UTF-8"),
            RecordError::Name(why) => write!(f, "record key is not a task name: {why}"),
            RecordError::Order => write!(f, "record starts after it expires"),
            RecordError::Details(why) => write!(f, "record details do not decode: {why}"),
            RecordError::TrailingDetails(len) => write!(
                f,
                "record details do not decode: {len} bytes after the details"
            ),
            RecordError::ChunkChecksum => write!(
                f,
                "a chunk's checksum does not match its contents: it is kept whole, and what of it still reads is served"
            ),
            RecordError::Removal => write!(f, "a removal's checksum does not match its name"),
            RecordError::Chunk => write!(f, "a chunk's header does not read: it is kept whole"),
            RecordError::Shadowed => write!(
                f,
                "a damaged stretch of a newer run may have replaced this row: it is kept, not served"
            ),
            RecordError::OutOfOrder => write!(
                f,
                "the row is out of name order in its chunks: it is kept, not served"
            ),
        }
    }
}

impl std::error::Error for RecordError {}

/// Why bytes do not read as the fields of a task's details or of a log
/// frame's payload: what [`Reader`] and [`decode_details`] report.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FieldError {
    /// Fewer bytes are left than the next field needs.
    Short { wanted: usize, left: usize },
    /// A text field longer than [`MAX_TEXT_LEN`].
    TextTooLong(usize),
    /// A text field that is not UTF-8.
    TextNotUtf8,
    /// Holder fields are marked present but the holder is not.
    HolderFieldsWithoutHolder,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldError::Short { wanted, left } => write!(f, "{wanted} bytes wanted, {left} left"),
            FieldError::TextTooLong(len) => write!(f, "a {len}-byte text field"),
            FieldError::TextNotUtf8 => write!(f, "a text field is not UTF-8"),
            FieldError::HolderFieldsWithoutHolder => write!(f, "holder fields without a holder"),
        }
    }
}

impl std::error::Error for FieldError {}

/// Encodes a task's value bytes (version 5), every text in place.
pub fn encode(task: &Task) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(task, &mut out, |_| None);
    out
}

/// [`encode`] into `out`, which is cleared first: a checkpoint encodes
/// thousands of rows into one buffer instead of allocating (and, as the
/// details grow it, reallocating) a vector for each. `refer` gives the
/// `texts` key of a holder command line the table holds, written as a
/// reference; `None` writes the text in place.
pub fn encode_into(task: &Task, out: &mut Vec<u8>, refer: impl FnMut(&Arc<str>) -> Option<u64>) {
    out.clear();
    // Enough when references replace only texts of 10 bytes or more (the
    // store's are of `SHARE_TEXT_AT`, 32); otherwise the vector grows.
    out.reserve(FIXED_LEN + details_len(task) + CRC_LEN);
    out.push(VERSION);
    out.extend_from_slice(&task.started_at.as_nanos().to_le_bytes());
    out.extend_from_slice(&task.expires_at.as_nanos().to_le_bytes());
    out.extend_from_slice(&encode_owner(task.owner).to_le_bytes());
    write_details(task, out, refer);
    let crc = checksum(task.name.as_str(), out);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// How many bytes [`encode_details`] appends for `task`.
pub fn details_len(task: &Task) -> usize {
    let text = |text: Option<&str>| text.map_or(0, |t| 2 + floor_char_boundary(t, MAX_TEXT_LEN));
    let holder = task.holder.as_ref().map_or(0, |h| {
        4 * usize::from(h.pid.is_some())
            + 4 * usize::from(h.uid.is_some())
            + 4 * usize::from(h.parent_pid.is_some())
            + text(h.command.as_deref())
            + text(h.parent_command.as_deref())
    });
    let binding = if task.binding.is_some() { 4 + 8 } else { 0 };
    let limit = if task.max_held_for.is_some() { 8 } else { 0 };
    // The two presence bytes, then the fields.
    2 + holder + text(task.reason.as_deref()) + binding + limit
}

/// The stored form of an owner.
pub fn encode_owner(owner: Option<u32>) -> u32 {
    owner.unwrap_or(UNKNOWN_OWNER)
}

/// An owner from its stored form.
pub fn decode_owner(stored: u32) -> Option<u32> {
    (stored != UNKNOWN_OWNER).then_some(stored)
}

/// Appends a task's details (holder, reason, binding) to `out`, every
/// text in place: a log frame's layout.
pub fn encode_details(task: &Task, out: &mut Vec<u8>) {
    write_details(task, out, |_| None);
}

/// [`encode_details`], writing the holder command lines `refer` has a key
/// for as references.
fn write_details(task: &Task, out: &mut Vec<u8>, mut refer: impl FnMut(&Arc<str>) -> Option<u64>) {
    let holder = task.holder.as_ref();
    let field = |present: bool, bit: u8| if present { bit } else { 0 };
    let presence = field(holder.is_some(), HOLDER)
        | field(holder.is_some_and(|h| h.pid.is_some()), HOLDER_PID)
        | field(holder.is_some_and(|h| h.uid.is_some()), HOLDER_UID)
        | field(holder.is_some_and(|h| h.command.is_some()), HOLDER_COMMAND)
        | field(
            holder.is_some_and(|h| h.parent_pid.is_some()),
            HOLDER_PARENT_PID,
        )
        | field(
            holder.is_some_and(|h| h.parent_command.is_some()),
            HOLDER_PARENT_COMMAND,
        )
        | field(task.reason.is_some(), REASON)
        | field(task.binding.is_some(), BINDING);
    out.push(presence);
    let text = |out: &mut Vec<u8>, text: &str| {
        let bytes = &text.as_bytes()[..floor_char_boundary(text, MAX_TEXT_LEN)];
        out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
        out.extend_from_slice(bytes);
    };
    if let Some(holder) = holder {
        if let Some(pid) = holder.pid {
            out.extend_from_slice(&pid.to_le_bytes());
        }
        if let Some(uid) = holder.uid {
            out.extend_from_slice(&uid.to_le_bytes());
        }
        let mut command_line = |out: &mut Vec<u8>, command: &Arc<str>| match refer(command) {
            Some(key) => {
                out.extend_from_slice(&TEXT_REFERENCE.to_le_bytes());
                out.extend_from_slice(&key.to_le_bytes());
            }
            None => text(out, command),
        };
        if let Some(command) = &holder.command {
            command_line(out, command);
        }
        if let Some(pid) = holder.parent_pid {
            out.extend_from_slice(&pid.to_le_bytes());
        }
        if let Some(command) = &holder.parent_command {
            command_line(out, command);
        }
    }
    if let Some(reason) = &task.reason {
        text(out, reason);
    }
    if let Some(binding) = task.binding {
        out.extend_from_slice(&binding.pid.to_le_bytes());
        out.extend_from_slice(&binding.start_time.to_le_bytes());
    }
    match task.max_held_for {
        Some(limit) => {
            out.push(MAX_HELD_FOR);
            let nanos = u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX);
            out.extend_from_slice(&nanos.to_le_bytes());
        }
        None => out.push(0),
    }
}

/// A task's details as [`encode_details`] wrote them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Details {
    pub holder: Option<Holder>,
    pub reason: Option<String>,
    pub binding: Option<Binding>,
    pub max_held_for: Option<std::time::Duration>,
}

impl Details {
    /// Moves the details into `task`.
    pub fn apply_to(self, task: &mut Task) {
        task.holder = self.holder;
        task.reason = self.reason;
        task.binding = self.binding;
        task.max_held_for = self.max_held_for;
    }
}

/// What a layout of the details may hold beyond version 2's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// A second presence byte and the hold limit end the details (record
    /// version 4, log format 4).
    pub limit: bool,
    /// Holder command lines may be references (record version 5).
    pub references: bool,
}

impl Layout {
    /// A log frame's details: never references.
    pub fn frame(limit: bool) -> Layout {
        Layout {
            limit,
            references: false,
        }
    }

    /// A row's details, by its version.
    fn record(version: u8) -> Layout {
        Layout {
            limit: version >= VERSION_4,
            references: version >= VERSION,
        }
    }
}

/// Reads the details at the start of `bytes`, laid out as `layout` says;
/// returns them and the number of bytes they took. References are looked
/// up in `texts`.
///
/// # Errors
/// [`FieldError`] saying which field does not read.
pub fn decode_details(
    bytes: &[u8],
    layout: Layout,
    texts: &mut Texts,
) -> Result<(Details, usize), FieldError> {
    let mut reader = Reader::new(bytes);
    let presence = reader.u8()?;
    let has = |bit: u8| presence & bit != 0;
    let mut details = Details::default();
    let holder_bits =
        HOLDER_PID | HOLDER_UID | HOLDER_COMMAND | HOLDER_PARENT_PID | HOLDER_PARENT_COMMAND;
    if presence & holder_bits != 0 && !has(HOLDER) {
        return Err(FieldError::HolderFieldsWithoutHolder);
    }
    if has(HOLDER) {
        let mut holder = Holder::default();
        if has(HOLDER_PID) {
            holder.pid = Some(reader.u32()?);
        }
        if has(HOLDER_UID) {
            holder.uid = Some(reader.u32()?);
        }
        if has(HOLDER_COMMAND) {
            holder.command = reader.command_line(layout, texts)?;
        }
        if has(HOLDER_PARENT_PID) {
            holder.parent_pid = Some(reader.u32()?);
        }
        if has(HOLDER_PARENT_COMMAND) {
            holder.parent_command = reader.command_line(layout, texts)?;
        }
        details.holder = Some(holder);
    }
    if has(REASON) {
        details.reason = Some(reader.text()?);
    }
    if has(BINDING) {
        let pid = reader.u32()?;
        let start_time = reader.u64()?;
        details.binding = Some(Binding { pid, start_time });
    }
    if layout.limit && reader.u8()? & MAX_HELD_FOR != 0 {
        details.max_held_for = Some(std::time::Duration::from_nanos(reader.u64()?));
    }
    Ok((details, reader.used))
}

/// The `texts` keys a version-5 row stored under `name` refers to; none
/// for an older row, or one that does not read or fails its checksum
/// (what it referred to is recounted at the next load, which quarantines
/// it).
pub fn references(name: &[u8], bytes: &[u8]) -> [Option<u64>; 2] {
    match check(name, bytes) {
        Ok(()) => references_read(&bytes[..bytes.len() - CRC_LEN]),
        Err(_) => [None; 2],
    }
}

/// Whether `bytes`, stored under `name`, is a record of this version that
/// passes its checksum: what a row of a damaged chunk must be to be copied
/// on.
///
/// # Errors
/// Why it is not: its length, its version or its checksum.
pub fn check(name: &[u8], bytes: &[u8]) -> Result<(), RecordError> {
    match bytes.first() {
        Some(&VERSION) if bytes.len() >= FIXED_LEN + 1 + CRC_LEN => {}
        Some(&VERSION) | None => return Err(RecordError::Length(bytes.len())),
        Some(&other) => return Err(RecordError::Version(other)),
    }
    let (body, crc) = bytes.split_at(bytes.len() - CRC_LEN);
    let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let computed = checksum_bytes(name, body);
    if stored != computed {
        return Err(RecordError::Checksum { stored, computed });
    }
    Ok(())
}

/// The keys a quarantined row may refer to, read as version 5 whatever
/// its version byte or checksum says: whatever of its bytes still reads,
/// so that the texts it names are kept with it. A key read from damaged
/// bytes keeps at most a text that would otherwise go.
pub fn references_kept(bytes: &[u8]) -> [Option<u64>; 2] {
    if bytes.len() < FIXED_LEN + 1 + CRC_LEN {
        return [None; 2];
    }
    references_read(&bytes[..bytes.len() - CRC_LEN])
}

/// The keys the details after the fixed fields of `body` (a version-5
/// row less its checksum) refer to, as far as they read.
fn references_read(body: &[u8]) -> [Option<u64>; 2] {
    let mut keys = [None; 2];
    let mut reader = Reader::new(&body[FIXED_LEN..]);
    let mut walk = || -> Result<(), FieldError> {
        let presence = reader.u8()?;
        let has = |bit: u8| presence & HOLDER != 0 && presence & bit != 0;
        let command_line = |reader: &mut Reader<'_>| -> Result<Option<u64>, FieldError> {
            match reader.u16()? {
                TEXT_REFERENCE => reader.u64().map(Some),
                len => reader.take(usize::from(len)).map(|_| None),
            }
        };
        if has(HOLDER_PID) {
            reader.u32()?;
        }
        if has(HOLDER_UID) {
            reader.u32()?;
        }
        if has(HOLDER_COMMAND) {
            keys[0] = command_line(&mut reader)?;
        }
        if has(HOLDER_PARENT_PID) {
            reader.u32()?;
        }
        if has(HOLDER_PARENT_COMMAND) {
            keys[1] = command_line(&mut reader)?;
        }
        Ok(())
    };
    // What was read before a field that does not read stands.
    let _ = walk();
    keys
}

/// A cursor over little-endian fields, shared by records and log frames.
/// Running out of bytes is [`FieldError::Short`], saying how many were
/// wanted.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    used: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, used: 0 }
    }

    /// The bytes not read yet.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.bytes
    }

    pub(crate) fn take(&mut self, len: usize) -> Result<&'a [u8], FieldError> {
        if self.bytes.len() < len {
            return Err(FieldError::Short {
                wanted: len,
                left: self.bytes.len(),
            });
        }
        let (head, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        self.used += len;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, FieldError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, FieldError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, FieldError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, FieldError> {
        Ok(read_u64(self.take(8)?))
    }

    fn text(&mut self) -> Result<String, FieldError> {
        self.str().map(str::to_owned)
    }

    /// A text field, borrowed from the bytes.
    fn str(&mut self) -> Result<&'a str, FieldError> {
        let len = self.u16()?;
        self.str_of(len)
    }

    /// The `len` bytes of a text field whose length was read.
    fn str_of(&mut self, len: u16) -> Result<&'a str, FieldError> {
        let len = usize::from(len);
        if len > MAX_TEXT_LEN {
            return Err(FieldError::TextTooLong(len));
        }
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map_err(|_| FieldError::TextNotUtf8)
    }

    /// A holder's command line: its text, or (where `layout` allows) the
    /// text a reference names in `texts`; `None` if that text is missing or
    /// damaged ([`Texts::missing`] counts it): the task is still good, only
    /// what it says of its holder's command line is lost.
    fn command_line(
        &mut self,
        layout: Layout,
        texts: &mut Texts,
    ) -> Result<Option<Arc<str>>, FieldError> {
        match self.u16()? {
            TEXT_REFERENCE if layout.references => {
                let key = self.u64()?;
                Ok(texts.stored(key))
            }
            len => Ok(Some(texts.share(self.str_of(len)?))),
        }
    }
}

/// The largest index at most `max` that falls on a character boundary.
fn floor_char_boundary(text: &str, max: usize) -> usize {
    if text.len() <= max {
        return text.len();
    }
    (0..=max)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0)
}

/// Decodes the row stored under `key`, of any version; rows before
/// version 3 are [`LEGACY_OWNER`]'s.
///
/// # Errors
/// [`RecordError`] for any record this build cannot trust.
pub fn decode(key: &[u8], bytes: &[u8], texts: &mut Texts) -> Result<Task, RecordError> {
    texts.begin_row();
    let key = std::str::from_utf8(key).map_err(|_| RecordError::KeyNotUtf8)?;
    let name = TaskName::parse(key).map_err(RecordError::Name)?;
    let Some(&version) = bytes.first() else {
        return Err(RecordError::Length(0));
    };
    match version {
        VERSION_1 if bytes.len() != RECORD_V1_LEN => return Err(RecordError::Length(bytes.len())),
        VERSION_2 if bytes.len() < FIXED_LEN_V2 + 1 + CRC_LEN => {
            return Err(RecordError::Length(bytes.len()));
        }
        VERSION_3 | VERSION_4 | VERSION if bytes.len() < FIXED_LEN + 1 + CRC_LEN => {
            return Err(RecordError::Length(bytes.len()));
        }
        VERSION_1 | VERSION_2 | VERSION_3 | VERSION_4 | VERSION => {}
        other => return Err(RecordError::Version(other)),
    }
    let (body, crc) = bytes.split_at(bytes.len() - CRC_LEN);
    let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let computed = checksum(key, body);
    if stored != computed {
        return Err(RecordError::Checksum { stored, computed });
    }
    let started_at = Timestamp::from_nanos(read_u64(&body[1..9]));
    let expires_at = Timestamp::from_nanos(read_u64(&body[9..17]));
    if started_at > expires_at {
        return Err(RecordError::Order);
    }
    let mut task = Task::new(name, started_at, expires_at);
    task.owner = Some(LEGACY_OWNER);
    let details_at = match version {
        VERSION_1 => return Ok(task),
        VERSION_2 => FIXED_LEN_V2,
        _ => {
            let stored = u32::from_le_bytes([body[17], body[18], body[19], body[20]]);
            task.owner = decode_owner(stored);
            FIXED_LEN
        }
    };
    {
        let details = &body[details_at..];
        let (decoded, used) = decode_details(details, Layout::record(version), texts)
            .map_err(RecordError::Details)?;
        if used != details.len() {
            return Err(RecordError::TrailingDetails(details.len() - used));
        }
        decoded.apply_to(&mut task);
    }
    Ok(task)
}

/// CRC of the version byte, the name, then the rest of `body`.
fn checksum(name: &str, body: &[u8]) -> u32 {
    checksum_bytes(name.as_bytes(), body)
}

/// [`checksum`] of a name not known to be UTF-8.
fn checksum_bytes(name: &[u8], body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&body[..1]);
    hasher.update(name);
    hasher.update(&body[1..]);
    hasher.finalize()
}

/// A little-endian `u64` from exactly 8 bytes.
pub(crate) fn read_u64(bytes: &[u8]) -> u64 {
    let mut array = [0u8; 8];
    array.copy_from_slice(bytes);
    u64::from_le_bytes(array)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row decoded on its own, sharing nothing.
    fn decode(key: &[u8], bytes: &[u8]) -> Result<Task, RecordError> {
        super::decode(key, bytes, &mut Texts::default())
    }

    fn task() -> Task {
        Task::new(
            TaskName::parse("agent").unwrap(),
            Timestamp::from_nanos(1_780_420_274_555_839_485),
            Timestamp::from_nanos(1_780_423_874_555_839_485),
        )
    }

    fn detailed() -> Task {
        Task {
            owner: Some(1000),
            holder: Some(Holder {
                pid: Some(4242),
                uid: Some(1000),
                command: Some("curl".into()),
                parent_pid: Some(4200),
                parent_command: Some("bash ./heartbeat.sh".into()),
            }),
            reason: Some("fix the failing tests ✓".into()),
            binding: Some(Binding {
                pid: 4300,
                start_time: 123_456_789,
            }),
            ..task()
        }
    }

    /// A version-1 record of [`task`], byte for byte as the release before
    /// holders wrote it.
    const V1_AGENT: &str = "01fde3cd7fce52b518fd8386b01456b5182ddfe590";

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn rows_decoded_with_one_texts_share_their_command_lines() {
        let mut texts = Texts::default();
        let other = Task {
            name: TaskName::parse("other").unwrap(),
            ..detailed()
        };
        let first = super::decode(b"agent", &encode(&detailed()), &mut texts).unwrap();
        let second = super::decode(b"other", &encode(&other), &mut texts).unwrap();
        assert_eq!((&first, &second), (&detailed(), &other));
        let (first, second) = (first.holder.unwrap(), second.holder.unwrap());
        assert!(first.shares_texts_with(&second));
        // Decoded apart, each row has its own.
        let apart = decode(b"other", &encode(&other)).unwrap().holder.unwrap();
        assert!(!Arc::ptr_eq(
            first.command.as_ref().unwrap(),
            apart.command.as_ref().unwrap()
        ));
    }

    #[test]
    fn round_trips() {
        for task in [task(), detailed()] {
            let bytes = encode(&task);
            assert_eq!(decode(b"agent", &bytes), Ok(task));
        }
        assert_eq!(encode(&task()).len(), 27);
        let limited = Task {
            max_held_for: Some(std::time::Duration::from_millis(2500)),
            ..detailed()
        };
        assert_eq!(decode(b"agent", &encode(&limited)), Ok(limited));
        let partial = Task {
            holder: Some(Holder {
                uid: Some(0),
                ..Holder::default()
            }),
            ..task()
        };
        assert_eq!(decode(b"agent", &encode(&partial)), Ok(partial));
        let unknown = Task {
            holder: Some(Holder::default()),
            ..task()
        };
        assert_eq!(decode(b"agent", &encode(&unknown)), Ok(unknown));
    }

    #[test]
    fn the_reserved_length_is_exact_and_a_reused_buffer_encodes_the_same() {
        let long = "x".repeat(MAX_TEXT_LEN + 10);
        let tasks = [
            task(),
            detailed(),
            Task {
                max_held_for: Some(std::time::Duration::from_secs(3)),
                reason: Some(long.clone()),
                holder: Some(Holder {
                    command: Some(long.as_str().into()),
                    ..Holder::default()
                }),
                ..task()
            },
            Task {
                holder: Some(Holder::default()),
                ..task()
            },
        ];
        let mut reused = vec![0xAA; 3000];
        for task in &tasks {
            let mut details = Vec::new();
            encode_details(task, &mut details);
            assert_eq!(details.len(), details_len(task), "{task:?}");
            encode_into(task, &mut reused, |_| None);
            assert_eq!(reused, encode(task));
            assert_eq!(reused.len(), FIXED_LEN + details_len(task) + CRC_LEN);
        }
    }

    /// A version-2 record of [`detailed`] (its reason ending in a check
    /// mark) as the release before owners wrote it (commit 7ca5ad3).
    const V2_AGENT: &str = include_str!("../../tests/fixtures/record-v2-7ca5ad3.hex");

    #[test]
    fn version_1_records_still_load_as_roots() {
        let root = Task {
            owner: Some(0),
            ..task()
        };
        assert_eq!(decode(b"agent", &hex(V1_AGENT)), Ok(root));
    }

    #[test]
    fn version_2_records_still_load_as_roots_with_their_details() {
        let bytes = hex(V2_AGENT.trim());
        assert_eq!(bytes[0], VERSION_2);
        let expected = Task {
            owner: Some(0),
            ..detailed()
        };
        assert_eq!(decode(b"agent", &bytes), Ok(expected));
        // A truncated version-2 record is refused.
        assert!(decode(b"agent", &bytes[..bytes.len() - 5]).is_err());
    }

    /// [`detailed`] as version 4 wrote it: version 5 with every text in
    /// place, numbered 4.
    fn version_4(task: &Task) -> Vec<u8> {
        let v5 = encode(task);
        let mut v4 = v5[..v5.len() - CRC_LEN].to_vec();
        v4[0] = VERSION_4;
        let crc = checksum(task.name.as_str(), &v4);
        v4.extend_from_slice(&crc.to_le_bytes());
        v4
    }

    #[test]
    fn version_4_records_still_load_and_hold_no_references() {
        assert_eq!(decode(b"agent", &version_4(&detailed())), Ok(detailed()));
        // In version 4 the reference length is a text too long.
        let mut texts = Texts::default();
        texts.store(7, "bash ./heartbeat.sh", 1);
        let referring = encode_referring(&detailed(), 7);
        let mut v4 = referring[..referring.len() - CRC_LEN].to_vec();
        v4[0] = VERSION_4;
        let crc = checksum("agent", &v4);
        v4.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(
            super::decode(b"agent", &v4, &mut texts),
            Err(RecordError::Details(FieldError::TextTooLong(usize::from(
                TEXT_REFERENCE
            ))))
        );
        assert_eq!(references(b"agent", &v4), [None, None]);
    }

    /// [`encode`] with the parent command line as a reference to `key`.
    fn encode_referring(task: &Task, key: u64) -> Vec<u8> {
        let parent = task.holder.as_ref().and_then(|h| h.parent_command.clone());
        let mut out = Vec::new();
        encode_into(task, &mut out, |text| {
            parent
                .as_ref()
                .is_some_and(|p| Arc::ptr_eq(p, text))
                .then_some(key)
        });
        out
    }

    #[test]
    fn references_resolve_through_the_stored_texts_and_are_counted() {
        let task = detailed();
        let bytes = encode_referring(&task, 0xfeed);
        let inline = encode(&task);
        let parent_len = "bash ./heartbeat.sh".len();
        assert_eq!(bytes.len(), inline.len() - parent_len + 8);
        assert_eq!(references(b"agent", &bytes), [None, Some(0xfeed)]);
        assert_eq!(references(b"agent", &inline), [None, None]);
        // A damaged row gives back nothing (the load recounts).
        let mut damaged = bytes.clone();
        damaged[2] ^= 1;
        assert_eq!(references(b"agent", &damaged), [None, None]);
        assert_eq!(references(b"other", &bytes), [None, None]);

        // Unknown to the table: the task reads without that line.
        let mut texts = Texts::default();
        let without = super::decode(b"agent", &bytes, &mut texts).unwrap();
        assert_eq!(without.holder.as_ref().unwrap().parent_command, None);
        assert_eq!(
            without.holder.unwrap().command,
            task.holder.as_ref().unwrap().command
        );
        texts.count_resolved();
        assert_eq!(texts.missing(), &[0xfeed]);
        // A quarantined row's keys read whatever its checksum says.
        assert_eq!(references_kept(&damaged), [None, Some(0xfeed)]);
        assert_eq!(references_kept(&bytes[..10]), [None, None]);
        let mut texts = Texts::default();
        texts.store(0xfeed, "bash ./heartbeat.sh", 2);
        texts.store(0xbeef, "nobody refers to this", 1);
        let first = super::decode(b"agent", &bytes, &mut texts).unwrap();
        assert_eq!(first, task);
        texts.count_resolved();
        let miscounted: Vec<_> = texts.miscounted().collect();
        let mut expected = vec![
            (0xfeed, "bash ./heartbeat.sh", 1),
            (0xbeef, "nobody refers to this", 0),
        ];
        let mut miscounted = miscounted;
        miscounted.sort();
        expected.sort();
        assert_eq!(miscounted, expected);
        // A row that does not decode counts nothing it resolved.
        let mut trailing = bytes[..bytes.len() - CRC_LEN].to_vec();
        trailing.push(0);
        let crc = checksum("agent", &trailing);
        trailing.extend_from_slice(&crc.to_le_bytes());
        assert!(super::decode(b"agent", &trailing, &mut texts).is_err());
        let second = super::decode(b"agent", &bytes, &mut texts).unwrap();
        texts.count_resolved();
        assert!(
            first
                .holder
                .unwrap()
                .shares_texts_with(&second.holder.unwrap())
        );
        assert_eq!(
            texts.miscounted().collect::<Vec<_>>(),
            vec![(0xbeef, "nobody refers to this", 0)]
        );
    }

    #[test]
    fn log_frames_hold_no_references() {
        let bytes = encode_referring(&detailed(), 7);
        let details = &bytes[FIXED_LEN..bytes.len() - CRC_LEN];
        let mut texts = Texts::default();
        texts.store(7, "bash ./heartbeat.sh", 1);
        assert_eq!(
            decode_details(details, Layout::frame(true), &mut texts),
            Err(FieldError::TextTooLong(usize::from(TEXT_REFERENCE)))
        );
        let (read, used) = decode_details(details, Layout::record(VERSION), &mut texts).unwrap();
        assert_eq!((read.holder, used), (detailed().holder, details.len()));
    }

    #[test]
    fn version_3_records_still_load_without_a_hold_limit() {
        // Version 4 less its second presence byte is version 3.
        let v4 = version_4(&detailed());
        let mut v3 = v4[..v4.len() - CRC_LEN - 1].to_vec();
        v3[0] = VERSION_3;
        let crc = checksum("agent", &v3);
        v3.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(decode(b"agent", &v3), Ok(detailed()));
    }

    #[test]
    fn owners_round_trip_known_unknown_and_root() {
        for owner in [Some(0), Some(1000), Some(UNKNOWN_OWNER - 1), None] {
            let task = Task { owner, ..task() };
            assert_eq!(decode(b"agent", &encode(&task)), Ok(task));
        }
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        for bytes in [
            hex(V1_AGENT),
            hex(V2_AGENT.trim()),
            version_4(&detailed()),
            encode(&detailed()),
        ] {
            for bit in 0..bytes.len() * 8 {
                let mut damaged = bytes.clone();
                damaged[bit / 8] ^= 1 << (bit % 8);
                assert!(decode(b"agent", &damaged).is_err(), "bit {bit}");
            }
        }
    }

    #[test]
    fn refuses_what_it_cannot_trust() {
        let bytes = encode(&task());
        assert_eq!(decode(b"agent", &bytes[..25]), Err(RecordError::Length(25)));
        assert_eq!(decode(b"agent", &[]), Err(RecordError::Length(0)));
        let v1 = hex(V1_AGENT);
        assert_eq!(decode(b"agent", &v1[..20]), Err(RecordError::Length(20)));
        let mut v6 = bytes.clone();
        v6[0] = 6;
        assert_eq!(decode(b"agent", &v6), Err(RecordError::Version(6)));
        assert!(matches!(
            decode(b"other", &bytes),
            Err(RecordError::Checksum { .. })
        ));
        assert!(matches!(decode(b"a/b", &bytes), Err(RecordError::Name(_))));
        assert_eq!(decode(b"\xff", &bytes), Err(RecordError::KeyNotUtf8));
        let backwards = Task {
            started_at: Timestamp::from_nanos(10),
            expires_at: Timestamp::from_nanos(5),
            ..task()
        };
        assert_eq!(
            decode(b"agent", &encode(&backwards)),
            Err(RecordError::Order)
        );
        // Details that claim more than is there, with a valid checksum.
        let mut short = vec![VERSION];
        short.extend_from_slice(&bytes[1..FIXED_LEN]);
        short.push(REASON);
        short.extend_from_slice(&9u16.to_le_bytes());
        let crc = checksum("agent", &short);
        short.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode(b"agent", &short),
            Err(RecordError::Details(FieldError::Short {
                wanted: 9,
                left: 0
            }))
        );
    }

    #[test]
    fn details_that_do_not_read_say_why() {
        let text = |len: u16, bytes: &[u8]| {
            let mut out = vec![REASON];
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(bytes);
            out
        };
        let too_long = MAX_TEXT_LEN as u16 + 1;
        let cases: [(Vec<u8>, FieldError, &str); 5] = [
            (
                vec![],
                FieldError::Short { wanted: 1, left: 0 },
                "1 bytes wanted, 0 left",
            ),
            (
                vec![HOLDER_PID, 1, 0, 0, 0],
                FieldError::HolderFieldsWithoutHolder,
                "holder fields without a holder",
            ),
            (
                vec![HOLDER | HOLDER_UID, 1, 0],
                FieldError::Short { wanted: 4, left: 2 },
                "4 bytes wanted, 2 left",
            ),
            (
                text(too_long, &[]),
                FieldError::TextTooLong(MAX_TEXT_LEN + 1),
                "a 1025-byte text field",
            ),
            (
                text(2, b"\xc3\x28"),
                FieldError::TextNotUtf8,
                "a text field is not UTF-8",
            ),
        ];
        for (bytes, error, message) in cases {
            assert_eq!(
                decode_details(&bytes, Layout::record(VERSION), &mut Texts::default()),
                Err(error.clone()),
                "{bytes:?}"
            );
            assert_eq!(error.to_string(), message);
        }
    }

    #[test]
    fn trailing_bytes_after_the_details_are_refused() {
        let mut body = encode(&task());
        body.truncate(body.len() - CRC_LEN);
        body.push(0);
        let crc = checksum("agent", &body);
        body.extend_from_slice(&crc.to_le_bytes());
        let error = decode(b"agent", &body).unwrap_err();
        assert_eq!(error, RecordError::TrailingDetails(1));
        assert_eq!(
            error.to_string(),
            "record details do not decode: 1 bytes after the details"
        );
    }
}
