//! End to end: real `wgmeshd join` daemons in lab hosts form a WireGuard mesh on their own (LAN
//! discovery), survive a member's clean stop and restart, and ignore a node with another secret.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use wgmesh_tests::daemon::{self, Daemon};
use wgmesh_tests::lab::{self, Host, Lab};
use wgmesh_tests::labnode_exe;

/// How long a daemon may take to serve its API after start.
const API_UP: Duration = Duration::from_secs(20);
/// How long a mesh may take to form (every pair handshaked).
const MESH_UP: Duration = Duration::from_secs(60);

// Failures panic (`unwrap`) rather than return `Err`: the lab prints every daemon's log when it is
// dropped during a panic.

/// A lab of `n` hosts on one LAN, each running a daemon with the same fresh secret, checked to
/// form a full mesh that carries TCP between every pair.
fn form_mesh(test: &str, n: usize) -> (Lab, Vec<Daemon>) {
    let exe = labnode_exe!();
    let names: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();
    let lab = Lab::one_lan(test, &names).unwrap();
    let secret = lab.dir().join("mesh.secret");
    daemon::write_secret(&exe, &secret).unwrap();
    let started = Instant::now();
    let daemons: Vec<Daemon> = lab
        .hosts()
        .iter()
        .map(|h| Daemon::start(&exe, h, &secret, &[]).unwrap())
        .collect();
    for d in &daemons {
        d.wait_api(API_UP).unwrap();
    }
    let hosts: Vec<&Host> = lab.hosts().iter().collect();
    daemon::wait_full_mesh(&hosts, MESH_UP)
        .with_context(|| format!("{n} nodes after a simultaneous start"))
        .unwrap();
    eprintln!(
        "{n} nodes: full mesh (every pair handshaked) {:.2} s after simultaneous start",
        started.elapsed().as_secs_f64()
    );
    daemon::tcp_every_pair(&exe, &hosts).unwrap();
    (lab, daemons)
}

#[test]
fn three_nodes_form_a_mesh_and_survive_a_stop_and_restart() {
    if !lab::require_root() {
        return;
    }
    let exe = labnode_exe!();
    let (lab, daemons) = form_mesh("mesh3", 3);
    let hosts: Vec<&Host> = lab.hosts().iter().collect();
    let (a, b, c) = (hosts[0], hosts[1], hosts[2]);
    let before = daemons[2].status().unwrap();
    let ip_b = daemon::mesh_ip(b).unwrap();

    // SIGTERM on c: clean exit, its interface is gone, a and b keep talking.
    let daemon_c = daemons[2].process();
    daemon_c.signal(libc::SIGTERM).unwrap();
    let status_c = daemon_c
        .wait_timeout(Duration::from_secs(15))
        .unwrap()
        .expect("wgmeshd exits on SIGTERM");
    assert!(
        status_c.success(),
        "exit status {status_c:?}: {}",
        daemon_c.logs_tail(30)
    );
    let stderr = daemon_c.stderr();
    assert!(stderr.contains("Shutdown complete"), "{stderr}");
    let link = c.run("ip", &["link", "show", "wg0"]).unwrap();
    assert!(
        !link.status.success(),
        "wg0 still exists on the stopped host"
    );
    assert!(
        a.wait_reachable(ip_b, Duration::from_secs(5)).unwrap(),
        "a lost b after c stopped"
    );

    // Restart c with the same state dir: same key and mesh IP, back in the mesh.
    let secret = lab.dir().join("mesh.secret");
    let again = Daemon::start(&exe, c, &secret, &[])
        .unwrap()
        .wait_api(API_UP)
        .unwrap();
    assert_eq!(
        (&again.public_key, &again.mesh_ip),
        (&before.public_key, &before.mesh_ip)
    );
    daemon::wait_full_mesh(&hosts, MESH_UP)
        .context("c did not rejoin")
        .unwrap();
    let ip_c = again.mesh_ip.parse().unwrap();
    assert!(b.wait_reachable(ip_c, Duration::from_secs(5)).unwrap());
}

#[test]
fn a_node_with_another_secret_never_enters_the_peer_stores() {
    if !lab::require_root() {
        return;
    }
    let exe = labnode_exe!();
    let lab = Lab::one_lan("meshx", &["a", "b", "x"]).unwrap();
    let (good, other) = (
        lab.dir().join("good.secret"),
        lab.dir().join("other.secret"),
    );
    daemon::write_secret(&exe, &good).unwrap();
    daemon::write_secret(&exe, &other).unwrap();
    let (a, b, x) = (lab.host("a"), lab.host("b"), lab.host("x"));
    let daemons = [
        Daemon::start(&exe, a, &good, &[]).unwrap(),
        Daemon::start(&exe, b, &good, &[]).unwrap(),
        Daemon::start(&exe, x, &other, &[]).unwrap(),
    ];
    let keys: Vec<String> = daemons
        .iter()
        .map(|d| d.wait_api(API_UP).unwrap().public_key)
        .collect();
    daemon::wait_full_mesh(&[a, b], Duration::from_secs(30)).unwrap();
    // Several announce rounds (5 s each) pass with all three multicasting on one LAN.
    std::thread::sleep(Duration::from_secs(11));
    // Each answer must be a real one: a crashed daemon fails here instead of "storing nothing".
    for (d, mesh_peer) in [(&daemons[0], &keys[1]), (&daemons[1], &keys[0])] {
        let seen: BTreeSet<String> = d
            .peers()
            .unwrap()
            .peers
            .into_iter()
            .map(|p| p.public_key)
            .collect();
        assert_eq!(
            seen,
            BTreeSet::from([mesh_peer.clone()]),
            "{} should know exactly its one mesh peer, not the outsider {}",
            d.host().name(),
            keys[2]
        );
    }
    let outsider = daemons[2].peers().unwrap();
    assert!(
        outsider.peers.is_empty(),
        "the outsider stored peers of another mesh: {:?}",
        outsider.peers
    );
    for d in &daemons {
        assert!(
            d.process().is_running(),
            "wgmeshd on {} exited:\n{}",
            d.host().name(),
            d.process().logs_tail(30)
        );
    }
}

#[test]
fn eight_nodes_form_a_full_mesh() {
    if !lab::require_root() {
        return;
    }
    form_mesh("mesh8", 8);
}
