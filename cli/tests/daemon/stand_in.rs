//! TEMPORARY CONTRACT STAND-IN: the API routes that are being added to `wgmeshd` in parallel
//! (issue 8), written from the contract in `wgmesh-api-types` so that wgmeshctl's side can be
//! tested now. Everything else falls through to the daemon's real router.
//!
//! **After the merge, delete this file and make `Daemon::contract` serve the real router**: the
//! tests then run against the real routes unchanged (they publish snapshots and events through
//! `ApiState` and answer `ControlRequest`s, exactly as here).
//!
//! What the contract says and this follows: `GET /v1/peers?state=&via=` filters; `GET
//! /v1/peers/{key}` takes the key percent-encoded or URL-safe, 404 when unknown; `POST
//! /v1/reload` takes a `ReloadRequest` (an empty body re-reads the reload file) and answers a
//! `ReloadResponse`, 400 naming the field; `POST /v1/cache/flush`; `GET /v1/health` 200 or 503
//! with the `Health` body; `GET /v1/events` NDJSON `Event` lines, a `lagged` event when the
//! follower fell behind; every error a problem document.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tokio::net::UnixListener;
use tokio::sync::{broadcast, oneshot};
use tokio_util::sync::CancellationToken;
use wgmesh_api_types::{
    Event, EventKind, PROBLEM_CONTENT_TYPE, Problem, ReloadRequest, SCHEMA_VERSION, problem_type,
};
use wgmeshd::api::{ApiState, ControlError, ControlRequest};

#[derive(Clone)]
struct StandIn {
    api: ApiState,
    stop: CancellationToken,
}

/// Serves the stand-in in front of the real router on `listener` until `stop`; event streams
/// end cleanly then, as a daemon's do when it shuts down.
pub async fn serve(
    listener: UnixListener,
    api: ApiState,
    stop: CancellationToken,
) -> Result<(), String> {
    let app = Router::new()
        .route("/v1/peers", get(peers))
        .route("/v1/peers/{key}", get(peer))
        .route("/v1/reload", post(reload))
        .route("/v1/cache/flush", post(flush))
        .route("/v1/health", get(health))
        .route("/v1/events", get(events))
        .with_state(StandIn {
            api: api.clone(),
            stop: stop.clone(),
        })
        .fallback_service(wgmeshd::api::router(api));
    let server = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .map_err(|_| "the stand-in did not stop within 10 s".to_owned())?
        .map_err(|e| e.to_string())
}

fn problem(status: StatusCode, kind: &str, detail: String) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    let body = Problem::new(kind, title, status.as_u16(), Some(detail));
    (
        status,
        [(header::CONTENT_TYPE, PROBLEM_CONTENT_TYPE)],
        serde_json::to_vec(&body).unwrap_or_default(),
    )
        .into_response()
}

fn json(status: StatusCode, body: &impl serde::Serialize) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(body).unwrap_or_default(),
    )
        .into_response()
}

#[derive(Deserialize)]
struct Filters {
    state: Option<String>,
    via: Option<String>,
}

async fn peers(State(s): State<StandIn>, Query(f): Query<Filters>) -> Response {
    const STATES: [&str; 4] = ["active", "cached", "quarantined", "dead"];
    if let Some(state) = f.state.as_deref().filter(|st| !STATES.contains(st)) {
        return problem(
            StatusCode::BAD_REQUEST,
            problem_type::BAD_REQUEST,
            format!(
                "state: unknown state {state:?} (expected active, cached, quarantined or dead)"
            ),
        );
    }
    let mut list = s.api.peers.borrow().clone();
    list.peers.retain(|p| {
        f.state.as_ref().is_none_or(|st| p.state == *st)
            && f.via
                .as_deref()
                .is_none_or(|via| p.endpoint_method.as_deref().unwrap_or("none") == via)
    });
    json(StatusCode::OK, &list)
}

async fn peer(State(s): State<StandIn>, Path(key): Path<String>) -> Response {
    // `Path` has percent-decoded it; a URL-safe key is turned back into standard base64.
    let key = key.replace('-', "+").replace('_', "/");
    let found = s
        .api
        .peers
        .borrow()
        .peers
        .iter()
        .find(|p| p.public_key == key)
        .cloned();
    let Some(peer) = found else {
        return problem(
            StatusCode::NOT_FOUND,
            problem_type::NOT_FOUND,
            format!("no peer with key {key}"),
        );
    };
    let mut body = serde_json::Map::new();
    body.insert("schema_version".into(), SCHEMA_VERSION.into());
    if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(peer) {
        body.extend(fields);
    }
    json(StatusCode::OK, &body)
}

async fn reload(State(s): State<StandIn>, headers: HeaderMap, body: Bytes) -> Response {
    let request = if body.is_empty() {
        ReloadRequest::default()
    } else {
        let json_body = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !json_body {
            return problem(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                problem_type::UNSUPPORTED_MEDIA_TYPE,
                "the body must be application/json".into(),
            );
        }
        match serde_json::from_slice(&body) {
            Ok(request) => request,
            Err(e) => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    problem_type::BAD_REQUEST,
                    format!("body: {e}"),
                );
            }
        }
    };
    let (reply, answer) = oneshot::channel();
    ask(&s, ControlRequest::Reload { request, reply }, answer).await
}

async fn flush(State(s): State<StandIn>) -> Response {
    let (reply, answer) = oneshot::channel();
    ask(&s, ControlRequest::FlushCache { reply }, answer).await
}

/// Hands `request` to the daemon's control task and turns its answer into a response.
async fn ask<T: serde::Serialize>(
    s: &StandIn,
    request: ControlRequest,
    answer: oneshot::Receiver<Result<T, ControlError>>,
) -> Response {
    if s.api.control.try_send(request).is_err() {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            problem_type::OVERLOADED,
            "too many changes waiting; retry later".into(),
        );
    }
    match answer.await {
        Ok(Ok(body)) => json(StatusCode::OK, &body),
        Ok(Err(e @ ControlError::Invalid { .. })) => problem(
            StatusCode::BAD_REQUEST,
            problem_type::BAD_REQUEST,
            e.to_string(),
        ),
        Ok(Err(ControlError::Failed(detail))) => problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            problem_type::FAILED,
            detail,
        ),
        Err(_) => problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            problem_type::INTERNAL,
            "internal error; see the daemon log".into(),
        ),
    }
}

async fn health(State(s): State<StandIn>) -> Response {
    let health = s.api.status.borrow().health.clone();
    let status = if health.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(status, &health)
}

async fn events(State(s): State<StandIn>) -> Response {
    let receiver = s.api.events.subscribe();
    let lines = futures_util::stream::unfold(
        (receiver, s.stop.clone()),
        |(mut receiver, stop)| async move {
            let event = tokio::select! {
                () = stop.cancelled() => return None,
                received = receiver.recv() => match received {
                    Ok(event) => event,
                    Err(broadcast::error::RecvError::Lagged(missed)) => Event {
                        schema_version: SCHEMA_VERSION,
                        seq: 0,
                        unix_ms: 0,
                        kind: EventKind::Lagged { missed },
                    },
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            };
            let mut line = serde_json::to_vec(&event).unwrap_or_default();
            line.push(b'\n');
            Some((Ok::<_, Infallible>(Bytes::from(line)), (receiver, stop)))
        },
    );
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response()
}
