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
    /// The task for the notify socket `socket`, with the watchdog period from the environment.
    pub fn new(
        socket: NotifySocket,
        reconciled: watch::Receiver<Reconciled>,
        snapshots: Snapshots,
        layer: LayerHandle,
    ) -> Self {
        let (usec, pid) = watchdog_env();
        let watchdog = watchdog_period(usec.as_deref(), pid.as_deref(), std::process::id());
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
            let task = SystemdNotify::new(socket, reconciled, snapshots, layer.clone());
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
