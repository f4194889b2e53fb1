//! HTTP/1.1 client of the `wgmeshd` control API on its unix socket.
//!
//! One connection per request, on a current-thread runtime created only for daemon commands (the
//! offline commands never start one). Requests and answers go through hyper; nothing here writes
//! or parses HTTP by hand. Every failure names the socket and, when the user can fix it, carries
//! a hint ([`ClientError::hint`]) and maps to one of wgmeshctl's exit statuses
//! ([`ClientError::exit`]).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tokio::task::JoinHandle;
use wgmesh_api_types::{Health, HealthReason, PROBLEM_CONTENT_TYPE, Problem, problem_type};

use crate::Exit;

/// How long connecting plus a whole exchange may take (for `GET /v1/events`: until the answer's
/// head; the stream itself may last for ever).
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Longest event line `watch` accepts; a daemon event is a few hundred bytes.
const MAX_EVENT_LINE: usize = 1024 * 1024;

/// What to tell a caller the daemon will not serve: root and the socket's group may change it.
const ACCESS_HINT: &str = "run as root or as a member of the socket's group \
     (wgmesh, unless wgmeshd was started with another --socket-group)";

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
    Problem {
        /// The document.
        problem: Problem,
        /// The request asked for a change (`POST`); problems of a write mean nothing changed.
        write: bool,
    },
    /// The daemon answered something this client does not understand.
    Unexpected {
        /// The socket path.
        socket: PathBuf,
        /// What was wrong with the answer.
        what: String,
    },
    /// The event stream ended: the daemon stopped, restarted or closed the connection.
    StreamEnded {
        /// The socket path.
        socket: PathBuf,
        /// What broke it, when it did not just end.
        cause: Option<String>,
    },
}

impl ClientError {
    /// Advice the user can act on, if any.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            Self::Unreachable { source, .. }
                if source.kind() == io::ErrorKind::PermissionDenied =>
            {
                Some(ACCESS_HINT)
            }
            Self::Unreachable { .. } => {
                Some("is wgmeshd running? start it with: wgmeshd join --secret-file <FILE>")
            }
            Self::Problem { problem, write } => match problem.kind.as_str() {
                problem_type::FORBIDDEN => Some(ACCESS_HINT),
                problem_type::OVERLOADED => Some("wgmeshd is busy; try again in a moment"),
                problem_type::INTERNAL => Some("the daemon's log has the details"),
                problem_type::NOT_FOUND => Some(concat!(
                    "is wgmeshd older than this wgmeshctl (",
                    env!("CARGO_PKG_VERSION"),
                    ")? `wgmeshctl status` shows its version"
                )),
                _ if *write => Some("nothing was changed"),
                _ => None,
            },
            _ => None,
        }
    }

    /// The exit status this failure means: [`Exit::Unreachable`] when no answer came,
    /// [`Exit::Denied`] when the caller may not use the socket or make the change, else
    /// [`Exit::Failure`].
    pub fn exit(&self) -> Exit {
        match self {
            Self::Unreachable { source, .. }
                if source.kind() == io::ErrorKind::PermissionDenied =>
            {
                Exit::Denied
            }
            Self::Unreachable { .. }
            | Self::Timeout { .. }
            | Self::Http { .. }
            | Self::StreamEnded { .. } => Exit::Unreachable,
            Self::Problem { problem, .. } if problem.kind == problem_type::FORBIDDEN => {
                Exit::Denied
            }
            Self::Problem { .. } | Self::Unexpected { .. } => Exit::Failure,
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
            Self::Problem { problem, .. } => match &problem.detail {
                Some(detail) => write!(f, "wgmeshd: {}: {detail}", problem.title),
                None => write!(f, "wgmeshd: {}", problem.title),
            },
            Self::Unexpected { socket, what } => {
                write!(
                    f,
                    "unexpected answer from wgmeshd at {}: {what}",
                    socket.display()
                )
            }
            Self::StreamEnded { socket, cause } => {
                write!(
                    f,
                    "wgmeshd at {} ended the event stream (stopped or restarted?)",
                    socket.display()
                )?;
                match cause {
                    Some(cause) => write!(f, ": {cause}"),
                    None => Ok(()),
                }
            }
        }
    }
}

// No `source()`: Display already ends with the cause, and `{:#}` would print it twice.
impl std::error::Error for ClientError {}

/// A complete answer: status, content type and body.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    content_type: String,
    body: Bytes,
}

impl Answer {
    /// The problem document of an error answer, if it is one.
    fn problem(&self) -> Option<Problem> {
        if self.status.is_success() || !self.content_type.starts_with(PROBLEM_CONTENT_TYPE) {
            return None;
        }
        serde_json::from_slice(&self.body).ok()
    }
}

/// `GET path` on the daemon at `socket`; the JSON body of a 2xx answer.
///
/// # Errors
///
/// See [`ClientError`]; a problem document from the daemon becomes [`ClientError::Problem`].
pub async fn get_json(socket: &Path, path: &str) -> Result<serde_json::Value, ClientError> {
    let answer = exchange(socket, Method::GET, path, None).await?;
    json_of(socket, answer, false)
}

/// `POST path` on the daemon at `socket` with `body` as JSON (no body at all when `None`); the
/// JSON body of a 2xx answer.
///
/// # Errors
///
/// As [`get_json`].
pub async fn post_json(
    socket: &Path,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<serde_json::Value, ClientError> {
    let body = body
        .map(serde_json::to_vec)
        .transpose()
        .map_err(|e| ClientError::Unexpected {
            socket: socket.to_owned(),
            what: format!("cannot encode the request body: {e}"),
        })?;
    let answer = exchange(socket, Method::POST, path, body).await?;
    json_of(socket, answer, true)
}

/// `GET /v1/health`: the body as received and the [`Health`] it holds, for both answers the API
/// gives: 200 with the health, and 503 with a problem document of type
/// [`problem_type::UNHEALTHY`] that also carries the health's `healthy` and `reasons` members
/// (read as that health; a problem without them becomes one critical reason, its detail).
///
/// # Errors
///
/// As [`get_json`], also for a 503 that is neither (e.g. overloaded).
pub async fn get_health(socket: &Path) -> Result<(serde_json::Value, Health), ClientError> {
    let answer = exchange(socket, Method::GET, paths::HEALTH, None).await?;
    if answer.status == StatusCode::SERVICE_UNAVAILABLE {
        if let Some(problem) = answer.problem() {
            if problem.kind != problem_type::UNHEALTHY {
                return Err(ClientError::Problem {
                    problem,
                    write: false,
                });
            }
            if let Ok(found) = health_body(socket, &answer.body) {
                return Ok(found);
            }
            let health = Health {
                healthy: false,
                reasons: vec![HealthReason {
                    code: "unhealthy".to_owned(),
                    detail: problem.detail.unwrap_or(problem.title),
                    critical: true,
                }],
            };
            let body = serde_json::to_value(&health).map_err(|e| ClientError::Unexpected {
                socket: socket.to_owned(),
                what: format!("cannot encode health: {e}"),
            })?;
            return Ok((body, health));
        }
        // Otherwise the 503 carries the Health body itself.
        return health_body(socket, &answer.body);
    }
    let body = json_of(socket, answer, false)?;
    let health = health_of(&body).map_err(|e| ClientError::Unexpected {
        socket: socket.to_owned(),
        what: format!("GET {}: {e}", paths::HEALTH),
    })?;
    Ok((body, health))
}

fn health_body(socket: &Path, body: &[u8]) -> Result<(serde_json::Value, Health), ClientError> {
    let unexpected = |e: serde_json::Error| ClientError::Unexpected {
        socket: socket.to_owned(),
        what: format!("GET {}: HTTP 503 without a health body: {e}", paths::HEALTH),
    };
    let value: serde_json::Value = serde_json::from_slice(body).map_err(unexpected)?;
    let health = health_of(&value).map_err(unexpected)?;
    Ok((value, health))
}

/// The [`Health`] in a body: its fields at the top level, or under `health`.
fn health_of(body: &serde_json::Value) -> Result<Health, serde_json::Error> {
    match body.get("health") {
        Some(inner) if inner.is_object() => serde_json::from_value(inner.clone()),
        _ => serde_json::from_value(body.clone()),
    }
}

/// The API paths this client asks for, in one place.
pub(crate) mod paths {
    /// `GET`: the node.
    pub const STATUS: &str = "/v1/status";
    /// `GET`: the peers (`?state=`, `?via=`), and `/v1/peers/{key}` one peer.
    pub const PEERS: &str = "/v1/peers";
    /// `POST`: apply settings or re-read the reload file.
    pub const RELOAD: &str = "/v1/reload";
    /// `POST`: write the peer cache now.
    pub const CACHE_FLUSH: &str = "/v1/cache/flush";
    /// `GET`: 200 healthy, 503 not.
    pub const HEALTH: &str = "/v1/health";
    /// `GET`: the event stream.
    pub const EVENTS: &str = "/v1/events";
}

/// The body of a 2xx answer as JSON, or the error the answer stands for.
fn json_of(socket: &Path, answer: Answer, write: bool) -> Result<serde_json::Value, ClientError> {
    if !answer.status.is_success() {
        return Err(error_of(socket, &answer, write));
    }
    serde_json::from_slice(&answer.body).map_err(|e| ClientError::Unexpected {
        socket: socket.to_owned(),
        what: format!("body is not JSON: {e}"),
    })
}

/// The error a non-2xx answer stands for: its problem document, or an unexpected answer.
fn error_of(socket: &Path, answer: &Answer, write: bool) -> ClientError {
    match answer.problem() {
        Some(problem) => ClientError::Problem { problem, write },
        None => ClientError::Unexpected {
            socket: socket.to_owned(),
            what: format!("HTTP {}", answer.status),
        },
    }
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

/// A request sent on a fresh connection, with the answer's head received; the task driving the
/// connection is aborted when this is dropped.
struct Open {
    response: hyper::Response<Incoming>,
    driver: JoinHandle<()>,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Connects, sends `method path` (with `body` as JSON when there is one) and waits for the
/// answer's head.
async fn open(
    socket: &Path,
    method: Method,
    path: &str,
    accept: &str,
    body: Option<Vec<u8>>,
) -> Result<Open, ClientError> {
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
    // Aborted once the exchange is over (see `Open`); an error shows up on the request side.
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut request = Request::builder()
        .method(method.clone())
        .uri(path)
        .header(header::HOST, "localhost")
        .header(header::ACCEPT, accept);
    if body.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    let request = request
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| {
            driver.abort();
            ClientError::Unexpected {
                socket: socket.to_owned(),
                what: format!("cannot build request {method} {path}: {e}"),
            }
        })?;
    match sender.send_request(request).await {
        Ok(response) => Ok(Open { response, driver }),
        Err(e) => {
            driver.abort();
            Err(http_err(e))
        }
    }
}

/// One request on a fresh connection, bounded by [`TIMEOUT`]: status, content type, whole body.
async fn exchange(
    socket: &Path,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<Answer, ClientError> {
    let run = async {
        let mut open = open(socket, method, path, "application/json", body).await?;
        let status = open.response.status();
        let content_type = content_type(&open.response);
        let body = open
            .response
            .body_mut()
            .collect()
            .await
            .map_err(|source| ClientError::Http {
                socket: socket.to_owned(),
                source,
            })?
            .to_bytes();
        Ok(Answer {
            status,
            content_type,
            body,
        })
    };
    tokio::time::timeout(TIMEOUT, run)
        .await
        .map_err(|_| ClientError::Timeout {
            socket: socket.to_owned(),
        })?
}

fn content_type<B>(response: &hyper::Response<B>) -> String {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// `GET /v1/events`, followed line by line. Asks for NDJSON; a server-sent-events answer is read
/// too (its `data:` lines).
pub struct EventStream {
    socket: PathBuf,
    open: Open,
    sse: bool,
    buffer: Vec<u8>,
    ended: bool,
}

impl EventStream {
    /// Opens the stream: connects and waits (at most [`TIMEOUT`]) for the answer's head.
    ///
    /// # Errors
    ///
    /// As [`get_json`]; an error answer is read whole (it is short).
    pub async fn open(socket: &Path) -> Result<Self, ClientError> {
        let accept = "application/x-ndjson, text/event-stream;q=0.5";
        let opened = tokio::time::timeout(
            TIMEOUT,
            open(socket, Method::GET, paths::EVENTS, accept, None),
        )
        .await
        .map_err(|_| ClientError::Timeout {
            socket: socket.to_owned(),
        })??;
        let status = opened.response.status();
        let content_type = content_type(&opened.response);
        if !status.is_success() {
            let mut opened = opened;
            let collected =
                tokio::time::timeout(TIMEOUT, opened.response.body_mut().collect()).await;
            let body = match collected {
                Ok(Ok(body)) => body.to_bytes(),
                _ => Bytes::new(),
            };
            let answer = Answer {
                status,
                content_type,
                body,
            };
            return Err(error_of(socket, &answer, false));
        }
        Ok(Self {
            socket: socket.to_owned(),
            sse: content_type.starts_with("text/event-stream"),
            open: opened,
            buffer: Vec::new(),
            ended: false,
        })
    }

    /// The next event line (one JSON object, without its newline). The stream has no end of its
    /// own, so its end is an error.
    ///
    /// # Errors
    ///
    /// [`ClientError::StreamEnded`] when the stream ends or breaks; [`ClientError::Unexpected`]
    /// for a line over 1 MiB.
    pub async fn next_line(&mut self) -> Result<String, ClientError> {
        loop {
            if let Some(line) = self.take_line()? {
                return Ok(line);
            }
            if self.ended {
                return Err(ClientError::StreamEnded {
                    socket: self.socket.clone(),
                    cause: None,
                });
            }
            match self.open.response.body_mut().frame().await {
                None => {
                    self.ended = true;
                    // A last line without its newline still counts.
                    if !self.buffer.is_empty() {
                        self.buffer.push(b'\n');
                    }
                }
                Some(Err(e)) => {
                    return Err(ClientError::StreamEnded {
                        socket: self.socket.clone(),
                        cause: Some(e.to_string()),
                    });
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// A complete event line from the buffer, if there is one.
    fn take_line(&mut self) -> Result<Option<String>, ClientError> {
        if let Some(line) = take_event_line(&mut self.buffer, self.sse) {
            return Ok(Some(line));
        }
        if self.buffer.len() > MAX_EVENT_LINE {
            return Err(ClientError::Unexpected {
                socket: self.socket.clone(),
                what: format!("an event line is longer than {MAX_EVENT_LINE} bytes"),
            });
        }
        Ok(None)
    }
}

/// Takes the next event out of `buffer`: the next complete non-blank line (for server-sent
/// events, the next `data:` field; other fields and comments are skipped). Incomplete input
/// stays in the buffer.
fn take_event_line(buffer: &mut Vec<u8>, sse: bool) -> Option<String> {
    while let Some(end) = buffer.iter().position(|&b| b == b'\n') {
        let raw: Vec<u8> = buffer.drain(..=end).collect();
        let line = String::from_utf8_lossy(&raw);
        let line = line.trim_end_matches(['\n', '\r']);
        let line = if sse {
            match line.strip_prefix("data:") {
                Some(data) => data.strip_prefix(' ').unwrap_or(data),
                None => continue,
            }
        } else {
            line
        };
        if !line.trim().is_empty() {
            return Some(line.to_owned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_and_exit_statuses_match_the_cause() {
        let unreachable = |kind| ClientError::Unreachable {
            socket: PathBuf::from("/run/wgmesh/wgmeshd.sock"),
            source: io::Error::from(kind),
        };
        let table = [
            (
                io::ErrorKind::NotFound,
                "is wgmeshd running?",
                Exit::Unreachable,
            ),
            (
                io::ErrorKind::ConnectionRefused,
                "is wgmeshd running?",
                Exit::Unreachable,
            ),
            (
                io::ErrorKind::PermissionDenied,
                "member of the socket's group",
                Exit::Denied,
            ),
        ];
        for (kind, want, exit) in table {
            let err = unreachable(kind);
            assert!(err.hint().unwrap().contains(want), "{kind:?}");
            assert_eq!(err.exit(), exit, "{kind:?}");
            assert!(
                err.to_string()
                    .starts_with("cannot reach wgmeshd at /run/wgmesh/wgmeshd.sock: "),
                "{err}"
            );
        }
    }

    #[test]
    fn event_lines_from_ndjson_and_server_sent_events() {
        let all = |input: &str, sse| {
            let mut buffer = input.as_bytes().to_vec();
            let mut lines = Vec::new();
            while let Some(line) = take_event_line(&mut buffer, sse) {
                lines.push(line);
            }
            (lines, String::from_utf8(buffer).unwrap())
        };
        assert_eq!(
            all("{\"a\":1}\n\n{\"b\":2}\r\n{\"c\"", false),
            (
                vec!["{\"a\":1}".into(), "{\"b\":2}".into()],
                "{\"c\"".into()
            )
        );
        assert_eq!(
            all(
                ": keep-alive\nevent: peer_added\nid: 7\ndata: {\"a\":1}\n\ndata:{\"b\":2}\n\nda",
                true
            ),
            (vec!["{\"a\":1}".into(), "{\"b\":2}".into()], "da".into())
        );
    }

    #[test]
    fn problems_get_a_hint_by_type() {
        let problem = |kind: &str, write| ClientError::Problem {
            problem: Problem::new(kind, "Title", 400, Some("detail".into())),
            write,
        };
        let table = [
            (
                problem_type::NOT_FOUND,
                false,
                Some(concat!(
                    "is wgmeshd older than this wgmeshctl (",
                    env!("CARGO_PKG_VERSION"),
                    ")? `wgmeshctl status` shows its version"
                )),
                Exit::Failure,
            ),
            (
                problem_type::FORBIDDEN,
                true,
                Some(ACCESS_HINT),
                Exit::Denied,
            ),
            (
                problem_type::OVERLOADED,
                false,
                Some("wgmeshd is busy; try again in a moment"),
                Exit::Failure,
            ),
            (
                problem_type::BAD_REQUEST,
                true,
                Some("nothing was changed"),
                Exit::Failure,
            ),
            (problem_type::BAD_REQUEST, false, None, Exit::Failure),
            (
                problem_type::FAILED,
                true,
                Some("nothing was changed"),
                Exit::Failure,
            ),
        ];
        for (kind, write, hint, exit) in table {
            let err = problem(kind, write);
            assert_eq!(err.hint(), hint, "{kind} write={write}");
            assert_eq!(err.exit(), exit, "{kind}");
            assert_eq!(err.to_string(), "wgmeshd: Title: detail");
        }
    }
}
