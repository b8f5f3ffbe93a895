//! What kept the machine awake, and for how long: the history of ended
//! holds, the names their hold limit tripped, and the report that adds them
//! up over a window (`GET /v1/usage`).
//!
//! Pure; depends on [`crate::events`], [`crate::tasks`] and
//! [`crate::time`]. The history is fed the events of durable commits (a
//! removal's event describes the hold that ended, see
//! [`EndedHold`](crate::events::EndedHold)); the store keeps those events
//! for [`DEFAULT_USAGE_RETENTION`], so the history a restart recovers is the
//! one the daemon had.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::events::{EndedHold, Event, EventKind};
use crate::ids::IdSet;
use crate::tasks::{Removal, Task, TaskName, Trip, share};
use crate::time::Timestamp;

/// How long ended holds are kept, by default: 35 days, so the month before
/// any day can always be asked for.
pub const DEFAULT_USAGE_RETENTION: Duration = Duration::from_secs(35 * 24 * 3600);

/// Most ended holds the history keeps, by default, however recent: a hold
/// a minute for the whole default retention. Each costs about 250 bytes of
/// memory and 410 on disk, and a restart reads them all; a client that
/// churns holds (a queue worker taking one per job) would otherwise grow
/// the history with its write rate for 35 days, to gigabytes. Past the
/// limit the oldest go first, and a report's `history_from` says where
/// the kept history begins.
pub const DEFAULT_MAX_USAGE_HOLDS: usize = 50_000;

/// The largest `--usage-max-holds` accepted: ten million holds take some
/// 2.5 GiB of memory and 4 GiB on disk, read whole at every start.
pub const MAX_USAGE_HOLDS_CEILING: usize = 10_000_000;

/// Most buckets a report splits its window into: a timeline a terminal
/// can show, with room to spare, and a bounded answer.
pub const MAX_USAGE_BUCKETS: usize = 1000;

/// The window a report covers when `since` is not given.
pub const DEFAULT_USAGE_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// One hold that ended: a task from its creation to its deletion, expiry,
/// holder's exit or hold limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    pub name: TaskName,
    /// The task's owner, where known.
    pub uid: Option<u32>,
    pub command: Option<Arc<str>>,
    pub parent_command: Option<Arc<str>>,
    pub started_at: Timestamp,
    pub ended_at: Timestamp,
}

impl Hold {
    /// The hold of `name` a removal's event describes.
    fn ended(name: TaskName, ended: &EndedHold) -> Hold {
        Hold {
            name,
            uid: ended.uid,
            command: ended.command.clone(),
            parent_command: ended.parent_command.clone(),
            started_at: ended.started_at,
            ended_at: ended.ended_at,
        }
    }

    /// The hold a live (or due, not yet removed) task has had so far: up to
    /// its deadline, as its expiry would end it.
    fn of_task(task: &Task) -> Hold {
        let to_deadline = EndedHold::of(task, Removal::Expired, task.expires_at);
        Hold::ended(task.name.clone(), &to_deadline)
    }
}

/// The ended holds kept for reports.
///
/// Invariant: `holds` are in the order their events were recorded; every
/// one ended at or after the horizon of the latest [`prune`](Self::prune);
/// there are at most `max_holds` + `max_holds` / 8 of them (dropped down
/// to `max_holds` past that, so that each drop moves many at once).
#[derive(Debug)]
pub struct History {
    holds: Vec<Hold>,
    retention: Duration,
    max_holds: usize,
    /// The latest end among the holds dropped for `max_holds`, or the
    /// floor a restart recovered (0 if none). See [`floor`](Self::floor).
    dropped_to: Timestamp,
    /// One copy of each long name (see [`TaskName::is_held_in_place`]) and
    /// command line: a refresh loop re-creating one name ten thousand
    /// times keeps one copy of it.
    names: IdSet<TaskName>,
    texts: HashSet<Arc<str>>,
    /// The command and parent command line of the last hold recorded, as
    /// shared in `texts`: a run of holds ending from one holder (each of
    /// its connections with its own copy) finds its lines here by one
    /// comparison instead of hashing them (up to 256 bytes; SipHash cost
    /// some 700 instructions a delete, callgrind).
    recent: [Option<Arc<str>>; 2],
    /// The earliest end among `holds` (the latest instant when empty), so
    /// that pruning costs nothing until a hold is due to go.
    oldest_end: Timestamp,
}

impl History {
    /// An empty history keeping holds for `retention` after they end, at
    /// most [`DEFAULT_MAX_USAGE_HOLDS`] of them.
    pub fn new(retention: Duration) -> History {
        History::with_max_holds(retention, DEFAULT_MAX_USAGE_HOLDS)
    }

    /// An empty history keeping holds for `retention` after they end, and
    /// at most the latest `max_holds` (at least one).
    pub fn with_max_holds(retention: Duration, max_holds: usize) -> History {
        History {
            holds: Vec::new(),
            retention,
            max_holds: max_holds.max(1),
            dropped_to: Timestamp::from_nanos(0),
            names: IdSet::default(),
            texts: HashSet::new(),
            recent: [None, None],
            oldest_end: Timestamp::from_nanos(u64::MAX),
        }
    }

    /// A history of `events` (in sequence order), pruned at `now`, of at
    /// most `max_holds` holds, and none that ended before `floor` (the
    /// [`floor`](Self::floor) the store kept: what the history had
    /// dropped before the restart stays dropped, even where the database
    /// still holds it beside a line it keeps).
    pub fn recovered(
        retention: Duration,
        max_holds: usize,
        floor: Timestamp,
        events: &[Event],
        now: Timestamp,
    ) -> History {
        let mut history = History::with_max_holds(retention, max_holds);
        history.dropped_to = floor;
        for event in events {
            if event
                .ended
                .as_ref()
                .is_some_and(|hold| hold.ended_at < floor)
            {
                continue;
            }
            history.record(event);
        }
        // Down to the limit itself, not the limit and its slack: what a
        // crash kept the floor from reaching the database (the log
        // replayed holds the history had dropped) is dropped again here.
        if history.holds.len() > history.max_holds {
            history.drop_oldest();
        }
        history.prune(now);
        history
    }

    /// Takes in a durable event: the hold a removal's event describes.
    /// Other events are ignored.
    pub fn record(&mut self, event: &Event) {
        let Some(name) = &event.task else {
            return;
        };
        let removal = matches!(
            event.kind,
            EventKind::Deleted | EventKind::Expired | EventKind::Released | EventKind::Capped
        );
        let Some(ended) = event.ended.as_ref().filter(|_| removal) else {
            return;
        };
        // A short name is a copy of 32 bytes whatever is shared; a long
        // one keeps one copy of its text.
        let name = if name.is_held_in_place() {
            name.clone()
        } else {
            share(&mut self.names, name)
        };
        let mut hold = Hold::ended(name, ended);
        for (text, recent) in [&mut hold.command, &mut hold.parent_command]
            .into_iter()
            .zip(&mut self.recent)
        {
            let Some(text) = text else {
                continue;
            };
            match recent {
                Some(shared) if Arc::ptr_eq(shared, text) || **shared == **text => {
                    *text = Arc::clone(shared);
                }
                _ => {
                    *text = share(&mut self.texts, text);
                    *recent = Some(Arc::clone(text));
                }
            }
        }
        self.oldest_end = self.oldest_end.min(hold.ended_at);
        self.holds.push(hold);
        if self.holds.len() > self.max_holds + self.max_holds / 8 {
            self.drop_oldest();
        }
    }

    /// Drops the oldest holds down to `max_holds`, moving the floor past
    /// them.
    fn drop_oldest(&mut self) {
        let excess = self.holds.len().saturating_sub(self.max_holds);
        for hold in self.holds.drain(..excess) {
            self.dropped_to = self.dropped_to.max(hold.ended_at);
        }
        self.forget_unshared();
    }

    /// Drops the holds that ended before the retention back from `now`,
    /// and the names and command lines no hold shares any more.
    pub fn prune(&mut self, now: Timestamp) {
        let horizon = self.by_age(now);
        if self.oldest_end >= horizon {
            return;
        }
        self.holds.retain(|hold| hold.ended_at >= horizon);
        self.forget_unshared();
    }

    /// After holds went: the earliest end left, and the names and command
    /// lines no hold shares any more (a copy only the set holds).
    fn forget_unshared(&mut self) {
        self.oldest_end = self
            .holds
            .iter()
            .map(|hold| hold.ended_at)
            .min()
            .unwrap_or(Timestamp::from_nanos(u64::MAX));
        self.recent = [None, None];
        self.names.retain(|name| !name.is_unshared());
        self.texts.retain(|text| Arc::strong_count(text) > 1);
    }

    /// The oldest instant the history covers at `now`: the retention back
    /// from `now`, or the [`floor`](Self::floor) if the holds' limit
    /// dropped later holds (never later than `now`).
    pub fn horizon(&self, now: Timestamp) -> Timestamp {
        self.by_age(now).max(self.floor().min(now))
    }

    /// The retention back from `now`: what [`prune`](Self::prune) drops
    /// before.
    fn by_age(&self, now: Timestamp) -> Timestamp {
        Timestamp::from_nanos(
            now.as_nanos()
                .saturating_sub(u64::try_from(self.retention.as_nanos()).unwrap_or(u64::MAX)),
        )
    }

    /// Where the holds' limit cut the history: the latest end among the
    /// holds it dropped, but no later than the earliest end kept (after
    /// the wall clock was set back, a hold ending later may have gone
    /// before one ending earlier). Every hold kept ended at or after it,
    /// so the store may drop what ended before it, and a restart
    /// recovers no hold from before it. The epoch if nothing was dropped.
    pub fn floor(&self) -> Timestamp {
        self.dropped_to.min(self.oldest_end)
    }

    /// The ended holds kept.
    pub fn len(&self) -> usize {
        self.holds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.holds.is_empty()
    }
}

/// The names `events` (in sequence order) leave tripped: those whose
/// latest `capped` or `rearmed` event is `capped`. The state keeps them from
/// then on; a restart recovers them from the kept usage events.
pub fn tripped(events: &[Event]) -> BTreeMap<TaskName, Trip> {
    let mut tripped = BTreeMap::new();
    for event in events {
        let Some(name) = &event.task else {
            continue;
        };
        match (event.kind, &event.ended) {
            (EventKind::Capped, Some(ended)) => {
                let trip = Trip {
                    owner: ended.uid,
                    at: ended.ended_at,
                    held: ended.ended_at.saturating_since(ended.started_at),
                    limit: event.limit.unwrap_or_default(),
                };
                tripped.insert(name.clone(), trip);
            }
            (EventKind::Rearmed, _) => {
                tripped.remove(name);
            }
            _ => {}
        }
    }
    tripped
}

/// A report's window, `since` before `until`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub since: Timestamp,
    pub until: Timestamp,
}

/// `GET /v1/usage`'s answer: what the daemon writes and what `sprite-env
/// tasks report` reads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub since: String,
    pub until: String,
    /// The oldest instant the kept history covers: holds that ended
    /// before it are gone (past the retention, or dropped for the holds'
    /// limit).
    pub history_from: String,
    /// The time at least one task held the machine: what a bill counts.
    pub held_seconds: f64,
    /// Whether a task holds the machine now (false for a window that ends
    /// before now).
    pub held_now: bool,
    /// The length of one bucket, when buckets were asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_seconds: Option<f64>,
    /// The fraction of each bucket the machine was held (none unless
    /// asked for).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buckets: Vec<f64>,
    /// One row per task name and owner, longest held first.
    pub tasks: Vec<TaskUsage>,
}

/// One task name and owner's share of a report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskUsage {
    pub name: String,
    pub uid: Option<u32>,
    pub command: Option<String>,
    pub parent_command: Option<String>,
    pub held_seconds: f64,
    /// The time it alone held the machine.
    pub sole_seconds: f64,
    /// How many holds of it overlap the window.
    pub holds: u64,
    pub first_held_at: String,
    pub last_held_at: String,
    pub held_now: bool,
    /// As [`Report::buckets`], for this row alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buckets: Vec<f64>,
}

/// Seconds to the millisecond, for the JSON.
fn seconds(nanos: u64) -> f64 {
    (nanos as f64 / 1e6).round() / 1e3
}

/// Time within a window split into equal buckets.
struct Buckets {
    since: u64,
    width: f64,
    held_ns: Vec<f64>,
}

impl Buckets {
    fn new(window: Window, count: usize) -> Option<Buckets> {
        (count > 0).then(|| Buckets {
            since: window.since.as_nanos(),
            width: window.until.saturating_since(window.since).as_nanos() as f64 / count as f64,
            held_ns: vec![0.0; count],
        })
    }

    /// Adds the time from `start` to `end` (within the window).
    fn add(&mut self, start: Timestamp, end: Timestamp) {
        let last = self.held_ns.len() - 1;
        let (from, to) = (
            (start.as_nanos() - self.since) as f64,
            (end.as_nanos() - self.since) as f64,
        );
        let first_bucket = ((from / self.width) as usize).min(last);
        let last_bucket = ((to / self.width) as usize).min(last);
        for (i, held) in self
            .held_ns
            .iter_mut()
            .enumerate()
            .take(last_bucket + 1)
            .skip(first_bucket)
        {
            let (low, high) = (i as f64 * self.width, (i + 1) as f64 * self.width);
            *held += (to.min(high) - from.max(low)).max(0.0);
        }
    }

    fn fractions(&self) -> Vec<f64> {
        self.held_ns
            .iter()
            .map(|held| ((held / self.width).clamp(0.0, 1.0) * 1e3).round() / 1e3)
            .collect()
    }
}

/// One row of a report while it is added up.
struct Row<'a> {
    latest: &'a Hold,
    held_ns: u64,
    sole_ns: u64,
    holds: u64,
    first: Timestamp,
    last: Timestamp,
    /// Holds of this row active at the sweep's point, and since when.
    active: u32,
    active_since: Timestamp,
    held_now: bool,
    buckets: Option<Buckets>,
}

/// Adds up `history` and the `tasks` still stored (live, or due and not yet
/// removed: their hold runs to their deadline) over `window`, the
/// machine's time and each row's split into `buckets` (0 for none).
pub fn report(
    history: &History,
    tasks: impl Iterator<Item = Hold>,
    window: Window,
    buckets: usize,
    now: Timestamp,
) -> Report {
    let open: Vec<Hold> = tasks.collect();
    let clipped = |hold: &Hold| {
        let start = hold.started_at.max(window.since);
        let end = hold.ended_at.min(window.until);
        (start < end).then_some((start, end))
    };
    let mut index: HashMap<(&TaskName, Option<u32>), usize> = HashMap::new();
    let mut rows: Vec<Row> = Vec::new();
    // Each hold's start (+1) and end (-1), by row.
    let mut points: Vec<(Timestamp, i8, usize)> = Vec::new();
    for (i, hold) in history.holds.iter().chain(open.iter()).enumerate() {
        let Some((start, end)) = clipped(hold) else {
            continue;
        };
        let row = *index.entry((&hold.name, hold.uid)).or_insert_with(|| {
            rows.push(Row {
                latest: hold,
                held_ns: 0,
                sole_ns: 0,
                holds: 0,
                first: start,
                last: end,
                active: 0,
                active_since: start,
                held_now: false,
                buckets: Buckets::new(window, buckets),
            });
            rows.len() - 1
        });
        let entry = &mut rows[row];
        entry.holds += 1;
        entry.first = entry.first.min(start);
        entry.last = entry.last.max(end);
        if hold.started_at >= entry.latest.started_at {
            entry.latest = hold;
        }
        let is_open = i >= history.holds.len();
        // Held now: live at `now`, in a window that reaches now.
        entry.held_now |= is_open && hold.ended_at > now && window.until >= now;
        points.push((start, 1, row));
        points.push((end, -1, row));
    }
    // Ends before starts at one instant: touching holds do not overlap.
    points.sort_by_key(|&(at, delta, row)| (at, delta, row));
    let mut machine = Buckets::new(window, buckets);
    let (mut held_ns, mut active_rows, mut xor) = (0u64, 0usize, 0usize);
    let mut previous = window.since;
    let mut held_since = window.since;
    for (at, delta, row) in points {
        let span = at.saturating_since(previous).as_nanos() as u64;
        if active_rows > 0 {
            held_ns += span;
        }
        if active_rows == 1 {
            rows[xor].sole_ns += span;
        }
        previous = at;
        let entry = &mut rows[row];
        if delta > 0 {
            entry.active += 1;
            if entry.active == 1 {
                entry.active_since = at;
                active_rows += 1;
                xor ^= row;
                if active_rows == 1 {
                    held_since = at;
                }
            }
        } else {
            entry.active -= 1;
            if entry.active == 0 {
                entry.held_ns += at.saturating_since(entry.active_since).as_nanos() as u64;
                if let Some(buckets) = &mut entry.buckets {
                    buckets.add(entry.active_since, at);
                }
                active_rows -= 1;
                xor ^= row;
                if active_rows == 0
                    && let Some(machine) = &mut machine
                {
                    machine.add(held_since, at);
                }
            }
        }
    }
    let held_now = rows.iter().any(|row| row.held_now);
    let mut tasks: Vec<TaskUsage> = rows
        .into_iter()
        .map(|row| TaskUsage {
            name: row.latest.name.as_str().to_owned(),
            uid: row.latest.uid,
            command: row.latest.command.as_deref().map(str::to_owned),
            parent_command: row.latest.parent_command.as_deref().map(str::to_owned),
            held_seconds: seconds(row.held_ns),
            sole_seconds: seconds(row.sole_ns),
            holds: row.holds,
            first_held_at: row.first.to_string(),
            last_held_at: row.last.to_string(),
            held_now: row.held_now,
            buckets: row
                .buckets
                .as_ref()
                .map_or_else(Vec::new, Buckets::fractions),
        })
        .collect();
    tasks.sort_by(|a, b| {
        b.held_seconds
            .total_cmp(&a.held_seconds)
            .then_with(|| a.name.cmp(&b.name))
            .then_with(|| a.uid.cmp(&b.uid))
    });
    Report {
        since: window.since.to_string(),
        until: window.until.to_string(),
        history_from: history.horizon(now).to_string(),
        held_seconds: seconds(held_ns),
        held_now,
        bucket_seconds: machine.as_ref().map(|b| seconds(b.width as u64)),
        buckets: machine.as_ref().map_or_else(Vec::new, Buckets::fractions),
        tasks,
    }
}

/// The holds of the tasks in the state: live ones up to their deadline.
pub fn open_holds<'a>(tasks: impl Iterator<Item = &'a Task>) -> impl Iterator<Item = Hold> {
    tasks.map(Hold::of_task)
}

#[cfg(test)]
mod tests;
