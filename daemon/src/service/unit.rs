//! The text of `wgmesh.service`: a `Type=notify` unit running `wgmeshd join`, with the secret
//! handed over as a systemd credential and the sandbox the daemon can live in.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::escape::{command_line, quote_word};

/// Name of the unit.
pub const UNIT_NAME: &str = "wgmesh.service";
/// Name of the credential holding the mesh secret (`$CREDENTIALS_DIRECTORY/secret`).
pub const CREDENTIAL_NAME: &str = "secret";
/// Where install-service keeps the secret, which `LoadCredential=` reads.
pub const SECRET_PATH: &str = "/etc/wgmesh/secret";
/// The binary the Debian package installs.
pub const PACKAGED_BINARY: &str = "/usr/bin/wgmeshd";
/// `WatchdogSec=`: systemd restarts the daemon when its reconcile loop has not completed a pass
/// for this long (the daemon pings every half of it while passes complete; a pass runs every 5 s).
pub const WATCHDOG_SEC: u32 = 30;
/// `RestartSec=`.
pub const RESTART_SEC: u32 = 5;
/// `TimeoutStopSec=`: the daemon waits up to 10 s for its tasks and 5 s for the teardown.
pub const TIMEOUT_STOP_SEC: u32 = 30;
/// The state directory `StateDirectory=wgmesh` provides (and the join default).
pub const STATE_DIR: &str = "/var/lib/wgmesh";
/// The runtime directory `RuntimeDirectory=wgmesh` provides (the API socket's default home).
pub const RUNTIME_DIR: &str = "/run/wgmesh";

/// What the unit runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitSpec {
    /// Absolute path of `wgmeshd`.
    pub binary: PathBuf,
    /// The words after `join` (never a secret flag).
    pub join_args: Vec<String>,
    /// Directories outside the state and runtime directories the daemon writes to (a custom
    /// `--state-dir` or `--socket` directory); the read-only file system view must exempt them.
    pub writable: Vec<PathBuf>,
}

/// Why a unit cannot be rendered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UnitError {
    /// systemd needs an absolute executable path.
    #[error("the binary path {0} is not absolute")]
    RelativeBinary(PathBuf),
    /// Unit files are UTF-8 text.
    #[error("the path {0} is not valid UTF-8")]
    NotUtf8(PathBuf),
    /// `ReadWritePaths=` takes absolute paths.
    #[error("the directory {0} is not absolute")]
    RelativeDir(PathBuf),
    /// `ReadWritePaths=` cannot carry a `$` (not expanded there, so not escapable the same way)
    /// or a control character.
    #[error("the directory {0:?} contains `$` or a control character; choose another path")]
    UnsupportedDir(PathBuf),
}

fn utf8(path: &Path) -> Result<&str, UnitError> {
    path.to_str()
        .ok_or_else(|| UnitError::NotUtf8(path.to_owned()))
}

/// The directories a daemon started with `state_dir` and `socket` writes to beyond what the
/// unit provides (`/var/lib/wgmesh`, `/run/wgmesh`, `/run/wireguard`), for [`UnitSpec::writable`].
pub fn extra_writable(state_dir: &Path, socket: &Path) -> Vec<PathBuf> {
    let provided = [STATE_DIR, RUNTIME_DIR, "/run/wireguard"];
    let mut out = Vec::new();
    let socket_dir = socket.parent().unwrap_or(Path::new("/"));
    for dir in [state_dir, socket_dir] {
        if !provided.iter().any(|p| Path::new(p) == dir) && !out.iter().any(|d| d == dir) {
            out.push(dir.to_owned());
        }
    }
    out
}

/// The sandbox, one `(key, value, why)` per line; the why becomes a comment where it is not
/// obvious.
const HARDENING: &[(&str, &str, &str)] = &[
    (
        "User",
        "root",
        "root with a reduced capability set: the API grants writes to uid 0",
    ),
    (
        "CapabilityBoundingSet",
        "CAP_NET_ADMIN CAP_NET_RAW CAP_CHOWN",
        "NET_ADMIN: netlink, /dev/net/tun, forwarding sysctls, nft/iptables; NET_RAW: SO_BINDTODEVICE; CHOWN: the API socket's group",
    ),
    (
        "AmbientCapabilities",
        "CAP_NET_ADMIN CAP_NET_RAW CAP_CHOWN",
        "",
    ),
    ("NoNewPrivileges", "yes", ""),
    ("ProtectSystem", "strict", ""),
    ("ProtectHome", "yes", ""),
    ("PrivateTmp", "yes", ""),
    ("PrivateMounts", "yes", ""),
    ("DevicePolicy", "closed", ""),
    (
        "DeviceAllow",
        "/dev/net/tun rw",
        "the embedded (userspace) WireGuard device",
    ),
    (
        "ProtectKernelTunables",
        "yes",
        "/proc/sys read-only, except the two forwarding switches an introducer or route advertiser turns on (and restores at exit)",
    ),
    (
        "ReadWritePaths",
        "/proc/sys/net/ipv4/ip_forward -/proc/sys/net/ipv6/conf/all/forwarding",
        "",
    ),
    (
        "ReadWritePaths",
        "-/run/xtables.lock",
        "iptables-legacy takes this lock; it must exist (any earlier iptables run creates it) for introducer firewall rules on such hosts",
    ),
    ("ProtectKernelModules", "yes", ""),
    ("ProtectKernelLogs", "yes", ""),
    ("ProtectControlGroups", "yes", ""),
    ("ProtectClock", "yes", ""),
    ("ProtectHostname", "yes", ""),
    ("ProtectProc", "invisible", ""),
    ("KeyringMode", "private", ""),
    ("LockPersonality", "yes", ""),
    ("MemoryDenyWriteExecute", "yes", ""),
    ("RestrictRealtime", "yes", ""),
    ("RestrictSUIDSGID", "yes", ""),
    ("RestrictNamespaces", "yes", ""),
    ("RemoveIPC", "yes", ""),
    ("PrivateIPC", "yes", ""),
    (
        "RestrictAddressFamilies",
        "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        "",
    ),
    ("SystemCallArchitectures", "native", ""),
    (
        "SystemCallFilter",
        "@system-service",
        "not ~@privileged: it holds chown, which gives the API socket its group",
    ),
    ("SystemCallErrorNumber", "EPERM", ""),
    ("UMask", "0077", ""),
];

/// The unit text for `spec`.
///
/// # Errors
///
/// A relative or non-UTF-8 binary path or writable directory.
pub fn render_unit(spec: &UnitSpec) -> Result<String, UnitError> {
    if !spec.binary.is_absolute() {
        return Err(UnitError::RelativeBinary(spec.binary.clone()));
    }
    let binary = utf8(&spec.binary)?;
    let words = std::iter::once(binary)
        .chain(std::iter::once("join"))
        .chain(spec.join_args.iter().map(String::as_str));
    let exec = command_line(words);
    let mut writable = Vec::new();
    for dir in &spec.writable {
        if !dir.is_absolute() {
            return Err(UnitError::RelativeDir(dir.clone()));
        }
        let text = utf8(dir)?;
        if text.chars().any(|c| c == '$' || c.is_control()) {
            return Err(UnitError::UnsupportedDir(dir.clone()));
        }
        writable.push(quote_word(text));
    }

    let mut u = String::new();
    // `writeln!` into a String cannot fail.
    let mut line = |s: &str| {
        let _ = writeln!(u, "{s}");
    };
    line("# Generated by `wgmeshd install-service` (the Debian package ships the one without join");
    line("# options). To change the options, re-run install-service: it writes");
    line("# /etc/systemd/system/wgmesh.service, which takes precedence over a packaged unit.");
    line("# The mesh secret is not in this file: systemd hands /etc/wgmesh/secret to the daemon");
    line("# as the credential `secret` ($CREDENTIALS_DIRECTORY/secret), readable by it alone.");
    line("[Unit]");
    line("Description=wgmesh decentralized WireGuard mesh (wgmeshd)");
    let repository = env!("CARGO_PKG_REPOSITORY");
    if !repository.is_empty() {
        line(&format!("Documentation={repository}#run-as-a-service"));
    }
    line("After=network-online.target");
    line("Wants=network-online.target");
    line("");
    line("[Service]");
    line("# READY=1 once the interface is up and the cached peers are on the device; WATCHDOG=1");
    line("# only while the reconcile loop completes passes, so a stuck loop gets a restart.");
    line("Type=notify");
    line("NotifyAccess=main");
    line(&format!("WatchdogSec={WATCHDOG_SEC}s"));
    line(&format!("ExecStart={exec}"));
    line("# SIGHUP re-reads <state-dir>/<iface>.reload (advertise-routes, log-level).");
    line("ExecReload=/bin/kill -HUP $MAINPID");
    line("Restart=on-failure");
    line(&format!("RestartSec={RESTART_SEC}s"));
    line(&format!("TimeoutStopSec={TIMEOUT_STOP_SEC}s"));
    line(&format!("LoadCredential={CREDENTIAL_NAME}:{SECRET_PATH}"));
    line("# /var/lib/wgmesh (0700): identity, peer cache, reload file, lock.");
    line("StateDirectory=wgmesh");
    line("StateDirectoryMode=0700");
    line("# /run/wgmesh holds the API socket (0660, group wgmesh), so the directory is 0755.");
    line("# /run/wireguard holds the UAPI socket <iface>.sock that `wg show` reads. Both are kept");
    line("# when the service stops (RuntimeDirectoryPreserve=yes): /run/wireguard is shared with");
    line("# wireguard-go and other daemons, whose sockets must survive our stop; the daemon");
    line("# removes its own sockets at exit, and /run is emptied at boot anyway.");
    line("RuntimeDirectory=wgmesh wireguard");
    line("RuntimeDirectoryMode=0755");
    line("RuntimeDirectoryPreserve=yes");
    for (key, value, why) in HARDENING {
        if !why.is_empty() {
            line(&format!("# {why}"));
        }
        line(&format!("{key}={value}"));
    }
    if !writable.is_empty() {
        line("# Directories given on the command line.");
        line(&format!("ReadWritePaths={}", writable.join(" ")));
    }
    line("");
    line("[Install]");
    line("WantedBy=multi-user.target");
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::super::escape::tests::split_systemd;
    use super::*;

    fn spec(args: &[&str]) -> UnitSpec {
        UnitSpec {
            binary: PathBuf::from(PACKAGED_BINARY),
            join_args: args.iter().map(|s| (*s).to_owned()).collect(),
            writable: Vec::new(),
        }
    }

    fn value<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .collect()
    }

    #[test]
    fn packaged_unit_has_the_service_settings() {
        let unit = render_unit(&spec(&[])).unwrap();
        for (key, want) in [
            ("Type", "notify"),
            ("NotifyAccess", "main"),
            ("WatchdogSec", "30s"),
            ("ExecStart", "/usr/bin/wgmeshd join"),
            ("ExecReload", "/bin/kill -HUP $MAINPID"),
            ("Restart", "on-failure"),
            ("LoadCredential", "secret:/etc/wgmesh/secret"),
            ("StateDirectory", "wgmesh"),
            ("StateDirectoryMode", "0700"),
            ("RuntimeDirectory", "wgmesh wireguard"),
            ("RuntimeDirectoryPreserve", "yes"),
            ("After", "network-online.target"),
            ("Wants", "network-online.target"),
            ("WantedBy", "multi-user.target"),
            ("DeviceAllow", "/dev/net/tun rw"),
            ("UMask", "0077"),
        ] {
            assert_eq!(value(&unit, key), [want], "{key}");
        }
        assert!(!unit.contains("Environment"), "{unit}");
        assert!(!unit.contains("sh -c"), "{unit}");
    }

    #[test]
    fn exec_start_splits_back_into_the_join_argv() {
        let args = [
            "--state-dir",
            "/srv/wg mesh",
            "--socket-group",
            "wg$ops%1",
            "--advertise-routes",
            "10.1.0.0/24",
        ];
        let mut s = spec(&args);
        s.binary = PathBuf::from("/opt/my tools/wgmeshd");
        let unit = render_unit(&s).unwrap();
        let exec = value(&unit, "ExecStart");
        let argv = split_systemd(exec[0]).unwrap();
        let mut want = vec!["/opt/my tools/wgmeshd", "join"];
        want.extend(args);
        assert_eq!(argv, want);
    }

    #[test]
    fn bad_paths_are_refused() {
        let mut s = spec(&[]);
        s.binary = PathBuf::from("wgmeshd");
        assert_eq!(
            render_unit(&s),
            Err(UnitError::RelativeBinary("wgmeshd".into()))
        );
        let mut s = spec(&[]);
        s.writable = vec![PathBuf::from("state")];
        assert_eq!(render_unit(&s), Err(UnitError::RelativeDir("state".into())));
        s.writable = vec![PathBuf::from("/srv/$x")];
        assert_eq!(
            render_unit(&s),
            Err(UnitError::UnsupportedDir("/srv/$x".into()))
        );
    }

    #[test]
    fn extra_writable_dirs_table() {
        let cases: &[(&str, &str, &str, &[&str])] = &[
            ("defaults", STATE_DIR, "/run/wgmesh/wgmeshd.sock", &[]),
            (
                "custom state",
                "/srv/wgmesh",
                "/run/wgmesh/x.sock",
                &["/srv/wgmesh"],
            ),
            (
                "custom socket dir",
                STATE_DIR,
                "/run/other/wgmeshd.sock",
                &["/run/other"],
            ),
            ("same dir once", "/srv/w", "/srv/w/api.sock", &["/srv/w"]),
        ];
        for (name, state, socket, want) in cases {
            let got = extra_writable(Path::new(state), Path::new(socket));
            let want: Vec<PathBuf> = want.iter().map(PathBuf::from).collect();
            assert_eq!(got, want, "{name}");
        }
        let mut s = spec(&[]);
        s.writable = vec![PathBuf::from("/srv/wg mesh")];
        let unit = render_unit(&s).unwrap();
        assert!(unit.contains("ReadWritePaths=\"/srv/wg mesh\""), "{unit}");
    }
}
