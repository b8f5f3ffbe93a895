//! The HTTP/1.1 client of `sprite-env tasks`, over the daemon's Unix socket:
//! one connection per request, a whole exchange within one deadline, every
//! buffer bounded; and the event stream, which has no deadline after its head.
//!
//! Only the blocking I/O is here: connecting within a deadline, reading and
//! writing against it, and the typed calls of the API; the stream of
//! `GET /v1/events` after its head is [`super::events`]'s. The response
//! grammar (head, body framing, the strict chunked decoder) is
//! [`crate::http`]'s, the same the daemon frames requests with. Depends on
//! [`crate::http`], and on [`crate::api`] for the paths and wire types.

use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::events::EventStream;
use super::report::Usage;
use crate::api::{EVENTS_PATH, STATUS_PATH, TASKS_PATH, TaskList, TaskView};
use crate::http::{
    BodyFraming, ChunkLimits, ChunkedDecoder, ChunkedError, ResponseError, ResponseHead,
    body_framing, header_value, parse_response_head,
};

/// The usage report. (The daemon's routes will name it in [`crate::api`];
/// the client says it here until they do.)
pub const USAGE_PATH: &str = "/v1/usage";

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

/// Largest response body read into memory. A list of the daemon's maximum
/// 10,000 tasks is about 1.5 MB; the bound keeps a runaway peer from
/// exhausting memory.
pub const MAX_RESPONSE_BODY: usize = 16 * 1024 * 1024;

/// The bounds of a chunked response body: the grammar's line and trailer
/// limits, and [`MAX_RESPONSE_BODY`].
const RESPONSE_CHUNKS: ChunkLimits = ChunkLimits::with_max_body(MAX_RESPONSE_BODY);

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

impl From<ResponseError> for ClientError {
    fn from(error: ResponseError) -> Self {
        ClientError::Protocol(error.to_string())
    }
}

impl From<ChunkedError> for ClientError {
    fn from(error: ChunkedError) -> Self {
        ClientError::Protocol(error.to_string())
    }
}

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

    /// `GET /v1/usage`: the raw body and the report of the window from
    /// `since` to `until` (each an RFC 3339 time or a duration back from
    /// now; the daemon's defaults, the last 24 hours, when `None`), with a
    /// timeline of `buckets` columns (none when 0).
    ///
    /// # Errors
    /// As for [`list`](Self::list); a window the daemon cannot read is
    /// [`ClientError::Api`] (400), and a daemon without the report 404.
    pub fn usage(
        &self,
        since: Option<&str>,
        until: Option<&str>,
        buckets: usize,
    ) -> Result<(Vec<u8>, Usage), ClientError> {
        let response = self.call("GET", &usage_path(since, until, buckets), None)?;
        let usage = decode_json(&response.body)?;
        Ok((response.body, usage))
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
        let framing = body_framing(&head, "GET", MAX_RESPONSE_BODY)?;
        EventStream::open(stream, framing, &buffer)
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

/// The fields of `GET /v1/status`. Those after the first four are absent
/// from daemons before they existed.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct Status {
    pub held: bool,
    pub tasks: u64,
    pub held_until: Option<String>,
    pub idle_since: Option<String>,
    /// Names released by `--max-held-for` and not re-armed since (the
    /// first few by name).
    #[serde(default)]
    pub tripped: Vec<Tripped>,
    /// How many names are tripped, including those `tripped` leaves out.
    #[serde(default)]
    pub tripped_count: u64,
}

/// A name released for being held past its limit: creating it again is
/// refused until it is deleted (re-armed).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct Tripped {
    pub task: String,
    /// Its owner, when known.
    #[serde(default)]
    pub uid: Option<u32>,
    pub tripped_at: String,
    /// How long it was held, continuously, when released.
    pub held_seconds: f64,
    /// The limit it reached.
    pub limit_seconds: f64,
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
    percent_encode_into(&mut path, name);
    path
}

/// The target of `GET /v1/usage`: each given parameter percent-encoded (an
/// RFC 3339 offset's `+` would otherwise read as a space), `buckets` left
/// out when 0 (the daemon's default).
pub fn usage_path(since: Option<&str>, until: Option<&str>, buckets: usize) -> String {
    let mut path = USAGE_PATH.to_owned();
    let buckets = (buckets > 0).then(|| buckets.to_string());
    let parameters = [
        ("since", since),
        ("until", until),
        ("buckets", buckets.as_deref()),
    ];
    let mut separator = '?';
    for (key, value) in parameters {
        if let Some(value) = value {
            path.push(separator);
            path.push_str(key);
            path.push('=');
            percent_encode_into(&mut path, value);
            separator = '&';
        }
    }
    path
}

/// Appends `text` with every byte but the unreserved ones (RFC 3986) and
/// `:` and `@` (allowed as they are in a path segment and in a query)
/// percent-encoded.
fn percent_encode_into(out: &mut String, text: &str) {
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~:@".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
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

/// Reads the head of the final response (skipping interim 1xx ones);
/// `buffer` keeps what was read past it.
fn read_head(
    reader: &mut DeadlineReader<'_>,
    buffer: &mut Vec<u8>,
) -> Result<ResponseHead, ClientError> {
    loop {
        match parse_response_head(buffer, MAX_RESPONSE_HEAD)? {
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

/// Reads the body after `head`, starting from the bytes already in `buffer`.
fn read_body(
    reader: &mut DeadlineReader<'_>,
    head: &ResponseHead,
    method: &str,
    mut buffer: Vec<u8>,
) -> Result<Vec<u8>, ClientError> {
    let too_large = || {
        ClientError::Protocol(format!(
            "a body over the limit of {MAX_RESPONSE_BODY} bytes"
        ))
    };
    match body_framing(head, method, MAX_RESPONSE_BODY)? {
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
            let mut decoder = ChunkedDecoder::new(RESPONSE_CHUNKS);
            let mut body = Vec::new();
            loop {
                let used = decoder.decode(&buffer, &mut body)?;
                buffer.drain(..used);
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn usage_paths() {
        let cases = [
            (None, None, 0, "/v1/usage"),
            (Some("24h"), None, 60, "/v1/usage?since=24h&buckets=60"),
            (None, Some("90m"), 0, "/v1/usage?until=90m"),
            (
                Some("2026-06-02T17:00:00+02:00"),
                Some("2026-06-02T18:00:00.5Z"),
                1000,
                "/v1/usage?since=2026-06-02T17:00:00%2B02:00&until=2026-06-02T18:00:00.5Z&buckets=1000",
            ),
            (
                Some("1h&buckets=7"),
                Some("a b#c"),
                0,
                "/v1/usage?since=1h%26buckets%3D7&until=a%20b%23c",
            ),
        ];
        for (since, until, buckets, expected) in cases {
            assert_eq!(usage_path(since, until, buckets), expected);
        }
    }

    #[test]
    fn statuses_of_older_daemons_still_decode() {
        let old: Status =
            serde_json::from_str(r#"{"held":false,"tasks":0,"held_until":null,"idle_since":null}"#)
                .unwrap();
        assert!(old.tripped.is_empty());
        assert_eq!(old.tripped_count, 0);
        let new: Status = serde_json::from_str(
            r#"{"held":false,"tasks":0,"held_until":null,"idle_since":null,
                "tripped":[{"task":"loop","uid":null,"tripped_at":"2026-06-02T17:00:00Z",
                            "held_seconds":3.0,"limit_seconds":3.0}],
                "tripped_count":1}"#,
        )
        .unwrap();
        assert_eq!(
            new.tripped,
            [Tripped {
                task: "loop".into(),
                uid: None,
                tripped_at: "2026-06-02T17:00:00Z".into(),
                held_seconds: 3.0,
                limit_seconds: 3.0,
            }]
        );
        assert_eq!(new.tripped_count, 1);
    }
}
