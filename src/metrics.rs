//! Counters and histograms, and their rendering in the Prometheus text
//! format for `GET /metrics`.
//!
//! Pure but for one process-wide counter, [`crate::logging::dropped_writes`],
//! read when rendering (the log writer has no reactor to report to). The
//! reactor records into it and fills in the gauges when rendering.

use std::collections::BTreeMap;
use std::fmt::{Display, Write};
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
        header(out, name, Kind::Histogram, help);
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
    /// Requests answered by route and status, in the order first seen
    /// (sorted when rendered): a few dozen at most.
    requests: Vec<((&'static str, u16), u64)>,
    /// Where in `requests` the last request was counted: most requests
    /// repeat the one before's route and status. Looking the pair up in a
    /// `BTreeMap` compared route names, about 150 instructions a request
    /// (callgrind).
    last_request: usize,
    commit_changes: Histogram,
    commit_seconds: Histogram,
    pub commit_failures: u64,
    pub expired: u64,
    /// Tasks released because their bound process exited.
    pub released: u64,
    /// Tasks deleted by a client.
    pub deleted: u64,
    /// Tasks released by their hold limit (`--max-held-for`).
    pub capped: u64,
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
            requests: Vec::new(),
            last_request: 0,
            commit_changes: Histogram::new(&CHANGES_BUCKETS),
            commit_seconds: Histogram::new(&LATENCY_BUCKETS),
            commit_failures: 0,
            expired: 0,
            released: 0,
            deleted: 0,
            capped: 0,
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
    /// Checkpoints that compacted the task tables, and the rows they wrote.
    pub compactions: u64,
    pub compacted_rows: u64,
    /// Ended holds the usage history keeps (at most `--usage-max-holds`
    /// and an eighth).
    pub usage_holds: usize,
}

impl Metrics {
    /// Counts one answered request.
    pub fn request(&mut self, route: &'static str, status: u16) {
        // Routes are static names: the same pointer, almost always.
        let is = |key: &(&'static str, u16)| {
            key.1 == status && (std::ptr::eq(key.0, route) || key.0 == route)
        };
        if let Some((key, count)) = self.requests.get_mut(self.last_request)
            && is(key)
        {
            *count += 1;
            return;
        }
        match self.requests.iter().position(|(key, _)| is(key)) {
            Some(at) => {
                self.requests[at].1 += 1;
                self.last_request = at;
            }
            None => {
                self.last_request = self.requests.len();
                self.requests.push(((route, status), 1));
            }
        }
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
        self.requests.iter().map(|(_, count)| count).sum()
    }

    /// The Prometheus text exposition.
    pub fn render(&self, gauges: &Gauges) -> String {
        self.render_with(gauges, crate::logging::dropped_writes())
    }

    /// [`Metrics::render`], given the process-wide count of dropped log
    /// writes: pure, so a test can pin the whole page.
    fn render_with(&self, gauges: &Gauges, dropped_log_writes: u64) -> String {
        let mut out = String::new();
        self.render_tasks(&mut out, gauges);
        self.render_connections(&mut out, gauges);
        render_log(&mut out, gauges);
        self.render_daemon(&mut out, dropped_log_writes);
        self.render_clock_steps(&mut out);
        self.render_refusals(&mut out);
        self.render_requests(&mut out);
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

    /// Tasks, holding, and the commits that change them.
    fn render_tasks(&self, out: &mut String, gauges: &Gauges) {
        let held_seconds = format_args!("{:.3}", gauges.held_seconds);
        let families: [Single; 8] = [
            (
                "sprite_tasks_live",
                Kind::Gauge,
                "Live tasks.",
                &gauges.live_tasks,
            ),
            (
                "sprite_tasks_held",
                Kind::Gauge,
                "1 while at least one task holds the machine.",
                &u8::from(gauges.held),
            ),
            (
                "sprite_tasks_held_seconds_total",
                Kind::Counter,
                "Seconds the machine was held since the daemon started.",
                &held_seconds,
            ),
            (
                "sprite_tasks_expired_total",
                Kind::Counter,
                "Tasks removed because their expiry passed.",
                &self.expired,
            ),
            (
                "sprite_tasks_released_total",
                Kind::Counter,
                "Tasks released because the process they were bound to exited.",
                &self.released,
            ),
            (
                "sprite_tasks_bound",
                Kind::Gauge,
                "Tasks bound to a process (each holds a descriptor of the daemon).",
                &gauges.bound_tasks,
            ),
            (
                "sprite_tasks_commit_failures_total",
                Kind::Counter,
                "Batches not committed because the disk failed; their clients got 503.",
                &self.commit_failures,
            ),
            (
                "sprite_tasks_usage_holds",
                Kind::Gauge,
                "Ended holds kept in the usage history (the latest --usage-max-holds, and up to an eighth more between two cuts).",
                &gauges.usage_holds,
            ),
        ];
        singles(out, &families);
        const RELEASES: &str = "sprite_tasks_releases_total";
        header(
            out,
            RELEASES,
            Kind::Counter,
            "Holds ended, by cause: deleted by a client, expired, their bound process exited, or released by --max-held-for.",
        );
        for (cause, count) in [
            ("deleted", self.deleted),
            ("expired", self.expired),
            ("holder_exited", self.released),
            ("max_held_for", self.capped),
        ] {
            let _ = writeln!(out, "{RELEASES}{{cause=\"{cause}\"}} {count}");
        }
    }

    /// Client connections and event streams.
    fn render_connections(&self, out: &mut String, gauges: &Gauges) {
        let families: [Single; 3] = [
            (
                "sprite_tasks_connections",
                Kind::Gauge,
                "Open client connections.",
                &gauges.connections,
            ),
            (
                "sprite_tasks_event_streams",
                Kind::Gauge,
                "Open GET /v1/events streams.",
                &gauges.streams,
            ),
            (
                "sprite_tasks_connections_accepted_total",
                Kind::Counter,
                "Connections accepted.",
                &self.connections_accepted,
            ),
        ];
        singles(out, &families);
    }

    /// Hooks, the daemon's own log, and tasks bounded at start-up.
    fn render_daemon(&self, out: &mut String, dropped_log_writes: u64) {
        let families: [Single; 4] = [
            (
                "sprite_tasks_hook_runs_total",
                Kind::Counter,
                "Hook commands started.",
                &self.hook_runs,
            ),
            (
                "sprite_tasks_hook_failures_total",
                Kind::Counter,
                "Hook commands that failed to start or exited unsuccessfully.",
                &self.hook_failures,
            ),
            (
                "sprite_tasks_log_writes_dropped_total",
                Kind::Counter,
                "Log lines that could not be written to stderr (a closed pipe) and were dropped.",
                &dropped_log_writes,
            ),
            (
                "sprite_tasks_clamped_at_load_total",
                Kind::Counter,
                "Tasks loaded at start-up with an expiry more than --max-expire ahead (the clock was set back while the daemon was down), bounded to now + --max-expire.",
                &self.clamped_at_load,
            ),
        ];
        singles(out, &families);
    }

    /// Steps of the wall clock, both directions.
    fn render_clock_steps(&self, out: &mut String) {
        const NAME: &str = "sprite_tasks_clock_steps_total";
        header(
            out,
            NAME,
            Kind::Counter,
            "Steps of the wall clock by more than a second, by direction. Holds moved with a step back (and with one seen at start-up); a step forward expired what fell due.",
        );
        for (direction, count) in [
            ("backward", self.clock_steps_backward),
            ("forward", self.clock_steps_forward),
        ] {
            let _ = writeln!(out, "{NAME}{{direction=\"{direction}\"}} {count}");
        }
    }

    /// Connections refused for a share, and changes refused by ownership
    /// or the quota: every label, counted or not.
    fn render_refusals(&self, out: &mut String) {
        const CONNECTIONS: &str = "sprite_tasks_connections_refused_total";
        const CHANGES: &str = "sprite_tasks_refused_total";
        header(
            out,
            CONNECTIONS,
            Kind::Counter,
            "Connections (and event streams) refused with 503: at --max-connections, in the reserve kept for root, or past a uid's share.",
        );
        for cause in crate::shares::Refused::CAUSES {
            let count = self.connections_refused.get(cause).copied().unwrap_or(0);
            let _ = writeln!(out, "{CONNECTIONS}{{cause=\"{cause}\"}} {count}");
        }
        header(
            out,
            CHANGES,
            Kind::Counter,
            "Refreshes and deletes of another uid's task, changes from a peer of unknown uid, and creates past --max-tasks-per-uid, refused.",
        );
        for why in [Refusal::NotOwner, Refusal::UnknownCaller, Refusal::UidQuota] {
            let count = self.refused.get(&why).copied().unwrap_or(0);
            let _ = writeln!(out, "{CHANGES}{{reason=\"{}\"}} {count}", why.as_str());
        }
    }

    /// Requests answered, by route and status: only those seen.
    fn render_requests(&self, out: &mut String) {
        const NAME: &str = "sprite_tasks_requests_total";
        header(
            out,
            NAME,
            Kind::Counter,
            "Requests answered, by route and status.",
        );
        let mut requests = self.requests.clone();
        requests.sort_unstable();
        for ((route, status), count) in requests {
            let _ = writeln!(
                out,
                "{NAME}{{route=\"{route}\",status=\"{status}\"}} {count}"
            );
        }
    }
}

/// The write-ahead log and its checkpoints, all read off the store.
fn render_log(out: &mut String, gauges: &Gauges) {
    let families: [Single; 6] = [
        (
            "sprite_tasks_log_used_bytes",
            Kind::Gauge,
            "Bytes of the write-ahead log not yet checkpointed into the database.",
            &gauges.log_used_bytes,
        ),
        (
            "sprite_tasks_log_size_bytes",
            Kind::Gauge,
            "Size of the write-ahead log; writers get 503 when it is full.",
            &gauges.log_size_bytes,
        ),
        (
            "sprite_tasks_checkpoints_total",
            Kind::Counter,
            "Checkpoints of the log into the database.",
            &gauges.checkpoints,
        ),
        (
            "sprite_tasks_checkpoint_failures_total",
            Kind::Counter,
            "Checkpoints that failed (retried; the changes stay in the log).",
            &gauges.checkpoint_failures,
        ),
        (
            "sprite_tasks_compactions_total",
            Kind::Counter,
            "Checkpoints that compacted the task tables: the base and the runs since merged into a new base, every live row rewritten.",
            &gauges.compactions,
        ),
        (
            "sprite_tasks_compacted_rows_total",
            Kind::Counter,
            "Task rows the compactions wrote.",
            &gauges.compacted_rows,
        ),
    ];
    singles(out, &families);
}

/// A metric family's type, as the `# TYPE` line spells it.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Gauge,
    Counter,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
        }
    }
}

/// The `# HELP` and `# TYPE` lines that open a family.
fn header(out: &mut String, name: &str, kind: Kind, help: &str) {
    let kind = kind.as_str();
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A family of one unlabelled sample: name, type, help, value.
type Single<'a> = (&'a str, Kind, &'a str, &'a dyn Display);

/// Families of one unlabelled sample each.
fn singles(out: &mut String, families: &[Single]) {
    for &(name, kind, help, value) in families {
        header(out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
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

    /// The whole page for a state in which every family has a value,
    /// byte for byte: a change to any name, help text, label or order
    /// shows here.
    const FULL_PAGE: &str = r#"# HELP sprite_tasks_live Live tasks.
# TYPE sprite_tasks_live gauge
sprite_tasks_live 13
# HELP sprite_tasks_held 1 while at least one task holds the machine.
# TYPE sprite_tasks_held gauge
sprite_tasks_held 1
# HELP sprite_tasks_held_seconds_total Seconds the machine was held since the daemon started.
# TYPE sprite_tasks_held_seconds_total counter
sprite_tasks_held_seconds_total 15.250
# HELP sprite_tasks_expired_total Tasks removed because their expiry passed.
# TYPE sprite_tasks_expired_total counter
sprite_tasks_expired_total 5
# HELP sprite_tasks_released_total Tasks released because the process they were bound to exited.
# TYPE sprite_tasks_released_total counter
sprite_tasks_released_total 6
# HELP sprite_tasks_bound Tasks bound to a process (each holds a descriptor of the daemon).
# TYPE sprite_tasks_bound gauge
sprite_tasks_bound 14
# HELP sprite_tasks_commit_failures_total Batches not committed because the disk failed; their clients got 503.
# TYPE sprite_tasks_commit_failures_total counter
sprite_tasks_commit_failures_total 4
# HELP sprite_tasks_usage_holds Ended holds kept in the usage history (the latest --usage-max-holds, and up to an eighth more between two cuts).
# TYPE sprite_tasks_usage_holds gauge
sprite_tasks_usage_holds 25
# HELP sprite_tasks_releases_total Holds ended, by cause: deleted by a client, expired, their bound process exited, or released by --max-held-for.
# TYPE sprite_tasks_releases_total counter
sprite_tasks_releases_total{cause="deleted"} 23
sprite_tasks_releases_total{cause="expired"} 5
sprite_tasks_releases_total{cause="holder_exited"} 6
sprite_tasks_releases_total{cause="max_held_for"} 24
# HELP sprite_tasks_connections Open client connections.
# TYPE sprite_tasks_connections gauge
sprite_tasks_connections 16
# HELP sprite_tasks_event_streams Open GET /v1/events streams.
# TYPE sprite_tasks_event_streams gauge
sprite_tasks_event_streams 17
# HELP sprite_tasks_connections_accepted_total Connections accepted.
# TYPE sprite_tasks_connections_accepted_total counter
sprite_tasks_connections_accepted_total 7
# HELP sprite_tasks_log_used_bytes Bytes of the write-ahead log not yet checkpointed into the database.
# TYPE sprite_tasks_log_used_bytes gauge
sprite_tasks_log_used_bytes 18
# HELP sprite_tasks_log_size_bytes Size of the write-ahead log; writers get 503 when it is full.
# TYPE sprite_tasks_log_size_bytes gauge
sprite_tasks_log_size_bytes 19
# HELP sprite_tasks_checkpoints_total Checkpoints of the log into the database.
# TYPE sprite_tasks_checkpoints_total counter
sprite_tasks_checkpoints_total 20
# HELP sprite_tasks_checkpoint_failures_total Checkpoints that failed (retried; the changes stay in the log).
# TYPE sprite_tasks_checkpoint_failures_total counter
sprite_tasks_checkpoint_failures_total 21
# HELP sprite_tasks_compactions_total Checkpoints that compacted the task tables: the base and the runs since merged into a new base, every live row rewritten.
# TYPE sprite_tasks_compactions_total counter
sprite_tasks_compactions_total 26
# HELP sprite_tasks_compacted_rows_total Task rows the compactions wrote.
# TYPE sprite_tasks_compacted_rows_total counter
sprite_tasks_compacted_rows_total 27
# HELP sprite_tasks_hook_runs_total Hook commands started.
# TYPE sprite_tasks_hook_runs_total counter
sprite_tasks_hook_runs_total 8
# HELP sprite_tasks_hook_failures_total Hook commands that failed to start or exited unsuccessfully.
# TYPE sprite_tasks_hook_failures_total counter
sprite_tasks_hook_failures_total 9
# HELP sprite_tasks_log_writes_dropped_total Log lines that could not be written to stderr (a closed pipe) and were dropped.
# TYPE sprite_tasks_log_writes_dropped_total counter
sprite_tasks_log_writes_dropped_total 22
# HELP sprite_tasks_clamped_at_load_total Tasks loaded at start-up with an expiry more than --max-expire ahead (the clock was set back while the daemon was down), bounded to now + --max-expire.
# TYPE sprite_tasks_clamped_at_load_total counter
sprite_tasks_clamped_at_load_total 12
# HELP sprite_tasks_clock_steps_total Steps of the wall clock by more than a second, by direction. Holds moved with a step back (and with one seen at start-up); a step forward expired what fell due.
# TYPE sprite_tasks_clock_steps_total counter
sprite_tasks_clock_steps_total{direction="backward"} 11
sprite_tasks_clock_steps_total{direction="forward"} 10
# HELP sprite_tasks_connections_refused_total Connections (and event streams) refused with 503: at --max-connections, in the reserve kept for root, or past a uid's share.
# TYPE sprite_tasks_connections_refused_total counter
sprite_tasks_connections_refused_total{cause="capacity"} 0
sprite_tasks_connections_refused_total{cause="reserve"} 1
sprite_tasks_connections_refused_total{cause="uid_connections"} 0
sprite_tasks_connections_refused_total{cause="uid_streams"} 2
# HELP sprite_tasks_refused_total Refreshes and deletes of another uid's task, changes from a peer of unknown uid, and creates past --max-tasks-per-uid, refused.
# TYPE sprite_tasks_refused_total counter
sprite_tasks_refused_total{reason="not_owner"} 1
sprite_tasks_refused_total{reason="unknown_caller"} 0
sprite_tasks_refused_total{reason="uid_quota"} 2
# HELP sprite_tasks_requests_total Requests answered, by route and status.
# TYPE sprite_tasks_requests_total counter
sprite_tasks_requests_total{route="create",status="201"} 2
sprite_tasks_requests_total{route="get",status="404"} 1
sprite_tasks_requests_total{route="metrics",status="200"} 1
# HELP sprite_tasks_commit_changes Changes per commit (group commit shares one fsync).
# TYPE sprite_tasks_commit_changes histogram
sprite_tasks_commit_changes_bucket{le="1"} 1
sprite_tasks_commit_changes_bucket{le="2"} 1
sprite_tasks_commit_changes_bucket{le="4"} 2
sprite_tasks_commit_changes_bucket{le="8"} 2
sprite_tasks_commit_changes_bucket{le="16"} 2
sprite_tasks_commit_changes_bucket{le="32"} 2
sprite_tasks_commit_changes_bucket{le="64"} 2
sprite_tasks_commit_changes_bucket{le="128"} 2
sprite_tasks_commit_changes_bucket{le="256"} 2
sprite_tasks_commit_changes_bucket{le="+Inf"} 3
sprite_tasks_commit_changes_sum 304
sprite_tasks_commit_changes_count 3
# HELP sprite_tasks_commit_seconds Time to commit a batch durably.
# TYPE sprite_tasks_commit_seconds histogram
sprite_tasks_commit_seconds_bucket{le="0.0001"} 0
sprite_tasks_commit_seconds_bucket{le="0.00025"} 1
sprite_tasks_commit_seconds_bucket{le="0.0005"} 1
sprite_tasks_commit_seconds_bucket{le="0.001"} 1
sprite_tasks_commit_seconds_bucket{le="0.0025"} 2
sprite_tasks_commit_seconds_bucket{le="0.005"} 2
sprite_tasks_commit_seconds_bucket{le="0.01"} 2
sprite_tasks_commit_seconds_bucket{le="0.025"} 2
sprite_tasks_commit_seconds_bucket{le="0.1"} 2
sprite_tasks_commit_seconds_bucket{le="1"} 2
sprite_tasks_commit_seconds_bucket{le="+Inf"} 3
sprite_tasks_commit_seconds_sum 2.00225
sprite_tasks_commit_seconds_count 3
"#;

    #[test]
    fn renders_the_whole_page_byte_for_byte() {
        let mut metrics = Metrics::default();
        metrics.request("create", 201);
        metrics.request("create", 201);
        metrics.request("get", 404);
        metrics.request("metrics", 200);
        metrics.commit(3, Duration::from_micros(250));
        metrics.commit(300, Duration::from_millis(2));
        metrics.commit(1, Duration::from_secs(2));
        metrics.commit_failures = 4;
        metrics.expired = 5;
        metrics.released = 6;
        metrics.deleted = 23;
        metrics.capped = 24;
        metrics.connections_accepted = 7;
        metrics.connection_refused("reserve");
        metrics.connection_refused("uid_streams");
        metrics.connection_refused("uid_streams");
        metrics.hook_runs = 8;
        metrics.hook_failures = 9;
        metrics.clock_steps_forward = 10;
        metrics.clock_steps_backward = 11;
        metrics.clamped_at_load = 12;
        metrics.refused(Refusal::NotOwner);
        metrics.refused(Refusal::UidQuota);
        metrics.refused(Refusal::UidQuota);
        let gauges = Gauges {
            live_tasks: 13,
            bound_tasks: 14,
            held: true,
            held_seconds: 15.25,
            connections: 16,
            streams: 17,
            log_used_bytes: 18,
            log_size_bytes: 19,
            checkpoints: 20,
            checkpoint_failures: 21,
            compactions: 26,
            compacted_rows: 27,
            usage_holds: 25,
        };
        assert_eq!(metrics.render_with(&gauges, 22), FULL_PAGE);
    }
}
