//! Start-up of the real `sprite-tasksd` over a large state: 100,000 live
//! tasks checkpointed in redb and 100,000 log frames after them to replay
//! (issue 11's target: under 300 ms from spawn to accepting). `--holds N`
//! adds a usage history of N ended holds, which a restart reads too (a
//! full one is `--usage-max-holds`' default, 50,000).
//!
//! `cargo bench --bench startup [-- --tasks N --frames N --holds N --runs N]`. The
//! state is built once through the library's own store on `/dev/shm`
//! (where a sync costs nothing), copied to the build's disk, and restored
//! from that copy before each start, so every start replays all the
//! frames. Each start is timed from spawn to the daemon's readiness
//! notification (`READY=1` on `NOTIFY_SOCKET`, sent once the socket
//! accepts), waited for in a blocking receive; the daemon is then killed
//! with SIGKILL (a clean stop would checkpoint). Prints the runs and their
//! median.
//!
//! `--spin` times to the first accepted connection instead, trying to
//! connect in a loop, as the bench did before recovery used two threads:
//! the loop takes one of this machine's two cores from them, some 60 ms
//! of a start (197 ms against 261, one sitting).
//!
//! `SPRITE_STARTUP_KEEP=DIR` also leaves a copy of the state in DIR, to
//! profile a start by hand.
//!
//! Run without `--bench` (as `cargo test --all-targets` does) it is a smoke
//! test: a small state, one start, no timing claim.

use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use sprite_tasks::events::{EndedHold, Event, EventKind, EventLines};
use sprite_tasks::store::{Store, StoreOptions};
use sprite_tasks::tasks::{Change, Task, TaskName};
use sprite_tasks::time::Timestamp;

const DAEMON: &str = env!("CARGO_BIN_EXE_sprite-tasksd");

/// How long one start may take before the bench gives up.
const START_LIMIT: Duration = Duration::from_secs(30);

/// The default log: 100,000 one-task frames of about 80 bytes fit in it.
const LOG_SIZE: u64 = sprite_tasks::store::DEFAULT_LOG_SIZE;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bench = args.iter().any(|a| a == "--bench");
    let spin = args.iter().any(|a| a == "--spin");
    let number = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (tasks, frames, holds, runs) = if bench {
        (
            number("--tasks", 100_000),
            number("--frames", 100_000),
            number("--holds", 0),
            number("--runs", 5),
        )
    } else {
        (100, 100, 100, 1)
    };
    let build = tempfile::Builder::new()
        .prefix("startup-build")
        .tempdir_in(if Path::new("/dev/shm").is_dir() {
            "/dev/shm"
        } else {
            "/tmp"
        })
        .expect("a build directory");
    let built = Instant::now();
    build_state(&build.path().join("tasks.redb"), tasks, frames, holds);
    println!(
        "built {holds} ended holds, {tasks} checkpointed tasks and {frames} log frames in {:.1} s",
        built.elapsed().as_secs_f64()
    );
    let pristine = tempfile::Builder::new()
        .prefix("startup")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("a directory on the build's disk");
    let run_dir = tempfile::Builder::new()
        .prefix("startup-run")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("a directory on the build's disk");
    for name in ["tasks.redb", "tasks.redb.wal"] {
        std::fs::copy(build.path().join(name), pristine.path().join(name)).expect("copy");
    }
    drop(build);
    if let Ok(keep) = std::env::var("SPRITE_STARTUP_KEEP") {
        // A copy of the state to profile a start by hand.
        for name in ["tasks.redb", "tasks.redb.wal"] {
            std::fs::copy(pristine.path().join(name), Path::new(&keep).join(name)).expect("copy");
        }
    }
    let socket_dir = tempfile::Builder::new()
        .prefix("su")
        .tempdir()
        .expect("socket dir");
    let socket = socket_dir.path().join("api.sock");
    let mut times = Vec::new();
    for run in 0..runs {
        for name in ["tasks.redb", "tasks.redb.wal"] {
            std::fs::copy(pristine.path().join(name), run_dir.path().join(name)).expect("copy");
        }
        let took = start_once(
            &socket,
            &run_dir.path().join("tasks.redb"),
            tasks + frames,
            spin,
        );
        println!("start {}: {:.1} ms", run + 1, took.as_secs_f64() * 1e3);
        times.push(took);
    }
    times.sort();
    let median = times[times.len() / 2];
    println!(
        "start-up with {tasks} live tasks, {frames} frames to replay and {holds} ended holds: median {:.1} ms over {runs} runs (target < 300 ms)",
        median.as_secs_f64() * 1e3
    );
}

/// `holds` ended holds (a queue worker's, one a second) and `tasks` live
/// tasks committed and checkpointed, then `frames` one-task frames
/// (creates of further tasks) left in the log.
fn build_state(db: &Path, tasks: usize, frames: usize, holds: usize) {
    let options = StoreOptions {
        log_size: LOG_SIZE,
        checkpoint_changes: usize::MAX,
        checkpoint_interval: Duration::from_secs(3600),
        background: false,
        ..StoreOptions::default()
    };
    let mut store = Store::open(db, &options).expect("a store");
    store.load().expect("a new store loads");
    let now = Timestamp::from_system_time(SystemTime::now());
    let expires = now
        .checked_add(Duration::from_secs(3600))
        .expect("a deadline");
    let task = |i: usize| Change::Put {
        task: Task::new(
            TaskName::parse(&format!("task-{i:06}")).expect("a valid name"),
            now,
            expires,
        ),
        created: true,
    };
    let none = std::sync::Arc::new(EventLines::default());
    let command: std::sync::Arc<str> = std::sync::Arc::from("python3 worker.py --queue jobs");
    let ended = |i: usize| {
        let ended_at = now.saturating_sub(Duration::from_secs((holds - i) as u64));
        Event {
            seq: i as u64 + 1,
            at: ended_at,
            kind: EventKind::Deleted,
            task: Some(TaskName::parse(&format!("job-{i:08}")).expect("a valid name")),
            expires_at: None,
            step_ns: None,
            reason: None,
            pid: None,
            ended: Some(EndedHold {
                started_at: ended_at.saturating_sub(Duration::from_millis(800)),
                ended_at,
                uid: Some(1000),
                command: Some(std::sync::Arc::clone(&command)),
                parent_command: Some(std::sync::Arc::from("bash ./run-worker.sh")),
            }),
            limit: None,
        }
    };
    for chunk in (0..holds).collect::<Vec<_>>().chunks(10_000) {
        let events: Vec<Event> = chunk.iter().map(|&i| ended(i)).collect();
        // The event history keeps its default 10,000; the usage history all.
        let last = chunk.last().map_or(0, |&i| i as u64 + 1);
        let keep_from = last.saturating_sub(sprite_tasks::events::DEFAULT_RETENTION as u64);
        let lines = std::sync::Arc::new(EventLines::new(&events));
        store
            .commit_batch(&[], &lines, keep_from, 0)
            .expect("a commit");
        store.checkpoint_now().expect("a checkpoint");
    }
    for chunk in (0..tasks).collect::<Vec<_>>().chunks(10_000) {
        let changes: Vec<Change> = chunk.iter().map(|&i| task(i)).collect();
        store.commit_batch(&changes, &none, 0, 0).expect("a commit");
        store.checkpoint_now().expect("a checkpoint");
    }
    for i in tasks..tasks + frames {
        store
            .commit_batch(&[task(i)], &none, 0, 0)
            .expect("a commit");
    }
}

/// Spawns the daemon, waits for it to say it is ready (or, with `spin`,
/// for its socket to accept), checks it serves `expected` tasks, kills it;
/// returns spawn-to-ready.
fn start_once(socket: &PathBuf, db: &Path, expected: usize, spin: bool) -> Duration {
    let _ = std::fs::remove_file(socket);
    let notify_path = socket.with_file_name("notify");
    let _ = std::fs::remove_file(&notify_path);
    let notify = UnixDatagram::bind(&notify_path).expect("a notification socket");
    notify
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("a receive timeout");
    let started = Instant::now();
    let mut child = Command::new(DAEMON)
        .arg("--socket")
        .arg(socket)
        .arg("--db")
        .arg(db)
        .arg("--max-tasks")
        .arg((expected * 2).max(1).to_string())
        .env("RUST_LOG", "warn")
        .env("NOTIFY_SOCKET", &notify_path)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the daemon starts");
    let mut message = [0u8; 4096];
    let took = loop {
        if spin {
            if UnixStream::connect(socket).is_ok() {
                break started.elapsed();
            }
            std::thread::yield_now();
        } else if let Ok(n) = notify.recv(&mut message) {
            let text = String::from_utf8_lossy(&message[..n]);
            if text.lines().any(|line| line == "READY=1") {
                break started.elapsed();
            }
        }
        assert!(started.elapsed() < START_LIMIT, "the daemon did not start");
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the daemon exited: {status}");
        }
    };
    let live = count_tasks(socket);
    assert_eq!(live, expected, "every task was loaded and replayed");
    let _ = child.kill();
    let _ = child.wait();
    took
}

/// `GET /metrics`'s live-task gauge.
fn count_tasks(socket: &Path) -> usize {
    use std::io::{Read, Write};
    let mut stream = UnixStream::connect(socket).expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: sprite\r\n\r\n")
        .expect("write");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read");
    text.lines()
        .find_map(|line| line.strip_prefix("sprite_tasks_live "))
        .and_then(|n| n.trim().parse().ok())
        .expect("the live gauge")
}
