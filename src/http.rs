//! HTTP/1.1 request framing and response encoding, without I/O.
//!
//! httparse checks the request line and header syntax; everything else is
//! ours: message framing (RFC 9112 section 6), `Connection`, `Expect`, a strict
//! chunked decoder, and every size limit. Depends on nothing else of ours.
//!
//! [`parse`] is called with everything received so far and either frames one
//! request, says more bytes are needed ([`Parsed::Partial`], never an error),
//! or refuses with an [`HttpError`] after which the connection must be closed:
//! once framing is in doubt, nothing after it on the stream can be trusted.
//!
//! Framing decisions, following hyper's server:
//! - `Content-Length` is ASCII digits only; differing duplicates are refused.
//! - `Transfer-Encoding` on HTTP/1.0 is refused. Its codings must end in one
//!   `chunked`; any other coding is 501 (we implement none).
//! - `Transfer-Encoding` with `Content-Length`: the length is ignored, the body
//!   is read as chunked, and the connection is closed after the response, so a
//!   peer that disagrees about where the body ends can smuggle nothing.
//! - `Expect: 100-continue` is honoured on HTTP/1.1 once the head is accepted;
//!   any other expectation is 417.

use std::fmt;

/// Most header lines in a request (431 past it). curl sends 3 to 5, browsers
/// about 20; httparse needs a caller-owned array of this size.
pub const MAX_HEADERS: usize = 32;

/// Longest chunk-size line, extensions included (400 past it). Extensions are
/// never used by our clients; the bound keeps a hostile one from growing it.
pub const MAX_CHUNK_LINE: usize = 256;

/// Largest trailer section of a chunked body (431 past it).
pub const MAX_TRAILER_BYTES: usize = 4096;

/// Size limits, settings of the daemon.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request head: request line and headers (431 past it).
    pub max_head: usize,
    /// Longest request target (414 past it).
    pub max_target: usize,
    /// Largest body, decided from `Content-Length` before it is read (413).
    pub max_body: usize,
}

impl Limits {
    /// Default head limit: 8 KiB, as nginx's default `large_client_header_buffers`
    /// line size; our requests need a few hundred bytes.
    pub const DEFAULT_MAX_HEAD: usize = 8 * 1024;
    /// Default target limit: a name of 128 bytes percent-encoded three times
    /// over fits with room to spare.
    pub const DEFAULT_MAX_TARGET: usize = 1024;
    /// Default body limit: a task body is under 300 bytes; 16 KiB leaves room
    /// for whitespace and unknown clients without letting one hold much memory.
    pub const DEFAULT_MAX_BODY: usize = 16 * 1024;
}

impl Limits {
    /// The most bytes a chunked body may take on the wire, framing and
    /// trailers included (413 past it): twice the body limit, so ordinary
    /// chunking costs nothing, while a body split into one-byte chunks with
    /// long extensions cannot outgrow what a connection buffers.
    pub fn max_encoded_body(&self) -> usize {
        2 * self.max_body + MAX_TRAILER_BYTES
    }

    /// The most bytes one request can occupy: what a connection must be able
    /// to buffer so that every request [`parse`] can accept also arrives.
    pub fn max_request_bytes(&self) -> usize {
        self.max_head + self.max_encoded_body()
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: Limits::DEFAULT_MAX_HEAD,
            max_target: Limits::DEFAULT_MAX_TARGET,
            max_body: Limits::DEFAULT_MAX_BODY,
        }
    }
}

/// A request method. The API uses four; anything else is kept for the 405.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
    Other(String),
}

impl Method {
    fn from_token(token: &str) -> Method {
        match token {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            other => Method::Other(other.to_owned()),
        }
    }

    /// The method's token.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Other(token) => token,
        }
    }
}

/// One framed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// The request target as sent (origin form, or absolute form).
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Whether the connection may carry another request after this one.
    pub keep_alive: bool,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Request {
    /// Encodes the request with a `Content-Length` body: what a well-behaved
    /// client would have sent to be framed as this request.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = format!(
            "{} {} HTTP/1.{}\r\nHost: sprite\r\nContent-Length: {}\r\n",
            self.method.as_str(),
            self.target,
            self.minor_version,
            self.body.len()
        )
        .into_bytes();
        match (self.minor_version, self.keep_alive) {
            (0, true) => out.extend_from_slice(b"Connection: keep-alive\r\n"),
            (1, false) => out.extend_from_slice(b"Connection: close\r\n"),
            _ => {}
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

/// What [`parse`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// One request, framed from the first `consumed` bytes.
    Complete { request: Request, consumed: usize },
    /// More bytes are needed.
    Partial(Progress),
}

/// How far an incomplete request got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// The head is not complete yet.
    Head,
    /// The head was accepted; the body is still arriving. `expects_continue`
    /// asks the caller to send [`CONTINUE`] once.
    Body { expects_continue: bool },
}

/// A refused request: the status and the sentence for the client. The
/// connection is closed after the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    pub status: u16,
    pub message: String,
}

impl HttpError {
    fn new(status: u16, message: impl Into<String>) -> Self {
        HttpError {
            status,
            message: message.into(),
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.message)
    }
}

impl std::error::Error for HttpError {}

/// The interim response to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// How the body of an accepted head is delimited.
enum Framing {
    Length(usize),
    Chunked,
}

/// Frames the first request in `buf`.
///
/// # Errors
/// [`HttpError`] with the status to answer; the caller closes the connection
/// after answering.
pub fn parse(buf: &[u8], limits: &Limits) -> Result<Parsed, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut headers);
    let head_len = match head.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            if buf.len() > limits.max_head {
                return Err(head_too_large(limits));
            }
            return Ok(Parsed::Partial(Progress::Head));
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HttpError::new(
                431,
                format!("the request has more than {MAX_HEADERS} header lines"),
            ));
        }
        Err(httparse::Error::Version) => {
            return Err(HttpError::new(505, "only HTTP/1.0 and HTTP/1.1 are served"));
        }
        Err(e) => return Err(HttpError::new(400, format!("malformed request head: {e}"))),
    };
    if head_len > limits.max_head {
        return Err(head_too_large(limits));
    }
    let method = Method::from_token(head.method.unwrap_or_default());
    let target = head.path.unwrap_or_default();
    if target.len() > limits.max_target {
        return Err(HttpError::new(
            414,
            format!(
                "the request target is longer than {} bytes",
                limits.max_target
            ),
        ));
    }
    let minor_version = head.version.unwrap_or(1);

    let mut content_length: Option<u64> = None;
    let mut codings: Vec<String> = Vec::new();
    let mut close = false;
    let mut keep_alive_token = false;
    let mut expects_continue = false;
    for header in head.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            let length = parse_content_length(header.value)?;
            if content_length.is_some_and(|seen| seen != length) {
                return Err(HttpError::new(400, "conflicting Content-Length headers"));
            }
            content_length = Some(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            let value = header_text(header.value, "Transfer-Encoding")?;
            for coding in value.split(',').map(str::trim) {
                if coding.is_empty() {
                    return Err(HttpError::new(400, "empty coding in Transfer-Encoding"));
                }
                codings.push(coding.to_ascii_lowercase());
            }
        } else if name.eq_ignore_ascii_case("connection") {
            let value = header_text(header.value, "Connection")?;
            for token in value.split(',').map(str::trim) {
                close |= token.eq_ignore_ascii_case("close");
                keep_alive_token |= token.eq_ignore_ascii_case("keep-alive");
            }
        } else if name.eq_ignore_ascii_case("expect") {
            let value = header_text(header.value, "Expect")?;
            if !value.trim().eq_ignore_ascii_case("100-continue") {
                return Err(HttpError::new(
                    417,
                    format!(
                        "unsupported expectation {:?}; only 100-continue is known",
                        value.trim()
                    ),
                ));
            }
            // RFC 9110 10.1.1: ignored on HTTP/1.0.
            expects_continue = minor_version == 1;
        }
    }
    let mut keep_alive = match minor_version {
        0 => keep_alive_token && !close,
        _ => !close,
    };

    let framing = if codings.is_empty() {
        let length = content_length.unwrap_or(0);
        if length > limits.max_body as u64 {
            return Err(body_too_large(limits));
        }
        Framing::Length(length as usize)
    } else {
        if minor_version == 0 {
            return Err(HttpError::new(
                400,
                "Transfer-Encoding is not allowed in HTTP/1.0",
            ));
        }
        let (last, before) = codings.split_last().unwrap_or((&codings[0], &[]));
        if let Some(other) = before.iter().find(|c| *c != "chunked") {
            return Err(HttpError::new(
                501,
                format!(
                    "transfer coding {other:?} is not supported; send the body with chunked or Content-Length"
                ),
            ));
        }
        if last != "chunked" || !before.is_empty() {
            return Err(HttpError::new(
                400,
                "Transfer-Encoding must end with a single chunked coding",
            ));
        }
        if content_length.is_some() {
            // Anti-smuggling: trust chunked, and end the connection after.
            keep_alive = false;
        }
        Framing::Chunked
    };

    let rest = &buf[head_len..];
    let (body, body_len) = match framing {
        Framing::Length(length) => {
            if rest.len() < length {
                return Ok(Parsed::Partial(Progress::Body { expects_continue }));
            }
            (rest[..length].to_vec(), length)
        }
        Framing::Chunked => {
            // Only the first `max_encoded_body` bytes may hold the body.
            let limit = limits.max_encoded_body();
            let window = &rest[..rest.len().min(limit)];
            match decode_chunked(window, limits.max_body)? {
                Some(decoded) => decoded,
                None if rest.len() > limit => {
                    return Err(HttpError::new(
                        413,
                        format!(
                            "the chunked request body takes more than {limit} bytes with its framing"
                        ),
                    ));
                }
                None => return Ok(Parsed::Partial(Progress::Body { expects_continue })),
            }
        }
    };
    Ok(Parsed::Complete {
        request: Request {
            method,
            target: target.to_owned(),
            minor_version,
            keep_alive,
            body,
        },
        consumed: head_len + body_len,
    })
}

fn head_too_large(limits: &Limits) -> HttpError {
    HttpError::new(
        431,
        format!("the request head is larger than {} bytes", limits.max_head),
    )
}

fn body_too_large(limits: &Limits) -> HttpError {
    HttpError::new(
        413,
        format!("the request body is larger than {} bytes", limits.max_body),
    )
}

fn header_text<'a>(value: &'a [u8], name: &str) -> Result<&'a str, HttpError> {
    std::str::from_utf8(value)
        .ok()
        .filter(|text| text.is_ascii())
        .ok_or_else(|| HttpError::new(400, format!("the {name} header is not ASCII")))
}

/// ASCII digits only: `u64::from_str` would also take `+5`.
fn parse_content_length(value: &[u8]) -> Result<u64, HttpError> {
    let invalid = || HttpError::new(400, "Content-Length must be a decimal number of bytes");
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(invalid());
    }
    value.iter().try_fold(0u64, |acc, digit| {
        acc.checked_mul(10)
            .and_then(|acc| acc.checked_add(u64::from(digit - b'0')))
            .ok_or_else(invalid)
    })
}

/// Decodes a chunked body from the start of `buf`: `Ok(None)` if incomplete,
/// otherwise the body and the number of bytes the encoding took.
///
/// Strict: at least one hex digit per size, CRLF line endings only, bounded
/// extensions and trailers, and the CRLF after each chunk's data checked.
fn decode_chunked(buf: &[u8], max_body: usize) -> Result<Option<(Vec<u8>, usize)>, HttpError> {
    let bad = |what: &str| HttpError::new(400, format!("malformed chunked body: {what}"));
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let line = match take_line(&buf[at..], MAX_CHUNK_LINE) {
            Ok(Some(line)) => line,
            Ok(None) => return Ok(None),
            Err(LineError::TooLong) => return Err(bad("a chunk-size line is too long")),
            Err(LineError::Malformed(e)) => return Err(bad(e)),
        };
        let line_len = line.len() + 2;
        let (size_text, extension) = match line.iter().position(|&b| b == b';') {
            Some(split) => (&line[..split], &line[split..]),
            None => (line, &line[line.len()..]),
        };
        if size_text.is_empty() || !size_text.iter().all(u8::is_ascii_hexdigit) {
            return Err(bad("a chunk size must be hexadecimal digits"));
        }
        if !extension
            .iter()
            .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
        {
            return Err(bad("control characters in a chunk extension"));
        }
        let size = size_text.iter().try_fold(0usize, |acc, &digit| {
            let value = (digit as char).to_digit(16).unwrap_or(0) as usize;
            acc.checked_mul(16).and_then(|acc| acc.checked_add(value))
        });
        let size = match size {
            Some(size) if size <= max_body.saturating_sub(body.len()) => size,
            _ => {
                return Err(HttpError::new(
                    413,
                    format!("the request body is larger than {max_body} bytes"),
                ));
            }
        };
        at += line_len;
        if size == 0 {
            break;
        }
        if buf.len() < at + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[at..at + size]);
        at += size;
        if &buf[at..at + 2] != b"\r\n" {
            return Err(bad("chunk data is not followed by CRLF"));
        }
        at += 2;
    }
    // Trailer section: header lines up to an empty line, all ignored.
    let trailers_start = at;
    loop {
        let room = MAX_TRAILER_BYTES.saturating_sub(at - trailers_start);
        let line = match take_line(&buf[at..], room) {
            Ok(Some(line)) => line,
            Ok(None) => return Ok(None),
            Err(LineError::TooLong) => {
                return Err(HttpError::new(
                    431,
                    format!("the chunked trailer section is larger than {MAX_TRAILER_BYTES} bytes"),
                ));
            }
            Err(LineError::Malformed(e)) => return Err(bad(e)),
        };
        at += line.len() + 2;
        if line.is_empty() {
            return Ok(Some((body, at)));
        }
        if !line.contains(&b':') || line.iter().any(|&b| b != b'\t' && (b < b' ' || b == 0x7f)) {
            return Err(bad("a trailer line is not a header field"));
        }
    }
}

/// Why a line could not be taken.
enum LineError {
    TooLong,
    Malformed(&'static str),
}

/// The line at the start of `buf`, without its CRLF; `Ok(None)` if no line
/// end has arrived yet. A bare LF or CR, or a line longer than `max`, is an
/// error.
fn take_line(buf: &[u8], max: usize) -> Result<Option<&[u8]>, LineError> {
    for (index, &byte) in buf.iter().enumerate() {
        if index > max {
            return Err(LineError::TooLong);
        }
        match byte {
            b'\n' => return Err(LineError::Malformed("bare LF line ending")),
            b'\r' => {
                return match buf.get(index + 1) {
                    Some(b'\n') => Ok(Some(&buf[..index])),
                    Some(_) => Err(LineError::Malformed("bare CR in a line")),
                    None => Ok(None),
                };
            }
            _ => {}
        }
    }
    if buf.len() > max {
        return Err(LineError::TooLong);
    }
    Ok(None)
}

/// A response to encode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// JSON (or text, per `content_type`); empty for 204.
    pub body: Vec<u8>,
    pub content_type: &'static str,
    /// The `Allow` header of a 405.
    pub allow: Option<&'static str>,
}

impl Response {
    /// A JSON response.
    pub fn json(status: u16, body: Vec<u8>) -> Self {
        Response {
            status,
            body,
            content_type: "application/json",
            allow: None,
        }
    }

    /// A response with no body (204).
    pub fn empty(status: u16) -> Self {
        Response {
            status,
            body: Vec::new(),
            content_type: "",
            allow: None,
        }
    }

    /// Appends the encoded response to `out`. `keep_alive` says whether the
    /// connection stays open; `minor_version` is the request's.
    pub fn encode(&self, minor_version: u8, keep_alive: bool, out: &mut Vec<u8>) {
        use std::io::Write;
        // Writing to a Vec cannot fail.
        let _ = write!(out, "HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        if self.status != 204 && self.status != 304 {
            if !self.content_type.is_empty() {
                let _ = write!(out, "Content-Type: {}\r\n", self.content_type);
            }
            let _ = write!(out, "Content-Length: {}\r\n", self.body.len());
        }
        if let Some(allow) = self.allow {
            let _ = write!(out, "Allow: {allow}\r\n");
        }
        if !keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if minor_version == 0 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
    }
}

/// The reason phrase for the statuses this daemon sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        507 => "Insufficient Storage",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::default()
    }

    fn complete(bytes: &[u8]) -> (Request, usize) {
        match parse(bytes, &limits()) {
            Ok(Parsed::Complete { request, consumed }) => (request, consumed),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bytes)),
        }
    }

    fn status(bytes: &[u8]) -> u16 {
        match parse(bytes, &limits()) {
            Err(e) => e.status,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bytes)),
        }
    }

    #[test]
    fn frames_a_curl_post() {
        let bytes = b"POST /v1/tasks HTTP/1.1\r\nHost: sprite\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\nContent-Type: application/json\r\nContent-Length: 35\r\n\r\n{ \"name\": \"agent\", \"expire\": \"1h\" }";
        let (request, consumed) = complete(bytes);
        assert_eq!(consumed, bytes.len());
        assert_eq!(request.method, Method::Post);
        assert_eq!(request.target, "/v1/tasks");
        assert!(request.keep_alive);
        assert_eq!(request.body, b"{ \"name\": \"agent\", \"expire\": \"1h\" }");
    }

    #[test]
    fn keep_alive_rules() {
        let cases: &[(&[u8], bool)] = &[
            (b"GET / HTTP/1.1\r\n\r\n", true),
            (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", false),
            (
                b"GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n",
                false,
            ),
            (b"GET / HTTP/1.0\r\n\r\n", false),
            (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true),
        ];
        for (bytes, keep_alive) in cases {
            assert_eq!(
                complete(bytes).0.keep_alive,
                *keep_alive,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn incomplete_is_not_an_error() {
        let full = b"PUT /v1/tasks/a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
        for cut in 0..full.len() {
            let parsed = parse(&full[..cut], &limits()).unwrap();
            assert!(
                matches!(parsed, Parsed::Partial(_)),
                "cut at {cut}: {parsed:?}"
            );
        }
        assert_eq!(
            parse(&full[..full.len() - 1], &limits()).unwrap(),
            Parsed::Partial(Progress::Body {
                expects_continue: false
            })
        );
    }

    #[test]
    fn pipelined_requests_are_framed_one_at_a_time() {
        let bytes = b"GET /a HTTP/1.1\r\n\r\nDELETE /b HTTP/1.1\r\n\r\n";
        let (first, consumed) = complete(bytes);
        assert_eq!(first.target, "/a");
        let (second, rest) = complete(&bytes[consumed..]);
        assert_eq!(second.method, Method::Delete);
        assert_eq!(consumed + rest, bytes.len());
    }

    #[test]
    fn chunked_bodies() {
        let bytes = b"POST /v1/tasks HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        let (request, consumed) = complete(bytes);
        assert_eq!(request.body, b"hello world");
        assert_eq!(&bytes[consumed..], b"NEXT");
        for cut in 0..consumed {
            assert!(
                matches!(parse(&bytes[..cut], &limits()), Ok(Parsed::Partial(_))),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn refusals_table() {
        let long_target = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(1100));
        let many_headers = format!("GET / HTTP/1.1\r\n{}\r\n", "X: y\r\n".repeat(33));
        let big_head = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(9000));
        let cases: Vec<(&[u8], u16)> =
            vec![
            (b"GET / HTTP/1.1\r\nContent-Length: +5\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nContent-Length: 0x5\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nContent-Length: \r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nContent-Length: 16385\r\n\r\n", 413),
            (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: ,\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nExpect: 200-ok\r\n\r\n", 417),
            (b"GET / HTTP/2.0\r\n\r\n", 505),
            (b"GET /\x01 HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", 400),
            (long_target.as_bytes(), 414),
            (many_headers.as_bytes(), 431),
            (big_head.as_bytes(), 431),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nz\r\n", 400),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello", 400),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXY", 400),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;\x01\r\n", 400),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4001\r\n", 413),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\n", 413),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nno colon\r\n\r\n", 400),
        ];
        for (bytes, expected) in cases {
            assert_eq!(
                status(bytes),
                expected,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        let long_ext = format!(
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;{}",
            "e".repeat(300)
        );
        assert_eq!(status(long_ext.as_bytes()), 400);
        let long_trailer = format!(
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: {}",
            "t".repeat(5000)
        );
        assert_eq!(status(long_trailer.as_bytes()), 431);
    }

    #[test]
    fn chunk_framing_cannot_outgrow_what_a_connection_buffers() {
        // Found while fuzzing: each body byte in its own chunk with a long
        // extension. Once the framing passes its bound, 413 at once instead
        // of waiting for bytes a connection would never buffer.
        let limits = limits();
        let mut wire = b"POST /v1/tasks HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        let body = format!("{}{}", r#"{"name":"agent","expire":"1h"}"#, " ".repeat(200));
        for byte in body.bytes() {
            wire.extend_from_slice(format!("1;{}\r\n", "e".repeat(250)).as_bytes());
            wire.push(byte);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"0\r\n\r\n");
        assert!(wire.len() > limits.max_request_bytes());
        assert_eq!(status(&wire), 413);
        // Every prefix that fits is still only incomplete.
        assert!(matches!(
            parse(&wire[..limits.max_request_bytes() / 2], &limits),
            Ok(Parsed::Partial(_))
        ));
        // Ordinary chunking of a full-size body fits.
        let mut fits = b"POST /v1/tasks HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for chunk in vec![b'x'; limits.max_body].chunks(1000) {
            fits.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            fits.extend_from_slice(chunk);
            fits.extend_from_slice(b"\r\n");
        }
        fits.extend_from_slice(b"0\r\n\r\n");
        assert!(fits.len() <= limits.max_request_bytes());
        assert!(matches!(parse(&fits, &limits), Ok(Parsed::Complete { .. })));
    }

    #[test]
    fn content_length_with_chunked_trusts_chunked_and_closes() {
        let bytes = b"POST / HTTP/1.1\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n";
        let (request, consumed) = complete(bytes);
        assert_eq!(request.body, b"hi");
        assert_eq!(consumed, bytes.len());
        assert!(!request.keep_alive);
    }

    #[test]
    fn expect_continue_is_reported_until_the_body_arrives() {
        let head = b"PUT /v1/tasks/a HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(
            parse(head, &limits()).unwrap(),
            Parsed::Partial(Progress::Body {
                expects_continue: true
            })
        );
        let mut full = head.to_vec();
        full.extend_from_slice(b"{}");
        assert!(matches!(
            parse(&full, &limits()),
            Ok(Parsed::Complete { .. })
        ));
        // On HTTP/1.0 the expectation is ignored.
        let old = b"PUT /x HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(
            parse(old, &limits()).unwrap(),
            Parsed::Partial(Progress::Body {
                expects_continue: false
            })
        );
        // A body that is too large is refused before it is sent.
        let big = b"PUT /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1000000\r\n\r\n";
        assert_eq!(status(big), 413);
    }

    #[test]
    fn blank_lines_forever_hit_the_head_limit() {
        let flood = b"\r\n".repeat(5000);
        assert_eq!(status(&flood), 431);
    }

    #[test]
    fn encode_then_parse_gives_the_same_request() {
        let sources: &[&[u8]] = &[
            b"PUT /v1/tasks/a HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\nabc",
            b"POST /v1/tasks HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
            b"DELETE /x HTTP/1.1\r\nConnection: close\r\n\r\n",
        ];
        for source in sources {
            let (request, _) = complete(source);
            let encoded = request.encode();
            let (again, consumed) = complete(&encoded);
            assert_eq!(again, request);
            assert_eq!(consumed, encoded.len());
        }
    }

    #[test]
    fn responses_encode() {
        let mut out = Vec::new();
        Response::json(201, b"{}".to_vec()).encode(1, true, &mut out);
        assert_eq!(out, b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}");
        out.clear();
        Response::empty(204).encode(0, true, &mut out);
        assert_eq!(
            out,
            b"HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n"
        );
        out.clear();
        let mut not_allowed = Response::json(405, b"{}".to_vec());
        not_allowed.allow = Some("GET, PUT, DELETE");
        not_allowed.encode(1, false, &mut out);
        assert!(out.starts_with(b"HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(out.windows(24).any(|w| w == b"Allow: GET, PUT, DELETE\r"));
        assert!(out.windows(17).any(|w| w == b"Connection: close"));
    }
}
