//! `wgmeshctl`'s offline commands, run as a user would run them.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

const SECRET: &str = "test-secret-0123456789";
const P: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
// From the Go-produced compat vectors (mesh-ips.json).
const VEC_KEY: &str = "PYtJ5VmQqBAr7dnbTmCR1xP/v+/jrHmuTnGC4Aixu+o=";
// HELLO datagram of envelopes.json, timestamp 1763780000.
const HELLO_B64: &str = include_str!("data/hello.b64");

fn ctl(args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wgmeshctl"));
    cmd.args(args)
        .env_remove("WGMESH_SECRET")
        .env_remove("WGMESH_SECRET_FILE")
        .env_remove("WGMESH_SOCKET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn with_secret(args: &[&str]) -> Output {
    ctl(args, &[("WGMESH_SECRET", SECRET)], b"")
}

#[test]
fn secret_new_prints_a_fresh_uri_secret() {
    let a = ctl(&["secret", "new"], &[], b"");
    let b = ctl(&["secret", "new"], &[], b"");
    assert!(a.status.success());
    let a = text(&a.stdout);
    let tail = a.trim_end().strip_prefix("wgmesh://v1/").expect("URI form");
    assert_eq!(tail.len(), 171);
    assert!(
        tail.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    );
    assert_ne!(a, text(&b.stdout));

    let json = ctl(&["secret", "new", "--json"], &[], b"");
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let secret = v["secret"].as_str().unwrap();
    assert!(
        secret.starts_with("wgmesh://v1/") && secret.len() == 183,
        "{secret}"
    );
}

#[test]
fn inspect_shows_derived_values_but_never_the_secret() {
    let out = with_secret(&["secret", "inspect"]);
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    for want in [
        "Network ID:        b6ed1c46b1404bc0",
        "Mesh subnet:       10.78.0.0/16",
        "Mesh IPv6 prefix:  fd9d:af5d:d5d0:b3c7::/64",
        "Gossip port:       52190/udp",
        "Rendezvous ID:     073cc89e2cb06cd5",
        "LAN multicast:     239.192.195.219:51830",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in\n{stdout}");
    }
    let all = stdout + &text(&out.stderr);
    assert!(!all.contains(SECRET));
    assert!(
        !all.contains("LUOvekj3HqR1sGXDZQL0CcXHiik8aFRf3SmMlswA7FY="),
        "PSK leaked"
    );
}

#[test]
fn inspect_json_with_custom_subnet_and_show_keys() {
    let out = with_secret(&[
        "secret",
        "inspect",
        "--json",
        "--mesh-subnet",
        "192.168.100.7/24",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["mesh_subnet"], "192.168.100.0/24");
    assert_eq!(v["mesh_subnet_custom"], true);
    assert_eq!(v["gossip_port"], 52190);
    assert!(v.get("psk").is_none() && v.get("gossip_key").is_none());

    let out = with_secret(&["secret", "inspect", "--json", "--show-keys"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["psk"], "LUOvekj3HqR1sGXDZQL0CcXHiik8aFRf3SmMlswA7FY=");
    assert_eq!(
        v["gossip_key"],
        "cc1af11dda3c8ccc82782c5c5f81a121f2af2d8f2893be44874a0538722d4da2"
    );
    assert!(
        text(&out.stderr).contains("warning"),
        "--show-keys must warn on stderr"
    );
}

#[test]
fn secret_sources_and_their_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, format!("wgmesh://v1/{SECRET}\n")).unwrap();
    let file = file.to_str().unwrap();
    let via_file = ctl(
        &["secret", "inspect", "--json", "--secret-file", file],
        &[],
        b"",
    );
    let via_env_file = ctl(
        &["secret", "inspect", "--json"],
        &[("WGMESH_SECRET_FILE", file)],
        b"",
    );
    let via_env = with_secret(&["secret", "inspect", "--json"]);
    assert_eq!(via_file.stdout, via_env.stdout);
    assert_eq!(via_env_file.stdout, via_env.stdout);
    // --secret works but warns that it is visible in the process list.
    let via_flag = ctl(
        &["secret", "inspect", "--json", "--secret", SECRET],
        &[],
        b"",
    );
    assert_eq!(via_flag.stdout, via_env.stdout);
    assert!(text(&via_flag.stderr).contains("process list"));

    let missing = ctl(&["secret", "inspect"], &[], b"");
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing.stderr).contains("--secret-file"),
        "{}",
        text(&missing.stderr)
    );

    let short = ctl(&["secret", "inspect", "--secret", "shortsecret"], &[], b"");
    assert_eq!(short.status.code(), Some(1));
    let err = text(&short.stderr);
    assert!(
        err.contains("too short") && !err.contains("shortsecret"),
        "{err}"
    );

    let bad_subnet = with_secret(&["secret", "inspect", "--mesh-subnet", "10.0.0.0/31"]);
    assert_eq!(bad_subnet.status.code(), Some(2));
    assert!(text(&bad_subnet.stderr).contains("too small"));
}

#[test]
fn mesh_ip_matches_go_vectors() {
    let out = with_secret(&["secret", "mesh-ip", "--pubkey", VEC_KEY]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "Mesh IPv4:  10.78.86.20/16\nMesh IPv6:  fd9d:af5d:d5d0:b3c7:7289:3167:ba75:5031/64\n"
    );
    let out = with_secret(&[
        "secret",
        "mesh-ip",
        "--pubkey",
        VEC_KEY,
        "--mesh-subnet",
        "100.64.0.0/10",
        "--nonce",
        "2",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["mesh_ip"], "100.124.246.206");
    assert_eq!(v["prefix_len"], 10);
    let out = with_secret(&["secret", "mesh-ip", "--pubkey", P, "--nonce", "1"]);
    assert!(text(&out.stdout).starts_with("Mesh IPv4:  10.78.50.226/16\n"));

    let bad = with_secret(&["secret", "mesh-ip", "--pubkey", "not-a-key"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(text(&bad.stderr).contains("not a WireGuard public key"));
}

#[test]
fn decode_packet_opens_captures_and_explains_failures() {
    let at = ["debug", "decode-packet", "--at", "1763780000"];
    let env = [("WGMESH_SECRET", SECRET)];
    let out = ctl(&at, &env, HELLO_B64.as_bytes());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["type"], "HELLO");
    assert_eq!(v["announcement_valid"], true);
    assert_eq!(v["payload"]["hostname"], "node-0");
    assert_eq!(v["payload"]["known_peers"][0]["hostname"], "gamma");

    // The raw datagram works as well as its base64.
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(HELLO_B64.trim())
        .unwrap();
    let out = ctl(&at, &env, &raw);
    assert!(out.status.success());

    type Env<'a> = &'a [(&'a str, &'a str)];
    let cases: &[(Env, &[&str], &[u8], &str)] = &[
        (
            &[("WGMESH_SECRET", "another-mesh-secret-123")],
            &at,
            HELLO_B64.as_bytes(),
            "does not authenticate",
        ),
        (
            &env,
            &["debug", "decode-packet"],
            HELLO_B64.as_bytes(),
            "stale",
        ),
        (
            &env,
            &["debug", "decode-packet", "--at", "1763770000"],
            HELLO_B64.as_bytes(),
            "future",
        ),
        (&env, &at, &raw[..raw.len() - 10], "truncated"),
        (&env, &at, b"{\"hello\": 1}", "nonce"),
        (&env, &at, b"%%% not base64 %%%", "neither"),
        (&env, &at, b"", "no input"),
    ];
    for (env, args, input, want) in cases {
        let out = ctl(args, env, input);
        assert_eq!(out.status.code(), Some(1), "{want}");
        let err = text(&out.stderr);
        assert!(err.contains(want), "want {want:?}, got {err:?}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn help_explains_every_command() {
    let top = text(&ctl(&["--help"], &[], b"").stdout);
    assert!(top.contains("secret") && top.contains("debug"));
    for sub in [
        &["secret", "inspect", "--help"][..],
        &["secret", "mesh-ip", "--help"],
        &["debug", "decode-packet", "--help"],
    ] {
        let help = text(&ctl(sub, &[], b"").stdout);
        assert!(help.contains("--secret-file"), "{sub:?}: {help}");
    }
}

#[test]
fn help_lists_every_command_and_the_exit_statuses() {
    let out = ctl(&["--help"], &[("COLUMNS", "100")], b"");
    assert!(out.status.success());
    insta::assert_snapshot!("help", text(&out.stdout));
}

#[test]
fn completions_for_every_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = ctl(&["completions", shell], &[], b"");
        assert!(out.status.success(), "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        for word in ["reload", "flush", "advertise-routes", "dry-run", "watch"] {
            assert!(script.contains(word), "{shell}: no {word:?} in\n{script}");
        }
    }
    // The bash script is valid bash.
    let script = ctl(&["completions", "bash"], &[], b"").stdout;
    let mut bash = Command::new("bash")
        .arg("-n")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    bash.stdin.take().unwrap().write_all(&script).unwrap();
    let checked = bash.wait_with_output().unwrap();
    assert!(checked.status.success(), "{}", text(&checked.stderr));

    let bad = ctl(&["completions", "tcsh"], &[], b"");
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn man_prints_a_page_that_man_can_format() {
    let out = ctl(&["man"], &[], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let page = text(&out.stdout);
    assert!(page.contains(".TH wgmeshctl 1"), "{page}");
    // Formatted with groff's warnings on (as `man` would format it), it has no complaint and
    // shows every section.
    let groff = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut groff) = groff else {
        println!("groff is not installed: the page was not formatted");
        return;
    };
    groff
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let formatted = groff.wait_with_output().unwrap();
    assert!(formatted.status.success());
    assert_eq!(text(&formatted.stderr), "", "groff warnings");
    // Bold text is overstruck (`b\bb`) in this device's output; drop the overstrikes.
    let shown = text(&formatted.stdout);
    let plain: String = {
        let mut out = String::new();
        for c in shown.chars() {
            if c == '\u{8}' {
                out.pop();
            } else {
                out.push(c);
            }
        }
        out
    };
    for section in ["NAME", "SYNOPSIS", "COMMANDS", "EXIT STATUS", "ENVIRONMENT"] {
        assert!(plain.contains(section), "{section} missing in\n{plain}");
    }
    assert!(plain.contains("wgmeshctl reload"), "{plain}");
}
