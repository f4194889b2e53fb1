//! Privacy epochs (daemon-behaviour §12, crypto-and-wire §18): which peers relay this node's
//! stem messages, and when that choice changes. Pure: time and candidates are parameters.
//!
//! - An epoch has an id (the first is 1: Go rotates from 0 to 1 at start), its relay peers and
//!   its start. It lasts [`EPOCH_DURATION`].
//! - Relays: the candidates sorted by public key, shuffled by a generator seeded with the first 8
//!   bytes of `HMAC-SHA256(EpochSeed, BE64(id))`, the first [`RELAYS_PER_EPOCH`] of them. Go
//!   shuffles with its legacy `math/rand`; the choice is local, so ours uses [`SplitMix64`]
//!   (super::shuffle::SplitMix64) instead, and needs no compatibility.
//! - Rotation ([`rotation_due`]): at start, when the epoch is over, and (ours) early when none of
//!   its relays is usable any more, or after [`MIN_EPOCH`] when it has fewer relays than the
//!   candidates now allow. Go chooses once per 10 minutes, so a node that starts alone stays
//!   without relays (and announces without a stem) for 10 minutes, and a relay that goes away
//!   swallows every stem until the next rotation.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use hkdf::hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::shuffle::shuffle;
use crate::keys::PublicKey;

/// How long an epoch keeps its relays (Go `EpochDuration`).
pub const EPOCH_DURATION: Duration = Duration::from_secs(10 * 60);
/// Relays chosen per epoch (Go: 2).
pub const RELAYS_PER_EPOCH: usize = 2;
/// The youngest an epoch may be to rotate early because more relays became possible (an epoch
/// without any usable relay rotates at once): bounds how often a flapping peer set reshuffles.
pub const MIN_EPOCH: Duration = Duration::from_secs(60);

/// A peer that can relay stems: it is active and reachable through the tunnel at its mesh IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Relay {
    /// Its WireGuard public key (the sort key).
    pub key: PublicKey,
    /// Its mesh IPv4, where stems are sent.
    pub mesh_ip: Ipv4Addr,
}

/// One privacy epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Epoch {
    /// 1 for the first epoch after start, then +1 per rotation.
    pub id: u64,
    /// This epoch's relays, in stem order (at most [`RELAYS_PER_EPOCH`]).
    pub relays: Vec<Relay>,
    /// When it started.
    pub started: Instant,
}

impl Epoch {
    /// When it ends by schedule.
    pub fn ends(&self) -> Instant {
        self.started + EPOCH_DURATION
    }

    /// Time left until the scheduled rotation at `now` (zero once over).
    pub fn remaining(&self, now: Instant) -> Duration {
        self.ends().saturating_duration_since(now)
    }
}

/// Why the epoch changes now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationReason {
    /// No epoch yet (the daemon just started).
    Start,
    /// The epoch lasted [`EPOCH_DURATION`].
    Scheduled,
    /// None of the epoch's relays is a candidate any more (or it has none), and candidates exist.
    NoUsableRelay,
    /// The epoch has fewer relays than the candidates allow, and is at least [`MIN_EPOCH`] old.
    MoreRelaysPossible,
}

impl RotationReason {
    /// Words for the log.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Scheduled => "scheduled",
            Self::NoUsableRelay => "no usable relay",
            Self::MoreRelaysPossible => "more relays possible",
        }
    }
}

/// `HMAC-SHA256(epoch_key, BE64(id))`: the seed of epoch `id`'s relay choice.
pub fn epoch_seed(epoch_key: &[u8; 32], id: u64) -> [u8; 32] {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(epoch_key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts a 32-byte key"));
    mac.update(&id.to_be_bytes());
    mac.finalize().into_bytes().into()
}

/// The relays of an epoch with this seed: candidates sorted by key (duplicates removed),
/// shuffled by the seed's first 8 bytes (big-endian), the first [`RELAYS_PER_EPOCH`].
pub fn choose_relays(candidates: &[Relay], seed: &[u8; 32]) -> Vec<Relay> {
    let mut sorted = candidates.to_vec();
    sorted.sort();
    sorted.dedup_by_key(|r| r.key);
    let mut first8 = [0u8; 8];
    first8.copy_from_slice(&seed[..8]);
    shuffle(&mut sorted, u64::from_be_bytes(first8));
    sorted.truncate(RELAYS_PER_EPOCH);
    sorted
}

/// The epoch after `previous` (or the first one), starting at `now`.
pub fn rotate(
    previous: Option<&Epoch>,
    candidates: &[Relay],
    epoch_key: &[u8; 32],
    now: Instant,
) -> Epoch {
    let id = previous.map_or(1, |e| e.id.wrapping_add(1));
    Epoch {
        id,
        relays: choose_relays(candidates, &epoch_seed(epoch_key, id)),
        started: now,
    }
}

/// Whether the epoch must rotate at `now`, given the current relay candidates (see the module
/// documentation); `None` = keep it.
pub fn rotation_due(
    epoch: Option<&Epoch>,
    candidates: &[Relay],
    now: Instant,
) -> Option<RotationReason> {
    let Some(epoch) = epoch else {
        return Some(RotationReason::Start);
    };
    if now.saturating_duration_since(epoch.started) >= EPOCH_DURATION {
        return Some(RotationReason::Scheduled);
    }
    if candidates.is_empty() {
        return None;
    }
    let usable = usable_relays(epoch, candidates).len();
    if usable == 0 {
        return Some(RotationReason::NoUsableRelay);
    }
    let possible = candidates.len().min(RELAYS_PER_EPOCH);
    let old_enough = now.saturating_duration_since(epoch.started) >= MIN_EPOCH;
    (usable < possible && old_enough).then_some(RotationReason::MoreRelaysPossible)
}

/// The epoch's relays that are still candidates, in stem order, with their current mesh IPs.
pub fn usable_relays(epoch: &Epoch, candidates: &[Relay]) -> Vec<Relay> {
    epoch
        .relays
        .iter()
        .filter_map(|r| candidates.iter().find(|c| c.key == r.key).copied())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay(b: u8) -> Relay {
        Relay {
            key: PublicKey([b; 32]),
            mesh_ip: Ipv4Addr::new(10, 1, 0, b),
        }
    }

    #[test]
    fn seed_is_hmac_sha256_of_the_big_endian_id() {
        // Computed independently with Python's hmac module:
        // hmac.new(bytes(range(32)), (1).to_bytes(8, "big"), "sha256").hexdigest()
        let key: [u8; 32] = std::array::from_fn(|i| i as u8);
        let hex: String = epoch_seed(&key, 1)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "c432e059c378eef7fe2f1181a4050836f51e0856fd74937be81784fa0efa7a1c"
        );
        assert_ne!(epoch_seed(&key, 1), epoch_seed(&key, 2));
        assert_ne!(epoch_seed(&key, 1), epoch_seed(&[0; 32], 1));
    }

    #[test]
    fn relay_choice_is_deterministic_and_independent_of_input_order() {
        let key = [7u8; 32];
        let peers: Vec<Relay> = (1..=6).map(relay).collect();
        let mut reversed = peers.clone();
        reversed.reverse();
        for id in 1..20 {
            let seed = epoch_seed(&key, id);
            let a = choose_relays(&peers, &seed);
            assert_eq!(a.len(), RELAYS_PER_EPOCH);
            assert_ne!(a[0], a[1]);
            assert_eq!(a, choose_relays(&reversed, &seed), "epoch {id}");
        }
        // Over the epochs, different peers get chosen.
        let firsts: std::collections::BTreeSet<u8> = (1..40)
            .map(|id| choose_relays(&peers, &epoch_seed(&key, id))[0].key.0[0])
            .collect();
        assert!(firsts.len() >= 4, "{firsts:?}");
    }

    #[test]
    fn short_and_empty_candidate_lists() {
        let seed = epoch_seed(&[1; 32], 1);
        // (case, candidates, relays chosen)
        let rows: [(&str, Vec<Relay>, usize); 4] = [
            ("none", vec![], 0),
            ("one", vec![relay(1)], 1),
            ("two", vec![relay(1), relay(2)], 2),
            ("duplicates count once", vec![relay(1), relay(1)], 1),
        ];
        for (case, candidates, want) in rows {
            assert_eq!(choose_relays(&candidates, &seed).len(), want, "{case}");
        }
    }

    /// (case, epoch and its age, candidates, expected)
    type RotationRow = (
        &'static str,
        Option<(Epoch, Duration)>,
        Vec<Relay>,
        Option<RotationReason>,
    );

    #[test]
    fn rotation_table() {
        let t0 = Instant::now();
        // An epoch started at t0 with these relays, and its age at the row's `now`.
        let epoch = |relays: Vec<Relay>, age: Duration| {
            let e = Epoch {
                id: 3,
                relays,
                started: t0,
            };
            (e, age)
        };
        let s = Duration::from_secs;
        let rows: Vec<RotationRow> = vec![
            ("start", None, vec![], Some(RotationReason::Start)),
            (
                "start with peers",
                None,
                vec![relay(1)],
                Some(RotationReason::Start),
            ),
            (
                "young, complete",
                Some(epoch(vec![relay(1), relay(2)], s(5))),
                vec![relay(1), relay(2), relay(3)],
                None,
            ),
            (
                "over",
                Some(epoch(vec![relay(1), relay(2)], s(600))),
                vec![relay(1), relay(2)],
                Some(RotationReason::Scheduled),
            ),
            (
                "over without candidates",
                Some(epoch(vec![], s(601))),
                vec![],
                Some(RotationReason::Scheduled),
            ),
            (
                "no relays, still no candidates",
                Some(epoch(vec![], s(5))),
                vec![],
                None,
            ),
            (
                "no relays, a candidate appears",
                Some(epoch(vec![], s(1))),
                vec![relay(4)],
                Some(RotationReason::NoUsableRelay),
            ),
            (
                "every relay gone",
                Some(epoch(vec![relay(1), relay(2)], s(1))),
                vec![relay(3)],
                Some(RotationReason::NoUsableRelay),
            ),
            (
                "one relay left, young",
                Some(epoch(vec![relay(1), relay(2)], s(30))),
                vec![relay(2), relay(3)],
                None,
            ),
            (
                "one relay left, old enough",
                Some(epoch(vec![relay(1), relay(2)], s(60))),
                vec![relay(2), relay(3)],
                Some(RotationReason::MoreRelaysPossible),
            ),
            (
                "one relay, one candidate",
                Some(epoch(vec![relay(1)], s(300))),
                vec![relay(1)],
                None,
            ),
            (
                "one relay, a second candidate",
                Some(epoch(vec![relay(1)], s(61))),
                vec![relay(1), relay(2)],
                Some(RotationReason::MoreRelaysPossible),
            ),
        ];
        for (case, current, candidates, want) in rows {
            let (epoch, now) = match current {
                Some((e, age)) => (Some(e), t0 + age),
                None => (None, t0),
            };
            assert_eq!(
                rotation_due(epoch.as_ref(), &candidates, now),
                want,
                "{case}"
            );
        }
    }

    #[test]
    fn rotate_counts_up_and_uses_that_ids_seed() {
        let key = [9u8; 32];
        let peers: Vec<Relay> = (1..=5).map(relay).collect();
        let t0 = Instant::now();
        let first = rotate(None, &peers, &key, t0);
        assert_eq!(first.id, 1);
        assert_eq!(first.relays, choose_relays(&peers, &epoch_seed(&key, 1)));
        let later = t0 + Duration::from_secs(600);
        let second = rotate(Some(&first), &peers, &key, later);
        assert_eq!(second.id, 2);
        assert_eq!(second.started, later);
        assert_eq!(second.relays, choose_relays(&peers, &epoch_seed(&key, 2)));
        assert_eq!(
            first.remaining(t0 + Duration::from_secs(90)),
            Duration::from_secs(510)
        );
        assert_eq!(
            first.remaining(later + Duration::from_secs(1)),
            Duration::ZERO
        );
    }

    #[test]
    fn usable_relays_follow_current_mesh_ips_and_keep_order() {
        let t0 = Instant::now();
        let e = Epoch {
            id: 1,
            relays: vec![relay(2), relay(1)],
            started: t0,
        };
        let mut moved = relay(1);
        moved.mesh_ip = Ipv4Addr::new(10, 1, 9, 9);
        assert_eq!(usable_relays(&e, &[moved, relay(2)]), vec![relay(2), moved]);
        assert_eq!(usable_relays(&e, &[relay(3)]), vec![]);
    }
}
