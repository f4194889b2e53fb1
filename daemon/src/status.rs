//! What the daemon shows about itself: the API bodies and the periodic summary log, built from
//! the peer store, the last reconcile pass, this node's facts and the task registry. Pure.

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime};

use wgmesh_api_types as api;

use crate::engine::reconcile::Reconciled;
use crate::node::LocalNode;
use crate::peers::{Liveness, Method, Peer, handshake_is_recent};
use crate::supervisor::{LayerRecord, TaskRecord};

/// What the daemon knows about itself at start: the status body with every field that does not
/// change while it runs (uptime, node facts, layers and counts are filled in per snapshot).
#[derive(Debug, Clone)]
pub struct NodeFacts {
    /// The fixed part of every [`api::Status`].
    pub base: api::Status,
    /// When the daemon started.
    pub started: Instant,
}

/// Everything that changes between snapshots.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// Every stored peer.
    pub peers: &'a [Peer],
    /// The last reconcile pass (live device, refusals).
    pub reconciled: &'a Reconciled,
    /// This node now.
    pub local: &'a LocalNode,
    /// Every supervised task.
    pub tasks: &'a [TaskRecord],
    /// Every discovery layer.
    pub layers: &'a BTreeMap<&'static str, LayerRecord>,
    /// Monotonic now (timers of the store and the registry use it).
    pub now: Instant,
    /// Wall-clock now (handshake times are wall-clock).
    pub wall: SystemTime,
}

fn seconds_ago(then: Option<tokio::time::Instant>, now: Instant) -> Option<u64> {
    then.map(|t| now.saturating_duration_since(t.into_std()).as_secs())
}

fn connected(inputs: &Inputs<'_>, peer: &Peer) -> bool {
    let handshake = inputs
        .reconciled
        .live
        .peers
        .get(&peer.public_key)
        .and_then(|p| p.last_handshake);
    handshake_is_recent(handshake, inputs.wall)
}

/// Peers by the method that gave their endpoint (`none` without one).
fn by_via(peers: &[Peer]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for p in peers {
        let via = p.endpoint_method.map_or("none", Method::as_str);
        *counts.entry(via.to_owned()).or_insert(0) += 1;
    }
    counts
}

/// `GET /v1/status` body.
pub fn status(facts: &NodeFacts, inputs: &Inputs<'_>) -> api::Status {
    let count = |want: Liveness| {
        inputs
            .peers
            .iter()
            .filter(|p| p.liveness(inputs.now) == want)
            .count()
    };
    let discovery = inputs
        .layers
        .iter()
        .map(|(name, l)| {
            (
                (*name).to_owned(),
                api::LayerStatus {
                    state: l.state.as_str().to_owned(),
                    detail: l.detail.clone(),
                    last_error: l.last_error.clone(),
                    last_error_seconds_ago: seconds_ago(l.last_error_at, inputs.now),
                    last_success_seconds_ago: seconds_ago(l.last_success_at, inputs.now),
                },
            )
        })
        .collect();
    let tasks = inputs
        .tasks
        .iter()
        .map(|t| api::TaskStatus {
            name: t.name.to_owned(),
            state: t.state.as_str().to_owned(),
            restarts: t.restarts,
            last_error: t.last_error.clone(),
            last_error_seconds_ago: seconds_ago(t.last_error_at, inputs.now),
        })
        .collect();
    api::Status {
        uptime_seconds: inputs
            .now
            .saturating_duration_since(facts.started)
            .as_secs(),
        listen_port: inputs.local.listen_port,
        mesh_ip: inputs.local.mesh_ip.to_string(),
        mesh_ipv6: inputs.local.mesh_ipv6.to_string(),
        introducer: inputs.local.introducer,
        advertise_routes: inputs
            .local
            .advertise_routes
            .iter()
            .map(ToString::to_string)
            .collect(),
        discovery,
        tasks,
        log_level: inputs.local.log_level.as_str().to_owned(),
        peers: api::PeerCounts {
            total: inputs.peers.len(),
            active: count(Liveness::Active),
            cached: count(Liveness::Cached),
            connected: inputs.peers.iter().filter(|p| connected(inputs, p)).count(),
            quarantined: count(Liveness::Quarantined),
            dead: count(Liveness::Dead),
            by_via: by_via(inputs.peers),
        },
        ..facts.base.clone()
    }
}

/// `GET /v1/peers` body, sorted by mesh IP (peers without one last).
pub fn peer_list(inputs: &Inputs<'_>) -> api::PeerList {
    let mut sorted: Vec<&Peer> = inputs.peers.iter().collect();
    sorted.sort_by_key(|p| (p.mesh_ip.is_none(), p.mesh_ip, p.public_key));
    let peers = sorted
        .into_iter()
        .map(|p| {
            let lp = inputs.reconciled.live.peers.get(&p.public_key);
            let refused = inputs
                .reconciled
                .refused
                .get(&p.public_key)
                .map(Vec::as_slice)
                .unwrap_or_default();
            api::Peer {
                public_key: p.public_key.to_string(),
                hostname: p.hostname.clone(),
                mesh_ip: p.mesh_ip.map(|ip| ip.to_string()),
                mesh_ipv6: p.mesh_ipv6.map(|ip| ip.to_string()),
                endpoint: lp
                    .and_then(|l| l.endpoint)
                    .or(p.endpoint)
                    .map(|e| e.to_string()),
                endpoint_method: p.endpoint_method.map(|m| m.as_str().to_owned()),
                discovered_via: p
                    .discovered_via
                    .iter()
                    .map(|m| m.as_str().to_owned())
                    .collect(),
                introducer: p.introducer,
                routable_networks: p
                    .routable_networks
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                last_seen_seconds_ago: inputs.now.saturating_duration_since(p.last_seen).as_secs(),
                state: p.liveness(inputs.now).as_str().to_owned(),
                last_handshake_seconds_ago: lp
                    .and_then(|l| l.last_handshake)
                    .and_then(|t| inputs.wall.duration_since(t).ok())
                    .map(|d| d.as_secs()),
                rx_bytes: lp.map_or(0, |l| l.rx_bytes),
                tx_bytes: lp.map_or(0, |l| l.tx_bytes),
                routes_refused: refused
                    .iter()
                    .map(|r| api::RouteRefusal {
                        prefix: r.prefix.to_string(),
                        reason: r.reason.code().to_owned(),
                        detail: r.reason.to_string(),
                    })
                    .collect(),
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
        .filter(|p| p.endpoint_method.as_deref() == Some(Method::Lan.as_str()))
        .count();
    format!(
        "mesh: {} peers ({} active, {} cached, {} connected; {} via LAN)",
        status.peers.total, status.peers.active, status.peers.cached, status.peers.connected, lan
    )
}
