//! `sprite-env` against the real daemon: the curl shorthand with the path
//! anywhere, the `tasks` commands, holds that last exactly as long as their
//! command (whatever ends it), and the seed's own heartbeat script.
//!
//! Waiting for another process to reach a state polls the daemon's API with
//! a deadline ([`common::eventually`]); nothing sleeps to synchronise.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use common::{Daemon, Dirs, WAIT, eventually, signal, wait_with_timeout};
use serde_json::Value;

fn sprite_env_binary() -> &'static str {
    env!("CARGO_BIN_EXE_sprite-env")
}

/// `sprite-env` aimed at the daemon's socket through the environment.
fn sprite_env(daemon: &Daemon) -> Command {
    let mut command = Command::new(sprite_env_binary());
    command
        .env("SPRITE_API_SOCKET", &daemon.socket)
        .env("SPRITE_ENV", sprite_env_binary())
        .stdin(Stdio::null());
    command
}

fn run(command: &mut Command) -> Output {
    command.output().expect("run sprite-env")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn task_status(daemon: &Daemon, name: &str) -> u16 {
    daemon.call("GET", &format!("/v1/tasks/{name}"), None).0
}

fn wall_now() -> SystemTime {
    SystemTime::now()
}

fn time_of(value: &Value) -> SystemTime {
    humantime::parse_rfc3339(value.as_str().expect("a timestamp")).expect("RFC 3339")
}

#[test]
fn curl_takes_the_path_first_last_or_in_the_middle() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &[]);

    // First.
    let out = run(sprite_env(&daemon).args([
        "curl",
        "/v1/tasks",
        "-s",
        "-X",
        "POST",
        "-d",
        r#"{"name":"first","expire":"1h"}"#,
    ]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["name"],
        "first"
    );

    // Last, after a body, with -v to see the headers curl sent.
    let out = run(sprite_env(&daemon).args([
        "curl",
        "-sv",
        "-XPUT",
        "--data",
        r#"{"expire":"5m"}"#,
        "/v1/tasks/last",
    ]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let trace = text(&out.stderr);
    assert!(
        trace.contains("> Content-Type: application/json"),
        "a body without a type gets JSON: {trace}"
    );
    assert!(trace.contains("> Host: sprite"), "{trace}");
    assert_eq!(task_status(&daemon, "last"), 200);

    // In the middle, with a type of its own that must not be doubled.
    let out = run(sprite_env(&daemon).args([
        "curl",
        "-sv",
        "-H",
        "content-type: application/json; charset=utf-8",
        "-X",
        "POST",
        "/v1/tasks",
        "-d",
        r#"{"name":"middle","expire":60}"#,
        "-w",
        "\n%{http_code}",
    ]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).ends_with("\n201"),
        "{}",
        text(&out.stdout)
    );
    let sent_types = text(&out.stderr)
        .lines()
        .filter(|line| line.to_ascii_lowercase().starts_with("> content-type:"))
        .count();
    assert_eq!(sent_types, 1, "{}", text(&out.stderr));

    // GET with the path alone; curl's exit status comes through (-f: 22 on 404).
    let out = run(sprite_env(&daemon).args(["curl", "-s", "/v1/tasks"]));
    let names: Vec<String> = serde_json::from_slice::<Value>(&out.stdout).unwrap()["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["first", "last", "middle"]);
    let out = run(sprite_env(&daemon).args(["curl", "-sf", "/v1/tasks/missing"]));
    assert_eq!(out.status.code(), Some(22));
    let out = run(sprite_env(&daemon).args(["curl", "-s", "-X", "DELETE", "/v1/tasks/first"]));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(task_status(&daemon, "first"), 404);
}

#[test]
fn curl_says_why_instead_of_failing_silently() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &[]);

    // Not an API path: refused before curl runs (curl would exit 3, silently with -s).
    for args in [
        vec!["curl", "-s", "-X", "POST", "v1/tasks"],
        vec!["curl", "-s", "https://example.com/v1/tasks"],
        vec!["curl", "-s", "-X", "POST"],
    ] {
        let out = run(sprite_env(&daemon).args(&args));
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let message = text(&out.stderr);
        assert!(message.contains("API path"), "{args:?}: {message}");
    }

    // No socket: curl's "could not connect" status, with a message.
    let out = run(Command::new(sprite_env_binary()).args([
        "--socket",
        "/nonexistent/api.sock",
        "curl",
        "-s",
        "/v1/tasks",
    ]));
    assert_eq!(out.status.code(), Some(7));
    assert!(
        text(&out.stderr).contains("no Tasks API socket at /nonexistent/api.sock"),
        "{}",
        text(&out.stderr)
    );

    // No curl: 127, with a message.
    let empty = tempfile::tempdir().unwrap();
    let out = run(sprite_env(&daemon)
        .env("PATH", empty.path())
        .args(["curl", "-s", "/v1/tasks"]));
    assert_eq!(out.status.code(), Some(127));
    assert!(
        text(&out.stderr).contains("curl was not found"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn tasks_commands_print_tables_and_the_daemons_errors() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &[]);

    let out = run(sprite_env(&daemon).args(["tasks", "create", "agent", "--expire", "10m"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(sprite_env(&daemon).args(["tasks", "refresh", "build", "--expire", "90"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        time_of(&daemon.call("GET", "/v1/tasks/build", None).1["expires_at"])
            .duration_since(wall_now())
            .unwrap()
            .as_secs()
            / 10,
        8,
        "digits alone are seconds: 90 s"
    );

    let out = run(sprite_env(&daemon).args(["tasks", "list"]));
    assert!(out.status.success());
    let table = text(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("NAME") && lines[0].contains("EXPIRES IN"));
    assert!(
        lines[1].starts_with("agent ") && lines[1].contains(" 9m "),
        "{table}"
    );
    assert!(
        lines[2].starts_with("build ") && lines[2].contains(" 1m "),
        "{table}"
    );

    let out = run(sprite_env(&daemon).args(["tasks", "list", "--json"]));
    let raw: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(raw, daemon.call("GET", "/v1/tasks", None).1);

    let out = run(sprite_env(&daemon).args(["tasks", "get", "agent", "--json"]));
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["name"],
        "agent"
    );

    // -q: nothing printed, for loops.
    let out = run(sprite_env(&daemon).args(["tasks", "refresh", "build", "--expire", "90", "-q"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty() && out.stderr.is_empty());

    // Errors: the daemon's sentence in the command line's terms, non-zero.
    for (args, needle) in [
        (
            vec!["tasks", "create", "agent", "--expire", "1h"],
            "already exists; refresh it with `sprite-env tasks refresh agent --expire",
        ),
        (
            vec!["tasks", "create", "x", "--expire", "2h"],
            "--expire must be at most 1h",
        ),
        (
            vec!["tasks", "refresh", "x", "--expire", "5s5"],
            "not a duration",
        ),
        (vec!["tasks", "get", "missing"], "does not exist"),
        (vec!["tasks", "get", "a/b"], "task name"),
        (vec!["tasks", "delete", "missing"], "does not exist"),
    ] {
        let out = run(sprite_env(&daemon).args(&args));
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let message = text(&out.stderr);
        assert!(message.contains(needle), "{args:?}: {message}");
        assert!(
            !message.contains("/v1/"),
            "CLI terms, not API ones: {message}"
        );
    }

    let out = run(sprite_env(&daemon).args(["tasks", "delete", "agent"]));
    assert!(out.status.success());
    assert_eq!(task_status(&daemon, "agent"), 404);

    // No daemon: a message naming the socket.
    let out = run(Command::new(sprite_env_binary()).args([
        "--socket",
        "/nonexistent/api.sock",
        "tasks",
        "list",
    ]));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("is sprite-tasksd running?"));
}

#[test]
fn status_says_who_holds_the_machine() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &[]);
    let status = || {
        let out = run(sprite_env(&daemon).args(["tasks", "status"]));
        let held = text(&out.stdout).starts_with("held");
        assert_eq!(
            out.status.code(),
            Some(if held { 0 } else { 3 }),
            "0 held, 3 idle"
        );
        text(&out.stdout)
    };
    let quiet = || {
        let out = run(sprite_env(&daemon).args(["tasks", "status", "-q"]));
        assert!(out.stdout.is_empty());
        out.status.code()
    };

    assert_eq!(status(), "idle: nothing holds the machine awake\n");
    assert_eq!(quiet(), Some(3));
    daemon.call("POST", "/v1/tasks", Some(r#"{"name":"a","expire":"30m"}"#));
    daemon.call("POST", "/v1/tasks", Some(r#"{"name":"b","expire":"1h"}"#));
    let held = status();
    assert!(held.starts_with("held by a, b until "), "{held}");
    assert_eq!(quiet(), Some(0));
    assert!(held.contains("(in 59m "), "{held}");
    daemon.call("DELETE", "/v1/tasks/a", None);
    daemon.call("DELETE", "/v1/tasks/b", None);
    let idle = status();
    assert!(idle.starts_with("idle since 20"), "{idle}");
    assert!(idle.contains(" ago): nothing holds"), "{idle}");

    let out = run(sprite_env(&daemon).args(["tasks", "status", "--json"]));
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["held"],
        false
    );
    assert_eq!(out.status.code(), Some(3));

    // No daemon: 1, which a script tells apart from idle.
    let out = run(Command::new(sprite_env_binary()).args([
        "--socket",
        "/nonexistent/api.sock",
        "tasks",
        "status",
    ]));
    assert_eq!(out.status.code(), Some(1));
}

/// Lines a child prints, as they come.
fn line_reader(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

#[test]
fn watch_prints_events_as_they_happen() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &[]);
    daemon.call(
        "POST",
        "/v1/tasks",
        Some(r#"{"name":"early","expire":"1h"}"#),
    );

    let mut watch = sprite_env(&daemon)
        .args(["tasks", "watch"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = line_reader(&mut watch);
    // The stream is open once the daemon counts it.
    let metrics = eventually(
        || text(&daemon.raw(b"GET /metrics HTTP/1.1\r\nHost: sprite\r\nConnection: close\r\n\r\n")),
        |page| page.contains("\nsprite_tasks_event_streams 1\n"),
    );
    assert!(
        metrics.contains("\nsprite_tasks_event_streams 1\n"),
        "{metrics}"
    );
    let next = || lines.recv_timeout(WAIT).expect("an event line");
    daemon.call("PUT", "/v1/tasks/agent", Some(r#"{"expire":"5m"}"#));
    let first = next();
    assert!(
        first.contains(" created agent until ") && first.ends_with("(5m 0s)"),
        "{first}"
    );
    daemon.call("DELETE", "/v1/tasks/agent", None);
    assert!(next().ends_with(" deleted agent"));
    daemon.call("DELETE", "/v1/tasks/early", None);
    assert!(next().ends_with(" deleted early"));
    assert!(next().ends_with(" idle: nothing holds the machine awake"));
    signal(watch.id(), libc::SIGTERM);
    wait_with_timeout(&mut watch, WAIT).expect("watch ends on SIGTERM");

    // Replay with --since, raw.
    let mut replay = sprite_env(&daemon)
        .args(["tasks", "watch", "--since", "0", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = line_reader(&mut replay);
    let events: Vec<Value> = (0..3)
        .map(|_| serde_json::from_str(&lines.recv_timeout(WAIT).unwrap()).unwrap())
        .collect();
    assert_eq!(
        events
            .iter()
            .map(|e| (e["seq"].as_u64().unwrap(), e["event"].as_str().unwrap()))
            .collect::<Vec<_>>(),
        [(1, "created"), (2, "held"), (3, "created")]
    );
    assert_eq!(events[0]["task"], "early");

    signal(replay.id(), libc::SIGTERM);
    wait_with_timeout(&mut replay, WAIT).expect("watch ends on SIGTERM");

    // No daemon when it starts: an error, not an endless wait.
    let out = run(Command::new(sprite_env_binary()).args([
        "--socket",
        "/nonexistent/api.sock",
        "tasks",
        "watch",
    ]));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("is sprite-tasksd running?"));
}

#[test]
fn watch_resumes_after_a_daemon_restart_without_missing_or_repeating() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &[]);
    let mut watch = sprite_env(&daemon)
        .args(["tasks", "watch", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = line_reader(&mut watch);
    let next = || -> Value {
        serde_json::from_str(&lines.recv_timeout(WAIT).expect("an event line")).unwrap()
    };
    eventually(
        || text(&daemon.raw(b"GET /metrics HTTP/1.1\r\nHost: sprite\r\nConnection: close\r\n\r\n")),
        |page| page.contains("\nsprite_tasks_event_streams 1\n"),
    );
    let (_, brief) = daemon.call("POST", "/v1/tasks", Some(r#"{"name":"brief","expire":1}"#));
    assert_eq!(
        (next()["event"].clone(), next()["event"].clone()),
        ("created".into(), "held".into())
    );

    // The daemon stops; while it is down the task falls due, so the restarted
    // daemon expires it (events 3 and 4) before it accepts anyone. Only a
    // watcher that resumes with ?since=2 can see them.
    daemon.terminate();
    let due = time_of(&brief["expires_at"]);
    let now = eventually(wall_now, |now| *now > due);
    assert!(now > due);
    let daemon = Daemon::start(&dirs, &[]);
    daemon.call("PUT", "/v1/tasks/after", Some(r#"{"expire":"1m"}"#));
    let resumed: Vec<(u64, String)> = (0..4)
        .map(|_| next())
        .map(|e| {
            (
                e["seq"].as_u64().unwrap(),
                e["event"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        resumed,
        [
            (3, "expired".to_owned()),
            (4, "idle".to_owned()),
            (5, "created".to_owned()),
            (6, "held".to_owned())
        ]
    );
    signal(watch.id(), libc::SIGTERM);
    wait_with_timeout(&mut watch, WAIT).expect("watch ends on SIGTERM");
    let mut message = String::new();
    watch
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut message)
        .unwrap();
    assert!(
        message.contains("reconnecting (resuming after #2)"),
        "{message}"
    );
}

/// A hold whose command records `GET /v1/tasks/NAME` (as the command saw
/// it) in `seen` and then runs `then`.
fn hold_with(daemon: &Daemon, name: &str, seen: &Path, then: &str) -> Command {
    let script = format!(
        r#""$SPRITE_ENV" tasks get {name} --json > "{}" && {then}"#,
        seen.display()
    );
    let mut command = sprite_env(daemon);
    command.args([
        "tasks", "hold", name, "--expire", "2s", "--every", "500ms", "--", "sh", "-c",
    ]);
    command.arg(script);
    command
}

fn assert_seen_live(seen: &Path, name: &str) {
    let text = std::fs::read_to_string(seen).expect("the command ran");
    let task: Value = serde_json::from_str(&text).expect("the task existed while it ran");
    assert_eq!(task["name"], name);
}

#[test]
fn a_hold_lasts_exactly_as_long_as_its_command() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &[]);
    let scratch = tempfile::tempdir().unwrap();

    // Exit 0, after outliving the 2 s expiry: the refreshes kept it.
    let seen = scratch.path().join("ok");
    let out = run(&mut hold_with(
        &daemon,
        "ok",
        &seen,
        r#"sleep 3 && "$SPRITE_ENV" tasks get ok --json > /dev/null"#,
    ));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_seen_live(&seen, "ok");
    assert_eq!(task_status(&daemon, "ok"), 404, "released at exit");
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));

    // Exit 3.
    let seen = scratch.path().join("three");
    let out = run(&mut hold_with(&daemon, "three", &seen, "exit 3"));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_seen_live(&seen, "three");
    assert_eq!(task_status(&daemon, "three"), 404);

    // Killed by SIGTERM: the holder dies of it too.
    let seen = scratch.path().join("term");
    let out = run(&mut hold_with(&daemon, "term", &seen, "kill -TERM $$"));
    assert_eq!(out.status.signal(), Some(libc::SIGTERM), "{:?}", out.status);
    assert_seen_live(&seen, "term");
    assert_eq!(task_status(&daemon, "term"), 404);
}

#[test]
fn a_second_hold_of_a_held_name_is_refused_before_its_command_runs() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &[]);
    let scratch = tempfile::tempdir().unwrap();
    let release = scratch.path().join("release");
    let first_ran = scratch.path().join("first");
    let second_ran = scratch.path().join("second");

    // The first holder's command runs until told to finish.
    let mut first = sprite_env(&daemon)
        .args([
            "tasks", "hold", "agent", "--expire", "2s", "--every", "500ms", "--",
        ])
        .args(["sh", "-c"])
        .arg(format!(
            r#"touch "{}"; while [ ! -e "{}" ]; do sleep 0.05; done"#,
            first_ran.display(),
            release.display()
        ))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = eventually(|| first_ran.exists(), |ran| *ran);
    assert!(started, "the first command started");
    // The holder binds the task to itself, spawns the command, then hands
    // the binding over with a refresh: the command may run before that
    // refresh lands (seen under a busy CPU), so wait for the hand-over.
    let holder_pid = u64::from(first.id());
    let bound_pid = eventually(
        || daemon.call("GET", "/v1/tasks/agent", None).1["pid"].as_u64(),
        |pid| pid.is_some_and(|pid| pid != holder_pid),
    )
    .expect("bound to a process");
    assert_ne!(
        bound_pid, holder_pid,
        "the binding was handed to the command"
    );

    // A second holder of the same name: refused, its command never runs,
    // and the sentence names the process that holds it.
    let out = run(sprite_env(&daemon)
        .args(["tasks", "hold", "agent", "--"])
        .args(["sh", "-c"])
        .arg(format!(r#"touch "{}""#, second_ran.display())));
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    let said = text(&out.stderr);
    assert!(said.contains(&format!("process {bound_pid}")), "{said}");
    assert!(said.contains("the command was not started"), "{said}");
    assert!(!second_ran.exists(), "the second command ran unheld");

    // The first command is still held, past its 2 s expiry, and released
    // only when it ends.
    std::thread::sleep(Duration::from_millis(2500));
    let (status, task) = daemon.call("GET", "/v1/tasks/agent", None);
    assert_eq!(status, 200, "the first hold lasts while its command runs");
    assert_eq!(task["pid"].as_u64(), Some(bound_pid));
    std::fs::write(&release, b"").unwrap();
    let status = wait_with_timeout(&mut first, WAIT).expect("the first holder exits");
    assert!(status.success(), "{status:?}");
    assert_eq!(task_status(&daemon, "agent"), 404, "released at its end");
}

#[test]
fn a_holder_told_to_stop_forwards_it_and_releases() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &[]);
    let scratch = tempfile::tempdir().unwrap();
    let pid_file = scratch.path().join("pid");

    for stop in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        let _ = std::fs::remove_file(&pid_file);
        let mut holder = sprite_env(&daemon);
        holder
            .args([
                "tasks", "hold", "stop", "--expire", "2s", "--every", "500ms", "--",
            ])
            .args(["sh", "-c"])
            .arg(format!(
                r#"echo $$ > "{}"; exec sleep 30"#,
                pid_file.display()
            ));
        // The holder starts with the default dispositions even when the
        // test command runs under `nohup` (SIGHUP ignored): an ignored
        // signal stays ignored for COMMAND, by design.
        // SAFETY: signal(2) is async-signal-safe; nothing else runs here.
        unsafe {
            holder.pre_exec(|| {
                libc::signal(libc::SIGHUP, libc::SIG_DFL);
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                Ok(())
            });
        }
        let mut holder = holder.stderr(Stdio::piped()).spawn().unwrap();
        let running = eventually(
            || {
                (
                    task_status(&daemon, "stop"),
                    std::fs::read_to_string(&pid_file),
                )
            },
            |(status, pid)| *status == 200 && pid.as_ref().is_ok_and(|p| p.ends_with('\n')),
        );
        assert_eq!(running.0, 200, "the task is held while the command runs");
        let command_pid: i32 = running.1.unwrap().trim().parse().unwrap();

        signal(holder.id(), stop);
        let Some(status) = wait_with_timeout(&mut holder, WAIT) else {
            let command = std::fs::read_to_string(format!("/proc/{command_pid}/stat"));
            let _ = holder.kill();
            let _ = holder.wait();
            let mut said = String::new();
            let _ = holder.stderr.take().unwrap().read_to_string(&mut said);
            panic!(
                "the holder did not exit on signal {stop}; its command: {command:?}; it said: {said}"
            );
        };
        assert_eq!(
            status.signal(),
            Some(stop),
            "the command's death, passed on"
        );
        assert_eq!(task_status(&daemon, "stop"), 404, "released");
        // SAFETY: kill(2) with signal 0 only checks for the process.
        let alive = unsafe { libc::kill(command_pid, 0) } == 0;
        assert!(!alive, "the command got the signal and was reaped");
    }
}

#[test]
fn a_killed_holder_stops_its_command_and_the_task_is_released_when_it_exits() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &[]);
    let scratch = tempfile::tempdir().unwrap();
    let pid_file = scratch.path().join("pid");
    let got = scratch.path().join("got");

    // The command notes the SIGTERM it gets; its loop is its own work.
    let mut holder = sprite_env(&daemon)
        .args([
            "tasks", "hold", "orphan", "--expire", "1m", "--every", "500ms", "--",
        ])
        .args(["sh", "-c"])
        .arg(format!(
            r#"trap 'echo TERM > "{}"; exit 143' TERM; echo $$ > "{}"; while :; do sleep 0.05; done"#,
            got.display(),
            pid_file.display()
        ))
        .spawn()
        .unwrap();
    let pid = eventually(
        || std::fs::read_to_string(&pid_file).unwrap_or_default(),
        |pid| pid.ends_with('\n'),
    );
    let command_pid: i32 = pid.trim().parse().expect("the command started");
    // The task is bound to the command once it runs.
    let (status, task) = eventually(
        || daemon.call("GET", "/v1/tasks/orphan", None),
        |(_, task)| task["pid"] == command_pid,
    );
    assert_eq!(status, 200);
    assert_eq!(task["pid"], command_pid, "{task}");
    let expires_at = time_of(&task["expires_at"]);

    holder.kill().unwrap();
    holder.wait().unwrap();
    // The command does not run on unheld: it got SIGTERM.
    let noted = eventually(
        || std::fs::read_to_string(&got).unwrap_or_default(),
        |text| text == "TERM\n",
    );
    assert_eq!(
        noted, "TERM\n",
        "the command got SIGTERM when its holder died"
    );
    // Its exit released the task at once, long before the expiry.
    let gone_at = eventually(
        || (task_status(&daemon, "orphan"), wall_now()),
        |(status, _)| *status == 404,
    );
    assert_eq!(gone_at.0, 404, "the task was released");
    assert!(gone_at.1 < expires_at, "it lasted until its expiry");
    // SAFETY: our orphaned grandchild, if still there; SIGKILL ends it.
    unsafe { libc::kill(command_pid, libc::SIGKILL) };
}

#[test]
fn hold_with_an_expiry_alone_refreshes_at_a_fifth_of_it() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &[]);
    let scratch = tempfile::tempdir().unwrap();
    let seen = scratch.path().join("seen");

    // --expire 2s alone: refreshed every 400ms. Outliving the expiry twice
    // over proves the refreshes came; the task is then seen live again.
    let mut hold = sprite_env(&daemon);
    hold.args(["tasks", "hold", "short", "--expire", "2s", "--", "sh", "-c"])
        .arg(format!(
            r#"sleep 4.5 && "$SPRITE_ENV" tasks get short --json > "{}""#,
            seen.display()
        ));
    let out = run(&mut hold);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_seen_live(&seen, "short");
    assert_eq!(task_status(&daemon, "short"), 404, "released at exit");

    // Help says the default; an explicit --every is still checked.
    let out = run(Command::new(sprite_env_binary()).args(["tasks", "hold", "--help"]));
    assert!(text(&out.stdout).contains("a fifth of --expire"));
    let out = run(sprite_env(&daemon).args([
        "tasks", "hold", "x", "--expire", "10s", "--every", "6s", "--", "true",
    ]));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn curl_shows_no_progress_meter_in_a_pipe_and_streams_events_unbuffered() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &[]);

    // stdout and stderr are pipes here, as in a log or `| jq`.
    let out = run(sprite_env(&daemon).args([
        "curl",
        "-X",
        "POST",
        "/v1/tasks",
        "-d",
        r#"{"name":"quiet","expire":"1m"}"#,
    ]));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stderr), "", "no progress meter");
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["name"],
        "quiet"
    );
    // Errors are still said (-S).
    let out = run(sprite_env(&daemon).args(["curl", "-f", "/v1/tasks/missing"]));
    assert_eq!(out.status.code(), Some(22));
    assert!(text(&out.stderr).contains("404"), "{}", text(&out.stderr));
    // Progress asked for: kept.
    let out = run(sprite_env(&daemon).args(["curl", "-#", "/v1/tasks"]));
    assert!(
        !out.stderr.is_empty(),
        "the progress bar the user asked for"
    );

    // Events: each line as it comes, not when curl's buffer fills.
    let mut events = sprite_env(&daemon)
        .args(["curl", "/v1/events"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = line_reader(&mut events);
    eventually(
        || text(&daemon.raw(b"GET /metrics HTTP/1.1\r\nHost: sprite\r\nConnection: close\r\n\r\n")),
        |page| page.contains("\nsprite_tasks_event_streams 1\n"),
    );
    daemon.call("DELETE", "/v1/tasks/quiet", None);
    let line = lines.recv_timeout(WAIT).expect("the event, unbuffered");
    assert!(line.contains(r#""event":"deleted""#), "{line}");
    let _ = events.kill();
    let _ = events.wait();
}

#[test]
fn a_hold_is_refused_rather_than_silently_missing() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &[]);
    let scratch = tempfile::tempdir().unwrap();
    let ran = scratch.path().join("ran");
    let touch = format!(r#"touch "{}""#, ran.display());

    // An interval not well below the expiry.
    let out = run(sprite_env(&daemon)
        .args([
            "tasks", "hold", "x", "--expire", "2s", "--every", "1500ms", "--",
        ])
        .args(["sh", "-c", &touch]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("half the expiry"),
        "{}",
        text(&out.stderr)
    );

    // An expiry the daemon refuses: 125, the command is not run.
    let out = run(sprite_env(&daemon)
        .args([
            "tasks", "hold", "x", "--expire", "2h", "--every", "1m", "--",
        ])
        .args(["sh", "-c", &touch]));
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("at most 1h"),
        "{}",
        text(&out.stderr)
    );

    // No daemon.
    let out = run(Command::new(sprite_env_binary())
        .args([
            "--socket",
            "/nonexistent/api.sock",
            "tasks",
            "hold",
            "x",
            "--",
        ])
        .args(["sh", "-c", &touch]));
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stderr).contains("the command was not started"));
    assert!(!ran.exists(), "no command ran without its hold");

    // A command that does not exist: 127, and the hold is released.
    let out = run(sprite_env(&daemon).args(["tasks", "hold", "x", "--", "/nonexistent/agent"]));
    assert_eq!(out.status.code(), Some(127));
    assert_eq!(task_status(&daemon, "x"), 404);
}

#[test]
fn a_failed_refresh_is_reported_and_retried_not_fatal() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &[]);
    let scratch = tempfile::tempdir().unwrap();
    let go = scratch.path().join("go");

    let mut holder = sprite_env(&daemon)
        .args([
            "tasks", "hold", "steady", "--expire", "3s", "--every", "500ms", "--",
        ])
        .args(["sh", "-c"])
        // The command's own wait for the test's signal to finish.
        .arg(format!(
            r#"while [ ! -e "{}" ]; do sleep 0.05; done"#,
            go.display()
        ))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = holder.stderr.take().unwrap();
    let (sender, reports) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let report = |needle: &str| loop {
        let line = reports
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("no report with {needle:?}"));
        if line.contains(needle) {
            return line;
        }
    };
    let held = eventually(|| task_status(&daemon, "steady"), |status| *status == 200);
    assert_eq!(held, 200);

    // The daemon dies: refreshes fail, are reported, and the holder goes on.
    daemon.kill9();
    let failed = report("refreshing task \"steady\" failed");
    assert!(failed.contains("retrying in 500ms"), "{failed}");
    assert_eq!(
        holder.try_wait().unwrap(),
        None,
        "a failed refresh is not fatal"
    );

    // It comes back: the next refresh holds the task again.
    let daemon = Daemon::start(&dirs, &[]);
    report("task \"steady\" refreshed again");
    assert_eq!(task_status(&daemon, "steady"), 200);

    std::fs::write(&go, b"").unwrap();
    let status = wait_with_timeout(&mut holder, WAIT).expect("the holder exits");
    assert_eq!(status.code(), Some(0));
    assert_eq!(task_status(&daemon, "steady"), 404);
}

#[test]
fn a_holder_stopped_while_taking_the_hold_never_starts_its_command() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &[]);
    let scratch = tempfile::tempdir().unwrap();
    let ran = scratch.path().join("ran");

    // A frozen daemon keeps the holder's first PUT in flight.
    signal(daemon.pid(), libc::SIGSTOP);
    let mut holder = sprite_env(&daemon)
        .args(["tasks", "hold", "early", "--"])
        .args(["touch"])
        .arg(&ran)
        .spawn()
        .unwrap();
    let fds = format!("/proc/{}/fd", holder.id());
    let connected = eventually(
        || {
            std::fs::read_dir(&fds)
                .map(|dir| {
                    dir.filter_map(Result::ok)
                        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                        .any(|link| link.to_string_lossy().starts_with("socket:"))
                })
                .unwrap_or(false)
        },
        |connected| *connected,
    );
    assert!(connected, "the holder is sending its first PUT");
    signal(holder.id(), libc::SIGTERM);
    signal(daemon.pid(), libc::SIGCONT);

    let status = wait_with_timeout(&mut holder, WAIT).expect("the holder exits");
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
    assert!(!ran.exists(), "the command never started");
    assert_eq!(task_status(&daemon, "early"), 404, "the hold was released");
}

/// The seed document's heartbeat script, verbatim but for the socket path.
const SEED_HEARTBEAT: &str = r#"#!/usr/bin/env bash
set -euo pipefail
api() {
curl -s --unix-socket /.sprite/api.sock \
-H "Content-Type: application/json" "$@"
}
trap 'api -X DELETE http://sprite/v1/tasks/agent' EXIT
while true; do
api -X PUT http://sprite/v1/tasks/agent -d '{ "expire": "5m" }' >/dev/null
sleep 60
done
"#;

/// The children of `pid` whose command is `name` (`/proc/PID/task/*/children`).
fn children_named(pid: u32, name: &str) -> Vec<u32> {
    let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    threads
        .flatten()
        .filter_map(|thread| std::fs::read_to_string(thread.path().join("children")).ok())
        .flat_map(|children| {
            children
                .split_whitespace()
                .filter_map(|child| child.parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/comm"))
                .is_ok_and(|comm| comm.trim() == name)
        })
        .collect()
}

#[test]
fn the_seeds_heartbeat_script_holds_and_releases() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &[]);
    let scratch = tempfile::tempdir().unwrap();
    let script = scratch.path().join("heartbeat.sh");
    let socket = daemon.socket.to_str().expect("a UTF-8 socket path");
    std::fs::write(&script, SEED_HEARTBEAT.replace("/.sprite/api.sock", socket)).unwrap();

    let bash_log = scratch.path().join("bash.log");
    let mut bash = Command::new("bash")
        .arg(&script)
        .process_group(0)
        .stdin(Stdio::null())
        // A file, not a pipe: a `sleep 60` forked as the signal lands
        // outlives bash and would hold a pipe open.
        .stderr(std::fs::File::create(&bash_log).unwrap())
        .spawn()
        .expect("bash");
    let (status, task) = eventually(
        || daemon.call("GET", "/v1/tasks/agent", None),
        |(status, _)| *status == 200,
    );
    assert_eq!(status, 200, "the heartbeat created the task");
    let left = time_of(&task["expires_at"])
        .duration_since(wall_now())
        .expect("in the future");
    assert!(
        left > Duration::from_secs(290) && left <= Duration::from_secs(300),
        "a ~5-minute expiry, got {left:?}"
    );

    // SIGTERM to the script's process group: bash and its `sleep 60` both
    // get it (bash defers its EXIT trap until the foreground sleep ends).
    // Only once the sleep runs: a signal landing between the PUT and the
    // fork would leave bash waiting out a `sleep 60` forked after it.
    let sleeping = eventually(
        || children_named(bash.id(), "sleep"),
        |sleeps| !sleeps.is_empty(),
    );
    assert!(!sleeping.is_empty(), "the script reached its sleep");
    let group = -(bash.id() as i32);
    // SAFETY: kill(2) on the process group we created.
    assert_eq!(unsafe { libc::kill(group, libc::SIGTERM) }, 0);
    wait_with_timeout(&mut bash, WAIT).expect("the script exits");
    // SAFETY: as above; whatever the signal missed in the group goes too.
    unsafe { libc::kill(group, libc::SIGKILL) };
    let stderr = std::fs::read_to_string(&bash_log).unwrap_or_default();
    assert_eq!(
        task_status(&daemon, "agent"),
        404,
        "the EXIT trap deleted the task; bash said: {stderr}"
    );
}

#[test]
fn every_command_has_help_with_an_example() {
    for command in [
        vec![],
        vec!["curl"],
        vec!["tasks"],
        vec!["tasks", "list"],
        vec!["tasks", "get"],
        vec!["tasks", "create"],
        vec!["tasks", "refresh"],
        vec!["tasks", "delete"],
        vec!["tasks", "status"],
        vec!["tasks", "watch"],
        vec!["tasks", "hold"],
    ] {
        let out = run(Command::new(sprite_env_binary())
            .args(&command)
            .arg("--help"));
        assert!(out.status.success(), "{command:?}");
        let help = text(&out.stdout);
        assert!(
            help.contains("Example") && help.contains("sprite-env "),
            "{command:?}: {help}"
        );
        // Every positional argument says what it is.
        let arguments = help.split("Arguments:").nth(1).unwrap_or("");
        let arguments = arguments.split("Options:").next().unwrap_or("");
        let mut lines = arguments
            .lines()
            .filter(|l| !l.trim().is_empty())
            .peekable();
        while let Some(line) = lines.next() {
            if line.trim_start().starts_with('<') || line.trim_start().starts_with('[') {
                let described = line.trim().contains("  ")
                    || lines
                        .peek()
                        .is_some_and(|next| !next.trim_start().starts_with(['<', '[']));
                assert!(described, "{command:?}: {line:?} has no help text:\n{help}");
            }
        }
    }
}
