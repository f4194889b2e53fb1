//! The DHT task against real DHT nodes on the loopback (the `mainline` library works offline)
//! and a fake exchange.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::nodefile::{self, NodeRecord};
use super::*;
use crate::config::{MeshSecret, SecretOrigin};
use crate::metrics::Metrics;
use crate::supervisor::{LayerRecord, LayerState, Registry};
use crate::system::net::HostInterface;
use crate::wire::PeerAnnouncement;

/// An exchange that records every HELLO and answers from a fixed set of addresses.
#[derive(Default)]
struct FakeExchange {
    answering: HashSet<SocketAddr>,
    hellos: Mutex<Vec<(SocketAddr, Method)>>,
}

impl FakeExchange {
    fn hellos(&self) -> Vec<(SocketAddr, Method)> {
        self.hellos.lock().unwrap().clone()
    }
}

impl Exchange for FakeExchange {
    fn hello(
        &self,
        addr: SocketAddr,
        method: Method,
    ) -> BoxFuture<'_, Result<Contacted, ContactError>> {
        self.hellos.lock().unwrap().push((addr, method));
        let answers = self.answering.contains(&addr);
        Box::pin(async move {
            if answers {
                Ok(Contacted {
                    announcement: PeerAnnouncement {
                        wg_pubkey: crate::keys::PublicKey([9; 32]).to_string(),
                        ..PeerAnnouncement::default()
                    },
                    from: addr,
                })
            } else {
                Err(ContactError::Timeout(addr))
            }
        })
    }

    fn send(&self, _addr: SocketAddr, _datagram: Vec<u8>) -> BoxFuture<'_, std::io::Result<()>> {
        Box::pin(async { Ok(()) })
    }

    fn control_endpoint(&self, _peer: &crate::keys::PublicKey) -> Option<SocketAddr> {
        None
    }
}

/// A DHT node with no bootstrap on the loopback: the lab's bootstrap node in small.
async fn boot_node() -> DhtNode {
    DhtNode::start(NodeConfig {
        bind: Ipv4Addr::LOCALHOST,
        port: 0,
        bootstrap: Vec::new(),
    })
    .await
    .unwrap()
}

struct Harness {
    task: DhtDiscovery,
    registry: Registry,
    metrics: Metrics,
    _dir: tempfile::TempDir,
}

/// A task announcing `gossip_port`, bootstrapping from `bootstrap`, talking through `exchange`,
/// on a host whose only address is the loopback.
fn harness(gossip_port: u16, bootstrap: &[SocketAddr], exchange: Arc<FakeExchange>) -> Harness {
    let registry = Registry::default();
    let metrics = Metrics::default();
    let dir = tempfile::tempdir().unwrap();
    let secret = MeshSecret::parse("dht-task-test-secret-0123", SecretOrigin::Literal).unwrap();
    let lo = HostInterface {
        index: 1,
        name: "lo".into(),
        up: true,
        multicast: false,
        loopback: true,
        addresses: vec!["127.0.0.1/8".parse().unwrap()],
    };
    let task = DhtDiscovery {
        ids: HourlyIds::new(secret),
        node_file: dir
            .path()
            .join("state")
            .join("wg0-0011223344556677-dht.nodes"),
        bind: Ipv4Addr::LOCALHOST,
        port: 0,
        gossip_port,
        bootstrap: bootstrap
            .iter()
            .map(|a| a.to_string().parse().unwrap())
            .collect(),
        ipv6: true,
        exchange,
        store: Arc::new(PeerStore::new(10)),
        local: watch::channel(crate::node::tests::local()).1,
        interfaces: watch::channel(vec![lo]).1,
        layer: registry.layer("dht", LayerState::Running),
        counters: metrics.layer("dht"),
    };
    Harness {
        task,
        registry,
        metrics,
        _dir: dir,
    }
}

/// Waits (at most 20 s) until the `dht` layer satisfies `want`; returns it.
async fn wait_layer(
    registry: &Registry,
    what: &str,
    want: impl Fn(&LayerRecord) -> bool,
) -> LayerRecord {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let layer = registry.layers()["dht"].clone();
        if want(&layer) {
            return layer;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dht layer never {what}: {layer:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn detail_has(layer: &LayerRecord, text: &str) -> bool {
    layer.state == LayerState::Running && layer.detail.as_deref().is_some_and(|d| d.contains(text))
}

/// The DHT port shown in a running layer's detail (`UDP <port>, …`).
fn port_of(layer: &LayerRecord) -> u16 {
    let detail = layer.detail.as_deref().unwrap();
    detail
        .strip_prefix("UDP ")
        .and_then(|d| d.split(',').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {detail:?}"))
}

async fn stop(cancel: CancellationToken, run: tokio::task::JoinHandle<Result<(), TaskError>>) {
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the task stops on cancellation")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn peers_announced_in_the_dht_get_a_hello_and_the_node_file_is_saved_at_stop() {
    let boot = boot_node().await;
    let bootstrap = [SocketAddr::V4(boot.local_addr())];
    let a_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 40001));
    let b_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 40002));

    // A announces first.
    let a_exchange = Arc::new(FakeExchange::default());
    let a = harness(a_addr.port(), &bootstrap, a_exchange.clone());
    let a_cancel = CancellationToken::new();
    let a_run = tokio::spawn(a.task.clone().run(a_cancel.clone()));
    wait_layer(&a.registry, "announced", |l| {
        detail_has(l, "announced 1 time")
    })
    .await;

    // B finds A right after its own first announce, and A answers.
    let b_exchange = Arc::new(FakeExchange {
        answering: [a_addr].into(),
        ..FakeExchange::default()
    });
    let b = harness(b_addr.port(), &bootstrap, b_exchange.clone());
    let b_cancel = CancellationToken::new();
    let b_run = tokio::spawn(b.task.clone().run(b_cancel.clone()));
    let layer = wait_layer(&b.registry, "counted an answer", |l| {
        detail_has(l, "1 answered")
    })
    .await;
    assert!(layer.last_success_at.is_some());
    let hellos = b_exchange.hellos();
    assert_eq!(
        hellos,
        [(a_addr, Method::Dht)],
        "B says HELLO to A only, once"
    );
    assert!(
        a_exchange.hellos().iter().all(|(addr, _)| *addr != a_addr),
        "A never contacts itself"
    );
    // The two hourly ids are announced one after the other: the second may still be on its way
    // when the first contact answers.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let (events, sends) = loop {
        let (events, sends) = b.metrics.values().layers["dht"];
        if sends >= 2 || tokio::time::Instant::now() >= deadline {
            break (events, sends);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(events, 1, "one peer answered");
    assert!(sends >= 2, "both hourly ids announced: {sends}");
    assert!(!b_run.is_finished() && !a_run.is_finished());

    let port = port_of(&layer);
    stop(b_cancel, b_run).await;
    // The node file holds the nodes B knew, with their ids, privately.
    let file = &b.task.node_file;
    let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dir_mode = std::fs::metadata(file.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700);
    let nodes = nodefile::decode(&std::fs::read(file).unwrap()).unwrap();
    assert!(
        nodes
            .iter()
            .any(|n| n.addr == bootstrap[0] && n.id == boot.id()),
        "{nodes:?}"
    );
    // Its DHT thread is gone: the port is free again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "DHT port {port} still bound after stop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop(a_cancel, a_run).await;
}

#[tokio::test]
async fn a_silent_bootstrap_node_is_reported_and_retried_until_cancelled() {
    // Bound, never answering.
    let silent = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let silent = silent.local_addr().unwrap();
    let h = harness(40003, &[silent], Arc::new(FakeExchange::default()));
    let cancel = CancellationToken::new();
    let run = tokio::spawn(h.task.clone().run(cancel.clone()));
    let want = format!("no DHT bootstrap node answered (tried {silent})");
    let layer = wait_layer(&h.registry, "reported the silent node", |l| {
        l.state == LayerState::Retrying && l.last_error.as_deref() == Some(want.as_str())
    })
    .await;
    assert!(layer.last_success_at.is_none());
    assert!(!run.is_finished(), "the task gave up");
    assert!(!h.task.node_file.exists(), "nothing to save");
    stop(cancel, run).await;
}

#[tokio::test]
async fn the_node_file_of_the_last_run_bootstraps_when_the_configured_node_is_silent() {
    let boot = boot_node().await;
    let silent = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let silent = silent.local_addr().unwrap();
    let h = harness(40004, &[silent], Arc::new(FakeExchange::default()));
    let file = &h.task.node_file;
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let warm = [NodeRecord {
        id: boot.id(),
        addr: SocketAddr::V4(boot.local_addr()),
    }];
    std::fs::write(file, nodefile::encode(&warm)).unwrap();
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cancel = CancellationToken::new();
    let run = tokio::spawn(h.task.clone().run(cancel.clone()));
    wait_layer(&h.registry, "bootstrapped from the node file", |l| {
        detail_has(l, "1 node in the routing table")
    })
    .await;
    stop(cancel, run).await;
}

#[test]
fn settings_follow_the_mesh_and_hide_the_secret() {
    let secret = MeshSecret::parse("test-secret-0123456789", SecretOrigin::Literal).unwrap();
    let keys = DerivedKeys::derive(&secret);
    let s = DhtSettings::new(
        &secret,
        &keys,
        Path::new("/var/lib/wgmesh"),
        "wg0",
        &[],
        true,
    );
    assert_eq!(
        s.node_file,
        Path::new("/var/lib/wgmesh/wg0-b6ed1c46b1404bc0-dht.nodes")
    );
    assert_eq!((s.port, s.gossip_port), (52191, 52190));
    assert_eq!(s.bootstrap.len(), PUBLIC_ROUTERS.len());
    assert!(!format!("{s:?}").contains("test-secret"));
}

#[test]
fn the_public_routers_are_the_default_and_configured_nodes_replace_them() {
    let defaults: Vec<String> = bootstrap_nodes(&[])
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(defaults, PUBLIC_ROUTERS);
    let mine: HostPort = "192.168.7.1:6881".parse().unwrap();
    assert_eq!(bootstrap_nodes(std::slice::from_ref(&mine)), [mine]);
    assert_eq!(
        node_file_path(Path::new("/var/lib/wgmesh"), "wg0", &[0xb6; 20]),
        Path::new("/var/lib/wgmesh/wg0-b6b6b6b6b6b6b6b6-dht.nodes")
    );
}
