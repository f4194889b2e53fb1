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

use futures_util::{StreamExt, TryStreamExt};
use ipnet::IpNet;
use rtnetlink::packet_core::{
    NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REQUEST, NetlinkMessage,
    NetlinkPayload,
};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
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
    in_private_netns_on(false, test);
}

/// [`in_private_netns`] on a multi-thread runtime (as the daemon's): its worker threads are
/// created by the unshared thread, so they share its namespace.
fn in_private_netns_multi_thread<F, Fut>(test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    in_private_netns_on(true, test);
}

fn in_private_netns_on<F, Fut>(multi_thread: bool, test: F)
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
        let runtime = if multi_thread {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
        } else {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        }
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

/// The daemon's tasks share one netlink socket, on a multi-thread runtime, and the kernel refuses
/// a second dump request on a socket while one is running (`EBUSY`; at start the reconcile
/// loop's route dump met LAN discovery's interface dump that way). Every dump waits for its turn
/// (and one the kernel marks interrupted by a change is read again), so many at once, from
/// several tasks, while routes keep changing, all succeed.
#[test]
fn concurrent_dumps_on_one_socket_all_succeed() {
    if !privileged("concurrent_dumps_on_one_socket_all_succeed") {
        return;
    }
    in_private_netns_multi_thread(|| async {
        let nl = Netlink::connect().await.unwrap();
        let index = standin(&nl).await;
        nl.sync_addresses(index, &[net("10.79.1.2/16"), net("fd00:79::2/64")])
            .await
            .unwrap();
        // Another socket keeps adding routes on the interface while this one dumps, and the
        // route dumps grow to several messages each.
        let writer = tokio::spawn(async move {
            let routes = (0..4_000u32).map(|i| {
                RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(Ipv4Addr::from(0x0c00_0000 + (i << 8)), 24)
                    .output_interface(index)
                    .scope(RouteScope::Link)
                    .protocol(RouteProtocol::Static)
                    .build()
            });
            add_all(&raw(), routes.collect()).await;
        });
        let mut rounds = 0;
        while !writer.is_finished() || rounds < 20 {
            let tasks: Vec<_> = (0..6)
                .map(|i| {
                    let nl = nl.clone();
                    tokio::spawn(async move {
                        match i % 3 {
                            0 => nl.routes(index).await.map(|r| r.len()),
                            1 => nl.addresses(index).await.map(|a| a.len()),
                            _ => nl.interfaces().await.map(|i| i.len()),
                        }
                    })
                })
                .collect();
            for (i, task) in tasks.into_iter().enumerate() {
                let found = task
                    .await
                    .unwrap()
                    .unwrap_or_else(|e| panic!("round {rounds}, dump {i}: {e}"));
                assert!(found > 0, "round {rounds}, dump {i}: nothing listed");
            }
            rounds += 1;
        }
        writer.await.unwrap();
        let all = nl.routes(index).await.unwrap();
        assert!(all.len() >= 4_000, "{} routes", all.len());
        eprintln!("{rounds} rounds of 6 concurrent dumps while 4 000 routes were added");
    });
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

// ---- routes with a full table and other owners' routes ---------------------------------------

const UPLINK: &str = "wgmup0";

/// Creates the stand-in for the host's uplink (another interface than the mesh's), up, with
/// `192.168.1.2/24` and `fd00:1::2/64`, and returns its index. Dummy or veth, as [`standin`].
async fn uplink(nl: &Netlink) -> u32 {
    let raw = raw();
    let peer = format!("{UPLINK}p");
    if raw
        .link()
        .add(LinkDummy::new(UPLINK).build())
        .execute()
        .await
        .is_err()
    {
        raw.link()
            .add(LinkVeth::new(UPLINK, &peer).build())
            .execute()
            .await
            .expect("neither dummy nor veth links can be created");
        let p = nl.link_index(&peer).await.unwrap().expect("veth peer");
        nl.set_link_up(p).await.unwrap();
    }
    let index = nl.link_index(UPLINK).await.unwrap().expect("uplink");
    nl.set_link_up(index).await.unwrap();
    nl.sync_addresses(index, &[net("192.168.1.2/24"), net("fd00:1::2/64")])
        .await
        .unwrap();
    index
}

/// An operator's route (`ip route add DST [via GW] dev IF proto P [metric M]`) as a message.
fn operator_route(
    dst: &str,
    gateway: Option<&str>,
    ifindex: u32,
    protocol: RouteProtocol,
    metric: Option<u32>,
) -> RouteMessage {
    let dst = net(dst);
    match dst {
        IpNet::V4(d) => {
            let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(d.network(), d.prefix_len())
                .output_interface(ifindex)
                .protocol(protocol);
            b = match gateway {
                Some(gw) => b.gateway(gw.parse().unwrap()),
                None => b.scope(RouteScope::Link),
            };
            if let Some(m) = metric {
                b = b.priority(m);
            }
            b.build()
        }
        IpNet::V6(d) => {
            let mut b = RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(d.network(), d.prefix_len())
                .output_interface(ifindex)
                .protocol(protocol);
            if let Some(gw) = gateway {
                b = b.gateway(gw.parse().unwrap());
            }
            if let Some(m) = metric {
                b = b.priority(m);
            }
            b.build()
        }
    }
}

/// Adds `routes` through `raw`, many requests in flight at once (fast enough for thousands).
async fn add_all(raw: &Handle, routes: Vec<RouteMessage>) {
    futures_util::stream::iter(routes.into_iter().map(|r| raw.route().add(r).execute()))
        .buffer_unordered(64)
        .try_collect::<Vec<()>>()
        .await
        .expect("adding the operator's routes");
}

/// `ip route append`: create without `NLM_F_EXCL`, so that an IPv6 gateway route joins an
/// existing route to the same prefix and metric as a multipath sibling.
async fn append(raw: &Handle, route: RouteMessage) {
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewRoute(route));
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND;
    let mut replies = raw.clone().request(req).unwrap();
    while let Some(reply) = replies.next().await {
        if let NetlinkPayload::Error(e) = reply.payload {
            assert!(e.code.is_none(), "append refused: {e:?}");
        }
    }
}

/// Every route message of the main table, unfiltered (a plain socket ignores dump filters).
async fn whole_main_table(raw: &Handle) -> Vec<RouteMessage> {
    let mut all = Vec::new();
    for query in [
        RouteMessageBuilder::<Ipv4Addr>::new().build(),
        RouteMessageBuilder::<Ipv6Addr>::new().build(),
    ] {
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetRoute(query));
        req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let mut replies = raw.clone().request(req).unwrap();
        while let Some(reply) = replies.next().await {
            if let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(m)) = reply.payload
                && m.header.table == RouteHeader::RT_TABLE_MAIN
            {
                all.push(m);
            }
        }
    }
    all
}

fn dst(route: &RouteMessage) -> Option<IpNet> {
    route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(d) => {
            let ip: IpAddr = match d {
                RouteAddress::Inet(a) => (*a).into(),
                RouteAddress::Inet6(a) => (*a).into(),
                _ => return None,
            };
            IpNet::new(ip, route.header.destination_prefix_length).ok()
        }
        _ => None,
    })
}

fn is_multipath(route: &RouteMessage) -> bool {
    route
        .attributes
        .iter()
        .any(|a| matches!(a, RouteAttribute::MultiPath(_)))
}

/// The routes to `destination` as plain values (whatever their interface and protocol).
async fn routes_to(nl: &Netlink, ifindexes: &[u32], destination: &str) -> Vec<InstalledRoute> {
    let mut found = Vec::new();
    for &i in ifindexes {
        for r in nl.routes(i).await.unwrap() {
            if r.destination == net(destination) && !found.contains(&r) {
                found.push(r);
            }
        }
    }
    found
}

/// Syncs and checks that the sync read the routes on our interface and nothing else (the
/// other interfaces' routes stay in the kernel).
async fn sync_reading_only_ours(
    nl: &Netlink,
    index: u32,
    desired: &[DesiredRoute],
) -> net::RouteSyncReport {
    let on_ours = nl.routes(index).await.unwrap().len();
    let report = nl.sync_routes(index, desired).await.unwrap();
    assert_eq!(
        report.routes_read, on_ours,
        "the sync read more than the routes on our interface: {report:?}"
    );
    report
}

fn ours_to(routes: &[InstalledRoute], index: u32, destination: &str) -> usize {
    routes
        .iter()
        .filter(|r| r.destination == net(destination) && r.is_ours(index, ROUTE_PROTOCOL))
        .count()
}

#[test]
fn route_sync_reads_only_the_mesh_interface_of_a_full_table() {
    if !privileged("route_sync_reads_only_the_mesh_interface_of_a_full_table") {
        return;
    }
    in_private_netns(|| async {
        let nl = Netlink::connect().await.unwrap();
        let raw = raw();
        let index = standin(&nl).await;
        let up = uplink(&nl).await;
        nl.sync_addresses(index, &[net("10.78.1.2/16"), net("fd00:78::2/64")])
            .await
            .unwrap();
        // The kernel adds fe80::/64 with the link-local address: wait, so counts are stable.
        wait_for_link_local(&nl, index).await;

        // A router's table: 20 000 IPv4 and 2 000 IPv6 routes through the uplink, proto static.
        let started = std::time::Instant::now();
        let v4 = (0..20_000u32).map(|i| {
            let d = Ipv4Addr::from(0x0b00_0000 + (i << 8));
            RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(d, 24)
                .output_interface(up)
                .scope(RouteScope::Link)
                .protocol(RouteProtocol::Static)
                .build()
        });
        let v6 = (0..2_000u16).map(|i| {
            RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(Ipv6Addr::new(0x2001, 0xdb8, i, 0, 0, 0, 0, 0), 48)
                .output_interface(up)
                .protocol(RouteProtocol::Static)
                .build()
        });
        add_all(&raw, v4.chain(v6).collect()).await;
        let table = whole_main_table(&raw).await.len();
        assert!(table >= 22_000, "only {table} routes in the main table");
        eprintln!("22 000 foreign routes added in {:?}", started.elapsed());

        let gw4: IpAddr = "10.78.0.1".parse().unwrap();
        let gw6: IpAddr = "fd00:78::1".parse().unwrap();
        let desired = vec![
            DesiredRoute::device(net("10.1.0.0/16")),
            DesiredRoute::via(net("10.2.0.0/16"), gw4).unwrap(),
            DesiredRoute::device(net("192.168.77.0/24")),
            DesiredRoute::device(net("fd01::/64")),
            DesiredRoute::via(net("fd02::/64"), gw6).unwrap(),
        ];
        let started = std::time::Instant::now();
        let first = nl.sync_routes(index, &desired).await.unwrap();
        let first_took = started.elapsed();
        assert_eq!(first.replaced.len(), 5, "{first:?}");
        assert!(
            first.foreign.is_empty() && first.removed.is_empty(),
            "{first:?}"
        );
        // Before the sync our interface had its connected routes only (10.78.0.0/16,
        // fd00:78::/64, fe80::/64): that is all that was read, not the 22 000 others.
        assert!(first.routes_read <= 5, "read {} routes", first.routes_read);

        let started = std::time::Instant::now();
        let second = nl.sync_routes(index, &desired).await.unwrap();
        let second_took = started.elapsed();
        assert!(
            second.replaced.is_empty() && second.removed.is_empty() && second.foreign.is_empty(),
            "{second:?}"
        );
        assert_eq!(second.unchanged, 5);
        let on_ours = nl.routes(index).await.unwrap();
        assert_eq!(
            second.routes_read,
            on_ours.len(),
            "read more than the routes on our interface: {on_ours:?}"
        );
        assert!(
            second.routes_read <= 10,
            "read {} routes",
            second.routes_read
        );
        assert_eq!(ours(&on_ours, index).len(), 5);
        eprintln!(
            "sync with {table} routes in the table: first pass {first_took:?} ({} read), \
             no-op pass {second_took:?} ({} read)",
            first.routes_read, second.routes_read
        );

        // The single-route calls read no more than that either, and work.
        let extra = DesiredRoute::device(net("10.3.0.0/16"));
        nl.replace_route(index, &extra).await.unwrap();
        nl.delete_route(index, net("10.3.0.0/16")).await.unwrap();
        nl.delete_route(index, net("11.0.0.0/24")).await.unwrap();
        assert_eq!(whole_main_table(&raw).await.len(), table + 5);
        assert!(nl.routes(up).await.unwrap().len() >= 22_000);
    });
}

#[test]
fn route_dumps_are_filtered_by_the_kernel() {
    if !privileged("route_dumps_are_filtered_by_the_kernel") {
        return;
    }
    in_private_netns(|| async {
        let nl = Netlink::connect().await.unwrap();
        let raw = raw();
        let index = standin(&nl).await;
        let up = uplink(&nl).await;
        nl.sync_addresses(index, &[net("10.78.1.2/16"), net("fd00:78::2/64")])
            .await
            .unwrap();
        // The kernel adds fe80::/64 with the link-local address: wait, so counts are stable.
        wait_for_link_local(&nl, index).await;
        let ours_proto = RouteProtocol::from(ROUTE_PROTOCOL);
        add_all(
            &raw,
            vec![
                operator_route("10.1.0.0/16", None, index, ours_proto, None),
                operator_route("10.2.0.0/16", None, index, RouteProtocol::Static, None),
                operator_route("10.3.0.0/16", None, up, ours_proto, None),
                operator_route("10.4.0.0/16", None, up, RouteProtocol::Static, None),
                operator_route("fd01::/64", None, index, ours_proto, None),
                operator_route("fd04::/64", None, up, RouteProtocol::Boot, None),
                operator_route(
                    "fd0f::/64",
                    Some("fd00:1::1"),
                    up,
                    RouteProtocol::Static,
                    None,
                ),
            ],
        )
        .await;
        // Our protocol on our interface but in another table.
        let mut other_table = operator_route("10.5.0.0/16", None, index, ours_proto, None);
        other_table.header.table = 100;
        add_all(&raw, vec![other_table]).await;
        // A multipath route whose first leg is on the uplink and second on our interface.
        append(
            &raw,
            operator_route(
                "fd0f::/64",
                Some("fd00:78::1"),
                index,
                RouteProtocol::Static,
                None,
            ),
        )
        .await;

        let (connection, strict, _) = rtnetlink::new_connection_with_strict_check().unwrap();
        tokio::spawn(connection);
        let dump = |ipv6: bool, protocol: RouteProtocol| {
            let query = if ipv6 {
                RouteMessageBuilder::<Ipv6Addr>::new()
                    .protocol(protocol)
                    .kind(RouteType::Unspec)
                    .output_interface(index)
                    .build()
            } else {
                RouteMessageBuilder::<Ipv4Addr>::new()
                    .protocol(protocol)
                    .kind(RouteType::Unspec)
                    .output_interface(index)
                    .build()
            };
            let request = strict.route().get(query).execute();
            async move {
                let messages: Vec<RouteMessage> = request.try_collect().await.unwrap();
                let mut got: Vec<(IpNet, bool)> = messages
                    .iter()
                    .map(|m| (dst(m).unwrap(), is_multipath(m)))
                    .collect();
                got.sort();
                got
            }
        };
        // Table main and our interface, any protocol: no uplink route, no other table, but
        // the multipath route with a leg on our interface and the connected routes.
        assert_eq!(
            dump(false, RouteProtocol::Unspec).await,
            vec![
                (net("10.1.0.0/16"), false),
                (net("10.2.0.0/16"), false),
                (net("10.78.0.0/16"), false),
            ]
        );
        assert_eq!(
            dump(true, RouteProtocol::Unspec).await,
            vec![
                (net("fd00:78::/64"), false),
                (net("fd01::/64"), false),
                (net("fd0f::/64"), true),
                (net("fe80::/64"), false),
            ]
        );
        // And by protocol.
        assert_eq!(
            dump(false, ours_proto).await,
            vec![(net("10.1.0.0/16"), false)]
        );
        assert_eq!(
            dump(true, ours_proto).await,
            vec![(net("fd01::/64"), false)]
        );

        // The daemon sees the multipath route as someone else's on its interface.
        let routes = nl.routes(index).await.unwrap();
        let mp = routes
            .iter()
            .find(|r| r.destination == net("fd0f::/64"))
            .expect("multipath route listed");
        assert_eq!(mp.oif, None);
        assert!(!mp.is_ours(index, ROUTE_PROTOCOL));
    });
}

#[test]
fn foreign_route_on_another_interface_wins_until_removed_v4_and_v6() {
    if !privileged("foreign_route_on_another_interface_wins_until_removed_v4_and_v6") {
        return;
    }
    in_private_netns(|| async {
        let nl = Netlink::connect().await.unwrap();
        let raw = raw();
        let index = standin(&nl).await;
        let up = uplink(&nl).await;
        nl.sync_addresses(index, &[net("10.78.1.2/16"), net("fd00:78::2/64")])
            .await
            .unwrap();
        // The kernel adds fe80::/64 with the link-local address: wait, so counts are stable.
        wait_for_link_local(&nl, index).await;

        // The operator's LAN routes on the uplink: `ip route add 192.168.50.0/24 dev eth0`
        // (proto boot), an IPv6 gateway route (the kind that could become a multipath
        // sibling) and an IPv6 device route.
        let operator = vec![
            operator_route("192.168.50.0/24", None, up, RouteProtocol::Boot, None),
            operator_route(
                "fd50::/64",
                Some("fd00:1::1"),
                up,
                RouteProtocol::Static,
                None,
            ),
            operator_route("fd51::/64", None, up, RouteProtocol::Boot, None),
            // At another metric than ours (0 / 1024): the exclusive create alone would let our
            // route in beside them, and ours would win.
            operator_route("172.20.0.0/16", None, up, RouteProtocol::Static, Some(100)),
            operator_route("fd52::/64", None, up, RouteProtocol::Static, Some(2048)),
        ];
        add_all(&raw, operator.clone()).await;

        let gw6: IpAddr = "fd00:78::1".parse().unwrap();
        // In the order reports list them (sorted).
        let contested = vec![
            DesiredRoute::device(net("172.20.0.0/16")),
            DesiredRoute::device(net("192.168.50.0/24")),
            DesiredRoute::via(net("fd50::/64"), gw6).unwrap(),
            DesiredRoute::device(net("fd51::/64")),
            DesiredRoute::device(net("fd52::/64")),
        ];
        let mut desired = contested.clone();
        desired.push(DesiredRoute::device(net("10.1.0.0/16")));

        let check_left_alone = || async {
            for dst in [
                "192.168.50.0/24",
                "fd50::/64",
                "fd51::/64",
                "172.20.0.0/16",
                "fd52::/64",
            ] {
                let found = routes_to(&nl, &[index, up], dst).await;
                assert_eq!(found.len(), 1, "{dst}: {found:?}");
                // On the uplink only, single path (no multipath sibling through us).
                assert_eq!(found[0].oif, Some(up), "{dst}: {found:?}");
                assert_ne!(found[0].protocol, ROUTE_PROTOCOL, "{dst}: {found:?}");
            }
            let fd50 = routes_to(&nl, &[up], "fd50::/64").await;
            assert_eq!(fd50[0].gateway, Some("fd00:1::1".parse().unwrap()));
        };

        for pass in 0..2 {
            let report = sync_reading_only_ours(&nl, index, &desired).await;
            assert_eq!(report.foreign, contested, "pass {pass}: {report:?}");
            let expected_new = if pass == 0 { 1 } else { 0 };
            assert_eq!(
                report.replaced.len(),
                expected_new,
                "pass {pass}: {report:?}"
            );
            assert!(report.removed.is_empty(), "pass {pass}: {report:?}");
            check_left_alone().await;
        }
        // The single-route call refuses as well.
        let err = nl.replace_route(index, &contested[2]).await.unwrap_err();
        assert!(matches!(err, NetError::ForeignRoute { .. }), "{err}");
        check_left_alone().await;

        // The operator removes their routes: the next sync installs ours.
        for r in operator {
            raw.route().del(r).execute().await.unwrap();
        }
        let report = sync_reading_only_ours(&nl, index, &desired).await;
        assert!(report.foreign.is_empty(), "{report:?}");
        assert_eq!(report.replaced, contested, "{report:?}");
        let on_ours = nl.routes(index).await.unwrap();
        for dst in [
            "192.168.50.0/24",
            "fd50::/64",
            "fd51::/64",
            "172.20.0.0/16",
            "fd52::/64",
        ] {
            assert_eq!(ours_to(&on_ours, index, dst), 1, "{dst}: {on_ours:?}");
        }

        // An operator's IPv6 sibling appended to our gateway route makes a multipath route:
        // from then on it is not ours alone, so it is neither replaced (an IPv6 replace would
        // drop the operator's leg) nor deleted.
        append(
            &raw,
            operator_route(
                "fd50::/64",
                Some("fd00:1::1"),
                up,
                RouteProtocol::Static,
                None,
            ),
        )
        .await;
        let moved = vec![
            DesiredRoute::device(net("10.1.0.0/16")),
            DesiredRoute::via(net("fd50::/64"), "fd00:78::5".parse().unwrap()).unwrap(),
        ];
        let report = sync_reading_only_ours(&nl, index, &moved).await;
        assert_eq!(report.foreign, vec![moved[1]], "{report:?}");
        let fd50 = routes_to(&nl, &[index, up], "fd50::/64").await;
        assert_eq!(fd50.len(), 1, "{fd50:?}");
        assert_eq!(
            fd50[0].oif, None,
            "the multipath route was changed: {fd50:?}"
        );
    });
}

#[test]
fn foreign_routes_on_the_mesh_interface_are_left_alone_at_any_metric() {
    if !privileged("foreign_routes_on_the_mesh_interface_are_left_alone_at_any_metric") {
        return;
    }
    in_private_netns(|| async {
        let nl = Netlink::connect().await.unwrap();
        let raw = raw();
        let index = standin(&nl).await;
        let _uplink = uplink(&nl).await;
        nl.sync_addresses(index, &[net("10.78.1.2/16"), net("fd00:78::2/64")])
            .await
            .unwrap();
        // The kernel adds fe80::/64 with the link-local address: wait, so counts are stable.
        wait_for_link_local(&nl, index).await;
        // `ip route add X dev wg0 proto static`, one at metric 100 (an exclusive create of ours
        // at metric 0 would succeed next to it: only the dump of our interface catches it),
        // one through a gateway, and IPv6 ones.
        let operator = vec![
            operator_route("10.60.0.0/16", None, index, RouteProtocol::Static, None),
            operator_route(
                "10.61.0.0/16",
                None,
                index,
                RouteProtocol::Static,
                Some(100),
            ),
            operator_route(
                "10.62.0.0/16",
                Some("10.78.0.1"),
                index,
                RouteProtocol::Boot,
                None,
            ),
            operator_route("fd60::/64", None, index, RouteProtocol::Static, None),
            operator_route(
                "fd61::/64",
                Some("fd00:78::1"),
                index,
                RouteProtocol::Static,
                Some(10),
            ),
        ];
        add_all(&raw, operator.clone()).await;
        let before = nl.routes(index).await.unwrap();

        let desired: Vec<DesiredRoute> = [
            "10.60.0.0/16",
            "10.61.0.0/16",
            "10.62.0.0/16",
            "fd60::/64",
            "fd61::/64",
        ]
        .into_iter()
        .map(|d| DesiredRoute::device(net(d)))
        .collect();
        for pass in 0..2 {
            let report = sync_reading_only_ours(&nl, index, &desired).await;
            assert_eq!(report.foreign, desired, "pass {pass}: {report:?}");
            assert!(
                report.replaced.is_empty() && report.removed.is_empty(),
                "pass {pass}: {report:?}"
            );
            assert_eq!(nl.routes(index).await.unwrap(), before, "pass {pass}");
        }
        let err = nl.replace_route(index, &desired[1]).await.unwrap_err();
        assert!(matches!(err, NetError::ForeignRoute { .. }), "{err}");
        nl.delete_route(index, net("10.61.0.0/16")).await.unwrap();
        nl.delete_route(index, net("fd61::/64")).await.unwrap();
        assert_eq!(nl.routes(index).await.unwrap(), before);

        // Gone: ours goes in.
        raw.route()
            .del(operator[1].clone())
            .execute()
            .await
            .unwrap();
        let report = sync_reading_only_ours(&nl, index, &desired).await;
        assert_eq!(report.replaced, vec![desired[1]], "{report:?}");
        assert_eq!(report.foreign.len(), 4, "{report:?}");
    });
}

#[test]
fn stale_routes_of_ours_go_and_operator_gateway_routes_stay() {
    if !privileged("stale_routes_of_ours_go_and_operator_gateway_routes_stay") {
        return;
    }
    in_private_netns(|| async {
        let nl = Netlink::connect().await.unwrap();
        let raw = raw();
        let index = standin(&nl).await;
        let up = uplink(&nl).await;
        nl.sync_addresses(index, &[net("10.78.1.2/16"), net("fd00:78::2/64")])
            .await
            .unwrap();
        // The kernel adds fe80::/64 with the link-local address: wait, so counts are stable.
        wait_for_link_local(&nl, index).await;
        let ours_proto = RouteProtocol::from(ROUTE_PROTOCOL);
        // Leftovers of a previous run (ours, not desired any more, one at a stale metric), the
        // operator's gateway routes on our interface, and our protocol on another interface.
        add_all(
            &raw,
            vec![
                operator_route("10.44.0.0/16", Some("10.78.0.1"), index, ours_proto, None),
                operator_route("fd44::/64", None, index, ours_proto, Some(1024)),
                operator_route("10.9.0.0/16", None, index, ours_proto, Some(50)),
                operator_route(
                    "10.66.0.0/16",
                    Some("10.78.0.1"),
                    index,
                    RouteProtocol::Static,
                    None,
                ),
                operator_route(
                    "fd66::/64",
                    Some("fd00:78::1"),
                    index,
                    RouteProtocol::Boot,
                    None,
                ),
                operator_route("10.45.0.0/16", None, up, ours_proto, None),
            ],
        )
        .await;

        let desired = vec![
            DesiredRoute::device(net("10.9.0.0/16")),
            DesiredRoute::via(net("fd0a::/64"), "fd00:78::1".parse().unwrap()).unwrap(),
        ];
        let report = sync_reading_only_ours(&nl, index, &desired).await;
        assert_eq!(report.replaced, desired, "{report:?}");
        let removed: BTreeSet<IpNet> = report.removed.iter().map(|r| r.destination).collect();
        assert_eq!(
            removed,
            set(&["10.44.0.0/16", "fd44::/64", "10.9.0.0/16"]),
            "{report:?}"
        );
        let on_ours = nl.routes(index).await.unwrap();
        assert_eq!(
            ours(&on_ours, index),
            BTreeSet::from([
                (net("10.9.0.0/16"), None),
                (net("fd0a::/64"), Some("fd00:78::1".parse().unwrap())),
            ])
        );
        let v4_ours = on_ours
            .iter()
            .find(|r| r.destination == net("10.9.0.0/16"))
            .unwrap();
        assert_eq!(v4_ours.metric, net::METRIC_V4);
        assert!(has(
            &on_ours,
            "10.66.0.0/16",
            u8::from(RouteProtocol::Static)
        ));
        assert!(has(&on_ours, "fd66::/64", u8::from(RouteProtocol::Boot)));
        assert!(has(
            &nl.routes(up).await.unwrap(),
            "10.45.0.0/16",
            ROUTE_PROTOCOL
        ));

        // IPv6: a gateway change, then a device route, are replaced in place (one route each
        // time, no multipath left behind).
        for changed in [
            DesiredRoute::via(net("fd0a::/64"), "fd00:78::5".parse().unwrap()).unwrap(),
            DesiredRoute::device(net("fd0a::/64")),
            DesiredRoute::via(net("fd0a::/64"), "fd00:78::6".parse().unwrap()).unwrap(),
        ] {
            let report = sync_reading_only_ours(&nl, index, &[desired[0], changed]).await;
            assert_eq!(report.replaced, vec![changed], "{report:?}");
            let fd0a = routes_to(&nl, &[index], "fd0a::/64").await;
            assert_eq!(fd0a.len(), 1, "{fd0a:?}");
            assert!(fd0a[0].is_ours(index, ROUTE_PROTOCOL), "{fd0a:?}");
            assert_eq!(fd0a[0].gateway, changed.gateway(), "{fd0a:?}");
        }

        // Nothing desired: only ours go.
        sync_reading_only_ours(&nl, index, &[]).await;
        let on_ours = nl.routes(index).await.unwrap();
        assert!(ours(&on_ours, index).is_empty(), "{on_ours:?}");
        assert!(has(
            &on_ours,
            "10.66.0.0/16",
            u8::from(RouteProtocol::Static)
        ));
        assert!(has(&on_ours, "fd66::/64", u8::from(RouteProtocol::Boot)));
        assert!(has(
            &nl.routes(up).await.unwrap(),
            "10.45.0.0/16",
            ROUTE_PROTOCOL
        ));
    });
}
