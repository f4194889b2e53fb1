//! Keys and identifiers derived from the secret (crypto-and-wire §2).
//!
//! Every HKDF value is HKDF-SHA256 with the secret as IKM, no salt (32 zero bytes), the listed
//! `info`, and the first `n` bytes of the expansion.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

use hkdf::Hkdf;
use sha2::{Digest, Sha256};

use crate::config::MeshSecret;

/// First gossip port; the derived port lies in `51821..=52820`.
const GOSSIP_PORT_BASE: u16 = 51821;
/// UDP port of LAN multicast discovery.
pub const LAN_MULTICAST_PORT: u16 = 51830;
/// Offset of the TCP mesh-probe port from the gossip port.
pub const PROBE_PORT_OFFSET: u16 = 2000;
/// Offset of the DHT port from the gossip port.
pub const DHT_PORT_OFFSET: u16 = 1;

/// All values a node derives from the mesh secret. `Debug` hides the key material.
#[derive(Clone, PartialEq, Eq)]
pub struct DerivedKeys {
    /// `SHA-256(secret)[0..20]`: static DHT infohash and the mesh's public identifier.
    pub network_id: [u8; 20],
    /// AES-256-GCM key of every discovery envelope.
    pub gossip_key: [u8; 32],
    /// Legacy IPv4 subnet bytes: the mesh is `10.<b0>.0.0/16`, `b1` scrambles the third octet.
    pub mesh_subnet: [u8; 2],
    /// ULA /64 prefix of mesh IPv6 addresses (`0xfd` then 7 derived bytes).
    pub mesh_prefix_v6: [u8; 8],
    /// LAN multicast group id: group `239.192.<id0>.<id1>`.
    pub multicast_id: [u8; 4],
    /// WireGuard preshared key used with every peer.
    pub psk: [u8; 32],
    /// UDP port of peer exchange and gossip, the same on every node of the mesh.
    pub gossip_port: u16,
    /// `SHA-256(secret || "rv")[0..8]`.
    pub rendezvous_id: [u8; 8],
    /// Key of membership tokens and rotation signatures.
    pub membership_key: [u8; 32],
    /// Seed of privacy-mode epoch relay selection.
    pub epoch_seed: [u8; 32],
}

fn hkdf<const N: usize>(secret: &[u8], info: &str) -> [u8; N] {
    let mut out = [0u8; N];
    // N is at most 32 here, far below HKDF-SHA256's 8160-byte limit, so expand cannot fail.
    Hkdf::<Sha256>::new(None, secret)
        .expand(info.as_bytes(), &mut out)
        .unwrap_or_else(|_| unreachable!("HKDF output of {N} bytes is within the limit"));
    out
}

/// SHA-256 of the concatenation of `parts`.
pub(crate) fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

impl DerivedKeys {
    /// Derives every value from a validated secret.
    pub fn derive(secret: &MeshSecret) -> Self {
        let s = secret.as_bytes();
        let digest = sha256(&[s]);
        let mut network_id = [0u8; 20];
        network_id.copy_from_slice(&digest[..20]);

        let prefix7: [u8; 7] = hkdf(s, "wgmesh-ipv6-prefix-v1");
        let mut mesh_prefix_v6 = [0u8; 8];
        mesh_prefix_v6[0] = 0xfd;
        mesh_prefix_v6[1..].copy_from_slice(&prefix7);

        let port_bytes: [u8; 2] = hkdf(s, "wgmesh-gossip-port-v1");
        let gossip_port = GOSSIP_PORT_BASE + u16::from_be_bytes(port_bytes) % 1000;

        let rv = sha256(&[s, b"rv"]);
        let mut rendezvous_id = [0u8; 8];
        rendezvous_id.copy_from_slice(&rv[..8]);

        Self {
            network_id,
            gossip_key: hkdf(s, "wgmesh-gossip-v1"),
            mesh_subnet: hkdf(s, "wgmesh-subnet-v1"),
            mesh_prefix_v6,
            multicast_id: hkdf(s, "wgmesh-mcast-v1"),
            psk: hkdf(s, "wgmesh-wg-psk-v1"),
            gossip_port,
            rendezvous_id,
            membership_key: hkdf(s, "wgmesh-membership-v1"),
            epoch_seed: hkdf(s, "wgmesh-epoch-v1"),
        }
    }

    /// Short mesh id: hex of the first 6 network-id bytes (Go `MeshID`).
    pub fn mesh_id(&self) -> String {
        hex(&self.network_id[..6])
    }

    /// The network id as Go's `status` prints it: hex of the first 8 bytes.
    pub fn network_id_short(&self) -> String {
        hex(&self.network_id[..8])
    }

    /// The LAN multicast group and port.
    pub fn lan_multicast(&self) -> SocketAddrV4 {
        SocketAddrV4::new(
            Ipv4Addr::new(239, 192, self.multicast_id[0], self.multicast_id[1]),
            LAN_MULTICAST_PORT,
        )
    }

    /// The IPv6 prefix as Go prints it: four uncompressed, zero-padded groups then `::/64`.
    pub fn ipv6_prefix_text(&self) -> String {
        let p = &self.mesh_prefix_v6;
        format!(
            "{:02x}{:02x}:{:02x}{:02x}:{:02x}{:02x}:{:02x}{:02x}::/64",
            p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]
        )
    }

    /// TCP port of the mesh health probe.
    pub fn probe_port(&self) -> u16 {
        self.gossip_port + PROBE_PORT_OFFSET
    }

    /// Preferred UDP port of the DHT node.
    pub fn dht_port(&self) -> u16 {
        self.gossip_port + DHT_PORT_OFFSET
    }
}

impl fmt::Debug for DerivedKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DerivedKeys")
            .field("network_id", &hex(&self.network_id))
            .field("mesh_subnet", &self.mesh_subnet)
            .field("gossip_port", &self.gossip_port)
            .finish_non_exhaustive()
    }
}

/// The DHT infohash for the hour containing `unix_seconds`:
/// `SHA-256("<secret>||<floor(t/3600)>")[0..20]` (crypto-and-wire §2.1). Negative times use
/// floor division, as Go's would for the hour epoch of a pre-1970 clock.
pub fn hourly_network_id(secret: &MeshSecret, unix_seconds: i64) -> [u8; 20] {
    let hour = unix_seconds.div_euclid(3600);
    let digest = sha256(&[secret.as_bytes(), b"||", hour.to_string().as_bytes()]);
    let mut id = [0u8; 20];
    id.copy_from_slice(&digest[..20]);
    id
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SecretOrigin;

    fn secret(s: &str) -> MeshSecret {
        MeshSecret::parse(s, SecretOrigin::Literal).unwrap()
    }

    #[test]
    fn reference_values_for_the_documented_secret() {
        let k = DerivedKeys::derive(&secret("test-secret-0123456789"));
        assert_eq!(k.network_id_short(), "b6ed1c46b1404bc0");
        assert_eq!(k.mesh_id(), "b6ed1c46b140");
        assert_eq!(k.ipv6_prefix_text(), "fd9d:af5d:d5d0:b3c7::/64");
        assert_eq!(k.lan_multicast().to_string(), "239.192.195.219:51830");
        assert_eq!(
            (k.gossip_port, k.dht_port(), k.probe_port()),
            (52190, 52191, 54190)
        );
        let demo = DerivedKeys::derive(&secret("wgmesh-demo-secret-long-enough"));
        // Go zero-pads every group: "042a", not "42a".
        assert_eq!(demo.ipv6_prefix_text(), "fd74:042a:933a:8b2d::/64");
    }

    #[test]
    fn hourly_ids_change_on_the_hour_only() {
        let s = secret("test-secret-0123456789");
        let h = |t| hex(&hourly_network_id(&s, t));
        assert_eq!(h(1_800_000_000), "bfb6556de2f5f9242019e2905a55dab9c784b176");
        assert_eq!(h(1_800_003_599), h(1_800_000_000));
        assert_eq!(h(1_799_996_400), "7aa5e1b3be75a7e5420bdbb025d12ac7d72dfe29");
        assert_eq!(h(1_800_003_600), "88e32be9901e50af1930985a61dc538f4076a1ba");
    }

    #[test]
    fn debug_hides_keys() {
        let k = DerivedKeys::derive(&secret("test-secret-0123456789"));
        let text = format!("{k:?}");
        assert!(!text.contains(&hex(&k.gossip_key)));
        assert!(!text.contains(&hex(&k.psk)));
    }
}
