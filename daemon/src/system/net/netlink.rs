//! The async shell: one rtnetlink handle, requests for links, addresses and routes. Decisions are
//! in `plan.rs`; here values only move between the kernel and those functions.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::pin::pin;
use std::sync::Arc;

use futures_util::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType, RouteVia,
};
use rtnetlink::{AddressMessageBuilder, Handle, LinkUnspec, LinkWireguard, RouteMessageBuilder};

use super::plan::{DesiredRoute, InstalledRoute, RoutePlan, plan_address_sync, plan_route_sync};
use super::{NetError, ROUTE_PROTOCOL};

/// What [`Netlink::sync_routes`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteSyncReport {
    /// Routes installed or updated in place.
    pub replaced: Vec<DesiredRoute>,
    /// Our routes deleted.
    pub removed: Vec<InstalledRoute>,
    /// Desired routes that were already installed exactly.
    pub unchanged: usize,
    /// Desired routes not installed because another owner routes that prefix, sorted: through
    /// our interface at any metric (seen in the dump, see [`super::plan_route_sync`]), or at
    /// the same metric through another interface (the kernel refused the exclusive create).
    pub foreign: Vec<DesiredRoute>,
    /// Route messages the kernel sent for this sync (both families): the routes that use our
    /// interface, never the rest of the routing table.
    pub routes_read: usize,
}

/// What [`Netlink::sync_addresses`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressSyncReport {
    /// Addresses added.
    pub added: Vec<IpNet>,
    /// Addresses removed.
    pub removed: Vec<IpNet>,
    /// Desired addresses that were already present at the start.
    pub unchanged: usize,
}

/// Attempts at a consistent dump (see [`read_again`]).
const DUMP_ATTEMPTS: usize = 3;

/// Whether a dump that failed with `e` on attempt `*attempt` is read again (and counts the
/// attempt): the kernel marks a dump that raced with a change of what it lists as interrupted
/// (`EBUSY`), and the answer is simply to read again, at most [`DUMP_ATTEMPTS`] times in all.
pub(super) fn read_again(e: &NetError, attempt: &mut usize) -> bool {
    if e.raw_os_error() != Some(libc::EBUSY) || *attempt >= DUMP_ATTEMPTS {
        return false;
    }
    tracing::debug!(error = %e, attempt = *attempt, "dump raced with a change; reading again");
    *attempt += 1;
    true
}

/// The daemon's rtnetlink connection. Cheap to clone; the connection task (spawned by
/// [`Netlink::connect`]) ends when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Netlink {
    pub(super) handle: Handle,
    /// One dump at a time: the kernel refuses a second dump request on a socket while one is
    /// running (`EBUSY`), and the daemon's tasks share this socket.
    dumps: Arc<tokio::sync::Mutex<()>>,
}

/// The errno of a netlink error reply, if the error is one.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => Some(msg.raw_code().abs()),
        _ => None,
    }
}

fn to_io(e: rtnetlink::Error) -> io::Error {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.to_io(),
        other => io::Error::other(other.to_string()),
    }
}

pub(super) fn failure(
    op: &'static str,
    target: String,
) -> impl FnOnce(rtnetlink::Error) -> NetError {
    move |e| NetError::Netlink {
        op,
        target,
        source: to_io(e),
    }
}

/// `Ok(())` for success and for the errnos in `benign`, which mean "already done".
fn tolerate(result: Result<(), rtnetlink::Error>, benign: &[i32]) -> Result<(), rtnetlink::Error> {
    match result {
        Err(e) if errno(&e).is_some_and(|n| benign.contains(&n)) => Ok(()),
        other => other,
    }
}

impl Netlink {
    /// Opens an rtnetlink socket (with `NETLINK_GET_STRICT_CHK`, so dumps are filtered by the
    /// kernel) in the calling thread's network namespace and spawns its connection task on the
    /// current tokio runtime.
    pub async fn connect() -> Result<Self, NetError> {
        let (connection, handle, _unsolicited) = rtnetlink::new_connection_with_strict_check()
            .map_err(|source| NetError::Connect { source })?;
        tokio::spawn(connection);
        Ok(Self {
            handle,
            dumps: Arc::default(),
        })
    }

    /// Waits for this socket's turn to dump (see [`Netlink`]'s `dumps`); hold the guard until the
    /// dump's last message is read.
    pub(super) async fn dump_turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.dumps.lock().await
    }

    // ---- links ---------------------------------------------------------------------------

    async fn link_by_name(&self, ifname: &str) -> Result<Option<LinkMessage>, NetError> {
        let mut links = pin!(self.handle.link().get().match_name(ifname).execute());
        match links.try_next().await {
            Ok(found) => Ok(found),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(failure("look up", format!("link {ifname}"))(e)),
        }
    }

    /// The index of the link named `ifname`, `None` when there is none.
    pub async fn link_index(&self, ifname: &str) -> Result<Option<u32>, NetError> {
        Ok(self
            .link_by_name(ifname)
            .await?
            .map(|link| link.header.index))
    }

    /// Creates a kernel WireGuard link named `ifname` (kind `wireguard`) and returns its index.
    /// An existing WireGuard link of that name is reused. Without kernel support this fails with
    /// [`NetError::WireGuardUnsupported`]: the caller's cue to use the userspace backend.
    pub async fn create_wireguard_link(&self, ifname: &str) -> Result<u32, NetError> {
        let added = self
            .handle
            .link()
            .add(LinkWireguard::new(ifname).build())
            .execute()
            .await;
        match added {
            Err(e) if errno(&e) == Some(libc::EOPNOTSUPP) => {
                return Err(NetError::WireGuardUnsupported {
                    ifname: ifname.to_owned(),
                    source: to_io(e),
                });
            }
            Err(e) if errno(&e) != Some(libc::EEXIST) => {
                return Err(failure("create", format!("WireGuard link {ifname}"))(e));
            }
            _ => {}
        }
        let Some(link) = self.link_by_name(ifname).await? else {
            return Err(NetError::Netlink {
                op: "look up",
                target: format!("new WireGuard link {ifname}"),
                source: io::Error::from_raw_os_error(libc::ENODEV),
            });
        };
        match link_kind(&link) {
            Some(InfoKind::Wireguard) => {
                tracing::info!(ifname, index = link.header.index, "WireGuard link ready");
                Ok(link.header.index)
            }
            kind => Err(NetError::LinkKindMismatch {
                ifname: ifname.to_owned(),
                kind: kind.map_or_else(|| "unknown".to_owned(), |k| k.to_string()),
            }),
        }
    }

    /// Deletes the link named `ifname`; a link that does not exist is success.
    pub async fn delete_link(&self, ifname: &str) -> Result<(), NetError> {
        let Some(index) = self.link_index(ifname).await? else {
            return Ok(());
        };
        let deleted = self.handle.link().del(index).execute().await;
        tolerate(deleted, &[libc::ENODEV]).map_err(failure("delete", format!("link {ifname}")))?;
        tracing::info!(ifname, index, "link deleted");
        Ok(())
    }

    /// Sets the link administratively up (`ip link set up`).
    pub async fn set_link_up(&self, ifindex: u32) -> Result<(), NetError> {
        let msg = LinkUnspec::new_with_index(ifindex).up().build();
        self.change_link(ifindex, "set up", msg).await
    }

    /// Sets the link administratively down.
    pub async fn set_link_down(&self, ifindex: u32) -> Result<(), NetError> {
        let msg = LinkUnspec::new_with_index(ifindex).down().build();
        self.change_link(ifindex, "set down", msg).await
    }

    /// Sets the link's MTU.
    pub async fn set_mtu(&self, ifindex: u32, mtu: u32) -> Result<(), NetError> {
        let msg = LinkUnspec::new_with_index(ifindex).mtu(mtu).build();
        self.change_link(ifindex, "set the MTU of", msg).await
    }

    async fn change_link(
        &self,
        ifindex: u32,
        op: &'static str,
        msg: LinkMessage,
    ) -> Result<(), NetError> {
        self.handle
            .link()
            .change(msg)
            .execute()
            .await
            .map_err(failure(op, format!("interface #{ifindex}")))
    }

    // ---- addresses -----------------------------------------------------------------------

    /// The addresses of the interface, both families, link-local included.
    pub async fn addresses(&self, ifindex: u32) -> Result<Vec<IpNet>, NetError> {
        let mut attempt = 1;
        loop {
            match self.read_addresses(ifindex).await {
                Err(e) if read_again(&e, &mut attempt) => {}
                other => return other,
            }
        }
    }

    async fn read_addresses(&self, ifindex: u32) -> Result<Vec<IpNet>, NetError> {
        let mut request = self.handle.address().get().set_link_index_filter(ifindex);
        request.message_mut().header.index = ifindex;
        let _turn = self.dump_turn().await;
        let messages: Vec<AddressMessage> = request.execute().try_collect().await.map_err(
            failure("list", format!("addresses of interface #{ifindex}")),
        )?;
        Ok(messages.iter().filter_map(address_of).collect())
    }

    /// Adds `address` (address and prefix length) to the interface; present already is success.
    pub async fn add_address(&self, ifindex: u32, address: IpNet) -> Result<(), NetError> {
        let mut request = self
            .handle
            .address()
            .add(ifindex, address.addr(), address.prefix_len());
        // Like `ip addr add`: no broadcast address unless asked for.
        request
            .message_mut()
            .attributes
            .retain(|a| !matches!(a, AddressAttribute::Broadcast(_)));
        tolerate(request.execute().await, &[libc::EEXIST]).map_err(failure(
            "add",
            format!("address {address} on interface #{ifindex}"),
        ))
    }

    /// Removes `address` from the interface; absent already is success.
    pub async fn remove_address(&self, ifindex: u32, address: IpNet) -> Result<(), NetError> {
        let msg = match address.addr() {
            IpAddr::V4(a) => AddressMessageBuilder::<Ipv4Addr>::new()
                .index(ifindex)
                .address(a, address.prefix_len())
                .build(),
            IpAddr::V6(a) => AddressMessageBuilder::<Ipv6Addr>::new()
                .index(ifindex)
                .address(a, address.prefix_len())
                .build(),
        };
        let removed = self.handle.address().del(msg).execute().await;
        tolerate(removed, &[libc::EADDRNOTAVAIL]).map_err(failure(
            "remove",
            format!("address {address} on interface #{ifindex}"),
        ))
    }

    /// Makes the interface's addresses exactly `desired` (see [`super::plan_address_sync`]):
    /// removes the others (never IPv6 link-local), then adds the missing ones. A second pass runs
    /// when the kernel changed more than asked (removing an IPv4 primary address also removes its
    /// secondaries unless `promote_secondaries` is set). Failed changes do not stop the others;
    /// they are returned together as [`NetError::Incomplete`].
    pub async fn sync_addresses(
        &self,
        ifindex: u32,
        desired: &[IpNet],
    ) -> Result<AddressSyncReport, NetError> {
        let mut report = AddressSyncReport::default();
        let mut failed = Vec::new();
        let mut attempted = 0;
        for pass in 0..2 {
            let current = self.addresses(ifindex).await?;
            let plan = plan_address_sync(&current, desired);
            if pass == 0 {
                report.unchanged = plan.unchanged.len();
            }
            if plan.is_noop() || !failed.is_empty() {
                break;
            }
            attempted += plan.remove.len() + plan.add.len();
            for address in plan.remove {
                match self.remove_address(ifindex, address).await {
                    Ok(()) => report.removed.push(address),
                    Err(e) => failed.push(e),
                }
            }
            for address in plan.add {
                match self.add_address(ifindex, address).await {
                    Ok(()) => report.added.push(address),
                    Err(e) => failed.push(e),
                }
            }
        }
        if !report.added.is_empty() || !report.removed.is_empty() {
            tracing::info!(
                ifindex,
                added = ?report.added,
                removed = ?report.removed,
                "interface addresses updated"
            );
        }
        if failed.is_empty() {
            Ok(report)
        } else {
            Err(NetError::Incomplete {
                what: "address",
                ifindex,
                attempted,
                failed,
            })
        }
    }

    // ---- routes --------------------------------------------------------------------------

    /// The main-table routes that use the interface (any protocol), IPv4 and IPv6, read with a
    /// dump the kernel filters by table and output interface, so the size of the rest of the
    /// table does not matter. A multipath route with a leg on the interface is included with
    /// `oif: None`.
    pub async fn routes(&self, ifindex: u32) -> Result<Vec<InstalledRoute>, NetError> {
        Ok(self
            .interface_routes(ifindex, &Family::BOTH, None)
            .await?
            .routes)
    }

    /// Reads the main-table routes of `families` that use `ifindex`, of protocol `protocol`
    /// (`None`: any), with one kernel-filtered dump per family (see [`route_dump_query`]).
    async fn interface_routes(
        &self,
        ifindex: u32,
        families: &[Family],
        protocol: Option<u8>,
    ) -> Result<InterfaceRoutes, NetError> {
        let mut attempt = 1;
        loop {
            match self
                .read_interface_routes(ifindex, families, protocol)
                .await
            {
                Err(e) if read_again(&e, &mut attempt) => {}
                other => return other,
            }
        }
    }

    async fn read_interface_routes(
        &self,
        ifindex: u32,
        families: &[Family],
        protocol: Option<u8>,
    ) -> Result<InterfaceRoutes, NetError> {
        let mut found = InterfaceRoutes::default();
        let _turn = self.dump_turn().await;
        for &family in families {
            let query = route_dump_query(family, ifindex, protocol);
            let mut messages = pin!(self.handle.route().get(query).execute());
            loop {
                let message = match messages.try_next().await {
                    Ok(Some(message)) => message,
                    Ok(None) => break,
                    Err(e) => {
                        let target = format!("{family} routes of interface #{ifindex}");
                        return Err(failure("list", target)(e));
                    }
                };
                found.read += 1;
                // Filter again in userspace: a kernel without strict checking ignores the
                // filter and sends the whole table (slow, but still correct).
                if !uses_interface(&message, ifindex)
                    || protocol.is_some_and(|p| u8::from(message.header.protocol) != p)
                {
                    continue;
                }
                found.routes.extend(installed_route(&message));
            }
        }
        Ok(found)
    }

    /// Installs `route` on the interface with [`ROUTE_PROTOCOL`], or updates our route for that
    /// destination in place (idempotent). Refuses with [`NetError::ForeignRoute`] when another
    /// owner routes that exact prefix through this interface, or at the same metric through any
    /// other (the exclusive create is refused with `EEXIST`). Reads only this interface's
    /// routes of the route's family.
    pub async fn replace_route(&self, ifindex: u32, route: &DesiredRoute) -> Result<(), NetError> {
        let family = Family::of(route.destination());
        let mut current = self.interface_routes(ifindex, &[family], None).await?;
        current
            .routes
            .retain(|r| r.destination == route.destination());
        let plan = plan_route_sync(
            ifindex,
            &current.routes,
            std::slice::from_ref(route),
            ROUTE_PROTOCOL,
        );
        let mut report = RouteSyncReport::default();
        let applied = self.apply_route_plan(ifindex, plan, &mut report).await;
        if let Some(e) = applied.failed.into_iter().next() {
            return Err(e);
        }
        if !report.foreign.is_empty() {
            return Err(NetError::ForeignRoute {
                route: route.to_string(),
                ifindex,
            });
        }
        Ok(())
    }

    /// Deletes our routes (protocol [`ROUTE_PROTOCOL`] on this interface) to `destination`
    /// (canonicalised). None there is success; other owners' routes are never touched. Reads
    /// only our routes on this interface, of the destination's family.
    pub async fn delete_route(&self, ifindex: u32, destination: IpNet) -> Result<(), NetError> {
        let destination = destination.trunc();
        let ours = self
            .interface_routes(ifindex, &[Family::of(destination)], Some(ROUTE_PROTOCOL))
            .await?;
        for route in ours.routes {
            if route.destination == destination && route.is_ours(ifindex, ROUTE_PROTOCOL) {
                self.remove_route(ifindex, &route).await?;
            }
        }
        Ok(())
    }

    /// Makes our routes on the interface equal to `desired` (see [`super::plan_route_sync`] for
    /// the rules, notably that other owners' routes always win). Reads only the routes that use
    /// this interface ([`RouteSyncReport::routes_read`]); a desired prefix that another
    /// interface holds at the same metric is found by the kernel refusing the exclusive create,
    /// reported in [`RouteSyncReport::foreign`] and tried again on the next pass (one refused
    /// request per such prefix and pass, logged at debug). Failed changes do not stop the
    /// others; they are returned together as [`NetError::Incomplete`].
    pub async fn sync_routes(
        &self,
        ifindex: u32,
        desired: &[DesiredRoute],
    ) -> Result<RouteSyncReport, NetError> {
        let current = self.interface_routes(ifindex, &Family::BOTH, None).await?;
        let plan = plan_route_sync(ifindex, &current.routes, desired, ROUTE_PROTOCOL);
        let mut report = RouteSyncReport {
            routes_read: current.read,
            ..RouteSyncReport::default()
        };
        let Applied { attempted, failed } = self.apply_route_plan(ifindex, plan, &mut report).await;
        if !report.replaced.is_empty() || !report.removed.is_empty() || !failed.is_empty() {
            tracing::info!(
                ifindex,
                replaced = report.replaced.len(),
                removed = report.removed.len(),
                unchanged = report.unchanged,
                failed = failed.len(),
                "routes synced"
            );
        }
        if !report.foreign.is_empty() {
            tracing::debug!(ifindex, foreign = ?report.foreign, "prefixes left to other routes");
        }
        if failed.is_empty() {
            Ok(report)
        } else {
            Err(NetError::Incomplete {
                what: "route",
                ifindex,
                attempted,
                failed,
            })
        }
    }

    /// Applies `plan`, recording in `report` what was done (`replaced`, `removed`, `unchanged`,
    /// `foreign`, the latter sorted). Adds and replaces come first, so deleting a stale
    /// duplicate never leaves a prefix unrouted.
    async fn apply_route_plan(
        &self,
        ifindex: u32,
        plan: RoutePlan,
        report: &mut RouteSyncReport,
    ) -> Applied {
        let attempted = plan.add.len() + plan.replace.len() + plan.delete.len();
        report.unchanged = plan.unchanged.len();
        report.foreign = plan.foreign;
        let mut failed = Vec::new();
        for route in plan.add {
            match self.create_route(ifindex, &route).await {
                Ok(Created::Yes) => report.replaced.push(route),
                Ok(Created::Taken) => report.foreign.push(route),
                Err(e) => failed.push(e),
            }
        }
        for route in plan.replace {
            match self.put_route(ifindex, &route).await {
                Ok(()) => report.replaced.push(route),
                Err(e) => failed.push(e),
            }
        }
        for route in plan.delete {
            match self.remove_route(ifindex, &route).await {
                Ok(()) => report.removed.push(route),
                Err(e) => failed.push(e),
            }
        }
        report.foreign.sort();
        Applied { attempted, failed }
    }

    /// `ip route add DEST [via GW] dev IF proto 87 [metric M]`: create exclusively
    /// (`NLM_F_CREATE | NLM_F_EXCL`). `EEXIST` means a route to that prefix at that metric
    /// already exists (on any interface, any protocol), which is left alone: for IPv6 the
    /// exclusive flag is what keeps a gateway route from joining another owner's route as a
    /// multipath sibling (a create without it does exactly that).
    async fn create_route(&self, ifindex: u32, route: &DesiredRoute) -> Result<Created, NetError> {
        if let Some(other) = self
            .exact_route_elsewhere(ifindex, route.destination())
            .await
        {
            tracing::debug!(
                ifindex,
                route = %route,
                other = %other,
                "another owner routes exactly that prefix; not installed"
            );
            return Ok(Created::Taken);
        }
        let msg = route_message(ifindex, route);
        match self.handle.route().add(msg).execute().await {
            Ok(()) => Ok(Created::Yes),
            Err(e) if errno(&e) == Some(libc::EEXIST) => {
                tracing::debug!(
                    ifindex,
                    route = %route,
                    "another route to that prefix at the same metric exists; not installed"
                );
                Ok(Created::Taken)
            }
            Err(e) => Err(failure(
                "add",
                format!("route {route} on interface #{ifindex}"),
            )(e)),
        }
    }

    /// The route the kernel would use for `prefix` itself (`ip route get fibmatch`), when it is
    /// another owner's route to exactly that prefix. One lookup, no dump: it finds an operator's
    /// route at *any* metric on any interface, which the exclusive create alone (same metric only)
    /// would miss — without it our metric-0 route would silently win over theirs. A failed lookup
    /// (no route at all: `ENETUNREACH`) means nobody holds the prefix.
    async fn exact_route_elsewhere(&self, ifindex: u32, prefix: IpNet) -> Option<InstalledRoute> {
        let found: Vec<RouteMessage> = self
            .handle
            .route()
            .get(fib_match_query(prefix))
            .execute()
            .try_collect()
            .await
            .ok()?;
        found
            .iter()
            .filter_map(looked_up_route)
            .find(|r| r.destination == prefix.trunc() && !r.is_ours(ifindex, ROUTE_PROTOCOL))
    }

    /// `ip route replace DEST [via GW] dev IF proto 87 [metric M]`, only for a destination whose
    /// route at that metric is ours. The kernel replaces the *first* route at that prefix and
    /// metric; ours is first, because nobody else's could exist before our exclusive create and
    /// an appended route goes behind it.
    async fn put_route(&self, ifindex: u32, route: &DesiredRoute) -> Result<(), NetError> {
        let msg = route_message(ifindex, route);
        self.handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(failure(
                "replace",
                format!("route {route} on interface #{ifindex}"),
            ))
    }

    /// Deletes exactly `route`, which must be ours; gone already is success. The request carries
    /// our protocol and interface, so the kernel itself refuses to match anyone else's route.
    async fn remove_route(&self, ifindex: u32, route: &InstalledRoute) -> Result<(), NetError> {
        let protocol = RouteProtocol::from(ROUTE_PROTOCOL);
        let msg = match route.destination {
            IpNet::V4(dst) => {
                // Scope "nowhere" matches any scope, as `ip route del` does.
                let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(dst.network(), dst.prefix_len())
                    .output_interface(ifindex)
                    .protocol(protocol)
                    .scope(RouteScope::NoWhere);
                if let Some(IpAddr::V4(gw)) = route.gateway {
                    b = b.gateway(gw);
                }
                if route.metric != 0 {
                    b = b.priority(route.metric);
                }
                b.build()
            }
            IpNet::V6(dst) => {
                let mut b = RouteMessageBuilder::<Ipv6Addr>::new()
                    .destination_prefix(dst.network(), dst.prefix_len())
                    .output_interface(ifindex)
                    .protocol(protocol)
                    .priority(route.metric);
                if let Some(IpAddr::V6(gw)) = route.gateway {
                    b = b.gateway(gw);
                }
                b.build()
            }
        };
        let deleted = self.handle.route().del(msg).execute().await;
        tolerate(deleted, &[libc::ESRCH]).map_err(failure(
            "delete",
            format!("route {route} on interface #{ifindex}"),
        ))
    }
}

/// An address family of the routing table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    const BOTH: [Self; 2] = [Self::V4, Self::V6];

    fn of(net: IpNet) -> Self {
        match net {
            IpNet::V4(_) => Self::V4,
            IpNet::V6(_) => Self::V6,
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        })
    }
}

/// What a kernel-filtered route dump returned.
#[derive(Debug, Default)]
struct InterfaceRoutes {
    /// The routes that passed the userspace re-filter.
    routes: Vec<InstalledRoute>,
    /// Route messages the kernel sent, before that re-filter.
    read: usize,
}

/// The outcome of [`Netlink::apply_route_plan`] besides the report.
struct Applied {
    /// Changes tried (refused exclusive creates included).
    attempted: usize,
    /// One error per failed change.
    failed: Vec<NetError>,
}

/// The outcome of an exclusive create.
enum Created {
    /// The route is installed.
    Yes,
    /// Another route holds that prefix and metric (`EEXIST`); nothing changed.
    Taken,
}

/// The dump request for the main-table routes of `family` that leave through `ifindex`, of
/// `protocol` (`None`: any).
///
/// The socket has `NETLINK_GET_STRICT_CHK`, so the kernel (`ip_valid_fib_dump_req`, used by the
/// IPv4 and IPv6 dumps) filters by `rtm_table`, `rtm_protocol` and `rtm_type` when they are
/// non-zero and by the `RTA_OIF` attribute (a route matches when any of its next hops uses the
/// device). It still walks its whole table, but only matching routes are encoded, copied to
/// us and parsed. `rtm_type` is left unspecified (all types) and so is the protocol unless
/// asked for: the builder's defaults (unicast, static) would filter too.
fn route_dump_query(family: Family, ifindex: u32, protocol: Option<u8>) -> RouteMessage {
    let table = u32::from(RouteHeader::RT_TABLE_MAIN);
    let protocol = protocol.map_or(RouteProtocol::Unspec, RouteProtocol::from);
    match family {
        Family::V4 => RouteMessageBuilder::<Ipv4Addr>::new()
            .table_id(table)
            .protocol(protocol)
            .kind(RouteType::Unspec)
            .output_interface(ifindex)
            .build(),
        Family::V6 => RouteMessageBuilder::<Ipv6Addr>::new()
            .table_id(table)
            .protocol(protocol)
            .kind(RouteType::Unspec)
            .output_interface(ifindex)
            .build(),
    }
}

/// The message for our route `route` on `ifindex` (protocol [`ROUTE_PROTOCOL`], our metric and
/// scope), for a create or a replace.
fn route_message(ifindex: u32, route: &DesiredRoute) -> RouteMessage {
    let protocol = RouteProtocol::from(ROUTE_PROTOCOL);
    let scope = RouteScope::from(route.scope());
    match (route.destination(), route.gateway()) {
        (IpNet::V4(dst), gateway) => {
            let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(dst.network(), dst.prefix_len())
                .output_interface(ifindex)
                .protocol(protocol)
                .scope(scope);
            if let Some(IpAddr::V4(gw)) = gateway {
                b = b.gateway(gw);
            }
            if route.metric() != 0 {
                b = b.priority(route.metric());
            }
            b.build()
        }
        (IpNet::V6(dst), gateway) => {
            let mut b = RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(dst.network(), dst.prefix_len())
                .output_interface(ifindex)
                .protocol(protocol)
                .scope(scope)
                .priority(route.metric());
            if let Some(IpAddr::V6(gw)) = gateway {
                b = b.gateway(gw);
            }
            b.build()
        }
    }
}

/// Whether the route leaves through `ifindex`: its output interface, or one of its multipath
/// next hops (the same test as the kernel's dump filter).
fn uses_interface(msg: &RouteMessage, ifindex: u32) -> bool {
    msg.attributes.iter().any(|attr| match attr {
        RouteAttribute::Oif(oif) => *oif == ifindex,
        RouteAttribute::MultiPath(hops) => hops.iter().any(|h| h.interface_index == ifindex),
        _ => false,
    })
}

fn link_kind(link: &LinkMessage) -> Option<&InfoKind> {
    link.attributes.iter().find_map(|attr| match attr {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|info| match info {
            LinkInfo::Kind(kind) => Some(kind),
            _ => None,
        }),
        _ => None,
    })
}

/// The interface address of an address message: `IFA_LOCAL` when present (IPv4, and the local
/// side of a point-to-point link), else `IFA_ADDRESS`.
pub(super) fn address_of(msg: &AddressMessage) -> Option<IpNet> {
    let mut local = None;
    let mut address = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    IpNet::new(local.or(address)?, msg.header.prefix_len).ok()
}

fn route_address(addr: &RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

/// A route lookup of `prefix`'s first address that answers with the matching FIB entry
/// (`RTM_F_FIB_MATCH`) instead of a computed next hop. Strict checking wants a full-length
/// destination and a header that is zero otherwise (no table, protocol, scope or type).
fn fib_match_query(prefix: IpNet) -> RouteMessage {
    let mut msg = RouteMessage::default();
    let (family, len, address) = match prefix.network() {
        IpAddr::V4(a) => (AddressFamily::Inet, 32, RouteAddress::Inet(a)),
        IpAddr::V6(a) => (AddressFamily::Inet6, 128, RouteAddress::Inet6(a)),
    };
    msg.header.address_family = family;
    msg.header.destination_prefix_length = len;
    msg.header.flags = RouteFlags::FibMatch;
    msg.attributes.push(RouteAttribute::Destination(address));
    msg
}

/// The FIB entry a lookup answered with, from any table (a policy-routing table that claims the
/// prefix is another owner too).
fn looked_up_route(msg: &RouteMessage) -> Option<InstalledRoute> {
    let mut any_table = msg.clone();
    any_table
        .attributes
        .retain(|a| !matches!(a, RouteAttribute::Table(_)));
    any_table.header.table = RouteHeader::RT_TABLE_MAIN;
    installed_route(&any_table)
}

/// A main-table route as a plain value; `None` for other tables and unparsable messages.
fn installed_route(msg: &RouteMessage) -> Option<InstalledRoute> {
    let mut table = u32::from(msg.header.table);
    let mut destination = None;
    let mut gateway = None;
    let mut oif = None;
    let mut metric = 0;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(a) => destination = route_address(a),
            RouteAttribute::Gateway(a) => gateway = route_address(a),
            RouteAttribute::Via(RouteVia::Inet(a)) => gateway = Some(IpAddr::V4(*a)),
            RouteAttribute::Via(RouteVia::Inet6(a)) => gateway = Some(IpAddr::V6(*a)),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Priority(p) => metric = *p,
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    let destination = match (destination, msg.header.address_family) {
        (Some(a), _) => a,
        (None, AddressFamily::Inet) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (None, AddressFamily::Inet6) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    Some(InstalledRoute {
        destination: IpNet::new(destination, msg.header.destination_prefix_length).ok()?,
        gateway,
        oif,
        protocol: u8::from(msg.header.protocol),
        metric,
        scope: u8::from(msg.header.scope),
    })
}
