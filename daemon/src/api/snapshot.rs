//! What the read routes serve: the daemon's latest [`Snapshot`] (status and peers, each with its
//! JSON body serialised once when the snapshot was built), and how a route asks for a fresher one.
//!
//! The daemon's `status` task builds a snapshot within 50 ms of every change (peer store,
//! reconcile pass, local node, tasks and layers, interfaces) and publishes it here. Relative times
//! (`…_seconds_ago`, uptime) and the device's handshakes and counters age while nothing changes,
//! so a route that needs the snapshot calls [`Snapshots::fresh`]: a snapshot at most
//! [`MAX_AGE`] old, device data included, is served as it is (a `GET /v1/peers` with 1000 peers
//! is a reference-count increment on its body); an older one makes the `status` task read the
//! device and rebuild, and every request waiting meanwhile gets that one rebuild. An idle daemon
//! thus reads its device only when someone asks (or its reconcile loop does, every 5 s).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use wgmesh_api_types::{PeerList, Status};

/// Oldest snapshot (and device data in it) a route serves without asking for a rebuild.
pub const MAX_AGE: Duration = Duration::from_secs(1);
/// Longest a route waits for a rebuild it asked for; then it serves what it has (a `status`
/// task that is restarting must not hang the API).
pub const REFRESH_WAIT: Duration = Duration::from_secs(2);

/// One published view of the daemon.
#[derive(Debug)]
pub struct Snapshot {
    /// `GET /v1/status` body.
    pub status: Status,
    /// `GET /v1/peers` body.
    pub peers: PeerList,
    /// `status` as JSON.
    pub status_json: Bytes,
    /// `peers` as JSON.
    pub peers_json: Bytes,
    /// When it was built.
    pub built: Instant,
    /// When the device data in it (handshakes, counters, live endpoints) was read; `None` before
    /// the first read.
    pub device_read: Option<Instant>,
}

/// `value` as JSON. The API types cannot fail to serialise (string map keys only, a `Vec`
/// writer); should one ever fail, the body is `null` and the error is logged.
fn to_json<T: Serialize>(value: &T) -> Bytes {
    serde_json::to_vec(value).map_or_else(
        |e| {
            tracing::error!(error = %e, "cannot serialise an API body");
            Bytes::from_static(b"null")
        },
        Bytes::from,
    )
}

impl Snapshot {
    /// A snapshot of `status` and `peers` built at `built` from device data read at
    /// `device_read`; serialises both bodies.
    pub fn new(
        status: Status,
        peers: PeerList,
        built: Instant,
        device_read: Option<Instant>,
    ) -> Self {
        Self {
            status_json: to_json(&status),
            peers_json: to_json(&peers),
            status,
            peers,
            built,
            device_read,
        }
    }

    /// Whether it and its device data are at most [`MAX_AGE`] old at `now`.
    pub fn is_fresh(&self, now: Instant) -> bool {
        let young = |t: Instant| now.saturating_duration_since(t) <= MAX_AGE;
        young(self.built) && self.device_read.is_some_and(young)
    }
}

/// The routes' side: read the latest snapshot, or ask for a fresh one. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Snapshots {
    source: Source,
}

#[derive(Debug, Clone)]
enum Source {
    /// Published by the daemon's `status` task, which rebuilds on request.
    Published {
        rx: watch::Receiver<Arc<Snapshot>>,
        refresh: Arc<Notify>,
    },
    /// Fixed values on watch channels (tests and benches): serialised on every read, always
    /// fresh.
    Values {
        status: watch::Receiver<Status>,
        peers: watch::Receiver<PeerList>,
    },
}

/// The daemon's side: publish snapshots, hear refresh requests.
#[derive(Debug)]
pub struct SnapshotPublisher {
    tx: watch::Sender<Arc<Snapshot>>,
    refresh: Arc<Notify>,
}

/// A publisher starting with `initial`, and the routes' side of it.
pub fn channel(initial: Snapshot) -> (SnapshotPublisher, Snapshots) {
    let (tx, rx) = watch::channel(Arc::new(initial));
    let refresh = Arc::new(Notify::new());
    (
        SnapshotPublisher {
            tx,
            refresh: refresh.clone(),
        },
        Snapshots {
            source: Source::Published { rx, refresh },
        },
    )
}

impl SnapshotPublisher {
    /// Replaces the served snapshot (waking the routes waiting for a fresh one).
    pub fn publish(&self, snapshot: Snapshot) {
        self.tx.send_replace(Arc::new(snapshot));
    }

    /// The snapshot served now.
    pub fn current(&self) -> Arc<Snapshot> {
        self.tx.borrow().clone()
    }

    /// Completes when a route asked for a fresh snapshot (at once if one asked since the last
    /// call: requests made meanwhile are one request).
    pub async fn refresh_requested(&self) {
        self.refresh.notified().await;
    }
}

impl Snapshots {
    /// Serves `status` and `peers` as they are on their channels, serialised on every read
    /// (for tests and benches that publish values by hand).
    pub fn from_values(status: watch::Receiver<Status>, peers: watch::Receiver<PeerList>) -> Self {
        Self {
            source: Source::Values { status, peers },
        }
    }

    fn from_values_now(
        status: &watch::Receiver<Status>,
        peers: &watch::Receiver<PeerList>,
    ) -> Arc<Snapshot> {
        let now = Instant::now();
        Arc::new(Snapshot::new(
            status.borrow().clone(),
            peers.borrow().clone(),
            now,
            Some(now),
        ))
    }

    /// The latest snapshot, however old (for what does not show relative times or device data).
    pub fn latest(&self) -> Arc<Snapshot> {
        match &self.source {
            Source::Published { rx, .. } => rx.borrow().clone(),
            Source::Values { status, peers } => Self::from_values_now(status, peers),
        }
    }

    /// A snapshot at most [`MAX_AGE`] old, device data included: the latest one if it is, else
    /// the one the daemon builds on this request (shared with every request waiting meanwhile).
    /// After [`REFRESH_WAIT`] without a rebuild, the latest one.
    pub async fn fresh(&self) -> Arc<Snapshot> {
        let asked = Instant::now();
        self.rebuilt_since(asked, true).await
    }

    /// Waits (at most [`REFRESH_WAIT`]) for a snapshot built after `since`, so that a write's
    /// caller reads what it changed in its next request (read-your-writes); the device need not
    /// be read again for it. Returns at once for snapshots taken from fixed values.
    pub async fn settled_after(&self, since: Instant) {
        self.rebuilt_since(since, false).await;
    }

    /// The latest snapshot if it answers a request made at `asked` (built since then; with
    /// `device`, also from device data at most [`MAX_AGE`] old); otherwise asks for a rebuild
    /// and waits for one that does, at most [`REFRESH_WAIT`].
    async fn rebuilt_since(&self, asked: Instant, device: bool) -> Arc<Snapshot> {
        let (rx, refresh) = match &self.source {
            Source::Published { rx, refresh } => (rx, refresh),
            Source::Values { status, peers } => return Self::from_values_now(status, peers),
        };
        let current = rx.borrow().clone();
        if (device && current.is_fresh(asked)) || (!device && current.built >= asked) {
            return current;
        }
        refresh.notify_one();
        let mut rx = rx.clone();
        // Built since the request, from device data read at most MAX_AGE before it.
        let answers = |s: &Arc<Snapshot>| {
            s.built >= asked
                && (!device
                    || s.device_read
                        .is_some_and(|t| asked.saturating_duration_since(t) <= MAX_AGE))
        };
        let rebuilt = tokio::time::timeout(REFRESH_WAIT, async {
            rx.wait_for(answers).await.map(|s| s.clone())
        })
        .await;
        match rebuilt {
            Ok(Ok(snapshot)) => snapshot,
            // Timed out, or the daemon is stopping: the latest one beats none.
            _ => rx.borrow().clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(uptime: u64, built: Instant, read: Option<Instant>) -> Snapshot {
        Snapshot::new(
            Status {
                uptime_seconds: uptime,
                ..Status::default()
            },
            PeerList::default(),
            built,
            read,
        )
    }

    #[test]
    fn bodies_are_the_serialised_values() {
        let now = Instant::now();
        let s = snapshot(7, now, Some(now));
        let back: Status = serde_json::from_slice(&s.status_json).unwrap();
        assert_eq!(back, s.status);
        let back: PeerList = serde_json::from_slice(&s.peers_json).unwrap();
        assert_eq!(back, s.peers);
    }

    #[tokio::test(start_paused = true)]
    async fn freshness_table() {
        let now = Instant::now();
        tokio::time::advance(Duration::from_secs(10)).await;
        let now2 = Instant::now();
        let ago = |secs: u64| now2 - Duration::from_millis(secs);
        // (built ms ago, device read ms ago, fresh)
        let table = [
            (0, Some(0), true),
            (1000, Some(1000), true),
            (1001, Some(0), false),
            (0, Some(1001), false),
            (0, None, false),
        ];
        for (built, read, fresh) in table {
            let s = snapshot(0, ago(built), read.map(ago));
            assert_eq!(s.is_fresh(now2), fresh, "built {built} read {read:?}");
        }
        assert!(now2 > now);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fresh_snapshot_is_served_as_is() {
        let now = Instant::now();
        let (publisher, snapshots) = channel(snapshot(1, now, Some(now)));
        let s = snapshots.fresh().await;
        assert!(Arc::ptr_eq(&s, &publisher.current()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_snapshot_asks_once_and_every_waiter_gets_the_rebuild() {
        let now = Instant::now();
        let (publisher, snapshots) = channel(snapshot(1, now, Some(now)));
        tokio::time::advance(Duration::from_secs(5)).await;
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let s = snapshots.clone();
                tokio::spawn(async move { s.fresh().await.status.uptime_seconds })
            })
            .collect();
        // The daemon hears one request and rebuilds once.
        publisher.refresh_requested().await;
        let t = Instant::now();
        publisher.publish(snapshot(6, t, Some(t)));
        for w in waiters {
            assert_eq!(w.await.unwrap(), 6);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_rebuild_the_latest_is_served_after_the_wait() {
        let now = Instant::now();
        let (_publisher, snapshots) = channel(snapshot(1, now, None));
        let started = Instant::now();
        let s = snapshots.fresh().await;
        assert_eq!(s.status.uptime_seconds, 1);
        assert_eq!(started.elapsed(), REFRESH_WAIT);
    }

    #[tokio::test]
    async fn values_are_served_as_they_are_now() {
        let (status_tx, status) = watch::channel(Status::default());
        let (_peers_tx, peers) = watch::channel(PeerList::default());
        let snapshots = Snapshots::from_values(status, peers);
        status_tx.send_modify(|s| s.uptime_seconds = 42);
        assert_eq!(snapshots.fresh().await.status.uptime_seconds, 42);
        assert_eq!(snapshots.latest().status.uptime_seconds, 42);
    }
}
