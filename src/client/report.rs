//! The usage report of `sprite-env tasks report`: the document of
//! `GET /v1/usage` ([`Usage`]) and the text people read from it, a window,
//! a table of what held the machine, the total and a timeline.
//!
//! Pure: `now` and the terminal's width are arguments. Depends on
//! [`super::render`] (the table writer and the formats of times and spans)
//! and [`crate::time`].

use std::time::Duration;

use super::render::{format_seconds, format_span, format_time, render_table, shorten};
use crate::time::Timestamp;

/// The body of `GET /v1/usage`, as the daemon writes it.
pub use crate::usage::{Report as Usage, TaskUsage as UsageTask};

/// The timeline's width (buckets asked of the daemon) when the terminal's
/// is unknown: fits an 80-column terminal with a label of a dozen
/// characters.
pub const DEFAULT_TIMELINE_WIDTH: usize = 60;

/// The narrowest timeline drawn to fit a terminal: narrower, a column
/// covers too much of the window to tell anything apart.
pub const MIN_TIMELINE_WIDTH: usize = 20;

/// The widest timeline: the daemon's limit on `buckets`.
pub const MAX_TIMELINE_WIDTH: usize = 1000;

/// Most characters of a task's name in front of its timeline row; longer
/// names are cut (the table above has them whole).
pub const MAX_TIMELINE_LABEL: usize = 20;

/// Between a timeline row's label and its bar.
const LABEL_GAP: &str = "  ";

/// How many buckets to ask for so that the timeline fits a terminal
/// `columns` wide (or [`DEFAULT_TIMELINE_WIDTH`] when unknown): the widest
/// label, the gap and the bar's two borders, one column spare so the line
/// never wraps.
pub fn timeline_width(columns: Option<usize>) -> usize {
    match columns {
        Some(columns) => columns
            .saturating_sub(MAX_TIMELINE_LABEL + LABEL_GAP.len() + 2 + 1)
            .clamp(MIN_TIMELINE_WIDTH, MAX_TIMELINE_WIDTH),
        None => DEFAULT_TIMELINE_WIDTH,
    }
}

/// What `sprite-env tasks report` prints: the window, a table (task,
/// owner, time held, time held alone, holds taken, when last held), the
/// total, and, when the report has buckets, a timeline with a row for the
/// machine and one per task in the table's order.
pub fn render_report(usage: &Usage, now: Timestamp) -> String {
    let since = Timestamp::parse_rfc3339(&usage.since);
    let until = Timestamp::parse_rfc3339(&usage.until);
    let window = since
        .zip(until)
        .map(|(since, until)| until.saturating_since(since));
    let window_text = window.map_or_else(|| "?".to_owned(), format_span);
    let (from, to) = (format_time(&usage.since), format_time(&usage.until));
    let mut out = if usage.tasks.is_empty() {
        format!("nothing held the machine between {from} and {to} ({window_text})\n")
    } else {
        format!("usage from {from} to {to} ({window_text})\n")
    };
    if let (Some(since), Some(history_from)) =
        (since, Timestamp::parse_rfc3339(&usage.history_from))
        && history_from > since
    {
        out.push_str(&format!(
            "history is kept from {}: holds that ended before it are not counted\n",
            format_time(&usage.history_from)
        ));
    }
    if usage.tasks.is_empty() {
        return out;
    }
    out.push_str(&usage_table(&usage.tasks, now));
    let held = seconds(usage.held_seconds);
    let share = window
        .filter(|window| !window.is_zero())
        .map(|window| {
            format!(
                " ({:.1}%)",
                100.0 * held.as_secs_f64() / window.as_secs_f64()
            )
        })
        .unwrap_or_default();
    out.push_str(&format!(
        "held {} of {window_text}{share}, {} task(s)\n",
        format_span(held),
        usage.tasks.len()
    ));
    if !usage.buckets.is_empty() {
        out.push('\n');
        out.push_str(&timeline(usage, window));
    }
    out
}

/// The table of [`render_report`].
fn usage_table(tasks: &[UsageTask], now: Timestamp) -> String {
    let rows: Vec<[String; 6]> = tasks
        .iter()
        .map(|task| {
            let last_held = if task.held_now {
                "now".to_owned()
            } else {
                match Timestamp::parse_rfc3339(&task.last_held_at) {
                    Some(at) => format!("{} ago", format_span(now.saturating_since(at))),
                    None => task.last_held_at.clone(),
                }
            };
            [
                task.name.clone(),
                task.uid
                    .map_or_else(|| "?".to_owned(), |uid| uid.to_string()),
                format_seconds(task.held_seconds),
                format_seconds(task.sole_seconds),
                task.holds.to_string(),
                last_held,
            ]
        })
        .collect();
    render_table(
        ["TASK", "OWNER", "HELD", "ALONE", "TAKEN", "LAST HELD"],
        &rows,
    )
}

/// The timeline of [`render_report`]: a ruler with the window's ends, a
/// `held` row for the machine, a row per task, and a legend that fits 80
/// columns. Every bar is
/// as wide as the machine's; a task's missing buckets are blank.
fn timeline(usage: &Usage, window: Option<Duration>) -> String {
    const MACHINE: &str = "held";
    let width = usage.buckets.len();
    let label_width = usage
        .tasks
        .iter()
        .map(|task| task.name.chars().count())
        .chain([MACHINE.len()])
        .max()
        .unwrap_or(0)
        .min(MAX_TIMELINE_LABEL);
    let indent = " ".repeat(label_width + LABEL_GAP.len());
    let mut out = format!(
        "{indent}{}\n",
        ruler(
            &format_time(&usage.since),
            &format_time(&usage.until),
            width + 2
        )
    );
    let mut row = |label: &str, buckets: &[f64]| {
        let label = shorten(label, label_width);
        let pad = label_width - label.chars().count();
        out.push_str(&label);
        out.extend(std::iter::repeat_n(' ', pad));
        out.push_str(LABEL_GAP);
        out.push('|');
        out.extend(
            buckets
                .iter()
                .map(|fraction| shade(*fraction))
                .chain(std::iter::repeat(' '))
                .take(width),
        );
        out.push_str("|\n");
    };
    row(MACHINE, &usage.buckets);
    for task in &usage.tasks {
        row(&task.name, &task.buckets);
    }
    let column = usage.bucket_seconds.map(seconds).or_else(|| {
        let buckets = u32::try_from(width).ok()?;
        window?.checked_div(buckets)
    });
    if let Some(column) = column {
        out.push_str(&format!("each column is {}: ", format_span(column)));
    }
    out.push_str("█ held throughout, ▓ over 2/3, ▒ over 1/3, ░ less\n");
    out
}

/// `start` at the left and `end` at the right of `width` columns; at least
/// one space between them when they do not fit.
fn ruler(start: &str, end: &str, width: usize) -> String {
    let used = start.chars().count() + end.chars().count();
    let gap = width.saturating_sub(used).max(1);
    format!("{start}{}{end}", " ".repeat(gap))
}

/// How much of a bucket was held, as one character: blank for nothing,
/// `░` under a third, `▒` under two thirds, `▓` under all of it, `█` for
/// all of it (within float rounding).
pub fn shade(fraction: f64) -> char {
    /// Float rounding in the daemon's division, not a gap worth showing.
    const ROUNDING: f64 = 1e-6;
    match fraction {
        f if f >= 1.0 - ROUNDING => '█',
        f if f >= 2.0 / 3.0 => '▓',
        f if f >= 1.0 / 3.0 => '▒',
        f if f > 0.0 => '░',
        _ => ' ',
    }
}

/// Seconds from the API as a duration; a negative or absurd value (not
/// what the API documents) as zero rather than a panic.
fn seconds(value: f64) -> Duration {
    Duration::try_from_secs_f64(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        Timestamp::parse_rfc3339(text).unwrap()
    }

    fn usage(json: &str) -> Usage {
        serde_json::from_str(json).unwrap()
    }

    const REPORT: &str = r#"{
        "since": "2026-06-02T16:00:00.25Z", "until": "2026-06-02T17:00:00.25Z",
        "history_from": "2026-05-01T00:00:00Z",
        "held_seconds": 2400.5, "held_now": true,
        "bucket_seconds": 600.0,
        "buckets": [0.0, 1.0, 0.5, 0.2, 0.9, 0.9999999],
        "tasks": [
            {"name": "build", "uid": 1000, "command": "make", "parent_command": "bash ./ci.sh",
             "held_seconds": 1800.0, "sole_seconds": 1200.0, "holds": 2,
             "first_held_at": "2026-06-02T16:10:00Z", "last_held_at": "2026-06-02T17:00:00.25Z",
             "held_now": true, "buckets": [0.0, 1.0, 0.5, 0.0, 0.5, 1.0]},
            {"name": "a-very-long-task-name-indeed", "uid": null, "command": null,
             "parent_command": null,
             "held_seconds": 1200.25, "sole_seconds": 600.0, "holds": 1,
             "first_held_at": "2026-06-02T16:30:00Z", "last_held_at": "2026-06-02T16:50:00Z",
             "held_now": false, "buckets": [0.0, 0.0, 0.0, 0.2, 0.7]}
        ]
    }"#;

    #[test]
    fn a_report_with_its_timeline() {
        let now = at("2026-06-02T17:00:00.5Z");
        let report = usage(REPORT);
        assert_eq!(report.tasks[1].uid, None);
        assert_eq!(report.tasks[1].command, None);
        assert_eq!(
            render_report(&report, now),
            "usage from 2026-06-02T16:00:00Z to 2026-06-02T17:00:00Z (1h 0m)\n\
             TASK                          OWNER  HELD    ALONE   TAKEN  LAST HELD\n\
             build                         1000   30m 0s  20m 0s  2      now\n\
             a-very-long-task-name-indeed  ?      20m 0s  10m 0s  1      10m 0s ago\n\
             held 40m 0s of 1h 0m (66.7%), 2 task(s)\n\
             \n\
             \x20                     2026-06-02T16:00:00Z 2026-06-02T17:00:00Z\n\
             held                  | █▒░▓█|\n\
             build                 | █▒ ▒█|\n\
             a-very-long-task-na…  |   ░▓ |\n\
             each column is 10m 0s: █ held throughout, ▓ over 2/3, ▒ over 1/3, ░ less\n"
        );
    }

    #[test]
    fn a_report_without_a_timeline_from_a_short_history() {
        let now = at("2026-06-02T17:00:00Z");
        let report = usage(
            r#"{"since": "2026-06-01T17:00:00Z", "until": "2026-06-02T17:00:00Z",
                "history_from": "2026-06-02T12:00:00Z", "held_seconds": 0.4, "held_now": false,
                "tasks": [{"name": "x", "uid": 0, "command": "curl", "parent_command": null,
                           "held_seconds": 0.4, "sole_seconds": 0.4, "holds": 1,
                           "first_held_at": "2026-06-02T13:00:00Z",
                           "last_held_at": "2026-06-02T13:00:00.4Z", "held_now": false}]}"#,
        );
        assert_eq!(
            render_report(&report, now),
            "usage from 2026-06-01T17:00:00Z to 2026-06-02T17:00:00Z (24h 0m)\n\
             history is kept from 2026-06-02T12:00:00Z: holds that ended before it are not counted\n\
             TASK  OWNER  HELD  ALONE  TAKEN  LAST HELD\n\
             x     0      <1s   <1s    1      3h 59m ago\n\
             held <1s of 24h 0m (0.0%), 1 task(s)\n"
        );
    }

    #[test]
    fn an_empty_window() {
        let report = usage(
            r#"{"since": "2026-06-02T16:00:00Z", "until": "2026-06-02T17:00:00Z",
                "history_from": "2026-06-01T00:00:00Z", "held_seconds": 0.0, "held_now": false,
                "bucket_seconds": 1800.0, "buckets": [0.0, 0.0], "tasks": []}"#,
        );
        assert_eq!(
            render_report(&report, at("2026-06-02T17:00:00Z")),
            "nothing held the machine between 2026-06-02T16:00:00Z and 2026-06-02T17:00:00Z (1h 0m)\n"
        );
    }

    #[test]
    fn rulers_and_shades() {
        assert_eq!(ruler("a", "b", 5), "a   b");
        assert_eq!(ruler("start", "end", 4), "start end");
        let cases = [
            (-1.0, ' '),
            (0.0, ' '),
            (0.001, '░'),
            (0.34, '▒'),
            (0.67, '▓'),
            (0.99, '▓'),
            (0.9999999, '█'),
            (1.0, '█'),
            (f64::NAN, ' '),
        ];
        for (fraction, expected) in cases {
            assert_eq!(shade(fraction), expected, "{fraction}");
        }
    }

    #[test]
    fn timelines_fit_the_terminal() {
        assert_eq!(timeline_width(None), DEFAULT_TIMELINE_WIDTH);
        assert_eq!(timeline_width(Some(80)), 55);
        assert_eq!(timeline_width(Some(10)), MIN_TIMELINE_WIDTH);
        assert_eq!(timeline_width(Some(100_000)), MAX_TIMELINE_WIDTH);
    }
}
