//! The machine's floors, measured in the same run as the requests: the
//! transport floor (a request-sized round trip to an echo server in another
//! process, which is this bench run with `--echo-server`), the durability
//! floor (a small write and `fdatasync` on the database's filesystem) and
//! the store floor (one redb `Durability::Immediate` commit of one row).

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use crate::client::create;
use crate::common::Dirs;
use crate::daemon::{DiesWithBench, START_LIMIT};
use crate::summary::Summary;

/// The payload of the durability floor: about one encoded task row.
pub const SMALL_WRITE: usize = 64;

/// The transport floor: a request-sized message to an echo server in
/// another process and back, over a Unix socket.
pub fn echo_floor(clients: usize, duration: Duration) -> Summary {
    let dirs = Dirs::new();
    let socket = dirs.socket();
    let mut server = Command::new(std::env::current_exe().expect("this bench's path"))
        .arg("--echo-server")
        .arg(&socket)
        .stdin(Stdio::null())
        .dies_with_bench()
        .spawn()
        .expect("start the echo server");
    let started = Instant::now();
    while UnixStream::connect(&socket).is_err() {
        assert!(
            started.elapsed() < START_LIMIT,
            "the echo server did not start"
        );
        std::thread::sleep(Duration::from_micros(100));
    }
    let message = create("c0-123456");
    let barrier = Barrier::new(clients + 1);
    let (socket, message, barrier) = (&socket, &message, &barrier);
    let (samples, wall) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                scope.spawn(move || {
                    let mut stream =
                        UnixStream::connect(socket).expect("connect to the echo server");
                    let mut back = vec![0u8; message.len()];
                    let mut samples = Vec::with_capacity(16 * 1024);
                    barrier.wait();
                    let deadline = Instant::now() + duration;
                    while Instant::now() < deadline {
                        let sent = Instant::now();
                        stream.write_all(message).expect("send to the echo server");
                        stream.read_exact(&mut back).expect("read the echo");
                        samples.push(sent.elapsed());
                    }
                    assert_eq!(&back, message, "the echo server echoes");
                    samples
                })
            })
            .collect();
        barrier.wait();
        let started = Instant::now();
        let samples: Vec<Vec<Duration>> = handles
            .into_iter()
            .map(|h| h.join().expect("an echo client"))
            .collect();
        (samples.concat(), started.elapsed())
    });
    let _ = server.kill();
    let _ = server.wait();
    Summary::of(samples, wall)
}

/// The echo server's body (this binary run with `--echo-server PATH`): a
/// thread per connection, blocking reads echoed back at once.
pub fn echo_server(socket: &Path) {
    let listener = UnixListener::bind(socket).expect("bind the echo socket");
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            loop {
                match stream.read(&mut buffer) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if stream.write_all(&buffer[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}

/// Runs `operation` until `duration` passes (at least `min` times).
fn repeat(duration: Duration, min: usize, mut operation: impl FnMut(usize)) -> Summary {
    let mut samples = Vec::new();
    let started = Instant::now();
    let mut i = 0;
    while i < min || started.elapsed() < duration {
        let at = Instant::now();
        operation(i);
        samples.push(at.elapsed());
        i += 1;
    }
    Summary::of(samples, started.elapsed())
}

/// The durability floor's operation: a small write and `fdatasync` to a
/// file on the database's filesystem, overwriting a preallocated block so no
/// file size changes.
pub struct FsyncProbe {
    _dirs: Dirs,
    file: fs::File,
    done: usize,
}

impl FsyncProbe {
    pub fn new() -> FsyncProbe {
        let dirs = Dirs::new();
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(dirs.db_dir.path().join("floor.bin"))
            .expect("create the floor file");
        file.write_all_at(&[0u8; 4096], 0).expect("preallocate");
        file.sync_all().expect("sync the floor file");
        FsyncProbe {
            _dirs: dirs,
            file,
            done: 0,
        }
    }

    pub fn once(&mut self) {
        let offset = (self.done % (4096 / SMALL_WRITE)) * SMALL_WRITE;
        self.file
            .write_all_at(&[0xa5u8; SMALL_WRITE], offset as u64)
            .expect("write");
        self.file.sync_data().expect("fdatasync");
        self.done += 1;
    }
}

/// The store floor's operation: one redb `Durability::Immediate` commit of
/// one small row.
pub struct StoreProbe {
    _dirs: Dirs,
    db: redb::Database,
    done: u64,
}

const FLOOR_ROWS: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("floor");

impl StoreProbe {
    pub fn new() -> StoreProbe {
        let dirs = Dirs::new();
        let db = redb::Database::create(dirs.db_dir.path().join("floor.redb")).expect("create");
        let mut probe = StoreProbe {
            _dirs: dirs,
            db,
            done: 0,
        };
        for _ in 0..10 {
            probe.once();
        }
        probe
    }

    pub fn once(&mut self) {
        let txn = self.db.begin_write().expect("begin");
        {
            let mut table = txn.open_table(FLOOR_ROWS).expect("open the table");
            table
                .insert(self.done % 1024, [0x5au8; 21].as_slice())
                .expect("insert");
        }
        txn.commit().expect("commit");
        self.done += 1;
    }
}

pub fn fsync_floor(duration: Duration, min: usize) -> Summary {
    let mut probe = FsyncProbe::new();
    repeat(duration, min, |_| probe.once())
}

pub fn redb_floor(duration: Duration, min: usize) -> Summary {
    let mut probe = StoreProbe::new();
    repeat(duration, min, |_| probe.once())
}

pub struct Floors {
    /// Echo round trips at one client: the transport floor.
    pub transport: Summary,
    /// Echo round trips at the other client counts, for the rates.
    pub transport_many: Vec<(usize, Summary)>,
    pub fsync: Summary,
    pub store: Summary,
}

impl Floors {
    pub fn measure(clients: &[usize], duration: Duration) -> Floors {
        Floors {
            transport: echo_floor(1, duration),
            transport_many: clients
                .iter()
                .filter(|c| **c != 1)
                .map(|&c| (c, echo_floor(c, duration)))
                .collect(),
            fsync: fsync_floor(duration, 50),
            store: redb_floor(duration, 50),
        }
    }
}
