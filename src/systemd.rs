//! The two systemd service protocols, without libsystemd: socket activation
//! (`LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES`) and notifications
//! (`NOTIFY_SOCKET`: `READY=1`, `STOPPING=1`, `STATUS=`, and `WATCHDOG=1`
//! every half `WATCHDOG_USEC`).
//!
//! [`ServiceEnv::take`] reads the variables once, at start-up, and removes
//! them from the environment, so hook commands (our children) neither adopt
//! our listening socket nor speak for us to systemd. The parsing is pure and
//! tested beside it; [`Notifier`] is best-effort I/O on one non-blocking
//! datagram socket, so a missing or full receiver never delays the reactor.
//! Time is an argument: the reactor passes its monotonic `now`.
//!
//! Depends on nothing else of ours.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// Most descriptors accepted in `LISTEN_FDS`: the units pass one socket,
/// and a larger count is a mistake, not a reason to walk the fd table.
pub const MAX_LISTEN_FDS: usize = 64;

/// The variables of both protocols; all are removed by [`ServiceEnv::take`].
pub const VARIABLES: [&str; 6] = [
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
];

/// What systemd (or `systemd-socket-activate`) handed this process.
#[derive(Debug)]
pub struct ServiceEnv {
    /// The listening socket to serve on instead of binding one.
    pub listener: Option<Inherited>,
    /// Where readiness and status go.
    pub notifier: Notifier,
}

/// A listening socket passed by the service manager.
#[derive(Debug)]
pub struct Inherited {
    pub fd: OwnedFd,
    /// Its `FileDescriptorName=`, if one was given.
    pub name: Option<String>,
}

/// Why the passed environment cannot be used.
#[derive(Debug)]
#[non_exhaustive]
pub enum ServiceError {
    /// `LISTEN_PID`/`LISTEN_FDS` are malformed.
    ListenEnv(String),
    /// Descriptor 3 is not a listening Unix stream socket.
    NotAListener { fd: RawFd, why: String },
    /// `NOTIFY_SOCKET` is malformed or the notification socket cannot be made.
    Notify(String),
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceError::ListenEnv(why) => write!(f, "socket activation: {why}"),
            ServiceError::NotAListener { fd, why } => write!(
                f,
                "socket activation: descriptor {fd} is not a listening Unix stream socket ({why}); give the socket unit ListenStream=/path/api.sock"
            ),
            ServiceError::Notify(why) => write!(f, "NOTIFY_SOCKET: {why}"),
        }
    }
}

impl std::error::Error for ServiceError {}

impl ServiceEnv {
    /// Nothing passed: bind our own socket, notify nobody.
    pub fn none() -> ServiceEnv {
        ServiceEnv {
            listener: None,
            notifier: Notifier::disabled(),
        }
    }

    /// Reads the protocols' variables, removes them from the environment,
    /// and takes descriptor 3 when `LISTEN_PID` names this process. Extra
    /// passed descriptors are closed: one socket is served. Every passed
    /// descriptor becomes close-on-exec.
    ///
    /// # Safety
    /// Changes the environment: call it before any other thread exists
    /// (first thing in `main`).
    ///
    /// # Errors
    /// [`ServiceError`] for malformed variables or a descriptor that is not
    /// a listening Unix stream socket.
    pub unsafe fn take() -> Result<ServiceEnv, ServiceError> {
        let var = |name: &str| std::env::var(name).ok();
        let (listen_pid, listen_fds, fd_names) =
            (var("LISTEN_PID"), var("LISTEN_FDS"), var("LISTEN_FDNAMES"));
        let (notify, watchdog_usec, watchdog_pid) = (
            var("NOTIFY_SOCKET"),
            var("WATCHDOG_USEC"),
            var("WATCHDOG_PID"),
        );
        for name in VARIABLES {
            // SAFETY: the caller guarantees no other thread reads or writes
            // the environment now.
            unsafe { std::env::remove_var(name) };
        }
        let pid = std::process::id();
        let count = listen_count(listen_pid.as_deref(), listen_fds.as_deref(), pid)?;
        let mut listener = None;
        for offset in 0..count {
            let fd = LISTEN_FDS_START + offset as RawFd;
            set_cloexec(fd).map_err(|e| ServiceError::NotAListener {
                fd,
                why: e.to_string(),
            })?;
            // SAFETY: the service manager passed this descriptor to us
            // alone (LISTEN_PID is our pid); nothing else owns it.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            if offset == 0 {
                check_listener(&owned)?;
                let name = fd_names
                    .as_deref()
                    .and_then(|names| names.split(':').next())
                    .filter(|name| !name.is_empty())
                    .map(str::to_owned);
                listener = Some(Inherited { fd: owned, name });
            }
            // Others are dropped, hence closed.
        }
        let watchdog = watchdog_interval(watchdog_usec.as_deref(), watchdog_pid.as_deref(), pid);
        let notifier = match notify.as_deref() {
            Some(address) if !address.is_empty() => Notifier::new(address, watchdog)?,
            _ => Notifier::disabled(),
        };
        Ok(ServiceEnv { listener, notifier })
    }
}

/// How many descriptors were passed to process `our_pid`: 0 when
/// `LISTEN_PID` is unset or names another process (the variables were
/// meant for a parent and leaked to us).
///
/// # Errors
/// [`ServiceError::ListenEnv`] when the variables are malformed.
pub fn listen_count(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    our_pid: u32,
) -> Result<usize, ServiceError> {
    let Some(listen_pid) = listen_pid else {
        return Ok(0);
    };
    let pid: u32 = listen_pid
        .trim()
        .parse()
        .map_err(|_| ServiceError::ListenEnv(format!("LISTEN_PID={listen_pid:?} is not a pid")))?;
    if pid != our_pid {
        return Ok(0);
    }
    let Some(listen_fds) = listen_fds else {
        return Err(ServiceError::ListenEnv(
            "LISTEN_PID is set but LISTEN_FDS is not".into(),
        ));
    };
    let count: usize = listen_fds.trim().parse().map_err(|_| {
        ServiceError::ListenEnv(format!("LISTEN_FDS={listen_fds:?} is not a count"))
    })?;
    if count > MAX_LISTEN_FDS {
        return Err(ServiceError::ListenEnv(format!(
            "LISTEN_FDS={count} is more than the {MAX_LISTEN_FDS} descriptors accepted; pass the one socket of sprite-tasksd.socket"
        )));
    }
    Ok(count)
}

/// The interval `WATCHDOG_USEC` asks for, when it is meant for process
/// `our_pid` (`WATCHDOG_PID` unset or ours). Malformed or zero: none.
pub fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, our_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok() != Some(our_pid)
    {
        return None;
    }
    let usec: u64 = usec?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// `NOTIFY_SOCKET`'s address: a path, or an abstract name after `@`.
///
/// # Errors
/// [`ServiceError::Notify`] for an address that is neither.
pub fn notify_address(text: &str) -> Result<SocketAddr, ServiceError> {
    let bad = |e: io::Error| ServiceError::Notify(format!("{text:?} is not a socket address: {e}"));
    match text.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes()).map_err(bad),
        None if text.starts_with('/') => SocketAddr::from_pathname(text).map_err(bad),
        None => Err(ServiceError::Notify(format!(
            "{text:?} is neither an absolute path nor an abstract name starting with '@'"
        ))),
    }
}

fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor number; an invalid one fails with EBADF.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn socket_option(fd: &OwnedFd, option: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `value`.
    let result = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

/// Refuses anything but a listening `AF_UNIX` `SOCK_STREAM` socket: a
/// wrong `ListenStream=` (a TCP port) or a datagram socket is a unit
/// mistake to report, not to serve.
fn check_listener(fd: &OwnedFd) -> Result<(), ServiceError> {
    let not = |why: String| ServiceError::NotAListener {
        fd: fd.as_raw_fd(),
        why,
    };
    let get = |option| socket_option(fd, option).map_err(|e| not(e.to_string()));
    if get(libc::SO_DOMAIN)? != libc::AF_UNIX {
        return Err(not("not a Unix socket".into()));
    }
    if get(libc::SO_TYPE)? != libc::SOCK_STREAM {
        return Err(not("not a stream socket".into()));
    }
    if get(libc::SO_ACCEPTCONN)? == 0 {
        return Err(not("not listening".into()));
    }
    Ok(())
}

/// Sends `sd_notify` messages. Every send is best effort: the daemon does
/// not depend on anyone listening.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    /// Half of `WATCHDOG_USEC`: the ping interval.
    watchdog_every: Option<Duration>,
    next_watchdog: Option<Instant>,
    last_status: String,
}

impl Notifier {
    /// A notifier that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier {
            target: None,
            watchdog_every: None,
            next_watchdog: None,
            last_status: String::new(),
        }
    }

    /// A notifier for `NOTIFY_SOCKET=address`, pinging the watchdog every
    /// half of `watchdog`, as `sd_watchdog_enabled(3)` advises.
    ///
    /// # Errors
    /// [`ServiceError::Notify`] for a bad address or when no datagram
    /// socket can be made.
    pub fn new(address: &str, watchdog: Option<Duration>) -> Result<Notifier, ServiceError> {
        let address = notify_address(address)?;
        let socket = UnixDatagram::unbound()
            .and_then(|socket| socket.set_nonblocking(true).map(|()| socket))
            .map_err(|e| ServiceError::Notify(format!("cannot create a datagram socket: {e}")))?;
        Ok(Notifier {
            target: Some((socket, address)),
            watchdog_every: watchdog.map(|interval| interval / 2),
            next_watchdog: None,
            last_status: String::new(),
        })
    }

    /// Whether there is anyone to notify.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// The watchdog ping interval, if the watchdog is on.
    pub fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog_every.filter(|_| self.is_enabled())
    }

    /// The store is loaded and the socket accepts: `READY=1`, the status,
    /// and the first watchdog ping (which starts the ping schedule).
    pub fn ready(&mut self, status: &str, now: Instant) {
        self.last_status = status.to_owned();
        let mut message = format!("READY=1\nSTATUS={status}\nMAINPID={}", std::process::id());
        if self.watchdog_every().is_some() {
            message.push_str("\nWATCHDOG=1");
        }
        self.send(&message);
        self.next_watchdog = self.watchdog_every().map(|every| now + every);
    }

    /// Shutdown has begun.
    pub fn stopping(&mut self, status: &str) {
        self.last_status = status.to_owned();
        self.send(&format!("STOPPING=1\nSTATUS={status}"));
    }

    /// `STATUS=status`, if it differs from the last one sent.
    pub fn status(&mut self, status: &str) {
        if self.is_enabled() && status != self.last_status {
            self.last_status = status.to_owned();
            self.send(&format!("STATUS={status}"));
        }
    }

    /// Sends `WATCHDOG=1` if a ping is due at `now`. Called every reactor
    /// turn: a reactor that stops turning stops pinging, and systemd
    /// restarts it.
    pub fn watchdog(&mut self, now: Instant) {
        if let (Some(every), Some(due)) = (self.watchdog_every(), self.next_watchdog)
            && due <= now
        {
            self.send("WATCHDOG=1");
            self.next_watchdog = Some(now + every);
        }
    }

    /// When the reactor must wake for the next watchdog ping.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.next_watchdog
    }

    fn send(&self, message: &str) {
        if let Some((socket, address)) = &self.target
            && let Err(e) = socket.send_to_addr(message.as_bytes(), address)
        {
            tracing::debug!(error = %e, "cannot notify the service manager");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_count_is_ours_only() {
        let cases: &[(Option<&str>, Option<&str>, Option<usize>)] = &[
            (None, None, Some(0)),
            (None, Some("1"), Some(0)),
            (Some("42"), Some("1"), Some(1)),
            (Some("42"), Some("2"), Some(2)),
            (Some("42"), Some("0"), Some(0)),
            (Some("43"), Some("1"), Some(0)),
            (Some(" 42 "), Some(" 1 "), Some(1)),
            (Some("x"), Some("1"), None),
            (Some("42"), None, None),
            (Some("42"), Some("-1"), None),
            (Some("42"), Some("65"), None),
        ];
        for (pid, fds, expected) in cases {
            let got = listen_count(*pid, *fds, 42).ok();
            assert_eq!(got, *expected, "LISTEN_PID={pid:?} LISTEN_FDS={fds:?}");
        }
    }

    #[test]
    fn watchdog_interval_for_us_only() {
        let second = Some(Duration::from_secs(1));
        let cases: &[(Option<&str>, Option<&str>, Option<Duration>)] = &[
            (None, None, None),
            (Some("1000000"), None, second),
            (Some("1000000"), Some("42"), second),
            (Some("1000000"), Some("43"), None),
            (Some("0"), None, None),
            (Some("soon"), None, None),
        ];
        for (usec, pid, expected) in cases {
            assert_eq!(
                watchdog_interval(*usec, *pid, 42),
                *expected,
                "{usec:?} {pid:?}"
            );
        }
    }

    #[test]
    fn notify_addresses() {
        assert!(notify_address("/run/systemd/notify").is_ok_and(|a| a.as_pathname().is_some()));
        assert!(
            notify_address("@sd-notify")
                .is_ok_and(|a| a.as_abstract_name() == Some(b"sd-notify".as_slice()))
        );
        assert!(notify_address("relative/path").is_err());
        assert!(notify_address("/a\0b").is_err());
    }

    #[test]
    fn watchdog_pings_at_half_the_interval() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        receiver.set_nonblocking(true).unwrap();
        let mut notifier =
            Notifier::new(path.to_str().unwrap(), Some(Duration::from_secs(10))).unwrap();
        let start = Instant::now();
        notifier.ready("idle", start);
        let mut buffer = [0u8; 256];
        let n = receiver.recv(&mut buffer).unwrap();
        let first = String::from_utf8_lossy(&buffer[..n]).into_owned();
        assert!(
            first.contains("READY=1") && first.contains("WATCHDOG=1"),
            "{first}"
        );
        assert_eq!(
            notifier.next_deadline(),
            Some(start + Duration::from_secs(5))
        );
        notifier.watchdog(start + Duration::from_secs(4));
        assert!(
            receiver.recv(&mut buffer).is_err(),
            "no ping before it is due"
        );
        notifier.watchdog(start + Duration::from_secs(5));
        let n = receiver.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"WATCHDOG=1");
        notifier.status("idle");
        assert!(
            receiver.recv(&mut buffer).is_err(),
            "an unchanged status is not resent"
        );
        notifier.status("held by 1 task");
        let n = receiver.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"STATUS=held by 1 task");
    }
}
