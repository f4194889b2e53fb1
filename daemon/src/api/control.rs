//! How the API asks the daemon to change something: a [`ControlRequest`] on a channel, answered
//! on a oneshot. The API never touches daemon state itself; the daemon's `control` task owns the
//! changes (reload, cache flush) and answers each request once it is done (or refused).

use axum::http::StatusCode;
use tokio::sync::{mpsc, oneshot};
use wgmesh_api_types::{CacheFlushResponse, ReloadRequest, ReloadResponse, problem_type};

use super::problem::ProblemResponse;

/// Requests the channel carries; each bring the sender of its answer.
#[derive(Debug)]
pub enum ControlRequest {
    /// `POST /v1/reload`: apply the settings in `request`, or re-read the reload file when it
    /// names none.
    Reload {
        /// The body as received.
        request: ReloadRequest,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<ReloadResponse, ControlError>>,
    },
    /// `POST /v1/cache/flush`: write the peer cache now.
    FlushCache {
        /// Where the answer goes.
        reply: oneshot::Sender<Result<CacheFlushResponse, ControlError>>,
    },
}

/// Why a control request changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// A field of the request (or of the reload file) is invalid: 400 naming it.
    #[error("{field}: {detail}")]
    Invalid {
        /// The field (`advertise_routes`, `log_level`, or `<reload file>:<line>`).
        field: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The request was valid but could not be carried out; nothing changed: 500 with this text
    /// (which must name what failed and never hold a secret).
    #[error("{0}")]
    Failed(String),
}

/// Sends the request `make` builds to the daemon's `control` task and waits for its answer,
/// turning every way that fails into the problem a client sees:
///
/// | what happened | answer |
/// |---|---|
/// | [`ControlError::Invalid`] | 400 `bad-request`, `detail` = `<field>: <what is wrong>` |
/// | [`ControlError::Failed`] | 500 `failed`, `detail` = its text (safe to show) |
/// | the queue is full ([`super::CONTROL_QUEUE`] waiting) | 503 `overloaded`, at once |
/// | the control task is gone, or dropped the request | 500 `internal` (logged) |
pub(super) async fn ask<T>(
    control: &mpsc::Sender<ControlRequest>,
    what: &'static str,
    make: impl FnOnce(oneshot::Sender<Result<T, ControlError>>) -> ControlRequest,
) -> Result<T, ProblemResponse> {
    let (reply, answer) = oneshot::channel();
    match control.try_send(make(reply)) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => {
            return Err(ProblemResponse::new(
                StatusCode::SERVICE_UNAVAILABLE,
                problem_type::OVERLOADED,
                format!(
                    "the daemon is busy with {} waiting requests; retry later",
                    control.max_capacity()
                ),
            ));
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            tracing::error!(request = what, "the control task is gone; cannot serve");
            return Err(internal());
        }
    }
    match answer.await {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(ControlError::Invalid { field, detail })) => Err(ProblemResponse::new(
            StatusCode::BAD_REQUEST,
            problem_type::BAD_REQUEST,
            format!("{field}: {detail}"),
        )),
        Ok(Err(ControlError::Failed(text))) => Err(ProblemResponse::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            problem_type::FAILED,
            text,
        )),
        Err(_) => {
            tracing::error!(
                request = what,
                "the control task dropped a request unanswered"
            );
            Err(internal())
        }
    }
}

fn internal() -> ProblemResponse {
    ProblemResponse::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        problem_type::INTERNAL,
        "internal error; see the daemon log",
    )
}
