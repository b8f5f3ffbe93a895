//! `docs/openapi.json` against a standard validator, the router and the
//! real binary's answers, so that the document cannot drift from the code.
//!
//! - The standard validator (`openapi-spec-validator`, from PyPI) accepts
//!   the document and refuses a broken copy of it.
//! - The router has exactly the document's operations: each documented
//!   method of each path is routed, each other one is 405 with the path's
//!   `x-allow` as `Allow`.
//! - The daemon serves the file byte for byte at `GET /v1/openapi.json`.
//! - Every status the integration tests provoke (201, 200, 204, 400, 403,
//!   404, 405, 408, 409, 413, 414, 417, 431, 501, 503, 505, 507), on every
//!   operation, is recorded from real daemons and judged by
//!   `tests/openapi/check_exchanges.py` (status documented for that
//!   operation, content type, body against its schema, `Allow` of a 405);
//!   and the judge is shown to refuse answers that break the document.
//!
//! `scripts/test.sh` installs `openapi-spec-validator`, which brings the
//! schema validator the judge uses.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Daemon, Dirs, command_as, eventually, is_root};
use serde_json::{Value, json};
use sprite_tasks::api::{self, Routed};
use sprite_tasks::http::{Method, Request};

fn document_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json")
}

fn document() -> Value {
    let text = std::fs::read_to_string(document_path()).expect("docs/openapi.json");
    serde_json::from_str(&text).expect("docs/openapi.json is JSON")
}

const NEED: &str = "python3 with openapi-spec-validator (scripts/test.sh installs it: python3 -m pip install openapi-spec-validator)";

/// Runs the standard validator's command line on `path`: (success, output).
fn spec_validator(path: &Path) -> (bool, String) {
    let output = Command::new("python3")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["-m", "openapi_spec_validator"])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("{NEED}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!text.contains("No module named"), "{NEED}: {text}");
    (output.status.success(), text)
}

#[test]
fn the_standard_validator_accepts_the_document_and_refuses_a_broken_one() {
    let (ok, verdict) = spec_validator(Path::new("docs/openapi.json"));
    println!(
        "python3 -m openapi_spec_validator docs/openapi.json: {}",
        verdict.trim()
    );
    assert!(ok, "{verdict}");
    assert!(verdict.trim_end().ends_with(": OK"), "{verdict}");

    // The validator can fail: the same document with an operation whose
    // response is a reference to nothing, and one without its info.
    let dir = tempfile::tempdir().unwrap();
    let mut dangling = document();
    dangling["paths"]["/v1/status"]["get"]["responses"]["200"] =
        json!({"$ref": "#/components/responses/NoSuchResponse"});
    let mut no_info = document();
    no_info.as_object_mut().unwrap().remove("info");
    for (name, broken) in [("dangling.json", dangling), ("no-info.json", no_info)] {
        let broken_path = dir.path().join(name);
        std::fs::write(&broken_path, broken.to_string()).unwrap();
        let (ok, verdict) = spec_validator(&broken_path);
        assert!(!ok, "{name} passed the validator: {verdict}");
    }
}

const METHODS: [(Method, &str); 5] = [
    (Method::Get, "get"),
    (Method::Head, "head"),
    (Method::Post, "post"),
    (Method::Put, "put"),
    (Method::Delete, "delete"),
];

#[test]
fn the_router_has_exactly_the_documented_operations() {
    let document = document();
    let paths = document["paths"].as_object().unwrap();
    for (template, item) in paths {
        let path = template.replace("{name}", "agent");
        let allow = item["x-allow"].as_str().expect("every path has x-allow");
        let mut documented = Vec::new();
        for (method, key) in METHODS {
            let request = Request {
                method: method.clone(),
                target: path.clone(),
                minor_version: 1,
                keep_alive: true,
                body: br#"{"name":"agent","expire":"1h"}"#.to_vec(),
            };
            let (_, routed) = api::route(&request, Duration::from_secs(3600));
            let refused = match &routed {
                Routed::Reply(response) if response.status >= 400 => Some(response),
                _ => None,
            };
            if item.get(key).is_some() {
                documented.push(key.to_ascii_uppercase());
                assert!(
                    refused.is_none(),
                    "{key} {template} is documented but the router refuses it: {refused:?}"
                );
            } else {
                let response = refused.unwrap_or_else(|| {
                    panic!("the router answers {key} {template}, which the document lacks")
                });
                assert_eq!(response.status, 405, "{key} {template}");
                assert_eq!(response.allow, Some(allow), "{key} {template}");
            }
        }
        assert_eq!(documented.join(", "), allow, "{template}'s x-allow");
    }
}

/// One request and its answer, as the judge reads them.
#[derive(Debug, Clone)]
struct Exchange {
    method: String,
    target: String,
    status: u16,
    content_type: Option<String>,
    allow: Option<String>,
    body: String,
}

impl Exchange {
    fn to_json(&self) -> Value {
        json!({
            "method": self.method,
            "target": self.target,
            "status": self.status,
            "content_type": self.content_type,
            "allow": self.allow,
            "body": self.body,
        })
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// Reads one response from `bytes` (the whole of what the daemon sent): its
/// head, and the body by `Content-Length` (none for HEAD).
fn parse(method: &str, target: &str, bytes: &[u8]) -> Exchange {
    let text = String::from_utf8_lossy(bytes);
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{method} {target}: no response head in {text:?}"));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("{method} {target}: no status in {head:?}"));
    let mut content_type = None;
    let mut allow = None;
    let mut length = 0;
    for line in lines {
        let (name, value) = line.split_once(':').expect("a header line");
        let value = value.trim().to_owned();
        match name.to_ascii_lowercase().as_str() {
            "content-type" => content_type = Some(value),
            "allow" => allow = Some(value),
            "content-length" => length = value.parse().expect("a length"),
            _ => {}
        }
    }
    let body = if method == "HEAD" {
        String::new()
    } else {
        rest.chars().take(length).collect()
    };
    Exchange {
        method: method.to_owned(),
        target: target.to_owned(),
        status,
        content_type,
        allow,
        body,
    }
}

/// Sends `bytes` on a fresh connection, half-closes it, and reads the
/// answer to the end.
fn raw(daemon: &Daemon, method: &str, target: &str, bytes: &[u8]) -> Exchange {
    parse(method, target, &daemon.raw(bytes))
}

/// One ordinary request on its own connection.
fn call(daemon: &Daemon, method: &str, target: &str, body: Option<&str>) -> Exchange {
    let body = body.unwrap_or("");
    let bytes = format!(
        "{method} {target} HTTP/1.1\r\nHost: sprite\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    raw(daemon, method, target, bytes.as_bytes())
}

/// One request with curl as `uid`, its answer read from `curl -i`.
fn call_as(daemon: &Daemon, uid: u32, method: &str, target: &str, body: &str) -> Exchange {
    let output = command_as(Some(uid), "curl")
        .args(["-s", "-i", "--unix-socket"])
        .arg(&daemon.socket)
        .args(["-X", method, "-d", body])
        .arg(format!("http://sprite{target}"))
        .output()
        .expect("setpriv and curl are installed");
    parse(method, target, &output.stdout)
}

/// Reads `GET /v1/events` (head and chunks) on `stream` until `last`
/// accepts a line: the stream as an exchange, its lines in its body.
fn read_events(
    stream: std::os::unix::net::UnixStream,
    target: &str,
    last: impl Fn(&Value) -> bool,
) -> Exchange {
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("the stream's head");
        head.push_str(&line);
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    let mut exchange = parse("GET", target, head.as_bytes());
    loop {
        let mut size_line = String::new();
        reader.read_line(&mut size_line).expect("a chunk size");
        let size = usize::from_str_radix(size_line.trim_end(), 16).expect("a chunk size");
        let mut chunk = vec![0u8; size + 2];
        reader.read_exact(&mut chunk).expect("a chunk");
        assert!(size > 0, "the stream ended early: {}", exchange.body);
        let line = String::from_utf8(chunk[..size].to_vec()).expect("UTF-8");
        exchange.body.push_str(&line);
        if last(&serde_json::from_str(&line).expect("a JSON line")) {
            return exchange;
        }
    }
}

fn open_events(daemon: &Daemon, target: &str) -> std::os::unix::net::UnixStream {
    let mut stream = daemon.connect();
    stream
        .write_all(format!("GET {target} HTTP/1.1\r\nHost: sprite\r\n\r\n").as_bytes())
        .unwrap();
    stream
}

/// A process to bind holds to, killed when dropped.
struct Sleeper(Child);

impl Sleeper {
    fn start() -> Sleeper {
        Sleeper(
            Command::new("sleep")
                .arg("60")
                .stdin(Stdio::null())
                .spawn()
                .expect("sleep"),
        )
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The judge's verdicts on `exchanges`: (operation, error) each.
fn judge(exchanges: &[Exchange]) -> Vec<(String, Option<String>)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openapi/check_exchanges.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(document_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{NEED}: {e}"));
    let input = Value::Array(exchanges.iter().map(Exchange::to_json).collect()).to_string();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        output.status.success(),
        "the judge failed ({NEED}): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let verdicts: Vec<Value> = serde_json::from_slice(&output.stdout).expect("the verdicts");
    assert_eq!(verdicts.len(), exchanges.len());
    verdicts
        .into_iter()
        .map(|verdict| {
            (
                verdict["operation"].as_str().unwrap().to_owned(),
                verdict["error"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

/// Every operation of the document, as the judge names them.
fn operations() -> BTreeSet<String> {
    let document = document();
    let mut all = BTreeSet::new();
    for (template, item) in document["paths"].as_object().unwrap() {
        for (_, key) in METHODS {
            if item.get(key).is_some() {
                all.insert(format!("{key} {template}"));
            }
        }
    }
    all
}

const HOUR: &str = r#"{"expire":"1h"}"#;

/// The exchanges with the main daemon: every operation, its successes and
/// the refusals of its routes and of the framer.
fn exchanges_with_the_daemon(daemon: &Daemon, exchanges: &mut Vec<Exchange>) {
    let mut push = |exchange: Exchange, expected: u16| {
        assert_eq!(exchange.status, expected, "{exchange:?}");
        exchanges.push(exchange);
    };
    // The document itself, byte for byte.
    let served = call(daemon, "GET", "/v1/openapi.json", None);
    let file = std::fs::read_to_string(document_path()).unwrap();
    assert!(
        served.body == file,
        "GET /v1/openapi.json is not docs/openapi.json"
    );
    push(served, 200);
    push(call(daemon, "HEAD", "/v1/openapi.json", None), 200);
    push(call(daemon, "PUT", "/v1/openapi.json", Some("{}")), 405);

    // The collection and a task's life.
    let create = r#"{"name":"agent","expire":"1h","reason":"nightly build"}"#;
    push(call(daemon, "POST", "/v1/tasks", Some(create)), 201);
    push(call(daemon, "POST", "/v1/tasks", Some(create)), 409);
    push(call(daemon, "GET", "/v1/tasks", None), 200);
    push(call(daemon, "HEAD", "/v1/tasks", None), 200);
    push(call(daemon, "GET", "/v1/tasks/agent", None), 200);
    push(call(daemon, "HEAD", "/v1/tasks/agent", None), 200);
    push(call(daemon, "HEAD", "/v1/tasks/nobody", None), 404);
    push(call(daemon, "PUT", "/v1/tasks/agent", Some(HOUR)), 200);
    push(
        call(
            daemon,
            "PUT",
            "/v1/tasks",
            Some(r#"{"name":"build","expire":300}"#),
        ),
        200,
    );
    push(call(daemon, "GET", "/v1/status", None), 200);
    push(call(daemon, "HEAD", "/v1/status", None), 200);
    push(call(daemon, "DELETE", "/v1/tasks/agent?pid=1", None), 409);
    push(call(daemon, "DELETE", "/v1/tasks/agent", None), 204);
    push(call(daemon, "DELETE", "/v1/tasks/build", None), 204);
    push(call(daemon, "DELETE", "/v1/tasks/agent", None), 404);
    push(call(daemon, "GET", "/v1/tasks/agent", None), 404);

    // Refusals of the routes.
    for (method, target, body) in [
        ("POST", "/v1/tasks", Some(r#"{"name":"a","expires":"1h"}"#)),
        ("POST", "/v1/tasks", Some(r#"{"name":"a","expire":"2h"}"#)),
        ("PUT", "/v1/tasks", Some(HOUR)),
        ("PUT", "/v1/tasks/a", Some(r#"{"name":"b","expire":"1h"}"#)),
        ("PUT", "/v1/tasks/a", Some(r#"{"expire":"1h","pid":0}"#)),
        ("GET", "/v1/tasks/a%2Fb", None),
        ("DELETE", "/v1/tasks/a?pid=x", None),
        ("GET", "/v1/usage?since=soon", None),
        ("GET", "/v1/events?since=x", None),
    ] {
        push(call(daemon, method, target, body), 400);
    }
    for (method, target) in [
        ("DELETE", "/v1/tasks"),
        ("POST", "/v1/tasks/agent"),
        ("POST", "/v1/status"),
        ("DELETE", "/v1/usage"),
        ("HEAD", "/v1/events"),
        ("POST", "/metrics"),
    ] {
        push(call(daemon, method, target, Some("{}")), 405);
    }
    push(call(daemon, "GET", "/v2/tasks", None), 404);
    push(call(daemon, "GET", "/v1/tasks/a/b", None), 404);
    push(call(daemon, "PATCH", "/v1/tasks/agent", None), 501);

    // Holds bound to processes: another process's hold is not taken (409),
    // nor released by a holder it is not bound to (409); its exit releases it.
    let first = Sleeper::start();
    let second = Sleeper::start();
    let bind = |pid: u32| format!(r#"{{"expire":"1h","pid":{pid}}}"#);
    push(
        call(daemon, "PUT", "/v1/tasks/bound", Some(&bind(first.pid()))),
        200,
    );
    push(
        call(daemon, "PUT", "/v1/tasks/bound", Some(&bind(second.pid()))),
        409,
    );
    let conditional = format!("/v1/tasks/bound?pid={}", second.pid());
    push(call(daemon, "DELETE", &conditional, None), 409);
    drop(first);
    let gone = eventually(
        || call(daemon, "GET", "/v1/tasks/bound", None),
        |exchange| exchange.status == 404,
    );
    push(gone, 404);

    // A hold limit: the task is capped, its name refused until re-armed.
    push(
        call(
            daemon,
            "POST",
            "/v1/tasks",
            Some(r#"{"name":"capped","expire":"1h","max_held_for":"1s"}"#),
        ),
        201,
    );
    let tripped = eventually(
        || call(daemon, "GET", "/v1/status", None),
        |exchange| exchange.json()["tripped_count"] == 1,
    );
    assert_eq!(
        tripped.json()["tripped"][0]["task"],
        "capped",
        "{tripped:?}"
    );
    push(tripped, 200);
    push(
        call(
            daemon,
            "POST",
            "/v1/tasks",
            Some(r#"{"name":"capped","expire":"1h"}"#),
        ),
        409,
    );
    push(call(daemon, "DELETE", "/v1/tasks/capped", None), 204);

    // What the history now holds, with a timeline.
    push(
        call(daemon, "GET", "/v1/usage?since=1h&buckets=4", None),
        200,
    );
    push(call(daemon, "GET", "/v1/usage", None), 200);
    push(call(daemon, "HEAD", "/v1/usage", None), 200);
    push(call(daemon, "GET", "/metrics", None), 200);
    push(call(daemon, "HEAD", "/metrics", None), 200);

    // The whole event stream, replayed, up to a task created after it opened.
    let stream = open_events(daemon, "/v1/events?since=0");
    push(
        call(
            daemon,
            "POST",
            "/v1/tasks",
            Some(r#"{"name":"last","expire":"1h"}"#),
        ),
        201,
    );
    let events = read_events(stream, "/v1/events?since=0", |event| {
        event["task"] == "last" && event["event"] == "created"
    });
    for kind in [
        "created",
        "refreshed",
        "deleted",
        "released",
        "capped",
        "rearmed",
        "held",
        "idle",
    ] {
        assert!(
            events.body.contains(&format!("\"event\":\"{kind}\"")),
            "no {kind} event: {}",
            events.body
        );
    }
    push(events, 200);
    drop(second);

    // Refusals by the framer, on any route.
    let get = |target: &str, extra: &str| {
        format!("GET {target} HTTP/1.1\r\nHost: sprite\r\n{extra}\r\n").into_bytes()
    };
    let long_name = "a".repeat(2000);
    let many_headers: String = (0..40).map(|i| format!("X-{i}: {i}\r\n")).collect();
    for (method, target, bytes, status) in [
        ("GET", "/v1/tasks", b"GET /v1/tasks HTTP/1.1\r\n\r\n".to_vec(), 400),
        (
            "POST",
            "/v1/tasks",
            b"POST /v1/tasks HTTP/1.1\r\nHost: sprite\r\nContent-Length: 100000\r\n\r\n".to_vec(),
            413,
        ),
        (
            "GET",
            "/v1/tasks/{long}",
            get(&format!("/v1/tasks/{long_name}"), ""),
            414,
        ),
        ("GET", "/v1/status", get("/v1/status", "Expect: 200-ok\r\n"), 417),
        ("GET", "/v1/status", get("/v1/status", &many_headers), 431),
        (
            "PUT",
            "/v1/tasks/agent",
            b"PUT /v1/tasks/agent HTTP/1.1\r\nHost: sprite\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                .to_vec(),
            501,
        ),
        ("GET", "/v1/usage", b"GET /v1/usage HTTP/2.0\r\nHost: sprite\r\n\r\n".to_vec(), 505),
    ] {
        push(raw(daemon, method, target, &bytes), status);
    }
}

/// The exchanges only a daemon with small limits gives: 507 (the task
/// limit), 408 (a head too slow), 503 (past the connection cap) and a gap
/// in a replay.
fn exchanges_at_the_limits(exchanges: &mut Vec<Exchange>) {
    let dirs = Dirs::new();
    let daemon = Daemon::start(
        &dirs,
        &[
            "--max-tasks",
            "1",
            "--head-timeout",
            "1s",
            "--max-connections",
            "2",
            "--event-retention",
            "1",
        ],
    );
    let mut push = |exchange: Exchange, expected: u16| {
        assert_eq!(exchange.status, expected, "{exchange:?}");
        exchanges.push(exchange);
    };
    push(call(&daemon, "PUT", "/v1/tasks/one", Some(HOUR)), 200);
    push(call(&daemon, "PUT", "/v1/tasks/two", Some(HOUR)), 507);
    push(
        call(
            &daemon,
            "POST",
            "/v1/tasks",
            Some(r#"{"name":"two","expire":"1h"}"#),
        ),
        507,
    );
    // The replay lost its first events: a gap notice first.
    let stream = open_events(&daemon, "/v1/events?since=0");
    let gap = read_events(stream, "/v1/events?since=0", |event| {
        event["event"] == "gap"
    });
    push(gap, 200);

    // A head that never ends.
    let mut slow = daemon.connect();
    slow.write_all(b"GET /v1/status HTTP/1.1\r\nHost: spr")
        .unwrap();
    let mut answer = Vec::new();
    let _ = slow.read_to_end(&mut answer);
    push(parse("GET", "/v1/status", &answer), 408);

    // Two connections open and answered, the third is refused.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = daemon.connect();
        stream
            .write_all(&common::request_bytes("GET", "/v1/status", None))
            .unwrap();
        assert_eq!(common::read_response(&mut stream).unwrap().status, 200);
        held.push(stream);
    }
    let mut extra = daemon.connect();
    let _ = extra.write_all(&common::request_bytes("GET", "/v1/status", None));
    let mut answer = Vec::new();
    let _ = extra.read_to_end(&mut answer);
    push(parse("GET", "/v1/status", &answer), 503);
}

/// 403: another uid may neither refresh nor delete root's task. Needs root
/// to play that uid.
fn exchanges_as_another_uid(exchanges: &mut Vec<Exchange>) -> bool {
    if !is_root() {
        println!("not root: the 403 answers (another uid) are not provoked");
        return false;
    }
    const ALICE: u32 = 1000;
    let dirs = Dirs::reachable_by_other_uids();
    let daemon = Daemon::start(&dirs, &[]);
    assert_eq!(
        call(&daemon, "PUT", "/v1/tasks/roots", Some(HOUR)).status,
        200
    );
    for (method, body) in [("PUT", HOUR), ("DELETE", "")] {
        let exchange = call_as(&daemon, ALICE, method, "/v1/tasks/roots", body);
        assert_eq!(exchange.status, 403, "{exchange:?}");
        exchanges.push(exchange);
    }
    true
}

#[test]
fn every_answer_the_daemon_gives_agrees_with_the_document() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &[]);
    let mut exchanges = Vec::new();
    exchanges_with_the_daemon(&daemon, &mut exchanges);
    exchanges_at_the_limits(&mut exchanges);
    let as_root = exchanges_as_another_uid(&mut exchanges);

    let verdicts = judge(&exchanges);
    let disagreements: Vec<String> = exchanges
        .iter()
        .zip(&verdicts)
        .filter_map(|(exchange, (operation, error))| {
            let error = error.as_ref()?;
            Some(format!(
                "{} {} -> {} ({operation}): {error}\n  body: {}",
                exchange.method, exchange.target, exchange.status, exchange.body
            ))
        })
        .collect();
    assert!(
        disagreements.is_empty(),
        "answers that disagree with docs/openapi.json:\n{}",
        disagreements.join("\n")
    );

    let exercised: BTreeSet<String> = verdicts
        .iter()
        .map(|(operation, _)| operation.clone())
        .filter(|operation| operation != "unrouted")
        .collect();
    assert_eq!(exercised, operations(), "every operation is exercised");
    let statuses: BTreeSet<u16> = exchanges.iter().map(|exchange| exchange.status).collect();
    let mut expected: BTreeSet<u16> = [
        200, 201, 204, 400, 404, 405, 408, 409, 413, 414, 417, 431, 501, 503, 505, 507,
    ]
    .into();
    if as_root {
        expected.insert(403);
    }
    assert_eq!(statuses, expected);
    println!(
        "{} answers of {} operations agree with docs/openapi.json, statuses {statuses:?}",
        exchanges.len(),
        exercised.len()
    );
}

#[test]
fn the_judge_refuses_answers_that_break_the_document() {
    let exchange = |method: &str, target: &str, status: u16, body: &str| Exchange {
        method: method.into(),
        target: target.into(),
        status,
        content_type: Some("application/json".into()),
        allow: None,
        body: body.into(),
    };
    let task = r#"{"name":"a","started_at":"2026-12-05T18:00:00.000000000Z","expires_at":"2026-12-05T19:00:00.000000000Z","reason":null,"pid":null,"holder":null,"owner":0}"#;
    let good = exchange("GET", "/v1/tasks/a", 200, task);
    let mut wrong_type = good.clone();
    wrong_type.content_type = Some("text/plain".into());
    let mut wrong_allow = exchange("DELETE", "/v1/tasks", 405, r#"{"error":"no"}"#);
    wrong_allow.allow = Some("GET".into());
    let mut head_with_body = good.clone();
    head_with_body.method = "HEAD".into();
    let bad = [
        // A field missing, one of the wrong type, one not documented.
        exchange("GET", "/v1/tasks/a", 200, r#"{"name":"a"}"#),
        exchange(
            "GET",
            "/v1/tasks/a",
            200,
            &task.replace(r#""owner":0"#, r#""owner":"root""#),
        ),
        exchange(
            "GET",
            "/v1/tasks/a",
            200,
            &task.replace(r#""owner":0"#, r#""owner":0,"x":1"#),
        ),
        exchange(
            "GET",
            "/v1/tasks/a",
            200,
            &task.replace("2026-12-05T18", "yesterday"),
        ),
        // A status the operation does not list, or no route lists.
        exchange("GET", "/v1/tasks/a", 201, task),
        exchange("POST", "/v1/tasks", 418, r#"{"error":"teapot"}"#),
        exchange("GET", "/v2", 409, r#"{"error":"x"}"#),
        // An error that is not the one error shape.
        exchange("GET", "/v1/tasks/a", 404, r#"{"message":"gone"}"#),
        exchange("GET", "/v1/tasks/a", 404, "gone"),
        exchange("DELETE", "/v1/tasks/a", 204, "{}"),
        wrong_type,
        wrong_allow,
        head_with_body,
    ];
    let mut all = vec![good];
    all.extend(bad);
    let verdicts = judge(&all);
    assert_eq!(verdicts[0].1, None, "a good answer passes");
    for (exchange, (_, error)) in all.iter().zip(&verdicts).skip(1) {
        assert!(error.is_some(), "the judge let this through: {exchange:?}");
    }
}
