//! The reconcile loop: read the live device, compute the desired one from the active peers, apply
//! the difference in one call, sync the routes. It runs every [`INTERVAL`] and within
//! [`DEBOUNCE`] of a peer-store change, and is only ever cancelled between passes, so an apply in
//! flight always completes (seed 004: shutdown must not cut a peer half-configured).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::desired::{LocalNode, desired_device};
use super::diff::{DeviceSettings, diff};
use crate::peers::PeerStore;
use crate::system::net::Netlink;
use crate::system::wg::{
    ApplyReport, DeviceUpdate, LiveDevice, PresharedKey, PrivateKey, PublicKey, WgError, WireGuard,
};

/// Time between passes when nothing happens.
pub const INTERVAL: Duration = Duration::from_secs(5);
/// How long a burst of peer-store events is gathered before one pass handles them all.
pub const DEBOUNCE: Duration = Duration::from_millis(100);
/// How long after adding peers those still without a handshake are kicked (see
/// [`WireGuard::kick`]): long enough for the other side's own reconcile pass to have added us.
pub const KICK_AFTER: Duration = Duration::from_millis(300);

/// Where routes go: the kernel routing table of the mesh interface.
#[derive(Clone)]
pub struct RouteTarget {
    /// Netlink handle.
    pub net: Netlink,
    /// Index of the mesh interface.
    pub ifindex: u32,
}

/// Everything one pass needs.
pub struct Reconciler<W> {
    /// The device.
    pub wg: Arc<W>,
    /// The peers.
    pub store: Arc<PeerStore>,
    /// Kernel routes, if this node manages them.
    pub routes: Option<RouteTarget>,
    /// This node.
    pub local: LocalNode,
    /// The device's private key.
    pub private_key: PrivateKey,
    /// The device's listen port.
    pub listen_port: u16,
    /// The mesh PSK.
    pub psk: PresharedKey,
    /// The live device after each pass, for status and the API.
    pub live_tx: watch::Sender<LiveDevice>,
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
}

impl<W: WireGuard> Reconciler<W> {
    /// One pass: read, diff, apply, routes, publish.
    pub async fn reconcile_once(&self) -> Result<PassReport, WgError> {
        let peers = self.store.active(Instant::now());
        let desired = desired_device(&self.local, &peers, self.psk);
        let live = self.wg.read().await?;
        let me = DeviceSettings {
            private_key: &self.private_key,
            public_key: self.local.public_key,
            listen_port: self.listen_port,
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
            self.wg.read().await?
        };
        if let Some(target) = &self.routes
            && let Err(e) = target
                .net
                .sync_routes(target.ifindex, &desired.routes)
                .await
        {
            tracing::warn!(error = %e, "route sync incomplete");
        }
        self.live_tx.send_replace(live);
        Ok(report)
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
    pub async fn run(self, cancel: CancellationToken) {
        let mut events = self.store.subscribe();
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut to_kick: Vec<PublicKey> = Vec::new();
        let kick_timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(kick_timer);
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                () = &mut kick_timer, if !to_kick.is_empty() => {
                    let peers = std::mem::take(&mut to_kick);
                    self.kick_silent(&peers).await;
                    continue;
                }
                _ = tick.tick() => {}
                event = events.recv() => {
                    if matches!(event, Err(broadcast::error::RecvError::Closed)) {
                        break;
                    }
                    // Gather the rest of the burst, then handle it in one pass.
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        () = tokio::time::sleep(DEBOUNCE) => {}
                    }
                    while events.try_recv().is_ok() {}
                    tick.reset();
                }
            }
            match self.reconcile_once().await {
                Ok(report) if !report.added.is_empty() => {
                    to_kick.extend(report.added);
                    kick_timer
                        .as_mut()
                        .reset(tokio::time::Instant::now() + KICK_AFTER);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "reconcile pass failed"),
            }
        }
    }
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
    use crate::peers::PeerUpdate;
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

    fn reconciler(fake: Arc<FakeWireGuard>, store: Arc<PeerStore>) -> Reconciler<FakeWireGuard> {
        let private_key = PrivateKey([1; 32]);
        Reconciler {
            wg: fake,
            store,
            routes: None,
            local: LocalNode {
                public_key: private_key.public_key(),
                mesh_ip: "10.1.0.1".parse().unwrap(),
                mesh_ipv6: "fd00::1".parse().unwrap(),
            },
            private_key,
            listen_port: 51820,
            psk: PresharedKey([9; 32]),
            live_tx: watch::channel(LiveDevice::default()).0,
        }
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
        let task = tokio::spawn(reconciler(fake.clone(), store.clone()).run(cancel.clone()));
        // The first tick fires at once: key and port.
        settle().await;
        assert_eq!(fake.applies().len(), 1);
        store.update(announce(2), "lan", Instant::now());
        store.update(announce(3), "lan", Instant::now());
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
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_removed_behind_our_back_returns_on_the_next_tick() {
        let fake = Arc::new(FakeWireGuard::new("wgt0"));
        let store = Arc::new(PeerStore::new(1000));
        store.update(announce(2), "lan", Instant::now());
        let r = reconciler(fake.clone(), store.clone());
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
            store.update(announce(b), "lan", Instant::now());
        }
        fake.reject_peer(key(3));
        let report = reconciler(fake.clone(), store)
            .reconcile_once()
            .await
            .unwrap();
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
        let task = tokio::spawn(reconciler(fake.clone(), store).run(cancel.clone()));
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
        task.await.unwrap();
        assert_eq!(fake.applies().len(), 1, "the apply in flight completed");
    }
}
