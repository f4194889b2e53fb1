//! The `control` task: the one place where the daemon's settings and files change at run time.
//! It answers the API's [`ControlRequest`]s one at a time, so two reloads never interleave.

use tokio::sync::mpsc;
use wgmesh_api_types::{CacheFlushResponse, EventKind, ReloadRequest, ReloadResponse};

use crate::api::{ControlError, ControlRequest};
use crate::events::EventBus;
use crate::supervisor::{TaskContext, TaskError};

/// What the control task needs to carry out requests.
pub struct Control {
    /// Where applied reloads and cache writes are announced.
    pub events: EventBus,
}

impl Control {
    /// Applies a reload.
    async fn reload(&self, _request: ReloadRequest) -> Result<ReloadResponse, ControlError> {
        Err(ControlError::Failed(
            "reload is not available in this build yet".to_owned(),
        ))
    }

    /// Writes the peer cache now.
    async fn flush_cache(&self) -> Result<CacheFlushResponse, ControlError> {
        Err(ControlError::Failed(
            "the peer cache is not available in this build yet".to_owned(),
        ))
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
                    let result = self.reload(request).await;
                    if let Ok(r) = &result
                        && r.applied
                    {
                        self.events.publish(EventKind::Reloaded {
                            source: r.source,
                            changed: r.changed.clone(),
                        });
                    }
                    // A caller that gave up no longer wants the answer.
                    let _ = reply.send(result);
                }
                ControlRequest::FlushCache { reply } => {
                    let result = self.flush_cache().await;
                    if let Ok(r) = &result {
                        self.events.publish(EventKind::CacheFlushed {
                            path: r.path.clone(),
                            peers: r.peers,
                        });
                    }
                    let _ = reply.send(result);
                }
            }
        }
    }
}
