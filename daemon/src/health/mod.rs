//! Peer health (daemon-behaviour §9): the handshake/transfer monitor, the TCP mesh probe (server
//! and concurrent client), eviction into quarantine, and the per-peer state and reason codes the
//! API shows.
//!
//! - [`state`]: the pure rules (stale, tick and probe decisions, API classification), tabled.
//! - [`probe`]: the Go-compatible `ping\n`/`pong\n` protocol and the `probe-server` task.
//! - [`monitor`]: the `health` task.
//!
//! Differences from Go (§21): probes run concurrently and reach every peer, so a dead peer is
//! `offline` in the API within seconds even while its last handshake is fresh (eviction still
//! follows Go's enforcement rule); quarantined peers are neither probed nor checked (21); the
//! probe server follows a change of our mesh address (18).

pub mod monitor;
pub mod probe;
pub mod state;

pub use monitor::{HealthMonitor, HealthView, ProbeView};
pub use probe::ProbeServer;
pub use state::OFFLINE_AFTER_FAILURES;
