//! What the device should hold, computed from the active peers. Pure.
//!
//! Every usable peer (not this node, with a mesh IPv4) gets one WireGuard entry: its endpoint if
//! known, the mesh PSK, keepalive 25 s, and allowed IPs = mesh IPv4/32 + mesh IPv6/128 + the
//! networks it routes for. WireGuard allowed IPs are exclusive, so a prefix claimed by several
//! peers goes to exactly one of them, deterministically (the smallest public key), instead of
//! flapping between them on every pass as in Go (weak spot 11); prefixes that are this node's own
//! mesh addresses are never given to a peer.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use ipnet::IpNet;

use crate::peers::Peer;
use crate::system::net::DesiredRoute;
use crate::system::wg::{PresharedKey, PublicKey};

/// Persistent keepalive every peer gets (Go sets 25 s on every peer).
pub const KEEPALIVE_SECS: u16 = 25;

/// This node, as the desired-state computation needs it.
#[derive(Debug, Clone)]
pub struct LocalNode {
    /// Our public key (never a peer of ourselves).
    pub public_key: PublicKey,
    /// Our mesh IPv4 (never an allowed IP of a peer).
    pub mesh_ip: std::net::Ipv4Addr,
    /// Our mesh IPv6.
    pub mesh_ipv6: std::net::Ipv6Addr,
}

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

/// The device and routes as they should be.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredDevice {
    /// Peers by public key.
    pub peers: BTreeMap<PublicKey, DesiredPeer>,
    /// Kernel routes on the mesh interface (networks behind peers).
    pub routes: Vec<DesiredRoute>,
}

/// The host route (/32 or /128) of an address.
fn host(ip: impl Into<std::net::IpAddr>) -> IpNet {
    IpNet::from(ip.into())
}

/// Computes the desired device from the active peers.
pub fn desired_device(local: &LocalNode, peers: &[Peer], psk: PresharedKey) -> DesiredDevice {
    let own: BTreeSet<IpNet> = [host(local.mesh_ip), host(local.mesh_ipv6)]
        .into_iter()
        .collect();
    // Candidate claims in key order; the first claim of a prefix wins.
    let mut usable: Vec<&Peer> = peers
        .iter()
        .filter(|p| p.public_key != local.public_key && p.mesh_ip.is_some())
        .collect();
    usable.sort_by_key(|p| p.public_key);
    let mut taken: BTreeSet<IpNet> = own;
    let mut device = DesiredDevice::default();
    let mut routes: BTreeSet<IpNet> = BTreeSet::new();
    for peer in usable {
        let mesh = peer.mesh_ip.map(host);
        let mesh6 = peer.mesh_ipv6.map(host);
        let networks = peer.routable_networks.iter().map(IpNet::trunc);
        let mut allowed = Vec::new();
        for net in mesh.into_iter().chain(mesh6).chain(networks) {
            if taken.insert(net) {
                allowed.push(net);
                if Some(net) != mesh && Some(net) != mesh6 {
                    routes.insert(net);
                }
            }
        }
        allowed.sort();
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
    device.routes = routes.into_iter().map(DesiredRoute::device).collect();
    device
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

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
            endpoint_method: Some("lan".into()),
            introducer: false,
            routable_networks: routes.iter().map(|s| s.parse().unwrap()).collect(),
            nat_type: None,
            last_seen: Instant::now(),
            discovered_via: vec!["lan".into()],
            latency: None,
        }
    }

    fn local() -> LocalNode {
        LocalNode {
            public_key: key(1),
            mesh_ip: "10.1.0.1".parse().unwrap(),
            mesh_ipv6: "fd00::1".parse().unwrap(),
        }
    }

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn each_peer_gets_its_mesh_ips_and_networks() {
        let mut p = peer(2, Some("10.1.0.2"), &["192.168.50.0/24", "10.9.1.2/16"]);
        p.mesh_ipv6 = Some("fd00::2".parse().unwrap());
        let d = desired_device(&local(), &[p], PresharedKey([9; 32]));
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
        );
        assert!(d.peers.is_empty());
    }

    #[test]
    fn contested_prefixes_go_to_one_peer_deterministically() {
        let a = peer(5, Some("10.1.0.5"), &["192.168.9.0/24"]);
        let b = peer(4, Some("10.1.0.5"), &["192.168.9.0/24"]);
        let thief = peer(6, Some("10.1.0.1"), &[]);
        for order in [vec![a.clone(), b.clone(), thief.clone()], vec![thief, b, a]] {
            let d = desired_device(&local(), &order, PresharedKey([9; 32]));
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
}
