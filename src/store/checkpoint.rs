//! Checkpoints: the worker that writes what the log holds beyond the
//! tables ([`Pending`]) to redb and recovers the state at start-up
//! ([`Worker`]), on its own thread so that a checkpoint never stalls the
//! reactor, or inline for deterministic tests.
//!
//! The worker owns the [`Tables`]; the reactor owns the log's write side.
//! They share only the log file, which the worker reads during recovery
//! while the reactor waits for it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;

use tracing::warn;

use super::files::{LogIo, LogWindow};
use super::frame::{self, Scan, Stop};
use super::pending::{LogMark, Pending};
use super::tables::Tables;
use super::threads;
use super::{Loaded, StoreError};
use crate::events::{Event, EventLines};

/// The state found on disk: the tables plus the log replayed over them.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub loaded: Loaded,
    /// What the replayed frames hold, still to be checkpointed.
    pub pending: Pending,
    /// Where the tables stand.
    pub checkpointed: LogMark,
    /// Where the next frame goes, and its LSN.
    pub head: u64,
    pub next_lsn: u64,
    /// The ring's size.
    pub size: u64,
}

/// What the worker is asked to do.
pub(crate) enum Job {
    Checkpoint(Pending),
    Recover,
}

/// What the worker reports.
#[derive(Debug)]
pub(crate) enum Done {
    /// A checkpoint succeeded up to this mark (and hands back its changes
    /// [`recycled`](Pending::recycled), emptied on this thread, and the
    /// rows it compacted the task tables into, if it did), or failed and
    /// hands its pending changes back.
    Checkpointed(Result<(LogMark, Pending, Option<u64>), (StoreError, Pending)>),
    Recovered(Result<Recovered, StoreError>),
}

/// The tables and a read handle on the log: what checkpoints and recovery
/// need.
#[derive(Debug)]
pub(crate) struct Engine {
    pub tables: Tables,
    pub log: Arc<dyn LogIo>,
}

impl Engine {
    fn run(&mut self, job: Job) -> Done {
        match job {
            Job::Checkpoint(pending) => {
                Done::Checkpointed(match self.tables.checkpoint(&pending) {
                    Ok(compacted) => Ok((pending.mark(), pending.recycled(), compacted)),
                    Err(e) => Err((e, pending)),
                })
            }
            Job::Recover => Done::Recovered(self.recover()),
        }
    }

    /// Loads the tables, and replays over them the log frames after their
    /// mark, up to the first frame that is not the valid next one.
    ///
    /// The log is read on a thread of its own while the tables load
    /// ([`threads::both`]): the
    /// two are independent until the replay is laid over the rows, and
    /// the reactor waits for both. Over 100k tasks and 100k frames each
    /// took some 50 ms of a 240 ms start-up, one after the other.
    fn recover(&mut self) -> Result<Recovered, StoreError> {
        let size = self
            .log
            .len()
            .map_err(|e| StoreError::Io(format!("cannot read the log's size: {e}")))?;
        let mark = self.tables.mark()?;
        let log = &*self.log;
        let tables = &mut self.tables;
        let (tables, replay) =
            threads::both("replay", || tables.load(), || Replay::read(log, size, mark));
        let (mut loaded, checkpointed) = tables?;
        let replay = replay?;
        // The mark the load read is the one that counts. Nothing else
        // writes the tables, so it is the one read before; should it ever
        // differ, the log is read again from it.
        let replay = if checkpointed == mark {
            replay
        } else {
            Replay::read(log, size, checkpointed)?
        };
        let Replay {
            pending,
            replayed,
            events,
            usage,
            scan,
        } = replay;
        if replayed > 0 {
            loaded.usage.extend(usage);
            loaded.tasks = pending.overlay(std::mem::take(&mut loaded.tasks));
            loaded.events.extend(events);
            // Replayed events follow the checkpointed ones; should a number
            // repeat, the log's (later) one wins.
            loaded.events.reverse();
            loaded.events.sort_by_key(|event| event.seq);
            loaded.events.dedup_by_key(|event| event.seq);
            loaded.usage.reverse();
            loaded.usage.sort_by_key(|event| event.seq);
            loaded.usage.dedup_by_key(|event| event.seq);
        }
        loaded.replayed = replayed;
        if !scan.stop.is_clean() {
            loaded.torn_tail = Some((scan.stop_at % size.max(1), scan.stop.clone()));
        } else if matches!(scan.stop, Stop::Full) {
            warn!("the log was read once round without an end");
        }
        Ok(Recovered {
            loaded,
            pending,
            checkpointed,
            head: scan.end,
            next_lsn: scan.next_lsn,
            size,
        })
    }
}

/// The log's frames after a mark, read into what recovery needs.
struct Replay {
    /// Their changes and events, to checkpoint.
    pending: Pending,
    /// How many frames.
    replayed: usize,
    /// Their events, and those of them that are usage events, as read.
    events: Vec<Event>,
    usage: Vec<Event>,
    scan: Scan,
}

impl Replay {
    /// Scans `log`, of `size` bytes, from `mark`.
    fn read(log: &dyn LogIo, size: u64, mark: LogMark) -> Result<Replay, StoreError> {
        let mut pending = Pending::default();
        let mut replayed = 0;
        let mut events = Vec::new();
        let mut usage = Vec::new();
        let mut lines = EventLines::default();
        let scan = frame::scan(
            LogWindow::new(log, size),
            mark.position,
            mark.lsn + 1,
            |_, batch| {
                replayed += 1;
                for (seq, line) in &batch.events {
                    let event = Event::from_json(line);
                    let at = event.as_ref().and_then(Event::usage_instant);
                    lines.push_line(*seq, line, at);
                    match event {
                        Some(event) => {
                            if at.is_some() {
                                usage.push(event.clone());
                            }
                            events.push(event);
                        }
                        None => warn!(seq, "unreadable event in the log skipped"),
                    }
                }
                pending.add_owned(
                    batch.changes,
                    (batch.keep_events_from, batch.trim_slack),
                    LogMark::default(),
                );
            },
        )
        .map_err(|e| StoreError::Io(format!("cannot read the log: {e}")))?;
        if replayed > 0 {
            pending.add_replayed_events(lines);
            pending.set_mark(LogMark {
                lsn: scan.next_lsn - 1,
                position: scan.end,
            });
        }
        Ok(Replay {
            pending,
            replayed,
            events,
            usage,
            scan,
        })
    }
}

/// Runs the engine's jobs: on a thread of its own, or inline.
#[derive(Debug)]
pub(crate) enum Worker {
    Inline {
        engine: Engine,
        done: VecDeque<Done>,
    },
    Thread {
        jobs: Option<Sender<Job>>,
        done: Receiver<Done>,
        handle: Option<JoinHandle<()>>,
    },
}

impl Worker {
    /// A worker running `engine` on its own thread.
    ///
    /// # Errors
    /// [`StoreError::Open`] if the thread cannot be spawned.
    pub fn spawn(mut engine: Engine) -> Result<Worker, StoreError> {
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (done_tx, done) = mpsc::channel::<Done>();
        let handle = std::thread::Builder::new()
            .name("checkpoint".into())
            .spawn(move || {
                for job in job_rx {
                    if done_tx.send(engine.run(job)).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| StoreError::Open(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Worker::Thread {
            jobs: Some(jobs),
            done,
            handle: Some(handle),
        })
    }

    /// A worker that runs each job when it is submitted.
    pub fn inline(engine: Engine) -> Worker {
        Worker::Inline {
            engine,
            done: VecDeque::new(),
        }
    }

    pub fn checkpoint(&mut self, pending: Pending) {
        self.submit(Job::Checkpoint(pending));
    }

    pub fn recover(&mut self) {
        self.submit(Job::Recover);
    }

    fn submit(&mut self, job: Job) {
        match self {
            Worker::Inline { engine, done } => done.push_back(engine.run(job)),
            Worker::Thread { jobs, .. } => {
                // A dead thread is reported by the next `wait`.
                if let Some(jobs) = jobs {
                    let _ = jobs.send(job);
                }
            }
        }
    }

    /// A finished job's report, if one is ready.
    pub fn try_done(&mut self) -> Option<Done> {
        match self {
            Worker::Inline { done, .. } => done.pop_front(),
            Worker::Thread { done, .. } => done.try_recv().ok(),
        }
    }

    /// The next report, waiting for it.
    ///
    /// # Errors
    /// [`StoreError::Io`] if the worker died (a bug) or has nothing to do.
    pub fn wait(&mut self) -> Result<Done, StoreError> {
        match self {
            Worker::Inline { done, .. } => done
                .pop_front()
                .ok_or_else(|| StoreError::Io("no checkpoint job is running".into())),
            Worker::Thread { done, .. } => done
                .recv()
                .map_err(|_| StoreError::Io("the checkpoint thread died".into())),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Worker::Thread { jobs, handle, .. } = self {
            jobs.take();
            if let Some(handle) = handle.take()
                && handle.join().is_err()
            {
                warn!("the checkpoint thread panicked");
            }
        }
    }
}
