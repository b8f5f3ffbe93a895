//! The files behind the store: creating them so that a power cut at any
//! moment leaves either no file or a whole one, and the log's byte-level
//! interface ([`LogIo`]) that tests replace with failing or power-cut
//! storage.
//!
//! A new file is made under a temporary name in the same directory, synced,
//! hard-linked to its real name (which fails, rather than replaces, if
//! another process made it first), and the directory is synced. A cut
//! before the link leaves a stray temporary file that the next start
//! removes; after it, a whole file.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::frame;

/// Byte-level access to the log file. `File` in production.
#[allow(clippy::len_without_is_empty)] // a file's length, not a collection's
pub trait LogIo: Send + Sync + std::fmt::Debug {
    /// The file's size: the ring's.
    fn len(&self) -> io::Result<u64>;
    /// Fills `out` from `offset`.
    fn read_at(&self, offset: u64, out: &mut [u8]) -> io::Result<()>;
    /// Writes all of `data` at `offset`.
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Makes every write so far durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
}

impl LogIo for File {
    fn len(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn read_at(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        FileExt::read_exact_at(self, out, offset)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        FileExt::write_all_at(self, data, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }
}

/// How much of the log a scan reads at a time: a few hundred frames per
/// read, in a buffer reused for the whole scan. Reading the whole 16 MiB
/// log into one buffer first faulted in every page of it, some 20 ms of
/// a start-up, most of it for zeros past the last frame.
pub const LOG_WINDOW: usize = 1 << 20;

/// The log read a window at a time, for a scan ([`frame::Ring`]).
pub struct LogWindow<'a> {
    log: &'a dyn LogIo,
    size: u64,
    /// The bytes read last, from file offset `from`.
    window: Vec<u8>,
    from: usize,
    /// How much a read asks for at least ([`LOG_WINDOW`]).
    read: usize,
}

impl<'a> LogWindow<'a> {
    /// A reader of `log`, whose size is `size`.
    pub fn new(log: &'a dyn LogIo, size: u64) -> LogWindow<'a> {
        LogWindow::reading(log, size, LOG_WINDOW)
    }

    /// A reader that reads `read` bytes at a time (tests try small ones).
    pub(crate) fn reading(log: &'a dyn LogIo, size: u64, read: usize) -> LogWindow<'a> {
        LogWindow {
            log,
            size,
            window: Vec::new(),
            from: 0,
            read: read.max(1),
        }
    }
}

impl frame::Ring for LogWindow<'_> {
    fn size(&self) -> u64 {
        self.size
    }

    fn bytes(&mut self, offset: usize, len: usize) -> io::Result<&[u8]> {
        let size = usize::try_from(self.size).unwrap_or(usize::MAX);
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{len} bytes at {offset} run past the log's {size}"),
            ));
        }
        let held = offset >= self.from && offset + len <= self.from + self.window.len();
        if !held {
            // From `offset`, a window or the frame if longer, within the
            // file.
            let want = len.max(self.read).min(size - offset);
            self.window.resize(want, 0);
            self.from = offset;
            if let Err(e) = self.log.read_at(offset as u64, &mut self.window) {
                // Nothing of it is held.
                self.window.clear();
                return Err(e);
            }
        }
        let at = offset - self.from;
        Ok(&self.window[at..at + len])
    }
}

/// The log file that goes with the database at `db`.
pub fn log_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".wal");
    PathBuf::from(name)
}

/// The temporary name this process builds `path` under.
fn temporary(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".new-{}", std::process::id()));
    PathBuf::from(name)
}

/// Removes temporary files a cut left beside `path` (from any process).
/// Call only while holding the database's lock.
pub fn remove_stray_temporaries(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let mut prefix = name.to_owned();
    prefix.push(".new-");
    let prefix = prefix.to_string_lossy().into_owned();
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let stray = entry.path();
            match fs::remove_file(&stray) {
                Ok(()) => {
                    tracing::warn!(file = %stray.display(), "removed a file left half-made by an earlier start")
                }
                Err(e) => {
                    tracing::warn!(file = %stray.display(), error = %e, "cannot remove a half-made file")
                }
            }
        }
    }
}

/// Creates `path` whole or not at all: `build` fills a temporary file, which
/// is synced, linked into place and the directory synced. Returns false
/// (and builds nothing into place) when `path` appeared meanwhile.
///
/// # Errors
/// Any I/O error; the temporary file is removed.
pub fn create_whole(path: &Path, build: impl FnOnce(&Path) -> io::Result<()>) -> io::Result<bool> {
    let temp = temporary(path);
    let result = (|| {
        build(&temp)?;
        File::open(&temp)?.sync_all()?;
        match fs::hard_link(&temp, path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(e),
        }
        sync_dir(path)?;
        Ok(true)
    })();
    let _ = fs::remove_file(&temp);
    result
}

/// Syncs the directory holding `path`, so a new name in it survives a cut.
pub fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// Opens the log at `path`, creating it zero-filled with `size` bytes when
/// it does not exist. An existing log keeps its size.
///
/// # Errors
/// Any I/O error.
pub fn open_log(path: &Path, size: u64) -> io::Result<File> {
    let open = || OpenOptions::new().read(true).write(true).open(path);
    match open() {
        Ok(file) => return Ok(file),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    create_whole(path, |temp| {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(temp)?;
        zero_fill(&file, size)
    })?;
    open()
}

/// Writes `size` zero bytes into `file`: real blocks, so that a later
/// overwrite and `fdatasync` flush data only, never an extent conversion or
/// a new file size.
fn zero_fill(file: &File, size: u64) -> io::Result<()> {
    /// Zeros written per call.
    const CHUNK: usize = 1 << 20;
    let zeros = vec![0u8; CHUNK];
    let mut offset = 0;
    while offset < size {
        let len = (size - offset).min(CHUNK as u64) as usize;
        file.write_all_at(&zeros[..len], offset)?;
        offset += len as u64;
    }
    Ok(())
}

/// What went wrong with a path, in words a user can act on; `None` when the
/// error is not about access to the path.
pub fn access_problem(error: &io::Error) -> Option<&'static str> {
    match error.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => Some("permission denied"),
        Some(libc::EROFS) => Some("read-only file system"),
        Some(libc::ENOENT) => Some("its directory does not exist"),
        Some(libc::ENOTDIR) => Some("a component of the path is not a directory"),
        Some(libc::ENOSPC) => Some("no space left on the device"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_log_is_whole_and_zeroed_and_an_old_one_keeps_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.redb.wal");
        let log = open_log(&path, 8192).unwrap();
        assert_eq!(LogIo::len(&log).unwrap(), 8192);
        let mut bytes = vec![1u8; 8192];
        LogIo::read_at(&log, 0, &mut bytes).unwrap();
        assert!(bytes.iter().all(|&b| b == 0));
        LogIo::write_at(&log, 100, b"kept").unwrap();
        drop(log);
        let log = open_log(&path, 4096).unwrap();
        assert_eq!(LogIo::len(&log).unwrap(), 8192);
        let mut kept = [0u8; 4];
        LogIo::read_at(&log, 100, &mut kept).unwrap();
        assert_eq!(&kept, b"kept");
        // Nothing is left under a temporary name.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["t.redb.wal"]);
    }

    #[test]
    fn creation_never_replaces_a_file_that_appeared() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let made = create_whole(&path, |temp| {
            fs::write(temp, b"mine")?;
            // Another process wins the race.
            fs::write(&path, b"theirs")
        })
        .unwrap();
        assert!(!made);
        assert_eq!(fs::read(&path).unwrap(), b"theirs");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn strays_of_a_cut_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.redb");
        fs::write(dir.path().join("tasks.redb.new-1234"), b"half").unwrap();
        fs::write(dir.path().join("other.new-1"), b"not ours").unwrap();
        remove_stray_temporaries(&path);
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["other.new-1"]);
    }

    #[test]
    fn access_problems_are_named() {
        let denied = io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(access_problem(&denied), Some("permission denied"));
        let rofs = io::Error::from_raw_os_error(libc::EROFS);
        assert_eq!(access_problem(&rofs), Some("read-only file system"));
        assert_eq!(access_problem(&io::Error::other("x")), None);
    }
}
