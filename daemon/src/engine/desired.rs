//! What the device should hold, computed from the active peers. Pure.
//!
//! Every usable peer (not this node, with a mesh IPv4) gets one WireGuard entry: its endpoint if
//! known, the mesh PSK, keepalive 25 s, and allowed IPs = mesh IPv4/32 + mesh IPv6/128 + the
//! networks it routes for that pass the [`RoutePolicy`]. WireGuard allowed IPs are exclusive, so a
//! prefix claimed by several peers goes to exactly one of them, deterministically (the smallest
//! public key), instead of flapping between them on every pass as in Go (weak spot 11); prefixes
//! that are this node's own mesh addresses are never given to a peer. Every advertised network
//! that is not installed is listed in [`DesiredDevice::refused`] with the reason.
//!
//! Relayed peers ([`super::relay`]): a peer in the relay routes keeps its own entry (endpoint,
//! keepalive) with **no** allowed IPs, so WireGuard keeps trying the direct path, while the
//! prefixes it holds (mesh IPs and networks) go to its relay's entry; traffic to them, and the
//! device routes of its networks, therefore go through the relay (§8: the gateway is the relay).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use super::route_policy::{RefusalReason, RoutePolicy};
use crate::keys::{PresharedKey, PublicKey};
use crate::node::LocalNode;
use crate::peers::Peer;
use crate::system::net::DesiredRoute;

/// Persistent keepalive every peer gets (Go sets 25 s on every peer).
pub const KEEPALIVE_SECS: u16 = 25;

/// One peer as the device should hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredPeer {
    /// Where to reach it, if known.
    pub endpoint: Option<SocketAddr>,
    /// The mesh PSK.
    pub preshared_key: PresharedKey,
    /// Keepalive seconds.
    pub keepalive: u16,
    /// Allowed IPs, canonical and sorted.
    pub allowed_ips: Vec<IpNet>,
}

/// An advertised network that is not routed to the peer that advertised it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RefusedRoute {
    /// The prefix as advertised, canonicalised.
    pub prefix: IpNet,
    /// Why.
    pub reason: RefusalReason,
}

/// The device and routes as they should be.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredDevice {
    /// Peers by public key.
    pub peers: BTreeMap<PublicKey, DesiredPeer>,
    /// Kernel routes on the mesh interface (networks behind peers).
    pub routes: Vec<DesiredRoute>,
    /// Advertised networks not installed, by the peer that advertised them.
    pub refused: BTreeMap<PublicKey, Vec<RefusedRoute>>,
}

/// The host route (/32 or /128) of an address.
fn host(ip: impl Into<IpAddr>) -> IpNet {
    IpNet::from(ip.into())
}

/// Computes the desired device from the active peers.
pub fn desired_device(
    local: &LocalNode,
    peers: &[Peer],
    psk: PresharedKey,
    policy: &RoutePolicy,
    relays: &BTreeMap<PublicKey, PublicKey>,
) -> DesiredDevice {
    // Candidate claims in key order; the first claim of a prefix wins.
    let mut usable: Vec<&Peer> = peers
        .iter()
        .filter(|p| p.public_key != local.public_key && p.mesh_ip.is_some())
        .collect();
    usable.sort_by_key(|p| p.public_key);
    let endpoints: Vec<IpAddr> = usable
        .iter()
        .filter_map(|p| p.endpoint.map(|e| e.ip()))
        .collect();
    // Prefix -> the peer that holds it (our own mesh addresses are held by nobody).
    let mut taken: BTreeMap<IpNet, Option<PublicKey>> =
        [host(local.mesh_ip), host(local.mesh_ipv6)]
            .into_iter()
            .map(|net| (net, None))
            .collect();
    let mut device = DesiredDevice::default();
    let mut routes: BTreeSet<IpNet> = BTreeSet::new();
    for peer in usable {
        let mesh = peer
            .mesh_ip
            .map(host)
            .into_iter()
            .chain(peer.mesh_ipv6.map(host));
        let mut allowed = Vec::new();
        let mut refused = Vec::new();
        for net in mesh {
            if let std::collections::btree_map::Entry::Vacant(slot) = taken.entry(net) {
                slot.insert(Some(peer.public_key));
                allowed.push(net);
            }
        }
        for net in peer.routable_networks.iter().map(IpNet::trunc) {
            let verdict = policy
                .check(&net, &endpoints)
                .and_then(|()| match taken.get(&net) {
                    None => Ok(()),
                    Some(Some(owner)) if *owner == peer.public_key => Ok(()),
                    Some(Some(owner)) => Err(RefusalReason::ClaimedByOtherPeer(owner.to_string())),
                    Some(None) => Err(RefusalReason::MeshSubnet(net)),
                });
            match verdict {
                Ok(()) => {
                    if taken.insert(net, Some(peer.public_key)).is_none() {
                        allowed.push(net);
                        routes.insert(net);
                    }
                }
                Err(reason) => refused.push(RefusedRoute {
                    prefix: net,
                    reason,
                }),
            }
        }
        allowed.sort();
        if !refused.is_empty() {
            device.refused.insert(peer.public_key, refused);
        }
        device.peers.insert(
            peer.public_key,
            DesiredPeer {
                endpoint: peer.endpoint,
                preshared_key: psk,
                keepalive: KEEPALIVE_SECS,
                allowed_ips: allowed,
            },
        );
    }
    // Relayed peers: their prefixes move to the relay's entry (created if the relay has no mesh
    // IP and so no entry yet); their own entry stays, empty, so the direct path keeps being tried.
    for (peer, via) in relays {
        if peer == via || !device.peers.contains_key(peer) {
            continue;
        }
        let Some(relay) = peers.iter().find(|p| p.public_key == *via) else {
            continue;
        };
        if relay.public_key == local.public_key || relay.endpoint.is_none() {
            continue;
        }
        let moved = device
            .peers
            .get_mut(peer)
            .map(|p| std::mem::take(&mut p.allowed_ips))
            .unwrap_or_default();
        let entry = device.peers.entry(*via).or_insert_with(|| DesiredPeer {
            endpoint: relay.endpoint,
            preshared_key: psk,
            keepalive: KEEPALIVE_SECS,
            allowed_ips: Vec::new(),
        });
        entry.allowed_ips.extend(moved);
        entry.allowed_ips.sort();
    }
    device.routes = routes.into_iter().map(DesiredRoute::device).collect();
    device
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Instant;

    use super::*;
    use crate::peers::Method;

    fn key(b: u8) -> PublicKey {
        PublicKey([b; 32])
    }

    pub(crate) fn peer(b: u8, ip: Option<&str>, routes: &[&str]) -> Peer {
        Peer {
            public_key: key(b),
            hostname: format!("h{b}"),
            mesh_ip: ip.map(|s| s.parse().unwrap()),
            mesh_ipv6: None,
            endpoint: Some(format!("192.0.2.{b}:51820").parse().unwrap()),
            endpoint_method: Some(Method::Lan),
            introducer: false,
            routable_networks: routes.iter().map(|s| s.parse().unwrap()).collect(),
            nat_type: None,
            last_seen: Instant::now(),
            discovered_via: vec![Method::Lan],
            latency: None,
            quarantined_until: None,
            restored_at: None,
        }
    }

    fn local() -> LocalNode {
        crate::node::tests::local()
    }

    fn open() -> RoutePolicy {
        RoutePolicy::default()
    }

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn each_peer_gets_its_mesh_ips_and_networks() {
        let mut p = peer(2, Some("10.1.0.2"), &["192.168.50.0/24", "10.9.1.2/16"]);
        p.mesh_ipv6 = Some("fd00::2".parse().unwrap());
        let d = desired_device(
            &local(),
            &[p],
            PresharedKey([9; 32]),
            &open(),
            &BTreeMap::new(),
        );
        let dp = &d.peers[&key(2)];
        assert_eq!(dp.keepalive, 25);
        assert_eq!(
            dp.allowed_ips,
            vec![
                n("10.1.0.2/32"),
                n("10.9.0.0/16"),
                n("192.168.50.0/24"),
                n("fd00::2/128")
            ]
        );
        let routes: Vec<IpNet> = d.routes.iter().map(|r| r.destination()).collect();
        assert_eq!(routes, vec![n("10.9.0.0/16"), n("192.168.50.0/24")]);
    }

    #[test]
    fn self_and_peers_without_mesh_ip_are_skipped() {
        let d = desired_device(
            &local(),
            &[peer(1, Some("10.1.0.9"), &[]), peer(3, None, &[])],
            PresharedKey([9; 32]),
            &open(),
            &BTreeMap::new(),
        );
        assert!(d.peers.is_empty());
    }

    #[test]
    fn contested_prefixes_go_to_one_peer_deterministically() {
        let a = peer(5, Some("10.1.0.5"), &["192.168.9.0/24"]);
        let b = peer(4, Some("10.1.0.5"), &["192.168.9.0/24"]);
        let thief = peer(6, Some("10.1.0.1"), &[]);
        for order in [vec![a.clone(), b.clone(), thief.clone()], vec![thief, b, a]] {
            let d = desired_device(
                &local(),
                &order,
                PresharedKey([9; 32]),
                &open(),
                &BTreeMap::new(),
            );
            assert_eq!(
                d.peers[&key(4)].allowed_ips,
                vec![n("10.1.0.5/32"), n("192.168.9.0/24")]
            );
            assert!(d.peers[&key(5)].allowed_ips.is_empty());
            // Our own mesh IP is never a peer's.
            assert!(d.peers[&key(6)].allowed_ips.is_empty());
            assert_eq!(d.routes.len(), 1);
        }
    }

    #[test]
    fn refused_prefixes_are_neither_allowed_nor_routed_and_say_why() {
        let policy = RoutePolicy {
            mesh_v4: Some("10.1.0.0/16".parse().unwrap()),
            mesh_v6: None,
            local_networks: vec![n("192.168.1.5/24")],
        };
        // Peer 2's endpoint is 192.0.2.2 (see `peer`).
        let hijacker = peer(
            2,
            Some("10.1.0.2"),
            &[
                "0.0.0.0/1",
                "192.168.0.0/16",
                "10.1.7.0/24",
                "192.0.2.0/24",
                "172.20.0.0/16",
            ],
        );
        let d = desired_device(
            &local(),
            &[hijacker],
            PresharedKey([9; 32]),
            &policy,
            &BTreeMap::new(),
        );
        assert_eq!(
            d.peers[&key(2)].allowed_ips,
            vec![n("10.1.0.2/32"), n("172.20.0.0/16")]
        );
        let routes: Vec<IpNet> = d.routes.iter().map(|r| r.destination()).collect();
        assert_eq!(routes, vec![n("172.20.0.0/16")]);
        let codes: Vec<(IpNet, &str)> = d.refused[&key(2)]
            .iter()
            .map(|r| (r.prefix, r.reason.code()))
            .collect();
        assert_eq!(
            codes,
            vec![
                (n("0.0.0.0/1"), "too_broad"),
                (n("192.168.0.0/16"), "local_network"),
                (n("10.1.7.0/24"), "mesh_subnet"),
                (n("192.0.2.0/24"), "peer_endpoint"),
            ]
        );
    }

    #[test]
    fn the_loser_of_a_contested_prefix_is_told_who_holds_it() {
        let a = peer(5, Some("10.1.0.5"), &["192.168.9.0/24"]);
        let b = peer(4, Some("10.1.0.4"), &["192.168.9.0/24"]);
        let d = desired_device(
            &local(),
            &[a, b],
            PresharedKey([9; 32]),
            &open(),
            &BTreeMap::new(),
        );
        assert!(!d.refused.contains_key(&key(4)));
        let lost = &d.refused[&key(5)];
        assert_eq!(lost.len(), 1);
        assert_eq!(
            lost[0].reason,
            RefusalReason::ClaimedByOtherPeer(key(4).to_string())
        );
    }

    #[test]
    fn a_relayed_peer_keeps_its_endpoint_and_its_prefixes_go_to_the_relay() {
        let mut relay = peer(2, Some("10.1.0.2"), &[]);
        relay.introducer = true;
        let mut far = peer(7, Some("10.1.0.7"), &["172.30.0.0/16"]);
        far.mesh_ipv6 = Some("fd00::7".parse().unwrap());
        let relays = BTreeMap::from([(key(7), key(2))]);
        let d = desired_device(
            &local(),
            &[relay, far],
            PresharedKey([9; 32]),
            &open(),
            &relays,
        );
        let own = &d.peers[&key(7)];
        assert!(own.allowed_ips.is_empty());
        assert_eq!(own.endpoint, Some("192.0.2.7:51820".parse().unwrap()));
        assert_eq!(own.keepalive, KEEPALIVE_SECS);
        assert_eq!(
            d.peers[&key(2)].allowed_ips,
            vec![
                n("10.1.0.2/32"),
                n("10.1.0.7/32"),
                n("172.30.0.0/16"),
                n("fd00::7/128")
            ]
        );
        // The network is still routed into the device; WireGuard sends it to the relay.
        let routes: Vec<IpNet> = d.routes.iter().map(|r| r.destination()).collect();
        assert_eq!(routes, vec![n("172.30.0.0/16")]);
    }

    #[test]
    fn a_relay_without_mesh_ip_still_gets_an_entry_and_unknown_relays_change_nothing() {
        let mut relay = peer(2, None, &[]);
        relay.introducer = true;
        let far = peer(7, Some("10.1.0.7"), &[]);
        let relays = BTreeMap::from([(key(7), key(2))]);
        let d = desired_device(
            &local(),
            &[relay, far.clone()],
            PresharedKey([9; 32]),
            &open(),
            &relays,
        );
        assert_eq!(d.peers[&key(2)].allowed_ips, vec![n("10.1.0.7/32")]);
        assert_eq!(
            d.peers[&key(2)].endpoint,
            Some("192.0.2.2:51820".parse().unwrap())
        );
        let d = desired_device(&local(), &[far], PresharedKey([9; 32]), &open(), &relays);
        assert_eq!(d.peers[&key(7)].allowed_ips, vec![n("10.1.0.7/32")]);
    }

    /// Route sync (§8, seed 001) as the reconcile loop composes it: the store's device peers
    /// feed [`desired_device`]. IPv4 and IPv6 networks of active peers become device routes;
    /// quarantined, dead (offline) and our own entries add none.
    #[test]
    fn routes_come_from_active_peers_only() {
        use crate::peers::{DEAD_AFTER, PeerStore, PeerUpdate};
        let t0 = Instant::now();
        let store = PeerStore::default();
        let add = |b: u8, nets: &[&str], seen: Instant| {
            let mut u = PeerUpdate::new(key(b));
            u.mesh_ip = Some(format!("10.1.0.{b}").parse().unwrap());
            u.routable_networks = Some(nets.iter().map(|s| n(s)).collect());
            u.last_seen = Some(seen);
            store.update(u, Method::Lan, seen);
        };
        add(2, &["10.99.0.0/24", "fd99::/64"], t0 + DEAD_AFTER);
        add(3, &["10.98.0.0/24"], t0 + DEAD_AFTER);
        add(4, &["10.97.0.0/24"], t0); // silent since t0: dead at t0 + DEAD_AFTER
        add(1, &["10.96.0.0/24"], t0 + DEAD_AFTER); // our own key
        store.quarantine(&key(3), t0 + DEAD_AFTER * 2);
        let now = t0 + DEAD_AFTER + std::time::Duration::from_secs(1);
        let peers = store.for_device(now);
        let d = desired_device(
            &local(),
            &peers,
            PresharedKey([9; 32]),
            &open(),
            &BTreeMap::new(),
        );
        let mut routes: Vec<IpNet> = d.routes.iter().map(|r| r.destination()).collect();
        routes.sort();
        assert_eq!(routes, vec![n("10.99.0.0/24"), n("fd99::/64")]);
        assert!(
            d.routes
                .iter()
                .all(|r| *r == DesiredRoute::device(r.destination()))
        );
        assert_eq!(d.peers.keys().copied().collect::<Vec<_>>(), vec![key(2)]);
    }
}
