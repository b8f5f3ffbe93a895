//! The listening socket: binding it (replacing a dead daemon's socket file,
//! never a live one), adopting one passed by the service manager, removing
//! it at shutdown, and the 503 a refused connection gets before it is
//! dropped.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use std::os::unix::net::UnixListener;

use tracing::{info, warn};

use super::ServerError;
use crate::http::{Answering, HttpDate, Response};
use crate::systemd::Inherited;

/// Serves a listening socket passed by the service manager: non-blocking
/// (the poll needs it; the descriptor is already close-on-exec). Returns it with
/// its path, when it has one.
pub(super) fn adopt(inherited: Inherited) -> Result<(UnixListener, Option<PathBuf>), ServerError> {
    let listener = UnixListener::from(inherited.fd);
    listener
        .set_nonblocking(true)
        .map_err(ServerError::Inherited)?;
    let path = listener
        .local_addr()
        .ok()
        .and_then(|address| address.as_pathname().map(Path::to_path_buf));
    info!(
        socket = ?path,
        name = inherited.name.as_deref().unwrap_or(""),
        "serving the socket passed by the service manager"
    );
    Ok((listener, path))
}

/// Answers a refused connection with a 503 saying why; the caller drops
/// it. Best effort: a fresh socket's buffer takes a few hundred bytes.
pub(super) fn reject_connection(stream: &mut impl Write, response: &Response, date: &HttpDate) {
    let mut bytes = Vec::new();
    response.encode(Answering::REFUSAL, date, &mut bytes);
    let _ = stream.write(&bytes);
}

/// Refuses a socket path that another process serves, or that holds
/// something other than a socket; says whether a (stale) socket file is
/// there. Touches nothing.
///
/// # Errors
/// [`ServerError::SocketInUse`], [`ServerError::NotASocket`], or
/// [`ServerError::Socket`] when the path cannot be examined.
pub fn refuse_live_socket(path: &Path) -> Result<bool, ServerError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ServerError::SocketInUse(path.to_path_buf()));
            }
            Ok(true)
        }
        Ok(_) => Err(ServerError::NotASocket(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(ServerError::Socket {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Binds the socket, non-blocking, replacing a socket file left by a dead
/// daemon but never a live one or a file that is not a socket.
pub(super) fn bind(path: &Path, mode: u32) -> Result<UnixListener, ServerError> {
    let socket_error = |source| ServerError::Socket {
        path: path.to_path_buf(),
        source,
    };
    if refuse_live_socket(path)? {
        info!(socket = %path.display(), "removing a stale socket file");
        fs::remove_file(path).map_err(socket_error)?;
    }
    let listener = UnixListener::bind(path).map_err(socket_error)?;
    listener.set_nonblocking(true).map_err(socket_error)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(socket_error)?;
    Ok(listener)
}

pub(super) fn remove_socket(path: &Path) {
    if let Err(e) = fs::remove_file(path)
        && e.kind() != io::ErrorKind::NotFound
    {
        warn!(socket = %path.display(), error = %e, "cannot remove the socket file");
    }
}
