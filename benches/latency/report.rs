//! What a run prints and writes: the floors', requests', Redis's and
//! scale tables, each row beside its ratio to its floor (and to Redis), and
//! the whole run as JSON so commits can be compared.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cpu;
use crate::floors::{Floors, SMALL_WRITE};
use crate::log_floors::{LogWay, log_floors_json};
use crate::phases::{Commits, CrossCheck, Paired, PairedGets, Row};
use crate::redis::{REDIS_CONFIG, REDIS_VALUE, redis_version};
use crate::scale::ScaleRow;
use crate::summary::{Summary, micros, show};
use crate::targets::Target;

/// Everything one run measured, for its JSON report.
pub struct Measured {
    pub quick: bool,
    /// The length of each measured phase.
    pub phase: Duration,
    /// The Redis program, or why the Redis rows were skipped.
    pub redis: Result<PathBuf, String>,
    pub floors: Floors,
    pub floors_after: Floors,
    pub log: Vec<(LogWay, Summary)>,
    pub paired: Vec<Paired>,
    /// One client's GETs interleaved with Redis's, when both ran.
    pub paired_gets: Option<PairedGets>,
    pub rows: Vec<Row>,
    pub cross_checks: Vec<CrossCheck>,
    pub scale_rows: Vec<ScaleRow>,
    pub targets: Vec<Target>,
}

/// Writes the run's JSON report to `path` and says so.
pub fn write_json(path: &Path, measured: &Measured, run_started: Instant) {
    if let Some(dir) = path.parent() {
        let _ = fs::create_dir_all(dir);
    }
    let text =
        serde_json::to_string_pretty(&report_json(measured, run_started.elapsed().as_secs_f64()))
            .expect("a JSON report");
    fs::write(path, text + "\n").unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    println!(
        "\nwrote {} ({:.0} s)",
        path.display(),
        run_started.elapsed().as_secs_f64()
    );
}

/// The run as JSON; `seconds` is how long it took.
fn report_json(measured: &Measured, seconds: f64) -> Value {
    let Measured {
        floors,
        floors_after,
        log,
        paired,
        paired_gets,
        rows,
        cross_checks,
        scale_rows,
        targets,
        ..
    } = measured;
    json!({
        "commit": git_commit(),
        // Another build than the checkout's, when one was run instead.
        "daemon": crate::daemon::other_build(),
        "quick": measured.quick,
        "driver": crate::driver::driver().name(),
        "phase_seconds": measured.phase.as_secs_f64(),
        "server_cpu": cpu::method_json(),
        "floors": floors_json(floors),
        "floors_after": floors_json(floors_after),
        "log_floors": log_floors_json(log),
        "one_client_interleaved": paired.iter().map(|p| json!({
            "endpoint": p.endpoint,
            "latency": p.request.to_json(),
            "redis_set": p.redis.as_ref().map(Summary::to_json),
            "fsync": p.fsync.to_json(),
            "redb_commit": p.store.to_json(),
            "p50_over_fsync_plus_transport": ratio(p.request.p50, p.fsync.p50 + floors.transport.p50),
            "p50_over_redb_commit_plus_transport": ratio(p.request.p50, p.store.p50 + floors.transport.p50),
            "p50_over_redis_set": p.redis.as_ref().map(|r| ratio(p.request.p50, r.p50)),
        })).collect::<Vec<_>>(),
        "one_client_gets_interleaved": paired_gets.as_ref().map(|p| json!({
            "latency": p.ours.to_json(),
            "redis_get": p.redis.to_json(),
            "p50_over_redis_get": ratio(p.ours.p50, p.redis.p50),
            "body_bytes": p.body_bytes,
            "redis_get_same_bytes": p.redis_same_bytes.to_json(),
            "p50_over_redis_get_same_bytes": ratio(p.ours.p50, p.redis_same_bytes.p50),
        })),
        "redis": match &measured.redis {
            Ok(program) => redis_json(program, rows, cross_checks),
            Err(why) => json!({ "skipped": why }),
        },
        "requests": rows.iter().map(|row| {
            let floor = floor_of(row, floors);
            json!({
                "endpoint": row.endpoint,
                "clients": row.clients,
                "latency": row.summary.to_json(),
                "floor": floor.0,
                "floor_us": micros(floor.1),
                "p50_over_floor": ratio(row.summary.p50, floor.1),
                "p50_over_redis": redis_peer(row, rows).map(|peer| ratio(row.summary.p50, peer.summary.p50)),
                "rate_over_redis": redis_peer(row, rows).map(|peer| {
                    (row.summary.per_second / peer.summary.per_second * 100.0).round() / 100.0
                }),
                "server_cpu": row.cpu.map(cpu::ServerCpu::to_json),
                "cpu_over_redis": cpu_over_redis(row, rows),
                "commits": row.commits.map(|c| json!({
                    "count": c.commits,
                    "changes_per_commit": c.changes_per_commit,
                    "mean_commit_us": micros(c.mean_commit),
                    "compactions": c.compactions,
                    "compacted_rows": c.compacted_rows,
                })),
            })
        }).collect::<Vec<_>>(),
        "scale": scale_rows.iter().map(|row| json!({
            "live_tasks": row.live,
            "populate_ms": row.populate.as_secs_f64() * 1e3,
            "list": row.list.to_json(),
            "rss_kib": row.rss_kib,
            "peak_rss_kib": row.peak_kib,
            "restarted_rss_kib": row.restarted_rss_kib,
            "startup_ms": row.startups.iter().map(|d| d.as_secs_f64() * 1e3).collect::<Vec<_>>(),
            "expiry": row.expiry.as_ref().map(|e| json!({
                "all_removed_ms": e.all_removed.as_secs_f64() * 1e3,
                "other_reads": e.reads.to_json(),
                "other_writes": e.writes.to_json(),
            })),
        })).collect::<Vec<_>>(),
        "targets": targets.iter().map(|t| json!({
            "target": t.name,
            "value": t.value,
            "limit": t.limit,
            "met": t.met(),
        })).collect::<Vec<_>>(),
        "seconds": seconds,
    })
}

pub fn is_mutation(endpoint: &str) -> bool {
    matches!(
        endpoint,
        "create" | "refresh" | "delete" | "redis SET" | "redis SET again" | "redis DEL"
    )
}

/// The Redis row a row of ours is compared with, at the same client count,
/// its slices alternating with ours: SET of new keys for a create, SET of
/// those keys again for a refresh, DEL for a delete, GET for a get.
pub fn redis_peer<'a>(row: &Row, rows: &'a [Row]) -> Option<&'a Row> {
    let peer = redis_peer_name(row.endpoint)?;
    rows.iter()
        .find(|other| other.endpoint == peer && other.clients == row.clients)
}

/// The endpoint of [`redis_peer`]'s row.
pub fn redis_peer_name(endpoint: &str) -> Option<&'static str> {
    Some(match endpoint {
        "create" => "redis SET",
        "refresh" => "redis SET again",
        "delete" => "redis DEL",
        "get" => "redis GET",
        _ => return None,
    })
}

/// A row's server CPU per request over its Redis peer's.
pub fn cpu_over_redis(row: &Row, rows: &[Row]) -> Option<f64> {
    let theirs = redis_peer(row, rows)?.cpu?;
    row.cpu?.ratio(theirs)
}

pub fn redis_json(program: &Path, rows: &[Row], cross_checks: &[CrossCheck]) -> Value {
    json!({
        "program": program.display().to_string(),
        "version": redis_version(program),
        "config": REDIS_CONFIG
            .iter()
            .map(|word| if word.is_empty() { "\"\"" } else { word })
            .collect::<Vec<_>>()
            .join(" "),
        "requests": rows.iter().filter(|row| row.endpoint.starts_with("redis")).map(|row| json!({
            "command": row.endpoint.trim_start_matches("redis "),
            "clients": row.clients,
            "latency": row.summary.to_json(),
            "server_cpu": row.cpu.map(cpu::ServerCpu::to_json),
        })).collect::<Vec<_>>(),
        "redis_benchmark_set": cross_checks.iter().map(|(clients, rate, p50)| json!({
            "clients": clients,
            "per_second": rate.round(),
            "p50_us": p50,
        })).collect::<Vec<_>>(),
    })
}

/// The floor a row's p50 is compared with, and its value.
pub fn floor_of(row: &Row, floors: &Floors) -> (&'static str, Duration) {
    if is_mutation(row.endpoint) {
        ("fsync + transport", floors.fsync.p50 + floors.transport.p50)
    } else {
        ("transport", floors.transport.p50)
    }
}

pub fn ratio(value: Duration, floor: Duration) -> f64 {
    (value.as_secs_f64() / floor.as_secs_f64() * 100.0).round() / 100.0
}

pub fn floors_json(floors: &Floors) -> Value {
    json!({
        "transport": floors.transport.to_json(),
        "transport_more_clients": floors.transport_many.iter().map(|(clients, s)| json!({
            "clients": clients,
            "latency": s.to_json(),
        })).collect::<Vec<_>>(),
        "fsync": floors.fsync.to_json(),
        "redb_commit": floors.store.to_json(),
    })
}

pub fn git_commit() -> Option<String> {
    let output = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

pub fn print_floors(floors: &Floors) {
    println!("\nfloors (this machine, this run)");
    println!(
        "{:<34} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "floor", "n", "p50", "p90", "p99", "max", "per s"
    );
    let line = |name: String, s: &Summary| {
        println!(
            "{:<34} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9.0}",
            name,
            s.count,
            show(s.p50),
            show(s.p90),
            show(s.p99),
            show(s.max),
            s.per_second
        );
    };
    line("transport: echo round trip, 1 cl".into(), &floors.transport);
    for (clients, summary) in &floors.transport_many {
        line(format!("transport: echo round trip, {clients} cl"), summary);
    }
    line(
        format!("durability: {SMALL_WRITE} B write + fdatasync"),
        &floors.fsync,
    );
    line("store: redb commit of one row".into(), &floors.store);
}

pub fn print_paired(paired: &[Paired], floors: &Floors) {
    if paired.is_empty() {
        return;
    }
    println!(
        "\none client, each request followed by one Redis SET (when Redis runs), one \
         fsync-floor and one store-floor operation"
    );
    println!(
        "{:<10} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>12} {:>11} {:>9}",
        "endpoint",
        "n",
        "p50",
        "p99",
        "fsync p50",
        "redb p50",
        "transport",
        "redis p50",
        "÷(fsync+tr)",
        "÷(redb+tr)",
        "÷ redis"
    );
    let transport = floors.transport.p50;
    for pair in paired {
        println!(
            "{:<10} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>12.2} {:>11.2} {:>9}",
            pair.endpoint,
            pair.request.count,
            show(pair.request.p50),
            show(pair.request.p99),
            show(pair.fsync.p50),
            show(pair.store.p50),
            show(transport),
            pair.redis.as_ref().map_or("-".into(), |r| show(r.p50)),
            ratio(pair.request.p50, pair.fsync.p50 + transport),
            ratio(pair.request.p50, pair.store.p50 + transport),
            pair.redis.as_ref().map_or("-".into(), |r| format!(
                "{:.2}",
                ratio(pair.request.p50, r.p50)
            ))
        );
    }
    println!("redis p50: SET key value EX 3600, appendfsync always, one client, interleaved.");
}

pub fn print_requests(rows: &[Row], floors: &Floors, after: &Floors) {
    println!("\nrequests (keep-alive, one in flight per client)");
    println!(
        "{:<15} {:>4} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9} {:>7} {:>9} {:>8} {:>7}  group commit",
        "endpoint",
        "cl",
        "n",
        "p50",
        "p90",
        "p99",
        "max",
        "per s",
        "cpu/req",
        "of which",
        "p50 ×",
        "floor",
        "÷ redis",
        "cpu ÷ r"
    );
    for row in rows {
        let versus_redis = redis_peer(row, rows).map_or(String::new(), |peer| {
            format!("{:.2}", ratio(row.summary.p50, peer.summary.p50))
        });
        let s = &row.summary;
        let (_, floor) = floor_of(row, floors);
        let commits = row.commits.map_or(String::new(), |c| {
            format!(
                "{:.1} changes/commit, {} per commit, compacted {}",
                c.changes_per_commit,
                show(c.mean_commit),
                compacted(c)
            )
        });
        println!(
            "{:<15} {:>4} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9.0} {:>10} {:>9} {:>7.2} {:>9} {:>8} {:>7}  {}",
            row.endpoint,
            row.clients,
            s.count,
            show(s.p50),
            show(s.p90),
            show(s.p99),
            show(s.max),
            s.per_second,
            row.cpu.map_or("-".into(), |c| c.show()),
            row.cpu.map_or("-".into(), |c| c.show_checkpoint()),
            ratio(s.p50, floor),
            show(floor),
            versus_redis,
            cpu_over_redis(row, rows).map_or(String::new(), |r| format!("{r:.2}")),
            commits
        );
    }
    println!(
        "p50 ×: p50 over the floor; floor: for mutations (ours and Redis's) the run's \
         fsync + transport floors, for reads the transport floor. ÷ redis: p50 over the p50 of \
         Redis's SET (create), SET again (refresh), DEL (delete) or GET at the same client \
         count, slices alternating."
    );
    print_cpu_note();
    println!(
        "floors re-measured after the requests: transport p50 {}, fsync p50 {}, redb commit p50 {}",
        show(after.transport.p50),
        show(after.fsync.p50),
        show(after.store.p50)
    );
}

/// Ours beside Redis (`appendfsync always`), same client loop, slices
/// alternating: latency, rate and server CPU per request of durable writes
/// (create beside SET, refresh beside SET of the same keys, delete beside
/// DEL) and of reads (get beside GET).
pub fn print_redis(
    rows: &[Row],
    paired: &[Paired],
    paired_gets: Option<&PairedGets>,
    floors: &Floors,
    cross_checks: &[CrossCheck],
) {
    println!("\nours vs Redis (appendfsync always): same client loop, phases alternating");
    println!(
        "{:>4} {:<17} {:>9} {:>9} {:>6} {:>8} {:>8} {:>6} {:>10} {:>10} {:>6} {:>14} {:>16} {:>11}",
        "cl",
        "ours/Redis",
        "ours p50",
        "Redis p50",
        "÷",
        "ours/s",
        "Redis/s",
        "×",
        "ours cpu",
        "Redis cpu",
        "÷",
        "client cpu",
        "redis-benchmark",
        "compacted"
    );
    let find = |endpoint: &str, clients: usize| {
        rows.iter()
            .find(|row| row.endpoint == endpoint && row.clients == clients)
    };
    let mut counts: Vec<usize> = rows
        .iter()
        .filter(|row| row.endpoint == "redis SET")
        .map(|row| row.clients)
        .collect();
    counts.sort_unstable();
    counts.dedup();
    for clients in counts {
        for ours in ["create", "refresh", "delete", "get"] {
            let theirs = redis_peer_name(ours).unwrap_or_default();
            let (Some(ours), Some(theirs)) = (find(ours, clients), find(theirs, clients)) else {
                continue;
            };
            let cross_check = cross_checks
                .iter()
                .find(|check| check.0 == clients && theirs.endpoint == "redis SET")
                .map_or("-".into(), |(_, rate, p50)| {
                    format!("{rate:.0}/s {p50:.0} µs")
                });
            print_versus(ours, theirs, &cross_check);
        }
    }
    let transport = floors.transport.p50;
    for pair in paired {
        if let Some(redis) = &pair.redis {
            println!(
                "interleaved per request at 1 client: {} p50 {} vs SET p50 {} (÷ {:.2}); \
                 fsync + transport {} (SET ÷ {:.2})",
                pair.endpoint,
                show(pair.request.p50),
                show(redis.p50),
                ratio(pair.request.p50, redis.p50),
                show(pair.fsync.p50 + transport),
                ratio(redis.p50, pair.fsync.p50 + transport)
            );
        }
    }
    if let Some(gets) = paired_gets {
        println!(
            "interleaved per request at 1 client: get p50 {} vs GET p50 {} (÷ {:.2}), p99 {} vs {}",
            show(gets.ours.p50),
            show(gets.redis.p50),
            ratio(gets.ours.p50, gets.redis.p50),
            show(gets.ours.p99),
            show(gets.redis.p99)
        );
        println!(
            "  the same, Redis's values copies of our answers' bodies ({} B instead of {} B): \
             GET p50 {} (÷ {:.2}), p99 {}",
            gets.body_bytes,
            REDIS_VALUE.len(),
            show(gets.redis_same_bytes.p50),
            ratio(gets.ours.p50, gets.redis_same_bytes.p50),
            show(gets.redis_same_bytes.p99)
        );
    }
    println!(
        "÷: ours over Redis's (p50, CPU per request); ×: our rate over Redis's. \
         redis-benchmark: `-t set` on the same Redis right after, a cross-check of our loop \
         (full runs only). compacted: our compactions of the task tables in the phase and \
         the rows they rewrote (every live row), charged to the phase whose changes took the \
         runs past the base."
    );
    print_cpu_note();
}

/// One line of the Redis table: a row of ours beside its Redis peer.
fn print_versus(ours: &Row, theirs: &Row, cross_check: &str) {
    let (our, their) = (&ours.summary, &theirs.summary);
    let cpu = |row: &Row| row.cpu.map_or("-".into(), |c| c.show());
    let cpu_ratio = ours
        .cpu
        .zip(theirs.cpu)
        .and_then(|(our, their)| our.ratio(their))
        .map_or("-".into(), |r| format!("{r:.2}"));
    let client_cpu = ours.cpu.zip(theirs.cpu).map_or("-".into(), |(our, their)| {
        format!(
            "{:.1}/{:.1} µs",
            our.client_per_request().as_secs_f64() * 1e6,
            their.client_per_request().as_secs_f64() * 1e6
        )
    });
    println!(
        "{:>4} {:<17} {:>9} {:>9} {:>6.2} {:>8.0} {:>8.0} {:>6.2} {:>10} {:>10} {:>6} {:>14} {:>16} {:>11}",
        ours.clients,
        format!(
            "{}/{}",
            ours.endpoint,
            theirs.endpoint.trim_start_matches("redis ")
        ),
        show(our.p50),
        show(their.p50),
        ratio(our.p50, their.p50),
        our.per_second,
        their.per_second,
        our.per_second / their.per_second,
        cpu(ours),
        cpu(theirs),
        cpu_ratio,
        client_cpu,
        cross_check,
        ours.commits.map_or("-".into(), compacted)
    );
}

/// A phase's compactions, as `0` or `1: 246k` (the rows rewritten).
fn compacted(commits: Commits) -> String {
    if commits.compactions < 1.0 {
        return "0".into();
    }
    format!(
        "{:.0}: {:.0}k",
        commits.compactions,
        commits.compacted_rows / 1000.0
    )
}

/// What the CPU columns are.
fn print_cpu_note() {
    println!(
        "cpu: the server's CPU per request over the phase ({}, at {} ticks/s; Redis's around \
         its own slices; ours around its GET slices, and for a mutation over the whole phase \
         until its log is checkpointed), over the requests served; ~: fewer than {} ticks \
         in the phase, rough (longer phases: --duration). client cpu: the bench's own CPU per \
         request over the same phases, ours/Redis (an HTTP client against a RESP one): on a \
         machine of a few cores it comes out of what the server can have.",
        cpu::SOURCE,
        cpu::ticks_per_second(),
        cpu::ROUGH_TICKS
    );
}

pub fn print_scale(rows: &[ScaleRow]) {
    println!("\nscale (live tasks)");
    println!(
        "{:>7} {:>9} {:>10} {:>10} {:>8} {:>8} {:>10} {:>9} {:>10} {:>10} {:>10}",
        "live",
        "populate",
        "list p50",
        "list p99",
        "RSS",
        "peak",
        "RSS after",
        "start-up",
        "expiry",
        "read max",
        "write max"
    );
    for row in rows {
        let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
        let (expiry, read, write) = row
            .expiry
            .as_ref()
            .map_or(("-".into(), "-".into(), "-".into()), |e| {
                (show(e.all_removed), show(e.reads.max), show(e.writes.max))
            });
        println!(
            "{:>7} {:>9} {:>10} {:>10} {:>8} {:>8} {:>10} {:>9} {:>10} {:>10} {:>10}",
            row.live,
            show(row.populate),
            show(row.list.p50),
            show(row.list.p99),
            mib(row.rss_kib),
            mib(row.peak_kib),
            mib(row.restarted_rss_kib),
            show(row.startup()),
            expiry,
            read,
            write
        );
    }
    println!(
        "RSS: VmRSS after populating and listing, read after one more answer (the last list's \
         buffer is freed by then); peak: VmHWM, a list's whole answer included; RSS after: \
         after a restart. start-up: spawn to accepting, median. expiry: all tasks due at once \
         (daemon SIGSTOPped until due), resume to last removal; read/write max: what another \
         client waited meanwhile."
    );
}
