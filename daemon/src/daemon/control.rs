//! The `control` task: the one place where the daemon's settings and files change at run time.
//! It answers the API's [`ControlRequest`]s one at a time, so two reloads never interleave.

use std::sync::Arc;

use tokio::sync::mpsc;
use wgmesh_api_types::{CacheFlushResponse, ReloadRequest, ReloadResponse};

use crate::api::{ControlError, ControlRequest};
use crate::cache::PeerCache;
use crate::peers::PeerStore;
use crate::supervisor::{TaskContext, TaskError};

/// What the control task needs to carry out requests.
pub struct Control {
    /// The peer cache (its one writer) and the store it saves.
    pub cache: Arc<PeerCache>,
    /// The peers.
    pub store: Arc<PeerStore>,
}

impl Control {
    /// Applies a reload.
    async fn reload(&self, _request: ReloadRequest) -> Result<ReloadResponse, ControlError> {
        Err(ControlError::Failed(
            "reload is not available in this build yet".to_owned(),
        ))
    }

    /// Writes the peer cache now; nothing else changes.
    async fn flush_cache(&self) -> Result<CacheFlushResponse, ControlError> {
        match self.cache.save(&self.store).await {
            Ok(peers) => {
                tracing::info!(path = %self.cache.path().display(), peers, "peer cache flushed");
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

    /// Answers requests until cancelled.
    pub async fn run(
        &self,
        requests: &mut mpsc::Receiver<ControlRequest>,
        ctx: TaskContext,
    ) -> Result<(), TaskError> {
        loop {
            let request = tokio::select! {
                () = ctx.cancel.cancelled() => return Ok(()),
                request = requests.recv() => request,
            };
            // Every sender is gone only when the API is: nothing more to answer.
            let Some(request) = request else {
                ctx.cancel.cancelled().await;
                return Ok(());
            };
            match request {
                ControlRequest::Reload { request, reply } => {
                    // A caller that gave up no longer wants the answer.
                    let _ = reply.send(self.reload(request).await);
                }
                ControlRequest::FlushCache { reply } => {
                    let _ = reply.send(self.flush_cache().await);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::cache;
    use crate::keys::PublicKey;
    use crate::peers::{Method, PeerUpdate};

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
        Control {
            cache: Arc::new(PeerCache::new(path)),
            store,
        }
    }

    #[tokio::test]
    async fn flush_writes_the_cache_and_answers_path_and_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wg0-peers.json");
        let answer = control(path.clone()).flush_cache().await.unwrap();
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
