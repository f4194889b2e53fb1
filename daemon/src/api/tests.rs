//! The router through `oneshot`: routes, fallbacks and limits, without a socket.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use axum::routing::get;
use http_body_util::BodyExt as _;
use tokio::sync::watch;
use tower::ServiceExt as _;
use wgmesh_api_types::{
    PROBLEM_CONTENT_TYPE, Peer, PeerCounts, PeerList, Problem, SCHEMA_VERSION, Status, problem_type,
};

use super::*;

fn status(uptime: u64) -> Status {
    Status {
        schema_version: SCHEMA_VERSION,
        version: "0.1.0".into(),
        interface: "wg0".into(),
        public_key: "pk".into(),
        mesh_ip: "10.1.2.3".into(),
        mesh_ipv6: "fd00::1".into(),
        mesh_subnet: "10.1.0.0/16".into(),
        network_id: "0011223344556677".into(),
        listen_port: 51820,
        wg_backend: "userspace".into(),
        wg_backend_reason: "no kernel module".into(),
        uptime_seconds: uptime,
        peers: PeerCounts {
            total: 1,
            active: 1,
            ..PeerCounts::default()
        },
        ..Status::default()
    }
}

fn peers() -> PeerList {
    PeerList {
        schema_version: SCHEMA_VERSION,
        peers: vec![Peer {
            public_key: "k1".into(),
            hostname: "alpha".into(),
            mesh_ip: Some("10.1.2.4".into()),
            mesh_ipv6: None,
            endpoint: Some("192.0.2.1:51820".into()),
            endpoint_method: Some("lan".into()),
            discovered_via: vec!["lan".into()],
            introducer: false,
            nat_type: None,
            routable_networks: vec![],
            last_seen_seconds_ago: 3,
            state: "active".into(),
            last_handshake_seconds_ago: None,
            rx_bytes: 0,
            tx_bytes: 0,
            routes_refused: vec![],
            path: Some("lan".into()),
            relay_via: None,
            expected_mesh_ip: None,
            health: "online".into(),
            reasons: vec![],
            probe_failures: 0,
            latency_ms: Some(0.4),
        }],
    }
}

struct Published {
    status: watch::Sender<Status>,
    _peers: watch::Sender<PeerList>,
    state: ApiState,
}

fn published() -> Published {
    let (status_tx, status) = watch::channel(status(5));
    let (peers_tx, peers) = watch::channel(peers());
    Published {
        status: status_tx,
        _peers: peers_tx,
        state: ApiState::new(status, peers).0,
    }
}

async fn send(app: axum::Router, method: Method, path: &str) -> (StatusCode, String, Vec<u8>) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .body(Body::empty())
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, content_type, body.to_vec())
}

#[tokio::test]
async fn reads_return_the_published_snapshots() {
    let p = published();
    let (code, ct, body) = send(router(p.state.clone()), Method::GET, "/v1/status").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(ct, "application/json");
    assert_eq!(serde_json::from_slice::<Status>(&body).unwrap(), status(5));

    let (code, ct, body) = send(router(p.state.clone()), Method::GET, "/v1/peers").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(ct, "application/json");
    assert_eq!(serde_json::from_slice::<PeerList>(&body).unwrap(), peers());
}

#[tokio::test]
async fn the_next_request_sees_a_newly_published_snapshot() {
    let p = published();
    let app = router(p.state.clone());
    p.status.send(status(99)).unwrap();
    let (code, _, body) = send(app, Method::GET, "/v1/status").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<Status>(&body)
            .unwrap()
            .uptime_seconds,
        99
    );
}

#[tokio::test]
async fn errors_are_problems_with_stable_types() {
    let p = published();
    // (method, path, status, problem type)
    let table = [
        (
            Method::GET,
            "/v1/nope",
            StatusCode::NOT_FOUND,
            problem_type::NOT_FOUND,
        ),
        (
            Method::GET,
            "/",
            StatusCode::NOT_FOUND,
            problem_type::NOT_FOUND,
        ),
        (
            Method::GET,
            "/v2/status",
            StatusCode::NOT_FOUND,
            problem_type::NOT_FOUND,
        ),
        (
            Method::POST,
            "/v1/nope",
            StatusCode::NOT_FOUND,
            problem_type::NOT_FOUND,
        ),
        (
            Method::POST,
            "/v1/status",
            StatusCode::METHOD_NOT_ALLOWED,
            problem_type::METHOD_NOT_ALLOWED,
        ),
        (
            Method::DELETE,
            "/v1/peers",
            StatusCode::METHOD_NOT_ALLOWED,
            problem_type::METHOD_NOT_ALLOWED,
        ),
    ];
    for (method, path, want_code, want_type) in table {
        let (code, ct, body) = send(router(p.state.clone()), method.clone(), path).await;
        assert_eq!(code, want_code, "{method} {path}");
        assert_eq!(ct, PROBLEM_CONTENT_TYPE, "{method} {path}");
        let problem: Problem = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem.kind, want_type, "{method} {path}");
        assert_eq!(problem.status, want_code.as_u16());
        assert_eq!(problem.schema_version, SCHEMA_VERSION);
        assert!(problem.detail.unwrap().contains(path), "{method} {path}");
    }
}

#[tokio::test]
async fn method_not_allowed_names_the_allowed_methods() {
    let p = published();
    let request = Request::post("/v1/status").body(Body::empty()).unwrap();
    let response = router(p.state).oneshot(request).await.unwrap();
    assert_eq!(response.headers()[header::ALLOW], "GET,HEAD");
}

#[tokio::test]
async fn declared_oversized_body_is_413_problem() {
    let p = published();
    let request = Request::get("/v1/status")
        .header(header::CONTENT_LENGTH, limits::MAX_BODY_BYTES + 1)
        .body(Body::from(vec![b'x'; limits::MAX_BODY_BYTES + 1]))
        .unwrap();
    let response = router(p.state).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let problem: Problem = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem.kind, problem_type::PAYLOAD_TOO_LARGE);
}

#[tokio::test(start_paused = true)]
async fn slow_request_times_out_with_408_problem() {
    let slow = axum::Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            "late"
        }),
    );
    let (code, ct, body) = send(limits::apply(slow), Method::GET, "/slow").await;
    assert_eq!(code, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(ct, PROBLEM_CONTENT_TYPE);
    let problem: Problem = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem.kind, problem_type::TIMEOUT);
}

#[tokio::test]
async fn layer_errors_map_to_problems() {
    use axum::response::IntoResponse as _;
    // (error, status, problem type)
    let table: [(tower::BoxError, StatusCode, &str); 3] = [
        (
            Box::new(tower::timeout::error::Elapsed::new()),
            StatusCode::REQUEST_TIMEOUT,
            problem_type::TIMEOUT,
        ),
        (
            Box::new(tower::load_shed::error::Overloaded::new()),
            StatusCode::SERVICE_UNAVAILABLE,
            problem_type::OVERLOADED,
        ),
        (
            "secret internal detail".into(),
            StatusCode::INTERNAL_SERVER_ERROR,
            problem_type::INTERNAL,
        ),
    ];
    for (err, want_code, want_type) in table {
        let response = limits::layer_error(err).await.into_response();
        assert_eq!(response.status(), want_code);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let problem: Problem = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem.kind, want_type);
        assert!(!problem.detail.unwrap_or_default().contains("secret"));
    }
}
