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
