//! Plaintext payloads of discovery messages and the Go-compatible JSON they travel as
//! (crypto-and-wire §6.4, §7). Pure.

pub mod announcement;
pub mod dandelion;
pub mod gojson;
pub mod goodbye;
pub mod key;
pub mod rendezvous;

pub use announcement::{AnnouncementError, KnownPeer, PROTOCOL, PeerAnnouncement};
pub use dandelion::{DANDELION_NONCE_LEN, DandelionAnnounce};
pub use gojson::to_go_json;
pub use goodbye::Goodbye;
pub use key::{KeyError, decode_wg_key};
pub use rendezvous::{RendezvousOffer, RendezvousStart};
