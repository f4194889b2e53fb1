//! End to end: peer health. Three daemons on one LAN; one host's link is cut: the others show it
//! `offline` with a reason in `GET /v1/peers`; healed, it is `online` again without a restart.
//! And a Go-format probe (`ping\n` over plain TCP to gossip port + 2000 on a mesh IP) gets
//! `pong\n`.
//!
//! Needs root; without it the tests are skipped, except under `CI=true` where they fail.

use std::time::{Duration, Instant};

use wgmesh_api_types::Peer;
use wgmesh_tests::daemon::{self, Daemon};
use wgmesh_tests::lab::{self, Host, Lab};
use wgmesh_tests::labnode_exe;

/// How long a daemon may take to serve its API after start.
const API_UP: Duration = Duration::from_secs(20);
/// How long the mesh may take to form.
const MESH_UP: Duration = Duration::from_secs(60);
/// How long a state change may take to show (the target is 10 s; this only bounds the test).
const CHANGE: Duration = Duration::from_secs(60);

// Failures panic (`unwrap`): the lab prints every daemon's log when it is dropped during a panic.

/// `key`'s entry in `host`'s peer list, if listed.
fn entry(host: &Host, key: &str) -> Option<Peer> {
    daemon::peer(host, key).unwrap()
}

/// Waits until every one of `observers` shows `key` as `pred` says; returns the time it took
/// and each observer's last entry.
fn wait_health(
    observers: &[&Host],
    key: &str,
    what: &str,
    pred: impl Fn(&Peer) -> bool,
) -> (Duration, Vec<Peer>) {
    let started = Instant::now();
    let ok = lab::wait_until(CHANGE, || {
        observers
            .iter()
            .all(|h| entry(h, key).is_some_and(|p| pred(&p)))
    });
    let last: Vec<Peer> = observers.iter().filter_map(|h| entry(h, key)).collect();
    assert!(ok, "not {what} within {CHANGE:?}: {last:#?}");
    (started.elapsed(), last)
}

fn start(lab: &Lab) -> Vec<Daemon> {
    let exe = labnode_exe!();
    let secret = lab.dir().join("mesh.secret");
    daemon::write_secret(&exe, &secret).unwrap();
    let daemons: Vec<Daemon> = lab
        .hosts()
        .iter()
        .map(|h| Daemon::start(&exe, h, &secret, &[]).unwrap())
        .collect();
    for d in &daemons {
        d.wait_api(API_UP).unwrap();
    }
    let hosts: Vec<&Host> = lab.hosts().iter().collect();
    daemon::wait_full_mesh(&hosts, MESH_UP).unwrap();
    daemons
}

#[test]
fn a_cut_peer_goes_offline_and_comes_back_online() {
    if !lab::require_root() {
        return;
    }
    let lab = Lab::one_lan("health", &["a", "b", "c"]).unwrap();
    let daemons = start(&lab);
    let (a, b, c) = (lab.host("a"), lab.host("b"), lab.host("c"));
    let key_c = daemons[2].status().unwrap().public_key;
    let observers = [a, b];

    let (t, peers) = wait_health(&observers, &key_c, "online", |p| p.health == "online");
    eprintln!(
        "c online in a's and b's API {:.2} s after the mesh formed",
        t.as_secs_f64()
    );
    for p in &peers {
        assert!(p.latency_ms.is_some(), "a probe RTT is recorded: {p:#?}");
        eprintln!("probe rtt to c: {:?} ms", p.latency_ms);
    }

    c.cut_link().unwrap();
    let cut = Instant::now();
    let (t, peers) = wait_health(&observers, &key_c, "offline", |p| {
        matches!(p.health.as_str(), "offline" | "quarantined" | "stale")
    });
    eprintln!(
        "c cut: not online in a's and b's API after {:.2} s (target 10 s)",
        t.as_secs_f64()
    );
    for p in &peers {
        assert!(!p.reasons.is_empty(), "a non-online peer says why: {p:#?}");
        eprintln!("  {} {:?}", p.health, p.reasons);
    }

    c.heal_link().unwrap();
    let (t, peers) = wait_health(&observers, &key_c, "online again", |p| p.health == "online");
    eprintln!(
        "c healed: online again in a's and b's API after {:.2} s ({:.2} s after the cut), no restart",
        t.as_secs_f64(),
        cut.elapsed().as_secs_f64()
    );
    for p in &peers {
        assert_eq!(p.probe_failures, 0, "{p:#?}");
    }
    for d in &daemons {
        assert!(
            d.process().try_wait().unwrap().is_none(),
            "{} still runs",
            d.host().name()
        );
    }
}

#[test]
fn go_format_probe_gets_pong() {
    if !lab::require_root() {
        return;
    }
    let exe = labnode_exe!();
    let lab = Lab::one_lan("healthprobe", &["a", "b"]).unwrap();
    let _daemons = start(&lab);
    let (a, b) = (lab.host("a"), lab.host("b"));
    let port = daemon::gossip_port(&lab.dir().join("mesh.secret")).unwrap() + 2000;
    let ip_a = daemon::mesh_ip(a).unwrap();
    let out = exe
        .in_host(b, "probe")
        .arg(format!("{ip_a}:{port}"))
        .output_timeout(Duration::from_secs(10))
        .unwrap();
    assert!(
        out.status.success(),
        "probe b -> a: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "pong\n");
    // From outside the mesh (a's LAN address) nothing answers: the server is bound to the mesh.
    let out = exe
        .in_host(b, "probe")
        .arg(format!("{}:{port}", a.ip()))
        .output_timeout(Duration::from_secs(10))
        .unwrap();
    assert!(
        !out.status.success(),
        "the probe port answers on the LAN address"
    );
}

#[test]
fn a_long_cut_evicts_into_quarantine_and_the_peer_returns() {
    if !lab::require_root() {
        return;
    }
    let lab = Lab::one_lan("healthevict", &["a", "b", "c"]).unwrap();
    let daemons = start(&lab);
    let (a, b, c) = (lab.host("a"), lab.host("b"), lab.host("c"));
    let key_c = daemons[2].status().unwrap().public_key;
    let observers = [a, b];
    wait_health(&observers, &key_c, "online", |p| p.health == "online");

    // Cut for longer than 45 s: unheard of, the failing probes are enforced and evict.
    c.cut_link().unwrap();
    let (t, peers) = wait_health(&observers, &key_c, "quarantined", |p| {
        p.health == "quarantined"
    });
    eprintln!(
        "c cut: evicted (quarantined) in a's and b's API after {:.2} s",
        t.as_secs_f64()
    );
    for p in &peers {
        assert_eq!(p.state, "quarantined", "{p:#?}");
        assert_eq!(p.reasons, ["quarantined"], "{p:#?}");
    }

    c.heal_link().unwrap();
    let (t, _) = wait_health(&observers, &key_c, "online again", |p| p.health == "online");
    eprintln!(
        "c healed after eviction: online again after {:.2} s (quarantine is 30 s)",
        t.as_secs_f64()
    );
}
