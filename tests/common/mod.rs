//! Test harness shared by the integration tests: starts the real
//! `sprite-tasksd` binary on a temporary socket and a database file on the
//! real disk, reads its log, and speaks raw HTTP to it.
//!
//! Readiness and events are awaited by reading the daemon's log lines, never
//! by sleeping.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long to wait for the daemon to start or a log line to appear before
/// failing the test. Generous: CI machines are busy.
pub const WAIT: Duration = Duration::from_secs(20);

/// Where a test keeps its files: a short directory for the socket (Unix
/// socket paths are limited to 108 bytes) and one on the build's disk for the
/// database, so fsync is real.
pub struct Dirs {
    pub socket_dir: tempfile::TempDir,
    pub db_dir: tempfile::TempDir,
}

impl Dirs {
    pub fn new() -> Dirs {
        Dirs {
            socket_dir: tempfile::Builder::new()
                .prefix("st")
                .tempdir()
                .expect("temp dir"),
            db_dir: tempfile::Builder::new()
                .prefix("db")
                .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
                .expect("temp dir"),
        }
    }

    /// As [`new`](Self::new), with the socket's directory searchable by
    /// every uid (the socket itself is mode 0666), for clients run as
    /// other users.
    pub fn reachable_by_other_uids() -> Dirs {
        use std::os::unix::fs::PermissionsExt;
        let dirs = Dirs::new();
        std::fs::set_permissions(
            dirs.socket_dir.path(),
            std::fs::Permissions::from_mode(0o755),
        )
        .expect("the socket directory's mode");
        dirs
    }

    pub fn socket(&self) -> PathBuf {
        self.socket_dir.path().join("api.sock")
    }

    pub fn db(&self) -> PathBuf {
        self.db_dir.path().join("tasks.redb")
    }
}

/// A running daemon. Killed (SIGKILL) when dropped.
pub struct Daemon {
    child: Option<Child>,
    pub socket: PathBuf,
    pub db: PathBuf,
    log: Mutex<(Vec<String>, Receiver<String>)>,
}

/// Whether this process runs as root, so other uids can be played.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

/// `program` run as `uid` through `setpriv` (numbers need no passwd
/// entry), or as this process when `uid` is `None`.
pub fn command_as(uid: Option<u32>, program: &str) -> Command {
    match uid {
        Some(uid) => {
            let mut setpriv = Command::new("setpriv");
            setpriv
                .arg(format!("--reuid={uid}"))
                .arg(format!("--regid={uid}"))
                .arg("--clear-groups")
                .arg(program);
            setpriv
        }
        None => Command::new(program),
    }
}

pub fn daemon_binary() -> &'static str {
    env!("CARGO_BIN_EXE_sprite-tasksd")
}

/// Spawns the daemon without waiting for it.
pub fn spawn(socket: &Path, db: &Path, args: &[&str]) -> (Child, Receiver<String>) {
    spawn_with_env(socket, db, args, &[])
}

/// As [`spawn`], with extra environment variables (test hooks).
pub fn spawn_with_env(
    socket: &Path,
    db: &Path,
    args: &[&str],
    env: &[(&str, &std::ffi::OsStr)],
) -> (Child, Receiver<String>) {
    let mut child = Command::new(daemon_binary())
        .arg("--socket")
        .arg(socket)
        .arg("--db")
        .arg(db)
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "info,sprite_tasks=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sprite-tasksd");
    let stderr = child.stderr.take().expect("stderr");
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if std::env::var_os("SPRITE_TEST_LOG").is_some() {
                eprintln!("daemon: {line}");
            }
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    (child, receiver)
}

impl Daemon {
    /// Starts a daemon on `dirs` and waits until it listens.
    pub fn start(dirs: &Dirs, args: &[&str]) -> Daemon {
        Daemon::start_with_env(dirs, args, &[])
    }

    /// As [`start`](Self::start), with extra environment variables.
    pub fn start_with_env(dirs: &Dirs, args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Daemon {
        let (child, receiver) = spawn_with_env(&dirs.socket(), &dirs.db(), args, env);
        let daemon = Daemon {
            child: Some(child),
            socket: dirs.socket(),
            db: dirs.db(),
            log: Mutex::new((Vec::new(), receiver)),
        };
        daemon.wait_for_log("sprite-tasksd listening");
        daemon
    }

    /// A handle on a daemon the test spawned itself (to own its stderr),
    /// serving on `dirs`: for requests only. It neither reads the log nor
    /// kills the process.
    pub fn attach(dirs: &Dirs) -> Daemon {
        let (_, receiver) = mpsc::channel();
        Daemon {
            child: None,
            socket: dirs.socket(),
            db: dirs.db(),
            log: Mutex::new((Vec::new(), receiver)),
        }
    }

    /// Waits for a log line containing `needle` (seen before or arriving
    /// within [`WAIT`]) and returns it. Panics with the log so far if none.
    pub fn wait_for_log(&self, needle: &str) -> String {
        self.wait_for_log_within(needle, WAIT)
            .unwrap_or_else(|| panic!("no log line with {needle:?}; log:\n{}", self.log_text()))
    }

    /// As [`wait_for_log`](Self::wait_for_log), `None` after `limit`.
    pub fn wait_for_log_within(&self, needle: &str, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        let mut guard = self.log.lock().unwrap();
        let (seen, receiver) = &mut *guard;
        if let Some(line) = seen.iter().find(|line| line.contains(needle)) {
            return Some(line.clone());
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match receiver.recv_timeout(left) {
                Ok(line) => {
                    seen.push(line.clone());
                    if line.contains(needle) {
                        return Some(line);
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// Every log line received so far.
    pub fn log_text(&self) -> String {
        let mut guard = self.log.lock().unwrap();
        let (seen, receiver) = &mut *guard;
        seen.extend(receiver.try_iter());
        seen.join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL, and reap.
    pub fn kill9(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait for the exit status (panics after [`WAIT`]).
    pub fn terminate(self) -> (ExitStatus, String) {
        self.terminate_within(WAIT)
    }

    /// As [`terminate`](Self::terminate), panicking after `limit`: for a
    /// daemon that writes much on its way out (a profiler around it).
    pub fn terminate_within(mut self, limit: Duration) -> (ExitStatus, String) {
        let mut child = self.child.take().expect("running");
        signal(child.id(), libc::SIGTERM);
        let status =
            wait_with_timeout(&mut child, limit).expect("daemon did not exit after SIGTERM");
        // The log reader ends at EOF; collect what is left.
        let _ = self.wait_for_log_within("sprite-tasksd stopped", Duration::from_secs(2));
        (status, self.log_text())
    }

    /// A new connection to the daemon.
    pub fn connect(&self) -> UnixStream {
        let stream = UnixStream::connect(&self.socket).expect("connect");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream
    }

    /// Sends raw bytes on a fresh connection, half-closes it, and returns
    /// everything the daemon wrote until it closed.
    pub fn raw(&self, bytes: &[u8]) -> Vec<u8> {
        let mut stream = self.connect();
        stream.write_all(bytes).unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out);
        out
    }

    /// One request on its own connection: its status.
    pub fn status(&self, method: &str, path: &str, body: Option<&str>) -> u16 {
        self.call(method, path, body).0
    }

    /// One request on its own connection: the status and the body as JSON
    /// (`Value::Null` for an empty body).
    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let mut stream = self.connect();
        stream
            .write_all(&request_bytes(method, path, body))
            .unwrap();
        let response = read_response(&mut stream).expect("a response");
        (response.status, response.json())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) with a pid we spawned; no memory is involved.
    let result = unsafe { libc::kill(pid as i32, signal) };
    assert_eq!(result, 0, "kill({pid}, {signal})");
}

pub fn wait_with_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        // Polling a child's exit has no readiness API here; 5 ms is a
        // poll interval, not a synchronisation guess.
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A keep-alive HTTP/1.1 request with a JSON body.
pub fn request_bytes(method: &str, path: &str, body: Option<&str>) -> Vec<u8> {
    let body = body.unwrap_or("");
    format!(
        "{method} {path} HTTP/1.1\r\nHost: sprite\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        if self.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&self.body).unwrap_or_else(|e| {
                panic!(
                    "body is not JSON ({e}): {:?}",
                    String::from_utf8_lossy(&self.body)
                )
            })
        }
    }
}

/// Reads one response (Content-Length framed) from a stream; `None` at a
/// clean EOF before any byte. Interim 100 responses are returned as such.
pub fn read_response(stream: &mut impl Read) -> Option<Response> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(0) => {
                assert!(head.is_empty(), "EOF inside a response head: {head:?}");
                return None;
            }
            Ok(_) => head.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!(
                "reading a response: {e}; got {:?}",
                String::from_utf8_lossy(&head)
            ),
        }
    }
    let text = String::from_utf8(head).expect("ASCII head");
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').expect("header");
            (n.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).expect("response body");
    Some(Response {
        status,
        headers,
        body,
    })
}

/// Runs real curl against the daemon's socket. Returns (exit code, stdout).
pub fn curl(socket: &Path, args: &[&str]) -> (i32, String) {
    let output = Command::new("curl")
        .arg("-s")
        .arg("--unix-socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("curl is installed (scripts/test.sh checks)");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// Polls `probe` until `done` accepts its value or [`WAIT`] passes, and
/// returns the last value. For state another process writes (a file, a
/// counter) where there is no event to wait on.
pub fn eventually<T>(mut probe: impl FnMut() -> T, done: impl Fn(&T) -> bool) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        let value = probe();
        if done(&value) || Instant::now() >= deadline {
            return value;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Reads a child's stderr line by line on a thread of its own (echoed
/// when `SPRITE_TEST_LOG` is set), as [`spawn`] does for the daemon.
pub fn log_lines(child: &mut Child) -> Receiver<String> {
    let stderr = child.stderr.take().expect("stderr piped");
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if std::env::var_os("SPRITE_TEST_LOG").is_some() {
                eprintln!("daemon: {line}");
            }
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

impl Daemon {
    /// A daemon the test started its own way (under a launcher, with its
    /// own environment), its stderr read by [`log_lines`]. Killed when
    /// dropped, like one from [`Daemon::start`]; nothing is awaited.
    pub fn adopt(child: Child, log: Receiver<String>, socket: PathBuf, db: PathBuf) -> Daemon {
        Daemon {
            child: Some(child),
            socket,
            db,
            log: Mutex::new((Vec::new(), log)),
        }
    }
}

/// Runs the real `Server` on a thread of this process over a database that
/// obeys `db_switch` and a log that obeys `log_switch`, once it has started
/// (loaded its store and bound `config.socket`). The thread returns the
/// server's counters when a SIGTERM to this process stops it.
///
/// # Errors
/// The start-up error, as text.
pub fn start_in_process(
    config: sprite_tasks::server::Config,
    db: &Path,
    db_switch: &sprite_tasks::testing::faulty::FaultSwitch,
    log_switch: &sprite_tasks::testing::faulty::FaultSwitch,
    options: sprite_tasks::store::StoreOptions,
) -> Result<std::thread::JoinHandle<Result<sprite_tasks::server::Stats, String>>, String> {
    use sprite_tasks::server::Server;
    use sprite_tasks::testing::faulty;
    let (ready, started) = mpsc::channel();
    let (db, db_switch, log_switch) = (db.to_path_buf(), db_switch.clone(), log_switch.clone());
    let thread = std::thread::spawn(move || {
        let server = faulty::store_with(&db, &db_switch, &log_switch, &options)
            .map_err(|e| e.to_string())
            .and_then(|store| Server::new(config, store).map_err(|e| e.to_string()));
        match server {
            Ok(server) => {
                let _ = ready.send(Ok(()));
                server.run().map_err(|e| e.to_string())
            }
            Err(e) => {
                let _ = ready.send(Err(e.clone()));
                Err(e)
            }
        }
    });
    started
        .recv_timeout(WAIT)
        .expect("the server thread answers")?;
    Ok(thread)
}

/// An open `GET /v1/events` stream, read chunk by chunk.
pub struct EventStream {
    reader: BufReader<UnixStream>,
}

impl EventStream {
    /// Opens the stream with `query` (e.g. `?since=3`) and checks its head.
    pub fn open(daemon: &Daemon, query: &str) -> EventStream {
        let mut stream = daemon.connect();
        stream
            .write_all(format!("GET /v1/events{query} HTTP/1.1\r\nHost: sprite\r\n\r\n").as_bytes())
            .unwrap();
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            head.push_str(&line);
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("Transfer-Encoding: chunked"), "{head}");
        assert!(head.contains("application/x-ndjson"), "{head}");
        EventStream { reader }
    }

    /// The next event line; `None` at the end of the stream.
    pub fn next(&mut self) -> Option<Value> {
        let mut size_line = String::new();
        if self.reader.read_line(&mut size_line).unwrap() == 0 {
            return None;
        }
        let size = usize::from_str_radix(size_line.trim_end(), 16).expect("chunk size");
        let mut chunk = vec![0u8; size + 2];
        self.reader.read_exact(&mut chunk).unwrap();
        assert_eq!(&chunk[size..], b"\r\n");
        if size == 0 {
            return None;
        }
        assert_eq!(chunk[size - 1], b'\n', "one line per chunk");
        Some(serde_json::from_slice(&chunk[..size - 1]).unwrap())
    }

    /// The next event; panics at the end of the stream or after the
    /// connection's read timeout.
    pub fn event(&mut self) -> Value {
        self.next().expect("the stream ended")
    }
}

/// The `/metrics` page, whole response included.
pub fn metrics(daemon: &Daemon) -> String {
    let raw = daemon.raw(b"GET /metrics HTTP/1.1\r\nHost: sprite\r\nConnection: close\r\n\r\n");
    String::from_utf8_lossy(&raw).into_owned()
}

/// The value of one sample line of `/metrics` (`name` with its labels).
pub fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
}
