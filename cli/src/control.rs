//! The write commands: `wgmeshctl reload` (`POST /v1/reload`, printing what changed) and
//! `wgmeshctl cache flush` (`POST /v1/cache/flush`). The daemon validates and applies; values
//! are only parsed here as far as the daemon's own flags parse them, so a typo fails before
//! anything is sent.

use std::path::Path;
use std::str::FromStr as _;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Args, Subcommand};
use ipnet::IpNet;
use wgmesh_api_types::{
    CacheFlushResponse, Change, ReloadChanges, ReloadRequest, ReloadResponse, ReloadSource,
};

use crate::client::{self, paths};
use crate::daemon_cmds::{decode, json_text};
use crate::text::table;
use crate::{Exit, JsonArg, print_out};

/// Options of `reload`.
#[derive(Debug, Args)]
pub struct ReloadArgs {
    /// The networks to advertise from now on, comma-separated CIDRs (e.g.
    /// 192.168.10.0/24,fd10::/64); "" advertises none.
    #[arg(long, value_name = "CIDRS", value_parser = parse_routes)]
    advertise_routes: Option<Routes>,
    /// The log level from now on.
    #[arg(long, value_name = "LEVEL", value_parser = log_levels(), ignore_case = true)]
    log_level: Option<String>,
    /// Validate and show what would change; change nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    out: JsonArg,
}

/// `cache` subcommands.
#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Write the peer cache now (`<state-dir>/<iface>-peers.json`) and say how many peers it
    /// holds. Needs root or the socket's group.
    Flush {
        #[command(flatten)]
        out: JsonArg,
    },
}

/// A parsed `--advertise-routes` list.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Routes(Vec<IpNet>);

/// Comma-separated CIDRs, blanks around them and empty entries ignored (as the reload file
/// reads them), so `""` is the empty list.
fn parse_routes(text: &str) -> Result<Routes, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| IpNet::from_str(s).map_err(|e| format!("{s:?} is not a CIDR: {e}")))
        .collect::<Result<_, _>>()
        .map(Routes)
}

/// The levels wgmeshd takes, in any case; the spellings it also accepts (Go's `warning`) become
/// the level's name.
fn log_levels() -> impl TypedValueParser<Value = String> {
    PossibleValuesParser::new([
        PossibleValue::new("debug").alias("trace"),
        PossibleValue::new("info"),
        PossibleValue::new("warn").alias("warning"),
        PossibleValue::new("error"),
    ])
    .map(|level| match level.to_ascii_lowercase().as_str() {
        "trace" => "debug".to_owned(),
        "warning" => "warn".to_owned(),
        other => other.to_owned(),
    })
}

impl ReloadArgs {
    /// The request body; `None` (no body) when no setting is given and this is no dry run, so
    /// the daemon re-reads its reload file.
    fn request(&self) -> Option<ReloadRequest> {
        let request = ReloadRequest {
            advertise_routes: self
                .advertise_routes
                .as_ref()
                .map(|r| r.0.iter().map(ToString::to_string).collect()),
            log_level: self.log_level.clone(),
            dry_run: self.dry_run,
        };
        (!request.is_empty() || request.dry_run).then_some(request)
    }
}

/// Runs `reload`.
pub async fn reload(socket: &Path, args: ReloadArgs) -> anyhow::Result<Exit> {
    let body = args.request().map(serde_json::to_value).transpose()?;
    let value = client::post_json(socket, paths::RELOAD, body.as_ref()).await?;
    let text = if args.out.json {
        json_text(&value)?
    } else {
        let response: ReloadResponse = decode(socket, &format!("POST {}", paths::RELOAD), value)?;
        render_reload(&response)
    };
    print_out(&text)?;
    Ok(Exit::Success)
}

/// Runs a `cache` subcommand.
pub async fn cache(socket: &Path, cmd: CacheCommand) -> anyhow::Result<Exit> {
    let CacheCommand::Flush { out } = cmd;
    let value = client::post_json(socket, paths::CACHE_FLUSH, None).await?;
    let text = if out.json {
        json_text(&value)?
    } else {
        let r: CacheFlushResponse = decode(socket, &format!("POST {}", paths::CACHE_FLUSH), value)?;
        let peers = if r.peers == 1 { "peer" } else { "peers" };
        format!("Peer cache written: {} ({} {peers})\n", r.path, r.peers)
    };
    print_out(&text)?;
    Ok(Exit::Success)
}

/// What a reload did (or would do): a headline naming where the settings came from, then one
/// line per changed setting (`+`/`-` per route).
pub fn render_reload(r: &ReloadResponse) -> String {
    let source = match r.source {
        ReloadSource::Api => "settings from the request",
        ReloadSource::File => "settings from the reload file",
        ReloadSource::Signal => "settings from the reload file, on SIGHUP",
    };
    let empty = r.changed.is_empty();
    let headline = match (r.dry_run, r.applied, empty) {
        (true, _, true) => format!("Dry run ({source}): nothing would change."),
        (true, _, false) => format!("Dry run ({source}): nothing applied; would change:"),
        (false, _, true) => format!("Nothing to change ({source}): already in effect."),
        (false, true, false) => format!("Applied ({source}):"),
        (false, false, false) => format!("Not applied ({source}):"),
    };
    let mut out = format!("{headline}\n");
    out.push_str(&render_changes(&r.changed, "  "));
    out
}

/// The changes on one line, for `watch`: `advertised routes +10.9.0.0/24 -192.168.10.0/24, log
/// level info -> debug`, or `nothing changed`.
pub fn changes_inline(c: &ReloadChanges) -> String {
    let mut parts = Vec::new();
    if let Some(Change { from, to }) = &c.advertise_routes {
        let diff: Vec<String> = to
            .iter()
            .filter(|r| !from.contains(r))
            .map(|r| format!("+{r}"))
            .chain(
                from.iter()
                    .filter(|r| !to.contains(r))
                    .map(|r| format!("-{r}")),
            )
            .collect();
        let diff = if diff.is_empty() {
            format!("order {}", to.join(","))
        } else {
            diff.join(" ")
        };
        parts.push(format!("advertised routes {diff}"));
    }
    if let Some(Change { from, to }) = &c.log_level {
        parts.push(format!("log level {from} -> {to}"));
    }
    if parts.is_empty() {
        "nothing changed".to_owned()
    } else {
        parts.join(", ")
    }
}

/// One line per changed setting, each starting with `indent`: `log level  info -> debug`,
/// `advertised routes  + 10.9.0.0/24` and a line per further route.
fn render_changes(c: &ReloadChanges, indent: &str) -> String {
    let mut rows: Vec<[String; 2]> = Vec::new();
    if let Some(Change { from, to }) = &c.advertise_routes {
        let mut lines: Vec<String> = to
            .iter()
            .filter(|r| !from.contains(r))
            .map(|r| format!("+ {r}"))
            .chain(
                from.iter()
                    .filter(|r| !to.contains(r))
                    .map(|r| format!("- {r}")),
            )
            .collect();
        if lines.is_empty() {
            // Same networks, another order.
            lines.push(format!("order: {}", to.join(", ")));
        }
        for (i, line) in lines.into_iter().enumerate() {
            let label = if i == 0 { "advertised routes" } else { "" };
            rows.push([format!("{indent}{label}"), line]);
        }
    }
    if let Some(Change { from, to }) = &c.log_level {
        rows.push([format!("{indent}log level"), format!("{from} -> {to}")]);
    }
    table(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wgmesh_api_types::SCHEMA_VERSION;

    #[test]
    fn routes_parse_like_the_reload_file() {
        let table: [(&str, Result<Vec<&str>, &str>); 5] = [
            ("", Ok(vec![])),
            (" , ", Ok(vec![])),
            (
                "192.168.10.0/24, fd10::/64,",
                Ok(vec!["192.168.10.0/24", "fd10::/64"]),
            ),
            ("10.0.0.0/33", Err("\"10.0.0.0/33\" is not a CIDR")),
            ("10.0.0.1", Err("\"10.0.0.1\" is not a CIDR")),
        ];
        for (text, want) in table {
            let got: Result<Vec<String>, String> =
                parse_routes(text).map(|r| r.0.iter().map(ToString::to_string).collect());
            match want {
                Ok(want) => assert_eq!(got, Ok(want.iter().map(|s| s.to_string()).collect())),
                Err(start) => assert!(got.unwrap_err().starts_with(start), "{text}"),
            }
        }
    }

    #[test]
    fn no_setting_and_no_dry_run_sends_no_body() {
        let args = |routes: Option<&str>, level: Option<&str>, dry_run| ReloadArgs {
            advertise_routes: routes.map(|r| parse_routes(r).unwrap()),
            log_level: level.map(Into::into),
            dry_run,
            out: JsonArg { json: false },
        };
        assert_eq!(args(None, None, false).request(), None);
        let dry = args(None, None, true).request().unwrap();
        assert!(dry.dry_run && dry.is_empty());
        let clear = args(Some(""), None, false).request().unwrap();
        assert_eq!(clear.advertise_routes, Some(vec![]));
        let level = args(None, Some("debug"), false).request().unwrap();
        assert_eq!(level.log_level.as_deref(), Some("debug"));
    }

    #[test]
    fn reordered_routes_say_so() {
        let r = ReloadResponse {
            schema_version: SCHEMA_VERSION,
            source: ReloadSource::Signal,
            dry_run: false,
            applied: true,
            changed: ReloadChanges {
                advertise_routes: Some(Change {
                    from: vec!["a".into(), "b".into()],
                    to: vec!["b".into(), "a".into()],
                }),
                log_level: None,
            },
        };
        assert_eq!(
            render_reload(&r),
            "Applied (settings from the reload file, on SIGHUP):\n  advertised routes  order: b, a\n"
        );
    }
}
