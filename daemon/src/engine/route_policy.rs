//! Which networks a peer may route through the mesh. Pure.
//!
//! A peer's `routable_networks` come from the network: even a genuine member of the mesh (or a
//! member whose secret leaked) must not be able to pull this host's traffic into the tunnel. A
//! prefix is refused, and neither installed as a kernel route nor given to the peer as a
//! WireGuard allowed IP, when it:
//!
//! - is **too broad** (IPv4 shorter than /8, IPv6 shorter than /16): `0.0.0.0/1` and friends
//!   would capture Internet traffic more specifically than the default route;
//! - is **reserved** (loopback, link-local, multicast, unspecified): never routable anywhere;
//! - **overlaps the mesh** (the mesh IPv4 subnet or the mesh IPv6 /64): it would hijack other
//!   members' addresses and loop mesh traffic;
//! - **overlaps a network this host is on** (an address prefix of one of its interfaces other
//!   than the mesh interface): the LAN would become unreachable or be impersonated;
//! - **contains a peer's endpoint**: the encrypted packets to that peer would be routed into the
//!   tunnel that carries them, a loop that kills the peer's session.
//!
//! "Overlaps" means either prefix contains the other. A refusal is logged once by the caller and
//! shown on the peer in the API with the [`RefusalReason`] code and a detail.

use std::fmt;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Shortest IPv4 prefix a peer may advertise.
pub const MIN_PREFIX_V4: u8 = 8;
/// Shortest IPv6 prefix a peer may advertise.
pub const MIN_PREFIX_V6: u16 = 16;

/// Why an advertised prefix is not installed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RefusalReason {
    /// Shorter than [`MIN_PREFIX_V4`] / [`MIN_PREFIX_V6`].
    TooBroad,
    /// Loopback, link-local, multicast or unspecified.
    Reserved,
    /// Overlaps the mesh subnet (IPv4) or the mesh /64 (IPv6).
    MeshSubnet(IpNet),
    /// Overlaps a network of one of this host's interfaces.
    LocalNetwork(IpNet),
    /// Contains the endpoint address of a peer.
    PeerEndpoint(IpAddr),
    /// Another peer with a smaller key already claims this exact prefix.
    ClaimedByOtherPeer(String),
}

impl RefusalReason {
    /// Stable code for the API and scripts.
    pub const fn code(&self) -> &'static str {
        match self {
            Self::TooBroad => "too_broad",
            Self::Reserved => "reserved",
            Self::MeshSubnet(_) => "mesh_subnet",
            Self::LocalNetwork(_) => "local_network",
            Self::PeerEndpoint(_) => "peer_endpoint",
            Self::ClaimedByOtherPeer(_) => "claimed_by_other_peer",
        }
    }
}

impl fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooBroad => write!(
                f,
                "broader than /{MIN_PREFIX_V4} (IPv4) or /{MIN_PREFIX_V6} (IPv6): it would capture Internet traffic"
            ),
            Self::Reserved => f.write_str(
                "loopback, link-local, multicast or unspecified addresses are never routed",
            ),
            Self::MeshSubnet(net) => write!(f, "overlaps the mesh network {net}"),
            Self::LocalNetwork(net) => write!(f, "overlaps {net}, a network this host is on"),
            Self::PeerEndpoint(ip) => {
                write!(
                    f,
                    "contains {ip}, the endpoint of a peer (its tunnel would loop)"
                )
            }
            Self::ClaimedByOtherPeer(key) => {
                write!(f, "peer {key} (smaller key) already routes this prefix")
            }
        }
    }
}

/// What a prefix is checked against.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoutePolicy {
    /// The mesh IPv4 subnet.
    pub mesh_v4: Option<Ipv4Net>,
    /// The mesh IPv6 /64.
    pub mesh_v6: Option<Ipv6Net>,
    /// Prefixes of this host's interfaces, the mesh interface excluded.
    pub local_networks: Vec<IpNet>,
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

fn is_reserved(net: &IpNet) -> bool {
    let ip = net.network();
    ip.is_loopback()
        || ip.is_multicast()
        || ip.is_unspecified()
        || match ip {
            IpAddr::V4(v4) => v4.is_link_local() || v4.is_broadcast(),
            IpAddr::V6(v6) => v6.is_unicast_link_local(),
        }
}

impl RoutePolicy {
    /// Checks one advertised prefix (canonical: host bits zero) against the policy and the
    /// endpoints of the peers. `Ok` means it may be routed to the peer that advertised it.
    pub fn check(&self, prefix: &IpNet, endpoints: &[IpAddr]) -> Result<(), RefusalReason> {
        let too_broad = match prefix {
            IpNet::V4(n) => n.prefix_len() < MIN_PREFIX_V4,
            IpNet::V6(n) => u16::from(n.prefix_len()) < MIN_PREFIX_V6,
        };
        if too_broad {
            return Err(RefusalReason::TooBroad);
        }
        if is_reserved(prefix) {
            return Err(RefusalReason::Reserved);
        }
        let mesh = [self.mesh_v4.map(IpNet::V4), self.mesh_v6.map(IpNet::V6)];
        if let Some(net) = mesh.into_iter().flatten().find(|m| overlaps(m, prefix)) {
            return Err(RefusalReason::MeshSubnet(net));
        }
        if let Some(net) = self
            .local_networks
            .iter()
            .map(IpNet::trunc)
            .find(|n| overlaps(n, prefix))
        {
            return Err(RefusalReason::LocalNetwork(net));
        }
        if let Some(ip) = endpoints.iter().find(|ip| prefix.contains(*ip)) {
            return Err(RefusalReason::PeerEndpoint(*ip));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn policy() -> RoutePolicy {
        RoutePolicy {
            mesh_v4: Some("10.78.0.0/16".parse().unwrap()),
            mesh_v6: Some("fd9d:af5d:d5d0:b3c7::/64".parse().unwrap()),
            local_networks: vec![net("192.168.1.17/24"), net("2001:db8:1::5/64")],
        }
    }

    #[test]
    fn refusal_table() {
        let endpoints: Vec<IpAddr> = vec!["203.0.113.9".parse().unwrap()];
        #[rustfmt::skip]
        let rows: [(&str, &str, Option<&str>); 17] = [
            ("a LAN behind a peer", "192.168.50.0/24", None),
            ("a /8 is allowed", "172.0.0.0/8", None),
            ("IPv6 site prefix", "2001:db8:99::/48", None),
            ("half the Internet", "0.0.0.0/1", Some("too_broad")),
            ("default route", "0.0.0.0/0", Some("too_broad")),
            ("IPv6 default", "::/0", Some("too_broad")),
            ("IPv6 too broad", "2000::/3", Some("too_broad")),
            ("loopback", "127.0.0.0/8", Some("reserved")),
            ("link-local", "169.254.0.0/16", Some("reserved")),
            ("multicast", "224.0.0.0/8", Some("reserved")),
            ("IPv6 link-local", "fe80::/64", Some("reserved")),
            ("inside the mesh subnet", "10.78.4.0/24", Some("mesh_subnet")),
            ("containing the mesh subnet", "10.0.0.0/8", Some("mesh_subnet")),
            ("the mesh IPv6 prefix", "fd9d:af5d:d5d0:b3c7::/80", Some("mesh_subnet")),
            ("this host's LAN", "192.168.1.0/24", Some("local_network")),
            ("covering this host's LAN", "192.168.0.0/16", Some("local_network")),
            ("covering a peer endpoint", "203.0.113.0/24", Some("peer_endpoint")),
        ];
        for (why, prefix, want) in rows {
            let got = policy().check(&net(prefix), &endpoints);
            assert_eq!(
                got.as_ref().err().map(RefusalReason::code),
                want,
                "{why}: {got:?}"
            );
        }
    }

    #[test]
    fn details_name_what_was_hit() {
        let p = policy();
        let err = p.check(&net("192.168.0.0/16"), &[]).unwrap_err();
        assert_eq!(err, RefusalReason::LocalNetwork(net("192.168.1.0/24")));
        assert!(err.to_string().contains("192.168.1.0/24"), "{err}");
        let ep: IpAddr = "192.0.2.7".parse().unwrap();
        let err = p.check(&net("192.0.2.0/24"), &[ep]).unwrap_err();
        assert!(err.to_string().contains("192.0.2.7"), "{err}");
    }
}
