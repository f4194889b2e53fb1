//! What the tests serve: status and peer snapshots as the daemon publishes them, and events.
//! Ages are the API's `*_seconds_ago` fields and event times are fixed, so no output depends on
//! the clock.

use std::collections::BTreeMap;

use wgmesh_api_types::{
    Event, EventKind, Health, HealthReason, LayerStatus, Peer, PeerCounts, PeerList, PrivacyStatus,
    ReconcileSummary, RouteRefusal, SCHEMA_VERSION, Status, TaskStatus,
};

/// This node's key.
pub const NODE_KEY: &str = "VF6lOEYQA+/cjIHCRFMbAD9vJs/M9sAHOzI5/e30lEY=";
/// Peer keys (base64 of 32 bytes; `ALPHA` has both `/` and `+`, which a URL must encode).
pub const ALPHA: &str = "jtP2rWhblZ6tcCJRjhr3bNgW+OjsfM3aHtQBjo8iI/g=";
pub const BETA: &str = "9E5k5185SOn3P436lHIcTOjLtPJlxHkMcCstQc+/J1M=";
pub const GAMMA: &str = "vp1Yfe+h8MCe9J6xfiBpg6X4+CieQoGGC9DuWhlZLGc=";

/// A node's status with nothing special going on (no discovery layers, no troubled task).
pub fn plain_status() -> Status {
    Status {
        schema_version: SCHEMA_VERSION,
        version: "0.1.0".into(),
        interface: "wg0".into(),
        public_key: NODE_KEY.into(),
        mesh_ip: "10.78.12.34".into(),
        mesh_ipv6: "fd9d:af5d:d5d0:b3c7::1".into(),
        mesh_subnet: "10.78.0.0/16".into(),
        network_id: "b6ed1c46b1404bc0".into(),
        listen_port: 51820,
        wg_backend: "userspace".into(),
        wg_backend_reason: "no kernel module".into(),
        uptime_seconds: 3725,
        introducer: false,
        advertise_routes: vec![],
        public_endpoint: None,
        nat_type: None,
        discovery: BTreeMap::new(),
        privacy: None,
        tasks: vec![],
        peers: PeerCounts {
            total: 3,
            active: 2,
            connected: 1,
            ..PeerCounts::default()
        },
        log_level: "info".into(),
        last_reconcile: None,
        health: Health::default(),
    }
}

/// A status where every field has a value and every rendering branch is taken: each kind of
/// discovery layer, a troubled and a healthy task, cached and quarantined peers, a reconcile, a
/// health warning. The literal names every field (no `..Default::default()`), so a new field
/// does not compile until it is given a value here and classified in `STATUS_FIELDS`.
pub fn full_status() -> Status {
    let layer = |state: &str, detail: Option<&str>, error: Option<&str>| LayerStatus {
        state: state.into(),
        detail: detail.map(Into::into),
        last_error: error.map(Into::into),
        last_error_seconds_ago: error.map(|_| 42),
        last_success_seconds_ago: Some(3),
    };
    Status {
        schema_version: SCHEMA_VERSION,
        version: "0.9.9-test".into(),
        interface: "wgmesh7".into(),
        public_key: NODE_KEY.into(),
        mesh_ip: "10.250.0.9".into(),
        mesh_ipv6: "fd9d:af5d:d5d0:b3c7::9".into(),
        mesh_subnet: "10.250.0.0/20".into(),
        network_id: "b6ed1c46b1404bc0".into(),
        listen_port: 51821,
        wg_backend: "userspace".into(),
        wg_backend_reason: "requested".into(),
        uptime_seconds: 200_000,
        introducer: true,
        advertise_routes: vec!["192.168.10.0/24".into(), "fd10::/64".into()],
        public_endpoint: Some("203.0.113.9:51821".into()),
        nat_type: Some("cone".into()),
        discovery: BTreeMap::from([
            (
                "lan".to_owned(),
                layer("running", Some("eth0, eth1"), Some("eth1 went down")),
            ),
            (
                "dht".to_owned(),
                layer("retrying", None, Some("no bootstrap node answered")),
            ),
            ("gossip".to_owned(), layer("off", None, None)),
        ]),
        privacy: Some(PrivacyStatus {
            epoch: 3,
            relays: vec![BETA.into(), GAMMA.into()],
            seconds_until_rotation: 412,
        }),
        tasks: vec![
            TaskStatus {
                name: "reconcile".into(),
                state: "running".into(),
                restarts: 0,
                last_error: None,
                last_error_seconds_ago: None,
            },
            TaskStatus {
                name: "dht-discovery".into(),
                state: "restarting".into(),
                restarts: 4,
                last_error: Some("socket closed".into()),
                last_error_seconds_ago: Some(7),
            },
        ],
        peers: PeerCounts {
            total: 9,
            active: 7,
            cached: 1,
            connected: 5,
            quarantined: 1,
            dead: 0,
            by_via: BTreeMap::from([("lan".to_owned(), 7), ("cache".to_owned(), 2)]),
        },
        log_level: "debug".into(),
        last_reconcile: Some(ReconcileSummary {
            seconds_ago: 2,
            duration_ms: 4,
            added: 1,
            updated: 2,
            removed: 0,
            failed: 0,
        }),
        health: Health {
            healthy: true,
            reasons: vec![HealthReason {
                code: "layer_retrying".into(),
                detail: "dht: no bootstrap node answered".into(),
                critical: false,
            }],
        },
    }
}

/// An unhealthy node: the interface is down, a task failed, a layer retries.
pub fn unhealthy() -> Health {
    let reason = |code: &str, detail: &str, critical| HealthReason {
        code: code.into(),
        detail: detail.into(),
        critical,
    };
    Health {
        healthy: false,
        reasons: vec![
            reason("interface_down", "wg0 is down", true),
            reason(
                "task_failed",
                "reconcile: netlink: operation not permitted",
                true,
            ),
            reason(
                "layer_retrying",
                "lan: no multicast-capable interface is up",
                false,
            ),
        ],
    }
}

fn peer(public_key: &str, hostname: &str, mesh_ip: &str) -> Peer {
    Peer {
        public_key: public_key.into(),
        hostname: hostname.into(),
        mesh_ip: Some(mesh_ip.into()),
        ..Peer::default()
    }
}

/// Three peers: alive over the LAN, dead and never handshaked, restored from the cache.
pub fn plain_peers() -> PeerList {
    PeerList {
        schema_version: SCHEMA_VERSION,
        peers: vec![
            Peer {
                endpoint: Some("192.0.2.1:51820".into()),
                endpoint_method: Some("lan".into()),
                discovered_via: vec!["lan".into()],
                last_seen_seconds_ago: 4,
                state: "active".into(),
                last_handshake_seconds_ago: Some(75),
                rx_bytes: 1,
                tx_bytes: 2,
                ..peer(ALPHA, "alpha", "10.78.1.1")
            },
            Peer {
                discovered_via: vec!["dht".into()],
                introducer: true,
                last_seen_seconds_ago: 7200,
                state: "dead".into(),
                ..peer(BETA, "", "10.78.200.7")
            },
            Peer {
                endpoint: Some("198.51.100.20:51820".into()),
                endpoint_method: Some("cache".into()),
                discovered_via: vec!["cache".into()],
                last_seen_seconds_ago: 86_400 * 3 + 60,
                state: "cached".into(),
                ..peer(GAMMA, "gamma", "10.78.201.3")
            },
        ],
    }
}

/// Peers where every field has a value, and both a named and an unnamed peer advertise routes
/// this node refuses. Every field is named, for the same reason as in [`full_status`].
pub fn full_peers() -> PeerList {
    let refusal = |prefix: &str, reason: &str, detail: &str| RouteRefusal {
        prefix: prefix.into(),
        reason: reason.into(),
        detail: detail.into(),
    };
    PeerList {
        schema_version: SCHEMA_VERSION,
        peers: vec![
            Peer {
                public_key: ALPHA.into(),
                hostname: "alpha".into(),
                mesh_ip: Some("10.78.1.1".into()),
                mesh_ipv6: Some("fd9d:af5d:d5d0:b3c7::11".into()),
                endpoint: Some("192.0.2.1:51820".into()),
                endpoint_method: Some("lan".into()),
                discovered_via: vec!["lan".into(), "dht".into()],
                introducer: true,
                nat_type: Some("symmetric".into()),
                routable_networks: vec!["192.168.20.0/24".into()],
                last_seen_seconds_ago: 4,
                state: "active".into(),
                last_handshake_seconds_ago: Some(75),
                rx_bytes: 1234,
                tx_bytes: 5_678_901,
                routes_refused: vec![refusal(
                    "10.78.0.0/16",
                    "mesh_subnet",
                    "overlaps the mesh subnet 10.78.0.0/16",
                )],
                path: Some("relay".into()),
                relay_via: Some(BETA.into()),
                expected_mesh_ip: Some("10.78.1.9".into()),
                health: "online".into(),
                reasons: vec!["probe_failed".into()],
                probe_failures: 1,
                latency_ms: Some(0.734),
            },
            Peer {
                public_key: BETA.into(),
                hostname: "".into(),
                mesh_ip: Some("10.78.200.7".into()),
                mesh_ipv6: Some("fd9d:af5d:d5d0:b3c7::27".into()),
                endpoint: Some("198.51.100.7:51820".into()),
                endpoint_method: Some("dht".into()),
                discovered_via: vec!["dht".into()],
                introducer: false,
                nat_type: None,
                routable_networks: vec!["192.168.30.0/24".into()],
                last_seen_seconds_ago: 7200,
                state: "quarantined".into(),
                last_handshake_seconds_ago: Some(7000),
                rx_bytes: 9,
                tx_bytes: 10,
                routes_refused: vec![
                    refusal("0.0.0.0/1", "too_broad", "broader than /8"),
                    refusal(
                        "192.168.20.0/24",
                        "claimed_by_other_peer",
                        "alpha routes it already",
                    ),
                ],
                path: Some("direct".into()),
                relay_via: None,
                expected_mesh_ip: None,
                health: "quarantined".into(),
                reasons: vec!["quarantined".into()],
                probe_failures: 0,
                latency_ms: None,
            },
        ],
    }
}

/// An event at a fixed time (2025-11-22T02:53:20Z plus `seq` seconds).
pub fn event(seq: u64, kind: EventKind) -> Event {
    Event {
        schema_version: SCHEMA_VERSION,
        seq,
        unix_ms: 1_763_780_000_000 + seq * 1000,
        kind,
    }
}
