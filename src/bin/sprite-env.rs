//! `sprite-env`: the client of the Tasks API. `curl` runs the system curl
//! against the socket; `tasks` speaks HTTP itself (no curl needed), and
//! `tasks hold` keeps a task for exactly as long as a command runs.
//!
//! Exit codes: `curl` passes curl's through (7 when the socket is not
//! served, 127 when curl is missing); `tasks` exits 0, or 1 with the
//! daemon's message; `tasks status` exits 3 when idle (as `systemctl
//! is-active`); `tasks hold` exits with its command's status (dying of
//! the same signal if the command did), 125 when the hold could not be taken,
//! 126/127 when the command cannot be run. Usage errors exit 2.

use std::ffi::OsString;
use std::io::{self, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, ExitStatus};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use clap::{Args, CommandFactory, Parser, Subcommand};
use sprite_tasks::client::{
    self, Client, ClientError, HoldDetails, check_interval, curl_args, default_interval,
    default_reason, parse_interval, render_event, render_status, render_tasks, retry_delay,
};
use sprite_tasks::expire::MAX_EXPIRE_CEILING;
use sprite_tasks::server::Config;
use sprite_tasks::time::Timestamp;

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
struct Cli {
    /// The daemon's Unix socket.
    #[arg(long, global = true, env = "SPRITE_API_SOCKET", default_value = Config::DEFAULT_SOCKET)]
    socket: PathBuf,

    #[command(subcommand)]
    command: Top,
}

#[derive(Debug, Subcommand)]
enum Top {
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
enum TasksCommand {
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
    /// while held, one line per task names the process that holds it and
    /// its reason.
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
    /// exits, however it exits. A failed refresh is reported and retried.
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
struct JsonFlag {
    /// Print the daemon's JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct TaskExpire {
    /// The task's name: letters, digits, `.`, `_`, `-`, `:`, `@`.
    name: String,
    /// How long the hold lasts: seconds, or a duration such as 90s, 30m, 1h
    /// (at most the daemon's --max-expire, 1h by default).
    #[arg(long, value_name = "DURATION")]
    expire: String,
    /// Why the machine is held (at most 256 bytes, one line), shown in
    /// list, status and events; a refresh without it keeps the reason.
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
    /// End the hold when process PID exits (or at its expiry, whichever is
    /// first); a refresh without it keeps the binding.
    #[arg(long, value_name = "PID")]
    pid: Option<u32>,
    #[command(flatten)]
    json: JsonFlag,
    /// Print nothing on success (for loops); errors are still reported.
    #[arg(short, long, conflicts_with = "json")]
    quiet: bool,
}

#[derive(Debug, Args)]
struct HoldArgs {
    /// The task to hold.
    name: String,
    /// Expiry of each refresh: how long the task outlives a holder that is
    /// killed without cleaning up.
    #[arg(long, value_name = "DURATION", default_value = "5m")]
    expire: String,
    /// Refresh interval [default: a fifth of --expire, at most 1m]; at most
    /// half of --expire.
    #[arg(long, value_name = "DURATION")]
    every: Option<String>,
    /// Why the machine is held [default: COMMAND's command line].
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
    /// The command to run, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

/// Exit status of a `tasks` command that failed.
const EXIT_FAILED: u8 = 1;
/// Exit status for bad usage, as clap's.
const EXIT_USAGE: u8 = 2;
/// curl's own status for "could not connect", used when the socket is not
/// served before curl is even run.
const EXIT_CURL_NO_CONNECTION: u8 = 7;
/// The hold could not be taken (as `env`/`timeout` use 125 for their own
/// failures).
const EXIT_HOLD_FAILED: u8 = 125;
/// The command exists but cannot be executed.
const EXIT_CANNOT_EXECUTE: u8 = 126;
/// The command (or curl) was not found.
const EXIT_NOT_FOUND: u8 = 127;
/// `tasks status`: nothing holds the machine (as `systemctl is-active`
/// says "inactive").
const EXIT_IDLE: u8 = 3;
/// `tasks wait-idle`: the daemon cannot be reached (sysexits.h's
/// EX_UNAVAILABLE), apart from 1, which means the timeout passed.
const EXIT_UNAVAILABLE: u8 = 69;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let client = Client::new(&cli.socket);
    match cli.command {
        Top::Curl { args } => run_curl(&client, &args),
        Top::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "sprite-env", &mut script);
            done(print(&String::from_utf8_lossy(&script)))
        }
        Top::Man { dir: Some(dir) } => done(
            clap_mangen::generate_to(Cli::command(), &dir)
                .map_err(|e| format!("cannot write the man pages into {}: {e}", dir.display())),
        ),
        Top::Man { dir: None } => {
            let mut page = Vec::new();
            let rendered = clap_mangen::Man::new(Cli::command())
                .render(&mut page)
                .map_err(|e| format!("cannot render the man page: {e}"));
            done(rendered.and_then(|()| print(&String::from_utf8_lossy(&page))))
        }
        Top::Tasks(command) => match tasks(&client, command) {
            Ok(code) => code,
            Err(message) => {
                eprintln!("sprite-env: {message}");
                ExitCode::from(EXIT_FAILED)
            }
        },
    }
}

/// Exit 0, or 1 with the message.
fn done(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("sprite-env: {message}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn run_curl(client: &Client, user_args: &[OsString]) -> ExitCode {
    let args = match curl_args(user_args, client.socket()) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("sprite-env curl: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Err(e) = client.probe() {
        eprintln!("sprite-env curl: {e}");
        return ExitCode::from(EXIT_CURL_NO_CONNECTION);
    }
    // exec: curl's exit status, signals and output are the caller's directly.
    let error = Command::new("curl").args(&args).exec();
    if error.kind() == io::ErrorKind::NotFound {
        eprintln!(
            "sprite-env curl: curl was not found on PATH; install it (e.g. apt-get install curl), or use `sprite-env tasks`, which needs no curl"
        );
        ExitCode::from(EXIT_NOT_FOUND)
    } else {
        eprintln!("sprite-env curl: cannot run curl: {error}");
        ExitCode::from(EXIT_CANNOT_EXECUTE)
    }
}

fn now() -> Timestamp {
    Timestamp::from_system_time(SystemTime::now())
}

/// Writes to stdout; a closed stdout (`| head`) is not an error worth a
/// message.
fn print(text: &str) -> Result<(), String> {
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(format!("cannot write: {e}")),
        _ => Ok(()),
    }
}

/// Prints one task: the daemon's raw JSON with `--json`, nothing with
/// `--quiet`, else a table row.
fn print_task(
    json: bool,
    quiet: bool,
    (body, task): (Vec<u8>, sprite_tasks::api::TaskView),
) -> Result<(), String> {
    if quiet {
        return Ok(());
    }
    print(&if json {
        raw(&body)
    } else {
        render_tasks(&[task], now())
    })
}

fn raw(body: &[u8]) -> String {
    let mut text = String::from_utf8_lossy(body).into_owned();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// A client error as the command line says it: the daemon's sentence, with
/// its API terms (`PUT /v1/tasks/NAME`, `expire`) put as the command that
/// does the same.
fn in_cli_terms(error: ClientError, name: &str) -> String {
    match error {
        // A create of a taken name; other conflicts (a name bound to
        // another live process) keep the daemon's sentence.
        ClientError::Api {
            status: 409,
            message,
        } if message.contains("already exists") => format!(
            "task {name:?} already exists; refresh it with `sprite-env tasks refresh {name} --expire DURATION` or choose another name"
        ),
        ClientError::Api { message, .. } if message.starts_with("expire ") => {
            format!("--{message}")
        }
        other => other.to_string(),
    }
}

fn tasks(client: &Client, command: TasksCommand) -> Result<ExitCode, String> {
    let failed = |e: ClientError| e.to_string();
    match command {
        TasksCommand::List(flag) => {
            let (body, list) = client.list().map_err(failed)?;
            print(&if flag.json {
                raw(&body)
            } else {
                render_tasks(&list.tasks, now())
            })?;
        }
        TasksCommand::Get { name, json } => {
            let answer = client.get(&name).map_err(|e| in_cli_terms(e, &name))?;
            print_task(json.json, false, answer)?;
        }
        TasksCommand::Create(args) => {
            let details = HoldDetails {
                reason: args.reason.clone(),
                pid: args.pid,
            };
            let expire = sprite_tasks::expire::arg_value(&args.expire);
            let answer = client
                .create_with(&args.name, &expire, &details)
                .map_err(|e| in_cli_terms(e, &args.name))?;
            print_task(args.json.json, args.quiet, answer)?;
        }
        TasksCommand::Refresh(args) => {
            let details = HoldDetails {
                reason: args.reason.clone(),
                pid: args.pid,
            };
            let expire = sprite_tasks::expire::arg_value(&args.expire);
            let answer = client
                .refresh_with(&args.name, &expire, &details)
                .map_err(|e| in_cli_terms(e, &args.name))?;
            print_task(args.json.json, args.quiet, answer)?;
        }
        TasksCommand::Delete { name } => {
            client.delete(&name).map_err(|e| in_cli_terms(e, &name))?
        }
        TasksCommand::Status { json, quiet } => {
            let (body, status) = client.status().map_err(failed)?;
            if json.json {
                print(&raw(&body))?;
            } else if !quiet {
                let tasks = if status.held {
                    client.list().map_err(failed)?.1.tasks
                } else {
                    Vec::new()
                };
                print(&format!("{}\n", render_status(&status, &tasks, now())))?;
            }
            if !status.held {
                return Ok(ExitCode::from(EXIT_IDLE));
            }
        }
        TasksCommand::Watch { since, json } => return watch(client, since, json.json),
        TasksCommand::WaitIdle { timeout } => return Ok(wait_idle::run(client, timeout)),
        TasksCommand::Hold(args) => return Ok(hold::run(client, args)),
    }
    Ok(ExitCode::SUCCESS)
}

/// First pause before reconnecting a watch; it doubles up to
/// [`WATCH_RETRY_MAX`] while the daemon stays away.
const WATCH_RETRY_FIRST: Duration = Duration::from_millis(100);

/// Longest pause between reconnection attempts: a restarted daemon is
/// picked up within this.
const WATCH_RETRY_MAX: Duration = Duration::from_secs(2);

/// `tasks watch`: prints events until interrupted. A stream that ends (the
/// daemon restarts, or cut off this watcher as too slow) is reopened with
/// `?since=` the last sequence number printed, so the retained events in
/// between are replayed, none twice.
fn watch(client: &Client, since: Option<u64>, json: bool) -> Result<ExitCode, String> {
    let say = |message: String| eprintln!("sprite-env tasks watch: {message}");
    // The first connection must succeed: no daemon at all is an error.
    let mut stream = client.events(since).map_err(|e| e.to_string())?;
    let mut last_seq = since;
    loop {
        let why = match print_events(&mut stream, &mut last_seq, json) {
            Ok(None) => return Ok(ExitCode::SUCCESS),
            Ok(Some(why)) => why,
            Err(e) => e,
        };
        let resume = match last_seq {
            Some(seq) => format!("resuming after #{seq}"),
            None => "no event seen yet, so resuming with what comes next".to_owned(),
        };
        say(format!("{why}; reconnecting ({resume})"));
        let mut delay = WATCH_RETRY_FIRST;
        stream = loop {
            match client.events(last_seq) {
                Ok(stream) => break stream,
                // The daemon answered, and refused: retrying cannot help.
                Err(e @ ClientError::Api { .. }) => return Err(e.to_string()),
                Err(_) => {
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(WATCH_RETRY_MAX);
                }
            }
        };
        say("reconnected".to_owned());
    }
}

/// Prints the stream's events, noting the last sequence number. Returns
/// `Ok(None)` when stdout is gone (`watch | head`: the watch is over), or
/// why the stream ended.
fn print_events(
    stream: &mut client::EventStream,
    last_seq: &mut Option<u64>,
    json: bool,
) -> Result<Option<String>, String> {
    loop {
        let line = match stream.next_line() {
            Ok(Some(line)) => line,
            Ok(None) => return Ok(Some("the daemon ended the event stream".to_owned())),
            Err(e) => return Err(e.to_string()),
        };
        if line.is_empty() {
            continue;
        }
        if let Some(seq) = serde_json::from_slice::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| v.get("seq").and_then(serde_json::Value::as_u64))
        {
            *last_seq = Some(seq);
        }
        let text = if json {
            raw(&line)
        } else {
            format!("{}\n", render_event(&line))
        };
        let mut stdout = io::stdout().lock();
        if stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
            .is_err()
        {
            return Ok(None);
        }
        if client::is_lagged(&line) {
            return Ok(Some("this watcher fell behind and was cut off".to_owned()));
        }
    }
}

/// `tasks wait-idle`: the event stream until the held -> idle edge.
mod wait_idle {
    use super::*;

    /// How long a daemon that went away mid-wait (a restart, an upgrade)
    /// is waited for before giving up: far longer than a restart takes
    /// (systemd's default RestartSec is 100 ms), short enough that a
    /// script learns of a daemon that is gone for good.
    const REACHABLE_AGAIN_WITHIN: Duration = Duration::from_secs(30);

    fn say(message: &str) {
        eprintln!("sprite-env tasks wait-idle: {message}");
    }

    /// How one wait on the stream ended.
    enum Ended {
        Idle,
        TimedOut,
        /// The stream broke or ended: reconnect (why).
        Lost(String),
    }

    pub fn run(client: &Client, timeout: Option<Duration>) -> ExitCode {
        let started = Instant::now();
        let deadline = timeout.map(|t| started + t);
        let timed_out = || {
            if let Some(after) = timeout {
                say(&format!(
                    "timed out after {}: the machine is still held",
                    humantime::format_duration(after)
                ));
            }
            ExitCode::from(EXIT_FAILED)
        };
        let mut unreachable_since: Option<Instant> = None;
        let mut retry = WATCH_RETRY_FIRST;
        let mut first = true;
        loop {
            if deadline.is_some_and(|at| at <= Instant::now()) {
                return timed_out();
            }
            let attempt = wait_once(client, deadline);
            let was_first = std::mem::replace(&mut first, false);
            match attempt {
                Ok(Ended::Idle) => return ExitCode::SUCCESS,
                Ok(Ended::TimedOut) => return timed_out(),
                Ok(Ended::Lost(why)) => {
                    say(&format!("{why}; reconnecting"));
                    unreachable_since = None;
                    retry = WATCH_RETRY_FIRST;
                }
                Err(e) => {
                    let since = *unreachable_since.get_or_insert_with(Instant::now);
                    // No daemon to begin with, or one gone for too long.
                    if was_first || since.elapsed() >= REACHABLE_AGAIN_WITHIN {
                        say(&e.to_string());
                        return ExitCode::from(EXIT_UNAVAILABLE);
                    }
                    let mut pause = retry;
                    if let Some(at) = deadline {
                        pause = pause.min(at.saturating_duration_since(Instant::now()));
                    }
                    std::thread::sleep(pause);
                    retry = (retry * 2).min(WATCH_RETRY_MAX);
                }
            }
        }
    }

    /// Opens the event stream, then asks for the status: an idle edge
    /// between the two is seen by one of them. Then reads events until
    /// `idle`, the deadline, or the end of the stream.
    fn wait_once(client: &Client, deadline: Option<Instant>) -> Result<Ended, ClientError> {
        let left = |deadline: Option<Instant>| {
            deadline.map(|at| at.saturating_duration_since(Instant::now()))
        };
        let bounded = match left(deadline) {
            Some(left) if left.is_zero() => return Ok(Ended::TimedOut),
            Some(left) => client
                .clone()
                .with_timeout(left.min(client::REQUEST_TIMEOUT)),
            None => client.clone(),
        };
        let timed_out = |e: &ClientError| {
            matches!(e, ClientError::Timeout { .. })
                && deadline.is_some_and(|at| at <= Instant::now())
        };
        let mut stream = match bounded.events(None) {
            Ok(stream) => stream,
            Err(e) if timed_out(&e) => return Ok(Ended::TimedOut),
            Err(e) => return Err(e),
        };
        match bounded.status() {
            Ok((_, status)) if !status.held => return Ok(Ended::Idle),
            Ok(_) => {}
            Err(e) if timed_out(&e) => return Ok(Ended::TimedOut),
            Err(e) => return Err(e),
        }
        loop {
            let wait = match left(deadline) {
                Some(left) if left.is_zero() => return Ok(Ended::TimedOut),
                other => other,
            };
            stream.set_read_timeout(wait)?;
            let line = match stream.next_line() {
                Ok(Some(line)) => line,
                Ok(None) => return Ok(Ended::Lost("the daemon ended the event stream".into())),
                Err(ClientError::Io(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(Ended::TimedOut);
                }
                Err(e) => return Ok(Ended::Lost(e.to_string())),
            };
            if client::is_lagged(&line) {
                return Ok(Ended::Lost(
                    "this waiter fell behind and was cut off".into(),
                ));
            }
            let event = serde_json::from_slice::<serde_json::Value>(&line).ok();
            if event
                .as_ref()
                .and_then(|event| event.get("event"))
                .and_then(serde_json::Value::as_str)
                == Some("idle")
            {
                return Ok(Ended::Idle);
            }
        }
    }
}

/// `tasks hold`: the seed's heartbeat script as one command.
mod hold {
    use super::*;

    use signals::{Received, SignalPipe};

    /// Time allowed to release the task when the command is done: a few
    /// attempts, since a missed release keeps the machine awake until the
    /// expiry.
    const RELEASE_DEADLINE: Duration = Duration::from_secs(5);

    /// Pause between release attempts.
    const RELEASE_RETRY: Duration = Duration::from_millis(200);

    fn say(message: impl std::fmt::Display) {
        eprintln!("sprite-env tasks hold: {message}");
    }

    pub fn run(client: &Client, args: HoldArgs) -> ExitCode {
        let Some((program, program_args)) = args.command.split_first() else {
            say("no command given after `--`");
            return ExitCode::from(EXIT_USAGE);
        };
        let expire_json = sprite_tasks::expire::arg_value(&args.expire);
        let expire = match sprite_tasks::expire::decode(&expire_json, MAX_EXPIRE_CEILING) {
            Ok(expire) => expire,
            Err(e) => {
                say(format!("--expire {:?}: {e}", args.expire));
                return ExitCode::from(EXIT_USAGE);
            }
        };
        let every = match args.every.as_deref().map_or_else(
            || Ok::<_, String>(default_interval(expire)),
            |every| {
                let every = parse_interval(every)?;
                check_interval(expire, every)?;
                Ok(every)
            },
        ) {
            Ok(every) => every,
            Err(e) => {
                say(e);
                return ExitCode::from(EXIT_USAGE);
            }
        };
        // Signals are caught before the hold exists, so none can end the
        // holder between taking the hold and watching the command.
        let signals = match SignalPipe::install() {
            Ok(signals) => signals,
            Err(e) => {
                say(format!("cannot set up signal handling: {e}"));
                return ExitCode::from(EXIT_HOLD_FAILED);
            }
        };
        // Bound to the holder until COMMAND runs, then to COMMAND: whichever
        // dies first, the daemon releases the task at once.
        let mut details = HoldDetails {
            reason: Some(
                args.reason
                    .clone()
                    .unwrap_or_else(|| default_reason(&args.command)),
            ),
            pid: Some(std::process::id()),
        };
        // The processes the task may be bound to, in the order bound.
        let mut bound = vec![std::process::id()];
        if let Err(e) = client.refresh_with(&args.name, &expire_json, &details) {
            say(format!(
                "cannot hold task {:?}: {}; the command was not started",
                args.name,
                in_cli_terms(e, &args.name)
            ));
            return ExitCode::from(EXIT_HOLD_FAILED);
        }
        // Told to stop (or Ctrl-C) while the hold was being taken: the
        // command never starts.
        let pending = match signals.wait(Some(Duration::ZERO)) {
            Ok(pending) => pending,
            Err(e) => {
                release(client, &args.name, &bound);
                say(format!("cannot read signals: {e}"));
                return ExitCode::from(EXIT_HOLD_FAILED);
            }
        };
        if let Some(stop) = pending.iter().find(|r| r.signal != libc::SIGCHLD) {
            release(client, &args.name, &bound);
            return die_of(stop.signal);
        }
        let mut command = Command::new(program);
        command.args(program_args);
        end_with_holder(&mut command);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                release(client, &args.name, &bound);
                say(format!("cannot run {}: {e}", program.to_string_lossy()));
                return ExitCode::from(match e.kind() {
                    io::ErrorKind::NotFound => EXIT_NOT_FOUND,
                    _ => EXIT_CANNOT_EXECUTE,
                });
            }
        };
        details.pid = Some(child.id());
        bound.push(child.id());
        // A COMMAND that already exited is not visible to bind: the hold
        // stays bound to the holder, which releases it below.
        let _ = client.refresh_with(&args.name, &expire_json, &details);
        let mut refresher = match Refresher::start(
            client.clone(),
            args.name.clone(),
            expire_json,
            details,
            (expire, every),
        ) {
            Ok(refresher) => refresher,
            Err(e) => {
                // Without refreshes the hold would lapse under the command.
                say(format!(
                    "cannot start refreshing: {e}; stopping the command"
                ));
                // SAFETY: kill(2) on our own unreaped child.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
                let _ = child.wait();
                release(client, &args.name, &bound);
                return ExitCode::from(EXIT_HOLD_FAILED);
            }
        };
        let outcome = supervise(&mut child, &signals, &mut refresher, &args.name, expire);
        refresher.finish();
        release(client, &args.name, &bound);
        match outcome {
            Ok(status) => exit_like(status),
            Err(e) => {
                say(format!("lost track of the command: {e}"));
                ExitCode::from(EXIT_HOLD_FAILED)
            }
        }
    }

    /// Makes the command get SIGTERM if the holder dies without passing on a
    /// signal (kill -9, a crash): without its holder nobody refreshes the
    /// task, so the command must not go on believing itself held.
    ///
    /// Linux's `PR_SET_PDEATHSIG` fires when the *thread* that forked the
    /// child ends; the child is spawned, and supervised, by the main thread,
    /// which lives until the holder exits. A holder that died between the
    /// fork and the `prctl` is caught by comparing `getppid()` with the pid
    /// it had before the fork. Elsewhere this is a no-op, and the task
    /// lapses at its expiry as before.
    fn end_with_holder(command: &mut Command) {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: getpid(2) cannot fail.
            let holder = unsafe { libc::getpid() };
            // SAFETY: the closure runs in the forked child before exec and
            // calls only async-signal-safe functions (prctl, getppid, kill).
            unsafe {
                command.pre_exec(move || {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    if libc::getppid() != holder {
                        // The holder is gone already: end as SIGTERM
                        // would have ended the command. (Not by raising
                        // it: the holder's handler is still installed.)
                        libc::_exit(128 + libc::SIGTERM);
                    }
                    Ok(())
                });
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = command;
    }

    /// Forwards stop signals to `child` until it exits, and returns its
    /// status. The refresher is told to stop at the first forwarded signal.
    fn supervise(
        child: &mut Child,
        signals: &SignalPipe,
        refresher: &mut Refresher,
        name: &str,
        expire: Duration,
    ) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            for Received {
                signal,
                from_terminal,
            } in signals.wait(None)?
            {
                if signal == libc::SIGCHLD || from_terminal {
                    // The terminal signalled the whole foreground group,
                    // the command included.
                    continue;
                }
                // SAFETY: kill(2) on our own child, not yet reaped (only
                // this thread reaps it), so the pid is still its own.
                unsafe { libc::kill(child.id() as libc::pid_t, signal) };
                if refresher.stop() {
                    say(format!(
                        "forwarded {} to the command; no more refreshes, task {name:?} is deleted when it exits (or lapses in at most {})",
                        signal_name(signal),
                        humantime::format_duration(expire)
                    ));
                }
            }
        }
    }

    /// The refresh loop, on its own thread so that a slow or stuck daemon
    /// never delays forwarding a signal or noticing the command's exit.
    struct Refresher {
        stop: Option<mpsc::Sender<()>>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Refresher {
        fn start(
            client: Client,
            name: String,
            expire_json: serde_json::Value,
            details: HoldDetails,
            (expire, every): (Duration, Duration),
        ) -> io::Result<Refresher> {
            let (stop, stopped) = mpsc::channel();
            let thread = std::thread::Builder::new()
                .name("refresh".into())
                .spawn(move || {
                    let hold = (name.as_str(), &expire_json, &details);
                    refresh_loop(&client, hold, expire, every, &stopped)
                })?;
            Ok(Refresher {
                stop: Some(stop),
                thread: Some(thread),
            })
        }

        /// Stops refreshing; `true` the first time.
        fn stop(&mut self) -> bool {
            self.stop.take().is_some()
        }

        /// Stops refreshing and waits for a refresh in flight, so that none
        /// can land after the release and hold the task again.
        fn finish(mut self) {
            self.stop();
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }

    /// Refreshes every `every` until told to stop (or its sender is gone),
    /// repeating the reason and binding, so that a task lost with a
    /// daemon's database comes back whole.
    fn refresh_loop(
        client: &Client,
        (name, expire_json, details): (&str, &serde_json::Value, &HoldDetails),
        expire: Duration,
        every: Duration,
        stopped: &mpsc::Receiver<()>,
    ) {
        let mut next = Instant::now() + every;
        let mut held_until = Instant::now() + expire;
        let mut failing = false;
        loop {
            let wait = next.saturating_duration_since(Instant::now());
            if stopped.recv_timeout(wait) != Err(mpsc::RecvTimeoutError::Timeout) {
                return;
            }
            let attempt = Instant::now();
            match client.refresh_with(name, expire_json, details) {
                Ok(_) => {
                    if failing {
                        say(format!("task {name:?} refreshed again"));
                    }
                    failing = false;
                    held_until = attempt + expire;
                    next = attempt + every;
                }
                // The command ended while this refresh was on its way (the
                // daemon released the task at its exit): nothing to retry,
                // nothing to report.
                Err(_) if details.pid.is_some_and(|pid| !process_exists(pid)) => return,
                Err(e) => {
                    failing = true;
                    let delay = retry_delay(every);
                    let left = held_until.saturating_duration_since(Instant::now());
                    let lapse = if left.is_zero() {
                        "the hold has lapsed".to_owned()
                    } else {
                        format!(
                            "the hold lapses in {} unless a refresh succeeds",
                            client::format_span(left)
                        )
                    };
                    say(format!(
                        "refreshing task {name:?} failed: {e}; retrying in {} ({lapse})",
                        humantime::format_duration(delay)
                    ));
                    next = Instant::now() + delay;
                }
            }
        }
    }

    /// Whether process `pid` still exists (a zombie not yet reaped does).
    fn process_exists(pid: u32) -> bool {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return false;
        };
        // SAFETY: kill(2) with signal 0 sends nothing; it only checks.
        let result = unsafe { libc::kill(pid, 0) };
        result == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }

    /// Deletes the task while it is bound to one of `pids` (the holder's own
    /// pid, then COMMAND's), retrying briefly. A task already gone is fine,
    /// and so is one that another holder took since (409): that hold is
    /// theirs, not ours to end.
    fn release(client: &Client, name: &str, pids: &[u32]) {
        let deadline = Instant::now() + RELEASE_DEADLINE;
        let mut pids = pids.iter().rev();
        let Some(mut pid) = pids.next().copied() else {
            return;
        };
        loop {
            let client = client.clone().with_timeout(
                deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(100)),
            );
            match client.delete_bound(name, pid) {
                Ok(()) | Err(ClientError::Api { status: 404, .. }) => return,
                Err(ClientError::Api { status: 409, .. }) => match pids.next() {
                    Some(next) => pid = *next,
                    None => return,
                },
                Err(e) if Instant::now() + RELEASE_RETRY >= deadline => {
                    say(format!(
                        "could not delete task {name:?}: {e}; it lapses on its own at its expiry"
                    ));
                    return;
                }
                Err(_) => std::thread::sleep(RELEASE_RETRY),
            }
        }
    }

    fn signal_name(signal: libc::c_int) -> &'static str {
        match signal {
            libc::SIGINT => "SIGINT",
            libc::SIGTERM => "SIGTERM",
            libc::SIGHUP => "SIGHUP",
            _ => "a signal",
        }
    }

    /// Ends the holder as the command ended: the same exit code, or death by
    /// the same signal (without a core file), so the caller sees what it
    /// would have seen running the command itself.
    fn exit_like(status: ExitStatus) -> ExitCode {
        if let Some(code) = status.code() {
            return ExitCode::from(u8::try_from(code).unwrap_or(EXIT_HOLD_FAILED));
        }
        match status.signal() {
            Some(signal) => die_of(signal),
            None => ExitCode::from(EXIT_HOLD_FAILED),
        }
    }

    /// Dies of `signal` (without a core file); for a signal whose default
    /// is not to terminate, exits 128 + its number as a shell would report.
    fn die_of(signal: libc::c_int) -> ExitCode {
        let _ = io::stderr().flush();
        // SAFETY: plain libc calls on our own process with valid arguments.
        unsafe {
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &no_core);
            libc::signal(signal, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, signal);
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::raise(signal);
        }
        // Still alive: a signal whose default is not to terminate.
        ExitCode::from(u8::try_from(128 + signal).unwrap_or(EXIT_HOLD_FAILED))
    }

    /// SIGINT, SIGTERM, SIGHUP and SIGCHLD through a self-pipe, with
    /// whether each came from the terminal.
    ///
    /// Our own `sigaction` handler rather than signal-hook's: the decision
    /// to forward needs `si_code` (a terminal's signal is `SI_KERNEL` and has
    /// reached the whole foreground process group already), which
    /// signal-hook exposes only behind a feature we do not enable.
    mod signals {
        use std::io;
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        use std::sync::atomic::{AtomicI32, Ordering};
        use std::time::Duration;

        /// The write end of the pipe, for the handler; -1 before install.
        static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);

        /// One caught signal.
        #[derive(Debug, Clone, Copy)]
        pub struct Received {
            pub signal: libc::c_int,
            /// Sent by the kernel on behalf of a terminal (Ctrl-C, hangup).
            pub from_terminal: bool,
        }

        #[cfg(target_os = "linux")]
        fn errno_location() -> *mut libc::c_int {
            // SAFETY: always valid for the calling thread.
            unsafe { libc::__errno_location() }
        }

        #[cfg(not(target_os = "linux"))]
        fn errno_location() -> *mut libc::c_int {
            // SAFETY: always valid for the calling thread.
            unsafe { libc::__error() }
        }

        #[cfg(target_os = "linux")]
        fn from_kernel(code: libc::c_int) -> bool {
            code == libc::SI_KERNEL
        }

        #[cfg(not(target_os = "linux"))]
        fn from_kernel(_code: libc::c_int) -> bool {
            false
        }

        /// Async-signal-safe: two bytes to a non-blocking pipe, errno kept.
        extern "C" fn on_signal(
            signal: libc::c_int,
            info: *mut libc::siginfo_t,
            _context: *mut libc::c_void,
        ) {
            let errno = errno_location();
            // SAFETY: errno is thread-local; `info` is the kernel's siginfo
            // for this delivery (SA_SIGINFO) or null.
            unsafe {
                let saved = *errno;
                let terminal = !info.is_null() && from_kernel((*info).si_code);
                let record = [signal as u8, u8::from(terminal)];
                let fd = PIPE_WRITE.load(Ordering::Relaxed);
                if fd >= 0 {
                    libc::write(fd, record.as_ptr().cast(), record.len());
                }
                *errno = saved;
            }
        }

        pub struct SignalPipe {
            read: OwnedFd,
            _write: OwnedFd,
        }

        impl SignalPipe {
            /// Creates the pipe and installs the handlers.
            pub fn install() -> io::Result<SignalPipe> {
                let mut fds = [0; 2];
                // SAFETY: pipe2 fills two descriptors we then own.
                if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0
                {
                    return Err(io::Error::last_os_error());
                }
                // SAFETY: both descriptors are fresh and ours.
                let (read, write) =
                    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
                PIPE_WRITE.store(write.as_raw_fd(), Ordering::Relaxed);
                for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGCHLD] {
                    // SAFETY: a zeroed sigaction is valid; the handler is
                    // async-signal-safe and has the SA_SIGINFO signature.
                    unsafe {
                        let mut current: libc::sigaction = std::mem::zeroed();
                        if libc::sigaction(signal, std::ptr::null(), &mut current) != 0 {
                            return Err(io::Error::last_os_error());
                        }
                        // A signal ignored at start (SIGHUP under nohup,
                        // SIGINT in a script's background job) stays
                        // ignored, for the holder and for the command.
                        if signal != libc::SIGCHLD && current.sa_sigaction == libc::SIG_IGN {
                            continue;
                        }
                        let mut action: libc::sigaction = std::mem::zeroed();
                        action.sa_sigaction = on_signal as *const () as usize;
                        action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_NOCLDSTOP;
                        libc::sigemptyset(&mut action.sa_mask);
                        if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                            return Err(io::Error::last_os_error());
                        }
                    }
                }
                Ok(SignalPipe {
                    read,
                    _write: write,
                })
            }

            /// Waits up to `timeout` (forever if `None`) for signals and
            /// returns those caught; empty after the timeout.
            pub fn wait(&self, timeout: Option<Duration>) -> io::Result<Vec<Received>> {
                let millis = match timeout {
                    // Rounded up, so a due refresh is never polled early in
                    // a loop of zero-millisecond waits.
                    Some(t) => i32::try_from(t.as_micros().div_ceil(1000)).unwrap_or(i32::MAX),
                    None => -1,
                };
                let mut poll = libc::pollfd {
                    fd: self.read.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                let ready = unsafe { libc::poll(&mut poll, 1, millis) };
                if ready < 0 {
                    let error = io::Error::last_os_error();
                    return if error.kind() == io::ErrorKind::Interrupted {
                        Ok(Vec::new())
                    } else {
                        Err(error)
                    };
                }
                let mut received = Vec::new();
                let mut buffer = [0u8; 64];
                loop {
                    // SAFETY: reading into a local buffer of its length.
                    let n = unsafe {
                        libc::read(
                            self.read.as_raw_fd(),
                            buffer.as_mut_ptr().cast(),
                            buffer.len(),
                        )
                    };
                    if n <= 0 {
                        break;
                    }
                    // Records are 2 bytes and writes of 2 bytes to a pipe are
                    // atomic, so reads of an even length never split one.
                    for record in buffer[..n as usize].chunks_exact(2) {
                        received.push(Received {
                            signal: libc::c_int::from(record[0]),
                            from_terminal: record[1] != 0,
                        });
                    }
                }
                Ok(received)
            }
        }
    }
}
