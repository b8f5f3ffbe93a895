//! The HTTP/1.1 conformance catalogue: one raw request per entry, with the
//! RFC section it exercises, the exact status the daemon answers and whether
//! the connection stays open after it.
//!
//! Shared by `tests/conformance.rs` (each case against the real binary) and
//! `tests/h11_differential.rs` (each case's bytes fed to h11 and to our
//! framer). Requests are built for the daemon's API: `PUT /v1/tasks/c` with
//! the 13-byte body `{"expire":60}` is the ordinary request with a body.

#![allow(dead_code)]

/// Whether the connection stays open after the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Kept alive: a further request on it is answered.
    Open,
    /// Closed by the daemon after the response.
    Closed,
    /// Closed, and the bytes carry a second request after the first that
    /// must not be answered: a smuggling attempt, sent pipelined.
    ClosedSmuggling,
}

/// One catalogue entry.
#[derive(Debug, Clone)]
pub struct Case {
    /// The RFC and section, e.g. "9112 3.2".
    pub section: &'static str,
    /// What the case is, in a few words.
    pub what: &'static str,
    pub bytes: Vec<u8>,
    /// The final status (after any `100 Continue`).
    pub status: u16,
    pub after: After,
}

impl Case {
    /// Whether the request is HEAD: its response has no content.
    pub fn is_head(&self) -> bool {
        self.bytes.starts_with(b"HEAD ")
    }
}

use After::{Closed, ClosedSmuggling, Open};

/// A request the daemon answers 200 with no state change, appended to
/// smuggling cases: it must never be answered.
pub const SMUGGLED: &[u8] = b"DELETE /v1/tasks/victim HTTP/1.1\r\nHost: sprite\r\n\r\n";

fn case(
    section: &'static str,
    what: &'static str,
    bytes: &[u8],
    status: u16,
    after: After,
) -> Case {
    let mut bytes = bytes.to_vec();
    if after == ClosedSmuggling {
        bytes.extend_from_slice(SMUGGLED);
    }
    Case {
        section,
        what,
        bytes,
        status,
        after,
    }
}

/// Every case, grouped by RFC section.
#[rustfmt::skip]
pub fn catalogue() -> Vec<Case> {
    let long_target = format!("GET /v1/tasks/{} HTTP/1.1\r\nHost: sprite\r\n\r\n", "n".repeat(2000));
    let long_line = format!("GET /v1/tasks/{} HTTP/1.1\r\nHost: sprite\r\n\r\n", "n".repeat(10_000));
    let long_name = format!("GET /v1/tasks/{} HTTP/1.1\r\nHost: sprite\r\n\r\n", "n".repeat(129));
    let long_header = format!("GET /v1/tasks HTTP/1.1\r\nHost: sprite\r\nX-A: {}\r\n\r\n", "b".repeat(9000));
    let many_headers = format!("GET /v1/tasks HTTP/1.1\r\nHost: sprite\r\n{}\r\n", "X-A: b\r\n".repeat(40));
    let big_chunk = b"PUT /v1/tasks/c HTTP/1.1\r\nHost: sprite\r\nTransfer-Encoding: chunked\r\n\r\n4001\r\n";
    vec![
        // Request line: RFC 9112 section 3, RFC 9110 section 15.6.6.
        case("9112 3", "an ordinary request line", b"GET /v1/tasks HTTP/1.1\r\nHost: sprite\r\n\r\n", 200, Open),
        case("9112 3", "version without minor", b"GET /v1/tasks HTTP/1\r\nHost: sprite\r\n\r\n", 400, Closed),
        case("9112 3", "version with a leading zero", b"GET /v1/tasks HTTP/01.1\r\nHost: sprite\r\n\r\n", 400, Closed),
        case("9112 3", "whitespace after the version", b"GET /v1/tasks HTTP/1.1 \r\nHost: sprite\r\n\r\n", 400, Closed),
        case("9112 3", "lowercase protocol name", b"GET /v1/tasks http/1.1\r\nHost: sprite\r\n\r\n", 400, Closed),
        case("9112 3", "a space inside the target", b"GET /v1/tasks /a HTTP/1.1\r\nHost: sprite\r\n\r\n", 400, Closed),
        case("9112 3", "two spaces after the method", b"GET  /v1/tasks HTTP/1.1\r\nHost: sprite\r\n\r\n", 400, Closed),
        case("9112 3", "a tab as separator", b"GET\t/v1/tasks HTTP/1.1\r\nHost: sprite\r\n\r\n", 400, Closed),
        case("9112 3", "no version at all (HTTP/0.9 form)", b"GET /v1/tasks\r\n\r\n", 400, Closed),
        case("9110 15.6.6", "HTTP/2.0 in an HTTP/1 request line", b"GET /v1/tasks HTTP/2.0\r\nHost: sprite\r\n\r\n", 505, Closed),
        case("9110 15.6.6", "HTTP/0.9 spelled out", b"GET /v1/tasks HTTP/0.9\r\n\r\n", 505, Closed),
        case("9110 2.5", "a higher minor version, HTTP/1.2", b"GET /v1/tasks HTTP/1.2\r\nHost: sprite\r\n\r\n", 505, Closed),
        case("9112 2.2", "an empty line before the request line", b"\r\nGET /v1/tasks HTTP/1.1\r\nHost: sprite\r\n\r\n", 200, Open),
        case("9112 2.2", "bare LF line endings", b"GET /v1/tasks HTTP/1.1\nHost: sprite\n\n", 200, Open),
        case("9112 3.2", "raw UTF-8 in the path", b"GET /v1/tasks/caf\xc3\xa9 HTTP/1.1\r\nHost: sprite\r\n\r\n", 400, Closed),
        case("9112 3.2", "raw UTF-8 in the query", b"GET /v1/tasks?q=\xc3\xa9 HTTP/1.1\r\nHost: sprite\r\n\r\n", 400, Closed),
        case("9112 3.2", "a byte above 0x7F that is not UTF-8", b"GET /v1/tasks/\xff HTTP/1.1\r\nHost: sprite\r\n\r\n", 400, Closed),
        case("9112 3.2", "a control character in the target", b"GET /v1/tasks/\x01 HTTP/1.1\r\nHost: sprite\r\n\r\n", 400, Closed),
        case("9112 3.2.2", "absolute-form target", b"GET http://sprite/v1/tasks HTTP/1.1\r\nHost: sprite\r\n\r\n", 200, Open),
        case("9110 9.1", "a method that is not a token", b"GE(T /v1/tasks HTTP/1.1\r\nHost: sprite\r\n\r\n", 400, Closed),
        case("9110 9.1", "methods are case-sensitive", b"get /v1/tasks HTTP/1.1\r\nHost: sprite\r\n\r\n", 501, Open),
        case("9110 9.1", "an unknown method", b"BREW /v1/tasks HTTP/1.1\r\nHost: sprite\r\n\r\n", 501, Open),
        case("9110 9.3.7", "OPTIONS *", b"OPTIONS * HTTP/1.1\r\nHost: sprite\r\n\r\n", 501, Open),
        case("9110 9.3.6", "CONNECT with an authority-form target", b"CONNECT sprite:80 HTTP/1.1\r\nHost: sprite\r\n\r\n", 501, Open),
        case("9110 15.5.6", "a method the resource does not allow", b"DELETE /v1/tasks HTTP/1.1\r\nHost: sprite\r\n\r\n", 405, Open),
        case("9112 3.2.4", "asterisk-form with GET", b"GET * HTTP/1.1\r\nHost: sprite\r\n\r\n", 400, Open),

        // Host: RFC 9112 section 3.2.
        case("9112 3.2", "no Host on HTTP/1.1", b"GET /v1/tasks HTTP/1.1\r\n\r\n", 400, Closed),
        case("9112 3.2", "no Host on HTTP/1.0", b"GET /v1/tasks HTTP/1.0\r\n\r\n", 200, Closed),
        case("9112 3.2", "no Host on HTTP/1.0 with keep-alive", b"GET /v1/tasks HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 200, Open),
        case("9112 3.2", "two identical Host lines", b"GET /v1/tasks HTTP/1.1\r\nHost: sprite\r\nHost: sprite\r\n\r\n", 400, Closed),
        case("9112 3.2", "two different Host lines", b"GET /v1/tasks HTTP/1.1\r\nHost: sprite\r\nhost: other\r\n\r\n", 400, Closed),
        case("9112 3.2", "two Host lines on HTTP/1.0", b"GET /v1/tasks HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400, Closed),
        case("9112 3.2", "userinfo in Host", b"GET /v1/tasks HTTP/1.1\r\nHost: user@sprite\r\n\r\n", 400, Closed),
        case("9112 3.2", "a path in Host", b"GET /v1/tasks HTTP/1.1\r\nHost: sprite/v1\r\n\r\n", 400, Closed),
        case("9112 3.2", "a comma list in Host", b"GET /v1/tasks HTTP/1.1\r\nHost: sprite, other\r\n\r\n", 400, Closed),
        case("9112 3.2", "a port that is not digits", b"GET /v1/tasks HTTP/1.1\r\nHost: sprite:http\r\n\r\n", 400, Closed),
        case("9112 3.2", "an empty Host", b"GET /v1/tasks HTTP/1.1\r\nHost:\r\n\r\n", 200, Open),
        case("9112 3.2", "Host with a port", b"GET /v1/tasks HTTP/1.1\r\nHost: sprite:80\r\n\r\n", 200, Open),
        case("9112 3.2", "an IPv6 literal", b"GET /v1/tasks HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", 200, Open),
        case("9112 3.2.2", "absolute-form wins over a different Host", b"GET http://sprite/v1/tasks HTTP/1.1\r\nHost: other\r\n\r\n", 200, Open),
        case("9112 3.2", "absolute-form still needs Host on HTTP/1.1", b"GET http://sprite/v1/tasks HTTP/1.1\r\n\r\n", 400, Closed),

        // Header fields: RFC 9112 section 5, RFC 9110 section 5.
        case("9112 5.1", "whitespace before the colon", b"GET /v1/tasks HTTP/1.1\r\nHost : sprite\r\n\r\n", 400, Closed),
        case("9112 5.2", "obsolete line folding", b"GET /v1/tasks HTTP/1.1\r\nHost: sprite\r\nX-A: a\r\n b\r\n\r\n", 400, Closed),
        case("9112 5", "a header line without a colon", b"GET /v1/tasks HTTP/1.1\r\nHost: sprite\r\nX-A\r\n\r\n", 400, Closed),
        case("9112 5", "an empty field name", b"GET /v1/tasks HTTP/1.1\r\nHost: sprite\r\n: a\r\n\r\n", 400, Closed),
        case("9110 5.5", "NUL in a field value", b"GET /v1/tasks HTTP/1.1\r\nHost: sprite\r\nX-A: a\x00b\r\n\r\n", 400, Closed),
        case("9110 5.5", "obs-text in a field value", b"GET /v1/tasks HTTP/1.1\r\nHost: sprite\r\nX-A: caf\xe9\r\n\r\n", 200, Open),
        case("9110 5.5", "trailing whitespace in a value", b"GET /v1/tasks HTTP/1.1\r\nHost: sprite \r\nX-A: b \t\r\n\r\n", 200, Open),

        // Content-Length: RFC 9112 section 6.2 and 6.3, RFC 9110 section 8.6.
        case("9112 6.2", "a body by Content-Length", b"PUT /v1/tasks/c HTTP/1.1\r\nHost: sprite\r\nContent-Length: 13\r\n\r\n{\"expire\":60}", 200, Open),
        case("9112 6.3", "a body on GET is read and skipped", b"GET /v1/tasks HTTP/1.1\r\nHost: sprite\r\nContent-Length: 5\r\n\r\nhello", 200, Open),
        case("9110 8.6", "Content-Length with a sign", b"PUT /v1/tasks/c HTTP/1.1\r\nHost: sprite\r\nContent-Length: +13\r\n\r\n{\"expire\":60}", 400, Closed),
        case("9110 8.6", "negative Content-Length", b"PUT /v1/tasks/c HTTP/1.1\r\nHost: sprite\r\nContent-Length: -1\r\n\r\n", 400, Closed),
        case("9110 8.6", "hexadecimal Content-Length", b"PUT /v1/tasks/c HTTP/1.1\r\nHost: sprite\r\nContent-Length: 0xd\r\n\r\n{\"expire\":60}", 400, Closed),
        case("9110 8.6", "empty Content-Length", b"PUT /v1/tasks/c HTTP/1.1\r\nHost: sprite\r\nContent-Length:\r\n\r\n", 400, Closed),
        case("9110 8.6", "Content-Length past u64", b"PUT /v1/tasks/c HTTP/1.1\r\nHost: sprite\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400, Closed),
        case("9110 8.6", "a Content-Length list", b"PUT /v1/tasks/c HTTP/1.1\r\nHost: sprite\r\nContent-Length: 13, 13\r\n\r\n{\"expire\":60}", 400, Closed),
        case("9110 8.6", "identical duplicate Content-Length lines", b"PUT /v1/tasks/c HTTP/1.1\r\nHost: sprite\r\nContent-Length: 13\r\nContent-Length: 13\r\n\r\n{\"expire\":60}", 200, Open),
        case("9112 6.3", "differing Content-Length lines", b"PUT /v1/tasks/c HTTP/1.1\r\nHost: sprite\r\nContent-Length: 13\r\nContent-Length: 0\r\n\r\n{\"expire\":60}", 400, ClosedSmuggling),

        // Transfer-Encoding and chunked framing: RFC 9112 sections 6.1, 7.1.
        case("9112 7.1", "a chunked body", b"PUT /v1/tasks/c HTTP/1.1\r\nHost: sprite\r\nTransfer-Encoding: chunked\r\n\r\nd\r\n{\"expire\":60}\r\n0\r\n\r\n", 200, Open),
        case("9112 7", "coding names are case-insensitive", b"PUT /v1/tasks/c HTTP/1.1\r\nHost: sprite\r\nTransfer-Encoding: Chunked\r\n\r\nd\r\n{\"expire\":60}\r\n0\r\n\r\n", 200, Open),
        case("9112 7.1.1", "chunk extensions with a token and a quoted string", b"PUT /v1/tasks/c HTTP/1.1\r\nHost: sprite\r\nTransfer-Encoding: chunked\r\n\r\nd;a=1;b=\"x y\"\r\n{\"expire\":60}\r\n0;last\r\n\r\n", 200, Open),
        case("9112 7.1.2", "a trailer section", b"PUT /v1/tasks/c HTTP/1.1\r\nHost: sprite\r\nTransfer-Encoding: chunked\r\n\r\nd\r\n{\"expire\":60}\r\n0\r\nX-Sum: 1\r\n\r\n", 200, Open),
        case("9112 7.1.1", "an extension without a name", b"PUT /v1/tasks/c HTTP/1.1\r\nHost: sprite\r\nTransfer-Encoding: chunked\r\n\r\nd;\r\n{\"expire\":60}\r\n0\r\n\r\n", 400, ClosedSmuggling),
        case("9112 7.1.1", "an extension name that is not a token", b"PUT /v1/tasks/c HTTP/1.1\r\nHost: sprite\r\nTransfer-Encoding: chunked\r\n\r\nd;bad[=x\r\n{\"expire\":60}\r\n0\r\n\r\n", 400, ClosedSmuggling),
        case("9112 7.1", "whitespace after the chunk size", b"PUT /v1/tasks/c HTTP/1.1\r\nHost: sprite\r\nTransfer-Encoding: chunked\r\n\r\nd \r\n{\"expire\":60}\r\n0\r\n\r\n", 400, ClosedSmuggling),
        case("9112 7.1", "a chunk size that is not hex, refused at once", b"PUT /v1/tasks/c HTTP/1.1\r\nHost: sprite\r\nTransfer-Encoding: chunked\r\n\r\nz", 400, Closed),
        case("9112 7.1", "a 0x prefix on the chunk size", b"PUT /v1/tasks/c HTTP/1.1\r\nHost: sprite\r\nTransfer-Encoding: chunked\r\n\r\n0xd\r\n{\"expire\":60}\r\n0\r\n\r\n", 400, ClosedSmuggling),
        case("9112 7.1", "an empty chunk-size line", b"PUT /v1/tasks/c HTTP/1.1\r\nHost: sprite\r\nTransfer-Encoding: chunked\r\n\r\n\r\n", 400, ClosedSmuggling),
        case("9112 7.1", "a bare LF after the chunk size", b"PUT /v1/tasks/c HTTP/1.1\r\nHost: sprite\r\nTransfer-Encoding: chunked\r\n\r\nd\n{\"expire\":60}\r\n0\r\n\r\n", 400, ClosedSmuggling),
        case("9112 7.1", "chunk data not followed by CRLF", b"PUT /v1/tasks/c HTTP/1.1\r\nHost: sprite\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}XX0\r\n\r\n", 400, ClosedSmuggling),
        case("9112 7.1", "a chunk size past the body limit", big_chunk, 413, Closed),
        case("9112 7.1", "a chunk size past usize", b"PUT /v1/tasks/c HTTP/1.1\r\nHost: sprite\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffffff\r\n", 413, Closed),
        case("9112 7.1.2", "a trailer line that is not a field", b"PUT /v1/tasks/c HTTP/1.1\r\nHost: sprite\r\nTransfer-Encoding: chunked\r\n\r\nd\r\n{\"expire\":60}\r\n0\r\nno colon\r\n\r\n", 400, ClosedSmuggling),
        case("9112 6.1", "Transfer-Encoding on HTTP/1.0", b"PUT /v1/tasks/c HTTP/1.0\r\nHost: sprite\r\nTransfer-Encoding: chunked\r\n\r\nd\r\n{\"expire\":60}\r\n0\r\n\r\n", 400, ClosedSmuggling),
        case("9112 6.1", "a coding that does not end in chunked", b"PUT /v1/tasks/c HTTP/1.1\r\nHost: sprite\r\nTransfer-Encoding: gzip\r\n\r\n", 400, ClosedSmuggling),
        case("9112 6.1", "an unimplemented coding before chunked", b"PUT /v1/tasks/c HTTP/1.1\r\nHost: sprite\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501, ClosedSmuggling),
        case("9112 6.1", "chunked twice", b"PUT /v1/tasks/c HTTP/1.1\r\nHost: sprite\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, ClosedSmuggling),
        case("9112 6.1", "chunked then identity", b"PUT /v1/tasks/c HTTP/1.1\r\nHost: sprite\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", 400, ClosedSmuggling),
        case("9112 6.1", "an unknown coding name", b"PUT /v1/tasks/c HTTP/1.1\r\nHost: sprite\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 400, ClosedSmuggling),
        case("9112 6.1", "an empty coding", b"PUT /v1/tasks/c HTTP/1.1\r\nHost: sprite\r\nTransfer-Encoding: ,chunked\r\n\r\n0\r\n\r\n", 400, ClosedSmuggling),

        // Smuggling: RFC 9112 sections 6.1, 6.3 and 11.2.
        case("9112 6.1", "CL.TE: chunked wins and the connection closes", b"PUT /v1/tasks/c HTTP/1.1\r\nHost: sprite\r\nContent-Length: 60\r\nTransfer-Encoding: chunked\r\n\r\nd\r\n{\"expire\":60}\r\n0\r\n\r\n", 200, ClosedSmuggling),
        case("9112 6.1", "TE.CL: chunked wins and the connection closes", b"PUT /v1/tasks/c HTTP/1.1\r\nHost: sprite\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\nd\r\n{\"expire\":60}\r\n0\r\n\r\n", 200, ClosedSmuggling),
        case("9112 5.1", "TE with whitespace before the colon", b"PUT /v1/tasks/c HTTP/1.1\r\nHost: sprite\r\nContent-Length: 18\r\nTransfer-Encoding : chunked\r\n\r\nd\r\n{\"expire\":60}\r\n0\r\n\r\n", 400, ClosedSmuggling),
        case("9112 5.2", "TE hidden in a folded line", b"PUT /v1/tasks/c HTTP/1.1\r\nHost: sprite\r\nContent-Length: 18\r\nX-A: a\r\n Transfer-Encoding: chunked\r\n\r\nd\r\n{\"expire\":60}\r\n0\r\n\r\n", 400, ClosedSmuggling),
        case("9110 5.5", "TE with a vertical tab", b"PUT /v1/tasks/c HTTP/1.1\r\nHost: sprite\r\nContent-Length: 18\r\nTransfer-Encoding: \x0bchunked\r\n\r\nd\r\n{\"expire\":60}\r\n0\r\n\r\n", 400, ClosedSmuggling),
        case("9112 2.2", "a bare CR in a header line", b"PUT /v1/tasks/c HTTP/1.1\r\nHost: sprite\r\nX-A: a\rContent-Length: 0\r\nContent-Length: 13\r\n\r\n{\"expire\":60}", 400, ClosedSmuggling),
        case("9112 7.1", "a chunk size with a plus sign", b"PUT /v1/tasks/c HTTP/1.1\r\nHost: sprite\r\nTransfer-Encoding: chunked\r\n\r\n+d\r\n{\"expire\":60}\r\n0\r\n\r\n", 400, ClosedSmuggling),
        case("9112 7.1", "a bare LF inside a chunk extension", b"PUT /v1/tasks/c HTTP/1.1\r\nHost: sprite\r\nTransfer-Encoding: chunked\r\n\r\nd;a\n{\"expire\":60}\r\n0\r\n\r\n", 400, ClosedSmuggling),

        // Expect: RFC 9110 section 10.1.1.
        case("9110 10.1.1", "100-continue with the body", b"PUT /v1/tasks/c HTTP/1.1\r\nHost: sprite\r\nExpect: 100-continue\r\nContent-Length: 13\r\n\r\n{\"expire\":60}", 200, Open),
        case("9110 10.1.1", "an unknown expectation", b"PUT /v1/tasks/c HTTP/1.1\r\nHost: sprite\r\nExpect: the-unexpected\r\nContent-Length: 13\r\n\r\n{\"expire\":60}", 417, ClosedSmuggling),
        case("9110 10.1.1", "100-continue on HTTP/1.0 is ignored", b"PUT /v1/tasks/c HTTP/1.0\r\nHost: sprite\r\nExpect: 100-continue\r\nContent-Length: 13\r\n\r\n{\"expire\":60}", 200, Closed),

        // HEAD: RFC 9110 section 9.3.2.
        case("9110 9.3.2", "HEAD of the list", b"HEAD /v1/tasks HTTP/1.1\r\nHost: sprite\r\n\r\n", 200, Open),
        case("9110 9.3.2", "HEAD of a missing task", b"HEAD /v1/tasks/missing HTTP/1.1\r\nHost: sprite\r\n\r\n", 404, Open),
        case("9110 9.3.2", "HEAD of the status", b"HEAD /v1/status HTTP/1.1\r\nHost: sprite\r\n\r\n", 200, Open),
        case("9110 9.3.2", "HEAD of the event stream is not allowed", b"HEAD /v1/events HTTP/1.1\r\nHost: sprite\r\n\r\n", 405, Open),
        case("9110 9.3.2", "a refused HEAD", b"HEAD /v1/tasks HTTP/1.1\r\n\r\n", 400, Closed),

        // Connection management: RFC 9112 section 9.
        case("9112 9.3", "HTTP/1.1 persists by default", b"GET /v1/status HTTP/1.1\r\nHost: sprite\r\n\r\n", 200, Open),
        case("9112 9.6", "Connection: close", b"GET /v1/status HTTP/1.1\r\nHost: sprite\r\nConnection: close\r\n\r\n", 200, Closed),
        case("9112 9.6", "close among other options", b"GET /v1/status HTTP/1.1\r\nHost: sprite\r\nConnection: keep-alive, Close\r\n\r\n", 200, Closed),
        case("9112 9.3", "HTTP/1.0 closes by default", b"GET /v1/status HTTP/1.0\r\n\r\n", 200, Closed),
        case("9112 9.3", "HTTP/1.0 with keep-alive", b"GET /v1/status HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 200, Open),
        case("9112 9.6", "nothing after Connection: close is read", b"GET /v1/status HTTP/1.1\r\nHost: sprite\r\nConnection: close\r\n\r\n", 200, ClosedSmuggling),

        // Limits: RFC 9110 sections 15.5.14, 15.5.15; RFC 6585 section 5.
        case("9110 15.5.15", "a target past the target limit", long_target.as_bytes(), 414, Closed),
        case("9110 15.5.15", "a request line past the head limit", long_line.as_bytes(), 414, Closed),
        case("9110 15.5.1", "a task name too long for the API", long_name.as_bytes(), 400, Open),
        case("6585 5", "a header line past the head limit", long_header.as_bytes(), 431, Closed),
        case("6585 5", "too many header lines", many_headers.as_bytes(), 431, Closed),
        case("9110 15.5.14", "a body past the limit, from its Content-Length", b"PUT /v1/tasks/c HTTP/1.1\r\nHost: sprite\r\nContent-Length: 1000000\r\n\r\n", 413, Closed),
    ]
}
