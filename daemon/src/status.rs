//! What the daemon shows about itself: the API bodies and the periodic summary log, built from
//! the peer store and the live device. Pure.

use std::time::{Duration, Instant, SystemTime};

use wgmesh_api_types as api;

use crate::peers::{DEAD_AFTER, Peer};
use crate::system::wg::LiveDevice;

/// A handshake this recent counts as "connected" (WireGuard rekeys every 2 minutes).
pub const CONNECTED_WITHIN: Duration = Duration::from_secs(180);

/// What the daemon knows about itself at start: the status body with every field that does not
/// change while it runs (uptime and peer counts are filled in per snapshot).
#[derive(Debug, Clone)]
pub struct NodeFacts {
    /// The fixed part of every [`api::Status`].
    pub base: api::Status,
    /// When the daemon started.
    pub started: Instant,
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
        uptime_seconds: now.saturating_duration_since(facts.started).as_secs(),
        peers: api::PeerCounts {
            total: peers.len(),
            active,
            connected: peers.iter().filter(|p| connected(live, p, wall)).count(),
        },
        ..facts.base.clone()
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
                last_seen_seconds_ago: seen.as_secs(),
                state: if seen < DEAD_AFTER { "active" } else { "dead" }.to_owned(),
                last_handshake_seconds_ago: lp
                    .and_then(|l| l.last_handshake)
                    .and_then(|t| wall.duration_since(t).ok())
                    .map(|d| d.as_secs()),
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
