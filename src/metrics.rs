//! Counters and histograms, and their rendering in the Prometheus text
//! format for `GET /metrics`.
//!
//! Pure but for one process-wide counter, [`crate::logging::dropped_writes`],
//! read when rendering (the log writer has no reactor to report to). The
//! reactor records into it and fills in the gauges when rendering.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

/// Upper bounds of the changes-per-commit histogram.
const CHANGES_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// Upper bounds (seconds) of the commit-latency histogram: an fdatasync is
/// 0.1-10 ms on the disks we run on.
const LATENCY_BUCKETS: [f64; 10] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0,
];

#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, value: f64) {
        for (bound, count) in self.bounds.iter().zip(self.counts.iter_mut()) {
            if value <= *bound {
                *count += 1;
            }
        }
        self.sum += value;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

/// Everything counted since the daemon started.
#[derive(Debug, Clone)]
pub struct Metrics {
    requests: BTreeMap<(&'static str, u16), u64>,
    commit_changes: Histogram,
    commit_seconds: Histogram,
    pub commit_failures: u64,
    pub expired: u64,
    /// Tasks released because their bound process exited.
    pub released: u64,
    pub connections_accepted: u64,
    /// Connections and event streams refused for a share, by cause
    /// ([`Refused::CAUSES`](crate::shares::Refused::CAUSES)).
    connections_refused: BTreeMap<&'static str, u64>,
    pub hook_runs: u64,
    pub hook_failures: u64,
    /// Steps of the wall clock seen while running, forward and back.
    pub clock_steps_forward: u64,
    pub clock_steps_backward: u64,
    /// Tasks loaded with an expiry more than the maximum ahead, bounded.
    pub clamped_at_load: u64,
    /// Changes refused by ownership or the per-uid quota, by reason.
    /// Counted rather than kept as events: a refusal changes nothing, so
    /// it costs no disk write, and another user's refused attempts cannot
    /// push the event history out of its retention.
    refused: BTreeMap<Refusal, u64>,
}

/// Why ownership or the per-uid quota refused a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Refusal {
    /// A refresh or delete of another uid's task (403).
    NotOwner,
    /// A change from a peer whose uid could not be read (403).
    UnknownCaller,
    /// A create past the caller's per-uid quota (507).
    UidQuota,
}

impl Refusal {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NotOwner => "not_owner",
            Refusal::UnknownCaller => "unknown_caller",
            Refusal::UidQuota => "uid_quota",
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: BTreeMap::new(),
            commit_changes: Histogram::new(&CHANGES_BUCKETS),
            commit_seconds: Histogram::new(&LATENCY_BUCKETS),
            commit_failures: 0,
            expired: 0,
            released: 0,
            connections_accepted: 0,
            connections_refused: BTreeMap::new(),
            hook_runs: 0,
            hook_failures: 0,
            clock_steps_forward: 0,
            clock_steps_backward: 0,
            clamped_at_load: 0,
            refused: BTreeMap::new(),
        }
    }
}

/// Values known only to the reactor, read at render time.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    pub live_tasks: usize,
    /// Tasks bound to a process, each watched through a pidfd.
    pub bound_tasks: usize,
    pub held: bool,
    pub held_seconds: f64,
    pub connections: usize,
    pub streams: usize,
    /// The write-ahead log: bytes not yet checkpointed, its size, and the
    /// checkpoints into the database that succeeded and failed.
    pub log_used_bytes: u64,
    pub log_size_bytes: u64,
    pub checkpoints: u64,
    pub checkpoint_failures: u64,
}

impl Metrics {
    /// Counts one answered request.
    pub fn request(&mut self, route: &'static str, status: u16) {
        *self.requests.entry((route, status)).or_default() += 1;
    }

    /// Counts one connection or stream refused for `cause`.
    pub fn connection_refused(&mut self, cause: &'static str) {
        *self.connections_refused.entry(cause).or_default() += 1;
    }

    /// Counts one change refused by ownership or the quota.
    pub fn refused(&mut self, why: Refusal) {
        *self.refused.entry(why).or_default() += 1;
    }

    /// Counts one successful commit.
    pub fn commit(&mut self, changes: usize, took: Duration) {
        self.commit_changes.observe(changes as f64);
        self.commit_seconds.observe(took.as_secs_f64());
    }

    /// Successful commits so far.
    pub fn commits(&self) -> u64 {
        self.commit_changes.count
    }

    /// Changes carried by successful commits so far.
    pub fn changes(&self) -> u64 {
        self.commit_changes.sum as u64
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.requests.values().sum()
    }

    /// The Prometheus text exposition.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::new();
        let mut single = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        single(
            "sprite_tasks_live",
            "gauge",
            "Live tasks.",
            gauges.live_tasks.to_string(),
        );
        single(
            "sprite_tasks_held",
            "gauge",
            "1 while at least one task holds the machine.",
            u8::from(gauges.held).to_string(),
        );
        single(
            "sprite_tasks_held_seconds_total",
            "counter",
            "Seconds the machine was held since the daemon started.",
            format!("{:.3}", gauges.held_seconds),
        );
        single(
            "sprite_tasks_expired_total",
            "counter",
            "Tasks removed because their expiry passed.",
            self.expired.to_string(),
        );
        single(
            "sprite_tasks_released_total",
            "counter",
            "Tasks released because the process they were bound to exited.",
            self.released.to_string(),
        );
        single(
            "sprite_tasks_bound",
            "gauge",
            "Tasks bound to a process (each holds a descriptor of the daemon).",
            gauges.bound_tasks.to_string(),
        );
        single(
            "sprite_tasks_commit_failures_total",
            "counter",
            "Batches not committed because the disk failed; their clients got 503.",
            self.commit_failures.to_string(),
        );
        single(
            "sprite_tasks_connections",
            "gauge",
            "Open client connections.",
            gauges.connections.to_string(),
        );
        single(
            "sprite_tasks_event_streams",
            "gauge",
            "Open GET /v1/events streams.",
            gauges.streams.to_string(),
        );
        single(
            "sprite_tasks_connections_accepted_total",
            "counter",
            "Connections accepted.",
            self.connections_accepted.to_string(),
        );
        single(
            "sprite_tasks_log_used_bytes",
            "gauge",
            "Bytes of the write-ahead log not yet checkpointed into the database.",
            gauges.log_used_bytes.to_string(),
        );
        single(
            "sprite_tasks_log_size_bytes",
            "gauge",
            "Size of the write-ahead log; writers get 503 when it is full.",
            gauges.log_size_bytes.to_string(),
        );
        single(
            "sprite_tasks_checkpoints_total",
            "counter",
            "Checkpoints of the log into the database.",
            gauges.checkpoints.to_string(),
        );
        single(
            "sprite_tasks_checkpoint_failures_total",
            "counter",
            "Checkpoints that failed (retried; the changes stay in the log).",
            gauges.checkpoint_failures.to_string(),
        );
        single(
            "sprite_tasks_hook_runs_total",
            "counter",
            "Hook commands started.",
            self.hook_runs.to_string(),
        );
        single(
            "sprite_tasks_hook_failures_total",
            "counter",
            "Hook commands that failed to start or exited unsuccessfully.",
            self.hook_failures.to_string(),
        );
        single(
            "sprite_tasks_log_writes_dropped_total",
            "counter",
            "Log lines that could not be written to stderr (a closed pipe) and were dropped.",
            crate::logging::dropped_writes().to_string(),
        );
        single(
            "sprite_tasks_clamped_at_load_total",
            "counter",
            "Tasks loaded at start-up with an expiry more than --max-expire ahead (the clock was set back while the daemon was down), bounded to now + --max-expire.",
            self.clamped_at_load.to_string(),
        );
        let _ = writeln!(
            out,
            "# HELP sprite_tasks_clock_steps_total Steps of the wall clock by more than a second, by direction. Holds moved with a step back (and with one seen at start-up); a step forward expired what fell due.\n# TYPE sprite_tasks_clock_steps_total counter"
        );
        for (direction, count) in [
            ("backward", self.clock_steps_backward),
            ("forward", self.clock_steps_forward),
        ] {
            let _ = writeln!(
                out,
                "sprite_tasks_clock_steps_total{{direction=\"{direction}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP sprite_tasks_connections_refused_total Connections (and event streams) refused with 503: at --max-connections, in the reserve kept for root, or past a uid's share.\n# TYPE sprite_tasks_connections_refused_total counter"
        );
        for cause in crate::shares::Refused::CAUSES {
            let count = self.connections_refused.get(cause).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "sprite_tasks_connections_refused_total{{cause=\"{cause}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP sprite_tasks_refused_total Refreshes and deletes of another uid's task, changes from a peer of unknown uid, and creates past --max-tasks-per-uid, refused.\n# TYPE sprite_tasks_refused_total counter"
        );
        for why in [Refusal::NotOwner, Refusal::UnknownCaller, Refusal::UidQuota] {
            let count = self.refused.get(&why).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "sprite_tasks_refused_total{{reason=\"{}\"}} {count}",
                why.as_str()
            );
        }
        let _ = writeln!(
            out,
            "# HELP sprite_tasks_requests_total Requests answered, by route and status.\n# TYPE sprite_tasks_requests_total counter"
        );
        for ((route, status), count) in &self.requests {
            let _ = writeln!(
                out,
                "sprite_tasks_requests_total{{route=\"{route}\",status=\"{status}\"}} {count}"
            );
        }
        self.commit_changes.render(
            &mut out,
            "sprite_tasks_commit_changes",
            "Changes per commit (group commit shares one fsync).",
        );
        self.commit_seconds.render(
            &mut out,
            "sprite_tasks_commit_seconds",
            "Time to commit a batch durably.",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let mut metrics = Metrics::default();
        metrics.request("create", 201);
        metrics.request("create", 201);
        metrics.request("get", 404);
        metrics.commit(3, Duration::from_micros(300));
        metrics.commit(1, Duration::from_millis(2));
        metrics.clock_steps_backward = 1;
        metrics.clamped_at_load = 3;
        metrics.refused(Refusal::NotOwner);
        metrics.refused(Refusal::NotOwner);
        metrics.released = 1;
        let text = metrics.render(&Gauges {
            live_tasks: 2,
            bound_tasks: 1,
            held: true,
            ..Gauges::default()
        });
        assert!(text.contains("sprite_tasks_live 2\n"));
        assert!(text.contains("sprite_tasks_held 1\n"));
        assert!(text.contains("sprite_tasks_bound 1\n"));
        assert!(text.contains("sprite_tasks_released_total 1\n"));
        assert!(text.contains("\nsprite_tasks_log_writes_dropped_total "));
        assert!(text.contains("sprite_tasks_clock_steps_total{direction=\"backward\"} 1\n"));
        assert!(text.contains("sprite_tasks_clock_steps_total{direction=\"forward\"} 0\n"));
        assert!(text.contains("sprite_tasks_clamped_at_load_total 3\n"));
        assert!(text.contains("sprite_tasks_refused_total{reason=\"not_owner\"} 2\n"));
        assert!(text.contains("sprite_tasks_refused_total{reason=\"uid_quota\"} 0\n"));
        assert!(text.contains("sprite_tasks_requests_total{route=\"create\",status=\"201\"} 2\n"));
        assert!(text.contains("sprite_tasks_commit_changes_bucket{le=\"2\"} 1\n"));
        assert!(text.contains("sprite_tasks_commit_changes_bucket{le=\"4\"} 2\n"));
        assert!(text.contains("sprite_tasks_commit_changes_count 2\n"));
        assert!(text.contains("sprite_tasks_commit_seconds_bucket{le=\"0.0005\"} 1\n"));
        assert_eq!(
            (metrics.commits(), metrics.changes(), metrics.requests()),
            (2, 4, 3)
        );
        // Every line is a comment or `name{labels} value`.
        for line in text.lines() {
            assert!(
                line.starts_with("# HELP ")
                    || line.starts_with("# TYPE ")
                    || line
                        .rsplit_once(' ')
                        .is_some_and(|(_, v)| v.parse::<f64>().is_ok()),
                "{line}"
            );
        }
    }
}
