//! The rules of `sprite-env tasks hold`: how often a hold is refreshed for
//! its expiry, and how soon a failed refresh is retried. The holder itself
//! (signals, the child, the refresh thread) lives in the binary.
//!
//! Pure; depends on [`crate::tasks`] for the reason's rule.

use std::ffi::OsString;
use std::time::Duration;

use crate::tasks::MAX_REASON_LEN;

/// The shortest `--every` of a hold. A refresh is one request and one fsync;
/// more often than this is load for no safety.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// The longest wait before retrying a failed refresh. Shorter than the
/// interval when the interval is long, so a daemon restart costs seconds of
/// margin, not minutes.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

/// The longest default refresh interval: the seed's heartbeat refreshes a
/// 5-minute expiry every minute.
pub const MAX_DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// The refresh interval when `--every` is not given: a fifth of the expiry
/// (four missed refreshes of margin, as the seed's 5m/1m), at most
/// [`MAX_DEFAULT_INTERVAL`]. Every expiry the API accepts (at least 1s)
/// gives an interval that [`check_interval`] accepts.
pub fn default_interval(expire: Duration) -> Duration {
    (expire / 5).clamp(MIN_INTERVAL, MAX_DEFAULT_INTERVAL)
}

/// Reads an `--every` interval: a duration string such as `30s` or `500ms`,
/// or digits alone as seconds.
///
/// # Errors
/// A sentence for anything else. The text is bounded before humantime
/// reads it (humantime can panic on overflow, chronotope/humantime#66).
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    /// Longer than any interval a person writes.
    const MAX_TEXT: usize = 32;
    /// Ten digits of any unit stay far from humantime's overflow.
    const MAX_DIGIT_RUN: usize = 10;
    let longest_run = text
        .split(|c: char| !c.is_ascii_digit())
        .map(str::len)
        .max()
        .unwrap_or(0);
    let readable = text.len() <= MAX_TEXT && longest_run <= MAX_DIGIT_RUN;
    let parsed = if !readable {
        None
    } else if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse().ok().map(Duration::from_secs)
    } else {
        humantime::parse_duration(text).ok()
    };
    parsed.ok_or_else(|| format!("{text:?} is not a duration such as 30s, 1m or 500ms"))
}

/// The rule for a hold's refresh interval: at least [`MIN_INTERVAL`] and at
/// most half the expiry, so that one failed refresh still leaves time for a
/// retry before the hold lapses. The seed's default, a 5-minute expiry
/// refreshed every minute, has four refreshes of margin.
///
/// # Errors
/// A sentence naming the rule.
pub fn check_interval(expire: Duration, every: Duration) -> Result<(), String> {
    if every < MIN_INTERVAL {
        return Err(format!(
            "--every {} is too often; the shortest refresh interval is {}",
            humantime::format_duration(every),
            humantime::format_duration(MIN_INTERVAL)
        ));
    }
    if every > expire / 2 {
        return Err(format!(
            "--every {} is not well below --expire {}: refresh at most every {} (half the expiry) so a failed refresh can be retried before the hold lapses",
            humantime::format_duration(every),
            humantime::format_duration(expire),
            humantime::format_duration(expire / 2)
        ));
    }
    Ok(())
}

/// How long to wait before retrying a failed refresh.
pub fn retry_delay(every: Duration) -> Duration {
    every.min(MAX_RETRY_DELAY)
}

/// The reason a hold gives when `--reason` is not: its command line,
/// arguments joined by spaces, control characters replaced by `?`, cut to
/// [`MAX_REASON_LEN`] bytes, so it always meets the daemon's rule.
pub fn default_reason(command: &[OsString]) -> String {
    let joined = command
        .iter()
        .map(|arg| arg.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let mut reason: String = joined
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if reason.len() > MAX_REASON_LEN {
        let cut = (0..=MAX_REASON_LEN)
            .rev()
            .find(|&at| reason.is_char_boundary(at))
            .unwrap_or(0);
        reason.truncate(cut);
    }
    if reason.is_empty() {
        reason.push('?');
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_must_sit_well_below_the_expiry() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        let cases = [
            (s(300), s(60), true),
            (s(300), s(150), true),
            (s(300), s(151), false),
            (s(2), ms(500), true),
            (s(2), s(1), true),
            (s(2), ms(1500), false),
            (s(1), ms(99), false),
            (s(3600), Duration::ZERO, false),
        ];
        for (expire, every, ok) in cases {
            assert_eq!(
                check_interval(expire, every).is_ok(),
                ok,
                "{expire:?} {every:?}"
            );
        }
        assert_eq!(retry_delay(s(60)), MAX_RETRY_DELAY);
        assert_eq!(retry_delay(ms(500)), ms(500));
    }

    #[test]
    fn the_default_interval_follows_the_expiry() {
        let s = Duration::from_secs;
        let cases = [
            (s(1), Duration::from_millis(200)),
            (s(10), s(2)),
            (s(60), s(12)),
            (s(300), s(60)),
            (s(3600), s(60)),
            (s(7 * 86400), s(60)),
        ];
        for (expire, every) in cases {
            assert_eq!(default_interval(expire), every, "{expire:?}");
            assert!(check_interval(expire, every).is_ok(), "{expire:?}");
        }
    }

    #[test]
    fn interval_text() {
        let cases = [
            ("1m", Some(Duration::from_secs(60))),
            ("500ms", Some(Duration::from_millis(500))),
            ("30", Some(Duration::from_secs(30))),
            ("1m 30s", Some(Duration::from_secs(90))),
            ("", None),
            ("soon", None),
            ("-1s", None),
            ("18446744073709551615s 1000ms", None),
            ("99999999999999s", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_interval(text).ok(), expected, "{text:?}");
        }
    }

    #[test]
    fn the_default_reason_is_the_command_line_within_the_rule() {
        let args = |list: &[&str]| list.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            default_reason(&args(&["claude", "-p", "fix the tests"])),
            "claude -p fix the tests"
        );
        assert_eq!(default_reason(&args(&["sh", "-c", "a\nb"])), "sh -c a?b");
        let long = default_reason(&args(&["x", &"é".repeat(300)]));
        assert!(crate::tasks::check_reason(&long).is_ok());
        assert_eq!(default_reason(&args(&[""])), "?");
    }
}
