//! The `health` task: the handshake/transfer monitor every [`HEALTH_INTERVAL`] and a probe round
//! every [`PROBE_INTERVAL`], both over the peers that belong on the device
//! ([`PeerStore::for_device`]: quarantined peers are neither probed nor checked). Decisions are
//! the pure rules of [`super::state`]; this only moves values.
//!
//! - Device state (handshakes, rx/tx) comes from the reconcile loop's last read ([`Reconciled`],
//!   at most one pass old), never from a read of its own.
//! - Probes run concurrently, one persistent session per peer; a dead peer costs its own
//!   timeouts, not everyone's.
//! - Re-applying a stale peer is a [`WireGuard::kick`] (a new handshake now, on backends that
//!   can force one): Go's `SetPeer` with the peer's own endpoint is what every reconcile pass
//!   already does for a peer without a fresh handshake (`engine::diff` puts the stored endpoint
//!   back over a roamed one). Evicting is
//!   [`PeerStore::quarantine`] for [`QUARANTINE_TTL`], which the reconcile loop sees at once and
//!   which removes the peer from the device; its counters and session are dropped.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::{StreamExt as _, stream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::probe::{Session, dial, ping};
use super::state::{
    Counters, HEALTH_INTERVAL, PROBE_INTERVAL, ProbeAction, TickAction, health_tick, on_probe,
    probe_enforced,
};
use crate::engine::reconcile::Reconciled;
use crate::keys::PublicKey;
use crate::node::LocalNode;
use crate::peers::{Peer, PeerStore, QUARANTINE_TTL};
use crate::supervisor::{LayerHandle, TaskError};
use crate::system::wg::{LiveDevice, WireGuard};

/// Probes in flight at once: a round over many dead peers (each up to 2 × 1.2 s of connecting)
/// must not open a socket per peer at the same instant.
pub const MAX_CONCURRENT_PROBES: usize = 128;

/// What the API shows of one peer's probing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeView {
    /// Consecutive failed probes.
    pub failures: u32,
    /// Whether the last probe succeeded.
    pub last_ok: bool,
}

/// Probing of every peer being probed, published after each round.
pub type HealthView = BTreeMap<PublicKey, ProbeView>;

/// The `health` task's inputs and outputs.
pub struct HealthMonitor<W> {
    /// The device (for re-applying a stale peer).
    pub wg: Arc<W>,
    /// The peers.
    pub store: Arc<PeerStore>,
    /// This node (our mesh addresses are the probes' source).
    pub local: watch::Receiver<LocalNode>,
    /// The reconcile loop's last pass: the device's handshakes and counters.
    pub reconciled: watch::Receiver<Reconciled>,
    /// gossip port + 2000.
    pub probe_port: u16,
    /// The mesh interface probes are bound to (`None` in tests).
    pub device: Option<String>,
    /// Whether to try the peers' mesh IPv6 first.
    pub ipv6: bool,
    /// Where the probe state goes (the API reads it).
    pub published: watch::Sender<HealthView>,
    /// Layer `health` in status.
    pub layer: LayerHandle,
}

/// The state the task keeps between rounds.
#[derive(Default)]
struct Tracked {
    counters: HashMap<PublicKey, Counters>,
    sessions: HashMap<PublicKey, Session>,
    last_ok: HashMap<PublicKey, bool>,
}

impl Tracked {
    fn forget(&mut self, key: &PublicKey) {
        self.counters.remove(key);
        self.sessions.remove(key);
        self.last_ok.remove(key);
    }
}

/// One peer to probe in a round.
struct Target {
    key: PublicKey,
    addrs: Vec<(SocketAddr, IpAddr)>,
    enforced: bool,
    session: Option<Session>,
}

fn handshake_age(live: &LiveDevice, key: &PublicKey, wall: SystemTime) -> Option<Duration> {
    live.peers
        .get(key)
        .and_then(|p| p.last_handshake)
        .map(|t| wall.duration_since(t).unwrap_or_default())
}

/// The probe addresses of `peer`: mesh IPv6 first (when enabled), then IPv4, each with our own
/// address of that family as the source.
pub fn probe_targets(
    peer: &Peer,
    local: &LocalNode,
    port: u16,
    ipv6: bool,
) -> Vec<(SocketAddr, IpAddr)> {
    let mut out = Vec::new();
    if ipv6 && let Some(v6) = peer.mesh_ipv6 {
        out.push((SocketAddr::new(v6.into(), port), local.mesh_ipv6.into()));
    }
    if let Some(v4) = peer.mesh_ip {
        out.push((SocketAddr::new(v4.into(), port), local.mesh_ip.into()));
    }
    out
}

impl<W: WireGuard> HealthMonitor<W> {
    /// Runs until `cancel`.
    ///
    /// # Errors
    ///
    /// Never at present; the signature lets the supervisor restart it like every task.
    pub async fn run(&self, cancel: CancellationToken) -> Result<(), TaskError> {
        let mut tracked = Tracked::default();
        let mut health = tokio::time::interval(HEALTH_INTERVAL);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut probes = tokio::time::interval(PROBE_INTERVAL);
        probes.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.layer.running(None);
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => return Ok(()),
                _ = health.tick() => self.health_pass(&mut tracked).await,
                _ = probes.tick() => {
                    tokio::select! {
                        () = cancel.cancelled() => return Ok(()),
                        () = self.probe_round(&mut tracked) => {}
                    }
                }
            }
        }
    }

    fn evict(&self, tracked: &mut Tracked, key: &PublicKey, why: &'static str) {
        tracing::warn!(peer = %key.short(), reason = why, ttl_s = QUARANTINE_TTL.as_secs(), "evicting unresponsive peer; quarantined");
        self.store.quarantine(key, Instant::now() + QUARANTINE_TTL);
        tracked.forget(key);
    }

    /// Signal A (§9.1) over the peers on the device.
    async fn health_pass(&self, tracked: &mut Tracked) {
        let reconciled = self.reconciled.borrow().clone();
        let Some(read_at) = reconciled.read_at else {
            return;
        };
        if read_at.elapsed() > HEALTH_INTERVAL {
            tracing::debug!("no recent device read; skipping the health check");
            return;
        }
        let now = Instant::now();
        let wall = SystemTime::now();
        let me = self.local.borrow().public_key;
        let peers = self.store.for_device(now);
        for peer in peers.iter().filter(|p| p.public_key != me) {
            let key = peer.public_key;
            // A relayed peer's own entry only carries direct-path attempts (relay
            // make-before-break): its silence is expected; the probes through the relay judge it.
            if reconciled.relays.table.contains_key(&key) {
                continue;
            }
            let Some(lp) = reconciled.live.peers.get(&key) else {
                continue;
            };
            let age = handshake_age(&reconciled.live, &key, wall);
            let total = lp.rx_bytes.saturating_add(lp.tx_bytes);
            let c = tracked.counters.entry(key).or_default();
            match health_tick(c, age, total) {
                TickAction::None => {}
                TickAction::Reapply => {
                    tracing::info!(peer = %key.short(), "stale handshake and no transfer growth; forcing a new handshake");
                    self.wg.kick(&[key]).await;
                }
                TickAction::Evict => self.evict(tracked, &key, "handshake_stale"),
            }
        }
        tracked
            .counters
            .retain(|k, _| peers.iter().any(|p| p.public_key == *k));
    }

    /// Signal B (§9.2): one concurrent probe of every peer on the device with a mesh address.
    async fn probe_round(&self, tracked: &mut Tracked) {
        let now = Instant::now();
        let wall = SystemTime::now();
        let local = self.local.borrow().clone();
        let (live, read, relays) = {
            let r = self.reconciled.borrow();
            (r.live.clone(), r.read_at.is_some(), r.relays.table.clone())
        };
        let peers = self.store.for_device(now);
        let targets: Vec<Target> = peers
            .iter()
            .filter(|p| p.public_key != local.public_key)
            .filter_map(|p| {
                let addrs = probe_targets(p, &local, self.probe_port, self.ipv6);
                if addrs.is_empty() {
                    return None;
                }
                let age = handshake_age(&live, &p.public_key, wall);
                // Routed through a relay: in the relay table (its own entry, if any, only tries
                // the direct path), or on the device without an entry of its own.
                let relayed = relays.contains_key(&p.public_key)
                    || (read && !live.peers.contains_key(&p.public_key));
                let unseen = now.saturating_duration_since(p.last_seen);
                Some(Target {
                    key: p.public_key,
                    addrs,
                    enforced: probe_enforced(age, relayed, unseen),
                    session: tracked.sessions.remove(&p.public_key),
                })
            })
            .collect();
        let device = self.device.as_deref();
        let results: Vec<_> = stream::iter(targets.into_iter().map(|t| async move {
            let mut session = match t.session {
                Some(s) => s,
                None => match dial(&t.addrs, device).await {
                    Ok(s) => s,
                    Err(e) => return (t.key, t.enforced, Err(e), None),
                },
            };
            match ping(&mut session).await {
                Ok(rtt) => (t.key, t.enforced, Ok(rtt), Some(session)),
                Err(e) => (t.key, t.enforced, Err(e), None),
            }
        }))
        .buffer_unordered(MAX_CONCURRENT_PROBES)
        .collect()
        .await;
        for (key, enforced, result, session) in results {
            let ok = result.is_ok();
            match result {
                Ok(rtt) => self.store.set_latency(&key, rtt),
                Err(e) => tracing::debug!(peer = %key.short(), error = %e, "probe failed"),
            }
            if let Some(s) = session {
                tracked.sessions.insert(key, s);
            }
            tracked.last_ok.insert(key, ok);
            let c = tracked.counters.entry(key).or_default();
            if on_probe(c, ok, enforced) == ProbeAction::Evict {
                self.evict(tracked, &key, "probe_failed");
            }
        }
        let keep = |k: &PublicKey| peers.iter().any(|p| p.public_key == *k);
        tracked.sessions.retain(|k, _| keep(k));
        tracked.last_ok.retain(|k, _| keep(k));
        let view: HealthView = tracked
            .last_ok
            .iter()
            .map(|(k, ok)| {
                let failures = tracked.counters.get(k).map_or(0, |c| c.probe_failures);
                (
                    *k,
                    ProbeView {
                        failures,
                        last_ok: *ok,
                    },
                )
            })
            .collect();
        self.published.send_if_modified(|old| {
            if *old == view {
                false
            } else {
                *old = view;
                true
            }
        });
        self.layer.success();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::probe::serve_connection;
    use crate::peers::{Method, PeerUpdate};
    use crate::supervisor::{LayerState, Registry};
    use crate::system::net::probe::probe_listener;
    use crate::system::wg::LivePeer;
    use crate::system::wg::fake::FakeWireGuard;

    const PEER: PublicKey = PublicKey([2; 32]);

    fn monitor(
        port: u16,
        live: LiveDevice,
    ) -> (HealthMonitor<FakeWireGuard>, watch::Receiver<HealthView>) {
        let store = Arc::new(PeerStore::default());
        store.update(
            PeerUpdate {
                mesh_ip: Some("127.0.0.1".parse().unwrap()),
                ..PeerUpdate::new(PEER)
            },
            Method::Lan,
            Instant::now(),
        );
        let local = LocalNode {
            mesh_ip: "127.0.0.1".parse().unwrap(),
            ..crate::node::tests::local()
        };
        let reconciled = Reconciled {
            live,
            read_at: Some(tokio::time::Instant::now()),
            ..Reconciled::default()
        };
        let (published, view) = watch::channel(HealthView::new());
        let m = HealthMonitor {
            wg: Arc::new(FakeWireGuard::new("wgtest")),
            store,
            local: watch::channel(local).1,
            reconciled: watch::channel(reconciled).1,
            probe_port: port,
            device: None,
            ipv6: false,
            published,
            layer: Registry::default().layer("health", LayerState::Running),
        };
        (m, view)
    }

    fn stale_device() -> LiveDevice {
        let mut live = LiveDevice::default();
        live.peers.insert(
            PEER,
            LivePeer {
                endpoint: None,
                allowed_ips: Vec::new(),
                preshared_key: None,
                keepalive: None,
                last_handshake: Some(SystemTime::now() - Duration::from_secs(200)),
                rx_bytes: 10,
                tx_bytes: 10,
            },
        );
        live
    }

    #[tokio::test]
    async fn stale_twice_kicks_then_evicts() {
        let (m, _view) = monitor(1, stale_device());
        let mut tracked = Tracked::default();
        // First tick: the baseline total is 0 and 20 > 0 is growth: not stale.
        m.health_pass(&mut tracked).await;
        assert!(m.wg.kicks().is_empty());
        m.health_pass(&mut tracked).await;
        assert_eq!(m.wg.kicks(), vec![PEER], "first stale tick re-applies");
        assert!(!m.store.is_quarantined(&PEER, Instant::now()));
        m.health_pass(&mut tracked).await;
        assert!(
            m.store.is_quarantined(&PEER, Instant::now()),
            "second stale tick evicts"
        );
        assert!(tracked.counters.is_empty(), "counters reset on eviction");
        // Quarantined: no longer checked.
        m.health_pass(&mut tracked).await;
        assert!(tracked.counters.is_empty());
        assert_eq!(m.wg.kicks(), vec![PEER]);
    }

    #[tokio::test]
    async fn eight_enforced_probe_failures_evict() {
        // A closed port; the peer has no device entry (relayed): probes are enforced.
        let closed = probe_listener("127.0.0.1:0".parse().unwrap(), None).unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let (m, view) = monitor(port, LiveDevice::default());
        let mut tracked = Tracked::default();
        for n in 1..8 {
            m.probe_round(&mut tracked).await;
            assert_eq!(
                view.borrow().get(&PEER),
                Some(&ProbeView {
                    failures: n,
                    last_ok: false
                })
            );
            assert!(!m.store.is_quarantined(&PEER, Instant::now()), "round {n}");
        }
        m.probe_round(&mut tracked).await;
        assert!(m.store.is_quarantined(&PEER, Instant::now()));
        assert!(view.borrow().is_empty(), "an evicted peer is not probed");
        m.probe_round(&mut tracked).await;
        assert!(tracked.counters.is_empty() && tracked.sessions.is_empty());
    }

    #[tokio::test]
    async fn fresh_handshake_failures_do_not_evict() {
        let closed = probe_listener("127.0.0.1:0".parse().unwrap(), None).unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let mut live = stale_device();
        if let Some(p) = live.peers.get_mut(&PEER) {
            p.last_handshake = Some(SystemTime::now());
        }
        let (m, view) = monitor(port, live);
        let mut tracked = Tracked::default();
        for _ in 0..10 {
            m.probe_round(&mut tracked).await;
        }
        assert_eq!(view.borrow().get(&PEER).map(|v| v.failures), Some(10));
        assert!(!m.store.is_quarantined(&PEER, Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn probes_run_concurrently() {
        // Five peers that accept and never answer: each probe runs into its 1.2 s read timeout.
        let free = probe_listener("127.0.0.1:0".parse().unwrap(), None).unwrap();
        let port = free.local_addr().unwrap().port();
        drop(free);
        let (m, view) = monitor(port, LiveDevice::default());
        let mut listeners = Vec::new();
        for n in 2..7u8 {
            let ip = std::net::Ipv4Addr::new(127, 0, 0, n);
            listeners.push(probe_listener(SocketAddr::new(ip.into(), port), None).unwrap());
            m.store.update(
                PeerUpdate {
                    mesh_ip: Some(ip),
                    ..PeerUpdate::new(PublicKey([n + 10; 32]))
                },
                Method::Lan,
                Instant::now(),
            );
        }
        let mut tracked = Tracked::default();
        let started = tokio::time::Instant::now();
        m.probe_round(&mut tracked).await;
        let took = started.elapsed();
        println!("a round over 5 silent peers took {took:?} of virtual time");
        // Serially it would take 5 × 1.2 s; concurrently one timeout.
        assert!(took < 2 * crate::health::state::PROBE_TIMEOUT, "{took:?}");
        let failed = view.borrow().values().filter(|v| v.failures == 1).count();
        // The five, and the rig's own peer on 127.0.0.1 (nothing listens there).
        assert_eq!(failed, 6, "{:?}", view.borrow());
        drop(listeners);
    }

    #[tokio::test]
    async fn probe_success_keeps_the_session_and_records_rtt() {
        let listener = probe_listener("127.0.0.1:0".parse().unwrap(), None).unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = accepts.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(serve_connection(s));
            }
        });
        let (m, view) = monitor(port, LiveDevice::default());
        let mut tracked = Tracked::default();
        for _ in 0..3 {
            m.probe_round(&mut tracked).await;
        }
        assert_eq!(
            view.borrow().get(&PEER),
            Some(&ProbeView {
                failures: 0,
                last_ok: true
            })
        );
        let rtt = m.store.get(&PEER).and_then(|p| p.latency);
        println!("loopback probe rtt {rtt:?}");
        assert!(rtt.is_some());
        assert_eq!(
            accepts.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "one persistent connection"
        );
    }
}
