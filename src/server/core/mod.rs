//! The reactor's decisions, without I/O: who may connect and stream, how a
//! request is answered, what a turn commits, what a commit's outcome
//! means, when the disk must be reloaded, what a clock step does, which
//! bound processes are watched, and when the held/idle edges fall.
//!
//! Driven by the shell ([`super::shell`]) with `now` passed in: requests
//! through [`Core::handle`], the turn through [`Core::start_turn`] and
//! [`Core::seal_turn`], the disk through [`Core::take_commit`] /
//! [`Core::committed`] and [`Core::wants_load`] / [`Core::loaded`], time
//! through [`Core::observe_clock`] and [`Core::poll_timeout`], processes
//! through [`Core::process_exited`]. It hands back what to send (a
//! [`Handled`], a response), what to write (a [`Commit`]) and what to do
//! about it ([`WatchChange`], [`Edge`], event lines for the streams). It
//! never touches mio, a socket, a file, a thread or a clock; the one thing
//! it asks of the outside during a turn goes through [`Processes`].
//!
//! Depends on `tasks`, `events`, `api`, `http`, `shares`, `metrics`,
//! `daemon_log`, `logging`, `time` and `store`'s types (not its files).

mod commit;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::api::{self, Routed};
use crate::daemon_log::{Noise, TaskLines, log_summaries, note_refusal};
use crate::events::{Event, EventLines, EventLog};
use crate::hooks::HookCounts;
use crate::http::{HttpDate, HttpError, Request, Response};
use crate::ids::IdMap;
use crate::logging::Folder;
use crate::metrics::{Gauges, Metrics};
use crate::process::Credentials;
use crate::shares::{Refused, ShareLimits, Shares};
use crate::store::StoreCounters;
use crate::tasks::{
    Batch, Binding, Command, Holder, Outcome, Ownership, TaskError, TaskName, Tasks,
};
use crate::time::{ReactorClock, Timestamp};
use crate::usage::History;

pub use commit::{Commit, Recovered};

/// After a failed commit, wait this long before retrying due expiries, so a
/// broken disk does not turn the reactor into a busy loop.
pub const STORE_RETRY: Duration = Duration::from_secs(1);

/// Most expiries committed in one turn. Tasks falling due by the thousand
/// (a fleet of agents started together) are removed in slices, with other
/// clients' requests answered between them; until then they are invisible.
/// A slice of 1024 commits in about 5 ms.
pub const MAX_EXPIRIES_PER_TURN: usize = 1024;

/// Full log lines per kind and uid in each [`FOLD_WINDOW`] for what an
/// outside party can repeat at will (refusals, failed commits); the rest
/// are summarised.
const WARNINGS_PER_WINDOW: u32 = 1;

/// Full `task created/deleted/expired/released` lines per uid and kind in
/// each [`FOLD_WINDOW`]: every one on a quiet machine, a summary under churn.
const TASK_LINES_PER_WINDOW: u32 = 10;

/// The turn's time: the reactor clock's wall reading (what tasks expire by)
/// and the monotonic instant (what timers and the log's folding count by).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub wall: Timestamp,
    pub mono: Instant,
}

/// A connection, as the shell names it. Never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub usize);

/// What the core needs of the daemon's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub max_tasks: usize,
    pub max_bound: usize,
    pub ownership: Ownership,
    pub max_expire: Duration,
    pub event_retention: usize,
    /// `--max-held-for`.
    pub max_held_for: Option<Duration>,
    /// How long the usage history keeps a hold after it ended.
    pub usage_retention: Duration,
    /// Most ended holds the usage history keeps, the latest.
    pub usage_max_holds: usize,
    pub shares: ShareLimits,
    /// The daemon's effective uid: privileged like root in the shares.
    pub daemon_uid: u32,
}

impl Settings {
    /// An empty state with these limits and ownership.
    fn new_tasks(&self) -> Tasks {
        Tasks::new(self.max_tasks)
            .with_max_bound(self.max_bound)
            .with_ownership(self.ownership)
            .with_max_held_for(self.max_held_for)
    }
}

/// What the core asks of the processes on the machine while planning.
pub trait Processes {
    /// The binding of the running process `pid` for task `name`, keeping
    /// whatever the watch needs until the commit's [`WatchChange`]s; or
    /// the status and sentence that refuse it.
    ///
    /// # Errors
    /// The process does not exist or cannot be watched.
    fn bind(&mut self, name: &TaskName, pid: u32) -> Result<Binding, (u16, String)>;

    /// Who the peer with `credentials` is (its command lines).
    fn holder(&mut self, credentials: Credentials) -> Holder;
}

/// A planned command's route label (for the metrics) and outcome, answered
/// once the turn's commit says whether it holds.
#[derive(Debug)]
pub struct Planned {
    label: &'static str,
    result: Result<Outcome, TaskError>,
}

/// How [`Core::handle`] answers a request.
#[derive(Debug)]
pub enum Handled {
    /// Complete now.
    Answer(Response),
    /// A change in this turn's batch: answer it with [`Core::answer`] after
    /// the commit.
    Planned(Planned),
    /// A read behind changes this connection still waits for: hand it
    /// back once those are answered (reads see committed state only).
    AfterCommit,
    /// An event stream opens: its head and replay. Later lines come from
    /// [`Core::take_event_lines`].
    Stream(Vec<u8>),
    /// `GET /metrics`: render it with [`Core::metrics_page`], which takes
    /// the shell's gauges.
    Metrics,
}

/// A change of which bound processes are watched, for the shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchChange {
    /// Watch this process; if that is impossible, report it through
    /// [`Core::process_exited`] (or [`Core::watch_failed`] when the process
    /// runs but cannot be watched).
    Watch(TaskName, Binding),
    /// Stop watching the process of this task.
    Unwatch(TaskName),
}

/// The machine became held or idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    Held,
    Idle { at: Timestamp },
}

/// What the shell measures and the metrics page shows beside the core's
/// own figures.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outside {
    pub connections: usize,
    pub streams: usize,
    pub log_used_bytes: u64,
    pub log_size_bytes: u64,
    pub checkpoints: u64,
    pub checkpoint_failures: u64,
    pub compactions: u64,
    pub compacted_rows: u64,
    pub hook_runs: u64,
    pub hook_failures: u64,
}

impl Outside {
    /// The store's and the hooks' figures; the connections' are the
    /// shell's to fill in.
    pub fn of(store: StoreCounters, hooks: HookCounts) -> Outside {
        Outside {
            log_used_bytes: store.log_used,
            log_size_bytes: store.log_size,
            checkpoints: store.checkpoints,
            checkpoint_failures: store.checkpoint_failures,
            compactions: store.compactions,
            compacted_rows: store.compacted_rows,
            hook_runs: hooks.started,
            hook_failures: hooks.failed,
            ..Outside::default()
        }
    }
}

/// How the turn's changes fared, for their answers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Committed,
    /// Refused before touching the disk (the log is full): 503 with why.
    Refused(String),
    /// The commit failed, or memory may differ from disk: 503.
    Failed,
}

/// The process on the other end of a connection.
#[derive(Debug)]
struct Peer {
    /// From `SO_PEERCRED` at accept; `None` if it could not be read.
    credentials: Option<Credentials>,
    /// Asked of [`Processes::holder`] at the first create or refresh (once
    /// per connection, so a heartbeat on a kept-alive connection costs one
    /// read of `/proc`).
    holder: Option<Holder>,
    /// The connection carries an event stream (counted in its uid's share).
    streaming: bool,
}

impl Peer {
    fn uid(&self) -> Option<u32> {
        self.credentials.map(|credentials| credentials.uid)
    }
}

/// The held/idle bookkeeping.
#[derive(Debug, Default)]
struct Hold {
    /// Since when the machine is held (monotonic), while it is.
    since: Option<Instant>,
    /// Time held before `since`.
    before: Duration,
    /// When the last hold ended, if known.
    idle_since: Option<Timestamp>,
}

impl Hold {
    /// Time held since the daemon started: the holds before plus this one.
    fn total(&self, mono: Instant) -> Duration {
        self.before
            + self.since.map_or(Duration::ZERO, |since| {
                mono.saturating_duration_since(since)
            })
    }
}

/// The daemon's state and every decision about it.
///
/// Invariants: `tasks` and `events` are what the disk holds unless
/// `needs_reload`; `watched` is the binding of every bound task the shell
/// watches, as last committed; a name in `exited` has no entry in
/// `watched`; `batch` is empty between turns.
pub struct Core {
    settings: Settings,
    tasks: Tasks,
    events: EventLog,
    /// Ended holds for `GET /v1/usage`.
    usage: History,
    clock: ReactorClock,
    shares: Shares,
    peers: IdMap<ConnId, Peer>,
    /// Bindings the shell watches, by task.
    watched: IdMap<TaskName, Binding>,
    /// Bound processes that exited (or could not be watched): their tasks
    /// are released by the next commit.
    exited: Vec<(TaskName, Binding)>,
    /// This turn's changes.
    batch: Batch,
    /// The last committed batch, emptied with its room kept: the next
    /// turn's `batch`.
    spare_batch: Batch,
    /// Sealed and waiting for the shell to write it.
    pending: Option<Commit>,
    verdict: Verdict,
    hold: Hold,
    metrics: Metrics,
    /// Warnings an outside party can repeat, folded into summaries.
    log_folder: Folder<Noise>,
    /// Per-task lines, folded per uid under churn.
    task_log: TaskLines,
    /// Due expiries wait until then after a failed commit.
    store_retry_at: Option<Instant>,
    /// A failed commit left memory and disk possibly different, and the
    /// store could not be reloaded yet.
    needs_reload: bool,
    /// A commit just failed: reload at once, then wait until this instant
    /// before retrying due expiries.
    reload_now: Option<Instant>,
    /// A reload was tried this turn (clients waiting make each turn try
    /// once; the retry timer otherwise).
    load_tried: bool,
    /// A step back of the wall clock whose moved holds were being committed
    /// when the commit failed: its event's sequence number and the step. If
    /// the reload finds that event on disk, the step is taken then.
    unsettled_step_back: Option<(u64, Duration)>,
    watch_changes: Vec<WatchChange>,
    edges: Vec<Edge>,
    /// Events committed and not yet sent to the streams.
    event_lines: Vec<Arc<EventLines>>,
}

impl Core {
    /// Connects a peer, or refuses it for its uid's share: the 503 to send
    /// before closing.
    ///
    /// # Errors
    /// The response refusing the connection.
    pub fn connect(
        &mut self,
        conn: ConnId,
        credentials: Option<Credentials>,
        now: Now,
    ) -> Result<(), Response> {
        let uid = credentials.map(|credentials| credentials.uid);
        if let Err(refused) = self.shares.connect(uid) {
            return Err(self.refused("connection", &refused, uid, now));
        }
        self.metrics.connections_accepted += 1;
        self.peers.insert(
            conn,
            Peer {
                credentials,
                holder: None,
                streaming: false,
            },
        );
        Ok(())
    }

    /// The connection is gone.
    pub fn disconnect(&mut self, conn: ConnId) {
        if let Some(peer) = self.peers.remove(&conn) {
            self.shares.disconnect(peer.uid(), peer.streaming);
        }
    }

    /// Answers one request of `conn` at `now`. `waiting` says whether the
    /// connection has changes queued in this turn that are not answered
    /// yet.
    pub fn handle(
        &mut self,
        processes: &mut impl Processes,
        conn: ConnId,
        request: &Request,
        waiting: bool,
        date: &HttpDate,
        now: Now,
    ) -> Handled {
        let (label, routed) = api::route(request, self.settings.max_expire);
        let handled = match routed {
            Routed::Mutation { command, bind_pid } => {
                self.plan(processes, conn, label, command, bind_pid, now)
            }
            Routed::Query(_) | Routed::Metrics | Routed::Events { .. } if waiting => {
                return Handled::AfterCommit;
            }
            Routed::Query(query) => Handled::Answer(api::answer(
                &query,
                &self.tasks,
                &self.usage,
                self.hold.idle_since,
                now.wall,
            )),
            Routed::Events { since } => self.open_stream(conn, request, since, date, now),
            Routed::Metrics => return Handled::Metrics,
            Routed::Reply(response) => Handled::Answer(response),
        };
        match &handled {
            Handled::Answer(response) => self.metrics.request(label, response.status),
            Handled::Stream(_) => self.metrics.request(label, 200),
            _ => {}
        }
        handled
    }

    /// Plans a change into the turn's batch, binding it to the process it
    /// names first.
    fn plan(
        &mut self,
        processes: &mut impl Processes,
        conn: ConnId,
        label: &'static str,
        command: Command,
        bind_pid: Option<u32>,
        now: Now,
    ) -> Handled {
        let peer = self.peers.get_mut(&conn);
        let caller = peer.as_ref().and_then(|peer| peer.uid());
        let mut command = command.from_caller(caller);
        if let Command::Create { name, claim, .. } | Command::Upsert { name, claim, .. } =
            &mut command
        {
            claim.holder = peer.and_then(|peer| {
                let credentials = peer.credentials?;
                Some(
                    peer.holder
                        .get_or_insert_with(|| processes.holder(credentials))
                        .clone(),
                )
            });
            // A refresh naming the process already watched for this task
            // (a hold's heartbeat) reuses that watch without asking the
            // machine: a watch lives until the process exits, which then
            // releases the task whatever this refresh says.
            let watched = self
                .watched
                .get(&*name)
                .copied()
                .filter(|binding| Some(binding.pid) == bind_pid);
            claim.binding = match (watched, bind_pid) {
                (Some(binding), _) => Some(binding),
                (None, Some(pid)) => match processes.bind(name, pid) {
                    Ok(binding) => Some(binding),
                    Err((status, message)) => {
                        return Handled::Answer(api::error(status, message));
                    }
                },
                (None, None) => None,
            };
        }
        let name = command.name().clone();
        let result = self.tasks.plan(&mut self.batch, command, now.wall);
        if let Err(e) = &result {
            note_refusal(
                &mut self.metrics,
                &mut self.log_folder,
                (e, caller, &name, label),
                now.mono,
            );
        }
        Handled::Planned(Planned { label, result })
    }

    /// Opens an event stream within its uid's share.
    fn open_stream(
        &mut self,
        conn: ConnId,
        request: &Request,
        since: Option<u64>,
        date: &HttpDate,
        now: Now,
    ) -> Handled {
        let peer = self.peers.get_mut(&conn);
        let uid = peer.as_ref().and_then(|peer| peer.uid());
        if let Err(refused) = self.shares.start_stream(uid) {
            return Handled::Answer(self.refused("event stream", &refused, uid, now));
        }
        if let Some(peer) = peer {
            peer.streaming = true;
        }
        Handled::Stream(event_stream_head(&self.events, request, since, date))
    }

    /// Counts and logs (folded per uid) a refusal by the shares; the 503
    /// that says why.
    fn refused(&mut self, what: &str, refused: &Refused, uid: Option<u32>, now: Now) -> Response {
        self.metrics.connection_refused(refused.cause());
        if self
            .log_folder
            .admit(&Noise::Refused(refused.cause(), uid), now.mono)
        {
            warn!(uid = ?uid, "{what} refused: {refused}");
        }
        api::error(503, refused.to_string())
    }

    /// The answer to a planned change, by the turn's commit.
    pub fn answer(&mut self, planned: Planned) -> Response {
        let response = match &self.verdict {
            Verdict::Committed => api::outcome(&planned.result),
            Verdict::Refused(reason) => api::error(503, reason.clone()),
            Verdict::Failed => api::commit_failed(),
        };
        self.metrics.request(planned.label, response.status);
        response
    }

    /// The answer to a request the framer refused.
    pub fn refuse(&mut self, error: HttpError) -> Response {
        debug!(status = error.status, reason = %error.message, "refused a request");
        self.metrics.request("other", error.status);
        api::error(error.status, error.message)
    }

    /// The metrics page at `now`, with the shell's figures.
    pub fn metrics_page(&mut self, outside: Outside, now: Now) -> Response {
        let gauges = Gauges {
            live_tasks: self.tasks.live_count(now.wall),
            bound_tasks: self.watched.len(),
            held: self.hold.since.is_some(),
            held_seconds: self.hold.total(now.mono).as_secs_f64(),
            connections: outside.connections,
            streams: outside.streams,
            log_used_bytes: outside.log_used_bytes,
            log_size_bytes: outside.log_size_bytes,
            checkpoints: outside.checkpoints,
            checkpoint_failures: outside.checkpoint_failures,
            compactions: outside.compactions,
            compacted_rows: outside.compacted_rows,
            usage_holds: self.usage.len(),
        };
        self.metrics.hook_runs = outside.hook_runs;
        self.metrics.hook_failures = outside.hook_failures;
        let response = api::metrics_page(self.metrics.render(&gauges));
        self.metrics.request("metrics", response.status);
        response
    }

    /// Reads the clocks' values into the reactor's time, and plans what a
    /// step of the wall clock asks: a step forward is taken at once (what
    /// fell due expires, committed with the step's event); a step back is
    /// taken only once every hold has moved back with it in one durable
    /// commit (until then the reactor stays on its old timeline, which
    /// stretches no hold, and the next turn tries again). Returns the time
    /// before that commit; [`now`](Self::now) after it.
    pub fn observe_clock(&mut self, wall: Timestamp, mono: Instant) -> Now {
        let reading = self.clock.observe(wall, mono);
        let now = Now {
            wall: reading.now,
            mono,
        };
        if let Some(step) = reading.step {
            self.clock_stepped(step, now);
        }
        now
    }

    /// The reactor's time at `mono`, after the clock's commits.
    pub fn now(&self, mono: Instant) -> Now {
        Now {
            wall: self.clock.last(),
            mono,
        }
    }

    /// When the shell must come back at the latest, whatever happens: the
    /// next task deadline, a retry, a due log summary. `None`: no timer.
    pub fn poll_timeout(&self, now: Now) -> Option<Instant> {
        if !self.exited.is_empty() && self.store_retry_at.is_none() {
            return Some(now.mono);
        }
        let deadline = match self.store_retry_at {
            Some(at) => Some(at),
            None => self
                .tasks
                .next_deadline()
                .map(|at| now.mono + at.saturating_since(now.wall)),
        };
        [
            deadline,
            self.log_folder.next_due(),
            self.task_log.next_due(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Writes the log summaries that are due.
    pub fn log_summaries(&mut self, now: Now) {
        log_summaries(&mut self.log_folder, &mut self.task_log, now.mono);
    }

    /// Notes a failure an outside party can repeat (failed accepts), in
    /// the folded log; whether to log it in full.
    pub fn admit_warning(&mut self, noise: Noise, now: Now) -> bool {
        self.log_folder.admit(&noise, now.mono)
    }

    /// The bound process of `name` exited: its task is released by the
    /// next commit.
    pub fn process_exited(&mut self, name: TaskName, binding: Binding) {
        if self.watched.get(&name) == Some(&binding) {
            self.watched.remove(&name);
        }
        debug!(task = %name, pid = binding.pid, "bound process exited");
        self.exited.push((name, binding));
    }

    /// The shell cannot watch `name`'s running process: the hold still
    /// ends at its expiry.
    pub fn watch_failed(&mut self, name: &TaskName) {
        self.watched.remove(name);
    }

    /// Watch changes since the last call, in order.
    pub fn take_watch_changes(&mut self) -> Vec<WatchChange> {
        std::mem::take(&mut self.watch_changes)
    }

    /// Held/idle edges since the last call, in order.
    pub fn take_edges(&mut self) -> Vec<Edge> {
        std::mem::take(&mut self.edges)
    }

    /// Lines of the events committed since the last call.
    pub fn take_event_lines(&mut self) -> Vec<Arc<EventLines>> {
        std::mem::take(&mut self.event_lines)
    }

    /// Whether at least one task holds the machine.
    pub fn is_held(&self) -> bool {
        !self.tasks.is_empty()
    }

    /// When the last hold ended, while idle and known.
    pub fn idle_since(&self) -> Option<Timestamp> {
        self.hold.idle_since
    }

    /// The one-line state for systemd's `STATUS=`.
    pub fn status_line(&self) -> String {
        match (self.tasks.len(), self.hold.idle_since) {
            (0, Some(since)) => format!("idle since {since}"),
            (0, None) => "idle".to_owned(),
            (1, _) => "held by 1 task".to_owned(),
            (n, _) => format!("held by {n} tasks"),
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Rows in memory (live or due).
    pub fn tasks_len(&self) -> usize {
        self.tasks.len()
    }

    /// Bound tasks watched.
    pub fn watched_len(&self) -> usize {
        self.watched.len()
    }

    /// The sequence number the next event gets.
    pub fn next_event(&self) -> u64 {
        self.events.next_seq()
    }

    /// Whether memory is known to match the disk.
    pub fn in_step_with_disk(&self) -> bool {
        !self.needs_reload
    }

    /// Makes the held/idle bookkeeping match the tasks held, after a load
    /// that did not go through an edge event.
    fn align_edges(&mut self, now: Now) {
        match (self.tasks.is_empty(), self.hold.since.is_some()) {
            (false, false) => self.enter_held(now),
            (true, true) => self.enter_idle(now.wall, now),
            _ => {}
        }
    }

    /// The idle -> held edge.
    fn enter_held(&mut self, now: Now) {
        match self.events.edge_cause(crate::events::EventKind::Held) {
            Some(cause) => log_edge("held: the first task is live", cause),
            None => info!(live = self.tasks.len(), "held: tasks are live"),
        }
        self.hold.since = Some(now.mono);
        self.hold.idle_since = None;
        self.edges.push(Edge::Held);
    }

    /// The held -> idle edge at `at`.
    fn enter_idle(&mut self, at: Timestamp, now: Now) {
        match self.events.edge_cause(crate::events::EventKind::Idle) {
            Some(cause) => log_edge("idle: the last task is gone", cause),
            None => info!("idle: no task is live"),
        }
        self.hold.before = self.hold.total(now.mono);
        self.hold.since = None;
        self.hold.idle_since = Some(at);
        self.edges.push(Edge::Idle { at });
    }

    /// Makes `watched` match the committed binding of `name`, saying so in
    /// [`WatchChange`]s.
    fn sync_watch(&mut self, name: &TaskName) {
        let wanted = self.tasks.binding_of(name);
        let current = self.watched.get(name).copied();
        if current == wanted {
            return;
        }
        if current.is_some() {
            self.watched.remove(name);
            self.watch_changes.push(WatchChange::Unwatch(name.clone()));
        }
        if let Some(binding) = wanted {
            self.watched.insert(name.clone(), binding);
            self.watch_changes
                .push(WatchChange::Watch(name.clone(), binding));
        }
    }

    /// Watches every bound task (after a load) and drops watches of tasks
    /// that are no longer bound so.
    fn resync_watches(&mut self) {
        let stale: Vec<TaskName> = self
            .watched
            .iter()
            .filter(|(name, binding)| self.tasks.binding_of(name) != Some(**binding))
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            self.sync_watch(&name);
        }
        let bound: Vec<TaskName> = self.tasks.bound().map(|(name, _)| name.clone()).collect();
        for name in bound {
            self.sync_watch(&name);
        }
    }
}

/// Logs a held or idle edge with the task event that caused it.
fn log_edge(message: &str, cause: &Event) {
    if let Some(task) = &cause.task {
        info!(task = %task, event = %cause.kind, "{message}");
    }
}

/// The head of an event stream and the replay of retained events after
/// `since` (none without it).
fn event_stream_head(
    events: &EventLog,
    request: &Request,
    since: Option<u64>,
    date: &HttpDate,
) -> Vec<u8> {
    let mut out = api::stream_head(request.minor_version, date);
    if let Some(since) = since {
        if events.has_gap_after(since) {
            let notice = serde_json::json!({
                "event": "gap",
                "error": format!("events after {since} are older than the retained history; some were lost"),
            });
            let mut line = notice.to_string().into_bytes();
            line.push(b'\n');
            api::stream_chunk(request.minor_version, &line, &mut out);
        }
        let mut line = Vec::new();
        for event in events.since(since) {
            line.clear();
            event.write_line(&mut line);
            api::stream_chunk(request.minor_version, &line, &mut out);
        }
    }
    out
}
