//! The API socket's life: replace a stale file, bind, restrict access, remove on exit.
//!
//! Access is decided by the file: mode `0660`, owner the daemon (root), group the socket group
//! ([`SocketGroup`]: `wgmesh` when that group exists, or the one `--socket-group` names). The
//! directory the daemon creates for the socket gets mode `0750` and the same group, so members
//! can reach the socket and nobody else can; an existing directory is left as the operator made
//! it (unless it is plainly the socket's own: owned by us and holding nothing else), with a
//! warning when the group cannot reach the socket through it. The same group decides who may
//! write through the API ([`WritePolicy`]).
//!
//! A socket left by a crashed daemon is replaced; one a live daemon answers on is not, so a
//! second daemon fails loudly instead of stealing the first one's clients. Binding is separate
//! from serving ([`super::serve`]) so the daemon can claim its socket before it touches any
//! device, and fail early when another daemon owns it.

use std::io;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

use super::ApiError;
use super::auth::WritePolicy;
use crate::system::socket_file::{self, NotCleared};

/// Permission bits of the socket: owner and group may connect, nobody else.
const SOCKET_MODE: u32 = 0o660;
/// Permission bits of the socket's directory when the daemon creates it: the group may reach
/// the socket, nobody else.
const DIR_MODE: u32 = 0o750;
/// Permission bits of missing directories above the socket's own.
const PARENT_MODE: u32 = 0o755;
/// Group whose members may use the API without being root, unless `--socket-group` says
/// otherwise.
pub const DEFAULT_SOCKET_GROUP: &str = "wgmesh";
/// Where groups are looked up; no NSS, the daemon only needs a local system group.
const GROUP_FILE: &str = "/etc/group";

/// The group of the API socket: its members may connect and write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SocketGroup {
    /// [`DEFAULT_SOCKET_GROUP`] when it exists; otherwise none, and the API is root-only.
    #[default]
    Default,
    /// This group, by name (in `/etc/group`) or number; it must exist.
    Named(String),
}

/// A bound API socket, not yet served: the listener and the file it owns.
///
/// Connections made now wait in the kernel's backlog until [`super::serve`] accepts them.
/// Dropping it (or the server stopping) removes the socket file, unless another process replaced
/// the file meanwhile.
#[derive(Debug)]
pub struct ApiListener {
    pub(super) listener: UnixListener,
    pub(super) socket_file: SocketFile,
    pub(super) policy: WritePolicy,
}

impl ApiListener {
    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.socket_file.path
    }

    /// Who may write through this socket: root and the members of its group.
    pub fn write_policy(&self) -> &WritePolicy {
        &self.policy
    }
}

/// Binds the API socket at `path` with the API's access rules and the default socket group.
///
/// See [`bind_with_group`].
///
/// # Errors
///
/// As [`bind_with_group`].
pub async fn bind(path: &Path) -> Result<ApiListener, ApiError> {
    bind_with_group(path, &SocketGroup::Default).await
}

/// Binds the API socket at `path` with the API's access rules, for socket group `group`.
///
/// Looks the group up first, creates the socket's directory if missing (`0750`, the socket
/// group; directories above it `0755`), replaces a stale socket file nobody answers on, binds,
/// then sets mode `0660` and the group on the socket. On any failure after the bind the file is
/// removed again.
///
/// # Errors
///
/// [`ApiError::UnknownGroup`] when a named group does not exist,
/// [`ApiError::AlreadyServing`] when a live daemon answers on `path`,
/// [`ApiError::NotASocket`] when a non-socket file is in the way, and the I/O failures of each
/// step; every message names `path`.
pub async fn bind_with_group(path: &Path, group: &SocketGroup) -> Result<ApiListener, ApiError> {
    let policy = match resolve_group(group, path)? {
        Some((gid, name)) => WritePolicy::root_and_group(gid, name),
        None => WritePolicy::root_only(),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        prepare_dir(dir, path, policy.group())?;
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
    restrict_access(path, policy.group())?;
    tracing::debug!(socket = %path.display(), gid = ?policy.group(), "API socket bound");
    Ok(ApiListener {
        listener,
        socket_file,
        policy,
    })
}

/// The gid and name of the socket group, `None` when the default group does not exist.
fn resolve_group(group: &SocketGroup, path: &Path) -> Result<Option<(u32, String)>, ApiError> {
    let contents = std::fs::read_to_string(GROUP_FILE).unwrap_or_default();
    match group {
        SocketGroup::Default => {
            let found = gid_of(&contents, DEFAULT_SOCKET_GROUP);
            if found.is_none() {
                tracing::debug!(
                    group = DEFAULT_SOCKET_GROUP,
                    "group not found; the API socket stays root-only"
                );
            }
            Ok(found.map(|gid| (gid, DEFAULT_SOCKET_GROUP.to_owned())))
        }
        SocketGroup::Named(name) => {
            if let Some(gid) = gid_of(&contents, name) {
                return Ok(Some((gid, name.clone())));
            }
            match name.parse::<u32>() {
                // A number names a gid, with or without an entry in the group file.
                Ok(gid) => Ok(Some((
                    gid,
                    name_of(&contents, gid).unwrap_or(name).to_owned(),
                ))),
                Err(_) => Err(ApiError::UnknownGroup {
                    group: name.clone(),
                    path: path.to_owned(),
                }),
            }
        }
    }
}

/// Makes sure the socket's directory exists and lets group `gid` (if any) reach the socket.
///
/// A directory created here gets [`DIR_MODE`] and the group; so does an existing one that is
/// plainly the socket's own (owned by us, holding nothing but the socket), such as the one an
/// earlier run created, perhaps with another group. Any other existing directory is the
/// operator's: left alone, with a warning when the group cannot pass it.
fn prepare_dir(dir: &Path, socket: &Path, gid: Option<u32>) -> Result<(), ApiError> {
    let create_err = |source| ApiError::CreateDir {
        path: socket.to_owned(),
        source,
    };
    let fs_err = |op: &'static str| {
        move |source| {
            create_err(crate::system::fs::FsError {
                op,
                path: dir.to_owned(),
                source,
            })
        }
    };
    let ours = match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => {
            return Err(fs_err("use as directory")(io::Error::new(
                io::ErrorKind::NotADirectory,
                "not a directory",
            )));
        }
        Ok(meta) => meta.uid() == effective_uid() && holds_only(dir, socket),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent().filter(|d| !d.as_os_str().is_empty()) {
                crate::system::fs::ensure_private_dir(parent, PARENT_MODE).map_err(create_err)?;
            }
            match std::fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
                Ok(()) => true,
                // Created by someone else meanwhile: theirs, then.
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => false,
                Err(err) => return Err(fs_err("create directory")(err)),
            }
        }
        Err(err) => return Err(fs_err("inspect")(err)),
    };
    if ours {
        std::os::unix::fs::chown(dir, None, Some(gid.unwrap_or_else(effective_gid)))
            .map_err(fs_err("set the group of"))?;
        // Explicitly: the creation mode went through the umask.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))
            .map_err(fs_err("set the mode of"))?;
    } else if let Some(gid) = gid {
        warn_if_unreachable(dir, gid);
    }
    Ok(())
}

/// Whether `dir` holds nothing but (perhaps) the file at `socket`.
fn holds_only(dir: &Path, socket: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    let name = socket.file_name();
    entries
        .into_iter()
        .all(|e| e.is_ok_and(|e| Some(e.file_name().as_os_str()) == name))
}

/// Warns when members of group `gid` cannot pass directory `dir` to reach the socket.
fn warn_if_unreachable(dir: &Path, gid: u32) {
    let Ok(meta) = std::fs::metadata(dir) else {
        return;
    };
    let mode = meta.permissions().mode();
    let passable = mode & 0o001 != 0 || (meta.gid() == gid && mode & 0o010 != 0);
    if !passable {
        tracing::warn!(
            dir = %dir.display(),
            mode = format!("{:04o}", mode & 0o7777),
            dir_gid = meta.gid(),
            gid,
            "members of the API socket's group cannot pass the socket's directory; give it that group with mode 0750"
        );
    }
}

fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn effective_gid() -> u32 {
    // SAFETY: getegid has no preconditions and cannot fail.
    unsafe { libc::getegid() }
}

/// Removes a socket file at `path` that nobody answers on; fails if someone does.
async fn remove_stale(path: &Path) -> Result<(), ApiError> {
    let path_buf = path.to_owned();
    socket_file::remove_stale(path, "API")
        .await
        .map_err(|e| match e {
            NotCleared::AlreadyServing => ApiError::AlreadyServing { path: path_buf },
            NotCleared::NotASocket => ApiError::NotASocket { path: path_buf },
            NotCleared::Io(source) => ApiError::Stale {
                path: path_buf,
                source,
            },
        })
}

/// Sets mode `0660` and, when there is one, group `gid` on the socket.
fn restrict_access(path: &Path, gid: Option<u32>) -> Result<(), ApiError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE)).map_err(
        |source| ApiError::Permissions {
            what: "mode 0660",
            path: path.to_owned(),
            source,
        },
    )?;
    let Some(gid) = gid else {
        return Ok(());
    };
    std::os::unix::fs::chown(path, None, Some(gid)).map_err(|source| ApiError::Permissions {
        what: "the group",
        path: path.to_owned(),
        source,
    })
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

/// The name of group `gid` in the contents of an `/etc/group` file.
fn name_of(group_file: &str, gid: u32) -> Option<&str> {
    group_file.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        (fields.nth(1)?.trim().parse::<u32>().ok()? == gid).then_some(name)
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
        assert_eq!(name_of(file, 998), Some("wgmesh"));
        assert_eq!(name_of(file, 7), None);
    }

    #[test]
    fn a_named_group_must_exist_and_a_number_is_a_gid() {
        let path = Path::new("/run/x.sock");
        let err =
            resolve_group(&SocketGroup::Named("no-such-group-here".into()), path).unwrap_err();
        assert!(matches!(err, ApiError::UnknownGroup { .. }), "{err}");
        assert!(err.to_string().contains("no-such-group-here"), "{err}");
        assert_eq!(
            resolve_group(&SocketGroup::Named("4242".into()), path).unwrap(),
            Some((4242, "4242".to_owned()))
        );
        assert_eq!(
            resolve_group(&SocketGroup::Named("0".into()), path).unwrap(),
            Some((0, "root".to_owned()))
        );
        assert_eq!(
            resolve_group(&SocketGroup::Named("root".into()), path).unwrap(),
            Some((0, "root".to_owned()))
        );
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
        let above = std::fs::metadata(dir.path().join("run")).unwrap();
        assert_eq!(above.permissions().mode() & 0o777, PARENT_MODE);
        drop(listener);
        assert!(!path.exists());
    }

    /// A group of the system other than root's, to give the socket.
    fn some_group() -> Option<(u32, String)> {
        let file = std::fs::read_to_string(GROUP_FILE).ok()?;
        file.lines().find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let gid: u32 = fields.nth(1)?.parse().ok()?;
            (gid != 0).then(|| (gid, name.to_owned()))
        })
    }

    #[tokio::test]
    async fn socket_and_its_new_directory_get_the_named_group() {
        if effective_uid() != 0 {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "needs root under CI"
            );
            eprintln!("SKIPPED: needs root to give files another group");
            return;
        }
        let Some((gid, name)) = some_group() else {
            panic!("no group besides root in {GROUP_FILE}");
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wgmesh/api.sock");
        let listener = bind_with_group(&path, &SocketGroup::Named(name.clone()))
            .await
            .unwrap();
        assert_eq!(
            listener.write_policy(),
            &WritePolicy::root_and_group(gid, name)
        );
        let socket = std::fs::metadata(&path).unwrap();
        assert_eq!(
            (socket.gid(), socket.permissions().mode() & 0o777),
            (gid, SOCKET_MODE)
        );
        let parent = std::fs::metadata(path.parent().unwrap()).unwrap();
        assert_eq!(
            (parent.gid(), parent.permissions().mode() & 0o777),
            (gid, DIR_MODE)
        );
        drop(listener);

        // The next run (socket gone, directory left) with the default group: the directory
        // holds nothing else, so it is the socket's own and follows.
        let listener = bind(&path).await.unwrap();
        let parent = std::fs::metadata(path.parent().unwrap()).unwrap();
        let want = listener
            .write_policy()
            .group()
            .unwrap_or_else(effective_gid);
        assert_eq!(parent.gid(), want);
        drop(listener);

        // A directory that holds other files is the operator's: left alone.
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o711)).unwrap();
        std::fs::write(shared.join("other"), b"").unwrap();
        let listener = bind_with_group(
            &shared.join("api.sock"),
            &SocketGroup::Named(gid.to_string()),
        )
        .await
        .unwrap();
        let meta = std::fs::metadata(&shared).unwrap();
        assert_eq!((meta.gid(), meta.permissions().mode() & 0o777), (0, 0o711));
        drop(listener);
    }
}
