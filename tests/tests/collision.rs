//! End to end: two real daemons forced to the same mesh IP (their identity state files are
//! written beforehand with one `mesh_ip`; a stored address inside the subnet is kept at start)
//! end with distinct addresses. The node with the lower key keeps the address, the other one
//! moves, persists its new address (a restart keeps it), and traffic over the mesh IPs works.

use std::net::Ipv4Addr;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::Path;
use std::time::{Duration, Instant};

use wgmesh_tests::daemon::{self, Daemon};
use wgmesh_tests::lab::{self, Host, Lab};
use wgmesh_tests::labnode_exe;
use wgmesh_tests::node::keypair;

const API_UP: Duration = Duration::from_secs(20);
const SETTLE: Duration = Duration::from_secs(60);
const SUBNET: &str = "10.66.0.0/16";
const SHARED: &str = "10.66.0.50";

/// Writes `<state>/wg0.json` in Go's format with key pair `n` and the shared mesh IP.
fn write_identity(host: &Host, n: u16) -> String {
    let (private, public) = keypair(n);
    let dir = host.state_dir();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .unwrap();
    let path = dir.join("wg0.json");
    let text = format!(
        "{{\n  \"wg_pubkey\": \"{public}\",\n  \"wg_private_key\": \"{private}\",\n  \"mesh_ip\": \"{SHARED}\"\n}}\n"
    );
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    public
}

fn stored_mesh_ip(path: &Path) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["mesh_ip"].as_str().unwrap_or_default().to_owned()
}

fn start(host: &Host, secret: &Path) -> Daemon {
    let exe = labnode_exe!();
    let d = Daemon::start(&exe, host, secret, &["--mesh-subnet", SUBNET]).unwrap();
    d.wait_api(API_UP).unwrap();
    d
}

#[test]
fn two_nodes_on_one_mesh_ip_end_distinct_and_the_loser_keeps_its_new_ip() {
    if !lab::require_root() {
        return;
    }
    let exe = labnode_exe!();
    let lab = Lab::one_lan("collide", &["a", "b"]).unwrap();
    let secret = lab.dir().join("mesh.secret");
    daemon::write_secret(&exe, &secret).unwrap();
    let (a, b) = (lab.host("a"), lab.host("b"));
    let key_a = write_identity(a, 1);
    let key_b = write_identity(b, 2);
    // Go's rule: the lower base64 text wins.
    let (winner, loser) = if key_a < key_b { (a, b) } else { (b, a) };
    let (winner_key, loser_key) = if key_a < key_b {
        (&key_a, &key_b)
    } else {
        (&key_b, &key_a)
    };

    let started = Instant::now();
    let _da = start(a, &secret);
    let db = start(b, &secret);
    let daemons = [(a, _da), (b, db)];
    // Both start on the shared address; the loser may have moved already (it takes ~0.25 s),
    // so its log tells (checked below), not its status.
    assert_eq!(daemon::status(winner).unwrap().mesh_ip, SHARED);

    let mut ips = (String::new(), String::new());
    let distinct = lab::wait_until(SETTLE, || {
        ips = (
            daemon::status(winner).unwrap().mesh_ip,
            daemon::status(loser).unwrap().mesh_ip,
        );
        ips.0 != ips.1
    });
    assert!(distinct, "still on one mesh IP: {ips:?}");
    eprintln!(
        "collision resolved {:.2} s after start: winner {} keeps {}, loser {} moved to {}",
        started.elapsed().as_secs_f64(),
        &winner_key[..8],
        ips.0,
        &loser_key[..8],
        ips.1
    );
    assert_eq!(ips.0, SHARED, "the winner's address changed");
    let new_ip: Ipv4Addr = ips.1.parse().unwrap();
    assert!(
        SUBNET.parse::<ipnet::Ipv4Net>().unwrap().contains(&new_ip),
        "{new_ip} outside {SUBNET}"
    );
    for h in [winner, loser] {
        let st = daemon::status(h).unwrap();
        assert_eq!(st.discovery["collisions"].state, "running", "{st:#?}");
    }
    let state_file = loser.state_dir().join("wg0.json");
    assert_eq!(stored_mesh_ip(&state_file), ips.1, "new IP not persisted");
    assert_eq!(stored_mesh_ip(&winner.state_dir().join("wg0.json")), SHARED);
    let addrs = loser
        .exec_ok("ip", &["-4", "-o", "addr", "show", "dev", "wg0"])
        .unwrap();
    assert!(
        addrs.contains(&format!("{new_ip}/16")) && !addrs.contains(SHARED),
        "interface addresses: {addrs}"
    );
    let log = daemons
        .iter()
        .find(|(h, _)| h.name() == loser.name())
        .map(|(_, d)| d.process().stderr())
        .unwrap_or_default();
    assert!(
        log.lines()
            .any(|l| l.contains("a peer with a lower key holds our mesh IP")
                && l.contains(SHARED)
                && l.contains(winner_key.as_str()))
            && log.contains("new mesh IP saved"),
        "{log}"
    );

    // Traffic over the mesh IPs, both ways, once the winner learned the new address.
    let shared: Ipv4Addr = SHARED.parse().unwrap();
    assert!(
        winner.wait_reachable(new_ip, SETTLE).unwrap(),
        "winner cannot reach the loser's new IP"
    );
    assert!(loser.wait_reachable(shared, SETTLE).unwrap());
    daemon::tcp_every_pair(&exe, &[a, b]).unwrap();
    eprintln!(
        "traffic over mesh IPs {:.2} s after start",
        started.elapsed().as_secs_f64()
    );

    // Restart the loser with the same state dir: it keeps its new address.
    let d = &daemons
        .iter()
        .find(|(h, _)| h.name() == loser.name())
        .unwrap()
        .1;
    d.process().signal(libc::SIGTERM).unwrap();
    let exit = d.process().wait_timeout(Duration::from_secs(15)).unwrap();
    assert!(
        exit.is_some_and(|s| s.success()),
        "{}",
        d.process().logs_tail(30)
    );
    let _again = start(loser, &secret);
    assert_eq!(daemon::status(loser).unwrap().mesh_ip, ips.1);
    assert_eq!(daemon::status(winner).unwrap().mesh_ip, SHARED);
    assert!(
        winner.wait_reachable(new_ip, SETTLE).unwrap(),
        "no traffic after the loser's restart"
    );
}
