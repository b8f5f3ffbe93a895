//! The peer: `redis-server` with its AOF synced before each reply, found
//! on the `PATH` (never installed: `scripts/bench.sh` installs it as root),
//! started on a temporary socket beside where the daemon's database goes;
//! the RESP client the bench's loop drives it with; and `redis-benchmark`,
//! the cross-check of that loop.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::client::{Connection, Framed, Protocol};
use crate::common::Dirs;
use crate::daemon::{DiesWithBench, START_LIMIT};

/// How Redis is run: every write appended to its AOF and `fdatasync`ed
/// before the reply (Redis flushes the AOF in `beforeSleep`, ahead of
/// writing replies, so a group of clients shares one sync), no snapshots.
pub const REDIS_CONFIG: &[&str] = &[
    "--port",
    "0",
    "--unixsocketperm",
    "700",
    "--appendonly",
    "yes",
    "--appendfsync",
    "always",
    "--save",
    "",
    "--daemonize",
    "no",
    "--loglevel",
    "warning",
];

/// The value each durable write stores: about a task's encoded row.
pub const REDIS_VALUE: &str = "{\"expires_ms\":1766000000000,\"n\":1}";

/// Finds `redis-server` on the `PATH`. The bench installs nothing.
///
/// # Errors
/// Why there is none, and how to install it.
pub fn find_redis() -> Result<PathBuf, String> {
    on_path("redis-server").ok_or_else(|| {
        "redis-server is not on the PATH (to install it: apt-get install redis-server, \
         or scripts/bench.sh as root)"
            .into()
    })
}

/// Why `redis-benchmark`, the cross-check of full runs, is missing, and
/// how to install it.
pub fn redis_benchmark_missing() -> Option<String> {
    on_path("redis-benchmark").is_none().then(|| {
        "redis-benchmark is not on the PATH (to install it: apt-get install redis-tools, \
         or scripts/bench.sh as root)"
            .into()
    })
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// `redis-server --version`'s line, for the report.
pub fn redis_version(program: &Path) -> String {
    Command::new(program)
        .arg("--version")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// A running `redis-server` on a temporary socket, its AOF on the build's
/// disk beside where the daemon's database goes; killed when dropped.
pub struct Redis {
    child: Child,
    pub socket: PathBuf,
    dirs: Dirs,
}

impl Redis {
    pub fn start(program: &Path) -> Redis {
        let dirs = Dirs::new();
        let socket = dirs.socket_dir.path().join("redis.sock");
        let child = Command::new(program)
            .args(REDIS_CONFIG)
            .arg("--unixsocket")
            .arg(&socket)
            .arg("--dir")
            .arg(dirs.db_dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .dies_with_bench()
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let mut redis = Redis {
            child,
            socket,
            dirs,
        };
        let started = Instant::now();
        loop {
            // Accepting, and past loading its (empty) AOF: PING answers
            // -LOADING until then.
            if let Ok(stream) = UnixStream::connect(&redis.socket) {
                let mut connection = RespClient::from_stream(stream);
                if connection.call(&resp(&["PING"])) == (200, b"PONG".to_vec()) {
                    return redis;
                }
            }
            if let Ok(Some(status)) = redis.child.try_wait() {
                panic!("redis-server exited while starting: {status}");
            }
            assert!(
                started.elapsed() < START_LIMIT,
                "redis-server did not accept on {} within {START_LIMIT:?}",
                redis.socket.display()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Checks that Redis runs as configured: AOF on, synced before each
    /// reply, no snapshots.
    pub fn check_aof(&self) {
        let mut connection = RespClient::connect(&self.socket);
        for (name, value) in [
            ("appendonly", "yes"),
            ("appendfsync", "always"),
            ("save", ""),
        ] {
            let (status, body) = connection.call(&resp(&["CONFIG", "GET", name]));
            assert_eq!(
                (status, String::from_utf8_lossy(&body)),
                (200, format!("{name} {value}").into()),
                "redis CONFIG GET {name}"
            );
        }
        let aof = self.dirs.db_dir.path().join("appendonlydir");
        assert!(aof.is_dir(), "redis keeps its AOF in {}", aof.display());
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Redis's protocol. Replies map to statuses: a simple string, integer or
/// bulk string is 200, a nil bulk string 404, an error 500; an array (only
/// `CONFIG GET` here) is 200 with its elements joined by spaces.
pub struct Resp;

/// A blocking connection to Redis.
pub type RespClient = Connection<Resp>;

impl Protocol for Resp {
    const PEER: &'static str = "redis";

    fn framed(input: &[u8]) -> Option<Framed> {
        element(input, 0)
    }

    fn body(answer: &[u8], framed: &Framed) -> Vec<u8> {
        body_at(answer, 0, framed)
    }
}

/// The body of the complete element `framed` that starts at `at`.
fn body_at(input: &[u8], at: usize, framed: &Framed) -> Vec<u8> {
    if input[at] != b'*' {
        return input[framed.body.clone()].to_vec();
    }
    let mut joined = Vec::new();
    let mut position = framed.body.start;
    while position < framed.end {
        let element = element(input, position).expect("a complete array's element");
        if position != framed.body.start {
            joined.push(b' ');
        }
        joined.extend_from_slice(&body_at(input, position, &element));
        position = element.end;
    }
    joined
}

/// The reply element starting at `at`, if it is all there. An array's body
/// is its elements.
fn element(input: &[u8], at: usize) -> Option<Framed> {
    let end = at + input.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
    let text = std::str::from_utf8(&input[at + 1..end]).unwrap_or("?");
    let next = end + 2;
    let number = || -> i64 {
        text.parse()
            .unwrap_or_else(|_| panic!("a RESP length, not {text:?}"))
    };
    let whole = |status| Framed {
        status,
        body: at + 1..end,
        end: next,
    };
    match input[at] {
        b'+' | b':' => Some(whole(200)),
        b'-' => Some(whole(500)),
        b'$' if number() < 0 => Some(Framed {
            status: 404,
            body: next..next,
            end: next,
        }),
        b'$' => {
            let last = next + number() as usize;
            (input.len() >= last + 2).then_some(Framed {
                status: 200,
                body: next..last,
                end: last + 2,
            })
        }
        b'*' => {
            let mut position = next;
            for _ in 0..number().max(0) {
                position = element(input, position)?.end;
            }
            Some(Framed {
                status: 200,
                body: next..position,
                end: position,
            })
        }
        other => panic!("a RESP reply, not {:?}", other as char),
    }
}

/// A command as a RESP array of bulk strings.
pub fn resp(words: &[&str]) -> Vec<u8> {
    let mut bytes = format!("*{}\r\n", words.len()).into_bytes();
    for word in words {
        bytes.extend_from_slice(format!("${}\r\n{word}\r\n", word.len()).as_bytes());
    }
    bytes
}

/// Redis's durable write of a task: `SET key value EX 3600`.
pub fn redis_set(key: &str) -> Vec<u8> {
    resp(&["SET", key, REDIS_VALUE, "EX", "3600"])
}

pub fn redis_get(key: &str) -> Vec<u8> {
    resp(&["GET", key])
}

/// SETs every key as [`redis_set`] does, 64 pipelined at a time, on one
/// connection: Redis's side of an unmeasured top-up.
pub fn redis_populate(socket: &Path, keys: &[String]) {
    let mut connection = RespClient::connect(socket);
    for window in keys.chunks(64) {
        let bytes: Vec<u8> = window.iter().flat_map(|key| redis_set(key)).collect();
        connection.send(&bytes);
        for key in window {
            let (status, body) = connection.answer();
            assert_eq!(status, 200, "SET {key}: {}", String::from_utf8_lossy(&body));
        }
    }
}

/// Redis's durable delete: `DEL key` (an integer reply, 200 here).
pub fn redis_del(key: &str) -> Vec<u8> {
    resp(&["DEL", key])
}

/// `redis-benchmark -t set` at `clients`, as a cross-check of our own loop:
/// its requests per second and p50, when the tool is present.
pub fn redis_benchmark(socket: &Path, clients: usize, requests: usize) -> Option<(f64, f64)> {
    let program = on_path("redis-benchmark")?;
    let output = Command::new(program)
        .arg("-s")
        .arg(socket)
        .args(["-t", "set", "-d", &REDIS_VALUE.len().to_string(), "--csv"])
        .args(["-c", &clients.to_string(), "-n", &requests.to_string()])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms",...
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().find(|line| line.starts_with("\"SET\""))?;
    let fields: Vec<f64> = line
        .split(',')
        .skip(1)
        .filter_map(|field| field.trim_matches('"').parse().ok())
        .collect();
    Some((*fields.first()?, *fields.get(3)? * 1000.0))
}
