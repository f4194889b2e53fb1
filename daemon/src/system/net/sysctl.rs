//! IP forwarding switches, read and written through `/proc/sys`.
//!
//! Only a node that relays for others or routes networks needs forwarding; callers decide and
//! keep the [`ForwardingState`] returned by [`enable_forwarding`] to put the previous values back
//! with [`restore_forwarding`] on shutdown. `/proc/sys/net` shows the network namespace of the
//! calling thread.
//!
//! Why these two global switches and no per-interface ones:
//! - **IPv4**: the kernel forwards a packet when its *incoming* interface has
//!   `net.ipv4.conf.<iface>.forwarding` on. Writing `net.ipv4.ip_forward` (the same switch as
//!   `conf.all.forwarding`) copies the value to every interface and to `conf.default`, which
//!   interfaces created later start from, so with `ip_forward` on the mesh interface forwards
//!   whether it was created before or after. (Only an operator who switched
//!   `conf.default.forwarding` off *after* turning `ip_forward` on gets a mesh interface that
//!   does not forward; that setting is theirs.) Restoring `ip_forward=0` likewise switches every
//!   interface off again.
//! - **IPv6**: the kernel forwards only while `net.ipv6.conf.all.forwarding` is on; the
//!   per-interface value does not enable forwarding. Writing it also sets every interface's value,
//!   which makes them routers: interfaces with `accept_ra=1` then ignore router advertisements, so
//!   a host that gets its IPv6 default route or addresses by SLAAC loses them when they expire
//!   (`accept_ra=2` keeps them). [`enable_forwarding`] names those interfaces in a warning when it
//!   turns IPv6 forwarding on.
//!
//! Writing a switch that is already at the wanted value is skipped, so a host that forwards
//! already sees no write at all, neither at start nor at exit.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::NetError;

/// Where the kernel's sysctls live.
pub const PROC_SYS: &str = "/proc/sys";
/// IPv4 forwarding, relative to [`PROC_SYS`].
pub const IPV4_FORWARDING: &str = "net/ipv4/ip_forward";
/// IPv6 forwarding on all interfaces, relative to [`PROC_SYS`].
pub const IPV6_FORWARDING: &str = "net/ipv6/conf/all/forwarding";
/// The per-interface IPv6 settings, relative to [`PROC_SYS`].
const IPV6_CONF: &str = "net/ipv6/conf";

/// The forwarding switches at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardingState {
    /// `net.ipv4.ip_forward`.
    pub ipv4: bool,
    /// `net.ipv6.conf.all.forwarding`; `None` when the kernel has IPv6 disabled (no such file).
    pub ipv6: Option<bool>,
}

impl ForwardingState {
    /// What [`enable_forwarding`] did, when `self` is the state it returned, for the log:
    /// e.g. `IPv4 switched on, IPv6 was already on`.
    pub fn enable_summary(&self) -> String {
        let v4 = if self.ipv4 {
            "IPv4 was already on"
        } else {
            "IPv4 switched on"
        };
        let v6 = match self.ipv6 {
            Some(true) => "IPv6 was already on",
            Some(false) => "IPv6 switched on",
            None => "IPv6 disabled in the kernel",
        };
        format!("{v4}, {v6}")
    }
}

/// Reads both forwarding switches under `proc_sys` (normally [`PROC_SYS`]).
pub fn read_forwarding(proc_sys: &Path) -> Result<ForwardingState, NetError> {
    Ok(ForwardingState {
        ipv4: read_switch(&proc_sys.join(IPV4_FORWARDING))?,
        ipv6: read_optional(&proc_sys.join(IPV6_FORWARDING))?,
    })
}

/// Turns IPv4 and (when available) IPv6 forwarding on and returns the previous state. A switch
/// that is already on is not written.
pub fn enable_forwarding(proc_sys: &Path) -> Result<ForwardingState, NetError> {
    let previous = read_forwarding(proc_sys)?;
    if !previous.ipv4 {
        write_switch(&proc_sys.join(IPV4_FORWARDING), true)?;
    }
    if previous.ipv6 == Some(false) {
        write_switch(&proc_sys.join(IPV6_FORWARDING), true)?;
        let ignoring = accepting_router_advertisements(proc_sys);
        if !ignoring.is_empty() {
            tracing::warn!(
                interfaces = ?ignoring,
                "IPv6 forwarding is on: these interfaces (accept_ra=1) now ignore router \
                 advertisements; set accept_ra=2 on the ones that need them"
            );
        }
    }
    tracing::debug!(
        previous_ipv4 = previous.ipv4,
        previous_ipv6 = ?previous.ipv6,
        "IP forwarding enabled"
    );
    Ok(previous)
}

/// Interfaces whose `accept_ra` is 1 (honoured only while not forwarding), sorted; `all`,
/// `default` and `lo` are left out. Unreadable entries are skipped: this only feeds a warning.
fn accepting_router_advertisements(proc_sys: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(proc_sys.join(IPV6_CONF)) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !matches!(n.as_str(), "all" | "default" | "lo"))
        .filter(|n| {
            fs::read_to_string(proc_sys.join(IPV6_CONF).join(n).join("accept_ra"))
                .is_ok_and(|v| v.trim() == "1")
        })
        .collect();
    names.sort();
    names
}

/// Puts the switches back to `previous` (as returned by [`enable_forwarding`]). Switches already
/// at their previous value are not written.
pub fn restore_forwarding(proc_sys: &Path, previous: ForwardingState) -> Result<(), NetError> {
    let now = read_forwarding(proc_sys)?;
    if now.ipv4 != previous.ipv4 {
        write_switch(&proc_sys.join(IPV4_FORWARDING), previous.ipv4)?;
    }
    if let (Some(now6), Some(prev6)) = (now.ipv6, previous.ipv6)
        && now6 != prev6
    {
        write_switch(&proc_sys.join(IPV6_FORWARDING), prev6)?;
    }
    Ok(())
}

fn read_optional(path: &Path) -> Result<Option<bool>, NetError> {
    match fs::read_to_string(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(sysctl_error("read", path, source)),
        Ok(text) => parse_switch(path, &text).map(Some),
    }
}

fn read_switch(path: &Path) -> Result<bool, NetError> {
    let text = fs::read_to_string(path).map_err(|e| sysctl_error("read", path, e))?;
    parse_switch(path, &text)
}

fn parse_switch(path: &Path, text: &str) -> Result<bool, NetError> {
    match text.trim() {
        "0" => Ok(false),
        "1" => Ok(true),
        other => Err(NetError::SysctlValue {
            path: path.to_owned(),
            value: other.to_owned(),
        }),
    }
}

fn write_switch(path: &Path, on: bool) -> Result<(), NetError> {
    // No O_CREAT: a sysctl that does not exist is an error, not a new file.
    let mut file = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| sysctl_error("open", path, e))?;
    file.write_all(if on { b"1\n" } else { b"0\n" })
        .map_err(|e| sysctl_error("write", path, e))
}

fn sysctl_error(op: &'static str, path: &Path, source: io::Error) -> NetError {
    NetError::Sysctl {
        op,
        path: PathBuf::from(path),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_proc(v4: &str, v6: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let p4 = dir.path().join(IPV4_FORWARDING);
        fs::create_dir_all(p4.parent().unwrap()).unwrap();
        fs::write(&p4, v4).unwrap();
        if let Some(v6) = v6 {
            let p6 = dir.path().join(IPV6_FORWARDING);
            fs::create_dir_all(p6.parent().unwrap()).unwrap();
            fs::write(&p6, v6).unwrap();
        }
        dir
    }

    #[test]
    fn enable_reports_previous_and_restore_puts_it_back() {
        let dir = fake_proc("0\n", Some("1\n"));
        let prev = enable_forwarding(dir.path()).unwrap();
        assert_eq!(
            prev,
            ForwardingState {
                ipv4: false,
                ipv6: Some(true)
            }
        );
        let now = read_forwarding(dir.path()).unwrap();
        assert_eq!(
            now,
            ForwardingState {
                ipv4: true,
                ipv6: Some(true)
            }
        );
        restore_forwarding(dir.path(), prev).unwrap();
        assert_eq!(read_forwarding(dir.path()).unwrap(), prev);
    }

    #[test]
    fn missing_ipv6_is_none_and_not_created() {
        let dir = fake_proc("1\n", None);
        let prev = enable_forwarding(dir.path()).unwrap();
        assert_eq!(prev.ipv6, None);
        assert!(!dir.path().join(IPV6_FORWARDING).exists());
        restore_forwarding(dir.path(), prev).unwrap();
    }

    #[test]
    fn router_advertisement_listeners_are_found() {
        let dir = fake_proc("0\n", Some("0\n"));
        for (iface, accept_ra) in [
            ("eth0", "1\n"),
            ("eth1", "2\n"),
            ("eth2", "0\n"),
            ("lo", "1\n"),
            ("default", "1\n"),
            ("wg0", "1\n"),
        ] {
            let d = dir.path().join(IPV6_CONF).join(iface);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("accept_ra"), accept_ra).unwrap();
        }
        assert_eq!(accepting_router_advertisements(dir.path()), ["eth0", "wg0"]);
        assert!(accepting_router_advertisements(Path::new("/nonexistent")).is_empty());
    }

    #[test]
    fn enable_summary_says_what_changed() {
        for (name, state, want) in [
            (
                "both switched",
                ForwardingState {
                    ipv4: false,
                    ipv6: Some(false),
                },
                "IPv4 switched on, IPv6 switched on",
            ),
            (
                "both already on",
                ForwardingState {
                    ipv4: true,
                    ipv6: Some(true),
                },
                "IPv4 was already on, IPv6 was already on",
            ),
            (
                "no IPv6",
                ForwardingState {
                    ipv4: false,
                    ipv6: None,
                },
                "IPv4 switched on, IPv6 disabled in the kernel",
            ),
        ] {
            assert_eq!(state.enable_summary(), want, "{name}");
        }
    }

    #[test]
    fn garbage_and_missing_v4_are_errors_naming_the_file() {
        let dir = fake_proc("yes\n", None);
        let err = enable_forwarding(dir.path()).unwrap_err().to_string();
        assert!(err.contains("ip_forward") && err.contains("yes"), "{err}");
        let empty = tempfile::tempdir().unwrap();
        let err = read_forwarding(empty.path()).unwrap_err().to_string();
        assert!(err.contains("ip_forward"), "{err}");
    }
}
