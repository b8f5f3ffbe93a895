//! One connection: its input and output buffers, the replies queued for it in
//! the current turn, and the instants its deadlines are measured from.
//!
//! Generic over `Read + Write` so it can be driven without a socket. Depends
//! on [`crate::http`] for framing; it never reads a clock (`now` comes in) and
//! never touches the reactor.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use crate::http::{self, HttpError, Limits, Parsed, Progress, Request, Response};

/// Bytes read from the socket per `read` call.
const READ_CHUNK: usize = 16 * 1024;

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
    minor_version: u8,
    keep_alive: bool,
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

/// One client connection.
///
/// Invariants: `written <= output.len()`; once `closing` is set no further
/// request is taken from `input`.
#[derive(Debug)]
pub struct Conn<S, P> {
    stream: S,
    input: Vec<u8>,
    output: Vec<u8>,
    written: usize,
    queued: Vec<Queued<P>>,
    held_back: Option<Request>,
    /// While an event stream is open: the HTTP minor version it speaks.
    event_stream: Option<u8>,
    planned_in_queue: usize,
    continue_sent: bool,
    closing: bool,
    peer_closed: bool,
    reading_stopped: bool,
    maybe_readable: bool,
    request_started: Option<Instant>,
    body_started: Option<Instant>,
    last_activity: Instant,
    write_stalled_since: Option<Instant>,
    /// Set by the reactor while the connection is in its ready queue.
    pub scheduled: bool,
}

impl<S: Read + Write, P> Conn<S, P> {
    /// A new connection accepted at `now`.
    pub fn new(stream: S, now: Instant) -> Self {
        Conn {
            stream,
            input: Vec::new(),
            output: Vec::new(),
            written: 0,
            queued: Vec::new(),
            held_back: None,
            event_stream: None,
            planned_in_queue: 0,
            continue_sent: false,
            closing: false,
            peer_closed: false,
            reading_stopped: false,
            maybe_readable: true,
            request_started: None,
            body_started: None,
            last_activity: now,
            write_stalled_since: None,
            scheduled: false,
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

    /// The socket reported readiness: there may be bytes (or EOF) to read.
    pub fn mark_readable(&mut self) {
        self.maybe_readable = true;
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
            let start = self.input.len();
            let room = READ_CHUNK.min(max_input - start);
            self.input.resize(start + room, 0);
            match self.stream.read(&mut self.input[start..]) {
                Ok(0) => {
                    self.input.truncate(start);
                    self.peer_closed = true;
                    progressed = true;
                }
                Ok(n) => {
                    self.input.truncate(start + n);
                    progressed = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.input.truncate(start);
                    self.maybe_readable = false;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    self.input.truncate(start);
                }
                Err(e) => {
                    self.input.truncate(start);
                    return Err(e);
                }
            }
        }
        if progressed {
            self.last_activity = now;
            if !self.input.is_empty() && self.request_started.is_none() {
                self.request_started = Some(now);
            }
        }
        Ok(progressed)
    }

    /// Whether a read could bring more bytes.
    pub fn can_read_more(&self, max_input: usize) -> bool {
        self.maybe_readable
            && !self.peer_closed
            && !self.reading_stopped
            && self.input.len() < max_input
    }

    /// Takes the next request from the input.
    pub fn next_request(&mut self, limits: &Limits, now: Instant) -> Next {
        if let Some(request) = self.held_back.take() {
            return Next::Request(request);
        }
        match http::parse(&self.input, limits) {
            Ok(Parsed::Complete { request, consumed }) => {
                self.input.drain(..consumed);
                self.continue_sent = false;
                self.body_started = None;
                self.request_started = (!self.input.is_empty()).then_some(now);
                Next::Request(request)
            }
            Ok(Parsed::Partial(progress)) => {
                if let Progress::Body { expects_continue } = progress {
                    self.body_started.get_or_insert(now);
                    if expects_continue && !self.continue_sent {
                        self.continue_sent = true;
                        self.queued.push(Queued {
                            reply: Reply::Continue,
                            minor_version: 1,
                            keep_alive: true,
                        });
                    }
                }
                if self.peer_closed || self.reading_stopped {
                    // The rest of this request will never come.
                    self.closing = true;
                }
                Next::NeedMore
            }
            Err(e) => Next::Invalid(e),
        }
    }

    /// Puts a request back, to be taken again first next turn: a read that
    /// follows this connection's planned changes must wait for their commit.
    pub fn hold_back(&mut self, request: Request) {
        self.held_back = Some(request);
    }

    /// Queues a reply for the request just taken.
    pub fn queue(&mut self, reply: Reply<P>, minor_version: u8, keep_alive: bool) {
        if matches!(reply, Reply::Planned(_)) {
            self.planned_in_queue += 1;
        }
        if !keep_alive {
            self.closing = true;
        }
        self.queued.push(Queued {
            reply,
            minor_version,
            keep_alive,
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
        self.output.len() - self.written
    }

    /// Whether no further request will be taken.
    pub fn is_closing(&self) -> bool {
        self.closing
    }

    /// Reads nothing more from the socket: the requests already buffered
    /// are answered, then the connection closes.
    pub fn stop_reading(&mut self) {
        self.reading_stopped = true;
    }

    /// Turns queued replies into bytes, in order; `planned` answers the
    /// planned ones.
    pub fn render(&mut self, now: Instant, mut planned: impl FnMut(P) -> Response) {
        if self.queued.is_empty() {
            return;
        }
        if self.output_pending() == 0 {
            self.write_stalled_since = Some(now);
        }
        for queued in self.queued.drain(..) {
            let response = match queued.reply {
                Reply::Continue => {
                    self.output.extend_from_slice(http::CONTINUE);
                    continue;
                }
                Reply::Raw(bytes) => {
                    self.output.extend_from_slice(&bytes);
                    continue;
                }
                Reply::Ready(response) => response,
                Reply::Planned(p) => planned(p),
            };
            response.encode(queued.minor_version, queued.keep_alive, &mut self.output);
        }
        self.planned_in_queue = 0;
    }

    /// Writes pending output until the socket would block.
    ///
    /// # Errors
    /// Any I/O error but `WouldBlock` and `Interrupted`.
    pub fn flush(&mut self, now: Instant) -> io::Result<()> {
        while self.written < self.output.len() {
            match self.stream.write(&self.output[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.written += n;
                    self.write_stalled_since = Some(now);
                    self.last_activity = now;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.output.clear();
        self.written = 0;
        self.write_stalled_since = None;
        Ok(())
    }

    /// Turns the connection into an event stream: no further request is
    /// taken, and it stays open until [`end_stream`](Self::end_stream).
    pub fn start_stream(&mut self, minor_version: u8) {
        self.event_stream = Some(minor_version);
        self.closing = true;
    }

    /// The HTTP minor version of the open event stream, if any.
    pub fn stream_version(&self) -> Option<u8> {
        self.event_stream
    }

    /// Whether the client closed its side while an event stream is open:
    /// nobody is listening any more.
    pub fn stream_abandoned(&self) -> bool {
        self.event_stream.is_some() && self.peer_closed
    }

    /// Ends the event stream; the connection closes once its output is out.
    pub fn end_stream(&mut self) {
        self.event_stream = None;
    }

    /// Appends bytes to the output directly (event stream lines).
    pub fn push_output(&mut self, now: Instant, write: impl FnOnce(&mut Vec<u8>)) {
        if self.output_pending() == 0 {
            self.write_stalled_since = Some(now);
        }
        write(&mut self.output);
    }

    /// Whether the connection has nothing left to do and can be dropped.
    pub fn is_finished(&self) -> bool {
        let idle_output = self.queued.is_empty() && self.output_pending() == 0;
        let no_more_input = (self.peer_closed || self.reading_stopped)
            && self.input.is_empty()
            && self.held_back.is_none();
        self.event_stream.is_none() && idle_output && (self.closing || no_more_input)
    }

    /// The nearest deadline and its kind.
    pub fn deadline(&self, timeouts: &Timeouts) -> Option<(Instant, Deadline)> {
        if let Some(since) = self.write_stalled_since {
            return Some((since + timeouts.write, Deadline::Write));
        }
        if self.closing || self.event_stream.is_some() {
            return None;
        }
        if let Some(body) = self.body_started {
            return Some((body + timeouts.body, Deadline::Request));
        }
        if let Some(started) = self.request_started {
            return Some((started + timeouts.head, Deadline::Request));
        }
        Some((self.last_activity + timeouts.idle, Deadline::Idle))
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

    fn answer(status: u16) -> Response {
        Response::empty(status)
    }

    #[test]
    fn pipelined_replies_keep_request_order_across_the_commit() {
        let now = Instant::now();
        let mut c = conn(
            vec![b"PUT /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n"],
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
        c.render(now, answer);
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
        c.render(now, answer);
        c.flush(now).unwrap();
        let text = String::from_utf8(c.stream().written.clone()).unwrap();
        let first = text.find("201").unwrap();
        let second = text.find("200").unwrap();
        assert!(first < second, "{text}");
    }

    #[test]
    fn expect_continue_is_sent_once_before_the_answer() {
        let now = Instant::now();
        let mut c = conn(
            vec![b"PUT /a HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"],
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
        c.render(now, answer);
        c.flush(now).unwrap();
        assert_eq!(c.stream().written, http::CONTINUE);
    }

    #[test]
    fn a_client_that_stops_reading_hits_the_write_deadline() {
        let start = Instant::now();
        let timeouts = Timeouts::default();
        let mut c = conn(vec![b"GET / HTTP/1.1\r\n\r\n"], 10);
        c.read_available(1 << 16, start).unwrap();
        let Next::Request(_) = c.next_request(&Limits::default(), start) else {
            panic!()
        };
        c.queue(Reply::Ready(answer(200)), 1, true);
        c.render(start, answer);
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
            vec![b"PUT /a HTTP/1.1\r\nContent-Le", b"ngth: 5\r\n\r\nab"],
            1 << 20,
            start,
        );
        // The second chunk arrives only after the socket once ran dry.
        c.stream_mut()
            .reads
            .insert(1, Err(io::ErrorKind::WouldBlock.into()));
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
        let mut c = conn(vec![b"GET / HTTP/1.1\r\n\r\nGET /x HT", b""], 1 << 20);
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
        c.render(now, answer);
        c.flush(now).unwrap();
        assert!(c.is_finished());
    }

    #[test]
    fn input_is_bounded() {
        let now = Instant::now();
        let mut c = conn(vec![&[b'x'; 100], &[b'y'; 100]], 0);
        c.read_available(150, now).unwrap();
        assert!(c.can_read_more(1000));
        assert!(!c.can_read_more(150));
        let mut broken = conn(vec![], 0);
        broken
            .stream_mut()
            .reads
            .push_back(Err(io::ErrorKind::ConnectionReset.into()));
        assert!(broken.read_available(150, now).is_err());
    }
}
