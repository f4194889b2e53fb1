//! Why the API could not be served. Every message names the socket path, so an operator can act
//! on it without reading code.

use std::io;
use std::path::PathBuf;

use crate::system::fs::FsError;

/// Failure to set up or run the API socket.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The socket's directory could not be created.
    #[error("cannot create the directory of API socket {}: {source}", path.display())]
    CreateDir {
        /// The socket path.
        path: PathBuf,
        /// What failed.
        #[source]
        source: FsError,
    },
    /// A daemon accepted a connection on the socket: two daemons must not share it.
    #[error("another wgmeshd is already serving {}", path.display())]
    AlreadyServing {
        /// The socket path.
        path: PathBuf,
    },
    /// Something other than a socket sits at the path; it is not ours to delete.
    #[error(
        "{} exists and is not a socket; remove it or choose another API socket path",
        path.display()
    )]
    NotASocket {
        /// The socket path.
        path: PathBuf,
    },
    /// The existing socket file could not be checked or removed.
    #[error("cannot replace stale API socket {}: {source}", path.display())]
    Stale {
        /// The socket path.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// `bind(2)` failed.
    #[error("cannot bind API socket {}: {source}", path.display())]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// The socket group asked for (`--socket-group`) does not exist.
    #[error(
        "group {group:?} for API socket {} does not exist (not in /etc/group, not a number); create it or choose another --socket-group",
        path.display()
    )]
    UnknownGroup {
        /// The group as given.
        group: String,
        /// The socket path.
        path: PathBuf,
    },
    /// Mode or group of the socket could not be set; it stays closed rather than too open.
    #[error("cannot set {what} of API socket {}: {source}", path.display())]
    Permissions {
        /// `mode 0660` or `the group`.
        what: &'static str,
        /// The socket path.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// The listening socket failed (`accept(2)` with an error that retrying cannot fix).
    #[error("API server on {} failed: {source}", path.display())]
    Serve {
        /// The socket path.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
}
