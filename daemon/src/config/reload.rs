//! Live reload, the pure part: the reload file's grammar, validation of a [`ReloadRequest`] into
//! typed [`ReloadSettings`], and the plan (what would change) as a [`ReloadChanges`] diff.
//!
//! Every reload path (SIGHUP, `POST /v1/reload` with an empty body, which both read the reload
//! file, and `POST /v1/reload` with settings) ends in the same `ReloadRequest`, so one function in
//! the daemon validates, plans and applies it; nothing here reads a file or touches the daemon.
//!
//! The file `<state-dir>/<iface>.reload` uses Go wgmesh's grammar (daemon-behaviour §3.3), so a
//! file written for a Go node means the same here:
//!
//! ```text
//! # lines are trimmed; blank lines and lines starting with '#' are skipped
//! # (a '#' later in a line is part of the value)
//! advertise-routes=192.168.10.0/24, fd10::/64
//! log-level=debug
//! ```
//!
//! - each line is split at its first `=`; a line without one is skipped; the key is trimmed and
//!   lower-cased, the value trimmed; a key given twice: the last line wins;
//! - `advertise-routes=<csv>`: entries split on `,`, trimmed, empty ones dropped; an **empty value
//!   clears** the routes; no such line leaves them unchanged;
//! - `log-level=<level>`: an empty value leaves the level unchanged;
//! - other keys are ignored (Go does the same) but reported, so a typo does not go unnoticed.
//!
//! Unlike Go, values are validated before anything changes (a bad route refuses the whole
//! reload, naming `<file>:<line>`), routes are canonicalised (`10.1.2.3/16` is `10.1.0.0/16`,
//! duplicates dropped) and compared as sets.
//!
//! Built with the `runtime` feature only: it speaks the daemon's [`LocalNode`] and the API's
//! types, which the pure core does not have.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use wgmesh_api_types::{Change, ReloadChanges, ReloadRequest};

use crate::config::InterfaceName;
use crate::logging::LogLevel;
use crate::node::LocalNode;
use crate::wire::announcement::MAX_ROUTABLE_NETWORKS;

/// The reload file's key for the advertised networks.
pub const ADVERTISE_ROUTES_KEY: &str = "advertise-routes";
/// The reload file's key for the log level.
pub const LOG_LEVEL_KEY: &str = "log-level";

/// `<state-dir>/<iface>.reload`: the file SIGHUP and an empty `POST /v1/reload` read.
pub fn reload_file_path(state_dir: &Path, iface: &InterfaceName) -> PathBuf {
    state_dir.join(format!("{}.reload", iface.as_str()))
}

/// A setting a reload can change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadField {
    /// The networks this node advertises.
    AdvertiseRoutes,
    /// The log level.
    LogLevel,
}

impl ReloadField {
    /// The field's name in the API (`advertise_routes`, `log_level`).
    pub const fn api_name(self) -> &'static str {
        match self {
            Self::AdvertiseRoutes => "advertise_routes",
            Self::LogLevel => "log_level",
        }
    }

    /// The key in the reload file (`advertise-routes`, `log-level`).
    pub const fn file_key(self) -> &'static str {
        match self {
            Self::AdvertiseRoutes => ADVERTISE_ROUTES_KEY,
            Self::LogLevel => LOG_LEVEL_KEY,
        }
    }
}

/// A line of the reload file that was skipped although it is not blank or a comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IgnoredLine {
    /// `key=value` with a key this daemon does not reload (`secret`, `listen-port`, a typo…).
    UnknownKey {
        /// 1-based line number.
        line: usize,
        /// The key, trimmed and lower-cased (the value is never kept: it could be a secret).
        key: String,
    },
    /// A line without `=`.
    NoEquals {
        /// 1-based line number.
        line: usize,
    },
}

/// What a reload file says: the request it amounts to, and where each setting came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadFile {
    /// The same request `POST /v1/reload` would carry (never a dry run).
    pub request: ReloadRequest,
    /// The line that set `advertise-routes` (the last one, when given twice).
    pub advertise_routes_line: Option<usize>,
    /// The line that set a non-empty `log-level`.
    pub log_level_line: Option<usize>,
    /// Lines skipped that an operator probably meant something by; the daemon warns about each.
    pub ignored: Vec<IgnoredLine>,
}

impl ReloadFile {
    /// Parses the text of a reload file (Go's grammar, see the module documentation). Never
    /// fails: what does not fit the grammar is skipped (and listed in `ignored`), and the values
    /// are checked later by [`validate_reload`], like the API's.
    pub fn parse(text: &str) -> Self {
        let mut file = Self::default();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let Some((key, value)) = trimmed.split_once('=') else {
                file.ignored.push(IgnoredLine::NoEquals { line });
                continue;
            };
            let key = key.trim().to_ascii_lowercase();
            let value = value.trim();
            match key.as_str() {
                ADVERTISE_ROUTES_KEY => {
                    let routes = value
                        .split(',')
                        .map(str::trim)
                        .filter(|entry| !entry.is_empty())
                        .map(str::to_owned)
                        .collect();
                    file.request.advertise_routes = Some(routes);
                    file.advertise_routes_line = Some(line);
                }
                LOG_LEVEL_KEY if value.is_empty() => {
                    file.request.log_level = None;
                    file.log_level_line = None;
                }
                LOG_LEVEL_KEY => {
                    file.request.log_level = Some(value.to_owned());
                    file.log_level_line = Some(line);
                }
                _ => file.ignored.push(IgnoredLine::UnknownKey { line, key }),
            }
        }
        file
    }

    /// Where `field` was set in the file at `path`: `<path>:<line>` (or the path alone when the
    /// file did not set it, which validation never reports).
    pub fn location(&self, path: &Path, field: ReloadField) -> String {
        let line = match field {
            ReloadField::AdvertiseRoutes => self.advertise_routes_line,
            ReloadField::LogLevel => self.log_level_line,
        };
        match line {
            Some(line) => format!("{}:{line}", path.display()),
            None => path.display().to_string(),
        }
    }
}

/// A reload request whose values are valid: what the daemon applies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadSettings {
    /// The networks to advertise, canonicalised (host bits cleared) and without duplicates, in
    /// the order given; `None` = unchanged, empty = none.
    pub advertise_routes: Option<Vec<IpNet>>,
    /// The log level; `None` = unchanged.
    pub log_level: Option<LogLevel>,
    /// Report what would change, change nothing.
    pub dry_run: bool,
}

/// Why a reload request is refused: the first invalid field, with every problem of that field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {detail}", field.api_name())]
pub struct InvalidSetting {
    /// The field at fault.
    pub field: ReloadField,
    /// What is wrong with it, for humans.
    pub detail: String,
}

/// Validates every value of `request` before anything is applied: all of it is valid, or the
/// reload is refused as a whole.
///
/// # Errors
///
/// [`InvalidSetting`] naming the first invalid field (routes before the level): an entry that is
/// not a network in CIDR notation (all such entries are listed), more networks than peers accept
/// ([`MAX_ROUTABLE_NETWORKS`]), or an unknown log level.
pub fn validate_reload(request: &ReloadRequest) -> Result<ReloadSettings, InvalidSetting> {
    let advertise_routes = request
        .advertise_routes
        .as_deref()
        .map(validate_routes)
        .transpose()?;
    let log_level = request
        .log_level
        .as_deref()
        .map(|text| {
            text.parse::<LogLevel>().map_err(|detail| InvalidSetting {
                field: ReloadField::LogLevel,
                detail,
            })
        })
        .transpose()?;
    Ok(ReloadSettings {
        advertise_routes,
        log_level,
        dry_run: request.dry_run,
    })
}

fn validate_routes(entries: &[String]) -> Result<Vec<IpNet>, InvalidSetting> {
    let invalid = |detail| InvalidSetting {
        field: ReloadField::AdvertiseRoutes,
        detail,
    };
    let mut routes: Vec<IpNet> = Vec::with_capacity(entries.len());
    let mut bad = Vec::new();
    for entry in entries {
        match entry.parse::<IpNet>() {
            Ok(net) => {
                let net = net.trunc();
                if !routes.contains(&net) {
                    routes.push(net);
                }
            }
            Err(_) => bad.push(format!("{entry:?}")),
        }
    }
    if !bad.is_empty() {
        let (noun, verb) = if bad.len() == 1 {
            ("entry", "is")
        } else {
            ("entries", "are")
        };
        return Err(invalid(format!(
            "{noun} {} {verb} not a network in CIDR notation (e.g. 192.168.10.0/24 or fd10::/64); nothing was changed",
            bad.join(", ")
        )));
    }
    if routes.len() > MAX_ROUTABLE_NETWORKS {
        return Err(invalid(format!(
            "{} networks; peers accept at most {MAX_ROUTABLE_NETWORKS} (nothing was changed)",
            routes.len()
        )));
    }
    Ok(routes)
}

/// What applying `settings` to the node `current` would change: the advertised networks when
/// they differ **as a set** (order and duplicates do not count), the log level when it differs.
/// The plan of a dry run and of a real reload is the same.
pub fn plan_reload(current: &LocalNode, settings: &ReloadSettings) -> ReloadChanges {
    let advertise_routes = settings.advertise_routes.as_ref().and_then(|to| {
        let before: BTreeSet<&IpNet> = current.advertise_routes.iter().collect();
        let after: BTreeSet<&IpNet> = to.iter().collect();
        (before != after).then(|| Change {
            from: route_strings(&current.advertise_routes),
            to: route_strings(to),
        })
    });
    let log_level = settings
        .log_level
        .filter(|level| *level != current.log_level)
        .map(|to| Change {
            from: current.log_level.as_str().to_owned(),
            to: to.as_str().to_owned(),
        });
    ReloadChanges {
        advertise_routes,
        log_level,
    }
}

/// Applies `settings` to `node` exactly as [`plan_reload`] plans it (a setting equal to the
/// current one is left alone, so an unchanged route set keeps its order). Returns whether
/// anything changed. Ignores `dry_run`: the caller decides whether to apply.
pub fn apply_reload(node: &mut LocalNode, settings: &ReloadSettings) -> bool {
    let plan = plan_reload(node, settings);
    if plan.advertise_routes.is_some()
        && let Some(routes) = &settings.advertise_routes
    {
        node.advertise_routes.clone_from(routes);
    }
    if plan.log_level.is_some()
        && let Some(level) = settings.log_level
    {
        node.log_level = level;
    }
    !plan.is_empty()
}

/// One line for the log: `advertise_routes: [a] -> [a, b]; log_level: info -> debug`, or
/// `nothing`.
pub fn describe_changes(changes: &ReloadChanges) -> String {
    let mut out = String::new();
    if let Some(c) = &changes.advertise_routes {
        let _ = write!(
            out,
            "advertise_routes: [{}] -> [{}]",
            c.from.join(", "),
            c.to.join(", ")
        );
    }
    if let Some(c) = &changes.log_level {
        if !out.is_empty() {
            out.push_str("; ");
        }
        let _ = write!(out, "log_level: {} -> {}", c.from, c.to);
    }
    if out.is_empty() {
        out.push_str("nothing");
    }
    out
}

fn route_strings(routes: &[IpNet]) -> Vec<String> {
    routes.iter().map(ToString::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    fn nets(items: &[&str]) -> Vec<IpNet> {
        items.iter().map(|s| s.parse().unwrap()).collect()
    }

    /// Go's `LoadReloadFile` cases (reload_test.go) and ours.
    #[test]
    fn reload_file_grammar() {
        struct Case {
            name: &'static str,
            text: &'static str,
            routes: Option<&'static [&'static str]>,
            routes_line: Option<usize>,
            level: Option<&'static str>,
            /// Lines reported as ignored.
            ignored: &'static [usize],
        }
        let cases = [
            Case {
                name: "routes as CSV, entries trimmed, empty entries dropped",
                text: "advertise-routes=10.0.0.0/24, 192.168.1.0/24 ,,fd10::/64,\n",
                routes: Some(&["10.0.0.0/24", "192.168.1.0/24", "fd10::/64"]),
                routes_line: Some(1),
                level: None,
                ignored: &[],
            },
            Case {
                name: "log level",
                text: "log-level=debug",
                routes: None,
                routes_line: None,
                level: Some("debug"),
                ignored: &[],
            },
            Case {
                name: "an empty routes value clears (empty list, not absent)",
                text: "advertise-routes=\nlog-level=info\n",
                routes: Some(&[]),
                routes_line: Some(1),
                level: Some("info"),
                ignored: &[],
            },
            Case {
                name: "a routes value of only commas and blanks clears too",
                text: "advertise-routes= , ,",
                routes: Some(&[]),
                routes_line: Some(1),
                level: None,
                ignored: &[],
            },
            Case {
                name: "comments and blank lines are skipped, line numbers still count",
                text: "# routes for the office\n\n   # indented comment\n  advertise-routes = 10.1.0.0/16  \n",
                routes: Some(&["10.1.0.0/16"]),
                routes_line: Some(4),
                level: None,
                ignored: &[],
            },
            Case {
                name: "unknown keys are ignored and reported, their values never kept",
                text: "secret=hunter2\nlog-level=warn\nListen-Port=1\n",
                routes: None,
                routes_line: None,
                level: Some("warn"),
                ignored: &[1, 3],
            },
            Case {
                name: "keys are lower-cased and trimmed; values split at the first '='",
                text: " LOG-LEVEL =Error\nADVERTISE-ROUTES=10.2.0.0/24=x",
                routes: Some(&["10.2.0.0/24=x"]),
                routes_line: Some(2),
                level: Some("Error"),
                ignored: &[],
            },
            Case {
                name: "a line without '=' is skipped and reported",
                text: "advertise-routes 10.0.0.0/24\n",
                routes: None,
                routes_line: None,
                level: None,
                ignored: &[1],
            },
            Case {
                name: "an empty log level means unchanged",
                text: "log-level=\n",
                routes: None,
                routes_line: None,
                level: None,
                ignored: &[],
            },
            Case {
                name: "a key given twice: the last line wins (as Go)",
                text: "advertise-routes=10.0.0.0/24\nlog-level=debug\nadvertise-routes=10.9.0.0/24\nlog-level=\n",
                routes: Some(&["10.9.0.0/24"]),
                routes_line: Some(3),
                level: None,
                ignored: &[],
            },
            Case {
                name: "an empty file changes nothing",
                text: "",
                routes: None,
                routes_line: None,
                level: None,
                ignored: &[],
            },
            Case {
                name: "CRLF line ends",
                text: "log-level=debug\r\nadvertise-routes=10.3.0.0/24\r\n",
                routes: Some(&["10.3.0.0/24"]),
                routes_line: Some(2),
                level: Some("debug"),
                ignored: &[],
            },
        ];
        for case in cases {
            let file = ReloadFile::parse(case.text);
            assert_eq!(
                file.request.advertise_routes,
                case.routes.map(strings),
                "{}: routes",
                case.name
            );
            assert_eq!(
                file.advertise_routes_line, case.routes_line,
                "{}: line",
                case.name
            );
            assert_eq!(
                file.request.log_level.as_deref(),
                case.level,
                "{}: level",
                case.name
            );
            assert!(!file.request.dry_run, "{}", case.name);
            let lines: Vec<usize> = file
                .ignored
                .iter()
                .map(|i| match i {
                    IgnoredLine::UnknownKey { line, .. } | IgnoredLine::NoEquals { line } => *line,
                })
                .collect();
            assert_eq!(lines, case.ignored, "{}: ignored", case.name);
        }
        // The unknown keys' names are kept (lower-cased), their values never.
        let file = ReloadFile::parse("secret=hunter2\nListen-Port=1\n");
        assert_eq!(
            file.ignored,
            [
                IgnoredLine::UnknownKey {
                    line: 1,
                    key: "secret".into()
                },
                IgnoredLine::UnknownKey {
                    line: 2,
                    key: "listen-port".into()
                },
            ]
        );
        assert!(!format!("{file:?}").contains("hunter2"));
    }

    #[test]
    fn a_file_locates_its_settings_by_line() {
        let file = ReloadFile::parse("# x\nlog-level=loud\nadvertise-routes=bad\n");
        let path = Path::new("/var/lib/wgmesh/wg0.reload");
        assert_eq!(
            file.location(path, ReloadField::LogLevel),
            "/var/lib/wgmesh/wg0.reload:2"
        );
        assert_eq!(
            file.location(path, ReloadField::AdvertiseRoutes),
            "/var/lib/wgmesh/wg0.reload:3"
        );
        assert_eq!(
            reload_file_path(Path::new("/var/lib/wgmesh"), &"wg7".parse().unwrap()),
            Path::new("/var/lib/wgmesh/wg7.reload")
        );
    }

    /// Valid routes and level, as a validation table expects them.
    type Valid = (Option<&'static [&'static str]>, Option<LogLevel>);

    #[test]
    fn validation() {
        struct Case {
            name: &'static str,
            routes: Option<&'static [&'static str]>,
            level: Option<&'static str>,
            /// Routes and level, or the field and part of the error.
            want: Result<Valid, (ReloadField, &'static str)>,
        }
        let too_many: Vec<String> = (0..=MAX_ROUTABLE_NETWORKS)
            .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
            .collect();
        let cases = [
            Case {
                name: "nothing named is valid (and changes nothing)",
                routes: None,
                level: None,
                want: Ok((None, None)),
            },
            Case {
                name: "routes are canonicalised and deduplicated, order kept",
                routes: Some(&[
                    "192.168.1.7/24",
                    "fd10::1/64",
                    "192.168.1.0/24",
                    "10.0.0.0/8",
                ]),
                level: None,
                want: Ok((Some(&["192.168.1.0/24", "fd10::/64", "10.0.0.0/8"]), None)),
            },
            Case {
                name: "an empty list clears",
                routes: Some(&[]),
                level: None,
                want: Ok((Some(&[]), None)),
            },
            Case {
                name: "levels in Go's spellings, any case",
                routes: None,
                level: Some("WARNING"),
                want: Ok((None, Some(LogLevel::Warn))),
            },
            Case {
                name: "a bad CIDR names the field and every bad entry",
                routes: Some(&["10.0.0.0/24", "10.0.0.300/24", "fd10::/129", "lan"]),
                level: None,
                want: Err((
                    ReloadField::AdvertiseRoutes,
                    r#"entries "10.0.0.300/24", "fd10::/129", "lan" are not a network in CIDR notation"#,
                )),
            },
            Case {
                name: "a bare address is not a network",
                routes: Some(&["10.0.0.1"]),
                level: None,
                want: Err((ReloadField::AdvertiseRoutes, r#"entry "10.0.0.1" is not"#)),
            },
            Case {
                name: "an empty entry (API) is refused",
                routes: Some(&[""]),
                level: None,
                want: Err((ReloadField::AdvertiseRoutes, r#"entry "" is not"#)),
            },
            Case {
                name: "a bad level names the field and the accepted ones",
                routes: None,
                level: Some("verbose"),
                want: Err((
                    ReloadField::LogLevel,
                    r#"unknown log level "verbose" (expected debug, info, warn or error)"#,
                )),
            },
            Case {
                name: "an empty level (API) is refused",
                routes: None,
                level: Some(""),
                want: Err((ReloadField::LogLevel, "unknown log level \"\"")),
            },
            Case {
                name: "all or nothing: a bad route with a good level is refused",
                routes: Some(&["10.0.0.0/33"]),
                level: Some("debug"),
                want: Err((ReloadField::AdvertiseRoutes, "10.0.0.0/33")),
            },
            Case {
                name: "all or nothing: a bad level with good routes is refused",
                routes: Some(&["10.0.0.0/24"]),
                level: Some("loud"),
                want: Err((ReloadField::LogLevel, "loud")),
            },
        ];
        for case in cases {
            let request = ReloadRequest {
                advertise_routes: case.routes.map(strings),
                log_level: case.level.map(str::to_owned),
                dry_run: false,
            };
            match (validate_reload(&request), case.want) {
                (Ok(settings), Ok((routes, level))) => {
                    assert_eq!(settings.advertise_routes, routes.map(nets), "{}", case.name);
                    assert_eq!(settings.log_level, level, "{}", case.name);
                }
                (Err(err), Err((field, text))) => {
                    assert_eq!(err.field, field, "{}: {err}", case.name);
                    assert!(err.detail.contains(text), "{}: {err}", case.name);
                    assert!(
                        err.to_string().starts_with(field.api_name()),
                        "{}: {err}",
                        case.name
                    );
                }
                (got, want) => panic!("{}: got {got:?}, want {want:?}", case.name),
            }
        }
        let request = ReloadRequest {
            advertise_routes: Some(too_many),
            ..ReloadRequest::default()
        };
        let err = validate_reload(&request).unwrap_err();
        assert_eq!(err.field, ReloadField::AdvertiseRoutes);
        assert!(err.detail.contains("at most 100"), "{err}");
        let dry = ReloadRequest {
            dry_run: true,
            ..ReloadRequest::default()
        };
        assert!(validate_reload(&dry).unwrap().dry_run);
    }

    #[test]
    fn plan() {
        struct Case {
            name: &'static str,
            current: &'static [&'static str],
            current_level: LogLevel,
            routes: Option<&'static [&'static str]>,
            level: Option<LogLevel>,
            want_routes: Option<(&'static [&'static str], &'static [&'static str])>,
            want_level: Option<(&'static str, &'static str)>,
        }
        let cases = [
            Case {
                name: "nothing named: no-op",
                current: &["10.0.0.0/24"],
                current_level: LogLevel::Info,
                routes: None,
                level: None,
                want_routes: None,
                want_level: None,
            },
            Case {
                name: "same values: no-op",
                current: &["10.0.0.0/24"],
                current_level: LogLevel::Info,
                routes: Some(&["10.0.0.0/24"]),
                level: Some(LogLevel::Info),
                want_routes: None,
                want_level: None,
            },
            Case {
                name: "same set in another order: no-op",
                current: &["10.0.0.0/24", "fd10::/64"],
                current_level: LogLevel::Debug,
                routes: Some(&["fd10::/64", "10.0.0.0/24"]),
                level: None,
                want_routes: None,
                want_level: None,
            },
            Case {
                name: "a route added",
                current: &["10.0.0.0/24"],
                current_level: LogLevel::Info,
                routes: Some(&["10.0.0.0/24", "10.1.0.0/24"]),
                level: None,
                want_routes: Some((&["10.0.0.0/24"], &["10.0.0.0/24", "10.1.0.0/24"])),
                want_level: None,
            },
            Case {
                name: "a subset is a change (length counts)",
                current: &["10.0.0.0/24", "10.1.0.0/24"],
                current_level: LogLevel::Info,
                routes: Some(&["10.1.0.0/24"]),
                level: None,
                want_routes: Some((&["10.0.0.0/24", "10.1.0.0/24"], &["10.1.0.0/24"])),
                want_level: None,
            },
            Case {
                name: "cleared",
                current: &["10.0.0.0/24"],
                current_level: LogLevel::Info,
                routes: Some(&[]),
                level: None,
                want_routes: Some((&["10.0.0.0/24"], &[])),
                want_level: None,
            },
            Case {
                name: "clearing nothing: no-op",
                current: &[],
                current_level: LogLevel::Info,
                routes: Some(&[]),
                level: None,
                want_routes: None,
                want_level: None,
            },
            Case {
                name: "level and routes both",
                current: &[],
                current_level: LogLevel::Info,
                routes: Some(&["172.31.7.0/24"]),
                level: Some(LogLevel::Debug),
                want_routes: Some((&[], &["172.31.7.0/24"])),
                want_level: Some(("info", "debug")),
            },
        ];
        for case in cases {
            let mut node = crate::node::tests::local();
            node.advertise_routes = nets(case.current);
            node.log_level = case.current_level;
            let settings = ReloadSettings {
                advertise_routes: case.routes.map(nets),
                log_level: case.level,
                dry_run: false,
            };
            let plan = plan_reload(&node, &settings);
            let want = ReloadChanges {
                advertise_routes: case.want_routes.map(|(from, to)| Change {
                    from: strings(from),
                    to: strings(to),
                }),
                log_level: case.want_level.map(|(from, to)| Change {
                    from: from.to_owned(),
                    to: to.to_owned(),
                }),
            };
            assert_eq!(plan, want, "{}", case.name);

            // Applying does exactly what was planned, and a second time nothing.
            let before = node.clone();
            assert_eq!(
                apply_reload(&mut node, &settings),
                !want.is_empty(),
                "{}",
                case.name
            );
            if want.advertise_routes.is_some() {
                assert_eq!(
                    node.advertise_routes,
                    settings.advertise_routes.clone().unwrap()
                );
            } else {
                assert_eq!(
                    node.advertise_routes, before.advertise_routes,
                    "{}",
                    case.name
                );
            }
            if want.log_level.is_none() {
                assert_eq!(node.log_level, before.log_level, "{}", case.name);
            }
            assert!(
                plan_reload(&node, &settings).is_empty(),
                "{}: again",
                case.name
            );
            assert!(!apply_reload(&mut node, &settings), "{}: again", case.name);
        }
    }

    #[test]
    fn changes_are_described_on_one_line() {
        let mut changes = ReloadChanges::default();
        assert_eq!(describe_changes(&changes), "nothing");
        changes.log_level = Some(Change {
            from: "info".into(),
            to: "debug".into(),
        });
        assert_eq!(describe_changes(&changes), "log_level: info -> debug");
        changes.advertise_routes = Some(Change {
            from: vec![],
            to: strings(&["10.0.0.0/24", "fd10::/64"]),
        });
        assert_eq!(
            describe_changes(&changes),
            "advertise_routes: [] -> [10.0.0.0/24, fd10::/64]; log_level: info -> debug"
        );
    }
}
