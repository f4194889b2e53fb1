//! Discovery through the BitTorrent mainline DHT (crypto-and-wire §12), wire-compatible with Go
//! wgmesh: nodes of one mesh meet under an infohash only they can compute.
//!
//! The task `dht` (layer `dht`) runs a DHT node in server mode on UDP gossip port + 1 (a port the
//! OS chooses when that one is busy). It bootstraps from the `--dht-bootstrap` nodes (names are
//! resolved at each attempt), or from the four public routers Go uses, plus up to 16 nodes of the
//! node file left by the last run (warm start). An attempt succeeds once the routing table holds a
//! node; until then the layer is `retrying` with the reason (nothing resolves, nobody answers) and
//! tries again after 5, 10, 20, 40, 60, 60… s (±25 %). The daemon never fails to start for it.
//!
//! Once bootstrapped, it announces the current and previous hourly network ids (§2.1) with the
//! gossip port, at once and every 15 min, and queries both at once, again right after its first
//! announce reached the DHT, then every 30 s (60 s once the store held 3 peers). Every address
//! found that is not this node and was not contacted in the last minute gets a HELLO through the
//! exchange socket ([`Exchange::hello`] with method `dht`; at most 8 at once): a peer that answers
//! is stored by the exchange. Only the hourly ids ever reach the DHT: unlike Go, the static
//! network id (a hash of the secret that never changes) is not queried during bootstrap.
//!
//! The nodes around this one (with their ids, from a `find_node` of its own id) are saved to
//! `<state-dir>/<iface>-<hex NetworkID[0..8]>-dht.nodes` right after bootstrap, every 2 min, and
//! at stop (the last ones found: no query at shutdown) (atomically, mode 0600, directory 0700). At stop the node is dropped, which ends the DHT
//! library's thread and closes its socket.
//!
//! Status: `running` with a detail (port, routing-table size, announces, queries, addresses
//! contacted and answered; [`report::detail`]), or `retrying` with the [`report::Problem`].
//! Metrics ([`LayerCounters`] of layer `dht`): each announce of one id that reached the DHT is a
//! send, each contacted address that answered as a peer an event.
//!
//! Layout: [`schedule`], [`contacts`], [`nodefile`], [`ids`] and [`report`] hold the decisions
//! (pure, table-tested), [`crate::system::dht`] the DHT library and name lookups, this module the
//! task that moves values between them.

pub mod contacts;
pub mod ids;
pub mod nodefile;
pub mod report;
pub mod schedule;

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt as _, StreamExt as _};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::contacts::{Contacts, MAX_FOUND_PER_QUERY, OwnAddresses};
use self::ids::HourlyIds;
use self::nodefile::NodeRecord;
use self::report::{BootstrapPlan, Problem, View, plan_bootstrap};
use self::schedule::{
    BOOTSTRAP_TIMEOUT, OPERATION_TIMEOUT, PERSIST_INTERVAL, Schedule, bootstrap_delay,
};
use super::contact::{BoxFuture, ContactError, Contacted, Exchange};
use crate::config::{HostPort, MeshSecret};
use crate::crypto::DerivedKeys;
use crate::metrics::LayerCounters;
use crate::node::LocalNode;
use crate::peers::{Method, PeerStore};
use crate::supervisor::{LayerHandle, TaskError};
use crate::system::dht::{DhtNode, NodeConfig, resolve};
use crate::system::fs;
use crate::system::net::HostInterfaces;

/// The bootstrap nodes of Go wgmesh, used when no `--dht-bootstrap` is given.
pub const PUBLIC_ROUTERS: [&str; 4] = [
    "router.bittorrent.com:6881",
    "router.utorrent.com:6881",
    "dht.transmissionbt.com:6881",
    "dht.libtorrent.org:25401",
];
/// Most HELLOs the layer has in flight at once.
pub const MAX_CONCURRENT_HELLOS: usize = 8;
/// Most found addresses waiting for a HELLO (more wait for the next query).
pub const MAX_PENDING_HELLOS: usize = 256;
/// How long finding nodes for a periodic save of the node file may take.
const PERSIST_FIND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long writing the node file at stop may take.
const STOP_SAVE_TIMEOUT: Duration = Duration::from_secs(2);
/// Mode of the directory of the node file, when it has to be created.
const DIR_MODE: u32 = 0o700;

/// The bootstrap nodes to use: those configured, else [`PUBLIC_ROUTERS`].
pub fn bootstrap_nodes(configured: &[HostPort]) -> Vec<HostPort> {
    if configured.is_empty() {
        PUBLIC_ROUTERS
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect()
    } else {
        configured.to_vec()
    }
}

/// The path of the node file: `<state-dir>/<iface>-<hex NetworkID[0..8]>-dht.nodes`.
pub fn node_file_path(state_dir: &Path, iface: &str, network_id: &[u8; 20]) -> PathBuf {
    state_dir.join(nodefile::file_name(iface, network_id))
}

/// What the DHT layer takes from the daemon's configuration (the task itself also needs the
/// running node's handles: [`DhtSettings::task`]). `Debug` shows no secret.
#[derive(Clone, Debug)]
pub struct DhtSettings {
    /// Derives the hourly infohashes.
    pub ids: HourlyIds,
    /// The node file.
    pub node_file: PathBuf,
    /// Preferred DHT port: gossip port + 1.
    pub port: u16,
    /// The exchange port, announced.
    pub gossip_port: u16,
    /// Bootstrap nodes: `--dht-bootstrap`, else the public routers.
    pub bootstrap: Vec<HostPort>,
    /// `--no-ipv6` turns this off.
    pub ipv6: bool,
}

impl DhtSettings {
    /// The settings of interface `iface` of the mesh with `secret` (whose derived values are
    /// `keys`), state in `state_dir`, bootstrap nodes `configured` (empty: the public routers).
    pub fn new(
        secret: &MeshSecret,
        keys: &DerivedKeys,
        state_dir: &Path,
        iface: &str,
        configured: &[HostPort],
        ipv6: bool,
    ) -> Self {
        Self {
            ids: HourlyIds::new(secret.clone()),
            node_file: node_file_path(state_dir, iface, &keys.network_id),
            port: keys.dht_port(),
            gossip_port: keys.gossip_port,
            bootstrap: bootstrap_nodes(configured),
            ipv6,
        }
    }

    /// The task on all IPv4 addresses, with the running node's handles.
    pub fn task(
        &self,
        exchange: Arc<dyn Exchange>,
        store: Arc<PeerStore>,
        local: watch::Receiver<LocalNode>,
        interfaces: watch::Receiver<HostInterfaces>,
        layer: LayerHandle,
        counters: LayerCounters,
    ) -> DhtDiscovery {
        DhtDiscovery {
            ids: self.ids.clone(),
            node_file: self.node_file.clone(),
            bind: Ipv4Addr::UNSPECIFIED,
            port: self.port,
            gossip_port: self.gossip_port,
            bootstrap: self.bootstrap.clone(),
            ipv6: self.ipv6,
            exchange,
            store,
            local,
            interfaces,
            layer,
            counters,
        }
    }
}

/// The DHT discovery task.
#[derive(Clone)]
pub struct DhtDiscovery {
    /// Derives the hourly infohashes (holds the secret; never logged).
    pub ids: HourlyIds,
    /// The node file (warm start).
    pub node_file: PathBuf,
    /// Address the DHT socket binds (`0.0.0.0`; the loopback in tests).
    pub bind: Ipv4Addr,
    /// Preferred UDP port of the DHT socket (gossip port + 1; 0: any).
    pub port: u16,
    /// The exchange port, announced in the DHT.
    pub gossip_port: u16,
    /// Bootstrap nodes ([`bootstrap_nodes`]).
    pub bootstrap: Vec<HostPort>,
    /// Contact IPv6 addresses (`--no-ipv6` turns it off).
    pub ipv6: bool,
    /// Says HELLO to the addresses found.
    pub exchange: Arc<dyn Exchange>,
    /// Its size sets the query interval.
    pub store: Arc<PeerStore>,
    /// This node: its announced endpoint is never contacted.
    pub local: watch::Receiver<LocalNode>,
    /// This host's interfaces: their addresses with the gossip port are this node.
    pub interfaces: watch::Receiver<HostInterfaces>,
    /// Where the `dht` layer's state goes.
    pub layer: LayerHandle,
    /// The `dht` layer's metrics.
    pub counters: LayerCounters,
}

/// How the announce of both hourly ids went: the library's error text per id, if any.
type AnnounceOutcome = [Result<(), String>; 2];

/// What a query of both ids found, and the routing table's size after it.
struct QueryOutcome {
    found: Vec<SocketAddr>,
    table_nodes: usize,
}

/// The nodes found for a save of the node file, and how writing them went (`None`: nothing to
/// write).
struct PersistOutcome {
    nodes: Vec<NodeRecord>,
    written: Option<Result<(), String>>,
}

/// A HELLO exchange's outcome with its address.
type HelloOutcome = (SocketAddr, Result<Contacted, ContactError>);

/// Awaits the operation in `op`, or forever when there is none.
async fn poll_op<T>(op: &mut Option<BoxFuture<'static, T>>) -> T {
    match op {
        Some(fut) => fut.await,
        None => std::future::pending().await,
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A uniform sample in [0, 1] for the bootstrap jitter (0.5, no jitter, if the OS has no
/// randomness to give).
fn random_unit() -> f64 {
    let mut bytes = [0u8; 4];
    match getrandom::getrandom(&mut bytes) {
        Ok(()) => f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX),
        Err(_) => 0.5,
    }
}

impl DhtDiscovery {
    /// Runs until `cancel` fires; never returns before. Failures are reported on the layer and
    /// retried (see the module documentation).
    ///
    /// # Errors
    ///
    /// None at present: the signature lets the supervisor restart it if that changes.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), TaskError> {
        let warm = self.load_node_file().await;
        let Some((node, nodes)) = self.bootstrap(&warm, &cancel).await else {
            return Ok(());
        };
        self.operate(node, nodes, &cancel).await;
        Ok(())
    }

    /// Reads the node file (nothing when it is missing or unusable, which is logged).
    async fn load_node_file(&self) -> Vec<NodeRecord> {
        let path = self.node_file.clone();
        let read = tokio::task::spawn_blocking(move || fs::read_private(&path)).await;
        let shown = self.node_file.display();
        match read {
            Ok(Ok(bytes)) => match nodefile::decode(&bytes) {
                Ok(nodes) => {
                    tracing::info!(path = %shown, nodes = nodes.len(), "DHT warm start from the node file");
                    nodes
                }
                Err(e) => {
                    tracing::warn!(path = %shown, error = %e, "ignoring an unusable DHT node file (the next save replaces it)");
                    Vec::new()
                }
            },
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::debug!(path = %shown, "no DHT node file yet");
                Vec::new()
            }
            Ok(Err(e)) => {
                tracing::warn!(path = %shown, error = %e, "cannot read the DHT node file; starting without it");
                Vec::new()
            }
            Err(e) => {
                tracing::warn!(path = %shown, error = %e, "reading the DHT node file was interrupted");
                Vec::new()
            }
        }
    }

    /// Resolves every bootstrap node (concurrently).
    async fn resolve_all(&self) -> Vec<(String, Result<Vec<SocketAddr>, String>)> {
        let lookups = self.bootstrap.iter().map(|hp| async move {
            let result = resolve(hp.host(), hp.port())
                .await
                .map_err(|e| e.to_string());
            (hp.to_string(), result)
        });
        futures_util::future::join_all(lookups).await
    }

    /// Bootstraps until the routing table holds a node; returns the node and the nodes it
    /// found, or `None` when cancelled first.
    async fn bootstrap(
        &self,
        warm: &[NodeRecord],
        cancel: &CancellationToken,
    ) -> Option<(DhtNode, Vec<NodeRecord>)> {
        let mut node: Option<DhtNode> = None;
        let mut attempt: u32 = 0;
        let mut last_problem: Option<String> = None;
        loop {
            let resolved = tokio::select! {
                () = cancel.cancelled() => return None,
                r = self.resolve_all() => r,
            };
            let plan = plan_bootstrap(&resolved, warm);
            let result = tokio::select! {
                () = cancel.cancelled() => return None,
                r = self.attempt(&mut node, &plan, attempt == 0) => r,
            };
            let problem = match (result, node.take()) {
                (Ok(found), Some(started)) => return Some((started, found)),
                (Ok(_), None) => Problem::Start("the node stopped during bootstrap".to_owned()),
                (Err(problem), started) => {
                    node = started;
                    problem
                }
            };
            let delay = bootstrap_delay(attempt, random_unit());
            let text = problem.to_string();
            if last_problem.as_deref() == Some(text.as_str()) {
                tracing::debug!(problem = %text, retry_in_s = delay.as_secs(), "DHT still cannot bootstrap");
            } else {
                tracing::warn!(problem = %text, retry_in_s = delay.as_secs(), "DHT cannot bootstrap; retrying");
            }
            self.layer.retrying(&problem);
            last_problem = Some(text);
            attempt = attempt.saturating_add(1);
            tokio::select! {
                () = cancel.cancelled() => return None,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// One bootstrap attempt with `plan`: (re)starts the node when its bootstrap list changed,
    /// then fills the table. Returns the nodes found. The first attempt shows the layer
    /// `running` (bootstrapping); a retry leaves it `retrying` with the last error until it
    /// succeeds, so the state never claims a recovery that has not happened.
    async fn attempt(
        &self,
        node: &mut Option<DhtNode>,
        plan: &BootstrapPlan,
        first: bool,
    ) -> Result<Vec<NodeRecord>, Problem> {
        if plan.addrs.is_empty() {
            return Err(Problem::NothingResolves(plan.unusable.clone()));
        }
        if node.as_ref().is_some_and(|n| n.bootstrap() != plan.addrs) {
            // The library contacts its bootstrap list only; a new list needs a new node. The old
            // thread needs a moment to release the port.
            *node = None;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let current = match node {
            Some(n) => n,
            None => {
                let started = DhtNode::start(NodeConfig {
                    bind: self.bind,
                    port: self.port,
                    bootstrap: plan.addrs.clone(),
                })
                .await
                .map_err(|e| Problem::Start(crate::supervisor::error_chain(&e)))?;
                tracing::info!(
                    addr = %started.local_addr(),
                    bootstrap = plan.addrs.len(),
                    "DHT node started"
                );
                node.insert(started)
            }
        };
        if first {
            self.layer.running(format!(
                "UDP {}, bootstrapping from {} {}",
                current.local_addr().port(),
                plan.addrs.len(),
                if plan.addrs.len() == 1 {
                    "node"
                } else {
                    "nodes"
                }
            ));
        }
        let found = tokio::time::timeout(BOOTSTRAP_TIMEOUT, current.find_self())
            .await
            .unwrap_or_default();
        let table = current.table_size().await;
        if table == 0 {
            return Err(Problem::NoAnswer {
                tried: plan.addrs.clone(),
                unusable: plan.unusable.clone(),
            });
        }
        tracing::info!(nodes = table, "DHT bootstrapped");
        Ok(found)
    }

    /// This node's addresses as the contact filter needs them.
    fn own_addresses(&self) -> OwnAddresses {
        let ips = self
            .interfaces
            .borrow()
            .iter()
            .flat_map(|i| i.addresses.iter().map(ipnet::IpNet::addr))
            .collect();
        OwnAddresses {
            ips,
            gossip_port: self.gossip_port,
            endpoint: self.local.borrow().public_endpoint,
        }
    }

    /// Publishes the layer's state from `view`: `running` with the detail, or `retrying` while
    /// the routing table is empty.
    fn report(&self, view: &View) {
        if view.table_nodes == 0 {
            self.layer.retrying(&Problem::TableEmpty);
        } else {
            self.layer.running(report::detail(view));
        }
    }

    /// The running layer: announces, queries, contacts and saves on schedule until cancelled,
    /// then saves the node file a last time and stops the node.
    async fn operate(&self, node: DhtNode, found: Vec<NodeRecord>, cancel: &CancellationToken) {
        let node = Arc::new(node);
        let mut known_nodes = found;
        let mut schedule = Schedule::new(Instant::now());
        let mut contacts = Contacts::new();
        let mut view = View {
            port: node.local_addr().port(),
            table_nodes: node.table_size().await,
            ..View::default()
        };
        self.report(&view);
        if !known_nodes.is_empty()
            && let Err(e) = save_nodes(self.node_file.clone(), known_nodes.clone()).await
        {
            tracing::warn!(error = %e, "cannot save the DHT node file");
        }
        let mut next_persist = Instant::now() + PERSIST_INTERVAL;
        let mut announcing: Option<BoxFuture<'static, AnnounceOutcome>> = None;
        let mut querying: Option<BoxFuture<'static, QueryOutcome>> = None;
        let mut persisting: Option<BoxFuture<'static, PersistOutcome>> = None;
        let mut pending: VecDeque<SocketAddr> = VecDeque::new();
        let mut hellos: FuturesUnordered<BoxFuture<'static, HelloOutcome>> =
            FuturesUnordered::new();
        loop {
            while hellos.len() < MAX_CONCURRENT_HELLOS {
                let Some(addr) = pending.pop_front() else {
                    break;
                };
                let exchange = self.exchange.clone();
                hellos.push(Box::pin(async move {
                    (addr, exchange.hello(addr, Method::Dht).await)
                }));
            }
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep_until(schedule.announce_at()), if announcing.is_none() => {
                    announcing = Some(announce_both(node.clone(), self.ids.at(unix_now()), self.gossip_port).boxed());
                }
                outcome = poll_op(&mut announcing) => {
                    announcing = None;
                    self.announced(&outcome, &mut schedule, &mut view);
                    self.report(&view);
                }
                () = tokio::time::sleep_until(schedule.query_at()), if querying.is_none() => {
                    schedule.query_started(Instant::now());
                    querying = Some(query_both(node.clone(), self.ids.at(unix_now())).boxed());
                }
                outcome = poll_op(&mut querying) => {
                    querying = None;
                    schedule.queried(Instant::now(), self.store.count());
                    view.queries += 1;
                    view.stable = schedule.is_stable();
                    if (view.table_nodes == 0) != (outcome.table_nodes == 0) {
                        if outcome.table_nodes == 0 {
                            tracing::warn!("DHT routing table is empty: no DHT node answers any more");
                        } else {
                            tracing::info!(nodes = outcome.table_nodes, "DHT routing table has nodes again");
                        }
                    }
                    view.table_nodes = outcome.table_nodes;
                    self.found(outcome.found, &mut contacts, &mut pending, &mut view);
                    self.report(&view);
                }
                () = tokio::time::sleep_until(next_persist), if persisting.is_none() => {
                    persisting = Some(persist(node.clone(), self.node_file.clone(), PERSIST_FIND_TIMEOUT).boxed());
                }
                outcome = poll_op(&mut persisting) => {
                    persisting = None;
                    next_persist = Instant::now() + PERSIST_INTERVAL;
                    if !outcome.nodes.is_empty() {
                        known_nodes = outcome.nodes;
                    }
                    match outcome.written {
                        Some(Ok(())) => tracing::debug!(nodes = known_nodes.len(), "DHT node file saved"),
                        Some(Err(e)) => tracing::warn!(error = %e, "cannot save the DHT node file"),
                        None => tracing::debug!("no DHT node answered; the node file is kept as it is"),
                    }
                }
                Some((addr, result)) = hellos.next(), if !hellos.is_empty() => {
                    self.contacted(addr, result, &mut contacts, &mut view);
                }
            }
        }
        // Operations in flight hold handles to the node; dropping them and the node ends the
        // library's thread. The nodes last found are saved without asking the network again:
        // at shutdown the other nodes may be going away too, and a query would wait for them.
        drop((announcing, querying, persisting, hellos));
        drop(node);
        let nodes = known_nodes;
        if !nodes.is_empty() {
            let count = nodes.len();
            match tokio::time::timeout(STOP_SAVE_TIMEOUT, save_nodes(self.node_file.clone(), nodes))
                .await
            {
                Ok(Ok(())) => {
                    tracing::info!(nodes = count, path = %self.node_file.display(), "DHT node file saved")
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot save the DHT node file"),
                Err(_) => {
                    tracing::warn!(path = %self.node_file.display(), "the DHT node file was not saved in time")
                }
            }
        }
    }

    /// Takes the outcome of an announce of both ids into the schedule and the view.
    fn announced(&self, outcome: &AnnounceOutcome, schedule: &mut Schedule, view: &mut View) {
        let reached = outcome.iter().filter(|r| r.is_ok()).count();
        for _ in 0..reached {
            self.counters.sent();
        }
        let ok = reached > 0;
        if ok {
            if view.announces == 0 {
                tracing::info!("announced this mesh in the DHT");
            }
            view.announces += 1;
            self.layer.success();
        } else {
            let errors: Vec<&str> = outcome
                .iter()
                .filter_map(|r| r.as_ref().err().map(String::as_str))
                .collect();
            tracing::debug!(?errors, "DHT announce reached no node");
        }
        view.last_announce_ok = Some(ok);
        schedule.announced(Instant::now(), ok);
    }

    /// Queues a HELLO to each found address worth contacting.
    fn found(
        &self,
        found: Vec<SocketAddr>,
        contacts: &mut Contacts,
        pending: &mut VecDeque<SocketAddr>,
        view: &mut View,
    ) {
        let own = self.own_addresses();
        let selection = contacts.select(found, &own, self.ipv6, Instant::now());
        for (addr, why) in &selection.skipped {
            tracing::trace!(%addr, reason = %why, "DHT address not contacted");
        }
        for addr in selection.contact {
            if pending.len() >= MAX_PENDING_HELLOS {
                tracing::debug!(%addr, "too many DHT contacts waiting; left for the next query");
                contacts.forget(addr);
                continue;
            }
            tracing::debug!(%addr, "DHT: contacting an address found");
            view.contacted += 1;
            pending.push_back(addr);
        }
    }

    /// Takes the outcome of a HELLO to `addr`.
    fn contacted(
        &self,
        addr: SocketAddr,
        result: Result<Contacted, ContactError>,
        contacts: &mut Contacts,
        view: &mut View,
    ) {
        match result {
            Ok(contacted) => {
                view.answered += 1;
                self.counters.event();
                self.layer.success();
                // The exchange logs a new peer at `info`; a known one answers every minute.
                tracing::debug!(
                    %addr,
                    peer = %contacted.announcement.wg_pubkey,
                    hostname = %contacted.announcement.hostname,
                    "peer found in the DHT answered"
                );
                self.report(view);
            }
            Err(ContactError::OwnAddress(own)) => {
                tracing::debug!(%addr, "DHT address is this node");
                contacts.learn_own(own);
                contacts.learn_own(addr);
            }
            Err(
                e @ (ContactError::NotRunning | ContactError::Send { .. } | ContactError::Busy),
            ) => {
                // The HELLO never left: the next query may try again.
                tracing::debug!(%addr, error = %e, "DHT contact not sent");
                contacts.forget(addr);
            }
            Err(e @ ContactError::Timeout(_)) => {
                tracing::debug!(%addr, error = %e, "DHT address did not answer");
            }
        }
    }
}

/// Announces both ids (each within [`OPERATION_TIMEOUT`]).
async fn announce_both(node: Arc<DhtNode>, ids: [[u8; 20]; 2], port: u16) -> AnnounceOutcome {
    let one = |id: [u8; 20]| {
        let node = node.clone();
        async move {
            tokio::time::timeout(OPERATION_TIMEOUT, node.announce(id, port))
                .await
                .unwrap_or_else(|_| {
                    Err(format!(
                        "no answer within {} s",
                        OPERATION_TIMEOUT.as_secs()
                    ))
                })
        }
    };
    let (current, previous) = futures_util::future::join(one(ids[0]), one(ids[1])).await;
    [current, previous]
}

/// Queries both ids (each within [`OPERATION_TIMEOUT`]), then reads the table size.
async fn query_both(node: Arc<DhtNode>, ids: [[u8; 20]; 2]) -> QueryOutcome {
    let (mut current, previous) = futures_util::future::join(
        node.get_peers(ids[0], MAX_FOUND_PER_QUERY, OPERATION_TIMEOUT),
        node.get_peers(ids[1], MAX_FOUND_PER_QUERY, OPERATION_TIMEOUT),
    )
    .await;
    current.extend(previous);
    QueryOutcome {
        found: current,
        table_nodes: node.table_size().await,
    }
}

/// Finds the nodes around this one (within `find`) and writes them to `path`.
async fn persist(node: Arc<DhtNode>, path: PathBuf, find: Duration) -> PersistOutcome {
    let nodes = tokio::time::timeout(find, node.find_self())
        .await
        .unwrap_or_default();
    drop(node);
    let written = if nodes.is_empty() {
        None
    } else {
        Some(save_nodes(path, nodes.clone()).await)
    };
    PersistOutcome { nodes, written }
}

/// Writes the node file atomically (0600; its directory is created 0700 if missing).
async fn save_nodes(path: PathBuf, nodes: Vec<NodeRecord>) -> Result<(), String> {
    tokio::task::spawn_blocking(move || {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::ensure_private_dir(dir, DIR_MODE).map_err(|e| e.to_string())?;
        }
        fs::write_atomic(&path, &nodefile::encode(&nodes), nodefile::FILE_MODE)
            .map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|e| Err(format!("writing the node file was interrupted: {e}")))
}

#[cfg(test)]
mod tests;
