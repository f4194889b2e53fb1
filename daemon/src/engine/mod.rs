//! The heart of the daemon: from what the peer store knows to what the WireGuard device and the
//! routing table should hold, and the loop that makes them so.
//!
//! - [`collision`]: mesh-IP collisions (pure plan) and the task that moves this node when it
//!   lost.
//! - [`desired`]: pure — active peers + this node → [`desired::DesiredDevice`] and its routes.
//! - [`diff`]: pure — live device vs desired device → the smallest [`DeviceUpdate`].
//! - [`reconcile`]: the async loop that reads, diffs, applies (one call) and syncs routes, every
//!   5 s and within ~100 ms of a peer-store change.
//!
//! [`DeviceUpdate`]: crate::system::wg::DeviceUpdate

pub mod collision;
pub mod desired;
pub mod diff;
pub mod reconcile;
pub mod relay;
pub mod route_policy;
