//! Links, addresses and routes of the mesh interface, through rtnetlink only (never `ip`), the
//! host's interfaces ([`HostInterface`]), the LAN multicast sockets ([`multicast`]), the STUN
//! client's socket ([`stun`]), the IP forwarding sysctls, and the firewall accept rule of an
//! introducer ([`firewall`]).
//!
//! Why it looks the way it does:
//! - **Ownership by protocol number.** Every route the daemon installs carries
//!   [`ROUTE_PROTOCOL`] (`proto 87`). The daemon only ever deletes or replaces routes that carry
//!   that number *and* leave through its own interface; an operator's routes (`proto boot`,
//!   `static`, `kernel`, …) are never touched, even when their prefix is one the mesh wants: a
//!   kernel replace matches on prefix and metric only and would silently overwrite them, so such
//!   a prefix is left to its owner and reported ([`RouteSyncReport::foreign`]). After a crash,
//!   a sync with the new desired set sweeps our leftovers by the same rule.
//! - **Reading only our interface.** A route sync never dumps the routing table (a router may
//!   hold a million routes): it asks the kernel for the main-table routes that leave through
//!   our interface (a dump filtered by table and `RTA_OIF`, any protocol; the kernel still walks
//!   its table but sends only those), which holds ours and every other owner's route *on our
//!   interface*. A desired prefix that another route uses
//!   through our interface, at any metric, is foreign. Another interface's route to that prefix
//!   is found without reading the table: before creating a route we do not have yet, one lookup
//!   (`ip route get fibmatch` of the prefix) returns the FIB entry that holds it, and another
//!   owner's entry for exactly that prefix, at any metric, makes it foreign; the route is then
//!   created exclusively (`NLM_F_CREATE | NLM_F_EXCL`), so the kernel refuses with `EEXIST`
//!   if a route to that prefix at that metric appeared meanwhile. `NLM_F_REPLACE` is only sent
//!   for a route at our metric that the dump shows is ours. For IPv6 the exclusive flag matters
//!   twice: without it, a gateway route to a prefix another owner routes at the same metric
//!   would join that route as a multipath sibling and take part of its traffic. A multipath
//!   route with a leg on our interface is never ours: our leg of such a route (an IPv6 operator
//!   can append a sibling to our gateway route) is neither replaced (an IPv6 replace would drop
//!   the other legs) nor deleted.
//! - **Idempotency.** Syncing twice writes nothing the second time; adding an address that exists
//!   or deleting a route or link that is already gone is success. The decisions are pure
//!   functions ([`plan_route_sync`], [`plan_address_sync`]) tested with tables; [`Netlink`] only
//!   reads the kernel state, calls them and applies the plan.
//! - **Addresses** become exactly the desired set (address + prefix length); IPv6 link-local
//!   addresses (`fe80::/10`) belong to the kernel and stay.
//! - **WireGuard link creation** fails with [`NetError::WireGuardUnsupported`] on a kernel without
//!   the module; callers fall back to the userspace backend on that variant.
//!
//! The netlink socket lives in the network namespace of the thread that called
//! [`Netlink::connect`].

pub mod firewall;
mod ifaces;
/// A host interface for test tables (see `ifaces::tests::iface`).
#[cfg(test)]
pub(crate) use ifaces::tests::iface as test_iface;
pub mod multicast;
mod netlink;
mod plan;
pub mod probe;
pub mod stun;
mod sysctl;
pub mod udp;

use std::io;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;

pub use firewall::{FirewallGuard, allow_forwarding, remove_leftover_rules};
pub use ifaces::{HostInterface, HostInterfaces, REFRESH as INTERFACE_REFRESH, local_networks};
pub use netlink::{AddressSyncReport, Netlink, RouteSyncReport};
pub use plan::{
    AddressPlan, DesiredRoute, InstalledRoute, METRIC_V4, METRIC_V6, RoutePlan, SCOPE_LINK,
    SCOPE_UNIVERSE, is_ipv6_link_local, plan_address_sync, plan_route_sync,
};
pub use sysctl::{
    ForwardingState, IPV4_FORWARDING, IPV6_FORWARDING, PROC_SYS, enable_forwarding,
    read_forwarding, restore_forwarding,
};

/// The route protocol number (`rtm_protocol`, shown by `ip route` as `proto 87`) that marks the
/// routes this daemon owns. Nothing else is ever removed.
pub const ROUTE_PROTOCOL: u8 = 87;

/// A failure of a netlink request, a sysctl access or a firewall command, naming what was
/// involved.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The rtnetlink socket could not be opened.
    #[error("cannot open an rtnetlink socket: {source}")]
    Connect {
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The kernel does not know the link kind "wireguard" (no module): use userspace WireGuard.
    #[error(
        "cannot create WireGuard link {ifname}: the kernel has no WireGuard support ({source}); \
         use the userspace backend"
    )]
    WireGuardUnsupported {
        /// The interface that was to be created.
        ifname: String,
        /// The OS error (`EOPNOTSUPP`).
        #[source]
        source: io::Error,
    },
    /// A link with the requested name exists but is not a WireGuard link.
    #[error("cannot create WireGuard link {ifname}: a link of kind {kind} has that name")]
    LinkKindMismatch {
        /// The interface name.
        ifname: String,
        /// The kind of the existing link (`unknown` when it reports none).
        kind: String,
    },
    /// A netlink request failed.
    #[error("cannot {op} {target}: {source}")]
    Netlink {
        /// What we were doing ("add", "delete", "replace", "list", …).
        op: &'static str,
        /// What it was done to, e.g. `route 10.1.0.0/16 on interface #5`.
        target: String,
        /// The OS error (`raw_os_error()` is the errno the kernel returned, when it did).
        #[source]
        source: io::Error,
    },
    /// A route's gateway is of another address family than its destination.
    #[error("invalid route {destination} via {gateway}: gateway and destination families differ")]
    GatewayFamily {
        /// The destination prefix.
        destination: IpNet,
        /// The gateway.
        gateway: IpAddr,
    },
    /// A single route was not installed because another owner already routes that exact prefix
    /// through this interface, or at the same metric through another one (an operator's route
    /// is never overwritten).
    #[error(
        "not installing route {route} on interface #{ifindex}: the main table already has a \
         route to that prefix from another owner"
    )]
    ForeignRoute {
        /// The route that was asked for.
        route: String,
        /// The interface.
        ifindex: u32,
    },
    /// Some changes of a sync could not be applied; the others were.
    #[error(
        "{} of {attempted} {what} changes on interface #{ifindex} failed; first: {}",
        failed.len(),
        failed.first().map(ToString::to_string).unwrap_or_default()
    )]
    Incomplete {
        /// "address" or "route".
        what: &'static str,
        /// The interface.
        ifindex: u32,
        /// How many changes were tried.
        attempted: usize,
        /// One error per failed change.
        failed: Vec<NetError>,
    },
    /// A sysctl file could not be read or written.
    #[error("cannot {op} {}: {source}", path.display())]
    Sysctl {
        /// "read", "open" or "write".
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A sysctl file holds something other than `0` or `1`.
    #[error("unexpected value {value:?} in {}", path.display())]
    SysctlValue {
        /// The file.
        path: PathBuf,
        /// What it held.
        value: String,
    },
    /// A firewall program could not be started (or waited for).
    #[error("cannot run `{command}`: {source}")]
    CommandSpawn {
        /// The command line (and its input, if any).
        command: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A firewall program did not finish in time (it was killed).
    #[error("`{command}` did not finish within {seconds} s")]
    CommandTimeout {
        /// The command line (and its input, if any).
        command: String,
        /// The time limit.
        seconds: u64,
    },
    /// A firewall program exited with an error.
    #[error("`{command}` failed ({status}): {stderr}")]
    CommandFailed {
        /// The command line (and its input, if any).
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A firewall program's output could not be understood.
    #[error("cannot understand the output of `{command}`: {reason}")]
    CommandOutput {
        /// The command line.
        command: String,
        /// What was wrong with it.
        reason: String,
    },
}

impl NetError {
    /// The errno behind this error, when the kernel returned one.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Self::Connect { source }
            | Self::WireGuardUnsupported { source, .. }
            | Self::Netlink { source, .. }
            | Self::Sysctl { source, .. }
            | Self::CommandSpawn { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}
