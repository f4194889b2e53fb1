//! What the daemon shows about itself: the API bodies and the periodic summary log, built from
//! the peer store, the last reconcile pass, this node's facts and the task registry; its health;
//! and what changed between two views (peer state transitions, the next time one is due). Pure.

use std::collections::{BTreeMap, HashMap};
use std::time::{Instant, SystemTime};

use wgmesh_api_types as api;

use crate::engine::reconcile::Reconciled;
use crate::engine::relay::Path;
use crate::health::state::{HealthInputs, classify};
use crate::keys::PublicKey;
use crate::node::LocalNode;
use crate::peers::{CACHE_GRACE, DEAD_AFTER, Liveness, Method, Peer, handshake_is_recent};
use crate::privacy::Epoch;
use crate::supervisor::{LayerRecord, LayerState, TaskRecord, TaskState};
use crate::system::net::HostInterfaces;

/// Tasks without which the daemon is not doing its job: keeping the device in sync and answering.
pub const REQUIRED_TASKS: [&str; 2] = ["reconcile", "api"];

/// The mesh interface as the host's interface list shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterfaceState {
    /// Up with carrier.
    Up,
    /// Present but down (or without carrier).
    Down,
    /// Not in the list.
    Missing,
}

impl InterfaceState {
    /// The state of the interface with index `ifindex` in `interfaces`.
    pub fn of(interfaces: &HostInterfaces, ifindex: u32) -> Self {
        match interfaces.iter().find(|i| i.index == ifindex) {
            None => Self::Missing,
            Some(i) if i.up => Self::Up,
            Some(_) => Self::Down,
        }
    }
}

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
    /// The mesh interface.
    pub interface: InterfaceState,
    /// Monotonic now (timers of the store and the registry use it).
    pub now: Instant,
    /// Wall-clock now (handshake times are wall-clock).
    pub wall: SystemTime,
    /// The health task's probe state per peer.
    pub health: &'a crate::health::HealthView,
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

/// The privacy section of `GET /v1/status`: the epoch, its relays in stem order, and the time
/// left until its scheduled rotation at `now`.
pub fn privacy(epoch: &Epoch, now: Instant) -> api::PrivacyStatus {
    api::PrivacyStatus {
        epoch: epoch.id,
        relays: epoch.relays.iter().map(|r| r.key.to_string()).collect(),
        seconds_until_rotation: epoch.remaining(now).as_secs(),
    }
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
        public_endpoint: inputs.local.public_endpoint.map(|e| e.to_string()),
        nat_type: inputs.local.nat_type.map(|n| n.as_str().to_owned()),
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
        last_reconcile: inputs.reconciled.last_pass.map(|p| api::ReconcileSummary {
            seconds_ago: seconds_ago(Some(p.ended), inputs.now).unwrap_or(0),
            duration_ms: u64::try_from(p.duration.as_millis()).unwrap_or(u64::MAX),
            added: p.counts.added,
            updated: p.counts.updated,
            removed: p.counts.removed,
            failed: p.counts.failed,
        }),
        health: health(inputs.tasks, inputs.layers, inputs.interface),
        ..facts.base.clone()
    }
}

fn reason(code: &str, detail: String, critical: bool) -> api::HealthReason {
    api::HealthReason {
        code: code.to_owned(),
        detail,
        critical,
    }
}

/// Overall health: critical when the mesh interface is down or missing, a required task
/// ([`REQUIRED_TASKS`]) is not running, or any task failed; warnings for a task restarting and a
/// discovery layer retrying. Reasons come interface first, then tasks, then layers, by name.
pub fn health(
    tasks: &[TaskRecord],
    layers: &BTreeMap<&'static str, LayerRecord>,
    interface: InterfaceState,
) -> api::Health {
    let mut reasons = Vec::new();
    match interface {
        InterfaceState::Up => {}
        InterfaceState::Down => reasons.push(reason(
            "interface_down",
            "the mesh interface is down".to_owned(),
            true,
        )),
        InterfaceState::Missing => reasons.push(reason(
            "interface_missing",
            "the mesh interface does not exist".to_owned(),
            true,
        )),
    }
    let mut tasks: Vec<&TaskRecord> = tasks.iter().collect();
    tasks.sort_by_key(|t| t.name);
    for required in REQUIRED_TASKS {
        let state = tasks.iter().find(|t| t.name == required).map(|t| t.state);
        if !matches!(state, Some(TaskState::Running | TaskState::Failed)) {
            let what = state.map_or("was never started", |s| s.as_str());
            reasons.push(reason(
                "task_not_running",
                format!("{required}: {what}"),
                true,
            ));
        }
    }
    for t in tasks {
        let error = t.last_error.as_deref().unwrap_or("no error recorded");
        match t.state {
            TaskState::Failed => {
                reasons.push(reason("task_failed", format!("{}: {error}", t.name), true))
            }
            TaskState::Restarting => reasons.push(reason(
                "task_restarting",
                format!("{} (restarted {} times): {error}", t.name, t.restarts),
                false,
            )),
            TaskState::Running | TaskState::Stopped => {}
        }
    }
    for (name, l) in layers {
        if l.state == LayerState::Retrying {
            let error = l.last_error.as_deref().unwrap_or("no error recorded");
            reasons.push(reason("layer_retrying", format!("{name}: {error}"), false));
        }
    }
    api::Health {
        healthy: !reasons.iter().any(|r| r.critical),
        reasons,
    }
}

/// Every peer's state (`active`, `quarantined`, `dead`, …) at `now`, by key.
pub fn peer_states(peers: &[Peer], now: Instant) -> HashMap<PublicKey, &'static str> {
    peers
        .iter()
        .map(|p| (p.public_key, p.liveness(now).as_str()))
        .collect()
}

/// The peers present in both views whose state differs: (key, before, after), sorted by key.
/// Peers that appear or disappear are peer added and removed events, not state changes.
pub fn state_changes(
    before: &HashMap<PublicKey, &'static str>,
    after: &HashMap<PublicKey, &'static str>,
) -> Vec<(PublicKey, &'static str, &'static str)> {
    let mut changes: Vec<_> = after
        .iter()
        .filter_map(|(key, now)| {
            let was = before.get(key)?;
            (was != now).then_some((*key, *was, *now))
        })
        .collect();
    changes.sort_by_key(|(key, _, _)| *key);
    changes
}

/// The earliest instant after `now` at which a peer's state can change without anything
/// happening (an active peer going dead, a quarantine ending, a cached peer's grace ending), if
/// any.
pub fn next_transition(peers: &[Peer], now: Instant) -> Option<Instant> {
    peers
        .iter()
        .flat_map(|p| {
            [
                p.last_seen.checked_add(DEAD_AFTER),
                p.quarantined_until,
                p.restored_at.and_then(|at| at.checked_add(CACHE_GRACE)),
            ]
        })
        .flatten()
        .filter(|t| *t > now)
        .min()
}

/// The health reasons, then, for a relayed peer, why it is relayed (`no_direct_handshake`,
/// `symmetric_nat_both`, `forced_relay`, `handshake_stale`, `direct_pending`, …) unless already
/// listed.
fn with_relay_reason(
    health: &[&'static str],
    relays: &crate::engine::relay::RelayPlan,
    peer: &Peer,
) -> Vec<String> {
    let mut out: Vec<String> = health.iter().map(|r| (*r).to_owned()).collect();
    if relays.table.contains_key(&peer.public_key)
        && let Some(reason) = relays.reasons.get(&peer.public_key)
        && !out.iter().any(|r| r == reason.code())
    {
        out.push(reason.code().to_owned());
    }
    out
}

/// `GET /v1/peers` body, sorted by mesh IP (peers without one last).
pub fn peer_list(inputs: &Inputs<'_>) -> api::PeerList {
    let mut sorted: Vec<&Peer> = inputs.peers.iter().collect();
    sorted.sort_by_key(|p| (p.mesh_ip.is_none(), p.mesh_ip, p.public_key));
    let peers = sorted
        .into_iter()
        .map(|p| {
            let lp = inputs.reconciled.live.peers.get(&p.public_key);
            let path = Path::of(&inputs.reconciled.relays, p);
            let probe = inputs
                .health
                .get(&p.public_key)
                .copied()
                .unwrap_or_default();
            let (health, reasons) = classify(&HealthInputs {
                liveness: p.liveness(inputs.now),
                handshake_age: lp
                    .and_then(|l| l.last_handshake)
                    .map(|t| inputs.wall.duration_since(t).unwrap_or_default()),
                probe_failures: probe.failures,
                probe_ok: probe.last_ok,
            });
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
                nat_type: p.nat_type.clone(),
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
                path: path.map(|p| p.as_str().to_owned()),
                relay_via: match path {
                    Some(Path::Relay(via)) => Some(via.to_string()),
                    _ => None,
                },
                expected_mesh_ip: None,
                health: health.as_str().to_owned(),
                reasons: with_relay_reason(&reasons, &inputs.reconciled.relays, p),
                probe_failures: probe.failures,
                latency_ms: p.latency.map(|d| d.as_secs_f64() * 1000.0),
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::engine::reconcile::PassSummary;
    use crate::metrics::PassCounts;
    use crate::system::net::HostInterface;

    fn peer(n: u8, last_seen: Instant) -> Peer {
        Peer {
            public_key: PublicKey([n; 32]),
            hostname: format!("h{n}"),
            mesh_ip: Some(std::net::Ipv4Addr::new(10, 1, 0, n)),
            mesh_ipv6: None,
            endpoint: Some(format!("192.0.2.{n}:51820").parse().unwrap()),
            endpoint_method: Some(Method::Lan),
            introducer: false,
            routable_networks: Vec::new(),
            nat_type: None,
            last_seen,
            discovered_via: vec![Method::Lan],
            latency: None,
            quarantined_until: None,
            restored_at: None,
        }
    }

    fn task(name: &'static str, state: TaskState) -> TaskRecord {
        TaskRecord {
            name,
            state,
            restarts: u32::from(state == TaskState::Restarting),
            last_error: (state != TaskState::Running).then(|| "boom".to_owned()),
            last_error_at: None,
        }
    }

    fn layer(state: LayerState) -> LayerRecord {
        LayerRecord {
            state,
            detail: None,
            last_error: (state == LayerState::Retrying).then(|| "no interface".to_owned()),
            last_error_at: None,
            last_success_at: None,
        }
    }

    #[test]
    fn health_table() {
        use InterfaceState::*;
        use LayerState::{Off, Retrying};
        use TaskState::{Failed, Restarting, Running, Stopped};
        const OK: &[(&str, TaskState)] = &[("api", Running), ("reconcile", Running)];
        // (interface, tasks, lan layer, healthy, reasons as "code:critical")
        type Row = (
            InterfaceState,
            &'static [(&'static str, TaskState)],
            Option<LayerState>,
            bool,
            &'static [&'static str],
        );
        let table: &[Row] = &[
            (Up, OK, None, true, &[]),
            (Up, OK, Some(LayerState::Running), true, &[]),
            (Up, OK, Some(Off), true, &[]),
            (Down, OK, None, false, &["interface_down:true"]),
            (Missing, OK, None, false, &["interface_missing:true"]),
            (
                Up,
                &[("api", Running)],
                None,
                false,
                &["task_not_running:true"],
            ),
            (
                Up,
                &[("api", Running), ("reconcile", Stopped)],
                None,
                false,
                &["task_not_running:true"],
            ),
            (
                Up,
                &[("api", Running), ("reconcile", Failed)],
                None,
                false,
                &["task_failed:true"],
            ),
            (
                Up,
                &[("api", Running), ("reconcile", Running), ("status", Failed)],
                None,
                false,
                &["task_failed:true"],
            ),
            (
                Up,
                &[
                    ("api", Running),
                    ("lan-discovery", Restarting),
                    ("reconcile", Running),
                ],
                Some(Retrying),
                true,
                &["task_restarting:false", "layer_retrying:false"],
            ),
            (
                Down,
                &[("api", Running), ("lan-discovery", Restarting)],
                Some(Retrying),
                false,
                &[
                    "interface_down:true",
                    "task_not_running:true",
                    "task_restarting:false",
                    "layer_retrying:false",
                ],
            ),
        ];
        for (iface, tasks, lan, healthy, want) in table {
            let tasks: Vec<TaskRecord> = tasks.iter().map(|(n, s)| task(n, *s)).collect();
            let layers: BTreeMap<&'static str, LayerRecord> =
                lan.iter().map(|s| ("lan", layer(*s))).collect();
            let h = health(&tasks, &layers, *iface);
            let got: Vec<String> = h
                .reasons
                .iter()
                .map(|r| format!("{}:{}", r.code, r.critical))
                .collect();
            assert_eq!(
                (h.healthy, got.as_slice()),
                (
                    *healthy,
                    &want.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()[..]
                ),
                "{iface:?} {tasks:?} {lan:?}"
            );
        }
    }

    #[test]
    fn health_details_name_the_task_layer_and_error() {
        let tasks = [
            task("api", TaskState::Running),
            task("lan-discovery", TaskState::Restarting),
        ];
        let layers = BTreeMap::from([("lan", layer(LayerState::Retrying))]);
        let h = health(&tasks, &layers, InterfaceState::Up);
        let details: Vec<&str> = h.reasons.iter().map(|r| r.detail.as_str()).collect();
        assert_eq!(
            details,
            [
                "reconcile: was never started",
                "lan-discovery (restarted 1 times): boom",
                "lan: no interface",
            ]
        );
    }

    #[test]
    fn interface_state_follows_the_list_by_index() {
        let iface = |index, up| HostInterface {
            index,
            name: "wg0".into(),
            up,
            multicast: false,
            loopback: false,
            addresses: Vec::new(),
        };
        for (list, want) in [
            (vec![iface(7, true)], InterfaceState::Up),
            (vec![iface(7, false)], InterfaceState::Down),
            (vec![iface(8, true)], InterfaceState::Missing),
            (vec![], InterfaceState::Missing),
        ] {
            assert_eq!(InterfaceState::of(&list, 7), want);
        }
    }

    #[test]
    fn state_changes_table() {
        let k = |n| PublicKey([n; 32]);
        let map = |entries: &[(u8, &'static str)]| -> HashMap<PublicKey, &'static str> {
            entries.iter().map(|(n, s)| (k(*n), *s)).collect()
        };
        // (before, after, changes)
        type Row = (
            &'static [(u8, &'static str)],
            &'static [(u8, &'static str)],
            &'static [(u8, &'static str, &'static str)],
        );
        let table: &[Row] = &[
            (&[], &[], &[]),
            (&[(1, "active")], &[(1, "active")], &[]),
            (&[(1, "active")], &[(1, "dead")], &[(1, "active", "dead")]),
            // Appearing and vanishing are not state changes.
            (&[(1, "active")], &[(2, "active")], &[]),
            (
                &[(2, "quarantined"), (1, "cached")],
                &[(1, "active"), (2, "active"), (3, "dead")],
                &[(1, "cached", "active"), (2, "quarantined", "active")],
            ),
        ];
        for (before, after, want) in table {
            let want: Vec<_> = want.iter().map(|(n, a, b)| (k(*n), *a, *b)).collect();
            assert_eq!(state_changes(&map(before), &map(after)), want);
        }
    }

    #[test]
    fn next_transition_is_the_earliest_future_change() {
        let now = Instant::now();
        let secs = Duration::from_secs;
        let mut quarantined = peer(3, now);
        quarantined.quarantined_until = Some(now + secs(30));
        let mut old_quarantine = peer(4, now - secs(100));
        old_quarantine.quarantined_until = Some(now - secs(1));
        // Restored from the cache a minute ago, last seen an hour before that.
        let mut cached = peer(6, now - secs(3600));
        cached.restored_at = Some(now - secs(60));
        // (peers, next)
        let table: Vec<(Vec<Peer>, Option<Instant>)> = vec![
            (vec![], None),
            (vec![peer(1, now)], Some(now + DEAD_AFTER)),
            (
                vec![peer(1, now), peer(2, now - secs(60))],
                Some(now - secs(60) + DEAD_AFTER),
            ),
            (vec![peer(1, now), quarantined], Some(now + secs(30))),
            // Already dead, quarantine over: nothing more happens by itself.
            (vec![peer(5, now - DEAD_AFTER - secs(1))], None),
            (vec![old_quarantine], Some(now - secs(100) + DEAD_AFTER)),
            (vec![cached], Some(now - secs(60) + CACHE_GRACE)),
        ];
        for (peers, want) in table {
            assert_eq!(next_transition(&peers, now), want, "{peers:?}");
        }
    }

    #[test]
    fn status_reports_the_last_pass_health_and_counts() {
        let now = Instant::now();
        let tokio_now = tokio::time::Instant::from_std(now);
        let peers = [
            peer(1, now),
            peer(2, now - DEAD_AFTER - Duration::from_secs(1)),
        ];
        let reconciled = Reconciled {
            last_pass: Some(PassSummary {
                ended: tokio_now - Duration::from_secs(3),
                duration: Duration::from_millis(12),
                counts: PassCounts {
                    added: 2,
                    failed: 1,
                    ..PassCounts::default()
                },
                changed: true,
            }),
            ..Reconciled::default()
        };
        let tasks = [
            task("api", TaskState::Running),
            task("reconcile", TaskState::Running),
        ];
        let local = crate::node::tests::local();
        let health = crate::health::HealthView::new();
        let inputs = Inputs {
            peers: &peers,
            reconciled: &reconciled,
            local: &local,
            tasks: &tasks,
            layers: &BTreeMap::new(),
            interface: InterfaceState::Down,
            now,
            wall: SystemTime::now(),
            health: &health,
        };
        let facts = NodeFacts {
            base: api::Status::default(),
            started: now,
        };
        let st = status(&facts, &inputs);
        assert_eq!(
            st.last_reconcile,
            Some(api::ReconcileSummary {
                seconds_ago: 3,
                duration_ms: 12,
                added: 2,
                updated: 0,
                removed: 0,
                failed: 1,
            })
        );
        assert!(!st.health.healthy);
        assert_eq!(st.health.reasons[0].code, "interface_down");
        assert_eq!(
            (
                st.peers.total,
                st.peers.active,
                st.peers.dead,
                st.peers.cached
            ),
            (2, 1, 1, 0)
        );
        let list = peer_list(&inputs);
        let states: Vec<&str> = list.peers.iter().map(|p| p.state.as_str()).collect();
        assert_eq!(states, ["active", "dead"]);
    }

    #[test]
    fn status_and_peers_show_the_public_endpoint_and_nat_types() {
        let now = Instant::now();
        let mut natted = peer(1, now);
        natted.nat_type = Some("symmetric".into());
        let peers = [natted, peer(2, now)];
        let reconciled = Reconciled::default();
        let local = crate::node::tests::local();
        let facts = NodeFacts {
            base: api::Status::default(),
            started: now,
        };
        let layers = BTreeMap::new();
        let health = crate::health::HealthView::new();
        let inputs = |local| Inputs {
            peers: &peers,
            reconciled: &reconciled,
            local,
            tasks: &[],
            layers: &layers,
            interface: InterfaceState::Up,
            now,
            wall: SystemTime::now(),
            health: &health,
        };
        let st = status(&facts, &inputs(&local));
        assert_eq!((st.public_endpoint, st.nat_type), (None, None));
        let mut local = local.clone();
        local.public_endpoint = Some("203.0.113.7:51820".parse().unwrap());
        local.nat_type = Some(crate::node::NatType::Cone);
        let st = status(&facts, &inputs(&local));
        assert_eq!(st.public_endpoint.as_deref(), Some("203.0.113.7:51820"));
        assert_eq!(st.nat_type.as_deref(), Some("cone"));
        let list = peer_list(&inputs(&local));
        let nats: Vec<Option<&str>> = list.peers.iter().map(|p| p.nat_type.as_deref()).collect();
        assert_eq!(nats, [Some("symmetric"), None]);
    }

    #[test]
    fn peers_show_their_path_and_relay() {
        use crate::engine::relay::{Reason, RelayPlan, Relayed};
        let now = Instant::now();
        let (relay, far, near) = (peer(1, now), peer(2, now), peer(3, now));
        let relays = RelayPlan {
            table: BTreeMap::from([(
                far.public_key,
                Relayed {
                    via: relay.public_key,
                    direct_since: None,
                    since: Instant::now(),
                },
            )]),
            reasons: BTreeMap::from([
                (relay.public_key, Reason::PeerIntroducer),
                (far.public_key, Reason::NoDirectHandshake),
            ]),
        };
        let reconciled = Reconciled {
            relays,
            ..Reconciled::default()
        };
        let peers = [relay.clone(), far, near];
        let local = crate::node::tests::local();
        let layers = BTreeMap::new();
        let health = crate::health::HealthView::new();
        let inputs = Inputs {
            peers: &peers,
            reconciled: &reconciled,
            local: &local,
            tasks: &[],
            layers: &layers,
            interface: InterfaceState::Up,
            now,
            wall: SystemTime::now(),
            health: &health,
        };
        let list = peer_list(&inputs);
        let got: Vec<(Option<&str>, Option<&str>)> = list
            .peers
            .iter()
            .map(|p| (p.path.as_deref(), p.relay_via.as_deref()))
            .collect();
        let via = relay.public_key.to_string();
        assert_eq!(
            got,
            [
                (Some("lan"), None),
                (Some("relay"), Some(via.as_str())),
                (None, None)
            ]
        );
        // The relayed peer says why in its reasons, after the health ones; the others do not.
        assert_eq!(
            list.peers[1].reasons.last().map(String::as_str),
            Some("no_direct_handshake")
        );
        assert_eq!(
            list.peers[1]
                .reasons
                .iter()
                .filter(|r| *r == "no_direct_handshake")
                .count(),
            1,
            "{:?}",
            list.peers[1].reasons
        );
        assert!(!list.peers[0].reasons.iter().any(|r| r == "peer_introducer"));
    }
}
