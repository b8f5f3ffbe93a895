//! Server CPU per request: a server process's user + system time, all its
//! threads (the daemon's checkpoint worker, Redis's background threads),
//! read from `/proc/PID/stat` right before and right after a phase and
//! divided by the requests the phase served; and, of it, what the daemon's
//! checkpoint thread spent (its `/proc/PID/task/TID/stat`), the work Redis's
//! append-only file has no counterpart for. Depends on nothing of the
//! bench's.

use std::fs;
use std::ops::Add;
use std::time::Duration;

use serde_json::{Value, json};

/// Below this many clock ticks over a phase its figure is marked rough.
/// The kernel truncates user and system time each to a whole tick (10 ms
/// at the usual 100 Hz), so a phase read once before and once after is off
/// by under two ticks, 4 % of 50; a phase read around each of its slices
/// (Redis's, our GETs) by under two ticks per slice.
pub const ROUGH_TICKS: u64 = 50;

/// Where the figure comes from, for the tables' notes and the JSON.
pub const SOURCE: &str = "utime + stime of /proc/PID/stat, all threads";

/// Clock ticks per second, the unit of `/proc/PID/stat`'s times.
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf(3) only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(hz).ok().filter(|hz| *hz > 0).unwrap_or(100)
}

/// The name the daemon gives its checkpoint thread (`/proc/.../comm`).
pub const CHECKPOINT_THREAD: &str = "checkpoint";

/// CPU time in clock ticks: user (utime) and system (stime, which holds the
/// kernel's work in `fdatasync` and socket calls), all threads; and the
/// part of both spent by the [`CHECKPOINT_THREAD`] (0 in a process without
/// one); and, over a phase ([`during`]), what the bench itself spent
/// meanwhile, its clients: on a machine of two cores the clients' CPU comes
/// out of what the server can have, and an HTTP client costs more per
/// request than a RESP one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ticks {
    pub user: u64,
    pub system: u64,
    pub checkpoint: u64,
    pub client: u64,
}

impl Ticks {
    pub fn total(self) -> u64 {
        self.user + self.system
    }

    /// The ticks spent since `before`, a reading of the same process.
    pub fn since(self, before: Ticks) -> Ticks {
        Ticks {
            user: self.user.saturating_sub(before.user),
            system: self.system.saturating_sub(before.system),
            checkpoint: self.checkpoint.saturating_sub(before.checkpoint),
            client: self.client.saturating_sub(before.client),
        }
    }
}

impl Add for Ticks {
    type Output = Ticks;

    fn add(self, other: Ticks) -> Ticks {
        Ticks {
            user: self.user + other.user,
            system: self.system + other.system,
            checkpoint: self.checkpoint + other.checkpoint,
            client: self.client + other.client,
        }
    }
}

/// `pid`'s user and system time so far, all its threads.
///
/// # Panics
/// When the stat cannot be read or parsed: the bench's own child is gone.
pub fn cpu_ticks(pid: u32) -> Ticks {
    let path = format!("/proc/{pid}/stat");
    let stat = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let all = parse_stat(&stat).unwrap_or_else(|| panic!("{path}: no utime and stime in {stat:?}"));
    Ticks {
        checkpoint: thread_ticks(pid, CHECKPOINT_THREAD),
        ..all
    }
}

/// The user + system ticks of `pid`'s threads named `name`. A thread that
/// ends between listing and reading is skipped.
fn thread_ticks(pid: u32, name: &str) -> u64 {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|task| {
            fs::read_to_string(task.path().join("comm")).is_ok_and(|comm| comm.trim_end() == name)
        })
        .filter_map(|task| fs::read_to_string(task.path().join("stat")).ok())
        .filter_map(|stat| parse_stat(&stat))
        .map(Ticks::total)
        .sum()
}

/// utime and stime, fields 14 and 15 of a `/proc/PID/stat` line. Field 2,
/// the command name in parentheses, may hold spaces and parentheses itself,
/// so fields are counted from after the last `)`.
pub fn parse_stat(stat: &str) -> Option<Ticks> {
    let (_, after_name) = stat.rsplit_once(')')?;
    // After the name comes field 3 (state); field 14 is 11 further on.
    let mut fields = after_name.split_whitespace().skip(11);
    let user = fields.next()?.parse().ok()?;
    let system = fields.next()?.parse().ok()?;
    Some(Ticks {
        user,
        system,
        checkpoint: 0,
        client: 0,
    })
}

/// Runs `phase`, and returns its result with the clock ticks `pid` spent
/// meanwhile, and in [`Ticks::client`] those the bench spent.
pub fn during<T>(pid: u32, phase: impl FnOnce() -> T) -> (T, Ticks) {
    let own = || cpu_ticks(std::process::id()).total();
    let before = Ticks {
        client: own(),
        ..cpu_ticks(pid)
    };
    let result = phase();
    let after = Ticks {
        client: own(),
        ..cpu_ticks(pid)
    };
    (result, after.since(before))
}

/// A server's CPU over one phase (or the sum of its slices) and the
/// requests it served meanwhile.
#[derive(Debug, Clone, Copy)]
pub struct ServerCpu {
    pub spent: Ticks,
    pub requests: usize,
}

impl ServerCpu {
    pub fn per_request(self) -> Duration {
        let seconds = self.spent.total() as f64 / ticks_per_second() as f64;
        Duration::from_secs_f64(seconds / self.requests.max(1) as f64)
    }

    /// The checkpoint thread's share of [`ServerCpu::per_request`].
    pub fn checkpoint_per_request(self) -> Duration {
        let seconds = self.spent.checkpoint as f64 / ticks_per_second() as f64;
        Duration::from_secs_f64(seconds / self.requests.max(1) as f64)
    }

    /// The checkpoint thread's µs per request, or `-` for a server without
    /// one.
    pub fn show_checkpoint(self) -> String {
        if self.spent.checkpoint == 0 {
            return "-".into();
        }
        format!(
            "{}{:.1} µs",
            if self.rough() { "~" } else { "" },
            self.checkpoint_per_request().as_secs_f64() * 1e6
        )
    }

    /// The bench's own CPU per request over the phase: its clients'.
    pub fn client_per_request(self) -> Duration {
        let seconds = self.spent.client as f64 / ticks_per_second() as f64;
        Duration::from_secs_f64(seconds / self.requests.max(1) as f64)
    }

    /// Whether the phase spent too few ticks for the figure to be more than
    /// rough (see [`ROUGH_TICKS`]).
    pub fn rough(self) -> bool {
        self.spent.total() < ROUGH_TICKS
    }

    /// µs per request, to one decimal, with `~` in front when rough.
    pub fn show(self) -> String {
        format!(
            "{}{:.1} µs",
            if self.rough() { "~" } else { "" },
            self.per_request().as_secs_f64() * 1e6
        )
    }

    /// Ours over theirs, or `None` when theirs spent no whole tick.
    pub fn ratio(self, theirs: ServerCpu) -> Option<f64> {
        let theirs = theirs.per_request().as_secs_f64();
        (theirs > 0.0).then(|| (self.per_request().as_secs_f64() / theirs * 100.0).round() / 100.0)
    }

    pub fn to_json(self) -> Value {
        json!({
            "us_per_request": (self.per_request().as_secs_f64() * 1e7).round() / 10.0,
            "ticks": self.spent.total(),
            "user_ticks": self.spent.user,
            "system_ticks": self.spent.system,
            "checkpoint_thread_ticks": self.spent.checkpoint,
            "checkpoint_thread_us_per_request": (self.checkpoint_per_request().as_secs_f64() * 1e7).round() / 10.0,
            "client_ticks": self.spent.client,
            "client_us_per_request": (self.client_per_request().as_secs_f64() * 1e7).round() / 10.0,
            "requests": self.requests,
            "rough": self.rough(),
        })
    }
}

/// How the CPU figures were read, once per JSON report.
pub fn method_json() -> Value {
    json!({
        "source": SOURCE,
        "ticks_per_second": ticks_per_second(),
        "rough_below_ticks": ROUGH_TICKS,
        "window": "Redis: around its own slices; ours: around its GET slices, and for a \
                   mutation from the phase's start until the daemon's log is checkpointed",
    })
}
