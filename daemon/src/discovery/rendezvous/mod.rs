//! Rendezvous through introducers (crypto-and-wire §11): two nodes behind NATs that share an
//! introducer get told to punch each other at the same moment, and end with a direct tunnel.
//!
//! - **Requester** ([`requester`]): for each peer without a working tunnel (no WireGuard
//!   handshake in 2 minutes), at start, on peer-store events (gathered for 250 ms, so that a
//!   REPLY's sender is stored before the peers it named are judged) and periodically inside the
//!   pair's 4 s slot of every 20 s, it sends a `RENDEZVOUS_OFFER` to up to 3 introducers; with no
//!   introducer it HELLOs the peer directly and waits for a handshake. Failures back off 3 s,
//!   doubling to 30 s.
//! - **Introducer** ([`introducer`], only with `--introducer`): offers open a session per pair;
//!   once both sides are known (a side it has in its store stands in for a missing offer), it
//!   sends both a `RENDEZVOUS_START` naming the other's candidates and a start time 1.8 s ahead.
//! - **Participant** ([`participant`]): a START for us starts a punch job: sleep until the start
//!   time, HELLO each candidate in order (resent every 100 ms for up to 4 s), and after a REPLY
//!   from the right key, kick WireGuard and wait up to 10 s for a newer handshake (or accept a
//!   session that is already fresh: [`participant::tunnel_up`]); then the peer
//!   is stored with method `dht-rendezvous` and the endpoint its REPLY stands for.
//!
//! How the tunnel itself gets through: the HELLOs open NAT mappings for the exchange ports only.
//! WireGuard sends from its own port, and its packets pass only if each NAT keeps the same
//! mapping for the WireGuard port whatever the destination (endpoint-independent mapping, as
//! port-preserving masquerade does) and the endpoint each side learns is that mapping: nodes
//! announce `<public IP>:<WireGuard port>` (the observed IP from a REPLY or STUN with their own
//! port), which is right exactly when the NAT kept the WireGuard port. Both sides then send
//! handshakes to each other's mapping at the same moment (the kick after the punch; Go relies on
//! WireGuard's own 5 s retries), and the second one through finds the first one's mapping open.
//! A NAT that changes the WireGuard port (symmetric, or port taken) defeats this: that is a
//! limitation of the protocol (no message carries the WireGuard port's mapping), not of this
//! code.
//!
//! The task consumes the `RENDEZVOUS_OFFER` / `RENDEZVOUS_START` messages the exchange socket
//! hands over ([`Inbound`]) and talks only through [`Exchange`]. Handshake times come from the
//! reconcile loop's last published device read (cheap; for the 2-minute rule) and from a device
//! read while a punch waits ([`Tunnel`]).
//!
//! Its state is the `rendezvous` layer of `GET /v1/status` (`running` with counts as detail,
//! `retrying` while the exchange socket does not work, `off` with `--no-punching` or
//! `--no-exchange`); its metrics ([`LayerCounters`] of layer `rendezvous`): every peer reached by
//! a punch is an event, every OFFER and START sent a send.

pub mod candidates;
pub mod introducer;
pub mod pair;
pub mod participant;
pub mod requester;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{Mutex, broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

use self::candidates::Base;
use self::introducer::{KnownTarget, OfferOutcome, Sessions, check_offer};
use self::pair::{At, pair_seed};
use self::participant::{PunchPlan, Punches, tunnel_up};
use self::requester::{Decision, PeerView, Requester, Settings, Trigger};
use super::contact::{BoxFuture, ContactError, Exchange, Inbound};
use super::exchange::rules::{canonical, sender_update};
use crate::crypto::envelope::{Envelope, MessageType};
use crate::engine::reconcile::Reconciled;
use crate::keys::PublicKey;
use crate::metrics::LayerCounters;
use crate::node::LocalNode;
use crate::peers::{Method, Peer, PeerEvent, PeerStore};
use crate::supervisor::{LayerHandle, TaskError};
use crate::system::wg::WireGuard;
use crate::wire::{PROTOCOL, RendezvousOffer, RendezvousStart};

/// How often the periodic trigger and the housekeeping run.
pub const TICK: Duration = Duration::from_secs(1);
/// How long peer-store events are gathered before they are acted on: one REPLY stores the peers
/// it names before its sender, and a peer met that way is better judged once the sender (maybe
/// an introducer) is stored too.
pub const EVENT_DEBOUNCE: Duration = Duration::from_millis(250);
/// Most peers waiting for [`EVENT_DEBOUNCE`] (more are left to the periodic trigger).
const MAX_PENDING: usize = 4096;
/// How long a punch (or a direct contact) waits for the tunnel after the REPLY.
pub const HANDSHAKE_WAIT: Duration = Duration::from_secs(10);
/// How often the device is read while waiting.
pub const HANDSHAKE_POLL: Duration = Duration::from_millis(250);
/// The first kick after a REPLY comes this late (the reconcile loop needs ~100 ms to put a new
/// endpoint on the device), the next ones every [`KICK_EVERY`].
pub const FIRST_KICK: Duration = Duration::from_millis(500);
/// Time between kicks while waiting for the handshake.
pub const KICK_EVERY: Duration = Duration::from_secs(2);

/// The wall clock (slots and start times are wall-clock based). A parameter so that tests can
/// move it with tokio's paused clock.
pub type WallClock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// The system's wall clock.
pub fn system_clock() -> WallClock {
    Arc::new(SystemTime::now)
}

/// The WireGuard device as this layer needs it.
pub trait Tunnel: Send + Sync + 'static {
    /// The last handshake with `peer` as the reconcile loop last read it (no device access; at
    /// most one pass old).
    fn published_handshake(&self, peer: &PublicKey) -> Option<SystemTime>;
    /// The last handshake with `peer`, read from the device now (`None` also when the read
    /// fails).
    fn current_handshake(&self, peer: &PublicKey) -> BoxFuture<'_, Option<SystemTime>>;
    /// Starts a handshake with `peer` now (a no-op where the backend cannot).
    fn kick(&self, peer: PublicKey) -> BoxFuture<'_, ()>;
}

/// [`Tunnel`] over the daemon's device and the reconcile loop's published reads.
pub struct DeviceTunnel<W> {
    /// The device.
    pub wg: Arc<W>,
    /// What the reconcile loop publishes after every pass.
    pub reconciled: watch::Receiver<Reconciled>,
}

impl<W: WireGuard + 'static> Tunnel for DeviceTunnel<W> {
    fn published_handshake(&self, peer: &PublicKey) -> Option<SystemTime> {
        self.reconciled
            .borrow()
            .live
            .peers
            .get(peer)
            .and_then(|p| p.last_handshake)
    }

    fn current_handshake(&self, peer: &PublicKey) -> BoxFuture<'_, Option<SystemTime>> {
        let peer = *peer;
        Box::pin(async move {
            match self.wg.read().await {
                Ok(live) => live.peers.get(&peer).and_then(|p| p.last_handshake),
                Err(e) => {
                    tracing::debug!(error = %e, "rendezvous: cannot read the device");
                    None
                }
            }
        })
    }

    fn kick(&self, peer: PublicKey) -> BoxFuture<'_, ()> {
        Box::pin(async move { self.wg.kick(&[peer]).await })
    }
}

/// The rendezvous task. Cheap to clone (the supervisor restarts it from a clone).
#[derive(Clone)]
pub struct Rendezvous {
    /// The exchange socket.
    pub exchange: Arc<dyn Exchange>,
    /// The WireGuard device.
    pub tunnel: Arc<dyn Tunnel>,
    /// Envelope codec with the mesh key (OFFER and START are sealed here, sent by the exchange).
    pub envelope: Envelope,
    /// The peers; reached peers are stored here.
    pub store: Arc<PeerStore>,
    /// This node (key, `--introducer`).
    pub local: watch::Receiver<LocalNode>,
    /// `RENDEZVOUS_OFFER` and `RENDEZVOUS_START` from the exchange socket. Kept across restarts.
    pub inbound: Arc<Mutex<mpsc::Receiver<Inbound>>>,
    /// The mesh's gossip (exchange) port.
    pub gossip_port: u16,
    /// IPv6 endpoints allowed (`--no-ipv6` clears it).
    pub ipv6: bool,
    /// Where the `rendezvous` layer's state goes.
    pub layer: LayerHandle,
    /// The `rendezvous` layer's metrics.
    pub counters: LayerCounters,
    /// The wall clock ([`system_clock`] outside tests).
    pub clock: WallClock,
}

/// Why a punch or direct contact did not reach the peer.
#[derive(Debug, thiserror::Error)]
enum ReachError {
    /// The exchange socket is not running: the layer cannot work.
    #[error("the exchange socket is not running")]
    NotRunning,
    /// No candidate led to a handshake; the last reason.
    #[error("{0}")]
    Failed(String),
}

/// How a job ended.
enum JobDone {
    /// A punch ordered by a START.
    Punch {
        plan: PunchPlan,
        result: Result<SocketAddr, ReachError>,
    },
    /// A direct contact (no introducer).
    Direct {
        peer: PublicKey,
        result: Result<SocketAddr, ReachError>,
    },
}

/// Counts shown as the layer's detail.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Stats {
    offers: u64,
    starts: u64,
    punched: u64,
    punch_failed: u64,
    direct: u64,
}

/// Everything one run of the task remembers.
#[derive(Default)]
struct State {
    requester: Requester,
    sessions: Sessions,
    punches: Punches,
    stats: Stats,
    /// Peers with a punch or direct contact running: the requester leaves them alone meanwhile
    /// (the REPLY that stores them would otherwise trigger a second attempt at once).
    busy: HashSet<PublicKey>,
    /// The last exchange error, while the exchange does not work.
    failing: Option<String>,
    /// What the layer shows now.
    shown: Option<String>,
}

type Jobs = FuturesUnordered<BoxFuture<'static, JobDone>>;

/// The wall clock as Unix milliseconds.
fn unix_ms(now: SystemTime) -> i64 {
    now.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The task's monotonic clock (tokio's, so tests can pause it).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl Rendezvous {
    /// Runs until `cancel` fires.
    ///
    /// # Errors
    ///
    /// Never in practice: the peer store's event channel cannot close while the store lives.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), TaskError> {
        let inbound = self.inbound.clone();
        let mut inbound = inbound.lock().await;
        let mut events = self.store.subscribe();
        let mut st = State::default();
        let mut jobs = Jobs::new();
        self.show(&mut st);
        tracing::info!(
            introducer = self.local.borrow().introducer,
            "rendezvous running"
        );
        self.try_all(Trigger::Start, &mut st, &mut jobs).await;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut inbound_open = true;
        // Peers with store events, handled together once the store settles.
        let mut pending: HashSet<PublicKey> = HashSet::new();
        let settle = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(settle);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                Some(done) = jobs.next(), if !jobs.is_empty() => self.finish(done, &mut st),
                message = inbound.recv(), if inbound_open => match message {
                    Some(m) => self.handle(m, &mut st, &mut jobs).await,
                    None => {
                        // The exchange task owns the sender for the daemon's life: this only
                        // happens while it shuts down.
                        inbound_open = false;
                        tracing::debug!("rendezvous: the exchange socket stopped handing over messages");
                    }
                },
                event = events.recv() => match event {
                    Ok(PeerEvent::New(key) | PeerEvent::Updated(key)) => {
                        if pending.is_empty() {
                            settle.as_mut().reset(tokio::time::Instant::now() + EVENT_DEBOUNCE);
                        }
                        if pending.len() < MAX_PENDING {
                            pending.insert(key);
                        }
                    }
                    Ok(PeerEvent::Removed(_)) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        // The periodic trigger catches up with whatever was missed.
                        tracing::debug!(missed = n, "rendezvous: peer events lagged");
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        return Err("the peer store's event channel closed".into());
                    }
                },
                () = &mut settle, if !pending.is_empty() => {
                    for key in std::mem::take(&mut pending) {
                        self.try_peer(Trigger::Event, &key, &mut st, &mut jobs).await;
                    }
                }
                _ = tick.tick() => {
                    let now = now();
                    st.requester.prune(now);
                    st.sessions.prune(now);
                    st.punches.prune(now);
                    self.try_all(Trigger::Periodic, &mut st, &mut jobs).await;
                }
            }
        }
    }

    fn settings(&self) -> Settings {
        Settings {
            own: self.local.borrow().public_key,
            gossip_port: self.gossip_port,
            ipv6: self.ipv6,
        }
    }

    fn view(&self, p: &Peer, now: Instant, wall: SystemTime) -> PeerView {
        PeerView {
            key: p.public_key,
            endpoint: p.endpoint,
            introducer: p.introducer,
            via_dht: p
                .discovered_via
                .iter()
                .any(|m| m.as_str().starts_with("dht")),
            via_rendezvous: p.discovered_via.contains(&Method::DhtRendezvous),
            seen_ago: now.saturating_duration_since(p.last_seen),
            learned_control: self.exchange.control_endpoint(&p.public_key),
            handshake_ago: self
                .tunnel
                .published_handshake(&p.public_key)
                .map(|t| wall.duration_since(t).unwrap_or_default()),
        }
    }

    /// Runs `trigger` for every active peer.
    async fn try_all(&self, trigger: Trigger, st: &mut State, jobs: &mut Jobs) {
        let (at, wall) = self.at();
        let views: Vec<PeerView> = self
            .store
            .active(at.now)
            .iter()
            .map(|p| self.view(p, at.now, wall))
            .collect();
        for target in &views {
            self.attempt(trigger, target, &views, st, jobs, at).await;
        }
    }

    /// Runs `trigger` for one peer (if it is active).
    async fn try_peer(&self, trigger: Trigger, key: &PublicKey, st: &mut State, jobs: &mut Jobs) {
        let (at, wall) = self.at();
        let views: Vec<PeerView> = self
            .store
            .active(at.now)
            .iter()
            .map(|p| self.view(p, at.now, wall))
            .collect();
        if let Some(target) = views.iter().find(|v| v.key == *key) {
            self.attempt(trigger, target, &views, st, jobs, at).await;
        }
    }

    /// Both clocks now, and the wall clock as a time.
    fn at(&self) -> (At, SystemTime) {
        let wall = (self.clock)();
        let at = At {
            now: now(),
            unix_ms: unix_ms(wall),
        };
        (at, wall)
    }

    async fn attempt(
        &self,
        trigger: Trigger,
        target: &PeerView,
        views: &[PeerView],
        st: &mut State,
        jobs: &mut Jobs,
        at: At,
    ) {
        if st.busy.contains(&target.key) {
            return;
        }
        let s = self.settings();
        let seed = pair_seed(&s.own.to_string(), &target.key.to_string());
        let (now, unix_s) = (at.now, at.unix_s());
        match st.requester.decide(trigger, target, views, seed, &s, at) {
            Decision::Skip(_) => {}
            Decision::Offer(introducers) => {
                let offer = RendezvousOffer {
                    protocol: PROTOCOL.to_owned(),
                    timestamp: unix_s,
                    from_pubkey: s.own.to_string(),
                    target_pubkey: target.key.to_string(),
                    pair_id: pair::pair_id(&s.own.to_string(), &target.key.to_string()),
                    ..RendezvousOffer::default()
                };
                let mut failed = false;
                for i in introducers {
                    let sent = self
                        .send(MessageType::RendezvousOffer, &offer, i.control, st)
                        .await;
                    if sent {
                        st.stats.offers += 1;
                        tracing::debug!(
                            peer = %target.key.short(), introducer = %i.key.short(), to = %i.control,
                            "rendezvous: offer sent"
                        );
                    } else {
                        failed = true;
                    }
                }
                if failed {
                    st.requester.failed(target.key, now);
                }
                self.show(st);
            }
            Decision::Direct(control) => {
                let this = self.clone();
                let peer = target.key;
                st.busy.insert(peer);
                tracing::debug!(peer = %peer.short(), to = %control, "rendezvous: no introducer; contacting the peer directly");
                jobs.push(Box::pin(async move {
                    let result = this.reach(peer, &[control], Method::DhtTransitive).await;
                    JobDone::Direct { peer, result }
                }));
            }
        }
    }

    /// Seals `payload` and sends it from the exchange socket; whether it went out (failures are
    /// logged and shown on the layer).
    async fn send<T: serde::Serialize>(
        &self,
        kind: MessageType,
        payload: &T,
        to: SocketAddr,
        st: &mut State,
    ) -> bool {
        let datagram = match self.envelope.seal(kind, payload) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "rendezvous: cannot seal {kind}");
                return false;
            }
        };
        match self.exchange.send(to, datagram).await {
            Ok(()) => {
                self.counters.sent();
                self.healthy(st);
                true
            }
            Err(e) => {
                self.failing(st, format!("cannot send {kind} to {to}: {e}"));
                false
            }
        }
    }

    /// One message from the exchange socket.
    async fn handle(&self, m: Inbound, st: &mut State, jobs: &mut Jobs) {
        match m.opened.msg_type {
            MessageType::RendezvousOffer => self.on_offer(&m, st).await,
            MessageType::RendezvousStart => self.on_start(&m, st, jobs),
            other => {
                tracing::debug!(kind = %other, source = %m.source, "rendezvous: not a rendezvous message; dropped");
            }
        }
    }

    async fn on_offer(&self, m: &Inbound, st: &mut State) {
        let offer: RendezvousOffer = match m.opened.payload() {
            Ok(o) => o,
            Err(e) => {
                tracing::debug!(source = %m.source, error = %e, "rendezvous: malformed offer dropped");
                return;
            }
        };
        let (own, introducer) = {
            let local = self.local.borrow();
            (local.public_key, local.introducer)
        };
        let valid = match check_offer(&offer, &own, introducer) {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(source = %m.source, reason = %e, "rendezvous: offer dropped");
                return;
            }
        };
        let now = now();
        let known = self
            .store
            .get(&valid.target)
            // A target this introducer evicted (quarantined) is not introduced either.
            .filter(|_| {
                !self.store.is_dead(&valid.target, now)
                    && !self.store.is_quarantined(&valid.target, now)
            })
            .and_then(|p| p.endpoint)
            .map(|endpoint| {
                let guessed = SocketAddr::new(endpoint.ip(), self.gossip_port);
                let control = self
                    .exchange
                    .control_endpoint(&valid.target)
                    .unwrap_or(guessed);
                let mut bases = vec![Base::from(control)];
                if guessed != control {
                    bases.push(Base::from(guessed));
                }
                KnownTarget { control, bases }
            });
        let (from, target) = (valid.from, valid.target);
        let outcome = st.sessions.on_offer(
            valid,
            canonical(m.source),
            known,
            &own,
            self.ipv6,
            self.at().0,
        );
        match outcome {
            Ok(OfferOutcome::Start(starts)) => {
                tracing::info!(a = %from.short(), b = %target.short(), "rendezvous: introducing two peers");
                for out in *starts {
                    if self
                        .send(MessageType::RendezvousStart, &out.start, out.to, st)
                        .await
                    {
                        st.stats.starts += 1;
                    }
                }
                self.show(st);
            }
            Ok(OfferOutcome::Waiting | OfferOutcome::Throttled) => {}
            Err(e) => tracing::debug!(source = %m.source, reason = %e, "rendezvous: offer dropped"),
        }
    }

    fn on_start(&self, m: &Inbound, st: &mut State, jobs: &mut Jobs) {
        let start: RendezvousStart = match m.opened.payload() {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(source = %m.source, error = %e, "rendezvous: malformed START dropped");
                return;
            }
        };
        let own = self.local.borrow().public_key;
        match st
            .punches
            .accept(&start, &own, self.ipv6, now(), unix_ms((self.clock)()))
        {
            Ok(plan) => {
                tracing::info!(
                    peer = %plan.peer.short(), candidates = plan.candidates.len(),
                    in_ms = plan.delay.as_millis() as u64, "rendezvous: punching"
                );
                let this = self.clone();
                st.busy.insert(plan.peer);
                jobs.push(Box::pin(async move {
                    tokio::time::sleep(plan.delay).await;
                    let result = this
                        .reach(plan.peer, &plan.candidates, Method::DhtRendezvous)
                        .await;
                    JobDone::Punch { plan, result }
                }));
            }
            Err(e) => {
                tracing::debug!(source = %m.source, reason = %e, "rendezvous: START dropped");
            }
        }
    }

    /// HELLOs each candidate in order; after a REPLY from `peer`, waits for the tunnel
    /// (kicking WireGuard) and stores the peer with `method`. Returns the candidate that worked.
    async fn reach(
        &self,
        peer: PublicKey,
        candidates: &[SocketAddr],
        method: Method,
    ) -> Result<SocketAddr, ReachError> {
        let before = self.tunnel.current_handshake(&peer).await;
        let mut last = String::from("no candidate");
        for &candidate in candidates {
            let contacted = match self.exchange.hello(candidate, Method::Dht).await {
                Ok(c) => c,
                Err(ContactError::NotRunning) => return Err(ReachError::NotRunning),
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            };
            if contacted.announcement.wg_pubkey.parse::<PublicKey>() != Ok(peer) {
                last = format!("{candidate} answered with another key");
                continue;
            }
            if self.wait_handshake(peer, before).await {
                // The endpoint its REPLY stands for, as the exchange stores it.
                if let Some(update) =
                    sender_update(&contacted.announcement, contacted.from, self.ipv6)
                {
                    self.store.update(update, method, now());
                }
                return Ok(candidate);
            }
            last = format!("{candidate} answered, but no WireGuard handshake within 10 s");
        }
        Err(ReachError::Failed(last))
    }

    /// Waits up to [`HANDSHAKE_WAIT`] until the tunnel with `peer` is up ([`tunnel_up`]: a
    /// handshake newer than `before`, or a fresh session), kicking WireGuard after
    /// [`FIRST_KICK`] and then every [`KICK_EVERY`].
    async fn wait_handshake(&self, peer: PublicKey, before: Option<SystemTime>) -> bool {
        let started = tokio::time::Instant::now();
        let mut next_kick = started + FIRST_KICK;
        loop {
            let now = tokio::time::Instant::now();
            if now >= next_kick {
                self.tunnel.kick(peer).await;
                next_kick += KICK_EVERY;
            }
            let current = self.tunnel.current_handshake(&peer).await;
            if tunnel_up(current, before, (self.clock)()) {
                return true;
            }
            if now.saturating_duration_since(started) >= HANDSHAKE_WAIT {
                return false;
            }
            tokio::time::sleep(HANDSHAKE_POLL).await;
        }
    }

    fn finish(&self, done: JobDone, st: &mut State) {
        let now = now();
        let (JobDone::Punch { result, .. } | JobDone::Direct { result, .. }) = &done;
        if !matches!(result, Err(ReachError::NotRunning)) {
            // The exchange socket answered (even a timeout means it sends and receives).
            self.healthy(st);
        }
        match done {
            JobDone::Punch { plan, result } => {
                st.punches.finished(&plan.pair_id, now);
                st.busy.remove(&plan.peer);
                match result {
                    Ok(at) => {
                        st.requester.succeeded(&plan.peer);
                        st.stats.punched += 1;
                        self.counters.event();
                        self.layer.success();
                        self.healthy(st);
                        tracing::info!(peer = %plan.peer.short(), candidate = %at, "rendezvous: punched through; direct tunnel up");
                    }
                    Err(e) => {
                        st.stats.punch_failed += 1;
                        tracing::info!(peer = %plan.peer.short(), reason = %e, "rendezvous: punch failed");
                        if matches!(e, ReachError::NotRunning) {
                            self.failing(st, e.to_string());
                        }
                    }
                }
            }
            JobDone::Direct { peer, result } => {
                st.busy.remove(&peer);
                match result {
                    Ok(at) => {
                        st.requester.succeeded(&peer);
                        st.stats.direct += 1;
                        self.layer.success();
                        self.healthy(st);
                        tracing::debug!(peer = %peer.short(), at = %at, "rendezvous: reached directly");
                    }
                    Err(e) => {
                        let delay = st.requester.failed(peer, now);
                        tracing::debug!(peer = %peer.short(), reason = %e, backoff_s = delay.as_secs(), "rendezvous: direct contact failed");
                        if matches!(e, ReachError::NotRunning) {
                            self.failing(st, e.to_string());
                        }
                    }
                }
            }
        }
        self.show(st);
    }

    fn failing(&self, st: &mut State, error: String) {
        if st.failing.as_deref() != Some(error.as_str()) {
            tracing::warn!(%error, "rendezvous cannot use the exchange socket; retrying");
            self.layer.retrying(&error);
            st.failing = Some(error);
            st.shown = None;
        }
    }

    fn healthy(&self, st: &mut State) {
        if st.failing.take().is_some() {
            tracing::info!("rendezvous: the exchange socket works again");
            st.shown = None;
            self.show(st);
        }
    }

    /// Shows the layer as running with its counts, when they changed and nothing is failing.
    fn show(&self, st: &mut State) {
        if st.failing.is_some() {
            return;
        }
        let role = if self.local.borrow().introducer {
            "introducer"
        } else {
            "participant"
        };
        let s = st.stats;
        let detail = format!(
            "{role}; offers sent {}, starts sent {}, punches {} ok / {} failed, direct contacts {}",
            s.offers, s.starts, s.punched, s.punch_failed, s.direct
        );
        if st.shown.as_deref() != Some(detail.as_str()) {
            self.layer.running(Some(detail.clone()));
            st.shown = Some(detail);
        }
    }
}

#[cfg(test)]
mod tests;
