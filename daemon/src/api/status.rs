//! `GET /v1/status`: the node and a summary of its mesh, as last published by the daemon.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use wgmesh_api_types::Status;

use super::ApiState;

/// The routes this module serves.
pub(super) fn routes() -> Router<ApiState> {
    Router::new().route("/v1/status", get(get_status))
}

/// The node, its settings, its tasks and discovery layers, peer counts and health.
#[utoipa::path(
    get,
    path = "/v1/status",
    tag = "node",
    responses((status = 200, description = "The node's status.", body = Status))
)]
pub(super) async fn get_status(State(state): State<ApiState>) -> Json<Status> {
    Json(state.status.borrow().clone())
}
