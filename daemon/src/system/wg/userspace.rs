//! WireGuard in this process: an embedded `gotatun` device (Mullvad's maintained boringtun fork),
//! driven through its typed Rust API on our own tokio runtime.
//!
//! The adapter follows the rules measured in `netlab/GOTATUN.md`:
//! - the device is built with the port only; the private key is set before any peer (a peer
//!   without a key panics the engine, G4; a device built with a key but no peers never opens its
//!   socket, G5);
//! - changes are diffs: new keys are added, existing peers are changed in place with
//!   `modify_peer` touching only the given fields (no new handshake, counters kept, a roaming
//!   endpoint left alone), gone keys are removed;
//! - an allowed IP that moves to another peer is first taken off its old owner in the same write
//!   (the engine would keep listing it there, and once the new owner left, the old one would
//!   black-hole it forever, G9); our own record of who owns which prefix is the truth for that;
//! - peer changes go in writes of at most [`CHUNK`] peers with a yield in between, because every
//!   write stalls the data plane for its duration;
//! - the device stops inside the runtime (`stop`), before the runtime ends.

use std::collections::HashMap;
use std::time::SystemTime;

use gotatun::device::{self, DefaultDeviceTransports, Device, Peer};
use gotatun::x25519;
use ipnet::IpNet;
use ipnetwork::IpNetwork;
use tokio::sync::Mutex;

use super::{
    ApplyReport, DeviceUpdate, LiveDevice, LivePeer, PeerConfig, PeerUpdate, WgError, WireGuard,
};
use crate::keys::{PresharedKey, PublicKey};

/// Most peers changed in one device write (about 15 ms of data-plane stall each).
pub const CHUNK: usize = 100;
/// How long a kick waits for the handshake it started (it keeps going in the engine after).
const KICK_WAIT: std::time::Duration = std::time::Duration::from_millis(300);

/// Who holds which allowed IP, as we configured it.
#[derive(Default)]
struct Record {
    has_key: bool,
    ips: HashMap<PublicKey, Vec<IpNet>>,
    owner: HashMap<IpNet, PublicKey>,
}

impl Record {
    fn set_ips(&mut self, peer: PublicKey, ips: Vec<IpNet>) {
        self.drop_peer(&peer);
        for ip in &ips {
            self.owner.insert(*ip, peer);
        }
        self.ips.insert(peer, ips);
    }

    fn drop_peer(&mut self, peer: &PublicKey) {
        if let Some(old) = self.ips.remove(peer) {
            for ip in old {
                if self.owner.get(&ip) == Some(peer) {
                    self.owner.remove(&ip);
                }
            }
        }
    }

    /// Peers other than `claimer` that hold one of `ips`, with the prefixes they keep.
    fn losers(&self, claimer: &PublicKey, ips: &[IpNet]) -> Vec<(PublicKey, Vec<IpNet>)> {
        let mut losers: Vec<PublicKey> = ips
            .iter()
            .filter_map(|ip| self.owner.get(ip))
            .filter(|owner| *owner != claimer)
            .copied()
            .collect();
        losers.sort();
        losers.dedup();
        losers
            .into_iter()
            .map(|l| {
                let keep = self.ips.get(&l).map_or_else(Vec::new, |held| {
                    held.iter()
                        .filter(|ip| !ips.contains(ip))
                        .copied()
                        .collect()
                });
                (l, keep)
            })
            .collect()
    }
}

/// One peer operation inside a write.
enum Op {
    Remove(PublicKey),
    Update(PeerUpdate),
    Add(PeerConfig),
}

/// An embedded userspace WireGuard device.
pub struct UserspaceWireGuard {
    name: String,
    device: Device<DefaultDeviceTransports>,
    /// Serialises applies and holds the allowed-IP record they maintain.
    record: Mutex<Record>,
}

fn to_network(net: &IpNet) -> IpNetwork {
    let net = net.trunc();
    IpNetwork::new(net.addr(), net.prefix_len())
        .unwrap_or_else(|_| unreachable!("an IpNet prefix length is valid for its family"))
}

fn from_network(net: &IpNetwork) -> IpNet {
    IpNet::new(net.ip(), net.prefix())
        .unwrap_or_else(|_| unreachable!("an IpNetwork prefix length is valid for its family"))
}

fn canonical(ips: &[IpNet]) -> Vec<IpNet> {
    let mut out: Vec<IpNet> = ips.iter().map(IpNet::trunc).collect();
    out.dedup();
    out
}

fn engine_peer(cfg: &PeerConfig, ips: &[IpNet]) -> Peer {
    let mut peer = Peer::new(x25519::PublicKey::from(cfg.public_key.0))
        .with_allowed_ips(ips.iter().map(to_network));
    peer.endpoint = cfg.endpoint;
    peer.preshared_key = cfg.preshared_key.map(|k| k.0);
    peer.keepalive = cfg.keepalive;
    peer
}

impl UserspaceWireGuard {
    /// Creates the tun device `iface` and the engine, listening on `listen_port` once a private
    /// key is applied. Must run inside a tokio runtime. Addresses and link state are set by the
    /// caller through netlink.
    pub async fn create(iface: &str, listen_port: u16) -> Result<Self, WgError> {
        let engine = |e: device::Error| WgError::Engine {
            iface: iface.to_owned(),
            reason: e.to_string(),
        };
        let device = device::build()
            .with_default_udp()
            .create_tun(iface)
            .map_err(engine)?
            .with_listen_port(listen_port)
            .build()
            .await
            .map_err(engine)?;
        Ok(Self {
            name: iface.to_owned(),
            device,
            record: Mutex::default(),
        })
    }

    /// Stops the engine: the tun device and the UDP socket go away at once.
    pub async fn stop(self) {
        self.device.stop().await;
    }

    fn engine_err(&self, e: device::Error) -> WgError {
        WgError::Engine {
            iface: self.name.clone(),
            reason: e.to_string(),
        }
    }

    async fn write_chunk(
        &self,
        rec: &mut Record,
        ops: &[Op],
        report: &mut ApplyReport,
    ) -> Result<(), WgError> {
        let counts = self
            .device
            .write(async |w| {
                let mut c = ApplyReport::default();
                for op in ops {
                    match op {
                        Op::Remove(key) => {
                            if w.remove_peer(&x25519::PublicKey::from(key.0)).await {
                                c.removed += 1;
                            }
                            rec.drop_peer(key);
                        }
                        Op::Update(u) => {
                            if let Some(ips) = &u.replace_allowed_ips {
                                let ips = canonical(ips);
                                c.updated += release(w, rec, &u.public_key, &ips).await;
                            }
                            let found = w
                                .modify_peer(&x25519::PublicKey::from(u.public_key.0), |m| {
                                    if let Some(ep) = u.endpoint {
                                        m.set_endpoint(Some(ep));
                                    }
                                    if let Some(psk) = u.preshared_key {
                                        m.set_preshared_key(psk.map(|k| k.0));
                                    }
                                    if let Some(ka) = u.keepalive {
                                        m.set_keepalive(ka);
                                    }
                                    if let Some(ips) = &u.replace_allowed_ips {
                                        m.clear_allowed_ips();
                                        m.add_allowed_ips(canonical(ips).iter().map(to_network));
                                    }
                                })
                                .await;
                            if found {
                                c.updated += 1;
                                if let Some(ips) = &u.replace_allowed_ips {
                                    rec.set_ips(u.public_key, canonical(ips));
                                }
                            } else {
                                tracing::debug!(peer = %u.public_key, "update for a peer the device does not have");
                            }
                        }
                        Op::Add(cfg) => {
                            let ips = canonical(&cfg.allowed_ips);
                            c.updated += release(w, rec, &cfg.public_key, &ips).await;
                            if w.add_peer(engine_peer(cfg, &ips)) {
                                c.added += 1;
                            } else {
                                // Already there (added behind our back or twice): set every field.
                                w.modify_peer(&x25519::PublicKey::from(cfg.public_key.0), |m| {
                                    m.set_endpoint(cfg.endpoint);
                                    m.set_preshared_key(cfg.preshared_key.map(|k| k.0));
                                    m.set_keepalive(cfg.keepalive);
                                    m.clear_allowed_ips();
                                    m.add_allowed_ips(ips.iter().map(to_network));
                                })
                                .await;
                                c.updated += 1;
                            }
                            rec.set_ips(cfg.public_key, ips);
                        }
                    }
                }
                c
            })
            .await
            .map_err(|e| self.engine_err(e))?;
        report.writes += 1;
        report.added += counts.added;
        report.updated += counts.updated;
        report.removed += counts.removed;
        Ok(())
    }
}

/// Takes `ips` off every other peer that holds one of them (G9), inside the current write.
/// Returns how many peers were changed.
async fn release(
    w: &mut device::configure::DeviceWrite<'_, DefaultDeviceTransports>,
    rec: &mut Record,
    claimer: &PublicKey,
    ips: &[IpNet],
) -> usize {
    let losers = rec.losers(claimer, ips);
    for (loser, keep) in &losers {
        w.modify_peer(&x25519::PublicKey::from(loser.0), |m| {
            m.clear_allowed_ips();
            m.add_allowed_ips(keep.iter().map(to_network));
        })
        .await;
        rec.set_ips(*loser, keep.clone());
    }
    losers.len()
}

impl WireGuard for UserspaceWireGuard {
    fn name(&self) -> &str {
        &self.name
    }

    async fn read(&self) -> Result<LiveDevice, WgError> {
        let (listen_port, public_key, peers) = self
            .device
            .read(async |r| {
                let public_key = r
                    .private_key()
                    .map(|k| PublicKey(x25519::PublicKey::from(k).to_bytes()));
                (r.listen_port(), public_key, r.peers().await)
            })
            .await;
        let now = SystemTime::now();
        let peers = peers
            .into_iter()
            .map(|ps| {
                let live = LivePeer {
                    endpoint: ps.peer.endpoint,
                    allowed_ips: ps.peer.allowed_ips.iter().map(from_network).collect(),
                    preshared_key: ps.peer.preshared_key.map(PresharedKey),
                    keepalive: ps.peer.keepalive,
                    last_handshake: ps.stats.last_handshake.and_then(|ago| now.checked_sub(ago)),
                    rx_bytes: ps.stats.rx_bytes as u64,
                    tx_bytes: ps.stats.tx_bytes as u64,
                };
                (PublicKey(ps.peer.public_key.to_bytes()), live)
            })
            .collect();
        Ok(LiveDevice {
            public_key,
            listen_port,
            peers,
        })
    }

    async fn apply(&self, update: DeviceUpdate) -> Result<ApplyReport, WgError> {
        let mut report = ApplyReport::default();
        if update.is_empty() {
            return Ok(report);
        }
        let mut rec = self.record.lock().await;
        let touches_peers = !update.add.is_empty() || update.update.iter().any(|u| !u.is_noop());
        if touches_peers && !rec.has_key && update.private_key.is_none() {
            return Err(WgError::NoPrivateKey {
                iface: self.name.clone(),
            });
        }
        // Key and port first, in their own write: they rebind the socket and restart the tasks.
        if update.private_key.is_some() || update.listen_port.is_some() {
            let key = update
                .private_key
                .as_ref()
                .map(|k| x25519::StaticSecret::from(*k.expose_secret()));
            self.device
                .write(async |w| {
                    if let Some(key) = key {
                        w.set_private_key(key).await;
                    }
                    if let Some(port) = update.listen_port {
                        w.set_listen_port(port);
                    }
                })
                .await
                .map_err(|e| self.engine_err(e))?;
            report.writes += 1;
            rec.has_key |= update.private_key.is_some();
        }
        // Removals first, then changes (which may shrink peers), then new peers.
        let ops: Vec<Op> = update
            .remove
            .into_iter()
            .map(Op::Remove)
            .chain(
                update
                    .update
                    .into_iter()
                    .filter(|u| !u.is_noop())
                    .map(Op::Update),
            )
            .chain(update.add.into_iter().map(Op::Add))
            .collect();
        for (i, chunk) in ops.chunks(CHUNK).enumerate() {
            if i > 0 {
                tokio::task::yield_now().await;
            }
            self.write_chunk(&mut rec, chunk, &mut report).await?;
        }
        Ok(report)
    }

    async fn kick(&self, peers: &[PublicKey]) {
        let kicks = peers.iter().map(|k| async move {
            let key = x25519::PublicKey::from(k.0);
            // Sends the initiation at once, then waits for the answer; only the wait is cut short.
            let _ = tokio::time::timeout(KICK_WAIT, self.device.force_handshake(&key)).await;
        });
        futures_util::future::join_all(kicks).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(b: u8) -> PublicKey {
        PublicKey([b; 32])
    }

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn record_finds_who_must_give_up_a_prefix() {
        let mut rec = Record::default();
        rec.set_ips(k(1), vec![n("10.0.0.1/32"), n("10.1.0.0/16")]);
        rec.set_ips(k(2), vec![n("10.0.0.2/32")]);
        // k(3) takes 10.1.0.0/16 from k(1); k(1) keeps its /32.
        let losers = rec.losers(&k(3), &[n("10.1.0.0/16"), n("10.0.0.3/32")]);
        assert_eq!(losers, vec![(k(1), vec![n("10.0.0.1/32")])]);
        // Re-asserting one's own prefixes loses nobody.
        assert!(rec.losers(&k(2), &[n("10.0.0.2/32")]).is_empty());
        rec.drop_peer(&k(1));
        assert!(rec.losers(&k(3), &[n("10.1.0.0/16")]).is_empty());
    }

    #[test]
    fn networks_convert_canonically() {
        assert_eq!(
            canonical(&[n("10.1.2.3/16"), n("10.1.0.0/16")]),
            vec![n("10.1.0.0/16")]
        );
        let v6 = n("fd00::1/64");
        assert_eq!(from_network(&to_network(&v6)), n("fd00::/64"));
    }
}
