//! Real `wgmeshd join` daemons in lab hosts, and checks over their API and over the mesh.
//!
//! Every daemon runs through the multi-call program of this build ([`Exe`]), with its host's own
//! `--state-dir` and `--socket` ([`Host::state_dir`], [`Host::socket_path`]), so the helpers here
//! find a host's daemon from the host alone.
//!
//! API errors are errors: a daemon that crashed, hangs or answers something that does not parse
//! as the API types fails the test, with the host's name in the message. Only
//! [`Daemon::wait_api`] retries, while the daemon starts; [`wait_full_mesh`] retries while the
//! mesh forms, and [`wait_status`] while its condition does not hold yet, but every API call they
//! make must succeed.
//!
//! ```no_run
//! # use std::time::Duration;
//! # use wgmesh_tests::daemon::{self, Daemon};
//! # fn example(exe: &wgmesh_tests::Exe, lab: &wgmesh_tests::lab::Lab) -> anyhow::Result<()> {
//! // exe: `wgmesh_tests::labnode_exe!()` in an integration test
//! let (a, b) = (lab.host("a"), lab.host("b"));
//! let secret = lab.dir().join("mesh.secret");
//! daemon::write_secret(exe, &secret)?;
//! let da = Daemon::start(exe, a, &secret, &["--introducer"])?;
//! let db = Daemon::start(exe, b, &secret, &[])?;
//! let status = da.wait_api(Duration::from_secs(20))?;
//! db.wait_api(Duration::from_secs(20))?;
//! daemon::wait_full_mesh(&[a, b], Duration::from_secs(60))?;
//! daemon::tcp_every_pair(exe, &[a, b])?;
//! assert_eq!(db.peers()?.peers[0].public_key, status.public_key);
//! # Ok(())
//! # }
//! ```

use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use wgmesh_api_types::{PeerList, Status};

use crate::Exe;
use crate::lab::{self, Host, LabProcess};

/// A handshake younger than this counts as "connected" for [`full_mesh`].
pub const FRESH_HANDSHAKE_SECS: u64 = 30;
/// The port [`tcp_every_pair`] runs its echo servers on, on each mesh IP.
pub const TCP_CHECK_PORT: u16 = 7000;

/// How often the waiting helpers ask again.
const POLL: Duration = Duration::from_millis(100);

/// The flags that keep a lab daemon off the internet: the DHT and STUN default to public
/// servers, so each is turned off unless `extra_args` point it at something inside the lab
/// (`--dht-bootstrap`, `--stun`) or mention it already.
fn lab_only_args(extra_args: &[&str]) -> Vec<&'static str> {
    let mentions = |flags: &[&str]| {
        extra_args.iter().any(|a| {
            flags
                .iter()
                .any(|f| a == f || a.starts_with(&format!("{f}=")))
        })
    };
    let mut args = Vec::new();
    if !mentions(&["--dht-bootstrap", "--no-dht"]) {
        args.push("--no-dht");
    }
    if !mentions(&["--stun", "--no-stun"]) {
        args.push("--no-stun");
    }
    args
}

// --- UAPI socket directory (`wg show`, issue 11) ---------------------------------------------
/// `--uapi-dir <the host's run dir>` unless `extra_args` mention `--uapi-dir` or `--no-uapi`:
/// every lab daemon runs `wg0`, so each serves its UAPI socket in its own host's directory
/// ([`Host::run_dir`], which is also the `/run/wireguard` that processes started in that host
/// see, so `wg show wg0` run there finds it), never in the machine's real `/run/wireguard`.
fn uapi_dir_args(host: &Host, extra_args: &[&str]) -> Vec<std::ffi::OsString> {
    let mentioned = extra_args
        .iter()
        .any(|a| *a == "--no-uapi" || *a == "--uapi-dir" || a.starts_with("--uapi-dir="));
    if mentioned {
        Vec::new()
    } else {
        vec!["--uapi-dir".into(), host.run_dir().into_os_string()]
    }
}
// --- end UAPI socket directory

/// A `wgmeshd join` running in a lab host. The [`lab::Lab`] stops it on drop; dropping this
/// handle does nothing.
#[derive(Debug, Clone)]
pub struct Daemon {
    host: Host,
    process: LabProcess,
}

impl Daemon {
    /// Starts `wgmeshd --log-level debug join --wg-backend userspace --secret-file SECRET
    /// --state-dir STATE --socket SOCKET EXTRA_ARGS…` in `host`, through `exe`, with the host's
    /// state dir and socket path. Returns at once; [`Daemon::wait_api`] waits until it serves.
    ///
    /// `extra_args` are more `join` options (`--introducer`, `--no-lan-discovery`, …); a
    /// `--log-level` among them overrides the `debug` default. The DHT and STUN are off unless
    /// `extra_args` configure them (`--dht-bootstrap`, `--stun`): lab daemons never reach public
    /// servers. The UAPI socket goes to the host's own run directory unless `extra_args` say
    /// otherwise (`--uapi-dir`, `--no-uapi`).
    ///
    /// # Errors
    ///
    /// When the process cannot be started.
    pub fn start(exe: &Exe, host: &Host, secret_file: &Path, extra_args: &[&str]) -> Result<Self> {
        Self::start_with_env(exe, host, secret_file, extra_args, &[])
    }

    /// [`Daemon::start`] with environment variables `envs` set for the daemon (the rest of the
    /// test's environment is inherited), e.g. a `PATH` that picks another `iptables`.
    ///
    /// # Errors
    ///
    /// When the process cannot be started.
    pub fn start_with_env(
        exe: &Exe,
        host: &Host,
        secret_file: &Path,
        extra_args: &[&str],
        envs: &[(&str, &str)],
    ) -> Result<Self> {
        Self::spawn(exe, host, Some(secret_file), extra_args, envs)
    }

    /// [`Daemon::start`] without `--secret-file`: the daemon reads its secret as systemd would
    /// hand it over, from the credential `secret` in `credentials_dir` (`CREDENTIALS_DIRECTORY`).
    ///
    /// # Errors
    ///
    /// When the process cannot be started.
    pub fn start_with_credential(
        exe: &Exe,
        host: &Host,
        credentials_dir: &Path,
        extra_args: &[&str],
    ) -> Result<Self> {
        let dir = credentials_dir
            .to_str()
            .context("credentials dir is not UTF-8")?;
        Self::spawn(
            exe,
            host,
            None,
            extra_args,
            &[("CREDENTIALS_DIRECTORY", dir)],
        )
    }

    fn spawn(
        exe: &Exe,
        host: &Host,
        secret_file: Option<&Path>,
        extra_args: &[&str],
        envs: &[(&str, &str)],
    ) -> Result<Self> {
        let secret_args = secret_file
            .map(|f| vec![std::ffi::OsStr::new("--secret-file"), f.as_os_str()])
            .unwrap_or_default();
        let process = exe
            .in_host(host, "wgmeshd")
            .args(["--log-level", "debug", "join", "--wg-backend", "userspace"])
            .args(secret_args)
            .arg("--state-dir")
            .arg(host.state_dir())
            .arg("--socket")
            .arg(host.socket_path())
            .args(lab_only_args(extra_args))
            .args(uapi_dir_args(host, extra_args))
            .args(extra_args)
            .envs(envs)
            .spawn()
            .with_context(|| format!("start wgmeshd on {}", host.name()))?;
        Ok(Self {
            host: host.clone(),
            process,
        })
    }

    /// The host it runs in.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The process (PID, logs, signals, exit status).
    pub fn process(&self) -> &LabProcess {
        &self.process
    }

    /// `GET /v1/status` of this daemon.
    ///
    /// # Errors
    ///
    /// See [`status`].
    pub fn status(&self) -> Result<Status> {
        status(&self.host)
    }

    /// `GET /v1/peers` of this daemon.
    ///
    /// # Errors
    ///
    /// See [`peers`].
    pub fn peers(&self) -> Result<PeerList> {
        peers(&self.host)
    }

    /// Waits until the daemon answers `GET /v1/status` and returns that status. Retries while
    /// the daemon starts (no socket yet, or no answer yet).
    ///
    /// # Errors
    ///
    /// When the process exits first (with its log), or no answer came within `timeout` (with
    /// the last error).
    pub fn wait_api(&self, timeout: Duration) -> Result<Status> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(exit) = self.process.try_wait()? {
                bail!(
                    "wgmeshd on {} exited ({exit}) before serving its API:\n{}",
                    self.host.name(),
                    self.process.logs_tail(40)
                );
            }
            let err = match self.status() {
                Ok(status) => return Ok(status),
                Err(err) => err,
            };
            if Instant::now() >= deadline {
                return Err(err.context(format!(
                    "wgmeshd on {} did not serve its API within {timeout:?}",
                    self.host.name()
                )));
            }
            std::thread::sleep(POLL);
        }
    }
}

/// `GET /v1/status` of the daemon in `host` (at [`Host::socket_path`]).
///
/// # Errors
///
/// Any API error (unreachable, no answer, problem document, a body that is not a
/// [`Status`]), naming the host.
pub fn status(host: &Host) -> Result<Status> {
    crate::api::get(&host.socket_path(), "/v1/status")
        .with_context(|| format!("wgmeshd on {}", host.name()))
}

/// `GET /v1/peers` of the daemon in `host`.
///
/// # Errors
///
/// As [`status`].
pub fn peers(host: &Host) -> Result<PeerList> {
    crate::api::get(&host.socket_path(), "/v1/peers")
        .with_context(|| format!("wgmeshd on {}", host.name()))
}

/// The entry of the peer with public key `key` in `GET /v1/peers` of the daemon in `host`;
/// `None` when the daemon does not list that key.
///
/// # Errors
///
/// As [`peers`].
pub fn peer(host: &Host, key: &str) -> Result<Option<wgmesh_api_types::Peer>> {
    Ok(peers(host)?.peers.into_iter().find(|p| p.public_key == key))
}

/// Whether the daemon in `host` lists the peer `key` with a WireGuard handshake younger than
/// [`FRESH_HANDSHAKE_SECS`] (as [`full_mesh`] counts it). A peer it does not list is `false`.
///
/// # Errors
///
/// As [`peers`]: a daemon that does not answer is not "no handshake yet".
pub fn handshaked(host: &Host, key: &str) -> Result<bool> {
    Ok(peer(host, key)?
        .and_then(|p| p.last_handshake_seconds_ago)
        .is_some_and(|s| s < FRESH_HANDSHAKE_SECS))
}

/// Polls `GET /v1/status` of the daemon in `host` until `cond` holds for it, and returns that
/// status. Retries only while `cond` is false; `what` says what is awaited, for the error.
///
/// # Errors
///
/// Any API error at once (as [`status`]); at `timeout`, an error naming the host and `what`, with
/// the last status.
pub fn wait_status(
    host: &Host,
    timeout: Duration,
    what: &str,
    mut cond: impl FnMut(&Status) -> bool,
) -> Result<Status> {
    let deadline = Instant::now() + timeout;
    loop {
        let st = status(host)?;
        if cond(&st) {
            return Ok(st);
        }
        if Instant::now() >= deadline {
            bail!(
                "wgmeshd on {}: {what}: not within {timeout:?}; last status: {st:#?}",
                host.name()
            );
        }
        std::thread::sleep(POLL);
    }
}

/// The mesh IPv4 of the daemon in `host`, from its status.
///
/// # Errors
///
/// As [`status`], and when the address does not parse.
pub fn mesh_ip(host: &Host) -> Result<Ipv4Addr> {
    let st = status(host)?;
    st.mesh_ip
        .parse()
        .with_context(|| format!("{}: mesh_ip {:?}", host.name(), st.mesh_ip))
}

/// Whether the daemons in `hosts` form a full mesh: each one has a WireGuard handshake younger
/// than [`FRESH_HANDSHAKE_SECS`] with every other one (matched by the public key in its status).
///
/// # Errors
///
/// Any API error of any host: a daemon that does not answer is not "not meshed yet".
pub fn full_mesh(hosts: &[&Host]) -> Result<bool> {
    Ok(mesh_gaps(hosts)?.is_empty())
}

/// Polls [`full_mesh`] until it holds.
///
/// # Errors
///
/// Any API error at once; at `timeout`, an error listing every pair still missing.
pub fn wait_full_mesh(hosts: &[&Host], timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let gaps = mesh_gaps(hosts)?;
        if gaps.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("no full mesh within {timeout:?}:\n  {}", gaps.join("\n  "));
        }
        std::thread::sleep(POLL);
    }
}

/// One line per ordered pair of `hosts` without a fresh handshake.
fn mesh_gaps(hosts: &[&Host]) -> Result<Vec<String>> {
    let keys = hosts
        .iter()
        .map(|h| Ok(status(h)?.public_key))
        .collect::<Result<Vec<_>>>()?;
    let mut gaps = Vec::new();
    for (i, host) in hosts.iter().enumerate() {
        let list = peers(host)?;
        for (j, other) in hosts.iter().enumerate().filter(|(j, _)| *j != i) {
            let (a, b) = (host.name(), other.name());
            match list.peers.iter().find(|p| p.public_key == keys[j]) {
                None => gaps.push(format!("{a} does not know {b}")),
                Some(p) => match p.last_handshake_seconds_ago {
                    Some(s) if s < FRESH_HANDSHAKE_SECS => {}
                    Some(s) => gaps.push(format!("{a} -> {b}: last handshake {s} s ago")),
                    None => gaps.push(format!("{a} -> {b}: no handshake")),
                },
            }
        }
    }
    Ok(gaps)
}

/// Checks TCP over the mesh between every ordered pair of `hosts`: starts an echo server on
/// each daemon's mesh IPv4, port [`TCP_CHECK_PORT`], sends 64 KiB from every other host and
/// checks every byte comes back; stops the echo servers again.
///
/// # Errors
///
/// Any API error, an echo server that does not start, or a pair whose check fails (naming it).
pub fn tcp_every_pair(exe: &Exe, hosts: &[&Host]) -> Result<()> {
    let ips = hosts
        .iter()
        .map(|h| mesh_ip(h))
        .collect::<Result<Vec<_>>>()?;
    let mut servers = Vec::new();
    let result = (|| {
        for (h, ip) in hosts.iter().zip(&ips) {
            let server = exe
                .in_host(h, "tcp-echo")
                .arg(format!("{ip}:{TCP_CHECK_PORT}"))
                .spawn()?;
            servers.push(server.clone());
            ensure!(
                lab::wait_until(Duration::from_secs(5), || server
                    .stdout()
                    .contains("listening")),
                "TCP echo server on {} did not start:\n{}",
                h.name(),
                server.logs()
            );
        }
        for (i, from) in hosts.iter().enumerate() {
            for (j, ip) in ips.iter().enumerate().filter(|(j, _)| *j != i) {
                let out = exe
                    .in_host(from, "tcp-check")
                    .args([&format!("{ip}:{TCP_CHECK_PORT}"), "65536", "10000"])
                    .output_timeout(Duration::from_secs(15))?;
                ensure!(
                    out.status.success(),
                    "TCP {} -> {} ({ip}) over the mesh: {}",
                    from.name(),
                    hosts[j].name(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        Ok(())
    })();
    let stopped = servers.iter().try_for_each(|s| s.kill().map(drop));
    result.and(stopped)
}

/// The mesh's gossip port (every node's exchange socket, `--peer HOST:PORT`'s port), derived
/// from the secret in `secret_file` as the daemon derives it.
///
/// # Errors
///
/// When the file does not hold a valid secret.
pub fn gossip_port(secret_file: &Path) -> Result<u16> {
    let secret = wgmeshd::config::resolve_secret(None, Some(secret_file), |_| None)
        .with_context(|| format!("read the secret in {}", secret_file.display()))?;
    Ok(wgmeshd::crypto::DerivedKeys::derive(&secret).gossip_port)
}

/// Writes a fresh mesh secret (`wgmeshctl secret new` of this build) to `path`, mode `0600`.
///
/// # Errors
///
/// When the CLI fails or the file cannot be written.
pub fn write_secret(exe: &Exe, path: &Path) -> Result<()> {
    let out = exe
        .wgmeshctl()
        .args(["secret", "new"])
        .output()
        .context("run wgmeshctl secret new")?;
    ensure!(
        out.status.success(),
        "wgmeshctl secret new: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    std::io::Write::write_all(&mut file, &out.stdout)
        .with_context(|| format!("write {}", path.display()))
}
