//! How a measured phase drives its connections, each with one request in
//! flight: by default from one thread over an event loop (`mio`'s poll),
//! as `redis-benchmark` and `oha` do; with `--threads`, from a blocking
//! thread per connection, as every round before the thirteenth did.
//!
//! The difference is the server's bill. A client blocked in `read` is a
//! sleeping thread, and the kernel wakes it twice a request on the
//! server's CPU: once when the server reads the request (the socket's
//! write space comes back, `unix_write_space`) and once when it sends the
//! answer (`sock_def_readable`). `perf record` put half of either
//! server's CPU under those wake-ups with 64 client threads on this
//! 2-core machine. One event loop is one thread, mostly awake, and 64
//! threads' scheduling is no longer on anyone's bill. Both drivers run
//! the daemon and Redis alike.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::{Barrier, OnceLock};
use std::time::{Duration, Instant};

use mio::net::UnixStream;
use mio::{Events, Interest, Poll, Token};

use crate::client::{Connection, Protocol, READ_TIMEOUT};

/// How the phases drive their connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// One thread, every connection on one poll (the default).
    EventLoop,
    /// A blocking thread per connection (`--threads`).
    Threads,
}

impl Driver {
    pub fn name(self) -> &'static str {
        match self {
            Driver::EventLoop => "one event-loop thread",
            Driver::Threads => "a thread per connection",
        }
    }
}

static DRIVER: OnceLock<Driver> = OnceLock::new();

/// Chooses the driver for the whole run, once, before the first phase.
pub fn choose(driver: Driver) {
    DRIVER
        .set(driver)
        .expect("the driver is chosen once, before the phases");
}

/// The run's driver: [`Driver::EventLoop`] unless chosen otherwise.
pub fn driver() -> Driver {
    *DRIVER.get_or_init(|| Driver::EventLoop)
}

/// Runs `clients` connections against `socket` for `duration` (or until
/// each has sent `limit(client)` requests; at least one each), driven by
/// `driver` (the phases pass the run's, [`driver()`]). `make(client, i)`
/// builds the i-th request of a client and the status it must get;
/// building is not timed. Returns each client's samples and the wall time.
pub fn samples<P: Protocol>(
    driver: Driver,
    socket: &Path,
    clients: usize,
    duration: Duration,
    limit: impl Fn(usize) -> usize + Sync,
    make: impl Fn(usize, usize) -> (Vec<u8>, u16) + Sync,
) -> (Vec<Vec<Duration>>, Duration) {
    match driver {
        Driver::EventLoop => event_loop::<P>(socket, clients, duration, limit, make),
        Driver::Threads => threads::<P>(socket, clients, duration, limit, make),
    }
}

/// One connection of the event loop.
struct Driven {
    stream: UnixStream,
    input: Vec<u8>,
    /// Requests it may send in all, sent so far, and what the one in
    /// flight must get and when it went.
    most: usize,
    sent: usize,
    /// Sent all it will; no longer on the poll, so the daemon closing it
    /// for idleness while others go on is nobody's business.
    done: bool,
    expected: u16,
    request: Vec<u8>,
    at: Instant,
    samples: Vec<Duration>,
}

impl Driven {
    /// Sends the connection's next request. One is in flight at a time and
    /// the last answer has been read, so the socket's buffer is empty and a
    /// request of a few hundred bytes goes in one write.
    fn send<P: Protocol>(&mut self, client: usize, make: &impl Fn(usize, usize) -> (Vec<u8>, u16)) {
        let (request, expected) = make(client, self.sent);
        (self.request, self.expected) = (request, expected);
        self.at = Instant::now();
        match self.stream.write(&self.request) {
            Ok(n) if n == self.request.len() => {}
            Ok(n) => panic!(
                "{} took {n} of a request's {} bytes with nothing in flight",
                P::PEER,
                self.request.len()
            ),
            Err(e) => panic!("sending a request to {}: {e}", P::PEER),
        }
    }

    /// Takes the connection off the poll: it sends nothing more.
    fn finish(&mut self, poll: &Poll) {
        self.done = true;
        poll.registry()
            .deregister(&mut self.stream)
            .expect("deregister a finished connection");
    }

    /// Reads what has arrived. Readiness is edge-triggered: a read shorter
    /// than the buffer took all there was, and any byte that comes later
    /// is a new edge.
    fn fill<P: Protocol>(&mut self, scratch: &mut [u8]) {
        loop {
            match self.stream.read(scratch) {
                Ok(0) => panic!("{} closed the connection", P::PEER),
                Ok(n) => {
                    self.input.extend_from_slice(&scratch[..n]);
                    if n < scratch.len() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("reading an answer from {}: {e}", P::PEER),
            }
        }
    }
}

/// [`samples`] from one thread: every connection registered on one poll,
/// the next request sent as soon as an answer is read.
fn event_loop<P: Protocol>(
    socket: &Path,
    clients: usize,
    duration: Duration,
    limit: impl Fn(usize) -> usize,
    make: impl Fn(usize, usize) -> (Vec<u8>, u16),
) -> (Vec<Vec<Duration>>, Duration) {
    let mut poll = Poll::new().expect("an epoll instance");
    let mut conns: Vec<Driven> = (0..clients)
        .map(|client| {
            let stream = std::os::unix::net::UnixStream::connect(socket)
                .unwrap_or_else(|e| panic!("connect to {}: {e}", socket.display()));
            stream.set_nonblocking(true).expect("a non-blocking socket");
            let mut stream = UnixStream::from_std(stream);
            poll.registry()
                .register(&mut stream, Token(client), Interest::READABLE)
                .expect("register a connection");
            Driven {
                stream,
                input: Vec::with_capacity(4096),
                most: limit(client),
                sent: 0,
                done: false,
                expected: 0,
                request: Vec::new(),
                at: Instant::now(),
                samples: Vec::with_capacity(16 * 1024),
            }
        })
        .collect();
    let mut scratch = vec![0u8; 64 * 1024];
    let mut events = Events::with_capacity(clients.clamp(1, 1024));
    let started = Instant::now();
    let deadline = started + duration;
    let mut in_flight = 0;
    for (client, conn) in conns.iter_mut().enumerate() {
        if conn.most > 0 {
            conn.send::<P>(client, &make);
            in_flight += 1;
        } else {
            conn.finish(&poll);
        }
    }
    while in_flight > 0 {
        match poll.poll(&mut events, Some(READ_TIMEOUT)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("polling the connections: {e}"),
        }
        assert!(
            !events.is_empty(),
            "{} answered none of {in_flight} requests in {READ_TIMEOUT:?}",
            P::PEER
        );
        for event in &events {
            let client = event.token().0;
            let conn = &mut conns[client];
            if conn.done {
                continue;
            }
            conn.fill::<P>(&mut scratch);
            while let Some(framed) = P::framed(&conn.input) {
                assert!(
                    !conn.done,
                    "{} sent an answer nobody asked for: {:?}",
                    P::PEER,
                    String::from_utf8_lossy(&conn.input[..framed.end.min(80)])
                );
                let now = Instant::now();
                conn.samples.push(now - conn.at);
                assert_eq!(
                    framed.status,
                    conn.expected,
                    "{}: {}",
                    String::from_utf8_lossy(&conn.request[..conn.request.len().min(60)]),
                    String::from_utf8_lossy(&P::body(&conn.input[..framed.end], &framed))
                );
                conn.input.drain(..framed.end);
                conn.sent += 1;
                if conn.sent < conn.most && now < deadline {
                    conn.send::<P>(client, &make);
                } else {
                    conn.finish(&poll);
                    in_flight -= 1;
                }
            }
        }
    }
    let wall = started.elapsed();
    (conns.into_iter().map(|conn| conn.samples).collect(), wall)
}

/// [`samples`] from a blocking thread per connection, started together.
fn threads<P: Protocol>(
    socket: &Path,
    clients: usize,
    duration: Duration,
    limit: impl Fn(usize) -> usize + Sync,
    make: impl Fn(usize, usize) -> (Vec<u8>, u16) + Sync,
) -> (Vec<Vec<Duration>>, Duration) {
    let barrier = Barrier::new(clients + 1);
    let (make, limit, barrier) = (&make, &limit, &barrier);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|client| {
                scope.spawn(move || {
                    let mut connection = Connection::<P>::connect(socket);
                    let most = limit(client);
                    let mut samples = Vec::with_capacity(16 * 1024);
                    barrier.wait();
                    let deadline = Instant::now() + duration;
                    let mut i = 0;
                    // At least one request each, however late the thread runs.
                    while i < most && (i == 0 || Instant::now() < deadline) {
                        let (bytes, expected) = make(client, i);
                        let sent = Instant::now();
                        let (status, body) = connection.call(&bytes);
                        samples.push(sent.elapsed());
                        assert_eq!(
                            status,
                            expected,
                            "{}: {}",
                            String::from_utf8_lossy(&bytes[..bytes.len().min(60)]),
                            String::from_utf8_lossy(&body)
                        );
                        i += 1;
                    }
                    samples
                })
            })
            .collect();
        barrier.wait();
        let started = Instant::now();
        let results: Vec<Vec<Duration>> = handles
            .into_iter()
            .map(|handle| handle.join().expect("a client thread"))
            .collect();
        (results, started.elapsed())
    })
}
