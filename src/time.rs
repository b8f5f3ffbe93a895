//! Time: the persisted [`Timestamp`], and [`ReactorClock`], the rule that turns
//! two clock readings into the daemon's notion of "now".
//!
//! This module depends on nothing else of ours. The reactor is the only caller
//! of [`wall_now`] and [`std::time::Instant::now`]; everything else receives
//! `now` as an argument.

use std::fmt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
}

/// RFC 3339 in UTC with nanoseconds, as the Sprite runtime prints times:
/// `2026-06-02T17:11:14.555839485Z`.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A `Timestamp` is never before 1970 and never past 2554, the range
        // humantime formats without panicking.
        write!(
            f,
            "{}",
            humantime::format_rfc3339_nanos(self.to_system_time())
        )
    }
}

/// Reads the wall clock. Only the reactor calls this.
pub fn wall_now() -> Timestamp {
    Timestamp::from_system_time(SystemTime::now())
}

/// The daemon's clock: wall-clock time that never runs backwards and never
/// runs slower than the monotonic clock.
///
/// The rule, for a reading of the wall clock `wall` taken `elapsed` (monotonic)
/// after the previous one, whose result was `last`:
///
/// `now = max(wall, last + elapsed)`
///
/// - A wall clock stepped **forward** (a VM resumed after a suspension, NTP
///   catching up) is honoured at once: expiry deadlines are absolute instants,
///   and the time really passed.
/// - A wall clock stepped **backward** is not followed: time keeps advancing at
///   the monotonic rate from the last value, so a task's remaining lifetime is
///   never stretched by a step back, and timestamps handed out are never
///   earlier than ones handed out before. Once the wall clock catches up it
///   takes over again.
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

    /// Folds in a new pair of readings and returns the daemon's `now`.
    pub fn observe(&mut self, wall: Timestamp, mono: Instant) -> Timestamp {
        let elapsed = mono.saturating_duration_since(self.last_mono);
        let carried = self.last_now.checked_add(elapsed).unwrap_or(self.last_now);
        self.last_now = wall.max(carried);
        self.last_mono = mono;
        self.last_now
    }

    /// The last value returned by [`observe`](Self::observe).
    pub fn last(&self) -> Timestamp {
        self.last_now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn clock_follows_wall_clock_forward_steps() {
        let mono = Instant::now();
        let mut clock = ReactorClock::new(Timestamp::from_nanos(100 * SECOND), mono);
        // One monotonic second, but the wall clock jumped an hour (a VM resume).
        let now = clock.observe(
            Timestamp::from_nanos(3700 * SECOND),
            mono + Duration::from_secs(1),
        );
        assert_eq!(now, Timestamp::from_nanos(3700 * SECOND));
    }

    #[test]
    fn clock_ignores_backward_steps_but_keeps_running() {
        let mono = Instant::now();
        let mut clock = ReactorClock::new(Timestamp::from_nanos(10_000 * SECOND), mono);
        // The wall clock is stepped back an hour; two seconds pass.
        let now = clock.observe(
            Timestamp::from_nanos(6_400 * SECOND),
            mono + Duration::from_secs(2),
        );
        assert_eq!(now, Timestamp::from_nanos(10_002 * SECOND));
        // Three more seconds; the wall clock is still behind.
        let now = clock.observe(
            Timestamp::from_nanos(6_403 * SECOND),
            mono + Duration::from_secs(5),
        );
        assert_eq!(now, Timestamp::from_nanos(10_005 * SECOND));
        assert_eq!(clock.last(), now);
    }

    #[test]
    fn clock_never_goes_backwards_without_monotonic_progress() {
        let mono = Instant::now();
        let mut clock = ReactorClock::new(Timestamp::from_nanos(50 * SECOND), mono);
        assert_eq!(
            clock.observe(Timestamp::from_nanos(49 * SECOND), mono),
            Timestamp::from_nanos(50 * SECOND)
        );
    }
}
