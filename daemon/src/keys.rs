//! WireGuard keys: 32 bytes each, shown as standard base64. Pure; every layer (peer store,
//! engine, discovery, the OS backends) uses these types, and only [`PublicKey`] ever prints.
//!
//! - [`PublicKey`]: a node's name in the mesh. `Copy`, ordered, printable.
//! - [`PrivateKey`]: the node's own secret. Not `Clone`: there is one value per daemon, shared
//!   behind an `Arc` where several owners need it; its bytes are zeroed when it is dropped, and
//!   `Debug` is redacted.
//! - [`PresharedKey`]: the mesh PSK (derived from the secret). `Debug` is redacted.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use zeroize::{Zeroize, Zeroizing};

use crate::wire::{KeyError, decode_wg_key};

/// Why a key string was refused.
pub type KeyParseError = KeyError;

fn b64(bytes: &[u8; 32]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A node's WireGuard public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// The first 8 characters of the base64 form, for log lines that name many peers.
    pub fn short(&self) -> String {
        let mut text = self.to_string();
        text.truncate(8);
        text
    }
}

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

/// A node's WireGuard private key. Zeroed on drop; never printed; not `Clone`.
#[derive(PartialEq, Eq)]
pub struct PrivateKey([u8; 32]);

impl PrivateKey {
    /// Wraps raw key bytes (already clamped or not: X25519 clamps when it uses them).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw bytes, only for handing to a WireGuard configuration interface or the state file.
    pub fn expose_secret(&self) -> &[u8; 32] {
        &self.0
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        let secret = x25519_dalek::StaticSecret::from(self.0);
        PublicKey(x25519_dalek::PublicKey::from(&secret).to_bytes())
    }

    /// Base64 text (zeroed when dropped), only for a configuration interface that needs text.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(b64(&self.0))
    }
}

impl Drop for PrivateKey {
    fn drop(&mut self) {
        self.0.zeroize();
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

/// A WireGuard preshared key. `Debug` is redacted; there is no `Display`.
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
        assert_eq!(k.short(), "AAAAAAAA");
        let p = PrivateKey::from_bytes([7; 32]);
        assert!(!format!("{p:?}").contains(p.to_base64().as_str()));
        assert!(!format!("{:?}", PresharedKey([7; 32])).contains("Bw"));
        assert!("short".parse::<PublicKey>().is_err());
    }

    #[test]
    fn public_key_matches_x25519() {
        // RFC 7748 §6.1: Alice's private key and public key.
        let private = PrivateKey::from_bytes([
            0x77, 0x07, 0x6d, 0x0a, 0x73, 0x18, 0xa5, 0x7d, 0x3c, 0x16, 0xc1, 0x72, 0x51, 0xb2,
            0x66, 0x45, 0xdf, 0x4c, 0x2f, 0x87, 0xeb, 0xc0, 0x99, 0x2a, 0xb1, 0x77, 0xfb, 0xa5,
            0x1d, 0xb9, 0x2c, 0x2a,
        ]);
        let public = [
            0x85, 0x20, 0xf0, 0x09, 0x89, 0x30, 0xa7, 0x54, 0x74, 0x8b, 0x7d, 0xdc, 0xb4, 0x3e,
            0xf7, 0x5a, 0x0d, 0xbf, 0x3a, 0x0d, 0x26, 0x38, 0x1a, 0xf4, 0xeb, 0xa4, 0xa9, 0x8e,
            0xaa, 0x9b, 0x4e, 0x6a,
        ];
        assert_eq!(private.public_key(), PublicKey(public));
    }
}
