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
//! Depends on nothing else of ours. The counter is process-wide because the
//! log is.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};

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
