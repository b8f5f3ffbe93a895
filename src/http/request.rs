//! Request framing (RFC 9112): the request line, the headers that decide
//! how a request is framed (`Host`, `Content-Length`, `Transfer-Encoding`,
//! `Connection`, `Expect`), and the body, with every limit a setting
//! ([`Limits`]). Depends on httparse for the head's syntax and on
//! [`super::chunked`] for chunked bodies; nothing else of ours.
//!
//! [`parse`] is called with everything received so far and either frames one
//! request, says more bytes are needed ([`Parsed::Partial`], never an error),
//! or refuses with an [`HttpError`] after which the connection must be closed:
//! once framing is in doubt, nothing after it on the stream can be trusted.

use std::fmt;

use super::MAX_HEADERS;
use super::MAX_TRAILER_BYTES;
use super::chunked::{ChunkLimits, ChunkedDecoder, ChunkedError};

/// Size limits, settings of the daemon.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request head: request line and headers (past it: 414 while
    /// the request line is not complete, 431 otherwise).
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

/// A request method. The API uses five; anything else is kept for the 501.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Get,
    /// GET without the content (RFC 9110 section 9.3.2).
    Head,
    Post,
    Put,
    Delete,
    Other(String),
}

impl Method {
    fn from_token(token: &str) -> Method {
        match token {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
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
            Method::Head => "HEAD",
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
    /// A request with nothing in it yet: what [`parse_reusing`] fills.
    pub fn empty() -> Request {
        Request {
            method: Method::Get,
            target: String::new(),
            minor_version: 1,
            keep_alive: true,
            body: Vec::new(),
        }
    }

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

impl From<ChunkedError> for HttpError {
    fn from(refusal: ChunkedError) -> Self {
        HttpError::new(refusal.status(), refusal.to_string())
    }
}

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
/// Frames the first request in `buf`, in four steps: the head's syntax and
/// size, the request line, the headers that frame it (`Host` among them),
/// then the body.
///
/// # Errors
/// [`HttpError`] with the status to answer; the caller closes the connection
/// after answering.
pub fn parse(buf: &[u8], limits: &Limits) -> Result<Parsed, HttpError> {
    parse_reusing(buf, limits, &mut Request::empty())
}

/// [`parse`], building the request in `spare`'s target and body: a
/// connection hands back its last request, and its next one is read
/// into the same memory instead of two new allocations (about 500
/// instructions a request with 64 in flight, where each batch of frees
/// overflows malloc's per-thread cache; callgrind). `spare` is left
/// empty when a request is complete, and may be left holding partial
/// bytes otherwise.
///
/// # Errors
/// As [`parse`].
pub fn parse_reusing(
    buf: &[u8],
    limits: &Limits,
    spare: &mut Request,
) -> Result<Parsed, HttpError> {
    if buf.is_empty() {
        // Asked after every request a connection sends; nothing to hand
        // httparse, and no header array to set up.
        return Ok(Parsed::Partial(Progress::Head));
    }
    // Left uninitialized for httparse to fill: zeroing 32 headers (1 KiB)
    // for a request that sends three cost about 60 instructions.
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut []);
    let Some(head_len) = head_length(&mut head, &mut headers, buf, limits)? else {
        return Ok(Parsed::Partial(Progress::Head));
    };
    let method = Method::from_token(head.method.unwrap_or_default());
    let target = head.path.unwrap_or_default();
    check_target(target, limits)?;
    let minor_version = head.version.unwrap_or(1);
    let fields = HeadFields::collect(head.headers, minor_version)?;
    check_host(fields.hosts, fields.host_value, minor_version)?;
    let (framing, keep_alive) = fields.framing(minor_version, limits)?;
    let expects_continue = fields.expects_continue;
    let Some(body_len) = take_body(&buf[head_len..], framing, limits, &mut spare.body)? else {
        return Ok(Parsed::Partial(Progress::Body { expects_continue }));
    };
    let mut request = std::mem::replace(spare, Request::empty());
    request.method = method;
    request.target.clear();
    request.target.push_str(target);
    request.minor_version = minor_version;
    request.keep_alive = keep_alive;
    Ok(Parsed::Complete {
        request,
        consumed: head_len + body_len,
    })
}

/// The head's length once httparse accepts its syntax, `None` while it is
/// incomplete and could still fit in `max_head`.
///
/// # Errors
/// 431 or 414 past `max_head` ([`head_too_large`]), 431 for too many header
/// lines, 505 or 400 for a version httparse refused ([`version_refusal`]),
/// 400 for any other syntax error.
fn head_length<'h, 'b>(
    head: &mut httparse::Request<'h, 'b>,
    headers: &'h mut [std::mem::MaybeUninit<httparse::Header<'b>>],
    buf: &'b [u8],
    limits: &Limits,
) -> Result<Option<usize>, HttpError> {
    let head_len = match head.parse_with_uninit_headers(buf, headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            if buf.len() > limits.max_head {
                return Err(head_too_large(buf, limits));
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HttpError::new(
                431,
                format!("the request has more than {MAX_HEADERS} header lines"),
            ));
        }
        Err(httparse::Error::Version) => {
            return match version_refusal(buf) {
                Some(refusal) => Err(refusal),
                None if buf.len() > limits.max_head => Err(head_too_large(buf, limits)),
                None => Ok(None),
            };
        }
        Err(e) => return Err(HttpError::new(400, format!("malformed request head: {e}"))),
    };
    if head_len > limits.max_head {
        return Err(head_too_large(buf, limits));
    }
    Ok(Some(head_len))
}

/// The request target: at most `max_target` bytes (414), and ASCII (400):
/// RFC 9112 section 3.2 and RFC 3986; httparse lets UTF-8 through.
fn check_target(target: &str, limits: &Limits) -> Result<(), HttpError> {
    if target.len() > limits.max_target {
        return Err(HttpError::new(
            414,
            format!(
                "the request target is longer than {} bytes",
                limits.max_target
            ),
        ));
    }
    if !target.is_ascii() {
        return Err(HttpError::new(
            400,
            "the request target has bytes outside ASCII; percent-encode them",
        ));
    }
    Ok(())
}

/// What the headers say about framing and the connection, read in one pass.
struct HeadFields<'b> {
    content_length: Option<u64>,
    /// `Transfer-Encoding` codings in order, lowercase.
    codings: Vec<String>,
    /// A `close` connection option.
    close: bool,
    /// A `keep-alive` connection option.
    keep_alive_token: bool,
    expects_continue: bool,
    /// How many `Host` lines, and the last one's value.
    hosts: usize,
    host_value: &'b [u8],
}

impl<'b> HeadFields<'b> {
    /// Reads the framing headers in order; the first bad one is refused.
    ///
    /// # Errors
    /// 400 for an unreadable or conflicting `Content-Length`, an empty
    /// coding, or a non-ASCII header of these; 417 for an expectation
    /// other than `100-continue`.
    fn collect(
        headers: &[httparse::Header<'b>],
        minor_version: u8,
    ) -> Result<HeadFields<'b>, HttpError> {
        let mut fields = HeadFields {
            content_length: None,
            codings: Vec::new(),
            close: false,
            keep_alive_token: false,
            expects_continue: false,
            hosts: 0,
            host_value: b"",
        };
        for header in headers {
            let name = header.name;
            if name.eq_ignore_ascii_case("host") {
                fields.hosts += 1;
                fields.host_value = header.value;
            } else if name.eq_ignore_ascii_case("content-length") {
                let length = parse_content_length(header.value)?;
                if fields.content_length.is_some_and(|seen| seen != length) {
                    return Err(HttpError::new(400, "conflicting Content-Length headers"));
                }
                fields.content_length = Some(length);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                let value = header_text(header.value, "Transfer-Encoding")?;
                for coding in value.split(',').map(str::trim) {
                    if coding.is_empty() {
                        return Err(HttpError::new(400, "empty coding in Transfer-Encoding"));
                    }
                    fields.codings.push(coding.to_ascii_lowercase());
                }
            } else if name.eq_ignore_ascii_case("connection") {
                let value = header_text(header.value, "Connection")?;
                for token in value.split(',').map(str::trim) {
                    fields.close |= token.eq_ignore_ascii_case("close");
                    fields.keep_alive_token |= token.eq_ignore_ascii_case("keep-alive");
                }
            } else if name.eq_ignore_ascii_case("expect") {
                let value = header_text(header.value, "Expect")?;
                if !value.trim().eq_ignore_ascii_case("100-continue") {
                    return Err(HttpError::new(
                        417,
                        format!(
                            "unsupported expectation \"{}\"; only 100-continue is known",
                            value.trim()
                        ),
                    ));
                }
                // RFC 9110 10.1.1: ignored on HTTP/1.0.
                fields.expects_continue = minor_version == 1;
            }
        }
        Ok(fields)
    }

    /// How the body is delimited, and whether the connection may carry
    /// another request after this one.
    ///
    /// # Errors
    /// 413 for a `Content-Length` over `max_body`; for `Transfer-Encoding`,
    /// 400 on HTTP/1.0 or unless it ends in one `chunked`, 501 for any
    /// other coding before it.
    fn framing(&self, minor_version: u8, limits: &Limits) -> Result<(Framing, bool), HttpError> {
        let keep_alive = match minor_version {
            0 => self.keep_alive_token && !self.close,
            _ => !self.close,
        };
        let codings = &self.codings;
        let Some((last, before)) = codings.split_last() else {
            let length = self.content_length.unwrap_or(0);
            if length > limits.max_body as u64 {
                return Err(body_too_large(limits));
            }
            return Ok((Framing::Length(length as usize), keep_alive));
        };
        if minor_version == 0 {
            return Err(HttpError::new(
                400,
                "Transfer-Encoding is not allowed in HTTP/1.0",
            ));
        }
        if let Some(other) = before.iter().find(|c| *c != "chunked") {
            return Err(HttpError::new(
                501,
                format!(
                    "transfer coding \"{other}\" is not supported; send the body with chunked or Content-Length"
                ),
            ));
        }
        if last != "chunked" || !before.is_empty() {
            return Err(HttpError::new(
                400,
                "Transfer-Encoding must end with a single chunked coding",
            ));
        }
        // Anti-smuggling: with a Content-Length too, trust chunked and end
        // the connection after the response.
        Ok((
            Framing::Chunked,
            keep_alive && self.content_length.is_none(),
        ))
    }
}

/// RFC 9112 section 3.2: Host is required in HTTP/1.1, once at most in any
/// version, and must be a valid uri-host [":" port].
fn check_host(hosts: usize, value: &[u8], minor_version: u8) -> Result<(), HttpError> {
    match hosts {
        0 if minor_version == 1 => {
            return Err(HttpError::new(
                400,
                "the request has no Host header; HTTP/1.1 requires one (curl sends it)",
            ));
        }
        0 | 1 => {}
        _ => {
            return Err(HttpError::new(
                400,
                "the request has more than one Host header; send exactly one",
            ));
        }
    }
    if !is_valid_host(value) {
        return Err(HttpError::new(
            400,
            "the Host header is not a host name with an optional port",
        ));
    }
    Ok(())
}

/// The body at the start of `rest`, and the bytes its framing took; `None`
/// while it is still arriving.
///
/// # Errors
/// The decoder's refusal of a chunked body (400, 413, 431), or 413 once
/// its framing passes [`Limits::max_encoded_body`] unfinished.
fn take_body(
    rest: &[u8],
    framing: Framing,
    limits: &Limits,
    body: &mut Vec<u8>,
) -> Result<Option<usize>, HttpError> {
    body.clear();
    match framing {
        Framing::Length(length) => {
            if rest.len() < length {
                return Ok(None);
            }
            body.extend_from_slice(&rest[..length]);
            Ok(Some(length))
        }
        Framing::Chunked => {
            // Only the first `max_encoded_body` bytes may hold the body.
            let limit = limits.max_encoded_body();
            let window = &rest[..rest.len().min(limit)];
            let mut decoder = ChunkedDecoder::new(ChunkLimits::with_max_body(limits.max_body));
            let used = decoder.decode(window, body)?;
            if decoder.is_done() {
                Ok(Some(used))
            } else if rest.len() > limit {
                Err(HttpError::new(
                    413,
                    format!(
                        "the chunked request body takes more than {limit} bytes with its framing"
                    ),
                ))
            } else {
                Ok(None)
            }
        }
    }
}

/// The refusal of a head past `max_head`: 414 while its request line is not
/// complete (the target is what is long), 431 otherwise.
fn head_too_large(buf: &[u8], limits: &Limits) -> HttpError {
    let line_start = skip_empty_lines(buf);
    let line = &buf[line_start..buf.len().min(line_start + limits.max_head)];
    if !line.is_empty() && !line.contains(&b'\n') {
        return HttpError::new(
            414,
            format!(
                "the request line is longer than {} bytes; the target is too long",
                limits.max_head
            ),
        );
    }
    HttpError::new(
        431,
        format!("the request head is larger than {} bytes", limits.max_head),
    )
}

/// Where the request line starts: httparse skips empty lines before it (RFC
/// 9112 section 2.2).
pub fn skip_empty_lines(buf: &[u8]) -> usize {
    let mut at = 0;
    loop {
        if buf[at..].starts_with(b"\r\n") {
            at += 2;
        } else if buf[at..].starts_with(b"\n") {
            at += 1;
        } else {
            return at;
        }
    }
}

/// The status for a request line whose version httparse refused, or `None`
/// while the line is incomplete and could still be well-formed.
///
/// A well-formed `HTTP/x.y` that is not 1.0 or 1.1 is 505 (RFC 9110 section
/// 15.6.6); anything else in its place is a malformed request line, 400
/// (RFC 9112 section 3): `HTTP/1`, `HTTP/01.1`, `http/1.1`, a space inside
/// the target, or whitespace after the version.
fn version_refusal(buf: &[u8]) -> Option<HttpError> {
    let malformed = || {
        Some(HttpError::new(
            400,
            "malformed request line; send METHOD TARGET HTTP/1.1",
        ))
    };
    let start = skip_empty_lines(buf);
    let rest = &buf[start..];
    let (line, complete) = match rest.iter().position(|&b| b == b'\n') {
        Some(end) => (
            rest[..end].strip_suffix(b"\r").unwrap_or(&rest[..end]),
            true,
        ),
        None => (rest.strip_suffix(b"\r").unwrap_or(rest), false),
    };
    // httparse got past `METHOD SP TARGET SP`; the version is the rest.
    let mut fields = line.splitn(3, |&b| b == b' ');
    let version = match (fields.next(), fields.next(), fields.next()) {
        (Some(_), Some(_), Some(version)) => version,
        _ => return malformed(),
    };
    const SHAPE: &[u8; 8] = b"HTTP/0.0";
    let fits = |(index, &byte): (usize, &u8)| match SHAPE[index] {
        b'0' => byte.is_ascii_digit(),
        expected => byte == expected,
    };
    if version.len() > SHAPE.len() || !version.iter().enumerate().all(fits) {
        return malformed();
    }
    if !complete || version.len() < SHAPE.len() {
        return if complete { malformed() } else { None };
    }
    Some(HttpError::new(505, "only HTTP/1.0 and HTTP/1.1 are served"))
}

/// RFC 9112 section 3.2 with RFC 3986 section 3.2.2: `uri-host [":" port]`,
/// where uri-host is an IP literal in brackets or a reg-name (unreserved,
/// percent-encoded and sub-delims characters). Empty is valid: the target
/// has no authority. A comma is refused although reg-name allows it: no
/// name resolves with one, and a comma list is what two Host lines folded
/// into one look like. No userinfo, path or whitespace.
fn is_valid_host(value: &[u8]) -> bool {
    let value = value.trim_ascii();
    let (host, port) = if value.starts_with(b"[") {
        let Some(close) = value.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &value[1..close];
        let literal_ok =
            !literal.is_empty() && literal.iter().all(|&b| is_reg_name_byte(b) || b == b':');
        if !literal_ok {
            return false;
        }
        (&value[..0], &value[close + 1..])
    } else {
        match value.iter().position(|&b| b == b':') {
            Some(colon) => (&value[..colon], &value[colon..]),
            None => (value, &value[value.len()..]),
        }
    };
    let port_ok = match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    };
    // Most hosts are plain names: one table load a byte. Only one that
    // fails that (a percent-encoding, or a byte no host may hold) is
    // walked below.
    if host.iter().all(|&b| is_reg_name_byte(b)) {
        return port_ok;
    }
    let mut at = 0;
    while at < host.len() {
        if host[at] == b'%' {
            let hex = host.get(at + 1..at + 3);
            if !hex.is_some_and(|pair| pair.iter().all(u8::is_ascii_hexdigit)) {
                return false;
            }
            at += 3;
        } else if is_reg_name_byte(host[at]) {
            at += 1;
        } else {
            return false;
        }
    }
    port_ok
}

/// RFC 3986 unreserved and sub-delims, without the comma: one load from
/// [`REG_NAME`]. The chain of compares below, in a walk that also looked
/// for `%` at every byte, took about 110 instructions for every request's
/// `Host: sprite` (callgrind).
fn is_reg_name_byte(byte: u8) -> bool {
    REG_NAME[usize::from(byte)]
}

/// [`reg_name_byte`] of every byte.
const REG_NAME: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        table[byte] = reg_name_byte(byte as u8);
        byte += 1;
    }
    table
};

const fn reg_name_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || matches!(
            byte,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b';'
                | b'='
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
            (b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", true),
            (
                b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
                false,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Close\r\n\r\n",
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
        let full = b"PUT /v1/tasks/a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello";
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
        let bytes = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nDELETE /b HTTP/1.1\r\nHost: h\r\n\r\n";
        let (first, consumed) = complete(bytes);
        assert_eq!(first.target, "/a");
        let (second, rest) = complete(&bytes[consumed..]);
        assert_eq!(second.method, Method::Delete);
        assert_eq!(consumed + rest, bytes.len());
    }

    #[test]
    fn chunked_bodies() {
        let bytes = b"POST /v1/tasks HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
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
        let long_target = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(1100));
        let many_headers = format!("GET / HTTP/1.1\r\nHost: h\r\n{}\r\n", "X: y\r\n".repeat(33));
        let big_head = format!("GET / HTTP/1.1\r\nHost: h\r\nX: {}", "a".repeat(9000));
        let cases: Vec<(&[u8], u16)> =
            vec![
            (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x5\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: \r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 16385\r\n\r\n", 413),
            (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
            (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: ,\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 200-ok\r\n\r\n", 417),
            (b"GET / HTTP/2.0\r\n\r\n", 505),
            (b"GET /\x01 HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: h\r\nBad Header: x\r\n\r\n", 400),
            (long_target.as_bytes(), 414),
            (many_headers.as_bytes(), 431),
            (big_head.as_bytes(), 431),
            (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nz\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello", 400),
            (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXY", 400),
            (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;\x01\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n4001\r\n", 413),
            (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\n", 413),
            (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nno colon\r\n\r\n", 400),
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
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1;{}",
            "e".repeat(300)
        );
        assert_eq!(status(long_ext.as_bytes()), 400);
        let long_trailer = format!(
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: {}",
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
        let mut wire =
            b"POST /v1/tasks HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
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
        let mut fits =
            b"POST /v1/tasks HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
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
        let bytes = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n";
        let (request, consumed) = complete(bytes);
        assert_eq!(request.body, b"hi");
        assert_eq!(consumed, bytes.len());
        assert!(!request.keep_alive);
    }

    #[test]
    fn expect_continue_is_reported_until_the_body_arrives() {
        let head = b"PUT /v1/tasks/a HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n";
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
        let big = b"PUT /x HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1000000\r\n\r\n";
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
            b"POST /v1/tasks HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
            b"DELETE /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
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
    fn request_lines() {
        // RFC 9112 section 3: a malformed request line is 400; RFC 9110
        // section 15.6.6: a well-formed version we do not serve is 505.
        let cases: &[(&[u8], u16)] = &[
            (b"GET / HTTP/1\r\nHost: h\r\n\r\n", 400),
            (b"GET / HTTP/01.1\r\nHost: h\r\n\r\n", 400),
            (b"GET / HTTP/1.1 \r\nHost: h\r\n\r\n", 400),
            (b"GET / http/1.1\r\nHost: h\r\n\r\n", 400),
            (b"GET /a b HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            (b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            (b"GET / HTTP/1.1.1\r\nHost: h\r\n\r\n", 400),
            (b"GET / HTTP/2.0\r\n\r\n", 505),
            (b"GET / HTTP/0.9\r\n\r\n", 505),
            (b"GET / HTTP/1.2\r\n\r\n", 505),
            (b"\r\nGET / HTTP/3.0\r\n\r\n", 505),
            (b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            (b"GET /?q=\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            (b"GET /\xff HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        ];
        for (bytes, expected) in cases {
            assert_eq!(
                status(bytes),
                *expected,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        // A version still arriving is incomplete, not refused.
        for partial in [&b"GET / HTTP/2"[..], b"GET / HTTP/2.0", b"GET / HTTP/2.0\r"] {
            assert_eq!(
                parse(partial, &limits()),
                Ok(Parsed::Partial(Progress::Head)),
                "{partial:?}"
            );
        }
    }

    #[test]
    fn host_rules() {
        // RFC 9112 section 3.2.
        let cases: &[(&[u8], Option<u16>)] = &[
            (b"GET / HTTP/1.1\r\nHost: sprite\r\n\r\n", None),
            (b"GET / HTTP/1.1\r\nHost: sprite:80\r\n\r\n", None),
            (b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n", None),
            (b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", None),
            (b"GET / HTTP/1.1\r\nHost: xn--caf-dma.example\r\n\r\n", None),
            (b"GET / HTTP/1.1\r\nHost: a%41b\r\n\r\n", None),
            (b"GET / HTTP/1.1\r\nHost:\r\n\r\n", None),
            (
                b"GET http://sprite/v1/tasks HTTP/1.1\r\nHost: other\r\n\r\n",
                None,
            ),
            (b"GET / HTTP/1.0\r\n\r\n", None),
            (b"GET / HTTP/1.0\r\nHost: sprite\r\n\r\n", None),
            (b"GET / HTTP/1.1\r\n\r\n", Some(400)),
            (b"GET http://sprite/ HTTP/1.1\r\n\r\n", Some(400)),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", Some(400)),
            (b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", Some(400)),
            (b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n", Some(400)),
            (b"GET / HTTP/1.1\r\nHost: user@sprite\r\n\r\n", Some(400)),
            (b"GET / HTTP/1.1\r\nHost: sprite/v1\r\n\r\n", Some(400)),
            (b"GET / HTTP/1.1\r\nHost: a, b\r\n\r\n", Some(400)),
            (b"GET / HTTP/1.1\r\nHost: a,b\r\n\r\n", Some(400)),
            (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", Some(400)),
            (b"GET / HTTP/1.1\r\nHost: sprite:8x\r\n\r\n", Some(400)),
            (b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", Some(400)),
            (b"GET / HTTP/1.1\r\nHost: a%4\r\n\r\n", Some(400)),
            (b"GET / HTTP/1.1\r\nHost: caf\xc3\xa9\r\n\r\n", Some(400)),
        ];
        for (bytes, expected) in cases {
            let got = match parse(bytes, &limits()) {
                Ok(Parsed::Complete { .. }) => None,
                Err(e) => Some(e.status),
                other => panic!("{other:?}"),
            };
            assert_eq!(got, *expected, "{:?}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn a_request_line_past_the_head_limit_is_414_and_headers_past_it_431() {
        let long_line = format!("GET /v1/tasks/{} HTTP/1.1\r\n", "n".repeat(10_000));
        assert_eq!(status(long_line.as_bytes()), 414);
        // Still arriving: the same answer once past the limit.
        assert_eq!(status(&long_line.as_bytes()[..9000]), 414);
        let long_header = format!(
            "GET / HTTP/1.1\r\nHost: h\r\nX: {}\r\n\r\n",
            "x".repeat(10_000)
        );
        assert_eq!(status(long_header.as_bytes()), 431);
        let blank_lines = b"\r\n".repeat(5000);
        assert_eq!(status(&blank_lines), 431);
    }

    #[test]
    fn chunk_extensions_follow_the_grammar() {
        // RFC 9112 section 7.1.1.
        let framed = |line: &str| {
            let bytes = format!(
                "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n{line}\r\nhello\r\n0\r\n\r\n"
            );
            match parse(bytes.as_bytes(), &limits()) {
                Ok(Parsed::Complete { request, .. }) => {
                    assert_eq!(request.body, b"hello", "{line:?}");
                    None
                }
                Err(e) => Some(e.status),
                other => panic!("{line:?}: {other:?}"),
            }
        };
        let cases: &[(&str, Option<u16>)] = &[
            ("5", None),
            ("05", None),
            ("5;a", None),
            ("5;a=b", None),
            ("5;a=b;c", None),
            ("5 ;a", None),
            ("5; a = b", None),
            ("5;a=\"quoted \\\" text\"", None),
            ("5;a=\"\";b=c", None),
            ("5;", Some(400)),
            ("5;bad[=x", Some(400)),
            ("5;a=", Some(400)),
            ("5;=b", Some(400)),
            ("5 ", Some(400)),
            ("5;a ", Some(400)),
            ("5;a=b c", Some(400)),
            ("5;a=\"open", Some(400)),
            ("5;a=\"x\"y", Some(400)),
            ("5;a\x01", Some(400)),
            ("0x5", Some(400)),
            ("+5", Some(400)),
            (" 5", Some(400)),
            ("", Some(400)),
        ];
        for (line, expected) in cases {
            assert_eq!(framed(line), *expected, "{line:?}");
        }
    }

    #[test]
    fn a_chunk_line_that_cannot_become_valid_is_refused_at_once() {
        // No CRLF has arrived: each of these is refused on its bad byte,
        // not after the body timeout.
        let head = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
        for (rest, expected) in [
            ("z", 400),
            ("5;[", 400),
            ("5 x", 400),
            ("5;a=\"\x01", 400),
            ("4001", 413),
        ] {
            let bytes = format!("{head}{rest}");
            assert_eq!(status(bytes.as_bytes()), expected, "{rest:?}");
        }
        // A prefix that can still become valid is only incomplete.
        for rest in ["5", "5;", "5;a", "5;a=", "5;a=\"x", "5\r"] {
            let bytes = format!("{head}{rest}");
            assert!(
                matches!(parse(bytes.as_bytes(), &limits()), Ok(Parsed::Partial(_))),
                "{rest:?}"
            );
        }
        // Chunk data followed by anything but CRLF, as soon as it shows.
        let bytes = format!("{head}2\r\n{{}}X");
        assert_eq!(status(bytes.as_bytes()), 400);
    }

    #[test]
    fn trailer_lines_are_field_lines() {
        let with = |trailer: &str| {
            let bytes = format!(
                "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n{trailer}\r\n\r\n"
            );
            parse(bytes.as_bytes(), &limits())
                .map(|_| ())
                .map_err(|e| e.status)
        };
        assert_eq!(with("X-A: 1"), Ok(()));
        assert_eq!(with("X-A:"), Ok(()));
        assert_eq!(with("X-A : 1"), Err(400));
        assert_eq!(with(": 1"), Err(400));
        assert_eq!(with("X-A: \x01"), Err(400));
    }

    #[test]
    fn head_is_a_method_of_its_own() {
        let (request, _) = complete(b"HEAD /v1/tasks HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(request.method, Method::Head);
        assert_eq!(request.method.as_str(), "HEAD");
    }
}
