//! End to end: a real daemon's metrics (on its socket and on `--metrics-listen`), health and last
//! reconcile, as an operator's tools see them.

use std::time::Duration;

use wgmesh_tests::daemon::{self, Daemon};
use wgmesh_tests::lab::{self, Host, Lab};
use wgmesh_tests::{Exe, labnode_exe};
use wgmeshd::metrics::parse::{Parsed, counters_decreased, parse};

const API_UP: Duration = Duration::from_secs(20);
const MESH_UP: Duration = Duration::from_secs(60);
/// The TCP port the first daemon serves metrics on.
const METRICS_PORT: u16 = 9586;

// Failures panic (`unwrap`): the lab prints every daemon's log when it is dropped during a panic.

/// `GET path` on `addr` from inside `host` (`wgmesh-labnode http-get`): (status line, body).
fn http_get(exe: &Exe, host: &Host, addr: &str, path: &str) -> (String, String) {
    let out = exe
        .in_host(host, "http-get")
        .args([addr, path])
        .output_ok()
        .unwrap();
    let text = out;
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

fn scrape(exe: &Exe, host: &Host, addr: &str) -> Parsed {
    let (line, body) = http_get(exe, host, addr, "/metrics");
    assert_eq!(line, "HTTP/1.1 200 OK", "{body}");
    parse(&body).unwrap_or_else(|e| panic!("{e}\n{body}"))
}

#[test]
fn metrics_health_and_last_reconcile_of_a_running_mesh() {
    if !lab::require_root() {
        return;
    }
    let exe = labnode_exe!();
    let lab = Lab::one_lan("obs", &["a", "b"]).unwrap();
    let (a, b) = (lab.host("a"), lab.host("b"));
    let secret = lab.dir().join("mesh.secret");
    daemon::write_secret(&exe, &secret).unwrap();
    let listen = format!("0.0.0.0:{METRICS_PORT}");
    let da = Daemon::start(&exe, a, &secret, &["--metrics-listen", &listen]).unwrap();
    let db = Daemon::start(&exe, b, &secret, &[]).unwrap();
    da.wait_api(API_UP).unwrap();
    db.wait_api(API_UP).unwrap();
    daemon::wait_full_mesh(&[a, b], MESH_UP).unwrap();

    // Health and the last pass, from the status.
    let st = da.status().unwrap();
    assert!(st.health.healthy, "{:?}", st.health);
    let last = st.last_reconcile.expect("a pass ran");
    assert!(last.seconds_ago <= 6, "{last:?}");

    // Scraped over TCP from the other host, as Prometheus would.
    let addr = format!("{}:{METRICS_PORT}", a.ip());
    let first = scrape(&exe, b, &addr);
    let value = |p: &Parsed, name: &str, labels: &[(&str, &str)]| {
        p.value(name, labels)
            .unwrap_or_else(|| panic!("{name}{labels:?} missing"))
    };
    assert_eq!(value(&first, "wgmesh_healthy", &[]), 1.0);
    assert_eq!(value(&first, "wgmesh_active_peers", &[]), 1.0);
    assert_eq!(value(&first, "wgmesh_connected_peers", &[]), 1.0);
    assert_eq!(value(&first, "wgmesh_peers_by_via", &[("via", "lan")]), 1.0);
    assert!(value(&first, "wgmesh_reconcile_runs_total", &[]) >= 1.0);
    assert!(
        value(
            &first,
            "wgmesh_reconcile_changes_total",
            &[("change", "added")]
        ) >= 1.0
    );
    assert!(value(&first, "wgmesh_discovery_events_total", &[("layer", "lan")]) >= 1.0);
    assert!(value(&first, "wgmesh_discovery_sends_total", &[("layer", "lan")]) >= 1.0);
    assert_eq!(
        value(
            &first,
            "wgmesh_task_restarts_total",
            &[("task", "reconcile")]
        ),
        0.0
    );
    // Only /metrics on TCP: the control API is not there.
    for path in ["/v1/status", "/v1/peers", "/"] {
        let (line, body) = http_get(&exe, b, &addr, path);
        assert_eq!(line, "HTTP/1.1 404 Not Found", "{path}: {body}");
    }
    // A pass and an announcement later, every counter only grew.
    std::thread::sleep(Duration::from_secs(6));
    let second = scrape(&exe, b, &addr);
    assert_eq!(counters_decreased(&first, &second), Vec::<String>::new());
    assert!(
        value(&second, "wgmesh_reconcile_runs_total", &[])
            > value(&first, "wgmesh_reconcile_runs_total", &[])
    );
    // The same metrics on the socket, with the API's requests counted.
    let on_socket: String = {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let socket = a.socket_path();
        rt.block_on(async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            let mut s = tokio::net::UnixStream::connect(socket).await.unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut text = String::new();
            s.read_to_string(&mut text).await.unwrap();
            text
        })
    };
    let (_, body) = on_socket.split_once("\r\n\r\n").unwrap();
    let socket = parse(body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    assert!(
        value(
            &socket,
            "wgmesh_api_requests_total",
            &[("route", "/v1/status"), ("status", "200")]
        ) >= 1.0
    );
    assert!(
        value(
            &socket,
            "wgmesh_api_requests_total",
            &[("route", "/metrics"), ("status", "200")]
        ) >= 2.0
    );

    // The mesh interface goes down: critical within the interface refresh (2 s) and a rebuild.
    a.exec_ok("ip", &["link", "set", "wg0", "down"]).unwrap();
    daemon::wait_status(a, Duration::from_secs(10), "unhealthy", |s| {
        !s.health.healthy && s.health.reasons.iter().any(|r| r.code == "interface_down")
    })
    .unwrap();
    assert_eq!(value(&scrape(&exe, b, &addr), "wgmesh_healthy", &[]), 0.0);
    a.exec_ok("ip", &["link", "set", "wg0", "up"]).unwrap();
    daemon::wait_status(a, Duration::from_secs(10), "healthy again", |s| {
        s.health.healthy
    })
    .unwrap();
}
