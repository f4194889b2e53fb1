//! End to end: the `stun` layer against two STUN responders inside the lab
//! (`wgmesh-labnode stun-server`), for a host on the public LAN and hosts behind a cone and a
//! symmetric NAT router ([`LabBuilder::nat_host`](wgmesh_tests::lab::LabBuilder::nat_host)). The
//! public LAN uses a documentation range (203.0.113.0/24), which counts as public; nothing is
//! sent outside the lab's namespaces.
//!
//! Needs root; without it the tests are skipped, except under `CI=true` where they fail.

use std::time::{Duration, Instant};

use wgmesh_api_types::Status;
use wgmesh_tests::daemon::{self, Daemon};
use wgmesh_tests::lab::{self, Host, Lab, LabProcess, NatKind};
use wgmesh_tests::{Exe, labnode_exe};

/// How long a daemon may take to serve its API after start.
const API_UP: Duration = Duration::from_secs(20);
/// How long the first STUN round may take (two servers, 3 s each at worst).
const STUN_DONE: Duration = Duration::from_secs(20);
/// The lab's STUN port.
const STUN_PORT: u16 = 3478;

// Failures panic (`unwrap`) rather than return `Err`: the lab prints every daemon's log when it is
// dropped during a panic.

/// Starts a STUN responder on `host`'s address and waits until it listens; returns it and its
/// `IP:PORT`.
fn stun_server(exe: &Exe, host: &Host) -> (LabProcess, String) {
    let bind = format!("{}:{STUN_PORT}", host.ip());
    let server = exe
        .in_host(host, "stun-server")
        .args(["--bind", &bind])
        .spawn()
        .unwrap();
    assert!(
        lab::wait_until(Duration::from_secs(5), || server
            .stdout()
            .contains("listening")),
        "STUN server on {} did not start:\n{}",
        host.name(),
        server.logs()
    );
    (server, bind)
}

/// Waits until the daemon on `host` has a public endpoint and NAT type; returns its status.
fn wait_learned(host: &Host) -> Status {
    daemon::wait_status(
        host,
        STUN_DONE,
        "public_endpoint and nat_type are learned",
        |st| st.public_endpoint.is_some() && st.nat_type.is_some(),
    )
    .unwrap()
}

#[test]
fn public_and_natted_hosts_learn_their_endpoint_and_nat_type() {
    if !lab::require_root() {
        return;
    }
    let exe = labnode_exe!();
    let lab = Lab::builder("stun")
        .public_lan(&["s1", "s2", "pub", "peer"])
        .nat_host("cone", NatKind::Cone)
        .nat_host("sym", NatKind::Symmetric)
        .build()
        .unwrap();
    let (_s1, s1) = stun_server(&exe, lab.host("s1"));
    let (_s2, s2) = stun_server(&exe, lab.host("s2"));
    let secret = lab.dir().join("mesh.secret");
    daemon::write_secret(&exe, &secret).unwrap();
    let stun_args = ["--stun", s1.as_str(), "--stun", s2.as_str()];
    let started = Instant::now();
    let daemons: Vec<(&str, Daemon)> = ["pub", "cone", "sym"]
        .into_iter()
        .map(|h| {
            (
                h,
                Daemon::start(&exe, lab.host(h), &secret, &stun_args).unwrap(),
            )
        })
        .collect();
    // A neighbour of `pub` on the public LAN without STUN: it hears `pub`'s LAN announcements.
    let peer = Daemon::start(&exe, lab.host("peer"), &secret, &[]).unwrap();
    for (_, d) in &daemons {
        d.wait_api(API_UP).unwrap();
    }
    peer.wait_api(API_UP).unwrap();

    // (host, the address its traffic leaves with, NAT type)
    let expected = [
        ("pub", lab.host("pub").ip(), "cone"),
        ("cone", lab.nat_router("cone").ip(), "cone"),
        ("sym", lab.nat_router("sym").ip(), "symmetric"),
    ];
    let mut public_key_of_pub = String::new();
    for (host, public_ip, nat) in expected {
        let st = wait_learned(lab.host(host));
        let want = format!("{public_ip}:{}", st.listen_port);
        println!(
            "{host}: learned within {:.2} s of the daemons' start: public_endpoint {:?}, \
             nat_type {:?}, stun layer {:?}",
            started.elapsed().as_secs_f64(),
            st.public_endpoint,
            st.nat_type,
            st.discovery["stun"].detail
        );
        assert_eq!(st.public_endpoint.as_deref(), Some(want.as_str()), "{host}");
        assert_eq!(st.nat_type.as_deref(), Some(nat), "{host}");
        let layer = &st.discovery["stun"];
        assert_eq!(layer.state, "running", "{host}: {layer:?}");
        let detail = layer.detail.as_deref().unwrap_or_default();
        assert!(
            detail.starts_with(&format!("{want}, nat {nat} (")) && detail.contains(&s2),
            "{host}: {detail}"
        );
        if host == "pub" {
            public_key_of_pub = st.public_key.clone();
        }
    }
    // Behind the symmetric NAT, the two servers saw two different public ports.
    let sym = daemon::status(lab.host("sym")).unwrap();
    let detail = sym.discovery["stun"].detail.clone().unwrap_or_default();
    let router = lab.nat_router("sym").ip().to_string();
    assert_eq!(
        detail.matches(&format!("saw {router}:")).count(),
        2,
        "{detail}"
    );

    // Announcements carry it: `peer` lists `pub` with the NAT type `pub` measured.
    let seen = lab::wait_until(Duration::from_secs(20), || {
        daemon::peer(lab.host("peer"), &public_key_of_pub)
            .unwrap()
            .is_some_and(|p| p.nat_type.as_deref() == Some("cone"))
    });
    assert!(
        seen,
        "peer does not list pub with nat_type cone: {:#?}",
        daemon::peers(lab.host("peer")).unwrap()
    );
    // `peer` runs without STUN: the layer is off and nothing is known.
    let st = daemon::status(lab.host("peer")).unwrap();
    assert_eq!(st.discovery["stun"].state, "off");
    assert_eq!((st.public_endpoint, st.nat_type), (None, None));

    // The CLI shows it.
    let out = exe
        .in_host(lab.host("cone"), "wgmeshctl")
        .args(["--socket"])
        .arg(lab.host("cone").socket_path())
        .arg("status")
        .output_ok()
        .unwrap();
    let endpoint = format!("{}:", lab.nat_router("cone").ip());
    assert!(
        out.lines()
            .any(|l| l.starts_with("Endpoint:") && l.contains(&endpoint)),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("NAT type:") && l.ends_with("cone")),
        "{out}"
    );
}

#[test]
fn silent_stun_servers_leave_the_daemon_up_and_the_layer_retrying() {
    if !lab::require_root() {
        return;
    }
    let exe = labnode_exe!();
    let lab = Lab::builder("stun_silent")
        .public_lan(&["a", "quiet"])
        .build()
        .unwrap();
    // `quiet` exists but runs no STUN server (the kernel answers port unreachable); 203.0.113.99
    // is on the LAN but nobody has it (no answer at all).
    let closed = format!("{}:{STUN_PORT}", lab.host("quiet").ip());
    let absent = format!("203.0.113.99:{STUN_PORT}");
    let secret = lab.dir().join("mesh.secret");
    daemon::write_secret(&exe, &secret).unwrap();
    let d = Daemon::start(
        &exe,
        lab.host("a"),
        &secret,
        &["--stun", &closed, "--stun", &absent],
    )
    .unwrap();
    d.wait_api(API_UP).unwrap();
    let st = daemon::wait_status(lab.host("a"), STUN_DONE, "the stun layer retries", |st| {
        st.discovery
            .get("stun")
            .is_some_and(|l| l.state == "retrying")
    })
    .unwrap();
    let layer = &st.discovery["stun"];
    let error = layer.last_error.as_deref().unwrap_or_default();
    println!("stun layer while no server answers: {error}");
    assert!(
        error.starts_with("no STUN server gave a public address")
            && error.contains(&closed)
            && error.contains(&absent),
        "{error}"
    );
    assert_eq!(
        (st.public_endpoint.as_deref(), st.nat_type.as_deref()),
        (None, None)
    );
    assert!(
        st.health
            .reasons
            .iter()
            .any(|r| r.code == "layer_retrying" && !r.critical),
        "{:?}",
        st.health
    );
    assert!(st.health.healthy, "a retrying layer is a warning only");
    // Still up, still answering, still retrying (the next round comes after 5 s).
    std::thread::sleep(Duration::from_secs(8));
    assert!(d.process().is_running(), "{}", d.process().logs_tail(40));
    let st = daemon::status(lab.host("a")).unwrap();
    assert_eq!(st.discovery["stun"].state, "retrying");
}
