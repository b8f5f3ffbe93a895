//! Checkpoints: what the log holds that the tables do not yet
//! ([`Pending`]), and the worker that writes it to redb and recovers the
//! state at start-up ([`Worker`]), on its own thread so that a checkpoint
//! never stalls the reactor, or inline for deterministic tests.
//!
//! The worker owns the [`Tables`]; the reactor owns the log's write side.
//! They share only the log file, which the worker reads during recovery
//! while the reactor waits for it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;

use tracing::warn;

use super::files::LogIo;
use super::frame::{self, Stop};
use super::tables::{LogMark, Tables};
use super::{Loaded, StoreError};
use crate::events::Event;
use crate::tasks::{Change, Task, TaskName};

/// Changes made durable in the log since the last checkpoint, folded to one
/// row per name (the latest wins), with their events.
///
/// Invariant: `mark` is the log mark just after the last frame folded in;
/// `events` are in increasing sequence order.
#[derive(Debug, Default)]
pub struct Pending {
    rows: BTreeMap<TaskName, Option<Task>>,
    /// Event lines, back to back; `ends` has each one's sequence number and
    /// where it ends in `text`.
    text: Vec<u8>,
    ends: Vec<(u64, usize)>,
    keep_events_from: u64,
    trim_slack: u64,
    /// Changes folded in (before folding by name): the policy's measure.
    changes: usize,
    /// Frames folded in.
    frames: usize,
    mark: LogMark,
}

impl Pending {
    /// Folds in one frame's batch, which ends at `mark`.
    pub fn add<'a>(
        &mut self,
        changes: &[Change],
        events: impl Iterator<Item = (u64, &'a [u8])>,
        (keep_events_from, trim_slack): (u64, u64),
        mark: LogMark,
    ) {
        for change in changes {
            let row = match change {
                Change::Put { task, .. } => Some(task.clone()),
                Change::Remove { .. } => None,
            };
            self.rows.insert(change.name().clone(), row);
        }
        for (seq, line) in events {
            self.text.extend_from_slice(line);
            self.ends.push((seq, self.text.len()));
        }
        self.keep_events_from = self.keep_events_from.max(keep_events_from);
        self.trim_slack = trim_slack;
        self.changes += changes.len();
        self.frames += 1;
        self.mark = mark;
    }

    /// Folds `newer` (what was logged after `self`) over `self`.
    pub fn absorb(&mut self, newer: Pending) {
        if newer.is_empty() {
            return;
        }
        self.rows.extend(newer.rows);
        let base = self.text.len();
        self.text.extend_from_slice(&newer.text);
        self.ends
            .extend(newer.ends.iter().map(|&(seq, end)| (seq, base + end)));
        self.keep_events_from = self.keep_events_from.max(newer.keep_events_from);
        self.trim_slack = newer.trim_slack;
        self.changes += newer.changes;
        self.frames += newer.frames;
        self.mark = newer.mark;
    }

    /// Whether nothing is waiting: no frame was folded in.
    pub fn is_empty(&self) -> bool {
        self.frames == 0
    }

    /// Frames folded in.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Changes folded in.
    pub fn changes(&self) -> usize {
        self.changes
    }

    /// Each name's latest row (`None`: removed).
    pub fn rows(&self) -> impl Iterator<Item = (&TaskName, &Option<Task>)> {
        self.rows.iter()
    }

    /// The events, in order.
    pub fn events(&self) -> impl Iterator<Item = (u64, &[u8])> {
        let mut start = 0;
        self.ends.iter().map(move |&(seq, end)| {
            let line = &self.text[start..end];
            start = end;
            (seq, line)
        })
    }

    pub fn keep_events_from(&self) -> u64 {
        self.keep_events_from
    }

    pub fn trim_slack(&self) -> u64 {
        self.trim_slack
    }

    /// The log mark the tables reach once this is checkpointed.
    pub fn mark(&self) -> LogMark {
        self.mark
    }
}

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
    /// A checkpoint succeeded up to this mark, or failed and hands its
    /// pending changes back.
    Checkpointed(Result<LogMark, (StoreError, Pending)>),
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
                    Ok(()) => Ok(pending.mark()),
                    Err(e) => Err((e, pending)),
                })
            }
            Job::Recover => Done::Recovered(self.recover()),
        }
    }

    /// Loads the tables, then replays the log frames after their mark, up
    /// to the first frame that is not the valid next one.
    fn recover(&mut self) -> Result<Recovered, StoreError> {
        let (mut loaded, checkpointed) = self.tables.load()?;
        let size = self
            .log
            .len()
            .map_err(|e| StoreError::Io(format!("cannot read the log's size: {e}")))?;
        let mut ring = vec![0u8; size as usize];
        self.log
            .read_at(0, &mut ring)
            .map_err(|e| StoreError::Io(format!("cannot read the log: {e}")))?;
        let scan = frame::scan(&ring, checkpointed.position, checkpointed.lsn + 1);
        drop(ring);

        let mut pending = Pending::default();
        if !scan.batches.is_empty() {
            let mut replayed_events = Vec::new();
            for (_, batch) in &scan.batches {
                for (seq, line) in &batch.events {
                    match Event::from_json(line) {
                        Some(event) => replayed_events.push(event),
                        None => warn!(seq, "unreadable event in the log skipped"),
                    }
                }
                let lines = batch
                    .events
                    .iter()
                    .map(|(seq, line)| (*seq, line.as_slice()));
                pending.add(
                    &batch.changes,
                    lines,
                    (batch.keep_events_from, batch.trim_slack),
                    LogMark::default(),
                );
            }
            pending.mark = LogMark {
                lsn: scan.next_lsn - 1,
                position: scan.end,
            };
            loaded.tasks = overlay(std::mem::take(&mut loaded.tasks), &pending);
            loaded.events.extend(replayed_events);
            // Replayed events follow the checkpointed ones; should a number
            // repeat, the log's (later) one wins.
            loaded.events.reverse();
            loaded.events.sort_by_key(|event| event.seq);
            loaded.events.dedup_by_key(|event| event.seq);
        }
        loaded.replayed = scan.batches.len();
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

/// The checkpointed rows (sorted by name, as redb keeps them) with the
/// pending rows laid over them: one merge of two sorted sequences.
fn overlay(checkpointed: Vec<Task>, pending: &Pending) -> Vec<Task> {
    let mut out = Vec::with_capacity(checkpointed.len() + pending.rows.len());
    let mut old = checkpointed.into_iter().peekable();
    for (name, row) in &pending.rows {
        while let Some(task) = old.next_if(|task| task.name < *name) {
            out.push(task);
        }
        old.next_if(|task| task.name == *name);
        if let Some(task) = row {
            out.push(task.clone());
        }
    }
    out.extend(old);
    out
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
