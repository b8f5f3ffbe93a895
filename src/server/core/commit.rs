//! The core's side of the disk: recovery at start-up, a turn's batch,
//! sealing it into a [`Commit`], what the commit's outcome means, reloads
//! after a failure, and the commits a clock step asks for.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use super::{Core, Hold, MAX_EXPIRIES_PER_TURN, Now, STORE_RETRY, Settings, Verdict};
use super::{TASK_LINES_PER_WINDOW, WARNINGS_PER_WINDOW};
use crate::daemon_log::{Noise, log_change};
use crate::events::{Event, EventKind, EventLines, EventLog};
use crate::logging::{FOLD_WINDOW, Folder};
use crate::metrics::Metrics;
use crate::shares::Shares;
use crate::store::{Loaded, StoreError};
use crate::tasks::{Batch, Change, Removal};
use crate::time::{ClockStep, ReactorClock, Timestamp};
use crate::usage::History;

/// A batch sealed with its events, for the shell to write with one
/// append and one sync; its outcome goes back through [`Core::committed`].
#[derive(Debug)]
pub struct Commit {
    batch: Batch,
    events: Vec<Event>,
    lines: Arc<EventLines>,
    keep_from: u64,
    trim_slack: u64,
    /// The usage history's floor ([`History::floor`]).
    usage_floor: Timestamp,
    /// The event time of the commit.
    at: Timestamp,
    /// A step back of the wall clock this commit moves the holds for.
    step_back: Option<Duration>,
}

impl Commit {
    /// The task rows written and removed.
    pub fn changes(&self) -> &[Change] {
        self.batch.changes()
    }

    /// The events, one line each.
    pub fn lines(&self) -> &Arc<EventLines> {
        &self.lines
    }

    /// The oldest event kept once this commit is durable.
    pub fn keep_from(&self) -> u64 {
        self.keep_from
    }

    /// How far behind `keep_from` trimming may lag.
    pub fn trim_slack(&self) -> u64 {
        self.trim_slack
    }

    /// Ended holds before this instant are no longer in the usage history
    /// (it keeps the latest `--usage-max-holds`): the store may drop them.
    pub fn usage_floor(&self) -> Timestamp {
        self.usage_floor
    }

    /// The events it carries.
    pub fn events(&self) -> &[Event] {
        &self.events
    }
}

/// What the start-up found, for its log line.
#[derive(Debug, Default, Clone, Copy)]
pub struct Recovered {
    /// Rows that fell due while the daemon was down.
    pub expired: usize,
    /// Tasks whose bound process exited while the daemon was down.
    pub released: usize,
}

impl Core {
    /// The state `loaded` from disk at `wall`/`mono`: follows a step back
    /// of the clock while the daemon was down, bounds expiries no sane
    /// clock wrote, and plans what fell due meanwhile into the first
    /// commit. Every bound task is to be watched ([`WatchChange`]s);
    /// [`seal_recovery`](Self::seal_recovery) adds the releases of those
    /// whose process is gone.
    ///
    /// [`WatchChange`]: super::WatchChange
    pub fn recover(
        settings: Settings,
        loaded: Loaded,
        wall: Timestamp,
        mono: Instant,
    ) -> (Core, Recovered) {
        let Loaded {
            tasks,
            events,
            usage: usage_events,
            usage_floor,
            ..
        } = loaded;
        let usage = History::recovered(
            settings.usage_retention,
            settings.usage_max_holds,
            Timestamp::from_nanos(usage_floor),
            &usage_events,
            wall,
        );
        let events = EventLog::new(settings.event_retention, events);
        let idle_since = events
            .last_edge()
            .filter(|edge| edge.kind == EventKind::Idle)
            .map(|edge| edge.at);
        // The newest event is the daemon's time at its last commit.
        let back_while_down = ClockStep::back_while_down(events.last_at(), wall);
        let mut loaded = settings.new_tasks();
        loaded.load(tasks);
        loaded.set_tripped(crate::usage::tripped(&usage_events));
        let shares = Shares::new(settings.shares, settings.daemon_uid);
        let mut core = Core {
            tasks: loaded,
            events,
            usage,
            clock: ReactorClock::new(wall, mono),
            shares,
            peers: Default::default(),
            watched: Default::default(),
            exited: Vec::new(),
            batch: Batch::new(),
            spare_batch: Batch::new(),
            pending: None,
            verdict: Verdict::Committed,
            hold: Hold {
                idle_since,
                ..Hold::default()
            },
            metrics: Metrics::default(),
            log_folder: Folder::new(FOLD_WINDOW, WARNINGS_PER_WINDOW),
            task_log: Folder::new(FOLD_WINDOW, TASK_LINES_PER_WINDOW),
            store_retry_at: None,
            needs_reload: false,
            reload_now: None,
            load_tried: false,
            unsettled_step_back: None,
            watch_changes: Vec::new(),
            edges: Vec::new(),
            event_lines: Vec::new(),
            settings,
        };
        let expired = core.check_loaded(wall, back_while_down);
        core.resync_watches();
        (
            core,
            Recovered {
                expired,
                released: 0,
            },
        )
    }

    /// Plans, for the rows just loaded at `now`, following a step back of
    /// the clock while the daemon was down, bounding expiries, and removing
    /// what fell due; logs and counts the first two. Returns how many rows
    /// fell due.
    fn check_loaded(&mut self, now: Timestamp, back_while_down: Option<Duration>) -> usize {
        let max_expire = self.settings.max_expire;
        let planned = self.tasks.plan_load(
            &mut self.batch,
            now,
            max_expire,
            back_while_down,
            MAX_EXPIRIES_PER_TURN,
        );
        if planned.due_later > 0 {
            info!(
                expired = planned.expired,
                due_later = planned.due_later,
                per_commit = MAX_EXPIRIES_PER_TURN,
                "more tasks fell due while the daemon was down than one commit removes; the rest expire in the next turns, invisible meanwhile"
            );
        }
        if let Some(behind) = back_while_down {
            self.hold.idle_since = self.hold.idle_since.map(|at| at.saturating_sub(behind));
            self.metrics.clock_steps_backward += 1;
            warn!(
                step_ns = ClockStep::Backward(behind).as_signed_nanos(),
                moved = planned.moved,
                expired = planned.expired,
                "the wall clock reads earlier than the daemon's last commit: it was set back while the daemon was down; every hold moves back with it"
            );
        }
        for name in &planned.clamped {
            warn!(
                task = %name,
                max_expire = %humantime::format_duration(max_expire),
                "a task expires more than --max-expire from now (the clock was set back while the daemon was down, or --max-expire was lowered); its expiry is bounded to now + --max-expire"
            );
        }
        self.metrics.clamped_at_load += planned.clamped.len() as u64;
        planned.expired
    }

    /// Seals the start-up's commit: what fell due, and the releases of
    /// tasks whose process the shell found gone. Returns how many were
    /// released.
    pub fn seal_recovery(&mut self, now: Now) -> usize {
        let exited = std::mem::take(&mut self.exited);
        let released = exited
            .iter()
            .filter(|(name, binding)| self.tasks.release(&mut self.batch, name, *binding))
            .count();
        self.seal_turn(now);
        released
    }

    /// After the start-up's commit: the edges of the state found, and the
    /// events that no stream can have asked for yet dropped.
    pub fn finish_recovery(&mut self, now: Now) {
        self.event_lines.clear();
        self.align_edges(now);
    }

    /// Starts a turn: plans due expiries, at most
    /// [`MAX_EXPIRIES_PER_TURN`], and the releases of exited processes,
    /// unless the disk is in doubt or a failure's retry time has not come.
    pub fn start_turn(&mut self, now: Now) {
        self.verdict = Verdict::Committed;
        self.load_tried = false;
        if self.needs_reload || self.store_retry_at.is_some_and(|at| at > now.mono) {
            return;
        }
        self.store_retry_at = None;
        self.tasks
            .expire_due_at_most(&mut self.batch, now.wall, MAX_EXPIRIES_PER_TURN);
        // Releases that a failed commit left are retried here too; one that
        // is moot (the task gone or bound anew) is dropped, so the queue
        // never keeps the reactor awake for nothing.
        let tasks = &self.tasks;
        let batch = &mut self.batch;
        self.exited
            .retain(|(name, binding)| tasks.release(batch, name, *binding));
    }

    /// Ends the turn's planning: its changes become the commit to write.
    /// While memory may differ from disk nothing is written: every change
    /// of the turn gets 503.
    pub fn seal_turn(&mut self, now: Now) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut self.batch, std::mem::take(&mut self.spare_batch));
        if self.needs_reload {
            self.metrics.commit_failures += 1;
            self.verdict = Verdict::Failed;
            return;
        }
        self.pending = Some(self.seal(batch, now.wall, None));
    }

    /// Ends the turn: the next one starts with a clean verdict.
    pub fn finish_turn(&mut self) {
        self.verdict = Verdict::Committed;
    }

    /// The commit the shell must write now, if any.
    pub fn take_commit(&mut self) -> Option<Commit> {
        self.pending.take()
    }

    /// Whether the shell must reload the store now: a commit just failed,
    /// or memory is in doubt and clients wait (`clients_waiting`) or the
    /// retry time has come. At most once a turn but right after a failure.
    pub fn wants_load(&self, clients_waiting: bool, now: Now) -> bool {
        self.needs_reload
            && (self.reload_now.is_some()
                || (!self.load_tried
                    && (clients_waiting || self.store_retry_at.is_none_or(|at| at <= now.mono))))
    }

    fn seal(&self, batch: Batch, at: Timestamp, step_back: Option<Duration>) -> Commit {
        let rows_before = self.tasks.len();
        let rows_after = rows_before.saturating_add_signed(batch.rows_delta());
        let tasks = &self.tasks;
        let events = self.events.plan_batch(
            batch.clock_step(),
            batch.changes(),
            batch.rearmed(),
            |name| tasks.stored(name),
            (rows_before, rows_after),
            at,
        );
        let keep_from = events
            .last()
            .map_or(0, |last| self.events.oldest_kept_after(last.seq));
        Commit {
            lines: Arc::new(EventLines::new(&events)),
            events,
            keep_from,
            trim_slack: self.events.trim_slack(),
            usage_floor: self.usage.floor(),
            batch,
            at,
            step_back,
        }
    }

    /// The outcome of writing `commit`, which took `took`: applies it to
    /// memory, or decides what its failure means.
    pub fn committed(
        &mut self,
        commit: Commit,
        result: Result<(), StoreError>,
        took: Duration,
        now: Now,
    ) {
        let changes = commit.batch.len();
        match result {
            Ok(()) => {
                self.metrics.commit(changes, took);
                debug!(changes, micros = took.as_micros() as u64, "committed");
                self.apply(commit, now);
            }
            Err(StoreError::Full(reason)) => {
                self.metrics.commit_failures += 1;
                if self.log_folder.admit(&Noise::BatchRefused, now.mono) {
                    warn!(reason = %reason, changes, "batch refused: the log is full; its clients get 503");
                }
                self.verdict = Verdict::Refused(reason);
                // Due expiries wait for the retry timer instead of spinning.
                self.store_retry_at = Some(now.mono + STORE_RETRY);
                if commit.step_back.is_some() {
                    self.unsettled_step_back = None;
                }
            }
            Err(e) => {
                self.metrics.commit_failures += 1;
                if self.log_folder.admit(&Noise::CommitFailed, now.mono) {
                    error!(error = %e, changes, "commit failed; the affected clients get 503");
                }
                self.verdict = Verdict::Failed;
                // The failed batch may or may not have reached the file:
                // memory is rebuilt from whatever the disk now says. Even
                // when that succeeds (it only reads), due expiries wait for
                // the retry timer instead of spinning on a disk that
                // refuses writes; clients still try each turn.
                self.needs_reload = true;
                self.reload_now = Some(now.mono + STORE_RETRY);
            }
        }
    }

    /// Applies a durable commit to memory: tasks, watches, events, edges.
    fn apply(&mut self, commit: Commit, now: Now) {
        let Commit {
            batch,
            events,
            lines,
            at,
            step_back,
            ..
        } = commit;
        let mut touched = Vec::with_capacity(batch.len());
        for change in batch.changes() {
            if let Change::Remove { cause, .. } = change {
                match cause {
                    Removal::Deleted => self.metrics.deleted += 1,
                    Removal::Expired => self.metrics.expired += 1,
                    Removal::Released { .. } => self.metrics.released += 1,
                    Removal::Capped { .. } => self.metrics.capped += 1,
                }
            }
            let owner = match change {
                Change::Put { task, .. } => task.owner,
                Change::Remove { name, .. } => self.tasks.owner_of(name),
            };
            log_change(&mut self.task_log, change, owner, now.mono);
            // Only a change that binds, or one to a watched name, can change
            // what is watched (a later change in this batch that binds the
            // name is touched itself); most change neither, and skip the
            // two lookups of `sync_watch`.
            let binds = matches!(change, Change::Put { task, .. } if task.binding.is_some());
            if binds || self.watched.contains_key(change.name()) {
                touched.push(change.name().clone());
            }
        }
        self.spare_batch = self.tasks.apply(batch);
        // Releases planned from `exited` are durable now; those moot (the
        // task gone or bound anew) are dropped with them.
        let tasks = &self.tasks;
        self.exited
            .retain(|(name, binding)| tasks.binding_of(name) == Some(*binding));
        for name in &touched {
            self.sync_watch(name);
        }
        self.events.append(&events);
        for event in &events {
            self.usage.record(event);
            match event.kind {
                EventKind::Held => self.enter_held(now),
                EventKind::Idle => self.enter_idle(at, now),
                _ => {}
            }
        }
        self.usage.prune(at);
        self.event_lines.push(lines);
        if let Some(behind) = step_back {
            self.take_step_back(behind);
            warn!(
                step_ns = ClockStep::Backward(behind).as_signed_nanos(),
                "the wall clock was set back; every hold moved back with it and keeps its remaining time"
            );
        }
    }

    /// The outcome of reloading the store after a failure.
    pub fn loaded(&mut self, result: Result<Loaded, StoreError>, now: Now) {
        self.load_tried = true;
        let then_wait_until = self.reload_now.take();
        let loaded = match result {
            Ok(loaded) => loaded,
            Err(e) => {
                self.store_retry_at = Some(now.mono + STORE_RETRY);
                if self.log_folder.admit(&Noise::StoreUnavailable, now.mono) {
                    error!(error = %e, "database unavailable; changes get 503 until it reopens");
                }
                return;
            }
        };
        let mut tasks = self.settings.new_tasks();
        tasks.load(loaded.tasks);
        self.usage = History::recovered(
            self.settings.usage_retention,
            self.settings.usage_max_holds,
            Timestamp::from_nanos(loaded.usage_floor),
            &loaded.usage,
            now.wall,
        );
        tasks.set_tripped(crate::usage::tripped(&loaded.usage));
        self.tasks = tasks;
        self.resync_watches();
        self.events = EventLog::new(self.settings.event_retention, loaded.events);
        self.needs_reload = false;
        self.store_retry_at = then_wait_until;
        info!(
            tasks = self.tasks.len(),
            "database reopened; state reloaded from disk"
        );
        if let Some((seq, behind)) = self.unsettled_step_back.take()
            && self.events.next_seq() > seq
        {
            // The failed commit moving the holds reached the disk.
            self.take_step_back(behind);
            warn!(
                step_ns = ClockStep::Backward(behind).as_signed_nanos(),
                "the wall clock was set back; the holds moved back with it (found on disk after a failed commit)"
            );
        }
        self.align_edges(now);
    }

    /// Plans the commit a step of the wall clock asks for, when the disk
    /// can take it.
    pub(super) fn clock_stepped(&mut self, step: ClockStep, now: Now) {
        let can_commit = !self.needs_reload && self.store_retry_at.is_none_or(|at| at <= now.mono);
        match step {
            ClockStep::Forward(_) => {
                self.metrics.clock_steps_forward += 1;
                warn!(
                    step_ns = step.as_signed_nanos(),
                    "the wall clock stepped forward (a wake, or a clock set right); holds that fell due expire now"
                );
                if can_commit {
                    let mut batch = Batch::new();
                    batch.note_clock_step(step);
                    self.tasks
                        .expire_due_at_most(&mut batch, now.wall, MAX_EXPIRIES_PER_TURN);
                    self.pending = Some(self.seal(batch, now.wall, None));
                }
            }
            ClockStep::Backward(behind) if can_commit => {
                let after = now.wall.saturating_sub(behind);
                let mut batch = Batch::new();
                let planned = self.tasks.plan_step_back(&mut batch, behind, after);
                self.unsettled_step_back = Some((self.events.next_seq(), behind));
                self.pending = Some(self.seal(batch, after, Some(behind)));
                debug!(
                    moved = planned.moved,
                    expired = planned.expired,
                    "moving every hold back with the wall clock"
                );
            }
            ClockStep::Backward(_) => {}
        }
    }

    /// Moves the reactor's timeline back by `behind` once the holds have
    /// moved with it on disk and in memory.
    fn take_step_back(&mut self, behind: Duration) {
        self.unsettled_step_back = None;
        self.clock.follow_back(behind);
        self.hold.idle_since = self.hold.idle_since.map(|at| at.saturating_sub(behind));
        self.metrics.clock_steps_backward += 1;
    }
}
