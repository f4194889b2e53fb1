//! Bit-compatibility with Go wgmesh: every value in the Go-produced vectors and the envelope
//! fixture (copied from the Go repository into `tests/data/compat`) must be reproduced exactly.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::Value;
use wgmeshd::config::{MeshSecret, MeshSubnet, SecretOrigin};
use wgmeshd::crypto::derive::hex;
use wgmeshd::crypto::{
    DerivedKeys, Envelope, MessageType, hourly_network_id, mesh_ipv4, mesh_ipv4_with_nonce,
    mesh_ipv6,
};
use wgmeshd::wire::{PeerAnnouncement, to_go_json};

fn data(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/compat")
        .join(rel)
}

fn json(rel: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(data(rel)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn secret(v: &Value) -> MeshSecret {
    MeshSecret::parse(v["secret"].as_str().unwrap(), SecretOrigin::Literal).unwrap()
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap()
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

#[test]
fn derive_keys_vectors() {
    let vectors = json("vectors/derive-keys.json");
    assert_eq!(vectors.len(), 3);
    for v in &vectors {
        let secret = secret(v);
        let k = DerivedKeys::derive(&secret);
        let ctx = s(&v["secret"]);
        assert_eq!(hex(&k.network_id), s(&v["network_id_hex"]), "{ctx}");
        assert_eq!(hex(&k.gossip_key), s(&v["gossip_key_hex"]), "{ctx}");
        assert_eq!(hex(&k.mesh_subnet), s(&v["mesh_subnet_hex"]), "{ctx}");
        assert_eq!(hex(&k.mesh_prefix_v6), s(&v["mesh_prefix_v6_hex"]), "{ctx}");
        assert_eq!(hex(&k.multicast_id), s(&v["multicast_id_hex"]), "{ctx}");
        assert_eq!(
            base64::engine::general_purpose::STANDARD.encode(k.psk),
            s(&v["psk_base64"]),
            "{ctx}"
        );
        assert_eq!(
            u64::from(k.gossip_port),
            v["gossip_port"].as_u64().unwrap(),
            "{ctx}"
        );
        assert_eq!(hex(&k.rendezvous_id), s(&v["rendezvous_id_hex"]), "{ctx}");
        assert_eq!(hex(&k.membership_key), s(&v["membership_key_hex"]), "{ctx}");
        assert_eq!(hex(&k.epoch_seed), s(&v["epoch_seed_hex"]), "{ctx}");
        let hourly = v["hourly_network_ids"].as_array().unwrap();
        assert_eq!(hourly.len(), 3);
        for h in hourly {
            let t: i64 = s(&h["unix_time"]).parse().unwrap();
            assert_eq!(
                hex(&hourly_network_id(&secret, t)),
                s(&h["network_id_hex"]),
                "{ctx} t={t}"
            );
        }
    }
}

#[test]
fn mesh_ip_vectors() {
    let vectors = json("vectors/mesh-ips.json");
    assert_eq!(vectors.len(), 12);
    let mut checked = 0;
    for v in &vectors {
        let secret = secret(v);
        let k = DerivedKeys::derive(&secret);
        let pk = s(&v["wg_pubkey"]);
        assert_eq!(
            mesh_ipv4(&k, &secret, pk, None).to_string(),
            s(&v["mesh_ip"]),
            "{pk}"
        );
        assert_eq!(
            mesh_ipv6(&k, &secret, pk).to_string(),
            s(&v["mesh_ipv6"]),
            "{pk}"
        );
        for c in v["custom_subnets"].as_array().unwrap() {
            let subnet: MeshSubnet = s(&c["cidr"]).parse().unwrap();
            let sub = Some(&subnet);
            let ctx = format!("{pk} in {subnet}");
            assert_eq!(
                mesh_ipv4(&k, &secret, pk, sub).to_string(),
                s(&c["mesh_ip"]),
                "{ctx}"
            );
            for (n, key) in [(1, "nonce1"), (2, "nonce2")] {
                let got = mesh_ipv4_with_nonce(&k, &secret, pk, sub, n).to_string();
                assert_eq!(got, s(&c[key]), "{ctx} nonce {n}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 48);
}

#[test]
fn envelope_vectors_open_to_their_payloads_and_reserialise_exactly() {
    let vectors = json("vectors/envelopes.json");
    assert_eq!(vectors.len(), 3);
    for v in &vectors {
        let secret = secret(v);
        let env = Envelope::new(&DerivedKeys::derive(&secret).gossip_key);
        let datagram = base64::engine::general_purpose::STANDARD
            .decode(s(&v["datagram_base64"]))
            .unwrap();
        let now = at(1_763_780_000);
        let opened = env.open_raw(&datagram, now).unwrap();
        assert_eq!(opened.msg_type.as_str(), s(&v["type"]));
        let (ty, ann) = env.open_announcement(&datagram, now).unwrap();
        assert_eq!(ty, opened.msg_type);
        // The decoded announcement equals the expected payload ...
        let expected: PeerAnnouncement = serde_json::from_value(v["payload"].clone()).unwrap();
        assert_eq!(ann, expected);
        // ... and serialises back to the exact plaintext Go encrypted.
        assert_eq!(to_go_json(&ann), opened.plaintext, "{}", s(&v["type"]));
        // Re-sealing with the same nonce reproduces the datagram byte for byte.
        let outer: Value = serde_json::from_slice(&datagram).unwrap();
        let nonce: [u8; 12] = base64::engine::general_purpose::STANDARD
            .decode(s(&outer["nonce"]))
            .unwrap()
            .try_into()
            .unwrap();
        assert_eq!(env.seal_with_nonce(ty, &ann, &nonce), datagram);
        // Outside the freshness window the same datagram is refused.
        assert!(env.open_raw(&datagram, at(1_763_780_000 + 601)).is_err());
    }
}

#[test]
fn go_envelope_fixture_v1() {
    let bin = std::fs::read(data("envelope-v1/envelope.bin")).unwrap();
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(data("envelope-v1/expected.json")).unwrap())
            .unwrap();
    assert_eq!(expected["version"], 1);
    let plaintext = base64::engine::general_purpose::STANDARD
        .decode(s(&expected["plaintext"]))
        .unwrap();
    assert_eq!(plaintext.len(), 183);

    let secret = MeshSecret::parse(
        "wgmesh-envelope-compatibility-secret",
        SecretOrigin::Literal,
    )
    .unwrap();
    let keys = DerivedKeys::derive(&secret);
    assert_eq!(
        hex(&keys.gossip_key),
        "07480669f5e7c309b6612bbae2f0832ad6fb66fc06d4200c09706d084ec65355"
    );
    let env = Envelope::new(&keys.gossip_key);
    // Go pins "now" to timestamp + 1 s.
    let now = at(1_800_000_001);
    let (ty, ann) = env.open_announcement(&bin, now).unwrap();
    assert_eq!(ty, MessageType::Announce);
    assert_eq!(ann.hostname, "compat-v1");
    assert_eq!(to_go_json(&ann), plaintext);
    let nonce: [u8; 12] = [
        0x70, 0x78, 0x75, 0xf6, 0xfd, 0xaa, 0x9b, 0x47, 0x51, 0xf6, 0x67, 0x60,
    ];
    assert_eq!(env.seal_with_nonce(ty, &ann, &nonce), bin);
}
