//! End to end, against what a hostile peer or a careless operator can do:
//!
//! - a member advertising prefixes that would hijack traffic (`0.0.0.0/1`, this LAN, the mesh
//!   subnet) gets none of them installed, the refusal is logged once and shown on the peer in the
//!   API and in `wgmeshctl peers`, and its harmless prefix keeps working;
//! - a second `wgmeshd` for the same interface (same state directory, or only the same API
//!   socket) fails before touching anything, and the first one keeps its device and its mesh;
//! - a secret given in `WGMESH_SECRET` is gone from the daemon's environment once read.
//!
//! Needs root; without it the tests are skipped, except under `CI=true` where they fail.

use std::time::{Duration, Instant};

use wgmesh_api_types::Peer;
use wgmesh_tests::daemon::{self, Daemon};
use wgmesh_tests::lab::{self, Host, Lab};
use wgmesh_tests::labnode_exe;

/// How long a daemon may take to serve its API after start.
const API_UP: Duration = Duration::from_secs(20);
/// How long a mesh may take to form.
const MESH_UP: Duration = Duration::from_secs(60);
/// The custom mesh subnet of these tests (so a test can name a prefix inside it up front).
const MESH_SUBNET: &str = "10.250.0.0/16";

/// `b`'s entry in `a`'s peer list.
fn peer_entry(a: &Host, b_key: &str) -> Option<Peer> {
    daemon::peers(a)
        .unwrap()
        .peers
        .into_iter()
        .find(|p| p.public_key == b_key)
}

/// `ip -4 route show dev wg0` in `host`, one route per line.
fn mesh_routes(host: &Host) -> Vec<String> {
    host.exec_ok("ip", &["-4", "route", "show", "dev", "wg0"])
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn hijacking_prefixes_are_refused_logged_once_and_shown_harmless_ones_work() {
    if !lab::require_root() {
        return;
    }
    let exe = labnode_exe!();
    let lab = Lab::one_lan("hijack", &["a", "b"]).unwrap();
    let (a, b) = (lab.host("a"), lab.host("b"));
    let secret = lab.dir().join("mesh.secret");
    daemon::write_secret(&exe, &secret).unwrap();
    let lan = lab.lan_subnet(1).unwrap().to_string();
    let advertised = format!("0.0.0.0/1,{lan},10.250.9.0/24,172.30.0.0/24");
    let da = Daemon::start(&exe, a, &secret, &["--mesh-subnet", MESH_SUBNET]).unwrap();
    let db = Daemon::start(
        &exe,
        b,
        &secret,
        &[
            "--mesh-subnet",
            MESH_SUBNET,
            "--advertise-routes",
            &advertised,
        ],
    )
    .unwrap();
    da.wait_api(API_UP).unwrap();
    let b_key = db.wait_api(API_UP).unwrap().public_key;
    daemon::wait_full_mesh(&[a, b], MESH_UP).unwrap();

    // a's view of b: the three hijacks refused with their reasons, the harmless one accepted.
    let mut entry = None;
    assert!(
        lab::wait_until(Duration::from_secs(20), || {
            entry = peer_entry(a, &b_key);
            entry.as_ref().is_some_and(|p| p.routes_refused.len() == 3)
        }),
        "a never listed b's refused routes: {entry:?}"
    );
    let entry = entry.unwrap();
    let refused: Vec<(&str, &str)> = entry
        .routes_refused
        .iter()
        .map(|r| (r.prefix.as_str(), r.reason.as_str()))
        .collect();
    assert_eq!(
        refused,
        vec![
            ("0.0.0.0/1", "too_broad"),
            (lan.as_str(), "local_network"),
            ("10.250.9.0/24", "mesh_subnet"),
        ]
    );
    assert!(entry.routes_refused[1].detail.contains(&lan), "{entry:?}");
    assert_eq!(
        entry.routable_networks.len(),
        4,
        "b's own list is shown as advertised"
    );

    // The kernel of a routes only the harmless prefix through the mesh.
    let routes = mesh_routes(a);
    assert!(
        routes
            .iter()
            .any(|r| r.starts_with("172.30.0.0/24") && r.contains("proto 87")),
        "{routes:?}"
    );
    for bad in ["0.0.0.0/1", "10.250.9.0/24"] {
        assert!(
            !routes.iter().any(|r| r.starts_with(bad)),
            "{bad} installed: {routes:?}"
        );
    }
    let lan_route = a.exec_ok("ip", &["-4", "route", "show", &lan]).unwrap();
    assert!(
        lan_route.contains("dev eth0") && !lan_route.contains("wg0"),
        "the LAN moved into the mesh: {lan_route}"
    );

    // Refusals are logged once, not at every reconcile pass (every 5 s).
    std::thread::sleep(Duration::from_secs(6));
    let log = da.process().stderr();
    for prefix in ["0.0.0.0/1", lan.as_str(), "10.250.9.0/24"] {
        let lines = log
            .lines()
            .filter(|l| l.contains("not routing a network this peer advertises"))
            .filter(|l| l.contains(&format!("prefix={prefix} ")))
            .count();
        assert_eq!(lines, 1, "{prefix} logged {lines} times:\n{log}");
    }

    // wgmeshctl shows them too.
    let out = exe
        .in_host(a, "wgmeshctl")
        .arg("--socket")
        .arg(a.socket_path())
        .arg("peers")
        .output_ok()
        .unwrap();
    assert!(out.contains("Advertised routes not installed:"), "{out}");
    assert!(out.contains("0.0.0.0/1 (too_broad)"), "{out}");
}

#[test]
fn a_second_daemon_for_the_same_interface_fails_and_leaves_the_first_alone() {
    if !lab::require_root() {
        return;
    }
    let exe = labnode_exe!();
    let lab = Lab::one_lan("second", &["a", "b"]).unwrap();
    let (a, b) = (lab.host("a"), lab.host("b"));
    let secret = lab.dir().join("mesh.secret");
    daemon::write_secret(&exe, &secret).unwrap();
    let da = Daemon::start(&exe, a, &secret, &[]).unwrap();
    let db = Daemon::start(&exe, b, &secret, &[]).unwrap();
    let before = da.wait_api(API_UP).unwrap();
    db.wait_api(API_UP).unwrap();
    daemon::wait_full_mesh(&[a, b], MESH_UP).unwrap();
    let ip_b = daemon::mesh_ip(b).unwrap();

    let other_state = a.dir().join("other-state");
    let cases: [(&str, Vec<std::ffi::OsString>, &str); 2] = [
        (
            "same state directory, another socket",
            vec![
                "--state-dir".into(),
                a.state_dir().into(),
                "--socket".into(),
                a.dir().join("other.sock").into(),
            ],
            "another wgmeshd already runs interface wg0",
        ),
        (
            "another state directory, the same socket",
            vec![
                "--state-dir".into(),
                other_state.clone().into(),
                "--socket".into(),
                a.socket_path().into(),
            ],
            "already serving",
        ),
    ];
    for (why, args, error) in cases {
        let started = Instant::now();
        let out = exe
            .in_host(a, "wgmeshd")
            .args(["join", "--wg-backend", "userspace", "--secret-file"])
            .arg(&secret)
            .args(args)
            .output_timeout(Duration::from_secs(30))
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{why}: the second daemon ran: {stderr}"
        );
        assert!(stderr.contains(error), "{why}: {stderr}");
        assert!(
            !stderr.contains("WireGuard device ready"),
            "{why}: the second daemon touched a device: {stderr}"
        );
        eprintln!("{why}: refused in {:.2} s", started.elapsed().as_secs_f64());
        // The first daemon is untouched: same device, same port, still meshed.
        let now = da.status().unwrap();
        assert_eq!(now.listen_port, before.listen_port, "{why}");
        assert_eq!(now.public_key, before.public_key, "{why}");
        assert!(da.process().is_running(), "{why}");
        assert!(
            a.wait_reachable(ip_b, Duration::from_secs(10)).unwrap(),
            "{why}: a lost b"
        );
    }
    assert!(
        !other_state.join("wg0.json").exists(),
        "the refused daemon created an identity"
    );
}

#[test]
fn a_secret_from_the_environment_is_scrubbed_from_it() {
    if !lab::require_root() {
        return;
    }
    let exe = labnode_exe!();
    let lab = Lab::one_lan("envsecret", &["a"]).unwrap();
    let a = lab.host("a");
    let file = lab.dir().join("mesh.secret");
    daemon::write_secret(&exe, &file).unwrap();
    let secret = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    let tail = &secret[secret.len() - 40..];
    let process = exe
        .in_host(a, "wgmeshd")
        .args(["join", "--wg-backend", "userspace", "--state-dir"])
        .arg(a.state_dir())
        .arg("--socket")
        .arg(a.socket_path())
        // Lab daemons never ask public STUN servers.
        .arg("--no-stun")
        .env("WGMESH_SECRET", &secret)
        .spawn()
        .unwrap();
    // Retry only while it starts; the last call must answer.
    lab::wait_until(API_UP, || daemon::status(a).is_ok());
    daemon::status(a).unwrap();
    let environ = std::fs::read(format!("/proc/{}/environ", process.pid())).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        !environ.contains(tail),
        "the secret is still in /proc/<pid>/environ"
    );
    assert!(
        !environ.contains("WGMESH_SECRET="),
        "the variable is still set"
    );
    let log = process.stderr();
    assert!(!log.contains(tail), "the secret is in the log");
}
