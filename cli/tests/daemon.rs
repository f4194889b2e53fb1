//! `wgmeshctl`'s daemon commands against the daemon's API, as a user runs them.
//!
//! The API is the daemon's real listener and router (`wgmeshd::api::{bind, serve}`) on a temp-dir
//! socket, serving snapshots built from the `wgmesh-api-types` structs exactly as the daemon
//! publishes them, with a test task answering write requests as the daemon's `control` task
//! would; so a drift between the router, the API types and the CLI fails here, and no test needs
//! root or a WireGuard device. See `daemon/harness.rs`.
//!
//! What wgmeshctl prints (exit status, stdout, stderr) is snapshot-tested with insta:
//! `cli/tests/daemon/snapshots/daemon__*.snap`. After a deliberate change of the output, review the new
//! snapshots with `cargo insta review` (or run with `INSTA_UPDATE=always` and read the diff).

#[path = "daemon/errors.rs"]
mod errors;
#[path = "daemon/fields.rs"]
mod fields;
#[path = "daemon/fixtures.rs"]
mod fixtures;
#[path = "daemon/harness.rs"]
mod harness;
#[path = "daemon/reads.rs"]
mod reads;
#[path = "daemon/watch.rs"]
mod watch;
#[path = "daemon/writes.rs"]
mod writes;
