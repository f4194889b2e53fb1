//! The per-source rate limiter of the exchange socket (Go `pkg/ratelimit/limiter.go`,
//! crypto-and-wire §10.1): a token bucket per source IP, refilled at 10 tokens/s up to a burst of
//! 20. A source heard for the first time is allowed and keeps 19 tokens. At most 4096 sources are
//! tracked; a new one evicts the least recently heard (which then starts afresh if it comes back).
//! It runs before decryption, so a flood costs one table lookup per datagram. Pure: time is a
//! parameter.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::lru::LruMap;

/// Tokens added per second.
pub const RATE_PER_SEC: f64 = 10.0;
/// Bucket size.
pub const BURST: f64 = 20.0;
/// Most sources tracked.
pub const MAX_SOURCES: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

/// Token buckets by source IP.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    buckets: LruMap<IpAddr, Bucket>,
    rate: f64,
    burst: f64,
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::new(RATE_PER_SEC, BURST, MAX_SOURCES)
    }
}

impl RateLimiter {
    /// A limiter refilling `rate` tokens per second up to `burst`, tracking `max_sources`.
    pub fn new(rate: f64, burst: f64, max_sources: usize) -> Self {
        Self {
            buckets: LruMap::new(max_sources),
            rate,
            burst,
        }
    }

    /// Whether a datagram from `source` at `now` may be processed (and takes its token).
    pub fn allow(&mut self, source: IpAddr, now: Instant) -> bool {
        let (rate, burst) = (self.rate, self.burst);
        if let Some(b) = self.buckets.get_mut(&source) {
            let elapsed = now.saturating_duration_since(b.refilled);
            b.tokens = (b.tokens + elapsed.as_secs_f64() * rate).min(burst);
            b.refilled = now.max(b.refilled);
            if b.tokens >= 1.0 {
                b.tokens -= 1.0;
                true
            } else {
                false
            }
        } else {
            self.buckets.insert(
                source,
                Bucket {
                    tokens: burst - 1.0,
                    refilled: now,
                },
            );
            true
        }
    }

    /// Sources tracked now.
    pub fn sources(&self) -> usize {
        self.buckets.len()
    }

    /// The time until `source` has a token again (zero when it has one, or is unknown).
    pub fn wait_time(&self, source: IpAddr, now: Instant) -> Duration {
        let Some(b) = self.buckets.peek(&source) else {
            return Duration::ZERO;
        };
        let elapsed = now.saturating_duration_since(b.refilled).as_secs_f64();
        let tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        if tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - tokens) / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(i: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i))
    }

    /// How many of `n` datagrams sent at `at` are allowed.
    fn allowed(l: &mut RateLimiter, src: IpAddr, at: Instant, n: usize) -> usize {
        (0..n).filter(|_| l.allow(src, at)).count()
    }

    #[test]
    fn burst_then_refill_at_ten_per_second() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut l = RateLimiter::default();
        let src = ip(1);
        // (case, at ms, datagrams, allowed)
        #[rustfmt::skip]
        let rows = [
            ("first message: allowed, 19 tokens left", 0, 1, 1),
            ("the rest of the burst", 0, 30, 19),
            ("empty: nothing more at the same instant", 0, 5, 0),
            ("50 ms refill half a token: still nothing", 50, 3, 0),
            ("100 ms after empty: one token", 100, 3, 1),
            ("1 s later: ten tokens", 1100, 20, 10),
            ("a long silence refills only up to the burst", 60_000, 100, 20),
        ];
        for (case, at, n, want) in rows {
            assert_eq!(allowed(&mut l, src, ms(at), n), want, "{case}");
        }
    }

    #[test]
    fn a_new_source_starts_with_nineteen_tokens_after_its_first_message() {
        let t0 = Instant::now();
        let mut l = RateLimiter::default();
        assert!(l.allow(ip(7), t0));
        assert_eq!(allowed(&mut l, ip(7), t0, 100), 19);
        // Another source has its own bucket.
        assert_eq!(allowed(&mut l, ip(8), t0, 100), 20);
        assert_eq!(l.wait_time(ip(7), t0), Duration::from_millis(100));
        assert_eq!(l.wait_time(ip(9), t0), Duration::ZERO);
    }

    #[test]
    fn tracks_at_most_4096_sources_and_forgets_the_least_recent() {
        let t0 = Instant::now();
        let mut l = RateLimiter::default();
        // Source 0 empties its bucket.
        assert_eq!(allowed(&mut l, ip(0), t0, 25), 20);
        for i in 1..MAX_SOURCES as u32 {
            l.allow(ip(i), t0);
        }
        assert_eq!(l.sources(), MAX_SOURCES);
        // Source 0 was heard before the others but is used again now: it stays (and is empty).
        assert!(!l.allow(ip(0), t0));
        // 100 new sources evict the 100 least recent (1..=100), never more than the cap.
        for i in 0..100 {
            l.allow(ip(100_000 + i), t0);
        }
        assert_eq!(l.sources(), MAX_SOURCES);
        assert!(
            !l.allow(ip(0), t0),
            "source 0 was evicted and started afresh"
        );
        // Source 1 was evicted: it comes back with a fresh bucket.
        assert_eq!(allowed(&mut l, ip(1), t0, 25), 20);
        assert_eq!(l.sources(), MAX_SOURCES);
    }

    #[test]
    fn a_clock_that_goes_back_neither_panics_nor_refills() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut l = RateLimiter::default();
        assert_eq!(allowed(&mut l, ip(1), t0, 30), 20);
        assert_eq!(allowed(&mut l, ip(1), t0 - Duration::from_secs(5), 5), 0);
    }
}
