//! The bench run without `--bench` (as `cargo test --all-targets` does): a
//! smoke test that every measuring path runs and that the daemon (and Redis,
//! when it is installed) answers the bench's requests correctly. It asserts
//! answers, never times.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::{Client, Http, Protocol, create, delete, get, list, populate, refresh};
use crate::common::Dirs;
use crate::cpu::{self, ServerCpu, Ticks};
use crate::daemon::Daemon;
use crate::driver::{self, Driver};
use crate::floors::{echo_floor, fsync_floor, redb_floor};
use crate::log_floors::log_floors;
use crate::phases::{mutations_and_gets, paired_gets, paired_mutations, phase, phase_on};
use crate::redis::{REDIS_VALUE, Redis, Resp, RespClient, find_redis, redis_get, redis_set};
use crate::summary::Summary;

/// Checks that the daemon answers the bench's requests correctly and that
/// every measuring path runs, in a second or two. Asserts answers, never
/// times.
pub fn smoke() {
    let started = Instant::now();
    let dirs = Dirs::new();
    let (daemon, _) = Daemon::start(&dirs);
    let mut client = Client::connect(&daemon.socket);
    let (status, body) = client.call(&create("smoke"));
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let task: Value = serde_json::from_slice(&body).expect("a JSON task");
    assert_eq!(task["name"], "smoke");
    assert_eq!(client.call(&refresh("smoke", "5m")).0, 200);
    let (status, body) = client.call(&get("smoke"));
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).expect("JSON")["name"],
        "smoke"
    );
    let names: Vec<String> = (0..100).map(|i| format!("p-{i:03}")).collect();
    populate(&daemon.socket, &names, "1h");
    let (status, body) = client.call(&list());
    assert_eq!(status, 200);
    let listed: Value = serde_json::from_slice(&body).expect("a JSON list");
    assert_eq!(listed["tasks"].as_array().map(Vec::len), Some(101));
    assert_eq!(client.call(&delete("smoke")).0, 204);
    assert_eq!(client.call(&get("smoke")).0, 404);
    let pid = daemon.cpu_pid().unwrap_or_else(std::process::id);
    let ((summary, counts), _ticks) = cpu::during(pid, || {
        phase(
            &daemon.socket,
            2,
            Duration::from_millis(50),
            |_| 5,
            |c, i| (get(&names[c * 5 + i]), 200),
        )
    });
    assert!(summary.count <= 10 && counts.iter().all(|n| *n <= 5));
    // Both drivers, each answer's status checked: 3 clients, 4 requests
    // each, every one counted however short the phase.
    for way in [Driver::EventLoop, Driver::Threads] {
        let (samples, _) = driver::samples::<Http>(
            way,
            &daemon.socket,
            3,
            Duration::ZERO,
            |_| 4,
            |c, i| (get(&names[c * 4 + i]), 200),
        );
        assert_eq!(samples.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1, 1]);
        let (samples, _) = driver::samples::<Http>(
            way,
            &daemon.socket,
            3,
            Duration::from_secs(60),
            |c| c + 1,
            |c, i| (get(&names[c * 4 + i]), 200),
        );
        assert_eq!(samples.iter().map(Vec::len).collect::<Vec<_>>(), [1, 2, 3]);
    }
    check_cpu();
    let metrics = daemon.metrics();
    assert!(metrics["sprite_tasks_commit_seconds_count"] >= 1.0);
    let (rss, peak) = daemon.memory_kib();
    assert!(rss > 0 && peak >= rss);
    daemon.stop();

    // Redis only when it is installed.
    let redis = find_redis().ok();
    let paired = paired_mutations(Duration::ZERO, redis.as_deref());
    // The measured phases, tiny: every kind of request answered as
    // expected on both sides, every slice at least one request a client,
    // our writes' CPU read until the log is checkpointed.
    let (rows, _) = mutations_and_gets(2, Duration::from_millis(20), redis.as_deref(), false);
    let mut endpoints: Vec<&str> = rows.iter().map(|row| row.endpoint).collect();
    endpoints.sort_unstable();
    let mut expected = vec!["create", "delete", "get", "refresh"];
    if redis.is_some() {
        expected.extend(["redis DEL", "redis GET", "redis SET", "redis SET again"]);
        expected.sort_unstable();
    }
    assert_eq!(endpoints, expected);
    for row in &rows {
        assert!(
            row.summary.count >= 2,
            "{}: {} requests",
            row.endpoint,
            row.summary.count
        );
        assert!(row.cpu.is_some(), "{}: no CPU figure", row.endpoint);
        assert_eq!(
            row.commits.is_some(),
            matches!(row.endpoint, "create" | "refresh" | "delete"),
            "{}: group-commit figures for ours and only ours",
            row.endpoint
        );
    }
    assert_eq!(paired.len(), 3);
    assert!(paired.iter().all(|p| p.redis.is_some() == redis.is_some()));
    if let Some(program) = &redis {
        let gets = paired_gets(Duration::ZERO, program);
        assert_eq!(
            (
                gets.ours.count,
                gets.redis.count,
                gets.redis_same_bytes.count
            ),
            (4, 2, 2)
        );
        assert!(
            gets.body_bytes > REDIS_VALUE.len(),
            "a task's answer is longer than Redis's value: {} bytes",
            gets.body_bytes
        );
        let peer = Redis::start(program);
        peer.check_aof();
        let mut connection = RespClient::connect(&peer.socket);
        assert_eq!(connection.call(&redis_set("smoke")), (200, b"OK".to_vec()));
        assert_eq!(
            connection.call(&redis_get("smoke")),
            (200, REDIS_VALUE.as_bytes().to_vec())
        );
        assert_eq!(connection.call(&redis_get("absent")).0, 404);
        let (summary, _) = phase_on::<Resp>(
            &peer.socket,
            2,
            Duration::from_millis(20),
            |_| 3,
            |c, i| (redis_set(&format!("s{c}-{i}")), 200),
        );
        assert!(summary.count <= 6);
    }
    assert!(
        log_floors(Duration::ZERO, 2)
            .iter()
            .all(|(_, s)| s.count >= 2)
    );
    let short = Duration::from_millis(30);
    assert!(echo_floor(1, short).count > 0);
    assert!(fsync_floor(Duration::ZERO, 3).count >= 3);
    assert!(redb_floor(Duration::ZERO, 3).count >= 3);
    check_framing();
    let percentiles = Summary::of(
        (1..=100).map(Duration::from_micros).collect(),
        Duration::from_secs(1),
    );
    assert_eq!(
        (percentiles.p50, percentiles.p99, percentiles.max),
        (
            Duration::from_micros(50),
            Duration::from_micros(99),
            Duration::from_micros(100)
        )
    );
    println!(
        "latency bench smoke test: the daemon answered correctly{} ({:.1} s); \
         measure with `cargo bench --bench latency`",
        if redis.is_some() {
            ", and so did Redis"
        } else {
            "; redis-server absent, Redis not checked"
        },
        started.elapsed().as_secs_f64()
    );
}

/// `/proc/PID/stat` parsing, a command name with spaces and parentheses
/// included, and the per-request figure.
fn check_cpu() {
    let fields = "S 1 1 1 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 2 0 5 100 9";
    let spent = Some(Ticks {
        user: 7,
        system: 3,
        checkpoint: 0,
        client: 0,
    });
    for (stat, ticks) in [
        (format!("42 (sprite-tasksd) {fields}"), spent),
        (format!("42 (a) b (c)) {fields}"), spent),
        ("42 (sprite-tasksd) S 1 1".to_owned(), None),
        (String::new(), None),
    ] {
        assert_eq!(cpu::parse_stat(&stat), ticks, "{stat:?}");
    }
    assert!(cpu::cpu_ticks(std::process::id()).total() < u64::MAX);
    let hz = cpu::ticks_per_second();
    let spent = ServerCpu {
        spent: Ticks {
            user: hz - hz / 2,
            system: hz / 2,
            checkpoint: hz / 4,
            client: hz * 2,
        },
        requests: 1000,
    };
    assert_eq!(spent.per_request(), Duration::from_millis(1));
    assert!(!spent.rough() && spent.show() == "1000.0 µs");
    assert_eq!(spent.show_checkpoint(), "250.0 µs");
    assert_eq!(spent.client_per_request(), Duration::from_millis(2));
    let half = ServerCpu {
        spent: Ticks {
            user: hz / 2,
            system: 0,
            checkpoint: 0,
            client: 0,
        },
        requests: 1000,
    };
    assert_eq!(spent.ratio(half), Some(2.0));
    assert_eq!(half.show_checkpoint(), "-");
    check_checkpoint_thread();
}

/// A thread named as the daemon's checkpoint thread is found and charged:
/// it spins until its own stat shows a tick, then waits to be read.
fn check_checkpoint_thread() {
    let (spent_tx, spent_rx) = std::sync::mpsc::channel();
    let (read_tx, read_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name(cpu::CHECKPOINT_THREAD.into())
        .spawn(move || {
            // SAFETY: gettid(2) only returns the calling thread's id.
            let tid = unsafe { libc::gettid() };
            let own = format!("/proc/self/task/{tid}/stat");
            while std::fs::read_to_string(&own)
                .ok()
                .and_then(|stat| cpu::parse_stat(&stat))
                .is_none_or(|ticks| ticks.total() == 0)
            {
                std::hint::black_box((0..10_000u64).sum::<u64>());
            }
            spent_tx.send(()).unwrap();
            read_rx.recv().unwrap();
        })
        .unwrap();
    spent_rx.recv().unwrap();
    let ticks = cpu::cpu_ticks(std::process::id());
    read_tx.send(()).unwrap();
    thread.join().unwrap();
    assert!(
        ticks.checkpoint >= 1 && ticks.checkpoint <= ticks.total(),
        "{ticks:?}"
    );
}

/// Every proper prefix of an answer is incomplete, and the answer frames
/// to its status and body with what follows left alone: the event loop
/// reads answers in whatever pieces they arrive.
fn check_framing() {
    fn check<P: Protocol>(answer: &[u8], status: u16, body: &[u8]) {
        for cut in 0..answer.len() {
            assert!(P::framed(&answer[..cut]).is_none(), "{cut} bytes framed");
        }
        let mut input = answer.to_vec();
        input.extend_from_slice(b"next");
        let framed = P::framed(&input).expect("a complete answer");
        assert_eq!(framed.end, answer.len());
        assert_eq!(
            (framed.status, P::body(answer, &framed)),
            (status, body.to_vec())
        );
    }
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n";
    check::<Http>(format!("{head}{{}}").as_bytes(), 200, b"{}");
    check::<Http>(b"HTTP/1.1 204 No Content\r\n\r\n", 204, b"");
    check::<Resp>(b"+OK\r\n", 200, b"OK");
    check::<Resp>(b"-ERR no\r\n", 500, b"ERR no");
    check::<Resp>(b"$-1\r\n", 404, b"");
    check::<Resp>(b"$4\r\na\r\nb\r\n", 200, b"a\r\nb");
    check::<Resp>(b"*2\r\n$4\r\nsave\r\n$0\r\n\r\n", 200, b"save ");
    check::<Resp>(b"*2\r\n$0\r\n\r\n$1\r\nx\r\n", 200, b" x");
}
