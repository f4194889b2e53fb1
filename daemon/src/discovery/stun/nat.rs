//! The NAT type from what two STUN servers saw (crypto-and-wire §15.2, Go `DetectNATType`).
//! Pure.
//!
//! Both servers are asked from **one** socket, so a NAT that keeps one public mapping per
//! socket (cone) shows both the same address and port, while one that maps per destination
//! (symmetric) shows different ports (or addresses). Hole punching works with the first kind.

use std::net::SocketAddr;

use crate::node::NatType;

/// The result of a NAT detection: the mapped address to use and the NAT type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatDetection {
    /// The public address the (first answering) server saw.
    pub mapped: SocketAddr,
    /// What the two answers say about the NAT.
    pub nat: NatType,
}

/// The NAT type from the mapped addresses server 1 and server 2 reported (`None`: no usable
/// answer). Both silent: `None`. One silent: `unknown`, with the other's address. The same IP
/// and port from both: `cone`; anything else: `symmetric`. The address returned is server 1's
/// when it answered.
pub fn detect_nat(first: Option<SocketAddr>, second: Option<SocketAddr>) -> Option<NatDetection> {
    let (mapped, nat) = match (first, second) {
        (None, None) => return None,
        (Some(only), None) | (None, Some(only)) => (only, NatType::Unknown),
        (Some(a), Some(b)) if a == b => (a, NatType::Cone),
        (Some(a), Some(_)) => (a, NatType::Symmetric),
    };
    Some(NatDetection { mapped, nat })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detect_nat_table() {
        // crypto-and-wire §21.1 `DetectNATType`, plus the address returned.
        // (case, server 1, server 2, expected (address, type))
        type Row = (
            &'static str,
            Option<&'static str>,
            Option<&'static str>,
            Option<(&'static str, NatType)>,
        );
        let table: &[Row] = &[
            (
                "same address and port",
                Some("203.0.113.1:51820"),
                Some("203.0.113.1:51820"),
                Some(("203.0.113.1:51820", NatType::Cone)),
            ),
            (
                "different ports",
                Some("203.0.113.1:51820"),
                Some("203.0.113.1:51821"),
                Some(("203.0.113.1:51820", NatType::Symmetric)),
            ),
            (
                "different addresses",
                Some("203.0.113.1:51820"),
                Some("203.0.113.2:51820"),
                Some(("203.0.113.1:51820", NatType::Symmetric)),
            ),
            (
                "server 2 silent",
                Some("203.0.113.1:51820"),
                None,
                Some(("203.0.113.1:51820", NatType::Unknown)),
            ),
            (
                "server 1 silent",
                None,
                Some("203.0.113.9:4000"),
                Some(("203.0.113.9:4000", NatType::Unknown)),
            ),
            ("both silent", None, None, None),
        ];
        let addr = |s: &Option<&str>| s.map(|s| s.parse::<SocketAddr>().unwrap());
        for (case, first, second, want) in table {
            let want = want.map(|(a, nat)| NatDetection {
                mapped: a.parse().unwrap(),
                nat,
            });
            assert_eq!(detect_nat(addr(first), addr(second)), want, "{case}");
        }
    }
}
