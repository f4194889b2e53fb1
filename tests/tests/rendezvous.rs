//! End to end: rendezvous through an introducer. Two hosts behind NAT routers of their own
//! ([`LabBuilder::nat_host`], cone: port-preserving masquerade) and one public introducer; LAN
//! discovery off; each NATed host knows only the introducer (`--peer`). Both must end with a
//! direct WireGuard handshake with each other: the endpoint each holds for the other is the
//! other's router, not the introducer.
//!
//! The routers here also drop unsolicited packets from the public side, as home routers do
//! ([`Lab::drop_unsolicited_inbound`]). That is what makes hole punching possible at all in a lab whose
//! links have no delay: with plain masquerade, the first of two crossing packets arrives before
//! the other side has sent anything, creates an inbound conntrack entry on that router that holds
//! the port, and the other side's outbound flow then leaves from a random port, so neither
//! side's packets ever match the other's mapping (measured: no direct tunnel in 60 s). A dropped
//! packet leaves no entry: the second packet finds the mapping the first one opened.
//!
//! Needs root and `nft`; without root the tests are skipped, except under `CI=true` where they
//! fail.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use wgmesh_api_types::Peer;
use wgmesh_tests::daemon::{self, Daemon};
use wgmesh_tests::lab::{self, Host, Lab, LabBuilder, NatKind};
use wgmesh_tests::labnode_exe;
use wgmeshd::config::{MeshSecret, SecretOrigin};
use wgmeshd::crypto::DerivedKeys;

/// How long a daemon may take to serve its API after start.
const API_UP: Duration = Duration::from_secs(20);
/// How long the NATed hosts may take to reach each other directly.
const DIRECT_UP: Duration = Duration::from_secs(60);
/// How long both sides may take to list each other as reached by rendezvous once the direct
/// tunnel is up.
const RENDEZVOUS_DONE: Duration = Duration::from_secs(30);
/// How long the control run waits for a tunnel that must not come.
const CONTROL_WAIT: Duration = Duration::from_secs(15);

// ------------------------------------------------------------------------------------------
// the NATs

/// The lab: `intro` on the public LAN, `a` and `b` behind cone NATs of their own.
fn nat_lab(test: &str) -> LabBuilder {
    Lab::builder(test)
        .public_lan(&["intro"])
        .nat_host("a", NatKind::Cone)
        .nat_host("b", NatKind::Cone)
}

/// Makes `router` send what leaves from UDP port `port` from `port + 1` instead (for every
/// destination: the mapping stays endpoint-independent), as a NAT does when another host behind
/// it holds the port.
fn shift_port(router: &Host, port: u16) {
    let rule = format!(
        "oifname \"eth0\" udp sport {port} counter snat ip to {}:{}",
        router.ip(),
        u32::from(port) + 1
    );
    let mut args = vec!["insert", "rule", "ip", "wgmesh_lab_nat", "postrouting"];
    args.extend(rule.split(' '));
    router.exec_ok("nft", &args).unwrap();
}

/// How many flows `router` moved with [`shift_port`] so far.
fn shifted(router: &Host) -> u64 {
    let out = router
        .exec_ok(
            "nft",
            &["list", "chain", "ip", "wgmesh_lab_nat", "postrouting"],
        )
        .unwrap();
    let line = out.lines().find(|l| l.contains("snat")).unwrap_or("");
    line.split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn the_nat_routers_translate_outbound_and_drop_unsolicited_inbound() {
    if !lab::require_root() {
        return;
    }
    let lab = nat_lab("rdv_natcheck").build().unwrap();
    let (intro, a, b) = (lab.host("intro"), lab.host("a"), lab.host("b"));
    let (ra, rb) = (lab.nat_router("a"), lab.nat_router("b"));
    for name in ["a", "b"] {
        lab.drop_unsolicited_inbound(name).unwrap();
    }
    let wait = Duration::from_secs(3);
    assert!(
        a.wait_reachable(intro.ip(), wait).unwrap(),
        "a reaches the internet"
    );
    assert!(
        b.wait_reachable(rb.ip(), wait).unwrap(),
        "b reaches its router"
    );
    assert_ne!(ra.ip(), rb.ip());
    // Nothing from the internet gets in unasked: not to a router, not to a private host.
    assert!(
        !intro.ping(ra.ip()).unwrap(),
        "a's router answers unsolicited pings"
    );
    assert!(
        !intro.ping(a.ip()).unwrap(),
        "a's private address is reachable from outside"
    );
    assert!(!ra.ping(b.ip()).unwrap(), "one NAT reaches behind another");
    assert!(!a.ping(b.ip()).unwrap(), "a reaches b's private address");
    assert!(!rb.ping(ra.ip()).unwrap());
}

// ------------------------------------------------------------------------------------------
// daemons

/// The gossip (exchange) port of the mesh with the secret in `path`.
fn gossip_port(path: &Path) -> u16 {
    let text = std::fs::read_to_string(path).unwrap();
    let secret = MeshSecret::parse(text.trim(), SecretOrigin::Literal).unwrap();
    DerivedKeys::derive(&secret).gossip_port
}

/// `host`'s entry for `key` when it has a fresh handshake with it; `None` otherwise.
fn fresh_peer(host: &Host, key: &str) -> Option<Peer> {
    daemon::peer(host, key).unwrap().filter(|p| {
        p.last_handshake_seconds_ago
            .is_some_and(|s| s < daemon::FRESH_HANDSHAKE_SECS)
    })
}

/// The three daemons of a run: introducer, a, b.
struct Daemons {
    intro: wgmesh_api_types::Status,
    a: wgmesh_api_types::Status,
    b: wgmesh_api_types::Status,
}

/// Starts the introducer and `a`, `b` (which know only the introducer), each with `extra`
/// flags, and waits for their APIs.
fn start(lab: &Lab, secret: &Path, extra: &[&str]) -> Daemons {
    let exe = labnode_exe!();
    let introducer = format!("{}:{}", lab.host("intro").ip(), gossip_port(secret));
    fn with<'s>(extra: &[&'s str], flags: &[&'s str]) -> Vec<&'s str> {
        [&["--no-lan-discovery"], extra, flags].concat()
    }
    let di = Daemon::start(
        &exe,
        lab.host("intro"),
        secret,
        &with(extra, &["--introducer"]),
    )
    .unwrap();
    let nated = with(extra, &["--peer", introducer.as_str()]);
    let da = Daemon::start(&exe, lab.host("a"), secret, &nated).unwrap();
    let db = Daemon::start(&exe, lab.host("b"), secret, &nated).unwrap();
    Daemons {
        intro: di.wait_api(API_UP).unwrap(),
        a: da.wait_api(API_UP).unwrap(),
        b: db.wait_api(API_UP).unwrap(),
    }
}

/// What one run measured, from the daemons' start.
struct Run {
    /// Until a direct handshake both ways.
    direct: Duration,
    /// Until both sides list each other as `dht-rendezvous`.
    rendezvous: Duration,
}

/// Starts the daemons in `lab` and checks that `a` and `b` end with a direct tunnel made by
/// rendezvous.
fn punch_through(lab: &Lab, secret: &Path) -> Run {
    let (intro, a, b) = (lab.host("intro"), lab.host("a"), lab.host("b"));
    let started = Instant::now();
    let d = start(lab, secret, &[]);
    for st in [&d.a, &d.b, &d.intro] {
        assert_eq!(st.discovery["lan"].state, "off");
        assert_eq!(st.discovery["rendezvous"].state, "running", "{st:#?}");
    }

    // What each NATed host must end with: the other's router as the endpoint (not the
    // introducer, not a private address) and a fresh handshake.
    let want_b = format!("{}:{}", lab.nat_router("b").ip(), d.b.listen_port);
    let want_a = format!("{}:{}", lab.nat_router("a").ip(), d.a.listen_port);
    let direct = |host: &Host, key: &str, want: &str| {
        fresh_peer(host, key).is_some_and(|p| p.endpoint.as_deref() == Some(want))
    };
    let both_direct = || direct(a, &d.b.public_key, &want_b) && direct(b, &d.a.public_key, &want_a);
    let entries = || {
        format!(
            "a's entry for b: {:#?}\nb's entry for a: {:#?}\nintroducer's peers: {:#?}",
            daemon::peer(a, &d.b.public_key).unwrap(),
            daemon::peer(b, &d.a.public_key).unwrap(),
            daemon::peers(intro).unwrap()
        )
    };
    assert!(
        lab::wait_until(DIRECT_UP, both_direct),
        "no direct tunnel within {DIRECT_UP:?}:\n{}",
        entries()
    );
    let direct_after = started.elapsed();

    // It was the punch: each side ran one ordered by the introducer's START, got a REPLY
    // through the other's NAT and then a newer handshake, and stored the other as reached by
    // rendezvous.
    let by_rendezvous = |host: &Host, key: &str| {
        daemon::peer(host, key)
            .unwrap()
            .is_some_and(|p| p.discovered_via.iter().any(|m| m == "dht-rendezvous"))
    };
    assert!(
        lab::wait_until(RENDEZVOUS_DONE, || {
            by_rendezvous(a, &d.b.public_key) && by_rendezvous(b, &d.a.public_key)
        }),
        "not reached by rendezvous within {RENDEZVOUS_DONE:?} of the direct tunnel:\n{}",
        entries()
    );
    let rendezvous_after = started.elapsed();
    assert!(
        both_direct(),
        "the tunnel is no longer direct:\n{}",
        entries()
    );
    let detail = |host: &Host| {
        daemon::status(host).unwrap().discovery["rendezvous"]
            .detail
            .clone()
            .unwrap_or_default()
    };
    for host in [a, b] {
        assert!(
            !detail(host).contains("punches 0 ok"),
            "{}: {}",
            host.name(),
            detail(host)
        );
    }
    assert!(
        !detail(intro).contains("starts sent 0"),
        "the introducer sent no START: {}",
        detail(intro)
    );

    // And the tunnel carries traffic.
    let (mesh_a, mesh_b): (Ipv4Addr, Ipv4Addr) =
        (d.a.mesh_ip.parse().unwrap(), d.b.mesh_ip.parse().unwrap());
    let wait = Duration::from_secs(10);
    assert!(
        a.wait_reachable(mesh_b, wait).unwrap(),
        "a cannot ping b over the mesh"
    );
    assert!(
        b.wait_reachable(mesh_a, wait).unwrap(),
        "b cannot ping a over the mesh"
    );
    Run {
        direct: direct_after,
        rendezvous: rendezvous_after,
    }
}

// ------------------------------------------------------------------------------------------
// tests

/// Two hosts behind separate NATs, one public introducer: a direct tunnel through rendezvous.
#[test]
fn two_hosts_behind_separate_nats_punch_a_direct_tunnel_through_an_introducer() {
    if !lab::require_root() {
        return;
    }
    let lab = nat_lab("rdv_punch").build().unwrap();
    lab.drop_unsolicited_inbound("a").unwrap();
    lab.drop_unsolicited_inbound("b").unwrap();
    let secret = lab.dir().join("mesh.secret");
    daemon::write_secret(&labnode_exe!(), &secret).unwrap();
    let run = punch_through(&lab, &secret);
    eprintln!(
        "rendezvous (cone NATs): direct handshake both ways {:.2} s after start, both listed as dht-rendezvous after {:.2} s",
        run.direct.as_secs_f64(),
        run.rendezvous.as_secs_f64()
    );
}

/// The same behind NATs that move the exchange port (`P` leaves as `P + 1`): contacting a peer
/// at `<its router>:P`, as the exchange does for peers named in a REPLY, reaches nothing; the
/// introducer's START carries the mapping it observed, and the punch goes there.
#[test]
fn rendezvous_punches_through_nats_that_move_the_exchange_port() {
    if !lab::require_root() {
        return;
    }
    let lab = nat_lab("rdv_shift").build().unwrap();
    let secret = lab.dir().join("mesh.secret");
    daemon::write_secret(&labnode_exe!(), &secret).unwrap();
    let port = gossip_port(&secret);
    for name in ["a", "b"] {
        lab.drop_unsolicited_inbound(name).unwrap();
        shift_port(lab.nat_router(name), port);
    }
    let run = punch_through(&lab, &secret);
    for router in [lab.nat_router("a"), lab.nat_router("b")] {
        assert!(
            shifted(router) > 0,
            "{} moved no exchange port",
            router.name()
        );
    }
    eprintln!(
        "rendezvous (NATs moving the exchange port): direct handshake both ways {:.2} s after start, both listed as dht-rendezvous after {:.2} s",
        run.direct.as_secs_f64(),
        run.rendezvous.as_secs_f64()
    );
}

/// The control: the same lab with `--no-punching` everywhere gets no direct tunnel. The host
/// that reaches the introducer first learns nothing from its REPLY; only the other host knows
/// both, and its packets die at the first host's NAT. (Static peers are contacted again after
/// 60 s; the wait ends well before.) With rendezvous, the introducer contacts both hosts (its
/// own requester side: no introducer for them, so directly, naming every peer it knows) and
/// sends both a START.
#[test]
fn without_rendezvous_the_nated_hosts_get_no_direct_tunnel() {
    if !lab::require_root() {
        return;
    }
    let lab = nat_lab("rdv_off").build().unwrap();
    lab.drop_unsolicited_inbound("a").unwrap();
    lab.drop_unsolicited_inbound("b").unwrap();
    let secret = lab.dir().join("mesh.secret");
    daemon::write_secret(&labnode_exe!(), &secret).unwrap();
    let d = start(&lab, &secret, &["--no-punching"]);
    let (a, b) = (lab.host("a"), lab.host("b"));
    assert_eq!(d.a.discovery["rendezvous"].state, "off");
    // Both reach the introducer...
    assert!(lab::wait_until(DIRECT_UP, || {
        fresh_peer(a, &d.intro.public_key).is_some() && fresh_peer(b, &d.intro.public_key).is_some()
    }));
    // ...but not each other.
    let met = lab::wait_until(CONTROL_WAIT, || {
        fresh_peer(a, &d.b.public_key).is_some() || fresh_peer(b, &d.a.public_key).is_some()
    });
    assert!(
        !met,
        "a tunnel between a and b without rendezvous:\n{:#?}\n{:#?}",
        daemon::peer(a, &d.b.public_key).unwrap(),
        daemon::peer(b, &d.a.public_key).unwrap()
    );
}
