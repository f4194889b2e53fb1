//! The running node: its shared state and every named task, spawned on the [`Supervisor`].
//!
//! | task | policy | what it does |
//! |---|---|---|
//! | `interfaces` | restart | re-reads the host's interfaces every 2 s, publishes changes |
//! | `reconcile` | critical | keeps device and routes equal to the active peers |
//! | `collisions` | restart, layer `collisions` | after each reconcile pass: mesh-IP collisions; moves this node when it lost |
//! | `lan-discovery` | restart, layer `lan` | LAN multicast announcements |
//! | `dht` | restart, layer `dht` | mainline DHT: announces the hourly ids, contacts what it finds |
//! | `exchange` | restart, layer `exchange` | the exchange socket on the gossip port: HELLO/REPLY, GOODBYE at shutdown, hand-over to gossip and rendezvous |
//! | `static-peers` | restart, layer `static` | HELLO to each `--peer` with backoff, then every 60 s |
//! | `rendezvous` | restart, layer `rendezvous` | hole punching through introducers: RENDEZVOUS_OFFER/START, punch jobs (off with `--no-punching`) |
//! | `gossip` | restart, layers `gossip`, `privacy` | in-mesh gossip and Dandelion++ stems (`--gossip`, `--privacy`) |
//! | `stun` | restart, layer `stun` | public endpoint and NAT type every 60 s (not with `--no-stun`) |
//! | `probe-server` | restart, layer `probe` | answers Go-format mesh probes (`ping`/`pong`) on the mesh IPs at gossip port + 2000 |
//! | `health` | restart, layer `health` | handshake/transfer monitor, concurrent probes, eviction into quarantine ([`crate::health`]) |
//! | `cleanup` | restart | forgets peers silent for 10 minutes |
//! | `cache` | restart | saves the peer cache every 5 minutes |
//! | `status` | restart | rebuilds the API snapshots on change and on demand, announces peer events, logs the summary ([`observe`](super::observe)) |
//! | `control` | restart | carries out the API's write requests (reload, cache flush) and SIGHUP reloads |
//! | `api` | critical | serves the control API |
//! | `uapi` | restart, layer `uapi` | read-only WireGuard UAPI socket for `wg show` (userspace backend; not with `--no-uapi`) ([`crate::uapi`]) |
//! | `metrics` | restart | serves `GET /metrics` on TCP (only with `--metrics-listen`) |
//! | `systemd-notify` | restart, layer `systemd` | READY / WATCHDOG / STATUS / STOPPING to `$NOTIFY_SOCKET` (only under systemd) ([`notify`](super::notify)) |
//!
//! One [`EventBus`] and one [`Metrics`] serve them all: the registry's observer publishes task and
//! layer changes, the reconcile loop its passes, the `status` task peer events, the `control`
//! task reloads and cache flushes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ipnet::{IpNet, Ipv6Net};
use tokio::sync::watch;

use super::control::Control;
use super::observe::{StatusTask, registry_observer};
use super::reload::Reloader;
use super::{JoinOptions, MTU, Teardown, host_changes};
use crate::api::snapshot::{self, Snapshot};
use crate::api::{self, ApiState, MetricsListener};
use crate::cache::{self, PeerCache, RestoreContext};
use crate::config::reload_file_path;
use crate::crypto::{DerivedKeys, Envelope, legacy_subnet};
use crate::discovery::dht::DhtSettings;
use crate::discovery::exchange::{ExchangeConfig, ExchangeParts, ExchangeService};
use crate::discovery::gossip::{self, Gossip, PrivacyMode};
use crate::discovery::rendezvous::{DeviceTunnel, Rendezvous, system_clock};
use crate::discovery::static_peers::StaticPeers;
use crate::discovery::stun::StunDiscovery;
use crate::discovery::{self, lan::LanDiscovery};
use crate::engine::collision::{CollisionTask, Derivation};
use crate::engine::reconcile::{MeshNetworks, Reconciled, Reconciler, RelayOptions, RouteTarget};
use crate::events::EventBus;
use crate::health::{HealthMonitor, HealthView, ProbeServer};
use crate::identity::Identity;
use crate::keys::{PresharedKey, PrivateKey};
use crate::logging::LogControl;
use crate::metrics::Metrics;
use crate::node::LocalNode;
use crate::peers::{DEFAULT_CAP, PeerStore};
use crate::privacy::Epoch;
use crate::status::NodeFacts;
use crate::supervisor::{LayerState, Supervisor, TaskContext, TaskError};
use crate::system::net::{
    HostInterfaces, INTERFACE_REFRESH, Netlink, PROC_SYS, allow_forwarding, enable_forwarding,
    remove_leftover_rules, restore_forwarding,
};
use crate::system::wg::AnyWireGuard;

/// How often peers that went silent are swept out of the store.
pub const CLEANUP_INTERVAL: Duration = Duration::from_secs(60);
/// How long the last save of the peer cache may take at shutdown.
pub const CACHE_SAVE_DEADLINE: Duration = Duration::from_secs(2);

/// The node's shared state, built once the device exists.
pub struct Node {
    iface: String,
    socket: PathBuf,
    /// `<state-dir>/<iface>.host-changes.json`: see [`host_changes`].
    host_changes: PathBuf,
    /// `<state-dir>/<iface>.reload`: what SIGHUP and an empty `POST /v1/reload` read.
    reload_file: PathBuf,
    /// The running log filter, which a reload of the level changes.
    log_control: Option<LogControl>,
    introducer: bool,
    /// `--force-relay` (the reconcile loop's relay decisions).
    force_relay: bool,
    lan_discovery: bool,
    /// The discovery layers beyond the LAN and their settings.
    discovery: super::DiscoveryOptions,
    /// The mesh's gossip port: the exchange socket's (and every peer's).
    gossip_port: u16,
    /// The mesh probe port (gossip port + 2000).
    probe_port: u16,
    /// The DHT layer's settings (`None`: `--no-dht`); it also needs the exchange socket.
    dht: Option<DhtSettings>,
    prefix_len: u8,
    envelope: Envelope,
    lan_group: std::net::SocketAddrV4,
    psk: PresharedKey,
    mesh: MeshNetworks,
    private_key: Arc<PrivateKey>,
    net: Netlink,
    wg: Arc<AnyWireGuard>,
    ifindex: u32,
    store: Arc<PeerStore>,
    /// `<state-dir>/<iface>-peers.json`: restored at start, saved by the `cache` task, on
    /// request and at shutdown.
    cache: Arc<PeerCache>,
    local: watch::Sender<LocalNode>,
    facts: NodeFacts,
    /// `EpochSeed` derived from the secret: the key of privacy mode's relay choice.
    epoch_seed: [u8; 32],
    /// The collision re-derivation of mesh IPs.
    derivation: Derivation,
    /// `<state-dir>/<iface>.json`: the identity, rewritten when a collision moves us.
    state_file: PathBuf,
    /// Directory of the UAPI socket (`None`: `--no-uapi`).
    uapi_dir: Option<PathBuf>,
}

impl Node {
    /// The node for `opts` with identity `id` on the device `wg`.
    pub fn new(
        opts: &JoinOptions,
        keys: &DerivedKeys,
        id: Identity,
        net: Netlink,
        wg: Arc<AnyWireGuard>,
        port: u16,
        backend_reason: String,
    ) -> Self {
        let mesh_v4 = opts
            .mesh_subnet
            .map_or_else(|| legacy_subnet(keys), |s| s.as_net());
        let mut v6 = [0u8; 16];
        v6[..8].copy_from_slice(&keys.mesh_prefix_v6);
        let mesh_v6 = Ipv6Net::new(v6.into(), 64)
            .unwrap_or_else(|_| unreachable!("/64 is a valid IPv6 prefix length"));
        let Identity {
            private_key,
            public_key,
            mesh_ip,
            mesh_ipv6,
        } = id;
        let local = LocalNode {
            public_key,
            mesh_ip,
            mesh_ipv6,
            hostname: discovery::local_hostname(),
            listen_port: port,
            introducer: opts.introducer,
            advertise_routes: opts.advertise_routes.iter().map(IpNet::trunc).collect(),
            public_endpoint: None,
            nat_type: None,
            log_level: opts.log_level,
        };
        let facts = NodeFacts {
            base: wgmesh_api_types::Status {
                schema_version: wgmesh_api_types::SCHEMA_VERSION,
                version: env!("CARGO_PKG_VERSION").to_owned(),
                interface: opts.interface.as_str().to_owned(),
                public_key: public_key.to_string(),
                mesh_ip: mesh_ip.to_string(),
                mesh_ipv6: mesh_ipv6.to_string(),
                mesh_subnet: mesh_v4.to_string(),
                network_id: keys.network_id_short(),
                listen_port: port,
                wg_backend: wg.kind().to_owned(),
                wg_backend_reason: backend_reason,
                uptime_seconds: 0,
                introducer: opts.introducer,
                advertise_routes: Vec::new(),
                log_level: opts.log_level.as_str().to_owned(),
                ..wgmesh_api_types::Status::default()
            },
            started: Instant::now(),
        };
        Self {
            iface: opts.interface.as_str().to_owned(),
            socket: opts.socket.clone(),
            host_changes: host_changes::record_path(&opts.state_dir, &opts.interface),
            reload_file: reload_file_path(&opts.state_dir, &opts.interface),
            log_control: opts.log_control.clone(),
            introducer: opts.introducer,
            force_relay: opts.force_relay,
            lan_discovery: opts.lan_discovery,
            discovery: opts.discovery.clone(),
            gossip_port: keys.gossip_port,
            probe_port: keys.probe_port(),
            dht: opts.discovery.dht.then(|| {
                DhtSettings::new(
                    &opts.secret,
                    keys,
                    &opts.state_dir,
                    opts.interface.as_str(),
                    &opts.discovery.dht_bootstrap,
                    opts.discovery.ipv6,
                )
            }),
            prefix_len: mesh_v4.prefix_len(),
            envelope: Envelope::new(&keys.gossip_key),
            lan_group: keys.lan_multicast(),
            psk: PresharedKey(keys.psk),
            mesh: MeshNetworks {
                v4: mesh_v4,
                v6: mesh_v6,
            },
            private_key: Arc::new(private_key),
            net,
            wg,
            ifindex: 0,
            store: Arc::new(PeerStore::new(DEFAULT_CAP)),
            cache: Arc::new(PeerCache::new(cache::cache_path(
                &opts.state_dir,
                &opts.interface,
            ))),
            local: watch::channel(local).0,
            facts,
            epoch_seed: keys.epoch_seed,
            derivation: Derivation {
                keys: keys.clone(),
                secret: opts.secret.clone(),
                custom: opts.mesh_subnet,
            },
            state_file: crate::identity::state_file_path(&opts.state_dir, &opts.interface),
            uapi_dir: opts.uapi_dir.clone(),
        }
    }

    /// The API socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Gives the interface its mesh addresses, MTU and up state; on an introducer or a node that
    /// advertises routes, turns IP forwarding on and opens a firewall that would drop forwarded
    /// mesh traffic (both undone by `teardown`).
    ///
    /// # Errors
    ///
    /// Any netlink or sysctl failure, naming the interface.
    pub async fn configure_interface(&mut self, teardown: &mut Teardown) -> anyhow::Result<()> {
        let iface = self.iface.as_str();
        self.ifindex = self
            .net
            .link_index(iface)
            .await?
            .with_context(|| format!("interface {iface} vanished after creation"))?;
        let (mesh_ip, mesh_ipv6) = {
            let local = self.local.borrow();
            (local.mesh_ip, local.mesh_ipv6)
        };
        let addresses = [
            IpNet::new(mesh_ip.into(), self.prefix_len)?,
            IpNet::new(mesh_ipv6.into(), 64)?,
        ];
        self.net.sync_addresses(self.ifindex, &addresses).await?;
        self.net.set_mtu(self.ifindex, MTU).await?;
        self.net.set_link_up(self.ifindex).await?;
        let unclean = host_changes::load(&self.host_changes).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "ignoring an unreadable host-changes record");
            None
        });
        // Only nodes that route for others forward: introducers (between their peers) and nodes
        // that advertise networks behind them (from the mesh into those networks).
        let advertises = !self.local.borrow().advertise_routes.is_empty();
        if self.introducer || advertises {
            let found = enable_forwarding(Path::new(PROC_SYS))
                .context("an introducer or a node with --advertise-routes forwards traffic")?;
            // After a run that could not clean up, the switches found are its leftovers.
            let previous = unclean.unwrap_or(found);
            if unclean.is_none() {
                host_changes::save(&self.host_changes, previous)
                    .context("cannot record the forwarding settings to restore")?;
            }
            teardown.restore_forwarding_later(previous, self.host_changes.clone());
            let firewall = allow_forwarding(iface)
                .await
                .context("an introducer must let its firewall forward between its peers")?;
            if self.introducer {
                tracing::info!(
                    iface,
                    forwarding = %previous.enable_summary(),
                    firewall = %firewall,
                    "introducer: forwarding between peers of the mesh interface"
                );
            } else {
                tracing::info!(
                    iface,
                    forwarding = %previous.enable_summary(),
                    firewall = %firewall,
                    "forwarding on: this node routes into the networks it advertises"
                );
            }
            teardown.remove_firewall_rules_later(firewall);
        } else if let Some(original) = unclean {
            tracing::warn!(
                iface,
                "the last run as an introducer did not clean up; restoring the forwarding settings and removing its firewall rules"
            );
            restore_forwarding(Path::new(PROC_SYS), original)
                .context("cannot restore the forwarding settings of before the last run")?;
            let removed = remove_leftover_rules(iface)
                .await
                .context("cannot remove the firewall rules the last run left")?;
            tracing::info!(iface, removed, "host settings of the last run restored");
            host_changes::remove(&self.host_changes);
        }
        tracing::info!(
            iface,
            port = self.local.borrow().listen_port,
            backend = self.facts.base.wg_backend,
            "WireGuard interface ready"
        );
        Ok(())
    }

    /// Puts the peers of the cache into the store (as `cache`, so the first reconcile pass puts
    /// them on the device). Call before [`Node::spawn_tasks`]; a bad cache is logged and ignored.
    pub async fn restore_cache(&self) {
        let ctx = RestoreContext {
            own_key: self.local.borrow().public_key,
            mesh: self.mesh,
        };
        self.cache.restore(&self.store, &ctx).await;
    }

    /// The last save of the peer cache, at shutdown (after the tasks stopped, before the
    /// teardown); bounded by [`CACHE_SAVE_DEADLINE`], failures logged.
    pub async fn save_cache(&self) {
        let path = self.cache.path().display().to_string();
        match tokio::time::timeout(CACHE_SAVE_DEADLINE, self.cache.save(&self.store)).await {
            Ok(Ok(peers)) => tracing::info!(path, peers, "peer cache saved"),
            Ok(Err(e)) => tracing::error!(error = %e, "cannot save the peer cache"),
            Err(_) => tracing::error!(
                path,
                deadline_s = CACHE_SAVE_DEADLINE.as_secs(),
                "the peer cache was not saved in time"
            ),
        }
    }

    /// Spawns every task of the node on `sup`; `hangups` (one message per SIGHUP) go to the
    /// `control` task; `metrics_listener`, if given, serves `GET /metrics` on TCP.
    pub async fn spawn_tasks(
        &self,
        sup: &Supervisor,
        listener: api::ApiListener,
        hangups: Option<tokio::sync::mpsc::Receiver<()>>,
        metrics_listener: Option<MetricsListener>,
    ) {
        let events = EventBus::new(api::EVENT_BUFFER);
        let metrics = Arc::new(Metrics::default());
        // Before anything is spawned, so that every task's first state is seen.
        let registry_changed = Arc::new(tokio::sync::Notify::new());
        sup.registry()
            .observe(registry_observer(events.clone(), registry_changed.clone()));
        let wg = self.wg.clone();
        let initial = match self.net.interfaces().await {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the host's interfaces yet");
                HostInterfaces::new()
            }
        };
        let (interfaces_tx, interfaces) = watch::channel(initial);
        let interfaces_tx = Arc::new(interfaces_tx);
        let net = self.net.clone();
        sup.spawn_restarting("interfaces", None, move |ctx| {
            watch_interfaces(net.clone(), interfaces_tx.clone(), ctx)
        });

        let (reconciled_tx, reconciled) = watch::channel(Reconciled::default());
        // The health monitor's probe results: the API shows them, the reconcile loop relays
        // peers whose direct path fails its probes.
        let (health_tx, health_view) = watch::channel(HealthView::default());
        let reconciler = Reconciler {
            health: health_view.clone(),
            wg: wg.clone(),
            store: self.store.clone(),
            routes: Some(RouteTarget {
                net: self.net.clone(),
                ifindex: self.ifindex,
            }),
            local: self.local.subscribe(),
            interfaces: interfaces.clone(),
            mesh: self.mesh,
            private_key: self.private_key.clone(),
            psk: self.psk,
            relay: RelayOptions {
                force_relay: self.force_relay,
                ipv6: self.discovery.ipv6,
            },
            published: reconciled_tx,
            metrics: metrics.clone(),
            events: events.clone(),
        };
        sup.spawn_critical("reconcile", |ctx| async move {
            reconciler.run(ctx.cancel).await.map_err(TaskError::from)
        });

        // --- Mesh-IP collisions (layer `collisions`): after every reconcile pass.
        let (expected_tx, expected_ips) = watch::channel(std::collections::BTreeMap::new());
        let collisions = CollisionTask {
            store: self.store.clone(),
            local: self.local.clone(),
            reconciled: reconciled.clone(),
            derivation: self.derivation.clone(),
            net: self.net.clone(),
            ifindex: self.ifindex,
            prefix_len: self.prefix_len,
            state_file: self.state_file.clone(),
            private_key: self.private_key.clone(),
            expected: Arc::new(expected_tx),
        };
        let layer = sup.registry().layer("collisions", LayerState::Running);
        sup.spawn_restarting("collisions", Some(layer), move |ctx| {
            let task = collisions.clone();
            async move { task.run(ctx.cancel).await.map_err(TaskError::from) }
        });
        // --- Health (layers `probe`, `health`): probe responder and monitor.
        let server = ProbeServer {
            port: self.probe_port,
            device: Some(self.iface.clone()),
            local: self.local.subscribe(),
            ipv6: self.discovery.ipv6,
            layer: sup.registry().layer("probe", LayerState::Running),
            counters: metrics.layer("probe"),
        };
        let layer = server.layer.clone();
        sup.spawn_restarting("probe-server", Some(layer), move |ctx| {
            server.clone().run(ctx.cancel)
        });
        let layer = sup.registry().layer("health", LayerState::Running);
        let monitor = Arc::new(HealthMonitor {
            wg: wg.clone(),
            store: self.store.clone(),
            local: self.local.subscribe(),
            reconciled: reconciled.clone(),
            probe_port: self.probe_port,
            device: Some(self.iface.clone()),
            ipv6: self.discovery.ipv6,
            published: health_tx,
            layer: layer.clone(),
        });
        sup.spawn_restarting("health", Some(layer), move |ctx| {
            let monitor = monitor.clone();
            async move { monitor.run(ctx.cancel).await }
        });
        // --- end health

        // --- UAPI socket (layer `uapi`): `wg show` for the embedded device.
        crate::uapi::spawn(
            sup,
            self.uapi_dir.clone(),
            wg.clone(),
            self.private_key.clone(),
            metrics.layer("uapi"),
        );
        // --- end UAPI

        if self.lan_discovery {
            let layer = sup.registry().layer("lan", LayerState::Running);
            let lan = LanDiscovery {
                envelope: self.envelope.clone(),
                group: self.lan_group,
                local: self.local.subscribe(),
                store: self.store.clone(),
                interfaces: interfaces.clone(),
                wg_ifindex: self.ifindex,
                layer: layer.clone(),
                counters: metrics.layer("lan"),
            };
            sup.spawn_restarting("lan-discovery", Some(layer), move |ctx| {
                let lan = lan.clone();
                async move {
                    lan.run(ctx.cancel).await;
                    Ok(())
                }
            });
        } else {
            sup.registry().layer("lan", LayerState::Off);
            tracing::info!("LAN discovery disabled");
        }

        // --- Exchange socket (layer `exchange`). The DHT, gossip and rendezvous layers take what
        // they need from `exchange_parts` (`None`: --no-exchange).
        let mut exchange_parts: Option<ExchangeParts> = if self.discovery.exchange {
            let layer = sup.registry().layer("exchange", LayerState::Running);
            let parts = ExchangeService::build(
                ExchangeConfig {
                    envelope: self.envelope.clone(),
                    gossip_port: self.gossip_port,
                    punching: self.discovery.punching,
                    ipv6: self.discovery.ipv6,
                },
                self.local.clone(),
                self.store.clone(),
                interfaces.clone(),
                layer.clone(),
                metrics.layer("exchange"),
            );
            let exchange = parts.exchange.clone();
            sup.spawn_restarting("exchange", Some(layer), move |ctx| {
                exchange.clone().run(ctx.cancel)
            });
            Some(parts)
        } else {
            sup.registry().layer("exchange", LayerState::Off);
            tracing::info!("exchange socket disabled (--no-exchange)");
            None
        };
        // --- Static peers (layer `static`): HELLO each `--peer` through the exchange.
        match (&exchange_parts, self.discovery.static_peers.is_empty()) {
            (Some(parts), false) => {
                let layer = sup.registry().layer("static", LayerState::Running);
                let task = StaticPeers {
                    peers: self.discovery.static_peers.clone(),
                    exchange: parts.exchange.clone(),
                    ipv6: self.discovery.ipv6,
                    layer: layer.clone(),
                    counters: metrics.layer("static"),
                };
                sup.spawn_restarting("static-peers", Some(layer), move |ctx| {
                    task.clone().run(ctx.cancel)
                });
            }
            (None, false) => {
                sup.registry().layer("static", LayerState::Off);
                tracing::warn!(
                    "--peer is ignored: static peers are contacted through the exchange socket, which --no-exchange turns off"
                );
            }
            (_, true) => {
                sup.registry().layer("static", LayerState::Off);
            }
        }
        // --- Rendezvous through introducers (layer `rendezvous`).
        self.spawn_rendezvous(sup, exchange_parts.as_mut(), reconciled.clone(), &metrics);
        // --- end exchange
        // STUN: public endpoint and NAT type (discovery::stun).
        if self.discovery.stun {
            let layer = sup.registry().layer("stun", LayerState::Running);
            let stun = StunDiscovery {
                servers: discovery::stun::servers(&self.discovery.stun_servers),
                ipv6: self.discovery.ipv6,
                local: self.local.clone(),
                interfaces: interfaces.clone(),
                wg_ifindex: self.ifindex,
                layer: layer.clone(),
                counters: metrics.layer("stun"),
            };
            sup.spawn_restarting("stun", Some(layer), move |ctx| {
                let stun = stun.clone();
                async move {
                    stun.run(ctx.cancel).await;
                    Ok(())
                }
            });
        } else {
            sup.registry().layer("stun", LayerState::Off);
            tracing::info!("STUN disabled");
        }

        // --- Mainline DHT (layer `dht`): what it finds is contacted through the exchange.
        match (&self.dht, &exchange_parts) {
            (Some(settings), Some(parts)) => {
                let layer = sup.registry().layer("dht", LayerState::Running);
                let dht = settings.task(
                    parts.exchange.clone(),
                    self.store.clone(),
                    self.local.subscribe(),
                    interfaces.clone(),
                    layer.clone(),
                    metrics.layer("dht"),
                );
                sup.spawn_restarting("dht", Some(layer), move |ctx| dht.clone().run(ctx.cancel));
            }
            (Some(_), None) => {
                sup.registry().layer("dht", LayerState::Off);
                tracing::warn!(
                    "DHT discovery is off: it contacts what it finds through the exchange socket, which --no-exchange turns off"
                );
            }
            (None, _) => {
                sup.registry().layer("dht", LayerState::Off);
                tracing::info!("DHT discovery disabled (--no-dht)");
            }
        }
        // --- end DHT

        // --- Gossip (layers `gossip`, `privacy`): takes the ANNOUNCE / DANDELION_STEM queue.
        let privacy_epoch =
            self.spawn_gossip(sup, exchange_parts.as_mut(), reconciled.clone(), &metrics);

        let store = self.store.clone();
        sup.spawn_restarting("cleanup", None, move |ctx| cleanup_loop(store.clone(), ctx));

        let (cache, store) = (self.cache.clone(), self.store.clone());
        sup.spawn_restarting("cache", None, move |ctx| {
            cache.clone().run(store.clone(), ctx)
        });

        // Never fresh (no device read yet): the first read asks for a rebuild.
        let (publisher, snapshots) = snapshot::channel(Snapshot::new(
            self.facts.base.clone(),
            wgmesh_api_types::PeerList {
                schema_version: wgmesh_api_types::SCHEMA_VERSION,
                peers: Vec::new(),
            },
            tokio::time::Instant::now(),
            None,
        ));
        // --- systemd notify (layer `systemd`): after the reconcile passes, reads the snapshots.
        super::notify::spawn(sup, reconciled.clone(), snapshots.clone());
        let status = Arc::new(StatusTask {
            wg,
            store: self.store.clone(),
            facts: self.facts.clone(),
            local: self.local.subscribe(),
            reconciled,
            interfaces: interfaces.clone(),
            ifindex: self.ifindex,
            registry: sup.registry().clone(),
            registry_changed,
            events: events.clone(),
            publisher,
            memory: std::sync::Mutex::default(),
            privacy: privacy_epoch,
            expected_ips,
            health: health_view,
        });
        sup.spawn_restarting("status", None, move |ctx| status.clone().run(ctx));

        let (state, requests) = ApiState::with_parts(snapshots, events.clone(), metrics);
        if let Some(listener) = metrics_listener {
            let listener = Arc::new(listener);
            let state = state.clone();
            sup.spawn_restarting("metrics", None, move |ctx| {
                let (listener, state) = (listener.clone(), state.clone());
                async move {
                    api::serve_metrics(listener, state, ctx.cancel).await;
                    Ok(())
                }
            });
        }
        // Kept across restarts of the task: a SIGHUP or request queued meanwhile is not lost.
        let inbox = Arc::new(tokio::sync::Mutex::new((Some(requests), hangups)));
        let control = Arc::new(Control {
            reloader: Reloader {
                file: self.reload_file.clone(),
                local: self.local.clone(),
                log: self.log_control.clone(),
            },
            cache: self.cache.clone(),
            store: self.store.clone(),
            events,
        });
        sup.spawn_restarting("control", None, move |ctx| {
            let (control, inbox) = (control.clone(), inbox.clone());
            async move {
                let mut inbox = inbox.lock().await;
                let (requests, hangups) = &mut *inbox;
                control.run(requests, hangups, ctx).await
            }
        });
        sup.spawn_critical("api", move |ctx| async move {
            api::serve(listener, state, ctx.cancel)
                .await
                .map_err(TaskError::from)
        });
        // Whatever no layer took: a queue without its receiver drops what arrives for it
        // (counted as `no_receiver`), e.g. ANNOUNCE while gossip is off.
        drop(exchange_parts);
    }

    /// Spawns the `gossip` task on `sup` (layer `gossip`, and layer `privacy` with
    /// `--privacy`), sending through the exchange and taking its `ANNOUNCE` / `DANDELION_STEM`
    /// queue out of `exchange` (left with a closed one); `tunnels` tells which peers have a
    /// working WireGuard session. Without `--gossip`, or without an exchange socket to gossip on,
    /// both layers are off. Returns the privacy epoch for the status.
    fn spawn_gossip(
        &self,
        sup: &Supervisor,
        exchange: Option<&mut ExchangeParts>,
        tunnels: watch::Receiver<Reconciled>,
        metrics: &Metrics,
    ) -> watch::Receiver<Option<Epoch>> {
        let (enabled, privacy) = (self.discovery.gossip, self.discovery.privacy);
        let (epoch_tx, epoch) = watch::channel(None);
        let (exchange, inbound) = match exchange {
            Some(parts) if enabled => {
                let closed = tokio::sync::mpsc::channel(1).1;
                let inbound = std::mem::replace(&mut parts.announcements, closed);
                (parts.exchange.clone(), inbound)
            }
            _ => {
                if enabled {
                    tracing::warn!(
                        "gossip needs the exchange socket (--no-exchange turns it off); gossip is off"
                    );
                } else if privacy {
                    tracing::warn!(
                        "--privacy works on gossip announcements and has no effect without --gossip"
                    );
                }
                sup.registry().layer("gossip", LayerState::Off);
                sup.registry().layer("privacy", LayerState::Off);
                return epoch;
            }
        };
        let layer = sup.registry().layer("gossip", LayerState::Running);
        let privacy_mode = if privacy {
            Some(PrivacyMode {
                epoch_key: self.epoch_seed,
                layer: sup.registry().layer("privacy", LayerState::Running),
                counters: metrics.layer("privacy"),
                epoch: epoch_tx,
            })
        } else {
            sup.registry().layer("privacy", LayerState::Off);
            None
        };
        let task = Arc::new(Gossip {
            exchange,
            envelope: self.envelope.clone(),
            port: self.gossip_port,
            local: self.local.subscribe(),
            store: self.store.clone(),
            mesh: self.mesh,
            ipv6: self.discovery.ipv6,
            tunnels,
            layer: layer.clone(),
            counters: metrics.layer("gossip"),
            privacy: privacy_mode,
            random: gossip::os_random,
        });
        // Kept across restarts of the task: what the exchange queued meanwhile is not lost.
        let inbound = Arc::new(tokio::sync::Mutex::new(inbound));
        tracing::info!(privacy, "in-mesh gossip on");
        sup.spawn_restarting("gossip", Some(layer), move |ctx| {
            let (task, inbound) = (task.clone(), inbound.clone());
            async move {
                let mut inbound = inbound.lock().await;
                task.run(&mut inbound, ctx.cancel).await
            }
        });
        epoch
    }
}

impl Node {
    /// Spawns the `rendezvous` task (layer `rendezvous`) when the exchange socket runs and
    /// punching is on, taking the exchange's `RENDEZVOUS_*` queue; otherwise marks the layer off.
    fn spawn_rendezvous(
        &self,
        sup: &Supervisor,
        parts: Option<&mut ExchangeParts>,
        reconciled: watch::Receiver<Reconciled>,
        metrics: &Metrics,
    ) {
        let Some(parts) = parts.filter(|_| self.discovery.punching) else {
            sup.registry().layer("rendezvous", LayerState::Off);
            tracing::info!("rendezvous disabled (--no-punching or --no-exchange)");
            return;
        };
        // The parts keep a closed receiver; the exchange's queue is ours.
        let (_, closed) = tokio::sync::mpsc::channel(1);
        let inbound = std::mem::replace(&mut parts.rendezvous, closed);
        let layer = sup.registry().layer("rendezvous", LayerState::Running);
        let task = Rendezvous {
            exchange: parts.exchange.clone(),
            tunnel: Arc::new(DeviceTunnel {
                wg: self.wg.clone(),
                reconciled,
            }),
            envelope: self.envelope.clone(),
            store: self.store.clone(),
            local: self.local.subscribe(),
            inbound: Arc::new(tokio::sync::Mutex::new(inbound)),
            gossip_port: self.gossip_port,
            ipv6: self.discovery.ipv6,
            layer: layer.clone(),
            counters: metrics.layer("rendezvous"),
            clock: system_clock(),
        };
        sup.spawn_restarting("rendezvous", Some(layer), move |ctx| {
            task.clone().run(ctx.cancel)
        });
    }
}

/// Re-reads the interfaces every [`INTERVAL`](INTERFACE_REFRESH) and publishes changes.
async fn watch_interfaces(
    net: Netlink,
    tx: Arc<watch::Sender<HostInterfaces>>,
    ctx: TaskContext,
) -> Result<(), TaskError> {
    let mut tick = tokio::time::interval(INTERFACE_REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = ctx.cancel.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let now = net.interfaces().await?;
        tx.send_if_modified(|current| {
            if *current == now {
                false
            } else {
                tracing::debug!(interfaces = now.len(), "host interfaces changed");
                *current = now;
                true
            }
        });
    }
}

async fn cleanup_loop(store: Arc<PeerStore>, ctx: TaskContext) -> Result<(), TaskError> {
    let mut tick = tokio::time::interval(CLEANUP_INTERVAL);
    loop {
        tokio::select! {
            () = ctx.cancel.cancelled() => return Ok(()),
            _ = tick.tick() => {
                for key in store.cleanup_stale(Instant::now()) {
                    tracing::info!(peer = %key, "forgot a peer silent for 10 minutes");
                }
            }
        }
    }
}
