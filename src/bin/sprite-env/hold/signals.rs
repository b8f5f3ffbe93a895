//! SIGINT, SIGTERM, SIGHUP and SIGCHLD through a self-pipe, with
//! whether each came from the terminal.
//!
//! Our own `sigaction` handler rather than signal-hook's: the decision
//! to forward needs `si_code` (a terminal's signal is `SI_KERNEL` and has
//! reached the whole foreground process group already), which
//! signal-hook exposes only behind a feature we do not enable.
//!
//! Depends on libc only; [`super`], the hold, is its one user.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

/// The write end of the pipe, for the handler; -1 before install.
static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);

/// One caught signal.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub signal: libc::c_int,
    /// Sent by the kernel on behalf of a terminal (Ctrl-C, hangup).
    pub from_terminal: bool,
}

#[cfg(target_os = "linux")]
fn errno_location() -> *mut libc::c_int {
    // SAFETY: always valid for the calling thread.
    unsafe { libc::__errno_location() }
}

#[cfg(not(target_os = "linux"))]
fn errno_location() -> *mut libc::c_int {
    // SAFETY: always valid for the calling thread.
    unsafe { libc::__error() }
}

#[cfg(target_os = "linux")]
fn from_kernel(code: libc::c_int) -> bool {
    code == libc::SI_KERNEL
}

#[cfg(not(target_os = "linux"))]
fn from_kernel(_code: libc::c_int) -> bool {
    false
}

/// Async-signal-safe: two bytes to a non-blocking pipe, errno kept.
extern "C" fn on_signal(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    _context: *mut libc::c_void,
) {
    let errno = errno_location();
    // SAFETY: errno is thread-local; `info` is the kernel's siginfo
    // for this delivery (SA_SIGINFO) or null.
    unsafe {
        let saved = *errno;
        let terminal = !info.is_null() && from_kernel((*info).si_code);
        let record = [signal as u8, u8::from(terminal)];
        let fd = PIPE_WRITE.load(Ordering::Relaxed);
        if fd >= 0 {
            libc::write(fd, record.as_ptr().cast(), record.len());
        }
        *errno = saved;
    }
}

/// The read end of the self-pipe; the write end stays open for the handler.
pub struct SignalPipe {
    read: OwnedFd,
    _write: OwnedFd,
}

impl SignalPipe {
    /// Creates the pipe and installs the handlers.
    pub fn install() -> io::Result<SignalPipe> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two descriptors we then own.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors are fresh and ours.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        PIPE_WRITE.store(write.as_raw_fd(), Ordering::Relaxed);
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGCHLD] {
            // SAFETY: a zeroed sigaction is valid; the handler is
            // async-signal-safe and has the SA_SIGINFO signature.
            unsafe {
                let mut current: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(signal, std::ptr::null(), &mut current) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // A signal ignored at start (SIGHUP under nohup,
                // SIGINT in a script's background job) stays
                // ignored, for the holder and for the command.
                if signal != libc::SIGCHLD && current.sa_sigaction == libc::SIG_IGN {
                    continue;
                }
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_signal as *const () as usize;
                action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_NOCLDSTOP;
                libc::sigemptyset(&mut action.sa_mask);
                if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        Ok(SignalPipe {
            read,
            _write: write,
        })
    }

    /// Waits up to `timeout` (forever if `None`) for signals and
    /// returns those caught; empty after the timeout.
    pub fn wait(&self, timeout: Option<Duration>) -> io::Result<Vec<Received>> {
        let millis = match timeout {
            // Rounded up, so a due refresh is never polled early in
            // a loop of zero-millisecond waits.
            Some(t) => i32::try_from(t.as_micros().div_ceil(1000)).unwrap_or(i32::MAX),
            None => -1,
        };
        let mut poll = libc::pollfd {
            fd: self.read.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut poll, 1, millis) };
        if ready < 0 {
            let error = io::Error::last_os_error();
            return if error.kind() == io::ErrorKind::Interrupted {
                Ok(Vec::new())
            } else {
                Err(error)
            };
        }
        let mut received = Vec::new();
        let mut buffer = [0u8; 64];
        loop {
            // SAFETY: reading into a local buffer of its length.
            let n = unsafe {
                libc::read(
                    self.read.as_raw_fd(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                )
            };
            if n <= 0 {
                break;
            }
            // Records are 2 bytes and writes of 2 bytes to a pipe are
            // atomic, so reads of an even length never split one.
            for record in buffer[..n as usize].chunks_exact(2) {
                received.push(Received {
                    signal: libc::c_int::from(record[0]),
                    from_terminal: record[1] != 0,
                });
            }
        }
        Ok(received)
    }
}
