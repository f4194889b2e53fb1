//! `wgmeshctl peers [list]` (a table of `GET /v1/peers`, with the API's filters) and `wgmeshctl
//! peers get PEER` (`GET /v1/peers/{key}`, every field of one peer).

use std::net::IpAddr;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use clap::{Args, Subcommand};
use wgmesh_api_types::{Peer, PeerList, problem_type};

use crate::client::{self, ClientError, paths};
use crate::daemon_cmds::{decode, json_text};
use crate::text::{Block, ago, bytes, list, or_dash, peer_name, short_key, table};
use crate::{Exit, JsonArg, print_out};

/// Options of `peers`: a subcommand, or the options of `list` (the default).
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct PeersArgs {
    #[command(subcommand)]
    command: Option<PeersCommand>,
    #[command(flatten)]
    list: ListArgs,
}

#[derive(Debug, Subcommand)]
enum PeersCommand {
    /// List the peers, sorted by mesh IP (what `peers` alone does).
    List(ListArgs),
    /// Show one peer: everything wgmeshd knows about it.
    Get(GetArgs),
}

/// Options of `peers list`.
#[derive(Debug, Args)]
struct ListArgs {
    /// Only peers in this state.
    #[arg(long, value_name = "STATE", value_parser = ["active", "cached", "quarantined", "dead"])]
    state: Option<String>,
    /// Only peers whose endpoint was learned this way (lan, dht, gossip, cache, ...; none for peers
    /// without an endpoint).
    #[arg(long, value_name = "VIA")]
    via: Option<String>,
    #[command(flatten)]
    out: JsonArg,
}

/// Options of `peers get`.
#[derive(Debug, Args)]
struct GetArgs {
    /// The peer: its public key (standard or URL-safe base64), hostname, mesh IP, or the start of
    /// its key (as the KEY column of `peers` shows it).
    #[arg(value_name = "PEER")]
    peer: String,
    #[command(flatten)]
    out: JsonArg,
}

/// Runs `peers`.
pub async fn run(socket: &Path, args: PeersArgs) -> anyhow::Result<Exit> {
    match args.command {
        None => list_peers(socket, args.list).await,
        Some(PeersCommand::List(list)) => list_peers(socket, list).await,
        Some(PeersCommand::Get(get)) => get_peer(socket, get).await,
    }
}

async fn list_peers(socket: &Path, args: ListArgs) -> anyhow::Result<Exit> {
    let filters: Vec<(&str, &str)> = [("state", &args.state), ("via", &args.via)]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
        .collect();
    let path = with_query(paths::PEERS, &filters);
    let value = client::get_json(socket, &path).await?;
    let text = if args.out.json {
        json_text(&value)?
    } else {
        let peers: PeerList = decode(socket, &format!("GET {path}"), value)?;
        if peers.peers.is_empty() && !filters.is_empty() {
            let named: Vec<String> = filters.iter().map(|(k, v)| format!("--{k} {v}")).collect();
            format!("No peers match {}\n", named.join(" "))
        } else {
            render_list(&peers)
        }
    };
    print_out(&text)?;
    Ok(Exit::Success)
}

async fn get_peer(socket: &Path, args: GetArgs) -> anyhow::Result<Exit> {
    let key = match full_key(&args.peer) {
        Some(key) => key,
        None => {
            let value = client::get_json(socket, paths::PEERS).await?;
            let peers: PeerList = decode(socket, &format!("GET {}", paths::PEERS), value)?;
            resolve(&peers.peers, &args.peer)?
        }
    };
    let path = format!("{}/{}", paths::PEERS, percent_encode(&key));
    let value = match client::get_json(socket, &path).await {
        Err(ClientError::Problem { problem, .. }) if problem.kind == problem_type::NOT_FOUND => {
            anyhow::bail!("wgmeshd knows no peer with key {key}")
        }
        other => other?,
    };
    let text = if args.out.json {
        json_text(&value)?
    } else {
        // The peer's fields, at the top level of the body or under `peer`.
        let fields = match value.get("peer") {
            Some(inner) if inner.is_object() => inner.clone(),
            _ => value,
        };
        let peer: Peer = decode(socket, &format!("GET {path}"), fields)?;
        render_peer(&peer)
    };
    print_out(&text)?;
    Ok(Exit::Success)
}

/// `peer` in standard base64 when it is a whole WireGuard key (standard or URL-safe base64).
fn full_key(peer: &str) -> Option<String> {
    [STANDARD, URL_SAFE]
        .iter()
        .find_map(|engine| engine.decode(peer).ok())
        .filter(|raw| raw.len() == 32)
        .map(|raw| STANDARD.encode(raw))
}

/// The key of the one peer that `wanted` names: its hostname or mesh IP, else the start of its
/// key.
fn resolve(peers: &[Peer], wanted: &str) -> anyhow::Result<String> {
    let ip: Option<IpAddr> = wanted.parse().ok();
    let same_ip = |text: &Option<String>| {
        ip.is_some() && text.as_deref().and_then(|t| t.parse::<IpAddr>().ok()) == ip
    };
    let exact: Vec<&Peer> = peers
        .iter()
        .filter(|p| {
            (!p.hostname.is_empty() && p.hostname.eq_ignore_ascii_case(wanted))
                || same_ip(&p.mesh_ip)
                || same_ip(&p.mesh_ipv6)
        })
        .collect();
    let found = if exact.is_empty() {
        peers
            .iter()
            .filter(|p| p.public_key.starts_with(wanted))
            .collect()
    } else {
        exact
    };
    match found[..] {
        [one] => Ok(one.public_key.clone()),
        [] => anyhow::bail!(
            "no peer matches {wanted:?} (give its public key, hostname, mesh IP or the start of \
             its key; `wgmeshctl peers` lists them)"
        ),
        ref many => {
            let names: Vec<String> = many
                .iter()
                .map(|p| peer_name(&p.hostname, &p.public_key))
                .collect();
            anyhow::bail!(
                "{wanted:?} matches {} peers: {}; give more of the key",
                many.len(),
                names.join(", ")
            )
        }
    }
}

/// `path?k=v&…` with the values percent-encoded.
fn with_query(path: &str, pairs: &[(&str, &str)]) -> String {
    let query: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", percent_encode(v)))
        .collect();
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", query.join("&"))
    }
}

/// Every byte but RFC 3986's unreserved characters as `%XX`, so a value fits in a path segment
/// or a query (a key's `/`, `+` and `=` included).
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A table of peers with relative times, then the advertised routes this node refuses; or `No
/// peers`.
pub fn render_list(list: &PeerList) -> String {
    if list.peers.is_empty() {
        return "No peers\n".to_owned();
    }
    let mut rows = vec![
        [
            "HOSTNAME",
            "KEY",
            "MESH IP",
            "ENDPOINT",
            "VIA",
            "LAST SEEN",
            "HANDSHAKE",
            "PATH",
            "STATE",
            "HEALTH",
            "LATENCY",
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
            short_key(&p.public_key).to_owned(),
            or_dash(p.mesh_ip.as_deref()),
            or_dash(p.endpoint.as_deref()),
            or_dash(p.endpoint_method.as_deref()),
            ago(p.last_seen_seconds_ago),
            p.last_handshake_seconds_ago
                .map_or_else(|| "never".to_owned(), ago),
            path_cell(p, &list.peers),
            p.state.clone(),
            health(p),
            latency(p.latency_ms),
        ]);
    }
    let mut out = table(&rows);
    let refused: Vec<String> = list
        .peers
        .iter()
        .flat_map(|p| {
            let name = if p.hostname.is_empty() {
                short_key(&p.public_key).to_owned()
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

/// `direct`, `lan`, `relay:NAME` (the relay's hostname, else the start of its key) or `-`.
fn path_cell(p: &Peer, peers: &[Peer]) -> String {
    match (p.path.as_deref(), p.relay_via.as_deref()) {
        (Some(path), Some(via)) => {
            let name = peers
                .iter()
                .find(|r| r.public_key == via && !r.hostname.is_empty())
                .map_or_else(|| short_key(via).to_owned(), |r| r.hostname.clone());
            format!("{path}:{name}")
        }
        (path, _) => or_dash(path),
    }
}

/// `health` with its reasons: `offline (probe_failed, handshake_stale)`; `-` from a daemon
/// without health.
fn health(p: &Peer) -> String {
    match (p.health.as_str(), p.reasons.is_empty()) {
        ("", _) => "-".to_owned(),
        (h, true) => h.to_owned(),
        (h, false) => format!("{h} ({})", p.reasons.join(", ")),
    }
}

/// A probe round-trip time: `0.73ms`, `12ms`, or `-`.
fn latency(ms: Option<f64>) -> String {
    match ms {
        None => "-".to_owned(),
        Some(ms) if ms < 10.0 => format!("{ms:.2}ms"),
        Some(ms) => format!("{ms:.0}ms"),
    }
}

/// Every field of one peer, `Key: value`.
pub fn render_peer(p: &Peer) -> String {
    let mut b = Block::default();
    b.row("Public key", &p.public_key)
        .row(
            "Hostname",
            if p.hostname.is_empty() {
                "-"
            } else {
                &p.hostname
            },
        )
        .row("State", &p.state)
        .row("Health", health(p))
        .row("Probe failures", p.probe_failures.to_string())
        .row("Latency", latency(p.latency_ms))
        .row(
            "Mesh IPv4",
            match &p.expected_mesh_ip {
                Some(next) => format!(
                    "{} (lost a mesh-IP collision: moving to {next})",
                    or_dash(p.mesh_ip.as_deref())
                ),
                None => or_dash(p.mesh_ip.as_deref()),
            },
        )
        .row("Mesh IPv6", or_dash(p.mesh_ipv6.as_deref()))
        .row(
            "Endpoint",
            match (&p.endpoint, &p.endpoint_method) {
                (Some(e), Some(m)) => format!("{e} (via {m})"),
                (Some(e), None) => e.clone(),
                (None, _) => "-".to_owned(),
            },
        )
        .row("Discovered via", list(&p.discovered_via))
        .row(
            "Path",
            match (p.path.as_deref(), p.relay_via.as_deref()) {
                (Some(path), Some(via)) => format!("{path} via {via}"),
                (path, _) => or_dash(path),
            },
        )
        .row("Introducer", if p.introducer { "yes" } else { "no" })
        .row("NAT type", or_dash(p.nat_type.as_deref()))
        .row("Routes", list(&p.routable_networks));
    let refused: Vec<String> = p
        .routes_refused
        .iter()
        .map(|r| format!("{} ({}): {}", r.prefix, r.reason, r.detail))
        .collect();
    b.row(
        "Routes refused",
        refused.first().map_or("-", String::as_str),
    );
    for line in refused.iter().skip(1) {
        b.more(line);
    }
    b.row("Last seen", ago(p.last_seen_seconds_ago))
        .row(
            "Handshake",
            p.last_handshake_seconds_ago
                .map_or_else(|| "never".to_owned(), ago),
        )
        .row(
            "Traffic",
            format!("{} received, {} sent", bytes(p.rx_bytes), bytes(p.tx_bytes)),
        );
    b.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "PYtJ5VmQqBAr7dnbTmCR1xP/v+/jrHmuTnGC4Aixu+o=";

    #[test]
    fn full_keys_in_either_base64_alphabet() {
        let url_safe = KEY.replace('/', "_").replace('+', "-");
        assert_eq!(full_key(KEY).as_deref(), Some(KEY));
        assert_eq!(full_key(&url_safe).as_deref(), Some(KEY));
        for not_a_key in ["PYtJ5VmQ", "alpha", "10.78.1.1", "AAAA", ""] {
            assert_eq!(full_key(not_a_key), None, "{not_a_key}");
        }
    }

    #[test]
    fn keys_and_filters_are_percent_encoded() {
        assert_eq!(
            percent_encode(KEY),
            "PYtJ5VmQqBAr7dnbTmCR1xP%2Fv%2B%2FjrHmuTnGC4Aixu%2Bo%3D"
        );
        assert_eq!(
            with_query("/v1/peers", &[("state", "active"), ("via", "a b&c")]),
            "/v1/peers?state=active&via=a%20b%26c"
        );
        assert_eq!(with_query("/v1/peers", &[]), "/v1/peers");
    }

    #[test]
    fn a_peer_is_named_by_hostname_ip_or_key_prefix() {
        let peer = |key: &str, host: &str, ip: &str, ip6: &str| Peer {
            public_key: key.into(),
            hostname: host.into(),
            mesh_ip: Some(ip.into()),
            mesh_ipv6: Some(ip6.into()),
            ..Peer::default()
        };
        let peers = [
            peer("PYtJ5VmQ-one", "alpha", "10.78.1.1", "fd9d::11"),
            peer("PYtJ7xxx-two", "", "10.78.1.2", "fd9d::12"),
            peer("Zalpha-three", "gamma", "10.78.1.3", "fd9d::13"),
        ];
        let ok = [
            ("alpha", "PYtJ5VmQ-one"),
            ("ALPHA", "PYtJ5VmQ-one"),
            ("10.78.1.2", "PYtJ7xxx-two"),
            ("fd9d:0::13", "Zalpha-three"),
            ("PYtJ5", "PYtJ5VmQ-one"),
            ("Z", "Zalpha-three"),
        ];
        for (wanted, key) in ok {
            assert_eq!(resolve(&peers, wanted).unwrap(), key, "{wanted}");
        }
        let err = resolve(&peers, "PYtJ").unwrap_err().to_string();
        assert_eq!(
            err,
            "\"PYtJ\" matches 2 peers: alpha (PYtJ5VmQ), PYtJ7xxx; give more of the key"
        );
        let err = resolve(&peers, "delta").unwrap_err().to_string();
        assert!(err.starts_with("no peer matches \"delta\""), "{err}");
    }
}
