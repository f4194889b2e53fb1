//! End to end: rendezvous through an introducer. Two hosts behind separate NAT routers
//! (masquerade, unsolicited packets dropped: [`wgmesh_tests::nat`]) and one public introducer;
//! LAN discovery off; each NATed host knows only the introducer (`--peer`). Both must end with a
//! direct WireGuard handshake with each other: the endpoint each holds for the other is the
//! other's router, not the introducer.
//!
//! Needs root; without it the tests are skipped, except under `CI=true` where they fail.

use std::time::Duration;

use wgmesh_tests::lab;
use wgmesh_tests::nat::NatLab;

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
