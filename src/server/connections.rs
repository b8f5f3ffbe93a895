//! The open connections, apart from how they are polled: their buffers and
//! queued replies ([`Conn`]), the ready queue, the event streams, the
//! connection deadlines, and the requests they hand to the [`Core`].
//! Generic over the stream, so it knows no mio: the shell registers what
//! it says ([`Connections::take_interest_changes`]) and drops what it
//! closed ([`Connections::take_closed`]).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::time::Instant;

use tracing::{debug, warn};

use super::core::{ConnId, Core, Handled, Now, Outside, Planned, Processes};
use crate::api;
use crate::conn::{Conn, Deadline, Next, Reply, Timeouts};
use crate::daemon_log::Noise;
use crate::http::{HttpDate, Limits};
use crate::ids::IdMap;

/// Most replies one connection may have queued in one turn. Past it the
/// connection is not read again until its output drains: a client that
/// pipelines thousands of requests gets them answered in slices, and others
/// get their turn in between.
pub const MAX_PIPELINED: usize = 64;

/// Output buffered for one connection above which no more of its requests are
/// read (the client is not reading its answers).
pub const MAX_OUTPUT_BACKLOG: usize = 256 * 1024;

/// The last line a stream consumer that fell behind receives.
const LAGGED_LINE: &[u8] = b"{\"event\":\"lagged\",\"error\":\"this consumer did not keep up with the events and was cut off; reconnect with ?since=<last seq> to resume\"}\n";

/// What the poll said about a connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct Readiness {
    pub readable: bool,
    pub hung_up: bool,
    pub writable: bool,
}

/// A connection and its place in the loop.
struct Slot<S> {
    conn: Conn<S, Planned>,
    /// In the ready queue.
    scheduled: bool,
    /// WRITABLE readiness is asked for (exactly while output is pending).
    writable_interest: bool,
}

/// What [`Connections::take_requests`] left a connection in.
enum Taken {
    /// Nothing more to do until it is readable or drained.
    Idle,
    /// Requests remain: take them next turn.
    More,
    /// It broke: close it.
    Broken,
}

/// The connections of a turn whose answers wait for its commit, and
/// those to read again next turn.
#[derive(Debug, Default)]
pub struct Waiting {
    waiting: Vec<ConnId>,
    again: Vec<ConnId>,
}

/// The open connections.
///
/// Invariants: an id is in `ready` at most once, exactly while its slot is
/// `scheduled`; `streams` lists connections carrying an event stream that
/// keeps up; a closed connection's stream waits in `closed` until the shell
/// takes it.
pub struct Connections<S> {
    slots: IdMap<ConnId, Slot<S>>,
    ready: VecDeque<ConnId>,
    streams: Vec<ConnId>,
    /// The earliest connection deadline might be this early.
    next_sweep: Option<Instant>,
    closed: Vec<(ConnId, S)>,
    interest_changes: Vec<ConnId>,
    /// The connections a turn read: empty between turns, its buffer kept
    /// so that a turn allocates nothing for them.
    touched: Vec<ConnId>,
    limits: Limits,
    timeouts: Timeouts,
}

impl<S: Read + Write> Connections<S> {
    pub fn new(limits: Limits, timeouts: Timeouts) -> Self {
        Connections {
            slots: IdMap::default(),
            ready: VecDeque::new(),
            streams: Vec::new(),
            next_sweep: None,
            closed: Vec::new(),
            interest_changes: Vec::new(),
            touched: Vec::new(),
            limits,
            timeouts,
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Whether a connection waits to be read.
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// The next connection deadline, at the latest.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.next_sweep
    }

    /// The most input buffered per connection: the largest request the
    /// framer accepts, so every request it can accept also arrives.
    fn max_input(&self) -> usize {
        self.limits.max_request_bytes()
    }

    /// A connection accepted at `mono`.
    pub fn insert(&mut self, id: ConnId, stream: S, mono: Instant) {
        let conn = Conn::new(stream, mono);
        self.note_deadline(conn.deadline(&self.timeouts).map(|(at, _)| at));
        self.slots.insert(
            id,
            Slot {
                conn,
                scheduled: false,
                writable_interest: false,
            },
        );
    }

    /// What the poll said about `id`.
    pub fn readiness(&mut self, id: ConnId, ready: Readiness, mono: Instant) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        let conn = &mut slot.conn;
        let mut wake = false;
        if ready.hung_up {
            conn.mark_hung_up();
            wake = true;
        } else if ready.readable {
            conn.mark_readable();
            wake = true;
        }
        if ready.writable && conn.output_pending() > 0 {
            if conn.flush(mono).is_err() || conn.is_finished() {
                self.close(id);
                return;
            }
            // A drained backlog lets the connection's requests be read again.
            wake |= conn.output_pending() == 0;
        }
        self.note_interest(id);
        if wake {
            self.schedule(id);
        }
    }

    /// Stops reading: whatever has arrived is answered, including requests
    /// still in the kernel's buffer; streams end.
    pub fn shut_down(&mut self, mono: Instant) {
        let max_input = self.max_input();
        let ids: Vec<ConnId> = self.slots.keys().copied().collect();
        for id in ids {
            let Some(slot) = self.slots.get_mut(&id) else {
                continue;
            };
            let conn = &mut slot.conn;
            conn.mark_readable();
            let broken = conn.read_available(max_input, mono).is_err();
            conn.stop_reading();
            if let Some(version) = conn.stream_version() {
                conn.push_output(mono, |out| api::stream_end(version, out));
                conn.end_stream();
            }
            if broken {
                self.close(id);
            } else {
                self.schedule(id);
            }
        }
    }

    fn schedule(&mut self, id: ConnId) {
        if let Some(slot) = self.slots.get_mut(&id)
            && !slot.scheduled
        {
            slot.scheduled = true;
            self.ready.push_back(id);
        }
    }

    /// Hands the ready connections' complete requests to the core, and
    /// answers at once those with nothing waiting for the commit: reads
    /// never wait for other clients' writes. `outside` is the metrics
    /// page's view of the store and hooks.
    pub fn take_ready(
        &mut self,
        core: &mut Core,
        processes: &mut impl Processes,
        outside: Outside,
        date: &HttpDate,
        now: Now,
    ) -> Waiting {
        let mut waiting = Waiting::default();
        let mut touched = std::mem::take(&mut self.touched);
        while let Some(id) = self.ready.pop_front() {
            if let Some(slot) = self.slots.get_mut(&id) {
                slot.scheduled = false;
            }
            match self.take_requests(id, core, processes, outside, date, now) {
                Taken::Idle => touched.push(id),
                Taken::More => {
                    waiting.again.push(id);
                    touched.push(id);
                }
                Taken::Broken => self.close(id),
            }
        }
        for id in touched.drain(..) {
            let waits = self
                .slots
                .get(&id)
                .is_some_and(|slot| slot.conn.has_planned());
            if waits {
                waiting.waiting.push(id);
            } else {
                self.deliver(id, core, date, now.mono);
            }
        }
        self.touched = touched;
        waiting
    }

    /// Answers the connections that waited for the turn's commit, and
    /// schedules those with requests left.
    pub fn answer_waiting(&mut self, waiting: Waiting, core: &mut Core, date: &HttpDate, now: Now) {
        for id in waiting.waiting {
            self.deliver(id, core, date, now.mono);
        }
        for id in waiting.again {
            self.schedule(id);
        }
    }

    /// Takes the connection's complete requests to the core.
    fn take_requests(
        &mut self,
        id: ConnId,
        core: &mut Core,
        processes: &mut impl Processes,
        outside: Outside,
        date: &HttpDate,
        now: Now,
    ) -> Taken {
        let max_input = self.max_input();
        let (connections, streams) = (self.slots.len(), self.streams.len());
        let Some(slot) = self.slots.get_mut(&id) else {
            return Taken::Idle;
        };
        let conn = &mut slot.conn;
        if conn.read_available(max_input, now.mono).is_err() || conn.stream_abandoned() {
            return Taken::Broken;
        }
        loop {
            if conn.is_closing() || conn.output_pending() > MAX_OUTPUT_BACKLOG {
                // A backlog is resumed by the writable event that drains it.
                return Taken::Idle;
            }
            if conn.queued_len() >= MAX_PIPELINED {
                return Taken::More;
            }
            let request = match conn.next_request(&self.limits, now.mono) {
                Next::Request(request) => request,
                Next::NeedMore if conn.is_closing() || !conn.can_read_more(max_input) => {
                    return Taken::Idle;
                }
                Next::NeedMore => match conn.read_available(max_input, now.mono) {
                    Ok(true) => continue,
                    Ok(false) => return Taken::Idle,
                    Err(_) => return Taken::Broken,
                },
                Next::Invalid(e) => {
                    conn.queue(Reply::Ready(core.refuse(e)), 1, false);
                    return Taken::Idle;
                }
            };
            let waiting = conn.has_planned();
            let reply = match core.handle(processes, id, &request, waiting, date, now) {
                Handled::Answer(response) => Reply::Ready(response),
                Handled::Planned(planned) => Reply::Planned(planned),
                Handled::AfterCommit => {
                    conn.hold_back(request);
                    return Taken::More;
                }
                Handled::Stream(head) => {
                    conn.queue(Reply::Raw(head), request.minor_version, true);
                    conn.start_stream(request.minor_version);
                    self.streams.push(id);
                    return Taken::Idle;
                }
                Handled::Metrics => {
                    let outside = Outside {
                        connections,
                        streams,
                        ..outside
                    };
                    Reply::Ready(core.metrics_page(outside, now))
                }
            };
            conn.queue(reply, request.minor_version, request.keep_alive);
            conn.recycle(request);
        }
    }

    /// Sends the committed events to every stream, cutting off a consumer
    /// whose backlog is full.
    pub fn broadcast(&mut self, core: &mut Core, now: Now) {
        let batches = core.take_event_lines();
        if batches.is_empty() || self.streams.is_empty() {
            return;
        }
        let streams = std::mem::take(&mut self.streams);
        for id in streams {
            let Some(slot) = self.slots.get_mut(&id) else {
                continue;
            };
            let conn = &mut slot.conn;
            let Some(version) = conn.stream_version() else {
                continue;
            };
            let keeping_up = conn.output_pending() <= MAX_OUTPUT_BACKLOG;
            conn.push_output(now.mono, |out| {
                if keeping_up {
                    for (_, line) in batches.iter().flat_map(|lines| lines.iter()) {
                        api::stream_chunk(version, line, out);
                    }
                } else {
                    api::stream_chunk(version, LAGGED_LINE, out);
                    api::stream_end(version, out);
                }
            });
            if !keeping_up {
                if core.admit_warning(Noise::StreamCutOff, now) {
                    warn!("an event stream consumer fell behind; cutting it off");
                }
                conn.end_stream();
            }
            if keeping_up {
                self.streams.push(id);
            }
            self.flush(id, now.mono);
        }
    }

    /// Writes the connection's answers, the planned ones as the core says.
    fn deliver(&mut self, id: ConnId, core: &mut Core, date: &HttpDate, mono: Instant) {
        if let Some(slot) = self.slots.get_mut(&id) {
            slot.conn.render(mono, date, |planned| core.answer(planned));
            self.flush(id, mono);
        }
    }

    /// Writes what the connection has queued; closes it if it broke or is
    /// done, or notes its deadline and interest.
    fn flush(&mut self, id: ConnId, mono: Instant) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        if slot.conn.flush(mono).is_err() || slot.conn.is_finished() {
            self.close(id);
            return;
        }
        let at = slot.conn.deadline(&self.timeouts).map(|(at, _)| at);
        self.note_deadline(at);
        self.note_interest(id);
    }

    /// Keeps `next_sweep` no later than a connection's new deadline.
    /// Deadlines only move later with activity, so a stale, earlier
    /// `next_sweep` costs one early sweep and nothing else.
    fn note_deadline(&mut self, at: Option<Instant>) {
        if let Some(at) = at {
            self.next_sweep = Some(self.next_sweep.map_or(at, |next| next.min(at)));
        }
    }

    /// Enforces connection deadlines that have passed: a late request gets
    /// 408, an idle or unread connection is closed.
    pub fn sweep(&mut self, core: &mut Core, date: &HttpDate, mono: Instant) {
        if self.next_sweep.is_none_or(|at| at > mono) {
            return;
        }
        self.next_sweep = None;
        let mut expired = Vec::new();
        let mut next: Option<Instant> = None;
        for (id, slot) in &self.slots {
            match slot.conn.deadline(&self.timeouts) {
                Some((at, kind)) if at <= mono => expired.push((*id, kind)),
                Some((at, _)) => next = Some(next.map_or(at, |n| n.min(at))),
                None => {}
            }
        }
        self.next_sweep = next;
        for (id, kind) in expired {
            match kind {
                Deadline::Request => {
                    debug!("request deadline passed; answering 408");
                    if let Some(slot) = self.slots.get_mut(&id) {
                        let response = api::error(
                            408,
                            "the request did not arrive in time; send the whole request at once",
                        );
                        slot.conn.queue(Reply::Ready(response), 1, false);
                    }
                    self.deliver(id, core, date, mono);
                }
                Deadline::Idle | Deadline::Write => {
                    debug!(?kind, "connection deadline passed; closing");
                    self.close(id);
                }
            }
        }
    }

    /// Notes that `id`'s WRITABLE interest must change if its output
    /// started or stopped pending.
    fn note_interest(&mut self, id: ConnId) {
        if let Some(slot) = self.slots.get(&id)
            && (slot.conn.output_pending() > 0) != slot.writable_interest
        {
            self.interest_changes.push(id);
        }
    }

    /// Connections whose WRITABLE interest must change, for
    /// [`set_interest`](Self::set_interest).
    pub fn take_interest_changes(&mut self) -> Vec<ConnId> {
        std::mem::take(&mut self.interest_changes)
    }

    /// Asks `register` to ask for WRITABLE readiness exactly while output
    /// is pending: most responses go out in one write, and an idle WRITABLE
    /// interest would wake the reactor for nothing. A failure closes it.
    pub fn set_interest(
        &mut self,
        id: ConnId,
        register: impl FnOnce(&mut S, bool) -> io::Result<()>,
    ) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        let wanted = slot.conn.output_pending() > 0;
        if wanted == slot.writable_interest {
            return;
        }
        match register(slot.conn.stream_mut(), wanted) {
            Ok(()) => slot.writable_interest = wanted,
            Err(e) => {
                warn!(error = %e, "cannot change a connection's interest; closing it");
                self.close(id);
            }
        }
    }

    fn close(&mut self, id: ConnId) {
        if let Some(slot) = self.slots.remove(&id) {
            if slot.conn.stream_version().is_some() {
                self.streams.retain(|other| *other != id);
            }
            self.closed.push((id, slot.conn.into_stream()));
        }
    }

    /// The streams of the connections closed since the last call, for the
    /// shell to deregister and drop.
    pub fn take_closed(&mut self) -> Vec<(ConnId, S)> {
        std::mem::take(&mut self.closed)
    }
}
