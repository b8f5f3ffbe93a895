//! What the commands write for the user: stdout (a closed one is not an
//! error), a task as a table row or the daemon's raw JSON, and the client's
//! errors put in the command line's terms rather than the API's.

use std::io::{self, Write};
use std::time::SystemTime;

use sprite_tasks::api::TaskView;
use sprite_tasks::client::{ClientError, render_tasks};
use sprite_tasks::time::Timestamp;

/// The wall clock, for the "since" and "until" the renderers print.
pub fn now() -> Timestamp {
    Timestamp::from_system_time(SystemTime::now())
}

/// The terminal's width in columns: `COLUMNS` when it is a positive
/// number, else that of the terminal on stdout; `None` when neither says.
pub fn terminal_columns() -> Option<usize> {
    let from_env = std::env::var("COLUMNS")
        .ok()
        .and_then(|columns| columns.trim().parse::<usize>().ok())
        .filter(|&columns| columns > 0);
    if from_env.is_some() {
        return from_env;
    }
    // SAFETY: winsize is plain old data; all zeroes is a valid value.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize into `size`, which outlives the
    // call; on a descriptor that is not a terminal it fails and writes
    // nothing.
    let result = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &raw mut size) };
    (result == 0 && size.ws_col > 0).then_some(usize::from(size.ws_col))
}

/// Writes to stdout; a closed stdout (`| head`) is not an error worth a
/// message.
pub fn print(text: &str) -> Result<(), String> {
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
pub fn print_task(
    json: bool,
    quiet: bool,
    (body, task): (Vec<u8>, TaskView),
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

/// The daemon's body as it came, ending in a newline.
pub fn raw(body: &[u8]) -> String {
    let mut text = String::from_utf8_lossy(body).into_owned();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// A client error as the command line says it: the daemon's sentence, with
/// its API terms (`PUT /v1/tasks/NAME`, `expire`) put as the command that
/// does the same.
pub fn in_cli_terms(error: ClientError, name: &str) -> String {
    match error {
        // A create of a taken name; other conflicts (a name bound to
        // another live process) keep the daemon's sentence.
        ClientError::Api {
            status: 409,
            message,
        } if message.contains("already exists") => format!(
            "task {name:?} already exists; refresh it with `sprite-env tasks refresh {name} --expire DURATION` or choose another name"
        ),
        // A name its hold limit tripped: re-armed with the CLI's delete.
        ClientError::Api {
            status: 409,
            message,
        } if message.contains("re-arms the name") => message.replace(
            &format!("DELETE /v1/tasks/{name}"),
            &format!("`sprite-env tasks delete {name}`"),
        ),
        ClientError::Api { message, .. } if message.starts_with("expire ") => {
            format!("--{message}")
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tripped_name_is_rearmed_in_the_clis_terms() {
        let message = "task \"loop\" was released at 2026-12-05T17:21:24Z after being held for 4s, its limit (max-held-for 4s); a heartbeat may have outlived its purpose. DELETE /v1/tasks/loop re-arms the name once that is checked";
        let said = in_cli_terms(
            ClientError::Api {
                status: 409,
                message: message.into(),
            },
            "loop",
        );
        assert!(
            said.contains("`sprite-env tasks delete loop` re-arms the name"),
            "{said}"
        );
        assert!(said.contains("held for 4s"), "{said}");
    }
}
