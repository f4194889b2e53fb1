//! Types of the `wgmeshd` control API.
//!
//! The API is HTTP/1.1 with JSON bodies on a unix socket, versioned under [`API_PREFIX`]. Every
//! response body carries [`SCHEMA_VERSION`]; errors are RFC 9457 problem documents ([`Problem`])
//! with a stable `type`. This crate holds only serde types and constants so that the daemon, the
//! CLI and anyone scripting the API share one definition (no tokio, no axum).

mod control;
mod events;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use control::{
    CacheFlushResponse, Change, Health, HealthReason, HealthResponse, ReloadChanges, ReloadRequest,
    ReloadResponse, ReloadSource, UnhealthyProblem,
};
pub use events::{Event, EventKind};

/// Version of every JSON body this crate describes. Bumped on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

/// Path prefix of every API route.
pub const API_PREFIX: &str = "/v1";

/// Default location of the daemon's API socket.
pub const DEFAULT_SOCKET_PATH: &str = "/run/wgmesh/wgmeshd.sock";

/// Environment variable that overrides the socket path for clients.
pub const SOCKET_ENV: &str = "WGMESH_SOCKET";

/// Media type of error bodies.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// Stable `type` URNs of [`Problem`]s. Clients may match on them; they never change meaning.
pub mod problem_type {
    /// No route at this path (404).
    pub const NOT_FOUND: &str = "urn:wgmesh:problem:not-found";
    /// The path exists but not with this method (405).
    pub const METHOD_NOT_ALLOWED: &str = "urn:wgmesh:problem:method-not-allowed";
    /// The request body is larger than the API accepts (413).
    pub const PAYLOAD_TOO_LARGE: &str = "urn:wgmesh:problem:payload-too-large";
    /// The request took longer than the daemon allows (408).
    pub const TIMEOUT: &str = "urn:wgmesh:problem:timeout";
    /// Too many requests in flight; retry later (503).
    pub const OVERLOADED: &str = "urn:wgmesh:problem:overloaded";
    /// Something failed inside the daemon; details are in its log (500).
    pub const INTERNAL: &str = "urn:wgmesh:problem:internal";
    /// The request is malformed or a field is invalid; `detail` names the field (400).
    pub const BAD_REQUEST: &str = "urn:wgmesh:problem:bad-request";
    /// The caller may read but not change the daemon (not root, not in the socket's group), or
    /// the request carries an `Origin` header (browsers are never API clients) (403).
    pub const FORBIDDEN: &str = "urn:wgmesh:problem:forbidden";
    /// A body that is not `application/json` (415).
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "urn:wgmesh:problem:unsupported-media-type";
    /// The daemon is not healthy (`GET /v1/health`, 503); `detail` lists the critical reasons, and
    /// the body also carries `healthy` and `reasons` ([`crate::UnhealthyProblem`]).
    pub const UNHEALTHY: &str = "urn:wgmesh:problem:unhealthy";
    /// The change was valid but could not be carried out (e.g. the cache file cannot be written);
    /// nothing was changed (500).
    pub const FAILED: &str = "urn:wgmesh:problem:failed";
}

/// An RFC 9457 problem document: the body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Problem {
    /// Stable identifier of the error class, e.g. `urn:wgmesh:problem:forbidden`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short human-readable summary of the class.
    pub title: String,
    /// HTTP status code, repeated in the body for clients that lose the header.
    pub status: u16,
    /// What went wrong with this request, safe to show to the caller (never a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Schema version of this body.
    pub schema_version: u32,
}

impl Problem {
    /// Builds a problem of the given class with this crate's schema version.
    pub fn new(kind: &str, title: &str, status: u16, detail: Option<String>) -> Self {
        Self {
            kind: kind.to_owned(),
            title: title.to_owned(),
            status,
            detail,
            schema_version: SCHEMA_VERSION,
        }
    }
}

/// `GET /v1/status`: the node and a summary of its mesh.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Status {
    /// Schema version of this body.
    pub schema_version: u32,
    /// Daemon version.
    pub version: String,
    /// WireGuard interface name.
    pub interface: String,
    /// This node's WireGuard public key.
    pub public_key: String,
    /// This node's mesh IPv4.
    pub mesh_ip: String,
    /// This node's mesh IPv6.
    pub mesh_ipv6: String,
    /// Mesh subnet (`10.x.0.0/16` or the custom CIDR).
    pub mesh_subnet: String,
    /// Network id as Go's `status` prints it (16 hex digits).
    pub network_id: String,
    /// WireGuard UDP listen port.
    pub listen_port: u16,
    /// `kernel` or `userspace`.
    pub wg_backend: String,
    /// Why that backend was chosen.
    pub wg_backend_reason: String,
    /// Seconds since the daemon started.
    pub uptime_seconds: u64,
    /// Current log level (`debug`, `info`, `warn`, `error`); changes with a reload.
    pub log_level: String,
    /// Whether this node serves as an introducer (relay and rendezvous point).
    pub introducer: bool,
    /// Networks this node advertises to its peers.
    pub advertise_routes: Vec<String>,
    /// This node's WireGuard endpoint as the outside sees it (`ip:port`, `[ipv6]:port`), as it
    /// is announced: learned by STUN, a global IPv6 address or a peer's observation; `null`
    /// until one is known (peers then use the address our packets come from).
    pub public_endpoint: Option<String>,
    /// This node's NAT type as STUN measured it: `cone`, `symmetric` or `unknown`; `null` until
    /// measured (or with STUN off).
    pub nat_type: Option<String>,
    /// Each discovery layer by name (`lan`, …): whether it works, and its last error.
    pub discovery: BTreeMap<String, LayerStatus>,
    /// Privacy mode's current epoch (`--privacy`); `null` without privacy mode.
    pub privacy: Option<PrivacyStatus>,
    /// Every long-lived task of the daemon.
    pub tasks: Vec<TaskStatus>,
    /// Peer counts.
    pub peers: PeerCounts,
    /// The last reconcile pass, once there was one.
    pub last_reconcile: Option<ReconcileSummary>,
    /// Overall health (the same as `GET /v1/health`).
    pub health: Health,
}

/// What the last reconcile pass did, in [`Status`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReconcileSummary {
    /// Seconds since it ended.
    pub seconds_ago: u64,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
    /// Peers it added to the device.
    pub added: usize,
    /// Peers it changed.
    pub updated: usize,
    /// Peers it removed.
    pub removed: usize,
    /// Peer changes the device refused even one by one.
    pub failed: usize,
}

/// One discovery layer in [`Status::discovery`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LayerStatus {
    /// `running`, `retrying` (not working right now, trying again) or `off` (disabled).
    pub state: String,
    /// What the layer is using, e.g. the interfaces LAN discovery announces on.
    pub detail: Option<String>,
    /// The last error, kept after recovery so that flapping stays visible.
    pub last_error: Option<String>,
    /// Seconds since that error.
    pub last_error_seconds_ago: Option<u64>,
    /// Seconds since the layer last did its job (sent or heard something useful).
    pub last_success_seconds_ago: Option<u64>,
}

/// Privacy mode in [`Status::privacy`]: the epoch whose relays carry this node's stem messages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PrivacyStatus {
    /// Epoch id: 1 after start, one more at each rotation.
    pub epoch: u64,
    /// Public keys of the epoch's relay peers, in stem order (empty: no peer to relay yet, so
    /// this node announces itself directly).
    pub relays: Vec<String>,
    /// Seconds until the scheduled rotation (every 10 minutes; earlier when the relays go away).
    pub seconds_until_rotation: u64,
}

/// One task in [`Status::tasks`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskStatus {
    /// The task's name (`reconcile`, `api`, `lan-discovery`, …).
    pub name: String,
    /// `running`, `restarting` (failed, waiting to start again), `stopped` or `failed`.
    pub state: String,
    /// How many times it was restarted after a failure.
    pub restarts: u32,
    /// The last failure.
    pub last_error: Option<String>,
    /// Seconds since that failure.
    pub last_error_seconds_ago: Option<u64>,
}

/// Peer counts in [`Status`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PeerCounts {
    /// Peers in the store.
    pub total: usize,
    /// Peers heard of within the last 5 minutes and not quarantined (configured on the device).
    pub active: usize,
    /// Peers restored from the peer cache and not yet confirmed by a live source (configured on
    /// the device, so their handshakes start at once).
    pub cached: usize,
    /// Peers with a WireGuard handshake in the last 3 minutes.
    pub connected: usize,
    /// Peers excluded for a while after a health eviction.
    pub quarantined: usize,
    /// Peers silent for 5 minutes (forgotten after 10).
    pub dead: usize,
    /// Peers by how their endpoint was learned (`lan`, `dht`, `cache`, …; `none` without one).
    pub by_via: BTreeMap<String, usize>,
}

/// `GET /v1/peers`: every known peer (or those `?state=` and `?via=` select).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PeerList {
    /// Schema version of this body.
    pub schema_version: u32,
    /// Peers, sorted by mesh IP (then key; peers without one last). `?state=STATE` keeps the
    /// peers in that [`Peer::state`]; `?via=METHOD` keeps those whose endpoint was learned that
    /// way ([`Peer::endpoint_method`], `none` for no endpoint: the grouping of
    /// [`PeerCounts::by_via`]).
    pub peers: Vec<Peer>,
}

/// `GET /v1/peers/{key}`: one peer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PeerResponse {
    /// Schema version of this body.
    pub schema_version: u32,
    /// The peer, as in [`PeerList`].
    pub peer: Peer,
}

/// One peer in [`PeerList`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Peer {
    /// WireGuard public key.
    pub public_key: String,
    /// Hostname it announced (may be empty).
    pub hostname: String,
    /// Mesh IPv4.
    pub mesh_ip: Option<String>,
    /// Mesh IPv6.
    pub mesh_ipv6: Option<String>,
    /// Current WireGuard endpoint.
    pub endpoint: Option<String>,
    /// How the endpoint was learned (`lan`, `dht`, …).
    pub endpoint_method: Option<String>,
    /// Every way the peer was discovered, first first.
    pub discovered_via: Vec<String>,
    /// The peer is an introducer.
    pub introducer: bool,
    /// The NAT type the peer announced (`cone`, `symmetric`, `unknown`), if it did.
    pub nat_type: Option<String>,
    /// Networks the peer routes for.
    pub routable_networks: Vec<String>,
    /// Seconds since the peer was last heard of.
    pub last_seen_seconds_ago: u64,
    /// `active` (heard of within 5 minutes), `cached` (restored from the peer cache, not yet
    /// confirmed), `quarantined` (excluded after a health eviction) or `dead` (silent for 5
    /// minutes; forgotten after 10).
    pub state: String,
    /// Seconds since the last WireGuard handshake, if there was one.
    pub last_handshake_seconds_ago: Option<u64>,
    /// Bytes received from the peer.
    pub rx_bytes: u64,
    /// Bytes sent to the peer.
    pub tx_bytes: u64,
    /// Networks it advertises that this node does not route, and why.
    pub routes_refused: Vec<RouteRefusal>,
    /// How traffic to it goes: `direct`, `lan` (direct, on a local network) or `relay` (through
    /// the introducer [`Peer::relay_via`]); `null` for peers not on the device.
    pub path: Option<String>,
    /// The public key of the introducer relaying its traffic when `path` is `relay`.
    pub relay_via: Option<String>,
    /// The mesh IPv4 the peer is expected to move to: it shares `mesh_ip` with a node whose key
    /// is lower, so it lost the collision and re-derives (`null` when there is no collision).
    #[serde(default)]
    pub expected_mesh_ip: Option<String>,
    /// Health: `online` (fresh handshake or answered probe), `connecting` (no handshake yet),
    /// `stale` (handshake older than 150 s), `offline` (probes fail, or silent for 5 minutes) or
    /// `quarantined` (evicted for 30 s). `reasons` says why.
    #[serde(default)]
    pub health: String,
    /// Stable codes saying why the peer is in its `health` state: `no_handshake_yet`,
    /// `handshake_stale`, `probe_failed`, `not_seen`, `quarantined` (other layers add theirs).
    #[serde(default)]
    pub reasons: Vec<String>,
    /// Consecutive failed mesh probes (TCP `ping`/`pong` over the mesh).
    #[serde(default)]
    pub probe_failures: u32,
    /// Round-trip time of the last successful mesh probe, in milliseconds.
    #[serde(default)]
    pub latency_ms: Option<f64>,
}

// `latency_ms` is a measured duration, never NaN, so equality is total.
impl Eq for Peer {}

/// An advertised network this node refuses to route through the peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RouteRefusal {
    /// The prefix as the peer advertised it (canonical form).
    pub prefix: String,
    /// Stable code: `too_broad`, `reserved`, `mesh_subnet`, `local_network`, `peer_endpoint`,
    /// `claimed_by_other_peer`.
    pub reason: String,
    /// What exactly it collides with, for humans.
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_round_trips_with_rfc9457_keys() {
        let p = Problem::new(
            "urn:wgmesh:problem:bad-request",
            "Bad request",
            400,
            Some("body is not JSON".into()),
        );
        let text = serde_json::to_string(&p).unwrap();
        assert!(text.contains(r#""type":"urn:wgmesh:problem:bad-request""#));
        assert!(text.contains(r#""schema_version":1"#));
        let back: Problem = serde_json::from_str(&text).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn status_and_peers_round_trip() {
        let status = Status {
            schema_version: SCHEMA_VERSION,
            version: "0.1.0".into(),
            interface: "wg0".into(),
            public_key: "k".into(),
            mesh_ip: "10.1.2.3".into(),
            mesh_ipv6: "fd00::1".into(),
            mesh_subnet: "10.1.0.0/16".into(),
            network_id: "0011223344556677".into(),
            listen_port: 51820,
            wg_backend: "userspace".into(),
            wg_backend_reason: "test".into(),
            uptime_seconds: 5,
            introducer: false,
            advertise_routes: vec!["192.168.10.0/24".into()],
            public_endpoint: Some("203.0.113.7:51820".into()),
            nat_type: Some("cone".into()),
            discovery: BTreeMap::from([(
                "lan".to_owned(),
                LayerStatus {
                    state: "retrying".into(),
                    detail: None,
                    last_error: Some("no multicast-capable interface is up".into()),
                    last_error_seconds_ago: Some(3),
                    last_success_seconds_ago: None,
                },
            )]),
            privacy: Some(PrivacyStatus {
                epoch: 3,
                relays: vec!["k2".into(), "k3".into()],
                seconds_until_rotation: 412,
            }),
            tasks: vec![TaskStatus {
                name: "reconcile".into(),
                state: "running".into(),
                ..TaskStatus::default()
            }],
            peers: PeerCounts {
                total: 2,
                active: 1,
                connected: 1,
                by_via: BTreeMap::from([("lan".to_owned(), 2)]),
                ..PeerCounts::default()
            },
            log_level: "info".into(),
            last_reconcile: Some(ReconcileSummary {
                seconds_ago: 1,
                duration_ms: 3,
                added: 1,
                ..ReconcileSummary::default()
            }),
            health: Health {
                healthy: true,
                reasons: vec![HealthReason {
                    code: "layer_retrying".into(),
                    detail: "lan: no multicast-capable interface is up".into(),
                    critical: false,
                }],
            },
        };
        let back: Status = serde_json::from_str(&serde_json::to_string(&status).unwrap()).unwrap();
        assert_eq!(back, status);
        let list = PeerList {
            schema_version: SCHEMA_VERSION,
            peers: vec![Peer {
                public_key: "k".into(),
                hostname: "h".into(),
                mesh_ip: Some("10.1.2.4".into()),
                mesh_ipv6: None,
                endpoint: Some("192.0.2.1:51820".into()),
                endpoint_method: Some("lan".into()),
                discovered_via: vec!["lan".into()],
                introducer: false,
                nat_type: Some("symmetric".into()),
                routable_networks: vec![],
                last_seen_seconds_ago: 1,
                state: "active".into(),
                last_handshake_seconds_ago: Some(2),
                rx_bytes: 3,
                tx_bytes: 4,
                routes_refused: vec![RouteRefusal {
                    prefix: "0.0.0.0/1".into(),
                    reason: "too_broad".into(),
                    detail: "broader than /8".into(),
                }],
                path: Some("relay".into()),
                relay_via: Some("r".into()),
                expected_mesh_ip: Some("10.1.9.9".into()),
                health: "offline".into(),
                reasons: vec!["probe_failed".into()],
                probe_failures: 2,
                latency_ms: Some(0.25),
            }],
        };
        let back: PeerList = serde_json::from_str(&serde_json::to_string(&list).unwrap()).unwrap();
        assert_eq!(back, list);
    }

    #[test]
    fn problem_without_detail_omits_the_key() {
        let p = Problem::new("urn:wgmesh:problem:x", "X", 500, None);
        let text = serde_json::to_string(&p).unwrap();
        assert!(!text.contains("detail"));
    }
}
