//! One connection: its input and output buffers, the replies queued for it in
//! the current turn, and the instants its deadlines are measured from.
//!
//! Generic over `Read + Write` so it can be driven without a socket. Depends
//! on [`crate::http`] for framing; it never reads a clock (`now` comes in) and
//! never touches the reactor. Each answered request is logged at debug level
//! (method, target, status, time from framing to answer).

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use tracing::debug;

use crate::http::{
    self, Answering, HttpDate, HttpError, Limits, Method, Parsed, Progress, Request, Response,
};

/// Most bytes read from the socket per `read` call.
const READ_CHUNK: usize = 16 * 1024;

/// Input storage a connection starts with; it doubles up to [`READ_CHUNK`]
/// of spare room when reads fill it. Requests are a few hundred bytes, so
/// idle connections stay small.
const INITIAL_INPUT: usize = 4096;

/// The most memory a connection keeps between requests for the next
/// one's target and body, each ([`Conn::recycle`]): a task's body is well
/// under 1 KiB; a body near the body limit, or a long target, is let go
/// rather than held by every connection that ever sent one.
const MAX_SPARE_REQUEST: usize = 4096;

/// Received bytes not yet framed into requests: `bytes[start..end]`.
///
/// The storage is zeroed only when it grows, never per read, and consumed
/// bytes are reclaimed by moving the pending ones to the front only when
/// room is needed.
#[derive(Debug, Default)]
struct Input {
    bytes: Vec<u8>,
    start: usize,
    end: usize,
}

impl Input {
    fn pending(&self) -> &[u8] {
        &self.bytes[self.start..self.end]
    }

    fn len(&self) -> usize {
        self.end - self.start
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    fn consume(&mut self, count: usize) {
        self.start += count;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Room for the next read, keeping the total pending under `max_len`.
    fn spare(&mut self, max_len: usize) -> &mut [u8] {
        let wanted = READ_CHUNK
            .min(max_len.saturating_sub(self.len()))
            .min(self.bytes.len().max(INITIAL_INPUT));
        if self.bytes.len() - self.end < wanted {
            self.bytes.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.bytes.len() - self.end < wanted {
                self.bytes.resize(self.end + wanted, 0);
            }
        }
        &mut self.bytes[self.end..self.end + wanted]
    }

    fn filled(&mut self, count: usize) {
        self.end += count;
    }
}

/// Bytes to send: `bytes[written..]`, then `tail`.
///
/// Invariants: `written <= bytes.len()`; `tail` is empty unless a large
/// body was queued as it is ([`adopt`](Self::adopt)), and then everything
/// queued after it goes to the end of `tail`; `stalled_since` is `Some`
/// while bytes are pending: the last time the client took some, or when
/// the first of them was queued.
#[derive(Debug, Default)]
struct Output {
    bytes: Vec<u8>,
    written: usize,
    tail: Vec<u8>,
    stalled_since: Option<Instant>,
}

/// A body at least this long is queued as it is instead of copied behind
/// its head: `GET /v1/tasks` with 100k tasks is a body of about 40 MB,
/// which the copy doubled for as long as it took to send (the daemon's
/// peak RSS in the latency bench's scale rows, 133 MiB). Below it a copy
/// is cheaper than the second write it saves.
const ADOPT_BODY_AT: usize = 64 << 10;

/// Output storage a connection keeps for its next answers once everything
/// is written: room for some hundred pipelined answers. A larger buffer
/// (a list's) is given back rather than held while the connection idles.
const KEEP_OUTPUT: usize = 64 << 10;

impl Output {
    fn pending(&self) -> usize {
        self.bytes.len() - self.written + self.tail.len()
    }

    /// The next bytes to write: the rest of `bytes`, or once those are
    /// out, the tail.
    fn unwritten(&mut self) -> &[u8] {
        if self.written == self.bytes.len() && !self.tail.is_empty() {
            self.bytes.clear();
            std::mem::swap(&mut self.bytes, &mut self.tail);
            self.written = 0;
        }
        &self.bytes[self.written..]
    }

    /// The buffer to append to; if nothing was pending, the write deadline
    /// runs from `now`.
    fn append(&mut self, now: Instant) -> &mut Vec<u8> {
        if self.pending() == 0 {
            self.stalled_since = Some(now);
        }
        if self.tail.is_empty() {
            &mut self.bytes
        } else {
            &mut self.tail
        }
    }

    /// Queues `body` after what is pending, moved rather than copied when
    /// nothing waits behind an earlier one. Call [`append`](Self::append)
    /// first: the body follows its head.
    fn adopt(&mut self, body: Vec<u8>) {
        if self.tail.is_empty() {
            self.tail = body;
        } else {
            self.tail.extend_from_slice(&body);
        }
    }

    /// The client took `count` more bytes at `now`.
    fn wrote(&mut self, count: usize, now: Instant) {
        self.written += count;
        self.stalled_since = Some(now);
    }

    /// Everything is written: the storage is reused up to [`KEEP_OUTPUT`],
    /// and no deadline runs.
    fn clear(&mut self) {
        self.bytes.clear();
        if self.bytes.capacity() > KEEP_OUTPUT {
            self.bytes = Vec::new();
        }
        self.tail = Vec::new();
        self.written = 0;
        self.stalled_since = None;
    }
}

/// The time limits of a connection, settings of the daemon.
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// From the first byte of a request to the end of its head (slowloris).
    pub head: Duration,
    /// From the end of the head to the end of the body.
    pub body: Duration,
    /// A keep-alive connection with nothing to do.
    pub idle: Duration,
    /// Output pending without the client reading any of it (slow read).
    pub write: Duration,
}

impl Timeouts {
    /// A request head is a few hundred bytes that curl writes at once; ten
    /// seconds is generous for a loaded machine and short for a slowloris.
    pub const DEFAULT_HEAD: Duration = Duration::from_secs(10);
    /// Bodies are as small as heads.
    pub const DEFAULT_BODY: Duration = Duration::from_secs(10);
    /// Long enough for a heartbeat client that reuses its connection every
    /// few seconds; short enough that abandoned connections do not pile up.
    pub const DEFAULT_IDLE: Duration = Duration::from_secs(60);
    /// A client that reads nothing for this long is not coming back.
    pub const DEFAULT_WRITE: Duration = Duration::from_secs(10);
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            head: Timeouts::DEFAULT_HEAD,
            body: Timeouts::DEFAULT_BODY,
            idle: Timeouts::DEFAULT_IDLE,
            write: Timeouts::DEFAULT_WRITE,
        }
    }
}

/// Which deadline is nearest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// A request started but its head or body is late: answer 408, close.
    Request,
    /// No request and no output: close quietly.
    Idle,
    /// Output pending and not read: close.
    Write,
}

/// A reply queued in the current turn, in request order.
#[derive(Debug)]
pub enum Reply<P> {
    /// Complete already.
    Ready(Response),
    /// A planned command, answered once its batch is committed (or not).
    Planned(P),
    /// `100 Continue` for a request still sending its body.
    Continue,
    /// Bytes written as they are (an event stream's head).
    Raw(Vec<u8>),
}

#[derive(Debug)]
struct Queued<P> {
    reply: Reply<P>,
    to: Answering,
    /// The request answered, for its log line.
    request: Option<RequestTrace>,
}

/// What the log line of an answered request says about it.
#[derive(Debug, Clone)]
struct RequestTrace {
    method: String,
    target: String,
    /// When it was framed.
    at: Instant,
}

impl RequestTrace {
    fn log(&self, status: u16, now: Instant) {
        debug!(
            method = %self.method,
            path = %self.target,
            status,
            micros = now.saturating_duration_since(self.at).as_micros() as u64,
            "request"
        );
    }
}

/// What [`Conn::next_request`] found in the input.
#[derive(Debug)]
pub enum Next {
    Request(Request),
    /// More bytes are needed.
    NeedMore,
    /// Refused; the caller answers and the connection closes.
    Invalid(HttpError),
}

/// Whether a read may find bytes, as far as the reactor's readiness edges
/// tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Readiness {
    /// An edge came (or the connection is new) and no read has found the
    /// socket empty since.
    MaybeReadable,
    /// The socket was found empty; only a new edge changes that.
    Drained,
}

/// The read side of the connection.
///
/// `PeerClosed` and `Stopped` are final. `Stopped` is reached only from a
/// side still open: a peer that closed first stays `PeerClosed`, so an
/// abandoned event stream is still seen as such during shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// Bytes are read as readiness allows; a short read drains the socket,
    /// since bytes arriving later raise a new edge.
    Open(Readiness),
    /// The reactor reported that the peer closed its side, but the EOF is
    /// not read yet. No further edge will come, so a short read does not
    /// drain the socket: reads go on until the EOF.
    HungUp(Readiness),
    /// A read returned EOF: the peer sends nothing more.
    PeerClosed,
    /// [`Conn::stop_reading`]: nothing more is read; what is buffered is
    /// answered.
    Stopped,
}

impl Reading {
    /// Whether a read could bring bytes (or the EOF).
    fn may_read(self) -> bool {
        matches!(
            self,
            Reading::Open(Readiness::MaybeReadable) | Reading::HungUp(Readiness::MaybeReadable)
        )
    }

    /// Whether no byte beyond those buffered will ever be read.
    fn ended(self) -> bool {
        matches!(self, Reading::PeerClosed | Reading::Stopped)
    }

    /// The same side with new readiness; a side that reads no more stays
    /// as it is.
    fn with(self, readiness: Readiness) -> Reading {
        match self {
            Reading::Open(_) => Reading::Open(readiness),
            Reading::HungUp(_) => Reading::HungUp(readiness),
            ended => ended,
        }
    }
}

/// What the connection does with requests. Nothing returns to `Serving`,
/// and an ended `Streaming` becomes `Closing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Requests are taken as they arrive (keep-alive).
    Serving,
    /// No further request is taken: the replies queued are sent, then the
    /// connection closes.
    Closing,
    /// An event stream is open, speaking HTTP/1.`minor_version`: no request
    /// is taken, and the connection stays open until the stream ends.
    Streaming { minor_version: u8 },
}

/// How far the request at the front of the input has come, for its
/// deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No byte of a request is buffered.
    Idle,
    /// Bytes of a request's head are buffered, the first since `started`.
    Head { started: Instant },
    /// The head is complete and its body is arriving, since `started`.
    /// `continue_sent` says whether its `100 Continue` is queued already.
    Body {
        started: Instant,
        continue_sent: bool,
    },
}

/// The request taken (or refused) last: what its reply needs, from
/// [`Conn::next_request`] until [`Conn::queue`] takes it.
#[derive(Debug, Default)]
struct Taken {
    /// It is HEAD: its reply goes without content.
    head: bool,
    /// What its log line says (only while debug logging is on).
    trace: Option<RequestTrace>,
}

/// One client connection.
///
/// Invariants:
/// - `planned_in_queue` counts the [`Reply::Planned`] in `queued`.
/// - Once `phase` leaves [`Phase::Serving`], no further request is taken
///   from `input` (the caller asks [`is_closing`](Self::is_closing)).
/// - `framing` is `Head` or `Body` exactly while `input` holds bytes
///   (except after a failed read, which ends the connection); `Body`
///   means the head at the front of `input` is complete.
/// - `reading` changes only as [`Reading`] says: its ends are final.
#[derive(Debug)]
pub struct Conn<S, P> {
    stream: S,
    input: Input,
    output: Output,
    queued: Vec<Queued<P>>,
    held_back: Option<Request>,
    /// The last request answered, its target's and body's memory kept
    /// for the next one to be read into ([`http::parse_reusing`]).
    spare: Request,
    taken: Taken,
    planned_in_queue: usize,
    reading: Reading,
    phase: Phase,
    framing: Framing,
    /// The last read or write that moved bytes (or the accept).
    last_activity: Instant,
}

impl<S: Read + Write, P> Conn<S, P> {
    /// A new connection accepted at `now`.
    pub fn new(stream: S, now: Instant) -> Self {
        Conn {
            stream,
            input: Input::default(),
            output: Output::default(),
            queued: Vec::new(),
            held_back: None,
            spare: Request::empty(),
            taken: Taken::default(),
            planned_in_queue: 0,
            reading: Reading::Open(Readiness::MaybeReadable),
            phase: Phase::Serving,
            framing: Framing::Idle,
            last_activity: now,
        }
    }

    /// The underlying stream.
    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// The stream mutably (for registration).
    pub fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// The stream, once the connection is closed (to deregister it).
    pub fn into_stream(self) -> S {
        self.stream
    }

    /// The socket reported readiness: there may be bytes (or EOF) to read.
    pub fn mark_readable(&mut self) {
        self.reading = self.reading.with(Readiness::MaybeReadable);
    }

    /// The socket reported that the peer closed its side: read until EOF,
    /// since no further readiness edge will come for it.
    pub fn mark_hung_up(&mut self) {
        if let Reading::Open(_) | Reading::HungUp(_) = self.reading {
            self.reading = Reading::HungUp(Readiness::MaybeReadable);
        }
    }

    /// Reads what the socket has, up to `max_input` buffered bytes. Returns
    /// whether any byte (or EOF) arrived.
    ///
    /// # Errors
    /// Any I/O error but `WouldBlock` and `Interrupted`: the connection is
    /// broken.
    pub fn read_available(&mut self, max_input: usize, now: Instant) -> io::Result<bool> {
        let mut progressed = false;
        while self.can_read_more(max_input) {
            let spare = self.input.spare(max_input);
            let room = spare.len();
            match self.stream.read(spare) {
                Ok(0) => {
                    self.reading = Reading::PeerClosed;
                    progressed = true;
                }
                Ok(n) => {
                    self.input.filled(n);
                    progressed = true;
                    // A short read on a stream socket emptied its receive
                    // queue; bytes arriving later raise a new readiness
                    // edge. This saves the read that would say WouldBlock.
                    // A hang-up already reported raises no new edge, so
                    // then the EOF is read now.
                    if n < room && matches!(self.reading, Reading::Open(_)) {
                        self.reading = Reading::Open(Readiness::Drained);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.reading = self.reading.with(Readiness::Drained);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if progressed {
            self.last_activity = now;
            if !self.input.is_empty() && self.framing == Framing::Idle {
                self.framing = Framing::Head { started: now };
            }
        }
        Ok(progressed)
    }

    /// Whether a read could bring more bytes.
    pub fn can_read_more(&self, max_input: usize) -> bool {
        self.reading.may_read() && self.input.len() < max_input
    }

    /// Takes the next request from the input.
    pub fn next_request(&mut self, limits: &Limits, now: Instant) -> Next {
        if let Some(request) = self.held_back.take() {
            self.taken.head = request.method == Method::Head;
            return Next::Request(request);
        }
        match http::parse_reusing(self.input.pending(), limits, &mut self.spare) {
            Ok(Parsed::Complete { request, consumed }) => {
                // Two allocations a request: only when the line is logged.
                if tracing::enabled!(tracing::Level::DEBUG) {
                    self.taken.trace = Some(RequestTrace {
                        method: request.method.as_str().to_owned(),
                        target: request.target.clone(),
                        at: now,
                    });
                }
                self.input.consume(consumed);
                self.framing = if self.input.is_empty() {
                    Framing::Idle
                } else {
                    Framing::Head { started: now }
                };
                self.taken.head = request.method == Method::Head;
                Next::Request(request)
            }
            Ok(Parsed::Partial(progress)) => {
                if let Progress::Body { expects_continue } = progress {
                    self.body_arriving(expects_continue, now);
                }
                if self.reading.ended() {
                    // The rest of this request will never come.
                    self.close();
                }
                Next::NeedMore
            }
            Err(e) => {
                // A refused HEAD still gets no content.
                let pending = self.input.pending();
                self.taken.head = pending[http::skip_empty_lines(pending)..].starts_with(b"HEAD ");
                Next::Invalid(e)
            }
        }
    }

    /// The head at the front of the input is complete and its body is not:
    /// the body deadline runs from the first time this is seen, and a
    /// client that expects it gets one `100 Continue`.
    fn body_arriving(&mut self, expects_continue: bool, now: Instant) {
        let (started, continue_sent) = match self.framing {
            Framing::Body {
                started,
                continue_sent,
            } => (started, continue_sent),
            Framing::Idle | Framing::Head { .. } => (now, false),
        };
        let send_continue = expects_continue && !continue_sent;
        self.framing = Framing::Body {
            started,
            continue_sent: continue_sent || send_continue,
        };
        if send_continue {
            self.queued.push(Queued {
                reply: Reply::Continue,
                to: Answering {
                    minor_version: 1,
                    keep_alive: true,
                    head: false,
                },
                request: None,
            });
        }
    }

    /// No further request is taken.
    fn close(&mut self) {
        if self.phase == Phase::Serving {
            self.phase = Phase::Closing;
        }
    }

    /// Hands back a request that is answered (or queued to be), for the
    /// next one to be read into. A body or target larger than
    /// `MAX_SPARE_REQUEST` is let go instead of held by an idle connection.
    pub fn recycle(&mut self, mut request: Request) {
        if request.body.capacity() > MAX_SPARE_REQUEST {
            request.body = Vec::new();
        }
        if request.target.capacity() > MAX_SPARE_REQUEST {
            request.target = String::new();
        }
        self.spare = request;
    }

    /// Puts a request back, to be taken again first next turn: a read that
    /// follows this connection's planned changes must wait for their commit.
    pub fn hold_back(&mut self, request: Request) {
        self.held_back = Some(request);
    }

    /// Queues a reply for the request just taken (or refused); a HEAD
    /// request's reply is sent without content.
    pub fn queue(&mut self, reply: Reply<P>, minor_version: u8, keep_alive: bool) {
        if matches!(reply, Reply::Planned(_)) {
            self.planned_in_queue += 1;
        }
        if !keep_alive {
            self.close();
        }
        let request = match reply {
            Reply::Continue => None,
            _ => self.taken.trace.take(),
        };
        self.queued.push(Queued {
            reply,
            to: Answering {
                minor_version,
                keep_alive,
                head: std::mem::take(&mut self.taken.head),
            },
            request,
        });
    }

    /// Whether a planned change precedes anything queued now.
    pub fn has_planned(&self) -> bool {
        self.planned_in_queue > 0
    }

    /// Number of replies queued this turn.
    pub fn queued_len(&self) -> usize {
        self.queued.len()
    }

    /// Bytes of output not yet written.
    pub fn output_pending(&self) -> usize {
        self.output.pending()
    }

    /// Whether no further request will be taken.
    pub fn is_closing(&self) -> bool {
        self.phase != Phase::Serving
    }

    /// Reads nothing more from the socket: the requests already buffered
    /// are answered, then the connection closes.
    pub fn stop_reading(&mut self) {
        if let Reading::Open(_) | Reading::HungUp(_) = self.reading {
            self.reading = Reading::Stopped;
        }
    }

    /// Turns queued replies into bytes, in order, dated `date`; `planned`
    /// answers the planned ones.
    pub fn render(
        &mut self,
        now: Instant,
        date: &HttpDate,
        mut planned: impl FnMut(P) -> Response,
    ) {
        if self.queued.is_empty() {
            return;
        }
        for queued in self.queued.drain(..) {
            let response = match queued.reply {
                Reply::Continue => {
                    self.output.append(now).extend_from_slice(http::CONTINUE);
                    continue;
                }
                Reply::Raw(bytes) => {
                    // An event stream's head: the stream is open.
                    if let Some(request) = &queued.request {
                        request.log(200, now);
                    }
                    self.output.append(now).extend_from_slice(&bytes);
                    continue;
                }
                Reply::Ready(response) => response,
                Reply::Planned(p) => planned(p),
            };
            if let Some(request) = &queued.request {
                request.log(response.status, now);
            }
            let output = self.output.append(now);
            if response.body.len() >= ADOPT_BODY_AT && response.sends_body(queued.to) {
                response.encode_head(queued.to, date, output);
                self.output.adopt(response.body);
            } else {
                response.encode(queued.to, date, output);
                response.recycle();
            }
        }
        self.planned_in_queue = 0;
    }

    /// Writes pending output until the socket would block.
    ///
    /// # Errors
    /// Any I/O error but `WouldBlock` and `Interrupted`.
    pub fn flush(&mut self, now: Instant) -> io::Result<()> {
        while self.output.pending() > 0 {
            match self.stream.write(self.output.unwritten()) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.output.wrote(n, now);
                    self.last_activity = now;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.output.clear();
        Ok(())
    }

    /// Turns the connection into an event stream: no further request is
    /// taken, and it stays open until [`end_stream`](Self::end_stream).
    pub fn start_stream(&mut self, minor_version: u8) {
        self.phase = Phase::Streaming { minor_version };
    }

    /// The HTTP minor version of the open event stream, if any.
    pub fn stream_version(&self) -> Option<u8> {
        match self.phase {
            Phase::Streaming { minor_version } => Some(minor_version),
            Phase::Serving | Phase::Closing => None,
        }
    }

    /// Whether the client closed its side while an event stream is open:
    /// nobody is listening any more.
    pub fn stream_abandoned(&self) -> bool {
        matches!(self.phase, Phase::Streaming { .. }) && self.reading == Reading::PeerClosed
    }

    /// Ends the event stream; the connection closes once its output is out.
    pub fn end_stream(&mut self) {
        if let Phase::Streaming { .. } = self.phase {
            self.phase = Phase::Closing;
        }
    }

    /// Appends bytes to the output directly (event stream lines).
    pub fn push_output(&mut self, now: Instant, write: impl FnOnce(&mut Vec<u8>)) {
        write(self.output.append(now));
    }

    /// Whether the connection has nothing left to do and can be dropped.
    pub fn is_finished(&self) -> bool {
        let idle_output = self.queued.is_empty() && self.output.pending() == 0;
        let no_more_input =
            self.reading.ended() && self.input.is_empty() && self.held_back.is_none();
        match self.phase {
            Phase::Streaming { .. } => false,
            Phase::Closing => idle_output,
            Phase::Serving => idle_output && no_more_input,
        }
    }

    /// The nearest deadline and its kind.
    pub fn deadline(&self, timeouts: &Timeouts) -> Option<(Instant, Deadline)> {
        if let Some(since) = self.output.stalled_since {
            return Some((since + timeouts.write, Deadline::Write));
        }
        if self.phase != Phase::Serving {
            return None;
        }
        match self.framing {
            Framing::Body { started, .. } => Some((started + timeouts.body, Deadline::Request)),
            Framing::Head { started } => Some((started + timeouts.head, Deadline::Request)),
            Framing::Idle => Some((self.last_activity + timeouts.idle, Deadline::Idle)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A stream that hands out scripted reads and accepts at most
    /// `write_room` bytes before blocking.
    #[derive(Debug, Default)]
    struct Script {
        reads: VecDeque<io::Result<Vec<u8>>>,
        written: Vec<u8>,
        write_room: usize,
    }

    impl Read for Script {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.reads.pop_front() {
                Some(Ok(bytes)) => {
                    let n = bytes.len().min(buf.len());
                    buf[..n].copy_from_slice(&bytes[..n]);
                    if n < bytes.len() {
                        self.reads.push_front(Ok(bytes[n..].to_vec()));
                    }
                    Ok(n)
                }
                Some(Err(e)) => Err(e),
                None => Err(io::ErrorKind::WouldBlock.into()),
            }
        }
    }

    impl Write for Script {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.write_room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.write_room);
            self.write_room -= n;
            self.written.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    type TestConn = Conn<Script, u16>;

    fn conn(reads: Vec<&[u8]>, write_room: usize) -> TestConn {
        conn_at(reads, write_room, Instant::now())
    }

    fn conn_at(reads: Vec<&[u8]>, write_room: usize, now: Instant) -> TestConn {
        let script = Script {
            reads: reads.into_iter().map(|r| Ok(r.to_vec())).collect(),
            written: Vec::new(),
            write_room,
        };
        Conn::new(script, now)
    }

    fn date() -> HttpDate {
        HttpDate::at(1_780_000_000)
    }

    fn answer(status: u16) -> Response {
        Response::empty(status)
    }

    #[test]
    fn pipelined_replies_keep_request_order_across_the_commit() {
        let now = Instant::now();
        let mut c = conn(
            vec![b"PUT /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n"],
            1 << 20,
        );
        assert!(c.read_available(1 << 16, now).unwrap());
        let Next::Request(_) = c.next_request(&Limits::default(), now) else {
            panic!()
        };
        c.queue(Reply::Planned(201), 1, true);
        assert!(c.has_planned());
        let Next::Request(read) = c.next_request(&Limits::default(), now) else {
            panic!()
        };
        // The read waits for the commit of the planned change before it.
        c.hold_back(read);
        c.render(now, &date(), answer);
        assert!(!c.has_planned());
        let Next::Request(again) = c.next_request(&Limits::default(), now) else {
            panic!()
        };
        assert_eq!(again.target, "/b");
        c.queue(Reply::Ready(answer(200)), 1, true);
        assert!(matches!(
            c.next_request(&Limits::default(), now),
            Next::NeedMore
        ));
        c.render(now, &date(), answer);
        c.flush(now).unwrap();
        let text = String::from_utf8(c.stream().written.clone()).unwrap();
        let first = text.find("201").unwrap();
        let second = text.find("200").unwrap();
        assert!(first < second, "{text}");
    }

    #[test]
    fn a_recycled_request_is_read_into_and_leaves_nothing_behind() {
        let now = Instant::now();
        let big = format!(
            "PUT /big HTTP/1.1\r\nHost: h\r\nContent-Length: {n}\r\n\r\n{body}",
            n = 2 * MAX_SPARE_REQUEST,
            body = "x".repeat(2 * MAX_SPARE_REQUEST)
        );
        let stream: Vec<&[u8]> = vec![
            b"POST /first HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
            b"GET /second HTTP/1.0\r\nHost: h\r\n\r\n",
            big.as_bytes(),
        ];
        let mut c = conn(stream, 1 << 20);
        let next = |c: &mut TestConn| loop {
            match c.next_request(&Limits::default(), now) {
                Next::Request(request) => return request,
                Next::NeedMore => {
                    c.mark_readable();
                    assert!(c.read_available(1 << 20, now).unwrap());
                }
                Next::Invalid(e) => panic!("{e:?}"),
            }
        };
        let first = next(&mut c);
        assert_eq!(
            (first.method.clone(), first.body.as_slice()),
            (Method::Post, &b"hello"[..])
        );
        c.recycle(first);
        // Read into the first's memory: nothing of it shows.
        let second = next(&mut c);
        assert_eq!(second.method, Method::Get);
        assert_eq!(second.target, "/second");
        assert_eq!((second.minor_version, second.keep_alive), (0, false));
        assert!(second.body.is_empty() && second.body.capacity() >= 5);
        c.recycle(second);
        let big = next(&mut c);
        assert_eq!(big.body.len(), 2 * MAX_SPARE_REQUEST);
        c.recycle(big);
        // A body past the bound is not kept.
        assert_eq!(c.spare.body.capacity(), 0);
    }

    #[test]
    fn expect_continue_is_sent_once_before_the_answer() {
        let now = Instant::now();
        let mut c = conn(
            vec![
                b"PUT /a HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
            ],
            1 << 20,
        );
        c.read_available(1 << 16, now).unwrap();
        assert!(matches!(
            c.next_request(&Limits::default(), now),
            Next::NeedMore
        ));
        assert!(matches!(
            c.next_request(&Limits::default(), now),
            Next::NeedMore
        ));
        assert_eq!(c.queued_len(), 1);
        c.render(now, &date(), answer);
        c.flush(now).unwrap();
        assert_eq!(c.stream().written, http::CONTINUE);
    }

    #[test]
    fn a_client_that_stops_reading_hits_the_write_deadline() {
        let start = Instant::now();
        let timeouts = Timeouts::default();
        let mut c = conn(vec![b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"], 10);
        c.read_available(1 << 16, start).unwrap();
        let Next::Request(_) = c.next_request(&Limits::default(), start) else {
            panic!()
        };
        c.queue(Reply::Ready(answer(200)), 1, true);
        c.render(start, &date(), answer);
        c.flush(start).unwrap();
        assert!(c.output_pending() > 0);
        assert_eq!(
            c.deadline(&timeouts),
            Some((start + timeouts.write, Deadline::Write))
        );
    }

    #[test]
    fn deadlines_follow_the_request() {
        let start = Instant::now();
        let later = start + Duration::from_secs(1);
        let timeouts = Timeouts::default();
        let mut c = conn_at(
            vec![
                b"PUT /a HTTP/1.1\r\nHost: h\r\nContent-Le",
                b"ngth: 5\r\n\r\nab",
            ],
            1 << 20,
            start,
        );
        assert_eq!(
            c.deadline(&timeouts),
            Some((start + timeouts.idle, Deadline::Idle))
        );
        c.read_available(1 << 16, start).unwrap();
        assert!(matches!(
            c.next_request(&Limits::default(), start),
            Next::NeedMore
        ));
        assert_eq!(
            c.deadline(&timeouts),
            Some((start + timeouts.head, Deadline::Request))
        );
        c.mark_readable();
        c.read_available(1 << 16, later).unwrap();
        assert!(matches!(
            c.next_request(&Limits::default(), later),
            Next::NeedMore
        ));
        assert_eq!(
            c.deadline(&timeouts),
            Some((later + timeouts.body, Deadline::Request))
        );
    }

    #[test]
    fn eof_mid_request_closes_after_the_answers() {
        let now = Instant::now();
        let mut c = conn(
            vec![b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGET /x HT", b""],
            1 << 20,
        );
        // Data and hang-up reported together: the EOF is read through the
        // short read, as no further edge will come.
        c.mark_hung_up();
        c.read_available(1 << 16, now).unwrap();
        let Next::Request(_) = c.next_request(&Limits::default(), now) else {
            panic!()
        };
        c.queue(Reply::Ready(answer(200)), 1, true);
        assert!(matches!(
            c.next_request(&Limits::default(), now),
            Next::NeedMore
        ));
        assert!(c.is_closing());
        assert!(!c.is_finished());
        c.render(now, &date(), answer);
        c.flush(now).unwrap();
        assert!(c.is_finished());
    }

    #[test]
    fn a_reply_to_head_has_no_content_and_the_next_reply_follows() {
        let now = Instant::now();
        let mut c = conn(
            vec![b"HEAD /a HTTP/1.1\r\nHost: h\r\n\r\nGET /a HTTP/1.1\r\nHost: h\r\n\r\n"],
            1 << 20,
        );
        c.read_available(1 << 16, now).unwrap();
        for _ in 0..2 {
            let Next::Request(request) = c.next_request(&Limits::default(), now) else {
                panic!()
            };
            let reply = Reply::Ready(Response::json(200, b"{}\n".to_vec()));
            c.queue(reply, request.minor_version, request.keep_alive);
        }
        c.render(now, &date(), answer);
        c.flush(now).unwrap();
        let text = String::from_utf8(c.stream().written.clone()).unwrap();
        let responses: Vec<&str> = text.split("HTTP/1.1 ").skip(1).collect();
        assert_eq!(responses.len(), 2, "{text}");
        assert!(
            responses[0].ends_with("Content-Length: 3\r\n\r\n"),
            "{text}"
        );
        assert!(
            responses[1].ends_with("Content-Length: 3\r\n\r\n{}\n"),
            "{text}"
        );
    }

    #[test]
    fn large_bodies_go_out_in_order_behind_their_heads_and_their_room_is_given_back() {
        let now = Instant::now();
        let requests = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nHEAD /b HTTP/1.1\r\nHost: h\r\n\r\n\
            GET /c HTTP/1.1\r\nHost: h\r\n\r\nGET /d HTTP/1.1\r\nHost: h\r\n\r\n";
        let mut c = conn(vec![requests], 100_000);
        c.read_available(1 << 16, now).unwrap();
        // A large body queued as it is; a HEAD's, left out; a small one and
        // then a large one, appended behind the first.
        let bodies = [ADOPT_BODY_AT, ADOPT_BODY_AT, 10, 3 * ADOPT_BODY_AT];
        let mut expected = Vec::new();
        for (i, len) in bodies.into_iter().enumerate() {
            let Next::Request(request) = c.next_request(&Limits::default(), now) else {
                panic!()
            };
            let response = Response::json(200, vec![b'a' + i as u8; len]);
            let to = Answering {
                minor_version: 1,
                keep_alive: true,
                head: request.method == Method::Head,
            };
            response.encode(to, &date(), &mut expected);
            c.queue(
                Reply::Ready(response),
                request.minor_version,
                request.keep_alive,
            );
        }
        c.render(now, &date(), answer);
        assert!(!c.output.tail.is_empty());
        assert_eq!(c.output_pending(), expected.len());
        c.flush(now).unwrap();
        assert_eq!(c.output_pending(), expected.len() - 100_000);
        c.stream_mut().write_room = usize::MAX;
        c.flush(now).unwrap();
        assert_eq!(c.output_pending(), 0);
        assert!(
            c.stream().written == expected,
            "the bytes differ from encode's"
        );
        assert!(c.output.bytes.capacity() <= KEEP_OUTPUT);
        assert_eq!(c.output.tail.capacity(), 0);
    }

    #[test]
    fn a_refused_head_gets_no_content_either() {
        let now = Instant::now();
        let mut c = conn(vec![b"HEAD /a HTTP/1.1\r\n\r\n"], 1 << 20);
        c.read_available(1 << 16, now).unwrap();
        let Next::Invalid(e) = c.next_request(&Limits::default(), now) else {
            panic!()
        };
        c.queue(
            Reply::Ready(Response::json(e.status, b"{}\n".to_vec())),
            1,
            false,
        );
        c.render(now, &date(), answer);
        c.flush(now).unwrap();
        let text = String::from_utf8(c.stream().written.clone()).unwrap();
        assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
        assert!(text.ends_with("\r\n\r\n"), "{text}");
    }

    #[test]
    fn consumed_input_is_reclaimed_without_growing() {
        let mut input = Input::default();
        for round in 0..100u8 {
            let spare = input.spare(1 << 16);
            spare[..300].fill(round);
            input.filled(300);
            assert_eq!(input.pending()[0], round);
            input.consume(300);
        }
        assert!(input.is_empty());
        assert_eq!(input.bytes.len(), INITIAL_INPUT);
        input.filled(0);
        let spare = input.spare(100);
        assert_eq!(spare.len(), 100);
    }

    #[test]
    fn input_is_bounded() {
        let now = Instant::now();
        // Reads that fill their buffer keep going, up to the limit.
        let mut c = conn(vec![&[b'x'; 4096], &[b'y'; 4096]], 0);
        c.read_available(6000, now).unwrap();
        assert_eq!(c.input.len(), 6000);
        assert!(!c.can_read_more(6000));
        assert!(c.can_read_more(7000));
        // A short read means the socket is drained until the next edge.
        let mut short = conn(vec![&[b'x'; 100], &[b'y'; 100]], 0);
        short.read_available(1000, now).unwrap();
        assert_eq!(short.input.len(), 100);
        assert!(!short.can_read_more(1000));
        short.mark_readable();
        short.read_available(1000, now).unwrap();
        assert_eq!(short.input.pending(), [[b'x'; 100], [b'y'; 100]].concat());
        let mut broken = conn(vec![], 0);
        broken
            .stream_mut()
            .reads
            .push_back(Err(io::ErrorKind::ConnectionReset.into()));
        assert!(broken.read_available(150, now).is_err());
    }

    #[test]
    fn stopped_reading_answers_what_is_buffered_then_finishes() {
        let now = Instant::now();
        let mut c = conn(
            vec![
                b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HT",
                b"TP/1.1\r\n\r\n",
            ],
            1 << 20,
        );
        c.read_available(1 << 16, now).unwrap();
        c.stop_reading();
        c.mark_readable();
        c.mark_hung_up();
        assert!(!c.can_read_more(1 << 16), "a stopped side stays stopped");
        assert!(!c.read_available(1 << 16, now).unwrap());
        let Next::Request(request) = c.next_request(&Limits::default(), now) else {
            panic!()
        };
        assert_eq!(request.target, "/a");
        assert!(!c.is_closing());
        c.queue(Reply::Ready(answer(200)), 1, true);
        // The rest of /b will never be read.
        assert!(matches!(
            c.next_request(&Limits::default(), now),
            Next::NeedMore
        ));
        assert!(c.is_closing());
        assert!(!c.is_finished());
        c.render(now, &date(), answer);
        c.flush(now).unwrap();
        assert!(c.is_finished());
    }

    #[test]
    fn a_stopped_connection_with_nothing_buffered_is_finished() {
        let mut c = conn(vec![], 1 << 20);
        assert!(!c.is_finished());
        c.stop_reading();
        assert!(c.is_finished());
        assert!(!c.is_closing());
    }

    #[test]
    fn a_reply_without_keep_alive_closes_once_written() {
        let start = Instant::now();
        let later = start + Duration::from_secs(1);
        let timeouts = Timeouts::default();
        let mut c = conn_at(
            vec![b"GET / HTTP/1.0\r\n\r\nGET /more HTTP/1.1\r\n\r\n"],
            1 << 20,
            start,
        );
        c.read_available(1 << 16, start).unwrap();
        let Next::Request(request) = c.next_request(&Limits::default(), start) else {
            panic!()
        };
        assert!(!request.keep_alive);
        c.queue(Reply::Ready(answer(200)), 0, false);
        assert!(c.is_closing());
        c.render(later, &date(), answer);
        assert_eq!(
            c.deadline(&timeouts),
            Some((later + timeouts.write, Deadline::Write))
        );
        assert!(!c.is_finished());
        c.flush(later).unwrap();
        // The request left in the input is never taken: no deadline runs.
        assert_eq!(c.deadline(&timeouts), None);
        assert!(c.is_finished());
    }

    #[test]
    fn a_hang_up_is_read_through_to_the_eof() {
        let now = Instant::now();
        let mut c = conn(vec![b"GET / HT"], 1 << 20);
        c.read_available(1 << 16, now).unwrap();
        // A short read drains the socket until the next edge.
        assert!(!c.can_read_more(1 << 16));
        c.mark_hung_up();
        assert!(c.can_read_more(1 << 16));
        // The EOF is not there yet: the socket is drained again.
        assert!(!c.read_available(1 << 16, now).unwrap());
        assert!(!c.can_read_more(1 << 16));
        c.mark_readable();
        c.stream_mut().reads.push_back(Ok(b"TP/1.1\r\n".to_vec()));
        c.stream_mut().reads.push_back(Ok(Vec::new()));
        assert!(c.read_available(1 << 16, now).unwrap());
        assert_eq!(c.input.pending(), b"GET / HTTP/1.1\r\n");
        c.mark_readable();
        c.mark_hung_up();
        assert!(!c.can_read_more(1 << 16), "EOF is final");
        assert!(matches!(
            c.next_request(&Limits::default(), now),
            Next::NeedMore
        ));
        assert!(c.is_closing());
        assert!(c.is_finished());
    }

    #[test]
    fn an_event_stream_stays_open_until_it_ends() {
        let start = Instant::now();
        let timeouts = Timeouts::default();
        let mut c = conn_at(
            vec![b"GET /events HTTP/1.1\r\nHost: h\r\n\r\n"],
            1 << 20,
            start,
        );
        c.read_available(1 << 16, start).unwrap();
        let Next::Request(_) = c.next_request(&Limits::default(), start) else {
            panic!()
        };
        c.queue(Reply::Raw(b"HTTP/1.1 200 OK\r\n\r\n".to_vec()), 1, true);
        c.start_stream(1);
        assert_eq!(c.stream_version(), Some(1));
        assert!(c.is_closing());
        c.render(start, &date(), answer);
        c.flush(start).unwrap();
        // An open stream waits for events: no deadline, not finished.
        assert_eq!(c.deadline(&timeouts), None);
        assert!(!c.is_finished());
        assert!(!c.stream_abandoned());
        c.push_output(start, |out| out.extend_from_slice(b"data: 1\n\n"));
        assert_eq!(
            c.deadline(&timeouts),
            Some((start + timeouts.write, Deadline::Write))
        );
        c.flush(start).unwrap();
        c.end_stream();
        assert_eq!(c.stream_version(), None);
        assert!(c.is_closing(), "an ended stream closes");
        assert!(c.is_finished());
        assert!(c.stream().written.ends_with(b"data: 1\n\n"));
    }

    #[test]
    fn a_stream_is_abandoned_when_the_peer_closed_even_once_stopped() {
        let now = Instant::now();
        let mut c = conn(
            vec![b"GET /events HTTP/1.1\r\nHost: h\r\n\r\n", b""],
            1 << 20,
        );
        c.read_available(1 << 16, now).unwrap();
        let Next::Request(_) = c.next_request(&Limits::default(), now) else {
            panic!()
        };
        c.queue(Reply::Raw(Vec::new()), 1, true);
        c.start_stream(1);
        assert!(!c.stream_abandoned(), "the EOF is not read yet");
        c.mark_readable();
        c.read_available(1 << 16, now).unwrap();
        assert!(c.stream_abandoned());
        // Shutdown stops reading: the peer's close is still known.
        c.stop_reading();
        assert!(c.stream_abandoned());
        // A stream stopped before the peer closed is not abandoned.
        let mut open = conn(vec![b"GET /events HTTP/1.1\r\nHost: h\r\n\r\n"], 1 << 20);
        open.read_available(1 << 16, now).unwrap();
        let Next::Request(_) = open.next_request(&Limits::default(), now) else {
            panic!()
        };
        open.queue(Reply::Raw(Vec::new()), 1, true);
        open.start_stream(1);
        open.stop_reading();
        assert!(!open.stream_abandoned());
    }

    #[test]
    fn ending_no_stream_leaves_the_connection_serving() {
        let mut c = conn(vec![], 1 << 20);
        c.end_stream();
        assert!(!c.is_closing());
        assert_eq!(c.stream_version(), None);
    }

    #[test]
    fn each_request_that_expects_it_gets_its_own_continue() {
        let now = Instant::now();
        let head =
            b"PUT /a HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n";
        let mut c = conn(vec![head, b"ab", head], 1 << 20);
        c.read_available(1 << 16, now).unwrap();
        assert!(matches!(
            c.next_request(&Limits::default(), now),
            Next::NeedMore
        ));
        c.mark_readable();
        c.read_available(1 << 16, now).unwrap();
        let Next::Request(_) = c.next_request(&Limits::default(), now) else {
            panic!()
        };
        c.queue(Reply::Ready(answer(204)), 1, true);
        c.mark_readable();
        c.read_available(1 << 16, now).unwrap();
        assert!(matches!(
            c.next_request(&Limits::default(), now),
            Next::NeedMore
        ));
        c.render(now, &date(), answer);
        c.flush(now).unwrap();
        let text = String::from_utf8(c.stream().written.clone()).unwrap();
        assert_eq!(text.matches("100 Continue").count(), 2, "{text}");
        assert!(
            text.find("204").unwrap() < text.rfind("100 Continue").unwrap(),
            "{text}"
        );
    }

    #[test]
    fn after_a_request_the_deadline_follows_what_is_left() {
        let start = Instant::now();
        let framed = start + Duration::from_secs(1);
        let written = start + Duration::from_secs(2);
        let timeouts = Timeouts::default();
        // Pipelined: the bytes left after the first request are a new head.
        let mut c = conn_at(
            vec![b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b"],
            1 << 20,
            start,
        );
        c.read_available(1 << 16, start).unwrap();
        let Next::Request(_) = c.next_request(&Limits::default(), framed) else {
            panic!()
        };
        assert_eq!(
            c.deadline(&timeouts),
            Some((framed + timeouts.head, Deadline::Request))
        );
        // Nothing left: the connection idles from its last read or write.
        let mut c = conn_at(vec![b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"], 1 << 20, start);
        c.read_available(1 << 16, start).unwrap();
        let Next::Request(_) = c.next_request(&Limits::default(), framed) else {
            panic!()
        };
        assert_eq!(
            c.deadline(&timeouts),
            Some((start + timeouts.idle, Deadline::Idle))
        );
        c.queue(Reply::Ready(answer(200)), 1, true);
        c.render(written, &date(), answer);
        c.flush(written).unwrap();
        assert_eq!(
            c.deadline(&timeouts),
            Some((written + timeouts.idle, Deadline::Idle))
        );
    }

    #[test]
    fn the_write_deadline_runs_from_the_last_byte_taken() {
        let start = Instant::now();
        let later = start + Duration::from_secs(3);
        let timeouts = Timeouts::default();
        let mut c = conn_at(vec![], 4, start);
        c.push_output(start, |out| out.extend_from_slice(b"0123456789"));
        assert_eq!(
            c.deadline(&timeouts),
            Some((start + timeouts.write, Deadline::Write))
        );
        // More output while some is pending does not restart the clock.
        c.push_output(later, |out| out.extend_from_slice(b"ab"));
        assert_eq!(
            c.deadline(&timeouts),
            Some((start + timeouts.write, Deadline::Write))
        );
        c.flush(later).unwrap();
        assert_eq!(c.output_pending(), 8);
        assert_eq!(
            c.deadline(&timeouts),
            Some((later + timeouts.write, Deadline::Write))
        );
        c.stream_mut().write_room = 100;
        c.flush(later).unwrap();
        assert_eq!(c.output_pending(), 0);
        assert_eq!(c.stream().written, b"0123456789ab");
        assert_eq!(
            c.deadline(&timeouts),
            Some((later + timeouts.idle, Deadline::Idle))
        );
    }
}
