//! The locked map around the pure rules in `rank.rs`, plus quarantine and event delivery.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use super::rank::{classify, merge, new_peer};
use super::{
    DEFAULT_CAP, Liveness, Method, Peer, PeerEvent, PeerUpdate, REMOVE_AFTER, UpdateOutcome,
};
use crate::keys::PublicKey;

/// Events buffered per subscriber; a slower subscriber skips the oldest ones (`Lagged`).
const EVENT_CAPACITY: usize = 256;
/// Bound on the set of keys already logged as dropped by the cap (cleared when full).
const CAP_WARNED_MAX: usize = 1024;

#[derive(Default)]
struct Inner {
    peers: BTreeMap<PublicKey, Peer>,
    /// Key → end of quarantine. Independent of `peers`: an evicted peer stays quarantined after
    /// `remove` so that rediscovery cannot bring it back early. A stored peer carries the same
    /// instant in [`Peer::quarantined_until`].
    quarantine: HashMap<PublicKey, Instant>,
    /// New keys already logged as dropped by the cap.
    cap_warned: HashSet<PublicKey>,
}

/// All known peers. `Send + Sync`: share it as `Arc<PeerStore>`. Every method is short and
/// synchronous (never hold anything across an await) and returns values, never references.
pub struct PeerStore {
    cap: usize,
    inner: RwLock<Inner>,
    events: broadcast::Sender<PeerEvent>,
}

impl Default for PeerStore {
    fn default() -> Self {
        Self::new(DEFAULT_CAP)
    }
}

impl fmt::Debug for PeerStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerStore")
            .field("cap", &self.cap)
            .field("count", &self.count())
            .finish()
    }
}

impl PeerStore {
    /// An empty store that accepts at most `cap` peers.
    pub fn new(cap: usize) -> Self {
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        Self {
            cap,
            inner: RwLock::new(Inner::default()),
            events,
        }
    }

    /// A receiver of every later event. A receiver that falls more than 256 events behind gets
    /// `RecvError::Lagged` and continues with newer events; it never slows the store down.
    pub fn subscribe(&self) -> broadcast::Receiver<PeerEvent> {
        self.events.subscribe()
    }

    /// Merges what `method` learned about a peer (module rules) and emits `New` or `Updated`.
    pub fn update(&self, info: PeerUpdate, method: Method, now: Instant) -> UpdateOutcome {
        let key = info.public_key;
        let (outcome, warn_cap) = {
            let mut inner = self.write();
            let inner = &mut *inner;
            if let Some(old) = inner.peers.get_mut(&key) {
                let merged = merge(old, info, method, now);
                let outcome = classify(old, &merged, now);
                *old = merged;
                (outcome, false)
            } else if inner.peers.len() >= self.cap {
                let first_time = !inner.cap_warned.contains(&key);
                if first_time {
                    if inner.cap_warned.len() >= CAP_WARNED_MAX {
                        inner.cap_warned.clear();
                    }
                    inner.cap_warned.insert(key);
                }
                (UpdateOutcome::CapReached, first_time)
            } else {
                let mut peer = new_peer(info, method, now);
                peer.quarantined_until = inner.quarantine.get(&key).copied();
                inner.peers.insert(key, peer);
                inner.cap_warned.remove(&key);
                (UpdateOutcome::New, false)
            }
        };
        match outcome {
            UpdateOutcome::New => self.emit(PeerEvent::New(key)),
            UpdateOutcome::Updated => self.emit(PeerEvent::Updated(key)),
            UpdateOutcome::Unchanged => {}
            UpdateOutcome::CapReached => {
                if warn_cap {
                    tracing::warn!(
                        peer = %key.short(),
                        %method,
                        cap = self.cap,
                        "peer cap reached; dropping new peer"
                    );
                }
            }
        }
        outcome
    }

    /// A copy of the peer, dead or quarantined ones included.
    pub fn get(&self, key: &PublicKey) -> Option<Peer> {
        self.read().peers.get(key).cloned()
    }

    /// Copies of all peers (dead and quarantined included), sorted by key.
    pub fn list(&self) -> Vec<Peer> {
        self.read().peers.values().cloned().collect()
    }

    /// Copies of the peers [`Liveness::Active`] at `now` (seen less than
    /// [`DEAD_AFTER`](super::DEAD_AFTER) ago by a live source, not quarantined), sorted by key:
    /// the peers something live vouches for. Relay candidates, probing and health use this; an
    /// unconfirmed cache restore is not among them.
    pub fn active(&self, now: Instant) -> Vec<Peer> {
        self.matching(now, |l| l == Liveness::Active)
    }

    /// Copies of the peers that belong on the WireGuard device at `now` ([`Liveness::on_device`]:
    /// active ones and unconfirmed cache restores), sorted by key. The reconcile loop uses this.
    pub fn for_device(&self, now: Instant) -> Vec<Peer> {
        self.matching(now, Liveness::on_device)
    }

    fn matching(&self, now: Instant, keep: impl Fn(Liveness) -> bool) -> Vec<Peer> {
        self.read()
            .peers
            .values()
            .filter(|p| keep(p.liveness(now)))
            .cloned()
            .collect()
    }

    /// True if the peer is unknown or, quarantine aside, [`Liveness::Dead`] at `now` (last seen
    /// [`DEAD_AFTER`](super::DEAD_AFTER) or more before `now` and not within a cache restore's
    /// grace).
    pub fn is_dead(&self, key: &PublicKey, now: Instant) -> bool {
        self.read()
            .peers
            .get(key)
            .is_none_or(|p| p.presence(now) == Liveness::Dead)
    }

    /// Deletes the peer; emits `Removed` and returns true if it was stored. Quarantine is kept.
    pub fn remove(&self, key: &PublicKey) -> bool {
        let removed = self.write().peers.remove(key).is_some();
        if removed {
            self.emit(PeerEvent::Removed(*key));
        }
        removed
    }

    /// Deletes the peers last seen more than [`REMOVE_AFTER`] before `now`, except cache
    /// restores still within their grace (their `last_seen` is old by nature), and forgets
    /// expired quarantines; emits `Removed` for each and returns their keys, sorted.
    pub fn cleanup_stale(&self, now: Instant) -> Vec<PublicKey> {
        let removed: Vec<PublicKey> = {
            let mut inner = self.write();
            let stale: Vec<PublicKey> = inner
                .peers
                .values()
                .filter(|p| {
                    now.saturating_duration_since(p.last_seen) > REMOVE_AFTER
                        && !p.in_cache_grace(now)
                })
                .map(|p| p.public_key)
                .collect();
            for key in &stale {
                inner.peers.remove(key);
            }
            inner.quarantine.retain(|_, until| *until > now);
            for peer in inner.peers.values_mut() {
                if peer.quarantined_until.is_some_and(|until| until <= now) {
                    peer.quarantined_until = None;
                }
            }
            stale
        };
        for key in &removed {
            self.emit(PeerEvent::Removed(*key));
        }
        removed
    }

    /// Number of stored peers, dead and quarantined ones included.
    pub fn count(&self) -> usize {
        self.read().peers.len()
    }

    /// Records that each of `heard` completed a WireGuard handshake with us at the given instant:
    /// proof, authenticated with the mesh PSK, that the peer is alive. Its `last_seen` moves
    /// forward to that instant (never backwards, never past `now`), and a peer restored from the
    /// cache counts as confirmed. Without this, a node whose only live source is off (LAN
    /// discovery disabled, as after a restart from the cache) would drop working peers after
    /// [`DEAD_AFTER`](super::DEAD_AFTER). Unknown keys are ignored. Emits `Updated` for a peer
    /// that was dead or unconfirmed; a plain refresh emits nothing.
    pub fn heard_from(&self, heard: &[(PublicKey, Instant)], now: Instant) {
        let mut changed = Vec::new();
        {
            let mut inner = self.write();
            for (key, at) in heard {
                let Some(peer) = inner.peers.get_mut(key) else {
                    continue;
                };
                let before = peer.liveness(now);
                peer.last_seen = peer.last_seen.max((*at).min(now));
                peer.restored_at = None;
                if peer.liveness(now) != before {
                    changed.push(*key);
                }
            }
        }
        for key in changed {
            self.emit(PeerEvent::Updated(key));
        }
    }

    /// Records a probe round-trip time. No-op for an unknown key; emits no event.
    pub fn set_latency(&self, key: &PublicKey, rtt: Duration) {
        if let Some(p) = self.write().peers.get_mut(key) {
            p.latency = Some(rtt);
        }
    }

    /// Excludes the key from [`active`](Self::active) until `until` (health eviction; Go uses
    /// [`QUARANTINE_TTL`](super::QUARANTINE_TTL)), replacing any earlier quarantine. Works for
    /// unknown keys too, so a peer evicted and then rediscovered stays excluded. Emits `Updated`
    /// if the peer is stored.
    pub fn quarantine(&self, key: &PublicKey, until: Instant) {
        let stored = {
            let mut inner = self.write();
            inner.quarantine.insert(*key, until);
            match inner.peers.get_mut(key) {
                Some(peer) => {
                    peer.quarantined_until = Some(until);
                    true
                }
                None => false,
            }
        };
        if stored {
            self.emit(PeerEvent::Updated(*key));
        }
    }

    /// Ends the key's quarantine early; returns true if it had one. Emits `Updated` if the peer is
    /// stored and was quarantined.
    pub fn unquarantine(&self, key: &PublicKey) -> bool {
        let (had, stored) = {
            let mut inner = self.write();
            let had = inner.quarantine.remove(key).is_some();
            let peer = inner.peers.get_mut(key);
            let stored = peer.is_some();
            if let Some(peer) = peer {
                peer.quarantined_until = None;
            }
            (had, stored)
        };
        if had && stored {
            self.emit(PeerEvent::Updated(*key));
        }
        had
    }

    /// Whether the key is quarantined at `now`.
    pub fn is_quarantined(&self, key: &PublicKey, now: Instant) -> bool {
        quarantined(&self.read(), key, now)
    }

    /// Sends without blocking; no receivers or lagging receivers are fine. Never under the lock.
    fn emit(&self, event: PeerEvent) {
        let _ = self.events.send(event);
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }
}

fn quarantined(inner: &Inner, key: &PublicKey, now: Instant) -> bool {
    inner.quarantine.get(key).is_some_and(|until| *until > now)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};
    use std::sync::Arc;

    use ipnet::IpNet;
    use tokio::sync::broadcast::error::TryRecvError;

    use super::super::{DEAD_AFTER, QUARANTINE_TTL};
    use super::*;
    use Method::*;

    const MIN: Duration = Duration::from_secs(60);

    /// (endpoint, method)
    type Step = (&'static str, Method);

    fn key(n: u16) -> PublicKey {
        let mut b = [0u8; 32];
        b[..2].copy_from_slice(&n.to_be_bytes());
        PublicKey(b)
    }

    fn upd(n: u16) -> PeerUpdate {
        PeerUpdate::new(key(n))
    }

    fn with_ep(n: u16, ep: &str) -> PeerUpdate {
        PeerUpdate {
            endpoint: Some(ep.parse().unwrap()),
            ..upd(n)
        }
    }

    fn ep(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    fn drain(rx: &mut broadcast::Receiver<PeerEvent>) -> Vec<PeerEvent> {
        let mut out = Vec::new();
        loop {
            match rx.try_recv() {
                Ok(e) => out.push(e),
                Err(TryRecvError::Lagged(_)) => {}
                Err(_) => return out,
            }
        }
    }

    #[test]
    fn store_is_send_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<PeerStore>();
        assert_send_sync::<Arc<PeerStore>>();
    }

    #[test]
    fn insert_and_get() {
        let s = PeerStore::new(DEFAULT_CAP);
        let t0 = Instant::now();
        let u = PeerUpdate {
            hostname: "a".into(),
            mesh_ip: Some(Ipv4Addr::new(10, 0, 0, 1)),
            ..with_ep(1, "192.0.2.1:51820")
        };
        assert_eq!(s.update(u, Dht, t0), UpdateOutcome::New);
        let p = s.get(&key(1)).unwrap();
        assert_eq!(p.hostname, "a");
        assert_eq!(p.endpoint_method, Some(Dht));
        assert_eq!(p.discovered_via, [Dht]);
        assert_eq!(p.last_seen, t0);
        assert_eq!(p.latency, None);
        assert_eq!(s.get(&key(2)), None);
        assert_eq!(s.count(), 1);
    }

    #[test]
    fn merge_higher_rank_endpoint_keeps_mesh_ip() {
        let s = PeerStore::default();
        let t0 = Instant::now();
        let first = PeerUpdate {
            mesh_ip: Some(Ipv4Addr::new(10, 0, 0, 1)),
            ..with_ep(1, "192.0.2.1:1")
        };
        s.update(first, DhtTransitive, t0);
        assert_eq!(
            s.update(with_ep(1, "192.0.2.2:2"), Dht, t0),
            UpdateOutcome::Updated
        );
        let p = s.get(&key(1)).unwrap();
        assert_eq!(p.endpoint, ep("192.0.2.2:2"));
        assert_eq!(p.mesh_ip, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(p.discovered_via, [DhtTransitive, Dht]);
    }

    #[test]
    fn endpoint_sequences() {
        #[rustfmt::skip]
        let rows: [(&str, &[Step], &str, Method); 5] = [
            ("LAN kept against dht", &[("192.0.2.1:1", Lan), ("192.0.2.2:2", Dht)], "192.0.2.1:1", Lan),
            ("rendezvous beats transitive", &[("192.0.2.1:1", DhtTransitive), ("192.0.2.2:2", DhtRendezvous)], "192.0.2.2:2", DhtRendezvous),
            ("rendezvous overrides dht", &[("192.0.2.1:1", Dht), ("192.0.2.2:2", DhtRendezvous)], "192.0.2.2:2", DhtRendezvous),
            ("IPv6 preferred, then kept", &[("192.0.2.1:1", Dht), ("[2001:db8::1]:1", Dht), ("192.0.2.3:3", Dht)], "[2001:db8::1]:1", Dht),
            ("same rank and family: later wins", &[("192.0.2.1:1", Gossip), ("192.0.2.2:2", Gossip)], "192.0.2.2:2", Gossip),
        ];
        for (why, steps, want, want_method) in rows {
            let s = PeerStore::default();
            let t0 = Instant::now();
            for (e, method) in steps {
                s.update(with_ep(1, e), *method, t0);
            }
            let p = s.get(&key(1)).unwrap();
            assert_eq!(p.endpoint, ep(want), "{why}");
            assert_eq!(p.endpoint_method, Some(want_method), "{why}");
        }
    }

    #[test]
    fn active_is_dead_and_cleanup() {
        let s = PeerStore::default();
        let t0 = Instant::now();
        s.update(upd(1), Dht, t0); // 15 min old at `now`
        s.update(upd(2), Dht, t0 + 5 * MIN); // 10 min old
        s.update(upd(3), Dht, t0 + 10 * MIN); // 5 min old: dead, not removable
        s.update(upd(4), Dht, t0 + 14 * MIN); // fresh
        let now = t0 + 15 * MIN;
        let active: Vec<_> = s.active(now).into_iter().map(|p| p.public_key).collect();
        assert_eq!(
            active,
            [key(4)],
            "10-min-old and exactly-5-min-old peers are not active"
        );
        assert!(s.is_dead(&key(3), now));
        assert!(!s.is_dead(&key(4), now));
        assert!(s.is_dead(&key(9), now), "unknown is dead");
        assert!(!s.is_dead(&key(3), t0 + 14 * MIN));
        assert_eq!(s.count(), 4, "count includes dead peers");

        let mut rx = s.subscribe();
        assert_eq!(
            s.cleanup_stale(now),
            [key(1)],
            "15 min old removed, exactly 10 min kept"
        );
        assert_eq!(drain(&mut rx), [PeerEvent::Removed(key(1))]);
        assert_eq!(s.count(), 3);
        assert!(s.remove(&key(2)));
        assert!(!s.remove(&key(2)));
        assert_eq!(drain(&mut rx), [PeerEvent::Removed(key(2))]);
        let list: Vec<_> = s.list().into_iter().map(|p| p.public_key).collect();
        assert_eq!(list, [key(3), key(4)], "list is sorted by key");
    }

    #[test]
    fn for_device_is_active_plus_cached_and_cleanup_spares_the_grace() {
        let s = PeerStore::default();
        let t0 = Instant::now();
        let now = t0 + 60 * MIN;
        let restored = |n: u16, seen: Instant| PeerUpdate {
            last_seen: Some(seen),
            ..upd(n)
        };
        s.update(upd(1), Lan, now); // live
        s.update(upd(2), Lan, t0); // dead, swept
        s.update(restored(3, t0), Cache, now); // cached, an hour old
        s.update(restored(4, now - MIN), Cache, now); // cached, a minute old
        s.update(upd(5), Lan, now);
        s.quarantine(&key(5), now + QUARANTINE_TTL);
        let keys = |peers: Vec<Peer>| peers.into_iter().map(|p| p.public_key).collect::<Vec<_>>();
        #[rustfmt::skip]
        let rows: [(&str, Duration, &[u16], &[u16]); 4] = [
            // (case, after `now`, for_device, active)
            ("at the restore", Duration::ZERO, &[1, 3, 4], &[1]),
            ("just before the grace ends", DEAD_AFTER - Duration::from_secs(1), &[1, 3, 4, 5], &[1, 5]),
            ("grace over", DEAD_AFTER, &[], &[]),
            ("quarantine over", QUARANTINE_TTL, &[1, 3, 4, 5], &[1, 5]),
        ];
        for (case, after, device, active) in rows {
            let at = now + after;
            let want = |ns: &[u16]| ns.iter().map(|n| key(*n)).collect::<Vec<_>>();
            assert_eq!(keys(s.for_device(at)), want(device), "{case}: for_device");
            assert_eq!(keys(s.active(at)), want(active), "{case}: active");
        }
        assert!(!s.is_dead(&key(3), now), "cached is not dead");
        assert!(s.is_dead(&key(3), now + DEAD_AFTER));
        assert_eq!(
            s.cleanup_stale(now),
            [key(2)],
            "the hour-old restore is spared"
        );
        assert_eq!(
            s.cleanup_stale(now + DEAD_AFTER),
            [key(3)],
            "swept once its grace is over"
        );
    }

    #[test]
    fn cache_and_transitive_last_seen() {
        let s = PeerStore::default();
        let t0 = Instant::now();
        let now = t0 + 20 * MIN;
        let cached = PeerUpdate {
            last_seen: Some(now - 3 * MIN),
            ..upd(1)
        };
        s.update(cached, Cache, now);
        assert_eq!(
            s.get(&key(1)).unwrap().last_seen,
            now - 3 * MIN,
            "cache keeps last_seen"
        );
        assert_eq!(s.active(now).len(), 0, "restored, unconfirmed: not active");
        assert_eq!(s.for_device(now).len(), 1, "but on the device");

        s.update(upd(2), Dht, t0);
        s.update(upd(2), GossipTransitive, t0 + MIN);
        assert_eq!(
            s.get(&key(2)).unwrap().last_seen,
            t0,
            "transitive does not refresh"
        );
        let newer = PeerUpdate {
            last_seen: Some(t0 + Duration::from_secs(30)),
            ..upd(2)
        };
        s.update(newer, GossipTransitive, t0 + MIN);
        assert_eq!(
            s.get(&key(2)).unwrap().last_seen,
            t0 + Duration::from_secs(30),
            "moves forward to a newer supplied time"
        );
        s.update(upd(2), Dht, t0 + 2 * MIN);
        assert_eq!(
            s.get(&key(2)).unwrap().last_seen,
            t0 + 2 * MIN,
            "direct source refreshes"
        );
    }

    #[test]
    fn events_in_order_and_unchanged_is_silent() {
        let s = PeerStore::default();
        let t0 = Instant::now();
        let mut rx = s.subscribe();
        assert_eq!(s.update(upd(1), Dht, t0), UpdateOutcome::New);
        assert_eq!(s.update(upd(1), Dht, t0 + MIN), UpdateOutcome::Unchanged);
        assert_eq!(
            s.get(&key(1)).unwrap().last_seen,
            t0 + MIN,
            "Unchanged still refreshes"
        );
        let renamed = PeerUpdate {
            hostname: "b".into(),
            ..upd(1)
        };
        assert_eq!(s.update(renamed, Dht, t0 + MIN), UpdateOutcome::Updated);
        assert_eq!(
            s.update(upd(1), Lan, t0 + MIN),
            UpdateOutcome::Updated,
            "new method"
        );
        assert_eq!(
            s.update(upd(1), Lan, t0 + 7 * MIN),
            UpdateOutcome::Updated,
            "revived"
        );
        assert!(s.remove(&key(1)));
        assert_eq!(
            drain(&mut rx),
            [
                PeerEvent::New(key(1)),
                PeerEvent::Updated(key(1)),
                PeerEvent::Updated(key(1)),
                PeerEvent::Updated(key(1)),
                PeerEvent::Removed(key(1)),
            ]
        );
    }

    #[test]
    fn lagging_or_absent_subscribers_never_block() {
        let s = PeerStore::new(5000);
        let t0 = Instant::now();
        assert_eq!(
            s.update(upd(0), Dht, t0),
            UpdateOutcome::New,
            "no subscriber"
        );
        let mut slow = s.subscribe();
        let dropped = s.subscribe();
        drop(dropped);
        for n in 1..=(EVENT_CAPACITY as u16 * 4) {
            assert_eq!(s.update(upd(n), Dht, t0), UpdateOutcome::New);
        }
        assert!(matches!(slow.try_recv(), Err(TryRecvError::Lagged(_))));
        let rest = drain(&mut slow);
        assert_eq!(rest.len(), EVENT_CAPACITY, "keeps the newest events");
        assert_eq!(
            rest.last(),
            Some(&PeerEvent::New(key(EVENT_CAPACITY as u16 * 4)))
        );
        s.update(upd(1), Lan, t0);
        assert_eq!(
            drain(&mut slow),
            [PeerEvent::Updated(key(1))],
            "usable after lag"
        );
    }

    #[test]
    fn multiple_subscribers() {
        let s = PeerStore::default();
        let mut a = s.subscribe();
        let mut b = s.subscribe();
        s.update(upd(1), Dht, Instant::now());
        assert_eq!(drain(&mut a), [PeerEvent::New(key(1))]);
        assert_eq!(drain(&mut b), [PeerEvent::New(key(1))]);
    }

    #[test]
    fn cap_blocks_inserts_not_updates() {
        let s = PeerStore::new(DEFAULT_CAP);
        let t0 = Instant::now();
        for n in 0..DEFAULT_CAP as u16 {
            assert_eq!(s.update(upd(n), Dht, t0), UpdateOutcome::New);
        }
        let mut rx = s.subscribe();
        let extra = DEFAULT_CAP as u16;
        assert_eq!(s.update(upd(extra), Dht, t0), UpdateOutcome::CapReached);
        assert_eq!(s.update(upd(extra), Dht, t0), UpdateOutcome::CapReached);
        assert_eq!(s.count(), DEFAULT_CAP);
        assert_eq!(s.get(&key(extra)), None);
        assert_eq!(drain(&mut rx), [], "no event for a dropped peer");
        let renamed = PeerUpdate {
            hostname: "x".into(),
            ..upd(3)
        };
        assert_eq!(s.update(renamed, Dht, t0), UpdateOutcome::Updated);

        let later = t0 + 11 * MIN;
        s.update(upd(3), Dht, later);
        assert_eq!(s.cleanup_stale(later).len(), DEFAULT_CAP - 1);
        assert_eq!(s.update(upd(extra), Dht, later), UpdateOutcome::New);
        assert_eq!(s.count(), 2);
    }

    #[test]
    fn set_latency() {
        let s = PeerStore::default();
        let mut rx = s.subscribe();
        s.set_latency(&key(1), Duration::from_millis(5));
        assert_eq!(s.count(), 0, "unknown key: no-op");
        s.update(upd(1), Dht, Instant::now());
        s.set_latency(&key(1), Duration::from_millis(7));
        assert_eq!(
            s.get(&key(1)).unwrap().latency,
            Some(Duration::from_millis(7))
        );
        assert_eq!(
            drain(&mut rx),
            [PeerEvent::New(key(1))],
            "latency emits nothing"
        );
    }

    #[test]
    fn quarantine_excludes_until_expiry() {
        let s = PeerStore::default();
        let t0 = Instant::now();
        s.update(upd(1), Dht, t0);
        s.update(upd(2), Dht, t0);
        let mut rx = s.subscribe();
        let until = t0 + QUARANTINE_TTL;
        // Health eviction: quarantine, then remove.
        s.quarantine(&key(1), until);
        assert!(s.remove(&key(1)));
        assert!(s.is_quarantined(&key(1), t0));
        // Rediscovery during quarantine: stored, but not active.
        assert_eq!(
            s.update(upd(1), Dht, t0 + Duration::from_secs(10)),
            UpdateOutcome::New
        );
        let now = t0 + Duration::from_secs(20);
        assert!(s.get(&key(1)).is_some());
        let active: Vec<_> = s.active(now).into_iter().map(|p| p.public_key).collect();
        assert_eq!(active, [key(2)]);
        // Expired: active again, and cleanup forgets the entry.
        assert!(!s.is_quarantined(&key(1), until));
        assert_eq!(s.active(until).len(), 2);
        s.cleanup_stale(until);
        assert!(
            !s.unquarantine(&key(1)),
            "expired entry forgotten by cleanup"
        );
        assert_eq!(
            drain(&mut rx),
            [
                PeerEvent::Updated(key(1)),
                PeerEvent::Removed(key(1)),
                PeerEvent::New(key(1)),
            ]
        );
        // Early release.
        s.quarantine(&key(2), t0 + DEAD_AFTER);
        assert!(s.unquarantine(&key(2)));
        assert!(!s.is_quarantined(&key(2), t0));
        assert_eq!(
            drain(&mut rx),
            [PeerEvent::Updated(key(2)), PeerEvent::Updated(key(2))]
        );
    }

    #[test]
    fn routes_authoritative_vs_unknown() {
        let s = PeerStore::default();
        let t0 = Instant::now();
        let nets: Vec<IpNet> = vec!["192.168.1.0/24".parse().unwrap()];
        let with_routes = PeerUpdate {
            routable_networks: Some(nets.clone()),
            ..upd(1)
        };
        s.update(with_routes, Dht, t0);
        assert_eq!(
            s.update(upd(1), Dht, t0),
            UpdateOutcome::Unchanged,
            "None keeps"
        );
        assert_eq!(s.get(&key(1)).unwrap().routable_networks, nets);
        let cleared = PeerUpdate {
            routable_networks: Some(vec![]),
            ..upd(1)
        };
        assert_eq!(s.update(cleared, Dht, t0), UpdateOutcome::Updated);
        assert!(
            s.get(&key(1)).unwrap().routable_networks.is_empty(),
            "Some(empty) clears"
        );
    }

    #[test]
    fn values_not_aliases() {
        let s = PeerStore::default();
        let t0 = Instant::now();
        s.update(upd(1), Dht, t0);
        let mut copy = s.get(&key(1)).unwrap();
        copy.discovered_via.push(Gossip);
        copy.hostname = "mutated".into();
        let stored = s.get(&key(1)).unwrap();
        assert_eq!(stored.discovered_via, [Dht]);
        assert_eq!(stored.hostname, "");
    }

    #[test]
    fn a_handshake_keeps_a_peer_alive_and_confirms_a_cached_one() {
        use super::super::Liveness;
        let s = PeerStore::default();
        let t0 = Instant::now();
        let hour_ago_seen = PeerUpdate {
            last_seen: Some(t0),
            ..upd(1)
        };
        let now = t0 + 60 * MIN;
        s.update(hour_ago_seen, Cache, now);
        s.update(upd(2), Lan, t0);
        assert_eq!(s.get(&key(1)).unwrap().liveness(now), Liveness::Cached);
        assert_eq!(s.get(&key(2)).unwrap().liveness(now), Liveness::Dead);
        let mut rx = s.subscribe();
        let handshake = now - Duration::from_secs(20);
        s.heard_from(
            &[
                (key(1), handshake),
                (key(2), handshake),
                (key(9), handshake),
            ],
            now,
        );
        for k in [key(1), key(2)] {
            let p = s.get(&k).unwrap();
            assert_eq!(p.liveness(now), Liveness::Active, "{k:?}");
            assert_eq!(p.last_seen, handshake);
        }
        assert_eq!(s.count(), 2, "unknown keys are not added");
        assert_eq!(
            drain(&mut rx),
            [PeerEvent::Updated(key(1)), PeerEvent::Updated(key(2))]
        );
        // An older handshake never moves last_seen back, and a refresh is silent.
        s.heard_from(&[(key(1), t0)], now);
        assert_eq!(s.get(&key(1)).unwrap().last_seen, handshake);
        assert_eq!(drain(&mut rx), []);
    }
}
