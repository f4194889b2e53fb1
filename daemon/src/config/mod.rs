//! Configuration values parsed at the edge: the mesh secret, the interface name, the custom mesh
//! subnet, the settings of a live reload. Each is a type whose constructor validates, so code
//! further in never re-checks. Pure.

#[cfg(feature = "cli-args")]
mod args;
mod hostport;
mod ifname;
// Pure too, but it speaks the daemon's `LocalNode` and the API types: runtime builds only.
#[cfg(feature = "runtime")]
mod reload;
mod secret;
mod subnet;

#[cfg(feature = "cli-args")]
pub use args::{SecretArgs, secret_advice};
pub use hostport::{HostPort, HostPortError};
pub use ifname::{DEFAULT_INTERFACE, InterfaceName, InterfaceNameError};
#[cfg(feature = "runtime")]
pub use reload::{
    ADVERTISE_ROUTES_KEY, IgnoredLine, InvalidSetting, LOG_LEVEL_KEY, ReloadField, ReloadFile,
    ReloadSettings, apply_reload, describe_changes, plan_reload, reload_file_path, validate_reload,
};
pub use secret::{
    CREDENTIALS_DIRECTORY_ENV, MIN_SECRET_LEN, MeshSecret, SECRET_CREDENTIAL, SECRET_ENV,
    SECRET_FILE_ENV, SecretError, SecretOrigin, URI_PREFIX, resolve_secret,
};
pub use subnet::{MeshSubnet, SubnetError};
