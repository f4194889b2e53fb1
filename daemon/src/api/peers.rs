//! `GET /v1/peers`: every known peer, as last published by the daemon.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use wgmesh_api_types::PeerList;

use super::ApiState;

/// The routes this module serves.
pub(super) fn routes() -> Router<ApiState> {
    Router::new().route("/v1/peers", get(get_peers))
}

async fn get_peers(State(state): State<ApiState>) -> Json<PeerList> {
    Json(state.peers.borrow().clone())
}
