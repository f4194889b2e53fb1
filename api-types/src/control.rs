//! Bodies of the write endpoints (`POST /v1/reload`, `POST /v1/cache/flush`) and of
//! `GET /v1/health`.

use serde::{Deserialize, Serialize};

use crate::Problem;

/// `POST /v1/reload` body. Every field is optional; an empty body (or `{}`) re-reads the reload
/// file `<state-dir>/<iface>.reload` instead. Unknown fields are refused (400 naming them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// Every field a body may hold, as spelled in JSON; anything else is refused.
    pub const FIELDS: [&'static str; 3] = ["advertise_routes", "log_level", "dry_run"];

    /// Whether the request names no setting (then the reload file is read instead).
    pub fn is_empty(&self) -> bool {
        self.advertise_routes.is_none() && self.log_level.is_none()
    }
}

/// Where a reload came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Change<T> {
    /// Before.
    pub from: T,
    /// After.
    pub to: T,
}

/// What a reload changed (or, with `dry_run`, would change). Absent = unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CacheFlushResponse {
    /// Schema version of this body.
    pub schema_version: u32,
    /// The cache file written.
    pub path: String,
    /// How many peers it holds.
    pub peers: usize,
}

/// Overall health: part of `GET /v1/status`, and what `GET /v1/health` answers with (200 with a
/// [`HealthResponse`] when `healthy`, else 503 with an [`UnhealthyProblem`]; both decode as this
/// type).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

/// `GET /v1/health` when the daemon is healthy (200): [`Health`] with the schema version.
///
/// Reads as a [`Health`] too (the extra `schema_version` key is ignored), so a client can decode
/// the body of either answer of the endpoint as [`Health`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HealthResponse {
    /// Schema version of this body.
    pub schema_version: u32,
    /// The health (`healthy` is true; `reasons` holds warnings only).
    #[serde(flatten)]
    pub health: Health,
}

/// `GET /v1/health` when the daemon is unhealthy (503): a [`Problem`] of type
/// `urn:wgmesh:problem:unhealthy` whose `detail` lists the critical reasons, with the [`Health`]
/// members (`healthy: false`, `reasons`) added as RFC 9457 extension members.
///
/// So the body decodes both as a [`Problem`] (like every error) and as a [`Health`] (like the 200
/// answer), and a script reads `.reasons` whatever the status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UnhealthyProblem {
    /// The problem members (`type`, `title`, `status`, `detail`, `schema_version`).
    #[serde(flatten)]
    pub problem: Problem,
    /// The health members (`healthy`, `reasons`).
    #[serde(flatten)]
    pub health: Health,
}

/// One reason in [`Health`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    fn reload_request_fields_lists_exactly_the_json_keys() {
        let full = ReloadRequest {
            advertise_routes: Some(vec![]),
            log_level: Some("info".into()),
            dry_run: true,
        };
        let value = serde_json::to_value(&full).unwrap();
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut want = ReloadRequest::FIELDS.to_vec();
        let mut got = keys.clone();
        want.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, want);
        for field in ReloadRequest::FIELDS {
            let text = format!("{{{:?}:{}}}", field, value[field]);
            serde_json::from_str::<ReloadRequest>(&text).unwrap();
        }
    }

    #[test]
    fn health_answers_decode_as_health_whatever_the_status() {
        let health = Health {
            healthy: false,
            reasons: vec![HealthReason {
                code: "interface_down".into(),
                detail: "wg0 is down".into(),
                critical: true,
            }],
        };
        let ok = HealthResponse {
            schema_version: SCHEMA_VERSION,
            health: Health::default(),
        };
        let text = serde_json::to_string(&ok).unwrap();
        assert_eq!(text, r#"{"schema_version":1,"healthy":true,"reasons":[]}"#);
        assert_eq!(serde_json::from_str::<HealthResponse>(&text).unwrap(), ok);
        assert_eq!(
            serde_json::from_str::<Health>(&text).unwrap(),
            Health::default()
        );

        let bad = UnhealthyProblem {
            problem: Problem::new(
                crate::problem_type::UNHEALTHY,
                "Service Unavailable",
                503,
                Some("interface_down: wg0 is down".into()),
            ),
            health: health.clone(),
        };
        let text = serde_json::to_string(&bad).unwrap();
        assert!(
            text.contains(r#""type":"urn:wgmesh:problem:unhealthy""#),
            "{text}"
        );
        assert_eq!(
            serde_json::from_str::<UnhealthyProblem>(&text).unwrap(),
            bad
        );
        assert_eq!(serde_json::from_str::<Health>(&text).unwrap(), health);
        assert_eq!(serde_json::from_str::<Problem>(&text).unwrap(), bad.problem);
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
