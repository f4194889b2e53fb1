//! The introducer side (crypto-and-wire §11.3) as a state machine: an offer comes in, with the
//! time; out come nothing, or the two `RENDEZVOUS_START`s that make both sides punch at the same
//! moment. Pure.
//!
//! Sessions are keyed by pair id and hold each side's candidates and the address its offer came
//! from. When one side's offer is missing but the introducer knows that peer (stored, with an
//! endpoint), its offer is synthesised from what the introducer knows, so one requester is
//! enough. A START for a pair is sent at most every 8 s; sessions live 20 s. The table is
//! bounded: with [`MAX_SESSIONS`] open, a new pair's offer replaces the oldest waiting session
//! (a flood of offers can delay pairs, never lock them out: a pair whose target the introducer
//! knows completes in one offer).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::candidates::{Base, normalise, prepare};
use super::pair::{At, pair_id};
use crate::keys::PublicKey;
use crate::wire::{PROTOCOL, RendezvousOffer, RendezvousStart};

/// How long a session waits for its second side.
pub const SESSION_TTL: Duration = Duration::from_secs(20);
/// Least time between two STARTs for one pair.
pub const START_THROTTLE: Duration = Duration::from_secs(8);
/// How long a START record is kept (twice the throttle, as Go).
pub const START_RECORD_TTL: Duration = Duration::from_secs(16);
/// How far ahead the punch is scheduled: long enough for both STARTs to arrive.
pub const START_LEAD: Duration = Duration::from_millis(1800);
/// Most open sessions (and START records). Offers need the mesh key, and each source sends at
/// most 20 in a burst, but the table must stay bounded whatever members send.
pub const MAX_SESSIONS: usize = 1024;

/// Why an offer is dropped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OfferRejected {
    /// Only nodes started with `--introducer` coordinate (Go: auto-eligible ones drop offers).
    #[error("this node is not an introducer")]
    NotIntroducer,
    /// `from_pubkey` or `target_pubkey` is empty or not a key.
    #[error("offer without a valid from_pubkey and target_pubkey")]
    BadKeys,
    /// It names this node as one of the sides.
    #[error("offer names this node as a side")]
    OwnKey,
    /// Both sides are the same key.
    #[error("offer pairs a key with itself")]
    SameKeys,
    /// `pair_id` is set and is not the pair's id.
    #[error("offer pair_id {0:?} does not match its keys")]
    PairId(String),
}

/// A checked offer: the two sides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidOffer {
    /// The requester.
    pub from: PublicKey,
    /// The peer it wants.
    pub target: PublicKey,
    /// The pair's id.
    pub pair_id: String,
    /// The requester's own candidates (normalised).
    pub candidates: Vec<Base>,
}

/// Go's checks on a received offer (the punching switch is checked by the caller: with
/// `--no-punching` the layer does not run).
pub fn check_offer(
    offer: &RendezvousOffer,
    own: &PublicKey,
    introducer: bool,
) -> Result<ValidOffer, OfferRejected> {
    if !introducer {
        return Err(OfferRejected::NotIntroducer);
    }
    let (Ok(from), Ok(target)) = (
        offer.from_pubkey.parse::<PublicKey>(),
        offer.target_pubkey.parse::<PublicKey>(),
    ) else {
        return Err(OfferRejected::BadKeys);
    };
    if from == *own || target == *own {
        return Err(OfferRejected::OwnKey);
    }
    if from == target {
        return Err(OfferRejected::SameKeys);
    }
    let id = pair_id(&offer.from_pubkey, &offer.target_pubkey);
    if !offer.pair_id.is_empty() && offer.pair_id != id {
        return Err(OfferRejected::PairId(offer.pair_id.clone()));
    }
    Ok(ValidOffer {
        from,
        target,
        pair_id: id,
        candidates: normalise(&offer.candidates),
    })
}

/// What the introducer knows of the target, to stand in for its missing offer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownTarget {
    /// Where to send its START: its learned control endpoint, else `<endpoint host>:<gossip
    /// port>`.
    pub control: SocketAddr,
    /// Candidate bases: the control endpoint and `<endpoint host>:<gossip port>` (Go uses only
    /// the latter; a learned mapping is the better guess behind a NAT that changed the port).
    pub bases: Vec<Base>,
}

/// One side of a session.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Side {
    candidates: Vec<SocketAddr>,
    endpoint: SocketAddr,
}

#[derive(Clone, Debug)]
struct Session {
    created: Instant,
    sides: BTreeMap<PublicKey, Side>,
}

/// A START to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartOut {
    /// Where: the side's control endpoint.
    pub to: SocketAddr,
    /// The payload.
    pub start: RendezvousStart,
}

/// What an offer led to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OfferOutcome {
    /// Recorded; the other side is still missing.
    Waiting,
    /// Both sides are known but a START for the pair went out less than 8 s ago.
    Throttled,
    /// Send these two STARTs (to the requester first); the session is closed.
    Start(Box<[StartOut; 2]>),
}

/// The introducer's sessions and START records.
#[derive(Debug, Default)]
pub struct Sessions {
    sessions: HashMap<String, Session>,
    starts: HashMap<String, Instant>,
}

impl Sessions {
    /// Go's `handleRendezvousOffer` after the checks: records `offer` (received from `observed`),
    /// synthesises the target's side from `target` when it has not offered, and decides. `own`
    /// is our key (the STARTs name it), `ipv6` whether IPv6 candidates are kept; `at.now`
    /// drives the timers, `at.unix_ms` is the wall clock for `start_at_unix_ms`.
    pub fn on_offer(
        &mut self,
        offer: ValidOffer,
        observed: SocketAddr,
        target: Option<KnownTarget>,
        own: &PublicKey,
        ipv6: bool,
        at: At,
    ) -> Result<OfferOutcome, OfferRejected> {
        let (now, unix_ms) = (at.now, at.unix_ms);
        self.prune(now);
        if !self.sessions.contains_key(&offer.pair_id) && self.sessions.len() >= MAX_SESSIONS {
            let oldest = self
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(id, _)| id.clone());
            if let Some(id) = oldest {
                self.sessions.remove(&id);
            }
        }
        let mut bases = offer.candidates.clone();
        let seen = Base::from(observed);
        if !bases.contains(&seen) {
            bases.push(seen);
        }
        let session = self
            .sessions
            .entry(offer.pair_id.clone())
            .or_insert_with(|| Session {
                created: now,
                sides: BTreeMap::new(),
            });
        session.sides.insert(
            offer.from,
            Side {
                candidates: prepare(&bases, ipv6),
                endpoint: observed,
            },
        );
        if !session.sides.contains_key(&offer.target)
            && let Some(known) = target
        {
            session.sides.insert(
                offer.target,
                Side {
                    candidates: prepare(&known.bases, ipv6),
                    endpoint: known.control,
                },
            );
        }
        let (Some(a), Some(b)) = (
            session.sides.get(&offer.from).cloned(),
            session.sides.get(&offer.target).cloned(),
        ) else {
            return Ok(OfferOutcome::Waiting);
        };
        if self
            .starts
            .get(&offer.pair_id)
            .is_some_and(|at| now.saturating_duration_since(*at) < START_THROTTLE)
        {
            return Ok(OfferOutcome::Throttled);
        }
        self.sessions.remove(&offer.pair_id);
        if self.starts.len() >= MAX_SESSIONS {
            // Only reachable with more than MAX_SESSIONS pairs started within 16 s.
            self.starts.clear();
        }
        self.starts.insert(offer.pair_id.clone(), now);
        let start_at = unix_ms.saturating_add(START_LEAD.as_millis() as i64);
        let timestamp = unix_ms.div_euclid(1000);
        let start = |peer: &PublicKey, side: &Side| RendezvousStart {
            protocol: PROTOCOL.to_owned(),
            timestamp,
            pair_id: offer.pair_id.clone(),
            peer_pubkey: peer.to_string(),
            peer_candidates: side.candidates.iter().map(ToString::to_string).collect(),
            start_at_unix_ms: start_at,
            introducer_key: own.to_string(),
        };
        Ok(OfferOutcome::Start(Box::new([
            StartOut {
                to: a.endpoint,
                start: start(&offer.target, &b),
            },
            StartOut {
                to: b.endpoint,
                start: start(&offer.from, &a),
            },
        ])))
    }

    /// Drops sessions older than [`SESSION_TTL`] and START records older than
    /// [`START_RECORD_TTL`].
    pub fn prune(&mut self, now: Instant) {
        self.sessions
            .retain(|_, s| now.saturating_duration_since(s.created) < SESSION_TTL);
        self.starts
            .retain(|_, at| now.saturating_duration_since(*at) < START_RECORD_TTL);
    }

    /// Open sessions.
    pub fn open(&self) -> usize {
        self.sessions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const SEC: Duration = Duration::from_secs(1);
    const UNIX_MS: i64 = 1_800_000_000_000;

    fn at(now: Instant, unix_ms: i64) -> At {
        At { now, unix_ms }
    }

    fn key(b: u8) -> PublicKey {
        PublicKey([b; 32])
    }

    fn offer(from: u8, target: u8) -> RendezvousOffer {
        let (f, t) = (key(from).to_string(), key(target).to_string());
        RendezvousOffer {
            protocol: PROTOCOL.into(),
            timestamp: 1_800_000_000,
            pair_id: pair_id(&f, &t),
            from_pubkey: f,
            target_pubkey: t,
            ..RendezvousOffer::default()
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn expanded(base: &str) -> Vec<String> {
        prepare(&[Base::from(addr(base))], true)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    type Change = fn(&mut RendezvousOffer);

    #[test]
    fn offer_checks_table() {
        let own = key(1);
        #[rustfmt::skip]
        let rows: [(&str, bool, Change, Result<(), OfferRejected>); 9] = [
            ("valid", true, |_| {}, Ok(())),
            ("valid without pair id", true, |o| o.pair_id.clear(), Ok(())),
            ("not an introducer", false, |_| {}, Err(OfferRejected::NotIntroducer)),
            ("empty from", true, |o| o.from_pubkey.clear(), Err(OfferRejected::BadKeys)),
            ("garbage target", true, |o| o.target_pubkey = "x".into(), Err(OfferRejected::BadKeys)),
            ("from is us", true, |o| { o.from_pubkey = key(1).to_string(); o.pair_id.clear() }, Err(OfferRejected::OwnKey)),
            ("target is us", true, |o| { o.target_pubkey = key(1).to_string(); o.pair_id.clear() }, Err(OfferRejected::OwnKey)),
            ("same keys", true, |o| { o.target_pubkey = o.from_pubkey.clone(); o.pair_id.clear() }, Err(OfferRejected::SameKeys)),
            ("wrong pair id", true, |o| o.pair_id = "0000000000000000".into(), Err(OfferRejected::PairId("0000000000000000".into()))),
        ];
        for (case, introducer, change, want) in rows {
            let mut o = offer(2, 3);
            change(&mut o);
            assert_eq!(
                check_offer(&o, &own, introducer).map(|_| ()),
                want,
                "{case}"
            );
        }
        let mut o = offer(2, 3);
        o.candidates = vec!["203.0.113.9:1".into(), "0.0.0.0:2".into(), "bad".into()];
        let v = check_offer(&o, &own, true).unwrap();
        assert_eq!(v.candidates, [Base::from(addr("203.0.113.9:1"))]);
        assert_eq!(v.pair_id, pair_id(&key(2).to_string(), &key(3).to_string()));
    }

    fn valid(from: u8, target: u8) -> ValidOffer {
        check_offer(&offer(from, target), &key(1), true).unwrap()
    }

    #[test]
    fn two_offers_make_two_starts() {
        let now = Instant::now();
        let mut s = Sessions::default();
        let (a_seen, b_seen) = (addr("198.51.100.2:52190"), addr("198.51.100.3:52190"));
        let out = s.on_offer(valid(2, 3), a_seen, None, &key(1), true, at(now, UNIX_MS));
        assert_eq!(out, Ok(OfferOutcome::Waiting));
        assert_eq!(s.open(), 1);
        let out = s
            .on_offer(
                valid(3, 2),
                b_seen,
                None,
                &key(1),
                true,
                at(now + 500 * MS, UNIX_MS + 500),
            )
            .unwrap();
        let OfferOutcome::Start(starts) = out else {
            panic!("expected STARTs, got {out:?}");
        };
        let [to_b, to_a] = *starts;
        let id = pair_id(&key(2).to_string(), &key(3).to_string());
        // The requester of the completing offer (b) first.
        assert_eq!(to_b.to, b_seen);
        assert_eq!(to_b.start.peer_pubkey, key(2).to_string());
        assert_eq!(to_b.start.peer_candidates, expanded("198.51.100.2:52190"));
        assert_eq!(to_a.to, a_seen);
        assert_eq!(to_a.start.peer_pubkey, key(3).to_string());
        assert_eq!(to_a.start.peer_candidates, expanded("198.51.100.3:52190"));
        for out in [&to_a, &to_b] {
            assert_eq!(out.start.pair_id, id);
            assert_eq!(out.start.start_at_unix_ms, UNIX_MS + 500 + 1800);
            assert_eq!(out.start.timestamp, 1_800_000_000);
            assert_eq!(out.start.introducer_key, key(1).to_string());
            assert_eq!(out.start.protocol, PROTOCOL);
        }
        assert_eq!(s.open(), 0, "the session closes with the STARTs");
    }

    #[test]
    fn a_known_target_is_synthesised_and_candidates_come_first() {
        let now = Instant::now();
        let mut s = Sessions::default();
        let mut o = offer(2, 3);
        o.candidates = vec!["[2001:db8::2]:52190".into(), "198.51.100.2:52190".into()];
        let known = KnownTarget {
            control: addr("198.51.100.3:40000"),
            bases: vec![
                Base::from(addr("198.51.100.3:40000")),
                Base::from(addr("198.51.100.3:52190")),
            ],
        };
        let out = s
            .on_offer(
                check_offer(&o, &key(1), true).unwrap(),
                addr("198.51.100.2:52190"),
                Some(known),
                &key(1),
                false,
                at(now, UNIX_MS),
            )
            .unwrap();
        let OfferOutcome::Start(starts) = out else {
            panic!("expected STARTs, got {out:?}");
        };
        let [to_a, to_b] = *starts;
        assert_eq!(to_a.to, addr("198.51.100.2:52190"));
        let mut want_b = expanded("198.51.100.3:40000");
        want_b.extend(expanded("198.51.100.3:52190"));
        assert_eq!(to_a.start.peer_candidates, want_b);
        assert_eq!(to_b.to, addr("198.51.100.3:40000"));
        // The offer's own candidates first; the observed address already among them; no IPv6.
        assert_eq!(to_b.start.peer_candidates, expanded("198.51.100.2:52190"));
    }

    #[test]
    fn starts_are_throttled_for_8_s_and_sessions_expire_after_20_s() {
        let now = Instant::now();
        let known = || {
            Some(KnownTarget {
                control: addr("198.51.100.3:52190"),
                bases: vec![Base::from(addr("198.51.100.3:52190"))],
            })
        };
        let a_seen = addr("198.51.100.2:52190");
        let mut s = Sessions::default();
        let offer_at = |s: &mut Sessions, t: Duration| {
            s.on_offer(
                valid(2, 3),
                a_seen,
                known(),
                &key(1),
                true,
                at(now + t, UNIX_MS),
            )
            .unwrap()
        };
        assert!(matches!(
            offer_at(&mut s, Duration::ZERO),
            OfferOutcome::Start(_)
        ));
        assert_eq!(offer_at(&mut s, 7 * SEC), OfferOutcome::Throttled);
        assert!(matches!(offer_at(&mut s, 8 * SEC), OfferOutcome::Start(_)));

        // A lone offer waits 20 s, then is forgotten: the other side's offer arriving later
        // starts a new session.
        let mut s = Sessions::default();
        let b_seen = addr("198.51.100.3:52190");
        s.on_offer(valid(2, 3), a_seen, None, &key(1), true, at(now, UNIX_MS))
            .unwrap();
        assert!(matches!(
            s.on_offer(
                valid(3, 2),
                b_seen,
                None,
                &key(1),
                true,
                at(now + 19 * SEC, UNIX_MS),
            )
            .unwrap(),
            OfferOutcome::Start(_)
        ));
        s.on_offer(valid(2, 3), a_seen, None, &key(1), true, at(now, UNIX_MS))
            .unwrap();
        s.prune(now + 20 * SEC);
        assert_eq!(s.open(), 0);
        assert_eq!(
            s.on_offer(
                valid(3, 2),
                b_seen,
                None,
                &key(1),
                true,
                at(now + 40 * SEC, UNIX_MS),
            ),
            Ok(OfferOutcome::Waiting)
        );
    }

    #[test]
    fn the_table_is_bounded_and_a_flood_never_locks_a_pair_out() {
        let now = Instant::now();
        let mut s = Sessions::default();
        let seen = addr("198.51.100.2:52190");
        let flood = |i: usize| {
            let mut from = [0u8; 32];
            from[..8].copy_from_slice(&(i as u64 + 10).to_be_bytes());
            ValidOffer {
                from: PublicKey(from),
                target: key(3),
                pair_id: format!("{i:016x}"),
                candidates: Vec::new(),
            }
        };
        for i in 0..(MAX_SESSIONS + 10) {
            // One millisecond apart, so "oldest" is well defined.
            let t = at(now + i as u32 * MS, UNIX_MS);
            let out = s.on_offer(flood(i), seen, None, &key(1), true, t);
            assert_eq!(out, Ok(OfferOutcome::Waiting));
            assert!(s.open() <= MAX_SESSIONS);
        }
        assert_eq!(s.open(), MAX_SESSIONS);
        assert!(
            !s.sessions.contains_key(&format!("{:016x}", 9)),
            "the oldest went"
        );
        assert!(s.sessions.contains_key(&format!("{:016x}", 10)));
        // A genuine pair still gets through while the table is full.
        let (a, b) = (addr("198.51.100.4:52190"), addr("198.51.100.5:52190"));
        let t = at(now + 2 * SEC, UNIX_MS);
        assert_eq!(
            s.on_offer(valid(4, 5), a, None, &key(1), true, t),
            Ok(OfferOutcome::Waiting)
        );
        assert!(matches!(
            s.on_offer(valid(5, 4), b, None, &key(1), true, t),
            Ok(OfferOutcome::Start(_))
        ));
        // Expired sessions go.
        s.prune(now + SESSION_TTL + 2 * SEC);
        assert_eq!(s.open(), 0);
    }
}
