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

use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::net::{UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGCHLD, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use tracing::{debug, info, warn};

use super::connections::{Connections, Readiness};
use super::core::{Commit, ConnId, Core, Edge, Now, Outside};
use super::socket::{adopt, bind, reject_connection, remove_socket};
use super::watches::{FIRST_WATCH, Watches};
use super::{Config, ServerError, Stats};
use crate::daemon_log::Noise;
use crate::hooks::Hooks;
use crate::http::HttpDate;
use crate::process;
use crate::store::{Store, StoreError};
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
    conns: Connections<UnixStream>,
    next_token: usize,
    watches: Watches,
    store: Store,
    hooks: Hooks,
    /// The `Date` of responses, formatted once per second.
    date: HttpDate,
    accept_paused_until: Option<Instant>,
    shutdown_by: Option<Instant>,
    /// The turn's time.
    now: Now,
}

impl Server {
    /// Loads `store`, expires what fell due while the daemon was down (one
    /// commit, of up to [`super::MAX_EXPIRIES_PER_TURN`] expiries), and binds the socket. The store must already be open, so
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
        let (core, mut recovered) = Core::recover(settings, loaded, wall, mono);
        let poll = Poll::new().map_err(ServerError::Reactor)?;
        let mut signals = Signals::new([SIGTERM, SIGINT, SIGCHLD]).map_err(ServerError::Reactor)?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)
            .map_err(ServerError::Reactor)?;
        let registry = poll.registry().try_clone().map_err(ServerError::Reactor)?;
        let now = core.now(mono);
        let mut server = Server {
            hooks: Hooks::new(config.hooks.clone()),
            conns: Connections::new(config.limits.clone(), config.timeouts.clone()),
            config,
            core,
            poll,
            listener: None,
            socket_inherited: service.listener.is_some(),
            notifier: service.notifier,
            signals,
            next_token: FIRST_CONN,
            watches: Watches::new(registry),
            store,
            date: HttpDate::at(unix_second(now.wall)),
            accept_paused_until: None,
            shutdown_by: None,
            now,
        };
        server.recover(now, &mut recovered)?;
        process::return_freed_memory();
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

    /// What the clock did and what fell due while the daemon was down (a
    /// slice of it, the rest expiring in the next turns) go in one commit, with the tasks whose bound process exited meanwhile
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
            let (result, took) = write(&mut self.store, &commit);
            if let Err(e) = result {
                return Err(ServerError::Recovery(e));
            }
            self.core.committed(commit, Ok(()), took, now);
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
        let listener = match inherited {
            Some(inherited) => {
                let (listener, path) = adopt(inherited)?;
                if let Some(path) = path {
                    self.config.socket = path;
                }
                listener
            }
            None => bind(&self.config.socket, self.config.socket_mode)?,
        };
        let mut listener = UnixListener::from_std(listener);
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
                    token => {
                        let ready = Readiness {
                            readable: event.is_readable(),
                            hung_up: event.is_read_closed() || event.is_error(),
                            writable: event.is_writable(),
                        };
                        self.conns.readiness(ConnId(token.0), ready, mono);
                    }
                }
            }
            if self.accept_paused_until.is_some_and(|at| at <= mono) {
                self.accept_all();
            }
            self.turn(now);
            self.core.log_summaries(now);
            self.store.poll(mono);
            self.conns.sweep(&mut self.core, &self.date, mono);
            self.tidy();
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
        if self.conns.has_ready() {
            return Duration::ZERO;
        }
        let mono = self.now.mono;
        let idle_hook = self
            .hooks
            .on_idle_due()
            .map(|due| mono + due.saturating_since(self.now.wall));
        [
            self.core.poll_timeout(self.now),
            self.conns.next_deadline(),
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
            if self.core.wants_load(self.conns.has_ready(), now) {
                let result = self.store.load();
                self.core.loaded(result, now);
                continue;
            }
            let Some(commit) = self.core.take_commit() else {
                break;
            };
            let (result, took) = write(&mut self.store, &commit);
            self.core.committed(commit, result, took, now);
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
        self.conns.shut_down(mono);
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
        self.conns.insert(id, stream, self.now.mono);
    }

    /// Reads, hands requests to the core, commits, answers.
    fn turn(&mut self, now: Now) {
        self.settle(now);
        self.core.start_turn(now);
        let outside = Outside::of(self.store.counters(), self.hooks.counts());
        let waiting =
            self.conns
                .take_ready(&mut self.core, &mut self.watches, outside, &self.date, now);
        self.core.seal_turn(now);
        self.settle(now);
        self.conns
            .answer_waiting(waiting, &mut self.core, &self.date, now);
        self.core.finish_turn();
        self.conns.broadcast(&mut self.core, now);
        self.tidy();
    }

    /// Carries out what the connections asked of the poll: WRITABLE
    /// interest while output is pending, and deregistering the closed.
    fn tidy(&mut self) {
        let registry = self.poll.registry();
        for id in self.conns.take_interest_changes() {
            self.conns.set_interest(id, |stream, writable| {
                let interest = match writable {
                    true => Interest::READABLE | Interest::WRITABLE,
                    false => Interest::READABLE,
                };
                registry.reregister(stream, Token(id.0), interest)
            });
        }
        for (id, mut stream) in self.conns.take_closed() {
            let _ = registry.deregister(&mut stream);
            self.core.disconnect(id);
            if self.accept_paused_until.is_some() {
                self.accept_paused_until = Some(self.now.mono);
            }
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

/// Writes `commit` with one append and one sync; how it went and how long
/// it took.
fn write(store: &mut Store, commit: &Commit) -> (Result<(), StoreError>, Duration) {
    let started = Instant::now();
    store.set_usage_floor(commit.usage_floor().as_nanos());
    let result = store.commit_batch(
        commit.changes(),
        commit.lines(),
        commit.keep_from(),
        commit.trim_slack(),
    );
    (result, started.elapsed())
}

/// Whole seconds since the epoch, for the `Date` header.
fn unix_second(now: Timestamp) -> u64 {
    now.as_nanos() / 1_000_000_000
}
