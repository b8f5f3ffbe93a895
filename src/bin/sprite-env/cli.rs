//! The command line of `sprite-env` as clap types: every flag, default and
//! help text. [`crate::generated`] derives the completions and man pages
//! from these, so the help text here is the documentation.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use sprite_tasks::client::parse_interval;
use sprite_tasks::server::Config;

/// The client of the Tasks API that keeps a Sprite awake.
///
/// Talks to sprite-tasksd on its Unix socket (HTTP, virtual host "sprite").
///
/// Examples:
///   sprite-env curl -X POST /v1/tasks -d '{"name": "agent", "expire": "1h"}'
///   sprite-env tasks list
///   sprite-env tasks hold agent -- ./run-agent.sh
#[derive(Debug, Parser)]
#[command(name = "sprite-env", version, verbatim_doc_comment)]
pub struct Cli {
    /// The daemon's Unix socket.
    #[arg(long, global = true, env = "SPRITE_API_SOCKET", default_value = Config::DEFAULT_SOCKET)]
    pub socket: PathBuf,

    #[command(subcommand)]
    pub command: Top,
}

#[derive(Debug, Subcommand)]
pub enum Top {
    /// Run curl against the Tasks API, socket and host filled in.
    ///
    /// The API path (starting with /) may stand anywhere among the curl
    /// arguments. A JSON Content-Type is added when a body is sent (-d,
    /// --data-*, -T) without one. -sS (no progress meter, errors shown) is
    /// added unless you choose curl's output yourself (-s, -S, -v, -#,
    /// --progress-bar, --trace...); -N (no buffering) for /v1/events.
    /// curl's exit status is passed through.
    ///
    /// Examples:
    ///   sprite-env curl /v1/tasks
    ///   sprite-env curl -X POST /v1/tasks -d '{"name": "agent", "expire": "1h"}'
    ///   sprite-env curl -X DELETE /v1/tasks/agent
    #[command(verbatim_doc_comment)]
    Curl {
        /// curl's options and the API path, in any order.
        #[arg(
            value_name = "CURL ARGS",
            allow_hyphen_values = true,
            trailing_var_arg = true,
            num_args = 0..
        )]
        args: Vec<OsString>,
    },
    /// Manage tasks, watch them, and hold one while a command runs.
    ///
    /// No curl needed: sprite-env speaks HTTP to the socket itself.
    ///
    /// Example:
    ///   sprite-env tasks hold agent -- ./run-agent.sh
    #[command(subcommand, verbatim_doc_comment)]
    Tasks(TasksCommand),
    /// Print a completion script for a shell, generated from these options.
    ///
    /// Examples:
    ///   sprite-env completions bash > /usr/share/bash-completion/completions/sprite-env
    ///   sprite-env completions zsh > /usr/local/share/zsh/site-functions/_sprite-env
    ///   sprite-env completions fish > ~/.config/fish/completions/sprite-env.fish
    #[command(verbatim_doc_comment)]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page of sprite-env (roff), generated from these options;
    /// with --dir, write one page per command instead (sprite-env.1,
    /// sprite-env-tasks.1, sprite-env-tasks-wait-idle.1, ...).
    ///
    /// Examples:
    ///   sprite-env man > /usr/local/share/man/man1/sprite-env.1
    ///   sprite-env man --dir /usr/local/share/man/man1
    #[command(verbatim_doc_comment)]
    Man {
        /// Write every page into this directory.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TasksCommand {
    /// List the live tasks: name, when started, how long until they expire
    /// (or which process ends them), who holds them and why. --json shows
    /// every field: the holder's pid, uid and parent too.
    ///
    /// Example:
    ///   sprite-env tasks list
    #[command(verbatim_doc_comment)]
    List(JsonFlag),
    /// Show one task (exits 1 if it is not live).
    ///
    /// Example:
    ///   sprite-env tasks get agent
    #[command(verbatim_doc_comment)]
    Get {
        /// The task's name.
        name: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Create a task (exits 1 if the name is live already).
    ///
    /// Example:
    ///   sprite-env tasks create agent --expire 1h --reason "nightly build"
    ///   sprite-env tasks create agent --expire 1h --pid "$$"   # ends with this shell
    #[command(verbatim_doc_comment)]
    Create(TaskExpire),
    /// Refresh a task's expiry, creating it if missing.
    ///
    /// Example:
    ///   sprite-env tasks refresh agent --expire 30m
    ///   while sleep 60; do sprite-env tasks refresh agent --expire 5m -q; done
    #[command(verbatim_doc_comment)]
    Refresh(TaskExpire),
    /// Delete a task: release its hold (exits 1 if it is not live).
    ///
    /// Example:
    ///   sprite-env tasks delete agent
    #[command(verbatim_doc_comment)]
    Delete {
        /// The task's name.
        name: String,
    },
    /// Say who holds the machine and until when, or since when it is idle;
    /// while held, one line per task says how long it has been held, the
    /// process that holds it and its reason. Names released for being held
    /// past the daemon's --max-held-for are listed as tripped: creating
    /// them again is refused until they are deleted.
    ///
    /// Exits 0 when held and 3 when idle (as `systemctl is-active`), so a
    /// script can test it; 1 if the daemon cannot be asked.
    ///
    /// Example:
    ///   sprite-env tasks status
    ///   if sprite-env tasks status -q; then echo held; fi
    #[command(verbatim_doc_comment)]
    Status {
        #[command(flatten)]
        json: JsonFlag,
        /// Print nothing; the exit status says it.
        #[arg(short, long, conflicts_with = "json")]
        quiet: bool,
    },
    /// Report how long tasks held the machine (the last 24 hours by default).
    ///
    /// One row per task and owner: how long it held the machine, how much
    /// of that no other task held it (ALONE), how many holds it took and
    /// when it was last held; then the total, the time a bill counts. A
    /// timeline follows: a row for the machine ("held"), then one per task,
    /// each column a slice of the window shaded by how much of it was held
    /// (█ throughout, ▓ over 2/3, ▒ over 1/3, ░ less, blank not at all). It
    /// is as wide as COLUMNS or the terminal allows (60 columns when
    /// neither is known, and with --json).
    ///
    /// Holds survive daemon restarts; the daemon forgets those that ended
    /// longer ago than its --usage-retention (35d by default).
    ///
    /// Examples:
    ///   sprite-env tasks report
    ///   sprite-env tasks report --since 90m
    ///   sprite-env tasks report --since 2026-06-01T00:00:00Z --until 2026-06-02T00:00:00Z --json
    #[command(verbatim_doc_comment)]
    Report {
        /// Start of the window: a duration back from now (24h, 90m, 30s)
        /// or an RFC 3339 time.
        #[arg(long, value_name = "WHEN", default_value = "24h")]
        since: String,
        /// End of the window, as --since [default: now].
        #[arg(long, value_name = "WHEN")]
        until: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Print task events as they happen, until interrupted.
    ///
    /// Events: created, refreshed, deleted, expired, released, held, idle. When the
    /// daemon restarts (or cuts off a watcher that fell behind), the watch
    /// reconnects and resumes after the last event it printed, so nothing
    /// retained is missed or printed twice. Exits 1 if there is no daemon
    /// when it starts.
    ///
    /// Example:
    ///   sprite-env tasks watch --since 0
    #[command(verbatim_doc_comment)]
    Watch {
        /// Replay the retained events after this sequence number first.
        #[arg(long, value_name = "SEQ")]
        since: Option<u64>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Wait until nothing holds the machine: the last task deleted or expired.
    ///
    /// Returns at once if the machine is idle now. Otherwise follows the
    /// daemon's event stream (no polling) until the held -> idle edge. A
    /// daemon that restarts meanwhile is followed to the next one.
    ///
    /// Exits 0 when idle, 1 when --timeout passes first, 69 when the daemon
    /// cannot be reached (at the start, or for more than 30s after it went
    /// away).
    ///
    /// Example (when the agents are done, snapshot and stop):
    ///   sprite-env tasks wait-idle --timeout 8h && ./snapshot.sh && poweroff
    #[command(verbatim_doc_comment)]
    WaitIdle {
        /// Give up (exit 1) after this long: seconds, or a duration such as
        /// 90s, 30m, 8h. Without it, wait for as long as it takes.
        #[arg(long, value_name = "DURATION", value_parser = parse_interval)]
        timeout: Option<Duration>,
    },
    /// Hold a task for exactly as long as COMMAND runs.
    ///
    /// Creates (or refreshes) the task with --expire, runs COMMAND, refreshes
    /// the task every --every while it runs, and deletes it when COMMAND
    /// exits, however it exits. A failed refresh is reported and retried; one
    /// the daemon refuses (403, 409: e.g. a name --max-held-for tripped) is
    /// reported once, and COMMAND runs on unheld.
    /// SIGINT, SIGTERM and SIGHUP sent to the holder are forwarded to
    /// COMMAND (Ctrl-C at a terminal reaches COMMAND directly and is not sent
    /// twice); after one, the holder stops refreshing, so a COMMAND that
    /// ignores it is held for at most one more expiry. The task is bound to
    /// COMMAND's process: the daemon releases it the moment COMMAND exits,
    /// even if the holder is gone. If the holder itself is killed (kill -9),
    /// COMMAND gets SIGTERM (Linux PR_SET_PDEATHSIG) rather than run on
    /// unheld, and its exit releases the task. The reason is COMMAND's
    /// command line unless --reason says otherwise.
    ///
    /// --every defaults to a fifth of --expire, at most 1m; it must be at
    /// most half of --expire, so a failed refresh can be retried before the
    /// hold lapses. The task name is the hold: two
    /// holders of one name share one task, and the first to finish releases
    /// it; give concurrent holds distinct names.
    ///
    /// Exits with COMMAND's status; 125 if the task could not be held (the
    /// command is then not run), 126/127 if COMMAND cannot be run.
    ///
    /// Example:
    ///   sprite-env tasks hold agent --expire 5m --every 1m -- claude -p "fix the tests"
    #[command(verbatim_doc_comment)]
    Hold(HoldArgs),
}

#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Print the daemon's JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TaskExpire {
    /// The task's name: letters, digits, `.`, `_`, `-`, `:`, `@`.
    pub name: String,
    /// How long the hold lasts: seconds, or a duration such as 90s, 30m, 1h
    /// (at most the daemon's --max-expire, 1h by default).
    #[arg(long, value_name = "DURATION")]
    pub expire: String,
    /// Why the machine is held (at most 256 bytes, one line), shown in
    /// list, status and events; a refresh without it keeps the reason.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// End the hold when process PID exits (or at its expiry, whichever is
    /// first); a refresh without it keeps the binding.
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
    #[command(flatten)]
    pub json: JsonFlag,
    /// Print nothing on success (for loops); errors are still reported.
    #[arg(short, long, conflicts_with = "json")]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct HoldArgs {
    /// The task to hold.
    pub name: String,
    /// Expiry of each refresh: how long the task outlives a holder that is
    /// killed without cleaning up.
    #[arg(long, value_name = "DURATION", default_value = "5m")]
    pub expire: String,
    /// Refresh interval [default: a fifth of --expire, at most 1m]; at most
    /// half of --expire.
    #[arg(long, value_name = "DURATION")]
    pub every: Option<String>,
    /// Why the machine is held [default: COMMAND's command line].
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// The command to run, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}
