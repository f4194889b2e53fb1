//! End to end: routes to advertised networks. Node a advertises `10.99.0.0/24,fd99::/64`, the
//! network of its second leg, where host x (no daemon) sits at 10.99.0.10. The other daemons
//! install kernel routes for both prefixes on their mesh interface (protocol 87), ping and TCP to
//! x arrive through a, an operator's own route on the mesh interface survives the route syncs,
//! and only a (which routes for others) turned IP forwarding on.
//!
//! Topology: LAN 1 holds a, b, c (daemons); LAN 2 holds a and x.

use std::time::{Duration, Instant};

use wgmesh_tests::daemon::{self, Daemon};
use wgmesh_tests::lab::{self, Host, Lab};
use wgmesh_tests::labnode_exe;

const API_UP: Duration = Duration::from_secs(20);
const SETTLE: Duration = Duration::from_secs(60);
const SUBNET: &str = "10.66.0.0/16";
const OPERATOR_ROUTE: &str = "10.98.0.0/24";

fn kernel_routes(host: &Host, family: &str) -> String {
    host.exec_ok(
        "ip",
        &[family, "route", "show", "dev", "wg0", "proto", "87"],
    )
    .unwrap()
}

fn ip_forward(host: &Host) -> String {
    host.exec_ok("cat", &["/proc/sys/net/ipv4/ip_forward"])
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn advertised_networks_get_kernel_routes_and_carry_traffic() {
    if !lab::require_root() {
        return;
    }
    let exe = labnode_exe!();
    let lab = Lab::builder("routes")
        .lan(&["a", "b", "c"])
        .lan(&["a", "x"])
        .build()
        .unwrap();
    let (a, b, c, x) = (lab.host("a"), lab.host("b"), lab.host("c"), lab.host("x"));
    // The network behind a: a is 10.99.0.1 / fd99::1 on LAN 2, x is 10.99.0.10 / fd99::10 and
    // knows the way back to the mesh through a.
    let a_lan2 = a
        .interfaces()
        .iter()
        .find(|i| i.lan == 2)
        .unwrap()
        .name
        .clone();
    let x_lan2 = x.interfaces()[0].name.clone();
    a.exec_ok("ip", &["addr", "add", "10.99.0.1/24", "dev", &a_lan2])
        .unwrap();
    a.exec_ok(
        "ip",
        &["-6", "addr", "add", "fd99::1/64", "dev", &a_lan2, "nodad"],
    )
    .unwrap();
    x.exec_ok("ip", &["addr", "add", "10.99.0.10/24", "dev", &x_lan2])
        .unwrap();
    x.exec_ok("ip", &["route", "add", SUBNET, "via", "10.99.0.1"])
        .unwrap();
    let before: Vec<String> = [a, b, c].iter().map(|h| ip_forward(h)).collect();
    assert_eq!(before, ["0", "0", "0"], "forwarding on before the daemons");

    let secret = lab.dir().join("mesh.secret");
    daemon::write_secret(&exe, &secret).unwrap();
    let started = Instant::now();
    let _da = Daemon::start(
        &exe,
        a,
        &secret,
        &[
            "--mesh-subnet",
            SUBNET,
            "--advertise-routes",
            "10.99.0.0/24,fd99::/64",
        ],
    )
    .unwrap();
    let others: Vec<Daemon> = [b, c]
        .iter()
        .map(|h| Daemon::start(&exe, h, &secret, &["--mesh-subnet", SUBNET]).unwrap())
        .collect();
    _da.wait_api(API_UP).unwrap();
    for d in &others {
        d.wait_api(API_UP).unwrap();
    }
    daemon::wait_full_mesh(&[a, b, c], SETTLE).unwrap();
    // The operator's route, on b's mesh interface once it exists.
    b.exec_ok("ip", &["route", "add", OPERATOR_ROUTE, "dev", "wg0"])
        .unwrap();

    for h in [b, c] {
        let mut v4 = String::new();
        let mut v6 = String::new();
        let ok = lab::wait_until(SETTLE, || {
            v4 = kernel_routes(h, "-4");
            v6 = kernel_routes(h, "-6");
            v4.contains("10.99.0.0/24") && v6.contains("fd99::/64")
        });
        assert!(ok, "{}: routes v4 {v4:?} v6 {v6:?}", h.name());
        eprintln!(
            "{}: kernel routes to a's networks {:.2} s after start",
            h.name(),
            started.elapsed().as_secs_f64()
        );
    }
    assert!(
        !kernel_routes(a, "-4").contains("10.99.0.0/24"),
        "a routes its own network into the mesh"
    );

    // Ping and TCP from b and c to x arrive through a.
    for h in [b, c] {
        assert!(
            h.wait_reachable("10.99.0.10".parse().unwrap(), Duration::from_secs(10))
                .unwrap(),
            "{} cannot ping x behind a",
            h.name()
        );
    }
    let echo = exe
        .in_host(x, "tcp-echo")
        .arg("10.99.0.10:7000")
        .spawn()
        .unwrap();
    assert!(
        lab::wait_until(Duration::from_secs(5), || echo
            .stdout()
            .contains("listening")),
        "{}",
        echo.logs()
    );
    for h in [b, c] {
        let out = exe
            .in_host(h, "tcp-check")
            .args(["10.99.0.10:7000", "65536", "10000"])
            .output_timeout(Duration::from_secs(15))
            .unwrap();
        assert!(
            out.status.success(),
            "{}: TCP to x failed: {}",
            h.name(),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "{} -> x TCP: {}",
            h.name(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }

    // Several reconcile passes later (every 5 s) the operator's route is still there.
    std::thread::sleep(Duration::from_secs(12));
    let all = b
        .exec_ok("ip", &["-4", "route", "show", "dev", "wg0"])
        .unwrap();
    assert!(all.contains(OPERATOR_ROUTE), "operator route gone: {all}");
    assert!(all.contains("10.99.0.0/24"), "{all}");

    // Forwarding: only a routes for others.
    let after: Vec<String> = [a, b, c].iter().map(|h| ip_forward(h)).collect();
    assert_eq!(after, ["1", "0", "0"], "ip_forward on a, b, c");
    drop(others);
}
