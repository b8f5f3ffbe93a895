//! Kill -9 torture against the real binary: several clients create, refresh
//! and delete tasks while the daemon is killed with SIGKILL at a random
//! moment and restarted on the same socket and database, round after round.
//!
//! Each client owns a disjoint set of names, so its record of what the daemon
//! acknowledged is exact: the last acknowledged operation on a name decides
//! what must be on disk. An operation that got no answer (the daemon died
//! under it) may have happened or not. After every restart the whole task
//! list is checked against that record, and the record is then reset to what
//! the daemon serves, so uncertainty never accumulates.
//!
//! A quarter of the rounds also kill a daemon during its start-up, while it
//! opens and repairs the file the previous kill left.
//!
//! `SPRITE_TORTURE_ROUNDS=N` runs N rounds instead of the CI default;
//! `SPRITE_TORTURE_SEED=S` replays a run (the seed is printed).

mod common;

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Daemon, Dirs, WAIT};
use serde_json::Value;

/// Rounds in CI: each is a start, a random 20-300 ms of load, a kill and a
/// check, well under a second; the whole test stays under 30 s.
const DEFAULT_ROUNDS: u64 = 25;
const CLIENTS: usize = 4;
const NAMES_PER_CLIENT: usize = 6;
/// Shortest and longest time the daemon runs under load before SIGKILL.
const KILL_AFTER_MS: (u64, u64) = (20, 300);
/// Share of rounds that also kill a daemon during its start-up, and the
/// latest moment of that kill: a debug build opens, repairs and loads a small
/// file in a few milliseconds.
const STARTUP_KILL_PERCENT: u64 = 25;
const STARTUP_KILL_MS: u64 = 15;
/// Checkpoints every 50 ms and a compaction once the runs hold 8 rows (or
/// as many as the base, at most the 24 names): the kills land in both.
const DAEMON_ARGS: &[&str] = &["--checkpoint-interval", "50ms", "--compact-at", "8"];
/// Every expiry is between 30 and 60 minutes, so nothing lapses during a
/// run and every disappearance is a DELETE's.
const EXPIRE_SECS: (u64, u64) = (1800, 3600);

/// xorshift64*: small, seedable, good enough to pick operations.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform enough in `low..=high`.
    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// A task as the daemon reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Held {
    started_at: String,
    expires_at: String,
}

impl Held {
    fn from_json(task: &Value) -> Option<Held> {
        Some(Held {
            started_at: task["started_at"].as_str()?.to_owned(),
            expires_at: task["expires_at"].as_str()?.to_owned(),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Create,
    Refresh,
    Delete,
}

/// What may be on disk for one name.
#[derive(Clone, Debug)]
enum Expect {
    /// The last operation was acknowledged: exactly this.
    Exact(Option<Held>),
    /// The last operation got no answer: `before`, or what `op` makes of it.
    Either { before: Option<Held>, op: Op },
}

impl Expect {
    /// `None` if `seen` is allowed, else why not.
    fn check(&self, seen: Option<&Held>) -> Option<String> {
        let allowed = match self {
            Expect::Exact(held) => held.as_ref() == seen,
            Expect::Either { before, op } => {
                before.as_ref() == seen
                    || match (op, before, seen) {
                        (Op::Create, None, Some(_)) => true,
                        (Op::Refresh, Some(was), Some(now)) => now.started_at == was.started_at,
                        (Op::Delete, Some(_), None) => true,
                        _ => false,
                    }
            }
        };
        (!allowed).then(|| format!("expected {self:?}, found {seen:?}"))
    }
}

#[derive(Default, Debug)]
struct Tally {
    acknowledged: u64,
    unanswered: u64,
    violations: Vec<String>,
}

/// One client: its names, its record of them, its connection.
struct Client {
    id: usize,
    names: Vec<(String, Expect)>,
    rng: Rng,
    tally: Tally,
}

/// A transport failure: the daemon died (or was never there).
#[derive(Debug)]
struct Gone;

impl From<io::Error> for Gone {
    fn from(_: io::Error) -> Gone {
        Gone
    }
}

/// Sends one request on `stream` and reads its response: status and body.
fn exchange(
    stream: &mut BufReader<UnixStream>,
    method: &str,
    path: &str,
    body: &str,
) -> Result<(u16, Value), Gone> {
    stream
        .get_mut()
        .write_all(&common::request_bytes(method, path, Some(body)))?;
    read_response(stream)
}

/// A response read without panicking: a daemon killed mid-answer is part of
/// the test. A half response (a head without its body) is `Gone` too; the
/// reactor writes whole responses, so this is only ever the kill.
fn read_response(stream: &mut BufReader<UnixStream>) -> Result<(u16, Value), Gone> {
    let mut status = None;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line)? == 0 {
            return Err(Gone);
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if status.is_none() {
            status = line.split(' ').nth(1).and_then(|s| s.parse::<u16>().ok());
        } else if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().map_err(|_| Gone)?;
        }
    }
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body)?;
    let json = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).map_err(|_| Gone)?
    };
    Ok((status.ok_or(Gone)?, json))
}

impl Client {
    fn new(id: usize, seed: u64) -> Client {
        Client {
            id,
            names: (0..NAMES_PER_CLIENT)
                .map(|n| (format!("c{id}-n{n}"), Expect::Exact(None)))
                .collect(),
            rng: Rng::new(seed ^ (id as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            tally: Tally::default(),
        }
    }

    /// Runs operations until the daemon goes away.
    fn run(&mut self, socket: &Path) {
        let Ok(stream) = UnixStream::connect(socket) else {
            return;
        };
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut stream = BufReader::new(stream);
        while self.step(&mut stream).is_ok() {}
    }

    /// One operation on a random name of this client.
    fn step(&mut self, stream: &mut BufReader<UnixStream>) -> Result<(), Gone> {
        let index = self.rng.next() as usize % self.names.len();
        let (name, expect) = self.names[index].clone();
        let Expect::Exact(before) = expect else {
            unreachable!("a client stops at its first unanswered operation");
        };
        let expire = self.rng.between(EXPIRE_SECS.0, EXPIRE_SECS.1);
        let expire_json = if self.rng.chance(50) {
            expire.to_string()
        } else {
            format!("\"{}m\"", expire / 60)
        };
        let op = match before {
            None => Op::Create,
            Some(_) if self.rng.chance(60) => Op::Refresh,
            Some(_) => Op::Delete,
        };
        let post = op == Op::Create && self.rng.chance(70);
        let request = match op {
            Op::Create if post => (
                "POST",
                "/v1/tasks".to_owned(),
                format!(r#"{{"name":"{name}","expire":{expire_json}}}"#),
            ),
            Op::Create | Op::Refresh => (
                "PUT",
                format!("/v1/tasks/{name}"),
                format!(r#"{{"expire":{expire_json}}}"#),
            ),
            Op::Delete => ("DELETE", format!("/v1/tasks/{name}"), String::new()),
        };
        let answer = exchange(stream, request.0, &request.1, &request.2);
        let Ok((status, body)) = answer else {
            self.tally.unanswered += 1;
            self.names[index].1 = Expect::Either { before, op };
            return Err(Gone);
        };
        let wanted = match op {
            Op::Create if post => 201,
            Op::Create | Op::Refresh => 200,
            Op::Delete => 204,
        };
        let after = match op {
            Op::Delete => None,
            Op::Create | Op::Refresh => Held::from_json(&body),
        };
        let started_ok = match (op, &before, &after) {
            (Op::Refresh, Some(was), Some(now)) => was.started_at == now.started_at,
            _ => true,
        };
        if status != wanted || (op != Op::Delete && after.is_none()) || !started_ok {
            self.tally.violations.push(format!(
                "client {}: {} {} answered {status} {body}, expected {wanted} (state was {before:?})",
                self.id, request.0, request.1
            ));
            // The record can no longer be trusted: take the daemon's word at
            // the next check, and stop this round.
            self.names[index].1 = Expect::Either { before, op };
            return Err(Gone);
        }
        self.tally.acknowledged += 1;
        self.names[index].1 = Expect::Exact(after);
        Ok(())
    }
}

/// Every task the daemon serves, by name.
fn list(daemon: &Daemon) -> BTreeMap<String, Held> {
    let (status, body) = daemon.call("GET", "/v1/tasks", None);
    assert_eq!(status, 200, "{body}");
    body["tasks"]
        .as_array()
        .expect("a task list")
        .iter()
        .map(|task| {
            let name = task["name"].as_str().expect("a name").to_owned();
            (name, Held::from_json(task).expect("timestamps"))
        })
        .collect()
}

/// Checks every client's record against what `daemon` serves, then resets
/// the records to it.
fn verify(daemon: &Daemon, clients: &mut [Client], round: u64, violations: &mut Vec<String>) {
    let mut served = list(daemon);
    for client in clients.iter_mut() {
        for (name, expect) in client.names.iter_mut() {
            let seen = served.remove(name.as_str());
            if let Some(why) = expect.check(seen.as_ref()) {
                violations.push(format!("after round {round}: task {name}: {why}"));
            }
            *expect = Expect::Exact(seen);
        }
    }
    for name in served.keys() {
        violations.push(format!(
            "after round {round}: unknown task {name} is served"
        ));
    }
    let started = daemon.wait_for_log("sprite-tasksd listening");
    if !started.contains("quarantined=0") {
        violations.push(format!(
            "after round {round}: records were quarantined: {started}"
        ));
    }
}

#[test]
fn acknowledged_operations_survive_kill_9_under_load() {
    let rounds = std::env::var("SPRITE_TORTURE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_ROUNDS);
    let seed = std::env::var("SPRITE_TORTURE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let mut rng = Rng::new(seed);
    let dirs = Dirs::new();
    let mut clients: Vec<Client> = (0..CLIENTS).map(|id| Client::new(id, seed)).collect();
    let mut violations = Vec::new();

    let mut startup_kills = 0;
    for round in 1..=rounds {
        if rng.chance(STARTUP_KILL_PERCENT) {
            // Killed while starting: opening and repairing the file after
            // the last kill, loading, committing start-up expiries.
            let (mut child, _log) = common::spawn(&dirs.socket(), &dirs.db(), DAEMON_ARGS);
            std::thread::sleep(Duration::from_millis(rng.between(0, STARTUP_KILL_MS)));
            let _ = child.kill();
            let _ = child.wait();
            startup_kills += 1;
        }
        let daemon = Daemon::start(&dirs, DAEMON_ARGS);
        verify(&daemon, &mut clients, round - 1, &mut violations);
        let kill_after = Duration::from_millis(rng.between(KILL_AFTER_MS.0, KILL_AFTER_MS.1));
        let socket = daemon.socket.clone();
        std::thread::scope(|scope| {
            for client in clients.iter_mut() {
                let socket = socket.clone();
                scope.spawn(move || client.run(&socket));
            }
            // The random moment of the kill is the point of the test.
            std::thread::sleep(kill_after);
            daemon.kill9();
        });
    }
    let daemon = Daemon::start(&dirs, DAEMON_ARGS);
    verify(&daemon, &mut clients, rounds, &mut violations);
    let (status, log) = daemon.terminate();
    assert!(status.success(), "clean stop after the torture: {log}");

    let acknowledged: u64 = clients.iter().map(|c| c.tally.acknowledged).sum();
    let unanswered: u64 = clients.iter().map(|c| c.tally.unanswered).sum();
    for client in &clients {
        violations.extend(client.tally.violations.iter().cloned());
    }
    println!(
        "torture: seed {seed}, {rounds} rounds of SIGKILL ({startup_kills} more during start-up), \
         {acknowledged} acknowledged operations, {unanswered} unanswered, {} violations",
        violations.len()
    );
    assert!(
        violations.is_empty(),
        "{} violations (seed {seed}):\n{}",
        violations.len(),
        violations.join("\n")
    );
    assert!(
        acknowledged >= rounds,
        "the clients barely ran: {acknowledged} acknowledged operations in {rounds} rounds"
    );
}
