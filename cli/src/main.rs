//! `wgmeshctl`: the command-line client of `wgmeshd`.
//!
//! Daemon commands talk to the control API on its unix socket. The offline commands here need no
//! daemon: they work from the mesh secret alone (`secret …`) or from a captured packet
//! (`debug decode-packet`). Exit status: 0 success, 1 failure, 2 usage error.

mod debug;
mod secret;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// wgmeshctl: control and inspect wgmesh nodes.
#[derive(Debug, Parser)]
#[command(
    name = "wgmeshctl",
    version,
    propagate_version = true,
    after_help = "Environment:\n  WGMESH_SECRET       the mesh secret (when --secret/--secret-file are absent)\n  WGMESH_SECRET_FILE  file holding the mesh secret (after WGMESH_SECRET)\n\nExit status: 0 success, 1 failure (message on stderr), 2 usage error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create and inspect mesh secrets (offline; no daemon needed).
    #[command(subcommand)]
    Secret(secret::SecretCommand),
    /// Troubleshooting tools (offline; no daemon needed).
    #[command(subcommand)]
    Debug(debug::DebugCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Secret(cmd) => secret::run(cmd),
        Command::Debug(cmd) => debug::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("wgmeshctl: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves the secret from `args`, printing any advice to stderr.
fn resolve_secret(
    args: &wgmeshd::config::SecretArgs,
) -> anyhow::Result<wgmeshd::config::MeshSecret> {
    let secret = args.resolve()?;
    if let Some(warning) = args.process_list_warning() {
        eprintln!("wgmeshctl: warning: {warning}");
    }
    Ok(secret)
}

/// Prints `value` as 2-space indented JSON plus a newline.
fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
