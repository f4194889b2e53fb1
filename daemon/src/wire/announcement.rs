//! `PeerAnnouncement` and `KnownPeer` (crypto-and-wire §7.1–7.2): the payload of HELLO, REPLY and
//! ANNOUNCE. Field order and `omitempty` follow Go's struct so that re-serialisation is
//! byte-identical; every field tolerates absence and `null` as Go's decoder does.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::gojson::{is_false, null_as_default};
use super::key::{KeyError, decode_wg_key};

/// Protocol marker inside every plaintext.
pub const PROTOCOL: &str = "wgmesh-v1";
/// Most `routable_networks` entries a valid announcement may carry.
pub const MAX_ROUTABLE_NETWORKS: usize = 100;
/// Most `known_peers` entries a valid announcement may carry.
pub const MAX_KNOWN_PEERS: usize = 1000;
/// Longest valid hostname in bytes.
pub const MAX_HOSTNAME_LEN: usize = 253;

/// A node describing itself (and, in exchange messages, peers it knows).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerAnnouncement {
    /// Always [`PROTOCOL`].
    #[serde(default, deserialize_with = "null_as_default")]
    pub protocol: String,
    /// Sender's WireGuard public key (base64 of 32 bytes).
    #[serde(default, deserialize_with = "null_as_default")]
    pub wg_pubkey: String,
    /// Sender's hostname.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub hostname: String,
    /// Sender's mesh IPv4 (any IP text passes validation).
    #[serde(default, deserialize_with = "null_as_default")]
    pub mesh_ip: String,
    /// Sender's mesh IPv6.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub mesh_ipv6: String,
    /// Sender's WireGuard endpoint `host:port`; may be empty or a wildcard before discovery.
    #[serde(default, deserialize_with = "null_as_default")]
    pub wg_endpoint: String,
    /// Sender runs as an introducer.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "is_false"
    )]
    pub introducer: bool,
    /// CIDRs the sender routes for.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub routable_networks: Vec<String>,
    /// Unix seconds at creation.
    #[serde(default, deserialize_with = "null_as_default")]
    pub timestamp: i64,
    /// Peers the sender knows (transitive discovery).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub known_peers: Vec<KnownPeer>,
    /// REPLY only: the HELLO's source address as the replier saw it.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub observed_endpoint: String,
    /// `cone`, `symmetric` or `unknown`.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub nat_type: String,
}

/// A peer listed inside another node's announcement.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownPeer {
    /// The peer's WireGuard public key.
    #[serde(default, deserialize_with = "null_as_default")]
    pub wg_pubkey: String,
    /// The peer's hostname.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub hostname: String,
    /// The peer's mesh IPv4.
    #[serde(default, deserialize_with = "null_as_default")]
    pub mesh_ip: String,
    /// The peer's mesh IPv6.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub mesh_ipv6: String,
    /// The peer's WireGuard endpoint.
    #[serde(default, deserialize_with = "null_as_default")]
    pub wg_endpoint: String,
    /// The peer runs as an introducer.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "is_false"
    )]
    pub introducer: bool,
    /// The peer's NAT type.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub nat_type: String,
}

/// Why an announcement failed validation. Field names follow the JSON keys.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AnnouncementError {
    /// Bad `wg_pubkey`.
    #[error("invalid wg_pubkey: {0}")]
    PublicKey(KeyError),
    /// Empty `mesh_ip`.
    #[error("invalid mesh_ip (MeshIP): empty")]
    MeshIpEmpty,
    /// `mesh_ip` is not a bare IP address.
    #[error("invalid mesh_ip (MeshIP) {0:?}: not an IP address")]
    MeshIp(String),
    /// `wg_endpoint` is not `host:port` with a port in 1..=65535.
    #[error("invalid wg_endpoint {0:?}: {1}")]
    Endpoint(String, &'static str),
    /// `hostname` too long or with bytes outside 0x20..=0x7e.
    #[error("invalid hostname: {0}")]
    Hostname(&'static str),
    /// Too many `routable_networks`.
    #[error("too many routable_networks: {0} (maximum {MAX_ROUTABLE_NETWORKS})")]
    TooManyRoutes(usize),
    /// A `routable_networks` entry is not a CIDR.
    #[error("invalid routable_networks entry {0:?}: not a CIDR")]
    Route(String),
    /// Too many `known_peers`.
    #[error("too many known_peers: {0} (maximum {MAX_KNOWN_PEERS})")]
    TooManyKnownPeers(usize),
    /// A `known_peers` entry is invalid.
    #[error("invalid known_peers[{index}]: {source}")]
    KnownPeer {
        /// Position in the list.
        index: usize,
        /// What is wrong with it.
        source: Box<AnnouncementError>,
    },
}

impl PeerAnnouncement {
    /// Go's `PeerAnnouncement.Validate` (crypto-and-wire §7.2).
    pub fn validate(&self) -> Result<(), AnnouncementError> {
        validate_common(
            &self.wg_pubkey,
            &self.mesh_ip,
            &self.wg_endpoint,
            &self.hostname,
        )?;
        if self.routable_networks.len() > MAX_ROUTABLE_NETWORKS {
            return Err(AnnouncementError::TooManyRoutes(
                self.routable_networks.len(),
            ));
        }
        if let Some(bad) = self
            .routable_networks
            .iter()
            .find(|r| r.parse::<IpNet>().is_err())
        {
            return Err(AnnouncementError::Route(bad.clone()));
        }
        if self.known_peers.len() > MAX_KNOWN_PEERS {
            return Err(AnnouncementError::TooManyKnownPeers(self.known_peers.len()));
        }
        for (index, kp) in self.known_peers.iter().enumerate() {
            kp.validate().map_err(|e| AnnouncementError::KnownPeer {
                index,
                source: Box::new(e),
            })?;
        }
        Ok(())
    }
}

impl KnownPeer {
    /// Go's `KnownPeer.Validate`.
    pub fn validate(&self) -> Result<(), AnnouncementError> {
        validate_common(
            &self.wg_pubkey,
            &self.mesh_ip,
            &self.wg_endpoint,
            &self.hostname,
        )
    }
}

fn validate_common(
    pubkey: &str,
    mesh_ip: &str,
    endpoint: &str,
    hostname: &str,
) -> Result<(), AnnouncementError> {
    decode_wg_key(pubkey).map_err(AnnouncementError::PublicKey)?;
    if mesh_ip.is_empty() {
        return Err(AnnouncementError::MeshIpEmpty);
    }
    if mesh_ip.parse::<IpAddr>().is_err() {
        return Err(AnnouncementError::MeshIp(mesh_ip.to_owned()));
    }
    if !endpoint.is_empty() {
        check_endpoint(endpoint)
            .map_err(|why| AnnouncementError::Endpoint(endpoint.to_owned(), why))?;
    }
    if hostname.len() > MAX_HOSTNAME_LEN {
        return Err(AnnouncementError::Hostname("longer than 253 bytes"));
    }
    if hostname.bytes().any(|b| !(0x20..=0x7e).contains(&b)) {
        return Err(AnnouncementError::Hostname(
            "contains bytes outside printable ASCII",
        ));
    }
    Ok(())
}

/// Go's `net.SplitHostPort` followed by `strconv.Atoi` and a 1..=65535 range check.
fn check_endpoint(endpoint: &str) -> Result<(), &'static str> {
    let (host, port) = split_host_port(endpoint)?;
    if host.contains(['[', ']']) || port.contains(['[', ']']) {
        return Err("unexpected bracket");
    }
    match port.parse::<i64>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(()),
        Ok(_) => Err("port out of range 1..65535"),
        Err(_) => Err("port is not a number"),
    }
}

/// Splits `host:port` or `[host]:port` exactly where Go's `net.SplitHostPort` does.
pub fn split_host_port(addr: &str) -> Result<(&str, &str), &'static str> {
    let last_colon = addr.rfind(':').ok_or("missing port")?;
    let port = &addr[last_colon + 1..];
    if let Some(rest) = addr.strip_prefix('[') {
        let close = rest.find(']').ok_or("missing ']'")?;
        // The colon must follow the bracket directly: "[::1]x:80" and "[::1]:1:2" are invalid.
        if close + 2 != last_colon {
            return Err(if rest.as_bytes().get(close + 1) == Some(&b':') {
                "too many colons"
            } else {
                "missing port"
            });
        }
        Ok((&rest[..close], port))
    } else {
        let host = &addr[..last_colon];
        if host.contains(':') {
            return Err("too many colons");
        }
        Ok((host, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

    fn base() -> PeerAnnouncement {
        PeerAnnouncement {
            protocol: PROTOCOL.into(),
            wg_pubkey: KEY.into(),
            mesh_ip: "10.0.0.1".into(),
            wg_endpoint: "1.2.3.4:51820".into(),
            timestamp: 1_700_000_000,
            ..Default::default()
        }
    }

    type Change = Box<dyn Fn(&mut PeerAnnouncement)>;

    #[test]
    fn validation_accepts_go_test_cases() {
        let pass: Vec<Change> = vec![
            Box::new(|_| {}),
            Box::new(|a| a.routable_networks = vec!["192.168.1.0/24".into(), "10.1.0.0/16".into()]),
            Box::new(|a| a.hostname = "node-1.example.com".into()),
            Box::new(|a| a.mesh_ip = "2001:db8::1".into()),
            Box::new(|a| a.wg_endpoint = String::new()),
            Box::new(|a| a.wg_endpoint = "[::1]:51820".into()),
            Box::new(|a| a.wg_endpoint = "1.2.3.4:65535".into()),
            Box::new(|a| a.wg_endpoint = ":51820".into()),
            Box::new(|a| a.wg_endpoint = "host.example:51820".into()),
            Box::new(|a| a.routable_networks = vec!["10.0.0.0/8".into(); 100]),
            Box::new(|a| a.hostname = "a".repeat(253)),
        ];
        for (i, change) in pass.iter().enumerate() {
            let mut a = base();
            change(&mut a);
            assert_eq!(a.validate(), Ok(()), "case {i}: {a:?}");
        }
    }

    #[test]
    fn validation_rejects_go_test_cases() {
        use AnnouncementError as E;
        type Case = (Change, fn(&E) -> bool);
        let fail: Vec<Case> = vec![
            (Box::new(|a| a.wg_pubkey = String::new()), |e| {
                matches!(e, E::PublicKey(KeyError::Empty))
            }),
            (
                Box::new(|a| a.wg_pubkey = "not-valid-base64!!!".into()),
                |e| matches!(e, E::PublicKey(KeyError::Base64)),
            ),
            (
                Box::new(|a| a.wg_pubkey = "AAAAAAAAAAAAAAAAAAAAAA==".into()),
                |e| matches!(e, E::PublicKey(KeyError::Length(16))),
            ),
            (Box::new(|a| a.mesh_ip = String::new()), |e| {
                matches!(e, E::MeshIpEmpty)
            }),
            (Box::new(|a| a.mesh_ip = "not-an-ip".into()), |e| {
                matches!(e, E::MeshIp(_))
            }),
            (Box::new(|a| a.mesh_ip = "10.0.0.1/24".into()), |e| {
                matches!(e, E::MeshIp(_))
            }),
            (Box::new(|a| a.wg_endpoint = "1.2.3.4".into()), |e| {
                matches!(e, E::Endpoint(..))
            }),
            (Box::new(|a| a.wg_endpoint = "1.2.3.4:0".into()), |e| {
                matches!(e, E::Endpoint(..))
            }),
            (Box::new(|a| a.wg_endpoint = "1.2.3.4:70000".into()), |e| {
                matches!(e, E::Endpoint(..))
            }),
            (Box::new(|a| a.wg_endpoint = "1.2.3.4:65536".into()), |e| {
                matches!(e, E::Endpoint(..))
            }),
            (Box::new(|a| a.wg_endpoint = "::1:51820".into()), |e| {
                matches!(e, E::Endpoint(..))
            }),
            (Box::new(|a| a.wg_endpoint = "[::1]x:51820".into()), |e| {
                matches!(e, E::Endpoint(..))
            }),
            (
                Box::new(|a| a.routable_networks = vec!["not-a-cidr".into()]),
                |e| matches!(e, E::Route(_)),
            ),
            (
                Box::new(|a| a.routable_networks = vec!["192.168.1.1".into()]),
                |e| matches!(e, E::Route(_)),
            ),
            (
                Box::new(|a| a.routable_networks = vec!["10.0.0.0/8".into(); 101]),
                |e| matches!(e, E::TooManyRoutes(101)),
            ),
            (Box::new(|a| a.hostname = "a".repeat(254)), |e| {
                matches!(e, E::Hostname(_))
            }),
            (Box::new(|a| a.hostname = "node\0evil".into()), |e| {
                matches!(e, E::Hostname(_))
            }),
            (Box::new(|a| a.hostname = "node\u{1}bad".into()), |e| {
                matches!(e, E::Hostname(_))
            }),
            (
                Box::new(|a| {
                    a.known_peers = vec![KnownPeer {
                        wg_pubkey: "bad".into(),
                        mesh_ip: "10.0.0.2".into(),
                        ..Default::default()
                    }]
                }),
                |e| matches!(e, E::KnownPeer { index: 0, .. }),
            ),
            (
                Box::new(|a| {
                    a.known_peers = vec![KnownPeer {
                        wg_pubkey: KEY.into(),
                        mesh_ip: "bogus".into(),
                        ..Default::default()
                    }]
                }),
                |e| matches!(e, E::KnownPeer { .. }),
            ),
            (
                Box::new(|a| {
                    a.known_peers = vec![KnownPeer {
                        wg_pubkey: KEY.into(),
                        mesh_ip: "10.0.0.2".into(),
                        hostname: "x\u{7f}".into(),
                        ..Default::default()
                    }]
                }),
                |e| matches!(e, E::KnownPeer { .. }),
            ),
            (
                Box::new(|a| {
                    a.known_peers = vec![
                        KnownPeer {
                            wg_pubkey: KEY.into(),
                            mesh_ip: "10.0.0.2".into(),
                            ..Default::default()
                        };
                        1001
                    ]
                }),
                |e| matches!(e, E::TooManyKnownPeers(1001)),
            ),
        ];
        for (i, (change, check)) in fail.iter().enumerate() {
            let mut a = base();
            change(&mut a);
            let err = a.validate().expect_err(&format!("case {i} should fail"));
            assert!(check(&err), "case {i}: {err:?}");
        }
    }

    #[test]
    fn decoding_tolerates_missing_and_null_fields_and_unknown_keys() {
        let old = r#"{"protocol":"wgmesh-v1","wg_pubkey":"pk","mesh_ip":"10.0.0.1","wg_endpoint":"1.2.3.4:51820","timestamp":1700000000}"#;
        let a: PeerAnnouncement = serde_json::from_str(old).unwrap();
        assert_eq!(a.observed_endpoint, "");
        let nulls = r#"{"protocol":"wgmesh-v1","hostname":null,"known_peers":null,"introducer":null,"future_field":[1,2]}"#;
        let a: PeerAnnouncement = serde_json::from_str(nulls).unwrap();
        assert_eq!(
            (a.timestamp, a.known_peers.len(), a.introducer),
            (0, 0, false)
        );
    }

    #[test]
    fn serialisation_omits_empty_optional_fields_only() {
        let a = PeerAnnouncement {
            protocol: PROTOCOL.into(),
            wg_pubkey: "pk".into(),
            ..Default::default()
        };
        let text = String::from_utf8(super::super::to_go_json(&a)).unwrap();
        assert_eq!(
            text,
            r#"{"protocol":"wgmesh-v1","wg_pubkey":"pk","mesh_ip":"","wg_endpoint":"","timestamp":0}"#
        );
    }
}
