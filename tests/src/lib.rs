//! Helpers for end-to-end tests of `wgmeshd` and `wgmeshctl`, and the network lab ([`lab`]).

pub mod lab;

use std::path::PathBuf;
use std::process::Command;

/// Path of a workspace binary (`wgmeshd`, `wgmeshctl`) built in the same profile as this test.
///
/// `cargo test --workspace` / `cargo nextest run --workspace` build every binary of the
/// workspace before tests run; when a single test is run on its own, the binary is built here.
pub fn binary(name: &str) -> PathBuf {
    // target/<profile>/deps/<test-exe> -> target/<profile>/<name>
    let exe = std::env::current_exe().expect("current test executable");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let path = profile_dir.join(name);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--bin", name])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build --bin {name} failed");
    }
    path
}
pub mod node;
