//! The durable store: a write-ahead log in front of redb. The only module
//! that knows redb and the files on disk.
//!
//! - [`frame`]: the log's frames, pure over byte slices.
//! - [`files`]: creating files whole, the log's byte interface ([`LogIo`]).
//! - [`pending`]: logged changes not yet in redb, read back folded by
//!   name ([`Pending`]), and the log mark the tables reach ([`LogMark`]);
//!   pure.
//! - [`tables`]: redb, the state as of the last checkpoint.
//! - [`checkpoint`]: the worker thread that writes pending changes to
//!   redb and recovers at start-up.
//!
//! # Layering
//! Dependencies run one way, down this list: `frame`, `files` and `pending`
//! use none of the others; `tables` uses `pending` (a checkpoint writes a
//! [`Pending`]); `checkpoint` uses those four; [`Store`], here, uses them
//! all. The boundary types defined here, [`StoreError`] and [`Loaded`], are
//! what every layer shares.
//!
//! # The commit contract
//! [`Store::commit_batch`] encodes the batch (its changes and their events)
//! as one frame, writes it into the preallocated, zero-filled log with one
//! write and makes it durable with one `fdatasync`, and only then returns
//! `Ok`: a caller may answer "done" after it. The changes then wait in
//! memory ([`Pending`]) until a checkpoint writes them to redb in one
//! `Durability::Immediate` transaction on the worker thread, together with
//! the log mark they reach; the log space before that mark is then free
//! for reuse.
//!
//! # Invariants
//! - Every acknowledged batch is in redb or in the log after redb's mark
//!   (`tail <= head`, `head - tail <= size`: the ring never overwrites a
//!   frame that is not checkpointed).
//! - Frames after the mark have consecutive LSNs and their generation; the
//!   first that does not ends the log ([`frame::scan`]).
//! - After a failed log write or sync nothing more is logged until
//!   [`Store::load`] has re-read what the disk holds: the caller reloads its
//!   memory from that, so memory never runs ahead of the disk.
//! - A failed checkpoint changes nothing on disk that recovery relies on;
//!   its changes are folded back and retried.

pub mod checkpoint;
pub mod chunk;
pub mod files;
#[cfg(test)]
mod fixtures;
pub mod frame;
mod history;
mod merge;
pub mod pending;
pub mod tables;
pub mod texts;
mod threads;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Database, DatabaseError};
use tracing::{error, info, warn};

use crate::events::{Event, EventLines};
use crate::record::RecordError;
use crate::tasks::{Change, Task};

pub use files::LogIo;
pub use pending::{LogMark, Pending};
pub use tables::Opener;

use checkpoint::{Done, Engine, Worker};
use frame::{Slot, Stop};
use tables::Tables;

/// The log's size when it is created: 16 MiB. Zero-filled once (tens of
/// milliseconds), it holds about 80,000 one-task frames: several seconds
/// of writes at the fastest rate this daemon reaches, against checkpoints
/// started every second or at a quarter full.
pub const DEFAULT_LOG_SIZE: u64 = 16 << 20;

/// The smallest log accepted: room for a few large batches.
pub const MIN_LOG_SIZE: u64 = 64 << 10;

/// A checkpoint starts this long after the first change it would cover:
/// a second's worth of changes costs one redb commit instead of thousands.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// ... or once this many changes wait, whichever comes first, so a burst's
/// checkpoint (and the replay after a crash) stays small: 16,384 changes
/// commit to redb in well under 100 ms.
pub const DEFAULT_CHECKPOINT_CHANGES: usize = 16_384;

/// A checkpoint writes its rows as a run beside the base
/// ([`tables`](self::tables)); once the runs hold as many rows as the base,
/// or this many if the base is smaller, it merges them and the base into a
/// new base instead. Each change is then written about twice (in its run,
/// and once more in the next base), against some 6,000 instructions of
/// B-tree work per row when each checkpoint updated a row per task; the
/// runs hold at most about as many rows as the base (or this many), so a
/// load reads at most about twice the base's rows, or the base and this
/// many. A load and a compaction hold every chunk while they merge (about
/// 12 MiB, briefly, with 100k tasks).
pub const DEFAULT_COMPACT_AT: usize = 16_384;

/// redb's page cache, in bytes (its default is 1 GiB, a ceiling it fills
/// with every page a checkpoint or a load touches and never gives back). The
/// database is read whole only at start-up; a checkpoint touches the
/// interior nodes and the leaves it changes. 100k tasks make a file of
/// about 40 MiB whose interior nodes take under 1 MiB, so 4 MiB keeps them
/// all and some hot leaves; the other leaves come from the kernel's page
/// cache. 16 MiB (the previous value) was 12 MiB of the daemon's memory
/// after a restart with 100k tasks (65.8 against 53.1 MiB, and 76.3
/// against 63.7 in the latency bench, target < 64). What the smaller cache
/// costs: the pages a checkpoint misses are read again, each into a
/// zeroed buffer (callgrind, 20k creates then 20k deletes: 394 -> 420 M
/// instructions in the checkpoint; 20k each of creates, refreshes, GETs
/// and deletes: 518 -> 603 M, about 1,400 a write; the 64-client bench,
/// 2-3 % of a write's CPU). Memory is a target we meet this way; the CPU
/// per write is one we miss either way. Tried again once a restart no
/// longer held duplicated command lines (41 MiB with 100k tasks): 16 MiB
/// made no difference beyond the runs' spread at 64 clients, for 12 MiB
/// more (docs/performance.md, the fifth round).
pub const DATABASE_CACHE: usize = 4 << 20;

/// ... or once the log is this fraction full (1/4), leaving three quarters
/// for the writes that arrive while the checkpoint runs.
const CHECKPOINT_AT_FILL_DIVISOR: u64 = 4;

/// One frame may use at most this fraction of the ring (1/2), so that a
/// frame always fits once the ring is checkpointed.
const MAX_FRAME_DIVISOR: u64 = 2;

/// After a failed checkpoint, wait this long before the next attempt, so a
/// broken disk does not keep the worker busy.
pub const CHECKPOINT_RETRY: Duration = Duration::from_secs(1);

/// How the store is set up.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Size of a newly created log (an existing one keeps its size).
    pub log_size: u64,
    pub checkpoint_interval: Duration,
    pub checkpoint_changes: usize,
    /// Checkpoints on a thread of their own (production) or inline, when
    /// due, in [`Store::poll`] (deterministic tests).
    pub background: bool,
    /// How long the usage history keeps a hold after it ended: a
    /// checkpoint deletes older ones.
    pub usage_retention: Duration,
    /// A checkpoint compacts the task tables once the runs hold this many
    /// rows or as many as the base, whichever is more
    /// ([`DEFAULT_COMPACT_AT`]).
    pub compact_at: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            log_size: DEFAULT_LOG_SIZE,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
            checkpoint_changes: DEFAULT_CHECKPOINT_CHANGES,
            background: true,
            usage_retention: crate::usage::DEFAULT_USAGE_RETENTION,
            compact_at: DEFAULT_COMPACT_AT,
        }
    }
}

/// What the store holds.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Every trusted row, expired or not.
    pub tasks: Vec<Task>,
    /// Rows moved to quarantine on this load: key and reason.
    pub quarantined: Vec<(String, RecordError)>,
    /// Stored command lines whose count of references this load put right
    /// (or deleted, no row referring to them): zero unless a row was
    /// damaged or a build miscounted.
    pub recounted: usize,
    /// References of loaded rows to stored command lines that are missing
    /// or damaged: those tasks were loaded without the line (zero unless
    /// the database was damaged).
    pub missing_texts: usize,
    /// The retained event history, in order. Unreadable events are skipped.
    pub events: Vec<Event>,
    /// The usage history: every event that ended a hold, tripped or re-armed
    /// a name within the usage retention, in order.
    pub usage: Vec<Event>,
    /// Where the usage history's holds' limit cut it, in ns since the
    /// epoch (0 if it never did): holds that ended before it are not
    /// recovered, though a chunk kept for a later line may still hold
    /// them ([`Store::set_usage_floor`]).
    pub usage_floor: u64,
    /// Log frames replayed over the tables.
    pub replayed: usize,
    /// Where the log ended with a torn or damaged frame (never
    /// acknowledged), as a file offset and the reason.
    pub torn_tail: Option<(u64, Stop)>,
}

/// Errors at the store boundary.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process (another daemon) holds the database.
    Locked(PathBuf),
    /// The file exists but is not a redb database, or is damaged beyond
    /// redb's repair. It is left untouched.
    Unreadable { path: PathBuf, reason: String },
    /// The file cannot be created or opened: permission denied, a
    /// read-only file system, a missing directory.
    Access {
        path: PathBuf,
        action: &'static str,
        problem: &'static str,
    },
    /// Any other failure to open.
    Open(String),
    /// A read or write failed; the caller must [`Store::load`] before the
    /// next commit.
    Io(String),
    /// The log has no room for the batch: checkpoints are failing, or the
    /// batch is larger than the log can take. Nothing was written.
    Full(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Locked(path) => write!(
                f,
                "database {} is in use by another process (is another sprite-tasksd running?)",
                path.display()
            ),
            StoreError::Unreadable { path, reason } => write!(
                f,
                "{} is not a sprite-tasks database or is damaged ({reason}); it was left untouched: move it away or pass another --db",
                path.display()
            ),
            StoreError::Access {
                path,
                action,
                problem,
            } => write!(
                f,
                "cannot {action} {}: {problem}; run as a user who may write there (e.g. root for /.sprite), or pass --socket and --db somewhere writable, e.g. --socket \"$XDG_RUNTIME_DIR/sprite/api.sock\" (the database goes beside the socket)",
                path.display()
            ),
            StoreError::Open(reason) => write!(f, "cannot open the database: {reason}"),
            StoreError::Io(reason) => write!(f, "database write failed: {reason}"),
            StoreError::Full(reason) => write!(f, "{reason}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// Counters for the metrics page.
#[derive(Debug, Default, Clone, Copy)]
pub struct StoreCounters {
    pub log_frames: u64,
    pub log_bytes: u64,
    pub checkpoints: u64,
    pub checkpoint_failures: u64,
    /// Checkpoints that compacted the task tables, and the rows they
    /// wrote (every live row, each time).
    pub compactions: u64,
    pub compacted_rows: u64,
    /// Bytes of the log not yet checkpointed, and the log's size.
    pub log_used: u64,
    pub log_size: u64,
}

/// The log's write side, the pending changes and the checkpoint worker.
pub struct Store {
    path: PathBuf,
    log: Arc<dyn LogIo>,
    options: StoreOptions,
    worker: Worker,
    /// The ring's size and positions: `tail` is redb's mark, `head` where
    /// the next frame goes. Invariant: `tail <= head <= tail + size`.
    size: u64,
    head: u64,
    tail: u64,
    next_lsn: u64,
    pending: Pending,
    /// The last checkpoint's changes, emptied with their room kept: the
    /// next `pending`, so that under steady writes it does not grow from
    /// nothing at each checkpoint. Dropped when a checkpoint ends with
    /// nothing new pending ([`pending::RECYCLED_ROOM`]).
    spare: Pending,
    /// When the oldest pending change was logged, as far as `poll` saw.
    pending_since: Option<Instant>,
    /// Recovery replayed frames: checkpoint them at the next `poll`.
    checkpoint_soon: bool,
    in_flight: bool,
    /// A checkpoint failed; `poll` sets `retry_at` from it.
    checkpoint_failed: bool,
    retry_at: Option<Instant>,
    /// A log write or sync failed: nothing is logged until `load`.
    broken: bool,
    /// Encoding buffer, reused.
    frame: Vec<u8>,
    counters: StoreCounters,
    /// The usage history's floor, in ns since the epoch
    /// ([`set_usage_floor`](Self::set_usage_floor)).
    usage_floor: u64,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("head", &self.head)
            .field("tail", &self.tail)
            .field("size", &self.size)
            .field("next_lsn", &self.next_lsn)
            .finish()
    }
}

impl Store {
    /// Opens the database at `path` and its log beside it, creating either
    /// whole when missing, and takes the database's lock.
    ///
    /// # Errors
    /// [`StoreError::Locked`] if another process holds it,
    /// [`StoreError::Access`] if it cannot be created or opened,
    /// [`StoreError::Unreadable`] if it is not a redb file.
    pub fn open(path: &Path, options: &StoreOptions) -> Result<Store, StoreError> {
        let db = open_or_create_db(path)?;
        // Under the lock: what a cut left half-made is nobody's.
        let log_path = files::log_path(path);
        files::remove_stray_temporaries(path);
        files::remove_stray_temporaries(&log_path);
        let log_size = options.log_size.max(MIN_LOG_SIZE) / frame::ALIGN * frame::ALIGN;
        let log =
            files::open_log(&log_path, log_size).map_err(|e| match files::access_problem(&e) {
                Some(problem) => StoreError::Access {
                    path: log_path.clone(),
                    action: "create or open the log",
                    problem,
                },
                None => {
                    StoreError::Open(format!("cannot open the log {}: {e}", log_path.display()))
                }
            })?;
        let reopen_path = path.to_path_buf();
        let opener: Opener = Box::new(move || open_database(&reopen_path));
        Store::with_backends(path, db, opener, Arc::new(log), options)
    }

    /// A store over an open database, the opener that reopens it after a
    /// failure, and a log; `path` is only used in messages.
    ///
    /// # Errors
    /// [`StoreError::Open`] if the worker thread cannot start or the log is
    /// too small.
    pub fn with_backends(
        path: &Path,
        db: Database,
        opener: Opener,
        log: Arc<dyn LogIo>,
        options: &StoreOptions,
    ) -> Result<Store, StoreError> {
        let size = log
            .len()
            .map_err(|e| StoreError::Open(format!("cannot read the log's size: {e}")))?;
        if size < MIN_LOG_SIZE {
            return Err(StoreError::Open(format!(
                "the log is {size} bytes, smaller than the minimum {MIN_LOG_SIZE}"
            )));
        }
        let engine = Engine {
            tables: Tables::new(db, opener, options.usage_retention, options.compact_at),
            log: Arc::clone(&log),
        };
        let worker = if options.background {
            Worker::spawn(engine)?
        } else {
            Worker::inline(engine)
        };
        Ok(Store {
            path: path.to_path_buf(),
            log,
            options: options.clone(),
            worker,
            size,
            head: 0,
            tail: 0,
            next_lsn: 1,
            pending: Pending::default(),
            spare: Pending::default(),
            pending_since: None,
            checkpoint_soon: false,
            in_flight: false,
            checkpoint_failed: false,
            retry_at: None,
            broken: true,
            frame: Vec::new(),
            usage_floor: 0,
            counters: StoreCounters {
                log_size: size,
                ..StoreCounters::default()
            },
        })
    }

    /// The database's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the state from disk: redb's tables with the log replayed over
    /// them. Must be called before the first commit, and after any failed
    /// one. Replayed frames are checkpointed at the next [`Store::poll`].
    ///
    /// # Errors
    /// [`StoreError::Io`] if the database or the log cannot be read.
    pub fn load(&mut self) -> Result<Loaded, StoreError> {
        while self.in_flight {
            let done = self.worker.wait()?;
            self.take(done);
        }
        self.worker.recover();
        let recovered = loop {
            match self.worker.wait()? {
                Done::Recovered(result) => break result?,
                done => self.take(done),
            }
        };
        self.size = recovered.size;
        self.tail = recovered.checkpointed.position;
        self.head = recovered.head;
        self.next_lsn = recovered.next_lsn;
        self.pending = recovered.pending;
        self.pending_since = None;
        self.checkpoint_soon = !self.pending.is_empty();
        self.broken = false;
        self.counters.log_size = self.size;
        self.counters.log_used = self.head - self.tail;
        self.usage_floor = recovered.loaded.usage_floor;
        if let Some((offset, stop)) = &recovered.loaded.torn_tail {
            warn!(offset, reason = %stop, "the log ends with a frame that was never acknowledged; it is ignored");
        }
        Ok(recovered.loaded)
    }

    /// Makes `changes` durable (no events).
    ///
    /// # Errors
    /// As [`Store::commit_batch`].
    pub fn commit(&mut self, changes: &[Change]) -> Result<(), StoreError> {
        self.commit_batch(changes, &Arc::default(), 0, 0)
    }

    /// Makes `changes` and their `events` durable: one frame, one write,
    /// one `fdatasync`. At the next checkpoint, events numbered below
    /// `keep_events_from` are deleted from the history, all at once, when
    /// the oldest stored one is more than `trim_slack` below it.
    ///
    /// # Errors
    /// [`StoreError::Full`]: nothing was written, the store is usable.
    /// [`StoreError::Io`]: the batch may or may not be on disk; call
    /// [`Store::load`] to learn what is.
    pub fn commit_batch(
        &mut self,
        changes: &[Change],
        events: &Arc<EventLines>,
        keep_events_from: u64,
        trim_slack: u64,
    ) -> Result<(), StoreError> {
        if self.broken {
            return Err(StoreError::Io(
                "the log is not usable until the store is reloaded".into(),
            ));
        }
        let bounds = (keep_events_from, trim_slack);
        let mut slot = Slot {
            lsn: self.next_lsn,
            position: self.head,
            size: self.size,
        };
        let mut frame = std::mem::take(&mut self.frame);
        frame.clear();
        frame::encode_batch(&mut frame, slot, changes, events.iter(), bounds);
        let len = frame.len() as u64;
        if len > self.size / MAX_FRAME_DIVISOR {
            self.frame = frame;
            return Err(StoreError::Full(format!(
                "this batch of {} changes needs {len} bytes of log, more than half of the {}-byte log; retry with fewer requests at once, or start the daemon with a larger --log-size",
                changes.len(),
                self.size
            )));
        }
        let (position, marker) = frame::place(self.head, len, self.size);
        if !self.make_room(position + len) {
            self.frame = frame;
            return Err(StoreError::Full(
                "the write-ahead log is full because it cannot be checkpointed into the database (see the daemon's log; is the disk full?); nothing was changed; retry later".into(),
            ));
        }
        if position != self.head {
            slot.position = position;
            frame.clear();
            frame::encode_batch(&mut frame, slot, changes, events.iter(), bounds);
        }
        let result = self.write_frame(&frame, marker, slot);
        self.frame = frame;
        if let Err(e) = result {
            self.broken = true;
            return Err(StoreError::Io(format!("writing the log failed: {e}")));
        }
        self.head = position + len;
        self.next_lsn += 1;
        let mark = LogMark {
            lsn: slot.lsn,
            position: self.head,
        };
        self.pending.add(changes, events, bounds, mark);
        self.counters.log_frames += 1;
        self.counters.log_bytes += len;
        self.counters.log_used = self.head - self.tail;
        Ok(())
    }

    /// One write (two when the ring wraps with a marker), one sync.
    fn write_frame(&mut self, frame: &[u8], marker: bool, slot: Slot) -> io::Result<()> {
        if marker {
            let mut wrap = Vec::with_capacity(frame::HEADER_LEN);
            frame::encode_wrap(
                &mut wrap,
                Slot {
                    position: self.head,
                    ..slot
                },
            );
            self.log.write_at(self.head % self.size, &wrap)?;
        }
        self.log.write_at(slot.position % self.size, frame)?;
        self.log.sync_data()
    }

    /// Waits for checkpoints until the ring has room up to `end`. Starts
    /// one if none runs; gives up after one that fails.
    fn make_room(&mut self, end: u64) -> bool {
        let mut waited = 0;
        while end - self.tail > self.size {
            if waited == 2 || (self.checkpoint_failed && !self.in_flight) {
                return false;
            }
            if !self.in_flight {
                if self.pending.is_empty() || self.retry_at.is_some() {
                    return false;
                }
                self.start_checkpoint();
            }
            match self.worker.wait() {
                Ok(done) => self.take(done),
                Err(e) => {
                    error!(error = %e, "checkpoint worker unavailable");
                    return false;
                }
            }
            waited += 1;
        }
        true
    }

    /// Collects finished checkpoints and starts one when due: after the
    /// interval since the oldest pending change, at the change threshold,
    /// or at a quarter of the log.
    pub fn poll(&mut self, mono: Instant) {
        // Only a checkpoint in flight reports back; asking the channel on
        // every turn cost one a fifth of its bookkeeping (callgrind).
        while self.in_flight
            && let Some(done) = self.worker.try_done()
        {
            self.take(done);
        }
        if self.checkpoint_failed {
            self.checkpoint_failed = false;
            self.retry_at = Some(mono + CHECKPOINT_RETRY);
        }
        if self.retry_at.is_some_and(|at| at <= mono) {
            self.retry_at = None;
        }
        if self.pending.is_empty() {
            self.pending_since = None;
            return;
        }
        let since = *self.pending_since.get_or_insert(mono);
        let due = self.checkpoint_soon
            || mono >= since + self.options.checkpoint_interval
            || self.pending.changes() >= self.options.checkpoint_changes
            || (self.head - self.tail) * CHECKPOINT_AT_FILL_DIVISOR >= self.size;
        if due && !self.in_flight && self.retry_at.is_none() && !self.broken {
            self.start_checkpoint();
        }
    }

    /// When [`Store::poll`] must run next to start a checkpoint on time.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.pending.is_empty() || self.in_flight {
            return None;
        }
        let due = self
            .pending_since
            .map(|since| since + self.options.checkpoint_interval);
        match (due, self.retry_at) {
            (Some(due), Some(retry)) => Some(due.max(retry)),
            (due, retry) => due.or(retry),
        }
    }

    /// Writes everything pending to redb now, waiting for it.
    ///
    /// # Errors
    /// [`StoreError::Io`] if the checkpoint fails; its changes stay
    /// pending (and in the log).
    pub fn checkpoint_now(&mut self) -> Result<(), StoreError> {
        while self.in_flight {
            let done = self.worker.wait()?;
            self.take(done);
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        self.start_checkpoint();
        while self.in_flight {
            let done = self.worker.wait()?;
            self.take(done);
        }
        if self.checkpoint_failed {
            self.checkpoint_failed = false;
            return Err(StoreError::Io("the checkpoint failed".into()));
        }
        Ok(())
    }

    /// Counters for the metrics page.
    pub fn counters(&self) -> StoreCounters {
        self.counters
    }

    /// Ended holds before `floor` (ns since the epoch) are no longer in
    /// the usage history, which keeps its latest holds only
    /// (`--usage-max-holds`; [`History::floor`](crate::usage::History::floor)):
    /// the next checkpoints drop them from the database too, except the
    /// events that trip or re-arm a name, which stay for the whole
    /// retention, and store the floor with the log's mark, so that a
    /// restart recovers no hold from before it ([`Loaded::usage_floor`]).
    /// Not logged: a floor lost to a crash is set again by the next
    /// commit. It may move back (after the wall clock was set back), and
    /// the store follows.
    pub fn set_usage_floor(&mut self, floor: u64) {
        self.usage_floor = floor;
    }

    fn start_checkpoint(&mut self) {
        let mut pending = std::mem::replace(&mut self.pending, std::mem::take(&mut self.spare));
        pending.set_usage_floor(self.usage_floor);
        self.pending_since = None;
        self.checkpoint_soon = false;
        self.in_flight = true;
        self.worker.checkpoint(pending);
    }

    fn take(&mut self, done: Done) {
        match done {
            Done::Checkpointed(Ok((mark, spent, compacted))) => {
                if self.pending.is_empty() {
                    // Idle: nothing came while it ran. Both rooms go back
                    // to the system (a large one is mapped pages of its
                    // own), to be grown again by the next burst.
                    self.pending = Pending::default();
                    self.spare = Pending::default();
                } else {
                    self.spare = spent;
                }
                self.in_flight = false;
                self.tail = mark.position;
                self.counters.checkpoints += 1;
                if let Some(rows) = compacted {
                    self.counters.compactions += 1;
                    self.counters.compacted_rows += rows;
                }
                self.counters.log_used = self.head - self.tail;
            }
            Done::Checkpointed(Err((e, mut failed))) => {
                self.in_flight = false;
                self.checkpoint_failed = true;
                self.counters.checkpoint_failures += 1;
                error!(error = %e, changes = failed.changes(), "checkpoint failed; the changes stay in the log and it is retried");
                failed.absorb(std::mem::take(&mut self.pending));
                self.pending = failed;
            }
            Done::Recovered(_) => {
                warn!("an unexpected recovery report was dropped");
            }
        }
    }
}

/// Opens the database at `path`, creating it whole if it does not exist.
fn open_or_create_db(path: &Path) -> Result<Database, StoreError> {
    let access = |action, e: &io::Error| {
        files::access_problem(e).map(|problem| StoreError::Access {
            path: path.to_path_buf(),
            action,
            problem,
        })
    };
    if !path.exists() {
        let created = files::create_whole(path, |temp| {
            redb::Builder::new()
                .set_cache_size(DATABASE_CACHE)
                .create(temp)
                .map(drop)
                .map_err(|e| match e {
                    DatabaseError::Storage(redb::StorageError::Io(io)) => io,
                    other => io::Error::other(other.to_string()),
                })
        });
        match created {
            Ok(made) => {
                if made {
                    info!(path = %path.display(), "created a new database");
                }
            }
            Err(e) => {
                return Err(access("create the database", &e).unwrap_or_else(|| {
                    StoreError::Open(format!("cannot create {}: {e}", path.display()))
                }));
            }
        }
    }
    open_database(path).map_err(|e| match e {
        DatabaseError::DatabaseAlreadyOpen => StoreError::Locked(path.to_path_buf()),
        DatabaseError::Storage(redb::StorageError::Io(io)) => access("open the database", &io)
            .unwrap_or_else(|| StoreError::Unreadable {
                path: path.to_path_buf(),
                reason: io.to_string(),
            }),
        DatabaseError::Storage(storage) => StoreError::Unreadable {
            path: path.to_path_buf(),
            reason: storage.to_string(),
        },
        other => StoreError::Open(other.to_string()),
    })
}

/// Opens the database file with the daemon's cache size.
fn open_database(path: &Path) -> Result<Database, DatabaseError> {
    redb::Builder::new()
        .set_cache_size(DATABASE_CACHE)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::fixtures::{put, task};
    use super::*;
    use crate::tasks::{Removal, TaskName};
    use crate::testing::faulty::{self, FaultOn, FaultSwitch};
    use crate::time::Timestamp;
    use redb::ReadableDatabase;
    use std::collections::BTreeMap;

    fn inline() -> StoreOptions {
        StoreOptions {
            log_size: MIN_LOG_SIZE,
            background: false,
            ..StoreOptions::default()
        }
    }

    fn sorted(mut tasks: Vec<Task>) -> Vec<Task> {
        tasks.sort_by(|a, b| a.name.cmp(&b.name));
        tasks
    }

    #[test]
    fn commits_survive_reopening_from_the_log_and_from_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.redb");
        for background in [false, true] {
            let options = StoreOptions {
                background,
                ..inline()
            };
            {
                let mut store = Store::open(&path, &options).unwrap();
                store.load().unwrap();
                store.commit(&[put("a", 10), put("b", 20)]).unwrap();
                store
                    .commit(&[Change::Remove {
                        name: TaskName::parse("a").unwrap(),
                        cause: Removal::Deleted,
                    }])
                    .unwrap();
            }
            // Not checkpointed: the log replays.
            let mut store = Store::open(&path, &options).unwrap();
            let loaded = store.load().unwrap();
            assert_eq!(loaded.tasks, vec![task("b", 20)]);
            assert!(loaded.replayed >= 2, "{loaded:?}");
            store.checkpoint_now().unwrap();
            drop(store);
            // Checkpointed: nothing to replay.
            let mut store = Store::open(&path, &options).unwrap();
            let loaded = store.load().unwrap();
            assert_eq!(loaded.tasks, vec![task("b", 20)]);
            assert_eq!(loaded.replayed, 0);
            store.commit(&[put("a", 30)]).unwrap();
            store.checkpoint_now().unwrap();
            store
                .commit(&[Change::Remove {
                    name: TaskName::parse("a").unwrap(),
                    cause: Removal::Expired,
                }])
                .unwrap();
        }
    }

    /// A `created` event numbered `seq`, for task `t{seq}`, at `seq` ns.
    fn created_event(seq: u64, reason: Option<&str>) -> crate::events::Event {
        crate::events::Event {
            seq,
            at: Timestamp::from_nanos(seq),
            kind: crate::events::EventKind::Created,
            task: Some(TaskName::parse(&format!("t{seq}")).unwrap()),
            expires_at: None,
            step_ns: None,
            reason: reason.map(str::to_owned),
            pid: None,
            ended: None,
            limit: None,
        }
    }

    #[test]
    fn a_checkpoint_stores_no_event_past_the_retained_history() {
        use crate::events::{Event, EventLines};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.redb");
        let event = |seq: u64| created_event(seq, None);
        {
            let mut store = Store::open(&path, &inline()).unwrap();
            store.load().unwrap();
            for (seqs, keep_from) in [([1, 2], 0), ([3, 4], 2), ([5, 6], 5)] {
                let events: Vec<Event> = seqs.into_iter().map(event).collect();
                // A slack wide enough that trimming alone would keep them.
                store
                    .commit_batch(&[], &Arc::new(EventLines::new(&events)), keep_from, 100)
                    .unwrap();
            }
            store.checkpoint_now().unwrap();
        }
        let mut store = Store::open(&path, &inline()).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.replayed, 0, "all of it from the checkpoint");
        assert_eq!(seqs(&loaded.events), [5, 6]);
    }

    #[test]
    fn the_history_is_stored_in_chunks_trimmed_whole_and_old_rows_still_load() {
        use crate::events::{Event, EventLines};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.redb");
        // 4 KiB reasons: a chunk holds about 60 of them.
        let reason = "r".repeat(4096);
        // Room for all 200 events before the log asks for a checkpoint.
        let options = StoreOptions {
            log_size: 8 << 20,
            ..inline()
        };
        let event = |seq: u64| created_event(seq, Some(&reason));
        let rows = |path: &std::path::Path| -> Vec<(u64, usize)> {
            let db = Database::open(path).unwrap();
            let txn = db.begin_read().unwrap();
            let table = txn.open_table(tables::EVENTS).unwrap();
            redb::ReadableTable::iter(&table)
                .unwrap()
                .map(|row| {
                    let (first, chunk) = row.unwrap();
                    let lines = chunk.value().iter().filter(|&&b| b == b'\n').count();
                    (first.value(), lines)
                })
                .collect()
        };
        // Written before chunks existed: one line a row.
        drop(Store::open(&path, &options).unwrap());
        {
            let db = Database::open(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut table = txn.open_table(tables::EVENTS).unwrap();
                for seq in 1..=3 {
                    table.insert(seq, event(seq).to_line().as_slice()).unwrap();
                }
            }
            txn.commit().unwrap();
        }
        let mut store = Store::open(&path, &options).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(seqs(&loaded.events), [1, 2, 3]);
        // 200 events in one checkpoint, nothing trimmed: several chunks,
        // each under the bound, the old rows untouched.
        for first in (4..=203).step_by(5) {
            let batch: Vec<Event> = (first..first + 5).map(event).collect();
            store
                .commit_batch(&[], &Arc::new(EventLines::new(&batch)), 0, 0)
                .unwrap();
        }
        store.checkpoint_now().unwrap();
        drop(store);
        let stored = rows(&path);
        assert_eq!(&stored[..3], &[(1, 1), (2, 1), (3, 1)]);
        let chunks = &stored[3..];
        assert!(chunks.len() >= 3, "{stored:?}");
        assert_eq!(chunks.iter().map(|(_, n)| n).sum::<usize>(), 200);
        let per_chunk = tables::EVENT_CHUNK_BYTES / event(4).to_line().len();
        assert!(chunks.iter().all(|&(_, n)| n <= per_chunk), "{chunks:?}");
        // Keep from the middle of a chunk: older chunks go, that one stays
        // whole, and every retained event loads.
        let keep_from = chunks[1].0 + 5;
        let mut store = Store::open(&path, &options).unwrap();
        store.load().unwrap();
        store
            .commit_batch(&[], &Arc::new(EventLines::new(&[event(204)])), keep_from, 0)
            .unwrap();
        store.checkpoint_now().unwrap();
        drop(store);
        let stored = rows(&path);
        assert_eq!(stored[0].0, chunks[1].0, "{stored:?}");
        let mut store = Store::open(&path, &options).unwrap();
        let loaded = store.load().unwrap();
        // What that chunk holds before it is past the history.
        let expected: Vec<u64> = (keep_from..=204).collect();
        assert_eq!(seqs(&loaded.events), expected);
    }

    /// The sequence numbers of `events`, in their order.
    fn seqs(events: &[crate::events::Event]) -> Vec<u64> {
        events.iter().map(|event| event.seq).collect()
    }

    /// Commits `events` alone, the history kept from `keep_from` (a slack
    /// of 100, so that trimming waits), and checkpoints them.
    fn checkpoint_events(store: &mut Store, events: &[crate::events::Event], keep_from: u64) {
        let lines = Arc::new(crate::events::EventLines::new(events));
        store.commit_batch(&[], &lines, keep_from, 100).unwrap();
        store.checkpoint_now().unwrap();
    }

    /// An event of `task` at `now`, or a hold of a minute by uid 1000
    /// running `command` that ended at `ended` (with a minute's limit if
    /// `capped`).
    fn usage_event(
        seq: u64,
        kind: crate::events::EventKind,
        task: &str,
        now: Timestamp,
        ended: Option<Timestamp>,
        command: &str,
    ) -> crate::events::Event {
        use crate::events::{EndedHold, Event, EventKind};
        Event {
            seq,
            at: ended.unwrap_or(now),
            kind,
            task: Some(TaskName::parse(task).unwrap()),
            expires_at: None,
            step_ns: None,
            reason: None,
            pid: None,
            ended: ended.map(|ended_at| EndedHold {
                started_at: ended_at.saturating_sub(Duration::from_secs(60)),
                ended_at,
                uid: Some(1000),
                command: Some(command.into()),
                parent_command: None,
            }),
            limit: (kind == EventKind::Capped).then_some(Duration::from_secs(60)),
        }
    }

    #[test]
    fn ended_holds_and_rearms_are_kept_for_the_usage_retention_and_nothing_else() {
        use crate::events::EventKind;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.redb");
        let now = crate::time::wall_now();
        let ago = |hours: u64| now.saturating_sub(Duration::from_secs(hours * 3600));
        let event = |seq: u64, kind: EventKind, ended: Option<Timestamp>| {
            usage_event(seq, kind, "loop", now, ended, "curl")
        };
        let options = StoreOptions {
            usage_retention: Duration::from_secs(48 * 3600),
            ..inline()
        };
        let usage_rows = |path: &std::path::Path| -> Vec<((u64, u64), usize)> {
            use redb::ReadableTable;
            let db = redb::Database::open(path).unwrap();
            let txn = db.begin_read().unwrap();
            let table = txn.open_table(tables::USAGE).unwrap();
            let lines = |chunk: &[u8]| chunk.iter().filter(|&&b| b == b'\n').count();
            table
                .iter()
                .unwrap()
                .map(|row| {
                    let (key, value) = row.unwrap();
                    (key.value(), lines(value.value()))
                })
                .collect()
        };
        {
            let mut store = Store::open(&path, &options).unwrap();
            store.load().unwrap();
            let older = [
                event(1, EventKind::Deleted, Some(ago(72))),
                event(2, EventKind::Created, None),
            ];
            let newer = [
                event(3, EventKind::Expired, Some(ago(24))),
                event(4, EventKind::Rearmed, None),
                event(5, EventKind::Refreshed, None),
                // Kept in the chunk with the others, left out at load.
                event(6, EventKind::Deleted, Some(ago(50))),
            ];
            for events in [&older[..], &newer[..]] {
                checkpoint_events(&mut store, events, 0);
            }
        }
        // One chunk per checkpoint, keyed by its latest instant. The
        // first one's only usage event is past the retention, but the
        // event history (every event, here) still holds it: it stays, and
        // is the history's only copy of it.
        assert_eq!(
            usage_rows(&path),
            [((ago(72).as_nanos(), 1), 1), ((now.as_nanos(), 3), 3)]
        );
        let mut store = Store::open(&path, &options).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.replayed, 0, "all of it from the checkpoint");
        assert_eq!(seqs(&loaded.events), [1, 2, 3, 4, 5, 6]);
        assert_eq!(
            seqs(&loaded.usage),
            [3, 4],
            "the holds ended 72 h and 50 h ago are past the 48 h kept"
        );
        assert_eq!(loaded.usage[0].ended.as_ref().unwrap().ended_at, ago(24));
        // Once the event history has moved past it, it goes.
        checkpoint_events(&mut store, &[event(7, EventKind::Created, None)], 3);
        drop(store);
        assert_eq!(usage_rows(&path), [((now.as_nanos(), 3), 3)]);
        let mut store = Store::open(&path, &options).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(seqs(&loaded.events), [3, 4, 5, 6, 7]);
        assert_eq!(seqs(&loaded.usage), [3, 4]);
    }

    #[test]
    fn the_lines_of_ended_holds_are_stored_once_and_older_databases_load_as_they_were() {
        use crate::events::EventKind;
        use redb::ReadableTable;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.redb");
        let now = crate::time::wall_now();
        let event = |seq: u64, kind: EventKind, ended: bool| {
            usage_event(seq, kind, "loop", now, ended.then_some(now), "curl")
        };
        fn lines_in<K: redb::Key + 'static>(
            path: &std::path::Path,
            table: redb::TableDefinition<K, &[u8]>,
        ) -> usize {
            let db = redb::Database::open(path).unwrap();
            let txn = db.begin_read().unwrap();
            let table = txn.open_table(table).unwrap();
            let lines = |chunk: &[u8]| chunk.iter().filter(|&&b| b == b'\n').count();
            table
                .iter()
                .unwrap()
                .map(|row| lines(row.unwrap().1.value()))
                .sum()
        }
        // A database of the release before: every event in the history's
        // table, the ended holds in the usage table as well, no
        // events.from.
        drop(Store::open(&path, &inline()).unwrap());
        {
            let db = Database::open(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut events = txn.open_table(tables::EVENTS).unwrap();
                let mut usage = txn.open_table(tables::USAGE).unwrap();
                // Its history was trimmed to event 2 on; the hold event 1
                // ended stays in the usage table.
                let mut all = Vec::new();
                let mut ended = Vec::new();
                for (seq, kind) in [
                    (1, EventKind::Deleted),
                    (2, EventKind::Created),
                    (3, EventKind::Deleted),
                ] {
                    let event = event(seq, kind, kind == EventKind::Deleted);
                    if seq >= 2 {
                        event.write_line(&mut all);
                    }
                    if event.usage_instant().is_some() {
                        event.write_line(&mut ended);
                    }
                }
                events.insert(2, all.as_slice()).unwrap();
                usage.insert((now.as_nanos(), 1), ended.as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        let mut store = Store::open(&path, &inline()).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(seqs(&loaded.events), [2, 3]);
        assert_eq!(seqs(&loaded.usage), [1, 3]);
        // This release writes an ended hold's line to the usage table
        // only; the older chunks load beside it, each event once. A longer
        // --event-retention (keep from 0) does not reach back past what
        // the older release kept: event 1 stays out of the history.
        let batch = [
            event(4, EventKind::Created, false),
            event(5, EventKind::Deleted, true),
            event(6, EventKind::Expired, true),
            event(7, EventKind::Idle, false),
        ];
        checkpoint_events(&mut store, &batch, 0);
        drop(store);
        assert_eq!(lines_in(&path, tables::EVENTS), 2 + 2);
        assert_eq!(lines_in(&path, tables::USAGE), 2 + 2);
        let mut store = Store::open(&path, &inline()).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(seqs(&loaded.events), [2, 3, 4, 5, 6, 7]);
        assert_eq!(seqs(&loaded.usage), [1, 3, 5, 6]);
        assert_eq!(loaded.events[3], batch[1]);
    }

    #[test]
    fn holds_below_the_usage_floor_leave_the_database_but_trips_stay() {
        use crate::events::EventKind;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.redb");
        let now = crate::time::wall_now();
        let ago = |hours: u64| now.saturating_sub(Duration::from_secs(hours * 3600));
        // A command line that names a trip: only the event's own member
        // counts.
        let event = |seq: u64, kind: EventKind, ended: Option<Timestamp>| {
            let task = format!("job-{seq}");
            usage_event(seq, kind, &task, now, ended, "echo \"event\":\"capped\"")
        };
        let options = StoreOptions {
            usage_retention: Duration::from_secs(48 * 3600),
            ..inline()
        };
        let mut store = Store::open(&path, &options).unwrap();
        store.load().unwrap();
        let chunks = [
            vec![
                event(1, EventKind::Deleted, Some(ago(30))),
                event(2, EventKind::Capped, Some(ago(29))),
            ],
            vec![event(3, EventKind::Expired, Some(ago(20)))],
            vec![
                event(4, EventKind::Deleted, Some(ago(1))),
                event(5, EventKind::Rearmed, None),
            ],
        ];
        for events in &chunks {
            checkpoint_events(&mut store, events, 0);
        }
        // The history kept only holds that ended in the last 10 hours. The
        // event history still holds event 2 on: below the floor, the hold
        // event 1 ended goes, and event 3's stays for the event history.
        store.set_usage_floor(ago(10).as_nanos());
        checkpoint_events(&mut store, &[event(6, EventKind::Created, None)], 2);
        drop(store);
        let mut store = Store::open(&path, &options).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(seqs(&loaded.events), [2, 3, 4, 5, 6]);
        assert_eq!(seqs(&loaded.usage), [2, 3, 4, 5]);
        // The event history keeps event 7 on: the ended holds before it are
        // no longer needed there either.
        checkpoint_events(&mut store, &[event(7, EventKind::Created, None)], 7);
        drop(store);
        let mut store = Store::open(&path, &options).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(
            seqs(&loaded.usage),
            [2, 4, 5],
            "below the floor only the trip stays; the rest is past it"
        );
        assert_eq!(seqs(&loaded.events), [7]);
        assert_eq!(crate::usage::tripped(&loaded.usage).len(), 1);
        // The floor is stored with the checkpoint: a restart recovers no
        // hold from before it.
        assert_eq!(loaded.usage_floor, ago(10).as_nanos());
    }

    #[test]
    fn a_second_open_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.redb");
        let _first = Store::open(&path, &inline()).unwrap();
        assert!(matches!(
            Store::open(&path, &inline()),
            Err(StoreError::Locked(_))
        ));
    }

    #[test]
    fn a_foreign_file_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.redb");
        let content = b"these are somebody's notes, not a database\n".repeat(100);
        std::fs::write(&path, &content).unwrap();
        let error = Store::open(&path, &inline()).unwrap_err();
        assert!(matches!(error, StoreError::Unreadable { .. }), "{error}");
        assert_eq!(std::fs::read(&path).unwrap(), content);
        assert!(
            !files::log_path(&path).exists(),
            "no log beside a foreign file"
        );
    }

    #[test]
    fn a_missing_directory_is_named_not_called_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("tasks.redb");
        let error = Store::open(&path, &inline()).unwrap_err();
        assert!(
            matches!(
                error,
                StoreError::Access {
                    problem: "its directory does not exist",
                    ..
                }
            ),
            "{error}"
        );
        assert!(error.to_string().contains("--db"), "{error}");
    }

    /// The quarantine table's rows, key and bytes, read from the closed
    /// database.
    fn quarantined(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
        let db = Database::open(path).unwrap();
        let txn = db.begin_read().unwrap();
        let quarantine = txn.open_table(tables::QUARANTINE).unwrap();
        redb::ReadableTable::iter(&quarantine)
            .unwrap()
            .map(|row| {
                let (key, value) = row.unwrap();
                (key.value().to_vec(), value.value().to_vec())
            })
            .collect()
    }

    #[test]
    fn damaged_rows_are_quarantined_not_served() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.redb");
        drop(Store::open(&path, &inline()).unwrap());
        {
            let db = Database::open(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut tasks = txn.open_table(tables::TASKS).unwrap();
                let good = crate::record::encode(&task("good", 5));
                tasks.insert(b"good".as_slice(), good.as_slice()).unwrap();
                let mut flipped = crate::record::encode(&task("bad", 5));
                flipped[3] ^= 0x40;
                tasks.insert(b"bad".as_slice(), flipped.as_slice()).unwrap();
                tasks
                    .insert(b"short".as_slice(), b"\x01\x02".as_slice())
                    .unwrap();
            }
            txn.commit().unwrap();
        }
        let mut store = Store::open(&path, &inline()).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.tasks, vec![task("good", 5)]);
        let keys: Vec<_> = loaded.quarantined.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["bad", "short"]);
        drop(store);
        // Moved, not deleted; and not reported again.
        assert_eq!(quarantined(&path).len(), 2);
        let mut store = Store::open(&path, &inline()).unwrap();
        assert!(store.load().unwrap().quarantined.is_empty());
        drop(store);
        // A second bad row of a name already quarantined goes beside the
        // first, which stays byte for byte.
        let mut again = crate::record::encode(&task("bad", 7));
        again[4] ^= 0x01;
        {
            let db = Database::open(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(tables::TASKS)
                .unwrap()
                .insert(b"bad".as_slice(), again.as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        let mut store = Store::open(&path, &inline()).unwrap();
        let keys: Vec<_> = store
            .load()
            .unwrap()
            .quarantined
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["bad"]);
        drop(store);
        let mut first = crate::record::encode(&task("bad", 5));
        first[3] ^= 0x40;
        assert_eq!(
            quarantined(&path),
            [
                (b"bad".to_vec(), first),
                (b"bad~2".to_vec(), again),
                (b"short".to_vec(), b"\x01\x02".to_vec()),
            ]
        );
    }

    #[test]
    fn the_log_wraps_many_times_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.redb");
        let mut store = Store::open(&path, &inline()).unwrap();
        store.load().unwrap();
        let start = Instant::now();
        let mut expected = BTreeMap::new();
        let mut checkpoints = 0;
        for i in 0..4000u64 {
            let name = format!("t{}", i % 50);
            store.commit(&[put(&name, i)]).unwrap();
            expected.insert(name.clone(), task(&name, i));
            store.poll(start + Duration::from_millis(i));
            if i % 997 == 0 {
                // A restart now and then, with whatever is in the log.
                checkpoints += store.counters().checkpoints;
                drop(store);
                store = Store::open(&path, &inline()).unwrap();
                let loaded = store.load().unwrap();
                assert_eq!(
                    sorted(loaded.tasks),
                    expected.values().cloned().collect::<Vec<_>>()
                );
            }
        }
        checkpoints += store.counters().checkpoints;
        assert!(store.head > 4 * store.size, "wrapped: {store:?}");
        assert!(checkpoints > 4, "{checkpoints} checkpoints");
        drop(store);
        let mut store = Store::open(&path, &inline()).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(
            sorted(loaded.tasks),
            expected.into_values().collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_failed_checkpoint_keeps_the_log_until_it_is_full_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.redb");
        let db_switch = FaultSwitch::new();
        let log_switch = FaultSwitch::new();
        let mut store = faulty::store_with(&path, &db_switch, &log_switch, &inline()).unwrap();
        store.load().unwrap();
        db_switch.fail_after(0, FaultOn::Writes, libc::ENOSPC);
        let start = Instant::now();
        let mut acknowledged = Vec::new();
        let mut full = None;
        for i in 0..10_000u64 {
            let name = format!("t{i}");
            match store.commit(&[put(&name, i)]) {
                Ok(()) => acknowledged.push(task(&name, i)),
                Err(e) => {
                    full = Some(e);
                    break;
                }
            }
            store.poll(start + Duration::from_millis(i * 10));
        }
        let full = full.expect("the log fills while checkpoints fail");
        assert!(matches!(full, StoreError::Full(_)), "{full}");
        assert!(store.counters().checkpoint_failures > 0);
        assert!(acknowledged.len() > 100, "the log took writes meanwhile");
        // Still usable: a refused batch broke nothing.
        assert!(matches!(
            store.commit(&[put("again", 1)]),
            Err(StoreError::Full(_))
        ));
        drop(store);
        db_switch.heal();
        let mut store = faulty::store_with(&path, &db_switch, &log_switch, &inline()).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(sorted(loaded.tasks), sorted(acknowledged));
        store.checkpoint_now().unwrap();
        store.commit(&[put("after", 1)]).unwrap();
    }

    #[test]
    fn a_torn_tail_is_ignored_then_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.redb");
        let log_path = files::log_path(&path);
        let mut store = Store::open(&path, &inline()).unwrap();
        store.load().unwrap();
        store.commit(&[put("kept", 1)]).unwrap();
        let head = store.head;
        store.commit(&[put("torn", 2)]).unwrap();
        let end = store.head;
        drop(store);
        // Half of the last frame reached the disk.
        let mut bytes = std::fs::read(&log_path).unwrap();
        let middle = ((head + end) / 2) as usize;
        bytes[middle..end as usize].fill(0);
        std::fs::write(&log_path, &bytes).unwrap();

        let mut store = Store::open(&path, &inline()).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.tasks, vec![task("kept", 1)]);
        let (offset, reason) = loaded.torn_tail.expect("the tear is reported");
        assert_eq!(offset, head);
        assert_eq!(reason, Stop::Checksum);
        store.commit(&[put("next", 3)]).unwrap();
        drop(store);
        let mut store = Store::open(&path, &inline()).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(sorted(loaded.tasks), vec![task("kept", 1), task("next", 3)]);
        assert!(loaded.torn_tail.is_none());
    }

    #[test]
    fn a_failed_log_write_refuses_commits_until_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.redb");
        let switch = FaultSwitch::new();
        let mut store = faulty::store(&path, &switch, &inline()).unwrap();
        store.load().unwrap();
        store.commit(&[put("a", 1)]).unwrap();
        switch.fail_once_after(1, FaultOn::Any, libc::EIO);
        assert!(matches!(
            store.commit(&[put("b", 2)]),
            Err(StoreError::Io(_))
        ));
        assert!(matches!(
            store.commit(&[put("c", 3)]),
            Err(StoreError::Io(_))
        ));
        // The write reached the page cache before the sync failed: the
        // reload finds it, and memory follows the disk.
        let loaded = store.load().unwrap();
        assert_eq!(sorted(loaded.tasks), vec![task("a", 1), task("b", 2)]);
        store.commit(&[put("c", 3)]).unwrap();
    }
}
