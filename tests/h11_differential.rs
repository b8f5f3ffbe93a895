//! Differential test of our request framer against Python's h11, an
//! independent HTTP/1.1 parser used as the reference server side.
//!
//! The same byte streams (every conformance catalogue case and every input
//! of the `http_request` fuzz corpus) go to [`http::parse`], request after
//! request, and to an `h11.Connection(h11.SERVER)` that answers each
//! request and starts the next cycle. Each side's verdict is the list of
//! requests framed (method, target, body) and how the stream ended:
//! refused, incomplete, or closed after a request that ends the connection.
//! Where the verdicts differ, the test fails unless [`DIFFERENCES`] lists
//! the case's kind with the RFC text that says why we differ.
//!
//! h11 judges a line only once it has ended; httparse and our chunk
//! decoder judge each byte as it comes. So where we refuse bytes that h11
//! still calls incomplete, h11 is asked again with a blank line appended:
//! if it then refuses at the same request, the two agree.
//!
//! h11 is installed by `scripts/test.sh` (`pip install h11` or Debian's
//! `python3-h11`).

mod catalogue;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use sprite_tasks::http::{self, Limits, Parsed};

/// How a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Refused,
    Incomplete,
    Closed,
}

/// One request as framed: method, target, version and body.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Framed {
    method: String,
    target: String,
    version: String,
    body: Vec<u8>,
}

/// What a parser made of a stream.
#[derive(Debug, Clone)]
struct Verdict {
    requests: Vec<Framed>,
    end: End,
    /// The refusal's message (ours) or exception text (h11).
    reason: String,
}

/// Our framer's verdict, with the daemon's default limits.
fn ours(stream: &[u8]) -> Verdict {
    let limits = Limits::default();
    let mut requests = Vec::new();
    let mut at = 0;
    loop {
        match http::parse(&stream[at..], &limits) {
            Ok(Parsed::Complete { request, consumed }) => {
                at += consumed;
                let keep_alive = request.keep_alive;
                requests.push(Framed {
                    method: request.method.as_str().to_owned(),
                    target: request.target,
                    version: format!("1.{}", request.minor_version),
                    body: request.body,
                });
                if !keep_alive {
                    return verdict(requests, End::Closed, "");
                }
            }
            Ok(Parsed::Partial(_)) => return verdict(requests, End::Incomplete, ""),
            Err(e) => return verdict(requests, End::Refused, &e.to_string()),
        }
    }
}

fn verdict(requests: Vec<Framed>, end: End, reason: &str) -> Verdict {
    Verdict {
        requests,
        end,
        reason: reason.to_owned(),
    }
}

/// Frames each input with h11 and prints one JSON verdict per input. The
/// incomplete-event limit is our head limit, so heads are judged alike.
const H11_SCRIPT: &str = r#"
import json, sys
import h11

def verdict(data):
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=int(sys.argv[1]))
    if data:
        # receive_data(b"") would mean EOF; no input is no bytes yet.
        conn.receive_data(data)
    requests, current = [], None
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as e:
            return {"requests": requests, "end": "refused", "reason": str(e)}
        if event is h11.NEED_DATA or event is h11.PAUSED:
            return {"requests": requests, "end": "incomplete", "reason": ""}
        if isinstance(event, h11.Request):
            current = {"method": event.method.decode("latin-1"),
                       "target": event.target.decode("latin-1"),
                       "version": event.http_version.decode("latin-1"), "body": ""}
        elif isinstance(event, h11.Data):
            current["body"] += event.data.hex()
        elif isinstance(event, h11.EndOfMessage):
            requests.append(current)
            # Not 2xx: declines a CONNECT or Upgrade, as the daemon does.
            conn.send(h11.Response(status_code=404, headers=[("Content-Length", "0")]))
            conn.send(h11.EndOfMessage())
            if conn.our_state is h11.MUST_CLOSE:
                return {"requests": requests, "end": "closed", "reason": ""}
            conn.start_next_cycle()
        else:
            raise RuntimeError(f"unexpected h11 event {event!r}")

inputs = json.load(sys.stdin)
json.dump([verdict(bytes.fromhex(data)) for data in inputs], sys.stdout)
"#;

/// h11's verdicts for `inputs`, in order.
fn h11_verdicts(inputs: &[Vec<u8>]) -> Vec<Verdict> {
    let hex: Vec<String> = inputs.iter().map(|input| to_hex(input)).collect();
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(H11_SCRIPT)
        .arg(Limits::DEFAULT_MAX_HEAD.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is installed (scripts/test.sh checks)");
    let mut stdin = child.stdin.take().expect("stdin");
    let payload = serde_json::to_vec(&json!(hex)).expect("JSON");
    let writer = std::thread::spawn(move || stdin.write_all(&payload));
    let output = child.wait_with_output().expect("python3 runs");
    writer.join().expect("writer").expect("inputs written");
    assert!(
        output.status.success(),
        "h11 is installed (scripts/test.sh checks): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let values: Vec<Value> = serde_json::from_slice(&output.stdout).expect("JSON verdicts");
    values.iter().map(h11_verdict).collect()
}

fn h11_verdict(value: &Value) -> Verdict {
    let requests = value["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .map(|request| Framed {
            method: request["method"].as_str().expect("method").to_owned(),
            target: request["target"].as_str().expect("target").to_owned(),
            version: request["version"].as_str().expect("version").to_owned(),
            body: from_hex(request["body"].as_str().expect("body")),
        })
        .collect();
    let end = match value["end"].as_str() {
        Some("refused") => End::Refused,
        Some("incomplete") => End::Incomplete,
        Some("closed") => End::Closed,
        other => panic!("unknown end {other:?}"),
    };
    verdict(requests, end, value["reason"].as_str().unwrap_or_default())
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).expect("hex"))
        .collect()
}

/// A named input.
struct Input {
    name: String,
    bytes: Vec<u8>,
}

fn inputs() -> Vec<Input> {
    let mut inputs: Vec<Input> = catalogue::catalogue()
        .into_iter()
        .map(|case| Input {
            name: format!("catalogue: RFC {} {}", case.section, case.what),
            bytes: case.bytes,
        })
        .collect();
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/http_request");
    let mut files: Vec<_> = std::fs::read_dir(&corpus)
        .expect("the http_request corpus")
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no http_request corpus");
    for file in files {
        let data = std::fs::read(&file).expect("a corpus file");
        // Bytes 0 and 1 pick the fuzz target's limits and split points;
        // the rest is what a client sent.
        let stream = data.get(2..).unwrap_or_default().to_vec();
        inputs.push(Input {
            name: format!(
                "corpus: {}",
                file.file_name().unwrap_or_default().to_string_lossy()
            ),
            bytes: stream,
        });
    }
    inputs
}

/// A kind of disagreement we keep on purpose.
struct Difference {
    what: &'static str,
    /// The RFC text that says why we answer as we do.
    rfc: &'static str,
    /// Whether a disagreement (input, ours, h11's) is of this kind.
    applies: fn(&[u8], &Verdict, &Verdict) -> bool,
}

/// Whether h11 framed past the point where we stopped, with the same
/// requests before it.
fn h11_went_further(ours: &Verdict, h11: &Verdict) -> bool {
    h11.requests.len() > ours.requests.len()
        || (h11.requests.len() == ours.requests.len() && h11.end == End::Incomplete)
}

fn same_prefix(ours: &Verdict, h11: &Verdict) -> bool {
    let common = ours.requests.len().min(h11.requests.len());
    ours.requests[..common] == h11.requests[..common]
}

fn we_refused(ours: &Verdict, prefix: &str) -> bool {
    ours.end == End::Refused && ours.reason.contains(prefix)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window.eq_ignore_ascii_case(needle))
}

/// Every kind of disagreement with h11 we keep, and why.
const DIFFERENCES: &[Difference] = &[
    Difference {
        what: "a well-formed version other than 1.0 and 1.1 is 505; h11 accepts any HTTP/x.y",
        rfc: "RFC 9110 15.6.6: the 505 status code indicates that the server does not support, or refuses to support, the major version of HTTP that was used in the request message.",
        applies: |_, ours, h11| we_refused(ours, "505 ") && h11_went_further(ours, h11),
    },
    Difference {
        what: "a Host value that is not uri-host [\":\" port] is 400; h11 does not check the value",
        rfc: "RFC 9112 3.2: A server MUST respond with a 400 (Bad Request) status code to any HTTP/1.1 request message that lacks a Host header field and to any request message that contains more than one Host header field line or a Host header field with an invalid field value.",
        applies: |_, ours, h11| {
            we_refused(ours, "the Host header is not") && h11_went_further(ours, h11)
        },
    },
    Difference {
        what: "empty lines before the request line are skipped; h11 refuses them",
        rfc: "RFC 9112 2.2: In the interest of robustness, a server that is expecting to receive and parse a request-line SHOULD ignore at least one empty line (CRLF) received prior to the request-line.",
        applies: |_, ours, h11| {
            h11.end == End::Refused
                && h11.reason.contains("no request line received")
                && ours.end != End::Refused
        },
    },
    Difference {
        what: "HTTP/1.0 with Connection: keep-alive stays open; h11 always closes HTTP/1.0",
        rfc: "RFC 9112 9.3: If the received protocol is HTTP/1.0, the \"keep-alive\" connection option is present, [...] and the recipient wishes to honor the HTTP/1.0 \"keep-alive\" mechanism, the connection will persist after the current response.",
        applies: |_, ours, h11| {
            h11.end == End::Closed
                && h11
                    .requests
                    .last()
                    .is_some_and(|last| last.version == "1.0")
                && ours.requests.len() >= h11.requests.len()
                && ours.end != End::Closed
                || ours.requests.len() > h11.requests.len()
                    && h11.end == End::Closed
                    && h11
                        .requests
                        .last()
                        .is_some_and(|last| last.version == "1.0")
        },
    },
    Difference {
        what: "Transfer-Encoding with Content-Length: chunked is read, then the connection closes; h11 keeps it open",
        rfc: "RFC 9112 6.1: a server MAY reject a request that contains both Content-Length and Transfer-Encoding or process such a request in accordance with the Transfer-Encoding alone. Regardless, the server MUST close the connection after responding to such a request to avoid the potential attacks.",
        applies: |input, ours, h11| {
            ours.end == End::Closed
                && contains(input, b"\ncontent-length")
                && contains(input, b"\ntransfer-encoding")
                && h11_went_further(ours, h11)
        },
    },
    Difference {
        what: "Transfer-Encoding on HTTP/1.0 is 400; h11 reads it as chunked",
        rfc: "RFC 9112 6.1: A server or client that receives an HTTP/1.0 message containing a Transfer-Encoding header field MUST treat the message as if the framing is faulty, even if a Content-Length is present, and close the connection after processing the message.",
        applies: |_, ours, h11| {
            we_refused(ours, "not allowed in HTTP/1.0") && h11_went_further(ours, h11)
        },
    },
    Difference {
        what: "an expectation other than 100-continue is 417; h11 ignores it",
        rfc: "RFC 9110 10.1.1: A server that receives an Expect field value containing a member other than 100-continue MAY respond with a 417 (Expectation Failed) status code to indicate that the unexpected expectation cannot be met.",
        applies: |_, ours, h11| we_refused(ours, "417 ") && h11_went_further(ours, h11),
    },
    Difference {
        what: "a Content-Length list, even of equal values, is 400; h11 takes the value",
        rfc: "RFC 9110 8.6: a recipient MAY either reject the message as invalid or replace that invalid field value with a single instance of the decimal value",
        applies: |_, ours, h11| {
            we_refused(ours, "Content-Length must be a decimal") && h11_went_further(ours, h11)
        },
    },
    Difference {
        what: "obsolete line folding is 400; h11 unfolds it",
        rfc: "RFC 9112 5.2: A server that receives an obs-fold in a request message [...] MUST either reject the message by sending a 400 (Bad Request) [...] or replace each received obs-fold with one or more SP octets prior to interpreting the field value",
        applies: |input, ours, _| {
            we_refused(ours, "invalid header name")
                && (contains(input, b"\n ") || contains(input, b"\n\t"))
        },
    },
    Difference {
        what: "control characters (other than HTAB) in a field value are 400; h11 refuses only NUL, CR and LF",
        rfc: "RFC 9110 5.5: field-value = *field-content; field-vchar = VCHAR / obs-text. Field values containing CR, LF, or NUL characters are invalid and dangerous.",
        applies: |input, ours, h11| {
            we_refused(ours, "invalid header value")
                && input
                    .iter()
                    .any(|&b| b != b'\t' && b != b'\r' && b != b'\n' && (b < 0x20 || b == 0x7f))
                && h11_went_further(ours, h11)
        },
    },
    Difference {
        what: "chunk extensions follow their grammar and no whitespace may trail a chunk size; h11 takes ';' and anything after it, and trailing whitespace",
        rfc: "RFC 9112 7.1 and 7.1.1: chunk = chunk-size [ chunk-ext ] CRLF; chunk-ext = *( BWS \";\" BWS chunk-ext-name [ BWS \"=\" BWS chunk-ext-val ] ); chunk-ext-name = token; chunk-ext-val = token / quoted-string",
        applies: |_, ours, _| we_refused(ours, "RFC 9112 section 7.1.1"),
    },
    Difference {
        what: "size limits: a head past 8 KiB, a target past 1 KiB, more than 32 header lines, a body past 16 KiB; h11 limits only what it buffers of an incomplete head",
        rfc: "RFC 9110 15.5.14 (413), 15.5.15 (414) and RFC 6585 5 (431): a server may refuse requests larger than it is willing or able to process.",
        applies: |_, ours, _| {
            ["413 ", "414 ", "431 "]
                .iter()
                .any(|status| we_refused(ours, status))
        },
    },
];

#[test]
fn our_framer_agrees_with_h11_or_the_difference_is_listed() {
    let inputs = inputs();
    let bytes: Vec<Vec<u8>> = inputs.iter().map(|input| input.bytes.clone()).collect();
    let theirs = h11_verdicts(&bytes);
    let verdicts: Vec<Verdict> = inputs.iter().map(|input| ours(&input.bytes)).collect();
    // Refused by us, still incomplete for h11: ask h11 again with the line
    // and the head ended.
    let early: Vec<usize> = (0..inputs.len())
        .filter(|&at| {
            verdicts[at].end == End::Refused
                && theirs[at].end == End::Incomplete
                && verdicts[at].requests == theirs[at].requests
        })
        .collect();
    let completed: Vec<Vec<u8>> = early
        .iter()
        .map(|&at| [&inputs[at].bytes[..], b"\r\n\r\n"].concat())
        .collect();
    let mut theirs_completed = h11_verdicts(&completed).into_iter();
    let mut agreed = 0;
    let mut agreed_early = 0;
    let mut explained = vec![0usize; DIFFERENCES.len()];
    let mut unexplained = Vec::new();
    for (at, input) in inputs.iter().enumerate() {
        let (ours, h11) = (&verdicts[at], &theirs[at]);
        if ours.requests == h11.requests && ours.end == h11.end {
            agreed += 1;
            continue;
        }
        if early.contains(&at) {
            let again = theirs_completed
                .next()
                .expect("a verdict per completed input");
            if again.end == End::Refused && again.requests == ours.requests {
                agreed_early += 1;
                continue;
            }
        }
        if let Some(kind) = DIFFERENCES.iter().position(|difference| {
            same_prefix(ours, h11) && (difference.applies)(&input.bytes, ours, h11)
        }) {
            explained[kind] += 1;
            continue;
        }
        unexplained.push(format!(
            "{}\n  bytes: {:?}\n  ours: {:?} after {} requests ({})\n  h11:  {:?} after {} requests ({})",
            input.name,
            String::from_utf8_lossy(&input.bytes[..input.bytes.len().min(300)]),
            ours.end,
            ours.requests.len(),
            ours.reason,
            h11.end,
            h11.requests.len(),
            h11.reason
        ));
    }
    println!(
        "{} inputs: {agreed} agree, {agreed_early} agree once the line ends, {} differ as listed",
        inputs.len(),
        explained.iter().sum::<usize>()
    );
    for (difference, count) in DIFFERENCES.iter().zip(&explained) {
        println!(
            "  {count:3}  {}\n        {}",
            difference.what, difference.rfc
        );
    }
    assert!(
        unexplained.is_empty(),
        "{} disagreements with h11 that no listed difference explains:\n{}",
        unexplained.len(),
        unexplained.join("\n")
    );
}
