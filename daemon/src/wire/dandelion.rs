//! `DandelionAnnounce`: the payload of a `DANDELION_STEM` envelope (privacy mode, crypto-and-wire
//! §18, daemon-behaviour §12). Pure.
//!
//! Go defines the message (`pkg/privacy/dandelion.go`) but never sends it; the message type and
//! its wiring are ours, and a Go node drops `DANDELION_STEM` as an unknown type. The fields keep
//! Go's names, types and order (`origin_pubkey`, `origin_mesh_ip`, `origin_endpoint`,
//! `routable_networks` omitempty, `hop_count` as a `uint8`, `timestamp`, `nonce` as base64 of 16
//! bytes), with these additions:
//!
//! - `protocol` first, always `wgmesh-v1`: every envelope plaintext must carry it (§6.3 step 5).
//! - `origin_hostname`, `origin_mesh_ipv6`, `origin_introducer`, `origin_nat_type`, all
//!   omitempty, at the end: what a `KnownPeer` carries besides key, mesh IP and endpoint, so the
//!   node that fluffs can store the origin as completely as a gossip ANNOUNCE would have (the mesh
//!   IPv6 is an allowed IP; the introducer flag always overwrites the stored one).

use serde::{Deserialize, Serialize};

use super::gojson::{is_false, null_as_default};
use super::key::decode_go_base64;

/// Length of the random `nonce` that identifies one announcement across its hops.
pub const DANDELION_NONCE_LEN: usize = 16;

/// An announcement of its origin, travelling the stem phase of Dandelion++.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DandelionAnnounce {
    /// Always [`super::PROTOCOL`] (the envelope demands it).
    #[serde(default, deserialize_with = "null_as_default")]
    pub protocol: String,
    /// The origin's WireGuard public key (base64 of 32 bytes).
    #[serde(default, deserialize_with = "null_as_default")]
    pub origin_pubkey: String,
    /// The origin's mesh IPv4.
    #[serde(default, deserialize_with = "null_as_default")]
    pub origin_mesh_ip: String,
    /// The origin's WireGuard endpoint `host:port` (may be a wildcard host or empty).
    #[serde(default, deserialize_with = "null_as_default")]
    pub origin_endpoint: String,
    /// CIDRs the origin routes for.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub routable_networks: Vec<String>,
    /// Stem hops taken so far (0 when the origin sends it).
    #[serde(default, deserialize_with = "null_as_default")]
    pub hop_count: u8,
    /// Unix seconds when the origin created it (unchanged by relays, so the envelope's ±10 min
    /// window bounds the whole stem).
    #[serde(default, deserialize_with = "null_as_default")]
    pub timestamp: i64,
    /// Base64 of [`DANDELION_NONCE_LEN`] random bytes; relays drop a nonce seen before.
    #[serde(default, deserialize_with = "null_as_default")]
    pub nonce: String,
    /// The origin's hostname (ours).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub origin_hostname: String,
    /// The origin's mesh IPv6 (ours).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub origin_mesh_ipv6: String,
    /// The origin runs as an introducer (ours).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "is_false"
    )]
    pub origin_introducer: bool,
    /// The origin's NAT type (ours).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub origin_nat_type: String,
}

impl DandelionAnnounce {
    /// The nonce's bytes, if it is base64 (Go's lenient decoder) of exactly
    /// [`DANDELION_NONCE_LEN`] bytes.
    pub fn nonce_bytes(&self) -> Option<[u8; DANDELION_NONCE_LEN]> {
        decode_go_base64(&self.nonce)?.try_into().ok()
    }

    /// Encodes `nonce` into the `nonce` field (padded standard base64, as Go encodes `[]byte`).
    pub fn set_nonce(&mut self, nonce: [u8; DANDELION_NONCE_LEN]) {
        use base64::Engine as _;
        self.nonce = base64::engine::general_purpose::STANDARD.encode(nonce);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{PROTOCOL, to_go_json};

    const KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

    fn sample() -> DandelionAnnounce {
        let mut a = DandelionAnnounce {
            protocol: PROTOCOL.into(),
            origin_pubkey: KEY.into(),
            origin_mesh_ip: "10.42.0.7".into(),
            origin_endpoint: "0.0.0.0:51820".into(),
            hop_count: 0,
            timestamp: 1_800_000_000,
            ..Default::default()
        };
        a.set_nonce([0xab; DANDELION_NONCE_LEN]);
        a
    }

    #[test]
    fn go_field_names_order_and_omitempty() {
        // (case, change, exact JSON)
        type Change = fn(&mut DandelionAnnounce);
        let rows: [(&str, Change, &str); 3] = [
            (
                "minimal: omitempty fields absent, non-omitempty present",
                |_| {},
                r#"{"protocol":"wgmesh-v1","origin_pubkey":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","origin_mesh_ip":"10.42.0.7","origin_endpoint":"0.0.0.0:51820","hop_count":0,"timestamp":1800000000,"nonce":"q6urq6urq6urq6urq6urqw=="}"#,
            ),
            (
                "every field, Go's first, ours after",
                |a| {
                    a.routable_networks = vec!["192.168.50.0/24".into()];
                    a.hop_count = 3;
                    a.origin_hostname = "h<1>".into();
                    a.origin_mesh_ipv6 = "fd00::7".into();
                    a.origin_introducer = true;
                    a.origin_nat_type = "cone".into();
                },
                r#"{"protocol":"wgmesh-v1","origin_pubkey":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","origin_mesh_ip":"10.42.0.7","origin_endpoint":"0.0.0.0:51820","routable_networks":["192.168.50.0/24"],"hop_count":3,"timestamp":1800000000,"nonce":"q6urq6urq6urq6urq6urqw==","origin_hostname":"h\u003c1\u003e","origin_mesh_ipv6":"fd00::7","origin_introducer":true,"origin_nat_type":"cone"}"#,
            ),
            (
                "an empty endpoint stays (not omitempty in Go)",
                |a| a.origin_endpoint = String::new(),
                r#"{"protocol":"wgmesh-v1","origin_pubkey":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","origin_mesh_ip":"10.42.0.7","origin_endpoint":"","hop_count":0,"timestamp":1800000000,"nonce":"q6urq6urq6urq6urq6urqw=="}"#,
            ),
        ];
        for (case, change, want) in rows {
            let mut a = sample();
            change(&mut a);
            let text = String::from_utf8(to_go_json(&a)).unwrap();
            assert_eq!(text, want, "{case}");
            let back: DandelionAnnounce = serde_json::from_str(&text).unwrap();
            assert_eq!(back, a, "{case}: round trip");
        }
    }

    #[test]
    fn decoding_follows_go_rules() {
        // (case, JSON, Some(hop_count) if Go decodes it, else None)
        let rows: [(&str, &str, Option<u8>); 7] = [
            ("missing fields are zero", r#"{}"#, Some(0)),
            (
                "null is zero, unknown keys ignored",
                r#"{"hop_count":null,"routable_networks":null,"future":[1]}"#,
                Some(0),
            ),
            ("uint8 maximum", r#"{"hop_count":255}"#, Some(255)),
            ("uint8 overflow fails", r#"{"hop_count":256}"#, None),
            ("negative hop count fails", r#"{"hop_count":-1}"#, None),
            ("float hop count fails", r#"{"hop_count":1.5}"#, None),
            ("float timestamp fails", r#"{"timestamp":1e9}"#, None),
        ];
        for (case, json, want) in rows {
            let got = serde_json::from_str::<DandelionAnnounce>(json)
                .ok()
                .map(|a| a.hop_count);
            assert_eq!(got, want, "{case}");
        }
    }

    #[test]
    fn nonce_must_be_sixteen_bytes_of_base64() {
        let mut a = sample();
        assert_eq!(a.nonce_bytes(), Some([0xab; DANDELION_NONCE_LEN]));
        // (case, nonce text, accepted)
        let rows = [
            ("12 bytes", "AAAAAAAAAAAAAAAA", false),
            ("unpadded 16 bytes", "q6urq6urq6urq6urq6urqw", false),
            ("not base64", "!!!!!!!!!!!!!!!!!!!!!!!!", false),
            ("empty", "", false),
            (
                "16 bytes with a newline (Go ignores it)",
                "q6urq6urq6ur\nq6urq6urqw==",
                true,
            ),
        ];
        for (case, text, ok) in rows {
            a.nonce = text.into();
            assert_eq!(a.nonce_bytes().is_some(), ok, "{case}");
        }
    }
}
