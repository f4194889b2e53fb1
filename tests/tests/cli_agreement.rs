//! The daemon and the CLI agree: the identity `wgmeshd` creates has exactly the mesh addresses
//! `wgmeshctl secret mesh-ip` computes for its public key, with and without a custom subnet.
//! Both run through the multi-call program of this build.

use std::process::Command;

use wgmesh_tests::labnode_exe;

fn json(cmd: &mut Command) -> serde_json::Value {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn daemon_identity_matches_cli_derivation() {
    let exe = labnode_exe!();
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    wgmesh_tests::daemon::write_secret(&exe, &secret_file).unwrap();
    for subnet in [None, Some("10.250.0.0/20")] {
        let state = dir.path().join(format!("state-{}", subnet.is_some()));
        let mut daemon = exe.wgmeshd();
        daemon
            .args(["identity", "--json", "--secret-file"])
            .arg(&secret_file)
            .arg("--state-dir")
            .arg(&state);
        let mut ctl = exe.wgmeshctl();
        ctl.args(["secret", "mesh-ip", "--json", "--secret-file"])
            .arg(&secret_file);
        if let Some(s) = subnet {
            daemon.args(["--mesh-subnet", s]);
            ctl.args(["--mesh-subnet", s]);
        }
        let id = json(&mut daemon);
        let pubkey = id["public_key"].as_str().unwrap();
        let ips = json(ctl.args(["--pubkey", pubkey]));
        assert_eq!(id["mesh_ip"], ips["mesh_ip"], "subnet {subnet:?}");
        assert_eq!(id["mesh_ipv6"], ips["mesh_ipv6"], "subnet {subnet:?}");
        assert_eq!(id["mesh_prefix_len"], ips["prefix_len"]);
    }
}
