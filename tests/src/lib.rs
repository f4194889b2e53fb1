//! Helpers for end-to-end tests of `wgmeshd` and `wgmeshctl`, and the network lab ([`lab`]).

pub mod lab;

use std::path::PathBuf;
use std::process::Command;

/// Path of a workspace binary (`wgmeshd`, `wgmeshctl`) built in the same profile as this test.
///
/// `cargo test --workspace` / `cargo nextest run --workspace` build every binary of the
/// workspace before tests run; when a single test is run on its own, the binary is built here.
pub fn binary(name: &str) -> PathBuf {
    // target/<profile>/deps/<test-exe> or target/<profile>/<bin> -> target/<profile>/<name>
    let exe = std::env::current_exe().expect("current executable");
    let mut profile_dir = exe.parent().expect("executable lives in a directory");
    if profile_dir.file_name().is_some_and(|n| n == "deps") {
        profile_dir = profile_dir
            .parent()
            .expect("deps lives in target/<profile>");
    }
    let path = profile_dir.join(name);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--bin", name])
            .args(
                profile_dir
                    .file_name()
                    .filter(|p| *p == "release")
                    .map(|_| "--release"),
            )
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build --bin {name} failed");
    }
    path
}
pub mod api;
pub mod node;
