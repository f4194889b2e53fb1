//! The custom mesh subnet (`--mesh-subnet CIDR`): IPv4 only, at least two host bits, host bits
//! masked off as Go's `net.ParseCIDR` does (daemon-behaviour §1.1, crypto-and-wire §3.3).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net};

/// A validated custom mesh subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MeshSubnet(Ipv4Net);

/// Why a subnet was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SubnetError {
    /// Not CIDR text at all.
    #[error("invalid mesh subnet {0:?}: expected an IPv4 CIDR such as 10.200.0.0/16")]
    NotCidr(String),
    /// An IPv6 CIDR.
    #[error("mesh subnet must be an IPv4 CIDR, got {0:?}")]
    NotIpv4(String),
    /// /31 or /32.
    #[error("mesh subnet /{0} is too small (need at least /30 for 2 host addresses)")]
    TooSmall(u8),
}

impl MeshSubnet {
    /// The network (host bits zero).
    pub fn network(&self) -> Ipv4Addr {
        self.0.network()
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.0.prefix_len()
    }

    /// Number of usable host addresses (all but network and broadcast).
    pub fn max_hosts(&self) -> u64 {
        (1u64 << (32 - u32::from(self.prefix_len()))) - 2
    }

    /// Whether `ip` lies inside the subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.0.contains(&ip)
    }

    /// The subnet as an [`Ipv4Net`].
    pub fn as_net(&self) -> Ipv4Net {
        self.0
    }
}

impl FromStr for MeshSubnet {
    type Err = SubnetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let net: IpNet = s
            .trim()
            .parse()
            .map_err(|_| SubnetError::NotCidr(s.to_owned()))?;
        let IpNet::V4(v4) = net else {
            return Err(SubnetError::NotIpv4(s.to_owned()));
        };
        if v4.prefix_len() > 30 {
            return Err(SubnetError::TooSmall(v4.prefix_len()));
        }
        Ok(Self(v4.trunc()))
    }
}

impl fmt::Display for MeshSubnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_table() {
        let ok = [
            ("192.168.100.0/24", "192.168.100.0/24", 254),
            ("192.168.100.5/24", "192.168.100.0/24", 254),
            ("10.0.0.0/30", "10.0.0.0/30", 2),
            ("100.64.0.0/10", "100.64.0.0/10", (1 << 22) - 2),
        ];
        for (input, shown, hosts) in ok {
            let s: MeshSubnet = input.parse().unwrap();
            assert_eq!(s.to_string(), shown);
            assert_eq!(s.max_hosts(), hosts);
        }
        assert_eq!(
            "10.0.0.0/31".parse::<MeshSubnet>(),
            Err(SubnetError::TooSmall(31))
        );
        assert_eq!(
            "10.0.0.0/32".parse::<MeshSubnet>(),
            Err(SubnetError::TooSmall(32))
        );
        for v6 in ["fd00::/64", "2001:db8::/32", "::1/128"] {
            assert!(matches!(
                v6.parse::<MeshSubnet>(),
                Err(SubnetError::NotIpv4(_))
            ));
        }
        for junk in ["not-a-cidr", "192.168.1.1", "10.0.0.0/33", ""] {
            assert!(
                matches!(junk.parse::<MeshSubnet>(), Err(SubnetError::NotCidr(_))),
                "{junk}"
            );
        }
    }
}
