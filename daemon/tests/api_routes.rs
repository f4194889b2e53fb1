//! The API router through `oneshot`, as a table: (method, path, caller, headers, body) →
//! (status, problem type), with the caller's credentials given as `MockConnectInfo` and a fake
//! `control` task answering the write requests. Every answer is also checked against the OpenAPI
//! document, so what the handlers do and what the document says cannot drift apart.
#![cfg(feature = "runtime")]

#[path = "support/openapi.rs"]
mod openapi;

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tower::ServiceExt as _;
use wgmesh_api_types::{
    CacheFlushResponse, Change, Event, EventKind, Health, HealthReason, PROBLEM_CONTENT_TYPE, Peer,
    PeerCounts, PeerList, Problem, ReloadChanges, ReloadResponse, ReloadSource, SCHEMA_VERSION,
    Status, problem_type,
};
use wgmeshd::api::{
    ApiState, CONTROL_QUEUE, ControlError, ControlRequest, MAX_EVENT_STREAMS_PER_UID, PeerCred,
    WritePolicy, router_with,
};

use openapi::Spec;

/// The socket group of these tests.
const GROUP: u32 = 998;

/// Keys whose standard base64 holds `+` and `/` (so every spelling differs).
fn key(n: u8) -> String {
    use base64::Engine as _;
    let mut bytes = [0xfb_u8; 32];
    bytes[1] = 0xff;
    bytes[31] = n;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn peer(n: u8, mesh_ip: &str, state: &str, via: Option<&str>) -> Peer {
    Peer {
        public_key: key(n),
        hostname: format!("host{n}"),
        mesh_ip: Some(mesh_ip.into()),
        mesh_ipv6: None,
        endpoint: via.map(|_| format!("192.0.2.{n}:51820")),
        endpoint_method: via.map(str::to_owned),
        discovered_via: via.map(str::to_owned).into_iter().collect(),
        introducer: n == 1,
        nat_type: None,
        routable_networks: vec![],
        last_seen_seconds_ago: u64::from(n),
        state: state.into(),
        last_handshake_seconds_ago: n.is_multiple_of(2).then_some(5),
        rx_bytes: 10,
        tx_bytes: 20,
        routes_refused: vec![],
        path: via.map(|_| "direct".to_owned()),
        relay_via: None,
        expected_mesh_ip: None,
        ..Peer::default()
    }
}

fn peers() -> PeerList {
    PeerList {
        schema_version: SCHEMA_VERSION,
        peers: vec![
            peer(1, "10.1.0.1", "active", Some("lan")),
            peer(2, "10.1.0.2", "cached", Some("cache")),
            peer(3, "10.1.0.3", "active", Some("dht")),
            peer(4, "10.1.0.4", "dead", None),
            peer(5, "10.1.0.5", "active", Some("lan")),
        ],
    }
}

fn status(health: Health) -> Status {
    Status {
        schema_version: SCHEMA_VERSION,
        version: "0.1.0".into(),
        interface: "wg0".into(),
        public_key: key(0),
        mesh_ip: "10.1.0.9".into(),
        mesh_ipv6: "fd00::9".into(),
        mesh_subnet: "10.1.0.0/16".into(),
        network_id: "0011223344556677".into(),
        listen_port: 51820,
        wg_backend: "userspace".into(),
        wg_backend_reason: "test".into(),
        uptime_seconds: 3,
        log_level: "info".into(),
        peers: PeerCounts {
            total: 5,
            active: 3,
            ..PeerCounts::default()
        },
        health,
        ..Status::default()
    }
}

fn unhealthy() -> Health {
    Health {
        healthy: false,
        reasons: vec![
            HealthReason {
                code: "interface_down".into(),
                detail: "wg0 is down".into(),
                critical: true,
            },
            HealthReason {
                code: "layer_retrying".into(),
                detail: "lan: no interface".into(),
                critical: false,
            },
            HealthReason {
                code: "task_failed".into(),
                detail: "reconcile: device gone".into(),
                critical: true,
            },
        ],
    }
}

/// What a reload of log level `to` answers in the fake control task.
fn reloaded(source: ReloadSource, to: Option<&str>, dry_run: bool) -> ReloadResponse {
    ReloadResponse {
        schema_version: SCHEMA_VERSION,
        source,
        dry_run,
        applied: !dry_run && to.is_some(),
        changed: ReloadChanges {
            log_level: to.map(|to| Change {
                from: "info".into(),
                to: to.into(),
            }),
            advertise_routes: None,
        },
    }
}

/// A fake `control` task: a reload answers by its log level (`invalid` → invalid field, `fail`
/// → failed, `drop` → no answer, anything else → applied); a flush succeeds.
fn fake_control(mut requests: mpsc::Receiver<ControlRequest>) {
    tokio::spawn(async move {
        while let Some(request) = requests.recv().await {
            match request {
                ControlRequest::Reload { request, reply } => {
                    let answer = match request.log_level.as_deref() {
                        Some("invalid") => Err(ControlError::Invalid {
                            field: "log_level".into(),
                            detail: "unknown level \"invalid\"".into(),
                        }),
                        Some("fail") => Err(ControlError::Failed(
                            "cannot write /var/lib/wgmesh/wg0.reload".into(),
                        )),
                        Some("drop") => continue,
                        None => Ok(reloaded(ReloadSource::File, None, request.dry_run)),
                        level => Ok(reloaded(ReloadSource::Api, level, request.dry_run)),
                    };
                    let _ = reply.send(answer);
                }
                ControlRequest::FlushCache { reply } => {
                    let _ = reply.send(Ok(CacheFlushResponse {
                        schema_version: SCHEMA_VERSION,
                        path: "/var/lib/wgmesh/wg0-peers.json".into(),
                        peers: 5,
                    }));
                }
            }
        }
    });
}

/// Published snapshots (kept alive) and the state serving them.
struct Published {
    status: watch::Sender<Status>,
    _peers: watch::Sender<PeerList>,
    state: ApiState,
    requests: Option<mpsc::Receiver<ControlRequest>>,
}

fn published() -> Published {
    let (status_tx, status_rx) = watch::channel(status(Health::default()));
    let (peers_tx, peers_rx) = watch::channel(peers());
    let (state, requests) = ApiState::new(status_rx, peers_rx);
    Published {
        status: status_tx,
        _peers: peers_tx,
        state,
        requests: Some(requests),
    }
}

/// Published snapshots with the fake control task answering.
fn answering() -> Published {
    let mut p = published();
    if let Some(requests) = p.requests.take() {
        fake_control(requests);
    }
    p
}

/// One answer, read whole.
struct Answer {
    status: StatusCode,
    content_type: String,
    body: Vec<u8>,
    headers: axum::http::HeaderMap,
}

impl Answer {
    fn problem(&self) -> Problem {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not a problem ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// Sends a request through the router for a socket of group [`GROUP`], as `caller`.
async fn send(
    state: &ApiState,
    caller: Option<&PeerCred>,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Body,
) -> Answer {
    let mut app = router_with(state.clone(), WritePolicy::root_and_group(GROUP, "wgmesh"));
    if let Some(cred) = caller {
        app = app.layer(MockConnectInfo(cred.clone()));
    }
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = app.oneshot(request.body(body).unwrap()).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Answer {
        status,
        content_type,
        body,
        headers,
    }
}

/// Checks `answer` to `method uri` against the document: documented operations by their
/// responses, anything else (unknown path or method) as a problem.
fn conforms(spec: &Spec, method: &str, uri: &str, answer: &Answer) {
    let checked = spec.check(
        method,
        uri,
        answer.status.as_u16(),
        &answer.content_type,
        &answer.body,
    );
    match checked {
        Ok(()) => {}
        Err(e) if e.contains("matches no path") || e.contains("is not in the document") => {
            assert_eq!(answer.content_type, PROBLEM_CONTENT_TYPE, "{method} {uri}");
            let body: Value = serde_json::from_slice(&answer.body).unwrap();
            spec.validate_component("Problem", &body)
                .unwrap_or_else(|e| panic!("{method} {uri}: {e}"));
        }
        Err(e) => panic!("{method} {uri}: {e}"),
    }
}

fn root() -> PeerCred {
    PeerCred::new(0, 0)
}
fn member_by_supplementary_group() -> PeerCred {
    PeerCred::new(1000, 1000).with_groups([27, GROUP])
}
fn member_by_primary_group() -> PeerCred {
    PeerCred::new(1001, GROUP)
}
fn reader() -> PeerCred {
    PeerCred::new(65_534, 65_534).with_groups([100])
}

/// One row of the table.
struct Row {
    case: &'static str,
    method: &'static str,
    uri: String,
    caller: Option<PeerCred>,
    headers: Vec<(&'static str, &'static str)>,
    body: Vec<u8>,
    /// Status, and the problem type when it is an error.
    want: (u16, Option<&'static str>),
}

fn row(case: &'static str, method: &'static str, uri: impl Into<String>) -> Row {
    Row {
        case,
        method,
        uri: uri.into(),
        caller: Some(root()),
        headers: Vec::new(),
        body: Vec::new(),
        want: (200, None),
    }
}

impl Row {
    fn by(mut self, caller: Option<PeerCred>) -> Self {
        self.caller = caller;
        self
    }
    fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.push((name, value));
        self
    }
    fn json(self, body: &str) -> Self {
        self.header("content-type", "application/json").body(body)
    }
    fn body(mut self, body: &str) -> Self {
        self.body = body.as_bytes().to_vec();
        self
    }
    fn want(mut self, status: u16, problem: &'static str) -> Self {
        self.want = (status, Some(problem));
        self
    }
}

#[tokio::test]
async fn every_route_answers_as_documented_for_every_caller() {
    use problem_type::{
        BAD_REQUEST, FAILED, FORBIDDEN, INTERNAL, METHOD_NOT_ALLOWED, NOT_FOUND, PAYLOAD_TOO_LARGE,
        UNSUPPORTED_MEDIA_TYPE,
    };
    let p = answering();
    let spec = Spec::generated();
    let k1 = key(1);
    let url_safe = k1.replace('+', "-").replace('/', "_");
    let encoded = k1
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    let big = format!(r#"{{"log_level":"{}"}}"#, "x".repeat(70_000));
    let table = vec![
        // Reads: anyone who can connect, and a request without credentials.
        row("status", "GET", "/v1/status"),
        row("status, reader", "GET", "/v1/status").by(Some(reader())),
        row("status, no credentials", "GET", "/v1/status").by(None),
        row("health", "GET", "/v1/health").by(Some(reader())),
        row("peers", "GET", "/v1/peers").by(Some(reader())),
        row("peers by state", "GET", "/v1/peers?state=active").by(Some(reader())),
        row("peers by via", "GET", "/v1/peers?via=lan&state=active"),
        row("peers without endpoint", "GET", "/v1/peers?via=none"),
        row("peers, encoded value", "GET", "/v1/peers?state=%61ctive"),
        row("peers, bad state", "GET", "/v1/peers?state=alive").want(400, BAD_REQUEST),
        row("peers, bad via", "GET", "/v1/peers?via=smoke").want(400, BAD_REQUEST),
        row("peers, unknown parameter", "GET", "/v1/peers?sort=ip").want(400, BAD_REQUEST),
        row("peers, twice", "GET", "/v1/peers?state=dead&state=active").want(400, BAD_REQUEST),
        row("peer, url-safe key", "GET", format!("/v1/peers/{url_safe}")),
        row(
            "peer, unpadded",
            "GET",
            format!("/v1/peers/{}", url_safe.trim_end_matches('=')),
        ),
        row(
            "peer, percent-encoded",
            "GET",
            format!("/v1/peers/{encoded}"),
        )
        .by(Some(reader())),
        row("peer, raw slash", "GET", format!("/v1/peers/{k1}")),
        row(
            "peer, unknown",
            "GET",
            format!("/v1/peers/{}", key(9).replace('/', "%2F")),
        )
        .want(404, NOT_FOUND),
        row("peer, not base64", "GET", "/v1/peers/not-a-key!").want(400, BAD_REQUEST),
        row("peer, too short", "GET", "/v1/peers/AAAA").want(400, BAD_REQUEST),
        // Writes: root and the socket group's members, by primary or supplementary group.
        row("reload", "POST", "/v1/reload").json(r#"{"log_level":"debug"}"#),
        row("reload, supplementary member", "POST", "/v1/reload")
            .by(Some(member_by_supplementary_group()))
            .json(r#"{"log_level":"debug","dry_run":true}"#),
        row("reload, primary member", "POST", "/v1/reload")
            .by(Some(member_by_primary_group()))
            .json(r#"{"advertise_routes":[]}"#),
        row("reload, empty body: the file", "POST", "/v1/reload"),
        row("reload, empty body with a type", "POST", "/v1/reload").json(""),
        row("flush", "POST", "/v1/cache/flush"),
        row("flush, member", "POST", "/v1/cache/flush").by(Some(member_by_primary_group())),
        row("flush, any body", "POST", "/v1/cache/flush").body("ignored"),
        // Refused before the body is read: reader, no credentials, even with a bad body.
        row("reload, reader", "POST", "/v1/reload")
            .by(Some(reader()))
            .json(r#"{"log_level":"debug"}"#)
            .want(403, FORBIDDEN),
        row("reload, reader, bad body", "POST", "/v1/reload")
            .by(Some(reader()))
            .header("content-type", "text/plain")
            .body("{{{")
            .want(403, FORBIDDEN),
        row("reload, no credentials", "POST", "/v1/reload")
            .by(None)
            .want(403, FORBIDDEN),
        row("flush, reader", "POST", "/v1/cache/flush")
            .by(Some(reader()))
            .want(403, FORBIDDEN),
        row("flush, gid 0 is not root", "POST", "/v1/cache/flush")
            .by(Some(PeerCred::new(1000, 0)))
            .want(403, FORBIDDEN),
        // Bodies.
        row("reload, no type", "POST", "/v1/reload")
            .body(r#"{"log_level":"debug"}"#)
            .want(415, UNSUPPORTED_MEDIA_TYPE),
        row("reload, form", "POST", "/v1/reload")
            .header("content-type", "application/x-www-form-urlencoded")
            .body("log_level=debug")
            .want(415, UNSUPPORTED_MEDIA_TYPE),
        row("reload, not JSON", "POST", "/v1/reload")
            .json("{")
            .want(400, BAD_REQUEST),
        row("reload, unknown field", "POST", "/v1/reload")
            .json(r#"{"loglevel":"debug"}"#)
            .want(400, BAD_REQUEST),
        row("reload, wrong type", "POST", "/v1/reload")
            .json(r#"{"advertise_routes":"10.0.0.0/8"}"#)
            .want(400, BAD_REQUEST),
        row("reload, declared too large", "POST", "/v1/reload")
            .header("content-length", "70000")
            .json(&big)
            .want(413, PAYLOAD_TOO_LARGE),
        row("reload, streamed too large", "POST", "/v1/reload")
            .json(&big)
            .want(413, PAYLOAD_TOO_LARGE),
        // The daemon's answers.
        row("reload, invalid value", "POST", "/v1/reload")
            .json(r#"{"log_level":"invalid"}"#)
            .want(400, BAD_REQUEST),
        row("reload, failed", "POST", "/v1/reload")
            .json(r#"{"log_level":"fail"}"#)
            .want(500, FAILED),
        row("reload, never answered", "POST", "/v1/reload")
            .json(r#"{"log_level":"drop"}"#)
            .want(500, INTERNAL),
        // Origin: refused whoever calls, whatever the path.
        row("origin, read", "GET", "/v1/status")
            .header("origin", "http://localhost:8080")
            .want(403, FORBIDDEN),
        row("origin, write as root", "POST", "/v1/reload")
            .header("origin", "null")
            .json("{}")
            .want(403, FORBIDDEN),
        row("origin, unknown path", "GET", "/v1/nope")
            .header("origin", "https://example.org")
            .want(403, FORBIDDEN),
        // Paths and methods.
        row("unknown path", "GET", "/v1/nope").want(404, NOT_FOUND),
        row("unversioned", "GET", "/status").want(404, NOT_FOUND),
        row("peers, empty key", "GET", "/v1/peers/").want(404, NOT_FOUND),
        row("post to a read", "POST", "/v1/status").want(405, METHOD_NOT_ALLOWED),
        row("delete a peer", "DELETE", format!("/v1/peers/{url_safe}"))
            .want(405, METHOD_NOT_ALLOWED),
        row("get a write", "GET", "/v1/reload").want(405, METHOD_NOT_ALLOWED),
        // A method the write route does not serve is 405 for anyone: nothing runs, nothing is
        // read, so there is nothing to refuse.
        row("get a write, reader", "GET", "/v1/cache/flush")
            .by(Some(reader()))
            .want(405, METHOD_NOT_ALLOWED),
    ];
    for r in table {
        let answer = send(
            &p.state,
            r.caller.as_ref(),
            r.method,
            &r.uri,
            &r.headers,
            Body::from(r.body.clone()),
        )
        .await;
        let case = format!("{}: {} {}", r.case, r.method, r.uri);
        let body = String::from_utf8_lossy(&answer.body);
        assert_eq!(answer.status.as_u16(), r.want.0, "{case}: {body}");
        match r.want.1 {
            Some(kind) => {
                assert_eq!(answer.content_type, PROBLEM_CONTENT_TYPE, "{case}");
                let problem = answer.problem();
                assert_eq!(problem.kind, kind, "{case}: {body}");
                assert_eq!(problem.status, r.want.0, "{case}");
                assert_eq!(problem.schema_version, SCHEMA_VERSION, "{case}");
                assert!(problem.detail.is_some_and(|d| !d.is_empty()), "{case}");
            }
            None => assert_eq!(answer.content_type, "application/json", "{case}"),
        }
        conforms(&spec, r.method, &r.uri, &answer);
    }
}

#[tokio::test]
async fn error_details_name_the_field_parameter_or_who_may_write() {
    let p = answering();
    // (method, uri, caller, content type, body, text the detail holds)
    let table = [
        (
            "GET",
            "/v1/peers?state=alive",
            root(),
            None,
            "",
            "state: unknown value \"alive\"",
        ),
        (
            "GET",
            "/v1/peers?via=x",
            root(),
            None,
            "",
            "via: unknown value",
        ),
        (
            "GET",
            "/v1/peers?colour=red",
            root(),
            None,
            "",
            "\"colour\"",
        ),
        (
            "GET",
            "/v1/peers/AAAA",
            root(),
            None,
            "",
            "key: \"AAAA\" is 3 bytes long",
        ),
        (
            "POST",
            "/v1/reload",
            root(),
            Some("application/json"),
            r#"{"log_level":"debug","colour":1,"size":2}"#,
            "colour, size: unknown fields; expected advertise_routes, log_level, dry_run",
        ),
        (
            "POST",
            "/v1/reload",
            root(),
            Some("application/json"),
            r#"{"advertise_routes":["10.0.0.0/8",1]}"#,
            "advertise_routes[1]: invalid type",
        ),
        (
            "POST",
            "/v1/reload",
            root(),
            Some("application/json"),
            r#"{"log_level":"invalid"}"#,
            "log_level: unknown level \"invalid\"",
        ),
        (
            "POST",
            "/v1/reload",
            root(),
            Some("application/json"),
            r#"{"log_level":"fail"}"#,
            "cannot write /var/lib/wgmesh/wg0.reload",
        ),
        (
            "POST",
            "/v1/cache/flush",
            reader(),
            None,
            "",
            "uid 65534 may read but not change the daemon: root or members of group wgmesh (gid 998) only",
        ),
    ];
    for (method, uri, caller, content_type, body, want) in table {
        let headers: Vec<(&str, &str)> = content_type
            .map(|c| ("content-type", c))
            .into_iter()
            .collect();
        let answer = send(
            &p.state,
            Some(&caller),
            method,
            uri,
            &headers,
            Body::from(body),
        )
        .await;
        let detail = answer.problem().detail.unwrap_or_default();
        assert!(detail.contains(want), "{method} {uri}: {detail}");
    }
}

#[tokio::test]
async fn method_not_allowed_names_the_allowed_methods() {
    let p = answering();
    for (uri, allow) in [("/v1/reload", "POST"), ("/v1/health", "GET,HEAD")] {
        let answer = send(&p.state, Some(&root()), "PUT", uri, &[], Body::empty()).await;
        assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED, "{uri}");
        assert_eq!(answer.headers[header::ALLOW], allow, "{uri}");
    }
}

#[tokio::test]
async fn filters_keep_the_snapshot_order() {
    let p = answering();
    let spec = Spec::generated();
    // (query, the peers kept, by number)
    let table: [(&str, &[u8]); 6] = [
        ("", &[1, 2, 3, 4, 5]),
        ("?state=active", &[1, 3, 5]),
        ("?state=cached", &[2]),
        ("?via=lan", &[1, 5]),
        ("?via=none&state=dead", &[4]),
        ("?state=quarantined", &[]),
    ];
    for (query, want) in table {
        let uri = format!("/v1/peers{query}");
        let answer = send(&p.state, Some(&reader()), "GET", &uri, &[], Body::empty()).await;
        conforms(&spec, "GET", &uri, &answer);
        let list: PeerList = answer.json();
        let got: Vec<String> = list.peers.into_iter().map(|p| p.public_key).collect();
        let want: Vec<String> = want.iter().map(|n| key(*n)).collect();
        assert_eq!(got, want, "{query}");
    }
    let answer = send(
        &p.state,
        Some(&reader()),
        "GET",
        &format!("/v1/peers/{}", key(3).replace('/', "%2F")),
        &[],
        Body::empty(),
    )
    .await;
    let body = answer.json::<wgmesh_api_types::PeerResponse>();
    assert_eq!(body.schema_version, wgmesh_api_types::SCHEMA_VERSION);
    assert_eq!(body.peer, peer(3, "10.1.0.3", "active", Some("dht")));
}

#[tokio::test]
async fn health_is_200_with_warnings_or_503_problem_with_the_reasons() {
    let p = answering();
    let spec = Spec::generated();
    let warning = Health {
        healthy: true,
        reasons: vec![HealthReason {
            code: "layer_retrying".into(),
            detail: "lan: no interface".into(),
            critical: false,
        }],
    };
    p.status.send_replace(status(warning.clone()));
    let answer = send(
        &p.state,
        Some(&reader()),
        "GET",
        "/v1/health",
        &[],
        Body::empty(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    conforms(&spec, "GET", "/v1/health", &answer);
    assert_eq!(answer.json::<Health>(), warning);
    assert_eq!(answer.json::<Value>()["schema_version"], SCHEMA_VERSION);

    p.status.send_replace(status(unhealthy()));
    let answer = send(
        &p.state,
        Some(&reader()),
        "GET",
        "/v1/health",
        &[],
        Body::empty(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.content_type, PROBLEM_CONTENT_TYPE);
    conforms(&spec, "GET", "/v1/health", &answer);
    let problem = answer.problem();
    assert_eq!(problem.kind, problem_type::UNHEALTHY);
    assert_eq!(
        problem.detail.as_deref(),
        Some("interface_down: wg0 is down; task_failed: reconcile: device gone")
    );
    // The same body reads as the health, warnings included.
    assert_eq!(answer.json::<Health>(), unhealthy());
    // And the status snapshot says the same.
    let answer = send(
        &p.state,
        Some(&reader()),
        "GET",
        "/v1/status",
        &[],
        Body::empty(),
    )
    .await;
    assert_eq!(answer.json::<Status>().health, unhealthy());
}

#[tokio::test]
async fn writes_are_503_when_the_daemon_is_busy_and_500_when_it_is_gone() {
    let spec = Spec::generated();
    // Nobody answers: fill the queue, then one more is refused at once.
    let mut p = published();
    let requests = p.requests.take();
    for _ in 0..CONTROL_QUEUE {
        let (reply, _) = tokio::sync::oneshot::channel();
        p.state
            .control
            .try_send(ControlRequest::FlushCache { reply })
            .unwrap();
    }
    for uri in ["/v1/reload", "/v1/cache/flush"] {
        let answer = send(&p.state, Some(&root()), "POST", uri, &[], Body::empty()).await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{uri}");
        assert_eq!(answer.problem().kind, problem_type::OVERLOADED, "{uri}");
        conforms(&spec, "POST", uri, &answer);
    }
    // The control task is gone.
    drop(requests);
    for uri in ["/v1/reload", "/v1/cache/flush"] {
        let answer = send(&p.state, Some(&root()), "POST", uri, &[], Body::empty()).await;
        assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR, "{uri}");
        let problem = answer.problem();
        assert_eq!(problem.kind, problem_type::INTERNAL, "{uri}");
        assert!(
            !problem.detail.unwrap_or_default().contains("control"),
            "{uri}: no internals"
        );
        conforms(&spec, "POST", uri, &answer);
    }
}

fn event(seq: u64) -> Event {
    Event {
        schema_version: SCHEMA_VERSION,
        seq,
        unix_ms: 1_700_000_000_000,
        kind: EventKind::PeerState {
            public_key: key(1),
            from: "cached".into(),
            to: "active".into(),
        },
    }
}

/// Opens `GET /v1/events` as `caller` with `accept`; the response head and its body.
async fn open_events(
    state: &ApiState,
    caller: &PeerCred,
    accept: Option<&str>,
) -> axum::response::Response {
    let app =
        router_with(state.clone(), WritePolicy::root_only()).layer(MockConnectInfo(caller.clone()));
    let mut request = Request::get("/v1/events");
    if let Some(accept) = accept {
        request = request.header(header::ACCEPT, accept);
    }
    app.oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn events_stream_as_ndjson_or_sse_as_documented() {
    let p = answering();
    let spec = Spec::generated();
    // (Accept, content type, frame of event 1)
    let json = serde_json::to_string(&event(1)).unwrap();
    let table = [
        (None, "application/x-ndjson", format!("{json}\n")),
        (
            Some("text/event-stream"),
            "text/event-stream",
            format!("id: 1\ndata: {json}\n\n"),
        ),
    ];
    for (accept, content_type, frame) in table {
        let response = open_events(&p.state, &reader(), accept).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], content_type);
        let mut body = response.into_body();
        // Subscribed when the handler ran: what is sent now arrives.
        p.state.events.send(event(1)).unwrap();
        let chunk = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(String::from_utf8_lossy(&chunk), frame, "{accept:?}");
        spec.check("GET", "/v1/events", 200, content_type, &chunk)
            .unwrap_or_else(|e| panic!("{accept:?}: {e}"));
    }
}

#[tokio::test]
async fn event_streams_are_capped_per_uid_with_a_documented_503() {
    let p = answering();
    let spec = Spec::generated();
    let mut open = Vec::new();
    for _ in 0..MAX_EVENT_STREAMS_PER_UID {
        let response = open_events(&p.state, &reader(), None).await;
        assert_eq!(response.status(), StatusCode::OK);
        open.push(response);
    }
    let refused = open_events(&p.state, &reader(), None).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = refused.into_body().collect().await.unwrap().to_bytes();
    spec.check("GET", "/v1/events", 503, PROBLEM_CONTENT_TYPE, &body)
        .unwrap();
    // Another uid still gets one; closing one of the first uid's streams makes room again.
    assert_eq!(
        open_events(&p.state, &root(), None).await.status(),
        StatusCode::OK
    );
    drop(open.pop());
    assert_eq!(
        open_events(&p.state, &reader(), None).await.status(),
        StatusCode::OK
    );
}

#[test]
fn the_validator_knows_every_keyword_of_the_document() {
    assert_eq!(Spec::generated().unknown_keywords(), Vec::<String>::new());
}

#[test]
fn the_validator_refuses_what_the_document_does_not_allow() {
    let spec = Spec::generated();
    let ok_problem = json!({"type": "t", "title": "T", "status": 400, "schema_version": 1});
    let ok_event = serde_json::to_value(event(3)).unwrap();
    // (case, component, value, valid)
    let table = [
        ("problem", "Problem", ok_problem.clone(), true),
        (
            "problem with detail",
            "Problem",
            json!({"type": "t", "title": "T", "status": 400, "detail": "d", "schema_version": 1}),
            true,
        ),
        (
            "problem without type",
            "Problem",
            json!({"title": "T", "status": 400, "schema_version": 1}),
            false,
        ),
        (
            "negative status",
            "Problem",
            json!({"type": "t", "title": "T", "status": -1, "schema_version": 1}),
            false,
        ),
        (
            "string status",
            "Problem",
            json!({"type": "t", "title": "T", "status": "400", "schema_version": 1}),
            false,
        ),
        ("event", "Event", ok_event.clone(), true),
        (
            "event of unknown type",
            "Event",
            json!({"schema_version": 1, "seq": 1, "unix_ms": 1, "type": "nope"}),
            false,
        ),
        (
            "event missing a member of its type",
            "Event",
            json!({"schema_version": 1, "seq": 1, "unix_ms": 1, "type": "peer_state", "public_key": "k"}),
            false,
        ),
        (
            "event without seq",
            "Event",
            json!({"schema_version": 1, "unix_ms": 1, "type": "peer_removed", "public_key": "k"}),
            false,
        ),
        (
            "reload request",
            "ReloadRequest",
            json!({"log_level": "debug", "dry_run": true}),
            true,
        ),
        (
            "reload request, unknown field",
            "ReloadRequest",
            json!({"loglevel": "debug"}),
            false,
        ),
        (
            "reload request, wrong item",
            "ReloadRequest",
            json!({"advertise_routes": [1]}),
            false,
        ),
        (
            "reload request, null routes",
            "ReloadRequest",
            json!({"advertise_routes": null}),
            true,
        ),
        ("source", "ReloadSource", json!("api"), true),
        ("unknown source", "ReloadSource", json!("telepathy"), false),
        (
            "peer list",
            "PeerList",
            serde_json::to_value(peers()).unwrap(),
            true,
        ),
        (
            "peer list, peer without key",
            "PeerList",
            json!({"schema_version": 1, "peers": [{"hostname": "x"}]}),
            false,
        ),
        (
            "status",
            "Status",
            serde_json::to_value(status(unhealthy())).unwrap(),
            true,
        ),
        (
            "status with a bad layer",
            "Status",
            {
                let mut s = serde_json::to_value(status(Health::default())).unwrap();
                s["discovery"] = json!({"lan": {"state": 3}});
                s
            },
            false,
        ),
        (
            "unhealthy problem",
            "UnhealthyProblem",
            json!({"type": "t", "title": "T", "status": 503, "schema_version": 1, "healthy": false, "reasons": []}),
            true,
        ),
        (
            "unhealthy problem without reasons",
            "UnhealthyProblem",
            json!({"type": "t", "title": "T", "status": 503, "schema_version": 1, "healthy": false}),
            false,
        ),
    ];
    for (case, component, value, valid) in table {
        let got = spec.validate_component(component, &value);
        assert_eq!(got.is_ok(), valid, "{case}: {got:?}");
    }
    // Statuses and content types the document does not give are refused too.
    assert!(
        spec.check("GET", "/v1/status", 418, "application/json", b"{}")
            .is_err()
    );
    assert!(
        spec.check("GET", "/v1/status", 200, "text/plain", b"{}")
            .is_err()
    );
    assert!(
        spec.check("PUT", "/v1/status", 200, "application/json", b"{}")
            .is_err()
    );
    assert!(
        spec.check(
            "GET",
            "/v1/peers/a/b",
            404,
            PROBLEM_CONTENT_TYPE,
            &serde_json::to_vec(&ok_problem).unwrap()
        )
        .is_ok()
    );
}
