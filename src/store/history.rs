//! The chunks of JSON lines behind the event history and the usage
//! history (the `events` and `usage` tables): packing lines into chunks,
//! reading events back out of them, a full usage history parsed on two
//! threads a few chunks at a time, and what a usage chunk keeps once its
//! holds fall below the history's floor.

use std::time::Duration;

use redb::ReadableTable;
use tracing::warn;

use super::tables::{EVENT_CHUNK_BYTES, io};
use super::{StoreError, threads};
use crate::events::Event;

/// Chunks of usage events from which a load parses them on two threads.
/// Parsing is most of a start over a full history: 50,000 holds (some 60
/// chunks) took 230 ms, 56 % of it in `Event::from_json` (perf); on two
/// threads, about 185 ms (`cargo bench --bench startup -- --holds 50000
/// --tasks 0 --frames 0`).
const USAGE_CHUNKS_IN_PARALLEL: usize = 8;

/// Chunks of usage events a load holds at once (each guard keeps its page
/// in memory): 4 MiB, as much as redb's own cache, whatever
/// `--usage-max-holds` lets the table grow to.
const USAGE_CHUNKS_AT_ONCE: usize = 2 * USAGE_CHUNKS_IN_PARALLEL;

/// The usage events of the chunks `rows` yields (each with its key's
/// second part, its bytes read by `bytes`) that `keep` keeps, in order,
/// holding [`USAGE_CHUNKS_AT_ONCE`] at a time.
///
/// # Errors
/// The first row that could not be read.
pub(super) fn usage_in_batches<C, E>(
    mut rows: impl Iterator<Item = Result<(u64, C), E>>,
    bytes: impl Fn(&C) -> &[u8],
    keep: &(dyn Fn(&Event) -> bool + Sync),
) -> Result<Vec<Event>, E> {
    let mut events = Vec::new();
    let mut held = Vec::with_capacity(USAGE_CHUNKS_AT_ONCE);
    loop {
        held.clear();
        for row in rows.by_ref().take(USAGE_CHUNKS_AT_ONCE) {
            held.push(row?);
        }
        if held.is_empty() {
            return Ok(events);
        }
        let chunks: Vec<(u64, &[u8])> = held
            .iter()
            .map(|(key, chunk)| (*key, bytes(chunk)))
            .collect();
        events.extend(usage_events(&chunks, keep));
    }
}

/// The usage events in `chunks` (each with its key's second part) that
/// `keep` keeps, in the chunks' order: the second half of the chunks
/// parsed on a thread of its own ([`threads::both`]) once there are
/// [`USAGE_CHUNKS_IN_PARALLEL`].
pub(super) fn usage_events(
    chunks: &[(u64, &[u8])],
    keep: &(dyn Fn(&Event) -> bool + Sync),
) -> Vec<Event> {
    let parse = |chunks: &[(u64, &[u8])]| {
        let mut kept = Vec::new();
        for &(key, chunk) in chunks {
            for event in events_in(chunk) {
                match event {
                    Some(event) if keep(&event) => kept.push(event),
                    Some(_) => {}
                    None => warn!(chunk = key, "unreadable usage event skipped"),
                }
            }
        }
        kept
    };
    if chunks.len() < USAGE_CHUNKS_IN_PARALLEL {
        return parse(chunks);
    }
    let (first, second) = chunks.split_at(chunks.len() / 2);
    let (mut events, later) = threads::both("usage", || parse(first), || parse(second));
    events.extend(later);
    events
}

/// The instant, in ns, before which the usage history keeps nothing. The
/// worker's own reading of the clock: pruning a day late or early after a
/// clock step loses nothing a report needs.
pub(super) fn usage_horizon(retention: Duration) -> u64 {
    let retention = u64::try_from(retention.as_nanos()).unwrap_or(u64::MAX);
    crate::time::wall_now().as_nanos().saturating_sub(retention)
}

/// Past the usage history's floor (its holds' limit dropped what ended
/// before it): each chunk whose events all came before `floor` keeps only
/// the events that trip or re-arm a name, which the state needs for the
/// whole retention, and those numbered from `events_from`, which the event
/// history still holds ([`in_event_history`]), and goes if it has none. A
/// chunk of such lines alone is read again at each checkpoint, and left
/// as it is.
pub(super) fn keep_only_trips(
    usage: &mut redb::Table<(u64, u64), &[u8]>,
    floor: u64,
    events_from: u64,
) -> Result<(), StoreError> {
    // Each chunk read once, where it lies: what it becomes is decided
    // before the table is changed. Under churn every ended hold is read
    // back here once the limit drops it (copying each chunk out first,
    // and checking it as text, was a tenth of a checkpoint's time, perf).
    let mut cut = Vec::new();
    for row in usage.range(..(floor, 0)).map_err(io)? {
        let (key, chunk) = row.map_err(io)?;
        let chunk = chunk.value();
        // Lines are in order: from its first on, the event history holds
        // all of it, and it stays as it is.
        let first = chunk.split(|&b| b == b'\n').next().unwrap_or_default();
        if line_seq(first).is_some_and(|seq| seq >= events_from) {
            continue;
        }
        // Most chunks have no trip: one search of the whole chunk.
        if !in_event_history(chunk, events_from) && !is_trip(chunk) {
            cut.push((key.value(), Vec::new()));
            continue;
        }
        let kept: Vec<u8> = chunk
            .split_inclusive(|&b| b == b'\n')
            .filter(|line| is_trip(line) || in_event_history(line, events_from))
            .flatten()
            .copied()
            .collect();
        if kept.len() < chunk.len() {
            cut.push((key.value(), kept));
        }
    }
    for (key, kept) in cut {
        if kept.is_empty() {
            usage.remove(key).map_err(io)?;
        } else {
            usage.insert(key, kept.as_slice()).map_err(io)?;
        }
    }
    Ok(())
}

/// Whether usage lines hold a `capped` or `rearmed` event: a search for
/// its `"event"` member, which a command line's text cannot fake (its
/// quotes are escaped). `memchr`'s substring search, over the bytes as
/// they are: checking them as UTF-8 first, for the standard library's,
/// took longer than the search.
fn is_trip(lines: &[u8]) -> bool {
    const TRIPS: [&[u8]; 2] = [b"\"event\":\"capped\"", b"\"event\":\"rearmed\""];
    TRIPS
        .iter()
        .any(|kind| memchr::memmem::find(lines, kind).is_some())
}

/// Whether the last of `lines` whose number reads is numbered
/// `events_from` or later: the event history (the last
/// `--event-retention` events) still holds it. The usage table is the only
/// copy of the lines of the events that ended a hold or re-armed a name,
/// for both histories, so that a delete's line is written once; until the
/// event history has moved past them, they stay, whatever the usage
/// retention. Lines are in order, so that one is the latest; a line whose
/// number cannot be read is no part of either history, and does not
/// decide for the lines before it.
pub(super) fn in_event_history(lines: &[u8], events_from: u64) -> bool {
    last_seq(lines).is_some_and(|seq| seq >= events_from)
}

/// The number of the last of `lines` whose number reads.
pub(super) fn last_seq(lines: &[u8]) -> Option<u64> {
    lines
        .rsplit(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .find_map(line_seq)
}

/// Where the last unbroken stretch of event chunks begins: `chunks` are
/// each chunk's first number (its key) and its last one, in key order; a
/// chunk that does not begin right after the one before (or whose last
/// number does not read) breaks the stretch. 0 for none.
pub(super) fn unbroken_from(chunks: &[(u64, Option<u64>)]) -> u64 {
    let mut from = 0;
    let mut after: Option<u64> = None;
    for &(first, last) in chunks {
        if after.is_none_or(|after| after.checked_add(1) != Some(first)) {
            from = first;
        }
        after = last;
    }
    from
}

/// The sequence number of an event's line: the digits after its `"seq":`
/// member, which a string in the line cannot fake (its quotes are
/// escaped).
fn line_seq(line: &[u8]) -> Option<u64> {
    const SEQ: &[u8] = b"\"seq\":";
    let at = memchr::memmem::find(line, SEQ)?;
    let digits = &line[at + SEQ.len()..];
    let end = digits
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

/// The events of a chunk's lines, in order; `None` for a line this build
/// cannot read.
pub(super) fn events_in(chunk: &[u8]) -> impl Iterator<Item = Option<Event>> + '_ {
    chunk
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .map(Event::from_json)
}

/// Packs `lines` (each with its key) into chunks of up to
/// [`EVENT_CHUNK_BYTES`] (a longer line makes a chunk of its own), each
/// line ending in a newline, and hands `write` each chunk with the keys of
/// its lines, in order.
pub(super) fn in_chunks<'a, K>(
    lines: impl Iterator<Item = (K, &'a [u8])>,
    mut write: impl FnMut(&[K], &[u8]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut chunk: Vec<u8> = Vec::new();
    let mut keys = Vec::new();
    for (key, line) in lines {
        if chunk.capacity() == 0 {
            // Room for a whole chunk at once, not grown by doubling.
            chunk.reserve(EVENT_CHUNK_BYTES);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_events_parse_the_same_on_one_thread_or_two() {
        use crate::events::{EndedHold, EventKind};
        use crate::tasks::TaskName;
        use crate::time::Timestamp;
        let ended = |seq: u64| Event {
            seq,
            at: Timestamp::from_nanos(seq * 1_000),
            kind: EventKind::Deleted,
            task: Some(TaskName::parse(&format!("t{seq}")).unwrap()),
            expires_at: None,
            step_ns: None,
            reason: None,
            pid: None,
            ended: Some(EndedHold {
                started_at: Timestamp::from_nanos(seq * 1_000 - 500),
                ended_at: Timestamp::from_nanos(seq * 1_000),
                uid: Some(1000),
                command: Some("worker".into()),
                parent_command: None,
            }),
            limit: None,
        };
        // Chunks of three lines, one of them unreadable in some chunks.
        let texts: Vec<Vec<u8>> = (0..2 * USAGE_CHUNKS_AT_ONCE as u64 + 5)
            .map(|chunk| {
                let mut text = Vec::new();
                for seq in chunk * 3 + 1..=chunk * 3 + 3 {
                    ended(seq).write_line(&mut text);
                }
                if chunk % 4 == 1 {
                    text.extend_from_slice(b"{not an event}\n");
                }
                text
            })
            .collect();
        let chunks: Vec<(u64, &[u8])> = texts
            .iter()
            .enumerate()
            .map(|(key, text)| (key as u64, text.as_slice()))
            .collect();
        // Everything from the 10th hold's end on.
        let horizon = &|event: &Event| {
            event
                .usage_instant()
                .is_some_and(|at| at.as_nanos() >= 10_000)
        };
        let expected: Vec<u64> = (10..=3 * chunks.len() as u64).collect();
        let seqs = |events: Vec<Event>| events.iter().map(|event| event.seq).collect::<Vec<_>>();
        for n in [USAGE_CHUNKS_IN_PARALLEL - 1, chunks.len()] {
            let in_these = expected.iter().copied().filter(|&seq| seq <= 3 * n as u64);
            let in_these: Vec<u64> = in_these.collect();
            assert_eq!(
                seqs(usage_events(&chunks[..n], horizon)),
                in_these,
                "{n} chunks"
            );
            // The same a batch at a time, across the batches' edges.
            let rows = chunks[..n].iter().map(|&row| Ok::<_, ()>(row));
            let batched = usage_in_batches(rows, |chunk| chunk, horizon).unwrap();
            assert_eq!(seqs(batched), in_these, "{n} chunks in batches");
        }
        assert_eq!(usage_events(&chunks, horizon)[0], ended(10));
        // A row that cannot be read fails the load.
        let rows = chunks
            .iter()
            .enumerate()
            .map(|(at, &row)| if at == 20 { Err(at) } else { Ok(row) });
        assert_eq!(
            usage_in_batches(rows, |chunk| chunk, horizon).unwrap_err(),
            20
        );
    }

    #[test]
    fn the_history_of_an_earlier_release_begins_where_its_chunks_stop_breaking() {
        assert_eq!(unbroken_from(&[]), 0);
        assert_eq!(unbroken_from(&[(5, Some(9))]), 5);
        // Rows of one line each, then chunks, all in a row.
        let whole = [(1, Some(1)), (2, Some(2)), (3, Some(40)), (41, Some(90))];
        assert_eq!(unbroken_from(&whole), 1);
        // A checkpoint that kept from 120 on left 91..=119 out.
        let holed = [(1, Some(40)), (41, Some(90)), (120, Some(150)), (151, None)];
        assert_eq!(unbroken_from(&holed), 120);
        // A chunk whose last number does not read breaks it too.
        let unread = [(1, Some(40)), (41, None), (91, Some(99))];
        assert_eq!(unbroken_from(&unread), 91);
    }

    #[test]
    fn a_chunk_is_in_the_event_history_by_its_last_readable_line() {
        let line = |seq: u64, command: &str| {
            format!(
                "{{\"at\":\"2026-12-07T21:57:16Z\",\"command\":{command:?},\"event\":\"deleted\",\"seq\":{seq},\"task\":\"t\"}}\n"
            )
        };
        assert_eq!(line_seq(line(42, "x").as_bytes()), Some(42));
        // A command line cannot fake the member: its quotes are escaped.
        let faked = line(7, "\"seq\":99");
        assert_eq!(line_seq(faked.as_bytes()), Some(7));
        assert_eq!(line_seq(b"{\"seq\":}"), None);
        assert_eq!(line_seq(b"not an event"), None);
        let chunk = [line(5, "a"), line(9, "b")].concat();
        assert!(in_event_history(chunk.as_bytes(), 9));
        assert!(!in_event_history(chunk.as_bytes(), 10));
        // Without its last newline, and a line of one.
        assert!(in_event_history(chunk.trim_end().as_bytes(), 9));
        assert!(in_event_history(line(9, "c").as_bytes(), 1));
        assert!(!in_event_history(b"", 0));
        // A damaged last line does not decide for the lines before it.
        let damaged = [line(5, "a"), line(9, "b"), "{\"se".into()].concat();
        assert!(in_event_history(damaged.as_bytes(), 9));
        assert!(!in_event_history(b"{not an event}\n", 0));
    }
}
