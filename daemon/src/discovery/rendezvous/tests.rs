//! The rendezvous task against a fake exchange socket and a fake device, under paused time.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{Mutex, mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::pair::pair_id;
use super::*;
use crate::crypto::envelope::OpenedEnvelope;
use crate::discovery::contact::Contacted;
use crate::peers::PeerUpdate;
use crate::supervisor::{LayerRecord, LayerState, Registry};
use crate::wire::PeerAnnouncement;

const GP: u16 = 52190;

fn key(b: u8) -> PublicKey {
    PublicKey([b; 32])
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn lock<T>(m: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap()
}

/// An exchange socket that answers HELLOs from a table, records what is sent, and stores
/// repliers as the real one does.
#[derive(Default)]
struct FakeExchange {
    /// Address → the announcement its REPLY carries. Other addresses time out (after 4 s).
    replies: StdMutex<HashMap<SocketAddr, PeerAnnouncement>>,
    /// Learned control endpoints.
    control: StdMutex<HashMap<PublicKey, SocketAddr>>,
    hellos: StdMutex<Vec<SocketAddr>>,
    sent: StdMutex<Vec<(SocketAddr, Vec<u8>)>>,
    /// Every send and HELLO fails as a stopped socket would.
    stopped: StdMutex<bool>,
    store: StdMutex<Option<Arc<PeerStore>>>,
}

impl Exchange for FakeExchange {
    fn hello(
        &self,
        addr: SocketAddr,
        method: Method,
    ) -> BoxFuture<'_, Result<Contacted, ContactError>> {
        Box::pin(async move {
            if *lock(&self.stopped) {
                return Err(ContactError::NotRunning);
            }
            lock(&self.hellos).push(addr);
            let reply = lock(&self.replies).get(&addr).cloned();
            let Some(announcement) = reply else {
                tokio::time::sleep(Duration::from_secs(4)).await;
                return Err(ContactError::Timeout(addr));
            };
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Some(store) = lock(&self.store).clone() {
                let update = sender_update(&announcement, addr, true).unwrap();
                store.update(update, method, now());
            }
            lock(&self.control).insert(announcement.wg_pubkey.parse().unwrap(), addr);
            Ok(Contacted {
                announcement,
                from: addr,
            })
        })
    }

    fn send(&self, addr: SocketAddr, datagram: Vec<u8>) -> BoxFuture<'_, std::io::Result<()>> {
        Box::pin(async move {
            if *lock(&self.stopped) {
                return Err(std::io::Error::other("exchange socket closed"));
            }
            lock(&self.sent).push((addr, datagram));
            Ok(())
        })
    }

    fn control_endpoint(&self, peer: &PublicKey) -> Option<SocketAddr> {
        lock(&self.control).get(peer).copied()
    }
}

/// A device whose handshakes the test sets; a kick of a peer in `answers` completes a
/// handshake at once (also as published: the reconcile loop would publish it within 5 s).
#[derive(Default)]
struct FakeTunnel {
    published: StdMutex<HashMap<PublicKey, SystemTime>>,
    current: StdMutex<HashMap<PublicKey, SystemTime>>,
    answers: StdMutex<HashSet<PublicKey>>,
    kicks: StdMutex<Vec<PublicKey>>,
}

impl Tunnel for FakeTunnel {
    fn published_handshake(&self, peer: &PublicKey) -> Option<SystemTime> {
        lock(&self.published).get(peer).copied()
    }

    fn current_handshake(&self, peer: &PublicKey) -> BoxFuture<'_, Option<SystemTime>> {
        let at = lock(&self.current).get(peer).copied();
        Box::pin(async move { at })
    }

    fn kick(&self, peer: PublicKey) -> BoxFuture<'_, ()> {
        lock(&self.kicks).push(peer);
        if lock(&self.answers).contains(&peer) {
            let at = SystemTime::now() + Duration::from_secs(1);
            lock(&self.current).insert(peer, at);
            lock(&self.published).insert(peer, at);
        }
        Box::pin(async {})
    }
}

/// A wall clock that moves with tokio's (paused) clock.
fn paused_clock() -> WallClock {
    let (wall, mono) = (SystemTime::now(), tokio::time::Instant::now());
    Arc::new(move || wall + mono.elapsed())
}

struct Rig {
    task: Rendezvous,
    exchange: Arc<FakeExchange>,
    tunnel: Arc<FakeTunnel>,
    inbound: mpsc::Sender<Inbound>,
    registry: Registry,
    metrics: crate::metrics::Metrics,
    local: watch::Sender<LocalNode>,
}

fn rig(introducer: bool) -> Rig {
    let exchange = Arc::new(FakeExchange::default());
    let tunnel = Arc::new(FakeTunnel::default());
    let store = Arc::new(PeerStore::new(100));
    *lock(&exchange.store) = Some(store.clone());
    let registry = Registry::default();
    let metrics = crate::metrics::Metrics::default();
    let (tx, rx) = mpsc::channel(16);
    let mut node = crate::node::tests::local();
    node.introducer = introducer;
    let (local_tx, local) = watch::channel(node);
    let task = Rendezvous {
        exchange: exchange.clone(),
        tunnel: tunnel.clone(),
        envelope: Envelope::new(&[7; 32]),
        store,
        local,
        inbound: Arc::new(Mutex::new(rx)),
        gossip_port: GP,
        ipv6: true,
        layer: registry.layer("rendezvous", LayerState::Running),
        counters: metrics.layer("rendezvous"),
        clock: paused_clock(),
    };
    Rig {
        task,
        exchange,
        tunnel,
        inbound: tx,
        registry,
        metrics,
        local: local_tx,
    }
}

impl Rig {
    fn start(
        &self,
    ) -> (
        CancellationToken,
        tokio::task::JoinHandle<Result<(), TaskError>>,
    ) {
        let cancel = CancellationToken::new();
        let run = tokio::spawn(self.task.clone().run(cancel.clone()));
        (cancel, run)
    }

    fn sealed<T: serde::Serialize>(&self, kind: MessageType, payload: &T) -> OpenedEnvelope {
        let datagram = self.task.envelope.seal(kind, payload).unwrap();
        self.task
            .envelope
            .open_raw(&datagram, SystemTime::now())
            .unwrap()
    }

    async fn deliver<T: serde::Serialize>(&self, kind: MessageType, payload: &T, source: &str) {
        let opened = self.sealed(kind, payload);
        self.inbound
            .send(Inbound {
                opened,
                source: addr(source),
            })
            .await
            .unwrap();
    }

    /// Everything sent so far, opened: (destination, type, plaintext JSON).
    fn sent(&self) -> Vec<(SocketAddr, MessageType, serde_json::Value)> {
        lock(&self.exchange.sent)
            .iter()
            .map(|(to, d)| {
                let o = self.task.envelope.open_raw(d, SystemTime::now()).unwrap();
                (
                    *to,
                    o.msg_type,
                    serde_json::from_slice(&o.plaintext).unwrap(),
                )
            })
            .collect()
    }

    fn layer(&self) -> LayerRecord {
        self.registry.layers()["rendezvous"].clone()
    }

    fn counters(&self) -> (u64, u64) {
        self.metrics.values().layers["rendezvous"]
    }

    /// Stores `b` as a peer learned on the exchange socket.
    fn store_peer(&self, b: u8, endpoint: &str, introducer: bool, method: Method) {
        let update = PeerUpdate {
            mesh_ip: Some(format!("10.1.0.{b}").parse().unwrap()),
            endpoint: Some(addr(endpoint)),
            introducer,
            ..PeerUpdate::new(key(b))
        };
        self.task.store.update(update, method, now());
    }
}

/// The wall clock in Unix seconds, for payload timestamps (the envelope refuses stale ones).
fn unix_now() -> i64 {
    unix_ms(SystemTime::now()) / 1000
}

/// B's announcement as its REPLY carries it.
fn announcement(b: u8, endpoint: &str) -> PeerAnnouncement {
    PeerAnnouncement {
        protocol: PROTOCOL.into(),
        wg_pubkey: key(b).to_string(),
        hostname: format!("host{b}"),
        mesh_ip: format!("10.1.0.{b}"),
        wg_endpoint: endpoint.into(),
        timestamp: unix_now(),
        ..PeerAnnouncement::default()
    }
}

/// Waits (virtual time, at most 60 s) until `cond` holds.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn offer(from: u8, target: u8) -> RendezvousOffer {
    let (f, t) = (key(from).to_string(), key(target).to_string());
    RendezvousOffer {
        protocol: PROTOCOL.into(),
        timestamp: unix_now(),
        pair_id: pair_id(&f, &t),
        from_pubkey: f,
        target_pubkey: t,
        ..RendezvousOffer::default()
    }
}

#[tokio::test(start_paused = true)]
async fn an_introducer_answers_two_offers_with_two_starts() {
    let r = rig(true);
    let (cancel, run) = r.start();
    r.deliver(
        MessageType::RendezvousOffer,
        &offer(2, 3),
        "198.51.100.2:52190",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(r.sent().is_empty(), "one side only: nothing yet");
    let before_ms = unix_ms(SystemTime::now());
    r.deliver(
        MessageType::RendezvousOffer,
        &offer(3, 2),
        "198.51.100.3:40001",
    )
    .await;
    until("two STARTs", || r.sent().len() == 2).await;
    let sent = r.sent();
    let id = pair_id(&key(2).to_string(), &key(3).to_string());
    for (to, peer, candidates) in [
        ("198.51.100.3:40001", 2, "198.51.100.2:52190"),
        ("198.51.100.2:52190", 3, "198.51.100.3:40001"),
    ] {
        let (_, kind, json) = sent
            .iter()
            .find(|(a, ..)| *a == addr(to))
            .unwrap_or_else(|| panic!("no START to {to}: {sent:?}"));
        assert_eq!(*kind, MessageType::RendezvousStart);
        assert_eq!(json["pair_id"], id);
        assert_eq!(json["peer_pubkey"], key(peer).to_string());
        assert_eq!(json["introducer_key"], key(1).to_string());
        assert_eq!(json["peer_candidates"][0], candidates);
        assert_eq!(json["peer_candidates"].as_array().unwrap().len(), 5);
        let start_at = json["start_at_unix_ms"].as_i64().unwrap();
        assert!(
            (before_ms + 1800..before_ms + 1800 + 1000).contains(&start_at),
            "{start_at} vs {before_ms}"
        );
    }
    assert_eq!(r.counters(), (0, 2));
    until("detail counts the STARTs", || {
        r.layer()
            .detail
            .is_some_and(|d| d.contains("starts sent 2"))
    })
    .await;
    // Offers again within 8 s: throttled.
    r.deliver(
        MessageType::RendezvousOffer,
        &offer(2, 3),
        "198.51.100.2:52190",
    )
    .await;
    r.deliver(
        MessageType::RendezvousOffer,
        &offer(3, 2),
        "198.51.100.3:40001",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(r.sent().len(), 2);
    cancel.cancel();
    run.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_introducer_stands_in_for_a_known_target() {
    let r = rig(true);
    r.store_peer(3, "198.51.100.3:51820", false, Method::Dht);
    lock(&r.exchange.control).insert(key(3), addr("198.51.100.3:40001"));
    let (cancel, run) = r.start();
    r.deliver(
        MessageType::RendezvousOffer,
        &offer(2, 3),
        "198.51.100.2:52190",
    )
    .await;
    until("two STARTs", || r.sent().len() == 2).await;
    let sent = r.sent();
    assert_eq!(sent[0].0, addr("198.51.100.2:52190"));
    let to_a: Vec<&str> = sent[0].2["peer_candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(to_a[0], "198.51.100.3:40001", "the learned mapping first");
    assert!(
        to_a.contains(&"198.51.100.3:52190"),
        "then endpoint host + gossip port"
    );
    assert_eq!(sent[1].0, addr("198.51.100.3:40001"));
    cancel.cancel();
    run.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn offers_to_a_node_that_is_not_an_introducer_and_garbage_are_dropped() {
    let r = rig(false);
    // Known, with a working tunnel (the requester leaves it alone).
    r.store_peer(3, "198.51.100.3:51820", false, Method::Dht);
    lock(&r.tunnel.published).insert(key(3), SystemTime::now());
    let (cancel, run) = r.start();
    r.deliver(
        MessageType::RendezvousOffer,
        &offer(2, 3),
        "198.51.100.2:52190",
    )
    .await;
    r.deliver(
        MessageType::RendezvousOffer,
        &offer(3, 2),
        "198.51.100.3:52190",
    )
    .await;
    // A START that is not for us, one for us without candidates, one that is not a START.
    let mut start = RendezvousStart {
        protocol: PROTOCOL.into(),
        timestamp: unix_now(),
        pair_id: pair_id("a", "b"),
        peer_pubkey: key(3).to_string(),
        peer_candidates: vec!["198.51.100.3:52190".into()],
        ..RendezvousStart::default()
    };
    r.deliver(MessageType::RendezvousStart, &start, "198.51.100.9:52190")
        .await;
    start.pair_id = pair_id(&key(1).to_string(), &key(3).to_string());
    start.peer_candidates = vec!["0.0.0.0:1".into()];
    r.deliver(MessageType::RendezvousStart, &start, "198.51.100.9:52190")
        .await;
    // Opens (protocol and timestamp are fine) but does not decode as a START.
    let malformed = serde_json::json!({
        "protocol": PROTOCOL, "timestamp": unix_now(), "peer_candidates": "198.51.100.3:1"
    });
    r.deliver(
        MessageType::RendezvousStart,
        &malformed,
        "198.51.100.9:52190",
    )
    .await;
    r.deliver(
        MessageType::RendezvousOffer,
        &malformed,
        "198.51.100.9:52190",
    )
    .await;
    r.deliver(
        MessageType::Announce,
        &announcement(4, ""),
        "198.51.100.9:52190",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(r.sent().is_empty());
    assert!(lock(&r.exchange.hellos).is_empty(), "no punch");
    assert!(!run.is_finished());
    cancel.cancel();
    run.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_start_punches_each_candidate_until_the_peer_answers_and_stores_it_as_rendezvous() {
    let r = rig(false);
    let (good, silent) = (addr("198.51.100.3:52189"), addr("198.51.100.3:52190"));
    lock(&r.exchange.replies).insert(good, announcement(3, "198.51.100.3:51820"));
    lock(&r.tunnel.answers).insert(key(3));
    let (cancel, run) = r.start();
    let start = RendezvousStart {
        protocol: PROTOCOL.into(),
        timestamp: unix_now(),
        pair_id: pair_id(&key(1).to_string(), &key(3).to_string()),
        peer_pubkey: key(3).to_string(),
        peer_candidates: vec![silent.to_string(), good.to_string()],
        start_at_unix_ms: unix_ms(SystemTime::now()) + 1800,
        introducer_key: key(9).to_string(),
    };
    let t0 = tokio::time::Instant::now();
    r.deliver(MessageType::RendezvousStart, &start, "203.0.113.9:52190")
        .await;
    until("stored as dht-rendezvous", || {
        r.task
            .store
            .get(&key(3))
            .is_some_and(|p| p.discovered_via.contains(&Method::DhtRendezvous))
    })
    .await;
    assert_eq!(*lock(&r.exchange.hellos), [silent, good], "in order");
    let waited = tokio::time::Instant::now() - t0;
    assert!(
        waited >= Duration::from_millis(1800) + Duration::from_secs(4),
        "{waited:?}"
    );
    let peer = r.task.store.get(&key(3)).unwrap();
    assert_eq!(peer.endpoint, Some(addr("198.51.100.3:51820")));
    assert_eq!(peer.endpoint_method, Some(Method::DhtRendezvous));
    assert_eq!(peer.hostname, "host3");
    assert_eq!(*lock(&r.tunnel.kicks), [key(3)]);
    until("counted", || r.counters() == (1, 0)).await;
    until("detail", || {
        r.layer()
            .detail
            .is_some_and(|d| d.contains("punches 1 ok / 0 failed"))
    })
    .await;
    // The same START again at once: cooled down, no second punch.
    r.deliver(MessageType::RendezvousStart, &start, "203.0.113.9:52190")
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(lock(&r.exchange.hellos).len(), 2);
    cancel.cancel();
    run.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_punch_without_a_handshake_fails_and_stores_no_rendezvous() {
    let r = rig(false);
    let good = addr("198.51.100.3:52190");
    lock(&r.exchange.replies).insert(good, announcement(3, "0.0.0.0:51820"));
    let (cancel, run) = r.start();
    let start = RendezvousStart {
        protocol: PROTOCOL.into(),
        timestamp: unix_now(),
        pair_id: pair_id(&key(1).to_string(), &key(3).to_string()),
        peer_pubkey: key(3).to_string(),
        peer_candidates: vec![good.to_string()],
        ..RendezvousStart::default()
    };
    r.deliver(MessageType::RendezvousStart, &start, "203.0.113.9:52190")
        .await;
    until("failure counted", || {
        r.layer()
            .detail
            .is_some_and(|d| d.contains("punches 0 ok / 1 failed"))
    })
    .await;
    let peer = r.task.store.get(&key(3)).expect("the REPLY stored it");
    assert_eq!(peer.discovered_via, [Method::Dht]);
    assert_eq!(
        peer.endpoint,
        Some(addr("198.51.100.3:51820")),
        "wildcard host: the source's"
    );
    // Kicked after 0.5 s, then every 2 s, within the 10 s wait.
    assert_eq!(lock(&r.tunnel.kicks).len(), 5);
    assert_eq!(r.counters(), (0, 0));
    cancel.cancel();
    run.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_requester_asks_its_introducer_when_a_peer_appears() {
    let r = rig(false);
    r.store_peer(9, "203.0.113.9:51820", true, Method::Dht);
    let (cancel, run) = r.start();
    tokio::time::sleep(Duration::from_millis(10)).await;
    // The introducer itself, met at start: no introducer for it, so contacted directly.
    until("direct HELLO to the introducer", || {
        lock(&r.exchange.hellos).contains(&addr("203.0.113.9:52190"))
    })
    .await;
    r.store_peer(3, "198.51.100.3:51820", false, Method::DhtTransitive);
    until("an offer", || {
        r.sent()
            .iter()
            .any(|(_, k, _)| *k == MessageType::RendezvousOffer)
    })
    .await;
    let sent = r.sent();
    let (to, _, json) = sent
        .iter()
        .find(|(_, k, _)| *k == MessageType::RendezvousOffer)
        .unwrap();
    assert_eq!(*to, addr("203.0.113.9:52190"));
    assert_eq!(json["from_pubkey"], key(1).to_string());
    assert_eq!(json["target_pubkey"], key(3).to_string());
    assert_eq!(
        json["pair_id"],
        pair_id(&key(1).to_string(), &key(3).to_string())
    );
    assert!(json.get("candidates").is_none(), "Go requesters send none");
    assert!(r.counters().1 >= 1);
    cancel.cancel();
    run.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_peer_named_in_a_reply_is_judged_once_the_replier_is_stored() {
    let r = rig(false);
    lock(&r.tunnel.published).insert(key(9), SystemTime::now());
    let (cancel, run) = r.start();
    tokio::time::sleep(Duration::from_millis(10)).await;
    // As a REPLY from the introducer stores them: the peer it names first, then itself.
    r.store_peer(3, "198.51.100.3:51820", false, Method::DhtTransitive);
    tokio::time::sleep(Duration::from_millis(50)).await;
    r.store_peer(9, "203.0.113.9:51820", true, Method::Dht);
    until("an offer", || !r.sent().is_empty()).await;
    assert_eq!(r.sent()[0].1, MessageType::RendezvousOffer);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        lock(&r.exchange.hellos).is_empty(),
        "no direct HELLO to a peer the introducer can introduce"
    );
    cancel.cancel();
    run.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_peer_with_a_working_tunnel_is_left_alone() {
    let r = rig(false);
    r.store_peer(9, "203.0.113.9:51820", true, Method::Dht);
    lock(&r.tunnel.published).insert(key(9), SystemTime::now());
    // 105 s old at the end of the test: still a working tunnel.
    lock(&r.tunnel.published).insert(key(3), SystemTime::now() - Duration::from_secs(60));
    let (cancel, run) = r.start();
    r.store_peer(3, "198.51.100.3:51820", false, Method::DhtTransitive);
    // Long enough for every slot of the pair to pass.
    tokio::time::sleep(Duration::from_secs(45)).await;
    assert!(r.sent().is_empty(), "{:?}", r.sent());
    assert!(lock(&r.exchange.hellos).is_empty());
    cancel.cancel();
    run.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_failed_direct_contact_backs_off() {
    let r = rig(false);
    let (cancel, run) = r.start();
    r.store_peer(3, "198.51.100.3:51820", false, Method::DhtTransitive);
    let control = addr("198.51.100.3:52190");
    until("first HELLO", || lock(&r.exchange.hellos).len() == 1).await;
    // It times out after 4 s; until then and for the 3 s backoff after, events change nothing.
    tokio::time::sleep(Duration::from_secs(5)).await;
    r.store_peer(3, "198.51.100.3:51821", false, Method::DhtTransitive);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(*lock(&r.exchange.hellos), [control]);
    // Within 20 s the direct contact is deduplicated; the periodic trigger retries in a later
    // slot (one every 20 s).
    until("retried", || lock(&r.exchange.hellos).len() >= 2).await;
    cancel.cancel();
    run.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_layer_retries_while_the_exchange_socket_is_down() {
    let r = rig(true);
    *lock(&r.exchange.stopped) = true;
    let (cancel, run) = r.start();
    r.deliver(
        MessageType::RendezvousOffer,
        &offer(2, 3),
        "198.51.100.2:52190",
    )
    .await;
    r.deliver(
        MessageType::RendezvousOffer,
        &offer(3, 2),
        "198.51.100.3:52190",
    )
    .await;
    until("retrying", || r.layer().state == LayerState::Retrying).await;
    assert!(
        r.layer()
            .last_error
            .is_some_and(|e| e.contains("cannot send RENDEZVOUS_START")),
        "{:?}",
        r.layer()
    );
    *lock(&r.exchange.stopped) = false;
    tokio::time::sleep(Duration::from_secs(9)).await;
    r.deliver(
        MessageType::RendezvousOffer,
        &offer(2, 3),
        "198.51.100.2:52190",
    )
    .await;
    r.deliver(
        MessageType::RendezvousOffer,
        &offer(3, 2),
        "198.51.100.3:52190",
    )
    .await;
    until("running again", || r.layer().state == LayerState::Running).await;
    assert_eq!(r.sent().len(), 2);
    // The role follows the local node.
    r.local.send_modify(|n| n.introducer = true);
    cancel.cancel();
    run.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_device_tunnel_reads_handshakes_and_kicks() {
    use crate::system::wg::fake::FakeWireGuard;
    use crate::system::wg::{DeviceUpdate, LiveDevice, LivePeer, PeerConfig};
    let wg = Arc::new(FakeWireGuard::new("wg0"));
    let private = Arc::new(crate::keys::PrivateKey::from_bytes([5; 32]));
    wg.apply(DeviceUpdate {
        private_key: Some(private),
        add: vec![PeerConfig {
            public_key: key(3),
            endpoint: None,
            preshared_key: None,
            keepalive: None,
            allowed_ips: Vec::new(),
        }],
        ..DeviceUpdate::default()
    })
    .await
    .unwrap();
    let at = SystemTime::now();
    wg.set_handshake(&key(3), at);
    let mut live = LiveDevice::default();
    live.peers.insert(
        key(4),
        LivePeer {
            endpoint: None,
            allowed_ips: Vec::new(),
            preshared_key: None,
            keepalive: None,
            last_handshake: Some(at),
            rx_bytes: 0,
            tx_bytes: 0,
        },
    );
    let (_tx, reconciled) = watch::channel(Reconciled {
        live,
        ..Reconciled::default()
    });
    let tunnel = DeviceTunnel {
        wg: wg.clone(),
        reconciled,
    };
    assert_eq!(tunnel.current_handshake(&key(3)).await, Some(at));
    assert_eq!(tunnel.current_handshake(&key(4)).await, None);
    assert_eq!(tunnel.published_handshake(&key(4)), Some(at));
    assert_eq!(tunnel.published_handshake(&key(3)), None);
    tunnel.kick(key(3)).await;
    assert_eq!(wg.kicks(), [key(3)]);
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_starts_runs_at_most_eight_punches_at_once() {
    let r = rig(false);
    let (cancel, run) = r.start();
    let start_for = |b: u8| {
        let peer = key(b).to_string();
        RendezvousStart {
            protocol: PROTOCOL.into(),
            timestamp: unix_now(),
            pair_id: pair_id(&key(1).to_string(), &peer),
            peer_pubkey: peer,
            peer_candidates: vec![format!("198.51.100.{b}:52190")],
            ..RendezvousStart::default()
        }
    };
    for b in 10..60 {
        r.deliver(
            MessageType::RendezvousStart,
            &start_for(b),
            "203.0.113.9:52190",
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(lock(&r.exchange.hellos).len(), participant::MAX_PUNCHES);
    // Once they have failed (4 s), new STARTs run again.
    tokio::time::sleep(Duration::from_secs(14)).await;
    r.deliver(
        MessageType::RendezvousStart,
        &start_for(70),
        "203.0.113.9:52190",
    )
    .await;
    until("a new punch", || {
        lock(&r.exchange.hellos).contains(&addr("198.51.100.70:52190"))
    })
    .await;
    until("failures counted", || {
        r.layer()
            .detail
            .is_some_and(|d| d.contains("punches 0 ok / 8 failed"))
    })
    .await;
    assert!(!run.is_finished());
    cancel.cancel();
    run.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_layer_recovers_when_the_exchange_socket_works_again_even_if_peers_do_not_answer() {
    let r = rig(false);
    *lock(&r.exchange.stopped) = true;
    r.store_peer(3, "198.51.100.3:51820", false, Method::DhtTransitive);
    let (cancel, run) = r.start();
    until("retrying", || r.layer().state == LayerState::Retrying).await;
    *lock(&r.exchange.stopped) = false;
    // The next attempt (a later slot) times out: the socket works, the peer is just silent.
    until("running again", || r.layer().state == LayerState::Running).await;
    assert!(!lock(&r.exchange.hellos).is_empty());
    cancel.cancel();
    run.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_punch_to_a_peer_whose_tunnel_is_already_fresh_succeeds_at_once() {
    let r = rig(false);
    let good = addr("198.51.100.3:52190");
    lock(&r.exchange.replies).insert(good, announcement(3, "198.51.100.3:51820"));
    // A session 30 s old, which WireGuard will not renew for a kick.
    lock(&r.tunnel.current).insert(key(3), SystemTime::now() - Duration::from_secs(30));
    let (cancel, run) = r.start();
    let start = RendezvousStart {
        protocol: PROTOCOL.into(),
        timestamp: unix_now(),
        pair_id: pair_id(&key(1).to_string(), &key(3).to_string()),
        peer_pubkey: key(3).to_string(),
        peer_candidates: vec![good.to_string()],
        ..RendezvousStart::default()
    };
    r.deliver(MessageType::RendezvousStart, &start, "203.0.113.9:52190")
        .await;
    until("stored as dht-rendezvous", || {
        r.task
            .store
            .get(&key(3))
            .is_some_and(|p| p.discovered_via.contains(&Method::DhtRendezvous))
    })
    .await;
    assert!(lock(&r.tunnel.kicks).is_empty(), "no kick needed");
    cancel.cancel();
    run.await.unwrap().unwrap();
}
