//! WireGuard keys: 32 bytes, shown as standard base64. Private and preshared keys never print.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;

use crate::wire::{KeyError, decode_wg_key};

/// Why a key string was refused.
pub type KeyParseError = KeyError;

fn b64(bytes: &[u8; 32]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A peer's (or the device's) public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&b64(&self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = KeyParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        decode_wg_key(s).map(Self)
    }
}

/// The device's private key. `Debug` is redacted; there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKey(pub [u8; 32]);

impl PrivateKey {
    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        let secret = x25519_dalek::StaticSecret::from(self.0);
        PublicKey(x25519_dalek::PublicKey::from(&secret).to_bytes())
    }

    /// Base64 text, only for handing to a configuration interface that needs text.
    pub fn to_base64(&self) -> String {
        b64(&self.0)
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

impl FromStr for PrivateKey {
    type Err = KeyParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        decode_wg_key(s).map(Self)
    }
}

/// A preshared key. `Debug` is redacted; there is no `Display`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PresharedKey(pub [u8; 32]);

impl fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresharedKey(<redacted>)")
    }
}

impl FromStr for PresharedKey {
    type Err = KeyParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        decode_wg_key(s).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_print_as_base64_and_secrets_are_redacted() {
        let k: PublicKey = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
            .parse()
            .unwrap();
        assert_eq!(
            k.to_string(),
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
        );
        let p = PrivateKey([7; 32]);
        assert!(!format!("{p:?}").contains(&p.to_base64()));
        assert!(!format!("{:?}", PresharedKey([7; 32])).contains("Bw"));
        assert!("short".parse::<PublicKey>().is_err());
    }
}
