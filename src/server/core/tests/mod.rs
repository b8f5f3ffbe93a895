//! The core's decisions, driven as the shell drives them, with `now`
//! passed in: an in-memory disk that fails on demand stands for the store,
//! a table of pids for the machine. No socket, no file, no sleep.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::*;
use crate::events::EventKind;
use crate::http::Method;
use crate::testing::memory_store::{Fault, MemoryStore as Disk};

const UID: u32 = 1000;
const OTHER_UID: u32 = 1001;
const DAEMON_UID: u32 = 999;
const T0: Timestamp = Timestamp::from_nanos(1_780_000_000 * 1_000_000_000);

/// The machine's processes: pid to start time.
#[derive(Default)]
struct Machine {
    running: HashMap<u32, u64>,
    binds: usize,
    holders: usize,
}

impl Processes for Machine {
    fn bind(&mut self, _: &TaskName, pid: u32) -> Result<Binding, (u16, String)> {
        self.binds += 1;
        match self.running.get(&pid) {
            Some(&start_time) => Ok(Binding { pid, start_time }),
            None => Err((422, format!("no process {pid}"))),
        }
    }

    fn holder(&mut self, credentials: Credentials) -> Holder {
        self.holders += 1;
        Holder {
            pid: credentials.pid,
            uid: Some(credentials.uid),
            command: Some("agent".into()),
            parent_pid: None,
            parent_command: None,
        }
    }
}

fn settings() -> Settings {
    Settings {
        max_tasks: 10_000,
        max_bound: 100,
        ownership: Ownership::Owned { max_per_uid: 5_000 },
        max_expire: Duration::from_secs(3600),
        event_retention: 1000,
        max_held_for: None,
        usage_retention: crate::usage::DEFAULT_USAGE_RETENTION,
        usage_max_holds: crate::usage::DEFAULT_MAX_USAGE_HOLDS,
        shares: ShareLimits {
            max_connections: 6,
            reserved: 2,
            per_uid: 3,
            streams_per_uid: 1,
        },
        daemon_uid: DAEMON_UID,
    }
}

/// The core as the shell drives it, with its own clocks.
struct Rig {
    core: Core,
    disk: Disk,
    machine: Machine,
    base: Instant,
    /// Monotonic time since `base`.
    elapsed: Duration,
    /// The wall clock's reading.
    wall: Timestamp,
    date: HttpDate,
    edges: Vec<Edge>,
    watch_changes: Vec<WatchChange>,
}

impl Rig {
    fn new() -> Rig {
        Rig::recovered(Disk::default(), T0)
    }

    /// A daemon started on `disk` with the wall clock at `wall`, on a
    /// machine that runs nothing.
    fn recovered(disk: Disk, wall: Timestamp) -> Rig {
        Rig::recovered_on(disk, wall, Machine::default())
    }

    fn recovered_on(disk: Disk, wall: Timestamp, machine: Machine) -> Rig {
        Rig::recovered_with(disk, wall, machine, settings())
    }

    fn recovered_with(
        mut disk: Disk,
        wall: Timestamp,
        machine: Machine,
        settings: Settings,
    ) -> Rig {
        let base = Instant::now();
        let loaded = disk.load().expect("the disk loads");
        let (core, _) = Core::recover(settings, loaded, wall, base);
        let mut rig = Rig {
            core,
            disk,
            machine,
            base,
            elapsed: Duration::ZERO,
            wall,
            date: HttpDate::at(0),
            edges: Vec::new(),
            watch_changes: Vec::new(),
        };
        rig.drain();
        let now = rig.now();
        rig.core.seal_recovery(now);
        rig.settle();
        rig.core.finish_recovery(now);
        rig.drain();
        for conn in [1, 2, 3] {
            rig.core
                .connect(ConnId(conn), Some(credentials(UID)), now)
                .expect("room for the test's connections");
        }
        rig
    }

    fn now(&self) -> Now {
        self.core.now(self.base + self.elapsed)
    }

    /// Collects the watch changes (carrying them out as the shell does)
    /// and edges.
    fn drain(&mut self) {
        for change in self.core.take_watch_changes() {
            if let WatchChange::Watch(name, binding) = &change
                && self.machine.running.get(&binding.pid) != Some(&binding.start_time)
            {
                self.core.process_exited(name.clone(), *binding);
            }
            self.watch_changes.push(change);
        }
        self.edges.extend(self.core.take_edges());
    }

    /// What the shell's `settle` does, with no client waiting.
    fn settle(&mut self) {
        self.settle_with(false);
    }

    fn settle_with(&mut self, clients_waiting: bool) {
        let now = self.now();
        loop {
            if self.core.wants_load(clients_waiting, now) {
                let loaded = self.disk.load();
                self.core.loaded(loaded, now);
                continue;
            }
            let Some(commit) = self.core.take_commit() else {
                break;
            };
            let result = self.disk.commit(&commit);
            self.core
                .committed(commit, result, Duration::from_micros(100), now);
        }
        self.drain();
    }

    /// Lets `by` pass on both clocks, and runs a turn with no request.
    fn advance(&mut self, by: Duration) {
        self.elapsed += by;
        self.wall = self.wall.checked_add(by).expect("in range");
        self.observe();
        self.turn(&[]);
    }

    /// Sets the wall clock by `step` (forward when positive) without
    /// monotonic time passing, and runs a turn.
    fn step_wall(&mut self, forward: bool, step: Duration) {
        self.wall = match forward {
            true => self.wall.checked_add(step).expect("in range"),
            false => self.wall.saturating_sub(step),
        };
        self.observe();
        self.turn(&[]);
    }

    fn observe(&mut self) {
        let mono = self.base + self.elapsed;
        self.core.observe_clock(self.wall, mono);
        self.settle();
    }

    /// One turn carrying `requests` (connection, method, target, body),
    /// answered in order.
    fn turn(&mut self, requests: &[(usize, Method, &str, &str)]) -> Vec<Answer> {
        self.settle_with(!requests.is_empty());
        let now = self.now();
        self.core.start_turn(now);
        let mut handled = Vec::new();
        let mut waiting: HashMap<usize, bool> = HashMap::new();
        for (conn, method, target, body) in requests {
            let request = Request {
                method: method.clone(),
                target: (*target).to_owned(),
                minor_version: 1,
                keep_alive: true,
                body: body.as_bytes().to_vec(),
            };
            let waits = waiting.get(conn).copied().unwrap_or(false);
            let answer = self.core.handle(
                &mut self.machine,
                ConnId(*conn),
                &request,
                waits,
                &self.date,
                now,
            );
            if matches!(answer, Handled::Planned(_)) {
                waiting.insert(*conn, true);
            }
            handled.push(answer);
        }
        self.core.seal_turn(now);
        self.settle();
        let answers = handled
            .into_iter()
            .map(|handled| match handled {
                Handled::Answer(response) => Answer::Response(response),
                Handled::Planned(planned) => Answer::Response(self.core.answer(planned)),
                Handled::AfterCommit => Answer::AfterCommit,
                Handled::Stream(head) => Answer::Stream(head),
                Handled::Metrics => {
                    Answer::Response(self.core.metrics_page(Outside::default(), now))
                }
            })
            .collect();
        self.core.finish_turn();
        answers
    }

    /// One request alone in its turn, on connection 1.
    fn ask(&mut self, method: Method, target: &str, body: &str) -> Response {
        match self.turn(&[(1, method, target, body)]).remove(0) {
            Answer::Response(response) => response,
            other => panic!("expected a response, got {other:?}"),
        }
    }

    fn create(&mut self, name: &str, expire: &str) -> u16 {
        let body = format!(r#"{{"name":"{name}","expire":"{expire}"}}"#);
        self.ask(Method::Post, "/v1/tasks", &body).status
    }

    fn names(&mut self) -> Vec<String> {
        let response = self.ask(Method::Get, "/v1/tasks", "");
        let list: serde_json::Value = serde_json::from_slice(&response.body).expect("JSON");
        list["tasks"]
            .as_array()
            .expect("a list")
            .iter()
            .map(|task| task["name"].as_str().expect("a name").to_owned())
            .collect()
    }

    fn disk_names(&self) -> Vec<String> {
        self.disk.rows.keys().cloned().collect()
    }

    fn event_kinds(&self) -> Vec<EventKind> {
        self.disk.events.iter().map(|event| event.kind).collect()
    }
}

#[derive(Debug)]
enum Answer {
    Response(Response),
    AfterCommit,
    Stream(Vec<u8>),
}

fn credentials(uid: u32) -> Credentials {
    Credentials {
        pid: Some(4242),
        uid,
    }
}

fn error_of(response: &Response) -> String {
    let body: serde_json::Value = serde_json::from_slice(&response.body).expect("JSON");
    body["error"].as_str().unwrap_or_default().to_owned()
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

mod answers;
mod clock;
mod edges;
mod expiry;
mod failures;
mod ownership;
mod processes;
mod recovery;
mod shares;
mod usage;
