//! An in-memory WireGuard device for tests of the layers above. It behaves like the kernel
//! (allowed IPs are exclusive: giving one to a peer takes it from any other; peers need a private
//! key first), records every apply, and lets tests script handshakes, transfer counters, slow or
//! failing applies, and changes made behind the daemon's back.
//!
//! Like the embedded userspace engine, an apply that fails on one peer has already applied what
//! came before it (key and port, then removals, changes and additions, in that order) and stops
//! there: callers must cope with a device that took part of an update.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use super::{ApplyReport, DeviceUpdate, LiveDevice, PeerConfig, PeerUpdate, WgError, WireGuard};
use crate::keys::PublicKey;

#[derive(Default)]
struct State {
    device: LiveDevice,
    applies: Vec<DeviceUpdate>,
    apply_delay: Option<Duration>,
    fail_next: Option<String>,
    failing_reads: usize,
    rejected: Vec<PublicKey>,
    kicks: Vec<PublicKey>,
}

/// An in-memory device. Cheap to create; `&self` everywhere.
pub struct FakeWireGuard {
    name: String,
    state: Mutex<State>,
}

impl FakeWireGuard {
    /// A device named `name` with no key, port 0 and no peers.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock already failed; keep the data usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every non-empty update the device started to apply so far (one that failed part-way
    /// included), in order.
    pub fn applies(&self) -> Vec<DeviceUpdate> {
        self.lock().applies.clone()
    }

    /// Every peer kicked so far, in order.
    pub fn kicks(&self) -> Vec<PublicKey> {
        self.lock().kicks.clone()
    }

    /// Records a completed handshake with `peer` at `at`.
    pub fn set_handshake(&self, peer: &PublicKey, at: SystemTime) {
        if let Some(p) = self.lock().device.peers.get_mut(peer) {
            p.last_handshake = Some(at);
        }
    }

    /// Adds to `peer`'s transfer counters.
    pub fn add_transfer(&self, peer: &PublicKey, rx: u64, tx: u64) {
        if let Some(p) = self.lock().device.peers.get_mut(peer) {
            p.rx_bytes += rx;
            p.tx_bytes += tx;
        }
    }

    /// Removes `peer` as an operator running `wg set … remove` would.
    pub fn remove_behind_back(&self, peer: &PublicKey) {
        self.lock().device.peers.remove(peer);
    }

    /// Makes every later apply take `delay` before it changes anything.
    pub fn set_apply_delay(&self, delay: Duration) {
        self.lock().apply_delay = Some(delay);
    }

    /// Makes the next `n` reads fail, as a device deleted behind the daemon's back would.
    pub fn fail_reads(&self, n: usize) {
        self.lock().failing_reads = n;
    }

    /// Makes the next apply fail with `reason` and change nothing.
    pub fn fail_next_apply(&self, reason: &str) {
        self.lock().fail_next = Some(reason.to_owned());
    }

    /// Makes every apply that touches `peer` fail at that peer, as a device refusing one bad
    /// peer entry would: the operations before it in the same apply stay applied.
    pub fn reject_peer(&self, peer: PublicKey) {
        self.lock().rejected.push(peer);
    }

    fn apply_now(&self, update: DeviceUpdate) -> Result<ApplyReport, WgError> {
        let mut state = self.lock();
        if let Some(reason) = state.fail_next.take() {
            return Err(WgError::Engine {
                iface: self.name.clone(),
                reason,
            });
        }
        let has_key = update.private_key.is_some() || state.device.public_key.is_some();
        if !has_key && (!update.add.is_empty() || !update.update.is_empty()) {
            return Err(WgError::NoPrivateKey {
                iface: self.name.clone(),
            });
        }
        let mut report = ApplyReport {
            writes: 1,
            ..ApplyReport::default()
        };
        let rejected = state.rejected.clone();
        let refuse = |key: &PublicKey| -> Result<(), WgError> {
            if rejected.contains(key) {
                Err(WgError::Engine {
                    iface: self.name.clone(),
                    reason: format!("peer {key} rejected"),
                })
            } else {
                Ok(())
            }
        };
        state.applies.push(update.clone());
        let dev = &mut state.device;
        if let Some(key) = &update.private_key {
            dev.public_key = Some(key.public_key());
        }
        if let Some(port) = update.listen_port {
            dev.listen_port = port;
        }
        for key in &update.remove {
            refuse(key)?;
            report.removed += usize::from(dev.peers.remove(key).is_some());
        }
        for change in update.update.iter().filter(|c| !c.is_noop()) {
            refuse(&change.public_key)?;
            report.updated += usize::from(update_peer(dev, change));
        }
        for peer in &update.add {
            refuse(&peer.public_key)?;
            add_peer(dev, peer);
            report.added += 1;
        }
        Ok(report)
    }
}

/// Takes `ips` away from every peer other than `owner` (kernel semantics).
fn claim(dev: &mut LiveDevice, owner: &PublicKey, ips: &[ipnet::IpNet]) {
    for (key, peer) in dev.peers.iter_mut() {
        if key != owner {
            peer.allowed_ips.retain(|ip| !ips.contains(ip));
        }
    }
}

fn add_peer(dev: &mut LiveDevice, cfg: &PeerConfig) {
    claim(dev, &cfg.public_key, &cfg.allowed_ips);
    let entry = dev.peers.entry(cfg.public_key).or_default();
    entry.endpoint = cfg.endpoint.or(entry.endpoint);
    entry.allowed_ips = cfg.allowed_ips.clone();
    entry.preshared_key = cfg.preshared_key;
    entry.keepalive = cfg.keepalive;
}

fn update_peer(dev: &mut LiveDevice, change: &PeerUpdate) -> bool {
    if let Some(ips) = &change.replace_allowed_ips {
        claim(dev, &change.public_key, ips);
    }
    let Some(peer) = dev.peers.get_mut(&change.public_key) else {
        return false;
    };
    if let Some(ep) = change.endpoint {
        peer.endpoint = Some(ep);
    }
    if let Some(psk) = &change.preshared_key {
        peer.preshared_key = *psk;
    }
    if let Some(ka) = change.keepalive {
        peer.keepalive = ka;
    }
    if let Some(ips) = &change.replace_allowed_ips {
        peer.allowed_ips = ips.clone();
    }
    true
}

impl WireGuard for FakeWireGuard {
    fn name(&self) -> &str {
        &self.name
    }

    async fn read(&self) -> Result<LiveDevice, WgError> {
        let mut state = self.lock();
        if state.failing_reads > 0 {
            state.failing_reads -= 1;
            return Err(WgError::Os {
                iface: self.name.clone(),
                op: "read device",
                reason: "No such device (os error 19)".to_owned(),
            });
        }
        Ok(state.device.clone())
    }

    async fn apply(&self, update: DeviceUpdate) -> Result<ApplyReport, WgError> {
        if update.is_empty() {
            return Ok(ApplyReport::default());
        }
        let delay = self.lock().apply_delay;
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        self.apply_now(update)
    }

    async fn kick(&self, peers: &[PublicKey]) {
        self.lock().kicks.extend_from_slice(peers);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::keys::PrivateKey;

    fn key(b: u8) -> PublicKey {
        PublicKey([b; 32])
    }

    fn peer(b: u8, ips: &[&str]) -> PeerConfig {
        PeerConfig {
            public_key: key(b),
            endpoint: Some(format!("192.0.2.{b}:51820").parse().unwrap()),
            preshared_key: None,
            keepalive: Some(25),
            allowed_ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
        }
    }

    fn keyed(add: Vec<PeerConfig>) -> DeviceUpdate {
        DeviceUpdate {
            private_key: Some(Arc::new(PrivateKey::from_bytes([1; 32]))),
            add,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn peers_need_a_key_and_empty_updates_write_nothing() {
        let fake = FakeWireGuard::new("wgf0");
        let err = fake
            .apply(DeviceUpdate {
                add: vec![peer(2, &[])],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(matches!(err, WgError::NoPrivateKey { .. }));
        assert_eq!(fake.apply(DeviceUpdate::default()).await.unwrap().writes, 0);
        assert!(fake.applies().is_empty());
    }

    #[tokio::test]
    async fn allowed_ips_move_like_in_the_kernel() {
        let fake = FakeWireGuard::new("wgf0");
        fake.apply(keyed(vec![
            peer(2, &["10.0.0.2/32"]),
            peer(3, &["10.0.0.3/32"]),
        ]))
        .await
        .unwrap();
        let mut take = PeerUpdate::new(key(3));
        take.replace_allowed_ips = Some(vec![
            "10.0.0.3/32".parse().unwrap(),
            "10.0.0.2/32".parse().unwrap(),
        ]);
        fake.apply(DeviceUpdate {
            update: vec![take],
            ..Default::default()
        })
        .await
        .unwrap();
        let live = fake.read().await.unwrap();
        assert!(live.peers[&key(2)].allowed_ips.is_empty());
        assert_eq!(live.peers[&key(3)].allowed_ips.len(), 2);
        fake.set_handshake(&key(3), SystemTime::UNIX_EPOCH);
        fake.add_transfer(&key(3), 10, 20);
        let live = fake.read().await.unwrap();
        assert_eq!(live.peers[&key(3)].rx_bytes, 10);
        assert_eq!(fake.applies().len(), 2);
    }
}
