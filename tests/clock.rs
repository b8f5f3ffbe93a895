//! Steps of the wall clock against the real binary: forward (a wake), back
//! (a clock that was ahead, set right) while running, and back while the
//! daemon was down; the bound on what a restart cannot see.
//!
//! The daemon's wall clock is stepped through its test hook
//! (`time::TEST_CLOCK_OFFSET_ENV`): a file holding an offset in nanoseconds
//! that `wall_now` adds to the real wall clock at every reading. The
//! monotonic clock stays real. Every test first checks that the offset took
//! effect (timestamps the daemon hands out are off by it), so none can pass
//! with a hook that does nothing.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use common::{Daemon, Dirs, eventually};
use serde_json::Value;
use sprite_tasks::time::{STEP_TOLERANCE, TEST_CLOCK_OFFSET_ENV, Timestamp};

const HOUR_NS: i64 = 3600 * 1_000_000_000;

/// The file the daemon reads its wall-clock offset from.
struct FakeClock {
    path: PathBuf,
}

impl FakeClock {
    fn new(dirs: &Dirs, offset_ns: i64) -> FakeClock {
        let clock = FakeClock {
            path: dirs.db_dir.path().join("clock-offset"),
        };
        clock.set(offset_ns);
        clock
    }

    /// Steps the daemon's wall clock to the real one plus `offset_ns`. The
    /// file is replaced whole (rename), so no reading sees half of it.
    fn set(&self, offset_ns: i64) {
        let staged = self.path.with_extension("new");
        fs::write(&staged, offset_ns.to_string()).expect("write the offset");
        fs::rename(&staged, &self.path).expect("replace the offset");
    }

    fn start(&self, dirs: &Dirs, args: &[&str]) -> Daemon {
        Daemon::start_with_env(
            dirs,
            args,
            &[(TEST_CLOCK_OFFSET_ENV, OsStr::new(&self.path))],
        )
    }
}

fn real_now() -> Timestamp {
    Timestamp::from_system_time(SystemTime::now())
}

fn time(value: &Value, field: &str) -> Timestamp {
    value[field]
        .as_str()
        .and_then(Timestamp::parse_rfc3339)
        .unwrap_or_else(|| panic!("no {field} in {value}"))
}

/// `a - b` in signed nanoseconds.
fn diff_ns(a: Timestamp, b: Timestamp) -> i64 {
    a.as_nanos() as i64 - b.as_nanos() as i64
}

fn put(daemon: &Daemon, name: &str, expire: &str) -> Value {
    let body = format!(r#"{{"expire":"{expire}"}}"#);
    let (status, task) = daemon.call("PUT", &format!("/v1/tasks/{name}"), Some(&body));
    assert!(status == 200 || status == 201, "{status} {task}");
    task
}

fn get(daemon: &Daemon, name: &str) -> Option<Value> {
    match daemon.call("GET", &format!("/v1/tasks/{name}"), None) {
        (200, task) => Some(task),
        (404, _) => None,
        (status, body) => panic!("{status} {body}"),
    }
}

/// Every retained event, read from a `?since=0` replay up to the one for
/// which `last` holds.
fn events_until(daemon: &Daemon, last: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut stream = daemon.connect();
    stream
        .write_all(b"GET /v1/events?since=0 HTTP/1.1\r\nHost: sprite\r\n\r\n")
        .unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
    }
    let mut events = Vec::new();
    loop {
        let event = next_chunk(&mut reader).expect("the stream ended early");
        let done = last(&event);
        events.push(event);
        if done {
            return events;
        }
    }
}

fn next_chunk(reader: &mut BufReader<UnixStream>) -> Option<Value> {
    let mut size_line = String::new();
    if reader.read_line(&mut size_line).unwrap() == 0 {
        return None;
    }
    let size = usize::from_str_radix(size_line.trim_end(), 16).expect("chunk size");
    let mut chunk = vec![0u8; size + 2];
    reader.read_exact(&mut chunk).unwrap();
    (size > 0).then(|| serde_json::from_slice(&chunk[..size]).expect("an event line"))
}

fn is_step(event: &Value) -> bool {
    event["event"] == "clock_stepped"
}

/// The value of one metric line (`name{labels}` exactly) on `/metrics`.
fn metric(daemon: &Daemon, series: &str) -> u64 {
    let mut stream = daemon.connect();
    stream
        .write_all(&common::request_bytes("GET", "/metrics", None))
        .unwrap();
    let response = common::read_response(&mut stream).expect("a response");
    let text = String::from_utf8(response.body).expect("text");
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .expect("a count")
}

/// Asserts the daemon hands out timestamps `offset_ns` from the real clock:
/// the hook took effect (or, at zero, no longer shifts anything).
fn assert_clock_offset(daemon: &Daemon, offset_ns: i64) {
    let before = real_now();
    let task = put(daemon, "probe", "1s");
    let after = real_now();
    let started = time(&task, "started_at");
    let tolerance = STEP_TOLERANCE.as_nanos() as i64;
    assert!(
        diff_ns(started, before) >= offset_ns - tolerance
            && diff_ns(started, after) <= offset_ns + tolerance,
        "started_at {started} is not {offset_ns} ns from the real clock ({before} .. {after})"
    );
}

#[test]
fn a_forward_step_expires_due_holds_at_once() {
    let dirs = Dirs::new();
    let clock = FakeClock::new(&dirs, 0);
    let daemon = clock.start(&dirs, &[]);
    let short = put(&daemon, "short", "60s");
    let long = put(&daemon, "long", "1h");

    // A wake after two minutes.
    clock.set(2 * 60 * 1_000_000_000);
    let gone = eventually(|| get(&daemon, "short"), Option::is_none);
    assert!(gone.is_none(), "the due hold outlived the step: {gone:?}");
    assert_clock_offset(&daemon, 2 * 60 * 1_000_000_000);
    // The long hold keeps its absolute deadline.
    let still = get(&daemon, "long").expect("the long hold is live");
    assert_eq!(time(&still, "expires_at"), time(&long, "expires_at"));

    // The expiry was committed with the step it followed, not by a timer
    // that came round later: one commit, one `at`.
    let events = events_until(&daemon, |e| e["event"] == "expired");
    let step = events
        .iter()
        .find(|e| is_step(e))
        .expect("a clock_stepped event");
    let expired = events.last().unwrap();
    assert_eq!(expired["task"], "short");
    assert_eq!(expired["at"], step["at"], "{events:?}");
    assert_eq!(expired["seq"].as_u64(), step["seq"].as_u64().map(|s| s + 1));
    let step_ns = step["step_ns"].as_i64().expect("step_ns");
    assert!(
        (step_ns - 2 * 60 * 1_000_000_000).abs() < STEP_TOLERANCE.as_nanos() as i64,
        "{step}"
    );
    assert!(time(expired, "at") > time(&short, "expires_at"));
    assert_eq!(
        metric(
            &daemon,
            r#"sprite_tasks_clock_steps_total{direction="forward"}"#
        ),
        1
    );
    assert_eq!(
        metric(
            &daemon,
            r#"sprite_tasks_clock_steps_total{direction="backward"}"#
        ),
        0
    );
    daemon.wait_for_log("the wall clock stepped forward");
}

#[test]
fn a_backward_step_keeps_each_holds_remaining_time() {
    let dirs = Dirs::new();
    // Started with the clock three hours ahead.
    let clock = FakeClock::new(&dirs, 3 * HOUR_NS);
    let daemon = clock.start(&dirs, &[]);
    assert_clock_offset(&daemon, 3 * HOUR_NS);
    let minute = put(&daemon, "minute", "60s");
    let hour = put(&daemon, "hour", "1h");

    // The clock is set right.
    clock.set(0);
    daemon.wait_for_log("the wall clock was set back");
    // Timestamps handed out from now on are the system clock's.
    assert_clock_offset(&daemon, 0);

    // The moved holds' events follow the step's in name order.
    let events = events_until(&daemon, |e| {
        e["event"] == "refreshed" && e["task"] == "minute"
    });
    let step = events
        .iter()
        .find(|e| is_step(e))
        .expect("a clock_stepped event");
    let step_ns = step["step_ns"].as_i64().expect("step_ns");
    assert!(
        (step_ns + 3 * HOUR_NS).abs() < STEP_TOLERANCE.as_nanos() as i64,
        "{step}"
    );
    // Each hold moved by exactly the step: its remaining time is unchanged.
    for before in [&minute, &hour] {
        let name = before["name"].as_str().unwrap();
        let after = get(&daemon, name).expect("the hold is still live");
        for field in ["started_at", "expires_at"] {
            assert_eq!(
                diff_ns(time(&after, field), time(before, field)),
                step_ns,
                "{name} {field}: {before} -> {after}"
            );
        }
        // And by the system clock it ends no later than it would have.
        let left = diff_ns(time(&after, "expires_at"), real_now());
        let length = diff_ns(time(before, "expires_at"), time(before, "started_at"));
        assert!(0 < left && left <= length, "{name}: {left} ns left");
        let moved = events
            .iter()
            .find(|e| e["event"] == "refreshed" && e["task"] == name)
            .expect("a refreshed event for the moved hold");
        assert_eq!(moved["expires_at"], after["expires_at"]);
        assert_eq!(moved["at"], step["at"]);
    }
    assert_eq!(
        metric(
            &daemon,
            r#"sprite_tasks_clock_steps_total{direction="backward"}"#
        ),
        1
    );
}

/// The case of issue 16: a hold written under a clock three hours ahead,
/// the clock set right while the daemon was down.
#[test]
fn a_restart_after_a_step_back_stretches_nothing_beyond_the_bound() {
    let dirs = Dirs::new();
    let clock = FakeClock::new(&dirs, 3 * HOUR_NS);
    let daemon = clock.start(&dirs, &[]);
    assert_clock_offset(&daemon, 3 * HOUR_NS);
    let short = put(&daemon, "e", "3s");
    let (status, _) = daemon.terminate();
    assert!(status.success());

    clock.set(0);
    let daemon = clock.start(&dirs, &[]);
    daemon.wait_for_log("it was set back while the daemon was down");
    // The hold keeps what it had left at the daemon's last commit: at most
    // its three seconds from the restart, not three hours.
    let moved = get(&daemon, "e").expect("the hold survives the restart");
    let left = diff_ns(time(&moved, "expires_at"), real_now());
    assert!(left <= 3_000_000_000, "{left} ns left: {short} -> {moved}");
    assert_eq!(
        time(&moved, "expires_at").saturating_since(time(&moved, "started_at")),
        Duration::from_secs(3)
    );
    let gone = eventually(|| get(&daemon, "e"), Option::is_none);
    assert!(
        gone.is_none(),
        "the hold outlived its three seconds: {gone:?}"
    );
    assert_clock_offset(&daemon, 0);

    let events = events_until(&daemon, |e| e["event"] == "expired" && e["task"] == "e");
    let step = events
        .iter()
        .rev()
        .find(|e| is_step(e))
        .expect("a clock_stepped event");
    assert!(
        step["step_ns"].as_i64().expect("step_ns") < -2 * HOUR_NS,
        "{step}"
    );
    assert_eq!(
        metric(
            &daemon,
            r#"sprite_tasks_clock_steps_total{direction="backward"}"#
        ),
        1
    );
    assert_eq!(metric(&daemon, "sprite_tasks_clamped_at_load_total"), 0);
}

/// What a restart cannot see is bounded: a hold whose expiry lies more than
/// `--max-expire` ahead is brought back to now + `--max-expire`, logged and
/// counted.
#[test]
fn a_hold_beyond_the_maximum_expiry_is_bounded_at_load() {
    let dirs = Dirs::new();
    let clock = FakeClock::new(&dirs, 0);
    let daemon = clock.start(&dirs, &[]);
    put(&daemon, "long", "1h");
    put(&daemon, "short", "20s");
    let (status, _) = daemon.terminate();
    assert!(status.success());

    let before = real_now();
    let daemon = clock.start(&dirs, &["--max-expire", "30s"]);
    let after = real_now();
    daemon.wait_for_log("its expiry is bounded to now + --max-expire");
    let long = get(&daemon, "long").expect("bounded, not removed");
    let expires_at = time(&long, "expires_at");
    assert!(
        expires_at >= before.checked_add(Duration::from_secs(30)).unwrap()
            && expires_at <= after.checked_add(Duration::from_secs(30)).unwrap(),
        "{long}"
    );
    // A hold within the bound is left alone.
    assert!(
        time(&get(&daemon, "short").expect("live"), "expires_at") < expires_at,
        "the short hold kept its own deadline"
    );
    assert_eq!(metric(&daemon, "sprite_tasks_clamped_at_load_total"), 1);
    assert_eq!(
        metric(
            &daemon,
            r#"sprite_tasks_clock_steps_total{direction="backward"}"#
        ),
        0
    );
}
