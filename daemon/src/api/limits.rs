//! Bounds on what one request can cost the daemon: request time, requests in flight, body size.
//!
//! The socket is open to every member of group `wgmesh`, so a stuck or greedy client must not be
//! able to hold shutdown open, exhaust tasks or memory. Refusals are problem+json like every other
//! error. What a connection can cost before its request is read (connections held, time and
//! bytes of the request head) is bounded by the server in `server.rs`.

use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::{BoxError, ServiceBuilder};
use wgmesh_api_types::problem_type;

use super::problem::ProblemResponse;

/// Longest a request may take before it is answered with 408.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests served at once, over all connections; more are refused with 503, not queued.
pub(super) const MAX_IN_FLIGHT: usize = 64;
/// Largest request body accepted.
pub(super) const MAX_BODY_BYTES: usize = 64 * 1024;

/// Wraps every route of `router` (fallbacks included) in the limits.
pub(super) fn apply(router: Router) -> Router {
    router
        .layer(middleware::from_fn(reject_large_bodies))
        // For extractors of future write routes, which read bodies without a Content-Length too.
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(layer_error))
                .load_shed()
                // Global: `Router::layer` applies a layer per route, and the cap is per daemon.
                .layer(GlobalConcurrencyLimitLayer::new(MAX_IN_FLIGHT))
                .timeout(REQUEST_TIMEOUT),
        )
}

/// Refuses a declared body over [`MAX_BODY_BYTES`] before anything reads it.
async fn reject_large_bodies(request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(len) if len > MAX_BODY_BYTES as u64 => ProblemResponse::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            problem_type::PAYLOAD_TOO_LARGE,
            format!("request body of {len} bytes is over the limit of {MAX_BODY_BYTES} bytes"),
        )
        .into_response(),
        _ => next.run(request).await,
    }
}

/// Turns an error of the tower layers into a problem.
pub(super) async fn layer_error(err: BoxError) -> ProblemResponse {
    if err.is::<tower::timeout::error::Elapsed>() {
        ProblemResponse::new(
            StatusCode::REQUEST_TIMEOUT,
            problem_type::TIMEOUT,
            format!(
                "request not answered within {} s",
                REQUEST_TIMEOUT.as_secs()
            ),
        )
    } else if err.is::<tower::load_shed::error::Overloaded>() {
        ProblemResponse::new(
            StatusCode::SERVICE_UNAVAILABLE,
            problem_type::OVERLOADED,
            format!("more than {MAX_IN_FLIGHT} requests in flight; retry later"),
        )
    } else {
        // Routes are infallible, so this is a bug in the stack; keep its text out of the body.
        tracing::error!(error = %err, "API layer failed");
        ProblemResponse::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            problem_type::INTERNAL,
            "internal error; see the daemon log",
        )
    }
}
