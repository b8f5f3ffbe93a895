//! `sprite-env tasks wait-idle` against the real daemon: returns at once
//! when idle, when the last task is deleted or expires, follows a
//! restarted daemon, times out with 1, and says so when there is no daemon.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use common::{Daemon, Dirs, WAIT, command_as, eventually, is_root, wait_with_timeout};

const SPRITE_ENV: &str = env!("CARGO_BIN_EXE_sprite-env");

fn wait_idle(socket: &Path, args: &[&str]) -> Command {
    wait_idle_as(None, socket, args)
}

fn wait_idle_as(uid: Option<u32>, socket: &Path, args: &[&str]) -> Command {
    let mut command = command_as(uid, SPRITE_ENV);
    command
        .args(["tasks", "wait-idle"])
        .args(args)
        .env("SPRITE_API_SOCKET", socket)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn finish(mut child: Child) -> Output {
    let status = wait_with_timeout(&mut child, WAIT);
    if status.is_none() {
        let _ = child.kill();
    }
    let output = child.wait_with_output().expect("wait-idle output");
    assert!(status.is_some(), "wait-idle did not return: {output:?}");
    output
}

/// Waits until the daemon has `count` event streams open (wait-idle is
/// following the events).
fn streams_open(daemon: &Daemon, count: u32) {
    let metric = format!("sprite_tasks_event_streams {count}");
    let page = eventually(
        || {
            let mut stream = daemon.connect();
            std::io::Write::write_all(
                &mut stream,
                b"GET /metrics HTTP/1.1\r\nHost: sprite\r\nConnection: close\r\n\r\n",
            )
            .unwrap();
            let mut page = String::new();
            let _ = std::io::Read::read_to_string(&mut stream, &mut page);
            page
        },
        |page| page.lines().any(|line| line == metric),
    );
    assert!(page.lines().any(|line| line == metric), "{page}");
}

#[test]
fn wait_idle_returns_at_once_when_idle_and_times_out_with_1() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &[]);
    let output = wait_idle(&daemon.socket, &[]).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");

    assert_eq!(
        daemon.status("PUT", "/v1/tasks/agent", Some(r#"{"expire":"1h"}"#)),
        200
    );
    let output = wait_idle(&daemon.socket, &["--timeout", "300ms"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("timed out after 300ms"), "{stderr}");
}

#[test]
fn wait_idle_returns_when_the_last_task_is_deleted_or_expires() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &[]);
    for name in ["a", "b"] {
        let body = format!(r#"{{"name":"{name}","expire":"1h"}}"#);
        assert_eq!(daemon.status("POST", "/v1/tasks", Some(&body)), 201);
    }
    let mut waiter = wait_idle(&daemon.socket, &[]).spawn().unwrap();
    streams_open(&daemon, 1);
    assert_eq!(daemon.status("DELETE", "/v1/tasks/a", None), 204);
    // b still holds (a bug returning on any event would usually have
    // returned by now; a correct waiter never has).
    assert!(
        waiter.try_wait().unwrap().is_none(),
        "returned while b held"
    );
    assert_eq!(daemon.status("DELETE", "/v1/tasks/b", None), 204);
    let output = finish(waiter);
    assert_eq!(output.status.code(), Some(0), "{output:?}");

    // Expiry is an edge too.
    assert_eq!(
        daemon.status("POST", "/v1/tasks", Some(r#"{"name":"c","expire":"1s"}"#)),
        201
    );
    let waiter = wait_idle(&daemon.socket, &["--timeout", "20s"])
        .spawn()
        .unwrap();
    let output = finish(waiter);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    daemon.wait_for_log("task expired task=c");
}

#[test]
fn wait_idle_follows_a_restarted_daemon() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &[]);
    assert_eq!(
        daemon.status("PUT", "/v1/tasks/agent", Some(r#"{"expire":"1h"}"#)),
        200
    );
    let waiter = wait_idle(&daemon.socket, &[]).spawn().unwrap();
    streams_open(&daemon, 1);
    assert!(daemon.terminate().0.success());
    let daemon = Daemon::start(&dirs, &[]);
    streams_open(&daemon, 1);
    assert_eq!(daemon.status("DELETE", "/v1/tasks/agent", None), 204);
    let output = finish(waiter);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("reconnecting"), "{stderr}");
}

/// A daemon that answered the stream but not the status request (it was
/// stopping between the two, or refuses the second connection) is a
/// daemon to wait for, not a missing one: no "cannot connect" exit 69.
#[test]
fn wait_idle_waits_for_a_daemon_that_answered_its_stream() {
    if !is_root() {
        println!("not root: another uid cannot be played; skipped");
        return;
    }
    let dirs = Dirs::reachable_by_other_uids();
    // One connection for uid nobody: its stream takes it, the status
    // request is refused with 503.
    let daemon = Daemon::start(&dirs, &["--max-connections-per-uid", "1"]);
    assert_eq!(
        daemon.status("PUT", "/v1/tasks/agent", Some(r#"{"expire":"1h"}"#)),
        200
    );
    let waiter = wait_idle_as(Some(65534), &daemon.socket, &["--timeout", "2s"])
        .spawn()
        .unwrap();
    let output = finish(waiter);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(1),
        "timed out, not gone: {stderr}"
    );
    assert!(stderr.contains("reconnecting"), "{stderr}");
    assert!(stderr.contains("still held"), "{stderr}");
}

#[test]
fn wait_idle_without_a_daemon_says_so() {
    let dirs = Dirs::new();
    let output = wait_idle(&dirs.socket(), &[]).output().unwrap();
    assert_eq!(output.status.code(), Some(69), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no Tasks API socket"), "{stderr}");
}
