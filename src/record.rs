//! The on-disk layout of one task row: a small versioned binary record with a
//! CRC-32 of its contents.
//!
//! Pure; depends on [`crate::time`] and [`crate::tasks`] only. The store keys
//! rows by task name and stores this record as the value. The checksum also
//! covers the name, so a record found under the wrong key fails it.
//!
//! Layout, version 1 (21 bytes, integers little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | version, `1` |
//! | 1 | 8 | `started_at`, ns since the epoch |
//! | 9 | 8 | `expires_at`, ns since the epoch |
//! | 17 | 4 | CRC-32 (IEEE) of version, name bytes, `started_at`, `expires_at` |

use std::fmt;

use crate::tasks::{Task, TaskName};
use crate::time::Timestamp;

/// The version this build writes.
pub const VERSION: u8 = 1;

/// Size of a version-1 record.
pub const RECORD_LEN: usize = 21;

/// Why a stored record could not be read back.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordError {
    /// Not the length of any known version.
    Length(usize),
    /// A version this build does not know.
    Version(u8),
    /// The checksum does not match the contents.
    Checksum { stored: u32, computed: u32 },
    /// The key is not a valid task name.
    Name(String),
    /// `started_at` is after `expires_at`.
    Order,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Length(len) => write!(f, "record is {len} bytes, expected {RECORD_LEN}"),
            RecordError::Version(v) => write!(
                f,
                "record version {v} is unknown (this build writes {VERSION})"
            ),
            RecordError::Checksum { stored, computed } => write!(
                f,
                "record checksum {stored:#010x} does not match its contents ({computed:#010x})"
            ),
            RecordError::Name(why) => write!(f, "record key is not a task name: {why}"),
            RecordError::Order => write!(f, "record starts after it expires"),
        }
    }
}

impl std::error::Error for RecordError {}

/// Encodes a task's value bytes.
pub fn encode(task: &Task) -> [u8; RECORD_LEN] {
    let mut out = [0u8; RECORD_LEN];
    out[0] = VERSION;
    out[1..9].copy_from_slice(&task.started_at.as_nanos().to_le_bytes());
    out[9..17].copy_from_slice(&task.expires_at.as_nanos().to_le_bytes());
    let crc = checksum(task.name.as_str(), &out[..17]);
    out[17..21].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes the row stored under `key`.
///
/// # Errors
/// [`RecordError`] for any record this build cannot trust.
pub fn decode(key: &[u8], bytes: &[u8]) -> Result<Task, RecordError> {
    let key = std::str::from_utf8(key).map_err(|_| RecordError::Name("not UTF-8".into()))?;
    let name = TaskName::parse(key).map_err(|e| RecordError::Name(e.to_string()))?;
    if bytes.len() != RECORD_LEN {
        return Err(RecordError::Length(bytes.len()));
    }
    if bytes[0] != VERSION {
        return Err(RecordError::Version(bytes[0]));
    }
    let stored = u32::from_le_bytes([bytes[17], bytes[18], bytes[19], bytes[20]]);
    let computed = checksum(key, &bytes[..17]);
    if stored != computed {
        return Err(RecordError::Checksum { stored, computed });
    }
    let started_at = Timestamp::from_nanos(read_u64(&bytes[1..9]));
    let expires_at = Timestamp::from_nanos(read_u64(&bytes[9..17]));
    if started_at > expires_at {
        return Err(RecordError::Order);
    }
    Ok(Task {
        name,
        started_at,
        expires_at,
    })
}

fn checksum(name: &str, head: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&head[..1]);
    hasher.update(name.as_bytes());
    hasher.update(&head[1..]);
    hasher.finalize()
}

fn read_u64(bytes: &[u8]) -> u64 {
    let mut array = [0u8; 8];
    array.copy_from_slice(bytes);
    u64::from_le_bytes(array)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> Task {
        Task {
            name: TaskName::parse("agent").unwrap(),
            started_at: Timestamp::from_nanos(1_780_420_274_555_839_485),
            expires_at: Timestamp::from_nanos(1_780_423_874_555_839_485),
        }
    }

    #[test]
    fn round_trips() {
        let bytes = encode(&task());
        assert_eq!(decode(b"agent", &bytes), Ok(task()));
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let bytes = encode(&task());
        for bit in 0..RECORD_LEN * 8 {
            let mut damaged = bytes;
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(b"agent", &damaged).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn refuses_what_it_cannot_trust() {
        let bytes = encode(&task());
        assert_eq!(decode(b"agent", &bytes[..20]), Err(RecordError::Length(20)));
        let mut v2 = bytes;
        v2[0] = 2;
        assert_eq!(decode(b"agent", &v2), Err(RecordError::Version(2)));
        assert!(matches!(
            decode(b"other", &bytes),
            Err(RecordError::Checksum { .. })
        ));
        assert!(matches!(decode(b"a/b", &bytes), Err(RecordError::Name(_))));
        assert!(matches!(decode(b"\xff", &bytes), Err(RecordError::Name(_))));
        let backwards = Task {
            started_at: Timestamp::from_nanos(10),
            expires_at: Timestamp::from_nanos(5),
            ..task()
        };
        assert_eq!(
            decode(b"agent", &encode(&backwards)),
            Err(RecordError::Order)
        );
    }
}
