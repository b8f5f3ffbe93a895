//! The seed's contract against the real binary: every curl command of the
//! seed document, the statuses, persistence across kill -9 and restarts,
//! clean shutdown, the single-daemon guard and group commit.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{Daemon, Dirs, curl, read_response, request_bytes};
use serde_json::Value;

fn parse_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"))
}

fn assert_task_shape(task: &Value, name: &str) {
    assert_eq!(task["name"], name, "{task}");
    for field in ["started_at", "expires_at"] {
        let text = task[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} missing: {task}"));
        // RFC 3339 UTC with nanoseconds: 2026-06-02T17:11:14.555839485Z
        assert_eq!(text.len(), 30, "{field} = {text}");
        assert!(
            text.ends_with('Z') && text.as_bytes()[19] == b'.',
            "{field} = {text}"
        );
        assert!(humantime::parse_rfc3339(text).is_ok(), "{field} = {text}");
    }
    // The seed's three fields, then what issues 14 and 17 added (null when
    // unknown).
    let mut keys: Vec<&str> = task
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "expires_at",
            "holder",
            "name",
            "owner",
            "pid",
            "reason",
            "started_at"
        ],
        "{task}"
    );
}

fn seconds_between(earlier: &Value, later: &Value) -> f64 {
    let a = humantime::parse_rfc3339(earlier.as_str().unwrap()).unwrap();
    let b = humantime::parse_rfc3339(later.as_str().unwrap()).unwrap();
    b.duration_since(a).unwrap().as_secs_f64()
}

#[test]
fn the_seed_curl_commands_get_their_documented_answers() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &[]);
    let socket = daemon.socket.clone();
    let write_out = ["-w", "\n%{http_code}"];
    let split = |out: String| -> (Value, u16) {
        let (body, code) = out.rsplit_once('\n').unwrap();
        let body = if body.is_empty() {
            Value::Null
        } else {
            parse_json(body)
        };
        (body, code.parse().unwrap())
    };

    // Create a task.
    let (code, out) = curl(
        &socket,
        &[
            "-H",
            "Content-Type: application/json",
            "-X",
            "POST",
            "http://sprite/v1/tasks",
            "-d",
            r#"{ "name": "agent", "expire": "1h" }"#,
            write_out[0],
            write_out[1],
        ],
    );
    assert_eq!(code, 0);
    let (created, status) = split(out);
    assert_eq!(status, 201);
    assert_task_shape(&created, "agent");
    let held = seconds_between(&created["started_at"], &created["expires_at"]);
    assert!((held - 3600.0).abs() < 1e-6, "{held}");

    // Creating it again is a conflict.
    let (_, out) = curl(
        &socket,
        &[
            "-H",
            "Content-Type: application/json",
            "-X",
            "POST",
            "http://sprite/v1/tasks",
            "-d",
            r#"{ "name": "agent", "expire": "1h" }"#,
            write_out[0],
            write_out[1],
        ],
    );
    let (conflict, status) = split(out);
    assert_eq!(status, 409);
    assert!(
        conflict["error"]
            .as_str()
            .unwrap()
            .contains("already exists")
    );

    // Refresh it: started_at is kept.
    let (_, out) = curl(
        &socket,
        &[
            "-H",
            "Content-Type: application/json",
            "-X",
            "PUT",
            "http://sprite/v1/tasks/agent",
            "-d",
            r#"{ "expire": "1h" }"#,
            write_out[0],
            write_out[1],
        ],
    );
    let (refreshed, status) = split(out);
    assert_eq!(status, 200);
    assert_task_shape(&refreshed, "agent");
    assert_eq!(refreshed["started_at"], created["started_at"]);
    assert!(seconds_between(&created["expires_at"], &refreshed["expires_at"]) >= 0.0);

    // The list shows it with a future expires_at.
    let (_, out) = curl(
        &socket,
        &["http://sprite/v1/tasks", write_out[0], write_out[1]],
    );
    let (list, status) = split(out);
    assert_eq!(status, 200);
    assert_eq!(list["tasks"].as_array().unwrap().len(), 1);
    assert_task_shape(&list["tasks"][0], "agent");
    assert_eq!(list["tasks"][0], refreshed);

    // GET one.
    let (_, out) = curl(
        &socket,
        &["http://sprite/v1/tasks/agent", write_out[0], write_out[1]],
    );
    assert_eq!(split(out), (refreshed.clone(), 200));

    // The upsert form on the collection.
    let (_, out) = curl(
        &socket,
        &[
            "-H",
            "Content-Type: application/json",
            "-X",
            "PUT",
            "http://sprite/v1/tasks",
            "-d",
            r#"{ "name": "my-task", "expire": "1h" }"#,
            write_out[0],
            write_out[1],
        ],
    );
    let (upserted, status) = split(out);
    assert_eq!(status, 200);
    assert_task_shape(&upserted, "my-task");

    // Release the hold: 204 with no body, then 404.
    let (_, out) = curl(
        &socket,
        &[
            "-X",
            "DELETE",
            "http://sprite/v1/tasks/agent",
            write_out[0],
            write_out[1],
        ],
    );
    assert_eq!(split(out), (Value::Null, 204));
    let (_, out) = curl(
        &socket,
        &[
            "-X",
            "DELETE",
            "http://sprite/v1/tasks/agent",
            write_out[0],
            write_out[1],
        ],
    );
    let (missing, status) = split(out);
    assert_eq!(status, 404);
    assert!(missing["error"].is_string());
    let (_, out) = curl(
        &socket,
        &["http://sprite/v1/tasks/agent", write_out[0], write_out[1]],
    );
    assert_eq!(split(out).1, 404);

    // A plain `curl -d` (form content type) is accepted as JSON.
    let (_, out) = curl(
        &socket,
        &[
            "-X",
            "POST",
            "http://sprite/v1/tasks",
            "-d",
            r#"{"name":"form","expire":60}"#,
            write_out[0],
            write_out[1],
        ],
    );
    assert_eq!(split(out).1, 201);
}

#[test]
fn both_expire_forms_and_the_refusals() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &[]);
    for (expire, seconds) in [
        ("90", 90.0),
        ("\"90s\"", 90.0),
        ("\"30m\"", 1800.0),
        ("\"1h\"", 3600.0),
        ("3600", 3600.0),
    ] {
        let (status, task) = daemon.call(
            "PUT",
            "/v1/tasks/t",
            Some(&format!(r#"{{"expire": {expire}}}"#)),
        );
        assert!(status == 200 || status == 201, "{expire}: {status}");
        // A refresh measures from the request, so compare with the refresh time
        // only through expires_at - started_at on creation.
        if status == 201 {
            assert_eq!(
                seconds_between(&task["started_at"], &task["expires_at"]),
                seconds
            );
        }
    }
    for (body, needle) in [
        (r#"{"expire": 0}"#, "at least 1 second"),
        (r#"{"expire": 3601}"#, "at most 1h"),
        (r#"{"expire": "2h"}"#, "at most 1h"),
        (r#"{"expire": "5"}"#, "duration string"),
        (r#"{"expire": 1.5}"#, "integer number of seconds"),
        (
            r#"{"expire": "18446744073709551615s 1000ms"}"#,
            "at most 1h",
        ),
        (r#"{}"#, "no \"expire\""),
        (r#"{"expire": "1h", "extra": true}"#, "unknown field"),
    ] {
        let (status, error) = daemon.call("PUT", "/v1/tasks/refused", Some(body));
        assert_eq!(status, 400, "{body}");
        let message = error["error"].as_str().unwrap();
        assert!(message.contains(needle), "{body}: {message}");
    }
    assert_eq!(daemon.status("GET", "/v1/tasks/refused", None), 404);
}

#[test]
fn unknown_paths_and_wrong_methods() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &[]);
    let mut stream = daemon.connect();
    for (method, path, status, allow) in [
        ("GET", "/", 404, None),
        ("GET", "/v2/tasks", 404, None),
        ("DELETE", "/v1/tasks", 405, Some("GET, HEAD, POST, PUT")),
        ("POST", "/v1/tasks/a", 405, Some("GET, HEAD, PUT, DELETE")),
        ("PATCH", "/v1/tasks/a", 501, None),
        ("GET", "/v1/tasks/a%2Fb", 400, None),
        ("GET", "/v1/tasks/a%00", 400, None),
    ] {
        stream
            .write_all(&request_bytes(method, path, None))
            .unwrap();
        let response = read_response(&mut stream).unwrap();
        assert_eq!(response.status, status, "{method} {path}");
        assert_eq!(response.header("Allow"), allow, "{method} {path}");
        assert!(response.json()["error"].is_string());
    }
}

#[test]
fn keep_alive_pipelining_and_http_1_0() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &[]);
    // Pipelined: create, read it back, refresh, list, delete, read again; in order.
    let mut stream = daemon.connect();
    let mut batch = Vec::new();
    batch.extend(request_bytes(
        "POST",
        "/v1/tasks",
        Some(r#"{"name":"p","expire":"1h"}"#),
    ));
    batch.extend(request_bytes("GET", "/v1/tasks/p", None));
    batch.extend(request_bytes(
        "PUT",
        "/v1/tasks/p",
        Some(r#"{"expire":60}"#),
    ));
    batch.extend(request_bytes("GET", "/v1/tasks", None));
    batch.extend(request_bytes("DELETE", "/v1/tasks/p", None));
    batch.extend(request_bytes("GET", "/v1/tasks/p", None));
    stream.write_all(&batch).unwrap();
    let statuses: Vec<u16> = (0..6)
        .map(|_| read_response(&mut stream).unwrap().status)
        .collect();
    assert_eq!(statuses, [201, 200, 200, 200, 204, 404]);

    // Connection: close ends the connection after the answer.
    stream
        .write_all(b"GET /v1/tasks HTTP/1.1\r\nHost: sprite\r\nConnection: close\r\n\r\n")
        .unwrap();
    let response = read_response(&mut stream).unwrap();
    assert_eq!(response.header("Connection"), Some("close"));
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());

    // HTTP/1.0 closes unless asked to keep alive.
    let out = daemon.raw(b"GET /v1/tasks HTTP/1.0\r\n\r\n");
    assert!(
        out.starts_with(b"HTTP/1.1 200 OK\r\n"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    let mut old = daemon.connect();
    old.write_all(b"GET /v1/tasks HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    let first = read_response(&mut old).unwrap();
    assert_eq!(first.header("Connection"), Some("keep-alive"));
    old.write_all(b"GET /v1/tasks HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut old).unwrap().status, 200);
    assert!(read_response(&mut old).is_none());
}

#[test]
fn a_task_lapses_on_its_own_without_any_request() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &[]);
    assert_eq!(
        daemon.status("POST", "/v1/tasks", Some(r#"{"name":"brief","expire":1}"#)),
        201
    );
    assert_eq!(
        daemon.status(
            "POST",
            "/v1/tasks",
            Some(r#"{"name":"long","expire":"1h"}"#)
        ),
        201
    );
    // No request is sent until the reactor's own timer has expired the task.
    let line = daemon.wait_for_log("task expired");
    assert!(line.contains("brief"), "{line}");
    assert_eq!(daemon.status("GET", "/v1/tasks/brief", None), 404);
    // And POST creates it again.
    assert_eq!(
        daemon.status("POST", "/v1/tasks", Some(r#"{"name":"brief","expire":60}"#)),
        201
    );
    let (_, list) = daemon.call("GET", "/v1/tasks", None);
    let names: Vec<&str> = list["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["brief", "long"]);
}

#[test]
fn tasks_survive_kill_9_with_identical_timestamps() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &[]);
    let (_, keep) = daemon.call(
        "POST",
        "/v1/tasks",
        Some(r#"{"name":"keep","expire":"1h"}"#),
    );
    daemon.call("PUT", "/v1/tasks/keep", Some(r#"{"expire":"30m"}"#));
    let (_, kept) = daemon.call("GET", "/v1/tasks/keep", None);
    assert_eq!(kept["started_at"], keep["started_at"]);
    assert_eq!(
        daemon.status(
            "POST",
            "/v1/tasks",
            Some(r#"{"name":"gone","expire":"1h"}"#)
        ),
        201
    );
    assert_eq!(daemon.status("DELETE", "/v1/tasks/gone", None), 204);
    assert_eq!(
        daemon.status("POST", "/v1/tasks", Some(r#"{"name":"lapses","expire":1}"#)),
        201
    );
    daemon.kill9();
    assert!(
        dirs.socket().exists(),
        "kill -9 leaves the socket file behind"
    );

    // Let "lapses" fall due while the daemon is down: wait on the clock.
    std::thread::sleep(Duration::from_millis(1100));
    let daemon = Daemon::start(&dirs, &[]);
    let line = daemon.wait_for_log("sprite-tasksd listening");
    assert!(line.contains("expired_while_down=1"), "{line}");
    let (status, list) = daemon.call("GET", "/v1/tasks", None);
    assert_eq!(status, 200);
    assert_eq!(list["tasks"], Value::Array(vec![kept]));
}

#[test]
fn sigterm_exits_zero_and_removes_the_socket() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &[]);
    assert_eq!(
        daemon.status("POST", "/v1/tasks", Some(r#"{"name":"a","expire":"1h"}"#)),
        201
    );
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{status:?}\n{log}");
    assert!(!dirs.socket().exists());
    let daemon = Daemon::start(&dirs, &[]);
    assert_eq!(daemon.status("GET", "/v1/tasks/a", None), 200);
}

#[test]
fn a_second_daemon_refuses_and_leaves_the_first_alone() {
    let dirs = Dirs::new();
    let first = Daemon::start(&dirs, &[]);
    assert_eq!(
        first.status("POST", "/v1/tasks", Some(r#"{"name":"a","expire":"1h"}"#)),
        201
    );

    // Same database: refused on the database lock before the socket is touched.
    let output = std::process::Command::new(common::daemon_binary())
        .arg("--socket")
        .arg(dirs.socket_dir.path().join("other.sock"))
        .arg("--db")
        .arg(dirs.db())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("in use by another process"), "{stderr}");

    // Same socket, another database: refused, the socket is not taken over.
    let other_db = dirs.db_dir.path().join("other.redb");
    let output = std::process::Command::new(common::daemon_binary())
        .arg("--socket")
        .arg(dirs.socket())
        .arg("--db")
        .arg(&other_db)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("another process is serving"), "{stderr}");

    assert_eq!(first.status("GET", "/v1/tasks/a", None), 200);
}

#[test]
fn a_regular_file_at_the_socket_path_is_never_deleted() {
    let dirs = Dirs::new();
    std::fs::write(dirs.socket(), b"precious").unwrap();
    let output = std::process::Command::new(common::daemon_binary())
        .arg("--socket")
        .arg(dirs.socket())
        .arg("--db")
        .arg(dirs.db())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("is not a socket"));
    assert_eq!(std::fs::read(dirs.socket()).unwrap(), b"precious");
}

#[test]
fn concurrent_mutations_share_commits() {
    const CLIENTS: usize = 32;
    const EACH: usize = 25;
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &[]);
    std::thread::scope(|scope| {
        for client in 0..CLIENTS {
            let daemon = &daemon;
            scope.spawn(move || {
                let mut stream = daemon.connect();
                for round in 0..EACH {
                    let body = format!(r#"{{"expire": {}}}"#, 60 + round);
                    stream
                        .write_all(&request_bytes(
                            "PUT",
                            &format!("/v1/tasks/c{client}"),
                            Some(&body),
                        ))
                        .unwrap();
                    let status = read_response(&mut stream).unwrap().status;
                    assert!(status == 200 || status == 201, "{status}");
                }
            });
        }
    });
    let (status, log) = daemon.terminate();
    assert!(status.success());
    let stats = log
        .lines()
        .find(|l| l.contains("sprite-tasksd stopped"))
        .unwrap();
    let field = |name: &str| -> u64 {
        let start = stats.find(&format!("{name}=")).unwrap() + name.len() + 1;
        stats[start..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (commits, changes) = (field("commits"), field("changes"));
    println!("{changes} changes in {commits} commits");
    assert_eq!(changes, (CLIENTS * EACH) as u64);
    assert!(
        commits < changes,
        "no two mutations shared a commit: {stats}"
    );
}
