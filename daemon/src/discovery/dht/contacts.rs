//! Which addresses found in the DHT get a HELLO (crypto-and-wire §12 "Peer handling"). Pure: the
//! clock is a parameter.
//!
//! Each `ip:port` a query returns is skipped when it is IPv6 and IPv6 is off, when it is this
//! node (one of its own addresses with the gossip port, its announced endpoint, or an address the
//! exchange found to be itself), when it cannot be a peer (unspecified, multicast, broadcast, port
//! 0), or when it was contacted less than 60 s ago; the others are contacted, each once per query
//! even when several DHT nodes return it. Everything here is bounded: a query's answer is cut at
//! [`MAX_FOUND_PER_QUERY`] addresses and the memory of recent contacts at [`MAX_REMEMBERED`].

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::time::Instant;

/// An address is contacted at most once in this window (Go `DHTContactDedup`).
pub const CONTACT_DEDUP: Duration = Duration::from_secs(60);
/// Most addresses taken from one query (DHT answers are untrusted; a real mesh has far fewer).
pub const MAX_FOUND_PER_QUERY: usize = 256;
/// Most addresses remembered as recently contacted (more are refused until old ones expire).
pub const MAX_REMEMBERED: usize = 4096;
/// Most addresses the exchange said were this node.
pub const MAX_LEARNED_OWN: usize = 64;

/// Why a found address is not contacted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Skip {
    /// IPv6 and `--no-ipv6`.
    Ipv6Disabled,
    /// This node.
    Own,
    /// Cannot be a peer's exchange socket.
    Unusable,
    /// Contacted less than [`CONTACT_DEDUP`] ago.
    Recent,
    /// The memory of recent contacts is full.
    Busy,
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ipv6Disabled => "IPv6 is off",
            Self::Own => "this node",
            Self::Unusable => "not a unicast address with a port",
            Self::Recent => "contacted less than 60 s ago",
            Self::Busy => "too many recent contacts",
        })
    }
}

/// What this node knows about its own addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnAddresses {
    /// The IPs of this host's interfaces.
    pub ips: BTreeSet<IpAddr>,
    /// The mesh's gossip (exchange) port: what every node announces.
    pub gossip_port: u16,
    /// The endpoint this node announces, once known (Go skips exactly this string).
    pub endpoint: Option<SocketAddr>,
}

impl OwnAddresses {
    /// Whether `addr` is this node.
    pub fn contains(&self, addr: SocketAddr) -> bool {
        let ip = canonical(addr.ip());
        (addr.port() == self.gossip_port && self.ips.iter().any(|own| canonical(*own) == ip))
            || self.endpoint.is_some_and(|e| e == addr)
    }
}

/// An IPv4-mapped IPv6 address as IPv4; anything else unchanged.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Whether `addr` could be a peer's exchange socket at all.
fn usable(addr: SocketAddr) -> bool {
    let ip = canonical(addr.ip());
    addr.port() != 0
        && !ip.is_unspecified()
        && !ip.is_multicast()
        && !matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
}

/// The outcome of [`Contacts::select`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// Addresses to HELLO now (each at most once).
    pub contact: Vec<SocketAddr>,
    /// Addresses left out, with why.
    pub skipped: Vec<(SocketAddr, Skip)>,
}

/// The memory of recent contacts and of addresses found to be this node.
#[derive(Clone, Debug, Default)]
pub struct Contacts {
    recent: HashMap<SocketAddr, Instant>,
    learned_own: HashSet<SocketAddr>,
}

impl Contacts {
    /// An empty memory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Remembers that `addr` is this node (the exchange saw its own REPLY come back), so it is
    /// never contacted again. Bounded: beyond [`MAX_LEARNED_OWN`] addresses, nothing is added.
    pub fn learn_own(&mut self, addr: SocketAddr) {
        if self.learned_own.len() < MAX_LEARNED_OWN {
            self.learned_own.insert(addr);
        }
    }

    /// How many addresses are remembered as recently contacted.
    pub fn remembered(&self) -> usize {
        self.recent.len()
    }

    /// Forgets contacts older than [`CONTACT_DEDUP`].
    fn expire(&mut self, now: Instant) {
        self.recent
            .retain(|_, at| now.saturating_duration_since(*at) < CONTACT_DEDUP);
    }

    /// Why `addr` is not to be contacted at `now`, or `Ok` to contact it.
    fn check(
        &self,
        addr: SocketAddr,
        own: &OwnAddresses,
        ipv6: bool,
        now: Instant,
    ) -> Result<(), Skip> {
        if !ipv6 && canonical(addr.ip()).is_ipv6() {
            return Err(Skip::Ipv6Disabled);
        }
        if !usable(addr) {
            return Err(Skip::Unusable);
        }
        if own.contains(addr) || self.learned_own.contains(&addr) {
            return Err(Skip::Own);
        }
        if self
            .recent
            .get(&addr)
            .is_some_and(|at| now.saturating_duration_since(*at) < CONTACT_DEDUP)
        {
            return Err(Skip::Recent);
        }
        if self.recent.len() >= MAX_REMEMBERED {
            return Err(Skip::Busy);
        }
        Ok(())
    }

    /// Chooses which of the addresses of one query (`found`, duplicates allowed, at most
    /// [`MAX_FOUND_PER_QUERY`] distinct ones looked at) to contact at `now`, and remembers them
    /// as contacted.
    pub fn select(
        &mut self,
        found: impl IntoIterator<Item = SocketAddr>,
        own: &OwnAddresses,
        ipv6: bool,
        now: Instant,
    ) -> Selection {
        self.expire(now);
        let mut seen = HashSet::new();
        let mut selection = Selection::default();
        for addr in found {
            if seen.len() >= MAX_FOUND_PER_QUERY {
                break;
            }
            if !seen.insert(addr) {
                continue;
            }
            match self.check(addr, own, ipv6, now) {
                Ok(()) => {
                    self.recent.insert(addr, now);
                    selection.contact.push(addr);
                }
                Err(skip) => selection.skipped.push((addr, skip)),
            }
        }
        selection
    }

    /// Forgets that `addr` was contacted (its HELLO was never sent), so the next query may
    /// contact it again.
    pub fn forget(&mut self, addr: SocketAddr) {
        self.recent.remove(&addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn own() -> OwnAddresses {
        OwnAddresses {
            ips: ["192.168.1.10", "2001:db8::10"]
                .iter()
                .map(|s| s.parse().unwrap())
                .collect(),
            gossip_port: 52190,
            endpoint: Some(a("203.0.113.7:51820")),
        }
    }

    #[test]
    fn each_found_address_is_contacted_or_skipped_for_a_reason() {
        #[rustfmt::skip]
        let table: &[(&str, bool, Result<(), Skip>, &str)] = &[
            ("192.168.1.20:52190", true, Ok(()), "another host"),
            ("198.51.100.4:52190", true, Ok(()), "a public address"),
            ("[2001:db8::20]:52190", true, Ok(()), "IPv6 peer, IPv6 on"),
            ("[2001:db8::20]:52190", false, Err(Skip::Ipv6Disabled), "IPv6 peer, IPv6 off"),
            ("[::ffff:192.168.1.20]:52190", false, Ok(()), "v4-mapped counts as IPv4"),
            ("192.168.1.10:52190", true, Err(Skip::Own), "own address, gossip port"),
            ("[::ffff:192.168.1.10]:52190", true, Err(Skip::Own), "own address, v4-mapped"),
            ("[2001:db8::10]:52190", true, Err(Skip::Own), "own IPv6 address"),
            ("192.168.1.10:40000", true, Ok(()), "own IP, other port: another daemon"),
            ("203.0.113.7:51820", true, Err(Skip::Own), "own announced endpoint (Go's rule)"),
            ("203.0.113.7:52190", true, Ok(()), "own public IP, gossip port: maybe a NAT neighbour"),
            ("198.51.100.9:52190", true, Err(Skip::Own), "learned from the exchange"),
            ("0.0.0.0:52190", true, Err(Skip::Unusable), "unspecified"),
            ("[::]:52190", true, Err(Skip::Unusable), "unspecified IPv6"),
            ("224.0.0.1:52190", true, Err(Skip::Unusable), "multicast"),
            ("255.255.255.255:52190", true, Err(Skip::Unusable), "broadcast"),
            ("192.168.1.20:0", true, Err(Skip::Unusable), "port 0"),
        ];
        let now = Instant::now();
        for (addr, ipv6, want, case) in table {
            let mut c = Contacts::new();
            c.learn_own(a("198.51.100.9:52190"));
            let s = c.select([a(addr)], &own(), *ipv6, now);
            let got = match (s.contact.as_slice(), s.skipped.as_slice()) {
                ([x], []) if *x == a(addr) => Ok(()),
                ([], [(x, why)]) if *x == a(addr) => Err(*why),
                other => panic!("{case}: {other:?}"),
            };
            assert_eq!(got, *want, "{case}");
        }
    }

    #[test]
    fn an_address_is_contacted_once_per_minute_and_once_per_query() {
        let t0 = Instant::now();
        let mut c = Contacts::new();
        let (x, y) = (a("192.168.1.20:52190"), a("192.168.1.21:52190"));
        // Duplicates within one answer (one per DHT node that stores it) count once.
        let s = c.select([x, x, y, x], &own(), true, t0);
        assert_eq!(s.contact, [x, y]);
        assert!(s.skipped.is_empty());
        #[rustfmt::skip]
        let table: &[(u64, bool, &str)] = &[
            (1, false, "1 s later: recent"),
            (59, false, "59 s later: recent"),
            (60, true, "60 s later: contacted again"),
            (61, false, "and then recent again"),
        ];
        for (at, contacted, case) in table {
            let s = c.select([x], &own(), true, t0 + Duration::from_secs(*at));
            assert_eq!(s.contact == [x], *contacted, "{case}: {s:?}");
        }
        // A HELLO that was never sent does not count as a contact.
        c.forget(x);
        let s = c.select([x], &own(), true, t0 + Duration::from_secs(62));
        assert_eq!(s.contact, [x]);
    }

    #[test]
    fn memory_and_answers_are_bounded() {
        let t0 = Instant::now();
        let mut c = Contacts::new();
        let many = |base: u32, n: u32| -> Vec<SocketAddr> {
            (0..n)
                .map(|i| SocketAddr::from((std::net::Ipv4Addr::from(base + i), 52190)))
                .collect()
        };
        let s = c.select(many(0x0a00_0000, 1000), &own(), true, t0);
        assert_eq!(s.contact.len() + s.skipped.len(), MAX_FOUND_PER_QUERY);
        let mut at = t0;
        while c.remembered() < MAX_REMEMBERED {
            let base = 0x0b00_0000 + c.remembered() as u32;
            c.select(many(base, 256), &own(), true, at);
            at += Duration::from_millis(1);
        }
        let s = c.select(many(0x0c00_0000, 3), &own(), true, at);
        assert!(s.contact.is_empty());
        assert!(s.skipped.iter().all(|(_, why)| *why == Skip::Busy));
        // Old contacts expire and make room.
        let s = c.select(many(0x0c00_0000, 3), &own(), true, at + CONTACT_DEDUP);
        assert_eq!(s.contact.len(), 3);
        assert!(c.remembered() <= MAX_REMEMBERED);
        for i in 0..1000 {
            c.learn_own(SocketAddr::from((std::net::Ipv4Addr::from(i), 1)));
        }
        assert_eq!(c.learned_own.len(), MAX_LEARNED_OWN);
    }
}
