//! Who may release a hold (issue 17), against the real binary with clients
//! running as other uids (`setpriv`, the daemon and the test as root):
//! ownership by uid, root's override, `--shared`, the per-uid quota, and
//! rows from the release before owners.
//!
//! Run as another user, the cross-uid parts are skipped with a printed
//! line; the same-uid flows around them still run and assert.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{Daemon, Dirs, command_as, is_root};
use redb::{Database, TableDefinition};
use serde_json::Value;

/// The store's task table, as laid out on disk (see `src/store/tables.rs`).
const TASKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("tasks");

/// Two ordinary users. No passwd entry is needed: `setpriv` takes numbers.
const ALICE: u32 = 1000;
const BOB: u32 = 1001;

/// Whether the cross-uid parts can run; says so when they cannot.
fn can_switch_uid(test: &str) -> bool {
    if !is_root() {
        println!("{test}: not root, so the parts with other uids are skipped");
    }
    is_root()
}

/// A response as curl saw it.
struct Answer {
    status: u16,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        if self.body.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
        }
    }

    fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }
}

/// One request with real curl, as `uid` (`None`: as this test process).
fn call(daemon: &Daemon, uid: Option<u32>, method: &str, path: &str, body: Option<&str>) -> Answer {
    let mut command = command_as(uid, "curl");
    command
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", "--unix-socket"])
        .arg(&daemon.socket)
        .args(["-X", method])
        .arg(format!("http://sprite{path}"));
    if let Some(body) = body {
        command.args(["-d", body]);
    }
    let output = command.output().expect("setpriv and curl are installed");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    let status = status.trim().parse().unwrap_or_else(|_| {
        panic!(
            "no status from curl as {uid:?}: {stdout:?} {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    Answer {
        status,
        body: body.to_owned(),
    }
}

const HOUR: &str = r#"{"expire":"1h"}"#;

fn create_body(name: &str) -> String {
    serde_json::json!({"name": name, "expire": "1h"}).to_string()
}

fn refused_total(daemon: &Daemon, reason: &str) -> u64 {
    let metrics = call(daemon, None, "GET", "/metrics", None).body;
    let needle = format!("sprite_tasks_refused_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&needle))
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no {needle:?} in /metrics"))
}

#[test]
fn the_creator_owns_its_task_and_another_uid_can_neither_refresh_nor_delete_it() {
    let dirs = Dirs::reachable_by_other_uids();
    let daemon = Daemon::start(&dirs, &[]);
    // Same-uid flows: the creator refreshes and deletes its own task.
    let me = unsafe { libc::geteuid() };
    let created = call(
        &daemon,
        None,
        "POST",
        "/v1/tasks",
        Some(&create_body("mine")),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.json()["owner"], me);
    assert_eq!(
        call(&daemon, None, "PUT", "/v1/tasks/mine", Some(HOUR)).status,
        200
    );
    assert_eq!(
        call(&daemon, None, "DELETE", "/v1/tasks/mine", None).status,
        204
    );
    if !can_switch_uid("owners") {
        return;
    }

    let created = call(
        &daemon,
        Some(ALICE),
        "POST",
        "/v1/tasks",
        Some(&create_body("agent")),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.json()["owner"], ALICE);
    let before = call(&daemon, Some(BOB), "GET", "/v1/tasks/agent", None);
    assert_eq!(before.status, 200, "GET stays open to every uid");

    for (method, body) in [("PUT", Some(r#"{"expire":"5s"}"#)), ("DELETE", None)] {
        let refused = call(&daemon, Some(BOB), method, "/v1/tasks/agent", body);
        assert_eq!(refused.status, 403, "{method}: {}", refused.body);
        let message = refused.error();
        assert!(message.contains("belongs to uid 1000"), "{message}");
        assert!(message.contains("ask its owner, or root"), "{message}");
        assert!(message.contains("--shared"), "{message}");
    }
    // The same name through the collection: a create of a live name is a
    // conflict, a PUT a refresh, so refused too.
    let taken = call(
        &daemon,
        Some(BOB),
        "POST",
        "/v1/tasks",
        Some(&create_body("agent")),
    );
    assert_eq!(taken.status, 409);
    let body = serde_json::json!({"name": "agent", "expire": "5s"}).to_string();
    assert_eq!(
        call(&daemon, Some(BOB), "PUT", "/v1/tasks", Some(&body)).status,
        403
    );

    // Nothing changed: same expiry, same holder, same owner.
    let after = call(&daemon, None, "GET", "/v1/tasks/agent", None);
    assert_eq!(after.json(), before.json());
    assert_eq!(refused_total(&daemon, "not_owner"), 3);
    let line = daemon.wait_for_log("refused a change");
    assert!(
        line.contains("uid=1001") && line.contains("task=agent"),
        "{line}"
    );
    assert!(line.contains("owner=1000"), "{line}");
    assert!(!line.contains("expire"), "the body is never logged: {line}");

    // The owner still refreshes and releases it.
    let refreshed = call(&daemon, Some(ALICE), "PUT", "/v1/tasks/agent", Some(HOUR));
    assert_eq!(refreshed.status, 200);
    assert_eq!(refreshed.json()["owner"], ALICE);
    assert_eq!(
        call(&daemon, Some(ALICE), "DELETE", "/v1/tasks/agent", None).status,
        204
    );
    // Gone, a PUT by the other uid creates it, now its own.
    let recreated = call(&daemon, Some(BOB), "PUT", "/v1/tasks/agent", Some(HOUR));
    assert_eq!(recreated.status, 200);
    assert_eq!(recreated.json()["owner"], BOB);
}

#[test]
fn root_can_refresh_and_release_anyones_hold_and_ownership_survives_restarts() {
    let dirs = Dirs::reachable_by_other_uids();
    let daemon = Daemon::start(&dirs, &[]);
    if !can_switch_uid("root override") {
        // Our own task, across a crash.
        assert_eq!(
            call(&daemon, None, "PUT", "/v1/tasks/mine", Some(HOUR)).status,
            200
        );
        daemon.kill9();
        let daemon = Daemon::start(&dirs, &[]);
        let mine = call(&daemon, None, "GET", "/v1/tasks/mine", None).json();
        assert_eq!(mine["owner"], unsafe { libc::geteuid() });
        return;
    }
    for name in ["a", "b"] {
        let created = call(
            &daemon,
            Some(ALICE),
            "POST",
            "/v1/tasks",
            Some(&create_body(name)),
        );
        assert_eq!(created.status, 201);
    }
    // Root refreshes without taking the task over.
    let refreshed = call(&daemon, None, "PUT", "/v1/tasks/a", Some(HOUR));
    assert_eq!(refreshed.status, 200);
    assert_eq!(refreshed.json()["owner"], ALICE);
    assert_eq!(
        call(&daemon, None, "DELETE", "/v1/tasks/a", None).status,
        204
    );

    // The owner is durable: replayed from the log after kill -9, read from
    // the checkpointed record after a clean stop.
    daemon.kill9();
    let daemon = Daemon::start(&dirs, &[]);
    assert_eq!(
        call(&daemon, None, "GET", "/v1/tasks/b", None).json()["owner"],
        ALICE
    );
    assert_eq!(
        call(&daemon, Some(BOB), "DELETE", "/v1/tasks/b", None).status,
        403
    );
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");
    let daemon = Daemon::start(&dirs, &[]);
    assert_eq!(
        call(&daemon, Some(BOB), "DELETE", "/v1/tasks/b", None).status,
        403
    );
    assert_eq!(
        call(&daemon, None, "DELETE", "/v1/tasks/b", None).status,
        204
    );
}

#[test]
fn shared_restores_the_behaviour_before_owners() {
    let dirs = Dirs::reachable_by_other_uids();
    let daemon = Daemon::start(&dirs, &["--shared"]);
    assert_eq!(
        call(&daemon, None, "PUT", "/v1/tasks/mine", Some(HOUR)).status,
        200
    );
    if !can_switch_uid("--shared") {
        return;
    }
    let created = call(
        &daemon,
        Some(ALICE),
        "POST",
        "/v1/tasks",
        Some(&create_body("agent")),
    );
    assert_eq!(
        created.json()["owner"],
        ALICE,
        "the owner is still recorded"
    );
    let refreshed = call(
        &daemon,
        Some(BOB),
        "PUT",
        "/v1/tasks/agent",
        Some(r#"{"expire":"5m"}"#),
    );
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    assert_eq!(
        call(&daemon, Some(BOB), "DELETE", "/v1/tasks/agent", None).status,
        204
    );
    assert_eq!(
        call(&daemon, Some(BOB), "DELETE", "/v1/tasks/mine", None).status,
        204
    );
    // No per-uid quota either: 150 tasks, past the default of 100 for this
    // --max-tasks.
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &["--shared", "--max-tasks", "150"]);
    for n in 0..150 {
        let body = create_body(&format!("t{n}"));
        assert_eq!(
            call(&daemon, None, "POST", "/v1/tasks", Some(&body)).status,
            201
        );
    }
    assert_eq!(refused_total(&daemon, "uid_quota"), 0);
}

#[test]
fn the_per_uid_quota_refuses_the_noisy_uid_while_others_still_create() {
    let dirs = Dirs::reachable_by_other_uids();
    let daemon = Daemon::start(&dirs, &["--max-tasks-per-uid", "3"]);
    if !can_switch_uid("per-uid quota") {
        // This test's own uid is the noisy one.
        for n in 0..3 {
            let body = create_body(&format!("t{n}"));
            assert_eq!(
                call(&daemon, None, "POST", "/v1/tasks", Some(&body)).status,
                201
            );
        }
        let over = call(&daemon, None, "POST", "/v1/tasks", Some(&create_body("t3")));
        assert_eq!(over.status, 507, "{}", over.body);
        return;
    }
    for n in 0..3 {
        let body = create_body(&format!("noisy-{n}"));
        assert_eq!(
            call(&daemon, Some(ALICE), "POST", "/v1/tasks", Some(&body)).status,
            201
        );
    }
    let over = call(
        &daemon,
        Some(ALICE),
        "POST",
        "/v1/tasks",
        Some(&create_body("noisy-3")),
    );
    assert_eq!(over.status, 507, "{}", over.body);
    let message = over.error();
    assert!(
        message.contains("uid 1000 already holds 3 tasks"),
        "{message}"
    );
    assert!(message.contains("--max-tasks-per-uid"), "{message}");
    let over = call(&daemon, Some(ALICE), "PUT", "/v1/tasks/noisy-3", Some(HOUR));
    assert_eq!(over.status, 507);
    // Its own holds still refresh; another uid and root still create.
    assert_eq!(
        call(&daemon, Some(ALICE), "PUT", "/v1/tasks/noisy-0", Some(HOUR)).status,
        200
    );
    let other = call(
        &daemon,
        Some(BOB),
        "POST",
        "/v1/tasks",
        Some(&create_body("quiet")),
    );
    assert_eq!(other.status, 201);
    for n in 0..4 {
        let body = create_body(&format!("root-{n}"));
        assert_eq!(
            call(&daemon, None, "POST", "/v1/tasks", Some(&body)).status,
            201
        );
    }
    assert_eq!(refused_total(&daemon, "uid_quota"), 2);
    // Releasing one of its own makes room again.
    assert_eq!(
        call(&daemon, Some(ALICE), "DELETE", "/v1/tasks/noisy-1", None).status,
        204
    );
    let again = call(
        &daemon,
        Some(ALICE),
        "POST",
        "/v1/tasks",
        Some(&create_body("noisy-3")),
    );
    assert_eq!(again.status, 201);
}

/// A version-2 record (the release before owners, commit 7ca5ad3) as
/// `src/record.rs` documents it: a holder with only a uid, and a reason.
fn record_v2(name: &str, started: u64, expires: u64, holder_uid: u32, reason: &str) -> Vec<u8> {
    const HOLDER_UID: u8 = 1 << 1;
    const REASON: u8 = 1 << 5;
    const HOLDER: u8 = 1 << 7;
    let mut body = vec![2u8];
    body.extend_from_slice(&started.to_le_bytes());
    body.extend_from_slice(&expires.to_le_bytes());
    body.push(HOLDER | HOLDER_UID | REASON);
    body.extend_from_slice(&holder_uid.to_le_bytes());
    body.extend_from_slice(&(reason.len() as u16).to_le_bytes());
    body.extend_from_slice(reason.as_bytes());
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&body[..1]);
    hasher.update(name.as_bytes());
    hasher.update(&body[1..]);
    body.extend_from_slice(&hasher.finalize().to_le_bytes());
    body
}

#[test]
fn rows_from_the_release_before_owners_load_as_roots() {
    let dirs = Dirs::reachable_by_other_uids();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let hour = 3600 * 1_000_000_000;
    {
        let db = Database::create(dirs.db()).unwrap();
        let write = db.begin_write().unwrap();
        {
            let mut table = write.open_table(TASKS).unwrap();
            let record = record_v2("legacy", now, now + hour, ALICE, "old build");
            table
                .insert(b"legacy".as_slice(), record.as_slice())
                .unwrap();
        }
        write.commit().unwrap();
    }
    let daemon = Daemon::start(&dirs, &[]);
    let legacy = call(&daemon, None, "GET", "/v1/tasks/legacy", None);
    assert_eq!(legacy.status, 200, "{}", daemon.log_text());
    let task = legacy.json();
    assert_eq!(task["owner"], 0, "{task}");
    assert_eq!(task["reason"], "old build");
    assert_eq!(task["holder"]["uid"], ALICE, "the holder is kept as it was");
    if can_switch_uid("legacy rows") {
        // Even the uid that last held it cannot tell it created it.
        let refused = call(&daemon, Some(ALICE), "DELETE", "/v1/tasks/legacy", None);
        assert_eq!(refused.status, 403);
        assert!(
            refused.error().contains("belongs to uid 0"),
            "{}",
            refused.body
        );
    }
    let ours = call(&daemon, None, "DELETE", "/v1/tasks/legacy", None);
    if is_root() {
        assert_eq!(ours.status, 204);
    } else {
        assert_eq!(ours.status, 403, "only root may release a legacy row");
        assert!(ours.error().contains("belongs to uid 0"), "{}", ours.body);
    }
}
