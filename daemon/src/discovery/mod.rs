//! Discovery: tasks that find peers and only ever write the peer store. Each source turns what it
//! hears into a [`crate::peers::PeerUpdate`] tagged with its [`crate::peers::Method`].

pub mod contact;
pub mod dht;
pub mod exchange;
pub mod gossip;
pub mod lan;
pub mod rendezvous;
pub mod static_peers;
pub mod stun;

/// The OS hostname if it is a valid announcement hostname (printable ASCII, ≤ 253 bytes),
/// else empty (Go sends an empty hostname when it has none).
pub fn local_hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name = raw.trim();
    if name.len() <= 253 && name.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        name.to_owned()
    } else {
        String::new()
    }
}
