//! The HTTP/1.1 client of `sprite-env tasks`, over the daemon's Unix socket:
//! one connection per request, a whole exchange within one deadline, every
//! buffer bounded; and the event stream, which has no deadline after its head.
//!
//! The response framing ([`parse_head`], [`body_framing`],
//! [`ChunkedDecoder`], [`LineSplitter`]) is pure and tested without a
//! socket. Depends on [`crate::api`] for the paths and wire types.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::api::{EVENTS_PATH, STATUS_PATH, TASKS_PATH, TaskList, TaskView};

/// The virtual host of every request, as the seed documents it.
pub const HOST: &str = "sprite";

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
        self.create_with(name, expire, &HoldDetails::default())
    }

    /// `POST /v1/tasks` with a reason and a process to bind to.
    ///
    /// # Errors
    /// As for [`list`](Self::list).
    pub fn create_with(
        &self,
        name: &str,
        expire: &Value,
        details: &HoldDetails,
    ) -> Result<(Vec<u8>, TaskView), ClientError> {
        let mut body = serde_json::json!({ "name": name, "expire": expire });
        details.add_to(&mut body);
        let response = self.call("POST", TASKS_PATH, Some(&body))?;
        let task = decode_json(&response.body)?;
        Ok((response.body, task))
    }

    /// `PUT /v1/tasks/NAME`: refreshes a task, creating it if missing.
    ///
    /// # Errors
    /// As for [`list`](Self::list).
    pub fn refresh(&self, name: &str, expire: &Value) -> Result<(Vec<u8>, TaskView), ClientError> {
        self.refresh_with(name, expire, &HoldDetails::default())
    }

    /// `PUT /v1/tasks/NAME` with a reason and a process to bind to.
    ///
    /// # Errors
    /// As for [`list`](Self::list).
    pub fn refresh_with(
        &self,
        name: &str,
        expire: &Value,
        details: &HoldDetails,
    ) -> Result<(Vec<u8>, TaskView), ClientError> {
        let mut body = serde_json::json!({ "expire": expire });
        details.add_to(&mut body);
        self.task_call("PUT", name, Some(&body))
    }

    /// `DELETE /v1/tasks/NAME`.
    ///
    /// # Errors
    /// As for [`call`](Self::call); 404 is [`ClientError::Api`].
    pub fn delete(&self, name: &str) -> Result<(), ClientError> {
        self.call("DELETE", &task_path(name), None).map(drop)
    }

    /// `DELETE /v1/tasks/NAME?pid=PID`: deletes the task only while it is
    /// bound to process `pid`; a task another holder took since is left
    /// alone (409).
    ///
    /// # Errors
    /// As for [`delete`](Self::delete).
    pub fn delete_bound(&self, name: &str, pid: u32) -> Result<(), ClientError> {
        let path = format!("{}?pid={pid}", task_path(name));
        self.call("DELETE", &path, None).map(drop)
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

/// What a create or refresh says besides the expiry. `None` fields are
/// left out: the daemon then keeps the task's reason and binding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HoldDetails {
    pub reason: Option<String>,
    /// The process whose exit ends the hold.
    pub pid: Option<u32>,
}

impl HoldDetails {
    fn add_to(&self, body: &mut Value) {
        if let Some(reason) = &self.reason {
            body["reason"] = Value::from(reason.as_str());
        }
        if let Some(pid) = self.pid {
            body["pid"] = Value::from(pid);
        }
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
    /// Bounds each wait of [`next_line`](Self::next_line) for bytes: past
    /// it, `next_line` fails with [`ClientError::Io`] of kind `WouldBlock`
    /// or `TimedOut`. `None` waits for as long as the stream is silent.
    ///
    /// # Errors
    /// [`ClientError::Io`] for a zero timeout or a socket that refuses it.
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) -> Result<(), ClientError> {
        self.stream
            .set_read_timeout(timeout)
            .map_err(ClientError::Io)
    }

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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn task_paths() {
        assert_eq!(task_path("agent-1.a_b:c@d"), "/v1/tasks/agent-1.a_b:c@d");
        assert_eq!(task_path("a/b c%"), "/v1/tasks/a%2Fb%20c%25");
        assert_eq!(task_path("é"), "/v1/tasks/%C3%A9");
    }
}
