//! End to end: an introducer forwards between peers that cannot reach each other (defect 9 of
//! issue 7: `--introducer` advertised a relay that forwarded nothing).
//!
//! Topology [`Lab::two_lans`]: a (LAN 1 only), b (both LANs), c (LAN 2 only); a and c cannot
//! reach each other directly. b runs a real `wgmeshd join --introducer`. a and c play Go peers
//! that relay through b: `wgmesh-labnode serve` data planes with one WireGuard peer, b, whose
//! allowed IPs hold b's mesh /32 *and* the other side's mesh /32 (how Go routes a relayed peer
//! through an introducer's key). b's daemon learns them from sealed LAN ANNOUNCEs sent unicast to
//! its LAN socket. Firewalls in b are set up before its daemon starts; after it stops, the
//! forwarding sysctls must be back and no rule of ours may remain.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use wgmesh_tests::api::get_json;
use wgmesh_tests::lab::{self, Host, Lab, LabProcess};
use wgmesh_tests::node::{self, LabNode};
use wgmeshd::config::{MeshSecret, SecretOrigin};
use wgmeshd::crypto::{DerivedKeys, legacy_subnet, mesh_ipv4};

/// The daemon's LAN discovery port (it also takes unicast datagrams).
const LAN_PORT: u16 = 51830;
/// WireGuard port of the labnodes.
const PEER_PORT: u16 = 51820;
/// The daemon's interface (the default).
const IFACE: &str = "wg0";
/// Our rules' comment.
const OUR_COMMENT: &str = "wgmesh:wg0";
/// The sysctls an introducer switches, as files.
const SYSCTLS: [&str; 2] = [
    "/proc/sys/net/ipv4/ip_forward",
    "/proc/sys/net/ipv6/conf/all/forwarding",
];

/// What b's firewall looks like before its daemon starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Firewall {
    /// Nothing: every hook accepts.
    Open,
    /// nftables: `inet fw fwd` (policy drop) plus iptables-nft and ip6tables-nft `FORWARD`
    /// policies DROP (nftables chains `ip filter FORWARD`, `ip6 filter FORWARD`).
    Nftables,
    /// iptables-legacy `FORWARD` policy DROP, and `iptables` on the daemon's PATH is legacy.
    Legacy,
}

// ------------------------------------------------------------------------------------------
// daemon helpers (as in tests/mesh.rs)

fn write_secret(lab: &Lab) -> PathBuf {
    let out = wgmesh_tests::labnode_exe!()
        .wgmeshctl()
        .args(["secret", "new"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let path = lab.dir().join("mesh.secret");
    std::fs::write(&path, &out.stdout).unwrap();
    path
}

fn start_daemon(host: &Host, secret: &Path, introducer: bool, path: Option<&str>) -> LabProcess {
    let exe = wgmesh_tests::labnode_exe!();
    let mut cmd = exe
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
        .arg(host.socket_path());
    if introducer {
        cmd = cmd.arg("--introducer");
    }
    if let Some(path) = path {
        cmd = cmd.env("PATH", path);
    }
    cmd.spawn().unwrap()
}

fn stop_daemon(daemon: &LabProcess) {
    daemon.signal(libc::SIGTERM).unwrap();
    let status = daemon
        .wait_timeout(Duration::from_secs(15))
        .unwrap()
        .expect("wgmeshd exits on SIGTERM");
    assert!(
        status.success(),
        "exit status {status:?}: {}",
        daemon.logs_tail(40)
    );
    assert!(daemon.stderr().contains("Shutdown complete"));
}

fn peers(host: &Host) -> Vec<Value> {
    get_json(&host.socket_path(), "/v1/peers")
        .ok()
        .and_then(|v| v["peers"].as_array().cloned())
        .unwrap_or_default()
}

/// The daemon's public key, mesh IP and WireGuard port, once its API answers.
struct DaemonInfo {
    key: String,
    mesh_ip: Ipv4Addr,
    port: u16,
}

fn wait_up(host: &Host, daemon: &LabProcess) -> DaemonInfo {
    let mut st = None;
    assert!(
        lab::wait_until(Duration::from_secs(20), || {
            st = get_json(&host.socket_path(), "/v1/status").ok();
            st.is_some() || !daemon.is_running()
        }) && st.is_some(),
        "daemon on {} never served its API: {}",
        host.name(),
        daemon.logs_tail(40)
    );
    let st = st.unwrap();
    DaemonInfo {
        key: st["public_key"].as_str().unwrap().to_owned(),
        mesh_ip: st["mesh_ip"].as_str().unwrap().parse().unwrap(),
        port: st["listen_port"].as_u64().unwrap() as u16,
    }
}

fn labnode() -> String {
    wgmesh_tests::labnode_exe!()
        .path()
        .to_string_lossy()
        .into_owned()
}

// ------------------------------------------------------------------------------------------
// the relay set-up

/// A labnode playing a Go peer that relays through b.
struct GoPeer {
    /// Kept so the labnode runs on (it exits when its stdin closes, with the lab).
    _node: LabNode,
    key: String,
    mesh_ip: Ipv4Addr,
}

/// Everything about the mesh the labnodes need to know (derived like the daemon does).
struct Mesh {
    keys: DerivedKeys,
    secret: MeshSecret,
    secret_file: PathBuf,
}

impl Mesh {
    fn new(secret_file: PathBuf) -> Self {
        let text = std::fs::read_to_string(&secret_file).unwrap();
        let secret = MeshSecret::parse(&text, SecretOrigin::Literal).unwrap();
        Self {
            keys: DerivedKeys::derive(&secret),
            secret,
            secret_file,
        }
    }

    fn psk(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.keys.psk)
    }

    /// Key pair number `n` and its mesh IP, derived like the daemon derives it.
    fn identity(&self, n: u16) -> (String, String, Ipv4Addr) {
        let (private, public) = node::keypair(n);
        let ip = mesh_ipv4(&self.keys, &self.secret, &public, None);
        (private, public, ip)
    }
}

/// Starts a labnode in `host` with one peer, b (at `b_endpoint`), that carries b's mesh /32 and
/// `relayed` (the other side's mesh /32).
fn go_peer(
    host: &Host,
    mesh: &Mesh,
    n: u16,
    b: &DaemonInfo,
    b_endpoint: SocketAddr,
    relayed: Ipv4Addr,
) -> GoPeer {
    let (private, key, mesh_ip) = mesh.identity(n);
    let prefix = legacy_subnet(&mesh.keys).prefix_len();
    let mut node = LabNode::start(&wgmesh_tests::labnode_exe!(), host).unwrap();
    node.up(PEER_PORT, &[&format!("{mesh_ip}/{prefix}")])
        .unwrap();
    node.apply(json!({
        "private_key": private,
        "listen_port": PEER_PORT,
        "add": [{
            "public_key": b.key,
            "endpoint": b_endpoint.to_string(),
            "preshared_key": mesh.psk(),
            "keepalive": 25,
            "allowed_ips": [format!("{}/32", b.mesh_ip), format!("{relayed}/32")],
        }],
    }))
    .unwrap();
    GoPeer {
        _node: node,
        key,
        mesh_ip,
    }
}

/// Announces `peer` from `host` to b's LAN address `dest` until b's daemon lists it.
fn introduce(host: &Host, mesh: &Mesh, peer: &GoPeer, b: &Host, dest: Ipv4Addr) {
    let known = || {
        peers(b)
            .iter()
            .any(|p| p["public_key"] == peer.key.as_str())
    };
    let listed = lab::wait_until(Duration::from_secs(20), || {
        node::announce(
            &wgmesh_tests::labnode_exe!(),
            host,
            &mesh.secret_file,
            &peer.key,
            peer.mesh_ip,
            PEER_PORT,
            SocketAddr::from((dest, LAN_PORT)),
        )
        .unwrap();
        lab::wait_until(Duration::from_millis(500), known)
    });
    assert!(
        listed,
        "b's daemon never listed {} after its announcements",
        host.name()
    );
}

/// The lab with b's firewall in place and its daemon running, a and c known to it.
struct Relay {
    lab: Lab,
    mesh: Mesh,
    daemon: LabProcess,
    /// The sysctl values before b's daemon started.
    sysctls_before: Vec<String>,
    /// `nft -s list ruleset` in b before its daemon started.
    ruleset_before: String,
    /// `PATH` for b's daemon (legacy iptables first), if overridden.
    path: Option<String>,
    introducer: bool,
    a: GoPeer,
    c: GoPeer,
    b_info: DaemonInfo,
}

impl Relay {
    fn start(test: &str, firewall: Firewall, introducer: bool) -> Self {
        lab::require_tool("nft", "nftables");
        lab::require_tool("iptables", "iptables");
        let lab = Lab::two_lans(test, &["a"], "b", &["c"]).unwrap();
        let mesh = Mesh::new(write_secret(&lab));
        let path = set_up_firewall(&lab, firewall);
        let b = lab.host("b");
        let sysctls_before = sysctls(b);
        let ruleset_before = stateless_ruleset(b);
        let daemon = start_daemon(b, &mesh.secret_file, introducer, path.as_deref());
        let b_info = wait_up(b, &daemon);
        let mut relay = Self::join_peers(lab, mesh, daemon, b_info);
        relay.sysctls_before = sysctls_before;
        relay.ruleset_before = ruleset_before;
        relay.path = path;
        relay.introducer = introducer;
        relay
    }

    fn join_peers(lab: Lab, mesh: Mesh, daemon: LabProcess, b_info: DaemonInfo) -> Self {
        let (a_host, b_host, c_host) = (lab.host("a"), lab.host("b"), lab.host("c"));
        let (_, _, a_ip) = mesh.identity(1);
        let (_, _, c_ip) = mesh.identity(3);
        assert!(
            a_ip != c_ip && a_ip != b_info.mesh_ip && c_ip != b_info.mesh_ip,
            "mesh IP clash ({a_ip}, {c_ip}, {}): rerun",
            b_info.mesh_ip
        );
        let b_lan1 = b_host.ip_on(1).unwrap();
        let b_lan2 = b_host.ip_on(2).unwrap();
        let a = go_peer(
            a_host,
            &mesh,
            1,
            &b_info,
            SocketAddr::from((b_lan1, b_info.port)),
            c_ip,
        );
        let c = go_peer(
            c_host,
            &mesh,
            3,
            &b_info,
            SocketAddr::from((b_lan2, b_info.port)),
            a_ip,
        );
        introduce(a_host, &mesh, &a, b_host, b_lan1);
        introduce(c_host, &mesh, &c, b_host, b_lan2);
        Self {
            lab,
            mesh,
            daemon,
            sysctls_before: Vec::new(),
            ruleset_before: String::new(),
            path: None,
            introducer: true,
            a,
            c,
            b_info,
        }
    }

    fn host(&self, name: &str) -> &Host {
        self.lab.host(name)
    }

    /// Both labnodes reach b's mesh IP: their tunnels to b work.
    fn assert_tunnels_to_b(&self) {
        for side in ["a", "c"] {
            assert!(
                self.host(side)
                    .wait_reachable(self.b_info.mesh_ip, Duration::from_secs(20))
                    .unwrap(),
                "{side} cannot reach b's mesh IP: its tunnel to b is down"
            );
        }
    }

    /// a and c reach each other through b: ping both ways and a TCP transfer.
    fn assert_relayed(&self) {
        let (a, c) = (self.host("a"), self.host("c"));
        let reached = a
            .wait_reachable(self.c.mesh_ip, Duration::from_secs(30))
            .unwrap();
        if !reached {
            self.lab.print_logs(40);
        }
        assert!(reached, "a cannot reach c's mesh IP through b");
        assert!(
            c.wait_reachable(self.a.mesh_ip, Duration::from_secs(10))
                .unwrap(),
            "c cannot reach a's mesh IP through b"
        );
        let port = 7000;
        let echo = c
            .spawn(
                &labnode(),
                &["tcp-echo", &format!("{}:{port}", self.c.mesh_ip)],
                &[],
            )
            .unwrap();
        assert!(
            lab::wait_until(Duration::from_secs(5), || echo
                .stdout()
                .contains("listening")),
            "{}",
            echo.logs()
        );
        let out = a
            .command(labnode())
            .args([
                "tcp-check",
                &format!("{}:{port}", self.c.mesh_ip),
                "262144",
                "15000",
            ])
            .output_timeout(Duration::from_secs(20))
            .unwrap();
        assert!(
            out.status.success(),
            "TCP a -> c through b: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        echo.stop().unwrap();
    }

    /// Restarts b's daemon (same state directory, hence the same key) and re-announces a and c.
    fn restart_daemon(&mut self) {
        let b = self.lab.host("b");
        self.daemon = start_daemon(
            b,
            &self.mesh.secret_file,
            self.introducer,
            self.path.as_deref(),
        );
        let info = wait_up(b, &self.daemon);
        assert_eq!(info.key, self.b_info.key, "b's identity changed on restart");
        assert_eq!(info.port, self.b_info.port, "b's port changed on restart");
        let (b_lan1, b_lan2) = (b.ip_on(1).unwrap(), b.ip_on(2).unwrap());
        introduce(self.lab.host("a"), &self.mesh, &self.a, b, b_lan1);
        introduce(self.lab.host("c"), &self.mesh, &self.c, b, b_lan2);
    }
}

// ------------------------------------------------------------------------------------------
// firewall and sysctl inspection in b

/// Builds b's firewall; returns the daemon's `PATH` when `iptables` must be the legacy one.
fn set_up_firewall(lab: &Lab, firewall: Firewall) -> Option<String> {
    let b = lab.host("b");
    match firewall {
        Firewall::Open => None,
        Firewall::Nftables => {
            lab::require_tool("iptables-nft", "iptables");
            // JSON because nft 1.0's command-line grammar takes `fwd` for a keyword: the
            // daemon must (and does) handle any chain name.
            let rules = lab.dir().join("fw.json");
            let doc = json!({"nftables": [
                {"add": {"table": {"family": "inet", "name": "fw"}}},
                {"add": {"chain": {"family": "inet", "table": "fw", "name": "fwd",
                    "type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}}},
            ]});
            std::fs::write(&rules, doc.to_string()).unwrap();
            b.exec_ok("nft", &["-j", "-f", rules.to_str().unwrap()])
                .unwrap();
            b.exec_ok("iptables-nft", &["-P", "FORWARD", "DROP"])
                .unwrap();
            b.exec_ok("ip6tables-nft", &["-P", "FORWARD", "DROP"])
                .unwrap();
            None
        }
        Firewall::Legacy => {
            let legacy = lab::find_in_path("iptables-legacy").unwrap_or_else(|| {
                panic!("`iptables-legacy` is missing: install the package iptables")
            });
            let legacy6 = lab::find_in_path("ip6tables-legacy").unwrap_or_else(|| {
                panic!("`ip6tables-legacy` is missing: install the package iptables")
            });
            b.exec_ok("iptables-legacy", &["-P", "FORWARD", "DROP"])
                .unwrap();
            let bin = lab.dir().join("legacy-bin");
            std::fs::create_dir_all(&bin).unwrap();
            std::os::unix::fs::symlink(legacy, bin.join("iptables")).unwrap();
            std::os::unix::fs::symlink(legacy6, bin.join("ip6tables")).unwrap();
            let inherited = std::env::var("PATH").unwrap_or_default();
            Some(format!("{}:{inherited}", bin.display()))
        }
    }
}

fn stateless_ruleset(host: &Host) -> String {
    host.exec_ok("nft", &["-s", "list", "ruleset"]).unwrap()
}

fn sysctls(host: &Host) -> Vec<String> {
    SYSCTLS
        .iter()
        .map(|f| host.exec_ok("cat", &[f]).unwrap().trim().to_owned())
        .collect()
}

/// Every nftables rule with a `wgmesh:` comment, as (`family table chain`, position in the
/// chain, comment), sorted.
fn nft_ours(host: &Host) -> Vec<(String, usize, String)> {
    let text = host.exec_ok("nft", &["-j", "list", "ruleset"]).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let mut position: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    for item in doc["nftables"].as_array().unwrap() {
        let Some(rule) = item.get("rule") else {
            continue;
        };
        let chain = format!(
            "{} {} {}",
            rule["family"].as_str().unwrap(),
            rule["table"].as_str().unwrap(),
            rule["chain"].as_str().unwrap()
        );
        let pos = position.entry(chain.clone()).or_default();
        if let Some(comment) = rule["comment"].as_str()
            && comment.starts_with("wgmesh:")
        {
            out.push((chain, *pos, comment.to_owned()));
        }
        *pos += 1;
    }
    out.sort();
    out
}

/// `-A FORWARD` lines of an iptables program in `host`.
fn forward_rules(host: &Host, program: &str) -> Vec<String> {
    host.exec_ok(program, &["-S", "FORWARD"])
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("-A FORWARD"))
        .map(str::to_owned)
        .collect()
}

fn at_top_of(chains: &[&str]) -> Vec<(String, usize, String)> {
    let mut v: Vec<_> = chains
        .iter()
        .map(|c| ((*c).to_owned(), 0, OUR_COMMENT.to_owned()))
        .collect();
    v.sort();
    v
}

// ------------------------------------------------------------------------------------------
// tests

#[test]
fn an_introducer_relays_between_peers_that_cannot_reach_each_other() {
    if !lab::require_root() {
        return;
    }
    let relay = Relay::start("intro_open", Firewall::Open, true);
    let b = relay.host("b");
    assert_eq!(relay.sysctls_before, ["0", "0"]);
    assert_eq!(sysctls(b), ["1", "1"], "forwarding is not on");
    assert!(
        nft_ours(b).is_empty(),
        "a rule was added where no firewall drops"
    );
    relay.assert_relayed();
    stop_daemon(&relay.daemon);
    assert_eq!(sysctls(b), relay.sysctls_before, "sysctls not restored");
    let log = relay.daemon.stderr();
    assert!(
        log.contains("introducer: forwarding between peers") && log.contains("no rule needed"),
        "{log}"
    );
}

#[test]
fn an_introducer_opens_a_dropping_nftables_firewall_and_closes_it_at_exit() {
    if !lab::require_root() {
        return;
    }
    let mut relay = Relay::start("intro_nft", Firewall::Nftables, true);
    let chains = ["inet fw fwd", "ip filter FORWARD", "ip6 filter FORWARD"];
    let b = relay.host("b").clone();
    assert_eq!(
        nft_ours(&b),
        at_top_of(&chains),
        "our rule is not at the top of every dropping forward chain"
    );
    let iptables = forward_rules(&b, "iptables-nft");
    assert!(
        iptables
            .first()
            .is_some_and(|r| r.contains(IFACE) && r.contains(OUR_COMMENT)),
        "iptables-nft does not show our rule first: {iptables:?}"
    );
    relay.assert_relayed();

    stop_daemon(&relay.daemon);
    assert_eq!(sysctls(&b), relay.sysctls_before, "sysctls not restored");
    assert!(nft_ours(&b).is_empty(), "rules left: {:?}", nft_ours(&b));
    assert_eq!(
        stateless_ruleset(&b),
        relay.ruleset_before,
        "the operator's ruleset is not as it was"
    );
    assert!(
        b.exec_ok("iptables-nft", &["-S", "FORWARD"])
            .unwrap()
            .contains("-P FORWARD DROP")
    );

    // A crash leaves the rules; the next start removes the leftovers before adding its own,
    // so there is still exactly one per chain, and a clean stop removes them all.
    relay.restart_daemon();
    relay.daemon.kill().unwrap();
    assert_eq!(nft_ours(&b), at_top_of(&chains), "the crash took the rules");
    relay.restart_daemon();
    assert_eq!(
        nft_ours(&b),
        at_top_of(&chains),
        "leftovers were not replaced"
    );
    assert!(
        relay
            .daemon
            .stderr()
            .contains("removed firewall rules a previous run left behind")
    );
    relay.assert_tunnels_to_b();
    relay.assert_relayed();
    stop_daemon(&relay.daemon);
    assert!(nft_ours(&b).is_empty(), "rules left: {:?}", nft_ours(&b));
}

#[test]
fn an_introducer_opens_a_dropping_legacy_iptables_firewall() {
    if !lab::require_root() {
        return;
    }
    let relay = Relay::start("intro_legacy", Firewall::Legacy, true);
    let b = relay.host("b");
    let rules = forward_rules(b, "iptables-legacy");
    assert_eq!(
        rules,
        [format!(
            "-A FORWARD -i {IFACE} -o {IFACE} -m comment --comment \"{OUR_COMMENT}\" -j ACCEPT"
        )],
        "legacy FORWARD"
    );
    assert!(
        forward_rules(b, "ip6tables-legacy").is_empty(),
        "ip6tables FORWARD accepts: nothing to add there"
    );
    assert!(
        nft_ours(b).is_empty(),
        "nftables has no dropping chain here"
    );
    relay.assert_relayed();
    stop_daemon(&relay.daemon);
    assert!(
        forward_rules(b, "iptables-legacy").is_empty(),
        "legacy rule left behind"
    );
    assert_eq!(sysctls(b), relay.sysctls_before, "sysctls not restored");
}

#[test]
fn without_introducer_nothing_is_forwarded_or_changed() {
    if !lab::require_root() {
        return;
    }
    let relay = Relay::start("intro_none", Firewall::Nftables, false);
    let b = relay.host("b");
    relay.assert_tunnels_to_b();
    let a = relay.host("a");
    for _ in 0..3 {
        assert!(
            !a.ping(relay.c.mesh_ip).unwrap(),
            "b forwarded without --introducer"
        );
    }
    assert_eq!(sysctls(b), relay.sysctls_before, "a sysctl changed");
    assert_eq!(
        stateless_ruleset(b),
        relay.ruleset_before,
        "the ruleset changed"
    );
    stop_daemon(&relay.daemon);
    assert_eq!(
        stateless_ruleset(b),
        relay.ruleset_before,
        "the ruleset changed"
    );
    assert_eq!(sysctls(b), relay.sysctls_before, "a sysctl changed");
}
