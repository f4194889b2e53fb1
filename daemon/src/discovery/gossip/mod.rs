//! In-mesh gossip.
pub mod rules;
