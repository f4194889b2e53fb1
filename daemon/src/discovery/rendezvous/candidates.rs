//! Candidates in rendezvous messages (crypto-and-wire §11.3, §21.2): normalisation and port
//! expansion. Pure.
//!
//! Candidates arrive as `host:port` text from the network. Only IP literals are kept: a name in a
//! candidate would make us resolve whatever a message says (Go keeps names; no Go node sends
//! any, since every candidate is a UDP source address).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::wire::announcement::split_host_port;

/// How far around each base port the introducer spreads candidates (`port, port−1, port+1,
/// port−2, port+2`): NATs that do not keep the source port often pick a neighbour.
pub const PORT_SPREAD: u16 = 2;
/// Most candidates a START may make us punch, or an introducer put in a START. Go has no limit;
/// every candidate costs up to 4 s of HELLOs, so a START naming hundreds would keep a punch job
/// (and the other side's NAT) busy for minutes.
pub const MAX_CANDIDATES: usize = 15;

/// A wildcard host: `0.0.0.0` or `::` (Go treats them like an empty host).
fn is_wildcard(ip: IpAddr) -> bool {
    ip == IpAddr::V4(Ipv4Addr::UNSPECIFIED) || ip == IpAddr::V6(Ipv6Addr::UNSPECIFIED)
}

/// A candidate base: an address and a port that may still be out of range (Go parses the port
/// as an integer and only drops out-of-range ports while expanding).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Base {
    /// The host.
    pub ip: IpAddr,
    /// The port as written.
    pub port: u32,
}

impl From<SocketAddr> for Base {
    fn from(addr: SocketAddr) -> Self {
        Self {
            ip: addr.ip(),
            port: u32::from(addr.port()),
        }
    }
}

/// Go's `normalizeCandidates`: keeps entries that split as `host:port` with an IP host that is not
/// empty or a wildcard and a numeric port, without duplicates, in order.
pub fn normalise(candidates: &[String]) -> Vec<Base> {
    let mut seen = HashSet::new();
    candidates
        .iter()
        .filter_map(|c| {
            let (host, port) = split_host_port(c).ok()?;
            let ip: IpAddr = host.parse().ok()?;
            let port: u32 = port.parse().ok()?;
            (!is_wildcard(ip)).then_some(Base { ip, port })
        })
        .filter(|b| seen.insert(*b))
        .collect()
}

/// Go's `expandCandidatePorts` with `spread`: for each base `port, port−1, port+1, …,
/// port−spread, port+spread`, skipping ports outside 1..=65535, without duplicates across bases.
pub fn expand(bases: &[Base], spread: u16) -> Vec<SocketAddr> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for base in bases {
        let port = i64::from(base.port);
        let offsets = std::iter::once(0).chain((1..=i64::from(spread)).flat_map(|d| [-d, d]));
        for offset in offsets {
            let Ok(p) = u16::try_from(port + offset) else {
                continue;
            };
            let addr = SocketAddr::new(base.ip, p);
            if p != 0 && seen.insert(addr) {
                out.push(addr);
            }
        }
    }
    out
}

/// Normalise, expand by [`PORT_SPREAD`], drop IPv6 unless `ipv6`, keep at most
/// [`MAX_CANDIDATES`]: the candidates an introducer sends and a participant punches.
pub fn prepare(bases: &[Base], ipv6: bool) -> Vec<SocketAddr> {
    let mut out = expand(bases, PORT_SPREAD);
    out.retain(|a| ipv6 || a.is_ipv4());
    out.truncate(MAX_CANDIDATES);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[SocketAddr]) -> Vec<String> {
        list.iter().map(ToString::to_string).collect()
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    /// crypto-and-wire §21.2, port expansion vectors.
    #[test]
    fn port_expansion_vectors() {
        #[rustfmt::skip]
        let rows: [(&[&str], &[&str]); 4] = [
            (&["203.0.113.7:51821"], &["203.0.113.7:51821", "203.0.113.7:51820", "203.0.113.7:51822", "203.0.113.7:51819", "203.0.113.7:51823"]),
            (&["1.2.3.4:1", "1.2.3.4:2"], &["1.2.3.4:1", "1.2.3.4:2", "1.2.3.4:3", "1.2.3.4:4"]),
            (&["5.6.7.8:65535"], &["5.6.7.8:65535", "5.6.7.8:65534", "5.6.7.8:65533"]),
            (&["[2001:db8::1]:7"], &["[2001:db8::1]:7", "[2001:db8::1]:6", "[2001:db8::1]:8", "[2001:db8::1]:5", "[2001:db8::1]:9"]),
        ];
        for (input, want) in rows {
            let got = expand(&normalise(&strings(input)), PORT_SPREAD);
            assert_eq!(addrs(&got), want, "{input:?}");
        }
        // Out-of-range ports as written: Go parses, then skips every expanded port above 65535.
        assert_eq!(
            addrs(&expand(&normalise(&strings(&["1.2.3.4:65537"])), 2)),
            ["1.2.3.4:65535"]
        );
        assert_eq!(
            addrs(&expand(&normalise(&strings(&["1.2.3.4:0"])), 2)),
            ["1.2.3.4:1", "1.2.3.4:2"]
        );
    }

    #[test]
    fn normalisation_table() {
        #[rustfmt::skip]
        let rows: [(&str, &[&str], &[&str]); 7] = [
            ("keeps order, drops duplicates", &["1.2.3.4:5", "5.6.7.8:9", "1.2.3.4:5"], &["1.2.3.4:5", "5.6.7.8:9"]),
            ("drops wildcards and empty hosts", &["0.0.0.0:5", "[::]:5", ":5", "1.2.3.4:5"], &["1.2.3.4:5"]),
            ("drops what does not split", &["1.2.3.4", "::1:5", "[::1]x:5", ""], &[]),
            ("drops names (never resolved)", &["host.example:5"], &[]),
            ("drops non-numeric ports", &["1.2.3.4:http", "1.2.3.4:-1"], &[]),
            ("keeps IPv6 in brackets", &["[2001:db8::1]:5"], &["[2001:db8::1]:5"]),
            ("nothing in, nothing out", &[], &[]),
        ];
        for (case, input, want) in rows {
            let got: Vec<String> = normalise(&strings(input))
                .iter()
                .map(|b| SocketAddr::new(b.ip, b.port as u16).to_string())
                .collect();
            assert_eq!(got, want, "{case}");
        }
    }

    #[test]
    fn prepare_filters_ipv6_and_caps_the_list() {
        let bases = normalise(&strings(&["[2001:db8::1]:100", "203.0.113.10:51820"]));
        let v4_only = prepare(&bases, false);
        assert_eq!(v4_only.len(), 5);
        assert!(v4_only.iter().all(SocketAddr::is_ipv4));
        assert_eq!(prepare(&bases, true).len(), 10);
        let many: Vec<String> = (0..20).map(|i| format!("203.0.113.{i}:1000")).collect();
        let out = prepare(&normalise(&many), true);
        assert_eq!(out.len(), MAX_CANDIDATES);
        assert_eq!(out[0].to_string(), "203.0.113.0:1000");
    }
}
