//! Merging the task tables' chunks: the base and the runs read together,
//! the newest row of each name kept ([`merge`]), and what cannot be
//! trusted set aside for the quarantine ([`SetAside`]), so that damage
//! never brings back an older row ([`Lost`]). A load and a compaction
//! ([`tables`](super::tables)) both go through here.

use std::collections::HashMap;
use std::sync::Arc;

use redb::{AccessGuard, ReadableTable, TableHandle, WriteTransaction};
use tracing::{error, warn};

use super::StoreError;
use super::chunk::{Chunk, Read, Row};
use super::tables::{BASE, QUARANTINE, RUNS, io};
use super::texts::{self, TEXTS};
use crate::record::{self, RecordError};
use crate::tasks::{Task, TaskName};

/// The namespace of chunk `i`'s texts in a [`record::Texts`] (0 is the
/// `texts` table's).
pub(super) fn namespace(i: usize) -> u32 {
    u32::try_from(i + 1).unwrap_or(u32::MAX)
}

/// A chunk as stored: where it is (for the quarantine's key), the run it
/// belongs to (`None`: the base), and its bytes.
pub(super) type StoredChunk<'a> = (String, Option<u64>, AccessGuard<'a, &'static [u8]>);

/// Every chunk of the base, in order, then every chunk of the runs, in
/// order; and how many are the base's.
pub(super) fn stored_chunks<'a>(
    base: Option<&'a impl ReadableTable<u64, &'static [u8]>>,
    runs: Option<&'a impl ReadableTable<(u64, u64), &'static [u8]>>,
) -> Result<(Vec<StoredChunk<'a>>, usize), StoreError> {
    let mut stored = Vec::new();
    if let Some(base) = base {
        for row in base.iter().map_err(io)? {
            let (key, value) = row.map_err(io)?;
            stored.push((format!("~{}/{}", BASE.name(), key.value()), None, value));
        }
    }
    let n_base = stored.len();
    if let Some(runs) = runs {
        for row in runs.iter().map_err(io)? {
            let (key, value) = row.map_err(io)?;
            let (run, part) = key.value();
            stored.push((format!("~{}/{run}.{part}", RUNS.name()), Some(run), value));
        }
    }
    Ok((stored, n_base))
}

/// A chunk, opened, with its texts.
pub(super) struct Opened<'a> {
    pub(super) chunk: Chunk<'a>,
    pub(super) texts: HashMap<u64, Arc<str>>,
    /// Rows, as its header says: a load sizes its buffer by them.
    pub(super) rows: usize,
}

/// Opens each chunk and stores its texts in `texts` under its namespace;
/// `None` for one whose header does not read. A chunk that does not read
/// or fails its checksum is set aside whole, so that nothing of it is lost;
/// what of a damaged one still reads is served.
pub(super) fn open_chunks<'a>(
    stored: &'a [StoredChunk<'_>],
    texts: &mut record::Texts,
    aside: &mut SetAside,
) -> Vec<Option<Opened<'a>>> {
    let opened: Vec<Option<Opened<'a>>> = stored
        .iter()
        .enumerate()
        .map(|(i, (label, _, bytes))| {
            let Some(chunk) = Chunk::open(bytes.value()) else {
                aside.row(label.as_bytes(), bytes.value(), RecordError::Chunk);
                return None;
            };
            if !chunk.intact {
                aside.row(label.as_bytes(), bytes.value(), RecordError::ChunkChecksum);
            }
            texts.set_namespace(namespace(i));
            let mut shared = HashMap::new();
            for (key, text) in chunk.texts() {
                texts.store(key, text, 0);
                shared.insert(key, texts.share(text));
            }
            Some(Opened {
                chunk,
                texts: shared,
                rows: chunk.row_count(),
            })
        })
        .collect();
    opened
}

/// A row of the merged tables.
#[derive(Clone, Copy)]
pub(super) enum Merged<'a> {
    /// As stored in chunk `chunk` (a record, never a removal).
    Stored { chunk: usize, row: Row<'a> },
    /// A pending change's task.
    Task(&'a Task),
}

/// What a run says of a name.
enum Newest<'a> {
    Stored(usize, Row<'a>),
    Task(&'a Task),
    /// Removed: nothing older of the name is served.
    Gone,
}

/// How a row of a chunk reads.
enum Entry<'a> {
    Record(&'a [u8]),
    Removed,
    /// A record or removal that fails its check, set aside: its name as
    /// read cannot be trusted.
    Damaged,
    /// The rows stop reading here: those after it are lost.
    Lost,
}

/// Calls `each` with every row of a chunk. In a chunk that fails its
/// checksum (set aside whole), a record that fails its own and a removal
/// that fails its are set aside, and the rows past where the framing
/// breaks cannot be read.
fn each_row<'a>(
    label: &str,
    opened: &Opened<'a>,
    aside: &mut SetAside,
    mut each: impl FnMut(&'a [u8], Entry<'a>),
) {
    for read in opened.chunk.rows() {
        match read {
            Read::Row(Row {
                name,
                value: Some(value),
            }) => {
                let checked = if opened.chunk.intact {
                    Ok(())
                } else {
                    record::check(name, value)
                };
                if let Err(reason) = checked {
                    aside.chunk_row(name, value, reason, &opened.texts);
                    each(name, Entry::Damaged);
                    continue;
                }
                each(name, Entry::Record(value));
            }
            Read::Row(Row { name, value: None }) => each(name, Entry::Removed),
            Read::BadRemoval { name, row } => {
                aside.row(name, row, RecordError::Removal);
                each(name, Entry::Damaged);
            }
            Read::Unframed { at, rest } => {
                warn!(chunk = %label, at, bytes = rest.len(), "a damaged chunk's rows stop reading here");
                each(&[], Entry::Lost);
            }
        }
    }
}

/// Names a damaged stretch of a run may have held: those strictly between
/// the trusted rows around it (a run's rows ascend by name, from one chunk
/// to the next). A row older than the run with a name in it is not served
/// in place of what the stretch may have said of that name (a newer
/// version, a removal): it is set aside instead.
struct Lost<'a> {
    /// The first chunk of the damaged run: rows of chunks before it are
    /// older.
    from: usize,
    names: Names<'a>,
}

/// Which names a [`Lost`] stretch may have held.
enum Names<'a> {
    /// Those strictly between two trusted names (`None`: unbounded).
    Between(Option<&'a [u8]>, Option<&'a [u8]>),
    /// Exactly this one: a trusted row of it out of name order, whose
    /// place in the run, and so what it replaced, is in doubt.
    Exactly(&'a [u8]),
}

impl<'a> Lost<'a> {
    /// Where its names begin, for sorting: the bound, and whether it is
    /// excluded (an exact name, included, sorts first).
    fn begins(&self) -> (Option<&'a [u8]>, bool) {
        match self.names {
            Names::Between(after, _) => (after, true),
            Names::Exactly(name) => (Some(name), false),
        }
    }

    /// Whether `name` is at or past where its names begin.
    fn begun_by(&self, name: &[u8]) -> bool {
        match self.names {
            Names::Between(after, _) => after.is_none_or(|after| after < name),
            Names::Exactly(exactly) => exactly <= name,
        }
    }

    /// Whether `name` is past where its names end.
    fn ended_by(&self, name: &[u8]) -> bool {
        match self.names {
            Names::Between(_, before) => before.is_some_and(|before| before <= name),
            Names::Exactly(exactly) => exactly < name,
        }
    }

    fn hides(&self, name: &[u8], chunk: usize) -> bool {
        chunk < self.from
            && match self.names {
                Names::Between(after, before) => {
                    after.is_none_or(|after| after < name)
                        && before.is_none_or(|before| name < before)
                }
                Names::Exactly(exactly) => exactly == name,
            }
    }
}

/// The [`Lost`] stretches, asked about the names a merge emits, in
/// ascending order: each stretch is looked at only while names fall in it,
/// so a load over many damaged stretches stays about linear.
struct Shadows<'a> {
    /// Sorted by where their names begin.
    lost: Vec<Lost<'a>>,
    /// The next one not yet begun.
    next: usize,
    /// Those begun and not yet ended.
    active: Vec<usize>,
    last: Option<&'a [u8]>,
}

impl<'a> Shadows<'a> {
    fn new(mut lost: Vec<Lost<'a>>) -> Shadows<'a> {
        lost.sort_by(|a, b| a.begins().cmp(&b.begins()));
        Shadows {
            lost,
            next: 0,
            active: Vec::new(),
            last: None,
        }
    }

    /// Whether a row of `name` from chunk `chunk` is hidden.
    fn hides(&mut self, name: &'a [u8], chunk: usize) -> bool {
        if self.last.is_some_and(|last| name < last) {
            // Not in order after all: every stretch is asked.
            return self.lost.iter().any(|lost| lost.hides(name, chunk));
        }
        self.last = Some(name);
        while self
            .lost
            .get(self.next)
            .is_some_and(|lost| lost.begun_by(name))
        {
            self.active.push(self.next);
            self.next += 1;
        }
        let lost = &self.lost;
        self.active.retain(|&at| !lost[at].ended_by(name));
        self.active.iter().any(|&at| lost[at].hides(name, chunk))
    }
}

/// Reads every run, in order: each trusted row into `newest`, each
/// damaged stretch into `lost`. A row out of name order within its run is
/// set aside and counts as damage.
fn read_runs<'a>(
    stored: &[StoredChunk<'_>],
    opened: &[Option<Opened<'a>>],
    n_base: usize,
    aside: &mut SetAside,
    newest: &mut Vec<(&'a [u8], Newest<'a>)>,
    lost: &mut Vec<Lost<'a>>,
) {
    let mut i = n_base;
    while i < opened.len() {
        let (run, from) = (stored[i].1, i);
        let mut last: Option<&'a [u8]> = None;
        // A damaged stretch waiting for the trusted row after it: the
        // trusted row before it.
        let mut gap: Option<Option<&'a [u8]>> = None;
        while i < opened.len() && stored[i].1 == run {
            let Some(chunk) = &opened[i] else {
                gap.get_or_insert(last);
                i += 1;
                continue;
            };
            let at = i;
            let mut out_of_order = Vec::new();
            each_row(&stored[at].0, chunk, aside, |name, entry| {
                let in_order = last.is_none_or(|last| last < name);
                let entry = match entry {
                    Entry::Record(value) if in_order => Newest::Stored(
                        at,
                        Row {
                            name,
                            value: Some(value),
                        },
                    ),
                    Entry::Removed if in_order => Newest::Gone,
                    Entry::Record(_) | Entry::Removed => {
                        // Its name passed its check: older rows of that
                        // name are in doubt too.
                        if let Entry::Record(value) = entry {
                            out_of_order.push((name, Some(value)));
                        } else {
                            out_of_order.push((name, None));
                        }
                        lost.push(Lost {
                            from,
                            names: Names::Exactly(name),
                        });
                        gap.get_or_insert(last);
                        return;
                    }
                    Entry::Damaged | Entry::Lost => {
                        gap.get_or_insert(last);
                        return;
                    }
                };
                if let Some(after) = gap.take() {
                    lost.push(Lost {
                        from,
                        names: Names::Between(after, Some(name)),
                    });
                }
                last = Some(name);
                newest.push((name, entry));
            });
            for (name, value) in out_of_order {
                match value {
                    Some(value) => {
                        aside.chunk_row(name, value, RecordError::OutOfOrder, &chunk.texts);
                    }
                    None => warn!(
                        chunk = %stored[at].0,
                        name = %String::from_utf8_lossy(name),
                        "a removal out of name order in its run: older rows of that name are set aside"
                    ),
                }
            }
            i += 1;
        }
        if let Some(after) = gap {
            lost.push(Lost {
                from,
                names: Names::Between(after, None),
            });
        }
    }
}

/// Most rows a merge sizes its vector of run rows for from the chunks'
/// own counts, so that a damaged count cannot ask for gigabytes; more
/// still merge, the vector growing as it goes.
const PRESIZE_ROWS_AT_MOST: usize = 1 << 20;

/// Walks the rows of the base and of the runs, and `pending` (newer than
/// any run), by name, handing `emit` the newest row of each name unless it
/// is a removal. What cannot be trusted is set aside: damaged rows, rows
/// out of order, and older rows that a damaged stretch of a newer run may
/// have replaced ([`Lost`]).
pub(super) fn merge<'a>(
    stored: &[StoredChunk<'_>],
    opened: &[Option<Opened<'a>>],
    n_base: usize,
    pending: &[(&'a TaskName, &'a Option<Task>)],
    aside: &mut SetAside,
    mut emit: impl FnMut(Merged<'a>) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    // Sized once, by the intact runs' headers: grown by doubling, the
    // vector of a compaction over 130k rows was copied at every step and
    // its fresh pages faulted in again (a third of the page faults of a
    // checkpoint thread under deletes, perf).
    let run_rows: usize = opened
        .iter()
        .skip(n_base)
        .flatten()
        .filter(|opened| opened.chunk.intact)
        .map(|opened| opened.rows)
        .sum();
    let room = run_rows
        .saturating_add(pending.len())
        .min(PRESIZE_ROWS_AT_MOST);
    let mut newest: Vec<(&'a [u8], Newest<'a>)> = Vec::with_capacity(room);
    let mut lost = Vec::new();
    read_runs(stored, opened, n_base, aside, &mut newest, &mut lost);
    for (name, row) in pending {
        newest.push((
            name.as_bytes(),
            row.as_ref().map_or(Newest::Gone, Newest::Task),
        ));
    }
    // Stable: of a name's rows, the last is the newest. Kept in place: the
    // later of two rows of a name takes the earlier's slot.
    newest.sort_by(|a, b| a.0.cmp(b.0));
    newest.dedup_by(|later, earlier| {
        let same = later.0 == earlier.0;
        if same {
            std::mem::swap(later, earlier);
        }
        same
    });
    let kept = newest;
    let mut shadows = Shadows::new(lost);
    let mut emit_newest = |newest: Newest<'a>, aside: &mut SetAside| match newest {
        Newest::Stored(chunk, row) => {
            if shadows.hides(row.name, chunk) {
                if let Some(from) = &opened[chunk] {
                    let value = row.value.unwrap_or_default();
                    aside.chunk_row(row.name, value, RecordError::Shadowed, &from.texts);
                }
                return Ok(());
            }
            emit(Merged::Stored { chunk, row })
        }
        Newest::Task(task) => emit(Merged::Task(task)),
        Newest::Gone => Ok(()),
    };
    let mut next = kept.into_iter().peekable();
    let mut rows = Vec::new();
    let mut last: Option<&'a [u8]> = None;
    for (i, opened) in opened.iter().enumerate().take(n_base) {
        let Some(opened) = opened else { continue };
        rows.clear();
        each_row(&stored[i].0, opened, aside, |name, entry| {
            rows.push((name, entry))
        });
        for (name, entry) in rows.drain(..) {
            // The base holds records only; what else reads was set aside.
            let Entry::Record(value) = entry else {
                continue;
            };
            if last.is_some_and(|last| name <= last) {
                aside.chunk_row(name, value, RecordError::OutOfOrder, &opened.texts);
                continue;
            }
            last = Some(name);
            while let Some((_, newer)) = next.next_if(|(at, _)| *at < name) {
                emit_newest(newer, aside)?;
            }
            if let Some((_, newer)) = next.next_if(|(at, _)| *at == name) {
                emit_newest(newer, aside)?;
                continue;
            }
            let row = Row {
                name,
                value: Some(value),
            };
            emit_newest(Newest::Stored(i, row), aside)?;
        }
    }
    for (_, newer) in next {
        emit_newest(newer, aside)?;
    }
    Ok(())
}

/// What a load or a compaction could not trust: moved to the quarantine
/// table by [`SetAside::commit`], never served, never deleted.
#[derive(Default)]
pub(super) struct SetAside {
    /// Key, bytes, and why.
    rows: Vec<(Vec<u8>, Vec<u8>, RecordError)>,
    /// The texts that set-aside records of chunks name, by key (`None`:
    /// their chunk lost it): kept in the `texts` table for them.
    named: Vec<(u64, Option<Arc<str>>)>,
}

impl SetAside {
    pub(super) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub(super) fn row(&mut self, key: &[u8], bytes: &[u8], reason: RecordError) {
        self.rows.push((key.to_vec(), bytes.to_vec(), reason));
    }

    /// A record of a chunk, with the texts it names there.
    pub(super) fn chunk_row(
        &mut self,
        name: &[u8],
        value: &[u8],
        reason: RecordError,
        texts: &HashMap<u64, Arc<str>>,
    ) {
        for key in record::references_kept(value).into_iter().flatten() {
            self.named.push((key, texts.get(&key).cloned()));
        }
        self.row(name, value, reason);
    }

    /// Logs each row and moves it to the quarantine (beside any row of the
    /// same key already there), with the texts it names.
    pub(super) fn commit(
        self,
        txn: &WriteTransaction,
        quarantined: &mut Vec<(String, RecordError)>,
    ) -> Result<(), StoreError> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let mut quarantine = txn.open_table(QUARANTINE).map_err(io)?;
        for (key, value, reason) in self.rows {
            let shown = String::from_utf8_lossy(&key).into_owned();
            error!(key = %shown, %reason, "damaged task record moved to the quarantine table; it will not be served");
            let at = quarantine_key(&quarantine, &key)?;
            quarantine
                .insert(at.as_slice(), value.as_slice())
                .map_err(io)?;
            quarantined.push((shown, reason));
        }
        if !self.named.is_empty() {
            let mut stored = txn.open_table(TEXTS).map_err(io)?;
            texts::keep_for_quarantine(&mut stored, &quarantine, &self.named)?;
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadows_asked_in_order_answer_as_every_stretch_would() {
        let names: Vec<Vec<u8>> = (0..40u8)
            .map(|i| vec![b'a' + i / 5, b'0' + i % 5])
            .collect();
        let at = |i: usize| Some(names[i].as_slice());
        let lost = || {
            vec![
                Lost {
                    from: 3,
                    names: Names::Between(at(4), at(20)),
                },
                Lost {
                    from: 5,
                    names: Names::Between(None, at(2)),
                },
                Lost {
                    from: 4,
                    names: Names::Exactly(&names[9]),
                },
                Lost {
                    from: 6,
                    names: Names::Between(at(15), at(16)),
                },
                Lost {
                    from: 2,
                    names: Names::Between(at(30), None),
                },
                Lost {
                    from: 7,
                    names: Names::Exactly(&names[30]),
                },
                Lost {
                    from: 3,
                    names: Names::Between(at(10), at(12)),
                },
            ]
        };
        let every = lost();
        for chunk in 0..8 {
            let mut shadows = Shadows::new(lost());
            for name in &names {
                let expected = every.iter().any(|lost| lost.hides(name, chunk));
                assert_eq!(shadows.hides(name, chunk), expected, "{name:?} {chunk}");
            }
            // Asked out of order, it still answers right.
            assert_eq!(
                shadows.hides(&names[1], chunk),
                every.iter().any(|lost| lost.hides(&names[1], chunk))
            );
        }
    }
}
