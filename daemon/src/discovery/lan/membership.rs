//! Which interfaces LAN discovery uses, and what it reports about them. Pure.
//!
//! The group is joined per interface (by index), never through the default route: a host with no
//! multicast or default route still has LANs. An interface is used when it is up (with carrier),
//! multicast-capable, not the loopback, not the mesh interface, and has an IPv4 address
//! ([`usable`]). Each time the interface list changes, [`plan_membership`] compares what is
//! joined with what should be and says what to leave and what to join; [`layer_report`] turns
//! the outcome into the `discovery.lan` state shown by the API.

use std::fmt;
use std::net::Ipv4Addr;

use crate::system::net::HostInterface;

/// Why an interface is not used for LAN discovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// It is the mesh (WireGuard) interface: announcing inside the mesh is gossip's job.
    MeshInterface,
    /// The loopback: nobody else is on it.
    Loopback,
    /// Administratively down or without carrier.
    Down,
    /// No `IFF_MULTICAST`.
    NotMulticast,
    /// No IPv4 address to send from.
    NoIpv4,
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::MeshInterface => "is the mesh interface",
            Self::Loopback => "is the loopback",
            Self::Down => "is down",
            Self::NotMulticast => "is not multicast-capable",
            Self::NoIpv4 => "has no IPv4 address",
        })
    }
}

/// The address LAN discovery sends from on `iface`, or why it does not use it. `wg_ifindex` is
/// the mesh interface's index.
///
/// # Errors
///
/// The [`Skip`] reason when the interface is not used.
pub fn usable(iface: &HostInterface, wg_ifindex: u32) -> Result<Ipv4Addr, Skip> {
    if iface.index == wg_ifindex {
        return Err(Skip::MeshInterface);
    }
    if iface.loopback {
        return Err(Skip::Loopback);
    }
    if !iface.up {
        return Err(Skip::Down);
    }
    if !iface.multicast {
        return Err(Skip::NotMulticast);
    }
    iface.ipv4().ok_or(Skip::NoIpv4)
}

/// One interface the group is (to be) joined on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Membership {
    /// Kernel interface index: the membership and the sends are bound to it.
    pub index: u32,
    /// Interface name, for logs and the API.
    pub name: String,
    /// The IPv4 address announcements leave from (`IP_MULTICAST_IF`).
    pub addr: Ipv4Addr,
}

impl Membership {
    /// The membership for `iface` if it is [`usable`].
    pub fn of(iface: &HostInterface, wg_ifindex: u32) -> Option<Self> {
        usable(iface, wg_ifindex).ok().map(|addr| Self {
            index: iface.index,
            name: iface.name.clone(),
            addr,
        })
    }
}

/// Every membership LAN discovery should have on these interfaces, sorted by index.
pub fn wanted(interfaces: &[HostInterface], wg_ifindex: u32) -> Vec<Membership> {
    let mut wanted: Vec<Membership> = interfaces
        .iter()
        .filter_map(|i| Membership::of(i, wg_ifindex))
        .collect();
    wanted.sort();
    wanted
}

/// What to change so that the joined set equals the wanted set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MembershipPlan {
    /// Memberships to drop, applied **first**: an interface whose name or address changed
    /// appears in both lists, and joining an index that is still joined would fail.
    pub leave: Vec<Membership>,
    /// Memberships to add (including any whose earlier join failed: they are not joined).
    pub join: Vec<Membership>,
}

impl MembershipPlan {
    /// Nothing to do.
    pub fn is_noop(&self) -> bool {
        self.leave.is_empty() && self.join.is_empty()
    }
}

/// Compares the `joined` memberships with those wanted on `interfaces` (see [`usable`]).
/// A membership whose interface went down, lost its IPv4 address, changed it or disappeared is
/// left; a usable interface that is not joined is joined.
pub fn plan_membership(
    joined: &[Membership],
    interfaces: &[HostInterface],
    wg_ifindex: u32,
) -> MembershipPlan {
    let wanted = wanted(interfaces, wg_ifindex);
    let mut leave: Vec<Membership> = joined
        .iter()
        .filter(|m| !wanted.contains(m))
        .cloned()
        .collect();
    leave.sort();
    let join = wanted.into_iter().filter(|m| !joined.contains(m)).collect();
    MembershipPlan { leave, join }
}

/// How one wanted interface is doing, as the task knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfaceHealth {
    /// Interface name.
    pub name: String,
    /// `None` when joined and its last send worked; else what went wrong (join or send).
    pub problem: Option<String>,
}

/// What the `lan` layer shows in the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayerReport {
    /// At least one interface works; the detail lists them (and any that fail).
    Running(String),
    /// None works; the error says why.
    Retrying(String),
}

/// The layer's state from the health of every wanted interface (`health`, in index order) and,
/// when there is none, from why each interface was skipped.
pub fn layer_report(
    interfaces: &[HostInterface],
    wg_ifindex: u32,
    health: &[IfaceHealth],
) -> LayerReport {
    let working: Vec<&str> = health
        .iter()
        .filter(|h| h.problem.is_none())
        .map(|h| h.name.as_str())
        .collect();
    let failing: Vec<String> = health
        .iter()
        .filter_map(|h| h.problem.as_ref().map(|p| format!("{}: {p}", h.name)))
        .collect();
    if !working.is_empty() {
        let mut detail = working.join(", ");
        if !failing.is_empty() {
            detail.push_str("; failing: ");
            detail.push_str(&failing.join("; "));
        }
        return LayerReport::Running(detail);
    }
    if !failing.is_empty() {
        return LayerReport::Retrying(failing.join("; "));
    }
    let mesh = interfaces
        .iter()
        .find(|i| i.index == wg_ifindex)
        .map_or("the mesh interface", |i| i.name.as_str());
    let reasons: Vec<String> = interfaces
        .iter()
        .filter_map(|i| match usable(i, wg_ifindex) {
            Err(Skip::MeshInterface | Skip::Loopback) | Ok(_) => None,
            Err(skip) => Some(format!("{} {skip}", i.name)),
        })
        .collect();
    let mut error = format!("no up, multicast-capable IPv4 interface besides {mesh}");
    if !reasons.is_empty() {
        error.push_str(" (");
        error.push_str(&reasons.join(", "));
        error.push(')');
    }
    LayerReport::Retrying(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WG: u32 = 9;

    /// `flags`: `u` up, `m` multicast, `l` loopback.
    fn iface(index: u32, name: &str, flags: &str, addrs: &[&str]) -> HostInterface {
        HostInterface {
            index,
            name: name.into(),
            up: flags.contains('u'),
            multicast: flags.contains('m'),
            loopback: flags.contains('l'),
            addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    fn member(index: u32, name: &str, addr: &str) -> Membership {
        Membership {
            index,
            name: name.into(),
            addr: addr.parse().unwrap(),
        }
    }

    #[test]
    fn usable_table() {
        struct Case {
            name: &'static str,
            iface: HostInterface,
            want: Result<&'static str, Skip>,
        }
        let cases = [
            Case {
                name: "up multicast LAN interface",
                iface: iface(2, "eth0", "um", &["192.168.1.7/24"]),
                want: Ok("192.168.1.7"),
            },
            Case {
                name: "first IPv4 address, IPv6 ignored",
                iface: iface(2, "eth0", "um", &["fe80::1/64", "10.0.0.2/8", "10.1.0.2/8"]),
                want: Ok("10.0.0.2"),
            },
            Case {
                name: "mesh interface by index, even when it looks usable",
                iface: iface(WG, "wg0", "um", &["10.78.0.1/16"]),
                want: Err(Skip::MeshInterface),
            },
            Case {
                name: "mesh interface under another name",
                iface: iface(WG, "eth7", "um", &["10.78.0.1/16"]),
                want: Err(Skip::MeshInterface),
            },
            Case {
                name: "an interface named wg0 that is not ours is used",
                iface: iface(3, "wg0", "um", &["192.168.9.1/24"]),
                want: Ok("192.168.9.1"),
            },
            Case {
                name: "loopback",
                iface: iface(1, "lo", "uml", &["127.0.0.1/8"]),
                want: Err(Skip::Loopback),
            },
            Case {
                name: "down (or no carrier)",
                iface: iface(2, "eth0", "m", &["192.168.1.7/24"]),
                want: Err(Skip::Down),
            },
            Case {
                name: "no multicast flag",
                iface: iface(2, "ptp0", "u", &["192.168.1.7/24"]),
                want: Err(Skip::NotMulticast),
            },
            Case {
                name: "IPv6 only",
                iface: iface(2, "eth0", "um", &["2001:db8::7/64", "fe80::7/64"]),
                want: Err(Skip::NoIpv4),
            },
            Case {
                name: "no address at all",
                iface: iface(2, "eth0", "um", &[]),
                want: Err(Skip::NoIpv4),
            },
        ];
        for c in cases {
            let want = c.want.map(|a| a.parse::<Ipv4Addr>().unwrap());
            assert_eq!(usable(&c.iface, WG), want, "{}", c.name);
        }
    }

    #[test]
    fn plan_membership_table() {
        let lo = iface(1, "lo", "uml", &["127.0.0.1/8"]);
        let eth0 = iface(2, "eth0", "um", &["192.168.101.1/24"]);
        let eth1 = iface(3, "eth1", "um", &["192.168.102.1/24"]);
        let wg0 = iface(WG, "wg0", "um", &["10.78.0.1/16"]);
        let eth0_down = iface(2, "eth0", "m", &["192.168.101.1/24"]);
        let eth0_moved = iface(2, "eth0", "um", &["192.168.101.50/24"]);
        let eth0_renamed = iface(2, "lan0", "um", &["192.168.101.1/24"]);
        let eth0_no_v4 = iface(2, "eth0", "um", &["fe80::1/64"]);
        let m0 = member(2, "eth0", "192.168.101.1");
        let m1 = member(3, "eth1", "192.168.102.1");
        struct Case {
            name: &'static str,
            joined: Vec<Membership>,
            interfaces: Vec<HostInterface>,
            leave: Vec<Membership>,
            join: Vec<Membership>,
        }
        let cases = vec![
            Case {
                name: "nothing at all",
                joined: vec![],
                interfaces: vec![],
                leave: vec![],
                join: vec![],
            },
            Case {
                name: "start: every usable interface is joined, never lo or wg0",
                joined: vec![],
                interfaces: vec![lo.clone(), eth0.clone(), eth1.clone(), wg0.clone()],
                leave: vec![],
                join: vec![m0.clone(), m1.clone()],
            },
            Case {
                name: "steady state",
                joined: vec![m0.clone(), m1.clone()],
                interfaces: vec![lo.clone(), eth0.clone(), eth1.clone(), wg0.clone()],
                leave: vec![],
                join: vec![],
            },
            Case {
                name: "only LAN leg is down at start",
                joined: vec![],
                interfaces: vec![lo.clone(), eth0_down.clone(), wg0.clone()],
                leave: vec![],
                join: vec![],
            },
            Case {
                name: "leg goes down",
                joined: vec![m0.clone(), m1.clone()],
                interfaces: vec![eth0_down.clone(), eth1.clone()],
                leave: vec![m0.clone()],
                join: vec![],
            },
            Case {
                name: "leg comes back",
                joined: vec![m1.clone()],
                interfaces: vec![eth0.clone(), eth1.clone()],
                leave: vec![],
                join: vec![m0.clone()],
            },
            Case {
                name: "interface appears",
                joined: vec![m0.clone()],
                interfaces: vec![eth0.clone(), eth1.clone()],
                leave: vec![],
                join: vec![m1.clone()],
            },
            Case {
                name: "interface disappears",
                joined: vec![m0.clone(), m1.clone()],
                interfaces: vec![eth0.clone()],
                leave: vec![m1.clone()],
                join: vec![],
            },
            Case {
                name: "address changes: leave the old, join the new",
                joined: vec![m0.clone()],
                interfaces: vec![eth0_moved],
                leave: vec![m0.clone()],
                join: vec![member(2, "eth0", "192.168.101.50")],
            },
            Case {
                name: "renamed",
                joined: vec![m0.clone()],
                interfaces: vec![eth0_renamed],
                leave: vec![m0.clone()],
                join: vec![member(2, "lan0", "192.168.101.1")],
            },
            Case {
                name: "IPv4 address removed",
                joined: vec![m0.clone()],
                interfaces: vec![eth0_no_v4],
                leave: vec![m0.clone()],
                join: vec![],
            },
            Case {
                name: "mesh interface never joined, even if it once was",
                joined: vec![member(WG, "wg0", "10.78.0.1")],
                interfaces: vec![wg0.clone()],
                leave: vec![member(WG, "wg0", "10.78.0.1")],
                join: vec![],
            },
        ];
        for c in cases {
            let plan = plan_membership(&c.joined, &c.interfaces, WG);
            assert_eq!(
                plan,
                MembershipPlan {
                    leave: c.leave,
                    join: c.join
                },
                "{}",
                c.name
            );
            // Applying the plan converges: planning again changes nothing.
            let mut after: Vec<Membership> = c
                .joined
                .iter()
                .filter(|m| !plan.leave.contains(m))
                .cloned()
                .collect();
            after.extend(plan.join);
            assert!(
                plan_membership(&after, &c.interfaces, WG).is_noop(),
                "{}: not converged",
                c.name
            );
        }
    }

    #[test]
    fn layer_report_table() {
        let ok = |name: &str| IfaceHealth {
            name: name.into(),
            problem: None,
        };
        let bad = |name: &str, problem: &str| IfaceHealth {
            name: name.into(),
            problem: Some(problem.into()),
        };
        let lo = iface(1, "lo", "uml", &["127.0.0.1/8"]);
        let wg0 = iface(WG, "wg0", "um", &["10.78.0.1/16"]);
        struct Case {
            name: &'static str,
            interfaces: Vec<HostInterface>,
            health: Vec<IfaceHealth>,
            want: LayerReport,
        }
        let cases = vec![
            Case {
                name: "two working interfaces",
                interfaces: vec![],
                health: vec![ok("eth0"), ok("eth1")],
                want: LayerReport::Running("eth0, eth1".into()),
            },
            Case {
                name: "one works, one fails: running, the failure shown",
                interfaces: vec![],
                health: vec![
                    ok("eth0"),
                    bad("eth1", "cannot join 239.192.1.2: No such device"),
                ],
                want: LayerReport::Running(
                    "eth0; failing: eth1: cannot join 239.192.1.2: No such device".into(),
                ),
            },
            Case {
                name: "every wanted interface fails",
                interfaces: vec![],
                health: vec![
                    bad("eth0", "cannot send: Network is unreachable"),
                    bad("eth1", "cannot join 239.192.1.2: No buffer space available"),
                ],
                want: LayerReport::Retrying(
                    "eth0: cannot send: Network is unreachable; \
                     eth1: cannot join 239.192.1.2: No buffer space available"
                        .into(),
                ),
            },
            Case {
                name: "only lo and the mesh interface",
                interfaces: vec![lo.clone(), wg0.clone()],
                health: vec![],
                want: LayerReport::Retrying(
                    "no up, multicast-capable IPv4 interface besides wg0".into(),
                ),
            },
            Case {
                name: "LAN leg down and one without IPv4: both named",
                interfaces: vec![
                    lo.clone(),
                    iface(2, "eth0", "m", &["192.168.101.1/24"]),
                    iface(3, "eth1", "um", &["fe80::3/64"]),
                    wg0.clone(),
                ],
                health: vec![],
                want: LayerReport::Retrying(
                    "no up, multicast-capable IPv4 interface besides wg0 \
                     (eth0 is down, eth1 has no IPv4 address)"
                        .into(),
                ),
            },
            Case {
                name: "mesh interface not listed (yet)",
                interfaces: vec![lo],
                health: vec![],
                want: LayerReport::Retrying(
                    "no up, multicast-capable IPv4 interface besides the mesh interface".into(),
                ),
            },
        ];
        for c in cases {
            assert_eq!(
                layer_report(&c.interfaces, WG, &c.health),
                c.want,
                "{}",
                c.name
            );
        }
    }
}
