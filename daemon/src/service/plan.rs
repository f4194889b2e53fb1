//! What `install-service` and `uninstall-service` do to the file system, decided from plain
//! values: the entries install owns ([`install_entries`]), and the steps that bring what is on
//! disk ([`Current`]) to them ([`install_steps`], [`uninstall_steps`]). The shell in
//! `system::service` reads the disk and carries the steps out; these functions never touch it.

use std::fmt;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// The unit file, relative to the root.
pub const UNIT_FILE: &str = "etc/systemd/system/wgmesh.service";
/// The directory of the secret, relative to the root.
pub const CONFIG_DIR: &str = "etc/wgmesh";
/// The secret, relative to the root.
pub const SECRET_FILE: &str = "etc/wgmesh/secret";
/// Go wgmesh's secret file, relative to the root (left alone; the unit no longer reads it).
pub const GO_SECRET_ENV: &str = "etc/wgmesh/secret.env";
/// The state directory, relative to the root (never removed).
pub const STATE_DIR: &str = "var/lib/wgmesh";
/// Mode of the unit file.
pub const UNIT_MODE: u32 = 0o644;
/// Mode of `/etc/wgmesh`.
pub const CONFIG_DIR_MODE: u32 = 0o700;
/// Mode of the secret.
pub const SECRET_MODE: u32 = 0o600;
/// Mode of parent directories install creates (`/etc/systemd/system` in a fresh root).
pub const PARENT_MODE: u32 = 0o755;

/// Something install owns.
#[derive(Clone, PartialEq, Eq)]
pub enum Entry {
    /// A directory with its mode.
    Dir {
        /// Where.
        path: PathBuf,
        /// Permission bits.
        mode: u32,
    },
    /// A file with its mode and contents.
    File {
        /// Where.
        path: PathBuf,
        /// Permission bits.
        mode: u32,
        /// Contents (zeroed on drop: it may be the secret).
        contents: Zeroizing<Vec<u8>>,
        /// Whether the contents are the secret (never printed).
        secret: bool,
    },
}

impl Entry {
    /// Its path.
    pub fn path(&self) -> &Path {
        match self {
            Self::Dir { path, .. } | Self::File { path, .. } => path,
        }
    }
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dir { path, mode } => write!(f, "Dir({}, {mode:04o})", path.display()),
            Self::File {
                path,
                mode,
                contents,
                secret,
            } => write!(
                f,
                "File({}, {mode:04o}, {})",
                path.display(),
                describe(contents, *secret)
            ),
        }
    }
}

fn describe(contents: &[u8], secret: bool) -> String {
    if secret {
        format!("<secret, {} bytes>", contents.len())
    } else {
        format!("{} bytes", contents.len())
    }
}

/// `relative` under `root`.
pub fn under(root: &Path, relative: &str) -> PathBuf {
    root.join(relative)
}

/// What install owns under `root`: `/etc/wgmesh` (0700), `/etc/wgmesh/secret` (0600: `secret`
/// and a newline), `/etc/systemd/system/wgmesh.service` (0644: `unit`), in creation order.
pub fn install_entries(root: &Path, unit: &str, secret: &str) -> Vec<Entry> {
    let mut secret_bytes = Zeroizing::new(Vec::with_capacity(secret.len() + 1));
    secret_bytes.extend_from_slice(secret.as_bytes());
    secret_bytes.push(b'\n');
    vec![
        Entry::Dir {
            path: under(root, CONFIG_DIR),
            mode: CONFIG_DIR_MODE,
        },
        Entry::File {
            path: under(root, SECRET_FILE),
            mode: SECRET_MODE,
            contents: secret_bytes,
            secret: true,
        },
        Entry::File {
            path: under(root, UNIT_FILE),
            mode: UNIT_MODE,
            contents: Zeroizing::new(unit.as_bytes().to_vec()),
            secret: false,
        },
    ]
}

/// What is at a path now.
#[derive(Clone, PartialEq, Eq)]
pub enum Current {
    /// Nothing.
    Missing,
    /// A directory with these permission bits.
    Dir {
        /// Permission bits.
        mode: u32,
    },
    /// A regular file.
    File {
        /// Permission bits.
        mode: u32,
        /// Contents.
        contents: Zeroizing<Vec<u8>>,
    },
    /// Something else (a symlink, a socket, …).
    Other,
}

impl fmt::Debug for Current {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => f.write_str("Missing"),
            Self::Dir { mode } => write!(f, "Dir({mode:04o})"),
            Self::File { mode, contents } => {
                write!(f, "File({mode:04o}, {} bytes)", contents.len())
            }
            Self::Other => f.write_str("Other"),
        }
    }
}

/// One thing to do (or not).
#[derive(Clone, PartialEq, Eq)]
pub enum Step {
    /// Create a directory (and missing parents with [`PARENT_MODE`]).
    CreateDir {
        /// Where.
        path: PathBuf,
        /// Permission bits.
        mode: u32,
    },
    /// Change a directory's or file's permission bits.
    SetMode {
        /// Where.
        path: PathBuf,
        /// From.
        from: u32,
        /// To.
        mode: u32,
    },
    /// Write a file atomically (creating missing parents with [`PARENT_MODE`]).
    Write {
        /// Where.
        path: PathBuf,
        /// Permission bits.
        mode: u32,
        /// Contents.
        contents: Zeroizing<Vec<u8>>,
        /// Whether the contents are the secret (never printed).
        secret: bool,
        /// Whether a file was there before.
        replaces: bool,
    },
    /// Nothing to do.
    Keep {
        /// Where.
        path: PathBuf,
    },
    /// Remove a file.
    Remove {
        /// Where.
        path: PathBuf,
    },
    /// Remove a directory if it is empty by then.
    RemoveDirIfEmpty {
        /// Where.
        path: PathBuf,
    },
    /// Refuse: something that is not ours is in the way.
    Conflict {
        /// Where.
        path: PathBuf,
        /// What is there.
        what: &'static str,
    },
}

impl Step {
    /// Whether carrying it out changes anything.
    pub fn changes(&self) -> bool {
        !matches!(self, Self::Keep { .. })
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CreateDir { path, mode } => {
                write!(f, "create directory {} ({mode:04o})", path.display())
            }
            Self::SetMode { path, from, mode } => {
                write!(f, "chmod {} ({from:04o} -> {mode:04o})", path.display())
            }
            Self::Write {
                path,
                mode,
                contents,
                secret,
                replaces,
            } => write!(
                f,
                "{} {} ({mode:04o}, {})",
                if *replaces { "replace" } else { "write" },
                path.display(),
                describe(contents, *secret)
            ),
            Self::Keep { path } => write!(f, "unchanged {}", path.display()),
            Self::Remove { path } => write!(f, "remove {}", path.display()),
            Self::RemoveDirIfEmpty { path } => {
                write!(f, "remove directory {} (if empty)", path.display())
            }
            Self::Conflict { path, what } => {
                write!(f, "cannot use {}: it is {what}", path.display())
            }
        }
    }
}

impl fmt::Debug for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The steps that make each of `entries` true, given what is at each path now (`current[i]`
/// for `entries[i]`; missing items count as [`Current::Missing`]).
pub fn install_steps(entries: &[Entry], current: &[Current]) -> Vec<Step> {
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let now = current.get(i).unwrap_or(&Current::Missing);
            let path = entry.path().to_owned();
            match (entry, now) {
                (Entry::Dir { mode, .. }, Current::Missing) => {
                    Step::CreateDir { path, mode: *mode }
                }
                (Entry::Dir { mode, .. }, Current::Dir { mode: have }) if have == mode => {
                    Step::Keep { path }
                }
                (Entry::Dir { mode, .. }, Current::Dir { mode: have }) => Step::SetMode {
                    path,
                    from: *have,
                    mode: *mode,
                },
                (Entry::Dir { .. }, Current::File { .. } | Current::Other) => Step::Conflict {
                    path,
                    what: "not a directory",
                },
                (
                    Entry::File {
                        mode,
                        contents,
                        secret,
                        ..
                    },
                    now,
                ) => match now {
                    Current::File {
                        mode: have,
                        contents: there,
                    } if have == mode && there == contents => Step::Keep { path },
                    Current::Missing | Current::File { .. } => Step::Write {
                        path,
                        mode: *mode,
                        contents: contents.clone(),
                        secret: *secret,
                        replaces: matches!(now, Current::File { .. }),
                    },
                    Current::Dir { .. } => Step::Conflict {
                        path,
                        what: "a directory",
                    },
                    Current::Other => Step::Conflict {
                        path,
                        what: "not a regular file",
                    },
                },
            }
        })
        .collect()
}

/// The steps that undo install under `root`, given what is at the unit file and the secret now:
/// remove those two files, then `/etc/wgmesh` if it is empty. The state directory is kept.
pub fn uninstall_steps(root: &Path, unit: &Current, secret: &Current) -> Vec<Step> {
    let mut steps = Vec::new();
    for (rel, now) in [(UNIT_FILE, unit), (SECRET_FILE, secret)] {
        let path = under(root, rel);
        match now {
            Current::Missing => {}
            Current::File { .. } | Current::Other => steps.push(Step::Remove { path }),
            Current::Dir { .. } => steps.push(Step::Conflict {
                path,
                what: "a directory",
            }),
        }
    }
    steps.push(Step::RemoveDirIfEmpty {
        path: under(root, CONFIG_DIR),
    });
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(mode: u32, contents: &[u8]) -> Current {
        Current::File {
            mode,
            contents: Zeroizing::new(contents.to_vec()),
        }
    }

    #[test]
    fn entries_are_the_three_owned_paths_with_modes() {
        let e = install_entries(Path::new("/r"), "[Unit]\n", "s3cret \"x\" $y");
        let got: Vec<String> = e.iter().map(|e| format!("{e:?}")).collect();
        assert_eq!(
            got,
            [
                "Dir(/r/etc/wgmesh, 0700)",
                "File(/r/etc/wgmesh/secret, 0600, <secret, 14 bytes>)",
                "File(/r/etc/systemd/system/wgmesh.service, 0644, 7 bytes)",
            ]
        );
        let Entry::File { contents, .. } = &e[1] else {
            panic!()
        };
        assert_eq!(&contents[..], b"s3cret \"x\" $y\n");
    }

    #[test]
    fn install_steps_table() {
        let root = Path::new("/r");
        let entries = install_entries(root, "unit\n", "secret-0123456789");
        let same = [
            Current::Dir { mode: 0o700 },
            file(0o600, b"secret-0123456789\n"),
            file(0o644, b"unit\n"),
        ];
        let cases: Vec<(&str, Vec<Current>, Vec<&str>)> = vec![
            (
                "fresh",
                vec![],
                vec![
                    "create directory /r/etc/wgmesh (0700)",
                    "write /r/etc/wgmesh/secret (0600, <secret, 18 bytes>)",
                    "write /r/etc/systemd/system/wgmesh.service (0644, 5 bytes)",
                ],
            ),
            (
                "same again",
                same.to_vec(),
                vec![
                    "unchanged /r/etc/wgmesh",
                    "unchanged /r/etc/wgmesh/secret",
                    "unchanged /r/etc/systemd/system/wgmesh.service",
                ],
            ),
            (
                "changed unit, loose dir, loose secret",
                vec![
                    Current::Dir { mode: 0o755 },
                    file(0o644, b"secret-0123456789\n"),
                    file(0o644, b"old unit\n"),
                ],
                vec![
                    "chmod /r/etc/wgmesh (0755 -> 0700)",
                    "replace /r/etc/wgmesh/secret (0600, <secret, 18 bytes>)",
                    "replace /r/etc/systemd/system/wgmesh.service (0644, 5 bytes)",
                ],
            ),
            (
                "things in the way",
                vec![
                    file(0o600, b""),
                    Current::Dir { mode: 0o700 },
                    Current::Other,
                ],
                vec![
                    "cannot use /r/etc/wgmesh: it is not a directory",
                    "cannot use /r/etc/wgmesh/secret: it is a directory",
                    "cannot use /r/etc/systemd/system/wgmesh.service: it is not a regular file",
                ],
            ),
        ];
        for (name, current, want) in cases {
            let steps = install_steps(&entries, &current);
            let got: Vec<String> = steps.iter().map(ToString::to_string).collect();
            assert_eq!(got, want, "{name}");
            let text = format!("{steps:?}");
            assert!(!text.contains("secret-0123456789"), "{name}: {text}");
        }
        assert!(!install_steps(&entries, &same).iter().any(Step::changes));
    }

    #[test]
    fn uninstall_steps_table() {
        let root = Path::new("/r");
        let cases: &[(&str, Current, Current, &[&str])] = &[
            (
                "installed",
                file(0o644, b"u"),
                file(0o600, b"s"),
                &[
                    "remove /r/etc/systemd/system/wgmesh.service",
                    "remove /r/etc/wgmesh/secret",
                    "remove directory /r/etc/wgmesh (if empty)",
                ],
            ),
            (
                "nothing there",
                Current::Missing,
                Current::Missing,
                &["remove directory /r/etc/wgmesh (if empty)"],
            ),
            (
                "a directory at the unit's name",
                Current::Dir { mode: 0o755 },
                Current::Missing,
                &[
                    "cannot use /r/etc/systemd/system/wgmesh.service: it is a directory",
                    "remove directory /r/etc/wgmesh (if empty)",
                ],
            ),
        ];
        for (name, unit, secret, want) in cases {
            let got: Vec<String> = uninstall_steps(root, unit, secret)
                .iter()
                .map(ToString::to_string)
                .collect();
            assert_eq!(got, *want, "{name}");
        }
    }
}
