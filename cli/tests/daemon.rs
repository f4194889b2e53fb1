//! `wgmeshctl status` and `peers` against the daemon's real control API.
//!
//! [`Api`] serves `wgmeshd::api::{bind, serve}` (the daemon's own listener and router) on a socket
//! in a temp dir, with snapshots built from the `wgmesh-api-types` structs exactly as the daemon
//! publishes them. So a drift between the router, the API types and the CLI fails here, and these
//! tests need neither root nor a WireGuard device. Only the answers the real API cannot be made to
//! give on demand (a problem document or a non-JSON error on a read route, no answer at all) come
//! from a raw server; see [`RawServer`].

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread::JoinHandle;

use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use wgmesh_api_types::{
    Health, HealthReason, LayerStatus, Peer, PeerCounts, PeerList, Problem, ReconcileSummary,
    RouteRefusal, SCHEMA_VERSION, Status, TaskStatus, problem_type,
};
use wgmeshd::api::{ApiState, bind, serve};

// ------------------------------------------------------------------------------------------
// fixtures

/// A node's status with nothing special going on (no discovery layers, no troubled task).
fn plain_status() -> Status {
    Status {
        schema_version: SCHEMA_VERSION,
        version: "0.1.0".into(),
        interface: "wg0".into(),
        public_key: "PYtJ5VmQqBAr7dnbTmCR1xP/v+/jrHmuTnGC4Aixu+o=".into(),
        mesh_ip: "10.78.12.34".into(),
        mesh_ipv6: "fd9d:af5d:d5d0:b3c7::1".into(),
        mesh_subnet: "10.78.0.0/16".into(),
        network_id: "b6ed1c46b1404bc0".into(),
        listen_port: 51820,
        wg_backend: "userspace".into(),
        wg_backend_reason: "no kernel module".into(),
        uptime_seconds: 3725,
        introducer: false,
        advertise_routes: vec![],
        discovery: BTreeMap::new(),
        tasks: vec![],
        peers: PeerCounts {
            total: 3,
            active: 2,
            connected: 1,
            ..PeerCounts::default()
        },
        log_level: "info".into(),
        last_reconcile: None,
        health: Health::default(),
    }
}

/// A status where every field has a value and every rendering branch is taken: each kind of
/// discovery layer, a troubled and a healthy task, quarantined peers. The literal names every
/// field (no `..Default::default()`), so a new field does not compile until it is given a value
/// here and classified in [`STATUS_FIELDS`].
fn full_status() -> Status {
    let layer = |state: &str, detail: Option<&str>, error: Option<&str>| LayerStatus {
        state: state.into(),
        detail: detail.map(Into::into),
        last_error: error.map(Into::into),
        last_error_seconds_ago: error.map(|_| 42),
        last_success_seconds_ago: Some(3),
    };
    Status {
        schema_version: SCHEMA_VERSION,
        version: "0.9.9-test".into(),
        interface: "wgmesh7".into(),
        public_key: "PYtJ5VmQqBAr7dnbTmCR1xP/v+/jrHmuTnGC4Aixu+o=".into(),
        mesh_ip: "10.250.0.9".into(),
        mesh_ipv6: "fd9d:af5d:d5d0:b3c7::9".into(),
        mesh_subnet: "10.250.0.0/20".into(),
        network_id: "b6ed1c46b1404bc0".into(),
        listen_port: 51821,
        wg_backend: "userspace".into(),
        wg_backend_reason: "requested".into(),
        uptime_seconds: 200_000,
        introducer: true,
        advertise_routes: vec!["192.168.10.0/24".into(), "fd10::/64".into()],
        discovery: BTreeMap::from([
            (
                "lan".to_owned(),
                layer("running", Some("eth0, eth1"), Some("eth1 went down")),
            ),
            (
                "dht".to_owned(),
                layer("retrying", None, Some("no bootstrap node answered")),
            ),
            ("gossip".to_owned(), layer("off", None, None)),
        ]),
        tasks: vec![
            TaskStatus {
                name: "reconcile".into(),
                state: "running".into(),
                restarts: 0,
                last_error: None,
                last_error_seconds_ago: None,
            },
            TaskStatus {
                name: "dht-discovery".into(),
                state: "restarting".into(),
                restarts: 4,
                last_error: Some("socket closed".into()),
                last_error_seconds_ago: Some(7),
            },
        ],
        peers: PeerCounts {
            total: 9,
            active: 7,
            cached: 1,
            connected: 5,
            quarantined: 1,
            dead: 0,
            by_via: BTreeMap::from([("lan".to_owned(), 7), ("cache".to_owned(), 2)]),
        },
        log_level: "debug".into(),
        last_reconcile: Some(ReconcileSummary {
            seconds_ago: 2,
            duration_ms: 4,
            added: 1,
            updated: 2,
            removed: 0,
            failed: 0,
        }),
        health: Health {
            healthy: true,
            reasons: vec![HealthReason {
                code: "layer_retrying".into(),
                detail: "dht: no bootstrap node answered".into(),
                critical: false,
            }],
        },
    }
}

fn peer(public_key: &str, hostname: &str, mesh_ip: &str) -> Peer {
    Peer {
        public_key: public_key.into(),
        hostname: hostname.into(),
        mesh_ip: Some(mesh_ip.into()),
        ..Peer::default()
    }
}

/// Two peers: one alive over the LAN, one dead and never handshaked.
fn plain_peers() -> PeerList {
    PeerList {
        schema_version: SCHEMA_VERSION,
        peers: vec![
            Peer {
                endpoint: Some("192.0.2.1:51820".into()),
                endpoint_method: Some("lan".into()),
                discovered_via: vec!["lan".into()],
                last_seen_seconds_ago: 4,
                state: "active".into(),
                last_handshake_seconds_ago: Some(75),
                rx_bytes: 1,
                tx_bytes: 2,
                ..peer("k1", "alpha", "10.78.1.1")
            },
            Peer {
                discovered_via: vec!["dht".into()],
                introducer: true,
                last_seen_seconds_ago: 7200,
                state: "dead".into(),
                ..peer("k2", "", "10.78.200.7")
            },
        ],
    }
}

/// Peers where every field has a value, and both a named and an unnamed peer advertise routes
/// this node refuses. Every field is named, for the same reason as in [`full_status`].
fn full_peers() -> PeerList {
    let refusal = |prefix: &str, reason: &str, detail: &str| RouteRefusal {
        prefix: prefix.into(),
        reason: reason.into(),
        detail: detail.into(),
    };
    PeerList {
        schema_version: SCHEMA_VERSION,
        peers: vec![
            Peer {
                public_key: "k1".into(),
                hostname: "alpha".into(),
                mesh_ip: Some("10.78.1.1".into()),
                mesh_ipv6: Some("fd9d:af5d:d5d0:b3c7::11".into()),
                endpoint: Some("192.0.2.1:51820".into()),
                endpoint_method: Some("lan".into()),
                discovered_via: vec!["lan".into(), "dht".into()],
                introducer: true,
                routable_networks: vec!["192.168.20.0/24".into()],
                last_seen_seconds_ago: 4,
                state: "active".into(),
                last_handshake_seconds_ago: Some(75),
                rx_bytes: 1234,
                tx_bytes: 5678,
                routes_refused: vec![refusal(
                    "10.78.0.0/16",
                    "mesh_subnet",
                    "overlaps the mesh subnet 10.78.0.0/16",
                )],
            },
            Peer {
                public_key: "k2".into(),
                hostname: "".into(),
                mesh_ip: Some("10.78.200.7".into()),
                mesh_ipv6: Some("fd9d:af5d:d5d0:b3c7::27".into()),
                endpoint: Some("198.51.100.7:51820".into()),
                endpoint_method: Some("dht".into()),
                discovered_via: vec!["dht".into()],
                introducer: false,
                routable_networks: vec!["192.168.30.0/24".into()],
                last_seen_seconds_ago: 7200,
                state: "quarantined".into(),
                last_handshake_seconds_ago: Some(7000),
                rx_bytes: 9,
                tx_bytes: 10,
                routes_refused: vec![refusal("0.0.0.0/1", "too_broad", "broader than /8")],
            },
        ],
    }
}

// ------------------------------------------------------------------------------------------
// the real API, and a raw server for what it cannot be made to answer

/// The daemon's real control API on a temp-dir socket, serving the snapshots it was given (which
/// a test may replace, as the daemon does after every reconcile). Runs on its own runtime in a
/// background thread; dropping it stops the API and checks that it stopped cleanly.
struct Api {
    socket: PathBuf,
    status: watch::Sender<Status>,
    peers: watch::Sender<PeerList>,
    stop: CancellationToken,
    thread: Option<JoinHandle<Result<(), String>>>,
    _dir: tempfile::TempDir,
}

impl Api {
    fn serve(status: Status, peers: PeerList) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("wgmeshd.sock");
        let (status_tx, status_rx) = watch::channel(status);
        let (peers_tx, peers_rx) = watch::channel(peers);
        let (state, _requests) = ApiState::new(status_rx, peers_rx);
        let stop = CancellationToken::new();
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn({
            let (socket, stop) = (socket.clone(), stop.clone());
            move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                runtime.block_on(async move {
                    let bound = bind(&socket).await.map_err(|e| e.to_string());
                    let _ = bound_tx.send(bound.as_ref().map(|_| ()).map_err(Clone::clone));
                    serve(bound?, state, stop).await.map_err(|e| e.to_string())
                })
            }
        });
        bound_rx
            .recv()
            .expect("API thread died before binding")
            .expect("bind the API socket");
        Self {
            socket,
            status: status_tx,
            peers: peers_tx,
            stop,
            thread: Some(thread),
            _dir: dir,
        }
    }

    fn standard() -> Self {
        Self::serve(plain_status(), plain_peers())
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        self.stop.cancel();
        let Some(thread) = self.thread.take() else {
            return;
        };
        let result = thread.join();
        if !std::thread::panicking() {
            result
                .expect("API thread panicked")
                .expect("API stopped with an error");
            assert!(!self.socket.exists(), "the API left its socket behind");
        }
    }
}

/// A raw HTTP/1.1 server answering one request per connection with a fixed
/// `(path, status line, content type, body)`, 404 text otherwise. Only for answers the daemon's
/// real API cannot be made to give on a read route (a problem document such as "overloaded", an
/// error that is not problem+json); everything else uses [`Api`].
struct RawServer {
    _dir: tempfile::TempDir,
    socket: PathBuf,
}

impl RawServer {
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

/// Runs `wgmeshctl args` against `socket` and returns its stdout; fails the test otherwise.
fn ctl_ok(socket: &Path, args: &[&str]) -> String {
    let out = ctl(socket, args);
    assert!(
        out.status.success(),
        "wgmeshctl {args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The value of the `Key:` line of `status` output, if there is one.
fn row<'a>(stdout: &'a str, key: &str) -> Option<&'a str> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(str::trim_start)
}

// ------------------------------------------------------------------------------------------
// status and peers as users see them

#[test]
fn status_prints_aligned_key_value_lines() {
    let api = Api::standard();
    let stdout = ctl_ok(&api.socket, &["status"]);
    assert_eq!(
        stdout,
        "\
Interface:    wg0
Public key:   PYtJ5VmQqBAr7dnbTmCR1xP/v+/jrHmuTnGC4Aixu+o=
Mesh IPv4:    10.78.12.34
Mesh IPv6:    fd9d:af5d:d5d0:b3c7::1
Mesh subnet:  10.78.0.0/16
Network ID:   b6ed1c46b1404bc0
Listen port:  51820
Backend:      userspace (no kernel module)
Introducer:   no
Advertises:   -
Discovery:    -
Uptime:       1h 2m
Peers:        3 total, 2 active, 1 connected
Version:      0.1.0
"
    );
}

#[test]
fn status_shows_discovery_layers_introducer_routes_and_troubled_tasks() {
    let api = Api::serve(full_status(), full_peers());
    let stdout = ctl_ok(&api.socket, &["status"]);
    let want = [
        ("Interface", "wgmesh7"),
        ("Listen port", "51821"),
        ("Backend", "userspace (requested)"),
        ("Introducer", "yes"),
        ("Advertises", "192.168.10.0/24, fd10::/64"),
        (
            "Discovery",
            "dht retrying (no bootstrap node answered), gossip off, lan running (eth0, eth1)",
        ),
        ("Uptime", "2d 7h"),
        ("Peers", "9 total, 7 active, 5 connected, 1 quarantined"),
        ("Version", "0.9.9-test"),
        (
            "Task",
            "dht-discovery restarting (4 restarts): socket closed",
        ),
    ];
    for (key, value) in want {
        assert_eq!(row(&stdout, key), Some(value), "{key} in\n{stdout}");
    }
    // Healthy tasks are not listed, troubled ones are.
    assert_eq!(stdout.matches("\nTask:").count(), 1, "{stdout}");
    let columns: BTreeSet<usize> = stdout
        .lines()
        .map(|l| l.len() - l.split_once(':').unwrap().1.trim_start().len())
        .collect();
    assert_eq!(columns.len(), 1, "values not aligned:\n{stdout}");
}

#[test]
fn status_json_is_the_body_pretty_printed() {
    let api = Api::serve(full_status(), full_peers());
    let stdout = ctl_ok(&api.socket, &["status", "--json"]);
    let want = serde_json::to_string_pretty(&full_status()).unwrap();
    assert_eq!(stdout, format!("{want}\n"));
}

#[test]
fn peers_prints_a_table() {
    let api = Api::standard();
    assert_eq!(
        ctl_ok(&api.socket, &["peers"]),
        "\
HOSTNAME  MESH IP      ENDPOINT         VIA  LAST SEEN  HANDSHAKE   STATE
alpha     10.78.1.1    192.0.2.1:51820  lan  4s ago     1m 15s ago  active
-         10.78.200.7  -                -    2h 0m ago  never       dead
"
    );
}

#[test]
fn peers_lists_refused_routes_under_the_table() {
    let api = Api::serve(full_status(), full_peers());
    assert_eq!(
        ctl_ok(&api.socket, &["peers"]),
        "\
HOSTNAME  MESH IP      ENDPOINT            VIA  LAST SEEN  HANDSHAKE   STATE
alpha     10.78.1.1    192.0.2.1:51820     lan  4s ago     1m 15s ago  active
-         10.78.200.7  198.51.100.7:51820  dht  2h 0m ago  1h 56m ago  quarantined

Advertised routes not installed:
  alpha: 10.78.0.0/16 (mesh_subnet): overlaps the mesh subnet 10.78.0.0/16
  k2: 0.0.0.0/1 (too_broad): broader than /8
"
    );
}

#[test]
fn peers_json_and_empty_list() {
    let api = Api::standard();
    let stdout = ctl_ok(&api.socket, &["peers", "--json"]);
    let want = serde_json::to_string_pretty(&plain_peers()).unwrap();
    assert_eq!(stdout, format!("{want}\n"));

    let empty = Api::serve(
        plain_status(),
        PeerList {
            schema_version: SCHEMA_VERSION,
            peers: vec![],
        },
    );
    assert_eq!(ctl_ok(&empty.socket, &["peers"]), "No peers\n");
}

#[test]
fn socket_comes_from_the_environment_when_no_flag() {
    let api = Api::standard();
    let out = Command::new(env!("CARGO_BIN_EXE_wgmeshctl"))
        .args(["status", "--json"])
        .env("WGMESH_SOCKET", &api.socket)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let back: Status = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(back, plain_status());
}

// ------------------------------------------------------------------------------------------
// every field of the API is either rendered or deliberately left to --json

/// How `wgmeshctl status` treats each field of `GET /v1/status`. A path is the field names from
/// the top, `*` for a discovery layer's name and `[]` for a list element. `Ok(row)`: changing the
/// field changes that row of the text; `Err(reason)`: deliberately not in the text (`--json` has
/// it).
const STATUS_FIELDS: &[(&str, Result<&str, &str>)] = &[
    ("schema_version", Err("describes the body, not the node")),
    ("version", Ok("Version")),
    ("interface", Ok("Interface")),
    ("public_key", Ok("Public key")),
    ("mesh_ip", Ok("Mesh IPv4")),
    ("mesh_ipv6", Ok("Mesh IPv6")),
    ("mesh_subnet", Ok("Mesh subnet")),
    ("network_id", Ok("Network ID")),
    ("listen_port", Ok("Listen port")),
    ("wg_backend", Ok("Backend")),
    ("wg_backend_reason", Ok("Backend")),
    ("uptime_seconds", Ok("Uptime")),
    ("introducer", Ok("Introducer")),
    ("advertise_routes[]", Ok("Advertises")),
    ("discovery.*.state", Ok("Discovery")),
    ("discovery.*.detail", Ok("Discovery")),
    ("discovery.*.last_error", Ok("Discovery")),
    (
        "discovery.*.last_error_seconds_ago",
        Err("an age, for scripts; the text shows the state and the error"),
    ),
    (
        "discovery.*.last_success_seconds_ago",
        Err("an age, for scripts; the text shows the state and the error"),
    ),
    ("tasks[].name", Ok("Task")),
    ("tasks[].state", Ok("Task")),
    ("tasks[].restarts", Ok("Task")),
    ("tasks[].last_error", Ok("Task")),
    (
        "tasks[].last_error_seconds_ago",
        Err("an age, for scripts; the text shows the state and the error"),
    ),
    ("peers.total", Ok("Peers")),
    ("peers.active", Ok("Peers")),
    ("peers.connected", Ok("Peers")),
    ("peers.quarantined", Ok("Peers")),
    (
        "health.healthy",
        Err("PENDING: wgmeshctl rendering of the issue-8 fields"),
    ),
    (
        "health.reasons[].code",
        Err("PENDING: wgmeshctl rendering of the issue-8 fields"),
    ),
    (
        "health.reasons[].critical",
        Err("PENDING: wgmeshctl rendering of the issue-8 fields"),
    ),
    (
        "health.reasons[].detail",
        Err("PENDING: wgmeshctl rendering of the issue-8 fields"),
    ),
    (
        "last_reconcile.added",
        Err("PENDING: wgmeshctl rendering of the issue-8 fields"),
    ),
    (
        "last_reconcile.duration_ms",
        Err("PENDING: wgmeshctl rendering of the issue-8 fields"),
    ),
    (
        "last_reconcile.failed",
        Err("PENDING: wgmeshctl rendering of the issue-8 fields"),
    ),
    (
        "last_reconcile.removed",
        Err("PENDING: wgmeshctl rendering of the issue-8 fields"),
    ),
    (
        "last_reconcile.seconds_ago",
        Err("PENDING: wgmeshctl rendering of the issue-8 fields"),
    ),
    (
        "last_reconcile.updated",
        Err("PENDING: wgmeshctl rendering of the issue-8 fields"),
    ),
    (
        "log_level",
        Err("PENDING: wgmeshctl rendering of the issue-8 fields"),
    ),
    (
        "peers.by_via.cache",
        Err("PENDING: wgmeshctl rendering of the issue-8 fields"),
    ),
    (
        "peers.by_via.lan",
        Err("PENDING: wgmeshctl rendering of the issue-8 fields"),
    ),
    (
        "peers.cached",
        Err("PENDING: wgmeshctl rendering of the issue-8 fields"),
    ),
    (
        "peers.dead",
        Err("PENDING: wgmeshctl rendering of the issue-8 fields"),
    ),
];

/// How the `wgmeshctl peers` table treats each field of `GET /v1/peers` (paths as in
/// [`STATUS_FIELDS`]). `Ok`: changing the field changes the text; `Err(reason)`:
/// deliberately not in the table (`--json` has it).
const PEER_FIELDS: &[(&str, Result<(), &str>)] = &[
    ("schema_version", Err("describes the body, not the peers")),
    (
        "peers[].public_key",
        Ok(()), // names a peer without a hostname under "Advertised routes not installed"
    ),
    ("peers[].hostname", Ok(())),
    ("peers[].mesh_ip", Ok(())),
    ("peers[].mesh_ipv6", Err("the table keeps to one address")),
    ("peers[].endpoint", Ok(())),
    ("peers[].endpoint_method", Ok(())),
    (
        "peers[].discovered_via[]",
        Err("history; VIA shows how the current endpoint was learned"),
    ),
    ("peers[].introducer", Err("not in the table yet")),
    ("peers[].routable_networks[]", Err("not in the table yet")),
    ("peers[].last_seen_seconds_ago", Ok(())),
    ("peers[].state", Ok(())),
    ("peers[].last_handshake_seconds_ago", Ok(())),
    ("peers[].rx_bytes", Err("traffic counters are for scripts")),
    ("peers[].tx_bytes", Err("traffic counters are for scripts")),
    ("peers[].routes_refused[].prefix", Ok(())),
    ("peers[].routes_refused[].reason", Ok(())),
    ("peers[].routes_refused[].detail", Ok(())),
];

/// Every leaf of `value` as (concrete JSON pointer, field path as in [`STATUS_FIELDS`]).
/// `discovery`'s keys are layer names (data, not fields), so they become `*`.
fn leaves(value: &Value) -> Vec<(String, String)> {
    fn walk(v: &Value, pointer: String, path: String, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(map) => {
                for (key, child) in map {
                    let field = if path == "discovery" { "*" } else { key };
                    let sub = if path.is_empty() {
                        field.to_owned()
                    } else {
                        format!("{path}.{field}")
                    };
                    walk(child, format!("{pointer}/{key}"), sub, out);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(child, format!("{pointer}/{i}"), format!("{path}[]"), out);
                }
            }
            _ => out.push((pointer, path)),
        }
    }
    let mut out = Vec::new();
    walk(value, String::new(), String::new(), &mut out);
    out
}

/// Another value of the same type: a string gets a prefix, a number changes enough to show in
/// rounded durations and stays a valid port, a bool flips.
fn mutated(v: &Value) -> Option<Value> {
    match v {
        Value::String(s) => Some(Value::from(format!("x{s}"))),
        Value::Number(n) => n.as_u64().map(|n| Value::from((n + 1) * 2 % 65_536)),
        Value::Bool(b) => Some(Value::from(!b)),
        _ => None,
    }
}

/// For each field path of `fixture`: the text lines that changed when one of its values was
/// changed (empty when no change of that field shows). `show` publishes a body and returns what
/// the command printed.
fn what_each_field_changes(
    fixture: &Value,
    mut show: impl FnMut(&Value) -> String,
) -> BTreeMap<String, BTreeSet<String>> {
    let baseline = show(fixture);
    let mut changes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (pointer, path) in leaves(fixture) {
        let entry = changes.entry(path).or_default();
        let mut changed = fixture.clone();
        let leaf = changed.pointer_mut(&pointer).unwrap();
        let Some(new) = mutated(leaf) else { continue };
        *leaf = new;
        let after = show(&changed);
        let before: BTreeSet<&str> = baseline.lines().collect();
        entry.extend(
            after
                .lines()
                .filter(|l| !before.contains(l))
                .map(str::to_owned),
        );
    }
    changes
}

#[test]
fn status_renders_every_field_of_the_api_or_says_why_not() {
    let api = Api::serve(full_status(), full_peers());
    let fixture = serde_json::to_value(full_status()).unwrap();
    let changes = what_each_field_changes(&fixture, |body| {
        api.status
            .send(serde_json::from_value(body.clone()).unwrap())
            .unwrap();
        ctl_ok(&api.socket, &["status"])
    });
    let table: BTreeMap<&str, Result<&str, &str>> = STATUS_FIELDS.iter().copied().collect();
    let mut wrong = Vec::new();
    for (path, lines) in &changes {
        match table.get(path.as_str()) {
            None => wrong.push(format!(
                "`{path}` is new: render it in `wgmeshctl status` or say why not, in STATUS_FIELDS"
            )),
            Some(Ok(key)) if lines.is_empty() => {
                wrong.push(format!("`{path}` does not show in the {key} row"))
            }
            Some(Ok(key)) => {
                let elsewhere: Vec<&String> = lines
                    .iter()
                    .filter(|l| !l.starts_with(&format!("{key}:")))
                    .collect();
                if !elsewhere.is_empty() {
                    wrong.push(format!("`{path}` changes other rows: {elsewhere:?}"));
                }
            }
            Some(Err(_)) if !lines.is_empty() => wrong.push(format!(
                "`{path}` is listed as not shown but changes {lines:?}"
            )),
            Some(Err(_)) => {}
        }
    }
    for path in table.keys() {
        if !changes.contains_key(*path) {
            wrong.push(format!(
                "`{path}` is in STATUS_FIELDS but not in the fixture"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn peers_renders_every_field_of_the_api_or_says_why_not() {
    let api = Api::serve(full_status(), full_peers());
    let fixture = serde_json::to_value(full_peers()).unwrap();
    let changes = what_each_field_changes(&fixture, |body| {
        api.peers
            .send(serde_json::from_value(body.clone()).unwrap())
            .unwrap();
        ctl_ok(&api.socket, &["peers"])
    });
    let table: BTreeMap<&str, Result<(), &str>> = PEER_FIELDS.iter().copied().collect();
    let mut wrong = Vec::new();
    for (path, lines) in &changes {
        match table.get(path.as_str()) {
            None => wrong.push(format!(
                "`{path}` is new: render it in `wgmeshctl peers` or say why not, in PEER_FIELDS"
            )),
            Some(Ok(())) if lines.is_empty() => {
                wrong.push(format!("`{path}` does not show in the table"))
            }
            Some(Err(_)) if !lines.is_empty() => wrong.push(format!(
                "`{path}` is listed as not shown but changes {lines:?}"
            )),
            Some(_) => {}
        }
    }
    for path in table.keys() {
        if !changes.contains_key(*path) {
            wrong.push(format!("`{path}` is in PEER_FIELDS but not in the fixture"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

// ------------------------------------------------------------------------------------------
// failures

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
    // The real API answers 503 only under load; the body is built from the shared type.
    let problem = Problem::new(
        problem_type::OVERLOADED,
        "Service Unavailable",
        503,
        Some("more than 64 requests in flight; retry later".into()),
    );
    let daemon = RawServer::start(vec![(
        "/v1/status",
        "503 Service Unavailable",
        wgmesh_api_types::PROBLEM_CONTENT_TYPE,
        serde_json::to_string(&problem).unwrap(),
    )]);
    let out = ctl(&daemon.socket, &["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert_eq!(
        text(&out.stderr),
        "wgmeshctl: error: wgmeshd: Service Unavailable: \
         more than 64 requests in flight; retry later\n"
    );
}

#[test]
fn non_problem_error_answer_is_reported() {
    // The real API answers every error with problem+json; this is something else on the socket.
    let daemon = RawServer::start(vec![]);
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
    // Accepts and keeps the connection open without answering (a hung daemon).
    let hold = std::thread::spawn(move || listener.accept().map(|(stream, _)| stream));
    let started = std::time::Instant::now();
    let out = ctl(&socket, &["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("did not answer within 5 s"), "{stderr}");
    drop(hold.join().unwrap());
}
