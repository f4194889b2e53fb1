//! The exchange socket (crypto-and-wire §9–10): one UDP socket on the mesh's gossip port, on every
//! address (dual-stack), wire-compatible with Go wgmesh.
//!
//! **Receive pipeline**, per datagram (≤ 65536 bytes): the per-source [`RateLimiter`] (10/s,
//! burst 20, before any decryption), then [`Envelope::open_raw`] (authentic, `wgmesh-v1`, fresh
//! within ±10 min), then a replay check (ours; Go has none): a datagram already received from
//! another IP among the last [`MAX_SEEN`] is dropped, so a captured HELLO replayed from
//! elsewhere cannot move its sender's endpoint (a HELLO resent from its own address is fine),
//! then by type (a HELLO or REPLY of a peer that is not newer than the last one it sent us,
//! from another IP, is a replay too: [`rules::replayed_elsewhere`]):
//! - `HELLO`: the sender is stored as `dht` with endpoint `resolvePeerEndpoint(wg_endpoint,
//!   source)` ([`rules::sender_update`]), the peers it lists as `dht-transitive` (a wildcard
//!   host gives no endpoint), and a `REPLY` goes back from this socket with `observed_endpoint`
//!   = the HELLO's source;
//! - `REPLY`: its `observed_endpoint` may become our public endpoint ([`rules::apply_observed_endpoint`],
//!   peer-as-STUN, written to the [`LocalNode`]); the peers it lists are stored, then the replier
//!   (`dht`, or the method its HELLO was sent for), and the [`Exchange::hello`] waiting for
//!   exactly that source address is woken;
//! - `ANNOUNCE` and `DANDELION_STEM` go to the gossip layer, `RENDEZVOUS_OFFER` and
//!   `RENDEZVOUS_START` to the rendezvous layer, each through a bounded queue ([`Inbound`]); a
//!   full queue or a layer that is off drops (counted);
//! - `GOODBYE`: unless it names us or is more than 60 s from our clock, the sender leaves the
//!   store at once, and for [`DEPARTED_MEMORY`] other peers' mentions of it are ignored (so a
//!   stale transitive list cannot bring it back; it comes back as soon as it talks to us itself).
//!
//! Anything dropped is counted by reason (`wgmesh_discovery_drops_total{layer="exchange"}`) and
//! logged at `debug` (`trace` for rate-limited datagrams, so a flood cannot flood the log).
//!
//! **Contacts**: [`Exchange::hello`] seals one HELLO and resends the same datagram every 100 ms
//! until a REPLY from exactly that address arrives or 4 s pass (a single send with punching
//! off). The address each peer last spoke from is its control endpoint
//! ([`Exchange::control_endpoint`]). Improvement over Go: a peer learned from an exchange that
//! we have never heard from directly is contacted at `<its endpoint's host>:<gossip port>` right
//! away (at most once a minute per address, 8 at a time), so a mesh that only knows one node
//! converges in one round trip instead of waiting for the DHT or gossip. For the same reason the
//! peers already stored when the socket opens (restored from the peer cache) get a HELLO: after
//! our GOODBYE they forgot us, and this brings us back even with every other layer off.
//!
//! **Shutdown**: when cancelled, the task sends one GOODBYE to the control endpoint of every
//! stored peer (each address once; at most [`GOODBYE_DEADLINE`]) before the socket closes, so
//! peers drop us at once instead of after 5 minutes.
//!
//! **Failures**: a port that cannot be bound is the `retrying` state of layer `exchange`, tried
//! again with backoff (1 s doubling to 30 s), never a failed start (Go exits). Its state is
//! `running` with the port as detail. Every table is bounded: rate-limit buckets (4096 sources),
//! waiters ([`MAX_WAITERS`]), control endpoints and recent contacts ([`MAX_REMEMBERED`]).
//!
//! Layout: [`rules`] (pure decisions), [`ratelimit`] and [`lru`] (pure tables),
//! [`crate::system::net::udp`] (the OS calls), `receive` (the receive pipeline: datagram in,
//! store and waiters updated, what to send out), this module (the service, its task, HELLOs and
//! GOODBYEs).

pub mod lru;
pub mod ratelimit;
mod receive;
pub mod rules;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use self::lru::LruMap;
use self::ratelimit::RateLimiter;
use self::rules::{build_announcement, canonical, unix_secs};
use super::contact::{BoxFuture, ContactError, Contacted, Exchange, Inbound};
use crate::crypto::envelope::{Envelope, MAX_DATAGRAM_LEN, MessageType};
use crate::keys::PublicKey;
use crate::metrics::LayerCounters;
use crate::node::LocalNode;
use crate::peers::{DEAD_AFTER, Method, PeerStore};
use crate::supervisor::{BACKOFF_MAX, BACKOFF_MIN, LayerHandle, TaskError};
use crate::system::net::HostInterfaces;
use crate::system::net::udp::ExchangeSocket;
use crate::wire::{Goodbye, PROTOCOL};

/// Time between resends of a HELLO while punching.
pub const HELLO_RESEND: Duration = Duration::from_millis(100);
/// How long a HELLO waits for its REPLY.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(4);
/// Messages for another layer queued at most (each queue).
pub const INBOUND_QUEUE: usize = 256;
/// HELLOs waiting for a REPLY at most.
pub const MAX_WAITERS: usize = 1024;
/// Entries of each table keyed by peer or address (control endpoints, recent contacts,
/// departed peers).
pub const MAX_REMEMBERED: usize = 4096;
/// A peer learned from an exchange is contacted at most this often per address.
pub const CONTACT_DEDUP: Duration = Duration::from_secs(60);
/// Contacts of newly learned peers running at once.
pub const MAX_CONTACTS_IN_FLIGHT: usize = 8;
/// Contacts waiting for a free slot at most (more are dropped and tried at a later exchange).
const MAX_CONTACTS_QUEUED: usize = 256;
/// How long the GOODBYEs at shutdown may take together.
pub const GOODBYE_DEADLINE: Duration = Duration::from_millis(500);
/// How long a peer that said GOODBYE is not re-added from other peers' lists.
pub const DEPARTED_MEMORY: Duration = DEAD_AFTER;
/// Recent messages remembered to recognise replays (an envelope stays fresh for 10 minutes).
pub const MAX_SEEN: usize = 8192;
/// Receive errors in a row after which the socket is considered broken (the task fails and is
/// restarted by its supervisor).
const MAX_RECEIVE_ERRORS: u32 = 100;

/// The settings of the exchange.
#[derive(Clone, Debug)]
pub struct ExchangeConfig {
    /// Envelope codec with the mesh key.
    pub envelope: Envelope,
    /// The mesh's gossip port (the socket's port, and every peer's).
    pub gossip_port: u16,
    /// Resend HELLOs every 100 ms while waiting (`--no-punching`: once).
    pub punching: bool,
    /// Use IPv6 endpoints (`--no-ipv6`: dropped everywhere).
    pub ipv6: bool,
}

/// What the daemon hands to the other discovery layers: the exchange and the receiving ends of
/// its two queues. Take the fields you need; a receiver nobody takes is dropped, and what would
/// go to it is dropped and counted (`no_receiver`).
pub struct ExchangeParts {
    /// The exchange, to contact addresses and send from its socket.
    pub exchange: Arc<ExchangeService>,
    /// `ANNOUNCE` and `DANDELION_STEM` received on the socket (gossip, privacy).
    pub announcements: mpsc::Receiver<Inbound>,
    /// `RENDEZVOUS_OFFER` and `RENDEZVOUS_START` received on the socket (rendezvous).
    pub rendezvous: mpsc::Receiver<Inbound>,
}

/// How a waiting HELLO ends.
enum Answer {
    Reply(Box<Contacted>),
    /// The address turned out to be our own socket (our HELLO came back to us).
    Own,
}

struct Waiter {
    id: u64,
    method: Method,
    tx: oneshot::Sender<Answer>,
}

/// The tables of the exchange (one lock, never held across an await).
struct State {
    limiter: RateLimiter,
    /// Destination → HELLOs waiting for its REPLY.
    waiters: HashMap<SocketAddr, Vec<Waiter>>,
    waiter_count: usize,
    next_waiter: u64,
    /// Peer → the address it last spoke from.
    control: LruMap<PublicKey, SocketAddr>,
    /// Address → when we last contacted it because an exchange named it.
    contacted: LruMap<SocketAddr, Instant>,
    /// Peer → when it said GOODBYE.
    departed: LruMap<PublicKey, Instant>,
    /// Addresses our own HELLOs came back from.
    own: LruMap<SocketAddr, ()>,
    /// Nonce of each recent datagram → the IP it first came from.
    seen: LruMap<[u8; 16], IpAddr>,
    /// Peer → the timestamp and IP of the newest HELLO or REPLY it sent us.
    last_heard: LruMap<PublicKey, (i64, IpAddr)>,
}

/// What handling one datagram asks the socket task to do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Handled {
    /// A datagram to send back (a REPLY) and where to.
    pub reply: Option<(Vec<u8>, SocketAddr)>,
    /// Addresses of newly learned peers to contact.
    pub contact: Vec<SocketAddr>,
}

/// The exchange: the service other layers call ([`Exchange`]) and the socket task
/// ([`ExchangeService::run`]).
pub struct ExchangeService {
    config: ExchangeConfig,
    local: watch::Sender<LocalNode>,
    store: Arc<PeerStore>,
    interfaces: watch::Receiver<HostInterfaces>,
    layer: LayerHandle,
    counters: LayerCounters,
    /// The socket while the task runs.
    socket: watch::Sender<Option<Arc<ExchangeSocket>>>,
    state: Mutex<State>,
    announcements: mpsc::Sender<Inbound>,
    rendezvous: mpsc::Sender<Inbound>,
}

impl std::fmt::Debug for ExchangeService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExchangeService")
            .field("gossip_port", &self.config.gossip_port)
            .finish_non_exhaustive()
    }
}

/// Removes a waiter when its HELLO ends, however it ends (cancelled callers included).
struct WaiterGuard<'a> {
    service: &'a ExchangeService,
    addr: SocketAddr,
    id: u64,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.service.lock();
        let state = &mut *state;
        if let Some(list) = state.waiters.get_mut(&self.addr) {
            let before = list.len();
            list.retain(|w| w.id != self.id);
            state.waiter_count -= before - list.len();
            if list.is_empty() {
                state.waiters.remove(&self.addr);
            }
        }
    }
}

impl ExchangeService {
    /// The exchange and the queues it fills, for the daemon to wire up. Nothing runs until
    /// [`ExchangeService::run`] is spawned.
    pub fn build(
        config: ExchangeConfig,
        local: watch::Sender<LocalNode>,
        store: Arc<PeerStore>,
        interfaces: watch::Receiver<HostInterfaces>,
        layer: LayerHandle,
        counters: LayerCounters,
    ) -> ExchangeParts {
        let (announcements, announcements_rx) = mpsc::channel(INBOUND_QUEUE);
        let (rendezvous, rendezvous_rx) = mpsc::channel(INBOUND_QUEUE);
        let service = Self {
            config,
            local,
            store,
            interfaces,
            layer,
            counters,
            socket: watch::channel(None).0,
            state: Mutex::new(State {
                limiter: RateLimiter::default(),
                waiters: HashMap::new(),
                waiter_count: 0,
                next_waiter: 0,
                control: LruMap::new(MAX_REMEMBERED),
                contacted: LruMap::new(MAX_REMEMBERED),
                departed: LruMap::new(MAX_REMEMBERED),
                own: LruMap::new(16),
                seen: LruMap::new(MAX_SEEN),
                last_heard: LruMap::new(MAX_REMEMBERED),
            }),
            announcements,
            rendezvous,
        };
        ExchangeParts {
            exchange: Arc::new(service),
            announcements: announcements_rx,
            rendezvous: rendezvous_rx,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Never held across an await; a poisoned lock still holds valid tables.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The mesh's gossip port.
    pub fn gossip_port(&self) -> u16 {
        self.config.gossip_port
    }

    /// Waits until the socket is open (returns at once when it is).
    pub async fn ready(&self) {
        let mut rx = self.socket.subscribe();
        // The sender lives in `self`: the wait ends only when a socket is there.
        let _ = rx.wait_for(Option::is_some).await;
    }

    /// Whether the socket is open now.
    pub fn is_running(&self) -> bool {
        self.socket.borrow().is_some()
    }

    /// Runs the socket until `cancel` fires, then says GOODBYE; see the module documentation.
    ///
    /// # Errors
    ///
    /// When the socket keeps failing to receive (the supervisor restarts the task).
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) -> Result<(), TaskError> {
        let port = self.config.gossip_port;
        let mut backoff = BACKOFF_MIN;
        let socket = loop {
            match ExchangeSocket::bind(port) {
                Ok(socket) => break Arc::new(socket),
                Err(error) => {
                    tracing::warn!(%error, retry_in_s = backoff.as_secs(), "exchange socket cannot listen; retrying");
                    self.layer.retrying(&error);
                    tokio::select! {
                        () = cancel.cancelled() => return Ok(()),
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        };
        tracing::info!(port, "exchange socket listening");
        self.layer.running(Some(format!("UDP port {port}")));
        self.socket.send_replace(Some(socket.clone()));
        let result = self.serve(&socket, &cancel).await;
        self.socket.send_replace(None);
        // HELLOs still waiting end now (`NotRunning`) instead of at their timeout.
        {
            let mut state = self.lock();
            state.waiters.clear();
            state.waiter_count = 0;
        }
        if cancel.is_cancelled() {
            self.say_goodbye(&socket).await;
        }
        result
    }

    /// The receive loop, with the contacts of newly learned peers running beside it.
    async fn serve(
        self: &Arc<Self>,
        socket: &ExchangeSocket,
        cancel: &CancellationToken,
    ) -> Result<(), TaskError> {
        let mut buf = vec![0u8; MAX_DATAGRAM_LEN];
        let mut in_flight = FuturesUnordered::new();
        let mut queued: VecDeque<SocketAddr> = self.stored_peers_to_contact(Instant::now()).into();
        let mut errors = 0u32;
        loop {
            while in_flight.len() < MAX_CONTACTS_IN_FLIGHT {
                let Some(addr) = queued.pop_front() else {
                    break;
                };
                let this = self.clone();
                in_flight.push(async move {
                    match this.hello_inner(addr, Method::Dht).await {
                        Ok(c) => tracing::debug!(%addr, peer = %c.announcement.wg_pubkey, "contacted a peer named in an exchange"),
                        Err(error) => tracing::debug!(%addr, %error, "a peer named in an exchange did not answer"),
                    }
                });
            }
            tokio::select! {
                biased;
                () = cancel.cancelled() => return Ok(()),
                Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
                received = socket.recv_from(&mut buf) => match received {
                    Ok((n, source)) => {
                        errors = 0;
                        let handled = self.handle(&buf[..n], source, SystemTime::now(), Instant::now());
                        if let Some((datagram, to)) = handled.reply {
                            match socket.send_to(&datagram, to).await {
                                Ok(()) => self.counters.sent(),
                                Err(error) => tracing::debug!(%to, %error, "cannot send a REPLY"),
                            }
                        }
                        for addr in handled.contact {
                            if queued.len() < MAX_CONTACTS_QUEUED {
                                queued.push_back(addr);
                            } else {
                                // Not contacted after all: a later exchange may try again.
                                self.lock().contacted.remove(&addr);
                            }
                        }
                    }
                    Err(error) => {
                        errors += 1;
                        tracing::debug!(%error, "exchange receive failed");
                        if errors >= MAX_RECEIVE_ERRORS {
                            return Err(format!("the exchange socket keeps failing: {error}").into());
                        }
                    }
                },
            }
        }
    }

    fn seal_hello(&self) -> Result<Vec<u8>, getrandom::Error> {
        let local = self.local.borrow().clone();
        let active = self.store.active(Instant::now());
        let ann = build_announcement(&local, &active, SystemTime::now(), None, self.config.ipv6);
        self.config.envelope.seal(MessageType::Hello, &ann)
    }

    /// [`Exchange::hello`].
    async fn hello_inner(
        &self,
        addr: SocketAddr,
        method: Method,
    ) -> Result<Contacted, ContactError> {
        let addr = canonical(addr);
        let socket = self
            .socket
            .borrow()
            .clone()
            .ok_or(ContactError::NotRunning)?;
        if self.is_own(addr) {
            return Err(ContactError::OwnAddress(addr));
        }
        let send_error = |error| ContactError::Send { addr, error };
        if addr.is_ipv6() && !self.config.ipv6 {
            return Err(send_error(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "IPv6 is turned off (--no-ipv6)",
            )));
        }
        let datagram = self
            .seal_hello()
            .map_err(|e| send_error(std::io::Error::other(e.to_string())))?;
        let (tx, mut rx) = oneshot::channel();
        let id = {
            let mut state = self.lock();
            if state.waiter_count >= MAX_WAITERS {
                return Err(ContactError::Busy);
            }
            state.next_waiter += 1;
            let id = state.next_waiter;
            state
                .waiters
                .entry(addr)
                .or_default()
                .push(Waiter { id, method, tx });
            state.waiter_count += 1;
            id
        };
        let _guard = WaiterGuard {
            service: self,
            addr,
            id,
        };
        socket.send_to(&datagram, addr).await.map_err(send_error)?;
        self.counters.sent();
        let deadline = tokio::time::Instant::now() + EXCHANGE_TIMEOUT;
        let mut next = tokio::time::Instant::now() + HELLO_RESEND;
        loop {
            let wake = if self.config.punching {
                next.min(deadline)
            } else {
                deadline
            };
            tokio::select! {
                answer = &mut rx => return match answer {
                    Ok(Answer::Reply(contacted)) => Ok(*contacted),
                    Ok(Answer::Own) => Err(ContactError::OwnAddress(addr)),
                    Err(_) => Err(ContactError::NotRunning),
                },
                () = tokio::time::sleep_until(wake) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ContactError::Timeout(addr));
            }
            match socket.send_to(&datagram, addr).await {
                Ok(()) => self.counters.sent(),
                Err(error) => tracing::debug!(%addr, %error, "HELLO resend failed"),
            }
            next += HELLO_RESEND;
        }
    }

    /// Where to say GOODBYE: each stored peer's control endpoint (learned, else its endpoint's
    /// host with the gossip port), each address once.
    fn goodbye_targets(&self) -> BTreeSet<SocketAddr> {
        let own = self.local.borrow().public_key;
        let port = self.config.gossip_port;
        let state = self.lock();
        self.store
            .list()
            .into_iter()
            .filter(|p| p.public_key != own)
            .filter_map(|p| {
                state
                    .control
                    .peek(&p.public_key)
                    .copied()
                    .or_else(|| p.endpoint.map(|e| rules::default_control_endpoint(e, port)))
            })
            .filter(|a| self.config.ipv6 || a.is_ipv4())
            .collect()
    }

    /// Sends one GOODBYE to every peer's control endpoint, within [`GOODBYE_DEADLINE`].
    async fn say_goodbye(&self, socket: &ExchangeSocket) {
        let goodbye = Goodbye {
            protocol: PROTOCOL.to_owned(),
            timestamp: unix_secs(SystemTime::now()),
            wg_pubkey: self.local.borrow().public_key.to_string(),
        };
        let datagram = match self.config.envelope.seal(MessageType::Goodbye, &goodbye) {
            Ok(d) => d,
            Err(error) => {
                tracing::warn!(%error, "cannot seal GOODBYE; peers will notice our absence later");
                return;
            }
        };
        let targets = self.goodbye_targets();
        let total = targets.len();
        let mut sent = 0usize;
        let sending = async {
            for to in targets {
                match socket.send_to(&datagram, to).await {
                    Ok(()) => {
                        sent += 1;
                        self.counters.sent();
                    }
                    Err(error) => tracing::debug!(%to, %error, "cannot send GOODBYE"),
                }
            }
        };
        if tokio::time::timeout(GOODBYE_DEADLINE, sending)
            .await
            .is_err()
        {
            tracing::warn!(sent, total, "GOODBYE: out of time");
        }
        tracing::info!(sent, total, "said GOODBYE to the mesh");
    }

    /// The control endpoint learned for `peer`.
    fn learned_control_endpoint(&self, peer: &PublicKey) -> Option<SocketAddr> {
        self.lock().control.peek(peer).copied()
    }
}

impl Exchange for ExchangeService {
    fn hello(
        &self,
        addr: SocketAddr,
        method: Method,
    ) -> BoxFuture<'_, Result<Contacted, ContactError>> {
        Box::pin(self.hello_inner(addr, method))
    }

    fn send(&self, addr: SocketAddr, datagram: Vec<u8>) -> BoxFuture<'_, std::io::Result<()>> {
        Box::pin(async move {
            let socket = self.socket.borrow().clone().ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotConnected,
                    "the exchange socket is not running",
                )
            })?;
            socket.send_to(&datagram, canonical(addr)).await?;
            self.counters.sent();
            Ok(())
        })
    }

    fn control_endpoint(&self, peer: &PublicKey) -> Option<SocketAddr> {
        self.learned_control_endpoint(peer)
    }
}

#[cfg(test)]
mod tests;
