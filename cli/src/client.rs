//! HTTP/1.1 client of the `wgmeshd` control API on its unix socket.
//!
//! One connection per command, on a current-thread runtime created only for daemon commands (the
//! offline commands never start one). Every failure names the socket and, when the user can fix
//! it, carries a hint.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use wgmesh_api_types::{PROBLEM_CONTENT_TYPE, Problem};

/// How long connecting plus the whole exchange may take.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Why a request to the daemon failed.
#[derive(Debug)]
pub enum ClientError {
    /// Connecting to the socket failed: no daemon, stale socket, or no permission.
    Unreachable {
        /// The socket path.
        socket: PathBuf,
        /// What `connect(2)` said.
        source: io::Error,
    },
    /// No complete answer within [`TIMEOUT`].
    Timeout {
        /// The socket path.
        socket: PathBuf,
    },
    /// The HTTP exchange broke off.
    Http {
        /// The socket path.
        socket: PathBuf,
        /// What hyper said.
        source: hyper::Error,
    },
    /// The daemon answered with a problem document.
    Problem(Problem),
    /// The daemon answered something this client does not understand.
    Unexpected {
        /// The socket path.
        socket: PathBuf,
        /// What was wrong with the answer.
        what: String,
    },
}

impl ClientError {
    /// Advice the user can act on, if any.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            Self::Unreachable { source, .. }
                if source.kind() == io::ErrorKind::PermissionDenied =>
            {
                Some("permission denied: run as root or join group wgmesh")
            }
            Self::Unreachable { .. } => {
                Some("is wgmeshd running? start it with: wgmeshd join --secret-file <FILE>")
            }
            _ => None,
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreachable { socket, source } => {
                write!(f, "cannot reach wgmeshd at {}: {source}", socket.display())
            }
            Self::Timeout { socket } => write!(
                f,
                "wgmeshd at {} did not answer within {} s",
                socket.display(),
                TIMEOUT.as_secs()
            ),
            Self::Http { socket, source } => {
                write!(
                    f,
                    "request to wgmeshd at {} failed: {source}",
                    socket.display()
                )
            }
            Self::Problem(p) => match &p.detail {
                Some(detail) => write!(f, "wgmeshd: {}: {detail}", p.title),
                None => write!(f, "wgmeshd: {}", p.title),
            },
            Self::Unexpected { socket, what } => {
                write!(
                    f,
                    "unexpected answer from wgmeshd at {}: {what}",
                    socket.display()
                )
            }
        }
    }
}

// No `source()`: Display already ends with the cause, and `{:#}` would print it twice.
impl std::error::Error for ClientError {}

/// `GET path` on the daemon at `socket`; the JSON body of a 2xx answer.
///
/// # Errors
///
/// See [`ClientError`]; a problem document from the daemon becomes [`ClientError::Problem`].
pub async fn get_json(socket: &Path, path: &str) -> Result<serde_json::Value, ClientError> {
    let (status, content_type, body) = tokio::time::timeout(TIMEOUT, get(socket, path))
        .await
        .map_err(|_| ClientError::Timeout {
            socket: socket.to_owned(),
        })??;
    let unexpected = |what: String| ClientError::Unexpected {
        socket: socket.to_owned(),
        what,
    };
    if !status.is_success() {
        if content_type.starts_with(PROBLEM_CONTENT_TYPE)
            && let Ok(problem) = serde_json::from_slice::<Problem>(&body)
        {
            return Err(ClientError::Problem(problem));
        }
        return Err(unexpected(format!("HTTP {status}")));
    }
    serde_json::from_slice(&body).map_err(|e| unexpected(format!("body is not JSON: {e}")))
}

/// How long to wait before connecting again when the daemon's accept queue is full.
const CONNECT_RETRY: Duration = Duration::from_millis(5);

/// Connects to `socket`, trying again while the daemon's accept queue is full (`EAGAIN`: a burst
/// of other clients, or a local flood the daemon is shedding); the caller's timeout bounds it.
async fn connect(socket: &Path) -> io::Result<UnixStream> {
    loop {
        match UnixStream::connect(socket).await {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                tokio::time::sleep(CONNECT_RETRY).await;
            }
            other => return other,
        }
    }
}

/// One request on a fresh connection: status, content type and the whole body.
async fn get(socket: &Path, path: &str) -> Result<(StatusCode, String, Bytes), ClientError> {
    let http_err = |source| ClientError::Http {
        socket: socket.to_owned(),
        source,
    };
    let stream = connect(socket)
        .await
        .map_err(|source| ClientError::Unreachable {
            socket: socket.to_owned(),
            source,
        })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http_err)?;
    // The connection task ends with the runtime at the latest; aborted here once we are done.
    let driver = tokio::spawn(connection);
    let request = Request::get(path)
        .header(header::HOST, "localhost")
        .header(header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| ClientError::Unexpected {
            socket: socket.to_owned(),
            what: format!("cannot build request for {path}: {e}"),
        })?;
    let result = async {
        let response = sender.send_request(request).await.map_err(http_err)?;
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(http_err)?
            .to_bytes();
        Ok((status, content_type, body))
    }
    .await;
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_match_the_cause() {
        let unreachable = |kind| ClientError::Unreachable {
            socket: PathBuf::from("/run/wgmesh/wgmeshd.sock"),
            source: io::Error::from(kind),
        };
        let table = [
            (io::ErrorKind::NotFound, "is wgmeshd running?"),
            (io::ErrorKind::ConnectionRefused, "is wgmeshd running?"),
            (io::ErrorKind::PermissionDenied, "join group wgmesh"),
        ];
        for (kind, want) in table {
            let err = unreachable(kind);
            assert!(err.hint().unwrap().contains(want), "{kind:?}");
            assert!(
                err.to_string()
                    .starts_with("cannot reach wgmeshd at /run/wgmesh/wgmeshd.sock: "),
                "{err}"
            );
        }
        let problem = ClientError::Problem(Problem::new(
            "urn:wgmesh:problem:not-found",
            "Not Found",
            404,
            Some("no API endpoint at /v1/x".into()),
        ));
        assert_eq!(problem.hint(), None);
        assert_eq!(
            problem.to_string(),
            "wgmeshd: Not Found: no API endpoint at /v1/x"
        );
    }
}
