//! Helpers for end-to-end tests of `wgmeshd` and `wgmeshctl`.
//!
//! - [`lab`]: the network lab (hosts as network namespaces on simulated LANs).
//! - [`daemon`]: real `wgmeshd join` daemons in lab hosts, their API, mesh and traffic checks.
//! - [`node`]: the data-plane driver (`wgmesh-labnode serve`) for tests below the daemon.
//! - [`api`]: blocking reads of a daemon's control API, with the CLI's own client.
//! - [`labnode`]: the multi-call program that runs the daemon, the CLI and the lab tools.
//! - [`apibench`]: `wgmesh-lab bench-api`, the cost of the control API with a full peer store.
//! - [`systemd`]: a throwaway systemd as PID 1 of its own namespaces, to run `wgmesh.service`.
//!
//! **Always the code of this build.** Tests never run a `wgmeshd` or `wgmeshctl` binary from
//! `target/` (an earlier build may have left a stale one) and never run cargo. They run the
//! multi-call program ([`Exe`]) with a `wgmeshd …` or `wgmeshctl …` subcommand, which calls
//! those programs' library entry points compiled into it. In this package's integration tests
//! the program is `wgmesh-labnode`, which cargo builds for them from the current sources, and
//! [`labnode_exe!`] gives its path as cargo recorded it when the test was compiled:
//!
//! ```no_run
//! use std::time::Duration;
//! use wgmesh_tests::Exe;
//! use wgmesh_tests::daemon::{self, Daemon};
//! use wgmesh_tests::lab::Lab;
//!
//! // In an integration test: `two_nodes(&wgmesh_tests::labnode_exe!())`, after
//! // `if !wgmesh_tests::lab::require_root() { return; }`.
//! fn two_nodes(exe: &Exe) -> anyhow::Result<()> {
//!     let lab = Lab::one_lan("doc_daemons", &["a", "b"])?;
//!     let secret = lab.dir().join("mesh.secret");
//!     daemon::write_secret(exe, &secret)?;
//!     for host in lab.hosts() {
//!         Daemon::start(exe, host, &secret, &[])?.wait_api(Duration::from_secs(20))?;
//!     }
//!     daemon::wait_full_mesh(&[lab.host("a"), lab.host("b")], Duration::from_secs(60))?;
//!     daemon::tcp_every_pair(exe, &[lab.host("a"), lab.host("b")])
//! }
//! ```

pub mod api;
pub mod apibench;
pub mod daemon;
pub mod lab;
pub mod labnode;
pub mod node;
pub mod systemd;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::lab::{Host, LabCommand};

/// The multi-call program of this build ([`labnode`]): `wgmeshd …`, `wgmeshctl …`, `serve`,
/// `tcp-echo …`, …
///
/// Get it with [`labnode_exe!`] in an integration test of this package, or [`Exe::current`] in
/// a binary that dispatches to [`labnode::main_from`] itself (`wgmesh-lab`).
#[derive(Debug, Clone)]
pub struct Exe {
    path: PathBuf,
}

impl Exe {
    /// The program at `path`; it must dispatch to [`labnode::main_from`]. Prefer
    /// [`labnode_exe!`], which cannot name a stale file.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The running program itself, for binaries that dispatch to [`labnode::main_from`].
    ///
    /// # Errors
    ///
    /// When the path of the running executable cannot be read.
    pub fn current() -> anyhow::Result<Self> {
        Ok(Self::new(std::env::current_exe()?))
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `wgmeshd` of this build, on this machine (add its arguments).
    pub fn wgmeshd(&self) -> Command {
        self.command("wgmeshd")
    }

    /// `wgmeshctl` of this build, on this machine (add its arguments).
    pub fn wgmeshctl(&self) -> Command {
        self.command("wgmeshctl")
    }

    /// `subcommand` (`wgmeshd`, `wgmeshctl`, `tcp-echo`, …; see [`labnode`]) on this machine.
    pub fn command(&self, subcommand: &str) -> Command {
        let mut c = Command::new(&self.path);
        c.arg(subcommand);
        c
    }

    /// `subcommand` inside the lab host `host` (add its arguments).
    pub fn in_host<'h>(&self, host: &'h Host, subcommand: impl AsRef<OsStr>) -> LabCommand<'h> {
        host.command(&self.path).arg(subcommand)
    }
}

/// The [`Exe`] of this build in an integration test of `wgmesh-tests`: `wgmesh-labnode`, at the
/// path cargo gave the test when it compiled it (`CARGO_BIN_EXE_wgmesh-labnode`), so always the
/// binary built from the same sources as the test.
#[macro_export]
macro_rules! labnode_exe {
    () => {
        $crate::Exe::new(env!("CARGO_BIN_EXE_wgmesh-labnode"))
    };
}
