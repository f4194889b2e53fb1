//! STUN message bytes: the subset of RFC 5389 that Go wgmesh speaks (crypto-and-wire §15.2,
//! vectors §21.2). Pure.
//!
//! - A **binding request** is the 20-byte header alone: type `0x0001`, length 0, the magic cookie
//!   `0x2112A442` and a 12-byte transaction id; no attributes.
//! - A **binding success response** (type `0x0101`) is accepted only with the magic cookie and
//!   the transaction id of the request. Its attributes are walked as TLVs (4-byte header, value
//!   padded to a multiple of 4) within the length the header declares: the first
//!   `XOR-MAPPED-ADDRESS` (`0x0020`) wins at once; otherwise the first `MAPPED-ADDRESS`
//!   (`0x0001`) is used. Family `0x01` is IPv4, `0x02` IPv6. The XOR variant masks the port
//!   with the top 16 bits of the cookie, an IPv4 address with the cookie, an IPv6 address with
//!   cookie ‖ transaction id.
//!
//! Everything else is a [`ParseError`] naming what was wrong; no input panics (a property
//! test feeds arbitrary bytes). The responder side ([`parse_binding_request`],
//! [`binding_response`]) is the same layout in reverse: the lab's STUN server uses it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The magic cookie of every RFC 5389 message.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Message type of a binding request.
pub const BINDING_REQUEST: u16 = 0x0001;
/// Message type of a binding success response.
pub const BINDING_SUCCESS: u16 = 0x0101;
/// Attribute type `MAPPED-ADDRESS`.
pub const ATTR_MAPPED_ADDRESS: u16 = 0x0001;
/// Attribute type `XOR-MAPPED-ADDRESS`.
pub const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
/// Length of the message header.
pub const HEADER_LEN: usize = 20;

const FAMILY_IPV4: u8 = 0x01;
const FAMILY_IPV6: u8 = 0x02;
const COOKIE_BYTES: [u8; 4] = MAGIC_COOKIE.to_be_bytes();

/// The 12-byte transaction id that ties a response to its request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TransactionId(pub [u8; 12]);

/// Why a datagram is not the STUN message we wait for.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Shorter than the 20-byte header.
    #[error("{len} bytes is shorter than a STUN header (20)")]
    TooShort {
        /// The datagram's length.
        len: usize,
    },
    /// Another message type than the one expected.
    #[error("message type {got:#06x}, expected {expected:#06x}")]
    WrongType {
        /// The type expected.
        expected: u16,
        /// The type found.
        got: u16,
    },
    /// The cookie is not `0x2112A442` (not an RFC 5389 message).
    #[error("magic cookie {0:#010x} is not 0x2112a442")]
    BadCookie(u32),
    /// The response answers another request.
    #[error("transaction id does not match the request")]
    WrongTransaction,
    /// The header declares more attribute bytes than the datagram holds.
    #[error("header declares {declared} attribute bytes, the datagram holds {available}")]
    LengthBeyondDatagram {
        /// Declared length.
        declared: usize,
        /// Bytes after the header.
        available: usize,
    },
    /// An attribute header or value runs past the declared length.
    #[error("attribute {attr_type:#06x} of {len} bytes does not fit in the {remaining} left")]
    AttributeTruncated {
        /// The attribute's type (0 when its header itself is cut).
        attr_type: u16,
        /// Its declared value length (0 when its header itself is cut).
        len: usize,
        /// Bytes left in the message at that point.
        remaining: usize,
    },
    /// An address attribute whose family is neither IPv4 nor IPv6.
    #[error("address attribute {attr_type:#06x} has unknown family {family:#04x}")]
    UnknownFamily {
        /// The attribute's type.
        attr_type: u16,
        /// The family byte.
        family: u8,
    },
    /// An address attribute whose length does not fit its family.
    #[error("address attribute {attr_type:#06x} is {len} bytes long, not {expected}")]
    AddressLength {
        /// The attribute's type.
        attr_type: u16,
        /// Its length.
        len: usize,
        /// The length its family needs (8 for IPv4, 20 for IPv6).
        expected: usize,
    },
    /// A valid response without (XOR-)MAPPED-ADDRESS.
    #[error("response carries no mapped address")]
    NoAddress,
}

/// The binding request with transaction id `txn` (20 bytes, no attributes).
pub fn binding_request(txn: TransactionId) -> [u8; HEADER_LEN] {
    header(BINDING_REQUEST, 0, txn)
}

fn header(msg_type: u16, len: u16, txn: TransactionId) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[0..2].copy_from_slice(&msg_type.to_be_bytes());
    out[2..4].copy_from_slice(&len.to_be_bytes());
    out[4..8].copy_from_slice(&COOKIE_BYTES);
    out[8..20].copy_from_slice(&txn.0);
    out
}

/// Checks the header of `bytes` for `msg_type` and the cookie; returns its transaction id and
/// the attribute bytes the header declares.
fn split_header(bytes: &[u8], msg_type: u16) -> Result<(TransactionId, &[u8]), ParseError> {
    let Some((head, rest)) = bytes.split_first_chunk::<HEADER_LEN>() else {
        return Err(ParseError::TooShort { len: bytes.len() });
    };
    let got = u16::from_be_bytes([head[0], head[1]]);
    if got != msg_type {
        return Err(ParseError::WrongType {
            expected: msg_type,
            got,
        });
    }
    let cookie = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    if cookie != MAGIC_COOKIE {
        return Err(ParseError::BadCookie(cookie));
    }
    let declared = usize::from(u16::from_be_bytes([head[2], head[3]]));
    let attributes = rest
        .get(..declared)
        .ok_or(ParseError::LengthBeyondDatagram {
            declared,
            available: rest.len(),
        })?;
    let mut txn = [0u8; 12];
    txn.copy_from_slice(&head[8..20]);
    Ok((TransactionId(txn), attributes))
}

/// The mapped address of a binding success response to the request with id `txn`.
///
/// # Errors
///
/// A [`ParseError`] for anything but a well-formed success response to that request with an
/// address.
pub fn parse_binding_response(bytes: &[u8], txn: TransactionId) -> Result<SocketAddr, ParseError> {
    let (got, mut attrs) = split_header(bytes, BINDING_SUCCESS)?;
    if got != txn {
        return Err(ParseError::WrongTransaction);
    }
    let mut mapped = None;
    while !attrs.is_empty() {
        let truncated = |attr_type, len| ParseError::AttributeTruncated {
            attr_type,
            len,
            remaining: attrs.len(),
        };
        let Some((head, rest)) = attrs.split_first_chunk::<4>() else {
            return Err(truncated(0, 0));
        };
        let attr_type = u16::from_be_bytes([head[0], head[1]]);
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let value = rest.get(..len).ok_or_else(|| truncated(attr_type, len))?;
        match attr_type {
            ATTR_XOR_MAPPED_ADDRESS => return address(attr_type, value, Some(txn)),
            ATTR_MAPPED_ADDRESS if mapped.is_none() => {
                mapped = Some(address(attr_type, value, None)?)
            }
            _ => {}
        }
        // Values are padded to 4 bytes; the last one's padding may be missing.
        let padded = len.div_ceil(4) * 4;
        attrs = rest.get(padded..).unwrap_or_default();
    }
    mapped.ok_or(ParseError::NoAddress)
}

/// Decodes an address attribute value; `xor` = the transaction id of an XOR-MAPPED-ADDRESS.
fn address(
    attr_type: u16,
    value: &[u8],
    xor: Option<TransactionId>,
) -> Result<SocketAddr, ParseError> {
    let family = match value.get(1) {
        Some(f) => *f,
        None => {
            return Err(ParseError::AddressLength {
                attr_type,
                len: value.len(),
                expected: 8,
            });
        }
    };
    let expected = match family {
        FAMILY_IPV4 => 8,
        FAMILY_IPV6 => 20,
        _ => return Err(ParseError::UnknownFamily { attr_type, family }),
    };
    if value.len() != expected {
        return Err(ParseError::AddressLength {
            attr_type,
            len: value.len(),
            expected,
        });
    }
    // Cookie ‖ transaction id: the XOR mask of the port (first 2 bytes) and address.
    let mut mask = [0u8; 16];
    if let Some(txn) = xor {
        mask[..4].copy_from_slice(&COOKIE_BYTES);
        mask[4..].copy_from_slice(&txn.0);
    }
    let port = u16::from_be_bytes([value[2] ^ mask[0], value[3] ^ mask[1]]);
    let mut raw = [0u8; 16];
    for (i, b) in value[4..].iter().enumerate() {
        raw[i] = b ^ mask[i];
    }
    let ip = if family == FAMILY_IPV4 {
        IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(raw))
    };
    Ok(SocketAddr::new(ip, port))
}

/// The transaction id of a binding request (its attributes, if any, are ignored). For the
/// responder side (the lab's STUN server).
///
/// # Errors
///
/// A [`ParseError`] when `bytes` is not a binding request.
pub fn parse_binding_request(bytes: &[u8]) -> Result<TransactionId, ParseError> {
    split_header(bytes, BINDING_REQUEST).map(|(txn, _)| txn)
}

/// A binding success response to `txn` carrying `mapped` as `XOR-MAPPED-ADDRESS` (what a STUN
/// server sends back; the lab's STUN server uses it).
pub fn binding_response(txn: TransactionId, mapped: SocketAddr) -> Vec<u8> {
    let (family, addr): (u8, Vec<u8>) = match mapped.ip() {
        IpAddr::V4(v4) => (FAMILY_IPV4, v4.octets().to_vec()),
        IpAddr::V6(v6) => (FAMILY_IPV6, v6.octets().to_vec()),
    };
    let mut mask = [0u8; 16];
    mask[..4].copy_from_slice(&COOKIE_BYTES);
    mask[4..].copy_from_slice(&txn.0);
    let value_len = 4 + addr.len();
    // 8 or 20: always fits a u16.
    let attrs_len = 4 + value_len as u16;
    let mut out = header(BINDING_SUCCESS, attrs_len, txn).to_vec();
    out.extend_from_slice(&ATTR_XOR_MAPPED_ADDRESS.to_be_bytes());
    out.extend_from_slice(&(value_len as u16).to_be_bytes());
    out.push(0);
    out.push(family);
    let port = mapped.port().to_be_bytes();
    out.extend_from_slice(&[port[0] ^ mask[0], port[1] ^ mask[1]]);
    out.extend(addr.iter().zip(mask).map(|(b, m)| b ^ m));
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    const TXN: TransactionId = TransactionId([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    const TXN_V6: TransactionId = TransactionId([
        0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66,
    ]);

    #[test]
    fn binding_request_matches_the_vector() {
        // crypto-and-wire §21.2
        assert_eq!(
            binding_request(TXN).to_vec(),
            hex("000100002112a4420102030405060708090a0b0c")
        );
        assert_eq!(parse_binding_request(&binding_request(TXN)), Ok(TXN));
    }

    #[test]
    fn responses_from_the_vectors() {
        // (case, hex, transaction id, expected)
        let table: &[(&str, &str, TransactionId, Result<&str, ParseError>)] = &[
            (
                "XOR-MAPPED IPv4",
                "0101000c2112a4420102030405060708090a0b0c002000080001eb7ee721c043",
                TXN,
                Ok("198.51.100.1:51820"),
            ),
            (
                "XOR-MAPPED IPv6",
                "010100182112a442aabbccddeeff112233445566002000140002eb7e0113a9faaabbccddeeff112233445567",
                TXN_V6,
                Ok("[2001:db8::1]:51820"),
            ),
            (
                "MAPPED IPv4",
                "0101000c2112a4420102030405060708090a0b0c0001000800013039cb007105",
                TXN,
                Ok("203.0.113.5:12345"),
            ),
            (
                "too short",
                "0101000c2112a442",
                TXN,
                Err(ParseError::TooShort { len: 8 }),
            ),
            (
                "error response type",
                "011100002112a4420102030405060708090a0b0c",
                TXN,
                Err(ParseError::WrongType {
                    expected: 0x0101,
                    got: 0x0111,
                }),
            ),
            (
                "no attributes",
                "010100002112a4420102030405060708090a0b0c",
                TXN,
                Err(ParseError::NoAddress),
            ),
            (
                "other transaction",
                "0101000c2112a4420102030405060708090a0b0c002000080001eb7ee721c043",
                TXN_V6,
                Err(ParseError::WrongTransaction),
            ),
            (
                "no magic cookie (RFC 3489)",
                "0101000c000000000102030405060708090a0b0c0001000800013039cb007105",
                TXN,
                Err(ParseError::BadCookie(0)),
            ),
            (
                "declared length beyond the datagram",
                "010100102112a4420102030405060708090a0b0c0001000800013039cb007105",
                TXN,
                Err(ParseError::LengthBeyondDatagram {
                    declared: 16,
                    available: 12,
                }),
            ),
            (
                "attribute longer than the message",
                "0101000c2112a4420102030405060708090a0b0c0001000900013039cb007105",
                TXN,
                Err(ParseError::AttributeTruncated {
                    attr_type: 1,
                    len: 9,
                    remaining: 12,
                }),
            ),
            (
                "attribute header cut",
                "010100022112a4420102030405060708090a0b0c0001",
                TXN,
                Err(ParseError::AttributeTruncated {
                    attr_type: 0,
                    len: 0,
                    remaining: 2,
                }),
            ),
            (
                "unknown family",
                "0101000c2112a4420102030405060708090a0b0c0001000800033039cb007105",
                TXN,
                Err(ParseError::UnknownFamily {
                    attr_type: 1,
                    family: 3,
                }),
            ),
            (
                "IPv6 family in an IPv4-sized value",
                "0101000c2112a4420102030405060708090a0b0c0020000800023039cb007105",
                TXN,
                Err(ParseError::AddressLength {
                    attr_type: 0x20,
                    len: 8,
                    expected: 20,
                }),
            ),
            (
                "empty address value",
                "010100042112a4420102030405060708090a0b0c00010000",
                TXN,
                Err(ParseError::AddressLength {
                    attr_type: 1,
                    len: 0,
                    expected: 8,
                }),
            ),
            (
                // SOFTWARE "ab" (padded to 4), then MAPPED: the walk honours padding.
                "unknown attribute with padding first",
                "010100142112a4420102030405060708090a0b0c80220002616200000001000800013039cb007105",
                TXN,
                Ok("203.0.113.5:12345"),
            ),
            (
                // MAPPED first, then XOR-MAPPED: the XOR one wins.
                "XOR-MAPPED wins over an earlier MAPPED",
                "010100182112a4420102030405060708090a0b0c0001000800013039cb007105002000080001eb7ee721c043",
                TXN,
                Ok("198.51.100.1:51820"),
            ),
            (
                // Bytes after the declared length are not part of the message.
                "trailing bytes ignored",
                "0101000c2112a4420102030405060708090a0b0c0001000800013039cb007105ffffffff",
                TXN,
                Ok("203.0.113.5:12345"),
            ),
        ];
        for (case, bytes, txn, want) in table {
            let got = parse_binding_response(&hex(bytes), *txn);
            let want = want.clone().map(|a| a.parse::<SocketAddr>().unwrap());
            assert_eq!(got, want, "{case}");
        }
    }

    #[test]
    fn a_response_is_not_a_request_and_vice_versa() {
        assert_eq!(
            parse_binding_request(&binding_response(TXN, "203.0.113.1:1".parse().unwrap())),
            Err(ParseError::WrongType {
                expected: 0x0001,
                got: 0x0101
            })
        );
        assert!(matches!(
            parse_binding_response(&binding_request(TXN), TXN),
            Err(ParseError::WrongType { .. })
        ));
    }

    #[test]
    fn the_xor_port_of_51820_is_0xeb7e() {
        // Go's test comment says 0xEB66; the arithmetic says 0xEB7E (crypto-and-wire §20).
        let bytes = binding_response(TXN, "198.51.100.1:51820".parse().unwrap());
        assert_eq!(&bytes[26..28], &[0xeb, 0x7e]);
        assert_eq!(
            bytes,
            hex("0101000c2112a4420102030405060708090a0b0c002000080001eb7ee721c043")
        );
    }

    fn any_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
            (any::<[u8; 16]>(), any::<u16>())
                .prop_map(|(ip, port)| SocketAddr::from((Ipv6Addr::from(ip), port))),
        ]
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), txn in any::<[u8; 12]>()) {
            let _ = parse_binding_response(&bytes, TransactionId(txn));
            let _ = parse_binding_request(&bytes);
        }

        #[test]
        fn mangled_responses_never_panic(
            txn in any::<[u8; 12]>(),
            addr in any_addr(),
            cut in 0usize..48,
            flip in 0usize..48,
            with in any::<u8>(),
        ) {
            let txn = TransactionId(txn);
            let mut bytes = binding_response(txn, addr);
            if let Some(b) = bytes.get_mut(flip) {
                *b = with;
            }
            bytes.truncate(cut);
            let _ = parse_binding_response(&bytes, txn);
        }

        #[test]
        fn responses_round_trip(txn in any::<[u8; 12]>(), addr in any_addr()) {
            let txn = TransactionId(txn);
            prop_assert_eq!(parse_binding_response(&binding_response(txn, addr), txn), Ok(addr));
            prop_assert_eq!(parse_binding_request(&binding_request(txn)), Ok(txn));
        }
    }
}
