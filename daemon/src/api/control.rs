//! How the API asks the daemon to change something: a [`ControlRequest`] on a channel, answered
//! on a oneshot. The API never touches daemon state itself; the daemon's `control` task owns the
//! changes (reload, cache flush) and answers each request once it is done (or refused).

use tokio::sync::oneshot;
use wgmesh_api_types::{CacheFlushResponse, ReloadRequest, ReloadResponse};

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
