//! The UAPI server over a real socket in a temporary directory, against the fake device.

use std::time::{Duration, UNIX_EPOCH};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::*;
use crate::keys::{PresharedKey, PublicKey};
use crate::metrics::Metrics;
use crate::supervisor::Registry;
use crate::system::uapi::socket_path;
use crate::system::wg::fake::FakeWireGuard;
use crate::system::wg::{DeviceUpdate, PeerConfig};

struct Harness {
    _tmp: tempfile::TempDir,
    path: PathBuf,
    wg: Arc<FakeWireGuard>,
    registry: Registry,
    metrics: Metrics,
    cancel: CancellationToken,
    run: tokio::task::JoinHandle<Result<(), TaskError>>,
}

async fn device() -> Arc<FakeWireGuard> {
    let wg = Arc::new(FakeWireGuard::new("wg9"));
    let peer = PublicKey([0x42; 32]);
    wg.apply(DeviceUpdate {
        private_key: Some(Arc::new(PrivateKey::from_bytes([7; 32]))),
        listen_port: Some(51820),
        add: vec![PeerConfig {
            public_key: peer,
            endpoint: Some("192.168.7.2:51820".parse().unwrap()),
            preshared_key: Some(PresharedKey([3; 32])),
            keepalive: Some(25),
            allowed_ips: vec!["10.9.0.2/32".parse().unwrap()],
        }],
        ..DeviceUpdate::default()
    })
    .await
    .unwrap();
    wg.set_handshake(&peer, UNIX_EPOCH + Duration::from_secs(1_795_000_000));
    wg.add_transfer(&peer, 100, 200);
    wg
}

async fn start_in(tmp: tempfile::TempDir, wg: Arc<FakeWireGuard>) -> Harness {
    let registry = Registry::default();
    let metrics = Metrics::default();
    let cancel = CancellationToken::new();
    let dir = tmp.path().join("wireguard");
    let server = Arc::new(UapiServer {
        dir: dir.clone(),
        iface: "wg9".to_owned(),
        wg: wg.clone(),
        private_key: Arc::new(PrivateKey::from_bytes([7; 32])),
        layer: registry.layer("uapi", LayerState::Running),
        counters: metrics.layer("uapi"),
    });
    let run = tokio::spawn(server.run(cancel.clone()));
    let path = socket_path(&dir, "wg9");
    while !path.exists() {
        assert!(!run.is_finished(), "server ended: {:?}", run.await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Harness {
        _tmp: tmp,
        path,
        wg,
        registry,
        metrics,
        cancel,
        run,
    }
}

async fn start() -> Harness {
    start_in(tempfile::tempdir().unwrap(), device().await).await
}

/// Sends `request` and reads until the server closes or `answers` empty-line terminators came.
async fn exchange(stream: &mut UnixStream, request: &[u8], answers: usize) -> String {
    stream.write_all(request).await.unwrap();
    let mut got: Vec<u8> = Vec::new();
    let mut buf = [0u8; 65536];
    let mut seen = 0;
    while seen < answers {
        let n = stream.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        // Only the new bytes (and the one before them) can complete a terminator.
        let from = got.len().saturating_sub(1);
        got.extend_from_slice(&buf[..n]);
        seen += got[from..].windows(2).filter(|w| w == b"\n\n").count();
    }
    String::from_utf8(got).unwrap()
}

/// Whether the server closed `stream` (reads EOF, or a reset after unread data).
async fn closed(stream: &mut UnixStream) -> bool {
    let mut buf = [0u8; 64];
    match stream.read(&mut buf).await {
        Ok(0) => true,
        Ok(n) => panic!("unexpected data: {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
    }
}

fn drops(h: &Harness) -> std::collections::BTreeMap<&'static str, u64> {
    h.metrics.layer("uapi").drops()
}

#[tokio::test]
async fn get_answers_with_the_device_as_it_is_now() {
    let h = start().await;
    let mut s = UnixStream::connect(&h.path).await.unwrap();
    let first = exchange(&mut s, b"get=1\n\n", 1).await;
    let live = h.wg.read().await.unwrap();
    let key = PrivateKey::from_bytes([7; 32]);
    assert_eq!(first, *get_answer(&live, Some(&key)));
    assert!(first.starts_with(&format!("private_key={}\n", "07".repeat(32))));
    assert!(first.contains("endpoint=192.168.7.2:51820\n"), "{first}");
    assert!(first.contains("last_handshake_time_sec=1795000000\n"));
    assert!(
        first.contains("rx_bytes=100\ntx_bytes=200\n")
            || first.contains("tx_bytes=200\nrx_bytes=100\n")
    );

    // Fresh per request: a change shows in the next answer on the same connection.
    h.wg.add_transfer(&PublicKey([0x42; 32]), 5, 0);
    let second = exchange(&mut s, b"get=1\n\n", 1).await;
    assert!(second.contains("rx_bytes=105\n"), "{second}");

    let layer = h.registry.layers()["uapi"].clone();
    assert_eq!(layer.state, LayerState::Running);
    assert_eq!(layer.detail.as_deref(), Some(&*h.path.to_string_lossy()));
    assert!(layer.last_success_at.is_some());
    assert_eq!(h.metrics.values().layers["uapi"].1, 2, "two answers sent");
    drop(s);
    h.cancel.cancel();
    h.run.await.unwrap().unwrap();
}

#[tokio::test]
async fn set_is_refused_and_changes_nothing() {
    let h = start().await;
    let applies = h.wg.applies().len();
    let before = h.wg.read().await.unwrap();
    let mut s = UnixStream::connect(&h.path).await.unwrap();
    let set = format!(
        "set=1\nprivate_key={}\nlisten_port=1\nreplace_peers=true\npublic_key={}\nremove=true\n\n",
        "01".repeat(32),
        "42".repeat(32)
    );
    assert_eq!(exchange(&mut s, set.as_bytes(), 1).await, "errno=-1\n\n");
    // The connection goes on after a refused set.
    let answer = exchange(&mut s, b"get=1\n\n", 1).await;
    assert!(answer.ends_with("errno=0\n\n"), "{answer}");
    assert_eq!(h.wg.applies().len(), applies);
    assert_eq!(h.wg.read().await.unwrap(), before);
    assert_eq!(drops(&h).get("set_refused"), Some(&1));
    h.cancel.cancel();
    h.run.await.unwrap().unwrap();
}

#[tokio::test]
async fn malformed_requests_get_an_errno_and_a_closed_connection() {
    let h = start().await;
    let too_long = vec![b'x'; protocol::LINE_CAP + 100];
    let mut too_big = b"set=1\n".to_vec();
    for _ in 0..100 {
        too_big.extend_from_slice(&[b'y'; 1000]);
        too_big.push(b'\n');
    }
    let cases: [(&str, &[u8], &str, &str); 5] = [
        ("garbage", b"hello\n", "errno=-22\n\n", "unknown_operation"),
        (
            "binary",
            &[0, 255, 7, b'\n'],
            "errno=-22\n\n",
            "unknown_operation",
        ),
        (
            "get with a trailer",
            b"get=1\nx=1\n\n",
            "errno=-22\n\n",
            "trailing_after_get",
        ),
        ("endless line", &too_long, "errno=-90\n\n", "line_too_long"),
        ("huge set", &too_big, "errno=-90\n\n", "request_too_large"),
    ];
    for (name, request, answer, reason) in cases {
        let mut s = UnixStream::connect(&h.path).await.unwrap();
        assert_eq!(exchange(&mut s, request, 1).await, answer, "{name}");
        assert!(closed(&mut s).await, "{name}: connection left open");
        assert!(
            drops(&h).get(reason).is_some_and(|n| *n >= 1),
            "{name}: {:?}",
            drops(&h)
        );
    }
    // A request cut short is counted, and the server keeps serving.
    let mut s = UnixStream::connect(&h.path).await.unwrap();
    s.write_all(b"set=1\nlisten_port=5\n").await.unwrap();
    drop(s);
    let mut s = UnixStream::connect(&h.path).await.unwrap();
    assert!(
        exchange(&mut s, b"get=1\n\n", 1)
            .await
            .ends_with("errno=0\n\n")
    );
    assert_eq!(drops(&h).get("cut_request"), Some(&1));
    h.cancel.cancel();
    h.run.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_device_that_cannot_be_read_answers_eio() {
    let h = start().await;
    h.wg.fail_reads(1);
    let mut s = UnixStream::connect(&h.path).await.unwrap();
    assert_eq!(exchange(&mut s, b"get=1\n\n", 1).await, "errno=-5\n\n");
    assert!(
        exchange(&mut s, b"get=1\n\n", 1)
            .await
            .ends_with("errno=0\n\n")
    );
    h.cancel.cancel();
    h.run.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn connections_are_capped_and_idle_ones_time_out() {
    let h = start().await;
    let mut idle = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        idle.push(UnixStream::connect(&h.path).await.unwrap());
    }
    // Give the accept loop time to take them all.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut extra = UnixStream::connect(&h.path).await.unwrap();
    assert!(
        closed(&mut extra).await,
        "a connection over the cap was served"
    );
    assert_eq!(drops(&h).get("busy"), Some(&1));
    // The idle ones are closed by the connection timeout; then new callers are served again.
    for s in &mut idle {
        assert!(closed(s).await);
    }
    assert_eq!(drops(&h).get("timeout"), Some(&(MAX_CONNECTIONS as u64)));
    let mut s = UnixStream::connect(&h.path).await.unwrap();
    assert!(
        exchange(&mut s, b"get=1\n\n", 1)
            .await
            .ends_with("errno=0\n\n")
    );
    h.cancel.cancel();
    h.run.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_socket_file_goes_when_the_task_ends() {
    let h = start().await;
    let mut s = UnixStream::connect(&h.path).await.unwrap();
    s.write_all(b"get=1\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    h.cancel.cancel();
    h.run.await.unwrap().unwrap();
    assert!(!h.path.exists(), "socket file left behind");
    assert!(
        closed(&mut s).await,
        "open connection not closed at shutdown"
    );
}

#[tokio::test]
async fn a_live_socket_of_another_process_is_not_taken_over() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wireguard");
    std::fs::create_dir(&dir).unwrap();
    let path = socket_path(&dir, "wg9");
    let other = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let registry = Registry::default();
    let server = Arc::new(UapiServer {
        dir,
        iface: "wg9".to_owned(),
        wg: device().await,
        private_key: Arc::new(PrivateKey::from_bytes([7; 32])),
        layer: registry.layer("uapi", LayerState::Running),
        counters: LayerCounters::default(),
    });
    let err = server.run(CancellationToken::new()).await.unwrap_err();
    assert!(err.to_string().contains("another process serves"), "{err}");
    assert!(path.exists(), "the other process's socket was removed");
    // Still the other process's: it accepts.
    let _client = std::os::unix::net::UnixStream::connect(&path).unwrap();
    assert!(other.accept().is_ok());
    drop(other);

    // Once it is gone (file left: stale), the next run takes the path.
    let h = start_in(tmp, device().await).await;
    assert_eq!(h.path, path);
    h.cancel.cancel();
    h.run.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_caller_that_is_not_root_gets_eacces_and_nothing_of_the_device() {
    let wg = device().await;
    // The next read fails: if the server read the device for a refused caller, it would use it up.
    wg.fail_reads(1);
    let server = Arc::new(UapiServer {
        dir: PathBuf::from("/nonexistent"),
        iface: "wg9".to_owned(),
        wg: wg.clone(),
        private_key: Arc::new(PrivateKey::from_bytes([7; 32])),
        layer: Registry::default().layer("uapi", LayerState::Running),
        counters: LayerCounters::default(),
    });
    for (name, request) in [
        ("get", b"get=1\n\n".as_slice()),
        ("set", b"set=1\nlisten_port=9\n\n"),
        ("garbage", b"hello\n"),
    ] {
        let (mut client, conn) = UnixStream::pair().unwrap();
        let serving = tokio::spawn(server.clone().serve(conn, Caller::Other(Some(65534))));
        assert_eq!(
            exchange(&mut client, request, 1).await,
            "errno=-13\n\n",
            "{name}"
        );
        assert!(closed(&mut client).await, "{name}");
        serving.await.unwrap();
    }
    // Just connecting and leaving (as `wg` does to probe for the socket) is not a refusal.
    let (client, conn) = UnixStream::pair().unwrap();
    drop(client);
    server.clone().serve(conn, Caller::Other(None)).await;
    assert_eq!(server.counters.drops().get("not_root"), Some(&3));
    assert!(
        wg.read().await.is_err(),
        "the device was read for a caller that is not root"
    );
}

/// Prints what a `get` costs on top of the device read with 1000 peers (formatting and the
/// socket; the fake's read is a copy). Asserts only the answer's shape.
#[tokio::test]
async fn a_get_with_1000_peers_measured() {
    let wg = Arc::new(FakeWireGuard::new("wg9"));
    let add = (0..1000u16)
        .map(|i| {
            let [hi, lo] = i.to_be_bytes();
            let mut key = [0x11; 32];
            key[..2].copy_from_slice(&[hi, lo]);
            PeerConfig {
                public_key: PublicKey(key),
                endpoint: Some(std::net::SocketAddr::from(([192, 168, hi, lo], 51820))),
                preshared_key: Some(PresharedKey([3; 32])),
                keepalive: Some(25),
                allowed_ips: vec![
                    format!("10.{hi}.{lo}.1/32").parse().unwrap(),
                    format!("fd00::{hi:x}:{lo:x}/128").parse().unwrap(),
                ],
            }
        })
        .collect();
    wg.apply(DeviceUpdate {
        private_key: Some(Arc::new(PrivateKey::from_bytes([7; 32]))),
        listen_port: Some(51820),
        add,
        ..DeviceUpdate::default()
    })
    .await
    .unwrap();
    let h = start_in(tempfile::tempdir().unwrap(), wg).await;
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..20 {
        let started = std::time::Instant::now();
        let mut s = UnixStream::connect(&h.path).await.unwrap();
        let answer = exchange(&mut s, b"get=1\n\n", 1).await;
        times.push(started.elapsed());
        assert_eq!(answer.matches("\npublic_key=").count(), 1000);
        assert!(answer.ends_with("errno=0\n\n"));
        size = answer.len();
    }
    times.sort();
    println!(
        "UAPI get with 1000 peers (fake device, {} build): {size} bytes, median {:?}, max {:?}",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        times[times.len() / 2],
        times[times.len() - 1]
    );
    h.cancel.cancel();
    h.run.await.unwrap().unwrap();
}
