//! `wgmeshctl watch`: follows `GET /v1/events`, one line per event (`--json`: the daemon's NDJSON
//! lines as they come), until Ctrl-C (exit 0) or until the daemon goes away (exit 3, saying so).

use std::collections::HashMap;
use std::io::{self, Write as _};
use std::path::Path;

use clap::Args;
use tokio::signal::unix::{SignalKind, signal};
use wgmesh_api_types::{Event, EventKind, PeerList, ReloadSource};

use crate::client::{self, EventStream, paths};
use crate::control::changes_inline;
use crate::daemon_cmds::decode;
use crate::text::{peer_name, utc};
use crate::{Exit, JsonArg};

/// Options of `watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    out: JsonArg,
}

/// Runs `watch`.
pub async fn run(socket: &Path, args: WatchArgs) -> anyhow::Result<Exit> {
    // Before anything else, so a Ctrl-C from the first moment on ends the watch cleanly.
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    // Subscribe first, then learn the names, so no event falls between the two.
    let mut stream = EventStream::open(socket).await?;
    let mut names = if args.out.json {
        Names::default()
    } else {
        Names::of(socket).await
    };
    loop {
        let line = tokio::select! {
            _ = interrupt.recv() => return Ok(Exit::Success),
            _ = terminate.recv() => return Ok(Exit::Success),
            line = stream.next_line() => line?,
        };
        let text = if args.out.json {
            format!("{line}\n")
        } else {
            names.render(&line)
        };
        let mut stdout = io::stdout().lock();
        match stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
        {
            // Whoever read the events stopped reading (`wgmeshctl watch | head`): done.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(Exit::Success),
            Err(e) => return Err(e.into()),
            Ok(()) => {}
        }
    }
}

/// Hostnames by key, so a line can name a peer that an event only gives the key of.
#[derive(Debug, Default)]
pub struct Names(HashMap<String, String>);

impl Names {
    /// The names of the peers the daemon knows now; none if it cannot say (the watch goes on
    /// with short keys).
    async fn of(socket: &Path) -> Self {
        let Ok(value) = client::get_json(socket, paths::PEERS).await else {
            return Self::default();
        };
        let Ok(list) = decode::<PeerList>(socket, "GET /v1/peers", value) else {
            return Self::default();
        };
        Self(
            list.peers
                .into_iter()
                .map(|p| (p.public_key, p.hostname))
                .collect(),
        )
    }

    fn name(&self, key: &str) -> String {
        peer_name(self.0.get(key).map_or("", String::as_str), key)
    }

    /// One event line as text: `TIME  TYPE  what happened`, and a newline.
    pub fn render(&mut self, line: &str) -> String {
        let event: Event = match serde_json::from_str(line) {
            Ok(event) => event,
            Err(_) => return unknown(line),
        };
        let (kind, what) = match &event.kind {
            EventKind::PeerAdded {
                public_key,
                hostname,
                via,
            } => {
                self.0.insert(public_key.clone(), hostname.clone());
                ("peer_added", format!("{} via {via}", self.name(public_key)))
            }
            EventKind::PeerChanged { public_key } => ("peer_changed", self.name(public_key)),
            EventKind::PeerState {
                public_key,
                from,
                to,
            } => (
                "peer_state",
                format!("{}: {from} -> {to}", self.name(public_key)),
            ),
            EventKind::PeerRemoved { public_key } => {
                let name = self.name(public_key);
                self.0.remove(public_key);
                ("peer_removed", name)
            }
            EventKind::Reconciled {
                added,
                updated,
                removed,
                failed,
                duration_ms,
            } => {
                let counts: Vec<String> = [
                    (added, "added"),
                    (updated, "updated"),
                    (removed, "removed"),
                    (failed, "failed"),
                ]
                .into_iter()
                .filter(|(n, _)| **n > 0)
                .map(|(n, what)| format!("{n} {what}"))
                .collect();
                let counts = if counts.is_empty() {
                    "no changes".to_owned()
                } else {
                    counts.join(", ")
                };
                ("reconciled", format!("{counts} in {duration_ms} ms"))
            }
            EventKind::Reloaded { source, changed } => {
                let source = match source {
                    ReloadSource::Api => "request",
                    ReloadSource::File => "reload file",
                    ReloadSource::Signal => "reload file on SIGHUP",
                };
                ("reloaded", format!("{source}: {}", changes_inline(changed)))
            }
            EventKind::LayerState {
                layer,
                state,
                error,
            } => ("layer_state", with_error(format!("{layer} {state}"), error)),
            EventKind::TaskState { task, state, error } => {
                ("task_state", with_error(format!("{task} {state}"), error))
            }
            EventKind::CacheFlushed { path, peers } => {
                ("cache_flushed", format!("{path} ({peers} peers)"))
            }
            EventKind::Lagged { missed } => (
                "lagged",
                format!("missed {missed} events (this watch fell behind)"),
            ),
        };
        format!("{}  {kind:<13}  {what}\n", utc(event.unix_ms))
    }
}

fn with_error(text: String, error: &Option<String>) -> String {
    match error {
        Some(e) => format!("{text} ({e})"),
        None => text,
    }
}

/// A line this wgmeshctl cannot read: an event type of a newer daemon, or not an event at all.
fn unknown(line: &str) -> String {
    let value: Option<serde_json::Value> = serde_json::from_str(line).ok();
    let field = |name: &str| value.as_ref().and_then(|v| v.get(name));
    let time = field("unix_ms")
        .and_then(serde_json::Value::as_u64)
        .map_or_else(|| "-".to_owned(), utc);
    match field("type").and_then(serde_json::Value::as_str) {
        Some(kind) => {
            format!("{time}  {kind:<13}  (not known to this wgmeshctl; --json shows it)\n")
        }
        None => format!("{time}  {:<13}  {}\n", "?", unreadable(line)),
    }
}

/// A line that is not an event, cut to a readable length.
fn unreadable(line: &str) -> String {
    let cut: String = line.chars().take(120).collect();
    if cut.len() < line.len() {
        format!("unreadable event: {cut}…")
    } else {
        format!("unreadable event: {cut}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_broken_lines_still_print() {
        let mut names = Names::default();
        assert_eq!(
            names.render(r#"{"schema_version":1,"seq":1,"unix_ms":0,"type":"new_thing","x":1}"#),
            "1970-01-01T00:00:00Z  new_thing      (not known to this wgmeshctl; --json shows it)\n"
        );
        assert_eq!(
            names.render("not json"),
            "-  ?              unreadable event: not json\n"
        );
    }

    #[test]
    fn peers_are_named_once_known() {
        let key = "PYtJ5VmQqBAr7dnbTmCR1xP/v+/jrHmuTnGC4Aixu+o=";
        let mut names = Names::default();
        let line = |kind: &str| {
            format!(
                r#"{{"schema_version":1,"seq":1,"unix_ms":0,"type":"{kind}","public_key":"{key}","hostname":"alpha","via":"lan"}}"#
            )
        };
        assert!(
            names
                .render(&line("peer_changed"))
                .ends_with("  PYtJ5VmQ\n")
        );
        assert!(
            names
                .render(&line("peer_added"))
                .ends_with("  alpha (PYtJ5VmQ) via lan\n")
        );
        assert!(
            names
                .render(&line("peer_removed"))
                .ends_with("  alpha (PYtJ5VmQ)\n")
        );
        assert!(
            names
                .render(&line("peer_changed"))
                .ends_with("  PYtJ5VmQ\n")
        );
    }
}
