//! End to end: `wgmeshd join` as a drop-in for Go's `wgmesh join`. A node started with every flag
//! of Go's `join` under its Go name, on a state directory written in Go's format (identity
//! `wg0.json`, peer cache `wg0-peers.json`), comes up with the key and mesh IP of that directory,
//! reaches the peer of that cache with LAN discovery off, serves its API on `--socket-path` and
//! its metrics on `--metrics`.

use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wgmesh_tests::daemon::{self, Daemon};
use wgmesh_tests::lab::{self, Host, Lab};
use wgmesh_tests::labnode_exe;
use wgmesh_tests::node::keypair;

const API_UP: Duration = Duration::from_secs(20);
const MESH_UP: Duration = Duration::from_secs(60);
const SUBNET: &str = "10.67.0.0/16";

/// Writes `<state>/<name>` with mode 0600 in a 0700 state directory, as Go does.
fn write_state(host: &Host, name: &str, text: &str) {
    let dir = host.state_dir();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Go's `<iface>.json` (2-space indented, Go's keys) with key pair `n` and `mesh_ip`.
fn go_identity(host: &Host, n: u16, mesh_ip: &str) -> String {
    let (private, public) = keypair(n);
    write_state(
        host,
        "wg0.json",
        &format!(
            "{{\n  \"wg_pubkey\": \"{public}\",\n  \"wg_private_key\": \"{private}\",\n  \"mesh_ip\": \"{mesh_ip}\"\n}}\n"
        ),
    );
    public
}

#[test]
fn go_join_flags_and_a_go_state_directory_work_unchanged() {
    if !lab::require_root() {
        return;
    }
    let exe = labnode_exe!();
    let lab = Lab::one_lan("godropin", &["a", "b"]).unwrap();
    let (a, b) = (lab.host("a"), lab.host("b"));
    let secret_file = lab.dir().join("mesh.secret");
    daemon::write_secret(&exe, &secret_file).unwrap();
    let secret = std::fs::read_to_string(&secret_file)
        .unwrap()
        .trim()
        .to_owned();

    // b: a node of the mesh, started the usual way, with an identity of its own choosing.
    let key_b = go_identity(b, 2, "10.67.0.78");
    let db = Daemon::start(
        &exe,
        b,
        &secret_file,
        &["--mesh-subnet", SUBNET, "--no-lan-discovery"],
    )
    .unwrap();
    db.wait_api(API_UP).unwrap();

    // a: a Go node's state directory, its cache naming b.
    let key_a = go_identity(a, 1, "10.67.0.77");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    write_state(
        a,
        "wg0-peers.json",
        &format!(
            "{{\n  \"peers\": [\n    {{\n      \"wg_pubkey\": \"{key_b}\",\n      \"mesh_ip\": \"10.67.0.78\",\n      \"endpoint\": \"{}:51820\",\n      \"last_seen\": {now}\n    }}\n  ],\n  \"updated_at\": {now}\n}}\n",
            b.ip()
        ),
    );
    // Every flag of Go's `wgmesh join`, under Go's names. `--no-dht` and `--no-stun` (ours) keep
    // the lab off the internet.
    let socket = a.socket_path();
    let process = exe
        .in_host(a, "wgmeshd")
        .args(["join", "--secret", &secret, "--state-dir"])
        .arg(a.state_dir())
        .args([
            "--advertise-routes",
            "10.99.7.0/24",
            "--listen-port",
            "51820",
            "--interface",
            "wg0",
            "--log-level",
            "debug",
            "--privacy",
            "--gossip",
            "--socket-path",
        ])
        .arg(&socket)
        .args([
            "--no-lan-discovery",
            "--no-ipv6",
            "--force-relay",
            "--no-punching",
            "--introducer",
            "--mesh-subnet",
            SUBNET,
            "--metrics",
            "127.0.0.1:9586",
            "--no-dht",
            "--no-stun",
        ])
        .spawn()
        .unwrap();
    let up = lab::wait_until(API_UP, || daemon::status(a).is_ok());
    assert!(
        up,
        "a never served its API on --socket-path:\n{}",
        process.logs()
    );

    let st = daemon::status(a).unwrap();
    assert_eq!(st.public_key, key_a, "the Go identity's key");
    assert_eq!(st.mesh_ip, "10.67.0.77", "the Go identity's mesh IP");
    assert!(st.introducer);
    assert_eq!(st.advertise_routes, ["10.99.7.0/24"]);
    assert_eq!(st.discovery["lan"].state, "off");
    assert_eq!(st.discovery["gossip"].state, "running");
    assert!(st.privacy.is_some(), "--privacy with --gossip: {st:#?}");
    assert_eq!(st.log_level, "debug");

    // b comes from the Go cache alone (LAN discovery is off on both) and the tunnel works.
    let meshed = lab::wait_until(MESH_UP, || {
        daemon::peers(a).is_ok_and(|l| {
            l.peers
                .iter()
                .any(|p| p.public_key == key_b && p.last_handshake_seconds_ago.is_some())
        })
    });
    assert!(
        meshed,
        "a never reached b from the Go cache:\n{}",
        lab.logs(80)
    );
    daemon::tcp_every_pair(&exe, &[a, b]).unwrap();

    // `--metrics` serves Prometheus text on TCP.
    let out = exe
        .in_host(a, "http-get")
        .args(["127.0.0.1:9586", "/metrics"])
        .output_ok()
        .unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("wgmesh_active_peers"), "{out}");

    // Go's centralized-mode flags are refused by name, and the daemon does not start.
    let refused = exe
        .in_host(a, "wgmeshd")
        .args([
            "join",
            "--secret",
            &secret,
            "--account",
            "sk-live-not-shown",
        ])
        .output_timeout(Duration::from_secs(30))
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("--account is not supported by wgmeshd"),
        "{stderr}"
    );
    assert!(!stderr.contains("sk-live"), "{stderr}");
}
