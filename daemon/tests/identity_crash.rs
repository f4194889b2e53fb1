//! Killing a process at any moment while it writes the state file never leaves an unreadable
//! file. The test re-executes this test binary as a child that rewrites the identity file in a
//! tight loop (alternating between two mesh subnets, so every pass re-derives `mesh_ip` and saves),
//! SIGKILLs it after a varying delay, and checks that the file still loads with the same key.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wgmeshd::config::{InterfaceName, MeshSecret, MeshSubnet, SecretOrigin};
use wgmeshd::crypto::DerivedKeys;
use wgmeshd::identity::{MeshParams, load_or_create, state_file_path};

const CHILD_ENV: &str = "WGMESH_TEST_CRASH_CHILD_DIR";
const SUBNETS: [&str; 2] = ["192.168.100.0/24", "172.20.0.0/16"];

fn load(dir: &Path, subnet: &MeshSubnet) -> wgmeshd::identity::Identity {
    let secret = MeshSecret::parse("crash-test-secret-0123456789", SecretOrigin::Literal).unwrap();
    let keys = DerivedKeys::derive(&secret);
    let mesh = MeshParams {
        secret: &secret,
        keys: &keys,
        custom_subnet: Some(subnet),
    };
    let iface: InterfaceName = "wgcrash0".parse().unwrap();
    match load_or_create(dir, &iface, &mesh) {
        Ok((id, _)) => id,
        Err(e) => panic!("identity did not load after a crash: {e}"),
    }
}

/// Child side: rewrite the file until killed. Ignored in normal runs; the parent starts it with
/// `--ignored --exact`.
#[test]
#[ignore = "helper process of state_file_survives_sigkill_during_writes"]
fn child_writer_loop() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let subnets: Vec<MeshSubnet> = SUBNETS.iter().map(|s| s.parse().unwrap()).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut i = 0usize;
    while Instant::now() < deadline {
        load(Path::new(&dir), &subnets[i % 2]);
        i += 1;
    }
}

#[test]
fn state_file_survives_sigkill_during_writes() {
    let dir = tempfile::tempdir().unwrap();
    let subnets: Vec<MeshSubnet> = SUBNETS.iter().map(|s| s.parse().unwrap()).collect();
    let original = load(dir.path(), &subnets[0]);
    let path = state_file_path(dir.path(), &"wgcrash0".parse().unwrap());
    let exe = std::env::current_exe().unwrap();
    let mut seen_ips = std::collections::HashSet::new();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id());
    for round in 0..60 {
        let mut child = Command::new(&exe)
            .args(["child_writer_loop", "--exact", "--ignored", "--nocapture"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // xorshift: a spread of delays from 2 to 41 ms so kills land at different points of
        // the write cycle (create temp, write, fsync, rename, fsync dir).
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(2 + seed % 40));
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
        assert_eq!(rc, 0, "kill failed in round {round}");
        child.wait().unwrap();

        let text = std::fs::read_to_string(&path).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("round {round}: state file unreadable ({e}): {text:?}"));
        assert_eq!(
            value["wg_pubkey"],
            original.public_key.to_string(),
            "round {round}"
        );
        seen_ips.insert(value["mesh_ip"].as_str().unwrap().to_owned());
        let reloaded = load(dir.path(), &subnets[round % 2]);
        assert_eq!(reloaded.public_key, original.public_key, "round {round}");
        assert_eq!(reloaded.private_key, original.private_key);
    }
    // The children really were rewriting the file: both subnets' addresses were observed.
    assert!(
        seen_ips.len() >= 2,
        "children never rewrote the file: {seen_ips:?}"
    );
}
