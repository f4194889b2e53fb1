//! The smallest change that turns the live device into the desired one. Pure.
//!
//! It compares with what the device really has (no cache of what was applied before), so a peer
//! removed or changed behind the daemon's back is put back on the next pass. Endpoints are the
//! one exception to "desired wins": WireGuard follows a peer that roams, so while a session is
//! fresh (handshake within [`FRESH_HANDSHAKE`]) the endpoint the device learned is kept.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;

use super::desired::{DesiredDevice, DesiredPeer};
use crate::keys::{PrivateKey, PublicKey};
use crate::system::wg::{DeviceUpdate, LiveDevice, LivePeer, PeerConfig, PeerUpdate};

/// A handshake this recent means the live endpoint works (Go's stale threshold is 150 s).
pub const FRESH_HANDSHAKE: Duration = Duration::from_secs(150);

/// The device's own settings.
#[derive(Debug, Clone, Copy)]
pub struct DeviceSettings<'a> {
    /// The private key the device must have.
    pub private_key: &'a Arc<PrivateKey>,
    /// Its public key.
    pub public_key: PublicKey,
    /// The UDP port it must listen on.
    pub listen_port: u16,
}

/// Computes the update from `live` to `desired` at time `now`.
pub fn diff(
    live: &LiveDevice,
    desired: &DesiredDevice,
    me: &DeviceSettings<'_>,
    now: SystemTime,
) -> DeviceUpdate {
    let mut update = DeviceUpdate::default();
    if live.public_key != Some(me.public_key) {
        update.private_key = Some(me.private_key.clone());
    }
    if live.listen_port != me.listen_port {
        update.listen_port = Some(me.listen_port);
    }
    update.remove = live
        .peers
        .keys()
        .filter(|k| !desired.peers.contains_key(k))
        .copied()
        .collect();
    for (key, want) in &desired.peers {
        match live.peers.get(key) {
            None => update.add.push(PeerConfig {
                public_key: *key,
                endpoint: want.endpoint,
                preshared_key: Some(want.preshared_key),
                keepalive: Some(want.keepalive),
                allowed_ips: want.allowed_ips.clone(),
            }),
            Some(have) => {
                let change = peer_change(*key, have, want, now);
                if !change.is_noop() {
                    update.update.push(change);
                }
            }
        }
    }
    update
}

fn peer_change(key: PublicKey, have: &LivePeer, want: &DesiredPeer, now: SystemTime) -> PeerUpdate {
    let mut change = PeerUpdate::new(key);
    let fresh = have
        .last_handshake
        .and_then(|t| now.duration_since(t).ok())
        .is_some_and(|age| age < FRESH_HANDSHAKE);
    if want.endpoint.is_some() && have.endpoint != want.endpoint && !fresh {
        change.endpoint = want.endpoint;
    }
    // Compare the value, not only its presence: a PSK changed behind our back (or by an
    // operator's `wg set`) would otherwise break every later handshake with that peer.
    if have.preshared_key != Some(want.preshared_key) {
        change.preshared_key = Some(Some(want.preshared_key));
    }
    if have.keepalive != Some(want.keepalive) {
        change.keepalive = Some(Some(want.keepalive));
    }
    let have_ips: BTreeSet<IpNet> = have.allowed_ips.iter().map(IpNet::trunc).collect();
    let want_ips: BTreeSet<IpNet> = want.allowed_ips.iter().copied().collect();
    if have_ips != want_ips {
        change.replace_allowed_ips = Some(want.allowed_ips.clone());
    }
    change
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::keys::PresharedKey;

    const PSK: PresharedKey = PresharedKey([9; 32]);

    fn key(b: u8) -> PublicKey {
        PublicKey([b; 32])
    }

    fn want(b: u8) -> DesiredPeer {
        DesiredPeer {
            endpoint: Some(format!("192.0.2.{b}:51820").parse().unwrap()),
            preshared_key: PSK,
            keepalive: 25,
            allowed_ips: vec![format!("10.1.0.{b}/32").parse().unwrap()],
        }
    }

    fn have(b: u8) -> LivePeer {
        LivePeer {
            endpoint: Some(format!("192.0.2.{b}:51820").parse().unwrap()),
            allowed_ips: vec![format!("10.1.0.{b}/32").parse().unwrap()],
            preshared_key: Some(PSK),
            keepalive: Some(25),
            last_handshake: None,
            rx_bytes: 0,
            tx_bytes: 0,
        }
    }

    struct Fixture {
        private: Arc<PrivateKey>,
    }

    impl Fixture {
        fn new() -> Self {
            Self {
                private: Arc::new(PrivateKey::from_bytes([3; 32])),
            }
        }
        fn me(&self) -> DeviceSettings<'_> {
            DeviceSettings {
                private_key: &self.private,
                public_key: self.private.public_key(),
                listen_port: 51820,
            }
        }
        fn live(&self, peers: Vec<(u8, LivePeer)>) -> LiveDevice {
            LiveDevice {
                public_key: Some(self.private.public_key()),
                listen_port: 51820,
                peers: peers.into_iter().map(|(b, p)| (key(b), p)).collect(),
            }
        }
    }

    fn desired(peers: Vec<u8>) -> DesiredDevice {
        DesiredDevice {
            peers: peers
                .into_iter()
                .map(|b| (key(b), want(b)))
                .collect::<BTreeMap<_, _>>(),
            ..DesiredDevice::default()
        }
    }

    #[test]
    fn equal_state_gives_an_empty_update() {
        let f = Fixture::new();
        let u = diff(
            &f.live(vec![(2, have(2))]),
            &desired(vec![2]),
            &f.me(),
            SystemTime::now(),
        );
        assert!(u.is_empty(), "{u:?}");
    }

    #[test]
    fn fresh_device_gets_key_port_and_peers() {
        let f = Fixture::new();
        let u = diff(
            &LiveDevice::default(),
            &desired(vec![2, 3]),
            &f.me(),
            SystemTime::now(),
        );
        assert!(u.private_key.is_some());
        assert_eq!(u.listen_port, Some(51820));
        assert_eq!(u.add.len(), 2);
        assert_eq!(u.add[0].keepalive, Some(25));
        assert_eq!(u.add[0].preshared_key, Some(PSK));
    }

    #[test]
    fn peers_removed_behind_our_back_come_back_and_unknown_ones_go() {
        let f = Fixture::new();
        let u = diff(
            &f.live(vec![(4, have(4))]),
            &desired(vec![2]),
            &f.me(),
            SystemTime::now(),
        );
        assert_eq!(
            u.add.iter().map(|p| p.public_key).collect::<Vec<_>>(),
            vec![key(2)]
        );
        assert_eq!(u.remove, vec![key(4)]);
    }

    #[test]
    fn changed_fields_only() {
        let f = Fixture::new();
        let mut h = have(2);
        h.keepalive = None;
        h.preshared_key = None;
        h.allowed_ips.push("10.99.0.0/16".parse().unwrap());
        let u = diff(
            &f.live(vec![(2, h)]),
            &desired(vec![2]),
            &f.me(),
            SystemTime::now(),
        );
        let c = &u.update[0];
        assert_eq!(c.endpoint, None);
        assert_eq!(c.keepalive, Some(Some(25)));
        assert_eq!(c.preshared_key, Some(Some(PSK)));
        assert_eq!(
            c.replace_allowed_ips,
            Some(vec!["10.1.0.2/32".parse().unwrap()])
        );
    }

    #[test]
    fn a_changed_preshared_key_is_corrected() {
        let f = Fixture::new();
        let mut h = have(2);
        h.preshared_key = Some(PresharedKey([1; 32]));
        let u = diff(
            &f.live(vec![(2, h)]),
            &desired(vec![2]),
            &f.me(),
            SystemTime::now(),
        );
        assert_eq!(u.update.len(), 1, "{u:?}");
        assert_eq!(u.update[0].preshared_key, Some(Some(PSK)));
        assert_eq!(u.update[0].replace_allowed_ips, None);
    }

    #[test]
    fn roamed_endpoint_is_kept_while_the_session_is_fresh() {
        let f = Fixture::new();
        let now = SystemTime::now();
        let mut roamed = have(2);
        roamed.endpoint = Some("198.51.100.7:40000".parse().unwrap());
        roamed.last_handshake = Some(now - Duration::from_secs(30));
        let u = diff(
            &f.live(vec![(2, roamed.clone())]),
            &desired(vec![2]),
            &f.me(),
            now,
        );
        assert!(
            u.is_empty(),
            "a working roamed endpoint was overridden: {u:?}"
        );
        roamed.last_handshake = Some(now - Duration::from_secs(200));
        let u = diff(&f.live(vec![(2, roamed)]), &desired(vec![2]), &f.me(), now);
        assert_eq!(u.update[0].endpoint, want(2).endpoint);
    }
}
