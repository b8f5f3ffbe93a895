//! Reading what the reactor wrote, as the `reactor` target checks it:
//! the answers framed, the names a list carries, and the bytes of a
//! connection made comparable between two runs.

use std::collections::BTreeSet;

/// Where `needle` first occurs in `haystack`. Byte by byte: a slice
/// comparison per position is a `memcmp` call, which the fuzzer's
/// interceptor makes the costliest part of the target.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, tail) = needle.split_first()?;
    (0..haystack.len().checked_sub(tail.len())?).find(|&at| {
        haystack[at] == first
            && haystack[at + 1..at + needle.len()]
                .iter()
                .zip(tail)
                .all(|(a, b)| a == b)
    })
}

/// The names in a `GET /v1/tasks` body. A scan, not a JSON parse (the
/// parse was a tenth of the target's time): the target's names need no
/// escaping and no other field is called `name`.
pub(super) fn listed_names(body: &[u8]) -> BTreeSet<String> {
    const KEY: &[u8] = b"\"name\":\"";
    let mut names = BTreeSet::new();
    let mut rest = body;
    while let Some(at) = find(rest, KEY) {
        rest = &rest[at + KEY.len()..];
        let end = rest
            .iter()
            .position(|&byte| byte == b'"')
            .expect("a name ends");
        names.insert(String::from_utf8_lossy(&rest[..end]).into_owned());
        rest = &rest[end..];
    }
    names
}

/// A connection's output as the cut comparison sees it: the bodies of
/// metrics pages and of event streams left out. Both follow how the work
/// was grouped, by design: the metrics count turns, commits and requests;
/// an event stream numbers the events in commit order, and a held or idle
/// event follows the last change of the commit that causes it, so pieces
/// that make more commits place it earlier.
pub(super) fn comparable(mut written: &[u8]) -> Vec<u8> {
    let mut kept = Vec::with_capacity(written.len());
    loop {
        // An interim `100 Continue` goes out only if the head arrived
        // before its body: how the bytes were cut decides it, as RFC 9110
        // (10.1.1) allows. Left out of the comparison.
        if let Some(rest) = written.strip_prefix(crate::http::request::CONTINUE) {
            written = rest;
            continue;
        }
        let Some(head_end) = find(written, b"\r\n\r\n").map(|at| at + 4) else {
            break;
        };
        let head = &written[..head_end];
        if find(head, STREAM_TYPE).is_some() {
            // An event stream (chunked, or to the close on HTTP/1.0):
            // nothing follows it on this connection.
            kept.extend_from_slice(head);
            return kept;
        }
        // A HEAD's answer announces a length it does not send: the next
        // response's status line follows its head at once (no JSON body
        // starts so). Without this, the next answer was read as its body.
        let len = if written[head_end..].starts_with(b"HTTP/1.") {
            head_end
        } else {
            let Some((_, len)) = parse_response(written) else {
                break;
            };
            len
        };
        let (response, rest) = written.split_at(len);
        let metrics = find(head, METRICS_TYPE).is_some();
        // A metrics page: its status line only (its length varies too).
        let status_line = find(head, b"\r\n").map_or(head, |end| &head[..end]);
        kept.extend_from_slice(if metrics { status_line } else { response });
        written = rest;
    }
    kept.extend_from_slice(written);
    kept
}

/// The content type of event streams, and only of them.
const STREAM_TYPE: &[u8] = b"Content-Type: application/x-ndjson";

/// The content type of the metrics page, and only of it.
const METRICS_TYPE: &[u8] = b"Content-Type: text/plain";

/// The status and length of the first complete response in `bytes`
/// (the daemon's own: `Content-Length` always, chunked only for event
/// streams, whose answers are not parsed); `None` when incomplete.
pub(super) fn parse_response(bytes: &[u8]) -> Option<(u16, usize)> {
    let end = find(bytes, b"\r\n\r\n")? + 4;
    // Not a response head where a raw request's answer (a HEAD's, say)
    // left the framing: the rest is not parsed.
    let head = std::str::from_utf8(&bytes[..end]).ok()?;
    let status: u16 = head.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()?;
    let mut length = 0;
    for line in head.split("\r\n") {
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("transfer-encoding") {
                return None;
            }
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
    (bytes.len() >= end + length).then_some((status, end + length))
}
