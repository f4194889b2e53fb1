//! Every long-lived task of the daemon runs here, by name: nothing fails silently.
//!
//! - [`Supervisor::spawn_restarting`]: discovery and status tasks. An error, a panic or an
//!   unexpected return is logged with the task's name, the task is marked `restarting` with the
//!   error, and it is started again after a backoff (1 s, doubling to 30 s; back to 1 s once a run
//!   lasted a minute).
//! - [`Supervisor::spawn_critical`]: the API and the reconcile loop. An error, a panic or an early
//!   return is fatal: it is logged, reported on the channel returned by [`Supervisor::new`], and
//!   the daemon shuts down with a non-zero exit. A root daemon that silently stopped reconciling
//!   would be worse than one that exits and gets restarted.
//!
//! All tasks run on one [`TaskTracker`] under one [`CancellationToken`], inside a `task` span
//! carrying their name. Cancellation is the only legitimate way for a task to end.
//!
//! Discovery layers also publish their own health through a [`LayerHandle`]: `running`,
//! `retrying` with the last error, or `off`, and when they last succeeded. [`Registry`] holds
//! both views for `GET /v1/status`, and tells its observer ([`Registry::observe`]) about every
//! change a reader would see ([`RegistryChange`]): the daemon turns those into events and status
//! rebuilds instead of polling the registry.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

/// The error a task returns. Its `Display` is shown in logs and in the API: never put a secret in
/// it.
pub type TaskError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// First delay before restarting a failed task.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest delay between restarts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A run that lasted this long resets the backoff to [`BACKOFF_MIN`].
pub const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// What a task is doing, as shown in the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskState {
    /// Running normally.
    Running,
    /// Failed; waiting for its backoff before it starts again.
    Restarting,
    /// Ended after cancellation.
    Stopped,
    /// Failed and not restarted (a critical task): the daemon is shutting down.
    Failed,
}

impl TaskState {
    /// The API's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Restarting => "restarting",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
        }
    }
}

/// One task as the registry knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskRecord {
    /// Its name.
    pub name: &'static str,
    /// Current state.
    pub state: TaskState,
    /// How many times it was restarted.
    pub restarts: u32,
    /// The last failure, if any.
    pub last_error: Option<String>,
    /// When it last failed.
    pub last_error_at: Option<Instant>,
}

/// Health of a discovery layer, as shown in the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerState {
    /// Working.
    Running,
    /// Not working right now; trying again.
    Retrying,
    /// Turned off by configuration.
    Off,
}

impl LayerState {
    /// The API's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Retrying => "retrying",
            Self::Off => "off",
        }
    }
}

/// One discovery layer as the registry knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerRecord {
    /// Current state.
    pub state: LayerState,
    /// What it is doing (e.g. the interfaces LAN discovery uses), if it says.
    pub detail: Option<String>,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// When it last failed.
    pub last_error_at: Option<Instant>,
    /// When it last did its job (sent or heard something useful).
    pub last_success_at: Option<Instant>,
}

/// A change in the [`Registry`] that a reader of the status would see, as its observer hears it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistryChange {
    /// A task was registered or changed state.
    Task {
        /// The task.
        name: &'static str,
        /// Its state now.
        state: TaskState,
        /// Its last error.
        error: Option<String>,
    },
    /// A layer was registered, changed state, or failed with a new error.
    Layer {
        /// The layer.
        name: &'static str,
        /// Its state now.
        state: LayerState,
        /// Its last error.
        error: Option<String>,
    },
    /// Only what a layer says it uses changed (e.g. LAN discovery's interfaces).
    LayerDetail {
        /// The layer.
        name: &'static str,
    },
}

/// Called with every [`RegistryChange`], outside the registry's lock; must not block.
type Observer = Box<dyn Fn(&RegistryChange) + Send + Sync>;

/// The shared view of every task and layer. Cheap to clone (an `Arc`).
#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<Mutex<RegistryInner>>,
    /// Set once, by the daemon, before it spawns anything.
    observer: Arc<OnceLock<Observer>>,
}

#[derive(Default)]
struct RegistryInner {
    tasks: BTreeMap<&'static str, TaskRecord>,
    layers: BTreeMap<&'static str, LayerRecord>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, RegistryInner> {
        // Never held across an await or a user callback; a poisoned lock still holds valid data.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every task, by name.
    pub fn tasks(&self) -> Vec<TaskRecord> {
        self.lock().tasks.values().cloned().collect()
    }

    /// Every discovery layer, by name.
    pub fn layers(&self) -> BTreeMap<&'static str, LayerRecord> {
        self.lock().layers.clone()
    }

    /// Calls `observer` with every later change (outside the registry's lock, on the thread that
    /// made the change, so it must not block). Only one observer: returns false, and ignores
    /// `observer`, if one is already set.
    pub fn observe(&self, observer: impl Fn(&RegistryChange) + Send + Sync + 'static) -> bool {
        self.observer.set(Box::new(observer)).is_ok()
    }

    fn notify(&self, change: Option<RegistryChange>) {
        if let (Some(change), Some(observer)) = (change, self.observer.get()) {
            observer(&change);
        }
    }

    /// A handle for the discovery layer `name`, registered in state `initial`.
    pub fn layer(&self, name: &'static str, initial: LayerState) -> LayerHandle {
        self.lock().layers.insert(
            name,
            LayerRecord {
                state: initial,
                detail: None,
                last_error: None,
                last_error_at: None,
                last_success_at: None,
            },
        );
        self.notify(Some(RegistryChange::Layer {
            name,
            state: initial,
            error: None,
        }));
        LayerHandle {
            name,
            registry: self.clone(),
        }
    }

    fn set_task(&self, name: &'static str, f: impl FnOnce(&mut TaskRecord)) {
        let change = {
            let mut inner = self.lock();
            let mut new = false;
            let record = inner.tasks.entry(name).or_insert_with(|| {
                new = true;
                TaskRecord {
                    name,
                    state: TaskState::Running,
                    restarts: 0,
                    last_error: None,
                    last_error_at: None,
                }
            });
            let before = record.state;
            f(record);
            (new || record.state != before).then(|| RegistryChange::Task {
                name,
                state: record.state,
                error: record.last_error.clone(),
            })
        };
        self.notify(change);
    }

    fn set_layer(&self, name: &'static str, f: impl FnOnce(&mut LayerRecord)) {
        let change = {
            let mut inner = self.lock();
            let Some(record) = inner.layers.get_mut(name) else {
                return;
            };
            let before = (
                record.state,
                record.last_error.clone(),
                record.detail.clone(),
            );
            f(record);
            if (record.state, &record.last_error) != (before.0, &before.1) {
                Some(RegistryChange::Layer {
                    name,
                    state: record.state,
                    error: record.last_error.clone(),
                })
            } else if record.detail != before.2 {
                Some(RegistryChange::LayerDetail { name })
            } else {
                None
            }
        };
        self.notify(change);
    }
}

/// How a discovery layer reports its health. Cheap to clone.
#[derive(Clone, Debug)]
pub struct LayerHandle {
    name: &'static str,
    registry: Registry,
}

impl LayerHandle {
    /// The layer's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The layer works (clears nothing: the last error stays visible with its time).
    pub fn running(&self, detail: impl Into<Option<String>>) {
        let detail = detail.into();
        self.registry.set_layer(self.name, |r| {
            r.state = LayerState::Running;
            r.detail = detail;
        });
    }

    /// The layer cannot work right now and will try again.
    pub fn retrying(&self, error: &dyn fmt::Display) {
        let text = error.to_string();
        self.registry.set_layer(self.name, |r| {
            r.state = LayerState::Retrying;
            r.last_error = Some(text);
            r.last_error_at = Some(Instant::now());
        });
    }

    /// The layer just did its job.
    pub fn success(&self) {
        self.registry.set_layer(self.name, |r| {
            r.last_success_at = Some(Instant::now());
        });
    }
}

/// What a task gets each time it starts.
#[derive(Clone, Debug)]
pub struct TaskContext {
    /// Fires when the daemon stops; the task should return `Ok(())` at its next safe point.
    pub cancel: CancellationToken,
}

/// A critical task failed: the daemon must stop with a non-zero exit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("task {task} failed: {error}")]
pub struct FatalError {
    /// The task's name.
    pub task: &'static str,
    /// What happened.
    pub error: String,
}

/// Spawns and watches every task. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Supervisor {
    tracker: TaskTracker,
    cancel: CancellationToken,
    registry: Registry,
    fatal: mpsc::UnboundedSender<FatalError>,
}

/// How one run of a task ended.
enum Ended {
    /// It returned after cancellation: the normal end.
    Cancelled,
    /// It failed (error, panic, or an early return), with the text to report.
    Failed(String),
}

impl Supervisor {
    /// A supervisor for tasks cancelled by `cancel`, and the receiver of fatal failures.
    pub fn new(cancel: CancellationToken) -> (Self, mpsc::UnboundedReceiver<FatalError>) {
        let (fatal, fatal_rx) = mpsc::unbounded_channel();
        let supervisor = Self {
            tracker: TaskTracker::new(),
            cancel,
            registry: Registry::default(),
            fatal,
        };
        (supervisor, fatal_rx)
    }

    /// The registry of tasks and layers.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The token that stops every task.
    pub fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Runs `task` once; if it fails, panics or returns before cancellation, the daemon stops.
    pub fn spawn_critical<F, Fut>(&self, name: &'static str, task: F)
    where
        F: FnOnce(TaskContext) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), TaskError>> + Send + 'static,
    {
        self.registry
            .set_task(name, |r| r.state = TaskState::Running);
        let this = self.clone();
        let ctx = self.context();
        self.tracker.spawn(
            async move {
                let ended = this.run_once(name, task(ctx)).await;
                match ended {
                    Ended::Cancelled => {
                        this.registry.set_task(name, |r| r.state = TaskState::Stopped);
                    }
                    Ended::Failed(error) => {
                        tracing::error!(task = name, %error, "critical task failed; stopping the daemon");
                        this.registry.set_task(name, |r| {
                            r.state = TaskState::Failed;
                            r.last_error = Some(error.clone());
                            r.last_error_at = Some(Instant::now());
                        });
                        // The receiver lives as long as the daemon's main loop; if it is gone the
                        // daemon is stopping anyway.
                        let _ = this.fatal.send(FatalError { task: name, error });
                    }
                }
            }
            .instrument(tracing::info_span!("task", name)),
        );
    }

    /// Runs `make(ctx)` until cancellation, restarting it with backoff whenever it fails, panics
    /// or returns early. `layer`, if given, is marked `retrying` on each failure and `running` on
    /// each start.
    pub fn spawn_restarting<F, Fut>(
        &self,
        name: &'static str,
        layer: Option<LayerHandle>,
        mut make: F,
    ) where
        F: FnMut(TaskContext) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), TaskError>> + Send + 'static,
    {
        self.registry
            .set_task(name, |r| r.state = TaskState::Running);
        let this = self.clone();
        self.tracker.spawn(
            async move {
                let mut backoff = BACKOFF_MIN;
                loop {
                    let started = Instant::now();
                    if let Some(layer) = &layer {
                        layer.running(None);
                    }
                    let ended = this.run_once(name, make(this.context())).await;
                    let error = match ended {
                        Ended::Cancelled => break,
                        Ended::Failed(error) => error,
                    };
                    if started.elapsed() >= HEALTHY_RUN {
                        backoff = BACKOFF_MIN;
                    }
                    tracing::warn!(task = name, %error, retry_in_s = backoff.as_secs(), "task failed; restarting");
                    this.registry.set_task(name, |r| {
                        r.state = TaskState::Restarting;
                        r.last_error = Some(error.clone());
                        r.last_error_at = Some(Instant::now());
                    });
                    if let Some(layer) = &layer {
                        layer.retrying(&error);
                    }
                    tokio::select! {
                        () = this.cancel.cancelled() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    this.registry.set_task(name, |r| {
                        r.state = TaskState::Running;
                        r.restarts += 1;
                    });
                }
                this.registry.set_task(name, |r| r.state = TaskState::Stopped);
            }
            .instrument(tracing::info_span!("task", name)),
        );
    }

    fn context(&self) -> TaskContext {
        TaskContext {
            cancel: self.cancel.child_token(),
        }
    }

    /// Runs one attempt on its own tokio task (so a panic is caught and named) and classifies
    /// how it ended.
    async fn run_once(
        &self,
        name: &'static str,
        fut: impl Future<Output = Result<(), TaskError>> + Send + 'static,
    ) -> Ended {
        let handle = self.tracker.spawn(fut.in_current_span());
        match handle.await {
            Ok(Ok(())) if self.cancel.is_cancelled() => Ended::Cancelled,
            Ok(Ok(())) => Ended::Failed("ended unexpectedly".to_owned()),
            // An error after cancellation is still an error worth seeing.
            Ok(Err(e)) => Ended::Failed(error_chain(e.as_ref())),
            Err(join) if join.is_panic() => {
                let panic = join.into_panic();
                let text = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-text panic payload".to_owned());
                tracing::error!(task = name, panic = %text, "task panicked");
                Ended::Failed(format!("panicked: {text}"))
            }
            Err(_) => Ended::Failed("aborted".to_owned()),
        }
    }

    /// Stops accepting new tasks and waits until every task has ended.
    pub async fn wait(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Tasks still running (for the log when shutdown gives up on them).
    pub fn still_running(&self) -> Vec<&'static str> {
        self.registry
            .tasks()
            .into_iter()
            .filter(|t| t.state != TaskState::Stopped && t.state != TaskState::Failed)
            .map(|t| t.name)
            .collect()
    }
}

/// `error: cause: cause…` on one line.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // thiserror messages often already end with their source; do not repeat it.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    async fn settle() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failing_tasks_restart_with_backoff_and_report_by_name() {
        let cancel = CancellationToken::new();
        let (sup, _fatal) = Supervisor::new(cancel.clone());
        let layer = sup.registry().layer("lan", LayerState::Running);
        let runs = Arc::new(AtomicU32::new(0));
        let counter = runs.clone();
        sup.spawn_restarting("lan-discovery", Some(layer), move |ctx| {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                match n {
                    0 => Err("No such device (os error 19)".into()),
                    1 => panic!("boom"),
                    _ => {
                        ctx.cancel.cancelled().await;
                        Ok(())
                    }
                }
            }
        });
        settle().await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        let task = &sup.registry().tasks()[0];
        assert_eq!(task.state, TaskState::Restarting);
        assert_eq!(
            task.last_error.as_deref(),
            Some("No such device (os error 19)")
        );
        let lan = &sup.registry().layers()["lan"];
        assert_eq!(lan.state, LayerState::Retrying);
        assert!(
            lan.last_error
                .as_deref()
                .unwrap()
                .contains("No such device")
        );

        tokio::time::advance(BACKOFF_MIN).await;
        settle().await;
        assert_eq!(runs.load(Ordering::SeqCst), 2, "restarted after 1 s");
        let task = &sup.registry().tasks()[0];
        assert_eq!(task.last_error.as_deref(), Some("panicked: boom"));
        // Second failure: 2 s backoff.
        tokio::time::advance(BACKOFF_MIN).await;
        settle().await;
        assert_eq!(runs.load(Ordering::SeqCst), 2, "backoff doubled");
        tokio::time::advance(BACKOFF_MIN).await;
        settle().await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        let task = &sup.registry().tasks()[0];
        assert_eq!((task.state, task.restarts), (TaskState::Running, 2));
        assert_eq!(sup.registry().layers()["lan"].state, LayerState::Running);

        cancel.cancel();
        sup.wait().await;
        assert_eq!(sup.registry().tasks()[0].state, TaskState::Stopped);
        assert!(sup.still_running().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_critical_task_that_fails_or_returns_early_is_fatal() {
        let cancel = CancellationToken::new();
        let (sup, mut fatal) = Supervisor::new(cancel.clone());
        sup.spawn_critical("reconcile", |_ctx| async { Ok(()) });
        sup.spawn_critical("api", |_ctx| async { Err("bind failed".into()) });
        sup.spawn_critical("quiet", |ctx| async move {
            ctx.cancel.cancelled().await;
            Ok(())
        });
        settle().await;
        let mut got = vec![fatal.recv().await.unwrap(), fatal.recv().await.unwrap()];
        got.sort_by_key(|f| f.task);
        assert_eq!(
            got,
            vec![
                FatalError {
                    task: "api",
                    error: "bind failed".into()
                },
                FatalError {
                    task: "reconcile",
                    error: "ended unexpectedly".into()
                },
            ]
        );
        cancel.cancel();
        sup.wait().await;
        let states: Vec<(&str, TaskState)> = sup
            .registry()
            .tasks()
            .iter()
            .map(|t| (t.name, t.state))
            .collect();
        assert_eq!(
            states,
            vec![
                ("api", TaskState::Failed),
                ("quiet", TaskState::Stopped),
                ("reconcile", TaskState::Failed),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_critical_panic_is_fatal_and_named() {
        let cancel = CancellationToken::new();
        let (sup, mut fatal) = Supervisor::new(cancel.clone());
        sup.spawn_critical("reconcile", |_ctx| async { panic!("index out of bounds") });
        let f = fatal.recv().await.unwrap();
        assert_eq!(f.task, "reconcile");
        assert_eq!(f.error, "panicked: index out of bounds");
        cancel.cancel();
        sup.wait().await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_observer_hears_every_visible_change_once() {
        let cancel = CancellationToken::new();
        let (sup, _fatal) = Supervisor::new(cancel.clone());
        let heard = Arc::new(Mutex::new(Vec::new()));
        let sink = heard.clone();
        assert!(
            sup.registry()
                .observe(move |c| sink.lock().unwrap().push(c.clone()))
        );
        assert!(!sup.registry().observe(|_| {}), "one observer only");
        let layer = sup.registry().layer("lan", LayerState::Running);
        layer.success();
        layer.running(Some("eth0".to_owned()));
        layer.running(Some("eth0".to_owned()));
        layer.retrying(&"no interface");
        layer.retrying(&"no interface");
        layer.retrying(&"still none");
        let runs = Arc::new(AtomicU32::new(0));
        let counter = runs.clone();
        sup.spawn_restarting("flaky", None, move |ctx| {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    return Err("boom".into());
                }
                ctx.cancel.cancelled().await;
                Ok(())
            }
        });
        settle().await;
        tokio::time::advance(BACKOFF_MIN).await;
        settle().await;
        cancel.cancel();
        sup.wait().await;
        let error = |e: &str| Some(e.to_owned());
        let want = vec![
            RegistryChange::Layer {
                name: "lan",
                state: LayerState::Running,
                error: None,
            },
            RegistryChange::LayerDetail { name: "lan" },
            RegistryChange::Layer {
                name: "lan",
                state: LayerState::Retrying,
                error: error("no interface"),
            },
            RegistryChange::Layer {
                name: "lan",
                state: LayerState::Retrying,
                error: error("still none"),
            },
            RegistryChange::Task {
                name: "flaky",
                state: TaskState::Running,
                error: None,
            },
            RegistryChange::Task {
                name: "flaky",
                state: TaskState::Restarting,
                error: error("boom"),
            },
            RegistryChange::Task {
                name: "flaky",
                state: TaskState::Running,
                error: error("boom"),
            },
            RegistryChange::Task {
                name: "flaky",
                state: TaskState::Stopped,
                error: error("boom"),
            },
        ];
        assert_eq!(*heard.lock().unwrap(), want);
    }

    #[test]
    fn error_chain_joins_sources_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot join group")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("No such device"));
        assert_eq!(error_chain(&e), "cannot join group: No such device");
    }
}
