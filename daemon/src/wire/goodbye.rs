//! The GOODBYE payload (crypto-and-wire §7.3): a node leaving the mesh on a clean shutdown.
//! `{"protocol":"wgmesh-v1","timestamp":<unix s>,"wg_pubkey":"<sender>"}`, all three fields always
//! present, in this order.

use serde::{Deserialize, Serialize};

use super::gojson::null_as_default;

/// Go's `goodbyeMessage`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Goodbye {
    /// Always [`super::PROTOCOL`].
    #[serde(default, deserialize_with = "null_as_default")]
    pub protocol: String,
    /// Unix seconds at creation.
    #[serde(default, deserialize_with = "null_as_default")]
    pub timestamp: i64,
    /// The leaving node's WireGuard public key (base64).
    #[serde(default, deserialize_with = "null_as_default")]
    pub wg_pubkey: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{PROTOCOL, to_go_json};

    #[test]
    fn serialises_every_field_in_go_order() {
        let g = Goodbye {
            protocol: PROTOCOL.into(),
            timestamp: 1_763_780_000,
            wg_pubkey: String::new(),
        };
        let text = String::from_utf8(to_go_json(&g)).unwrap();
        assert_eq!(
            text,
            r#"{"protocol":"wgmesh-v1","timestamp":1763780000,"wg_pubkey":""}"#
        );
        let back: Goodbye = serde_json::from_str(&text).unwrap();
        assert_eq!(back, g);
        let nulls: Goodbye =
            serde_json::from_str(r#"{"protocol":"wgmesh-v1","wg_pubkey":null,"x":1}"#).unwrap();
        assert_eq!((nulls.timestamp, nulls.wg_pubkey.as_str()), (0, ""));
    }
}
