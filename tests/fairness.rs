//! A fair share of the socket (issue 21), against the real binary with
//! clients running as other uids (`setpriv`; the daemon and the test run as
//! root): a uid flooding the socket with connections and event streams is
//! refused past its share while root and a third uid are served, root's
//! short hold never lapses, and the log stays a handful of lines.
//!
//! Run as another user, these tests say so and check only what needs no
//! other uid.

mod common;

use std::io::{Read, Write};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, Dirs, WAIT, command_as, is_root, request_bytes, wait_with_timeout};

/// The uid that floods: `nobody`.
const FLOODER: u32 = 65534;
/// An ordinary user beside it.
const ALICE: u32 = 1000;

/// How long the flood lasts while the others work.
const FLOOD: Duration = Duration::from_secs(6);

/// How often root and alice refresh, as a heartbeat would, and how long
/// root's hold lasts: four missed refreshes would lapse it.
const EVERY: Duration = Duration::from_millis(500);
const ROOT_EXPIRE: &str = "2s";

/// A flood as `uid` for `FLOOD`: `connections` connections kept open, the
/// first `streams` of each round asking for `GET /v1/events`, each one
/// reopened as soon as the daemon closes it. Prints how many were refused
/// with 503 when it ends.
const FLOOD_SCRIPT: &str = r#"
import socket, sys, time, selectors
path, connections, streams, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
sel = selectors.DefaultSelector()
refused = opened = 0
def open_one(i):
    global opened
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
    except OSError:
        s.close()
        return
    opened += 1
    if i < streams:
        try:
            s.sendall(b"GET /v1/events HTTP/1.1\r\nHost: sprite\r\n\r\n")
        except OSError:
            pass  # refused and closed already: its 503 is still to read
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ, i)
for i in range(connections):
    open_one(i)
end = time.monotonic() + seconds
while time.monotonic() < end:
    for key, _ in sel.select(timeout=0.05):
        s, i = key.fileobj, key.data
        try:
            data = s.recv(65536)
        except BlockingIOError:
            continue
        except OSError:
            data = b""
        if b" 503 " in data[:16]:
            refused += 1
        if not data or b" 503 " in data[:16]:
            sel.unregister(s)
            s.close()
            open_one(i)
print(f"opened {opened} refused {refused}", flush=True)
"#;

/// A python3 that other uids can run: the system's, not one under root's
/// home (pyenv's shims there are root's alone).
fn python_for_others() -> &'static str {
    if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

fn start_flood(daemon: &Daemon, uid: u32, connections: usize, streams: usize) -> Child {
    command_as(Some(uid), python_for_others())
        .args(["-c", FLOOD_SCRIPT])
        .arg(&daemon.socket)
        .arg(connections.to_string())
        .arg(streams.to_string())
        .arg(FLOOD.as_secs_f64().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("setpriv and python3 are installed")
}

/// The flood's own count of refusals, once it ends.
fn flood_refusals(mut flood: Child) -> u64 {
    wait_with_timeout(&mut flood, FLOOD + WAIT).expect("the flood ends on its own");
    let mut out = String::new();
    flood
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    out.split_whitespace()
        .last()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the flood printed its counts: {out:?}"))
}

/// One request with real curl as `uid` (`None`: as root, this process):
/// the status, or 0 if curl could not connect or read an answer.
fn curl_as(daemon: &Daemon, uid: Option<u32>, method: &str, path: &str, body: &str) -> u16 {
    let mut command = command_as(uid, "curl");
    let output = command
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "5"])
        .arg("--unix-socket")
        .arg(&daemon.socket)
        .args(["-X", method, "-d", body])
        .arg(format!("http://sprite{path}"))
        .output()
        .expect("curl is installed");
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

fn metric(daemon: &Daemon, needle: &str) -> u64 {
    let (status, text) = daemon_metrics(daemon);
    assert_eq!(status, 200);
    text.lines()
        .find_map(|line| line.strip_prefix(needle))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("{needle} in /metrics"))
}

fn daemon_metrics(daemon: &Daemon) -> (u16, String) {
    let out = daemon.raw(&request_bytes("GET", "/metrics", None));
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// Each holder (who, uid, task, body) refreshes every [`EVERY`] until
/// `until`, as a heartbeat would; returns the statuses that were not 200,
/// as "who: status".
fn heartbeats_until(
    daemon: &Daemon,
    holders: &[(&str, Option<u32>, &str, &str)],
    until: Instant,
) -> Vec<String> {
    let mut failures = Vec::new();
    let mut rounds = 0;
    while Instant::now() < until {
        let started = Instant::now();
        for (who, uid, name, body) in holders {
            let status = curl_as(daemon, *uid, "PUT", &format!("/v1/tasks/{name}"), body);
            if status != 200 {
                failures.push(format!("{who}: {status}"));
            }
        }
        rounds += 1;
        std::thread::sleep(EVERY.saturating_sub(started.elapsed()));
    }
    assert!(rounds >= 5, "only {rounds} rounds of heartbeats ran");
    failures
}

/// The events of `task` retained since the start, by kind.
fn events_of(daemon: &Daemon, task: &str) -> Vec<String> {
    let mut stream = daemon.connect();
    stream
        .write_all(b"GET /v1/events?since=0 HTTP/1.1\r\nHost: sprite\r\n\r\n")
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out)
        .lines()
        .filter(|line| line.contains(&format!("\"task\":\"{task}\"")))
        .filter_map(|line| {
            let start = line.find("\"event\":\"")? + 9;
            let end = line[start..].find('"')? + start;
            Some(line[start..end].to_owned())
        })
        .collect()
}

#[test]
fn a_uid_over_its_share_is_refused_while_root_and_others_are_served() {
    if !is_root() {
        println!("not root: the other uids cannot be played; skipped");
        return;
    }
    let dirs = Dirs::reachable_by_other_uids();
    let daemon = Daemon::start(
        &dirs,
        &[
            "--max-connections-per-uid",
            "32",
            "--max-streams-per-uid",
            "4",
        ],
    );
    let log_before = daemon.log_text().lines().count();
    let flood = start_flood(&daemon, FLOODER, 150, 20);
    let ends = Instant::now() + FLOOD;
    let root_body = format!(r#"{{"expire":"{ROOT_EXPIRE}"}}"#);
    let holders = [
        ("root", None, "root-hold", root_body.as_str()),
        ("alice", Some(ALICE), "alice-hold", r#"{"expire":"1m"}"#),
    ];
    let failures = heartbeats_until(&daemon, &holders, ends);
    let refused = flood_refusals(flood);

    assert!(
        failures.is_empty(),
        "root and alice were refused during the flood: {failures:?}"
    );
    assert!(refused > 100, "the flood was refused only {refused} times");
    let events = events_of(&daemon, "root-hold");
    assert_eq!(events.first().map(String::as_str), Some("created"));
    assert!(
        !events.iter().any(|kind| kind == "expired"),
        "root's {ROOT_EXPIRE} hold lapsed during the flood: {events:?}"
    );
    assert!(
        metric(
            &daemon,
            "sprite_tasks_connections_refused_total{cause=\"uid_connections\"}"
        ) > 0
    );
    assert!(
        metric(
            &daemon,
            "sprite_tasks_connections_refused_total{cause=\"uid_streams\"}"
        ) > 0
    );

    // The flood is a handful of lines: the first refusal of each kind, then
    // a summary per window.
    let summary = daemon.wait_for_log("more connections or streams from uid 65534");
    assert!(
        summary.contains("uid_connections") || summary.contains("uid_streams"),
        "{summary}"
    );
    let log = daemon.log_text();
    let flood_lines = log
        .lines()
        .skip(log_before)
        .filter(|line| line.contains("refused"))
        .count();
    assert!(
        flood_lines <= 10,
        "{refused} refusals wrote {flood_lines} log lines:\n{log}"
    );
}

#[test]
fn the_reserve_keeps_root_served_when_others_fill_the_socket() {
    if !is_root() {
        println!("not root: the other uids cannot be played; skipped");
        return;
    }
    let dirs = Dirs::reachable_by_other_uids();
    // Two uids with a generous share each fill everything but the reserve.
    let daemon = Daemon::start(
        &dirs,
        &[
            "--max-connections",
            "64",
            "--reserved-connections",
            "8",
            "--max-connections-per-uid",
            "100",
        ],
    );
    let flood = start_flood(&daemon, FLOODER, 80, 0);
    let flood2 = start_flood(&daemon, ALICE, 80, 0);
    let ends = Instant::now() + FLOOD;
    let root_body = format!(r#"{{"expire":"{ROOT_EXPIRE}"}}"#);
    let root_failures = heartbeats_until(&daemon, &[("root", None, "root-hold", &root_body)], ends);
    let refused = flood_refusals(flood) + flood_refusals(flood2);
    assert!(
        root_failures.is_empty(),
        "root was refused: {root_failures:?}"
    );
    assert!(refused > 0, "the two floods filled the socket");
    assert!(
        metric(
            &daemon,
            "sprite_tasks_connections_refused_total{cause=\"reserve\"}"
        ) > 0
    );
    let events = events_of(&daemon, "root-hold");
    assert!(
        !events.iter().any(|kind| kind == "expired"),
        "root's hold lapsed: {events:?}"
    );
}
