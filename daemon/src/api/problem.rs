//! Problem responses: the one place an error becomes an HTTP body.
//!
//! Every error path (unknown route, wrong method, limits) answers through [`ProblemResponse`], so
//! clients get one format (`application/problem+json`) with a stable `type` and never an internal
//! error string.

use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use wgmesh_api_types::{PROBLEM_CONTENT_TYPE, Problem, problem_type};

/// A [`Problem`] ready to be sent with its status code.
#[derive(Debug, Clone)]
pub(super) struct ProblemResponse(pub(super) Problem);

impl ProblemResponse {
    /// A problem of class `kind` with HTTP status `status`; the title is the status's reason.
    pub(super) fn new(status: StatusCode, kind: &str, detail: impl Into<String>) -> Self {
        let title = status.canonical_reason().unwrap_or("Error");
        Self(Problem::new(
            kind,
            title,
            status.as_u16(),
            Some(detail.into()),
        ))
    }
}

impl IntoResponse for ProblemResponse {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        match serde_json::to_vec(&self.0) {
            Ok(body) => (
                status,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
                )],
                body,
            )
                .into_response(),
            // Cannot happen for these plain types; still never answer with an empty body.
            Err(err) => {
                tracing::error!(error = %err, "cannot serialize problem body");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
            }
        }
    }
}

/// Fallback for paths no route matches.
pub(super) async fn not_found(uri: Uri) -> ProblemResponse {
    ProblemResponse::new(
        StatusCode::NOT_FOUND,
        problem_type::NOT_FOUND,
        format!("no API endpoint at {}", uri.path()),
    )
}

/// Fallback for a known path asked with a method it does not serve (axum adds `Allow`).
pub(super) async fn method_not_allowed(method: Method, uri: Uri) -> ProblemResponse {
    ProblemResponse::new(
        StatusCode::METHOD_NOT_ALLOWED,
        problem_type::METHOD_NOT_ALLOWED,
        format!("{} does not accept {method}", uri.path()),
    )
}
