//! The `reactor` target's input, decoded into a plan: the rules of the
//! state (its task limits) and the [`Step`]s to run, from requests on
//! connections of three uids to clock moves, store faults, hang-ups and
//! exiting processes.

use std::time::Duration;

use crate::tasks::{Command, TaskName};
use crate::testing::memory_store::Fault;

use crate::testing::fuzzing::Input;

/// Steps per input: each is a few turns of the reactor at most (a
/// millisecond under AddressSanitizer for a long input), and the corpus
/// carries the states longer plans would reach.
pub(super) const MAX_STEPS: usize = 32;

/// Most cuts in a delivery, and the longest piece before a cut: a request
/// is some 60 to 110 bytes, so cuts fall anywhere in one.
pub(super) const MAX_CUTS: u8 = 8;
pub(super) const MAX_PIECE: u8 = 64;

/// The longest run of raw bytes a step queues: a request line and a
/// header or two.
pub(super) const MAX_RAW: u8 = 64;

/// The connections, by the uid of their peer: two users and root.
pub(super) const UIDS: [u32; 3] = [1000, 1001, 0];

/// Processes a create may bind to; a step makes one exit.
pub(super) const PIDS: [u32; 3] = [5000, 5001, 5002];

/// Names the requests use: few, so they collide; all safe in a path.
pub(super) const NAMES: [&str; 4] = ["a", "b", "agent", "Z9"];

/// Expiries the requests ask for, in seconds: around the clock steps.
pub(super) const EXPIRES: [u64; 8] = [1, 2, 3, 5, 8, 30, 600, 3600];

/// The daemon's uid in the shares.
pub(super) const DAEMON_UID: u32 = 999;

/// What the harness knows of a request it queued: the command a mutation
/// must have been planned as (and the process it binds), or nothing to
/// check.
#[derive(Debug, Clone)]
pub(super) enum Expect {
    Mutation { command: Command, bind: Option<u32> },
    Read,
}

/// One step of the plan.
#[derive(Debug, Clone)]
pub(super) enum Step {
    /// Queue a request's bytes on a connection (not delivered yet).
    Queue {
        conn: usize,
        bytes: Vec<u8>,
        expect: Expect,
    },
    /// Queue raw bytes: the connection's later answers are not checked
    /// against commands any more.
    Raw { conn: usize, bytes: Vec<u8> },
    /// Deliver up to `len` queued bytes in pieces of the given sizes, a
    /// wake after each (the whole run: in one piece).
    Deliver {
        conn: usize,
        len: usize,
        pieces: Vec<usize>,
    },
    /// The peer closes its end, then a turn.
    HangUp { conn: usize },
    /// Both clocks move on (`mono` true) or the wall clock alone steps,
    /// forward or back; then a turn.
    Clock {
        forward: bool,
        by: Duration,
        mono: bool,
    },
    /// The next commit or reload meets this fault.
    Fault(Fault),
    /// A process exits; then a turn.
    Exit { pid: u32 },
}

/// The plan and the rules an input describes.
pub(super) struct Plan {
    pub(super) max_tasks: usize,
    pub(super) max_per_uid: Option<usize>,
    pub(super) steps: Vec<Step>,
}

pub(super) fn plan_of(data: &[u8]) -> Plan {
    let mut input = Input::new(data);
    let first = input.byte();
    let max_tasks = 1 + usize::from(first % 6);
    let max_per_uid = match first / 6 % 4 {
        0 => None,
        quota => Some(usize::from(quota)),
    };
    let mut steps = Vec::new();
    while !input.is_empty() && steps.len() < MAX_STEPS {
        let op = input.byte();
        let conn = usize::from(op >> 3) % UIDS.len();
        let step = match op % 8 {
            0..=2 => request(conn, &mut input),
            3 | 4 => {
                // 0xFF: everything queued (several requests at once).
                let len = match input.byte() {
                    0xFF => usize::MAX,
                    byte => 1 + usize::from(byte),
                };
                let count = input.byte() % (MAX_CUTS + 1);
                let pieces = (0..count)
                    .map(|_| 1 + usize::from(input.byte() % MAX_PIECE))
                    .collect();
                Step::Deliver { conn, len, pieces }
            }
            5 => {
                let step = input.byte();
                let by = Duration::from_millis(u64::from(step >> 2) * 250);
                match step & 3 {
                    0 | 1 => Step::Clock {
                        forward: true,
                        by,
                        mono: true,
                    },
                    2 => Step::Clock {
                        forward: true,
                        by: by * 4,
                        mono: false,
                    },
                    _ => Step::Clock {
                        forward: false,
                        by: by * 4,
                        mono: false,
                    },
                }
            }
            6 => match input.byte() % 6 {
                0 => Step::Fault(Fault::Lost),
                1 => Step::Fault(Fault::Torn),
                2 => Step::Fault(Fault::Full),
                3 => Step::Fault(Fault::Unreadable),
                4 => Step::Exit {
                    pid: PIDS[usize::from(op >> 5) % PIDS.len()],
                },
                _ => Step::HangUp { conn },
            },
            _ => {
                let len = usize::from(input.byte() % MAX_RAW);
                let bytes = (0..len).map(|_| input.byte()).collect();
                Step::Raw { conn, bytes }
            }
        };
        steps.push(step);
    }
    Plan {
        max_tasks,
        max_per_uid,
        steps,
    }
}

/// A request of the API on `conn`, and what it must be planned as.
fn request(conn: usize, input: &mut Input) -> Step {
    // Bits 0-2: the request; 3-4: the name; 7: bind to the process of
    // bits 5-6.
    let kind = input.byte();
    let name = NAMES[usize::from(kind >> 3 & 3) % NAMES.len()];
    let expire = EXPIRES[usize::from(input.byte()) % EXPIRES.len()];
    let caller = Some(UIDS[conn]);
    let task = TaskName::parse(name).expect("the target's names are valid");
    let bind = (kind & 0x80 != 0).then(|| PIDS[usize::from(kind >> 5 & 3) % PIDS.len()]);
    let (method, target, body, expect) = match (kind & 7) % 5 {
        0 => {
            let pid = bind
                .map(|pid| format!(",\"pid\":{pid}"))
                .unwrap_or_default();
            let command = Command::Create {
                name: task,
                expire: Duration::from_secs(expire),
                claim: Default::default(),
                caller,
            };
            (
                "POST",
                "/v1/tasks".to_owned(),
                format!("{{\"name\":\"{name}\",\"expire\":{expire}{pid}}}"),
                Expect::Mutation { command, bind },
            )
        }
        1 => {
            let command = Command::Upsert {
                name: task,
                expire: Duration::from_secs(expire),
                claim: Default::default(),
                caller,
            };
            (
                "PUT",
                format!("/v1/tasks/{name}"),
                format!("{{\"expire\":{expire}}}"),
                Expect::Mutation {
                    command,
                    bind: None,
                },
            )
        }
        2 => {
            let command = Command::Delete {
                name: task,
                caller,
                bound_to: None,
            };
            (
                "DELETE",
                format!("/v1/tasks/{name}"),
                String::new(),
                Expect::Mutation {
                    command,
                    bind: None,
                },
            )
        }
        3 => (
            "GET",
            format!("/v1/tasks/{name}"),
            String::new(),
            Expect::Read,
        ),
        _ => ("GET", "/v1/tasks".to_owned(), String::new(), Expect::Read),
    };
    let bytes = format!(
        "{method} {target} HTTP/1.1\r\nHost: sprite\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes();
    Step::Queue {
        conn,
        bytes,
        expect,
    }
}
