//! Privacy mode (`--privacy`): epochs and Dandelion++ stem/fluff (daemon-behaviour §12,
//! crypto-and-wire §18). Pure: decisions over plain values, time and randomness as parameters.
//!
//! Go rotates epochs but never sends a Dandelion message. Ours does, on top of in-mesh gossip
//! (`discovery::gossip` moves the values): instead of announcing itself to a random peer, a node
//! sends a `DANDELION_STEM` ([`crate::wire::DandelionAnnounce`]) to the first relay of its
//! current [`epoch`]; each node on the way applies [`dandelion::route`] (one more hop, onward to
//! its own relay or fluff), and the node that fluffs stores the origin and spreads it with a
//! normal gossip ANNOUNCE, which Go nodes understand. The first hop therefore cannot tell whether
//! its sender is the origin.
//!
//! - [`epoch`]: epoch ids, the HMAC seed, the relay choice and when to rotate.
//! - [`dandelion`]: hop counts, the fluff decision, the next relay, the nonce memory.
//! - [`shuffle`]: the deterministic generator both use.

pub mod dandelion;
pub mod epoch;
pub mod shuffle;

pub use dandelion::{MAX_STEM_HOPS, Route, SeenNonces, route};
pub use epoch::{Epoch, Relay, RotationReason, rotate, rotation_due, usable_relays};
