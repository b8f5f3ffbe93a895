//! The daemon's log writer: stderr, best effort.
//!
//! A daemon's stderr is often a pipe to something that can go away (`| head`,
//! a `tee` that dies, a log shipper restarting). Rust ignores SIGPIPE, so a
//! write to such a pipe fails with `EPIPE`; `eprintln!` turns that into a
//! panic, and so does tracing-subscriber's report of its own write errors.
//! Here a line that cannot be written is dropped and counted
//! ([`dropped_writes`], `sprite_tasks_log_writes_dropped_total` in
//! `/metrics`); logging never stops the daemon.
//!
//! [`Folder`] keeps the log readable under a flood: repeated lines of one
//! kind are logged a few times, then summarised once per [`FOLD_WINDOW`].
//!
//! Depends on nothing else of ours. The counter is process-wide because the
//! log is.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Log writes that failed (closed pipe, full non-blocking pipe, I/O error)
/// and were dropped, since the process started.
static DROPPED_WRITES: AtomicU64 = AtomicU64::new(0);

/// Log writes dropped so far.
pub fn dropped_writes() -> u64 {
    DROPPED_WRITES.load(Ordering::Relaxed)
}

/// Writes `bytes` to stderr whole, or drops them and counts the drop.
pub fn write_stderr(bytes: &[u8]) {
    if io::stderr().lock().write_all(bytes).is_err() {
        DROPPED_WRITES.fetch_add(1, Ordering::Relaxed);
    }
}

/// Prints one line to stderr, as [`write_stderr`]: the replacement for
/// `eprintln!` in the daemon.
pub fn print_line(line: &str) {
    let mut text = String::with_capacity(line.len() + 1);
    text.push_str(line);
    text.push('\n');
    write_stderr(text.as_bytes());
}

/// An [`io::Write`] over stderr that never fails: what a write cannot
/// deliver is dropped and counted. For `tracing_subscriber`'s `with_writer`
/// (it is its own `MakeWriter` through `Fn() -> StderrLog`).
#[derive(Debug, Clone, Copy, Default)]
pub struct StderrLog;

impl Write for StderrLog {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        write_stderr(bytes);
        Ok(bytes.len())
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        write_stderr(bytes);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// How long repeated lines of one kind are folded before their summary.
pub const FOLD_WINDOW: Duration = Duration::from_secs(10);

/// Folds repeated log lines into summaries, so that nothing an outside
/// party can repeat (a refused connection, a refused change, a flood of
/// short tasks) is logged once per event: per key, the first `burst` lines
/// of a window are logged in full, the rest are counted, and the count is
/// summarised once the window ends.
///
/// Pure: time is passed in. Invariant: an entry exists only for a key seen
/// in its current window; `folded > 0` only when `logged == burst`.
#[derive(Debug)]
pub struct Folder<K> {
    window: Duration,
    burst: u32,
    /// Ordered, not hashed: a handful of keys (kinds of warning, uids),
    /// and a task line is admitted per create and delete, where SipHash of
    /// the key cost some 300 instructions (callgrind).
    keys: BTreeMap<K, Fold>,
    /// No key's window ends before this (it may end later: a window that
    /// starts afresh moves on): until then [`take_due`](Self::take_due)
    /// has nothing to do. Both are asked every reactor turn, and walking
    /// the keys cost a turn some 400 instructions (callgrind, one request
    /// a turn).
    windows_end: Option<Instant>,
    /// When the first summary is due: the end of the earliest window with
    /// a folded line ([`next_due`](Self::next_due)).
    summary_due: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Fold {
    since: Instant,
    logged: u32,
    folded: u64,
}

/// Lines of one key folded during a window that has ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary<K> {
    pub key: K,
    /// Lines not logged in full.
    pub folded: u64,
    /// From the window's first line to its summary.
    pub over: Duration,
}

impl<K: Ord + Clone> Folder<K> {
    /// At most `burst` full lines per key in each `window`.
    pub fn new(window: Duration, burst: u32) -> Folder<K> {
        Folder {
            window,
            burst,
            keys: BTreeMap::new(),
            windows_end: None,
            summary_due: None,
        }
    }

    /// Whether this occurrence of `key` is logged in full; otherwise it is
    /// counted for the window's summary.
    pub fn admit(&mut self, key: &K, now: Instant) -> bool {
        let window = self.window;
        let fold = match self.keys.get_mut(key) {
            Some(fold) => fold,
            None => {
                self.windows_end = earliest(self.windows_end, now + window);
                self.keys.entry(key.clone()).or_insert(Fold {
                    since: now,
                    logged: 0,
                    folded: 0,
                })
            }
        };
        if fold.folded == 0 && now.saturating_duration_since(fold.since) >= window {
            *fold = Fold {
                since: now,
                logged: 0,
                folded: 0,
            };
        }
        if fold.logged < self.burst {
            fold.logged += 1;
            true
        } else {
            if fold.folded == 0 {
                self.summary_due = earliest(self.summary_due, fold.since + window);
            }
            fold.folded += 1;
            false
        }
    }

    /// The summaries of the windows that ended by `now`; their keys start
    /// afresh.
    pub fn take_due(&mut self, now: Instant) -> Vec<Summary<K>> {
        let mut due = Vec::new();
        if self.windows_end.is_none_or(|end| now < end) {
            return due;
        }
        let window = self.window;
        self.keys.retain(|key, fold| {
            let over = now.saturating_duration_since(fold.since);
            if over < window {
                return true;
            }
            if fold.folded > 0 {
                due.push(Summary {
                    key: key.clone(),
                    folded: fold.folded,
                    over,
                });
            }
            false
        });
        self.windows_end = self.keys.values().map(|fold| fold.since + window).min();
        self.summary_due = self
            .keys
            .values()
            .filter(|fold| fold.folded > 0)
            .map(|fold| fold.since + window)
            .min();
        due
    }

    /// When the next summary is due, if any line is folded.
    pub fn next_due(&self) -> Option<Instant> {
        self.summary_due
    }
}

/// The earlier of `current` and `at`.
fn earliest(current: Option<Instant>, at: Instant) -> Option<Instant> {
    Some(current.map_or(at, |current| current.min(at)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random lines of a few keys at random times, against the keys
    /// walked in full: the cached instants skip no summary, and the next
    /// one due is exact.
    #[test]
    fn the_cached_instants_agree_with_a_walk_of_the_keys() {
        let start = Instant::now();
        let mut folder = Folder::new(Duration::from_millis(100), 2);
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut ms = 0;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ms += state % 7;
            let now = start + Duration::from_millis(ms);
            if state.is_multiple_of(5) {
                let walked: Vec<(u64, u64)> = folder
                    .keys
                    .iter()
                    .filter(|(_, fold)| now.saturating_duration_since(fold.since) >= folder.window)
                    .filter(|(_, fold)| fold.folded > 0)
                    .map(|(key, fold)| (*key, fold.folded))
                    .collect();
                let taken: Vec<(u64, u64)> = folder
                    .take_due(now)
                    .into_iter()
                    .map(|summary| (summary.key, summary.folded))
                    .collect();
                assert_eq!(taken, walked);
                assert!(
                    folder
                        .keys
                        .values()
                        .all(|fold| now.saturating_duration_since(fold.since) < folder.window)
                );
            } else {
                folder.admit(&((state >> 8) % 4), now);
            }
            let due = folder
                .keys
                .values()
                .filter(|fold| fold.folded > 0)
                .map(|fold| fold.since + folder.window)
                .min();
            assert_eq!(folder.next_due(), due);
        }
    }

    #[test]
    fn a_flood_is_a_burst_then_one_summary_per_window() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut folder = Folder::new(Duration::from_secs(10), 2);
        let logged = (0..1000)
            .filter(|i| folder.admit(&"refused", at(*i)))
            .count();
        assert_eq!(logged, 2);
        assert_eq!(folder.next_due(), Some(at(10_000)));
        assert!(folder.take_due(at(9_999)).is_empty());
        assert_eq!(
            folder.take_due(at(10_000)),
            [Summary {
                key: "refused",
                folded: 998,
                over: Duration::from_secs(10)
            }]
        );
        assert_eq!(folder.next_due(), None);
        // The next window starts with full lines again.
        assert!(folder.admit(&"refused", at(10_001)));
    }

    #[test]
    fn keys_fold_apart_and_a_quiet_key_is_never_summarised() {
        let start = Instant::now();
        let mut folder = Folder::new(Duration::from_secs(10), 1);
        assert!(folder.admit(&1, start));
        assert!(!folder.admit(&1, start));
        assert!(folder.admit(&2, start), "another key has its own burst");
        let later = start + Duration::from_secs(11);
        let due = folder.take_due(later);
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].key, due[0].folded), (1, 1));
        // A key logged once per window is logged every time.
        assert!(folder.admit(&2, later));
        assert!(folder.admit(&2, later + Duration::from_secs(10)));
        assert!(folder.take_due(later + Duration::from_secs(30)).is_empty());
    }
}
