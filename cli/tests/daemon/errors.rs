//! How wgmeshctl fails: which message, which hint, which exit status.

use std::os::unix::net::UnixListener;

use insta::assert_snapshot;
use wgmesh_api_types::{PROBLEM_CONTENT_TYPE, Problem, problem_type};

use crate::harness::{RawServer, ctl, run, text, transcript};

#[test]
fn daemon_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.sock");
    // A stale socket: the file exists but nobody listens.
    let stale = dir.path().join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    let commands: [&[&str]; 7] = [
        &["status"],
        &["peers"],
        &["peers", "get", "alpha"],
        &["reload"],
        &["cache", "flush"],
        &["health"],
        &["watch"],
    ];
    for cmd in commands {
        let out = ctl(&missing, cmd);
        assert_eq!(out.status.code(), Some(3), "{cmd:?}");
        assert_eq!(
            transcript(&out, &missing),
            run(&missing, &["status"]),
            "{cmd:?}"
        );
        let out = ctl(&stale, cmd);
        assert_eq!(out.status.code(), Some(3), "{cmd:?}");
        assert!(text(&out.stderr).contains("Connection refused"), "{cmd:?}");
    }
    assert_snapshot!("not_running", run(&missing, &["status"]));
    assert_snapshot!("not_running_stale_socket", run(&stale, &["status"]));
}

/// A server answering every path in `paths` with `problem`.
fn answering(paths: &[&'static str], status: &'static str, problem: &Problem) -> RawServer {
    let body = serde_json::to_string(problem).unwrap();
    RawServer::start(
        paths
            .iter()
            .map(|p| (*p, status, PROBLEM_CONTENT_TYPE, body.clone()))
            .collect(),
    )
}

#[test]
fn forbidden() {
    // The real API refuses writes to callers that are neither root nor in the socket's group;
    // these tests run as any user, so the answer is served as is.
    let problem = Problem::new(
        problem_type::FORBIDDEN,
        "Forbidden",
        403,
        Some("uid 1000 may read but not change wgmeshd (root or group wgmesh may)".into()),
    );
    let daemon = answering(
        &["/v1/reload", "/v1/cache/flush"],
        "403 Forbidden",
        &problem,
    );
    let out = ctl(&daemon.socket, &["cache", "flush"]);
    assert_eq!(out.status.code(), Some(4));
    assert_snapshot!(
        "forbidden",
        run(&daemon.socket, &["reload", "--log-level", "debug"])
    );
}

#[test]
fn overloaded() {
    // The real API answers 503 only under load.
    let problem = Problem::new(
        problem_type::OVERLOADED,
        "Service Unavailable",
        503,
        Some("more than 64 requests in flight; retry later".into()),
    );
    let daemon = answering(&["/v1/status"], "503 Service Unavailable", &problem);
    assert_snapshot!("overloaded", run(&daemon.socket, &["status"]));
}

#[test]
fn not_found_and_non_problem_answers() {
    let problem = Problem::new(
        problem_type::NOT_FOUND,
        "Not Found",
        404,
        Some("no API endpoint at /v1/health".into()),
    );
    // A daemon older than this wgmeshctl.
    let old = answering(&["/v1/health"], "404 Not Found", &problem);
    assert_snapshot!("endpoint_not_found", run(&old.socket, &["health"]));
    // The real API answers every error with problem+json; this is something else on the socket.
    let other = RawServer::start(vec![]);
    assert_snapshot!("not_a_problem", run(&other.socket, &["peers"]));
}

#[test]
fn daemon_that_never_answers_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("hung.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    // Accepts and keeps the connection open without answering (a hung daemon).
    let hold = std::thread::spawn(move || listener.accept().map(|(stream, _)| stream));
    let started = std::time::Instant::now();
    let out = ctl(&socket, &["status"]);
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert_snapshot!("timeout", transcript(&out, &socket));
    drop(hold.join().unwrap());
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("unused.sock");
    for args in [
        &["peers", "--state", "asleep"][..],
        &["peers", "get"],
        &["reload", "--log-level", "loud"],
        &["health", "--quiet", "--json"],
        &["frobnicate"],
    ] {
        let out = ctl(&socket, args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(out.stdout.is_empty());
    }
}
