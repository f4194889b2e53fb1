//! Kernel WireGuard: the link is created and deleted through [`Netlink`] (rtnetlink), the device
//! is configured over generic netlink with `wireguard-control`.
//!
//! `wireguard-control` packs a device update into as many netlink messages as the kernel's size
//! limit needs, so one [`DeviceUpdate`] is one call here however many peers it holds. Its calls
//! block, so they run on tokio's blocking pool. A key is never sent twice in one update: a peer
//! that is removed and re-created (a deliberate new handshake) goes in two calls.

use std::collections::HashSet;

use crate::system::net::{NetError, Netlink};
use ipnet::IpNet;
use wireguard_control as wc;

use super::{
    ApplyReport, DeviceUpdate, LiveDevice, LivePeer, PeerConfig, PeerUpdate, WgError, WireGuard,
};
use crate::keys::{PresharedKey, PublicKey};

/// A kernel WireGuard interface.
pub struct KernelWireGuard {
    name: String,
    iface: wc::InterfaceName,
    net: Netlink,
}

fn os(iface: &str, op: &'static str, e: impl ToString) -> WgError {
    WgError::Os {
        iface: iface.to_owned(),
        op,
        reason: e.to_string(),
    }
}

async fn blocking<T: Send + 'static>(
    iface: &str,
    op: &'static str,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, WgError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(|e| os(iface, op, e)),
        Err(join) => Err(os(iface, op, join)),
    }
}

fn allowed(ips: &[IpNet]) -> Vec<wc::AllowedIp> {
    ips.iter()
        .map(|n| {
            let n = n.trunc();
            wc::AllowedIp {
                address: n.addr(),
                cidr: n.prefix_len(),
            }
        })
        .collect()
}

fn add_builder(cfg: &PeerConfig) -> wc::PeerConfigBuilder {
    let mut b = wc::PeerConfigBuilder::new(&wc::Key(cfg.public_key.0))
        .replace_allowed_ips()
        .add_allowed_ips(&allowed(&cfg.allowed_ips));
    if let Some(ep) = cfg.endpoint {
        b = b.set_endpoint(ep);
    }
    b = match cfg.preshared_key {
        Some(k) => b.set_preshared_key(wc::Key(k.0)),
        None => b.unset_preshared_key(),
    };
    match cfg.keepalive {
        Some(ka) => b.set_persistent_keepalive_interval(ka),
        None => b.unset_persistent_keepalive(),
    }
}

fn update_builder(u: &PeerUpdate) -> wc::PeerConfigBuilder {
    let mut b = wc::PeerConfigBuilder::new(&wc::Key(u.public_key.0));
    if let Some(ep) = u.endpoint {
        b = b.set_endpoint(ep);
    }
    match u.preshared_key {
        Some(Some(k)) => b = b.set_preshared_key(wc::Key(k.0)),
        Some(None) => b = b.unset_preshared_key(),
        None => {}
    }
    match u.keepalive {
        Some(Some(ka)) => b = b.set_persistent_keepalive_interval(ka),
        Some(None) => b = b.unset_persistent_keepalive(),
        None => {}
    }
    if let Some(ips) = &u.replace_allowed_ips {
        b = b.replace_allowed_ips().add_allowed_ips(&allowed(ips));
    }
    b
}

/// Splits an update into the netlink calls to make: removals of keys that are also re-created go
/// first, on their own, so no call names a key twice.
fn to_calls(update: &DeviceUpdate) -> Vec<wc::DeviceUpdate> {
    let recreated: HashSet<PublicKey> = update
        .add
        .iter()
        .map(|p| p.public_key)
        .chain(update.update.iter().map(|u| u.public_key))
        .collect();
    let mut calls = Vec::new();
    let (first, rest): (Vec<_>, Vec<_>) = update.remove.iter().partition(|k| recreated.contains(k));
    if !first.is_empty() {
        calls.push(
            first
                .iter()
                .fold(wc::DeviceUpdate::new(), |d, k: &&PublicKey| {
                    d.remove_peer_by_key(&wc::Key(k.0))
                }),
        );
    }
    let mut main = wc::DeviceUpdate::new();
    if let Some(k) = &update.private_key {
        main = main.set_private_key(wc::Key(*k.expose_secret()));
    }
    if let Some(port) = update.listen_port {
        main = main.set_listen_port(port);
    }
    for k in rest {
        main = main.remove_peer_by_key(&wc::Key(k.0));
    }
    for u in update.update.iter().filter(|u| !u.is_noop()) {
        main = main.add_peer(update_builder(u));
    }
    for p in &update.add {
        main = main.add_peer(add_builder(p));
    }
    calls.push(main);
    calls
}

impl KernelWireGuard {
    /// Creates the interface (or takes over an existing WireGuard link of that name). Fails with
    /// [`WgError::KernelUnavailable`] when the kernel has no WireGuard support.
    pub async fn create(net: &Netlink, iface: &str) -> Result<Self, WgError> {
        let name: wc::InterfaceName = iface
            .parse()
            .map_err(|e| os(iface, "parse interface name", e))?;
        match net.create_wireguard_link(iface).await {
            Ok(_) => {}
            Err(e @ NetError::WireGuardUnsupported { .. }) => {
                return Err(WgError::KernelUnavailable {
                    iface: iface.to_owned(),
                    reason: e.to_string(),
                });
            }
            Err(e) => return Err(os(iface, "create link", e)),
        }
        Ok(Self {
            name: iface.to_owned(),
            iface: name,
            net: net.clone(),
        })
    }

    /// Deletes the interface; a missing interface is not an error.
    pub async fn delete(self) -> Result<(), WgError> {
        self.net
            .delete_link(&self.name)
            .await
            .map_err(|e| os(&self.name, "delete link", e))
    }
}

impl WireGuard for KernelWireGuard {
    fn name(&self) -> &str {
        &self.name
    }

    async fn read(&self) -> Result<LiveDevice, WgError> {
        let iface = self.iface;
        let dev = blocking(&self.name, "read device", move || {
            wc::Device::get(&iface, wc::Backend::Kernel)
        })
        .await?;
        let peers = dev
            .peers
            .into_iter()
            .map(|p| {
                let live = LivePeer {
                    endpoint: p.config.endpoint,
                    allowed_ips: p
                        .config
                        .allowed_ips
                        .iter()
                        .filter_map(|a| IpNet::new(a.address, a.cidr).ok())
                        .collect(),
                    preshared_key: p.config.preshared_key.map(|k| PresharedKey(k.0)),
                    keepalive: p.config.persistent_keepalive_interval.filter(|k| *k != 0),
                    last_handshake: p.stats.last_handshake_time,
                    rx_bytes: p.stats.rx_bytes,
                    tx_bytes: p.stats.tx_bytes,
                };
                (PublicKey(p.config.public_key.0), live)
            })
            .collect();
        Ok(LiveDevice {
            public_key: dev.public_key.map(|k| PublicKey(k.0)),
            listen_port: dev.listen_port.unwrap_or(0),
            peers,
        })
    }

    async fn apply(&self, update: DeviceUpdate) -> Result<ApplyReport, WgError> {
        if update.is_empty() {
            return Ok(ApplyReport::default());
        }
        let report = ApplyReport {
            writes: 0,
            added: update.add.len(),
            updated: update.update.iter().filter(|u| !u.is_noop()).count(),
            removed: update.remove.len(),
        };
        let calls = to_calls(&update);
        let writes = calls.len();
        let iface = self.iface;
        blocking(&self.name, "apply", move || {
            calls
                .into_iter()
                .try_for_each(|c| c.apply(&iface, wc::Backend::Kernel))
        })
        .await?;
        Ok(ApplyReport { writes, ..report })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(b: u8) -> PeerConfig {
        PeerConfig {
            public_key: PublicKey([b; 32]),
            endpoint: None,
            preshared_key: None,
            keepalive: Some(25),
            allowed_ips: vec!["10.0.0.1/32".parse().unwrap()],
        }
    }

    #[test]
    fn a_recreated_peer_is_removed_in_a_separate_call() {
        let plain = DeviceUpdate {
            add: vec![cfg(1)],
            remove: vec![PublicKey([2; 32])],
            ..Default::default()
        };
        assert_eq!(to_calls(&plain).len(), 1);
        let recreate = DeviceUpdate {
            add: vec![cfg(1)],
            remove: vec![PublicKey([1; 32]), PublicKey([2; 32])],
            ..Default::default()
        };
        assert_eq!(to_calls(&recreate).len(), 2);
    }
}
