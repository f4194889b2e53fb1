//! What the daemon shows about itself: the API bodies and the periodic summary log, built from
//! the peer store and the live device. Pure.

use std::time::{Duration, Instant, SystemTime};

use wgmesh_api_types as api;

use crate::peers::{DEAD_AFTER, Peer};
use crate::system::wg::LiveDevice;

/// A handshake this recent counts as "connected" (WireGuard rekeys every 2 minutes).
pub const CONNECTED_WITHIN: Duration = Duration::from_secs(180);

/// The parts of [`api::Status`] that do not change while the daemon runs.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    /// Interface name.
    pub interface: String,
    /// Our public key.
    pub public_key: String,
    /// Our mesh IPv4.
    pub mesh_ip: String,
    /// Our mesh IPv6.
    pub mesh_ipv6: String,
    /// Mesh subnet text.
    pub mesh_subnet: String,
    /// Network id (16 hex digits).
    pub network_id: String,
    /// Listen port.
    pub listen_port: u16,
    /// Backend kind.
    pub wg_backend: String,
    /// Why that backend.
    pub wg_backend_reason: String,
    /// LAN discovery on.
    pub lan_discovery: bool,
    /// When the daemon started.
    pub started: Instant,
}

fn secs(d: Duration) -> u64 {
    d.as_secs()
}

fn connected(live: &LiveDevice, peer: &Peer, now: SystemTime) -> bool {
    live.peers
        .get(&peer.public_key)
        .and_then(|p| p.last_handshake)
        .and_then(|t| now.duration_since(t).ok())
        .is_some_and(|age| age < CONNECTED_WITHIN)
}

/// `GET /v1/status` body.
pub fn status(
    facts: &NodeFacts,
    peers: &[Peer],
    live: &LiveDevice,
    now: Instant,
    wall: SystemTime,
) -> api::Status {
    let active = peers
        .iter()
        .filter(|p| now.saturating_duration_since(p.last_seen) < DEAD_AFTER)
        .count();
    api::Status {
        schema_version: api::SCHEMA_VERSION,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        interface: facts.interface.clone(),
        public_key: facts.public_key.clone(),
        mesh_ip: facts.mesh_ip.clone(),
        mesh_ipv6: facts.mesh_ipv6.clone(),
        mesh_subnet: facts.mesh_subnet.clone(),
        network_id: facts.network_id.clone(),
        listen_port: facts.listen_port,
        wg_backend: facts.wg_backend.clone(),
        wg_backend_reason: facts.wg_backend_reason.clone(),
        uptime_seconds: secs(now.saturating_duration_since(facts.started)),
        lan_discovery: facts.lan_discovery,
        peers: api::PeerCounts {
            total: peers.len(),
            active,
            connected: peers.iter().filter(|p| connected(live, p, wall)).count(),
        },
    }
}

/// `GET /v1/peers` body, sorted by mesh IP (peers without one last).
pub fn peer_list(
    peers: &[Peer],
    live: &LiveDevice,
    now: Instant,
    wall: SystemTime,
) -> api::PeerList {
    let mut sorted: Vec<&Peer> = peers.iter().collect();
    sorted.sort_by_key(|p| (p.mesh_ip.is_none(), p.mesh_ip, p.public_key));
    let peers = sorted
        .into_iter()
        .map(|p| {
            let lp = live.peers.get(&p.public_key);
            let seen = now.saturating_duration_since(p.last_seen);
            api::Peer {
                public_key: p.public_key.to_string(),
                hostname: p.hostname.clone(),
                mesh_ip: p.mesh_ip.map(|ip| ip.to_string()),
                mesh_ipv6: p.mesh_ipv6.map(|ip| ip.to_string()),
                endpoint: lp
                    .and_then(|l| l.endpoint)
                    .or(p.endpoint)
                    .map(|e| e.to_string()),
                endpoint_method: p.endpoint_method.clone(),
                discovered_via: p.discovered_via.clone(),
                introducer: p.introducer,
                routable_networks: p
                    .routable_networks
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                last_seen_seconds_ago: secs(seen),
                state: if seen < DEAD_AFTER { "active" } else { "dead" }.to_owned(),
                last_handshake_seconds_ago: lp
                    .and_then(|l| l.last_handshake)
                    .and_then(|t| wall.duration_since(t).ok())
                    .map(secs),
                rx_bytes: lp.map_or(0, |l| l.rx_bytes),
                tx_bytes: lp.map_or(0, |l| l.tx_bytes),
            }
        })
        .collect();
    api::PeerList {
        schema_version: api::SCHEMA_VERSION,
        peers,
    }
}

/// The one-line mesh summary logged every 30 s.
pub fn summary_line(status: &api::Status, list: &api::PeerList) -> String {
    let lan = list
        .peers
        .iter()
        .filter(|p| p.endpoint_method.as_deref() == Some("lan"))
        .count();
    format!(
        "mesh: {} peers ({} active, {} connected; {} via LAN)",
        status.peers.total, status.peers.active, status.peers.connected, lan
    )
}
