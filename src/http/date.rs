//! The `Date` header value: an IMF-fixdate (RFC 9110 section 5.6.7)
//! formatted once per second. Pure; the caller passes the time in.

use crate::time::civil_from_days;

/// Length of an IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`.
const IMF_FIXDATE_LEN: usize = 29;

/// The `Date` header value (RFC 9110 section 6.6.1), formatted once per
/// second: the reactor calls [`advance`](Self::advance) with the time each
/// turn and every response of that second copies the same 29 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpDate {
    unix_second: u64,
    text: [u8; IMF_FIXDATE_LEN],
}

impl HttpDate {
    /// The date of `unix_second` (seconds since 1970-01-01 UTC).
    pub fn at(unix_second: u64) -> Self {
        HttpDate {
            unix_second,
            text: imf_fixdate(unix_second),
        }
    }

    /// Moves to `unix_second`; formats only when the second changed.
    pub fn advance(&mut self, unix_second: u64) {
        if unix_second != self.unix_second {
            *self = HttpDate::at(unix_second);
        }
    }

    /// The formatted date, ASCII.
    pub fn as_bytes(&self) -> &[u8] {
        &self.text
    }
}

/// Formats an IMF-fixdate (RFC 9110 section 5.6.7). Years past 9999 print
/// as 9999-12-31T23:59:59, the last instant the format can carry.
fn imf_fixdate(unix_second: u64) -> [u8; IMF_FIXDATE_LEN] {
    const LAST: u64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let second = unix_second.min(LAST);
    let days = second / 86_400;
    let in_day = second % 86_400;
    let (year, month, day) = civil_from_days(days);
    let mut out = [0u8; IMF_FIXDATE_LEN];
    let weekday = DAYS[(days % 7) as usize];
    out[..3].copy_from_slice(weekday);
    out[3..5].copy_from_slice(b", ");
    two_digits(&mut out[5..7], day);
    out[7] = b' ';
    out[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
    out[11] = b' ';
    two_digits(&mut out[12..14], year / 100);
    two_digits(&mut out[14..16], year % 100);
    out[16] = b' ';
    two_digits(&mut out[17..19], in_day / 3600);
    out[19] = b':';
    two_digits(&mut out[20..22], in_day / 60 % 60);
    out[22] = b':';
    two_digits(&mut out[23..25], in_day % 60);
    out[25..].copy_from_slice(b" GMT");
    out
}

fn two_digits(out: &mut [u8], value: u64) {
    out[0] = b'0' + (value / 10 % 10) as u8;
    out[1] = b'0' + (value % 10) as u8;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_imf_fixdates() {
        let cases: &[(u64, &str)] = &[
            (0, "Thu, 01 Jan 1970 00:00:00 GMT"),
            (784_111_777, "Sun, 06 Nov 1994 08:49:37 GMT"),
            (951_782_400, "Tue, 29 Feb 2000 00:00:00 GMT"),
            (1_780_420_274, "Tue, 02 Jun 2026 17:11:14 GMT"),
            (4_133_980_799, "Fri, 31 Dec 2100 23:59:59 GMT"),
            (253_402_300_799, "Fri, 31 Dec 9999 23:59:59 GMT"),
            (u64::MAX, "Fri, 31 Dec 9999 23:59:59 GMT"),
        ];
        for (second, expected) in cases {
            assert_eq!(
                std::str::from_utf8(HttpDate::at(*second).as_bytes()).unwrap(),
                *expected,
                "{second}"
            );
        }
    }

    #[test]
    fn the_date_is_formatted_once_per_second() {
        let mut date = HttpDate::at(784_111_777);
        let before = date.clone();
        date.advance(784_111_777);
        assert_eq!(date, before);
        date.advance(784_111_778);
        assert_eq!(date.as_bytes(), b"Sun, 06 Nov 1994 08:49:38 GMT");
    }
}
