//! End to end: rendezvous through an introducer. Two hosts behind separate NAT routers
//! (masquerade, unsolicited packets dropped: [`wgmesh_tests::nat`]) and one public introducer;
//! LAN discovery off; each NATed host knows only the introducer (`--peer`). Both must end with a
//! direct WireGuard handshake with each other: the endpoint each holds for the other is the
//! other's router, not the introducer.
//!
//! Needs root; without it the tests are skipped, except under `CI=true` where they fail.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use wgmesh_api_types::Peer;
use wgmesh_tests::daemon::{self, Daemon};
use wgmesh_tests::lab::{self, Host};
use wgmesh_tests::labnode_exe;
use wgmesh_tests::nat::NatLab;
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

/// Two hosts behind separate NATs, one public introducer: a direct tunnel through rendezvous.
#[test]
fn two_hosts_behind_separate_nats_punch_a_direct_tunnel_through_an_introducer() {
    if !lab::require_root() {
        return;
    }
    let nat = NatLab::build("rdv_punch", &["intro"], &[("ra", &["a"]), ("rb", &["b"])]).unwrap();
    let (intro, a, b) = (nat.host("intro"), nat.host("a"), nat.host("b"));
    let exe = labnode_exe!();
    let secret = nat.lab().dir().join("mesh.secret");
    daemon::write_secret(&exe, &secret).unwrap();
    let introducer = format!("{}:{}", nat.public_ip("intro"), gossip_port(&secret));

    let started = Instant::now();
    let di = Daemon::start(
        &exe,
        intro,
        &secret,
        &["--introducer", "--no-lan-discovery"],
    )
    .unwrap();
    let nated = ["--no-lan-discovery", "--peer", introducer.as_str()];
    let da = Daemon::start(&exe, a, &secret, &nated).unwrap();
    let db = Daemon::start(&exe, b, &secret, &nated).unwrap();
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
    let up = lab::wait_until(DIRECT_UP, || {
        direct(a, &st_b.public_key, &want_b) && direct(b, &st_a.public_key, &want_a)
    });
    let elapsed = started.elapsed();
    let (pa, pb) = (
        daemon::peer(a, &st_b.public_key).unwrap(),
        daemon::peer(b, &st_a.public_key).unwrap(),
    );
    assert!(
        up,
        "no direct tunnel within {DIRECT_UP:?}:\n a's entry for b: {pa:#?}\n b's entry for a: {pb:#?}\n introducer: {:#?}",
        daemon::peers(intro).unwrap()
    );
    eprintln!(
        "rendezvous: a and b have a direct handshake {:.2} s after the daemons started",
        elapsed.as_secs_f64()
    );
    let (pa, pb) = (pa.unwrap(), pb.unwrap());
    eprintln!(
        "a's entry for b: discovered via {:?}, endpoint method {:?}",
        pa.discovered_via, pa.endpoint_method
    );
    eprintln!(
        "b's entry for a: discovered via {:?}, endpoint method {:?}",
        pb.discovered_via, pb.endpoint_method
    );

    // It was the punch: the introducer coordinated, and each side stored the other as reached by
    // rendezvous.
    let intro_layer = daemon::status(intro).unwrap().discovery["rendezvous"].clone();
    let detail = intro_layer.detail.unwrap_or_default();
    assert!(
        !detail.contains("starts sent 0"),
        "the introducer sent no START: {detail}"
    );
    for (name, p) in [("a", &pa), ("b", &pb)] {
        assert!(
            p.discovered_via.iter().any(|m| m == "dht-rendezvous"),
            "{name} did not reach its peer by rendezvous: {p:#?}"
        );
    }

    // And the tunnel carries traffic, directly.
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
}
