//! STUN and NAT type: what this node announces as its public WireGuard endpoint and NAT type
//! (crypto-and-wire §15), learned at start and every 60 s.
//!
//! Each round (see [`endpoint`] for the decision, [`public`] for which addresses count):
//! 1. Unless `--no-ipv6`: a global IPv6 address of the host (from the `interfaces` watch, the
//!    mesh interface excluded) wins: endpoint `[ipv6]:<WireGuard port>`, NAT type `unknown`,
//!    and no STUN server is asked.
//! 2. Otherwise the first two STUN servers (`--stun HOST:PORT`, repeatable; default
//!    [`DEFAULT_SERVERS`]) are asked, one after the other, from **one** ephemeral UDP4 socket
//!    (so a cone NAT shows both the same mapping): each name is resolved to its first IPv4
//!    address, a 20-byte binding request ([`codec`]) is sent, and only a datagram from exactly
//!    that address that parses as the answer to that request counts; the request is resent
//!    after 500 ms and 1.5 s with the same transaction id, and a server that has not answered
//!    3 s after the first send counts as silent ([`RETRANSMITS`]). The endpoint is the mapped
//!    IP with our WireGuard port; the NAT type comes from the two answers ([`nat`]).
//! 3. When nothing was learned (no server answered, or only with a private address) the old
//!    endpoint and NAT type stay, the layer shows `retrying` with each server's reason, and the
//!    next round comes after 5 s, doubling up to 60 s.
//!
//! A result is written to the [`LocalNode`] only when it differs from what is there (logged
//! once at `info`), so announcements carry it from their next send. The endpoint is also
//! written by the exchange layer (what peers saw in their REPLY); this layer replaces it only
//! when its own result changed ([`endpoint::apply`]), so the two never flap.
//!
//! A name that does not resolve, a socket that cannot be opened, a network that is not up yet:
//! all are a `retrying` state with the reason, never a failed start. The task returns only when
//! cancelled. Status: layer `stun` of `GET /v1/status` is `running` with the endpoint, the NAT
//! type and what each server saw as detail; `public_endpoint` and `nat_type` of the status are
//! the node's own. Metrics ([`LayerCounters`] of layer `stun`): every request datagram sent is a
//! send, every valid answer an event, every other datagram received a drop.

pub mod codec;
pub mod endpoint;
pub mod nat;
pub mod public;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use self::codec::{TransactionId, binding_request, parse_binding_response};
use self::endpoint::{Decision, Learned, ServerReport, apply, decide, next_delay};
use self::public::choose_ipv6;
use crate::config::HostPort;
use crate::metrics::LayerCounters;
use crate::node::LocalNode;
use crate::supervisor::LayerHandle;
use crate::system::net::HostInterfaces;
use crate::system::net::stun::{ProbeSocket, StunSocketError, resolve_v4, transaction_id};

/// The STUN servers used without `--stun` (Go's list). Only the first two are asked; the third
/// is Go's single-server fallback, which never runs while two are configured.
pub const DEFAULT_SERVERS: [&str; 3] = [
    "stun.l.google.com:19302",
    "stun1.l.google.com:19302",
    "stun.cloudflare.com:3478",
];

/// How long to wait after each send of a request before resending it (the last: before giving
/// up). They add up to Go's 3 s per server.
pub const RETRANSMITS: [Duration; 3] = [
    Duration::from_millis(500),
    Duration::from_millis(1000),
    Duration::from_millis(1500),
];

/// The servers to ask: `configured` (`--stun`), or [`DEFAULT_SERVERS`] when it is empty.
pub fn servers(configured: &[HostPort]) -> Vec<HostPort> {
    if configured.is_empty() {
        DEFAULT_SERVERS
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect()
    } else {
        configured.to_vec()
    }
}

/// The STUN task (layer `stun`).
#[derive(Clone)]
pub struct StunDiscovery {
    /// The servers, in order ([`servers`]); the first two are asked.
    pub servers: Vec<HostPort>,
    /// IPv6 endpoints allowed (`--no-ipv6` turns the interface scan off and refuses IPv6
    /// answers).
    pub ipv6: bool,
    /// This node: its WireGuard port is read, its endpoint and NAT type written.
    pub local: watch::Sender<LocalNode>,
    /// The host's interfaces (for global IPv6 addresses).
    pub interfaces: watch::Receiver<HostInterfaces>,
    /// Index of the mesh interface (never scanned).
    pub wg_ifindex: u32,
    /// Where the `stun` layer's state goes.
    pub layer: LayerHandle,
    /// The `stun` layer's metrics.
    pub counters: LayerCounters,
}

impl StunDiscovery {
    /// Runs rounds until `cancel` fires; never returns before (see the module documentation).
    pub async fn run(self, cancel: CancellationToken) {
        // What the last successful round learned (what this layer owns in the LocalNode).
        let mut previous: Option<Learned> = None;
        let mut failures = 0u32;
        let mut last_error: Option<String> = None;
        loop {
            let decision = tokio::select! {
                () = cancel.cancelled() => return,
                d = self.round() => d,
            };
            match decision {
                Decision::Use { learned, detail } => {
                    failures = 0;
                    if last_error.take().is_some() {
                        tracing::info!(%detail, "STUN works again");
                    }
                    self.publish(previous.as_ref(), &learned);
                    previous = Some(learned);
                    tracing::debug!(%detail, "STUN round done");
                    self.layer.running(Some(detail));
                    self.layer.success();
                }
                Decision::Keep { error } => {
                    failures = failures.saturating_add(1);
                    let retry_in_s = next_delay(failures).as_secs();
                    if last_error.as_deref() == Some(error.as_str()) {
                        tracing::debug!(%error, retry_in_s, "STUN learned nothing again");
                    } else {
                        tracing::warn!(%error, retry_in_s, "STUN learned nothing; keeping the old endpoint and retrying");
                    }
                    self.layer.retrying(&error);
                    last_error = Some(error);
                }
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(next_delay(failures)) => {}
            }
        }
    }

    /// One round: the IPv6 scan, else the STUN servers.
    async fn round(&self) -> Decision {
        let port = self.local.borrow().listen_port;
        if self.ipv6 {
            let choice = choose_ipv6(&self.interfaces.borrow(), self.wg_ifindex);
            if let Some(choice) = choice {
                return decide(Some(&choice), &[], port, true);
            }
        }
        let reports = self.probe().await;
        decide(None, &reports, port, self.ipv6)
    }

    /// Asks the first two servers from one socket.
    async fn probe(&self) -> Vec<ServerReport> {
        let asked = &self.servers[..self.servers.len().min(2)];
        let report = |server: &HostPort, answer| ServerReport {
            server: server.to_string(),
            answer,
        };
        let socket = match ProbeSocket::open().await {
            Ok(s) => s,
            Err(e) => {
                return asked
                    .iter()
                    .map(|s| report(s, Err(e.to_string())))
                    .collect();
            }
        };
        let mut reports = Vec::with_capacity(asked.len());
        for server in asked {
            let answer = self.ask(&socket, server).await;
            if let Err(error) = &answer {
                tracing::debug!(%server, %error, "STUN server gave no answer");
            }
            reports.push(report(server, answer));
        }
        reports
    }

    /// The address `server` saw the socket at.
    async fn ask(&self, socket: &ProbeSocket, server: &HostPort) -> Result<SocketAddr, String> {
        let addr = resolve_v4(server).await.map_err(|e| e.to_string())?;
        let txn = transaction_id()
            .map(TransactionId)
            .map_err(|e| format!("no random transaction id: {e}"))?;
        let request = binding_request(txn);
        for wait in RETRANSMITS {
            self.counters.sent();
            let answer = socket
                .ask(
                    addr,
                    &request,
                    wait,
                    |bytes| match parse_binding_response(bytes, txn) {
                        Ok(mapped) => {
                            self.counters.event();
                            Some(mapped)
                        }
                        Err(error) => {
                            tracing::debug!(server = %addr, %error, "dropped a datagram that is not the STUN answer");
                            self.counters.dropped("malformed");
                            None
                        }
                    },
                    |from| {
                        tracing::debug!(%from, server = %addr, "dropped a datagram from another address than the STUN server");
                        self.counters.dropped("unexpected_source");
                    },
                )
                .await;
            match answer {
                Ok(mapped) => return Ok(mapped),
                Err(StunSocketError::Timeout { .. }) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        let total = RETRANSMITS.iter().sum::<Duration>().as_secs();
        // A name is shown with the address it resolved to.
        Err(match server.as_socket_addr() {
            Some(_) => format!("no answer within {total} s"),
            None => format!("no answer from {addr} within {total} s"),
        })
    }

    /// Writes `learned` into the LocalNode where it differs; logs what changed.
    fn publish(&self, previous: Option<&Learned>, learned: &Learned) {
        let mut applied = endpoint::Applied::default();
        self.local.send_if_modified(|node| {
            applied = apply(node, previous, learned);
            applied.endpoint || applied.nat
        });
        if applied.endpoint || applied.nat {
            tracing::info!(
                endpoint = %learned.endpoint,
                nat = learned.nat.as_str(),
                endpoint_changed = applied.endpoint,
                nat_changed = applied.nat,
                "public endpoint {}, NAT type {}", learned.endpoint, learned.nat.as_str()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, UdpSocket};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::node::NatType;
    use crate::supervisor::{LayerState, Registry};

    #[test]
    fn the_default_servers_parse_and_stun_flags_replace_them() {
        let defaults = servers(&[]);
        let shown: Vec<String> = defaults.iter().map(ToString::to_string).collect();
        assert_eq!(shown, DEFAULT_SERVERS);
        let mine: Vec<HostPort> = vec!["198.51.100.1:3478".parse().unwrap()];
        assert_eq!(servers(&mine), mine);
    }

    /// A STUN responder on loopback that answers every binding request with `mapped` (or the
    /// source address when `None`), after `junk` (a datagram that is not a STUN answer), until
    /// `stop` is set.
    fn responder(mapped: Option<SocketAddr>, stop: Arc<AtomicBool>) -> SocketAddr {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !stop.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(txn) = codec::parse_binding_request(&buf[..n]) else {
                    continue;
                };
                let _ = sock.send_to(b"junk", from);
                let _ = sock.send_to(&codec::binding_response(txn, mapped.unwrap_or(from)), from);
            }
        });
        addr
    }

    fn task(servers: Vec<SocketAddr>) -> (StunDiscovery, Registry, watch::Receiver<LocalNode>) {
        let registry = Registry::default();
        let layer = registry.layer("stun", LayerState::Running);
        let (local, watched) = watch::channel(crate::node::tests::local());
        let task = StunDiscovery {
            servers: servers
                .iter()
                .map(|a| a.to_string().parse().unwrap())
                .collect(),
            ipv6: true,
            local,
            interfaces: watch::channel(HostInterfaces::new()).1,
            wg_ifindex: 4,
            layer,
            counters: LayerCounters::default(),
        };
        (task, registry, watched)
    }

    #[tokio::test]
    async fn a_round_with_two_answering_servers_sets_endpoint_and_nat_type() {
        let stop = Arc::new(AtomicBool::new(false));
        let seen: SocketAddr = "203.0.113.50:40000".parse().unwrap();
        let s1 = responder(Some(seen), stop.clone());
        let s2 = responder(Some(seen), stop.clone());
        let metrics = crate::metrics::Metrics::default();
        let (mut stun, registry, mut local) = task(vec![s1, s2]);
        stun.counters = metrics.layer("stun");
        let cancel = CancellationToken::new();
        let run = tokio::spawn(stun.run(cancel.clone()));
        tokio::time::timeout(Duration::from_secs(10), local.changed())
            .await
            .expect("the LocalNode changes")
            .unwrap();
        let node = local.borrow_and_update().clone();
        assert_eq!(
            node.public_endpoint,
            Some("203.0.113.50:51820".parse().unwrap())
        );
        assert_eq!(node.nat_type, Some(NatType::Cone));
        let layer = registry.layers()["stun"].clone();
        assert_eq!(layer.state, LayerState::Running);
        assert_eq!(
            layer.detail.as_deref(),
            Some(
                format!("203.0.113.50:51820, nat cone ({s1} saw {seen}; {s2} saw {seen})").as_str()
            )
        );
        let values = metrics.values();
        assert_eq!(values.layers["stun"], (2, 2), "two answers to two requests");
        let stun_drops: u64 = values
            .layer_drops
            .iter()
            .filter(|((layer, _), _)| *layer == "stun")
            .map(|(_, n)| n)
            .sum();
        assert_eq!(stun_drops, 2, "two junk datagrams");
        cancel.cancel();
        run.await.unwrap();
        stop.store(true, Ordering::Relaxed);
    }

    #[tokio::test(start_paused = true)]
    async fn servers_that_do_not_answer_keep_the_endpoint_and_the_layer_retries() {
        // Bound, never answering.
        let silent1 = UdpSocket::bind("127.0.0.1:0").unwrap();
        let silent2 = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (s1, s2) = (silent1.local_addr().unwrap(), silent2.local_addr().unwrap());
        let (stun, registry, local) = task(vec![s1, s2]);
        let old: SocketAddr = "203.0.113.9:51820".parse().unwrap();
        stun.local.send_modify(|n| n.public_endpoint = Some(old));
        let cancel = CancellationToken::new();
        let run = tokio::spawn(stun.run(cancel.clone()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        let layer = loop {
            let layer = registry.layers()["stun"].clone();
            if layer.state == LayerState::Retrying {
                break layer;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never retrying: {layer:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(
            layer.last_error.as_deref(),
            Some(
                format!(
                    "no STUN server gave a public address: {s1}: no answer within 3 s; \
                     {s2}: no answer within 3 s"
                )
                .as_str()
            )
        );
        assert_eq!(local.borrow().public_endpoint, Some(old));
        assert_eq!(local.borrow().nat_type, None);
        assert!(!run.is_finished(), "the task keeps going");
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(2), run)
            .await
            .expect("the task stops on cancellation")
            .unwrap();
    }

    #[tokio::test]
    async fn a_global_ipv6_address_wins_without_asking_stun() {
        let (mut stun, registry, local) = task(vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 9))]);
        stun.interfaces = watch::channel(vec![crate::system::net::HostInterface {
            index: 2,
            name: "eth0".into(),
            up: true,
            multicast: true,
            loopback: false,
            addresses: vec!["2a00:1450::7/64".parse().unwrap()],
        }])
        .1;
        let metrics = crate::metrics::Metrics::default();
        stun.counters = metrics.layer("stun");
        let mut watched = local.clone();
        let cancel = CancellationToken::new();
        let run = tokio::spawn(stun.run(cancel.clone()));
        tokio::time::timeout(Duration::from_secs(5), watched.changed())
            .await
            .expect("the LocalNode changes")
            .unwrap();
        assert_eq!(
            local.borrow().public_endpoint,
            Some("[2a00:1450::7]:51820".parse().unwrap())
        );
        assert_eq!(local.borrow().nat_type, Some(NatType::Unknown));
        assert_eq!(registry.layers()["stun"].state, LayerState::Running);
        assert_eq!(metrics.values().layers["stun"], (0, 0), "nothing sent");
        cancel.cancel();
        run.await.unwrap();
    }
}
