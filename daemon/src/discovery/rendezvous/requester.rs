//! The requester side (crypto-and-wire §11.2): when this node wants a peer it has no working
//! tunnel to, which introducers it asks (`RENDEZVOUS_OFFER`), or whether it contacts the peer
//! directly, with deduplication and per-peer backoff. Pure: peers come in as [`PeerView`]s, time
//! as parameters.
//!
//! Differences from Go, all local behaviour:
//! - Offers are deduplicated per (introducer, target), not per introducer: Go's per-introducer
//!   dedup lets one introducer help with only one target every 20 s, so a node behind NAT that
//!   wants several NATed peers reaches them one slot cycle after another.
//! - The periodic trigger is checked every second (at most one attempt per peer every 10 s), so
//!   every pair's 4 s slot is hit; Go checks every 10 s, which never meets the slot for 60 % of
//!   start times.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::pair::{At, in_slot};
use crate::discovery::exchange::rules::is_public_ip;
use crate::keys::PublicKey;

/// A handshake younger than this means the tunnel works: nothing to do.
pub const CONNECTED_WITHIN: Duration = Duration::from_secs(120);
/// A peer reached by rendezvous and seen within this is not retried on store events; an
/// auto-eligible introducer must have been seen within this.
pub const RECENT: Duration = Duration::from_secs(120);
/// Most introducers asked for one target.
pub const MAX_INTRODUCERS: usize = 3;
/// An offer to the same introducer for the same target is not repeated within this.
pub const OFFER_DEDUP: Duration = Duration::from_secs(20);
/// A direct HELLO to the same control endpoint is not repeated within this.
pub const DIRECT_DEDUP: Duration = Duration::from_secs(20);
/// First backoff after a failure.
pub const BACKOFF_MIN: Duration = Duration::from_secs(3);
/// Longest backoff.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Least time between two periodic attempts for one peer.
pub const PERIODIC_INTERVAL: Duration = Duration::from_secs(10);

/// What the requester knows about one stored peer, at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerView {
    /// The peer's key.
    pub key: PublicKey,
    /// Its WireGuard endpoint, if known.
    pub endpoint: Option<SocketAddr>,
    /// It says it runs with `--introducer`.
    pub introducer: bool,
    /// One of its discovery methods starts with `dht` (it talks on the exchange socket).
    pub via_dht: bool,
    /// It was reached by rendezvous (`dht-rendezvous`) before.
    pub via_rendezvous: bool,
    /// Time since it was last seen.
    pub seen_ago: Duration,
    /// The control endpoint learned from its packets, if any.
    pub learned_control: Option<SocketAddr>,
    /// Age of the last WireGuard handshake with it, if any.
    pub handshake_ago: Option<Duration>,
}

impl PeerView {
    /// Its control (exchange-socket) endpoint: the learned one, else `<endpoint host>:<gossip
    /// port>` (all nodes of a mesh share the gossip port).
    pub fn control(&self, gossip_port: u16) -> Option<SocketAddr> {
        self.learned_control
            .or_else(|| self.endpoint.map(|e| SocketAddr::new(e.ip(), gossip_port)))
    }

    fn connected(&self) -> bool {
        self.handshake_ago.is_some_and(|a| a < CONNECTED_WITHIN)
    }
}

/// This node's side of the decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Our key.
    pub own: PublicKey,
    /// The mesh's gossip (exchange) port.
    pub gossip_port: u16,
    /// IPv6 endpoints allowed (`--no-ipv6` clears it).
    pub ipv6: bool,
}

/// An introducer chosen for a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Introducer {
    /// Its key.
    pub key: PublicKey,
    /// Where offers go.
    pub control: SocketAddr,
}

/// Whether `p` may introduce us to `target`, and at which control endpoint.
fn eligible(p: &PeerView, target: &PublicKey, s: &Settings) -> Option<Introducer> {
    if p.key == s.own || p.key == *target || !p.via_dht {
        return None;
    }
    let endpoint = p.endpoint?;
    let control = p.control(s.gossip_port)?;
    let usable = |a: SocketAddr| is_public_ip(a.ip()) && (s.ipv6 || a.is_ipv4());
    if !usable(endpoint) || !usable(control) {
        return None;
    }
    let auto = p.seen_ago < RECENT && p.learned_control.is_some() && p.connected();
    (p.introducer || auto).then_some(Introducer {
        key: p.key,
        control,
    })
}

/// Go's `selectRendezvousIntroducers`: the eligible peers (not us, not the target, talking on
/// the exchange socket, public endpoint and control endpoint, and either `--introducer` or
/// recently seen with a working tunnel and a learned control endpoint), explicit introducers
/// first, then by key and endpoint; up to [`MAX_INTRODUCERS`] consecutive ones from index
/// `seed mod n`, wrapping, so different pairs spread over different introducers.
pub fn select_introducers(
    target: &PublicKey,
    peers: &[PeerView],
    seed: u64,
    s: &Settings,
) -> Vec<Introducer> {
    let mut found: Vec<(bool, Introducer, Option<SocketAddr>)> = peers
        .iter()
        .filter_map(|p| eligible(p, target, s).map(|i| (p.introducer, i, p.endpoint)))
        .collect();
    found.sort_by(|a, b| {
        b.0.cmp(&a.0)
            .then(a.1.key.cmp(&b.1.key))
            .then(a.2.cmp(&b.2))
    });
    let n = found.len();
    if n == 0 {
        return Vec::new();
    }
    // `seed % n` is below `n`, a usize: the conversion cannot fail.
    let start = usize::try_from(seed % n as u64).unwrap_or(0);
    (0..n.min(MAX_INTRODUCERS))
        .map(|i| found[(start + i) % n].1)
        .collect()
}

/// What set off an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// The layer started (once per active peer with an endpoint).
    Start,
    /// The peer store reported a new or changed peer.
    Event,
    /// The periodic check (every second; each peer at most every 10 s, inside its slot).
    Periodic,
}

/// Why nothing is done for a peer now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// That is us.
    Own,
    /// A failure is still being backed off.
    Backoff,
    /// Start and periodic attempts need an endpoint.
    NoEndpoint,
    /// Reached by rendezvous and seen recently: a store event changes nothing.
    RecentRendezvous,
    /// Not in the pair's slot, or tried less than 10 s ago.
    NotDue,
    /// The tunnel works (handshake < 2 min).
    Connected,
    /// Every chosen introducer was asked for this target less than 20 s ago.
    OfferedRecently,
    /// No introducer, and the direct contact was tried less than 20 s ago.
    ContactedRecently,
    /// No introducer and no usable endpoint.
    NoRoute,
}

/// What to do for a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing, for this reason.
    Skip(Skip),
    /// Send a `RENDEZVOUS_OFFER` to each of these (never empty).
    Offer(Vec<Introducer>),
    /// No introducer: HELLO the peer's control endpoint and wait for a handshake.
    Direct(SocketAddr),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Backoff {
    until: Instant,
    delay: Duration,
}

/// The requester's memory: backoffs, recent offers and contacts, periodic attempts. Bounded by
/// the peer store (keys) and pruned by [`Requester::prune`].
#[derive(Debug, Default)]
pub struct Requester {
    backoff: HashMap<PublicKey, Backoff>,
    offered: HashMap<(SocketAddr, PublicKey), Instant>,
    direct: HashMap<SocketAddr, Instant>,
    periodic: HashMap<PublicKey, Instant>,
}

/// Whether `at` is less than `window` before `now`.
fn within(at: Option<&Instant>, now: Instant, window: Duration) -> bool {
    at.is_some_and(|at| now.saturating_duration_since(*at) < window)
}

impl Requester {
    /// Go's triggers and `tryRendezvousForPeer` for `target`, given every active peer: the
    /// decision, with the offers or contact it implies recorded for deduplication. `seed` is the
    /// pair seed of us and the target (slots are wall-clock based: both clocks are in `at`).
    pub fn decide(
        &mut self,
        trigger: Trigger,
        target: &PeerView,
        peers: &[PeerView],
        seed: u64,
        s: &Settings,
        at: At,
    ) -> Decision {
        let now = at.now;
        if target.key == s.own {
            return Decision::Skip(Skip::Own);
        }
        if self.backoff_active(&target.key, now) {
            return Decision::Skip(Skip::Backoff);
        }
        match trigger {
            Trigger::Start | Trigger::Periodic if target.endpoint.is_none() => {
                return Decision::Skip(Skip::NoEndpoint);
            }
            Trigger::Event if target.via_rendezvous && target.seen_ago < RECENT => {
                return Decision::Skip(Skip::RecentRendezvous);
            }
            Trigger::Periodic => {
                let due = in_slot(seed, at.unix_s())
                    && !within(self.periodic.get(&target.key), now, PERIODIC_INTERVAL);
                if !due {
                    return Decision::Skip(Skip::NotDue);
                }
                self.periodic.insert(target.key, now);
            }
            _ => {}
        }
        if target.connected() {
            return Decision::Skip(Skip::Connected);
        }
        let chosen = select_introducers(&target.key, peers, seed, s);
        if !chosen.is_empty() {
            let fresh: Vec<Introducer> = chosen
                .into_iter()
                .filter(|i| !within(self.offered.get(&(i.control, target.key)), now, OFFER_DEDUP))
                .collect();
            if fresh.is_empty() {
                return Decision::Skip(Skip::OfferedRecently);
            }
            for i in &fresh {
                self.offered.insert((i.control, target.key), now);
            }
            return Decision::Offer(fresh);
        }
        let direct = target
            .endpoint
            .filter(|e| s.ipv6 || e.is_ipv4())
            .and_then(|_| target.control(s.gossip_port));
        match direct {
            None => Decision::Skip(Skip::NoRoute),
            Some(control) if within(self.direct.get(&control), now, DIRECT_DEDUP) => {
                Decision::Skip(Skip::ContactedRecently)
            }
            Some(control) => {
                self.direct.insert(control, now);
                Decision::Direct(control)
            }
        }
    }

    /// Whether attempts for `key` are being backed off at `now`.
    pub fn backoff_active(&self, key: &PublicKey, now: Instant) -> bool {
        self.backoff.get(key).is_some_and(|b| now < b.until)
    }

    /// An attempt for `key` failed: back off 3 s, doubling on each further failure up to 30 s.
    /// Returns the new delay.
    pub fn failed(&mut self, key: PublicKey, now: Instant) -> Duration {
        let delay = self
            .backoff
            .get(&key)
            .map_or(BACKOFF_MIN, |b| (b.delay * 2).min(BACKOFF_MAX));
        self.backoff.insert(
            key,
            Backoff {
                until: now + delay,
                delay,
            },
        );
        delay
    }

    /// `key` was reached: its backoff is cleared.
    pub fn succeeded(&mut self, key: &PublicKey) {
        self.backoff.remove(key);
    }

    /// Forgets what no longer matters at `now`: dedup records past their window, periodic
    /// records past theirs, and backoffs that ended more than [`BACKOFF_MAX`] ago (the next
    /// failure starts again at 3 s).
    pub fn prune(&mut self, now: Instant) {
        self.offered
            .retain(|_, at| within(Some(at), now, OFFER_DEDUP));
        self.direct
            .retain(|_, at| within(Some(at), now, DIRECT_DEDUP));
        self.periodic
            .retain(|_, at| within(Some(at), now, PERIODIC_INTERVAL));
        self.backoff
            .retain(|_, b| now.saturating_duration_since(b.until) < BACKOFF_MAX);
    }

    /// How many records it holds (for tests of the bounds).
    pub fn len(&self) -> usize {
        self.backoff.len() + self.offered.len() + self.direct.len() + self.periodic.len()
    }

    /// Whether it holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);
    const GP: u16 = 52190;

    fn at(now: Instant, unix_s: i64) -> At {
        At {
            now,
            unix_ms: unix_s * 1000,
        }
    }

    fn key(b: u8) -> PublicKey {
        PublicKey([b; 32])
    }

    fn settings() -> Settings {
        Settings {
            own: key(1),
            gossip_port: GP,
            ipv6: true,
        }
    }

    /// A public explicit introducer with key `b` at 203.0.113.b, connected, control learned.
    fn introducer(b: u8) -> PeerView {
        PeerView {
            key: key(b),
            endpoint: Some(format!("203.0.113.{b}:51820").parse().unwrap()),
            introducer: true,
            via_dht: true,
            via_rendezvous: false,
            seen_ago: SEC,
            learned_control: Some(format!("203.0.113.{b}:{GP}").parse().unwrap()),
            handshake_ago: Some(10 * SEC),
        }
    }

    /// A NATed target with key `b`, endpoint at 198.51.100.b, no handshake.
    fn target(b: u8) -> PeerView {
        PeerView {
            key: key(b),
            endpoint: Some(format!("198.51.100.{b}:51820").parse().unwrap()),
            introducer: false,
            via_dht: true,
            via_rendezvous: false,
            seen_ago: SEC,
            learned_control: None,
            handshake_ago: None,
        }
    }

    fn keys(list: &[Introducer]) -> Vec<u8> {
        list.iter().map(|i| i.key.0[0]).collect()
    }

    type Change = fn(&mut PeerView);

    #[test]
    fn introducer_eligibility_table() {
        #[rustfmt::skip]
        let rows: [(&str, Change, bool); 14] = [
            ("explicit, public", |_| {}, true),
            ("not via an exchange method", |p| p.via_dht = false, false),
            ("no endpoint", |p| p.endpoint = None, false),
            ("private endpoint", |p| p.endpoint = Some("192.168.101.3:51820".parse().unwrap()), false),
            ("private learned control", |p| p.learned_control = Some("10.0.0.3:1".parse().unwrap()), false),
            ("explicit without learned control: endpoint host + gossip port", |p| p.learned_control = None, true),
            ("explicit, never handshaked", |p| p.handshake_ago = None, true),
            ("auto: seen, learned control, tunnel works", |p| p.introducer = false, true),
            ("auto without handshake", |p| { p.introducer = false; p.handshake_ago = None }, false),
            ("auto with stale handshake", |p| { p.introducer = false; p.handshake_ago = Some(121 * SEC) }, false),
            ("auto without learned control", |p| { p.introducer = false; p.learned_control = None }, false),
            ("auto seen 2 min ago", |p| { p.introducer = false; p.seen_ago = 120 * SEC }, false),
            ("the target itself", |p| p.key = key(9), false),
            ("ourselves", |p| p.key = key(1), false),
        ];
        for (case, change, want) in rows {
            let mut p = introducer(3);
            change(&mut p);
            let got = select_introducers(&key(9), &[p], 0, &settings());
            assert_eq!(!got.is_empty(), want, "{case}");
        }
        // Without IPv6, an IPv6 introducer is not usable.
        let mut p = introducer(3);
        p.endpoint = Some("[2001:db8::3]:51820".parse().unwrap());
        p.learned_control = Some(format!("[2001:db8::3]:{GP}").parse().unwrap());
        let no_v6 = Settings {
            ipv6: false,
            ..settings()
        };
        assert!(select_introducers(&key(9), std::slice::from_ref(&p), 0, &no_v6).is_empty());
        assert_eq!(select_introducers(&key(9), &[p], 0, &settings()).len(), 1);
    }

    #[test]
    fn selection_orders_explicit_first_and_rotates_by_seed() {
        // Keys 2..=6; 5 and 6 are auto-eligible, 2..=4 explicit.
        let mut peers: Vec<PeerView> = (2..=6).map(introducer).collect();
        peers[3].introducer = false;
        peers[4].introducer = false;
        peers.reverse();
        let s = settings();
        // (seed, chosen keys): order is [2, 3, 4, 5, 6], start = seed mod 5, three wrapping.
        #[rustfmt::skip]
        let rows: [(u64, &[u8]); 5] = [
            (0, &[2, 3, 4]), (1, &[3, 4, 5]), (3, &[5, 6, 2]), (4, &[6, 2, 3]), (10, &[2, 3, 4]),
        ];
        for (seed, want) in rows {
            assert_eq!(
                keys(&select_introducers(&key(9), &peers, seed, &s)),
                want,
                "seed {seed}"
            );
        }
        // Fewer than three: all of them, rotated.
        assert_eq!(
            keys(&select_introducers(&key(9), &peers[3..], 1, &s)),
            [3, 2]
        );
        // Explicit beats auto even with a larger key.
        let mut two = vec![introducer(2), introducer(7)];
        two[0].introducer = false;
        assert_eq!(keys(&select_introducers(&key(9), &two, 0, &s)), [7, 2]);
    }

    #[test]
    fn decisions_table() {
        let now = Instant::now();
        let s = settings();
        let intro = introducer(3);
        let t0 = 1_800_000_000; // in the slot of seed 0 (pos 0)
        // (case, trigger, change to the target, introducers present, seed, unix s, decision)
        #[rustfmt::skip]
        let rows: [(&str, Trigger, Change, bool, u64, i64, Decision); 13] = [
            ("event, introducer known: offer", Trigger::Event, |_| {}, true, 0, t0,
                Decision::Offer(vec![Introducer { key: key(3), control: format!("203.0.113.3:{GP}").parse().unwrap() }])),
            ("event, no introducer: direct HELLO to endpoint host + gossip port", Trigger::Event, |_| {}, false, 0, t0,
                Decision::Direct(format!("198.51.100.7:{GP}").parse().unwrap())),
            ("event, no introducer, learned control wins", Trigger::Event, |t| t.learned_control = Some("198.51.100.7:40000".parse().unwrap()), false, 0, t0,
                Decision::Direct("198.51.100.7:40000".parse().unwrap())),
            ("event, tunnel works", Trigger::Event, |t| t.handshake_ago = Some(119 * SEC), true, 0, t0, Decision::Skip(Skip::Connected)),
            ("event, stale tunnel: try", Trigger::Event, |t| t.handshake_ago = Some(120 * SEC), false, 0, t0,
                Decision::Direct(format!("198.51.100.7:{GP}").parse().unwrap())),
            ("event, reached by rendezvous recently", Trigger::Event, |t| t.via_rendezvous = true, true, 0, t0, Decision::Skip(Skip::RecentRendezvous)),
            ("event, reached by rendezvous long ago", Trigger::Event, |t| { t.via_rendezvous = true; t.seen_ago = 121 * SEC }, false, 0, t0,
                Decision::Direct(format!("198.51.100.7:{GP}").parse().unwrap())),
            ("event, no endpoint, no introducer", Trigger::Event, |t| t.endpoint = None, false, 0, t0, Decision::Skip(Skip::NoRoute)),
            ("event, no endpoint, introducer: offer anyway", Trigger::Event, |t| t.endpoint = None, true, 0, t0,
                Decision::Offer(vec![Introducer { key: key(3), control: format!("203.0.113.3:{GP}").parse().unwrap() }])),
            ("start needs an endpoint", Trigger::Start, |t| t.endpoint = None, true, 0, t0, Decision::Skip(Skip::NoEndpoint)),
            ("periodic in slot", Trigger::Periodic, |_| {}, false, 0, t0 + 3,
                Decision::Direct(format!("198.51.100.7:{GP}").parse().unwrap())),
            ("periodic outside the slot", Trigger::Periodic, |_| {}, true, 0, t0 + 4, Decision::Skip(Skip::NotDue)),
            ("ourselves", Trigger::Event, |t| t.key = key(1), true, 0, t0, Decision::Skip(Skip::Own)),
        ];
        for (case, trigger, change, with_intro, seed, unix, want) in rows {
            let mut t = target(7);
            change(&mut t);
            let peers = if with_intro {
                vec![intro.clone(), t.clone()]
            } else {
                vec![t.clone()]
            };
            let mut r = Requester::default();
            assert_eq!(
                r.decide(trigger, &t, &peers, seed, &s, at(now, unix)),
                want,
                "{case}"
            );
        }
    }

    #[test]
    fn offers_and_contacts_are_deduplicated_for_20_s_and_periodic_attempts_spaced_10_s() {
        let now = Instant::now();
        let s = settings();
        let (t, other) = (target(7), target(8));
        let peers = vec![introducer(3), t.clone(), other.clone()];
        let mut r = Requester::default();
        let t0 = 1_800_000_000;
        assert!(matches!(
            r.decide(Trigger::Event, &t, &peers, 0, &s, at(now, t0)),
            Decision::Offer(_)
        ));
        assert_eq!(
            r.decide(Trigger::Event, &t, &peers, 0, &s, at(now + 19 * SEC, t0)),
            Decision::Skip(Skip::OfferedRecently)
        );
        // Another target through the same introducer is not held back (Go would).
        assert!(matches!(
            r.decide(Trigger::Event, &other, &peers, 0, &s, at(now, t0)),
            Decision::Offer(_)
        ));
        assert!(matches!(
            r.decide(Trigger::Event, &t, &peers, 0, &s, at(now + 20 * SEC, t0)),
            Decision::Offer(_)
        ));

        let alone = vec![t.clone()];
        let mut r = Requester::default();
        assert!(matches!(
            r.decide(Trigger::Event, &t, &alone, 0, &s, at(now, t0)),
            Decision::Direct(_)
        ));
        assert_eq!(
            r.decide(Trigger::Event, &t, &alone, 0, &s, at(now + 10 * SEC, t0)),
            Decision::Skip(Skip::ContactedRecently)
        );

        // Periodic: once per slot (the next tick inside the same 4 s is not due).
        let mut r = Requester::default();
        assert!(matches!(
            r.decide(Trigger::Periodic, &t, &alone, 0, &s, at(now, t0)),
            Decision::Direct(_)
        ));
        assert_eq!(
            r.decide(Trigger::Periodic, &t, &alone, 0, &s, at(now + SEC, t0 + 1)),
            Decision::Skip(Skip::NotDue)
        );
        // Next cycle: due again (the direct dedup has passed too).
        assert!(matches!(
            r.decide(
                Trigger::Periodic,
                &t,
                &alone,
                0,
                &s,
                at(now + 20 * SEC, t0 + 20),
            ),
            Decision::Direct(_)
        ));
    }

    /// crypto-and-wire §21.1 backoff: new peer allowed; failure → 3 s; second failure longer;
    /// capped at 30 s; success clears.
    #[test]
    fn backoff_table() {
        let now = Instant::now();
        let mut r = Requester::default();
        let k = key(7);
        assert!(!r.backoff_active(&k, now));
        let delays: Vec<u64> = (0..6).map(|_| r.failed(k, now).as_secs()).collect();
        assert_eq!(delays, [3, 6, 12, 24, 30, 30]);
        assert!(r.backoff_active(&k, now + 29 * SEC));
        assert!(!r.backoff_active(&k, now + 30 * SEC));
        let t = target(7);
        let s = settings();
        assert_eq!(
            r.decide(Trigger::Event, &t, &[], 0, &s, at(now + SEC, 0)),
            Decision::Skip(Skip::Backoff)
        );
        r.succeeded(&k);
        assert!(!r.backoff_active(&k, now));
        assert_eq!(r.failed(k, now), BACKOFF_MIN);
    }

    #[test]
    fn pruning_forgets_expired_records() {
        let now = Instant::now();
        let s = settings();
        let mut r = Requester::default();
        for b in 10..60 {
            let t = target(b);
            r.decide(
                Trigger::Event,
                &t,
                &[introducer(3), t.clone()],
                0,
                &s,
                at(now, 0),
            );
            r.failed(t.key, now);
        }
        assert_eq!(r.len(), 100);
        r.prune(now + 19 * SEC);
        assert_eq!(r.len(), 100, "still within the windows");
        r.prune(now + 20 * SEC);
        assert_eq!(r.len(), 50, "offers forgotten, backoffs kept");
        r.prune(now + 33 * SEC);
        assert!(r.is_empty(), "backoffs forgotten 30 s after they ended");
    }
}
