//! `wgmeshctl status` and `peers` against a fake daemon on a unix socket in a temp dir.
//!
//! The fake speaks just enough HTTP/1.1 (one request per connection, `Connection: close`) to
//! answer fixed bodies per path, so these tests need neither root nor a running `wgmeshd`.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::json;

fn status_body() -> serde_json::Value {
    json!({
        "schema_version": 1,
        "version": "0.1.0",
        "interface": "wg0",
        "public_key": "PYtJ5VmQqBAr7dnbTmCR1xP/v+/jrHmuTnGC4Aixu+o=",
        "mesh_ip": "10.78.12.34",
        "mesh_ipv6": "fd9d:af5d:d5d0:b3c7::1",
        "mesh_subnet": "10.78.0.0/16",
        "network_id": "b6ed1c46b1404bc0",
        "listen_port": 51820,
        "wg_backend": "userspace",
        "wg_backend_reason": "no kernel module",
        "uptime_seconds": 3725,
        "lan_discovery": true,
        "peers": { "total": 3, "active": 2, "connected": 1 }
    })
}

fn peers_body() -> serde_json::Value {
    json!({
        "schema_version": 1,
        "peers": [
            {
                "public_key": "k1", "hostname": "alpha", "mesh_ip": "10.78.1.1",
                "mesh_ipv6": null, "endpoint": "192.0.2.1:51820", "endpoint_method": "lan",
                "discovered_via": ["lan"], "introducer": false, "routable_networks": [],
                "last_seen_seconds_ago": 4, "state": "active",
                "last_handshake_seconds_ago": 75, "rx_bytes": 1, "tx_bytes": 2
            },
            {
                "public_key": "k2", "hostname": "", "mesh_ip": "10.78.200.7",
                "mesh_ipv6": null, "endpoint": null, "endpoint_method": null,
                "discovered_via": ["dht"], "introducer": true, "routable_networks": [],
                "last_seen_seconds_ago": 7200, "state": "dead",
                "last_handshake_seconds_ago": null, "rx_bytes": 0, "tx_bytes": 0
            }
        ]
    })
}

/// A fake daemon answering `GET path` with `(status line, content type, body)` from `routes`.
struct FakeDaemon {
    _dir: tempfile::TempDir,
    socket: PathBuf,
}

impl FakeDaemon {
    fn start(routes: Vec<(&'static str, &'static str, &'static str, String)>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("wgmeshd.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        // Detached: it blocks in accept until the test process exits.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                reader.read_line(&mut request_line).unwrap();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                        break;
                    }
                }
                let path = request_line.split(' ').nth(1).unwrap_or("").to_owned();
                let (status, ctype, body) = routes
                    .iter()
                    .find(|(p, ..)| *p == path)
                    .map(|(_, s, c, b)| (*s, *c, b.clone()))
                    .unwrap_or(("404 Not Found", "text/plain", "nope".to_owned()));
                let len = body.len();
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {len}\r\n\
                     connection: close\r\n\r\n{body}"
                );
                let _ = stream.write_all(response.as_bytes());
            }
        });
        Self { _dir: dir, socket }
    }

    fn standard() -> Self {
        Self::start(vec![
            (
                "/v1/status",
                "200 OK",
                "application/json",
                status_body().to_string(),
            ),
            (
                "/v1/peers",
                "200 OK",
                "application/json",
                peers_body().to_string(),
            ),
        ])
    }
}

fn ctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wgmeshctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("WGMESH_SOCKET")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn status_prints_aligned_key_value_lines() {
    let daemon = FakeDaemon::standard();
    let out = ctl(&daemon.socket, &["status"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for want in [
        "Interface:      wg0\n",
        "Public key:     PYtJ5VmQqBAr7dnbTmCR1xP/v+/jrHmuTnGC4Aixu+o=\n",
        "Mesh IPv4:      10.78.12.34\n",
        "Mesh IPv6:      fd9d:af5d:d5d0:b3c7::1\n",
        "Network ID:     b6ed1c46b1404bc0\n",
        "Listen port:    51820\n",
        "Backend:        userspace (no kernel module)\n",
        "Uptime:         1h 2m\n",
        "Peers:          3 total, 2 active, 1 connected\n",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in\n{stdout}");
    }
    let columns: Vec<usize> = stdout
        .lines()
        .map(|l| l.len() - l.split_once(':').unwrap().1.trim_start().len())
        .collect();
    assert!(columns.windows(2).all(|w| w[0] == w[1]), "{stdout}");
}

#[test]
fn status_json_is_the_body_pretty_printed() {
    let daemon = FakeDaemon::standard();
    let out = ctl(&daemon.socket, &["status", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(
        stdout,
        format!(
            "{}\n",
            serde_json::to_string_pretty(&status_body()).unwrap()
        )
    );
}

#[test]
fn peers_prints_a_table() {
    let daemon = FakeDaemon::standard();
    let out = ctl(&daemon.socket, &["peers"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "\
HOSTNAME  MESH IP      ENDPOINT         VIA  LAST SEEN  HANDSHAKE   STATE
alpha     10.78.1.1    192.0.2.1:51820  lan  4s ago     1m 15s ago  active
-         10.78.200.7  -                -    2h 0m ago  never       dead
"
    );
}

#[test]
fn peers_json_and_empty_list() {
    let daemon = FakeDaemon::standard();
    let out = ctl(&daemon.socket, &["peers", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let back: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(back, peers_body());

    let empty = FakeDaemon::start(vec![(
        "/v1/peers",
        "200 OK",
        "application/json",
        r#"{"schema_version":1,"peers":[]}"#.to_owned(),
    )]);
    let out = ctl(&empty.socket, &["peers"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "No peers\n");
}

#[test]
fn socket_comes_from_the_environment_when_no_flag() {
    let daemon = FakeDaemon::standard();
    let out = Command::new(env!("CARGO_BIN_EXE_wgmeshctl"))
        .args(["status", "--json"])
        .env("WGMESH_SOCKET", &daemon.socket)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn daemon_not_running_is_exit_1_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.sock");
    // A stale socket: the file exists but nobody listens.
    let stale = dir.path().join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    for socket in [missing, stale] {
        for cmd in ["status", "peers"] {
            let out = ctl(&socket, &[cmd]);
            assert_eq!(out.status.code(), Some(1), "{cmd} {}", socket.display());
            assert!(out.stdout.is_empty());
            let stderr = text(&out.stderr);
            assert!(
                stderr.starts_with(&format!(
                    "wgmeshctl: error: cannot reach wgmeshd at {}: ",
                    socket.display()
                )),
                "{stderr}"
            );
            assert!(
                stderr.contains(
                    "hint: is wgmeshd running? start it with: wgmeshd join --secret-file <FILE>"
                ),
                "{stderr}"
            );
        }
    }
}

#[test]
fn problem_answer_shows_title_and_detail() {
    let daemon = FakeDaemon::start(vec![(
        "/v1/status",
        "503 Service Unavailable",
        "application/problem+json",
        json!({
            "type": "urn:wgmesh:problem:overloaded",
            "title": "Service Unavailable",
            "status": 503,
            "detail": "more than 64 requests in flight; retry later",
            "schema_version": 1
        })
        .to_string(),
    )]);
    let out = ctl(&daemon.socket, &["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "wgmeshctl: error: wgmeshd: Service Unavailable: \
         more than 64 requests in flight; retry later\n"
    );
}

#[test]
fn non_problem_error_answer_is_reported() {
    let daemon = FakeDaemon::start(vec![]);
    let out = ctl(&daemon.socket, &["peers"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("unexpected answer from wgmeshd at") && stderr.contains("404"),
        "{stderr}"
    );
}

#[test]
fn daemon_that_never_answers_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("hung.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    // Accepts and keeps the connection open without answering.
    let hold = std::thread::spawn(move || listener.accept().map(|(stream, _)| stream));
    let started = std::time::Instant::now();
    let out = ctl(&socket, &["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("did not answer within 5 s"), "{stderr}");
    drop(hold.join().unwrap());
}
