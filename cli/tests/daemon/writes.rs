//! `reload` and `cache flush`: what is sent, and the diff or result printed.

use insta::assert_snapshot;
use wgmesh_api_types::ReloadRequest;
use wgmeshd::api::ControlError;

use crate::fixtures::{plain_peers, plain_status};
use crate::harness::{Daemon, run};

#[test]
fn reload_applied_prints_the_diff() {
    let d = Daemon::real(plain_status(), plain_peers());
    let out = run(
        &d.socket,
        &[
            "reload",
            "--advertise-routes",
            "10.9.0.0/24, 192.168.10.0/24",
            "--log-level",
            "debug",
        ],
    );
    assert_snapshot!(out);
    let control = d.control.lock().unwrap();
    assert_eq!(
        control.received,
        [ReloadRequest {
            advertise_routes: Some(vec!["10.9.0.0/24".into(), "192.168.10.0/24".into()]),
            log_level: Some("debug".into()),
            dry_run: false,
        }]
    );
    assert_eq!(control.log_level, "debug");
}

#[test]
fn reload_dry_run_changes_nothing() {
    let d = Daemon::real(plain_status(), plain_peers());
    let out = run(
        &d.socket,
        &[
            "reload",
            "--advertise-routes",
            "",
            "--log-level",
            "warning",
            "--dry-run",
        ],
    );
    assert_snapshot!(out);
    let control = d.control.lock().unwrap();
    assert_eq!(control.received[0].advertise_routes, Some(vec![]));
    assert_eq!(control.received[0].log_level.as_deref(), Some("warn"));
    assert_eq!(control.routes, ["192.168.10.0/24"]);
    assert_eq!(control.log_level, "info");
}

#[test]
fn reload_with_nothing_to_change() {
    let d = Daemon::real(plain_status(), plain_peers());
    assert_snapshot!(run(
        &d.socket,
        &[
            "reload",
            "--log-level",
            "info",
            "--advertise-routes",
            "192.168.10.0/24"
        ]
    ));
    assert_snapshot!(
        "reload_dry_run_nothing",
        run(&d.socket, &["reload", "--log-level", "info", "--dry-run"])
    );
}

#[test]
fn reload_without_options_rereads_the_reload_file() {
    let d = Daemon::real(plain_status(), plain_peers());
    assert_snapshot!(run(&d.socket, &["reload"]));
    // No setting went with the request (the daemon read its file).
    assert_eq!(
        d.control.lock().unwrap().received,
        [ReloadRequest::default()]
    );
}

#[test]
fn reload_json() {
    let d = Daemon::real(plain_status(), plain_peers());
    assert_snapshot!(run(
        &d.socket,
        &["reload", "--advertise-routes", "", "--json"]
    ));
}

#[test]
fn reload_refused_names_the_field() {
    let d = Daemon::real(plain_status(), plain_peers());
    assert_snapshot!(
        "reload_400_routes",
        run(&d.socket, &["reload", "--advertise-routes", "0.0.0.0/0"])
    );
    d.control.lock().unwrap().reload_file = Err(ControlError::Invalid {
        field: "/var/lib/wgmesh/wg0.reload:2".into(),
        detail: "advertise-routes: \"10.0.0.0/33\" is not a CIDR".into(),
    });
    assert_snapshot!("reload_400_reload_file", run(&d.socket, &["reload"]));
    // A value that is not even a CIDR never leaves wgmeshctl.
    assert_snapshot!(
        "reload_usage_error",
        run(&d.socket, &["reload", "--advertise-routes", "10.0.0.0/33"])
    );
    assert_eq!(d.control.lock().unwrap().received.len(), 2);
}

#[test]
fn cache_flush() {
    let d = Daemon::real(plain_status(), plain_peers());
    assert_snapshot!("cache_flush", run(&d.socket, &["cache", "flush"]));
    assert_snapshot!(
        "cache_flush_json",
        run(&d.socket, &["cache", "flush", "--json"])
    );
    d.control.lock().unwrap().cache = Err(ControlError::Failed(
        "cannot write /var/lib/wgmesh/wg0-peers.json: No space left on device".into(),
    ));
    assert_snapshot!("cache_flush_failed", run(&d.socket, &["cache", "flush"]));
    assert_eq!(d.control.lock().unwrap().flushes, 3);
}
