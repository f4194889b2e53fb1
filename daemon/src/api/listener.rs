//! The API socket's life: replace a stale file, bind, restrict access, serve, remove on exit.
//!
//! Access is decided by the file: mode `0660`, owner the daemon (root), group `wgmesh` when that
//! group exists. A socket left by a crashed daemon is replaced; one a live daemon answers on is
//! not, so a second daemon fails loudly instead of stealing the first one's clients.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use super::{ApiError, ApiState, router};

/// Permission bits of the socket: owner and group may connect, nobody else.
const SOCKET_MODE: u32 = 0o660;
/// Permission bits of a socket directory this creates (clients must be able to traverse it).
const DIR_MODE: u32 = 0o755;
/// Group whose members may use the API without being root.
const API_GROUP: &str = "wgmesh";
/// Where [`API_GROUP`] is looked up; no NSS, the daemon only needs a local system group.
const GROUP_FILE: &str = "/etc/group";
/// How long requests in flight may still run after shutdown is asked for. The request timeout does
/// not cover a client that never finishes sending its headers, so this bounds the drain.
pub(super) const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves the API on the unix socket `path` until `shutdown` is cancelled.
///
/// Creates the parent directory if missing (`0755`), replaces a stale socket file nobody answers
/// on, binds, sets mode `0660` and group `wgmesh` (if it exists), then serves; on cancellation it
/// stops accepting, lets requests in flight finish for at most 5 s (`DRAIN_TIMEOUT`) and removes
/// the socket file. Connections still open then (a client that never completes its request) are
/// left to die with the runtime; they no longer hold the socket path.
///
/// # Errors
///
/// [`ApiError::AlreadyServing`] when a live daemon answers on `path`,
/// [`ApiError::NotASocket`] when a non-socket file is in the way, and the I/O failures of each
/// step; every message names `path`.
pub async fn serve(
    listener: ApiListener,
    state: ApiState,
    shutdown: CancellationToken,
) -> Result<(), ApiError> {
    let ApiListener {
        listener,
        socket_file,
    } = listener;
    let path = socket_file.path.clone();
    let path = path.as_path();
    tracing::info!(socket = %path.display(), "control API listening");
    let server = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future();
    let drain_deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(DRAIN_TIMEOUT).await;
    };
    let result = tokio::select! {
        result = server => result,
        () = drain_deadline => {
            tracing::warn!(
                socket = %path.display(),
                drain_secs = DRAIN_TIMEOUT.as_secs(),
                "API connections still open after shutdown; closing the socket anyway"
            );
            Ok(())
        }
    };
    drop(socket_file);
    tracing::info!(socket = %path.display(), "control API stopped");
    result.map_err(|source| ApiError::Serve {
        path: path.to_owned(),
        source,
    })
}

/// The bound API socket, not yet served. Dropping it removes the socket file.
#[derive(Debug)]
pub struct ApiListener {
    listener: UnixListener,
    socket_file: SocketFile,
}

/// Claims `path` for the API: replaces a stale socket file, binds, sets mode and group. Done
/// before anything else at start, so a second daemon fails before it touches a device.
///
/// # Errors
///
/// See [`serve`].
pub async fn bind(path: &Path) -> Result<ApiListener, ApiError> {
    let (listener, socket_file) = bind_socket(path).await?;
    Ok(ApiListener {
        listener,
        socket_file,
    })
}

/// Binds `path` with the API's access rules; the returned guard removes the file when dropped.
async fn bind_socket(path: &Path) -> Result<(UnixListener, SocketFile), ApiError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::system::fs::ensure_private_dir(dir, DIR_MODE).map_err(|source| {
            ApiError::CreateDir {
                path: path.to_owned(),
                source,
            }
        })?;
    }
    remove_stale(path).await?;
    let listener = UnixListener::bind(path).map_err(|source| ApiError::Bind {
        path: path.to_owned(),
        source,
    })?;
    // From here on a failure removes the file again (the guard drops).
    let socket_file = SocketFile::new(path).map_err(|source| ApiError::Bind {
        path: path.to_owned(),
        source,
    })?;
    restrict_access(path)?;
    Ok((listener, socket_file))
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
struct SocketFile {
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
        let (_listener, guard) = bind_socket(&path).await.unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, SOCKET_MODE);
        let parent = std::fs::metadata(path.parent().unwrap()).unwrap();
        assert_eq!(parent.permissions().mode() & 0o777, DIR_MODE);
        drop(guard);
        assert!(!path.exists());
    }
}
