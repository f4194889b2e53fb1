//! The cache file as Go wgmesh writes it (`pkg/daemon/cache.go`, reference daemon-behaviour §10):
//! its JSON keys, loading and atomic saving. Nothing here decides what goes in or comes out.
//!
//! Reading is as lenient as Go's `encoding/json`: unknown keys are ignored, a missing key or a
//! `null` is the zero value, `peers` may be `null`. Writing uses exactly Go's keys and `omitempty`
//! set, 2-space indented, so a Go node loads our file and we load a Go node's. An empty list is
//! written as `[]` where Go writes `null`; both read the same on either side.

use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::system::fs::{FsError, read_private, write_atomic};
use crate::wire::gojson::{is_false, null_as_default};

/// Mode of the cache file (Go: 0600; it lists the mesh's members and where they are).
pub const FILE_MODE: u32 = 0o600;

/// The whole file: `{"peers": [...], "updated_at": <unix s>}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheFile {
    /// The cached peers (Go writes `null` for none).
    #[serde(default, deserialize_with = "null_as_default")]
    pub peers: Vec<CacheEntry>,
    /// When the file was written, unix seconds. Informational: each entry carries its own age.
    #[serde(default, deserialize_with = "null_as_default")]
    pub updated_at: i64,
}

/// One peer, as Go's `CachedPeer`. Strings stay strings here: whether an entry is usable is
/// decided on restore, per entry, so one bad entry never costs the others.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// Standard base64 WireGuard public key.
    #[serde(default, deserialize_with = "null_as_default")]
    pub wg_pubkey: String,
    /// Host name the peer announced.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub hostname: String,
    /// Mesh IPv4 (always written, `""` when unknown, as Go).
    #[serde(default, deserialize_with = "null_as_default")]
    pub mesh_ip: String,
    /// Mesh IPv6.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub mesh_ipv6: String,
    /// `ip:port` or `[ipv6]:port` (always written, `""` when unknown, as Go).
    #[serde(default, deserialize_with = "null_as_default")]
    pub endpoint: String,
    /// The peer is an introducer.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "is_false"
    )]
    pub introducer: bool,
    /// Networks the peer routes for, as CIDR strings.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub routable_networks: Vec<String>,
    /// `cone`, `symmetric` or `unknown`.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub nat_type: String,
    /// When the peer was last seen, unix seconds.
    #[serde(default, deserialize_with = "null_as_default")]
    pub last_seen: i64,
}

/// Why the cache could not be read or written. Every variant names the file; none quotes its
/// contents.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The file exists but cannot be read (permissions, a symlink at its name, a directory, …).
    #[error("cannot read the peer cache {}: {source}", path.display())]
    Read {
        /// The cache file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The file is not cache JSON. Only the position and the kind of damage are reported.
    #[error("the peer cache {} is corrupt ({what} at line {line}, column {column})", path.display())]
    Corrupt {
        /// The cache file.
        path: PathBuf,
        /// `invalid JSON`, `truncated JSON` or `unexpected structure`.
        what: &'static str,
        /// Line of the first error.
        line: usize,
        /// Column of the first error.
        column: usize,
    },
    /// Writing the new file failed (the old one, if any, is untouched).
    #[error("cannot write the peer cache {}: {source}", path.display())]
    Write {
        /// The cache file.
        path: PathBuf,
        /// The failing step, naming the file it was working on.
        #[source]
        source: FsError,
    },
    /// The blocking save or load did not run to its end (the runtime is shutting down).
    #[error("the peer cache {} was not {op}: {detail}", path.display())]
    Interrupted {
        /// The cache file.
        path: PathBuf,
        /// `read` or `written`.
        op: &'static str,
        /// Why.
        detail: String,
    },
}

/// Reads the cache at `path`; `Ok(None)` when there is none yet. Blocking.
///
/// # Errors
///
/// [`CacheError::Read`] when the file exists but cannot be read, [`CacheError::Corrupt`] when it
/// is not cache JSON.
pub fn load(path: &Path) -> Result<Option<CacheFile>, CacheError> {
    let bytes = match read_private(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CacheError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        // serde_json's message quotes the offending value: report only where and what kind.
        let what = match e.classify() {
            serde_json::error::Category::Eof => "truncated JSON",
            serde_json::error::Category::Data => "unexpected structure",
            serde_json::error::Category::Syntax | serde_json::error::Category::Io => "invalid JSON",
        };
        CacheError::Corrupt {
            path: path.to_owned(),
            what,
            line: e.line(),
            column: e.column(),
        }
    })
}

/// Replaces the cache at `path` with `peers` (atomically, mode 0600), stamped `now`. Blocking.
///
/// # Errors
///
/// [`CacheError::Write`] naming the file; the previous cache is then left as it was.
pub fn save(path: &Path, peers: Vec<CacheEntry>, now: SystemTime) -> Result<(), CacheError> {
    let file = CacheFile {
        peers,
        updated_at: unix_seconds(now),
    };
    let data = encode(&file);
    write_atomic(path, &data, FILE_MODE).map_err(|source| CacheError::Write {
        path: path.to_owned(),
        source,
    })
}

/// The file's bytes: 2-space indented JSON with a final newline (Go's `MarshalIndent` layout).
pub fn encode(file: &CacheFile) -> Vec<u8> {
    // Strings, integers, booleans and vectors serialise into memory infallibly.
    let mut data = serde_json::to_vec_pretty(file)
        .unwrap_or_else(|_| unreachable!("the cache file serialises infallibly"));
    data.push(b'\n');
    data
}

/// Unix seconds of `t` (0 before 1970).
pub fn unix_seconds(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;
    use std::time::Duration;

    use super::*;

    const KEY_A: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
    const KEY_B: &str = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";

    /// A cache as Go's `json.MarshalIndent(cache, "", "  ")` writes it, built from the documented
    /// keys: a full entry, a minimal one (every `omitempty` key absent) and an unknown key.
    const GO_SAMPLE: &str = r#"{
  "peers": [
    {
      "wg_pubkey": "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=",
      "hostname": "alpha",
      "mesh_ip": "10.42.1.7",
      "mesh_ipv6": "fd12:3456:789a:bcde::7",
      "endpoint": "192.168.1.20:51820",
      "introducer": true,
      "routable_networks": [
        "192.168.50.0/24"
      ],
      "nat_type": "cone",
      "last_seen": 1700000000
    },
    {
      "wg_pubkey": "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=",
      "mesh_ip": "10.42.9.9",
      "endpoint": "",
      "last_seen": 1699999000,
      "latency_ms": 12
    }
  ],
  "updated_at": 1700000100
}
"#;

    fn full_entry() -> CacheEntry {
        CacheEntry {
            wg_pubkey: KEY_A.into(),
            hostname: "alpha".into(),
            mesh_ip: "10.42.1.7".into(),
            mesh_ipv6: "fd12:3456:789a:bcde::7".into(),
            endpoint: "192.168.1.20:51820".into(),
            introducer: true,
            routable_networks: vec!["192.168.50.0/24".into()],
            nat_type: "cone".into(),
            last_seen: 1_700_000_000,
        }
    }

    fn minimal_entry() -> CacheEntry {
        CacheEntry {
            wg_pubkey: KEY_B.into(),
            mesh_ip: "10.42.9.9".into(),
            last_seen: 1_699_999_000,
            ..CacheEntry::default()
        }
    }

    #[test]
    fn a_go_written_cache_loads_and_unknown_keys_are_ignored() {
        let file: CacheFile = serde_json::from_str(GO_SAMPLE).unwrap();
        assert_eq!(file.peers, [full_entry(), minimal_entry()]);
        assert_eq!(file.updated_at, 1_700_000_100);
    }

    #[test]
    fn written_as_go_writes_it() {
        let file = CacheFile {
            peers: vec![full_entry(), minimal_entry()],
            updated_at: 1_700_000_100,
        };
        // Go's layout minus the unknown key the sample carries.
        let want = GO_SAMPLE.replace(",\n      \"latency_ms\": 12", "");
        assert_eq!(String::from_utf8(encode(&file)).unwrap(), want);
    }

    #[test]
    fn lenient_reads_table() {
        #[rustfmt::skip]
        let rows: [(&str, &str, CacheFile); 6] = [
            ("null peers (Go's empty store)", r#"{"peers":null,"updated_at":5}"#,
                CacheFile { peers: vec![], updated_at: 5 }),
            ("empty list", r#"{"peers":[],"updated_at":5}"#,
                CacheFile { peers: vec![], updated_at: 5 }),
            ("no keys at all", "{}", CacheFile::default()),
            ("null fields are zero values",
                r#"{"peers":[{"wg_pubkey":"k","hostname":null,"routable_networks":null,"introducer":null,"last_seen":null}]}"#,
                CacheFile { peers: vec![CacheEntry { wg_pubkey: "k".into(), ..CacheEntry::default() }], updated_at: 0 }),
            ("unknown top-level key", r#"{"peers":[],"updated_at":1,"version":3}"#,
                CacheFile { peers: vec![], updated_at: 1 }),
            ("unknown entry key", r#"{"peers":[{"wg_pubkey":"k","latency":1.5,"discovered_via":["lan"]}]}"#,
                CacheFile { peers: vec![CacheEntry { wg_pubkey: "k".into(), ..CacheEntry::default() }], updated_at: 0 }),
        ];
        for (case, text, want) in rows {
            let got: CacheFile =
                serde_json::from_str(text).unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(got, want, "{case}");
        }
    }

    #[test]
    fn save_then_load_round_trips_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wg0-peers.json");
        assert!(
            load(&path).unwrap().is_none(),
            "missing file is not an error"
        );
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_100);
        save(&path, vec![full_entry(), minimal_entry()], now).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let file = load(&path).unwrap().unwrap();
        assert_eq!(file.peers, [full_entry(), minimal_entry()]);
        assert_eq!(file.updated_at, 1_700_000_100);
        save(&path, vec![], now).unwrap();
        assert_eq!(load(&path).unwrap().unwrap().peers, []);
    }

    #[test]
    fn damaged_files_are_errors_naming_the_file_never_quoting_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wg0-peers.json");
        #[rustfmt::skip]
        let rows: [(&str, &[u8], &str); 5] = [
            ("garbage", b"SECRETGARBAGE", "invalid JSON"),
            ("truncated by a non-atomic writer", br#"{"peers":[{"wg_pubkey":"SECRETKEY"#, "truncated JSON"),
            ("wrong type", br#"{"peers":[{"last_seen":"SECRETVALUE"}]}"#, "unexpected structure"),
            ("peers not a list", br#"{"peers":{"SECRETKEY":1}}"#, "unexpected structure"),
            ("empty file", b"", "truncated JSON"),
        ];
        for (case, bytes, what) in rows {
            std::fs::write(&path, bytes).unwrap();
            let err = load(&path).expect_err(case);
            let text = err.to_string();
            assert!(matches!(err, CacheError::Corrupt { .. }), "{case}: {err:?}");
            assert!(text.contains(&path.display().to_string()), "{case}: {text}");
            assert!(text.contains(what), "{case}: {text}");
            assert!(
                !text.contains("SECRET"),
                "{case}: quotes the contents: {text}"
            );
        }
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        let err = load(&path).unwrap_err();
        assert!(matches!(err, CacheError::Read { .. }), "{err:?}");
        assert!(err.to_string().contains("wg0-peers.json"), "{err}");
    }

    #[test]
    fn a_failed_write_names_the_file_and_keeps_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone").join("wg0-peers.json");
        let err = save(&path, vec![full_entry()], SystemTime::now()).unwrap_err();
        assert!(matches!(err, CacheError::Write { .. }), "{err:?}");
        assert!(err.to_string().contains("wg0-peers.json"), "{err}");
    }
}
