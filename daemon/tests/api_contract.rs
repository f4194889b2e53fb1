//! Contract tests against a real daemon (`wgmeshd::daemon::run`: its tasks, its control task,
//! its snapshots, its socket; the userspace backend in a private network namespace): every
//! endpoint and every error status over the socket, each answer checked against the OpenAPI
//! document; callers of other uids read but never write, whether they connect from a thread with
//! other credentials or run `curl` under `setpriv`; members of the socket group write; an open
//! event stream does not hold the daemon's shutdown. The write endpoints are answered by
//! whatever the daemon's control task does at the time; what is checked is that the answer is a
//! documented one. Needs root; skipped without it, a failure under `CI=true`.
#![cfg(feature = "runtime")]

#[path = "support/daemon.rs"]
mod daemon;
#[path = "support/openapi.rs"]
mod openapi;

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::time::{Duration, Instant};

use http_body_util::BodyExt as _;
use wgmesh_api_types::{PROBLEM_CONTENT_TYPE, PeerList, Status, problem_type};
use wgmeshd::api::{DRAIN_TIMEOUT, SocketGroup};

use daemon::{Answer, Daemon, connect_as, isolated, privileged, some_group};
use openapi::Spec;

/// A key no daemon here knows, URL-safe.
const UNKNOWN_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";

/// (headers, body, status, problem type) of a write the API refuses itself.
type WriteError<'a> = (&'a [(&'a str, &'a str)], &'a str, u16, &'a str);

/// Checks `answer` to `method path` against the document.
fn conforms(spec: &Spec, method: &str, path: &str, answer: &Answer) {
    spec.check(
        method,
        path,
        answer.status,
        &answer.content_type,
        &answer.body,
    )
    .unwrap_or_else(|e| {
        panic!(
            "{method} {path}: {e}: {}",
            String::from_utf8_lossy(&answer.body)
        )
    });
}

/// Checks a problem answer to a path or method the document does not have.
fn is_problem(spec: &Spec, answer: &Answer, status: u16, kind: &str) {
    assert_eq!(
        answer.status,
        status,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.content_type, PROBLEM_CONTENT_TYPE);
    assert_eq!(answer.problem_type(), kind);
    spec.validate_component("Problem", &answer.json()).unwrap();
}

#[test]
fn every_endpoint_and_error_status_of_a_real_daemon_matches_the_contract() {
    if !privileged("every_endpoint_and_error_status_of_a_real_daemon_matches_the_contract") {
        return;
    }
    isolated(|| async {
        let spec = Spec::generated();
        let d = Daemon::start("wgtapi0", SocketGroup::Default).await;

        // Reads.
        let status = d.call("GET", "/v1/status", &[], "").await;
        assert_eq!(status.status, 200);
        conforms(&spec, "GET", "/v1/status", &status);
        let status: Status = serde_json::from_slice(&status.body).unwrap();
        assert_eq!(status.interface, "wgtapi0");
        let health = d.call("GET", "/v1/health", &[], "").await;
        assert!(matches!(health.status, 200 | 503), "{}", health.status);
        conforms(&spec, "GET", "/v1/health", &health);
        assert_eq!(
            health.json()["healthy"],
            serde_json::Value::from(status.health.healthy),
            "the health endpoint and the status agree"
        );
        for path in [
            "/v1/peers",
            "/v1/peers?state=active",
            "/v1/peers?state=cached&via=cache",
            "/v1/peers?via=none",
        ] {
            let answer = d.call("GET", path, &[], "").await;
            assert_eq!(answer.status, 200, "{path}");
            conforms(&spec, "GET", path, &answer);
            serde_json::from_slice::<PeerList>(&answer.body).unwrap();
        }

        // Read errors.
        // (path, status, problem type)
        let errors = [
            ("/v1/peers?state=alive", 400, problem_type::BAD_REQUEST),
            ("/v1/peers?sort=ip", 400, problem_type::BAD_REQUEST),
            ("/v1/peers/not-a-key", 400, problem_type::BAD_REQUEST),
            ("/v1/peers/AAAA", 400, problem_type::BAD_REQUEST),
        ];
        for (path, want, kind) in errors {
            let answer = d.call("GET", path, &[], "").await;
            assert_eq!(answer.status, want, "{path}");
            assert_eq!(answer.problem_type(), kind, "{path}");
            conforms(&spec, "GET", path, &answer);
        }
        let unknown = format!("/v1/peers/{UNKNOWN_KEY}");
        let answer = d.call("GET", &unknown, &[], "").await;
        assert_eq!(answer.status, 404);
        assert_eq!(answer.problem_type(), problem_type::NOT_FOUND);
        conforms(&spec, "GET", &unknown, &answer);
        is_problem(
            &spec,
            &d.call("GET", "/v1/nope", &[], "").await,
            404,
            problem_type::NOT_FOUND,
        );
        is_problem(
            &spec,
            &d.call("DELETE", "/v1/status", &[], "").await,
            405,
            problem_type::METHOD_NOT_ALLOWED,
        );
        let origin = d
            .call("GET", "/v1/status", &[("origin", "http://localhost")], "")
            .await;
        assert_eq!(origin.status, 403);
        assert_eq!(origin.problem_type(), problem_type::FORBIDDEN);
        conforms(&spec, "GET", "/v1/status", &origin);

        // Write errors the API decides itself, as root.
        let json = [("content-type", "application/json")];
        let big = format!(r#"{{"log_level":"{}"}}"#, "x".repeat(70_000));
        let errors: [WriteError; 6] = [
            (
                &[("content-type", "text/plain")],
                "{}",
                415,
                problem_type::UNSUPPORTED_MEDIA_TYPE,
            ),
            (
                &[],
                r#"{"log_level":"debug"}"#,
                415,
                problem_type::UNSUPPORTED_MEDIA_TYPE,
            ),
            (&json, "{", 400, problem_type::BAD_REQUEST),
            (
                &json,
                r#"{"loglevel":"debug"}"#,
                400,
                problem_type::BAD_REQUEST,
            ),
            (
                &json,
                r#"{"dry_run":"yes"}"#,
                400,
                problem_type::BAD_REQUEST,
            ),
            (&json, &big, 413, problem_type::PAYLOAD_TOO_LARGE),
        ];
        for (headers, body, want, kind) in errors {
            let answer = d.call("POST", "/v1/reload", headers, body).await;
            let shown = &body[..body.len().min(40)];
            assert_eq!(answer.status, want, "{shown}");
            assert_eq!(answer.problem_type(), kind, "{shown}");
            conforms(&spec, "POST", "/v1/reload", &answer);
        }
        let origin = d
            .call("POST", "/v1/cache/flush", &[("origin", "null")], "")
            .await;
        assert_eq!(origin.status, 403);
        conforms(&spec, "POST", "/v1/cache/flush", &origin);

        // Writes the daemon answers: whatever it answers must be documented.
        let writes = [
            (
                "/v1/reload",
                &json[..],
                r#"{"log_level":"debug","dry_run":true}"#,
            ),
            ("/v1/reload", &[][..], ""),
            ("/v1/cache/flush", &[][..], ""),
        ];
        for (path, headers, body) in writes {
            let answer = d.call("POST", path, headers, body).await;
            conforms(&spec, "POST", path, &answer);
            assert!(
                matches!(answer.status, 200 | 400 | 500),
                "POST {path} {body}: {}",
                answer.status
            );
            if answer.status != 200 {
                let kind = answer.problem_type();
                assert!(
                    kind == problem_type::BAD_REQUEST || kind == problem_type::FAILED,
                    "POST {path} {body}: {kind}"
                );
            }
        }

        // Events: the head at once, in either framing.
        for (accept, content_type) in [
            (None, "application/x-ndjson"),
            (Some("text/event-stream"), "text/event-stream"),
        ] {
            let stream = tokio::net::UnixStream::connect(&d.socket).await.unwrap();
            let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
            let response = daemon::send(stream, "GET", "/v1/events", &headers, "")
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(daemon::content_type(&response), content_type);
            spec.check("GET", "/v1/events", 200, content_type, b"")
                .unwrap();
        }
        d.stop().await;
    });
}

#[test]
fn other_uids_read_but_never_write_and_group_members_write() {
    if !privileged("other_uids_read_but_never_write_and_group_members_write") {
        return;
    }
    isolated(|| async {
        let spec = Spec::generated();
        let (gid, name) = some_group();
        let d = Daemon::start("wgtapi1", SocketGroup::Named(name.clone())).await;

        // The socket and its directory: the named group, 0660 and 0750.
        let socket = std::fs::metadata(&d.socket).unwrap();
        assert_eq!(
            (socket.gid(), socket.permissions().mode() & 0o777),
            (gid, 0o660)
        );
        let dir = std::fs::metadata(d.socket.parent().unwrap()).unwrap();
        assert_eq!((dir.gid(), dir.permissions().mode() & 0o777), (gid, 0o750));

        // An operator lets everyone connect (an ACL would do): connecting is then no proof of
        // membership, and only the credentials decide.
        d.open_to_everyone();
        let json = [("content-type", "application/json")];
        // (who, uid, gid, supplementary groups, may write)
        let callers = [
            ("nobody", 65_534, 65_534, vec![], false),
            ("another user", 4242, 4242, vec![100], false),
            (
                "member by supplementary group",
                65_534,
                65_534,
                vec![gid],
                true,
            ),
            ("member by primary group", 4242, gid, vec![], true),
        ];
        for (who, uid, caller_gid, groups, writes) in callers {
            for path in [
                "/v1/status",
                "/v1/peers",
                "/v1/peers?state=active",
                "/v1/health",
            ] {
                let stream = connect_as(&d.socket, uid, caller_gid, &groups).await;
                let answer = daemon::call(stream, "GET", path, &[], "").await.unwrap();
                assert!(
                    matches!(answer.status, 200 | 503),
                    "{who}: GET {path}: {}",
                    answer.status
                );
                if path != "/v1/health" {
                    assert_eq!(answer.status, 200, "{who}: GET {path}");
                }
                conforms(&spec, "GET", path, &answer);
            }
            let stream = connect_as(&d.socket, uid, caller_gid, &groups).await;
            let events = daemon::send(stream, "GET", "/v1/events", &[], "")
                .await
                .unwrap();
            assert_eq!(events.status(), 200, "{who}: GET /v1/events");
            drop(events);

            for (path, headers, body) in [
                (
                    "/v1/reload",
                    &json[..],
                    r#"{"log_level":"debug","dry_run":true}"#,
                ),
                ("/v1/reload", &[][..], ""),
                ("/v1/cache/flush", &[][..], ""),
            ] {
                let stream = connect_as(&d.socket, uid, caller_gid, &groups).await;
                let answer = daemon::call(stream, "POST", path, headers, body)
                    .await
                    .unwrap();
                conforms(&spec, "POST", path, &answer);
                if writes {
                    assert_ne!(answer.status, 403, "{who}: POST {path}");
                } else {
                    assert_eq!(answer.status, 403, "{who}: POST {path}");
                    assert_eq!(answer.problem_type(), problem_type::FORBIDDEN, "{who}");
                    let detail = answer.json()["detail"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    assert!(detail.contains(&format!("uid {uid}")), "{who}: {detail}");
                    assert!(detail.contains(&format!("group {name}")), "{who}: {detail}");
                }
            }
        }

        // The same from another process, through curl under setpriv (awaited: the daemon runs
        // on this thread's runtime).
        let socket = d.socket.to_str().unwrap().to_owned();
        let run_as_nobody = async |method: &str, path: &str| {
            let out = tokio::process::Command::new("setpriv")
                .args([
                    "--reuid",
                    "65534",
                    "--regid",
                    "65534",
                    "--clear-groups",
                    "curl",
                    "-sS",
                ])
                .args(["--unix-socket", &socket, "-X", method])
                .args(["-w", "\n%{http_code}", &format!("http://localhost{path}")])
                .output()
                .await
                .expect("setpriv and curl are installed (.ci/run installs them)");
            assert!(
                out.status.success(),
                "curl: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8(out.stdout).unwrap();
            let (body, code) = text.rsplit_once('\n').unwrap();
            (code.parse::<u16>().unwrap(), body.to_owned())
        };
        let (code, body) = run_as_nobody("GET", "/v1/status").await;
        assert_eq!(code, 200, "{body}");
        for path in ["/v1/reload", "/v1/cache/flush"] {
            let (code, body) = run_as_nobody("POST", path).await;
            assert_eq!(code, 403, "{path}: {body}");
            assert!(body.contains(problem_type::FORBIDDEN), "{path}: {body}");
        }
        d.stop().await;
    });
}

#[test]
fn an_open_event_stream_ends_at_shutdown_without_holding_it() {
    if !privileged("an_open_event_stream_ends_at_shutdown_without_holding_it") {
        return;
    }
    isolated(|| async {
        let d = Daemon::start("wgtapi2", SocketGroup::Default).await;
        let stream = tokio::net::UnixStream::connect(&d.socket).await.unwrap();
        let response = daemon::send(stream, "GET", "/v1/events", &[], "")
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let reader = tokio::spawn(async move {
            let mut body = response.into_body();
            // Keep-alives and events until the end; the end must be clean, not a cut.
            loop {
                match body.frame().await {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e.to_string()),
                    None => return Ok(Instant::now()),
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stopping = Instant::now();
        let took = d.stop().await;
        let ended = reader.await.unwrap().expect("the stream ends cleanly");
        let stream_took = ended.duration_since(stopping);
        assert!(
            stream_took < DRAIN_TIMEOUT / 2,
            "the stream took {stream_took:?} to end (the drain would cut it at {DRAIN_TIMEOUT:?})"
        );
        assert!(took < DRAIN_TIMEOUT, "the daemon took {took:?} to stop");
    });
}
