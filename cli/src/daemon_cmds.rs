//! `wgmeshctl status` and `wgmeshctl peers`: ask the running daemon and render its answer.
//!
//! Rendering is pure (`render_*` take the API types and return text) so it is tested without a
//! daemon; only [`run`] touches the socket.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use clap::Args;
use serde::de::DeserializeOwned;
use wgmesh_api_types::{PeerList, Status};

use crate::client;

/// Options of `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print the daemon's JSON answer instead of text.
    #[arg(long)]
    json: bool,
}

/// Options of `peers`.
#[derive(Debug, Args)]
pub struct PeersArgs {
    /// Print the daemon's JSON answer instead of a table.
    #[arg(long)]
    json: bool,
}

/// A command that reads one endpoint of the daemon.
#[derive(Debug)]
pub enum DaemonCommand {
    /// `GET /v1/status`.
    Status(StatusArgs),
    /// `GET /v1/peers`.
    Peers(PeersArgs),
}

/// Runs a daemon command against the API socket `socket`.
pub fn run(cmd: DaemonCommand, socket: &Path) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    let out = runtime.block_on(async {
        match cmd {
            DaemonCommand::Status(args) => {
                fetch(socket, "/v1/status", args.json, render_status).await
            }
            DaemonCommand::Peers(args) => fetch(socket, "/v1/peers", args.json, render_peers).await,
        }
    })?;
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// Fetches `path` and returns it pretty-printed (`json`) or rendered as text.
async fn fetch<T: DeserializeOwned>(
    socket: &Path,
    path: &str,
    json: bool,
    render: fn(&T) -> String,
) -> anyhow::Result<String> {
    let value = client::get_json(socket, path).await?;
    if json {
        return Ok(format!("{}\n", serde_json::to_string_pretty(&value)?));
    }
    let typed: T = serde_json::from_value(value).map_err(|e| {
        anyhow::anyhow!(
            "unexpected answer from wgmeshd at {}: {path}: {e}",
            socket.display()
        )
    })?;
    Ok(render(&typed))
}

/// `Key: value` lines with the values aligned.
pub fn render_status(s: &Status) -> String {
    let rows = [
        ("Interface", s.interface.clone()),
        ("Public key", s.public_key.clone()),
        ("Mesh IPv4", s.mesh_ip.clone()),
        ("Mesh IPv6", s.mesh_ipv6.clone()),
        ("Mesh subnet", s.mesh_subnet.clone()),
        ("Network ID", s.network_id.clone()),
        ("Listen port", s.listen_port.to_string()),
        (
            "Backend",
            format!("{} ({})", s.wg_backend, s.wg_backend_reason),
        ),
        (
            "Introducer",
            if s.introducer { "yes" } else { "no" }.to_owned(),
        ),
        (
            "Advertises",
            if s.advertise_routes.is_empty() {
                "-".to_owned()
            } else {
                s.advertise_routes.join(", ")
            },
        ),
        ("Discovery", render_layers(s)),
        ("Uptime", human_duration(s.uptime_seconds)),
        ("Peers", render_counts(s)),
        ("Version", s.version.clone()),
    ];
    let troubled: Vec<String> = s
        .tasks
        .iter()
        .filter(|t| t.state != "running" && t.state != "stopped")
        .map(|t| {
            format!(
                "{} {} ({} restarts): {}",
                t.name,
                t.state,
                t.restarts,
                t.last_error.as_deref().unwrap_or("-")
            )
        })
        .collect();
    let rows: Vec<(&str, String)> = rows
        .into_iter()
        .chain(troubled.into_iter().map(|t| ("Task", t)))
        .collect();
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (key, value) in rows {
        let _ = writeln!(out, "{:<width$}  {value}", format!("{key}:"));
    }
    out
}

/// `lan running, dht retrying (error)` — one entry per discovery layer.
fn render_layers(s: &Status) -> String {
    if s.discovery.is_empty() {
        return "-".to_owned();
    }
    s.discovery
        .iter()
        .map(|(name, l)| match (&l.state[..], &l.last_error) {
            ("retrying", Some(e)) => format!("{name} retrying ({e})"),
            (state, _) => match &l.detail {
                Some(d) if state == "running" => format!("{name} running ({d})"),
                _ => format!("{name} {state}"),
            },
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn render_counts(s: &Status) -> String {
    let mut text = format!(
        "{} total, {} active, {} connected",
        s.peers.total, s.peers.active, s.peers.connected
    );
    if s.peers.quarantined > 0 {
        let _ = write!(text, ", {} quarantined", s.peers.quarantined);
    }
    text
}

/// A table of peers, or `No peers`.
pub fn render_peers(list: &PeerList) -> String {
    if list.peers.is_empty() {
        return "No peers\n".to_owned();
    }
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    let mut rows = vec![
        [
            "HOSTNAME",
            "MESH IP",
            "ENDPOINT",
            "VIA",
            "LAST SEEN",
            "HANDSHAKE",
            "STATE",
        ]
        .map(str::to_owned),
    ];
    for p in &list.peers {
        rows.push([
            if p.hostname.is_empty() {
                "-".to_owned()
            } else {
                p.hostname.clone()
            },
            dash(&p.mesh_ip),
            dash(&p.endpoint),
            dash(&p.endpoint_method),
            format!("{} ago", human_duration(p.last_seen_seconds_ago)),
            p.last_handshake_seconds_ago.map_or_else(
                || "never".to_owned(),
                |s| format!("{} ago", human_duration(s)),
            ),
            p.state.clone(),
        ]);
    }
    let mut out = table(&rows);
    let refused: Vec<String> = list
        .peers
        .iter()
        .flat_map(|p| {
            let name = if p.hostname.is_empty() {
                p.public_key.clone()
            } else {
                p.hostname.clone()
            };
            p.routes_refused
                .iter()
                .map(move |r| format!("  {name}: {} ({}): {}", r.prefix, r.reason, r.detail))
        })
        .collect();
    if !refused.is_empty() {
        out.push_str("\nAdvertised routes not installed:\n");
        for line in refused {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

/// Columns separated by two spaces, left-aligned, no trailing blanks.
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (cell, w) in row.iter().zip(widths) {
            let _ = write!(line, "{cell:<w$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `45s`, `3m 12s`, `2h 5m`, `3d 4h`: the two largest units, enough to read at a glance.
fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_at_a_glance() {
        let table = [
            (0, "0s"),
            (59, "59s"),
            (60, "1m 0s"),
            (3599, "59m 59s"),
            (3600, "1h 0m"),
            (86_399, "23h 59m"),
            (86_400, "1d 0h"),
            (200_000, "2d 7h"),
        ];
        for (secs, want) in table {
            assert_eq!(human_duration(secs), want, "{secs}");
        }
    }

    #[test]
    fn table_aligns_columns_without_trailing_blanks() {
        let rows = [
            ["A".to_owned(), "BB".to_owned(), "C".to_owned()],
            ["long".to_owned(), "x".to_owned(), "".to_owned()],
        ];
        assert_eq!(table(&rows), "A     BB  C\nlong  x\n");
    }
}
