//! The UAPI socket file `<dir>/<iface>.sock` (`/run/wireguard/wg0.sock` by default): where `wg`
//! and other WireGuard tools look for a userspace device.
//!
//! - The directory is created with mode `0700` when missing; an existing one keeps its mode (it
//!   may be shared with other userspace WireGuard implementations).
//! - A socket file nobody answers on (left by a crash) is replaced; one a live process answers on
//!   is never taken over ([`UapiSocketError::AlreadyServing`]); a file that is not a socket is
//!   left alone ([`UapiSocketError::NotASocket`]).
//! - The socket gets mode `0600`. The file mode is not the gate, though: every connection's
//!   peer credentials (`SO_PEERCRED`) come with it from [`UapiListener::accept`], and the server
//!   refuses callers other than uid 0 (the window between bind and chmod grants nothing).
//! - The file is removed when the [`UapiListener`] is dropped, unless another process replaced it
//!   meanwhile.

use std::io;
use std::os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, MetadataExt as _, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::{UnixListener, UnixStream};

use super::socket_file::{self, NotCleared};

/// Where WireGuard tools look for userspace devices' sockets.
pub const DEFAULT_UAPI_DIR: &str = "/run/wireguard";
/// Mode of a socket directory created here.
const DIR_MODE: u32 = 0o700;
/// Mode of the socket file: root only.
const SOCKET_MODE: u32 = 0o600;

/// The socket path of interface `iface` in `dir`.
pub fn socket_path(dir: &Path, iface: &str) -> PathBuf {
    dir.join(format!("{iface}.sock"))
}

/// Why the UAPI socket could not be set up. Every message names the path.
#[derive(Debug, thiserror::Error)]
pub enum UapiSocketError {
    /// The directory could not be created or is not a directory.
    #[error("cannot prepare UAPI socket directory {}: {source}", path.display())]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A live process answers on the socket: another WireGuard daemon owns this interface name.
    #[error(
        "another process serves the UAPI socket {}; not taking it over (stop it, or use --uapi-dir / --no-uapi)",
        path.display()
    )]
    AlreadyServing {
        /// The socket path.
        path: PathBuf,
    },
    /// Something other than a socket is in the way.
    #[error("{} exists and is not a socket; not replacing it", path.display())]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// Checking or removing an old socket file failed.
    #[error("cannot replace the old UAPI socket {}: {source}", path.display())]
    Stale {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Binding or setting the mode failed.
    #[error("cannot bind the UAPI socket {}: {source}", path.display())]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// A bound UAPI socket; the file goes when this is dropped.
#[derive(Debug)]
pub struct UapiListener {
    listener: UnixListener,
    path: PathBuf,
    /// Device and inode of the file we bound, so a drop never removes someone else's.
    id: (u64, u64),
}

impl UapiListener {
    /// Binds `<dir>/<iface>.sock`: creates `dir` (`0700`) if missing, replaces a stale socket
    /// file, binds, sets mode `0600`.
    ///
    /// # Errors
    ///
    /// See [`UapiSocketError`]; on any failure after the bind the file is removed again.
    pub async fn bind(dir: &Path, iface: &str) -> Result<Self, UapiSocketError> {
        prepare_dir(dir)?;
        let path = socket_path(dir, iface);
        remove_stale(&path).await?;
        let bind_err = |source| UapiSocketError::Bind {
            path: path.clone(),
            source,
        };
        let listener = UnixListener::bind(&path).map_err(bind_err)?;
        let meta = std::fs::symlink_metadata(&path).map_err(bind_err)?;
        // From here on a failure drops the listener, which removes the file.
        let bound = Self {
            listener,
            path: path.clone(),
            id: (meta.dev(), meta.ino()),
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(SOCKET_MODE))
            .map_err(bind_err)?;
        Ok(bound)
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for a connection; returns it with the caller's uid (`SO_PEERCRED`), `None` when
    /// the kernel cannot tell (such a caller must be refused).
    ///
    /// # Errors
    ///
    /// When `accept` fails (e.g. out of file descriptors).
    pub async fn accept(&self) -> io::Result<(UnixStream, Option<u32>)> {
        let (stream, _) = self.listener.accept().await?;
        let uid = stream.peer_cred().ok().map(|c| c.uid());
        Ok((stream, uid))
    }
}

impl Drop for UapiListener {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| (m.dev(), m.ino()) == self.id && m.file_type().is_socket());
        if !ours {
            return;
        }
        match std::fs::remove_file(&self.path) {
            Ok(()) => tracing::debug!(socket = %self.path.display(), "UAPI socket removed"),
            Err(e) => {
                tracing::warn!(socket = %self.path.display(), error = %e, "cannot remove the UAPI socket")
            }
        }
    }
}

/// Creates `dir` with [`DIR_MODE`] when missing (its parents with the default mode); leaves an
/// existing directory as it is.
fn prepare_dir(dir: &Path) -> Result<(), UapiSocketError> {
    let err = |source| UapiSocketError::Dir {
        path: dir.to_owned(),
        source,
    };
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(err(io::Error::new(
                io::ErrorKind::NotADirectory,
                "not a directory",
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    match std::fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
        // Explicitly: the creation mode went through the umask.
        Ok(()) => {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE)).map_err(err)
        }
        // Created by someone else meanwhile: theirs, left as it is.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(err(e)),
    }
}

/// Removes a socket file at `path` that nobody answers on; fails if someone does.
async fn remove_stale(path: &Path) -> Result<(), UapiSocketError> {
    let path_buf = path.to_owned();
    socket_file::remove_stale(path, "UAPI")
        .await
        .map_err(|e| match e {
            NotCleared::AlreadyServing => UapiSocketError::AlreadyServing { path: path_buf },
            NotCleared::NotASocket => UapiSocketError::NotASocket { path: path_buf },
            NotCleared::Io(source) => UapiSocketError::Stale {
                path: path_buf,
                source,
            },
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    #[tokio::test]
    async fn creates_a_private_directory_and_a_root_only_socket_removed_on_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run/wireguard");
        let listener = UapiListener::bind(&dir, "wg0").await.unwrap();
        let path = dir.join("wg0.sock");
        assert_eq!(listener.path(), path);
        assert_eq!(mode(&dir), DIR_MODE);
        assert_eq!(mode(&path), SOCKET_MODE);
        let client = UnixStream::connect(&path).await.unwrap();
        let (_, uid) = listener.accept().await.unwrap();
        // SAFETY: geteuid has no preconditions.
        assert_eq!(uid, Some(unsafe { libc::geteuid() }));
        drop(client);
        drop(listener);
        assert!(!path.exists(), "socket file left behind");
        assert!(dir.exists());
    }

    #[tokio::test]
    async fn an_existing_directory_keeps_its_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("shared");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let listener = UapiListener::bind(&dir, "wg7").await.unwrap();
        assert_eq!(mode(&dir), 0o755);
        drop(listener);
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_a_live_one_is_not_taken() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let path = socket_path(dir, "wg0");
        // Stale: bound by a std listener that is gone (the file stays).
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let first = UapiListener::bind(dir, "wg0").await.unwrap();

        let err = UapiListener::bind(dir, "wg0").await.unwrap_err();
        assert!(
            matches!(err, UapiSocketError::AlreadyServing { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("wg0.sock"), "{err}");
        // The live one still works and keeps its file.
        assert!(path.exists());
        let _client = UnixStream::connect(&path).await.unwrap();
        drop(first);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn other_files_are_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let path = socket_path(tmp.path(), "wg0");
        std::fs::write(&path, b"not a socket").unwrap();
        let err = UapiListener::bind(tmp.path(), "wg0").await.unwrap_err();
        assert!(matches!(err, UapiSocketError::NotASocket { .. }), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"not a socket");

        let file_dir = tmp.path().join("file");
        std::fs::write(&file_dir, b"").unwrap();
        let err = UapiListener::bind(&file_dir, "wg0").await.unwrap_err();
        assert!(matches!(err, UapiSocketError::Dir { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_replaced_file_is_not_removed_by_the_old_listener() {
        let tmp = tempfile::tempdir().unwrap();
        let listener = UapiListener::bind(tmp.path(), "wg0").await.unwrap();
        let path = listener.path().to_owned();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"someone else's").unwrap();
        drop(listener);
        assert_eq!(std::fs::read(&path).unwrap(), b"someone else's");
    }
}
