//! Pair seed, pair id and time slot (crypto-and-wire §11.1–11.2): values both ends of a pair
//! compute alike from the two public keys, so they agree without talking. Pure.

/// One instant on both clocks: the monotonic one for timers, the wall clock (Unix milliseconds)
/// for what both ends of a pair must agree on (slots, start times).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct At {
    /// Monotonic time.
    pub now: std::time::Instant,
    /// Wall-clock time, Unix milliseconds.
    pub unix_ms: i64,
}

impl At {
    /// The wall-clock time in Unix seconds.
    pub fn unix_s(&self) -> i64 {
        self.unix_ms.div_euclid(1000)
    }
}

/// FNV-1a 64 offset basis.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64 prime.
const FNV_PRIME: u64 = 0x0100_0000_01b3;
/// Length of the rendezvous slot cycle, seconds.
pub const SLOT_WINDOW_SECS: i64 = 20;
/// How long a pair's slot lasts within each cycle, seconds.
pub const SLOT_PHASE_SECS: i64 = 4;

/// FNV-1a 64 over `bytes`.
fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(FNV_OFFSET, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// Go's `pairSeed(a, b)`: FNV-1a 64 over `smaller || 0x00 || larger`, the two public key texts
/// (base64) ordered bytewise. Symmetric.
pub fn pair_seed(a: &str, b: &str) -> u64 {
    let (small, large) = if a.as_bytes() <= b.as_bytes() {
        (a, b)
    } else {
        (b, a)
    };
    fnv1a(small.bytes().chain(std::iter::once(0)).chain(large.bytes()))
}

/// Go's `pairID(a, b)`: the pair seed as 16 lowercase hex digits. Symmetric.
pub fn pair_id(a: &str, b: &str) -> String {
    format!("{:016x}", pair_seed(a, b))
}

/// Go's `shouldAttemptRendezvous`: whether `unix_s` lies in the pair's slot, the first
/// [`SLOT_PHASE_SECS`] of every [`SLOT_WINDOW_SECS`] cycle shifted by `seed mod 20`. Both ends of a
/// pair are in their slot at the same moments (given synchronised clocks).
pub fn in_slot(seed: u64, unix_s: i64) -> bool {
    // `seed % 20` is below 20: the conversion cannot fail.
    let offset = i64::try_from(seed % SLOT_WINDOW_SECS.unsigned_abs()).unwrap_or(0);
    (unix_s.rem_euclid(SLOT_WINDOW_SECS) - offset).rem_euclid(SLOT_WINDOW_SECS) < SLOT_PHASE_SECS
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    const Q: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
    const R: &str = "//////////////////////////////////////////8=";

    #[test]
    fn fnv_sanity() {
        assert_eq!(fnv1a([]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(*b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    /// crypto-and-wire §21.2, pair seed / pair id table.
    #[test]
    fn pair_vectors() {
        #[rustfmt::skip]
        let rows: [(&str, &str, u64, &str, u64, u64, u64); 4] = [
            (P, Q, 8284846800445118459, "72f9b0451f1017fb", 19, 3, 2),
            (P, R, 10756265408554102940, "9545ee6662b0709c", 0, 4, 2),
            ("a", "b", 16560467112517592754, "e5d29919042666b2", 14, 2, 0),
            ("local", "peer1", 15243574628861756439, "d38c0e5c6c764417", 19, 7, 0),
        ];
        for (a, b, seed, id, m20, m8, m3) in rows {
            assert_eq!(pair_seed(a, b), seed, "{a} {b}");
            assert_eq!(pair_seed(b, a), seed, "symmetric {a} {b}");
            assert_eq!(pair_id(a, b), id);
            assert_eq!(pair_id(b, a), id);
            assert_eq!((seed % 20, seed % 8, seed % 3), (m20, m8, m3));
        }
        // Zero padding to 16 digits.
        let id = pair_id("x", "y");
        assert_eq!(id.len(), 16);
        assert!(
            id.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }

    #[test]
    fn slot_table() {
        // (case, seed, unix seconds, in slot)
        #[rustfmt::skip]
        let rows = [
            ("offset 0, first second", 0, 1_800_000_000, true),  // 1_800_000_000 % 20 == 0
            ("offset 0, last second of the phase", 0, 1_800_000_003, true),
            ("offset 0, just after the phase", 0, 1_800_000_004, false),
            ("offset 0, end of the cycle", 0, 1_800_000_019, false),
            ("offset 19 wraps: pos 19", 19, 1_800_000_019, true),
            ("offset 19 wraps: pos 0..2", 19, 1_800_000_002, true),
            ("offset 19 wraps: pos 3", 19, 1_800_000_003, false),
            ("offset 14 (pair a,b): pos 14", 16560467112517592754, 1_800_000_014, true),
            ("offset 14 (pair a,b): pos 18", 16560467112517592754, 1_800_000_018, false),
            ("offset 14 (pair a,b): pos 13", 16560467112517592754, 1_800_000_013, false),
            ("negative time is still periodic", 0, -20, true),
        ];
        for (case, seed, t, want) in rows {
            assert_eq!(in_slot(seed, t), want, "{case}");
        }
        // Every seed is in its slot exactly 4 of every 20 seconds.
        for seed in [0u64, 7, 19, 8284846800445118459] {
            let n = (0..20).filter(|s| in_slot(seed, 1_800_000_000 + s)).count();
            assert_eq!(n, 4, "seed {seed}");
        }
    }
}
