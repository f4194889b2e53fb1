//! Blocking reads of a daemon's control API, for tests: the CLI's own client
//! (`wgmeshctl::client`) on a throwaway current-thread runtime, so tests read the API exactly as
//! `wgmeshctl` does.
//!
//! Do not call these from inside a tokio runtime (they start their own).

use std::path::Path;

use anyhow::Context as _;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// `GET path` on the daemon at `socket`: the JSON body of a 2xx answer.
///
/// # Errors
///
/// The client's error (daemon unreachable, no answer within `wgmeshctl::client::TIMEOUT`, a
/// problem document, a body that is not JSON), naming the socket and the path.
pub fn get_json(socket: &Path, path: &str) -> anyhow::Result<Value> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a runtime for the API client")?;
    runtime
        .block_on(wgmeshctl::client::get_json(socket, path))
        .with_context(|| format!("GET {path}"))
}

/// `GET path` on the daemon at `socket`, parsed as `T` (an API type of `wgmesh-api-types`), so
/// an answer that does not match the type fails the test.
///
/// # Errors
///
/// As [`get_json`], and when the body does not parse as `T`.
pub fn get<T: DeserializeOwned>(socket: &Path, path: &str) -> anyhow::Result<T> {
    let body = get_json(socket, path)?;
    serde_json::from_value(body).with_context(|| {
        format!(
            "GET {path} on {}: the body does not match {}",
            socket.display(),
            std::any::type_name::<T>()
        )
    })
}
