//! This host's network interfaces as plain values: what LAN discovery joins its multicast group
//! on, and which networks the host is on (advertised routes must not overlap them).
//!
//! [`Netlink::interfaces`] reads them in two dumps (links, then addresses; both are small: one
//! message per interface or address). The daemon re-reads them every [`REFRESH`] and publishes a
//! new [`HostInterfaces`] value only when something changed, so consumers can `watch` it.

use std::time::Duration;

use futures_util::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::AddressMessage;
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};

use super::netlink::{address_of, failure};
use super::{NetError, Netlink};

/// How often the interfaces are re-read (an interface that appears is used within this time).
pub const REFRESH: Duration = Duration::from_secs(2);

/// One network interface of this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostInterface {
    /// Kernel interface index.
    pub index: u32,
    /// Name (`eth0`).
    pub name: String,
    /// Administratively up and with carrier (`IFF_UP` and `IFF_RUNNING`).
    pub up: bool,
    /// `IFF_MULTICAST`.
    pub multicast: bool,
    /// `IFF_LOOPBACK`.
    pub loopback: bool,
    /// Its addresses with their prefix lengths.
    pub addresses: Vec<IpNet>,
}

impl HostInterface {
    /// The first IPv4 address, if any (multicast is sent from it).
    pub fn ipv4(&self) -> Option<std::net::Ipv4Addr> {
        self.addresses.iter().find_map(|a| match a {
            IpNet::V4(v4) => Some(v4.addr()),
            IpNet::V6(_) => None,
        })
    }
}

/// Every interface of the host, sorted by index.
pub type HostInterfaces = Vec<HostInterface>;

/// The networks this host is directly on: the prefixes of every address of every interface that
/// is up, except the loopback and the one with index `exclude` (the mesh interface). Pure.
pub fn local_networks(interfaces: &[HostInterface], exclude: Option<u32>) -> Vec<IpNet> {
    let mut nets: Vec<IpNet> = interfaces
        .iter()
        .filter(|i| i.up && !i.loopback && Some(i.index) != exclude)
        .flat_map(|i| i.addresses.iter().map(IpNet::trunc))
        .filter(|n| !n.addr().is_loopback())
        .filter(|n| match n {
            // Link-local IPv6 exists on every interface and routes nowhere.
            IpNet::V6(v6) => !v6.addr().is_unicast_link_local(),
            IpNet::V4(_) => true,
        })
        .collect();
    nets.sort();
    nets.dedup();
    nets
}

fn to_interface(link: &LinkMessage) -> HostInterface {
    let flags = link.header.flags;
    let name = link
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        })
        .unwrap_or_default();
    HostInterface {
        index: link.header.index,
        name,
        up: flags.contains(LinkFlags::Up) && flags.contains(LinkFlags::Running),
        multicast: flags.contains(LinkFlags::Multicast),
        loopback: flags.contains(LinkFlags::Loopback),
        addresses: Vec::new(),
    }
}

impl Netlink {
    /// Every interface with its flags and addresses, sorted by index.
    ///
    /// # Errors
    ///
    /// [`NetError::Netlink`] when a dump fails.
    pub async fn interfaces(&self) -> Result<HostInterfaces, NetError> {
        let mut attempt = 1;
        loop {
            match self.read_interfaces().await {
                Err(e) if super::netlink::read_again(&e, &mut attempt) => {}
                other => return other,
            }
        }
    }

    async fn read_interfaces(&self) -> Result<HostInterfaces, NetError> {
        let _turn = self.dump_turn().await;
        let links: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(failure("list", "links".to_owned()))?;
        let mut interfaces: HostInterfaces = links.iter().map(to_interface).collect();
        interfaces.sort_by_key(|i| i.index);
        let addresses: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(failure("list", "addresses".to_owned()))?;
        for msg in &addresses {
            if !matches!(
                msg.header.family,
                AddressFamily::Inet | AddressFamily::Inet6
            ) {
                continue;
            }
            let Some(address) = address_of(msg) else {
                continue;
            };
            if let Ok(i) = interfaces.binary_search_by_key(&msg.header.index, |i| i.index) {
                interfaces[i].addresses.push(address);
            }
        }
        for i in &mut interfaces {
            i.addresses.sort();
        }
        Ok(interfaces)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An interface for tables: multicast-capable unless it is the loopback.
    pub(crate) fn iface(
        index: u32,
        name: &str,
        up: bool,
        loopback: bool,
        addrs: &[&str],
    ) -> HostInterface {
        HostInterface {
            index,
            name: name.into(),
            up,
            multicast: !loopback,
            loopback,
            addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn local_networks_skip_loopback_down_mesh_and_link_local() {
        let all = [
            iface(1, "lo", true, true, &["127.0.0.1/8", "::1/128"]),
            iface(
                2,
                "eth0",
                true,
                false,
                &["192.168.1.17/24", "fe80::1/64", "2001:db8::5/64"],
            ),
            iface(3, "eth1", false, false, &["10.9.0.1/16"]),
            iface(4, "wg0", true, false, &["10.78.1.2/16"]),
            iface(5, "eth2", true, false, &["192.168.1.99/24"]),
        ];
        let nets: Vec<String> = local_networks(&all, Some(4))
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(nets, ["192.168.1.0/24", "2001:db8::/64"]);
        assert!(local_networks(&all, None).contains(&"10.78.0.0/16".parse().unwrap()));
    }
}
