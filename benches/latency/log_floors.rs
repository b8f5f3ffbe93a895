//! The log floors, for the write-ahead log's design: one 128-byte record
//! made durable in six ways on the database's filesystem, the ways
//! interleaved round-robin so the disk's drifts hit each alike; their table
//! and their JSON.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::Dirs;
use crate::report::ratio;
use crate::summary::{Summary, show};

/// The size of one log record in the log floors: a create's change, framed.
pub const LOG_RECORD: usize = 128;

/// Space zero-filled for the log floors that overwrite.
const LOG_SPACE: u64 = 32 << 20;

/// Space `fallocate`d for the log floors that append into it (unwritten
/// extents: no data is written, so it can be larger).
const FALLOCATED_SPACE: u64 = 256 << 20;

/// Ways of making one log record durable, for the write-ahead log's design.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LogWay {
    /// Append to a growing file, then `fdatasync`: the new size is metadata
    /// that must be journalled too.
    Append,
    /// Append into `fallocate`d space, then `fdatasync`: the size is set,
    /// but each first write into a block converts an unwritten extent.
    Fallocated,
    /// The same, each record opening a new 4 KiB block: the conversion's
    /// cost at every record (a group commit that crosses a block pays it).
    FallocatedNewBlock,
    /// Overwrite a preallocated, zero-filled (written and synced) file,
    /// cycling through it, then `fdatasync`: data only.
    Overwrite,
    /// The same, the file opened `O_DSYNC`, no explicit sync.
    OverwriteDsync,
    /// Append to a growing file, then `fsync`, for reference.
    AppendFsync,
}

impl LogWay {
    pub const ALL: [LogWay; 6] = [
        LogWay::Append,
        LogWay::Fallocated,
        LogWay::FallocatedNewBlock,
        LogWay::Overwrite,
        LogWay::OverwriteDsync,
        LogWay::AppendFsync,
    ];

    fn key(self) -> &'static str {
        match self {
            LogWay::Append => "append_fdatasync",
            LogWay::Fallocated => "fallocated_fdatasync",
            LogWay::FallocatedNewBlock => "fallocated_new_block_fdatasync",
            LogWay::Overwrite => "overwrite_zeroed_fdatasync",
            LogWay::OverwriteDsync => "overwrite_zeroed_o_dsync",
            LogWay::AppendFsync => "append_fsync",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            LogWay::Append => "(a) append, file grows + fdatasync",
            LogWay::Fallocated => "(b) append into fallocate + fdatasync",
            LogWay::FallocatedNewBlock => "(b') the same, a new 4 KiB block each",
            LogWay::Overwrite => "(c) overwrite zero-filled + fdatasync",
            LogWay::OverwriteDsync => "(d) overwrite zero-filled, O_DSYNC",
            LogWay::AppendFsync => "(e) append, file grows + fsync",
        }
    }
}

/// One [`LogWay`]'s file on the database's filesystem.
struct LogProbe {
    _dirs: Dirs,
    way: LogWay,
    file: fs::File,
    offset: u64,
}

impl LogProbe {
    fn new(way: LogWay) -> LogProbe {
        let dirs = Dirs::new();
        let path = dirs.db_dir.path().join("log.bin");
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .expect("create the log floor's file");
        match way {
            LogWay::Append | LogWay::AppendFsync => {}
            LogWay::Fallocated | LogWay::FallocatedNewBlock => {
                // SAFETY: fallocate(2) on a file descriptor we own.
                let result = unsafe {
                    libc::fallocate(
                        std::os::fd::AsRawFd::as_raw_fd(&file),
                        0,
                        0,
                        FALLOCATED_SPACE as libc::off_t,
                    )
                };
                assert_eq!(result, 0, "fallocate: {}", std::io::Error::last_os_error());
            }
            LogWay::Overwrite | LogWay::OverwriteDsync => {
                let zeros = vec![0u8; 1 << 20];
                for at in (0..LOG_SPACE).step_by(zeros.len()) {
                    file.write_all_at(&zeros, at).expect("zero-fill");
                }
            }
        }
        file.sync_all().expect("sync the log floor's file");
        // The directory entry too, so no first sync pays for it.
        fs::File::open(dirs.db_dir.path())
            .and_then(|dir| dir.sync_all())
            .expect("sync the directory");
        let file = if way == LogWay::OverwriteDsync {
            use std::os::unix::fs::OpenOptionsExt;
            OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_DSYNC)
                .open(&path)
                .expect("open O_DSYNC")
        } else {
            file
        };
        LogProbe {
            _dirs: dirs,
            way,
            file,
            offset: 0,
        }
    }

    fn once(&mut self, record: &[u8; LOG_RECORD]) {
        self.file
            .write_all_at(record, self.offset)
            .expect("write a record");
        match self.way {
            LogWay::Append
            | LogWay::Fallocated
            | LogWay::FallocatedNewBlock
            | LogWay::Overwrite => self.file.sync_data().expect("fdatasync"),
            LogWay::AppendFsync => self.file.sync_all().expect("fsync"),
            LogWay::OverwriteDsync => {}
        }
        self.offset += match self.way {
            LogWay::FallocatedNewBlock => 4096,
            _ => LOG_RECORD as u64,
        };
        let space = match self.way {
            LogWay::Append | LogWay::AppendFsync => u64::MAX,
            LogWay::Fallocated | LogWay::FallocatedNewBlock => FALLOCATED_SPACE,
            LogWay::Overwrite | LogWay::OverwriteDsync => LOG_SPACE,
        };
        if self.offset + LOG_RECORD as u64 > space {
            // A fallocated file wrapped would be an overwritten one: start
            // afresh (one sample pays for it).
            if matches!(self.way, LogWay::Fallocated | LogWay::FallocatedNewBlock) {
                *self = LogProbe::new(self.way);
            } else {
                self.offset = 0;
            }
        }
    }
}

/// Each [`LogWay`] timed for `duration` in all, round-robin, one record per
/// way per round, so the disk's drifts hit every way alike.
pub fn log_floors(duration: Duration, min: usize) -> Vec<(LogWay, Summary)> {
    let mut probes: Vec<LogProbe> = LogWay::ALL.into_iter().map(LogProbe::new).collect();
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); probes.len()];
    let mut record = [b'r'; LOG_RECORD];
    record[LOG_RECORD - 1] = b'\n';
    let started = Instant::now();
    let mut round = 0;
    while round < min || started.elapsed() < duration {
        for (probe, samples) in probes.iter_mut().zip(&mut samples) {
            let at = Instant::now();
            probe.once(&record);
            samples.push(at.elapsed());
        }
        round += 1;
    }
    let wall = started.elapsed();
    LogWay::ALL
        .into_iter()
        .zip(samples)
        .map(|(way, samples)| (way, Summary::of(samples, wall)))
        .collect()
}

pub fn print_log_floors(floors: &[(LogWay, Summary)]) {
    println!(
        "\nlog floors: one {LOG_RECORD} B record made durable, on the database's filesystem \
         (ways interleaved round-robin)"
    );
    println!(
        "{:<40} {:>7} {:>9} {:>9} {:>9} {:>9} {:>8}",
        "way", "n", "p50", "p90", "p99", "max", "÷ (c)"
    );
    let overwrite = floors
        .iter()
        .find(|(way, _)| *way == LogWay::Overwrite)
        .map(|(_, s)| s.p50);
    for (way, s) in floors {
        println!(
            "{:<40} {:>7} {:>9} {:>9} {:>9} {:>9} {:>8}",
            way.describe(),
            s.count,
            show(s.p50),
            show(s.p90),
            show(s.p99),
            show(s.max),
            overwrite.map_or("-".into(), |o| format!("{:.2}", ratio(s.p50, o)))
        );
    }
    println!(
        "÷ (c): p50 over the zero-filled overwrite's p50. (b) converts an unwritten extent \
         when a record first enters a 4 KiB block ({} records a block: its cost is in the \
         tail), (b') at every record; (a) and (e) journal the new size at every record.",
        4096 / LOG_RECORD
    );
}

pub fn log_floors_json(floors: &[(LogWay, Summary)]) -> Value {
    json!({
        "record_bytes": LOG_RECORD,
        "ways": floors.iter().map(|(way, s)| json!({
            "way": way.key(),
            "latency": s.to_json(),
        })).collect::<Vec<_>>(),
    })
}
