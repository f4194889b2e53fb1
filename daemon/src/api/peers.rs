//! `GET /v1/peers` (every known peer, or those `?state=` and `?via=` select) and
//! `GET /v1/peers/{key}` (one peer), from a fresh snapshot (at most
//! [`MAX_AGE`](super::snapshot::MAX_AGE) old); the unfiltered list is its pre-serialised body.
//!
//! The list keeps the snapshot's order (by mesh IP, then key), so filtering never reorders it.
//! A key in a path may be standard base64 (its `/` percent-encoded as `%2F` or not, its `+`
//! as is or `%2B`) or URL-safe base64, with or without the `=`; it names the same peer either way.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::{
    STANDARD, STANDARD_PAD_INDIFFERENT, URL_SAFE_PAD_INDIFFERENT,
};
use utoipa::openapi::Required;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use wgmesh_api_types::{Peer, PeerList, PeerResponse, Problem, SCHEMA_VERSION, problem_type};

use super::problem::ProblemResponse;
use super::{ApiState, json_response};
use crate::peers::Method;

/// The routes this module serves.
pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/peers", get(list_peers))
        // A catch-all, so a standard base64 key whose `/` was not percent-encoded still arrives
        // whole.
        .route("/v1/peers/{*key}", get(get_peer))
}

/// Every value of `?state=`.
pub(super) const STATES: [&str; 4] = ["active", "cached", "quarantined", "dead"];
/// The value of `?via=` for peers without an endpoint.
const NO_ENDPOINT: &str = "none";

/// The filters of `GET /v1/peers`; absent ones keep every peer.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct PeerFilter {
    state: Option<&'static str>,
    via: Option<&'static str>,
}

impl PeerFilter {
    /// The filter the query `pairs` ask for.
    ///
    /// # Errors
    ///
    /// A 400 problem naming the parameter: unknown name, unknown value, or given twice.
    fn parse(pairs: &[(String, String)]) -> Result<Self, ProblemResponse> {
        let mut filter = Self::default();
        for (name, value) in pairs {
            let (slot, allowed) = match name.as_str() {
                "state" => (&mut filter.state, states()),
                "via" => (&mut filter.via, vias()),
                other => {
                    return Err(bad_request(format!(
                        "unknown query parameter {other:?}; expected state or via"
                    )));
                }
            };
            if slot.is_some() {
                return Err(bad_request(format!("{name}: given more than once")));
            }
            let Some(known) = allowed.iter().find(|a| **a == value) else {
                return Err(bad_request(format!(
                    "{name}: unknown value {value:?}; expected one of {}",
                    allowed.join(", ")
                )));
            };
            *slot = Some(known);
        }
        Ok(filter)
    }

    /// Whether the filter keeps `peer`.
    fn keeps(&self, peer: &Peer) -> bool {
        let via = peer.endpoint_method.as_deref().unwrap_or(NO_ENDPOINT);
        self.state.is_none_or(|s| peer.state == s) && self.via.is_none_or(|v| via == v)
    }

    fn is_empty(&self) -> bool {
        self.state.is_none() && self.via.is_none()
    }
}

/// Every value of `?state=`.
fn states() -> Vec<&'static str> {
    STATES.to_vec()
}

/// Every value of `?via=`: the discovery methods and `none`.
fn vias() -> Vec<&'static str> {
    Method::ALL
        .iter()
        .map(|m| m.as_str())
        .chain([NO_ENDPOINT])
        .collect()
}

impl utoipa::IntoParams for PeerFilter {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let param = |name: &str, values: Vec<&'static str>, description: &str| {
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some(description))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some(values)),
                ))
                .build()
        };
        vec![
            param(
                "state",
                states(),
                "Only peers in this state (`Peer.state`).",
            ),
            param(
                "via",
                vias(),
                "Only peers whose endpoint was learned this way (`Peer.endpoint_method`; `none`: no endpoint), the grouping of `PeerCounts.by_via`.",
            ),
        ]
    }
}

fn bad_request(detail: String) -> ProblemResponse {
    ProblemResponse::new(StatusCode::BAD_REQUEST, problem_type::BAD_REQUEST, detail)
}

/// Every known peer, or those the filters keep, in a stable order.
#[utoipa::path(
    get,
    path = "/v1/peers",
    tag = "peers",
    params(PeerFilter),
    responses(
        (status = 200, description = "The peers, sorted by mesh IP (then key; peers without one last).", body = PeerList),
        (status = 400, description = "An unknown query parameter or value; `detail` names it.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn list_peers(
    State(state): State<ApiState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ProblemResponse> {
    let Query(pairs) = query.map_err(|e| bad_request(format!("query: {}", e.body_text())))?;
    let filter = PeerFilter::parse(&pairs)?;
    let snapshot = state.snapshots.fresh().await;
    if filter.is_empty() {
        // A copy, not a build.
        return Ok(json_response(snapshot.peers_json.clone()));
    }
    let published = &snapshot.peers;
    Ok(Json(PeerList {
        schema_version: published.schema_version,
        peers: published
            .peers
            .iter()
            .filter(|p| filter.keeps(p))
            .cloned()
            .collect(),
    })
    .into_response())
}

/// The canonical (standard, padded base64) form of a key given in a path, or why it is not one.
fn canonical_key(text: &str) -> Result<String, String> {
    let decoded = STANDARD_PAD_INDIFFERENT
        .decode(text)
        .or_else(|_| URL_SAFE_PAD_INDIFFERENT.decode(text))
        .map_err(|_| format!("key: {text:?} is not base64 (standard or URL-safe)"))?;
    if decoded.len() != 32 {
        return Err(format!(
            "key: {text:?} is {} bytes long; a WireGuard key is 32",
            decoded.len()
        ));
    }
    Ok(STANDARD.encode(decoded))
}

/// One peer, by its WireGuard public key.
#[utoipa::path(
    get,
    path = "/v1/peers/{key}",
    tag = "peers",
    params(
        ("key" = String, Path, description = "The peer's WireGuard public key: standard base64 (`/` and `+` percent-encoded or not) or URL-safe base64, `=` optional."),
    ),
    responses(
        (status = 200, description = "The peer.", body = PeerResponse),
        (status = 400, description = "Not a WireGuard key; `detail` says why.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No peer with this key is known.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn get_peer(
    State(state): State<ApiState>,
    Path(key): Path<String>,
) -> Result<Json<PeerResponse>, ProblemResponse> {
    let key = canonical_key(&key).map_err(bad_request)?;
    let snapshot = state.snapshots.fresh().await;
    match snapshot.peers.peers.iter().find(|p| p.public_key == key) {
        Some(peer) => Ok(Json(PeerResponse {
            schema_version: SCHEMA_VERSION,
            peer: peer.clone(),
        })),
        None => Err(ProblemResponse::new(
            StatusCode::NOT_FOUND,
            problem_type::NOT_FOUND,
            format!("no peer with key {key} is known"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// (case, query, Ok(filter) or a text the 400 detail holds)
    type FilterRow = (
        &'static str,
        &'static [(&'static str, &'static str)],
        Result<PeerFilter, &'static str>,
    );

    #[test]
    fn filters_parse_or_name_the_parameter() {
        let table: [FilterRow; 9] = [
            ("none", &[], Ok(PeerFilter::default())),
            (
                "state",
                &[("state", "cached")],
                Ok(PeerFilter {
                    state: Some("cached"),
                    via: None,
                }),
            ),
            (
                "both",
                &[("via", "dht-rendezvous"), ("state", "active")],
                Ok(PeerFilter {
                    state: Some("active"),
                    via: Some("dht-rendezvous"),
                }),
            ),
            (
                "no endpoint",
                &[("via", "none")],
                Ok(PeerFilter {
                    state: None,
                    via: Some("none"),
                }),
            ),
            (
                "unknown state",
                &[("state", "alive")],
                Err("state: unknown value \"alive\""),
            ),
            (
                "unknown via",
                &[("via", "carrier-pigeon")],
                Err("via: unknown value"),
            ),
            (
                "unknown parameter",
                &[("stat", "active")],
                Err("unknown query parameter \"stat\""),
            ),
            (
                "twice",
                &[("state", "active"), ("state", "dead")],
                Err("state: given more than once"),
            ),
            (
                "empty value",
                &[("state", "")],
                Err("state: unknown value \"\""),
            ),
        ];
        for (case, query, want) in table {
            match (PeerFilter::parse(&pairs(query)), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{case}"),
                (Err(problem), Err(text)) => {
                    assert_eq!(problem.0.status, 400, "{case}");
                    let detail = problem.0.detail.unwrap_or_default();
                    assert!(detail.contains(text), "{case}: {detail}");
                }
                (got, want) => panic!("{case}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn every_discovery_method_and_none_is_a_via() {
        let vias = vias();
        assert_eq!(vias.len(), Method::ALL.len() + 1);
        for m in Method::ALL {
            assert!(vias.contains(&m.as_str()), "{m}");
        }
    }

    #[test]
    fn keys_are_accepted_in_every_base64_spelling() {
        // 0xfb 0xff… encodes to "+/" in standard base64, "-_" in URL-safe.
        let mut bytes = [0xfb_u8; 32];
        bytes[1] = 0xff;
        let canonical = STANDARD.encode(bytes);
        assert!(
            canonical.contains('+') && canonical.contains('/'),
            "{canonical}"
        );
        let url_safe = canonical.replace('+', "-").replace('/', "_");
        // (case, text as the handler receives it after percent-decoding, Ok(canonical) or a
        // text of the error)
        let table = [
            ("standard", canonical.clone(), Ok(&canonical)),
            (
                "standard unpadded",
                canonical.trim_end_matches('=').to_owned(),
                Ok(&canonical),
            ),
            ("url-safe", url_safe.clone(), Ok(&canonical)),
            (
                "url-safe unpadded",
                url_safe.trim_end_matches('=').to_owned(),
                Ok(&canonical),
            ),
            ("too short", "AAAA".to_owned(), Err("3 bytes long")),
            ("not base64", "not a key!".to_owned(), Err("not base64")),
            (
                "alphabets mixed",
                format!("-/{}", &canonical[2..]),
                Err("not base64"),
            ),
            ("empty", String::new(), Err("0 bytes long")),
        ];
        for (case, text, want) in table {
            match (canonical_key(&text), want) {
                (Ok(got), Ok(want)) => assert_eq!(&got, want, "{case}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{case}: {got}"),
                (got, want) => panic!("{case}: got {got:?}, want {want:?}"),
            }
        }
    }
}
