//! The participant side (crypto-and-wire §11.4): whether a `RENDEZVOUS_START` is acted on, and
//! the punch it asks for. Pure: the punch job itself lives in the task.
//!
//! A START names the other side, its candidates and the moment to start. It is accepted when it
//! is about us (its pair id is ours with that peer), has usable candidates and no punch for the
//! pair ran in the last 6 s. Hardening beyond Go: the wait before the punch is capped (a START
//! cannot park a job for long; a replayed one starts at once and is then cooled down like any
//! other), and at most [`MAX_PUNCHES`] punches run at a time.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use super::candidates::{MAX_CANDIDATES, expand, normalise};
use super::pair::pair_id;
use super::requester::CONNECTED_WITHIN;
use crate::keys::PublicKey;
use crate::wire::RendezvousStart;

/// No new punch for a pair within this of the last one's end.
pub const PUNCH_COOLDOWN: Duration = Duration::from_secs(6);
/// How long a finished punch is remembered.
pub const PUNCH_RECORD_TTL: Duration = Duration::from_secs(12);
/// Used when a START has no start time (Go: now + 100 ms).
pub const DEFAULT_DELAY: Duration = Duration::from_millis(100);
/// Longest wait for a START's start time (Go schedules 1.8 s ahead; clocks may differ a little).
pub const MAX_DELAY: Duration = Duration::from_secs(10);
/// Most punch jobs running at once.
pub const MAX_PUNCHES: usize = 8;

/// Why a START is not acted on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StartRejected {
    /// `peer_pubkey` is empty or not a key.
    #[error("START without a valid peer_pubkey")]
    BadPeer,
    /// It names us as the peer.
    #[error("START names this node as the peer")]
    OwnKey,
    /// `pair_id` is not ours with that peer (it was meant for someone else).
    #[error("START pair_id {0:?} is not this node's pair with the peer")]
    PairId(String),
    /// No usable candidate.
    #[error("START has no usable candidate")]
    NoCandidates,
    /// A punch for the pair is running or ended less than 6 s ago.
    #[error("a punch with this peer ran less than 6 s ago")]
    Cooldown,
    /// [`MAX_PUNCHES`] are running.
    #[error("{MAX_PUNCHES} punches are running")]
    Busy,
}

/// A punch to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PunchPlan {
    /// The peer to reach.
    pub peer: PublicKey,
    /// The pair's id (the cooldown key).
    pub pair_id: String,
    /// Where to send HELLOs, in order.
    pub candidates: Vec<SocketAddr>,
    /// How long to wait before the first HELLO.
    pub delay: Duration,
}

#[derive(Clone, Copy, Debug)]
struct Record {
    /// When it started, or when it ended once it has.
    at: Instant,
    running: bool,
}

/// The participant's punch records: one per pair.
#[derive(Debug, Default)]
pub struct Punches {
    records: HashMap<String, Record>,
}

impl Punches {
    /// Go's `handleRendezvousStart` checks; on success the punch is recorded as running. `own`
    /// is our key, `unix_ms` the wall clock, `now` the monotonic clock.
    pub fn accept(
        &mut self,
        start: &RendezvousStart,
        own: &PublicKey,
        ipv6: bool,
        now: Instant,
        unix_ms: i64,
    ) -> Result<PunchPlan, StartRejected> {
        self.prune(now);
        let peer: PublicKey = start
            .peer_pubkey
            .parse()
            .map_err(|_| StartRejected::BadPeer)?;
        if peer == *own {
            return Err(StartRejected::OwnKey);
        }
        let id = pair_id(&own.to_string(), &start.peer_pubkey);
        if start.pair_id != id {
            return Err(StartRejected::PairId(start.pair_id.clone()));
        }
        // The introducer expanded them already; we do not expand again.
        let candidates = prepare_unexpanded(&start.peer_candidates, ipv6);
        if candidates.is_empty() {
            return Err(StartRejected::NoCandidates);
        }
        if let Some(r) = self.records.get(&id)
            && (r.running || now.saturating_duration_since(r.at) < PUNCH_COOLDOWN)
        {
            return Err(StartRejected::Cooldown);
        }
        if self.running() >= MAX_PUNCHES {
            return Err(StartRejected::Busy);
        }
        let delay = if start.start_at_unix_ms > 0 {
            let ms = start.start_at_unix_ms.saturating_sub(unix_ms).max(0);
            Duration::from_millis(ms.unsigned_abs()).min(MAX_DELAY)
        } else {
            DEFAULT_DELAY
        };
        self.records.insert(
            id.clone(),
            Record {
                at: now,
                running: true,
            },
        );
        Ok(PunchPlan {
            peer,
            pair_id: id,
            candidates,
            delay,
        })
    }

    /// The punch for `pair_id` ended at `now`: the cooldown runs from here.
    pub fn finished(&mut self, pair_id: &str, now: Instant) {
        self.records.insert(
            pair_id.to_owned(),
            Record {
                at: now,
                running: false,
            },
        );
    }

    /// Forgets finished punches older than [`PUNCH_RECORD_TTL`].
    pub fn prune(&mut self, now: Instant) {
        self.records
            .retain(|_, r| r.running || now.saturating_duration_since(r.at) < PUNCH_RECORD_TTL);
    }

    /// Punches running.
    pub fn running(&self) -> usize {
        self.records.values().filter(|r| r.running).count()
    }
}

/// Whether the tunnel with a peer that answered the punch works: a handshake newer than
/// `before`, the one seen before the punch (Go's rule), or a session that is still fresh (last
/// handshake less than 2 minutes before `now`). WireGuard starts no new handshake while its
/// session is fresh, so when the tunnel came up just before the START (the peers may already
/// know each other's endpoints), "newer" would never come although the punch reached the peer
/// and the tunnel works; Go counts that as a failed punch.
pub fn tunnel_up(current: Option<SystemTime>, before: Option<SystemTime>, now: SystemTime) -> bool {
    let Some(at) = current else {
        return false;
    };
    Some(at) > before
        || now
            .duration_since(at)
            .map_or(true, |age| age < CONNECTED_WITHIN)
}

/// Normalises a START's candidates without expanding them again, drops IPv6 unless allowed, and
/// caps them.
fn prepare_unexpanded(candidates: &[String], ipv6: bool) -> Vec<SocketAddr> {
    let bases = normalise(candidates);
    // Spread 0: each base as is (ports outside 1..=65535 dropped).
    let mut out = expand(&bases, 0);
    out.retain(|a| ipv6 || a.is_ipv4());
    out.truncate(MAX_CANDIDATES);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::PROTOCOL;

    const MS: Duration = Duration::from_millis(1);
    const SEC: Duration = Duration::from_secs(1);
    const UNIX_MS: i64 = 1_800_000_000_000;

    fn key(b: u8) -> PublicKey {
        PublicKey([b; 32])
    }

    /// A START for us (key 1) to punch key 2.
    fn start() -> RendezvousStart {
        RendezvousStart {
            protocol: PROTOCOL.into(),
            timestamp: 1_800_000_000,
            pair_id: pair_id(&key(1).to_string(), &key(2).to_string()),
            peer_pubkey: key(2).to_string(),
            peer_candidates: vec![
                "198.51.100.3:52190".into(),
                "198.51.100.3:52189".into(),
                "[2001:db8::3]:52190".into(),
            ],
            start_at_unix_ms: UNIX_MS + 1800,
            introducer_key: key(9).to_string(),
        }
    }

    type Change = fn(&mut RendezvousStart);
    /// (candidates, delay) of an accepted START.
    type Accepted = Result<(usize, Duration), StartRejected>;

    #[test]
    fn acceptance_table() {
        let now = Instant::now();
        #[rustfmt::skip]
        let rows: [(&str, Change, Accepted); 11] = [
            ("valid: wait until start_at", |_| {}, Ok((2, 1800 * MS))),
            ("start time in the past: at once", |s| s.start_at_unix_ms = UNIX_MS - 5000, Ok((2, Duration::ZERO))),
            ("no start time: 100 ms", |s| s.start_at_unix_ms = 0, Ok((2, 100 * MS))),
            ("far future: capped at 10 s", |s| s.start_at_unix_ms = UNIX_MS + 600_000, Ok((2, 10 * SEC))),
            ("garbage candidates dropped", |s| s.peer_candidates.push("0.0.0.0:1".into()), Ok((2, 1800 * MS))),
            ("empty peer", |s| s.peer_pubkey.clear(), Err(StartRejected::BadPeer)),
            ("peer is us", |s| s.peer_pubkey = key(1).to_string(), Err(StartRejected::OwnKey)),
            ("empty pair id", |s| s.pair_id.clear(), Err(StartRejected::PairId(String::new()))),
            ("pair id of another pair", |s| s.pair_id = pair_id("a", "b"), Err(StartRejected::PairId(pair_id("a", "b")))),
            ("no candidates", |s| s.peer_candidates.clear(), Err(StartRejected::NoCandidates)),
            ("only unusable candidates", |s| s.peer_candidates = vec!["[2001:db8::3]:1".into(), "x:1".into()], Err(StartRejected::NoCandidates)),
        ];
        for (case, change, want) in rows {
            let mut s = start();
            change(&mut s);
            let got = Punches::default()
                .accept(&s, &key(1), false, now, UNIX_MS)
                .map(|p| (p.candidates.len(), p.delay));
            assert_eq!(got, want, "{case}");
        }
        let plan = Punches::default()
            .accept(&start(), &key(1), true, now, UNIX_MS)
            .unwrap();
        assert_eq!(plan.peer, key(2));
        assert_eq!(
            plan.candidates
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            [
                "198.51.100.3:52190",
                "198.51.100.3:52189",
                "[2001:db8::3]:52190"
            ],
            "in order, not expanded again"
        );
    }

    #[test]
    fn tunnel_up_table() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let ago = |s: u64| Some(now - Duration::from_secs(s));
        #[rustfmt::skip]
        let rows = [
            ("no handshake", None, None, false),
            ("first handshake", ago(1), None, true),
            ("newer than before", ago(1), ago(300), true),
            ("the same stale one", ago(300), ago(300), false),
            ("the same fresh one: the session works", ago(30), ago(30), true),
            ("the same, 119 s old", ago(119), ago(119), true),
            ("the same, 120 s old", ago(120), ago(120), false),
            ("in the future (clock stepped back)", Some(now + Duration::from_secs(5)), Some(now + Duration::from_secs(5)), true),
        ];
        for (case, current, before, want) in rows {
            assert_eq!(tunnel_up(current, before, now), want, "{case}");
        }
    }

    #[test]
    fn cooldown_runs_6_s_from_the_end_of_the_punch() {
        let now = Instant::now();
        let mut p = Punches::default();
        let plan = p.accept(&start(), &key(1), true, now, UNIX_MS).unwrap();
        assert_eq!(p.running(), 1);
        assert_eq!(
            p.accept(&start(), &key(1), true, now + 30 * SEC, UNIX_MS),
            Err(StartRejected::Cooldown),
            "still running: no second punch, however late"
        );
        p.finished(&plan.pair_id, now + 30 * SEC);
        assert_eq!(p.running(), 0);
        assert_eq!(
            p.accept(&start(), &key(1), true, now + 35 * SEC, UNIX_MS),
            Err(StartRejected::Cooldown)
        );
        assert!(
            p.accept(&start(), &key(1), true, now + 36 * SEC, UNIX_MS)
                .is_ok()
        );
    }

    #[test]
    fn concurrent_punches_are_bounded_and_records_pruned() {
        let now = Instant::now();
        let mut p = Punches::default();
        let mut ids = Vec::new();
        for b in 2..(2 + MAX_PUNCHES as u8) {
            let mut s = start();
            s.peer_pubkey = key(b).to_string();
            s.pair_id = pair_id(&key(1).to_string(), &s.peer_pubkey);
            ids.push(p.accept(&s, &key(1), true, now, UNIX_MS).unwrap().pair_id);
        }
        let mut s = start();
        s.peer_pubkey = key(100).to_string();
        s.pair_id = pair_id(&key(1).to_string(), &s.peer_pubkey);
        assert_eq!(
            p.accept(&s, &key(1), true, now, UNIX_MS),
            Err(StartRejected::Busy)
        );
        for id in &ids {
            p.finished(id, now);
        }
        assert!(p.accept(&s, &key(1), true, now, UNIX_MS).is_ok());
        p.finished(&s.pair_id, now);
        p.prune(now + PUNCH_RECORD_TTL);
        assert!(p.records.is_empty());
    }
}
