//! A small deterministic PRNG (SplitMix64) and a Fisher–Yates shuffle over it. Pure.
//!
//! Used where a choice must be reproducible from a seed (the epoch's relays: every run with the
//! same secret, epoch and peers picks the same ones) and where a random choice is made by pure
//! code that takes its randomness as a parameter (the caller draws the seed from the OS).
//! Not for secrets: the output is predictable from the seed.

/// SplitMix64 (Steele, Lea, Flood 2014): 64-bit state, one addition and a mix per output.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound` > 0). The modulo bias is below 2^-50 for the list sizes
    /// used here (at most a few thousand), which does not matter for these choices.
    pub fn below(&mut self, bound: usize) -> usize {
        let bound = bound.max(1) as u64;
        (self.next_u64() % bound) as usize
    }
}

/// Shuffles `items` in place (Fisher–Yates) with a generator seeded by `seed`.
pub fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut rng = SplitMix64::new(seed);
    for i in (1..items.len()).rev() {
        let j = rng.below(i + 1);
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_reference_values() {
        // First outputs of SplitMix64 seeded with 0 (the published reference sequence).
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(r.next_u64(), 0x06c4_5d18_8009_454f);
    }

    #[test]
    fn shuffle_is_a_deterministic_permutation() {
        let base: Vec<u32> = (0..20).collect();
        let mut a = base.clone();
        let mut b = base.clone();
        shuffle(&mut a, 42);
        shuffle(&mut b, 42);
        assert_eq!(a, b, "same seed, same order");
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, base, "a permutation");
        let mut c = base.clone();
        shuffle(&mut c, 43);
        assert_ne!(a, c, "another seed, another order");
        assert_ne!(a, base, "not the identity");
        // Empty and single-element slices are fine.
        shuffle::<u8>(&mut [], 1);
        let mut one = [7];
        shuffle(&mut one, 1);
        assert_eq!(one, [7]);
    }

    #[test]
    fn every_position_is_reachable() {
        // Over many seeds each element lands first at least once (no stuck positions).
        let mut first = [false; 5];
        for seed in 0..200 {
            let mut v = [0, 1, 2, 3, 4];
            shuffle(&mut v, seed);
            first[v[0]] = true;
        }
        assert!(first.iter().all(|f| *f), "{first:?}");
    }
}
