//! The `expire` field: a JSON integer of seconds or a humantime string,
//! bounded to `MIN_EXPIRE..=max`. Command lines (`sprite-env --expire`,
//! `sprite-tasksd --max-expire`) take the same two forms through
//! [`arg_value`]: digits alone are seconds, anything else a duration string.
//!
//! Pure; depends on nothing else of ours. humantime can panic on magnitudes
//! near `u64::MAX` seconds (chronotope/humantime#66), so a string is checked
//! for length and alphabet before humantime sees it, and every number is
//! checked against the bound before it is turned into a `Duration`.

use std::fmt;
use std::time::Duration;

use serde_json::Value;

/// The shortest hold accepted. Integer expiries have a resolution of one
/// second, and a hold shorter than that could lapse before its response
/// reaches the client.
pub const MIN_EXPIRE: Duration = Duration::from_secs(1);

/// The default and documented maximum: the seed's "maximum lifetime per task".
pub const DEFAULT_MAX_EXPIRE: Duration = Duration::from_secs(3600);

/// Longest duration string accepted. `"59m 59s 999ms 999us 999ns"` is 25
/// bytes; anything much longer is not a duration a person wrote.
pub const MAX_EXPIRE_TEXT: usize = 64;

/// Longest run of digits in a duration string. Ten digits of the largest
/// unit (years, 3.2e7 s) make 3.2e17 s, and the [`MAX_EXPIRE_TEXT`] cap
/// allows at most six such components: their sum stays below `u64::MAX`
/// seconds, where humantime would panic.
const MAX_DIGIT_RUN: usize = 10;

/// The largest `--max-expire` a daemon accepts: a week. A hold is meant to be
/// refreshed; a longer one is a forgotten machine.
pub const MAX_EXPIRE_CEILING: Duration = Duration::from_secs(7 * 24 * 3600);

/// The forms an `expire` takes, for every message that refuses one.
pub const FORMS: &str = "an integer number of seconds (300) or a duration string such as \"90s\", \"30m\", \"1h\" or \"1h 30m\" (units s, m, h, d; case-sensitive)";

/// Why an `expire` value was refused. Its `Display` is the sentence the
/// client sees.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExpireError {
    /// Neither an integer nor a string (a float, a bool, an object, null).
    WrongType,
    /// A string humantime cannot read, or one with characters no duration has.
    Unreadable(String),
    /// Below [`MIN_EXPIRE`].
    TooShort,
    /// Above the configured maximum.
    TooLong { max: Duration },
}

impl fmt::Display for ExpireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpireError::WrongType => write!(f, "expire is {FORMS}"),
            ExpireError::Unreadable(text) => {
                write!(f, "expire \"{text}\" is not a duration; expire is {FORMS}")
            }
            ExpireError::TooShort => write!(f, "expire must be at least 1 second"),
            ExpireError::TooLong { max } => write!(
                f,
                "expire must be at most {} ({} seconds); refresh the task to hold longer",
                humantime::format_duration(*max),
                max.as_secs()
            ),
        }
    }
}

impl std::error::Error for ExpireError {}

/// Decodes an `expire` JSON value.
///
/// # Errors
/// [`ExpireError`] for a value of the wrong type, an unreadable string, or a
/// duration outside `MIN_EXPIRE..=max`.
pub fn decode(value: &Value, max: Duration) -> Result<Duration, ExpireError> {
    let duration = match value {
        Value::Number(number) => match (number.as_u64(), number.as_i64()) {
            (Some(seconds), _) => JsonDuration::Seconds(seconds),
            (None, Some(_)) => JsonDuration::Negative,
            // A float such as 1.5: refuse rather than silently round.
            (None, None) => JsonDuration::WrongType,
        },
        Value::String(text) => JsonDuration::Text(text.as_str().into()),
        _ => JsonDuration::WrongType,
    };
    duration.decode(max)
}

/// A duration field (`expire`, `max_held_for`) as a request body carries
/// it, deserialized straight from the body: a string is borrowed from it
/// when it has no escapes, where a [`Value`] would allocate the string and
/// then the value (one of the costs of every create and refresh).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonDuration<'a> {
    /// A string: a duration such as `"1h 30m"`, or not.
    Text(std::borrow::Cow<'a, str>),
    /// A non-negative integer of seconds.
    Seconds(u64),
    /// A negative integer.
    Negative,
    /// A float, a bool, null (where it is not read as no value at all),
    /// an array or an object.
    WrongType,
}

impl JsonDuration<'_> {
    /// As [`decode`] on the same JSON value.
    ///
    /// # Errors
    /// As [`decode`].
    pub fn decode(&self, max: Duration) -> Result<Duration, ExpireError> {
        match self {
            JsonDuration::Text(text) => parse_text(text, max),
            JsonDuration::Seconds(seconds) => bounded(Duration::from_secs(*seconds), max),
            JsonDuration::Negative => Err(ExpireError::TooShort),
            JsonDuration::WrongType => Err(ExpireError::WrongType),
        }
    }
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for JsonDuration<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};

        struct Any<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Any<'a> {
            type Value = JsonDuration<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration")
            }
            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Self::Value, E> {
                Ok(JsonDuration::Text(text.into()))
            }
            fn visit_str<E>(self, text: &str) -> Result<Self::Value, E> {
                Ok(JsonDuration::Text(text.to_owned().into()))
            }
            fn visit_string<E>(self, text: String) -> Result<Self::Value, E> {
                Ok(JsonDuration::Text(text.into()))
            }
            fn visit_u64<E>(self, seconds: u64) -> Result<Self::Value, E> {
                Ok(JsonDuration::Seconds(seconds))
            }
            fn visit_i64<E>(self, value: i64) -> Result<Self::Value, E> {
                Ok(u64::try_from(value).map_or(JsonDuration::Negative, JsonDuration::Seconds))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(JsonDuration::WrongType)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(JsonDuration::WrongType)
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(JsonDuration::WrongType)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(JsonDuration::WrongType)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(JsonDuration::WrongType)
            }
        }
        deserializer.deserialize_any(Any(std::marker::PhantomData))
    }
}

/// The `expire` value for a command-line duration: digits alone are
/// seconds (a JSON integer); anything else goes as a string, so a command
/// line accepts exactly what the API accepts.
pub fn arg_value(text: &str) -> Value {
    if !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && let Ok(seconds) = text.parse::<u64>()
    {
        return Value::from(seconds);
    }
    Value::from(text)
}

/// Decodes a command-line duration as the API would decode the same text
/// sent as `expire` ([`arg_value`], then [`decode`]).
///
/// # Errors
/// As [`decode`].
pub fn parse_arg(text: &str, max: Duration) -> Result<Duration, ExpireError> {
    decode(&arg_value(text), max)
}

/// Decodes a duration string such as `"5m"` or `"1h 30m"`.
///
/// # Errors
/// As [`decode`].
pub fn parse_text(text: &str, max: Duration) -> Result<Duration, ExpireError> {
    let unreadable = || ExpireError::Unreadable(truncate(text));
    let trimmed = text.trim();
    if trimmed.is_empty()
        || trimmed.len() > MAX_EXPIRE_TEXT
        || !trimmed
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b' ' || b == b'.')
    {
        return Err(unreadable());
    }
    // humantime#66: no run of digits may be long enough for humantime's sum
    // to approach u64::MAX seconds.
    let longest_run = trimmed
        .split(|c: char| !c.is_ascii_digit())
        .map(str::len)
        .max()
        .unwrap_or(0);
    if longest_run > MAX_DIGIT_RUN {
        return Err(ExpireError::TooLong { max });
    }
    if let Some(duration) = LAST_DECODED.with(|last| last.get().recall(trimmed)) {
        return bounded(duration, max);
    }
    let duration = humantime::parse_duration(trimmed).map_err(|_| unreadable())?;
    LAST_DECODED.with(|last| last.set(Decoded::of(trimmed, duration)));
    bounded(duration, max)
}

/// The last text humantime decoded on this thread and what it decoded to:
/// a heartbeat sends the same `expire` with every refresh, and humantime
/// took about 230 of the 410 instructions [`parse_text`] spent on "1h"
/// (callgrind).
#[derive(Clone, Copy)]
struct Decoded {
    text: [u8; MAX_EXPIRE_TEXT],
    len: usize,
    duration: Duration,
}

impl Decoded {
    const NONE: Decoded = Decoded {
        text: [0; MAX_EXPIRE_TEXT],
        len: 0,
        duration: Duration::ZERO,
    };

    /// `text` (at most [`MAX_EXPIRE_TEXT`] bytes) decoded to `duration`.
    fn of(text: &str, duration: Duration) -> Decoded {
        let mut decoded = Decoded {
            duration,
            len: text.len(),
            ..Decoded::NONE
        };
        decoded.text[..text.len()].copy_from_slice(text.as_bytes());
        decoded
    }

    /// What `text` decodes to, if it is the text remembered. Never the
    /// empty text, which is refused before this is asked.
    fn recall(&self, text: &str) -> Option<Duration> {
        (self.len > 0 && self.text[..self.len] == *text.as_bytes()).then_some(self.duration)
    }
}

std::thread_local! {
    static LAST_DECODED: std::cell::Cell<Decoded> = const { std::cell::Cell::new(Decoded::NONE) };
}

fn bounded(duration: Duration, max: Duration) -> Result<Duration, ExpireError> {
    if duration < MIN_EXPIRE {
        Err(ExpireError::TooShort)
    } else if duration > max {
        Err(ExpireError::TooLong { max })
    } else {
        Ok(duration)
    }
}

/// Keeps error messages short when a client sends a long string.
fn truncate(text: &str) -> String {
    const SHOWN: usize = 40;
    match text.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MAX: Duration = DEFAULT_MAX_EXPIRE;

    #[test]
    fn accepts_both_forms() {
        let cases: &[(Value, u64)] = &[
            (json!(1), 1),
            (json!(300), 300),
            (json!(3600), 3600),
            (json!("90s"), 90),
            (json!("30m"), 1800),
            (json!("1h"), 3600),
            (json!("1h 0m"), 3600),
            (json!(" 5m "), 300),
            (json!("1.5s"), 1),
            (json!("59m 60s"), 3600),
        ];
        for (value, seconds) in cases {
            let decoded = decode(value, MAX).unwrap_or_else(|e| panic!("{value}: {e}"));
            assert_eq!(decoded.as_secs(), *seconds, "{value}");
        }
        assert_eq!(decode(&json!("1.5s"), MAX), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn a_remembered_text_decodes_as_humantime_does_and_only_itself() {
        // Repeats, texts that share a prefix with the remembered one, and
        // a text refused after another was remembered, in turn.
        let texts = [
            "1h", "1h", "1h 30m", "1h", "10m", "1", "1h", "30s", "1hour", "1h", "45m", "45ms",
            "45m", "2h", "1h",
        ];
        for _ in 0..3 {
            for text in texts {
                let want = humantime::parse_duration(text)
                    .map_err(|_| ())
                    .and_then(|d| bounded(d, MAX).map_err(|_| ()));
                let got = parse_text(text, MAX).map_err(|_| ());
                assert_eq!(got, want, "{text}");
            }
        }
        // The bound applies to what is remembered: the same text, a
        // smaller maximum.
        let day = Duration::from_secs(86_400);
        assert_eq!(parse_text("2h", day), Ok(Duration::from_secs(7200)));
        assert_eq!(
            parse_text("2h", Duration::from_secs(3600)),
            Err(ExpireError::TooLong {
                max: Duration::from_secs(3600)
            })
        );
    }

    #[test]
    fn refuses_with_the_reason() {
        use ExpireError::*;
        let cases: &[(Value, ExpireError)] = &[
            (json!(0), TooShort),
            (json!(-5), TooShort),
            (json!("0"), TooShort),
            (json!("0s"), TooShort),
            (json!("500ms"), TooShort),
            (json!(3601), TooLong { max: MAX }),
            (json!(u64::MAX), TooLong { max: MAX }),
            (json!("2h"), TooLong { max: MAX }),
            (json!("1h 1ns"), TooLong { max: MAX }),
            (json!("18446744073709551615s 1000ms"), TooLong { max: MAX }),
            (json!("99999999999999999999999h"), TooLong { max: MAX }),
            (json!(1.5), WrongType),
            (json!(null), WrongType),
            (json!(true), WrongType),
            (json!(["1h"]), WrongType),
            (json!("5"), Unreadable("5".into())),
            (
                json!("5 minutes please"),
                Unreadable("5 minutes please".into()),
            ),
            (json!(""), Unreadable(String::new())),
            (json!("1h\u{0}"), Unreadable("1h\u{0}".into())),
            (json!("-5s"), Unreadable("-5s".into())),
        ];
        for (value, expected) in cases {
            assert_eq!(&decode(value, MAX).unwrap_err(), expected, "{value}");
        }
    }

    #[test]
    fn maximum_is_a_setting() {
        let max = Duration::from_secs(60);
        assert!(decode(&json!("1m"), max).is_ok());
        assert_eq!(decode(&json!(61), max), Err(ExpireError::TooLong { max }));
        assert_eq!(
            ExpireError::TooLong { max }.to_string(),
            "expire must be at most 1m (60 seconds); refresh the task to hold longer"
        );
    }

    #[test]
    fn command_lines_take_the_apis_forms() {
        assert_eq!(arg_value("300"), Value::from(300));
        assert_eq!(arg_value("5m"), Value::from("5m"));
        assert_eq!(arg_value(""), Value::from(""));
        assert_eq!(
            arg_value("99999999999999999999999"),
            Value::from("99999999999999999999999")
        );
        let week = MAX_EXPIRE_CEILING;
        let cases = [
            ("3600", Some(3600)),
            ("1h", Some(3600)),
            ("2d", Some(2 * 86400)),
            ("7d", Some(7 * 86400)),
            ("168h", Some(7 * 86400)),
            ("604800", Some(7 * 86400)),
            ("604801", None),
            ("8d", None),
            ("0", None),
            ("5 minutes", Some(300)),
            ("5", Some(5)),
            ("5 parsecs", None),
            ("99999999999999999999999", None),
        ];
        for (text, seconds) in cases {
            assert_eq!(
                parse_arg(text, week).ok().map(|d| d.as_secs()),
                seconds,
                "{text:?}"
            );
        }
        let refused = parse_arg("soon", week).unwrap_err().to_string();
        assert!(refused.contains("integer number of seconds") && refused.contains("\"1h 30m\""));
    }

    #[test]
    fn formatted_values_decode_to_themselves() {
        for nanos in [
            1_000_000_000u64,
            1_500_000_001,
            3_599_999_999_999,
            3_600_000_000_000,
        ] {
            let d = Duration::from_nanos(nanos);
            let text = humantime::format_duration(d).to_string();
            assert_eq!(parse_text(&text, MAX), Ok(d), "{text}");
        }
    }

    /// The body's duration decodes every JSON value as [`decode`] does the
    /// same value read as a [`Value`], and borrows a plain string.
    #[test]
    fn a_body_duration_decodes_as_the_value_does() {
        let inputs = [
            r#""1h""#,
            r#""\u0031h""#,
            r#""90s""#,
            r#""""#,
            r#""0s""#,
            r#""2h""#,
            r#""soon""#,
            "0",
            "1",
            "3600",
            "3601",
            "-5",
            "-9223372036854775808",
            "18446744073709551615",
            "99999999999999999999",
            "1.5",
            "1e3",
            "true",
            "false",
            "null",
            "[1, \"1h\"]",
            r#"{"a": [1, {"b": 2}]}"#,
        ];
        for input in inputs {
            let value: Value = serde_json::from_str(input).unwrap();
            let ours: JsonDuration = serde_json::from_str(input).unwrap();
            assert_eq!(ours.decode(MAX), decode(&value, MAX), "{input}");
        }
        let plain: JsonDuration = serde_json::from_str(r#""1h""#).unwrap();
        assert!(matches!(
            plain,
            JsonDuration::Text(std::borrow::Cow::Borrowed("1h"))
        ));
        // In a body, null is no value at all, as an `Option<Value>` reads it.
        let null: Option<JsonDuration> = serde_json::from_str("null").unwrap();
        assert_eq!(null, None);
    }
}
