//! End to end: LAN discovery on hosts whose only routes are the /24s of their legs (no default
//! route, no multicast route), as on a small isolated LAN: the group is joined on each interface
//! by index, follows a leg that comes up late, and works on every leg of a multi-homed host. The
//! `lan` layer of `GET /v1/status` says what it is doing.
//!
//! Needs root; without it the tests are skipped, except under `CI=true` where they fail.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use wgmesh_api_types::{LayerStatus, Peer, Status};
use wgmesh_tests::daemon::{self, Daemon};
use wgmesh_tests::lab::{self, Host, Lab};
use wgmesh_tests::labnode_exe;

/// How long a daemon may take to serve its API after start.
const API_UP: Duration = Duration::from_secs(20);
/// How long the hosts may take to handshake (the tests promise 30 s).
const MESH_UP: Duration = Duration::from_secs(30);
/// How long the `lan` layer may take to reach a state.
const LAN_STATE: Duration = Duration::from_secs(20);

// Failures panic (`unwrap`) rather than return `Err`: the lab prints every daemon's log when it is
// dropped during a panic. Every API call must succeed: a daemon that crashed or does not answer
// fails the test (naming its host) instead of reading as "no peers yet".

// ------------------------------------------------------------------------------------------
// daemon helpers

/// Writes a fresh secret, starts a daemon with it on each of `hosts` and waits for their APIs;
/// returns the daemons and their first statuses, in the order of `hosts`.
fn start_daemons(lab: &Lab, hosts: &[&Host]) -> (Vec<Daemon>, Vec<Status>) {
    let exe = labnode_exe!();
    let secret = lab.dir().join("mesh.secret");
    daemon::write_secret(&exe, &secret).unwrap();
    let daemons: Vec<Daemon> = hosts
        .iter()
        .map(|h| Daemon::start(&exe, h, &secret, &[]).unwrap())
        .collect();
    let statuses = daemons
        .iter()
        .map(|d| d.wait_api(API_UP).unwrap())
        .collect();
    (daemons, statuses)
}

/// The entry for `key` in `host`'s peer list; panics when the daemon does not list it.
fn listed_peer(host: &Host, key: &str) -> Peer {
    daemon::peer(host, key)
        .unwrap()
        .unwrap_or_else(|| panic!("{} does not list the peer {key}", host.name()))
}

// ------------------------------------------------------------------------------------------
// LAN helpers

/// `discovery.lan` of a status; panics when it has none.
fn lan_layer(status: &Status) -> &LayerStatus {
    status
        .discovery
        .get("lan")
        .unwrap_or_else(|| panic!("no discovery.lan in {status:#?}"))
}

/// Waits until `host`'s `lan` layer is in `state` with `detail`; returns the layer.
fn wait_lan_state(host: &Host, state: &str, detail: Option<&str>) -> LayerStatus {
    let status = daemon::wait_status(
        host,
        LAN_STATE,
        &format!("discovery.lan becomes {state} {detail:?}"),
        |st| {
            st.discovery.get("lan").is_some_and(|l| {
                l.state == state && detail.is_none_or(|d| l.detail.as_deref() == Some(d))
            })
        },
    )
    .unwrap();
    lan_layer(&status).clone()
}

/// Asserts that `host`'s only IPv4 routes are the /24s of its legs and that the kernel has no
/// route to a LAN discovery group: the condition under which joining through the routing table
/// (`INADDR_ANY`) fails with ENODEV.
fn assert_subnet_routes_only(host: &Host) {
    let routes = host.exec_ok("ip", &["-4", "route", "show"]).unwrap();
    let lines: Vec<&str> = routes.lines().collect();
    assert_eq!(
        lines.len(),
        host.interfaces().len(),
        "{}: expected only the legs' /24 routes, got:\n{routes}",
        host.name()
    );
    for (line, leg) in lines.iter().zip(host.interfaces()) {
        assert!(
            line.starts_with(&leg.subnet.to_string()),
            "{}: unexpected route {line:?}",
            host.name()
        );
    }
    let get = host
        .run("ip", &["-4", "route", "get", "239.192.1.2"])
        .unwrap();
    assert!(
        !get.status.success(),
        "{}: the group is routable: {}",
        host.name(),
        String::from_utf8_lossy(&get.stdout)
    );
}

fn ping_over_mesh(from: &Host, to_mesh_ip: &str) {
    assert!(
        from.wait_reachable(to_mesh_ip.parse().unwrap(), Duration::from_secs(10))
            .unwrap(),
        "{} cannot ping {to_mesh_ip} over the mesh",
        from.name()
    );
}

// ------------------------------------------------------------------------------------------
// tests

#[test]
fn two_hosts_without_any_route_besides_their_lan_form_a_mesh() {
    if !lab::require_root() {
        return;
    }
    let lab = Lab::builder("lan_noroute")
        .lan(&["a", "b"])
        .subnet_routes_only()
        .build()
        .unwrap();
    let (a, b) = (lab.host("a"), lab.host("b"));
    assert_subnet_routes_only(a);
    assert_subnet_routes_only(b);
    let started = Instant::now();
    let (_daemons, st) = start_daemons(&lab, &[a, b]);
    daemon::wait_full_mesh(&[a, b], MESH_UP)
        .context("a and b did not handshake both ways within 30 s")
        .unwrap();
    eprintln!(
        "no routes: a and b handshaked both ways {:.2} s after start",
        started.elapsed().as_secs_f64()
    );
    ping_over_mesh(a, &st[1].mesh_ip);
    ping_over_mesh(b, &st[0].mesh_ip);
    for (h, other_key, other_ip) in [
        (a, &st[1].public_key, b.ip()),
        (b, &st[0].public_key, a.ip()),
    ] {
        let p = listed_peer(h, other_key);
        assert_eq!(p.endpoint_method.as_deref(), Some("lan"), "{p:?}");
        let endpoint = p
            .endpoint
            .as_deref()
            .unwrap_or_else(|| panic!("{}: no endpoint: {p:?}", h.name()));
        assert!(
            endpoint.starts_with(&format!("{other_ip}:")),
            "{}: endpoint {endpoint} is not the LAN source address {other_ip}",
            h.name()
        );
        let layer = wait_lan_state(h, "running", Some("eth0"));
        assert!(layer.last_success_seconds_ago.is_some(), "{layer:?}");
    }
}

#[test]
fn a_host_whose_leg_is_down_at_start_reports_retrying_then_joins() {
    if !lab::require_root() {
        return;
    }
    let lab = Lab::builder("lan_late")
        .lan(&["a", "b"])
        .subnet_routes_only()
        .build()
        .unwrap();
    let (a, b) = (lab.host("a"), lab.host("b"));
    a.cut_link().unwrap();
    let (daemons, st) = start_daemons(&lab, &[a, b]);
    let daemon_a = &daemons[0];

    let layer = wait_lan_state(a, "retrying", None);
    let error = layer.last_error.as_deref().unwrap_or_default();
    assert!(
        error.contains("no up, multicast-capable IPv4 interface besides wg0")
            && error.contains("eth0 is down"),
        "last_error: {layer:?}"
    );
    assert!(layer.last_error_seconds_ago.is_some(), "{layer:?}");
    // The task is alive and says so; it is not restarting.
    let status_a = daemon_a.status().unwrap();
    let task = status_a
        .tasks
        .iter()
        .find(|t| t.name == "lan-discovery")
        .unwrap_or_else(|| panic!("no lan-discovery task: {:?}", status_a.tasks));
    assert_eq!(task.state, "running", "{task:?}");
    assert_eq!(task.restarts, 0, "{task:?}");
    // A few announce rounds with the leg down: still retrying, no peers.
    std::thread::sleep(Duration::from_secs(6));
    let status_a = daemon_a.status().unwrap();
    assert_eq!(
        lan_layer(&status_a).state,
        "retrying",
        "{:?}",
        lan_layer(&status_a)
    );
    let peers_a = daemon_a.peers().unwrap().peers;
    assert!(peers_a.is_empty(), "{peers_a:?}");

    let healed = Instant::now();
    a.heal_link().unwrap();
    daemon::wait_full_mesh(&[a, b], MESH_UP)
        .context("a did not mesh within 30 s after its leg came up")
        .unwrap();
    eprintln!(
        "late leg: a and b handshaked both ways {:.2} s after a's leg came up",
        healed.elapsed().as_secs_f64()
    );
    let layer = wait_lan_state(a, "running", Some("eth0"));
    assert!(
        layer
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("eth0 is down")),
        "the last error stays visible after recovery: {layer:?}"
    );
    ping_over_mesh(a, &st[1].mesh_ip);
    ping_over_mesh(b, &st[0].mesh_ip);
    let logs = daemon_a.process().logs();
    assert!(logs.contains("LAN discovery: joined 239.192."), "{logs}");
}

#[test]
fn a_host_on_two_lans_learns_peers_on_both() {
    if !lab::require_root() {
        return;
    }
    // a — LAN 1 — b — LAN 2 — c; b does not forward, so a and c never see each other.
    let lab = Lab::builder("lan_two")
        .lan(&["a", "b"])
        .lan(&["b", "c"])
        .subnet_routes_only()
        .build()
        .unwrap();
    let (a, b, c) = (lab.host("a"), lab.host("b"), lab.host("c"));
    assert_subnet_routes_only(b);
    let started = Instant::now();
    let (_daemons, st) = start_daemons(&lab, &[a, b, c]);
    let (key_a, key_b, key_c) = (&st[0].public_key, &st[1].public_key, &st[2].public_key);
    // Retries only while the handshakes are missing; an API error fails at once.
    let both = lab::wait_until(MESH_UP, || {
        daemon::handshaked(b, key_a).unwrap()
            && daemon::handshaked(b, key_c).unwrap()
            && daemon::handshaked(a, key_b).unwrap()
    });
    assert!(
        both,
        "b did not handshake with a (LAN 1) and c (LAN 2) within 30 s; b lists {:#?}\na lists {:#?}",
        daemon::peers(b).unwrap().peers,
        daemon::peers(a).unwrap().peers
    );
    eprintln!(
        "two LANs: b handshaked with a and c {:.2} s after start",
        started.elapsed().as_secs_f64()
    );
    for (key, leg_ip) in [(key_a, a.ip_on(1).unwrap()), (key_c, c.ip_on(2).unwrap())] {
        let p = listed_peer(b, key);
        assert_eq!(p.endpoint_method.as_deref(), Some("lan"), "{p:?}");
        let endpoint = p
            .endpoint
            .as_deref()
            .unwrap_or_else(|| panic!("b: no endpoint: {p:?}"));
        assert!(
            endpoint.starts_with(&format!("{leg_ip}:")),
            "b: endpoint {endpoint}, expected {leg_ip}"
        );
    }
    wait_lan_state(b, "running", Some("eth0, eth1"));
    wait_lan_state(a, "running", Some("eth0"));
    ping_over_mesh(b, &st[0].mesh_ip);
    ping_over_mesh(b, &st[2].mesh_ip);
}
