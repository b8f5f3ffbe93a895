//! `sprite-tasksd`: parses arguments, opens the store, runs the reactor, and
//! maps errors to exit codes (0 clean stop, 1 failure, 2 bad usage).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use sprite_tasks::conn::Timeouts;
use sprite_tasks::expire::{self, DEFAULT_MAX_EXPIRE, ExpireError, MAX_EXPIRE_CEILING};
use sprite_tasks::hooks::HookConfig;
use sprite_tasks::http::Limits;
use sprite_tasks::logging::{self, StderrLog};
use sprite_tasks::server::{self, Config, Server};
use sprite_tasks::shares::ShareLimits;
use sprite_tasks::store::{self, Store, StoreOptions};
use sprite_tasks::systemd::ServiceEnv;
use sprite_tasks::tasks::{
    DEFAULT_MAX_TASKS, MAX_TASKS_CEILING, Ownership, default_max_tasks_per_uid,
};
use sprite_tasks::usage;

/// The Tasks API daemon: keeps a Sprite awake while tasks are live.
///
/// Serves HTTP/1.1 + JSON on a Unix socket and makes every change durable
/// before answering: one checksummed append to a write-ahead log (DB.wal)
/// and one fdatasync; a background thread checkpoints the log into a redb
/// database. Stops cleanly on SIGTERM or SIGINT.
/// Logs to stderr; set RUST_LOG (e.g. RUST_LOG=debug) for more.
///
/// Under systemd (contrib/systemd): serves the socket passed with
/// LISTEN_FDS instead of binding --socket, and reports readiness, status
/// and watchdog pings to NOTIFY_SOCKET (Type=notify, WatchdogSec=).
///
/// Example:
///   sprite-tasksd --socket /tmp/sprite/api.sock
///   curl --unix-socket /tmp/sprite/api.sock http://sprite/v1/tasks
#[derive(Debug, Parser)]
#[command(name = "sprite-tasksd", version, verbatim_doc_comment)]
struct Args {
    /// Unix socket to serve on. Missing parent directories are created.
    #[arg(long, env = "SPRITE_API_SOCKET", default_value = Config::DEFAULT_SOCKET)]
    socket: PathBuf,

    /// Database file [default: tasks.redb beside the socket]. Locked while
    /// the daemon runs, so a second daemon on it exits at once.
    #[arg(long, env = "SPRITE_TASKS_DB")]
    db: Option<PathBuf>,

    /// Permission bits of the socket, in octal. Anyone who can connect can
    /// create tasks and read them all; only a task's owner (the uid that
    /// created it) or root may refresh or delete it, unless --shared.
    #[arg(long, default_value = "666", value_parser = parse_mode)]
    socket_mode: u32,

    /// Let every uid refresh and delete every task, with no per-uid quota:
    /// for machines whose local users all trust each other.
    #[arg(long)]
    shared: bool,

    /// Most tasks one uid other than root may hold; creating more is
    /// refused with 507 [default: a tenth of --max-tasks, at least 100,
    /// at most --max-tasks].
    #[arg(long, value_name = "N", conflicts_with = "shared")]
    max_tasks_per_uid: Option<usize>,

    /// Longest `expire` a client may ask for, from 1s up to 7d: seconds
    /// (3600) or a duration (90m, 2d, 7d), the forms `expire` takes.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_max_expire)]
    max_expire: Duration,

    /// Most tasks held at once, from 1 to 100000000; creating more is
    /// refused with 507.
    #[arg(long, default_value_t = DEFAULT_MAX_TASKS, value_parser = parse_max_tasks)]
    max_tasks: usize,

    /// Most tasks bound to a process ("pid") at once, each watched through
    /// a descriptor; binding more is refused with 507.
    #[arg(long, default_value_t = sprite_tasks::tasks::DEFAULT_MAX_BOUND)]
    max_bound: usize,

    /// Most open connections; more get a 503 and are closed.
    #[arg(long, default_value_t = ShareLimits::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,

    /// Connections of --max-connections kept for root and the daemon's own
    /// uid, so that no other user can lock them out (their holds would
    /// lapse). Other uids get 503 once only these are left.
    #[arg(long, value_name = "N", default_value_t = ShareLimits::DEFAULT_RESERVED)]
    reserved_connections: usize,

    /// Most connections one uid other than root (and the daemon's) may hold
    /// open; more get a 503 and are closed. Applies with --shared too: it is
    /// about fairness, not ownership.
    #[arg(long, value_name = "N", default_value_t = ShareLimits::DEFAULT_PER_UID)]
    max_connections_per_uid: usize,

    /// Most GET /v1/events streams (watchers, wait-idle) one uid other than
    /// root (and the daemon's) may hold open; more get a 503.
    #[arg(long, value_name = "N", default_value_t = ShareLimits::DEFAULT_STREAMS_PER_UID)]
    max_streams_per_uid: usize,

    /// Largest request head in bytes: a request line past it gets 414, header
    /// fields past it 431.
    #[arg(long, default_value_t = Limits::DEFAULT_MAX_HEAD)]
    max_head: usize,

    /// Largest request body in bytes (413 past it).
    #[arg(long, default_value_t = Limits::DEFAULT_MAX_BODY)]
    max_body: usize,

    /// Time allowed for a request head to arrive (408 after it).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    head_timeout: Duration,

    /// Time allowed for a request body to arrive after its head (408 after it).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    body_timeout: Duration,

    /// An idle keep-alive connection is closed after this.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    idle_timeout: Duration,

    /// A client that reads none of its pending response for this long is
    /// disconnected.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    write_timeout: Duration,

    /// At SIGTERM, how long in-flight responses may take before exiting.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    shutdown_grace: Duration,

    /// Command (run with `sh -c`) kept running while at least one task is
    /// live: started at the idle -> held edge, stopped with SIGTERM (then
    /// SIGKILL after --hook-grace) at held -> idle. Example:
    /// --while-held 'systemd-inhibit --what=idle:sleep --why="agents at work" sleep infinity'
    #[arg(long, value_name = "CMD", verbatim_doc_comment)]
    while_held: Option<String>,

    /// Command (run with `sh -c`) run once at each held -> idle edge (or
    /// later, with --on-idle-after).
    #[arg(long, value_name = "CMD")]
    on_idle: Option<String>,

    /// Run --on-idle once the machine has stayed idle this long, instead of
    /// at the edge: a hold before then cancels it, and the next held -> idle
    /// edge re-arms it. Idle time counts across daemon restarts; a daemon
    /// started with nothing held and no idle edge recorded counts from
    /// start-up. Example (sleep after 15 idle minutes):
    /// --on-idle 'systemctl suspend' --on-idle-after 15m
    #[arg(long, value_name = "DURATION", requires = "on_idle", value_parser = parse_duration, verbatim_doc_comment)]
    on_idle_after: Option<Duration>,

    /// Time a stopped --while-held command gets between SIGTERM and SIGKILL.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    hook_grace: Duration,

    /// Events kept (in the database) for GET /v1/events?since=SEQ.
    #[arg(long, default_value_t = sprite_tasks::events::DEFAULT_RETENTION)]
    event_retention: usize,

    /// Release any task held longer than this in one stretch, however
    /// often it is refreshed, and refuse its name (409) until a DELETE
    /// re-arms it: a stop for a heartbeat loop nobody ended. Off by
    /// default; set it to the longest job this machine runs (e.g. 12h).
    /// A task's own "max_held_for" may lower it.
    #[arg(long, value_name = "DURATION", value_parser = parse_max_held_for)]
    max_held_for: Option<Duration>,

    /// How long GET /v1/usage can look back: ended holds older than this
    /// are pruned from the database.
    #[arg(long, value_name = "DURATION", default_value = "35d", value_parser = parse_usage_retention)]
    usage_retention: Duration,

    /// Most ended holds the usage history keeps (about 250 bytes of memory
    /// and 410 on disk each; up to an eighth more between two cuts): past
    /// it the oldest go first, even within --usage-retention, and GET
    /// /v1/usage's "history_from" says where the kept history begins. A
    /// client that takes a hold per job would otherwise grow the history
    /// with its rate for the whole retention.
    #[arg(long, value_name = "HOLDS", default_value_t = usage::DEFAULT_MAX_USAGE_HOLDS, value_parser = parse_usage_max_holds)]
    usage_max_holds: usize,

    /// Size of the write-ahead log (DB.wal) when it is created, in bytes
    /// (suffixes KiB, MiB). An existing log keeps its size. Writers get 503
    /// when it is full because checkpoints into the database keep failing.
    #[arg(long, default_value = "16MiB", value_parser = parse_size)]
    log_size: u64,

    /// Checkpoint the log into the database at most this long after a change
    /// (or sooner: see --checkpoint-changes, and at a quarter of the log).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    checkpoint_interval: Duration,

    /// Checkpoint once this many changes wait in the log, if that comes
    /// before --checkpoint-interval.
    #[arg(long, default_value_t = store::DEFAULT_CHECKPOINT_CHANGES)]
    checkpoint_changes: usize,

    /// A checkpoint merges the runs of task rows into a new base once they
    /// hold this many rows or as many as the base, whichever is more:
    /// lower keeps start-up reading fewer rows, higher rewrites the base
    /// less often.
    #[arg(long, default_value_t = store::DEFAULT_COMPACT_AT, value_name = "ROWS")]
    compact_at: usize,

    /// Print this man page (roff) and exit, e.g.
    /// sprite-tasksd --man > /usr/local/share/man/man1/sprite-tasksd.1
    #[arg(long)]
    man: bool,
}

/// Parses `65536`, `64KiB` or `16MiB`.
fn parse_size(text: &str) -> Result<u64, String> {
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, ""),
    };
    let shift = match unit {
        "" | "B" => 0,
        "KiB" | "K" | "k" => 10,
        "MiB" | "M" => 20,
        "GiB" | "G" => 30,
        _ => return Err(format!("{text:?} is not a size such as 16MiB")),
    };
    let size = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| format!("{text:?} is not a size such as 16MiB"))?;
    if !(store::MIN_LOG_SIZE..=MAX_LOG_SIZE).contains(&size) {
        return Err(format!(
            "{text:?} must be between {}KiB and {}GiB",
            store::MIN_LOG_SIZE >> 10,
            MAX_LOG_SIZE >> 30
        ));
    }
    Ok(size)
}

/// The largest log: recovery reads the whole log into memory.
const MAX_LOG_SIZE: u64 = 1 << 30;

fn parse_mode(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text.trim_start_matches("0o"), 8)
        .ok()
        .filter(|mode| *mode <= 0o777)
        .ok_or_else(|| format!("{text:?} is not an octal mode such as 666 or 660"))
}

/// `--usage-max-holds`: 1 to [`usage::MAX_USAGE_HOLDS_CEILING`].
fn parse_usage_max_holds(text: &str) -> Result<usize, String> {
    let ceiling = usage::MAX_USAGE_HOLDS_CEILING;
    text.parse::<usize>()
        .ok()
        .filter(|n| (1..=ceiling).contains(n))
        .ok_or_else(|| format!("{text:?} is not a number of holds from 1 to {ceiling}"))
}

/// `--max-tasks`: 1 to [`MAX_TASKS_CEILING`].
fn parse_max_tasks(text: &str) -> Result<usize, String> {
    text.parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_TASKS_CEILING).contains(n))
        .ok_or_else(|| format!("{text:?} is not a task count from 1 to {MAX_TASKS_CEILING}"))
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .ok()
        .filter(|d| !d.is_zero() && *d <= Duration::from_secs(24 * 3600))
        .ok_or_else(|| format!("{text:?} is not a duration between 1ns and 24h such as 10s"))
}

/// `--max-expire`: what the API takes as `expire`, up to [`MAX_EXPIRE_CEILING`].
fn parse_max_expire(text: &str) -> Result<Duration, String> {
    expire::parse_arg(text, MAX_EXPIRE_CEILING).map_err(|e| match e {
        ExpireError::TooShort | ExpireError::TooLong { .. } => format!(
            "{text:?} is out of range: --max-expire is between 1s and {} ({} seconds)",
            humantime::format_duration(MAX_EXPIRE_CEILING),
            MAX_EXPIRE_CEILING.as_secs()
        ),
        _ => format!(
            "{text:?} is not a duration; --max-expire is {}",
            expire::FORMS
        ),
    })
}

/// `--max-held-for`: from 1s up to a year, in the forms `expire` takes.
fn parse_max_held_for(text: &str) -> Result<Duration, String> {
    expire::parse_arg(text, sprite_tasks::api::MAX_HELD_FOR_CEILING).map_err(|e| match e {
        ExpireError::TooShort | ExpireError::TooLong { .. } => format!(
            "{text:?} is out of range: --max-held-for is between 1s and {}",
            humantime::format_duration(sprite_tasks::api::MAX_HELD_FOR_CEILING),
        ),
        _ => format!(
            "{text:?} is not a duration; --max-held-for is {}",
            expire::FORMS
        ),
    })
}

/// `--usage-retention`: from an hour up to ten years.
fn parse_usage_retention(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .ok()
        .filter(|d| (Duration::from_secs(3600)..=Duration::from_secs(3653 * 24 * 3600)).contains(d))
        .ok_or_else(|| format!("{text:?} is not a duration between 1h and 10 years such as 35d"))
}

/// `path` made absolute against the working directory, so the start-up line
/// and every later message name the same file wherever they are read.
fn absolute(path: &Path) -> Result<PathBuf, String> {
    std::path::absolute(path).map_err(|e| format!("cannot resolve {}: {e}", path.display()))
}

fn create_parent(path: &Path) -> Result<(), String> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create directory {}: {e}", dir.display())),
        _ => Ok(()),
    }
}

fn main() -> ExitCode {
    // SAFETY: first thing in main, before any thread exists (the logger
    // and the store's checkpointer start later).
    let service = unsafe { ServiceEnv::take() };
    sprite_tasks::process::map_large_allocations();
    let args = Args::parse();
    if args.man {
        return print_man();
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        // Logging is best effort: a closed stderr pipe drops lines (counted
        // in /metrics), it never stops the daemon.
        .with_writer(|| StderrLog)
        .log_internal_errors(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    debug_assert!(DEFAULT_MAX_EXPIRE <= MAX_EXPIRE_CEILING);

    let paths = absolute(&args.socket).and_then(|socket| {
        let db = match &args.db {
            Some(db) => absolute(db)?,
            None => Config::default_db_for(&socket),
        };
        Ok((socket, db))
    });
    let (socket, db) = match paths {
        Ok(paths) => paths,
        Err(message) => return fail(&message),
    };
    let config = Config {
        socket,
        socket_mode: args.socket_mode,
        limits: Limits {
            max_head: args.max_head,
            max_body: args.max_body,
            ..Limits::default()
        },
        timeouts: Timeouts {
            head: args.head_timeout,
            body: args.body_timeout,
            idle: args.idle_timeout,
            write: args.write_timeout,
        },
        shares: ShareLimits {
            max_connections: args.max_connections,
            reserved: args.reserved_connections,
            per_uid: args.max_connections_per_uid,
            streams_per_uid: args.max_streams_per_uid,
        },
        max_tasks: args.max_tasks,
        max_bound: args.max_bound,
        ownership: if args.shared {
            Ownership::Shared
        } else {
            Ownership::Owned {
                max_per_uid: args
                    .max_tasks_per_uid
                    .unwrap_or_else(|| default_max_tasks_per_uid(args.max_tasks)),
            }
        },
        max_expire: args.max_expire,
        shutdown_grace: args.shutdown_grace,
        hooks: HookConfig {
            while_held: args.while_held,
            on_idle: args.on_idle,
            on_idle_after: args.on_idle_after,
            grace: args.hook_grace,
        },
        event_retention: args.event_retention.max(1),
        max_held_for: args.max_held_for,
        usage_retention: args.usage_retention,
        usage_max_holds: args.usage_max_holds,
    };
    let store_options = StoreOptions {
        log_size: args.log_size,
        checkpoint_interval: args.checkpoint_interval,
        checkpoint_changes: args.checkpoint_changes.max(1),
        background: true,
        usage_retention: args.usage_retention,
        compact_at: args.compact_at,
    };
    let service = match service {
        Ok(service) => service,
        Err(e) => return fail(&e.to_string()),
    };
    match run(config, &db, &store_options, service) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => fail(&message),
    }
}

/// `--man`: the page generated from these options, on stdout.
fn print_man() -> ExitCode {
    use std::io::Write;
    let mut page = Vec::new();
    let written = clap_mangen::Man::new(Args::command())
        .render(&mut page)
        .and_then(|()| std::io::stdout().lock().write_all(&page));
    match written {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            fail(&format!("cannot print the man page: {e}"))
        }
        _ => ExitCode::SUCCESS,
    }
}

/// Reports a start-up failure, once, and exits 1.
fn fail(message: &str) -> ExitCode {
    logging::print_line(&format!("sprite-tasksd: {message}"));
    ExitCode::FAILURE
}

fn run(
    config: Config,
    db: &Path,
    store_options: &StoreOptions,
    service: ServiceEnv,
) -> Result<(), String> {
    // A passed socket is served as it is: systemd made it and keeps it.
    if service.listener.is_none() {
        // A daemon already serving the socket: refuse before creating anything.
        server::refuse_live_socket(&config.socket).map_err(|e| e.to_string())?;
        create_parent(&config.socket)?;
    }
    create_parent(db)?;
    // The database lock is taken next: a second daemon stops here, before
    // it touches the first one's socket.
    let store = Store::open(db, store_options).map_err(|e| e.to_string())?;
    let server = Server::with_service(config, store, service).map_err(|e| e.to_string())?;
    server.run().map_err(|e| e.to_string())?;
    Ok(())
}
