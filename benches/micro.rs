//! Micro-benchmarks of the pure parts a request goes through: framing,
//! `expire` decoding, routing a body, encoding and decoding a task list, and
//! the state machine: expiry of many tasks, and creates, deletes and
//! refreshes among 100k held ones (where the rows' maps outgrow the
//! caches, as under the latency bench's 64 clients), and walks of them in
//! name order (a list, a status answer's first holders).
//!
//! `cargo bench --bench micro`; under `cargo test` each runs once.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use sprite_tasks::api::{self, Query, TaskList};
use sprite_tasks::expire::{self, DEFAULT_MAX_EXPIRE};
use sprite_tasks::http::{self, Limits, Parsed};
use sprite_tasks::tasks::{Batch, Claim, Command, Task, TaskName, Tasks};
use sprite_tasks::time::Timestamp;

/// What curl sends for the seed's create example.
const CREATE: &[u8] = b"POST /v1/tasks HTTP/1.1\r\nHost: sprite\r\nUser-Agent: curl/8.14.1\r\nAccept: */*\r\nContent-Type: application/json\r\nContent-Length: 35\r\n\r\n{ \"name\": \"agent\", \"expire\": \"1h\" }";
const GET: &[u8] = b"GET /v1/tasks/agent HTTP/1.1\r\nHost: sprite\r\nUser-Agent: curl/8.14.1\r\nAccept: */*\r\n\r\n";
const CHUNKED: &[u8] = b"PUT /v1/tasks/agent HTTP/1.1\r\nHost: sprite\r\nTransfer-Encoding: chunked\r\n\r\n11\r\n{ \"expire\": \"5m\" \r\n1\r\n}\r\n0\r\n\r\n";

/// A fixed instant, so runs compare.
const NOW: Timestamp = Timestamp::from_nanos(1_780_000_000_000_000_000);

fn tasks_with(count: usize, expires_at: Timestamp) -> Tasks {
    let mut tasks = Tasks::new(count.max(1));
    tasks.load((0..count).map(|i| {
        Task::new(
            TaskName::parse(&format!("agent-{i:06}")).expect("a valid name"),
            NOW,
            expires_at,
        )
    }));
    tasks
}

fn framing(c: &mut Criterion) {
    let limits = Limits::default();
    let mut group = c.benchmark_group("framing");
    for (label, bytes) in [("create", CREATE), ("get", GET), ("chunked_put", CHUNKED)] {
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(label), bytes, |b, bytes| {
            b.iter(|| {
                let parsed = http::parse(black_box(bytes), &limits);
                assert!(matches!(parsed, Ok(Parsed::Complete { .. })));
                parsed
            })
        });
    }
    group.finish();
}

fn routing(c: &mut Criterion) {
    let Ok(Parsed::Complete { request, .. }) = http::parse(CREATE, &Limits::default()) else {
        panic!("the create request frames");
    };
    c.bench_function("route/create_body", |b| {
        b.iter(|| api::route(black_box(&request), DEFAULT_MAX_EXPIRE))
    });
}

fn expire_decoding(c: &mut Criterion) {
    let mut group = c.benchmark_group("expire");
    for (label, value) in [
        ("seconds", json!(3600)),
        ("1h", json!("1h")),
        ("1h_30m_15s", json!("1h 30m 15s")),
        ("refused_5", json!("5")),
    ] {
        group.bench_with_input(BenchmarkId::from_parameter(label), &value, |b, value| {
            b.iter(|| expire::decode(black_box(value), DEFAULT_MAX_EXPIRE))
        });
    }
    group.finish();
}

fn task_list_json(c: &mut Criterion) {
    let mut group = c.benchmark_group("task_list");
    let later = NOW
        .checked_add(Duration::from_secs(3600))
        .expect("in range");
    let history = sprite_tasks::usage::History::new(sprite_tasks::usage::DEFAULT_USAGE_RETENTION);
    for count in [10usize, 1000] {
        let tasks = tasks_with(count, later);
        let body = api::answer(&Query::List, &tasks, &history, None, NOW).body;
        group.throughput(Throughput::Elements(count as u64));
        group.bench_with_input(BenchmarkId::new("encode", count), &tasks, |b, tasks| {
            b.iter(|| api::answer(&Query::List, black_box(tasks), &history, None, NOW))
        });
        group.bench_with_input(BenchmarkId::new("decode", count), &body, |b, body| {
            b.iter(|| {
                let list: TaskList = serde_json::from_slice(black_box(body)).expect("a list");
                assert_eq!(list.tasks.len(), count);
                list
            })
        });
    }
    group.finish();
}

fn expiry(c: &mut Criterion) {
    let mut group = c.benchmark_group("expire_due_and_apply");
    group.sample_size(10);
    let due = NOW.checked_add(Duration::from_secs(1)).expect("in range");
    let after = NOW.checked_add(Duration::from_secs(2)).expect("in range");
    for count in [1000usize, 10_000] {
        group.throughput(Throughput::Elements(count as u64));
        group.bench_with_input(BenchmarkId::from_parameter(count), &count, |b, &count| {
            b.iter_batched(
                || tasks_with(count, due),
                |mut tasks| {
                    let mut batch = Batch::new();
                    let planned = tasks.expire_due(&mut batch, after);
                    assert_eq!(planned, count);
                    tasks.apply(batch);
                    assert!(tasks.is_empty());
                    tasks
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

/// Tasks held while [`churn`] creates, deletes and refreshes: a busy
/// daemon's, and enough that the rows' maps do not fit in the caches.
const HELD: usize = 100_000;

/// Changes in one batch of [`churn`]: what a turn at 64 clients commits.
const TURN: usize = 64;

/// Creates and deletes (half and half, a batch each turn) and refreshes
/// among [`HELD`] tasks, planned and applied as the reactor does: the
/// state machine's cost per change, without the sockets and the log.
fn churn(c: &mut Criterion) {
    let mut group = c.benchmark_group("churn_100k");
    group.throughput(Throughput::Elements(TURN as u64));
    // A ring of names: the held ones are a window of it that slides as
    // each turn creates at its head and deletes at its tail.
    let ring: Vec<TaskName> = (0..2 * HELD)
        .map(|i| TaskName::parse(&format!("c{}-{}", i % 64, i / 64)).expect("a valid name"))
        .collect();
    let expire = Duration::from_secs(3600);
    let held = || {
        let mut tasks = Tasks::new(2 * HELD);
        // Loaded 64 to a deadline, as the latency bench's turns of 64
        // share theirs (a churn turn's 32 creates share one too).
        tasks.load(ring[..HELD].iter().enumerate().map(|(i, name)| {
            let at = NOW.checked_add(expire + Duration::from_micros((i / TURN) as u64));
            Task::new(name.clone(), NOW, at.expect("in range"))
        }));
        tasks
    };
    let create = |name: &TaskName| Command::Create {
        name: name.clone(),
        expire,
        claim: Claim::default(),
        caller: None,
    };
    let delete = |name: &TaskName| Command::Delete {
        name: name.clone(),
        caller: None,
        bound_to: None,
    };
    let mut run = |label: &str, command: &dyn Fn(usize, usize) -> Command| {
        let mut tasks = held();
        let mut turn = 0usize;
        group.bench_function(label, |b| {
            b.iter(|| {
                // A turn's changes share one reading of the clock.
                let now = NOW
                    .checked_add(Duration::from_micros(turn as u64))
                    .expect("in range");
                apply_turn(&mut tasks, (0..TURN).map(|i| command(turn, i)), now);
                turn += 1;
            })
        });
        assert_eq!(tasks.len(), HELD);
    };
    let create_delete = |turn: usize, i: usize| {
        let tail = (turn * TURN / 2 + i / 2) % ring.len();
        if i.is_multiple_of(2) {
            create(&ring[(tail + HELD) % ring.len()])
        } else {
            delete(&ring[tail])
        }
    };
    run("create_and_delete", &create_delete);
    let refresh = |turn: usize, i: usize| Command::Upsert {
        // Spread over the held names, each refreshed in its turn.
        name: ring[(turn * TURN + i) * 7919 % HELD].clone(),
        expire,
        claim: Claim::default(),
        caller: None,
    };
    run("refresh", &refresh);
    // What a walk in name order (a list) pays: with no name come or gone
    // since the last walk, and after a create and a delete (the sort of
    // the held names, then the walk).
    group.throughput(Throughput::Elements(HELD as u64));
    group.sample_size(20);
    let mut tasks = held();
    let walk = |tasks: &Tasks| {
        tasks
            .live(NOW)
            .map(|task| task.name.as_bytes().len())
            .sum::<usize>()
    };
    group.bench_function("walk_in_name_order", |b| b.iter(|| walk(&tasks)));
    // One name comes and one goes: the window of held names slides by one.
    let change = |tasks: &mut Tasks, turn: usize| {
        let (tail, head) = (turn % ring.len(), (turn + HELD) % ring.len());
        apply_turn(tasks, [create(&ring[head]), delete(&ring[tail])], NOW);
    };
    let mut turn = 0usize;
    group.bench_function("walk_in_name_order_after_a_create_and_a_delete", |b| {
        b.iter(|| {
            change(&mut tasks, turn);
            turn += 1;
            walk(&tasks)
        })
    });
    // What a status answer pays for its first 16 holders by name after a
    // change: a selection among all, with no sort of the rest.
    let mut tasks = held();
    let mut turn = 0usize;
    group.bench_function("first_16_by_name_after_a_create_and_a_delete", |b| {
        b.iter(|| {
            change(&mut tasks, turn);
            turn += 1;
            tasks.first_live(NOW, 16).len()
        })
    });
    group.finish();
}

/// Plans `commands` into one batch at `now` and applies it, as the
/// reactor does with a turn's requests; each must be accepted.
fn apply_turn(tasks: &mut Tasks, commands: impl IntoIterator<Item = Command>, now: Timestamp) {
    let mut batch = Batch::new();
    for command in commands {
        let planned = tasks.plan(&mut batch, command, now);
        assert!(planned.is_ok(), "{planned:?}");
    }
    tasks.apply(batch);
}

criterion_group!(
    benches,
    framing,
    routing,
    expire_decoding,
    task_list_json,
    expiry,
    churn
);
criterion_main!(benches);
