//! How long the machine was held, by whom, and the cap on a hold
//! (issue 24), against the real binaries: `GET /v1/usage` over holds that
//! overlap, survive a kill -9 and are cut by the window; `--max-held-for`
//! and a task's own `max_held_for` releasing a hold that is refreshed
//! forever; and `sprite-env tasks report`.
//!
//! The daemon's clock cannot be injected into the real binary, so real
//! time passes here: each test takes a few seconds, and the figures it
//! expects are computed from the wall-clock instants measured around each
//! request, not from the nominal schedule.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::{Daemon, Dirs, EventStream, eventually, metrics, sample};
use serde_json::Value;
use sprite_tasks::time::Timestamp;

/// How far a figure of `/v1/usage` may be from the one computed from the
/// instants measured around the requests, on top of the measured
/// uncertainty (where within a request's round trip the daemon stamped
/// it). It covers the daemon's millisecond precision, the time between the
/// daemon reading a request and stamping it, the expiry timer firing late
/// on a busy machine, and the test's own thread being descheduled between
/// a request's answer and its `after` reading. Holds here last 0.5 s to
/// 4 s, so 0.3 s still tells one hold, or one overlap, from another.
const TOLERANCE: f64 = 0.3;

/// The wall clock as seconds since the epoch (f64 keeps sub-microsecond
/// precision for today's dates).
fn secs(time: SystemTime) -> f64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn now_secs() -> f64 {
    secs(SystemTime::now())
}

/// Seconds since the epoch as the daemon's RFC 3339 (UTC, `Z`, so no `+`
/// to encode; `:` is a legal query character and is sent as is).
fn rfc3339(seconds: f64) -> String {
    Timestamp::from_nanos((seconds * 1e9).round() as u64).to_string()
}

/// An RFC 3339 field of an answer as seconds since the epoch.
fn parse_time(value: &Value) -> f64 {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is not a time"));
    let stamp =
        Timestamp::parse_rfc3339(text).unwrap_or_else(|| panic!("{text:?} is not RFC 3339"));
    stamp.as_nanos() as f64 / 1e9
}

/// One request, with the wall-clock instants just before it was sent and
/// just after its answer was read.
struct Timed {
    status: u16,
    body: Value,
    before: f64,
    after: f64,
}

impl Timed {
    /// The best estimate of when the daemon stamped the request.
    fn mid(&self) -> f64 {
        (self.before + self.after) / 2.0
    }

    /// How far the daemon's stamp can be from [`mid`](Self::mid).
    fn half(&self) -> f64 {
        (self.after - self.before) / 2.0
    }
}

fn timed(daemon: &Daemon, method: &str, path: &str, body: Option<&str>) -> Timed {
    let before = now_secs();
    let (status, answer) = daemon.call(method, path, body);
    let after = now_secs();
    Timed {
        status,
        body: answer,
        before,
        after,
    }
}

/// Sleeps until `offset` after `start` (at once if that has passed).
fn sleep_until(start: Instant, offset: Duration) {
    let left = (start + offset).saturating_duration_since(Instant::now());
    std::thread::sleep(left);
}

/// One hold: a task's name and when it started and ended.
struct Hold {
    name: &'static str,
    start: f64,
    end: f64,
}

/// What `/v1/usage` should answer for `holds` within `[since, until]`.
#[derive(Debug, Default)]
struct Expected {
    union: f64,
    /// Per name: held, sole, first held, last held.
    tasks: BTreeMap<&'static str, Row>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Row {
    held: f64,
    sole: f64,
    first: f64,
    last: f64,
}

/// A sweep over the holds' edges clipped to the window: each elementary
/// stretch counts for the union when any hold covers it, for each hold
/// that covers it, and as sole time when exactly one does.
fn expected(holds: &[Hold], since: f64, until: f64) -> Expected {
    let mut edges: Vec<f64> = vec![since, until];
    for hold in holds {
        edges.push(hold.start.clamp(since, until));
        edges.push(hold.end.clamp(since, until));
    }
    edges.sort_by(f64::total_cmp);
    let mut out = Expected::default();
    for pair in edges.windows(2) {
        let (from, to) = (pair[0], pair[1]);
        if to <= from {
            continue;
        }
        let covering: Vec<&Hold> = holds
            .iter()
            .filter(|hold| hold.start <= from && hold.end >= to)
            .collect();
        if !covering.is_empty() {
            out.union += to - from;
        }
        for hold in &covering {
            let row = out.tasks.entry(hold.name).or_insert(Row {
                first: from,
                ..Row::default()
            });
            row.held += to - from;
            if covering.len() == 1 {
                row.sole += to - from;
            }
            row.first = row.first.min(from);
            row.last = row.last.max(to);
        }
    }
    out
}

fn usage(daemon: &Daemon, since: f64, until: f64) -> Value {
    let path = format!(
        "/v1/usage?since={}&until={}",
        rfc3339(since),
        rfc3339(until)
    );
    let (status, answer) = daemon.call("GET", &path, None);
    assert_eq!(status, 200, "{path}: {answer}");
    answer
}

fn float(value: &Value) -> f64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("{value} is not a number"))
}

fn assert_close(what: &str, got: f64, want: f64, slack: f64) {
    assert!(
        (got - want).abs() <= slack,
        "{what}: got {got:.3}, expected {want:.3} ± {slack:.3}"
    );
}

/// The rows of a usage answer by name (each name has one owner here).
fn rows(answer: &Value) -> BTreeMap<String, Value> {
    answer["tasks"]
        .as_array()
        .unwrap_or_else(|| panic!("no tasks array: {answer}"))
        .iter()
        .map(|row| (row["name"].as_str().unwrap().to_owned(), row.clone()))
        .collect()
}

/// Checks a usage answer against the expected figures: the union, and per
/// task held, sole, first and last held; exactly the expected tasks have
/// rows, sorted by held_seconds descending then by name.
fn check_usage(label: &str, answer: &Value, want: &Expected, slack: f64) {
    assert_close(
        &format!("{label}: held_seconds"),
        float(&answer["held_seconds"]),
        want.union,
        slack,
    );
    let got = rows(answer);
    let got_names: Vec<&String> = got.keys().collect();
    let want_names: Vec<&&str> = want.tasks.keys().collect();
    assert_eq!(
        got_names.len(),
        want_names.len(),
        "{label}: rows {got_names:?}, expected {want_names:?}: {answer}"
    );
    for (name, row) in &want.tasks {
        let line = got
            .get(*name)
            .unwrap_or_else(|| panic!("{label}: no row for {name}: {answer}"));
        let what = |field: &str| format!("{label}: {name}.{field}");
        assert_close(
            &what("held_seconds"),
            float(&line["held_seconds"]),
            row.held,
            slack,
        );
        assert_close(
            &what("sole_seconds"),
            float(&line["sole_seconds"]),
            row.sole,
            slack,
        );
        assert_close(
            &what("first_held_at"),
            parse_time(&line["first_held_at"]),
            row.first,
            slack,
        );
        assert_close(
            &what("last_held_at"),
            parse_time(&line["last_held_at"]),
            row.last,
            slack,
        );
        assert_eq!(line["holds"], 1, "{}: {line}", what("holds"));
        assert_eq!(line["held_now"], false, "{}: {line}", what("held_now"));
    }
    // Sorted by held_seconds descending, then by name.
    let order: Vec<(f64, &str)> = answer["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| (float(&row["held_seconds"]), row["name"].as_str().unwrap()))
        .collect();
    for pair in order.windows(2) {
        let ((held_a, name_a), (held_b, name_b)) = (pair[0], pair[1]);
        assert!(
            held_a > held_b || (held_a == held_b && name_a < name_b),
            "{label}: rows not sorted by held_seconds desc, then name: {order:?}"
        );
    }
    assert_eq!(answer["held_now"], false, "{label}: {answer}");
    assert!(
        answer.get("buckets").is_none_or(Value::is_null),
        "{label}: no buckets were asked for: {answer}"
    );
}

fn our_uid() -> u64 {
    // SAFETY: getuid has no preconditions and touches no memory.
    u64::from(unsafe { libc::getuid() })
}

#[test]
fn usage_adds_up_overlapping_holds() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &[]);
    let body = |name: &str, expire: &str| format!(r#"{{"name":"{name}","expire":"{expire}"}}"#);

    // The schedule (offsets from the first request): a overlaps b, then
    // c alone, then d alone, ending by its own expiry.
    let start = Instant::now();
    let create_a = timed(&daemon, "POST", "/v1/tasks", Some(&body("a", "1h")));
    assert_eq!(create_a.status, 201, "{}", create_a.body);
    sleep_until(start, Duration::from_millis(500));
    let create_b = timed(&daemon, "POST", "/v1/tasks", Some(&body("b", "1h")));
    assert_eq!(create_b.status, 201, "{}", create_b.body);
    sleep_until(start, Duration::from_secs(2));
    let delete_a = timed(&daemon, "DELETE", "/v1/tasks/a", None);
    assert_eq!(delete_a.status, 204);
    sleep_until(start, Duration::from_secs(4));
    let delete_b = timed(&daemon, "DELETE", "/v1/tasks/b", None);
    assert_eq!(delete_b.status, 204);
    sleep_until(start, Duration::from_secs(5));
    let create_c = timed(&daemon, "POST", "/v1/tasks", Some(&body("c", "1h")));
    assert_eq!(create_c.status, 201, "{}", create_c.body);
    sleep_until(start, Duration::from_secs(6));
    let delete_c = timed(&daemon, "DELETE", "/v1/tasks/c", None);
    assert_eq!(delete_c.status, 204);
    sleep_until(start, Duration::from_millis(6500));
    let create_d = timed(&daemon, "POST", "/v1/tasks", Some(&body("d", "1s")));
    assert_eq!(create_d.status, 201, "{}", create_d.body);
    let d = create_d.body.clone();
    // d ends at its expiry, by the daemon's own stamps.
    let (d_start, d_end) = (parse_time(&d["started_at"]), parse_time(&d["expires_at"]));
    assert_close("d's expire", d_end - d_start, 1.0, 0.001);
    let gone = eventually(
        || daemon.status("GET", "/v1/tasks/d", None),
        |status| *status == 404,
    );
    assert_eq!(gone, 404, "d expires on its own");
    let end = now_secs();

    let holds = [
        Hold {
            name: "a",
            start: create_a.mid(),
            end: delete_a.mid(),
        },
        Hold {
            name: "b",
            start: create_b.mid(),
            end: delete_b.mid(),
        },
        Hold {
            name: "c",
            start: create_c.mid(),
            end: delete_c.mid(),
        },
        Hold {
            name: "d",
            start: d_start,
            end: d_end,
        },
    ];
    // Each edge of a figure may be off by its request's half round trip.
    let measured = [
        &create_a, &create_b, &delete_a, &delete_b, &create_c, &delete_c,
    ]
    .iter()
    .map(|request| request.half())
    .fold(0.0, f64::max);
    let slack = TOLERANCE + 6.0 * measured;

    let t0 = create_a.mid();
    let (since, until) = (t0 - 1.0, end + 0.5);
    let want = expected(&holds, since, until);
    // The schedule's nominal figures, for whoever reads a failure.
    eprintln!("expected (nominally union 6, a 2/0.5, b 3.5/2, c 1/1, d 1/1): {want:?}");

    let answer = usage(&daemon, since, until);
    check_usage("whole window", &answer, &want, slack);
    assert_close("since", parse_time(&answer["since"]), since, 0.002);
    let answered_until = parse_time(&answer["until"]);
    assert!(
        answered_until <= until + 0.002 && answered_until >= end - 0.002,
        "until is the one asked for, clamped to now: {answer}"
    );
    assert!(
        parse_time(&answer["history_from"]) <= t0 + slack,
        "the history covers the first hold: {answer}"
    );
    // Every row is this test's: its owner, and the holder's command as the
    // tasks showed it (d's, as all four were created by this process).
    for row in answer["tasks"].as_array().unwrap() {
        assert_eq!(row["uid"], our_uid(), "{row}");
        assert_eq!(row["uid"], d["owner"], "{row}");
        assert_eq!(row["command"], d["holder"]["command"], "{row}");
        assert_eq!(
            row["parent_command"], d["holder"]["parent_command"],
            "{row}"
        );
    }

    // The holds are durable: a crash loses none, and the same question
    // gets the same figures.
    daemon.kill9();
    let daemon = Daemon::start(&dirs, &[]);
    let again = usage(&daemon, since, until);
    check_usage("after kill -9", &again, &want, slack);
    for (name, row) in rows(&answer) {
        let other = &rows(&again)[&name];
        for field in ["held_seconds", "sole_seconds"] {
            assert_close(
                &format!("{name}.{field} before and after kill -9"),
                float(&other[field]),
                float(&row[field]),
                0.002,
            );
        }
    }
    assert_close(
        "held_seconds before and after kill -9",
        float(&again["held_seconds"]),
        float(&answer["held_seconds"]),
        0.002,
    );

    // A window that cuts holds counts only their part within it:
    // nominally a 1 (from t0+1 to its deletion at t0+2), b 2 of which 1
    // alone, the union 2, and no row for c or d.
    let (since, until) = (t0 + 1.0, t0 + 3.0);
    let want = expected(&holds, since, until);
    eprintln!("expected in the cut window (nominally union 2, a 1/0, b 2/1): {want:?}");
    assert_eq!(
        want.tasks.keys().copied().collect::<Vec<_>>(),
        ["a", "b"],
        "the schedule slipped: {want:?}"
    );
    let cut = usage(&daemon, since, until);
    check_usage("cut window", &cut, &want, slack);
    assert_close("cut since", parse_time(&cut["since"]), since, 0.002);
    assert_close("cut until", parse_time(&cut["until"]), until, 0.002);
}

#[test]
fn a_bad_since_is_a_400_with_a_sentence() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &[]);
    let now = now_secs();
    let bad_since = [
        "since=yesterday".to_owned(),
        "since=12x".to_owned(),
        "since=2024-13-45T99:00:00Z".to_owned(),
        // since after until, and since equal to until.
        format!(
            "since={}&until={}",
            rfc3339(now - 60.0),
            rfc3339(now - 120.0)
        ),
        format!(
            "since={}&until={}",
            rfc3339(now - 60.0),
            rfc3339(now - 60.0)
        ),
        "since=1m&until=2m".to_owned(),
    ];
    for query in &bad_since {
        let (status, answer) = daemon.call("GET", &format!("/v1/usage?{query}"), None);
        assert_eq!(status, 400, "{query}: {answer}");
        let message = answer["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{query}: no error sentence: {answer}"));
        assert!(message.contains("since"), "{query}: {message}");
    }
    for query in ["since=1h&until=later", "until=2024-02-30T00:00:00Z"] {
        let (status, answer) = daemon.call("GET", &format!("/v1/usage?{query}"), None);
        assert_eq!(status, 400, "{query}: {answer}");
        let message = answer["error"].as_str().unwrap_or_default();
        assert!(message.contains("until"), "{query}: {answer}");
    }

    // The good forms: no since (the last 24 hours), a duration back from
    // now, and an RFC 3339 time.
    let (status, answer) = daemon.call("GET", "/v1/usage", None);
    assert_eq!(status, 200, "{answer}");
    let (since, until) = (parse_time(&answer["since"]), parse_time(&answer["until"]));
    assert_close("the default window", until - since, 86_400.0, 1.0);
    assert_close("until defaults to now", until, now_secs(), 5.0);
    assert_eq!(float(&answer["held_seconds"]), 0.0, "{answer}");
    assert_eq!(answer["tasks"], serde_json::json!([]), "{answer}");
    for query in [
        "since=30s",
        "since=90m",
        &format!("since={}", rfc3339(now - 10.0)),
    ] {
        let (status, answer) = daemon.call("GET", &format!("/v1/usage?{query}"), None);
        assert_eq!(status, 200, "{query}: {answer}");
    }
}

impl EventStream {
    /// The first event of `kind` for `task`, skipping others.
    fn find(&mut self, kind: &str, task: &str) -> Value {
        loop {
            let event = self.event();
            if event["event"] == kind && event["task"] == task {
                return event;
            }
        }
    }
}

/// Checks a refusal of a tripped name: 409 and a sentence that says how
/// long it was held and how to re-arm it.
fn assert_tripped_refusal(what: &str, status: u16, answer: &Value) {
    assert_eq!(status, 409, "{what}: {answer}");
    let message = answer["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no error sentence: {answer}"));
    assert!(
        message.contains("held for") && message.contains("re-arm"),
        "{what}: {message}"
    );
}

#[test]
fn max_held_for_releases_a_refresh_loop_and_delete_rearms_it() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &["--max-held-for", "3s"]);
    let refresh = r#"{"expire":"2s"}"#;

    // A loop that refreshes every 0.5 s would hold the machine forever;
    // the cap releases it 3 s after it started.
    let start = Instant::now();
    let first = timed(&daemon, "PUT", "/v1/tasks/loop", Some(refresh));
    assert!(
        matches!(first.status, 200 | 201),
        "{}: {}",
        first.status,
        first.body
    );
    let started_at = parse_time(&first.body["started_at"]);
    let cap = started_at + 3.0;
    let mut refusal = None;
    for round in 1..=16u32 {
        sleep_until(start, Duration::from_millis(500) * round);
        let put = timed(&daemon, "PUT", "/v1/tasks/loop", Some(refresh));
        if matches!(put.status, 200 | 201) {
            // A refresh keeps started_at, and the cap shows in expires_at.
            assert_eq!(put.body["started_at"], first.body["started_at"]);
            let expires_at = parse_time(&put.body["expires_at"]);
            assert!(
                expires_at <= cap + 0.001,
                "expires_at is capped at started_at + 3s: {}",
                put.body
            );
            continue;
        }
        refusal = Some(put);
        break;
    }
    let refusal = refusal.expect("the refresh loop was never refused");
    assert_tripped_refusal("the first refusal", refusal.status, &refusal.body);
    let message = refusal.body["error"].as_str().unwrap();
    assert!(
        message.contains("loop") && message.contains("3s"),
        "names the task and the limit: {message}"
    );
    let refused_after = refusal.before - first.before;
    assert!(
        (2.5..=5.0).contains(&refused_after),
        "first refused {refused_after:.3}s after the first PUT"
    );

    // Released, and tripped until deleted.
    assert_eq!(daemon.status("GET", "/v1/tasks/loop", None), 404);
    let (status, answer) = daemon.call("PUT", "/v1/tasks/loop", Some(refresh));
    assert_tripped_refusal("PUT again", status, &answer);
    let (status, answer) = daemon.call(
        "POST",
        "/v1/tasks",
        Some(r#"{"name":"loop","expire":"1h"}"#),
    );
    assert_tripped_refusal("POST", status, &answer);
    assert_eq!(daemon.status("GET", "/v1/tasks/loop", None), 404);

    let (_, status) = daemon.call("GET", "/v1/status", None);
    assert_eq!(status["tripped_count"], 1, "{status}");
    let tripped = status["tripped"].as_array().expect("a tripped list");
    assert_eq!(tripped.len(), 1, "{status}");
    let entry = &tripped[0];
    assert_eq!(entry["task"], "loop", "{status}");
    assert_eq!(entry["uid"], our_uid(), "{status}");
    assert_eq!(float(&entry["limit_seconds"]), 3.0, "{status}");
    assert_close(
        "tripped held_seconds",
        float(&entry["held_seconds"]),
        3.0,
        TOLERANCE,
    );
    assert_close(
        "tripped_at",
        parse_time(&entry["tripped_at"]),
        cap,
        TOLERANCE + 0.5,
    );

    let mut events = EventStream::open(&daemon, "?since=0");
    let capped = events.find("capped", "loop");
    assert_eq!(capped["limit_ns"].as_u64(), Some(3_000_000_000), "{capped}");
    assert_eq!(capped["started_at"], first.body["started_at"], "{capped}");
    assert_close(
        "capped ended_at",
        parse_time(&capped["ended_at"]),
        cap,
        0.001,
    );
    assert_eq!(capped["uid"], our_uid(), "{capped}");

    let page = metrics(&daemon);
    assert_eq!(
        sample(
            &page,
            r#"sprite_tasks_releases_total{cause="max_held_for"}"#
        ),
        Some(1.0),
        "{page}"
    );

    // DELETE re-arms the name; then it can be held again, from scratch.
    assert_eq!(daemon.status("DELETE", "/v1/tasks/loop", None), 204);
    let rearmed = events.find("rearmed", "loop");
    assert_eq!(rearmed["task"], "loop");
    let (_, status) = daemon.call("GET", "/v1/status", None);
    assert_eq!(status["tripped_count"], 0, "{status}");
    assert_eq!(status["tripped"], serde_json::json!([]), "{status}");
    let (code, again) = daemon.call("PUT", "/v1/tasks/loop", Some(refresh));
    assert!(matches!(code, 200 | 201), "{code}: {again}");
    let (code, live) = daemon.call("GET", "/v1/tasks/loop", None);
    assert_eq!(code, 200, "{live}");
    let restarted = parse_time(&live["started_at"]);
    assert!(restarted > started_at + 2.5, "a new hold: {live}");
    assert!(
        parse_time(&live["expires_at"]) <= restarted + 3.0 + 0.001,
        "{live}"
    );
}

#[test]
fn a_per_task_max_held_for_lowers_the_limit() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &[]);
    let (status, created) = daemon.call(
        "PUT",
        "/v1/tasks/short",
        Some(r#"{"expire":"1h","max_held_for":"1s"}"#),
    );
    assert!(matches!(status, 200 | 201), "{status}: {created}");
    // Without the flag nor the field, an hour is an hour.
    let (status, long) = daemon.call("PUT", "/v1/tasks/long", Some(r#"{"expire":"1h"}"#));
    assert!(matches!(status, 200 | 201), "{status}: {long}");
    assert_close(
        "an uncapped task",
        parse_time(&long["expires_at"]) - parse_time(&long["started_at"]),
        3600.0,
        0.001,
    );

    let (status, task) = daemon.call("GET", "/v1/tasks/short", None);
    assert_eq!(status, 200, "{task}");
    let (started, expires) = (
        parse_time(&task["started_at"]),
        parse_time(&task["expires_at"]),
    );
    assert!(
        expires <= started + 1.0 + 0.001,
        "expires_at no later than started_at + 1s: {task}"
    );
    assert_eq!(task["expires_at"], created["expires_at"]);

    let gone = eventually(
        || daemon.status("GET", "/v1/tasks/short", None),
        |status| *status == 404,
    );
    assert_eq!(gone, 404, "released after its own limit");
    let (status, answer) = daemon.call("PUT", "/v1/tasks/short", Some(r#"{"expire":"1h"}"#));
    assert_tripped_refusal("PUT after the limit", status, &answer);
    let (_, status) = daemon.call("GET", "/v1/status", None);
    let tripped = status["tripped"].as_array().expect("a tripped list");
    assert_eq!(tripped.len(), 1, "{status}");
    assert_eq!(tripped[0]["task"], "short", "{status}");
    assert_eq!(float(&tripped[0]["limit_seconds"]), 1.0, "{status}");
    // The other task is untouched.
    assert_eq!(daemon.status("GET", "/v1/tasks/long", None), 200);
}

fn sprite_env(daemon: &Daemon) -> Command {
    let binary = env!("CARGO_BIN_EXE_sprite-env");
    let mut command = Command::new(binary);
    command
        .env("SPRITE_API_SOCKET", &daemon.socket)
        .env("SPRITE_ENV", binary)
        .stdin(Stdio::null());
    command
}

fn run(command: &mut Command) -> Output {
    let output = command.output().expect("run sprite-env");
    assert!(
        output.status.success(),
        "{:?}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[test]
fn report_text_and_json_agree() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &[]);
    let start = Instant::now();
    let create_alpha = timed(
        &daemon,
        "POST",
        "/v1/tasks",
        Some(r#"{"name":"alpha-build","expire":"1h"}"#),
    );
    assert_eq!(create_alpha.status, 201, "{}", create_alpha.body);
    assert_eq!(
        daemon.status(
            "POST",
            "/v1/tasks",
            Some(r#"{"name":"beta-tests","expire":"1h"}"#)
        ),
        201
    );
    sleep_until(start, Duration::from_millis(300));
    assert_eq!(daemon.status("DELETE", "/v1/tasks/beta-tests", None), 204);
    sleep_until(start, Duration::from_millis(900));
    let delete_alpha = timed(&daemon, "DELETE", "/v1/tasks/alpha-build", None);
    assert_eq!(delete_alpha.status, 204);

    let json = run(sprite_env(&daemon).args(["tasks", "report", "--since", "1m", "--json"]));
    let document: Value = serde_json::from_slice(&json.stdout).unwrap_or_else(|e| {
        panic!(
            "--json prints JSON ({e}): {}",
            String::from_utf8_lossy(&json.stdout)
        )
    });
    let names: Vec<&str> = document["tasks"]
        .as_array()
        .unwrap_or_else(|| panic!("the API document: {document}"))
        .iter()
        .map(|row| row["name"].as_str().unwrap())
        .collect();
    // alpha was held longer, so it comes first.
    assert_eq!(names, ["alpha-build", "beta-tests"], "{document}");
    assert_close(
        "the union is alpha's hold",
        float(&document["held_seconds"]),
        delete_alpha.mid() - create_alpha.mid(),
        TOLERANCE + create_alpha.half() + delete_alpha.half(),
    );

    let text = run(sprite_env(&daemon).args(["tasks", "report", "--since", "1m"]));
    let text = String::from_utf8(text.stdout).expect("UTF-8 text");
    let positions: Vec<usize> = names
        .iter()
        .map(|name| {
            text.find(name)
                .unwrap_or_else(|| panic!("{name} is not in the report:\n{text}"))
        })
        .collect();
    assert!(
        positions.windows(2).all(|pair| pair[0] < pair[1]),
        "the text lists the tasks in the JSON's order {names:?}:\n{text}"
    );
    assert!(
        text.lines().any(|line| line.to_lowercase().contains("held")
            && !names.iter().any(|name| line.contains(name))),
        "a total line says how long the machine was held:\n{text}"
    );
}

/// `--usage-max-holds`: a worker taking a hold per job leaves the latest
/// holds in the history (the limit, or an eighth more until the next
/// drop), before and after a kill -9, and the report says where the kept
/// history begins; a limit of 0 is refused with a sentence.
#[test]
fn the_usage_history_keeps_its_latest_holds_across_a_kill_9() {
    let dirs = Dirs::new();
    let args = ["--usage-max-holds", "8"];
    let daemon = Daemon::start(&dirs, &args);
    let start = now_secs();
    let jobs = 20;
    for job in 0..jobs {
        let path = format!("/v1/tasks/job-{job:02}");
        let (status, answer) = daemon.call("PUT", &path, Some(r#"{"expire":"1m"}"#));
        assert_eq!(status, 200, "{path}: {answer}");
        let (status, answer) = daemon.call("DELETE", &path, None);
        assert!((200..300).contains(&status), "{path}: {status} {answer}");
    }
    // The latest `kept` jobs, and where the history begins.
    let check = |daemon: &Daemon, when: &str, kept: std::ops::RangeInclusive<usize>| {
        let answer = usage(daemon, start - 60.0, now_secs() + 1.0);
        // The report orders its rows by time held: by name here.
        let mut names: Vec<String> = answer["tasks"]
            .as_array()
            .unwrap_or_else(|| panic!("{when}: {answer}"))
            .iter()
            .filter_map(|row| row["name"].as_str().map(str::to_owned))
            .collect();
        names.sort();
        assert!(kept.contains(&names.len()), "{when}: {answer}");
        let latest: Vec<String> = (jobs - names.len()..jobs)
            .map(|job| format!("job-{job:02}"))
            .collect();
        assert_eq!(names, latest, "{when}: {answer}");
        // The kept history begins after the start of this test, not 35
        // days back: the holds before it were dropped.
        let from = parse_time(&answer["history_from"]);
        assert!(from > start, "{when}: history_from {from} before {start}");
        // The metrics page counts what the history keeps.
        let page = metrics(daemon);
        assert_eq!(
            sample(&page, "sprite_tasks_usage_holds"),
            Some(names.len() as f64),
            "{when}: {page}"
        );
    };
    check(&daemon, "live", 8..=9);
    daemon.kill9();
    // Whether or not a checkpoint stored the floor before the kill, a
    // restart keeps the limit itself.
    let daemon = Daemon::start(&dirs, &args);
    check(&daemon, "after kill -9", 8..=8);
    // And again once a checkpoint has run (a clean stop checkpoints).
    let (status, _) = daemon.terminate();
    assert!(status.success());
    let daemon = Daemon::start(&dirs, &args);
    check(&daemon, "after a clean stop", 8..=8);
    drop(daemon);
    let out = Command::new(common::daemon_binary())
        .arg("--socket")
        .arg(dirs.socket())
        .args(["--usage-max-holds", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let message = String::from_utf8_lossy(&out.stderr);
    assert!(
        message.contains("is not a number of holds from 1 to 10000000"),
        "{message}"
    );
}
