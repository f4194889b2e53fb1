//! The `control` task: the one place where the daemon's settings and files change at run time.
//! It answers the API's [`ControlRequest`]s and SIGHUPs one at a time, so two reloads never
//! interleave.

use tokio::sync::mpsc;
use wgmesh_api_types::{CacheFlushResponse, ReloadRequest, ReloadResponse, ReloadSource};

use super::reload::Reloader;
use crate::api::{ControlError, ControlRequest};
use crate::supervisor::{TaskContext, TaskError};

/// What the control task needs to carry out requests.
pub struct Control {
    /// The one reload function's state (SIGHUP and `POST /v1/reload` both use it).
    pub reloader: Reloader,
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
        self.reloader.reload(request, source).await
    }

    /// Writes the peer cache now.
    async fn flush_cache(&self) -> Result<CacheFlushResponse, ControlError> {
        Err(ControlError::Failed(
            "the peer cache is not available in this build yet".to_owned(),
        ))
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
    use std::time::Duration;

    use tokio::sync::oneshot;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::daemon::reload::tests::reloader;

    #[tokio::test]
    async fn sighup_and_the_api_reach_the_same_reload_one_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let (reloader, mut node, _) = reloader(dir.path(), false);
        std::fs::write(&reloader.file, "advertise-routes=10.20.0.0/24\n").unwrap();
        let control = Control { reloader };
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
}
