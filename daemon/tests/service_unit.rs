//! `wgmeshd install-service` / `uninstall-service`, run as an operator would: the units it
//! renders pass `systemd-analyze verify` and score ≤ 3.0 in `systemd-analyze security`, and
//! install/uninstall against `--root` write and remove exactly the expected files, whatever the
//! secret contains.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_wgmeshd");

fn wgmeshd(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("WGMESH_SECRET")
        .env_remove("WGMESH_SECRET_FILE")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(args: &[&str]) -> String {
    let out = wgmeshd(args);
    assert!(
        out.status.success(),
        "wgmeshd {args:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// `systemd-analyze`, or `None` (skip) when it is missing outside CI; under CI=true a missing
/// tool fails the test (`.ci/run` installs it).
fn analyze() -> Option<&'static str> {
    let found = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some("systemd-analyze");
    }
    assert!(
        std::env::var("CI").is_err(),
        "systemd-analyze is missing under CI (install the systemd package)"
    );
    eprintln!("SKIPPED: systemd-analyze is not installed (install the systemd package)");
    None
}

/// The exposure score in `systemd-analyze security` output.
fn exposure(out: &str) -> f64 {
    let line = out
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure line in: {out}"));
    let value = line
        .split(':')
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    value.parse().unwrap()
}

#[test]
fn rendered_units_verify_and_expose_at_most_3_0() {
    let Some(tool) = analyze() else { return };
    let flag_sets: &[&[&str]] = &[
        &[],
        &[
            "--interface",
            "wg1",
            "--listen-port",
            "51900",
            "--introducer",
        ],
        &[
            "--advertise-routes",
            "192.168.10.0/24,fd10::/64",
            "--state-dir",
            "/srv/wg \"mesh\" 100%",
            "--socket",
            "/run/wgmesh-alt/api.sock",
            "--socket-group",
            "ops$team",
            "--peer",
            "192.0.2.7:51847",
            "--no-dht",
            "--log-level",
            "debug",
        ],
    ];
    for flags in flag_sets {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec!["install-service", "--print-unit", "--binary", BIN];
        args.extend_from_slice(flags);
        let unit = ok(&args);
        let path = dir.path().join("wgmesh.service");
        std::fs::write(&path, &unit).unwrap();
        let verify = Command::new(tool)
            .args(["verify", "--man=no"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            verify.status.success(),
            "verify {flags:?}: {}\n{unit}",
            text(&verify.stderr)
        );
        let stderr = text(&verify.stderr);
        assert!(
            !stderr.contains("wgmesh.service:"),
            "verify warns about {flags:?}: {stderr}\n{unit}"
        );
        let security = Command::new(tool)
            .args(["security", "--offline=true", "--no-pager"])
            .arg(&path)
            .output()
            .unwrap();
        let score = exposure(&text(&security.stdout));
        println!("flags {flags:?}: exposure {score}");
        assert!(score <= 3.0, "exposure {score} for {flags:?}\n{unit}");
    }
}

#[test]
fn packaged_unit_runs_usr_bin_wgmeshd_and_needs_no_secret() {
    let unit = ok(&[
        "install-service",
        "--print-unit",
        "--binary",
        "/usr/bin/wgmeshd",
    ]);
    assert!(
        unit.contains("\nExecStart=/usr/bin/wgmeshd join\n"),
        "{unit}"
    );
    assert!(
        unit.contains("\nLoadCredential=secret:/etc/wgmesh/secret\n"),
        "{unit}"
    );
    // Invalid join flags fail at install time, by name.
    let out = wgmeshd(&["install-service", "--print-unit", "--listen-port", "x"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = wgmeshd(&["install-service", "--print-unit", "--account", "sk-live-1"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--account"));
    assert!(!text(&out.stderr).contains("sk-live-1"));
}

/// Every path under `root` with its kind, mode and contents.
fn tree(root: &Path) -> BTreeMap<PathBuf, (char, u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            let rel = path.strip_prefix(root).unwrap().to_owned();
            if meta.is_dir() {
                out.insert(rel, ('d', mode, Vec::new()));
                stack.push(path);
            } else {
                out.insert(rel, ('f', mode, std::fs::read(&path).unwrap()));
            }
        }
    }
    out
}

const HOSTILE_SECRETS: &[&str] = &[
    "with spaces and \"double\" and 'single' quotes",
    "dollar $HOME ${HOME} $$ and $",
    "percent %n %i %% 100%",
    "back\\slash \\n \\\" \\x41 trailing\\",
    "grüße-网络-秘密-ключ-0123456789",
    "wgmesh://v1/uri-form-secret-0123456789",
];

#[test]
fn install_and_uninstall_against_a_root_with_hostile_secrets() {
    for (i, secret) in HOSTILE_SECRETS.iter().enumerate() {
        let root_dir = tempfile::tempdir().unwrap();
        let root = root_dir.path();
        // A system with the unit directory and a node's state, as a real one has.
        std::fs::create_dir_all(root.join("etc/systemd/system")).unwrap();
        std::fs::create_dir_all(root.join("var/lib/wgmesh")).unwrap();
        std::fs::write(root.join("var/lib/wgmesh/wg0.json"), "{}").unwrap();
        let before = tree(root);

        let secret_dir = tempfile::tempdir().unwrap();
        let secret_file = secret_dir.path().join("secret");
        std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
        std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let (r, s) = (root.to_str().unwrap(), secret_file.to_str().unwrap());
        let install = |extra: &[&str]| {
            let mut args = vec![
                "install-service",
                "--root",
                r,
                "--binary",
                "/usr/bin/wgmeshd",
                "--secret-file",
                s,
            ];
            args.extend_from_slice(extra);
            args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>()
        };
        let run = |args: Vec<String>| {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            ok(&refs)
        };

        // A dry run writes nothing and never shows the secret.
        let dry = run(install(&["--dry-run", "--interface", "wg1"]));
        assert_eq!(tree(root), before, "dry run wrote something");
        assert!(!dry.contains(secret), "case {i}: {dry}");
        let n = secret.len() + 1;
        assert!(dry.contains(&format!("<secret, {n} bytes>")), "{dry}");
        assert!(
            dry.contains("ExecStart=/usr/bin/wgmeshd join --interface wg1"),
            "{dry}"
        );

        let first = run(install(&["--interface", "wg1"]));
        assert!(!first.contains(secret), "case {i}: {first}");
        let after = tree(root);
        let mut want = before.clone();
        let unit = after[Path::new("etc/systemd/system/wgmesh.service")]
            .2
            .clone();
        want.insert("etc/wgmesh".into(), ('d', 0o700, Vec::new()));
        want.insert(
            "etc/wgmesh/secret".into(),
            ('f', 0o600, format!("{secret}\n").into_bytes()),
        );
        want.insert(
            "etc/systemd/system/wgmesh.service".into(),
            ('f', 0o644, unit.clone()),
        );
        assert_eq!(after, want, "case {i}");
        let unit = String::from_utf8(unit).unwrap();
        assert!(
            !unit.contains(secret),
            "case {i}: the unit holds the secret"
        );
        assert!(unit.contains("--interface wg1"), "{unit}");

        // The same again changes nothing and says so.
        let again = run(install(&["--interface", "wg1"]));
        assert!(again.contains("nothing changed"), "{again}");
        assert_eq!(tree(root), after);

        // Other options rewrite the unit only.
        let changed = run(install(&["--interface", "wg2"]));
        assert!(changed.contains("replace"), "{changed}");
        let now = tree(root);
        assert_eq!(
            now[Path::new("etc/wgmesh/secret")],
            after[Path::new("etc/wgmesh/secret")]
        );
        assert_ne!(
            now[Path::new("etc/systemd/system/wgmesh.service")],
            after[Path::new("etc/systemd/system/wgmesh.service")]
        );

        let dry = ok(&["uninstall-service", "--root", r, "--dry-run"]);
        assert!(dry.contains("remove"), "{dry}");
        assert_eq!(tree(root), now, "uninstall dry run removed something");
        let out = ok(&["uninstall-service", "--root", r]);
        assert!(out.contains("kept"), "{out}");
        assert_eq!(
            tree(root),
            before,
            "case {i}: uninstall left a different tree"
        );
    }
}

#[test]
fn install_without_a_secret_fails_and_writes_nothing() {
    let root_dir = tempfile::tempdir().unwrap();
    let r = root_dir.path().to_str().unwrap();
    let out = wgmeshd(&[
        "install-service",
        "--root",
        r,
        "--binary",
        "/usr/bin/wgmeshd",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no mesh secret"),
        "{}",
        text(&out.stderr)
    );
    assert!(tree(root_dir.path()).is_empty());
    let out = wgmeshd(&[
        "install-service",
        "--root",
        r,
        "--binary",
        "/usr/bin/wgmeshd",
        "--secret",
        "short",
    ]);
    assert!(!out.status.success());
    assert!(!text(&out.stderr).contains("short\n"));
    assert!(tree(root_dir.path()).is_empty());
}

#[test]
fn go_secret_env_is_mentioned_and_left_alone() {
    let root_dir = tempfile::tempdir().unwrap();
    let root = root_dir.path();
    std::fs::create_dir_all(root.join("etc/wgmesh")).unwrap();
    std::fs::write(root.join("etc/wgmesh/secret.env"), "WGMESH_SECRET=\"x\"\n").unwrap();
    let r = root.to_str().unwrap();
    let out = ok(&[
        "install-service",
        "--root",
        r,
        "--binary",
        "/usr/bin/wgmeshd",
        "--secret",
        "wgmesh://v1/go-migration-secret-0123456789",
    ]);
    assert!(out.contains("secret.env"), "{out}");
    let out = ok(&["uninstall-service", "--root", r]);
    assert!(out.contains("kept"), "{out}");
    assert!(root.join("etc/wgmesh/secret.env").exists());
    assert!(!root.join("etc/wgmesh/secret").exists());
}
