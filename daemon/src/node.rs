//! This node as the other layers see it: the [`LocalNode`], its facts that can change while the
//! daemon runs. Pure.
//!
//! The daemon keeps one `LocalNode` in a `tokio::sync::watch` channel. Whoever changes a fact
//! (reload: advertised routes and log level; STUN: public endpoint and NAT type; collisions: the
//! mesh IP) sends a new value; whoever uses one (announcements, the reconcile loop, the API) reads
//! the current value when it needs it, so a change is announced at the next send, not at the next
//! restart.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

use crate::keys::PublicKey;
use crate::logging::LogLevel;
use crate::wire::{PROTOCOL, PeerAnnouncement};

/// NAT behaviour of this node's public side (crypto-and-wire §15), as announced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatType {
    /// Same public mapping for every destination: hole punching works.
    Cone,
    /// A new mapping per destination: punching between two such nodes fails.
    Symmetric,
    /// Not measured (yet), or the measurement was inconclusive.
    Unknown,
}

impl NatType {
    /// Go's wire string: `cone`, `symmetric`, `unknown`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Cone => "cone",
            Self::Symmetric => "symmetric",
            Self::Unknown => "unknown",
        }
    }
}

/// This node's facts. Cloned out of the watch channel by readers; replaced whole by writers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalNode {
    /// Our WireGuard public key (never a peer of ourselves).
    pub public_key: PublicKey,
    /// Our mesh IPv4 (never an allowed IP of a peer).
    pub mesh_ip: Ipv4Addr,
    /// Our mesh IPv6.
    pub mesh_ipv6: Ipv6Addr,
    /// Host name announced to peers (`""` when the OS has no usable one).
    pub hostname: String,
    /// The WireGuard port the device listens on.
    pub listen_port: u16,
    /// Whether this node serves as an introducer (relay and rendezvous point).
    pub introducer: bool,
    /// Networks behind this node that peers should route through it.
    pub advertise_routes: Vec<IpNet>,
    /// Our WireGuard endpoint as the outside sees it, once learned.
    pub public_endpoint: Option<SocketAddr>,
    /// NAT type of our public side, once measured.
    pub nat_type: Option<NatType>,
    /// Current log verbosity.
    pub log_level: LogLevel,
}

impl LocalNode {
    /// The announcement peers receive about us (no timestamp, no known peers: the sender adds
    /// what its message type needs). The endpoint is the public one when known, else the
    /// wildcard with our port (receivers replace the host by the packet's source address).
    pub fn announcement(&self) -> PeerAnnouncement {
        let wg_endpoint = match self.public_endpoint {
            Some(ep) => ep.to_string(),
            None => format!("0.0.0.0:{}", self.listen_port),
        };
        PeerAnnouncement {
            protocol: PROTOCOL.to_owned(),
            wg_pubkey: self.public_key.to_string(),
            hostname: self.hostname.clone(),
            mesh_ip: self.mesh_ip.to_string(),
            mesh_ipv6: self.mesh_ipv6.to_string(),
            wg_endpoint,
            introducer: self.introducer,
            routable_networks: self
                .advertise_routes
                .iter()
                .map(ToString::to_string)
                .collect(),
            nat_type: self
                .nat_type
                .map(|n| n.as_str().to_owned())
                .unwrap_or_default(),
            ..PeerAnnouncement::default()
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A local node for tests of other modules.
    pub(crate) fn local() -> LocalNode {
        LocalNode {
            public_key: PublicKey([1; 32]),
            mesh_ip: "10.1.0.1".parse().unwrap(),
            mesh_ipv6: "fd00::1".parse().unwrap(),
            hostname: "me".into(),
            listen_port: 51820,
            introducer: false,
            advertise_routes: Vec::new(),
            public_endpoint: None,
            nat_type: None,
            log_level: LogLevel::Info,
        }
    }

    #[test]
    fn announcement_follows_the_facts() {
        let mut node = local();
        let ann = node.announcement();
        assert_eq!(ann.wg_endpoint, "0.0.0.0:51820");
        assert_eq!(ann.nat_type, "");
        assert!(ann.routable_networks.is_empty());
        assert!(ann.validate().is_ok(), "{ann:?}");
        node.advertise_routes = vec!["192.168.50.0/24".parse().unwrap()];
        node.public_endpoint = Some("203.0.113.7:40000".parse().unwrap());
        node.nat_type = Some(NatType::Cone);
        node.introducer = true;
        let ann = node.announcement();
        assert_eq!(ann.wg_endpoint, "203.0.113.7:40000");
        assert_eq!(ann.routable_networks, ["192.168.50.0/24"]);
        assert_eq!(ann.nat_type, "cone");
        assert!(ann.introducer);
    }
}
