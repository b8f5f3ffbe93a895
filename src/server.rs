//! The reactor: one thread, one `mio::Poll` for the listener, every
//! connection and the signals, with the next deadline (a task's expiry, a
//! connection's timeout) as the poll timeout.
//!
//! Each turn: read what the ready connections sent; plan due expiries and
//! every complete request's command into one [`Batch`]; commit the batch in
//! one write transaction; apply it to memory; write the responses. Reads are
//! answered from the committed state. A fault ends one connection, never the
//! server.
//!
//! Bound tasks' processes are watched here too: each pidfd is registered
//! with the poll, and its exit is planned as a release like an expiry.
//!
//! The only module that touches mio and the only reader of the clocks.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mio::net::{UnixListener, UnixStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGCHLD, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use tracing::{debug, error, info, warn};

use crate::api::{self, Query, Routed};
use crate::conn::{Conn, Deadline, Next, Reply, Timeouts};
use crate::daemon_log::{Noise, TaskLines, log_change, log_summaries, note_refusal};
use crate::events::{Event, EventKind, EventLines, EventLog};
use crate::hooks::{HookConfig, Hooks};
use crate::http::{Answering, HttpDate, Limits, Request};
use crate::logging::{FOLD_WINDOW, Folder};
use crate::metrics::{Gauges, Metrics};
use crate::process::{self, Credentials};
use crate::shares::{Refused, ShareLimits, Shares};
use crate::store::{Store, StoreError};
use crate::systemd::{Inherited, Notifier, ServiceEnv};
use crate::tasks::{
    Batch, Binding, Change, Command, Holder, Outcome, Ownership, Removal, TaskError, TaskName,
    Tasks,
};
use crate::time::{ClockStep, ReactorClock, Reading, Timestamp, read_clocks};

const LISTENER: Token = Token(0);
const SIGNALS: Token = Token(1);
/// Connection tokens start here and are never reused.
const FIRST_CONN: usize = 2;
/// Tokens of the pidfds that watch bound processes start here, far above
/// any connection token (2^62 connections would take centuries), and are
/// never reused either: a late event for a dropped watch finds no owner.
const FIRST_WATCH: usize = 1 << (usize::BITS - 2);

/// Events taken from one `poll` call.
const EVENT_CAPACITY: usize = 1024;

/// Longest sleep between turns, so a wall clock stepped forward (a resumed
/// VM) is noticed within this and due tasks expire on time.
const MAX_POLL_SLEEP: Duration = Duration::from_secs(1);

/// After `accept` fails for lack of descriptors, wait this long before trying
/// again (or until a connection closes), instead of spinning on the backlog.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// After a failed commit, wait this long before retrying due expiries, so a
/// broken disk does not turn the reactor into a busy loop.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// Most connections accepted in one turn. A flood of connects (refused or
/// not) is taken in slices, with the open connections served in between.
pub const MAX_ACCEPTS_PER_TURN: usize = 64;

/// Full log lines per kind and uid in each [`FOLD_WINDOW`] for what an
/// outside party can repeat at will (refusals, failed commits); the rest
/// are summarised.
const WARNINGS_PER_WINDOW: u32 = 1;

/// Full `task created/deleted/expired/released` lines per uid and kind in
/// each [`FOLD_WINDOW`]: every one on a quiet machine, a summary under churn.
const TASK_LINES_PER_WINDOW: u32 = 10;

/// Most replies one connection may have queued in one turn. Past it the
/// connection is not read again until its output drains: a client that
/// pipelines thousands of requests gets them answered in slices, and others
/// get their turn in between.
pub const MAX_PIPELINED: usize = 64;

/// Most expiries committed in one turn. Tasks falling due by the thousand
/// (a fleet of agents started together) are removed in slices, with other
/// clients' requests answered between them; until then they are invisible.
/// A slice of 1024 commits in about 5 ms.
pub const MAX_EXPIRIES_PER_TURN: usize = 1024;

/// Output buffered for one connection above which no more of its requests are
/// read (the client is not reading its answers).
pub const MAX_OUTPUT_BACKLOG: usize = 256 * 1024;

/// The last line a stream consumer that fell behind receives.
const LAGGED_LINE: &[u8] = b"{\"event\":\"lagged\",\"error\":\"this consumer did not keep up with the events and was cut off; reconnect with ?since=<last seq> to resume\"}\n";

/// Daemon settings; `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct Config {
    /// Path of the Unix socket.
    pub socket: PathBuf,
    /// Permission bits of the socket file.
    pub socket_mode: u32,
    pub limits: Limits,
    pub timeouts: Timeouts,
    /// Connections in all, the reserve kept for root, and each other
    /// uid's share of connections and event streams.
    pub shares: ShareLimits,
    /// Live tasks above which creation is refused (507).
    pub max_tasks: usize,
    /// Tasks bound to a process above which binding is refused (507).
    pub max_bound: usize,
    /// Who may refresh or delete a task, and the per-uid quota.
    pub ownership: Ownership,
    /// Longest `expire` accepted.
    pub max_expire: Duration,
    /// How long a shutdown waits for in-flight responses to be written.
    pub shutdown_grace: Duration,
    /// Commands run at the held/idle edges.
    pub hooks: HookConfig,
    /// Events kept for `GET /v1/events?since=`.
    pub event_retention: usize,
}

impl Config {
    /// The default socket path, shared with the client.
    pub const DEFAULT_SOCKET: &'static str = "/.sprite/api.sock";
    /// The database file name, beside the socket unless `--db` says otherwise.
    pub const DEFAULT_DB_NAME: &'static str = "tasks.redb";
    /// Read and write for everyone: holding the machine awake grants nothing
    /// that running a busy process would not, and agents may run as other
    /// users. Restrict it with `--socket-mode` where users do not trust
    /// each other.
    pub const DEFAULT_SOCKET_MODE: u32 = 0o666;
    /// Time for in-flight responses at SIGTERM.
    pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

    /// The default database path for a socket path.
    pub fn default_db_for(socket: &Path) -> PathBuf {
        socket
            .parent()
            .unwrap_or(Path::new("."))
            .join(Config::DEFAULT_DB_NAME)
    }

    /// The most input buffered per connection: the largest request the
    /// framer accepts, so every request it can accept also arrives.
    fn max_input(&self) -> usize {
        self.limits.max_request_bytes()
    }

    /// An empty state with this configuration's limits and ownership.
    fn new_tasks(&self) -> Tasks {
        Tasks::new(self.max_tasks)
            .with_max_bound(self.max_bound)
            .with_ownership(self.ownership)
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            socket: PathBuf::from(Config::DEFAULT_SOCKET),
            socket_mode: Config::DEFAULT_SOCKET_MODE,
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            shares: ShareLimits::default(),
            max_tasks: crate::tasks::DEFAULT_MAX_TASKS,
            max_bound: crate::tasks::DEFAULT_MAX_BOUND,
            ownership: Ownership::Owned {
                max_per_uid: crate::tasks::default_max_tasks_per_uid(
                    crate::tasks::DEFAULT_MAX_TASKS,
                ),
            },
            max_expire: crate::expire::DEFAULT_MAX_EXPIRE,
            shutdown_grace: Config::DEFAULT_SHUTDOWN_GRACE,
            hooks: HookConfig {
                grace: crate::hooks::DEFAULT_GRACE,
                ..HookConfig::default()
            },
            event_retention: crate::events::DEFAULT_RETENTION,
        }
    }
}

/// Errors that stop the daemon from starting or running.
#[derive(Debug)]
#[non_exhaustive]
pub enum ServerError {
    /// Another process answers on the socket.
    SocketInUse(PathBuf),
    /// Something that is not a socket sits at the socket path.
    NotASocket(PathBuf),
    /// The socket passed by the service manager cannot be served.
    Inherited(io::Error),
    /// Binding or setting up the socket failed.
    Socket { path: PathBuf, source: io::Error },
    /// The poll or signal machinery failed.
    Reactor(io::Error),
    /// The store could not be opened or loaded.
    Store(StoreError),
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::SocketInUse(path) => write!(
                f,
                "another process is serving on {}; stop it or pass another --socket",
                path.display()
            ),
            ServerError::NotASocket(path) => write!(
                f,
                "{} exists and is not a socket; it was left untouched: remove it or pass another --socket",
                path.display()
            ),
            ServerError::Socket { path, source } => {
                write!(f, "cannot listen on {}: {source}", path.display())
            }
            ServerError::Inherited(source) => {
                write!(f, "cannot serve the socket passed by systemd: {source}")
            }
            ServerError::Reactor(source) => write!(f, "event loop failed: {source}"),
            ServerError::Store(source) => write!(f, "{source}"),
        }
    }
}

impl std::error::Error for ServerError {}

impl From<StoreError> for ServerError {
    fn from(error: StoreError) -> Self {
        ServerError::Store(error)
    }
}

/// Counters, logged at shutdown.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub requests: u64,
    pub commits: u64,
    pub changes: u64,
    pub failed_commits: u64,
    pub expired: u64,
}

/// A planned command's route label (for the metrics) and outcome.
type Planned = (&'static str, Result<Outcome, TaskError>);
type Connection = Conn<UnixStream, Planned>;

/// The daemon: the reactor and everything it owns.
pub struct Server {
    config: Config,
    poll: Poll,
    listener: Option<UnixListener>,
    /// The listening socket was passed by the service manager, which keeps
    /// it open across our restarts: it is never unlinked.
    socket_inherited: bool,
    /// Readiness, status and watchdog pings for systemd.
    notifier: Notifier,
    signals: Signals,
    conns: HashMap<Token, Connection>,
    /// Each connection's peer: its credentials from `accept`, and the
    /// holder read from `/proc` at its first create or refresh (once per
    /// connection, so a heartbeat on a kept-alive connection costs one
    /// read of `/proc`).
    peers: HashMap<Token, Peer>,
    /// The pidfd watching each bound task's process.
    ///
    /// Invariant: `watched` maps each watch's token to its task, one entry
    /// per entry of `watches`; both change only through `watch` and
    /// `unwatch`. Each watch's binding is the task's as last committed.
    watches: HashMap<TaskName, Watch>,
    watched: HashMap<Token, TaskName>,
    next_watch_token: usize,
    /// Pidfds opened while planning this turn's bindings, watched once
    /// the batch is committed (dropped if it is not).
    staged: HashMap<TaskName, (Binding, OwnedFd)>,
    /// Bound processes that exited (or could not be watched): their tasks
    /// are released by the next commit.
    exited: Vec<(TaskName, Binding)>,
    next_token: usize,
    ready: VecDeque<Token>,
    tasks: Tasks,
    store: Store,
    clock: ReactorClock,
    /// The `Date` of responses, formatted once per second of `clock`.
    date: HttpDate,
    metrics: Metrics,
    events: EventLog,
    /// Events committed this turn, sent to the streams after the replies.
    to_broadcast: Vec<EventLines>,
    /// Connections carrying an event stream.
    streams: Vec<Token>,
    /// Each uid's connections and streams against its share.
    shares: Shares,
    /// Warnings an outside party can repeat, folded into summaries.
    log_folder: Folder<Noise>,
    /// Per-task lines, folded per uid under churn.
    task_log: TaskLines,
    hooks: Hooks,
    /// Since when the machine is held (monotonic), while it is.
    held_since: Option<Instant>,
    /// Time held before `held_since`.
    held_before: Duration,
    /// When the last hold ended, if known.
    idle_since: Option<Timestamp>,
    /// The earliest connection deadline might be this early.
    next_sweep: Option<Instant>,
    accept_paused_until: Option<Instant>,
    store_retry_at: Option<Instant>,
    /// A failed commit left memory and disk possibly different, and the
    /// store could not be reloaded yet.
    needs_reload: bool,
    /// Why this turn's batch was refused without touching the disk (the
    /// log is full), for its clients' 503.
    refusal: Option<String>,
    shutdown_by: Option<Instant>,
    /// A step back of the wall clock whose moved holds were being
    /// committed when the commit failed: its event's sequence number and
    /// the step. If the reload finds that event on disk, the step is
    /// followed then.
    unsettled_step_back: Option<(u64, Duration)>,
}

impl Server {
    /// Loads `store`, expires what fell due while the daemon was down (one
    /// commit), and binds the socket. The store must already be open, so
    /// its lock is held before the socket path is touched.
    ///
    /// # Errors
    /// [`ServerError`] when the store cannot be loaded or the socket bound.
    pub fn new(config: Config, store: Store) -> Result<Server, ServerError> {
        Server::with_service(config, store, ServiceEnv::none())
    }

    /// As [`new`](Self::new), under a service manager: serves the socket it
    /// passed (instead of binding `config.socket`) and notifies it.
    ///
    /// # Errors
    /// As for [`new`](Self::new); [`ServerError::Inherited`] when the passed
    /// socket cannot be registered.
    pub fn with_service(
        config: Config,
        mut store: Store,
        service: ServiceEnv,
    ) -> Result<Server, ServerError> {
        match process::raise_descriptor_limit() {
            Ok(limit) => debug!(limit, "descriptor limit raised to the hard limit"),
            Err(e) => warn!(error = %e, "cannot raise the descriptor limit"),
        }
        let loaded = store.load()?;
        let mut tasks = config.new_tasks();
        tasks.load(loaded.tasks);
        let events = EventLog::new(config.event_retention, loaded.events);
        let idle_since = events
            .last_edge()
            .filter(|edge| edge.kind == EventKind::Idle)
            .map(|edge| edge.at);
        let (wall, mono) = read_clocks();
        // The newest event is the daemon's time at its last commit.
        let back_while_down = ClockStep::back_while_down(events.last_at(), wall);
        let clock = ReactorClock::new(wall, mono);
        let poll = Poll::new().map_err(ServerError::Reactor)?;
        let mut signals = Signals::new([SIGTERM, SIGINT, SIGCHLD]).map_err(ServerError::Reactor)?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)
            .map_err(ServerError::Reactor)?;
        let hooks = Hooks::new(config.hooks.clone());
        let shares = Shares::new(config.shares, process::effective_uid());
        let mut server = Server {
            config,
            poll,
            listener: None,
            socket_inherited: service.listener.is_some(),
            notifier: service.notifier,
            signals,
            conns: HashMap::new(),
            peers: HashMap::new(),
            watches: HashMap::new(),
            watched: HashMap::new(),
            next_watch_token: FIRST_WATCH,
            staged: HashMap::new(),
            exited: Vec::new(),
            next_token: FIRST_CONN,
            ready: VecDeque::new(),
            tasks,
            store,
            date: HttpDate::at(unix_second(clock.last())),
            clock,
            metrics: Metrics::default(),
            events,
            to_broadcast: Vec::new(),
            streams: Vec::new(),
            shares,
            log_folder: Folder::new(FOLD_WINDOW, WARNINGS_PER_WINDOW),
            task_log: Folder::new(FOLD_WINDOW, TASK_LINES_PER_WINDOW),
            hooks,
            held_since: None,
            held_before: Duration::ZERO,
            idle_since,
            next_sweep: None,
            accept_paused_until: None,
            store_retry_at: None,
            needs_reload: false,
            refusal: None,
            shutdown_by: None,
            unsettled_step_back: None,
        };

        // What the clock did and what fell due while the daemon was down
        // go in one commit, with the tasks whose bound process exited
        // meanwhile (or whose pid now names another process); the others
        // are watched again.
        let now = server.clock.last();
        let mut batch = Batch::new();
        let expired = server.check_loaded(&mut batch, now, back_while_down);
        server.resync_watches();
        let exited = std::mem::take(&mut server.exited);
        let released = exited
            .iter()
            .filter(|(name, binding)| server.tasks.release(&mut batch, name, *binding))
            .count();
        if !batch.is_empty() && !server.commit(batch, now, mono) {
            return Err(ServerError::Store(StoreError::Io(
                "cannot commit the expiries and releases that fell due while the daemon was down"
                    .into(),
            )));
        }
        server.to_broadcast.clear();
        // Held from the previous run: the hook starts with the daemon.
        server.follow_hold(now, mono);
        if server.tasks.is_empty() {
            server.hooks.start_idle(server.idle_since, now);
        }

        let mut listener = match service.listener {
            Some(inherited) => {
                let (listener, path) = adopt(inherited)?;
                if let Some(path) = path {
                    server.config.socket = path;
                }
                listener
            }
            None => bind(&server.config.socket, server.config.socket_mode)?,
        };
        server
            .poll
            .registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(ServerError::Reactor)?;
        server.listener = Some(listener);
        info!(
            socket = %server.config.socket.display(),
            socket_activated = server.socket_inherited,
            db = %server.store.path().display(),
            live_tasks = server.tasks.len(),
            expired_while_down = expired,
            released_while_down = released,
            bound = server.watches.len(),
            quarantined = loaded.quarantined.len(),
            replayed_log_frames = loaded.replayed,
            next_event = server.events.next_seq(),
            "sprite-tasksd listening"
        );
        Ok(server)
    }

    /// Serves until SIGTERM or SIGINT, then finishes in-flight responses,
    /// removes the socket file and returns the counters.
    ///
    /// # Errors
    /// [`ServerError::Reactor`] if `poll` itself fails.
    pub fn run(mut self) -> Result<Stats, ServerError> {
        let mut events = Events::with_capacity(EVENT_CAPACITY);
        let status = self.service_status();
        self.notifier.ready(&status, Instant::now());
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != io::ErrorKind::Interrupted
            {
                return Err(ServerError::Reactor(e));
            }
            let (wall, mono) = read_clocks();
            let reading = self.clock.observe(wall, mono);
            let now = self.follow_clock(reading, mono);
            self.date.advance(unix_second(now));
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(mono),
                    SIGNALS => self.take_signals(mono),
                    token if token.0 >= FIRST_WATCH => self.on_exit(token),
                    token => self.on_conn_event(token, event, mono),
                }
            }
            if self.accept_paused_until.is_some_and(|at| at <= mono) {
                self.accept_all(mono);
            }
            self.turn(now, mono);
            log_summaries(&mut self.log_folder, &mut self.task_log, mono);
            self.store.poll(mono);
            self.sweep(mono);
            self.hooks.poll(mono);
            self.hooks.poll_idle(now, !self.tasks.is_empty());
            self.notifier.watchdog(mono);
            if self.shutdown_by.is_none() && self.notifier.is_enabled() {
                let status = self.service_status();
                self.notifier.status(&status);
            }
            if let Some(by) = self.shutdown_by
                && ((self.conns.is_empty() && self.hooks.is_empty()) || mono >= by)
            {
                break;
            }
        }
        self.hooks.kill_all();
        // What waits in the log goes into the database now, so the next
        // start replays nothing. A failure here loses nothing: the log
        // still holds it.
        if !self.needs_reload
            && let Err(e) = self.store.checkpoint_now()
        {
            warn!(error = %e, "the final checkpoint failed; the next start replays the log");
        }
        let stats = Stats {
            requests: self.metrics.requests(),
            commits: self.metrics.commits(),
            changes: self.metrics.changes(),
            failed_commits: self.metrics.commit_failures,
            expired: self.metrics.expired,
        };
        info!(
            requests = stats.requests,
            commits = stats.commits,
            changes = stats.changes,
            failed_commits = stats.failed_commits,
            expired = stats.expired,
            unanswered_connections = self.conns.len(),
            "sprite-tasksd stopped"
        );
        Ok(stats)
    }

    fn poll_timeout(&self) -> Duration {
        if !self.ready.is_empty() || (!self.exited.is_empty() && self.store_retry_at.is_none()) {
            return Duration::ZERO;
        }
        let mono = Instant::now();
        let mut timeout = MAX_POLL_SLEEP;
        let mut until = |at: Instant| timeout = timeout.min(at.saturating_duration_since(mono));
        if let Some(at) = self.next_sweep {
            until(at);
        }
        if let Some(at) = self.accept_paused_until {
            until(at);
        }
        if let Some(at) = self.shutdown_by {
            until(at);
        }
        if let Some(at) = self.hooks.next_deadline() {
            until(at);
        }
        if let Some(at) = self.store.next_deadline() {
            until(at);
        }
        if let Some(at) = self.notifier.next_deadline() {
            until(at);
        }
        for at in [self.log_folder.next_due(), self.task_log.next_due()]
            .into_iter()
            .flatten()
        {
            until(at);
        }
        match self.store_retry_at {
            Some(at) => until(at),
            None => {
                if let Some(deadline) = self.tasks.next_deadline() {
                    timeout = timeout.min(deadline.saturating_since(self.clock.last()));
                }
            }
        }
        if let Some(due) = self.hooks.on_idle_due() {
            timeout = timeout.min(due.saturating_since(self.clock.last()));
        }
        timeout
    }

    fn take_signals(&mut self, mono: Instant) {
        let mut stop = false;
        for signal in self.signals.pending() {
            stop |= signal == SIGTERM || signal == SIGINT;
        }
        if stop && self.shutdown_by.is_none() {
            info!("signal received: finishing in-flight requests and stopping");
            self.notifier
                .stopping("stopping: finishing in-flight requests");
            self.shutdown_by = Some(mono + self.config.shutdown_grace);
            if let Some(mut listener) = self.listener.take() {
                let _ = self.poll.registry().deregister(&mut listener);
            }
            // A passed socket stays with the service manager: connections
            // made while we restart wait in its backlog for the next daemon.
            if !self.socket_inherited {
                remove_socket(&self.config.socket);
            }
            self.hooks.stop_while_held(mono);
            let max_input = self.config.max_input();
            let tokens: Vec<Token> = self.conns.keys().copied().collect();
            for token in tokens {
                let mut broken = false;
                if let Some(conn) = self.conns.get_mut(&token) {
                    // Whatever has arrived is answered, including requests
                    // still in the kernel's buffer; nothing more is read.
                    conn.mark_readable();
                    broken = conn.read_available(max_input, mono).is_err();
                    conn.stop_reading();
                    if let Some(version) = conn.stream_version() {
                        conn.push_output(mono, |out| api::stream_end(version, out));
                        conn.end_stream();
                    }
                }
                if broken {
                    self.close(token);
                } else {
                    self.schedule(token);
                }
            }
        }
    }

    /// Accepts what waits, at most [`MAX_ACCEPTS_PER_TURN`] a turn: each
    /// connection is admitted by its peer's uid ([`Shares`]) or answered
    /// 503 and closed at once, before it costs a registration.
    fn accept_all(&mut self, mono: Instant) {
        self.accept_paused_until = None;
        for _ in 0..MAX_ACCEPTS_PER_TURN {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((stream, _)) => self.admit(stream, mono),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM: connections wait in the
                    // backlog until a descriptor frees up or the retry timer.
                    if self.log_folder.admit(&Noise::AcceptFailed, mono) {
                        warn!(error = %e, open = self.conns.len(), "accept failed; pausing new connections");
                    }
                    self.accept_paused_until = Some(mono + ACCEPT_RETRY);
                    return;
                }
            }
        }
        // More may wait: edge-triggered readiness will not say so again,
        // so the next turn comes back at once.
        self.accept_paused_until = Some(mono);
    }

    /// Registers an accepted connection, or refuses it for its uid's share.
    fn admit(&mut self, mut stream: UnixStream, mono: Instant) {
        let credentials = match process::peer_credentials(stream.as_raw_fd()) {
            Ok(credentials) => Some(credentials),
            Err(e) => {
                debug!(error = %e, "no peer credentials; holders will be unknown");
                None
            }
        };
        let uid = credentials.map(|credentials| credentials.uid);
        if let Err(refused) = self.shares.connect(uid) {
            self.metrics.connection_refused(refused.cause());
            reject_connection(&mut stream, &refused, &self.date);
            if self
                .log_folder
                .admit(&Noise::Refused(refused.cause(), uid), mono)
            {
                warn!(uid = ?uid, "connection refused: {refused}");
            }
            return;
        }
        let token = Token(self.next_token);
        self.next_token += 1;
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, token, Interest::READABLE)
        {
            self.shares.disconnect(uid, false);
            if self.log_folder.admit(&Noise::AcceptFailed, mono) {
                warn!(error = %e, "cannot register a new connection");
            }
            return;
        }
        self.metrics.connections_accepted += 1;
        self.peers.insert(
            token,
            Peer {
                credentials,
                holder: None,
                streaming: false,
            },
        );
        let conn = Conn::new(stream, mono);
        self.note_deadline(conn.deadline(&self.config.timeouts).map(|(at, _)| at));
        self.conns.insert(token, conn);
    }

    fn on_conn_event(&mut self, token: Token, event: &mio::event::Event, mono: Instant) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        let mut wake = false;
        if event.is_read_closed() || event.is_error() {
            conn.mark_hung_up();
            wake = true;
        } else if event.is_readable() {
            conn.mark_readable();
            wake = true;
        }
        if event.is_writable() && conn.output_pending() > 0 {
            if conn.flush(mono).is_err() || conn.is_finished() {
                self.close(token);
                return;
            }
            // A drained backlog lets the connection's requests be read again.
            wake |= conn.output_pending() == 0;
        }
        self.follow_output(token);
        if wake {
            self.schedule(token);
        }
    }

    /// Asks for WRITABLE readiness exactly while output is pending: most
    /// responses go out in one write, and an idle WRITABLE interest would
    /// wake the reactor for nothing.
    fn follow_output(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        let wanted = conn.output_pending() > 0;
        if wanted == conn.watching_writable {
            return;
        }
        let interest = if wanted {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        match self
            .poll
            .registry()
            .reregister(conn.stream_mut(), token, interest)
        {
            Ok(()) => conn.watching_writable = wanted,
            Err(e) => {
                warn!(error = %e, "cannot change a connection's interest; closing it");
                self.close(token);
            }
        }
    }

    fn schedule(&mut self, token: Token) {
        if let Some(conn) = self.conns.get_mut(&token)
            && !conn.scheduled
        {
            conn.scheduled = true;
            self.ready.push_back(token);
        }
    }

    /// Reads, plans, commits, applies and answers.
    fn turn(&mut self, now: Timestamp, mono: Instant) {
        let mut batch = Batch::new();
        let store_ready = self.store_ready(now, mono);
        if store_ready && self.store_retry_at.is_none_or(|at| at <= mono) {
            self.store_retry_at = None;
            self.tasks
                .expire_due_at_most(&mut batch, now, MAX_EXPIRIES_PER_TURN);
            // Releases that a failed commit left are retried here too; one
            // that is moot (the task gone or bound anew) is dropped, so the
            // queue never keeps the reactor awake for nothing.
            let tasks = &self.tasks;
            self.exited
                .retain(|(name, binding)| tasks.release(&mut batch, name, *binding));
        }
        let mut touched = Vec::with_capacity(self.ready.len());
        let mut again = Vec::new();
        while let Some(token) = self.ready.pop_front() {
            if let Some(conn) = self.conns.get_mut(&token) {
                conn.scheduled = false;
            }
            match self.take_requests(token, &mut batch, now, mono) {
                Ok(more) => {
                    if more {
                        again.push(token);
                    }
                    touched.push(token);
                }
                Err(()) => self.close(token),
            }
        }
        // Connections with nothing waiting for the commit are answered
        // before its fsync: reads never wait for other clients' writes.
        touched.retain(|token| {
            let waits = self.conns.get(token).is_some_and(Connection::has_planned);
            if !waits {
                self.deliver(*token, true, mono);
            }
            waits
        });
        // While memory may differ from disk nothing is committed: every
        // change of the turn gets 503.
        let committed = if batch.is_empty() {
            true
        } else if store_ready {
            self.commit(batch, now, mono)
        } else {
            self.metrics.commit_failures += 1;
            false
        };
        for token in touched {
            self.deliver(token, committed, mono);
        }
        self.refusal = None;
        self.broadcast(mono);
        for token in again {
            self.schedule(token);
        }
    }

    /// Takes the connection's complete requests into the batch. Returns
    /// whether it should be processed again next turn; `Err` if it broke.
    fn take_requests(
        &mut self,
        token: Token,
        batch: &mut Batch,
        now: Timestamp,
        mono: Instant,
    ) -> Result<bool, ()> {
        let max_input = self.config.max_input();
        let open_connections = self.conns.len();
        let Some(conn) = self.conns.get_mut(&token) else {
            return Ok(false);
        };
        conn.read_available(max_input, mono).map_err(|_| ())?;
        if conn.stream_abandoned() {
            return Err(());
        }
        loop {
            if conn.is_closing() || conn.output_pending() > MAX_OUTPUT_BACKLOG {
                // A backlog is resumed by the writable event that drains it.
                return Ok(false);
            }
            if conn.queued_len() >= MAX_PIPELINED {
                return Ok(true);
            }
            match conn.next_request(&self.config.limits, mono) {
                Next::Request(request) => {
                    let label = api::route_label(&request);
                    let reply = match api::route(&request, self.config.max_expire) {
                        Routed::Mutation { command, bind_pid } => {
                            let caller = self.peers.get(&token).and_then(Peer::uid);
                            let mut command = command.from_caller(caller);
                            let mut staged = None;
                            let mut refusal = None;
                            if let Command::Create { name, claim, .. }
                            | Command::Upsert { name, claim, .. } = &mut command
                            {
                                claim.holder = self.peers.get_mut(&token).and_then(Peer::holder);
                                // A refresh naming the process already watched
                                // for this task (a hold's heartbeat) reuses that
                                // watch without reading /proc: a watch lives until
                                // its pidfd reports the exit, which then
                                // releases the task whatever this refresh says.
                                let watched = self
                                    .watches
                                    .get(&*name)
                                    .map(|watch| watch.binding)
                                    .filter(|binding| Some(binding.pid) == bind_pid);
                                if let Some(binding) = watched {
                                    claim.binding = Some(binding);
                                } else if let Some(pid) = bind_pid {
                                    match process::open_binding(pid) {
                                        Ok((pidfd, start_time)) => {
                                            let binding = Binding { pid, start_time };
                                            claim.binding = Some(binding);
                                            staged = Some((name.clone(), binding, pidfd));
                                        }
                                        Err((status, message)) => {
                                            refusal = Some(api::error(status, message));
                                        }
                                    }
                                }
                            }
                            match refusal {
                                Some(response) => Reply::Ready(response),
                                None => {
                                    let name = command.name().clone();
                                    let planned = self.tasks.plan(batch, command, now);
                                    if let Err(e) = &planned {
                                        note_refusal(
                                            &mut self.metrics,
                                            &mut self.log_folder,
                                            (e, caller, &name, label),
                                            mono,
                                        );
                                    }
                                    if let (Ok(_), Some((name, binding, pidfd))) =
                                        (&planned, staged)
                                    {
                                        self.staged.insert(name, (binding, pidfd));
                                    }
                                    Reply::Planned((label, planned))
                                }
                            }
                        }
                        Routed::Query(_) if conn.has_planned() => {
                            // Reads see committed state only: this one waits
                            // for the commit of the changes queued before it.
                            conn.hold_back(request);
                            return Ok(true);
                        }
                        Routed::Query(Query::Events { since }) => {
                            let peer = self.peers.get_mut(&token);
                            let uid = peer.as_ref().and_then(|peer| peer.uid());
                            match self.shares.start_stream(uid) {
                                Err(refused) => {
                                    self.metrics.connection_refused(refused.cause());
                                    let noise = Noise::Refused(refused.cause(), uid);
                                    if self.log_folder.admit(&noise, mono) {
                                        warn!(uid = ?uid, "event stream refused: {refused}");
                                    }
                                    Reply::Ready(api::error(503, refused.to_string()))
                                }
                                Ok(()) => {
                                    if let Some(peer) = peer {
                                        peer.streaming = true;
                                    }
                                    let head = event_stream_head(
                                        &self.events,
                                        &request,
                                        since,
                                        &self.date,
                                    );
                                    conn.queue(Reply::Raw(head), request.minor_version, true);
                                    conn.start_stream(request.minor_version);
                                    self.metrics.request(label, 200);
                                    self.streams.push(token);
                                    return Ok(false);
                                }
                            }
                        }
                        Routed::Query(Query::Metrics) => {
                            let store = self.store.counters();
                            let gauges = Gauges {
                                live_tasks: self.tasks.live(now).count(),
                                bound_tasks: self.watches.len(),
                                held: self.held_since.is_some(),
                                held_seconds: held_total(self.held_before, self.held_since, mono)
                                    .as_secs_f64(),
                                connections: open_connections,
                                streams: self.streams.len(),
                                log_used_bytes: store.log_used,
                                log_size_bytes: store.log_size,
                                checkpoints: store.checkpoints,
                                checkpoint_failures: store.checkpoint_failures,
                            };
                            let counts = self.hooks.counts();
                            self.metrics.hook_runs = counts.started;
                            self.metrics.hook_failures = counts.failed;
                            Reply::Ready(api::metrics_page(self.metrics.render(&gauges)))
                        }
                        Routed::Query(query) => {
                            Reply::Ready(api::answer(&query, &self.tasks, self.idle_since, now))
                        }
                        Routed::Reply(response) => Reply::Ready(response),
                    };
                    if let Reply::Ready(response) = &reply {
                        self.metrics.request(label, response.status);
                    }
                    conn.queue(reply, request.minor_version, request.keep_alive);
                }
                Next::NeedMore => {
                    if conn.is_closing()
                        || !conn.can_read_more(max_input)
                        || !conn.read_available(max_input, mono).map_err(|_| ())?
                    {
                        return Ok(false);
                    }
                }
                Next::Invalid(e) => {
                    debug!(status = e.status, reason = %e.message, "refused a request");
                    self.metrics.request("other", e.status);
                    conn.queue(Reply::Ready(api::error(e.status, e.message)), 1, false);
                    return Ok(false);
                }
            }
        }
    }

    /// Plans, for the rows just loaded at `now`, following a step back of
    /// the clock while the daemon was down, bounding expiries no sane clock
    /// wrote, and removing what fell due; logs and counts the first two.
    /// Returns how many rows fell due.
    fn check_loaded(
        &mut self,
        batch: &mut Batch,
        now: Timestamp,
        back_while_down: Option<Duration>,
    ) -> usize {
        let max_expire = self.config.max_expire;
        let planned = self
            .tasks
            .plan_load(batch, now, max_expire, back_while_down);
        if let Some(behind) = back_while_down {
            self.idle_since = self.idle_since.map(|at| at.saturating_sub(behind));
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

    /// Follows a step of the wall clock that `reading` shows, and returns
    /// the turn's `now`.
    ///
    /// A step forward is already followed by the reading (what fell due
    /// expires); its event is committed with the first expiries. A step back
    /// is followed only once every hold has moved back with it in one
    /// durable commit; until then the reactor stays on its old timeline,
    /// which stretches no hold, and the next turn tries again.
    fn follow_clock(&mut self, reading: Reading, mono: Instant) -> Timestamp {
        let now = reading.now;
        let Some(step) = reading.step else {
            return now;
        };
        let can_commit =
            self.store_ready(now, mono) && self.store_retry_at.is_none_or(|at| at <= mono);
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
                        .expire_due_at_most(&mut batch, now, MAX_EXPIRIES_PER_TURN);
                    self.commit(batch, now, mono);
                }
            }
            ClockStep::Backward(behind) => {
                if !can_commit {
                    return now;
                }
                let after = now.saturating_sub(behind);
                let mut batch = Batch::new();
                let planned = self.tasks.plan_step_back(&mut batch, behind, after);
                self.unsettled_step_back = Some((self.events.next_seq(), behind));
                if self.commit(batch, after, mono) {
                    self.follow_back(behind);
                    warn!(
                        step_ns = step.as_signed_nanos(),
                        moved = planned.moved,
                        expired = planned.expired,
                        "the wall clock was set back; every hold moved back with it and keeps its remaining time"
                    );
                } else if !self.needs_reload {
                    // Memory matches the disk (reloaded, or nothing was
                    // written): followed already, or to be tried again.
                    self.unsettled_step_back = None;
                }
            }
        }
        // A refusal here is not the reason for this turn's clients' 503s.
        self.refusal = None;
        self.clock.last()
    }

    /// Moves the reactor's timeline back by `behind` once the holds have
    /// moved with it on disk and in memory.
    fn follow_back(&mut self, behind: Duration) {
        self.unsettled_step_back = None;
        self.clock.follow_back(behind);
        self.idle_since = self.idle_since.map(|at| at.saturating_sub(behind));
        self.metrics.clock_steps_backward += 1;
    }

    /// Commits the batch with its events and applies it; on failure
    /// reloads memory from disk. Returns whether the commit succeeded.
    fn commit(&mut self, batch: Batch, now: Timestamp, mono: Instant) -> bool {
        let rows_before = self.tasks.len();
        let rows_after = rows_before.saturating_add_signed(batch.rows_delta());
        let events = self.events.plan(
            batch.clock_step(),
            batch.changes(),
            rows_before,
            rows_after,
            now,
        );
        let keep_from = events
            .last()
            .map_or(0, |last| self.events.oldest_kept_after(last.seq));
        let lines = EventLines::new(&events);
        let started = Instant::now();
        let trim_slack = self.events.trim_slack();
        match self
            .store
            .commit_batch(batch.changes(), &lines, keep_from, trim_slack)
        {
            Ok(()) => {
                let took = started.elapsed();
                self.metrics.commit(batch.len(), took);
                debug!(
                    changes = batch.len(),
                    micros = took.as_micros() as u64,
                    "committed"
                );
                let mut touched = Vec::with_capacity(batch.len());
                for change in batch.changes() {
                    match change {
                        Change::Remove {
                            cause: Removal::Expired,
                            ..
                        } => self.metrics.expired += 1,
                        Change::Remove {
                            cause: Removal::Released { .. },
                            ..
                        } => self.metrics.released += 1,
                        _ => {}
                    }
                    let owner = match change {
                        Change::Put { task, .. } => task.owner,
                        Change::Remove { name, .. } => self.tasks.owner_of(name),
                    };
                    log_change(&mut self.task_log, change, owner, mono);
                    touched.push(change.name().clone());
                }
                self.tasks.apply(batch);
                // Releases planned from `exited` are durable now; those moot
                // (the task gone or bound anew) are dropped with them.
                let tasks = &self.tasks;
                self.exited
                    .retain(|(name, binding)| tasks.binding_of(name) == Some(*binding));
                for name in &touched {
                    self.sync_watch(name);
                }
                self.staged.clear();
                self.events.append(&events);
                for event in &events {
                    match event.kind {
                        EventKind::Held => self.enter_held(mono),
                        EventKind::Idle => self.enter_idle(now, mono),
                        _ => {}
                    }
                }
                self.to_broadcast.push(lines);
                true
            }
            Err(StoreError::Full(reason)) => {
                self.staged.clear();
                self.metrics.commit_failures += 1;
                if self.log_folder.admit(&Noise::BatchRefused, mono) {
                    warn!(reason = %reason, changes = batch.len(), "batch refused: the log is full; its clients get 503");
                }
                self.refusal = Some(reason);
                // Due expiries wait for the retry timer instead of spinning.
                self.store_retry_at = Some(mono + STORE_RETRY);
                false
            }
            Err(e) => {
                self.staged.clear();
                self.metrics.commit_failures += 1;
                if self.log_folder.admit(&Noise::CommitFailed, mono) {
                    error!(error = %e, changes = batch.len(), "commit failed; the affected clients get 503");
                }
                // The failed batch may or may not have reached the file:
                // memory is rebuilt from whatever the disk now says.
                self.needs_reload = true;
                self.reload(now, mono);
                // Even when the reload succeeds (it only reads), due
                // expiries wait for the retry timer instead of spinning on
                // a disk that refuses writes; clients still try each turn.
                self.store_retry_at = Some(mono + STORE_RETRY);
                false
            }
        }
    }

    /// Whether memory matches the disk, reloading it first if an earlier
    /// failure left that in doubt. Clients waiting make every turn try;
    /// otherwise the timer tries once per [`STORE_RETRY`], so a dead disk
    /// never makes the reactor spin.
    fn store_ready(&mut self, now: Timestamp, mono: Instant) -> bool {
        if !self.needs_reload {
            return true;
        }
        if self.ready.is_empty() && self.store_retry_at.is_some_and(|at| at > mono) {
            return false;
        }
        self.reload(now, mono);
        !self.needs_reload
    }

    /// Reopens the store and replaces memory with what is on disk.
    fn reload(&mut self, now: Timestamp, mono: Instant) {
        match self.store.load() {
            Ok(loaded) => {
                let mut tasks = self.config.new_tasks();
                tasks.load(loaded.tasks);
                self.tasks = tasks;
                self.resync_watches();
                self.events = EventLog::new(self.config.event_retention, loaded.events);
                self.needs_reload = false;
                self.store_retry_at = None;
                info!(
                    tasks = self.tasks.len(),
                    "database reopened; state reloaded from disk"
                );
                if let Some((seq, behind)) = self.unsettled_step_back.take()
                    && self.events.next_seq() > seq
                {
                    // The failed commit moving the holds reached the disk.
                    self.follow_back(behind);
                    warn!(
                        step_ns = ClockStep::Backward(behind).as_signed_nanos(),
                        "the wall clock was set back; the holds moved back with it (found on disk after a failed commit)"
                    );
                }
                self.follow_hold(now, mono);
            }
            Err(e) => {
                self.store_retry_at = Some(mono + STORE_RETRY);
                if self.log_folder.admit(&Noise::StoreUnavailable, mono) {
                    error!(error = %e, "database unavailable; changes get 503 until it reopens");
                }
            }
        }
    }

    /// Brings the held/idle bookkeeping and hooks in line with the tasks
    /// held, after a load that did not go through an edge event.
    fn follow_hold(&mut self, now: Timestamp, mono: Instant) {
        match (self.tasks.is_empty(), self.held_since.is_some()) {
            (false, false) => self.enter_held(mono),
            (true, true) => self.enter_idle(now, mono),
            _ => {}
        }
    }

    /// The idle -> held edge.
    fn enter_held(&mut self, mono: Instant) {
        match self.events.edge_cause(EventKind::Held) {
            Some(cause) => log_edge("held: the first task is live", cause),
            None => info!(live = self.tasks.len(), "held: tasks are live"),
        }
        self.held_since = Some(mono);
        self.idle_since = None;
        self.hooks.held();
    }

    /// The held -> idle edge.
    fn enter_idle(&mut self, now: Timestamp, mono: Instant) {
        match self.events.edge_cause(EventKind::Idle) {
            Some(cause) => log_edge("idle: the last task is gone", cause),
            None => info!("idle: no task is live"),
        }
        self.held_before = held_total(self.held_before, self.held_since, mono);
        self.held_since = None;
        self.idle_since = Some(now);
        self.hooks.idle(now, mono);
    }

    /// Sends this turn's committed events to every stream, cutting off a
    /// consumer whose backlog is full.
    fn broadcast(&mut self, mono: Instant) {
        if self.streams.is_empty() {
            self.to_broadcast.clear();
        }
        if self.to_broadcast.is_empty() {
            return;
        }
        let batches = std::mem::take(&mut self.to_broadcast);
        let streams = std::mem::take(&mut self.streams);
        for token in streams {
            let Some(conn) = self.conns.get_mut(&token) else {
                continue;
            };
            let Some(version) = conn.stream_version() else {
                continue;
            };
            let keeping_up = conn.output_pending() <= MAX_OUTPUT_BACKLOG;
            conn.push_output(mono, |out| {
                if keeping_up {
                    for (_, line) in batches.iter().flat_map(EventLines::iter) {
                        api::stream_chunk(version, line, out);
                    }
                } else {
                    api::stream_chunk(version, LAGGED_LINE, out);
                    api::stream_end(version, out);
                }
            });
            if !keeping_up {
                if self.log_folder.admit(&Noise::StreamCutOff, mono) {
                    warn!("an event stream consumer fell behind; cutting it off");
                }
                conn.end_stream();
            }
            let broken = conn.flush(mono).is_err() || conn.is_finished();
            let deadline = conn.deadline(&self.config.timeouts).map(|(at, _)| at);
            if broken {
                self.close(token);
            } else {
                if keeping_up {
                    self.streams.push(token);
                }
                self.note_deadline(deadline);
                self.follow_output(token);
            }
        }
    }

    fn deliver(&mut self, token: Token, committed: bool, mono: Instant) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        let metrics = &mut self.metrics;
        let refusal = &self.refusal;
        conn.render(mono, &self.date, |(label, result)| {
            let response = match (committed, refusal) {
                (true, _) => api::outcome(&result),
                (false, Some(reason)) => api::error(503, reason.clone()),
                (false, None) => api::commit_failed(),
            };
            metrics.request(label, response.status);
            response
        });
        if conn.flush(mono).is_err() || conn.is_finished() {
            self.close(token);
            return;
        }
        let at = conn.deadline(&self.config.timeouts).map(|(at, _)| at);
        self.note_deadline(at);
        self.follow_output(token);
    }

    /// Keeps `next_sweep` no later than a connection's new deadline.
    /// Deadlines only move later with activity, so a stale, earlier
    /// `next_sweep` costs one early sweep and nothing else.
    fn note_deadline(&mut self, at: Option<Instant>) {
        if let Some(at) = at {
            self.next_sweep = Some(self.next_sweep.map_or(at, |next| next.min(at)));
        }
    }

    /// Enforces connection deadlines that have passed.
    fn sweep(&mut self, mono: Instant) {
        if self.next_sweep.is_none_or(|at| at > mono) {
            return;
        }
        self.next_sweep = None;
        let mut expired = Vec::new();
        let mut next: Option<Instant> = None;
        for (token, conn) in &self.conns {
            match conn.deadline(&self.config.timeouts) {
                Some((at, kind)) if at <= mono => expired.push((*token, kind)),
                Some((at, _)) => next = Some(next.map_or(at, |n| n.min(at))),
                None => {}
            }
        }
        self.next_sweep = next;
        for (token, kind) in expired {
            match kind {
                Deadline::Request => {
                    debug!("request deadline passed; answering 408");
                    if let Some(conn) = self.conns.get_mut(&token) {
                        let response = api::error(
                            408,
                            "the request did not arrive in time; send the whole request at once",
                        );
                        conn.queue(Reply::Ready(response), 1, false);
                    }
                    self.deliver(token, true, mono);
                }
                Deadline::Idle | Deadline::Write => {
                    debug!(?kind, "connection deadline passed; closing");
                    self.close(token);
                }
            }
        }
    }

    /// A watched process exited: its task is released by this turn's
    /// commit.
    fn on_exit(&mut self, token: Token) {
        let Some(name) = self.watched.get(&token).cloned() else {
            return;
        };
        if let Some(binding) = self.unwatch(&name) {
            debug!(task = %name, pid = binding.pid, "bound process exited");
            self.exited.push((name, binding));
        }
    }

    /// Makes the watch of `name` match its committed binding: keeps a watch
    /// on the same process, drops one on another or none, and watches a new
    /// binding with the pidfd opened while planning it (or a fresh one).
    /// A process that cannot be watched any more is released.
    fn sync_watch(&mut self, name: &TaskName) {
        let wanted = self.tasks.binding_of(name);
        let staged = self.staged.remove(name);
        if let Some(watch) = self.watches.get(name) {
            if Some(watch.binding) == wanted {
                return;
            }
            self.unwatch(name);
        }
        let Some(binding) = wanted else {
            return;
        };
        let pidfd = match staged {
            Some((staged_binding, pidfd)) if staged_binding == binding => Some(pidfd),
            _ => reopen(binding),
        };
        match pidfd {
            Some(pidfd) => self.watch(name.clone(), binding, pidfd),
            None => self.exited.push((name.clone(), binding)),
        }
    }

    /// Watches every bound task (after a load), releasing those whose
    /// process is gone or was replaced, and drops watches of tasks that
    /// are no longer bound.
    fn resync_watches(&mut self) {
        let stale: Vec<TaskName> = self
            .watches
            .iter()
            .filter(|(name, watch)| self.tasks.binding_of(name) != Some(watch.binding))
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            self.unwatch(&name);
        }
        let bound: Vec<TaskName> = self.tasks.bound().map(|(name, _)| name.clone()).collect();
        for name in bound {
            self.sync_watch(&name);
        }
    }

    fn watch(&mut self, name: TaskName, binding: Binding, pidfd: OwnedFd) {
        let token = Token(self.next_watch_token);
        self.next_watch_token += 1;
        let registered = self.poll.registry().register(
            &mut SourceFd(&pidfd.as_raw_fd()),
            token,
            Interest::READABLE,
        );
        if let Err(e) = registered {
            // The hold still ends at its expiry.
            warn!(task = %name, pid = binding.pid, error = %e, "cannot watch a bound process; the task ends at its expiry");
            return;
        }
        self.watched.insert(token, name.clone());
        self.watches.insert(
            name,
            Watch {
                token,
                pidfd,
                binding,
            },
        );
    }

    /// Stops watching `name`'s process; returns the binding it watched.
    fn unwatch(&mut self, name: &TaskName) -> Option<Binding> {
        let watch = self.watches.remove(name)?;
        self.watched.remove(&watch.token);
        let _ = self
            .poll
            .registry()
            .deregister(&mut SourceFd(&watch.pidfd.as_raw_fd()));
        Some(watch.binding)
    }

    fn close(&mut self, token: Token) {
        if let Some(peer) = self.peers.remove(&token) {
            self.shares.disconnect(peer.uid(), peer.streaming);
        }
        if let Some(mut conn) = self.conns.remove(&token) {
            let _ = self.poll.registry().deregister(conn.stream_mut());
            if conn.stream_version().is_some() {
                self.streams.retain(|t| *t != token);
            }
        }
        if self.accept_paused_until.is_some() {
            self.accept_paused_until = Some(Instant::now());
        }
    }
}

/// A pidfd watching a bound task's process, registered under `token`.
#[derive(Debug)]
struct Watch {
    token: Token,
    pidfd: OwnedFd,
    binding: Binding,
}

/// A fresh pidfd for `binding`'s process, if it still runs: the same pid
/// with the same start time (a reused pid has a later one).
fn reopen(binding: Binding) -> Option<OwnedFd> {
    match process::open_binding(binding.pid) {
        Ok((pidfd, started)) if started == binding.start_time => Some(pidfd),
        _ => None,
    }
}

/// The process on the other end of a connection.
#[derive(Debug)]
struct Peer {
    /// From `SO_PEERCRED` at accept; `None` if it could not be read.
    credentials: Option<Credentials>,
    /// Read from `/proc` when first needed.
    holder: Option<Holder>,
    /// The connection carries an event stream (counted in its uid's share).
    streaming: bool,
}

impl Peer {
    fn uid(&self) -> Option<u32> {
        self.credentials.map(|credentials| credentials.uid)
    }

    /// The holder, reading `/proc` on first use; `None` without credentials.
    fn holder(&mut self) -> Option<Holder> {
        let credentials = self.credentials?;
        Some(
            self.holder
                .get_or_insert_with(|| process::holder(credentials))
                .clone(),
        )
    }
}

impl Server {
    /// The one-line state for systemd's `STATUS=` (`systemctl status`).
    fn service_status(&self) -> String {
        let status = match (self.tasks.len(), self.idle_since) {
            (0, Some(since)) => format!("idle since {since}"),
            (0, None) => "idle".to_owned(),
            (1, _) => "held by 1 task".to_owned(),
            (n, _) => format!("held by {n} tasks"),
        };
        match self.hooks.on_idle_due() {
            Some(due) => format!("{status}; --on-idle at {due}"),
            None => status,
        }
    }
}

/// Serves a listening socket passed by the service manager: non-blocking
/// (mio needs it; the descriptor is already close-on-exec). Returns it with
/// its path, when it has one.
fn adopt(inherited: Inherited) -> Result<(UnixListener, Option<PathBuf>), ServerError> {
    let listener = std::os::unix::net::UnixListener::from(inherited.fd);
    listener
        .set_nonblocking(true)
        .map_err(ServerError::Inherited)?;
    let path = listener
        .local_addr()
        .ok()
        .and_then(|address| address.as_pathname().map(Path::to_path_buf));
    info!(
        socket = ?path,
        name = inherited.name.as_deref().unwrap_or(""),
        "serving the socket passed by the service manager"
    );
    Ok((UnixListener::from_std(listener), path))
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

/// Whole seconds since the epoch, for the `Date` header.
fn unix_second(now: Timestamp) -> u64 {
    now.as_nanos() / 1_000_000_000
}

/// Time held since the daemon started: the holds before plus the current one.
fn held_total(before: Duration, since: Option<Instant>, mono: Instant) -> Duration {
    before
        + since.map_or(Duration::ZERO, |since| {
            mono.saturating_duration_since(since)
        })
}

/// Answers a refused connection with a 503 saying why; the caller drops
/// it. Best effort: a fresh socket's buffer takes a few hundred bytes.
fn reject_connection(stream: &mut UnixStream, refused: &Refused, date: &HttpDate) {
    use std::io::Write;
    let response = api::error(503, refused.to_string());
    let mut bytes = Vec::new();
    response.encode(Answering::REFUSAL, date, &mut bytes);
    let _ = stream.write(&bytes);
}

/// Refuses a socket path that another process serves, or that holds
/// something other than a socket; says whether a (stale) socket file is
/// there. Touches nothing.
///
/// # Errors
/// [`ServerError::SocketInUse`], [`ServerError::NotASocket`], or
/// [`ServerError::Socket`] when the path cannot be examined.
pub fn refuse_live_socket(path: &Path) -> Result<bool, ServerError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ServerError::SocketInUse(path.to_path_buf()));
            }
            Ok(true)
        }
        Ok(_) => Err(ServerError::NotASocket(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(ServerError::Socket {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Binds the socket, replacing a socket file left by a dead daemon but never
/// a live one or a file that is not a socket.
fn bind(path: &Path, mode: u32) -> Result<UnixListener, ServerError> {
    let socket_error = |source| ServerError::Socket {
        path: path.to_path_buf(),
        source,
    };
    if refuse_live_socket(path)? {
        info!(socket = %path.display(), "removing a stale socket file");
        fs::remove_file(path).map_err(socket_error)?;
    }
    let listener = UnixListener::bind(path).map_err(socket_error)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(socket_error)?;
    Ok(listener)
}

fn remove_socket(path: &Path) {
    if let Err(e) = fs::remove_file(path)
        && e.kind() != io::ErrorKind::NotFound
    {
        warn!(socket = %path.display(), error = %e, "cannot remove the socket file");
    }
}
