//! The conformance catalogue (`tests/catalogue`) against the real binary:
//! each case's bytes on a fresh connection, then the exact status, a `Date`
//! on every response, no content on a response that may not have any, and
//! whether the connection stays open: an open one answers a further
//! request, a closed one sends nothing more. Smuggling cases carry a second
//! request after the first, which must never be answered.

mod catalogue;
mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use catalogue::{After, Case, catalogue};
use common::{Daemon, Dirs};

/// A response as read off the wire, framed by its own head.
struct Wire {
    status: u16,
    head: String,
    body: Vec<u8>,
}

/// Reads one response head byte by byte (so nothing after it is consumed)
/// and its content, unless `head_request` says there is none.
fn read_wire(stream: &mut UnixStream, head_request: bool) -> Option<Wire> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(0) if head.is_empty() => return None,
            Ok(0) => panic!(
                "EOF inside a response head: {:?}",
                String::from_utf8_lossy(&head)
            ),
            Ok(_) => head.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("reading a response: {e}"),
        }
    }
    let head = String::from_utf8(head).expect("an ASCII head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("Content-Length: "))
        .map_or(0, |v| v.trim().parse().expect("a numeric Content-Length"));
    let mut body = vec![0u8; if head_request { 0 } else { length }];
    stream.read_exact(&mut body).expect("the response content");
    Some(Wire { status, head, body })
}

/// The final response to a case: interim 1xx responses are skipped.
fn final_response(stream: &mut UnixStream, case: &Case) -> Wire {
    loop {
        let wire = read_wire(stream, case.is_head())
            .unwrap_or_else(|| panic!("{}: closed without a response", case.what));
        if wire.status >= 200 {
            return wire;
        }
    }
}

fn check(daemon: &Daemon, case: &Case) {
    let label = format!("RFC {} {}", case.section, case.what);
    let mut stream = daemon.connect();
    stream.write_all(&case.bytes).unwrap();
    let wire = final_response(&mut stream, case);
    assert_eq!(wire.status, case.status, "{label}: {}", wire.head);
    let date = wire
        .head
        .lines()
        .find_map(|line| line.strip_prefix("Date: "))
        .unwrap_or_else(|| panic!("{label}: no Date in {}", wire.head));
    assert!(
        date.len() == 29 && date.ends_with(" GMT") && date.as_bytes()[3] == b',',
        "{label}: Date {date:?} is not an IMF-fixdate"
    );
    if case.is_head() || wire.status == 204 {
        assert!(wire.body.is_empty());
    } else if !wire.body.is_empty() {
        assert!(
            wire.body.ends_with(b"\n"),
            "{label}: body without a final newline"
        );
    }
    let closes = wire.head.contains("Connection: close\r\n");
    match case.after {
        After::Open => {
            assert!(!closes, "{label}: answered with Connection: close");
            stream
                .write_all(b"GET /v1/status HTTP/1.1\r\nHost: sprite\r\n\r\n")
                .unwrap();
            let next = read_wire(&mut stream, false)
                .unwrap_or_else(|| panic!("{label}: the connection did not stay open"));
            assert_eq!(
                next.status, 200,
                "{label}: the request after it: {}",
                next.head
            );
        }
        After::Closed | After::ClosedSmuggling => {
            assert!(closes, "{label}: no Connection: close in {}", wire.head);
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest);
            assert!(
                rest.is_empty(),
                "{label}: more was sent after the response: {:?}",
                String::from_utf8_lossy(&rest)
            );
        }
    }
}

#[test]
fn every_catalogue_case_gets_its_status_and_connection_fate() {
    let dirs = Dirs::new();
    let daemon = Daemon::start(&dirs, &[]);
    // The task every smuggled request tries to delete.
    assert_eq!(
        daemon.status("PUT", "/v1/tasks/victim", Some(r#"{"expire":"1h"}"#)),
        200
    );
    let cases = catalogue();
    for case in &cases {
        check(&daemon, case);
    }
    // No smuggled request was ever carried out.
    assert_eq!(daemon.status("GET", "/v1/tasks/victim", None), 200);
    let smuggling = cases
        .iter()
        .filter(|c| c.after == After::ClosedSmuggling)
        .count();
    println!(
        "{} cases, {smuggling} of them smuggling attempts",
        cases.len()
    );
}

#[test]
fn the_catalogue_covers_every_section_group() {
    let cases = catalogue();
    for prefix in [
        "9112 3",
        "9112 3.2",
        "9112 5",
        "9112 6.1",
        "9112 6.3",
        "9112 7.1",
        "9110 10.1.1",
        "9110 9.3.2",
        "9112 9",
        "9110 15.5",
    ] {
        assert!(
            cases.iter().any(|c| c.section.starts_with(prefix)),
            "no case for RFC {prefix}"
        );
    }
    let mut whats: Vec<&str> = cases.iter().map(|c| c.what).collect();
    whats.sort_unstable();
    whats.dedup();
    assert_eq!(whats.len(), cases.len(), "two cases share a description");
}
