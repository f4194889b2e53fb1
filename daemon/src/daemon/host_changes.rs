//! What an introducer changed on the host, written down before it changes it, so that a run
//! that dies without its teardown (SIGKILL, power loss) does not lose the operator's settings.
//!
//! The record `<state-dir>/<iface>.host-changes.json` holds the forwarding switches as they were
//! before the first introducer run changed them. It is written (atomically) before forwarding is
//! switched on and removed after the teardown restored them. At start, an existing record means
//! the last run did not clean up: an introducer keeps the recorded values as the ones to restore
//! (the switches it finds are its own leftovers); a node that is no longer an introducer restores
//! them and removes the firewall rules left behind at once.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::InterfaceName;
use crate::system::fs::{FsError, read_private, write_atomic};
use crate::system::net::ForwardingState;

/// Format version of the record (the file is ours, not Go's).
const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Record {
    version: u32,
    ipv4_forwarding: bool,
    ipv6_forwarding: Option<bool>,
}

/// Where the record of `iface` lives.
pub fn record_path(state_dir: &Path, iface: &InterfaceName) -> PathBuf {
    state_dir.join(format!("{}.host-changes.json", iface.as_str()))
}

/// The forwarding state recorded by a run that did not clean up, if any.
///
/// # Errors
///
/// The file exists but cannot be read or is not a record of this version (the message names it).
pub fn load(path: &Path) -> Result<Option<ForwardingState>, String> {
    let bytes = match read_private(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let record: Record = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} is not a host-changes record: {e}", path.display()))?;
    if record.version != VERSION {
        return Err(format!(
            "{} has version {}, expected {VERSION}",
            path.display(),
            record.version
        ));
    }
    Ok(Some(ForwardingState {
        ipv4: record.ipv4_forwarding,
        ipv6: record.ipv6_forwarding,
    }))
}

/// Records `original` as the forwarding state to restore.
///
/// # Errors
///
/// The write failed (the message names the file).
pub fn save(path: &Path, original: ForwardingState) -> Result<(), FsError> {
    let record = Record {
        version: VERSION,
        ipv4_forwarding: original.ipv4,
        ipv6_forwarding: original.ipv6,
    };
    let mut text = serde_json::to_vec_pretty(&record)
        .unwrap_or_else(|_| unreachable!("a struct of plain values serialises"));
    text.push(b'\n');
    write_atomic(path, &text, 0o600)
}

/// Removes the record once the host is back as it was; gone already is fine.
pub fn remove(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot remove the host-changes record")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_bad_ones_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = record_path(dir.path(), &"wg0".parse().unwrap());
        assert_eq!(load(&path), Ok(None));
        let original = ForwardingState {
            ipv4: false,
            ipv6: Some(true),
        };
        save(&path, original).unwrap();
        assert_eq!(load(&path), Ok(Some(original)));
        remove(&path);
        remove(&path);
        assert_eq!(load(&path), Ok(None));
        for bad in [
            "",
            "{\"version\":9,\"ipv4_forwarding\":true,\"ipv6_forwarding\":null}",
        ] {
            std::fs::write(&path, bad).unwrap();
            let err = load(&path).unwrap_err();
            assert!(err.contains("wg0.host-changes.json"), "{err}");
        }
    }
}
