//! The API's OpenAPI 3.1 document, generated from the handlers (their `#[utoipa::path]`
//! attributes, next to each handler) and the types of `wgmesh-api-types` (`utoipa::ToSchema`,
//! derived behind that crate's `openapi` feature so it stays serde-only for other users).
//!
//! `openapi.yaml` at the repository root is [`yaml`]'s output, committed; a test fails when the
//! two differ. After changing a handler's attribute or an API type, regenerate it with
//!
//! ```text
//! UPDATE_OPENAPI=1 cargo test -p wgmeshd --lib api::openapi
//! ```
//!
//! The YAML is written by [`to_yaml`], a small emitter for the JSON values the document holds
//! (block style, plain scalars only where YAML cannot read them as anything but the same
//! string), instead of pulling a YAML library into the daemon for one file.

use serde_json::Value;
use utoipa::Modify;
use utoipa::OpenApi as _;
use utoipa::openapi::path::Operation;
use utoipa::openapi::{
    ContentBuilder, InfoBuilder, LicenseBuilder, OpenApi, Ref, Required, ResponseBuilder,
    ServerBuilder,
};
use wgmesh_api_types::{DEFAULT_SOCKET_PATH, PROBLEM_CONTENT_TYPE, SCHEMA_VERSION};

use super::{cache, events, health, metrics, peers, reload, status};

/// The document's description: what holds for every endpoint.
const DESCRIPTION: &str = "\
The control API of wgmeshd: HTTP/1.1 with JSON bodies on a unix socket (default \
/run/wgmesh/wgmeshd.sock; for example `curl --unix-socket /run/wgmesh/wgmeshd.sock \
http://localhost/v1/status`). It never listens on TCP.

Every body carries `schema_version`. Every error is an `application/problem+json` document \
(RFC 9457) with a stable `type` (`urn:wgmesh:problem:*`); a 400's `detail` starts with the field \
or parameter at fault. Unknown paths answer 404 (`not-found`), known paths asked with another \
method 405 (`method-not-allowed`, with `Allow`).

Access: anyone who can connect to the socket may read (every GET). Writes (`POST`) need uid 0 or \
membership of the socket's group (`wgmesh`, or `wgmeshd join --socket-group`), by primary or \
supplementary group as the kernel recorded them at connect; others get 403 (`forbidden`) before \
their body is read. Any request with an `Origin` header gets 403.

Limits: bodies up to 64 KiB (413 `payload-too-large`), 10 s per request (408 `timeout`), 64 \
requests in flight (503 `overloaded`).";

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        status::get_status,
        health::get_health,
        peers::list_peers,
        peers::get_peer,
        events::get_events,
        reload::reload,
        cache::flush_cache,
        metrics::get_metrics,
    ),
    tags(
        (name = "node", description = "The node: status, health and events."),
        (name = "peers", description = "The peers this node knows."),
        (name = "control", description = "Changes (write access)."),
    ),
    modifiers(&Common)
)]
struct ApiDoc;

/// What the attributes cannot say: the document's info and server, and the answers every
/// operation may give whatever it does.
struct Common;

impl Modify for Common {
    fn modify(&self, doc: &mut OpenApi) {
        doc.info = InfoBuilder::new()
            .title("wgmeshd control API")
            .version(SCHEMA_VERSION.to_string())
            .description(Some(DESCRIPTION))
            .license(Some(
                LicenseBuilder::new()
                    .name("MIT OR Apache-2.0")
                    .identifier(Some("MIT OR Apache-2.0"))
                    .build(),
            ))
            .build();
        doc.servers = Some(vec![
            ServerBuilder::new()
                .url("http://localhost")
                .description(Some(format!(
                    "Over the unix socket (default {DEFAULT_SOCKET_PATH}); the host name is ignored."
                )))
                .build(),
        ]);
        for item in doc.paths.paths.values_mut() {
            let operations = [&mut item.get, &mut item.post];
            for operation in operations.into_iter().flatten() {
                add_common_responses(operation);
                // No body is ever required: an empty one asks for the defaults (for reload: the
                // reload file).
                if let Some(body) = operation.request_body.as_mut() {
                    body.required = Some(Required::False);
                }
            }
        }
    }
}

/// Adds the answers of the limits and of the `Origin` check, where the operation does not
/// describe them itself.
fn add_common_responses(operation: &mut Operation) {
    let common = [
        (
            "403",
            "The request has an `Origin` header (type `urn:wgmesh:problem:forbidden`).",
        ),
        (
            "408",
            "Not answered within 10 s (type `urn:wgmesh:problem:timeout`).",
        ),
        (
            "500",
            "An internal error; details are in the daemon's log (type `urn:wgmesh:problem:internal`).",
        ),
        (
            "503",
            "Too many requests in flight (type `urn:wgmesh:problem:overloaded`); retry later.",
        ),
    ];
    for (status, description) in common {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| {
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        PROBLEM_CONTENT_TYPE,
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("Problem")))
                            .build(),
                    )
                    .build()
                    .into()
            });
    }
}

/// The document.
pub fn document() -> OpenApi {
    ApiDoc::openapi()
}

/// The document as a JSON value (what [`yaml`] writes and the contract tests validate against).
///
/// # Errors
///
/// When the document cannot be serialized, which would be a bug in its types.
pub fn json() -> serde_json::Result<Value> {
    serde_json::to_value(document())
}

/// The document as YAML: the contents of `openapi.yaml`.
///
/// # Errors
///
/// As [`json`].
pub fn yaml() -> serde_json::Result<String> {
    Ok(to_yaml(&json()?))
}

/// `value` as a YAML document, block style.
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_map(map, 0, &mut out),
        Value::Array(items) if !items.is_empty() => write_seq(items, 0, &mut out),
        scalar => {
            out.push_str(&scalar_text(scalar, 0));
            out.push('\n');
        }
    }
    out
}

fn indent(out: &mut String, depth: usize) {
    out.extend(std::iter::repeat_n("  ", depth));
}

fn write_map(map: &serde_json::Map<String, Value>, depth: usize, out: &mut String) {
    for (key, value) in map {
        indent(out, depth);
        out.push_str(&string_text(key, None));
        out.push(':');
        write_value_after_key(value, depth, out);
    }
}

fn write_seq(items: &[Value], depth: usize, out: &mut String) {
    for item in items {
        indent(out, depth);
        out.push('-');
        match item {
            Value::Object(map) if !map.is_empty() => {
                // The first key on the dash's line, the others aligned under it.
                let mut nested = String::new();
                write_map(map, depth + 1, &mut nested);
                out.push(' ');
                out.push_str(nested.trim_start_matches(' '));
            }
            Value::Array(inner) if !inner.is_empty() => {
                out.push('\n');
                write_seq(inner, depth + 1, out);
            }
            scalar => {
                out.push(' ');
                out.push_str(&scalar_text(scalar, depth + 1));
                out.push('\n');
            }
        }
    }
}

fn write_value_after_key(value: &Value, depth: usize, out: &mut String) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            write_map(map, depth + 1, out);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            write_seq(items, depth + 1, out);
        }
        scalar => {
            out.push(' ');
            out.push_str(&scalar_text(scalar, depth + 1));
            out.push('\n');
        }
    }
}

/// A scalar (or an empty collection) as YAML; multi-line strings become literal blocks indented
/// to `depth`.
fn scalar_text(value: &Value, depth: usize) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string_text(s, Some(depth)),
        Value::Array(_) => "[]".to_owned(),
        Value::Object(_) => "{}".to_owned(),
    }
}

/// A string as YAML: plain when that cannot be misread, a literal block (`|-`) for multi-line
/// text where allowed (`block_depth`), else double-quoted (JSON escapes are valid YAML ones).
fn string_text(s: &str, block_depth: Option<usize>) -> String {
    if is_plain_safe(s) {
        return s.to_owned();
    }
    if let Some(depth) = block_depth.filter(|_| is_block_safe(s)) {
        let mut block = String::from("|-");
        for line in s.split('\n') {
            block.push('\n');
            if !line.is_empty() {
                indent(&mut block, depth);
                block.push_str(line);
            }
        }
        return block;
    }
    // A string always serializes.
    serde_json::to_string(s).unwrap_or_default()
}

/// Whether `s` reads back as the same string when written plain: it starts with a letter or
/// `/`, holds no character that YAML gives a meaning (`:`, `#`, quotes, …), and is no keyword.
fn is_plain_safe(s: &str) -> bool {
    const KEYWORDS: [&str; 11] = [
        "true", "false", "null", "yes", "no", "on", "off", "y", "n", "~", "none",
    ];
    let Some(first) = s.chars().next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == '/')
        && !s.ends_with(' ')
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(
                    c,
                    ' ' | '_' | '-' | '.' | '/' | '{' | '}' | '+' | '(' | ')' | ',' | ';'
                )
        })
        && !KEYWORDS.iter().any(|k| s.eq_ignore_ascii_case(k))
}

/// Whether a multi-line `s` survives a literal block: printable lines without trailing blanks
/// (which some tools strip), not starting with a blank, no trailing newline.
fn is_block_safe(s: &str) -> bool {
    s.contains('\n')
        && !s.starts_with([' ', '\n'])
        && !s.ends_with('\n')
        && s.split('\n').all(|line| {
            !line.ends_with([' ', '\t']) && line.chars().all(|c| !c.is_control() || c == '\t')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed file, next to the workspace's Cargo.toml.
    fn committed_path() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi.yaml")
    }

    #[test]
    fn openapi_yaml_is_the_generated_document() {
        let generated = yaml().unwrap();
        let path = committed_path();
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, &generated).unwrap();
            return;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed != generated {
            let line = committed
                .lines()
                .zip(generated.lines())
                .position(|(a, b)| a != b)
                .map_or_else(
                    || committed.lines().count().min(generated.lines().count()) + 1,
                    |i| i + 1,
                );
            panic!(
                "openapi.yaml differs from the document the handlers and API types generate \
                 (first difference at line {line}); regenerate it with\n  \
                 UPDATE_OPENAPI=1 cargo test -p wgmeshd --lib api::openapi\nand commit it"
            );
        }
    }

    #[test]
    fn the_document_is_openapi_3_1_with_every_route() {
        let doc = json().unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let paths: Vec<&str> = doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        for path in [
            "/v1/status",
            "/v1/health",
            "/v1/peers",
            "/v1/peers/{key}",
            "/v1/events",
            "/v1/reload",
            "/v1/cache/flush",
        ] {
            assert!(paths.contains(&path), "{path} missing from {paths:?}");
        }
    }

    #[test]
    fn strings_are_plain_only_when_yaml_reads_them_back_the_same() {
        // (string, written as)
        let table = [
            ("plain", "plain"),
            ("/v1/peers/{key}", "/v1/peers/{key}"),
            ("application/problem+json", "application/problem+json"),
            ("two words", "two words"),
            ("", "\"\""),
            ("true", "\"true\""),
            ("No", "\"No\""),
            ("null", "\"null\""),
            ("3.1.0", "\"3.1.0\""),
            ("200", "\"200\""),
            ("a: b", "\"a: b\""),
            ("#x", "\"#x\""),
            ("x #y", "\"x #y\""),
            ("-x", "\"-x\""),
            ("trailing ", "\"trailing \""),
            ("quote\"s", "\"quote\\\"s\""),
            ("`code`", "\"`code`\""),
            ("tab\there", "\"tab\\there\""),
        ];
        for (s, want) in table {
            assert_eq!(string_text(s, None), want, "{s:?}");
        }
    }

    #[test]
    fn yaml_layout() {
        let value = serde_json::json!({
            "a": {"b": 1, "c": [true, null]},
            "list": [{"x": "y", "z": {"w": []}}, ["nested"]],
            "empty": {},
            "text": "line one\nline two: with colon\n\nafter a blank",
            "multi in list": ["one\ntwo"],
        });
        let want = "\
a:
  b: 1
  c:
    - true
    - null
list:
  - x: \"y\"
    z:
      w: []
  -
    - nested
empty: {}
text: |-
  line one
  line two: with colon

  after a blank
multi in list:
  - |-
    one
    two
";
        assert_eq!(to_yaml(&value), want);
    }
}
