//! Files the daemon owns: atomic replacement, private reads, private directories, lock files.
//!
//! A write goes to a new temporary file in the same directory, is fsynced, renamed over the target
//! and the directory is fsynced, so a crash at any instant leaves either the old or the new
//! contents, never a mix. The temporary file has a unique random name and is created with
//! `O_CREAT|O_EXCL|O_NOFOLLOW`: a file or symlink planted at that name makes the open fail instead
//! of redirecting a private key to wherever the link points. `rename` replaces a planted symlink
//! at the target itself, never what it points to. Reads of private files refuse symlinks too.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read as _, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt as _, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use zeroize::Zeroizing;

/// Temporary files of a crashed write older than this are removed by the next write.
const STALE_TEMP: Duration = Duration::from_secs(600);
/// Attempts at a fresh temporary name before giving up (a collision needs a planted file).
const TEMP_ATTEMPTS: usize = 8;

/// An I/O failure together with the path and the operation that failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot {op} {}: {source}", path.display())]
pub struct FsError {
    /// What we were doing.
    pub op: &'static str,
    /// The file or directory involved.
    pub path: PathBuf,
    /// The OS error.
    #[source]
    pub source: io::Error,
}

impl FsError {
    fn new<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Self + 'a {
        move |source| Self {
            op,
            path: path.to_owned(),
            source,
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Whether `candidate` is a temporary file of a write to `target` (`.<name>.<hex>.tmp`).
fn is_temp_of(candidate: &str, target: &str) -> bool {
    candidate
        .strip_prefix('.')
        .and_then(|c| c.strip_prefix(target))
        .and_then(|c| c.strip_prefix('.'))
        .and_then(|c| c.strip_suffix(".tmp"))
        .is_some_and(|hex| hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A fresh temporary name next to `path`: `.<name>.<16 random hex digits>.tmp`.
fn temp_path(path: &Path) -> Result<PathBuf, FsError> {
    let mut random = [0u8; 8];
    getrandom::getrandom(&mut random).map_err(|e| FsError {
        op: "pick a temporary name for",
        path: path.to_owned(),
        source: io::Error::other(e.to_string()),
    })?;
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    Ok(path.with_file_name(format!(".{}.{hex}.tmp", file_name(path))))
}

/// Removes temporary files of earlier writes to `path` that a crash left behind.
fn remove_stale_temps(path: &Path) {
    let (Some(dir), target) = (path.parent(), file_name(path)) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_temp_of(&name, &target) {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).is_ok_and(|age| age > STALE_TEMP));
        if old {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Creates a new temporary file next to `path`, exclusively and without following symlinks.
fn create_temp(path: &Path, mode: u32) -> Result<(PathBuf, File), FsError> {
    let mut last = None;
    for _ in 0..TEMP_ATTEMPTS {
        let tmp = temp_path(path)?;
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
        {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some((tmp, e)),
            Err(e) => return Err(FsError::new("create", &tmp)(e)),
        }
    }
    let (tmp, e) = last.unwrap_or_else(|| unreachable!("TEMP_ATTEMPTS is not zero"));
    Err(FsError::new("create", &tmp)(e))
}

/// Replaces `path` with `data` atomically and durably; the file gets permission bits `mode`.
///
/// # Errors
///
/// Every failing step, naming the file (the temporary file is removed again).
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), FsError> {
    remove_stale_temps(path);
    let (tmp, mut file) = create_temp(path, mode)?;
    let result = (|| {
        // The umask may have cleared bits of `mode`; set exactly what was asked.
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(FsError::new("set permissions on", &tmp))?;
        file.write_all(data).map_err(FsError::new("write", &tmp))?;
        file.sync_all().map_err(FsError::new("sync", &tmp))?;
        fs::rename(&tmp, path).map_err(FsError::new("replace", path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_parent(path)
}

/// Reads a private file (a key, a cache) without following a symlink at its name. The contents
/// are zeroed when dropped.
///
/// # Errors
///
/// The OS error, unchanged (callers branch on `NotFound`); a symlink gives `ELOOP`, a directory
/// `EISDIR`-like errors.
pub fn read_private(path: &Path) -> io::Result<Zeroizing<Vec<u8>>> {
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    let mut data = Zeroizing::new(Vec::new());
    file.read_to_end(&mut data)?;
    Ok(data)
}

fn sync_parent(path: &Path) -> Result<(), FsError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(FsError::new("sync directory", dir))
}

/// An exclusive lock on a file, held until dropped (`flock`, released by the kernel when the
/// process dies, so a crashed daemon never leaves a stale lock). The file holds the holder's pid.
#[derive(Debug)]
pub struct LockFile {
    path: PathBuf,
    _file: File,
}

/// Why a lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error("{} is locked by another process{}", path.display(), pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Held {
        /// The lock file.
        path: PathBuf,
        /// The pid written by the holder, if readable.
        pid: Option<u32>,
    },
    /// The file could not be opened or locked.
    #[error(transparent)]
    Io(#[from] FsError),
}

impl LockFile {
    /// Takes the lock at `path` (created 0600 if missing) without waiting.
    ///
    /// # Errors
    ///
    /// [`LockError::Held`] when another process has it; [`LockError::Io`] otherwise.
    pub fn acquire(path: &Path) -> Result<Self, LockError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(FsError::new("open lock file", path))?;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut text = String::new();
                let pid = file
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| text.trim().parse().ok());
                return Err(LockError::Held {
                    path: path.to_owned(),
                    pid,
                });
            }
            return Err(FsError::new("lock", path)(err).into());
        }
        file.set_len(0)
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .map_err(FsError::new("write lock file", path))?;
        Ok(Self {
            path: path.to_owned(),
            _file: file,
        })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The owner uid of `path`, for checks that a directory belongs to us.
pub fn owner_uid(path: &Path) -> Result<u32, FsError> {
    fs::metadata(path)
        .map(|m| m.uid())
        .map_err(FsError::new("inspect", path))
}

/// Creates `dir` (and parents) if missing; a directory this creates gets mode `mode`. Returns the
/// permission bits of the directory as it now is, so callers can warn about loose modes.
pub fn ensure_private_dir(dir: &Path, mode: u32) -> Result<u32, FsError> {
    DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(FsError::new("create directory", dir))?;
    let meta = fs::metadata(dir).map_err(FsError::new("inspect", dir))?;
    if !meta.is_dir() {
        return Err(FsError {
            op: "use as directory",
            path: dir.to_owned(),
            source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        });
    }
    Ok(meta.permissions().mode() & 0o7777)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temps(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    }

    #[test]
    fn replaces_contents_and_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"one", 0o600).unwrap();
        write_atomic(&path, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(temps(dir.path()).is_empty());
    }

    #[test]
    fn temp_names_are_unique_and_recognised() {
        let path = Path::new("/x/wg0.json");
        let (a, b) = (temp_path(path).unwrap(), temp_path(path).unwrap());
        assert_ne!(a, b);
        let name = a.file_name().unwrap().to_string_lossy().into_owned();
        assert!(is_temp_of(&name, "wg0.json"), "{name}");
        assert!(!is_temp_of(&name, "wg0-peers.json"));
        assert!(!is_temp_of(".wg0.json.tmp", "wg0.json"));
        assert!(!is_temp_of(".wg0.json.0123456789abcdeg.tmp", "wg0.json"));
    }

    #[test]
    fn planted_symlinks_never_redirect_the_write() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let path = dir.path().join("wg0.json");
        // The old fixed temporary name, and the target itself, both pointing at the victim.
        std::os::unix::fs::symlink(&victim, dir.path().join(".wg0.json.tmp")).unwrap();
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        write_atomic(&path, b"secret", 0o600).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious", "victim untouched");
        assert!(!fs::symlink_metadata(&path).unwrap().is_symlink());
        assert_eq!(fs::read(&path).unwrap(), b"secret");
        // And reading a private file refuses a symlink.
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(read_private(&link).is_err());
        assert_eq!(&*read_private(&path).unwrap(), b"secret");
    }

    #[test]
    fn stale_temps_of_a_crashed_write_are_removed_fresh_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wg0.json");
        let stale = dir.path().join(".wg0.json.00000000000000aa.tmp");
        let fresh = dir.path().join(".wg0.json.00000000000000bb.tmp");
        let other = dir.path().join(".other.json.00000000000000cc.tmp");
        for f in [&stale, &fresh, &other] {
            fs::write(f, b"half").unwrap();
        }
        let old = SystemTime::now() - STALE_TEMP - Duration::from_secs(60);
        File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(old)
            .unwrap();
        File::options()
            .write(true)
            .open(&other)
            .unwrap()
            .set_modified(old)
            .unwrap();
        write_atomic(&path, b"ok", 0o600).unwrap();
        assert!(!stale.exists());
        assert!(fresh.exists(), "another writer may still be using it");
        assert!(other.exists(), "not a temp of this file");
    }

    #[test]
    fn failure_names_the_path_and_leaves_target_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("state.json");
        let err = write_atomic(&path, b"x", 0o600).unwrap_err();
        assert!(err.to_string().contains("missing-dir"), "{err}");
    }

    #[test]
    fn private_dir_is_created_0700() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        assert_eq!(ensure_private_dir(&sub, 0o700).unwrap(), 0o700);
        // Existing directories are left as they are and their mode reported.
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(ensure_private_dir(&sub, 0o700).unwrap(), 0o755);
    }

    #[test]
    fn a_lock_is_exclusive_names_its_holder_and_is_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wg0.lock");
        let first = LockFile::acquire(&path).unwrap();
        // flock locks belong to the open file description: a second open conflicts even in the
        // same process, as a second daemon would.
        let err = LockFile::acquire(&path).unwrap_err();
        match &err {
            LockError::Held { pid, .. } => assert_eq!(*pid, Some(std::process::id())),
            other => panic!("{other}"),
        }
        assert!(err.to_string().contains("wg0.lock"), "{err}");
        drop(first);
        LockFile::acquire(&path).unwrap();
    }
}
