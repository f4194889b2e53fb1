//! Carries out `install-service` / `uninstall-service` steps ([`crate::service::plan`]) on the
//! file system, and runs `systemctl`.

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::Command;

use zeroize::Zeroizing;

use super::fs::{FsError, write_atomic};
use crate::service::plan::{Current, PARENT_MODE, Step};

/// The directory that exists when systemd is the running service manager (`sd_booted(3)`).
pub const SYSTEMD_RUNTIME_DIR: &str = "/run/systemd/system";

fn fs_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> FsError + 'a {
    move |source| FsError {
        op,
        path: path.to_owned(),
        source,
    }
}

/// What is at `path` now (a symlink counts as [`Current::Other`], never followed).
///
/// # Errors
///
/// Any error but "not found" while inspecting or reading it.
pub fn read_current(path: &Path) -> Result<Current, FsError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Current::Missing),
        Err(e) => return Err(fs_err("inspect", path)(e)),
    };
    let mode = meta.permissions().mode() & 0o7777;
    if meta.is_dir() {
        Ok(Current::Dir { mode })
    } else if meta.is_file() {
        let contents = super::fs::read_private(path).map_err(fs_err("read", path))?;
        Ok(Current::File {
            mode,
            contents: Zeroizing::new(contents.to_vec()),
        })
    } else {
        Ok(Current::Other)
    }
}

fn ensure_parent(path: &Path) -> Result<(), FsError> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => DirBuilder::new()
            .recursive(true)
            .mode(PARENT_MODE)
            .create(parent)
            .map_err(fs_err("create directory", parent)),
        _ => Ok(()),
    }
}

/// What carrying out a step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done as planned.
    Done,
    /// Nothing was there (a removal).
    Absent,
    /// A directory to remove was not empty and was kept.
    KeptNotEmpty,
}

/// Carries out `step`. Files are written atomically (temporary file, fsync, rename); modes are set
/// exactly (the umask does not apply).
///
/// # Errors
///
/// The failing operation with its path; a [`Step::Conflict`] is refused.
pub fn apply(step: &Step) -> Result<Outcome, FsError> {
    match step {
        Step::Keep { .. } => Ok(Outcome::Done),
        Step::CreateDir { path, mode } => {
            ensure_parent(path)?;
            DirBuilder::new()
                .mode(*mode)
                .create(path)
                .map_err(fs_err("create directory", path))?;
            fs::set_permissions(path, fs::Permissions::from_mode(*mode))
                .map_err(fs_err("set the mode of", path))?;
            Ok(Outcome::Done)
        }
        Step::SetMode { path, mode, .. } => {
            fs::set_permissions(path, fs::Permissions::from_mode(*mode))
                .map_err(fs_err("set the mode of", path))?;
            Ok(Outcome::Done)
        }
        Step::Write {
            path,
            mode,
            contents,
            ..
        } => {
            ensure_parent(path)?;
            write_atomic(path, contents, *mode)?;
            Ok(Outcome::Done)
        }
        Step::Remove { path } => match fs::remove_file(path) {
            Ok(()) => Ok(Outcome::Done),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Outcome::Absent),
            Err(e) => Err(fs_err("remove", path)(e)),
        },
        Step::RemoveDirIfEmpty { path } => match fs::remove_dir(path) {
            Ok(()) => Ok(Outcome::Done),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Outcome::Absent),
            Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => Ok(Outcome::KeptNotEmpty),
            Err(e) => Err(fs_err("remove directory", path)(e)),
        },
        Step::Conflict { path, what } => Err(FsError {
            op: "use",
            path: path.clone(),
            source: io::Error::new(io::ErrorKind::AlreadyExists, format!("it is {what}")),
        }),
    }
}

/// Whether systemd is the running service manager.
pub fn systemd_running() -> bool {
    Path::new(SYSTEMD_RUNTIME_DIR).is_dir()
}

/// `systemctl` failed.
#[derive(Debug, thiserror::Error)]
#[error("`systemctl {command}` failed: {reason}")]
pub struct SystemctlError {
    /// The arguments.
    pub command: String,
    /// Its stderr, or why it could not run.
    pub reason: String,
}

/// Runs `systemctl ARGS` and waits for it.
///
/// # Errors
///
/// It could not be started or exited non-zero (with its stderr).
pub fn systemctl(args: &[&str]) -> Result<(), SystemctlError> {
    let command = args.join(" ");
    let out = Command::new("systemctl")
        .args(args)
        .output()
        .map_err(|e| SystemctlError {
            command: command.clone(),
            reason: e.to_string(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(SystemctlError {
            command,
            reason: format!(
                "{} ({})",
                String::from_utf8_lossy(&out.stderr).trim(),
                out.status
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::plan::{install_entries, install_steps, uninstall_steps};

    #[test]
    fn steps_applied_then_undone() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let entries = install_entries(root, "[Unit]\n", "a secret with spaces");
        let read = |entries: &[crate::service::Entry]| -> Vec<Current> {
            entries
                .iter()
                .map(|e| read_current(e.path()).unwrap())
                .collect()
        };
        for step in install_steps(&entries, &read(&entries)) {
            assert_eq!(apply(&step).unwrap(), Outcome::Done, "{step}");
        }
        let again = install_steps(&entries, &read(&entries));
        assert!(!again.iter().any(Step::changes), "{again:?}");
        assert_eq!(
            fs::read(root.join("etc/wgmesh/secret")).unwrap(),
            b"a secret with spaces\n"
        );
        let unit = read_current(&root.join(crate::service::plan::UNIT_FILE)).unwrap();
        let secret = read_current(&root.join(crate::service::plan::SECRET_FILE)).unwrap();
        let outcomes: Vec<Outcome> = uninstall_steps(root, &unit, &secret)
            .iter()
            .map(|s| apply(s).unwrap())
            .collect();
        assert_eq!(outcomes, [Outcome::Done; 3]);
        assert!(!root.join("etc/wgmesh").exists());
        assert!(root.join("etc/systemd/system").is_dir());
    }

    #[test]
    fn conflicts_and_non_empty_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("etc/wgmesh");
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("secret.env"), "x").unwrap();
        let step = Step::RemoveDirIfEmpty { path: d.clone() };
        assert_eq!(apply(&step).unwrap(), Outcome::KeptNotEmpty);
        let conflict = Step::Conflict {
            path: d,
            what: "a directory",
        };
        assert!(
            apply(&conflict)
                .unwrap_err()
                .to_string()
                .contains("etc/wgmesh")
        );
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link")).unwrap();
        assert_eq!(
            read_current(&dir.path().join("link")).unwrap(),
            Current::Other
        );
    }
}
