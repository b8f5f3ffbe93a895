//! Who keeps the machine awake: held/idle edges and their events, replay
//! after a restart, slow stream consumers, hooks and metrics, against the
//! real binary.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use common::{Daemon, Dirs, EventStream, read_response, request_bytes};
use serde_json::Value;

impl EventStream {
    fn next_n(&mut self, n: usize) -> Vec<Value> {
        (0..n).map(|_| self.next().expect("an event")).collect()
    }
}

fn summary(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e["task"].as_str() {
            Some(task) => format!("{} {task}", e["event"].as_str().unwrap()),
            None => e["event"].as_str().unwrap().to_owned(),
        })
        .collect()
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

#[test]
fn edges_and_events_in_order_with_status() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &[]);
    let (_, status) = daemon.call("GET", "/v1/status", None);
    assert_eq!(
        status,
        serde_json::json!({"held": false, "tasks": 0, "held_until": null, "idle_since": null, "held_by": [], "tripped": [], "tripped_count": 0})
    );

    let mut events = EventStream::open(&daemon, "");
    assert_eq!(
        daemon.status("POST", "/v1/tasks", Some(r#"{"name":"a","expire":"1h"}"#)),
        201
    );
    let (_, b) = daemon.call("PUT", "/v1/tasks/b", Some(r#"{"expire":"2h"}"#));
    assert!(b["error"].is_string(), "2h is refused");
    let (_, b) = daemon.call("PUT", "/v1/tasks/b", Some(r#"{"expire":"50m"}"#));
    let (_, status) = daemon.call("GET", "/v1/status", None);
    assert_eq!(status["held"], true);
    assert_eq!(status["tasks"], 2);
    assert_eq!(
        status["held_until"],
        daemon.call("GET", "/v1/tasks/a", None).1["expires_at"]
    );
    assert_eq!(status["idle_since"], Value::Null);

    assert_eq!(
        daemon.status("PUT", "/v1/tasks/b", Some(r#"{"expire":1}"#)),
        200
    );
    assert_eq!(daemon.status("DELETE", "/v1/tasks/a", None), 204);
    // b now expires on its own: "expired" then "idle".
    let got = events.next_n(7);
    assert_eq!(
        summary(&got),
        [
            "created a",
            "held",
            "created b",
            "refreshed b",
            "deleted a",
            "expired b",
            "idle"
        ]
    );
    assert_eq!(seqs(&got), [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(got[2]["expires_at"], b["expires_at"]);
    let (_, status) = daemon.call("GET", "/v1/status", None);
    assert_eq!(status["held"], false);
    assert_eq!(status["idle_since"], got[6]["at"]);

    // Held again.
    assert_eq!(
        daemon.status("POST", "/v1/tasks", Some(r#"{"name":"c","expire":60}"#)),
        201
    );
    assert_eq!(summary(&events.next_n(2)), ["created c", "held"]);
}

#[test]
fn since_replays_what_a_restart_missed() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &[]);
    assert_eq!(
        daemon.status("POST", "/v1/tasks", Some(r#"{"name":"a","expire":"1h"}"#)),
        201
    );
    assert_eq!(
        daemon.status("POST", "/v1/tasks", Some(r#"{"name":"b","expire":1}"#)),
        201
    );
    let mut events = EventStream::open(&daemon, "?since=0");
    let first = events.next_n(3);
    assert_eq!(summary(&first), ["created a", "held", "created b"]);
    let last_seen = first[2]["seq"].as_u64().unwrap();
    daemon.kill9();

    // While the daemon is down, b falls due; the restart expires it.
    std::thread::sleep(Duration::from_millis(1100));
    let daemon = Daemon::start(&dirs, &[]);
    assert_eq!(daemon.status("DELETE", "/v1/tasks/a", None), 204);
    let mut resumed = EventStream::open(&daemon, &format!("?since={last_seen}"));
    let missed = resumed.next_n(3);
    assert_eq!(summary(&missed), ["expired b", "deleted a", "idle"]);
    assert_eq!(seqs(&missed), [4, 5, 6]);

    // Bad since values are refused.
    assert_eq!(daemon.status("GET", "/v1/events?since=x", None), 400);
    assert_eq!(daemon.status("POST", "/v1/events", None), 405);

    // A clean stop checkpoints, so the next start reads the history from
    // the database alone, where the events that ended a hold are stored
    // once, in the usage table: the whole history, in order.
    drop(resumed);
    let (status, _) = daemon.terminate();
    assert!(status.success(), "{status}");
    let daemon = Daemon::start(&dirs, &[]);
    let mut replayed = EventStream::open(&daemon, "?since=0");
    let all = replayed.next_n(6);
    assert_eq!(
        summary(&all),
        [
            "created a",
            "held",
            "created b",
            "expired b",
            "deleted a",
            "idle"
        ]
    );
    assert_eq!(seqs(&all), [1, 2, 3, 4, 5, 6]);
    assert_eq!(all[4]["started_at"], first[0]["at"], "the hold a ended");
}

#[test]
fn a_slow_consumer_is_cut_off_while_others_are_served() {
    const EVENTS: usize = 6000;
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &[]);
    // The consumer opens a stream and never reads.
    let mut slow = daemon.connect();
    slow.write_all(b"GET /v1/events HTTP/1.1\r\nHost: sprite\r\n\r\n")
        .unwrap();
    // Make sure the stream is open before the flood.
    assert_eq!(daemon.status("GET", "/v1/status", None), 200);
    let metrics = metrics_text(&daemon);
    assert!(
        metrics.contains("sprite_tasks_event_streams 1\n"),
        "{metrics}"
    );

    let mut writer = daemon.connect();
    let body = r#"{"expire":"1h"}"#;
    for round in 0..EVENTS / 100 {
        let mut batch = Vec::new();
        for i in 0..100 {
            batch.extend(request_bytes(
                "PUT",
                &format!("/v1/tasks/t{}", (round * 100 + i) % 50),
                Some(body),
            ));
        }
        writer.write_all(&batch).unwrap();
        for _ in 0..100 {
            assert_eq!(read_response(&mut writer).unwrap().status, 200);
        }
    }
    daemon.wait_for_log("an event stream consumer fell behind");

    // The slow consumer finds the final line when it finally reads.
    let mut everything = Vec::new();
    slow.read_to_end(&mut everything).unwrap();
    let text = String::from_utf8_lossy(&everything);
    assert!(text.contains(r#""event":"lagged""#), "no final line");
    assert!(
        text.ends_with("\r\n0\r\n\r\n"),
        "the stream was not ended properly"
    );
    assert_eq!(daemon.status("GET", "/v1/tasks/t0", None), 200);
}

fn metrics_text(daemon: &Daemon) -> String {
    let mut stream = daemon.connect();
    stream
        .write_all(&request_bytes("GET", "/metrics", None))
        .unwrap();
    let response = read_response(&mut stream).unwrap();
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("Content-Type")
            .unwrap()
            .starts_with("text/plain")
    );
    String::from_utf8(response.body).unwrap()
}

/// Parses the Prometheus text format: every sample line is `name{labels} value`.
fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|line| !line.is_empty())
        .filter_map(|line| {
            if line.starts_with('#') {
                assert!(
                    line.starts_with("# HELP ") || line.starts_with("# TYPE "),
                    "{line}"
                );
                return None;
            }
            let (name, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
            let bare = name.split('{').next().unwrap();
            assert!(
                bare.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "metric name {bare}"
            );
            Some((name.to_owned(), value))
        })
        .collect()
}

fn sample(samples: &[(String, f64)], name: &str) -> f64 {
    samples
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no sample {name}"))
}

#[test]
fn metrics_parse_and_move() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &[]);
    let before = samples(&metrics_text(&daemon));
    assert_eq!(sample(&before, "sprite_tasks_live"), 0.0);
    assert_eq!(sample(&before, "sprite_tasks_held"), 0.0);
    assert_eq!(sample(&before, "sprite_tasks_commit_changes_count"), 0.0);
    assert_eq!(
        daemon.status("POST", "/v1/tasks", Some(r#"{"name":"a","expire":"1h"}"#)),
        201
    );
    assert_eq!(
        daemon.status("POST", "/v1/tasks", Some(r#"{"name":"a","expire":"1h"}"#)),
        409
    );
    assert_eq!(daemon.status("GET", "/v1/tasks/zzz", None), 404);
    let after = samples(&metrics_text(&daemon));
    assert_eq!(sample(&after, "sprite_tasks_live"), 1.0);
    assert_eq!(sample(&after, "sprite_tasks_held"), 1.0);
    assert_eq!(
        sample(
            &after,
            r#"sprite_tasks_requests_total{route="create",status="201"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &after,
            r#"sprite_tasks_requests_total{route="create",status="409"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &after,
            r#"sprite_tasks_requests_total{route="get",status="404"}"#
        ),
        1.0
    );
    assert_eq!(sample(&after, "sprite_tasks_commit_changes_count"), 1.0);
    assert_eq!(
        sample(&after, r#"sprite_tasks_commit_seconds_bucket{le="+Inf"}"#),
        1.0
    );
    assert!(sample(&after, "sprite_tasks_connections_accepted_total") >= 4.0);
    assert!(sample(&after, "sprite_tasks_held_seconds_total") >= 0.0);
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|text| text.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

fn process_exists(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

#[test]
fn hooks_run_at_the_edges() {
    let dirs = Dirs::new();
    let marks = dirs.db_dir.path();
    let while_held = format!("echo $$ >> {}/held.pids; exec sleep 1000", marks.display());
    let on_idle = format!("echo idle >> {}/idle.log", marks.display());
    let daemon = Daemon::start(&dirs, &["--while-held", &while_held, "--on-idle", &on_idle]);
    assert!(
        read_lines(&marks.join("held.pids")).is_empty(),
        "started while idle"
    );

    // idle -> held: the command starts.
    assert_eq!(
        daemon.status("POST", "/v1/tasks", Some(r#"{"name":"a","expire":"1h"}"#)),
        201
    );
    assert_eq!(
        daemon.status("POST", "/v1/tasks", Some(r#"{"name":"b","expire":"1h"}"#)),
        201
    );
    daemon.wait_for_log("--while-held command started");
    // The pid file is written by the child itself; wait for it to appear.
    let pids = common::eventually(|| read_lines(&marks.join("held.pids")), |p| !p.is_empty());
    assert_eq!(pids.len(), 1, "one --while-held command for one edge");
    let pid: i32 = pids[0].parse().unwrap();
    assert!(process_exists(pid));

    // held -> idle: it is stopped and reaped, and --on-idle runs once.
    assert_eq!(daemon.status("DELETE", "/v1/tasks/a", None), 204);
    assert!(process_exists(pid), "still held by b");
    assert_eq!(daemon.status("DELETE", "/v1/tasks/b", None), 204);
    daemon.wait_for_log("--while-held command exited");
    daemon.wait_for_log("--on-idle command exited");
    assert!(
        !process_exists(pid),
        "the --while-held command outlived the hold"
    );
    assert_eq!(read_lines(&marks.join("idle.log")), ["idle"]);

    // A second cycle: a new command, and --on-idle once more.
    assert_eq!(
        daemon.status("PUT", "/v1/tasks/c", Some(r#"{"expire":1}"#)),
        200
    );
    let log_lines_before = daemon
        .log_text()
        .matches("--on-idle command exited")
        .count();
    assert_eq!(log_lines_before, 1);
    // c expires on its own.
    daemon.wait_for_log("task expired");
    let idle = common::eventually(|| read_lines(&marks.join("idle.log")), |i| i.len() == 2);
    assert_eq!(idle, ["idle", "idle"]);
    assert_eq!(read_lines(&marks.join("held.pids")).len(), 2);
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");
}

#[test]
fn a_failing_hook_does_not_stop_the_daemon() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &["--on-idle", "exit 7", "--while-held", "exit 3"]);
    assert_eq!(
        daemon.status("PUT", "/v1/tasks/a", Some(r#"{"expire":60}"#)),
        200
    );
    daemon.wait_for_log("--while-held command failed");
    assert_eq!(daemon.status("DELETE", "/v1/tasks/a", None), 204);
    daemon.wait_for_log("--on-idle command failed");
    assert_eq!(daemon.status("GET", "/v1/tasks", None), 200);
    let text = metrics_text(&daemon);
    assert!(
        text.contains("sprite_tasks_hook_failures_total 2\n"),
        "{text}"
    );
}

#[test]
fn a_watcher_that_hangs_up_is_closed_at_once() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &[]);
    let watcher = EventStream::open(&daemon, "");
    assert!(metrics_text(&daemon).contains("sprite_tasks_event_streams 1\n"));
    drop(watcher);
    // No event is needed for the daemon to notice.
    let streams = common::eventually(
        || metrics_text(&daemon),
        |text| text.contains("sprite_tasks_event_streams 0\n"),
    );
    assert!(
        streams.contains("sprite_tasks_event_streams 0\n"),
        "{streams}"
    );
}
