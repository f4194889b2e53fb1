//! Which addresses count as public (Go's `IsGlobalUnicast` and `IsPrivate`, and
//! `isPublicIPv6` for the host's own IPv6 addresses), and the host's best IPv6 endpoint
//! (crypto-and-wire §15.1, vectors §21.1). Pure.
//!
//! Documentation ranges (198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32) count as public, as in
//! Go's `IsGlobalUnicast`; only the IPv6 interface scan excludes 2001:db8::/32 (Go's
//! `isPublicIPv6` table).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::system::net::HostInterface;

/// Whether an IPv4 address is public by Go's rules: global unicast (not unspecified, loopback,
/// link-local, multicast or broadcast) and not private (RFC 1918).
pub fn is_public_ipv4(ip: Ipv4Addr) -> bool {
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_private())
}

/// Whether an address reported by a STUN server (or a peer) is public: IPv4 by
/// [`is_public_ipv4`] (also inside `::ffff:a.b.c.d`); IPv6 neither unspecified, loopback,
/// link-local, multicast nor unique-local (`fc00::/7`).
pub fn is_public_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_ipv4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_ipv4(v4),
            None => {
                !(v6.is_unspecified()
                    || v6.is_loopback()
                    || v6.is_unicast_link_local()
                    || v6.is_multicast()
                    || v6.is_unique_local())
            }
        },
    }
}

/// Prefixes the IPv6 interface scan never announces (Go `isPublicIPv6`), as (address bits,
/// prefix length): `200::/7`, `2001:db8::/32`, `fc00::/7`, `fd00::/8`, `fe80::/10`, `ff00::/8`,
/// `::1/128`, `::/128`.
const NOT_PUBLIC_V6: [(u128, u32); 8] = [
    (0x0200 << 112, 7),
    (0x2001_0db8 << 96, 32),
    (0xfc00 << 112, 7),
    (0xfd00 << 112, 8),
    (0xfe80 << 112, 10),
    (0xff00 << 112, 8),
    (1, 128),
    (0, 128),
];

/// Whether a host IPv6 address may be announced as our endpoint (Go `isPublicIPv6`): global
/// unicast and in none of `200::/7`, `2001:db8::/32`, `fc00::/7`, `fd00::/8`, `fe80::/10`,
/// `ff00::/8`, `::1`, `::`; IPv4-mapped addresses are not IPv6 endpoints.
pub fn is_public_ipv6(ip: Ipv6Addr) -> bool {
    if ip.to_ipv4_mapped().is_some() {
        return false;
    }
    let bits = u128::from(ip);
    NOT_PUBLIC_V6.iter().all(|(net, len)| {
        let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
        bits & mask != net & mask
    })
}

/// Go `scoreIPv6`: 10, plus 20 inside `2000::/3`, minus 5 for an EUI-64 interface id (bytes
/// 11–12 `ff fe`: a stable address made from the MAC, less private than a temporary one).
pub fn ipv6_score(ip: Ipv6Addr) -> i32 {
    let b = ip.octets();
    let mut score = 10;
    if b[0] & 0xe0 == 0x20 {
        score += 20;
    }
    if b[11] == 0xff && b[12] == 0xfe {
        score -= 5;
    }
    score
}

/// A global IPv6 address of the host, and the interface that has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv6Choice {
    /// The address.
    pub addr: Ipv6Addr,
    /// Its interface's name.
    pub iface: String,
}

/// The best IPv6 endpoint of the host, if any: among the addresses of interfaces that are up,
/// not the loopback and not `exclude` (the mesh interface), those that pass
/// [`is_public_ipv6`]; the highest [`ipv6_score`] wins, ties go to the smallest text.
pub fn choose_ipv6(interfaces: &[HostInterface], exclude: u32) -> Option<Ipv6Choice> {
    interfaces
        .iter()
        .filter(|i| i.up && !i.loopback && i.index != exclude)
        .flat_map(|i| {
            i.addresses.iter().filter_map(move |a| match a {
                IpNet::V6(v6) if is_public_ipv6(v6.addr()) => Some(Ipv6Choice {
                    addr: v6.addr(),
                    iface: i.name.clone(),
                }),
                _ => None,
            })
        })
        .min_by(|a, b| {
            ipv6_score(b.addr)
                .cmp(&ipv6_score(a.addr))
                .then_with(|| a.addr.to_string().cmp(&b.addr.to_string()))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::net::test_iface as iface;

    #[test]
    fn is_public_ipv6_table() {
        // crypto-and-wire §21.1, plus the other excluded prefixes and a mapped IPv4.
        let table = [
            ("2001:db8::1", false),
            ("200:b64f::1", false),
            ("fc00::1", false),
            ("fd00::1", false),
            ("fe80::1", false),
            ("::1", false),
            ("ff02::1", false),
            ("::", false),
            ("::ffff:203.0.113.1", false),
            ("2607:f8b0::1", true),
            ("2a00:1450::1", true),
            ("2606:4700::1", true),
            ("2001:db9::1", true),
        ];
        for (ip, want) in table {
            assert_eq!(is_public_ipv6(ip.parse().unwrap()), want, "{ip}");
        }
    }

    #[test]
    fn is_public_ip_table() {
        let table = [
            ("203.0.113.7", true),
            ("198.51.100.1", true),
            ("8.8.8.8", true),
            ("100.64.0.1", true),
            ("10.0.0.5", false),
            ("172.16.0.5", false),
            ("172.31.255.1", false),
            ("172.32.0.1", true),
            ("192.168.1.5", false),
            ("127.0.0.1", false),
            ("169.254.1.1", false),
            ("0.0.0.0", false),
            ("224.0.0.1", false),
            ("255.255.255.255", false),
            ("2001:db8::1", true),
            ("2a00:1450::1", true),
            ("fd12::1", false),
            ("fe80::1", false),
            ("::1", false),
            ("::", false),
            ("ff02::1", false),
            ("::ffff:192.168.1.1", false),
            ("::ffff:203.0.113.1", true),
        ];
        for (ip, want) in table {
            assert_eq!(is_public_ip(ip.parse().unwrap()), want, "{ip}");
        }
    }

    #[test]
    fn ipv6_score_table() {
        let table = [
            ("2a00:1450::1", 30),
            ("2a00:1450::211:22ff:fe33:4455", 25),
            ("3fff::1", 30),
            ("4000::1", 10),
            ("4000::211:22ff:fe33:4455", 5),
        ];
        for (ip, want) in table {
            assert_eq!(ipv6_score(ip.parse().unwrap()), want, "{ip}");
        }
    }

    #[test]
    fn choose_ipv6_table() {
        // (case, interfaces, expected (address, interface))
        type Row = (
            &'static str,
            Vec<HostInterface>,
            Option<(&'static str, &'static str)>,
        );
        let lo = iface(1, "lo", true, true, &["127.0.0.1/8", "::1/128"]);
        let table: Vec<Row> = vec![
            ("nothing", vec![lo.clone()], None),
            (
                "only private, link-local and documentation addresses",
                vec![
                    lo.clone(),
                    iface(
                        2,
                        "eth0",
                        true,
                        false,
                        &[
                            "192.168.1.2/24",
                            "fe80::1/64",
                            "fd00::5/64",
                            "2001:db8::7/64",
                        ],
                    ),
                ],
                None,
            ),
            (
                "a global address",
                vec![iface(
                    2,
                    "eth0",
                    true,
                    false,
                    &["192.168.1.2/24", "2a00:1450::7/64"],
                )],
                Some(("2a00:1450::7", "eth0")),
            ),
            (
                "an interface that is down does not count",
                vec![iface(2, "eth0", false, false, &["2a00:1450::7/64"])],
                None,
            ),
            (
                "the mesh interface does not count",
                vec![iface(9, "wg0", true, false, &["2a00:1450::7/64"])],
                None,
            ),
            (
                "a temporary address beats an EUI-64 one",
                vec![iface(
                    2,
                    "eth0",
                    true,
                    false,
                    &["2a00:1450::211:22ff:fe33:4455/64", "2a00:1450::9abc/64"],
                )],
                Some(("2a00:1450::9abc", "eth0")),
            ),
            (
                "inside 2000::/3 beats outside",
                vec![
                    iface(2, "eth0", true, false, &["4000::1/64"]),
                    iface(3, "eth1", true, false, &["2a00:1450::1/64"]),
                ],
                Some(("2a00:1450::1", "eth1")),
            ),
            (
                "ties go to the smallest text",
                vec![
                    iface(2, "eth0", true, false, &["2a00:2::1/64"]),
                    iface(3, "eth1", true, false, &["2a00:10::1/64"]),
                ],
                Some(("2a00:10::1", "eth1")),
            ),
        ];
        for (case, ifaces, want) in table {
            let want = want.map(|(a, i)| Ipv6Choice {
                addr: a.parse().unwrap(),
                iface: i.to_owned(),
            });
            assert_eq!(choose_ipv6(&ifaces, 9), want, "{case}");
        }
    }
}
