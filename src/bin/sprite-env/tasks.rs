//! The `tasks` commands that are one request each: list, get, create,
//! refresh, delete and status. Each asks the daemon once and prints the
//! answer; an error comes back as the message `main` prints.

use std::process::ExitCode;

use sprite_tasks::client::{Client, ClientError, HoldDetails, render_status, render_tasks};

use crate::cli::TaskExpire;
use crate::exit_codes::EXIT_IDLE;
use crate::output::{in_cli_terms, now, print, print_task, raw};

/// `tasks list`.
pub fn list(client: &Client, json: bool) -> Result<(), String> {
    let (body, list) = client.list().map_err(failed)?;
    print(&if json {
        raw(&body)
    } else {
        render_tasks(&list.tasks, now())
    })
}

/// `tasks get`.
pub fn get(client: &Client, name: &str, json: bool) -> Result<(), String> {
    let answer = client.get(name).map_err(|e| in_cli_terms(e, name))?;
    print_task(json, false, answer)
}

/// `tasks create`.
pub fn create(client: &Client, args: &TaskExpire) -> Result<(), String> {
    let expire = sprite_tasks::expire::arg_value(&args.expire);
    let answer = client
        .create_with(&args.name, &expire, &hold_details(args))
        .map_err(|e| in_cli_terms(e, &args.name))?;
    print_task(args.json.json, args.quiet, answer)
}

/// `tasks refresh`.
pub fn refresh(client: &Client, args: &TaskExpire) -> Result<(), String> {
    let expire = sprite_tasks::expire::arg_value(&args.expire);
    let answer = client
        .refresh_with(&args.name, &expire, &hold_details(args))
        .map_err(|e| in_cli_terms(e, &args.name))?;
    print_task(args.json.json, args.quiet, answer)
}

/// `tasks delete`.
pub fn delete(client: &Client, name: &str) -> Result<(), String> {
    client.delete(name).map_err(|e| in_cli_terms(e, name))
}

/// `tasks status`: success when held, [`EXIT_IDLE`] when idle.
pub fn status(client: &Client, json: bool, quiet: bool) -> Result<ExitCode, String> {
    let (body, status) = client.status().map_err(failed)?;
    if json {
        print(&raw(&body))?;
    } else if !quiet {
        let tasks = if status.held {
            client.list().map_err(failed)?.1.tasks
        } else {
            Vec::new()
        };
        print(&format!("{}\n", render_status(&status, &tasks, now())))?;
    }
    Ok(if status.held {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_IDLE)
    })
}

/// The reason and binding of a create or refresh.
fn hold_details(args: &TaskExpire) -> HoldDetails {
    HoldDetails {
        reason: args.reason.clone(),
        pid: args.pid,
    }
}

/// A client error that needs no rewording: the daemon's or the socket's.
fn failed(error: ClientError) -> String {
    error.to_string()
}
