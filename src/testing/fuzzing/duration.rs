//! The `duration` target: decoding the `expire` field ([`crate::expire`]),
//! as a JSON value or a raw string, under an arbitrary configured maximum.

use std::time::Duration;

use serde_json::Value;

use crate::expire::{self, DEFAULT_MAX_EXPIRE, MAX_EXPIRE_CEILING, MIN_EXPIRE};

use super::Input;

/// `duration`: byte 0 picks the form (odd: a JSON document, even: a raw
/// string), byte 1 and 2 the configured maximum; the rest is the value.
///
/// Properties: decoding never panics (humantime can, on overflow: `expire`
/// must guard it); whatever is accepted lies in `MIN_EXPIRE..=max`; an
/// accepted value formatted by humantime decodes to itself, and so does its
/// JSON integer form when it is whole seconds; every refusal's message can
/// be rendered.
pub fn duration(data: &[u8]) {
    let mut input = Input::new(data);
    let form = input.byte();
    let max = match input.u16() {
        0 => DEFAULT_MAX_EXPIRE,
        n => Duration::from_secs(u64::from(n) * 16).min(MAX_EXPIRE_CEILING),
    };
    let rest = input.rest();
    let decoded = if form & 1 == 1 {
        let Ok(value) = serde_json::from_slice::<Value>(rest) else {
            return;
        };
        expire::decode(&value, max)
    } else {
        let Ok(text) = std::str::from_utf8(rest) else {
            return;
        };
        expire::parse_text(text, max)
    };
    match decoded {
        Ok(accepted) => {
            assert!(
                (MIN_EXPIRE..=max).contains(&accepted),
                "{accepted:?} accepted outside 1s..={max:?}"
            );
            let text = humantime::format_duration(accepted).to_string();
            assert_eq!(
                expire::parse_text(&text, max),
                Ok(accepted),
                "{text:?} does not decode to what it formats"
            );
            if accepted.subsec_nanos() == 0 {
                let seconds = Value::from(accepted.as_secs());
                assert_eq!(expire::decode(&seconds, max), Ok(accepted));
            }
        }
        Err(refused) => {
            let _ = refused.to_string();
        }
    }
}
