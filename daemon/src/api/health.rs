//! `GET /v1/health`: whether the daemon works, for scripts and probes.
//!
//! The status code carries the answer (200 healthy, 503 not), so `curl -f` and any HTTP probe
//! work without reading the body. The 503 body is a problem (type `unhealthy`, `detail` listing
//! the critical reasons) like every error, with the health's own members (`healthy`, `reasons`)
//! added as RFC 9457 extension members; so the body of either answer decodes as
//! [`wgmesh_api_types::Health`], and `reasons` (warnings included) is always there to read. The
//! health is the one the status snapshot carries (`Status.health`, from
//! [`crate::status::health`]), so the two never disagree.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use wgmesh_api_types::{
    Health, HealthResponse, PROBLEM_CONTENT_TYPE, Problem, SCHEMA_VERSION, UnhealthyProblem,
    problem_type,
};

use super::ApiState;

/// The routes this module serves.
pub(super) fn routes() -> Router<ApiState> {
    Router::new().route("/v1/health", get(get_health))
}

/// 200 when the interface is up and every required task runs, else 503 with the reasons.
#[utoipa::path(
    get,
    path = "/v1/health",
    tag = "node",
    responses(
        (status = 200, description = "Healthy; `reasons` lists warnings, if any.", body = HealthResponse),
        (status = 503, description = "Unhealthy: a problem of type `urn:wgmesh:problem:unhealthy` whose `detail` lists the critical reasons, with `healthy` and `reasons` as extension members.", body = UnhealthyProblem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn get_health(State(state): State<ApiState>) -> Response {
    let health = state.snapshots.fresh().await.status.health.clone();
    answer(health)
}

/// The answer for `health`.
fn answer(health: Health) -> Response {
    if health.healthy {
        return Json(HealthResponse {
            schema_version: SCHEMA_VERSION,
            health,
        })
        .into_response();
    }
    let critical: Vec<String> = health
        .reasons
        .iter()
        .filter(|r| r.critical)
        .map(|r| format!("{}: {}", r.code, r.detail))
        .collect();
    let detail = if critical.is_empty() {
        "unhealthy".to_owned()
    } else {
        critical.join("; ")
    };
    let status = StatusCode::SERVICE_UNAVAILABLE;
    let body = UnhealthyProblem {
        problem: Problem::new(
            problem_type::UNHEALTHY,
            status.canonical_reason().unwrap_or("Service Unavailable"),
            status.as_u16(),
            Some(detail),
        ),
        health,
    };
    let mut response = (status, Json(body)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
    );
    response
}
