//! Every field of the API is either rendered or deliberately left to `--json`: changing a field
//! must change the text where the tables below say, and a new field fails until it is classified.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use wgmesh_api_types::PeerList;

use crate::fixtures::{full_peers, full_status};
use crate::harness::{Daemon, ctl_ok};

/// How `wgmeshctl status` treats each field of `GET /v1/status`. A path is the field names from
/// the top, `*` for a map key that is data (a discovery layer's name), `[]` for a list element.
/// `Ok(row)`: changing the field changes that row of the text (lines under a row belong to it);
/// `Err(reason)`: deliberately not in the text (`--json` has it).
const STATUS_FIELDS: &[(&str, Result<&str, &str>)] = &[
    ("schema_version", Err("describes the body, not the node")),
    ("version", Ok("Version")),
    ("interface", Ok("Interface")),
    ("public_key", Ok("Public key")),
    ("mesh_ip", Ok("Mesh IPv4")),
    ("mesh_ipv6", Ok("Mesh IPv6")),
    ("mesh_subnet", Ok("Mesh subnet")),
    ("network_id", Ok("Network ID")),
    ("listen_port", Ok("Listen port")),
    ("public_endpoint", Ok("Endpoint")),
    ("nat_type", Ok("NAT type")),
    ("wg_backend", Ok("Backend")),
    ("wg_backend_reason", Ok("Backend")),
    ("uptime_seconds", Ok("Uptime")),
    ("introducer", Ok("Introducer")),
    ("advertise_routes[]", Ok("Advertises")),
    ("discovery.*.state", Ok("Discovery")),
    ("discovery.*.detail", Ok("Discovery")),
    ("discovery.*.last_error", Ok("Discovery")),
    (
        "discovery.*.last_error_seconds_ago",
        Err("an age, for scripts; the text shows the state and the error"),
    ),
    (
        "discovery.*.last_success_seconds_ago",
        Err("an age, for scripts; the text shows the state and the error"),
    ),
    ("privacy.epoch", Ok("Privacy")),
    ("privacy.relays[]", Ok("Privacy")),
    ("privacy.seconds_until_rotation", Ok("Privacy")),
    ("tasks[].name", Ok("Task")),
    ("tasks[].state", Ok("Task")),
    ("tasks[].restarts", Ok("Task")),
    ("tasks[].last_error", Ok("Task")),
    (
        "tasks[].last_error_seconds_ago",
        Err("an age, for scripts; the text shows the state and the error"),
    ),
    ("log_level", Ok("Log level")),
    ("peers.total", Ok("Peers")),
    ("peers.active", Ok("Peers")),
    ("peers.cached", Ok("Peers")),
    ("peers.connected", Ok("Peers")),
    ("peers.quarantined", Ok("Peers")),
    ("peers.dead", Ok("Peers")),
    ("peers.by_via.*", Ok("Peers via")),
    ("last_reconcile.seconds_ago", Ok("Last reconcile")),
    ("last_reconcile.duration_ms", Ok("Last reconcile")),
    ("last_reconcile.added", Ok("Last reconcile")),
    ("last_reconcile.updated", Ok("Last reconcile")),
    ("last_reconcile.removed", Ok("Last reconcile")),
    ("last_reconcile.failed", Ok("Last reconcile")),
    ("health.healthy", Ok("Health")),
    ("health.reasons[].code", Ok("Health")),
    ("health.reasons[].detail", Ok("Health")),
    ("health.reasons[].critical", Ok("Health")),
];

/// How the `wgmeshctl peers` table treats each field of `GET /v1/peers` (paths as in
/// [`STATUS_FIELDS`]). `Ok`: changing the field changes the text; `Err(reason)`: deliberately
/// not in the table (`peers get` and `--json` have it).
const PEER_FIELDS: &[(&str, Result<(), &str>)] = &[
    ("schema_version", Err("describes the body, not the peers")),
    ("peers[].public_key", Ok(())),
    ("peers[].hostname", Ok(())),
    ("peers[].mesh_ip", Ok(())),
    ("peers[].mesh_ipv6", Err("the table keeps to one address")),
    ("peers[].endpoint", Ok(())),
    ("peers[].endpoint_method", Ok(())),
    (
        "peers[].discovered_via[]",
        Err("history; VIA shows how the current endpoint was learned"),
    ),
    (
        "peers[].introducer",
        Err("one column too many; `peers get` shows it"),
    ),
    (
        "peers[].nat_type",
        Err("one column too many; `peers get` shows it"),
    ),
    (
        "peers[].routable_networks[]",
        Err("lists do not fit a table; `peers get` shows them"),
    ),
    ("peers[].last_seen_seconds_ago", Ok(())),
    ("peers[].state", Ok(())),
    ("peers[].last_handshake_seconds_ago", Ok(())),
    (
        "peers[].rx_bytes",
        Err("traffic counters are for `peers get` and scripts"),
    ),
    (
        "peers[].tx_bytes",
        Err("traffic counters are for `peers get` and scripts"),
    ),
    ("peers[].routes_refused[].prefix", Ok(())),
    ("peers[].routes_refused[].reason", Ok(())),
    ("peers[].routes_refused[].detail", Ok(())),
    ("peers[].path", Ok(())),
    ("peers[].relay_via", Ok(())),
    (
        "peers[].expected_mesh_ip",
        Err("a collision is rare and brief; `peers get` shows it"),
    ),
    ("peers[].health", Ok(())),
    ("peers[].reasons[]", Ok(())),
    (
        "peers[].probe_failures",
        Err("the health column says probe_failed; the count is for `peers get`"),
    ),
    ("peers[].latency_ms", Ok(())),
];

/// `wgmeshctl peers get` shows every field of a peer.
const PEER_GET_FIELDS: &[(&str, &str)] = &[
    ("public_key", "Public key"),
    ("hostname", "Hostname"),
    ("mesh_ip", "Mesh IPv4"),
    ("mesh_ipv6", "Mesh IPv6"),
    ("endpoint", "Endpoint"),
    ("endpoint_method", "Endpoint"),
    ("discovered_via[]", "Discovered via"),
    ("introducer", "Introducer"),
    ("nat_type", "NAT type"),
    ("routable_networks[]", "Routes"),
    ("last_seen_seconds_ago", "Last seen"),
    ("state", "State"),
    ("last_handshake_seconds_ago", "Handshake"),
    ("rx_bytes", "Traffic"),
    ("tx_bytes", "Traffic"),
    ("routes_refused[].prefix", "Routes refused"),
    ("routes_refused[].reason", "Routes refused"),
    ("routes_refused[].detail", "Routes refused"),
    ("path", "Path"),
    ("relay_via", "Path"),
    ("expected_mesh_ip", "Mesh IPv4"),
    ("health", "Health"),
    ("reasons[]", "Health"),
    ("probe_failures", "Probe failures"),
    ("latency_ms", "Latency"),
];

/// Every leaf of `value` as (concrete JSON pointer, field path as in [`STATUS_FIELDS`]). The keys
/// of `discovery` and `peers.by_via` are data (layer names, ways), not fields, so they become `*`.
fn leaves(value: &Value) -> Vec<(String, String)> {
    fn walk(v: &Value, pointer: String, path: String, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(map) => {
                for (key, child) in map {
                    let data_keys = path == "discovery" || path == "peers.by_via";
                    let field = if data_keys { "*" } else { key };
                    let sub = if path.is_empty() {
                        field.to_owned()
                    } else {
                        format!("{path}.{field}")
                    };
                    walk(child, format!("{pointer}/{key}"), sub, out);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(child, format!("{pointer}/{i}"), format!("{path}[]"), out);
                }
            }
            _ => out.push((pointer, path)),
        }
    }
    let mut out = Vec::new();
    walk(value, String::new(), String::new(), &mut out);
    out
}

/// Another value of the same type: a string gets a prefix, a number changes enough to show in
/// rounded durations and sizes and stays a valid port, a bool flips.
fn mutated(v: &Value) -> Option<Value> {
    match v {
        Value::String(s) => Some(Value::from(format!("x{s}"))),
        Value::Number(n) => n
            .as_u64()
            .map(|n| Value::from((n + 1) * 2 % 65_536))
            .or_else(|| n.as_f64().map(|f| Value::from(f * 2.0 + 1.0))),
        Value::Bool(b) => Some(Value::from(!b)),
        _ => None,
    }
}

/// `Key: value` text with each line under a row prefixed by that row's key (`Key: +line`), so a
/// changed line can be traced to its row.
fn keyed(text: &str) -> String {
    let mut key = String::new();
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with(' ') {
            out.push_str(&format!("{key}: +{}\n", line.trim_start()));
        } else {
            key = line.split(':').next().unwrap_or_default().to_owned();
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// For each field path of `fixture`: the text lines that changed when one of its values was
/// changed (empty when no change of that field shows). `show` publishes a body and returns what
/// the command printed.
fn what_each_field_changes(
    fixture: &Value,
    mut show: impl FnMut(&Value) -> String,
) -> BTreeMap<String, BTreeSet<String>> {
    let baseline = show(fixture);
    let mut changes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (pointer, path) in leaves(fixture) {
        let entry = changes.entry(path).or_default();
        let mut changed = fixture.clone();
        let leaf = changed.pointer_mut(&pointer).unwrap();
        let Some(new) = mutated(leaf) else { continue };
        *leaf = new;
        let after = show(&changed);
        let before: BTreeSet<&str> = baseline.lines().collect();
        entry.extend(
            after
                .lines()
                .filter(|l| !before.contains(l))
                .map(str::to_owned),
        );
    }
    changes
}

/// Checks `changes` against a table of where each field shows (`Ok(row)`, `Ok("")` for anywhere)
/// or why not (`Err`).
fn check_rows(
    what: &str,
    changes: &BTreeMap<String, BTreeSet<String>>,
    table: &BTreeMap<&str, Result<&str, &str>>,
) {
    let mut wrong = Vec::new();
    for (path, lines) in changes {
        match table.get(path.as_str()) {
            None => wrong.push(format!(
                "`{path}` is new: render it in `wgmeshctl {what}` or say why not"
            )),
            Some(Ok(key)) if lines.is_empty() => {
                wrong.push(format!("`{path}` does not show in the {key} row"))
            }
            // A table has no rows to tell apart: any line will do.
            Some(Ok("")) => {}
            Some(Ok(key)) => {
                let elsewhere: Vec<&String> = lines
                    .iter()
                    .filter(|l| !l.starts_with(&format!("{key}:")))
                    .collect();
                if !elsewhere.is_empty() {
                    wrong.push(format!("`{path}` changes other rows: {elsewhere:?}"));
                }
            }
            Some(Err(_)) if !lines.is_empty() => wrong.push(format!(
                "`{path}` is listed as not shown but changes {lines:?}"
            )),
            Some(Err(_)) => {}
        }
    }
    for path in table.keys() {
        if !changes.contains_key(*path) {
            wrong.push(format!("`{path}` is in the table but not in the fixture"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn status_renders_every_field_of_the_api_or_says_why_not() {
    let d = Daemon::real(full_status(), full_peers());
    let fixture = serde_json::to_value(full_status()).unwrap();
    let changes = what_each_field_changes(&fixture, |body| {
        d.status
            .send(serde_json::from_value(body.clone()).unwrap())
            .unwrap();
        keyed(&ctl_ok(&d.socket, &["status"]))
    });
    check_rows("status", &changes, &STATUS_FIELDS.iter().copied().collect());
}

#[test]
fn peers_renders_every_field_of_the_api_or_says_why_not() {
    let d = Daemon::real(full_status(), full_peers());
    let fixture = serde_json::to_value(full_peers()).unwrap();
    let changes = what_each_field_changes(&fixture, |body| {
        d.peers
            .send(serde_json::from_value(body.clone()).unwrap())
            .unwrap();
        ctl_ok(&d.socket, &["peers"])
    });
    let table: BTreeMap<&str, Result<&str, &str>> = PEER_FIELDS
        .iter()
        .map(|(path, how)| (*path, how.map(|()| "")))
        .collect();
    check_rows("peers", &changes, &table);
}

#[test]
fn peers_get_renders_every_field() {
    let d = Daemon::real(full_status(), full_peers());
    let fixture = serde_json::to_value(&full_peers().peers[0]).unwrap();
    let changes = what_each_field_changes(&fixture, |peer| {
        let mut peer = peer.clone();
        // The daemon refuses a malformed key (400), so a changed key must still be a key.
        if peer["public_key"] != fixture["public_key"] {
            peer["public_key"] = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".into();
        }
        let list = PeerList {
            peers: vec![serde_json::from_value(peer.clone()).unwrap()],
            ..full_peers()
        };
        d.peers.send(list).unwrap();
        let key = peer["public_key"].as_str().unwrap();
        keyed(&ctl_ok(&d.socket, &["peers", "get", key]))
    });
    let table = PEER_GET_FIELDS
        .iter()
        .map(|(p, row)| (*p, Ok(*row)))
        .collect();
    check_rows("peers get", &changes, &table);
}
