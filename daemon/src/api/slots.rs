//! Per-caller connection accounting: how many API connections each uid holds, and when to admit
//! one more.
//!
//! The global cap is a semaphore in the accept loop (at the cap it stops accepting, so excess
//! connections wait in the kernel's backlog and cost the daemon nothing). This module adds
//! fairness on top: one uid may hold at most its share, so a local user flooding the socket
//! starves only itself, never root's `wgmeshctl`. No I/O and no clock here; the accept loop
//! passes `now` in, so all of it is table-tested.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Open connections per uid, shared by the accept loop and the permits it hands out.
#[derive(Debug, Clone)]
pub(super) struct ConnectionSlots {
    per_uid: usize,
    held: Arc<Mutex<HashMap<u32, usize>>>,
}

impl ConnectionSlots {
    /// Slots for callers that may hold at most `per_uid` connections each.
    pub(super) fn new(per_uid: usize) -> Self {
        Self {
            per_uid,
            held: Arc::default(),
        }
    }

    /// Takes a slot for a connection of `uid`, or `None` when `uid` already holds its share.
    /// The slot is free again when the permit is dropped.
    pub(super) fn acquire(&self, uid: u32) -> Option<SlotPermit> {
        let mut held = self.lock();
        let count = held.get(&uid).copied().unwrap_or(0);
        if count >= self.per_uid {
            return None;
        }
        held.insert(uid, count + 1);
        Some(SlotPermit {
            slots: self.clone(),
            uid,
        })
    }

    /// Connections `uid` holds now.
    #[cfg(test)]
    pub(super) fn held(&self, uid: u32) -> usize {
        self.lock().get(&uid).copied().unwrap_or(0)
    }

    /// Uids with at least one connection (the map never keeps zero entries).
    #[cfg(test)]
    pub(super) fn callers(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u32, usize>> {
        // The map stays consistent even if a holder panicked: every update is one statement.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One connection's slot; dropping it frees the slot.
#[derive(Debug)]
pub(super) struct SlotPermit {
    slots: ConnectionSlots,
    uid: u32,
}

impl Drop for SlotPermit {
    fn drop(&mut self) {
        let mut held = self.slots.lock();
        if let Some(count) = held.get_mut(&self.uid) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&self.uid);
            }
        }
    }
}

/// Rate limit for the warning about refused connections: a flood must not flood the journal.
///
/// Every refusal is logged at debug; at most one warning per interval reports how many were
/// refused since the previous one.
#[derive(Debug)]
pub(super) struct RefusalWarnings {
    interval: Duration,
    last_warned: Option<Instant>,
    refused: u64,
}

impl RefusalWarnings {
    /// At most one warning per `interval`.
    pub(super) fn new(interval: Duration) -> Self {
        Self {
            interval,
            last_warned: None,
            refused: 0,
        }
    }

    /// Records one refusal at `now`. Returns the number of refusals to report when a warning is
    /// due (this one included), `None` when it is not.
    pub(super) fn refused(&mut self, now: Instant) -> Option<u64> {
        self.refused += 1;
        let due = self
            .last_warned
            .is_none_or(|last| now.saturating_duration_since(last) >= self.interval);
        if !due {
            return None;
        }
        self.last_warned = Some(now);
        Some(std::mem::take(&mut self.refused))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acquire_admits_up_to_the_share_of_each_uid() {
        struct Row {
            name: &'static str,
            per_uid: usize,
            /// Slots taken (and kept) before the one under test.
            held: &'static [u32],
            uid: u32,
            admitted: bool,
        }
        let table = [
            Row {
                name: "first connection",
                per_uid: 2,
                held: &[],
                uid: 1000,
                admitted: true,
            },
            Row {
                name: "below the share",
                per_uid: 2,
                held: &[1000],
                uid: 1000,
                admitted: true,
            },
            Row {
                name: "share full",
                per_uid: 2,
                held: &[1000, 1000],
                uid: 1000,
                admitted: false,
            },
            Row {
                name: "another uid is not charged for the flood",
                per_uid: 2,
                held: &[1000, 1000],
                uid: 0,
                admitted: true,
            },
            Row {
                name: "root has a share like everyone",
                per_uid: 1,
                held: &[0],
                uid: 0,
                admitted: false,
            },
            Row {
                name: "share of one",
                per_uid: 1,
                held: &[1000],
                uid: 1001,
                admitted: true,
            },
            Row {
                name: "share of zero refuses everyone",
                per_uid: 0,
                held: &[],
                uid: 0,
                admitted: false,
            },
        ];
        for row in table {
            let slots = ConnectionSlots::new(row.per_uid);
            let kept: Vec<_> = row
                .held
                .iter()
                .map(|&uid| slots.acquire(uid).expect(row.name))
                .collect();
            let got = slots.acquire(row.uid);
            assert_eq!(got.is_some(), row.admitted, "{}", row.name);
            let want_held =
                row.held.iter().filter(|&&u| u == row.uid).count() + usize::from(row.admitted);
            assert_eq!(slots.held(row.uid), want_held, "{}", row.name);
            drop(kept);
        }
    }

    #[test]
    fn dropping_a_permit_frees_the_slot_and_forgets_idle_uids() {
        let slots = ConnectionSlots::new(1);
        let first = slots.acquire(1000).unwrap();
        assert!(slots.acquire(1000).is_none());
        drop(first);
        assert_eq!(slots.held(1000), 0);
        assert_eq!(
            slots.callers(),
            0,
            "no entry kept for a uid without connections"
        );
        let again = slots.acquire(1000);
        assert!(again.is_some());
        drop(again);
        // Refusals leave nothing behind either.
        let none = ConnectionSlots::new(0);
        assert!(none.acquire(7).is_none());
        assert_eq!(none.callers(), 0);
    }

    #[test]
    fn refusal_warnings_are_rate_limited() {
        let start = Instant::now();
        let interval = Duration::from_secs(60);
        let mut warnings = RefusalWarnings::new(interval);
        // (name, seconds after start, refusals to report)
        let table = [
            ("first refusal warns at once", 0, Some(1)),
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
            let got = warnings.refused(start + Duration::from_secs(secs));
            assert_eq!(got, want, "{name}");
        }
    }
}
