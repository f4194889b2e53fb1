//! Dandelion++ stem/fluff rules (daemon-behaviour §12, crypto-and-wire §18). Pure: the random
//! draw is a parameter.
//!
//! Go's `HandleAnnounce`: the hop count goes up by one, capped at [`MAX_STEM_HOPS`]; the message
//! fluffs (spreads to everyone) when the count reaches the cap, or with probability
//! [`FLUFF_PERCENT`] %, or when there is no relay; otherwise it goes on to relay
//! `relays[hop mod len]`. Ours on top: a stem is never handed back to its origin or to the peer
//! it came from while another relay can take it (with none, it fluffs), and a nonce seen before
//! is dropped ([`SeenNonces`]) so no stem loops.

use std::collections::{HashSet, VecDeque};

use crate::keys::PublicKey;
use crate::wire::DANDELION_NONCE_LEN;

/// Stem hops after which a message always fluffs (Go `MaxStemHops`).
pub const MAX_STEM_HOPS: u8 = 4;
/// Chance in percent that a hop fluffs early (Go `FluffProbability` 0.10).
pub const FLUFF_PERCENT: u8 = 10;
/// Nonces remembered to drop repeats: far more than the stems a mesh of 1000 nodes sends
/// within the envelope's 10-minute freshness window at one per node per 10 s would pass through
/// one node in practice, and 16 bytes each.
pub const SEEN_NONCES: usize = 8192;

/// The hop count after this node handled a message that arrived with `hop_count`.
pub fn next_hop_count(hop_count: u8) -> u8 {
    if hop_count >= MAX_STEM_HOPS {
        MAX_STEM_HOPS
    } else {
        hop_count + 1
    }
}

/// Whether a message at `hop_count` (after [`next_hop_count`]) fluffs. `draw` is a uniform
/// number in `0..100`; `None` (no randomness available) fluffs, as Go does on an RNG error.
pub fn should_fluff(hop_count: u8, draw: Option<u8>) -> bool {
    hop_count >= MAX_STEM_HOPS || draw.is_none_or(|d| d < FLUFF_PERCENT)
}

/// What to do with a stem message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<R> {
    /// Spread it to everyone.
    Fluff,
    /// Pass it on to this relay.
    Stem(R),
}

/// Where a message that arrived with `hop_count` goes: see the module documentation. `relays`
/// are this node's usable relays in stem order with their keys, `origin` the message's origin,
/// `sender` the peer it came from, if known.
pub fn route<R: Copy>(
    hop_count: u8,
    draw: Option<u8>,
    relays: &[(PublicKey, R)],
    origin: &PublicKey,
    sender: Option<&PublicKey>,
) -> (u8, Route<R>) {
    let hop = next_hop_count(hop_count);
    if relays.is_empty() || should_fluff(hop, draw) {
        return (hop, Route::Fluff);
    }
    let start = usize::from(hop) % relays.len();
    let next = (0..relays.len())
        .map(|k| &relays[(start + k) % relays.len()])
        .find(|(key, _)| key != origin && Some(key) != sender);
    match next {
        Some((_, r)) => (hop, Route::Stem(*r)),
        None => (hop, Route::Fluff),
    }
}

/// Bounded memory of the nonces already handled: the oldest is forgotten when full.
#[derive(Debug, Default)]
pub struct SeenNonces {
    set: HashSet<[u8; DANDELION_NONCE_LEN]>,
    order: VecDeque<[u8; DANDELION_NONCE_LEN]>,
}

impl SeenNonces {
    /// Records `nonce`; true if it was not seen before (handle the message), false for a repeat.
    pub fn first_time(&mut self, nonce: [u8; DANDELION_NONCE_LEN]) -> bool {
        if !self.set.insert(nonce) {
            return false;
        }
        self.order.push_back(nonce);
        if self.order.len() > SEEN_NONCES
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }

    /// How many nonces are remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> PublicKey {
        PublicKey([b; 32])
    }

    #[test]
    fn hop_counts_and_fluff_decisions_follow_go() {
        // (hop before, draw, hop after, fluff)
        #[rustfmt::skip]
        let rows = [
            (0, Some(50), 1, false),
            (0, Some(10), 1, false),
            (0, Some(9), 1, true),
            (0, Some(0), 1, true),
            (0, None, 1, true),
            (2, Some(99), 3, false),
            (3, Some(99), 4, true),
            (4, Some(99), 4, true),
            (200, Some(99), 4, true),
            (255, Some(99), 4, true),
        ];
        for (before, draw, after, fluff) in rows {
            let hop = next_hop_count(before);
            assert_eq!(hop, after, "hop {before}");
            assert_eq!(should_fluff(hop, draw), fluff, "hop {before} draw {draw:?}");
        }
    }

    /// (case, hop before, draw, relays, origin, sender, expected)
    type RouteRow<'a> = (
        &'a str,
        u8,
        Option<u8>,
        &'a [(PublicKey, char)],
        PublicKey,
        Option<PublicKey>,
        (u8, Route<char>),
    );

    #[test]
    fn route_table() {
        let (a, b, c) = (key(0xa), key(0xb), key(0xc));
        let relays = [(a, 'a'), (b, 'b')];
        let only_c = [(c, 'c')];
        let origin = key(0x0);
        #[rustfmt::skip]
        let rows: Vec<RouteRow<'_>> = vec![
            ("hop 1 goes to relay 1", 0, Some(50), &relays, origin, None, (1, Route::Stem('b'))),
            ("hop 2 goes to relay 0", 1, Some(50), &relays, origin, None, (2, Route::Stem('a'))),
            ("hop 3 goes to relay 1", 2, Some(50), &relays, origin, None, (3, Route::Stem('b'))),
            ("hop 4 fluffs", 3, Some(99), &relays, origin, None, (4, Route::Fluff)),
            ("early fluff", 0, Some(3), &relays, origin, None, (1, Route::Fluff)),
            ("no relays", 0, Some(50), &[], origin, None, (1, Route::Fluff)),
            ("not back to the sender", 0, Some(50), &relays, origin, Some(b), (1, Route::Stem('a'))),
            ("not back to the origin", 1, Some(50), &relays, a, None, (2, Route::Stem('b'))),
            ("only origin and sender: fluff", 0, Some(50), &relays, a, Some(b), (1, Route::Fluff)),
            ("one relay that is the sender", 0, Some(50), &only_c, origin, Some(c), (1, Route::Fluff)),
            ("one relay", 2, Some(50), &only_c, origin, Some(b), (3, Route::Stem('c'))),
        ];
        for (case, hop, draw, relays, origin, sender, want) in rows {
            assert_eq!(
                route(hop, draw, relays, &origin, sender.as_ref()),
                want,
                "{case}"
            );
        }
    }

    #[test]
    fn seen_nonces_drop_repeats_and_stay_bounded() {
        let mut seen = SeenNonces::default();
        assert!(seen.first_time([1; 16]));
        assert!(!seen.first_time([1; 16]));
        assert!(seen.first_time([2; 16]));
        for i in 0..(SEEN_NONCES as u32 + 100) {
            let mut n = [0u8; 16];
            n[..4].copy_from_slice(&i.to_be_bytes());
            n[4] = 0xff;
            seen.first_time(n);
        }
        assert_eq!(seen.len(), SEEN_NONCES);
        assert_eq!(seen.set.len(), SEEN_NONCES);
        // The oldest were forgotten, the newest are remembered.
        assert!(seen.first_time([1; 16]));
        let mut newest = [0u8; 16];
        newest[..4].copy_from_slice(&(SEEN_NONCES as u32 + 99).to_be_bytes());
        newest[4] = 0xff;
        assert!(!seen.first_time(newest));
    }
}
