//! The `reactor` target: the daemon's I/O-free core ([`Core`]) and its
//! connections ([`Connections`], the same code the mio shell runs) driven
//! as the shell drives them, over in-memory streams, an in-memory store
//! that fails on demand ([`MemoryStore`]) and a table of processes.
//!
//! The input is decoded into a plan first ([`Step`]s); the plan is run
//! twice, once with each delivery cut into the pieces the input chose
//! (each arriving in a wake of its own, as bytes trickling into a socket)
//! and once whole, and where no commit failed the two runs must write the
//! same bytes to every connection.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::io::{self, Read, Write};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::api;
use crate::conn::Timeouts;
use crate::http::{HttpDate, Limits, Method, Request};
use crate::process::Credentials;
use crate::server::connections::{Connections, Readiness};
use crate::server::core::{
    ConnId, Core, Edge, Handled, Now, Outside, Processes, STORE_RETRY, Settings, WatchChange,
};
use crate::shares::ShareLimits;
use crate::tasks::{Binding, Holder, Ownership, TaskName};
use crate::testing::memory_store::MemoryStore;
use crate::time::Timestamp;

use super::START_NANOS;
use super::tasks_model::{ModelRules, ModelState};

mod answers;
mod plan;

use answers::{comparable, listed_names, parse_response};
use plan::{DAEMON_UID, Expect, PIDS, Plan, Step, UIDS, plan_of};

/// One end of a connection: what the peer sent and the reactor has not
/// read, and what the reactor wrote.
#[derive(Debug, Default)]
struct Pipe {
    inbox: VecDeque<u8>,
    hung_up: bool,
    written: Vec<u8>,
}

/// The reactor's side of a [`Pipe`], as a stream socket: a read returns
/// all that waits (up to the room given), `WouldBlock` when nothing does.
struct MemStream {
    pipe: Rc<RefCell<Pipe>>,
}

impl Read for MemStream {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let mut pipe = self.pipe.borrow_mut();
        if pipe.inbox.is_empty() {
            return match pipe.hung_up {
                true => Ok(0),
                false => Err(io::ErrorKind::WouldBlock.into()),
            };
        }
        let n = pipe.inbox.len().min(out.len());
        for (slot, byte) in out.iter_mut().zip(pipe.inbox.drain(..n)) {
            *slot = byte;
        }
        Ok(n)
    }
}

impl Write for MemStream {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.pipe.borrow_mut().written.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The machine's processes, as the core asks about them.
struct Machine {
    running: HashSet<u32>,
}

impl Processes for Machine {
    fn bind(&mut self, _: &TaskName, pid: u32) -> Result<Binding, (u16, String)> {
        match self.running.contains(&pid) {
            true => Ok(Binding { pid, start_time: 1 }),
            false => Err((422, format!("no process {pid}"))),
        }
    }

    fn holder(&mut self, credentials: Credentials) -> Holder {
        Holder {
            pid: credentials.pid,
            uid: Some(credentials.uid),
            command: Some("agent".into()),
            parent_pid: None,
            parent_command: None,
        }
    }
}

/// A connection as the harness follows it: bytes not yet delivered, the
/// answers it expects, and its output parsed so far.
#[derive(Default)]
struct Peer {
    queued: Vec<u8>,
    expects: VecDeque<Expect>,
    /// Raw bytes were queued: answers are no longer matched to commands.
    unchecked: bool,
    /// Bytes of `written` already parsed into responses.
    parsed: usize,
    /// Closed by the reactor.
    closed: bool,
}

/// One run of a plan.
struct Run {
    core: Core,
    conns: Connections<MemStream>,
    store: MemoryStore,
    machine: Machine,
    pipes: Vec<Rc<RefCell<Pipe>>>,
    peers: Vec<Peer>,
    rules: ModelRules,
    base: Instant,
    elapsed: Duration,
    wall: Timestamp,
    date: HttpDate,
    /// Whether the last edge was `Held`.
    held: bool,
    /// Bindings the core asked to watch.
    watched: HashMap<TaskName, Binding>,
    /// Every (task, binding) reported exited.
    exited: BTreeSet<(String, u32)>,
    /// A commit or reload failed in this wake.
    failed_now: bool,
    last_failure: Option<Instant>,
    /// Commits and reloads that failed in the run.
    failures: usize,
    /// Deliveries arrive whole instead of in the planned pieces.
    whole: bool,
}

fn settings(plan: &Plan) -> Settings {
    Settings {
        max_tasks: plan.max_tasks,
        max_bound: 100,
        ownership: match plan.max_per_uid {
            None => Ownership::Shared,
            Some(max_per_uid) => Ownership::Owned { max_per_uid },
        },
        max_expire: Duration::from_secs(3600),
        event_retention: 64,
        max_held_for: None,
        usage_retention: crate::usage::DEFAULT_USAGE_RETENTION,
        usage_max_holds: crate::usage::DEFAULT_MAX_USAGE_HOLDS,
        shares: ShareLimits {
            max_connections: 16,
            reserved: 2,
            per_uid: 8,
            streams_per_uid: 4,
        },
        daemon_uid: DAEMON_UID,
    }
}

fn unix_second(now: Timestamp) -> u64 {
    now.as_nanos() / 1_000_000_000
}

impl Run {
    fn new(plan: &Plan, whole: bool) -> Run {
        let mut store = MemoryStore::default();
        let base = Instant::now();
        let wall = Timestamp::from_nanos(START_NANOS);
        let loaded = store.load().expect("an empty store loads");
        let (core, _) = Core::recover(settings(plan), loaded, wall, base);
        let mut run = Run {
            core,
            conns: Connections::new(Limits::default(), Timeouts::default()),
            store,
            machine: Machine {
                running: PIDS.into_iter().collect(),
            },
            pipes: Vec::new(),
            peers: Vec::new(),
            rules: ModelRules {
                max: plan.max_tasks,
                max_per_uid: plan.max_per_uid,
            },
            base,
            elapsed: Duration::ZERO,
            wall,
            date: HttpDate::at(unix_second(wall)),
            held: false,
            watched: HashMap::new(),
            exited: BTreeSet::new(),
            failed_now: false,
            last_failure: None,
            failures: 0,
            whole,
        };
        let now = run.core.now(base);
        run.core.seal_recovery(now);
        run.settle(now);
        run.core.finish_recovery(now);
        for (index, uid) in UIDS.into_iter().enumerate() {
            let id = ConnId(index);
            let credentials = Credentials {
                pid: Some(4000 + index as u32),
                uid,
            };
            run.core
                .connect(id, Some(credentials), now)
                .expect("the shares admit the target's connections");
            let pipe = Rc::new(RefCell::new(Pipe::default()));
            run.conns.insert(
                id,
                MemStream {
                    pipe: Rc::clone(&pipe),
                },
                base,
            );
            run.pipes.push(pipe);
            run.peers.push(Peer::default());
        }
        run
    }

    fn mono(&self) -> Instant {
        self.base + self.elapsed
    }

    /// Runs `step`; after one that woke the reactor, checks what it
    /// serves against the disk.
    fn step(&mut self, step: &Step) {
        self.take(step);
        if !matches!(step, Step::Queue { .. } | Step::Raw { .. } | Step::Fault(_)) {
            let now = self.core.now(self.mono());
            self.check_state(now);
        }
    }

    fn take(&mut self, step: &Step) {
        match step {
            Step::Queue {
                conn,
                bytes,
                expect,
            } => {
                let peer = &mut self.peers[*conn];
                peer.queued.extend_from_slice(bytes);
                peer.expects.push_back(expect.clone());
            }
            Step::Raw { conn, bytes } => {
                let peer = &mut self.peers[*conn];
                peer.queued.extend_from_slice(bytes);
                peer.unchecked = true;
            }
            Step::Deliver { conn, len, pieces } => {
                let peer = &mut self.peers[*conn];
                let len = (*len).min(peer.queued.len());
                let bytes: Vec<u8> = peer.queued.drain(..len).collect();
                if peer.closed || bytes.is_empty() {
                    return self.wake(&[]);
                }
                let mut rest = bytes.as_slice();
                if !self.whole {
                    for size in pieces {
                        // The last piece is whatever remains.
                        if *size >= rest.len() {
                            break;
                        }
                        let (piece, after) = rest.split_at(*size);
                        rest = after;
                        self.pipes[*conn].borrow_mut().inbox.extend(piece);
                        self.wake(&[*conn]);
                    }
                }
                self.pipes[*conn].borrow_mut().inbox.extend(rest);
                self.wake(&[*conn]);
            }
            Step::HangUp { conn } => {
                self.pipes[*conn].borrow_mut().hung_up = true;
                self.wake(&[*conn]);
            }
            Step::Clock { forward, by, mono } => {
                if *mono {
                    self.elapsed += *by;
                }
                self.wall = match forward {
                    true => self.wall.checked_add(*by).unwrap_or(self.wall),
                    false => self.wall.saturating_sub(*by),
                };
                self.wake(&[]);
            }
            Step::Fault(fault) => self.store.faults.push_back(*fault),
            Step::Exit { pid } => {
                self.machine.running.remove(pid);
                let gone: Vec<(TaskName, Binding)> = self
                    .watched
                    .iter()
                    .filter(|(_, binding)| binding.pid == *pid)
                    .map(|(name, binding)| (name.clone(), *binding))
                    .collect();
                for (name, binding) in gone {
                    self.watched.remove(&name);
                    self.exited.insert((name.as_str().to_owned(), binding.pid));
                    self.core.process_exited(name, binding);
                }
                self.wake(&[]);
            }
        }
    }

    /// Writes and reloads what the core asks, as the shell's `settle`,
    /// then carries out the watches and checks the edges.
    fn settle(&mut self, now: Now) {
        loop {
            if self.core.wants_load(self.conns.has_ready(), now) {
                let loaded = self.store.load();
                if loaded.is_err() {
                    self.failed(now);
                }
                self.core.loaded(loaded, now);
                continue;
            }
            let Some(commit) = self.core.take_commit() else {
                break;
            };
            let result = self.store.commit(&commit);
            if result.is_err() {
                self.failed(now);
            }
            self.core.committed(commit, result, Duration::ZERO, now);
        }
        for change in self.core.take_watch_changes() {
            match change {
                WatchChange::Watch(name, binding) => {
                    if self.machine.running.contains(&binding.pid) {
                        self.watched.insert(name, binding);
                    } else {
                        self.exited.insert((name.as_str().to_owned(), binding.pid));
                        self.core.process_exited(name, binding);
                    }
                }
                WatchChange::Unwatch(name) => {
                    self.watched.remove(&name);
                }
            }
        }
        for edge in self.core.take_edges() {
            let held = matches!(edge, Edge::Held);
            assert_ne!(held, self.held, "two {edge:?} edges in a row");
            self.held = held;
        }
    }

    fn failed(&mut self, now: Now) {
        self.failures += 1;
        self.failed_now = true;
        self.last_failure = Some(now.mono);
    }

    /// One wake of the shell's loop with `readable` connections, then the
    /// checks.
    fn wake(&mut self, readable: &[usize]) {
        let mono = self.mono();
        self.failed_now = false;
        let in_step_before = self.core.in_step_with_disk();
        let observed = self.core.observe_clock(self.wall, mono);
        self.settle(observed);
        let now = self.core.now(mono);
        self.date.advance(unix_second(now.wall));
        for conn in readable {
            let ready = Readiness {
                readable: true,
                hung_up: self.pipes[*conn].borrow().hung_up,
                writable: false,
            };
            self.conns.readiness(ConnId(*conn), ready, mono);
        }
        // The shell's turn.
        self.settle(now);
        // The model is exact in a turn that starts in step with the disk,
        // past any retry wait: due rows and exited holders are removed
        // first, then the commands are planned in the order answered.
        // (A connection that sent raw bytes may have framed any request:
        // while it is open, the model cannot follow.)
        let clean = self.core.in_step_with_disk()
            && !self.failed_now
            && self.last_failure.is_none_or(|at| mono >= at + STORE_RETRY)
            && self.peers.iter().all(|peer| !peer.unchecked || peer.closed);
        let mut model = clean.then(|| self.model_at_turn_start(now));
        self.core.start_turn(now);
        let waiting = self.conns.take_ready(
            &mut self.core,
            &mut self.machine,
            Outside::default(),
            &self.date,
            now,
        );
        let failures_before = self.failures;
        self.core.seal_turn(now);
        self.settle(now);
        let turn_failed = self.failures > failures_before;
        self.conns
            .answer_waiting(waiting, &mut self.core, &self.date, now);
        self.core.finish_turn();
        self.conns.broadcast(&mut self.core, now);
        self.tidy();
        self.core.log_summaries(now);
        self.conns.sweep(&mut self.core, &self.date, mono);
        self.tidy();
        let may_fail = self.failed_now || !in_step_before;
        self.check_answers(now, model.as_mut(), may_fail, turn_failed);
        if let Some(model) = model
            && !turn_failed
        {
            self.check_model(&model, now);
        }
        // Requests left for the next turn: the shell polls with no
        // timeout, so it comes back at once, with no time passed.
        if self.conns.has_ready() {
            self.wake(&[]);
        }
    }

    fn tidy(&mut self) {
        for id in self.conns.take_interest_changes() {
            self.conns.set_interest(id, |_, _| Ok(()));
        }
        for (id, _) in self.conns.take_closed() {
            self.core.disconnect(id);
            self.peers[id.0].closed = true;
        }
    }

    /// The disk's rows as the model holds them, less the due rows and
    /// the exited holders' tasks that the turn's start removes.
    fn model_at_turn_start(&self, now: Now) -> ModelState {
        let mut model = ModelState::default();
        for (name, task) in &self.store.rows {
            let due = task.expires_at <= now.wall;
            let released = task
                .binding
                .is_some_and(|binding| self.exited.contains(&(name.clone(), binding.pid)));
            if !due && !released {
                let row = (task.started_at.as_nanos(), task.expires_at.as_nanos());
                model.put(name, row, task.owner);
            }
        }
        model
    }

    /// Parses what each connection was written since the last wake and
    /// checks every answer: no 5xx but where a commit failed (or memory was
    /// in doubt); a mutation's status as the model plans it.
    fn check_answers(
        &mut self,
        now: Now,
        mut model: Option<&mut ModelState>,
        may_fail: bool,
        turn_failed: bool,
    ) {
        // The core plans the connections' requests in the order it answers
        // them: connection by connection as they were taken.
        for conn in 0..self.peers.len() {
            let written = self.pipes[conn].borrow().written.clone();
            let peer = &mut self.peers[conn];
            while !peer.unchecked {
                let Some((status, len)) = parse_response(&written[peer.parsed..]) else {
                    break;
                };
                peer.parsed += len;
                let Some(expect) = peer.expects.pop_front() else {
                    panic!("connection {conn} answered {status} to no request");
                };
                if matches!(status, 500 | 502..=504) {
                    assert!(
                        may_fail,
                        "{status} on connection {conn} though no commit failed ({expect:?})"
                    );
                }
                let Expect::Mutation { command, bind } = expect else {
                    continue;
                };
                if status == 408 {
                    // It did not arrive whole before its deadline: the
                    // core never saw it.
                    continue;
                }
                if turn_failed {
                    // Nothing acknowledged that the disk did not confirm.
                    assert!(
                        status >= 400,
                        "{status} for {command:?} in a turn whose commit failed"
                    );
                    continue;
                }
                let Some(model) = model.as_deref_mut() else {
                    continue;
                };
                let expected = match bind {
                    Some(pid) if !self.machine.running.contains(&pid) => 422,
                    _ => api::outcome(&model.run(&command, now.wall.as_nanos(), self.rules)).status,
                };
                assert_eq!(
                    status, expected,
                    "{command:?} on connection {conn} at {}",
                    now.wall
                );
            }
        }
    }

    /// After a turn whose commits all held: the disk is the model.
    fn check_model(&self, model: &ModelState, now: Now) {
        let disk: Vec<(String, u64, Option<u32>)> = self
            .store
            .rows
            .iter()
            .map(|(name, task)| (name.clone(), task.expires_at.as_nanos(), task.owner))
            .collect();
        let expected: Vec<(String, u64, Option<u32>)> = model
            .rows
            .iter()
            .map(|(name, (_, expires))| (name.clone(), *expires, model.owners[name]))
            .collect();
        assert_eq!(disk, expected, "the disk after the turn at {}", now.wall);
    }

    /// What the core serves is the disk's rows live at `now`; the edges
    /// match.
    fn check_state(&mut self, now: Now) {
        assert_eq!(
            self.held,
            self.core.is_held(),
            "the last edge and the state"
        );
        if !self.core.in_step_with_disk() {
            return;
        }
        assert_eq!(
            self.held,
            !self.store.rows.is_empty(),
            "the last edge and the disk"
        );
        let request = Request {
            method: Method::Get,
            target: "/v1/tasks".to_owned(),
            minor_version: 1,
            keep_alive: true,
            body: Vec::new(),
        };
        let Handled::Answer(response) = self.core.handle(
            &mut self.machine,
            ConnId(0),
            &request,
            false,
            &self.date,
            now,
        ) else {
            panic!("a list is answered at once");
        };
        let served = listed_names(&response.body);
        let live: BTreeSet<String> = self
            .store
            .rows
            .iter()
            .filter(|(_, task)| task.expires_at > now.wall)
            .map(|(name, _)| name.clone())
            .collect();
        assert_eq!(
            served, live,
            "served tasks vs the disk's rows live at {}",
            now.wall
        );
    }

    /// Delivers what is still queued, so every request is answered.
    fn finish(&mut self) {
        for conn in 0..self.peers.len() {
            let len = self.peers[conn].queued.len();
            if len > 0 {
                self.step(&Step::Deliver {
                    conn,
                    len,
                    pieces: Vec::new(),
                });
            }
        }
    }
}

/// `reactor`: connections of three uids send requests (creates, some
/// bound to a process, refreshes, deletes, reads, or raw bytes) cut into
/// pieces, interleaved with clock moves (both clocks, or the wall clock
/// stepped forward or back), commit and reload failures (lost, torn, the
/// log full, unreadable), hang-ups and exiting processes.
///
/// Properties, after every turn: no panic; no 500/502/503/504 unless a
/// commit or reload failed in that turn or memory was in doubt at its
/// start; in a turn whose commit failed, no mutation is acknowledged; in a
/// turn that starts in step with the disk, every mutation's status is the
/// one the `tasks_model` model plans, in the order answered, and after it
/// the disk holds exactly the model's rows; the tasks served are the
/// disk's rows live at `now` (none past its expiry, none gone before it);
/// held and idle edges alternate and the last one matches the state and
/// the disk. And, where no commit failed, every connection is written
/// the same bytes whether its deliveries arrive in the planned pieces (a
/// wake each) or whole.
pub fn reactor(data: &[u8]) {
    let plan = plan_of(data);
    // Without a cut the second run would repeat the first.
    let cut = plan
        .steps
        .iter()
        .any(|step| matches!(step, Step::Deliver { pieces, .. } if !pieces.is_empty()));
    let runs: &[bool] = if cut { &[false, true] } else { &[false] };
    let mut outputs = Vec::new();
    for &whole in runs {
        let mut run = Run::new(&plan, whole);
        for step in &plan.steps {
            run.step(step);
        }
        run.finish();
        if run.failures > 0 {
            // A failure falls on whichever commit comes first, and the
            // pieces make more commits: the runs may part.
            return;
        }
        let written: Vec<Vec<u8>> = run
            .pipes
            .iter()
            .map(|pipe| comparable(&pipe.borrow().written))
            .collect();
        outputs.push(written);
    }
    let [cut_run, whole_run] = outputs.as_slice() else {
        return;
    };
    for (conn, (cut, whole)) in cut_run.iter().zip(whole_run).enumerate() {
        assert!(
            cut == whole,
            "connection {conn}: the answers depend on how its bytes were cut:\n{}\n---\n{}",
            String::from_utf8_lossy(cut),
            String::from_utf8_lossy(whole)
        );
    }
}
