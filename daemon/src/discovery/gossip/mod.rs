//! In-mesh gossip (`--gossip`, crypto-and-wire §14) and privacy mode (`--privacy`, §18 and
//! [`crate::privacy`]), on the exchange socket.
//!
//! **Gossip.** Every [`GOSSIP_INTERVAL`] (the first after one interval, as Go) the task picks one
//! random peer it can reach through the tunnel ([`rules::reachable`]: active, with a mesh IP,
//! preferring peers with a recent WireGuard handshake, since a datagram to a peer whose WireGuard
//! does not know us yet is lost) and sends it an `ANNOUNCE` (this node plus its active peers as
//! known peers, capped to fit [`rules::MAX_GOSSIP_DATAGRAM`]) from the exchange socket to
//! `<peer mesh IP>:<gossip port>`. An `ANNOUNCE` the exchange socket hands over stores the sender
//! as `gossip` and its known peers as `gossip-transitive` ([`rules::announce_updates`]).
//!
//! **Privacy.** With `--privacy` the node never announces itself directly: each round it sends a
//! `DANDELION_STEM` ([`crate::wire::DandelionAnnounce`], hop 0, fresh nonce) to the first usable
//! relay of its current epoch (rotated at start, every 10 minutes, and early when its relays are
//! gone: [`crate::privacy::epoch`]); with no relay it falls back to a plain ANNOUNCE. A received
//! stem (handled by every node with `--gossip`; without `--privacy` a node has no relays and
//! fluffs at once) is checked, deduplicated by nonce, and routed by
//! [`crate::privacy::route`]: onward to a relay (never back to its origin or sender if another
//! relay exists), or fluffed: the origin is stored as `gossip-transitive` and a plain ANNOUNCE
//! (which now names it) goes to at most [`rules::FLUFF_FAN_OUT`] reachable peers, so Go nodes
//! learn it too. A stem that cannot be sent onward is fluffed.
//!
//! Anything malformed is dropped with a debug log and counted (layer counters). State: layer
//! `gossip` (`running`, or `retrying` while sends fail), layer `privacy` with the epoch as
//! detail, and the current [`Epoch`] on a watch channel for `GET /v1/status`. Metrics: layer
//! `gossip` counts every valid ANNOUNCE heard (events) and every ANNOUNCE sent; layer `privacy`
//! every valid stem heard and every stem sent.
//!
//! Layout: [`rules`] and [`crate::privacy`] decide, this module moves values between the
//! exchange socket ([`Exchange`]), the store and those functions.

pub mod rules;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use self::rules::{CheckedStem, Context, Drop};
use super::contact::{Exchange, Inbound};
use crate::crypto::envelope::{Envelope, MessageType};
use crate::engine::reconcile::{MeshNetworks, Reconciled};
use crate::keys::PublicKey;
use crate::metrics::LayerCounters;
use crate::node::LocalNode;
use crate::peers::{Method, PeerStore, PeerUpdate, UpdateOutcome, handshake_is_recent};
use crate::privacy::{self, Epoch, Relay, Route, SeenNonces};
use crate::supervisor::{LayerHandle, TaskError};
use crate::wire::{DANDELION_NONCE_LEN, DandelionAnnounce, PeerAnnouncement};

/// Time between gossip rounds (Go `GossipInterval`).
pub const GOSSIP_INTERVAL: Duration = Duration::from_secs(10);

/// Privacy mode's parts of the gossip task.
pub struct PrivacyMode {
    /// `EpochSeed` derived from the secret (the HMAC key of every epoch's relay choice).
    pub epoch_key: [u8; 32],
    /// Where the `privacy` layer's state goes.
    pub layer: LayerHandle,
    /// The `privacy` layer's metrics.
    pub counters: LayerCounters,
    /// The current epoch, for the status snapshot (`None` until the first rotation).
    pub epoch: watch::Sender<Option<Epoch>>,
}

impl std::fmt::Debug for PrivacyMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivacyMode")
            .field("epoch_key", &"<redacted>")
            .field("epoch", &*self.epoch.borrow())
            .finish_non_exhaustive()
    }
}

/// The gossip task's inputs and outputs. Shared (`Arc`) by its restarts.
pub struct Gossip {
    /// The exchange socket: gossip is sent from it.
    pub exchange: Arc<dyn Exchange>,
    /// Envelope codec with the mesh key.
    pub envelope: Envelope,
    /// The mesh's gossip port (every peer's exchange socket).
    pub port: u16,
    /// This node: its key and what it announces (read at every send).
    pub local: watch::Receiver<LocalNode>,
    /// Where discovered peers go, and whose active peers are announced.
    pub store: Arc<PeerStore>,
    /// The mesh's networks (endpoints inside them are refused).
    pub mesh: MeshNetworks,
    /// Use IPv6 endpoints (`--no-ipv6`: dropped).
    pub ipv6: bool,
    /// The reconcile loop's last device read: which peers have a working tunnel.
    pub tunnels: watch::Receiver<Reconciled>,
    /// Where the `gossip` layer's state goes.
    pub layer: LayerHandle,
    /// The `gossip` layer's metrics.
    pub counters: LayerCounters,
    /// Privacy mode, when on.
    pub privacy: Option<PrivacyMode>,
    /// Where random choices come from (which peer, the fluff draw): [`os_random`], or a fixed
    /// sequence in tests.
    pub random: fn() -> Option<u64>,
}

impl std::fmt::Debug for Gossip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gossip")
            .field("port", &self.port)
            .field("privacy", &self.privacy)
            .finish_non_exhaustive()
    }
}

/// What the `gossip` layer shows.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Report {
    /// Working; the detail says when there is nobody to gossip with.
    Running(Option<String>),
    /// The last round's sends all failed.
    Retrying(String),
}

/// What one run of the task remembers.
#[derive(Default)]
struct State {
    /// Stem nonces handled (a repeat is dropped).
    seen: SeenNonces,
    /// The error of the last send that failed, until one works again.
    send_error: Option<String>,
    /// What the layer shows now (set only when it changes).
    reported: Option<Report>,
}

/// 64 random bits from the OS, `None` if it has none to give.
pub fn os_random() -> Option<u64> {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).ok()?;
    Some(u64::from_le_bytes(b))
}

/// A uniform number in `0..100` from 64 random bits (for the fluff decision).
fn percent(r: u64) -> u8 {
    // 2^64 mod 100 = 16: the bias is 16 / 2^64, nothing.
    (r % 100) as u8
}

fn unix_now(now: SystemTime) -> i64 {
    now.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `epoch 3, relays ab12cd34 ef567890` for the `privacy` layer.
fn epoch_detail(epoch: &Epoch) -> String {
    if epoch.relays.is_empty() {
        format!("epoch {}, no relay yet", epoch.id)
    } else {
        let relays: Vec<String> = epoch.relays.iter().map(|r| r.key.short()).collect();
        format!("epoch {}, relays {}", epoch.id, relays.join(" "))
    }
}

/// Every node of a mesh shares the gossip port: the exchange socket of a peer reached through
/// the tunnel.
fn through_tunnel(relay: &Relay, port: u16) -> SocketAddr {
    SocketAddr::from((relay.mesh_ip, port))
}

impl Gossip {
    /// Runs until `cancel` fires, handling what arrives on `inbound` and gossiping every
    /// [`GOSSIP_INTERVAL`].
    ///
    /// # Errors
    ///
    /// When `inbound` is closed: the exchange socket is gone for good, there is nothing to
    /// receive.
    pub async fn run(
        &self,
        inbound: &mut mpsc::Receiver<Inbound>,
        cancel: CancellationToken,
    ) -> Result<(), TaskError> {
        let mut state = State::default();
        self.layer.running(None);
        if let Some(p) = &self.privacy {
            // After a restart the epoch goes on (it lives in the watch channel).
            p.layer.running(p.epoch.borrow().as_ref().map(epoch_detail));
            self.rotate_if_due(p);
        }
        let first = tokio::time::Instant::now() + GOSSIP_INTERVAL;
        let mut tick = tokio::time::interval_at(first, GOSSIP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => return Ok(()),
                _ = tick.tick() => self.round(&mut state).await,
                received = inbound.recv() => match received {
                    Some(msg) => self.handle(msg, &mut state).await,
                    None => return Err("the exchange socket stopped handing over messages".into()),
                },
            }
        }
    }

    /// The peers reachable through the tunnel now.
    fn reachable(&self) -> Vec<Relay> {
        let now = tokio::time::Instant::now().into_std();
        let active = self.store.active(now);
        let own = self.local.borrow().public_key;
        let tunnels = self.tunnels.borrow();
        let wall = SystemTime::now();
        rules::reachable(&active, &own, |key| {
            let handshake = tunnels.live.peers.get(key).and_then(|p| p.last_handshake);
            handshake_is_recent(handshake, wall)
        })
    }

    /// One gossip round: a stem of ourselves (privacy, when a relay exists) or an ANNOUNCE to
    /// one random reachable peer; then the layer's state.
    async fn round(&self, state: &mut State) {
        let targets = self.reachable();
        let mut announced = false;
        if let Some(p) = &self.privacy {
            self.rotate_if_due(p);
            announced = self.send_own_stem(p).await;
        }
        if !announced
            && let Some(target) = (self.random)().and_then(|seed| rules::pick(&targets, seed))
        {
            self.send_announce(&[target], state).await;
        }
        let report = match &state.send_error {
            Some(error) => Report::Retrying(error.clone()),
            None => Report::Running(
                targets
                    .is_empty()
                    .then(|| "no peer reachable through the tunnel yet".to_owned()),
            ),
        };
        self.report(state, report);
    }

    /// Shows `report` on the `gossip` layer if it differs from what it shows.
    fn report(&self, state: &mut State, report: Report) {
        if state.reported.as_ref() == Some(&report) {
            return;
        }
        match &report {
            Report::Running(detail) => {
                if matches!(state.reported, Some(Report::Retrying(_))) {
                    tracing::info!("gossip: sending works again");
                }
                self.layer.running(detail.clone());
            }
            Report::Retrying(error) => {
                tracing::warn!(%error, "gossip: cannot send; retrying every round");
                self.layer.retrying(error);
            }
        }
        state.reported = Some(report);
    }

    /// Sends this node's stem to its epoch's first usable relay; false when there is none (the
    /// caller announces directly instead).
    async fn send_own_stem(&self, p: &PrivacyMode) -> bool {
        let relays = self.usable_relays(p);
        let Some(relay) = relays.first() else {
            tracing::debug!("privacy: no relay in this epoch; announcing directly");
            return false;
        };
        let Some(nonce) = random_nonce() else {
            tracing::warn!("privacy: no randomness for a stem nonce; announcing directly");
            return false;
        };
        let local = self.local.borrow().clone();
        let stem = rules::own_stem(&local, unix_now(SystemTime::now()), nonce);
        match self.send_stem(&stem, relay).await {
            Ok(()) => {
                p.counters.sent();
                p.layer.success();
                tracing::debug!(relay = %relay.key.short(), "privacy: sent our stem");
                true
            }
            Err(error) => {
                tracing::debug!(relay = %relay.key.short(), %error, "privacy: cannot send our stem; announcing directly");
                false
            }
        }
    }

    async fn send_stem(&self, stem: &DandelionAnnounce, relay: &Relay) -> Result<(), String> {
        let datagram = self
            .envelope
            .seal(MessageType::Stem, stem)
            .map_err(|e| format!("no randomness for the envelope: {e}"))?;
        self.exchange
            .send(through_tunnel(relay, self.port), datagram)
            .await
            .map_err(|e| e.to_string())
    }

    /// The current epoch's relays that are still reachable, in stem order.
    fn usable_relays(&self, p: &PrivacyMode) -> Vec<Relay> {
        let candidates = self.reachable();
        p.epoch
            .borrow()
            .as_ref()
            .map(|e| privacy::usable_relays(e, &candidates))
            .unwrap_or_default()
    }

    /// Rotates the epoch when [`privacy::rotation_due`] says so; publishes and logs it.
    fn rotate_if_due(&self, p: &PrivacyMode) {
        let candidates = self.reachable();
        let now = tokio::time::Instant::now().into_std();
        let current = p.epoch.borrow().clone();
        let Some(reason) = privacy::rotation_due(current.as_ref(), &candidates, now) else {
            return;
        };
        let next = privacy::rotate(current.as_ref(), &candidates, &p.epoch_key, now);
        let relays: Vec<String> = next.relays.iter().map(|r| r.key.short()).collect();
        tracing::info!(
            epoch = next.id,
            relays = ?relays,
            reason = reason.as_str(),
            "privacy: new epoch"
        );
        p.layer.running(Some(epoch_detail(&next)));
        p.epoch.send_replace(Some(next));
    }

    /// Seals and sends our ANNOUNCE to each of `targets`; returns how many sends worked and
    /// records the outcome in `state` (any success clears the error).
    async fn send_announce(&self, targets: &[Relay], state: &mut State) -> usize {
        if targets.is_empty() {
            return 0;
        }
        let now = tokio::time::Instant::now().into_std();
        let mut peers = self.store.active(now);
        // Rotated by a random offset: a mesh too big for one datagram is announced piece by
        // piece, a different piece each time.
        if let Some(r) = (self.random)()
            && !peers.is_empty()
        {
            let offset = (r % peers.len() as u64) as usize;
            peers.rotate_left(offset);
        }
        let local = self.local.borrow().clone();
        let ann = rules::announcement(&local, &peers, unix_now(SystemTime::now()));
        let datagram = match self.envelope.seal(MessageType::Announce, &ann) {
            Ok(d) => d,
            Err(error) => {
                state.send_error = Some(format!("no randomness for the envelope: {error}"));
                return 0;
            }
        };
        let mut sent = 0;
        for target in targets {
            let to = through_tunnel(target, self.port);
            match self.exchange.send(to, datagram.clone()).await {
                Ok(()) => {
                    sent += 1;
                    self.counters.sent();
                    tracing::debug!(peer = %target.key.short(), %to, known = ann.known_peers.len(), "gossip: sent ANNOUNCE");
                }
                Err(error) => {
                    tracing::debug!(peer = %target.key.short(), %to, %error, "gossip: cannot send ANNOUNCE");
                    state.send_error = Some(format!("cannot send to {to}: {error}"));
                }
            }
        }
        if sent > 0 {
            self.layer.success();
            state.send_error = None;
        }
        sent
    }

    /// Logs and counts (by `reason`, on `counters`: the layer the message was for) a dropped
    /// message.
    fn dropped(
        counters: &LayerCounters,
        reason: &'static str,
        source: SocketAddr,
        why: &dyn std::fmt::Display,
    ) {
        counters.dropped(reason);
        tracing::debug!(%source, reason, %why, "gossip: dropped a message");
    }

    /// The counters of the layer stems belong to (`privacy`, or `gossip` without it).
    fn stem_counters(&self) -> &LayerCounters {
        self.privacy
            .as_ref()
            .map_or(&self.counters, |p| &p.counters)
    }

    /// Handles one message from the exchange socket.
    async fn handle(&self, msg: Inbound, state: &mut State) {
        match msg.opened.msg_type {
            MessageType::Announce => self.on_announce(&msg),
            MessageType::Stem => self.on_stem(&msg, state).await,
            other => {
                let why = format!("type {other} is not gossip's");
                Self::dropped(&self.counters, "wrong_type", msg.source, &why);
            }
        }
    }

    fn on_announce(&self, msg: &Inbound) {
        let ann: PeerAnnouncement = match msg.opened.payload() {
            Ok(a) => a,
            Err(error) => return Self::dropped(&self.counters, "malformed", msg.source, &error),
        };
        let updates = match rules::announce_updates(&ann, msg.source, &self.context()) {
            Ok(u) => u,
            Err(Drop::Own) => {
                tracing::debug!(source = %msg.source, "gossip: our own ANNOUNCE came back");
                return;
            }
            Err(error) => {
                return Self::dropped(&self.counters, error.reason(), msg.source, &error);
            }
        };
        self.counters.event();
        self.layer.success();
        self.store_all(updates, msg.source);
    }

    /// Puts `updates` into the store, logging new peers.
    fn store_all(&self, updates: Vec<(PeerUpdate, Method)>, source: SocketAddr) {
        let now = tokio::time::Instant::now().into_std();
        for (update, method) in updates {
            let key = update.public_key;
            let hostname = update.hostname.clone();
            if self.store.update(update, method, now) == UpdateOutcome::New {
                tracing::info!(peer = %key, %hostname, %method, %source, "new peer from gossip");
            }
        }
    }

    fn context(&self) -> Context {
        Context {
            own: self.local.borrow().public_key,
            mesh: self.mesh,
            ipv6: self.ipv6,
        }
    }

    async fn on_stem(&self, msg: &Inbound, state: &mut State) {
        let mut stem: DandelionAnnounce = match msg.opened.payload() {
            Ok(s) => s,
            Err(error) => {
                return Self::dropped(self.stem_counters(), "malformed", msg.source, &error);
            }
        };
        let CheckedStem { origin, nonce } = match rules::check_stem(&stem, &self.context()) {
            Ok(c) => c,
            Err(Drop::Own) => {
                tracing::debug!(source = %msg.source, "privacy: our own stem came back");
                return;
            }
            Err(error) => {
                return Self::dropped(self.stem_counters(), error.reason(), msg.source, &error);
            }
        };
        if !state.seen.first_time(nonce) {
            let why = format!("stem of {} seen before", origin.short());
            return Self::dropped(self.stem_counters(), "repeated", msg.source, &why);
        }
        let relays: Vec<(PublicKey, Relay)> = match &self.privacy {
            Some(p) => {
                p.counters.event();
                p.layer.success();
                self.rotate_if_due(p);
                self.usable_relays(p)
                    .into_iter()
                    .map(|r| (r.key, r))
                    .collect()
            }
            None => {
                self.counters.event();
                Vec::new()
            }
        };
        let sender = self.sender_key(msg.source);
        let (hop, route) = privacy::route(
            stem.hop_count,
            (self.random)().map(percent),
            &relays,
            &origin,
            sender.as_ref(),
        );
        stem.hop_count = hop;
        if let Route::Stem(relay) = route {
            match self.send_stem(&stem, &relay).await {
                Ok(()) => {
                    if let Some(p) = &self.privacy {
                        p.counters.sent();
                    }
                    tracing::debug!(origin = %origin.short(), relay = %relay.key.short(), hop, "privacy: stem passed on");
                    return;
                }
                Err(error) => {
                    tracing::debug!(origin = %origin.short(), relay = %relay.key.short(), %error, "privacy: cannot pass the stem on; fluffing");
                }
            }
        }
        self.fluff(&stem, origin, msg, state).await;
    }

    /// The active peer whose mesh IP a datagram came from, if any.
    fn sender_key(&self, source: SocketAddr) -> Option<PublicKey> {
        let ip = source.ip().to_canonical();
        let now = tokio::time::Instant::now().into_std();
        self.store
            .active(now)
            .into_iter()
            .find(|p| p.mesh_ip.is_some_and(|m| IpAddr::V4(m) == ip))
            .map(|p| p.public_key)
    }

    /// Stores the origin of a stem and announces it (with everything we know) to up to
    /// [`rules::FLUFF_FAN_OUT`] reachable peers other than the origin.
    async fn fluff(
        &self,
        stem: &DandelionAnnounce,
        origin: PublicKey,
        msg: &Inbound,
        state: &mut State,
    ) {
        let now = tokio::time::Instant::now().into_std();
        let age = unix_now(SystemTime::now()).saturating_sub(msg.opened.timestamp);
        let age = Duration::from_secs(u64::try_from(age).unwrap_or(0));
        let update = rules::fluff_update(stem, origin, &self.context(), now, age);
        self.store_all(vec![(update, Method::GossipTransitive)], msg.source);
        let targets = (self.random)()
            .map(|seed| rules::fan_out(&self.reachable(), &origin, seed))
            .unwrap_or_default();
        let sent = self.send_announce(&targets, state).await;
        tracing::debug!(origin = %origin.short(), hop = stem.hop_count, sent, "privacy: fluffed");
    }
}

/// A fresh stem nonce from the OS.
fn random_nonce() -> Option<[u8; DANDELION_NONCE_LEN]> {
    let mut n = [0u8; DANDELION_NONCE_LEN];
    getrandom::getrandom(&mut n).ok()?;
    Some(n)
}

#[cfg(test)]
mod tests;
