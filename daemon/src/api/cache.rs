//! `POST /v1/cache/flush`: write the peer cache now (write access). No body is needed; one sent
//! anyway is not read.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use wgmesh_api_types::{CacheFlushResponse, Problem};

use super::ApiState;
use super::control::{self, ControlRequest};
use super::problem::ProblemResponse;

/// The routes this module serves.
pub(super) fn routes() -> Router<ApiState> {
    Router::new().route("/v1/cache/flush", post(flush_cache))
}

/// Writes the peer cache file now; answers its path and how many peers it holds.
#[utoipa::path(
    post,
    path = "/v1/cache/flush",
    tag = "control",
    responses(
        (status = 200, description = "Written.", body = CacheFlushResponse),
        (status = 403, description = "The caller may not write (not root, not in the socket's group), or the request has an `Origin` header.", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "The cache could not be written (type `urn:wgmesh:problem:failed`; `detail` says why), or an internal error.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn flush_cache(
    State(state): State<ApiState>,
) -> Result<Json<CacheFlushResponse>, ProblemResponse> {
    control::ask(&state.control, "cache flush", |reply| {
        ControlRequest::FlushCache { reply }
    })
    .await
    .map(Json)
}
