//! Routes and JSON: a framed request becomes a [`Command`] for the state
//! machine, a [`Query`] answered from it, or an error response; an outcome
//! becomes a response.
//!
//! Pure; depends on [`crate::http`], [`crate::tasks`], [`crate::expire`] and
//! [`crate::time`].
//!
//! Decisions the seed leaves open, made here:
//! - A JSON body is accepted whatever its `Content-Type` (`curl -d` sends a
//!   form type).
//! - The body is one JSON object with the fields `name` and `expire`; an
//!   unknown field (a typo such as `expires`), a duplicate field or a field of
//!   the wrong type is 400 with the reason, never silently ignored.
//! - A path segment is percent-decoded once; the result must be UTF-8 and a
//!   valid [`TaskName`], so `%2F`, `%00` and invalid UTF-8 are 400.
//! - `PUT /v1/tasks/:name` may repeat the name in the body; a different one
//!   is 400.
//! - A create or refresh may carry a `reason` ([`check_reason`]'s rule) and
//!   a `pid` to bind the hold to. The pid is only checked for range here;
//!   whether the daemon can see that process is the reactor's question
//!   ([`Routed::Mutation`]'s `bind_pid`). The holder is never in the body:
//!   the reactor takes it from the socket, and so the command's `caller`,
//!   left `None` here.
//! - A refresh or delete refused by ownership is 403; a uid over its quota
//!   is 507, like the daemon's own limits.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::expire::JsonDuration;
use crate::http::{HttpDate, Method, Request, Response};
use crate::tasks::{
    Claim, Command, Holder, Outcome, Task, TaskError, TaskName, Tasks, check_reason,
};
use crate::text::JsonText;
use crate::time::Timestamp;
use crate::usage::{History, Window};

mod query;

pub use query::{UsageQuery, When};
use query::{percent_decode, pid_parameter, since_parameter, usage_query};

/// The collection path.
pub const TASKS_PATH: &str = "/v1/tasks";
/// Held/idle state.
pub const STATUS_PATH: &str = "/v1/status";
/// The event stream.
pub const EVENTS_PATH: &str = "/v1/events";
/// Prometheus metrics.
pub const METRICS_PATH: &str = "/metrics";
/// What kept the machine awake over a window.
pub const USAGE_PATH: &str = "/v1/usage";
/// This API's OpenAPI 3.1 description.
pub const OPENAPI_PATH: &str = "/v1/openapi.json";

/// The OpenAPI 3.1 document of every route, status and body above:
/// `docs/openapi.json`, embedded so that the daemon serves the very file
/// its tests validate its answers against (`tests/openapi.rs`).
pub const OPENAPI_DOCUMENT: &str = include_str!("../../docs/openapi.json");

const COLLECTION_ALLOW: &str = "GET, HEAD, POST, PUT";
const ITEM_ALLOW: &str = "GET, HEAD, PUT, DELETE";
const READ_ONLY_ALLOW: &str = "GET, HEAD";
/// The event stream has no HEAD: its head alone would open a stream.
const EVENTS_ALLOW: &str = "GET";
const EXAMPLE_BODY: &str = r#"{"name": "agent", "expire": "1h"}"#;

/// What a request asks of the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routed {
    /// A change, planned into the turn's batch and answered after its commit.
    /// `bind_pid` is the process a create or refresh asks to be bound to;
    /// the reactor resolves it into the command's
    /// [`Claim::binding`](crate::tasks::Claim) before planning.
    Mutation {
        command: Command,
        bind_pid: Option<u32>,
    },
    /// A read of the tasks, answered by [`answer`] from the committed state.
    Query(Query),
    /// `GET /metrics`: answered by the reactor, which owns the counters.
    Metrics,
    /// `GET /v1/events`: replay what came after `since`, then stream.
    Events { since: Option<u64> },
    /// Answered at once, whatever the state: an error, or the API's
    /// description.
    Reply(Response),
}

/// A read of the tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    List,
    Get(TaskName),
    /// `GET /v1/status`.
    Status,
    /// `GET /v1/usage`.
    Usage(UsageQuery),
}

/// A `PUT`'s mutation, whether its name came from the path or the body.
fn upsert(name: TaskName, body: &TaskBody, max_expire: Duration) -> Result<Routed, Response> {
    Ok(Routed::Mutation {
        command: Command::Upsert {
            name,
            expire: body.expire(max_expire)?,
            claim: body.claim()?,
            caller: None,
        },
        bind_pid: body.bind_pid()?,
    })
}

/// Every label [`route`] gives: the metrics' `route` values.
pub const ROUTE_LABELS: &[&str] = &[
    "list", "create", "upsert", "get", "delete", "status", "usage", "events", "metrics", "openapi",
    "other",
];

/// Routes a request. Returns the metrics label of its route (bounded,
/// whatever the path) with what it asks.
pub fn route(request: &Request, max_expire: Duration) -> (&'static str, Routed) {
    let mut label = "other";
    match route_inner(request, max_expire, &mut label) {
        Ok(routed) => (label, routed),
        Err(response) => (label, Routed::Reply(response)),
    }
}

fn route_inner(
    request: &Request,
    max_expire: Duration,
    label: &mut &'static str,
) -> Result<Routed, Response> {
    // RFC 9110 section 9.1: a method the server does not implement is 501,
    // whatever the target (`OPTIONS *` included); 405 is for a method it
    // implements but not on that resource.
    if let Method::Other(token) = &request.method {
        return Err(error(
            501,
            format!(
                "method {token} is not implemented; the API uses GET, HEAD, POST, PUT and DELETE"
            ),
        ));
    }
    let path = request_path(&request.target)?;
    let read_only = |routed: Routed| match request.method {
        Method::Get | Method::Head => Ok(routed),
        _ => Err(not_allowed(&request.method, READ_ONLY_ALLOW)),
    };
    match path {
        STATUS_PATH => {
            *label = "status";
            return read_only(Routed::Query(Query::Status));
        }
        METRICS_PATH => {
            *label = "metrics";
            return read_only(Routed::Metrics);
        }
        OPENAPI_PATH => {
            *label = "openapi";
            return read_only(Routed::Reply(openapi_document()));
        }
        USAGE_PATH => {
            *label = "usage";
            let query = usage_query(&request.target)?;
            return read_only(Routed::Query(Query::Usage(query)));
        }
        EVENTS_PATH => {
            *label = "events";
            if request.method != Method::Get {
                return Err(not_allowed(&request.method, EVENTS_ALLOW));
            }
            let since = since_parameter(&request.target)?;
            return Ok(Routed::Events { since });
        }
        _ => {}
    }
    if path == TASKS_PATH {
        *label = match request.method {
            Method::Get | Method::Head => "list",
            Method::Post => "create",
            Method::Put => "upsert",
            _ => "other",
        };
        return route_collection(request, max_expire);
    }
    let Some(segment) = path
        .strip_prefix(TASKS_PATH)
        .and_then(|rest| rest.strip_prefix('/'))
    else {
        return Err(error(
            404,
            format!("no such endpoint \"{path}\"; the API is under {TASKS_PATH}"),
        ));
    };
    *label = match request.method {
        Method::Get | Method::Head => "get",
        Method::Put => "upsert",
        Method::Delete => "delete",
        _ => "other",
    };
    if segment.contains('/') {
        return Err(error(
            404,
            format!("no such endpoint \"{path}\"; a task is addressed as {TASKS_PATH}/NAME"),
        ));
    }
    let name = decode_name(segment)?;
    match request.method {
        Method::Get | Method::Head => Ok(Routed::Query(Query::Get(name))),
        Method::Delete => Ok(Routed::Mutation {
            command: Command::Delete {
                name,
                caller: None,
                bound_to: pid_parameter(&request.target)?,
            },
            bind_pid: None,
        }),
        Method::Put => {
            let body = TaskBody::decode(&request.body)?;
            if let Some(other) = body
                .name
                .as_ref()
                .map(|other| &*other.0)
                .filter(|other| *other != name.as_str())
            {
                return Err(error(
                    400,
                    format!(
                        "the body names task \"{other}\" but the path names \"{name}\"; drop the body's name or make them agree"
                    ),
                ));
            }
            upsert(name, &body, max_expire)
        }
        _ => Err(not_allowed(&request.method, ITEM_ALLOW)),
    }
}

/// `GET`, `POST` and `PUT` on the collection.
fn route_collection(request: &Request, max_expire: Duration) -> Result<Routed, Response> {
    match request.method {
        Method::Get | Method::Head => Ok(Routed::Query(Query::List)),
        Method::Post => {
            let body = TaskBody::decode(&request.body)?;
            let name = body.required_name()?;
            let expire = body.expire(max_expire)?;
            let claim = body.claim()?;
            Ok(Routed::Mutation {
                command: Command::Create {
                    name,
                    expire,
                    claim,
                    caller: None,
                },
                bind_pid: body.bind_pid()?,
            })
        }
        Method::Put => {
            let body = TaskBody::decode(&request.body)?;
            let name = body.required_name()?;
            upsert(name, &body, max_expire)
        }
        _ => Err(not_allowed(&request.method, COLLECTION_ALLOW)),
    }
}

/// The path of a request target: the query is dropped, and an absolute-form
/// target (`http://sprite/v1/tasks`) is reduced to its path.
fn request_path(target: &str) -> Result<&str, Response> {
    // A byte search: `split(['?', '#'])` decoded and matched a char at a
    // time, about 120 instructions for a 20-byte target (callgrind, GET).
    let end = target
        .bytes()
        .position(|byte| byte == b'?' || byte == b'#')
        .unwrap_or(target.len());
    let without_query = &target[..end];
    // An origin-form target (nearly all) is the path already; only an
    // absolute-form one (`http://sprite/...`) is searched for its scheme.
    let path = if without_query.starts_with('/') {
        without_query
    } else {
        match without_query.split_once("://") {
            Some((_, rest)) => rest.find('/').map_or("/", |at| &rest[at..]),
            None => without_query,
        }
    };
    if !path.starts_with('/') {
        return Err(error(
            400,
            format!("the request target \"{target}\" is not a path"),
        ));
    }
    Ok(path)
}

/// Percent-decodes a path segment once and validates it as a task name.
fn decode_name(segment: &str) -> Result<TaskName, Response> {
    if !segment.contains('%') {
        // Nearly every name: nothing to decode, nothing to copy.
        return TaskName::parse(segment).map_err(|e| error(400, e.to_string()));
    }
    let bytes = percent_decode(segment).ok_or_else(|| {
        error(
            400,
            format!("invalid percent-encoding in the task name \"{segment}\""),
        )
    })?;
    let text = String::from_utf8(bytes)
        .map_err(|_| error(400, "the task name is not valid UTF-8 once percent-decoded"))?;
    TaskName::parse(&text).map_err(|e| error(400, e.to_string()))
}

/// The JSON body of a create or refresh.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskBody<'a> {
    #[serde(borrow)]
    name: Option<JsonText<'a>>,
    #[serde(borrow)]
    expire: Option<JsonDuration<'a>>,
    reason: Option<String>,
    pid: Option<Value>,
    #[serde(borrow)]
    max_held_for: Option<JsonDuration<'a>>,
}

/// The longest per-task `max_held_for` accepted: a year. It only lowers
/// the daemon's `--max-held-for`; longer is no limit a person meant.
pub const MAX_HELD_FOR_CEILING: Duration = Duration::from_secs(366 * 24 * 3600);

impl<'a> TaskBody<'a> {
    fn decode(body: &'a [u8]) -> Result<TaskBody<'a>, Response> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(error(
                400,
                format!("the request body is empty; send a JSON object such as {EXAMPLE_BODY}"),
            ));
        }
        serde_json::from_slice(body).map_err(|e| {
            error(
                400,
                format!("the request body is not a task object ({e}); send a JSON object such as {EXAMPLE_BODY}"),
            )
        })
    }

    fn required_name(&self) -> Result<TaskName, Response> {
        let name = self.name.as_ref().map(|name| &*name.0).ok_or_else(|| {
            error(
                400,
                format!("the body has no \"name\"; send a JSON object such as {EXAMPLE_BODY}"),
            )
        })?;
        TaskName::parse(name).map_err(|e| error(400, e.to_string()))
    }

    fn expire(&self, max: Duration) -> Result<Duration, Response> {
        let value = self.expire.as_ref().ok_or_else(|| {
            error(
                400,
                format!("the body has no \"expire\"; send a JSON object such as {EXAMPLE_BODY}"),
            )
        })?;
        value.decode(max).map_err(|e| error(400, e.to_string()))
    }

    /// The claim the body makes: its reason. The holder and the binding
    /// are the reactor's to fill in.
    fn claim(&self) -> Result<Claim, Response> {
        if let Some(reason) = &self.reason {
            check_reason(reason).map_err(|e| error(400, e))?;
        }
        let max_held_for = match &self.max_held_for {
            Some(value) => Some(value.decode(MAX_HELD_FOR_CEILING).map_err(|e| {
                error(
                    400,
                    format!(
                        "\"max_held_for\" (the longest this task may be held in one stretch, across refreshes) is refused: {}",
                        e.to_string().replacen("expire", "max_held_for", 1)
                    ),
                )
            })?),
            None => None,
        };
        Ok(Claim {
            reason: self.reason.clone(),
            max_held_for,
            ..Claim::default()
        })
    }

    /// The `pid` to bind the hold to: a positive integer within the range
    /// of Linux pids.
    fn bind_pid(&self) -> Result<Option<u32>, Response> {
        let Some(value) = &self.pid else {
            return Ok(None);
        };
        value
            .as_u64()
            .filter(|pid| (1..=MAX_PID).contains(pid))
            .map(|pid| Some(pid as u32))
            .ok_or_else(|| {
                error(
                    400,
                    format!("\"pid\" is {value}; it must be the number of a running process (1 to {MAX_PID}) whose exit ends the hold"),
                )
            })
    }
}

/// Most tasks `GET /v1/status` names in `held_by` (the first by name):
/// enough to answer "what keeps this machine awake?" at a glance, while
/// the status stays one small object with ten thousand tasks live. The
/// list has them all.
pub const MAX_STATUS_HOLDERS: usize = 16;

/// The largest pid Linux hands out (`PID_MAX_LIMIT` on 64-bit, 2^22).
const MAX_PID: u64 = 1 << 22;

/// A task as the API shows it. The fields after the seed's three are
/// `null` when unknown, and absent from daemons before they existed.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TaskView {
    pub name: String,
    pub started_at: String,
    pub expires_at: String,
    #[serde(default)]
    pub reason: Option<String>,
    /// The process whose exit ends the hold.
    #[serde(default)]
    pub pid: Option<u32>,
    /// The latest writer.
    #[serde(default)]
    pub holder: Option<HolderView>,
    /// The uid that created the task.
    #[serde(default)]
    pub owner: Option<u32>,
}

/// The process that last created or refreshed a task.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct HolderView {
    pub pid: Option<u32>,
    pub uid: Option<u32>,
    pub command: Option<String>,
    pub parent_pid: Option<u32>,
    pub parent_command: Option<String>,
}

impl From<&Holder> for HolderView {
    fn from(holder: &Holder) -> Self {
        HolderView {
            pid: holder.pid,
            uid: holder.uid,
            command: holder.command.as_deref().map(str::to_owned),
            parent_pid: holder.parent_pid,
            parent_command: holder.parent_command.as_deref().map(str::to_owned),
        }
    }
}

impl From<&Task> for TaskView {
    fn from(task: &Task) -> Self {
        TaskView {
            name: task.name.as_str().to_owned(),
            started_at: task.started_at.to_string(),
            expires_at: task.expires_at.to_string(),
            reason: task.reason.clone(),
            pid: task.binding.map(|binding| binding.pid),
            holder: task.holder.as_ref().map(HolderView::from),
            owner: task.owner,
        }
    }
}

/// Writes a task as the daemon answers it: byte for byte what serializing
/// its [`TaskView`] gives, straight from the task, without building its
/// strings or going through a serializer (every answer carries one).
fn write_task(task: &Task, out: &mut Vec<u8>) {
    // A name needs no escaping (its characters are `TaskName`'s), nor do
    // timestamps and numbers.
    out.extend_from_slice(b"{\"name\":\"");
    out.extend_from_slice(task.name.as_bytes());
    out.extend_from_slice(b"\",\"started_at\":\"");
    out.extend_from_slice(&task.started_at.rfc3339());
    out.extend_from_slice(b"\",\"expires_at\":\"");
    out.extend_from_slice(&task.expires_at.rfc3339());
    out.extend_from_slice(b"\",\"reason\":");
    write_text(task.reason.as_deref(), out);
    out.extend_from_slice(b",\"pid\":");
    write_number(task.binding.map(|binding| binding.pid), out);
    out.extend_from_slice(b",\"holder\":");
    match &task.holder {
        None => out.extend_from_slice(b"null"),
        Some(holder) => {
            out.extend_from_slice(b"{\"pid\":");
            write_number(holder.pid, out);
            out.extend_from_slice(b",\"uid\":");
            write_number(holder.uid, out);
            out.extend_from_slice(b",\"command\":");
            write_text(holder.command.as_deref(), out);
            out.extend_from_slice(b",\"parent_pid\":");
            write_number(holder.parent_pid, out);
            out.extend_from_slice(b",\"parent_command\":");
            write_text(holder.parent_command.as_deref(), out);
            out.push(b'}');
        }
    }
    out.extend_from_slice(b",\"owner\":");
    write_number(task.owner, out);
    out.push(b'}');
}

/// A JSON string, or `null`.
fn write_text(text: Option<&str>, out: &mut Vec<u8>) {
    match text {
        Some(text) => crate::text::push_json_string(out, text),
        None => out.extend_from_slice(b"null"),
    }
}

/// A JSON number, or `null`.
fn write_number(number: Option<u32>, out: &mut Vec<u8>) {
    match number {
        Some(number) => crate::text::push_u64(out, number.into()),
        None => out.extend_from_slice(b"null"),
    }
}

/// Room for one task's JSON without growing: a task with a holder and a
/// reason is 300 to 600 bytes.
const TASK_JSON_CAPACITY: usize = 512;

/// The answer carrying one task.
fn task_response(status: u16, task: &Task) -> Response {
    let mut body = Response::body_buffer(TASK_JSON_CAPACITY);
    write_task(task, &mut body);
    body.push(b'\n');
    Response::json(status, body)
}

/// The body of `GET /v1/tasks`.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TaskList {
    pub tasks: Vec<TaskView>,
}

/// Answers a read from the state at `now`. `idle_since` is when the last
/// hold ended, if known.
pub fn answer(
    query: &Query,
    tasks: &Tasks,
    usage: &History,
    idle_since: Option<Timestamp>,
    now: Timestamp,
) -> Response {
    match query {
        Query::Usage(query) => {
            let until = query.until.map_or(now, |until| until.at(now)).min(now);
            let since = match query.since {
                Some(since) => since.at(now),
                None => When::Ago(crate::usage::DEFAULT_USAGE_WINDOW).at(until),
            };
            if since >= until {
                return error(
                    400,
                    format!(
                        "since ({since}) is not before until ({until}); ask for a window such as since=24h"
                    ),
                );
            }
            let report = crate::usage::report(
                usage,
                crate::usage::open_holds(tasks.stored_rows()),
                Window { since, until },
                query.buckets,
                now,
            );
            json(200, &report)
        }
        Query::List => {
            let mut body = b"{\"tasks\":[".to_vec();
            for (i, task) in tasks.live(now).enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                write_task(task, &mut body);
            }
            body.extend_from_slice(b"]}\n");
            Response::json(200, body)
        }
        Query::Get(name) => match tasks.get(name, now) {
            Some(task) => task_response(200, task),
            None => task_error(&TaskError::NotFound(name.clone())),
        },
        Query::Status => {
            let live = tasks.live_count(now);
            let held_until = tasks.last_deadline().filter(|_| live > 0);
            let held_by: Vec<Value> = tasks
                .first_live(now, MAX_STATUS_HOLDERS)
                .into_iter()
                .map(|task| {
                    let holder = task.holder.as_ref();
                    serde_json::json!({
                        "task": task.name.as_str(),
                        "reason": task.reason,
                        "pid": task.binding.map(|binding| binding.pid),
                        "command": holder.and_then(|h| h.command.as_deref()),
                        "parent_command": holder.and_then(|h| h.parent_command.as_deref()),
                    })
                })
                .collect();
            let tripped: Vec<Value> = tasks
                .tripped()
                .iter()
                .take(MAX_STATUS_HOLDERS)
                .map(|(name, trip)| {
                    serde_json::json!({
                        "task": name.as_str(),
                        "uid": trip.owner,
                        "tripped_at": trip.at.to_string(),
                        "held_seconds": trip.held.as_secs_f64(),
                        "limit_seconds": trip.limit.as_secs_f64(),
                    })
                })
                .collect();
            json(
                200,
                &serde_json::json!({
                    "held": live > 0,
                    "tasks": live,
                    "held_until": held_until.map(|at| at.to_string()),
                    "idle_since": idle_since.filter(|_| live == 0).map(|at| at.to_string()),
                    "held_by": held_by,
                    "tripped": tripped,
                    "tripped_count": tasks.tripped().len(),
                }),
            )
        }
    }
}

/// The response head of an event stream: chunked newline-delimited JSON
/// on HTTP/1.1, a body that ends when the connection does on HTTP/1.0.
pub fn stream_head(minor_version: u8, date: &HttpDate) -> Vec<u8> {
    let framing: &[u8] = if minor_version == 0 {
        b"Connection: close\r\n"
    } else {
        b"Transfer-Encoding: chunked\r\n"
    };
    let mut head = b"HTTP/1.1 200 OK\r\nDate: ".to_vec();
    head.extend_from_slice(date.as_bytes());
    head.extend_from_slice(
        b"\r\nContent-Type: application/x-ndjson\r\nCache-Control: no-store\r\n",
    );
    head.extend_from_slice(framing);
    head.extend_from_slice(b"\r\n");
    head
}

/// One line of an event stream, framed as a chunk on HTTP/1.1.
pub fn stream_chunk(minor_version: u8, line: &[u8], out: &mut Vec<u8>) {
    if minor_version == 0 {
        out.extend_from_slice(line);
    } else {
        out.extend_from_slice(format!("{:x}\r\n", line.len()).as_bytes());
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
}

/// The end of an event stream.
pub fn stream_end(minor_version: u8, out: &mut Vec<u8>) {
    if minor_version != 0 {
        out.extend_from_slice(b"0\r\n\r\n");
    }
}

/// `GET /v1/openapi.json`: [`OPENAPI_DOCUMENT`]. Copied per request; it is
/// asked for by tools, not on any hot path.
fn openapi_document() -> Response {
    Response::json(200, OPENAPI_DOCUMENT.as_bytes().to_vec())
}

/// The metrics page.
pub fn metrics_page(text: String) -> Response {
    Response {
        status: 200,
        body: text.into_bytes(),
        content_type: "text/plain; version=0.0.4",
        allow: None,
    }
}

/// The response to a command once its batch is durable.
pub fn outcome(result: &Result<Outcome, TaskError>) -> Response {
    match result {
        Ok(Outcome::Created(task)) => task_response(201, task),
        // The seed: PUT "creates the task or refreshes its expiry. Returns 200."
        Ok(Outcome::Upserted { task, .. }) => task_response(200, task),
        Ok(Outcome::Deleted) => Response::empty(204),
        Err(e) => task_error(e),
    }
}

/// The response to every command of a batch whose commit failed.
pub fn commit_failed() -> Response {
    error(
        503,
        "the change could not be confirmed on disk, so it may or may not have been made; retry shortly, and if this persists check the daemon's log and free disk space",
    )
}

fn task_error(e: &TaskError) -> Response {
    let status = match e {
        TaskError::NameTaken(_)
        | TaskError::BoundElsewhere { .. }
        | TaskError::NotBoundTo { .. }
        | TaskError::Tripped { .. } => 409,
        TaskError::NotFound(_) => 404,
        TaskError::Full { .. } | TaskError::TooManyBound { .. } | TaskError::UidFull { .. } => 507,
        TaskError::NotOwner { .. } | TaskError::UnknownCaller => 403,
        TaskError::TimeOverflow => 400,
    };
    error(status, e.to_string())
}

fn not_allowed(method: &Method, allow: &'static str) -> Response {
    let mut response = error(
        405,
        format!(
            "method {} is not allowed here; use {allow}",
            method.as_str()
        ),
    );
    response.allow = Some(allow);
    response
}

/// A JSON error response: `{"error": message}`.
pub fn error(status: u16, message: impl AsRef<str>) -> Response {
    // Written straight, as `serde_json` would write the object: a client
    // polling for a missing task gets a 404 for every request, and a
    // `Value` built and dropped per error cost about 2,000 instructions.
    let message = message.as_ref();
    let mut body = Vec::with_capacity(message.len() + 13);
    body.extend_from_slice(b"{\"error\":");
    crate::text::push_json_string(&mut body, message);
    body.extend_from_slice(b"}\n");
    Response::json(status, body)
}

/// A JSON body ending in a newline, so that `curl` output does not run into
/// the shell prompt.
fn json(status: u16, value: &impl Serialize) -> Response {
    // Serializing our own plain structs cannot fail; an empty object is the
    // fallback should that ever change.
    let mut body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    body.push(b'\n');
    Response::json(status, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_body_is_what_serde_json_writes() {
        for message in [
            "task \"a\" not found",
            "tab\there, line\nbreak, \u{1} and \\",
            "✓ ünïcode",
            "",
        ] {
            let mut expected =
                serde_json::to_vec(&serde_json::json!({ "error": message })).unwrap();
            expected.push(b'\n');
            assert_eq!(error(404, message).body, expected, "{message:?}");
        }
    }

    /// The path is what precedes the first `?` or `#`, in origin form or
    /// after an absolute form's authority.
    #[test]
    fn a_targets_path_ends_at_its_query_or_fragment() {
        for (target, path) in [
            ("/v1/tasks/a", Ok("/v1/tasks/a")),
            ("/v1/tasks/a?pid=1", Ok("/v1/tasks/a")),
            ("/v1/tasks/a#x?y", Ok("/v1/tasks/a")),
            ("/v1/tasks/a?x#y", Ok("/v1/tasks/a")),
            ("/v1/tasks?", Ok("/v1/tasks")),
            ("http://sprite/v1/tasks?x=1", Ok("/v1/tasks")),
            ("http://sprite?x=/v1", Ok("/")),
            ("?x", Err(400)),
            ("#/v1/tasks", Err(400)),
            ("v1/tasks", Err(400)),
        ] {
            assert_eq!(
                request_path(target).map_err(|response| response.status),
                path,
                "{target:?}"
            );
        }
    }

    fn no_history() -> History {
        History::new(crate::usage::DEFAULT_USAGE_RETENTION)
    }

    fn route_only(request: &Request, max_expire: Duration) -> Routed {
        route(request, max_expire).1
    }

    const MAX: Duration = crate::expire::DEFAULT_MAX_EXPIRE;

    #[test]
    fn a_usage_window_takes_times_with_offsets_spans_and_buckets() {
        let at = |text| When::At(Timestamp::parse_rfc3339(text).unwrap());
        let query = |target: &str| usage_query(target).map_err(|r| r.status);
        assert_eq!(
            query("/v1/usage?since=2026-12-05T18:00:00%2B01:00&until=2h&buckets=60"),
            Ok(UsageQuery {
                since: Some(at("2026-12-05T17:00:00Z")),
                until: Some(When::Ago(Duration::from_secs(7200))),
                buckets: 60,
            })
        );
        // An unencoded `+` arrives as a space in some clients' eyes.
        assert_eq!(
            query("/v1/usage?since=2026-12-05T18:00:00+01:00").map(|q| q.since),
            Ok(Some(at("2026-12-05T17:00:00Z")))
        );
        assert_eq!(
            query("/v1/usage"),
            Ok(UsageQuery {
                since: None,
                until: None,
                buckets: 0
            })
        );
        for bad in ["since=yesterday", "until=%zz", "buckets=1001", "since=-1h"] {
            assert_eq!(query(&format!("/v1/usage?{bad}")), Err(400), "{bad}");
        }
    }

    #[test]
    fn tasks_are_written_as_their_views_serialize() {
        let plain = Task::new(
            TaskName::parse("A0.b_c-d:e@f").unwrap(),
            Timestamp::from_nanos(1_780_420_274_555_839_485),
            Timestamp::from_nanos(1_780_420_874_000_000_000),
        );
        let full = Task {
            reason: Some("quote \" backslash \\ tab \t nul \u{0} é 😀".into()),
            binding: Some(crate::tasks::Binding {
                pid: 4_294_967_295,
                start_time: 7,
            }),
            holder: Some(Holder {
                pid: Some(1),
                uid: Some(0),
                command: Some("bash -c 'echo \"hi\"'\n".into()),
                parent_pid: None,
                parent_command: Some("\u{7f}\u{1f}".into()),
            }),
            owner: Some(1000),
            name: TaskName::parse("z-full").unwrap(),
            ..plain.clone()
        };
        // Nothing to escape (copied as it is), DEL and non-ASCII included.
        let clean = Task {
            holder: Some(Holder {
                command: Some("python3 agent.py --name ünï 😀 \u{7f}".into()),
                parent_command: Some("-bash".into()),
                ..Holder::default()
            }),
            reason: Some("a plain reason".into()),
            ..plain.clone()
        };
        for task in [&plain, &full, &clean] {
            let mut written = Vec::new();
            write_task(task, &mut written);
            assert_eq!(
                String::from_utf8(written).unwrap(),
                serde_json::to_string(&TaskView::from(task)).unwrap()
            );
        }
        let mut tasks = Tasks::new(8);
        tasks.load([plain.clone(), full.clone()]);
        let list = answer(&Query::List, &tasks, &no_history(), None, plain.started_at);
        let views = TaskList {
            tasks: vec![TaskView::from(&plain), TaskView::from(&full)],
        };
        let mut expected = serde_json::to_vec(&views).unwrap();
        expected.push(b'\n');
        assert_eq!(
            String::from_utf8(list.body).unwrap(),
            String::from_utf8(expected).unwrap()
        );
        let empty = answer(
            &Query::List,
            &Tasks::new(8),
            &no_history(),
            None,
            plain.started_at,
        );
        assert_eq!(empty.body, b"{\"tasks\":[]}\n");
    }

    fn request(method: Method, target: &str, body: &str) -> Request {
        Request {
            method,
            target: target.to_owned(),
            minor_version: 1,
            keep_alive: true,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn every_route_has_its_label_even_when_refused() {
        let cases = [
            (Method::Get, "/v1/tasks", "", "list"),
            (Method::Head, "/v1/tasks", "", "list"),
            (Method::Post, "/v1/tasks", "not json", "create"),
            (Method::Put, "/v1/tasks", "{}", "upsert"),
            (Method::Delete, "/v1/tasks", "", "other"),
            (Method::Get, "/v1/tasks/a", "", "get"),
            (Method::Put, "/v1/tasks/a", "{}", "upsert"),
            (Method::Delete, "/v1/tasks/a?pid=x", "", "delete"),
            (Method::Delete, "/v1/tasks/a/b", "", "delete"),
            (Method::Post, "/v1/status", "", "status"),
            (Method::Get, "/metrics", "", "metrics"),
            (Method::Get, "/v1/openapi.json", "", "openapi"),
            (Method::Put, "/v1/events", "", "events"),
            (Method::Get, "/v2/elsewhere", "", "other"),
            (Method::Other("BREW".into()), "/v1/tasks", "", "other"),
        ];
        for (method, target, body, label) in cases {
            let request = request(method, target, body);
            assert_eq!(route(&request, MAX).0, label, "{request:?}");
            assert!(ROUTE_LABELS.contains(&label));
        }
    }

    #[test]
    fn the_openapi_document_is_served_as_embedded_and_read_only() {
        for method in [Method::Get, Method::Head] {
            let Routed::Reply(response) = route_only(&request(method, "/v1/openapi.json", ""), MAX)
            else {
                panic!("the document is answered at once")
            };
            assert_eq!(response.status, 200);
            assert_eq!(response.content_type, "application/json");
            assert_eq!(response.body, OPENAPI_DOCUMENT.as_bytes());
        }
        for method in [Method::Post, Method::Put, Method::Delete] {
            let Routed::Reply(response) =
                route_only(&request(method, "/v1/openapi.json", "{}"), MAX)
            else {
                panic!("refused at once")
            };
            assert_eq!(response.status, 405);
            assert_eq!(response.allow, Some(READ_ONLY_ALLOW));
        }
    }

    #[test]
    fn the_openapi_document_names_exactly_the_routes_here() {
        let document: Value =
            serde_json::from_str(OPENAPI_DOCUMENT).expect("docs/openapi.json is JSON");
        assert_eq!(document["openapi"], "3.1.0");
        let mut documented: Vec<&str> = document["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .map(String::as_str)
            .collect();
        documented.sort_unstable();
        let item = format!("{TASKS_PATH}/{{name}}");
        let mut routed = vec![
            TASKS_PATH,
            item.as_str(),
            STATUS_PATH,
            EVENTS_PATH,
            METRICS_PATH,
            USAGE_PATH,
            OPENAPI_PATH,
        ];
        routed.sort_unstable();
        assert_eq!(documented, routed);
        assert!(
            OPENAPI_DOCUMENT.ends_with("}\n"),
            "one newline at the end, as every body"
        );
    }

    fn name(text: &str) -> TaskName {
        TaskName::parse(text).unwrap()
    }

    fn status_of(routed: Routed) -> u16 {
        match routed {
            Routed::Reply(response) => response.status,
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    #[test]
    fn routes_the_seed_requests() {
        let hour = Duration::from_secs(3600);
        let cases = vec![
            (
                request(Method::Get, "/v1/tasks", ""),
                Routed::Query(Query::List),
            ),
            (
                request(Method::Get, "http://sprite/v1/tasks?x=1", ""),
                Routed::Query(Query::List),
            ),
            (
                request(Method::Get, "/v1/tasks/agent", ""),
                Routed::Query(Query::Get(name("agent"))),
            ),
            (
                request(Method::Head, "/v1/tasks/agent", ""),
                Routed::Query(Query::Get(name("agent"))),
            ),
            (
                request(Method::Head, "/v1/tasks", ""),
                Routed::Query(Query::List),
            ),
            (
                request(Method::Head, "/v1/status", ""),
                Routed::Query(Query::Status),
            ),
            (
                request(
                    Method::Post,
                    "/v1/tasks",
                    r#"{ "name": "agent", "expire": "1h" }"#,
                ),
                Routed::Mutation {
                    command: Command::Create {
                        name: name("agent"),
                        expire: hour,
                        claim: Claim::default(),
                        caller: None,
                    },
                    bind_pid: None,
                },
            ),
            (
                request(Method::Put, "/v1/tasks/agent", r#"{ "expire": "1h" }"#),
                Routed::Mutation {
                    command: Command::Upsert {
                        name: name("agent"),
                        expire: hour,
                        claim: Claim::default(),
                        caller: None,
                    },
                    bind_pid: None,
                },
            ),
            (
                request(
                    Method::Put,
                    "/v1/tasks/agent",
                    r#"{ "name": "agent", "expire": 3600 }"#,
                ),
                Routed::Mutation {
                    command: Command::Upsert {
                        name: name("agent"),
                        expire: hour,
                        claim: Claim::default(),
                        caller: None,
                    },
                    bind_pid: None,
                },
            ),
            (
                request(
                    Method::Put,
                    "/v1/tasks",
                    r#"{"name":"my-task","expire":"1h"}"#,
                ),
                Routed::Mutation {
                    command: Command::Upsert {
                        name: name("my-task"),
                        expire: hour,
                        claim: Claim::default(),
                        caller: None,
                    },
                    bind_pid: None,
                },
            ),
            (
                request(Method::Delete, "/v1/tasks/agent", ""),
                Routed::Mutation {
                    command: Command::Delete {
                        name: name("agent"),
                        caller: None,
                        bound_to: None,
                    },
                    bind_pid: None,
                },
            ),
            (
                request(Method::Delete, "/v1/tasks/a%2Db", ""),
                Routed::Mutation {
                    command: Command::Delete {
                        name: name("a-b"),
                        caller: None,
                        bound_to: None,
                    },
                    bind_pid: None,
                },
            ),
            (
                request(Method::Delete, "/v1/tasks/agent?pid=42", ""),
                Routed::Mutation {
                    command: Command::Delete {
                        name: name("agent"),
                        caller: None,
                        bound_to: Some(42),
                    },
                    bind_pid: None,
                },
            ),
        ];
        for (request, expected) in cases {
            assert_eq!(route_only(&request, MAX), expected, "{request:?}");
        }
    }

    #[test]
    fn refusals_have_the_right_status() {
        let cases = vec![
            (request(Method::Get, "/", ""), 404),
            (request(Method::Get, "/v1/taskss", ""), 404),
            (request(Method::Get, "/v1/tasks/a/b", ""), 404),
            (request(Method::Get, "*", ""), 400),
            (request(Method::Delete, "/v1/tasks", ""), 405),
            (request(Method::Post, "/v1/tasks/agent", "{}"), 405),
            (
                request(Method::Other("PATCH".into()), "/v1/tasks/agent", ""),
                501,
            ),
            (request(Method::Other("OPTIONS".into()), "*", ""), 501),
            (
                request(Method::Other("OPTIONS".into()), "/v1/tasks", ""),
                501,
            ),
            (
                request(Method::Other("CONNECT".into()), "sprite:80", ""),
                501,
            ),
            (request(Method::Head, "/v1/events", ""), 405),
            (request(Method::Post, "/v1/status", ""), 405),
            (request(Method::Get, "/v1/tasks/a%2Fb", ""), 400),
            (request(Method::Get, "/v1/tasks/a%00", ""), 400),
            (request(Method::Get, "/v1/tasks/%ff", ""), 400),
            (request(Method::Get, "/v1/tasks/a%2", ""), 400),
            (request(Method::Get, "/v1/tasks/a%zz", ""), 400),
            (request(Method::Get, "/v1/tasks/a+b", ""), 400),
            (request(Method::Post, "/v1/tasks", ""), 400),
            (request(Method::Post, "/v1/tasks", "[]"), 400),
            (
                request(Method::Post, "/v1/tasks", "name=agent&expire=1h"),
                400,
            ),
            (
                request(Method::Post, "/v1/tasks", r#"{"expire":"1h"}"#),
                400,
            ),
            (request(Method::Post, "/v1/tasks", r#"{"name":"a"}"#), 400),
            (
                request(
                    Method::Post,
                    "/v1/tasks",
                    r#"{"name":"a","expire":"1h","x":1}"#,
                ),
                400,
            ),
            (
                request(Method::Post, "/v1/tasks", r#"{"name":"a","expires":"1h"}"#),
                400,
            ),
            (
                request(
                    Method::Post,
                    "/v1/tasks",
                    r#"{"name":"a","name":"b","expire":"1h"}"#,
                ),
                400,
            ),
            (
                request(Method::Post, "/v1/tasks", r#"{"name":5,"expire":"1h"}"#),
                400,
            ),
            (
                request(Method::Post, "/v1/tasks", r#"{"name":"a b","expire":"1h"}"#),
                400,
            ),
            (
                request(Method::Post, "/v1/tasks", r#"{"name":"a","expire":"2h"}"#),
                400,
            ),
            (
                request(Method::Post, "/v1/tasks", r#"{"name":"a","expire":0}"#),
                400,
            ),
            (
                request(Method::Post, "/v1/tasks", r#"{"name":"a","expire":"soon"}"#),
                400,
            ),
            (
                request(
                    Method::Post,
                    "/v1/tasks",
                    &format!("{}1{}", "[".repeat(200), "]".repeat(200)),
                ),
                400,
            ),
            (
                request(Method::Put, "/v1/tasks/a", r#"{"name":"b","expire":"1h"}"#),
                400,
            ),
            (
                request(Method::Put, "/v1/tasks/a", r#"{"expire":"1h"} trailing"#),
                400,
            ),
        ];
        for (request, expected) in cases {
            let routed = route_only(&request, MAX);
            assert_eq!(status_of(routed), expected, "{request:?}");
        }
        let Routed::Reply(response) = route_only(&request(Method::Delete, "/v1/tasks", ""), MAX)
        else {
            unreachable!()
        };
        assert_eq!(response.allow, Some(COLLECTION_ALLOW));
    }

    #[test]
    fn reason_and_pid_are_read_and_checked() {
        let routed = route_only(
            &request(
                Method::Put,
                "/v1/tasks/a",
                r#"{"expire":"5m","reason":"nightly build \"x\"","pid":4242}"#,
            ),
            MAX,
        );
        let Routed::Mutation {
            command: Command::Upsert { claim, .. },
            bind_pid,
        } = routed
        else {
            panic!("{routed:?}")
        };
        assert_eq!(claim.reason.as_deref(), Some("nightly build \"x\""));
        assert_eq!(claim.holder, None, "the holder never comes from the body");
        assert_eq!(bind_pid, Some(4242));
        let long = format!(
            r#"{{"name":"a","expire":"5m","reason":"{}"}}"#,
            "x".repeat(257)
        );
        let cases = [
            (
                long.as_str(),
                "the reason is 257 bytes long; a reason is 1 to 256 bytes of printable text",
            ),
            (
                r#"{"name":"a","expire":"5m","reason":"a\nb"}"#,
                "the reason contains U+000A; a reason is 1 to 256 bytes of printable text",
            ),
            (
                r#"{"name":"a","expire":"5m","reason":""}"#,
                "the reason is empty; a reason is 1 to 256 bytes of printable text",
            ),
            (r#"{"name":"a","expire":"5m","reason":5}"#, ""),
            (
                r#"{"name":"a","expire":"5m","pid":0}"#,
                "\"pid\" is 0; it must be the number of a running process (1 to 4194304) whose exit ends the hold",
            ),
            (r#"{"name":"a","expire":"5m","pid":-3}"#, ""),
            (r#"{"name":"a","expire":"5m","pid":"12"}"#, ""),
            (r#"{"name":"a","expire":"5m","pid":99999999}"#, ""),
            (r#"{"name":"a","expire":"5m","pid":1.5}"#, ""),
        ];
        for (body, message) in cases {
            let Routed::Reply(response) =
                route_only(&request(Method::Post, "/v1/tasks", body), MAX)
            else {
                panic!("{body} was not refused")
            };
            assert_eq!(response.status, 400, "{body}");
            let text: Value = serde_json::from_slice(&response.body).unwrap();
            if !message.is_empty() {
                assert_eq!(text["error"], message, "{body}");
            }
        }
    }

    #[test]
    fn errors_are_json_sentences() {
        let Routed::Reply(response) = route_only(
            &request(Method::Post, "/v1/tasks", r#"{"name":"a","expire":"2h"}"#),
            MAX,
        ) else {
            unreachable!()
        };
        let body: Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(
            body["error"],
            "expire must be at most 1h (3600 seconds); refresh the task to hold longer"
        );
    }

    #[test]
    fn error_messages_carry_no_rust_debug_text() {
        let cases = vec![
            (
                request(Method::Put, "/v1/tasks/a", r#"{"name":"b","expire":"1h"}"#),
                r#"the body names task "b" but the path names "a"; drop the body's name or make them agree"#,
            ),
            (
                request(Method::Get, "/v2", ""),
                r#"no such endpoint "/v2"; the API is under /v1/tasks"#,
            ),
            (
                request(Method::Get, "/v1/tasks/a/b", ""),
                r#"no such endpoint "/v1/tasks/a/b"; a task is addressed as /v1/tasks/NAME"#,
            ),
            (
                request(Method::Get, "/v1/events?since=x", ""),
                r#"since="x" is not an event sequence number"#,
            ),
            (
                request(Method::Get, "/v1/tasks/a%zz", ""),
                r#"invalid percent-encoding in the task name "a%zz""#,
            ),
            (
                request(
                    Method::Post,
                    "/v1/tasks",
                    r#"{"name":"a\u0001","expire":"1h"}"#,
                ),
                "the task name contains U+0001; a task name is 1 to 128 characters of letters, digits, '.', '_', '-', ':' and '@', starting with a letter or digit",
            ),
            (
                request(Method::Post, "/v1/tasks", r#"{"name":"a b","expire":"1h"}"#),
                "the task name contains ' '; a task name is 1 to 128 characters of letters, digits, '.', '_', '-', ':' and '@', starting with a letter or digit",
            ),
            (
                request(Method::Post, "/v1/tasks", r#"{"name":"a","expire":"soon"}"#),
                r#"expire "soon" is not a duration; expire is an integer number of seconds (300) or a duration string such as "90s", "30m", "1h" or "1h 30m" (units s, m, h, d; case-sensitive)"#,
            ),
        ];
        for (request, expected) in cases {
            let Routed::Reply(response) = route_only(&request, MAX) else {
                panic!("{request:?} was not refused")
            };
            let body: Value = serde_json::from_slice(&response.body).unwrap();
            assert_eq!(body["error"], expected, "{request:?}");
        }
    }

    #[test]
    fn json_bodies_end_with_a_newline() {
        let task = Task::new(
            name("a"),
            Timestamp::from_nanos(0),
            Timestamp::from_nanos(1),
        );
        let mut tasks = Tasks::new(1);
        tasks.load([task.clone()]);
        let now = Timestamp::from_nanos(0);
        let bodies = [
            outcome(&Ok(Outcome::Created(task))).body,
            answer(&Query::List, &tasks, &no_history(), None, now).body,
            answer(&Query::Status, &tasks, &no_history(), None, now).body,
            error(400, "x").body,
            commit_failed().body,
        ];
        for body in bodies {
            assert_eq!(
                body.last(),
                Some(&b'\n'),
                "{}",
                String::from_utf8_lossy(&body)
            );
            assert_eq!(body.iter().filter(|&&b| b == b'\n').count(), 1);
        }
    }

    #[test]
    fn outcomes_map_to_statuses() {
        let task = Task::new(
            name("a"),
            Timestamp::from_nanos(0),
            Timestamp::from_nanos(1),
        );
        assert_eq!(outcome(&Ok(Outcome::Created(task.clone()))).status, 201);
        for created in [false, true] {
            let upserted = Outcome::Upserted {
                task: task.clone(),
                created,
            };
            assert_eq!(outcome(&Ok(upserted)).status, 200);
        }
        assert_eq!(outcome(&Ok(Outcome::Deleted)).status, 204);
        assert!(outcome(&Ok(Outcome::Deleted)).body.is_empty());
        assert_eq!(outcome(&Err(TaskError::NameTaken(name("a")))).status, 409);
        assert_eq!(outcome(&Err(TaskError::NotFound(name("a")))).status, 404);
        assert_eq!(outcome(&Err(TaskError::Full { limit: 1 })).status, 507);
        assert_eq!(commit_failed().status, 503);
    }

    #[test]
    fn list_and_get_show_live_tasks_only() {
        let mut tasks = Tasks::new(10);
        tasks.load([
            Task::new(
                name("b"),
                Timestamp::from_nanos(0),
                Timestamp::from_nanos(10),
            ),
            Task::new(
                name("a"),
                Timestamp::from_nanos(0),
                Timestamp::from_nanos(5),
            ),
        ]);
        let now = Timestamp::from_nanos(6);
        let list: TaskList =
            serde_json::from_slice(&answer(&Query::List, &tasks, &no_history(), None, now).body)
                .unwrap();
        assert_eq!(list.tasks.len(), 1);
        assert_eq!(list.tasks[0].name, "b");
        assert_eq!(list.tasks[0].started_at, "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            answer(&Query::Get(name("a")), &tasks, &no_history(), None, now).status,
            404
        );
        assert_eq!(
            answer(&Query::Get(name("b")), &tasks, &no_history(), None, now).status,
            200
        );
    }
}
