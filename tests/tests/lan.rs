//! End to end: LAN discovery on hosts whose only routes are the /24s of their legs (no default
//! route, no multicast route), as on a small isolated LAN: the group is joined on each interface
//! by index, follows a leg that comes up late, and works on every leg of a multi-homed host. The
//! `lan` layer of `GET /v1/status` says what it is doing.
//!
//! Needs root; without it the tests are skipped, except under `CI=true` where they fail.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use wgmesh_tests::api::get_json;
use wgmesh_tests::lab::{self, Host, Lab, LabProcess};

// ------------------------------------------------------------------------------------------
// daemon helpers (local copies of those in mesh.rs)

fn write_secret(lab: &Lab, name: &str) -> PathBuf {
    let out = wgmesh_tests::labnode_exe!()
        .wgmeshctl()
        .args(["secret", "new"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let path = lab.dir().join(name);
    std::fs::write(&path, &out.stdout).unwrap();
    path
}

fn start_daemon(host: &Host, secret: &Path) -> LabProcess {
    wgmesh_tests::labnode_exe!()
        .in_host(host, "wgmeshd")
        .args([
            "--log-level",
            "debug",
            "join",
            "--wg-backend",
            "userspace",
            "--secret-file",
        ])
        .arg(secret)
        .arg("--state-dir")
        .arg(host.state_dir())
        .arg("--socket")
        .arg(host.socket_path())
        .spawn()
        .unwrap()
}

fn status(host: &Host) -> Option<Value> {
    get_json(&host.socket_path(), "/v1/status").ok()
}

fn peers(host: &Host) -> Vec<Value> {
    get_json(&host.socket_path(), "/v1/peers")
        .ok()
        .and_then(|v| v["peers"].as_array().cloned())
        .unwrap_or_default()
}

/// The peer entry for `key` in `host`'s peer list, if any.
fn peer(host: &Host, key: &str) -> Option<Value> {
    peers(host).into_iter().find(|p| p["public_key"] == key)
}

/// Whether `host` had a WireGuard handshake with `key` in the last 30 s.
fn handshaked(host: &Host, key: &str) -> bool {
    peer(host, key).is_some_and(|p| {
        p["last_handshake_seconds_ago"]
            .as_u64()
            .is_some_and(|s| s < 30)
    })
}

/// Whether every host has a recent handshake with every other host.
fn full_mesh(hosts: &[&Host], keys: &[String]) -> bool {
    hosts.iter().enumerate().all(|(i, h)| {
        keys.iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .all(|(_, k)| handshaked(h, k))
    })
}

/// Waits for the APIs of the daemons on `hosts`; returns (public keys, mesh IPs).
fn wait_up(hosts: &[&Host]) -> (Vec<String>, Vec<String>) {
    let mut keys = Vec::new();
    let mut ips = Vec::new();
    for h in hosts {
        let mut st = None;
        assert!(
            lab::wait_until(Duration::from_secs(20), || {
                st = status(h);
                st.is_some()
            }),
            "daemon on {} never served its API",
            h.name()
        );
        let st = st.unwrap();
        keys.push(st["public_key"].as_str().unwrap().to_owned());
        ips.push(st["mesh_ip"].as_str().unwrap().to_owned());
    }
    (keys, ips)
}

// ------------------------------------------------------------------------------------------
// LAN helpers

/// `discovery.lan` of `host`'s status (`Null` while the API does not answer).
fn lan_layer(host: &Host) -> Value {
    status(host).map_or(Value::Null, |s| s["discovery"]["lan"].clone())
}

/// Waits until `host`'s `lan` layer is in `state` with `detail`; returns the layer.
fn wait_lan_state(lab: &Lab, host: &Host, state: &str, detail: Option<&str>) -> Value {
    let mut last = Value::Null;
    let ok = lab::wait_until(Duration::from_secs(20), || {
        last = lan_layer(host);
        last["state"] == state && detail.is_none_or(|d| last["detail"] == d)
    });
    if !ok {
        lab.print_logs(40);
    }
    assert!(
        ok,
        "{}: discovery.lan never became {state} {detail:?}; last: {last}",
        host.name()
    );
    last
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
    let secret = write_secret(&lab, "mesh.secret");
    let started = Instant::now();
    start_daemon(a, &secret);
    start_daemon(b, &secret);
    let hosts = [a, b];
    let (keys, ips) = wait_up(&hosts);
    let formed = lab::wait_until(Duration::from_secs(30), || full_mesh(&hosts, &keys));
    if !formed {
        lab.print_logs(40);
    }
    assert!(formed, "a and b did not handshake both ways within 30 s");
    eprintln!(
        "no routes: a and b handshaked both ways {:.2} s after start",
        started.elapsed().as_secs_f64()
    );
    ping_over_mesh(a, &ips[1]);
    ping_over_mesh(b, &ips[0]);
    for (h, other_key, other_ip) in [(a, &keys[1], b.ip()), (b, &keys[0], a.ip())] {
        let p = peer(h, other_key).unwrap();
        assert_eq!(p["endpoint_method"], "lan", "{p}");
        let endpoint = p["endpoint"].as_str().unwrap();
        assert!(
            endpoint.starts_with(&format!("{other_ip}:")),
            "{}: endpoint {endpoint} is not the LAN source address {other_ip}",
            h.name()
        );
        let layer = wait_lan_state(&lab, h, "running", Some("eth0"));
        assert!(
            layer["last_success_seconds_ago"].as_u64().is_some(),
            "{layer}"
        );
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
    let secret = write_secret(&lab, "mesh.secret");
    start_daemon(a, &secret);
    start_daemon(b, &secret);
    let hosts = [a, b];
    let (keys, ips) = wait_up(&hosts);

    let layer = wait_lan_state(&lab, a, "retrying", None);
    let error = layer["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("no up, multicast-capable IPv4 interface besides wg0")
            && error.contains("eth0 is down"),
        "last_error: {layer}"
    );
    assert!(
        layer["last_error_seconds_ago"].as_u64().is_some(),
        "{layer}"
    );
    // The task is alive and says so; it is not restarting.
    let st = status(a).unwrap();
    let task = st["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "lan-discovery")
        .cloned()
        .unwrap();
    assert_eq!(task["state"], "running", "{task}");
    assert_eq!(task["restarts"], 0, "{task}");
    // A few announce rounds with the leg down: still retrying, no peers.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(lan_layer(a)["state"], "retrying");
    assert!(peers(a).is_empty(), "{:?}", peers(a));

    let healed = Instant::now();
    a.heal_link().unwrap();
    let formed = lab::wait_until(Duration::from_secs(30), || full_mesh(&hosts, &keys));
    if !formed {
        lab.print_logs(40);
    }
    assert!(formed, "a did not mesh within 30 s after its leg came up");
    eprintln!(
        "late leg: a and b handshaked both ways {:.2} s after a's leg came up",
        healed.elapsed().as_secs_f64()
    );
    let layer = wait_lan_state(&lab, a, "running", Some("eth0"));
    assert!(
        layer["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("eth0 is down")),
        "the last error stays visible after recovery: {layer}"
    );
    ping_over_mesh(a, &ips[1]);
    ping_over_mesh(b, &ips[0]);
    let logs = lab
        .processes()
        .into_iter()
        .find(|p| p.host() == "a")
        .unwrap()
        .logs();
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
    let secret = write_secret(&lab, "mesh.secret");
    let started = Instant::now();
    for h in [a, b, c] {
        start_daemon(h, &secret);
    }
    let (keys, ips) = wait_up(&[a, b, c]);
    let (key_a, key_c) = (&keys[0], &keys[2]);
    let both = lab::wait_until(Duration::from_secs(30), || {
        handshaked(b, key_a) && handshaked(b, key_c) && handshaked(a, &keys[1])
    });
    if !both {
        lab.print_logs(40);
    }
    assert!(both, "b did not handshake with a (LAN 1) and c (LAN 2)");
    eprintln!(
        "two LANs: b handshaked with a and c {:.2} s after start",
        started.elapsed().as_secs_f64()
    );
    for (key, leg_ip) in [(key_a, a.ip_on(1).unwrap()), (key_c, c.ip_on(2).unwrap())] {
        let p = peer(b, key).unwrap();
        assert_eq!(p["endpoint_method"], "lan", "{p}");
        let endpoint = p["endpoint"].as_str().unwrap();
        assert!(
            endpoint.starts_with(&format!("{leg_ip}:")),
            "b: endpoint {endpoint}, expected {leg_ip}"
        );
    }
    wait_lan_state(&lab, b, "running", Some("eth0, eth1"));
    wait_lan_state(&lab, a, "running", Some("eth0"));
    ping_over_mesh(b, &ips[0]);
    ping_over_mesh(b, &ips[2]);
}
