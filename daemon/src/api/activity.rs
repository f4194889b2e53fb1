//! Whether an API connection is processing a request, and since when it has not been.
//!
//! The server may close an idle connection to make room for a new one (see
//! [`super::slots::admit`]), never one processing a request, so each connection carries an
//! [`Activity`] that its service updates and the accept loop reads. A connection is idle from
//! accept until its service is called with a request (hyper calls it once the whole request head
//! is read, so a silent or trickling client is idle) and again from the moment its response body
//! is done (finished or dropped). Busy is marked by a [`Busy`] guard created when the request
//! enters the service and carried inside the response body ([`TrackedBody`]), so every way a
//! request can end (answered, failed, connection dropped mid-request) marks the connection idle
//! again; no bytes are inspected and nothing is polled for it.
//!
//! "Response body done" means hyper has taken all of it, not that the client has read it: a
//! client that asks and then does not read its answer holds an idle connection, and may lose it.
//!
//! An event stream (`GET /v1/events`) is a response body that lasts: its connection stays busy
//! for the stream's whole life, so a watcher is never cut off to make room for a newcomer. That
//! cannot starve admission, because streams have caps of their own well below the connection
//! caps (see `events.rs`), and a stream ends when its client goes away (the next keep-alive
//! fails to write) or the server stops.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Instant;

/// The request state of one connection, shared by its service and the accept loop.
#[derive(Debug)]
pub(super) struct Activity {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Requests being processed: one at a time on HTTP/1.1, counted anyway so that a response
    /// body outliving the next request's start cannot mark the connection idle too early.
    requests: usize,
    /// When `requests` last dropped to zero, or the connection was accepted.
    idle_since: Instant,
}

impl Activity {
    /// A connection accepted at `accepted`: idle from then on.
    pub(super) fn new(accepted: Instant) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                requests: 0,
                idle_since: accepted,
            }),
        })
    }

    /// Since when the connection has been idle; `None` while it processes a request.
    pub(super) fn idle_since(&self) -> Option<Instant> {
        let state = self.lock();
        (state.requests == 0).then_some(state.idle_since)
    }

    /// Marks a request entering the service; the connection is idle again once every guard is
    /// dropped.
    pub(super) fn busy(self: &Arc<Self>) -> Busy {
        self.lock().requests += 1;
        Busy(Arc::clone(self))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is one statement on plain values: consistent even after a panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A request being processed on a connection; dropping it ends that.
#[derive(Debug)]
pub(super) struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.requests = state.requests.saturating_sub(1);
        if state.requests == 0 {
            state.idle_since = Instant::now();
        }
    }
}

/// A response body that keeps its connection busy until hyper has taken all of it or dropped it.
#[derive(Debug)]
pub(super) struct TrackedBody<B> {
    inner: B,
    /// `None` once the body has ended: the connection is idle from the last frame on, even if
    /// hyper keeps the body a little longer.
    busy: Option<Busy>,
}

impl<B> TrackedBody<B> {
    /// `inner`, keeping `busy` until it ends.
    pub(super) fn new(inner: B, busy: Busy) -> Self {
        Self {
            inner,
            busy: Some(busy),
        }
    }
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            this.busy = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::{BodyExt as _, Full};
    use hyper::body::Bytes;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_from_accept_busy_per_request_idle_again_when_the_body_is_done() {
        let accepted = Instant::now();
        let activity = Activity::new(accepted);
        assert_eq!(activity.idle_since(), Some(accepted), "idle from accept");

        tokio::time::advance(Duration::from_secs(1)).await;
        let busy = activity.busy();
        assert_eq!(activity.idle_since(), None, "busy once a request enters");
        let body = TrackedBody::new(Full::new(Bytes::from_static(b"{}")), busy);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(activity.idle_since(), None, "busy while the body is unsent");

        let sent = body.collect().await.unwrap().to_bytes();
        assert_eq!(sent, Bytes::from_static(b"{}"));
        assert_eq!(
            activity.idle_since(),
            Some(accepted + Duration::from_secs(2)),
            "idle again from the end of the body"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_once_the_last_frame_is_taken_even_if_the_body_is_kept() {
        let activity = Activity::new(Instant::now());
        let mut body = TrackedBody::new(Full::new(Bytes::from_static(b"x")), activity.busy());
        assert!(body.frame().await.is_some());
        assert_eq!(
            activity.idle_since(),
            None,
            "a frame taken, the end not seen"
        );
        assert!(body.frame().await.is_none());
        assert!(activity.idle_since().is_some(), "end seen, body still held");
        drop(body);
        assert!(activity.idle_since().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_dropped_unanswered_leaves_the_connection_idle() {
        let activity = Activity::new(Instant::now());
        // The service future (holding the guard) dropped before a response, e.g. the client
        // went away: the connection must not stay busy forever.
        let busy = activity.busy();
        tokio::time::advance(Duration::from_secs(3)).await;
        drop(busy);
        assert_eq!(activity.idle_since(), Some(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn busy_while_any_request_is_unfinished() {
        let activity = Activity::new(Instant::now());
        let first = activity.busy();
        let second = activity.busy();
        drop(first);
        assert_eq!(activity.idle_since(), None);
        drop(second);
        assert!(activity.idle_since().is_some());
    }
}
