//! `status`, `peers`, `peers get` and `health`.

use insta::assert_snapshot;
use wgmesh_api_types::{PeerList, SCHEMA_VERSION, Status};

use crate::fixtures::{ALPHA, full_peers, full_status, plain_peers, plain_status, unhealthy};
use crate::harness::{Daemon, RawServer, ctl_ok, run, text};

#[test]
fn status_plain() {
    let d = Daemon::real(plain_status(), plain_peers());
    assert_snapshot!(run(&d.socket, &["status"]));
}

#[test]
fn status_full() {
    let d = Daemon::real(full_status(), full_peers());
    assert_snapshot!(run(&d.socket, &["status"]));
}

#[test]
fn status_unhealthy() {
    let status = Status {
        health: unhealthy(),
        ..full_status()
    };
    let d = Daemon::real(status, full_peers());
    assert_snapshot!(run(&d.socket, &["status"]));
}

#[test]
fn status_json_is_the_body_pretty_printed() {
    let d = Daemon::real(full_status(), full_peers());
    let stdout = ctl_ok(&d.socket, &["status", "--json"]);
    let want = serde_json::to_string_pretty(&full_status()).unwrap();
    assert_eq!(stdout, format!("{want}\n"));
    assert_snapshot!(stdout);
}

#[test]
fn socket_comes_from_the_environment_when_no_flag() {
    let d = Daemon::real(plain_status(), plain_peers());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wgmeshctl"))
        .args(["status", "--json"])
        .env("WGMESH_SOCKET", &d.socket)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let back: Status = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(back, plain_status());
}

#[test]
fn peers_table() {
    let d = Daemon::real(plain_status(), plain_peers());
    let plain = run(&d.socket, &["peers"]);
    assert_eq!(plain, run(&d.socket, &["peers", "list"]));
    assert_snapshot!(plain);
}

#[test]
fn peers_table_with_refused_routes() {
    let d = Daemon::real(full_status(), full_peers());
    assert_snapshot!(run(&d.socket, &["peers"]));
}

#[test]
fn peers_json_and_empty_list() {
    let d = Daemon::real(plain_status(), plain_peers());
    let stdout = ctl_ok(&d.socket, &["peers", "--json"]);
    let want = serde_json::to_string_pretty(&plain_peers()).unwrap();
    assert_eq!(stdout, format!("{want}\n"));
    assert_snapshot!("peers_json", stdout);

    let empty = Daemon::real(
        plain_status(),
        PeerList {
            schema_version: SCHEMA_VERSION,
            peers: vec![],
        },
    );
    assert_snapshot!("peers_empty", run(&empty.socket, &["peers"]));
}

#[test]
fn peers_filtered() {
    let d = Daemon::real(plain_status(), plain_peers());
    let cases = [
        ("peers_state_active", &["peers", "--state", "active"][..]),
        (
            "peers_list_state_cached",
            &["peers", "list", "--state", "cached"],
        ),
        ("peers_via_none", &["peers", "--via", "none"]),
        (
            "peers_no_match",
            &["peers", "--state", "quarantined", "--via", "lan"],
        ),
        ("peers_filtered_json", &["peers", "--via", "lan", "--json"]),
    ];
    for (name, args) in cases {
        assert_snapshot!(name, run(&d.socket, args));
    }
}

#[test]
fn peers_get() {
    let d = Daemon::real(full_status(), full_peers());
    let by_key = run(&d.socket, &["peers", "get", ALPHA]);
    assert_snapshot!("peers_get", by_key);
    // The same peer however it is named.
    let url_safe = ALPHA.replace('/', "_").replace('+', "-");
    for name in [
        &url_safe[..],
        "alpha",
        "10.78.1.1",
        "fd9d:af5d:d5d0:b3c7:0::11",
        "jtP2r",
    ] {
        assert_eq!(run(&d.socket, &["peers", "get", name]), by_key, "{name}");
    }
    assert_snapshot!(
        "peers_get_unnamed",
        run(&d.socket, &["peers", "get", "9E5k"])
    );
    assert_snapshot!(
        "peers_get_json",
        run(&d.socket, &["peers", "get", ALPHA, "--json"])
    );
}

#[test]
fn peers_get_failures() {
    let d = Daemon::real(plain_status(), plain_peers());
    let unknown_key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let cases = [
        ("peers_get_unknown_key", unknown_key),
        ("peers_get_no_match", "delta"),
    ];
    for (name, peer) in cases {
        assert_snapshot!(name, run(&d.socket, &["peers", "get", peer]));
    }
    // Two peers whose keys start with the same letters.
    let mut twins = plain_peers();
    twins.peers[1].public_key = format!("jtP2{}", &twins.peers[1].public_key[4..]);
    d.peers.send(twins).unwrap();
    assert_snapshot!(
        "peers_get_ambiguous",
        run(&d.socket, &["peers", "get", "jtP2"])
    );
}

#[test]
fn health() {
    let d = Daemon::real(plain_status(), plain_peers());
    assert_snapshot!("health_healthy", run(&d.socket, &["health"]));
    assert_snapshot!("health_quiet", run(&d.socket, &["health", "-q"]));
    d.status.send(full_status()).unwrap();
    assert_snapshot!("health_healthy_with_warning", run(&d.socket, &["health"]));
    assert_snapshot!("health_healthy_json", run(&d.socket, &["health", "--json"]));
    d.status
        .send(Status {
            health: unhealthy(),
            ..plain_status()
        })
        .unwrap();
    assert_snapshot!("health_unhealthy", run(&d.socket, &["health"]));
    assert_snapshot!(
        "health_unhealthy_quiet",
        run(&d.socket, &["health", "--quiet"])
    );
    assert_snapshot!(
        "health_unhealthy_json",
        run(&d.socket, &["health", "--json"])
    );
}

#[test]
fn health_answered_with_a_problem() {
    // The contract allows a 503 problem of type `unhealthy` instead of the Health body, and a 503
    // overloaded is not a health verdict at all.
    let unhealthy = wgmesh_api_types::Problem::new(
        wgmesh_api_types::problem_type::UNHEALTHY,
        "Service Unavailable",
        503,
        Some("interface wg0 is down".into()),
    );
    let overloaded = wgmesh_api_types::Problem::new(
        wgmesh_api_types::problem_type::OVERLOADED,
        "Service Unavailable",
        503,
        Some("more than 64 requests in flight; retry later".into()),
    );
    for (name, problem) in [
        ("health_problem_unhealthy", unhealthy),
        ("health_problem_overloaded", overloaded),
    ] {
        let raw = RawServer::start(vec![(
            "/v1/health",
            "503 Service Unavailable",
            wgmesh_api_types::PROBLEM_CONTENT_TYPE,
            serde_json::to_string(&problem).unwrap(),
        )]);
        assert_snapshot!(name, run(&raw.socket, &["health"]));
    }
}
