//! Hostile and careless clients against the real binary: every malformed
//! request gets its precise status and a JSON error, and slow, idle, flooding
//! or descriptor-starving clients cost the others nothing.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, Dirs, read_response, request_bytes};

/// Short deadlines so the tests see connections closed in seconds.
const SHORT: &[&str] = &[
    "--head-timeout",
    "1s",
    "--body-timeout",
    "1s",
    "--idle-timeout",
    "2s",
    "--write-timeout",
    "1s",
];

fn status_of(response: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(response);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"))
}

/// `PUT /v1/tasks/a` with `body`, its length computed.
fn put_a(body: &[u8]) -> Vec<u8> {
    let mut bytes = format!(
        "PUT /v1/tasks/a HTTP/1.1\r\nHost: sprite\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn assert_good_request_answered(daemon: &Daemon) {
    let (status, body) = daemon.call("GET", "/v1/tasks", None);
    assert_eq!(status, 200);
    assert!(body["tasks"].is_array());
}

#[test]
fn every_malformed_request_gets_its_status_and_the_daemon_goes_on() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &[]);
    let long_target = format!(
        "GET /v1/tasks/{} HTTP/1.1\r\nHost: sprite\r\n\r\n",
        "a".repeat(2000)
    );
    let many_headers = format!(
        "GET /v1/tasks HTTP/1.1\r\nHost: sprite\r\n{}\r\n",
        "X-A: b\r\n".repeat(40)
    );
    let huge_head = format!(
        "GET /v1/tasks HTTP/1.1\r\nHost: sprite\r\nX-A: {}\r\n\r\n",
        "b".repeat(10_000)
    );
    let deep_json = format!(
        "PUT /v1/tasks/a HTTP/1.1\r\nHost: sprite\r\nContent-Length: 401\r\n\r\n{}1{}",
        "[".repeat(200),
        "]".repeat(200)
    );
    let long_name = format!(
        "PUT /v1/tasks/{} HTTP/1.1\r\nHost: sprite\r\nContent-Length: 13\r\n\r\n{{\"expire\":60}}",
        "n".repeat(129)
    );
    let chunk_overflow = "PUT /v1/tasks/a HTTP/1.1\r\nHost: sprite\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n";
    // One body byte per chunk, each with a long extension: more framing
    // than a connection buffers (found while fuzzing).
    let mut chunk_framing =
        b"POST /v1/tasks HTTP/1.1\r\nHost: sprite\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for byte in format!("{}{}", r#"{"name":"agent","expire":"1h"}"#, " ".repeat(200)).bytes() {
        chunk_framing.extend_from_slice(format!("1;{}\r\n", "e".repeat(250)).as_bytes());
        chunk_framing.push(byte);
        chunk_framing.extend_from_slice(b"\r\n");
    }
    chunk_framing.extend_from_slice(b"0\r\n\r\n");
    let catalogue: Vec<(&str, Vec<u8>, u16)> = vec![
        ("chunk framing past what a connection buffers", chunk_framing, 413),
        ("Content-Length with a sign", b"PUT /v1/tasks/a HTTP/1.1\r\nHost: sprite\r\nContent-Length: +13\r\n\r\n{\"expire\":60}".to_vec(), 400),
        ("differing duplicate Content-Length", b"PUT /v1/tasks/a HTTP/1.1\r\nHost: sprite\r\nContent-Length: 13\r\nContent-Length: 12\r\n\r\n{\"expire\":60}".to_vec(), 400),
        ("Content-Length list", b"PUT /v1/tasks/a HTTP/1.1\r\nHost: sprite\r\nContent-Length: 13, 13\r\n\r\n{\"expire\":60}".to_vec(), 400),
        ("body over the limit, decided from the head", b"PUT /v1/tasks/a HTTP/1.1\r\nHost: sprite\r\nContent-Length: 1000000\r\n\r\n".to_vec(), 413),
        ("chunk over the limit", chunk_overflow.as_bytes().to_vec(), 413),
        ("unknown transfer coding", b"PUT /v1/tasks/a HTTP/1.1\r\nHost: sprite\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(), 400),
        ("coding before chunked", b"PUT /v1/tasks/a HTTP/1.1\r\nHost: sprite\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".to_vec(), 501),
        ("chunked twice", b"PUT /v1/tasks/a HTTP/1.1\r\nHost: sprite\r\nTransfer-Encoding: chunked, chunked\r\n\r\n".to_vec(), 400),
        ("Transfer-Encoding on HTTP/1.0", b"PUT /v1/tasks/a HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(), 400),
        ("chunk size not hex", b"PUT /v1/tasks/a HTTP/1.1\r\nHost: sprite\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(), 400),
        ("chunk size empty", b"PUT /v1/tasks/a HTTP/1.1\r\nHost: sprite\r\nTransfer-Encoding: chunked\r\n\r\n\r\n".to_vec(), 400),
        ("chunk size line with bare LF", b"PUT /v1/tasks/a HTTP/1.1\r\nHost: sprite\r\nTransfer-Encoding: chunked\r\n\r\nd\n{\"expire\":60}\r\n0\r\n\r\n".to_vec(), 400),
        ("chunk data without its CRLF", b"PUT /v1/tasks/a HTTP/1.1\r\nHost: sprite\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}XX0\r\n\r\n".to_vec(), 400),
        ("unknown expectation", b"PUT /v1/tasks/a HTTP/1.1\r\nHost: sprite\r\nExpect: the-unexpected\r\nContent-Length: 13\r\n\r\n{\"expire\":60}".to_vec(), 417),
        ("head over the limit", huge_head.into_bytes(), 431),
        ("too many headers", many_headers.into_bytes(), 431),
        ("target over the limit", long_target.into_bytes(), 414),
        ("HTTP/2 request line", b"GET /v1/tasks HTTP/2.0\r\n\r\n".to_vec(), 505),
        ("binary garbage", b"\x00\x01\x02\x03 / HTTP/1.1\r\nHost: sprite\r\n\r\n".to_vec(), 400),
        ("NUL in the name", b"GET /v1/tasks/a%00b HTTP/1.1\r\nHost: sprite\r\n\r\n".to_vec(), 400),
        ("slash in the name", b"GET /v1/tasks/a%2Fb HTTP/1.1\r\nHost: sprite\r\n\r\n".to_vec(), 400),
        ("invalid UTF-8 in the name", b"GET /v1/tasks/%C3%28 HTTP/1.1\r\nHost: sprite\r\n\r\n".to_vec(), 400),
        ("broken percent-encoding", b"GET /v1/tasks/a%G1 HTTP/1.1\r\nHost: sprite\r\n\r\n".to_vec(), 400),
        ("name too long", long_name.into_bytes(), 400),
        ("deeply nested JSON", deep_json.into_bytes(), 400),
        ("JSON of the wrong type", put_a(br#"{"expire":true}"#), 400),
        ("duplicate JSON keys", put_a(br#"{"expire":60,"expire":"1h"}"#), 400),
        ("unknown JSON field", put_a(br#"{"expire":60,"colour":1}"#), 400),
        ("not JSON", put_a(br#"expire=60"#), 400),
        ("empty body", put_a(br#""#), 400),
        ("expire near u64::MAX (humantime#66)", put_a(br#"{"expire":"18446744073709551615s 1000ms"}  "#), 400),
        ("expire as a huge integer", put_a(br#"{"expire":99999999999999999999999}"#), 400),
    ];
    for (what, bytes, expected) in catalogue {
        let response = daemon.raw(&bytes);
        assert!(!response.is_empty(), "{what}: no answer");
        assert_eq!(
            status_of(&response),
            expected,
            "{what}: {}",
            String::from_utf8_lossy(&response)
        );
        let body_at = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let body: serde_json::Value = serde_json::from_slice(&response[body_at..])
            .unwrap_or_else(|e| panic!("{what}: error body is not JSON: {e}"));
        assert!(
            body["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {body}"
        );
        assert_good_request_answered(&daemon);
    }
    // Nothing was created by any of them.
    let (_, list) = daemon.call("GET", "/v1/tasks", None);
    assert_eq!(list["tasks"].as_array().unwrap().len(), 0);
}

#[test]
fn content_length_with_chunked_trusts_chunked_and_closes() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &[]);
    // A smuggling attempt: the length claims the second request is body.
    let attack = b"PUT /v1/tasks/a HTTP/1.1\r\nHost: sprite\r\nContent-Length: 60\r\nTransfer-Encoding: chunked\r\n\r\nd\r\n{\"expire\":60}\r\n0\r\n\r\nDELETE /v1/tasks/a HTTP/1.1\r\nHost: sprite\r\n\r\n";
    let response = daemon.raw(attack);
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("Connection: close"), "{text}");
    assert_eq!(
        text.matches("HTTP/1.1").count(),
        1,
        "the smuggled request was answered: {text}"
    );
    assert_eq!(daemon.status("GET", "/v1/tasks/a", None), 200);
}

#[test]
fn expect_100_continue() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &[]);
    let mut stream = daemon.connect();
    stream
        .write_all(b"POST /v1/tasks HTTP/1.1\r\nHost: sprite\r\nExpect: 100-continue\r\nContent-Length: 28\r\n\r\n")
        .unwrap();
    let interim = read_response(&mut stream).unwrap();
    assert_eq!(interim.status, 100);
    stream
        .write_all(br#"{"name":"big","expire":"1h"}"#)
        .unwrap();
    assert_eq!(read_response(&mut stream).unwrap().status, 201);
    // Too large: the final answer comes at once, without 100.
    stream
        .write_all(
            b"POST /v1/tasks HTTP/1.1\r\nHost: sprite\r\nExpect: 100-continue\r\nContent-Length: 99999999\r\n\r\n",
        )
        .unwrap();
    assert_eq!(read_response(&mut stream).unwrap().status, 413);
    // And curl's own Expect handling (it sends one for bodies over 1 MiB,
    // or when told to): the daemon answers before curl's 1 s fallback.
    let started = Instant::now();
    let (code, out) = common::curl(
        &daemon.socket,
        &[
            "-H",
            "Expect: 100-continue",
            "-X",
            "PUT",
            "http://sprite/v1/tasks/curl-expect",
            "-d",
            r#"{"expire":"1h"}"#,
            "-w",
            "\n%{http_code}",
        ],
    );
    assert_eq!(code, 0);
    assert!(out.ends_with("\n200"), "{out}");
    println!("curl with Expect took {:?}", started.elapsed());
}

#[test]
fn chunked_bodies_from_python_and_node() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &[]);
    let python = r#"
import http.client, socket, sys, json
class Unix(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(sys.argv[1])
conn = Unix("sprite")
def body():
    yield b'{"name": "py",'
    yield b' "expire": "5m"}'
conn.request("POST", "/v1/tasks", body=body(), headers={"Content-Type": "application/json"}, encode_chunked=True)
response = conn.getresponse()
print(response.status, json.loads(response.read())["name"])
"#;
    assert_eq!(run_script("python3", python, &daemon.socket), "201 py");

    let node = r#"
const http = require('http');
const req = http.request({ socketPath: process.argv[1], path: '/v1/tasks/node', method: 'PUT',
  headers: { 'Content-Type': 'application/json' } }, (res) => {
  let data = '';
  res.on('data', (c) => data += c);
  res.on('end', () => { console.log(res.statusCode, JSON.parse(data).name); });
});
req.write('{"expire":');
req.end(' 300}');
"#;
    assert_eq!(run_script("node", node, &daemon.socket), "200 node");
}

/// Runs `interpreter -c|-e script socket` and returns its trimmed stdout.
fn run_script(interpreter: &str, script: &str, socket: &std::path::Path) -> String {
    let flag = if interpreter == "node" { "-e" } else { "-c" };
    let output = Command::new(interpreter)
        .arg(flag)
        .arg(script)
        .arg(socket)
        .output()
        .unwrap_or_else(|e| panic!("{interpreter} is installed (scripts/test.sh checks): {e}"));
    assert!(
        output.status.success(),
        "{interpreter}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[test]
fn the_task_limit_refuses_and_evicts_nothing() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &["--max-tasks", "3"]);
    for name in ["a", "b", "c"] {
        assert_eq!(
            daemon.status(
                "PUT",
                &format!("/v1/tasks/{name}"),
                Some(r#"{"expire":"1h"}"#)
            ),
            200
        );
    }
    let (status, body) = daemon.call("POST", "/v1/tasks", Some(r#"{"name":"d","expire":"1h"}"#));
    assert_eq!(status, 507);
    assert!(body["error"].as_str().unwrap().contains("limit of 3 tasks"));
    // Refreshing at the limit works; deleting makes room.
    assert_eq!(
        daemon.status("PUT", "/v1/tasks/a", Some(r#"{"expire":"1h"}"#)),
        200
    );
    let (_, list) = daemon.call("GET", "/v1/tasks", None);
    assert_eq!(list["tasks"].as_array().unwrap().len(), 3);
    assert_eq!(daemon.status("DELETE", "/v1/tasks/b", None), 204);
    assert_eq!(
        daemon.status("POST", "/v1/tasks", Some(r#"{"name":"d","expire":"1h"}"#)),
        201
    );
}

#[test]
fn connections_past_the_cap_get_503() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &["--max-connections", "4"]);
    let held: Vec<UnixStream> = (0..4).map(|_| daemon.connect()).collect();
    // Make sure the four were accepted before the fifth arrives.
    for mut stream in &held {
        stream
            .write_all(&request_bytes("GET", "/v1/tasks", None))
            .unwrap();
        assert_eq!(read_response(&mut stream).unwrap().status, 200);
    }
    let mut extra = daemon.connect();
    let mut out = Vec::new();
    extra.read_to_end(&mut out).unwrap();
    assert_eq!(status_of(&out), 503, "{}", String::from_utf8_lossy(&out));
    drop(held);
    daemon.wait_for_log("connection refused: too many open connections");
}

/// Reads until EOF or error; true if the daemon closed the connection.
fn closed_by_daemon(stream: &mut UnixStream) -> bool {
    let mut sink = [0u8; 4096];
    loop {
        match stream.read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn slow_idle_and_flooding_clients_cost_a_good_client_nothing() {
    const IDLE: usize = 200;
    const SLOW_HEADS: usize = 20;
    const SLOW_BODIES: usize = 20;
    const FLOOD: usize = 5000;
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, SHORT);

    let mut idle: Vec<UnixStream> = (0..IDLE).map(|_| daemon.connect()).collect();
    let mut slow_heads: Vec<UnixStream> = (0..SLOW_HEADS)
        .map(|_| {
            let mut s = daemon.connect();
            s.write_all(b"PUT /v1/tasks/slow HTTP/1.1\r\nHost: spr")
                .unwrap();
            s
        })
        .collect();
    let mut slow_bodies: Vec<UnixStream> = (0..SLOW_BODIES)
        .map(|_| {
            let mut s = daemon.connect();
            s.write_all(
                b"PUT /v1/tasks/slow HTTP/1.1\r\nHost: sprite\r\nContent-Length: 13\r\n\r\n{\"exp",
            )
            .unwrap();
            s
        })
        .collect();
    // One client pipelines thousands of requests and never reads.
    let mut flooder = daemon.connect();
    flooder.set_nonblocking(true).unwrap();
    let one = request_bytes("PUT", "/v1/tasks/flood", Some(r#"{"expire":"1h"}"#));
    let mut flood = Vec::new();
    for _ in 0..FLOOD {
        flood.extend_from_slice(&one);
    }
    let mut sent = 0;
    while sent < flood.len() {
        match flooder.write(&flood[sent..]) {
            Ok(n) => sent += n,
            Err(_) => break, // its buffers are full: the daemon stopped reading it
        }
    }
    println!(
        "flooder got {sent} of {} bytes in before back-pressure",
        flood.len()
    );

    // Meanwhile a good client is served, on one connection and on new ones.
    let mut good = daemon.connect();
    for round in 0..50 {
        let body = format!(r#"{{"expire": {}}}"#, 60 + round);
        good.write_all(&request_bytes("PUT", "/v1/tasks/good", Some(&body)))
            .unwrap();
        assert_eq!(read_response(&mut good).unwrap().status, 200);
        if round % 10 == 0 {
            assert_good_request_answered(&daemon);
        }
    }

    // Slowloris heads and bodies get 408 and are closed by their deadlines.
    for stream in slow_heads.iter_mut().chain(slow_bodies.iter_mut()) {
        let response = read_response(stream).expect("a 408 before the close");
        assert_eq!(response.status, 408);
        assert!(closed_by_daemon(stream));
    }
    // Idle connections are closed by the idle deadline.
    for stream in idle.iter_mut() {
        assert!(closed_by_daemon(stream));
    }
    // The flooder, which never reads, is cut off by the write deadline.
    flooder.set_nonblocking(false).unwrap();
    flooder.set_read_timeout(Some(common::WAIT)).unwrap();
    daemon.wait_for_log("kind=Write");
    assert!(closed_by_daemon(&mut flooder));

    // The good client outlived them all.
    good.write_all(&request_bytes("GET", "/v1/tasks/good", None))
        .unwrap();
    assert_eq!(read_response(&mut good).unwrap().status, 200);
}

/// CPU time (user + system) of a process, from /proc.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line (11 and 12 here).
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no memory effects.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}

#[test]
fn running_out_of_descriptors_neither_spins_nor_kills_the_daemon() {
    const DESCRIPTORS: u64 = 48;
    let dirs = Dirs::new();
    let mut command = Command::new(common::daemon_binary());
    command
        .arg("--socket")
        .arg(dirs.socket())
        .arg("--db")
        .arg(dirs.db())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setrlimit is async-signal-safe and touches no shared state.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: DESCRIPTORS,
                rlim_max: DESCRIPTORS,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + common::WAIT;
    let mut first = loop {
        if let Ok(stream) = UnixStream::connect(dirs.socket()) {
            break stream;
        }
        assert!(Instant::now() < deadline, "daemon did not start");
        std::thread::sleep(Duration::from_millis(10));
    };
    first.set_read_timeout(Some(common::WAIT)).unwrap();
    first
        .write_all(&request_bytes("GET", "/v1/tasks", None))
        .unwrap();
    assert_eq!(read_response(&mut first).unwrap().status, 200);

    // Far more connections than descriptors: the backlog fills, accept fails.
    let flood: Vec<UnixStream> = (0..DESCRIPTORS * 2)
        .filter_map(|_| UnixStream::connect(dirs.socket()).ok())
        .collect();
    assert!(
        flood.len() as u64 > DESCRIPTORS,
        "only {} connected",
        flood.len()
    );
    let before = cpu_time(child.id());
    let window = Instant::now();
    // Let the daemon sit in the descriptor shortage for a while.
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_time(child.id()) - before;
    let elapsed = window.elapsed();
    println!("daemon CPU during {elapsed:?} of descriptor shortage: {used:?}");
    assert!(
        used < elapsed / 2,
        "the daemon busy-looped: {used:?} of CPU in {elapsed:?}"
    );

    // The connection it already had is still served.
    first
        .write_all(&request_bytes("GET", "/v1/tasks", None))
        .unwrap();
    assert_eq!(read_response(&mut first).unwrap().status, 200);
    drop(flood);
    drop(first);

    // And new clients are served once descriptors are free again.
    let mut again = UnixStream::connect(dirs.socket()).unwrap();
    again.set_read_timeout(Some(common::WAIT)).unwrap();
    again
        .write_all(&request_bytes(
            "PUT",
            "/v1/tasks/after",
            Some(r#"{"expire":60}"#),
        ))
        .unwrap();
    assert_eq!(read_response(&mut again).unwrap().status, 200);
    assert!(child.try_wait().unwrap().is_none(), "the daemon died");
    let _ = child.kill();
    let _ = child.wait();
}
