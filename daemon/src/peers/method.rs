//! How a peer was learned: one variant per discovery source. Go's method strings (`lan`,
//! `dht-transitive`, …) exist only at the edges (the API, logs); inside, the enum decides.

use std::fmt;
use std::str::FromStr;

/// A discovery source, as recorded in a peer's `discovered_via` and `endpoint_method`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    /// LAN multicast announcement (`lan`).
    Lan,
    /// A punch coordinated by an introducer succeeded (`dht-rendezvous`).
    DhtRendezvous,
    /// The peer answered us directly on the exchange port after a DHT lookup (`dht`).
    Dht,
    /// An in-mesh gossip announcement from the peer itself (`gossip`).
    Gossip,
    /// Named by another peer in an exchange (`dht-transitive`).
    DhtTransitive,
    /// Named by another peer in gossip (`gossip-transitive`).
    GossipTransitive,
    /// A static registry (`registry`; Go's centralized mode).
    Registry,
    /// Restored from the peer cache at start (`cache`).
    Cache,
}

impl Method {
    /// Every method, for tables and parsers.
    pub const ALL: [Self; 8] = [
        Self::Lan,
        Self::DhtRendezvous,
        Self::Dht,
        Self::Gossip,
        Self::DhtTransitive,
        Self::GossipTransitive,
        Self::Registry,
        Self::Cache,
    ];

    /// Go's string for this method.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Lan => "lan",
            Self::DhtRendezvous => "dht-rendezvous",
            Self::Dht => "dht",
            Self::Gossip => "gossip",
            Self::DhtTransitive => "dht-transitive",
            Self::GossipTransitive => "gossip-transitive",
            Self::Registry => "registry",
            Self::Cache => "cache",
        }
    }

    /// How much an endpoint learned this way is trusted (crypto-and-wire §17): `lan` 100,
    /// `dht-rendezvous` 90, `dht` 70, `gossip` 65, `dht-transitive` 40, `gossip-transitive` 35,
    /// anything else (`registry`) 30, `cache` 20.
    pub const fn endpoint_rank(self) -> u8 {
        match self {
            Self::Lan => 100,
            Self::DhtRendezvous => 90,
            Self::Dht => 70,
            Self::Gossip => 65,
            Self::DhtTransitive => 40,
            Self::GossipTransitive => 35,
            Self::Registry => 30,
            Self::Cache => 20,
        }
    }

    /// Whether hearing of a peer this way means it is alive now. A cache entry or another peer's
    /// report only carries the time *they* last saw it.
    pub const fn refreshes_last_seen(self) -> bool {
        !matches!(
            self,
            Self::Cache | Self::DhtTransitive | Self::GossipTransitive
        )
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not one of Go's method names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown discovery method {0:?} (expected one of: lan, dht-rendezvous, dht, gossip, dht-transitive, gossip-transitive, registry, cache)"
)]
pub struct UnknownMethod(pub String);

impl FromStr for Method {
    type Err = UnknownMethod;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| UnknownMethod(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip_and_ranks_follow_go() {
        #[rustfmt::skip]
        let rows = [
            (Method::Lan, "lan", 100, true),
            (Method::DhtRendezvous, "dht-rendezvous", 90, true),
            (Method::Dht, "dht", 70, true),
            (Method::Gossip, "gossip", 65, true),
            (Method::DhtTransitive, "dht-transitive", 40, false),
            (Method::GossipTransitive, "gossip-transitive", 35, false),
            (Method::Registry, "registry", 30, true),
            (Method::Cache, "cache", 20, false),
        ];
        for (m, s, rank, refreshes) in rows {
            assert_eq!(m.as_str(), s);
            assert_eq!(s.parse::<Method>(), Ok(m));
            assert_eq!(m.endpoint_rank(), rank, "{s}");
            assert_eq!(m.refreshes_last_seen(), refreshes, "{s}");
        }
        assert_eq!(rows.len(), Method::ALL.len());
        assert!("LAN".parse::<Method>().is_err());
    }
}
