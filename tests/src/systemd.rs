//! A throwaway systemd: the machine's own `/lib/systemd/systemd` booted as PID 1 of fresh PID,
//! mount, network, UTS, IPC and cgroup namespaces, so `wgmesh.service` can be installed, started,
//! reloaded, watchdog-killed and stopped by the real service manager on a machine whose PID 1 is
//! something else (a VM agent, a container init).
//!
//! Nothing of the host changes: `/etc`, `/var` and `/usr` are overlays whose upper layers live in
//! a tmpfs of the namespace, `/run` and `/etc/systemd/system` are fresh tmpfs, the unit directory
//! `/lib/systemd/system` holds only empty stand-ins of the targets a service depends on (so no
//! host unit starts), and the network namespace has only `lo`. The build's multi-call program is
//! bind-mounted at `/usr/local/bin/wgmesh-labnode`, with `wgmeshd` and `wgmeshctl` wrappers next
//! to it (outside `/home` and `/tmp`, which the unit's sandbox hides). Dropping the handle kills
//! PID 1 (and with it every process of the namespace) and removes the cgroups systemd created.
//!
//! On a host where systemd already runs as PID 1 this is not used ([`SystemdNs::boot`] returns
//! `None`): a second systemd would write into the first one's cgroup tree.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::Exe;

/// How long systemd may take to boot in the namespace.
const BOOT: Duration = Duration::from_secs(30);
/// Where cgroup hierarchies are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The multi-call program inside the namespace.
pub const LABNODE: &str = "/usr/local/bin/wgmesh-labnode";
/// `wgmeshd` inside the namespace (a wrapper that execs [`LABNODE`] `wgmeshd`).
pub const WGMESHD: &str = "/usr/local/bin/wgmeshd";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The boot script, run by `sh` as the first process of the new namespaces: `$1` is an empty
/// directory for the namespace's tmpfs, `$2` the multi-call program, `$3` the file systemd's
/// console output goes to.
const BOOT_SCRIPT: &str = r#"set -e
W=$1; LABNODE=$2; CONSOLE=$3
mount --make-rprivate /
mount --make-rshared /
mount -t proc proc /proc
mount -t tmpfs -o mode=0755 tmpfs "$W"
for d in etc var usr; do
  mkdir -p "$W/$d/upper" "$W/$d/work"
  mount -t overlay overlay -o "lowerdir=/$d,upperdir=$W/$d/upper,workdir=$W/$d/work" "/$d"
done
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=0755 tmpfs /etc/systemd/system
mkdir -p "$W/units"
printf '[Unit]\nDescription=wgmesh test boot target\n' > "$W/units/wgtest.target"
for t in sysinit basic network-online network multi-user shutdown sockets paths timers slices local-fs; do
  printf '[Unit]\nDescription=%s (stand-in of the wgmesh systemd test)\n' "$t" > "$W/units/$t.target"
done
mount --bind "$W/units" /lib/systemd/system
mkdir -p /usr/local/bin
touch /usr/local/bin/wgmesh-labnode
mount --bind "$LABNODE" /usr/local/bin/wgmesh-labnode
for p in wgmeshd wgmeshctl; do
  printf '#!/bin/sh\nexec /usr/local/bin/wgmesh-labnode %s "$@"\n' "$p" > "/usr/local/bin/$p"
  chmod 755 "/usr/local/bin/$p"
done
mount --bind "$CONSOLE" /dev/console
ip link set lo up
exec env container=wgmesh-test /lib/systemd/systemd --system --unit=wgtest.target --log-target=console --log-level=info
"#;

/// A systemd running as PID 1 of its own namespaces (see the module docs).
#[derive(Debug)]
pub struct SystemdNs {
    unshare: Child,
    pid1: u32,
    dir: PathBuf,
    cgroups_before: BTreeSet<PathBuf>,
}

impl SystemdNs {
    /// Boots systemd and waits until `systemctl is-system-running` says `running` (or
    /// `degraded`).
    ///
    /// # Errors
    ///
    /// Why a throwaway systemd cannot run on this machine: the host runs systemd itself (see the
    /// module docs), a tool is missing (`unshare`, `nsenter`, `/lib/systemd/systemd`), or systemd
    /// does not come up within 30 s (the error carries its console output). None of these
    /// depends on wgmesh's code, so callers may skip on them.
    pub fn boot(exe: &Exe) -> Result<Self> {
        if Path::new("/run/systemd/system").exists() {
            bail!("PID 1 of this host is systemd; a throwaway one would share its cgroup tree");
        }
        for tool in [
            "/lib/systemd/systemd",
            "/usr/bin/unshare",
            "/usr/bin/nsenter",
        ] {
            if !Path::new(tool).exists() {
                bail!("{tool} is missing (install systemd and util-linux)");
            }
        }
        let dir = std::env::temp_dir().join(format!(
            "wgmesh-systemd-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let work = dir.join("ns");
        std::fs::create_dir_all(&work).with_context(|| format!("create {}", work.display()))?;
        let console = dir.join("console.log");
        std::fs::write(&console, b"").context("create the console log")?;
        let cgroups_before = cgroup_dirs();
        let unshare = Command::new("unshare")
            .args([
                "--pid",
                "--fork",
                "--mount",
                "--net",
                "--uts",
                "--ipc",
                "--cgroup",
                "--",
                "sh",
                "-c",
                BOOT_SCRIPT,
                "sh",
            ])
            .arg(&work)
            .arg(exe.path())
            .arg(&console)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start unshare")?;
        let mut ns = Self {
            pid1: 0,
            unshare,
            dir,
            cgroups_before,
        };
        let deadline = Instant::now() + BOOT;
        loop {
            if ns.pid1 == 0 {
                ns.pid1 = first_child(ns.unshare.id()).unwrap_or(0);
            }
            if ns.pid1 != 0 {
                let state = ns.exec(&["systemctl", "is-system-running"])?;
                let text = String::from_utf8_lossy(&state.stdout);
                if matches!(text.trim(), "running" | "degraded") {
                    return Ok(ns);
                }
            }
            if let Ok(Some(status)) = ns.unshare.try_wait() {
                bail!(
                    "systemd exited during boot ({status}); console:\n{}",
                    ns.console()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "systemd did not boot in {BOOT:?}; console:\n{}",
                    ns.console()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What systemd wrote on its console so far.
    pub fn console(&self) -> String {
        std::fs::read_to_string(self.dir.join("console.log")).unwrap_or_default()
    }

    /// Runs `args` inside every namespace of the systemd (as root), and returns what it did.
    ///
    /// # Errors
    ///
    /// When `nsenter` cannot be started.
    pub fn exec(&self, args: &[&str]) -> Result<Output> {
        Command::new("nsenter")
            .args(["-t", &self.pid1.to_string(), "-a", "--"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("nsenter {args:?}"))
    }

    /// [`SystemdNs::exec`] of `sh -c script`; its stdout.
    ///
    /// # Errors
    ///
    /// When it exits non-zero (the error has its stdout and stderr).
    pub fn sh(&self, script: &str) -> Result<String> {
        let out = self.exec(&["sh", "-c", script])?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "`{script}` failed ({}):\n{stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(stdout)
    }

    /// `systemctl show UNIT -p PROPERTY --value`.
    ///
    /// # Errors
    ///
    /// When systemctl fails.
    pub fn property(&self, unit: &str, property: &str) -> Result<String> {
        Ok(self
            .sh(&format!("systemctl show {unit} -p {property} --value"))?
            .trim()
            .to_owned())
    }
}

impl Drop for SystemdNs {
    fn drop(&mut self) {
        if self.pid1 != 0 {
            // SAFETY: kill has no memory preconditions; pid1 is the namespace's init, whose death
            // ends every process of the namespace.
            unsafe { libc::kill(self.pid1 as libc::pid_t, libc::SIGKILL) };
        }
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
        // The processes of the namespace are gone a moment after their init; their cgroups can
        // go then (deepest first). Only what appeared during the test is touched.
        for _ in 0..50 {
            let mut left = cgroup_dirs()
                .difference(&self.cgroups_before)
                .cloned()
                .collect::<Vec<_>>();
            if left.is_empty() {
                break;
            }
            left.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
            for dir in left {
                let _ = std::fs::remove_dir(dir);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The first child of process `pid` (`/proc/<pid>/task/<pid>/children`).
fn first_child(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Every cgroup directory below [`CGROUP_ROOT`] (all hierarchies).
fn cgroup_dirs() -> BTreeSet<PathBuf> {
    fn walk(dir: &Path, out: &mut BTreeSet<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                let path = entry.path();
                walk(&path, out);
                out.insert(path);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(Path::new(CGROUP_ROOT), &mut out);
    out
}
