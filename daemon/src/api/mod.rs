//! The control API: HTTP/1.1 JSON under `/v1` on a unix socket.
//!
//! The daemon publishes snapshots on `watch` channels after every reconcile; the API only reads
//! them, so a slow or misbehaving client can never hold a lock the engine needs. Every error a
//! client can see, from a handler or a tower layer, is an `application/problem+json` body
//! ([`wgmesh_api_types::Problem`]) with a stable `type`.
//!
//! - [`router`]: the routes and the per-request limits around them, testable with `oneshot`;
//!   who may do what ([`WritePolicy`], [`Caller`]) is decided in `auth`.
//! - [`bind`]: the socket's life (stale-file check, bind, mode, group, removal on exit); separate
//!   from serving so the daemon claims its socket before it touches any device.
//! - [`serve`]: the accept loop and the per-connection limits (connections at once and per uid,
//!   with idle connections giving way to new ones; time to send a request head; drain on
//!   shutdown), with the caller's [`PeerCred`] attached to every request.

mod activity;
mod auth;
mod cache;
mod control;
mod error;
mod events;
mod health;
mod limits;
mod listener;
pub mod openapi;
mod peers;
mod problem;
mod reload;
mod server;
mod slots;
mod status;

use std::sync::Arc;

use axum::Router;
use axum::middleware;
use tokio::sync::{broadcast, mpsc, watch};
use wgmesh_api_types::{Event, PeerList, Status};

pub use auth::{Access, Caller, PeerCred, WritePolicy};
pub use control::{ControlError, ControlRequest};
pub use error::ApiError;
pub use events::{KEEPALIVE, MAX_EVENT_STREAMS, MAX_EVENT_STREAMS_PER_UID};
pub use listener::{ApiListener, DEFAULT_SOCKET_GROUP, SocketGroup, bind, bind_with_group};
pub use server::{
    DRAIN_TIMEOUT, HEADER_READ_TIMEOUT, MAX_CONNECTIONS, MAX_CONNECTIONS_PER_UID, ServeOptions,
    serve, serve_with,
};

/// What the handlers read: the latest snapshots the daemon published.
///
/// The daemon owns the senders and replaces the values after every reconcile; handlers clone the
/// current value and never wait for a new one.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// Node status, served by `GET /v1/status`.
    pub status: watch::Receiver<Status>,
    /// Known peers, served by `GET /v1/peers`.
    pub peers: watch::Receiver<PeerList>,
    /// Where write requests go (the daemon's `control` task answers them).
    pub control: mpsc::Sender<ControlRequest>,
    /// The daemon's events; each `GET /v1/events` stream subscribes.
    pub events: broadcast::Sender<Event>,
    /// Event streams open now, for their caps.
    streams: Arc<events::EventStreams>,
}

/// Requests waiting for the daemon's `control` task; more get 503 (overloaded) at once.
pub const CONTROL_QUEUE: usize = 16;
/// Events buffered for each `GET /v1/events` stream before it skips (and says so).
pub const EVENT_BUFFER: usize = 1024;

impl ApiState {
    /// A state serving the snapshots `status` and `peers`, with a fresh event bus and control
    /// channel; the receiver of the latter is returned for the daemon's `control` task (or a
    /// test) to answer.
    pub fn new(
        status: watch::Receiver<Status>,
        peers: watch::Receiver<PeerList>,
    ) -> (Self, mpsc::Receiver<ControlRequest>) {
        let (control, requests) = mpsc::channel(CONTROL_QUEUE);
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        (
            Self {
                status,
                peers,
                control,
                events,
                streams: Arc::default(),
            },
            requests,
        )
    }
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
        .merge(writes)
        // After the routes: it installs itself on the routes that exist.
        .method_not_allowed_fallback(problem::method_not_allowed)
        .fallback(problem::not_found)
        .with_state(state);
    limits::apply(routes)
        .layer(middleware::from_fn_with_state(
            Arc::new(policy),
            auth::identify,
        ))
        .layer(middleware::from_fn(auth::refuse_browsers))
}

#[cfg(test)]
mod tests;
