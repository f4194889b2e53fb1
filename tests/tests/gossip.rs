//! End to end: in-mesh gossip (`--gossip`) and privacy mode (`--gossip --privacy`) with LAN
//! discovery off. Four hosts on one LAN; hosts 2–4 only know host 1 (`--peer <host 1>:<gossip
//! port>`). They must form a full mesh, every host must hear gossip (a peer with `gossip` in its
//! `discovered_via`), and with privacy every host shows its epoch with relays in `GET
//! /v1/status` while stems travel (the `privacy` layer reports successes) and fluffs spread the
//! origins as `gossip-transitive`. Each mode runs three times; the time to full mesh of each run
//! and the median are printed.
//!
//! Needs root; without it the tests are skipped, except under `CI=true` where they fail.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use wgmesh_api_types::Status;
use wgmesh_tests::daemon::{self, Daemon};
use wgmesh_tests::lab::{self, Host, Lab};
use wgmesh_tests::labnode_exe;
use wgmeshd::config::{MeshSecret, SecretOrigin};
use wgmeshd::crypto::DerivedKeys;

/// How long a daemon may take to serve its API after start.
const API_UP: Duration = Duration::from_secs(20);
/// How long the mesh may take to form.
const MESH_UP: Duration = Duration::from_secs(120);
/// How long until every host has heard gossip (one ANNOUNCE per node every 10 s).
const GOSSIP_HEARD: Duration = Duration::from_secs(90);
/// Runs per mode (the median is printed).
const RUNS: usize = 3;

// Failures panic (`unwrap`) rather than return `Err`: the lab prints every daemon's log when it is
// dropped during a panic.

/// The mesh's gossip (exchange) port, derived from the secret in `file`.
fn gossip_port(file: &Path) -> u16 {
    let text = std::fs::read_to_string(file).unwrap();
    let secret = MeshSecret::parse(text.trim(), SecretOrigin::File(file.to_owned())).unwrap();
    DerivedKeys::derive(&secret).gossip_port
}

/// Whether `host` lists a peer learned with one of `methods` (in its `discovered_via`).
fn heard_via(host: &Host, methods: &[&str]) -> bool {
    daemon::peers(host).unwrap().peers.iter().any(|p| {
        p.discovered_via
            .iter()
            .any(|m| methods.contains(&m.as_str()))
    })
}

/// Polls until every host of `hosts` lists a peer learned with one of `methods`.
fn wait_heard_via(hosts: &[&Host], methods: &[&str], timeout: Duration) {
    let ok = lab::wait_until(timeout, || hosts.iter().all(|h| heard_via(h, methods)));
    let missing: Vec<&str> = hosts
        .iter()
        .filter(|h| !heard_via(h, methods))
        .map(|h| h.name())
        .collect();
    assert!(
        ok && missing.is_empty(),
        "no peer learned via {methods:?} on {missing:?} within {timeout:?}"
    );
}

/// One lab: four daemons with `flags`, hosts 2–4 pointed at host 1. Checks the mesh and the
/// gossip (and privacy) evidence; returns the times from the start of the daemons to the full
/// mesh and to every host having heard gossip.
fn one_run(test: &str, flags: &[&str], privacy: bool) -> (Duration, Duration) {
    let exe = labnode_exe!();
    let lab = Lab::one_lan(test, &["h1", "h2", "h3", "h4"]).unwrap();
    let secret = lab.dir().join("mesh.secret");
    daemon::write_secret(&exe, &secret).unwrap();
    let first = format!("{}:{}", lab.host("h1").ip(), gossip_port(&secret));
    let mut args = vec!["--no-lan-discovery"];
    args.extend_from_slice(flags);
    let mut others = args.clone();
    others.extend_from_slice(&["--peer", &first]);
    let started = Instant::now();
    let daemons: Vec<Daemon> = lab
        .hosts()
        .iter()
        .map(|h| {
            let extra = if h.name() == "h1" { &args } else { &others };
            Daemon::start(&exe, h, &secret, extra).unwrap()
        })
        .collect();
    for d in &daemons {
        d.wait_api(API_UP).unwrap();
    }
    let hosts: Vec<&Host> = lab.hosts().iter().collect();
    daemon::wait_full_mesh(&hosts, MESH_UP)
        .with_context(|| format!("{test}: 4 hosts, {flags:?}"))
        .unwrap();
    let took = started.elapsed();

    // The gossip path works: every host hears ANNOUNCEs through the tunnel. In privacy mode a
    // node where the stems fluff may hear none itself (it sends them): it stores the origins as
    // `gossip-transitive` instead, and the others hear its ANNOUNCEs.
    let methods: &[&str] = if privacy {
        &["gossip", "gossip-transitive"]
    } else {
        &["gossip"]
    };
    wait_heard_via(&hosts, methods, GOSSIP_HEARD);
    let heard = started.elapsed();
    assert!(
        lab::wait_until(GOSSIP_HEARD, || hosts
            .iter()
            .any(|h| heard_via(h, &["gossip"]))),
        "no host heard an ANNOUNCE"
    );
    for h in &hosts {
        let st = daemon::status(h).unwrap();
        assert_eq!(
            st.discovery["gossip"].state,
            "running",
            "{}: {st:#?}",
            h.name()
        );
        assert!(
            st.discovery["gossip"].last_success_seconds_ago.is_some(),
            "{}: gossip never did its job",
            h.name()
        );
    }
    if privacy {
        check_privacy(&hosts);
    } else {
        for h in &hosts {
            let st = daemon::status(h).unwrap();
            assert_eq!(st.privacy, None, "{}", h.name());
            assert_eq!(st.discovery["privacy"].state, "off", "{}", h.name());
        }
    }
    (took, heard)
}

/// Privacy mode: every host shows an epoch with relays, its `privacy` layer has sent or relayed
/// stems, and fluffed origins reach the stores as `gossip-transitive`.
fn check_privacy(hosts: &[&Host]) {
    for h in hosts {
        let st: Status = daemon::wait_status(h, GOSSIP_HEARD, "an epoch with relays", |st| {
            st.privacy.as_ref().is_some_and(|p| !p.relays.is_empty())
                && st.discovery["privacy"].last_success_seconds_ago.is_some()
        })
        .unwrap();
        let p = st.privacy.as_ref().unwrap();
        assert!(p.epoch >= 1, "{}: {p:?}", h.name());
        assert!(
            p.relays.len() <= 2 && p.seconds_until_rotation <= 600,
            "{p:?}"
        );
        assert!(
            !p.relays.contains(&st.public_key),
            "{}: relays itself",
            h.name()
        );
        assert_eq!(st.discovery["privacy"].state, "running");
        eprintln!(
            "{}: epoch {}, relays {:?}, next rotation in {} s",
            h.name(),
            p.epoch,
            p.relays.iter().map(|k| &k[..8]).collect::<Vec<_>>(),
            p.seconds_until_rotation
        );
    }
    assert!(
        lab::wait_until(GOSSIP_HEARD, || hosts
            .iter()
            .any(|h| heard_via(h, &["gossip-transitive"]))),
        "no fluffed origin reached a store"
    );
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Runs `RUNS` labs of one mode and prints each time to full mesh and until every host heard
/// gossip, with the medians.
fn runs(mode: &str, test: &str, flags: &[&str], privacy: bool) {
    let (mesh, heard): (Vec<Duration>, Vec<Duration>) = (0..RUNS)
        .map(|i| one_run(&format!("{test}{i}"), flags, privacy))
        .unzip();
    let secs = |v: &[Duration]| {
        v.iter()
            .map(|t| format!("{:.1}", t.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(" s, ")
    };
    eprintln!(
        "{mode}: 4 hosts, only host 1 as --peer: full mesh after {} s (median {:.1} s of {RUNS} runs); every host heard gossip after {} s (median {:.1} s)",
        secs(&mesh),
        median(mesh.clone()).as_secs_f64(),
        secs(&heard),
        median(heard.clone()).as_secs_f64(),
    );
}

#[test]
fn four_hosts_that_only_know_host_1_mesh_and_gossip() {
    if !lab::require_root() {
        return;
    }
    runs("--gossip", "gsp", &["--gossip"], false);
}

#[test]
fn four_hosts_mesh_with_gossip_in_privacy_mode() {
    if !lab::require_root() {
        return;
    }
    runs(
        "--gossip --privacy",
        "gpr",
        &["--gossip", "--privacy"],
        true,
    );
}
