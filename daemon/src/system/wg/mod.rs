//! The WireGuard device as the daemon sees it: read what it has ([`LiveDevice`]) and apply a change
//! ([`DeviceUpdate`]) in one call. Three backends implement [`WireGuard`]:
//!
//! - [`kernel`]: the Linux kernel module, configured over netlink (`wireguard-control`);
//! - [`userspace`]: an embedded `gotatun` device in this process, for hosts without the module
//!   (containers, old kernels, every test machine);
//! - [`fake`]: in memory, for engine tests; records every apply and lets tests script handshakes
//!   and transfer counters.
//!
//! [`AnyWireGuard`] picks one at run time (`--wg-backend auto|kernel|userspace`). Callers compute
//! the update as a diff (the reconcile loop); an empty update performs no write at all.

pub mod fake;
pub mod kernel;
pub mod userspace;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use ipnet::IpNet;

use crate::keys::{PresharedKey, PrivateKey, PublicKey};
use crate::system::net::Netlink;

/// One peer as the device reports it (`Default`: a peer added with nothing but its key).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LivePeer {
    /// Current endpoint (configured, or learned from the peer's packets).
    pub endpoint: Option<SocketAddr>,
    /// Allowed IPs, in the order the device reports them.
    pub allowed_ips: Vec<IpNet>,
    /// The preshared key the device holds (read back so that a changed value is corrected, not
    /// only a missing one; `Debug` never shows it).
    pub preshared_key: Option<PresharedKey>,
    /// Persistent keepalive interval in seconds.
    pub keepalive: Option<u16>,
    /// Wall-clock time of the last completed handshake.
    pub last_handshake: Option<SystemTime>,
    /// Bytes received from the peer.
    pub rx_bytes: u64,
    /// Bytes sent to the peer.
    pub tx_bytes: u64,
}

/// The device as it is now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveDevice {
    /// Public key of the device's private key, if one is set.
    pub public_key: Option<PublicKey>,
    /// UDP listen port (0 before the device has one).
    pub listen_port: u16,
    /// Peers by public key.
    pub peers: BTreeMap<PublicKey, LivePeer>,
}

/// A peer to create, with every setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// The peer's public key.
    pub public_key: PublicKey,
    /// Where to send its packets first.
    pub endpoint: Option<SocketAddr>,
    /// Preshared key.
    pub preshared_key: Option<PresharedKey>,
    /// Persistent keepalive in seconds.
    pub keepalive: Option<u16>,
    /// Networks routed to this peer.
    pub allowed_ips: Vec<IpNet>,
}

/// A change to an existing peer: only the fields that are `Some` change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerUpdate {
    /// The peer's public key.
    pub public_key: PublicKey,
    /// New endpoint. `None` leaves the current one, which may have been learned by roaming.
    pub endpoint: Option<SocketAddr>,
    /// New preshared key (`Some(None)` removes it). Takes effect at the next handshake.
    pub preshared_key: Option<Option<PresharedKey>>,
    /// New keepalive (`Some(None)` turns it off).
    pub keepalive: Option<Option<u16>>,
    /// Replace the allowed IPs with exactly these.
    pub replace_allowed_ips: Option<Vec<IpNet>>,
}

impl PeerUpdate {
    /// An update of `public_key` that changes nothing yet.
    pub fn new(public_key: PublicKey) -> Self {
        Self {
            public_key,
            endpoint: None,
            preshared_key: None,
            keepalive: None,
            replace_allowed_ips: None,
        }
    }

    /// Whether applying it would change nothing.
    pub fn is_noop(&self) -> bool {
        self.endpoint.is_none()
            && self.preshared_key.is_none()
            && self.keepalive.is_none()
            && self.replace_allowed_ips.is_none()
    }
}

/// Everything one reconcile pass changes on the device. Applied as one call; the backend orders
/// the steps safely (key first, removals and shrinking peers before peers that take their IPs).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct DeviceUpdate {
    /// New private key: the daemon's one copy, shared, never duplicated per update.
    pub private_key: Option<Arc<PrivateKey>>,
    /// New listen port.
    pub listen_port: Option<u16>,
    /// Peers to create.
    pub add: Vec<PeerConfig>,
    /// Peers to change.
    pub update: Vec<PeerUpdate>,
    /// Peers to remove.
    pub remove: Vec<PublicKey>,
}

impl DeviceUpdate {
    /// Whether applying it would change nothing (and so must not touch the device).
    pub fn is_empty(&self) -> bool {
        self.private_key.is_none()
            && self.listen_port.is_none()
            && self.add.is_empty()
            && self.remove.is_empty()
            && self.update.iter().all(PeerUpdate::is_noop)
    }

    /// Number of peers the update touches.
    pub fn peer_count(&self) -> usize {
        self.add.len() + self.remove.len() + self.update.iter().filter(|u| !u.is_noop()).count()
    }
}

impl fmt::Debug for DeviceUpdate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceUpdate")
            .field("private_key", &self.private_key.as_ref().map(|_| "<set>"))
            .field("listen_port", &self.listen_port)
            .field("add", &self.add.len())
            .field("update", &self.update.len())
            .field("remove", &self.remove.len())
            .finish()
    }
}

/// What an apply did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Device write operations performed (0 for an empty update).
    pub writes: usize,
    /// Peers created.
    pub added: usize,
    /// Peers changed (including peers that had to give up an allowed IP to another peer).
    pub updated: usize,
    /// Peers removed.
    pub removed: usize,
}

/// Why the device could not be read, created or changed.
#[derive(Debug, thiserror::Error)]
pub enum WgError {
    /// Peers were given before the device had a private key.
    #[error("cannot configure peers on {iface}: the device has no private key yet")]
    NoPrivateKey {
        /// Interface name.
        iface: String,
    },
    /// The kernel module is missing or the link cannot be created.
    #[error("kernel WireGuard is not available for {iface}: {reason}")]
    KernelUnavailable {
        /// Interface name.
        iface: String,
        /// Why.
        reason: String,
    },
    /// The embedded engine failed.
    #[error("userspace WireGuard device {iface}: {reason}")]
    Engine {
        /// Interface name.
        iface: String,
        /// The engine's error.
        reason: String,
    },
    /// A netlink or OS call failed.
    #[error("WireGuard device {iface}: {op}: {reason}")]
    Os {
        /// Interface name.
        iface: String,
        /// What we were doing.
        op: &'static str,
        /// The OS error.
        reason: String,
    },
}

/// A WireGuard device the daemon can read and change.
pub trait WireGuard: Send + Sync {
    /// The interface name.
    fn name(&self) -> &str;

    /// Reads the device's current state.
    fn read(&self) -> impl Future<Output = Result<LiveDevice, WgError>> + Send;

    /// Applies `update` in one call. An empty update performs no write.
    fn apply(
        &self,
        update: DeviceUpdate,
    ) -> impl Future<Output = Result<ApplyReport, WgError>> + Send;

    /// Starts a handshake with each of `peers` now, instead of waiting for the next retry.
    ///
    /// Two nodes that add each other at the same moment both send their first handshake before
    /// the other knows them; both are dropped and WireGuard retries only after 5 s. Kicking the
    /// peers that are still without a handshake a moment later closes that gap. The default does
    /// nothing (the kernel offers no way to force a handshake; it keeps its 5 s retry).
    fn kick(&self, peers: &[PublicKey]) -> impl Future<Output = ()> + Send {
        let _ = peers;
        async {}
    }
}

/// Which backend to use (`--wg-backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "cli-args", derive(clap::ValueEnum))]
pub enum BackendChoice {
    /// Kernel WireGuard if the link can be created, else the embedded userspace device.
    #[default]
    Auto,
    /// Kernel WireGuard only; fail if the module is missing.
    Kernel,
    /// The embedded userspace device only.
    Userspace,
}

/// The backend in use, chosen at run time.
pub enum AnyWireGuard {
    /// Kernel module over netlink.
    Kernel(kernel::KernelWireGuard),
    /// Embedded gotatun device.
    Userspace(userspace::UserspaceWireGuard),
}

impl AnyWireGuard {
    /// Creates (or takes over) the device `iface` with the chosen backend. With `Auto` the kernel
    /// is tried first. Logs which backend was chosen and why, and returns that text too.
    pub async fn open(
        net: &Netlink,
        choice: BackendChoice,
        iface: &str,
        listen_port: u16,
    ) -> Result<(Self, String), WgError> {
        let (wg, why) = Self::open_inner(net, choice, iface, listen_port).await?;
        tracing::info!(iface, backend = wg.kind(), reason = %why, "WireGuard device ready");
        Ok((wg, why))
    }

    async fn open_inner(
        net: &Netlink,
        choice: BackendChoice,
        iface: &str,
        listen_port: u16,
    ) -> Result<(Self, String), WgError> {
        match choice {
            BackendChoice::Kernel => {
                let k = kernel::KernelWireGuard::create(net, iface).await?;
                Ok((Self::Kernel(k), "requested".into()))
            }
            BackendChoice::Userspace => {
                let u = userspace::UserspaceWireGuard::create(iface, listen_port).await?;
                Ok((Self::Userspace(u), "requested".into()))
            }
            BackendChoice::Auto => match kernel::KernelWireGuard::create(net, iface).await {
                Ok(k) => Ok((Self::Kernel(k), "auto: kernel module available".into())),
                Err(WgError::KernelUnavailable { reason, .. }) => {
                    let u = userspace::UserspaceWireGuard::create(iface, listen_port).await?;
                    Ok((
                        Self::Userspace(u),
                        format!("auto: kernel WireGuard unavailable: {reason}"),
                    ))
                }
                Err(e) => Err(e),
            },
        }
    }

    /// Short name of the backend: `kernel` or `userspace`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Kernel(_) => "kernel",
            Self::Userspace(_) => "userspace",
        }
    }

    /// Removes the device: stops the embedded engine or deletes the kernel link.
    pub async fn shutdown(self) -> Result<(), WgError> {
        match self {
            Self::Kernel(k) => k.delete().await,
            Self::Userspace(u) => {
                u.stop().await;
                Ok(())
            }
        }
    }
}

impl WireGuard for AnyWireGuard {
    fn name(&self) -> &str {
        match self {
            Self::Kernel(k) => k.name(),
            Self::Userspace(u) => u.name(),
        }
    }

    async fn read(&self) -> Result<LiveDevice, WgError> {
        match self {
            Self::Kernel(k) => k.read().await,
            Self::Userspace(u) => u.read().await,
        }
    }

    async fn apply(&self, update: DeviceUpdate) -> Result<ApplyReport, WgError> {
        match self {
            Self::Kernel(k) => k.apply(update).await,
            Self::Userspace(u) => u.apply(update).await,
        }
    }

    async fn kick(&self, peers: &[PublicKey]) {
        match self {
            Self::Kernel(k) => k.kick(peers).await,
            Self::Userspace(u) => u.kick(peers).await,
        }
    }
}
