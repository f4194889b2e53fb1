//! The cache's pure decisions: which entry is restored and as what, what a stored peer is saved
//! as, which entries the next file keeps. Time comes in as a [`Clock`], the one place where
//! wall-clock seconds (the file) and monotonic instants (the store) are converted.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use ipnet::IpNet;

use super::file::{CacheEntry, unix_seconds};
use crate::engine::reconcile::MeshNetworks;
use crate::keys::PublicKey;
use crate::peers::{DEFAULT_CAP, Peer, PeerUpdate};
use crate::wire::announcement::{MAX_HOSTNAME_LEN, MAX_ROUTABLE_NETWORKS};

/// Entries last seen longer ago than this are neither restored nor saved again (as Go).
pub const MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);
/// Most entries a cache file keeps (the newest); the store never holds more peers either.
pub const MAX_ENTRIES: usize = DEFAULT_CAP;

/// One instant read from both clocks: the store's monotonic time and the file's wall-clock time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    /// Monotonic now.
    pub now: Instant,
    /// Wall-clock now.
    pub wall: SystemTime,
}

impl Clock {
    /// Both clocks, now. The only place the cache reads the time.
    pub fn read() -> Self {
        Self {
            now: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// How long before now the wall-clock second `unix` was (to the nanosecond, so converting
    /// there and back never gains a second); zero for a time in the future.
    pub fn age_of(&self, unix: i64) -> Duration {
        match u64::try_from(unix) {
            // Beyond what `SystemTime` holds: far in the future.
            Ok(secs) => SystemTime::UNIX_EPOCH
                .checked_add(Duration::from_secs(secs))
                .and_then(|then| self.wall.duration_since(then).ok())
                .unwrap_or(Duration::ZERO),
            // Before 1970: the time since 1970 plus the seconds before it.
            Err(_) => self
                .wall
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or(Duration::ZERO)
                .saturating_add(Duration::from_secs(unix.unsigned_abs())),
        }
    }

    /// The instant of the wall-clock second `unix`: a time in the future is clamped to now;
    /// `None` when it lies before what the monotonic clock can represent (just after boot).
    pub fn instant_of(&self, unix: i64) -> Option<Instant> {
        self.now.checked_sub(self.age_of(unix))
    }

    /// The wall-clock second (rounded) of `instant`.
    pub fn unix_of(&self, instant: Instant) -> i64 {
        let wall = if instant <= self.now {
            self.wall.checked_sub(self.now.duration_since(instant))
        } else {
            self.wall.checked_add(instant.duration_since(self.now))
        };
        wall.map_or(0, |t| {
            let rounded = t + Duration::from_millis(500);
            unix_seconds(rounded)
        })
    }
}

/// What restoring needs to know about this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestoreContext {
    /// This node's key: an entry with it is never put on the device.
    pub own_key: PublicKey,
    /// The mesh's address ranges: an entry outside them belongs to another mesh (an old secret).
    pub mesh: MeshNetworks,
}

/// Why a cache entry was not restored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, thiserror::Error)]
pub enum Skip {
    /// `wg_pubkey` is not a WireGuard key.
    #[error("wg_pubkey is not a WireGuard public key")]
    BadKey,
    /// The entry is this node.
    #[error("the entry is this node itself")]
    OwnKey,
    /// Last seen more than [`MAX_AGE`] ago.
    #[error("last seen more than 24 h ago")]
    TooOld,
    /// `mesh_ip` is missing or not an IPv4 address.
    #[error("mesh_ip is missing or not an IPv4 address")]
    BadMeshIp,
    /// `mesh_ipv6` is not an IPv6 address.
    #[error("mesh_ipv6 is not an IPv6 address")]
    BadMeshIpv6,
    /// A mesh address lies outside this mesh's ranges.
    #[error("a mesh address lies outside this mesh (a cache of another secret?)")]
    OtherMesh,
    /// `endpoint` is not a usable `ip:port`.
    #[error("endpoint is not a usable ip:port")]
    BadEndpoint,
    /// `routable_networks` holds something that is not a CIDR, or too many.
    #[error("routable_networks holds an invalid or excess entry")]
    BadRoutes,
}

impl Skip {
    /// Stable code for logs.
    pub const fn code(self) -> &'static str {
        match self {
            Self::BadKey => "bad_key",
            Self::OwnKey => "own_key",
            Self::TooOld => "too_old",
            Self::BadMeshIp => "bad_mesh_ip",
            Self::BadMeshIpv6 => "bad_mesh_ipv6",
            Self::OtherMesh => "other_mesh",
            Self::BadEndpoint => "bad_endpoint",
            Self::BadRoutes => "bad_routes",
        }
    }
}

/// The store update that restores `entry` at `clock` (to be applied with `Method::Cache`), its
/// `last_seen` the entry's own (clamped to now); or why the entry is skipped. An entry is
/// restored whole or not at all; an unusable host name or NAT type is dropped, not fatal.
///
/// # Errors
///
/// The [`Skip`] reason.
pub fn restorable(
    entry: &CacheEntry,
    ctx: &RestoreContext,
    clock: &Clock,
) -> Result<PeerUpdate, Skip> {
    let public_key: PublicKey = entry.wg_pubkey.parse().map_err(|_| Skip::BadKey)?;
    if public_key == ctx.own_key {
        return Err(Skip::OwnKey);
    }
    // Go skips `now - last_seen > 24h`: exactly 24 h old is still restored.
    if clock.age_of(entry.last_seen) > MAX_AGE {
        return Err(Skip::TooOld);
    }
    let last_seen = clock.instant_of(entry.last_seen).ok_or(Skip::TooOld)?;
    let mesh_ip: Ipv4Addr = entry.mesh_ip.parse().map_err(|_| Skip::BadMeshIp)?;
    if !ctx.mesh.v4.contains(&mesh_ip) {
        return Err(Skip::OtherMesh);
    }
    let mesh_ipv6 = if entry.mesh_ipv6.is_empty() {
        None
    } else {
        let ip: Ipv6Addr = entry.mesh_ipv6.parse().map_err(|_| Skip::BadMeshIpv6)?;
        if !ctx.mesh.v6.contains(&ip) {
            return Err(Skip::OtherMesh);
        }
        Some(ip)
    };
    let endpoint = if entry.endpoint.is_empty() {
        None
    } else {
        let ep: SocketAddr = entry.endpoint.parse().map_err(|_| Skip::BadEndpoint)?;
        if ep.port() == 0 || ep.ip().is_unspecified() || ep.ip().is_multicast() {
            return Err(Skip::BadEndpoint);
        }
        Some(ep)
    };
    if entry.routable_networks.len() > MAX_ROUTABLE_NETWORKS {
        return Err(Skip::BadRoutes);
    }
    let routes = entry
        .routable_networks
        .iter()
        .map(|n| n.parse::<IpNet>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| Skip::BadRoutes)?;
    let printable = |s: &str| s.bytes().all(|b| (0x20..=0x7e).contains(&b));
    let hostname = if entry.hostname.len() <= MAX_HOSTNAME_LEN && printable(&entry.hostname) {
        entry.hostname.clone()
    } else {
        String::new()
    };
    let nat_type = matches!(entry.nat_type.as_str(), "cone" | "symmetric" | "unknown")
        .then(|| entry.nat_type.clone());
    Ok(PeerUpdate {
        public_key,
        hostname,
        mesh_ip: Some(mesh_ip),
        mesh_ipv6,
        endpoint,
        introducer: entry.introducer,
        // What the peer last said: the store is empty at restore, so nothing is overwritten, and
        // its networks are routed at once; its next live announcement is authoritative again.
        routable_networks: Some(routes),
        nat_type,
        last_seen: Some(last_seen),
    })
}

/// What a stored peer is saved as. Its `last_seen` is the store's, which a restore never
/// refreshes, so a cached entry ages from the last time anything live saw the peer.
pub fn entry_of(peer: &Peer, clock: &Clock) -> CacheEntry {
    CacheEntry {
        wg_pubkey: peer.public_key.to_string(),
        hostname: peer.hostname.clone(),
        mesh_ip: peer.mesh_ip.map(|ip| ip.to_string()).unwrap_or_default(),
        mesh_ipv6: peer.mesh_ipv6.map(|ip| ip.to_string()).unwrap_or_default(),
        endpoint: peer.endpoint.map(|e| e.to_string()).unwrap_or_default(),
        introducer: peer.introducer,
        routable_networks: peer
            .routable_networks
            .iter()
            .map(ToString::to_string)
            .collect(),
        nat_type: peer.nat_type.clone().unwrap_or_default(),
        last_seen: clock.unix_of(peer.last_seen),
    }
}

/// The entries of the next file: every stored peer (dead and quarantined ones too), plus the
/// entries of `previous` for peers the store no longer holds, as long as they were seen within
/// [`MAX_AGE`]. Go saves only the store, so a peer silent for 10 minutes (dropped from the store)
/// was lost from the cache although a restart an hour later would have found it again; here it
/// stays for 24 h. At most [`MAX_ENTRIES`], the most recently seen; sorted by key.
pub fn next_entries(previous: &[CacheEntry], peers: &[Peer], clock: &Clock) -> Vec<CacheEntry> {
    let mut by_key: BTreeMap<String, CacheEntry> = previous
        .iter()
        .map(|e| (e.wg_pubkey.clone(), e.clone()))
        .collect();
    for peer in peers {
        let entry = entry_of(peer, clock);
        by_key.insert(entry.wg_pubkey.clone(), entry);
    }
    let mut entries: Vec<CacheEntry> = by_key
        .into_values()
        .filter(|e| clock.age_of(e.last_seen) <= MAX_AGE)
        .collect();
    if entries.len() > MAX_ENTRIES {
        // Newest first (ties by key), keep the newest, back to key order.
        entries.sort_by(|a, b| {
            b.last_seen
                .cmp(&a.last_seen)
                .then_with(|| a.wg_pubkey.cmp(&b.wg_pubkey))
        });
        entries.truncate(MAX_ENTRIES);
        entries.sort_by(|a, b| a.wg_pubkey.cmp(&b.wg_pubkey));
    }
    entries
}

#[cfg(test)]
mod tests {
    use ipnet::{Ipv4Net, Ipv6Net};

    use super::*;
    use crate::peers::{Method, PeerStore};

    const HOUR: Duration = Duration::from_secs(3600);
    const WALL: i64 = 1_700_000_000;

    fn clock() -> Clock {
        Clock {
            // Far enough from the monotonic origin that 24 h back is representable anywhere.
            now: Instant::now() + 48 * HOUR,
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(WALL as u64),
        }
    }

    fn key(n: u8) -> PublicKey {
        PublicKey([n; 32])
    }

    fn ctx() -> RestoreContext {
        RestoreContext {
            own_key: key(1),
            mesh: MeshNetworks {
                v4: "10.42.0.0/16".parse::<Ipv4Net>().unwrap(),
                v6: "fd00:1:2:3::/64".parse::<Ipv6Net>().unwrap(),
            },
        }
    }

    fn entry() -> CacheEntry {
        CacheEntry {
            wg_pubkey: key(2).to_string(),
            hostname: "beta".into(),
            mesh_ip: "10.42.0.2".into(),
            mesh_ipv6: "fd00:1:2:3::2".into(),
            endpoint: "192.168.1.2:51820".into(),
            introducer: true,
            routable_networks: vec!["192.168.50.0/24".into()],
            nat_type: "cone".into(),
            last_seen: WALL - 60,
        }
    }

    #[test]
    fn a_good_entry_is_restored_whole_with_its_own_last_seen() {
        let c = clock();
        let u = restorable(&entry(), &ctx(), &c).unwrap();
        assert_eq!(
            u,
            PeerUpdate {
                public_key: key(2),
                hostname: "beta".into(),
                mesh_ip: Some("10.42.0.2".parse().unwrap()),
                mesh_ipv6: Some("fd00:1:2:3::2".parse().unwrap()),
                endpoint: Some("192.168.1.2:51820".parse().unwrap()),
                introducer: true,
                routable_networks: Some(vec!["192.168.50.0/24".parse().unwrap()]),
                nat_type: Some("cone".into()),
                last_seen: Some(c.now - Duration::from_secs(60)),
            }
        );
    }

    #[test]
    fn restore_decisions_table() {
        type Edit = fn(&mut CacheEntry);
        let c = clock();
        #[rustfmt::skip]
        let rows: [(&str, Edit, Result<Duration, Skip>); 26] = [
            ("fresh", |_| {}, Ok(Duration::from_secs(60))),
            ("23 h 59 min old", |e| e.last_seen = WALL - 86_340, Ok(Duration::from_secs(86_340))),
            ("exactly 24 h old: restored (Go skips only > 24 h)", |e| e.last_seen = WALL - 86_400, Ok(Duration::from_secs(86_400))),
            ("24 h and 1 s old", |e| e.last_seen = WALL - 86_401, Err(Skip::TooOld)),
            ("last_seen 0 (never)", |e| e.last_seen = 0, Err(Skip::TooOld)),
            ("last_seen negative", |e| e.last_seen = -5, Err(Skip::TooOld)),
            ("last_seen in the future: clamped to now", |e| e.last_seen = WALL + 3600, Ok(Duration::ZERO)),
            ("last_seen far future", |e| e.last_seen = i64::MAX, Ok(Duration::ZERO)),
            ("key not base64", |e| e.wg_pubkey = "not a key".into(), Err(Skip::BadKey)),
            ("key too short", |e| e.wg_pubkey = "AAAA".into(), Err(Skip::BadKey)),
            ("key empty", |e| e.wg_pubkey.clear(), Err(Skip::BadKey)),
            ("own key", |e| e.wg_pubkey = key(1).to_string(), Err(Skip::OwnKey)),
            ("own key even when too old", |e| { e.wg_pubkey = key(1).to_string(); e.last_seen = 0; }, Err(Skip::OwnKey)),
            ("mesh_ip empty", |e| e.mesh_ip.clear(), Err(Skip::BadMeshIp)),
            ("mesh_ip garbage", |e| e.mesh_ip = "10.42.0".into(), Err(Skip::BadMeshIp)),
            ("mesh_ip IPv6", |e| e.mesh_ip = "fd00::2".into(), Err(Skip::BadMeshIp)),
            ("mesh_ip of another mesh", |e| e.mesh_ip = "10.43.0.2".into(), Err(Skip::OtherMesh)),
            ("mesh_ipv6 garbage", |e| e.mesh_ipv6 = "fd00::zz".into(), Err(Skip::BadMeshIpv6)),
            ("mesh_ipv6 of another mesh", |e| e.mesh_ipv6 = "fd00:9::2".into(), Err(Skip::OtherMesh)),
            ("mesh_ipv6 absent", |e| e.mesh_ipv6.clear(), Ok(Duration::from_secs(60))),
            ("endpoint absent", |e| e.endpoint.clear(), Ok(Duration::from_secs(60))),
            ("endpoint IPv6", |e| e.endpoint = "[2001:db8::1]:51820".into(), Ok(Duration::from_secs(60))),
            ("endpoint without port", |e| e.endpoint = "192.168.1.2".into(), Err(Skip::BadEndpoint)),
            ("endpoint port 0", |e| e.endpoint = "192.168.1.2:0".into(), Err(Skip::BadEndpoint)),
            ("endpoint unspecified", |e| e.endpoint = "0.0.0.0:51820".into(), Err(Skip::BadEndpoint)),
            ("bad route", |e| e.routable_networks.push("192.168.1.0/33".into()), Err(Skip::BadRoutes)),
        ];
        for (case, edit, want) in rows {
            let mut e = entry();
            edit(&mut e);
            let got = restorable(&e, &ctx(), &c).map(|u| c.now - u.last_seen.unwrap());
            assert_eq!(got, want, "{case}");
        }
    }

    #[test]
    fn soft_fields_are_dropped_not_fatal() {
        let c = clock();
        #[rustfmt::skip]
        let rows: [(&str, CacheEntry, &str, Option<&str>, usize); 6] = [
            ("hostname with a control byte", CacheEntry { hostname: "a\nb".into(), ..entry() }, "", Some("cone"), 1),
            ("hostname too long", CacheEntry { hostname: "h".repeat(254), ..entry() }, "", Some("cone"), 1),
            ("unknown NAT type", CacheEntry { nat_type: "fancy".into(), ..entry() }, "beta", None, 1),
            ("no NAT type", CacheEntry { nat_type: String::new(), ..entry() }, "beta", None, 1),
            ("no routes: an empty list, the peer's last word", CacheEntry { routable_networks: vec![], ..entry() }, "beta", Some("cone"), 0),
            ("100 routes are fine", CacheEntry { routable_networks: (0..100).map(|i| format!("10.99.{i}.0/24")).collect(), ..entry() }, "beta", Some("cone"), 100),
        ];
        for (case, e, host, nat, routes) in rows {
            let u = restorable(&e, &ctx(), &c).unwrap_or_else(|s| panic!("{case}: {s}"));
            assert_eq!(u.hostname, host, "{case}");
            assert_eq!(u.nat_type.as_deref(), nat, "{case}");
            assert_eq!(u.routable_networks.map(|r| r.len()), Some(routes), "{case}");
        }
        let too_many = CacheEntry {
            routable_networks: (0..101).map(|i| format!("10.99.{i}.0/24")).collect(),
            ..entry()
        };
        assert_eq!(restorable(&too_many, &ctx(), &c), Err(Skip::BadRoutes));
    }

    #[test]
    fn clock_conversions_table() {
        let c = clock();
        #[rustfmt::skip]
        let rows: [(&str, i64, Duration, Option<Duration>); 5] = [
            ("now", WALL, Duration::ZERO, Some(Duration::ZERO)),
            ("an hour ago", WALL - 3600, HOUR, Some(HOUR)),
            ("in the future", WALL + 10, Duration::ZERO, Some(Duration::ZERO)),
            ("before 1970", -1, Duration::from_secs(WALL as u64 + 1), None),
            ("before the monotonic origin", i64::MIN, Duration::from_secs((WALL as u64).wrapping_add(1 << 63)), None),
        ];
        for (case, unix, age, back) in rows {
            assert_eq!(c.age_of(unix), age, "{case}");
            if let Some(back) = back {
                assert_eq!(c.instant_of(unix), Some(c.now - back), "{case}");
            }
        }
        assert_eq!(c.instant_of(i64::MIN), None, "not representable");
        // Instant → unix rounds to the nearest second and round-trips.
        for (case, instant, want) in [
            ("now", c.now, WALL),
            ("90 s ago", c.now - Duration::from_secs(90), WALL - 90),
            (
                "0.6 s ago rounds to 1 s",
                c.now - Duration::from_millis(600),
                WALL - 1,
            ),
            (
                "0.4 s ago rounds to now",
                c.now - Duration::from_millis(400),
                WALL,
            ),
            ("in 5 s", c.now + Duration::from_secs(5), WALL + 5),
        ] {
            assert_eq!(c.unix_of(instant), want, "{case}");
            let back = c.instant_of(want).unwrap();
            assert_eq!(c.unix_of(back), want.min(WALL), "{case}: round trip");
        }
    }

    #[test]
    fn saved_entries_round_trip_through_restore() {
        let c = clock();
        let store = PeerStore::default();
        let u = restorable(&entry(), &ctx(), &c).unwrap();
        store.update(u, Method::Cache, c.now);
        let peers = store.list();
        // Restored and saved again: same entry (last_seen not refreshed by the restore).
        assert_eq!(entry_of(&peers[0], &c), entry());
        // Saved an hour later, still the same last_seen.
        let later = Clock {
            now: c.now + HOUR,
            wall: c.wall + HOUR,
        };
        assert_eq!(entry_of(&peers[0], &later).last_seen, WALL - 60);
        // A peer without addresses or endpoint: Go's always-present keys are empty strings.
        let bare = Peer {
            mesh_ip: None,
            mesh_ipv6: None,
            endpoint: None,
            nat_type: None,
            ..peers[0].clone()
        };
        let e = entry_of(&bare, &c);
        assert_eq!(
            (
                e.mesh_ip.as_str(),
                e.mesh_ipv6.as_str(),
                e.endpoint.as_str(),
                e.nat_type.as_str()
            ),
            ("", "", "", "")
        );
    }

    #[test]
    fn next_entries_table() {
        let c = clock();
        let store = PeerStore::default();
        let live = |n: u8, ago: u64| {
            store.update(
                PeerUpdate {
                    mesh_ip: Some(Ipv4Addr::new(10, 42, 0, n)),
                    ..PeerUpdate::new(key(n))
                },
                Method::Lan,
                c.now - Duration::from_secs(ago),
            );
        };
        live(3, 0);
        live(4, 400); // dead, still stored
        let old = |n: u8, ago: i64| CacheEntry {
            wg_pubkey: key(n).to_string(),
            mesh_ip: format!("10.42.0.{n}"),
            last_seen: WALL - ago,
            ..CacheEntry::default()
        };
        let previous = [
            old(3, 7200),   // in the store: the store's view wins
            old(5, 3600),   // gone from the store an hour ago: kept
            old(6, 86_401), // older than 24 h: dropped
        ];
        let got = next_entries(&previous, &store.list(), &c);
        let summary: Vec<(String, i64)> = got
            .iter()
            .map(|e| (e.wg_pubkey.clone(), WALL - e.last_seen))
            .collect();
        let mut want = vec![
            (key(3).to_string(), 0),
            (key(4).to_string(), 400),
            (key(5).to_string(), 3600),
        ];
        want.sort();
        assert_eq!(summary, want, "sorted by key; store wins; old ones gone");
    }

    #[test]
    fn next_entries_keeps_the_newest_when_over_the_cap() {
        let c = clock();
        let previous: Vec<CacheEntry> = (0..MAX_ENTRIES + 5)
            .map(|i| CacheEntry {
                wg_pubkey: format!("k{i:05}"),
                last_seen: WALL - i as i64,
                ..CacheEntry::default()
            })
            .collect();
        let got = next_entries(&previous, &[], &c);
        assert_eq!(got.len(), MAX_ENTRIES);
        assert!(got.iter().all(|e| WALL - e.last_seen < MAX_ENTRIES as i64));
        assert!(got.windows(2).all(|w| w[0].wg_pubkey < w[1].wg_pubkey));
    }
}
