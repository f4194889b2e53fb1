//! `system::net` against the real kernel, each test in a private network namespace.
//!
//! Each test runs on its own thread that calls `unshare(CLONE_NEWNET)`: network namespaces are
//! per thread, so the thread gets a fresh, empty namespace that disappears with it (no name, no
//! clean-up, nothing touches the host's network). A current-thread tokio runtime on that thread
//! keeps every netlink socket inside the namespace. No `ip` binary is needed.
//!
//! Needs root. Without it the tests print a skip message and pass, except with `CI=true`, where
//! a missing privilege is a failure.

#![cfg(feature = "runtime")]

use std::collections::BTreeSet;
use std::future::Future;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::pin::pin;
use std::sync::mpsc;
use std::time::Duration;

use futures_util::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::packet_route::route::{RouteProtocol, RouteScope};
use rtnetlink::{Handle, LinkDummy, LinkVeth, RouteMessageBuilder};
use wgmeshd::system::net::{
    self, DesiredRoute, ForwardingState, InstalledRoute, NetError, Netlink, PROC_SYS,
    ROUTE_PROTOCOL, SCOPE_LINK,
};

const IFNAME: &str = "wgmtest0";

/// True when the test may run. Not root: skip with a message, unless `CI=true` (then panic).
fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: needs root (network namespaces, netlink writes) and CI=true");
    }
    // Straight to stderr: the harness captures `eprintln!` of passing tests.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: needs root for a private network namespace (run as root)"
    );
    false
}

/// Runs `test` on a new thread inside a fresh private network namespace, on a current-thread
/// tokio runtime, and propagates its panic.
fn in_private_netns<F, Fut>(test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let thread = std::thread::spawn(move || {
        // SAFETY: plain syscall; it only changes this thread's network namespace.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        runtime.block_on(test());
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

/// A second, raw rtnetlink connection for what the daemon API deliberately cannot do (create a
/// stand-in link, add an operator's route, read link attributes).
fn raw() -> Handle {
    let (connection, handle, _) = rtnetlink::new_connection().expect("rtnetlink socket");
    tokio::spawn(connection);
    handle
}

/// Creates the stand-in for the WireGuard interface, up, and returns its index. A dummy link
/// when the kernel has the driver, otherwise (as on the CI machine, `CONFIG_DUMMY` unset) one
/// end of a veth pair whose peer is also up.
async fn standin(nl: &Netlink) -> u32 {
    let raw = raw();
    let peer = format!("{IFNAME}p");
    match raw
        .link()
        .add(LinkDummy::new(IFNAME).build())
        .execute()
        .await
    {
        Ok(()) => {}
        Err(_) => {
            raw.link()
                .add(LinkVeth::new(IFNAME, &peer).build())
                .execute()
                .await
                .expect("neither dummy nor veth links can be created");
            let p = nl.link_index(&peer).await.unwrap().expect("veth peer");
            nl.set_link_up(p).await.unwrap();
        }
    }
    let lo = nl.link_index("lo").await.unwrap().expect("lo");
    nl.set_link_up(lo).await.unwrap();
    let index = nl.link_index(IFNAME).await.unwrap().expect("stand-in link");
    nl.set_link_up(index).await.unwrap();
    index
}

async fn link(raw: &Handle, index: u32) -> LinkMessage {
    let mut links = pin!(raw.link().get().match_index(index).execute());
    links.try_next().await.unwrap().expect("link exists")
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn set(v: &[&str]) -> BTreeSet<IpNet> {
    v.iter().map(|s| net(s)).collect()
}

fn global(addresses: Vec<IpNet>) -> BTreeSet<IpNet> {
    addresses
        .into_iter()
        .filter(|a| !net::is_ipv6_link_local(a.addr()))
        .collect()
}

async fn wait_for_link_local(nl: &Netlink, index: u32) -> IpNet {
    for _ in 0..50 {
        let found = nl
            .addresses(index)
            .await
            .unwrap()
            .into_iter()
            .find(|a| net::is_ipv6_link_local(a.addr()));
        if let Some(a) = found {
            return a;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the kernel gave {IFNAME} no IPv6 link-local address");
}

#[test]
fn addresses_become_exactly_the_desired_set() {
    if !privileged("addresses_become_exactly_the_desired_set") {
        return;
    }
    in_private_netns(|| async {
        let nl = Netlink::connect().await.unwrap();
        let index = standin(&nl).await;
        let link_local = wait_for_link_local(&nl, index).await;
        nl.add_address(index, net("192.0.2.9/24")).await.unwrap();
        nl.add_address(index, net("fd00:bad::9/64")).await.unwrap();
        // Adding an address that is present is not an error.
        nl.add_address(index, net("192.0.2.9/24")).await.unwrap();

        let desired = [net("10.78.1.2/16"), net("fd00:78::2/64")];
        let report = nl.sync_addresses(index, &desired).await.unwrap();
        assert_eq!(report.added.len(), 2, "{report:?}");
        assert_eq!(
            report.removed.iter().copied().collect::<BTreeSet<_>>(),
            set(&["192.0.2.9/24", "fd00:bad::9/64"])
        );
        let now = nl.addresses(index).await.unwrap();
        assert!(now.contains(&link_local), "link-local removed: {now:?}");
        assert_eq!(global(now), set(&["10.78.1.2/16", "fd00:78::2/64"]));

        // Twice: nothing to do, no error.
        let again = nl.sync_addresses(index, &desired).await.unwrap();
        assert!(
            again.added.is_empty() && again.removed.is_empty(),
            "{again:?}"
        );
        assert_eq!(again.unchanged, 2);

        // A prefix length change (v4 and v6) is a remove and an add.
        let changed = [net("10.78.1.2/24"), net("fd00:78::2/48")];
        nl.sync_addresses(index, &changed).await.unwrap();
        let now = nl.addresses(index).await.unwrap();
        assert!(now.contains(&link_local));
        assert_eq!(global(now), set(&["10.78.1.2/24", "fd00:78::2/48"]));

        // Removing an address that is gone is not an error; the empty set keeps link-local.
        nl.remove_address(index, net("10.78.9.9/16")).await.unwrap();
        nl.sync_addresses(index, &[]).await.unwrap();
        assert_eq!(nl.addresses(index).await.unwrap(), vec![link_local]);
    });
}

fn ours(routes: &[InstalledRoute], index: u32) -> BTreeSet<(IpNet, Option<IpAddr>)> {
    routes
        .iter()
        .filter(|r| r.is_ours(index, ROUTE_PROTOCOL))
        .map(|r| (r.destination, r.gateway))
        .collect()
}

fn has(routes: &[InstalledRoute], dst: &str, protocol: u8) -> bool {
    routes
        .iter()
        .any(|r| r.destination == net(dst) && r.protocol == protocol)
}

#[test]
fn routes_sync_v4_and_v6_and_never_touch_foreign_routes() {
    if !privileged("routes_sync_v4_and_v6_and_never_touch_foreign_routes") {
        return;
    }
    in_private_netns(|| async {
        let nl = Netlink::connect().await.unwrap();
        let raw = raw();
        let index = standin(&nl).await;
        nl.sync_addresses(index, &[net("10.78.1.2/16"), net("fd00:78::2/64")])
            .await
            .unwrap();

        // An operator's routes on the same interface: `ip route add` (proto boot) and
        // `proto static`, one of them with a prefix the mesh will also want.
        let boot = u8::from(RouteProtocol::Boot);
        let stat = u8::from(RouteProtocol::Static);
        for (dst, len, proto) in [
            (Ipv4Addr::new(10, 99, 0, 0), 16, RouteProtocol::Boot),
            (Ipv4Addr::new(10, 55, 0, 0), 16, RouteProtocol::Static),
        ] {
            let r = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(dst, len)
                .output_interface(index)
                .scope(RouteScope::Link)
                .protocol(proto)
                .build();
            raw.route().add(r).execute().await.unwrap();
        }
        let r = RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix("fd99::".parse().unwrap(), 64)
            .output_interface(index)
            .protocol(RouteProtocol::Static)
            .build();
        raw.route().add(r).execute().await.unwrap();

        let gw4: IpAddr = "10.78.0.1".parse().unwrap();
        let gw6: IpAddr = "fd00:78::1".parse().unwrap();
        let desired = vec![
            DesiredRoute::device(net("10.1.0.0/16")),
            DesiredRoute::via(net("10.2.0.0/16"), gw4).unwrap(),
            DesiredRoute::device(net("10.3.4.5/16")), // canonicalised to 10.3.0.0/16
            DesiredRoute::device(net("fd01::/64")),
            DesiredRoute::via(net("fd02::/64"), gw6).unwrap(),
            DesiredRoute::device(net("10.55.0.0/16")), // the operator's prefix
        ];
        let report = nl.sync_routes(index, &desired).await.unwrap();
        assert_eq!(report.replaced.len(), 5, "{report:?}");
        assert_eq!(
            report.foreign,
            vec![DesiredRoute::device(net("10.55.0.0/16"))]
        );
        let routes = nl.routes(index).await.unwrap();
        assert_eq!(
            ours(&routes, index),
            BTreeSet::from([
                (net("10.1.0.0/16"), None),
                (net("10.2.0.0/16"), Some(gw4)),
                (net("10.3.0.0/16"), None),
                (net("fd01::/64"), None),
                (net("fd02::/64"), Some(gw6)),
            ])
        );
        let dev4 = routes
            .iter()
            .find(|r| r.destination == net("10.1.0.0/16"))
            .unwrap();
        assert_eq!(dev4.scope, SCOPE_LINK, "device routes need scope link");
        assert!(has(&routes, "10.99.0.0/16", boot));
        assert!(has(&routes, "10.55.0.0/16", stat));
        assert!(!has(&routes, "10.55.0.0/16", ROUTE_PROTOCOL));
        assert!(has(&routes, "fd99::/64", stat));

        // Twice: nothing written.
        let again = nl.sync_routes(index, &desired).await.unwrap();
        assert!(
            again.replaced.is_empty() && again.removed.is_empty(),
            "{again:?}"
        );
        assert_eq!(again.unchanged, 5);

        // Shrink and change a gateway: the no longer desired ones go, foreign ones stay.
        let gw4b: IpAddr = "10.78.0.2".parse().unwrap();
        let smaller = vec![
            DesiredRoute::device(net("10.1.0.0/16")),
            DesiredRoute::via(net("10.2.0.0/16"), gw4b).unwrap(),
            DesiredRoute::device(net("fd01::/64")),
        ];
        let report = nl.sync_routes(index, &smaller).await.unwrap();
        assert_eq!(
            report.replaced,
            vec![DesiredRoute::via(net("10.2.0.0/16"), gw4b).unwrap()]
        );
        assert_eq!(report.removed.len(), 2, "{report:?}");
        let routes = nl.routes(index).await.unwrap();
        assert_eq!(
            ours(&routes, index),
            BTreeSet::from([
                (net("10.1.0.0/16"), None),
                (net("10.2.0.0/16"), Some(gw4b)),
                (net("fd01::/64"), None),
            ])
        );
        assert!(has(&routes, "10.99.0.0/16", boot));
        assert!(has(&routes, "10.55.0.0/16", stat));
        assert!(has(&routes, "fd99::/64", stat));

        // Single-route calls: replace is idempotent, refuses a foreign prefix; delete of a
        // missing route and of a foreign prefix changes nothing.
        let extra = DesiredRoute::device(net("fd03::/64"));
        nl.replace_route(index, &extra).await.unwrap();
        nl.replace_route(index, &extra).await.unwrap();
        assert!(has(
            &nl.routes(index).await.unwrap(),
            "fd03::/64",
            ROUTE_PROTOCOL
        ));
        let err = nl
            .replace_route(index, &DesiredRoute::device(net("10.99.0.0/16")))
            .await
            .unwrap_err();
        assert!(matches!(err, NetError::ForeignRoute { .. }), "{err}");
        nl.delete_route(index, net("fd03::/64")).await.unwrap();
        nl.delete_route(index, net("fd03::/64")).await.unwrap();
        nl.delete_route(index, net("10.99.0.0/16")).await.unwrap();
        let routes = nl.routes(index).await.unwrap();
        assert!(!has(&routes, "fd03::/64", ROUTE_PROTOCOL));
        assert!(has(&routes, "10.99.0.0/16", boot));

        // Nothing desired: all of ours go, everything else (operator, kernel) stays.
        nl.sync_routes(index, &[]).await.unwrap();
        let routes = nl.routes(index).await.unwrap();
        assert!(ours(&routes, index).is_empty(), "{routes:?}");
        assert!(has(&routes, "10.99.0.0/16", boot));
        assert!(has(&routes, "10.55.0.0/16", stat));
        assert!(has(&routes, "fd99::/64", stat));
        assert!(has(
            &routes,
            "10.78.0.0/16",
            u8::from(RouteProtocol::Kernel)
        ));

        // One bad route (gateway not on-link) fails alone; the rest is applied.
        let unreachable: IpAddr = "203.0.113.1".parse().unwrap();
        let mixed = vec![
            DesiredRoute::device(net("10.1.0.0/16")),
            DesiredRoute::via(net("10.4.0.0/16"), unreachable).unwrap(),
        ];
        match nl.sync_routes(index, &mixed).await {
            Err(err @ NetError::Incomplete { attempted: 2, .. }) => {
                let msg = err.to_string();
                assert!(msg.starts_with("1 of 2 route changes"), "{msg}");
                assert!(msg.contains("10.4.0.0/16 via 203.0.113.1"), "{msg}");
            }
            other => panic!("expected a partial failure, got {other:?}"),
        }
        let routes = nl.routes(index).await.unwrap();
        assert_eq!(
            ours(&routes, index),
            BTreeSet::from([(net("10.1.0.0/16"), None)])
        );
    });
}

#[test]
fn links_wireguard_unsupported_delete_idempotent_up_down_mtu() {
    if !privileged("links_wireguard_unsupported_delete_idempotent_up_down_mtu") {
        return;
    }
    in_private_netns(|| async {
        let nl = Netlink::connect().await.unwrap();
        let raw = raw();

        match nl.create_wireguard_link("wgmtest9").await {
            // No module here: the typed error the kernel backend falls back on.
            Err(err @ NetError::WireGuardUnsupported { .. }) => {
                assert!(err.to_string().contains("wgmtest9"), "{err}");
                assert_eq!(err.raw_os_error(), Some(libc::EOPNOTSUPP));
                eprintln!("as expected here: {err}");
            }
            // A kernel with WireGuard: the link exists and a second create reuses it.
            Ok(index) => {
                assert_eq!(nl.create_wireguard_link("wgmtest9").await.unwrap(), index);
                nl.delete_link("wgmtest9").await.unwrap();
            }
            Err(other) => panic!("unexpected error: {other}"),
        }

        assert_eq!(nl.link_index("nosuch0").await.unwrap(), None);
        nl.delete_link("nosuch0").await.unwrap();

        let index = standin(&nl).await;
        // A link of that name that is not WireGuard is reported, not reused.
        match nl.create_wireguard_link(IFNAME).await {
            Err(NetError::WireGuardUnsupported { .. } | NetError::LinkKindMismatch { .. }) => {}
            other => panic!("unexpected: {other:?}"),
        }

        nl.set_mtu(index, 1380).await.unwrap();
        let mtu = link(&raw, index)
            .await
            .attributes
            .into_iter()
            .find_map(|a| match a {
                LinkAttribute::Mtu(m) => Some(m),
                _ => None,
            });
        assert_eq!(mtu, Some(1380));
        nl.set_link_down(index).await.unwrap();
        assert!(!link(&raw, index).await.header.flags.contains(LinkFlags::Up));
        nl.set_link_up(index).await.unwrap();
        assert!(link(&raw, index).await.header.flags.contains(LinkFlags::Up));

        nl.delete_link(IFNAME).await.unwrap();
        assert_eq!(nl.link_index(IFNAME).await.unwrap(), None);
        nl.delete_link(IFNAME).await.unwrap();
    });
}

#[test]
fn forwarding_enable_and_restore_stay_in_the_private_namespace() {
    if !privileged("forwarding_enable_and_restore_stay_in_the_private_namespace") {
        return;
    }
    let proc_sys = Path::new(PROC_SYS);
    let host_before = net::read_forwarding(proc_sys).unwrap();
    let (to_main, from_netns) = mpsc::channel::<()>();
    let (to_netns, from_main) = mpsc::channel::<()>();
    let checker = std::thread::spawn(move || {
        // While the namespace has forwarding on, the host must still show its own values.
        from_netns.recv().unwrap();
        let during = net::read_forwarding(Path::new(PROC_SYS)).unwrap();
        to_netns.send(()).unwrap();
        during
    });
    in_private_netns(move || async move {
        let proc_sys = Path::new(PROC_SYS);
        // Guard: /proc/sys/net must show this thread's (empty) namespace before anything is
        // written, or the test would flip the host's switches.
        let conf: BTreeSet<String> = std::fs::read_dir(proc_sys.join("net/ipv4/conf"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            conf,
            BTreeSet::from(["all".into(), "default".into(), "lo".into()]),
            "/proc/sys/net does not follow the thread's namespace"
        );
        let off = ForwardingState {
            ipv4: false,
            ipv6: Some(false),
        };
        net::restore_forwarding(proc_sys, off).unwrap();
        assert_eq!(net::read_forwarding(proc_sys).unwrap(), off);

        let previous = net::enable_forwarding(proc_sys).unwrap();
        assert_eq!(previous, off);
        let on = ForwardingState {
            ipv4: true,
            ipv6: Some(true),
        };
        assert_eq!(net::read_forwarding(proc_sys).unwrap(), on);
        // Enabling again reports "was on".
        assert_eq!(net::enable_forwarding(proc_sys).unwrap(), on);

        to_main.send(()).unwrap();
        from_main.recv().unwrap();

        net::restore_forwarding(proc_sys, previous).unwrap();
        assert_eq!(net::read_forwarding(proc_sys).unwrap(), off);
    });
    let host_during = checker.join().unwrap();
    assert_eq!(host_during, host_before, "the host's forwarding changed");
    assert_eq!(net::read_forwarding(proc_sys).unwrap(), host_before);
}
