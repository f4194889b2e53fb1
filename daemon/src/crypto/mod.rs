//! Everything computed from the mesh secret, bit-compatible with Go wgmesh: derived keys and ids
//! ([`derive`]), per-node mesh addresses ([`meship`]) and the AES-256-GCM envelope ([`envelope`]).
//! Pure: no I/O, no clock (time is a parameter).

pub mod derive;
pub mod envelope;
pub mod meship;

pub use derive::{DerivedKeys, hourly_network_id};
pub use envelope::{Envelope, EnvelopeError, MessageType, OpenedEnvelope};
pub use meship::{legacy_subnet, mesh_ipv4, mesh_ipv4_with_nonce, mesh_ipv6};
