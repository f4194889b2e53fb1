//! The peer store: everything discovery has learned about the other nodes, merged by fixed rules.
//!
//! Discovery sources (LAN, exchange, DHT, gossip, cache) only *write* here, through
//! [`PeerStore::update`] with their [`Method`]; reconcile, health, relay selection and the API only
//! *read*, by value. The rules are Go wgmesh's (reference daemon-behaviour §6, crypto-and-wire §17):
//!
//! - **New peer**: refused with [`UpdateOutcome::CapReached`] when the store holds `cap` peers (the
//!   cap never blocks updates of known peers). `last_seen` is the supplied time or `now`,
//!   `discovered_via = [method]`, `endpoint_method = method` when there is an endpoint.
//! - **Known peer**: the endpoint is replaced when [`should_update_endpoint`] says so (rank table
//!   in [`Method::endpoint_rank`]; at equal rank IPv6 beats IPv4, and otherwise the later one wins);
//!   non-empty hostname, mesh IPs and NAT type overwrite; `introducer` is always overwritten;
//!   `last_seen` becomes `now` except for `cache` and `*transitive*`, which only move it forward to
//!   a newer supplied time; `method` is appended to `discovered_via` once, in insertion order.
//! - **Timers**: a peer is active while seen less than [`DEAD_AFTER`] ago and removed by
//!   [`PeerStore::cleanup_stale`] once seen more than [`REMOVE_AFTER`] ago. Time is always a
//!   parameter, never read here.
//!
//! Fixes versus Go (daemon-behaviour §21):
//!
//! - Values in, values out: the store never keeps the caller's data nor hands out shared slices (7).
//! - Events go through a `tokio::sync::broadcast` channel, sent after the lock is released; no
//!   receivers, a lagging receiver or a dropped receiver never blocks and never panics (6).
//! - `routable_networks: Some(vec![])` from the peer itself clears its routes; `None` (a source
//!   that does not know) never touches them (24).
//! - Quarantine lives in the store, on the peer itself ([`Peer::quarantined_until`]), and
//!   [`Peer::liveness`] is the one place that decides active / quarantined / dead, so reconcile,
//!   relay candidates, probing, health and the API agree; rediscovery keeps the peer stored but
//!   excluded until the quarantine ends (21).
//! - An update that changes nothing but `last_seen` is [`UpdateOutcome::Unchanged`] and emits no
//!   event (unless it brings a dead peer back to life), so periodic announcements do not wake the
//!   reconcile loop.
//! - [`PeerStore::list`] is sorted by key, so consumers that must pick one of two peers claiming
//!   the same address or CIDR do so deterministically (11).
//! - `last_seen` never moves backwards and never lies in the future (a supplied time is clamped to
//!   `now`); `active` and `is_dead` agree at exactly [`DEAD_AFTER`].

mod method;
mod rank;
mod store;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use ipnet::IpNet;

use crate::keys::PublicKey;

pub use method::{Method, UnknownMethod};
pub use rank::should_update_endpoint;
pub use store::PeerStore;

/// A peer not seen for this long is dead: excluded from [`PeerStore::active`].
pub const DEAD_AFTER: Duration = Duration::from_secs(5 * 60);
/// A peer not seen for longer than this is deleted by [`PeerStore::cleanup_stale`].
pub const REMOVE_AFTER: Duration = Duration::from_secs(10 * 60);
/// Default maximum number of stored peers (new peers beyond it are dropped).
pub const DEFAULT_CAP: usize = 1000;
/// Quarantine length after a health eviction in Go (`TemporaryOfflineTTL`).
pub const QUARANTINE_TTL: Duration = Duration::from_secs(30);
/// A WireGuard handshake this recent means the tunnel works ("connected"); WireGuard rekeys every
/// 2 minutes while traffic flows, so a live session never gets older than that plus slack.
pub const CONNECTED_WITHIN: Duration = Duration::from_secs(180);

/// Where a stored peer stands at one instant. Computed in one place ([`Peer::liveness`]) and used
/// by every consumer: the reconcile loop, the API, the summary log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Liveness {
    /// Heard of within [`DEAD_AFTER`] and not quarantined: it belongs on the device.
    Active,
    /// Excluded after a health eviction until its quarantine ends.
    Quarantined,
    /// Not heard of for [`DEAD_AFTER`]: kept (until [`REMOVE_AFTER`]) but not configured.
    Dead,
}

impl Liveness {
    /// The API's spelling: `active`, `quarantined`, `dead`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Quarantined => "quarantined",
            Self::Dead => "dead",
        }
    }
}

/// Whether a WireGuard session whose last handshake was at `last_handshake` works at `now`
/// (within [`CONNECTED_WITHIN`]). A handshake "in the future" (clock stepped back) counts as now.
pub fn handshake_is_recent(last_handshake: Option<SystemTime>, now: SystemTime) -> bool {
    last_handshake.is_some_and(|t| {
        now.duration_since(t)
            .map_or(true, |age| age < CONNECTED_WITHIN)
    })
}

/// What a discovery source learned about a peer (an update).
#[derive(Clone, Debug, PartialEq)]
pub struct PeerUpdate {
    /// The peer's WireGuard public key (the store's key).
    pub public_key: PublicKey,
    /// Host name; `""` = unknown.
    pub hostname: String,
    /// Mesh IPv4 address, if known.
    pub mesh_ip: Option<Ipv4Addr>,
    /// Mesh IPv6 address, if known.
    pub mesh_ipv6: Option<Ipv6Addr>,
    /// WireGuard endpoint, if known.
    pub endpoint: Option<SocketAddr>,
    /// Whether the peer is an introducer (always overwrites the stored flag).
    pub introducer: bool,
    /// `Some(list)` = the peer itself said so (authoritative: may clear routes with an empty
    /// list); `None` = this source does not know (transitive, cache) and never touches the routes.
    pub routable_networks: Option<Vec<IpNet>>,
    /// NAT type: `"cone"`, `"symmetric"` or `"unknown"`; `None` or `""` = unknown.
    pub nat_type: Option<String>,
    /// When the peer was last seen according to the source (cache, transitive); `None` = now.
    pub last_seen: Option<Instant>,
}

impl PeerUpdate {
    /// An update that only names the peer; every other field is "unknown".
    pub fn new(public_key: PublicKey) -> Self {
        Self {
            public_key,
            hostname: String::new(),
            mesh_ip: None,
            mesh_ipv6: None,
            endpoint: None,
            introducer: false,
            routable_networks: None,
            nat_type: None,
            last_seen: None,
        }
    }
}

/// A peer as stored (returned by value; callers never alias store data).
#[derive(Clone, Debug, PartialEq)]
pub struct Peer {
    /// The peer's WireGuard public key.
    pub public_key: PublicKey,
    /// Host name; `""` = unknown.
    pub hostname: String,
    /// Mesh IPv4 address.
    pub mesh_ip: Option<Ipv4Addr>,
    /// Mesh IPv6 address.
    pub mesh_ipv6: Option<Ipv6Addr>,
    /// Best known WireGuard endpoint.
    pub endpoint: Option<SocketAddr>,
    /// Discovery method that supplied `endpoint` (its rank decides replacements).
    pub endpoint_method: Option<Method>,
    /// Whether the peer is an introducer (relay candidate).
    pub introducer: bool,
    /// Networks routed through this peer.
    pub routable_networks: Vec<IpNet>,
    /// NAT type as announced (`"cone"`, `"symmetric"`, `"unknown"`).
    pub nat_type: Option<String>,
    /// When the peer was last seen.
    pub last_seen: Instant,
    /// Every method that reported this peer, first one first, no duplicates.
    pub discovered_via: Vec<Method>,
    /// Last probe round-trip time; `None` until the first successful probe.
    pub latency: Option<Duration>,
    /// End of a health quarantine, if one was ever set and not yet forgotten.
    pub quarantined_until: Option<Instant>,
}

impl Peer {
    /// Where the peer stands at `now` (quarantine first, then silence).
    pub fn liveness(&self, now: Instant) -> Liveness {
        if self.quarantined_until.is_some_and(|until| until > now) {
            Liveness::Quarantined
        } else if rank::is_alive(self.last_seen, now) {
            Liveness::Active
        } else {
            Liveness::Dead
        }
    }
}

/// A change in the store, for subscribers. Events are hints: read the store for the state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerEvent {
    /// A peer was inserted.
    New(PublicKey),
    /// A stored peer changed (fields, liveness or quarantine).
    Updated(PublicKey),
    /// A peer was deleted (`remove` or `cleanup_stale`).
    Removed(PublicKey),
}

/// What [`PeerStore::update`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// The peer was inserted; [`PeerEvent::New`] was sent.
    New,
    /// A stored peer changed; [`PeerEvent::Updated`] was sent.
    Updated,
    /// Nothing changed except `last_seen`; no event was sent.
    Unchanged,
    /// The peer is new and the store is full; it was dropped and no event was sent.
    CapReached,
}
