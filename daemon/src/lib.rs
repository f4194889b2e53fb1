//! `wgmeshd`: a decentralized WireGuard mesh daemon.
//!
//! Every node that knows one shared secret derives the same mesh parameters, finds the others and
//! keeps its WireGuard device equal to what it has learned. The data path, top to bottom:
//!
//! - [`config`]: values parsed at the edge (secret, interface name, custom subnet). Pure.
//! - [`crypto`]: everything derived from the secret, the mesh addresses and the AES-GCM envelope,
//!   bit-compatible with Go wgmesh. Pure.
//! - [`keys`]: WireGuard public, private and preshared keys. Pure.
//! - `manpage` (feature `manpage`): manual pages from a clap definition, for both programs.
//! - [`wire`]: discovery payloads and the Go-compatible JSON they travel as. Pure.
//! - [`privacy`]: epochs and Dandelion++ stem/fluff rules for `--privacy`. Pure.
//! - `identity` (feature `runtime`): the node's key pair and mesh addresses on disk.
//! - `node`: this node's changing facts (`LocalNode`), shared on a watch channel.
//! - `peers`: the peer store (merge rules, ranking, liveness). `engine`: desired device, diff,
//!   reconcile loop, route policy. `discovery`: tasks that write the store.
//! - `cache` (feature `runtime`): the peer cache on disk, restored at start, saved periodically.
//! - `supervisor`: every long-lived task runs there, by name, restarted or fatal.
//! - `system` (feature `runtime`): the only code that touches the OS.
//! - `api` (feature `runtime`): the control API (JSON over a unix socket); reads published snapshots.
//! - `events`, `metrics` (feature `runtime`): the event bus behind `GET /v1/events` and the
//!   Prometheus counters behind `GET /metrics`.
//! - `service` (feature `runtime`): the systemd unit, install/uninstall plan, notify decisions. Pure.
//! - `uapi` (feature `runtime`): the read-only WireGuard UAPI socket, so `wg show` sees the
//!   embedded device.
//! - `daemon`: the lifecycle that wires all of it together.
//!
//! Without the default `runtime` feature only the pure modules are built; `wgmeshctl` links them
//! for its offline commands (`secret inspect`, `secret mesh-ip`, `debug decode-packet`).

pub mod config;
pub mod crypto;
pub mod keys;
#[cfg(feature = "manpage")]
pub mod manpage;
pub mod privacy;
pub mod wire;

#[cfg(feature = "runtime")]
pub mod api;
#[cfg(feature = "runtime")]
pub mod cache;
#[cfg(feature = "runtime")]
pub mod cli;
#[cfg(feature = "runtime")]
pub mod daemon;
#[cfg(feature = "runtime")]
pub mod discovery;
#[cfg(feature = "runtime")]
pub mod engine;
#[cfg(feature = "runtime")]
pub mod events;
#[cfg(feature = "runtime")]
pub mod health;
#[cfg(feature = "runtime")]
pub mod identity;
#[cfg(feature = "runtime")]
pub mod logging;
#[cfg(feature = "runtime")]
pub mod metrics;
#[cfg(feature = "runtime")]
pub mod node;
#[cfg(feature = "runtime")]
pub mod peers;
#[cfg(feature = "runtime")]
pub mod service;
#[cfg(feature = "runtime")]
pub mod status;
#[cfg(feature = "runtime")]
pub mod supervisor;
#[cfg(feature = "runtime")]
pub mod system;
#[cfg(feature = "runtime")]
pub mod uapi;
