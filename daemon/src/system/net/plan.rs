//! Pure decisions: what to add, replace and delete so that an interface's addresses and routes
//! become the desired ones. No I/O here; the async shell in `netlink.rs` reads the live state,
//! calls these functions and applies their plans.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use super::NetError;

/// `RT_SCOPE_UNIVERSE`: routes through a gateway (and every IPv6 route).
pub const SCOPE_UNIVERSE: u8 = 0;
/// `RT_SCOPE_LINK`: an IPv4 route straight onto the interface (no gateway), as iproute2 sets it.
pub const SCOPE_LINK: u8 = 253;
/// The metric the daemon's IPv4 routes carry (the kernel default when none is given).
pub const METRIC_V4: u32 = 0;
/// The metric the daemon's IPv6 routes carry (`IP6_RT_PRIO_USER`, the kernel default).
pub const METRIC_V6: u32 = 1024;

/// A route the daemon wants on its interface: a canonical destination (host bits cleared) and an
/// optional gateway of the same address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DesiredRoute {
    destination: IpNet,
    gateway: Option<IpAddr>,
}

impl DesiredRoute {
    /// A route straight onto the interface (`dev wg0`, scope link for IPv4). The destination is
    /// canonicalised: `10.1.2.3/16` becomes `10.1.0.0/16`.
    pub fn device(destination: IpNet) -> Self {
        Self {
            destination: destination.trunc(),
            gateway: None,
        }
    }

    /// A route through `gateway` on the interface. Fails when the gateway's address family
    /// differs from the destination's. The destination is canonicalised as in [`Self::device`].
    pub fn via(destination: IpNet, gateway: IpAddr) -> Result<Self, NetError> {
        if destination.addr().is_ipv4() != gateway.is_ipv4() {
            return Err(NetError::GatewayFamily {
                destination,
                gateway,
            });
        }
        Ok(Self {
            destination: destination.trunc(),
            gateway: Some(gateway),
        })
    }

    /// The canonical destination prefix.
    pub fn destination(&self) -> IpNet {
        self.destination
    }

    /// The gateway, if the route goes through one.
    pub fn gateway(&self) -> Option<IpAddr> {
        self.gateway
    }

    /// The metric the daemon installs this route with ([`METRIC_V4`] or [`METRIC_V6`]).
    pub fn metric(&self) -> u32 {
        match self.destination {
            IpNet::V4(_) => METRIC_V4,
            IpNet::V6(_) => METRIC_V6,
        }
    }

    /// The scope the kernel reports for this route once installed: link for an IPv4 route
    /// without gateway, universe otherwise (IPv6 has no route scopes).
    pub fn scope(&self) -> u8 {
        match (self.destination, self.gateway) {
            (IpNet::V4(_), None) => SCOPE_LINK,
            _ => SCOPE_UNIVERSE,
        }
    }

    /// Whether the installed route `r` already is this route (gateway, metric and scope).
    fn is_satisfied_by(&self, r: &InstalledRoute) -> bool {
        r.destination == self.destination
            && r.gateway == self.gateway
            && r.metric == self.metric()
            && r.scope == self.scope()
    }
}

impl std::fmt::Display for DesiredRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.gateway {
            Some(gw) => write!(f, "{} via {gw}", self.destination),
            None => write!(f, "{}", self.destination),
        }
    }
}

/// One route of the main routing table as the kernel reports it (IPv4 or IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstalledRoute {
    /// Destination prefix (`0.0.0.0/0` / `::/0` for a default route).
    pub destination: IpNet,
    /// Gateway, if any.
    pub gateway: Option<IpAddr>,
    /// Output interface index; `None` for multipath or interface-less routes (blackhole…).
    pub oif: Option<u32>,
    /// Route protocol number (`proto`): 2 kernel, 3 boot, 4 static, … [`super::ROUTE_PROTOCOL`] ours.
    pub protocol: u8,
    /// Route metric (`RTA_PRIORITY`, 0 when absent).
    pub metric: u32,
    /// Route scope (`RT_SCOPE_*`).
    pub scope: u8,
}

impl InstalledRoute {
    /// Whether this route belongs to the daemon on `ifindex`: protocol `proto` on that interface
    /// (a multipath route never is, even with a leg on it: its other legs may be an operator's).
    pub fn is_ours(&self, ifindex: u32, proto: u8) -> bool {
        self.protocol == proto && self.oif == Some(ifindex)
    }
}

impl std::fmt::Display for InstalledRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.destination)?;
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        if let Some(oif) = self.oif {
            write!(f, " dev #{oif}")?;
        }
        write!(f, " proto {} metric {}", self.protocol, self.metric)
    }
}

/// What [`plan_route_sync`] decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutePlan {
    /// Routes we do not have yet, to be created *exclusively* (`NLM_F_CREATE | NLM_F_EXCL`, never
    /// `NLM_F_REPLACE`): the kernel refuses with `EEXIST` when any route to that prefix at that
    /// metric exists, on any interface, which is how a foreign route elsewhere is detected
    /// without reading the table.
    pub add: Vec<DesiredRoute>,
    /// Our routes to update in place (`NLM_F_REPLACE`): ours exists at the desired metric but
    /// differs (gateway, scope).
    pub replace: Vec<DesiredRoute>,
    /// Our routes to delete (always protocol ours on our interface).
    pub delete: Vec<InstalledRoute>,
    /// Desired routes already installed exactly.
    pub unchanged: Vec<DesiredRoute>,
    /// Desired routes whose destination another owner already routes through our interface;
    /// left alone (neither installed nor replaced) so an operator's route is never overwritten.
    pub foreign: Vec<DesiredRoute>,
}

impl RoutePlan {
    /// Whether applying the plan writes nothing.
    pub fn is_noop(&self) -> bool {
        self.add.is_empty() && self.replace.is_empty() && self.delete.is_empty()
    }
}

/// Decides how to make the daemon's routes on `ifindex` equal to `desired`.
///
/// `on_interface` is the part of the main table that matters here, as a kernel dump filtered by
/// output interface returns it: every route that leaves through `ifindex`, any protocol (ours,
/// the operator's, the kernel's connected routes, multipath routes with a leg on it). The rest
/// of the table is not needed: whether another interface holds a desired prefix is answered by
/// the kernel when the route is created exclusively (see [`RoutePlan::add`]).
///
/// Rules:
/// - a route is *ours* when its protocol is `proto` and its output interface is `ifindex`; only
///   ours are ever deleted or replaced;
/// - a desired destination already installed exactly (gateway, metric, scope) is unchanged;
/// - a desired destination that any other route in `on_interface` has (an operator's static or
///   boot route on our interface at any metric, the kernel's connected route, a multipath
///   route) is left to that route and reported in [`RoutePlan::foreign`]; exact prefix only,
///   longer or shorter prefixes coexist;
/// - ours at the desired metric but different (gateway, scope) is replaced in place;
/// - otherwise it is added exclusively; the caller reports an `EEXIST` as foreign too;
/// - ours whose destination is not desired, and stale duplicates of ours (another metric,
///   or a wrong route shadowed by a foreign one) are deleted.
///
/// Desired routes with the same destination collapse to the first one.
pub fn plan_route_sync(
    ifindex: u32,
    on_interface: &[InstalledRoute],
    desired: &[DesiredRoute],
    proto: u8,
) -> RoutePlan {
    let mut wanted: BTreeMap<IpNet, DesiredRoute> = BTreeMap::new();
    for d in desired {
        let d = DesiredRoute {
            destination: d.destination.trunc(),
            gateway: d.gateway,
        };
        wanted.entry(d.destination).or_insert(d);
    }

    let mut plan = RoutePlan::default();
    for d in wanted.values() {
        let ours: Vec<&InstalledRoute> = on_interface
            .iter()
            .filter(|r| r.destination == d.destination && r.is_ours(ifindex, proto))
            .collect();
        let foreign = on_interface
            .iter()
            .any(|r| r.destination == d.destination && !r.is_ours(ifindex, proto));
        if let Some(keep) = ours.iter().find(|r| d.is_satisfied_by(r)) {
            plan.unchanged.push(*d);
            plan.delete
                .extend(ours.iter().filter(|r| !std::ptr::eq(**r, *keep)).copied());
        } else if foreign {
            plan.foreign.push(*d);
            plan.delete.extend(ours.iter().copied());
        } else {
            if ours.iter().any(|r| r.metric == d.metric()) {
                plan.replace.push(*d);
            } else {
                plan.add.push(*d);
            }
            // The route at our metric is updated in place; others of ours are stale.
            plan.delete
                .extend(ours.iter().filter(|r| r.metric != d.metric()).copied());
        }
    }
    plan.delete.extend(
        on_interface
            .iter()
            .filter(|r| r.is_ours(ifindex, proto) && !wanted.contains_key(&r.destination)),
    );
    plan.delete.sort();
    plan.delete.dedup();
    plan
}

/// What [`plan_address_sync`] decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressPlan {
    /// Addresses to add.
    pub add: Vec<IpNet>,
    /// Addresses to remove (removed before adding, so an address can change its prefix length).
    pub remove: Vec<IpNet>,
    /// Desired addresses already present.
    pub unchanged: Vec<IpNet>,
}

impl AddressPlan {
    /// Whether applying the plan writes nothing.
    pub fn is_noop(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }
}

/// Whether `addr` is an IPv6 link-local address (`fe80::/10`), which the kernel manages and the
/// daemon never removes.
pub fn is_ipv6_link_local(addr: IpAddr) -> bool {
    matches!(addr, IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80)
}

/// Decides how to make an interface's addresses equal to `desired`. An address is the pair
/// address + prefix length (`10.78.1.2/16` and `10.78.1.2/24` differ). Present addresses that are
/// not desired are removed, except IPv6 link-local ones; duplicates in `desired` count once.
pub fn plan_address_sync(current: &[IpNet], desired: &[IpNet]) -> AddressPlan {
    let have: BTreeSet<IpNet> = current.iter().copied().collect();
    let want: BTreeSet<IpNet> = desired.iter().copied().collect();
    AddressPlan {
        add: want.difference(&have).copied().collect(),
        remove: have
            .difference(&want)
            .filter(|a| !is_ipv6_link_local(a.addr()))
            .copied()
            .collect(),
        unchanged: want.intersection(&have).copied().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IF: u32 = 7;
    const OURS: u8 = 87;
    const BOOT: u8 = 3;
    const STATIC: u8 = 4;
    const KERNEL: u8 = 2;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn dev(s: &str) -> DesiredRoute {
        DesiredRoute::device(net(s))
    }
    fn via(s: &str, gw: &str) -> DesiredRoute {
        DesiredRoute::via(net(s), ip(gw)).unwrap()
    }
    /// An installed route as the kernel would report what we installed for `d`.
    fn installed(d: DesiredRoute) -> InstalledRoute {
        InstalledRoute {
            destination: d.destination(),
            gateway: d.gateway(),
            oif: Some(IF),
            protocol: OURS,
            metric: d.metric(),
            scope: d.scope(),
        }
    }
    fn with_proto(mut r: InstalledRoute, protocol: u8) -> InstalledRoute {
        r.protocol = protocol;
        r
    }
    fn on(mut r: InstalledRoute, oif: u32) -> InstalledRoute {
        r.oif = Some(oif);
        r
    }

    #[test]
    fn desired_routes_are_canonical() {
        assert_eq!(dev("10.1.2.3/16").destination(), net("10.1.0.0/16"));
        assert_eq!(
            via("fd00:1:2:3::9/48", "fd00::1").destination(),
            net("fd00:1:2::/48")
        );
        assert!(DesiredRoute::via(net("10.1.0.0/16"), ip("fd00::1")).is_err());
        assert!(DesiredRoute::via(net("fd01::/64"), ip("10.0.0.1")).is_err());
        assert_eq!(dev("10.1.0.0/16").scope(), SCOPE_LINK);
        assert_eq!(via("10.1.0.0/16", "10.78.0.1").scope(), SCOPE_UNIVERSE);
        assert_eq!(dev("fd01::/64").scope(), SCOPE_UNIVERSE);
        assert_eq!(dev("fd01::/64").metric(), METRIC_V6);
    }

    fn multipath(mut r: InstalledRoute) -> InstalledRoute {
        r.oif = None;
        r.gateway = None;
        r
    }

    #[test]
    fn route_plan_table() {
        struct Case {
            name: &'static str,
            on_interface: Vec<InstalledRoute>,
            desired: Vec<DesiredRoute>,
            add: Vec<DesiredRoute>,
            replace: Vec<DesiredRoute>,
            delete: Vec<InstalledRoute>,
            unchanged: Vec<DesiredRoute>,
            foreign: Vec<DesiredRoute>,
        }
        let cases = vec![
            Case {
                name: "empty",
                on_interface: vec![],
                desired: vec![],
                add: vec![],
                replace: vec![],
                delete: vec![],
                unchanged: vec![],
                foreign: vec![],
            },
            Case {
                name: "desired missing is added exclusively, v4 and v6",
                on_interface: vec![],
                desired: vec![dev("10.1.0.0/16"), via("fd01::/64", "fd00::1")],
                add: vec![dev("10.1.0.0/16"), via("fd01::/64", "fd00::1")],
                replace: vec![],
                delete: vec![],
                unchanged: vec![],
                foreign: vec![],
            },
            Case {
                name: "already installed is unchanged (non-canonical desired)",
                on_interface: vec![installed(dev("10.1.0.0/16")), installed(dev("fd01::/64"))],
                desired: vec![dev("10.1.9.9/16"), dev("fd01::5/64")],
                add: vec![],
                replace: vec![],
                delete: vec![],
                unchanged: vec![dev("10.1.0.0/16"), dev("fd01::/64")],
                foreign: vec![],
            },
            Case {
                name: "ours not desired is deleted, v4 and v6",
                on_interface: vec![installed(dev("10.2.0.0/16")), installed(dev("fd02::/64"))],
                desired: vec![],
                add: vec![],
                replace: vec![],
                delete: vec![installed(dev("10.2.0.0/16")), installed(dev("fd02::/64"))],
                unchanged: vec![],
                foreign: vec![],
            },
            Case {
                name: "foreign routes on the interface survive (boot, static, kernel, gateway)",
                on_interface: vec![
                    with_proto(installed(dev("10.3.0.0/16")), BOOT),
                    with_proto(installed(dev("fd03::/64")), STATIC),
                    with_proto(installed(dev("10.78.0.0/16")), KERNEL),
                    with_proto(installed(via("10.33.0.0/16", "10.78.0.1")), STATIC),
                ],
                desired: vec![],
                add: vec![],
                replace: vec![],
                delete: vec![],
                unchanged: vec![],
                foreign: vec![],
            },
            Case {
                name: "our protocol on another interface is not ours",
                on_interface: vec![on(installed(dev("10.4.0.0/16")), IF + 1)],
                desired: vec![],
                add: vec![],
                replace: vec![],
                delete: vec![],
                unchanged: vec![],
                foreign: vec![],
            },
            Case {
                name: "foreign route with a desired prefix wins and is not replaced",
                on_interface: vec![
                    with_proto(installed(dev("10.5.0.0/16")), STATIC),
                    on(with_proto(installed(dev("fd05::/64")), BOOT), IF + 1),
                ],
                desired: vec![dev("10.5.0.0/16"), dev("fd05::/64")],
                add: vec![],
                replace: vec![],
                delete: vec![],
                unchanged: vec![],
                foreign: vec![dev("10.5.0.0/16"), dev("fd05::/64")],
            },
            Case {
                name: "foreign prefix at another metric wins over our wrong route, which is removed",
                on_interface: vec![
                    installed(via("10.6.0.0/16", "10.78.0.1")),
                    InstalledRoute {
                        metric: 100,
                        ..with_proto(installed(dev("10.6.0.0/16")), STATIC)
                    },
                ],
                desired: vec![dev("10.6.0.0/16")],
                add: vec![],
                replace: vec![],
                delete: vec![installed(via("10.6.0.0/16", "10.78.0.1"))],
                unchanged: vec![],
                foreign: vec![dev("10.6.0.0/16")],
            },
            Case {
                name: "the kernel's connected route blocks the same prefix",
                on_interface: vec![InstalledRoute {
                    metric: 256,
                    ..with_proto(installed(dev("fd00:78::/64")), KERNEL)
                }],
                desired: vec![dev("fd00:78::/64")],
                add: vec![],
                replace: vec![],
                delete: vec![],
                unchanged: vec![],
                foreign: vec![dev("fd00:78::/64")],
            },
            Case {
                name: "a multipath route through the interface is never ours and blocks its prefix",
                on_interface: vec![
                    multipath(installed(via("fd09::/64", "fd00::1"))),
                    multipath(with_proto(
                        installed(via("10.9.0.0/16", "10.78.0.1")),
                        STATIC,
                    )),
                ],
                desired: vec![via("fd09::/64", "fd00::1")],
                add: vec![],
                replace: vec![],
                delete: vec![],
                unchanged: vec![],
                foreign: vec![via("fd09::/64", "fd00::1")],
            },
            Case {
                name: "ours exact is kept even when a foreign one exists too",
                on_interface: vec![
                    installed(dev("fd06::/64")),
                    InstalledRoute {
                        metric: 256,
                        ..with_proto(installed(dev("fd06::/64")), KERNEL)
                    },
                ],
                desired: vec![dev("fd06::/64")],
                add: vec![],
                replace: vec![],
                delete: vec![],
                unchanged: vec![dev("fd06::/64")],
                foreign: vec![],
            },
            Case {
                name: "gateway change of ours is a replace in place, v4 and v6",
                on_interface: vec![
                    installed(via("10.7.0.0/16", "10.78.0.1")),
                    installed(via("fd07::/64", "fd00::1")),
                ],
                desired: vec![via("10.7.0.0/16", "10.78.0.2"), dev("fd07::/64")],
                add: vec![],
                replace: vec![via("10.7.0.0/16", "10.78.0.2"), dev("fd07::/64")],
                delete: vec![],
                unchanged: vec![],
                foreign: vec![],
            },
            Case {
                name: "v4 device route with the wrong scope is replaced",
                on_interface: vec![InstalledRoute {
                    scope: SCOPE_UNIVERSE,
                    ..installed(dev("10.8.0.0/16"))
                }],
                desired: vec![dev("10.8.0.0/16")],
                add: vec![],
                replace: vec![dev("10.8.0.0/16")],
                delete: vec![],
                unchanged: vec![],
                foreign: vec![],
            },
            Case {
                name: "ours only at a stale metric: add at ours, delete the stale one",
                on_interface: vec![InstalledRoute {
                    metric: 50,
                    ..installed(dev("10.9.0.0/16"))
                }],
                desired: vec![dev("10.9.0.0/16")],
                add: vec![dev("10.9.0.0/16")],
                replace: vec![],
                delete: vec![InstalledRoute {
                    metric: 50,
                    ..installed(dev("10.9.0.0/16"))
                }],
                unchanged: vec![],
                foreign: vec![],
            },
            Case {
                name: "ours wrong at our metric plus a stale metric: replace, delete the stale",
                on_interface: vec![
                    installed(via("fd0a::/64", "fd00::1")),
                    InstalledRoute {
                        metric: 50,
                        ..installed(dev("fd0a::/64"))
                    },
                ],
                desired: vec![via("fd0a::/64", "fd00::2")],
                add: vec![],
                replace: vec![via("fd0a::/64", "fd00::2")],
                delete: vec![InstalledRoute {
                    metric: 50,
                    ..installed(dev("fd0a::/64"))
                }],
                unchanged: vec![],
                foreign: vec![],
            },
            Case {
                name: "duplicate desired destinations collapse to the first",
                on_interface: vec![],
                desired: vec![
                    via("10.10.0.0/16", "10.78.0.1"),
                    via("10.10.1.1/16", "10.78.0.2"),
                ],
                add: vec![via("10.10.0.0/16", "10.78.0.1")],
                replace: vec![],
                delete: vec![],
                unchanged: vec![],
                foreign: vec![],
            },
            Case {
                name: "longer and shorter foreign prefixes do not block ours",
                on_interface: vec![
                    with_proto(installed(dev("10.0.0.0/8")), STATIC),
                    with_proto(installed(dev("10.11.1.0/24")), BOOT),
                ],
                desired: vec![dev("10.11.0.0/16")],
                add: vec![dev("10.11.0.0/16")],
                replace: vec![],
                delete: vec![],
                unchanged: vec![],
                foreign: vec![],
            },
        ];
        for c in cases {
            let plan = plan_route_sync(IF, &c.on_interface, &c.desired, OURS);
            let mut delete = c.delete.clone();
            delete.sort();
            assert_eq!(plan.add, c.add, "{}: add", c.name);
            assert_eq!(plan.replace, c.replace, "{}: replace", c.name);
            assert_eq!(plan.delete, delete, "{}: delete", c.name);
            assert_eq!(plan.unchanged, c.unchanged, "{}: unchanged", c.name);
            assert_eq!(plan.foreign, c.foreign, "{}: foreign", c.name);
            for r in &plan.delete {
                assert!(r.is_ours(IF, OURS), "{}: deletes foreign {r}", c.name);
            }
            for d in &plan.replace {
                assert!(
                    c.on_interface
                        .iter()
                        .any(|r| r.destination == d.destination()
                            && r.metric == d.metric()
                            && r.is_ours(IF, OURS)),
                    "{}: replaces {d}, which is not ours at that metric",
                    c.name
                );
            }
        }
    }

    #[test]
    fn applying_a_route_plan_converges() {
        let on_interface = vec![
            installed(dev("10.2.0.0/16")),
            installed(via("10.7.0.0/16", "10.78.0.1")),
            with_proto(installed(dev("10.3.0.0/16")), BOOT),
        ];
        let desired = vec![
            dev("10.1.0.0/16"),
            via("10.7.0.0/16", "10.78.0.9"),
            dev("fd01::/64"),
        ];
        let plan = plan_route_sync(IF, &on_interface, &desired, OURS);
        // Simulate the kernel: add and replace key on (destination, metric), delete removes
        // exactly; an exclusive add never meets an existing route here.
        let mut after: Vec<InstalledRoute> = on_interface
            .iter()
            .filter(|r| !plan.delete.contains(r))
            .copied()
            .collect();
        for d in &plan.add {
            assert!(
                !after
                    .iter()
                    .any(|r| r.destination == d.destination() && r.metric == d.metric()),
                "exclusive add of {d} would fail"
            );
            after.push(installed(*d));
        }
        for d in &plan.replace {
            after.retain(|r| !(r.destination == d.destination() && r.metric == d.metric()));
            after.push(installed(*d));
        }
        let again = plan_route_sync(IF, &after, &desired, OURS);
        assert!(again.is_noop(), "{again:?}");
        assert_eq!(again.unchanged.len(), 3);
        assert!(after.contains(&with_proto(installed(dev("10.3.0.0/16")), BOOT)));
    }

    #[test]
    fn address_plan_table() {
        let n = |v: &[&str]| v.iter().map(|s| net(s)).collect::<Vec<_>>();
        struct Case {
            name: &'static str,
            current: Vec<IpNet>,
            desired: Vec<IpNet>,
            add: Vec<IpNet>,
            remove: Vec<IpNet>,
            unchanged: Vec<IpNet>,
        }
        let cases = vec![
            Case {
                name: "fresh interface",
                current: vec![],
                desired: n(&["10.78.1.2/16", "fd00:aa::2/64"]),
                add: n(&["10.78.1.2/16", "fd00:aa::2/64"]),
                remove: vec![],
                unchanged: vec![],
            },
            Case {
                name: "already configured; link-local kept",
                current: n(&["10.78.1.2/16", "fd00:aa::2/64", "fe80::1/64"]),
                desired: n(&["10.78.1.2/16", "fd00:aa::2/64"]),
                add: vec![],
                remove: vec![],
                unchanged: n(&["10.78.1.2/16", "fd00:aa::2/64"]),
            },
            Case {
                name: "stale addresses removed, link-local kept",
                current: n(&[
                    "10.78.9.9/16",
                    "fd00:bb::2/64",
                    "fe80::abcd/64",
                    "febf::1/64",
                ]),
                desired: n(&["10.78.1.2/16"]),
                add: n(&["10.78.1.2/16"]),
                remove: n(&["10.78.9.9/16", "fd00:bb::2/64"]),
                unchanged: vec![],
            },
            Case {
                name: "prefix length change is remove + add",
                current: n(&["10.78.1.2/24", "fd00:aa::2/48"]),
                desired: n(&["10.78.1.2/16", "fd00:aa::2/64"]),
                add: n(&["10.78.1.2/16", "fd00:aa::2/64"]),
                remove: n(&["10.78.1.2/24", "fd00:aa::2/48"]),
                unchanged: vec![],
            },
            Case {
                name: "duplicates in desired count once",
                current: n(&["10.78.1.2/16"]),
                desired: n(&["10.78.1.2/16", "10.78.1.2/16"]),
                add: vec![],
                remove: vec![],
                unchanged: n(&["10.78.1.2/16"]),
            },
        ];
        for c in cases {
            let plan = plan_address_sync(&c.current, &c.desired);
            assert_eq!(plan.add, c.add, "{}: add", c.name);
            assert_eq!(plan.remove, c.remove, "{}: remove", c.name);
            assert_eq!(plan.unchanged, c.unchanged, "{}: unchanged", c.name);
        }
    }

    #[test]
    fn link_local_detection() {
        assert!(is_ipv6_link_local(ip("fe80::1")));
        assert!(is_ipv6_link_local(ip("febf:ffff::1")));
        assert!(!is_ipv6_link_local(ip("fec0::1")));
        assert!(!is_ipv6_link_local(ip("fd00::1")));
        assert!(!is_ipv6_link_local(ip("169.254.1.1")));
    }
}
