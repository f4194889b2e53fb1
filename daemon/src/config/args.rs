//! Command-line arguments shared by `wgmeshd` and `wgmeshctl`: where the mesh secret comes from,
//! and the advice about weak ways of giving it.

use std::fmt;
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;

use clap::Args;

use super::{MeshSecret, SecretError, SecretOrigin, resolve_secret};

/// Where the mesh secret comes from. The first one given wins, in this order: `--secret`,
/// `--secret-file`, env `WGMESH_SECRET`, env `WGMESH_SECRET_FILE`, the systemd credential
/// `$CREDENTIALS_DIRECTORY/secret`. `Debug` never shows the value.
#[derive(Clone, Default, Args)]
pub struct SecretArgs {
    /// Mesh secret, raw or wgmesh://v1/<secret>. Other users can see it in the process list:
    /// prefer --secret-file, WGMESH_SECRET_FILE or WGMESH_SECRET.
    #[arg(long, value_name = "SECRET")]
    pub secret: Option<String>,
    /// File holding the mesh secret (surrounding whitespace is ignored). It should be mode 0600.
    #[arg(long, value_name = "PATH")]
    pub secret_file: Option<PathBuf>,
}

impl fmt::Debug for SecretArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretArgs")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("secret_file", &self.secret_file)
            .finish()
    }
}

impl SecretArgs {
    /// Resolves the secret from the flags and the process environment.
    ///
    /// # Errors
    ///
    /// See [`SecretError`]; no message contains the secret.
    pub fn resolve(&self) -> Result<MeshSecret, SecretError> {
        resolve_secret(self.secret.as_deref(), self.secret_file.as_deref(), |k| {
            std::env::var(k).ok()
        })
    }
}

/// Advice about how `secret` was given: on the command line (visible in the process list), or in
/// a file other users can read. Empty when it was given well.
pub fn secret_advice(secret: &MeshSecret) -> Vec<String> {
    match secret.origin() {
        SecretOrigin::Flag => vec![
            "--secret is visible to other users in the process list; prefer --secret-file or WGMESH_SECRET_FILE"
                .to_owned(),
        ],
        SecretOrigin::File(path)
        | SecretOrigin::EnvFile(path)
        | SecretOrigin::Credential(path) => std::fs::metadata(path)
            .ok()
            .map(|m| m.permissions().mode() & 0o777)
            .filter(|mode| mode & 0o077 != 0)
            .map(|mode| {
                format!(
                    "secret file {} is readable by other users (mode {mode:o}); run `chmod 600` on it",
                    path.display()
                )
            })
            .into_iter()
            .collect(),
        SecretOrigin::Env | SecretOrigin::Literal => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let args = SecretArgs {
            secret: Some("hunter2-hunter2-hunter2".into()),
            secret_file: None,
        };
        let text = format!("{args:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }

    #[test]
    fn advice_for_the_process_list_and_loose_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "0123456789abcdef-secret").unwrap();
        let from_file = |mode| {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
            let args = SecretArgs {
                secret: None,
                secret_file: Some(file.clone()),
            };
            secret_advice(&args.resolve().unwrap())
        };
        assert!(from_file(0o600).is_empty());
        let advice = from_file(0o644);
        assert_eq!(advice.len(), 1);
        assert!(advice[0].contains("mode 644"), "{advice:?}");
        assert!(!advice[0].contains("0123456789abcdef"), "{advice:?}");
        let flag = SecretArgs {
            secret: Some("0123456789abcdef-secret".into()),
            secret_file: None,
        };
        assert!(secret_advice(&flag.resolve().unwrap())[0].contains("process list"));
    }
}
