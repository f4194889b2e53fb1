//! `wgmeshctl health`: `GET /v1/health` for scripts and monitoring. Exit 0 when the daemon is
//! healthy, 1 when it is not (3 when it cannot be reached, as for every command).

use std::path::Path;

use clap::Args;
use wgmesh_api_types::Health;

use crate::client;
use crate::daemon_cmds::json_text;
use crate::text::Block;
use crate::{Exit, JsonArg, print_out};

/// Options of `health`.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Print nothing; only the exit status tells.
    #[arg(short, long, conflicts_with = "json")]
    quiet: bool,
    #[command(flatten)]
    out: JsonArg,
}

/// Runs `health`.
pub async fn run(socket: &Path, args: HealthArgs) -> anyhow::Result<Exit> {
    let (value, health) = client::get_health(socket).await?;
    if !args.quiet {
        let text = if args.out.json {
            json_text(&value)?
        } else {
            render(&health)
        };
        print_out(&text)?;
    }
    Ok(if health.healthy {
        Exit::Success
    } else {
        Exit::Failure
    })
}

/// `Health: healthy` and a line per reason, as in `status`.
pub fn render(h: &Health) -> String {
    let mut b = Block::default();
    crate::status::health_rows(&mut b, h);
    b.render()
}
