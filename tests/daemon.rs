//! The daemon as an operator meets it, against the real binary: a log
//! reader that goes away, start-up messages, `--max-expire`, and log lines
//! that say who kept the machine awake.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{Daemon, Dirs, WAIT, daemon_binary, eventually, metrics, sample, wait_with_timeout};

#[test]
fn a_closed_log_pipe_does_not_stop_the_daemon() {
    let dirs = Dirs::new();
    let (log_reader, log_writer) = std::io::pipe().unwrap();
    let mut child = Command::new(daemon_binary())
        .arg("--socket")
        .arg(dirs.socket())
        .arg("--db")
        .arg(dirs.db())
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_writer)
        .spawn()
        .unwrap();
    // The reader takes lines until the daemon listens (as `| head -1` would),
    // then goes away.
    let mut lines = BufReader::new(log_reader).lines();
    let listening = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|line| line.contains("listening"));
    assert!(listening.is_some(), "the daemon started");
    drop(lines);

    let daemon = Daemon::attach(&dirs);
    for round in 0..20 {
        let name = format!("t{round}");
        let body = r#"{"expire":"1h"}"#;
        assert_eq!(
            daemon.status("PUT", &format!("/v1/tasks/{name}"), Some(body)),
            200
        );
        assert_eq!(
            daemon.status("DELETE", &format!("/v1/tasks/{name}"), None),
            204
        );
    }
    let page = eventually(
        || metrics(&daemon),
        |page| sample(page, "sprite_tasks_log_writes_dropped_total").is_some_and(|n| n > 0.0),
    );
    let dropped = sample(&page, "sprite_tasks_log_writes_dropped_total");
    assert!(
        dropped.is_some_and(|n| n > 0.0),
        "log writes were attempted and dropped: {page}"
    );
    assert_eq!(
        child.try_wait().unwrap(),
        None,
        "the daemon is still running"
    );
    assert_eq!(daemon.status("GET", "/v1/tasks", None), 200);

    common::signal(child.id(), libc::SIGTERM);
    let status = wait_with_timeout(&mut child, WAIT).expect("the daemon stops on SIGTERM");
    assert_eq!(status.code(), Some(0), "a clean stop, not a panic");
}

#[test]
fn max_expire_takes_what_its_help_says_up_to_a_week() {
    for (setting, longest, refused) in [
        ("7d", "7d", "8d"),
        ("2d", "48h", "49h"),
        ("604800", "604800", "604801"),
        ("90m", "5400", "91m"),
    ] {
        let dirs = Dirs::new();
        let daemon = Daemon::start(&dirs, &["--max-expire", setting]);
        let body = |expire: &str| {
            let value = if expire.bytes().all(|b| b.is_ascii_digit()) {
                expire.to_owned()
            } else {
                format!("\"{expire}\"")
            };
            format!(r#"{{"name":"a","expire":{value}}}"#)
        };
        assert_eq!(
            daemon.status("POST", "/v1/tasks", Some(&body(longest))),
            201,
            "--max-expire {setting}: expire {longest}"
        );
        let (status, error) = daemon.call("PUT", "/v1/tasks", Some(&body(refused)));
        assert_eq!(status, 400, "--max-expire {setting}: expire {refused}");
        assert!(
            error["error"].as_str().unwrap().contains("at most"),
            "{error}"
        );
    }

    for (setting, needle) in [
        ("8d", "between 1s and 7days (604800 seconds)"),
        ("0", "between 1s and 7days"),
        ("soon", "integer number of seconds"),
    ] {
        refused_setting("--max-expire", setting, needle);
    }
}

/// Starts the daemon with `flag setting` and checks that it refuses to
/// start: exit 2, `needle` in what it prints, no socket made.
fn refused_setting(flag: &str, setting: &str, needle: &str) {
    let dirs = Dirs::new();
    let out = Command::new(daemon_binary())
        .arg("--socket")
        .arg(dirs.socket())
        .args([flag, setting])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{flag} {setting}");
    let message = String::from_utf8_lossy(&out.stderr);
    assert!(message.contains(needle), "{flag} {setting}: {message}");
    assert!(!dirs.socket().exists(), "{flag} {setting}: not started");
}

#[test]
fn max_tasks_is_refused_outside_one_to_a_hundred_million() {
    for setting in ["0", "100000001", "many"] {
        refused_setting(
            "--max-tasks",
            setting,
            "is not a task count from 1 to 100000000",
        );
    }
}

#[test]
fn a_start_up_error_is_printed_once() {
    let dirs = Dirs::new();
    std::fs::write(dirs.db(), vec![b'x'; 4096]).unwrap();
    let out = Command::new(daemon_binary())
        .arg("--socket")
        .arg(dirs.socket())
        .arg("--db")
        .arg(dirs.db())
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = dirs.db().display().to_string();
    assert_eq!(stderr.matches(&file).count(), 1, "{stderr}");
    assert!(stderr.starts_with("sprite-tasksd: "), "{stderr}");
}

#[test]
fn the_start_up_line_names_absolute_paths() {
    let dirs = Dirs::new();
    let mut child = Command::new(daemon_binary())
        .current_dir(dirs.socket_dir.path())
        .args(["--socket", "api.sock", "--db", "data/tasks.redb"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let listening = BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .find(|line| line.contains("listening"))
        .expect("the daemon started");
    let _ = child.kill();
    let _ = child.wait();
    let dir = dirs.socket_dir.path().canonicalize().unwrap();
    let socket = dir.join("api.sock");
    let db = dir.join("data/tasks.redb");
    assert!(
        listening.contains(&format!("socket={}", socket.display()))
            || listening.contains(&format!("socket={}", dirs.socket().display())),
        "{listening}"
    );
    assert!(
        listening.contains(&format!("db={}", db.display()))
            || listening.contains(&format!(
                "db={}",
                dirs.socket_dir.path().join("data/tasks.redb").display()
            )),
        "{listening}"
    );
}

/// The value of `field=` in a log line.
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {name}="))? + name.len() + 2;
    line[start..].split(' ').next()
}

#[test]
fn the_log_says_who_kept_the_machine_awake() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(
        &dirs,
        &[
            "--while-held",
            "echo hello from while-held; echo on stderr >&2; exec sleep 1000",
            "--on-idle",
            "echo bye from on-idle",
        ],
    );

    assert_eq!(
        daemon.status("PUT", "/v1/tasks/agent", Some(r#"{"expire":"1h"}"#)),
        200
    );
    let created = daemon.wait_for_log("task created");
    assert_eq!(field(&created, "task"), Some("agent"), "{created}");
    assert!(created.contains(" INFO "), "{created}");
    let held = daemon.wait_for_log("held: the first task is live");
    assert_eq!(field(&held, "task"), Some("agent"), "{held}");
    assert_eq!(field(&held, "event"), Some("created"), "{held}");

    // Hook output comes back as log lines naming the hook and its pid.
    let started = daemon.wait_for_log("--while-held command started");
    let pid = field(&started, "pid").expect("a pid").to_owned();
    for needle in [
        "hook output: hello from while-held",
        "hook output: on stderr",
    ] {
        let line = daemon.wait_for_log(needle);
        assert_eq!(field(&line, "hook"), Some("while-held"), "{line}");
        assert_eq!(field(&line, "pid"), Some(pid.as_str()), "{line}");
    }

    // A refresh at debug; every request has its line.
    assert_eq!(
        daemon.status("PUT", "/v1/tasks/agent", Some(r#"{"expire":"1h"}"#)),
        200
    );
    let refreshed = daemon.wait_for_log("task refreshed");
    assert!(refreshed.contains(" DEBUG "), "{refreshed}");
    let request = daemon.wait_for_log("method=PUT path=/v1/tasks/agent status=200");
    assert!(field(&request, "micros").is_some(), "{request}");
    assert_eq!(daemon.status("GET", "/v1/tasks/nobody", None), 404);
    daemon.wait_for_log("method=GET path=/v1/tasks/nobody status=404");

    // Deleted, then one that expires: each edge names its task.
    assert_eq!(daemon.status("DELETE", "/v1/tasks/agent", None), 204);
    let deleted = daemon.wait_for_log("task deleted");
    assert_eq!(field(&deleted, "task"), Some("agent"), "{deleted}");
    let idle = daemon.wait_for_log("idle: the last task is gone");
    assert_eq!(field(&idle, "task"), Some("agent"), "{idle}");
    assert_eq!(field(&idle, "event"), Some("deleted"), "{idle}");
    let bye = daemon.wait_for_log("hook output: bye from on-idle");
    assert_eq!(field(&bye, "hook"), Some("on-idle"), "{bye}");

    assert_eq!(
        daemon.status("PUT", "/v1/tasks/brief", Some(r#"{"expire":1}"#)),
        200
    );
    let expired = daemon.wait_for_log("task expired");
    assert_eq!(field(&expired, "task"), Some("brief"), "{expired}");
    let idle = eventually(
        || daemon.log_text(),
        |log| log.matches("idle: the last task is gone").count() == 2,
    );
    let idle = idle
        .lines()
        .rfind(|l| l.contains("idle: the last task is gone"))
        .unwrap();
    assert_eq!(field(idle, "task"), Some("brief"), "{idle}");
    assert_eq!(field(idle, "event"), Some("expired"), "{idle}");

    // No hook output reached the log raw.
    let (_, log) = daemon.terminate();
    for line in log
        .lines()
        .filter(|l| l.contains("hello from") || l.contains("bye from"))
    {
        assert!(
            line.contains("hook output: ") || line.contains(" command="),
            "raw hook output: {line}"
        );
    }
}

/// Runs the daemon to its start-up failure as a non-root user (`nobody`,
/// through `setpriv` when the tests run as root) and returns its stderr.
fn start_as_non_root(socket: &std::path::Path, db: &std::path::Path) -> String {
    let mut command = if unsafe { libc::geteuid() } == 0 {
        let mut command = Command::new("setpriv");
        command.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]);
        command.arg(daemon_binary());
        command
    } else {
        Command::new(daemon_binary())
    };
    let output = command
        .arg("--socket")
        .arg(socket)
        .arg("--db")
        .arg(db)
        .stdin(Stdio::null())
        .output()
        .expect("the daemon runs");
    assert!(
        !output.status.success(),
        "a daemon that cannot write started"
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A directory only root may write, holding what `fill` puts there.
fn root_owned_dir(fill: impl FnOnce(&std::path::Path)) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path());
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[test]
fn permission_denied_is_named_as_such_never_as_damage() {
    let socket_dir = tempfile::tempdir().unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(socket_dir.path(), std::fs::Permissions::from_mode(0o777))
            .unwrap();
    }
    let socket = socket_dir.path().join("api.sock");

    // A database that cannot be created.
    let empty = root_owned_dir(|_| {});
    let message = start_as_non_root(&socket, &empty.path().join("tasks.redb"));
    assert!(message.contains("cannot create the database"), "{message}");
    assert!(message.contains("permission denied"), "{message}");
    assert!(message.contains("--db"), "says what to do: {message}");
    assert!(!message.contains("damaged"), "{message}");
    assert_eq!(
        std::fs::read_dir(empty.path()).unwrap().count(),
        0,
        "nothing made"
    );

    // A healthy database that belongs to root.
    let owned = root_owned_dir(|dir| {
        std::fs::copy(
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/redb-only-80fdb50.redb"
            ),
            dir.join("tasks.redb"),
        )
        .unwrap();
    });
    let db = owned.path().join("tasks.redb");
    let before = std::fs::read(&db).unwrap();
    let message = start_as_non_root(&socket, &db);
    assert!(message.contains("cannot open the database"), "{message}");
    assert!(message.contains("permission denied"), "{message}");
    assert!(!message.contains("damaged"), "{message}");
    assert_eq!(std::fs::read(&db).unwrap(), before, "left untouched");
    assert!(
        !socket.exists(),
        "no socket for a daemon that did not start"
    );
}

#[test]
fn a_second_daemon_on_a_live_socket_leaves_no_database_behind() {
    let dirs = Dirs::new();
    let first = Daemon::start(&dirs, &[]);
    let other_db = dirs.db().with_file_name("other.redb");
    let output = Command::new(daemon_binary())
        .arg("--socket")
        .arg(dirs.socket())
        .arg("--db")
        .arg(&other_db)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("another process is serving"), "{message}");
    assert!(
        !other_db.exists(),
        "no database made by a daemon that was refused"
    );
    assert!(!other_db.with_extension("redb.wal").exists());
    assert_eq!(
        first.status("GET", "/v1/tasks", None),
        200,
        "the first one is untouched"
    );
}
