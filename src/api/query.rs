//! The query parameters of a request target: `?pid=` of a conditional
//! DELETE, `?since=` of the event stream, and the window of
//! `GET /v1/usage`; and percent-decoding, which task names in paths share.

use std::time::Duration;

use super::error;
use crate::http::Response;
use crate::time::Timestamp;

/// The window and detail a `GET /v1/usage` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageQuery {
    /// Default: [`DEFAULT_USAGE_WINDOW`](crate::usage::DEFAULT_USAGE_WINDOW)
    /// before `until`.
    pub since: Option<When>,
    /// Default (and at most): now.
    pub until: Option<When>,
    /// Buckets to split the window into, for a timeline (0: none).
    pub buckets: usize,
}

/// An instant a query names: an RFC 3339 time or a span back from now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    At(Timestamp),
    Ago(Duration),
}

impl When {
    pub(super) fn at(self, now: Timestamp) -> Timestamp {
        match self {
            When::At(at) => at,
            When::Ago(span) => Timestamp::from_nanos(
                now.as_nanos()
                    .saturating_sub(u64::try_from(span.as_nanos()).unwrap_or(u64::MAX)),
            ),
        }
    }
}

/// Longest span back a `since` or `until` may name: ten years.
const MAX_LOOKBACK: Duration = Duration::from_secs(3653 * 24 * 3600);

/// The raw value of the first `key=` parameter of the target's query.
fn parameter<'a>(target: &'a str, key: &str) -> Option<&'a str> {
    let (_, query) = target.split_once('?')?;
    let query = query.split('#').next().unwrap_or_default();
    query.split('&').find_map(|pair| {
        pair.strip_prefix(key)
            .and_then(|rest| rest.strip_prefix('='))
    })
}

/// The `pid` query parameter of `DELETE /v1/tasks/NAME`: delete only while
/// the task is bound to that process.
pub(super) fn pid_parameter(target: &str) -> Result<Option<u32>, Response> {
    let Some(value) = parameter(target, "pid") else {
        return Ok(None);
    };
    value
        .parse()
        .ok()
        .filter(|pid| *pid > 0 && value.bytes().all(|b| b.is_ascii_digit()))
        .map(Some)
        .ok_or_else(|| error(400, format!("pid=\"{value}\" is not a process id")))
}

/// The `since` query parameter of `GET /v1/events`.
pub(super) fn since_parameter(target: &str) -> Result<Option<u64>, Response> {
    let Some(value) = parameter(target, "since") else {
        return Ok(None);
    };
    value.parse().map(Some).map_err(|_| {
        error(
            400,
            format!("since=\"{value}\" is not an event sequence number"),
        )
    })
}

/// The parameters of `GET /v1/usage`: `since` and `until` (RFC 3339 times
/// or spans back from now, percent-encoded or not) and `buckets`.
pub(super) fn usage_query(target: &str) -> Result<UsageQuery, Response> {
    let when = |key: &str| -> Result<Option<When>, Response> {
        let Some(raw) = parameter(target, key) else {
            return Ok(None);
        };
        let text = percent_decode(raw)
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .map(|text| text.replace('+', " ").trim().to_owned());
        // A `+` in a query may stand for a space; an RFC 3339 offset
        // (`+02:00`) keeps its sign when it is percent-encoded or when the
        // space it became is put back.
        let parsed = text.as_deref().and_then(|text| {
            Timestamp::parse_rfc3339_with_offset(text)
                .or_else(|| Timestamp::parse_rfc3339_with_offset(&text.replacen(' ', "+", 1)))
                .map(When::At)
                .or_else(|| {
                    crate::expire::parse_text(text, MAX_LOOKBACK)
                        .ok()
                        .map(When::Ago)
                })
        });
        parsed.map(Some).ok_or_else(|| {
            error(
                400,
                format!(
                    "{key}=\"{raw}\" is neither an RFC 3339 time (2026-12-05T17:00:00Z) nor a span back from now (24h, 90m, 7d, at most 10 years)"
                ),
            )
        })
    };
    let buckets = match parameter(target, "buckets") {
        None => 0,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| *n <= crate::usage::MAX_USAGE_BUCKETS)
            .ok_or_else(|| {
                error(
                    400,
                    format!(
                        "buckets=\"{raw}\" is not a number of buckets from 0 to {}",
                        crate::usage::MAX_USAGE_BUCKETS
                    ),
                )
            })?,
    };
    Ok(UsageQuery {
        since: when("since")?,
        until: when("until")?,
        buckets,
    })
}

/// `text` with each `%XX` replaced by its byte; `None` if one is malformed.
pub(super) fn percent_decode(text: &str) -> Option<Vec<u8>> {
    let raw = text.as_bytes();
    let mut bytes = Vec::with_capacity(raw.len());
    let mut at = 0;
    while at < raw.len() {
        if raw[at] == b'%' {
            let pair = std::str::from_utf8(raw.get(at + 1..at + 3)?).ok()?;
            bytes.push(u8::from_str_radix(pair, 16).ok()?);
            at += 3;
        } else {
            bytes.push(raw[at]);
            at += 1;
        }
    }
    Some(bytes)
}
