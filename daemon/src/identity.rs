//! The node's identity: its WireGuard key pair and mesh addresses, persisted at
//! `<state-dir>/<iface>.json` with Go wgmesh's JSON keys so a Go node's file loads unchanged.
//!
//! Rules (reference daemon-behaviour §4): the key pair is created once and kept forever; a stored
//! `mesh_ip` is kept while it lies inside the mesh subnet (so an address survives secret rotation)
//! and re-derived otherwise; `mesh_ipv6` is kept while inside the mesh /64 and derived otherwise.
//! Unlike Go, an unreadable or corrupt file is an error that names the file: silently replacing it
//! would give the node a new key, i.e. a new identity.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::config::{InterfaceName, MeshSecret, MeshSubnet};
use crate::crypto::{DerivedKeys, legacy_subnet, mesh_ipv4, mesh_ipv6};
use crate::keys::{PrivateKey, PublicKey};
use crate::system::fs::{FsError, ensure_private_dir, owner_uid, read_private, write_atomic};
use crate::wire::decode_wg_key;

/// Default directory of state files.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/wgmesh";
/// Mode of the state directory when we create it.
const DIR_MODE: u32 = 0o700;
/// Mode of the state file.
const FILE_MODE: u32 = 0o600;

/// The state file as Go writes it (2-space indented JSON, these keys, in this order).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFile {
    /// Base64 public key.
    pub wg_pubkey: String,
    /// Base64 private key.
    pub wg_private_key: String,
    /// Persisted mesh IPv4 (omitted when empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mesh_ip: String,
    /// Persisted mesh IPv6 (omitted when empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mesh_ipv6: String,
}

impl Drop for StateFile {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.wg_private_key);
    }
}

impl fmt::Debug for StateFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateFile")
            .field("wg_pubkey", &self.wg_pubkey)
            .field("wg_private_key", &"<redacted>")
            .field("mesh_ip", &self.mesh_ip)
            .field("mesh_ipv6", &self.mesh_ipv6)
            .finish()
    }
}

/// A loaded identity. `Debug` never shows the private key; not `Clone` (one copy of the key).
pub struct Identity {
    /// The node's private key.
    pub private_key: PrivateKey,
    /// The node's WireGuard public key (its name in the mesh).
    pub public_key: PublicKey,
    /// Mesh IPv4 address.
    pub mesh_ip: Ipv4Addr,
    /// Mesh IPv6 address.
    pub mesh_ipv6: Ipv6Addr,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("public_key", &self.public_key)
            .field("mesh_ip", &self.mesh_ip)
            .field("mesh_ipv6", &self.mesh_ipv6)
            .finish_non_exhaustive()
    }
}

/// What loading did, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadOutcome {
    /// No state file existed; a new key pair was created and saved.
    Created,
    /// The file was used as it was.
    Loaded,
    /// The key pair was kept; these address fields were (re-)derived and saved.
    Updated(Vec<&'static str>),
}

/// Why the identity could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading, creating or writing failed.
    #[error(transparent)]
    Io(#[from] FsError),
    /// The state directory can be written by other users, who could replace or redirect the
    /// private key; nothing is written there.
    #[error(
        "refusing to keep the private key in {}: {why}; fix it or choose another --state-dir",
        dir.display()
    )]
    UnsafeDirectory {
        /// The state directory.
        dir: PathBuf,
        /// What is wrong and how to fix it (e.g. "writable by group (mode 775): chmod go-w").
        why: String,
    },
    /// The file exists but its contents are not a usable identity. Never replaced automatically.
    #[error(
        "state file {} is corrupt ({reason}); it holds this node's private key, so it is not replaced automatically: repair it, or move it away to start as a new node",
        path.display()
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong (never key material).
        reason: String,
    },
    /// The OS random generator failed.
    #[error("cannot generate a key: OS random generator failed: {0}")]
    Random(getrandom::Error),
}

/// Where the identity of `iface` lives.
pub fn state_file_path(state_dir: &Path, iface: &InterfaceName) -> PathBuf {
    state_dir.join(format!("{}.json", iface.as_str()))
}

/// The mesh this node is in: what address derivation needs.
#[derive(Debug, Clone, Copy)]
pub struct MeshParams<'a> {
    /// The secret.
    pub secret: &'a MeshSecret,
    /// Values derived from it.
    pub keys: &'a DerivedKeys,
    /// `--mesh-subnet`, if given.
    pub custom_subnet: Option<&'a MeshSubnet>,
}

impl MeshParams<'_> {
    fn ipv4_in_subnet(&self, ip: Ipv4Addr) -> bool {
        match self.custom_subnet {
            Some(s) => s.contains(ip),
            None => legacy_subnet(self.keys).contains(&ip),
        }
    }

    fn ipv6_in_prefix(&self, ip: Ipv6Addr) -> bool {
        ip.octets()[..8] == self.keys.mesh_prefix_v6
    }
}

/// Decides the addresses for a stored identity: keep what is still inside this mesh's ranges,
/// derive the rest. Returns the addresses and which fields changed. Pure.
pub fn plan_addresses(
    stored_ipv4: &str,
    stored_ipv6: &str,
    pubkey: &str,
    mesh: &MeshParams<'_>,
) -> (Ipv4Addr, Ipv6Addr, Vec<&'static str>) {
    let mut changed = Vec::new();
    let v4 = match stored_ipv4.parse::<Ipv4Addr>() {
        Ok(ip) if mesh.ipv4_in_subnet(ip) => ip,
        _ => {
            changed.push("mesh_ip");
            mesh_ipv4(mesh.keys, mesh.secret, pubkey, mesh.custom_subnet)
        }
    };
    let v6 = match stored_ipv6.parse::<Ipv6Addr>() {
        Ok(ip) if mesh.ipv6_in_prefix(ip) => ip,
        _ => {
            changed.push("mesh_ipv6");
            mesh_ipv6(mesh.keys, mesh.secret, pubkey)
        }
    };
    (v4, v6, changed)
}

/// Creates the state directory (0700) if needed and checks that nobody but its owner can write
/// to it: a directory writable by others is refused ([`IdentityError::UnsafeDirectory`]); one
/// readable by others is only warned about (the files themselves are 0600).
///
/// # Errors
///
/// The directory cannot be created or inspected, or it is writable by group or others.
pub fn check_state_dir(state_dir: &Path) -> Result<(), IdentityError> {
    let dir_mode = ensure_private_dir(state_dir, DIR_MODE)?;
    let owner = owner_uid(state_dir)?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let unsafe_dir = |why: String| IdentityError::UnsafeDirectory {
        dir: state_dir.to_owned(),
        why,
    };
    let who = match (dir_mode & 0o020 != 0, dir_mode & 0o002 != 0) {
        (true, true) => Some("group and others"),
        (true, false) => Some("group"),
        // Sticky and world-writable (like /tmp) still lets others plant files and names.
        (false, true) => Some("others"),
        (false, false) => None,
    };
    if let Some(who) = who {
        return Err(unsafe_dir(format!(
            "the directory is writable by {who} (mode {dir_mode:o}; run `chmod go-w` on it)"
        )));
    }
    if owner != me && owner != 0 {
        return Err(unsafe_dir(format!(
            "the directory belongs to uid {owner}, who could change it (run `chown {me}` on it)"
        )));
    }
    if dir_mode & 0o055 != 0 {
        tracing::warn!(
            dir = %state_dir.display(),
            mode = format!("{dir_mode:o}"),
            "state directory is readable by other users; it holds private keys (chmod 700 it)"
        );
    }
    Ok(())
}

/// Loads the identity of `iface` from `state_dir`, creating it on first use, and saves any
/// address that had to be (re-)derived.
pub fn load_or_create(
    state_dir: &Path,
    iface: &InterfaceName,
    mesh: &MeshParams<'_>,
) -> Result<(Identity, LoadOutcome), IdentityError> {
    check_state_dir(state_dir)?;
    load_or_create_in_checked_dir(state_dir, iface, mesh)
}

/// [`load_or_create`] for a caller that already ran [`check_state_dir`] (the daemon, which
/// checks the directory before it takes its lock there).
///
/// # Errors
///
/// As [`load_or_create`], without the directory checks.
pub fn load_or_create_in_checked_dir(
    state_dir: &Path,
    iface: &InterfaceName,
    mesh: &MeshParams<'_>,
) -> Result<(Identity, LoadOutcome), IdentityError> {
    let path = state_file_path(state_dir, iface);
    match read_private(&path) {
        Ok(bytes) => load_existing(&path, &bytes, mesh),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(&path, mesh),
        Err(source) => Err(FsError {
            op: "read",
            path,
            source,
        }
        .into()),
    }
}

fn load_existing(
    path: &Path,
    bytes: &[u8],
    mesh: &MeshParams<'_>,
) -> Result<(Identity, LoadOutcome), IdentityError> {
    warn_if_loose(path);
    let corrupt = |reason: String| IdentityError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let state: StateFile = serde_json::from_slice(bytes).map_err(|e| {
        // serde_json's message may quote a fragment of the input, which could be key material:
        // report only the position.
        corrupt(format!(
            "not valid state JSON at line {} column {}",
            e.line(),
            e.column()
        ))
    })?;
    let private_key = PrivateKey::from_bytes(
        decode_wg_key(&state.wg_private_key)
            .map_err(|e| corrupt(format!("wg_private_key: {e}")))?,
    );
    let public_key = private_key.public_key();
    let public_text = public_key.to_string();
    if !state.wg_pubkey.is_empty() && state.wg_pubkey != public_text {
        return Err(corrupt("wg_pubkey does not match wg_private_key".into()));
    }
    let (mesh_ip, mesh_ipv6, changed) =
        plan_addresses(&state.mesh_ip, &state.mesh_ipv6, &public_text, mesh);
    let identity = Identity {
        private_key,
        public_key,
        mesh_ip,
        mesh_ipv6,
    };
    let outcome = if changed.is_empty() && !state.wg_pubkey.is_empty() {
        LoadOutcome::Loaded
    } else {
        save(path, &identity)?;
        LoadOutcome::Updated(changed)
    };
    Ok((identity, outcome))
}

fn create(path: &Path, mesh: &MeshParams<'_>) -> Result<(Identity, LoadOutcome), IdentityError> {
    let mut key = Zeroizing::new([0u8; 32]);
    getrandom::getrandom(key.as_mut()).map_err(IdentityError::Random)?;
    // Clamp as `wg genkey` does, so the stored key is byte-identical to what wg tools show.
    key[0] &= 248;
    key[31] &= 127;
    key[31] |= 64;
    let private_key = PrivateKey::from_bytes(*key);
    let public_key = private_key.public_key();
    let (mesh_ip, mesh_ipv6, _) = plan_addresses("", "", &public_key.to_string(), mesh);
    let identity = Identity {
        private_key,
        public_key,
        mesh_ip,
        mesh_ipv6,
    };
    save(path, &identity)?;
    Ok((identity, LoadOutcome::Created))
}

/// Writes the identity atomically (temp file, fsync, rename, fsync directory), mode 0600.
pub fn save(path: &Path, identity: &Identity) -> Result<(), IdentityError> {
    save_parts(
        path,
        &identity.private_key,
        identity.public_key,
        identity.mesh_ip,
        identity.mesh_ipv6,
    )
}

/// [`save`] from the parts of an identity (the daemon keeps its private key apart, e.g. when a
/// collision moves it to a new mesh IP).
///
/// # Errors
///
/// The file cannot be written.
pub fn save_parts(
    path: &Path,
    private_key: &PrivateKey,
    public_key: PublicKey,
    mesh_ip: Ipv4Addr,
    mesh_ipv6: Ipv6Addr,
) -> Result<(), IdentityError> {
    let state = StateFile {
        wg_pubkey: public_key.to_string(),
        wg_private_key: private_key.to_base64().to_string(),
        mesh_ip: mesh_ip.to_string(),
        mesh_ipv6: mesh_ipv6.to_string(),
    };
    let mut text = Zeroizing::new(
        serde_json::to_vec_pretty(&state)
            .unwrap_or_else(|_| unreachable!("a struct of strings serialises")),
    );
    text.push(b'\n');
    write_atomic(path, &text, FILE_MODE)?;
    Ok(())
}

fn warn_if_loose(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                file = %path.display(),
                mode = format!("{mode:o}"),
                "state file holding the private key is readable by other users (chmod 600 it)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;
    use crate::config::SecretOrigin;

    fn encode_key(bytes: &[u8; 32]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    struct Mesh {
        secret: MeshSecret,
        keys: DerivedKeys,
    }

    fn mesh(s: &str) -> Mesh {
        let secret = MeshSecret::parse(s, SecretOrigin::Literal).unwrap();
        let keys = DerivedKeys::derive(&secret);
        Mesh { secret, keys }
    }

    impl Mesh {
        fn params<'a>(&'a self, custom: Option<&'a MeshSubnet>) -> MeshParams<'a> {
            MeshParams {
                secret: &self.secret,
                keys: &self.keys,
                custom_subnet: custom,
            }
        }
    }

    fn wg0() -> InterfaceName {
        "wg0".parse().unwrap()
    }

    #[test]
    fn create_then_load_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        let m = mesh("test-secret-0123456789");
        let (a, outcome) = load_or_create(dir.path(), &wg0(), &m.params(None)).unwrap();
        assert_eq!(outcome, LoadOutcome::Created);
        assert!(legacy_subnet(&m.keys).contains(&a.mesh_ip));
        let (b, outcome) = load_or_create(dir.path(), &wg0(), &m.params(None)).unwrap();
        assert_eq!(outcome, LoadOutcome::Loaded);
        assert_eq!(a.public_key, b.public_key);
        assert_eq!(a.private_key, b.private_key);
        assert_eq!((a.mesh_ip, a.mesh_ipv6), (b.mesh_ip, b.mesh_ipv6));
        let path = state_file_path(dir.path(), &wg0());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("{\n  \"wg_pubkey\": "), "{text}");
        assert!(!format!("{a:?}").contains(a.private_key.to_base64().as_str()));
    }

    #[test]
    fn go_state_file_without_addresses_loads_and_gains_them() {
        let dir = tempfile::tempdir().unwrap();
        let m = mesh("test-secret-0123456789");
        // A key pair in Go's format (no mesh_ip / mesh_ipv6, as older Go versions wrote).
        let secret = PrivateKey::from_bytes([7u8; 32]);
        let public = secret.public_key().to_string();
        let go = format!(
            "{{\n  \"wg_pubkey\": \"{public}\",\n  \"wg_private_key\": \"{}\"\n}}",
            encode_key(secret.expose_secret())
        );
        std::fs::write(state_file_path(dir.path(), &wg0()), go).unwrap();
        let (id, outcome) = load_or_create(dir.path(), &wg0(), &m.params(None)).unwrap();
        assert_eq!(outcome, LoadOutcome::Updated(vec!["mesh_ip", "mesh_ipv6"]));
        assert_eq!(id.public_key.to_string(), public);
        assert_eq!(id.mesh_ip, mesh_ipv4(&m.keys, &m.secret, &public, None));
    }

    #[test]
    fn addresses_survive_rotation_only_while_inside_the_mesh() {
        let m = mesh("test-secret-0123456789");
        let custom: MeshSubnet = "192.168.100.0/24".parse().unwrap();
        let pk = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        let v6 = "fd9d:af5d:d5d0:b3c7::1234";
        // Inside: kept even though it is not the derived address (rotation, collision).
        let (v4, six, changed) = plan_addresses("10.78.1.2", v6, pk, &m.params(None));
        assert_eq!(
            (v4.to_string(), six.to_string(), changed.len()),
            ("10.78.1.2".into(), v6.into(), 0)
        );
        // Outside the legacy /16 or the custom subnet: re-derived.
        let (v4, _, changed) = plan_addresses("10.79.1.2", v6, pk, &m.params(None));
        assert_eq!(
            (v4.to_string(), changed),
            ("10.78.54.191".into(), vec!["mesh_ip"])
        );
        let (v4, _, _) = plan_addresses("10.78.1.2", v6, pk, &m.params(Some(&custom)));
        assert_eq!(v4.to_string(), "192.168.100.84");
        // IPv6 outside the mesh /64 (secret changed) is re-derived; garbage too.
        let (_, six, changed) = plan_addresses("10.78.1.2", "fd00::1", pk, &m.params(None));
        assert_eq!(
            (six, changed),
            (mesh_ipv6(&m.keys, &m.secret, pk), vec!["mesh_ipv6"])
        );
        let (_, _, changed) = plan_addresses("junk", "junk", pk, &m.params(None));
        assert_eq!(changed, vec!["mesh_ip", "mesh_ipv6"]);
    }

    #[test]
    fn corrupt_files_are_errors_and_left_untouched() {
        let m = mesh("test-secret-0123456789");
        let valid = PrivateKey::from_bytes([7u8; 32]);
        let cases = [
            ("", "not valid state JSON"),
            ("{\"wg_pubkey\": \"x\", \"wg_priv", "not valid state JSON"),
            ("{\"wg_pubkey\": \"x\"}", "not valid state JSON"),
            (
                "{\"wg_pubkey\": \"x\", \"wg_private_key\": \"short\"}",
                "wg_private_key",
            ),
            (
                &*format!(
                    "{{\"wg_pubkey\": \"{}\", \"wg_private_key\": \"{}\"}}",
                    encode_key(&[1; 32]),
                    encode_key(valid.expose_secret())
                ),
                "does not match",
            ),
        ];
        for (contents, reason) in cases {
            let dir = tempfile::tempdir().unwrap();
            let path = state_file_path(dir.path(), &wg0());
            std::fs::write(&path, contents).unwrap();
            let err = load_or_create(dir.path(), &wg0(), &m.params(None)).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(text.contains(reason), "{contents:?}: {text}");
            assert!(!text.contains(&encode_key(valid.expose_secret())), "{text}");
            assert_eq!(std::fs::read_to_string(&path).unwrap(), contents);
        }
    }

    #[test]
    fn unreadable_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let m = mesh("test-secret-0123456789");
        // A directory where the file should be: reading fails with something other than ENOENT.
        std::fs::create_dir(state_file_path(dir.path(), &wg0())).unwrap();
        let err = load_or_create(dir.path(), &wg0(), &m.params(None)).unwrap_err();
        assert!(err.to_string().contains("wg0.json"), "{err}");
    }

    #[test]
    fn a_state_directory_others_can_write_is_refused_and_nothing_is_written() {
        use std::os::unix::fs::PermissionsExt;
        let m = mesh("test-secret-0123456789");
        for mode in [0o770, 0o707, 0o1777] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).unwrap();
            let err = load_or_create(dir.path(), &wg0(), &m.params(None)).unwrap_err();
            assert!(
                matches!(err, IdentityError::UnsafeDirectory { .. }),
                "{err}"
            );
            let text = err.to_string();
            assert!(text.contains(&dir.path().display().to_string()), "{text}");
            assert!(text.contains("writable by"), "{text}");
            assert_eq!(
                std::fs::read_dir(dir.path()).unwrap().count(),
                0,
                "{mode:o}"
            );
        }
        // Readable by others is only a warning.
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(load_or_create(dir.path(), &wg0(), &m.params(None)).is_ok());
    }
}
