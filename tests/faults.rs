//! Failing storage: the real [`Server`], in this process, over a log and a
//! database whose every write and sync goes through a [`FaultSwitch`] (one
//! for the log, on the request path, and one for the database, written by
//! checkpoints).
//!
//! Each scenario runs its own server on its own socket and database and
//! keeps a record of what the clients were told. What the daemon serves
//! after a failure is what it reloaded from disk, so it is checked after
//! every step; at the end one SIGTERM stops every server (signal handlers are
//! per process, so this file holds a single `#[test]`) and each database file
//! is opened afresh and compared with the record.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use common::{WAIT, read_response, request_bytes};
use serde_json::Value;
use sprite_tasks::server::{Config, Stats};
use sprite_tasks::store::{Store, StoreOptions};
use sprite_tasks::testing::faulty::{FaultOn, FaultSwitch};

/// A task as the API shows it: name to (started_at, expires_at).
type Served = BTreeMap<String, (String, String)>;

/// One in-process daemon over a faulty backend.
struct InProcess {
    name: &'static str,
    socket: PathBuf,
    db: PathBuf,
    /// The log's switch: faults here fail requests.
    switch: FaultSwitch,
    /// The database's: faults here fail checkpoints.
    db_switch: FaultSwitch,
    thread: JoinHandle<Result<Stats, String>>,
    /// What must be on disk when the scenario ends.
    expected: Served,
    /// Commits the scenario saw fail (503s that shared no batch).
    failed_commits: u64,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl InProcess {
    fn start(name: &'static str) -> InProcess {
        InProcess::try_start(name, FaultSwitch::new(), StoreOptions::default())
            .unwrap_or_else(|e| panic!("{name}: the server did not start: {e}"))
    }

    /// Starts a server whose log obeys `switch` from the first open.
    fn try_start(
        name: &'static str,
        switch: FaultSwitch,
        options: StoreOptions,
    ) -> Result<InProcess, String> {
        let db_switch = FaultSwitch::new();
        let socket_dir = tempfile::Builder::new().prefix("sf").tempdir().unwrap();
        let db_dir = tempfile::Builder::new()
            .prefix("db")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let socket = socket_dir.path().join("api.sock");
        let db = db_dir.path().join("tasks.redb");
        let config = Config {
            socket: socket.clone(),
            shutdown_grace: Duration::from_secs(1),
            ..Config::default()
        };
        let thread = common::start_in_process(config, &db, &db_switch, &switch, options)?;
        Ok(InProcess {
            name,
            socket,
            db,
            switch,
            db_switch,
            thread,
            expected: Served::new(),
            failed_commits: 0,
            _dirs: (socket_dir, db_dir),
        })
    }

    fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let mut stream = UnixStream::connect(&self.socket).expect("connect");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream
            .write_all(&request_bytes(method, path, body))
            .unwrap();
        let response = read_response(&mut stream).expect("a whole response");
        (response.status, response.json())
    }

    /// `PUT /v1/tasks/{name}`; records an acknowledged one.
    fn put(&mut self, name: &str) -> (u16, Value) {
        let (status, body) = self.call(
            "PUT",
            &format!("/v1/tasks/{name}"),
            Some(r#"{"expire":"1h"}"#),
        );
        if status == 200 {
            self.expected.insert(name.to_owned(), times(&body));
        }
        (status, body)
    }

    fn delete(&mut self, name: &str) -> u16 {
        let (status, _) = self.call("DELETE", &format!("/v1/tasks/{name}"), None);
        if status == 204 {
            self.expected.remove(name);
        }
        status
    }

    fn served(&self) -> Served {
        let (status, body) = self.call("GET", "/v1/tasks", None);
        assert_eq!(status, 200, "{}: {body}", self.name);
        body["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|task| (task["name"].as_str().unwrap().to_owned(), times(task)))
            .collect()
    }

    /// What is served is exactly what the clients were told.
    fn assert_serves_expected(&self, step: &str) {
        assert_eq!(self.served(), self.expected, "{}: {step}", self.name);
    }
}

fn times(task: &Value) -> (String, String) {
    (
        task["started_at"].as_str().expect("started_at").to_owned(),
        task["expires_at"].as_str().expect("expires_at").to_owned(),
    )
}

/// A 503 whose body is a JSON error a person can act on.
fn assert_commit_failed(scenario: &str, (status, body): &(u16, Value)) {
    assert_eq!(*status, 503, "{scenario}: {body}");
    let message = body["error"].as_str().unwrap_or_else(|| {
        panic!("{scenario}: the 503 carries a JSON error: {body}");
    });
    assert!(message.contains("disk"), "{scenario}: {message}");
}

/// A full disk: every write fails with `ENOSPC` until space is freed.
fn disk_full() -> InProcess {
    let mut daemon = InProcess::start("disk full");
    daemon.put("before-1");
    daemon.put("before-2");
    assert_eq!(daemon.expected.len(), 2);

    daemon.switch.fail_after(0, FaultOn::Writes, libc::ENOSPC);
    assert_commit_failed(daemon.name, &daemon.put("new"));
    assert_commit_failed(daemon.name, &daemon.put("before-1"));
    assert_eq!(daemon.delete("before-2"), 503);
    daemon.failed_commits += 3;
    // Memory is not ahead of disk: no refresh, no new task, no deletion.
    daemon.assert_serves_expected("while the disk is full");
    assert!(daemon.switch.injected() > 0);

    daemon.switch.heal();
    let (status, body) = daemon.put("after");
    assert_eq!(status, 200, "after space is freed: {body}");
    assert_eq!(daemon.delete("before-2"), 204);
    daemon.put("before-1");
    daemon.assert_serves_expected("after space is freed");
    daemon
}

/// A pipelined burst of changes lands in one group commit, which fails as a
/// whole: every client in it gets a 503 and none of it is served.
fn group_commit_fails_whole() -> InProcess {
    let mut daemon = InProcess::start("group commit");
    daemon.put("kept");
    daemon.switch.fail_once_after(0, FaultOn::Any, libc::EIO);
    let mut stream = UnixStream::connect(&daemon.socket).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut burst = Vec::new();
    for name in ["g1", "g2", "g3"] {
        burst.extend(request_bytes(
            "POST",
            "/v1/tasks",
            Some(&format!(r#"{{"name":"{name}","expire":600}}"#)),
        ));
    }
    burst.extend(request_bytes("DELETE", "/v1/tasks/kept", None));
    stream.write_all(&burst).unwrap();
    for _ in 0..4 {
        let response = read_response(&mut stream).expect("a response for each request");
        assert_commit_failed(daemon.name, &(response.status, response.json()));
    }
    daemon.failed_commits += 1;
    daemon.assert_serves_expected("after the failed group commit");
    daemon.put("g1");
    daemon.assert_serves_expected("after the fault passed");
    daemon
}

/// A fault at each write and sync of one commit in turn, torn writes on
/// every other one. A 200 must be on disk; a 503 must leave the old state or,
/// when only the final sync failed, possibly the new one: the kernel had the
/// bytes and redb cannot take them back. Either way the daemon serves what
/// it reloaded from disk.
fn every_fault_point() -> InProcess {
    /// Far more operations than one small commit makes.
    const MAX_POINTS: u64 = 200;
    let mut daemon = InProcess::start("every fault point");
    daemon.put("anchor");
    let mut made_despite_503 = 0;
    for point in 0..MAX_POINTS {
        let name = format!("p{point}");
        let injected = daemon.switch.injected();
        daemon.switch.set_torn_writes(point % 2 == 0);
        daemon
            .switch
            .fail_once_after(point, FaultOn::Any, libc::EIO);
        let before = daemon.expected.clone();
        let answer = daemon.put(&name);
        let fired = daemon.switch.injected() > injected;
        daemon.switch.heal();
        let served = daemon.served();
        if !fired {
            // Past the last write and sync of a commit: done.
            assert_eq!(answer.0, 200, "fault point {point}: {}", answer.1);
            assert_eq!(served, daemon.expected, "fault point {point}");
            assert!(point >= 2, "a commit is at least a write and a sync");
            println!(
                "a commit made {point} writes and syncs; a fault at each gave a 503, \
                 and {made_despite_503} of those changes were on disk nonetheless"
            );
            return daemon;
        }
        assert_commit_failed(daemon.name, &answer);
        daemon.failed_commits += 1;
        let mut with_new = before;
        if let Some(task) = served.get(&name) {
            with_new.insert(name.clone(), task.clone());
            made_despite_503 += 1;
        }
        assert_eq!(served, with_new, "fault point {point}");
        daemon.expected = served;
    }
    panic!("a commit made more than {MAX_POINTS} writes and syncs");
}

/// A task falls due while the disk is full: it is no longer served, its
/// removal is retried about once a second rather than in a busy loop, and it
/// is committed once space is freed.
fn expiry_on_a_full_disk() -> InProcess {
    /// How long the disk stays full after the task fell due.
    const FULL_FOR: Duration = Duration::from_secs(2);
    /// A retry a second is a handful of failed operations; a busy loop
    /// would be thousands.
    const MAX_FAILURES: u64 = 40;
    let mut daemon = InProcess::start("expiry on a full disk");
    daemon.put("kept");
    let (status, body) = daemon.call("PUT", "/v1/tasks/brief", Some(r#"{"expire":1}"#));
    assert_eq!(status, 200, "{body}");
    let due = humantime::parse_rfc3339(body["expires_at"].as_str().unwrap()).unwrap();

    daemon.switch.fail_after(0, FaultOn::Writes, libc::ENOSPC);
    let injected = daemon.switch.injected();
    // Real time has to pass for a real deadline.
    let wait = due.duration_since(SystemTime::now()).unwrap_or_default() + FULL_FOR;
    std::thread::sleep(wait);
    let failures = daemon.switch.injected() - injected;
    assert!(
        (1..=MAX_FAILURES).contains(&failures),
        "{failures} failed operations in {wait:?}: the expiry is retried, not spun"
    );
    daemon.assert_serves_expected("a due task is not served, written or not");
    daemon.failed_commits += 1;

    let syncs = daemon.switch.syncs();
    daemon.switch.heal();
    let deadline = Instant::now() + WAIT;
    while daemon.switch.syncs() == syncs {
        assert!(Instant::now() < deadline, "the expiry was never committed");
        // Polling a counter: the retry timer is the server's, not ours.
        std::thread::sleep(Duration::from_millis(20));
    }
    daemon.assert_serves_expected("after the expiry was committed");
    daemon
}

/// A disk whose every write fails from the start: the daemon starts (it
/// only reads to start), serves reads, and answers every change with a 503
/// that names the disk, until the disk heals.
fn start_on_a_failing_disk() -> InProcess {
    let switch = FaultSwitch::new();
    switch.fail_after(0, FaultOn::Writes, libc::ENOSPC);
    let mut daemon =
        InProcess::try_start("failing from the start", switch, StoreOptions::default())
            .unwrap_or_else(|e| panic!("a daemon that can read starts: {e}"));
    assert_commit_failed(daemon.name, &daemon.put("refused"));
    daemon.failed_commits += 1;
    daemon.assert_serves_expected("reads are served on a failing disk");
    assert!(daemon.switch.injected() > 0);
    daemon.switch.heal();
    assert_eq!(daemon.put("accepted").0, 200);
    daemon
}

/// The database's disk is full, so checkpoints fail, while the log (written
/// once, in place) still takes writes: changes are acknowledged until the
/// log fills, then refused with a 503 that says why, while reads are still
/// served. Once space is freed the retried checkpoint empties the log and
/// writes are accepted again; nothing acknowledged is lost.
fn log_fills_while_checkpoints_fail() -> InProcess {
    let options = StoreOptions {
        log_size: sprite_tasks::store::MIN_LOG_SIZE,
        ..StoreOptions::default()
    };
    let mut daemon = InProcess::try_start("log fills", FaultSwitch::new(), options)
        .unwrap_or_else(|e| panic!("log fills: {e}"));
    daemon
        .db_switch
        .fail_after(0, FaultOn::Writes, libc::ENOSPC);
    let mut refused = None;
    for i in 0..10_000 {
        let answer = daemon.put(&format!("fill-{i}"));
        if answer.0 != 200 {
            refused = Some(answer);
            break;
        }
    }
    let (status, body) = refused.expect("a 64 KiB log fills within 10,000 changes");
    assert_eq!(status, 503, "{body}");
    let message = body["error"].as_str().unwrap_or_default();
    assert!(
        message.contains("log is full"),
        "the 503 says why: {message}"
    );
    assert!(message.contains("nothing was changed"), "{message}");
    daemon.failed_commits += 1;
    daemon.assert_serves_expected("reads are served while the log is full");
    assert!(
        daemon.db_switch.injected() > 0,
        "checkpoints were attempted"
    );

    daemon.db_switch.heal();
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = daemon.put("after-space-freed");
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(Instant::now() < deadline, "writes never resumed: {body}");
        // Polling: the checkpoint retry timer is the server's, not ours.
        std::thread::sleep(Duration::from_millis(50));
    }
    daemon.assert_serves_expected("after the checkpoint caught up");
    daemon
}

/// A sync that keeps failing until the disk is healed, so the reload after
/// the failed commit fails too and is retried when the next request arrives.
/// The failed commit's bytes reached the file before the sync failed, so
/// after the reopen the task the client was told about with a 503 is on
/// disk. What the daemon serves must then be what is on disk.
fn sync_fails_until_healed() -> InProcess {
    let mut daemon = InProcess::start("sync fails until healed");
    daemon.put("anchor");
    daemon.switch.fail_after(0, FaultOn::Syncs, libc::EIO);
    assert_commit_failed(daemon.name, &daemon.put("ghost"));
    daemon.failed_commits += 1;
    daemon.switch.heal();
    assert_eq!(daemon.put("later").0, 200);
    // Whatever the daemon serves now is what a restart must find.
    daemon.expected = daemon.served();
    daemon
}

#[test]
fn storage_faults_fail_the_commit_never_the_promise() {
    let log = capture_log();
    let full = disk_full();
    let group = group_commit_fails_whole();
    let points = every_fault_point();
    let expiry = expiry_on_a_full_disk();
    let failing = start_on_a_failing_disk();
    let healed = sync_fails_until_healed();
    let filled = log_fills_while_checkpoints_fail();
    let daemons = vec![full, group, points, expiry, failing, healed, filled];

    // Stop every in-process server at once.
    common::signal(std::process::id(), libc::SIGTERM);
    for daemon in daemons {
        let stats = daemon
            .thread
            .join()
            .expect("the server thread does not panic")
            .unwrap_or_else(|e| panic!("{}: {e}", daemon.name));
        assert!(
            stats.failed_commits >= daemon.failed_commits,
            "{}: {stats:?}",
            daemon.name
        );
        assert!(!daemon.socket.exists(), "{}: socket removed", daemon.name);
        let on_disk = read_database(&daemon.db);
        assert_eq!(
            on_disk, daemon.expected,
            "{}: the file on disk",
            daemon.name
        );
    }
    let log = log.lock().unwrap().clone();
    let log = String::from_utf8_lossy(&log);
    assert!(
        log.contains("No space left on device"),
        "an operator sees the errno in the log:\n{log}"
    );
}

/// Every task in the file at `db`, read by a fresh store.
fn read_database(db: &Path) -> Served {
    let mut store = Store::open(db, &StoreOptions::default()).expect("the database reopens");
    let loaded = store.load().expect("the database loads");
    assert!(loaded.quarantined.is_empty(), "{:?}", loaded.quarantined);
    loaded
        .tasks
        .iter()
        .map(|task| {
            (
                task.name.as_str().to_owned(),
                (task.started_at.to_string(), task.expires_at.to_string()),
            )
        })
        .collect()
}

/// Collects the servers' log lines, as an operator would read them.
fn capture_log() -> Arc<Mutex<Vec<u8>>> {
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let buffer = buffer.clone();
        move || LogWriter(buffer.clone())
    };
    tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(false)
        .init();
    buffer
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        if std::env::var_os("SPRITE_TEST_LOG").is_some() {
            eprint!("{}", String::from_utf8_lossy(bytes));
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
