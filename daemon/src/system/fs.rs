//! Files the daemon owns: atomic replacement and private directories.
//!
//! A write goes to a temporary file in the same directory, is fsynced, renamed over the target and
//! the directory is fsynced, so a crash at any instant leaves either the old or the new contents,
//! never a mix. Each path has one writer in the daemon, so the temporary name is fixed
//! (`.<name>.tmp`): a write interrupted by a crash is simply overwritten by the next one.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

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

/// The temporary file used while replacing `path`.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// Replaces `path` with `data` atomically and durably; the file gets permission bits `mode`.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), FsError> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(FsError::new("create", &tmp))?;
        // `mode` only applies at creation; a leftover temp file may have other bits.
        file.set_permissions(Permissions::from_mode(mode))
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

fn sync_parent(path: &Path) -> Result<(), FsError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(FsError::new("sync directory", dir))
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
        assert!(!temp_path(&path).exists());
    }

    #[test]
    fn leftover_temp_file_is_reused_with_the_right_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(temp_path(&path), b"half-written garbage that is longer").unwrap();
        fs::set_permissions(temp_path(&path), Permissions::from_mode(0o644)).unwrap();
        write_atomic(&path, b"ok", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"ok");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
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
        fs::set_permissions(&sub, Permissions::from_mode(0o755)).unwrap();
        assert_eq!(ensure_private_dir(&sub, 0o700).unwrap(), 0o755);
    }
}
