//! The reconcile loop: read the live device, compute the desired one from the peers that belong on
//! it ([`PeerStore::for_device`]: active ones and unconfirmed cache restores), apply the
//! difference in one call, sync the routes. It runs every [`INTERVAL`] and within
//! [`DEBOUNCE`] of a peer-store change, and is only ever cancelled between passes, so an apply in
//! flight always completes (seed 004: shutdown must not cut a peer half-configured).
//!
//! Every pass reports what it did: its duration and peer changes go to the metrics, a pass that
//! changed the device is published as an event, and the last pass is part of what the loop
//! publishes for `GET /v1/status` ([`Reconciled::last_pass`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ipnet::{Ipv4Net, Ipv6Net};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::desired::{RefusedRoute, desired_device};
use super::diff::{DeviceSettings, diff};
use super::relay::{self, RelayPlan};
use super::route_policy::RoutePolicy;
use crate::events::EventBus;
use crate::keys::{PresharedKey, PrivateKey, PublicKey};
use crate::metrics::{Metrics, PassCounts};
use crate::node::LocalNode;
use crate::peers::{PeerStore, handshake_is_recent};
use crate::system::net::{HostInterfaces, Netlink, local_networks};
use crate::system::wg::{ApplyReport, DeviceUpdate, LiveDevice, WgError, WireGuard};

/// Time between passes when nothing happens.
pub const INTERVAL: Duration = Duration::from_secs(5);
/// How long a burst of peer-store events is gathered before one pass handles them all.
pub const DEBOUNCE: Duration = Duration::from_millis(100);
/// How long after adding peers those still without a handshake are kicked (see
/// [`WireGuard::kick`]): long enough for the other side's own reconcile pass to have added us.
pub const KICK_AFTER: Duration = Duration::from_millis(300);
/// Consecutive passes that cannot read the device before the loop gives up (the device is gone:
/// the daemon exits non-zero rather than pretending to manage it).
pub const MAX_FAILED_PASSES: u32 = 3;

/// Where routes go: the kernel routing table of the mesh interface.
#[derive(Clone)]
pub struct RouteTarget {
    /// Netlink handle.
    pub net: Netlink,
    /// Index of the mesh interface.
    pub ifindex: u32,
}

/// The mesh's own address ranges (advertised routes may not overlap them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MeshNetworks {
    /// The mesh IPv4 subnet.
    pub v4: Ipv4Net,
    /// The mesh IPv6 /64.
    pub v6: Ipv6Net,
}

/// What the loop publishes after every pass, for the API and the status log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// The device as read after the pass.
    pub live: LiveDevice,
    /// When `live` was read (`None` before the first pass).
    pub read_at: Option<tokio::time::Instant>,
    /// Advertised networks not installed, by peer, with the reason.
    pub refused: BTreeMap<PublicKey, Vec<RefusedRoute>>,
    /// The pass that published this (`None` before the first pass).
    pub last_pass: Option<PassSummary>,
    /// Relayed peers and the reason behind every peer's path; the next pass starts from it.
    pub relays: RelayPlan,
}

/// The options of the relay decisions ([`relay::Context`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayOptions {
    /// `--force-relay`: relay every peer that rules 1–4 do not keep direct.
    pub force_relay: bool,
    /// IPv6 enabled (an IPv6 endpoint is tried directly).
    pub ipv6: bool,
}

/// When a pass ended, how long it took and what it changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PassSummary {
    /// When it ended.
    pub ended: tokio::time::Instant,
    /// How long it took: device read, diff, apply, read back, routes.
    pub duration: Duration,
    /// Peer changes.
    pub counts: PassCounts,
    /// Whether it wrote to the device (or tried to): peers, or the key and port at start.
    pub changed: bool,
}

/// Everything one pass needs.
pub struct Reconciler<W> {
    /// The device.
    pub wg: Arc<W>,
    /// The peers.
    pub store: Arc<PeerStore>,
    /// Kernel routes, if this node manages them.
    pub routes: Option<RouteTarget>,
    /// This node (key, addresses, port), as it is now.
    pub local: watch::Receiver<LocalNode>,
    /// This host's interfaces (advertised routes may not overlap their networks).
    pub interfaces: watch::Receiver<HostInterfaces>,
    /// The mesh's own ranges.
    pub mesh: MeshNetworks,
    /// The device's private key (the daemon's one copy).
    pub private_key: Arc<PrivateKey>,
    /// The mesh PSK.
    pub psk: PresharedKey,
    /// Relay decision options.
    pub relay: RelayOptions,
    /// The health monitor's probe results: a peer whose probes fail is relayed at the next pass
    /// (the channel of a node without health probing never changes).
    pub health: watch::Receiver<crate::health::HealthView>,
    /// The device and refusals after each pass, for status and the API.
    pub published: watch::Sender<Reconciled>,
    /// Where every pass is counted.
    pub metrics: Arc<Metrics>,
    /// Where passes that changed the device are announced.
    pub events: EventBus,
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    /// What the device apply did.
    pub applied: ApplyReport,
    /// Peer operations that failed even when applied one by one.
    pub failed_peers: usize,
    /// Peers this pass created on the device.
    pub added: Vec<PublicKey>,
    /// Relayed peers whose direct path has no fresh handshake ([`relay::retry_direct`]).
    pub retry_direct: Vec<PublicKey>,
    /// Advertised networks not installed.
    pub refused: BTreeMap<PublicKey, Vec<RefusedRoute>>,
    /// How long the pass took.
    pub duration: Duration,
}

impl PassReport {
    /// The peer changes, as the metrics and the status count them.
    pub fn counts(&self) -> PassCounts {
        PassCounts {
            added: self.applied.added,
            updated: self.applied.updated,
            removed: self.applied.removed,
            failed: self.failed_peers,
        }
    }

    /// Whether the pass wrote to the device, or tried to and failed.
    pub fn changed_device(&self) -> bool {
        self.applied.writes > 0 || self.failed_peers > 0
    }
}

impl<W: WireGuard> Reconciler<W> {
    fn policy(&self) -> RoutePolicy {
        let ifindex = self.routes.as_ref().map(|r| r.ifindex);
        RoutePolicy {
            mesh_v4: Some(self.mesh.v4),
            mesh_v6: Some(self.mesh.v6),
            local_networks: local_networks(&self.interfaces.borrow(), ifindex),
        }
    }

    /// One pass: read, diff, apply, routes, publish.
    ///
    /// # Errors
    ///
    /// Only when the device cannot be read; a refused apply or route is logged and reported.
    pub async fn reconcile_once(&self) -> Result<PassReport, WgError> {
        let started = tokio::time::Instant::now();
        let local = self.local.borrow().clone();
        let now = Instant::now();
        let peers = self.store.for_device(now);
        let live = self.wg.read().await?;
        let mut read_at = tokio::time::Instant::now();
        let policy = self.policy();
        let handshakes = handshake_ages(&live, SystemTime::now());
        let previous = self.published.borrow().relays.table.clone();
        let unreachable: BTreeSet<PublicKey> = self
            .health
            .borrow()
            .iter()
            .filter(|(_, probe)| probe.failures >= crate::health::OFFLINE_AFTER_FAILURES)
            .map(|(key, _)| *key)
            .collect();
        let relays = relay::plan(
            &peers,
            &relay::Context {
                local: &local,
                local_networks: &policy.local_networks,
                force_relay: self.relay.force_relay,
                ipv6: self.relay.ipv6,
                handshakes: &handshakes,
                unreachable: &unreachable,
                now,
            },
            &previous,
        );
        log_relay_changes(&previous, &relays);
        let desired = desired_device(&local, &peers, self.psk, &policy, &relays.routes());
        let me = DeviceSettings {
            private_key: &self.private_key,
            public_key: local.public_key,
            listen_port: local.listen_port,
        };
        let update = diff(&live, &desired, &me, SystemTime::now());
        let mut report = PassReport::default();
        let live = if update.is_empty() {
            live
        } else {
            tracing::debug!(
                add = update.add.len(),
                update = update.update.len(),
                remove = update.remove.len(),
                "applying device changes"
            );
            let added: Vec<PublicKey> = update.add.iter().map(|p| p.public_key).collect();
            report = apply_resilient(self.wg.as_ref(), update).await;
            report.added = added;
            let live = self.wg.read().await?;
            read_at = tokio::time::Instant::now();
            live
        };
        self.store.heard_from(
            &recent_handshakes(&live, Instant::now(), SystemTime::now()),
            Instant::now(),
        );
        if let Some(target) = &self.routes
            && let Err(e) = target
                .net
                .sync_routes(target.ifindex, &desired.routes)
                .await
        {
            tracing::warn!(error = %e, "route sync incomplete");
        }
        report.refused = desired.refused;
        report.retry_direct = relay::retry_direct(&relays.table, &handshakes);
        self.metrics.set_relayed_peers(relays.table.len());
        let ended = tokio::time::Instant::now();
        report.duration = ended.saturating_duration_since(started);
        self.published.send_replace(Reconciled {
            live,
            read_at: Some(read_at),
            refused: report.refused.clone(),
            relays,
            last_pass: Some(PassSummary {
                ended,
                duration: report.duration,
                counts: report.counts(),
                changed: report.changed_device(),
            }),
        });
        Ok(report)
    }

    /// Counts the pass; announces it if it changed the device.
    fn report(&self, report: &PassReport) {
        let counts = report.counts();
        self.metrics.reconcile_pass(report.duration, counts);
        if report.changed_device() {
            self.events
                .publish(wgmesh_api_types::EventKind::Reconciled {
                    added: counts.added,
                    updated: counts.updated,
                    removed: counts.removed,
                    failed: counts.failed,
                    duration_ms: u64::try_from(report.duration.as_millis()).unwrap_or(u64::MAX),
                });
        }
    }

    /// Kicks the peers among `added` that have no handshake yet.
    async fn kick_silent(&self, added: &[PublicKey]) {
        let Ok(live) = self.wg.read().await else {
            return;
        };
        let silent: Vec<PublicKey> = added
            .iter()
            .filter(|k| {
                live.peers
                    .get(k)
                    .is_some_and(|p| p.last_handshake.is_none())
            })
            .copied()
            .collect();
        if !silent.is_empty() {
            tracing::debug!(peers = silent.len(), "kicking handshakes with new peers");
            self.wg.kick(&silent).await;
        }
    }

    /// Runs passes until `cancel` fires; never interrupts a pass.
    ///
    /// # Errors
    ///
    /// [`WgError`] of the last attempt when [`MAX_FAILED_PASSES`] passes in a row could not read
    /// the device.
    pub async fn run(mut self, cancel: CancellationToken) -> Result<(), WgError> {
        let mut events = self.store.subscribe();
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut to_kick: Vec<PublicKey> = Vec::new();
        let kick_timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(kick_timer);
        let mut failures = 0;
        let mut logged = BTreeSet::new();
        let mut last_direct_retry = tokio::time::Instant::now();
        // A pass exactly when a relayed peer is due back to direct (see relay::DIRECT_HOLD).
        let switch_timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(switch_timer);
        let mut switch_due = false;
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => return Ok(()),
                () = &mut kick_timer, if !to_kick.is_empty() => {
                    let peers = std::mem::take(&mut to_kick);
                    self.kick_silent(&peers).await;
                    continue;
                }
                () = &mut switch_timer, if switch_due => {
                    switch_due = false;
                    tick.reset();
                }
                _ = tick.tick() => {}
                changed = self.local.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    tick.reset();
                }
                changed = self.interfaces.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    tick.reset();
                }
                event = events.recv() => {
                    if matches!(event, Err(broadcast::error::RecvError::Closed)) {
                        return Ok(());
                    }
                    // Gather the rest of the burst, then handle it in one pass.
                    tokio::select! {
                        () = cancel.cancelled() => return Ok(()),
                        () = tokio::time::sleep(DEBOUNCE) => {}
                    }
                    while events.try_recv().is_ok() {}
                    tick.reset();
                }
            }
            match self.reconcile_once().await {
                Ok(report) => {
                    failures = 0;
                    self.report(&report);
                    let next_switch = self.published.borrow().relays.next_switch();
                    switch_due = next_switch.is_some();
                    if let Some(at) = next_switch {
                        // Just after the due instant, so the pass sees the hold as complete.
                        let at = tokio::time::Instant::from_std(at) + Duration::from_millis(1);
                        switch_timer.as_mut().reset(at);
                    }
                    for (peer, r) in new_refusals(&mut logged, &report.refused) {
                        tracing::warn!(
                            peer = %peer.short(),
                            prefix = %r.prefix,
                            reason = r.reason.code(),
                            detail = %r.reason,
                            "not routing a network this peer advertises"
                        );
                    }
                    if last_direct_retry.elapsed() >= relay::DIRECT_RETRY {
                        last_direct_retry = tokio::time::Instant::now();
                        if !report.retry_direct.is_empty() {
                            tracing::debug!(
                                peers = report.retry_direct.len(),
                                "trying the direct path of relayed peers"
                            );
                            self.wg.kick(&report.retry_direct).await;
                        }
                    }
                    if !report.added.is_empty() {
                        to_kick.extend(report.added);
                        kick_timer
                            .as_mut()
                            .reset(tokio::time::Instant::now() + KICK_AFTER);
                    }
                }
                Err(e) => {
                    failures += 1;
                    self.metrics.reconcile_failed();
                    if failures >= MAX_FAILED_PASSES {
                        return Err(e);
                    }
                    tracing::warn!(error = %e, failures, "reconcile pass failed");
                }
            }
        }
    }
}

/// The refusals not seen in the previous pass; `seen` becomes this pass's set, so a refusal that
/// goes away and comes back is reported again. Each refusal is logged once, not every 5 s.
fn new_refusals(
    seen: &mut BTreeSet<(PublicKey, RefusedRoute)>,
    refused: &BTreeMap<PublicKey, Vec<RefusedRoute>>,
) -> Vec<(PublicKey, RefusedRoute)> {
    let now: BTreeSet<(PublicKey, RefusedRoute)> = refused
        .iter()
        .flat_map(|(k, rs)| rs.iter().map(move |r| (*k, r.clone())))
        .collect();
    let fresh = now.difference(seen).cloned().collect();
    *seen = now;
    fresh
}

/// Age of the last handshake of every peer of `live` that has one (a time in the future counts
/// as just now).
fn handshake_ages(live: &LiveDevice, wall: SystemTime) -> BTreeMap<PublicKey, Duration> {
    live.peers
        .iter()
        .filter_map(|(key, p)| {
            p.last_handshake
                .map(|t| (*key, wall.duration_since(t).unwrap_or_default()))
        })
        .collect()
}

/// Logs every peer that changed path (relayed, direct, another relay) with the reason.
fn log_relay_changes(previous: &relay::RelayTable, now: &RelayPlan) {
    for (peer, r) in &now.table {
        if previous.get(peer).map(|p| p.via) != Some(r.via) {
            let reason = now.reasons.get(peer).map_or("", |r| r.code());
            tracing::info!(peer = %peer.short(), via = %r.via.short(), reason, "relaying peer");
        }
    }
    for peer in previous.keys().filter(|k| !now.table.contains_key(*k)) {
        let reason = now.reasons.get(peer).map_or("gone", |r| r.code());
        tracing::info!(peer = %peer.short(), reason, "peer back to its direct path");
    }
}

/// The peers of `live` whose last handshake is recent enough to prove them alive
/// ([`handshake_is_recent`]), with the monotonic instant of that handshake.
fn recent_handshakes(
    live: &LiveDevice,
    now: Instant,
    wall: SystemTime,
) -> Vec<(PublicKey, Instant)> {
    live.peers
        .iter()
        .filter(|(_, p)| handshake_is_recent(p.last_handshake, wall))
        .filter_map(|(key, p)| {
            let age = p
                .last_handshake
                .and_then(|t| wall.duration_since(t).ok())
                .unwrap_or_default();
            now.checked_sub(age).map(|at| (*key, at))
        })
        .collect()
}

/// Applies `update` in one call; if the device refuses it, applies the device settings and then
/// each peer on its own, so one bad peer never holds back the others.
async fn apply_resilient<W: WireGuard>(wg: &W, update: DeviceUpdate) -> PassReport {
    let whole = update.clone();
    match wg.apply(whole).await {
        Ok(applied) => PassReport {
            applied,
            ..PassReport::default()
        },
        Err(e) => {
            tracing::warn!(error = %e, "device update refused; applying peer by peer");
            let mut report = PassReport::default();
            for part in split(update) {
                let what = part_label(&part);
                match wg.apply(part).await {
                    Ok(r) => {
                        report.applied.writes += r.writes;
                        report.applied.added += r.added;
                        report.applied.updated += r.updated;
                        report.applied.removed += r.removed;
                    }
                    Err(e) => {
                        report.failed_peers += 1;
                        tracing::warn!(peer = %what, error = %e, "peer change failed");
                    }
                }
            }
            report
        }
    }
}

fn part_label(part: &DeviceUpdate) -> String {
    part.add
        .iter()
        .map(|p| p.public_key)
        .chain(part.update.iter().map(|u| u.public_key))
        .chain(part.remove.iter().copied())
        .next()
        .map_or_else(|| "device settings".to_owned(), |k| k.to_string())
}

/// The update as separate parts: device settings first, then one part per peer operation.
fn split(update: DeviceUpdate) -> Vec<DeviceUpdate> {
    let mut parts = Vec::new();
    if update.private_key.is_some() || update.listen_port.is_some() {
        parts.push(DeviceUpdate {
            private_key: update.private_key,
            listen_port: update.listen_port,
            ..DeviceUpdate::default()
        });
    }
    parts.extend(update.remove.into_iter().map(|k| DeviceUpdate {
        remove: vec![k],
        ..DeviceUpdate::default()
    }));
    parts.extend(update.update.into_iter().map(|u| DeviceUpdate {
        update: vec![u],
        ..DeviceUpdate::default()
    }));
    parts.extend(update.add.into_iter().map(|p| DeviceUpdate {
        add: vec![p],
        ..DeviceUpdate::default()
    }));
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peers::{CACHE_GRACE, Method, PeerUpdate};
    use crate::system::wg::fake::FakeWireGuard;

    fn key(b: u8) -> PublicKey {
        PublicKey([b; 32])
    }

    fn announce(b: u8) -> PeerUpdate {
        PeerUpdate {
            public_key: key(b),
            hostname: format!("h{b}"),
            mesh_ip: Some(format!("10.1.0.{b}").parse().unwrap()),
            mesh_ipv6: None,
            endpoint: Some(format!("192.0.2.{b}:51820").parse().unwrap()),
            introducer: false,
            routable_networks: Some(Vec::new()),
            nat_type: None,
            last_seen: None,
        }
    }

    /// The senders a daemon keeps alive for its reconciler.
    struct Rig {
        _local: watch::Sender<LocalNode>,
        _interfaces: watch::Sender<HostInterfaces>,
    }

    fn reconciler(
        fake: Arc<FakeWireGuard>,
        store: Arc<PeerStore>,
    ) -> (Reconciler<FakeWireGuard>, Rig) {
        let private_key = Arc::new(PrivateKey::from_bytes([1; 32]));
        let local = LocalNode {
            public_key: private_key.public_key(),
            ..crate::node::tests::local()
        };
        let (local_tx, local) = watch::channel(local);
        let (ifaces_tx, interfaces) = watch::channel(HostInterfaces::new());
        let r = Reconciler {
            wg: fake,
            store,
            routes: None,
            local,
            interfaces,
            mesh: MeshNetworks {
                v4: "10.1.0.0/16".parse().unwrap(),
                v6: "fd00::/64".parse().unwrap(),
            },
            private_key,
            psk: PresharedKey([9; 32]),
            relay: RelayOptions {
                force_relay: false,
                ipv6: true,
            },
            health: watch::channel(crate::health::HealthView::default()).1,
            published: watch::channel(Reconciled::default()).0,
            metrics: Arc::new(Metrics::default()),
            events: EventBus::new(64),
        };
        (
            r,
            Rig {
                _local: local_tx,
                _interfaces: ifaces_tx,
            },
        )
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_peer_is_applied_within_the_debounce_not_the_interval() {
        let fake = Arc::new(FakeWireGuard::new("wgt0"));
        let store = Arc::new(PeerStore::new(1000));
        let cancel = CancellationToken::new();
        let (r, _rig) = reconciler(fake.clone(), store.clone());
        let task = tokio::spawn(r.run(cancel.clone()));
        // The first tick fires at once: key and port.
        settle().await;
        assert_eq!(fake.applies().len(), 1);
        store.update(announce(2), Method::Lan, Instant::now());
        store.update(announce(3), Method::Lan, Instant::now());
        settle().await;
        assert_eq!(fake.applies().len(), 1, "nothing before the debounce");
        tokio::time::advance(DEBOUNCE + Duration::from_millis(10)).await;
        settle().await;
        let applies = fake.applies();
        assert_eq!(applies.len(), 2, "both peers in one pass");
        assert_eq!(applies[1].add.len(), 2);
        // Peer 2 answers on its own; peer 3 stays silent and is kicked after KICK_AFTER.
        fake.set_handshake(&key(2), SystemTime::now());
        assert!(fake.kicks().is_empty());
        tokio::time::advance(KICK_AFTER).await;
        settle().await;
        assert_eq!(fake.kicks(), vec![key(3)]);
        cancel.cancel();
        task.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn cached_peers_go_on_the_device_at_once_but_not_after_their_grace() {
        let fake = Arc::new(FakeWireGuard::new("wgt0"));
        let store = Arc::new(PeerStore::new(1000));
        let now = Instant::now();
        let hour_ago = now.checked_sub(Duration::from_secs(3600)).unwrap();
        let cached = |b: u8| PeerUpdate {
            last_seen: Some(hour_ago),
            ..announce(b)
        };
        // 2: restored now, seen an hour ago. 3: restored a grace period ago, never confirmed.
        store.update(cached(2), Method::Cache, now);
        store.update(
            cached(3),
            Method::Cache,
            now.checked_sub(CACHE_GRACE).unwrap(),
        );
        let (r, _rig) = reconciler(fake.clone(), store.clone());
        let report = r.reconcile_once().await.unwrap();
        assert_eq!(
            report.added,
            [key(2)],
            "the fresh restore, despite its old last_seen"
        );
        // A live source confirms 2: it stays, now with the live endpoint.
        let mut live = announce(2);
        live.endpoint = Some("192.0.2.99:51820".parse().unwrap());
        store.update(live, Method::Lan, Instant::now());
        r.reconcile_once().await.unwrap();
        let device = fake.read().await.unwrap();
        assert_eq!(device.peers.keys().copied().collect::<Vec<_>>(), [key(2)]);
        assert_eq!(
            device.peers[&key(2)].endpoint,
            Some("192.0.2.99:51820".parse().unwrap())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_removed_behind_our_back_returns_on_the_next_tick() {
        let fake = Arc::new(FakeWireGuard::new("wgt0"));
        let store = Arc::new(PeerStore::new(1000));
        store.update(announce(2), Method::Lan, Instant::now());
        let (r, _rig) = reconciler(fake.clone(), store.clone());
        r.reconcile_once().await.unwrap();
        fake.remove_behind_back(&key(2));
        let report = r.reconcile_once().await.unwrap();
        assert_eq!(report.applied.added, 1);
        assert!(fake.read().await.unwrap().peers.contains_key(&key(2)));
        // Nothing to do: no write at all.
        let report = r.reconcile_once().await.unwrap();
        assert_eq!(report.applied.writes, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn one_bad_peer_does_not_block_the_others() {
        let fake = Arc::new(FakeWireGuard::new("wgt0"));
        let store = Arc::new(PeerStore::new(1000));
        for b in 2..6 {
            store.update(announce(b), Method::Lan, Instant::now());
        }
        fake.reject_peer(key(3));
        let (r, _rig) = reconciler(fake.clone(), store);
        let report = r.reconcile_once().await.unwrap();
        assert_eq!(report.failed_peers, 1);
        let live = fake.read().await.unwrap();
        assert_eq!(
            live.peers.keys().copied().collect::<Vec<_>>(),
            vec![key(2), key(4), key(5)]
        );
        assert!(live.public_key.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn cancelling_during_a_slow_apply_waits_for_it() {
        let fake = Arc::new(FakeWireGuard::new("wgt0"));
        let store = Arc::new(PeerStore::new(1000));
        let cancel = CancellationToken::new();
        fake.set_apply_delay(Duration::from_secs(3));
        let (r, _rig) = reconciler(fake.clone(), store);
        let task = tokio::spawn(r.run(cancel.clone()));
        settle().await;
        // The first pass is inside its 3 s apply; cancel now.
        tokio::time::advance(Duration::from_secs(1)).await;
        cancel.cancel();
        settle().await;
        assert!(
            !task.is_finished(),
            "the loop stopped in the middle of an apply"
        );
        assert!(fake.applies().is_empty());
        tokio::time::advance(Duration::from_secs(3)).await;
        task.await.unwrap().unwrap();
        assert_eq!(fake.applies().len(), 1, "the apply in flight completed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_device_that_cannot_be_read_ends_the_loop_with_an_error() {
        let fake = Arc::new(FakeWireGuard::new("wgt0"));
        let store = Arc::new(PeerStore::new(1000));
        fake.fail_reads(MAX_FAILED_PASSES as usize - 1);
        let (r, _rig) = reconciler(fake.clone(), store.clone());
        let cancel = CancellationToken::new();
        let task = tokio::spawn(r.run(cancel.clone()));
        // Two failed passes, then the device answers again: the loop keeps going.
        tokio::time::advance(INTERVAL * 3).await;
        settle().await;
        assert!(!task.is_finished());
        fake.fail_reads(usize::MAX);
        tokio::time::advance(INTERVAL * (MAX_FAILED_PASSES + 1)).await;
        settle().await;
        let err = task.await.unwrap().unwrap_err();
        assert!(err.to_string().contains("wgt0"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn every_pass_is_counted_and_passes_that_change_the_device_are_announced() {
        let fake = Arc::new(FakeWireGuard::new("wgt0"));
        let store = Arc::new(PeerStore::new(1000));
        store.update(announce(2), Method::Lan, Instant::now());
        let (r, _rig) = reconciler(fake.clone(), store.clone());
        let (metrics, mut events) = (r.metrics.clone(), r.events.subscribe());
        let mut published = r.published.subscribe();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(r.run(cancel.clone()));
        settle().await;
        // The first pass adds peer 2; the next one (after the interval) changes nothing.
        tokio::time::advance(INTERVAL).await;
        settle().await;
        let v = metrics.values();
        assert_eq!(v.reconcile_runs, 2);
        assert_eq!(v.reconcile_duration.count, 2);
        assert_eq!(v.reconcile_changes, [1, 0, 0, 0]);
        let first = events.try_recv().unwrap();
        assert!(
            matches!(
                first.kind,
                wgmesh_api_types::EventKind::Reconciled {
                    added: 1,
                    updated: 0,
                    removed: 0,
                    failed: 0,
                    ..
                }
            ),
            "{first:?}"
        );
        assert!(
            events.try_recv().is_err(),
            "the no-op pass is not announced"
        );
        let last = published.borrow_and_update().clone();
        let pass = last.last_pass.unwrap();
        assert!(!pass.changed);
        assert_eq!(pass.counts, PassCounts::default());
        assert!(last.read_at.is_some_and(|t| t <= pass.ended));
        // A pass that cannot read the device is counted as a failure.
        fake.fail_reads(1);
        tokio::time::advance(INTERVAL).await;
        settle().await;
        assert_eq!(metrics.values().reconcile_failures, 1);
        cancel.cancel();
        task.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_transitive_peer_goes_through_the_introducer_and_its_direct_path_is_retried() {
        let fake = Arc::new(FakeWireGuard::new("wgt0"));
        let store = Arc::new(PeerStore::new(1000));
        let intro = PeerUpdate {
            introducer: true,
            ..announce(2)
        };
        store.update(intro, Method::Lan, Instant::now());
        store.update(announce(3), Method::DhtTransitive, Instant::now());
        let (r, _rig) = reconciler(fake.clone(), store.clone());
        let mut published = r.published.subscribe();
        let r_metrics = r.metrics.clone();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(r.run(cancel.clone()));
        settle().await;
        let live = fake.read().await.unwrap();
        assert!(live.peers[&key(3)].allowed_ips.is_empty(), "{live:?}");
        assert_eq!(
            live.peers[&key(3)].endpoint,
            Some("192.0.2.3:51820".parse().unwrap())
        );
        let via_intro: Vec<String> = live.peers[&key(2)]
            .allowed_ips
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(via_intro, ["10.1.0.2/32", "10.1.0.3/32"]);
        let relays = published.borrow_and_update().relays.clone();
        assert_eq!(relays.table[&key(3)].via, key(2));
        let exposition =
            crate::metrics::render(&wgmesh_api_types::Status::default(), &r_metrics.values());
        assert!(
            exposition.contains("\nwgmesh_relayed_peers 1\n"),
            "{exposition}"
        );
        fake.set_handshake(&key(2), SystemTime::now());
        tokio::time::advance(KICK_AFTER).await;
        settle().await;
        let count = |k: PublicKey| fake.kicks().iter().filter(|x| **x == k).count();
        let before = count(key(3));
        // The next pass after DIRECT_RETRY kicks the relayed peer's own entry, not the relay.
        for _ in 0..6 {
            tokio::time::advance(INTERVAL).await;
            settle().await;
        }
        assert!(count(key(3)) > before, "{:?}", fake.kicks());
        assert_eq!(count(key(2)), 0, "{:?}", fake.kicks());
        cancel.cancel();
        task.await.unwrap().unwrap();
    }

    #[test]
    fn each_refusal_is_reported_once_until_it_goes_away() {
        use crate::engine::desired::RefusedRoute;
        use crate::engine::route_policy::RefusalReason;
        let r = RefusedRoute {
            prefix: "0.0.0.0/1".parse().unwrap(),
            reason: RefusalReason::TooBroad,
        };
        let pass = BTreeMap::from([(key(2), vec![r.clone()])]);
        let mut seen = BTreeSet::new();
        assert_eq!(new_refusals(&mut seen, &pass), vec![(key(2), r.clone())]);
        assert!(new_refusals(&mut seen, &pass).is_empty(), "not again");
        assert!(new_refusals(&mut seen, &BTreeMap::new()).is_empty());
        assert_eq!(new_refusals(&mut seen, &pass).len(), 1, "back again");
    }
}
