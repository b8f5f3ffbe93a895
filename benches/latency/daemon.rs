//! The daemon under test as the bench runs it: `tests/common`'s
//! [`Daemon`](common::Daemon) on `tests/common`'s [`Dirs`], started the
//! bench's way (quiet log on the bench's stderr, room for
//! [`MAX_TASKS`](crate::MAX_TASKS), optionally under a profiler, killed if
//! the bench dies) and timed from spawn to its socket accepting. Also what
//! the bench reads of a running daemon: its memory and its counters.

use std::collections::BTreeMap;
use std::fs;
use std::ops::Deref;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::client::Client;
use crate::common::{self, Dirs};

/// How long the daemon (or the peer) may take to start before the bench
/// gives up.
pub const START_LIMIT: Duration = Duration::from_secs(30);

/// How long a stopping daemon may take to exit: long enough for a profiler
/// around it to write its data.
const STOP_LIMIT: Duration = Duration::from_secs(300);

/// Children the bench starts are killed in `Drop`, which runs on panics;
/// `PR_SET_PDEATHSIG` also kills them when the bench itself dies (a signal,
/// an abort), where no `Drop` runs. Every child is spawned from the main
/// thread, whose exit is what the kernel watches.
pub trait DiesWithBench {
    fn dies_with_bench(&mut self) -> &mut Self;
}

impl DiesWithBench for Command {
    fn dies_with_bench(&mut self) -> &mut Command {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl(2) is async-signal-safe; the closure allocates
        // nothing and touches no lock between fork and exec.
        unsafe {
            self.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            })
        }
    }
}

/// A running `sprite-tasksd`, killed when dropped.
pub struct Daemon {
    daemon: common::Daemon,
    /// Run under `SPRITE_BENCH_WRAP`, whose exit status is its own.
    wrapped: bool,
}

impl Deref for Daemon {
    type Target = common::Daemon;

    fn deref(&self) -> &common::Daemon {
        &self.daemon
    }
}

/// `SPRITE_BENCH_DAEMON`: another build of the daemon to run instead of
/// Cargo's (a copy of an earlier commit's), so that alternating runs
/// compare two builds with every figure, CPU included.
pub fn other_build() -> Option<String> {
    std::env::var("SPRITE_BENCH_DAEMON")
        .ok()
        .filter(|path| !path.is_empty())
}

impl Daemon {
    /// Starts the daemon on `dirs` and returns it with the time from spawn
    /// to its socket accepting a connection.
    pub fn start(dirs: &Dirs) -> (Daemon, Duration) {
        let socket = dirs.socket();
        let other = other_build();
        let binary = other.as_deref().unwrap_or(common::daemon_binary());
        // A profiler to run the daemon under, e.g. `perf record -o FILE --`.
        // Memory figures and SIGSTOP then reach the wrapper, not the daemon.
        let wrapper = std::env::var("SPRITE_BENCH_WRAP").unwrap_or_default();
        let mut words = wrapper.split_whitespace().chain([binary]);
        let program = words.next().unwrap_or(binary);
        // Extra daemon options, to compare settings (e.g.
        // `--checkpoint-changes 65536`); they go before the bench's own.
        let extra = std::env::var("SPRITE_BENCH_ARGS").unwrap_or_default();
        let started = Instant::now();
        let mut child = Command::new(program)
            .args(words)
            .args(extra.split_whitespace())
            .arg("--socket")
            .arg(&socket)
            .arg("--db")
            .arg(dirs.db())
            .arg("--max-tasks")
            .arg(crate::MAX_TASKS.to_string())
            // The bench's tasks are all one uid's: the default quota (a
            // tenth) would bind a bench run as a user and not as root.
            .arg("--max-tasks-per-uid")
            .arg(crate::MAX_TASKS.to_string())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .dies_with_bench()
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
        let took = loop {
            if UnixStream::connect(&socket).is_ok() {
                break started.elapsed();
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("sprite-tasksd exited while starting: {status}");
            }
            assert!(
                started.elapsed() < START_LIMIT,
                "sprite-tasksd did not accept on {} within {START_LIMIT:?}",
                socket.display()
            );
            // No readiness signal crosses processes here; 100 µs bounds the
            // start-up figure's error.
            std::thread::sleep(Duration::from_micros(100));
        };
        // Its warnings go to the bench's stderr as they come; the bench
        // reads no log, so the daemon's log is an empty channel.
        let (_, no_log) = mpsc::channel();
        let daemon = common::Daemon::adopt(child, no_log, socket, dirs.db());
        let wrapped = !wrapper.trim().is_empty();
        (Daemon { daemon, wrapped }, took)
    }

    /// Sends `signal` to the daemon (or its wrapper).
    pub fn signal(&self, signal: i32) {
        common::signal(self.pid(), signal);
    }

    /// SIGTERM, and wait for a clean exit.
    pub fn stop(self) {
        let wrapped = self.wrapped;
        let (status, _) = self.daemon.terminate_within(STOP_LIMIT);
        assert!(
            status.success() || wrapped,
            "sprite-tasksd stopped with {status}"
        );
    }

    /// The pid whose `/proc/PID/stat` holds the daemon's CPU time; none
    /// under `SPRITE_BENCH_WRAP`, whose pid is the wrapper's.
    pub fn cpu_pid(&self) -> Option<u32> {
        (!self.wrapped).then(|| self.pid())
    }

    /// Resident and peak resident memory, in KiB, from /proc.
    pub fn memory_kib(&self) -> (u64, u64) {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("/proc/<pid>/status of the daemon");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kib| kib.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// [`memory_kib`](Self::memory_kib) once the daemon is done with what
    /// came before: one round trip on a new connection first. A client has
    /// an answer whole just before the daemon, on its one thread, drops the
    /// buffer it sent it from: read at that moment, the last list of 100k
    /// tasks (24 MiB) would count in whole or in part.
    pub fn settled_memory_kib(&self) -> (u64, u64) {
        let mut client = Client::connect(&self.socket);
        let (status, _) = client.call(&common::request_bytes(
            "GET",
            "/v1/tasks/settle-probe",
            None,
        ));
        assert_eq!(status, 404, "GET /v1/tasks/settle-probe");
        drop(client);
        self.memory_kib()
    }

    /// The daemon's counters: each sample line of `GET /metrics` without
    /// labels, by name. Read through the bench's buffered [`Client`]: the
    /// expiry phase polls it every few milliseconds beside its probes.
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        let mut client = Client::connect(&self.socket);
        let (status, body) = client.call(&common::request_bytes("GET", "/metrics", None));
        assert_eq!(status, 200, "GET /metrics");
        String::from_utf8_lossy(&body)
            .lines()
            .filter(|line| !line.starts_with('#') && !line.contains('{'))
            .filter_map(|line| {
                let (name, value) = line.split_once(' ')?;
                Some((name.to_owned(), value.trim().parse().ok()?))
            })
            .collect()
    }

    /// Waits until the daemon has checkpointed everything it has written
    /// (`sprite_tasks_log_used_bytes` 0), so that the checkpoints a phase's
    /// writes cause are charged to that phase and not to the next. A
    /// checkpoint starts at the latest a second after a change is
    /// pending; gives up, saying so, after [`CHECKPOINT_WAIT`].
    pub fn wait_checkpointed(&self) {
        let started = Instant::now();
        loop {
            let used = self.metrics().get("sprite_tasks_log_used_bytes").copied();
            // A build without the gauge cannot say; nothing to wait for.
            if used.is_none_or(|used| used == 0.0) {
                return;
            }
            if started.elapsed() > CHECKPOINT_WAIT {
                println!(
                    "(the daemon's log still held {used:?} bytes after {CHECKPOINT_WAIT:?}; \
                     the next phase may carry its checkpoint)"
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// How long [`Daemon::wait_checkpointed`] waits: the checkpoint interval
/// (1 s) and a checkpoint of a phase's writes, with room to spare.
const CHECKPOINT_WAIT: Duration = Duration::from_secs(10);
