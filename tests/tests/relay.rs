//! End to end: peers that cannot reach each other directly are relayed through an introducer
//! (issue 10, relay routing).
//!
//! Topology [`Lab::two_lans`]: a (LAN 1 only), b (both LANs, `--introducer`), c (LAN 2 only).
//! LAN discovery makes b know a and c; the exchange tells a about c and c about a (as
//! `dht-transitive`), but a's packets never reach c's LAN. a and c must decide to relay each
//! other through b, carry TCP over their mesh IPs through it, and say so in `GET /v1/peers`.

use std::time::{Duration, Instant};

use wgmesh_api_types::Peer;
use wgmesh_tests::daemon::{self, Daemon};
use wgmesh_tests::lab::{self, Host, Lab};
use wgmesh_tests::labnode_exe;

/// How long a daemon may take to serve its API after start.
const API_UP: Duration = Duration::from_secs(20);
/// How long a and c may take to list each other as relayed through b.
const RELAYED: Duration = Duration::from_secs(60);

/// The entry for `key` in `host`'s peer list, if listed (an API error fails the test).
fn listed(host: &Host, key: &str) -> Option<Peer> {
    daemon::peer(host, key).unwrap()
}

#[test]
fn peers_on_two_lans_talk_through_the_introducer() {
    if !lab::require_root() {
        return;
    }
    let lab = Lab::two_lans("relay_two", &["a"], "b", &["c"]).unwrap();
    let (a, b, c) = (lab.host("a"), lab.host("b"), lab.host("c"));
    let exe = labnode_exe!();
    let secret = lab.dir().join("mesh.secret");
    daemon::write_secret(&exe, &secret).unwrap();
    let started = Instant::now();
    let daemons = [
        Daemon::start(&exe, a, &secret, &[]).unwrap(),
        Daemon::start(&exe, b, &secret, &["--introducer"]).unwrap(),
        Daemon::start(&exe, c, &secret, &[]).unwrap(),
    ];
    let st: Vec<_> = daemons
        .iter()
        .map(|d| d.wait_api(API_UP).unwrap())
        .collect();
    let (key_a, key_b, key_c) = (&st[0].public_key, &st[1].public_key, &st[2].public_key);

    // a lists c relayed via b, and c lists a relayed via b.
    let relayed = |host: &Host, key: &str| {
        listed(host, key).is_some_and(|p| {
            p.path.as_deref() == Some("relay") && p.relay_via.as_deref() == Some(key_b.as_str())
        })
    };
    let both = lab::wait_until(RELAYED, || relayed(a, key_c) && relayed(c, key_a));
    assert!(
        both,
        "a and c did not relay each other through b within {RELAYED:?}\na lists {:#?}\nc lists {:#?}",
        daemon::peers(a).unwrap().peers,
        daemon::peers(c).unwrap().peers
    );
    let decided = started.elapsed();
    // Traffic: TCP both ways between a and c (and with b), over the mesh IPs.
    daemon::tcp_every_pair(&exe, &[a, b, c]).unwrap();
    eprintln!(
        "relay: a and c relayed through b {:.2} s after start; TCP between every pair passed {:.2} s after start",
        decided.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    // b itself is reached directly by both, on their LAN.
    for (host, key) in [(a, key_b), (c, key_b)] {
        let p = listed(host, key).unwrap();
        assert_eq!(p.path.as_deref(), Some("lan"), "{p:?}");
        assert_eq!(p.relay_via, None, "{p:?}");
    }
    // c's own entry on a is kept (make-before-break): endpoint known, still trying direct.
    let c_on_a = listed(a, key_c).unwrap();
    assert!(c_on_a.endpoint.is_some(), "{c_on_a:?}");
    let logs = daemons[0].process().logs();
    assert!(logs.contains("relaying peer"), "{logs}");
}
