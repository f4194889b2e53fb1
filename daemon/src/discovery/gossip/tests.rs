//! The gossip task against a fake exchange socket, under paused time.

use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::SystemTime;

use super::*;
use crate::crypto::envelope::{Envelope, OpenedEnvelope};
use crate::discovery::contact::{BoxFuture, ContactError, Contacted};
use crate::metrics::Metrics;
use crate::supervisor::{LayerState, Registry};
use crate::wire::{KnownPeer, PROTOCOL};

const PORT: u16 = 51847;
const KEY: [u8; 32] = [7; 32];

/// Records every datagram sent; sends to `fail` fail.
#[derive(Default)]
struct FakeExchange {
    sent: Mutex<Vec<(SocketAddr, Vec<u8>)>>,
    fail: Mutex<Vec<SocketAddr>>,
}

impl Exchange for FakeExchange {
    fn hello(
        &self,
        _addr: SocketAddr,
        _method: Method,
    ) -> BoxFuture<'_, Result<Contacted, ContactError>> {
        // Gossip never says HELLO.
        Box::pin(async { Err(ContactError::NotRunning) })
    }

    fn send(&self, addr: SocketAddr, datagram: Vec<u8>) -> BoxFuture<'_, std::io::Result<()>> {
        let failing = self.fail.lock().unwrap().contains(&addr);
        if !failing {
            self.sent.lock().unwrap().push((addr, datagram));
        }
        Box::pin(async move {
            if failing {
                Err(std::io::Error::from(std::io::ErrorKind::NetworkUnreachable))
            } else {
                Ok(())
            }
        })
    }

    fn control_endpoint(&self, _peer: &PublicKey) -> Option<SocketAddr> {
        None
    }
}

/// A fixed draw: 50 % never fluffs early, picks deterministically.
fn fixed_random() -> Option<u64> {
    Some(50)
}

/// A draw that always fluffs early (3 < 10).
fn fluffy_random() -> Option<u64> {
    Some(3)
}

fn mesh() -> MeshNetworks {
    MeshNetworks {
        v4: "10.1.0.0/16".parse().unwrap(),
        v6: "fd00::/64".parse().unwrap(),
    }
}

struct Harness {
    gossip: Arc<Gossip>,
    exchange: Arc<FakeExchange>,
    inbound: mpsc::Sender<Inbound>,
    receiver: Option<mpsc::Receiver<Inbound>>,
    registry: Registry,
    metrics: Metrics,
    epoch: watch::Receiver<Option<Epoch>>,
    cancel: CancellationToken,
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

fn unix() -> i64 {
    unix_now(SystemTime::now())
}

fn harness(privacy: bool, random: fn() -> Option<u64>) -> Harness {
    let registry = Registry::default();
    let metrics = Metrics::default();
    let exchange = Arc::new(FakeExchange::default());
    let (tx, rx) = mpsc::channel(64);
    let (epoch_tx, epoch) = watch::channel(None);
    let privacy = privacy.then(|| PrivacyMode {
        epoch_key: [3; 32],
        layer: registry.layer("privacy", LayerState::Running),
        counters: metrics.layer("privacy"),
        epoch: epoch_tx,
    });
    let gossip = Gossip {
        exchange: exchange.clone(),
        envelope: Envelope::new(&KEY),
        port: PORT,
        local: watch::channel(crate::node::tests::local()).1,
        store: Arc::new(PeerStore::new(100)),
        mesh: mesh(),
        ipv6: true,
        tunnels: watch::channel(Reconciled::default()).1,
        layer: registry.layer("gossip", LayerState::Running),
        counters: metrics.layer("gossip"),
        privacy,
        random,
    };
    Harness {
        gossip: Arc::new(gossip),
        exchange,
        inbound: tx,
        receiver: Some(rx),
        registry,
        metrics,
        epoch,
        cancel: CancellationToken::new(),
    }
}

impl Harness {
    /// Stores peer `b` (mesh IP 10.1.0.b) as a direct contact.
    fn add_peer(&self, b: u8) {
        let update = PeerUpdate {
            mesh_ip: Some(Ipv4Addr::new(10, 1, 0, b)),
            endpoint: Some(SocketAddr::from(([192, 0, 2, b], 51820))),
            ..PeerUpdate::new(PublicKey([b; 32]))
        };
        self.gossip.store.update(update, Method::Dht, now());
    }

    fn start(&mut self) -> tokio::task::JoinHandle<Result<(), TaskError>> {
        let gossip = self.gossip.clone();
        let cancel = self.cancel.clone();
        let mut rx = self.receiver.take().unwrap();
        tokio::spawn(async move { gossip.run(&mut rx, cancel).await })
    }

    /// Everything sent since the last call, opened: (destination, type, plaintext).
    fn take_sent(&self) -> Vec<(SocketAddr, OpenedEnvelope)> {
        let env = Envelope::new(&KEY);
        std::mem::take(&mut *self.exchange.sent.lock().unwrap())
            .into_iter()
            .map(|(to, d)| (to, env.open_raw(&d, SystemTime::now()).unwrap()))
            .collect()
    }

    async fn deliver(&self, msg_type: MessageType, payload: &impl serde::Serialize, from: &str) {
        let datagram = Envelope::new(&KEY).seal_with_nonce(msg_type, payload, &[1; 12]);
        let opened = Envelope::new(&KEY)
            .open_raw(&datagram, SystemTime::now())
            .unwrap();
        self.deliver_opened(opened, from).await;
    }

    async fn deliver_opened(&self, opened: OpenedEnvelope, from: &str) {
        let source = from.parse().unwrap();
        self.inbound.send(Inbound { opened, source }).await.unwrap();
        settle().await;
    }

    fn layer(&self, name: &str) -> crate::supervisor::LayerRecord {
        self.registry.layers()[name].clone()
    }

    fn counts(&self, layer: &str) -> (u64, u64) {
        self.metrics.values().layers[layer]
    }

    /// Drops counted on `layer`, by reason.
    fn drops(&self, layer: &str) -> Vec<(&'static str, u64)> {
        self.metrics
            .values()
            .layer_drops
            .into_iter()
            .filter(|((l, _), _)| *l == layer)
            .map(|((_, reason), n)| (reason, n))
            .collect()
    }
}

/// Lets the task handle what is queued (time is paused: this costs no real time).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

fn to(b: u8) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(10, 1, 0, b), PORT))
}

fn announce_from(b: u8, known: &[u8]) -> PeerAnnouncement {
    PeerAnnouncement {
        protocol: PROTOCOL.into(),
        wg_pubkey: PublicKey([b; 32]).to_string(),
        mesh_ip: format!("10.1.0.{b}"),
        wg_endpoint: format!("192.0.2.{b}:51820"),
        timestamp: unix(),
        known_peers: known
            .iter()
            .map(|k| KnownPeer {
                wg_pubkey: PublicKey([*k; 32]).to_string(),
                mesh_ip: format!("10.1.0.{k}"),
                wg_endpoint: "0.0.0.0:51820".into(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn stem_from(origin: u8, hop: u8, nonce: u8) -> DandelionAnnounce {
    let mut s = DandelionAnnounce {
        protocol: PROTOCOL.into(),
        origin_pubkey: PublicKey([origin; 32]).to_string(),
        origin_mesh_ip: format!("10.1.0.{origin}"),
        origin_endpoint: format!("198.51.100.{origin}:51820"),
        hop_count: hop,
        timestamp: unix(),
        ..Default::default()
    };
    s.set_nonce([nonce; 16]);
    s
}

fn via(h: &Harness, b: u8) -> Vec<Method> {
    h.gossip
        .store
        .get(&PublicKey([b; 32]))
        .map(|p| p.discovered_via)
        .unwrap_or_default()
}

#[tokio::test(start_paused = true)]
async fn every_ten_seconds_one_peer_gets_an_announce_of_everything_we_know() {
    let mut h = harness(false, os_random);
    for b in [2, 3, 4] {
        h.add_peer(b);
    }
    let task = h.start();
    tokio::time::sleep(Duration::from_millis(9_900)).await;
    assert!(
        h.take_sent().is_empty(),
        "nothing before the first interval"
    );
    for round in 1..=5 {
        tokio::time::sleep(GOSSIP_INTERVAL).await;
        let sent = h.take_sent();
        assert_eq!(sent.len(), 1, "round {round}: one peer per round");
        let (dest, opened) = &sent[0];
        assert!([to(2), to(3), to(4)].contains(dest), "{dest}");
        assert_eq!(opened.msg_type, MessageType::Announce);
        let ann: PeerAnnouncement = opened.payload().unwrap();
        assert_eq!(ann.validate(), Ok(()), "passes Go's field rules");
        assert_eq!(ann.wg_pubkey, PublicKey([1; 32]).to_string());
        let mut known: Vec<String> = ann
            .known_peers
            .iter()
            .map(|k| k.wg_pubkey.clone())
            .collect();
        known.sort();
        let want: Vec<String> = [2, 3, 4].map(|b| PublicKey([b; 32]).to_string()).to_vec();
        assert_eq!(known, want);
    }
    assert_eq!(h.counts("gossip"), (0, 5));
    assert_eq!(h.layer("gossip").state, LayerState::Running);
    assert!(h.layer("gossip").last_success_at.is_some());
    h.cancel.cancel();
    assert!(task.await.unwrap().is_ok());
}

#[tokio::test(start_paused = true)]
async fn gossip_goes_only_to_peers_with_a_working_tunnel_when_some_have_one() {
    let mut h = harness(false, os_random);
    for b in [2, 3, 4] {
        h.add_peer(b);
    }
    let mut live = Reconciled::default();
    live.live.peers.insert(
        PublicKey([3; 32]),
        crate::system::wg::LivePeer {
            endpoint: None,
            allowed_ips: Vec::new(),
            preshared_key: None,
            keepalive: None,
            last_handshake: Some(SystemTime::now()),
            rx_bytes: 0,
            tx_bytes: 0,
        },
    );
    let (tx, rx) = watch::channel(live);
    Arc::get_mut(&mut h.gossip).unwrap().tunnels = rx;
    let _task = h.start();
    settle().await;
    for _ in 0..5 {
        tokio::time::sleep(GOSSIP_INTERVAL).await;
        let sent = h.take_sent();
        assert_eq!(
            sent.iter().map(|(d, _)| *d).collect::<Vec<_>>(),
            vec![to(3)]
        );
    }
    drop(tx);
}

#[tokio::test(start_paused = true)]
async fn an_announce_teaches_the_sender_as_gossip_and_its_peers_as_transitive() {
    let mut h = harness(false, os_random);
    let _task = h.start();
    h.deliver(
        MessageType::Announce,
        &announce_from(2, &[1, 3, 4]),
        "10.1.0.2:51847",
    )
    .await;
    assert_eq!(via(&h, 2), vec![Method::Gossip]);
    assert_eq!(via(&h, 3), vec![Method::GossipTransitive]);
    assert_eq!(via(&h, 4), vec![Method::GossipTransitive]);
    assert!(
        h.gossip.store.get(&PublicKey([1; 32])).is_none(),
        "never ourselves"
    );
    let sender = h.gossip.store.get(&PublicKey([2; 32])).unwrap();
    assert_eq!(sender.endpoint, Some("192.0.2.2:51820".parse().unwrap()));
    let three = h.gossip.store.get(&PublicKey([3; 32])).unwrap();
    assert_eq!(three.endpoint, None, "wildcard: no endpoint");
    assert_eq!(h.counts("gossip"), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_go_produced_announce_is_stored_like_go_stores_it() {
    let vectors: serde_json::Value = serde_json::from_str(include_str!(
        "../../../tests/data/compat/vectors/envelopes.json"
    ))
    .unwrap();
    let vector = vectors
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["type"] == "ANNOUNCE")
        .unwrap();
    let secret = crate::config::MeshSecret::parse(
        vector["secret"].as_str().unwrap(),
        crate::config::SecretOrigin::Literal,
    )
    .unwrap();
    let keys = crate::crypto::DerivedKeys::derive(&secret);
    let datagram = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        vector["datagram_base64"].as_str().unwrap(),
    )
    .unwrap();
    // Opened as the exchange socket would, with the clock at the vector's instant.
    let at = UNIX_EPOCH + Duration::from_secs(1_763_780_000);
    let opened = Envelope::new(&keys.gossip_key)
        .open_raw(&datagram, at)
        .unwrap();
    assert_eq!(opened.msg_type, MessageType::Announce);
    let mut h = harness(false, os_random);
    let _task = h.start();
    // Through the tunnel: the source is the sender's mesh IP.
    h.deliver_opened(opened, "10.1.0.9:51999").await;
    let sender: PublicKey = vector["payload"]["wg_pubkey"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let sender = h.gossip.store.get(&sender).unwrap();
    assert_eq!(sender.discovered_via, vec![Method::Gossip]);
    assert_eq!(sender.hostname, "node-2");
    assert_eq!(sender.endpoint, Some("203.0.113.5:51820".parse().unwrap()));
    assert_eq!(sender.nat_type.as_deref(), Some("symmetric"));
    assert_eq!(
        sender.routable_networks,
        vec!["192.168.50.0/24".parse().unwrap()]
    );
    let gamma: PublicKey = "9APFVLekRwIkLWCe3KoQp4Fy3GImmK3VwUjWQIkkwq8="
        .parse()
        .unwrap();
    let gamma = h.gossip.store.get(&gamma).unwrap();
    assert_eq!(gamma.discovered_via, vec![Method::GossipTransitive]);
    assert_eq!(gamma.endpoint, Some("198.51.100.7:51820".parse().unwrap()));
    assert_eq!(h.counts("gossip"), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn malformed_oversized_and_own_announcements_change_nothing() {
    let mut h = harness(false, os_random);
    let task = h.start();
    let mut too_many = announce_from(2, &[]);
    too_many.known_peers = (0..1001u32)
        .map(|i| KnownPeer {
            wg_pubkey: PublicKey(std::array::from_fn(|j| (i >> (8 * (j % 4))) as u8)).to_string(),
            mesh_ip: "10.1.9.9".into(),
            ..Default::default()
        })
        .collect();
    let mut bad_key = announce_from(2, &[3]);
    bad_key.wg_pubkey = "AAAA".into();
    let garbage = serde_json::json!({"protocol": "wgmesh-v1", "timestamp": unix(), "wg_pubkey": 5});
    // Too big for any datagram: handed over as if the socket had opened it.
    let opened = OpenedEnvelope {
        msg_type: MessageType::Announce,
        plaintext: crate::wire::to_go_json(&too_many),
        timestamp: unix(),
    };
    h.deliver_opened(opened, "10.1.0.2:1").await;
    h.deliver(MessageType::Announce, &bad_key, "10.1.0.2:1")
        .await;
    h.deliver(MessageType::Announce, &garbage, "10.1.0.2:1")
        .await;
    h.deliver(MessageType::Announce, &announce_from(1, &[5]), "10.1.0.2:1")
        .await;
    h.deliver(MessageType::Hello, &announce_from(2, &[]), "10.1.0.2:1")
        .await;
    h.deliver(MessageType::Stem, &announce_from(2, &[]), "10.1.0.2:1")
        .await;
    assert!(
        h.gossip.store.list().is_empty(),
        "{:?}",
        h.gossip.store.list()
    );
    assert_eq!(h.counts("gossip"), (0, 0));
    assert!(!task.is_finished());
}

#[tokio::test(start_paused = true)]
async fn the_task_fails_when_the_exchange_stops_handing_over() {
    let mut h = harness(false, os_random);
    let task = h.start();
    let Harness { inbound, .. } = h;
    drop(inbound);
    let result = task.await.unwrap();
    assert!(result.is_err());
}

#[tokio::test(start_paused = true)]
async fn failing_sends_show_the_layer_retrying_until_one_works() {
    let mut h = harness(false, os_random);
    h.add_peer(2);
    h.exchange.fail.lock().unwrap().push(to(2));
    let _task = h.start();
    tokio::time::sleep(GOSSIP_INTERVAL + Duration::from_millis(1)).await;
    let layer = h.layer("gossip");
    assert_eq!(layer.state, LayerState::Retrying);
    assert!(
        layer
            .last_error
            .as_deref()
            .unwrap()
            .contains("10.1.0.2:51847"),
        "{layer:?}"
    );
    h.exchange.fail.lock().unwrap().clear();
    tokio::time::sleep(GOSSIP_INTERVAL).await;
    assert_eq!(h.layer("gossip").state, LayerState::Running);
    assert_eq!(h.take_sent().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn with_nobody_reachable_the_layer_says_so() {
    let mut h = harness(false, os_random);
    let _task = h.start();
    tokio::time::sleep(GOSSIP_INTERVAL + Duration::from_millis(1)).await;
    let layer = h.layer("gossip");
    assert_eq!(layer.state, LayerState::Running);
    assert_eq!(
        layer.detail.as_deref(),
        Some("no peer reachable through the tunnel yet")
    );
    h.add_peer(2);
    tokio::time::sleep(GOSSIP_INTERVAL).await;
    assert_eq!(h.layer("gossip").detail, None);
}

#[tokio::test(start_paused = true)]
async fn with_privacy_our_announcement_goes_as_a_stem_to_the_first_relay_only() {
    let mut h = harness(true, fixed_random);
    for b in [2, 3, 4] {
        h.add_peer(b);
    }
    let _task = h.start();
    settle().await;
    let epoch = h.epoch.borrow().clone().expect("rotated at start");
    assert_eq!(epoch.id, 1);
    assert_eq!(epoch.relays.len(), 2);
    let detail = h.layer("privacy").detail.unwrap();
    assert!(detail.starts_with("epoch 1, relays "), "{detail}");
    for _ in 0..3 {
        tokio::time::sleep(GOSSIP_INTERVAL).await;
        let sent = h.take_sent();
        assert_eq!(sent.len(), 1);
        let (dest, opened) = &sent[0];
        assert_eq!(*dest, SocketAddr::from((epoch.relays[0].mesh_ip, PORT)));
        assert_eq!(opened.msg_type, MessageType::Stem);
        let stem: DandelionAnnounce = opened.payload().unwrap();
        assert_eq!(stem.origin_pubkey, PublicKey([1; 32]).to_string());
        assert_eq!(stem.hop_count, 0);
        assert!(stem.nonce_bytes().is_some());
    }
    assert_eq!(h.counts("privacy"), (0, 3));
    assert_eq!(h.counts("gossip"), (0, 0), "no direct ANNOUNCE");
}

#[tokio::test(start_paused = true)]
async fn privacy_without_relays_announces_directly_and_rotates_once_a_peer_appears() {
    let mut h = harness(true, fixed_random);
    let _task = h.start();
    settle().await;
    let first = h.epoch.borrow().clone().unwrap();
    assert_eq!((first.id, first.relays.len()), (1, 0));
    h.add_peer(2);
    tokio::time::sleep(GOSSIP_INTERVAL).await;
    let second = h.epoch.borrow().clone().unwrap();
    assert_eq!(second.id, 2, "rotated early: no usable relay");
    assert_eq!(second.relays[0].key, PublicKey([2; 32]));
    let sent = h.take_sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.msg_type, MessageType::Stem);
    // The relay goes away: nobody is reachable, nothing to rotate to, nothing sent.
    h.gossip.store.remove(&PublicKey([2; 32]));
    tokio::time::sleep(GOSSIP_INTERVAL).await;
    assert!(h.take_sent().is_empty());
    assert_eq!(h.epoch.borrow().as_ref().unwrap().id, 2);
    // Another peer: the next round rotates to it; ten minutes later the scheduled rotation.
    h.add_peer(3);
    tokio::time::sleep(GOSSIP_INTERVAL).await;
    let third = h.epoch.borrow().clone().unwrap();
    assert_eq!((third.id, third.relays[0].key), (3, PublicKey([3; 32])));
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(h.epoch.borrow().as_ref().unwrap().id, 4);
}

#[tokio::test(start_paused = true)]
async fn a_stem_is_passed_on_to_a_relay_that_is_neither_its_origin_nor_its_sender() {
    let mut h = harness(true, fixed_random);
    for b in [2, 3, 4, 5] {
        h.add_peer(b);
    }
    let _task = h.start();
    settle().await;
    let relays = h.epoch.borrow().clone().unwrap().relays;
    // Origin and sender are both not relays of ours: hop 1 goes to relay[1].
    h.deliver(MessageType::Stem, &stem_from(9, 0, 0xa1), "10.1.0.8:51847")
        .await;
    let sent = h.take_sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, SocketAddr::from((relays[1].mesh_ip, PORT)));
    let passed: DandelionAnnounce = sent[0].1.payload().unwrap();
    assert_eq!(passed.hop_count, 1);
    assert_eq!(passed.nonce, stem_from(9, 0, 0xa1).nonce);
    assert_eq!(passed.origin_pubkey, PublicKey([9; 32]).to_string());
    assert!(
        h.gossip.store.get(&PublicKey([9; 32])).is_none(),
        "a stem hop does not reveal it"
    );
    // Sent by relay[1] itself: it goes to relay[0] instead.
    let sender = relays[1].mesh_ip;
    h.deliver(
        MessageType::Stem,
        &stem_from(9, 0, 0xa2),
        &format!("{sender}:51847"),
    )
    .await;
    let sent = h.take_sent();
    assert_eq!(sent[0].0, SocketAddr::from((relays[0].mesh_ip, PORT)));
    // The same nonce again: dropped.
    h.deliver(MessageType::Stem, &stem_from(9, 0, 0xa1), "10.1.0.8:51847")
        .await;
    assert!(h.take_sent().is_empty());
    assert_eq!(h.drops("privacy"), [("repeated", 1)]);
    assert_eq!(h.counts("privacy").0, 2);
}

#[tokio::test(start_paused = true)]
async fn a_stem_at_its_last_hop_fluffs_the_origin_to_the_store_and_to_several_peers() {
    let mut h = harness(true, fixed_random);
    for b in 2..=12 {
        h.add_peer(b);
    }
    let _task = h.start();
    settle().await;
    h.deliver(MessageType::Stem, &stem_from(5, 3, 0xb1), "10.1.0.2:51847")
        .await;
    assert_eq!(via(&h, 5), vec![Method::Dht, Method::GossipTransitive]);
    let sent = h.take_sent();
    assert_eq!(sent.len(), rules::FLUFF_FAN_OUT, "bounded fan-out");
    for (dest, opened) in &sent {
        assert_ne!(*dest, to(5), "not back to the origin");
        assert_eq!(opened.msg_type, MessageType::Announce);
        let ann: PeerAnnouncement = opened.payload().unwrap();
        assert!(
            ann.known_peers
                .iter()
                .any(|k| k.wg_pubkey == PublicKey([5; 32]).to_string()),
            "the fluff names the origin"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_new_origin_is_stored_as_transitive_with_its_routes_when_fluffed() {
    // An early fluff (draw 3 < 10) at hop 1.
    let mut h = harness(true, fluffy_random);
    h.add_peer(2);
    let _task = h.start();
    settle().await;
    let mut stem = stem_from(9, 0, 0xc1);
    stem.routable_networks = vec!["192.168.90.0/24".into()];
    h.deliver(MessageType::Stem, &stem, "10.1.0.2:51847").await;
    let origin = h.gossip.store.get(&PublicKey([9; 32])).unwrap();
    assert_eq!(origin.discovered_via, vec![Method::GossipTransitive]);
    assert_eq!(origin.endpoint, Some("198.51.100.9:51820".parse().unwrap()));
    assert_eq!(
        origin.routable_networks,
        vec!["192.168.90.0/24".parse().unwrap()]
    );
    let sent = h.take_sent();
    assert_eq!(
        sent.iter().map(|(d, _)| *d).collect::<Vec<_>>(),
        vec![to(2)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_stem_whose_relay_cannot_be_reached_is_fluffed() {
    let mut h = harness(true, fixed_random);
    for b in [2, 3] {
        h.add_peer(b);
    }
    h.exchange.fail.lock().unwrap().extend([to(2), to(3)]);
    let _task = h.start();
    settle().await;
    h.deliver(MessageType::Stem, &stem_from(9, 0, 0xd1), "10.1.0.8:51847")
        .await;
    assert_eq!(via(&h, 9), vec![Method::GossipTransitive], "fluffed");
}

#[tokio::test(start_paused = true)]
async fn without_privacy_a_stem_is_fluffed_at_once() {
    let mut h = harness(false, fixed_random);
    for b in [2, 3] {
        h.add_peer(b);
    }
    let _task = h.start();
    h.deliver(MessageType::Stem, &stem_from(9, 0, 0xe1), "10.1.0.2:51847")
        .await;
    assert_eq!(via(&h, 9), vec![Method::GossipTransitive]);
    let sent = h.take_sent();
    assert_eq!(
        sent.len(),
        2,
        "every reachable peer but the origin (up to the fan-out)"
    );
}

#[tokio::test(start_paused = true)]
async fn bad_stems_change_nothing_and_send_nothing() {
    let mut h = harness(true, fixed_random);
    h.add_peer(2);
    let _task = h.start();
    settle().await;
    let mut bad_nonce = stem_from(9, 0, 1);
    bad_nonce.nonce = "AAAA".into();
    let mut bad_ip = stem_from(9, 0, 2);
    bad_ip.origin_mesh_ip = "not an ip".into();
    let own = stem_from(1, 0, 3);
    for (case, stem) in [("nonce", bad_nonce), ("mesh ip", bad_ip), ("own", own)] {
        h.deliver(MessageType::Stem, &stem, "10.1.0.2:51847").await;
        assert!(h.take_sent().is_empty(), "{case}");
    }
    h.deliver(
        MessageType::Stem,
        &serde_json::json!({"protocol": "wgmesh-v1", "timestamp": unix(), "hop_count": 300}),
        "10.1.0.2:1",
    )
    .await;
    assert!(h.take_sent().is_empty());
    assert_eq!(h.gossip.store.list().len(), 1, "only peer 2");
    assert_eq!(h.counts("privacy"), (0, 0));
    assert_eq!(
        h.drops("privacy"),
        [("bad_nonce", 1), ("invalid", 1), ("malformed", 1)]
    );
}
