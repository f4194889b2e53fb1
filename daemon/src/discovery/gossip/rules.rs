//! The decisions of in-mesh gossip (crypto-and-wire §14, §10.2 `resolvePeerEndpoint`) and of
//! handing Dandelion stems to the store. Pure: peers, time and random seeds are parameters.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::crypto::envelope::MessageType;
use crate::discovery::exchange::rules as exchange_rules;
use crate::engine::reconcile::MeshNetworks;
use crate::keys::PublicKey;
use crate::node::LocalNode;
use crate::peers::{Method, Peer, PeerUpdate};
use crate::privacy::Relay;
use crate::privacy::shuffle::{SplitMix64, shuffle};
use crate::wire::announcement::MAX_KNOWN_PEERS;
use crate::wire::{
    DANDELION_NONCE_LEN, DandelionAnnounce, KnownPeer, PROTOCOL, PeerAnnouncement, to_go_json,
};

/// Largest datagram this node sends for gossip: well below the 65,536-byte receive buffer of
/// every node (larger ones are truncated there and fail to open) and below the 65,507-byte
/// IPv4 UDP payload limit.
pub const MAX_GOSSIP_DATAGRAM: usize = 60_000;
/// Most peers one fluff announces to at once.
pub const FLUFF_FAN_OUT: usize = 8;

/// What this node knows that the rules need.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    /// Our key: messages about ourselves are ignored.
    pub own: PublicKey,
    /// The mesh's own networks: an endpoint inside them would route the tunnel into itself.
    pub mesh: MeshNetworks,
    /// Whether IPv6 endpoints are used (`--no-ipv6` drops them).
    pub ipv6: bool,
}

/// Why a gossip message was dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drop {
    /// It announces ourselves (our own fluff coming back, or a stem of ours).
    Own,
    /// More than 1000 known peers: no honest node sends that many.
    TooManyKnownPeers(usize),
    /// The sender's or origin's key is not a WireGuard key.
    BadKey(String),
    /// A stem whose nonce is not 16 bytes of base64.
    BadNonce,
    /// A stem whose origin fields do not validate.
    Invalid(String),
}

impl Drop {
    /// A fixed word for the metrics (`dropped` counters by reason).
    pub const fn reason(&self) -> &'static str {
        match self {
            Self::Own => "own",
            Self::TooManyKnownPeers(_) => "too_many_known_peers",
            Self::BadKey(_) => "bad_key",
            Self::BadNonce => "bad_nonce",
            Self::Invalid(_) => "invalid",
        }
    }
}

impl fmt::Display for Drop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Own => f.write_str("it is about this node"),
            Self::TooManyKnownPeers(n) => {
                write!(f, "{n} known peers (more than {MAX_KNOWN_PEERS})")
            }
            Self::BadKey(why) => write!(f, "bad key: {why}"),
            Self::BadNonce => f.write_str("nonce is not 16 bytes of base64"),
            Self::Invalid(why) => write!(f, "invalid origin: {why}"),
        }
    }
}

/// `endpoint` if this node may use it: not IPv6 under `--no-ipv6`, not unspecified, not inside
/// the mesh's own networks. Ours: Go stores the mesh IP a gossip packet came from as the
/// sender's WireGuard endpoint when it advertises a wildcard, which points the tunnel into
/// itself.
pub fn usable_endpoint(endpoint: Option<SocketAddr>, ctx: &Context) -> Option<SocketAddr> {
    let ep = endpoint?;
    let ip = ep.ip().to_canonical();
    let refused = ip.is_unspecified()
        || ep.port() == 0
        || match ip {
            IpAddr::V4(v4) => ctx.mesh.v4.contains(&v4),
            IpAddr::V6(v6) => !ctx.ipv6 || ctx.mesh.v6.contains(&v6),
        };
    (!refused).then_some(SocketAddr::new(ip, ep.port()))
}

/// What an ANNOUNCE received on the exchange socket (crypto-and-wire §14) means for the store:
/// the sender as `gossip` (endpoint resolved against the UDP source), each known peer other than
/// us as `gossip-transitive` (wildcard hosts: no endpoint). Known peers with a bad key are
/// skipped, not fatal (Go does not validate on the exchange socket).
///
/// # Errors
///
/// [`Drop`] for our own announcement, more than 1000 known peers or a bad sender key.
pub fn announce_updates(
    ann: &PeerAnnouncement,
    source: SocketAddr,
    ctx: &Context,
) -> Result<Vec<(PeerUpdate, Method)>, Drop> {
    if ann.known_peers.len() > MAX_KNOWN_PEERS {
        return Err(Drop::TooManyKnownPeers(ann.known_peers.len()));
    }
    let sender: PublicKey = ann
        .wg_pubkey
        .parse()
        .map_err(|e: crate::wire::KeyError| Drop::BadKey(e.to_string()))?;
    if sender == ctx.own {
        return Err(Drop::Own);
    }
    let mut updates = Vec::with_capacity(ann.known_peers.len() + 1);
    if let Some(mut update) = exchange_rules::sender_update(ann, source, ctx.ipv6) {
        update.endpoint = usable_endpoint(update.endpoint, ctx);
        updates.push((update, Method::Gossip));
    }
    for kp in &ann.known_peers {
        let Some(mut update) = exchange_rules::known_peer_update(kp, ctx.ipv6) else {
            continue;
        };
        if update.public_key == ctx.own || update.public_key == sender {
            continue;
        }
        update.endpoint = usable_endpoint(update.endpoint, ctx);
        updates.push((update, Method::GossipTransitive));
    }
    Ok(updates)
}

/// A stored peer as a `known_peers` entry.
pub fn known_peer(peer: &Peer) -> KnownPeer {
    KnownPeer {
        wg_pubkey: peer.public_key.to_string(),
        hostname: peer.hostname.clone(),
        mesh_ip: peer.mesh_ip.map(|ip| ip.to_string()).unwrap_or_default(),
        mesh_ipv6: peer.mesh_ipv6.map(|ip| ip.to_string()).unwrap_or_default(),
        wg_endpoint: peer.endpoint.map(|e| e.to_string()).unwrap_or_default(),
        introducer: peer.introducer,
        nat_type: peer.nat_type.clone().unwrap_or_default(),
    }
}

/// Length of the envelope that seals a plaintext of `plaintext_len` bytes as `msg_type`:
/// `{"type":"…","nonce":"<16>","ciphertext":"<base64 of plaintext + 16-byte tag>"}`.
pub fn sealed_len(msg_type: MessageType, plaintext_len: usize) -> usize {
    let outer = r#"{"type":"","nonce":"","ciphertext":""}"#.len();
    outer + msg_type.as_str().len() + 16 + (plaintext_len + 16).div_ceil(3) * 4
}

/// The gossip ANNOUNCE of `local` at `timestamp`: itself plus `peers` (active ones, not us) as
/// known peers, in the given order, as many as fit in [`MAX_GOSSIP_DATAGRAM`] once sealed (and
/// at most 1000). The caller varies the order so that a mesh too big for one datagram is
/// announced piece by piece.
pub fn announcement(local: &LocalNode, peers: &[Peer], timestamp: i64) -> PeerAnnouncement {
    let mut ann = local.announcement();
    ann.timestamp = timestamp;
    // `,"known_peers":[` + `]`, then each entry and a comma between entries.
    let mut len = to_go_json(&ann).len() + r#","known_peers":[]"#.len();
    for peer in peers.iter().filter(|p| p.public_key != local.public_key) {
        if ann.known_peers.len() >= MAX_KNOWN_PEERS {
            break;
        }
        let kp = known_peer(peer);
        let extra = to_go_json(&kp).len() + usize::from(!ann.known_peers.is_empty());
        if sealed_len(MessageType::Announce, len + extra) > MAX_GOSSIP_DATAGRAM {
            break;
        }
        len += extra;
        ann.known_peers.push(kp);
    }
    ann
}

/// The peers gossip can reach through the tunnel: `active` ones (not us) with a mesh IPv4. When
/// some have a working tunnel (`connected`), only those: a datagram to a peer without a session
/// is lost (its WireGuard drops the handshake of a key it does not know yet).
pub fn reachable(
    active: &[Peer],
    own: &PublicKey,
    connected: impl Fn(&PublicKey) -> bool,
) -> Vec<Relay> {
    let all: Vec<(Relay, bool)> = active
        .iter()
        .filter(|p| p.public_key != *own)
        .filter_map(|p| {
            let relay = Relay {
                key: p.public_key,
                mesh_ip: p.mesh_ip?,
            };
            Some((relay, connected(&p.public_key)))
        })
        .collect();
    let any_connected = all.iter().any(|(_, c)| *c);
    all.into_iter()
        .filter(|(_, c)| *c || !any_connected)
        .map(|(r, _)| r)
        .collect()
}

/// One of `targets`, chosen by `seed` (Go: a random active peer).
pub fn pick(targets: &[Relay], seed: u64) -> Option<Relay> {
    if targets.is_empty() {
        return None;
    }
    Some(targets[SplitMix64::new(seed).below(targets.len())])
}

/// At most [`FLUFF_FAN_OUT`] of `targets` other than `exclude`, chosen by `seed`.
pub fn fan_out(targets: &[Relay], exclude: &PublicKey, seed: u64) -> Vec<Relay> {
    let mut chosen: Vec<Relay> = targets
        .iter()
        .filter(|t| t.key != *exclude)
        .copied()
        .collect();
    shuffle(&mut chosen, seed);
    chosen.truncate(FLUFF_FAN_OUT);
    chosen
}

/// This node's own stem message (hop 0) at `timestamp` with `nonce`.
pub fn own_stem(
    local: &LocalNode,
    timestamp: i64,
    nonce: [u8; DANDELION_NONCE_LEN],
) -> DandelionAnnounce {
    let ann = local.announcement();
    let mut stem = DandelionAnnounce {
        protocol: PROTOCOL.to_owned(),
        origin_pubkey: ann.wg_pubkey,
        origin_mesh_ip: ann.mesh_ip,
        origin_endpoint: ann.wg_endpoint,
        routable_networks: ann.routable_networks,
        hop_count: 0,
        timestamp,
        nonce: String::new(),
        origin_hostname: ann.hostname,
        origin_mesh_ipv6: ann.mesh_ipv6,
        origin_introducer: ann.introducer,
        origin_nat_type: ann.nat_type,
    };
    stem.set_nonce(nonce);
    stem
}

/// A stem message checked: its origin's key and nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckedStem {
    /// The origin.
    pub origin: PublicKey,
    /// The nonce that identifies the message on every hop.
    pub nonce: [u8; DANDELION_NONCE_LEN],
}

/// Checks a received stem: the origin fields must pass Go's announcement validation (key, mesh
/// IP, endpoint, hostname, routes) and the nonce must be 16 bytes.
///
/// # Errors
///
/// [`Drop`] for our own stem, a bad nonce or invalid origin fields.
pub fn check_stem(stem: &DandelionAnnounce, ctx: &Context) -> Result<CheckedStem, Drop> {
    let origin: PublicKey = stem
        .origin_pubkey
        .parse()
        .map_err(|e: crate::wire::KeyError| Drop::BadKey(e.to_string()))?;
    if origin == ctx.own {
        return Err(Drop::Own);
    }
    let nonce = stem.nonce_bytes().ok_or(Drop::BadNonce)?;
    origin_announcement(stem)
        .validate()
        .map_err(|e| Drop::Invalid(e.to_string()))?;
    Ok(CheckedStem { origin, nonce })
}

/// The origin of a stem as a peer announcement (for validation).
fn origin_announcement(stem: &DandelionAnnounce) -> PeerAnnouncement {
    PeerAnnouncement {
        protocol: stem.protocol.clone(),
        wg_pubkey: stem.origin_pubkey.clone(),
        hostname: stem.origin_hostname.clone(),
        mesh_ip: stem.origin_mesh_ip.clone(),
        mesh_ipv6: stem.origin_mesh_ipv6.clone(),
        wg_endpoint: stem.origin_endpoint.clone(),
        introducer: stem.origin_introducer,
        routable_networks: stem.routable_networks.clone(),
        timestamp: stem.timestamp,
        nat_type: stem.origin_nat_type.clone(),
        ..PeerAnnouncement::default()
    }
}

/// The store update of a fluffed stem's origin, as `gossip-transitive`: what the origin said
/// about itself (routes included: the message is the origin's own statement), no endpoint for a
/// wildcard host, and last seen when it created the message (`age` before `now`).
pub fn fluff_update(
    stem: &DandelionAnnounce,
    origin: PublicKey,
    ctx: &Context,
    now: Instant,
    age: Duration,
) -> PeerUpdate {
    PeerUpdate {
        public_key: origin,
        hostname: exchange_rules::sane_hostname(&stem.origin_hostname),
        mesh_ip: stem.origin_mesh_ip.parse().ok(),
        mesh_ipv6: stem.origin_mesh_ipv6.parse().ok(),
        endpoint: usable_endpoint(
            exchange_rules::known_endpoint(&stem.origin_endpoint, ctx.ipv6),
            ctx,
        ),
        introducer: stem.origin_introducer,
        routable_networks: Some(exchange_rules::announced_routes(&stem.routable_networks)),
        nat_type: exchange_rules::sane_nat_type(&stem.origin_nat_type),
        last_seen: Some(now.checked_sub(age).unwrap_or(now)),
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::crypto::envelope::Envelope;
    use crate::peers::PeerStore;

    fn ctx() -> Context {
        Context {
            own: PublicKey([1; 32]),
            mesh: MeshNetworks {
                v4: "10.1.0.0/16".parse().unwrap(),
                v6: "fd00:1::/64".parse().unwrap(),
            },
            ipv6: true,
        }
    }

    fn sa(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    /// A stored peer with key byte `b`, mesh IP 10.1.0.`b` and this endpoint.
    fn peer(b: u8, endpoint: Option<&str>) -> Peer {
        let store = PeerStore::default();
        let update = PeerUpdate {
            mesh_ip: Some(Ipv4Addr::new(10, 1, 0, b)),
            endpoint: endpoint.map(sa),
            hostname: format!("host-{b}"),
            ..PeerUpdate::new(PublicKey([b; 32]))
        };
        store.update(update, Method::Dht, Instant::now());
        store.get(&PublicKey([b; 32])).unwrap()
    }

    #[test]
    fn usable_endpoints_exclude_the_mesh_and_disabled_ipv6() {
        let no_v6 = Context {
            ipv6: false,
            ..ctx()
        };
        // (case, endpoint, context, expected)
        #[rustfmt::skip]
        let rows: [(&str, &str, Context, Option<&str>); 7] = [
            ("public IPv4", "203.0.113.5:51820", ctx(), Some("203.0.113.5:51820")),
            ("a mesh IPv4 (the tunnel itself)", "10.1.0.9:51820", ctx(), None),
            ("a mesh IPv6", "[fd00:1::9]:51820", ctx(), None),
            ("public IPv6", "[2001:db8::1]:51820", ctx(), Some("[2001:db8::1]:51820")),
            ("IPv6 under --no-ipv6", "[2001:db8::1]:51820", no_v6, None),
            ("IPv4-mapped IPv6 is IPv4", "[::ffff:203.0.113.5]:51820", no_v6, Some("203.0.113.5:51820")),
            ("unspecified", "0.0.0.0:51820", ctx(), None),
        ];
        for (case, ep, ctx, want) in rows {
            assert_eq!(usable_endpoint(Some(sa(ep)), &ctx), want.map(sa), "{case}");
        }
    }

    fn ann_from(b: u8, endpoint: &str, known: Vec<KnownPeer>) -> PeerAnnouncement {
        PeerAnnouncement {
            protocol: PROTOCOL.into(),
            wg_pubkey: PublicKey([b; 32]).to_string(),
            hostname: format!("host-{b}"),
            mesh_ip: format!("10.1.0.{b}"),
            wg_endpoint: endpoint.into(),
            routable_networks: vec!["192.168.7.0/24".into(), "bogus".into()],
            nat_type: "cone".into(),
            known_peers: known,
            ..Default::default()
        }
    }

    fn kp(b: u8, endpoint: &str) -> KnownPeer {
        KnownPeer {
            wg_pubkey: PublicKey([b; 32]).to_string(),
            mesh_ip: format!("10.1.0.{b}"),
            wg_endpoint: endpoint.into(),
            ..Default::default()
        }
    }

    #[test]
    fn an_announce_stores_the_sender_as_gossip_and_known_peers_as_transitive() {
        let source = sa("10.1.0.2:51821");
        let known = vec![
            kp(3, "192.0.2.3:51820"),
            kp(4, "0.0.0.0:51820"),
            kp(1, "192.0.2.1:51820"),
            kp(2, "192.0.2.99:51820"),
            KnownPeer {
                wg_pubkey: "not a key".into(),
                ..kp(5, "")
            },
            KnownPeer {
                hostname: "bad\u{1}name".into(),
                nat_type: "full-cone-of-lies".into(),
                ..kp(6, "")
            },
        ];
        let ann = ann_from(2, "192.0.2.2:51820", known);
        let updates = announce_updates(&ann, source, &ctx()).unwrap();
        let got: Vec<(u8, Method, Option<SocketAddr>)> = updates
            .iter()
            .map(|(u, m)| (u.public_key.0[0], *m, u.endpoint))
            .collect();
        assert_eq!(
            got,
            vec![
                (2, Method::Gossip, Some(sa("192.0.2.2:51820"))),
                (3, Method::GossipTransitive, Some(sa("192.0.2.3:51820"))),
                (4, Method::GossipTransitive, None),
                (6, Method::GossipTransitive, None),
            ],
            "us, the sender again and bad keys are skipped"
        );
        let sender = &updates[0].0;
        assert_eq!(
            sender.routable_networks,
            Some(vec!["192.168.7.0/24".parse().unwrap()])
        );
        assert_eq!(sender.nat_type.as_deref(), Some("cone"));
        assert_eq!(sender.mesh_ip, Some(Ipv4Addr::new(10, 1, 0, 2)));
        let six = &updates[3].0;
        assert_eq!((six.hostname.as_str(), six.nat_type.as_deref()), ("", None));
        assert_eq!(
            updates[1].0.routable_networks, None,
            "transitive: routes untouched"
        );
    }

    #[test]
    fn a_wildcard_sender_endpoint_resolves_against_the_source_unless_that_is_a_mesh_ip() {
        // (case, advertised, UDP source, stored endpoint)
        #[rustfmt::skip]
        let rows: [(&str, &str, &str, Option<&str>); 3] = [
            ("through the tunnel: the source is a mesh IP", "0.0.0.0:51820", "10.1.0.2:51821", None),
            ("from outside the tunnel", "0.0.0.0:51820", "192.0.2.2:51821", Some("192.0.2.2:51820")),
            ("a public endpoint wins over the source", "198.51.100.2:4000", "10.1.0.2:51821", Some("198.51.100.2:4000")),
        ];
        for (case, advertised, source, want) in rows {
            let updates =
                announce_updates(&ann_from(2, advertised, vec![]), sa(source), &ctx()).unwrap();
            assert_eq!(updates[0].0.endpoint, want.map(sa), "{case}");
        }
    }

    #[test]
    fn announces_that_must_be_dropped() {
        let source = sa("10.1.0.2:51821");
        let too_many = ann_from(2, "", vec![kp(3, ""); MAX_KNOWN_PEERS + 1]);
        let mut bad_key = ann_from(2, "", vec![]);
        bad_key.wg_pubkey = "AAAA".into();
        // (case, announcement, expected drop)
        let rows = [
            ("ourselves", ann_from(1, "", vec![]), Drop::Own),
            ("1001 known peers", too_many, Drop::TooManyKnownPeers(1001)),
            (
                "bad sender key",
                bad_key,
                Drop::BadKey("key decodes to 3 bytes, expected 32".into()),
            ),
        ];
        for (case, ann, want) in rows {
            assert_eq!(announce_updates(&ann, source, &ctx()), Err(want), "{case}");
        }
        let exactly = ann_from(2, "", vec![kp(3, ""); MAX_KNOWN_PEERS]);
        assert!(
            announce_updates(&exactly, source, &ctx()).is_ok(),
            "1000 is fine"
        );
    }

    #[test]
    fn sealed_len_is_exact() {
        let env = Envelope::new(&[3; 32]);
        for n in [0usize, 1, 2, 3, 100, 1001] {
            let payload = "x".repeat(n);
            // A JSON string of n bytes is n + 2 bytes of plaintext.
            let sealed = env.seal_with_nonce(MessageType::Announce, &payload, &[0; 12]);
            assert_eq!(
                sealed.len(),
                sealed_len(MessageType::Announce, n + 2),
                "{n}"
            );
        }
    }

    #[test]
    fn an_announcement_of_a_big_mesh_fits_one_datagram() {
        let local = crate::node::tests::local();
        let env = Envelope::new(&[3; 32]);
        // (case, peers, all of them fit)
        let small: Vec<Peer> = (2..=5).map(|b| peer(b, Some("192.0.2.1:51820"))).collect();
        let big: Vec<Peer> = (0..1000u32)
            .map(|i| {
                let mut p = peer(2, Some("[2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff]:51820"));
                p.public_key =
                    PublicKey(std::array::from_fn(|j| (i >> (8 * (j % 4))) as u8 ^ 0x5a));
                p.hostname = "h".repeat(60);
                p.mesh_ipv6 = Some("fd00:1::ffff:ffff".parse().unwrap());
                p
            })
            .collect();
        let mut with_self = small.clone();
        with_self.push(peer(1, None));
        // (case, peers, how many are announced: `None` = as many as fit)
        for (case, peers, count) in [
            ("small", &small, Some(4)),
            ("us among them", &with_self, Some(4)),
            ("1000 peers", &big, None),
        ] {
            let ann = announcement(&local, peers, 1_800_000_000);
            let sealed = env.seal_with_nonce(MessageType::Announce, &ann, &[0; 12]);
            assert!(
                sealed.len() <= MAX_GOSSIP_DATAGRAM,
                "{case}: {} bytes",
                sealed.len()
            );
            assert!(
                !ann.known_peers
                    .iter()
                    .any(|k| k.wg_pubkey == local.public_key.to_string()),
                "{case}"
            );
            if let Some(count) = count {
                assert_eq!(ann.known_peers.len(), count, "{case}");
            } else {
                // As many as fit: one more would not.
                let n = ann.known_peers.len();
                assert!(n > 100 && n < 1000, "{case}: {n}");
                let mut more = ann.clone();
                more.known_peers.push(known_peer(&peers[n]));
                let sealed = env.seal_with_nonce(MessageType::Announce, &more, &[0; 12]);
                assert!(
                    sealed.len() > MAX_GOSSIP_DATAGRAM,
                    "{case}: {n} + 1 would fit"
                );
            }
        }
        let ann = announcement(&local, &small, 7);
        assert_eq!(
            (ann.timestamp, ann.wg_pubkey.clone()),
            (7, local.public_key.to_string())
        );
        assert_eq!(ann.known_peers[0], known_peer(&small[0]));
        assert_eq!(ann.known_peers[0].wg_endpoint, "192.0.2.1:51820");
    }

    #[test]
    fn reachable_peers_prefer_working_tunnels() {
        let mut no_ip = peer(9, None);
        no_ip.mesh_ip = None;
        let peers = vec![peer(1, None), peer(2, None), peer(3, None), no_ip];
        let keys = |v: Vec<Relay>| v.iter().map(|r| r.key.0[0]).collect::<Vec<_>>();
        let own = PublicKey([1; 32]);
        // (case, connected keys, expected)
        #[rustfmt::skip]
        let rows: [(&str, &[u8], Vec<u8>); 3] = [
            ("no tunnel known: every active peer with a mesh IP", &[], vec![2, 3]),
            ("only the connected ones", &[3], vec![3]),
            ("connected but without mesh IP: ignored", &[9], vec![2, 3]),
        ];
        for (case, connected, want) in rows {
            let got = reachable(&peers, &own, |k| connected.contains(&k.0[0]));
            assert_eq!(keys(got), want, "{case}");
        }
    }

    #[test]
    fn picks_and_fan_out_are_bounded_and_deterministic() {
        let targets: Vec<Relay> = (2..=20)
            .map(|b| Relay {
                key: PublicKey([b; 32]),
                mesh_ip: Ipv4Addr::new(10, 1, 0, b),
            })
            .collect();
        assert_eq!(pick(&[], 5), None);
        assert_eq!(pick(&targets, 5), pick(&targets, 5));
        let picked: std::collections::BTreeSet<u8> = (0..100)
            .filter_map(|s| pick(&targets, s))
            .map(|r| r.key.0[0])
            .collect();
        assert!(picked.len() > 10, "random over the seeds: {picked:?}");
        let exclude = PublicKey([4; 32]);
        for seed in 0..50 {
            let out = fan_out(&targets, &exclude, seed);
            assert_eq!(out.len(), FLUFF_FAN_OUT);
            assert!(!out.iter().any(|r| r.key == exclude));
            let distinct: std::collections::BTreeSet<_> = out.iter().map(|r| r.key).collect();
            assert_eq!(distinct.len(), out.len());
        }
        assert_eq!(fan_out(&targets[..3], &exclude, 1).len(), 2);
    }

    #[test]
    fn stems_are_checked_and_fluffed_into_transitive_updates() {
        let mut origin = crate::node::tests::local();
        origin.public_key = PublicKey([7; 32]);
        origin.advertise_routes = vec!["192.168.70.0/24".parse().unwrap()];
        origin.introducer = true;
        let stem = own_stem(&origin, 1_800_000_000, [0x42; 16]);
        assert_eq!(
            (stem.hop_count, stem.origin_endpoint.as_str()),
            (0, "0.0.0.0:51820")
        );
        let checked = check_stem(&stem, &ctx()).unwrap();
        assert_eq!(
            checked,
            CheckedStem {
                origin: PublicKey([7; 32]),
                nonce: [0x42; 16]
            }
        );

        let mut own = stem.clone();
        own.origin_pubkey = PublicKey([1; 32]).to_string();
        let mut short_nonce = stem.clone();
        short_nonce.nonce = "AAAAAAAAAAAAAAAA".into();
        let mut bad_ip = stem.clone();
        bad_ip.origin_mesh_ip = "10.1.0.7/16".into();
        let mut bad_route = stem.clone();
        bad_route.routable_networks = vec!["nope".into()];
        let mut bad_key = stem.clone();
        bad_key.origin_pubkey = String::new();
        // (case, stem, accepted)
        let rows = [
            ("our own stem", own, false),
            ("12-byte nonce", short_nonce, false),
            ("CIDR as mesh IP", bad_ip, false),
            ("bad route", bad_route, false),
            ("empty key", bad_key, false),
            ("valid", stem.clone(), true),
        ];
        for (case, s, ok) in rows {
            assert_eq!(check_stem(&s, &ctx()).is_ok(), ok, "{case}");
        }

        let now = Instant::now() + Duration::from_secs(3600);
        let u = fluff_update(&stem, checked.origin, &ctx(), now, Duration::from_secs(3));
        assert_eq!(u.public_key, PublicKey([7; 32]));
        assert_eq!(u.endpoint, None, "wildcard host: no endpoint");
        assert_eq!(u.mesh_ip, Some(Ipv4Addr::new(10, 1, 0, 1)));
        assert_eq!(u.mesh_ipv6, Some("fd00::1".parse().unwrap()));
        assert!(u.introducer);
        assert_eq!(
            u.routable_networks,
            Some(vec!["192.168.70.0/24".parse().unwrap()])
        );
        assert_eq!(u.last_seen, Some(now - Duration::from_secs(3)));
        let mut public = stem.clone();
        public.origin_endpoint = "198.51.100.7:51820".into();
        let u = fluff_update(&public, checked.origin, &ctx(), now, Duration::ZERO);
        assert_eq!(u.endpoint, Some(sa("198.51.100.7:51820")));
    }
}
