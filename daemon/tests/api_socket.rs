//! The control API on a real unix socket: serve, answer, stop on cancel, clean up, and refuse to
//! take over a socket a live daemon answers on.
#![cfg(feature = "runtime")]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wgmesh_api_types::{PeerCounts, PeerList, SCHEMA_VERSION, Status};
use wgmeshd::api::{ApiError, ApiState, bind, serve};

fn status() -> Status {
    Status {
        schema_version: SCHEMA_VERSION,
        version: "0.1.0".into(),
        interface: "wgtest0".into(),
        public_key: "pk".into(),
        mesh_ip: "10.9.8.7".into(),
        mesh_ipv6: "fd00::7".into(),
        mesh_subnet: "10.9.0.0/16".into(),
        network_id: "0123456789abcdef".into(),
        listen_port: 51820,
        wg_backend: "userspace".into(),
        wg_backend_reason: "test".into(),
        uptime_seconds: 1,
        peers: PeerCounts::default(),
        ..Status::default()
    }
}

/// Publishing side kept alive for the test's duration, like the daemon keeps its senders.
struct Running {
    _status: watch::Sender<Status>,
    _peers: watch::Sender<PeerList>,
    token: CancellationToken,
    task: JoinHandle<Result<(), ApiError>>,
}

fn start(path: &Path) -> Running {
    let (status_tx, status_rx) = watch::channel(status());
    let (peers_tx, peers_rx) = watch::channel(PeerList {
        schema_version: SCHEMA_VERSION,
        peers: vec![],
    });
    let state = ApiState {
        status: status_rx,
        peers: peers_rx,
    };
    let token = CancellationToken::new();
    let path = path.to_owned();
    let shutdown = token.clone();
    let task = tokio::spawn(async move { serve(bind(&path).await?, state, shutdown).await });
    Running {
        _status: status_tx,
        _peers: peers_tx,
        token,
        task,
    }
}

/// `GET path` over the socket; status code and body.
async fn get(socket: &Path, path: &str) -> (u16, Bytes) {
    let stream = UnixStream::connect(socket).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let driver = tokio::spawn(conn);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let code = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    driver.abort();
    (code, body)
}

/// Waits until something accepts connections on `socket`.
async fn wait_ready(socket: &Path) {
    for _ in 0..500 {
        if UnixStream::connect(socket).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("API never came up on {}", socket.display());
}

async fn stop(running: Running) -> Result<(), ApiError> {
    running.token.cancel();
    tokio::time::timeout(Duration::from_secs(15), running.task)
        .await
        .expect("serve returns after cancel")
        .unwrap()
}

fn socket_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("run").join("wgmeshd.sock")
}

#[tokio::test]
async fn serves_status_then_stops_and_removes_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = socket_in(&dir);
    let running = start(&socket);
    wait_ready(&socket).await;

    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660);
    let (code, body) = get(&socket, "/v1/status").await;
    assert_eq!(code, 200);
    assert_eq!(serde_json::from_slice::<Status>(&body).unwrap(), status());
    let (code, _) = get(&socket, "/v1/missing").await;
    assert_eq!(code, 404);

    stop(running).await.unwrap();
    assert!(!socket.exists(), "socket file left behind");
}

#[tokio::test]
async fn a_stale_socket_file_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let socket = socket_in(&dir);
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    // What a crashed daemon leaves: a socket file nobody listens on.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());

    let running = start(&socket);
    wait_ready(&socket).await;
    let (code, _) = get(&socket, "/v1/peers").await;
    assert_eq!(code, 200);
    stop(running).await.unwrap();
    assert!(!socket.exists());
}

#[tokio::test]
async fn a_second_daemon_on_a_live_socket_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let socket = socket_in(&dir);
    let first = start(&socket);
    wait_ready(&socket).await;

    let second = start(&socket);
    let err = tokio::time::timeout(Duration::from_secs(5), second.task)
        .await
        .expect("second serve returns at once")
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, ApiError::AlreadyServing { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!("another wgmeshd is already serving {}", socket.display())
    );

    // The first daemon keeps its socket and its clients.
    let (code, _) = get(&socket, "/v1/status").await;
    assert_eq!(code, 200);
    stop(first).await.unwrap();
    assert!(!socket.exists());
}

#[tokio::test]
async fn a_client_that_never_finishes_its_request_does_not_hold_shutdown() {
    use tokio::io::AsyncWriteExt as _;
    let dir = tempfile::tempdir().unwrap();
    let socket = socket_in(&dir);
    let running = start(&socket);
    wait_ready(&socket).await;
    let mut slow = UnixStream::connect(&socket).await.unwrap();
    slow.write_all(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Let the server read the partial request, so the connection is busy, not idle.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = std::time::Instant::now();
    stop(running).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "drain was not awaited at all"
    );
    assert!(!socket.exists());
    drop(slow);
}
