//! The daemon as a system service, against the real binary: socket
//! activation (through `systemd-socket-activate` when it is installed,
//! else with the test passing the socket itself as `LISTEN_FDS` does), a
//! restart under load with no refused connection, readiness, status and
//! watchdog notifications read from a test `NOTIFY_SOCKET`, and the unit
//! files of `contrib/systemd`.

mod common;

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Daemon, Dirs, WAIT, daemon_binary, eventually, log_lines, signal, wait_with_timeout};

const SOCKET_ACTIVATE: &str = "systemd-socket-activate";

/// Where `scripts/test.sh` and Debian put the systemd tools, beside `PATH`.
fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/bin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Who holds the listening socket and passes it to the daemon as fd 3.
enum Launcher {
    /// `systemd-socket-activate -l SOCKET`: binds, waits for the first
    /// connection, then execs the program with `LISTEN_FDS=1`.
    SocketActivate(PathBuf),
    /// The test binds the socket and passes it itself, with the variables
    /// systemd would set.
    TestHeld(UnixListener),
}

impl Launcher {
    fn new(socket: &Path) -> Launcher {
        match find_tool(SOCKET_ACTIVATE) {
            Some(tool) => {
                eprintln!("socket activation through {}", tool.display());
                Launcher::SocketActivate(tool)
            }
            None => {
                eprintln!(
                    "{SOCKET_ACTIVATE} is not installed (Debian's systemd package): the test binds the socket and sets LISTEN_FDS/LISTEN_PID itself"
                );
                Launcher::TestHeld(UnixListener::bind(socket).expect("bind the test socket"))
            }
        }
    }

    /// `program args` with the socket as fd 3, `LISTEN_FDS=1`,
    /// `LISTEN_PID` its own pid, and `env` set; stderr piped.
    fn command(
        &self,
        socket: &Path,
        program: &str,
        args: &[OsString],
        env: &[(&str, String)],
    ) -> Command {
        let mut command = match self {
            Launcher::SocketActivate(tool) => {
                // It passes only TERM, PATH, USER, HOME and what -E names.
                let mut command = Command::new(tool);
                command.arg("-l").arg(socket);
                for (name, value) in env {
                    command.arg("-E").arg(format!("{name}={value}"));
                }
                command.arg(program).args(args);
                command
            }
            Launcher::TestHeld(listener) => {
                let fd = listener.as_raw_fd();
                // `$$` of `sh -c` is the pid the program keeps across exec.
                let mut command = Command::new("/bin/sh");
                command
                    .arg("-c")
                    .arg(r#"export LISTEN_PID=$$; exec "$0" "$@""#)
                    .arg(program)
                    .args(args)
                    .env("LISTEN_FDS", "1")
                    .envs(env.iter().map(|(name, value)| (name, value)));
                // SAFETY: dup2 and fcntl are async-signal-safe and touch
                // only descriptors of the child.
                unsafe {
                    command.pre_exec(move || {
                        if fd == 3 {
                            if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                                return Err(std::io::Error::last_os_error());
                            }
                        } else if libc::dup2(fd, 3) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
                command
            }
        };
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        command
    }
}

/// What `systemd-socket-activate` prints once its socket listens.
const LAUNCHER_LISTENING: &str = "Listening on ";

impl Launcher {
    /// Whether the launcher's own log says when the socket listens (the
    /// test's socket listens before anything is spawned).
    fn announces_listening(&self) -> bool {
        matches!(self, Launcher::SocketActivate(_))
    }
}

fn log_env() -> (&'static str, String) {
    ("RUST_LOG", "info,sprite_tasks=debug".to_owned())
}

/// The next line containing `needle`, consuming those before it.
fn next_line_with(log: &Receiver<String>, needle: &str) -> String {
    next_line_where(log, needle, |line| line.contains(needle))
}

/// The next line `wanted` accepts, consuming those before it.
fn next_line_where(log: &Receiver<String>, what: &str, wanted: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match log.recv_timeout(left) {
            Ok(line) if wanted(&line) => return line,
            Ok(_) => {}
            Err(_) => panic!("no log line with {what:?}"),
        }
    }
}

/// A datagram socket standing in for systemd's notification socket.
struct NotifySocket {
    socket: UnixDatagram,
    messages: Vec<String>,
}

impl NotifySocket {
    fn bind(path: &Path) -> NotifySocket {
        let socket = UnixDatagram::bind(path).expect("bind the notify socket");
        socket.set_read_timeout(Some(WAIT)).unwrap();
        NotifySocket {
            socket,
            messages: Vec::new(),
        }
    }

    fn bind_abstract(name: &str) -> NotifySocket {
        use std::os::linux::net::SocketAddrExt;
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name).unwrap();
        let socket = UnixDatagram::bind_addr(&address).expect("bind the abstract notify socket");
        socket.set_read_timeout(Some(WAIT)).unwrap();
        NotifySocket {
            socket,
            messages: Vec::new(),
        }
    }

    /// Receives until a message contains `needle`; returns it.
    fn wait_for(&mut self, needle: &str) -> String {
        if let Some(seen) = self.messages.iter().find(|m| m.contains(needle)) {
            return seen.clone();
        }
        let mut buffer = [0u8; 4096];
        loop {
            let n = self.socket.recv(&mut buffer).unwrap_or_else(|e| {
                panic!(
                    "no notification with {needle:?} ({e}); got {:?}",
                    self.messages
                )
            });
            let message = String::from_utf8_lossy(&buffer[..n]).into_owned();
            self.messages.push(message.clone());
            if message.contains(needle) {
                return message;
            }
        }
    }

    /// Receives until `count` messages contain `needle`.
    fn wait_for_count(&mut self, needle: &str, count: usize) {
        let mut buffer = [0u8; 4096];
        while self.messages.iter().filter(|m| m.contains(needle)).count() < count {
            let n = self.socket.recv(&mut buffer).unwrap_or_else(|e| {
                panic!(
                    "fewer than {count} notifications with {needle:?} ({e}); got {:?}",
                    self.messages
                )
            });
            self.messages
                .push(String::from_utf8_lossy(&buffer[..n]).into_owned());
        }
    }
}

/// One request on its own connection, closed after the answer: status and
/// body. Panics if the daemon does not answer.
fn request(socket: &Path, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = UnixStream::connect(socket).expect("connect");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let answer = exchange(&mut stream, method, path, body).expect("an answer");
    answer.expect("the daemon closed the connection without answering")
}

/// Writes one `Connection: close` request and reads the answer to EOF:
/// `Ok(None)` when the connection closed before any byte of it.
fn exchange(
    stream: &mut UnixStream,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<Option<(u16, String)>> {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: sprite\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    // A daemon told to stop closes what it accepted but has not read: the
    // request then meets a closed socket (EPIPE) or, sent just before the
    // close, is reset unread. Either way it goes unanswered, as with an
    // empty answer.
    let unserved = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => Ok(None),
        _ => Err(e),
    };
    if let Err(e) = stream.write_all(head.as_bytes()) {
        return unserved(e);
    }
    let mut answer = Vec::new();
    if let Err(e) = stream.read_to_end(&mut answer) {
        return if answer.is_empty() {
            unserved(e)
        } else {
            Err(e)
        };
    }
    if answer.is_empty() {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Ok(Some((status, body)))
}

#[test]
fn socket_activation_serves_the_passed_socket_and_leaves_it_in_place() {
    let dirs = Dirs::new();
    let socket = dirs.socket();
    let launcher = Launcher::new(&socket);
    let notify_path = dirs.socket_dir.path().join("notify");
    let mut notify = NotifySocket::bind(&notify_path);
    let env_dump = dirs.socket_dir.path().join("hook-env");
    let on_idle = format!("env > {0}.tmp && mv {0}.tmp {0}", env_dump.display());
    let args: Vec<OsString> = vec![
        "--db".into(),
        dirs.db().into(),
        "--on-idle".into(),
        on_idle.into(),
    ];
    let env = [
        log_env(),
        ("NOTIFY_SOCKET", notify_path.display().to_string()),
    ];
    let mut child = launcher
        .command(&socket, daemon_binary(), &args, &env)
        .spawn()
        .expect("spawn the launcher");
    let log = log_lines(&mut child);
    let daemon = Daemon::adopt(child, log, socket.clone(), dirs.db());
    if launcher.announces_listening() {
        daemon.wait_for_log(LAUNCHER_LISTENING);
    }

    // The socket is already listening: the first request is what starts
    // the daemon under systemd-socket-activate, and it is answered.
    let (status, body) = request(&socket, "PUT", "/v1/tasks/agent", r#"{"expire":"1h"}"#);
    assert_eq!(status, 200, "{body}");
    let line = daemon.wait_for_log("sprite-tasksd listening");
    assert!(line.contains("socket_activated=true"), "{line}");
    notify.wait_for("READY=1");
    assert_eq!(request(&socket, "DELETE", "/v1/tasks/agent", "").0, 204);

    // The --on-idle hook ran without the variables meant for the daemon.
    let dumped = eventually(|| std::fs::read_to_string(&env_dump).ok(), Option::is_some)
        .expect("the --on-idle hook wrote its environment");
    for variable in [
        "LISTEN_PID=",
        "LISTEN_FDS=",
        "LISTEN_FDNAMES=",
        "NOTIFY_SOCKET=",
    ] {
        assert!(
            !dumped.contains(variable),
            "a hook inherited {variable}:\n{dumped}"
        );
    }
    assert!(dumped.contains("PATH="), "{dumped}");

    let (status, log) = daemon.terminate();
    assert!(status.success(), "{status:?}\n{log}");
    notify.wait_for("STOPPING=1");
    let kept = std::fs::symlink_metadata(&socket).expect("the socket file is still there");
    assert!(kept.file_type().is_socket());
    drop(launcher);
}

/// Daemons started one after another on one passed socket, under load.
const RESTARTS: usize = 3;
/// Client threads making requests throughout.
const LOAD_CLIENTS: usize = 6;
/// Answers each daemon gives before it is stopped, so every one of them
/// serves the load and the load spans each restart.
const ANSWERS_PER_DAEMON: u64 = 40;

#[derive(Default)]
struct Load {
    stop: AtomicBool,
    answered: AtomicU64,
    refused: AtomicU64,
    closed_unanswered: AtomicU64,
    failures: Mutex<Vec<String>>,
}

fn load_client(socket: PathBuf, id: usize, load: Arc<Load>) {
    let task = format!("/v1/tasks/load-{id}");
    let mut round = 0u64;
    while !load.stop.load(Ordering::Relaxed) {
        round += 1;
        let mut stream = match UnixStream::connect(&socket) {
            Ok(stream) => stream,
            Err(e) => {
                load.refused.fetch_add(1, Ordering::Relaxed);
                load.failures.lock().unwrap().push(format!("connect: {e}"));
                // Rate-limits a failing loop; the test has failed already.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let answer = if round.is_multiple_of(2) {
            exchange(&mut stream, "PUT", &task, r#"{"expire":"1h"}"#)
        } else {
            exchange(&mut stream, "GET", "/v1/status", "")
        };
        match answer {
            Ok(Some((200, _))) => {
                load.answered.fetch_add(1, Ordering::Relaxed);
            }
            // Accepted by a daemon that was told to stop before this
            // request's bytes arrived: closed unanswered, and sent again
            // as any HTTP client does with an idempotent request.
            Ok(None) => {
                load.closed_unanswered.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Some((status, body))) => load
                .failures
                .lock()
                .unwrap()
                .push(format!("status {status}: {body}")),
            Err(e) => load.failures.lock().unwrap().push(format!("exchange: {e}")),
        }
    }
}

#[test]
fn restart_under_load_refuses_no_connection() {
    let dirs = Dirs::new();
    let socket = dirs.socket();
    let launcher = Launcher::new(&socket);
    // One daemon per round on the same passed descriptor; each subshell
    // names itself in LISTEN_PID, as systemd does for each start.
    let script = r#"
        rounds=$1; shift
        for _ in $(seq "$rounds"); do
            ( export LISTEN_PID=$BASHPID; echo "daemon-pid $BASHPID" >&2; exec "$@" )
        done
    "#;
    let args: Vec<OsString> = vec![
        "-c".into(),
        script.into(),
        "restart-loop".into(),
        (RESTARTS + 1).to_string().into(),
        daemon_binary().into(),
        "--db".into(),
        dirs.db().into(),
    ];
    let mut launched: Child = launcher
        .command(&socket, "bash", &args, &[log_env()])
        .spawn()
        .expect("spawn the launcher");
    let log = log_lines(&mut launched);
    if launcher.announces_listening() {
        next_line_with(&log, LAUNCHER_LISTENING);
    }

    let load = Arc::new(Load::default());
    let mut clients: Vec<_> = (0..LOAD_CLIENTS)
        .map(|id| {
            let (socket, load) = (socket.clone(), Arc::clone(&load));
            std::thread::spawn(move || load_client(socket, id, load))
        })
        .collect();

    for round in 0..=RESTARTS {
        // (The launcher's echo of the script contains the words too.)
        let line = next_line_where(&log, "daemon-pid", |l| l.starts_with("daemon-pid "));
        let pid: u32 = line
            .rsplit(' ')
            .next()
            .and_then(|pid| pid.parse().ok())
            .unwrap_or_else(|| panic!("{line}"));
        next_line_with(&log, "sprite-tasksd listening");
        let start = load.answered.load(Ordering::Relaxed);
        let answered = eventually(
            || load.answered.load(Ordering::Relaxed),
            |n| *n >= start + ANSWERS_PER_DAEMON,
        );
        assert!(
            answered >= start + ANSWERS_PER_DAEMON,
            "daemon {round} answered {} requests",
            answered - start
        );
        if round == RESTARTS {
            load.stop.store(true, Ordering::Relaxed);
            for client in clients.drain(..) {
                client.join().expect("a load client panicked");
            }
        }
        signal(pid, libc::SIGTERM);
        next_line_with(&log, "sprite-tasksd stopped");
    }
    let status = wait_with_timeout(&mut launched, WAIT);
    if status.is_none() {
        let _ = launched.kill();
    }

    let answered = load.answered.load(Ordering::Relaxed);
    let refused = load.refused.load(Ordering::Relaxed);
    let unanswered = load.closed_unanswered.load(Ordering::Relaxed);
    eprintln!(
        "{answered} requests answered by {} daemons; {refused} connections refused; {unanswered} closed unanswered at a stop and sent again",
        RESTARTS + 1
    );
    let failures = load.failures.lock().unwrap();
    assert_eq!(refused, 0, "{failures:?}");
    assert!(failures.is_empty(), "{failures:?}");
    assert!(
        status.is_some_and(|s| s.success()),
        "the restart loop: {status:?}"
    );
    drop(launcher);
}

#[test]
fn readiness_status_watchdog_and_stopping_reach_notify_socket() {
    let dirs = Dirs::new();
    let name = format!(
        "sprite-tasks-test-{}-{:?}",
        std::process::id(),
        Instant::now()
    );
    let mut notify = NotifySocket::bind_abstract(&name);
    let mut child = Command::new(daemon_binary())
        .arg("--socket")
        .arg(dirs.socket())
        .arg("--db")
        .arg(dirs.db())
        .env("RUST_LOG", "info,sprite_tasks=debug")
        .env("NOTIFY_SOCKET", format!("@{name}"))
        // Pings every 100 ms.
        .env("WATCHDOG_USEC", "200000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sprite-tasksd");
    let log = log_lines(&mut child);
    let daemon = Daemon::adopt(child, log, dirs.socket(), dirs.db());

    let ready = notify.wait_for("READY=1");
    assert!(ready.contains("STATUS=idle"), "{ready}");
    assert!(
        ready.contains(&format!("MAINPID={}", daemon.pid())),
        "{ready}"
    );
    // Ready means accepting: no wait for the log line.
    assert_eq!(
        daemon.status("POST", "/v1/tasks", Some(r#"{"name":"a","expire":"1h"}"#)),
        201
    );
    notify.wait_for("STATUS=held by 1 task");
    assert_eq!(
        daemon.status("POST", "/v1/tasks", Some(r#"{"name":"b","expire":"1h"}"#)),
        201
    );
    notify.wait_for("STATUS=held by 2 tasks");
    assert_eq!(daemon.status("DELETE", "/v1/tasks/a", None), 204);
    assert_eq!(daemon.status("DELETE", "/v1/tasks/b", None), 204);
    notify.wait_for("STATUS=idle since 20");
    notify.wait_for_count("WATCHDOG=1", 3);
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");
    let stopping = notify.wait_for("STOPPING=1");
    assert!(stopping.contains("STATUS=stopping"), "{stopping}");
}

#[test]
fn unit_files_verify() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/systemd");
    let socket_unit = std::fs::read_to_string(dir.join("sprite-tasksd.socket")).unwrap();
    let service_unit = std::fs::read_to_string(dir.join("sprite-tasksd.service")).unwrap();
    // What the issue asks of them, checked whether or not systemd is here.
    for (unit, text, lines) in [
        (
            "sprite-tasksd.socket",
            &socket_unit,
            &[
                "ListenStream=/.sprite/api.sock",
                "SocketMode=0666",
                "WantedBy=sockets.target",
            ][..],
        ),
        (
            "sprite-tasksd.service",
            &service_unit,
            &[
                "Type=notify",
                "Restart=on-failure",
                "StateDirectory=sprite-tasksd",
                "WatchdogSec=",
                "ExecStart=/usr/local/bin/sprite-tasksd --db /var/lib/sprite-tasksd/tasks.redb",
            ][..],
        ),
    ] {
        for line in lines {
            assert!(
                text.lines().any(|l| l.starts_with(line)),
                "{unit} has no line {line:?}"
            );
        }
    }
    let Some(analyze) = find_tool("systemd-analyze") else {
        eprintln!("systemd-analyze is not installed: the units were checked textually only");
        return;
    };
    // A copy whose ExecStart names the built binary, which verify checks.
    let copy = tempfile::tempdir().unwrap();
    std::fs::write(copy.path().join("sprite-tasksd.socket"), &socket_unit).unwrap();
    std::fs::write(
        copy.path().join("sprite-tasksd.service"),
        service_unit.replace("/usr/local/bin/sprite-tasksd", daemon_binary()),
    )
    .unwrap();
    let output = Command::new(&analyze)
        .arg("verify")
        // The man pages are not installed where the tests run.
        .arg("--man=no")
        .arg(copy.path().join("sprite-tasksd.socket"))
        .arg(copy.path().join("sprite-tasksd.service"))
        .output()
        .expect("run systemd-analyze");
    let complaints = String::from_utf8_lossy(&output.stderr);
    // verify exits 0 on unknown settings or values and only warns: any
    // line about our units is a failure.
    assert!(
        output.status.success() && !complaints.contains("sprite-tasksd"),
        "systemd-analyze verify: {:?}\n{complaints}",
        output.status
    );
    eprintln!("systemd-analyze verify passed on both units");
}

#[test]
fn a_passed_descriptor_that_is_not_a_listener_is_refused_and_foreign_variables_ignored() {
    let dirs = Dirs::new();
    // Descriptor 3 is a regular file: a unit mistake, reported, not served.
    let file = std::fs::File::create(dirs.socket_dir.path().join("not-a-socket")).unwrap();
    let fd = file.as_raw_fd();
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(r#"export LISTEN_PID=$$; exec "$0" "$@""#)
        .arg(daemon_binary())
        .arg("--socket")
        .arg(dirs.socket())
        .arg("--db")
        .arg(dirs.db())
        .env("LISTEN_FDS", "1");
    // SAFETY: dup2 is async-signal-safe and touches only the child's table.
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let output = command.output().expect("run sprite-tasksd");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("descriptor 3 is not a listening Unix stream socket"),
        "{stderr}"
    );
    assert!(!dirs.socket().exists(), "nothing was bound instead");

    // Variables meant for another process (a parent's) are ignored: the
    // daemon binds its own socket.
    let mut child = Command::new(daemon_binary())
        .arg("--socket")
        .arg(dirs.socket())
        .arg("--db")
        .arg(dirs.db())
        .env("LISTEN_PID", "1")
        .env("LISTEN_FDS", "1")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sprite-tasksd");
    let log = log_lines(&mut child);
    let daemon = Daemon::adopt(child, log, dirs.socket(), dirs.db());
    let line = daemon.wait_for_log("sprite-tasksd listening");
    assert!(line.contains("socket_activated=false"), "{line}");
    assert_eq!(daemon.status("GET", "/v1/status", None), 200);
    let (status, _) = daemon.terminate();
    assert!(status.success());
    assert!(
        !dirs.socket().exists(),
        "a socket it bound itself is removed"
    );
}
