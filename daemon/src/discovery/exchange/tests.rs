//! The exchange's dispatcher on datagrams built in the test (no socket), the Go compatibility
//! vectors, and round trips between two services on loopback sockets.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;

use super::*;
use crate::config::{MeshSecret, SecretOrigin};
use crate::crypto::DerivedKeys;
use crate::metrics::Metrics;
use crate::supervisor::{LayerState, Registry};
use crate::wire::{KnownPeer, PeerAnnouncement, to_go_json};

const GO_TIME: u64 = 1_763_780_000;

fn go_time() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(GO_TIME)
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A service under test, with what it writes to.
struct Harness {
    parts: Option<ExchangeParts>,
    exchange: Arc<ExchangeService>,
    store: Arc<PeerStore>,
    local: watch::Receiver<LocalNode>,
    metrics: Arc<Metrics>,
    registry: Registry,
    envelope: Envelope,
}

fn harness_with(key: [u8; 32], gossip_port: u16, punching: bool, ipv6: bool) -> Harness {
    let envelope = Envelope::new(&key);
    let store = Arc::new(PeerStore::default());
    let (local_tx, local) = watch::channel(crate::node::tests::local());
    let registry = Registry::default();
    let metrics = Arc::new(Metrics::default());
    let parts = ExchangeService::build(
        ExchangeConfig {
            envelope: envelope.clone(),
            gossip_port,
            punching,
            ipv6,
        },
        local_tx,
        store.clone(),
        watch::channel(HostInterfaces::new()).1,
        registry.layer("exchange", LayerState::Running),
        metrics.layer("exchange"),
    );
    Harness {
        exchange: parts.exchange.clone(),
        parts: Some(parts),
        store,
        local,
        metrics,
        registry,
        envelope,
    }
}

fn harness() -> Harness {
    harness_with([7; 32], 51900, true, true)
}

impl Harness {
    fn drops(&self, reason: &str) -> u64 {
        self.metrics
            .values()
            .layer_drops
            .get(&("exchange", reason))
            .copied()
            .unwrap_or(0)
    }

    fn events(&self) -> u64 {
        self.metrics.values().layers["exchange"].0
    }

    fn seal<T: serde::Serialize>(&self, t: MessageType, payload: &T) -> Vec<u8> {
        self.envelope.seal(t, payload).unwrap()
    }
}

fn unix(now: SystemTime) -> i64 {
    rules::unix_secs(now)
}

/// An announcement from the peer with key byte `k`, stamped `now`.
fn peer_ann(k: u8, endpoint: &str, now: SystemTime) -> PeerAnnouncement {
    PeerAnnouncement {
        protocol: PROTOCOL.into(),
        wg_pubkey: PublicKey([k; 32]).to_string(),
        hostname: format!("peer{k}"),
        mesh_ip: format!("10.1.0.{k}"),
        wg_endpoint: endpoint.into(),
        timestamp: unix(now),
        ..Default::default()
    }
}

fn known(k: u8, endpoint: &str) -> KnownPeer {
    KnownPeer {
        wg_pubkey: PublicKey([k; 32]).to_string(),
        mesh_ip: format!("10.1.0.{k}"),
        wg_endpoint: endpoint.into(),
        ..Default::default()
    }
}

#[test]
fn a_hello_stores_the_sender_and_its_peers_and_gets_a_reply_with_the_observed_endpoint() {
    let h = harness();
    let now = SystemTime::now();
    let mut hello = peer_ann(2, "0.0.0.0:51820", now);
    hello.known_peers = vec![
        known(3, "198.51.100.7:51820"),
        known(1, "192.168.1.1:51820"), // ourselves
        known(4, "0.0.0.0:51820"),
        KnownPeer {
            wg_pubkey: "not a key".into(),
            ..known(5, "198.51.100.8:51820")
        },
    ];
    let source = sa("[::ffff:192.168.1.2]:40000");
    let handled = h.exchange.handle(
        &h.seal(MessageType::Hello, &hello),
        source,
        now,
        Instant::now(),
    );

    let sender = h.store.get(&PublicKey([2; 32])).expect("sender stored");
    assert_eq!(sender.endpoint, Some(sa("192.168.1.2:51820")));
    assert_eq!(sender.endpoint_method, Some(Method::Dht));
    assert_eq!(sender.hostname, "peer2");
    let c = h.store.get(&PublicKey([3; 32])).expect("known peer stored");
    assert_eq!(c.endpoint, Some(sa("198.51.100.7:51820")));
    assert_eq!(c.discovered_via, vec![Method::DhtTransitive]);
    assert_eq!(h.store.get(&PublicKey([4; 32])).unwrap().endpoint, None);
    assert!(
        h.store.get(&PublicKey([1; 32])).is_none(),
        "never ourselves"
    );
    assert_eq!(h.store.count(), 3);
    assert_eq!(
        h.exchange.control_endpoint(&PublicKey([2; 32])),
        Some(sa("192.168.1.2:40000"))
    );
    // The peer we have never heard from directly is contacted at its host's gossip port.
    assert_eq!(handled.contact, vec![sa("198.51.100.7:51900")]);

    let (datagram, to) = handled.reply.expect("a REPLY");
    assert_eq!(to, sa("192.168.1.2:40000"));
    let (t, reply) = h.envelope.open_announcement(&datagram, now).unwrap();
    assert_eq!(t, MessageType::Reply);
    assert_eq!(reply.observed_endpoint, "192.168.1.2:40000");
    assert_eq!(reply.wg_pubkey, PublicKey([1; 32]).to_string());
    assert_eq!(reply.timestamp, unix(now));
    let listed: Vec<&str> = reply
        .known_peers
        .iter()
        .map(|k| k.wg_pubkey.as_str())
        .collect();
    assert!(listed.contains(&PublicKey([2; 32]).to_string().as_str()));
    assert_eq!(h.events(), 1);
    assert!(h.registry.layers()["exchange"].last_success_at.is_some());

    // The same HELLO again (a resend): nobody is contacted twice within a minute.
    let again = h.exchange.handle(
        &h.seal(MessageType::Hello, &hello),
        source,
        now,
        Instant::now(),
    );
    assert!(again.contact.is_empty());
    assert!(again.reply.is_some());
}

#[test]
fn a_reply_sets_our_public_endpoint_and_stores_the_replier() {
    let h = harness();
    let now = SystemTime::now();
    let mut reply = peer_ann(2, "203.0.113.2:51820", now);
    reply.observed_endpoint = "203.0.113.9:4000".into();
    reply.known_peers = vec![known(3, "203.0.113.3:51820")];
    let handled = h.exchange.handle(
        &h.seal(MessageType::Reply, &reply),
        sa("203.0.113.2:51900"),
        now,
        Instant::now(),
    );
    assert_eq!(handled.reply, None, "a REPLY is not answered");
    assert_eq!(handled.contact, vec![sa("203.0.113.3:51900")]);
    assert_eq!(
        h.local.borrow().public_endpoint,
        Some(sa("203.0.113.9:51820")),
        "observed IP with our WireGuard port"
    );
    let replier = h.store.get(&PublicKey([2; 32])).unwrap();
    assert_eq!(replier.endpoint, Some(sa("203.0.113.2:51820")));
    assert_eq!(replier.endpoint_method, Some(Method::Dht));
    // A private observation leaves it alone.
    reply.observed_endpoint = "192.168.1.5:1".into();
    h.exchange.handle(
        &h.seal(MessageType::Reply, &reply),
        sa("203.0.113.2:51900"),
        now,
        Instant::now(),
    );
    assert_eq!(
        h.local.borrow().public_endpoint,
        Some(sa("203.0.113.9:51820"))
    );
}

#[test]
fn goodbye_removes_the_peer_at_once_and_keeps_it_out_of_other_peers_lists() {
    let h = harness();
    let now = SystemTime::now();
    let mono = Instant::now();
    let src = sa("192.168.1.2:51900");
    let bye = |k: u8, ts: i64| Goodbye {
        protocol: PROTOCOL.into(),
        timestamp: ts,
        wg_pubkey: PublicKey([k; 32]).to_string(),
    };
    h.exchange.handle(
        &h.seal(MessageType::Hello, &peer_ann(2, "0.0.0.0:51820", now)),
        src,
        now,
        mono,
    );
    assert!(h.store.get(&PublicKey([2; 32])).is_some());
    // (case, goodbye, still stored, drop reason)
    #[rustfmt::skip]
    let rows = [
        ("61 s old: ignored", bye(2, unix(now) - 61), true, Some("goodbye_stale")),
        ("61 s ahead: ignored", bye(2, unix(now) + 61), true, Some("goodbye_stale")),
        ("names us: ignored", bye(1, unix(now)), true, Some("own")),
        ("no key: ignored", Goodbye { wg_pubkey: String::new(), ..bye(2, unix(now)) }, true, Some("bad_payload")),
        ("fresh: removed", bye(2, unix(now) - 59), false, None),
    ];
    for (case, goodbye, stored, reason) in rows {
        let before = reason.map(|r| h.drops(r));
        let handled = h
            .exchange
            .handle(&h.seal(MessageType::Goodbye, &goodbye), src, now, mono);
        assert_eq!(handled, Handled::default(), "{case}");
        assert_eq!(h.store.get(&PublicKey([2; 32])).is_some(), stored, "{case}");
        if let (Some(r), Some(before)) = (reason, before) {
            assert_eq!(h.drops(r), before + 1, "{case}");
        }
    }
    assert_eq!(h.exchange.control_endpoint(&PublicKey([2; 32])), None);
    // Another peer still lists it: not re-added.
    let mut other = peer_ann(3, "0.0.0.0:51820", now);
    other.known_peers = vec![known(2, "192.168.1.2:51820")];
    h.exchange.handle(
        &h.seal(MessageType::Hello, &other),
        sa("192.168.1.3:51900"),
        now,
        mono,
    );
    assert!(h.store.get(&PublicKey([2; 32])).is_none());
    // ... until the memory fades.
    h.exchange.handle(
        &h.seal(MessageType::Hello, &other),
        sa("192.168.1.3:51900"),
        now,
        mono + DEPARTED_MEMORY,
    );
    assert!(h.store.get(&PublicKey([2; 32])).is_some());
    // Or at once when it talks to us itself.
    h.store.remove(&PublicKey([2; 32]));
    h.exchange.handle(
        &h.seal(MessageType::Goodbye, &bye(2, unix(now))),
        src,
        now,
        mono,
    );
    h.exchange.handle(
        &h.seal(MessageType::Hello, &peer_ann(2, "0.0.0.0:51820", now)),
        src,
        now,
        mono,
    );
    assert!(h.store.get(&PublicKey([2; 32])).is_some());
}

#[test]
fn hostile_datagrams_are_counted_by_reason_and_change_nothing() {
    let h = harness();
    let now = SystemTime::now();
    let mono = Instant::now();
    let other_mesh = Envelope::new(&[8; 32]);
    let mut stale = peer_ann(2, "0.0.0.0:51820", now);
    stale.timestamp -= 601;
    let wrong_protocol = PeerAnnouncement {
        protocol: "wgmesh-v2".into(),
        ..peer_ann(2, "0.0.0.0:51820", now)
    };
    let bad_key = PeerAnnouncement {
        wg_pubkey: "AAAA".into(),
        ..peer_ann(2, "0.0.0.0:51820", now)
    };
    // (case, datagram, reason); each from its own source so the limiter stays out of the way.
    let rows: Vec<(&str, Vec<u8>, &str)> = vec![
        ("garbage", b"\x00\x01\x02garbage".to_vec(), "malformed"),
        ("empty", Vec::new(), "malformed"),
        ("truncated", h.seal(MessageType::Hello, &peer_ann(2, "", now))[..50].to_vec(), "malformed"),
        ("oversized", vec![b' '; MAX_DATAGRAM_LEN + 1], "oversized"),
        ("another mesh's key", other_mesh.seal(MessageType::Hello, &peer_ann(2, "", now)).unwrap(), "authentication"),
        ("stale", h.seal(MessageType::Hello, &stale), "stale"),
        ("wrong protocol", h.seal(MessageType::Hello, &wrong_protocol), "bad_payload"),
        ("invalid key", h.seal(MessageType::Hello, &bad_key), "bad_payload"),
        ("payload not an announcement", h.seal(MessageType::Reply, &serde_json::json!({"protocol": "wgmesh-v1", "timestamp": unix(now), "known_peers": 7})), "bad_payload"),
        ("unknown type", br#"{"type":"PING","nonce":"AAAAAAAAAAAAAAAA","ciphertext":"AAAAAAAAAAAAAAAAAAAAAA=="}"#.to_vec(), "authentication"),
    ];
    for (i, (case, datagram, reason)) in rows.into_iter().enumerate() {
        let before = h.drops(reason);
        let src = SocketAddr::from((Ipv4Addr::new(198, 51, 100, i as u8 + 1), 9));
        let handled = h.exchange.handle(&datagram, src, now, mono);
        assert_eq!(handled, Handled::default(), "{case}");
        assert_eq!(h.drops(reason), before + 1, "{case}");
    }
    assert_eq!(h.store.count(), 0);
    assert_eq!(h.events(), 0);
}

#[test]
fn a_message_replayed_from_another_address_is_dropped_and_a_resend_is_answered() {
    let h = harness();
    let now = SystemTime::now();
    let mono = Instant::now();
    let hello = h.seal(MessageType::Hello, &peer_ann(2, "0.0.0.0:51820", now));
    let first = h
        .exchange
        .handle(&hello, sa("192.168.1.2:51900"), now, mono);
    assert!(first.reply.is_some());
    // The same datagram again from the same IP (a punching resend, even from a new port).
    let resend = h
        .exchange
        .handle(&hello, sa("192.168.1.2:40000"), now, mono);
    assert!(resend.reply.is_some());
    // A replay from elsewhere would move the peer's endpoint to the replayer.
    let replay = h
        .exchange
        .handle(&hello, sa("192.168.1.66:51900"), now, mono);
    assert_eq!(replay, Handled::default());
    assert_eq!(h.drops("replay"), 1);
    let stored = h.store.get(&PublicKey([2; 32])).unwrap();
    assert_eq!(stored.endpoint, Some(sa("192.168.1.2:51820")));
    // Relabelled (the type is not authenticated): still the same message.
    let text = String::from_utf8(hello).unwrap().replace("HELLO", "REPLY");
    h.exchange
        .handle(text.as_bytes(), sa("192.168.1.66:51900"), now, mono);
    assert_eq!(h.drops("replay"), 2);
    // The same HELLO sealed to someone else (another nonce), captured there and replayed here.
    let ann = peer_ann(2, "0.0.0.0:51820", now);
    let captured = h.seal(MessageType::Hello, &ann);
    let replay = h
        .exchange
        .handle(&captured, sa("192.168.1.66:51900"), now, mono);
    assert_eq!(replay, Handled::default());
    assert_eq!(h.drops("replay"), 3);
    assert_eq!(
        h.store.get(&PublicKey([2; 32])).unwrap().endpoint,
        Some(sa("192.168.1.2:51820"))
    );
    // A newer message from the new address: the peer moved.
    let moved = PeerAnnouncement {
        timestamp: ann.timestamp + 1,
        ..ann
    };
    let moved = h.seal(MessageType::Hello, &moved);
    assert!(
        h.exchange
            .handle(&moved, sa("192.168.1.66:51900"), now, mono)
            .reply
            .is_some()
    );
    assert_eq!(
        h.store.get(&PublicKey([2; 32])).unwrap().endpoint,
        Some(sa("192.168.1.66:51820"))
    );
}

#[test]
fn the_rate_limiter_runs_before_decryption() {
    let h = harness();
    let now = SystemTime::now();
    let mono = Instant::now();
    let src = sa("192.168.1.9:1");
    for _ in 0..1000 {
        h.exchange.handle(b"garbage", src, now, mono);
    }
    assert_eq!(h.drops("malformed"), 20);
    assert_eq!(h.drops("rate_limited"), 980);
    // A valid HELLO from that source is dropped too while it has no token...
    let hello = h.seal(MessageType::Hello, &peer_ann(2, "0.0.0.0:51820", now));
    assert_eq!(
        h.exchange.handle(&hello, src, now, mono),
        Handled::default()
    );
    assert_eq!(h.store.count(), 0);
    // ... and accepted 100 ms later; other sources were never affected.
    assert!(
        h.exchange
            .handle(&hello, src, now, mono + Duration::from_millis(100))
            .reply
            .is_some()
    );
    let other = h.seal(MessageType::Hello, &peer_ann(3, "0.0.0.0:51820", now));
    assert!(
        h.exchange
            .handle(&other, sa("192.168.1.10:1"), now, mono)
            .reply
            .is_some()
    );
}

#[test]
fn messages_for_other_layers_go_to_their_queues_or_are_counted_when_nobody_listens() {
    let mut h = harness();
    let now = SystemTime::now();
    let mono = Instant::now();
    let parts = h.parts.take().unwrap();
    let (mut announcements, rendezvous) = (parts.announcements, parts.rendezvous);
    let ann = h.seal(MessageType::Announce, &peer_ann(2, "0.0.0.0:51820", now));
    let stem = h.seal(
        MessageType::Stem,
        &serde_json::json!({"protocol": "wgmesh-v1", "timestamp": unix(now)}),
    );
    let offer = h.seal(
        MessageType::RendezvousOffer,
        &serde_json::json!({"protocol": "wgmesh-v1", "timestamp": unix(now)}),
    );
    h.exchange.handle(&ann, sa("10.1.0.2:51900"), now, mono);
    h.exchange.handle(&stem, sa("10.1.0.3:51900"), now, mono);
    let got = announcements.try_recv().unwrap();
    assert_eq!(
        (got.opened.msg_type, got.source),
        (MessageType::Announce, sa("10.1.0.2:51900"))
    );
    assert_eq!(
        announcements.try_recv().unwrap().opened.msg_type,
        MessageType::Stem
    );
    assert_eq!(
        h.store.count(),
        0,
        "ANNOUNCE is gossip's to store, not ours"
    );
    // Rendezvous is off: its receiver is gone.
    drop(rendezvous);
    h.exchange.handle(&offer, sa("10.1.0.4:51900"), now, mono);
    assert_eq!(h.drops("no_receiver"), 1);
    // A full queue drops (from many sources, so the limiter does not).
    for i in 0..INBOUND_QUEUE + 5 {
        let src = SocketAddr::from((Ipv4Addr::from(0x0a02_0000 + i as u32), 1));
        let ann = h.seal(MessageType::Announce, &peer_ann(2, "0.0.0.0:51820", now));
        h.exchange.handle(&ann, src, now, mono);
    }
    assert_eq!(h.drops("queue_full"), 5);
}

#[test]
fn own_messages_are_not_stored_and_not_answered() {
    let h = harness();
    let now = SystemTime::now();
    let own = PeerAnnouncement {
        timestamp: unix(now),
        ..h.local.borrow().announcement()
    };
    for t in [MessageType::Hello, MessageType::Reply] {
        let handled = h.exchange.handle(
            &h.seal(t, &own),
            sa("192.168.1.1:51900"),
            now,
            Instant::now(),
        );
        assert_eq!(handled, Handled::default());
    }
    assert_eq!(h.store.count(), 0);
    assert_eq!(h.drops("own"), 2);
    assert!(h.exchange.is_own(sa("192.168.1.1:51900")));
}

// --- Go compatibility ----------------------------------------------------------------------

fn go_vectors() -> Vec<serde_json::Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/compat/vectors/envelopes.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn go_datagram(v: &serde_json::Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v["datagram_base64"].as_str().unwrap())
        .unwrap()
}

fn go_harness(v: &serde_json::Value) -> Harness {
    let secret = MeshSecret::parse(v["secret"].as_str().unwrap(), SecretOrigin::Literal).unwrap();
    let keys = DerivedKeys::derive(&secret);
    harness_with(keys.gossip_key, keys.gossip_port, true, true)
}

/// Go's field rules for what we send: it validates, and re-serialising it gives the same bytes
/// (field order, omitempty).
fn passes_go_rules(plaintext: &[u8]) -> PeerAnnouncement {
    let ann: PeerAnnouncement = serde_json::from_slice(plaintext).unwrap();
    assert_eq!(ann.validate(), Ok(()));
    assert_eq!(
        String::from_utf8(to_go_json(&ann)).unwrap(),
        String::from_utf8(plaintext.to_vec()).unwrap()
    );
    ann
}

#[test]
fn a_go_hello_gets_a_reply_that_passes_go_field_rules() {
    let vectors = go_vectors();
    let v = vectors.iter().find(|v| v["type"] == "HELLO").unwrap();
    let h = go_harness(v);
    let source = sa("198.51.100.20:40000");
    let handled = h
        .exchange
        .handle(&go_datagram(v), source, go_time(), Instant::now());
    // The Go sender and its known peer are stored as Go would.
    let sender: PublicKey = v["payload"]["wg_pubkey"].as_str().unwrap().parse().unwrap();
    let stored = h.store.get(&sender).unwrap();
    assert_eq!(stored.endpoint, Some(sa("203.0.113.5:51820")));
    assert_eq!(stored.hostname, "node-0");
    assert_eq!(stored.nat_type.as_deref(), Some("symmetric"));
    assert_eq!(
        stored.routable_networks,
        vec!["192.168.50.0/24".parse().unwrap()]
    );
    let gamma: PublicKey = "9APFVLekRwIkLWCe3KoQp4Fy3GImmK3VwUjWQIkkwq8="
        .parse()
        .unwrap();
    assert_eq!(
        h.store.get(&gamma).unwrap().endpoint,
        Some(sa("198.51.100.7:51820"))
    );

    let (datagram, to) = handled.reply.unwrap();
    assert_eq!(to, source);
    let outer: serde_json::Value = serde_json::from_slice(&datagram).unwrap();
    assert_eq!(outer["type"], "REPLY");
    let keys: Vec<&String> = outer.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 3);
    let opened = h.envelope.open_raw(&datagram, go_time()).unwrap();
    let reply = passes_go_rules(&opened.plaintext);
    assert_eq!(reply.observed_endpoint, "198.51.100.20:40000");
    assert_eq!(reply.timestamp, GO_TIME as i64);
    assert_eq!(reply.protocol, "wgmesh-v1");
    assert_eq!(reply.known_peers.len(), 2, "the Go sender and its peer");
    // The Go node would accept it inside its ±10 min window.
    assert!(
        h.envelope
            .open_raw(&datagram, go_time() + Duration::from_secs(600))
            .is_ok()
    );
}

#[test]
fn a_go_reply_teaches_us_our_endpoint_and_a_go_announce_goes_to_gossip() {
    let vectors = go_vectors();
    let reply = vectors.iter().find(|v| v["type"] == "REPLY").unwrap();
    let mut h = go_harness(reply);
    let handled = h.exchange.handle(
        &go_datagram(reply),
        sa("203.0.113.5:51821"),
        go_time(),
        Instant::now(),
    );
    assert!(handled.reply.is_none());
    assert_eq!(
        h.local.borrow().public_endpoint,
        Some(sa("203.0.113.99:51820"))
    );
    let replier: PublicKey = reply["payload"]["wg_pubkey"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(h.store.get(&replier).unwrap().introducer);

    let announce = vectors.iter().find(|v| v["type"] == "ANNOUNCE").unwrap();
    h.exchange.handle(
        &go_datagram(announce),
        sa("10.1.0.9:51821"),
        go_time(),
        Instant::now(),
    );
    let got = h.parts.as_mut().unwrap().announcements.try_recv().unwrap();
    assert_eq!(got.opened.msg_type, MessageType::Announce);
    passes_go_rules(&got.opened.plaintext);
}

#[test]
fn every_message_we_send_round_trips_go_json_rules() {
    let h = harness();
    let now = go_time();
    let mut me = h.local.borrow().clone();
    me.advertise_routes = vec!["192.168.50.0/24".parse().unwrap()];
    me.nat_type = Some(crate::node::NatType::Cone);
    me.hostname = "a<b>&c".into();
    let store = PeerStore::default();
    let mut u = crate::peers::PeerUpdate::new(PublicKey([9; 32]));
    u.endpoint = Some(sa("198.51.100.7:51820"));
    u.mesh_ip = Some("10.1.2.3".parse().unwrap());
    u.nat_type = Some("cone".into());
    store.update(u, Method::Dht, Instant::now());
    let active = store.active(Instant::now());
    let hello = build_announcement(&me, &active, now, None, true);
    let reply = build_announcement(&me, &active, now, Some(sa("203.0.113.1:9")), true);
    for (t, ann) in [(MessageType::Hello, hello), (MessageType::Reply, reply)] {
        let d = h.envelope.seal(t, &ann).unwrap();
        let opened = h.envelope.open_raw(&d, now).unwrap();
        assert_eq!(opened.msg_type, t);
        let back = passes_go_rules(&opened.plaintext);
        assert_eq!(back, ann);
        assert!(
            String::from_utf8(opened.plaintext)
                .unwrap()
                .contains(r"a\u003cb\u003e\u0026c")
        );
    }
    let bye = Goodbye {
        protocol: PROTOCOL.into(),
        timestamp: GO_TIME as i64,
        wg_pubkey: PublicKey([1; 32]).to_string(),
    };
    let d = h.envelope.seal(MessageType::Goodbye, &bye).unwrap();
    let opened = h.envelope.open_raw(&d, now).unwrap();
    assert_eq!(opened.msg_type, MessageType::Goodbye);
    let back: Goodbye = opened.payload().unwrap();
    assert_eq!(back, bye);
    assert_eq!(to_go_json(&back), opened.plaintext);
}

// --- Two services over loopback --------------------------------------------------------------

/// A free UDP port on loopback (both families free when the port is released).
fn free_port() -> u16 {
    std::net::UdpSocket::bind("[::]:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A node of one mesh with key byte `k`, on a free port of its own.
fn node(k: u8, punching: bool) -> Harness {
    let h = harness_with([7; 32], free_port(), punching, true);
    let mut local = h.local.borrow().clone();
    local.public_key = PublicKey([k; 32]);
    h.exchange.local.send_replace(local);
    h
}

async fn start(
    h: &Harness,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<Result<(), TaskError>>,
) {
    let cancel = CancellationToken::new();
    let run = tokio::spawn(h.exchange.clone().run(cancel.clone()));
    tokio::time::timeout(Duration::from_secs(5), h.exchange.ready())
        .await
        .unwrap();
    (cancel, run)
}

fn loopback(h: &Harness) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, h.exchange.gossip_port()))
}

#[tokio::test]
async fn hello_and_reply_over_loopback_then_goodbye_on_shutdown() {
    let (a, b) = (node(0xa, true), node(0xb, true));
    let (cancel_a, run_a) = start(&a).await;
    let (cancel_b, run_b) = start(&b).await;
    assert_eq!(
        a.registry.layers()["exchange"].detail,
        Some(format!("UDP port {}", a.exchange.gossip_port()))
    );

    let contacted = a.exchange.hello(loopback(&b), Method::Dht).await.unwrap();
    assert_eq!(contacted.from, loopback(&b));
    assert_eq!(
        contacted.announcement.wg_pubkey,
        PublicKey([0xb; 32]).to_string()
    );
    let b_at_a = a.store.get(&PublicKey([0xb; 32])).unwrap();
    assert_eq!(b_at_a.endpoint, Some(sa("127.0.0.1:51820")));
    assert_eq!(
        a.exchange.control_endpoint(&PublicKey([0xb; 32])),
        Some(loopback(&b))
    );
    assert!(
        b.store.get(&PublicKey([0xa; 32])).is_some(),
        "b stored the HELLO's sender"
    );
    assert_eq!(
        a.local.borrow().public_endpoint,
        None,
        "loopback is never our public endpoint"
    );

    // Our own address is refused without waiting.
    assert!(matches!(
        a.exchange.hello(loopback(&a), Method::Dht).await,
        Err(ContactError::OwnAddress(_))
    ));

    // b stops: a hears its GOODBYE and drops it at once.
    cancel_b.cancel();
    run_b.await.unwrap().unwrap();
    assert!(!b.exchange.is_running());
    let deadline = Instant::now() + Duration::from_secs(2);
    while a.store.get(&PublicKey([0xb; 32])).is_some() {
        assert!(Instant::now() < deadline, "a never heard b's GOODBYE");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(matches!(
        b.exchange.hello(loopback(&a), Method::Dht).await,
        Err(ContactError::NotRunning)
    ));
    cancel_a.cancel();
    run_a.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_hello_is_resent_every_100ms_for_4s_or_sent_once_without_punching() {
    for (punching, sends) in [(true, 40), (false, 1)] {
        let a = node(0xa, punching);
        let (cancel, run) = start(&a).await;
        // A bound socket that never answers.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = silent.local_addr().unwrap();
        let result = a.exchange.hello(to, Method::Dht).await;
        assert!(
            matches!(result, Err(ContactError::Timeout(addr)) if addr == to),
            "{result:?}"
        );
        assert_eq!(
            a.metrics.values().layers["exchange"].1,
            sends,
            "punching={punching}"
        );
        assert!(a.exchange.lock().waiters.is_empty(), "the waiter is gone");
        cancel.cancel();
        run.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn a_busy_port_is_a_retrying_layer_until_it_is_free() {
    let blocker = std::net::UdpSocket::bind("[::]:0").unwrap();
    let port = blocker.local_addr().unwrap().port();
    let h = harness_with([7; 32], port, true, true);
    let cancel = CancellationToken::new();
    let run = tokio::spawn(h.exchange.clone().run(cancel.clone()));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let layer = h.registry.layers()["exchange"].clone();
        if layer.state == LayerState::Retrying {
            assert!(
                layer
                    .last_error
                    .unwrap()
                    .contains(&format!("UDP port {port}"))
            );
            break;
        }
        assert!(Instant::now() < deadline, "never retrying");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(matches!(
        h.exchange.hello(sa("127.0.0.1:9"), Method::Dht).await,
        Err(ContactError::NotRunning)
    ));
    drop(blocker);
    tokio::time::timeout(Duration::from_secs(5), h.exchange.ready())
        .await
        .unwrap();
    assert_eq!(h.registry.layers()["exchange"].state, LayerState::Running);
    cancel.cancel();
    run.await.unwrap().unwrap();
}

#[test]
fn stored_peers_we_never_heard_from_are_contacted_when_the_socket_opens() {
    let h = harness_with([7; 32], 51900, true, false);
    let mono = Instant::now();
    let cached = |k: u8, ep: Option<&str>| {
        let mut u = crate::peers::PeerUpdate::new(PublicKey([k; 32]));
        u.endpoint = ep.map(sa);
        h.store.update(u, Method::Cache, mono);
    };
    cached(2, Some("198.51.100.2:51820"));
    cached(3, None);
    cached(4, Some("[2001:db8::4]:51820")); // IPv6 is off in this harness
    cached(5, Some("198.51.100.2:51999")); // same host as 2: one contact
    cached(1, Some("198.51.100.1:51820")); // ourselves
    // 6 spoke to us already.
    let now = SystemTime::now();
    h.exchange.handle(
        &h.seal(MessageType::Hello, &peer_ann(6, "198.51.100.6:51820", now)),
        sa("198.51.100.6:51900"),
        now,
        mono,
    );
    assert_eq!(
        h.exchange.stored_peers_to_contact(mono),
        vec![sa("198.51.100.2:51900")]
    );
    // Not twice within a minute.
    assert!(h.exchange.stored_peers_to_contact(mono).is_empty());
}

#[tokio::test]
async fn static_peers_report_which_answered_and_keep_trying_the_others() {
    use crate::discovery::static_peers::StaticPeers;

    let (a, b) = (node(0xa, false), node(0xb, true));
    let (cancel_a, run_a) = start(&a).await;
    let (cancel_b, run_b) = start(&b).await;
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent = silent.local_addr().unwrap().to_string();
    let answering = loopback(&b).to_string();
    let layer = a.registry.layer("static", LayerState::Running);
    let task = StaticPeers {
        peers: vec![answering.parse().unwrap(), silent.parse().unwrap()],
        exchange: a.exchange.clone(),
        ipv6: true,
        layer,
        counters: a.metrics.layer("static"),
    };
    let cancel = CancellationToken::new();
    let run = tokio::spawn(task.run(cancel.clone()));
    let deadline = Instant::now() + Duration::from_secs(10);
    let want = format!("answered: {answering}; still trying: {silent}");
    loop {
        let layer = a.registry.layers()["static"].clone();
        if layer.detail.as_deref() == Some(want.as_str()) {
            assert_eq!(layer.state, LayerState::Running);
            break;
        }
        assert!(Instant::now() < deadline, "static layer: {layer:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(b.store.get(&PublicKey([0xa; 32])).is_some());
    assert_eq!(
        a.store.get(&PublicKey([0xb; 32])).unwrap().endpoint_method,
        Some(Method::Dht)
    );
    cancel.cancel();
    run.await.unwrap().unwrap();
    for (c, r) in [(cancel_a, run_a), (cancel_b, run_b)] {
        c.cancel();
        r.await.unwrap().unwrap();
    }
}
