//! The data-plane layer for real: embedded userspace WireGuard devices and netlink routes in lab
//! hosts, driven through `wgmesh-labnode` (the daemon's `system::wg` and `system::net` code, no
//! `wg` or `ip` involved). Needs root; see `wgmesh_tests::lab`.

use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use wgmesh_tests::lab::{self, Host, Lab};
use wgmesh_tests::node::{LabNode, keypair};
use wgmesh_tests::{Exe, labnode_exe};

const PSK: &str = "LUOvekj3HqR1sGXDZQL0CcXHiik8aFRf3SmMlswA7FY=";
const WG_PORT: u16 = 51820;

fn mesh_ip(host: &Host) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, host.number())
}

fn peer_of(host: &Host, keys: &(String, String)) -> Value {
    json!({
        "public_key": keys.1,
        "endpoint": format!("{}:{WG_PORT}", host.ip()),
        "preshared_key": PSK,
        "keepalive": 25,
        "allowed_ips": [format!("{}/32", mesh_ip(host))],
    })
}

/// A lab whose hosts each run a labnode with a userspace `wg0` at 10.77.0.<n>/16.
struct Mesh {
    lab: Lab,
    nodes: Vec<LabNode>,
    keys: Vec<(String, String)>,
}

impl Mesh {
    fn start(lab: Lab) -> Self {
        let mut nodes = Vec::new();
        let mut keys = Vec::new();
        for host in lab.hosts() {
            let mut node = LabNode::start(&exe(), host).unwrap();
            let up = node
                .up(WG_PORT, &[&format!("{}/16", mesh_ip(host))])
                .unwrap();
            assert_eq!(up["backend"], "userspace");
            eprintln!(
                "{}: userspace device created in {:.2} ms",
                host.name(),
                up["create_ms"].as_f64().unwrap()
            );
            nodes.push(node);
            keys.push(keypair(u16::from(host.number())));
        }
        Self { lab, nodes, keys }
    }

    /// Gives every node its key and every other node as a peer, in one apply each.
    fn connect_all(&mut self) {
        for i in 0..self.nodes.len() {
            let peers: Vec<Value> = (0..self.nodes.len())
                .filter(|j| *j != i)
                .map(|j| peer_of(&self.lab.hosts()[j], &self.keys[j]))
                .collect();
            let report = self.nodes[i]
                .apply(json!({"private_key": self.keys[i].0, "add": peers}))
                .unwrap();
            assert_eq!(report["added"], peers.len());
        }
    }

    fn host(&self, i: usize) -> &Host {
        &self.lab.hosts()[i]
    }
}

/// The multi-call program of this build (`serve`, `tcp-echo`, `tcp-check`, …).
fn exe() -> Exe {
    labnode_exe!()
}

fn start_echo(host: &Host, kind: &str, port: u16) {
    let addr = format!("{}:{port}", mesh_ip(host));
    let p = exe().in_host(host, kind).arg(&addr).spawn().unwrap();
    assert!(
        lab::wait_until(Duration::from_secs(5), || p.stdout().contains("listening")),
        "{kind} on {} did not start: {}",
        host.name(),
        p.logs()
    );
}

/// Runs `tcp-check` from `from` to `to`'s echo server; returns the JSON it prints.
fn tcp_check(from: &Host, to: &Host, bytes: usize) -> Result<Value, String> {
    let out = exe()
        .in_host(from, "tcp-check")
        .args([
            &format!("{}:7000", mesh_ip(to)),
            &bytes.to_string(),
            "10000",
        ])
        .output_timeout(Duration::from_secs(15))
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

fn udp_ok(from: &Host, to: &Host) -> bool {
    exe()
        .in_host(from, "udp-check")
        .args([&format!("{}:7001", mesh_ip(to)), "3000"])
        .output_timeout(Duration::from_secs(10))
        .is_ok_and(|o| o.status.success())
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn three_hosts_carry_icmp_tcp_and_udp_and_report_handshakes() {
    if !lab::require_root() {
        return;
    }
    let lab = Lab::one_lan("dp3", &["a", "b", "c"]).unwrap();
    let mut mesh = Mesh::start(lab);
    mesh.connect_all();
    for i in 0..3 {
        start_echo(mesh.host(i), "tcp-echo", 7000);
        start_echo(mesh.host(i), "udp-echo", 7001);
    }
    for i in 0..3 {
        for j in 0..3 {
            if i == j {
                continue;
            }
            let (from, to) = (mesh.host(i), mesh.host(j));
            assert!(
                from.wait_reachable(mesh_ip(to), Duration::from_secs(10))
                    .unwrap(),
                "ping {} -> {} over the tunnel failed",
                from.name(),
                to.name()
            );
            let r = tcp_check(from, to, 1 << 20)
                .unwrap_or_else(|e| panic!("tcp {}->{}: {e}", from.name(), to.name()));
            eprintln!(
                "tcp {} -> {}: 1 MiB echoed at {:.0} Mbit/s",
                from.name(),
                to.name(),
                r["mbit_per_s"].as_f64().unwrap()
            );
            assert!(udp_ok(from, to), "udp {} -> {}", from.name(), to.name());
        }
    }
    // Every node reports a recent handshake with both peers, and counters that grow.
    let before = mesh.nodes[0].read().unwrap();
    for p in before["peers"].as_array().unwrap() {
        let hs = p["last_handshake_unix"]
            .as_f64()
            .expect("handshake recorded");
        assert!(
            (unix_now() - hs).abs() < 60.0,
            "handshake time {hs} is not near now"
        );
        assert!(
            p["rx_bytes"].as_u64().unwrap() > 1 << 20 || p["tx_bytes"].as_u64().unwrap() > 1 << 20
        );
    }
    tcp_check(mesh.host(0), mesh.host(1), 1 << 20).unwrap();
    let after = mesh.nodes[0].read().unwrap();
    let peer_b = |d: &Value| {
        d["peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["public_key"] == mesh.keys[1].1)
            .unwrap()
            .clone()
    };
    assert!(peer_b(&after)["rx_bytes"].as_u64() > peer_b(&before)["rx_bytes"].as_u64());
    assert!(peer_b(&after)["tx_bytes"].as_u64() > peer_b(&before)["tx_bytes"].as_u64());
}

#[test]
fn removing_a_peer_stops_traffic_and_g5_key_first_then_peers_later() {
    if !lab::require_root() {
        return;
    }
    let lab = Lab::one_lan("dprm", &["a", "b"]).unwrap();
    let mut mesh = Mesh::start(lab);
    // G5: key alone first (no peers), peers in a later apply: the socket must still open.
    for i in 0..2 {
        let r = mesh.nodes[i]
            .apply(json!({"private_key": mesh.keys[i].0}))
            .unwrap();
        assert_eq!(r["writes"], 1);
    }
    let (a, b) = (mesh.host(0).clone(), mesh.host(1).clone());
    mesh.nodes[0]
        .apply(json!({"add": [peer_of(&b, &mesh.keys[1])]}))
        .unwrap();
    mesh.nodes[1]
        .apply(json!({"add": [peer_of(&a, &mesh.keys[0])]}))
        .unwrap();
    assert!(
        a.wait_reachable(mesh_ip(&b), Duration::from_secs(10))
            .unwrap()
    );
    let r = mesh.nodes[0]
        .apply(json!({"remove": [mesh.keys[1].1]}))
        .unwrap();
    assert_eq!(r["removed"], 1);
    assert!(mesh.nodes[0].peer(&mesh.keys[1].1).unwrap().is_none());
    assert!(
        !a.ping(mesh_ip(&b)).unwrap(),
        "traffic still flows to a removed peer"
    );
    assert!(
        !b.ping(mesh_ip(&a)).unwrap(),
        "a removed peer's packets are still accepted"
    );
}

#[test]
fn thousand_peers_in_one_apply_read_back_identical_and_noop_writes_nothing() {
    if !lab::require_root() {
        return;
    }
    let lab = Lab::one_lan("dpk", &["a"]).unwrap();
    let mut mesh = Mesh::start(lab);
    let own = mesh.host(0).ip();
    let peers: Vec<Value> = (0..1000u16)
        .map(|i| {
            let mut p = json!({
                "public_key": keypair(1000 + i).1,
                // Endpoints on the host's own address: routable (G6) and never leave the host.
                "endpoint": format!("{own}:{}", 20000 + i),
                "allowed_ips": [format!("10.78.{}.{}/32", i / 250, i % 250 + 1), format!("fd00:78::{:x}/128", i + 1)],
            });
            if i % 2 == 0 {
                p["preshared_key"] = json!(PSK);
                p["keepalive"] = json!(25);
            }
            p
        })
        .collect();
    let r = mesh.nodes[0]
        .apply(json!({"private_key": mesh.keys[0].0, "add": peers}))
        .unwrap();
    eprintln!(
        "1000 peers applied in one call: {:.1} ms, {} device writes",
        r["ms"].as_f64().unwrap(),
        r["writes"]
    );
    assert_eq!(r["added"], 1000);
    let read = mesh.nodes[0].call(json!({"cmd": "read"})).unwrap();
    eprintln!("read of 1000 peers: {:.1} ms", read["ms"].as_f64().unwrap());
    let live = read["device"]["peers"].as_array().unwrap();
    assert_eq!(live.len(), 1000);
    for want in &peers {
        let got = live
            .iter()
            .find(|p| p["public_key"] == want["public_key"])
            .expect("peer present");
        assert_eq!(got["endpoint"], want["endpoint"]);
        assert_eq!(got["allowed_ips"], want["allowed_ips"]);
        assert_eq!(
            got["has_preshared_key"],
            json!(want.get("preshared_key").is_some())
        );
        assert_eq!(
            got["keepalive"],
            want.get("keepalive").cloned().unwrap_or(Value::Null)
        );
    }
    let noop = mesh.nodes[0].apply(json!({})).unwrap();
    assert_eq!(
        noop["writes"], 0,
        "an empty update must not touch the device"
    );
    let noop = mesh.nodes[0]
        .apply(json!({"update": [{"public_key": keypair(1000).1}]}))
        .unwrap();
    assert_eq!(
        noop["writes"], 0,
        "an update that changes no field must not touch the device"
    );
}

#[test]
fn engine_pitfalls_g1_g2_g4_and_g9_stay_fixed() {
    if !lab::require_root() {
        return;
    }
    let lab = Lab::one_lan("dpg", &["a", "b"]).unwrap();
    let mut mesh = Mesh::start(lab);
    let (x, y, z, d) = (
        keypair(501).1,
        keypair(502).1,
        keypair(503).1,
        keypair(504).1,
    );
    // G4: peers before the key are refused with an error, and the device stays usable.
    let err = mesh.nodes[0]
        .apply(json!({"add": [{"public_key": x}]}))
        .unwrap_err();
    assert!(err.to_string().contains("no private key"), "{err}");
    mesh.connect_all();
    let (a, b) = (mesh.host(0).clone(), mesh.host(1).clone());
    assert!(
        a.wait_reachable(mesh_ip(&b), Duration::from_secs(10))
            .unwrap()
    );
    // G1: per-peer settings do not leak into the next peer of the same update.
    mesh.nodes[0]
        .apply(json!({"add": [
            {"public_key": x, "endpoint": "192.168.101.200:1000", "preshared_key": PSK, "keepalive": 7, "allowed_ips": ["10.60.0.1/32"]},
            {"public_key": y, "allowed_ips": ["10.60.0.2/32"]},
        ]}))
        .unwrap();
    let py = mesh.nodes[0].peer(&y).unwrap().unwrap();
    assert_eq!(
        (
            py["endpoint"].clone(),
            py["has_preshared_key"].clone(),
            py["keepalive"].clone()
        ),
        (Value::Null, json!(false), Value::Null)
    );
    // G2: "remove X, add Z" in one update removes X only.
    mesh.nodes[0]
        .apply(json!({"remove": [x], "add": [{"public_key": z, "allowed_ips": ["10.60.0.3/32"]}]}))
        .unwrap();
    assert!(mesh.nodes[0].peer(&x).unwrap().is_none());
    assert!(mesh.nodes[0].peer(&z).unwrap().is_some());
    // G9: D takes B's mesh IP; B must no longer list it, so once D is gone a reconcile that
    // re-asserts B's allowed IPs brings traffic back (instead of a silent permanent blackhole).
    let b_ip = format!("{}/32", mesh_ip(&b));
    mesh.nodes[0]
        .apply(json!({"add": [{"public_key": d, "allowed_ips": [b_ip]}]}))
        .unwrap();
    let pb = mesh.nodes[0].peer(&mesh.keys[1].1).unwrap().unwrap();
    assert_eq!(
        pb["allowed_ips"],
        json!([]),
        "old owner still lists a moved prefix"
    );
    assert!(!a.ping(mesh_ip(&b)).unwrap(), "the prefix now belongs to D");
    mesh.nodes[0].apply(json!({"remove": [d], "update": [{"public_key": mesh.keys[1].1, "allowed_ips": [b_ip]}]})).unwrap();
    assert!(
        a.wait_reachable(mesh_ip(&b), Duration::from_secs(5))
            .unwrap(),
        "traffic to B did not come back"
    );
}

#[test]
fn modifying_a_live_peer_keeps_its_session_and_traffic() {
    if !lab::require_root() {
        return;
    }
    let lab = Lab::one_lan("dpmod", &["a", "b"]).unwrap();
    let mut mesh = Mesh::start(lab);
    mesh.connect_all();
    let (a, b) = (mesh.host(0).clone(), mesh.host(1).clone());
    start_echo(&b, "tcp-echo", 7000);
    assert!(
        a.wait_reachable(mesh_ip(&b), Duration::from_secs(10))
            .unwrap()
    );
    tcp_check(&a, &b, 1 << 16).unwrap();
    let before = mesh.nodes[0].peer(&mesh.keys[1].1).unwrap().unwrap();
    // A 16 MiB echo runs while A changes B's keepalive, endpoint (same address, re-sent),
    // allowed IPs (one more network) and PSK presence, each applied to the live peer.
    let bulk = exe()
        .in_host(&a, "tcp-check")
        .args([
            &format!("{}:7000", mesh_ip(&b)),
            &(16usize << 20).to_string(),
            "30000",
        ])
        .spawn()
        .unwrap();
    let key_b = mesh.keys[1].1.clone();
    let b_ip = format!("{}/32", mesh_ip(&b));
    let changes = [
        json!({"public_key": key_b, "keepalive": 5}),
        json!({"public_key": key_b, "endpoint": format!("{}:{WG_PORT}", b.ip())}),
        json!({"public_key": key_b, "allowed_ips": [b_ip, "10.61.0.0/24"]}),
        json!({"public_key": key_b, "keepalive": 25, "allowed_ips": [b_ip]}),
    ];
    for change in changes {
        let r = mesh.nodes[0].apply(json!({"update": [change]})).unwrap();
        assert_eq!(r["updated"], 1);
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = bulk
        .wait_timeout(Duration::from_secs(40))
        .unwrap()
        .expect("bulk transfer finished");
    assert!(
        status.success(),
        "transfer broke during live changes: {}",
        bulk.logs()
    );
    let after = mesh.nodes[0].peer(&mesh.keys[1].1).unwrap().unwrap();
    // The time is derived as now − elapsed, so it jitters by microseconds; a new handshake would
    // have moved it by at least the transfer's duration.
    let moved = after["last_handshake_unix"].as_f64().unwrap()
        - before["last_handshake_unix"].as_f64().unwrap();
    assert!(
        moved.abs() < 0.5,
        "a change forced a new handshake (moved {moved:.3} s)"
    );
    assert!(
        after["rx_bytes"].as_u64() > before["rx_bytes"].as_u64(),
        "counters were reset"
    );
    assert_eq!(after["keepalive"], 25);
}

#[test]
fn routes_reach_a_network_behind_a_peer_and_foreign_routes_survive() {
    if !lab::require_root() {
        return;
    }
    // A —LAN1— B —LAN2— C. Only A and B run WireGuard; C sits behind B.
    let lab = Lab::two_lans("dproute", &["a"], "b", &["c"]).unwrap();
    let (a, b, c) = (
        lab.host("a").clone(),
        lab.host("b").clone(),
        lab.host("c").clone(),
    );
    let mut na = LabNode::start(&exe(), &a).unwrap();
    let mut nb = LabNode::start(&exe(), &b).unwrap();
    na.up(WG_PORT, &["10.77.0.1/16"]).unwrap();
    nb.up(WG_PORT, &["10.77.0.2/16"]).unwrap();
    let (ka, kb) = (keypair(1), keypair(2));
    let lan2 = lab.lan_subnet(2).unwrap().to_string();
    na.apply(json!({"private_key": ka.0, "add": [{"public_key": kb.1, "endpoint": format!("{}:{WG_PORT}", b.ip()), "keepalive": 25, "allowed_ips": ["10.77.0.2/32", lan2]}]})).unwrap();
    nb.apply(json!({"private_key": kb.0, "add": [{"public_key": ka.1, "endpoint": format!("{}:{WG_PORT}", a.ip()), "keepalive": 25, "allowed_ips": ["10.77.0.1/32"]}]})).unwrap();
    // B routes between the tunnel and LAN2; C knows the way back to the mesh (test setup only).
    b.exec_ok("sysctl", &["-qw", "net.ipv4.ip_forward=1"])
        .unwrap();
    let b_lan2 = b.ip_on(2).unwrap().to_string();
    c.exec_ok("ip", &["route", "add", "10.77.0.0/16", "via", &b_lan2])
        .unwrap();
    // An operator's route on A's wg0, added before the daemon's first route sync.
    a.exec_ok("ip", &["route", "add", "10.55.0.0/16", "dev", "wg0"])
        .unwrap();

    assert!(
        !a.ping(c.ip()).unwrap(),
        "C must not be reachable before the route exists"
    );
    na.call(json!({"cmd": "sync_routes", "routes": [{"dst": lan2, "gateway": null}]}))
        .unwrap();
    assert!(
        a.wait_reachable(c.ip(), Duration::from_secs(10)).unwrap(),
        "route through the tunnel to C failed"
    );

    let routes = na.call(json!({"cmd": "routes"})).unwrap()["routes"].clone();
    let has = |dst: &str| {
        routes
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["dst"] == dst)
            .cloned()
    };
    assert_eq!(has(&lan2).expect("our route")["protocol"], 87);
    assert!(
        has("10.55.0.0/16").is_some(),
        "operator route vanished: {routes}"
    );
    // Withdrawing every route removes ours and leaves the operator's.
    na.call(json!({"cmd": "sync_routes", "routes": []}))
        .unwrap();
    let routes = na.call(json!({"cmd": "routes"})).unwrap()["routes"].clone();
    let dsts: Vec<&str> = routes
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["dst"].as_str())
        .collect();
    assert!(!dsts.contains(&lan2.as_str()), "{dsts:?}");
    assert!(dsts.contains(&"10.55.0.0/16"), "{dsts:?}");
    assert!(!a.ping(c.ip()).unwrap());
}

#[test]
fn auto_backend_picks_kernel_or_falls_back_to_userspace_and_says_why() {
    if !lab::require_root() {
        return;
    }
    let lab = Lab::one_lan("dpauto", &["a", "b"]).unwrap();
    let mut auto = LabNode::start(&exe(), lab.host("a")).unwrap();
    let up = auto
        .call(json!({"cmd": "up", "iface": "wg0", "backend": "auto", "listen_port": WG_PORT, "addresses": ["10.77.0.1/16"]}))
        .unwrap();
    let mut kernel = LabNode::start(&exe(), lab.host("b")).unwrap();
    let forced = kernel.call(json!({"cmd": "up", "iface": "wg0", "backend": "kernel", "listen_port": WG_PORT, "addresses": []}));
    if std::path::Path::new("/sys/module/wireguard").exists() {
        assert_eq!(up["backend"], "kernel");
        assert!(forced.is_ok());
    } else {
        assert_eq!(up["backend"], "userspace");
        let reason = up["reason"].as_str().unwrap();
        assert!(reason.contains("kernel WireGuard unavailable"), "{reason}");
        let err = forced.unwrap_err().to_string();
        assert!(err.contains("kernel WireGuard is not available"), "{err}");
    }
}
