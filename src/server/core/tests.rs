//! The core's decisions, driven as the shell drives them, with `now`
//! passed in: an in-memory disk that fails on demand stands for the store,
//! a table of pids for the machine. No socket, no file, no sleep.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::*;
use crate::events::EventKind;
use crate::http::Method;
use crate::store::{Loaded, StoreError};
use crate::tasks::Task;

const UID: u32 = 1000;
const OTHER_UID: u32 = 1001;
const DAEMON_UID: u32 = 999;
const T0: Timestamp = Timestamp::from_nanos(1_780_000_000 * 1_000_000_000);

/// What the next commit does on the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Nothing reaches the disk; the write fails.
    Lost,
    /// Everything reaches the disk, but the sync reports a failure.
    Torn,
    /// The log is full: refused before touching the disk.
    Full,
    /// The reload fails too.
    Unreadable,
}

/// The store, in memory: what was committed, and faults to inject.
#[derive(Default)]
struct Disk {
    rows: BTreeMap<String, Task>,
    events: Vec<Event>,
    faults: VecDeque<Fault>,
    commits: usize,
    loads: usize,
}

impl Disk {
    fn commit(&mut self, commit: &Commit) -> Result<(), StoreError> {
        self.commits += 1;
        let fault = self.faults.front().copied();
        if matches!(fault, Some(Fault::Lost | Fault::Torn | Fault::Full)) {
            self.faults.pop_front();
        }
        match fault {
            Some(Fault::Full) => return Err(StoreError::Full("the log is full".into())),
            Some(Fault::Lost) => return Err(StoreError::Io("write failed".into())),
            _ => {}
        }
        for change in commit.changes() {
            match change {
                crate::tasks::Change::Put { task, .. } => {
                    self.rows
                        .insert(task.name.as_str().to_owned(), task.clone());
                }
                crate::tasks::Change::Remove { name, .. } => {
                    self.rows.remove(name.as_str());
                }
            }
        }
        self.events.extend(commit.events().iter().cloned());
        match fault {
            Some(Fault::Torn) => Err(StoreError::Io("sync failed".into())),
            _ => Ok(()),
        }
    }

    fn load(&mut self) -> Result<Loaded, StoreError> {
        self.loads += 1;
        if self.faults.front() == Some(&Fault::Unreadable) {
            self.faults.pop_front();
            return Err(StoreError::Io("read failed".into()));
        }
        Ok(Loaded {
            tasks: self.rows.values().cloned().collect(),
            quarantined: Vec::new(),
            events: self.events.clone(),
            replayed: 0,
            torn_tail: None,
        })
    }
}

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

    fn recovered_on(mut disk: Disk, wall: Timestamp, machine: Machine) -> Rig {
        let base = Instant::now();
        let loaded = disk.load().expect("the disk loads");
        let (core, _) = Core::recover(settings(), loaded.tasks, loaded.events, wall, base);
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

// Answers and commits.

#[test]
fn a_create_is_answered_201_once_committed_and_is_on_disk() {
    let mut rig = Rig::new();
    assert_eq!(rig.create("build", "10s"), 201);
    assert_eq!(rig.disk_names(), ["build"]);
    assert_eq!(rig.names(), ["build"]);
    assert_eq!(rig.disk.commits, 1);
}

#[test]
fn a_refused_change_commits_nothing() {
    let mut rig = Rig::new();
    assert_eq!(rig.create("build", "10s"), 201);
    assert_eq!(rig.create("build", "10s"), 409);
    assert_eq!(rig.disk.commits, 1, "a refusal costs no commit");
    assert_eq!(rig.core.metrics().commits(), 1);
}

#[test]
fn changes_that_arrive_together_share_one_commit() {
    let mut rig = Rig::new();
    let answers = rig.turn(&[
        (
            1,
            Method::Post,
            "/v1/tasks",
            r#"{"name":"a","expire":"10s"}"#,
        ),
        (
            2,
            Method::Post,
            "/v1/tasks",
            r#"{"name":"b","expire":"10s"}"#,
        ),
        (3, Method::Put, "/v1/tasks/c", r#"{"expire":"10s"}"#),
    ]);
    let statuses: Vec<u16> = answers
        .iter()
        .map(|answer| match answer {
            Answer::Response(response) => response.status,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(statuses, [201, 201, 200]);
    assert_eq!(rig.disk.commits, 1);
}

#[test]
fn a_read_behind_its_connections_change_waits_for_the_commit() {
    let mut rig = Rig::new();
    let answers = rig.turn(&[
        (
            1,
            Method::Post,
            "/v1/tasks",
            r#"{"name":"a","expire":"10s"}"#,
        ),
        (1, Method::Get, "/v1/tasks/a", ""),
        (2, Method::Get, "/v1/tasks/a", ""),
    ]);
    assert!(
        matches!(answers[1], Answer::AfterCommit),
        "{:?}",
        answers[1]
    );
    // Another connection's read is answered from the committed state,
    // which does not have the task yet.
    assert!(matches!(&answers[2], Answer::Response(r) if r.status == 404));
}

#[test]
fn reads_never_show_a_task_past_its_expiry_even_before_it_is_removed() {
    let mut rig = Rig::new();
    assert_eq!(rig.create("a", "2s"), 201);
    // The expiry is due but no turn has removed it: reads filter by now.
    rig.elapsed += secs(3);
    rig.wall = rig.wall.checked_add(secs(3)).unwrap();
    rig.core.observe_clock(rig.wall, rig.base + rig.elapsed);
    let now = rig.now();
    let request = Request {
        method: Method::Get,
        target: "/v1/tasks/a".into(),
        minor_version: 1,
        keep_alive: true,
        body: Vec::new(),
    };
    let handled = rig
        .core
        .handle(&mut rig.machine, ConnId(1), &request, false, &rig.date, now);
    assert!(matches!(handled, Handled::Answer(r) if r.status == 404));
}

#[test]
fn a_request_the_framer_refused_is_counted_and_answered() {
    let mut rig = Rig::new();
    let response = rig.core.refuse(HttpError {
        status: 431,
        message: "headers too large".into(),
    });
    assert_eq!(response.status, 431);
    assert_eq!(error_of(&response), "headers too large");
    assert_eq!(rig.core.metrics().requests(), 1);
}

#[test]
fn metrics_are_rendered_with_the_shells_figures() {
    let mut rig = Rig::new();
    rig.create("a", "10s");
    let page = rig.core.metrics_page(
        Outside {
            connections: 7,
            ..Outside::default()
        },
        rig.now(),
    );
    let text = String::from_utf8(page.body).unwrap();
    assert!(text.contains("sprite_tasks_connections 7"), "{text}");
    assert!(text.contains("sprite_tasks_held 1"), "{text}");
}

// Expiry.

#[test]
fn the_poll_timeout_is_the_next_expiry() {
    let mut rig = Rig::new();
    assert_eq!(rig.core.poll_timeout(rig.now()), None);
    rig.create("a", "30s");
    rig.create("b", "10s");
    let now = rig.now();
    assert_eq!(rig.core.poll_timeout(now), Some(now.mono + secs(10)));
}

#[test]
fn a_task_lives_until_its_expiry_and_not_a_turn_longer() {
    let mut rig = Rig::new();
    rig.create("a", "10s");
    rig.advance(Duration::from_millis(9_999));
    assert_eq!(rig.disk_names(), ["a"], "gone before its expiry");
    rig.advance(Duration::from_millis(1));
    assert!(rig.disk_names().is_empty(), "live past its expiry");
    assert_eq!(rig.event_kinds().last(), Some(&EventKind::Idle));
    assert_eq!(rig.core.metrics().expired, 1);
}

#[test]
fn a_refresh_moves_the_expiry() {
    let mut rig = Rig::new();
    rig.create("a", "10s");
    rig.advance(secs(8));
    assert_eq!(
        rig.ask(Method::Put, "/v1/tasks/a", r#"{"expire":"10s"}"#)
            .status,
        200
    );
    rig.advance(secs(8));
    assert_eq!(rig.disk_names(), ["a"]);
    rig.advance(secs(2));
    assert!(rig.disk_names().is_empty());
}

#[test]
fn expiries_falling_due_together_are_committed_in_slices() {
    let mut rig = Rig::new();
    let count = MAX_EXPIRIES_PER_TURN + 10;
    let now = rig.now();
    for i in 0..count {
        let body = format!(r#"{{"name":"t{i}","expire":"5s"}}"#);
        let request = Request {
            method: Method::Post,
            target: "/v1/tasks".into(),
            minor_version: 1,
            keep_alive: true,
            body: body.into_bytes(),
        };
        rig.core.start_turn(now);
        let handled = rig
            .core
            .handle(&mut rig.machine, ConnId(1), &request, false, &rig.date, now);
        assert!(matches!(handled, Handled::Planned(_)));
        rig.core.seal_turn(now);
        rig.settle();
        rig.core.finish_turn();
    }
    assert_eq!(rig.disk.rows.len(), count);
    rig.advance(secs(5));
    assert_eq!(rig.disk.rows.len(), 10, "one slice per turn");
    assert_eq!(
        rig.core.poll_timeout(rig.now()),
        Some(rig.now().mono),
        "the rest is due at once"
    );
    rig.turn(&[]);
    assert!(rig.disk.rows.is_empty());
}

// Held and idle.

#[test]
fn the_edges_alternate_with_the_first_and_last_task() {
    let mut rig = Rig::new();
    rig.create("a", "10s");
    rig.create("b", "10s");
    assert_eq!(rig.edges, [Edge::Held]);
    assert_eq!(rig.ask(Method::Delete, "/v1/tasks/a", "").status, 204);
    assert_eq!(rig.edges, [Edge::Held], "b still holds");
    assert_eq!(rig.ask(Method::Delete, "/v1/tasks/b", "").status, 204);
    let idle_at = rig.now().wall;
    assert_eq!(rig.edges, [Edge::Held, Edge::Idle { at: idle_at }]);
    assert_eq!(rig.core.idle_since(), Some(idle_at));
    rig.create("c", "10s");
    assert_eq!(rig.edges.last(), Some(&Edge::Held));
    assert_eq!(rig.core.idle_since(), None);
}

#[test]
fn an_expiry_that_empties_the_machine_is_an_idle_edge() {
    let mut rig = Rig::new();
    rig.create("a", "3s");
    rig.advance(secs(3));
    assert!(matches!(
        rig.edges.as_slice(),
        [Edge::Held, Edge::Idle { .. }]
    ));
    assert!(!rig.core.is_held());
}

#[test]
fn the_status_line_says_who_holds() {
    let mut rig = Rig::new();
    assert_eq!(rig.core.status_line(), "idle");
    rig.create("a", "10s");
    assert_eq!(rig.core.status_line(), "held by 1 task");
    rig.create("b", "10s");
    assert_eq!(rig.core.status_line(), "held by 2 tasks");
    rig.ask(Method::Delete, "/v1/tasks/a", "");
    rig.ask(Method::Delete, "/v1/tasks/b", "");
    assert!(rig.core.status_line().starts_with("idle since "));
}

// Failed commits, refusals and reloads.

#[test]
fn a_lost_commit_is_503_and_memory_does_not_run_ahead_of_disk() {
    let mut rig = Rig::new();
    rig.disk.faults.push_back(Fault::Lost);
    let response = rig.ask(Method::Post, "/v1/tasks", r#"{"name":"a","expire":"10s"}"#);
    assert_eq!(response.status, 503);
    assert!(error_of(&response).contains("could not be confirmed"));
    assert_eq!(rig.disk.loads, 2, "reloaded at once after the failure");
    assert!(rig.names().is_empty());
    assert!(rig.edges.is_empty(), "no hold was taken");
    assert_eq!(rig.core.metrics().commit_failures, 1);
}

#[test]
fn a_torn_commit_is_503_and_memory_follows_what_reached_the_disk() {
    let mut rig = Rig::new();
    rig.disk.faults.push_back(Fault::Torn);
    assert_eq!(rig.create("a", "10s"), 503);
    assert_eq!(rig.names(), ["a"], "the reload found it on disk");
    assert_eq!(rig.edges, [Edge::Held]);
}

#[test]
fn a_full_log_is_503_with_its_reason_and_needs_no_reload() {
    let mut rig = Rig::new();
    rig.disk.faults.push_back(Fault::Full);
    let response = rig.ask(Method::Post, "/v1/tasks", r#"{"name":"a","expire":"10s"}"#);
    assert_eq!(response.status, 503);
    assert_eq!(error_of(&response), "the log is full");
    assert_eq!(rig.disk.loads, 1, "only the start-up's");
    assert!(rig.core.in_step_with_disk());
    assert_eq!(rig.create("a", "10s"), 201, "the next turn commits again");
}

#[test]
fn after_a_failed_commit_due_expiries_wait_for_the_retry_time() {
    let mut rig = Rig::new();
    rig.create("a", "2s");
    rig.advance(Duration::from_millis(1500));
    rig.disk.faults.push_back(Fault::Full);
    assert_eq!(rig.create("b", "10s"), 503);
    let failed_at = rig.now().mono;
    assert_eq!(
        rig.core.poll_timeout(rig.now()),
        Some(failed_at + STORE_RETRY),
        "the retry, not a busy loop"
    );
    rig.advance(Duration::from_millis(500));
    assert_eq!(rig.disk_names(), ["a"], "expiry waits for the retry time");
    rig.advance(Duration::from_millis(500));
    assert!(rig.disk_names().is_empty());
}

#[test]
fn while_the_disk_cannot_be_read_every_change_is_503_and_reads_still_answer() {
    let mut rig = Rig::new();
    rig.create("a", "60s");
    rig.disk
        .faults
        .extend([Fault::Lost, Fault::Unreadable, Fault::Unreadable]);
    assert_eq!(rig.create("b", "60s"), 503);
    assert!(!rig.core.in_step_with_disk());
    // Clients waiting make the turn try to reload: it fails again.
    assert_eq!(rig.create("c", "60s"), 503);
    assert_eq!(rig.ask(Method::Get, "/v1/tasks/a", "").status, 200);
    assert_eq!(rig.disk.commits, 2, "nothing written while in doubt");
    assert_eq!(
        rig.disk.loads, 3,
        "the start-up's, the failure's, the waiting client's"
    );
    rig.advance(STORE_RETRY);
    assert!(rig.core.in_step_with_disk(), "reloaded at the retry time");
    assert_eq!(rig.create("c", "60s"), 201);
}

#[test]
fn a_failed_commit_sends_no_events_to_the_streams() {
    let mut rig = Rig::new();
    rig.create("a", "10s");
    assert_eq!(rig.core.take_event_lines().len(), 1);
    rig.disk.faults.push_back(Fault::Lost);
    rig.create("b", "10s");
    assert!(rig.core.take_event_lines().is_empty());
}

// Clock steps.

#[test]
fn a_forward_step_expires_what_it_passed_in_one_commit() {
    let mut rig = Rig::new();
    rig.create("a", "60s");
    rig.create("b", "1h");
    let commits = rig.disk.commits;
    rig.step_wall(true, secs(120));
    assert_eq!(rig.disk_names(), ["b"]);
    assert_eq!(rig.disk.commits, commits + 1);
    assert!(rig.event_kinds().contains(&EventKind::Expired));
    assert_eq!(rig.core.metrics().clock_steps_forward, 1);
}

#[test]
fn a_step_back_moves_every_hold_with_it_and_keeps_its_remaining_time() {
    let mut rig = Rig::new();
    rig.create("a", "60s");
    let before = rig.disk.rows["a"].expires_at;
    rig.step_wall(false, secs(600));
    assert_eq!(
        rig.disk.rows["a"].expires_at,
        before.saturating_sub(secs(600))
    );
    assert_eq!(
        rig.now().wall,
        rig.wall,
        "the timeline follows the wall clock"
    );
    rig.advance(secs(59));
    assert_eq!(rig.disk_names(), ["a"], "not shortened");
    rig.advance(secs(1));
    assert!(rig.disk_names().is_empty(), "not stretched");
    assert_eq!(rig.core.metrics().clock_steps_backward, 1);
}

#[test]
fn a_small_disagreement_of_the_clocks_is_no_step() {
    let mut rig = Rig::new();
    rig.create("a", "60s");
    let commits = rig.disk.commits;
    rig.step_wall(false, Duration::from_millis(500));
    assert_eq!(rig.disk.commits, commits);
    assert_eq!(rig.core.metrics().clock_steps_backward, 0);
}

#[test]
fn a_step_back_on_a_failing_disk_stretches_nothing_and_is_taken_once_it_heals() {
    let mut rig = Rig::new();
    rig.create("a", "60s");
    let before = rig.disk.rows["a"].expires_at;
    rig.disk.faults.push_back(Fault::Full);
    rig.step_wall(false, secs(600));
    assert_eq!(rig.disk.rows["a"].expires_at, before, "not moved yet");
    assert!(
        rig.now().wall > rig.wall,
        "the old timeline holds meanwhile"
    );
    rig.advance(STORE_RETRY);
    assert_eq!(
        rig.disk.rows["a"].expires_at,
        before.saturating_sub(secs(600))
    );
    assert_eq!(rig.now().wall, rig.wall);
}

#[test]
fn a_step_back_whose_commit_tore_is_taken_when_the_reload_finds_it() {
    let mut rig = Rig::new();
    rig.create("a", "60s");
    let before = rig.disk.rows["a"].expires_at;
    rig.disk.faults.push_back(Fault::Torn);
    rig.step_wall(false, secs(600));
    assert_eq!(
        rig.disk.rows["a"].expires_at,
        before.saturating_sub(secs(600))
    );
    assert_eq!(rig.now().wall, rig.wall, "followed after the reload");
    assert_eq!(rig.core.metrics().clock_steps_backward, 1);
}

// Bound processes.

#[test]
fn a_bound_task_is_watched_and_released_when_its_process_exits() {
    let mut rig = Rig::new();
    rig.machine.running.insert(77, 5);
    let body = r#"{"name":"job","expire":"1h","pid":77}"#;
    assert_eq!(rig.ask(Method::Post, "/v1/tasks", body).status, 201);
    let binding = Binding {
        pid: 77,
        start_time: 5,
    };
    assert_eq!(
        rig.watch_changes,
        [WatchChange::Watch(TaskName::parse("job").unwrap(), binding)]
    );
    rig.core
        .process_exited(TaskName::parse("job").unwrap(), binding);
    assert_eq!(rig.core.poll_timeout(rig.now()), Some(rig.now().mono));
    rig.turn(&[]);
    assert!(rig.disk_names().is_empty());
    assert_eq!(rig.event_kinds().last(), Some(&EventKind::Idle));
    assert_eq!(rig.core.metrics().released, 1);
}

#[test]
fn a_heartbeat_for_the_watched_process_asks_the_machine_nothing() {
    let mut rig = Rig::new();
    rig.machine.running.insert(77, 5);
    let body = r#"{"expire":"1m","pid":77}"#;
    for _ in 0..3 {
        assert_eq!(rig.ask(Method::Put, "/v1/tasks/job", body).status, 200);
    }
    assert_eq!(rig.machine.binds, 1);
    assert_eq!(
        rig.machine.holders, 1,
        "the holder is read once a connection"
    );
}

#[test]
fn binding_a_process_the_machine_cannot_see_is_refused_with_its_sentence() {
    let mut rig = Rig::new();
    let response = rig.ask(
        Method::Post,
        "/v1/tasks",
        r#"{"name":"job","expire":"1m","pid":78}"#,
    );
    assert_eq!(response.status, 422);
    assert_eq!(error_of(&response), "no process 78");
    assert_eq!(rig.disk.commits, 0);
}

#[test]
fn deleting_a_bound_task_stops_its_watch() {
    let mut rig = Rig::new();
    rig.machine.running.insert(77, 5);
    rig.ask(
        Method::Post,
        "/v1/tasks",
        r#"{"name":"job","expire":"1m","pid":77}"#,
    );
    rig.ask(Method::Delete, "/v1/tasks/job", "");
    assert_eq!(
        rig.watch_changes.last(),
        Some(&WatchChange::Unwatch(TaskName::parse("job").unwrap()))
    );
    assert_eq!(rig.core.watched_len(), 0);
}

#[test]
fn an_exit_reported_after_the_task_is_gone_is_dropped() {
    let mut rig = Rig::new();
    rig.machine.running.insert(77, 5);
    rig.ask(
        Method::Post,
        "/v1/tasks",
        r#"{"name":"job","expire":"1m","pid":77}"#,
    );
    rig.ask(Method::Delete, "/v1/tasks/job", "");
    let commits = rig.disk.commits;
    rig.core.process_exited(
        TaskName::parse("job").unwrap(),
        Binding {
            pid: 77,
            start_time: 5,
        },
    );
    rig.turn(&[]);
    assert_eq!(rig.disk.commits, commits, "nothing to release");
    assert_eq!(
        rig.core.poll_timeout(rig.now()),
        None,
        "nothing keeps it awake"
    );
}

#[test]
fn a_process_that_cannot_be_watched_holds_until_its_expiry() {
    let mut rig = Rig::new();
    rig.machine.running.insert(77, 5);
    rig.ask(
        Method::Post,
        "/v1/tasks",
        r#"{"name":"job","expire":"1m","pid":77}"#,
    );
    rig.core.watch_failed(&TaskName::parse("job").unwrap());
    assert_eq!(rig.core.watched_len(), 0);
    rig.advance(secs(59));
    assert_eq!(rig.disk_names(), ["job"]);
    rig.advance(secs(1));
    assert!(rig.disk_names().is_empty());
}

#[test]
fn a_bound_process_replaced_under_the_same_pid_is_released_at_the_next_load() {
    let mut rig = Rig::new();
    rig.machine.running.insert(77, 5);
    rig.ask(
        Method::Post,
        "/v1/tasks",
        r#"{"name":"job","expire":"1h","pid":77}"#,
    );
    rig.machine.running.insert(77, 6);
    let disk = std::mem::take(&mut rig.disk);
    let mut restarted = Rig::recovered_on(disk, rig.wall, rig.machine);
    assert!(restarted.disk_names().is_empty());
    assert_eq!(restarted.create("job", "1m"), 201, "the name is free again");
}

// Recovery.

#[test]
fn what_fell_due_while_down_is_removed_by_the_first_commit() {
    let mut rig = Rig::new();
    rig.create("short", "10s");
    rig.create("long", "1h");
    let disk = std::mem::take(&mut rig.disk);
    let rig = Rig::recovered(disk, T0.checked_add(secs(60)).unwrap());
    assert_eq!(rig.disk_names(), ["long"]);
    assert_eq!(rig.edges, [Edge::Held], "held from the previous run");
}

#[test]
fn a_bound_process_gone_while_down_is_released_at_start() {
    let mut rig = Rig::new();
    rig.machine.running.insert(77, 5);
    rig.ask(
        Method::Post,
        "/v1/tasks",
        r#"{"name":"job","expire":"1h","pid":77}"#,
    );
    let disk = std::mem::take(&mut rig.disk);
    // The new rig's machine runs nothing.
    let rig = Rig::recovered(disk, T0.checked_add(secs(5)).unwrap());
    assert!(rig.disk_names().is_empty());
    assert_eq!(rig.event_kinds().last(), Some(&EventKind::Idle));
}

#[test]
fn a_clock_set_back_while_down_moves_the_holds_back() {
    let mut rig = Rig::new();
    rig.create("a", "60s");
    let before = rig.disk.rows["a"].expires_at;
    let disk = std::mem::take(&mut rig.disk);
    let rig = Rig::recovered(disk, T0.saturating_sub(secs(3600)));
    assert_eq!(
        rig.disk.rows["a"].expires_at,
        before.saturating_sub(secs(3600))
    );
    assert_eq!(rig.core.metrics().clock_steps_backward, 1);
}

// Shares.

#[test]
fn a_uid_past_its_share_is_refused_with_a_503_that_says_so() {
    let mut rig = Rig::new();
    let now = rig.now();
    // Connections 1 to 3 are the uid's whole share.
    let refused = rig
        .core
        .connect(ConnId(4), Some(credentials(UID)), now)
        .expect_err("past the share");
    assert_eq!(refused.status, 503);
    assert!(
        error_of(&refused).contains("uid 1000"),
        "{}",
        error_of(&refused)
    );
    assert!(
        rig.core
            .connect(ConnId(5), Some(credentials(OTHER_UID)), now)
            .is_ok(),
        "another uid has its own share"
    );
    rig.core.disconnect(ConnId(1));
    assert!(
        rig.core
            .connect(ConnId(6), Some(credentials(UID)), now)
            .is_ok()
    );
}

#[test]
fn the_reserve_is_kept_for_root_and_the_daemons_uid() {
    let mut rig = Rig::new();
    let now = rig.now();
    assert!(
        rig.core
            .connect(ConnId(4), Some(credentials(OTHER_UID)), now)
            .is_ok()
    );
    // Four of six are taken; the last two are the reserve.
    assert!(
        rig.core
            .connect(ConnId(5), Some(credentials(2000)), now)
            .is_err()
    );
    assert!(
        rig.core
            .connect(ConnId(6), Some(credentials(0)), now)
            .is_ok()
    );
    assert!(
        rig.core
            .connect(ConnId(7), Some(credentials(DAEMON_UID)), now)
            .is_ok()
    );
    assert!(
        rig.core
            .connect(ConnId(8), Some(credentials(0)), now)
            .is_err(),
        "full"
    );
}

#[test]
fn a_uid_past_its_streams_is_refused_and_a_closed_stream_frees_its_place() {
    let mut rig = Rig::new();
    let answers = rig.turn(&[
        (1, Method::Get, "/v1/events", ""),
        (2, Method::Get, "/v1/events", ""),
    ]);
    assert!(matches!(answers[0], Answer::Stream(_)));
    assert!(matches!(&answers[1], Answer::Response(r) if r.status == 503));
    rig.core.disconnect(ConnId(1));
    let answers = rig.turn(&[(2, Method::Get, "/v1/events", "")]);
    assert!(matches!(answers[0], Answer::Stream(_)));
}

#[test]
fn a_stream_replays_what_came_after_since() {
    let mut rig = Rig::new();
    rig.create("a", "10s");
    rig.create("b", "10s");
    let answers = rig.turn(&[(1, Method::Get, "/v1/events?since=1", "")]);
    let Answer::Stream(head) = &answers[0] else {
        panic!("{:?}", answers[0]);
    };
    let text = String::from_utf8_lossy(head);
    assert!(text.contains(r#""task":"b""#), "{text}");
    assert!(!text.contains(r#""task":"a""#), "{text}");
}

// Ownership, as the core passes the peer's uid on.

#[test]
fn another_uid_cannot_delete_a_task_it_does_not_own() {
    let mut rig = Rig::new();
    rig.create("a", "10s");
    let now = rig.now();
    rig.core
        .connect(ConnId(9), Some(credentials(OTHER_UID)), now)
        .unwrap();
    let answers = rig.turn(&[(9, Method::Delete, "/v1/tasks/a", "")]);
    assert!(matches!(&answers[0], Answer::Response(r) if r.status == 403));
    assert_eq!(rig.disk_names(), ["a"]);
}
