//! Types of the `wgmeshd` control API.
//!
//! The API is HTTP/1.1 with JSON bodies on a unix socket, versioned under [`API_PREFIX`]. Every
//! response body carries [`SCHEMA_VERSION`]; errors are RFC 9457 problem documents ([`Problem`])
//! with a stable `type`. This crate holds only serde types and constants so that the daemon, the
//! CLI and anyone scripting the API share one definition (no tokio, no axum).

use serde::{Deserialize, Serialize};

/// Version of every JSON body this crate describes. Bumped on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

/// Path prefix of every API route.
pub const API_PREFIX: &str = "/v1";

/// Default location of the daemon's API socket.
pub const DEFAULT_SOCKET_PATH: &str = "/run/wgmesh/wgmeshd.sock";

/// Environment variable that overrides the socket path for clients.
pub const SOCKET_ENV: &str = "WGMESH_SOCKET";

/// Media type of error bodies.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// An RFC 9457 problem document: the body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// Stable identifier of the error class, e.g. `urn:wgmesh:problem:forbidden`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short human-readable summary of the class.
    pub title: String,
    /// HTTP status code, repeated in the body for clients that lose the header.
    pub status: u16,
    /// What went wrong with this request, safe to show to the caller (never a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Schema version of this body.
    pub schema_version: u32,
}

impl Problem {
    /// Builds a problem of the given class with this crate's schema version.
    pub fn new(kind: &str, title: &str, status: u16, detail: Option<String>) -> Self {
        Self {
            kind: kind.to_owned(),
            title: title.to_owned(),
            status,
            detail,
            schema_version: SCHEMA_VERSION,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_round_trips_with_rfc9457_keys() {
        let p = Problem::new(
            "urn:wgmesh:problem:bad-request",
            "Bad request",
            400,
            Some("body is not JSON".into()),
        );
        let text = serde_json::to_string(&p).unwrap();
        assert!(text.contains(r#""type":"urn:wgmesh:problem:bad-request""#));
        assert!(text.contains(r#""schema_version":1"#));
        let back: Problem = serde_json::from_str(&text).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn problem_without_detail_omits_the_key() {
        let p = Problem::new("urn:wgmesh:problem:x", "X", 500, None);
        let text = serde_json::to_string(&p).unwrap();
        assert!(!text.contains("detail"));
    }
}
