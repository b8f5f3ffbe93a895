//! The measured request phases, driven by `driver` (the daemon's HTTP and
//! Redis's RESP alike): the create/refresh/get/delete phases with Redis's
//! SET and GET alternating with them, the list phases, one client's
//! mutations interleaved with the floors' operations, and one client's GETs
//! interleaved with Redis's.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::client::{
    Client, Connection, Http, Protocol, create, delete, get, list, populate, refresh,
};
use crate::common::Dirs;
use crate::cpu::{self, ServerCpu, Ticks};
use crate::daemon::Daemon;
use crate::driver;
use crate::floors::{FsyncProbe, StoreProbe};
use crate::redis::{
    Redis, Resp, RespClient, redis_benchmark, redis_del, redis_get, redis_populate, redis_set, resp,
};
use crate::summary::Summary;

/// Runs `clients` connections against `socket` for `duration` (or until
/// each has sent `limit(client)` requests). `make(client, i)` builds the
/// i-th request of a client and the status it must get; building is not
/// timed. Returns the summary and each client's request count.
pub fn phase(
    socket: &Path,
    clients: usize,
    duration: Duration,
    limit: impl Fn(usize) -> usize + Sync,
    make: impl Fn(usize, usize) -> (Vec<u8>, u16) + Sync,
) -> (Summary, Vec<usize>) {
    phase_on::<Http>(socket, clients, duration, limit, make)
}

/// Slices each phase beside Redis alternates in (ours first for a
/// mutation, Redis's first for GET).
const SLICES: u32 = 4;

/// [`phase`] over any [`Protocol`]: the daemon's HTTP or Redis's RESP, so
/// both are driven and timed by the same loop.
pub fn phase_on<P: Protocol>(
    socket: &Path,
    clients: usize,
    duration: Duration,
    limit: impl Fn(usize) -> usize + Sync,
    make: impl Fn(usize, usize) -> (Vec<u8>, u16) + Sync,
) -> (Summary, Vec<usize>) {
    let (results, wall) =
        driver::samples::<P>(driver::driver(), socket, clients, duration, limit, make);
    let counts = results.iter().map(Vec::len).collect();
    (Summary::of(results.concat(), wall), counts)
}

/// Group-commit figures of a mutation phase, from the daemon's counters.
#[derive(Debug, Clone, Copy)]
pub struct Commits {
    pub commits: f64,
    pub changes_per_commit: f64,
    pub mean_commit: Duration,
    /// Compactions of the task tables in the phase, and the rows they
    /// wrote: a compaction rewrites every live row, and lands in whichever
    /// phase's changes take the runs past the base.
    pub compactions: f64,
    pub compacted_rows: f64,
}

impl Commits {
    pub fn between(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> Commits {
        let delta = |name: &str| {
            after.get(name).copied().unwrap_or(0.0) - before.get(name).copied().unwrap_or(0.0)
        };
        let commits = delta("sprite_tasks_commit_seconds_count");
        Commits {
            commits,
            changes_per_commit: delta("sprite_tasks_commit_changes_sum") / commits.max(1.0),
            mean_commit: Duration::from_secs_f64(
                (delta("sprite_tasks_commit_seconds_sum") / commits.max(1.0)).max(0.0),
            ),
            compactions: delta("sprite_tasks_compactions_total"),
            compacted_rows: delta("sprite_tasks_compacted_rows_total"),
        }
    }
}

/// One row of the request table.
pub struct Row {
    pub endpoint: &'static str,
    pub clients: usize,
    pub summary: Summary,
    pub commits: Option<Commits>,
    /// The server's CPU over the phase: ours for our endpoints, Redis's for
    /// its commands; none when a wrapper runs the daemon.
    pub cpu: Option<ServerCpu>,
}

/// `redis-benchmark`'s figures at one client count: requests per second and
/// p50 in µs.
pub type CrossCheck = (usize, f64, f64);

/// Runs a phase, charging to it the CPU of the server `pid` when known.
fn charged(pid: Option<u32>, phase: impl FnOnce() -> Summary) -> (Summary, Option<ServerCpu>) {
    match pid {
        None => (phase(), None),
        Some(pid) => {
            let (summary, spent) = cpu::during(pid, phase);
            let requests = summary.count;
            (summary, Some(ServerCpu { spent, requests }))
        }
    }
}

/// One phase run in slices that alternate with another server's: each
/// client's requests numbered across slices, the server's CPU read around
/// its own slices unless [`Slices::charge_window`] says otherwise.
struct Slices {
    samples: Vec<Vec<Duration>>,
    wall: Duration,
    /// Requests each client has sent so far.
    sent: Vec<usize>,
    /// The server's pid and the ticks it spent in its slices.
    cpu: Option<(u32, Ticks)>,
}

impl Slices {
    fn new(clients: usize, pid: Option<u32>) -> Slices {
        Slices {
            samples: Vec::new(),
            wall: Duration::ZERO,
            sent: vec![0; clients],
            cpu: pid.map(|pid| (pid, Ticks::default())),
        }
    }

    /// One more slice; `make(client, i)` builds the client's i-th request
    /// of the whole phase, of which it sends at most `most(client)`.
    fn run<P: Protocol>(
        &mut self,
        socket: &Path,
        slice: Duration,
        most: impl Fn(usize) -> usize + Sync,
        make: impl Fn(usize, usize) -> (Vec<u8>, u16) + Sync,
    ) {
        let base = self.sent.clone();
        let clients = base.len();
        let run = || {
            driver::samples::<P>(
                driver::driver(),
                socket,
                clients,
                slice,
                |c| most(c).saturating_sub(base[c]),
                |c, i| make(c, base[c] + i),
            )
        };
        let (samples, wall) = match &mut self.cpu {
            None => run(),
            Some((pid, spent)) => {
                let (result, more) = cpu::during(*pid, run);
                *spent = *spent + more;
                result
            }
        };
        self.sent
            .iter_mut()
            .zip(&samples)
            .for_each(|(n, s)| *n += s.len());
        self.samples.extend(samples);
        self.wall += wall;
    }

    /// Charges the server with its ticks over a whole window (`window`,
    /// from the first slice to after the last checkpoint its writes
    /// caused) instead of over its own slices; the client's stay its
    /// slices'. The daemon checkpoints a slice's writes after the slice,
    /// while Redis's runs.
    fn charge_window(&mut self, window: Ticks) {
        if let Some((_, spent)) = &mut self.cpu {
            *spent = Ticks {
                client: spent.client,
                ..window
            };
        }
    }

    /// The whole phase's summary and server CPU.
    fn summary(&mut self) -> (Summary, Option<ServerCpu>) {
        let summary = Summary::of(std::mem::take(&mut self.samples).concat(), self.wall);
        let requests = summary.count;
        let cpu = self.cpu.map(|(_, spent)| ServerCpu { spent, requests });
        (summary, cpu)
    }
}

/// A mutation phase on our daemon and, beside it, on Redis: what
/// [`WritePhase::run`] needs of [`mutations_and_gets`].
struct WritePhase<'a> {
    daemon: &'a Daemon,
    peer: Option<&'a Redis>,
    clients: usize,
    slices: u32,
    slice: Duration,
}

/// How many requests a client may send in all, and its i-th request with
/// the status it must get.
type Side<M, R> = (M, R);

impl WritePhase<'_> {
    /// Our slices and Redis's in turn, ours first: our requests by `ours`,
    /// Redis's by `theirs`. Returns both sides' slices and our group-commit
    /// figures. Our CPU is read over the whole phase, Redis's slices
    /// included, and on until our log is checkpointed: the checkpoints a
    /// slice's writes cause run after it. They are left to run as they
    /// would under steady load (every 16,384 changes, or a second after the
    /// first one pending), so some run during Redis's slices: charged to
    /// us, but on two cores and one disk they also slow Redis's slice.
    /// Waiting for them after each slice would force checkpoints the
    /// daemon would not make (refresh 1.08-1.14 x SET's CPU against
    /// 0.94-1.005 x, two runs). The counters are read outside the window.
    fn run(
        &self,
        ours: Side<impl Fn(usize) -> usize + Sync, impl Fn(usize, usize) -> (Vec<u8>, u16) + Sync>,
        theirs: Side<
            impl Fn(usize) -> usize + Sync,
            impl Fn(usize, usize) -> (Vec<u8>, u16) + Sync,
        >,
    ) -> (Slices, Option<Slices>, Commits) {
        let pid = self.daemon.cpu_pid();
        let mut our_slices = Slices::new(self.clients, pid);
        let mut their_slices = self
            .peer
            .map(|peer| Slices::new(self.clients, Some(peer.pid())));
        let counters = self.daemon.metrics();
        let before = pid.map(cpu::cpu_ticks);
        for _ in 0..self.slices {
            our_slices.run::<Http>(&self.daemon.socket, self.slice, &ours.0, &ours.1);
            if let (Some(peer), Some(slices)) = (self.peer, &mut their_slices) {
                slices.run::<Resp>(&peer.socket, self.slice, &theirs.0, &theirs.1);
            }
        }
        self.daemon.wait_checkpointed();
        if let Some((pid, before)) = pid.zip(before) {
            our_slices.charge_window(cpu::cpu_ticks(pid).since(before));
        }
        let commits = Commits::between(&counters, &self.daemon.metrics());
        (our_slices, their_slices, commits)
    }
}

/// The create, refresh, get and delete phases on a fresh daemon; with
/// `redis`, each alternates in [`SLICES`] slices with a fresh Redis's
/// counterpart (SET of new keys, SET of those keys again, GET, DEL), so
/// the machine's noise hits both sides. Each row carries its server's CPU:
/// Redis's over its own slices, ours over its GET slices and over a whole
/// mutation phase and its checkpoints.
/// With `cross_check`, `redis-benchmark` runs after Redis's phases.
pub fn mutations_and_gets(
    clients: usize,
    duration: Duration,
    redis: Option<&Path>,
    cross_check: bool,
) -> (Vec<Row>, Option<CrossCheck>) {
    let dirs = Dirs::new();
    let (daemon, _) = Daemon::start(&dirs);
    let peer = redis.map(|program| {
        let peer = Redis::start(program);
        peer.check_aof();
        peer
    });
    let socket = daemon.socket.clone();
    let ours = daemon.cpu_pid();
    let name = |client: usize, i: usize| format!("c{client}-{i}");
    let unlimited = |_: usize| usize::MAX;
    let mut rows = Vec::new();
    let mut measured = |endpoint: &'static str,
                        commits: Option<Commits>,
                        (summary, cpu): (Summary, Option<ServerCpu>)| {
        rows.push(Row {
            endpoint,
            clients,
            summary,
            commits,
            cpu,
        });
    };

    // With Redis, each mutation phase alternates in slices with Redis's
    // durable write of the same kind (create with SET of new keys, refresh
    // with SET of those keys again, delete with DEL), so that a slow spell
    // of the disk lands on both and the rates and CPU compare.
    let slices = if peer.is_some() { SLICES } else { 1 };
    let slice = duration / slices;
    let writes = WritePhase {
        daemon: &daemon,
        peer: peer.as_ref(),
        clients,
        slices,
        slice,
    };
    let (mut creates, mut sets, commits) = writes.run(
        (unlimited, |c, i| (create(&name(c, i)), 201)),
        (unlimited, |c, i| (redis_set(&name(c, i)), 200)),
    );
    measured("create", Some(commits), creates.summary());
    let created = &creates.sent;
    // Redis's keys, per client (none without Redis: nothing reads them).
    let set_keys = sets
        .as_ref()
        .map_or_else(Vec::new, |sets| sets.sent.clone());
    if let Some(sets) = &mut sets {
        measured("redis SET", None, sets.summary());
    }

    let (mut refreshes, mut sets_again, commits) = writes.run(
        (unlimited, |c, i| {
            (refresh(&name(c, i % created[c]), "1h"), 200)
        }),
        (unlimited, |c, i| {
            (redis_set(&name(c, i % set_keys[c])), 200)
        }),
    );
    measured("refresh", Some(commits), refreshes.summary());
    if let Some(again) = &mut sets_again {
        measured("redis SET again", None, again.summary());
    }

    // Reads alternate in slices too: the host's slow spells (a 64-client
    // GET's CPU ranged from 12 to 20 µs between runs of one build) land
    // on both servers, and the ratios compare. Nothing of ours is left to
    // checkpoint by now, and reads write nothing.
    let mut gets = Slices::new(clients, ours);
    let mut redis_gets = peer
        .as_ref()
        .map(|peer| (peer, Slices::new(clients, Some(peer.pid()))));
    for _ in 0..slices {
        if let Some((peer, redis_gets)) = &mut redis_gets {
            redis_gets.run::<Resp>(&peer.socket, slice, unlimited, |c, i| {
                (redis_get(&name(c, i % set_keys[c])), 200)
            });
        }
        gets.run::<Http>(&socket, slice, unlimited, |c, i| {
            (get(&name(c, i % created[c])), 200)
        });
    }
    if let Some((_, redis_gets)) = &mut redis_gets {
        measured("redis GET", None, redis_gets.summary());
    }
    measured("get", None, gets.summary());

    // Deletes are quicker than creates, and Redis's DEL than its SET: a
    // side that ran out of names would finish its phase with fewer
    // clients. So each side first gets as many names again, unmeasured
    // (and checkpointed), and deletes at most what it then holds.
    let ours_held: Vec<usize> = created.iter().map(|n| 2 * n).collect();
    let extra: Vec<String> = (0..clients)
        .flat_map(|c| (created[c]..ours_held[c]).map(move |i| name(c, i)))
        .collect();
    populate(&socket, &extra, "1h");
    daemon.wait_checkpointed();
    let theirs_held: Vec<usize> = set_keys.iter().map(|n| 2 * n).collect();
    if let Some(peer) = &peer {
        let extra: Vec<String> = (0..clients)
            .flat_map(|c| (set_keys[c]..theirs_held[c]).map(move |i| name(c, i)))
            .collect();
        redis_populate(&peer.socket, &extra);
    }
    let (mut deletes, mut dels, commits) = writes.run(
        (|c| ours_held[c], |c, i| (delete(&name(c, i)), 204)),
        (|c| theirs_held[c], |c, i| (redis_del(&name(c, i)), 200)),
    );
    measured("delete", Some(commits), deletes.summary());
    if let Some(dels) = &mut dels {
        measured("redis DEL", None, dels.summary());
    }
    daemon.stop();
    // About as many requests as our loop sent to Redis in one phase.
    let cross_check = peer.as_ref().filter(|_| cross_check).and_then(|peer| {
        let sets = rows.iter().find(|row| row.endpoint == "redis SET")?;
        let requests = sets.summary.count.clamp(1000, 200_000);
        let (rate, p50) = redis_benchmark(&peer.socket, clients, requests)?;
        Some((clients, rate, p50))
    });
    (rows, cross_check)
}

/// `GET /v1/tasks` with 10 and then 1000 live tasks, at each client count.
pub fn lists(client_counts: &[usize], duration: Duration) -> Vec<Row> {
    let dirs = Dirs::new();
    let (daemon, _) = Daemon::start(&dirs);
    let mut rows = Vec::new();
    for (endpoint, live) in [("list 10", 10), ("list 1000", 1000)] {
        let names: Vec<String> = (0..live).map(|i| format!("l-{i:04}")).collect();
        populate(&daemon.socket, &names, "1h");
        for &clients in client_counts {
            let (summary, cpu) = charged(daemon.cpu_pid(), || {
                phase(
                    &daemon.socket,
                    clients,
                    duration,
                    |_| usize::MAX,
                    |_, _| (list(), 200),
                )
                .0
            });
            rows.push(Row {
                endpoint,
                clients,
                summary,
                commits: None,
                cpu,
            });
        }
    }
    daemon.stop();
    rows
}

/// One client's mutations with the floors' operations interleaved: request,
/// Redis SET (when Redis runs), fsync, redb commit, request, ... The disk's
/// latency on a shared machine drifts by an order of magnitude within
/// seconds; interleaving measures the request, its peer and its floors at
/// the same moments. Not used for rates.
pub struct Paired {
    pub endpoint: &'static str,
    pub request: Summary,
    /// Redis's `SET key value EX 3600` with `appendfsync always`.
    pub redis: Option<Summary>,
    pub fsync: Summary,
    pub store: Summary,
}

pub fn paired_mutations(duration: Duration, redis: Option<&Path>) -> Vec<Paired> {
    let dirs = Dirs::new();
    let (daemon, _) = Daemon::start(&dirs);
    let mut client = Client::connect(&daemon.socket);
    let peer = redis.map(Redis::start);
    let mut peer_client = peer.as_ref().map(|peer| RespClient::connect(&peer.socket));
    let mut fsync = FsyncProbe::new();
    let mut store = StoreProbe::new();
    let mut created = 0;
    let mut results = Vec::new();
    for endpoint in ["create", "refresh", "delete"] {
        let (mut requests, mut fsyncs, mut stores) = (Vec::new(), Vec::new(), Vec::new());
        let mut sets = Vec::new();
        let started = Instant::now();
        let mut i = 0;
        while i == 0 || (started.elapsed() < duration && (endpoint != "delete" || i < created)) {
            let (bytes, expected) = match endpoint {
                "create" => (create(&format!("p-{i}")), 201),
                "refresh" => (refresh(&format!("p-{}", i % created), "1h"), 200),
                _ => (delete(&format!("p-{i}")), 204),
            };
            let at = Instant::now();
            let (status, body) = client.call(&bytes);
            requests.push(at.elapsed());
            assert_eq!(status, expected, "{}", String::from_utf8_lossy(&body));
            if let Some(peer) = &mut peer_client {
                let command = redis_set(&format!("p-{i}"));
                let at = Instant::now();
                let (status, body) = peer.call(&command);
                sets.push(at.elapsed());
                assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
            }
            let at = Instant::now();
            fsync.once();
            fsyncs.push(at.elapsed());
            let at = Instant::now();
            store.once();
            stores.push(at.elapsed());
            i += 1;
        }
        if endpoint == "create" {
            created = i;
        }
        let wall = started.elapsed();
        results.push(Paired {
            endpoint,
            request: Summary::of(requests, wall),
            redis: (!sets.is_empty()).then(|| Summary::of(sets, wall)),
            fsync: Summary::of(fsyncs, wall),
            store: Summary::of(stores, wall),
        });
    }
    drop(client);
    drop(peer_client);
    drop(peer);
    daemon.stop();
    results
}

/// Names the interleaved GETs read in turn.
const PAIRED_KEYS: usize = 64;

/// One client's GETs and one Redis client's GETs of the same keys,
/// interleaved request by request (which goes first alternating), so that
/// the machine's spells land on both: at one client the two servers' p50
/// differ by less than this host's noise from one phase to the next.
///
/// A third series reads, from the same Redis, keys whose values are
/// copies of our answers' bodies. A task's body carries its holder (some
/// 340 bytes; the answer with its HTTP head some 450), Redis's value
/// ([`REDIS_VALUE`](crate::redis::REDIS_VALUE)) 34, and the bytes each
/// side copies are part of a round trip. The target still compares with
/// the second series, which now has half the samples of ours; the third
/// tells how much of the difference is the body's length.
pub struct PairedGets {
    pub ours: Summary,
    pub redis: Summary,
    /// Redis's GETs of values as long as our bodies.
    pub redis_same_bytes: Summary,
    /// The longest of our answers' bodies (Redis's values in that series
    /// are copies of each).
    pub body_bytes: usize,
}

pub fn paired_gets(duration: Duration, redis: &Path) -> PairedGets {
    let dirs = Dirs::new();
    let (daemon, _) = Daemon::start(&dirs);
    let peer = Redis::start(redis);
    let names: Vec<String> = (0..PAIRED_KEYS).map(|i| format!("g-{i}")).collect();
    populate(&daemon.socket, &names, "1h");
    let mut ours = Client::connect(&daemon.socket);
    let mut theirs = RespClient::connect(&peer.socket);
    let mut body_bytes = 0;
    for name in &names {
        assert_eq!(theirs.call(&redis_set(name)).0, 200, "redis SET {name}");
        let (status, body) = ours.call(&get(name));
        assert_eq!(
            status,
            200,
            "GET {name}: {}",
            String::from_utf8_lossy(&body)
        );
        body_bytes = body_bytes.max(body.len());
        let body = String::from_utf8(body).expect("a JSON body is UTF-8");
        let set = resp(&["SET", &same_bytes_key(name), &body, "EX", "3600"]);
        assert_eq!(theirs.call(&set).0, 200, "redis SET of {name}'s body");
    }
    let (mut our_samples, mut their_samples, mut same_samples) =
        (Vec::new(), Vec::new(), Vec::new());
    let started = Instant::now();
    let mut i = 0;
    // Four at least: each series has a sample, and Redis's two as many.
    while i < 4 || started.elapsed() < duration {
        let name = &names[i % names.len()];
        // Redis's key: its own value for two pairs, then our answer's
        // bytes for two, so that each series has as many requests asked
        // right after one to the same server as after the other's.
        let (theirs_get, samples) = if i / 2 % 2 == 0 {
            (redis_get(name), &mut their_samples)
        } else {
            (redis_get(&same_bytes_key(name)), &mut same_samples)
        };
        let our_get = get(name);
        if i % 2 == 0 {
            our_samples.push(timed(&mut ours, &our_get));
            samples.push(timed(&mut theirs, &theirs_get));
        } else {
            samples.push(timed(&mut theirs, &theirs_get));
            our_samples.push(timed(&mut ours, &our_get));
        }
        i += 1;
    }
    drop(ours);
    daemon.stop();
    // Each side's rate over its own time: the three share the wall clock.
    let own = |samples: Vec<Duration>| {
        let time = samples.iter().sum::<Duration>();
        Summary::of(samples, time)
    };
    PairedGets {
        ours: own(our_samples),
        redis: own(their_samples),
        redis_same_bytes: own(same_samples),
        body_bytes,
    }
}

/// The Redis key holding a copy of our answer to GET `name`.
fn same_bytes_key(name: &str) -> String {
    format!("body-{name}")
}

/// One request that must succeed (200), timed.
fn timed<P: Protocol>(connection: &mut Connection<P>, request: &[u8]) -> Duration {
    let at = Instant::now();
    let (status, body) = connection.call(request);
    let took = at.elapsed();
    assert_eq!(
        status,
        200,
        "{}: {}",
        String::from_utf8_lossy(&request[..request.len().min(60)]),
        String::from_utf8_lossy(&body)
    );
    took
}
