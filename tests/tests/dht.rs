//! End to end: discovery through the mainline DHT, with a DHT bootstrap node inside the lab
//! (`wgmesh-labnode dht-node`) and LAN discovery off, so the DHT is the only way the daemons can
//! meet; nothing leaves the lab.
//!
//! - three hosts whose only bootstrap is that node form a full mesh (three runs; the time to the
//!   full mesh is printed, with the median);
//! - a daemon whose only bootstrap does not answer, or does not resolve, keeps running with the
//!   `dht` layer `retrying` and the reason in `GET /v1/status`;
//! - 100 000 garbage datagrams at a daemon's DHT port change nothing: the API answers, no peer
//!   appears or goes, memory stays bounded (RSS printed before and after).
//!
//! Needs root; without it the tests are skipped, except under `CI=true` where they fail.

use std::time::{Duration, Instant};

use wgmesh_api_types::{LayerStatus, Status};
use wgmesh_tests::daemon::{self, Daemon};
use wgmesh_tests::lab::{self, Host, Lab};
use wgmesh_tests::{Exe, labnode_exe};

/// How long a daemon may take to serve its API after start.
const API_UP: Duration = Duration::from_secs(20);
/// How long the mesh may take to form (the DHT queries every 30 s; the first round is enough).
const MESH_UP: Duration = Duration::from_secs(60);
/// How long the `dht` layer may take to reach a state.
const DHT_STATE: Duration = Duration::from_secs(30);
/// The lab DHT node's port (the usual DHT port).
const BOOT_PORT: u16 = 6881;
/// Garbage datagrams sent at the DHT port.
const GARBAGE: u64 = 100_000;

// Failures panic (`unwrap`) rather than return `Err`: the lab prints every daemon's log when it is
// dropped during a panic.

/// Starts the lab's DHT bootstrap node on `host`; returns its address once it listens.
fn start_dht_node(exe: &Exe, host: &Host) -> String {
    let addr = format!("{}:{BOOT_PORT}", host.ip());
    let node = exe
        .in_host(host, "dht-node")
        .args(["--bind", &addr])
        .spawn()
        .unwrap();
    assert!(
        lab::wait_until(Duration::from_secs(10), || node
            .stdout()
            .contains("listening")),
        "the DHT node on {} did not start: {}",
        host.name(),
        node.logs()
    );
    addr
}

/// Starts a daemon with LAN discovery off and `bootstrap` as its only DHT bootstrap node.
fn start_daemon(exe: &Exe, lab: &Lab, host: &Host, bootstrap: &str) -> Daemon {
    let secret = lab.dir().join("mesh.secret");
    if !secret.exists() {
        daemon::write_secret(exe, &secret).unwrap();
    }
    Daemon::start(
        exe,
        host,
        &secret,
        &["--no-lan-discovery", "--dht-bootstrap", bootstrap],
    )
    .unwrap()
}

/// `discovery.dht` of a status; panics when it has none.
fn dht_layer(status: &Status) -> &LayerStatus {
    status
        .discovery
        .get("dht")
        .unwrap_or_else(|| panic!("no discovery.dht in {status:#?}"))
}

/// Waits until `host`'s `dht` layer satisfies `cond`; returns it.
fn wait_dht(host: &Host, what: &str, cond: impl Fn(&LayerStatus) -> bool) -> LayerStatus {
    let st = daemon::wait_status(host, DHT_STATE, what, |st| {
        st.discovery.get("dht").is_some_and(&cond)
    })
    .unwrap();
    dht_layer(&st).clone()
}

/// The DHT port in a running layer's detail (`UDP <port>, …`).
fn dht_port(layer: &LayerStatus) -> u16 {
    let detail = layer.detail.as_deref().unwrap_or_default();
    detail
        .strip_prefix("UDP ")
        .and_then(|d| d.split(',').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in the dht detail {detail:?}"))
}

/// Resident memory of a process in KiB (`VmRSS` of `/proc/PID/status`).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS for pid {pid}"))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// One run of the mesh test on a fresh lab; returns the seconds from the daemons' start to the
/// full mesh.
fn dht_mesh_run(exe: &Exe, run: usize) -> f64 {
    let lab = Lab::one_lan(&format!("dht_mesh{run}"), &["boot", "a", "b", "c"]).unwrap();
    let boot = start_dht_node(exe, lab.host("boot"));
    let hosts: Vec<&Host> = ["a", "b", "c"].iter().map(|n| lab.host(n)).collect();
    let started = Instant::now();
    let daemons: Vec<Daemon> = hosts
        .iter()
        .map(|h| start_daemon(exe, &lab, h, &boot))
        .collect();
    for d in &daemons {
        d.wait_api(API_UP).unwrap();
    }
    daemon::wait_full_mesh(&hosts, MESH_UP).unwrap();
    let seconds = started.elapsed().as_secs_f64();
    eprintln!("dht run {run}: full mesh of 3 hosts {seconds:.2} s after start");
    daemon::tcp_every_pair(exe, &hosts).unwrap();
    // Every peer came through the DHT (the exchange stores a HELLO's sender as `dht` too), and
    // every layer says what it did.
    for h in &hosts {
        for p in daemon::peers(h).unwrap().peers {
            assert!(
                p.discovered_via.iter().any(|m| m == "dht"),
                "{}: peer {} via {:?}",
                h.name(),
                p.hostname,
                p.discovered_via
            );
        }
        let layer = wait_dht(h, "dht running", |l| l.state == "running");
        let detail = layer.detail.unwrap_or_default();
        assert!(detail.contains("announced"), "{}: {detail}", h.name());
        assert!(layer.last_success_seconds_ago.is_some(), "{}", h.name());
        eprintln!("  {}: {detail}", h.name());
    }
    seconds
}

#[test]
fn three_hosts_whose_only_bootstrap_is_a_lab_dht_node_form_a_full_mesh() {
    if !lab::require_root() {
        return;
    }
    let exe = labnode_exe!();
    let times: Vec<f64> = (1..=3).map(|run| dht_mesh_run(&exe, run)).collect();
    eprintln!(
        "dht: time to full mesh of 3 hosts: {} s; median {:.2} s",
        times
            .iter()
            .map(|t| format!("{t:.2}"))
            .collect::<Vec<_>>()
            .join(", "),
        median(times.clone())
    );
}

#[test]
fn a_daemon_whose_bootstrap_does_not_answer_or_resolve_keeps_running_and_says_why() {
    if !lab::require_root() {
        return;
    }
    let exe = labnode_exe!();
    let lab = Lab::one_lan("dht_silent", &["a", "b", "quiet"]).unwrap();
    let (a, b) = (lab.host("a"), lab.host("b"));
    // Nothing listens there: the host answers with ICMP port unreachable.
    let silent = format!("{}:{BOOT_PORT}", lab.host("quiet").ip());
    // Lab hosts have no route to a name server: the lookup fails on the host itself.
    let unresolvable = "no-such-dht-node.invalid:6881";
    let da = start_daemon(&exe, &lab, a, &silent);
    let db = start_daemon(&exe, &lab, b, unresolvable);
    da.wait_api(API_UP).unwrap();
    db.wait_api(API_UP).unwrap();
    let want_a = format!("no DHT bootstrap node answered (tried {silent})");
    let layer = wait_dht(a, "retrying: no answer", |l| {
        l.state == "retrying" && l.last_error.as_deref() == Some(want_a.as_str())
    });
    eprintln!("a: dht {} — {:?}", layer.state, layer.last_error);
    let want_b = format!("no DHT bootstrap node resolves: {unresolvable} (");
    let layer = wait_dht(b, "retrying: no name", |l| {
        l.state == "retrying"
            && l.last_error
                .as_deref()
                .is_some_and(|e| e.starts_with(&want_b))
    });
    eprintln!("b: dht {} — {:?}", layer.state, layer.last_error);
    // Still running and still retrying after the first backoff: the daemon did not give up.
    std::thread::sleep(Duration::from_secs(8));
    for (d, want) in [(&da, &want_a), (&db, &want_b)] {
        assert!(
            d.process().try_wait().unwrap().is_none(),
            "the daemon exited"
        );
        let st = d.status().unwrap();
        let layer = dht_layer(&st);
        assert_eq!(layer.state, "retrying", "{layer:?}");
        assert!(
            layer
                .last_error
                .as_deref()
                .unwrap_or_default()
                .starts_with(want.as_str()),
            "{layer:?}"
        );
        assert!(layer.last_success_seconds_ago.is_none(), "{layer:?}");
        let task = st.tasks.iter().find(|t| t.name == "dht").unwrap();
        assert_eq!(
            task.state, "running",
            "the task itself never fails: {task:?}"
        );
    }
}

#[test]
fn garbage_at_the_dht_port_changes_nothing() {
    if !lab::require_root() {
        return;
    }
    let exe = labnode_exe!();
    let lab = Lab::one_lan("dht_garbage", &["boot", "a", "b", "x"]).unwrap();
    let boot = start_dht_node(&exe, lab.host("boot"));
    let (a, b, x) = (lab.host("a"), lab.host("b"), lab.host("x"));
    let da = start_daemon(&exe, &lab, a, &boot);
    let db = start_daemon(&exe, &lab, b, &boot);
    da.wait_api(API_UP).unwrap();
    db.wait_api(API_UP).unwrap();
    daemon::wait_full_mesh(&[a, b], MESH_UP).unwrap();
    let layer = wait_dht(a, "dht running", |l| l.state == "running");
    let port = dht_port(&layer);
    let peers_before: Vec<String> = daemon::peers(a)
        .unwrap()
        .peers
        .into_iter()
        .map(|p| p.public_key)
        .collect();
    let pid = da.process().pid();
    let rss_before = rss_kib(pid);

    let target = std::net::SocketAddr::from((a.ip(), port));
    let started = Instant::now();
    let out = exe
        .in_host(x, "udp-garbage")
        .args([&target.to_string(), &GARBAGE.to_string()])
        .output_timeout(Duration::from_secs(300))
        .unwrap();
    assert!(
        out.status.success(),
        "udp-garbage: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The API answers while the datagrams are still being read.
    let answered = Instant::now();
    let st = da.status().unwrap();
    let api_ms = answered.elapsed().as_millis();
    eprintln!(
        "garbage: {} to {target} in {:.2} s; GET /v1/status right after took {api_ms} ms",
        String::from_utf8_lossy(&out.stdout).trim(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(dht_layer(&st).state, "running");
    std::thread::sleep(Duration::from_secs(2));
    let rss_after = rss_kib(pid);
    eprintln!(
        "garbage: wgmeshd RSS before {rss_before} KiB, after {rss_after} KiB ({:+} KiB)",
        rss_after as i64 - rss_before as i64
    );
    assert!(
        rss_after < rss_before + 64 * 1024,
        "memory grew by more than 64 MiB: {rss_before} -> {rss_after} KiB"
    );
    let peers_after: Vec<String> = daemon::peers(a)
        .unwrap()
        .peers
        .into_iter()
        .map(|p| p.public_key)
        .collect();
    assert_eq!(peers_before, peers_after, "the peer store changed");
    assert!(
        da.process().try_wait().unwrap().is_none(),
        "the daemon exited"
    );
    daemon::wait_full_mesh(&[a, b], MESH_UP).unwrap();
    // The DHT still works for a newcomer.
    let c = lab.host("x");
    let dc = start_daemon(&exe, &lab, c, &boot);
    dc.wait_api(API_UP).unwrap();
    daemon::wait_full_mesh(&[a, b, c], MESH_UP).unwrap();
}
