//! Interface names, validated as the Linux kernel and Go wgmesh accept them (daemon-behaviour §18).

use std::fmt;
use std::str::FromStr;

/// Interface used when none is given.
pub const DEFAULT_INTERFACE: &str = "wg0";
/// Kernel `IFNAMSIZ` minus the NUL terminator.
const MAX_LEN: usize = 15;

/// A valid Linux interface name: 1..=15 bytes, a letter first, then letters, digits, `_` or `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InterfaceName(String);

/// Why an interface name was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum InterfaceNameError {
    /// Empty string.
    #[error("invalid interface name: must not be empty")]
    Empty,
    /// Contains a NUL byte.
    #[error("invalid interface name: must not contain null bytes")]
    Nul,
    /// Contains `/` or `\`.
    #[error("invalid interface name {0:?}: must not contain path separators")]
    PathSeparator(String),
    /// Exactly `.` or `..`.
    #[error("invalid interface name {0:?}: must not be '.' or '..'")]
    Dots(String),
    /// Longer than 15 bytes.
    #[error("invalid interface name {name:?}: {len} bytes, maximum is 15 (kernel IFNAMSIZ limit)")]
    TooLong {
        /// The name given.
        name: String,
        /// Its length in bytes.
        len: usize,
    },
    /// Other characters.
    #[error(
        "invalid interface name {0:?}: must start with a letter and contain only letters, digits, underscores, or hyphens"
    )]
    Chars(String),
}

impl InterfaceName {
    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for InterfaceName {
    fn default() -> Self {
        Self(DEFAULT_INTERFACE.to_owned())
    }
}

impl FromStr for InterfaceName {
    type Err = InterfaceNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(InterfaceNameError::Empty);
        }
        if s.contains('\0') {
            return Err(InterfaceNameError::Nul);
        }
        // Names are echoed in errors only after control characters are known to be absent or
        // escaped by `{:?}`.
        if s.contains('/') || s.contains('\\') {
            return Err(InterfaceNameError::PathSeparator(s.to_owned()));
        }
        if s == "." || s == ".." {
            return Err(InterfaceNameError::Dots(s.to_owned()));
        }
        if s.len() > MAX_LEN {
            return Err(InterfaceNameError::TooLong {
                name: s.to_owned(),
                len: s.len(),
            });
        }
        let mut bytes = s.bytes();
        let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphabetic());
        let rest_ok = bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !(first_ok && rest_ok) {
            return Err(InterfaceNameError::Chars(s.to_owned()));
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for InterfaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_table() {
        use InterfaceNameError as E;
        let ok = ["wg0", "a", "wgmesh-lab_1", "W", "abcdefghijklmno"];
        for name in ok {
            assert_eq!(name.parse::<InterfaceName>().unwrap().as_str(), name);
        }
        type Check = fn(&E) -> bool;
        let bad: &[(&str, Check)] = &[
            ("", |e| matches!(e, E::Empty)),
            ("wg\0", |e| matches!(e, E::Nul)),
            ("wg/0", |e| matches!(e, E::PathSeparator(_))),
            ("wg\\0", |e| matches!(e, E::PathSeparator(_))),
            (".", |e| matches!(e, E::Dots(_))),
            ("..", |e| matches!(e, E::Dots(_))),
            ("abcdefghijklmnop", |e| {
                matches!(e, E::TooLong { len: 16, .. })
            }),
            ("0wg", |e| matches!(e, E::Chars(_))),
            ("-wg", |e| matches!(e, E::Chars(_))),
            ("wg 0", |e| matches!(e, E::Chars(_))),
            ("wg.0", |e| matches!(e, E::Chars(_))),
            ("wgé", |e| matches!(e, E::Chars(_))),
        ];
        for (name, check) in bad {
            let err = name.parse::<InterfaceName>().unwrap_err();
            assert!(check(&err), "{name:?} gave {err:?}");
        }
    }

    #[test]
    fn too_long_message_names_the_kernel_limit() {
        let e = "abcdefghijklmnop".parse::<InterfaceName>().unwrap_err();
        assert!(
            e.to_string()
                .contains("maximum is 15 (kernel IFNAMSIZ limit)")
        );
    }
}
