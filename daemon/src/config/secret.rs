//! The mesh secret: parsing (`wgmesh://v1/<secret>` or raw), where it comes from, generation.
//!
//! Rules (reference crypto-and-wire §1): the input is trimmed; a `wgmesh://` prefix is dropped and
//! the rest split once at `/`; with two parts the secret is the second part cut at the first `?`;
//! with one part it is the whole remainder. The version segment is not checked. The result is used
//! as raw UTF-8 bytes, never decoded, and must be at least [`MIN_SECRET_LEN`] bytes.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;

/// Prefix of the URI form of a secret.
pub const URI_PREFIX: &str = "wgmesh://";
/// Minimum secret length in bytes, after URI stripping (Go `MinSecretLength`).
pub const MIN_SECRET_LEN: usize = 16;
/// Environment variable holding the secret itself.
pub const SECRET_ENV: &str = "WGMESH_SECRET";
/// Environment variable naming a file that holds the secret.
pub const SECRET_FILE_ENV: &str = "WGMESH_SECRET_FILE";
/// Environment variable systemd sets to the directory of the service's credentials.
pub const CREDENTIALS_DIRECTORY_ENV: &str = "CREDENTIALS_DIRECTORY";
/// Name of the credential holding the secret (`LoadCredential=secret:/etc/wgmesh/secret`).
pub const SECRET_CREDENTIAL: &str = "secret";
/// Number of random bytes in a generated secret (Go `GenerateSecret`).
const GENERATED_SECRET_BYTES: usize = 128;

/// A validated mesh secret. Its `Debug` never shows the value (there is no `Display`), and the
/// value is zeroed in memory when the secret is dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct MeshSecret {
    value: String,
    uri_form: bool,
    origin: SecretOrigin,
}

impl Drop for MeshSecret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.value);
    }
}

/// Why a secret was refused. No variant carries the secret or any part of it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    /// Nothing was given anywhere.
    #[error(
        "no mesh secret given: pass --secret-file PATH (or --secret), or set {SECRET_FILE_ENV} or {SECRET_ENV} (under systemd: the credential {SECRET_CREDENTIAL})"
    )]
    Missing,
    /// Shorter than the minimum after URI stripping.
    #[error(
        "mesh secret from {origin} is too short: {len} bytes, at least {MIN_SECRET_LEN} needed (generate one with `wgmeshctl secret new`)"
    )]
    TooShort {
        /// Where the secret came from.
        origin: SecretOrigin,
        /// Its length in bytes after stripping.
        len: usize,
    },
    /// The secret file could not be read.
    #[error("cannot read mesh secret file {path}: {reason}")]
    File {
        /// The file named by the user.
        path: PathBuf,
        /// The OS error text.
        reason: String,
    },
    /// The value is not valid UTF-8 (only possible for files).
    #[error("mesh secret in {path} is not valid UTF-8 text")]
    NotUtf8 {
        /// The file named by the user.
        path: PathBuf,
    },
}

/// Where a secret was taken from, for messages (never the value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretOrigin {
    /// The `--secret` flag.
    Flag,
    /// A file given with `--secret-file`.
    File(PathBuf),
    /// The `WGMESH_SECRET` environment variable.
    Env,
    /// A file named by `WGMESH_SECRET_FILE`.
    EnvFile(PathBuf),
    /// The systemd credential `secret`: `$CREDENTIALS_DIRECTORY/secret`.
    Credential(PathBuf),
    /// A value handed over directly by code (tests, API).
    Literal,
}

impl fmt::Display for SecretOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Flag => f.write_str("--secret"),
            Self::File(p) => write!(f, "--secret-file {}", p.display()),
            Self::Env => f.write_str(SECRET_ENV),
            Self::EnvFile(p) => write!(f, "{SECRET_FILE_ENV} ({})", p.display()),
            Self::Credential(p) => write!(
                f,
                "systemd credential {SECRET_CREDENTIAL} ({})",
                p.display()
            ),
            Self::Literal => f.write_str("the given value"),
        }
    }
}

impl MeshSecret {
    /// Parses a secret in either form. `origin` is only used in error messages.
    pub fn parse(input: &str, origin: SecretOrigin) -> Result<Self, SecretError> {
        let trimmed = input.trim();
        let (value, uri_form) = match trimmed.strip_prefix(URI_PREFIX) {
            Some(rest) => {
                let value = match rest.split_once('/') {
                    Some((_version, tail)) => tail.split('?').next().unwrap_or(""),
                    None => rest,
                };
                (value, true)
            }
            None => (trimmed, false),
        };
        if value.len() < MIN_SECRET_LEN {
            return Err(SecretError::TooShort {
                origin,
                len: value.len(),
            });
        }
        Ok(Self {
            value: value.to_owned(),
            uri_form,
            origin,
        })
    }

    /// The key material: the secret's raw UTF-8 bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.value.as_bytes()
    }

    /// The secret as text (for derivations that concatenate strings).
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// Where the secret was taken from (for advice about how it was given; never the value).
    pub fn origin(&self) -> &SecretOrigin {
        &self.origin
    }

    /// Whether the input used the `wgmesh://` form. A raw secret may have low entropy; callers
    /// warn about it.
    pub fn was_uri_form(&self) -> bool {
        self.uri_form
    }

    /// The `wgmesh://v1/<secret>` form of this secret.
    pub fn to_uri(&self) -> String {
        format!("{URI_PREFIX}v1/{}", self.value)
    }

    /// Generates a fresh secret from `random` (128 bytes from the OS CSPRNG in production):
    /// base64url without padding, 171 characters.
    pub fn from_random_bytes(random: &[u8; GENERATED_SECRET_BYTES]) -> Self {
        Self {
            value: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random),
            uri_form: true,
            origin: SecretOrigin::Literal,
        }
    }

    /// Number of random bytes [`MeshSecret::from_random_bytes`] takes.
    pub const GENERATED_BYTES: usize = GENERATED_SECRET_BYTES;
}

impl fmt::Debug for MeshSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MeshSecret(<redacted>)")
    }
}

/// Picks the secret from the first source that is set, in this order: `--secret`,
/// `--secret-file`, env `WGMESH_SECRET`, env `WGMESH_SECRET_FILE`, and the systemd credential
/// `$CREDENTIALS_DIRECTORY/secret` (what `wgmesh.service` hands over with `LoadCredential=`).
/// `env` looks up an environment variable (injected so tests do not touch the process
/// environment). File contents are trimmed.
pub fn resolve_secret(
    flag: Option<&str>,
    file_flag: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<MeshSecret, SecretError> {
    if let Some(value) = flag {
        return MeshSecret::parse(value, SecretOrigin::Flag);
    }
    if let Some(path) = file_flag {
        return read_secret_file(path, SecretOrigin::File(path.to_owned()));
    }
    if let Some(value) = env(SECRET_ENV).filter(|v| !v.is_empty()) {
        return MeshSecret::parse(&value, SecretOrigin::Env);
    }
    if let Some(path) = env(SECRET_FILE_ENV).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        return read_secret_file(&path, SecretOrigin::EnvFile(path.clone()));
    }
    if let Some(dir) = env(CREDENTIALS_DIRECTORY_ENV).filter(|v| !v.is_empty()) {
        let path = Path::new(&dir).join(SECRET_CREDENTIAL);
        return read_secret_file(&path, SecretOrigin::Credential(path.clone()));
    }
    Err(SecretError::Missing)
}

fn read_secret_file(path: &Path, origin: SecretOrigin) -> Result<MeshSecret, SecretError> {
    let bytes = zeroize::Zeroizing::new(std::fs::read(path).map_err(|e| SecretError::File {
        path: path.to_owned(),
        reason: e.to_string(),
    })?);
    let text = std::str::from_utf8(&bytes).map_err(|_| SecretError::NotUtf8 {
        path: path.to_owned(),
    })?;
    MeshSecret::parse(text, origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<String, SecretError> {
        MeshSecret::parse(s, SecretOrigin::Literal).map(|m| m.expose().to_owned())
    }

    #[test]
    fn parsing_table() {
        let long = "abcdefghijklmnopqrstuvwxyz";
        let cases: &[(&str, Result<&str, usize>)] = &[
            ("  mysecret-0123456789  ", Ok("mysecret-0123456789")),
            (
                "wgmesh://v1/abcdefghijklmnopqr?relay=true",
                Ok("abcdefghijklmnopqr"),
            ),
            (
                "wgmesh://v1/a/bcdefghijklmnopqrs",
                Ok("a/bcdefghijklmnopqrs"),
            ),
            ("wgmesh://v9/abcdefghijklmnopqr", Ok("abcdefghijklmnopqr")),
            // No '/': the whole remainder, '?' kept (daemon path in Go).
            ("wgmesh://abcdefghijklmnop?x", Ok("abcdefghijklmnop?x")),
            (
                "\twgmesh://v1/abcdefghijklmnopqr\n",
                Ok("abcdefghijklmnopqr"),
            ),
            ("0123456789abcdef", Ok("0123456789abcdef")),
            ("0123456789abcde", Err(15)),
            ("wgmesh://v1/short?abcdefghijklmnop", Err(5)),
            ("wgmesh://v1/", Err(0)),
            ("", Err(0)),
        ];
        for (input, want) in cases {
            match (parse(input), want) {
                (Ok(got), Ok(w)) => assert_eq!(&got, w, "input {input:?}"),
                (Err(SecretError::TooShort { len, .. }), Err(w)) => {
                    assert_eq!(len, *w, "input {input:?}")
                }
                (got, want) => panic!("input {input:?}: got {got:?}, want {want:?}"),
            }
        }
        assert_eq!(parse(long).unwrap(), long);
    }

    #[test]
    fn length_is_counted_in_bytes_not_chars() {
        // 8 two-byte characters = 16 bytes: accepted, as Go's len() would.
        assert!(parse("éééééééé").is_ok());
        assert!(parse("ééééééé").is_err());
    }

    #[test]
    fn debug_and_errors_never_show_the_secret() {
        let s = MeshSecret::parse("super-secret-value-123", SecretOrigin::Flag).unwrap();
        assert!(!format!("{s:?}").contains("super"));
        let e = MeshSecret::parse("tiny-secret", SecretOrigin::Flag).unwrap_err();
        assert!(!e.to_string().contains("tiny"));
        assert!(e.to_string().contains("--secret"));
    }

    #[test]
    fn uri_round_trip_and_generation() {
        let s = MeshSecret::from_random_bytes(&[7u8; 128]);
        assert_eq!(s.expose().len(), 171);
        assert!(!s.expose().contains('='));
        let back = MeshSecret::parse(&s.to_uri(), SecretOrigin::Literal).unwrap();
        assert_eq!(back, s);
        assert!(back.was_uri_form());
        assert!(
            !MeshSecret::parse("plain-secret-0123456", SecretOrigin::Literal)
                .unwrap()
                .was_uri_form()
        );
    }

    #[test]
    fn source_precedence() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s");
        std::fs::write(&file, "  from-file-0123456789\n").unwrap();
        let env_file = dir.path().join("e");
        std::fs::write(&env_file, "from-env-file-0123456789").unwrap();
        let env = |k: &str| match k {
            SECRET_ENV => Some("from-env-0123456789".to_owned()),
            SECRET_FILE_ENV => Some(env_file.to_string_lossy().into_owned()),
            _ => None,
        };
        let got = |flag, f: Option<&Path>, env: &dyn Fn(&str) -> Option<String>| {
            resolve_secret(flag, f, env).map(|s| s.expose().to_owned())
        };
        assert_eq!(
            got(Some("from-flag-0123456789"), Some(&file), &env).unwrap(),
            "from-flag-0123456789"
        );
        assert_eq!(
            got(None, Some(&file), &env).unwrap(),
            "from-file-0123456789"
        );
        assert_eq!(got(None, None, &env).unwrap(), "from-env-0123456789");
        let only_file =
            |k: &str| (k == SECRET_FILE_ENV).then(|| env_file.to_string_lossy().into_owned());
        assert_eq!(
            got(None, None, &only_file).unwrap(),
            "from-env-file-0123456789"
        );
        assert_eq!(got(None, None, &|_| None), Err(SecretError::Missing));
    }

    #[test]
    fn systemd_credential_comes_last() {
        let dir = tempfile::tempdir().unwrap();
        let cred = dir.path().join(SECRET_CREDENTIAL);
        std::fs::write(&cred, "  from-credential \"$x\" 100%\n").unwrap();
        let creds = dir.path().to_string_lossy().into_owned();
        let only_creds = |k: &str| (k == CREDENTIALS_DIRECTORY_ENV).then(|| creds.clone());
        let s = resolve_secret(None, None, only_creds).unwrap();
        assert_eq!(s.expose(), "from-credential \"$x\" 100%");
        assert_eq!(s.origin(), &SecretOrigin::Credential(cred.clone()));
        // Every other source wins over it.
        let with_env = |k: &str| match k {
            SECRET_ENV => Some("from-env-0123456789".to_owned()),
            _ => only_creds(k),
        };
        assert_eq!(
            resolve_secret(None, None, with_env).unwrap().expose(),
            "from-env-0123456789"
        );
        // A credential directory without the secret names the path; a short one is refused with
        // the origin and without the value.
        let empty = tempfile::tempdir().unwrap();
        let empty_dir = empty.path().to_string_lossy().into_owned();
        let e = resolve_secret(None, None, |k: &str| {
            (k == CREDENTIALS_DIRECTORY_ENV).then(|| empty_dir.clone())
        })
        .unwrap_err();
        assert!(e.to_string().contains(&empty_dir), "{e}");
        std::fs::write(&cred, "tiny-value\n").unwrap();
        let e = resolve_secret(None, None, only_creds).unwrap_err();
        assert!(e.to_string().contains("systemd credential secret"), "{e}");
        assert!(!e.to_string().contains("tiny-value"), "{e}");
    }

    #[test]
    fn unreadable_file_names_the_path() {
        let e = resolve_secret(None, Some(Path::new("/nonexistent/wgmesh-secret")), |_| {
            None
        })
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/wgmesh-secret"), "{e}");
    }
}
