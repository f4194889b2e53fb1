//! `GET /metrics` (Prometheus text format 0.0.4), the layer that counts every API request by route
//! and status, and the optional TCP listener that serves `/metrics` alone
//! (`wgmeshd join --metrics-listen ADDR`).
//!
//! On the unix socket `/metrics` is one more read route, open to whoever may connect. On TCP it is
//! the only route (everything else is a 404 problem), so turning the listener on never exposes
//! the control API; what it shows is counts and timings, never a key or an address. The TCP side
//! has its own small bounds: [`MAX_METRICS_CONNECTIONS`] connections at once (more are closed at
//! once), the request-head timeout of the control API, and the same per-request limits.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;
use tracing::Instrument as _;

use super::{ApiState, HEADER_READ_TIMEOUT, limits, problem};
use crate::metrics::{CONTENT_TYPE, Metrics, UNMATCHED_ROUTE, render};

/// Connections the TCP metrics listener holds at once; a scraper needs one.
pub const MAX_METRICS_CONNECTIONS: usize = 8;
/// How long connections still open at shutdown may take to finish their request.
const METRICS_DRAIN: Duration = Duration::from_secs(1);
/// Pause after a failed `accept(2)` (out of file descriptors, …) before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);
/// Request-head buffer cap (a scrape's head is a few hundred bytes).
const MAX_BUF_BYTES: usize = 16 * 1024;

/// The routes this module serves.
pub(super) fn routes() -> Router<ApiState> {
    Router::new().route("/metrics", get(get_metrics))
}

/// The exposition of a fresh snapshot's gauges and the counters now.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "node",
    responses(
        (status = 200, description = "Prometheus text exposition format 0.0.4: peers by state and by discovery method, reconcile runs and durations, discovery events per layer, API requests by route and status, task restarts. Also on TCP with `wgmeshd join --metrics-listen ADDR`.", body = String, content_type = "text/plain"),
    )
)]
pub(super) async fn get_metrics(State(state): State<ApiState>) -> Response {
    let snapshot = state.snapshots.fresh().await;
    let body = render(&snapshot.status, &state.metrics.values());
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
}

/// Wraps every route of `router` (fallbacks included) in the layer that counts requests by
/// route template (`unmatched` for a 404 without route) and status, into `metrics`.
pub(super) fn count_requests(router: Router, metrics: Arc<Metrics>) -> Router {
    router.layer(middleware::from_fn_with_state(metrics, count))
}

async fn count(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED_ROUTE.to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    metrics.api_request(&route, response.status().as_u16());
    response
}

/// `/metrics` alone, with the API's problem fallbacks, limits and request counting.
fn metrics_router(state: ApiState) -> Router {
    let metrics = state.metrics.clone();
    let routes = routes()
        .method_not_allowed_fallback(problem::method_not_allowed)
        .fallback(problem::not_found)
        .with_state(state);
    count_requests(limits::apply(routes), metrics)
}

/// A bound TCP listener for `/metrics`. Bound at start-up, so a busy address stops the daemon
/// with a clear message before it touches any device.
#[derive(Debug)]
pub struct MetricsListener {
    listener: TcpListener,
    addr: SocketAddr,
}

/// The metrics address could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {addr}: {reason}")]
pub struct MetricsBindError {
    /// The address asked for.
    pub addr: SocketAddr,
    reason: String,
    /// What failed.
    #[source]
    pub source: io::Error,
}

impl MetricsListener {
    /// Binds `addr` (TCP).
    ///
    /// # Errors
    ///
    /// [`MetricsBindError`] naming the address; a busy one says so and what to do.
    pub async fn bind(addr: SocketAddr) -> Result<Self, MetricsBindError> {
        match TcpListener::bind(addr).await {
            Ok(listener) => {
                // Port 0 asks the kernel for one; report the real one.
                let addr = listener.local_addr().unwrap_or(addr);
                Ok(Self { listener, addr })
            }
            Err(source) => {
                let reason = match source.kind() {
                    io::ErrorKind::AddrInUse => format!(
                        "the address is already in use (another program, or another wgmeshd, listens on it); choose another --metrics-listen address ({source})"
                    ),
                    io::ErrorKind::AddrNotAvailable => format!(
                        "no interface of this host has that address; use one of its addresses, 127.0.0.1 or 0.0.0.0 ({source})"
                    ),
                    _ => source.to_string(),
                };
                Err(MetricsBindError {
                    addr,
                    reason,
                    source,
                })
            }
        }
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Serves `GET /metrics` of `state` on `listener` until `shutdown` is cancelled; then gives the
/// connections still open a second to finish and closes them. Failed accepts are logged
/// and retried after a pause; the listener stays usable, so the task can be restarted with it.
pub async fn serve_metrics(
    listener: Arc<MetricsListener>,
    state: ApiState,
    shutdown: CancellationToken,
) {
    let app = metrics_router(state);
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_BUF_BYTES);
    let addr = listener.local_addr();
    tracing::info!(%addr, "serving Prometheus metrics at http://{addr}/metrics");
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%addr, %error, "cannot accept a metrics connection; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        while connections.try_join_next().is_some() {}
        if connections.len() >= MAX_METRICS_CONNECTIONS {
            tracing::debug!(%peer, "metrics connection closed: too many open");
            continue;
        }
        let app = app.clone();
        let service = service_fn(move |request: hyper::Request<Incoming>| {
            // The router's error type is `Infallible`.
            app.clone().oneshot(request)
        });
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let stop = shutdown.clone();
        connections.spawn(
            async move {
                let mut connection = std::pin::pin!(connection);
                let result = tokio::select! {
                    result = connection.as_mut() => result,
                    () = stop.cancelled() => {
                        connection.as_mut().graceful_shutdown();
                        connection.await
                    }
                };
                if let Err(error) = result {
                    tracing::debug!(%error, "metrics connection ended with an error");
                }
            }
            .instrument(tracing::debug_span!("metrics_connection", %peer)),
        );
    }
    let drained = tokio::time::timeout(METRICS_DRAIN, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.shutdown().await;
    }
    tracing::info!(%addr, "metrics listener stopped");
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    use axum::body::Body;
    use axum::http::{Method, StatusCode};
    use http_body_util::BodyExt as _;
    use tokio::sync::watch;
    use wgmesh_api_types::{PeerCounts, PeerList, Status};

    use super::*;
    use crate::metrics::parse::{counters_decreased, parse};

    fn state() -> ApiState {
        let status = Status {
            version: "0.1.0".into(),
            peers: PeerCounts {
                total: 2,
                active: 2,
                ..PeerCounts::default()
            },
            ..Status::default()
        };
        let (_, status) = watch::channel(status);
        let (_, peers) = watch::channel(PeerList::default());
        ApiState::new(status, peers).0
    }

    async fn send(app: Router, method: Method, path: &str) -> (StatusCode, String, String) {
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        let code = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (
            code,
            content_type,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn metrics_on_the_socket_parse_and_count_every_request() {
        let state = state();
        let app = super::super::router(state.clone());
        let (code, ct, first) = send(app.clone(), Method::GET, "/metrics").await;
        assert_eq!((code, ct.as_str()), (StatusCode::OK, CONTENT_TYPE));
        let first = parse(&first).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(first.value("wgmesh_active_peers", &[]), Some(2.0));
        // (method, path, route label, status)
        let table = [
            (Method::GET, "/v1/status", "/v1/status", 200),
            (Method::GET, "/v1/peers", "/v1/peers", 200),
            (Method::POST, "/v1/peers", "/v1/peers", 405),
            (Method::GET, "/v1/nope", UNMATCHED_ROUTE, 404),
            (Method::GET, "/v1/nope/again", UNMATCHED_ROUTE, 404),
        ];
        for (method, path, _, status) in &table {
            let (code, _, _) = send(app.clone(), method.clone(), path).await;
            assert_eq!(code.as_u16(), *status, "{method} {path}");
        }
        let (_, _, second) = send(app.clone(), Method::GET, "/metrics").await;
        let second = parse(&second).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(counters_decreased(&first, &second), Vec::<String>::new());
        for (_, _, route, status) in &table {
            let want = if *route == UNMATCHED_ROUTE { 2.0 } else { 1.0 };
            let code = status.to_string();
            assert_eq!(
                second.value(
                    "wgmesh_api_requests_total",
                    &[("route", route), ("status", &code)]
                ),
                Some(want),
                "{route} {status}"
            );
        }
        // The first scrape itself was counted once it was answered.
        assert_eq!(
            second.value(
                "wgmesh_api_requests_total",
                &[("route", "/metrics"), ("status", "200")]
            ),
            Some(1.0)
        );
    }

    /// `GET path` over TCP on a connection of its own: (status line, body).
    fn tcp_get(addr: SocketAddr, path: &str) -> (String, String) {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        (head.lines().next().unwrap().to_owned(), body.to_owned())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_tcp_listener_serves_metrics_and_nothing_else() {
        let listener = MetricsListener::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = listener.local_addr();
        assert_ne!(addr.port(), 0);
        let cancel = CancellationToken::new();
        let server = tokio::spawn(serve_metrics(Arc::new(listener), state(), cancel.clone()));
        let (line, body) = tokio::task::spawn_blocking(move || tcp_get(addr, "/metrics"))
            .await
            .unwrap();
        assert_eq!(line, "HTTP/1.1 200 OK");
        parse(&body).unwrap();
        for path in ["/v1/status", "/v1/peers", "/"] {
            let (line, body) = tokio::task::spawn_blocking(move || tcp_get(addr, path))
                .await
                .unwrap();
            assert_eq!(line, "HTTP/1.1 404 Not Found", "{path}");
            assert!(body.contains("urn:wgmesh:problem:not-found"), "{body}");
        }
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the listener stops")
            .unwrap();
    }

    #[tokio::test]
    async fn a_busy_address_is_a_clear_error() {
        let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = busy.local_addr().unwrap();
        let err = MetricsListener::bind(addr).await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "cannot serve metrics on {addr}: the address is already in use"
            )),
            "{text}"
        );
        assert!(text.contains("--metrics-listen"), "{text}");
    }
}
