//! The `control` task: the one place where the daemon's settings and files change at run time.
//! It answers the API's [`ControlRequest`]s and SIGHUPs one at a time, so two reloads never
//! interleave.

use std::sync::Arc;

use tokio::sync::mpsc;
use wgmesh_api_types::{
    CacheFlushResponse, EventKind, ReloadRequest, ReloadResponse, ReloadSource,
};

use super::reload::Reloader;
use crate::api::{ControlError, ControlRequest};
use crate::cache::PeerCache;
use crate::events::EventBus;
use crate::peers::PeerStore;
use crate::supervisor::{TaskContext, TaskError};

/// What the control task needs to carry out requests.
pub struct Control {
    /// The one reload function's state (SIGHUP and `POST /v1/reload` both use it).
    pub reloader: Reloader,
    /// The peer cache (its one writer) and the store it saves.
    pub cache: Arc<PeerCache>,
    /// The peers.
    pub store: Arc<PeerStore>,
    /// Where applied reloads and cache writes are announced.
    pub events: EventBus,
}

/// The next message of an optional channel; pending forever without one (or once it closed,
/// when it is set to `None`).
async fn next_of<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    let Some(receiver) = rx else {
        return std::future::pending().await;
    };
    let message = receiver.recv().await;
    if message.is_none() {
        *rx = None;
    }
    message
}

impl Control {
    /// Applies a reload: the one function every reload path calls.
    async fn reload(
        &self,
        request: ReloadRequest,
        source: ReloadSource,
    ) -> Result<ReloadResponse, ControlError> {
        let result = self.reloader.reload(request, source).await;
        if let Ok(r) = &result
            && r.applied
        {
            self.events.publish(EventKind::Reloaded {
                source: r.source,
                changed: r.changed.clone(),
            });
        }
        result
    }

    /// Writes the peer cache now; nothing else changes.
    async fn flush_cache(&self) -> Result<CacheFlushResponse, ControlError> {
        match self.cache.save(&self.store).await {
            Ok(peers) => {
                tracing::info!(path = %self.cache.path().display(), peers, "peer cache flushed");
                self.events.publish(EventKind::CacheFlushed {
                    path: self.cache.path().display().to_string(),
                    peers,
                });
                Ok(CacheFlushResponse {
                    schema_version: wgmesh_api_types::SCHEMA_VERSION,
                    path: self.cache.path().display().to_string(),
                    peers,
                })
            }
            Err(e) => {
                tracing::warn!(error = %e, "peer cache flush failed");
                Err(ControlError::Failed(e.to_string()))
            }
        }
    }

    /// Answers requests and hangups (one message per SIGHUP: re-read the reload file) until
    /// cancelled. A channel whose senders are all gone is no longer watched.
    pub async fn run(
        &self,
        requests: &mut Option<mpsc::Receiver<ControlRequest>>,
        hangups: &mut Option<mpsc::Receiver<()>>,
        ctx: TaskContext,
    ) -> Result<(), TaskError> {
        enum Next {
            Request(ControlRequest),
            Hangup,
        }
        loop {
            let next = tokio::select! {
                () = ctx.cancel.cancelled() => return Ok(()),
                Some(request) = next_of(requests) => Next::Request(request),
                Some(()) = next_of(hangups) => Next::Hangup,
            };
            match next {
                Next::Request(ControlRequest::Reload { request, reply }) => {
                    // A caller that gave up no longer wants the answer.
                    let _ = reply.send(self.reload(request, ReloadSource::Api).await);
                }
                Next::Request(ControlRequest::FlushCache { reply }) => {
                    let _ = reply.send(self.flush_cache().await);
                }
                Next::Hangup => {
                    // Logged by the reload itself, applied or refused.
                    let _ = self
                        .reload(ReloadRequest::default(), ReloadSource::Signal)
                        .await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use tokio::sync::oneshot;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::cache;
    use crate::daemon::reload::tests::reloader;
    use crate::keys::PublicKey;
    use crate::peers::{Method, PeerUpdate};

    #[tokio::test]
    async fn sighup_and_the_api_reach_the_same_reload_one_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let (reloader, mut node, _) = reloader(dir.path(), false);
        std::fs::write(&reloader.file, "advertise-routes=10.20.0.0/24\n").unwrap();
        let control = Control {
            reloader,
            cache: Arc::new(PeerCache::new(dir.path().join("wg0-peers.json"))),
            store: Arc::new(PeerStore::default()),
            events: EventBus::new(16),
        };
        let mut events = control.events.subscribe();
        let (requests_tx, requests) = mpsc::channel(4);
        let (hangups_tx, hangups) = mpsc::channel(1);
        let cancel = CancellationToken::new();
        let ctx = TaskContext {
            cancel: cancel.clone(),
        };
        let task = async {
            let (mut requests, mut hangups) = (Some(requests), Some(hangups));
            control.run(&mut requests, &mut hangups, ctx).await
        };
        let test = async {
            // SIGHUP: the file is read and applied.
            hangups_tx.send(()).await.unwrap();
            tokio::time::timeout(Duration::from_secs(5), node.changed())
                .await
                .expect("a SIGHUP reload")
                .unwrap();
            assert_eq!(
                node.borrow_and_update().advertise_routes,
                ["10.20.0.0/24".parse().unwrap()]
            );
            // The API, empty body: the same file, the same function, nothing new to change.
            let (reply, answer) = oneshot::channel();
            requests_tx
                .send(ControlRequest::Reload {
                    request: ReloadRequest::default(),
                    reply,
                })
                .await
                .unwrap();
            let r = answer.await.unwrap().unwrap();
            assert_eq!(r.source, ReloadSource::File);
            assert!(!r.applied && r.changed.is_empty());
            // The API with settings.
            let (reply, answer) = oneshot::channel();
            let request = ReloadRequest {
                advertise_routes: Some(vec![]),
                ..ReloadRequest::default()
            };
            requests_tx
                .send(ControlRequest::Reload { request, reply })
                .await
                .unwrap();
            let r = answer.await.unwrap().unwrap();
            assert_eq!(r.source, ReloadSource::Api);
            assert!(r.applied);
            assert!(node.borrow_and_update().advertise_routes.is_empty());
            // The two applied reloads were announced, with where they came from; the no-op was
            // not.
            let sources: Vec<ReloadSource> = std::iter::from_fn(|| events.try_recv().ok())
                .map(|e| match e.kind {
                    EventKind::Reloaded { source, changed } => {
                        assert!(changed.advertise_routes.is_some());
                        source
                    }
                    other => panic!("{other:?}"),
                })
                .collect();
            assert_eq!(sources, [ReloadSource::Signal, ReloadSource::Api]);
            // With the signal watcher gone, the API still works.
            drop(hangups_tx);
            let (reply, answer) = oneshot::channel();
            requests_tx
                .send(ControlRequest::Reload {
                    request: ReloadRequest::default(),
                    reply,
                })
                .await
                .unwrap();
            assert_eq!(answer.await.unwrap().unwrap().source, ReloadSource::File);
            cancel.cancel();
        };
        let (result, ()) = tokio::join!(task, test);
        assert!(result.is_ok());
    }

    fn control(path: std::path::PathBuf) -> Control {
        let store = Arc::new(PeerStore::default());
        for n in 1..=3u8 {
            store.update(
                PeerUpdate {
                    mesh_ip: Some(std::net::Ipv4Addr::new(10, 42, 0, n)),
                    ..PeerUpdate::new(PublicKey([n; 32]))
                },
                Method::Lan,
                Instant::now(),
            );
        }
        let dir = path
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        Control {
            reloader: reloader(&dir, false).0,
            cache: Arc::new(PeerCache::new(path)),
            store,
            events: EventBus::new(16),
        }
    }

    #[tokio::test]
    async fn flush_writes_the_cache_and_answers_path_and_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wg0-peers.json");
        let control = control(path.clone());
        let mut events = control.events.subscribe();
        let answer = control.flush_cache().await.unwrap();
        assert_eq!(
            events.try_recv().unwrap().kind,
            EventKind::CacheFlushed {
                path: path.display().to_string(),
                peers: 3
            }
        );
        assert_eq!(
            answer,
            CacheFlushResponse {
                schema_version: wgmesh_api_types::SCHEMA_VERSION,
                path: path.display().to_string(),
                peers: 3,
            }
        );
        assert_eq!(cache::load(&path).unwrap().unwrap().peers.len(), 3);
    }

    #[tokio::test]
    async fn a_failed_flush_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("wg0-peers.json");
        match control(path).flush_cache().await {
            Err(ControlError::Failed(text)) => assert!(text.contains("wg0-peers.json"), "{text}"),
            other => panic!("expected Failed, got {other:?}"),
        }
    }
}
