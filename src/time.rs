//! Time: the persisted [`Timestamp`], and [`ReactorClock`], the rule that turns
//! two clock readings into the daemon's notion of "now" and tells a step of
//! the wall clock ([`ClockStep`]) from time passing.
//!
//! This module depends on nothing else of ours. The reactor is the only caller
//! of [`read_clocks`] (and so of [`wall_now`] and [`std::time::Instant::now`]
//! for the daemon's time); everything else receives `now` as an argument.

use std::fmt;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How far the wall clock may disagree with the monotonic clock before the
/// difference counts as a step. NTP slews the two at the same rate, so in
/// normal running they agree to microseconds; a second is far above that
/// noise and far below any step worth moving every hold for. Smaller
/// disagreements add up against the reactor's own timeline, so a clock
/// nudged back a little at a time is still seen once the total passes this.
pub const STEP_TOLERANCE: Duration = Duration::from_secs(1);

/// A test hook: when this environment variable names a file, [`wall_now`]
/// adds the signed nanosecond offset the file holds (e.g. `10800000000000`,
/// or `-5000000000`) to the real wall clock, read afresh at every call. A
/// missing or unreadable file is an offset of zero. The tests against the
/// real binary step the daemon's wall clock with it without touching the
/// machine's. Not for production use.
pub const TEST_CLOCK_OFFSET_ENV: &str = "SPRITE_TASKSD_TEST_CLOCK_OFFSET_FILE";

/// A span as `humantime` writes it, to the millisecond (to the second from
/// a minute up): `3s`, `2s 500ms`, `1h 5m 3s`.
pub fn human_span(span: Duration) -> String {
    let rounded = if span >= Duration::from_secs(60) {
        Duration::from_secs(span.as_secs())
    } else {
        Duration::from_millis(u64::try_from(span.as_millis()).unwrap_or(u64::MAX))
    };
    humantime::format_duration(rounded).to_string()
}

/// A wall-clock instant in nanoseconds since the Unix epoch.
///
/// Deadlines are persisted as `Timestamp`s so that they mean the same instant
/// after a restart or a cold wake. `u64` nanoseconds reach the year 2554.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The epoch itself.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// A timestamp from nanoseconds since the epoch.
    pub const fn from_nanos(nanos: u64) -> Self {
        Timestamp(nanos)
    }

    /// Nanoseconds since the epoch.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// `self + duration`, or `None` past the year 2554.
    pub fn checked_add(self, duration: Duration) -> Option<Timestamp> {
        let nanos = u64::try_from(duration.as_nanos()).ok()?;
        self.0.checked_add(nanos).map(Timestamp)
    }

    /// `self - duration`, or the epoch if that is earlier.
    pub fn saturating_sub(self, duration: Duration) -> Timestamp {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_sub(nanos))
    }

    /// How long after `earlier` this is; zero if it is not later.
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// The same instant as a [`SystemTime`].
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.0)
    }

    /// Converts a [`SystemTime`]; instants before the epoch clamp to it and
    /// instants past the year 2554 clamp to the last representable one.
    pub fn from_system_time(time: SystemTime) -> Self {
        match time.duration_since(UNIX_EPOCH) {
            Ok(since) => Timestamp(u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)),
            Err(_) => Timestamp::EPOCH,
        }
    }

    /// Parses the RFC 3339 form that [`Display`](fmt::Display) prints.
    pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
        humantime::parse_rfc3339(text)
            .ok()
            .map(Timestamp::from_system_time)
    }

    /// As [`parse_rfc3339`](Self::parse_rfc3339), also taking a numeric
    /// offset instead of `Z` (`2026-12-05T18:00:00+01:00`), as people and
    /// `date --rfc-3339` write times.
    pub fn parse_rfc3339_with_offset(text: &str) -> Option<Timestamp> {
        if let Some(at) = Timestamp::parse_rfc3339(text) {
            return Some(at);
        }
        let split = text.len().checked_sub(6)?;
        let (local, offset) = (text.get(..split)?, text.get(split..)?.as_bytes());
        let sign = match offset[0] {
            b'+' => 1i64,
            b'-' => -1,
            _ => return None,
        };
        let digits = |pair: &[u8]| -> Option<i64> {
            let text = std::str::from_utf8(pair).ok()?;
            text.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| text.parse().ok())?
        };
        let (hours, minutes) = (digits(&offset[1..3])?, digits(&offset[4..6])?);
        if offset[3] != b':' || hours > 23 || minutes > 59 {
            return None;
        }
        let utc = Timestamp::parse_rfc3339(&format!("{local}Z"))?;
        let shift = sign * (hours * 3600 + minutes * 60) * 1_000_000_000;
        // Local time minus the offset is UTC.
        let nanos = i128::from(utc.as_nanos()) - i128::from(shift);
        u64::try_from(nanos).ok().map(Timestamp::from_nanos)
    }
}

/// RFC 3339 in UTC with nanoseconds, as the Sprite runtime prints times:
/// `2026-06-02T17:11:14.555839485Z`.
impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with nanoseconds, `2026-12-05T13:45:07.123456789Z`:
    /// what `humantime::format_rfc3339_nanos` writes, byte for byte, without
    /// its allocation and its formatter machinery (every answer and event
    /// carries two).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.rfc3339();
        // The bytes are ASCII digits and separators.
        f.write_str(std::str::from_utf8(&text).unwrap_or_default())
    }
}

impl Timestamp {
    /// The RFC 3339 text of [`Display`](fmt::Display), on the stack.
    ///
    /// The date and time of day (`2026-12-05T13:45:07`) are remembered for
    /// the last two whole seconds written on this thread: an answer's or
    /// an event's times repeat a few seconds (a turn's changes share its
    /// clock reading, their deadlines an hour later), and the calendar
    /// arithmetic was about 100 of the 170 instructions a timestamp, two to
    /// four of them a request (callgrind).
    pub fn rfc3339(self) -> [u8; 30] {
        const NANOS: u64 = 1_000_000_000;
        let seconds = self.0 / NANOS;
        let nanos = self.0 % NANOS;
        let mut out = *b"0000-00-00T00:00:00.000000000Z";
        out[..19].copy_from_slice(&SECONDS_TEXT.with(|memo| memo.get(seconds)));
        // Two digits at a time from a table: half the divisions of one at
        // a time.
        push_pair(&mut out, 20, nanos / 10_000_000);
        push_pair(&mut out, 22, nanos / 100_000 % 100);
        push_pair(&mut out, 24, nanos / 1_000 % 100);
        push_pair(&mut out, 26, nanos / 10 % 100);
        out[28] = b'0' + (nanos % 10) as u8;
        out
    }
}

/// Writes `value` (below 100) as two digits at `at`.
fn push_pair(out: &mut [u8], at: usize, value: u64) {
    let value = value as usize;
    out[at..at + 2].copy_from_slice(&DIGIT_PAIRS[2 * value..2 * value + 2]);
}

/// `YYYY-MM-DDTHH:MM:SS` of a whole second since the epoch.
fn seconds_text(seconds: u64) -> [u8; 19] {
    let (year, month, day) = civil_from_days(seconds / 86_400);
    let in_day = seconds % 86_400;
    let mut out = *b"0000-00-00T00:00:00";
    push_pair(&mut out, 0, year / 100 % 100);
    push_pair(&mut out, 2, year % 100);
    push_pair(&mut out, 5, month);
    push_pair(&mut out, 8, day);
    push_pair(&mut out, 11, in_day / 3600);
    push_pair(&mut out, 14, in_day / 60 % 60);
    push_pair(&mut out, 17, in_day % 60);
    out
}

/// The last two seconds [`seconds_text`] wrote, the latest first.
struct SecondsMemo(std::cell::Cell<[(u64, [u8; 19]); 2]>);

impl SecondsMemo {
    fn get(&self, seconds: u64) -> [u8; 19] {
        let [latest, other] = self.0.get();
        if latest.0 == seconds {
            return latest.1;
        }
        let text = if other.0 == seconds {
            other.1
        } else {
            seconds_text(seconds)
        };
        self.0.set([(seconds, text), latest]);
        text
    }
}

std::thread_local! {
    static SECONDS_TEXT: SecondsMemo = const {
        SecondsMemo(std::cell::Cell::new([(0, *b"1970-01-01T00:00:00"); 2]))
    };
}

use crate::text::DIGIT_PAIRS;

/// Year, month (1-12) and day (1-31) of a count of days since 1970-01-01,
/// proleptic Gregorian, by Howard Hinnant's `civil_from_days`: for RFC 3339
/// here and the HTTP `Date` header.
pub(crate) fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Reads the wall clock; [`read_clocks`] pairs it with the monotonic clock.
///
/// Under [`TEST_CLOCK_OFFSET_ENV`] the reading is shifted by the offset that
/// file holds.
pub fn wall_now() -> Timestamp {
    let wall = Timestamp::from_system_time(SystemTime::now());
    match test_clock_offset() {
        0 => wall,
        offset if offset > 0 => wall
            .checked_add(Duration::from_nanos(offset.unsigned_abs()))
            .unwrap_or(wall),
        offset => wall.saturating_sub(Duration::from_nanos(offset.unsigned_abs())),
    }
}

/// Most time allowed between the two monotonic readings that bracket a
/// wall-clock reading in [`read_clocks`]: far below [`STEP_TOLERANCE`], so
/// a pair taken across a stall (a preempted or paused process) is not
/// mistaken for a step of the wall clock.
pub const MAX_PAIR_SKEW: Duration = Duration::from_millis(50);

/// Attempts at a pair within [`MAX_PAIR_SKEW`] before the last is taken.
const PAIR_ATTEMPTS: usize = 3;

/// Reads the wall clock and the monotonic clock as one pair for
/// [`ReactorClock::observe`]: the wall reading is bracketed by two monotonic
/// ones, and read again if they lie more than [`MAX_PAIR_SKEW`] apart. Only
/// the reactor calls this.
pub fn read_clocks() -> (Timestamp, Instant) {
    // Three readings a turn: a pair read before the loop as a fallback
    // made it five, and the five took 13 % of the reactor's user samples
    // in the latency bench's one-client GET phase (perf).
    let mut attempts = 1;
    loop {
        let before = Instant::now();
        let wall = wall_now();
        let after = Instant::now();
        if after.saturating_duration_since(before) <= MAX_PAIR_SKEW || attempts >= PAIR_ATTEMPTS {
            return (wall, before);
        }
        attempts += 1;
    }
}

/// The offset of the [`TEST_CLOCK_OFFSET_ENV`] hook, zero when it is unset.
fn test_clock_offset() -> i64 {
    static PATH: OnceLock<Option<PathBuf>> = OnceLock::new();
    let Some(path) =
        PATH.get_or_init(|| std::env::var_os(TEST_CLOCK_OFFSET_ENV).map(PathBuf::from))
    else {
        return 0;
    };
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0)
}

/// A step of the wall clock: how far it moved beyond what the monotonic
/// clock says passed, when that is more than [`STEP_TOLERANCE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockStep {
    /// The wall clock jumped ahead: a VM resumed, NTP set a clock that was
    /// behind. Deadlines that it passed fell due.
    Forward(Duration),
    /// The wall clock was set back: it had been ahead.
    Backward(Duration),
}

impl ClockStep {
    /// The step a wall-clock reading `wall` makes against `expected`, the
    /// time the reactor's timeline reached; `None` within [`STEP_TOLERANCE`].
    pub fn between(expected: Timestamp, wall: Timestamp) -> Option<ClockStep> {
        if wall > expected {
            let ahead = wall.saturating_since(expected);
            (ahead > STEP_TOLERANCE).then_some(ClockStep::Forward(ahead))
        } else {
            let behind = expected.saturating_since(wall);
            (behind > STEP_TOLERANCE).then_some(ClockStep::Backward(behind))
        }
    }

    /// How far back the wall clock was set while the daemon was down, from
    /// a start-up reading `wall` and `last_seen`, the daemon's time at its
    /// last commit before it stopped. The time the daemon was down is
    /// unknown, so only a wall clock that reads earlier than `last_seen`
    /// (beyond [`STEP_TOLERANCE`]) is known to have been set back, by at
    /// least that much; a forward step while down cannot be told from
    /// downtime.
    pub fn back_while_down(last_seen: Option<Timestamp>, wall: Timestamp) -> Option<Duration> {
        match Self::between(last_seen?, wall)? {
            ClockStep::Backward(behind) => Some(behind),
            ClockStep::Forward(_) => None,
        }
    }

    /// The step in signed nanoseconds: negative for a step back. Saturates
    /// at `i64`'s range (292 years).
    pub fn as_signed_nanos(self) -> i64 {
        let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        match self {
            ClockStep::Forward(ahead) => nanos(ahead),
            ClockStep::Backward(behind) => -nanos(behind),
        }
    }
}

/// One pair of clock readings folded into the daemon's time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reading {
    /// The daemon's `now` on its current timeline.
    pub now: Timestamp,
    /// The step this reading shows, if any. A backward step is not yet
    /// followed: `now` stays on the old timeline until the caller has moved
    /// every hold with it and calls [`ReactorClock::follow_back`].
    pub step: Option<ClockStep>,
}

/// The daemon's clock: wall-clock time that never runs slower than the
/// monotonic clock, and that follows a step of the wall clock only together
/// with the holds.
///
/// For a reading of the wall clock `wall` taken `elapsed` (monotonic) after
/// the previous one, whose result was `last`, the timeline reaches
/// `expected = last + elapsed`, and:
///
/// - within [`STEP_TOLERANCE`] of it: `now = max(wall, expected)`, so time
///   never runs backwards over small disagreements;
/// - a wall clock stepped **forward** (a VM resumed after a suspension, NTP
///   catching up) is honoured at once: `now = wall`, deadlines are absolute
///   instants and the time really passed, so what fell due expires;
/// - a wall clock stepped **backward** by `Δ` is reported but not followed:
///   `now = expected`, so no hold is stretched by it. The caller moves every
///   hold back by `Δ` (keeping its remaining time), makes that durable, and
///   then calls [`follow_back`](ReactorClock::follow_back): from then on
///   `now` is the wall clock again. Until it does, every reading reports the
///   step again.
#[derive(Debug, Clone)]
pub struct ReactorClock {
    last_now: Timestamp,
    last_mono: Instant,
}

impl ReactorClock {
    /// Starts the clock from a first pair of readings.
    pub fn new(wall: Timestamp, mono: Instant) -> Self {
        ReactorClock {
            last_now: wall,
            last_mono: mono,
        }
    }

    /// Folds in a new pair of readings.
    pub fn observe(&mut self, wall: Timestamp, mono: Instant) -> Reading {
        let elapsed = mono.saturating_duration_since(self.last_mono);
        let expected = self.last_now.checked_add(elapsed).unwrap_or(self.last_now);
        self.last_now = wall.max(expected);
        self.last_mono = mono;
        Reading {
            now: self.last_now,
            step: ClockStep::between(expected, wall),
        }
    }

    /// Moves the timeline back by `behind`, a backward step that
    /// [`observe`](Self::observe) reported and the holds now follow.
    pub fn follow_back(&mut self, behind: Duration) {
        self.last_now = self.last_now.saturating_sub(behind);
    }

    /// The daemon's current `now`: the last reading's, moved by
    /// [`follow_back`](Self::follow_back).
    pub fn last(&self) -> Timestamp {
        self.last_now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_offsets_are_turned_into_utc() {
        let utc = Timestamp::parse_rfc3339("2026-12-05T17:00:00Z").unwrap();
        for text in [
            "2026-12-05T17:00:00Z",
            "2026-12-05T18:00:00+01:00",
            "2026-12-05T12:30:00-04:30",
        ] {
            assert_eq!(
                Timestamp::parse_rfc3339_with_offset(text),
                Some(utc),
                "{text}"
            );
        }
        for bad in [
            "2026-12-05T18:00:00+1:00",
            "2026-12-05T18:00:00+24:00",
            "+01:00",
            "",
        ] {
            assert_eq!(Timestamp::parse_rfc3339_with_offset(bad), None, "{bad}");
        }
    }

    #[test]
    fn rfc3339_is_humantimes_byte_for_byte() {
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut samples = vec![
            0,
            1,
            999_999_999,
            1_000_000_000,
            951_782_400 * 1_000_000_000,
        ];
        // Up to 2554 (u64 nanoseconds), leap days and year ends included.
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            samples.push(state);
        }
        for year_end in [946_684_799u64, 4_102_444_799, 4_107_542_399] {
            samples.push(year_end * 1_000_000_000 + 999_999_999);
        }
        // A few seconds in turn, as answers write them: each of the two
        // remembered seconds hit, missed and evicted in every order.
        let base = 1_780_420_274u64;
        for step in 0..500u64 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let second = base + [0, 3600, 1, 3601, 86_399][(state % 5) as usize] + step / 100;
            samples.push(second * 1_000_000_000 + state % 1_000_000_000);
        }
        for nanos in samples {
            let at = Timestamp::from_nanos(nanos);
            let expected = humantime::format_rfc3339_nanos(at.to_system_time()).to_string();
            assert_eq!(at.to_string(), expected, "{nanos}");
        }
    }

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn displays_rfc3339_with_nanoseconds() {
        let t = Timestamp::from_nanos(1_780_420_274_555_839_485);
        assert_eq!(t.to_string(), "2026-06-02T17:11:14.555839485Z");
        assert_eq!(Timestamp::parse_rfc3339(&t.to_string()), Some(t));
        assert_eq!(
            Timestamp::EPOCH.to_string(),
            "1970-01-01T00:00:00.000000000Z"
        );
    }

    #[test]
    fn checked_add_refuses_overflow() {
        let t = Timestamp::from_nanos(u64::MAX - 10);
        assert_eq!(
            t.checked_add(Duration::from_nanos(10)),
            Some(Timestamp::from_nanos(u64::MAX))
        );
        assert_eq!(t.checked_add(Duration::from_nanos(11)), None);
        assert_eq!(Timestamp::EPOCH.checked_add(Duration::MAX), None);
    }

    fn at(seconds: u64) -> Timestamp {
        Timestamp::from_nanos(seconds * SECOND)
    }

    #[test]
    fn a_forward_step_is_followed_at_once_and_reported() {
        let mono = Instant::now();
        let mut clock = ReactorClock::new(at(100), mono);
        // One monotonic second, but the wall clock jumped an hour (a VM resume).
        let reading = clock.observe(at(3700), mono + Duration::from_secs(1));
        assert_eq!(reading.now, at(3700));
        assert_eq!(
            reading.step,
            Some(ClockStep::Forward(Duration::from_secs(3599)))
        );
        assert_eq!(
            reading.step.unwrap().as_signed_nanos(),
            3599 * SECOND as i64
        );
        // The next reading agrees with the wall clock: no second report.
        let reading = clock.observe(at(3702), mono + Duration::from_secs(3));
        assert_eq!((reading.now, reading.step), (at(3702), None));
    }

    #[test]
    fn a_backward_step_is_reported_until_followed_and_then_the_wall_clock_rules() {
        let mono = Instant::now();
        let mut clock = ReactorClock::new(at(10_000), mono);
        // The wall clock is stepped back an hour; two seconds pass.
        let reading = clock.observe(at(6_402), mono + Duration::from_secs(2));
        let back = Duration::from_secs(3600);
        // Not followed yet: the timeline keeps running at the monotonic rate.
        assert_eq!(reading.now, at(10_002));
        assert_eq!(reading.step, Some(ClockStep::Backward(back)));
        assert_eq!(
            reading.step.unwrap().as_signed_nanos(),
            -3600 * SECOND as i64
        );
        // Not followed (the holds could not be moved): reported again.
        let reading = clock.observe(at(6_405), mono + Duration::from_secs(5));
        assert_eq!(reading.now, at(10_005));
        assert_eq!(reading.step, Some(ClockStep::Backward(back)));
        // Followed: `now` is the wall clock again, and stays with it.
        clock.follow_back(back);
        assert_eq!(clock.last(), at(6_405));
        let reading = clock.observe(at(6_406), mono + Duration::from_secs(6));
        assert_eq!((reading.now, reading.step), (at(6_406), None));
    }

    #[test]
    fn disagreements_within_the_tolerance_are_not_steps_and_never_run_backwards() {
        let mono = Instant::now();
        let mut clock = ReactorClock::new(at(50), mono);
        let half = Duration::from_millis(500);
        // Half a second back, no monotonic progress: time stands still.
        let reading = clock.observe(at(50).saturating_sub(half), mono);
        assert_eq!((reading.now, reading.step), (at(50), None));
        // Half a second ahead: followed, not a step.
        let reading = clock.observe(
            at(51).checked_add(half).unwrap(),
            mono + Duration::from_secs(1),
        );
        assert_eq!(reading.now, at(51).checked_add(half).unwrap());
        assert_eq!(reading.step, None);
        // Exactly the tolerance is still not a step; a nanosecond more is.
        let reading = clock.observe(
            at(52).checked_add(half).unwrap(),
            mono + Duration::from_secs(1),
        );
        assert_eq!(reading.step, None);
        let reading = clock.observe(
            at(54).checked_add(half + Duration::from_nanos(1)).unwrap(),
            mono + Duration::from_secs(2),
        );
        assert_eq!(
            reading.step,
            Some(ClockStep::Forward(STEP_TOLERANCE + Duration::from_nanos(1)))
        );
    }

    #[test]
    fn small_steps_back_add_up_to_a_step() {
        let mono = Instant::now();
        let mut clock = ReactorClock::new(at(1000), mono);
        let nudge = Duration::from_millis(600);
        // 0.6 s back: within the tolerance, the timeline stays ahead.
        let reading = clock.observe(
            at(1001).saturating_sub(nudge),
            mono + Duration::from_secs(1),
        );
        assert_eq!((reading.now, reading.step), (at(1001), None));
        // Another 0.6 s back: 1.2 s behind the timeline in all.
        let reading = clock.observe(
            at(1002).saturating_sub(nudge * 2),
            mono + Duration::from_secs(2),
        );
        assert_eq!(reading.now, at(1002));
        assert_eq!(reading.step, Some(ClockStep::Backward(nudge * 2)));
    }

    #[test]
    fn only_a_wall_clock_behind_the_last_commit_is_a_step_while_down() {
        let cases = [
            // (time of the last commit, wall clock at start-up, step)
            (None, at(100), None),
            (Some(at(100)), at(5000), None),
            (Some(at(100)), at(100), None),
            (Some(at(101)), at(100), None),
            (Some(at(10_900)), at(100), Some(Duration::from_secs(10_800))),
        ];
        for (last_seen, wall, step) in cases {
            assert_eq!(
                ClockStep::back_while_down(last_seen, wall),
                step,
                "{last_seen:?} {wall:?}"
            );
        }
    }

    #[test]
    fn saturating_sub_stops_at_the_epoch() {
        assert_eq!(at(5).saturating_sub(Duration::from_secs(2)), at(3));
        assert_eq!(
            at(5).saturating_sub(Duration::from_secs(6)),
            Timestamp::EPOCH
        );
        assert_eq!(at(5).saturating_sub(Duration::MAX), Timestamp::EPOCH);
    }
}
