//! The peer cache: `<state-dir>/<iface>-peers.json`, so a restarted node reaches its peers before
//! any discovery answers (reference daemon-behaviour §10, seed 001).
//!
//! - **File**: Go wgmesh's keys ([`CacheFile`], [`CacheEntry`]), so a Go node's cache loads here
//!   and ours in Go; written atomically with mode 0600 ([`save`]); the only writer is
//!   [`PeerCache`], whose saves are serialised, so an older snapshot never replaces a newer one.
//! - **When**: every [`SAVE_INTERVAL`] (the `cache` task, [`PeerCache::run`]), on
//!   `POST /v1/cache/flush`, and once more at shutdown after the tasks stopped.
//! - **What**: every stored peer, dead and quarantined ones included, plus the entries of earlier
//!   saves for peers the store has since forgotten, while seen within 24 h ([`next_entries`]):
//!   a peer silent for ten minutes is still worth a try after a restart.
//! - **Restore** (once, before the reconcile loop starts): each entry seen within 24 h that passes
//!   [`restorable`] goes into the store as `cache` (the lowest endpoint rank) with its own
//!   `last_seen`, and is [`Liveness::Cached`](crate::peers::Liveness::Cached): on the device at
//!   once, until a live source confirms it or its grace ends (see [`crate::peers`]).
//! - **Failures**: a missing cache is normal; an unreadable or corrupt one is logged and ignored,
//!   and the next save replaces it. A failed save leaves the previous file as it was.
//!
//! File I/O runs on the blocking pool; the decisions ([`restorable`], [`entry_of`],
//! [`next_entries`]) are pure.

mod file;
mod restore;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use crate::config::InterfaceName;
use crate::peers::{Method, PeerStore, UpdateOutcome};
use crate::supervisor::{TaskContext, TaskError};

pub use file::{CacheEntry, CacheError, CacheFile, FILE_MODE, encode, load, save, unix_seconds};
pub use restore::{
    Clock, MAX_AGE, MAX_ENTRIES, RestoreContext, Skip, entry_of, next_entries, restorable,
};

/// How often the `cache` task saves (as Go).
pub const SAVE_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// Where the peer cache of `iface` lives.
pub fn cache_path(state_dir: &Path, iface: &InterfaceName) -> PathBuf {
    state_dir.join(format!("{}-peers.json", iface.as_str()))
}

/// What a restore did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// Entries put into the store.
    pub restored: usize,
    /// Entries left out, by reason code ([`Skip::code`], `cap_reached` or `duplicate`).
    pub skipped: BTreeMap<&'static str, usize>,
}

impl Restored {
    /// How many entries were left out.
    pub fn skipped_total(&self) -> usize {
        self.skipped.values().sum()
    }
}

/// The node's peer cache: the file's one writer.
#[derive(Debug)]
pub struct PeerCache {
    path: PathBuf,
    /// The entries of the last save (or restore); held across the blocking write, so saves never
    /// interleave.
    entries: Mutex<Vec<CacheEntry>>,
}

impl PeerCache {
    /// The cache at `path` (nothing is read yet).
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            entries: Mutex::new(Vec::new()),
        }
    }

    /// The cache file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads the file and puts every restorable entry into `store` as `cache`; logs what it
    /// did. A missing file restores nothing, silently; an unreadable or corrupt one is logged
    /// and ignored. Call once, before the reconcile loop starts.
    pub async fn restore(&self, store: &PeerStore, ctx: &RestoreContext) -> Restored {
        let path = self.path.clone();
        let loaded = tokio::task::spawn_blocking(move || load(&path))
            .await
            .unwrap_or_else(|e| {
                Err(CacheError::Interrupted {
                    path: self.path.clone(),
                    op: "read",
                    detail: e.to_string(),
                })
            });
        let file = match loaded {
            Ok(Some(file)) => file,
            Ok(None) => {
                tracing::debug!(path = %self.path.display(), "no peer cache yet");
                return Restored::default();
            }
            Err(e) => {
                tracing::warn!(error = %e, "ignoring the peer cache; discovery will find the peers");
                return Restored::default();
            }
        };
        let clock = Clock::read();
        let report = restore_into(store, &file, ctx, &clock);
        // What a save right now would write: every peer just restored.
        *self.entries.lock().await = next_entries(&[], &store.list(), &clock);
        let n = report.restored;
        tracing::info!(
            path = %self.path.display(),
            restored = n,
            skipped = report.skipped_total(),
            reasons = ?report.skipped,
            age_s = clock.age_of(file.updated_at).as_secs(),
            "restored {n} peers from the cache"
        );
        report
    }

    /// Writes the cache now: the store's peers and the earlier entries still worth keeping.
    /// Returns how many entries the file holds.
    ///
    /// # Errors
    ///
    /// [`CacheError`] naming the file; the previous file is then unchanged.
    pub async fn save(&self, store: &PeerStore) -> Result<usize, CacheError> {
        let mut entries = self.entries.lock().await;
        let clock = Clock::read();
        let next = next_entries(&entries, &store.list(), &clock);
        let count = next.len();
        let (path, to_write) = (self.path.clone(), next.clone());
        tokio::task::spawn_blocking(move || save(&path, to_write, clock.wall))
            .await
            .map_err(|e| CacheError::Interrupted {
                path: self.path.clone(),
                op: "written",
                detail: e.to_string(),
            })??;
        *entries = next;
        tracing::debug!(path = %self.path.display(), peers = count, "peer cache saved");
        Ok(count)
    }

    /// The `cache` task: saves every [`SAVE_INTERVAL`] until cancelled. A failed save ends the
    /// run with the error, so the supervisor reports it and starts the task again.
    ///
    /// # Errors
    ///
    /// The failed save.
    pub async fn run(
        self: Arc<Self>,
        store: Arc<PeerStore>,
        ctx: TaskContext,
    ) -> Result<(), TaskError> {
        let start = tokio::time::Instant::now() + SAVE_INTERVAL;
        let mut tick = tokio::time::interval_at(start, SAVE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = ctx.cancel.cancelled() => return Ok(()),
                _ = tick.tick() => {}
            }
            self.save(&store).await?;
        }
    }
}

/// Puts the restorable entries of `file` into `store` (pure but for the store).
fn restore_into(
    store: &PeerStore,
    file: &CacheFile,
    ctx: &RestoreContext,
    clock: &Clock,
) -> Restored {
    let mut report = Restored::default();
    for (index, entry) in file.peers.iter().enumerate() {
        let skipped = match restorable(entry, ctx, clock) {
            Ok(update) => match store.update(update, Method::Cache, clock.now) {
                UpdateOutcome::New => None,
                UpdateOutcome::CapReached => Some("cap_reached"),
                // A key listed twice: merged into the first (a newer last_seen wins).
                UpdateOutcome::Updated | UpdateOutcome::Unchanged => Some("duplicate"),
            },
            Err(why) => {
                tracing::debug!(
                    index,
                    reason = why.code(),
                    "cache entry not restored: {why}"
                );
                Some(why.code())
            }
        };
        match skipped {
            Some(code) => *report.skipped.entry(code).or_insert(0) += 1,
            None => report.restored += 1,
        }
    }
    report
}

#[cfg(test)]
mod tests;
