//! Relay decisions: which peers are reached through an introducer instead of directly. Pure.
//!
//! Per peer, the rules of daemon-behaviour §7.2 in order (first match wins), each with a stable
//! reason code ([`Reason::code`]):
//!
//! 1. this node is an introducer → direct (`local_introducer`);
//! 2. the peer is an introducer → direct (`peer_introducer`);
//! 3. the peer was discovered via `lan` → direct (`lan`);
//! 4. its endpoint lies in a network of a local interface → direct (`local_network`);
//! 5. `--force-relay` → relay if there is a candidate (`forced_relay`), else direct;
//! 6. no relay candidates → direct (`no_relay_candidate`);
//! 7. a handshake younger than [`HANDSHAKE_FRESH`] → direct (`handshake_fresh`); an older one →
//!    relay (`handshake_stale`);
//! 8. IPv6 enabled and an IPv6 endpoint → direct (`ipv6_endpoint`);
//! 9. both sides behind symmetric NAT → relay (`symmetric_nat_both`);
//! 10. discovered via `dht-transitive` and never handshaked → relay (`no_direct_handshake`);
//! 11. otherwise → direct first (`try_direct`).
//!
//! Candidates (§7.1): active introducers other than this node with an endpoint, seen within
//! [`CANDIDATE_MAX_AGE`], not quarantined. The relay is chosen by FNV-1a 64 over
//! `key ‖ 0x00 ‖ key` modulo the number of candidates sorted by key, as in Go, but with the pair's
//! lower key first instead of the local one: Go's two sides of a pair hash different strings and,
//! with two introducers, may pick different relays, and then each drops what the other sends
//! (the packets arrive from a relay whose allowed IPs do not hold the sender). Both sides of a
//! pair pick the same relay here (the node with the lower key computes exactly Go's value).
//!
//! Make-before-break (ours; Go flaps, weak spot 8): the relayed peer keeps its own WireGuard entry
//! with its endpoint (no allowed IPs), so its direct path keeps being tried, and it goes back to
//! direct only once its direct handshakes have stayed fresh for [`DIRECT_HOLD`] (three passes at
//! the 5 s cadence, Go's three cycles), counted from the first fresh handshake itself
//! (`direct_pending` while waiting; a stale handshake restarts it). Both sides of a pair see the
//! same handshake, so both switch back at the same moment when the reconcile loop wakes for
//! [`RelayPlan::next_switch`], instead of up to one pass apart (during which WireGuard's
//! exclusive allowed IPs would drop the packets of the side that switched first). A decision of "direct" without such a handshake keeps the
//! relay (`no_direct_handshake`), except for rules 1–3, which say relaying is wrong for this peer
//! whatever the handshakes. The relay is sticky: a relayed peer stays with its relay while that
//! relay is still usable (active, not quarantined, with an endpoint), even if it has dropped out of
//! the candidate list or new candidates changed the FNV choice, so working traffic never moves
//! for nothing. When the relay becomes unusable the peer moves to the FNV choice among the
//! remaining candidates (`relay_lost`); with none left it goes direct — the only path left to try.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use crate::keys::PublicKey;
use crate::node::{LocalNode, NatType};
use crate::peers::{Liveness, Method, Peer};

/// An introducer must have been seen this recently to become a relay (Go `RelayCandidateMaxAge`).
pub const CANDIDATE_MAX_AGE: Duration = Duration::from_secs(90);
/// A handshake younger than this proves the direct path (Go `HandshakeStaleAfter`).
pub const HANDSHAKE_FRESH: Duration = Duration::from_secs(150);
/// How long a relayed peer's direct handshakes must stay fresh before it goes back to direct:
/// two intervals of the reconcile loop, i.e. the third pass with a fresh handshake.
pub const DIRECT_HOLD: Duration = Duration::from_secs(10);

/// Why a peer is direct or relayed. Stable codes for the API and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// This node is an introducer: it never relays.
    LocalIntroducer,
    /// The peer is an introducer: reached directly.
    PeerIntroducer,
    /// The peer is on our LAN.
    Lan,
    /// Its endpoint is inside a network of a local interface.
    LocalNetwork,
    /// `--force-relay`.
    ForcedRelay,
    /// No introducer can relay.
    NoRelayCandidate,
    /// A recent direct handshake.
    HandshakeFresh,
    /// The last direct handshake is too old.
    HandshakeStale,
    /// An IPv6 endpoint (no NAT in the way).
    Ipv6Endpoint,
    /// Both sides are behind symmetric NAT: punching cannot work.
    SymmetricNatBoth,
    /// Never handshaked directly (known only second-hand, or still relayed without proof).
    NoDirectHandshake,
    /// Nothing against the direct path: try it.
    TryDirect,
    /// Relayed, a fresh direct handshake seen, counting passes before switching back.
    DirectPending,
    /// The previous relay became unusable.
    RelayLost,
    /// Mesh probes over the direct path fail while the handshake still looks fresh (the path
    /// broke less than 150 s ago): relay now instead of waiting for the handshake to age.
    ProbeFailed,
}

impl Reason {
    /// The stable code.
    pub const fn code(self) -> &'static str {
        match self {
            Self::LocalIntroducer => "local_introducer",
            Self::PeerIntroducer => "peer_introducer",
            Self::Lan => "lan",
            Self::LocalNetwork => "local_network",
            Self::ForcedRelay => "forced_relay",
            Self::NoRelayCandidate => "no_relay_candidate",
            Self::HandshakeFresh => "handshake_fresh",
            Self::HandshakeStale => "handshake_stale",
            Self::Ipv6Endpoint => "ipv6_endpoint",
            Self::SymmetricNatBoth => "symmetric_nat_both",
            Self::NoDirectHandshake => "no_direct_handshake",
            Self::TryDirect => "try_direct",
            Self::DirectPending => "direct_pending",
            Self::RelayLost => "relay_lost",
            Self::ProbeFailed => "probe_failed",
        }
    }
}

/// The §7.2 verdict for one peer, before hysteresis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Relay (true) or direct.
    pub relay: bool,
    /// Why.
    pub reason: Reason,
}

/// What the rules look at besides the peer.
#[derive(Clone, Debug)]
pub struct Context<'a> {
    /// This node.
    pub local: &'a LocalNode,
    /// Networks of the local interfaces that are up and not loopback (not the mesh interface).
    pub local_networks: &'a [IpNet],
    /// `--force-relay`.
    pub force_relay: bool,
    /// IPv6 enabled (not `--no-ipv6`).
    pub ipv6: bool,
    /// Age of the last handshake on each peer's own WireGuard entry (peers without one absent).
    pub handshakes: &'a BTreeMap<PublicKey, Duration>,
    /// Peers whose mesh probes fail (the health monitor's verdict): their direct path is broken
    /// even if the last handshake is recent.
    pub unreachable: &'a BTreeSet<PublicKey>,
    /// Now.
    pub now: Instant,
}

/// One relayed peer in the relay table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Relayed {
    /// The introducer carrying its traffic.
    pub via: PublicKey,
    /// Since when its direct handshakes have been fresh (the first fresh handshake's time), if
    /// they are.
    pub direct_since: Option<Instant>,
    /// When it was relayed: only a direct handshake after this proves the direct path works
    /// again (one from before may be the last one before the path broke).
    pub since: Instant,
}

/// The relay table: relayed peers by key. Kept by the reconcile loop from pass to pass.
pub type RelayTable = BTreeMap<PublicKey, Relayed>;

/// One pass's outcome: the new table and, for every usable peer, why it is where it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RelayPlan {
    /// Relayed peers.
    pub table: RelayTable,
    /// The reason behind each peer's path (relayed or not).
    pub reasons: BTreeMap<PublicKey, Reason>,
}

impl RelayPlan {
    /// When the first relayed peer with a fresh direct handshake is due to go back to direct.
    pub fn next_switch(&self) -> Option<Instant> {
        self.table
            .values()
            .filter_map(|r| r.direct_since.and_then(|t| t.checked_add(DIRECT_HOLD)))
            .min()
    }

    /// Peer → relay, the form [`super::desired::desired_device`] takes.
    pub fn routes(&self) -> BTreeMap<PublicKey, PublicKey> {
        self.table.iter().map(|(k, r)| (*k, r.via)).collect()
    }
}

/// The relayed peers whose direct path has no fresh handshake: the reconcile loop starts a
/// handshake on their own entry every [`DIRECT_RETRY`] (their entry has no allowed IPs, so no
/// traffic would ever make WireGuard try the direct path again after its retries give up).
pub fn retry_direct(
    table: &RelayTable,
    handshakes: &BTreeMap<PublicKey, Duration>,
) -> Vec<PublicKey> {
    table
        .keys()
        .filter(|k| handshakes.get(k).is_none_or(|age| *age >= HANDSHAKE_FRESH))
        .copied()
        .collect()
}

/// How often relayed peers' direct paths are tried again (WireGuard's keepalive interval).
pub const DIRECT_RETRY: Duration = Duration::from_secs(25);

/// How traffic to a peer goes, for the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// Its own WireGuard entry, over the internet.
    Direct,
    /// Its own entry, on a network this node is on (discovered on the LAN or an endpoint in a
    /// local network).
    Lan,
    /// Through this introducer.
    Relay(PublicKey),
}

impl Path {
    /// The API's spelling: `direct`, `lan`, `relay`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Lan => "lan",
            Self::Relay(_) => "relay",
        }
    }

    /// The path of `peer` in `plan`; `None` for peers the plan did not decide (not on the device).
    pub fn of(plan: &RelayPlan, peer: &Peer) -> Option<Self> {
        if let Some(r) = plan.table.get(&peer.public_key) {
            return Some(Self::Relay(r.via));
        }
        let reason = plan.reasons.get(&peer.public_key)?;
        if *reason == Reason::LocalNetwork || peer.discovered_via.contains(&Method::Lan) {
            Some(Self::Lan)
        } else {
            Some(Self::Direct)
        }
    }
}

/// Whether `peer` can carry relayed traffic now (§7.1).
pub fn is_candidate(peer: &Peer, local: &LocalNode, now: Instant) -> bool {
    usable_relay(peer, local, now)
        && now.saturating_duration_since(peer.last_seen) <= CANDIDATE_MAX_AGE
}

/// Whether `peer` can still carry the traffic of peers already relayed through it: an active
/// introducer with an endpoint (the candidate rule without the 90 s freshness).
fn usable_relay(peer: &Peer, local: &LocalNode, now: Instant) -> bool {
    peer.public_key != local.public_key
        && peer.introducer
        && peer.endpoint.is_some()
        && matches!(peer.liveness(now), Liveness::Active | Liveness::Cached)
}

/// FNV-1a 64 over `local ‖ 0x00 ‖ peer` (the keys as base64 strings, as Go hashes them).
pub fn fnv1a64(local: &PublicKey, peer: &PublicKey) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let (l, p) = (local.to_string(), peer.to_string());
    l.bytes()
        .chain(std::iter::once(0u8))
        .chain(p.bytes())
        .fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

/// The relay for the pair `local`/`peer` among `candidates` (any order): sorted by key string,
/// index = [`fnv1a64`] of the pair, lower key first, mod n. The same for both sides of a pair.
pub fn choose_relay(
    local: &PublicKey,
    peer: &PublicKey,
    candidates: &[PublicKey],
) -> Option<PublicKey> {
    let mut sorted: Vec<String> = candidates.iter().map(ToString::to_string).collect();
    sorted.sort();
    sorted.dedup();
    let n = u64::try_from(sorted.len()).ok().filter(|n| *n > 0)?;
    let (lo, hi) = if local.to_string() <= peer.to_string() {
        (local, peer)
    } else {
        (peer, local)
    };
    let index = usize::try_from(fnv1a64(lo, hi) % n).ok()?;
    let chosen = sorted.get(index)?;
    candidates
        .iter()
        .find(|k| k.to_string() == *chosen)
        .copied()
}

fn endpoint_is_local(endpoint: Option<SocketAddr>, nets: &[IpNet]) -> bool {
    endpoint.is_some_and(|e| nets.iter().any(|n| n.contains(&e.ip())))
}

/// The §7.2 rules for one peer, in order.
pub fn decide(peer: &Peer, ctx: &Context<'_>, have_candidates: bool) -> Verdict {
    let direct = |reason| Verdict {
        relay: false,
        reason,
    };
    let relay = |reason| Verdict {
        relay: true,
        reason,
    };
    if ctx.local.introducer {
        return direct(Reason::LocalIntroducer);
    }
    if peer.introducer {
        return direct(Reason::PeerIntroducer);
    }
    if peer.discovered_via.contains(&Method::Lan) {
        return direct(Reason::Lan);
    }
    if endpoint_is_local(peer.endpoint, ctx.local_networks) {
        return direct(Reason::LocalNetwork);
    }
    if ctx.force_relay {
        return if have_candidates {
            relay(Reason::ForcedRelay)
        } else {
            direct(Reason::NoRelayCandidate)
        };
    }
    if !have_candidates {
        return direct(Reason::NoRelayCandidate);
    }
    if ctx.unreachable.contains(&peer.public_key) {
        return relay(Reason::ProbeFailed);
    }
    if let Some(age) = ctx.handshakes.get(&peer.public_key) {
        return if *age < HANDSHAKE_FRESH {
            direct(Reason::HandshakeFresh)
        } else {
            relay(Reason::HandshakeStale)
        };
    }
    if ctx.ipv6 && peer.endpoint.is_some_and(|e| e.is_ipv6()) {
        return direct(Reason::Ipv6Endpoint);
    }
    if ctx.local.nat_type == Some(NatType::Symmetric)
        && peer.nat_type.as_deref() == Some(NatType::Symmetric.as_str())
    {
        return relay(Reason::SymmetricNatBoth);
    }
    if peer.discovered_via.contains(&Method::DhtTransitive) {
        return relay(Reason::NoDirectHandshake);
    }
    direct(Reason::TryDirect)
}

/// One pass: the §7.2 verdicts, hysteresis and stickiness over `prev`, relay choice.
/// `peers` are the peers that belong on the device (self and peers without a mesh IPv4 are
/// skipped).
pub fn plan(peers: &[Peer], ctx: &Context<'_>, prev: &RelayTable) -> RelayPlan {
    let me = ctx.local.public_key;
    let candidates: Vec<PublicKey> = peers
        .iter()
        .filter(|p| is_candidate(p, ctx.local, ctx.now))
        .map(|p| p.public_key)
        .collect();
    let usable = |key: &PublicKey| {
        peers
            .iter()
            .any(|p| p.public_key == *key && usable_relay(p, ctx.local, ctx.now))
    };
    let mut out = RelayPlan::default();
    for peer in peers {
        if peer.public_key == me || peer.mesh_ip.is_none() {
            continue;
        }
        let key = peer.public_key;
        let verdict = decide(peer, ctx, !candidates.is_empty());
        // The instant of a fresh direct handshake, if there is one.
        let fresh = ctx
            .handshakes
            .get(&key)
            .filter(|age| **age < HANDSHAKE_FRESH)
            .map(|age| ctx.now.checked_sub(*age).unwrap_or(ctx.now));
        // The relay to use if relayed: the previous one while usable, else the FNV choice.
        let previous = prev.get(&key).filter(|r| r.via != key);
        let kept = previous.filter(|r| usable(&r.via)).map(|r| r.via);
        let lost = previous.is_some() && kept.is_none();
        let choice = kept.or_else(|| {
            let others: Vec<PublicKey> = candidates.iter().copied().filter(|c| *c != key).collect();
            choose_relay(&me, &key, &others)
        });
        let structural = matches!(
            verdict.reason,
            Reason::LocalIntroducer | Reason::PeerIntroducer | Reason::Lan
        );
        // A relayed peer's handshake counts only when it came after the relay began.
        let fresh = match previous {
            Some(r) => fresh.filter(|at| *at > r.since),
            None => fresh,
        };
        let (relayed, reason, direct_since) = match (verdict.relay, previous, fresh) {
            (true, _, _) => (true, verdict.reason, None),
            (false, None, _) => (false, verdict.reason, None),
            (false, Some(_), _) if structural => (false, verdict.reason, None),
            (false, Some(r), Some(at)) => {
                let since = r.direct_since.unwrap_or(at).min(at);
                if ctx.now.saturating_duration_since(since) >= DIRECT_HOLD {
                    (false, Reason::HandshakeFresh, None)
                } else {
                    (true, Reason::DirectPending, Some(since))
                }
            }
            (false, Some(_), None) => (true, Reason::NoDirectHandshake, None),
        };
        match choice {
            Some(via) if relayed => {
                let since = previous.map_or(ctx.now, |r| r.since);
                out.table.insert(
                    key,
                    Relayed {
                        via,
                        direct_since,
                        since,
                    },
                );
                let reason = if lost { Reason::RelayLost } else { reason };
                out.reasons.insert(key, reason);
            }
            None if relayed => {
                out.reasons.insert(key, Reason::NoRelayCandidate);
            }
            _ => {
                out.reasons.insert(key, reason);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::desired::tests::peer;

    fn key(b: u8) -> PublicKey {
        PublicKey([b; 32])
    }

    fn intro(b: u8) -> Peer {
        let mut p = peer(b, Some(&format!("10.1.0.{b}")), &[]);
        p.introducer = true;
        p.discovered_via = vec![Method::Dht];
        p
    }

    fn remote(b: u8, via: &[Method]) -> Peer {
        let mut p = peer(b, Some(&format!("10.1.0.{b}")), &[]);
        p.discovered_via = via.to_vec();
        p
    }

    struct Env {
        local: LocalNode,
        nets: Vec<IpNet>,
        force: bool,
        ipv6: bool,
        hs: BTreeMap<PublicKey, Duration>,
        unreachable: BTreeSet<PublicKey>,
        now: Instant,
    }

    impl Env {
        fn new() -> Self {
            Self {
                local: crate::node::tests::local(),
                nets: vec!["192.168.1.0/24".parse().unwrap()],
                force: false,
                ipv6: true,
                hs: BTreeMap::new(),
                unreachable: BTreeSet::new(),
                now: Instant::now(),
            }
        }
        fn ctx(&self) -> Context<'_> {
            Context {
                local: &self.local,
                local_networks: &self.nets,
                force_relay: self.force,
                ipv6: self.ipv6,
                handshakes: &self.hs,
                unreachable: &self.unreachable,
                now: self.now,
            }
        }
    }

    #[test]
    fn every_rule_in_order() {
        use Reason::*;
        type Setup = fn(&mut Env, &mut Peer);
        let none: Setup = |_, _| {};
        let cases: Vec<(&str, Setup, bool, bool, Reason)> = vec![
            // (name, setup, candidates, relay, reason)
            (
                "local introducer",
                |e, p| {
                    e.local.introducer = true;
                    e.force = true;
                    p.nat_type = Some("symmetric".into());
                },
                true,
                false,
                LocalIntroducer,
            ),
            (
                "peer introducer",
                |e, p| {
                    e.force = true;
                    p.introducer = true;
                },
                true,
                false,
                PeerIntroducer,
            ),
            (
                "lan",
                |e, p| {
                    e.force = true;
                    p.discovered_via = vec![Method::Dht, Method::Lan];
                },
                true,
                false,
                Lan,
            ),
            (
                "endpoint on a local network",
                |e, p| {
                    e.force = true;
                    p.endpoint = Some("192.168.1.7:51820".parse().unwrap());
                },
                true,
                false,
                LocalNetwork,
            ),
            (
                "forced, fresh handshake ignored",
                |e, p| {
                    e.force = true;
                    e.hs.insert(p.public_key, Duration::from_secs(5));
                },
                true,
                true,
                ForcedRelay,
            ),
            (
                "forced without candidates",
                |e, _| e.force = true,
                false,
                false,
                NoRelayCandidate,
            ),
            (
                "no candidates, symmetric both",
                |e, p| {
                    e.local.nat_type = Some(NatType::Symmetric);
                    p.nat_type = Some("symmetric".into());
                },
                false,
                false,
                NoRelayCandidate,
            ),
            (
                "fresh handshake, symmetric both",
                |e, p| {
                    e.local.nat_type = Some(NatType::Symmetric);
                    p.nat_type = Some("symmetric".into());
                    e.hs.insert(p.public_key, Duration::from_secs(30));
                },
                true,
                false,
                HandshakeFresh,
            ),
            (
                "stale handshake, cone",
                |e, p| {
                    p.nat_type = Some("cone".into());
                    e.hs.insert(p.public_key, Duration::from_secs(150));
                },
                true,
                true,
                HandshakeStale,
            ),
            (
                "ipv6 endpoint",
                |e, p| {
                    e.local.nat_type = Some(NatType::Symmetric);
                    p.nat_type = Some("symmetric".into());
                    p.endpoint = Some("[2001:db8::7]:51820".parse().unwrap());
                },
                true,
                false,
                Ipv6Endpoint,
            ),
            (
                "ipv6 endpoint with ipv6 off",
                |e, p| {
                    e.ipv6 = false;
                    e.local.nat_type = Some(NatType::Symmetric);
                    p.nat_type = Some("symmetric".into());
                    p.endpoint = Some("[2001:db8::7]:51820".parse().unwrap());
                },
                true,
                true,
                SymmetricNatBoth,
            ),
            (
                "symmetric both",
                |e, p| {
                    e.local.nat_type = Some(NatType::Symmetric);
                    p.nat_type = Some("symmetric".into());
                },
                true,
                true,
                SymmetricNatBoth,
            ),
            (
                "symmetric and cone",
                |e, p| {
                    e.local.nat_type = Some(NatType::Symmetric);
                    p.nat_type = Some("cone".into());
                },
                true,
                false,
                TryDirect,
            ),
            (
                "transitive and dht, never handshaked",
                |_, p| p.discovered_via = vec![Method::Dht, Method::DhtTransitive],
                true,
                true,
                NoDirectHandshake,
            ),
            (
                "transitive with a stale handshake",
                |e, p| {
                    p.discovered_via = vec![Method::DhtTransitive];
                    e.hs.insert(p.public_key, Duration::from_secs(400));
                },
                true,
                true,
                HandshakeStale,
            ),
            (
                "never handshaked, not transitive",
                none,
                true,
                false,
                TryDirect,
            ),
        ];
        for (name, setup, candidates, relay, reason) in cases {
            let mut env = Env::new();
            let mut p = remote(7, &[Method::Dht]);
            setup(&mut env, &mut p);
            let v = decide(&p, &env.ctx(), candidates);
            assert_eq!((v.relay, v.reason), (relay, reason), "{name}");
        }
    }

    #[test]
    fn candidates_are_fresh_active_introducers_with_endpoints() {
        let env = Env::new();
        let now = env.now;
        let ok = intro(2);
        let mut old = intro(3);
        old.last_seen = now.checked_sub(Duration::from_secs(91)).unwrap();
        let mut edge = intro(4);
        edge.last_seen = now.checked_sub(CANDIDATE_MAX_AGE).unwrap();
        let mut no_endpoint = intro(5);
        no_endpoint.endpoint = None;
        let mut quarantined = intro(6);
        quarantined.quarantined_until = Some(now + Duration::from_secs(10));
        let plain = remote(7, &[Method::Dht]);
        let mut me = intro(1);
        me.public_key = env.local.public_key;
        let got: Vec<bool> = [ok, old, edge, no_endpoint, quarantined, plain, me]
            .iter()
            .map(|p| is_candidate(p, &env.local, now))
            .collect();
        assert_eq!(got, [true, false, true, false, false, false, false]);
    }

    #[test]
    fn fnv1a_matches_the_reference_vectors_and_picks_by_sorted_key() {
        // FNV-1a 64 of "" and "a" (published test vectors), via the same fold.
        let fold = |s: &[u8]| {
            s.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
            })
        };
        assert_eq!(fold(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fold(b"a"), 0xaf63_dc4c_8601_ec8c);
        let (l, p) = (key(1), key(9));
        let mut bytes = l.to_string().into_bytes();
        bytes.push(0);
        bytes.extend(p.to_string().bytes());
        assert_eq!(fnv1a64(&l, &p), fold(&bytes));
        let cands = [key(5), key(3), key(4)];
        let mut sorted: Vec<String> = cands.iter().map(ToString::to_string).collect();
        sorted.sort();
        let want = &sorted[(fold(&bytes) % 3) as usize];
        let got = choose_relay(&l, &p, &cands).unwrap();
        assert_eq!(&got.to_string(), want);
        // Order of the input does not matter.
        assert_eq!(choose_relay(&l, &p, &[key(4), key(5), key(3)]), Some(got));
        assert_eq!(choose_relay(&l, &p, &[]), None);
        // Both sides of a pair pick the same relay, also where Go's formula (local key first)
        // would make them differ.
        let mut go_differs = 0;
        for b in 10..60 {
            let (x, y) = (key(2), key(b));
            assert_eq!(
                choose_relay(&x, &y, &cands),
                choose_relay(&y, &x, &cands),
                "{b}"
            );
            if fnv1a64(&x, &y) % 3 != fnv1a64(&y, &x) % 3 {
                go_differs += 1;
            }
        }
        assert!(go_differs > 0);
    }

    fn pass(env: &Env, peers: &[Peer], prev: &RelayTable) -> RelayPlan {
        plan(peers, &env.ctx(), prev)
    }

    #[test]
    fn a_transitive_peer_is_relayed_through_the_introducer() {
        let env = Env::new();
        let peers = [intro(2), remote(7, &[Method::DhtTransitive])];
        let p = pass(&env, &peers, &RelayTable::new());
        assert_eq!(p.routes(), BTreeMap::from([(key(7), key(2))]));
        assert_eq!(p.reasons[&key(7)], Reason::NoDirectHandshake);
        assert_eq!(p.reasons[&key(2)], Reason::PeerIntroducer);
    }

    #[test]
    fn back_to_direct_only_after_the_direct_handshake_held_for_the_hold_time() {
        let mut env = Env::new();
        let peers = [intro(2), remote(7, &[Method::DhtTransitive])];
        let mut table = pass(&env, &peers, &RelayTable::new()).table;
        // No handshake yet: stays relayed, nothing pending.
        let p = pass(&env, &peers, &table);
        assert_eq!(p.table[&key(7)].direct_since, None);
        assert_eq!(p.next_switch(), None);
        // A direct handshake 2 s ago (after the relay began): pending since then, due
        // DIRECT_HOLD after it.
        env.now += Duration::from_secs(3);
        let handshake = env.now - Duration::from_secs(2);
        env.hs.insert(key(7), Duration::from_secs(2));
        let p = pass(&env, &peers, &table);
        assert_eq!(p.table[&key(7)].direct_since, Some(handshake));
        assert_eq!(p.reasons[&key(7)], Reason::DirectPending);
        assert_eq!(p.next_switch(), Some(handshake + DIRECT_HOLD));
        table = p.table;
        // A later pass with a newer handshake (a rekey): still counted from the first one.
        env.now += Duration::from_secs(5);
        env.hs.insert(key(7), Duration::from_secs(1));
        let p = pass(&env, &peers, &table);
        assert_eq!(p.table[&key(7)].direct_since, Some(handshake));
        table = p.table;
        // Many passes in a burst do not hasten it: only time does.
        for _ in 0..5 {
            table = pass(&env, &peers, &table).table;
        }
        assert!(table.contains_key(&key(7)));
        // At the due time: direct.
        env.now = handshake + DIRECT_HOLD;
        env.hs.insert(key(7), Duration::from_secs(3));
        let p = pass(&env, &peers, &table);
        assert!(p.table.is_empty());
        assert_eq!(p.reasons[&key(7)], Reason::HandshakeFresh);
        assert_eq!(p.next_switch(), None);
    }

    #[test]
    fn failing_probes_relay_at_once_and_only_a_later_direct_handshake_brings_it_back() {
        let mut env = Env::new();
        let peers = [intro(2), remote(7, &[Method::Dht])];
        // Direct, with a fresh handshake.
        env.hs.insert(key(7), Duration::from_secs(20));
        let p = pass(&env, &peers, &RelayTable::new());
        assert!(p.table.is_empty());
        assert_eq!(p.reasons[&key(7)], Reason::HandshakeFresh);
        // The path breaks: the handshake still looks fresh, but the probes fail.
        env.now += Duration::from_secs(5);
        env.hs.insert(key(7), Duration::from_secs(25));
        env.unreachable.insert(key(7));
        let mut table = pass(&env, &peers, &RelayTable::new()).table;
        assert_eq!(table[&key(7)].via, key(2));
        let relayed_at = table[&key(7)].since;
        // Through the relay the probes answer again; the old direct handshake (from before the
        // relay) proves nothing, for as long as it stays "fresh": still relayed.
        env.unreachable.clear();
        for step in 1..=10 {
            env.now += Duration::from_secs(5);
            env.hs.insert(key(7), Duration::from_secs(25 + 5 * step));
            let p = pass(&env, &peers, &table);
            assert!(p.table.contains_key(&key(7)), "step {step}");
            assert_eq!(p.reasons[&key(7)], Reason::NoDirectHandshake, "step {step}");
            assert_eq!(p.table[&key(7)].since, relayed_at, "step {step}");
            table = p.table;
        }
        // The path heals: a direct handshake after the relay began, held for the hold time.
        env.hs.insert(key(7), Duration::from_secs(1));
        table = pass(&env, &peers, &table).table;
        assert!(table.contains_key(&key(7)));
        env.now += DIRECT_HOLD;
        env.hs.insert(key(7), DIRECT_HOLD + Duration::from_secs(1));
        let p = pass(&env, &peers, &table);
        assert!(p.table.is_empty(), "{p:?}");
        assert_eq!(p.reasons[&key(7)], Reason::HandshakeFresh);
    }

    #[test]
    fn a_stale_handshake_during_the_count_restarts_it() {
        let mut env = Env::new();
        let peers = [intro(2), remote(7, &[Method::Dht])];
        env.force = true;
        let mut table = pass(&env, &peers, &RelayTable::new()).table;
        env.force = false;
        // Alternating fresh and stale handshakes over 6 passes never drop the relay.
        for i in 0..6 {
            let age = if i % 2 == 0 { 3 } else { 200 };
            env.hs.insert(key(7), Duration::from_secs(age));
            let p = pass(&env, &peers, &table);
            assert!(p.table.contains_key(&key(7)), "pass {i}");
            table = p.table;
        }
    }

    #[test]
    fn a_relayed_peer_without_handshake_is_not_flipped_to_direct() {
        // Go weak spot 8: a "direct" verdict with no handshake at all keeps the relay.
        let mut env = Env::new();
        env.force = true;
        let peers = [intro(2), remote(7, &[Method::Dht])];
        let mut table = pass(&env, &peers, &RelayTable::new()).table;
        env.force = false;
        for _ in 0..5 {
            let p = pass(&env, &peers, &table);
            assert_eq!(p.reasons[&key(7)], Reason::NoDirectHandshake);
            table = p.table;
        }
        assert!(table.contains_key(&key(7)));
    }

    #[test]
    fn lan_discovery_ends_a_relay_at_once() {
        let env = Env::new();
        let mut peers = vec![intro(2), remote(7, &[Method::DhtTransitive])];
        let table = pass(&env, &peers, &RelayTable::new()).table;
        peers[1].discovered_via.push(Method::Lan);
        let p = pass(&env, &peers, &table);
        assert!(p.table.is_empty());
        assert_eq!(p.reasons[&key(7)], Reason::Lan);
    }

    #[test]
    fn the_relay_is_sticky_until_it_becomes_unusable() {
        let mut env = Env::new();
        let mut peers = vec![intro(2), remote(7, &[Method::DhtTransitive])];
        let table = pass(&env, &peers, &RelayTable::new()).table;
        // A new introducer appears: the peer stays with its relay whatever FNV says.
        peers.push(intro(3));
        let t2 = pass(&env, &peers, &table).table;
        assert_eq!(t2[&key(7)].via, key(2));
        // The relay is not a candidate any more (silent 100 s) but still active: kept.
        env.now += Duration::from_secs(100);
        peers[2].last_seen = env.now;
        let p = pass(&env, &peers, &t2);
        assert_eq!(p.table[&key(7)].via, key(2));
        // The relay is quarantined: moved to the other candidate.
        peers[0].quarantined_until = Some(env.now + Duration::from_secs(30));
        let p = pass(&env, &peers, &t2);
        assert_eq!(p.table[&key(7)].via, key(3));
        assert_eq!(p.reasons[&key(7)], Reason::RelayLost);
        // No relay left at all: direct, the only path left to try.
        peers.remove(2);
        let p = pass(&env, &peers, &t2);
        assert!(p.table.is_empty());
        assert_eq!(p.reasons[&key(7)], Reason::NoRelayCandidate);
    }

    #[test]
    fn relayed_peers_without_a_fresh_direct_handshake_are_retried() {
        let relayed = |b: u8| {
            (
                key(b),
                Relayed {
                    via: key(2),
                    direct_since: None,
                    since: Instant::now(),
                },
            )
        };
        let table = RelayTable::from([relayed(5), relayed(6), relayed(7)]);
        let hs = BTreeMap::from([
            (key(6), Duration::from_secs(10)),
            (key(7), HANDSHAKE_FRESH),
            (key(8), Duration::from_secs(500)),
        ]);
        assert_eq!(retry_direct(&table, &hs), [key(5), key(7)]);
    }

    #[test]
    fn paths_for_the_api() {
        let env = Env::new();
        let mut lan = remote(3, &[Method::Lan]);
        lan.introducer = false;
        let mut local_net = remote(4, &[Method::Dht]);
        local_net.endpoint = Some("192.168.1.9:51820".parse().unwrap());
        let peers = [
            intro(2),
            lan,
            local_net,
            remote(5, &[Method::Dht]),
            remote(7, &[Method::DhtTransitive]),
        ];
        let plan = pass(&env, &peers, &RelayTable::new());
        let got: Vec<Option<Path>> = peers.iter().map(|p| Path::of(&plan, p)).collect();
        assert_eq!(
            got,
            [
                Some(Path::Direct),
                Some(Path::Lan),
                Some(Path::Lan),
                Some(Path::Direct),
                Some(Path::Relay(key(2)))
            ]
        );
        assert_eq!(Path::of(&plan, &remote(9, &[])), None);
        assert_eq!(Path::Relay(key(2)).as_str(), "relay");
    }

    #[test]
    fn self_and_peers_without_mesh_ip_get_no_decision() {
        let env = Env::new();
        let mut me = intro(1);
        me.public_key = env.local.public_key;
        let peers = [me, intro(2), remote(8, &[Method::DhtTransitive])];
        let mut no_ip = remote(9, &[Method::DhtTransitive]);
        no_ip.mesh_ip = None;
        let all = [peers.as_slice(), &[no_ip]].concat();
        let p = pass(&env, &all, &RelayTable::new());
        assert_eq!(
            p.reasons.keys().copied().collect::<Vec<_>>(),
            [key(2), key(8)]
        );
    }
}
