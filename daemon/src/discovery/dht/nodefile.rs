//! The DHT node file: where the routing table is kept between runs for a warm start
//! (crypto-and-wire §12). Pure: names and bytes; reading and writing are the task's.
//!
//! `<state-dir>/<iface>-<hex NetworkID[0..8]>-dht.nodes` holds concatenated 38-byte records: the
//! 20-byte node id, the 16-byte IP (IPv4 as `::ffff:a.b.c.d`) and the big-endian port, the
//! format of Go wgmesh's DHT library. The file is local only; it is private (0600) because it
//! says which DHT nodes this host talked to.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use crate::crypto::derive::hex;

/// Bytes per record.
pub const RECORD_LEN: usize = 38;
/// Most records read or written (a routing table holds a few hundred nodes at most).
pub const MAX_NODES: usize = 512;
/// Mode of the node file.
pub const FILE_MODE: u32 = 0o600;

/// One DHT node: its id and UDP address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NodeRecord {
    /// The node's 20-byte id.
    pub id: [u8; 20],
    /// Its UDP address (IPv4 addresses as `V4`).
    pub addr: SocketAddr,
}

/// Why a node file was not usable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NodeFileError {
    /// Its length is not a whole number of records.
    #[error("{len} bytes is not a whole number of {RECORD_LEN}-byte node records")]
    Truncated {
        /// The file's length.
        len: usize,
    },
}

/// The node file's name for interface `iface` of the mesh with network id `network_id`.
pub fn file_name(iface: &str, network_id: &[u8; 20]) -> String {
    format!("{iface}-{}-dht.nodes", hex(&network_id[..8]))
}

/// The file's bytes for `nodes` (at most [`MAX_NODES`] of them).
pub fn encode(nodes: &[NodeRecord]) -> Vec<u8> {
    let nodes = &nodes[..nodes.len().min(MAX_NODES)];
    let mut out = Vec::with_capacity(nodes.len() * RECORD_LEN);
    for node in nodes {
        let ip: Ipv6Addr = match node.addr.ip() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        out.extend_from_slice(&node.id);
        out.extend_from_slice(&ip.octets());
        out.extend_from_slice(&node.addr.port().to_be_bytes());
    }
    out
}

/// The records of a node file, in order: IPv4-mapped addresses become IPv4, records with port 0
/// or an unspecified address are left out, and at most [`MAX_NODES`] are read.
///
/// # Errors
///
/// [`NodeFileError::Truncated`] when the length is not a multiple of [`RECORD_LEN`].
pub fn decode(bytes: &[u8]) -> Result<Vec<NodeRecord>, NodeFileError> {
    if !bytes.len().is_multiple_of(RECORD_LEN) {
        return Err(NodeFileError::Truncated { len: bytes.len() });
    }
    let records = bytes
        .chunks_exact(RECORD_LEN)
        .filter_map(|r| {
            let mut id = [0u8; 20];
            id.copy_from_slice(&r[..20]);
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&r[20..36]);
            let ip = Ipv6Addr::from(ip);
            let ip = ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4);
            let port = u16::from_be_bytes([r[36], r[37]]);
            (port != 0 && !ip.is_unspecified()).then_some(NodeRecord {
                id,
                addr: SocketAddr::new(ip, port),
            })
        })
        .take(MAX_NODES)
        .collect();
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{MeshSecret, SecretOrigin};
    use crate::crypto::DerivedKeys;

    fn keys(secret: &str) -> DerivedKeys {
        DerivedKeys::derive(&MeshSecret::parse(secret, SecretOrigin::Literal).unwrap())
    }

    #[test]
    fn file_name_is_per_interface_and_mesh() {
        #[rustfmt::skip]
        let table = [
            ("wg0", "test-secret-0123456789", "wg0-b6ed1c46b1404bc0-dht.nodes"),
            ("wgmesh1", "test-secret-0123456789", "wgmesh1-b6ed1c46b1404bc0-dht.nodes"),
            ("wg0", "wgmesh-demo-secret-long-enough", "wg0-6a6f22678c326792-dht.nodes"),
        ];
        for (iface, secret, want) in table {
            assert_eq!(
                file_name(iface, &keys(secret).network_id),
                want,
                "{iface} {secret}"
            );
        }
    }

    fn rec(id: u8, addr: &str) -> NodeRecord {
        NodeRecord {
            id: [id; 20],
            addr: addr.parse().unwrap(),
        }
    }

    #[test]
    fn records_have_the_library_layout() {
        let bytes = encode(&[rec(0xab, "192.0.2.1:6881"), rec(1, "[2001:db8::1]:25401")]);
        assert_eq!(bytes.len(), 2 * RECORD_LEN);
        #[rustfmt::skip]
        let v4_record: Vec<u8> = [
            vec![0xab; 20],
            vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1],
            vec![0x1a, 0xe1],
        ].concat();
        assert_eq!(bytes[..RECORD_LEN], v4_record[..]);
        assert_eq!(&bytes[RECORD_LEN + 20..RECORD_LEN + 22], &[0x20, 0x01]);
        assert_eq!(&bytes[2 * RECORD_LEN - 2..], &25401u16.to_be_bytes());
    }

    #[test]
    fn decode_round_trips_and_refuses_partial_records() {
        let nodes = vec![
            rec(1, "192.0.2.1:6881"),
            rec(2, "[2001:db8::1]:25401"),
            rec(3, "198.51.100.7:1"),
        ];
        let bytes = encode(&nodes);
        #[rustfmt::skip]
        type Row = (&'static str, Vec<u8>, Result<Vec<NodeRecord>, NodeFileError>);
        let table: Vec<Row> = vec![
            ("empty file", vec![], Ok(vec![])),
            ("round trip", bytes.clone(), Ok(nodes.clone())),
            (
                "one byte short",
                bytes[..bytes.len() - 1].to_vec(),
                Err(NodeFileError::Truncated {
                    len: 3 * RECORD_LEN - 1,
                }),
            ),
            (
                "one byte more",
                [bytes.clone(), vec![0]].concat(),
                Err(NodeFileError::Truncated {
                    len: 3 * RECORD_LEN + 1,
                }),
            ),
            (
                "port 0 and unspecified left out",
                encode(&[
                    rec(4, "192.0.2.1:0"),
                    rec(5, "0.0.0.0:6881"),
                    rec(6, "[::]:1"),
                    nodes[0],
                ]),
                Ok(vec![nodes[0]]),
            ),
        ];
        for (case, input, want) in table {
            assert_eq!(decode(&input), want, "{case}");
        }
    }

    #[test]
    fn at_most_max_nodes_are_written_or_read() {
        let many: Vec<NodeRecord> = (0..MAX_NODES as u32 + 10)
            .map(|i| NodeRecord {
                id: [0; 20],
                addr: SocketAddr::from((std::net::Ipv4Addr::from(0x0a00_0001 + i), 6881)),
            })
            .collect();
        assert_eq!(encode(&many).len(), MAX_NODES * RECORD_LEN);
        let mut bytes = encode(&many[..MAX_NODES]);
        bytes.extend(encode(&many[MAX_NODES..]));
        assert_eq!(decode(&bytes).unwrap(), many[..MAX_NODES]);
    }
}
