//! sprite-tasks: the Tasks API that keeps a Sprite awake while work is in
//! progress, served over a Unix socket. Every change is durable before it is
//! answered: appended to a checksummed write-ahead log and synced, then
//! checkpointed into redb in the background.
//!
//! The modules, from the inside out:
//!
//! - [`time`]: the persisted [`time::Timestamp`] and the reactor's clock rule.
//! - [`expire`]: decoding the `expire` field (seconds or a duration string).
//! - [`tasks`]: the pure state machine: tasks by name beside a deadline index;
//!   plan a batch of changes, apply it once it is durable. A name carries
//!   its keyed hash ([`siphash`]), so the maps keyed by names ([`ids`])
//!   mix only that.
//! - [`events`]: numbered change and held/idle events, with a bounded history.
//! - [`usage`]: the history of ended holds and the report of what kept the
//!   machine awake over a window; the names a hold limit tripped.
//! - [`metrics`]: counters and their Prometheus rendering.
//! - [`logging`]: the daemon's stderr log writer, which drops (and counts)
//!   what it cannot write instead of failing, and folds repeated lines into
//!   summaries.
//! - [`daemon_log`]: the task and refusal lines, folded per uid under a
//!   flood.
//! - [`shares`]: each uid's share of the socket's connections and event
//!   streams, and the reserve kept for root.
//! - [`hooks`]: the `--while-held` and `--on-idle` commands.
//! - [`record`]: the checksummed on-disk layout of one task.
//! - [`store`]: the write-ahead log in front of redb; the only module that
//!   knows redb and the files on disk.
//! - [`http`]: the one HTTP/1.1 grammar, pure, every limit named: request
//!   framing and response encoding for the daemon, response heads for the
//!   client, and the strict chunked decoder both use.
//! - [`api`]: routes and JSON: a request becomes a command, query or error;
//!   outcomes become responses.
//! - [`conn`]: one connection's buffers, deadlines and queued replies.
//! - [`process`]: who is on the other end of the socket (`SO_PEERCRED`,
//!   `/proc`) and pidfds that say when a bound process exits.
//! - [`systemd`]: socket activation and readiness/watchdog notifications,
//!   read from the environment once at start-up.
//! - [`server`]: the daemon: an I/O-free core that makes every decision
//!   (driven with `now` passed in), the open connections, and a thin mio
//!   shell that moves bytes, descriptors and time.
//! - [`client`]: the library of `sprite-env`, apart from the daemon: an HTTP
//!   client over the socket, curl argument rewriting, the hold's rules and
//!   the renderers, one file each.
//!
//! `time`, `expire`, `tasks`, `api`, `http` and `server::core` depend on
//! nothing of ours that does I/O; only `server`'s shell and watches touch
//! mio and only `store` touches redb.
//!
//! [`testing`] holds what only tests and fuzzers use: storage that fails on
//! purpose or loses power, and the fuzz targets' bodies.

pub mod api;
pub mod client;
pub mod conn;
pub mod daemon_log;
pub mod events;
pub mod expire;
pub mod hooks;
pub mod http;
pub mod ids;
pub mod logging;
pub mod metrics;
pub mod process;
pub mod record;
pub mod server;
pub mod shares;
pub mod siphash;
pub mod store;
pub mod systemd;
pub mod tasks;
#[doc(hidden)]
pub mod testing;
pub mod text;
pub mod time;
pub mod usage;
