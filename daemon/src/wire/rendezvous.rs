//! `RENDEZVOUS_OFFER` and `RENDEZVOUS_START` payloads (crypto-and-wire §7.4–7.5): a requester asks
//! an introducer to coordinate a hole punch with a target; the introducer tells both sides whom to
//! punch, where, and when. Field order and `omitempty` follow Go's structs so that re-serialisation
//! is byte-identical; every field tolerates absence and `null` as Go's decoder does.

use serde::{Deserialize, Serialize};

use super::gojson::null_as_default;

/// A requester's (or an introducer's synthesised) offer: "`from_pubkey` wants `target_pubkey`".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RendezvousOffer {
    /// Always [`super::PROTOCOL`].
    #[serde(default, deserialize_with = "null_as_default")]
    pub protocol: String,
    /// Unix seconds at creation.
    #[serde(default, deserialize_with = "null_as_default")]
    pub timestamp: i64,
    /// The requester's WireGuard public key.
    #[serde(default, deserialize_with = "null_as_default")]
    pub from_pubkey: String,
    /// The peer the requester wants to reach.
    #[serde(default, deserialize_with = "null_as_default")]
    pub target_pubkey: String,
    /// `pairID(from, target)`: 16 lowercase hex digits.
    #[serde(default, deserialize_with = "null_as_default")]
    pub pair_id: String,
    /// The requester's own candidate `host:port`s (Go requesters send none).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub candidates: Vec<String>,
    /// Only in an introducer's own copy: the offer's UDP source.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub observed_addr: String,
    /// Only in an introducer's own copy: the introducer's key.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub introducer_key: String,
}

/// An introducer's order to punch: "punch `peer_pubkey` at `peer_candidates` at `start_at_unix_ms`".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RendezvousStart {
    /// Always [`super::PROTOCOL`].
    #[serde(default, deserialize_with = "null_as_default")]
    pub protocol: String,
    /// Unix seconds at creation.
    #[serde(default, deserialize_with = "null_as_default")]
    pub timestamp: i64,
    /// `pairID(receiver, peer)`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub pair_id: String,
    /// The other participant.
    #[serde(default, deserialize_with = "null_as_default")]
    pub peer_pubkey: String,
    /// The other participant's control (exchange-socket) addresses, port-expanded.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub peer_candidates: Vec<String>,
    /// When both sides start punching, Unix milliseconds.
    #[serde(default, deserialize_with = "null_as_default")]
    pub start_at_unix_ms: i64,
    /// The introducer's key.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub introducer_key: String,
}

#[cfg(test)]
mod tests {
    use super::super::{PROTOCOL, to_go_json};
    use super::*;

    const P: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    const Q: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

    /// Go's encoding of each value, written out by hand from the struct definitions (§7.4–7.5):
    /// decoding it and encoding again must give the same bytes.
    #[test]
    fn go_json_round_trips_byte_for_byte() {
        let offers = [
            // What a Go requester sends: no candidates, no observed address, no introducer key.
            (
                "requester offer",
                format!(
                    r#"{{"protocol":"wgmesh-v1","timestamp":1800000000,"from_pubkey":"{P}","target_pubkey":"{Q}","pair_id":"72f9b0451f1017fb"}}"#
                ),
            ),
            (
                "every field",
                format!(
                    r#"{{"protocol":"wgmesh-v1","timestamp":1800000000,"from_pubkey":"{P}","target_pubkey":"{Q}","pair_id":"72f9b0451f1017fb","candidates":["203.0.113.7:51821","[2001:db8::1]:51821"],"observed_addr":"198.51.100.2:51821","introducer_key":"{Q}"}}"#
                ),
            ),
            (
                "empty strings stay (not omitempty)",
                r#"{"protocol":"","timestamp":0,"from_pubkey":"","target_pubkey":"","pair_id":""}"#
                    .to_owned(),
            ),
        ];
        for (case, text) in offers {
            let offer: RendezvousOffer = serde_json::from_str(&text).unwrap();
            assert_eq!(
                String::from_utf8(to_go_json(&offer)).unwrap(),
                text,
                "{case}"
            );
        }
        let starts = [
            (
                "every field",
                format!(
                    r#"{{"protocol":"wgmesh-v1","timestamp":1800000000,"pair_id":"72f9b0451f1017fb","peer_pubkey":"{Q}","peer_candidates":["203.0.113.7:51821","203.0.113.7:51820"],"start_at_unix_ms":1800000001800,"introducer_key":"{P}"}}"#
                ),
            ),
            (
                "no candidates, no introducer key",
                format!(
                    r#"{{"protocol":"wgmesh-v1","timestamp":1800000000,"pair_id":"72f9b0451f1017fb","peer_pubkey":"{Q}","start_at_unix_ms":0}}"#
                ),
            ),
        ];
        for (case, text) in starts {
            let start: RendezvousStart = serde_json::from_str(&text).unwrap();
            assert_eq!(
                String::from_utf8(to_go_json(&start)).unwrap(),
                text,
                "{case}"
            );
        }
    }

    #[test]
    fn encoding_follows_go_field_order_and_omitempty() {
        let start = RendezvousStart {
            protocol: PROTOCOL.into(),
            timestamp: 1_800_000_000,
            pair_id: "72f9b0451f1017fb".into(),
            peer_pubkey: Q.into(),
            peer_candidates: vec!["198.51.100.3:52190".into()],
            start_at_unix_ms: 1_800_000_001_800,
            introducer_key: String::new(),
        };
        assert_eq!(
            String::from_utf8(to_go_json(&start)).unwrap(),
            format!(
                r#"{{"protocol":"wgmesh-v1","timestamp":1800000000,"pair_id":"72f9b0451f1017fb","peer_pubkey":"{Q}","peer_candidates":["198.51.100.3:52190"],"start_at_unix_ms":1800000001800}}"#
            )
        );
        let offer = RendezvousOffer {
            protocol: PROTOCOL.into(),
            from_pubkey: P.into(),
            ..RendezvousOffer::default()
        };
        assert_eq!(
            String::from_utf8(to_go_json(&offer)).unwrap(),
            format!(
                r#"{{"protocol":"wgmesh-v1","timestamp":0,"from_pubkey":"{P}","target_pubkey":"","pair_id":""}}"#
            )
        );
    }

    #[test]
    fn decoding_tolerates_missing_null_and_unknown_fields() {
        let offer: RendezvousOffer = serde_json::from_str(
            r#"{"protocol":"wgmesh-v1","candidates":null,"observed_addr":null,"later":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(
            offer,
            RendezvousOffer {
                protocol: PROTOCOL.into(),
                ..RendezvousOffer::default()
            }
        );
        let start: RendezvousStart =
            serde_json::from_str(r#"{"peer_candidates":null,"start_at_unix_ms":null}"#).unwrap();
        assert_eq!(start, RendezvousStart::default());
        // Go cannot decode a float into int64; neither do we.
        assert!(serde_json::from_str::<RendezvousStart>(r#"{"start_at_unix_ms":1.5e12}"#).is_err());
        assert!(serde_json::from_str::<RendezvousOffer>(r#"{"candidates":"1.2.3.4:5"}"#).is_err());
    }
}
