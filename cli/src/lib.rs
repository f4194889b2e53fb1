//! `wgmeshctl`: the command-line client of `wgmeshd`.
//!
//! Daemon commands (`status`, `peers [list|get]`, `reload`, `cache flush`, `health`, `watch`) talk
//! to the control API on its unix socket through [`client`] (hyper, one connection per request).
//! The offline commands need no daemon: they work from the mesh secret alone (`secret …`), from
//! a captured packet (`debug decode-packet`) or from the command line itself (`completions`,
//! `man`). Every command that prints data takes `--json`. Exit statuses are [`Exit`]; they never
//! change meaning.
//!
//! The program lives in this library so that other binaries can run exactly this code: the
//! `wgmeshctl` binary is one line calling [`main_from`], and the end-to-end tests' multi-call
//! binary calls it too, so they never run a stale build. [`client`] is the API client, also used by
//! the tests to read a daemon's status.
//!
//! One module per command (`status`, `peers`, `control` for reload and cache flush, `health`,
//! `watch`, `docs` for completions and the man page, `secret`, `debug`); rendering is pure (API
//! types in, text out, no clock) and only the command functions touch the socket. `text` holds
//! the shared text blocks, `daemon_cmds` the runtime and decoding every daemon command shares.

pub mod client;
mod control;
mod daemon_cmds;
mod debug;
mod docs;
mod health;
mod peers;
mod secret;
mod status;
mod text;
mod watch;

use std::ffi::OsString;
use std::io::{self, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

/// The exit statuses of `wgmeshctl`. Scripts may rely on them: a value never changes meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: done (for `health`: the daemon is healthy).
    Success = 0,
    /// 1: failed: wgmeshd refused the request or could not carry it out, `health` found it
    /// unhealthy, `peers get` found no such peer, or an offline command failed.
    Failure = 1,
    /// 2: usage error (unknown command or option, invalid value); nothing was sent.
    Usage = 2,
    /// 3: wgmeshd is not reachable: no socket, nobody listening, no answer in time, or the
    /// connection broke (for `watch`: the daemon went away).
    Unreachable = 3,
    /// 4: permission denied: not allowed to connect to the socket, or not allowed to change the
    /// daemon (writes need root or the socket's group).
    Denied = 4,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

/// What each exit status means, for `--help`, the man page and the README.
const EXIT_STATUSES: [(Exit, &str); 5] = [
    (Exit::Success, "success; for health: the daemon is healthy"),
    (
        Exit::Failure,
        "failure: wgmeshd refused or could not do it; health: unhealthy; peers get: no such peer",
    ),
    (
        Exit::Usage,
        "usage error: unknown command or option, invalid value",
    ),
    (
        Exit::Unreachable,
        "wgmeshd not reachable: not running, wrong socket, no answer, or it went away (watch)",
    ),
    (
        Exit::Denied,
        "permission denied: may not use the socket, or may not change the daemon (see the hint)",
    ),
];

/// The environment variables wgmeshctl reads.
const ENVIRONMENT: [(&str, &str); 3] = [
    (
        wgmesh_api_types::SOCKET_ENV,
        "API socket of wgmeshd (when --socket is absent)",
    ),
    (
        "WGMESH_SECRET",
        "the mesh secret (when --secret/--secret-file are absent)",
    ),
    (
        "WGMESH_SECRET_FILE",
        "file holding the mesh secret (after WGMESH_SECRET)",
    ),
];

/// The text after `--help`: the environment and the exit statuses.
fn after_help() -> String {
    let mut text = String::from("Environment:\n");
    for (name, what) in ENVIRONMENT {
        text.push_str(&format!("  {name:<18}  {what}\n"));
    }
    text.push_str("\nExit status:\n");
    for (exit, what) in EXIT_STATUSES {
        text.push_str(&format!("  {}  {what}\n", exit as u8));
    }
    text
}

/// The command line as clap sees it, with the after-help text.
fn command() -> clap::Command {
    Cli::command().after_help(after_help())
}

/// Control and inspect wgmesh nodes.
///
/// The daemon commands (status, peers, reload, cache, health, watch) ask wgmeshd through its
/// control API on a unix socket; secret, debug, completions and man work offline. Every command
/// that prints data takes --json.
#[derive(Debug, Parser)]
#[command(name = "wgmeshctl", version, propagate_version = true)]
struct Cli {
    /// API socket of wgmeshd (daemon commands only).
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        env = wgmesh_api_types::SOCKET_ENV,
        default_value = wgmesh_api_types::DEFAULT_SOCKET_PATH
    )]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show this node: addresses, backend, log level, uptime, peer counts, last reconcile,
    /// health (asks wgmeshd).
    Status(status::StatusArgs),
    /// List the peers wgmeshd knows, or show one (asks wgmeshd).
    Peers(peers::PeersArgs),
    /// Change settings of the running daemon and print what changed; without options it
    /// re-reads the reload file (`<state-dir>/<iface>.reload`), like SIGHUP. Needs root or the
    /// socket's group.
    Reload(control::ReloadArgs),
    /// The peer cache (asks wgmeshd).
    #[command(subcommand)]
    Cache(control::CacheCommand),
    /// Check that wgmeshd is healthy: exit 0 if it is, 1 if not (with the reasons).
    Health(health::HealthArgs),
    /// Follow what happens in wgmeshd, one line per event, until Ctrl-C.
    Watch(watch::WatchArgs),
    /// Create and inspect mesh secrets (offline; no daemon needed).
    #[command(subcommand)]
    Secret(secret::SecretCommand),
    /// Troubleshooting tools (offline; no daemon needed).
    #[command(subcommand)]
    Debug(debug::DebugCommand),
    /// Print a shell completion script (offline). For bash:
    /// `wgmeshctl completions bash > /etc/bash_completion.d/wgmeshctl`.
    Completions(docs::CompletionsArgs),
    /// Print the manual page (roff; offline): `wgmeshctl man | man -l -`.
    Man(docs::ManArgs),
}

/// `--json`, flattened into every command that prints data.
#[derive(Debug, Clone, Copy, Args)]
struct JsonArg {
    /// Print JSON (the daemon's answer, as received) instead of text.
    #[arg(long)]
    json: bool,
}

/// The `wgmeshctl` program: parses `args` (the first one is the program name), runs the command
/// and prints an error, with a hint when there is one. `main.rs` calls it with the process
/// arguments. The exit status is an [`Exit`].
///
/// A usage error, `--help` and `--version` print and exit the process (clap's behaviour, exit 2
/// for a usage error), as the binary always did.
pub fn main_from<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = command().get_matches_from(args);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let socket = cli.socket;
    let result = match cli.command {
        Command::Status(args) => daemon_cmds::run(&socket, |s| status::run(s, args)),
        Command::Peers(args) => daemon_cmds::run(&socket, |s| peers::run(s, args)),
        Command::Reload(args) => daemon_cmds::run(&socket, |s| control::reload(s, args)),
        Command::Cache(cmd) => daemon_cmds::run(&socket, |s| control::cache(s, cmd)),
        Command::Health(args) => daemon_cmds::run(&socket, |s| health::run(s, args)),
        Command::Watch(args) => daemon_cmds::run(&socket, |s| watch::run(s, args)),
        Command::Secret(cmd) => secret::run(cmd),
        Command::Debug(cmd) => debug::run(cmd),
        Command::Completions(args) => docs::completions(&args),
        Command::Man(args) => docs::man(&args),
    };
    match result {
        Ok(exit) => exit.into(),
        Err(err) => {
            let client = err.downcast_ref::<client::ClientError>();
            eprintln!("wgmeshctl: error: {err:#}");
            if let Some(hint) = client.and_then(client::ClientError::hint) {
                eprintln!("wgmeshctl: hint: {hint}");
            }
            client
                .map_or(Exit::Failure, client::ClientError::exit)
                .into()
        }
    }
}

/// Resolves the secret from `args`, printing any advice to stderr.
fn resolve_secret(
    args: &wgmeshd::config::SecretArgs,
) -> anyhow::Result<wgmeshd::config::MeshSecret> {
    let secret = args.resolve()?;
    for advice in wgmeshd::config::secret_advice(&secret) {
        eprintln!("wgmeshctl: warning: {advice}");
    }
    Ok(secret)
}

/// Prints `value` as 2-space indented JSON plus a newline.
fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    print_out(&format!("{}\n", serde_json::to_string_pretty(value)?))
}

/// Writes `text` to stdout as is. A reader that went away (`wgmeshctl peers | head -1`) is not an
/// error: what it did not read, it did not want.
fn print_out(text: &str) -> anyhow::Result<()> {
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn exit_statuses_are_listed_with_their_numbers() {
        let help = after_help();
        for (exit, start) in [
            (Exit::Success, "  0  success"),
            (Exit::Failure, "  1  failure"),
            (Exit::Usage, "  2  usage error"),
            (Exit::Unreachable, "  3  wgmeshd not reachable"),
            (Exit::Denied, "  4  permission denied"),
        ] {
            assert!(help.contains(start), "{exit:?} in\n{help}");
        }
        // One line each, also in a 100-column `--help`.
        assert!(help.lines().all(|l| l.len() <= 100), "{help}");
    }
}
