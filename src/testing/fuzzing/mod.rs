//! The bodies of the fuzz targets, shared by `fuzz/fuzz_targets/*.rs` (under
//! libFuzzer, on nightly features) and `tests/fuzz_corpus.rs` (every corpus
//! and regression file, replayed in plain stable `cargo test`), one file per
//! target: [`http_request`], [`duration`], [`api_request`], [`tasks_model`],
//! [`store_crash`] and [`reactor`].
//!
//! Each function takes arbitrary bytes and panics only when a property the
//! daemon relies on is broken; any input that does not describe a meaningful
//! case is simply a short run. Structured inputs are decoded by hand with
//! [`Input`], which never fails: once the bytes are spent it reads zeros.
//!
//! Depends on everything it checks: [`crate::http`], [`crate::conn`],
//! [`crate::expire`], [`crate::api`], [`crate::tasks`], [`crate::record`],
//! [`crate::store`], [`super::faulty`] and [`super::powercut`]. Nothing of
//! the daemon depends on it.

mod api_request;
mod duration;
mod http_request;
mod reactor;
mod store_crash;
mod tasks_model;

pub use api_request::api_request;
pub use duration::duration;
pub use http_request::http_request;
pub use reactor::reactor;
pub use store_crash::store_crash;
pub use tasks_model::tasks_model;

/// Keeps the fuzz process's heap instead of handing it back after every
/// input: `store_crash` and `reactor` allocate and free megabytes per
/// execution (redb's pages and caches, the simulated disk, whole cores),
/// and glibc's defaults trimmed the heap top, consolidated free chunks and
/// mapped large blocks afresh each time: about a sixth of `store_crash`'s
/// time (`perf record`: `_int_malloc`, `_int_free`, `malloc_consolidate`,
/// page faults). With these, 45-s runs over the committed corpus went from
/// 1,002 to about 1,200 executions a second. Memory stays bounded by what
/// one execution uses at most; libFuzzer's `-rss_limit_mb` still applies.
/// Called once, from the targets' `init`; a no-op off glibc.
pub fn keep_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets the allocator's own parameters.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, KEEP_HEAP_BYTES);
        libc::mallopt(libc::M_TOP_PAD, KEEP_HEAP_BYTES / 4);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX);
    }
}

/// Free heap kept at its top before glibc returns any (256 MiB, well
/// under the fuzz runs' 2 GiB `-rss_limit_mb`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const KEEP_HEAP_BYTES: libc::c_int = 256 << 20;

/// glibc's largest mmap threshold on 64-bit (`HEAP_MAX_SIZE / 2`): blocks
/// below it come from the heap, reused, instead of fresh mappings.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD_MAX: libc::c_int = 32 << 20;

use crate::tasks::TaskName;

/// A cursor over fuzz input. Reads past the end give zeros, so every byte
/// string decodes to some case and a short input is a short case.
struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&first, rest)) => {
                self.data = rest;
                first
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

/// Names the `tasks_model` and `store_crash` inputs draw from: few, so
/// commands collide.
const NAMES: &[&str] = &["a", "b", "agent", "Z9", "x.y@h:1", "a-"];

/// 2026-06-02 or so, in nanoseconds: an ordinary `now` to start from.
const START_NANOS: u64 = 1_780_000_000 * 1_000_000_000;

/// The name an input byte picks.
fn name_at(index: u8) -> TaskName {
    TaskName::parse(NAMES[usize::from(index) % NAMES.len()]).expect("the model's names are valid")
}
