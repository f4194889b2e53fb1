//! `GET /v1/status`: the node and a summary of its mesh, as last published by the daemon (at most
//! [`MAX_AGE`](super::snapshot::MAX_AGE) old).

use super::{ApiState, json_response};
use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;

/// The routes this module serves.
pub(super) fn routes() -> Router<ApiState> {
    Router::new().route("/v1/status", get(get_status))
}

/// The pre-serialised body of a fresh snapshot.
async fn get_status(State(state): State<ApiState>) -> Response {
    json_response(state.snapshots.fresh().await.status_json.clone())
}
