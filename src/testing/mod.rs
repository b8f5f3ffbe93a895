//! What only tests and fuzzers use, apart from the product: nothing of the
//! daemon depends on this module.
//!
//! - [`faulty`]: the log and the database over real files that fail on
//!   purpose (a full disk, an I/O error, a torn write).
//! - [`powercut`]: a simulated disk that keeps only what was synced, and the
//!   power-cut run against a model.
//! - [`memory_store`]: the store as the reactor core sees it, in memory,
//!   failing on demand.
//! - [`fuzzing`]: the bodies of the cargo-fuzz targets, one file each.
//! - [`tables`]: the task tables of a closed database, read and damaged.

pub mod faulty;
pub mod fuzzing;
pub mod memory_store;
pub mod powercut;
pub mod tables;
