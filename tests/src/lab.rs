//! The network lab: simulated hosts on simulated LANs, on one machine, for end-to-end tests.
//!
//! Every *host* is a Linux network namespace. Every *LAN* is a bridge (`br1`, `br2`, …) that
//! lives in one extra *bridge namespace* per lab. A host has one leg per LAN it is on: a veth
//! pair whose bridge-side end (`l<lan>h<host number>`) is a port of that LAN's bridge and whose
//! host-side end is `eth0`, `eth1`, … in the host namespace, with the address
//! `192.168.<100 + lan>.<host number>/24`. Host numbers count from 1 in the order the hosts
//! first appear in the builder, so a host has the same last octet on every LAN it is on.
//! Each host also has `lo` up and a route `224.0.0.0/4 dev eth0`, so LAN multicast discovery
//! works on its first leg even for software that joins through the routing table; the bridges
//! have multicast snooping off (they flood multicast). [`LabBuilder::subnet_routes_only`] leaves
//! that route out, so a host's only routes are the /24s of its legs (like a host with no
//! default route).
//!
//! Nothing is added to the root namespace: no interface, no address, no route. Hosts have no
//! default route and IPv4 forwarding is off in every host, so hosts on different LANs cannot
//! reach each other, not even through a host that has a leg on both.
//!
//! Topologies: [`Lab::one_lan`] (N hosts on LAN 1), [`Lab::two_lans`] (LAN 1 and LAN 2 joined
//! by one host with `eth0` on LAN 1 and `eth1` on LAN 2) and any other mix with
//! [`Lab::builder`]. A *public* LAN ([`LabBuilder::public_lan`]) uses a documentation range
//! (`203.0.113.0/24`, then `198.51.100.0/24`, `192.0.2.0/24`) instead of `192.168.x/24`, so that
//! software which ignores private addresses (STUN results, observed endpoints, introducer
//! candidates) treats its hosts as the Internet; those addresses exist only inside the lab's
//! namespaces. Hosts behind a NAT router: [`LabBuilder::nat_host`] (see the section "NAT").
//!
//! Files: the lab owns a directory `$TMPDIR/wgmesh-lab-<pid>-<n>-<test>/` with one directory per
//! host holding `state/` (for `--state-dir`), `run/` (bind-mounted on `/run/wireguard` for every
//! process started in the host, because userspace WireGuard's UAPI socket path is fixed),
//! the API socket path `wgmeshd.sock` and `logs/` (stdout and stderr of every spawned process).
//!
//! Processes: [`Host::spawn`] starts
//! `ip netns exec NS sh -c 'mount --bind "$0" /run/wireguard && exec "$@"' RUN_DIR program args…`;
//! `ip netns exec` gives the command its own mount namespace (so the bind mount stays private)
//! and every step `exec`s, so the recorded PID is the program's own PID.
//!
//! Cleanup: dropping the [`Lab`] (also while unwinding from a panic) sends SIGTERM to every
//! process it started, waits up to 5 s, sends SIGKILL to the rest and reaps them, SIGKILLs any
//! other process still inside one of its namespaces (`ip netns pids`), deletes the namespaces
//! (which destroys the veths and bridges) and removes the directory. When the drop happens
//! during a panic it first prints the tail of every process log to stderr, so a failing test
//! shows what its daemons said. Set `WGMESH_LAB_KEEP=1` to keep the directory (not the
//! namespaces) for a post-mortem.
//!
//! Uniqueness: namespace names are `wgl-<pid>-<n>-<test>-<host>` (`<n>` is a per-process
//! counter), so labs in parallel threads or processes never collide, even with the same host
//! names. Interface names are at most 15 bytes and only need to be unique inside the lab's own
//! namespaces. A leftover namespace with the same name is deleted before it is created, and the
//! first lab of a process removes the namespaces and directories of labs whose process is gone
//! (see [`sweep_stale`]).
//!
//! Privilege: call [`require_root`] first; it skips the test when not root (fails under
//! `CI=true`) and fails with the package name when `ip` (iproute2) is missing.
//!
//! ```no_run
//! use wgmesh_tests::lab::{self, Lab};
//! if !lab::require_root() {
//!     return;
//! }
//! let lab = Lab::one_lan("doc_example", &["a", "b"]).unwrap();
//! let (a, b) = (lab.host("a"), lab.host("b"));
//! assert!(a.ping(b.ip()).unwrap());
//! ```

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use ipnet::Ipv4Net;

/// First component of every namespace name the lab creates (`wgl-<pid>-<n>-<test>-<host>`).
pub const NS_PREFIX: &str = "wgl";
/// First component of every lab directory name in the temp dir.
const DIR_PREFIX: &str = "wgmesh-lab";
/// The fixed UAPI socket directory that each host gets its own copy of.
pub const RUN_WIREGUARD: &str = "/run/wireguard";
/// How long a process gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// Default time limit of [`Host::run`] and [`LabCommand::output`].
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// Message printed when a lab test is skipped for lack of privilege.
pub const SKIP_MESSAGE: &str = "skipping: the network lab needs root (run the tests with sudo)";

/// The shell wrapper that gives a process its host's own `/run/wireguard` and then `exec`s it.
const BIND_SCRIPT: &str = r#"mount --bind "$0" /run/wireguard && exec "$@""#;
/// Lines of each log printed when a lab is dropped during a panic.
const PANIC_LOG_LINES: usize = 60;

static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);
static LOG_COUNTER: AtomicU32 = AtomicU32::new(0);
static SWEEP: Once = Once::new();

// ------------------------------------------------------------------------------------------
// privilege and tools

/// Whether the lab can run: `true` when the effective user is root.
///
/// When not root it prints [`SKIP_MESSAGE`] and returns `false` (the test should `return`),
/// except when the environment has `CI=true`: there a missing privilege is a failure and this
/// panics. When root but `ip` is missing it panics naming the package (iproute2).
///
/// ```no_run
/// if !wgmesh_tests::lab::require_root() {
///     return;
/// }
/// ```
pub fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "the network lab needs root, and under CI=true that is a failure, not a skip \
                 (run the tests with sudo; euid is {euid})"
            );
        }
        eprintln!("{SKIP_MESSAGE}");
        return false;
    }
    require_tool("ip", "iproute2");
    require_tool("mount", "mount");
    true
}

/// Panics with a message naming the Debian package when `program` is not found in `PATH`.
pub fn require_tool(program: &str, package: &str) {
    if find_in_path(program).is_none() {
        panic!(
            "the network lab needs `{program}`, which is not in PATH: \
             install the package {package} (apt-get install {package})"
        );
    }
}

/// The full path of an executable `program` found in `PATH`, if any.
pub fn find_in_path(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return is_executable(Path::new(program)).then(|| PathBuf::from(program));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn tool_error(program: &str, package: &str) -> anyhow::Error {
    anyhow!("`{program}` is not in PATH: install the package {package} (apt-get install {package})")
}

// ------------------------------------------------------------------------------------------
// small command helpers (root namespace side: only `ip` to manage namespaces)

/// Runs `ip ARGS` and fails with its stderr when it does not succeed.
fn ip<S: AsRef<OsStr>>(args: &[S]) -> Result<String> {
    let show = || {
        args.iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let out = Command::new("ip").args(args).output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            tool_error("ip", "iproute2")
        } else {
            anyhow!(e).context(format!("cannot run `ip {}`", show()))
        }
    })?;
    ensure!(
        out.status.success(),
        "`ip {}` failed ({}): {}",
        show(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Names of all named network namespaces (`ip netns list`).
pub fn list_namespaces() -> Result<Vec<String>> {
    let out = ip(&["netns", "list"])?;
    // Lines look like "name" or "name (id: 3)".
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// PIDs of the processes inside namespace `ns` (`ip netns pids`).
fn namespace_pids(ns: &str) -> Vec<i32> {
    ip(&["netns", "pids", ns])
        .map(|out| {
            out.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// SIGKILLs every process inside `ns`, then deletes the namespace. Errors are returned, not
/// printed; a namespace that does not exist is not an error.
fn kill_and_delete_namespace(ns: &str) -> Result<()> {
    if !Path::new("/run/netns").join(ns).exists() {
        return Ok(());
    }
    for pid in namespace_pids(ns) {
        // SAFETY: plain kill(2) on a PID that `ip netns pids` just listed.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    ip(&["netns", "del", ns]).map(|_| ())
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Removes what labs of dead processes left behind: namespaces named `wgl-<pid>-…` and
/// directories `$TMPDIR/wgmesh-lab-<pid>-…` whose `<pid>` no longer exists (a test run that
/// was SIGKILLed cannot clean up). Processes still inside those namespaces are killed.
/// Runs automatically once per process before the first lab is built.
pub fn sweep_stale() -> Result<()> {
    let owner = |name: &str, prefix: &str| -> Option<i32> {
        let rest = name.strip_prefix(prefix)?.strip_prefix('-')?;
        let pid: i32 = rest.split('-').next()?.parse().ok()?;
        (pid > 0 && pid != std::process::id() as i32).then_some(pid)
    };
    for ns in list_namespaces()? {
        if owner(&ns, NS_PREFIX).is_some_and(|pid| !pid_alive(pid)) {
            kill_and_delete_namespace(&ns)
                .with_context(|| format!("removing stale namespace {ns}"))?;
        }
    }
    if let Ok(entries) = fs::read_dir(std::env::temp_dir()) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if owner(&name, DIR_PREFIX).is_some_and(|pid| !pid_alive(pid)) {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
    Ok(())
}

/// Polls `cond` every 20 ms until it returns `true` or `timeout` passes; returns the last result.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock must not stop the cleanup.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn sanitize(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    out.truncate(max);
    if out.is_empty() {
        out.push('t');
    }
    out
}

fn tail(text: &str, lines: usize) -> &str {
    let mut idx = text.len();
    for _ in 0..=lines {
        match text[..idx].rfind('\n') {
            Some(i) => idx = i,
            None => return text,
        }
    }
    &text[idx + 1..]
}

// ------------------------------------------------------------------------------------------
// topology

/// Builds a lab with any number of LANs; a host listed on several LANs gets a leg on each.
#[derive(Debug, Clone)]
pub struct LabBuilder {
    test_name: String,
    lans: Vec<LanSpec>,
    /// Whether hosts get `224.0.0.0/4 dev eth0` (the default).
    multicast_route: bool,
    /// Hosts behind a NAT router of their own, in call order (see [`LabBuilder::nat_host`]).
    nat_hosts: Vec<(String, NatKind)>,
}

/// One LAN as the builder was given it.
#[derive(Debug, Clone)]
struct LanSpec {
    hosts: Vec<String>,
    /// `None`: `192.168.<100 + lan>.0/24`.
    subnet: Option<Ipv4Net>,
}

/// The subnets of public LANs, in the order [`LabBuilder::public_lan`] hands them out
/// (documentation ranges, RFC 5737).
const PUBLIC_SUBNETS: [[u8; 3]; 3] = [[203, 0, 113], [198, 51, 100], [192, 0, 2]];

impl LabBuilder {
    /// Adds the next LAN (LAN 1, LAN 2, … in call order, subnet `192.168.<100 + lan>.0/24`)
    /// with these hosts. Host names: lowercase letters, digits, `_` and `-`, at most 20 bytes,
    /// not `br`.
    pub fn lan<S: AsRef<str>>(mut self, hosts: &[S]) -> Self {
        self.lans.push(LanSpec {
            hosts: hosts.iter().map(|h| h.as_ref().to_owned()).collect(),
            subnet: None,
        });
        self
    }

    /// Adds the next LAN like [`LabBuilder::lan`], but with a public-looking subnet: the first
    /// public LAN is `203.0.113.0/24`, the second `198.51.100.0/24`, the third `192.0.2.0/24`
    /// (documentation ranges: not private, not loopback or link-local, so "is this address
    /// public?" rules accept them; they never leave the lab's namespaces). Host addresses are
    /// `<subnet>.<host number>` as on any LAN. More than three public LANs fail at `build`.
    pub fn public_lan<S: AsRef<str>>(mut self, hosts: &[S]) -> Self {
        let n = self.lans.iter().filter(|l| l.subnet.is_some()).count();
        let subnet = PUBLIC_SUBNETS
            .get(n)
            .and_then(|[a, b, c]| Ipv4Net::new(Ipv4Addr::new(*a, *b, *c, 0), 24).ok())
            // Out of ranges: an invalid /0 placeholder that `build` refuses.
            .unwrap_or_default();
        self.lans.push(LanSpec {
            hosts: hosts.iter().map(|h| h.as_ref().to_owned()).collect(),
            subnet: Some(subnet),
        });
        self
    }

    /// Gives hosts no multicast route: their only routes are the /24 of each leg (no default,
    /// no `224.0.0.0/4`), so anything that picks an interface through the routing table finds
    /// none. Without this, every host gets `224.0.0.0/4 dev eth0`.
    pub fn subnet_routes_only(mut self) -> Self {
        self.multicast_route = false;
        self
    }

    /// Creates the namespaces, bridges, veths and directories. On error everything created so
    /// far is removed again.
    pub fn build(self) -> Result<Lab> {
        ensure!(!self.lans.is_empty(), "a lab needs at least one LAN");
        // Host numbers in order of first appearance.
        let mut order: Vec<String> = Vec::new();
        for (i, lan) in self.lans.iter().enumerate() {
            ensure!(!lan.hosts.is_empty(), "LAN {} has no hosts", i + 1);
            ensure!(
                lan.subnet.is_none_or(|s| s.prefix_len() == 24),
                "at most {} public LANs",
                PUBLIC_SUBNETS.len()
            );
            for h in &lan.hosts {
                validate_host_name(h)?;
                ensure!(
                    lan.hosts.iter().filter(|x| *x == h).count() == 1,
                    "host {h} is listed twice on LAN {}",
                    i + 1
                );
                if !order.contains(h) {
                    order.push(h.clone());
                }
            }
        }
        // NAT hosts and their routers come last, so they never renumber the other hosts.
        let mut lans = self.lans.clone();
        let nats = nat_lans(&self.nat_hosts, &mut lans, &mut order)?;
        ensure!(lans.len() <= 150, "at most 150 LANs");
        ensure!(order.len() <= 250, "at most 250 hosts");
        if !nats.is_empty() {
            require_tool("nft", "nftables");
        }

        SWEEP.call_once(|| {
            if let Err(e) = sweep_stale() {
                eprintln!("lab: cleaning up stale labs failed: {e:#}");
            }
        });
        fs::create_dir_all(RUN_WIREGUARD)
            .with_context(|| format!("creating the bind-mount point {RUN_WIREGUARD}"))?;

        let pid = std::process::id();
        let n = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let test = sanitize(&self.test_name, 20);
        let prefix = format!("{NS_PREFIX}-{pid}-{n}-{test}");
        let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}-{pid}-{n}-{test}"));
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("removing stale {dir:?}"))?;
        }
        fs::create_dir_all(&dir).with_context(|| format!("creating lab directory {dir:?}"))?;

        let procs: Registry = Arc::default();
        let mut lab = Lab {
            test_name: self.test_name.clone(),
            bridge_ns: format!("{prefix}-br"),
            prefix,
            dir,
            lans: Vec::new(),
            hosts: Vec::new(),
            namespaces: Vec::new(),
            procs: procs.clone(),
            keep_dir: std::env::var("WGMESH_LAB_KEEP").is_ok_and(|v| v == "1"),
            nats: Vec::new(),
        };
        // From here on, `lab` is the cleanup guard: an early return drops it.
        let bridge_ns = lab.bridge_ns.clone();
        lab.add_namespace(&bridge_ns)?;
        for (i, spec) in lans.iter().enumerate() {
            let lan = i + 1;
            let bridge = format!("br{lan}");
            ip(&[
                "-n",
                &bridge_ns,
                "link",
                "add",
                &bridge,
                "type",
                "bridge",
                "mcast_snooping",
                "0",
            ])?;
            ip(&["-n", &bridge_ns, "link", "set", &bridge, "up"])?;
            let subnet = match spec.subnet {
                Some(subnet) => subnet,
                None => Ipv4Net::new(Ipv4Addr::new(192, 168, 100 + lan as u8, 0), 24)
                    .context("LAN subnet")?,
            };
            lab.lans.push(Lan { subnet, bridge });
        }

        for (hi, name) in order.iter().enumerate() {
            let number = hi as u8 + 1;
            let ns = format!("{}-{name}", lab.prefix);
            lab.add_namespace(&ns)?;
            let host_dir = lab.dir.join(name);
            for sub in ["state", "run", "logs"] {
                let p = host_dir.join(sub);
                fs::create_dir_all(&p).with_context(|| format!("creating {p:?}"))?;
            }
            let mut ifaces = Vec::new();
            for (li, spec) in lans.iter().enumerate() {
                if !spec.hosts.contains(name) {
                    continue;
                }
                let lan = li + 1;
                let iface = format!("eth{}", ifaces.len());
                let port = format!("l{lan}h{number}");
                let subnet = lab.lans[li].subnet;
                let addr = Ipv4Addr::from(u32::from(subnet.network()) + u32::from(number));
                ip(&[
                    "-n", &bridge_ns, "link", "add", &port, "type", "veth", "peer", "name", &iface,
                    "netns", &ns,
                ])?;
                ip(&[
                    "-n",
                    &bridge_ns,
                    "link",
                    "set",
                    &port,
                    "master",
                    &lab.lans[li].bridge,
                    "up",
                ])?;
                ip(&[
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{addr}/{}", subnet.prefix_len()),
                    "dev",
                    &iface,
                ])?;
                ip(&["-n", &ns, "link", "set", &iface, "up"])?;
                ifaces.push(LabIface {
                    name: iface,
                    lan,
                    addr,
                    subnet,
                    bridge_port: port,
                });
            }
            // IPv4 forwarding may be inherited from the root namespace: switch it off, so a
            // host with legs on two LANs never routes between them.
            let out = Command::new("ip")
                .args(["netns", "exec", &ns, "sh", "-c"])
                .arg("echo 0 > /proc/sys/net/ipv4/ip_forward")
                .output()
                .context("running `ip netns exec` to switch off forwarding")?;
            ensure!(
                out.status.success(),
                "switching off IPv4 forwarding in {ns} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            if self.multicast_route {
                ip(&["-n", &ns, "route", "add", "224.0.0.0/4", "dev", "eth0"])?;
            }
            let socket = host_dir.join("wgmeshd.sock");
            ensure!(
                socket.as_os_str().len() < 100,
                "socket path {socket:?} is too long for a unix socket: use a shorter TMPDIR"
            );
            lab.hosts.push(Host {
                name: name.clone(),
                number,
                ns,
                bridge_ns: bridge_ns.clone(),
                dir: host_dir,
                ifaces,
                procs: procs.clone(),
            });
        }
        for host in &lab.hosts {
            host.wait_links_up()?;
        }
        for nat in &nats {
            lab.set_up_nat(nat)?;
        }
        lab.nats = nats;
        Ok(lab)
    }
}

fn validate_host_name(h: &str) -> Result<()> {
    ensure!(
        !h.is_empty()
            && h.len() <= 20
            && h.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            && h != "br",
        "bad host name {h:?}: use 1 to 20 of [a-z0-9_-], and not `br`"
    );
    Ok(())
}

#[derive(Debug)]
struct Lan {
    subnet: Ipv4Net,
    bridge: String,
}

/// One leg of a host: a host-side veth end on one LAN.
#[derive(Debug, Clone)]
pub struct LabIface {
    /// Interface name inside the host (`eth0`, `eth1`, …).
    pub name: String,
    /// LAN number (1-based).
    pub lan: usize,
    /// The host's address on this LAN.
    pub addr: Ipv4Addr,
    /// The LAN's subnet (`192.168.<100 + lan>.0/24`, or a documentation range on a public LAN).
    pub subnet: Ipv4Net,
    /// Name of the other veth end, a bridge port in the bridge namespace (`l<lan>h<n>`).
    pub bridge_port: String,
}

type Registry = Arc<Mutex<Vec<Arc<ProcShared>>>>;

/// A running network lab; dropping it tears everything down (see the module docs).
#[derive(Debug)]
pub struct Lab {
    test_name: String,
    prefix: String,
    dir: PathBuf,
    bridge_ns: String,
    lans: Vec<Lan>,
    hosts: Vec<Host>,
    /// Namespaces created so far, in creation order.
    namespaces: Vec<String>,
    procs: Registry,
    keep_dir: bool,
    /// The NAT routers, in [`LabBuilder::nat_host`] order.
    nats: Vec<Nat>,
}

impl Lab {
    /// A builder for any topology; `test_name` goes into the names (for debugging only).
    pub fn builder(test_name: &str) -> LabBuilder {
        LabBuilder {
            test_name: test_name.to_owned(),
            lans: Vec::new(),
            multicast_route: true,
            nat_hosts: Vec::new(),
        }
    }

    /// One LAN with these hosts: host number `i` (1-based) has `eth0` `192.168.101.<i>/24`.
    pub fn one_lan<S: AsRef<str>>(test_name: &str, hosts: &[S]) -> Result<Lab> {
        Self::builder(test_name).lan(hosts).build()
    }

    /// Two LANs joined by `joiner`: LAN 1 holds `lan1` and `joiner`, LAN 2 holds `joiner` and
    /// `lan2`. The joiner has `eth0` on LAN 1 and `eth1` on LAN 2 and does not forward, so
    /// hosts of LAN 1 and LAN 2 cannot reach each other directly.
    ///
    /// Host numbers: `lan1` hosts first, then `joiner`, then `lan2`; e.g.
    /// `two_lans(t, &["a"], "b", &["c"])` gives a `192.168.101.1`, b `192.168.101.2` and
    /// `192.168.102.2`, c `192.168.102.3`.
    pub fn two_lans<S: AsRef<str>>(
        test_name: &str,
        lan1: &[S],
        joiner: &str,
        lan2: &[S],
    ) -> Result<Lab> {
        let mut l1: Vec<&str> = lan1.iter().map(AsRef::as_ref).collect();
        l1.push(joiner);
        let mut l2 = vec![joiner];
        l2.extend(lan2.iter().map(AsRef::as_ref));
        Self::builder(test_name).lan(&l1).lan(&l2).build()
    }

    /// The host called `name`; panics (listing the hosts) when there is none.
    pub fn host(&self, name: &str) -> &Host {
        self.try_host(name).unwrap_or_else(|| {
            let names: Vec<&str> = self.hosts.iter().map(|h| h.name.as_str()).collect();
            panic!(
                "lab {} has no host {name:?} (hosts: {names:?})",
                self.prefix
            )
        })
    }

    /// The host called `name`, if any.
    pub fn try_host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// All hosts, in host-number order.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The name given to the builder.
    pub fn test_name(&self) -> &str {
        &self.test_name
    }

    /// The unique prefix of every namespace name of this lab (`wgl-<pid>-<n>-<test>`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The lab's directory (removed on drop).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The namespace that holds the bridges.
    pub fn bridge_ns(&self) -> &str {
        &self.bridge_ns
    }

    /// Subnet of LAN `lan` (1-based), if the lab has it.
    pub fn lan_subnet(&self, lan: usize) -> Option<Ipv4Net> {
        lan.checked_sub(1)
            .and_then(|i| self.lans.get(i))
            .map(|l| l.subnet)
    }

    /// Every namespace of this lab: the bridge namespace and one per host.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    /// Every process spawned in this lab so far (running or not).
    pub fn processes(&self) -> Vec<LabProcess> {
        lock(&self.procs).iter().cloned().map(LabProcess).collect()
    }

    /// The logs of every process spawned in this lab, labelled, each cut to its last `lines`.
    pub fn logs(&self, lines: usize) -> String {
        let mut out = String::new();
        for p in self.processes() {
            out.push_str(&p.logs_tail(lines));
        }
        out
    }

    /// Prints [`Lab::logs`] to stderr (cargo test shows it for failing tests).
    pub fn print_logs(&self, lines: usize) {
        eprintln!(
            "===== lab {} ({}) process logs =====\n{}",
            self.prefix,
            self.dir.display(),
            self.logs(lines)
        );
    }

    fn add_namespace(&mut self, ns: &str) -> Result<()> {
        // A leftover with the same name (a crashed earlier run) must not break this one.
        kill_and_delete_namespace(ns)
            .with_context(|| format!("removing leftover namespace {ns}"))?;
        ip(&["netns", "add", ns])?;
        self.namespaces.push(ns.to_owned());
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if thread::panicking() {
            self.print_logs(PANIC_LOG_LINES);
        }
        let procs: Vec<Arc<ProcShared>> = lock(&self.procs).clone();
        for p in &procs {
            let _ = p.signal(libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        for p in &procs {
            let left = deadline.saturating_duration_since(Instant::now());
            if !matches!(p.wait_timeout(left), Ok(Some(_))) {
                let _ = p.signal(libc::SIGKILL);
                if !matches!(p.wait_timeout(Duration::from_secs(5)), Ok(Some(_))) {
                    eprintln!("lab {}: pid {} did not die on SIGKILL", self.prefix, p.pid);
                }
            }
        }
        for ns in self.namespaces.iter().rev() {
            if let Err(e) = kill_and_delete_namespace(ns) {
                eprintln!("lab {}: {e:#}", self.prefix);
            }
        }
        if self.keep_dir {
            eprintln!(
                "lab {}: WGMESH_LAB_KEEP=1, keeping {}",
                self.prefix,
                self.dir.display()
            );
        } else if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("lab {}: removing {}: {e}", self.prefix, self.dir.display());
        }
    }
}

// ------------------------------------------------------------------------------------------
// NAT: hosts behind a router namespace (STUN, rendezvous and hole-punching tests)
//
// `LabBuilder::nat_host("a", NatKind::Cone)` puts host `a` behind a NAT router of its own:
//
//   LAN 1 (the "public" LAN; make it a `public_lan`)      private LAN of `a` (192.168.x/24)
//   ── a-nat eth0 (masquerade out of here) ── a-nat ── a-nat eth1 ── a eth0 (default via a-nat)
//
// - The router is an ordinary lab host named `<name>-nat` with `eth0` on LAN 1 and `eth1` on
//   a LAN of its own that is added after every LAN given to the builder; `<name>` has `eth0`
//   on that private LAN only, and a default route through the router. Routers and NAT hosts
//   are numbered after every other host (in call order: router, then host), so adding NAT
//   hosts never changes other hosts' addresses.
// - The router forwards IPv4 and masquerades what leaves through `eth0` to its LAN-1 address
//   (nftables, table `ip wgmesh_lab_nat`): `NatKind::Cone` is plain masquerade (one mapping
//   per private source address and port, whatever the destination, source port kept when
//   free: endpoint-independent mapping; conntrack still filters inbound traffic to replies,
//   like a port-restricted cone), `NatKind::Symmetric` masquerades with `fully-random`
//   (a new random public port for every new destination). Nothing routes *into* a private
//   LAN: public hosts reach a NAT host only through mappings it opened.
// - Hosts of LAN 1 reach the NAT host's public side at `Lab::nat_router(name).ip()`.

/// How a lab NAT router maps a private host's flows to its public address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatKind {
    /// Plain masquerade: the same public address and port for every destination of one private
    /// socket (STUN sees `cone`).
    Cone,
    /// Masquerade with `fully-random` ports: a different public port per destination (STUN sees
    /// `symmetric`).
    Symmetric,
}

impl NatKind {
    /// The nftables masquerade statement of this kind.
    fn masquerade(self) -> &'static str {
        match self {
            Self::Cone => "masquerade",
            Self::Symmetric => "masquerade fully-random",
        }
    }
}

/// One NAT router of a lab.
#[derive(Debug, Clone)]
struct Nat {
    /// The host behind it.
    host: String,
    /// The router's host name (`<host>-nat`).
    router: String,
    kind: NatKind,
    /// The private LAN's number.
    private_lan: usize,
}

impl LabBuilder {
    /// Puts a new host `name` behind a NAT router `<name>-nat` of kind `kind`, whose public leg
    /// is on LAN 1 (see the section "NAT" of this module). `name` must not be on any LAN given
    /// to [`LabBuilder::lan`] and may be at most 16 bytes (the router's name adds 4). Needs
    /// `nft` (package nftables) at `build`.
    pub fn nat_host(mut self, name: &str, kind: NatKind) -> Self {
        self.nat_hosts.push((name.to_owned(), kind));
        self
    }
}

/// Adds each NAT host's router to LAN 1 and a private LAN for both to `lans`, and both hosts to
/// `order`; returns the NATs to set up once the hosts exist.
fn nat_lans(
    nat_hosts: &[(String, NatKind)],
    lans: &mut Vec<LanSpec>,
    order: &mut Vec<String>,
) -> Result<Vec<Nat>> {
    let mut nats = Vec::new();
    for (host, kind) in nat_hosts {
        validate_host_name(host)?;
        ensure!(
            host.len() <= 16,
            "NAT host name {host:?} is longer than 16 bytes (its router is `{host}-nat`)"
        );
        let router = format!("{host}-nat");
        ensure!(
            !order.contains(host) && !order.contains(&router),
            "NAT host {host} (or its router {router}) is already in the lab: a NAT host is on \
             its private LAN only"
        );
        lans[0].hosts.push(router.clone());
        lans.push(LanSpec {
            hosts: vec![router.clone(), host.clone()],
            subnet: None,
        });
        order.push(router.clone());
        order.push(host.clone());
        nats.push(Nat {
            host: host.clone(),
            router,
            kind: *kind,
            private_lan: lans.len(),
        });
    }
    Ok(nats)
}

impl Lab {
    /// The NAT router in front of NAT host `name` ([`LabBuilder::nat_host`]); its
    /// [`Host::ip`] is the public address the NAT host's traffic leaves with. Panics when
    /// `name` is not a NAT host of this lab.
    pub fn nat_router(&self, name: &str) -> &Host {
        let nat = self
            .nats
            .iter()
            .find(|n| n.host == name)
            .unwrap_or_else(|| panic!("lab {} has no NAT host {name:?}", self.prefix));
        self.host(&nat.router)
    }

    /// The kind of the NAT in front of `name`, if it is a NAT host.
    pub fn nat_kind(&self, name: &str) -> Option<NatKind> {
        self.nats.iter().find(|n| n.host == name).map(|n| n.kind)
    }

    /// Makes the NAT router of `name` drop packets from its public side (`eth0`) that start a
    /// new connection, to the router itself or towards its private side, as a home router does.
    /// Hole punching needs it in a lab whose links have no delay: with plain masquerade the first
    /// of two crossing packets creates a connection on the far router that takes the port, and
    /// the other side's mapping moves to a random one.
    ///
    /// # Errors
    ///
    /// When the rules cannot be written or loaded (`nft`).
    pub fn drop_unsolicited_inbound(&self, name: &str) -> Result<()> {
        let router = self.nat_router(name);
        let rules = r#"table ip wgmesh_lab_filter {
    chain input {
        type filter hook input priority 0; policy accept;
        iifname "eth0" ct state new drop
    }
    chain forward {
        type filter hook forward priority 0; policy accept;
        iifname "eth0" ct state new drop
    }
}
"#;
        let path = router.dir().join("filter.nft");
        std::fs::write(&path, rules).with_context(|| format!("write {}", path.display()))?;
        router.exec_ok("nft", &["-f", &path.to_string_lossy()])?;
        Ok(())
    }

    /// Turns forwarding and masquerading on in the router and gives the host its default
    /// route.
    fn set_up_nat(&self, nat: &Nat) -> Result<()> {
        let router = self.host(&nat.router);
        let host = self.host(&nat.host);
        let leg = |lan: usize| {
            router
                .ifaces
                .iter()
                .find(|i| i.lan == lan)
                .ok_or_else(|| anyhow!("router {} has no leg on LAN {lan}", router.name))
        };
        let public = leg(1)?;
        let private = leg(nat.private_lan)?;
        let ruleset = format!(
            "table ip wgmesh_lab_nat {{\n  chain postrouting {{\n    type nat hook postrouting \
             priority srcnat; policy accept;\n    oifname \"{}\" {}\n  }}\n}}\n",
            public.name,
            nat.kind.masquerade()
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", &router.ns, "sh", "-c"])
            .arg("echo 1 > /proc/sys/net/ipv4/ip_forward && exec nft -f -")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("running nft in a NAT router")?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(ruleset.as_bytes())
                .context("writing the NAT ruleset to nft")?;
        }
        let out = child.wait_with_output().context("waiting for nft")?;
        ensure!(
            out.status.success(),
            "setting up NAT in {} failed: {}\nruleset:\n{ruleset}",
            router.name,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        ip(&[
            "-n",
            &host.ns,
            "route",
            "add",
            "default",
            "via",
            &private.addr.to_string(),
        ])?;
        Ok(())
    }
}

// ------------------------------------------------------------------------------------------
// hosts

/// One simulated host: a network namespace with one leg per LAN, and its own directories.
/// A clone is another handle to the same host: processes it starts are still registered with (and
/// cleaned up by) the lab.
#[derive(Debug, Clone)]
pub struct Host {
    name: String,
    number: u8,
    ns: String,
    bridge_ns: String,
    dir: PathBuf,
    ifaces: Vec<LabIface>,
    procs: Registry,
}

impl Host {
    /// The host's name in the lab.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host number (1-based): the last octet of each of its addresses.
    pub fn number(&self) -> u8 {
        self.number
    }

    /// The network namespace name (use with `ip -n` / `ip netns exec`).
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// The host's address on its first LAN (on `eth0`).
    pub fn ip(&self) -> Ipv4Addr {
        self.ifaces[0].addr
    }

    /// The host's address on LAN `lan` (1-based), if it has a leg there.
    pub fn ip_on(&self, lan: usize) -> Option<Ipv4Addr> {
        self.ifaces.iter().find(|i| i.lan == lan).map(|i| i.addr)
    }

    /// All legs of the host (`eth0` first).
    pub fn interfaces(&self) -> &[LabIface] {
        &self.ifaces
    }

    /// The host's directory (`<lab dir>/<host>`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A state directory for the daemon (`--state-dir`), created empty.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// The directory bind-mounted on `/run/wireguard` for processes of this host.
    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    /// The API socket path for this host's daemon (`--socket`); not created by the lab.
    pub fn socket_path(&self) -> PathBuf {
        self.dir.join("wgmeshd.sock")
    }

    /// The directory of the process log files.
    pub fn log_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }

    /// A command to run inside this host (network namespace, own `/run/wireguard`, working
    /// directory [`Host::dir`]).
    pub fn command(&self, program: impl AsRef<OsStr>) -> LabCommand<'_> {
        LabCommand {
            host: self,
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            envs: Vec::new(),
        }
    }

    /// Starts `program args` in the background in this host with extra environment `envs`;
    /// stdin is `/dev/null`, stdout and stderr go to log files in [`Host::log_dir`]. The lab
    /// stops it on drop.
    pub fn spawn(&self, program: &str, args: &[&str], envs: &[(&str, &str)]) -> Result<LabProcess> {
        self.command(program).args(args).envs(envs).spawn()
    }

    /// Like [`Host::spawn`] but with stdin and stdout piped to the test, for a program driven
    /// by lines (stderr still goes to a log file).
    pub fn spawn_piped(
        &self,
        program: &str,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Result<PipedProcess> {
        self.command(program).args(args).envs(envs).spawn_piped()
    }

    /// Runs a short command in this host and returns its output (whatever the exit status;
    /// at most [`RUN_TIMEOUT`]).
    pub fn run(&self, program: &str, args: &[&str]) -> Result<Output> {
        self.command(program).args(args).output()
    }

    /// Runs a short command in this host and returns its stdout; fails, with its stderr, when
    /// it does not exit with status 0.
    pub fn exec_ok(&self, program: &str, args: &[&str]) -> Result<String> {
        self.command(program).args(args).output_ok()
    }

    /// One ping (`ping -c1 -W1`) from this host to `addr`: whether a reply came back. Fails
    /// only when `ping` cannot be run (package iputils-ping).
    pub fn ping(&self, addr: Ipv4Addr) -> Result<bool> {
        if find_in_path("ping").is_none() {
            return Err(tool_error("ping", "iputils-ping"));
        }
        let out = self.run("ping", &["-c1", "-W1", "-n", "-q", &addr.to_string()])?;
        Ok(out.status.success())
    }

    /// Pings `addr` until a reply comes back or `timeout` passes: whether it got one.
    pub fn wait_reachable(&self, addr: Ipv4Addr, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.ping(addr)? {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Cuts every leg of the host (its bridge-side veth ends go down, like pulled cables): the
    /// host keeps its addresses and routes, sees no carrier and reaches nobody.
    pub fn cut_link(&self) -> Result<()> {
        for i in &self.ifaces {
            self.set_leg(i, false)?;
        }
        Ok(())
    }

    /// Undoes [`Host::cut_link`] and waits until the legs are operational again.
    pub fn heal_link(&self) -> Result<()> {
        for i in &self.ifaces {
            self.set_leg(i, true)?;
        }
        self.wait_links_up()
    }

    /// Cuts one leg, by its host-side name (`eth0`, `eth1`, …).
    pub fn cut_iface(&self, iface: &str) -> Result<()> {
        self.set_leg(self.iface(iface)?, false)
    }

    /// Heals one leg, by its host-side name, and waits until it is operational.
    pub fn heal_iface(&self, iface: &str) -> Result<()> {
        let leg = self.iface(iface)?;
        self.set_leg(leg, true)?;
        self.wait_leg_up(leg)
    }

    fn iface(&self, name: &str) -> Result<&LabIface> {
        self.ifaces
            .iter()
            .find(|i| i.name == name)
            .ok_or_else(|| anyhow!("host {} has no interface {name}", self.name))
    }

    fn set_leg(&self, leg: &LabIface, up: bool) -> Result<()> {
        let state = if up { "up" } else { "down" };
        ip(&[
            "-n",
            &self.bridge_ns,
            "link",
            "set",
            &leg.bridge_port,
            state,
        ])
        .with_context(|| format!("setting {}'s {} {state}", self.name, leg.name))
        .map(|_| ())
    }

    fn wait_links_up(&self) -> Result<()> {
        for leg in &self.ifaces {
            self.wait_leg_up(leg)?;
        }
        Ok(())
    }

    /// Waits (at most 3 s) until both ends of a leg are operationally up, so the first packet
    /// after a (re)connect is not dropped.
    fn wait_leg_up(&self, leg: &LabIface) -> Result<()> {
        let up = |ns: &str, dev: &str| {
            ip(&["-n", ns, "-o", "link", "show", "dev", dev])
                .is_ok_and(|out| out.contains("state UP") && !out.contains("NO-CARRIER"))
        };
        let ok = wait_until(Duration::from_secs(3), || {
            up(&self.ns, &leg.name) && up(&self.bridge_ns, &leg.bridge_port)
        });
        ensure!(
            ok,
            "{}'s {} did not come up within 3 s",
            self.name,
            leg.name
        );
        Ok(())
    }
}

// ------------------------------------------------------------------------------------------
// commands and processes

/// A command to run inside a host; see [`Host::command`].
#[derive(Debug)]
pub struct LabCommand<'h> {
    host: &'h Host,
    program: OsString,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
}

impl LabCommand<'_> {
    /// Adds an argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable (the rest of the test's environment is inherited).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.envs
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Sets environment variables.
    pub fn envs(mut self, envs: &[(&str, &str)]) -> Self {
        for (k, v) in envs {
            self = self.env(k, v);
        }
        self
    }

    fn label(&self) -> String {
        Path::new(&self.program)
            .file_name()
            .map(|f| sanitize(&f.to_string_lossy(), 30))
            .unwrap_or_else(|| "program".into())
    }

    fn describe(&self) -> String {
        let mut s = self.program.to_string_lossy().into_owned();
        for a in &self.args {
            let _ = write!(s, " {}", a.to_string_lossy());
        }
        s
    }

    /// `ip netns exec NS sh -c BIND_SCRIPT RUN_DIR program args…`
    fn std_command(&self) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.host.ns, "sh", "-c", BIND_SCRIPT])
            .arg(self.host.run_dir())
            .arg(&self.program)
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.host.dir);
        c
    }

    fn log_files(&self) -> Result<(PathBuf, File, PathBuf, File)> {
        let n = LOG_COUNTER.fetch_add(1, Ordering::Relaxed);
        let base = self.host.log_dir().join(format!("{n:03}-{}", self.label()));
        let out_path = base.with_extension("stdout.log");
        let err_path = base.with_extension("stderr.log");
        let open = |p: &Path| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("creating log file {p:?}"))
        };
        let out = open(&out_path)?;
        let err = open(&err_path)?;
        Ok((out_path, out, err_path, err))
    }

    fn register(&self, child: Child, stdout_log: PathBuf, stderr_log: PathBuf) -> LabProcess {
        let shared = Arc::new(ProcShared {
            pid: child.id(),
            host: self.host.name.clone(),
            command: self.describe(),
            stdout_log,
            stderr_log,
            child: Mutex::new(child),
        });
        lock(&self.host.procs).push(shared.clone());
        LabProcess(shared)
    }

    /// Starts the command in the background, stdin `/dev/null`, stdout and stderr to log files.
    pub fn spawn(self) -> Result<LabProcess> {
        let (out_path, out, err_path, err) = self.log_files()?;
        let child = self
            .std_command()
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("spawning `{}` in {}", self.describe(), self.host.name))?;
        Ok(self.register(child, out_path, err_path))
    }

    /// Starts the command with stdin and stdout piped to the test; stderr goes to a log file.
    pub fn spawn_piped(self) -> Result<PipedProcess> {
        let (out_path, out_log, err_path, err) = self.log_files()?;
        let mut child = self
            .std_command()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .with_context(|| format!("spawning `{}` in {}", self.describe(), self.host.name))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        Ok(PipedProcess {
            process: self.register(child, out_path, err_path),
            stdin,
            stdout,
            stdout_log: Some(out_log),
            lines: None,
        })
    }

    /// Runs the command to completion (at most [`RUN_TIMEOUT`]) and returns its output,
    /// whatever the exit status.
    pub fn output(self) -> Result<Output> {
        self.output_timeout(RUN_TIMEOUT)
    }

    /// Like [`LabCommand::output`] but fails with stderr unless the exit status is 0; returns
    /// stdout.
    pub fn output_ok(self) -> Result<String> {
        let what = format!("`{}` in {}", self.describe(), self.host.name);
        let out = self.output()?;
        ensure!(
            out.status.success(),
            "{what} failed ({})\nstderr: {}\nstdout: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs the command to completion, killing it after `timeout` (then it is an error).
    pub fn output_timeout(self, timeout: Duration) -> Result<Output> {
        let what = format!("`{}` in {}", self.describe(), self.host.name);
        let mut child = self
            .std_command()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {what}"))?;
        let reader = |r: Option<Box<dyn Read + Send>>| {
            thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(mut r) = r {
                    let _ = r.read_to_end(&mut buf);
                }
                buf
            })
        };
        let out_t = reader(child.stdout.take().map(|s| Box::new(s) as _));
        let err_t = reader(child.stderr.take().map(|s| Box::new(s) as _));
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(st) = child
                .try_wait()
                .with_context(|| format!("waiting for {what}"))?
            {
                break st;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{what} did not finish within {timeout:?}");
            }
            thread::sleep(Duration::from_millis(5));
        };
        Ok(Output {
            status,
            stdout: out_t.join().unwrap_or_default(),
            stderr: err_t.join().unwrap_or_default(),
        })
    }
}

#[derive(Debug)]
struct ProcShared {
    pid: u32,
    host: String,
    command: String,
    stdout_log: PathBuf,
    stderr_log: PathBuf,
    child: Mutex<Child>,
}

impl ProcShared {
    /// Sends `sig` unless the process has already been reaped (so a reused PID is never hit).
    fn signal(&self, sig: i32) -> Result<()> {
        let mut child = lock(&self.child);
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        // SAFETY: the child is not reaped (we hold it and try_wait said so): the PID is ours.
        if unsafe { libc::kill(self.pid as i32, sig) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("kill({}, {sig})", self.pid));
        }
        Ok(())
    }

    fn wait_timeout(&self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = lock(&self.child).try_wait()? {
                return Ok(Some(st));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A process started in a host. Cloning gives another handle to the same process; dropping a
/// handle does nothing (the [`Lab`] stops every process on drop).
#[derive(Debug, Clone)]
pub struct LabProcess(Arc<ProcShared>);

impl LabProcess {
    /// The program's own PID (the `ip netns exec` → `sh` → program chain only `exec`s).
    pub fn pid(&self) -> u32 {
        self.0.pid
    }

    /// Name of the host it runs in.
    pub fn host(&self) -> &str {
        &self.0.host
    }

    /// The command line it was started with.
    pub fn command(&self) -> &str {
        &self.0.command
    }

    /// Path of the stdout log file.
    pub fn stdout_log(&self) -> &Path {
        &self.0.stdout_log
    }

    /// Path of the stderr log file.
    pub fn stderr_log(&self) -> &Path {
        &self.0.stderr_log
    }

    /// Everything the process wrote to stdout so far.
    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.0.stdout_log).unwrap_or_default()
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.0.stderr_log).unwrap_or_default()
    }

    /// Both logs, labelled, full.
    pub fn logs(&self) -> String {
        self.logs_tail(usize::MAX)
    }

    /// Both logs, labelled, each cut to its last `lines` lines.
    pub fn logs_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for (name, text) in [("stdout", self.stdout()), ("stderr", self.stderr())] {
            let _ = writeln!(
                out,
                "--- [{}] pid {} `{}` {name} ---",
                self.0.host, self.0.pid, self.0.command
            );
            let t = tail(&text, lines);
            out.push_str(t);
            if !t.is_empty() && !t.ends_with('\n') {
                out.push('\n');
            }
        }
        out
    }

    /// Its exit status if it has exited (reaping it), `None` while it runs.
    pub fn try_wait(&self) -> Result<Option<ExitStatus>> {
        Ok(lock(&self.0.child).try_wait()?)
    }

    /// Whether it is still running.
    pub fn is_running(&self) -> bool {
        matches!(self.try_wait(), Ok(None))
    }

    /// Waits up to `timeout` for it to exit: its status, or `None` if it still runs.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<Option<ExitStatus>> {
        self.0.wait_timeout(timeout)
    }

    /// Sends a signal (e.g. `libc::SIGHUP`) unless it has already exited.
    pub fn signal(&self, sig: i32) -> Result<()> {
        self.0.signal(sig)
    }

    /// Stops it: SIGTERM, up to [`STOP_GRACE`], then SIGKILL; returns the exit status.
    pub fn stop(&self) -> Result<ExitStatus> {
        self.signal(libc::SIGTERM)?;
        if let Some(st) = self.wait_timeout(STOP_GRACE)? {
            return Ok(st);
        }
        self.kill()
    }

    /// SIGKILLs it (a crash) and returns the exit status.
    pub fn kill(&self) -> Result<ExitStatus> {
        self.signal(libc::SIGKILL)?;
        self.wait_timeout(Duration::from_secs(5))?
            .ok_or_else(|| anyhow!("pid {} did not die on SIGKILL", self.0.pid))
    }
}

/// A process with stdin and stdout piped to the test (see [`Host::spawn_piped`]).
///
/// Like [`std::process::Child`] it has public `stdin` and `stdout` fields that can be
/// `take()`n; the child itself stays with the [`Lab`] (which stops it on drop) and is reached
/// through [`PipedProcess::process`] or `Deref` (`piped.pid()`, `piped.stop()`, …).
/// Or leave the pipes in place and use the line helpers ([`PipedProcess::request`] …), which
/// also copy every stdout line to the stdout log file.
#[derive(Debug)]
pub struct PipedProcess {
    /// The process's stdin, until taken or closed.
    pub stdin: Option<ChildStdin>,
    /// The process's stdout, until taken or until the first [`PipedProcess::read_line`]
    /// (which hands it to a reader thread).
    pub stdout: Option<ChildStdout>,
    process: LabProcess,
    stdout_log: Option<File>,
    lines: Option<mpsc::Receiver<String>>,
}

impl std::ops::Deref for PipedProcess {
    type Target = LabProcess;

    fn deref(&self) -> &LabProcess {
        &self.process
    }
}

impl PipedProcess {
    /// The process handle (pid, logs, stop, …).
    pub fn process(&self) -> &LabProcess {
        &self.process
    }

    /// Writes `line` and a newline to its stdin and flushes.
    pub fn send_line(&mut self, line: &str) -> Result<()> {
        let pid = self.process.pid();
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow!("stdin of pid {pid} is closed"))?;
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .with_context(|| {
                format!(
                    "writing to pid {pid}\n{}",
                    self.process.logs_tail(PANIC_LOG_LINES)
                )
            })
    }

    /// The next stdout line (without the newline), waiting at most `timeout`. Fails on timeout
    /// or end of output, with the end of its stderr in the message.
    pub fn read_line(&mut self, timeout: Duration) -> Result<String> {
        if self.lines.is_none() {
            let stdout = self
                .stdout
                .take()
                .ok_or_else(|| anyhow!("stdout of pid {} was taken", self.process.pid()))?;
            let mut log = self.stdout_log.take();
            let (tx, rx) = mpsc::channel();
            thread::Builder::new()
                .name(format!("lab-stdout-{}", self.process.pid()))
                .spawn(move || {
                    for line in BufReader::new(stdout).lines() {
                        let Ok(line) = line else { break };
                        if let Some(log) = log.as_mut() {
                            let _ = writeln!(log, "{line}");
                        }
                        // When nobody reads any more, keep draining so the child never blocks.
                        let _ = tx.send(line);
                    }
                })
                .context("starting the stdout reader thread")?;
            self.lines = Some(rx);
        }
        let Some(lines) = &self.lines else {
            unreachable!("the reader was just started")
        };
        match lines.recv_timeout(timeout) {
            Ok(line) => Ok(line),
            Err(mpsc::RecvTimeoutError::Timeout) => bail!(
                "no line from pid {} within {timeout:?}\n{}",
                self.process.pid(),
                self.process.logs_tail(PANIC_LOG_LINES)
            ),
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!(
                "pid {} closed its stdout\n{}",
                self.process.pid(),
                self.process.logs_tail(PANIC_LOG_LINES)
            ),
        }
    }

    /// [`PipedProcess::send_line`] then [`PipedProcess::read_line`].
    pub fn request(&mut self, line: &str, timeout: Duration) -> Result<String> {
        self.send_line(line)?;
        self.read_line(timeout)
    }

    /// Closes its stdin (it sees end of input).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }
}
