//! The bench's side of the daemon's protocol: a keep-alive HTTP/1.1
//! connection with one request in flight ([`Client`]), the [`Connection`]
//! trait it shares with the Redis client so one loop times both, the
//! requests the bench sends, and [`populate`], which fills a daemon fast.
//!
//! Requests are built by `tests/common`'s `request_bytes`; responses are
//! framed by `httparse`, as the crate's own client frames them. The reader
//! is the bench's own and not `tests/common`'s `read_response` or the
//! crate's `client::http`: the first reads a byte per system call and the
//! second allocates each header, and both would land inside the timed
//! region. This one reads into a reused buffer and allocates only the body.

use std::io::{Read, Write};
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

/// How long a read may block before the bench gives up on the daemon.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// One connection speaking raw HTTP/1.1, one request in flight.
pub struct Client {
    stream: UnixStream,
    input: Vec<u8>,
    scratch: Box<[u8]>,
}

impl Client {
    pub fn connect(socket: &Path) -> Client {
        let stream = UnixStream::connect(socket)
            .unwrap_or_else(|e| panic!("connect to {}: {e}", socket.display()));
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .expect("set a read timeout");
        Client {
            stream,
            input: Vec::with_capacity(64 * 1024),
            scratch: vec![0u8; 64 * 1024].into_boxed_slice(),
        }
    }

    /// Sends `request` and reads its response: the status and the body.
    pub fn call(&mut self, request: &[u8]) -> (u16, Vec<u8>) {
        self.send(request);
        self.response()
    }

    /// Sends bytes without reading: one request, or several pipelined.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send a request");
    }

    /// Reads one `Content-Length`-framed response.
    pub fn response(&mut self) -> (u16, Vec<u8>) {
        let (status, head_end, length) = loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&self.input) {
                Ok(httparse::Status::Complete(head_end)) => {
                    let length = response
                        .headers
                        .iter()
                        .find(|header| header.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|header| std::str::from_utf8(header.value).ok()?.parse().ok())
                        .unwrap_or(0);
                    let status = response.code.expect("a complete head has a status");
                    break (status, head_end, length);
                }
                Ok(httparse::Status::Partial) => self.fill(),
                Err(e) => panic!(
                    "not an HTTP response ({e}): {:?}",
                    String::from_utf8_lossy(&self.input[..self.input.len().min(80)])
                ),
            }
        };
        while self.input.len() < head_end + length {
            self.fill();
        }
        let body = self.input[head_end..head_end + length].to_vec();
        self.input.drain(..head_end + length);
        (status, body)
    }

    fn fill(&mut self) {
        match self.stream.read(&mut self.scratch) {
            Ok(0) => panic!("the daemon closed the connection"),
            Ok(n) => self.input.extend_from_slice(&self.scratch[..n]),
            Err(e) => panic!("reading a response: {e}"),
        }
    }
}

/// One connection with one request in flight: [`Client`] (HTTP) or
/// [`Resp`](crate::redis::Resp) (Redis).
pub trait Connection {
    fn connect(socket: &Path) -> Self;
    /// Sends `request` and reads its answer: a status and a body.
    fn call(&mut self, request: &[u8]) -> (u16, Vec<u8>);
}

impl Connection for Client {
    fn connect(socket: &Path) -> Client {
        Client::connect(socket)
    }

    fn call(&mut self, request: &[u8]) -> (u16, Vec<u8>) {
        Client::call(self, request)
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
                        let (status, body) = client.response();
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
