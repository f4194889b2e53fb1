//! The `status` task: turns what changes in the daemon into API snapshots and events, and reads
//! the device only when someone needs fresh numbers.
//!
//! - **Rebuilds on change**: a peer-store event, a reconcile pass that changed the device (or its
//!   refusals), the local node, a task or layer change (through the registry's observer), the
//!   mesh interface going up or down, or a peer's state changing with time (an active peer going
//!   dead, a quarantine ending: the task sleeps until the next such instant, [`next_transition`])
//!   schedule one rebuild [`DEBOUNCE`] later, so a burst of changes costs one rebuild and the API
//!   shows a change within about 50 ms (a reconcile pass, already debounced by the loop, at
//!   once). A rebuild builds both bodies and serialises them once.
//! - **Device reads on demand**: handshakes and counters change without any event. A route that
//!   finds the snapshot older than [`MAX_AGE`](crate::api::snapshot::MAX_AGE) asks for a refresh;
//!   the task then reads the device, unless the reconcile loop's own read (every 5 s) is recent
//!   enough, and rebuilds. An idle daemon with nobody asking reads nothing here.
//! - **Events**: peers added, changed and removed as the store reports them; state transitions
//!   (`active` → `dead`, …) by comparing each peer's state with the previous rebuild's; the store
//!   lagging behind is made good by the same comparison (peers that appeared or vanished).
//! - **Summary**: every [`SUMMARY_INTERVAL`] a rebuild logs the one-line mesh summary.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, broadcast, watch};
use tokio::time::Instant;
use wgmesh_api_types::EventKind;

use crate::api::snapshot::{MAX_AGE, Snapshot, SnapshotPublisher};
use crate::engine::reconcile::Reconciled;
use crate::events::EventBus;
use crate::keys::PublicKey;
use crate::node::LocalNode;
use crate::peers::{Peer, PeerEvent, PeerStore};
use crate::privacy::Epoch;
use crate::status::{
    self, Inputs, InterfaceState, NodeFacts, next_transition, peer_states, state_changes,
};
use crate::supervisor::{Registry, RegistryChange, TaskContext, TaskError};
use crate::system::net::HostInterfaces;
use crate::system::wg::WireGuard;

/// How long changes are gathered before one rebuild handles them all.
pub const DEBOUNCE: Duration = Duration::from_millis(50);
/// How often the mesh summary is logged.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(30);

/// The `status` task's inputs and outputs. Shared (`Arc`) by its restarts.
pub struct StatusTask<W> {
    /// The device, read on demand.
    pub wg: Arc<W>,
    /// The peers.
    pub store: Arc<PeerStore>,
    /// What does not change while the daemon runs.
    pub facts: NodeFacts,
    /// This node now.
    pub local: watch::Receiver<LocalNode>,
    /// The reconcile loop's last pass (and its device read).
    pub reconciled: watch::Receiver<Reconciled>,
    /// The host's interfaces (for the mesh interface's state).
    pub interfaces: watch::Receiver<HostInterfaces>,
    /// Index of the mesh interface.
    pub ifindex: u32,
    /// Tasks and layers.
    pub registry: Registry,
    /// Notified by the registry's observer ([`registry_observer`]) on every change.
    pub registry_changed: Arc<Notify>,
    /// Where peer events go.
    pub events: EventBus,
    /// Where snapshots go, and where refresh requests come from.
    pub publisher: SnapshotPublisher,
    /// Each peer's state at the last rebuild; kept across restarts so none re-announces every
    /// peer.
    pub memory: Mutex<HashMap<PublicKey, &'static str>>,
    /// Privacy mode's current epoch (stays `None` without `--privacy`).
    pub privacy: watch::Receiver<Option<Epoch>>,
    /// Peers that lost a mesh-IP collision and the address they should move to.
    pub expected_ips: watch::Receiver<BTreeMap<PublicKey, Ipv4Addr>>,
    /// The health task's probe state per peer (its sender is gone in tests without it).
    pub health: watch::Receiver<crate::health::HealthView>,
}

/// The registry observer the daemon installs: task and layer changes become events, and every
/// visible change wakes the `status` task for a rebuild. Never blocks.
pub fn registry_observer(
    events: EventBus,
    changed: Arc<Notify>,
) -> impl Fn(&RegistryChange) + Send + Sync + 'static {
    move |change| {
        match change {
            RegistryChange::Task { name, state, error } => {
                events.publish(EventKind::TaskState {
                    task: (*name).to_owned(),
                    state: state.as_str().to_owned(),
                    error: error.clone(),
                });
            }
            RegistryChange::Layer { name, state, error } => {
                events.publish(EventKind::LayerState {
                    layer: (*name).to_owned(),
                    state: state.as_str().to_owned(),
                    error: error.clone(),
                });
            }
            RegistryChange::LayerDetail { .. } => {}
        }
        changed.notify_one();
    }
}

/// The reconcile loop's view as the task keeps it: the last pass, with the newest device read
/// (the loop's or the task's own).
struct View {
    reconciled: Reconciled,
}

impl View {
    /// Takes the pass's refusals, relay plan and summary, and its device read if newer than
    /// ours. Returns whether the change is worth a rebuild (the pass changed the device, the
    /// refusals or the relays).
    fn take(&mut self, published: &Reconciled) -> bool {
        let changed = published.last_pass.is_some_and(|p| p.changed)
            || published.refused != self.reconciled.refused
            || published.relays != self.reconciled.relays;
        if published.read_at > self.reconciled.read_at {
            self.reconciled.live = published.live.clone();
            self.reconciled.read_at = published.read_at;
        }
        self.reconciled.refused = published.refused.clone();
        self.reconciled.relays = published.relays.clone();
        self.reconciled.last_pass = published.last_pass;
        changed
    }
}

/// Why a rebuild happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// Something changed (debounced).
    Change,
    /// A route asked for a fresh snapshot.
    Refresh,
    /// The periodic summary.
    Summary,
}

impl<W: WireGuard + 'static> StatusTask<W> {
    /// Runs until cancelled (see the module documentation).
    ///
    /// # Errors
    ///
    /// When the reconcile loop is gone (its channel closed): nothing left to report on.
    pub async fn run(self: Arc<Self>, ctx: TaskContext) -> Result<(), TaskError> {
        let mut store_events = self.store.subscribe();
        let mut reconciled = self.reconciled.clone();
        let mut local = self.local.clone();
        let mut interfaces = self.interfaces.clone();
        let mut privacy = self.privacy.clone();
        let mut privacy_open = true;
        let mut health = self.health.clone();
        let mut health_open = true;
        let mut view = View {
            reconciled: reconciled.borrow_and_update().clone(),
        };
        let mut interface = InterfaceState::of(&interfaces.borrow_and_update(), self.ifindex);
        let mut summary = tokio::time::interval(SUMMARY_INTERVAL);
        summary.tick().await;
        let (mut local_open, mut interfaces_open) = (true, true);
        // A rebuild at once: whatever happened while the task was not running.
        let mut pending = Some(Instant::now());
        let mut transition: Option<Instant> = None;
        loop {
            let far = Instant::now() + SUMMARY_INTERVAL;
            let trigger = tokio::select! {
                // Cancellation first: at shutdown the other tasks drop their channels too, and
                // that is not a failure.
                biased;
                () = ctx.cancel.cancelled() => return Ok(()),
                () = self.publisher.refresh_requested() => Trigger::Refresh,
                () = tokio::time::sleep_until(pending.unwrap_or(far)), if pending.is_some() => {
                    Trigger::Change
                }
                _ = summary.tick() => Trigger::Summary,
                event = store_events.recv() => {
                    match event {
                        Ok(event) => self.peer_event(event),
                        // Missed events: the next rebuild compares the peer sets.
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => {
                            return Err("the peer store is gone".into());
                        }
                    }
                    pending.get_or_insert_with(|| Instant::now() + DEBOUNCE);
                    continue;
                }
                changed = reconciled.changed() => {
                    changed.map_err(|_| "the reconcile loop is gone")?;
                    if view.take(&reconciled.borrow_and_update()) {
                        // The pass already gathered its burst (its own debounce): show it now.
                        pending = Some(Instant::now());
                    }
                    continue;
                }
                changed = local.changed(), if local_open => {
                    // The node's sender lives as long as the daemon; a closed one changes no more.
                    local_open = changed.is_ok();
                    pending.get_or_insert_with(|| Instant::now() + DEBOUNCE);
                    continue;
                }
                changed = interfaces.changed(), if interfaces_open => {
                    // Closed only once the interfaces task is gone for good: keep the last list.
                    interfaces_open = changed.is_ok();
                    let now = InterfaceState::of(&interfaces.borrow_and_update(), self.ifindex);
                    if now != interface {
                        interface = now;
                        pending.get_or_insert_with(|| Instant::now() + DEBOUNCE);
                    }
                    continue;
                }
                changed = privacy.changed(), if privacy_open => {
                    // Without privacy mode nobody holds the sender: nothing will change.
                    privacy_open = changed.is_ok();
                    pending.get_or_insert_with(|| Instant::now() + DEBOUNCE);
                    continue;
                }
                changed = health.changed(), if health_open => {
                    health_open = changed.is_ok();
                    pending.get_or_insert_with(|| Instant::now() + DEBOUNCE);
                    continue;
                }
                () = self.registry_changed.notified() => {
                    pending.get_or_insert_with(|| Instant::now() + DEBOUNCE);
                    continue;
                }
                () = tokio::time::sleep_until(transition.unwrap_or(far)), if transition.is_some() => {
                    transition = None;
                    pending.get_or_insert_with(|| Instant::now() + DEBOUNCE);
                    continue;
                }
            };
            if trigger == Trigger::Refresh {
                self.read_device_if_stale(&mut view).await;
            }
            pending = None;
            let (snapshot, next) = self.rebuild(&view, interface);
            transition = next;
            if trigger == Trigger::Summary {
                log_summary(&snapshot);
            }
            self.publisher.publish(snapshot);
        }
    }

    /// Reads the device unless the newest read is at most [`MAX_AGE`] old. A failed read keeps
    /// the old data (the reconcile loop reports device failures).
    async fn read_device_if_stale(&self, view: &mut View) {
        let now = Instant::now();
        let recent = view
            .reconciled
            .read_at
            .is_some_and(|t| now.saturating_duration_since(t) <= MAX_AGE);
        if recent {
            return;
        }
        match self.wg.read().await {
            Ok(live) => {
                view.reconciled.live = live;
                view.reconciled.read_at = Some(Instant::now());
            }
            Err(e) => tracing::debug!(error = %e, "status: cannot read the device"),
        }
    }

    /// Announces a store event at once (the rebuild that follows compares states).
    fn peer_event(&self, event: PeerEvent) {
        let mut memory = self.memory.lock().unwrap_or_else(PoisonError::into_inner);
        match event {
            PeerEvent::New(key) | PeerEvent::Updated(key) if !memory.contains_key(&key) => {
                // Gone again already: its removal follows.
                let Some(peer) = self.store.get(&key) else {
                    return;
                };
                let now = Instant::now().into_std();
                memory.insert(key, peer.liveness(now).as_str());
                drop(memory);
                self.events.publish(added(&peer));
            }
            PeerEvent::New(_) => {}
            PeerEvent::Updated(key) => {
                drop(memory);
                self.events.publish(EventKind::PeerChanged {
                    public_key: key.to_string(),
                });
            }
            PeerEvent::Removed(key) => {
                if memory.remove(&key).is_some() {
                    drop(memory);
                    self.events.publish(EventKind::PeerRemoved {
                        public_key: key.to_string(),
                    });
                }
            }
        }
    }

    /// Builds the snapshot of now, announces state changes since the last one, and returns the
    /// next instant a peer's state changes by itself.
    fn rebuild(&self, view: &View, interface: InterfaceState) -> (Snapshot, Option<Instant>) {
        let built = Instant::now();
        let now = built.into_std();
        let peers = self.store.list();
        let local = self.local.borrow().clone();
        let tasks = self.registry.tasks();
        let layers = self.registry.layers();
        let health = self.health.borrow().clone();
        let inputs = Inputs {
            health: &health,
            peers: &peers,
            reconciled: &view.reconciled,
            local: &local,
            tasks: &tasks,
            layers: &layers,
            interface,
            now,
            wall: SystemTime::now(),
        };
        let mut st = status::status(&self.facts, &inputs);
        st.privacy = self
            .privacy
            .borrow()
            .as_ref()
            .map(|epoch| status::privacy(epoch, now));
        let mut list = status::peer_list(&inputs);
        mark_collision_losers(&mut list, &self.expected_ips.borrow());
        self.announce_states(&peers, now);
        let next = next_transition(&peers, now).map(|t| built + t.saturating_duration_since(now));
        (
            Snapshot::new(st, list, built, view.reconciled.read_at),
            next,
        )
    }

    /// Compares every peer's state with the last rebuild's: transitions, and peers that appeared
    /// or vanished without their store event having been seen.
    fn announce_states(&self, peers: &[Peer], now: std::time::Instant) {
        let states = peer_states(peers, now);
        let mut memory = self.memory.lock().unwrap_or_else(PoisonError::into_inner);
        let mut events = Vec::new();
        for p in peers {
            if !memory.contains_key(&p.public_key) {
                events.push(added(p));
            }
        }
        let mut gone: Vec<&PublicKey> = memory.keys().filter(|k| !states.contains_key(k)).collect();
        gone.sort();
        events.extend(gone.into_iter().map(|k| EventKind::PeerRemoved {
            public_key: k.to_string(),
        }));
        events.extend(
            state_changes(&memory, &states)
                .into_iter()
                .map(|(key, from, to)| EventKind::PeerState {
                    public_key: key.to_string(),
                    from: from.to_owned(),
                    to: to.to_owned(),
                }),
        );
        *memory = states;
        drop(memory);
        for e in events {
            self.events.publish(e);
        }
    }
}

/// The event of `peer` appearing.
fn added(peer: &Peer) -> EventKind {
    EventKind::PeerAdded {
        public_key: peer.public_key.to_string(),
        hostname: peer.hostname.clone(),
        via: peer
            .discovered_via
            .first()
            .map_or("unknown", |m| m.as_str())
            .to_owned(),
    }
}

fn log_summary(snapshot: &Snapshot) {
    tracing::info!(
        "{}",
        status::summary_line(&snapshot.status, &snapshot.peers)
    );
    for p in &snapshot.peers.peers {
        tracing::debug!(
            peer = %p.public_key, hostname = %p.hostname, mesh_ip = ?p.mesh_ip,
            endpoint = ?p.endpoint, via = ?p.discovered_via, state = %p.state,
            handshake_s = ?p.last_handshake_seconds_ago, path = ?p.path,
            relay_via = ?p.relay_via, "peer"
        );
    }
}

/// Sets `expected_mesh_ip` on each listed peer that lost a mesh-IP collision (and clears it on
/// the others).
fn mark_collision_losers(
    list: &mut wgmesh_api_types::PeerList,
    expected: &BTreeMap<PublicKey, Ipv4Addr>,
) {
    for p in &mut list.peers {
        p.expected_mesh_ip = p
            .public_key
            .parse::<PublicKey>()
            .ok()
            .and_then(|k| expected.get(&k))
            .map(ToString::to_string);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::broadcast::error::TryRecvError;
    use tokio_util::sync::CancellationToken;
    use wgmesh_api_types::Event;

    use super::*;
    use crate::api::snapshot::{self, Snapshots};
    use crate::peers::{DEAD_AFTER, Method, PeerUpdate};
    use crate::supervisor::LayerState;
    use crate::system::net::HostInterface;
    use crate::system::wg::fake::FakeWireGuard;
    use crate::system::wg::{ApplyReport, DeviceUpdate, LiveDevice, WgError};

    const IFINDEX: u32 = 7;

    /// The fake device, counting reads.
    struct Counting {
        fake: FakeWireGuard,
        reads: AtomicUsize,
    }

    impl WireGuard for Counting {
        fn name(&self) -> &str {
            self.fake.name()
        }

        async fn read(&self) -> Result<LiveDevice, WgError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.fake.read().await
        }

        async fn apply(&self, update: DeviceUpdate) -> Result<ApplyReport, WgError> {
            self.fake.apply(update).await
        }
    }

    struct Rig {
        wg: Arc<Counting>,
        store: Arc<PeerStore>,
        registry: Registry,
        snapshots: Snapshots,
        events: broadcast::Receiver<Event>,
        reconciled: watch::Sender<Reconciled>,
        _local: watch::Sender<LocalNode>,
        interfaces: watch::Sender<HostInterfaces>,
        privacy: watch::Sender<Option<Epoch>>,
        cancel: CancellationToken,
        task: tokio::task::JoinHandle<Result<(), TaskError>>,
    }

    impl Rig {
        fn reads(&self) -> usize {
            self.wg.reads.load(Ordering::SeqCst)
        }

        /// Every event so far, as `type:key-or-name` strings.
        fn drain(&mut self) -> Vec<String> {
            let mut out = Vec::new();
            loop {
                match self.events.try_recv() {
                    Ok(e) => out.push(describe(&e.kind)),
                    Err(TryRecvError::Empty) => return out,
                    Err(e) => panic!("{e}"),
                }
            }
        }

        async fn stop(self) {
            self.cancel.cancel();
            self.task.await.unwrap().unwrap();
        }
    }

    fn describe(kind: &EventKind) -> String {
        match kind {
            EventKind::PeerAdded {
                public_key, via, ..
            } => format!("added:{}:{via}", &public_key[..4]),
            EventKind::PeerChanged { public_key } => format!("changed:{}", &public_key[..4]),
            EventKind::PeerRemoved { public_key } => format!("removed:{}", &public_key[..4]),
            EventKind::PeerState {
                public_key,
                from,
                to,
            } => {
                format!("state:{}:{from}->{to}", &public_key[..4])
            }
            EventKind::LayerState { layer, state, .. } => format!("layer:{layer}:{state}"),
            EventKind::TaskState { task, state, .. } => format!("task:{task}:{state}"),
            other => format!("{other:?}"),
        }
    }

    fn key(n: u8) -> PublicKey {
        PublicKey([n; 32])
    }

    /// The first 4 characters of the base64 key, as [`describe`] shows it.
    fn short(n: u8) -> String {
        key(n).to_string()[..4].to_owned()
    }

    fn now() -> std::time::Instant {
        Instant::now().into_std()
    }

    fn announce(store: &PeerStore, n: u8) {
        let update = PeerUpdate {
            hostname: format!("h{n}"),
            mesh_ip: Some(std::net::Ipv4Addr::new(10, 1, 0, n)),
            endpoint: Some(format!("192.0.2.{n}:51820").parse().unwrap()),
            routable_networks: Some(Vec::new()),
            ..PeerUpdate::new(key(n))
        };
        store.update(update, Method::Lan, now());
    }

    fn up() -> HostInterfaces {
        vec![HostInterface {
            index: IFINDEX,
            name: "wgt0".into(),
            up: true,
            multicast: false,
            loopback: false,
            addresses: Vec::new(),
        }]
    }

    async fn settle() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }

    /// A running `status` task over a fake device and a store with `peers` in it.
    async fn rig(peers: &[u8]) -> Rig {
        let wg = Arc::new(Counting {
            fake: FakeWireGuard::new("wgt0"),
            reads: AtomicUsize::new(0),
        });
        let store = Arc::new(PeerStore::new(1000));
        for n in peers {
            announce(&store, *n);
        }
        let registry = Registry::default();
        let bus = EventBus::new(4096);
        let events = bus.subscribe();
        let changed = Arc::new(Notify::new());
        registry.observe(registry_observer(bus.clone(), changed.clone()));
        let (reconciled_tx, reconciled) = watch::channel(Reconciled::default());
        let (local_tx, local) = watch::channel(crate::node::tests::local());
        let (interfaces_tx, interfaces) = watch::channel(up());
        let (privacy_tx, privacy_rx) = watch::channel(None);
        let (publisher, snapshots) = snapshot::channel(Snapshot::new(
            Default::default(),
            Default::default(),
            Instant::now(),
            None,
        ));
        let task = Arc::new(StatusTask {
            wg: wg.clone(),
            store: store.clone(),
            facts: NodeFacts {
                base: Default::default(),
                started: now(),
            },
            local,
            reconciled,
            interfaces,
            ifindex: IFINDEX,
            registry: registry.clone(),
            registry_changed: changed,
            events: bus,
            publisher,
            memory: Mutex::default(),
            privacy: privacy_rx,
            expected_ips: watch::channel(BTreeMap::new()).1,
            health: watch::channel(Default::default()).1,
        });
        let cancel = CancellationToken::new();
        let ctx = TaskContext {
            cancel: cancel.clone(),
        };
        let task = tokio::spawn(task.run(ctx));
        settle().await;
        Rig {
            wg,
            store,
            registry,
            snapshots,
            events,
            reconciled: reconciled_tx,
            _local: local_tx,
            interfaces: interfaces_tx,
            privacy: privacy_tx,
            cancel,
            task,
        }
    }

    fn listed(s: &Snapshots) -> Vec<(String, String)> {
        s.latest()
            .peers
            .peers
            .iter()
            .map(|p| (p.public_key[..4].to_owned(), p.state.clone()))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_change_is_announced_at_once_and_served_after_the_debounce() {
        let mut r = rig(&[]).await;
        assert!(r.drain().is_empty());
        announce(&r.store, 2);
        settle().await;
        assert_eq!(r.drain(), [format!("added:{}:lan", short(2))]);
        assert!(listed(&r.snapshots).is_empty(), "not before the debounce");
        tokio::time::advance(DEBOUNCE).await;
        settle().await;
        assert_eq!(listed(&r.snapshots), [(short(2), "active".to_owned())]);
        // A change of a known peer, then its removal.
        r.store.update(
            PeerUpdate {
                hostname: "renamed".into(),
                ..PeerUpdate::new(key(2))
            },
            Method::Lan,
            now(),
        );
        r.store.remove(&key(2));
        settle().await;
        assert_eq!(
            r.drain(),
            [
                format!("changed:{}", short(2)),
                format!("removed:{}", short(2))
            ]
        );
        tokio::time::advance(DEBOUNCE).await;
        settle().await;
        assert!(listed(&r.snapshots).is_empty());
        assert!(
            r.drain().is_empty(),
            "no second removal from the comparison"
        );
        r.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_privacy_epoch_is_served_with_its_relays_and_time_left() {
        let r = rig(&[]).await;
        tokio::time::advance(DEBOUNCE).await;
        settle().await;
        assert_eq!(r.snapshots.latest().status.privacy, None, "no privacy mode");
        let relay = |n: u8| crate::privacy::Relay {
            key: key(n),
            mesh_ip: std::net::Ipv4Addr::new(10, 1, 0, n),
        };
        r.privacy.send_replace(Some(Epoch {
            id: 4,
            relays: vec![relay(3), relay(2)],
            started: now() - Duration::from_secs(100),
        }));
        settle().await;
        tokio::time::advance(DEBOUNCE).await;
        settle().await;
        let privacy = r.snapshots.latest().status.privacy.clone();
        assert_eq!(
            privacy,
            Some(wgmesh_api_types::PrivacyStatus {
                epoch: 4,
                relays: vec![key(3).to_string(), key(2).to_string()],
                // 600 s minus the 100 s before, minus the debounce: 499.9 s, in whole seconds.
                seconds_until_rotation: 499,
            })
        );
        r.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_daemon_reads_its_device_only_when_a_route_asks() {
        let r = rig(&[2, 3]).await;
        tokio::time::advance(Duration::from_secs(120)).await;
        settle().await;
        assert_eq!(r.reads(), 0, "nobody asked");
        let s = r.snapshots.fresh().await;
        assert_eq!(r.reads(), 1);
        assert!(s.is_fresh(Instant::now()));
        assert_eq!(s.peers.peers.len(), 2);
        // Fresh enough: served as it is.
        let again = r.snapshots.fresh().await;
        assert!(Arc::ptr_eq(&s, &again));
        assert_eq!(r.reads(), 1);
        // Stale again: one read for every request waiting.
        tokio::time::advance(Duration::from_secs(2)).await;
        let (a, b) = tokio::join!(r.snapshots.fresh(), r.snapshots.fresh());
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(r.reads(), 2);
        // The reconcile loop just read the device: a stale snapshot is rebuilt without a read.
        tokio::time::advance(Duration::from_secs(2)).await;
        r.reconciled
            .send_modify(|rec| rec.read_at = Some(Instant::now()));
        settle().await;
        let s = r.snapshots.fresh().await;
        assert!(s.is_fresh(Instant::now()));
        assert_eq!(r.reads(), 2);
        r.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_going_silent_is_announced_dead_without_any_store_event() {
        let mut r = rig(&[2]).await;
        tokio::time::advance(DEBOUNCE).await;
        settle().await;
        r.drain();
        assert_eq!(listed(&r.snapshots), [(short(2), "active".to_owned())]);
        tokio::time::advance(DEAD_AFTER).await;
        settle().await;
        tokio::time::advance(DEBOUNCE).await;
        settle().await;
        assert_eq!(r.drain(), [format!("state:{}:active->dead", short(2))]);
        assert_eq!(listed(&r.snapshots), [(short(2), "dead".to_owned())]);
        // Heard of again: back to active, through the store's event.
        announce(&r.store, 2);
        settle().await;
        tokio::time::advance(DEBOUNCE).await;
        settle().await;
        assert_eq!(
            r.drain(),
            [
                format!("changed:{}", short(2)),
                format!("state:{}:dead->active", short(2))
            ]
        );
        r.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn tasks_layers_and_the_interface_show_in_events_and_health() {
        let mut r = rig(&[]).await;
        let layer = r.registry.layer("lan", LayerState::Running);
        layer.retrying(&"no multicast-capable interface is up");
        settle().await;
        assert_eq!(r.drain(), ["layer:lan:running", "layer:lan:retrying"]);
        tokio::time::advance(DEBOUNCE).await;
        settle().await;
        let st = r.snapshots.latest().status.clone();
        assert_eq!(st.discovery["lan"].state, "retrying");
        // No api/reconcile task in this rig: unhealthy for that, and the layer is a warning.
        let codes: Vec<&str> = st.health.reasons.iter().map(|r| r.code.as_str()).collect();
        assert_eq!(
            codes,
            ["task_not_running", "task_not_running", "layer_retrying"]
        );
        // The mesh interface goes down: critical, within the debounce.
        r.interfaces.send_modify(|list| list[0].up = false);
        settle().await;
        tokio::time::advance(DEBOUNCE).await;
        settle().await;
        let st = r.snapshots.latest().status.clone();
        assert_eq!(st.health.reasons[0].code, "interface_down");
        r.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn missed_store_events_are_made_good_by_the_next_rebuild() {
        let mut r = rig(&[]).await;
        // More events than the store buffers, without letting the task run: it lags.
        for n in 1..=255 {
            announce(&r.store, n);
        }
        for n in 1..=255 {
            r.store.update(
                PeerUpdate {
                    hostname: "again".into(),
                    ..PeerUpdate::new(key(n))
                },
                Method::Lan,
                now(),
            );
        }
        r.store.remove(&key(1));
        settle().await;
        tokio::time::advance(DEBOUNCE).await;
        settle().await;
        let events = r.drain();
        let added: std::collections::BTreeSet<&String> =
            events.iter().filter(|e| e.starts_with("added:")).collect();
        assert_eq!(added.len(), 254, "each peer once, the removed one never");
        assert_eq!(
            events.iter().filter(|e| e.starts_with("added:")).count(),
            254
        );
        assert!(!events.iter().any(|e| e.starts_with("removed:")));
        assert_eq!(r.snapshots.latest().peers.peers.len(), 254);
        r.stop().await;
    }

    #[test]
    fn a_changed_relay_plan_is_taken_and_rebuilds() {
        use std::collections::BTreeMap;

        use crate::engine::relay::{RelayPlan, Relayed};
        let mut view = View {
            reconciled: Reconciled::default(),
        };
        assert!(!view.take(&Reconciled::default()));
        let relays = RelayPlan {
            table: BTreeMap::from([(
                PublicKey([7; 32]),
                Relayed {
                    via: PublicKey([2; 32]),
                    direct_since: None,
                    since: std::time::Instant::now(),
                },
            )]),
            reasons: BTreeMap::new(),
        };
        let published = Reconciled {
            relays: relays.clone(),
            ..Reconciled::default()
        };
        assert!(view.take(&published));
        assert_eq!(view.reconciled.relays, relays);
        assert!(
            !view.take(&published),
            "the same plan again changes nothing"
        );
    }

    #[test]
    fn collision_losers_show_their_expected_mesh_ip() {
        let peer = |k: PublicKey| wgmesh_api_types::Peer {
            public_key: k.to_string(),
            expected_mesh_ip: Some("10.9.9.9".into()),
            ..Default::default()
        };
        let mut list = wgmesh_api_types::PeerList {
            schema_version: wgmesh_api_types::SCHEMA_VERSION,
            peers: vec![peer(PublicKey([2; 32])), peer(PublicKey([3; 32]))],
        };
        let expected: BTreeMap<PublicKey, Ipv4Addr> =
            [(PublicKey([3; 32]), Ipv4Addr::new(10, 1, 2, 3))].into();
        mark_collision_losers(&mut list, &expected);
        let shown: Vec<Option<&str>> = list
            .peers
            .iter()
            .map(|p| p.expected_mesh_ip.as_deref())
            .collect();
        assert_eq!(shown, [None, Some("10.1.2.3")]);
    }
}
