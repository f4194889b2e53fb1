//! Per-node mesh addresses (crypto-and-wire §3). The public key enters as its base64 *text*,
//! never decoded, so any string works as a key here (the compat vectors rely on that).

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::Ipv4Net;

use super::DerivedKeys;
use super::derive::sha256;
use crate::config::{MeshSecret, MeshSubnet};

/// The default (legacy) mesh subnet `10.<mesh_subnet[0]>.0.0/16`.
pub fn legacy_subnet(keys: &DerivedKeys) -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(10, keys.mesh_subnet[0], 0, 0), 16)
        .unwrap_or_else(|_| unreachable!("/16 is a valid IPv4 prefix length"))
}

/// The node's mesh IPv4: legacy derivation without a custom subnet, else the host number
/// derivation inside `custom`. Never a network or broadcast address.
pub fn mesh_ipv4(
    keys: &DerivedKeys,
    secret: &MeshSecret,
    pubkey: &str,
    custom: Option<&MeshSubnet>,
) -> Ipv4Addr {
    let h = sha256(&[pubkey.as_bytes(), secret.as_bytes()]);
    match custom {
        Some(subnet) => host_in_subnet(subnet, &h),
        None => {
            let clamp = |b: u8| match b {
                0 => 1,
                255 => 254,
                b => b,
            };
            Ipv4Addr::new(
                10,
                keys.mesh_subnet[0],
                h[0] ^ keys.mesh_subnet[1],
                clamp(h[1]),
            )
        }
    }
}

/// The collision re-derivation with `nonce` (crypto-and-wire §3.4). The legacy variant keeps
/// Go's arithmetic exactly (no XOR, no per-octet clamp), so its last octet may be 0 or 255.
pub fn mesh_ipv4_with_nonce(
    keys: &DerivedKeys,
    secret: &MeshSecret,
    pubkey: &str,
    custom: Option<&MeshSubnet>,
    nonce: u32,
) -> Ipv4Addr {
    let input = format!(
        "{}:{}|{}:{}|nonce={}",
        pubkey.len(),
        pubkey,
        secret.as_bytes().len(),
        secret.expose(),
        nonce
    );
    let h = sha256(&[input.as_bytes()]);
    match custom {
        Some(subnet) => host_in_subnet(subnet, &h),
        None => {
            let s = match u16::from_be_bytes([h[0], h[1]]) {
                0 => 1,
                u16::MAX => u16::MAX - 1,
                s => s,
            };
            let [hi, lo] = s.to_be_bytes();
            Ipv4Addr::new(10, keys.mesh_subnet[0], hi, lo)
        }
    }
}

fn host_in_subnet(subnet: &MeshSubnet, h: &[u8; 32]) -> Ipv4Addr {
    let mut first8 = [0u8; 8];
    first8.copy_from_slice(&h[..8]);
    let host = u64::from_be_bytes(first8) % subnet.max_hosts() + 1;
    // host < 2^30, and network + host stays inside the subnet, so this neither truncates nor
    // overflows.
    Ipv4Addr::from(u32::from(subnet.network()) + host as u32)
}

/// The node's mesh IPv6: the mesh /64 prefix plus an interface id from
/// `SHA-256(pubkey || "|" || secret || "|ipv6")` with the U/L bit set and the group bit clear.
pub fn mesh_ipv6(keys: &DerivedKeys, secret: &MeshSecret, pubkey: &str) -> Ipv6Addr {
    let h = sha256(&[pubkey.as_bytes(), b"|", secret.as_bytes(), b"|ipv6"]);
    let mut iid = [0u8; 8];
    iid.copy_from_slice(&h[..8]);
    iid[0] = (iid[0] | 0x02) & 0xfe;
    if iid == [0; 8] {
        iid[7] = 1;
    }
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&keys.mesh_prefix_v6);
    bytes[8..].copy_from_slice(&iid);
    Ipv6Addr::from(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SecretOrigin;

    const P: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

    fn setup(s: &str) -> (DerivedKeys, MeshSecret) {
        let secret = MeshSecret::parse(s, SecretOrigin::Literal).unwrap();
        (DerivedKeys::derive(&secret), secret)
    }

    #[test]
    fn legacy_values_and_clamps() {
        let (k, s) = setup("test-secret-0123456789");
        let ip = |pk: &str| mesh_ipv4(&k, &s, pk, None).to_string();
        let nonce = |pk: &str, n| mesh_ipv4_with_nonce(&k, &s, pk, None, n).to_string();
        assert_eq!(ip(P), "10.78.54.191");
        assert_eq!(ip("pubkey-95"), "10.78.67.254");
        assert_eq!(ip("pubkey-964"), "10.78.108.1");
        assert_eq!(nonce(P, 1), "10.78.50.226");
        assert_eq!(nonce(P, 2), "10.78.120.47");
        assert_eq!(nonce("pubkey-38236", 1), "10.78.0.1");
        assert_eq!(nonce("pubkey-69976", 1), "10.78.255.254");
        assert_eq!(legacy_subnet(&k).to_string(), "10.78.0.0/16");
        assert_eq!(
            mesh_ipv6(&k, &s, P).to_string(),
            "fd9d:af5d:d5d0:b3c7:f23d:e330:c650:290"
        );
    }

    #[test]
    fn custom_subnet_values() {
        let (k, s) = setup("test-secret-0123456789");
        let cases = [
            ("192.168.100.0/24", "192.168.100.84", "192.168.100.136"),
            ("10.42.0.0/16", "10.42.63.4", "10.42.196.146"),
            ("172.16.5.0/28", "172.16.5.4", "172.16.5.6"),
            ("10.0.0.0/30", "10.0.0.2", "10.0.0.2"),
        ];
        for (cidr, base, n1) in cases {
            let sub: MeshSubnet = cidr.parse().unwrap();
            assert_eq!(mesh_ipv4(&k, &s, P, Some(&sub)).to_string(), base, "{cidr}");
            assert_eq!(
                mesh_ipv4_with_nonce(&k, &s, P, Some(&sub), 1).to_string(),
                n1,
                "{cidr}"
            );
        }
    }
}
