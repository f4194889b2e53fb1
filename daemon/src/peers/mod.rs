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
//! - **Cache restores**: a peer first stored by [`Method::Cache`] is [`Liveness::Cached`] for
//!   [`CACHE_GRACE`] after its restore, whatever its (old) `last_seen`, so it is configured on the
//!   device at once and its handshakes start before any discovery answers. The first update by a
//!   source that refreshes `last_seen` (a live one: LAN, DHT, gossip, …) confirms it for good; a
//!   transitive report does not. Unconfirmed after the grace period, it falls back to the
//!   `last_seen` rule, which by then says dead: a stale cache never keeps a key on the device
//!   longer than a peer heard of once would stay there.
//!
//! Fixes versus Go (daemon-behaviour §21):
//!
//! - Values in, values out: the store never keeps the caller's data nor hands out shared slices (7).
//! - Events go through a `tokio::sync::broadcast` channel, sent after the lock is released; no
//!   receivers, a lagging receiver or a dropped receiver never blocks and never panics (6).
//! - `routable_networks: Some(vec![])` from the peer itself clears its routes; `None` (a source
//!   that does not know) never touches them (24).
//! - Quarantine lives in the store, on the peer itself ([`Peer::quarantined_until`]), and
//!   [`Peer::liveness`] is the one place that decides active / cached / quarantined / dead, so
//!   reconcile, relay candidates, probing, health and the API agree; rediscovery keeps the peer
//!   stored but excluded until the quarantine ends (21).
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
/// How long a peer restored from the peer cache stays on the device without any live source
/// confirming it. Equal to [`DEAD_AFTER`]: a live peer is confirmed within one announcement round
/// of any running discovery layer (LAN every 5 s), and an unconfirmed one gets exactly the window a
/// peer heard of once would get. Its `last_seen` is at most the restore instant, so when the grace
/// ends the `last_seen` rule says [`Liveness::Dead`] and the peer leaves the device.
pub const CACHE_GRACE: Duration = DEAD_AFTER;
/// A WireGuard handshake this recent means the tunnel works ("connected"); WireGuard rekeys every
/// 2 minutes while traffic flows, so a live session never gets older than that plus slack.
pub const CONNECTED_WITHIN: Duration = Duration::from_secs(180);

/// Where a stored peer stands at one instant. Computed in one place ([`Peer::liveness`]) and used
/// by every consumer: the reconcile loop, the API, the summary log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Liveness {
    /// Heard of within [`DEAD_AFTER`] and not quarantined: it belongs on the device.
    Active,
    /// Restored from the peer cache less than [`CACHE_GRACE`] ago and not confirmed by a live
    /// source since: it belongs on the device (so its handshake starts at once), but nothing
    /// live has vouched for it yet.
    Cached,
    /// Excluded after a health eviction until its quarantine ends.
    Quarantined,
    /// Not heard of for [`DEAD_AFTER`]: kept (until [`REMOVE_AFTER`]) but not configured.
    Dead,
}

impl Liveness {
    /// The API's spelling: `active`, `cached`, `quarantined`, `dead`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Cached => "cached",
            Self::Quarantined => "quarantined",
            Self::Dead => "dead",
        }
    }

    /// Whether a peer in this state is configured on the WireGuard device (`active` and
    /// `cached`).
    pub const fn on_device(self) -> bool {
        matches!(self, Self::Active | Self::Cached)
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
    /// list; the cache restores what the peer last said into an empty store); `None` = this
    /// source does not know (transitive) and never touches the routes.
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
    /// When the peer was restored from the peer cache, as long as no live source has confirmed
    /// it since (`None` for every peer a live source reported). Starts [`CACHE_GRACE`].
    pub restored_at: Option<Instant>,
}

impl Peer {
    /// Where the peer stands at `now`: quarantine first, then an unconfirmed cache restore within
    /// [`CACHE_GRACE`], then silence (the module's rules).
    pub fn liveness(&self, now: Instant) -> Liveness {
        if self.quarantined_until.is_some_and(|until| until > now) {
            Liveness::Quarantined
        } else {
            self.presence(now)
        }
    }

    /// [`Peer::liveness`] without the quarantine: `Cached`, `Active` or `Dead`.
    fn presence(&self, now: Instant) -> Liveness {
        if self.in_cache_grace(now) {
            Liveness::Cached
        } else if rank::is_alive(self.last_seen, now) {
            Liveness::Active
        } else {
            Liveness::Dead
        }
    }

    /// Restored from the cache, unconfirmed, and within [`CACHE_GRACE`] of the restore.
    fn in_cache_grace(&self, now: Instant) -> bool {
        self.restored_at
            .is_some_and(|at| now.saturating_duration_since(at) < CACHE_GRACE)
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

#[cfg(test)]
mod tests {
    use super::*;
    use Method::*;

    const MIN: Duration = Duration::from_secs(60);

    /// One update: method, at minutes after t0, supplied `last_seen` in minutes after t0.
    type Step = (Method, u32, Option<u32>);
    /// (case, steps, quarantined until (min), now (min), want)
    type Row<'a> = (&'static str, &'a [Step], Option<u32>, u32, Liveness);

    /// A peer as the store holds it after `steps`.
    fn after(t0: Instant, steps: &[Step]) -> Peer {
        let store = PeerStore::default();
        for (method, at, seen) in steps {
            let update = PeerUpdate {
                last_seen: seen.map(|m| t0 + m * MIN),
                ..PeerUpdate::new(PublicKey([9; 32]))
            };
            store.update(update, *method, t0 + *at * MIN);
        }
        store.get(&PublicKey([9; 32])).unwrap()
    }

    #[test]
    fn liveness_table() {
        // Cache restores at t0 + 60 min of entries last seen at t0 + `seen`.
        let t0 = Instant::now();
        let restore = |seen: u32| (Cache, 60, Some(seen));
        #[rustfmt::skip]
        let rows: [Row<'_>; 15] = [
            ("live peer, 1 min old", &[(Lan, 0, None)], None, 1, Liveness::Active),
            ("live peer, exactly 5 min old", &[(Lan, 0, None)], None, 5, Liveness::Dead),
            ("restored, seen 2 min before: cached, not active", &[restore(58)], None, 60, Liveness::Cached),
            ("restored, seen 23 h before: cached at once", &[restore(0)], None, 60, Liveness::Cached),
            ("restored, 4 min later: still cached", &[restore(0)], None, 64, Liveness::Cached),
            ("restored, grace over: dead", &[restore(0)], None, 65, Liveness::Dead),
            ("restored recently seen, grace over: dead", &[restore(59)], None, 65, Liveness::Dead),
            ("cached then LAN: active", &[restore(0), (Lan, 61, None)], None, 62, Liveness::Active),
            ("cached then LAN, past the grace: active while heard", &[restore(0), (Lan, 64, None)], None, 68, Liveness::Active),
            ("cached then transitive: still cached", &[restore(0), (GossipTransitive, 61, Some(61))], None, 62, Liveness::Cached),
            ("cached then transitive, grace over: its last_seen rules", &[restore(0), (GossipTransitive, 64, Some(64))], None, 66, Liveness::Active),
            ("a second cache update does not restart the grace", &[restore(0), (Cache, 64, Some(0))], None, 66, Liveness::Dead),
            ("live peer later cached: never cached", &[(Lan, 59, None), (Cache, 60, Some(0))], None, 61, Liveness::Active),
            ("quarantine beats cached", &[restore(0)], Some(62), 61, Liveness::Quarantined),
            ("quarantine over: cached again", &[restore(0)], Some(62), 62, Liveness::Cached),
        ];
        for (case, steps, quarantine, now, want) in rows {
            let mut peer = after(t0, steps);
            peer.quarantined_until = quarantine.map(|m| t0 + m * MIN);
            assert_eq!(peer.liveness(t0 + now * MIN), want, "{case}");
        }
    }

    #[test]
    fn on_device_states() {
        #[rustfmt::skip]
        let rows = [
            (Liveness::Active, true, "active"),
            (Liveness::Cached, true, "cached"),
            (Liveness::Quarantined, false, "quarantined"),
            (Liveness::Dead, false, "dead"),
        ];
        for (state, on, text) in rows {
            assert_eq!(state.on_device(), on, "{text}");
            assert_eq!(state.as_str(), text);
        }
    }
}
