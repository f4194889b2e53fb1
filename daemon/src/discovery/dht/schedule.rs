//! When the DHT layer acts (crypto-and-wire §12, §19). Pure: the clock and the random factor are
//! parameters.
//!
//! - **Bootstrap**: until the routing table holds a node, attempts are retried after 5, 10, 20,
//!   40, 60, 60… s, each scaled by a random factor in [0.75, 1.25] ([`bootstrap_delay`]).
//! - **Announce** the current and previous hourly ids at once, then every 15 min. Unlike Go, an
//!   announce that reached no node is retried after the query interval instead of 15 min later
//!   (Go's first announce fails the same way when the table is still filling, and then waits).
//! - **Query** both ids at once, then every 30 s; from the first query at which the peer store
//!   holds at least 3 peers on, every 60 s (never back). The first announce that succeeds makes a
//!   query due at once: whoever announced before us is found right away, not 30 s later.

use std::time::Duration;

use tokio::time::Instant;

/// Time between announcements of the hourly ids (Go `DHTAnnounceInterval`).
pub const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(15 * 60);
/// Time between queries while the mesh is small (Go `DHTQueryInterval`).
pub const QUERY_INTERVAL: Duration = Duration::from_secs(30);
/// Time between queries once the store held [`STABLE_PEERS`] peers (Go `DHTQueryIntervalStable`).
pub const STABLE_QUERY_INTERVAL: Duration = Duration::from_secs(60);
/// Peers in the store from which queries slow down.
pub const STABLE_PEERS: usize = 3;
/// Longest time one traversal (a `get_peers` or an announce of one id) may take (Go: 30 s).
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest time one bootstrap attempt may take (Go `DHTBootstrapTimeout`).
pub const BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(30);
/// Time between saves of the node file (Go `DHTPersistInterval`).
pub const PERSIST_INTERVAL: Duration = Duration::from_secs(2 * 60);
/// Base delays between bootstrap attempts; the last one repeats.
pub const BOOTSTRAP_DELAYS: [Duration; 5] = [
    Duration::from_secs(5),
    Duration::from_secs(10),
    Duration::from_secs(20),
    Duration::from_secs(40),
    Duration::from_secs(60),
];
/// Relative jitter of each bootstrap delay: the factor lies in `[1 - JITTER, 1 + JITTER]`.
pub const JITTER: f64 = 0.25;

/// The delay after failed bootstrap attempt number `attempt` (0 = the first failure), scaled by
/// `1 - JITTER + 2 * JITTER * random`; `random` is a uniform sample in `[0, 1]` (clamped).
pub fn bootstrap_delay(attempt: u32, random: f64) -> Duration {
    let last = BOOTSTRAP_DELAYS.len() - 1;
    let base = BOOTSTRAP_DELAYS[(attempt as usize).min(last)];
    let random = if random.is_nan() {
        0.5
    } else {
        random.clamp(0.0, 1.0)
    };
    base.mul_f64(1.0 - JITTER + 2.0 * JITTER * random)
}

/// What is due next: the announce and query timers of a running DHT layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    next_announce: Instant,
    next_query: Instant,
    /// The store once held [`STABLE_PEERS`] peers at a query: queries every 60 s from then on.
    stable: bool,
    /// An announce has reached a node at least once.
    announced: bool,
    /// When the first successful announce asked for a query, until a query started after that
    /// has finished.
    query_requested: Option<Instant>,
    /// When the query in flight (or the last one) started.
    query_started: Option<Instant>,
}

impl Schedule {
    /// A schedule starting at `now`: an announce and a query are both due at once.
    pub fn new(now: Instant) -> Self {
        Self {
            next_announce: now,
            next_query: now,
            stable: false,
            announced: false,
            query_requested: None,
            query_started: None,
        }
    }

    /// When the next announce is due.
    pub fn announce_at(&self) -> Instant {
        self.next_announce
    }

    /// When the next query is due.
    pub fn query_at(&self) -> Instant {
        self.next_query
    }

    /// Whether queries have slowed to [`STABLE_QUERY_INTERVAL`].
    pub fn is_stable(&self) -> bool {
        self.stable
    }

    /// An announce finished at `now`; `reached` says whether any id reached a node.
    pub fn announced(&mut self, now: Instant, reached: bool) {
        if !reached {
            self.next_announce = now + QUERY_INTERVAL;
            return;
        }
        self.next_announce = now + ANNOUNCE_INTERVAL;
        if !self.announced {
            self.announced = true;
            self.query_requested = Some(now);
            self.next_query = self.next_query.min(now);
        }
    }

    /// A query started at `now`.
    pub fn query_started(&mut self, now: Instant) {
        self.query_started = Some(now);
    }

    /// A query finished at `now` while the store held `store_peers` peers.
    pub fn queried(&mut self, now: Instant, store_peers: usize) {
        if store_peers >= STABLE_PEERS {
            self.stable = true;
        }
        if let Some(requested) = self.query_requested {
            // A query that started before the first announce succeeded does not count.
            if self.query_started.is_none_or(|started| started < requested) {
                self.next_query = now;
                return;
            }
            self.query_requested = None;
        }
        let interval = if self.stable {
            STABLE_QUERY_INTERVAL
        } else {
            QUERY_INTERVAL
        };
        self.next_query = now + interval;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn bootstrap_delays_follow_the_documented_sequence_with_jitter() {
        #[rustfmt::skip]
        let table: &[(u32, f64, Duration, &str)] = &[
            (0, 0.5, S(5), "first failure, no jitter"),
            (1, 0.5, S(10), "second"),
            (2, 0.5, S(20), "third"),
            (3, 0.5, S(40), "fourth"),
            (4, 0.5, S(60), "fifth"),
            (5, 0.5, S(60), "capped at 60 s"),
            (1000, 0.5, S(60), "still capped"),
            (0, 0.0, Duration::from_millis(3750), "lowest jitter: x0.75"),
            (0, 1.0, Duration::from_millis(6250), "highest jitter: x1.25"),
            (4, 0.0, S(45), "60 s x0.75"),
            (4, 1.0, S(75), "60 s x1.25"),
            (0, -3.0, Duration::from_millis(3750), "random below 0 is clamped"),
            (0, 7.0, Duration::from_millis(6250), "random above 1 is clamped"),
            (0, f64::NAN, S(5), "NaN counts as the middle"),
        ];
        for (attempt, random, want, case) in table {
            assert_eq!(bootstrap_delay(*attempt, *random), *want, "{case}");
        }
        for attempt in 0..8 {
            for i in 0..=100 {
                let d = bootstrap_delay(attempt, f64::from(i) / 100.0);
                let base = BOOTSTRAP_DELAYS[(attempt as usize).min(4)];
                assert!(
                    d >= base.mul_f64(0.75) && d <= base.mul_f64(1.25),
                    "{attempt} {i}"
                );
            }
        }
    }

    /// One event of a schedule test, at a time in seconds.
    enum Step {
        Announced(u64, bool),
        /// A query started at the first time and finished at the second with this many peers.
        Query(u64, u64, usize),
    }

    #[test]
    fn announce_and_query_times() {
        use Step::{Announced, Query};
        #[rustfmt::skip]
        let table: &[(&str, &[Step], u64, u64, bool)] = &[
            // (case, steps, next announce s, next query s, stable)
            ("fresh: both due at once", &[], 0, 0, false),
            ("announce ok: next in 15 min, query at once",
                &[Announced(2, true)], 902, 0, false),
            ("announce reached nobody: retried after 30 s",
                &[Announced(2, false)], 32, 0, false),
            ("query with a small store: 30 s",
                &[Query(0, 1, 0)], 0, 31, false),
            ("query with 2 peers: still 30 s",
                &[Query(0, 1, 2)], 0, 31, false),
            ("query with 3 peers: 60 s",
                &[Query(0, 1, 3)], 0, 61, true),
            ("stable never reverts",
                &[Query(0, 1, 3), Query(61, 62, 0)], 0, 122, true),
            ("query first, then the first announce succeeds: query again at once",
                &[Query(0, 1, 0), Announced(3, true)], 903, 3, false),
            ("a query in flight when the first announce succeeds does not count",
                &[Announced(3, true), Query(0, 4, 0)], 903, 4, false),
            ("a query started after it serves the request",
                &[Announced(3, true), Query(0, 4, 0), Query(4, 5, 0)], 903, 35, false),
            ("only the first success asks for a query",
                &[Announced(3, true), Query(3, 4, 0), Announced(903, true)], 1803, 34, false),
            ("a failed announce does not ask for a query",
                &[Query(0, 1, 0), Announced(2, false)], 32, 31, false),
            ("success after failures asks for it",
                &[Announced(2, false), Query(0, 3, 0), Announced(32, true)], 932, 32, false),
        ];
        let t0 = Instant::now();
        for (case, steps, announce, query, stable) in table {
            let mut s = Schedule::new(t0);
            for step in *steps {
                match step {
                    Announced(at, ok) => s.announced(t0 + S(*at), *ok),
                    Query(start, end, n) => {
                        s.query_started(t0 + S(*start));
                        s.queried(t0 + S(*end), *n);
                    }
                }
            }
            assert_eq!(s.announce_at(), t0 + S(*announce), "{case}: announce");
            assert_eq!(s.query_at(), t0 + S(*query), "{case}: query");
            assert_eq!(s.is_stable(), *stable, "{case}: stable");
        }
    }
}
