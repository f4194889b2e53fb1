//! The daemon's event bus: what happens (peers, reconcile passes, tasks, layers, reloads, cache
//! writes), numbered and timestamped, for `GET /v1/events` streams and anyone else who listens.
//!
//! Publishing never blocks and never fails: with no subscriber the event is dropped, and a
//! subscriber that falls more than the channel's capacity behind skips the oldest events
//! (`RecvError::Lagged`; the API turns that into a `lagged` event on its stream). `seq` increases
//! by exactly one per published event, in the order subscribers receive them, so a gap is always
//! visible.
//!
//! Who publishes what: the `status` task publishes peer events (from the store's events and from
//! comparing peer states between snapshots); the reconcile loop publishes passes that changed the
//! device; the supervisor registry's observer publishes task and layer state changes; the control
//! task publishes reloads and cache flushes.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast;
use wgmesh_api_types::{Event, EventKind, SCHEMA_VERSION};

/// [`EventBus::send`] found nobody listening.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("nobody listens to the events")]
pub struct NoReceivers;

/// Where events go. Cheap to clone; every clone publishes on the same bus with the same `seq`.
#[derive(Clone, Debug)]
pub struct EventBus {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The next `seq`; the lock also makes numbering and sending one step, so subscribers see
    /// `seq` in order even with concurrent publishers. It is held only for a non-blocking send.
    next: Mutex<u64>,
    tx: broadcast::Sender<Event>,
}

impl EventBus {
    /// A bus that buffers `capacity` events for each subscriber (at least 1).
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self {
            inner: Arc::new(Inner {
                next: Mutex::new(1),
                tx,
            }),
        }
    }

    /// Publishes `kind` now; returns its `seq`. Never blocks: nobody listening is fine, and a
    /// subscriber that is behind only lags.
    pub fn publish(&self, kind: EventKind) -> u64 {
        self.publish_at(kind, SystemTime::now())
    }

    /// Publishes `kind` as having happened at `when` (wall clock); returns its `seq`.
    pub fn publish_at(&self, kind: EventKind, when: SystemTime) -> u64 {
        let unix_ms = when
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut next = self
            .inner
            .next
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let seq = *next;
        *next += 1;
        // An error only means nobody listens right now.
        let _ = self.inner.tx.send(Event {
            schema_version: SCHEMA_VERSION,
            seq,
            unix_ms,
            kind,
        });
        seq
    }

    /// Sends `event` as it is, `seq` and time included, without numbering it: for tests and
    /// replays that need exact events. Daemon code calls [`publish`](Self::publish).
    ///
    /// # Errors
    ///
    /// [`NoReceivers`] when nobody listens (the event is dropped). Returns how many listen.
    pub fn send(&self, event: Event) -> Result<usize, NoReceivers> {
        let _numbering = self
            .inner
            .next
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.inner.tx.send(event).map_err(|_| NoReceivers)
    }

    /// A receiver of every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.tx.subscribe()
    }

    /// How many receivers listen now.
    pub fn receiver_count(&self) -> usize {
        self.inner.tx.receiver_count()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::broadcast::error::TryRecvError;

    use super::*;

    fn removed(n: u8) -> EventKind {
        EventKind::PeerRemoved {
            public_key: format!("k{n}"),
        }
    }

    #[test]
    fn seq_increases_by_one_and_time_is_unix_ms() {
        let bus = EventBus::new(8);
        let mut rx = bus.subscribe();
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(bus.publish_at(removed(1), t), 1);
        assert_eq!(bus.publish(removed(2)), 2);
        let first = rx.try_recv().unwrap();
        assert_eq!((first.seq, first.unix_ms), (1, 1_700_000_000_123));
        assert_eq!(first.kind, removed(1));
        assert_eq!(rx.try_recv().unwrap().seq, 2);
    }

    #[test]
    fn publishing_without_subscribers_or_to_a_full_one_never_blocks() {
        let bus = EventBus::new(2);
        // Nobody listens: dropped, numbered all the same.
        assert_eq!(bus.publish(removed(0)), 1);
        let mut slow = bus.subscribe();
        for n in 1..=5 {
            bus.publish(removed(n));
        }
        // The slow subscriber lags by what it missed, then gets the newest two.
        assert_eq!(slow.try_recv(), Err(TryRecvError::Lagged(3)));
        assert_eq!(slow.try_recv().unwrap().seq, 5);
        assert_eq!(slow.try_recv().unwrap().seq, 6);
        assert_eq!(slow.try_recv(), Err(TryRecvError::Empty));
    }

    #[test]
    fn concurrent_publishers_deliver_seq_in_order() {
        let bus = EventBus::new(10_000);
        let mut rx = bus.subscribe();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let bus = bus.clone();
                std::thread::spawn(move || {
                    for n in 0..500 {
                        bus.publish(removed((n % 200) as u8));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let seqs: Vec<u64> = std::iter::from_fn(|| rx.try_recv().ok().map(|e| e.seq)).collect();
        assert_eq!(seqs, (1..=2000).collect::<Vec<u64>>());
    }
}
