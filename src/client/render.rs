//! What `sprite-env tasks` prints for people: the task table, the status
//! line, one line per event, durations and times to the second.
//!
//! Pure: `now` is an argument. Depends on [`crate::api`]'s wire types and
//! [`crate::time`].

use std::time::Duration;

use serde_json::Value;

use super::http::Status;
use crate::api::{HolderView, TaskView};
use crate::time::Timestamp;

/// A duration as a person reads it, to the second: `1h 5m`, `4m 59s`,
/// `59s`, `<1s` (a positive remainder under a second), `0s`.
pub fn format_span(span: Duration) -> String {
    let seconds = span.as_secs();
    match seconds {
        0 if span.is_zero() => "0s".to_owned(),
        0 => "<1s".to_owned(),
        1..60 => format!("{seconds}s"),
        60..3600 => format!("{}m {}s", seconds / 60, seconds % 60),
        _ => format!("{}h {}m", seconds / 3600, seconds % 3600 / 60),
    }
}

/// Seconds from the API (a float) as [`format_span`] prints them; a
/// negative or absurd value as `?`.
pub fn format_seconds(seconds: f64) -> String {
    Duration::try_from_secs_f64(seconds).map_or_else(|_| "?".to_owned(), format_span)
}

/// An API timestamp shortened to the second (`2026-06-02T17:11:14Z`); text
/// that is not one is shown as it is.
pub fn format_time(rfc3339: &str) -> String {
    match Timestamp::parse_rfc3339(rfc3339) {
        Some(at) => humantime::format_rfc3339_seconds(at.to_system_time()).to_string(),
        None => rfc3339.to_owned(),
    }
}

/// Time from `now` until an API timestamp, as `format_span` prints it, or
/// `expired` when it is not in the future.
pub fn format_until(rfc3339: &str, now: Timestamp) -> String {
    match Timestamp::parse_rfc3339(rfc3339) {
        Some(at) if at > now => format_span(at.saturating_since(now)),
        Some(_) => "expired".to_owned(),
        None => "?".to_owned(),
    }
}

/// Most characters of a parent command line shown in a table or status
/// line; the JSON has it whole.
pub const MAX_SHOWN_PARENT: usize = 40;

/// Who holds a task, in a few words: `curl[4242] from bash ./heartbeat.sh`
/// (the parent's command line shortened), `-` when unknown.
pub fn describe_holder(holder: Option<&HolderView>) -> String {
    let Some(holder) = holder else {
        return "-".to_owned();
    };
    let mut out = holder.command.clone().unwrap_or_else(|| "?".to_owned());
    if let Some(pid) = holder.pid {
        out.push_str(&format!("[{pid}]"));
    }
    if let Some(parent) = &holder.parent_command {
        out.push_str(" from ");
        out.push_str(&shorten(parent, MAX_SHOWN_PARENT));
    }
    out
}

/// `text` cut to at most `max` characters, its last one `…` when cut.
pub fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() > max {
        let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    } else {
        text.to_owned()
    }
}

/// Gap between two table columns.
const COLUMN_GAP: usize = 2;

/// A table for people: a header line, then one line per row, every column
/// but the last padded to its widest cell (header included) plus
/// [`COLUMN_GAP`] spaces; the last column, often long free text, is not
/// padded. Widths count characters, not bytes.
pub fn render_table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(|title| title.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut write_line = |cells: [&str; N]| {
        for (column, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if column + 1 < N {
                let pad = widths[column] - cell.chars().count() + COLUMN_GAP;
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    };
    write_line(header);
    for row in rows {
        write_line(row.each_ref().map(String::as_str));
    }
    out
}

/// The task table of `sprite-env tasks list`: name, started, expires in
/// (or when the bound process exits), owner uid (who besides root may
/// release it), holder, reason.
pub fn render_tasks(tasks: &[TaskView], now: Timestamp) -> String {
    if tasks.is_empty() {
        return "no tasks: nothing holds the machine awake\n".to_owned();
    }
    let rows: Vec<[String; 6]> = tasks
        .iter()
        .map(|task| {
            let mut expires = format_until(&task.expires_at, now);
            if let Some(pid) = task.pid {
                expires.push_str(&format!(" or when {pid} exits"));
            }
            [
                task.name.clone(),
                format_time(&task.started_at),
                expires,
                task.owner
                    .map_or_else(|| "-".to_owned(), |uid| uid.to_string()),
                describe_holder(task.holder.as_ref()),
                task.reason.clone().unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    render_table(
        ["NAME", "STARTED", "EXPIRES IN", "OWNER", "HOLDER", "REASON"],
        &rows,
    )
}

/// What `sprite-env tasks status` prints: one line saying held (by which
/// tasks, until when) or idle (since when); while held, then one indented
/// line per task naming its holder, how long it has been held and its reason
/// (at most [`crate::api::MAX_STATUS_HOLDERS`], then how many more); then,
/// held or idle, one line per name tripped by its held-for limit.
pub fn render_status(status: &Status, tasks: &[TaskView], now: Timestamp) -> String {
    let mut out = render_held_or_idle(status, tasks, now);
    for tripped in &status.tripped {
        out.push_str(&format!(
            "\n  tripped: {} (held {}, limit {}; delete it to re-arm)",
            tripped.task,
            format_seconds(tripped.held_seconds),
            format_seconds(tripped.limit_seconds)
        ));
    }
    let unlisted = status
        .tripped_count
        .saturating_sub(status.tripped.len() as u64);
    if unlisted > 0 {
        out.push_str(&format!("\n  … and {unlisted} more tripped"));
    }
    out
}

/// [`render_status`] without the tripped names.
fn render_held_or_idle(status: &Status, tasks: &[TaskView], now: Timestamp) -> String {
    if status.held {
        let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
        let who = match names.len() {
            0 => format!("{} task(s)", status.tasks),
            _ => names.join(", "),
        };
        let mut out = match &status.held_until {
            Some(until) => format!(
                "held by {who} until {} (in {})",
                format_time(until),
                format_until(until, now)
            ),
            None => format!("held by {who}"),
        };
        let shown = crate::api::MAX_STATUS_HOLDERS;
        for task in tasks.iter().take(shown) {
            let held = match Timestamp::parse_rfc3339(&task.started_at) {
                Some(started) => format_span(now.saturating_since(started)),
                None => "?".to_owned(),
            };
            out.push_str(&format!("\n  {}: ", task.name));
            if task.holder.is_some() {
                out.push_str(&describe_holder(task.holder.as_ref()));
                out.push_str(", ");
            }
            out.push_str(&format!("held {held}"));
            if let Some(pid) = task.pid {
                out.push_str(&format!(", until {pid} exits"));
            }
            if let Some(reason) = &task.reason {
                out.push_str(&format!(": {reason}"));
            }
        }
        if tasks.len() > shown {
            out.push_str(&format!("\n  … and {} more", tasks.len() - shown));
        }
        out
    } else {
        match &status.idle_since {
            Some(since) => {
                let ago = Timestamp::parse_rfc3339(since)
                    .map(|at| format!(" ({} ago)", format_span(now.saturating_since(at))))
                    .unwrap_or_default();
                format!(
                    "idle since {}{ago}: nothing holds the machine awake",
                    format_time(since)
                )
            }
            None => "idle: nothing holds the machine awake".to_owned(),
        }
    }
}

/// One event line of `sprite-env tasks watch`, as a person reads it; a line
/// that is not a JSON object comes back as it is.
pub fn render_event(line: &[u8]) -> String {
    let Ok(Value::Object(event)) = serde_json::from_slice::<Value>(line) else {
        return String::from_utf8_lossy(line).into_owned();
    };
    let text = |field: &str| event.get(field).and_then(Value::as_str);
    let kind = text("event").unwrap_or("?");
    if let Some(error) = text("error") {
        return format!("{kind}: {error}");
    }
    let mut out = String::new();
    if let Some(at) = text("at") {
        out.push_str(&format_time(at));
        out.push(' ');
    }
    if let Some(seq) = event.get("seq").and_then(Value::as_u64) {
        out.push_str(&format!("#{seq} "));
    }
    out.push_str(kind);
    match (kind, text("task")) {
        (_, Some(task)) => {
            out.push(' ');
            out.push_str(task);
        }
        ("held", None) => out.push_str(": the machine is kept awake"),
        ("idle", None) => out.push_str(": nothing holds the machine awake"),
        ("clock_stepped", None) => {
            if let Some(step_ns) = event.get("step_ns").and_then(Value::as_i64) {
                let span = format_span(std::time::Duration::from_nanos(step_ns.unsigned_abs()));
                if step_ns < 0 {
                    out.push_str(&format!(
                        ": the wall clock went back {span}; every hold moved with it"
                    ));
                } else {
                    out.push_str(&format!(
                        ": the wall clock jumped ahead {span}; what fell due expires"
                    ));
                }
            }
        }
        _ => {}
    }
    if let Some(pid) = event.get("pid").and_then(Value::as_u64) {
        out.push_str(&format!(": process {pid} exited"));
    }
    if let Some(expires_at) = text("expires_at") {
        out.push_str(&format!(" until {}", format_time(expires_at)));
        let lasts = text("at")
            .and_then(Timestamp::parse_rfc3339)
            .zip(Timestamp::parse_rfc3339(expires_at));
        if let Some((at, expires)) = lasts {
            out.push_str(&format!(" ({})", format_span(expires.saturating_since(at))));
        }
    }
    if let Some(reason) = text("reason") {
        out.push_str(&format!(": {reason}"));
    }
    out
}

/// Whether a stream line is the daemon's last word to a consumer that fell
/// behind (`{"event":"lagged",...}`).
pub fn is_lagged(line: &[u8]) -> bool {
    serde_json::from_slice::<Value>(line)
        .ok()
        .and_then(|v| {
            v.get("event")
                .and_then(Value::as_str)
                .map(|e| e == "lagged")
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::http::Tripped;

    fn at(text: &str) -> Timestamp {
        Timestamp::parse_rfc3339(text).unwrap()
    }

    #[test]
    fn spans_and_times_for_people() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(400), "<1s"),
            (Duration::from_millis(1999), "1s"),
            (Duration::from_secs(59), "59s"),
            (Duration::from_secs(60), "1m 0s"),
            (Duration::from_secs(299), "4m 59s"),
            (Duration::from_secs(3600), "1h 0m"),
            (Duration::from_secs(5 * 86400 + 3700), "121h 1m"),
        ];
        for (span, expected) in cases {
            assert_eq!(format_span(span), expected, "{span:?}");
        }
        assert_eq!(
            format_time("2026-06-02T17:11:14.555839485Z"),
            "2026-06-02T17:11:14Z"
        );
        assert_eq!(format_time("yesterday"), "yesterday");
        let now = at("2026-06-02T17:00:00Z");
        assert_eq!(format_until("2026-06-02T17:04:59.9Z", now), "4m 59s");
        assert_eq!(format_until("2026-06-02T16:59:59Z", now), "expired");
        assert_eq!(format_until("garbage", now), "?");
    }

    fn task(name: &str, started: &str, expires: &str) -> TaskView {
        TaskView {
            name: name.into(),
            started_at: started.into(),
            expires_at: expires.into(),
            reason: None,
            pid: None,
            holder: None,
            owner: None,
        }
    }

    #[test]
    fn the_task_table() {
        let now = at("2026-06-02T17:00:00Z");
        assert_eq!(
            render_tasks(&[], now),
            "no tasks: nothing holds the machine awake\n"
        );
        let table = render_tasks(
            &[
                task("agent", "2026-06-02T16:00:00.5Z", "2026-06-02T17:05:00.5Z"),
                task(
                    "a-much-longer-name",
                    "2026-06-02T16:59:00Z",
                    "2026-06-02T17:00:30Z",
                ),
            ],
            now,
        );
        assert_eq!(
            table,
            "NAME                STARTED               EXPIRES IN  OWNER  HOLDER  REASON\n\
             agent               2026-06-02T16:00:00Z  5m 0s       -      -       -\n\
             a-much-longer-name  2026-06-02T16:59:00Z  30s         -      -       -\n"
        );
        let held = TaskView {
            reason: Some("nightly build".into()),
            pid: Some(4300),
            holder: Some(HolderView {
                pid: Some(4242),
                uid: Some(0),
                command: Some("curl".into()),
                parent_pid: Some(4200),
                parent_command: Some(format!("bash ./heartbeat.sh {}", "x".repeat(40))),
            }),
            owner: Some(1000),
            ..task("agent", "2026-06-02T16:00:00Z", "2026-06-02T17:05:00Z")
        };
        assert_eq!(
            render_tasks(&[held], now),
            "NAME   STARTED               EXPIRES IN                OWNER  HOLDER                                                    REASON\n\
             agent  2026-06-02T16:00:00Z  5m 0s or when 4300 exits  1000   curl[4242] from bash ./heartbeat.sh xxxxxxxxxxxxxxxxxxx…  nightly build\n"
        );
    }

    #[test]
    fn the_status_line() {
        let now = at("2026-06-02T17:00:00Z");
        let held = Status {
            held: true,
            tasks: 2,
            held_until: Some("2026-06-02T18:00:00.1Z".into()),
            idle_since: None,
            tripped: Vec::new(),
            tripped_count: 0,
        };
        let tasks = [
            task("a", "2026-06-02T16:00:00Z", "2026-06-02T18:00:00.1Z"),
            task("b", "2026-06-02T16:59:58.5Z", "2026-06-02T17:30:00Z"),
        ];
        assert_eq!(
            render_status(&held, &tasks, now),
            "held by a, b until 2026-06-02T18:00:00Z (in 1h 0m)\n  a: held 1h 0m\n  b: held 1s"
        );
        let described = [TaskView {
            reason: Some("tests".into()),
            pid: Some(7),
            holder: Some(HolderView {
                command: Some("sprite-env".into()),
                pid: Some(6),
                ..HolderView::default()
            }),
            ..task("a", "2026-06-02T16:00:00Z", "2026-06-02T18:00:00.1Z")
        }];
        assert_eq!(
            render_status(&held, &described, now),
            "held by a until 2026-06-02T18:00:00Z (in 1h 0m)\n  a: sprite-env[6], held 1h 0m, until 7 exits: tests"
        );
        assert_eq!(
            render_status(&held, &[], now),
            "held by 2 task(s) until 2026-06-02T18:00:00Z (in 1h 0m)"
        );
        let idle = Status {
            held: false,
            tasks: 0,
            held_until: None,
            idle_since: Some("2026-06-02T16:57:00Z".into()),
            tripped: Vec::new(),
            tripped_count: 0,
        };
        assert_eq!(
            render_status(&idle, &[], now),
            "idle since 2026-06-02T16:57:00Z (3m 0s ago): nothing holds the machine awake"
        );
        let never = Status {
            idle_since: None,
            ..idle
        };
        assert_eq!(
            render_status(&never, &[], now),
            "idle: nothing holds the machine awake"
        );
    }

    #[test]
    fn tripped_names_in_the_status() {
        let now = at("2026-06-02T17:00:00Z");
        let tripped = |task: &str, held_seconds: f64, limit_seconds: f64| Tripped {
            task: task.into(),
            uid: Some(1000),
            tripped_at: "2026-06-02T16:59:00Z".into(),
            held_seconds,
            limit_seconds,
        };
        let idle = Status {
            held: false,
            tasks: 0,
            held_until: None,
            idle_since: Some("2026-06-02T16:59:00Z".into()),
            tripped: vec![
                tripped("loop", 3.0, 3.0),
                tripped("night", 28800.4, 28800.0),
            ],
            tripped_count: 2,
        };
        assert_eq!(
            render_status(&idle, &[], now),
            "idle since 2026-06-02T16:59:00Z (1m 0s ago): nothing holds the machine awake\n  \
             tripped: loop (held 3s, limit 3s; delete it to re-arm)\n  \
             tripped: night (held 8h 0m, limit 8h 0m; delete it to re-arm)"
        );
        let held = Status {
            held: true,
            tasks: 1,
            held_until: Some("2026-06-02T17:00:10Z".into()),
            idle_since: None,
            tripped: vec![tripped("loop", 3.0, 3.0)],
            tripped_count: 20,
        };
        let tasks = [task("a", "2026-06-02T16:59:50Z", "2026-06-02T17:00:10Z")];
        assert_eq!(
            render_status(&held, &tasks, now),
            "held by a until 2026-06-02T17:00:10Z (in 10s)\n  a: held 10s\n  \
             tripped: loop (held 3s, limit 3s; delete it to re-arm)\n  \
             … and 19 more tripped"
        );
    }

    #[test]
    fn event_lines_for_people() {
        let cases = [
            (
                r#"{"seq":12,"at":"2026-06-02T17:00:00.1Z","event":"created","task":"agent","expires_at":"2026-06-02T17:05:00.1Z"}"#,
                "2026-06-02T17:00:00Z #12 created agent until 2026-06-02T17:05:00Z (5m 0s)",
            ),
            (
                r#"{"seq":13,"at":"2026-06-02T17:01:00Z","event":"expired","task":"agent"}"#,
                "2026-06-02T17:01:00Z #13 expired agent",
            ),
            (
                r#"{"seq":13,"at":"2026-06-02T17:01:00Z","event":"released","task":"agent","pid":4242}"#,
                "2026-06-02T17:01:00Z #13 released agent: process 4242 exited",
            ),
            (
                r#"{"seq":12,"at":"2026-06-02T17:00:00.1Z","event":"refreshed","task":"agent","expires_at":"2026-06-02T17:05:00.1Z","reason":"tests"}"#,
                "2026-06-02T17:00:00Z #12 refreshed agent until 2026-06-02T17:05:00Z (5m 0s): tests",
            ),
            (
                r#"{"seq":14,"at":"2026-06-02T17:01:00Z","event":"idle"}"#,
                "2026-06-02T17:01:00Z #14 idle: nothing holds the machine awake",
            ),
            (
                r#"{"seq":2,"at":"2026-06-02T17:01:00Z","event":"held"}"#,
                "2026-06-02T17:01:00Z #2 held: the machine is kept awake",
            ),
            (
                r#"{"seq":15,"at":"2026-06-02T17:01:00Z","event":"clock_stepped","step_ns":-10800000000000}"#,
                "2026-06-02T17:01:00Z #15 clock_stepped: the wall clock went back 3h 0m; every hold moved with it",
            ),
            (
                r#"{"seq":16,"at":"2026-06-02T17:01:00Z","event":"clock_stepped","step_ns":120000000000}"#,
                "2026-06-02T17:01:00Z #16 clock_stepped: the wall clock jumped ahead 2m 0s; what fell due expires",
            ),
            (
                r#"{"event":"lagged","error":"too slow; reconnect"}"#,
                "lagged: too slow; reconnect",
            ),
            (r#"{"event":"gap","error":"lost some"}"#, "gap: lost some"),
            ("not json", "not json"),
            ("[1]", "[1]"),
        ];
        for (line, expected) in cases {
            assert_eq!(render_event(line.as_bytes()), expected);
        }
        assert!(is_lagged(br#"{"event":"lagged","error":"x"}"#));
        assert!(!is_lagged(br#"{"event":"idle","seq":1}"#));
        assert!(!is_lagged(b"lagged"));
    }
}
