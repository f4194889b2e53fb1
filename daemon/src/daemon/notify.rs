//! The `systemd-notify` task: tells systemd (through `$NOTIFY_SOCKET`) when the daemon is ready,
//! that its reconcile loop is alive (watchdog), a one-line status, and that it is stopping. The
//! decisions are [`Notifier`]'s; this task only gathers observations and sends datagrams. Layer
//! `systemd`: `off` without `$NOTIFY_SOCKET`, `retrying` while datagrams cannot be sent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::api::snapshot::Snapshots;
use crate::engine::reconcile::{INTERVAL as RECONCILE_INTERVAL, Reconciled};
use crate::service::notify::{
    Message, Notifier, Observation, StatusFacts, datagram, status_line, watchdog_period,
};
use crate::supervisor::{LayerHandle, TaskContext, TaskError};
use crate::system::notify::{NotifySocket, watchdog_env};

/// A pass older than this stops the watchdog pings even when `WatchdogSec=` is shorter: three
/// reconcile intervals (a healthy loop passes every 5 s).
pub const STALE_FLOOR: Duration = Duration::from_secs(3 * RECONCILE_INTERVAL.as_secs());

/// The task's parts; cheap to clone (the notifier's memory is shared across restarts, so a
/// restarted task does not announce READY again).
#[derive(Clone)]
pub struct SystemdNotify {
    socket: Arc<NotifySocket>,
    notifier: Arc<Mutex<Notifier>>,
    reconciled: watch::Receiver<Reconciled>,
    snapshots: Snapshots,
    layer: LayerHandle,
}

impl SystemdNotify {
    /// The task for the notify socket `socket` with watchdog period `watchdog` (`None`: none).
    pub fn new(
        socket: NotifySocket,
        watchdog: Option<Duration>,
        reconciled: watch::Receiver<Reconciled>,
        snapshots: Snapshots,
        layer: LayerHandle,
    ) -> Self {
        tracing::info!(
            watchdog_ms = watchdog.map(|w| w.as_millis()),
            "systemd notify socket found: READY after the first reconcile pass"
        );
        Self {
            socket: Arc::new(socket),
            notifier: Arc::new(Mutex::new(Notifier::new(watchdog, STALE_FLOOR))),
            reconciled,
            snapshots,
            layer,
        }
    }

    fn observe(&self) -> Observation {
        let status = self.snapshots.latest();
        let r = self.reconciled.borrow();
        let on_device = r.live.peers.len();
        let relayed = r
            .relays
            .table
            .keys()
            .filter(|k| r.live.peers.contains_key(k))
            .count();
        let facts = StatusFacts {
            on_device,
            relayed,
            connected: status.status.peers.connected,
            healthy: status.status.health.healthy,
            reasons: status
                .status
                .health
                .reasons
                .iter()
                .map(|h| h.detail.clone())
                .collect(),
        };
        Observation {
            now: Instant::now(),
            last_pass: r.last_pass.as_ref().map(|p| p.ended),
            status: status_line(&facts),
        }
    }

    fn send(&self, messages: &[Message]) {
        if messages.is_empty() {
            return;
        }
        let text = datagram(messages);
        match self.socket.send(&text) {
            Ok(()) => {
                tracing::debug!(sent = %text.replace('\n', "; "), "systemd notified");
                if messages.contains(&Message::Ready) {
                    tracing::info!("told systemd the daemon is ready");
                }
                self.layer.running(None);
                self.layer.success();
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot notify systemd");
                self.layer.retrying(&e);
            }
        }
    }

    fn step(&self) {
        let obs = self.observe();
        let messages = match self.notifier.lock() {
            Ok(mut n) => n.step(&obs),
            Err(poisoned) => poisoned.into_inner().step(&obs),
        };
        self.send(&messages);
    }

    fn next_wake(&self) -> Option<Instant> {
        let now = Instant::now();
        match self.notifier.lock() {
            Ok(n) => n.next_wake(now),
            Err(poisoned) => poisoned.into_inner().next_wake(now),
        }
    }

    /// Runs until cancelled, then sends `STOPPING=1`.
    ///
    /// # Errors
    ///
    /// None so far; send failures are logged and reported on the layer, and the task goes on.
    pub async fn run(self, ctx: TaskContext) -> Result<(), TaskError> {
        let mut reconciled = self.reconciled.clone();
        loop {
            self.step();
            let wake = self.next_wake();
            let timer = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = ctx.cancel.cancelled() => break,
                changed = reconciled.changed() => {
                    if changed.is_err() {
                        // The reconcile loop is gone (the daemon is stopping): no more pings.
                        ctx.cancel.cancelled().await;
                        break;
                    }
                }
                () = timer => {}
            }
        }
        self.send(&[Message::Stopping]);
        Ok(())
    }
}

/// Spawns the `systemd-notify` task on `sup` when `$NOTIFY_SOCKET` is set (layer `systemd`
/// running); otherwise marks the layer `off`. A malformed `$NOTIFY_SOCKET` is logged and the
/// layer shows the error (`retrying`): nothing fails silently, and the daemon still runs.
pub fn spawn(
    sup: &crate::supervisor::Supervisor,
    reconciled: watch::Receiver<Reconciled>,
    snapshots: Snapshots,
) {
    use crate::supervisor::LayerState;
    match NotifySocket::from_env() {
        Ok(None) => {
            sup.registry().layer("systemd", LayerState::Off);
        }
        Ok(Some(socket)) => {
            let layer = sup.registry().layer("systemd", LayerState::Running);
            let (usec, pid) = watchdog_env();
            let watchdog = watchdog_period(usec.as_deref(), pid.as_deref(), std::process::id());
            let task = SystemdNotify::new(socket, watchdog, reconciled, snapshots, layer.clone());
            sup.spawn_restarting("systemd-notify", Some(layer), move |ctx| {
                task.clone().run(ctx)
            });
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot notify systemd; the service manager will not see READY");
            sup.registry()
                .layer("systemd", LayerState::Retrying)
                .retrying(&e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::reconcile::PassSummary;
    use crate::supervisor::{LayerState, Supervisor};
    use tokio_util::sync::CancellationToken;

    fn pass_at(ended: Instant) -> Reconciled {
        Reconciled {
            last_pass: Some(PassSummary {
                ended,
                duration: Duration::from_millis(1),
                counts: Default::default(),
                changed: false,
            }),
            ..Reconciled::default()
        }
    }

    fn drain(sock: &std::os::unix::net::UnixDatagram) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 512];
        while let Ok(n) = sock.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }

    /// Under paused time: READY after the first pass, pings every 15 s while passes complete,
    /// none once the loop is stuck for longer than the period, pings again when it recovers,
    /// STOPPING at cancellation.
    #[tokio::test(start_paused = true)]
    async fn a_stuck_reconcile_loop_stops_the_pings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        rx.set_nonblocking(true).unwrap();
        let (pass_tx, passes) = watch::channel(Reconciled::default());
        let (_status_tx, status) = watch::channel(wgmesh_api_types::Status::default());
        let (_peers_tx, peers) = watch::channel(wgmesh_api_types::PeerList::default());
        let snapshots = Snapshots::from_values(status, peers);
        let cancel = CancellationToken::new();
        let (sup, _fatal) = Supervisor::new(cancel.clone());
        let layer = sup.registry().layer("systemd", LayerState::Running);
        let socket = NotifySocket::open(path.to_str().unwrap()).unwrap();
        let task = SystemdNotify::new(
            socket,
            Some(Duration::from_secs(30)),
            passes,
            snapshots,
            layer,
        );
        let ctx = TaskContext {
            cancel: cancel.clone(),
        };
        let handle = tokio::spawn(task.run(ctx));
        let settle = || async {
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
        };
        settle().await;
        assert!(drain(&rx).is_empty(), "nothing before the first pass");

        pass_tx.send_replace(pass_at(Instant::now()));
        settle().await;
        let first = drain(&rx);
        assert_eq!(first.len(), 1, "{first:?}");
        assert!(first[0].starts_with("READY=1\nSTATUS="), "{first:?}");
        assert!(first[0].ends_with("WATCHDOG=1"), "{first:?}");

        // A healthy loop: a pass every 5 s, a ping every 15 s.
        let mut pings = 0;
        for _ in 0..6 {
            tokio::time::advance(Duration::from_secs(5)).await;
            pass_tx.send_replace(pass_at(Instant::now()));
            settle().await;
            pings += drain(&rx).iter().filter(|d| *d == "WATCHDOG=1").count();
        }
        assert_eq!(pings, 2, "30 s of passes: pings at 15 s and 30 s");

        // Stuck: no pass for 60 s. Pings go on only while the last pass is at most 30 s old.
        let mut stuck = Vec::new();
        for _ in 0..12 {
            tokio::time::advance(Duration::from_secs(5)).await;
            settle().await;
            stuck.extend(drain(&rx));
        }
        assert!(
            stuck.iter().filter(|d| *d == "WATCHDOG=1").count() <= 2,
            "{stuck:?}"
        );
        let mut tail = Vec::new();
        for _ in 0..6 {
            tokio::time::advance(Duration::from_secs(5)).await;
            settle().await;
            tail.extend(drain(&rx));
        }
        assert!(tail.is_empty(), "pings from a stuck loop: {tail:?}");

        // Recovered.
        pass_tx.send_replace(pass_at(Instant::now()));
        settle().await;
        assert_eq!(drain(&rx), ["WATCHDOG=1"]);

        cancel.cancel();
        handle.await.unwrap().unwrap();
        assert_eq!(drain(&rx), ["STOPPING=1"]);
    }
}
