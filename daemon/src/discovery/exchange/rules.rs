//! The exchange protocol's decisions (crypto-and-wire §10), as pure functions over plain values:
//! which endpoint a sender or a peer it names gets, whether a REPLY's observed endpoint becomes
//! ours, whether a GOODBYE is fresh, what a HELLO or REPLY says about us. Time is a parameter.
//!
//! Everything here reads untrusted input: a field that does not parse is treated as absent, a
//! hostname that would fail Go's validation is dropped, lists are capped, never a panic.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;

use crate::keys::PublicKey;
use crate::node::LocalNode;
use crate::peers::{Peer, PeerUpdate};
use crate::wire::announcement::{
    MAX_HOSTNAME_LEN, MAX_KNOWN_PEERS, MAX_ROUTABLE_NETWORKS, split_host_port,
};
use crate::wire::{KnownPeer, PeerAnnouncement, to_go_json};

/// WireGuard port assumed when an advertised endpoint does not parse (Go's default).
pub const DEFAULT_WG_PORT: u16 = 51820;
/// How far a GOODBYE's timestamp may be from our clock, either way.
pub const GOODBYE_WINDOW: Duration = Duration::from_secs(60);
/// Largest plaintext of a HELLO or REPLY we build: sealed and base64-encoded it stays below the
/// largest UDP payload (65507 bytes over IPv4). Known peers that do not fit are left out (the
/// most recently seen ones go first).
pub const MAX_ANNOUNCEMENT_PLAINTEXT: usize = 48_000;

/// Unix seconds of `now` (0 before the epoch).
pub fn unix_secs(now: SystemTime) -> i64 {
    now.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// An address as IPv4 when it is an IPv4-mapped IPv6 one (what a dual-stack socket reports for
/// IPv4 senders), unchanged otherwise: waiters, rate-limit buckets and observed endpoints all
/// use this form.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Whether `host` is what Go treats as "no host": empty, `0.0.0.0` or `::`.
pub fn is_wildcard_host(host: &str) -> bool {
    host.is_empty() || host == "0.0.0.0" || host == "::"
}

/// `host:port`, with brackets around an IPv6 host.
fn join_host_port(host: &str, port: &str) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Go's `resolvePeerEndpoint(advertised, source)`: the advertised `host:port`, its wildcard host
/// replaced by the source IP when there is a source; an advertised value that does not split as
/// `host:port` becomes `<source IP>:51820` (`""` without a source).
pub fn resolve_peer_endpoint(advertised: &str, source: Option<SocketAddr>) -> String {
    let source_ip = source.map(|s| s.ip().to_canonical());
    match split_host_port(advertised) {
        Ok((host, port)) => match source_ip {
            Some(ip) if is_wildcard_host(host) => join_host_port(&ip.to_string(), port),
            _ => advertised.to_owned(),
        },
        Err(_) => source_ip.map_or_else(String::new, |ip| {
            SocketAddr::new(ip, DEFAULT_WG_PORT).to_string()
        }),
    }
}

/// Go's `filterEndpointForConfig`: an IPv6 endpoint becomes `""` when IPv6 is off.
pub fn filter_endpoint_for_config(endpoint: &str, ipv6: bool) -> String {
    let is_v6 = split_host_port(endpoint).is_ok_and(|(host, _)| host.contains(':'));
    if is_v6 && !ipv6 {
        String::new()
    } else {
        endpoint.to_owned()
    }
}

/// An endpoint text as an address WireGuard can use: an IP literal (names are not resolved
/// here), a host that is not a wildcard, a port that is not 0, IPv6 only when `ipv6` is on.
pub fn usable_endpoint(endpoint: &str, ipv6: bool) -> Option<SocketAddr> {
    let addr = canonical(endpoint.parse::<SocketAddr>().ok()?);
    let ok = !addr.ip().is_unspecified()
        && !addr.ip().is_multicast()
        && addr.port() != 0
        && (ipv6 || addr.is_ipv4());
    ok.then_some(addr)
}

/// RFC 1918 and RFC 4193 (Go's `IP.IsPrivate`).
fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_private(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// Whether `ip` can be someone's address on the internet, as Go's rules see it: not loopback,
/// private (RFC 1918, ULA), link-local, unspecified, multicast or broadcast. Documentation
/// ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32) count as public, as
/// with Go's `IsGlobalUnicast`; the lab relies on that.
pub fn is_public_ip(ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip == IpAddr::V4(Ipv4Addr::BROADCAST)
        || is_private(ip)
        || is_link_local(ip))
}

/// Applies a REPLY's `observed_endpoint` (peer-as-STUN) to our public endpoint `current`
/// (`None`: not known, i.e. `0.0.0.0:<listen_port>`). Returns the new endpoint when it changes:
/// the observed IP with the port of our current endpoint (the WireGuard port, never the exchange
/// socket's). Ignored: empty or unparsable text, IPv6 with IPv6 off, loopback / private /
/// link-local addresses, and an IPv4 observation while our endpoint is a public IPv6 one.
pub fn apply_observed_endpoint(
    observed: &str,
    current: Option<SocketAddr>,
    listen_port: u16,
    ipv6: bool,
) -> Option<SocketAddr> {
    let ip = observed
        .parse::<SocketAddr>()
        .map(|a| a.ip())
        .or_else(|_| observed.parse::<IpAddr>())
        .ok()?
        .to_canonical();
    if (ip.is_ipv6() && !ipv6) || !is_public_ip(ip) {
        return None;
    }
    if ip.is_ipv4() && current.is_some_and(|c| c.is_ipv6() && is_public_ip(c.ip())) {
        return None;
    }
    let port = current.map_or(listen_port, |c| c.port());
    let new = SocketAddr::new(ip, port);
    (current != Some(new)).then_some(new)
}

/// Whether a GOODBYE stamped `timestamp` is within ±60 s of `now` (full precision: 60.0 s is
/// fine, 60.5 s is not).
pub fn goodbye_is_fresh(timestamp: i64, now: SystemTime) -> bool {
    let now_ns: i128 = match now.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(before) => -(before.duration().as_nanos() as i128),
    };
    let age = now_ns - i128::from(timestamp) * 1_000_000_000;
    age.abs() <= GOODBYE_WINDOW.as_nanos() as i128
}

/// Whether a HELLO or REPLY of a peer stamped `timestamp` from `ip` is a replay, given the
/// newest one it sent us before (`last`: its timestamp and IP): one that is not newer and comes
/// from another IP. A captured HELLO replayed from elsewhere would otherwise move the peer's
/// endpoint to the replayer's address (Go has no defence; a message first captured where we
/// never heard the peer before still gets through, as there are no signatures). A peer that
/// really moved is believed with its next message (a newer second).
pub fn replayed_elsewhere(last: Option<(i64, IpAddr)>, timestamp: i64, ip: IpAddr) -> bool {
    last.is_some_and(|(t, from)| from != ip.to_canonical() && timestamp <= t)
}

/// A hostname as Go would accept it (≤ 253 printable ASCII bytes), else `""`.
pub fn sane_hostname(name: &str) -> String {
    let ok = name.len() <= MAX_HOSTNAME_LEN && name.bytes().all(|b| (0x20..=0x7e).contains(&b));
    if ok { name.to_owned() } else { String::new() }
}

/// `cone`, `symmetric` or `unknown`; anything else is not stored.
pub fn sane_nat_type(nat: &str) -> Option<String> {
    matches!(nat, "cone" | "symmetric" | "unknown").then(|| nat.to_owned())
}

/// The store update for the node that sent us a HELLO or REPLY from `source`: its announcement
/// with endpoint `resolve_peer_endpoint(wg_endpoint, source)`. `None` when its key does not parse.
pub fn sender_update(ann: &PeerAnnouncement, source: SocketAddr, ipv6: bool) -> Option<PeerUpdate> {
    let public_key: PublicKey = ann.wg_pubkey.parse().ok()?;
    let endpoint = resolve_peer_endpoint(&ann.wg_endpoint, Some(source));
    let routes = announced_routes(&ann.routable_networks);
    Some(PeerUpdate {
        public_key,
        hostname: sane_hostname(&ann.hostname),
        mesh_ip: ann.mesh_ip.parse().ok(),
        mesh_ipv6: ann.mesh_ipv6.parse().ok(),
        endpoint: usable_endpoint(&filter_endpoint_for_config(&endpoint, ipv6), ipv6),
        introducer: ann.introducer,
        routable_networks: Some(routes),
        nat_type: sane_nat_type(&ann.nat_type),
        last_seen: None,
    })
}

/// Routes as a peer announced them itself: the CIDRs that parse, at most 100.
pub fn announced_routes(list: &[String]) -> Vec<IpNet> {
    list.iter()
        .take(MAX_ROUTABLE_NETWORKS)
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// The endpoint of a peer another node told us about: as advertised, unless the host is empty
/// or a wildcard (then none: only the peer itself knows where it is).
pub fn known_endpoint(advertised: &str, ipv6: bool) -> Option<SocketAddr> {
    match split_host_port(advertised) {
        Ok((host, _)) if !is_wildcard_host(host) => usable_endpoint(advertised, ipv6),
        _ => None,
    }
}

/// The store update for a peer named in someone's `known_peers`: its endpoint as advertised
/// unless the host is a wildcard (then none). `None` when its key does not parse.
pub fn known_peer_update(kp: &KnownPeer, ipv6: bool) -> Option<PeerUpdate> {
    let public_key: PublicKey = kp.wg_pubkey.parse().ok()?;
    let endpoint = known_endpoint(&kp.wg_endpoint, ipv6);
    Some(PeerUpdate {
        public_key,
        hostname: sane_hostname(&kp.hostname),
        mesh_ip: kp.mesh_ip.parse().ok(),
        mesh_ipv6: kp.mesh_ipv6.parse().ok(),
        endpoint,
        introducer: kp.introducer,
        routable_networks: None,
        nat_type: sane_nat_type(&kp.nat_type),
        last_seen: None,
    })
}

/// How a stored peer is named in our `known_peers`.
fn known_peer(p: &Peer, ipv6: bool) -> KnownPeer {
    KnownPeer {
        wg_pubkey: p.public_key.to_string(),
        hostname: p.hostname.clone(),
        mesh_ip: p.mesh_ip.map(|ip| ip.to_string()).unwrap_or_default(),
        mesh_ipv6: p.mesh_ipv6.map(|ip| ip.to_string()).unwrap_or_default(),
        wg_endpoint: p
            .endpoint
            .filter(|e| ipv6 || e.is_ipv4())
            .map(|e| e.to_string())
            .unwrap_or_default(),
        introducer: p.introducer,
        nat_type: p.nat_type.clone().unwrap_or_default(),
    }
}

/// What our HELLO or REPLY says (Go `ExchangeWithPeer` / `sendReply`): our facts, `timestamp`
/// = `now`, `known_peers` = the `active` peers except ourselves (most recently seen first, as
/// many as fit in [`MAX_ANNOUNCEMENT_PLAINTEXT`]), and, in a REPLY, `observed_endpoint` = where
/// the HELLO came from. With IPv6 off, IPv6 endpoints are left out.
pub fn build_announcement(
    local: &LocalNode,
    active: &[Peer],
    now: SystemTime,
    observed: Option<SocketAddr>,
    ipv6: bool,
) -> PeerAnnouncement {
    let mut ann = local.announcement();
    ann.wg_endpoint = filter_endpoint_for_config(&ann.wg_endpoint, ipv6);
    if ann.wg_endpoint.is_empty() {
        ann.wg_endpoint = format!("0.0.0.0:{}", local.listen_port);
    }
    ann.timestamp = unix_secs(now);
    ann.observed_endpoint = observed
        .map(|o| canonical(o).to_string())
        .unwrap_or_default();
    let mut peers: Vec<&Peer> = active
        .iter()
        .filter(|p| p.public_key != local.public_key)
        .collect();
    peers.sort_by(|a, b| {
        b.last_seen
            .cmp(&a.last_seen)
            .then(a.public_key.cmp(&b.public_key))
    });
    // The fixed part, plus `,"known_peers":[]`.
    let mut size = to_go_json(&ann).len() + 17;
    for p in peers.into_iter().take(MAX_KNOWN_PEERS) {
        let kp = known_peer(p, ipv6);
        let len = to_go_json(&kp).len() + 1;
        if size + len > MAX_ANNOUNCEMENT_PLAINTEXT {
            break;
        }
        size += len;
        ann.known_peers.push(kp);
    }
    ann
}

/// A peer's control (exchange-socket) address when none was learned: its endpoint's host with
/// the mesh's gossip port.
pub fn default_control_endpoint(endpoint: SocketAddr, gossip_port: u16) -> SocketAddr {
    SocketAddr::new(endpoint.ip().to_canonical(), gossip_port)
}

/// Whether `addr` is certainly this node's own exchange socket: our gossip port on a loopback,
/// unspecified or local address, or on our public endpoint's IP.
pub fn is_own_address(
    addr: SocketAddr,
    gossip_port: u16,
    local_ips: &[IpAddr],
    public_ip: Option<IpAddr>,
) -> bool {
    let addr = canonical(addr);
    addr.port() == gossip_port
        && (addr.ip().is_loopback()
            || addr.ip().is_unspecified()
            || local_ips.iter().any(|ip| ip.to_canonical() == addr.ip())
            || public_ip.is_some_and(|p| p.to_canonical() == addr.ip()))
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::node::tests::local;
    use crate::peers::{Method, PeerStore};
    use crate::wire::PROTOCOL;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn resolve_peer_endpoint_follows_go() {
        #[rustfmt::skip]
        let rows = [
            ("advertised public endpoint, no source", "1.2.3.4:51820", None, "1.2.3.4:51820"),
            ("wildcard v4 host takes the source IP", "0.0.0.0:51820", Some("203.0.113.1:41234"), "203.0.113.1:51820"),
            ("empty host takes the source IP", ":51820", Some("203.0.113.1:41234"), "203.0.113.1:51820"),
            ("unsplittable text: source IP, port 51820", ":::51820", Some("[2001:db8::1]:41234"), "[2001:db8::1]:51820"),
            ("wildcard without source is kept", "0.0.0.0:51820", None, "0.0.0.0:51820"),
            ("v6 wildcard takes the source IP", "[::]:4000", Some("198.51.100.2:9"), "198.51.100.2:4000"),
            ("a v4-mapped source is written as IPv4", "0.0.0.0:51820", Some("[::ffff:192.168.1.2]:1"), "192.168.1.2:51820"),
            ("an advertised host is kept even with a source", "198.51.100.7:51820", Some("192.168.1.2:1"), "198.51.100.7:51820"),
            ("garbage with a source", "not an endpoint", Some("192.168.1.2:1"), "192.168.1.2:51820"),
            ("garbage without a source", "not an endpoint", None, ""),
        ];
        for (case, advertised, source, want) in rows {
            assert_eq!(
                resolve_peer_endpoint(advertised, source.map(sa)),
                want,
                "{case}"
            );
        }
    }

    #[test]
    fn filter_endpoint_for_config_follows_go() {
        #[rustfmt::skip]
        let rows = [
            ("[2001:db8::1]:51820", false, ""),
            ("[2001:db8::1]:51820", true, "[2001:db8::1]:51820"),
            ("203.0.113.10:51820", false, "203.0.113.10:51820"),
            ("", false, ""),
        ];
        for (ep, ipv6, want) in rows {
            assert_eq!(
                filter_endpoint_for_config(ep, ipv6),
                want,
                "{ep} ipv6={ipv6}"
            );
        }
    }

    #[test]
    fn observed_endpoint_rules_follow_go() {
        // (case, observed, current endpoint, ipv6 on, new endpoint)
        type Row<'a> = (&'a str, &'a str, Option<&'a str>, bool, Option<&'a str>);
        #[rustfmt::skip]
        let rows: [Row<'_>; 16] = [
            ("public v4 replaces the wildcard, keeping our WG port", "203.0.113.42:54321", None, true, Some("203.0.113.42:51820")),
            ("documentation range 198.51.100/24 is public", "198.51.100.9:1", None, true, Some("198.51.100.9:51820")),
            ("keeps the port of a known endpoint", "203.0.113.42:54321", Some("198.51.100.1:40000"), true, Some("203.0.113.42:40000")),
            ("same as now: no change", "203.0.113.42:1", Some("203.0.113.42:51820"), true, None),
            ("empty", "", None, true, None),
            ("unparsable", "not-an-address", None, true, None),
            ("loopback", "127.0.0.1:12345", None, true, None),
            ("10/8", "10.0.0.5:12345", None, true, None),
            ("172.16/12", "172.16.0.5:12345", None, true, None),
            ("192.168/16", "192.168.1.5:12345", None, true, None),
            ("link-local v4", "169.254.1.1:1", None, true, None),
            ("ULA", "[fd00::1]:1", None, true, None),
            ("link-local v6", "[fe80::1]:1", None, true, None),
            ("public v6 with IPv6 off", "[2a01:4f9:c012:2c15::2]:1", None, false, None),
            ("v4 while our endpoint is a public v6", "203.0.113.42:1", Some("[2a01:4f9:c012:2c15::1]:51820"), true, None),
            ("v4-mapped observation counts as v4", "[::ffff:203.0.113.5]:7", None, true, Some("203.0.113.5:51820")),
        ];
        for (case, observed, current, ipv6, want) in rows {
            assert_eq!(
                apply_observed_endpoint(observed, current.map(sa), 51820, ipv6),
                want.map(sa),
                "{case}"
            );
        }
    }

    #[test]
    fn replays_from_elsewhere() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let last = Some((100, ip("192.168.1.2")));
        #[rustfmt::skip]
        let rows = [
            ("first message of the peer", None, 5, "192.168.1.9", false),
            ("resend from the same IP", last, 100, "192.168.1.2", false),
            ("older, from the same IP", last, 90, "192.168.1.2", false),
            ("same second, another IP", last, 100, "192.168.1.9", true),
            ("older, another IP", last, 40, "192.168.1.9", true),
            ("newer, another IP: it moved", last, 101, "192.168.1.9", false),
        ];
        for (case, last, ts, from, want) in rows {
            assert_eq!(replayed_elsewhere(last, ts, ip(from)), want, "{case}");
        }
    }

    #[test]
    fn public_addresses() {
        #[rustfmt::skip]
        let rows = [
            ("203.0.113.1", true), ("198.51.100.1", true), ("192.0.2.1", true), ("100.64.0.1", true),
            ("8.8.8.8", true), ("2001:db8::1", true), ("2606:4700::1", true),
            ("10.1.2.3", false), ("172.31.0.1", false), ("192.168.0.1", false), ("127.0.0.1", false),
            ("169.254.0.1", false), ("0.0.0.0", false), ("255.255.255.255", false), ("224.0.0.1", false),
            ("::1", false), ("::", false), ("fc00::1", false), ("fe80::1", false), ("ff02::1", false),
            ("::ffff:10.0.0.1", false),
        ];
        for (ip, want) in rows {
            assert_eq!(is_public_ip(ip.parse().unwrap()), want, "{ip}");
        }
    }

    #[test]
    fn goodbye_age_window() {
        let now = UNIX_EPOCH + Duration::from_secs(1_763_780_000);
        #[rustfmt::skip]
        let rows = [(59, true), (60, true), (-59, true), (-60, true), (61, false), (-61, false), (0, true)];
        for (age, fresh) in rows {
            assert_eq!(
                goodbye_is_fresh(1_763_780_000 - age, now),
                fresh,
                "age {age}"
            );
        }
        let late = now + Duration::from_millis(500);
        assert!(!goodbye_is_fresh(1_763_780_000 - 60, late), "60.5 s old");
    }

    fn ann(key: PublicKey, endpoint: &str) -> PeerAnnouncement {
        PeerAnnouncement {
            protocol: PROTOCOL.into(),
            wg_pubkey: key.to_string(),
            hostname: "peer".into(),
            mesh_ip: "10.1.0.2".into(),
            wg_endpoint: endpoint.into(),
            routable_networks: vec!["192.168.50.0/24".into(), "nonsense".into()],
            nat_type: "cone".into(),
            ..Default::default()
        }
    }

    #[test]
    fn sender_updates() {
        let key = PublicKey([3; 32]);
        // (case, advertised, source, ipv6 on, stored endpoint)
        type Row<'a> = (&'a str, &'a str, &'a str, bool, Option<&'a str>);
        #[rustfmt::skip]
        let rows: [Row<'_>; 6] = [
            ("wildcard: the source IP with the advertised port", "0.0.0.0:51999", "192.168.1.7:51900", true, Some("192.168.1.7:51999")),
            ("advertised public endpoint kept", "203.0.113.5:51820", "192.168.1.7:51900", true, Some("203.0.113.5:51820")),
            ("v6 endpoint with IPv6 off: none", "[2001:db8::5]:51820", "192.168.1.7:51900", false, None),
            ("v6 endpoint with IPv6 on", "[2001:db8::5]:51820", "192.168.1.7:51900", true, Some("[2001:db8::5]:51820")),
            ("a DNS name is not an endpoint WireGuard can use", "node.example:51820", "192.168.1.7:1", true, None),
            ("port 0 is unusable", "203.0.113.5:0", "192.168.1.7:1", true, None),
        ];
        for (case, advertised, source, ipv6, want) in rows {
            let u = sender_update(&ann(key, advertised), sa(source), ipv6).unwrap();
            assert_eq!(u.endpoint, want.map(sa), "{case}");
            assert_eq!(u.public_key, key);
            assert_eq!(
                u.routable_networks,
                Some(vec!["192.168.50.0/24".parse().unwrap()])
            );
            assert_eq!(u.nat_type.as_deref(), Some("cone"));
        }
        let mut bad = ann(key, "0.0.0.0:1");
        bad.wg_pubkey = "short".into();
        assert!(sender_update(&bad, sa("192.168.1.7:1"), true).is_none());
        let mut odd = ann(key, "0.0.0.0:1");
        odd.hostname = "evil\u{0}name".into();
        odd.nat_type = "<script>".into();
        odd.mesh_ip = "bogus".into();
        let u = sender_update(&odd, sa("192.168.1.7:1"), true).unwrap();
        assert_eq!(
            (u.hostname.as_str(), u.nat_type, u.mesh_ip),
            ("", None, None)
        );
    }

    #[test]
    fn known_peer_updates() {
        let kp = |ep: &str| KnownPeer {
            wg_pubkey: PublicKey([4; 32]).to_string(),
            mesh_ip: "10.1.2.3".into(),
            wg_endpoint: ep.into(),
            ..Default::default()
        };
        #[rustfmt::skip]
        let rows: [(&str, bool, Option<&str>); 7] = [
            ("198.51.100.7:51820", true, Some("198.51.100.7:51820")),
            ("0.0.0.0:51820", true, None),
            (":51820", true, None),
            ("[::]:51820", true, None),
            ("", true, None),
            ("[2001:db8::7]:51820", false, None),
            ("[2001:db8::7]:51820", true, Some("[2001:db8::7]:51820")),
        ];
        for (ep, ipv6, want) in rows {
            let u = known_peer_update(&kp(ep), ipv6).unwrap();
            assert_eq!(u.endpoint, want.map(sa), "{ep} ipv6={ipv6}");
            assert_eq!(u.routable_networks, None, "transitive never touches routes");
        }
        let mut bad = kp("198.51.100.7:51820");
        bad.wg_pubkey = String::new();
        assert!(known_peer_update(&bad, true).is_none());
    }

    /// A store holding these peers (key byte, endpoint), all heard of now.
    fn peers(list: &[(u8, Option<&str>)]) -> Vec<Peer> {
        let store = PeerStore::default();
        let now = Instant::now();
        for (k, ep) in list {
            let mut u = PeerUpdate::new(PublicKey([*k; 32]));
            u.endpoint = ep.map(sa);
            u.mesh_ip = Some("10.1.0.9".parse().unwrap());
            store.update(u, Method::Dht, now);
        }
        store.active(now)
    }

    #[test]
    fn announcements_list_active_peers_except_ourselves() {
        let me = local();
        let now = UNIX_EPOCH + Duration::from_secs(1_763_780_000);
        let active = peers(&[
            (1, Some("192.168.1.1:51820")), // our own key, e.g. learned transitively
            (2, Some("192.168.1.2:51820")),
            (3, None),
            (4, Some("[2001:db8::4]:51820")),
        ]);
        let hello = build_announcement(&me, &active, now, None, true);
        assert_eq!(hello.timestamp, 1_763_780_000);
        assert_eq!(hello.observed_endpoint, "");
        assert_eq!(hello.wg_endpoint, "0.0.0.0:51820");
        let keys: Vec<&str> = hello
            .known_peers
            .iter()
            .map(|k| k.wg_pubkey.as_str())
            .collect();
        assert_eq!(keys.len(), 3);
        assert!(!keys.contains(&me.public_key.to_string().as_str()));
        let by_key = |b: u8| {
            hello
                .known_peers
                .iter()
                .find(|k| k.wg_pubkey == PublicKey([b; 32]).to_string())
                .unwrap()
        };
        assert_eq!(by_key(2).wg_endpoint, "192.168.1.2:51820");
        assert_eq!(by_key(3).wg_endpoint, "");
        assert_eq!(by_key(4).wg_endpoint, "[2001:db8::4]:51820");
        assert_eq!(by_key(2).mesh_ip, "10.1.0.9");
        assert!(hello.validate().is_ok(), "{hello:?}");

        let reply = build_announcement(
            &me,
            &active,
            now,
            Some(sa("[::ffff:203.0.113.9]:4000")),
            false,
        );
        assert_eq!(reply.observed_endpoint, "203.0.113.9:4000");
        let v6 = reply
            .known_peers
            .iter()
            .find(|k| k.wg_pubkey == PublicKey([4; 32]).to_string())
            .unwrap();
        assert_eq!(
            v6.wg_endpoint, "",
            "IPv6 endpoints are not announced with IPv6 off"
        );
    }

    #[test]
    fn a_thousand_known_peers_fit_in_one_datagram() {
        let mut me = local();
        me.public_endpoint = Some(sa("[2001:db8::1]:51820"));
        let store = PeerStore::new(2000);
        let now = Instant::now();
        for i in 0..1000u32 {
            let mut key = [0u8; 32];
            key[..4].copy_from_slice(&i.to_be_bytes());
            key[31] = 9;
            let mut u = PeerUpdate::new(PublicKey(key));
            u.hostname = "h".repeat(200);
            u.mesh_ip = Some("10.1.0.9".parse().unwrap());
            u.endpoint = Some(sa("[2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff]:51820"));
            store.update(u, Method::Dht, now);
        }
        let ann = build_announcement(&me, &store.active(now), SystemTime::now(), None, false);
        assert_eq!(
            ann.wg_endpoint, "0.0.0.0:51820",
            "our IPv6 endpoint is not announced"
        );
        let plaintext = to_go_json(&ann);
        assert!(
            plaintext.len() <= MAX_ANNOUNCEMENT_PLAINTEXT,
            "{}",
            plaintext.len()
        );
        assert!(ann.known_peers.len() > 100 && ann.known_peers.len() < 1000);
        let sealed = crate::crypto::Envelope::new(&[1; 32]).seal_with_nonce(
            crate::crypto::envelope::MessageType::Reply,
            &ann,
            &[0; 12],
        );
        assert!(sealed.len() <= 65_507, "{}", sealed.len());
    }

    #[test]
    fn own_addresses() {
        let local_ips: Vec<IpAddr> = vec!["192.168.1.1".parse().unwrap()];
        let public = Some("203.0.113.1".parse().unwrap());
        #[rustfmt::skip]
        let rows = [
            ("127.0.0.1:51900", true), ("[::1]:51900", true), ("0.0.0.0:51900", true),
            ("192.168.1.1:51900", true), ("[::ffff:192.168.1.1]:51900", true), ("203.0.113.1:51900", true),
            ("192.168.1.1:51901", false), ("192.168.1.2:51900", false),
        ];
        for (addr, own) in rows {
            assert_eq!(
                is_own_address(sa(addr), 51900, &local_ips, public),
                own,
                "{addr}"
            );
        }
    }
}
