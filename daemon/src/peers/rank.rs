//! Pure rules of the peer store: endpoint ranking (daemon-behaviour §6.3) and how an update
//! merges into a stored peer (§6.2, with the fixes listed in the module header).

use std::cmp::Ordering;
use std::net::SocketAddr;
use std::time::Instant;

use super::{DEAD_AFTER, Method, Peer, PeerUpdate, UpdateOutcome};

/// Whether `new` (learned through `new_method`) replaces the stored endpoint: always when there is
/// none; otherwise by rank ([`Method::endpoint_rank`]); at equal rank IPv4→IPv6 replaces,
/// IPv6→IPv4 does not, and within one family the later endpoint wins.
pub fn should_update_endpoint(
    old: Option<SocketAddr>,
    old_method: Option<Method>,
    new: SocketAddr,
    new_method: Method,
) -> bool {
    let Some(old) = old else { return true };
    // An endpoint without a recorded method ranks below every method (Go's empty string, 0).
    let old_rank = old_method.map_or(0, Method::endpoint_rank);
    match new_method.endpoint_rank().cmp(&old_rank) {
        Ordering::Greater => true,
        Ordering::Less => false,
        // Equal rank: anything but IPv6 → IPv4 replaces.
        Ordering::Equal => !is_ipv6(old) || is_ipv6(new),
    }
}

/// IPv6 as Go sees it: an IPv4-mapped IPv6 address counts as IPv4.
fn is_ipv6(addr: SocketAddr) -> bool {
    match addr {
        SocketAddr::V4(_) => false,
        SocketAddr::V6(a) => a.ip().to_ipv4_mapped().is_none(),
    }
}

/// Whether a peer last seen at `last_seen` is alive at `now`.
pub(super) fn is_alive(last_seen: Instant, now: Instant) -> bool {
    now.saturating_duration_since(last_seen) < DEAD_AFTER
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

/// The peer stored for a key seen for the first time (not quarantined; the store sets that).
pub(super) fn new_peer(info: PeerUpdate, method: Method, now: Instant) -> Peer {
    Peer {
        public_key: info.public_key,
        hostname: info.hostname,
        mesh_ip: info.mesh_ip,
        mesh_ipv6: info.mesh_ipv6,
        endpoint: info.endpoint,
        endpoint_method: info.endpoint.map(|_| method),
        introducer: info.introducer,
        routable_networks: info.routable_networks.unwrap_or_default(),
        nat_type: non_empty(info.nat_type),
        last_seen: info.last_seen.map_or(now, |t| t.min(now)),
        discovered_via: vec![method],
        latency: None,
        quarantined_until: None,
        // Only a restore starts the grace; every other source is live or reports another's view.
        restored_at: (method == Method::Cache).then_some(now),
    }
}

/// `old` with the update applied.
pub(super) fn merge(old: &Peer, info: PeerUpdate, method: Method, now: Instant) -> Peer {
    let mut p = old.clone();
    if let Some(ep) = info.endpoint
        && should_update_endpoint(p.endpoint, p.endpoint_method, ep, method)
    {
        p.endpoint = Some(ep);
        p.endpoint_method = Some(method);
    }
    if let Some(networks) = info.routable_networks {
        p.routable_networks = networks;
    }
    if info.mesh_ip.is_some() {
        p.mesh_ip = info.mesh_ip;
    }
    if info.mesh_ipv6.is_some() {
        p.mesh_ipv6 = info.mesh_ipv6;
    }
    if !info.hostname.is_empty() {
        p.hostname = info.hostname;
    }
    if let Some(nat) = non_empty(info.nat_type) {
        p.nat_type = Some(nat);
    }
    p.introducer = info.introducer;
    p.last_seen = if method.refreshes_last_seen() {
        // A live source confirms a peer restored from the cache.
        p.restored_at = None;
        old.last_seen.max(now)
    } else {
        info.last_seen
            .map_or(old.last_seen, |t| old.last_seen.max(t.min(now)))
    };
    if !p.discovered_via.contains(&method) {
        p.discovered_via.push(method);
    }
    p
}

/// `Updated` when anything but `last_seen` changed or the peer came back to life; else `Unchanged`.
pub(super) fn classify(old: &Peer, new: &Peer, now: Instant) -> UpdateOutcome {
    let revived = !is_alive(old.last_seen, now) && is_alive(new.last_seen, now);
    let same_fields = Peer {
        last_seen: old.last_seen,
        ..new.clone()
    } == *old;
    if same_fields && !revived {
        UpdateOutcome::Unchanged
    } else {
        UpdateOutcome::Updated
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::time::Duration;

    use ipnet::IpNet;

    use super::*;
    use crate::keys::PublicKey;
    use Method::*;

    const MIN: Duration = Duration::from_secs(60);

    /// (old, old method, new, new method, replace?, why)
    type EndpointRow = (
        Option<SocketAddr>,
        Option<Method>,
        SocketAddr,
        Method,
        bool,
        &'static str,
    );

    fn ep(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn update() -> PeerUpdate {
        PeerUpdate::new(PublicKey([7; 32]))
    }

    #[test]
    fn should_update_endpoint_table() {
        let v4a = ep("192.0.2.1:51820");
        let v4b = ep("192.0.2.2:51820");
        let v6a = ep("[2001:db8::1]:51820");
        let v6b = ep("[2001:db8::2]:51820");
        let mapped = ep("[::ffff:192.0.2.9]:51820");
        #[rustfmt::skip]
        let rows: [EndpointRow; 16] = [
            (None, None, v4a, Cache, true, "no endpoint yet: take anything"),
            (Some(v4a), Some(Lan), v4b, Dht, false, "LAN kept against dht"),
            (Some(v4a), Some(Lan), v4b, DhtRendezvous, false, "LAN kept against rendezvous"),
            (Some(v4a), Some(Lan), v4b, Lan, true, "later LAN wins"),
            (Some(v4a), Some(Dht), v4b, Lan, true, "LAN beats dht"),
            (Some(v4a), Some(DhtTransitive), v4b, DhtRendezvous, true, "rendezvous beats transitive"),
            (Some(v4a), Some(Dht), v4b, DhtRendezvous, true, "rendezvous beats dht"),
            (Some(v4a), Some(Dht), v4b, DhtTransitive, false, "transitive loses to dht"),
            (Some(v4a), Some(Gossip), v4b, GossipTransitive, false, "gossip-transitive loses to gossip"),
            (Some(v4a), Some(Dht), v4b, Dht, true, "same rank, same family: later wins"),
            (Some(v4a), Some(Dht), v6a, Dht, true, "same rank: IPv6 replaces IPv4"),
            (Some(v6a), Some(Dht), v4a, Dht, false, "same rank: IPv6 kept against IPv4"),
            (Some(v6a), Some(Dht), v6b, Dht, true, "same rank, both IPv6: later wins"),
            (Some(v6a), Some(Dht), mapped, Dht, false, "v4-mapped counts as IPv4"),
            (Some(v6a), Some(Cache), v4a, Dht, true, "higher rank IPv4 replaces IPv6"),
            (Some(v4a), None, v4b, Cache, true, "unknown old method ranks 0"),
        ];
        for (old, old_method, new, new_method, want, why) in rows {
            assert_eq!(
                should_update_endpoint(old, old_method, new, new_method),
                want,
                "{why}"
            );
        }
    }

    #[test]
    fn new_peer_fields() {
        let now = Instant::now() + 60 * MIN;
        let mut u = update();
        u.endpoint = Some(ep("192.0.2.1:1"));
        u.nat_type = Some(String::new());
        let p = new_peer(u.clone(), Dht, now);
        assert_eq!(p.endpoint_method, Some(Dht));
        assert_eq!(p.discovered_via, [Dht]);
        assert_eq!(p.last_seen, now);
        assert_eq!(p.nat_type, None, "empty NAT type is unknown");
        assert!(p.routable_networks.is_empty());

        u.endpoint = None;
        u.last_seen = Some(now - 3 * MIN);
        let p = new_peer(u.clone(), Cache, now);
        assert_eq!(p.endpoint_method, None, "no endpoint, no endpoint method");
        assert_eq!(
            p.last_seen,
            now - 3 * MIN,
            "cache insert keeps cached last_seen"
        );

        u.last_seen = Some(now + MIN);
        assert_eq!(new_peer(u, Cache, now).last_seen, now, "future clamped");
    }

    #[test]
    fn merge_fields() {
        let t0 = Instant::now();
        let mut u = update();
        u.hostname = "a".into();
        u.mesh_ip = Some(Ipv4Addr::new(10, 1, 2, 3));
        u.mesh_ipv6 = Some(Ipv6Addr::LOCALHOST);
        u.endpoint = Some(ep("192.0.2.1:1"));
        u.introducer = true;
        u.nat_type = Some("cone".into());
        u.routable_networks = Some(vec![net("192.168.0.0/24")]);
        let old = new_peer(u, DhtTransitive, t0);

        // An update that knows nothing keeps everything but the introducer flag.
        let p = merge(&old, update(), Gossip, t0);
        assert_eq!(p.hostname, "a");
        assert_eq!(p.mesh_ip, old.mesh_ip, "MeshIP kept");
        assert_eq!(p.mesh_ipv6, old.mesh_ipv6);
        assert_eq!(
            p.nat_type.as_deref(),
            Some("cone"),
            "empty NAT type does not overwrite"
        );
        assert_eq!(
            p.routable_networks, old.routable_networks,
            "None keeps routes"
        );
        assert!(!p.introducer, "introducer always overwritten");
        assert_eq!(p.discovered_via, [DhtTransitive, Gossip]);

        // Non-empty fields overwrite; a higher rank replaces the endpoint.
        let mut u = update();
        u.hostname = "b".into();
        u.mesh_ip = Some(Ipv4Addr::new(10, 9, 9, 9));
        u.nat_type = Some("symmetric".into());
        u.endpoint = Some(ep("192.0.2.2:2"));
        u.introducer = true;
        let p = merge(&old, u, Dht, t0);
        assert_eq!(p.hostname, "b");
        assert_eq!(p.mesh_ip, Some(Ipv4Addr::new(10, 9, 9, 9)));
        assert_eq!(p.nat_type.as_deref(), Some("symmetric"));
        assert_eq!(p.endpoint, Some(ep("192.0.2.2:2")));
        assert_eq!(p.endpoint_method, Some(Dht));
        assert!(p.introducer);

        // Authoritative empty list clears routes.
        let mut u = update();
        u.routable_networks = Some(vec![]);
        assert!(merge(&old, u, Dht, t0).routable_networks.is_empty());

        // discovered_via never duplicates.
        let p = merge(&merge(&old, update(), Dht, t0), update(), DhtTransitive, t0);
        assert_eq!(p.discovered_via, [DhtTransitive, Dht]);
    }

    #[test]
    fn merge_last_seen_table() {
        let t0 = Instant::now();
        let seen = t0 + 2 * MIN;
        let now = t0 + 4 * MIN;
        let old = Peer {
            last_seen: seen,
            ..new_peer(update(), Dht, t0)
        };
        #[rustfmt::skip]
        let rows: [(Method, Option<Instant>, Instant); 10] = [
            (Dht, None, now),
            (Dht, Some(t0), now),
            (Lan, None, now),
            (Gossip, None, now),
            (Cache, None, seen),
            (Cache, Some(t0 + MIN), seen),
            (Cache, Some(t0 + 3 * MIN), t0 + 3 * MIN),
            (GossipTransitive, None, seen),
            (DhtTransitive, Some(t0 + 3 * MIN), t0 + 3 * MIN),
            (GossipTransitive, Some(now + MIN), now),
        ];
        for (method, supplied, want) in rows {
            let mut u = update();
            u.last_seen = supplied;
            assert_eq!(
                merge(&old, u, method, now).last_seen,
                want,
                "{method} {supplied:?}"
            );
        }
        // A direct source never moves last_seen backwards.
        assert_eq!(merge(&old, update(), Dht, t0).last_seen, seen);
    }

    #[test]
    fn restored_at_set_by_a_restore_cleared_by_a_live_source() {
        let t0 = Instant::now();
        let restored = new_peer(update(), Cache, t0);
        assert_eq!(restored.restored_at, Some(t0));
        assert_eq!(new_peer(update(), Lan, t0).restored_at, None);
        #[rustfmt::skip]
        let rows: [(Method, Option<Instant>); 8] = [
            (Lan, None),
            (DhtRendezvous, None),
            (Dht, None),
            (Gossip, None),
            (Registry, None),
            (DhtTransitive, Some(t0)),
            (GossipTransitive, Some(t0)),
            (Cache, Some(t0)),
        ];
        for (method, want) in rows {
            let merged = merge(&restored, update(), method, t0 + MIN);
            assert_eq!(merged.restored_at, want, "{method}");
        }
        // A live peer hearing of itself from a cache never becomes "restored".
        let live = new_peer(update(), Lan, t0);
        assert_eq!(merge(&live, update(), Cache, t0).restored_at, None);
    }

    #[test]
    fn classify_table() {
        let t0 = Instant::now();
        let old = new_peer(update(), Dht, t0);
        let bumped = Peer {
            last_seen: t0 + MIN,
            ..old.clone()
        };
        assert_eq!(classify(&old, &old, t0), UpdateOutcome::Unchanged);
        assert_eq!(classify(&old, &bumped, t0 + MIN), UpdateOutcome::Unchanged);
        let revived = Peer {
            last_seen: t0 + 6 * MIN,
            ..old.clone()
        };
        assert_eq!(
            classify(&old, &revived, t0 + 6 * MIN),
            UpdateOutcome::Updated,
            "revived"
        );
        let renamed = Peer {
            hostname: "x".into(),
            ..old.clone()
        };
        assert_eq!(classify(&old, &renamed, t0), UpdateOutcome::Updated);
    }
}
