//! End to end: real `wgmeshd join` daemons in lab hosts form a WireGuard mesh on their own (LAN
//! discovery), survive a member's clean stop and restart, and ignore a node with another secret.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use wgmesh_tests::api::get_json;
use wgmesh_tests::lab::{self, Host, Lab, LabProcess};

fn write_secret(lab: &Lab, name: &str) -> PathBuf {
    let out = std::process::Command::new(wgmesh_tests::binary("wgmeshctl"))
        .args(["secret", "new"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let path = lab.dir().join(name);
    std::fs::write(&path, &out.stdout).unwrap();
    path
}

fn start_daemon(host: &Host, secret: &std::path::Path) -> LabProcess {
    let bin = wgmesh_tests::binary("wgmeshd");
    host.command(bin)
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

/// Whether every host has a recent handshake with every other host.
fn full_mesh(hosts: &[&Host], keys: &[String]) -> bool {
    hosts.iter().enumerate().all(|(i, h)| {
        let ps = peers(h);
        keys.iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .all(|(_, k)| {
                ps.iter().any(|p| {
                    p["public_key"] == k.as_str()
                        && p["last_handshake_seconds_ago"]
                            .as_u64()
                            .is_some_and(|s| s < 30)
                })
            })
    })
}

/// Starts daemons on `hosts`, waits for their APIs, and returns (public keys, mesh IPs).
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

fn labnode() -> String {
    wgmesh_tests::binary("wgmesh-labnode")
        .to_string_lossy()
        .into_owned()
}

fn tcp_every_pair(hosts: &[&Host], ips: &[String]) {
    for (h, ip) in hosts.iter().zip(ips) {
        let p = h
            .spawn(&labnode(), &["tcp-echo", &format!("{ip}:7000")], &[])
            .unwrap();
        assert!(
            lab::wait_until(Duration::from_secs(5), || p.stdout().contains("listening")),
            "{}",
            p.logs()
        );
    }
    for (i, from) in hosts.iter().enumerate() {
        for (j, ip) in ips.iter().enumerate() {
            if i == j {
                continue;
            }
            let out = from
                .command(labnode())
                .args(["tcp-check", &format!("{ip}:7000"), "65536", "10000"])
                .output_timeout(Duration::from_secs(15))
                .unwrap();
            assert!(
                out.status.success(),
                "TCP {} -> {ip}: {}",
                from.name(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

fn form_mesh(test: &str, n: usize) -> (Lab, Duration) {
    let names: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();
    let lab = Lab::one_lan(test, &names).unwrap();
    let secret = write_secret(&lab, "mesh.secret");
    let started = Instant::now();
    for h in lab.hosts() {
        start_daemon(h, &secret);
    }
    let hosts: Vec<&Host> = lab.hosts().iter().collect();
    let (keys, ips) = wait_up(&hosts);
    let formed = lab::wait_until(Duration::from_secs(60), || full_mesh(&hosts, &keys));
    if !formed {
        lab.print_logs(40);
    }
    assert!(formed, "{n} nodes did not form a full mesh within 60 s");
    let took = started.elapsed();
    eprintln!(
        "{n} nodes: full mesh (every pair handshaked) {:.2} s after simultaneous start",
        took.as_secs_f64()
    );
    tcp_every_pair(&hosts, &ips);
    (lab, took)
}

#[test]
fn three_nodes_form_a_mesh_and_survive_a_stop_and_restart() {
    if !lab::require_root() {
        return;
    }
    let (lab, _) = form_mesh("mesh3", 3);
    let hosts: Vec<&Host> = lab.hosts().iter().collect();
    let (keys, ips) = wait_up(&hosts);

    let (a, b, c) = (hosts[0], hosts[1], hosts[2]);

    // SIGTERM on c: clean exit, its interface is gone, a and b keep talking.
    let daemon_c = lab
        .processes()
        .into_iter()
        .find(|p| p.host() == c.name() && p.command().contains("wgmeshd"))
        .unwrap();
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
        a.wait_reachable(ips[1].parse().unwrap(), Duration::from_secs(5))
            .unwrap(),
        "a lost b after c stopped"
    );

    // Restart c with the same state dir: same key and mesh IP, back in the mesh.
    let secret = lab.dir().join("mesh.secret");
    start_daemon(c, &secret);
    let (keys2, ips2) = wait_up(&hosts);
    assert_eq!(
        (keys2[2].clone(), ips2[2].clone()),
        (keys[2].clone(), ips[2].clone())
    );
    assert!(
        lab::wait_until(Duration::from_secs(60), || full_mesh(&hosts, &keys)),
        "c did not rejoin"
    );
    assert!(
        b.wait_reachable(ips[2].parse().unwrap(), Duration::from_secs(5))
            .unwrap()
    );
}

#[test]
fn a_node_with_another_secret_never_enters_the_peer_stores() {
    if !lab::require_root() {
        return;
    }
    let lab = Lab::one_lan("meshx", &["a", "b", "x"]).unwrap();
    let good = write_secret(&lab, "good.secret");
    let other = write_secret(&lab, "other.secret");
    let (a, b, x) = (lab.host("a"), lab.host("b"), lab.host("x"));
    start_daemon(a, &good);
    start_daemon(b, &good);
    start_daemon(x, &other);
    let hosts = [a, b];
    let (keys, _) = wait_up(&hosts);
    let (xkey, _) = wait_up(&[x]);
    assert!(lab::wait_until(Duration::from_secs(30), || full_mesh(
        &hosts, &keys
    )));
    // Several announce rounds (5 s each) pass with all three multicasting on one LAN.
    std::thread::sleep(Duration::from_secs(11));
    for h in [a, b] {
        let seen: BTreeSet<String> = peers(h)
            .iter()
            .map(|p| p["public_key"].as_str().unwrap().to_owned())
            .collect();
        assert!(!seen.contains(&xkey[0]), "{} stored the outsider", h.name());
    }
    assert!(
        peers(x).is_empty(),
        "the outsider stored peers of another mesh"
    );
}

#[test]
fn eight_nodes_form_a_full_mesh() {
    if !lab::require_root() {
        return;
    }
    form_mesh("mesh8", 8);
}
