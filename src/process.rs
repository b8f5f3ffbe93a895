//! What Linux says about the processes that hold tasks: the peer's
//! credentials on the socket (`SO_PEERCRED`), a few fields of `/proc`, and
//! pidfds, which become readable when their process exits.
//!
//! I/O at the edge, used by the reactor only; depends on
//! [`crate::tasks`] for the [`Holder`] it fills in. Every read of `/proc` is
//! bounded ([`MAX_PROC_READ`]) and a process that is gone, or in another
//! PID namespace, gives `None`, never an error the client sees.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use crate::tasks::Holder;

/// Most bytes read from any one `/proc` file. `comm` is at most 16 bytes
/// and `PPid:` is on the seventh line of `status`; a command line longer
/// than this is cut anyway ([`MAX_PARENT_COMMAND`]).
pub const MAX_PROC_READ: usize = 4096;

/// Longest parent command line kept, in bytes: enough to recognise
/// `bash ./heartbeat.sh` or an agent's invocation, and short enough that a
/// task row stays small.
pub const MAX_PARENT_COMMAND: usize = 256;

/// The peer of a Unix socket as the kernel recorded it at `connect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credentials {
    /// `None` when the peer is in another PID namespace (the kernel says 0).
    pub pid: Option<u32>,
    pub uid: u32,
}

/// This process's effective uid: the daemon's own, privileged like root's.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid(2) cannot fail.
    unsafe { libc::geteuid() }
}

/// The credentials of the peer of the connected socket `fd`.
///
/// # Errors
/// The `getsockopt` error (not a Unix socket, a closed descriptor).
pub fn peer_credentials(fd: RawFd) -> io::Result<Credentials> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given.
    let result = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Credentials {
        pid: u32::try_from(cred.pid).ok().filter(|&pid| pid > 0),
        uid: cred.uid,
    })
}

/// The holder a peer describes: its pid and uid, its command name, and
/// its parent's pid and command line, read from `/proc` now. Fields that
/// cannot be read are `None`.
pub fn holder(credentials: Credentials) -> Holder {
    let pid = credentials.pid;
    let command = pid
        .and_then(|pid| read_proc(pid, "comm"))
        .map(|comm| Arc::from(printable(comm.trim_end())));
    let parent_pid = pid
        .and_then(|pid| read_proc(pid, "status"))
        .and_then(|status| parent_pid(&status));
    let parent_command = parent_pid
        .and_then(|ppid| read_proc(ppid, "cmdline"))
        .map(|cmdline| command_line(&cmdline))
        .filter(|line| !line.is_empty())
        .map(Arc::from);
    Holder {
        pid,
        uid: Some(credentials.uid),
        command,
        parent_pid,
        parent_command,
    }
}

/// When process `pid` started, in clock ticks since boot (`/proc/PID/stat`
/// field 22): with the pid, it names one process, whatever reuses the pid
/// later.
///
/// # Errors
/// `NotFound` when there is no such process (or it is not visible here),
/// `InvalidData` when `stat` does not parse.
pub fn start_time(pid: u32) -> io::Result<u64> {
    let stat = read_proc(pid, "stat")
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such process"))?;
    stat_start_time(&stat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unreadable /proc stat"))
}

/// Field 22 of a `/proc/PID/stat` line. The command (field 2) is in
/// parentheses and may itself hold spaces and parentheses, so fields are
/// counted from the last `)`.
fn stat_start_time(stat: &str) -> Option<u64> {
    let after_command = &stat[stat.rfind(')')? + 1..];
    // Field 3 (state) is the first after the command.
    after_command.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// `PPid:` of a `/proc/PID/status` text; `None` for 0 (no parent visible
/// in this PID namespace).
fn parent_pid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("PPid:"))
        .and_then(|value| value.trim().parse().ok())
        .filter(|&pid: &u32| pid > 0)
}

/// A `/proc/PID/cmdline` as one line: arguments joined by spaces, control
/// characters replaced, cut to [`MAX_PARENT_COMMAND`] bytes.
fn command_line(cmdline: &str) -> String {
    let joined = cmdline.trim_end_matches('\0').replace('\0', " ");
    let mut line = printable(&joined);
    if line.len() > MAX_PARENT_COMMAND {
        let cut = (0..=MAX_PARENT_COMMAND)
            .rev()
            .find(|&at| line.is_char_boundary(at))
            .unwrap_or(0);
        line.truncate(cut);
    }
    line
}

/// Text safe for one line of a log or a table: control characters become `?`.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// At most [`MAX_PROC_READ`] bytes of `/proc/PID/FILE`, as lossy UTF-8.
fn read_proc(pid: u32, file: &str) -> Option<String> {
    let file = File::open(format!("/proc/{pid}/{file}")).ok()?;
    let mut bytes = Vec::with_capacity(256);
    file.take(MAX_PROC_READ as u64)
        .read_to_end(&mut bytes)
        .ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// A pidfd for process `pid`: readable once the process has exited.
///
/// # Errors
/// `ESRCH` when there is no such process (or it is not visible in the
/// daemon's PID namespace), `EMFILE` when out of descriptors, `ENOSYS`
/// before Linux 5.3.
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor
    // or -1; it touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0 as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::other("pidfd out of range"))?;
    // SAFETY: the kernel just returned this descriptor and nothing else
    // owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    debug_assert!(owned.as_raw_fd() >= 0);
    Ok(owned)
}

/// A process the daemon can bind a hold to: its pidfd and start time.
///
/// # Errors
/// The HTTP status and a sentence for the client: 400 when the process
/// does not exist or is not visible to the daemon, 503 when the daemon is
/// out of descriptors.
pub fn open_binding(pid: u32) -> Result<(OwnedFd, u64), (u16, String)> {
    let pidfd = pidfd_open(pid).map_err(|e| match e.raw_os_error() {
        Some(libc::ESRCH) => (
            400,
            format!(
                "no process {pid} is visible to the daemon (it has exited, or runs in another PID namespace); \"pid\" must name a running process"
            ),
        ),
        Some(libc::EPERM) => (400, format!("the daemon may not watch process {pid}")),
        Some(libc::EMFILE | libc::ENFILE) => (
            503,
            "the daemon is out of descriptors to watch another process; retry shortly".to_owned(),
        ),
        _ => (400, format!("cannot watch process {pid}: {e}")),
    })?;
    // Read after the pidfd is open: if the pid was reused in between, the
    // pidfd names the exited process and is already readable, so the hold
    // is released at once rather than bound to the newcomer.
    let started = start_time(pid).map_err(|_| {
        (
            400,
            format!("process {pid} exited before it could be watched"),
        )
    })?;
    Ok((pidfd, started))
}

/// Allocations of this size or more get pages of their own, returned to
/// the system when freed. glibc's own threshold starts at 128 KiB but rises
/// to the size of every large block freed (up to 32 MiB), so after one
/// 100k-task list answer (about 10 MiB) every later one came from the heap
/// and its pages stayed resident for good: 25 MiB more RSS with 100k tasks.
/// A fixed threshold stops that rise; 1 MiB is well above any answer or
/// commit of a few tasks, so the hot path never maps pages.
pub const LARGE_ALLOCATION: usize = 1 << 20;

/// Fixes glibc's mmap threshold at [`LARGE_ALLOCATION`]. A no-op where the
/// C library is not glibc.
pub fn map_large_allocations() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets the allocator's own parameters; it takes
    // the allocator's locks, so it is safe with other threads running.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, LARGE_ALLOCATION as libc::c_int);
    }
}

/// Hands the heap's free memory back to the system. Loading the store
/// builds every task twice over (rows read, then the index built from
/// them); without this the freed half stays in the process's resident set
/// for its whole life. A no-op where the C library has no `malloc_trim`.
pub fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Raises the soft descriptor limit to the hard one (each bound task holds
/// a pidfd). Returns the new soft limit.
///
/// # Errors
/// The `getrlimit`/`setrlimit` error.
pub fn raise_descriptor_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is valid for writes.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        limit = raised;
    }
    Ok(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_field_22_counted_after_the_command() {
        let stat = "4242 (a (weird) cmd) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 50";
        assert_eq!(stat_start_time(stat), Some(987654));
        assert_eq!(stat_start_time("4242 (x) S 1"), None);
        assert_eq!(stat_start_time("garbage"), None);
    }

    #[test]
    fn parent_pid_and_command_lines() {
        assert_eq!(parent_pid("Name:\tcurl\nPPid:\t4200\n"), Some(4200));
        assert_eq!(parent_pid("PPid:\t0\n"), None);
        assert_eq!(parent_pid("Name:\tx\n"), None);
        assert_eq!(
            command_line("bash\0./heartbeat.sh\0"),
            "bash ./heartbeat.sh"
        );
        assert_eq!(command_line("sh\0-c\0a\nb\0"), "sh -c a?b");
        let long = format!("{}\0", "é".repeat(200));
        let line = command_line(&long);
        assert!(line.len() <= MAX_PARENT_COMMAND && line.len() > MAX_PARENT_COMMAND - 2);
    }

    #[test]
    fn this_process_is_visible_to_itself() {
        let pid = std::process::id();
        let ours = start_time(pid).unwrap();
        assert!(ours > 0);
        let (_pidfd, started) = open_binding(pid).unwrap();
        assert_eq!(started, ours);
        let holder = holder(Credentials {
            pid: Some(pid),
            uid: 0,
        });
        assert_eq!(holder.pid, Some(pid));
        assert!(holder.command.is_some());
        assert!(holder.parent_pid.is_some());
        assert!(open_binding(0x3f_ffff).is_err());
    }
}
