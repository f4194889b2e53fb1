//! The daemon's lifecycle: claim, build, run the tasks, stop, tear down.
//!
//! 1. **Claim** before touching anything shared: the state directory is checked, the lock file
//!    `<state-dir>/<iface>.lock` is taken and the API socket is bound (and the metrics address,
//!    with `--metrics-listen`). A second `wgmeshd` for the same interface, socket or metrics
//!    address fails here, with the first one's device untouched.
//! 2. **Build**: the identity, the WireGuard device (from here on [`Teardown`] owns its removal),
//!    addresses, MTU, link up, forwarding on an introducer; the peer cache is restored into the
//!    store, so the reconcile loop's first pass puts those peers on the device.
//! 3. **Run**: every task (module `tasks`) on one [`Supervisor`] until the shutdown future completes
//!    or a critical task fails.
//! 4. **Stop**: cancel, wait for every task (at most [`SHUTDOWN_DEADLINE`], or less if the force
//!    future completes — a second signal), save the peer cache a last time, then tear down on
//!    every path: the device (kernel link included, even when a task is stuck holding it),
//!    forwarding, firewall rules. No task outlives [`run`] unnoticed (seed 004: Go's daemon let
//!    five loops run on against an interface being deleted).

mod control;
mod host_changes;
mod notify;
mod observe;
mod reload;
mod tasks;
mod teardown;

use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use ipnet::IpNet;

use crate::api;
use crate::config::{InterfaceName, MeshSecret, MeshSubnet};
use crate::crypto::DerivedKeys;
use crate::identity::{self, LoadOutcome, MeshParams};
use crate::logging::{LogControl, LogLevel};
use crate::supervisor::Supervisor;
use crate::system::fs::{LockError, LockFile};
use crate::system::net::Netlink;
use crate::system::wg::{AnyWireGuard, BackendChoice};

pub use observe::{DEBOUNCE as STATUS_DEBOUNCE, SUMMARY_INTERVAL};
pub use tasks::{CACHE_SAVE_DEADLINE, Node};
pub use teardown::Teardown;

/// How long shutdown waits for the tasks before giving up on them.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);
/// How long the teardown steps may take together.
pub const TEARDOWN_DEADLINE: Duration = Duration::from_secs(5);
/// MTU of the mesh interface (WireGuard's usual 1420).
pub const MTU: u32 = 1420;
/// How many ports above the requested one are tried when it is busy (as Go).
const PORT_SCAN: u16 = 100;

/// Everything `wgmeshd join` was asked to do.
#[derive(Debug)]
pub struct JoinOptions {
    /// The mesh secret.
    pub secret: MeshSecret,
    /// Interface name.
    pub interface: InterfaceName,
    /// Preferred WireGuard listen port.
    pub listen_port: u16,
    /// Directory of state files.
    pub state_dir: PathBuf,
    /// API socket path.
    pub socket: PathBuf,
    /// Group of the API socket, whose members may use it (and write through it).
    pub socket_group: api::SocketGroup,
    /// WireGuard backend.
    pub wg_backend: BackendChoice,
    /// Custom mesh subnet.
    pub mesh_subnet: Option<MeshSubnet>,
    /// Networks this node routes for.
    pub advertise_routes: Vec<IpNet>,
    /// Run LAN multicast discovery.
    pub lan_discovery: bool,
    /// The discovery layers beyond the LAN.
    pub discovery: DiscoveryOptions,
    /// Serve as an introducer: forward traffic between peers, announce it.
    pub introducer: bool,
    /// Relay every peer that is not kept direct by the first relay rules (LAN, introducers,
    /// local networks) through an introducer (`--force-relay`, as in Go).
    pub force_relay: bool,
    /// The log level the daemon started with.
    pub log_level: LogLevel,
    /// Where to serve `GET /metrics` on TCP as well (off: `None`).
    pub metrics_listen: Option<SocketAddr>,
    /// Directory of the read-only WireGuard UAPI socket `<dir>/<iface>.sock` for `wg show`
    /// (userspace backend only; `None`: `--no-uapi`). See [`crate::uapi`].
    pub uapi_dir: Option<PathBuf>,
    /// The running log filter (from [`crate::logging::init`]), so a reload changes the level;
    /// `None` when this process did not install it: a reload of the level is then refused.
    pub log_control: Option<LogControl>,
    /// One message per SIGHUP: re-read the reload file `<state-dir>/<iface>.reload` (the
    /// `control` task does, like any other reload). `None`: no signal reloads.
    pub hangups: Option<tokio::sync::mpsc::Receiver<()>>,
}

/// What `wgmeshd join` was asked to do about discovery beyond the LAN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveryOptions {
    /// Run the exchange socket on the mesh's gossip port (`--no-exchange` turns it off, and with
    /// it every layer that talks through it: static peers, DHT contacts, rendezvous, gossip).
    pub exchange: bool,
    /// Hole punching: resend HELLOs while waiting, and rendezvous through introducers
    /// (`--no-punching` turns both off).
    pub punching: bool,
    /// Use IPv6 endpoints (`--no-ipv6` drops them everywhere).
    pub ipv6: bool,
    /// Static bootstrap peers (`--peer HOST:PORT`, the peer's exchange port): contacted at start
    /// and with backoff.
    pub static_peers: Vec<crate::config::HostPort>,
    /// Run the mainline DHT (`--no-dht` turns it off).
    pub dht: bool,
    /// DHT bootstrap nodes replacing the public routers (`--dht-bootstrap HOST:PORT`); empty =
    /// the public routers.
    pub dht_bootstrap: Vec<crate::config::HostPort>,
    /// In-mesh gossip (`--gossip`).
    pub gossip: bool,
    /// Privacy mode: Dandelion++ stem/fluff of announcements (`--privacy`).
    pub privacy: bool,
    /// Learn the public endpoint and NAT type with STUN (`--no-stun` turns it off).
    pub stun: bool,
    /// STUN servers replacing the defaults (`--stun HOST:PORT`); empty = the defaults.
    pub stun_servers: Vec<crate::config::HostPort>,
}

impl Default for DiscoveryOptions {
    /// The defaults of `wgmeshd join`: exchange, punching, IPv6, DHT and STUN on; gossip and
    /// privacy off; public DHT routers and STUN servers.
    fn default() -> Self {
        Self {
            exchange: true,
            punching: true,
            ipv6: true,
            static_peers: Vec::new(),
            dht: true,
            dht_bootstrap: Vec::new(),
            gossip: false,
            privacy: false,
            stun: true,
            stun_servers: Vec::new(),
        }
    }
}

impl DiscoveryOptions {
    /// Every layer beyond the LAN off (tests, and nodes that only use LAN and the cache).
    pub fn none() -> Self {
        Self {
            exchange: false,
            punching: false,
            dht: false,
            stun: false,
            ..Self::default()
        }
    }
}

/// Where the lock of `iface`'s daemon lives.
pub fn lock_path(state_dir: &Path, iface: &InterfaceName) -> PathBuf {
    state_dir.join(format!("{}.lock", iface.as_str()))
}

/// The first free UDP port at or above `preferred` (IPv4 and IPv6 both free), within 100.
///
/// # Errors
///
/// When none of the 101 ports is free.
pub fn pick_listen_port(preferred: u16) -> anyhow::Result<u16> {
    let free = |port: u16| {
        UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))).is_ok()
            && UdpSocket::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))).is_ok()
    };
    if free(preferred) {
        return Ok(preferred);
    }
    let found = (1..=PORT_SCAN)
        .filter_map(|i| preferred.checked_add(i))
        .find(|p| free(*p));
    match found {
        Some(p) => {
            tracing::warn!(
                requested = preferred,
                using = p,
                "listen port is in use; using the next free one"
            );
            Ok(p)
        }
        None => anyhow::bail!(
            "port {preferred} is in use and no free port in the next {PORT_SCAN} (try --listen-port with another port)"
        ),
    }
}

/// Runs the node until `shutdown` completes (or a critical task fails), then stops every task
/// and tears the interface down. `force` completing (a second signal) cuts the wait for the
/// tasks short; the teardown still runs.
///
/// # Errors
///
/// Start-up failures (claim, identity, device, addresses) and a critical task's failure; the
/// device is torn down in every case once it exists.
pub async fn run(
    mut opts: JoinOptions,
    shutdown: impl Future<Output = ()>,
    force: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let keys = DerivedKeys::derive(&opts.secret);
    let hangups = opts.hangups.take();
    let iface = opts.interface.as_str();

    // 1. Claim, before any device is touched.
    identity::check_state_dir(&opts.state_dir)?;
    let lock = LockFile::acquire(&lock_path(&opts.state_dir, &opts.interface)).map_err(|e| match e {
        LockError::Held { .. } => anyhow::anyhow!(
            "another wgmeshd already runs interface {iface} with state directory {} ({e}); stop it first",
            opts.state_dir.display()
        ),
        LockError::Io(io) => anyhow::Error::new(io).context("cannot take the daemon's lock"),
    })?;
    let listener = api::bind_with_group(&opts.socket, &opts.socket_group).await?;
    let metrics_listener = match opts.metrics_listen {
        Some(addr) => Some(api::MetricsListener::bind(addr).await?),
        None => None,
    };

    // 2. Identity and device.
    let mesh = MeshParams {
        secret: &opts.secret,
        keys: &keys,
        custom_subnet: opts.mesh_subnet.as_ref(),
    };
    let (id, outcome) =
        identity::load_or_create_in_checked_dir(&opts.state_dir, &opts.interface, &mesh)
            .context("cannot load the node identity")?;
    match outcome {
        LoadOutcome::Created => tracing::info!("created a new node identity"),
        LoadOutcome::Updated(fields) => tracing::info!(?fields, "re-derived mesh addresses"),
        LoadOutcome::Loaded => {}
    }
    tracing::info!(
        public_key = %id.public_key,
        mesh_ip = %id.mesh_ip,
        mesh_ipv6 = %id.mesh_ipv6,
        network_id = %keys.network_id_short(),
        "local node (every node of the mesh shows the same network id)"
    );
    let net = Netlink::connect().await.context("cannot open netlink")?;
    let port = pick_listen_port(opts.listen_port)?;
    let (wg, backend_reason) = AnyWireGuard::open(&net, opts.wg_backend, iface, port)
        .await
        .context("cannot create the WireGuard device")?;
    let wg = Arc::new(wg);
    let mut teardown = Teardown::new(net.clone(), iface, wg.clone());

    // 3 and 4. Everything from here ends with the teardown, whatever happens.
    let result = operate(
        Node::new(&opts, &keys, id, net, wg, port, backend_reason),
        listener,
        metrics_listener,
        hangups,
        &mut teardown,
        shutdown,
        force,
    )
    .await;
    if tokio::time::timeout(TEARDOWN_DEADLINE, teardown.run())
        .await
        .is_err()
    {
        tracing::error!(
            iface,
            deadline_s = TEARDOWN_DEADLINE.as_secs(),
            "teardown did not finish in time"
        );
    }
    drop(lock);
    tracing::info!("Shutdown complete");
    result
}

async fn operate(
    mut node: Node,
    listener: api::ApiListener,
    metrics_listener: Option<api::MetricsListener>,
    hangups: Option<tokio::sync::mpsc::Receiver<()>>,
    teardown: &mut Teardown,
    shutdown: impl Future<Output = ()>,
    force: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    node.configure_interface(teardown).await?;
    node.restore_cache().await;
    let cancel = tokio_util::sync::CancellationToken::new();
    let (supervisor, mut fatal) = Supervisor::new(cancel.clone());
    node.spawn_tasks(&supervisor, listener, hangups, metrics_listener)
        .await;
    tracing::info!(socket = %node.socket().display(), "daemon running");

    let outcome = tokio::select! {
        () = shutdown => Ok(()),
        Some(failure) = fatal.recv() => Err(anyhow::Error::new(failure)),
    };
    tracing::info!("Shutting down; waiting for background tasks…");
    cancel.cancel();
    tokio::pin!(force);
    tokio::select! {
        finished = tokio::time::timeout(SHUTDOWN_DEADLINE, supervisor.wait()) => {
            if finished.is_ok() {
                tracing::info!("all background tasks stopped");
            } else {
                tracing::error!(
                    deadline_s = SHUTDOWN_DEADLINE.as_secs(),
                    still_running = ?supervisor.still_running(),
                    "tasks did not stop in time; tearing down anyway"
                );
            }
        }
        () = &mut force => {
            tracing::warn!(
                still_running = ?supervisor.still_running(),
                "second signal: not waiting for the tasks; tearing down now"
            );
        }
    }
    node.save_cache().await;
    outcome
}
