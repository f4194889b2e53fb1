//! End to end: rendezvous through an introducer. Two hosts behind separate NAT routers
//! (masquerade, unsolicited packets dropped: [`wgmesh_tests::nat`]) and one public introducer;
//! LAN discovery off; each NATed host knows only the introducer (`--peer`). Both must end with a
//! direct WireGuard handshake with each other: the endpoint each holds for the other is the
//! other's router, not the introducer.
//!
//! Needs root; without it the tests are skipped, except under `CI=true` where they fail.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use wgmesh_api_types::Peer;
use wgmesh_tests::daemon::{self, Daemon};
use wgmesh_tests::lab::{self, Host};
use wgmesh_tests::labnode_exe;
use wgmesh_tests::nat::{Behaviour, NatLab};
use wgmeshd::config::{MeshSecret, SecretOrigin};
use wgmeshd::crypto::DerivedKeys;

/// The NAT routers translate outbound traffic and keep unsolicited inbound traffic out.
#[test]
fn nat_routers_translate_outbound_and_drop_unsolicited_inbound() {
    if !lab::require_root() {
        return;
    }
    let nat = NatLab::build(
        "rdv_natcheck",
        &["intro"],
        &[("ra", &["a"]), ("rb", &["b"])],
    )
    .unwrap();
    let (intro, a, b) = (nat.host("intro"), nat.host("a"), nat.host("b"));
    let (ra, rb) = (nat.host("ra"), nat.host("rb"));
    let wait = Duration::from_secs(3);
    assert!(
        a.wait_reachable(nat.public_ip("intro"), wait).unwrap(),
        "a reaches the internet"
    );
    assert!(
        b.wait_reachable(nat.public_ip("rb"), wait).unwrap(),
        "b reaches its router"
    );
    assert_eq!(nat.public_ip("a"), nat.public_ip("ra"));
    assert_ne!(nat.public_ip("a"), nat.public_ip("b"));
    // Nothing from the internet gets in unasked: not to a router, not to a private host.
    assert!(
        !intro.ping(nat.public_ip("ra")).unwrap(),
        "ra answers unsolicited pings"
    );
    assert!(
        !intro.ping(a.ip()).unwrap(),
        "a's private address is reachable from outside"
    );
    assert!(!ra.ping(b.ip()).unwrap(), "one NAT reaches behind another");
    assert!(!a.ping(b.ip()).unwrap(), "a reaches b's private address");
    assert!(!rb.ping(nat.public_ip("ra")).unwrap());
}

/// How long a daemon may take to serve its API after start.
const API_UP: Duration = Duration::from_secs(20);
/// How long the NATed hosts may take to reach each other directly.
const DIRECT_UP: Duration = Duration::from_secs(60);

/// The gossip (exchange) port of the mesh with the secret in `path`.
fn gossip_port(path: &std::path::Path) -> u16 {
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

/// How long both sides may take to list each other as reached by rendezvous once the direct
/// tunnel is up.
const RENDEZVOUS_DONE: Duration = Duration::from_secs(30);

/// What one run measured.
struct Run {
    /// From the daemons' start to a direct handshake both ways.
    direct: Duration,
    /// From the daemons' start to both sides listing each other as `dht-rendezvous`.
    rendezvous: Duration,
}

/// Starts a public introducer and the two NATed hosts `a` and `b` (which know only the
/// introducer) with the mesh secret in `secret`, and checks that they end with a direct tunnel
/// made by rendezvous.
fn punch_through(nat: &NatLab, secret: &Path) -> Run {
    let (intro, a, b) = (nat.host("intro"), nat.host("a"), nat.host("b"));
    let exe = labnode_exe!();
    let introducer = format!("{}:{}", nat.public_ip("intro"), gossip_port(secret));

    let started = Instant::now();
    let di = Daemon::start(&exe, intro, secret, &["--introducer", "--no-lan-discovery"]).unwrap();
    let nated = ["--no-lan-discovery", "--peer", introducer.as_str()];
    let da = Daemon::start(&exe, a, secret, &nated).unwrap();
    let db = Daemon::start(&exe, b, secret, &nated).unwrap();
    let st_i = di.wait_api(API_UP).unwrap();
    let st_a = da.wait_api(API_UP).unwrap();
    let st_b = db.wait_api(API_UP).unwrap();
    for st in [&st_a, &st_b, &st_i] {
        assert_eq!(st.discovery["lan"].state, "off");
        assert_eq!(st.discovery["rendezvous"].state, "running", "{st:#?}");
    }

    // What each NATed host must end with: the other's router as the endpoint (not the
    // introducer, not a private address) and a fresh handshake.
    let want_b = format!("{}:{}", nat.public_ip("b"), st_b.listen_port);
    let want_a = format!("{}:{}", nat.public_ip("a"), st_a.listen_port);
    let direct = |host: &Host, key: &str, want: &str| {
        fresh_peer(host, key).is_some_and(|p| p.endpoint.as_deref() == Some(want))
    };
    let both_direct =
        || direct(a, &st_b.public_key, &want_b) && direct(b, &st_a.public_key, &want_a);
    let entries = || {
        format!(
            "a's entry for b: {:#?}\nb's entry for a: {:#?}\nintroducer's peers: {:#?}",
            daemon::peer(a, &st_b.public_key).unwrap(),
            daemon::peer(b, &st_a.public_key).unwrap(),
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
            by_rendezvous(a, &st_b.public_key) && by_rendezvous(b, &st_a.public_key)
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
    for host in [a, b] {
        let layer = daemon::status(host).unwrap().discovery["rendezvous"].clone();
        let detail = layer.detail.unwrap_or_default();
        assert!(
            !detail.contains("punches 0 ok"),
            "{}: {detail}",
            host.name()
        );
    }
    let detail = daemon::status(intro).unwrap().discovery["rendezvous"]
        .detail
        .clone()
        .unwrap_or_default();
    assert!(
        !detail.contains("starts sent 0"),
        "the introducer sent no START: {detail}"
    );

    // And the tunnel carries traffic.
    let (mesh_a, mesh_b): (Ipv4Addr, Ipv4Addr) =
        (st_a.mesh_ip.parse().unwrap(), st_b.mesh_ip.parse().unwrap());
    assert!(
        a.wait_reachable(mesh_b, Duration::from_secs(10)).unwrap(),
        "a cannot ping b over the mesh"
    );
    assert!(
        b.wait_reachable(mesh_a, Duration::from_secs(10)).unwrap(),
        "b cannot ping a over the mesh"
    );
    Run {
        direct: direct_after,
        rendezvous: rendezvous_after,
    }
}

/// Two hosts behind separate NATs, one public introducer: a direct tunnel through rendezvous.
#[test]
fn two_hosts_behind_separate_nats_punch_a_direct_tunnel_through_an_introducer() {
    if !lab::require_root() {
        return;
    }
    let nat = NatLab::build("rdv_punch", &["intro"], &[("ra", &["a"]), ("rb", &["b"])]).unwrap();
    let secret = nat.lab().dir().join("mesh.secret");
    daemon::write_secret(&labnode_exe!(), &secret).unwrap();
    let run = punch_through(&nat, &secret);
    eprintln!(
        "rendezvous (port-preserving NATs): direct handshake both ways {:.2} s after start, both listed as dht-rendezvous after {:.2} s",
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
    // The gossip port depends on the secret: make the secret first, then the NATs that move
    // that port.
    let secret =
        std::env::temp_dir().join(format!("wgmesh-rdv-shift-{}.secret", std::process::id()));
    let _ = std::fs::remove_file(&secret);
    daemon::write_secret(&labnode_exe!(), &secret).unwrap();
    let port = gossip_port(&secret);
    let nat = NatLab::build_with(
        "rdv_shift",
        &["intro"],
        &[("ra", &["a"]), ("rb", &["b"])],
        Behaviour {
            shift_port: Some(port),
        },
    );
    let in_lab = nat.as_ref().ok().map(|nat| {
        let path = nat.lab().dir().join("mesh.secret");
        std::fs::copy(&secret, &path).unwrap();
        path
    });
    std::fs::remove_file(&secret).unwrap();
    let nat = nat.unwrap();
    let secret = in_lab.unwrap();
    let run = punch_through(&nat, &secret);
    for router in ["ra", "rb"] {
        assert!(
            nat.shifted(router).unwrap() > 0,
            "{router} moved no exchange port"
        );
    }
    eprintln!(
        "rendezvous (exchange port moved by the NATs): direct handshake both ways {:.2} s after start, both listed as dht-rendezvous after {:.2} s",
        run.direct.as_secs_f64(),
        run.rendezvous.as_secs_f64()
    );
}

/// How long the control run waits for a tunnel that must not come.
const CONTROL_WAIT: Duration = Duration::from_secs(15);

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
    let nat = NatLab::build("rdv_off", &["intro"], &[("ra", &["a"]), ("rb", &["b"])]).unwrap();
    let (intro, a, b) = (nat.host("intro"), nat.host("a"), nat.host("b"));
    let exe = labnode_exe!();
    let secret = nat.lab().dir().join("mesh.secret");
    daemon::write_secret(&exe, &secret).unwrap();
    let introducer = format!("{}:{}", nat.public_ip("intro"), gossip_port(&secret));
    let off = ["--no-lan-discovery", "--no-punching"];
    let di = Daemon::start(
        &exe,
        intro,
        &secret,
        &[&off[..], &["--introducer"]].concat(),
    )
    .unwrap();
    let nated = [&off[..], &["--peer", introducer.as_str()]].concat();
    let da = Daemon::start(&exe, a, &secret, &nated).unwrap();
    let db = Daemon::start(&exe, b, &secret, &nated).unwrap();
    di.wait_api(API_UP).unwrap();
    let st_a = da.wait_api(API_UP).unwrap();
    let st_b = db.wait_api(API_UP).unwrap();
    assert_eq!(st_a.discovery["rendezvous"].state, "off");
    // Both reach the introducer...
    assert!(lab::wait_until(DIRECT_UP, || {
        fresh_peer(a, &st_i_key(intro)).is_some() && fresh_peer(b, &st_i_key(intro)).is_some()
    }));
    // ...but not each other.
    let met = lab::wait_until(CONTROL_WAIT, || {
        fresh_peer(a, &st_b.public_key).is_some() || fresh_peer(b, &st_a.public_key).is_some()
    });
    assert!(
        !met,
        "a tunnel between a and b without rendezvous:\n{:#?}\n{:#?}",
        daemon::peer(a, &st_b.public_key).unwrap(),
        daemon::peer(b, &st_a.public_key).unwrap()
    );
}

/// The public key of the daemon in `host`.
fn st_i_key(host: &Host) -> String {
    daemon::status(host).unwrap().public_key
}
