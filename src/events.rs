//! The event log: every change to the tasks, and every held/idle edge, as a
//! numbered event, with a bounded history that is persisted beside the tasks
//! so a watcher (or the daemon) that restarts can replay what it missed.
//!
//! Pure; depends on [`crate::tasks`] and [`crate::time`]. Events for a batch
//! are planned before its commit, written in the same transaction, and
//! appended here only once it is durable.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::tasks::{Change, Removal, Task, TaskName};
use crate::time::{ClockStep, Timestamp};

/// Events kept (in memory and on disk) for `?since=` replay. At about 150
/// bytes each this is ~1.5 MB, and covers days of a heartbeat every minute.
/// The disk may hold up to [`EventLog::trim_slack`] more, which a restart
/// does not replay.
pub const DEFAULT_RETENTION: usize = 10_000;

/// The least [`EventLog::trim_slack`]: the store deletes old events at most
/// once in this many commits, ~150 KB of history at a time.
pub const MIN_TRIM_SLACK: u64 = 1024;

/// Room for one event line's keys, numbers and timestamps (a capped hold's,
/// with every field, takes about 300 bytes); its texts take more
/// ([`Event::line_room`]).
const LINE_CAPACITY: usize = 320;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Created,
    Refreshed,
    Deleted,
    Expired,
    /// The process the task was bound to exited.
    Released,
    /// The task was held for its whole hold limit (`limit_ns`) and
    /// released; its name is refused until re-armed.
    Capped,
    /// A `DELETE` re-armed a name its hold limit had released.
    Rearmed,
    /// The first live task appeared: the machine is held.
    Held,
    /// The last live task went: the machine may pause.
    Idle,
    /// The wall clock stepped by `step_ns` (negative: back). After a step
    /// back, every live task was moved by the step in the same commit (its
    /// `refreshed` events follow), keeping its remaining time; after a step
    /// forward, what fell due expires.
    ClockStepped,
}

impl EventKind {
    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Refreshed => "refreshed",
            EventKind::Deleted => "deleted",
            EventKind::Expired => "expired",
            EventKind::Released => "released",
            EventKind::Capped => "capped",
            EventKind::Rearmed => "rearmed",
            EventKind::Held => "held",
            EventKind::Idle => "idle",
            EventKind::ClockStepped => "clock_stepped",
        }
    }

    fn parse(text: &str) -> Option<EventKind> {
        Some(match text {
            "created" => EventKind::Created,
            "refreshed" => EventKind::Refreshed,
            "deleted" => EventKind::Deleted,
            "expired" => EventKind::Expired,
            "released" => EventKind::Released,
            "capped" => EventKind::Capped,
            "rearmed" => EventKind::Rearmed,
            "held" => EventKind::Held,
            "idle" => EventKind::Idle,
            "clock_stepped" => EventKind::ClockStepped,
            _ => return None,
        })
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One numbered event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Strictly increasing, never reused, starting at 1.
    pub seq: u64,
    pub at: Timestamp,
    pub kind: EventKind,
    /// The task, for task events.
    pub task: Option<TaskName>,
    /// The new expiry, for `created` and `refreshed`.
    pub expires_at: Option<Timestamp>,
    /// The wall clock's step in signed nanoseconds, for `clock_stepped`.
    pub step_ns: Option<i64>,
    /// The task's reason, for `created` and `refreshed`.
    pub reason: Option<String>,
    /// The process whose exit released the task, for `released`.
    pub pid: Option<u32>,
    /// The hold that ended, for `deleted`, `expired`, `released` and
    /// `capped`: when it began and ended (an expiry ends a hold at its
    /// deadline, which may be before `at`), its owner and its holder's
    /// command and parent command line, where known. What the usage report
    /// adds up.
    pub ended: Option<EndedHold>,
    /// The hold limit that released the task, for `capped`.
    pub limit: Option<Duration>,
}

/// A hold as it ended: what a removal's event records of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedHold {
    pub started_at: Timestamp,
    pub ended_at: Timestamp,
    pub uid: Option<u32>,
    pub command: Option<Arc<str>>,
    pub parent_command: Option<Arc<str>>,
}

impl EndedHold {
    /// The hold of `task` ended by `cause` at `now`: an expiry (or the
    /// limit) ends it at its deadline, anything else at `now` or its
    /// deadline, whichever came first.
    pub fn of(task: &Task, cause: Removal, now: Timestamp) -> EndedHold {
        let ended_at = match cause {
            Removal::Expired | Removal::Capped { .. } => task.expires_at,
            Removal::Deleted | Removal::Released { .. } => now.min(task.expires_at),
        };
        let holder = task.holder.as_ref();
        EndedHold {
            started_at: task.started_at.min(ended_at),
            ended_at,
            uid: task.owner,
            command: holder.and_then(|h| h.command.clone()),
            parent_command: holder.and_then(|h| h.parent_command.clone()),
        }
    }
}

impl Event {
    /// When the usage history keeps this event by: when the hold it ended
    /// ended, or when it re-armed a name; `None` for events the history
    /// does not keep.
    pub fn usage_instant(&self) -> Option<Timestamp> {
        match (self.kind, &self.ended) {
            (EventKind::Rearmed, _) => Some(self.at),
            (_, Some(ended)) => Some(ended.ended_at),
            _ => None,
        }
    }

    /// The event as one JSON object:
    /// `{"seq":3,"at":"…","event":"created","task":"agent","expires_at":"…"}`.
    pub fn to_json(&self) -> Value {
        let mut object = Map::new();
        object.insert("seq".into(), self.seq.into());
        object.insert("at".into(), self.at.to_string().into());
        object.insert("event".into(), self.kind.as_str().into());
        if let Some(task) = &self.task {
            object.insert("task".into(), task.as_str().into());
        }
        if let Some(expires_at) = self.expires_at {
            object.insert("expires_at".into(), expires_at.to_string().into());
        }
        if let Some(step_ns) = self.step_ns {
            object.insert("step_ns".into(), step_ns.into());
        }
        if let Some(reason) = &self.reason {
            object.insert("reason".into(), reason.as_str().into());
        }
        if let Some(pid) = self.pid {
            object.insert("pid".into(), pid.into());
        }
        if let Some(limit) = self.limit {
            object.insert("limit_ns".into(), duration_ns(limit).into());
        }
        if let Some(ended) = &self.ended {
            object.insert("started_at".into(), ended.started_at.to_string().into());
            object.insert("ended_at".into(), ended.ended_at.to_string().into());
            if let Some(uid) = ended.uid {
                object.insert("uid".into(), uid.into());
            }
            if let Some(command) = &ended.command {
                object.insert("command".into(), command.as_ref().into());
            }
            if let Some(command) = &ended.parent_command {
                object.insert("parent_command".into(), command.as_ref().into());
            }
        }
        Value::Object(object)
    }

    /// The JSON object followed by a newline: one line of the stream, byte
    /// for byte what serializing [`to_json`](Self::to_json) writes.
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = Vec::with_capacity(self.line_room());
        self.write_line(&mut line);
        line
    }

    /// Room for this event's line, short of escapes: [`LINE_CAPACITY`]
    /// for the keys, numbers and times, and its texts' lengths. An ended
    /// hold's line carries two command lines (up to 256 bytes each), and
    /// guessing [`LINE_CAPACITY`] for it grew a batch's text once per
    /// commit of deletes, about 370 instructions a delete (callgrind).
    fn line_room(&self) -> usize {
        let text = |text: Option<&str>| text.map_or(0, str::len);
        let ended = self.ended.as_ref();
        LINE_CAPACITY
            + text(self.task.as_ref().map(TaskName::as_str))
            + text(self.reason.as_deref())
            + text(ended.and_then(|e| e.command.as_deref()))
            + text(ended.and_then(|e| e.parent_command.as_deref()))
    }

    /// Appends [`to_line`](Self::to_line) to `out`, without building a JSON
    /// value: task names and RFC 3339 timestamps need no escaping (the
    /// [`TaskName`] rule allows ASCII letters, digits and `._-:@` only), the
    /// reason is escaped by `serde_json`, and the keys are written in the
    /// order `serde_json`'s map sorts them.
    pub fn write_line(&self, out: &mut Vec<u8>) {
        use crate::text::{push_i64, push_u64};
        let ended = self.ended.as_ref();
        let text = |out: &mut Vec<u8>, key: &[u8], value: Option<&str>| {
            if let Some(value) = value {
                out.extend_from_slice(key);
                crate::text::push_json_string(out, value);
            }
        };
        let time = |out: &mut Vec<u8>, key: &[u8], at: Timestamp| {
            out.extend_from_slice(key);
            out.extend_from_slice(&at.rfc3339());
            out.push(b'"');
        };
        time(out, b"{\"at\":\"", self.at);
        text(
            out,
            b",\"command\":",
            ended.and_then(|e| e.command.as_deref()),
        );
        if let Some(ended) = ended {
            time(out, b",\"ended_at\":\"", ended.ended_at);
        }
        out.extend_from_slice(b",\"event\":\"");
        out.extend_from_slice(self.kind.as_str().as_bytes());
        out.push(b'"');
        if let Some(expires_at) = self.expires_at {
            time(out, b",\"expires_at\":\"", expires_at);
        }
        if let Some(limit) = self.limit {
            out.extend_from_slice(b",\"limit_ns\":");
            push_u64(out, duration_ns(limit));
        }
        text(
            out,
            b",\"parent_command\":",
            ended.and_then(|e| e.parent_command.as_deref()),
        );
        if let Some(pid) = self.pid {
            out.extend_from_slice(b",\"pid\":");
            push_u64(out, pid.into());
        }
        text(out, b",\"reason\":", self.reason.as_deref());
        out.extend_from_slice(b",\"seq\":");
        push_u64(out, self.seq);
        if let Some(ended) = ended {
            time(out, b",\"started_at\":\"", ended.started_at);
        }
        if let Some(step_ns) = self.step_ns {
            out.extend_from_slice(b",\"step_ns\":");
            push_i64(out, step_ns);
        }
        if let Some(task) = &self.task {
            out.extend_from_slice(b",\"task\":\"");
            out.extend_from_slice(task.as_bytes());
            out.push(b'"');
        }
        if let Some(uid) = ended.and_then(|e| e.uid) {
            out.extend_from_slice(b",\"uid\":");
            push_u64(out, uid.into());
        }
        out.extend_from_slice(b"}\n");
    }

    /// Reads back what [`to_json`](Self::to_json) wrote; `None` if it is not
    /// an event this build understands.
    pub fn from_json(bytes: &[u8]) -> Option<Event> {
        let line: Line<'_> = serde_json::from_slice(bytes).ok()?;
        // An instant that does not parse is left out, as if absent.
        let time = |text: Option<Text<'_>>| text.and_then(|t| Timestamp::parse_rfc3339(&t));
        let task = match line.task {
            Some(name) => Some(TaskName::parse(&name).ok()?),
            None => None,
        };
        let ended = match (time(line.started_at), time(line.ended_at)) {
            (Some(started_at), Some(ended_at)) => Some(EndedHold {
                started_at,
                ended_at,
                uid: line.uid,
                command: line.command.as_deref().map(Arc::from),
                parent_command: line.parent_command.as_deref().map(Arc::from),
            }),
            _ => None,
        };
        Some(Event {
            seq: line.seq,
            at: Timestamp::parse_rfc3339(&line.at)?,
            kind: EventKind::parse(&line.event)?,
            task,
            expires_at: time(line.expires_at),
            step_ns: line.step_ns,
            reason: line.reason.map(|text| text.0.into_owned()),
            pid: line.pid,
            limit: line.limit_ns.map(Duration::from_nanos),
            ended,
        })
    }
}

/// An event's line as [`Event::write_line`] writes it, read straight into
/// its fields: through a `serde_json::Value` (a map of every member, then
/// a lookup of each) a restart spent about a fifth of its time building
/// and dropping maps for the usage history's 50k lines (perf). Strings
/// are borrowed from the line unless they hold escapes ([`Text`]).
/// Members this build does not know are skipped, as before.
#[derive(serde::Deserialize)]
struct Line<'a> {
    seq: u64,
    #[serde(borrow)]
    at: Text<'a>,
    #[serde(borrow)]
    event: Text<'a>,
    #[serde(borrow, default)]
    task: Option<Text<'a>>,
    #[serde(borrow, default)]
    expires_at: Option<Text<'a>>,
    #[serde(default)]
    step_ns: Option<i64>,
    #[serde(borrow, default)]
    reason: Option<Text<'a>>,
    #[serde(default)]
    pid: Option<u32>,
    #[serde(default)]
    limit_ns: Option<u64>,
    #[serde(borrow, default)]
    started_at: Option<Text<'a>>,
    #[serde(borrow, default)]
    ended_at: Option<Text<'a>>,
    #[serde(default)]
    uid: Option<u32>,
    #[serde(borrow, default)]
    command: Option<Text<'a>>,
    #[serde(borrow, default)]
    parent_command: Option<Text<'a>>,
}

/// A string member, borrowed from the line unless it holds escapes. A
/// newtype because serde borrows a `Cow` only where it is the field's
/// whole type: inside an `Option` it would copy every string
/// (serde-rs/serde#2016).
#[derive(serde::Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

/// A duration in whole nanoseconds, saturating.
fn duration_ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Events as their lines, serialized once and shared by the store and the
/// streams: a batch's, or (in the store's [`Pending`](crate::store::Pending))
/// every batch's since the last checkpoint.
#[derive(Debug, Default)]
pub struct EventLines {
    text: Vec<u8>,
    /// Each event's sequence number and the end of its line in `text`.
    ends: Vec<(u64, usize)>,
    /// The usage history's events: an index into `ends` and the instant the
    /// history keeps the event by ([`Event::usage_instant`]), known when
    /// the line is written so that the checkpoint need not parse it back.
    usage: Vec<(usize, Timestamp)>,
}

impl EventLines {
    /// The lines of `events`, in order.
    pub fn new(events: &[Event]) -> Self {
        let mut lines = EventLines {
            text: Vec::with_capacity(events.iter().map(Event::line_room).sum()),
            ends: Vec::with_capacity(events.len()),
            usage: Vec::with_capacity(events.len()),
        };
        for event in events {
            lines.push(event);
        }
        // The store keeps a batch's lines until the next checkpoint (up to
        // --checkpoint-changes events): the room guessed for them goes
        // back now, a shrink in place.
        lines.text.shrink_to_fit();
        lines.usage.shrink_to_fit();
        lines
    }

    /// Appends one event's line.
    pub fn push(&mut self, event: &Event) {
        event.write_line(&mut self.text);
        self.ends.push((event.seq, self.text.len()));
        if let Some(at) = event.usage_instant() {
            self.usage.push((self.ends.len() - 1, at));
        }
    }

    /// Appends a line already written (one read back from the log), with
    /// its event's [`Event::usage_instant`].
    pub fn push_line(&mut self, seq: u64, line: &[u8], usage: Option<Timestamp>) {
        self.text.extend_from_slice(line);
        self.ends.push((seq, self.text.len()));
        if let Some(at) = usage {
            self.usage.push((self.ends.len() - 1, at));
        }
    }

    /// Each event's sequence number and line (with its newline), in order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> {
        let mut start = 0;
        self.ends.iter().map(move |&(seq, end)| {
            let line = &self.text[start..end];
            start = end;
            (seq, line)
        })
    }

    /// The usage history's events among these: the instant each is kept
    /// by, its sequence number and its line, in order.
    pub fn usage(&self) -> impl Iterator<Item = (Timestamp, u64, &[u8])> {
        self.usage.iter().map(|&(index, at)| {
            let start = index.checked_sub(1).map_or(0, |before| self.ends[before].1);
            let (seq, end) = self.ends[index];
            (at, seq, &self.text[start..end])
        })
    }

    /// The lines of the events the usage history does not keep
    /// ([`Event::usage_instant`] `None`), each with its sequence number,
    /// in order: what the event history's table stores beside the usage
    /// table, which holds the others' lines once for both histories.
    pub fn others(&self) -> impl Iterator<Item = (u64, &[u8])> {
        let mut usage = self.usage.iter().map(|&(index, _)| index).peekable();
        self.iter().enumerate().filter_map(move |(index, line)| {
            if usage.next_if_eq(&index).is_some() {
                None
            } else {
                Some(line)
            }
        })
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

/// The lines of several batches, in order, each shared with whoever else
/// holds it: the store's [`Pending`](crate::store::Pending) keeps every
/// batch committed since the last checkpoint while the event streams send
/// the same ones. Copying each batch's lines into one text cost the
/// reactor 360 instructions a create and 690 a delete (its usage line
/// carries the ended hold's command lines), with the text re-doubling
/// after each checkpoint (callgrind).
#[derive(Debug, Default, Clone)]
pub struct LineBatches {
    batches: Vec<Arc<EventLines>>,
}

impl LineBatches {
    /// Adds a batch's lines after these.
    pub fn push(&mut self, lines: Arc<EventLines>) {
        if !lines.is_empty() {
            self.batches.push(lines);
        }
    }

    /// Adds `other`'s batches after these.
    pub fn append(&mut self, other: &LineBatches) {
        self.batches.extend(other.batches.iter().cloned());
    }

    /// Each event's sequence number and line (with its newline), in order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.batches.iter().flat_map(|lines| lines.iter())
    }

    /// The usage history's events among these, in order (see
    /// [`EventLines::usage`]).
    pub fn usage(&self) -> impl Iterator<Item = (Timestamp, u64, &[u8])> {
        self.batches.iter().flat_map(|lines| lines.usage())
    }

    /// The other events among these, in order (see [`EventLines::others`]).
    pub fn others(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.batches.iter().flat_map(|lines| lines.others())
    }

    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Lets the batches go, keeping the room for their handles.
    pub fn clear(&mut self) {
        self.batches.clear();
    }
}

/// The numbered history.
///
/// Invariant: `history` is in increasing `seq` order, holds at most
/// `retention` events, and `next_seq` is one past the last event ever
/// appended.
#[derive(Debug)]
pub struct EventLog {
    history: VecDeque<Event>,
    next_seq: u64,
    retention: usize,
}

impl EventLog {
    /// A log resuming from events read from the store.
    pub fn new(retention: usize, mut loaded: Vec<Event>) -> Self {
        loaded.sort_by_key(|event| event.seq);
        let next_seq = loaded.last().map_or(1, |event| event.seq + 1);
        let skip = loaded.len().saturating_sub(retention);
        EventLog {
            history: loaded.into_iter().skip(skip).collect(),
            next_seq,
            retention: retention.max(1),
        }
    }

    /// The events a batch will produce: its clock step if it records one,
    /// one per change, then the held or idle edge if the number of rows
    /// crosses zero.
    pub fn plan(
        &self,
        clock_step: Option<ClockStep>,
        changes: &[Change],
        rows_before: usize,
        rows_after: usize,
        now: Timestamp,
    ) -> Vec<Event> {
        let counts = (rows_before, rows_after);
        self.plan_batch(clock_step, changes, &[], |_| None, counts, now)
    }

    /// As [`plan`](Self::plan), with a `rearmed` event per name re-armed
    /// after the changes' events, and each removal's event describing the
    /// hold that ended: `row` gives the row as it was before the batch (a
    /// task put earlier in the batch is taken from there).
    pub fn plan_batch<'a>(
        &self,
        clock_step: Option<ClockStep>,
        changes: &'a [Change],
        rearmed: &[TaskName],
        row: impl Fn(&TaskName) -> Option<&'a Task>,
        (rows_before, rows_after): (usize, usize),
        now: Timestamp,
    ) -> Vec<Event> {
        // Tasks put by this batch, for a removal later in it; kept only when
        // the batch removes anything (a batch of refreshes hashes nothing).
        let removes = changes
            .iter()
            .any(|change| matches!(change, Change::Remove { .. }));
        let mut put: HashMap<&TaskName, &Task> = HashMap::new();
        let mut ended = |change: &'a Change| match change {
            Change::Put { task, .. } => {
                if removes {
                    put.insert(&task.name, task);
                }
                None
            }
            Change::Remove { name, cause } => put
                .remove(name)
                .or_else(|| row(name))
                .map(|task| EndedHold::of(task, *cause, now)),
        };
        let mut seq = self.next_seq;
        let mut next = |kind, task: Option<&TaskName>, expires_at| {
            let event = Event {
                seq,
                at: now,
                kind,
                task: task.cloned(),
                expires_at,
                step_ns: None,
                reason: None,
                pid: None,
                ended: None,
                limit: None,
            };
            seq += 1;
            event
        };
        let stepped = clock_step.map(|step| Event {
            step_ns: Some(step.as_signed_nanos()),
            ..next(EventKind::ClockStepped, None, None)
        });
        let mut events: Vec<Event> = stepped
            .into_iter()
            .chain(changes.iter().map(|change| {
                let hold = ended(change);
                match change {
                    Change::Put { task, created } => {
                        let kind = if *created {
                            EventKind::Created
                        } else {
                            EventKind::Refreshed
                        };
                        Event {
                            reason: task.reason.clone(),
                            ..next(kind, Some(&task.name), Some(task.expires_at))
                        }
                    }
                    Change::Remove { name, cause } => {
                        let event = match cause {
                            Removal::Deleted => next(EventKind::Deleted, Some(name), None),
                            Removal::Expired => next(EventKind::Expired, Some(name), None),
                            Removal::Released { pid } => Event {
                                pid: Some(*pid),
                                ..next(EventKind::Released, Some(name), None)
                            },
                            Removal::Capped { trip } => Event {
                                limit: Some(trip.limit),
                                ..next(EventKind::Capped, Some(name), None)
                            },
                        };
                        Event {
                            ended: hold,
                            ..event
                        }
                    }
                }
            }))
            .collect();
        events.extend(
            rearmed
                .iter()
                .map(|name| next(EventKind::Rearmed, Some(name), None)),
        );
        if rows_before == 0 && rows_after > 0 {
            events.push(next(EventKind::Held, None, None));
        } else if rows_before > 0 && rows_after == 0 {
            events.push(next(EventKind::Idle, None, None));
        }
        events
    }

    /// Appends events that are now durable, dropping the oldest beyond the
    /// retention.
    pub fn append(&mut self, events: &[Event]) {
        for event in events {
            self.next_seq = event.seq + 1;
            self.history.push_back(event.clone());
        }
        while self.history.len() > self.retention {
            self.history.pop_front();
        }
    }

    /// The oldest sequence number that must stay on disk after events up to
    /// `last_seq` are written.
    pub fn oldest_kept_after(&self, last_seq: u64) -> u64 {
        (last_seq + 1).saturating_sub(self.retention as u64).max(1)
    }

    /// How many events past the retention the store may hold before it
    /// deletes them, all in one commit: a tenth of the retention, at least
    /// [`MIN_TRIM_SLACK`]. Trimming one event per commit would write a
    /// second leaf of the history on every commit.
    pub fn trim_slack(&self) -> u64 {
        (self.retention as u64 / 10).max(MIN_TRIM_SLACK)
    }

    /// Retained events after `seq`, in order.
    pub fn since(&self, seq: u64) -> impl Iterator<Item = &Event> {
        let start = self.history.partition_point(|event| event.seq <= seq);
        self.history.range(start..)
    }

    /// Whether events after `seq` were dropped from the retention.
    pub fn has_gap_after(&self, seq: u64) -> bool {
        self.history
            .front()
            .is_some_and(|first| first.seq > seq + 1)
    }

    /// The most recent held or idle event.
    pub fn last_edge(&self) -> Option<&Event> {
        self.history
            .iter()
            .rev()
            .find(|event| matches!(event.kind, EventKind::Held | EventKind::Idle))
    }

    /// The task event behind the most recent edge, if that edge is `edge`:
    /// for `held`, the last task created or refreshed by the commit that
    /// made it; for `idle`, the last task deleted or expired. For the log
    /// line that says who kept the machine awake, or let it go.
    pub fn edge_cause(&self, edge: EventKind) -> Option<&Event> {
        let mut newest_first = self.history.iter().rev();
        newest_first
            .find(|event| matches!(event.kind, EventKind::Held | EventKind::Idle))
            .filter(|last| last.kind == edge)
            .and_then(|last| {
                // The events of one commit share its `at` and precede its edge.
                newest_first
                    .take_while(|event| event.at == last.at && event.task.is_some())
                    .find(|event| match edge {
                        EventKind::Held => {
                            matches!(event.kind, EventKind::Created | EventKind::Refreshed)
                        }
                        _ => matches!(
                            event.kind,
                            EventKind::Deleted
                                | EventKind::Expired
                                | EventKind::Released
                                | EventKind::Capped
                        ),
                    })
            })
    }

    /// When the newest retained event happened: the daemon's time at its
    /// last commit, which a restart compares with the wall clock.
    pub fn last_at(&self) -> Option<Timestamp> {
        self.history.back().map(|event| event.at)
    }

    /// The sequence number the next event will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::Task;

    fn name(text: &str) -> TaskName {
        TaskName::parse(text).unwrap()
    }

    fn put(n: &str, created: bool) -> Change {
        Change::Put {
            task: Task::new(name(n), Timestamp::from_nanos(1), Timestamp::from_nanos(99)),
            created,
        }
    }

    fn kinds(events: &[Event]) -> Vec<&'static str> {
        events.iter().map(|e| e.kind.as_str()).collect()
    }

    #[test]
    fn batches_become_numbered_events_with_edges() {
        let mut log = EventLog::new(100, Vec::new());
        let now = Timestamp::from_nanos(5);
        let first = log.plan(None, &[put("a", true)], 0, 1, now);
        assert_eq!(kinds(&first), ["created", "held"]);
        assert_eq!(first.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
        log.append(&first);
        let second = log.plan(
            None,
            &[
                put("a", false),
                Change::Remove {
                    name: name("a"),
                    cause: Removal::Deleted,
                },
                Change::Remove {
                    name: name("b"),
                    cause: Removal::Expired,
                },
            ],
            2,
            0,
            now,
        );
        assert_eq!(kinds(&second), ["refreshed", "deleted", "expired", "idle"]);
        assert_eq!(second[0].seq, 3);
        log.append(&second);
        assert_eq!(log.last_edge().unwrap().kind, EventKind::Idle);
        assert_eq!(
            kinds(&log.since(4).cloned().collect::<Vec<_>>()),
            ["expired", "idle"]
        );
        // A batch that leaves the count on the same side of zero has no edge.
        assert_eq!(
            kinds(&log.plan(None, &[put("c", true)], 1, 2, now)),
            ["created"]
        );
    }

    #[test]
    fn the_cause_of_an_edge_is_a_task_of_its_commit() {
        let mut log = EventLog::new(100, Vec::new());
        let task =
            |event: Option<&Event>| event.and_then(|e| e.task.as_ref()).map(|t| t.to_string());
        assert_eq!(log.edge_cause(EventKind::Held), None);
        let at = Timestamp::from_nanos;
        let held = log.plan(None, &[put("a", true)], 0, 1, at(1));
        log.append(&held);
        assert_eq!(task(log.edge_cause(EventKind::Held)), Some("a".into()));
        assert_eq!(
            log.edge_cause(EventKind::Idle),
            None,
            "the last edge is held"
        );
        // Later commits without an edge do not change the cause.
        let more = log.plan(None, &[put("b", true)], 1, 2, at(2));
        log.append(&more);
        assert_eq!(task(log.edge_cause(EventKind::Held)), Some("a".into()));
        let remove = |n: &str, expired: bool| Change::Remove {
            name: name(n),
            cause: if expired {
                Removal::Expired
            } else {
                Removal::Deleted
            },
        };
        let idle = log.plan(None, &[remove("a", false), remove("b", true)], 2, 0, at(3));
        log.append(&idle);
        let cause = log.edge_cause(EventKind::Idle).unwrap();
        assert_eq!(
            (cause.kind, task(Some(cause))),
            (EventKind::Expired, Some("b".into()))
        );
        // An edge whose commit is older than the history has no cause.
        let mut short = EventLog::new(1, Vec::new());
        short.append(&held);
        assert_eq!(short.edge_cause(EventKind::Held), None);
    }

    #[test]
    fn history_is_bounded_and_resumes_numbering() {
        let mut log = EventLog::new(3, Vec::new());
        for _ in 0..5 {
            let events = log.plan(None, &[put("a", true)], 1, 1, Timestamp::EPOCH);
            log.append(&events);
        }
        assert_eq!(log.since(0).map(|e| e.seq).collect::<Vec<_>>(), [3, 4, 5]);
        assert!(log.has_gap_after(0));
        assert!(!log.has_gap_after(2));
        assert_eq!(log.oldest_kept_after(5), 3);
        assert_eq!(log.trim_slack(), MIN_TRIM_SLACK);
        assert_eq!(EventLog::new(100_000, Vec::new()).trim_slack(), 10_000);
        let reloaded = EventLog::new(3, log.since(0).cloned().collect());
        assert_eq!(reloaded.next_seq(), 6);
    }

    #[test]
    fn events_round_trip_through_json() {
        let log = EventLog::new(10, Vec::new());
        let now = Timestamp::from_nanos(1_780_420_274_555_839_485);
        let back = ClockStep::Backward(std::time::Duration::from_secs(10_800));
        for event in log.plan(
            Some(back),
            &[
                put("A0.b_c-d:e@f", true),
                Change::Put {
                    task: crate::tasks::Task {
                        reason: Some("quotes \" and \\ and é\u{2028}".into()),
                        ..crate::tasks::Task::new(name("r"), now, now)
                    },
                    created: false,
                },
                Change::Remove {
                    name: name("a"),
                    cause: Removal::Expired,
                },
                Change::Remove {
                    name: name("b"),
                    cause: Removal::Released { pid: 4242 },
                },
            ],
            0,
            1,
            now,
        ) {
            let line = event.to_line();
            assert!(line.ends_with(b"\n"));
            let mut through_value = event.to_json().to_string().into_bytes();
            through_value.push(b'\n');
            assert_eq!(line, through_value);
            assert_eq!(Event::from_json(&line), Some(event));
        }
        assert_eq!(Event::from_json(b"{\"seq\":1}"), None);
        assert_eq!(Event::from_json(b"not json"), None);
    }

    #[test]
    fn a_removal_describes_the_hold_it_ended_and_rearms_follow_the_changes() {
        use crate::tasks::{Holder, Trip};
        use std::time::Duration;
        let at = |s: u64| Timestamp::from_nanos(s * 1_000_000_000);
        let stored = Task {
            owner: Some(1000),
            holder: Some(Holder {
                command: Some(Arc::from("curl")),
                parent_command: Some(Arc::from("bash -c \"while :; do …; done\"")),
                ..Holder::default()
            }),
            ..Task::new(name("loop"), at(10), at(40))
        };
        let made_here = Task::new(name("brief"), at(50), at(90));
        let trip = Trip {
            owner: Some(1000),
            at: at(40),
            held: Duration::from_secs(30),
            limit: Duration::from_secs(30),
        };
        let changes = [
            Change::Remove {
                name: name("loop"),
                cause: Removal::Capped { trip },
            },
            Change::Put {
                task: made_here.clone(),
                created: true,
            },
            Change::Remove {
                name: name("brief"),
                cause: Removal::Deleted,
            },
            Change::Remove {
                name: name("unknown"),
                cause: Removal::Expired,
            },
        ];
        let log = EventLog::new(10, Vec::new());
        let events = log.plan_batch(
            None,
            &changes,
            &[name("old")],
            |n| (n == &stored.name).then_some(&stored),
            (1, 0),
            at(50),
        );
        assert_eq!(
            kinds(&events),
            ["capped", "created", "deleted", "expired", "rearmed", "idle"]
        );
        let capped = &events[0];
        assert_eq!(capped.limit, Some(Duration::from_secs(30)));
        let ended = capped.ended.as_ref().unwrap();
        assert_eq!((ended.started_at, ended.ended_at), (at(10), at(40)));
        assert_eq!(ended.uid, Some(1000));
        assert_eq!(ended.command.as_deref(), Some("curl"));
        // A task created and deleted in one batch ends at once.
        let brief = events[2].ended.as_ref().unwrap();
        assert_eq!((brief.started_at, brief.ended_at), (at(50), at(50)));
        assert_eq!(events[3].ended, None, "no row, nothing to describe");
        assert_eq!(events[4].task, Some(name("old")));
        for event in &events {
            let line = event.to_line();
            let mut through_value = event.to_json().to_string().into_bytes();
            through_value.push(b'\n');
            assert_eq!(line, through_value);
            assert_eq!(Event::from_json(&line).as_ref(), Some(event));
        }
    }

    #[test]
    fn a_clock_step_comes_first_in_its_batch_with_its_signed_size() {
        let log = EventLog::new(10, Vec::new());
        let now = Timestamp::from_nanos(7);
        let forward = ClockStep::Forward(std::time::Duration::from_secs(2));
        let events = log.plan(Some(forward), &[], 0, 0, now);
        assert_eq!(kinds(&events), ["clock_stepped"]);
        assert_eq!(events[0].step_ns, Some(2_000_000_000));
        assert_eq!(
            String::from_utf8(events[0].to_line()).unwrap(),
            "{\"at\":\"1970-01-01T00:00:00.000000007Z\",\"event\":\"clock_stepped\",\"seq\":1,\"step_ns\":2000000000}\n"
        );
        let back = ClockStep::Backward(std::time::Duration::from_secs(3));
        let events = log.plan(Some(back), &[put("a", false)], 1, 1, now);
        assert_eq!(kinds(&events), ["clock_stepped", "refreshed"]);
        assert_eq!(events[0].step_ns, Some(-3_000_000_000));
        assert_eq!(events[1].step_ns, None);
    }

    #[test]
    fn events_written_before_clock_steps_existed_still_decode() {
        let line = b"{\"at\":\"2026-06-02T17:11:14.555839485Z\",\"event\":\"created\",\"expires_at\":\"2026-06-02T18:11:14.555839485Z\",\"seq\":4,\"task\":\"agent\"}\n";
        let event = Event::from_json(line).unwrap();
        assert_eq!((event.kind, event.step_ns), (EventKind::Created, None));
        assert_eq!(event.to_line(), line);
    }

    #[test]
    fn a_line_is_read_member_by_member_as_the_value_was() {
        // Escapes in a command line (read into an owned copy), a member
        // this build does not know (skipped), members in any order.
        let line = br#"{"uid":7,"seq":9,"event":"deleted","at":"2026-06-02T17:11:14Z","task":"a","future":{"x":[1]},"started_at":"2026-06-02T17:11:10Z","ended_at":"2026-06-02T17:11:14Z","command":"say \"hi\" \u00e9"}"#;
        let event = Event::from_json(line).unwrap();
        let ended = event.ended.as_ref().unwrap();
        assert_eq!(ended.command.as_deref(), Some("say \"hi\" \u{e9}"));
        assert_eq!((event.seq, ended.uid), (9, Some(7)));
        // An instant that does not parse is left out, as if absent: the
        // hold is not described, and the event still reads.
        let line = br#"{"seq":1,"event":"deleted","at":"2026-06-02T17:11:14Z","started_at":"yesterday","ended_at":"2026-06-02T17:11:14Z","expires_at":"soon"}"#;
        let event = Event::from_json(line).unwrap();
        assert_eq!((event.ended, event.expires_at), (None, None));
        // What makes a line unreadable: a missing seq, an unknown kind, a
        // bad name, a member of the wrong type, a bad `at`.
        for bad in [
            &br#"{"event":"deleted","at":"2026-06-02T17:11:14Z"}"#[..],
            br#"{"seq":1,"event":"exploded","at":"2026-06-02T17:11:14Z"}"#,
            br#"{"seq":1,"event":"deleted","at":"2026-06-02T17:11:14Z","task":"a b"}"#,
            br#"{"seq":1,"event":"deleted","at":"2026-06-02T17:11:14Z","pid":"7"}"#,
            br#"{"seq":1,"event":"deleted","at":"now"}"#,
        ] {
            assert_eq!(
                Event::from_json(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
