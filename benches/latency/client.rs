//! The bench's side of the daemon's protocol: the [`Protocol`] trait that
//! frames an answer (HTTP here, RESP in `redis`), so one loop times both;
//! a blocking keep-alive connection with one request in flight
//! ([`Connection`], [`Client`] for the daemon); the requests the bench
//! sends; and [`populate`], which fills a daemon fast.
//!
//! Requests are built by `tests/common`'s `request_bytes`; responses are
//! framed by `httparse`, as the crate's own client frames them. The reader
//! is the bench's own and not `tests/common`'s `read_response` or the
//! crate's `client::http`: the first reads a byte per system call and the
//! second allocates each header, and both would land inside the timed
//! region. This one reads into a reused buffer and allocates only the body.

use std::io::{Read, Write};
use std::marker::PhantomData;
use std::ops::Range;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::request_bytes;

/// Requests one populating connection sends before reading their answers;
/// the daemon answers up to `server::MAX_PIPELINED` (64) per turn.
const PIPELINE: usize = 64;

/// Connections used to populate the store.
const POPULATORS: usize = 8;

/// Headers a response may carry: the daemon sends at most five.
const MAX_HEADERS: usize = 16;

/// How long a read may wait before the bench gives up on its server.
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// A protocol's framing of an answer, so that the blocking [`Connection`]
/// and the event loop (`driver`) read the daemon's HTTP and Redis's RESP
/// the same way.
pub trait Protocol {
    /// Who answers, for messages.
    const PEER: &'static str;
    /// The answer at the start of `input`, if it is all there.
    fn framed(input: &[u8]) -> Option<Framed>;
    /// The body of the complete answer `answer` that [`Protocol::framed`]
    /// measured.
    fn body(answer: &[u8], framed: &Framed) -> Vec<u8>;
}

/// Where an answer lies at the start of a buffer.
#[derive(Debug, Clone)]
pub struct Framed {
    /// An HTTP status; Redis's replies map to 200, 404 (nil) and 500.
    pub status: u16,
    /// Where its body starts and ends.
    pub body: Range<usize>,
    /// Its length: where the next answer starts.
    pub end: usize,
}

/// The daemon's protocol: HTTP/1.1 answers framed by `Content-Length`.
pub struct Http;

impl Protocol for Http {
    const PEER: &'static str = "the daemon";

    fn framed(input: &[u8]) -> Option<Framed> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        let head_end = match response.parse(input) {
            Ok(httparse::Status::Complete(head_end)) => head_end,
            Ok(httparse::Status::Partial) => return None,
            Err(e) => panic!(
                "not an HTTP response ({e}): {:?}",
                String::from_utf8_lossy(&input[..input.len().min(80)])
            ),
        };
        let length: usize = response
            .headers
            .iter()
            .find(|header| header.name.eq_ignore_ascii_case("content-length"))
            .map_or(0, |header| {
                std::str::from_utf8(header.value)
                    .ok()
                    .and_then(|text| text.parse().ok())
                    .unwrap_or_else(|| {
                        panic!(
                            "a Content-Length that is not a length: {:?}",
                            String::from_utf8_lossy(header.value)
                        )
                    })
            });
        let status = response.code.expect("a complete head has a status");
        let end = head_end + length;
        (input.len() >= end).then_some(Framed {
            status,
            body: head_end..end,
            end,
        })
    }

    fn body(answer: &[u8], framed: &Framed) -> Vec<u8> {
        answer[framed.body.clone()].to_vec()
    }
}

/// One blocking connection, one request in flight: what the bench's
/// threads and its one-client measurements use.
pub struct Connection<P> {
    stream: UnixStream,
    input: Vec<u8>,
    scratch: Box<[u8]>,
    protocol: PhantomData<P>,
}

/// A connection to the daemon.
pub type Client = Connection<Http>;

impl<P: Protocol> Connection<P> {
    pub fn connect(socket: &Path) -> Connection<P> {
        let stream = UnixStream::connect(socket)
            .unwrap_or_else(|e| panic!("connect to {}: {e}", socket.display()));
        Connection::from_stream(stream)
    }

    pub fn from_stream(stream: UnixStream) -> Connection<P> {
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .expect("set a read timeout");
        Connection {
            stream,
            input: Vec::with_capacity(64 * 1024),
            scratch: vec![0u8; 64 * 1024].into_boxed_slice(),
            protocol: PhantomData,
        }
    }

    /// Sends `request` and reads its answer: the status and the body.
    pub fn call(&mut self, request: &[u8]) -> (u16, Vec<u8>) {
        self.send(request);
        self.answer()
    }

    /// Sends bytes without reading: one request, or several pipelined.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send a request");
    }

    /// Reads one answer.
    pub fn answer(&mut self) -> (u16, Vec<u8>) {
        loop {
            if let Some(framed) = P::framed(&self.input) {
                let body = P::body(&self.input[..framed.end], &framed);
                self.input.drain(..framed.end);
                return (framed.status, body);
            }
            match self.stream.read(&mut self.scratch) {
                Ok(0) => panic!("{} closed the connection", P::PEER),
                Ok(n) => self.input.extend_from_slice(&self.scratch[..n]),
                Err(e) => panic!("reading an answer from {}: {e}", P::PEER),
            }
        }
    }
}

pub fn create(name: &str) -> Vec<u8> {
    let body = format!(r#"{{"name":"{name}","expire":"1h"}}"#);
    request_bytes("POST", "/v1/tasks", Some(&body))
}

pub fn refresh(name: &str, expire: &str) -> Vec<u8> {
    let body = format!(r#"{{"expire":"{expire}"}}"#);
    request_bytes("PUT", &format!("/v1/tasks/{name}"), Some(&body))
}

pub fn get(name: &str) -> Vec<u8> {
    request_bytes("GET", &format!("/v1/tasks/{name}"), None)
}

pub fn delete(name: &str) -> Vec<u8> {
    request_bytes("DELETE", &format!("/v1/tasks/{name}"), None)
}

pub fn list() -> Vec<u8> {
    request_bytes("GET", "/v1/tasks", None)
}

/// Upserts every name with `expire`, over [`POPULATORS`] connections that
/// pipeline [`PIPELINE`] requests at a time. Returns the time it took.
pub fn populate(socket: &Path, names: &[String], expire: &str) -> Duration {
    let started = Instant::now();
    let share = names.len().div_ceil(POPULATORS).max(1);
    std::thread::scope(|scope| {
        for part in names.chunks(share) {
            scope.spawn(move || {
                let mut client = Client::connect(socket);
                for window in part.chunks(PIPELINE) {
                    let bytes: Vec<u8> = window
                        .iter()
                        .flat_map(|name| refresh(name, expire))
                        .collect();
                    client.send(&bytes);
                    for name in window {
                        let (status, body) = client.answer();
                        assert_eq!(
                            status,
                            200,
                            "PUT {name}: {}",
                            String::from_utf8_lossy(&body)
                        );
                    }
                }
            });
        }
    });
    started.elapsed()
}
