//! The one reload function. SIGHUP, `POST /v1/reload` with an empty body (both read the reload
//! file) and `POST /v1/reload` with settings all end in [`Reloader::reload`], called only by the
//! `control` task, one reload at a time.
//!
//! The steps: read the reload file when the request names no setting; validate every value
//! ([`validate_reload`]); plan the diff ([`plan_reload`]); for a dry run (or when nothing
//! differs), answer with the plan; else apply all of it: the log level into the running log
//! filter (the one step that can fail, so it goes first, and a failure changes nothing), then the
//! routes and the level into [`LocalNode`], whose watchers act at once (LAN discovery announces
//! the new routes right away, the reconcile loop runs a pass, the status shows them). The outcome
//! is logged once: `reload applied` (info) or `reload refused` (warn).
//!
//! Unlike Go: the level really changes what is logged (§21.22), a missing reload file is
//! reported as missing with what to put in it (§21.23), and a reload never runs a reconcile pass
//! itself, concurrently with the loop's own (§21.4): the loop sees the new facts and runs.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use tokio::sync::watch;
use wgmesh_api_types::{ReloadRequest, ReloadResponse, ReloadSource, SCHEMA_VERSION};

use crate::api::ControlError;
use crate::config::{
    ADVERTISE_ROUTES_KEY, IgnoredLine, LOG_LEVEL_KEY, ReloadFile, ReloadSettings, apply_reload,
    describe_changes, plan_reload, validate_reload,
};
use crate::logging::LogControl;
use crate::node::LocalNode;

/// Largest reload file read (it holds a few lines; anything bigger is a mistake).
pub const MAX_RELOAD_FILE: u64 = 64 * 1024;

/// What a reload reads and changes.
pub struct Reloader {
    /// `<state-dir>/<iface>.reload`.
    pub file: PathBuf,
    /// This node's facts: the advertised routes and the log level change here.
    pub local: watch::Sender<LocalNode>,
    /// The running log filter; `None` when this process did not install it (some tests): a
    /// change of the level is then refused rather than only recorded.
    pub log: Option<LogControl>,
}

/// How logs name a source.
const fn source_name(source: ReloadSource) -> &'static str {
    match source {
        ReloadSource::Api => "api",
        ReloadSource::File => "file",
        ReloadSource::Signal => "signal",
    }
}

impl Reloader {
    /// Carries out one reload and logs its outcome. `source` says who asked: `Api` (becomes
    /// `File` when the request names no setting) or `Signal` (SIGHUP: always the file). A
    /// request's `dry_run` holds for the file too (`{"dry_run": true}` shows what the file would
    /// change).
    ///
    /// # Errors
    ///
    /// [`ControlError::Invalid`] naming the field (API) or `<file>:<line>` (reload file), or the
    /// file when it is missing or unreadable as text; [`ControlError::Failed`] when the log
    /// filter cannot be changed. Either way nothing changed.
    pub async fn reload(
        &self,
        request: ReloadRequest,
        source: ReloadSource,
    ) -> Result<ReloadResponse, ControlError> {
        let source = match source {
            ReloadSource::Api if request.is_empty() => ReloadSource::File,
            other => other,
        };
        let name = source_name(source);
        let result = self.carry_out(request, source).await;
        match &result {
            Ok(r) if r.dry_run => tracing::info!(
                source = name,
                changes = %describe_changes(&r.changed),
                "reload dry run: nothing applied"
            ),
            Ok(r) if r.applied => tracing::info!(
                source = name,
                changed = %describe_changes(&r.changed),
                "reload applied"
            ),
            Ok(_) => tracing::info!(source = name, "reload: nothing to change"),
            Err(error) => tracing::warn!(
                source = name,
                %error,
                "reload refused; nothing changed"
            ),
        }
        result
    }

    async fn carry_out(
        &self,
        request: ReloadRequest,
        source: ReloadSource,
    ) -> Result<ReloadResponse, ControlError> {
        let dry_run = request.dry_run;
        let settings = match source {
            ReloadSource::Api => validate_reload(&request).map_err(|e| ControlError::Invalid {
                field: e.field.api_name().to_owned(),
                detail: e.detail,
            })?,
            ReloadSource::File | ReloadSource::Signal => {
                let file = self.read_file().await?;
                let settings =
                    validate_reload(&file.request).map_err(|e| ControlError::Invalid {
                        field: file.location(&self.file, e.field),
                        detail: format!("{}: {}", e.field.file_key(), e.detail),
                    })?;
                ReloadSettings {
                    dry_run,
                    ..settings
                }
            }
        };
        let changed = plan_reload(&self.local.borrow(), &settings);
        let response = |applied, changed| ReloadResponse {
            schema_version: SCHEMA_VERSION,
            source,
            dry_run,
            applied,
            changed,
        };
        if dry_run || changed.is_empty() {
            return Ok(response(false, changed));
        }
        if changed.log_level.is_some()
            && let Some(level) = settings.log_level
        {
            let log = self.log.as_ref().ok_or_else(|| {
                ControlError::Failed(
                    "the log level cannot be changed: this process does not own its log filter (nothing was changed)"
                        .to_owned(),
                )
            })?;
            log.set_level(level)
                .map_err(|e| ControlError::Failed(format!("{e} (nothing was changed)")))?;
            if let Some(rust_log) = log.overrides() {
                tracing::warn!(
                    rust_log,
                    level = level.as_str(),
                    "RUST_LOG is set: its directives keep precedence over the new level for the targets they name"
                );
            }
        }
        self.local
            .send_if_modified(|node| apply_reload(node, &settings));
        Ok(response(true, changed))
    }

    /// Reads and parses the reload file, warning about every line it skips.
    async fn read_file(&self) -> Result<ReloadFile, ControlError> {
        let shown = self.file.display().to_string();
        let invalid = |detail: String| ControlError::Invalid {
            field: shown.clone(),
            detail,
        };
        let path = self.file.clone();
        // A few lines, read off the runtime's threads all the same.
        let read = tokio::task::spawn_blocking(move || read_capped(&path, MAX_RELOAD_FILE + 1))
            .await
            .map_err(|e| {
                ControlError::Failed(format!("cannot read the reload file {shown}: {e}"))
            })?;
        let bytes = match read {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(invalid(format!(
                    "no reload file; create it with the settings to change, one per line: `{ADVERTISE_ROUTES_KEY}=192.168.10.0/24,fd10::/64` (an empty value clears the routes) and/or `{LOG_LEVEL_KEY}=debug`; then send SIGHUP or POST /v1/reload again"
                )));
            }
            Err(e) => {
                return Err(ControlError::Failed(format!(
                    "cannot read the reload file {shown}: {e}"
                )));
            }
        };
        if bytes.len() as u64 > MAX_RELOAD_FILE {
            return Err(invalid(format!(
                "larger than {} KiB; a reload file holds a few `key=value` lines",
                MAX_RELOAD_FILE / 1024
            )));
        }
        let text = String::from_utf8(bytes).map_err(|e| {
            invalid(format!(
                "not UTF-8 text (byte {})",
                e.utf8_error().valid_up_to()
            ))
        })?;
        let file = ReloadFile::parse(&text);
        for ignored in &file.ignored {
            match ignored {
                IgnoredLine::UnknownKey { line, key } => tracing::warn!(
                    file = %shown, line, key,
                    "reload file: ignoring a setting that cannot be reloaded (only {ADVERTISE_ROUTES_KEY} and {LOG_LEVEL_KEY} can; others need a restart)"
                ),
                IgnoredLine::NoEquals { line } => tracing::warn!(
                    file = %shown, line,
                    "reload file: ignoring a line without '=' (expected key=value)"
                ),
            }
        }
        Ok(file)
    }
}

/// At most `limit` bytes of the file at `path`.
fn read_capped(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(limit)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
pub(crate) mod tests {

    use ipnet::IpNet;
    use wgmesh_api_types::{Change, ReloadChanges};

    use super::*;
    use crate::logging::LogLevel;
    use crate::logging::tests::{Captured, capture};

    /// A reloader on a fresh node (no routes, level info) with its file in `dir`, the receiver
    /// of the node, and (when `log` is set) the control of a subscriber capturing this thread's
    /// log at info.
    pub(crate) fn reloader(
        dir: &Path,
        log: bool,
    ) -> (
        Reloader,
        watch::Receiver<LocalNode>,
        Option<(Captured, tracing::subscriber::DefaultGuard)>,
    ) {
        let (local, rx) = watch::channel(crate::node::tests::local());
        let (log, captured) = if log {
            let (out, control, guard) = capture(LogLevel::Info, None);
            (Some(control), Some((out, guard)))
        } else {
            (None, None)
        };
        let reloader = Reloader {
            file: dir.join("wg0.reload"),
            local,
            log,
        };
        (reloader, rx, captured)
    }

    fn api(routes: Option<&[&str]>, level: Option<&str>, dry_run: bool) -> ReloadRequest {
        ReloadRequest {
            advertise_routes: routes.map(|r| r.iter().map(|s| (*s).to_owned()).collect()),
            log_level: level.map(str::to_owned),
            dry_run,
        }
    }

    fn nets(items: &[&str]) -> Vec<IpNet> {
        items.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[tokio::test]
    async fn an_api_reload_applies_routes_and_really_changes_the_log_level() {
        let dir = tempfile::tempdir().unwrap();
        let (reloader, mut node, log) = reloader(dir.path(), true);
        let (out, _guard) = log.unwrap();
        tracing::debug!("before: hidden");
        let r = reloader
            .reload(
                api(Some(&["172.31.7.9/24", "fd10::/64"]), Some("debug"), false),
                ReloadSource::Api,
            )
            .await
            .unwrap();
        assert_eq!(r.source, ReloadSource::Api);
        assert!(r.applied && !r.dry_run);
        assert_eq!(r.schema_version, SCHEMA_VERSION);
        assert_eq!(
            r.changed,
            ReloadChanges {
                advertise_routes: Some(Change {
                    from: vec![],
                    to: vec!["172.31.7.0/24".into(), "fd10::/64".into()],
                }),
                log_level: Some(Change {
                    from: "info".into(),
                    to: "debug".into(),
                }),
            }
        );
        assert!(node.has_changed().unwrap(), "watchers are told");
        let now = node.borrow_and_update().clone();
        assert_eq!(now.advertise_routes, nets(&["172.31.7.0/24", "fd10::/64"]));
        assert_eq!(now.log_level, LogLevel::Debug);
        tracing::debug!("after: shown");
        let text = out.text();
        assert!(!text.contains("before: hidden"), "{text}");
        assert!(text.contains("after: shown"), "{text}");
        assert!(
            text.contains("reload applied")
                && text.contains("source=\"api\"")
                && text.contains(
                    "changed=advertise_routes: [] -> [172.31.7.0/24, fd10::/64]; log_level: info -> debug"
                ),
            "{text}"
        );

        // The same again changes nothing and tells no watcher.
        let r = reloader
            .reload(
                api(Some(&["fd10::/64", "172.31.7.0/24"]), Some("DEBUG"), false),
                ReloadSource::Api,
            )
            .await
            .unwrap();
        assert!(!r.applied && r.changed.is_empty());
        assert!(!node.has_changed().unwrap());
    }

    #[tokio::test]
    async fn all_or_nothing_a_bad_route_with_a_good_level_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (reloader, node, log) = reloader(dir.path(), true);
        let (out, _guard) = log.unwrap();
        let err = reloader
            .reload(
                api(Some(&["10.0.0.0/24", "10.0.0.0/33"]), Some("debug"), false),
                ReloadSource::Api,
            )
            .await
            .unwrap_err();
        let ControlError::Invalid { field, detail } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(field, "advertise_routes");
        assert!(detail.contains("\"10.0.0.0/33\""), "{detail}");
        assert!(!node.has_changed().unwrap());
        assert_eq!(*node.borrow(), crate::node::tests::local());
        tracing::debug!("still hidden");
        let text = out.text();
        assert!(!text.contains("still hidden"), "the level changed: {text}");
        assert!(
            text.contains("WARN") && text.contains("reload refused; nothing changed"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_level_change_without_the_log_filter_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (reloader, node, _) = reloader(dir.path(), false);
        let err = reloader
            .reload(
                api(Some(&["10.0.0.0/24"]), Some("debug"), false),
                ReloadSource::Api,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ControlError::Failed(text) if text.contains("nothing was changed")),
            "{err:?}"
        );
        assert!(!node.has_changed().unwrap());
        // Routes alone need no filter.
        let r = reloader
            .reload(api(Some(&["10.0.0.0/24"]), None, false), ReloadSource::Api)
            .await
            .unwrap();
        assert!(r.applied);
    }

    #[tokio::test]
    async fn a_dry_run_reports_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (reloader, node, _) = reloader(dir.path(), false);
        let r = reloader
            .reload(api(Some(&["10.5.0.0/16"]), None, true), ReloadSource::Api)
            .await
            .unwrap();
        assert!(r.dry_run && !r.applied);
        assert_eq!(
            r.changed.advertise_routes.map(|c| c.to),
            Some(vec!["10.5.0.0/16".to_owned()])
        );
        assert!(!node.has_changed().unwrap());
        // A dry run of the file: `{"dry_run": true}`.
        std::fs::write(&reloader.file, "advertise-routes=10.6.0.0/16\n").unwrap();
        let r = reloader
            .reload(api(None, None, true), ReloadSource::Api)
            .await
            .unwrap();
        assert_eq!(r.source, ReloadSource::File);
        assert!(r.dry_run && !r.applied);
        assert_eq!(
            r.changed.advertise_routes.map(|c| c.to),
            Some(vec!["10.6.0.0/16".to_owned()])
        );
        assert!(!node.has_changed().unwrap());
    }

    #[tokio::test]
    async fn the_reload_file_is_read_for_an_empty_request_and_for_a_signal() {
        let dir = tempfile::tempdir().unwrap();
        let (reloader, node, _) = reloader(dir.path(), false);
        std::fs::write(
            &reloader.file,
            "# office networks\nadvertise-routes=10.7.0.0/24, 10.8.0.0/24\nsecret=nope\n",
        )
        .unwrap();
        let r = reloader
            .reload(ReloadRequest::default(), ReloadSource::Api)
            .await
            .unwrap();
        assert_eq!(r.source, ReloadSource::File);
        assert!(r.applied);
        assert_eq!(
            node.borrow().advertise_routes,
            nets(&["10.7.0.0/24", "10.8.0.0/24"])
        );
        // SIGHUP: the file again; an empty value clears.
        std::fs::write(&reloader.file, "advertise-routes=\n").unwrap();
        let r = reloader
            .reload(ReloadRequest::default(), ReloadSource::Signal)
            .await
            .unwrap();
        assert_eq!(r.source, ReloadSource::Signal);
        assert_eq!(
            r.changed.advertise_routes,
            Some(Change {
                from: vec!["10.7.0.0/24".into(), "10.8.0.0/24".into()],
                to: vec![],
            })
        );
        assert!(node.borrow().advertise_routes.is_empty());
        // A file without `advertise-routes` leaves them alone.
        std::fs::write(&reloader.file, "log-level=\n").unwrap();
        let r = reloader
            .reload(ReloadRequest::default(), ReloadSource::Signal)
            .await
            .unwrap();
        assert!(!r.applied && r.changed.is_empty());
    }

    #[tokio::test]
    async fn file_errors_name_the_file_and_line_and_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (reloader, node, log) = reloader(dir.path(), true);
        let (out, _guard) = log.unwrap();
        let path = reloader.file.display().to_string();

        // Missing: says which file and what to put in it.
        let err = reloader
            .reload(ReloadRequest::default(), ReloadSource::Signal)
            .await
            .unwrap_err();
        let ControlError::Invalid { field, detail } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(*field, path);
        assert!(
            detail.starts_with("no reload file")
                && detail.contains("advertise-routes=")
                && detail.contains("log-level="),
            "{detail}"
        );

        // A bad value: `<file>:<line>`, the key, the value; a good line changes nothing either.
        std::fs::write(
            &reloader.file,
            "log-level=debug\n\nadvertise-routes=10.0.0.0/24,10.0.0.300/24\n",
        )
        .unwrap();
        let err = reloader
            .reload(ReloadRequest::default(), ReloadSource::Signal)
            .await
            .unwrap_err();
        assert_eq!(
            err,
            ControlError::Invalid {
                field: format!("{path}:3"),
                detail: "advertise-routes: entry \"10.0.0.300/24\" is not a network in CIDR notation (e.g. 192.168.10.0/24 or fd10::/64); nothing was changed".into(),
            }
        );
        std::fs::write(&reloader.file, "log-level=chatty\n").unwrap();
        let err = reloader
            .reload(ReloadRequest::default(), ReloadSource::Api)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ControlError::Invalid { field, detail }
                if *field == format!("{path}:1") && detail.starts_with("log-level: unknown log level \"chatty\"")),
            "{err:?}"
        );

        // Not text, or far too big.
        std::fs::write(&reloader.file, b"log-level=\xff\n").unwrap();
        let err = reloader
            .reload(ReloadRequest::default(), ReloadSource::Signal)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ControlError::Invalid { field, detail } if *field == path && detail.contains("UTF-8")),
            "{err:?}"
        );
        std::fs::write(&reloader.file, vec![b'#'; 100_000]).unwrap();
        let err = reloader
            .reload(ReloadRequest::default(), ReloadSource::Signal)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ControlError::Invalid { detail, .. } if detail.contains("larger than 64 KiB")),
            "{err:?}"
        );

        assert!(!node.has_changed().unwrap());
        tracing::debug!("never shown");
        let text = out.text();
        assert!(!text.contains("never shown"), "{text}");
        assert_eq!(
            text.matches("reload refused; nothing changed").count(),
            5,
            "{text}"
        );

        // Ignored lines are warned about, by line and key only.
        std::fs::write(
            &reloader.file,
            "secret=hunter2\nlisten-port 1\nadvertise-routes=10.9.0.0/24\n",
        )
        .unwrap();
        reloader
            .reload(ReloadRequest::default(), ReloadSource::Signal)
            .await
            .unwrap();
        let text = out.text();
        assert!(
            text.contains("ignoring a setting that cannot be reloaded")
                && text.contains("line=1 key=\"secret\""),
            "{text}"
        );
        assert!(
            text.contains("ignoring a line without '='") && text.contains("line=2"),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
        assert!(
            text.contains("reload applied") && text.contains("source=\"signal\""),
            "{text}"
        );
    }
}
