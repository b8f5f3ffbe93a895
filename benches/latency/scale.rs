//! The scale phases: a daemon holding many live tasks, its list latency,
//! its memory, its start-up over them, and all of them falling due at once
//! while other clients keep working.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::client::{Client, get, list, populate, refresh};
use crate::common::Dirs;
use crate::daemon::Daemon;
use crate::phases::phase;
use crate::summary::Summary;

/// One scale step: `live` tasks.
pub struct ScaleRow {
    pub live: usize,
    pub populate: Duration,
    pub list: Summary,
    pub rss_kib: u64,
    pub peak_kib: u64,
    pub restarted_rss_kib: u64,
    pub startups: Vec<Duration>,
    pub expiry: Option<Expiry>,
}

impl ScaleRow {
    pub fn startup(&self) -> Duration {
        let mut sorted = self.startups.clone();
        sorted.sort_unstable();
        sorted[sorted.len() / 2]
    }
}

/// Many tasks falling due at once, and what other clients saw meanwhile.
pub struct Expiry {
    /// From the daemon's resumption to every task's removal being counted.
    pub all_removed: Duration,
    pub reads: Summary,
    pub writes: Summary,
}

/// Populates `live` tasks, lists them, measures memory and restarts, then
/// lets them all fall due at once while two clients keep working.
pub fn scale(live: usize, duration: Duration, restarts: usize) -> ScaleRow {
    let dirs = Dirs::new();
    let (daemon, _) = Daemon::start(&dirs);
    let names: Vec<String> = (0..live).map(|i| format!("s-{i:06}")).collect();
    let populate_time = populate(&daemon.socket, &names, "1h");
    let (list, _) = phase(
        &daemon.socket,
        1,
        duration,
        |_| usize::MAX,
        |_, _| (list(), 200),
    );
    let (rss_kib, peak_kib) = daemon.settled_memory_kib();
    daemon.stop();

    let mut startups = Vec::new();
    let mut daemon = None;
    for _ in 0..restarts {
        if let Some(running) = daemon.take() {
            Daemon::stop(running);
        }
        let (started, took) = Daemon::start(&dirs);
        startups.push(took);
        daemon = Some(started);
    }
    let daemon = daemon.expect("at least one restart");
    let (restarted_rss_kib, _) = daemon.settled_memory_kib();
    let expiry = expire_at_once(&daemon, &names, populate_time);
    daemon.stop();
    ScaleRow {
        live,
        populate: populate_time,
        list,
        rss_kib,
        peak_kib,
        restarted_rss_kib,
        startups,
        expiry: Some(expiry),
    }
}

/// Refreshes every task to fall due a few seconds later, stops the daemon
/// (SIGSTOP, as a suspended VM) until all are due, resumes it, and measures
/// a reader and a writer of other tasks until every removal is counted.
fn expire_at_once(daemon: &Daemon, names: &[String], populate_time: Duration) -> Expiry {
    let mut setup = Client::connect(&daemon.socket);
    assert_eq!(setup.call(&refresh("probe-read", "1h")).0, 200);
    let expired_before = daemon.metrics()["sprite_tasks_expired_total"];
    // Long enough that none falls due before the last is refreshed.
    let expire_secs = (populate_time.as_secs_f64() * 2.0).ceil() as u64 + 2;
    let refreshed = Instant::now();
    let refresh_time = populate(&daemon.socket, names, &format!("{expire_secs}s"));
    assert!(
        refresh_time < Duration::from_secs(expire_secs),
        "refreshing took longer than the expiry"
    );
    daemon.signal(libc::SIGSTOP);
    let all_due = refreshed + refresh_time + Duration::from_secs(expire_secs);
    std::thread::sleep(
        all_due.saturating_duration_since(Instant::now()) + Duration::from_millis(200),
    );
    let done = AtomicBool::new(false);
    let socket = &daemon.socket;
    let done = &done;
    let probe = |make: fn(usize) -> (Vec<u8>, u16)| {
        move || {
            let mut client = Client::connect(socket);
            let mut samples = Vec::new();
            let mut i = 0;
            loop {
                let (bytes, expected) = make(i);
                let sent = Instant::now();
                let (status, _) = client.call(&bytes);
                samples.push(sent.elapsed());
                assert_eq!(status, expected);
                i += 1;
                if done.load(Ordering::Relaxed) {
                    return samples;
                }
            }
        }
    };
    let (all_removed, reads, writes, wall) = std::thread::scope(|scope| {
        daemon.signal(libc::SIGCONT);
        let resumed = Instant::now();
        let reader = scope.spawn(probe(|_| (get("probe-read"), 200)));
        let writer = scope.spawn(probe(|_| (refresh("probe-write", "1h"), 200)));
        let limit = Duration::from_secs(60);
        let all_removed = loop {
            let expired = daemon.metrics()["sprite_tasks_expired_total"] - expired_before;
            if expired >= names.len() as f64 {
                break resumed.elapsed();
            }
            assert!(
                resumed.elapsed() < limit,
                "expiry did not finish in {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(2));
        };
        // Keep probing a moment past the last removal.
        std::thread::sleep(Duration::from_millis(100));
        done.store(true, Ordering::Relaxed);
        let reads = reader.join().expect("the reader");
        let writes = writer.join().expect("the writer");
        (all_removed, reads, writes, resumed.elapsed())
    });
    Expiry {
        all_removed,
        reads: Summary::of(reads, wall),
        writes: Summary::of(writes, wall),
    }
}
