//! Configuration values parsed at the edge: the mesh secret, the interface name, the custom mesh
//! subnet. Each is a type whose constructor validates, so code further in never re-checks. Pure.

#[cfg(feature = "cli-args")]
mod args;
mod ifname;
mod secret;
mod subnet;

#[cfg(feature = "cli-args")]
pub use args::{SecretArgs, secret_advice};
pub use ifname::{DEFAULT_INTERFACE, InterfaceName, InterfaceNameError};
pub use secret::{
    MIN_SECRET_LEN, MeshSecret, SECRET_ENV, SECRET_FILE_ENV, SecretError, SecretOrigin, URI_PREFIX,
    resolve_secret,
};
pub use subnet::{MeshSubnet, SubnetError};
