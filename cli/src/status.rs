//! `wgmeshctl status`: the node as `GET /v1/status` describes it.

use std::fmt::Write as _;
use std::path::Path;

use clap::Args;
use wgmesh_api_types::{Health, PrivacyStatus, ReconcileSummary, Status};

use crate::client::{self, paths};
use crate::daemon_cmds::{decode, json_text};
use crate::text::{Block, ago, duration, list, short_key};
use crate::{Exit, JsonArg, print_out};

/// Options of `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    out: JsonArg,
}

/// Runs `status`.
pub async fn run(socket: &Path, args: StatusArgs) -> anyhow::Result<Exit> {
    let value = client::get_json(socket, paths::STATUS).await?;
    let text = if args.out.json {
        json_text(&value)?
    } else {
        let status: Status = decode(socket, &format!("GET {}", paths::STATUS), value)?;
        render(&status)
    };
    print_out(&text)?;
    Ok(Exit::Success)
}

/// `Key: value` lines with the values aligned; health reasons continue the `Health` row; a
/// `Task` row for each task that is not running normally.
pub fn render(s: &Status) -> String {
    let mut b = Block::default();
    b.row("Interface", &s.interface)
        .row("Public key", &s.public_key)
        .row("Mesh IPv4", &s.mesh_ip)
        .row("Mesh IPv6", &s.mesh_ipv6)
        .row("Mesh subnet", &s.mesh_subnet)
        .row("Network ID", &s.network_id)
        .row("Listen port", s.listen_port.to_string())
        .row(
            "Endpoint",
            s.public_endpoint.as_deref().unwrap_or("not known yet"),
        )
        .row("NAT type", s.nat_type.as_deref().unwrap_or("not measured"))
        .row(
            "Backend",
            format!("{} ({})", s.wg_backend, s.wg_backend_reason),
        )
        .row("Introducer", if s.introducer { "yes" } else { "no" })
        .row("Advertises", list(&s.advertise_routes));
    let mut discovery = layers(s).into_iter();
    b.row("Discovery", discovery.next().unwrap_or_default());
    for line in discovery {
        b.more(line);
    }
    b.row(
        "Privacy",
        s.privacy.as_ref().map_or_else(|| "off".to_owned(), privacy),
    )
    .row("Log level", &s.log_level)
    .row("Version", &s.version)
    .row("Uptime", duration(s.uptime_seconds))
    .row("Peers", counts(s))
    .row("Peers via", via(s))
    .row(
        "Last reconcile",
        s.last_reconcile
            .as_ref()
            .map_or_else(|| "not yet".to_owned(), reconcile),
    );
    health_rows(&mut b, &s.health);
    for t in s
        .tasks
        .iter()
        .filter(|t| t.state != "running" && t.state != "stopped")
    {
        b.row(
            "Task",
            format!(
                "{} {} ({} restarts): {}",
                t.name,
                t.state,
                t.restarts,
                t.last_error.as_deref().unwrap_or("-")
            ),
        );
    }
    b.render()
}

/// A `Health` row (`healthy`/`unhealthy`) and a line under it for each reason. `health` prints
/// the same lines.
pub fn health_rows(b: &mut Block, h: &Health) {
    b.row("Health", if h.healthy { "healthy" } else { "unhealthy" });
    for r in &h.reasons {
        let class = if r.critical { "critical" } else { "warning" };
        b.more(format!("{class:<8}  {}: {}", r.code, r.detail));
    }
}

/// One line per discovery layer that is not off (`lan         running   eth0, eth1`, `dht
/// retrying  no bootstrap node answered`), then one line naming the layers that are off.
fn layers(s: &Status) -> Vec<String> {
    if s.discovery.is_empty() {
        return vec!["-".to_owned()];
    }
    let width = s.discovery.keys().map(String::len).max().unwrap_or(0);
    let mut lines = Vec::new();
    let mut off = Vec::new();
    for (name, l) in &s.discovery {
        let text = match (&l.state[..], &l.last_error, &l.detail) {
            ("off", _, _) => {
                off.push(name.as_str());
                continue;
            }
            ("retrying", Some(e), _) => e.clone(),
            (_, _, Some(d)) => d.clone(),
            _ => String::new(),
        };
        lines.push(
            format!("{name:<width$}  {:<8}  {text}", l.state)
                .trim_end()
                .to_owned(),
        );
    }
    if !off.is_empty() {
        lines.push(format!("{:<width$}  {}", "off", off.join(", ")));
    }
    lines
}

/// `epoch 3, relays PYtJ5VmQ jtP2rWhb, next in 6m 52s`: the privacy epoch and its relays.
fn privacy(p: &PrivacyStatus) -> String {
    let relays = if p.relays.is_empty() {
        "no relay yet".to_owned()
    } else {
        let keys: Vec<&str> = p.relays.iter().map(|k| short_key(k)).collect();
        format!("relays {}", keys.join(" "))
    };
    format!(
        "epoch {}, {relays}, next in {}",
        p.epoch,
        duration(p.seconds_until_rotation)
    )
}

/// `9 total, 7 active, 1 cached, 1 quarantined, 5 connected`: the states that hold peers, then
/// how many have a recent handshake.
fn counts(s: &Status) -> String {
    let p = &s.peers;
    let mut text = format!("{} total, {} active", p.total, p.active);
    for (n, what) in [
        (p.cached, "cached"),
        (p.quarantined, "quarantined"),
        (p.dead, "dead"),
    ] {
        if n > 0 {
            let _ = write!(text, ", {n} {what}");
        }
    }
    let _ = write!(text, ", {} connected", p.connected);
    text
}

/// `cache 2, lan 7`: how the peers' endpoints were learned.
fn via(s: &Status) -> String {
    if s.peers.by_via.is_empty() {
        return "-".to_owned();
    }
    s.peers
        .by_via
        .iter()
        .map(|(via, n)| format!("{via} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `2s ago, took 4 ms: 1 added, 2 updated`.
fn reconcile(r: &ReconcileSummary) -> String {
    let changes: Vec<String> = [
        (r.added, "added"),
        (r.updated, "updated"),
        (r.removed, "removed"),
        (r.failed, "failed"),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect();
    let changes = if changes.is_empty() {
        "no changes".to_owned()
    } else {
        changes.join(", ")
    };
    format!(
        "{}, took {} ms: {changes}",
        ago(r.seconds_ago),
        r.duration_ms
    )
}
