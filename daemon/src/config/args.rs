//! Command-line arguments shared by `wgmeshd` and `wgmeshctl`: where the mesh secret comes from.

use std::path::PathBuf;

use clap::Args;

use super::{MeshSecret, SecretError, resolve_secret};

/// Where the mesh secret comes from. The first one given wins, in this order: `--secret`,
/// `--secret-file`, env `WGMESH_SECRET`, env `WGMESH_SECRET_FILE`.
#[derive(Debug, Clone, Default, Args)]
pub struct SecretArgs {
    /// Mesh secret, raw or wgmesh://v1/<secret>. Other users can see it in the process list:
    /// prefer --secret-file, WGMESH_SECRET_FILE or WGMESH_SECRET.
    #[arg(long, value_name = "SECRET")]
    pub secret: Option<String>,
    /// File holding the mesh secret (surrounding whitespace is ignored).
    #[arg(long, value_name = "PATH")]
    pub secret_file: Option<PathBuf>,
}

impl SecretArgs {
    /// Resolves the secret from the flags and the process environment.
    pub fn resolve(&self) -> Result<MeshSecret, SecretError> {
        resolve_secret(self.secret.as_deref(), self.secret_file.as_deref(), |k| {
            std::env::var(k).ok()
        })
    }

    /// Advice to print when the secret was given on the command line.
    pub fn process_list_warning(&self) -> Option<&'static str> {
        self.secret.is_some().then_some(
            "--secret is visible to other users in the process list; prefer --secret-file or WGMESH_SECRET_FILE",
        )
    }
}
