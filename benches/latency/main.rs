//! Request latency of the real `sprite-tasksd`, measured against this
//! machine's own floors in the same run.
//!
//! `cargo bench --bench latency [-- OPTIONS]` starts the daemon built by
//! Cargo on a temporary socket, with its database on the build's disk, and
//! drives it over keep-alive connections (raw HTTP/1.1, one request in
//! flight per connection, an `Instant` around each request) from one
//! event-loop thread, as `redis-benchmark` drives Redis (`--threads`: a
//! blocking thread per connection instead, which bills the servers for
//! waking 64 threads; see `driver`). In the same run it measures three
//! floors:
//!
//! - **transport**: a round trip of a request-sized message to a trivial echo
//!   server (another process, blocking I/O) over a Unix socket;
//! - **durability**: one small write + `fdatasync` on the database's
//!   filesystem;
//! - **store**: one redb `Durability::Immediate` commit of one small row.
//!
//! Its peer is Redis: `redis-server` with `appendonly yes`, `appendfsync
//! always` and `save ""`, on a temporary Unix socket, its AOF on the same
//! filesystem as the daemon's database. The same client loop drives it over
//! RESP, each of its commands alternating in slices of one phase with our
//! requests of the same kind at each client count (SET of new keys with
//! our creates, SET of them again with our refreshes, GET with our GETs,
//! DEL with our deletes), and at one client its SET interleaved request by
//! request with our mutations and its GET with our GETs. The bench
//! installs nothing: when `redis-server` is not on the `PATH` it says what
//! to install (`scripts/bench.sh` installs it as root) and skips the Redis
//! rows. Full (not `--quick`) runs also cross-check with `redis-benchmark`,
//! and say so when it is missing.
//!
//! The log floors time one 128-byte record made durable in six ways, for
//! the write-ahead log's design: append and `fdatasync`; append into
//! `fallocate`d space; the same with each record in a new block; overwrite
//! of a zero-filled file and `fdatasync`; the same opened `O_DSYNC`; append
//! and `fsync`.
//!
//! Each request phase also reports its server's CPU per request: the user +
//! system time of the daemon's (or `redis-server`'s) process, all threads,
//! from `/proc/PID/stat`, over the requests served: Redis's around its own
//! slices, ours around its GET slices and, for a mutation, from the phase's
//! start to when the daemon's log is checkpointed (the checkpoints a
//! slice's writes cause run after it, during Redis's slice).
//! The figure is marked rough (`~`) when the phase spent fewer than 50
//! clock ticks; `--duration` lengthens the phases. The JSON also gives the
//! user and system ticks apart.
//!
//! Every figure is printed beside its ratio to the relevant floor (and to
//! Redis), and the whole run is written as JSON (default
//! `target/latency.json`) so commits can be compared. A noisy machine moves
//! the floors and the figures together; the ratios are what to compare.
//!
//! Options: `--quick` (short phases, scale up to 10k), `--duration SECS`
//! (per phase), `--clients 1,8,64`, `--scale 1,1000,10000,100000`,
//! `--no-scale`, `--no-lists`, `--no-redis`, `--threads`, `--log-floors`
//! (only the log floors, `--duration` in all), `--json PATH`. `SPRITE_BENCH_WRAP="perf
//! record -o FILE --"` runs each daemon under a profiler;
//! `SPRITE_BENCH_DAEMON=PATH` runs that build of `sprite-tasksd` instead of
//! Cargo's (to compare two commits in alternating runs); and
//! `SPRITE_BENCH_ARGS` adds daemon options (to compare settings).
//!
//! Run without `--bench` (as `cargo test --all-targets` does) it is a smoke
//! test: a few requests whose answers are checked, a few floor samples, no
//! timing assertion; Redis is checked only if `redis-server` is installed.
//!
//! This file holds the options and the order of the phases. The rest, a
//! file each: [`daemon`] (starting and reading the daemon, over the tests'
//! launcher in `tests/common`), [`client`] (the `Protocol` trait that
//! frames an answer, a blocking connection, the requests), [`driver`] (the
//! event loop, or a thread per connection), [`phases`] (the measured
//! request phases), [`cpu`] (a server's CPU per request), [`scale`] (many live tasks), [`redis`] (the
//! peer), [`floors`] and [`log_floors`] (the machine's floors), [`summary`]
//! (percentiles), [`report`] (the tables and the JSON), [`targets`] (the
//! issue's figures), [`smoke`] (the test run).

#[path = "../../tests/common/mod.rs"]
mod common;

mod client;
mod cpu;
mod daemon;
mod driver;
mod floors;
mod log_floors;
mod phases;
mod redis;
mod report;
mod scale;
mod smoke;
mod summary;
mod targets;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use floors::Floors;
use log_floors::{log_floors, print_log_floors};
use phases::{lists, mutations_and_gets, paired_gets, paired_mutations};
use redis::{find_redis, redis_benchmark_missing, redis_version};

/// Live tasks the daemon may hold: the largest scale step plus the tasks
/// the mutation phases create at 64 clients.
const MAX_TASKS: usize = 1_000_000;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--echo-server") {
        floors::echo_server(Path::new(&args[1]));
        return;
    }
    if !args.iter().any(|arg| arg == "--bench") {
        smoke::smoke();
        return;
    }
    let options = Options::parse(&args);
    run(&options);
}

#[derive(Debug, Clone)]
struct Options {
    quick: bool,
    /// Length of each measured phase.
    duration: Duration,
    clients: Vec<usize>,
    scale: Vec<usize>,
    lists: bool,
    /// Run Redis beside the daemon (`--no-redis` to skip).
    redis: bool,
    /// Only the log floors (`--log-floors`).
    log_floors_only: bool,
    /// How the phases drive their connections (`--threads`).
    driver: driver::Driver,
    json: PathBuf,
}

impl Options {
    fn parse(args: &[String]) -> Options {
        let quick = args.iter().any(|arg| arg == "--quick");
        let mut options = Options {
            quick,
            duration: Duration::from_secs_f64(if quick { 0.6 } else { 4.0 }),
            clients: vec![1, 8, 64],
            scale: if quick {
                vec![1, 1000, 10_000]
            } else {
                vec![1, 1000, 10_000, 100_000]
            },
            lists: true,
            redis: true,
            log_floors_only: false,
            driver: driver::Driver::EventLoop,
            json: Path::new(env!("CARGO_TARGET_TMPDIR"))
                .parent()
                .unwrap_or(Path::new("."))
                .join("latency.json"),
        };
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            let mut value = |name: &str| -> String {
                rest.next()
                    .unwrap_or_else(|| usage(&format!("{name} needs a value")))
                    .clone()
            };
            match arg.as_str() {
                "--bench" | "--quick" => {}
                "--duration" => {
                    let text = value("--duration");
                    let seconds: f64 = text
                        .parse()
                        .ok()
                        .filter(|s: &f64| *s > 0.0 && *s <= 600.0)
                        .unwrap_or_else(|| usage(&format!("--duration {text:?}: seconds")));
                    options.duration = Duration::from_secs_f64(seconds);
                }
                "--clients" => options.clients = list_of_counts(&value("--clients")),
                "--scale" => options.scale = list_of_counts(&value("--scale")),
                "--no-scale" => options.scale.clear(),
                "--no-lists" => options.lists = false,
                "--no-redis" => options.redis = false,
                "--log-floors" => options.log_floors_only = true,
                "--threads" => options.driver = driver::Driver::Threads,
                "--json" => options.json = PathBuf::from(value("--json")),
                other if other.starts_with('-') => usage(&format!("unknown option {other}")),
                // Cargo passes bench-name filters through; this bench has
                // one body and ignores them.
                _ => {}
            }
        }
        if options.scale.iter().any(|n| *n > MAX_TASKS / 2) {
            usage(&format!("--scale is at most {}", MAX_TASKS / 2));
        }
        options
    }
}

fn list_of_counts(text: &str) -> Vec<usize> {
    text.split(',')
        .map(|part| {
            part.trim()
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .unwrap_or_else(|| usage(&format!("{text:?}: a list such as 1,8,64")))
        })
        .collect()
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "latency bench: {problem}\n\
         usage: cargo bench --bench latency -- [--quick] [--duration SECS] \
         [--clients 1,8,64] [--scale 1,1000,10000,100000] [--no-scale] [--no-lists] \
         [--no-redis] [--threads] [--log-floors] [--json PATH]"
    );
    std::process::exit(2);
}

/// The phases in order, each table printed as soon as it is measured, then
/// the JSON report.
fn run(options: &Options) {
    let run_started = Instant::now();
    if options.log_floors_only {
        println!(
            "log floors: {:.1} s, interleaved",
            options.duration.as_secs_f64()
        );
        print_log_floors(&log_floors(options.duration, 50));
        return;
    }
    driver::choose(options.driver);
    println!(
        "sprite-tasksd latency: phases of {:.1} s, clients {:?} driven by {}, scale {:?}{}",
        options.duration.as_secs_f64(),
        options.clients,
        options.driver.name(),
        options.scale,
        if options.quick { " (quick)" } else { "" }
    );
    let found = if options.redis {
        find_redis()
    } else {
        Err("--no-redis".into())
    };
    match &found {
        Ok(program) => println!(
            "redis: {} ({}), appendonly yes, appendfsync always, save \"\", \
             AOF on the database's filesystem",
            program.display(),
            redis_version(program)
        ),
        Err(why) => println!("redis: {why}; the Redis rows are skipped"),
    }
    let cross_check = found.is_ok() && !options.quick;
    if let Some(why) = redis_benchmark_missing().filter(|_| cross_check) {
        println!("redis-benchmark: {why}; its cross-check is skipped");
    }
    let redis = found.as_deref().ok();
    let floors = Floors::measure(
        &options.clients,
        options.duration.min(Duration::from_secs(3)),
    );
    report::print_floors(&floors);
    let log = log_floors(options.duration.min(Duration::from_secs(3)), 50);
    print_log_floors(&log);
    let paired = if options.clients.contains(&1) {
        paired_mutations(options.duration, redis)
    } else {
        Vec::new()
    };
    report::print_paired(&paired, &floors);
    let gets = redis
        .filter(|_| options.clients.contains(&1))
        .map(|program| paired_gets(options.duration, program));

    let mut rows = Vec::new();
    let mut cross_checks = Vec::new();
    for &clients in &options.clients {
        let (more, checked) = mutations_and_gets(clients, options.duration, redis, cross_check);
        rows.extend(more);
        cross_checks.extend(checked);
    }
    if options.lists {
        rows.extend(lists(&options.clients, options.duration));
    }
    // The floors again at the end: a machine that got busier meanwhile shows.
    let floors_after = Floors::measure(&[], options.duration.min(Duration::from_secs(2)));
    report::print_requests(&rows, &floors, &floors_after);
    if redis.is_some() {
        report::print_redis(&rows, &paired, gets.as_ref(), &floors, &cross_checks);
    }

    let restarts = if options.quick { 1 } else { 3 };
    let scale_rows: Vec<_> = options
        .scale
        .iter()
        .map(|&live| {
            let duration = options.duration.min(Duration::from_secs(2));
            scale::scale(live, duration, restarts)
        })
        .collect();
    if !scale_rows.is_empty() {
        report::print_scale(&scale_rows);
    }
    let targets = targets::targets(&rows, &paired, gets.as_ref(), &floors, &scale_rows);
    targets::print_targets(&targets);

    let measured = report::Measured {
        quick: options.quick,
        phase: options.duration,
        redis: found,
        floors,
        floors_after,
        log,
        paired,
        paired_gets: gets,
        rows,
        cross_checks,
        scale_rows,
        targets,
    };
    report::write_json(&options.json, &measured, run_started);
}
