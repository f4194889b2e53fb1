//! The daemon's lifecycle: build the node, start every task on one [`TaskTracker`] with one
//! [`CancellationToken`], run until told to stop, then cancel, wait for **every** task (with a
//! deadline) and tear the interface down. No task outlives [`run`] (seed 004: Go's daemon let
//! five loops and the probe handlers run on against an interface being deleted).

use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use ipnet::IpNet;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{self, ApiState};
use crate::config::{InterfaceName, MeshSecret, MeshSubnet};
use crate::crypto::{DerivedKeys, Envelope, legacy_subnet};
use crate::discovery::{self, lan::LanDiscovery};
use crate::engine::desired::LocalNode;
use crate::engine::reconcile::{Reconciler, RouteTarget};
use crate::identity::{self, LoadOutcome, MeshParams};
use crate::peers::{DEFAULT_CAP, PeerStore};
use crate::status::{self, NodeFacts};
use crate::system::net::Netlink;
use crate::system::wg::{
    AnyWireGuard, BackendChoice, LiveDevice, PresharedKey, PrivateKey, WireGuard,
};
use crate::wire::{PROTOCOL, PeerAnnouncement};

/// How long shutdown waits for the tasks before giving up on them.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);
/// How often peers that went silent are swept out of the store.
pub const CLEANUP_INTERVAL: Duration = Duration::from_secs(60);
/// How often the mesh summary is logged.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(30);
/// How often the API snapshots are refreshed (besides after every reconcile pass).
pub const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(1);
/// MTU of the mesh interface (WireGuard's usual 1420).
pub const MTU: u32 = 1420;
/// How many ports above the requested one are tried when it is busy (as Go).
const PORT_SCAN: u16 = 100;

/// Everything `wgmeshd join` was asked to do.
#[derive(Debug, Clone)]
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
    /// WireGuard backend.
    pub wg_backend: BackendChoice,
    /// Custom mesh subnet.
    pub mesh_subnet: Option<MeshSubnet>,
    /// Networks this node routes for.
    pub advertise_routes: Vec<IpNet>,
    /// Run LAN multicast discovery.
    pub lan_discovery: bool,
    /// Announce this node as an introducer.
    pub introducer: bool,
}

/// The first free UDP port at or above `preferred` (IPv4 and IPv6 both free), within 100.
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

/// Runs the node until `shutdown` completes, then stops every task and removes the interface.
pub async fn run(opts: JoinOptions, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let started = Instant::now();
    let keys = DerivedKeys::derive(&opts.secret);
    let mesh = MeshParams {
        secret: &opts.secret,
        keys: &keys,
        custom_subnet: opts.mesh_subnet.as_ref(),
    };
    let (id, outcome) = identity::load_or_create(&opts.state_dir, &opts.interface, &mesh)
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

    let iface = opts.interface.as_str();
    let net = Netlink::connect().await.context("cannot open netlink")?;
    let port = pick_listen_port(opts.listen_port)?;
    let (wg, backend_reason) = AnyWireGuard::open(&net, opts.wg_backend, iface, port)
        .await
        .context("cannot create the WireGuard device")?;
    let wg = Arc::new(wg);
    let result = run_node(
        &opts,
        &keys,
        &id,
        &net,
        wg.clone(),
        port,
        backend_reason,
        started,
        shutdown,
    )
    .await;
    // Every task has been joined by now, so this is the last reference to the device.
    match Arc::try_unwrap(wg) {
        Ok(wg) => {
            if let Err(e) = wg.shutdown().await {
                tracing::warn!(error = %e, "removing the WireGuard device failed");
            } else {
                tracing::info!(iface, "WireGuard interface removed");
            }
        }
        Err(_) => tracing::warn!(
            iface,
            "WireGuard device still in use at shutdown; leaving it"
        ),
    }
    tracing::info!("Shutdown complete");
    result
}

#[allow(clippy::too_many_arguments)]
async fn run_node(
    opts: &JoinOptions,
    keys: &DerivedKeys,
    id: &identity::Identity,
    net: &Netlink,
    wg: Arc<AnyWireGuard>,
    port: u16,
    backend_reason: String,
    started: Instant,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let iface = opts.interface.as_str();
    let ifindex = net
        .link_index(iface)
        .await?
        .with_context(|| format!("interface {iface} vanished after creation"))?;
    let prefix = opts.mesh_subnet.map_or(16, |s| s.prefix_len());
    let addresses = [
        IpNet::new(id.mesh_ip.into(), prefix)?,
        IpNet::new(id.mesh_ipv6.into(), 64)?,
    ];
    net.sync_addresses(ifindex, &addresses).await?;
    net.set_mtu(ifindex, MTU).await?;
    net.set_link_up(ifindex).await?;
    tracing::info!(
        iface,
        port,
        backend = wg.kind(),
        "WireGuard interface ready"
    );

    let store = Arc::new(PeerStore::new(DEFAULT_CAP));
    let (live_tx, live_rx) = watch::channel(LiveDevice::default());
    let private_key = PrivateKey(id.private_key_bytes());
    let local = LocalNode {
        public_key: private_key.public_key(),
        mesh_ip: id.mesh_ip,
        mesh_ipv6: id.mesh_ipv6,
    };
    let facts = NodeFacts {
        base: wgmesh_api_types::Status {
            schema_version: wgmesh_api_types::SCHEMA_VERSION,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            interface: iface.to_owned(),
            public_key: id.public_key.clone(),
            mesh_ip: id.mesh_ip.to_string(),
            mesh_ipv6: id.mesh_ipv6.to_string(),
            mesh_subnet: opts
                .mesh_subnet
                .map_or_else(|| legacy_subnet(keys).to_string(), |s| s.to_string()),
            network_id: keys.network_id_short(),
            listen_port: port,
            wg_backend: wg.kind().to_owned(),
            wg_backend_reason: backend_reason,
            uptime_seconds: 0,
            lan_discovery: opts.lan_discovery,
            peers: wgmesh_api_types::PeerCounts::default(),
        },
        started,
    };
    let (status_tx, status_rx) = watch::channel(facts.base.clone());
    let (peers_tx, peers_rx) = watch::channel(status::peer_list(
        &[],
        &LiveDevice::default(),
        Instant::now(),
        SystemTime::now(),
    ));

    let tracker = TaskTracker::new();
    let cancel = CancellationToken::new();

    let reconciler = Reconciler {
        wg: wg.clone(),
        store: store.clone(),
        routes: Some(RouteTarget {
            net: net.clone(),
            ifindex,
        }),
        local: local.clone(),
        private_key,
        listen_port: port,
        psk: PresharedKey(keys.psk),
        live_tx,
    };
    tracker.spawn(reconciler.run(cancel.clone()));

    if opts.lan_discovery {
        let announcement = PeerAnnouncement {
            protocol: PROTOCOL.to_owned(),
            wg_pubkey: id.public_key.clone(),
            hostname: discovery::local_hostname(),
            mesh_ip: id.mesh_ip.to_string(),
            mesh_ipv6: id.mesh_ipv6.to_string(),
            wg_endpoint: format!("0.0.0.0:{port}"),
            introducer: opts.introducer,
            routable_networks: opts
                .advertise_routes
                .iter()
                .map(ToString::to_string)
                .collect(),
            ..PeerAnnouncement::default()
        };
        let lan = LanDiscovery {
            envelope: Envelope::new(&keys.gossip_key),
            group: keys.lan_multicast(),
            own_key: local.public_key,
            announcement: watch::channel(announcement).1,
            store: store.clone(),
        };
        let token = cancel.clone();
        tracker.spawn(async move {
            if let Err(e) = lan.run(token).await {
                tracing::error!(error = %e, "LAN discovery stopped");
            }
        });
    } else {
        tracing::info!("LAN discovery disabled");
    }

    tracker.spawn(cleanup_loop(store.clone(), cancel.clone()));
    tracker.spawn(snapshot_loop(
        wg.clone(),
        store.clone(),
        facts,
        live_rx,
        status_tx,
        peers_tx,
        cancel.clone(),
    ));

    let api_state = ApiState {
        status: status_rx,
        peers: peers_rx,
    };
    let socket = opts.socket.clone();
    let token = cancel.clone();
    tracker.spawn(async move {
        let served = match api::bind(&socket).await {
            Ok(listener) => api::serve(listener, api_state, token).await,
            Err(e) => Err(e),
        };
        if let Err(e) = served {
            tracing::error!(error = %e, "control API stopped");
        }
    });
    tracker.close();
    tracing::info!(socket = %opts.socket.display(), "daemon running");

    shutdown.await;
    tracing::info!("Shutting down; waiting for background tasks…");
    cancel.cancel();
    if tokio::time::timeout(SHUTDOWN_DEADLINE, tracker.wait())
        .await
        .is_err()
    {
        anyhow::bail!(
            "{} background task(s) did not stop within {SHUTDOWN_DEADLINE:?}",
            tracker.len()
        );
    }
    tracing::info!("all background tasks stopped");
    Ok(())
}

async fn cleanup_loop(store: Arc<PeerStore>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(CLEANUP_INTERVAL);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {
                for key in store.cleanup_stale(Instant::now()) {
                    tracing::info!(peer = %key, "forgot a peer silent for 10 minutes");
                }
            }
        }
    }
}

/// Keeps the API snapshots fresh: after every reconcile pass, and every second from a read of the
/// device (handshakes and counters change without any pass).
async fn snapshot_loop<W: WireGuard>(
    wg: Arc<W>,
    store: Arc<PeerStore>,
    facts: NodeFacts,
    mut live_rx: watch::Receiver<LiveDevice>,
    status_tx: watch::Sender<wgmesh_api_types::Status>,
    peers_tx: watch::Sender<wgmesh_api_types::PeerList>,
    cancel: CancellationToken,
) {
    let mut refresh = tokio::time::interval(SNAPSHOT_INTERVAL);
    let mut summary = tokio::time::interval(SUMMARY_INTERVAL);
    summary.tick().await;
    loop {
        let (log_summary, read_device) = tokio::select! {
            () = cancel.cancelled() => return,
            _ = refresh.tick() => (false, true),
            changed = live_rx.changed() => {
                if changed.is_err() {
                    return;
                }
                (false, false)
            }
            _ = summary.tick() => (true, true),
        };
        let peers = store.list();
        let published = live_rx.borrow_and_update().clone();
        let live = if read_device {
            wg.read().await.unwrap_or(published)
        } else {
            published
        };
        let (now, wall) = (Instant::now(), SystemTime::now());
        let st = status::status(&facts, &peers, &live, now, wall);
        let list = status::peer_list(&peers, &live, now, wall);
        if log_summary {
            tracing::info!("{}", status::summary_line(&st, &list));
            for p in &list.peers {
                tracing::debug!(
                    peer = %p.public_key, hostname = %p.hostname, mesh_ip = ?p.mesh_ip,
                    endpoint = ?p.endpoint, via = ?p.discovered_via, state = %p.state,
                    handshake_s = ?p.last_handshake_seconds_ago, "peer"
                );
            }
        }
        status_tx.send_replace(st);
        peers_tx.send_replace(list);
    }
}
