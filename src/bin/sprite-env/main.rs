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
//!
//! This file parses the command line and dispatches; one file per concern:
//!
//! - [`cli`]: the clap definition (flags and help text).
//! - [`exit_codes`]: the exit statuses above, named.
//! - [`output`]: printing to stdout, and the client's errors in CLI terms.
//! - [`curl`]: `curl`, the system curl pointed at the socket.
//! - [`generated`]: `completions` and `man`, generated from [`cli`].
//! - [`tasks`]: the one-request commands (list, get, create, refresh,
//!   delete, status, report).
//! - [`watch`]: `tasks watch`, the event stream that reconnects.
//! - [`wait_idle`]: `tasks wait-idle`, the event stream until idle.
//! - [`hold`]: `tasks hold`, a task held for as long as a command runs,
//!   with its refresh thread and its signal forwarding.
//!
//! The protocol, the curl argument rewriting, the hold rules and the
//! renderers are the library's ([`sprite_tasks::client`]); these files only
//! do the process's I/O around them.

mod cli;
mod curl;
mod exit_codes;
mod generated;
mod hold;
mod output;
mod tasks;
mod wait_idle;
mod watch;

use std::process::ExitCode;

use clap::Parser;
use sprite_tasks::client::Client;

use cli::{Cli, TasksCommand, Top};
use exit_codes::EXIT_FAILED;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let client = Client::new(&cli.socket);
    match cli.command {
        Top::Curl { args } => curl::run(&client, &args),
        Top::Completions { shell } => done(generated::completions(shell)),
        Top::Man { dir: Some(dir) } => done(generated::man_pages_into(&dir)),
        Top::Man { dir: None } => done(generated::man_page()),
        Top::Tasks(command) => run_tasks(&client, command),
    }
}

/// Runs one `tasks` command: its own exit status, or 1 with the message.
fn run_tasks(client: &Client, command: TasksCommand) -> ExitCode {
    match command {
        TasksCommand::List(flag) => done(tasks::list(client, flag.json)),
        TasksCommand::Get { name, json } => done(tasks::get(client, &name, json.json)),
        TasksCommand::Create(args) => done(tasks::create(client, &args)),
        TasksCommand::Refresh(args) => done(tasks::refresh(client, &args)),
        TasksCommand::Delete { name } => done(tasks::delete(client, &name)),
        TasksCommand::Status { json, quiet } => {
            tasks::status(client, json.json, quiet).unwrap_or_else(failed)
        }
        TasksCommand::Report { since, until, json } => {
            done(tasks::report(client, &since, until.as_deref(), json.json))
        }
        TasksCommand::Watch { since, json } => done(watch::run(client, since, json.json)),
        TasksCommand::WaitIdle { timeout } => wait_idle::run(client, timeout),
        TasksCommand::Hold(args) => hold::run(client, args),
    }
}

/// Exit 0, or 1 with the message.
fn done(result: Result<(), String>) -> ExitCode {
    result.map_or_else(failed, |()| ExitCode::SUCCESS)
}

/// Exit 1 with the message.
fn failed(message: String) -> ExitCode {
    eprintln!("sprite-env: {message}");
    ExitCode::from(EXIT_FAILED)
}
