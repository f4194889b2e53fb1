//! `GET /v1/events`: a stream of what happens in the daemon from the moment of the request on.
//!
//! - By default `application/x-ndjson`: one [`Event`] as JSON per line. An empty line is a
//!   keep-alive (sent when nothing happened for a while, so a dead client is noticed); skip it.
//! - With `Accept: text/event-stream`, server-sent events: each [`Event`] as `id: <seq>` and
//!   `data: <json>` lines followed by an empty line; keep-alives are comment lines (`:`).
//!
//! The stream ends (cleanly) when the daemon stops. A client that reads too slowly misses events
//! and is told so by an [`EventKind::Lagged`] event in their place.

use serde::{Deserialize, Serialize};

use crate::control::{ReloadChanges, ReloadSource};

/// One event. `seq` increases by one per event the daemon emits, so a gap means missed events
/// (a [`EventKind::Lagged`] event also says so, and carries the `seq` of the last event it
/// stands for).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Event {
    /// Schema version of this body.
    pub schema_version: u32,
    /// Sequence number.
    pub seq: u64,
    /// When it happened, milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// A peer was learned for the first time.
    PeerAdded {
        /// Its key.
        public_key: String,
        /// Its hostname (may be empty).
        hostname: String,
        /// How it was learned (`lan`, `cache`, …).
        via: String,
    },
    /// What is known about a peer changed (endpoint, addresses, routes, …).
    PeerChanged {
        /// Its key.
        public_key: String,
    },
    /// A peer's state changed (`active`, `cached`, `quarantined`, `dead`).
    PeerState {
        /// Its key.
        public_key: String,
        /// The state before.
        from: String,
        /// The state now.
        to: String,
    },
    /// A peer was forgotten.
    PeerRemoved {
        /// Its key.
        public_key: String,
    },
    /// A reconcile pass changed the device.
    Reconciled {
        /// Peers added.
        added: usize,
        /// Peers changed.
        updated: usize,
        /// Peers removed.
        removed: usize,
        /// Peer changes refused.
        failed: usize,
        /// How long the pass took, in milliseconds.
        duration_ms: u64,
    },
    /// Settings were reloaded.
    Reloaded {
        /// Where they came from.
        source: ReloadSource,
        /// What changed.
        changed: ReloadChanges,
    },
    /// A discovery layer changed state.
    LayerState {
        /// The layer (`lan`, …).
        layer: String,
        /// `running`, `retrying` or `off`.
        state: String,
        /// Its last error, if retrying.
        error: Option<String>,
    },
    /// A task changed state.
    TaskState {
        /// The task.
        task: String,
        /// `running`, `restarting`, `stopped` or `failed`.
        state: String,
        /// Its last error, if it failed.
        error: Option<String>,
    },
    /// The peer cache was written.
    CacheFlushed {
        /// The file.
        path: String,
        /// How many peers it holds.
        peers: usize,
    },
    /// This stream fell behind and skipped events.
    Lagged {
        /// How many.
        missed: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SCHEMA_VERSION;

    #[test]
    fn events_are_flat_json_tagged_by_type() {
        let e = Event {
            schema_version: SCHEMA_VERSION,
            seq: 7,
            unix_ms: 1_700_000_000_000,
            kind: EventKind::PeerState {
                public_key: "k".into(),
                from: "cached".into(),
                to: "active".into(),
            },
        };
        let text = serde_json::to_string(&e).unwrap();
        assert_eq!(
            text,
            r#"{"schema_version":1,"seq":7,"unix_ms":1700000000000,"type":"peer_state","public_key":"k","from":"cached","to":"active"}"#
        );
        assert_eq!(serde_json::from_str::<Event>(&text).unwrap(), e);
    }
}
