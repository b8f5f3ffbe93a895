//! The `api_request` target: routing ([`crate::api`]) of an arbitrary
//! method, target and body, and the plan of what it routes to against a
//! state holding one task.

use std::time::Duration;

use serde_json::Value;

use crate::api::{self, ROUTE_LABELS, Routed};
use crate::expire::{DEFAULT_MAX_EXPIRE, MIN_EXPIRE};
use crate::http::{Method, Request};
use crate::tasks::{Batch, Command, Task, TaskName, Tasks};
use crate::time::Timestamp;

use super::Input;

/// Methods an `api_request` input can pick, beside GET, POST, PUT and
/// DELETE; all but HEAD are ones the API does not implement.
const OTHER_METHODS: &[&str] = &["PATCH", "HEAD", "OPTIONS", "get", "CONNECT"];

/// `api_request`: byte 0 picks the method, byte 1 the HTTP version and the
/// `--max-expire`; then the target up to the first newline, then the body.
///
/// Properties: routing never panics and answers with a command, a query,
/// the OpenAPI document (200, to GET or HEAD) or a 4xx JSON error (`405`
/// with its `Allow`), or 501 for exactly the methods the API does not
/// implement; a command is valid (a valid name, an expiry in range) and,
/// planned against a state holding one task, answers 2xx or 4xx; a query
/// answers 200 or 404. No other 5xx.
pub fn api_request(data: &[u8]) {
    let mut input = Input::new(data);
    let method = match input.byte() % 9 {
        0 => Method::Get,
        1 => Method::Post,
        2 => Method::Put,
        3 => Method::Delete,
        n => match OTHER_METHODS[usize::from(n - 4)] {
            "HEAD" => Method::Head,
            token => Method::Other(token.to_owned()),
        },
    };
    let flags = input.byte();
    let max_expire = if flags & 2 == 0 {
        DEFAULT_MAX_EXPIRE
    } else {
        Duration::from_secs(60)
    };
    let rest = input.rest();
    let (target, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    let request = Request {
        method,
        target: String::from_utf8_lossy(target).into_owned(),
        minor_version: flags & 1,
        keep_alive: true,
        body: body.to_vec(),
    };
    let now = Timestamp::from_nanos(1_780_000_000 * 1_000_000_000);
    let mut tasks = Tasks::new(16);
    let agent = TaskName::parse("agent").expect("a valid name");
    tasks.load([Task::new(
        agent,
        now,
        now.checked_add(Duration::from_secs(60)).expect("in range"),
    )]);
    let (label, routed) = api::route(&request, max_expire);
    assert!(ROUTE_LABELS.contains(&label), "unbounded label {label:?}");
    match routed {
        // The one reply that is not an error: the API's own description.
        Routed::Reply(response) if label == "openapi" && response.status == 200 => {
            assert!(matches!(request.method, Method::Get | Method::Head));
            assert_eq!(response.body, api::OPENAPI_DOCUMENT.as_bytes());
        }
        Routed::Reply(response) => {
            let unimplemented = matches!(request.method, Method::Other(_));
            assert!(
                (400..500).contains(&response.status) != unimplemented
                    && (response.status == 501) == unimplemented,
                "{request:?} answered {}",
                response.status
            );
            let body: Value =
                serde_json::from_slice(&response.body).expect("an error body is JSON");
            assert!(body["error"].is_string(), "no error sentence: {body}");
            assert_eq!(response.status == 405, response.allow.is_some());
        }
        Routed::Mutation { command, .. } => {
            let name = match &command {
                Command::Create { name, expire, .. } | Command::Upsert { name, expire, .. } => {
                    assert!((MIN_EXPIRE..=max_expire).contains(expire), "{command:?}");
                    name
                }
                Command::Delete { name, .. } => name,
            };
            assert_eq!(
                TaskName::parse(name.as_str()).as_ref(),
                Ok(name),
                "routed an invalid name"
            );
            let mut batch = Batch::new();
            let response = api::outcome(&tasks.plan(&mut batch, command, now));
            assert!(
                (200..500).contains(&response.status),
                "{request:?} answered {}",
                response.status
            );
        }
        Routed::Query(query) => {
            let history = crate::usage::History::new(crate::usage::DEFAULT_USAGE_RETENTION);
            let response = api::answer(&query, &tasks, &history, None, now);
            // A usage window that ends before it starts is the one 400.
            let window_refused = matches!(query, api::Query::Usage(_)) && response.status == 400;
            assert!(
                matches!(response.status, 200 | 404) || window_refused,
                "{request:?} answered {}",
                response.status
            );
        }
        // Answered by the reactor.
        Routed::Metrics | Routed::Events { .. } => {}
    }
}
