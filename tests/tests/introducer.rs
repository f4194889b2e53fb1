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
use wgmesh_api_types::Status;
use wgmesh_tests::daemon::{self, Daemon};
use wgmesh_tests::lab::{self, Host, Lab};
use wgmesh_tests::labnode_exe;
use wgmesh_tests::node::{self, LabNode};
use wgmeshd::config::{MeshSecret, SecretOrigin};
use wgmeshd::crypto::{DerivedKeys, legacy_subnet, mesh_ipv4};

/// The daemon's LAN discovery port (it also takes unicast datagrams).
const LAN_PORT: u16 = 51830;
/// WireGuard port of the labnodes.
const PEER_PORT: u16 = 51820;
/// How long b's daemon may take to serve its API after start.
const API_UP: Duration = Duration::from_secs(20);
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
// b's daemon
//
// Failures panic (`unwrap`) rather than return `Err`: the lab prints every process's log when it
// is dropped during a panic. Every API call must succeed: a daemon that crashed or does not answer
// fails the test (naming its host) instead of reading as "does not list the peer yet".

/// What the labnodes need to know of b's daemon, from its status.
struct DaemonInfo {
    key: String,
    mesh_ip: Ipv4Addr,
    port: u16,
}

impl DaemonInfo {
    fn of(status: &Status) -> Self {
        Self {
            key: status.public_key.clone(),
            mesh_ip: status
                .mesh_ip
                .parse()
                .unwrap_or_else(|e| panic!("b's mesh_ip {:?}: {e}", status.mesh_ip)),
            port: status.listen_port,
        }
    }
}

/// Starts b's daemon (with `--introducer` if `introducer`, `path` as its `PATH` if given) and
/// waits for its API.
fn start_daemon(
    b: &Host,
    secret: &Path,
    introducer: bool,
    path: Option<&str>,
) -> (Daemon, DaemonInfo) {
    let args: &[&str] = if introducer { &["--introducer"] } else { &[] };
    let envs: Vec<(&str, &str)> = path.map(|p| ("PATH", p)).into_iter().collect();
    let daemon = Daemon::start_with_env(&labnode_exe!(), b, secret, args, &envs).unwrap();
    let status = daemon.wait_api(API_UP).unwrap();
    assert_eq!(
        status.introducer, introducer,
        "b's status reports introducer {}",
        status.introducer
    );
    (daemon, DaemonInfo::of(&status))
}

/// Stops `daemon` with SIGTERM: it must exit within 15 s, successfully, after a clean shutdown.
fn stop_daemon(daemon: &Daemon) {
    daemon.process().signal(libc::SIGTERM).unwrap();
    wait_clean_exit(daemon);
}

/// Stops `daemon` with two SIGTERMs while its API is held open by a client that never finishes
/// its request (so the first one's wait for the tasks lasts seconds): the second one must cut
/// that wait short, and the daemon must still tear down and exit successfully.
fn stop_daemon_twice(daemon: &Daemon) {
    use std::io::Write as _;
    let mut stuck = std::os::unix::net::UnixStream::connect(daemon.host().socket_path()).unwrap();
    stuck
        .write_all(b"GET /v1/status HTTP/1.1\r\nHost: wgmeshd\r\n")
        .unwrap();
    let process = daemon.process();
    let started = std::time::Instant::now();
    process.signal(libc::SIGTERM).unwrap();
    assert!(
        lab::wait_until(Duration::from_secs(5), || process
            .stderr()
            .contains("Shutting down; waiting for background tasks")),
        "the first signal did not start the shutdown"
    );
    assert!(
        process.is_running(),
        "the API drain did not hold the shutdown open"
    );
    process.signal(libc::SIGTERM).unwrap();
    wait_clean_exit(daemon);
    assert!(
        process
            .stderr()
            .contains("second signal: not waiting for the tasks; tearing down now"),
        "{}",
        process.logs_tail(40)
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the second signal did not cut the wait short ({:?})",
        started.elapsed()
    );
    drop(stuck);
}

/// Waits for `daemon` to exit within 15 s, successfully, after its teardown.
fn wait_clean_exit(daemon: &Daemon) {
    let process = daemon.process();
    let status = process
        .wait_timeout(Duration::from_secs(15))
        .unwrap()
        .unwrap_or_else(|| {
            panic!(
                "wgmeshd on {} did not exit within 15 s of SIGTERM:\n{}",
                daemon.host().name(),
                process.logs_tail(40)
            )
        });
    assert!(
        status.success(),
        "wgmeshd on {}: exit status {status:?}: {}",
        daemon.host().name(),
        process.logs_tail(40)
    );
    assert!(
        process.stderr().contains("Shutdown complete"),
        "wgmeshd on {} did not shut down cleanly:\n{}",
        daemon.host().name(),
        process.logs_tail(40)
    );
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
    let mut node = LabNode::start(&labnode_exe!(), host).unwrap();
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

/// Announces `peer` from `host` to b's LAN address `dest` until b's daemon lists it (again every
/// 500 ms: a datagram may be lost). Retries only while b does not list it; an API error fails.
fn introduce(host: &Host, mesh: &Mesh, peer: &GoPeer, b: &Host, dest: Ipv4Addr) {
    let exe = labnode_exe!();
    let listed = lab::wait_until(Duration::from_secs(20), || {
        node::announce(
            &exe,
            host,
            &mesh.secret_file,
            &peer.key,
            peer.mesh_ip,
            PEER_PORT,
            SocketAddr::from((dest, LAN_PORT)),
        )
        .unwrap();
        lab::wait_until(Duration::from_millis(500), || {
            daemon::peer(b, &peer.key).unwrap().is_some()
        })
    });
    assert!(
        listed,
        "b's daemon never listed {} ({}) after its announcements; it lists {:#?}",
        host.name(),
        peer.key,
        daemon::peers(b).unwrap().peers
    );
}

/// The lab with b's firewall in place and its daemon running, a and c known to it.
struct Relay {
    lab: Lab,
    mesh: Mesh,
    daemon: Daemon,
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
        let secret_file = lab.dir().join("mesh.secret");
        daemon::write_secret(&labnode_exe!(), &secret_file).unwrap();
        let mesh = Mesh::new(secret_file);
        let path = set_up_firewall(&lab, firewall);
        let (a_host, b_host, c_host) = (lab.host("a"), lab.host("b"), lab.host("c"));
        let sysctls_before = sysctls(b_host);
        let ruleset_before = stateless_ruleset(b_host);
        let (daemon, b_info) = start_daemon(b_host, &mesh.secret_file, introducer, path.as_deref());

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
            sysctls_before,
            ruleset_before,
            path,
            introducer,
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
        let exe = labnode_exe!();
        let (a, c) = (self.host("a"), self.host("c"));
        assert!(
            a.wait_reachable(self.c.mesh_ip, Duration::from_secs(30))
                .unwrap(),
            "a cannot reach c's mesh IP through b"
        );
        assert!(
            c.wait_reachable(self.a.mesh_ip, Duration::from_secs(10))
                .unwrap(),
            "c cannot reach a's mesh IP through b"
        );
        let port = 7000;
        let echo = exe
            .in_host(c, "tcp-echo")
            .arg(format!("{}:{port}", self.c.mesh_ip))
            .spawn()
            .unwrap();
        assert!(
            lab::wait_until(Duration::from_secs(5), || echo
                .stdout()
                .contains("listening")),
            "{}",
            echo.logs()
        );
        let out = exe
            .in_host(a, "tcp-check")
            .args([&format!("{}:{port}", self.c.mesh_ip), "262144", "15000"])
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
        let (daemon, info) = start_daemon(
            b,
            &self.mesh.secret_file,
            self.introducer,
            self.path.as_deref(),
        );
        assert_eq!(info.key, self.b_info.key, "b's identity changed on restart");
        assert_eq!(info.port, self.b_info.port, "b's port changed on restart");
        self.daemon = daemon;
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
    let log = relay.daemon.process().stderr();
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
    relay.daemon.process().kill().unwrap();
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
            .process()
            .stderr()
            .contains("removed firewall rules a previous run left behind")
    );
    relay.assert_tunnels_to_b();
    relay.assert_relayed();
    stop_daemon(&relay.daemon);
    assert!(nft_ours(&b).is_empty(), "rules left: {:?}", nft_ours(&b));
    // The crashed run switched forwarding on; the original values were recorded before that, so
    // the run after it still restores them, not the crashed run's leftovers.
    assert_eq!(
        sysctls(&b),
        relay.sysctls_before,
        "sysctls after a crash and a clean run"
    );

    // A crash, then a start as a plain node: it restores the settings and removes the rules at
    // once, and changes nothing itself.
    relay.restart_daemon();
    relay.daemon.process().kill().unwrap();
    assert_eq!(sysctls(&b), ["1", "1"], "the crash restored the sysctls");
    relay.introducer = false;
    relay.restart_daemon();
    assert!(
        nft_ours(&b).is_empty(),
        "leftovers kept: {:?}",
        nft_ours(&b)
    );
    assert_eq!(
        sysctls(&b),
        relay.sysctls_before,
        "sysctls of the crashed run kept"
    );
    assert!(
        relay
            .daemon
            .process()
            .stderr()
            .contains("the last run as an introducer did not clean up")
    );
    stop_daemon(&relay.daemon);
    assert_eq!(
        stateless_ruleset(&b),
        relay.ruleset_before,
        "the operator's ruleset is not as it was"
    );
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
    // Two signals: the daemon stops waiting for its tasks, but still tears down.
    stop_daemon_twice(&relay.daemon);
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
