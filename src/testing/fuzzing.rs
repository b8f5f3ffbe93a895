//! The bodies of the fuzz targets, shared by `fuzz/fuzz_targets/*.rs` (under
//! libFuzzer, on nightly features) and `tests/fuzz_corpus.rs` (every corpus
//! and regression file, replayed in plain stable `cargo test`).
//!
//! Each function takes arbitrary bytes and panics only when a property the
//! daemon relies on is broken; any input that does not describe a meaningful
//! case is simply a short run. Structured inputs are decoded by hand with
//! [`Input`], which never fails: once the bytes are spent it reads zeros.
//!
//! Depends on everything it checks: [`crate::http`], [`crate::conn`],
//! [`crate::expire`], [`crate::api`], [`crate::tasks`], [`crate::record`],
//! [`crate::store`], [`super::faulty`] and [`super::powercut`]. Nothing of the daemon depends on it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::faulty::{self, FaultOn, FaultSwitch};
use super::powercut;
use crate::api::{self, Query, Routed};
use crate::conn::{Conn, Next, Reply};
use crate::expire::{self, DEFAULT_MAX_EXPIRE, MAX_EXPIRE_CEILING, MIN_EXPIRE};
use crate::http::{self, Limits, Method, Parsed, Request, Response};
use crate::record;
use crate::store::Store;
use crate::tasks::{
    Batch, Change, Command, Outcome, Ownership, Removal, Task, TaskError, TaskName, Tasks,
};
use crate::time::Timestamp;

/// A cursor over fuzz input. Reads past the end give zeros, so every byte
/// string decodes to some case and a short input is a short case.
struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&first, rest)) => {
                self.data = rest;
                first
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

// ---------------------------------------------------------------------------
// http_request

/// Statuses [`http::parse`] may refuse with.
const FRAMING_STATUSES: &[u16] = &[400, 413, 414, 417, 431, 501, 505];

/// How a stream of requests ended.
#[derive(Debug, PartialEq, Eq)]
enum StreamEnd {
    /// A request without keep-alive: nothing after it is read.
    Closed,
    /// The rest is an incomplete request.
    NeedMore,
    /// Refused with this status; the connection closes.
    Refused,
}

/// `http_request`: byte 0 picks the limits and the largest piece, byte 1
/// seeds the split points; the rest is what a client sent on one connection.
///
/// Properties: framing never panics and never consumes more than it was
/// given (nor nothing); every framed request re-encodes and re-parses to
/// itself; and the daemon's own connection buffer ([`Conn`]), fed the
/// stream in arbitrary pieces, frames exactly the requests that parsing the
/// whole stream at once frames, and refuses where it refuses.
pub fn http_request(data: &[u8]) {
    let mut input = Input::new(data);
    let shape = input.byte();
    let seed = input.byte();
    let stream = input.rest();
    let limits = if shape & 0x80 != 0 {
        // Small limits, so short inputs reach every limit's edge.
        Limits {
            max_head: 96,
            max_target: 24,
            max_body: 40,
        }
    } else {
        Limits::default()
    };
    let (whole, whole_end) = frame_at_once(stream, &limits);
    // The daemon's buffer cap (server::Config::max_input): every request the
    // framer accepts must fit in it, however the bytes arrive.
    let max_input = limits.max_request_bytes();
    let pieces = split_points(stream.len(), seed, shape);
    let (split, split_end) = frame_through_conn(stream, &pieces, &limits, max_input);
    assert_eq!(
        whole, split,
        "the requests framed depend on how the bytes arrived"
    );
    assert_eq!(
        whole_end, split_end,
        "the end depends on how the bytes arrived"
    );
}

/// Frames every request of `stream` by calling [`http::parse`] on the
/// whole remaining buffer, checking each result.
fn frame_at_once(stream: &[u8], limits: &Limits) -> (Vec<Request>, StreamEnd) {
    let mut requests = Vec::new();
    let mut at = 0;
    loop {
        let buf = &stream[at..];
        match http::parse(buf, limits) {
            Ok(Parsed::Complete { request, consumed }) => {
                assert!(consumed > 0, "a request framed from no bytes");
                assert!(
                    consumed <= buf.len(),
                    "consumed {consumed} of {} bytes",
                    buf.len()
                );
                assert!(request.body.len() <= limits.max_body, "body over the limit");
                assert!(
                    request.target.len() <= limits.max_target,
                    "target over the limit"
                );
                check_reencodes(&request);
                at += consumed;
                let keep_alive = request.keep_alive;
                requests.push(request);
                if !keep_alive {
                    return (requests, StreamEnd::Closed);
                }
            }
            Ok(Parsed::Partial(_)) => return (requests, StreamEnd::NeedMore),
            Err(e) => {
                assert!(FRAMING_STATUSES.contains(&e.status), "status {}", e.status);
                return (requests, StreamEnd::Refused);
            }
        }
    }
}

/// A framed request, encoded as a well-behaved client would send it, frames
/// to the same request from exactly the encoded bytes.
fn check_reencodes(request: &Request) {
    let encoded = request.encode();
    // Encoding adds a few headers: judge the parse, not the head limit.
    let roomy = Limits {
        max_head: usize::MAX,
        max_target: usize::MAX,
        max_body: usize::MAX,
    };
    match http::parse(&encoded, &roomy) {
        Ok(Parsed::Complete {
            request: again,
            consumed,
        }) => {
            assert_eq!(&again, request, "re-encoding changed the request");
            assert_eq!(consumed, encoded.len(), "re-encoded request framed short");
        }
        other => panic!(
            "re-encoded request {:?} did not frame: {other:?}",
            String::from_utf8_lossy(&encoded)
        ),
    }
}

/// Piece lengths summing to `len`: one piece when `seed` is 0, otherwise
/// pseudo-random lengths from 1 to a maximum picked by `shape`.
fn split_points(len: usize, seed: u8, shape: u8) -> Vec<usize> {
    if seed == 0 {
        return vec![len];
    }
    let largest = [1, 3, 16, 200][usize::from(shape & 3)];
    let mut state = u32::from(seed).wrapping_mul(0x9E37_79B9) | 1;
    let mut pieces = Vec::new();
    let mut left = len;
    while left > 0 {
        // xorshift32
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let piece = (1 + state as usize % largest).min(left);
        pieces.push(piece);
        left -= piece;
    }
    pieces
}

/// A socket that has received the pieces delivered so far.
struct Pieces {
    pending: Vec<u8>,
}

impl Read for Pieces {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pending.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = out.len().min(self.pending.len());
        out[..n].copy_from_slice(&self.pending[..n]);
        self.pending.drain(..n);
        Ok(n)
    }
}

impl Write for Pieces {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Frames `stream` as the reactor does: a [`Conn`] reads what arrived, and
/// requests are taken until it needs more, refuses, or closes.
fn frame_through_conn(
    stream: &[u8],
    pieces: &[usize],
    limits: &Limits,
    max_input: usize,
) -> (Vec<Request>, StreamEnd) {
    let now = Instant::now();
    let mut conn: Conn<Pieces, ()> = Conn::new(
        Pieces {
            pending: Vec::new(),
        },
        now,
    );
    let mut requests = Vec::new();
    let mut at = 0;
    for &piece in pieces {
        conn.stream_mut()
            .pending
            .extend_from_slice(&stream[at..at + piece]);
        at += piece;
        conn.mark_readable();
        conn.read_available(max_input, now)
            .expect("an in-memory stream does not fail");
        loop {
            match conn.next_request(limits, now) {
                Next::Request(request) => {
                    conn.queue(
                        Reply::Ready(Response::empty(204)),
                        request.minor_version,
                        request.keep_alive,
                    );
                    requests.push(request);
                    if conn.is_closing() {
                        return (requests, StreamEnd::Closed);
                    }
                }
                // As the reactor does: a full buffer is read again once
                // requests have been taken from it.
                Next::NeedMore => {
                    let more = conn.can_read_more(max_input)
                        && conn
                            .read_available(max_input, now)
                            .expect("an in-memory stream does not fail");
                    if !more {
                        break;
                    }
                }
                Next::Invalid(_) => return (requests, StreamEnd::Refused),
            }
        }
    }
    (requests, StreamEnd::NeedMore)
}

// ---------------------------------------------------------------------------
// duration

/// `duration`: byte 0 picks the form (odd: a JSON document, even: a raw
/// string), byte 1 and 2 the configured maximum; the rest is the value.
///
/// Properties: decoding never panics (humantime can, on overflow: `expire`
/// must guard it); whatever is accepted lies in `MIN_EXPIRE..=max`; an
/// accepted value formatted by humantime decodes to itself, and so does its
/// JSON integer form when it is whole seconds; every refusal's message can
/// be rendered.
pub fn duration(data: &[u8]) {
    let mut input = Input::new(data);
    let form = input.byte();
    let max = match input.u16() {
        0 => DEFAULT_MAX_EXPIRE,
        n => Duration::from_secs(u64::from(n) * 16).min(MAX_EXPIRE_CEILING),
    };
    let rest = input.rest();
    let decoded = if form & 1 == 1 {
        let Ok(value) = serde_json::from_slice::<Value>(rest) else {
            return;
        };
        expire::decode(&value, max)
    } else {
        let Ok(text) = std::str::from_utf8(rest) else {
            return;
        };
        expire::parse_text(text, max)
    };
    match decoded {
        Ok(accepted) => {
            assert!(
                (MIN_EXPIRE..=max).contains(&accepted),
                "{accepted:?} accepted outside 1s..={max:?}"
            );
            let text = humantime::format_duration(accepted).to_string();
            assert_eq!(
                expire::parse_text(&text, max),
                Ok(accepted),
                "{text:?} does not decode to what it formats"
            );
            if accepted.subsec_nanos() == 0 {
                let seconds = Value::from(accepted.as_secs());
                assert_eq!(expire::decode(&seconds, max), Ok(accepted));
            }
        }
        Err(refused) => {
            let _ = refused.to_string();
        }
    }
}

// ---------------------------------------------------------------------------
// api_request

/// Methods an `api_request` input can pick, beside GET, POST, PUT and
/// DELETE; all but HEAD are ones the API does not implement.
const OTHER_METHODS: &[&str] = &["PATCH", "HEAD", "OPTIONS", "get", "CONNECT"];

/// `api_request`: byte 0 picks the method, byte 1 the HTTP version and the
/// `--max-expire`; then the target up to the first newline, then the body.
///
/// Properties: routing never panics and answers with a command, a query or
/// a 4xx JSON error (`405` with its `Allow`), or 501 for exactly the methods
/// the API does not implement; a command is valid (a valid name, an expiry
/// in range) and, planned against a state holding one task, answers 2xx or
/// 4xx; a query answers 200 or 404. No other 5xx.
pub fn api_request(data: &[u8]) {
    let mut input = Input::new(data);
    let method = match input.byte() % 9 {
        0 => Method::Get,
        1 => Method::Post,
        2 => Method::Put,
        3 => Method::Delete,
        n => match OTHER_METHODS[usize::from(n - 4)] {
            "HEAD" => Method::Head,
            token => Method::Other(token.to_owned()),
        },
    };
    let flags = input.byte();
    let max_expire = if flags & 2 == 0 {
        DEFAULT_MAX_EXPIRE
    } else {
        Duration::from_secs(60)
    };
    let rest = input.rest();
    let (target, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    let request = Request {
        method,
        target: String::from_utf8_lossy(target).into_owned(),
        minor_version: flags & 1,
        keep_alive: true,
        body: body.to_vec(),
    };
    let _ = api::route_label(&request);
    let now = Timestamp::from_nanos(1_780_000_000 * 1_000_000_000);
    let mut tasks = Tasks::new(16);
    let agent = TaskName::parse("agent").expect("a valid name");
    tasks.load([Task::new(
        agent,
        now,
        now.checked_add(Duration::from_secs(60)).expect("in range"),
    )]);
    match api::route(&request, max_expire) {
        Routed::Reply(response) => {
            let unimplemented = matches!(request.method, Method::Other(_));
            assert!(
                (400..500).contains(&response.status) != unimplemented
                    && (response.status == 501) == unimplemented,
                "{request:?} answered {}",
                response.status
            );
            let body: Value =
                serde_json::from_slice(&response.body).expect("an error body is JSON");
            assert!(body["error"].is_string(), "no error sentence: {body}");
            assert_eq!(response.status == 405, response.allow.is_some());
        }
        Routed::Mutation { command, .. } => {
            let name = match &command {
                Command::Create { name, expire, .. } | Command::Upsert { name, expire, .. } => {
                    assert!((MIN_EXPIRE..=max_expire).contains(expire), "{command:?}");
                    name
                }
                Command::Delete { name, .. } => name,
            };
            assert_eq!(
                TaskName::parse(name.as_str()).as_ref(),
                Ok(name),
                "routed an invalid name"
            );
            let mut batch = Batch::new();
            let response = api::outcome(&tasks.plan(&mut batch, command, now));
            assert!(
                (200..500).contains(&response.status),
                "{request:?} answered {}",
                response.status
            );
        }
        Routed::Query(query) => match query {
            Query::List | Query::Get(_) | Query::Status => {
                let response = api::answer(&query, &tasks, None, now);
                assert!(
                    matches!(response.status, 200 | 404),
                    "{request:?} answered {}",
                    response.status
                );
            }
            // Answered by the reactor.
            Query::Metrics | Query::Events { .. } => {}
        },
    }
}

// ---------------------------------------------------------------------------
// tasks_model

/// Names the model draws from: few, so commands collide.
const NAMES: &[&str] = &["a", "b", "agent", "Z9", "x.y@h:1", "a-"];

/// 2026-06-02 or so, in nanoseconds: an ordinary `now` to start from.
const START_NANOS: u64 = 1_780_000_000 * 1_000_000_000;

fn name_at(index: u8) -> TaskName {
    TaskName::parse(NAMES[usize::from(index) % NAMES.len()]).expect("the model's names are valid")
}

/// An expiry as the API would pass it: 1 s to a week, sometimes with nanos.
fn expire_of(byte: u8) -> Duration {
    match byte {
        0xF0..=0xFF => MAX_EXPIRE_CEILING,
        _ => {
            let nanos = if byte & 0x08 != 0 { 999_999_999 } else { 0 };
            Duration::new(1 + u64::from(byte & 0x07) + u64::from(byte >> 4), nanos)
        }
    }
}

/// The naive reference: rows by name, each `(started_at, expires_at)` in
/// nanoseconds and its owner, with liveness, ownership and the limits
/// spelled out from the README.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ModelState {
    rows: BTreeMap<String, (u64, u64)>,
    owners: BTreeMap<String, Option<u32>>,
}

/// The rules the model is run under: the task limit and, when owned, the
/// per-uid quota.
#[derive(Clone, Copy, Debug)]
struct ModelRules {
    max: usize,
    max_per_uid: Option<usize>,
}

/// Callers the model draws from: unknown, root and two users.
const CALLERS: [Option<u32>; 4] = [None, Some(0), Some(1000), Some(1001)];

impl ModelState {
    fn live(&self, name: &str, now: u64) -> Option<(u64, u64)> {
        self.rows
            .get(name)
            .copied()
            .filter(|&(_, expires)| expires > now)
    }

    fn task(&self, name: &str, (started, expires): (u64, u64)) -> Task {
        Task {
            owner: self.owners.get(name).copied().flatten(),
            ..Task::new(
                TaskName::parse(name).expect("valid"),
                Timestamp::from_nanos(started),
                Timestamp::from_nanos(expires),
            )
        }
    }

    fn put(&mut self, name: &str, row: (u64, u64), owner: Option<u32>) {
        self.rows.insert(name.to_owned(), row);
        self.owners.insert(name.to_owned(), owner);
    }

    fn remove(&mut self, name: &str) {
        self.rows.remove(name);
        self.owners.remove(name);
    }

    /// A new row's `(started_at, expires_at)`, if ownership, the limits and
    /// the clock allow it.
    fn fresh(
        &self,
        name: &str,
        expire: Duration,
        now: u64,
        caller: Option<u32>,
        rules: ModelRules,
    ) -> Result<(u64, u64), TaskError> {
        if let Some(limit) = rules.max_per_uid {
            let uid = caller.ok_or(TaskError::UnknownCaller)?;
            let owns = |owner: &Option<u32>| *owner == Some(uid);
            let count = self.owners.values().filter(|owner| owns(owner)).count();
            let replaces_own = self.owners.get(name).is_some_and(owns);
            if uid != 0 && !replaces_own && count >= limit {
                return Err(TaskError::UidFull { uid, count, limit });
            }
        }
        if !self.rows.contains_key(name) && self.rows.len() >= rules.max {
            return Err(TaskError::Full { limit: rules.max });
        }
        let expires = until(now, expire)?;
        Ok((now, expires))
    }

    /// Whether `caller` may refresh or delete the live row `name`.
    fn may_change(
        &self,
        name: &TaskName,
        caller: Option<u32>,
        rules: ModelRules,
    ) -> Result<(), TaskError> {
        if rules.max_per_uid.is_none() {
            return Ok(());
        }
        let uid = caller.ok_or(TaskError::UnknownCaller)?;
        let owner = self.owners.get(name.as_str()).copied().flatten();
        if uid == 0 || owner == Some(uid) {
            return Ok(());
        }
        Err(TaskError::NotOwner {
            name: name.clone(),
            owner,
        })
    }

    fn run(
        &mut self,
        command: &Command,
        now: u64,
        rules: ModelRules,
    ) -> Result<Outcome, TaskError> {
        let caller = command.caller();
        match command {
            Command::Create { name, expire, .. } => {
                let key = name.as_str();
                if self.live(key, now).is_some() {
                    return Err(TaskError::NameTaken(name.clone()));
                }
                let row = self.fresh(key, *expire, now, caller, rules)?;
                self.put(key, row, caller);
                Ok(Outcome::Created(self.task(key, row)))
            }
            Command::Upsert { name, expire, .. } => {
                let key = name.as_str();
                let (row, created) = match self.live(key, now) {
                    Some((started, _)) => {
                        self.may_change(name, caller, rules)?;
                        ((started, until(now, *expire)?), false)
                    }
                    None => (self.fresh(key, *expire, now, caller, rules)?, true),
                };
                let owner = if created {
                    caller
                } else {
                    self.owners.get(key).copied().flatten()
                };
                self.put(key, row, owner);
                Ok(Outcome::Upserted {
                    task: self.task(key, row),
                    created,
                })
            }
            Command::Delete { name, .. } => {
                if self.live(name.as_str(), now).is_none() {
                    return Err(TaskError::NotFound(name.clone()));
                }
                self.may_change(name, caller, rules)?;
                self.remove(name.as_str());
                Ok(Outcome::Deleted)
            }
        }
    }
}

/// `now + expire` in nanoseconds, refused past `u64::MAX`.
fn until(now: u64, expire: Duration) -> Result<u64, TaskError> {
    let sum = u128::from(now) + expire.as_nanos();
    u64::try_from(sum).map_err(|_| TaskError::TimeOverflow)
}

/// `tasks_model`: byte 0 is the task limit (1 to 6) and the ownership (shared,
/// or owned with a per-uid quota of 1 to 4), then operations of two or three
/// bytes each: create, upsert, delete (from the caller the op byte's high
/// bits pick), get, list, advance the clock, plan due expiries, and end the
/// batch (applied as a successful commit, or dropped as a failed one).
///
/// The state machine is checked after every step against [`ModelState`]:
/// each outcome, every read, the deadlines, the row count and the batch's
/// size and row delta. Commands planned in an open batch see each other but
/// not the state; the state changes only when a batch is applied.
pub fn tasks_model(data: &[u8]) {
    let mut input = Input::new(data);
    let first = input.byte();
    let max = 1 + usize::from(first % 6);
    let max_per_uid = match first / 6 % 5 {
        0 => None,
        quota => Some(usize::from(quota)),
    };
    let rules = ModelRules { max, max_per_uid };
    let ownership = match max_per_uid {
        None => Ownership::Shared,
        Some(max_per_uid) => Ownership::Owned { max_per_uid },
    };
    let mut tasks = Tasks::new(max).with_ownership(ownership);
    let mut batch = Batch::new();
    let mut committed = ModelState::default();
    let mut pending = ModelState::default();
    let mut touched: BTreeSet<String> = BTreeSet::new();
    let mut planned = 0usize;
    let mut now = START_NANOS;
    while !input.is_empty() {
        let op = input.byte();
        match op % 8 {
            0..=2 => {
                let name = name_at(input.byte());
                let caller = CALLERS[usize::from(op / 8) % CALLERS.len()];
                let command = match op % 8 {
                    0 => Command::Create {
                        name,
                        expire: expire_of(input.byte()),
                        claim: Default::default(),
                        caller,
                    },
                    1 => Command::Upsert {
                        name,
                        expire: expire_of(input.byte()),
                        claim: Default::default(),
                        caller,
                    },
                    _ => Command::Delete {
                        name,
                        caller,
                        bound_to: None,
                    },
                };
                let expected = pending.run(&command, now, rules);
                let actual = tasks.plan(&mut batch, command.clone(), Timestamp::from_nanos(now));
                assert_eq!(actual, expected, "{command:?} at {now}");
                if let Ok(outcome) = actual {
                    let name = match command {
                        Command::Create { name, .. }
                        | Command::Upsert { name, .. }
                        | Command::Delete { name, .. } => name,
                    };
                    touched.insert(name.as_str().to_owned());
                    planned += 1;
                    let _ = api::outcome(&Ok(outcome));
                }
            }
            3 => {
                let name = name_at(input.byte());
                let expected = committed
                    .live(name.as_str(), now)
                    .map(|row| committed.task(name.as_str(), row));
                assert_eq!(
                    tasks.get(&name, Timestamp::from_nanos(now)).cloned(),
                    expected,
                    "get {name} at {now}"
                );
            }
            4 => {
                let expected: Vec<Task> = committed
                    .rows
                    .iter()
                    .filter(|(_, (_, expires))| *expires > now)
                    .map(|(name, row)| committed.task(name, *row))
                    .collect();
                let actual: Vec<Task> = tasks.live(Timestamp::from_nanos(now)).cloned().collect();
                assert_eq!(actual, expected, "list at {now}");
            }
            5 => {
                let step = input.byte();
                let by = match step & 3 {
                    0 => 0,
                    1 => 1,
                    2 => u64::from(step >> 2) * 1_000_000_000,
                    _ if step == 0xFF => u64::MAX,
                    _ => u64::from(step >> 2) * 250_000_000,
                };
                now = now.saturating_add(by);
            }
            6 => {
                let due: Vec<String> = committed
                    .rows
                    .iter()
                    .filter(|(name, (_, expires))| *expires <= now && !touched.contains(*name))
                    .map(|(name, _)| name.clone())
                    .collect();
                let count = tasks.expire_due(&mut batch, Timestamp::from_nanos(now));
                assert_eq!(count, due.len(), "expiries planned at {now}");
                for name in due {
                    pending.remove(&name);
                    touched.insert(name);
                }
                planned += count;
            }
            _ => {
                let finished = std::mem::take(&mut batch);
                if op & 0x80 == 0 {
                    tasks.apply(finished);
                    committed = pending.clone();
                } else {
                    // The commit failed: the batch is dropped unapplied.
                    drop(finished);
                    pending = committed.clone();
                }
                touched.clear();
                planned = 0;
            }
        }
        check_tasks(&tasks, &batch, &committed, &pending, planned);
    }
}

/// The state's indexes and the batch's counts agree with the model.
fn check_tasks(
    tasks: &Tasks,
    batch: &Batch,
    committed: &ModelState,
    pending: &ModelState,
    planned: usize,
) {
    assert_eq!(tasks.len(), committed.rows.len(), "row count");
    let deadlines = committed.rows.values().map(|&(_, expires)| expires);
    assert_eq!(
        tasks.next_deadline().map(Timestamp::as_nanos),
        deadlines.clone().min(),
        "next deadline"
    );
    assert_eq!(
        tasks.last_deadline().map(Timestamp::as_nanos),
        deadlines.max(),
        "last deadline"
    );
    assert_eq!(batch.len(), planned, "changes in the batch");
    for uid in CALLERS.into_iter().flatten() {
        let owned = committed
            .owners
            .values()
            .filter(|owner| **owner == Some(uid));
        assert_eq!(tasks.owned_by(uid), owned.count(), "rows of uid {uid}");
    }
    assert_eq!(
        batch.rows_delta(),
        pending.rows.len() as isize - committed.rows.len() as isize,
        "the batch's row delta"
    );
}

// ---------------------------------------------------------------------------
// store_crash

/// The store's task table, as `store` defines it, for writing raw rows.
const TASKS_TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("tasks");

/// A directory of its own for one run, removed when dropped (on a panic
/// too). Under `/dev/shm` when there is one: a sync there costs nothing, and
/// the faults are injected, not waited for.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new() -> Scratch {
        static RUNS: AtomicU64 = AtomicU64::new(0);
        let shm = PathBuf::from("/dev/shm");
        let base = if shm.is_dir() {
            shm
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!(
            "sprite-tasks-fuzz-{}-{}",
            std::process::id(),
            RUNS.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        Scratch { dir }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn task_of(input: &mut Input) -> Task {
    let name = name_at(input.byte());
    let started = START_NANOS + u64::from(input.byte()) * 1_000_000_000;
    let expires = started + u64::from(input.byte()) * 1_000_000_000;
    Task::new(
        name,
        Timestamp::from_nanos(started),
        Timestamp::from_nanos(expires),
    )
}

fn change_of(input: &mut Input) -> Change {
    let kind = input.byte();
    if kind & 1 == 0 {
        Change::Put {
            task: task_of(input),
            created: kind & 2 != 0,
        }
    } else {
        Change::Remove {
            name: name_at(input.byte()),
            cause: match kind & 6 {
                0 => Removal::Deleted,
                2 => Removal::Expired,
                _ => Removal::Released {
                    pid: u32::from(kind),
                },
            },
        }
    }
}

/// What the table holds after `changes`, applied in order to `rows`.
fn applied(mut rows: BTreeMap<String, Task>, changes: &[Change]) -> BTreeMap<String, Task> {
    for change in changes {
        match change {
            Change::Put { task, .. } => {
                rows.insert(task.name.as_str().to_owned(), task.clone());
            }
            Change::Remove { name, .. } => {
                rows.remove(name.as_str());
            }
        }
    }
    rows
}

fn by_name(tasks: Vec<Task>) -> BTreeMap<String, Task> {
    tasks
        .into_iter()
        .map(|task| (task.name.as_str().to_owned(), task))
        .collect()
}

/// Loads through `store` and checks nothing was quarantined.
fn load_rows(store: &mut Store, after: &str) -> BTreeMap<String, Task> {
    let loaded = store
        .load()
        .unwrap_or_else(|e| panic!("the healed store does not load {after}: {e}"));
    assert!(
        loaded.quarantined.is_empty(),
        "rows we wrote were quarantined {after}: {:?}",
        loaded.quarantined
    );
    by_name(loaded.tasks)
}

/// Fuzz input as the power-cut simulation's choices.
impl powercut::Choices for Input<'_> {
    fn below(&mut self, n: u64) -> u64 {
        u64::from(self.u16()) % n.max(1)
    }

    fn exhausted(&self) -> bool {
        self.data.is_empty()
    }
}

/// `store_crash`: the first byte picks one of two runs.
///
/// Odd: [`powercut::run`] with the input as its choices: commits,
/// checkpoints and recoveries through the real store (log and redb) over a
/// simulated disk, power cut at input-chosen operations with a random
/// prefix of the unsynced writes kept and the last one torn.
///
/// Even: operations of a few bytes each against a [`Store`] over
/// [`faulty`]'s failing files (the log and the database):
///
/// - arm the fault switch: fail after N more writes and/or syncs, once or
///   for good, with torn writes or not;
/// - commit a batch of one to four puts and removes;
/// - checkpoint the log into the database now;
/// - drop the store and reopen it (a restart);
/// - write one raw row behind the store's back, valid, damaged or garbage,
///   and reopen.
///
/// Properties: a batch that was acknowledged is on disk after every later
/// failure and reopen; after a failed commit the reloaded store (the switch
/// healed, as after a disk is freed) holds the batch entirely or not at all;
/// a failed checkpoint loses nothing; a store that reloads after a failure
/// still accepts commits; nothing the store wrote is ever quarantined; and
/// whatever a raw row holds, the record decoder decides it without
/// panicking: served if it decodes, quarantined if not.
pub fn store_crash(data: &[u8]) {
    let mut input = Input::new(data);
    if input.byte() & 1 == 1 {
        if let Err(violation) = powercut::run(&mut input, u64::MAX) {
            panic!("{violation}");
        }
        return;
    }
    let scratch = Scratch::new();
    let path = scratch.dir.join("tasks.redb");
    let switch = FaultSwitch::new();
    let options = powercut::sim_options();
    let reopen = |switch: &FaultSwitch| {
        faulty::store(&path, switch, &options)
            .unwrap_or_else(|e| panic!("a healthy open failed: {e}"))
    };
    let mut store = reopen(&switch);
    let mut model = load_rows(&mut store, "when new");
    while !input.is_empty() {
        let op = input.byte();
        match op % 6 {
            0 => {
                let after = u64::from(input.byte() % 64);
                let on = match (op >> 3) % 3 {
                    0 => FaultOn::Any,
                    1 => FaultOn::Writes,
                    _ => FaultOn::Syncs,
                };
                let errno = if op & 0x20 != 0 {
                    libc::ENOSPC
                } else {
                    libc::EIO
                };
                switch.set_torn_writes(op & 0x40 != 0);
                if op & 0x80 != 0 {
                    switch.fail_after(after, on, errno);
                } else {
                    switch.fail_once_after(after, on, errno);
                }
            }
            1 | 2 => {
                let count = 1 + input.byte() % 4;
                let changes: Vec<Change> = (0..count).map(|_| change_of(&mut input)).collect();
                match store.commit(&changes) {
                    Ok(()) => model = applied(model, &changes),
                    Err(crate::store::StoreError::Full(_)) => {}
                    Err(_) => {
                        switch.heal();
                        let seen = load_rows(&mut store, "after a failed commit");
                        let with_batch = applied(model.clone(), &changes);
                        assert!(
                            seen == model || seen == with_batch,
                            "after a failed commit of {changes:?} the store holds {seen:?}, \
                             neither the acknowledged {model:?} nor {with_batch:?}"
                        );
                        model = seen;
                    }
                }
            }
            3 => {
                switch.heal();
                drop(store);
                store = reopen(&switch);
                let seen = load_rows(&mut store, "after a restart");
                assert_eq!(seen, model, "a restart changed the store");
            }
            4 => {
                // A failed checkpoint is retried later; nothing is lost.
                let _ = store.checkpoint_now();
            }
            _ => {
                switch.heal();
                // The raw row goes under the checkpointed state: nothing
                // of the log may be replayed over it.
                store.checkpoint_now().expect("a healthy checkpoint");
                drop(store);
                let expected = write_raw_row(&path, &switch, &mut input, model);
                store = reopen(&switch);
                let loaded = store.load().expect("a store with a raw row loads");
                model = by_name(loaded.tasks);
                assert_eq!(model, expected, "a raw row was served wrongly");
                let quarantined: Vec<&str> = loaded
                    .quarantined
                    .iter()
                    .map(|(key, _)| key.as_str())
                    .collect();
                assert!(quarantined.len() <= 1, "{quarantined:?}");
            }
        }
    }
    switch.heal();
    drop(store);
    let mut store = reopen(&switch);
    let seen = load_rows(&mut store, "at the end");
    assert_eq!(seen, model, "acknowledged batches were lost");
}

/// Writes one row straight into the task table: a valid record, the record
/// of another name, a record with one bit flipped, or arbitrary bytes under
/// an arbitrary key. Returns what a load must serve afterwards.
fn write_raw_row(
    path: &std::path::Path,
    switch: &FaultSwitch,
    input: &mut Input,
    mut rows: BTreeMap<String, Task>,
) -> BTreeMap<String, Task> {
    let mode = input.byte();
    let (key, value): (Vec<u8>, Vec<u8>) = match mode % 4 {
        0 => {
            let task = task_of(input);
            (
                task.name.as_str().as_bytes().to_vec(),
                record::encode(&task).to_vec(),
            )
        }
        1 => {
            let task = task_of(input);
            let key = name_at(input.byte());
            (
                key.as_str().as_bytes().to_vec(),
                record::encode(&task).to_vec(),
            )
        }
        2 => {
            let task = task_of(input);
            let mut value = record::encode(&task);
            let bit = usize::from(input.byte()) % (value.len() * 8);
            value[bit / 8] ^= 1 << (bit % 8);
            (task.name.as_str().as_bytes().to_vec(), value.to_vec())
        }
        _ => {
            let key_len = usize::from(input.byte() % 8);
            let key: Vec<u8> = (0..key_len).map(|_| input.byte()).collect();
            let value_len = usize::from(input.byte() % 32);
            let value: Vec<u8> = (0..value_len).map(|_| input.byte()).collect();
            (key, value)
        }
    };
    let db = faulty::open(path, switch).expect("a healthy open for a raw row");
    let txn = db.begin_write().expect("a write transaction");
    {
        let mut table = txn.open_table(TASKS_TABLE).expect("the task table");
        table
            .insert(key.as_slice(), value.as_slice())
            .expect("a raw insert");
    }
    txn.commit().expect("a raw commit");
    drop(db);
    let served = record::decode(&key, &value);
    if let Ok(key) = std::str::from_utf8(&key) {
        rows.remove(key);
    }
    if let Ok(task) = served {
        rows.insert(task.name.as_str().to_owned(), task);
    }
    rows
}
