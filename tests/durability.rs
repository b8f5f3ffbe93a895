//! Durability at the edges, against the real binary and a real database
//! file: damaged records, a file that is not a database, tasks that fell due
//! while the daemon was down, SIGTERM under load. And the clock rule with the
//! task state machine, with an injected clock.

mod common;

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant, SystemTime};

use common::{Daemon, Dirs, WAIT, request_bytes};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde_json::Value;
use sprite_tasks::server::{Config, Server};
use sprite_tasks::store::{Store, StoreOptions};
use sprite_tasks::tasks::{Batch, Change, Command, Rebased, Task, TaskName, Tasks};
use sprite_tasks::testing::faulty::{self, FaultSwitch};
use sprite_tasks::testing::tables;
use sprite_tasks::time::{ClockStep, ReactorClock, Timestamp};

/// The store's tables, as laid out on disk (see `src/store/tables.rs`):
/// the per-name table of the versions before chunks (which a load moves
/// into chunks), and the quarantine.
const TASKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("tasks");
const QUARANTINE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("quarantine");

const SECOND: u64 = 1_000_000_000;

/// Name to (started_at, expires_at), as the API shows them.
type Served = BTreeMap<String, (String, String)>;

fn times(task: &Value) -> (String, String) {
    (
        task["started_at"].as_str().expect("started_at").to_owned(),
        task["expires_at"].as_str().expect("expires_at").to_owned(),
    )
}

fn served(daemon: &Daemon) -> Served {
    let (status, body) = daemon.call("GET", "/v1/tasks", None);
    assert_eq!(status, 200, "{body}");
    body["tasks"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|task| (task["name"].as_str().unwrap().to_owned(), times(task)))
        .collect()
}

fn put(daemon: &Daemon, name: &str, expire: &str) -> (String, String) {
    let (status, body) = daemon.call(
        "PUT",
        &format!("/v1/tasks/{name}"),
        Some(&format!(r#"{{"expire":{expire}}}"#)),
    );
    assert_eq!(status, 200, "{body}");
    times(&body)
}

fn rows(db: &Database, table: TableDefinition<&[u8], &[u8]>) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let txn = db.begin_read().unwrap();
    let table = txn.open_table(table).unwrap();
    table
        .iter()
        .unwrap()
        .map(|row| {
            let (key, value) = row.unwrap();
            (key.value().to_vec(), value.value().to_vec())
        })
        .collect()
}

#[test]
fn damaged_records_are_moved_aside_loudly_and_the_rest_is_served() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &[]);
    for name in ["good-1", "flipped", "good-2"] {
        put(&daemon, name, "\"1h\"");
    }
    let before = served(&daemon);
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");

    // Damage two rows behind the daemon's back: a flipped bit in a
    // record in its chunk, and a row that is no record at all (in the
    // per-name table of an earlier version, which a load still reads).
    let (flipped, junk) = {
        let db = Database::create(dirs.db()).unwrap();
        let flipped = tables::damage_record(&db, "flipped", |record| record[5] ^= 0x08);
        let junk = b"\x07not a record".to_vec();
        let txn = db.begin_write().unwrap();
        {
            let mut tasks = txn.open_table(TASKS).unwrap();
            tasks.insert(b"junk".as_slice(), junk.as_slice()).unwrap();
        }
        txn.commit().unwrap();
        (flipped, junk)
    };

    let daemon = Daemon::start(&dirs, &[]);
    let started = daemon.wait_for_log("sprite-tasksd listening");
    // The two rows, and the chunk that held the flipped one, kept whole.
    assert!(started.contains("quarantined=3"), "{started}");
    for key in ["key=flipped", "key=junk", "key=~tasks."] {
        let line = daemon.wait_for_log(key);
        assert!(
            line.contains("ERROR") && line.contains("quarantine"),
            "loud: {line}"
        );
    }
    let mut expected = before.clone();
    expected.remove("flipped");
    assert_eq!(served(&daemon), expected, "the rest is served unchanged");
    assert_eq!(daemon.call("GET", "/v1/tasks/flipped", None).0, 404);
    // The name is free again: a client may take it.
    put(&daemon, "flipped", "60");
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");

    // Moved aside byte for byte, not deleted; not reported twice.
    let db = Database::create(dirs.db()).unwrap();
    let quarantine = rows(&db, QUARANTINE);
    assert_eq!(quarantine.len(), 3);
    assert_eq!(quarantine[b"flipped".as_slice()], flipped);
    assert_eq!(quarantine[b"junk".as_slice()], junk);
    let (_, chunk) = quarantine
        .iter()
        .find(|(key, _)| key.starts_with(b"~tasks."))
        .expect("the chunk");
    assert!(
        chunk
            .windows(flipped.len())
            .any(|w| w == flipped.as_slice()),
        "the chunk as found, with the flipped record in it"
    );
    drop(db);
    let daemon = Daemon::start(&dirs, &[]);
    let started = daemon.wait_for_log("sprite-tasksd listening");
    assert!(started.contains("quarantined=0"), "{started}");
}

#[test]
fn a_file_that_is_not_a_database_is_refused_and_left_byte_identical() {
    let dirs = Dirs::new();
    let content: Vec<u8> = (0..64 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(dirs.db(), &content).unwrap();
    let (mut child, log) = common::spawn(&dirs.socket(), &dirs.db(), &[]);
    let status = common::wait_with_timeout(&mut child, WAIT).expect("the daemon exits");
    // The reader thread ends at the daemon's EOF, closing the channel.
    let mut lines = Vec::new();
    while let Ok(line) = log.recv_timeout(WAIT) {
        lines.push(line);
    }
    let log = lines.join("\n");
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("is not a sprite-tasks database") && log.contains("left untouched"),
        "a clear message: {log}"
    );
    assert_eq!(std::fs::read(dirs.db()).unwrap(), content, "byte-identical");
    assert!(
        !dirs.socket().exists(),
        "no socket for a daemon that refused"
    );
}

#[test]
fn tasks_due_during_downtime_expire_at_start_and_the_others_are_untouched() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &[]);
    let short_1 = put(&daemon, "short-1", "1");
    let short_2 = put(&daemon, "short-2", "\"2s\"");
    put(&daemon, "long-1", "\"1h\"");
    put(&daemon, "long-2", "600");
    put(&daemon, "long-2", "\"30m\"");
    let mut kept = served(&daemon);
    kept.remove("short-1");
    kept.remove("short-2");
    daemon.kill9();

    // Stay down until both short tasks are due: real time must pass here.
    for (_, expires_at) in [short_1, short_2] {
        let due = humantime::parse_rfc3339(&expires_at).unwrap();
        if let Ok(left) = due.duration_since(SystemTime::now()) {
            std::thread::sleep(left + Duration::from_millis(10));
        }
    }

    let daemon = Daemon::start(&dirs, &[]);
    let started = daemon.wait_for_log("sprite-tasksd listening");
    assert!(started.contains("expired_while_down=2"), "{started}");
    assert_eq!(served(&daemon), kept, "identical started_at and expires_at");
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");

    // The expiry was durable, not just hidden.
    let db = Database::create(dirs.db()).unwrap();
    let names: Vec<Vec<u8>> = tables::task_rows(&db)
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(names, [b"long-1".to_vec(), b"long-2".to_vec()]);
}

/// More tasks due at a restart than one commit can hold: the daemon used
/// to plan every expiry into its first commit, a frame larger than half the
/// log, and refused to start. Now the first commit removes one slice and
/// the reactor's expiry takes the rest in the next turns.
#[test]
fn a_restart_with_more_due_than_one_commit_holds_starts_and_expires_them_all() {
    const COUNT: usize = 4000;
    // 4000 expiries (~2 MB of frame) are past half of a 2 MiB log; a slice
    // of 1024 is not.
    let args = [
        "--log-size",
        "2MiB",
        "--max-tasks",
        "10000",
        "--max-tasks-per-uid",
        "10000",
    ];
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &args);
    let mut stream = daemon.connect();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut last_expiry = String::new();
    for window in (0..COUNT).collect::<Vec<_>>().chunks(200) {
        let bytes: Vec<u8> = window
            .iter()
            .flat_map(|i| {
                request_bytes(
                    "PUT",
                    &format!("/v1/tasks/due-{i}"),
                    Some(r#"{"expire":"1s"}"#),
                )
            })
            .collect();
        stream.write_all(&bytes).unwrap();
        for _ in window {
            let response = common::read_response(&mut reader).expect("an answer");
            assert_eq!(response.status, 200);
            last_expiry = response.json()["expires_at"].as_str().unwrap().to_owned();
        }
    }
    daemon.kill9();
    // Stay down until all are due: real time must pass here.
    let due = humantime::parse_rfc3339(&last_expiry).unwrap();
    if let Ok(left) = due.duration_since(SystemTime::now()) {
        std::thread::sleep(left + Duration::from_millis(10));
    }

    let daemon = Daemon::start(&dirs, &args);
    let started = daemon.wait_for_log("sprite-tasksd listening");
    assert!(started.contains("expired_while_down=1024"), "{started}");
    let listed = common::eventually(|| served(&daemon), |served| served.is_empty());
    assert!(listed.is_empty(), "{} still listed", listed.len());
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");
    let db = Database::create(dirs.db()).unwrap();
    assert!(tables::task_rows(&db).is_empty(), "every expiry is durable");
}

/// Starts an in-process server on a database holding `tasks` and returns
/// how many syncs its start-up made, and what is on disk afterwards.
fn start_up_syncs(tasks: &[Task]) -> (u64, Vec<Task>) {
    let socket_dir = tempfile::Builder::new().prefix("sd").tempdir().unwrap();
    let db_dir = tempfile::Builder::new()
        .prefix("db")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let db = db_dir.path().join("tasks.redb");
    {
        let mut store = Store::open(&db, &StoreOptions::default()).unwrap();
        store.load().unwrap();
        let changes: Vec<Change> = tasks
            .iter()
            .map(|task| Change::Put {
                task: task.clone(),
                created: true,
            })
            .collect();
        store.commit(&changes).unwrap();
    }
    let switch = FaultSwitch::new();
    let store = faulty::store(&db, &switch, &StoreOptions::default()).unwrap();
    let before = switch.syncs();
    let config = Config {
        socket: socket_dir.path().join("api.sock"),
        ..Config::default()
    };
    let server = Server::new(config, store).unwrap();
    let syncs = switch.syncs() - before;
    drop(server);
    let mut store = Store::open(&db, &StoreOptions::default()).unwrap();
    (syncs, store.load().unwrap().tasks)
}

#[test]
fn start_up_expires_everything_due_in_one_commit() {
    let now = Timestamp::from_system_time(SystemTime::now());
    let task = |name: &str, expires_at: Timestamp| {
        Task::new(
            TaskName::parse(name).unwrap(),
            Timestamp::from_nanos(now.as_nanos() - 7200 * SECOND),
            expires_at,
        )
    };
    let past = Timestamp::from_nanos(now.as_nanos() - 60 * SECOND);
    let live = task("live", now.checked_add(Duration::from_secs(3600)).unwrap());
    let mut with_due: Vec<Task> = (0..50).map(|i| task(&format!("due-{i}"), past)).collect();
    with_due.push(live.clone());

    let (baseline, left) = start_up_syncs(std::slice::from_ref(&live));
    assert_eq!(left, std::slice::from_ref(&live));
    let (syncs, left) = start_up_syncs(&with_due);
    assert_eq!(left, [live], "the due tasks are gone from disk");
    assert_eq!(syncs, baseline + 1, "50 expiries cost one commit");
}

/// Reads one response; `Ok(None)` if the daemon closed the connection before
/// a byte of it, `Err` with what arrived if it closed part way (a half
/// response).
fn read_whole(stream: &mut BufReader<UnixStream>) -> Result<Option<(u16, Value)>, String> {
    let mut head = String::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        match stream.read_line(&mut line) {
            Ok(0) if head.is_empty() => return Ok(None),
            Ok(0) => return Err(format!("half a head: {head:?}")),
            Ok(_) => {}
            Err(e) if head.is_empty() && e.kind() == io::ErrorKind::ConnectionReset => {
                return Ok(None);
            }
            Err(e) => return Err(format!("{e} after {head:?}")),
        }
        head.push_str(&line);
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().map_err(|_| head.clone())?;
        }
    }
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    let mut body = vec![0u8; length];
    stream
        .read_exact(&mut body)
        .map_err(|e| format!("half a body ({e}) after {head:?}"))?;
    let json = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).map_err(|e| format!("{e}: {body:?}"))?
    };
    Ok(Some((status, json)))
}

/// What one client was told, per name: `Some` present with these times,
/// `None` deleted. Names with an unanswered request are left out.
type Told = BTreeMap<String, Option<(String, String)>>;

/// Refreshes and deletes its own names on one keep-alive connection until
/// the daemon stops answering. Returns what it was told.
fn busy_client(socket: &std::path::Path, id: usize) -> Result<Told, String> {
    let mut told = Told::new();
    let Ok(stream) = UnixStream::connect(socket) else {
        return Ok(told);
    };
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut stream = BufReader::new(stream);
    let mut step = 0usize;
    loop {
        step += 1;
        let name = format!("c{id}-{}", step % 5);
        let delete = step % 7 == 3 && matches!(told.get(&name), Some(Some(_)));
        let bytes = if delete {
            request_bytes("DELETE", &format!("/v1/tasks/{name}"), None)
        } else {
            request_bytes(
                "PUT",
                &format!("/v1/tasks/{name}"),
                Some(r#"{"expire":"1h"}"#),
            )
        };
        if stream.get_mut().write_all(&bytes).is_err() {
            told.remove(&name);
            return Ok(told);
        }
        match read_whole(&mut stream)? {
            None => {
                told.remove(&name);
                return Ok(told);
            }
            Some((204, _)) if delete => {
                told.insert(name, None);
            }
            Some((200, body)) if !delete => {
                told.insert(name, Some(times(&body)));
            }
            Some((status, body)) => {
                // A refusal at shutdown changes nothing, but must be whole.
                if status != 503 {
                    return Err(format!("{name}: unexpected {status} {body}"));
                }
            }
        }
    }
}

#[test]
fn sigterm_under_load_keeps_every_answer_and_removes_the_socket() {
    const CLIENTS: usize = 6;
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &["--shutdown-grace", "2s"]);
    let socket = daemon.socket.clone();
    let (status, log, results) = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|id| {
                let socket = socket.clone();
                scope.spawn(move || busy_client(&socket, id))
            })
            .collect();
        // A client caught mid-request: half a request is never answered
        // and never half-answered.
        let mut partial = UnixStream::connect(&socket).unwrap();
        partial.set_read_timeout(Some(WAIT)).unwrap();
        let whole = request_bytes("PUT", "/v1/tasks/partial", Some(r#"{"expire":"1h"}"#));
        partial.write_all(&whole[..whole.len() - 5]).unwrap();
        // Let the load build up; the exact moment of the signal is the point.
        std::thread::sleep(Duration::from_millis(200));
        let (status, log) = daemon.terminate();
        let mut rest = Vec::new();
        let _ = partial.read_to_end(&mut rest);
        assert!(
            rest.is_empty() || rest.starts_with(b"HTTP/1.1 "),
            "the partial request got {:?}",
            String::from_utf8_lossy(&rest)
        );
        let results: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
        (status, log, results)
    });
    assert!(status.success(), "{log}");
    assert!(!dirs.socket().exists(), "the socket file is removed");
    let mut told = Told::new();
    for result in results {
        told.extend(result.unwrap_or_else(|e| panic!("a client got a half response: {e}")));
    }
    assert!(told.len() >= CLIENTS, "the clients ran: {told:?}");

    let daemon = Daemon::start(&dirs, &[]);
    let on_disk = served(&daemon);
    for (name, state) in &told {
        assert_eq!(on_disk.get(name), state.as_ref(), "{name}");
    }
    assert!(!on_disk.contains_key("partial"));
}

/// The clock rule of `time::ReactorClock` driving the state machine as the
/// reactor does: a wall clock stepped back moves every hold with it (each
/// keeps its remaining time, later timestamps are the wall clock's), one
/// stepped forward expires what is due at once, and a restart after a step
/// back while down moves the holds by what it can see and bounds the rest.
#[test]
fn clock_steps_neither_stretch_nor_skip_a_hold() {
    let name = |n: &str| TaskName::parse(n).unwrap();
    let upsert = |tasks: &mut Tasks, n: &str, secs: u64, now: Timestamp| {
        let mut batch = Batch::new();
        tasks
            .plan(
                &mut batch,
                Command::Upsert {
                    name: name(n),
                    expire: Duration::from_secs(secs),
                    claim: Default::default(),
                    caller: None,
                },
                now,
            )
            .unwrap();
        tasks.apply(batch);
    };
    let expire = |tasks: &mut Tasks, now: Timestamp| {
        let mut batch = Batch::new();
        let due = tasks.expire_due(&mut batch, now);
        tasks.apply(batch);
        due
    };
    let wall = |secs: u64| Timestamp::from_nanos(secs * SECOND);
    let mono = Instant::now();
    let at = |secs: u64| mono + Duration::from_secs(secs);
    let mut clock = ReactorClock::new(wall(100_000), mono);
    let mut tasks = Tasks::new(100);

    // A 60 s hold; then the wall clock is stepped back an hour.
    upsert(&mut tasks, "held", 60, clock.last());
    let reading = clock.observe(wall(100_000 - 3600 + 30), at(30));
    let Some(ClockStep::Backward(behind)) = reading.step else {
        panic!("{reading:?}")
    };
    assert_eq!(behind, Duration::from_secs(3600));
    // Until the holds move, the old timeline runs on: nothing stretched.
    assert_eq!(reading.now, wall(100_030));
    let mut batch = Batch::new();
    let after = reading.now.saturating_sub(behind);
    tasks.plan_step_back(&mut batch, behind, after);
    tasks.apply(batch);
    clock.follow_back(behind);
    assert_eq!(clock.last(), wall(100_000 - 3600 + 30));
    // 60 monotonic seconds after the hold began it lapses, by the wall
    // clock that now reads an hour earlier.
    let reading = clock.observe(wall(100_000 - 3600 + 59), at(59));
    assert_eq!(reading.step, None);
    assert!(tasks.get(&name("held"), reading.now).is_some());
    let reading = clock.observe(wall(100_000 - 3600 + 60), at(60));
    assert_eq!(reading.now, wall(96_460));
    assert!(tasks.get(&name("held"), reading.now).is_none());
    assert_eq!(expire(&mut tasks, reading.now), 1);
    assert!(tasks.is_empty());

    // Timestamps handed out after the step are the wall clock's.
    let now = reading.now;
    upsert(&mut tasks, "after-step", 600, now);
    let task = tasks.get(&name("after-step"), now).unwrap().clone();
    assert_eq!(task.started_at, wall(96_460));

    // A forward step (a VM resumed after 20 minutes, one monotonic second):
    // the 10-minute hold is due at once, and nothing else is.
    upsert(&mut tasks, "long", 3600, now);
    let reading = clock.observe(wall(96_460 + 1200), at(61));
    assert!(matches!(reading.step, Some(ClockStep::Forward(_))));
    let now = reading.now;
    assert_eq!(now, wall(97_660));
    assert_eq!(tasks.next_deadline(), Some(task.expires_at));
    assert_eq!(expire(&mut tasks, now), 1);
    assert!(tasks.get(&name("long"), now).is_some());

    // A restart with the clock as it was: the same absolute deadlines.
    let survivors: Vec<Task> = tasks.live(now).cloned().collect();
    let mut restarted = Tasks::new(100);
    restarted.load(survivors.clone());
    let max_expire = Duration::from_secs(3600);
    let mut batch = Batch::new();
    assert_eq!(ClockStep::back_while_down(Some(now), wall(97_700)), None);
    let planned = restarted.plan_load(&mut batch, wall(97_700), max_expire, None, usize::MAX);
    assert_eq!(planned, Rebased::default());
    assert!(batch.is_empty());

    // A restart after the clock was set back three hours while the daemon
    // was down: the holds move back by what the last commit shows.
    let restart_at = wall(97_700 - 3 * 3600);
    let behind = ClockStep::back_while_down(Some(now), restart_at).expect("a step back is seen");
    let mut batch = Batch::new();
    restarted.plan_load(&mut batch, restart_at, max_expire, Some(behind), usize::MAX);
    restarted.apply(batch);
    let long = restarted.get(&name("long"), restart_at).unwrap();
    // It had 2400 s left at the last commit, and has them still: the
    // downtime (40 s) is the stretch, not the three hours.
    assert_eq!(
        long.expires_at.saturating_since(restart_at),
        Duration::from_secs(2400)
    );

    // Without a commit to tell (no history), the bound does: no hold lasts
    // more than the maximum expiry from the restart.
    let mut blind = Tasks::new(100);
    blind.load(survivors);
    let mut batch = Batch::new();
    let planned = blind.plan_load(&mut batch, restart_at, max_expire, None, usize::MAX);
    assert_eq!(planned.clamped, [name("long")]);
    blind.apply(batch);
    assert_eq!(blind.next_deadline(), restart_at.checked_add(max_expire));
}

/// A database written by the release before the write-ahead log (commit
/// 80fdb50: redb only, no `meta` table, no log file) opens and carries on
/// with nothing lost: its rows and its event history, with their sequence
/// numbers, then new changes numbered after them, across a restart.
#[test]
fn a_database_from_the_release_before_the_log_opens_with_nothing_lost() {
    const FIXTURE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/redb-only-80fdb50.redb"
    );
    let dirs = Dirs::new();
    std::fs::copy(FIXTURE, dirs.db()).unwrap();

    // Exactly what that release wrote, read through today's store.
    {
        let mut store = Store::open(&dirs.db(), &StoreOptions::default()).unwrap();
        let loaded = store.load().unwrap();
        assert!(loaded.quarantined.is_empty(), "{:?}", loaded.quarantined);
        assert_eq!(loaded.replayed, 0);
        let rows: Vec<(String, String, String)> = loaded
            .tasks
            .iter()
            .map(|t| {
                (
                    t.name.to_string(),
                    t.started_at.to_string(),
                    t.expires_at.to_string(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                (
                    "agent-1".to_string(),
                    "2026-11-29T13:18:03.178508041Z".to_string(),
                    "2026-11-29T14:17:03.178508041Z".to_string()
                ),
                (
                    "held-long".to_string(),
                    "2026-11-29T13:18:03.141667023Z".to_string(),
                    "2026-11-29T14:18:03.141667023Z".to_string()
                ),
            ]
        );
        // Version-1 records: no holder, reason or binding, owned by root.
        assert!(
            loaded
                .tasks
                .iter()
                .all(|t| t.holder.is_none() && t.reason.is_none() && t.binding.is_none())
        );
        assert!(loaded.tasks.iter().all(|t| t.owner == Some(0)));
        let events: Vec<(u64, String)> = loaded
            .events
            .iter()
            .map(|e| (e.seq, e.kind.to_string()))
            .collect();
        let kinds = ["created", "held", "created", "deleted", "created"];
        let expected: Vec<(u64, String)> = (1..).zip(kinds.map(String::from)).collect();
        assert_eq!(events, expected);
    }
    assert!(
        !std::fs::read_dir(dirs.db().parent().unwrap())
            .unwrap()
            .any(|e| e.unwrap().file_name().to_string_lossy().contains(".new-"))
    );

    // The real daemon on it: the history replays with the same numbers,
    // and what comes next is numbered after it, across a restart.
    let daemon = Daemon::start(&dirs, &[]);
    let (status, _) = daemon.call("PUT", "/v1/tasks/after-upgrade", Some(r#"{"expire":"1h"}"#));
    assert_eq!(status, 200);
    daemon.kill9();
    let daemon = Daemon::start(&dirs, &[]);
    let (status, body) = daemon.call("GET", "/v1/tasks/after-upgrade", None);
    assert_eq!(status, 200, "kept across kill -9: {body}");
    let seqs = event_seqs(&daemon, "after-upgrade");
    assert_eq!(&seqs[..5], &[1, 2, 3, 4, 5], "{seqs:?}");
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");
}

/// The sequence numbers of the retained events, replayed from 0, through
/// the deletion of `last` (made after subscribing, so the replay has ended
/// when it arrives).
fn event_seqs(daemon: &Daemon, last: &str) -> Vec<u64> {
    let mut stream = daemon.connect();
    stream
        .write_all(b"GET /v1/events?since=0 HTTP/1.0\r\nHost: sprite\r\n\r\n")
        .unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    // The head, up to the blank line.
    while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
        line.clear();
    }
    assert_eq!(
        daemon.status("DELETE", &format!("/v1/tasks/{last}"), None),
        204
    );
    let mut seqs = Vec::new();
    loop {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "the stream ended early"
        );
        let Ok(event) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        seqs.extend(event["seq"].as_u64());
        if event["event"] == "deleted" && event["task"] == last {
            return seqs;
        }
    }
}
