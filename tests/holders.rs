//! Who holds the machine, and why (issue 14), against the real binaries:
//! the holder the daemon records from the socket, the reason, and holds
//! bound to a process.

mod common;

use std::process::{Command, Stdio};

use common::{Daemon, Dirs};
use serde_json::Value;

fn sprite_env(daemon: &Daemon) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sprite-env"));
    command
        .arg("--socket")
        .arg(&daemon.socket)
        .env_remove("SPRITE_API_SOCKET");
    command
}

/// The `cmdline` of this test process, as the daemon joins it.
fn our_command_line() -> String {
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", std::process::id())).unwrap();
    String::from_utf8_lossy(&cmdline)
        .trim_end_matches('\0')
        .replace('\0', " ")
}

#[test]
fn curl_run_from_a_shell_is_the_holder_and_the_shell_its_parent() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &[]);
    // `; echo` keeps sh from exec'ing curl: the shell stays curl's parent.
    let script = r#"echo "$$"; curl -s --unix-socket "$1" -X POST http://sprite/v1/tasks -d '{"name":"agent","expire":"1h","reason":"nightly build"}'; echo"#;
    let output = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .arg(&daemon.socket)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut lines = stdout.lines();
    let shell_pid: u64 = lines.next().unwrap().parse().unwrap();
    let created: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    let holder = &created["holder"];
    assert_eq!(holder["command"], "curl", "{created}");
    assert_eq!(holder["parent_pid"], shell_pid, "{created}");
    assert_eq!(holder["uid"], u64::from(unsafe { libc::getuid() }));
    assert!(holder["pid"].as_u64().is_some_and(|pid| pid != shell_pid));
    let parent = holder["parent_command"].as_str().unwrap();
    assert!(parent.starts_with("sh -c echo "), "{parent}");
    assert_eq!(created["reason"], "nightly build");
    assert_eq!(created["pid"], Value::Null);

    // Get, list and status show the same; a refresh without a reason
    // keeps it, and the holder becomes the latest writer (this test).
    let (_, got) = daemon.call("GET", "/v1/tasks/agent", None);
    assert_eq!(got, created);
    let (status, refreshed) = daemon.call("PUT", "/v1/tasks/agent", Some(r#"{"expire":"30m"}"#));
    assert_eq!(status, 200);
    assert_eq!(refreshed["reason"], "nightly build");
    assert_eq!(refreshed["holder"]["pid"], u64::from(std::process::id()));
    assert!(refreshed["holder"]["parent_pid"].is_u64());
    let (_, list) = daemon.call("GET", "/v1/tasks", None);
    assert_eq!(list["tasks"][0], refreshed);
    let (_, status) = daemon.call("GET", "/v1/status", None);
    assert_eq!(status["held_by"][0]["task"], "agent");
    assert_eq!(status["held_by"][0]["reason"], "nightly build");
}

#[test]
fn sprite_env_is_the_holder_and_its_caller_the_parent() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &[]);
    let output = sprite_env(&daemon)
        .args(["tasks", "create", "build", "--expire", "10m", "--json"])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(output.status.success());
    let (_, task) = daemon.call("GET", "/v1/tasks/build", None);
    let holder = &task["holder"];
    assert_eq!(holder["command"], "sprite-env", "{task}");
    assert_eq!(holder["parent_pid"], u64::from(std::process::id()));
    assert_eq!(holder["parent_command"], our_command_line());
}

#[test]
fn reasons_round_trip_and_their_limits_are_enforced() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &[]);
    let reason = "fix \"the\" tests: été ✓ \\ ok";
    let body = serde_json::json!({"name": "r", "expire": "5m", "reason": reason}).to_string();
    let (status, created) = daemon.call("POST", "/v1/tasks", Some(&body));
    assert_eq!(status, 201);
    assert_eq!(created["reason"], reason);
    let (status, replaced) = daemon.call(
        "PUT",
        "/v1/tasks/r",
        Some(r#"{"expire":"5m","reason":"second"}"#),
    );
    assert_eq!(status, 200);
    assert_eq!(replaced["reason"], "second");

    let max = "x".repeat(256);
    let body = serde_json::json!({"name": "max", "expire": "5m", "reason": max}).to_string();
    assert_eq!(daemon.status("POST", "/v1/tasks", Some(&body)), 201);
    for bad in [
        "x".repeat(257),
        "two\nlines".into(),
        "\u{1b}[31m".into(),
        String::new(),
    ] {
        let body = serde_json::json!({"name": "bad", "expire": "5m", "reason": bad}).to_string();
        let (status, error) = daemon.call("POST", "/v1/tasks", Some(&body));
        assert_eq!(status, 400, "{bad:?}");
        let message = error["error"].as_str().unwrap();
        assert!(
            message.ends_with("a reason is 1 to 256 bytes of printable text"),
            "{message}"
        );
    }
    assert_eq!(daemon.status("GET", "/v1/tasks/bad", None), 404);

    // The reason and holder survive a crash (replayed from the log) and a
    // clean stop (read from the checkpointed record).
    daemon.kill9();
    let daemon = Daemon::start(&dirs, &[]);
    let (_, task) = daemon.call("GET", "/v1/tasks/r", None);
    assert_eq!(task["reason"], "second");
    assert_eq!(task["holder"]["pid"], u64::from(std::process::id()));
    daemon.terminate();
    let daemon = Daemon::start(&dirs, &[]);
    let (_, again) = daemon.call("GET", "/v1/tasks/r", None);
    assert_eq!(again, task);
}
