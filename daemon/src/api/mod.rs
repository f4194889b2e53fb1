//! The control API: HTTP/1.1 JSON under `/v1` on a unix socket.
//!
//! The daemon publishes [`Snapshot`]s (status and peers with their JSON bodies serialised once)
//! within 50 ms of every change; the API only reads them ([`Snapshots::fresh`]), so a slow or
//! misbehaving client can never hold a lock the engine needs, and a read costs a copy, not a
//! build. Every error a client can see, from a handler or a tower layer, is an
//! `application/problem+json` body ([`wgmesh_api_types::Problem`]) with a stable `type`.
//!
//! - [`router`]: the routes and the per-request limits around them, testable with `oneshot`;
//!   who may do what ([`WritePolicy`], [`Caller`]) is decided in `auth`.
//! - [`bind`]: the socket's life (stale-file check, bind, mode, group, removal on exit); separate
//!   from serving so the daemon claims its socket before it touches any device.
//! - [`serve`]: the accept loop and the per-connection limits (connections at once and per uid,
//!   with idle connections giving way to new ones; time to send a request head; drain on
//!   shutdown), with the caller's [`PeerCred`] attached to every request.
//! - [`serve_metrics`]: `GET /metrics` alone on a TCP listener (`join --metrics-listen`); the
//!   control API itself never listens on TCP.

mod activity;
mod auth;
mod cache;
mod control;
mod error;
mod events;
mod health;
mod limits;
mod listener;
mod metrics;
pub mod openapi;
mod peers;
mod problem;
mod reload;
mod server;
mod slots;
pub mod snapshot;
mod status;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use tokio::sync::{mpsc, watch};
use wgmesh_api_types::{PeerList, Status};

use crate::events::EventBus;
use crate::metrics::Metrics;

pub use auth::{Access, Caller, PeerCred, WritePolicy};
pub use control::{ControlError, ControlRequest};
pub use error::ApiError;
pub use events::{KEEPALIVE, MAX_EVENT_STREAMS, MAX_EVENT_STREAMS_PER_UID};
pub use listener::{ApiListener, DEFAULT_SOCKET_GROUP, SocketGroup, bind, bind_with_group};
pub use metrics::{MAX_METRICS_CONNECTIONS, MetricsBindError, MetricsListener, serve_metrics};
pub use server::{
    DRAIN_TIMEOUT, HEADER_READ_TIMEOUT, MAX_CONNECTIONS, MAX_CONNECTIONS_PER_UID, ServeOptions,
    serve, serve_with,
};
pub use snapshot::{Snapshot, SnapshotPublisher, Snapshots};

/// What the handlers read and where they report.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// Status and peers as last published by the daemon, with their JSON bodies; handlers call
    /// [`Snapshots::fresh`].
    pub snapshots: Snapshots,
    /// Where write requests go (the daemon's `control` task answers them).
    pub control: mpsc::Sender<ControlRequest>,
    /// The daemon's events; each `GET /v1/events` stream subscribes.
    pub events: EventBus,
    /// The daemon's counters: `GET /metrics` renders them, the request layer counts into them.
    pub metrics: Arc<Metrics>,
    /// Event streams open now, for their caps.
    streams: Arc<events::EventStreams>,
}

/// Requests waiting for the daemon's `control` task; more get 503 (overloaded) at once.
pub const CONTROL_QUEUE: usize = 16;
/// Events buffered for each `GET /v1/events` stream before it skips (and says so).
pub const EVENT_BUFFER: usize = 1024;

impl ApiState {
    /// A state serving `snapshots`, publishing on `events` and counting into `metrics` (the
    /// daemon's); the receiver of the new control channel is returned for the daemon's `control`
    /// task to answer.
    pub fn with_parts(
        snapshots: Snapshots,
        events: EventBus,
        metrics: Arc<Metrics>,
    ) -> (Self, mpsc::Receiver<ControlRequest>) {
        let (control, requests) = mpsc::channel(CONTROL_QUEUE);
        (
            Self {
                snapshots,
                control,
                events,
                metrics,
                streams: Arc::default(),
            },
            requests,
        )
    }

    /// A state serving the values on `status` and `peers` as they are at each request (tests and
    /// benches), with a fresh event bus, fresh counters and a control channel whose receiver is
    /// returned for a test to answer.
    pub fn new(
        status: watch::Receiver<Status>,
        peers: watch::Receiver<PeerList>,
    ) -> (Self, mpsc::Receiver<ControlRequest>) {
        Self::with_parts(
            Snapshots::from_values(status, peers),
            EventBus::new(EVENT_BUFFER),
            Arc::new(Metrics::default()),
        )
    }
}

/// A pre-serialised JSON body as a 200 response (a reference-count increment, no copy).
pub(crate) fn json_response(body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Builds the API router for a socket only root may write through: every `/v1` route,
/// problem+json fallbacks for unknown paths (404) and methods (405), access checks and the
/// request limits.
///
/// See [`router_with`]; [`serve`] uses the policy of its socket.
pub fn router(state: ApiState) -> Router {
    router_with(state, WritePolicy::root_only())
}

/// Builds the API router for a socket whose writers `policy` names.
///
/// Reads are open to anyone who can connect to the socket (its mode and group decide that).
/// The write routes are grouped behind one `route_layer` that refuses callers without write
/// access (403) before their body is read. Any request with an `Origin` header is refused (403)
/// before anything else.
pub fn router_with(state: ApiState, policy: WritePolicy) -> Router {
    let writes = Router::new()
        .merge(reload::routes())
        .merge(cache::routes())
        .route_layer(middleware::from_fn(auth::require_write));
    let routes = Router::new()
        .merge(status::routes())
        .merge(peers::routes())
        .merge(health::routes())
        .merge(events::routes())
        .merge(metrics::routes())
        .merge(writes)
        // After the routes: it installs itself on the routes that exist.
        .method_not_allowed_fallback(problem::method_not_allowed)
        .fallback(problem::not_found)
        .with_state(state.clone());
    let routes = limits::apply(routes)
        .layer(middleware::from_fn_with_state(
            Arc::new(policy),
            auth::identify,
        ))
        .layer(middleware::from_fn(auth::refuse_browsers));
    // Outermost: every answer is counted, refusals by the layers included.
    metrics::count_requests(routes, state.metrics)
}

#[cfg(test)]
mod tests;
