//! Unix socket files a server binds at a fixed path (the API socket, the UAPI socket): clearing
//! the file a crashed server left behind, never the one a live server still answers on.

use std::io;
use std::os::unix::fs::FileTypeExt as _;
use std::path::Path;

use tokio::net::UnixStream;

/// Why the file at a socket path was not cleared.
#[derive(Debug)]
pub enum NotCleared {
    /// A live process answers on it (or its accept backlog is full: alive, just busy).
    AlreadyServing,
    /// Something other than a socket is there.
    NotASocket,
    /// Checking or removing it failed.
    Io(io::Error),
}

/// Removes a socket file at `path` that nobody answers on (`what` names it in the log line);
/// nothing there is fine.
///
/// # Errors
///
/// [`NotCleared`]: a live server, a file that is not a socket, or an I/O failure.
pub async fn remove_stale(path: &Path, what: &str) -> Result<(), NotCleared> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(NotCleared::Io(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(NotCleared::NotASocket);
    }
    match UnixStream::connect(path).await {
        Ok(_) => Err(NotCleared::AlreadyServing),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(NotCleared::AlreadyServing),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(socket = %path.display(), "removing a stale {what} socket");
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(NotCleared::Io(e)),
                _ => Ok(()),
            }
        }
        Err(e) => Err(NotCleared::Io(e)),
    }
}
