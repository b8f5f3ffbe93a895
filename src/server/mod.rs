//! The daemon: an I/O-free [`core`] that makes every decision, and a thin
//! [`shell`] around it that moves bytes, descriptors and time with mio.
//!
//! - [`core`]: tasks, events, held/idle edges, refusals and limits, clock
//!   steps, exited-process releases, commit outcomes and retries, deadlines.
//!   Driven with `now` passed in; unit-tested without a socket or a sleep.
//! - [`shell`]: the mio loop, accept, reads and writes, signals, the store's
//!   writes and reloads, hooks, systemd notifications.
//! - `connections`: the open connections' buffers, ready queue, streams
//!   and deadlines, generic over the stream (no mio).
//! - `watches`: the pidfds that say when a bound process exits.
//! - `socket`: binding, adopting and removing the listening socket.
//!
//! Only `shell`, `watches` and `socket` touch mio; only `shell` reads the
//! clocks.

pub(crate) mod connections;
pub mod core;
mod shell;
mod socket;
mod watches;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::conn::Timeouts;
use crate::hooks::HookConfig;
use crate::http::Limits;
use crate::shares::ShareLimits;
use crate::store::StoreError;
use crate::tasks::Ownership;

pub use self::core::MAX_EXPIRIES_PER_TURN;
pub use connections::{MAX_OUTPUT_BACKLOG, MAX_PIPELINED};
pub use shell::{MAX_ACCEPTS_PER_TURN, Server};
pub use socket::refuse_live_socket;

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
    /// `--max-held-for`: the longest any task is held in one stretch.
    pub max_held_for: Option<Duration>,
    /// How long the usage history keeps a hold after it ended.
    pub usage_retention: Duration,
    /// Most ended holds the usage history keeps, the latest.
    pub usage_max_holds: usize,
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

    /// What the core needs of these settings, for a daemon running as
    /// `daemon_uid`.
    fn core_settings(&self, daemon_uid: u32) -> self::core::Settings {
        self::core::Settings {
            max_tasks: self.max_tasks,
            max_bound: self.max_bound,
            ownership: self.ownership,
            max_expire: self.max_expire,
            event_retention: self.event_retention,
            max_held_for: self.max_held_for,
            usage_retention: self.usage_retention,
            usage_max_holds: self.usage_max_holds,
            shares: self.shares,
            daemon_uid,
        }
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
            max_held_for: None,
            usage_retention: crate::usage::DEFAULT_USAGE_RETENTION,
            usage_max_holds: crate::usage::DEFAULT_MAX_USAGE_HOLDS,
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
    /// What fell due while the daemon was down could not be committed.
    Recovery(StoreError),
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
            ServerError::Recovery(source) => write!(
                f,
                "cannot commit the expiries and releases that fell due while the daemon was down: {source}"
            ),
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
