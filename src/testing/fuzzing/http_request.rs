//! The `http_request` target: request framing ([`http::parse`]) against
//! itself (each framed request re-encodes and re-parses to itself) and
//! against the daemon's connection buffer ([`Conn`]) fed the same stream in
//! arbitrary pieces.

use std::io::{self, Read, Write};
use std::time::Instant;

use crate::conn::{Conn, Next, Reply};
use crate::http::{self, Limits, Parsed, Request, Response};

use super::Input;

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
    // The daemon's buffer cap (server::Connections::max_input): every request the
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
