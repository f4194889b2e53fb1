//! What every daemon command shares: the runtime it runs on, and reading the daemon's answers as
//! API types.

use std::future::Future;
use std::path::Path;

use serde::de::DeserializeOwned;
use wgmesh_api_types::SCHEMA_VERSION;

use crate::Exit;
use crate::client::ClientError;

/// Runs the daemon command `cmd` against the API socket `socket` on a current-thread runtime
/// (one connection at a time is all a command needs).
///
/// # Errors
///
/// What `cmd` returns, and a runtime that cannot start.
pub fn run<'a, F, Fut>(socket: &'a Path, cmd: F) -> anyhow::Result<Exit>
where
    F: FnOnce(&'a Path) -> Fut,
    Fut: Future<Output = anyhow::Result<Exit>> + 'a,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    runtime.block_on(cmd(socket))
}

/// `value` (the body of `request`, e.g. `GET /v1/status`) as the API type `T`. A body that does
/// not fit is an unexpected answer; when it comes from another schema version the message says
/// so, since that is the usual cause (a wgmeshctl of another release than the daemon).
///
/// # Errors
///
/// [`ClientError::Unexpected`] naming the request and what does not fit.
pub fn decode<T: DeserializeOwned>(
    socket: &Path,
    request: &str,
    value: serde_json::Value,
) -> Result<T, ClientError> {
    let version = value
        .get("schema_version")
        .and_then(serde_json::Value::as_u64);
    serde_json::from_value(value).map_err(|e| {
        let what = match version {
            Some(v) if v != u64::from(SCHEMA_VERSION) => format!(
                "{request}: the daemon speaks API schema {v}, this wgmeshctl ({}) speaks \
                 {SCHEMA_VERSION}; use the wgmeshctl of the daemon's release ({e})",
                env!("CARGO_PKG_VERSION")
            ),
            _ => format!("{request}: {e}"),
        };
        ClientError::Unexpected {
            socket: socket.to_owned(),
            what,
        }
    })
}

/// `value` pretty-printed as the `--json` output: the daemon's answer as received (key order
/// kept), plus a newline.
///
/// # Errors
///
/// Never in practice (a `Value` always serializes); kept fallible so no `unwrap` is needed.
pub fn json_text(value: &serde_json::Value) -> anyhow::Result<String> {
    Ok(format!("{}\n", serde_json::to_string_pretty(value)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wgmesh_api_types::Status;

    #[test]
    fn a_body_of_another_schema_version_says_so() {
        let socket = Path::new("/run/wgmesh/wgmeshd.sock");
        let err = decode::<Status>(
            socket,
            "GET /v1/status",
            serde_json::json!({"schema_version": 2, "node": {}}),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("GET /v1/status: the daemon speaks API schema 2, this wgmeshctl"),
            "{text}"
        );
        let err = decode::<Status>(
            socket,
            "GET /v1/status",
            serde_json::json!({"schema_version": 1}),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("GET /v1/status: missing field"),
            "{err}"
        );
    }
}
