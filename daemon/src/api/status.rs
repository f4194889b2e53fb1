//! `GET /v1/status`: the node and a summary of its mesh, the pre-serialised body of a fresh
//! snapshot (at most [`MAX_AGE`](super::snapshot::MAX_AGE) old).

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;

use super::{ApiState, json_response};

/// The routes this module serves.
pub(super) fn routes() -> Router<ApiState> {
    Router::new().route("/v1/status", get(get_status))
}

/// The node, its settings, its tasks and discovery layers, peer counts and health.
#[utoipa::path(
    get,
    path = "/v1/status",
    tag = "node",
    responses((status = 200, description = "The node's status.", body = wgmesh_api_types::Status))
)]
pub(super) async fn get_status(State(state): State<ApiState>) -> Response {
    json_response(state.snapshots.fresh().await.status_json.clone())
}
