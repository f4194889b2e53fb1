//! Who gets a connection slot: the admission decision for a newly accepted API connection, and
//! the rate limit on warnings about it.
//!
//! The server accepts every connection and then decides here, from the connections it holds and
//! the newcomer's uid (`SO_PEERCRED`), whether to admit it and which idle connection to close to
//! make room. Idle connections (no request being processed) are what a flood is made of, and they
//! are worth nothing to anyone, so they give way; a connection processing a request never does.
//! Refusing the newcomer is the last resort, when every connection in its way is busy:
//! - one uid may hold its share; beyond it, a new connection replaces that uid's own oldest idle
//!   connection, so a uid flooding the socket churns through its own connections and a normal
//!   client of the same uid (root flooding while root runs `wgmeshctl`) is still served;
//! - over all uids, at the cap, a new connection replaces the oldest idle connection of the uid
//!   holding the most, so several flooding uids cannot make anyone else wait.
//!
//! A newly accepted connection is the youngest idle one, and a normal client sends its request
//! head within microseconds (the server lets a new connection's task run before it accepts the
//! next one): it would be closed only if a whole share of newer connections of its own uid were
//! accepted before its head was read, or, at the global cap, so many of other uids that its uid
//! became the biggest holder and it the oldest idle connection there.
//!
//! No I/O and no clock here: the server passes the connections' state in, so all of it is
//! table-tested.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// Identifies one connection of a server, unique for the server's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct ConnId(pub(super) u64);

/// What the admission decision needs to know about one held connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ConnView {
    pub(super) id: ConnId,
    /// The caller's uid (`SO_PEERCRED`).
    pub(super) uid: u32,
    /// Since when the connection has not been processing a request; `None` while it is.
    pub(super) idle_since: Option<Instant>,
}

/// The caps the decision applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Caps {
    /// Connections held at once, over all uids.
    pub(super) max_connections: usize,
    /// Connections one uid may hold.
    pub(super) max_per_uid: usize,
}

/// Which cap a new connection ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cap {
    /// Its uid already held its share.
    Share,
    /// The server held its cap of connections over all uids.
    Global,
}

impl Cap {
    /// Its name in logs.
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Share => "per_uid",
            Self::Global => "global",
        }
    }
}

/// What to do with a newly accepted connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admission {
    /// Serve it; no cap is reached.
    Admit,
    /// Close the idle connection `victim` (at once, without a drain), then serve the new one.
    AdmitEvicting {
        /// The idle connection that gives way.
        victim: ConnId,
        /// The cap that made room necessary.
        cap: Cap,
    },
    /// Close the new connection: every connection that could give way is processing a request.
    Refuse {
        /// The cap it ran into.
        cap: Cap,
    },
}

/// Decides on a new connection of `uid`, given the connections the server holds (`conns`, the
/// new one not among them) and the caps.
///
/// Its uid's share is checked first: a uid at its share gives up one of its own idle
/// connections (the oldest) or is refused, never costs another uid anything. Below its share, at
/// the global cap, the uid holding the most connections among those with an idle one gives up
/// its oldest idle one (ties: the one idle the longest). The time is not needed: "oldest" is an
/// order, and a connection idle past the header-read timeout is closed by the server anyway.
pub(super) fn admit(conns: &[ConnView], uid: u32, caps: Caps) -> Admission {
    let held_by_uid = conns.iter().filter(|c| c.uid == uid).count();
    if held_by_uid >= caps.max_per_uid {
        return match oldest_idle(conns.iter().filter(|c| c.uid == uid)) {
            Some((victim, _)) => Admission::AdmitEvicting {
                victim,
                cap: Cap::Share,
            },
            None => Admission::Refuse { cap: Cap::Share },
        };
    }
    if conns.len() < caps.max_connections {
        return Admission::Admit;
    }
    // Per uid: connections held, and the oldest idle one (its time and id).
    let mut per_uid: HashMap<u32, (usize, Option<(ConnId, Instant)>)> = HashMap::new();
    for conn in conns {
        let (held, longest_idle) = per_uid.entry(conn.uid).or_default();
        *held += 1;
        *longest_idle = oldest(longest_idle.iter().copied().chain(idle(conn)));
    }
    let victim = per_uid
        .into_values()
        .filter_map(|(held, longest_idle)| longest_idle.map(|(id, since)| (held, since, id)))
        // Most connections first, then idle the longest, then the lowest id (accepted first).
        .min_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    match victim {
        Some((_, _, victim)) => Admission::AdmitEvicting {
            victim,
            cap: Cap::Global,
        },
        None => Admission::Refuse { cap: Cap::Global },
    }
}

/// A connection's id and idle time, if it is idle.
fn idle(conn: &ConnView) -> Option<(ConnId, Instant)> {
    conn.idle_since.map(|since| (conn.id, since))
}

/// The candidate idle the longest (ties: the lowest id, accepted first).
fn oldest(candidates: impl Iterator<Item = (ConnId, Instant)>) -> Option<(ConnId, Instant)> {
    candidates.min_by_key(|&(id, since)| (since, id))
}

/// The connection idle the longest among `conns`.
fn oldest_idle<'a>(conns: impl Iterator<Item = &'a ConnView>) -> Option<(ConnId, Instant)> {
    oldest(conns.filter_map(idle))
}

/// Rate limit for a warning logged on every occurrence of something a flood repeats (refused or
/// evicted connections): a flood must not flood the journal too.
///
/// Every occurrence is logged at debug; at most one warning per interval reports how many
/// occurred since the previous one.
#[derive(Debug)]
pub(super) struct RateLimitedWarning {
    interval: Duration,
    last_warned: Option<Instant>,
    occurred: u64,
}

impl RateLimitedWarning {
    /// At most one warning per `interval`.
    pub(super) fn new(interval: Duration) -> Self {
        Self {
            interval,
            last_warned: None,
            occurred: 0,
        }
    }

    /// Records one occurrence at `now`. Returns the number of occurrences to report when a
    /// warning is due (this one included), `None` when it is not.
    pub(super) fn occurred(&mut self, now: Instant) -> Option<u64> {
        self.occurred += 1;
        let due = self
            .last_warned
            .is_none_or(|last| now.saturating_duration_since(last) >= self.interval);
        if !due {
            return None;
        }
        self.last_warned = Some(now);
        Some(std::mem::take(&mut self.occurred))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A held connection: id, uid, idle since that many seconds after the test's start (`None`:
    /// processing a request).
    type Conn = (u64, u32, Option<u64>);

    const ROOT: u32 = 0;
    const ALICE: u32 = 1000;
    const BOB: u32 = 1001;

    fn evict(victim: u64, cap: Cap) -> Admission {
        Admission::AdmitEvicting {
            victim: ConnId(victim),
            cap,
        }
    }

    #[test]
    fn admit_evicts_idle_connections_before_refusing_anyone() {
        struct Row {
            name: &'static str,
            max_connections: usize,
            max_per_uid: usize,
            held: &'static [Conn],
            uid: u32,
            want: Admission,
        }
        let table = [
            Row {
                name: "first connection",
                max_connections: 4,
                max_per_uid: 2,
                held: &[],
                uid: ALICE,
                want: Admission::Admit,
            },
            Row {
                name: "below both caps",
                max_connections: 4,
                max_per_uid: 2,
                held: &[(1, ALICE, Some(0)), (2, BOB, None)],
                uid: ALICE,
                want: Admission::Admit,
            },
            Row {
                name: "share full: the uid's oldest idle connection gives way",
                max_connections: 8,
                max_per_uid: 3,
                held: &[
                    (1, ALICE, Some(5)),
                    (2, ALICE, Some(2)),
                    (3, ALICE, Some(9)),
                ],
                uid: ALICE,
                want: evict(2, Cap::Share),
            },
            Row {
                name: "share full: a busy connection never gives way",
                max_connections: 8,
                max_per_uid: 3,
                held: &[(1, ALICE, None), (2, ALICE, Some(7)), (3, ALICE, None)],
                uid: ALICE,
                want: evict(2, Cap::Share),
            },
            Row {
                name: "share full and all busy: refused",
                max_connections: 8,
                max_per_uid: 2,
                held: &[(1, ALICE, None), (2, ALICE, None), (3, BOB, Some(0))],
                uid: ALICE,
                want: Admission::Refuse { cap: Cap::Share },
            },
            Row {
                name: "share full: another uid's older idle connection is not touched",
                max_connections: 8,
                max_per_uid: 2,
                held: &[(1, BOB, Some(0)), (2, ALICE, Some(5)), (3, ALICE, Some(6))],
                uid: ALICE,
                want: evict(2, Cap::Share),
            },
            Row {
                name: "root flooding while root asks: root's oldest idle gives way",
                max_connections: 256,
                max_per_uid: 2,
                held: &[(7, ROOT, Some(1)), (8, ROOT, Some(3))],
                uid: ROOT,
                want: evict(7, Cap::Share),
            },
            Row {
                name: "share full, equal idle times: the one accepted first",
                max_connections: 8,
                max_per_uid: 2,
                held: &[(4, ALICE, Some(3)), (3, ALICE, Some(3))],
                uid: ALICE,
                want: evict(3, Cap::Share),
            },
            Row {
                name: "share of zero refuses everyone",
                max_connections: 8,
                max_per_uid: 0,
                held: &[],
                uid: ROOT,
                want: Admission::Refuse { cap: Cap::Share },
            },
            Row {
                name: "another uid is not charged for a flood below the global cap",
                max_connections: 8,
                max_per_uid: 2,
                held: &[(1, ALICE, Some(0)), (2, ALICE, Some(1))],
                uid: BOB,
                want: Admission::Admit,
            },
            Row {
                name: "global cap: the uid holding the most gives way",
                max_connections: 5,
                max_per_uid: 4,
                held: &[
                    (1, BOB, Some(0)),
                    (2, ALICE, Some(4)),
                    (3, ALICE, Some(2)),
                    (4, ALICE, Some(8)),
                    (5, BOB, Some(1)),
                ],
                uid: ROOT,
                want: evict(3, Cap::Global),
            },
            Row {
                name: "global cap: the newcomer's own uid may be the one holding the most",
                max_connections: 4,
                max_per_uid: 4,
                held: &[
                    (1, BOB, Some(0)),
                    (2, ALICE, Some(4)),
                    (3, ALICE, Some(2)),
                    (4, ALICE, Some(8)),
                ],
                uid: ALICE,
                want: evict(3, Cap::Global),
            },
            Row {
                name: "global cap: a uid whose connections are all busy is skipped",
                max_connections: 5,
                max_per_uid: 4,
                held: &[
                    (1, ALICE, None),
                    (2, ALICE, None),
                    (3, ALICE, None),
                    (4, BOB, Some(9)),
                    (5, BOB, None),
                ],
                uid: ROOT,
                want: evict(4, Cap::Global),
            },
            Row {
                name: "global cap, equal holdings: the one idle the longest overall",
                max_connections: 4,
                max_per_uid: 4,
                held: &[
                    (1, ALICE, Some(5)),
                    (2, ALICE, None),
                    (3, BOB, None),
                    (4, BOB, Some(3)),
                ],
                uid: ROOT,
                want: evict(4, Cap::Global),
            },
            Row {
                name: "global cap, equal holdings and times: the one accepted first",
                max_connections: 2,
                max_per_uid: 4,
                held: &[(9, ALICE, Some(3)), (6, BOB, Some(3))],
                uid: ROOT,
                want: evict(6, Cap::Global),
            },
            Row {
                name: "global cap, everything busy: refused",
                max_connections: 3,
                max_per_uid: 4,
                held: &[(1, ALICE, None), (2, BOB, None), (3, BOB, None)],
                uid: ROOT,
                want: Admission::Refuse { cap: Cap::Global },
            },
            Row {
                name: "global cap and share both full: the share decides, the uid's own goes",
                max_connections: 3,
                max_per_uid: 1,
                held: &[(1, ALICE, Some(0)), (2, BOB, Some(1)), (3, ROOT, Some(2))],
                uid: ROOT,
                want: evict(3, Cap::Share),
            },
            Row {
                name: "global cap and share full, own all busy: refused though others idle",
                max_connections: 3,
                max_per_uid: 1,
                held: &[(1, ALICE, Some(0)), (2, BOB, Some(1)), (3, ROOT, None)],
                uid: ROOT,
                want: Admission::Refuse { cap: Cap::Share },
            },
            Row {
                name: "many uids: the biggest holder loses, not the oldest connection",
                max_connections: 6,
                max_per_uid: 32,
                held: &[
                    (1, 60_000, Some(0)),
                    (2, 60_001, Some(1)),
                    (3, 60_002, Some(2)),
                    (4, 60_002, Some(3)),
                    (5, 60_003, Some(4)),
                    (6, ROOT, None),
                ],
                uid: ROOT,
                want: evict(3, Cap::Global),
            },
        ];
        let start = Instant::now();
        for row in table {
            let conns: Vec<ConnView> = row
                .held
                .iter()
                .map(|&(id, uid, idle)| ConnView {
                    id: ConnId(id),
                    uid,
                    idle_since: idle.map(|secs| start + Duration::from_secs(secs)),
                })
                .collect();
            let caps = Caps {
                max_connections: row.max_connections,
                max_per_uid: row.max_per_uid,
            };
            assert_eq!(admit(&conns, row.uid, caps), row.want, "{}", row.name);
        }
    }

    #[test]
    fn a_flood_of_one_uid_keeps_the_newest_connections() {
        // The server's bookkeeping in miniature: every connection is idle from its accept on.
        let caps = Caps {
            max_connections: 256,
            max_per_uid: 4,
        };
        let start = Instant::now();
        let mut held: Vec<ConnView> = Vec::new();
        for i in 0..100 {
            match admit(&held, ROOT, caps) {
                Admission::Admit => {}
                Admission::AdmitEvicting { victim, .. } => held.retain(|c| c.id != victim),
                Admission::Refuse { .. } => panic!("refused connection {i}"),
            }
            held.push(ConnView {
                id: ConnId(i),
                uid: ROOT,
                idle_since: Some(start + Duration::from_micros(i)),
            });
            assert!(held.len() <= 4, "held {} after {i}", held.len());
        }
        let mut ids: Vec<u64> = held.iter().map(|c| c.id.0).collect();
        ids.sort_unstable();
        assert_eq!(ids, [96, 97, 98, 99]);
    }

    #[test]
    fn warnings_are_rate_limited() {
        let start = Instant::now();
        let interval = Duration::from_secs(60);
        let mut warnings = RateLimitedWarning::new(interval);
        // (name, seconds after start, occurrences to report)
        let table = [
            ("first occurrence warns at once", 0, Some(1)),
            ("then quiet", 1, None),
            ("still quiet", 59, None),
            (
                "one interval later: reports all since the last warning",
                60,
                Some(3),
            ),
            ("quiet again", 61, None),
            ("a long pause", 500, Some(2)),
        ];
        for (name, secs, want) in table {
            let got = warnings.occurred(start + Duration::from_secs(secs));
            assert_eq!(got, want, "{name}");
        }
    }
}
