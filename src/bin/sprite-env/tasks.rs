//! The `tasks` commands that are one request each: list, get, create,
//! refresh, delete, status and report. Each asks the daemon once and
//! prints the answer; an error comes back as the message `main` prints.

use std::process::ExitCode;

use sprite_tasks::client::report::DEFAULT_TIMELINE_WIDTH;
use sprite_tasks::client::{
    Client, ClientError, HoldDetails, render_report, render_status, render_tasks, timeline_width,
};

use crate::cli::TaskExpire;
use crate::exit_codes::EXIT_IDLE;
use crate::output::{in_cli_terms, now, print, print_task, raw, terminal_columns};

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

/// `tasks report`: the window from `since` to `until` (now when `None`),
/// with a timeline as wide as the terminal allows; `--json` asks for
/// [`DEFAULT_TIMELINE_WIDTH`] buckets whatever the terminal, so that a
/// script gets the same document everywhere.
pub fn report(client: &Client, since: &str, until: Option<&str>, json: bool) -> Result<(), String> {
    let buckets = if json {
        DEFAULT_TIMELINE_WIDTH
    } else {
        timeline_width(terminal_columns())
    };
    let (body, usage) = client
        .usage(Some(since), until, buckets)
        .map_err(|error| match error {
            // `/v1/usage` names nothing that could be missing: the route is.
            ClientError::Api { status: 404, .. } => {
                "this daemon keeps no usage report (GET /v1/usage is 404): it is older than \
                 sprite-env; upgrade sprite-tasksd"
                    .to_owned()
            }
            other => other.to_string(),
        })?;
    print(&if json {
        raw(&body)
    } else {
        render_report(&usage, now())
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
