//! The mio shell around the [`Core`]: one thread, one `mio::Poll` for the
//! listener, every connection, the signals and the watched processes, with
//! the next deadline as the poll timeout. It moves bytes, descriptors and
//! time; every decision is the core's.
//!
//! Each turn: read the clocks; read what the ready connections sent and
//! hand each complete request to the core; answer at once what needs no
//! commit; write the turn's commit to the store and tell the core how it
//! went; write the answers; send the committed events to the streams. A
//! fault ends one connection, never the server.
//!
//! The only reader of the clocks.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::net::{UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGCHLD, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use tracing::{debug, info, warn};

use super::core::{ConnId, Core, Edge, Handled, Now, Outside, Planned};
use super::socket::{adopt, bind, reject_connection, remove_socket};
use super::watches::{FIRST_WATCH, Watches};
use super::{Config, ServerError, Stats};
use crate::api;
use crate::conn::{Conn, Deadline, Next, Reply};
use crate::daemon_log::Noise;
use crate::hooks::Hooks;
use crate::http::HttpDate;
use crate::process;
use crate::store::Store;
use crate::systemd::{Notifier, ServiceEnv};
use crate::time::{Timestamp, read_clocks};

const LISTENER: Token = Token(0);
const SIGNALS: Token = Token(1);
/// Connection tokens start here and are never reused.
const FIRST_CONN: usize = 2;

/// Events taken from one `poll` call.
const EVENT_CAPACITY: usize = 1024;

/// Longest sleep between turns, so a wall clock stepped forward (a resumed
/// VM) is noticed within this and due tasks expire on time.
const MAX_POLL_SLEEP: Duration = Duration::from_secs(1);

/// After `accept` fails for lack of descriptors, wait this long before trying
/// again (or until a connection closes), instead of spinning on the backlog.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Most connections accepted in one turn. A flood of connects (refused or
/// not) is taken in slices, with the open connections served in between.
pub const MAX_ACCEPTS_PER_TURN: usize = 64;

/// Most replies one connection may have queued in one turn. Past it the
/// connection is not read again until its output drains: a client that
/// pipelines thousands of requests gets them answered in slices, and others
/// get their turn in between.
pub const MAX_PIPELINED: usize = 64;

/// Output buffered for one connection above which no more of its requests are
/// read (the client is not reading its answers).
pub const MAX_OUTPUT_BACKLOG: usize = 256 * 1024;

/// The last line a stream consumer that fell behind receives.
const LAGGED_LINE: &[u8] = b"{\"event\":\"lagged\",\"error\":\"this consumer did not keep up with the events and was cut off; reconnect with ?since=<last seq> to resume\"}\n";

/// A connection and its place in the loop.
struct Slot {
    conn: Conn<UnixStream, Planned>,
    /// In the ready queue.
    scheduled: bool,
    /// WRITABLE readiness is asked for (exactly while output is pending).
    writable_interest: bool,
}

/// What [`Server::take_requests`] left a connection in.
enum Taken {
    /// Nothing more to do until it is readable or drained.
    Idle,
    /// Requests remain: take them next turn.
    More,
    /// It broke: close it.
    Broken,
}

/// The daemon: the core and the descriptors around it.
pub struct Server {
    config: Config,
    core: Core,
    poll: Poll,
    listener: Option<UnixListener>,
    /// The listening socket was passed by the service manager, which keeps
    /// it open across our restarts: it is never unlinked.
    socket_inherited: bool,
    /// Readiness, status and watchdog pings for systemd.
    notifier: Notifier,
    signals: Signals,
    conns: HashMap<Token, Slot>,
    next_token: usize,
    ready: VecDeque<Token>,
    /// Connections carrying an event stream.
    streams: Vec<Token>,
    watches: Watches,
    store: Store,
    hooks: Hooks,
    /// The `Date` of responses, formatted once per second.
    date: HttpDate,
    /// The earliest connection deadline might be this early.
    next_sweep: Option<Instant>,
    accept_paused_until: Option<Instant>,
    shutdown_by: Option<Instant>,
    /// The turn's time.
    now: Now,
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
        let (quarantined, replayed) = (loaded.quarantined.len(), loaded.replayed);
        let (wall, mono) = read_clocks();
        let settings = config.core_settings(process::effective_uid());
        let (core, mut recovered) =
            Core::recover(settings, loaded.tasks, loaded.events, wall, mono);
        let poll = Poll::new().map_err(ServerError::Reactor)?;
        let mut signals = Signals::new([SIGTERM, SIGINT, SIGCHLD]).map_err(ServerError::Reactor)?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)
            .map_err(ServerError::Reactor)?;
        let registry = poll.registry().try_clone().map_err(ServerError::Reactor)?;
        let now = core.now(mono);
        let mut server = Server {
            hooks: Hooks::new(config.hooks.clone()),
            config,
            core,
            poll,
            listener: None,
            socket_inherited: service.listener.is_some(),
            notifier: service.notifier,
            signals,
            conns: HashMap::new(),
            next_token: FIRST_CONN,
            ready: VecDeque::new(),
            streams: Vec::new(),
            watches: Watches::new(registry),
            store,
            date: HttpDate::at(unix_second(now.wall)),
            next_sweep: None,
            accept_paused_until: None,
            shutdown_by: None,
            now,
        };
        server.recover(now, &mut recovered)?;
        server.listen(service.listener)?;
        info!(
            socket = %server.config.socket.display(),
            socket_activated = server.socket_inherited,
            db = %server.store.path().display(),
            live_tasks = server.core.tasks_len(),
            expired_while_down = recovered.expired,
            released_while_down = recovered.released,
            bound = server.core.watched_len(),
            quarantined,
            replayed_log_frames = replayed,
            next_event = server.core.next_event(),
            "sprite-tasksd listening"
        );
        Ok(server)
    }

    /// What the clock did and what fell due while the daemon was down go
    /// in one commit, with the tasks whose bound process exited meanwhile
    /// (or whose pid now names another process); the others are watched
    /// again. Held from the previous run: the hook starts with the daemon.
    fn recover(
        &mut self,
        now: Now,
        recovered: &mut super::core::Recovered,
    ) -> Result<(), ServerError> {
        self.watches.apply(&mut self.core);
        recovered.released = self.core.seal_recovery(now);
        if let Some(commit) = self.core.take_commit() {
            let started = Instant::now();
            let result = self.store.commit_batch(
                commit.changes(),
                commit.lines(),
                commit.keep_from(),
                commit.trim_slack(),
            );
            if let Err(e) = result {
                return Err(ServerError::Recovery(e));
            }
            self.core.committed(commit, Ok(()), started.elapsed(), now);
            self.watches.apply(&mut self.core);
        }
        self.core.finish_recovery(now);
        self.run_edges(now);
        if !self.core.is_held() {
            self.hooks.start_idle(self.core.idle_since(), now.wall);
        }
        Ok(())
    }

    /// Serves the socket the service manager passed, or binds our own.
    fn listen(&mut self, inherited: Option<crate::systemd::Inherited>) -> Result<(), ServerError> {
        let mut listener = match inherited {
            Some(inherited) => {
                let (listener, path) = adopt(inherited)?;
                if let Some(path) = path {
                    self.config.socket = path;
                }
                listener
            }
            None => bind(&self.config.socket, self.config.socket_mode)?,
        };
        self.poll
            .registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(ServerError::Reactor)?;
        self.listener = Some(listener);
        Ok(())
    }

    /// Serves until SIGTERM or SIGINT, then finishes in-flight responses,
    /// removes the socket file and returns the counters.
    ///
    /// # Errors
    /// [`ServerError::Reactor`] if `poll` itself fails.
    pub fn run(mut self) -> Result<Stats, ServerError> {
        let mut events = Events::with_capacity(EVENT_CAPACITY);
        self.notifier.ready(&self.service_status(), self.now.mono);
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != io::ErrorKind::Interrupted
            {
                return Err(ServerError::Reactor(e));
            }
            let (wall, mono) = read_clocks();
            let observed = self.core.observe_clock(wall, mono);
            self.settle(observed);
            let now = self.core.now(mono);
            self.now = now;
            self.date.advance(unix_second(now.wall));
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(),
                    SIGNALS => self.take_signals(),
                    token if token.0 >= FIRST_WATCH => self.watches.exited(token, &mut self.core),
                    token => self.on_conn_event(token, event),
                }
            }
            if self.accept_paused_until.is_some_and(|at| at <= mono) {
                self.accept_all();
            }
            self.turn(now);
            self.core.log_summaries(now);
            self.store.poll(mono);
            self.sweep();
            self.hooks.poll(mono);
            self.hooks.poll_idle(now.wall, self.core.is_held());
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
        self.stop()
    }

    /// Kills the hooks, checkpoints what waits in the log, and returns the
    /// counters.
    fn stop(mut self) -> Result<Stats, ServerError> {
        self.hooks.kill_all();
        // What waits in the log goes into the database now, so the next
        // start replays nothing. A failure here loses nothing: the log
        // still holds it.
        if self.core.in_step_with_disk()
            && let Err(e) = self.store.checkpoint_now()
        {
            warn!(error = %e, "the final checkpoint failed; the next start replays the log");
        }
        let metrics = self.core.metrics();
        let stats = Stats {
            requests: metrics.requests(),
            commits: metrics.commits(),
            changes: metrics.changes(),
            failed_commits: metrics.commit_failures,
            expired: metrics.expired,
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

    /// How long the next poll may sleep: until the earliest deadline of
    /// the core, the connections, the hooks, the store and systemd.
    fn poll_timeout(&self) -> Duration {
        if !self.ready.is_empty() {
            return Duration::ZERO;
        }
        let mono = self.now.mono;
        let idle_hook = self
            .hooks
            .on_idle_due()
            .map(|due| mono + due.saturating_since(self.now.wall));
        [
            self.core.poll_timeout(self.now),
            self.next_sweep,
            self.accept_paused_until,
            self.shutdown_by,
            self.hooks.next_deadline(),
            self.store.next_deadline(),
            self.notifier.next_deadline(),
            idle_hook,
        ]
        .into_iter()
        .flatten()
        .fold(MAX_POLL_SLEEP, |timeout, at| {
            timeout.min(at.saturating_duration_since(mono))
        })
    }

    /// Writes what the core asks to write and reloads what it asks to
    /// reload, until it asks nothing more; then carries out the watches and
    /// edges that follow.
    fn settle(&mut self, now: Now) {
        loop {
            if self.core.wants_load(!self.ready.is_empty(), now) {
                let result = self.store.load();
                self.core.loaded(result, now);
                continue;
            }
            let Some(commit) = self.core.take_commit() else {
                break;
            };
            let started = Instant::now();
            let result = self.store.commit_batch(
                commit.changes(),
                commit.lines(),
                commit.keep_from(),
                commit.trim_slack(),
            );
            self.core.committed(commit, result, started.elapsed(), now);
        }
        self.watches.apply(&mut self.core);
        self.run_edges(now);
    }

    /// Runs the hooks of the held/idle edges the core saw.
    fn run_edges(&mut self, now: Now) {
        for edge in self.core.take_edges() {
            match edge {
                Edge::Held => self.hooks.held(),
                Edge::Idle { at } => self.hooks.idle(at, now.mono),
            }
        }
    }

    fn take_signals(&mut self) {
        let mut stop = false;
        for signal in self.signals.pending() {
            stop |= signal == SIGTERM || signal == SIGINT;
        }
        if stop && self.shutdown_by.is_none() {
            self.shut_down();
        }
    }

    /// Stops taking connections and requests: whatever has arrived is
    /// answered, including requests still in the kernel's buffer; streams
    /// end; the process exits once everything is written or the grace
    /// passes.
    fn shut_down(&mut self) {
        let mono = self.now.mono;
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
            let Some(slot) = self.conns.get_mut(&token) else {
                continue;
            };
            let conn = &mut slot.conn;
            conn.mark_readable();
            let broken = conn.read_available(max_input, mono).is_err();
            conn.stop_reading();
            if let Some(version) = conn.stream_version() {
                conn.push_output(mono, |out| api::stream_end(version, out));
                conn.end_stream();
            }
            if broken {
                self.close(token);
            } else {
                self.schedule(token);
            }
        }
    }

    /// Accepts what waits, at most [`MAX_ACCEPTS_PER_TURN`] a turn: each
    /// connection is admitted by its peer's uid or answered 503 and closed
    /// at once, before it costs a registration.
    fn accept_all(&mut self) {
        self.accept_paused_until = None;
        for _ in 0..MAX_ACCEPTS_PER_TURN {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((stream, _)) => self.admit(stream),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM: connections wait in the
                    // backlog until a descriptor frees up or the retry timer.
                    if self.core.admit_warning(Noise::AcceptFailed, self.now) {
                        warn!(error = %e, open = self.conns.len(), "accept failed; pausing new connections");
                    }
                    self.accept_paused_until = Some(self.now.mono + ACCEPT_RETRY);
                    return;
                }
            }
        }
        // More may wait: edge-triggered readiness will not say so again,
        // so the next turn comes back at once.
        self.accept_paused_until = Some(self.now.mono);
    }

    /// Registers an accepted connection, or refuses it as the core says.
    fn admit(&mut self, mut stream: UnixStream) {
        let credentials = match process::peer_credentials(stream.as_raw_fd()) {
            Ok(credentials) => Some(credentials),
            Err(e) => {
                debug!(error = %e, "no peer credentials; holders will be unknown");
                None
            }
        };
        let token = Token(self.next_token);
        self.next_token += 1;
        let id = ConnId(token.0);
        if let Err(response) = self.core.connect(id, credentials, self.now) {
            reject_connection(&mut stream, &response, &self.date);
            return;
        }
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, token, Interest::READABLE)
        {
            self.core.disconnect(id);
            if self.core.admit_warning(Noise::AcceptFailed, self.now) {
                warn!(error = %e, "cannot register a new connection");
            }
            return;
        }
        let conn = Conn::new(stream, self.now.mono);
        self.note_deadline(conn.deadline(&self.config.timeouts).map(|(at, _)| at));
        self.conns.insert(
            token,
            Slot {
                conn,
                scheduled: false,
                writable_interest: false,
            },
        );
    }

    fn on_conn_event(&mut self, token: Token, event: &mio::event::Event) {
        let Some(slot) = self.conns.get_mut(&token) else {
            return;
        };
        let conn = &mut slot.conn;
        let mut wake = false;
        if event.is_read_closed() || event.is_error() {
            conn.mark_hung_up();
            wake = true;
        } else if event.is_readable() {
            conn.mark_readable();
            wake = true;
        }
        if event.is_writable() && conn.output_pending() > 0 {
            if conn.flush(self.now.mono).is_err() || conn.is_finished() {
                self.close(token);
                return;
            }
            // A drained backlog lets the connection's requests be read again.
            wake |= conn.output_pending() == 0;
        }
        self.want_writable_while_pending(token);
        if wake {
            self.schedule(token);
        }
    }

    /// Asks for WRITABLE readiness exactly while output is pending: most
    /// responses go out in one write, and an idle WRITABLE interest would
    /// wake the reactor for nothing.
    fn want_writable_while_pending(&mut self, token: Token) {
        let Some(slot) = self.conns.get_mut(&token) else {
            return;
        };
        let wanted = slot.conn.output_pending() > 0;
        if wanted == slot.writable_interest {
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
            .reregister(slot.conn.stream_mut(), token, interest)
        {
            Ok(()) => slot.writable_interest = wanted,
            Err(e) => {
                warn!(error = %e, "cannot change a connection's interest; closing it");
                self.close(token);
            }
        }
    }

    fn schedule(&mut self, token: Token) {
        if let Some(slot) = self.conns.get_mut(&token)
            && !slot.scheduled
        {
            slot.scheduled = true;
            self.ready.push_back(token);
        }
    }

    /// Reads, hands requests to the core, commits, answers.
    fn turn(&mut self, now: Now) {
        self.settle(now);
        self.core.start_turn(now);
        let mut touched = Vec::with_capacity(self.ready.len());
        let mut again = Vec::new();
        while let Some(token) = self.ready.pop_front() {
            if let Some(slot) = self.conns.get_mut(&token) {
                slot.scheduled = false;
            }
            match self.take_requests(token, now) {
                Taken::Idle => touched.push(token),
                Taken::More => {
                    again.push(token);
                    touched.push(token);
                }
                Taken::Broken => self.close(token),
            }
        }
        // Connections with nothing waiting for the commit are answered
        // before its fsync: reads never wait for other clients' writes.
        touched.retain(|token| {
            let waits = self
                .conns
                .get(token)
                .is_some_and(|slot| slot.conn.has_planned());
            if !waits {
                self.deliver(*token);
            }
            waits
        });
        self.core.seal_turn(now);
        self.settle(now);
        for token in touched {
            self.deliver(token);
        }
        self.core.finish_turn();
        self.broadcast();
        for token in again {
            self.schedule(token);
        }
    }

    /// Takes the connection's complete requests to the core.
    fn take_requests(&mut self, token: Token, now: Now) -> Taken {
        let max_input = self.config.max_input();
        let open_connections = self.conns.len();
        let Some(slot) = self.conns.get_mut(&token) else {
            return Taken::Idle;
        };
        let conn = &mut slot.conn;
        if conn.read_available(max_input, now.mono).is_err() || conn.stream_abandoned() {
            return Taken::Broken;
        }
        loop {
            if conn.is_closing() || conn.output_pending() > MAX_OUTPUT_BACKLOG {
                // A backlog is resumed by the writable event that drains it.
                return Taken::Idle;
            }
            if conn.queued_len() >= MAX_PIPELINED {
                return Taken::More;
            }
            let request = match conn.next_request(&self.config.limits, now.mono) {
                Next::Request(request) => request,
                Next::NeedMore => match conn.is_closing() || !conn.can_read_more(max_input) {
                    true => return Taken::Idle,
                    false => match conn.read_available(max_input, now.mono) {
                        Ok(true) => continue,
                        Ok(false) => return Taken::Idle,
                        Err(_) => return Taken::Broken,
                    },
                },
                Next::Invalid(e) => {
                    let response = self.core.refuse(e);
                    conn.queue(Reply::Ready(response), 1, false);
                    return Taken::Idle;
                }
            };
            let id = ConnId(token.0);
            let waiting = conn.has_planned();
            let handled =
                self.core
                    .handle(&mut self.watches, id, &request, waiting, &self.date, now);
            let reply = match handled {
                Handled::Answer(response) => Reply::Ready(response),
                Handled::Planned(planned) => Reply::Planned(planned),
                Handled::AfterCommit => {
                    conn.hold_back(request);
                    return Taken::More;
                }
                Handled::Stream(head) => {
                    conn.queue(Reply::Raw(head), request.minor_version, true);
                    conn.start_stream(request.minor_version);
                    self.streams.push(token);
                    return Taken::Idle;
                }
                Handled::Metrics => {
                    let store = self.store.counters();
                    let hooks = self.hooks.counts();
                    let outside = Outside {
                        connections: open_connections,
                        streams: self.streams.len(),
                        log_used_bytes: store.log_used,
                        log_size_bytes: store.log_size,
                        checkpoints: store.checkpoints,
                        checkpoint_failures: store.checkpoint_failures,
                        hook_runs: hooks.started,
                        hook_failures: hooks.failed,
                    };
                    Reply::Ready(self.core.metrics_page(outside, now))
                }
            };
            conn.queue(reply, request.minor_version, request.keep_alive);
        }
    }

    /// Sends this turn's committed events to every stream, cutting off a
    /// consumer whose backlog is full.
    fn broadcast(&mut self) {
        let batches = self.core.take_event_lines();
        if batches.is_empty() || self.streams.is_empty() {
            return;
        }
        let mono = self.now.mono;
        let streams = std::mem::take(&mut self.streams);
        for token in streams {
            let Some(slot) = self.conns.get_mut(&token) else {
                continue;
            };
            let conn = &mut slot.conn;
            let Some(version) = conn.stream_version() else {
                continue;
            };
            let keeping_up = conn.output_pending() <= MAX_OUTPUT_BACKLOG;
            conn.push_output(mono, |out| {
                if keeping_up {
                    for (_, line) in batches.iter().flat_map(|lines| lines.iter()) {
                        api::stream_chunk(version, line, out);
                    }
                } else {
                    api::stream_chunk(version, LAGGED_LINE, out);
                    api::stream_end(version, out);
                }
            });
            if !keeping_up {
                if self.core.admit_warning(Noise::StreamCutOff, self.now) {
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
                self.want_writable_while_pending(token);
            }
        }
    }

    /// Writes the connection's answers, the planned ones as the core says.
    fn deliver(&mut self, token: Token) {
        let Some(slot) = self.conns.get_mut(&token) else {
            return;
        };
        let conn = &mut slot.conn;
        let mono = self.now.mono;
        let core = &mut self.core;
        conn.render(mono, &self.date, |planned| core.answer(planned));
        if conn.flush(mono).is_err() || conn.is_finished() {
            self.close(token);
            return;
        }
        let at = conn.deadline(&self.config.timeouts).map(|(at, _)| at);
        self.note_deadline(at);
        self.want_writable_while_pending(token);
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
    fn sweep(&mut self) {
        let mono = self.now.mono;
        if self.next_sweep.is_none_or(|at| at > mono) {
            return;
        }
        self.next_sweep = None;
        let mut expired = Vec::new();
        let mut next: Option<Instant> = None;
        for (token, slot) in &self.conns {
            match slot.conn.deadline(&self.config.timeouts) {
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
                    if let Some(slot) = self.conns.get_mut(&token) {
                        let response = api::error(
                            408,
                            "the request did not arrive in time; send the whole request at once",
                        );
                        slot.conn.queue(Reply::Ready(response), 1, false);
                    }
                    self.deliver(token);
                }
                Deadline::Idle | Deadline::Write => {
                    debug!(?kind, "connection deadline passed; closing");
                    self.close(token);
                }
            }
        }
    }

    fn close(&mut self, token: Token) {
        self.core.disconnect(ConnId(token.0));
        if let Some(mut slot) = self.conns.remove(&token) {
            let _ = self.poll.registry().deregister(slot.conn.stream_mut());
            if slot.conn.stream_version().is_some() {
                self.streams.retain(|t| *t != token);
            }
        }
        if self.accept_paused_until.is_some() {
            self.accept_paused_until = Some(self.now.mono);
        }
    }

    /// The one-line state for systemd's `STATUS=` (`systemctl status`).
    fn service_status(&self) -> String {
        let status = self.core.status_line();
        match self.hooks.on_idle_due() {
            Some(due) => format!("{status}; --on-idle at {due}"),
            None => status,
        }
    }
}

/// Whole seconds since the epoch, for the `Date` header.
fn unix_second(now: Timestamp) -> u64 {
    now.as_nanos() / 1_000_000_000
}
