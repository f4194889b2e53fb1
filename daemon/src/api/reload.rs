//! `POST /v1/reload`: change settings of the running daemon (write access).
//!
//! The body is a [`ReloadRequest`] (`application/json`); an empty body (no bytes at all) re-reads
//! the reload file instead. Everything is checked here that can be without the daemon's state
//! (media type, JSON, known fields, their types); the daemon's `control` task validates the
//! values, applies all or nothing and answers with what changed.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::Value;
use tokio::time::Instant;
use wgmesh_api_types::{Problem, ReloadRequest, ReloadResponse, problem_type};

use super::ApiState;
use super::control::{self, ControlRequest};
use super::limits::MAX_BODY_BYTES;
use super::problem::ProblemResponse;

/// The routes this module serves.
pub(super) fn routes() -> Router<ApiState> {
    Router::new().route("/v1/reload", post(reload))
}

/// Applies new settings (or, with an empty body, the reload file's) and says what changed.
#[utoipa::path(
    post,
    path = "/v1/reload",
    tag = "control",
    request_body(
        content = ReloadRequest,
        content_type = "application/json",
        description = "The settings to change. Optional: an empty body re-reads the reload file `<state-dir>/<iface>.reload`.",
    ),
    responses(
        (status = 200, description = "Applied (or, with `dry_run`, checked); `changed` says what changed or would change.", body = ReloadResponse),
        (status = 400, description = "Not JSON, not an object, an unknown field, or a field with a wrong type or an invalid value; `detail` starts with the field.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller may not write (not root, not in the socket's group), or the request has an `Origin` header.", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is over 64 KiB.", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "A body that is not `application/json`.", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Valid, but could not be carried out (type `urn:wgmesh:problem:failed`, nothing changed), or an internal error (`urn:wgmesh:problem:internal`).", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn reload(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ReloadResponse>, ProblemResponse> {
    let body = body.map_err(body_rejection)?;
    let request = parse(&headers, &body)?;
    let answer = control::ask(&state.control, "reload", |reply| ControlRequest::Reload {
        request,
        reply,
    })
    .await?;
    if answer.applied {
        // The caller's next read shows what it changed.
        state.snapshots.settled_after(Instant::now()).await;
    }
    Ok(Json(answer))
}

/// The problem for a body that could not be read.
pub(super) fn body_rejection(rejection: BytesRejection) -> ProblemResponse {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ProblemResponse::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            problem_type::PAYLOAD_TOO_LARGE,
            format!("request body is over the limit of {MAX_BODY_BYTES} bytes"),
        )
    } else {
        bad_request(format!("body: cannot read it: {}", rejection.body_text()))
    }
}

fn bad_request(detail: String) -> ProblemResponse {
    ProblemResponse::new(StatusCode::BAD_REQUEST, problem_type::BAD_REQUEST, detail)
}

/// Whether the `Content-Type` in `headers` is JSON (`application/json`, parameters allowed).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

/// The request a body of `POST /v1/reload` asks for.
///
/// # Errors
///
/// 415 for a body that is not `application/json`; 400 naming the field (or `body`) otherwise.
fn parse(headers: &HeaderMap, body: &[u8]) -> Result<ReloadRequest, ProblemResponse> {
    if body.is_empty() {
        return Ok(ReloadRequest::default());
    }
    if !is_json(headers) {
        let given = headers
            .get(header::CONTENT_TYPE)
            .map_or_else(|| "none".to_owned(), |v| format!("{v:?}"));
        return Err(ProblemResponse::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            problem_type::UNSUPPORTED_MEDIA_TYPE,
            format!("a body must be application/json (Content-Type: {given}); or send none"),
        ));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| bad_request(format!("body: not valid JSON: {e}")))?;
    let Some(object) = value.as_object() else {
        return Err(bad_request(
            "body: expected a JSON object such as {\"log_level\":\"debug\"}".to_owned(),
        ));
    };
    let unknown: Vec<&str> = object
        .keys()
        .map(String::as_str)
        .filter(|k| !ReloadRequest::FIELDS.contains(k))
        .collect();
    if !unknown.is_empty() {
        let plural = if unknown.len() == 1 { "" } else { "s" };
        return Err(bad_request(format!(
            "{}: unknown field{plural}; expected {}",
            unknown.join(", "),
            ReloadRequest::FIELDS.join(", ")
        )));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "body" } else { path.as_str() };
        bad_request(format!("{field}: {}", e.inner()))
    })
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(content_type: Option<&'static str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(ct) = content_type {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        }
        h
    }

    /// (case, content type, body, Ok(request) or Err((status, text in the detail)))
    type BodyRow = (
        &'static str,
        Option<&'static str>,
        &'static str,
        Result<ReloadRequest, (u16, &'static str)>,
    );

    #[test]
    fn bodies_parse_or_name_what_is_wrong() {
        const JSON: Option<&str> = Some("application/json");
        let table: [BodyRow; 14] = [
            ("empty, no type", None, "", Ok(ReloadRequest::default())),
            (
                "empty, any type",
                Some("text/plain"),
                "",
                Ok(ReloadRequest::default()),
            ),
            ("empty object", JSON, "{}", Ok(ReloadRequest::default())),
            (
                "all fields",
                Some("Application/JSON; charset=utf-8"),
                r#"{"advertise_routes":["10.9.0.0/24"],"log_level":"debug","dry_run":true}"#,
                Ok(ReloadRequest {
                    advertise_routes: Some(vec!["10.9.0.0/24".into()]),
                    log_level: Some("debug".into()),
                    dry_run: true,
                }),
            ),
            ("no type", None, "{}", Err((415, "Content-Type: none"))),
            ("text", Some("text/plain"), "{}", Err((415, "text/plain"))),
            (
                "form",
                Some("application/x-www-form-urlencoded"),
                "a=b",
                Err((415, "application/json")),
            ),
            (
                "not json",
                JSON,
                "{log_level",
                Err((400, "body: not valid JSON")),
            ),
            (
                "not an object",
                JSON,
                "[1]",
                Err((400, "body: expected a JSON object")),
            ),
            (
                "one unknown field",
                JSON,
                r#"{"log-level":"debug"}"#,
                Err((
                    400,
                    "log-level: unknown field; expected advertise_routes, log_level, dry_run",
                )),
            ),
            (
                "unknown fields",
                JSON,
                r#"{"a":1,"log_level":"debug","b":2}"#,
                Err((400, "a, b: unknown fields")),
            ),
            (
                "wrong type",
                JSON,
                r#"{"log_level":3}"#,
                Err((400, "log_level: invalid type")),
            ),
            (
                "wrong element type",
                JSON,
                r#"{"advertise_routes":["10.0.0.0/8",7]}"#,
                Err((400, "advertise_routes[1]: invalid type")),
            ),
            (
                "null dry_run",
                JSON,
                r#"{"dry_run":null}"#,
                Err((400, "dry_run: invalid type")),
            ),
        ];
        for (case, content_type, body, want) in table {
            match (parse(&headers(content_type), body.as_bytes()), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{case}"),
                (Err(problem), Err((status, text))) => {
                    assert_eq!(problem.0.status, status, "{case}");
                    let detail = problem.0.detail.unwrap_or_default();
                    assert!(detail.contains(text), "{case}: {detail}");
                }
                (got, want) => panic!("{case}: got {got:?}, want {want:?}"),
            }
        }
    }
}
