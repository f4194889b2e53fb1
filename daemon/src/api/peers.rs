//! `GET /v1/peers`: every known peer, as last published by the daemon (at most
//! [`MAX_AGE`](super::snapshot::MAX_AGE) old).

use super::{ApiState, json_response};
use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;

/// The routes this module serves.
pub(super) fn routes() -> Router<ApiState> {
    Router::new().route("/v1/peers", get(get_peers))
}

/// The pre-serialised body of a fresh snapshot: a copy, not a build.
async fn get_peers(State(state): State<ApiState>) -> Response {
    json_response(state.snapshots.fresh().await.peers_json.clone())
}
