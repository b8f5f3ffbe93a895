//! `--on-idle-after` against the real daemon: runs once after the delay,
//! never while held, is cancelled by a hold, re-arms at the next edge, and
//! counts across restarts as documented.
//!
//! Times are compared with the daemon's own: the idle edge's `at` from
//! the API and the `on_idle_at` it logs, never with a test's stopwatch.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Daemon, Dirs, eventually};
use sprite_tasks::time::Timestamp;

/// The `--on-idle` command of these tests: appends the time it ran, in
/// nanoseconds since the epoch, one line per run.
fn record_runs(file: &Path) -> String {
    format!("date +%s%N >> {}", file.display())
}

/// The times `--on-idle` ran, as recorded by [`record_runs`].
fn runs(file: &Path) -> Vec<Timestamp> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|line| Timestamp::from_nanos(line.trim().parse().expect("nanoseconds")))
        .collect()
}

fn wait_for_runs(file: &Path, count: usize) -> Vec<Timestamp> {
    let seen = eventually(|| runs(file), |runs| runs.len() >= count);
    assert_eq!(seen.len(), count, "--on-idle runs: {seen:?}");
    seen
}

/// The `idle_since` of `GET /v1/status`.
fn idle_since(daemon: &Daemon) -> Timestamp {
    let (status, body) = daemon.call("GET", "/v1/status", None);
    assert_eq!(status, 200);
    Timestamp::parse_rfc3339(body["idle_since"].as_str().expect("idle since a time"))
        .expect("an RFC 3339 time")
}

/// The `on_idle_at=` of the log line containing `needle`.
fn logged_due(daemon: &Daemon, needle: &str) -> Timestamp {
    let line = daemon.wait_for_log(needle);
    let value = line
        .split("on_idle_at=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no on_idle_at in {line}"));
    Timestamp::parse_rfc3339(value).unwrap_or_else(|| panic!("{value}"))
}

fn plus(at: Timestamp, delay: Duration) -> Timestamp {
    at.checked_add(delay).unwrap()
}

const ARMED: &str = "--on-idle-after armed at the idle edge";
const ARMED_AT_START: &str = "--on-idle-after armed at start-up";

#[test]
fn on_idle_after_runs_once_after_the_delay_never_while_held_and_rearms() {
    let dirs = Dirs::new();
    let file = dirs.socket_dir.path().join("runs");
    let delay = Duration::from_secs(1);
    let hook = record_runs(&file);
    let args = ["--on-idle", hook.as_str(), "--on-idle-after", "1s"];
    {
        // A first daemon leaves a task held, so the next one starts held.
        let daemon = Daemon::start(&dirs, &[]);
        assert_eq!(
            daemon.status("PUT", "/v1/tasks/agent", Some(r#"{"expire":"1h"}"#)),
            200
        );
        assert!(daemon.terminate().0.success());
    }
    let daemon = Daemon::start(&dirs, &args);
    // Held for longer than the delay: a second task expires (the event
    // history proves its 2 seconds passed) while the first still holds.
    assert_eq!(
        daemon.status(
            "POST",
            "/v1/tasks",
            Some(r#"{"name":"short","expire":"2s"}"#)
        ),
        201
    );
    daemon.wait_for_log("task expired task=short");
    assert_eq!(daemon.status("DELETE", "/v1/tasks/agent", None), 204);
    let edge = idle_since(&daemon);
    assert_eq!(logged_due(&daemon, ARMED), plus(edge, delay));
    let first = wait_for_runs(&file, 1);
    assert!(
        first[0] >= plus(edge, delay),
        "ran at {} for an edge at {edge}",
        first[0]
    );
    assert!(
        !daemon.log_text().contains(ARMED_AT_START),
        "started held: nothing armed at start-up"
    );

    // Re-armed by the next edge, and only by it: one more run.
    assert_eq!(
        daemon.status("PUT", "/v1/tasks/agent", Some(r#"{"expire":"1h"}"#)),
        200
    );
    assert_eq!(daemon.status("DELETE", "/v1/tasks/agent", None), 204);
    let second_edge = idle_since(&daemon);
    assert!(second_edge > edge);
    let both = wait_for_runs(&file, 2);
    assert!(both[1] >= plus(second_edge, delay));
    assert!(daemon.terminate().0.success());
    assert_eq!(runs(&file).len(), 2, "one run per held -> idle edge");
}

#[test]
fn a_hold_before_the_delay_cancels_it() {
    let dirs = Dirs::new();
    let file = dirs.socket_dir.path().join("runs");
    let hook = record_runs(&file);
    // Long enough that the hold below always comes first.
    let daemon = Daemon::start(&dirs, &["--on-idle", &hook, "--on-idle-after", "1h"]);
    let at_start = logged_due(&daemon, ARMED_AT_START);
    assert_eq!(
        daemon.status("PUT", "/v1/tasks/agent", Some(r#"{"expire":"1h"}"#)),
        200
    );
    daemon.wait_for_log("held before --on-idle-after ran out: --on-idle cancelled");
    let (_, status) = daemon.call("GET", "/v1/status", None);
    assert_eq!(status["held"], true);
    assert_eq!(daemon.status("DELETE", "/v1/tasks/agent", None), 204);
    let edge = idle_since(&daemon);
    assert_eq!(
        logged_due(&daemon, ARMED),
        plus(edge, Duration::from_secs(3600))
    );
    assert!(
        plus(edge, Duration::from_secs(3600)) > at_start,
        "re-armed from the new edge"
    );
    assert!(daemon.terminate().0.success());
    assert!(runs(&file).is_empty());
}

#[test]
fn on_idle_after_across_restarts() {
    let dirs = Dirs::new();
    let file = dirs.socket_dir.path().join("runs");
    let hook = record_runs(&file);
    let delay = Duration::from_secs(3600);
    let args = ["--on-idle", hook.as_str(), "--on-idle-after", "1h"];

    // A restart neither postpones it nor fires it early: still due an hour
    // after the edge recorded by the previous daemon.
    let daemon = Daemon::start(&dirs, &args);
    assert_eq!(
        daemon.status("PUT", "/v1/tasks/agent", Some(r#"{"expire":"1h"}"#)),
        200
    );
    assert_eq!(daemon.status("DELETE", "/v1/tasks/agent", None), 204);
    let edge = idle_since(&daemon);
    assert!(daemon.terminate().0.success());
    let daemon = Daemon::start(&dirs, &args);
    assert_eq!(logged_due(&daemon, ARMED_AT_START), plus(edge, delay));
    // A machine held when the daemon stopped, whose task expired while it
    // was down, counts from this start-up: not at once.
    assert_eq!(
        daemon.status("PUT", "/v1/tasks/agent", Some(r#"{"expire":"1s"}"#)),
        200
    );
    let (_, task) = daemon.call("GET", "/v1/tasks/agent", None);
    let expires_at = Timestamp::parse_rfc3339(task["expires_at"].as_str().unwrap()).unwrap();
    daemon.kill9();
    let now = || Timestamp::from_system_time(std::time::SystemTime::now());
    // The wall clock, polled until past the expiry (no event to wait on).
    eventually(now, |t| *t > expires_at);
    let daemon = Daemon::start(&dirs, &args);
    let due = logged_due(&daemon, ARMED);
    let restart_edge = idle_since(&daemon);
    assert!(
        restart_edge > expires_at,
        "the edge is the restart's commit"
    );
    assert_eq!(due, plus(restart_edge, delay));
    assert!(!daemon.log_text().contains(ARMED_AT_START));
    assert!(daemon.terminate().0.success());
    assert!(runs(&file).is_empty());
}

#[test]
fn a_delay_that_ran_out_before_start_up_counts_afresh() {
    // The previous daemon ran --on-idle (say, poweroff): the next boot
    // must not run it again at once, but a full delay after start-up.
    let dirs = Dirs::new();
    let file = dirs.socket_dir.path().join("runs");
    let hook = record_runs(&file);
    let delay = Duration::from_secs(1);
    let args = ["--on-idle", hook.as_str(), "--on-idle-after", "1s"];
    {
        let daemon = Daemon::start(&dirs, &[]);
        assert_eq!(
            daemon.status("PUT", "/v1/tasks/agent", Some(r#"{"expire":"1h"}"#)),
            200
        );
        assert!(daemon.terminate().0.success());
    }
    let daemon = Daemon::start(&dirs, &args);
    assert_eq!(daemon.status("DELETE", "/v1/tasks/agent", None), 204);
    let edge = idle_since(&daemon);
    let ran = wait_for_runs(&file, 1)[0];
    assert!(daemon.terminate().0.success());
    let daemon = Daemon::start(&dirs, &args);
    let due = logged_due(&daemon, ARMED_AT_START);
    assert_eq!(
        idle_since(&daemon),
        edge,
        "the recorded edge is the old one"
    );
    assert!(due > plus(edge, delay), "not due at once");
    assert!(
        due >= plus(ran, delay),
        "a full delay after a start-up later than the run"
    );
    assert!(daemon.terminate().0.success());
}
