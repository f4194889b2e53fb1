//! The API socket's life: replace a stale file, bind, restrict access, remove on exit.
//!
//! Access is decided by the file: mode `0660`, owner the daemon (root), group `wgmesh` when that
//! group exists. A socket left by a crashed daemon is replaced; one a live daemon answers on is
//! not, so a second daemon fails loudly instead of stealing the first one's clients. Binding is
//! separate from serving ([`super::serve`]) so the daemon can claim its socket before it touches
//! any device, and fail early when another daemon owns it.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::{UnixListener, UnixStream};

use super::ApiError;

/// Permission bits of the socket: owner and group may connect, nobody else.
const SOCKET_MODE: u32 = 0o660;
/// Permission bits of a socket directory this creates (clients must be able to traverse it).
const DIR_MODE: u32 = 0o755;
/// Group whose members may use the API without being root.
const API_GROUP: &str = "wgmesh";
/// Where [`API_GROUP`] is looked up; no NSS, the daemon only needs a local system group.
const GROUP_FILE: &str = "/etc/group";

/// A bound API socket, not yet served: the listener and the file it owns.
///
/// Connections made now wait in the kernel's backlog until [`super::serve`] accepts them.
/// Dropping it (or the server stopping) removes the socket file, unless another process replaced
/// the file meanwhile.
#[derive(Debug)]
pub struct ApiListener {
    pub(super) listener: UnixListener,
    pub(super) socket_file: SocketFile,
}

impl ApiListener {
    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.socket_file.path
    }
}

/// Binds the API socket at `path` with the API's access rules.
///
/// Creates the parent directory if missing (`0755`), replaces a stale socket file nobody answers
/// on, binds, then sets mode `0660` and group `wgmesh` (if the group exists). On any failure after
/// the bind the file is removed again.
///
/// # Errors
///
/// [`ApiError::AlreadyServing`] when a live daemon answers on `path`,
/// [`ApiError::NotASocket`] when a non-socket file is in the way, and the I/O failures of each
/// step; every message names `path`.
pub async fn bind(path: &Path) -> Result<ApiListener, ApiError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::system::fs::ensure_private_dir(dir, DIR_MODE).map_err(|source| {
            ApiError::CreateDir {
                path: path.to_owned(),
                source,
            }
        })?;
    }
    remove_stale(path).await?;
    let listener = listen(path).map_err(|source| ApiError::Bind {
        path: path.to_owned(),
        source,
    })?;
    // From here on a failure removes the file again (the guard drops).
    let socket_file = SocketFile::new(path).map_err(|source| ApiError::Bind {
        path: path.to_owned(),
        source,
    })?;
    restrict_access(path)?;
    tracing::debug!(socket = %path.display(), "API socket bound");
    Ok(ApiListener {
        listener,
        socket_file,
    })
}

/// Removes a socket file at `path` that nobody answers on; fails if someone does.
async fn remove_stale(path: &Path) -> Result<(), ApiError> {
    let stale_err = |source| ApiError::Stale {
        path: path.to_owned(),
        source,
    };
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(stale_err(err)),
    };
    if !meta.file_type().is_socket() {
        return Err(ApiError::NotASocket {
            path: path.to_owned(),
        });
    }
    match UnixStream::connect(path).await {
        // WouldBlock: a full accept backlog, i.e. a live but busy daemon.
        Ok(_) => Err(ApiError::AlreadyServing {
            path: path.to_owned(),
        }),
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => Err(ApiError::AlreadyServing {
            path: path.to_owned(),
        }),
        Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(socket = %path.display(), "removing stale API socket");
            match std::fs::remove_file(path) {
                Ok(()) => Ok(()),
                Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(err) => Err(stale_err(err)),
            }
        }
        Err(err) => Err(stale_err(err)),
    }
}

/// Sets mode `0660` and, when the group exists, group `wgmesh` on the socket.
fn restrict_access(path: &Path) -> Result<(), ApiError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE)).map_err(
        |source| ApiError::Permissions {
            what: "mode 0660",
            path: path.to_owned(),
            source,
        },
    )?;
    let Some(gid) = api_group_gid() else {
        tracing::debug!(
            group = API_GROUP,
            "group not found; API socket stays root-only"
        );
        return Ok(());
    };
    std::os::unix::fs::chown(path, None, Some(gid)).map_err(|source| ApiError::Permissions {
        what: "group wgmesh",
        path: path.to_owned(),
        source,
    })
}

/// The gid of [`API_GROUP`] from [`GROUP_FILE`], if both exist.
fn api_group_gid() -> Option<u32> {
    let contents = std::fs::read_to_string(GROUP_FILE).ok()?;
    gid_of(&contents, API_GROUP)
}

/// Looks up group `name` in the contents of an `/etc/group` file (`name:password:gid:members`).
fn gid_of(group_file: &str, name: &str) -> Option<u32> {
    group_file.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        fields.nth(1)?.trim().parse().ok()
    })
}

/// The socket file this process bound; removed on drop unless someone replaced it meanwhile.
#[derive(Debug)]
pub(super) struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    fn new(path: &Path) -> io::Result<Self> {
        let meta = std::fs::symlink_metadata(path)?;
        Ok(Self {
            path: path.to_owned(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.dev() == self.dev && m.ino() == self.ino);
        if !ours {
            return;
        }
        if let Err(err) = std::fs::remove_file(&self.path) {
            tracing::warn!(socket = %self.path.display(), error = %err, "cannot remove API socket");
        }
    }
}

/// Connections the kernel queues for us before `accept`. The accept loop never stops accepting
/// (a full share or cap evicts an idle connection instead), so the queue only has to absorb a
/// burst; a short one keeps a client from waiting behind thousands of queued flood connections
/// (measured: ~75 ms behind the default 4096, under 7 ms behind 128). A client that finds it
/// full gets `EAGAIN` and retries (`wgmeshctl` does).
const LISTEN_BACKLOG: i32 = 128;

/// Binds a listening unix socket at `path` with [`LISTEN_BACKLOG`].
fn listen(path: &Path) -> io::Result<UnixListener> {
    use socket2::{Domain, SockAddr, Socket, Type};
    let socket = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None)?;
    socket.bind(&SockAddr::unix(path)?)?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    UnixListener::from_std(std::os::unix::net::UnixListener::from(
        std::os::fd::OwnedFd::from(socket),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_lookup_reads_the_gid_field() {
        let file = "root:x:0:\nwgmeshers:x:5:\nwgmesh:x:998:alice,bob\n";
        assert_eq!(gid_of(file, "wgmesh"), Some(998));
        assert_eq!(gid_of(file, "root"), Some(0));
        assert_eq!(gid_of(file, "wg"), None);
        assert_eq!(gid_of("wgmesh:x:notanumber:\n", "wgmesh"), None);
        assert_eq!(gid_of("wgmesh\n", "wgmesh"), None);
        assert_eq!(gid_of("", "wgmesh"), None);
    }

    #[tokio::test]
    async fn a_regular_file_in_the_way_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        std::fs::write(&path, b"not a socket").unwrap();
        let err = remove_stale(&path).await.unwrap_err();
        assert!(matches!(err, ApiError::NotASocket { .. }), "{err}");
        assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
        assert!(path.exists());
    }

    #[tokio::test]
    async fn socket_gets_mode_0660_and_missing_parents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/wgmesh/api.sock");
        let listener = bind(&path).await.unwrap();
        assert_eq!(listener.path(), path);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, SOCKET_MODE);
        let parent = std::fs::metadata(path.parent().unwrap()).unwrap();
        assert_eq!(parent.permissions().mode() & 0o777, DIR_MODE);
        drop(listener);
        assert!(!path.exists());
    }
}
