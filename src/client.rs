//! The client library of `sprite-env`: a small blocking HTTP/1.1 client over
//! the daemon's Unix socket, the argument rewriting behind `sprite-env curl`,
//! the rules of `sprite-env tasks hold`, and the text the commands print.
//!
//! Everything but [`Client`] and [`EventStream`] is pure and takes `now` as an
//! argument: the response framing ([`parse_head`], [`ChunkedDecoder`],
//! [`LineSplitter`]), [`curl_args`], [`check_interval`] and the renderers.
//! Depends on [`crate::api`] (the wire types and paths), [`crate::expire`]
//! and [`crate::time`]; nothing here knows the reactor or the store.
//!
//! Every exchange is bounded: connecting, writing the request and reading the
//! response all happen within one deadline, and every buffer has a named
//! limit, so a daemon that hangs or misbehaves produces an error, not a
//! stuck client. The one exception is an event stream after its head: it is
//! silent while nothing changes and ends when the daemon closes it.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::api::{EVENTS_PATH, STATUS_PATH, TASKS_PATH, TaskList, TaskView};
use crate::time::Timestamp;

/// The virtual host of every request, as the seed documents it.
pub const HOST: &str = "sprite";

/// The URL prefix `sprite-env curl` puts before an API path.
pub const BASE_URL: &str = "http://sprite";

/// Time allowed for one whole request: connect, send, and read the complete
/// response. The daemon answers a change after one `fdatasync`, normally in
/// milliseconds; a daemon that takes longer than this is stuck or its disk is
/// failing, and a person at a terminal (or a holder due to refresh) should
/// hear about it rather than wait.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest response head accepted. The daemon's heads are under 300 bytes;
/// anything near this is not our daemon.
pub const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Most header lines in a response (httparse needs a caller-owned array).
const MAX_RESPONSE_HEADERS: usize = 32;

/// Largest response body read into memory. A list of the daemon's maximum
/// 10,000 tasks is about 1.5 MB; the bound keeps a runaway peer from
/// exhausting memory.
pub const MAX_RESPONSE_BODY: usize = 16 * 1024 * 1024;

/// Longest chunk-size line (with extensions) in a chunked response. The
/// daemon sends bare hex sizes of a few digits.
pub const MAX_CHUNK_LINE: usize = 1024;

/// Largest trailer section of a chunked response. The daemon sends none.
pub const MAX_TRAILERS: usize = 16 * 1024;

/// Longest line of an event stream. An event is about 200 bytes; a task
/// name is at most 128.
pub const MAX_EVENT_LINE: usize = 64 * 1024;

/// The shortest `--every` of a hold. A refresh is one request and one fsync;
/// more often than this is load for no safety.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// The longest wait before retrying a failed refresh. Shorter than the
/// interval when the interval is long, so a daemon restart costs seconds of
/// margin, not minutes.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

/// Why a request failed. `Display` is a lowercase sentence a user can act on.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// Nothing exists at the socket path.
    NoSocket(PathBuf),
    /// The path exists but nothing accepts connections on it.
    NotListening(PathBuf),
    /// Connecting failed otherwise (permissions, not a socket, too long).
    Connect { socket: PathBuf, source: io::Error },
    /// The request did not complete within its deadline.
    Timeout { socket: PathBuf, after: Duration },
    /// The connection failed mid-exchange.
    Io(io::Error),
    /// The peer did not speak HTTP as the daemon does.
    Protocol(String),
    /// The daemon answered with an error status; `message` is its `error`.
    Api { status: u16, message: String },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const HINT: &str =
            "is sprite-tasksd running? (--socket or SPRITE_API_SOCKET choose the socket)";
        match self {
            ClientError::NoSocket(path) => {
                write!(f, "no Tasks API socket at {}; {HINT}", path.display())
            }
            ClientError::NotListening(path) => write!(
                f,
                "nothing is listening on {} (a socket left by a stopped daemon?); {HINT}",
                path.display()
            ),
            ClientError::Connect { socket, source } => {
                write!(f, "cannot connect to {}: {source}", socket.display())
            }
            ClientError::Timeout { socket, after } => write!(
                f,
                "the daemon on {} did not answer within {}; it may be stuck or its disk failing",
                socket.display(),
                humantime::format_duration(*after)
            ),
            ClientError::Io(source) => write!(f, "the connection to the daemon failed: {source}"),
            ClientError::Protocol(what) => write!(f, "unexpected answer from the daemon: {what}"),
            ClientError::Api { status, message } => write!(f, "{message} (HTTP {status})"),
        }
    }
}

impl std::error::Error for ClientError {}

/// A complete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header of that name, case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        header_value(&self.headers, name)
    }

    /// The daemon's `{"error": ...}` sentence, or the body as text.
    pub fn error_message(&self) -> String {
        error_message(self.status, &self.body)
    }
}

fn header_value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The `error` field of a JSON error body; otherwise the body as text (cut
/// short), or the bare status.
pub fn error_message(status: u16, body: &[u8]) -> String {
    /// Enough of a foreign error page to recognise it.
    const SHOWN: usize = 200;
    if let Ok(value) = serde_json::from_slice::<Value>(body)
        && let Some(message) = value.get("error").and_then(Value::as_str)
    {
        return message.to_owned();
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        format!("the daemon answered HTTP {status} without a message")
    } else {
        text.chars().take(SHOWN).collect()
    }
}

/// A client of one daemon socket. Each request uses its own connection.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

impl Client {
    /// A client of the daemon on `socket`, with [`REQUEST_TIMEOUT`].
    pub fn new(socket: impl Into<PathBuf>) -> Client {
        Client {
            socket: socket.into(),
            timeout: REQUEST_TIMEOUT,
        }
    }

    /// The same client with another per-request deadline.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Opens a connection and closes it: is a daemon accepting on the socket?
    ///
    /// # Errors
    /// As for connecting in [`request`](Self::request).
    pub fn probe(&self) -> Result<(), ClientError> {
        self.connect(Instant::now() + self.timeout).map(drop)
    }

    /// Sends one request (with a JSON body if given) and reads the whole
    /// response, whatever its status.
    ///
    /// # Errors
    /// [`ClientError`] for a missing or dead socket, a timeout, an I/O error
    /// or a response that is not HTTP as the daemon speaks it. An error
    /// status is not an error here; see [`call`](Self::call).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Response, ClientError> {
        let deadline = Instant::now() + self.timeout;
        let mut stream = self.connect(deadline)?;
        let body = body.map(Value::to_string);
        let head = request_head(method, path, body.as_deref(), "application/json", true);
        self.write_all(&mut stream, head.as_bytes(), deadline)?;
        if let Some(body) = &body {
            self.write_all(&mut stream, body.as_bytes(), deadline)?;
        }
        let mut reader = DeadlineReader {
            stream: &mut stream,
            deadline: Some(deadline),
            client: self,
        };
        let mut buffer = Vec::new();
        let head = read_head(&mut reader, &mut buffer)?;
        let body = read_body(&mut reader, &head, method, buffer)?;
        Ok(Response {
            status: head.status,
            headers: head.headers,
            body,
        })
    }

    /// As [`request`](Self::request), with any status outside 200..=299
    /// turned into [`ClientError::Api`] carrying the daemon's message.
    ///
    /// # Errors
    /// As for [`request`](Self::request), and [`ClientError::Api`].
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Response, ClientError> {
        let response = self.request(method, path, body)?;
        if (200..300).contains(&response.status) {
            Ok(response)
        } else {
            Err(ClientError::Api {
                status: response.status,
                message: response.error_message(),
            })
        }
    }

    /// `GET /v1/tasks`: the raw body and the decoded list.
    ///
    /// # Errors
    /// As for [`call`](Self::call), and [`ClientError::Protocol`] for a body
    /// that is not a task list.
    pub fn list(&self) -> Result<(Vec<u8>, TaskList), ClientError> {
        let response = self.call("GET", TASKS_PATH, None)?;
        let list = decode_json(&response.body)?;
        Ok((response.body, list))
    }

    /// `GET /v1/tasks/NAME`.
    ///
    /// # Errors
    /// As for [`list`](Self::list); 404 is [`ClientError::Api`].
    pub fn get(&self, name: &str) -> Result<(Vec<u8>, TaskView), ClientError> {
        self.task_call("GET", name, None)
    }

    /// `POST /v1/tasks`: creates a task (409 if the name is live).
    ///
    /// # Errors
    /// As for [`list`](Self::list).
    pub fn create(&self, name: &str, expire: &Value) -> Result<(Vec<u8>, TaskView), ClientError> {
        let body = serde_json::json!({ "name": name, "expire": expire });
        let response = self.call("POST", TASKS_PATH, Some(&body))?;
        let task = decode_json(&response.body)?;
        Ok((response.body, task))
    }

    /// `PUT /v1/tasks/NAME`: refreshes a task, creating it if missing.
    ///
    /// # Errors
    /// As for [`list`](Self::list).
    pub fn refresh(&self, name: &str, expire: &Value) -> Result<(Vec<u8>, TaskView), ClientError> {
        let body = serde_json::json!({ "expire": expire });
        self.task_call("PUT", name, Some(&body))
    }

    /// `DELETE /v1/tasks/NAME`.
    ///
    /// # Errors
    /// As for [`call`](Self::call); 404 is [`ClientError::Api`].
    pub fn delete(&self, name: &str) -> Result<(), ClientError> {
        self.call("DELETE", &task_path(name), None).map(drop)
    }

    /// `GET /v1/status`: the raw body and its fields.
    ///
    /// # Errors
    /// As for [`list`](Self::list).
    pub fn status(&self) -> Result<(Vec<u8>, Status), ClientError> {
        let response = self.call("GET", STATUS_PATH, None)?;
        let status = decode_json(&response.body)?;
        Ok((response.body, status))
    }

    fn task_call(
        &self,
        method: &str,
        name: &str,
        body: Option<&Value>,
    ) -> Result<(Vec<u8>, TaskView), ClientError> {
        let response = self.call(method, &task_path(name), body)?;
        let task = decode_json(&response.body)?;
        Ok((response.body, task))
    }

    /// `GET /v1/events[?since=SEQ]`: opens the event stream. The head must
    /// arrive within the deadline; lines then come as the daemon sends them,
    /// with no deadline.
    ///
    /// # Errors
    /// As for [`call`](Self::call).
    pub fn events(&self, since: Option<u64>) -> Result<EventStream, ClientError> {
        let deadline = Instant::now() + self.timeout;
        let mut stream = self.connect(deadline)?;
        let path = match since {
            Some(seq) => format!("{EVENTS_PATH}?since={seq}"),
            None => EVENTS_PATH.to_owned(),
        };
        // No `Connection: close` and no half-close: the daemon ends a stream
        // whose client has closed its side.
        let head = request_head("GET", &path, None, "application/x-ndjson", false);
        self.write_all(&mut stream, head.as_bytes(), deadline)?;
        let mut buffer = Vec::new();
        let head = {
            let mut reader = DeadlineReader {
                stream: &mut stream,
                deadline: Some(deadline),
                client: self,
            };
            read_head(&mut reader, &mut buffer)?
        };
        if !(200..300).contains(&head.status) {
            let mut reader = DeadlineReader {
                stream: &mut stream,
                deadline: Some(deadline),
                client: self,
            };
            let body = read_body(&mut reader, &head, "GET", buffer)?;
            return Err(ClientError::Api {
                status: head.status,
                message: error_message(head.status, &body),
            });
        }
        stream.set_read_timeout(None).map_err(ClientError::Io)?;
        let framing = match body_framing(&head, "GET")? {
            BodyFraming::Chunked => Some(ChunkedDecoder::new()),
            BodyFraming::UntilClose => None,
            BodyFraming::Length(_) | BodyFraming::Empty => {
                return Err(ClientError::Protocol(
                    "the event stream is neither chunked nor open-ended".into(),
                ));
            }
        };
        let mut events = EventStream {
            stream,
            chunked: framing,
            lines: LineSplitter::new(MAX_EVENT_LINE),
            backlog: VecDeque::new(),
            ended: false,
        };
        events.feed(&buffer)?;
        Ok(events)
    }

    fn write_all(
        &self,
        stream: &mut UnixStream,
        bytes: &[u8],
        deadline: Instant,
    ) -> Result<(), ClientError> {
        let left = self.time_left(deadline)?;
        stream
            .set_write_timeout(Some(left))
            .map_err(ClientError::Io)?;
        stream.write_all(bytes).map_err(|e| self.io_error(e))
    }

    fn time_left(&self, deadline: Instant) -> Result<Duration, ClientError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(self.timeout_error())
        } else {
            Ok(left)
        }
    }

    fn timeout_error(&self) -> ClientError {
        ClientError::Timeout {
            socket: self.socket.clone(),
            after: self.timeout,
        }
    }

    fn io_error(&self, error: io::Error) -> ClientError {
        match error.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => self.timeout_error(),
            _ => ClientError::Io(error),
        }
    }

    /// Connects within `deadline`. A Unix-socket connect completes at once
    /// unless the daemon's listen backlog is full (it is not accepting); the
    /// send timeout set before `connect` bounds that wait.
    fn connect(&self, deadline: Instant) -> Result<UnixStream, ClientError> {
        let left = self.time_left(deadline)?;
        connect_unix(&self.socket, left).map_err(|source| match source.raw_os_error() {
            Some(libc::ENOENT) => ClientError::NoSocket(self.socket.clone()),
            Some(libc::ECONNREFUSED) => ClientError::NotListening(self.socket.clone()),
            Some(libc::EAGAIN | libc::EINPROGRESS | libc::ETIMEDOUT) => self.timeout_error(),
            _ => ClientError::Connect {
                socket: self.socket.clone(),
                source,
            },
        })
    }
}

/// The fields of `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Status {
    pub held: bool,
    pub tasks: u64,
    pub held_until: Option<String>,
    pub idle_since: Option<String>,
}

fn decode_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(body).map_err(|e| {
        ClientError::Protocol(format!(
            "the body is not what the API documents ({e}): {:?}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ))
    })
}

/// `connect(2)` on a fresh `AF_UNIX` stream socket whose send timeout (which
/// Linux applies to a connect waiting on a full backlog) is `timeout`.
fn connect_unix(path: &Path, timeout: Duration) -> io::Result<UnixStream> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain old data; all zeroes is a valid value.
    let mut address: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= address.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a socket path must be under {} bytes without NUL; this one is {}",
                address.sun_path.len(),
                bytes.len()
            ),
        ));
    }
    address.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (slot, byte) in address.sun_path.iter_mut().zip(bytes) {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let raw = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a descriptor we just opened and own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let stream = UnixStream::from(fd);
    stream.set_write_timeout(Some(timeout.max(Duration::from_millis(1))))?;
    let length = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    loop {
        // SAFETY: `address` is a valid sockaddr_un and `length` is within it.
        let result = unsafe {
            libc::connect(
                stream.as_raw_fd(),
                (&raw const address).cast::<libc::sockaddr>(),
                length as libc::socklen_t,
            )
        };
        if result == 0 {
            return Ok(stream);
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// The request line and headers.
fn request_head(method: &str, path: &str, body: Option<&str>, accept: &str, close: bool) -> String {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nUser-Agent: sprite-env/{}\r\nAccept: {accept}\r\n",
        env!("CARGO_PKG_VERSION")
    );
    if close {
        head.push_str("Connection: close\r\n");
    }
    if let Some(body) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    head
}

/// The path of one task, its name percent-encoded so that any name (valid
/// or not) reaches the daemon as one path segment and gets its verdict.
pub fn task_path(name: &str) -> String {
    let mut path = format!("{TASKS_PATH}/");
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~:@".contains(&byte) {
            path.push(char::from(byte));
        } else {
            path.push_str(&format!("%{byte:02X}"));
        }
    }
    path
}

/// The `expire` value for a command-line duration: digits alone are
/// seconds (a JSON integer); anything else goes as a string for the daemon
/// to read, so the CLI accepts exactly what the API accepts.
pub fn expire_value(text: &str) -> Value {
    if !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && let Ok(seconds) = text.parse::<u64>()
    {
        return Value::from(seconds);
    }
    Value::from(text)
}

/// Reads with the remaining time of a deadline as the read timeout, so a
/// peer that trickles bytes cannot stretch the exchange past it.
struct DeadlineReader<'a> {
    stream: &'a mut UnixStream,
    deadline: Option<Instant>,
    client: &'a Client,
}

impl DeadlineReader<'_> {
    /// Reads some bytes into `buffer`; 0 at end of stream.
    fn read_more(&mut self, buffer: &mut Vec<u8>) -> Result<usize, ClientError> {
        /// Bytes asked of one `read`.
        const READ_SIZE: usize = 8192;
        if let Some(deadline) = self.deadline {
            let left = self.client.time_left(deadline)?;
            self.stream
                .set_read_timeout(Some(left))
                .map_err(ClientError::Io)?;
        }
        let mut chunk = [0u8; READ_SIZE];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    buffer.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.client.io_error(e)),
            }
        }
    }
}

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

/// Parses a response head from the start of `bytes`: `Ok(None)` if more
/// bytes are needed, else the head and its length.
///
/// # Errors
/// [`ClientError::Protocol`] for bytes that are not an HTTP/1.x response
/// head, or a head longer than [`MAX_RESPONSE_HEAD`].
pub fn parse_head(bytes: &[u8]) -> Result<Option<(Head, usize)>, ClientError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(bytes) {
        Ok(httparse::Status::Complete(length)) => {
            let status = response
                .code
                .ok_or_else(|| ClientError::Protocol("a response without a status".into()))?;
            let headers = response
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_owned(),
                        String::from_utf8_lossy(h.value).trim().to_owned(),
                    )
                })
                .collect();
            Ok(Some((Head { status, headers }, length)))
        }
        Ok(httparse::Status::Partial) if bytes.len() > MAX_RESPONSE_HEAD => Err(
            ClientError::Protocol(format!("a response head over {MAX_RESPONSE_HEAD} bytes")),
        ),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(ClientError::Protocol(format!(
            "not an HTTP response ({e}): {:?}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(80)])
        ))),
    }
}

/// Reads the head of the final response (skipping interim 1xx ones);
/// `buffer` keeps what was read past it.
fn read_head(reader: &mut DeadlineReader<'_>, buffer: &mut Vec<u8>) -> Result<Head, ClientError> {
    loop {
        match parse_head(buffer)? {
            Some((head, length)) => {
                buffer.drain(..length);
                if (100..200).contains(&head.status) {
                    continue;
                }
                return Ok(head);
            }
            None => {
                if reader.read_more(buffer)? == 0 {
                    return Err(ClientError::Protocol(if buffer.is_empty() {
                        "the daemon closed the connection without answering".into()
                    } else {
                        "the connection closed inside a response head".into()
                    }));
                }
            }
        }
    }
}

/// How a response body is delimited (RFC 9112 section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    Empty,
    Length(usize),
    Chunked,
    UntilClose,
}

/// The framing of a response to `method`.
///
/// # Errors
/// [`ClientError::Protocol`] for an unreadable or oversized length, or a
/// transfer coding other than a final `chunked`.
pub fn body_framing(head: &Head, method: &str) -> Result<BodyFraming, ClientError> {
    if method == "HEAD" || head.status == 204 || head.status == 304 {
        return Ok(BodyFraming::Empty);
    }
    if let Some(codings) = header_value(&head.headers, "transfer-encoding") {
        let last = codings.rsplit(',').next().unwrap_or_default().trim();
        return if last.eq_ignore_ascii_case("chunked") {
            Ok(BodyFraming::Chunked)
        } else {
            Err(ClientError::Protocol(format!(
                "an unsupported transfer coding {codings:?}"
            )))
        };
    }
    if let Some(length) = header_value(&head.headers, "content-length") {
        let parsed = (!length.is_empty() && length.bytes().all(|b| b.is_ascii_digit()))
            .then(|| length.parse::<usize>().ok())
            .flatten()
            .ok_or_else(|| ClientError::Protocol(format!("a Content-Length of {length:?}")))?;
        if parsed > MAX_RESPONSE_BODY {
            return Err(ClientError::Protocol(format!(
                "a body of {parsed} bytes, over the limit of {MAX_RESPONSE_BODY}"
            )));
        }
        return Ok(BodyFraming::Length(parsed));
    }
    Ok(BodyFraming::UntilClose)
}

/// Reads the body after `head`, starting from the bytes already in `buffer`.
fn read_body(
    reader: &mut DeadlineReader<'_>,
    head: &Head,
    method: &str,
    mut buffer: Vec<u8>,
) -> Result<Vec<u8>, ClientError> {
    let too_large = || {
        ClientError::Protocol(format!(
            "a body over the limit of {MAX_RESPONSE_BODY} bytes"
        ))
    };
    match body_framing(head, method)? {
        BodyFraming::Empty => Ok(Vec::new()),
        BodyFraming::Length(length) => {
            while buffer.len() < length {
                if reader.read_more(&mut buffer)? == 0 {
                    return Err(ClientError::Protocol(format!(
                        "the connection closed after {} of {length} body bytes",
                        buffer.len()
                    )));
                }
            }
            buffer.truncate(length);
            Ok(buffer)
        }
        BodyFraming::UntilClose => {
            while reader.read_more(&mut buffer)? > 0 {
                if buffer.len() > MAX_RESPONSE_BODY {
                    return Err(too_large());
                }
            }
            Ok(buffer)
        }
        BodyFraming::Chunked => {
            let mut decoder = ChunkedDecoder::new();
            let mut body = Vec::new();
            loop {
                let used = decoder.decode(&buffer, &mut body)?;
                buffer.drain(..used);
                if body.len() > MAX_RESPONSE_BODY {
                    return Err(too_large());
                }
                if decoder.is_done() {
                    return Ok(body);
                }
                if reader.read_more(&mut buffer)? == 0 {
                    return Err(ClientError::Protocol(
                        "the connection closed inside a chunked body".into(),
                    ));
                }
            }
        }
    }
}

/// An incremental decoder of a chunked body (RFC 9112 section 7.1), strict:
/// hex sizes, CRLF line ends, bounded size lines and trailers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkedDecoder {
    state: ChunkState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ChunkState {
    /// Reading a chunk-size line (bytes so far).
    Size(Vec<u8>),
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// After a chunk's data: the CRLF, this many of its bytes seen.
    DataEnd(u8),
    /// In the trailer section: the current line and the section's size.
    Trailers {
        line: Vec<u8>,
        total: usize,
    },
    Done,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> ChunkedDecoder {
        ChunkedDecoder {
            state: ChunkState::Size(Vec::new()),
        }
    }

    /// Whether the last chunk and the trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes what it can of `input`, appending chunk data to `out`, and
    /// returns how many bytes of `input` it used (all of them, unless done).
    ///
    /// # Errors
    /// [`ClientError::Protocol`] for anything that is not strict chunked
    /// framing; the stream cannot be trusted after it.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, ClientError> {
        let bad = |what: &str| ClientError::Protocol(format!("bad chunked framing: {what}"));
        let mut at = 0;
        while at < input.len() {
            match &mut self.state {
                ChunkState::Done => break,
                ChunkState::Size(line) => {
                    line.push(input[at]);
                    at += 1;
                    if line.len() > MAX_CHUNK_LINE {
                        return Err(bad("a chunk-size line too long"));
                    }
                    if line.ends_with(b"\r\n") {
                        let text = &line[..line.len() - 2];
                        let digits = text.split(|b| *b == b';').next().unwrap_or_default();
                        let digits = std::str::from_utf8(digits)
                            .ok()
                            .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_hexdigit()))
                            .ok_or_else(|| bad("a chunk size that is not hex"))?;
                        let size = u64::from_str_radix(digits, 16)
                            .map_err(|_| bad("a chunk size too large"))?;
                        self.state = if size == 0 {
                            ChunkState::Trailers {
                                line: Vec::new(),
                                total: 0,
                            }
                        } else {
                            ChunkState::Data(size)
                        };
                    } else if line.contains(&b'\n') {
                        return Err(bad("a bare LF in a chunk-size line"));
                    }
                }
                ChunkState::Data(left) => {
                    let available = (input.len() - at) as u64;
                    let take = (*left).min(available) as usize;
                    out.extend_from_slice(&input[at..at + take]);
                    at += take;
                    *left -= take as u64;
                    if *left == 0 {
                        self.state = ChunkState::DataEnd(0);
                    }
                }
                ChunkState::DataEnd(seen) => {
                    let expected = b"\r\n"[usize::from(*seen)];
                    if input[at] != expected {
                        return Err(bad("chunk data not followed by CRLF"));
                    }
                    at += 1;
                    *seen += 1;
                    if *seen == 2 {
                        self.state = ChunkState::Size(Vec::new());
                    }
                }
                ChunkState::Trailers { line, total } => {
                    line.push(input[at]);
                    at += 1;
                    *total += 1;
                    if *total > MAX_TRAILERS {
                        return Err(bad("trailers too large"));
                    }
                    if line.ends_with(b"\r\n") {
                        if line.len() == 2 {
                            self.state = ChunkState::Done;
                        } else {
                            line.clear();
                        }
                    } else if line.ends_with(b"\n") {
                        return Err(bad("a bare LF in the trailers"));
                    }
                }
            }
        }
        Ok(at)
    }
}

/// Splits a byte stream into `\n`-terminated lines of bounded length.
#[derive(Debug, Clone)]
pub struct LineSplitter {
    partial: Vec<u8>,
    max_line: usize,
}

impl LineSplitter {
    pub fn new(max_line: usize) -> LineSplitter {
        LineSplitter {
            partial: Vec::new(),
            max_line,
        }
    }

    /// Adds bytes and returns the lines they complete, without their `\n`
    /// (and without a `\r` before it).
    ///
    /// # Errors
    /// [`ClientError::Protocol`] for a line longer than the maximum.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, ClientError> {
        let mut lines = Vec::new();
        for &byte in bytes {
            if byte == b'\n' {
                let mut line = std::mem::take(&mut self.partial);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                lines.push(line);
            } else {
                self.partial.push(byte);
                if self.partial.len() > self.max_line {
                    return Err(ClientError::Protocol(format!(
                        "an event line over {} bytes",
                        self.max_line
                    )));
                }
            }
        }
        Ok(lines)
    }

    /// What is left after the stream ended: an unterminated last line.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        let rest = std::mem::take(&mut self.partial);
        (!rest.is_empty()).then_some(rest)
    }
}

/// An open `GET /v1/events` stream: one JSON object per line.
#[derive(Debug)]
pub struct EventStream {
    stream: UnixStream,
    /// `None` for a body that ends with the connection (HTTP/1.0).
    chunked: Option<ChunkedDecoder>,
    lines: LineSplitter,
    /// Lines decoded but not yet handed out.
    backlog: VecDeque<Vec<u8>>,
    /// The body has ended (last chunk, or end of stream).
    ended: bool,
}

impl EventStream {
    /// The next line (without its newline); `None` once the daemon ended the
    /// stream. Blocks until a line arrives.
    ///
    /// # Errors
    /// [`ClientError::Io`] if the connection fails, [`ClientError::Protocol`]
    /// for broken framing or an oversized line.
    pub fn next_line(&mut self) -> Result<Option<Vec<u8>>, ClientError> {
        /// Bytes asked of one `read`.
        const READ_SIZE: usize = 8192;
        loop {
            if let Some(line) = self.backlog.pop_front() {
                return Ok(Some(line));
            }
            if self.ended {
                return Ok(self.lines.finish());
            }
            let mut buffer = [0u8; READ_SIZE];
            let read = loop {
                match self.stream.read(&mut buffer) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(ClientError::Io(e)),
                }
            };
            if read == 0 {
                if self.chunked.is_some() {
                    return Err(ClientError::Protocol(
                        "the daemon closed the event stream without ending it".into(),
                    ));
                }
                self.ended = true;
                continue;
            }
            self.feed(&buffer[..read])?;
        }
    }

    fn feed(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        let lines = match &mut self.chunked {
            Some(decoder) => {
                let mut data = Vec::new();
                decoder.decode(bytes, &mut data)?;
                if decoder.is_done() {
                    self.ended = true;
                }
                self.lines.push(&data)?
            }
            None => self.lines.push(bytes)?,
        };
        self.backlog.extend(lines);
        Ok(())
    }
}

/// Why `sprite-env curl` refused its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CurlArgsError {
    /// No URL argument at all.
    NoPath,
    /// A URL argument that is not an API path.
    NotAnApiPath(String),
    /// An option whose per-URL reset would drop the socket (`--next`).
    Unsupported(String),
}

impl fmt::Display for CurlArgsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CurlArgsError::NoPath => write!(
                f,
                "no API path given; name one anywhere among the curl arguments, e.g. `sprite-env curl /v1/tasks`"
            ),
            CurlArgsError::NotAnApiPath(arg) => write!(
                f,
                "{arg:?} is not an API path; give a path such as /v1/tasks or /v1/tasks/agent \
                 (the socket and the http://sprite host are filled in). If it is the value of a \
                 curl option, write it as --option=value"
            ),
            CurlArgsError::Unsupported(option) => write!(
                f,
                "{option} is not supported by sprite-env curl (it would drop the socket for the next URL); run sprite-env curl once per request"
            ),
        }
    }
}

impl std::error::Error for CurlArgsError {}

/// curl's short options that take a value (curl 7.88 to 8.x).
const CURL_SHORT_WITH_VALUE: &[u8] = b"AbCcDdEeFHKmoPQrTtUuwXxYyz";

/// curl's long options that take a value (curl 7.88 to 8.x). An option that
/// is missing here would have its value taken for a URL: a value that does
/// not start with `/` is then refused with a message, never sent somewhere.
const CURL_LONG_WITH_VALUE: &[&str] = &[
    "abstract-unix-socket",
    "alt-svc",
    "aws-sigv4",
    "cacert",
    "capath",
    "cert",
    "cert-type",
    "ciphers",
    "config",
    "connect-timeout",
    "connect-to",
    "continue-at",
    "cookie",
    "cookie-jar",
    "create-file-mode",
    "crlfile",
    "curves",
    "data",
    "data-ascii",
    "data-binary",
    "data-raw",
    "data-urlencode",
    "delegation",
    "dns-interface",
    "dns-ipv4-addr",
    "dns-ipv6-addr",
    "dns-servers",
    "doh-url",
    "dump-header",
    "ech",
    "egd-file",
    "engine",
    "etag-compare",
    "etag-save",
    "expect100-timeout",
    "form",
    "form-string",
    "ftp-account",
    "ftp-alternative-to-user",
    "ftp-method",
    "ftp-port",
    "ftp-ssl-ccc-mode",
    "happy-eyeballs-timeout-ms",
    "haproxy-clientip",
    "header",
    "hostpubmd5",
    "hostpubsha256",
    "hsts",
    "interface",
    "ip-tos",
    "json",
    "keepalive-cnt",
    "keepalive-time",
    "key",
    "key-type",
    "knownhosts",
    "krb",
    "libcurl",
    "limit-rate",
    "local-port",
    "login-options",
    "mail-auth",
    "mail-from",
    "mail-rcpt",
    "max-filesize",
    "max-redirs",
    "max-time",
    "netrc-file",
    "noproxy",
    "oauth2-bearer",
    "output",
    "output-dir",
    "parallel-max",
    "pass",
    "pinnedpubkey",
    "preproxy",
    "proto",
    "proto-default",
    "proto-redir",
    "proxy",
    "proxy-cacert",
    "proxy-capath",
    "proxy-cert",
    "proxy-cert-type",
    "proxy-ciphers",
    "proxy-crlfile",
    "proxy-header",
    "proxy-key",
    "proxy-key-type",
    "proxy-pass",
    "proxy-pinnedpubkey",
    "proxy-service-name",
    "proxy-tls13-ciphers",
    "proxy-tlsauthtype",
    "proxy-tlspassword",
    "proxy-tlsuser",
    "proxy-user",
    "proxy1.0",
    "pubkey",
    "quote",
    "random-file",
    "range",
    "rate",
    "referer",
    "request",
    "request-target",
    "resolve",
    "retry",
    "retry-delay",
    "retry-max-time",
    "sasl-authzid",
    "service-name",
    "sigalgs",
    "socks4",
    "socks4a",
    "socks5",
    "socks5-gssapi-service",
    "socks5-hostname",
    "speed-limit",
    "speed-time",
    "ssl-sessions",
    "stderr",
    "telnet-option",
    "tftp-blksize",
    "time-cond",
    "tls-max",
    "tls13-ciphers",
    "tlsauthtype",
    "tlspassword",
    "tlsuser",
    "trace",
    "trace-ascii",
    "trace-config",
    "unix-socket",
    "upload-file",
    "upload-flags",
    "url",
    "url-query",
    "user",
    "user-agent",
    "variable",
    "vlan-priority",
    "write-out",
];

/// The long name of a short option this module cares about.
fn short_to_long(option: u8) -> &'static str {
    match option {
        b'd' => "data",
        b'F' => "form",
        b'H' => "header",
        b'T' => "upload-file",
        _ => "",
    }
}

/// What the user's curl arguments say, as far as the rewriting cares.
#[derive(Debug, Default)]
struct CurlSeen {
    paths: usize,
    body: bool,
    content_type: bool,
}

impl CurlSeen {
    /// Notes an option (by long name, `expand-` stripped) and its value.
    fn option(&mut self, name: &str, value: &[u8]) {
        match name {
            "data" | "data-ascii" | "data-binary" | "data-raw" | "data-urlencode"
            | "upload-file" => self.body = true,
            // curl sets its own type for these.
            "json" | "form" | "form-string" => self.content_type = true,
            "header" => {
                let header_name = value
                    .split(|b| *b == b':' || *b == b';')
                    .next()
                    .unwrap_or_default();
                if header_name
                    .trim_ascii()
                    .eq_ignore_ascii_case(b"content-type")
                {
                    self.content_type = true;
                }
            }
            _ => {}
        }
    }
}

/// Rewrites one URL argument: an API path gets the host; `http://sprite`
/// URLs pass; anything else is refused.
fn rewrite_url(arg: &OsStr) -> Result<OsString, CurlArgsError> {
    let bytes = arg.as_bytes();
    if bytes.starts_with(b"/") {
        let mut url = BASE_URL.as_bytes().to_vec();
        url.extend_from_slice(bytes);
        return Ok(OsString::from_vec(url));
    }
    if bytes == BASE_URL.as_bytes() || bytes.starts_with(format!("{BASE_URL}/").as_bytes()) {
        return Ok(arg.to_owned());
    }
    Err(CurlArgsError::NotAnApiPath(
        arg.to_string_lossy().into_owned(),
    ))
}

/// The arguments to run `curl` with for `sprite-env curl ARGS`: the socket
/// first, then a JSON `Content-Type` if a body is sent without one, then the
/// user's arguments with every API path (a URL argument starting with `/`,
/// wherever it stands, or the value of `--url`) turned into
/// `http://sprite/PATH`.
///
/// # Errors
/// [`CurlArgsError`] when there is no URL argument, a URL argument is not an
/// API path, or `--next` is used.
pub fn curl_args(user_args: &[OsString], socket: &Path) -> Result<Vec<OsString>, CurlArgsError> {
    let mut seen = CurlSeen::default();
    let mut rewritten = Vec::with_capacity(user_args.len());
    let mut options_done = false;
    let mut at = 0;
    while at < user_args.len() {
        let arg = user_args[at].as_os_str();
        let bytes = arg.as_bytes();
        at += 1;
        if options_done || !bytes.starts_with(b"-") || bytes == b"-" {
            rewritten.push(rewrite_url(arg)?);
            seen.paths += 1;
            continue;
        }
        if bytes == b"--" {
            options_done = true;
            rewritten.push(arg.to_owned());
            continue;
        }
        if let Some(long) = bytes.strip_prefix(b"--") {
            let (name, inline) = match long.iter().position(|b| *b == b'=') {
                Some(eq) => (&long[..eq], Some(&long[eq + 1..])),
                None => (long, None),
            };
            let name = String::from_utf8_lossy(name);
            let name = name.strip_prefix("expand-").unwrap_or(&name);
            if name == "next" {
                return Err(CurlArgsError::Unsupported("--next".into()));
            }
            if !CURL_LONG_WITH_VALUE.contains(&name) {
                rewritten.push(arg.to_owned());
                continue;
            }
            match inline {
                Some(value) => {
                    seen.option(name, value);
                    if name == "url" {
                        let url = rewrite_url(OsStr::from_bytes(value))?;
                        let mut joined = b"--url=".to_vec();
                        joined.extend_from_slice(url.as_bytes());
                        rewritten.push(OsString::from_vec(joined));
                        seen.paths += 1;
                    } else {
                        rewritten.push(arg.to_owned());
                    }
                }
                None => {
                    rewritten.push(arg.to_owned());
                    // A missing value is curl's to report.
                    if let Some(value) = user_args.get(at) {
                        at += 1;
                        seen.option(name, value.as_bytes());
                        if name == "url" {
                            rewritten.push(rewrite_url(value)?);
                            seen.paths += 1;
                        } else {
                            rewritten.push(value.clone());
                        }
                    }
                }
            }
            continue;
        }
        // A cluster of short options: `-sS`, `-XPOST`, `-sX POST`.
        rewritten.push(arg.to_owned());
        for (index, &option) in bytes.iter().enumerate().skip(1) {
            if option == b':' {
                return Err(CurlArgsError::Unsupported("-: (--next)".into()));
            }
            if CURL_SHORT_WITH_VALUE.contains(&option) {
                let rest = &bytes[index + 1..];
                if !rest.is_empty() {
                    seen.option(short_to_long(option), rest);
                } else if let Some(value) = user_args.get(at) {
                    at += 1;
                    seen.option(short_to_long(option), value.as_bytes());
                    rewritten.push(value.clone());
                }
                break;
            }
        }
    }
    if seen.paths == 0 {
        return Err(CurlArgsError::NoPath);
    }
    let mut args = vec![
        OsString::from("--unix-socket"),
        socket.as_os_str().to_owned(),
    ];
    if seen.body && !seen.content_type {
        args.push("-H".into());
        args.push("Content-Type: application/json".into());
    }
    args.extend(rewritten);
    Ok(args)
}

/// Reads an `--every` interval: a duration string such as `30s` or `500ms`,
/// or digits alone as seconds.
///
/// # Errors
/// A sentence for anything else. The text is bounded before humantime
/// reads it (humantime can panic on overflow, chronotope/humantime#66).
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    /// Longer than any interval a person writes.
    const MAX_TEXT: usize = 32;
    /// Ten digits of any unit stay far from humantime's overflow.
    const MAX_DIGIT_RUN: usize = 10;
    let longest_run = text
        .split(|c: char| !c.is_ascii_digit())
        .map(str::len)
        .max()
        .unwrap_or(0);
    let readable = text.len() <= MAX_TEXT && longest_run <= MAX_DIGIT_RUN;
    let parsed = if !readable {
        None
    } else if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse().ok().map(Duration::from_secs)
    } else {
        humantime::parse_duration(text).ok()
    };
    parsed.ok_or_else(|| format!("{text:?} is not a duration such as 30s, 1m or 500ms"))
}

/// The rule for a hold's refresh interval: at least [`MIN_INTERVAL`] and at
/// most half the expiry, so that one failed refresh still leaves time for a
/// retry before the hold lapses. The seed's default, a 5-minute expiry
/// refreshed every minute, has four refreshes of margin.
///
/// # Errors
/// A sentence naming the rule.
pub fn check_interval(expire: Duration, every: Duration) -> Result<(), String> {
    if every < MIN_INTERVAL {
        return Err(format!(
            "--every {} is too often; the shortest refresh interval is {}",
            humantime::format_duration(every),
            humantime::format_duration(MIN_INTERVAL)
        ));
    }
    if every > expire / 2 {
        return Err(format!(
            "--every {} is not well below --expire {}: refresh at most every {} (half the expiry) so a failed refresh can be retried before the hold lapses",
            humantime::format_duration(every),
            humantime::format_duration(expire),
            humantime::format_duration(expire / 2)
        ));
    }
    Ok(())
}

/// How long to wait before retrying a failed refresh.
pub fn retry_delay(every: Duration) -> Duration {
    every.min(MAX_RETRY_DELAY)
}

/// A duration as a person reads it, to the second: `1h 5m`, `4m 59s`,
/// `59s`, `<1s` (a positive remainder under a second), `0s`.
pub fn format_span(span: Duration) -> String {
    let seconds = span.as_secs();
    match seconds {
        0 if span.is_zero() => "0s".to_owned(),
        0 => "<1s".to_owned(),
        1..60 => format!("{seconds}s"),
        60..3600 => format!("{}m {}s", seconds / 60, seconds % 60),
        _ => format!("{}h {}m", seconds / 3600, seconds % 3600 / 60),
    }
}

/// An API timestamp shortened to the second (`2026-06-02T17:11:14Z`); text
/// that is not one is shown as it is.
pub fn format_time(rfc3339: &str) -> String {
    match Timestamp::parse_rfc3339(rfc3339) {
        Some(at) => humantime::format_rfc3339_seconds(at.to_system_time()).to_string(),
        None => rfc3339.to_owned(),
    }
}

/// Time from `now` until an API timestamp, as `format_span` prints it, or
/// `expired` when it is not in the future.
pub fn format_until(rfc3339: &str, now: Timestamp) -> String {
    match Timestamp::parse_rfc3339(rfc3339) {
        Some(at) if at > now => format_span(at.saturating_since(now)),
        Some(_) => "expired".to_owned(),
        None => "?".to_owned(),
    }
}

/// The task table of `sprite-env tasks list`: name, started, expires in.
pub fn render_tasks(tasks: &[TaskView], now: Timestamp) -> String {
    if tasks.is_empty() {
        return "no tasks: nothing holds the machine awake\n".to_owned();
    }
    let rows: Vec<[String; 3]> = tasks
        .iter()
        .map(|task| {
            [
                task.name.clone(),
                format_time(&task.started_at),
                format_until(&task.expires_at, now),
            ]
        })
        .collect();
    let header = ["NAME", "STARTED", "EXPIRES IN"];
    let width = |column: usize| {
        rows.iter()
            .map(|row| row[column].len())
            .chain([header[column].len()])
            .max()
            .unwrap_or(0)
    };
    let (name_width, started_width) = (width(0), width(1));
    let mut out = String::new();
    for row in std::iter::once(header.map(str::to_owned)).chain(rows) {
        out.push_str(&format!(
            "{:name_width$}  {:started_width$}  {}\n",
            row[0], row[1], row[2]
        ));
    }
    out
}

/// The one line of `sprite-env tasks status`.
pub fn render_status(status: &Status, tasks: &[TaskView], now: Timestamp) -> String {
    if status.held {
        let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
        let who = match names.len() {
            0 => format!("{} task(s)", status.tasks),
            _ => names.join(", "),
        };
        match &status.held_until {
            Some(until) => format!(
                "held by {who} until {} (in {})",
                format_time(until),
                format_until(until, now)
            ),
            None => format!("held by {who}"),
        }
    } else {
        match &status.idle_since {
            Some(since) => {
                let ago = Timestamp::parse_rfc3339(since)
                    .map(|at| format!(" ({} ago)", format_span(now.saturating_since(at))))
                    .unwrap_or_default();
                format!(
                    "idle since {}{ago}: nothing holds the machine awake",
                    format_time(since)
                )
            }
            None => "idle: nothing holds the machine awake".to_owned(),
        }
    }
}

/// One event line of `sprite-env tasks watch`, as a person reads it; a line
/// that is not a JSON object comes back as it is.
pub fn render_event(line: &[u8]) -> String {
    let Ok(Value::Object(event)) = serde_json::from_slice::<Value>(line) else {
        return String::from_utf8_lossy(line).into_owned();
    };
    let text = |field: &str| event.get(field).and_then(Value::as_str);
    let kind = text("event").unwrap_or("?");
    if let Some(error) = text("error") {
        return format!("{kind}: {error}");
    }
    let mut out = String::new();
    if let Some(at) = text("at") {
        out.push_str(&format_time(at));
        out.push(' ');
    }
    if let Some(seq) = event.get("seq").and_then(Value::as_u64) {
        out.push_str(&format!("#{seq} "));
    }
    out.push_str(kind);
    match (kind, text("task")) {
        (_, Some(task)) => {
            out.push(' ');
            out.push_str(task);
        }
        ("held", None) => out.push_str(": the machine is kept awake"),
        ("idle", None) => out.push_str(": nothing holds the machine awake"),
        _ => {}
    }
    if let Some(expires_at) = text("expires_at") {
        out.push_str(&format!(" until {}", format_time(expires_at)));
        let lasts = text("at")
            .and_then(Timestamp::parse_rfc3339)
            .zip(Timestamp::parse_rfc3339(expires_at));
        if let Some((at, expires)) = lasts {
            out.push_str(&format!(" ({})", format_span(expires.saturating_since(at))));
        }
    }
    out
}

/// Whether a stream line is the daemon's last word to a consumer that fell
/// behind (`{"event":"lagged",...}`).
pub fn is_lagged(line: &[u8]) -> bool {
    serde_json::from_slice::<Value>(line)
        .ok()
        .and_then(|v| {
            v.get("event")
                .and_then(Value::as_str)
                .map(|e| e == "lagged")
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn strings(args: Vec<OsString>) -> Vec<String> {
        args.into_iter().map(|a| a.into_string().unwrap()).collect()
    }

    const SOCKET: &str = "/s/api.sock";
    const JSON: &str = "Content-Type: application/json";

    #[test]
    fn curl_paths_anywhere_get_the_socket_and_host() {
        let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
            (vec!["/v1/tasks"], vec!["http://sprite/v1/tasks"]),
            (
                vec!["-X", "POST", "/v1/tasks", "-d", "{}"],
                vec![
                    "-H",
                    JSON,
                    "-X",
                    "POST",
                    "http://sprite/v1/tasks",
                    "-d",
                    "{}",
                ],
            ),
            (
                vec!["/v1/tasks", "-X", "POST", "-d", "{}"],
                vec![
                    "-H",
                    JSON,
                    "http://sprite/v1/tasks",
                    "-X",
                    "POST",
                    "-d",
                    "{}",
                ],
            ),
            (
                vec!["-X", "PUT", "-d", "{}", "/v1/tasks/a"],
                vec![
                    "-H",
                    JSON,
                    "-X",
                    "PUT",
                    "-d",
                    "{}",
                    "http://sprite/v1/tasks/a",
                ],
            ),
            // Values that look like paths stay values.
            (
                vec!["-o", "/tmp/out", "-H", "X-A: 1", "/v1/tasks"],
                vec!["-o", "/tmp/out", "-H", "X-A: 1", "http://sprite/v1/tasks"],
            ),
            (
                vec!["--output", "/tmp/out", "/v1/tasks", "--cacert", "/etc/ca"],
                vec![
                    "--output",
                    "/tmp/out",
                    "http://sprite/v1/tasks",
                    "--cacert",
                    "/etc/ca",
                ],
            ),
            // Clusters: -sX POST, -XPOST, -sd{}.
            (
                vec!["-sX", "POST", "/v1/tasks", "-sd{}"],
                vec!["-H", JSON, "-sX", "POST", "http://sprite/v1/tasks", "-sd{}"],
            ),
            (
                vec!["-XDELETE", "/v1/tasks/a"],
                vec!["-XDELETE", "http://sprite/v1/tasks/a"],
            ),
            // A type of its own, or a body type curl sets: nothing added.
            (
                vec!["-H", "content-type: text/plain", "-d", "x", "/v1/tasks"],
                vec![
                    "-H",
                    "content-type: text/plain",
                    "-d",
                    "x",
                    "http://sprite/v1/tasks",
                ],
            ),
            (
                vec![
                    "--header=Content-Type: application/json",
                    "--data=x",
                    "/v1/tasks",
                ],
                vec![
                    "--header=Content-Type: application/json",
                    "--data=x",
                    "http://sprite/v1/tasks",
                ],
            ),
            (
                vec!["--json", "{}", "/v1/tasks"],
                vec!["--json", "{}", "http://sprite/v1/tasks"],
            ),
            (
                vec!["--data-binary", "@body.json", "/v1/tasks"],
                vec![
                    "-H",
                    JSON,
                    "--data-binary",
                    "@body.json",
                    "http://sprite/v1/tasks",
                ],
            ),
            // --url, --expand-*, full sprite URLs, and after `--`.
            (
                vec!["--url", "/v1/tasks"],
                vec!["--url", "http://sprite/v1/tasks"],
            ),
            (
                vec!["--url=/v1/status"],
                vec!["--url=http://sprite/v1/status"],
            ),
            (
                vec!["--expand-data", "{}", "/v1/tasks"],
                vec!["-H", JSON, "--expand-data", "{}", "http://sprite/v1/tasks"],
            ),
            (
                vec!["http://sprite/v1/tasks"],
                vec!["http://sprite/v1/tasks"],
            ),
            (
                vec!["-s", "--", "/v1/tasks"],
                vec!["-s", "--", "http://sprite/v1/tasks"],
            ),
            // Unknown flags without values pass.
            (
                vec!["--fail-with-body", "-sSf", "/metrics"],
                vec!["--fail-with-body", "-sSf", "http://sprite/metrics"],
            ),
        ];
        for (input, expected) in cases {
            let got = curl_args(&os(&input), Path::new(SOCKET))
                .unwrap_or_else(|e| panic!("{input:?}: {e}"));
            let mut want = vec!["--unix-socket", SOCKET];
            want.extend(expected);
            assert_eq!(strings(got), want, "{input:?}");
        }
    }

    #[test]
    fn curl_refusals() {
        let cases: Vec<(Vec<&str>, CurlArgsError)> = vec![
            (vec![], CurlArgsError::NoPath),
            (vec!["-s", "-X", "POST"], CurlArgsError::NoPath),
            (vec!["-d", "{}", "-X", "POST"], CurlArgsError::NoPath),
            (
                vec!["-X", "POST", "v1/tasks"],
                CurlArgsError::NotAnApiPath("v1/tasks".into()),
            ),
            (
                vec!["https://example.com/v1/tasks"],
                CurlArgsError::NotAnApiPath("https://example.com/v1/tasks".into()),
            ),
            (
                vec!["http://spritely/v1/tasks"],
                CurlArgsError::NotAnApiPath("http://spritely/v1/tasks".into()),
            ),
            (
                vec!["--url", "tasks"],
                CurlArgsError::NotAnApiPath("tasks".into()),
            ),
            (vec!["-"], CurlArgsError::NotAnApiPath("-".into())),
            (
                vec!["/v1/tasks", "--next", "/v1/tasks"],
                CurlArgsError::Unsupported("--next".into()),
            ),
            (
                vec!["/v1/tasks", "-:", "/v1/tasks"],
                CurlArgsError::Unsupported("-: (--next)".into()),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                curl_args(&os(&input), Path::new(SOCKET)),
                Err(expected),
                "{input:?}"
            );
        }
    }

    #[test]
    fn curl_keeps_non_utf8_arguments() {
        let odd = OsString::from_vec(b"-H\xff".to_vec());
        let got = curl_args(&[odd.clone(), "/v1/tasks".into()], Path::new(SOCKET)).unwrap();
        assert_eq!(got[2], odd);
    }

    /// Feeds `input` to a fresh decoder in pieces of `step` bytes.
    fn decode_in_steps(input: &[u8], step: usize) -> Result<(Vec<u8>, bool, usize), ClientError> {
        let mut decoder = ChunkedDecoder::new();
        let mut out = Vec::new();
        let mut used = 0;
        for piece in input.chunks(step.max(1)) {
            used += decoder.decode(piece, &mut out)?;
            if decoder.is_done() {
                break;
            }
        }
        Ok((out, decoder.is_done(), used))
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_split() {
        let cases: Vec<(&[u8], &[u8], bool)> = vec![
            (b"0\r\n\r\n", b"", true),
            (b"5\r\nhello\r\n0\r\n\r\n", b"hello", true),
            (
                b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
                b"hello world",
                true,
            ),
            (b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789", true),
            (
                b"a;ext=1\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n",
                b"0123456789",
                true,
            ),
            // Not finished yet: what came so far.
            (b"5\r\nhel", b"hel", false),
            (b"5\r\nhello\r\n", b"hello", false),
        ];
        for (input, expected, done) in cases {
            for step in 1..=input.len() {
                let (out, finished, _) = decode_in_steps(input, step)
                    .unwrap_or_else(|e| panic!("{input:?} step {step}: {e}"));
                assert_eq!(out, expected, "{input:?} step {step}");
                assert_eq!(finished, done, "{input:?} step {step}");
            }
        }
        // Bytes after the end are left for the caller.
        let (_, done, used) = decode_in_steps(b"0\r\n\r\nNEXT", 100).unwrap();
        assert!(done);
        assert_eq!(used, 5);
    }

    #[test]
    fn chunked_framing_errors() {
        let long_line = format!("1;{}\r\n", "x".repeat(MAX_CHUNK_LINE));
        let big_trailers = format!("0\r\n{}", "X: y\r\n".repeat(MAX_TRAILERS / 6 + 1));
        let cases: Vec<&[u8]> = vec![
            b"\r\n",
            b"x\r\n",
            b"+5\r\nhello\r\n",
            b"5\nhello\r\n",
            b"5\r\nhelloXX",
            b"5\r\nhello\r0",
            b"11111111111111111\r\n",
            b"0\r\nX: 1\n",
            long_line.as_bytes(),
            big_trailers.as_bytes(),
        ];
        for input in cases {
            assert!(
                decode_in_steps(input, input.len()).is_err(),
                "{:?}",
                String::from_utf8_lossy(input)
            );
            assert!(decode_in_steps(input, 1).is_err());
        }
    }

    #[test]
    fn lines_split_across_pushes_and_stay_bounded() {
        let mut lines = LineSplitter::new(8);
        assert_eq!(lines.push(b"ab").unwrap(), Vec::<Vec<u8>>::new());
        assert_eq!(
            lines.push(b"c\nde\r\nf").unwrap(),
            vec![b"abc".to_vec(), b"de".to_vec()]
        );
        assert_eq!(
            lines.push(b"\n\n").unwrap(),
            vec![b"f".to_vec(), b"".to_vec()]
        );
        assert_eq!(lines.push(b"tail").unwrap(), Vec::<Vec<u8>>::new());
        assert_eq!(lines.finish(), Some(b"tail".to_vec()));
        assert_eq!(lines.finish(), None);
        assert!(lines.push(b"123456789").is_err());
    }

    #[test]
    fn response_heads_and_their_framing() {
        let head = |bytes: &[u8]| parse_head(bytes).unwrap().unwrap().0;
        let cases: Vec<(&[u8], &str, BodyFraming)> = vec![
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n",
                "GET",
                BodyFraming::Length(12),
            ),
            (
                b"HTTP/1.1 204 No Content\r\n\r\n",
                "DELETE",
                BodyFraming::Empty,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n",
                "HEAD",
                BodyFraming::Empty,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                "GET",
                BodyFraming::Chunked,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n",
                "GET",
                BodyFraming::Chunked,
            ),
            (b"HTTP/1.0 200 OK\r\n\r\n", "GET", BodyFraming::UntilClose),
        ];
        for (bytes, method, framing) in cases {
            assert_eq!(
                body_framing(&head(bytes), method).unwrap(),
                framing,
                "{bytes:?}"
            );
        }
        let refused: Vec<&[u8]> = vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        ];
        for bytes in refused {
            assert!(body_framing(&head(bytes), "GET").is_err(), "{bytes:?}");
        }
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-")
                .unwrap()
                .is_none()
        );
        assert!(parse_head(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        let endless = [
            b"HTTP/1.1 200 OK\r\n".as_slice(),
            &vec![b'a'; MAX_RESPONSE_HEAD],
        ]
        .concat();
        assert!(parse_head(&endless).is_err());
        let parsed = head(b"HTTP/1.1 409 Conflict\r\ncontent-type:  application/json \r\n\r\n");
        assert_eq!(parsed.status, 409);
        assert_eq!(
            header_value(&parsed.headers, "Content-Type"),
            Some("application/json")
        );
    }

    #[test]
    fn error_messages_come_from_the_body() {
        assert_eq!(
            error_message(404, br#"{"error":"task \"a\" does not exist"}"#),
            "task \"a\" does not exist"
        );
        assert_eq!(error_message(502, b"  Bad Gateway\n"), "Bad Gateway");
        assert_eq!(
            error_message(500, b""),
            "the daemon answered HTTP 500 without a message"
        );
        assert_eq!(error_message(500, &[b'x'; 1000]).len(), 200);
    }

    #[test]
    fn task_paths_and_expire_values() {
        assert_eq!(task_path("agent-1.a_b:c@d"), "/v1/tasks/agent-1.a_b:c@d");
        assert_eq!(task_path("a/b c%"), "/v1/tasks/a%2Fb%20c%25");
        assert_eq!(task_path("é"), "/v1/tasks/%C3%A9");
        assert_eq!(expire_value("300"), Value::from(300));
        assert_eq!(expire_value("5m"), Value::from("5m"));
        assert_eq!(expire_value(""), Value::from(""));
        assert_eq!(
            expire_value("99999999999999999999999"),
            Value::from("99999999999999999999999")
        );
    }

    #[test]
    fn intervals_must_sit_well_below_the_expiry() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        let cases = [
            (s(300), s(60), true),
            (s(300), s(150), true),
            (s(300), s(151), false),
            (s(2), ms(500), true),
            (s(2), s(1), true),
            (s(2), ms(1500), false),
            (s(1), ms(99), false),
            (s(3600), Duration::ZERO, false),
        ];
        for (expire, every, ok) in cases {
            assert_eq!(
                check_interval(expire, every).is_ok(),
                ok,
                "{expire:?} {every:?}"
            );
        }
        assert_eq!(retry_delay(s(60)), MAX_RETRY_DELAY);
        assert_eq!(retry_delay(ms(500)), ms(500));
    }

    #[test]
    fn interval_text() {
        let cases = [
            ("1m", Some(Duration::from_secs(60))),
            ("500ms", Some(Duration::from_millis(500))),
            ("30", Some(Duration::from_secs(30))),
            ("1m 30s", Some(Duration::from_secs(90))),
            ("", None),
            ("soon", None),
            ("-1s", None),
            ("18446744073709551615s 1000ms", None),
            ("99999999999999s", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_interval(text).ok(), expected, "{text:?}");
        }
    }

    fn at(text: &str) -> Timestamp {
        Timestamp::parse_rfc3339(text).unwrap()
    }

    #[test]
    fn spans_and_times_for_people() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(400), "<1s"),
            (Duration::from_millis(1999), "1s"),
            (Duration::from_secs(59), "59s"),
            (Duration::from_secs(60), "1m 0s"),
            (Duration::from_secs(299), "4m 59s"),
            (Duration::from_secs(3600), "1h 0m"),
            (Duration::from_secs(5 * 86400 + 3700), "121h 1m"),
        ];
        for (span, expected) in cases {
            assert_eq!(format_span(span), expected, "{span:?}");
        }
        assert_eq!(
            format_time("2026-06-02T17:11:14.555839485Z"),
            "2026-06-02T17:11:14Z"
        );
        assert_eq!(format_time("yesterday"), "yesterday");
        let now = at("2026-06-02T17:00:00Z");
        assert_eq!(format_until("2026-06-02T17:04:59.9Z", now), "4m 59s");
        assert_eq!(format_until("2026-06-02T16:59:59Z", now), "expired");
        assert_eq!(format_until("garbage", now), "?");
    }

    fn task(name: &str, started: &str, expires: &str) -> TaskView {
        TaskView {
            name: name.into(),
            started_at: started.into(),
            expires_at: expires.into(),
        }
    }

    #[test]
    fn the_task_table() {
        let now = at("2026-06-02T17:00:00Z");
        assert_eq!(
            render_tasks(&[], now),
            "no tasks: nothing holds the machine awake\n"
        );
        let table = render_tasks(
            &[
                task("agent", "2026-06-02T16:00:00.5Z", "2026-06-02T17:05:00.5Z"),
                task(
                    "a-much-longer-name",
                    "2026-06-02T16:59:00Z",
                    "2026-06-02T17:00:30Z",
                ),
            ],
            now,
        );
        assert_eq!(
            table,
            "NAME                STARTED               EXPIRES IN\n\
             agent               2026-06-02T16:00:00Z  5m 0s\n\
             a-much-longer-name  2026-06-02T16:59:00Z  30s\n"
        );
    }

    #[test]
    fn the_status_line() {
        let now = at("2026-06-02T17:00:00Z");
        let held = Status {
            held: true,
            tasks: 2,
            held_until: Some("2026-06-02T18:00:00.1Z".into()),
            idle_since: None,
        };
        let tasks = [
            task("a", "2026-06-02T16:00:00Z", "2026-06-02T18:00:00.1Z"),
            task("b", "2026-06-02T16:00:00Z", "2026-06-02T17:30:00Z"),
        ];
        assert_eq!(
            render_status(&held, &tasks, now),
            "held by a, b until 2026-06-02T18:00:00Z (in 1h 0m)"
        );
        assert_eq!(
            render_status(&held, &[], now),
            "held by 2 task(s) until 2026-06-02T18:00:00Z (in 1h 0m)"
        );
        let idle = Status {
            held: false,
            tasks: 0,
            held_until: None,
            idle_since: Some("2026-06-02T16:57:00Z".into()),
        };
        assert_eq!(
            render_status(&idle, &[], now),
            "idle since 2026-06-02T16:57:00Z (3m 0s ago): nothing holds the machine awake"
        );
        let never = Status {
            idle_since: None,
            ..idle
        };
        assert_eq!(
            render_status(&never, &[], now),
            "idle: nothing holds the machine awake"
        );
    }

    #[test]
    fn event_lines_for_people() {
        let cases = [
            (
                r#"{"seq":12,"at":"2026-06-02T17:00:00.1Z","event":"created","task":"agent","expires_at":"2026-06-02T17:05:00.1Z"}"#,
                "2026-06-02T17:00:00Z #12 created agent until 2026-06-02T17:05:00Z (5m 0s)",
            ),
            (
                r#"{"seq":13,"at":"2026-06-02T17:01:00Z","event":"expired","task":"agent"}"#,
                "2026-06-02T17:01:00Z #13 expired agent",
            ),
            (
                r#"{"seq":14,"at":"2026-06-02T17:01:00Z","event":"idle"}"#,
                "2026-06-02T17:01:00Z #14 idle: nothing holds the machine awake",
            ),
            (
                r#"{"seq":2,"at":"2026-06-02T17:01:00Z","event":"held"}"#,
                "2026-06-02T17:01:00Z #2 held: the machine is kept awake",
            ),
            (
                r#"{"event":"lagged","error":"too slow; reconnect"}"#,
                "lagged: too slow; reconnect",
            ),
            (r#"{"event":"gap","error":"lost some"}"#, "gap: lost some"),
            ("not json", "not json"),
            ("[1]", "[1]"),
        ];
        for (line, expected) in cases {
            assert_eq!(render_event(line.as_bytes()), expected);
        }
        assert!(is_lagged(br#"{"event":"lagged","error":"x"}"#));
        assert!(!is_lagged(br#"{"event":"idle","seq":1}"#));
        assert!(!is_lagged(b"lagged"));
    }
}
