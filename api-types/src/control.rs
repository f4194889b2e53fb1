//! Bodies of the write endpoints (`POST /v1/reload`, `POST /v1/cache/flush`) and of
//! `GET /v1/health`.

use serde::{Deserialize, Serialize};

/// `POST /v1/reload` body. Every field is optional; an empty body (or `{}`) re-reads the reload
/// file `<state-dir>/<iface>.reload` instead. Unknown fields are refused (400 naming them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadRequest {
    /// The networks to advertise from now on (CIDRs); `[]` clears them; absent = unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise_routes: Option<Vec<String>>,
    /// The log level from now on (`debug`, `info`, `warn`/`warning`, `error`); absent =
    /// unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    /// Validate and report what would change, change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

impl ReloadRequest {
    /// Whether the request names no setting (then the reload file is read instead).
    pub fn is_empty(&self) -> bool {
        self.advertise_routes.is_none() && self.log_level.is_none()
    }
}

/// Where a reload came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReloadSource {
    /// `POST /v1/reload` with settings in the body.
    Api,
    /// The reload file, read because of `POST /v1/reload` with an empty body.
    File,
    /// The reload file, read because of SIGHUP.
    Signal,
}

/// A setting's value before and after a reload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change<T> {
    /// Before.
    pub from: T,
    /// After.
    pub to: T,
}

/// What a reload changed (or, with `dry_run`, would change). Absent = unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadChanges {
    /// The advertised networks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise_routes: Option<Change<Vec<String>>>,
    /// The log level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<Change<String>>,
}

impl ReloadChanges {
    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.advertise_routes.is_none() && self.log_level.is_none()
    }
}

/// Answer to `POST /v1/reload` (and what SIGHUP logs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadResponse {
    /// Schema version of this body.
    pub schema_version: u32,
    /// Where the settings came from.
    pub source: ReloadSource,
    /// The request was a dry run: nothing was applied.
    pub dry_run: bool,
    /// The changes took effect (false for a dry run or when nothing changed).
    pub applied: bool,
    /// What changed (or would change).
    pub changed: ReloadChanges,
}

/// Answer to `POST /v1/cache/flush`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheFlushResponse {
    /// Schema version of this body.
    pub schema_version: u32,
    /// The cache file written.
    pub path: String,
    /// How many peers it holds.
    pub peers: usize,
}

/// Overall health: the body of `GET /v1/health` (200 when `healthy`, else 503) and part of
/// `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// The interface is up and every required task runs.
    pub healthy: bool,
    /// Everything that is not as it should be; `critical` ones make the daemon unhealthy, the
    /// others (a discovery layer retrying, …) are warnings.
    pub reasons: Vec<HealthReason>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            healthy: true,
            reasons: Vec::new(),
        }
    }
}

/// One reason in [`Health`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReason {
    /// Stable code, e.g. `interface_down`, `task_failed`, `task_restarting`, `layer_retrying`.
    pub code: String,
    /// What exactly, for humans.
    pub detail: String,
    /// Whether it makes the daemon unhealthy.
    pub critical: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SCHEMA_VERSION;

    #[test]
    fn reload_request_fields_are_optional_and_unknown_ones_refused() {
        let empty: ReloadRequest = serde_json::from_str("{}").unwrap();
        assert!(empty.is_empty() && !empty.dry_run);
        let full: ReloadRequest = serde_json::from_str(
            r#"{"advertise_routes":["10.9.0.0/24"],"log_level":"debug","dry_run":true}"#,
        )
        .unwrap();
        assert_eq!(
            full.advertise_routes.as_deref(),
            Some(&["10.9.0.0/24".to_owned()][..])
        );
        let err = serde_json::from_str::<ReloadRequest>(r#"{"advertise-routes":[]}"#).unwrap_err();
        assert!(err.to_string().contains("advertise-routes"), "{err}");
    }

    #[test]
    fn reload_response_omits_unchanged_settings() {
        let r = ReloadResponse {
            schema_version: SCHEMA_VERSION,
            source: ReloadSource::Api,
            dry_run: false,
            applied: true,
            changed: ReloadChanges {
                log_level: Some(Change {
                    from: "info".into(),
                    to: "debug".into(),
                }),
                advertise_routes: None,
            },
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains(r#""source":"api""#), "{text}");
        assert!(
            text.contains(r#""log_level":{"from":"info","to":"debug"}"#),
            "{text}"
        );
        assert!(!text.contains("advertise_routes"), "{text}");
        assert_eq!(serde_json::from_str::<ReloadResponse>(&text).unwrap(), r);
    }
}
