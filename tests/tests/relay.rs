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
use wgmesh_tests::lab::{self, Host, Lab, NatKind};
use wgmesh_tests::labnode_exe;

/// How long a daemon may take to serve its API after start.
const API_UP: Duration = Duration::from_secs(20);
/// How long a and c may take to list each other as relayed through b.
const RELAYED: Duration = Duration::from_secs(60);
/// How long a and c may take to go back to direct once a direct path exists: the next direct
/// retry (25 s) plus three passes with the fresh handshake (5 s each), with slack.
/// How long a pair whose direct path broke may take to go back through the relay.
const RELAYED_AFTER_CUT: Duration = Duration::from_secs(60);
const BACK_TO_DIRECT: Duration = Duration::from_secs(75);

/// The lab's STUN port.
const STUN_PORT: u16 = 3478;
/// How long the NATed hosts may take to settle on their path to each other.
const NAT_SETTLED: Duration = Duration::from_secs(90);

/// The entry for `key` in `host`'s peer list, if listed (an API error fails the test).
fn listed(host: &Host, key: &str) -> Option<Peer> {
    daemon::peer(host, key).unwrap()
}

/// The path `host` lists for `key`: (`path`, `relay_via`).
fn path_of(host: &Host, key: &str) -> (Option<String>, Option<String>) {
    listed(host, key).map_or((None, None), |p| (p.path, p.relay_via))
}

/// a, b (`--introducer`), c on two LANs, daemons started and serving; their statuses.
fn two_lans(name: &str) -> (Lab, Vec<Daemon>, Vec<wgmesh_api_types::Status>, Instant) {
    let lab = Lab::two_lans(name, &["a"], "b", &["c"]).unwrap();
    let exe = labnode_exe!();
    let secret = lab.dir().join("mesh.secret");
    daemon::write_secret(&exe, &secret).unwrap();
    let started = Instant::now();
    let daemons = vec![
        Daemon::start(&exe, lab.host("a"), &secret, &[]).unwrap(),
        Daemon::start(&exe, lab.host("b"), &secret, &["--introducer"]).unwrap(),
        Daemon::start(&exe, lab.host("c"), &secret, &[]).unwrap(),
    ];
    let st = daemons
        .iter()
        .map(|d| d.wait_api(API_UP).unwrap())
        .collect();
    (lab, daemons, st, started)
}

#[test]
fn peers_on_two_lans_talk_through_the_introducer() {
    if !lab::require_root() {
        return;
    }
    let (lab, daemons, st, started) = two_lans("relay_two");
    let (a, b, c) = (lab.host("a"), lab.host("b"), lab.host("c"));
    let exe = labnode_exe!();
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
    // Health: the probes through b show c online; the reasons say why it is relayed.
    let online = lab::wait_until(Duration::from_secs(10), || {
        listed(a, key_c).is_some_and(|p| {
            p.health == "online" && p.reasons.iter().any(|r| r == "no_direct_handshake")
        })
    });
    assert!(online, "{:#?}", listed(a, key_c));
    let logs = daemons[0].process().logs();
    assert!(logs.contains("relaying peer"), "{logs}");
}

#[test]
fn a_relayed_pair_goes_direct_once_a_direct_path_exists() {
    if !lab::require_root() {
        return;
    }
    let (lab, _daemons, st, _) = two_lans("relay_heal");
    let (a, b, c) = (lab.host("a"), lab.host("b"), lab.host("c"));
    let (key_a, key_b, key_c) = (&st[0].public_key, &st[1].public_key, &st[2].public_key);
    let via_b = (Some("relay".to_owned()), Some(key_b.clone()));
    let relayed = lab::wait_until(RELAYED, || {
        path_of(a, key_c) == via_b && path_of(c, key_a) == via_b
    });
    assert!(
        relayed,
        "a: {:?}, c: {:?}",
        path_of(a, key_c),
        path_of(c, key_a)
    );
    // A direct path appears: plain IP routes through b (an introducer forwards anyway), outside
    // the tunnel. a's and c's own WireGuard entries for each other must start handshaking.
    let (lan1, lan2) = (lab.lan_subnet(1).unwrap(), lab.lan_subnet(2).unwrap());
    let (b1, b2) = (
        b.ip_on(1).unwrap().to_string(),
        b.ip_on(2).unwrap().to_string(),
    );
    a.exec_ok("ip", &["route", "add", &lan2.to_string(), "via", &b1])
        .unwrap();
    c.exec_ok("ip", &["route", "add", &lan1.to_string(), "via", &b2])
        .unwrap();
    assert!(
        a.wait_reachable(c.ip_on(2).unwrap(), Duration::from_secs(5))
            .unwrap()
    );
    let healed = Instant::now();
    // Traffic during the switch: pings a -> c over the mesh every 0.2 s.
    let c_mesh = daemon::mesh_ip(c).unwrap();
    let pings = a
        .spawn(
            "ping",
            &["-n", "-i", "0.2", "-c", "400", &c_mesh.to_string()],
            &[],
        )
        .unwrap();
    let direct = (Some("direct".to_owned()), None);
    let back = lab::wait_until(BACK_TO_DIRECT, || {
        path_of(a, key_c) == direct && path_of(c, key_a) == direct
    });
    assert!(
        back,
        "a and c did not go direct within {BACK_TO_DIRECT:?} of the direct path appearing\na lists c {:#?}\nc lists a {:#?}",
        listed(a, key_c),
        listed(c, key_a)
    );
    let switched = healed.elapsed();
    // Both handshaked directly, and traffic flows on the direct entries now.
    for (host, key) in [(a, key_c), (c, key_a)] {
        let p = listed(host, key).unwrap();
        assert!(
            p.last_handshake_seconds_ago.is_some_and(|s| s < 150),
            "{p:?}"
        );
    }
    daemon::tcp_every_pair(&labnode_exe!(), &[a, c]).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    pings.kill().unwrap();
    let out = pings.stdout();
    let replies = out.matches("bytes from").count();
    let last_seq = out
        .lines()
        .filter_map(|l| l.split("icmp_seq=").nth(1))
        .filter_map(|r| r.split_whitespace().next()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    eprintln!(
        "relay heal: back to direct on both sides {:.2} s after the direct path appeared; pings a -> c during the switch: {replies} replies, last icmp_seq {last_seq}",
        switched.as_secs_f64()
    );
    assert!(replies > 0, "no ping reply at all:\n{out}");
    let logs = lab.logs(400);
    assert!(logs.contains("peer back to its direct path"), "{logs}");

    // The direct path breaks: the last direct handshakes still look fresh (Go would wait until
    // they are 150 s old), but the mesh probes fail, so both sides move to the relay at once.
    a.exec_ok("ip", &["route", "del", &lan2.to_string(), "via", &b1])
        .unwrap();
    c.exec_ok("ip", &["route", "del", &lan1.to_string(), "via", &b2])
        .unwrap();
    let cut = Instant::now();
    let relayed_again = lab::wait_until(RELAYED_AFTER_CUT, || {
        path_of(a, key_c) == via_b && path_of(c, key_a) == via_b
    });
    assert!(
        relayed_again,
        "a and c did not go back to the relay after the direct path broke\na lists c {:#?}\nc lists a {:#?}",
        listed(a, key_c),
        listed(c, key_a)
    );
    let moved = cut.elapsed();
    daemon::tcp_every_pair(&labnode_exe!(), &[a, c]).unwrap();
    eprintln!(
        "relay cut: both sides relayed through b {:.2} s after the direct path broke; TCP over the mesh {:.2} s after",
        moved.as_secs_f64(),
        cut.elapsed().as_secs_f64()
    );
}

/// Two hosts behind NATs of `kind` and a public introducer, with two STUN servers so the hosts
/// learn their NAT type; LAN discovery off, the hosts know only the introducer (`--peer`). Waits
/// until a and c both list each other with `want` as path (`relay` via the introducer, or
/// `direct`), then checks TCP between them; returns how long that took from the start. `extra`
/// are more flags for a and c.
fn behind_nats(name: &str, kind: NatKind, extra: &[&str], want: &str) -> Duration {
    let exe = labnode_exe!();
    let lab = Lab::builder(name)
        .public_lan(&["s1", "s2", "intro"])
        .nat_host("a", kind)
        .nat_host("c", kind)
        .build()
        .unwrap();
    lab.drop_unsolicited_inbound("a").unwrap();
    lab.drop_unsolicited_inbound("c").unwrap();
    let mut stuns = Vec::new();
    let mut stun_args = Vec::new();
    for s in ["s1", "s2"] {
        let bind = format!("{}:{STUN_PORT}", lab.host(s).ip());
        let server = exe
            .in_host(lab.host(s), "stun-server")
            .args(["--bind", &bind])
            .spawn()
            .unwrap();
        assert!(lab::wait_until(Duration::from_secs(5), || server
            .stdout()
            .contains("listening")));
        stuns.push(server);
        stun_args.extend(["--stun".to_owned(), bind]);
    }
    let secret = lab.dir().join("mesh.secret");
    daemon::write_secret(&exe, &secret).unwrap();
    let intro_at = format!(
        "{}:{}",
        lab.host("intro").ip(),
        daemon::gossip_port(&secret).unwrap()
    );
    let started = Instant::now();
    let mut args: Vec<&str> = vec!["--no-lan-discovery"];
    args.extend(stun_args.iter().map(String::as_str));
    let di = Daemon::start(
        &exe,
        lab.host("intro"),
        &secret,
        &[args.as_slice(), &["--introducer"]].concat(),
    )
    .unwrap();
    let nated = [args.as_slice(), &["--peer", intro_at.as_str()], extra].concat();
    let da = Daemon::start(&exe, lab.host("a"), &secret, &nated).unwrap();
    let dc = Daemon::start(&exe, lab.host("c"), &secret, &nated).unwrap();
    let key_i = di.wait_api(API_UP).unwrap().public_key;
    let key_a = da.wait_api(API_UP).unwrap().public_key;
    let key_c = dc.wait_api(API_UP).unwrap().public_key;
    let (a, c) = (lab.host("a"), lab.host("c"));
    let expected = if want == "relay" {
        (Some("relay".to_owned()), Some(key_i.clone()))
    } else {
        (Some(want.to_owned()), None)
    };
    let settled = lab::wait_until(NAT_SETTLED, || {
        path_of(a, &key_c) == expected && path_of(c, &key_a) == expected
    });
    assert!(
        settled,
        "a and c behind {kind:?} NATs did not end {want} within {NAT_SETTLED:?}\na lists c {:#?}\nc lists a {:#?}\na's status {:#?}",
        listed(a, &key_c),
        listed(c, &key_a),
        daemon::status(a).unwrap()
    );
    let took = started.elapsed();
    daemon::tcp_every_pair(&exe, &[a, c]).unwrap();
    let tcp_done = started.elapsed();
    if extra.contains(&"--force-relay") {
        // The direct path works here (cone NATs): it is still tried and handshakes, yet the
        // pair stays relayed for more than the three passes that would end a relay otherwise.
        let fresh = lab::wait_until(NAT_SETTLED, || {
            listed(a, &key_c).is_some_and(|p| p.last_handshake_seconds_ago.is_some_and(|s| s < 150))
        });
        assert!(
            fresh,
            "no direct handshake under --force-relay: {:#?}",
            listed(a, &key_c)
        );
        std::thread::sleep(Duration::from_secs(20));
        assert_eq!(path_of(a, &key_c), expected);
        assert_eq!(path_of(c, &key_a), expected);
    }
    let nat = daemon::status(a).unwrap().nat_type;
    eprintln!(
        "behind {kind:?} NATs {extra:?} (a's NAT type {nat:?}): a and c {want} {:.2} s after start; TCP between them passed {:.2} s after start",
        took.as_secs_f64(),
        tcp_done.as_secs_f64()
    );
    took
}

#[test]
fn hosts_behind_symmetric_nats_end_relayed_and_carry_traffic() {
    if !lab::require_root() {
        return;
    }
    behind_nats("relay_sym", NatKind::Symmetric, &[], "relay");
}

#[test]
fn hosts_behind_cone_nats_end_direct() {
    if !lab::require_root() {
        return;
    }
    behind_nats("relay_cone", NatKind::Cone, &[], "direct");
}

#[test]
fn force_relay_relays_hosts_that_could_go_direct() {
    if !lab::require_root() {
        return;
    }
    behind_nats("relay_force", NatKind::Cone, &["--force-relay"], "relay");
}

#[test]
fn with_two_introducers_both_sides_pick_the_same_relay() {
    if !lab::require_root() {
        return;
    }
    // a — LAN 1 — b1, b2 — LAN 2 — c: two introducers on both LANs.
    let lab = Lab::builder("relay_two_intro")
        .lan(&["a", "b1", "b2"])
        .lan(&["b1", "b2", "c"])
        .build()
        .unwrap();
    let exe = labnode_exe!();
    let secret = lab.dir().join("mesh.secret");
    daemon::write_secret(&exe, &secret).unwrap();
    let started = Instant::now();
    let daemons: Vec<Daemon> = [("a", false), ("b1", true), ("b2", true), ("c", false)]
        .into_iter()
        .map(|(h, intro)| {
            let args: &[&str] = if intro { &["--introducer"] } else { &[] };
            Daemon::start(&exe, lab.host(h), &secret, args).unwrap()
        })
        .collect();
    let keys: Vec<String> = daemons
        .iter()
        .map(|d| d.wait_api(API_UP).unwrap().public_key)
        .collect();
    let (a, c) = (lab.host("a"), lab.host("c"));
    let (key_a, key_c) = (&keys[0], &keys[3]);
    let intros = [keys[1].clone(), keys[2].clone()];
    let same = lab::wait_until(RELAYED, || {
        let (pa, pc) = (path_of(a, key_c), path_of(c, key_a));
        pa.0.as_deref() == Some("relay")
            && pa == pc
            && pa.1.as_ref().is_some_and(|v| intros.contains(v))
    });
    assert!(
        same,
        "a and c do not relay through the same introducer: a {:?}, c {:?}",
        path_of(a, key_c),
        path_of(c, key_a)
    );
    daemon::tcp_every_pair(&exe, &[a, c]).unwrap();
    eprintln!(
        "two introducers: a and c relayed through the same one, TCP passed {:.2} s after start",
        started.elapsed().as_secs_f64()
    );
}
