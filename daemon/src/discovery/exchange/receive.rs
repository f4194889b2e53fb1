//! The receive pipeline of the exchange socket (see the parent module): rate limit, open,
//! replay check, dispatch by type, and what each message does to the store, the local node, the
//! waiting HELLOs and the other layers' queues. No I/O: what must be sent back is returned.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Instant, SystemTime};

use tokio::sync::mpsc;

use super::rules::{self, build_announcement, canonical, goodbye_is_fresh};
use super::{
    Answer, CONTACT_DEDUP, DEPARTED_MEMORY, ExchangeService, Handled, MAX_CONTACTS_QUEUED,
};
use crate::crypto::envelope::{EnvelopeError, MessageType, OpenedEnvelope};
use crate::discovery::contact::{Contacted, Inbound};
use crate::keys::PublicKey;
use crate::peers::{Method, UpdateOutcome};
use crate::wire::{Goodbye, PeerAnnouncement};

/// The counter word for an envelope that did not open.
fn drop_reason(e: &EnvelopeError) -> &'static str {
    match e {
        EnvelopeError::Oversized(_) => "oversized",
        EnvelopeError::Authentication => "authentication",
        EnvelopeError::Stale(_) | EnvelopeError::FromFuture(_) => "stale",
        EnvelopeError::UnknownType(_) => "unknown_type",
        EnvelopeError::PayloadNotJson(_)
        | EnvelopeError::Protocol(_)
        | EnvelopeError::Invalid(_)
        | EnvelopeError::NotAnnouncement(_) => "bad_payload",
        EnvelopeError::Truncated
        | EnvelopeError::NotJson
        | EnvelopeError::Base64(_)
        | EnvelopeError::NonceLength(_)
        | EnvelopeError::CiphertextTooShort(_) => "malformed",
    }
}

impl ExchangeService {
    /// Handles one received datagram (the receive pipeline of the module documentation) at
    /// `now` (`mono`: the same instant on the monotonic clock). Store, local node, waiters and
    /// queues are updated here; what must go out on the socket is returned.
    pub fn handle(
        &self,
        datagram: &[u8],
        source: SocketAddr,
        now: SystemTime,
        mono: Instant,
    ) -> Handled {
        let source = canonical(source);
        if !self.lock().limiter.allow(source.ip(), mono) {
            tracing::trace!(%source, "exchange: rate limited");
            self.counters.dropped("rate_limited");
            return Handled::default();
        }
        let opened = match self.config.envelope.open_raw(datagram, now) {
            Ok(opened) => opened,
            Err(error) => {
                tracing::debug!(%source, %error, "exchange: dropped a datagram that is not a message of this mesh");
                self.counters.dropped(drop_reason(&error));
                return Handled::default();
            }
        };
        if !self.first_seen_from(datagram, source) {
            tracing::debug!(%source, msg_type = %opened.msg_type, "exchange: replay of a message first seen from another address; dropped");
            self.counters.dropped("replay");
            return Handled::default();
        }
        match opened.msg_type {
            MessageType::Hello => self.on_hello(&opened, source, now, mono),
            MessageType::Reply => self.on_reply(&opened, source, mono),
            MessageType::Goodbye => {
                self.on_goodbye(&opened, source, now, mono);
                Handled::default()
            }
            MessageType::Announce | MessageType::Stem => {
                self.forward(&self.announcements, opened, source, "gossip");
                Handled::default()
            }
            MessageType::RendezvousOffer | MessageType::RendezvousStart => {
                self.forward(&self.rendezvous, opened, source, "rendezvous");
                Handled::default()
            }
        }
    }

    /// Whether the authenticated `datagram` is new, or was received before from the same IP (a
    /// HELLO resent while punching is the same datagram again). The same datagram from another
    /// IP is a replay: answering it would move the sender's endpoint to the replayer's address.
    /// Datagrams are told apart by their nonce (fresh for every sealed message, and bound to its
    /// ciphertext by the tag), so a message sealed again is never taken for a replay.
    pub(super) fn first_seen_from(&self, datagram: &[u8], source: SocketAddr) -> bool {
        #[derive(serde::Deserialize)]
        struct NonceOnly<'a> {
            #[serde(borrow)]
            nonce: std::borrow::Cow<'a, str>,
        }
        let Ok(outer) = serde_json::from_slice::<NonceOnly<'_>>(datagram) else {
            // It opened, so it parses; be safe anyway.
            return false;
        };
        let mut id = [0u8; 16];
        let bytes = outer.nonce.as_bytes();
        let n = bytes.len().min(16);
        id[..n].copy_from_slice(&bytes[..n]);
        let mut state = self.lock();
        match state.seen.get_mut(&id) {
            Some(first) => *first == source.ip(),
            None => {
                state.seen.insert(id, source.ip());
                true
            }
        }
    }

    /// Records a HELLO or REPLY of `key` stamped `timestamp` from `source`; false (counted as a
    /// replay) when [`rules::replayed_elsewhere`] says it is an old message coming from a new IP.
    pub(super) fn heard_from(&self, key: PublicKey, timestamp: i64, source: SocketAddr) -> bool {
        let mut state = self.lock();
        let last = state.last_heard.peek(&key).copied();
        if rules::replayed_elsewhere(last, timestamp, source.ip()) {
            drop(state);
            tracing::debug!(%source, peer = %key.short(), timestamp, "exchange: an older message of this peer from another address (replay); dropped");
            self.counters.dropped("replay");
            return false;
        }
        let newest = last.map_or(timestamp, |(t, _)| t.max(timestamp));
        state.last_heard.insert(key, (newest, source.ip()));
        true
    }

    pub(super) fn forward(
        &self,
        queue: &mpsc::Sender<Inbound>,
        opened: OpenedEnvelope,
        source: SocketAddr,
        layer: &str,
    ) {
        let msg_type = opened.msg_type;
        match queue.try_send(Inbound { opened, source }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::debug!(%source, %msg_type, layer, "exchange: queue full; dropped");
                self.counters.dropped("queue_full");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::debug!(%source, %msg_type, layer, "exchange: that layer is off; dropped");
                self.counters.dropped("no_receiver");
            }
        }
    }

    /// The announcement of a HELLO or REPLY, or `None` (counted) when it does not decode or
    /// names no key.
    pub(super) fn announcement(
        &self,
        opened: &OpenedEnvelope,
        source: SocketAddr,
    ) -> Option<(PeerAnnouncement, PublicKey)> {
        let ann: PeerAnnouncement = match opened.payload() {
            Ok(ann) => ann,
            Err(error) => {
                tracing::debug!(%source, msg_type = %opened.msg_type, %error, "exchange: undecodable payload");
                self.counters.dropped("bad_payload");
                return None;
            }
        };
        match ann.wg_pubkey.parse::<PublicKey>() {
            Ok(key) => Some((ann, key)),
            Err(error) => {
                tracing::debug!(%source, msg_type = %opened.msg_type, %error, "exchange: invalid wg_pubkey");
                self.counters.dropped("bad_payload");
                None
            }
        }
    }

    /// Our own message came back from `source` (we sent to our own address): remember it, and
    /// end the HELLOs waiting on it.
    pub(super) fn own_message(&self, source: SocketAddr) {
        tracing::debug!(%source, "exchange: our own message came back; that address is ours");
        self.counters.dropped("own");
        let mut state = self.lock();
        state.own.insert(source, ());
        if let Some(list) = state.waiters.remove(&source) {
            state.waiter_count -= list.len();
            for w in list {
                let _ = w.tx.send(Answer::Own);
            }
        }
    }

    pub(super) fn on_hello(
        &self,
        opened: &OpenedEnvelope,
        source: SocketAddr,
        now: SystemTime,
        mono: Instant,
    ) -> Handled {
        let Some((ann, key)) = self.announcement(opened, source) else {
            return Handled::default();
        };
        let local = self.local.borrow().clone();
        if key == local.public_key {
            self.own_message(source);
            return Handled::default();
        }
        if !self.heard_from(key, ann.timestamp, source) {
            return Handled::default();
        }
        self.counters.event();
        let mut contact = self.store_known_peers(&ann, &local.public_key, mono);
        self.store_sender(&ann, key, source, Method::Dht, mono);
        contact.retain(|a| *a != source);
        let active = self.store.active(mono);
        let reply = build_announcement(&local, &active, now, Some(source), self.config.ipv6);
        let reply = match self.config.envelope.seal(MessageType::Reply, &reply) {
            Ok(datagram) => Some((datagram, source)),
            Err(error) => {
                tracing::warn!(%error, "cannot seal a REPLY (no randomness)");
                None
            }
        };
        self.layer.success();
        Handled { reply, contact }
    }

    pub(super) fn on_reply(
        &self,
        opened: &OpenedEnvelope,
        source: SocketAddr,
        mono: Instant,
    ) -> Handled {
        let Some((ann, key)) = self.announcement(opened, source) else {
            return Handled::default();
        };
        let own_key = self.local.borrow().public_key;
        if key == own_key {
            self.own_message(source);
            return Handled::default();
        }
        if !self.heard_from(key, ann.timestamp, source) {
            return Handled::default();
        }
        self.counters.event();
        let ipv6 = self.config.ipv6;
        self.local.send_if_modified(|local| {
            match rules::apply_observed_endpoint(
                &ann.observed_endpoint,
                local.public_endpoint,
                local.listen_port,
                ipv6,
            ) {
                Some(endpoint) => {
                    tracing::info!(%endpoint, observed_by = %source, "public endpoint learned from a peer's REPLY");
                    local.public_endpoint = Some(endpoint);
                    true
                }
                None => false,
            }
        });
        let mut contact = self.store_known_peers(&ann, &own_key, mono);
        let waiters = {
            let mut state = self.lock();
            let list = state.waiters.remove(&source).unwrap_or_default();
            state.waiter_count -= list.len();
            list
        };
        // The best-ranked method any HELLO to this address was sent for.
        let method = waiters
            .iter()
            .map(|w| w.method)
            .max_by_key(|m| m.endpoint_rank())
            .unwrap_or(Method::Dht);
        self.store_sender(&ann, key, source, method, mono);
        contact.retain(|a| *a != source);
        let contacted = Contacted {
            announcement: ann,
            from: source,
        };
        for w in waiters {
            let _ = w.tx.send(Answer::Reply(Box::new(contacted.clone())));
        }
        self.layer.success();
        Handled {
            reply: None,
            contact,
        }
    }

    pub(super) fn on_goodbye(
        &self,
        opened: &OpenedEnvelope,
        source: SocketAddr,
        now: SystemTime,
        mono: Instant,
    ) {
        let goodbye: Goodbye = match opened.payload() {
            Ok(g) => g,
            Err(error) => {
                tracing::debug!(%source, %error, "exchange: undecodable GOODBYE");
                self.counters.dropped("bad_payload");
                return;
            }
        };
        let Ok(key) = goodbye.wg_pubkey.parse::<PublicKey>() else {
            tracing::debug!(%source, "exchange: GOODBYE without a valid key");
            self.counters.dropped("bad_payload");
            return;
        };
        if key == self.local.borrow().public_key {
            self.own_message(source);
            return;
        }
        if !goodbye_is_fresh(goodbye.timestamp, now) {
            tracing::debug!(%source, peer = %key.short(), timestamp = goodbye.timestamp, "exchange: GOODBYE older or newer than 60 s; ignored");
            self.counters.dropped("goodbye_stale");
            return;
        }
        self.counters.event();
        {
            let mut state = self.lock();
            state.control.remove(&key);
            state.departed.insert(key, mono);
        }
        if self.store.remove(&key) {
            tracing::info!(peer = %key.short(), %source, "peer left the mesh (GOODBYE); removed");
        }
    }

    /// Stores the sender of a HELLO or REPLY and remembers where it spoke from.
    pub(super) fn store_sender(
        &self,
        ann: &PeerAnnouncement,
        key: PublicKey,
        source: SocketAddr,
        method: Method,
        mono: Instant,
    ) {
        {
            let mut state = self.lock();
            state.control.insert(key, source);
            state.departed.remove(&key);
        }
        let Some(update) = rules::sender_update(ann, source, self.config.ipv6) else {
            return;
        };
        if self.store.update(update, method, mono) == UpdateOutcome::New {
            tracing::info!(peer = %key.short(), hostname = %ann.hostname, %source, %method, "new peer (exchange)");
        }
    }

    /// Stores the peers an announcement lists (not ourselves, not peers that said GOODBYE
    /// lately) as `dht-transitive`; returns the addresses of those worth contacting directly.
    pub(super) fn store_known_peers(
        &self,
        ann: &PeerAnnouncement,
        own: &PublicKey,
        mono: Instant,
    ) -> Vec<SocketAddr> {
        let port = self.config.gossip_port;
        let mut contact = Vec::new();
        for kp in ann
            .known_peers
            .iter()
            .take(crate::wire::announcement::MAX_KNOWN_PEERS)
        {
            let Some(update) = rules::known_peer_update(kp, self.config.ipv6) else {
                continue;
            };
            let key = update.public_key;
            if key == *own {
                continue;
            }
            let (departed, heard_directly) = {
                let state = self.lock();
                let departed = state
                    .departed
                    .peek(&key)
                    .is_some_and(|at| mono.saturating_duration_since(*at) < DEPARTED_MEMORY);
                (departed, state.control.peek(&key).is_some())
            };
            if departed {
                continue;
            }
            let endpoint = update.endpoint;
            self.store.update(update, Method::DhtTransitive, mono);
            if let Some(ep) = endpoint.filter(|_| !heard_directly) {
                let addr = rules::default_control_endpoint(ep, port);
                if self.should_contact(addr, mono) {
                    contact.push(addr);
                }
            }
        }
        contact
    }

    /// The control addresses of the stored peers we have not heard from directly (at start:
    /// those restored from the peer cache), each once: a node that said GOODBYE was dropped by
    /// its peers, and this is how it gets back into their stores when nothing else announces it.
    pub(super) fn stored_peers_to_contact(&self, mono: Instant) -> Vec<SocketAddr> {
        let own = self.local.borrow().public_key;
        let port = self.config.gossip_port;
        let candidates: BTreeSet<SocketAddr> = self
            .store
            .list()
            .into_iter()
            .filter(|p| {
                p.public_key != own && self.learned_control_endpoint(&p.public_key).is_none()
            })
            .filter_map(|p| p.endpoint)
            .filter(|e| self.config.ipv6 || e.is_ipv4())
            .map(|e| rules::default_control_endpoint(e, port))
            .collect();
        candidates
            .into_iter()
            .filter(|a| self.should_contact(*a, mono))
            .take(MAX_CONTACTS_QUEUED)
            .collect()
    }

    /// Whether to contact `addr` now (not ours, not contacted within [`CONTACT_DEDUP`]); if so,
    /// records the contact.
    pub(super) fn should_contact(&self, addr: SocketAddr, mono: Instant) -> bool {
        if self.is_own(addr) {
            return false;
        }
        let mut state = self.lock();
        let recent = state
            .contacted
            .peek(&addr)
            .is_some_and(|at| mono.saturating_duration_since(*at) < CONTACT_DEDUP);
        if recent {
            return false;
        }
        state.contacted.insert(addr, mono);
        true
    }

    /// Whether `addr` is this node's own exchange socket, as far as we can tell.
    pub(super) fn is_own(&self, addr: SocketAddr) -> bool {
        if self.lock().own.peek(&addr).is_some() {
            return true;
        }
        let local_ips: Vec<IpAddr> = self
            .interfaces
            .borrow()
            .iter()
            .flat_map(|i| i.addresses.iter().map(|a| a.addr()))
            .collect();
        let public = self.local.borrow().public_endpoint.map(|e| e.ip());
        rules::is_own_address(addr, self.config.gossip_port, &local_ips, public)
    }
}
