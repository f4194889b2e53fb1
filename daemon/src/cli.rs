//! Command line of `wgmeshd`. Parsing is clap's; each command is a function returning an exit
//! status, so `main` only wires things up.

mod service;

use std::ffi::OsString;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::{
    InterfaceName, MeshSubnet, SECRET_ENV, SecretArgs, SecretOrigin, secret_advice,
};
use crate::crypto::DerivedKeys;
use crate::identity::{self, LoadOutcome, MeshParams};
use crate::logging::{LogControl, LogFormat, LogLevel};

/// How long the runtime waits for stuck blocking calls when the daemon exits.
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(1);

// `wgmeshd man`: the manual page, for packagers.
mod man;

/// wgmeshd: decentralized WireGuard mesh daemon. Every machine that knows the same secret joins
/// the same mesh; there is no coordination server.
#[derive(Debug, Parser)]
#[command(
    name = "wgmeshd",
    version,
    propagate_version = true,
    after_help = "Environment:\n  WGMESH_SECRET       the mesh secret (when --secret/--secret-file are absent)\n  WGMESH_SECRET_FILE  file holding the mesh secret (after WGMESH_SECRET)\n  CREDENTIALS_DIRECTORY  systemd's credentials: the file `secret` there is the mesh secret (last)\n  RUST_LOG            fine-grained log directives on top of --log-level, which win for the targets they name (e.g. wgmeshd::discovery=debug)"
)]
pub struct Cli {
    /// Log verbosity: debug, info, warn (or warning), error.
    #[arg(long, global = true, default_value = "info", value_name = "LEVEL")]
    pub log_level: LogLevel,
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `wgmeshd` subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Join the mesh of a secret and run until stopped: create the WireGuard interface, find
    /// peers, keep the device and routes in sync, serve the control API. SIGINT/SIGTERM stop it
    /// cleanly (a second signal exits at once); SIGHUP re-reads the reload file
    /// `<state-dir>/<iface>.reload` (advertise-routes, log-level).
    Join(Box<JoinArgs>),
    /// Print the manual page wgmeshd(1) in roff (for packagers: `wgmeshd man > wgmeshd.1`).
    #[command(hide = true)]
    Man,
    /// Show this node's identity in a mesh (public key, mesh IPv4/IPv6), creating the key pair
    /// and state file on first use. Useful to learn a node's mesh address before it joins.
    Identity(IdentityArgs),
    /// Install wgmeshd as the systemd service wgmesh.service running `join` with the given join
    /// options: writes /etc/systemd/system/wgmesh.service (0644) and the secret to
    /// /etc/wgmesh/secret (0600; the unit hands it over as a systemd credential, never on a
    /// command line), then enables and starts it. Re-running with the same options changes
    /// nothing; other options rewrite the unit and restart the service.
    InstallService(Box<service::InstallServiceArgs>),
    /// Stop, disable and remove wgmesh.service and /etc/wgmesh/secret (what install-service
    /// wrote). The state directory /var/lib/wgmesh is kept.
    UninstallService(service::UninstallServiceArgs),
}

/// Options of `wgmeshd identity`.
#[derive(Debug, Args)]
pub struct IdentityArgs {
    #[command(flatten)]
    secret: SecretArgs,
    /// Directory of the node's state files (identity `<iface>.json`).
    #[arg(long, value_name = "DIR", default_value = identity::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// WireGuard interface name; the identity is stored per interface.
    #[arg(long, value_name = "NAME", default_value = crate::config::DEFAULT_INTERFACE)]
    interface: InterfaceName,
    /// Custom IPv4 mesh subnet (at least /30) instead of the default 10.x.0.0/16 derived from
    /// the secret. Every node of a mesh must use the same value.
    #[arg(long, value_name = "CIDR")]
    mesh_subnet: Option<MeshSubnet>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Options of `wgmeshd join`.
#[derive(Debug, Args)]
pub struct JoinArgs {
    #[command(flatten)]
    secret: SecretArgs,
    /// WireGuard interface to create.
    #[arg(long, value_name = "NAME", default_value = crate::config::DEFAULT_INTERFACE)]
    interface: InterfaceName,
    /// WireGuard UDP port; if busy, the next free one (up to +100) is used.
    #[arg(long, value_name = "PORT", default_value_t = 51820)]
    listen_port: u16,
    /// Directory of the node's state files (identity `<iface>.json`).
    #[arg(long, value_name = "DIR", default_value = identity::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Unix socket of the control API (wgmeshctl talks to it). `--socket-path` (Go's name) is
    /// the same.
    #[arg(
        long,
        alias = "socket-path",
        value_name = "PATH",
        default_value = wgmesh_api_types::DEFAULT_SOCKET_PATH
    )]
    socket: PathBuf,
    /// Group of the API socket (a name in /etc/group, or a gid): its members may use the API,
    /// reloads and cache flushes included, without being root. It must exist. Without this flag
    /// the group is `wgmesh` when that exists, and the API is root-only otherwise.
    #[arg(long, value_name = "GROUP")]
    socket_group: Option<String>,
    /// WireGuard implementation: kernel module, the embedded userspace one, or auto (kernel if
    /// the module is there, else userspace; the log says which and why).
    #[arg(long, value_enum, default_value_t = crate::system::wg::BackendChoice::Auto)]
    wg_backend: crate::system::wg::BackendChoice,
    /// Custom IPv4 mesh subnet (at least /30) instead of 10.x.0.0/16. Same on every node.
    #[arg(long, value_name = "CIDR")]
    mesh_subnet: Option<MeshSubnet>,
    /// Networks behind this node that other nodes should route through it (comma-separated
    /// CIDRs, e.g. 192.168.10.0/24,fd10::/64).
    #[arg(long, value_name = "CIDRS", value_delimiter = ',')]
    advertise_routes: Vec<ipnet::IpNet>,
    /// Do not announce or listen on the LAN multicast group.
    #[arg(long)]
    no_lan_discovery: bool,
    /// Do not run the exchange socket (UDP on the mesh's gossip port, 51821-52820, derived from
    /// the secret): no HELLO/REPLY, no static peers, DHT contacts, rendezvous or gossip.
    #[arg(long)]
    no_exchange: bool,
    /// Do not punch holes: send each HELLO once instead of every 100 ms, and never ask
    /// introducers to coordinate a punch (rendezvous).
    #[arg(long)]
    no_punching: bool,
    /// Ignore IPv6 endpoints everywhere (announced, learned, STUN).
    #[arg(long)]
    no_ipv6: bool,
    /// A node to contact at start (and again with backoff until it answers), at its exchange
    /// port: HOST:PORT, e.g. 203.0.113.7:51847 (repeatable). For networks with neither
    /// multicast nor a reachable DHT.
    #[arg(long = "peer", value_name = "HOST:PORT")]
    peers: Vec<crate::config::HostPort>,
    /// Do not use the BitTorrent mainline DHT to find peers (it uses UDP port gossip port + 1).
    #[arg(long)]
    no_dht: bool,
    /// DHT bootstrap node replacing the public routers (repeatable), e.g. 192.0.2.10:6881.
    #[arg(long, value_name = "HOST:PORT")]
    dht_bootstrap: Vec<crate::config::HostPort>,
    /// Gossip inside the mesh: every 10 s, tell one random peer (through the tunnel) every peer
    /// this node knows.
    #[arg(long)]
    gossip: bool,
    /// Privacy mode, with --gossip: announcements travel Dandelion++ stem hops through the
    /// epoch's relay peers before they spread, so peers cannot tell who originated them. Without
    /// --gossip it has no effect (accepted, and logged, as Go's `join` accepts it).
    #[arg(long)]
    privacy: bool,
    /// Do not ask STUN servers for this node's public endpoint and NAT type.
    #[arg(long)]
    no_stun: bool,
    /// STUN server replacing the defaults (repeatable; NAT type needs two), e.g.
    /// stun.example.org:3478.
    #[arg(long, value_name = "HOST:PORT")]
    stun: Vec<crate::config::HostPort>,
    /// Serve as an introducer: forward traffic between peers that cannot reach each other
    /// directly, and announce it. Turns IPv4 and IPv6 forwarding on and, where an nftables or
    /// iptables forward chain would drop that traffic, inserts an accept rule for the mesh
    /// interface (comment wgmesh:IFACE); both are undone at exit.
    #[arg(long)]
    introducer: bool,
    /// Reach every peer through an introducer (when one is known), except peers on the LAN or a
    /// local network and introducers themselves; the direct path keeps being tried.
    #[arg(long)]
    force_relay: bool,
    /// Also serve Prometheus metrics (GET /metrics, nothing else) on this TCP address, e.g.
    /// 127.0.0.1:9586. Off by default; the control API never listens on TCP. The metrics hold
    /// counts and timings, no keys or addresses, and have no authentication: prefer a loopback
    /// address or a firewalled one. The same metrics are always on the API socket at /metrics.
    /// `--metrics` (Go's name) is the same.
    #[arg(long, alias = "metrics", value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Directory of the WireGuard UAPI socket `<DIR>/<iface>.sock`, where `wg show` finds the
    /// embedded (userspace) device. Root only, read-only; removed at exit. Created 0700 if
    /// missing. Not used with kernel WireGuard, which `wg` reads over netlink.
    #[arg(long, value_name = "DIR", default_value = crate::system::uapi::DEFAULT_UAPI_DIR)]
    uapi_dir: PathBuf,
    /// Do not serve the UAPI socket (`wg show` then does not see an embedded device).
    #[arg(long, conflicts_with = "uapi_dir")]
    no_uapi: bool,
    /// Go wgmesh's Lighthouse account (a centralized service): refused with an explanation.
    #[arg(long, hide = true, value_name = "KEY")]
    account: Option<GoOnlyValue>,
    /// Go wgmesh's referral bookkeeping: refused with an explanation.
    #[arg(long, hide = true, value_name = "CODE")]
    referral: Option<GoOnlyValue>,
    /// Go's net/http/pprof listener: refused with an explanation.
    #[arg(long, hide = true, value_name = "ADDR")]
    pprof: Option<GoOnlyValue>,
}

impl JoinArgs {
    /// The UAPI socket directory, `None` with `--no-uapi`.
    fn uapi_dir(&self) -> Option<PathBuf> {
        (!self.no_uapi).then(|| self.uapi_dir.clone())
    }
}

/// The `wgmeshd` program: parses `args` (the first one is the program name), sets up logging,
/// runs the command, prints an error once. `main.rs` calls it with the process arguments.
pub fn main_from<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = parse_cli(args);
    let log_control = crate::logging::init(cli.log_level, cli.log_format);
    match run(cli, log_control) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("wgmeshd: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Parses the command line like [`Cli::parse_from`] (exiting with clap's message on an error),
/// and rebuilds the `join` words of `install-service` from what was given.
pub fn parse_cli<I, T>(args: I) -> Cli
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    use clap::{CommandFactory as _, FromArgMatches as _};
    let mut command = Cli::command();
    let matches = command.clone().get_matches_from(args);
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut command).exit());
    if let Command::InstallService(install) = &mut cli.command
        && let Err(e) = service::fill_exec_args(install, &matches)
    {
        command.error(clap::error::ErrorKind::InvalidUtf8, e).exit();
    }
    cli
}

/// Runs the parsed command line; `log_control` is the running log filter (from
/// [`crate::logging::init`]), which reloads of the daemon's level change.
///
/// # Errors
///
/// Whatever the command failed with; `main_from` prints it.
pub fn run(cli: Cli, log_control: Option<LogControl>) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Join(args) => join_cmd(*args, cli.log_level, log_control),
        Command::Man => man::man_cmd(),
        Command::Identity(args) => identity_cmd(&args),
        Command::InstallService(args) => service::install_cmd(&args),
        Command::UninstallService(args) => service::uninstall_cmd(&args),
    }
}

/// Resolves the secret and logs the advice about weak ways of giving it.
fn resolve_secret(args: &SecretArgs) -> anyhow::Result<crate::config::MeshSecret> {
    let secret = args.resolve()?;
    for advice in secret_advice(&secret) {
        tracing::warn!("{advice}");
    }
    if !secret.was_uri_form() {
        tracing::warn!(
            "secret does not use the wgmesh:// format and may have low entropy; create one with `wgmeshctl secret new`"
        );
    }
    Ok(secret)
}

/// Removes `WGMESH_SECRET` from the environment and overwrites the whole `NAME=value` entry in
/// place with NUL bytes, so that neither child processes nor `/proc/<pid>/environ` (which shows
/// the process's original environment block, not the current variables) carry it.
///
/// # Safety
///
/// Must run while the process has a single thread: the environment is not synchronised.
unsafe fn scrub_secret_env() {
    let name = c"WGMESH_SECRET";
    // SAFETY: getenv returns null or a pointer to the value of a `NAME=value` entry, a
    // NUL-terminated string whose name and `=` directly precede the value (the original block
    // and setenv's allocations both store entries that way). The variable is unset first, so the
    // environment no longer points at the entry, then exactly the entry's bytes are zeroed.
    // Single-threaded per this function's contract, so nobody reads it meanwhile.
    unsafe {
        let value = libc::getenv(name.as_ptr());
        if value.is_null() {
            return;
        }
        let prefix = name.to_bytes().len() + 1;
        let entry = value.sub(prefix);
        let len = prefix + libc::strlen(value);
        std::env::remove_var(SECRET_ENV);
        std::ptr::write_bytes(entry, 0, len);
    }
}

/// The value of a Go-only `join` flag (`--account`, `--referral`, `--pprof`): kept only to say
/// why the flag is refused, never shown (an account flag carries an API key).
#[derive(Clone)]
struct GoOnlyValue;

impl std::str::FromStr for GoOnlyValue {
    type Err = std::convert::Infallible;

    fn from_str(_: &str) -> Result<Self, Self::Err> {
        Ok(Self)
    }
}

impl std::fmt::Debug for GoOnlyValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<not shown>")
    }
}

/// Refuses the `join` flags of Go wgmesh that have no meaning here, naming the flag and why
/// (their values are never repeated).
fn refuse_go_only_flags(args: &JoinArgs) -> anyhow::Result<()> {
    let refused = [
        (
            args.account.is_some(),
            "--account",
            "it registers the node with Lighthouse, the centralized service of Go wgmesh; wgmeshd has no central service",
        ),
        (
            args.referral.is_some(),
            "--referral",
            "it is bookkeeping for Go wgmesh's centralized service",
        ),
        (
            args.pprof.is_some(),
            "--pprof",
            "it serves Go's runtime profiler; use --metrics-listen for metrics, and perf or tokio-console style tools to profile",
        ),
    ];
    match refused.into_iter().find(|(given, _, _)| *given) {
        Some((_, flag, why)) => anyhow::bail!("{flag} is not supported by wgmeshd: {why}"),
        None => Ok(()),
    }
}

fn join_cmd(
    args: JoinArgs,
    log_level: LogLevel,
    log_control: Option<LogControl>,
) -> anyhow::Result<ExitCode> {
    refuse_go_only_flags(&args)?;
    let secret = resolve_secret(&args.secret)?;
    if *secret.origin() == SecretOrigin::Env {
        // SAFETY: no runtime and no other thread exist yet (logging spawns none).
        unsafe { scrub_secret_env() };
    }
    // One slot: SIGHUPs arriving while a reload waits are folded into it (it reads the file
    // when it runs, so it sees the latest content).
    let (hangups, hangups_rx) = tokio::sync::mpsc::channel(1);
    let uapi_dir = args.uapi_dir();
    let opts = crate::daemon::JoinOptions {
        secret,
        interface: args.interface,
        listen_port: args.listen_port,
        state_dir: args.state_dir,
        socket: args.socket,
        socket_group: args.socket_group.map_or(
            crate::api::SocketGroup::Default,
            crate::api::SocketGroup::Named,
        ),
        wg_backend: args.wg_backend,
        mesh_subnet: args.mesh_subnet,
        advertise_routes: args.advertise_routes,
        lan_discovery: !args.no_lan_discovery,
        discovery: crate::daemon::DiscoveryOptions {
            exchange: !args.no_exchange,
            punching: !args.no_punching,
            ipv6: !args.no_ipv6,
            static_peers: args.peers,
            dht: !args.no_dht,
            dht_bootstrap: args.dht_bootstrap,
            gossip: args.gossip,
            privacy: args.privacy,
            stun: !args.no_stun,
            stun_servers: args.stun,
        },
        introducer: args.introducer,
        force_relay: args.force_relay,
        log_level,
        metrics_listen: args.metrics_listen,
        uapi_dir,
        log_control,
        hangups: Some(hangups_rx),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async {
        // Signals are handled from the first moment, so a SIGTERM during start-up still tears
        // down what was built.
        let (stop, force) = (CancellationToken::new(), CancellationToken::new());
        let signals = watch_signals(stop.clone(), force.clone(), hangups)?;
        let result =
            crate::daemon::run(opts, stop.cancelled_owned(), force.cancelled_owned()).await;
        signals.abort();
        result
    });
    // A task stuck in a blocking call must not keep the process alive after the teardown.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    result?;
    Ok(ExitCode::SUCCESS)
}

/// The first SIGINT/SIGTERM cancels `stop` (graceful: wait for the tasks, then tear down); a
/// second one cancels `force` (stop waiting, tear down now); a third exits at once. SIGHUP asks
/// the daemon's `control` task, through `hangups`, to re-read the reload file.
fn watch_signals(
    stop: CancellationToken,
    force: CancellationToken,
    hangups: tokio::sync::mpsc::Sender<()>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    use tokio::sync::mpsc::error::TrySendError;
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    Ok(tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
                _ = hup.recv() => {
                    match hangups.try_send(()) {
                        Ok(()) => tracing::info!(signal = "SIGHUP", "reloading from the reload file"),
                        Err(TrySendError::Full(())) => tracing::info!(
                            signal = "SIGHUP",
                            "a reload is already waiting; it will read the reload file as it is then"
                        ),
                        Err(TrySendError::Closed(())) => tracing::warn!(
                            signal = "SIGHUP",
                            "the daemon is stopping; not reloading"
                        ),
                    }
                    continue;
                }
            };
            if force.is_cancelled() {
                tracing::warn!(signal = name, "third signal: exiting immediately");
                std::process::exit(130);
            }
            if stop.is_cancelled() {
                tracing::warn!(
                    signal = name,
                    "second signal: tearing down without waiting for the tasks"
                );
                force.cancel();
                continue;
            }
            tracing::info!(signal = name, "stopping");
            stop.cancel();
        }
    }))
}

fn identity_cmd(args: &IdentityArgs) -> anyhow::Result<ExitCode> {
    let secret = resolve_secret(&args.secret)?;
    let keys = DerivedKeys::derive(&secret);
    let mesh = MeshParams {
        secret: &secret,
        keys: &keys,
        custom_subnet: args.mesh_subnet.as_ref(),
    };
    let (id, outcome) = identity::load_or_create(&args.state_dir, &args.interface, &mesh)
        .context("cannot load the node identity")?;
    let path = identity::state_file_path(&args.state_dir, &args.interface);
    match &outcome {
        LoadOutcome::Created => {
            tracing::info!(file = %path.display(), "created a new node identity")
        }
        LoadOutcome::Updated(fields) => {
            tracing::info!(file = %path.display(), ?fields, "re-derived mesh addresses and saved them")
        }
        LoadOutcome::Loaded => {}
    }
    let prefix_len = args.mesh_subnet.map_or(16, |s| s.prefix_len());
    let mut out = std::io::stdout().lock();
    if args.json {
        let value = serde_json::json!({
            "interface": args.interface.as_str(),
            "state_file": path,
            "created": outcome == LoadOutcome::Created,
            "public_key": id.public_key.to_string(),
            "mesh_ip": id.mesh_ip.to_string(),
            "mesh_ipv6": id.mesh_ipv6.to_string(),
            "mesh_prefix_len": prefix_len,
            "network_id": keys.network_id_short(),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
    } else {
        writeln!(out, "Interface:   {}", args.interface)?;
        writeln!(out, "State file:  {}", path.display())?;
        writeln!(out, "Public key:  {}", id.public_key)?;
        writeln!(out, "Mesh IPv4:   {}/{prefix_len}", id.mesh_ip)?;
        writeln!(out, "Mesh IPv6:   {}/64", id.mesh_ipv6)?;
        writeln!(out, "Network ID:  {}", keys.network_id_short())?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_of_the_command_line_never_shows_the_secret() {
        let secret = "wgmesh://v1/correct-horse-battery-staple-0123456789";
        let cli = Cli::try_parse_from(["wgmeshd", "join", "--secret", secret]).unwrap();
        let text = format!("{cli:?}");
        assert!(!text.contains("correct-horse"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
        let Command::Join(args) = cli.command else {
            panic!("not join")
        };
        assert!(!format!("{args:?}").contains("correct-horse"));
        let opts_secret = args.secret.resolve().unwrap();
        assert!(!format!("{opts_secret:?}").contains("correct-horse"));
    }

    /// Every flag of Go's `wgmesh join` (daemon-behaviour §16.2) parses, under the same name.
    #[test]
    fn go_join_flags_are_accepted() {
        let cli = Cli::try_parse_from([
            "wgmeshd",
            "--log-level",
            "debug",
            "join",
            "--secret",
            "wgmesh://v1/correct-horse-battery-staple-0123456789",
            "--state-dir",
            "/tmp/wgmesh-state",
            "--advertise-routes",
            "192.168.10.0/24,fd10::/64",
            "--listen-port",
            "51900",
            "--interface",
            "wg7",
            "--privacy",
            "--gossip",
            "--socket-path",
            "/tmp/wgmesh.sock",
            "--no-lan-discovery",
            "--no-ipv6",
            "--force-relay",
            "--no-punching",
            "--introducer",
            "--mesh-subnet",
            "10.42.0.0/16",
            "--metrics",
            "127.0.0.1:9586",
        ])
        .unwrap();
        let Command::Join(args) = cli.command else {
            panic!("not join")
        };
        assert_eq!(args.socket, PathBuf::from("/tmp/wgmesh.sock"));
        assert_eq!(args.metrics_listen, Some("127.0.0.1:9586".parse().unwrap()));
        assert_eq!(args.listen_port, 51900);
        assert_eq!(args.interface.as_str(), "wg7");
        assert!(args.privacy && args.gossip && args.no_ipv6 && args.force_relay);
        assert!(args.no_punching && args.introducer && args.no_lan_discovery);
        assert_eq!(args.advertise_routes.len(), 2);
        assert!(refuse_go_only_flags(&args).is_ok());
    }

    /// Go's centralized-mode flags are refused by name, and their values never appear.
    #[test]
    fn go_only_flags_are_refused_by_name() {
        for flag in ["--account", "--referral", "--pprof"] {
            let cli = Cli::try_parse_from([
                "wgmeshd",
                "join",
                "--secret",
                "wgmesh://v1/correct-horse-battery-staple-0123456789",
                flag,
                "sk-live-do-not-print",
            ])
            .unwrap();
            let Command::Join(args) = cli.command else {
                panic!("not join")
            };
            assert!(!format!("{args:?}").contains("sk-live"));
            let err = refuse_go_only_flags(&args).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("{flag} is not supported by wgmeshd: ")),
                "{err}"
            );
            assert!(!err.contains("sk-live"), "{err}");
        }
    }

    #[test]
    fn uapi_flags_choose_the_socket_directory_or_none() {
        let secret = "wgmesh://v1/correct-horse-battery-staple-0123456789";
        let join = |extra: &[&str]| {
            let argv = ["wgmeshd", "join", "--secret", secret];
            let cli = Cli::try_parse_from(argv.iter().chain(extra))?;
            let Command::Join(args) = cli.command else {
                panic!("not join")
            };
            Ok::<_, clap::Error>(args.uapi_dir())
        };
        let cases: [(&str, &[&str], Option<&str>); 3] = [
            ("default", &[], Some("/run/wireguard")),
            ("--uapi-dir", &["--uapi-dir", "/tmp/x"], Some("/tmp/x")),
            ("--no-uapi", &["--no-uapi"], None),
        ];
        for (name, extra, want) in cases {
            assert_eq!(join(extra).unwrap(), want.map(PathBuf::from), "{name}");
        }
        assert!(join(&["--no-uapi", "--uapi-dir", "/tmp/x"]).is_err());
    }
}
