//! WireGuard public keys as they appear on the wire: standard base64 with padding, 32 bytes.

use base64::Engine as _;
use base64::alphabet::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// Go's `base64.StdEncoding` when decoding: padding required, non-zero trailing bits tolerated.
const GO_STD: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical)
        .with_decode_allow_trailing_bits(true),
);

/// Why a key string was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// Empty string.
    #[error("key is empty")]
    Empty,
    /// Not padded standard base64.
    #[error("key is not valid base64")]
    Base64,
    /// Decodes, but not to 32 bytes.
    #[error("key decodes to {0} bytes, expected 32")]
    Length(usize),
}

/// Decodes base64 the way Go's `StdEncoding` does: `\r` and `\n` are ignored, padding is
/// required, trailing bits may be non-zero.
pub(crate) fn decode_go_base64(text: &str) -> Option<Vec<u8>> {
    let cleaned: String;
    let text = if text.contains(['\r', '\n']) {
        cleaned = text.chars().filter(|c| !matches!(c, '\r' | '\n')).collect();
        &cleaned
    } else {
        text
    };
    GO_STD.decode(text).ok()
}

/// Decodes a WireGuard key string into its 32 bytes.
pub fn decode_wg_key(text: &str) -> Result<[u8; 32], KeyError> {
    if text.is_empty() {
        return Err(KeyError::Empty);
    }
    let bytes = decode_go_base64(text).ok_or(KeyError::Base64)?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| KeyError::Length(b.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_table() {
        let zero = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        assert_eq!(decode_wg_key(zero), Ok([0; 32]));
        // Non-zero trailing bits ('B' instead of 'A' before '='): Go accepts.
        assert!(decode_wg_key("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB=").is_ok());
        // Embedded newline: Go ignores it.
        assert!(decode_wg_key("AAAAAAAAAAAAAAAAAAAAAA\nAAAAAAAAAAAAAAAAAAAAA=").is_ok());
        assert_eq!(decode_wg_key(""), Err(KeyError::Empty));
        assert_eq!(decode_wg_key("not-valid-base64!!!"), Err(KeyError::Base64));
        // Unpadded: Go's StdEncoding rejects it.
        assert_eq!(decode_wg_key(&zero[..43]), Err(KeyError::Base64));
        assert_eq!(
            decode_wg_key("AAAAAAAAAAAAAAAAAAAAAA=="),
            Err(KeyError::Length(16))
        );
    }
}
