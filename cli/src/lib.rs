//! `wgmeshctl`: the command-line client of `wgmeshd`.
//!
//! Daemon commands talk to the control API on its unix socket. The offline commands here need no
//! daemon: they work from the mesh secret alone (`secret …`) or from a captured packet
//! (`debug decode-packet`). Exit status: 0 success, 1 failure, 2 usage error.
//!
//! The program lives in this library so that other binaries can run exactly this code: the
//! `wgmeshctl` binary is one line calling [`main_from`], and the end-to-end tests' multi-call
//! binary calls it too, so they never run a stale build. [`client`] is the API client, also used by
//! the tests to read a daemon's status.

pub mod client;
mod daemon_cmds;
mod debug;
mod secret;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// wgmeshctl: control and inspect wgmesh nodes.
#[derive(Debug, Parser)]
#[command(
    name = "wgmeshctl",
    version,
    propagate_version = true,
    after_help = "Environment:\n  WGMESH_SOCKET       API socket of wgmeshd (when --socket is absent)\n  WGMESH_SECRET       the mesh secret (when --secret/--secret-file are absent)\n  WGMESH_SECRET_FILE  file holding the mesh secret (after WGMESH_SECRET)\n\nExit status: 0 success, 1 failure (message on stderr), 2 usage error."
)]
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
    /// Show this node's status: addresses, backend, uptime, peer counts (asks wgmeshd).
    Status(daemon_cmds::StatusArgs),
    /// List the peers wgmeshd knows (asks wgmeshd).
    Peers(daemon_cmds::PeersArgs),
    /// Create and inspect mesh secrets (offline; no daemon needed).
    #[command(subcommand)]
    Secret(secret::SecretCommand),
    /// Troubleshooting tools (offline; no daemon needed).
    #[command(subcommand)]
    Debug(debug::DebugCommand),
}

/// The `wgmeshctl` program: parses `args` (the first one is the program name), runs the command
/// and prints an error, with a hint when there is one. `main.rs` calls it with the process
/// arguments.
///
/// A usage error, `--help` and `--version` print and exit the process (clap's behaviour), as the
/// binary always did.
pub fn main_from<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = Cli::parse_from(args);
    let result = match cli.command {
        Command::Status(args) => {
            daemon_cmds::run(daemon_cmds::DaemonCommand::Status(args), &cli.socket)
        }
        Command::Peers(args) => {
            daemon_cmds::run(daemon_cmds::DaemonCommand::Peers(args), &cli.socket)
        }
        Command::Secret(cmd) => secret::run(cmd),
        Command::Debug(cmd) => debug::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("wgmeshctl: error: {err:#}");
            if let Some(hint) = err
                .downcast_ref::<client::ClientError>()
                .and_then(client::ClientError::hint)
            {
                eprintln!("wgmeshctl: hint: {hint}");
            }
            ExitCode::FAILURE
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
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
