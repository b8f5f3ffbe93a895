//! `sprite-env tasks watch`: prints the daemon's events until interrupted,
//! and reconnects across daemon restarts without missing or repeating a
//! retained event. Its reconnection pauses are shared with
//! [`crate::wait_idle`].

use std::io::{self, Write};
use std::time::Duration;

use sprite_tasks::client::{self, Client, ClientError, render_event};

use crate::output::raw;

/// First pause before reconnecting a watch; it doubles up to
/// [`WATCH_RETRY_MAX`] while the daemon stays away.
pub const WATCH_RETRY_FIRST: Duration = Duration::from_millis(100);

/// Longest pause between reconnection attempts: a restarted daemon is
/// picked up within this.
pub const WATCH_RETRY_MAX: Duration = Duration::from_secs(2);

/// `tasks watch`: prints events until interrupted. A stream that ends (the
/// daemon restarts, or cut off this watcher as too slow) is reopened with
/// `?since=` the last sequence number printed, so the retained events in
/// between are replayed, none twice.
pub fn run(client: &Client, since: Option<u64>, json: bool) -> Result<(), String> {
    let say = |message: String| eprintln!("sprite-env tasks watch: {message}");
    // The first connection must succeed: no daemon at all is an error.
    let mut stream = client.events(since).map_err(|e| e.to_string())?;
    let mut last_seq = since;
    loop {
        let why = match print_events(&mut stream, &mut last_seq, json) {
            Ok(None) => return Ok(()),
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
