//! `wgmeshd identity`, run as a user would run it.

use std::process::{Command, Output};

const SECRET: &str = "wgmesh://v1/identity-cli-test-secret-0123456789";

fn wgmeshd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wgmeshd"))
        .args(args)
        .env("WGMESH_SECRET", SECRET)
        .env_remove("WGMESH_SECRET_FILE")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn creates_once_then_reports_the_same_identity() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let state = state.to_str().unwrap();
    let first = wgmeshd(&[
        "identity",
        "--state-dir",
        state,
        "--interface",
        "wgt0",
        "--json",
    ]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let a: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(a["created"], true);
    assert_eq!(a["interface"], "wgt0");
    assert!(text(&first.stderr).contains("created a new node identity"));
    let second = wgmeshd(&[
        "identity",
        "--state-dir",
        state,
        "--interface",
        "wgt0",
        "--json",
    ]);
    let b: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(b["created"], false);
    for key in ["public_key", "mesh_ip", "mesh_ipv6", "network_id"] {
        assert_eq!(a[key], b[key], "{key}");
    }
    // The private key never leaves the state file.
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("state/wgt0.json")).unwrap())
            .unwrap();
    let private = file["wg_private_key"].as_str().unwrap();
    for out in [&first, &second] {
        let all = text(&out.stdout) + &text(&out.stderr);
        assert!(!all.contains(private) && !all.contains("identity-cli-test-secret"));
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("state"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[test]
fn text_output_and_custom_subnet() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_str().unwrap();
    let out = wgmeshd(&[
        "identity",
        "--state-dir",
        state,
        "--mesh-subnet",
        "192.168.77.0/24",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("Interface:   wg0\n"), "{stdout}");
    assert!(stdout.contains("Mesh IPv4:   192.168.77."), "{stdout}");
    assert!(stdout.contains("/24\n"), "{stdout}");
}

#[test]
fn corrupt_state_is_reported_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wg0.json");
    std::fs::write(&path, "{\"wg_pubkey\": ").unwrap();
    let out = wgmeshd(&["identity", "--state-dir", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(path.to_str().unwrap()) && err.contains("corrupt"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"wg_pubkey\": ");
}

#[test]
fn bad_arguments_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_str().unwrap();
    let out = wgmeshd(&["identity", "--state-dir", state, "--interface", "bad/name"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("path separators"));
    let out = wgmeshd(&[
        "identity",
        "--state-dir",
        state,
        "--mesh-subnet",
        "fd00::/64",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("IPv4"));
    let out = wgmeshd(&["--log-level", "loud", "identity"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn raw_secret_gets_a_low_entropy_warning() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wgmeshd"))
        .args(["identity", "--state-dir", dir.path().to_str().unwrap()])
        .env("WGMESH_SECRET", "plain-raw-secret-0123456789")
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("low entropy") && !err.contains("plain-raw-secret"),
        "{err}"
    );
}
