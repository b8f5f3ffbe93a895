//! A wall clock set back while the disk cannot write: the real [`Server`],
//! in this process, over a log whose writes go through a [`FaultSwitch`],
//! with its wall clock stepped through the offset-file test hook.
//!
//! The hook's variable is read once per process, so this file holds a
//! single `#[test]`, and the server is stopped with this process's SIGTERM.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant, SystemTime};

use common::{Response, WAIT, read_response, request_bytes};
use sprite_tasks::server::Config;
use sprite_tasks::store::StoreOptions;
use sprite_tasks::testing::faulty::{FaultOn, FaultSwitch};
use sprite_tasks::time::{TEST_CLOCK_OFFSET_ENV, Timestamp};

const HOUR: Duration = Duration::from_secs(3600);

fn call(socket: &std::path::Path, method: &str, path: &str, body: Option<&str>) -> Response {
    let mut stream = UnixStream::connect(socket).expect("connect");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream
        .write_all(&request_bytes(method, path, body))
        .unwrap();
    read_response(&mut stream).expect("a whole response")
}

/// The `Date` header: the daemon's own `now`, to the second.
fn date(response: &Response) -> SystemTime {
    httpdate(response.header("Date").expect("a Date header"))
}

fn httpdate(text: &str) -> SystemTime {
    // "Sun, 29 Nov 2026 14:05:18 GMT" -> RFC 3339 for humantime.
    let parts: Vec<&str> = text.split(' ').collect();
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == parts[2])
    .expect("a month")
        + 1;
    let rfc3339 = format!("{}-{month:02}-{}T{}Z", parts[3], parts[1], parts[4]);
    humantime::parse_rfc3339(&rfc3339).expect("an RFC 3339 date")
}

fn expires_at(response: &Response) -> Timestamp {
    response.json()["expires_at"]
        .as_str()
        .and_then(Timestamp::parse_rfc3339)
        .expect("expires_at")
}

/// Seconds `a` is after `b` (negative: before).
fn seconds_after(a: SystemTime, b: SystemTime) -> f64 {
    match a.duration_since(b) {
        Ok(after) => after.as_secs_f64(),
        Err(before) => -before.duration().as_secs_f64(),
    }
}

#[test]
fn a_step_back_on_a_full_disk_stretches_nothing_and_is_followed_once_it_heals() {
    let socket_dir = tempfile::Builder::new().prefix("sc").tempdir().unwrap();
    let db_dir = tempfile::Builder::new()
        .prefix("db")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let offset_file = db_dir.path().join("clock-offset");
    let set_offset = |offset: Duration| {
        let staged = offset_file.with_extension("new");
        fs::write(&staged, offset.as_nanos().to_string()).unwrap();
        fs::rename(&staged, &offset_file).unwrap();
    };
    set_offset(HOUR);
    // SAFETY: the only test of this process, before it starts any thread
    // of its own; nothing else reads or writes the environment meanwhile.
    unsafe { std::env::set_var(TEST_CLOCK_OFFSET_ENV, &offset_file) };

    let socket = socket_dir.path().join("api.sock");
    let db = db_dir.path().join("tasks.redb");
    let switch = FaultSwitch::new();
    let config = Config {
        socket: socket.clone(),
        shutdown_grace: Duration::from_secs(1),
        ..Config::default()
    };
    let thread = common::start_in_process(
        config,
        &db,
        &FaultSwitch::new(),
        &switch,
        StoreOptions::default(),
    )
    .expect("the server starts");

    let created = call(
        &socket,
        "PUT",
        "/v1/tasks/hold",
        Some(r#"{"expire":"60s"}"#),
    );
    assert!(matches!(created.status, 200 | 201), "{}", created.status);
    let ahead = seconds_after(date(&created), SystemTime::now());
    assert!(
        (3598.0..3602.0).contains(&ahead),
        "the hook took effect: {ahead} s"
    );
    let written = expires_at(&created);

    // The disk fills up; then the clock is set right.
    switch.fail_after(0, FaultOn::Writes, libc::ENOSPC);
    let injected = switch.injected();
    set_offset(Duration::ZERO);
    let deadline = Instant::now() + WAIT;
    while switch.injected() == injected {
        assert!(
            Instant::now() < deadline,
            "moving the holds was never tried"
        );
        // Polling a counter: the reactor notices the step within a second.
        std::thread::sleep(Duration::from_millis(20));
    }
    // The holds could not move, so the clock does not either: the daemon
    // stays on its old timeline (its Date an hour ahead), and the hold is
    // served unchanged, ending when it would have.
    let served = call(&socket, "GET", "/v1/tasks/hold", None);
    assert_eq!(served.status, 200);
    assert_eq!(expires_at(&served), written);
    let ahead = seconds_after(date(&served), SystemTime::now());
    assert!(
        (3597.0..3602.0).contains(&ahead),
        "still the old timeline: {ahead} s"
    );
    let refused = call(
        &socket,
        "PUT",
        "/v1/tasks/other",
        Some(r#"{"expire":"60s"}"#),
    );
    assert_eq!(refused.status, 503);

    // Once the disk heals, the step is followed: the hold moves back by it.
    switch.heal();
    let deadline = Instant::now() + WAIT;
    let moved = loop {
        let served = call(&socket, "GET", "/v1/tasks/hold", None);
        assert_eq!(served.status, 200, "the hold is still live");
        if expires_at(&served) != written {
            break served;
        }
        assert!(Instant::now() < deadline, "the step was never followed");
        std::thread::sleep(Duration::from_millis(20));
    };
    let left = seconds_after(expires_at(&moved).to_system_time(), SystemTime::now());
    assert!(0.0 < left && left <= 60.0, "{left} s left");
    let behind = written.saturating_since(expires_at(&moved));
    assert!(
        behind.abs_diff(HOUR) < Duration::from_secs(2),
        "moved back by the step: {behind:?}"
    );
    let now = call(&socket, "GET", "/v1/status", None);
    let lag = seconds_after(date(&now), SystemTime::now());
    assert!(lag.abs() < 2.0, "the Date is the system clock's: {lag} s");

    common::signal(std::process::id(), libc::SIGTERM);
    let stats = thread
        .join()
        .expect("the server thread does not panic")
        .expect("the server stops cleanly");
    assert!(stats.failed_commits >= 1, "{stats:?}");
}
