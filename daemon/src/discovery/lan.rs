//! LAN discovery over IPv4 multicast, wire-compatible with Go wgmesh (crypto-and-wire §13).
//!
//! Every node sends an ANNOUNCE envelope (its announcement without `known_peers`) to
//! `239.192.<id0>.<id1>:51830` at start (plus a short burst of repeats), every 5 s, and once more
//! right away when it hears a new LAN peer, so a newcomer is known to everyone within one round
//! trip instead of up to 5 s. It
//! receives on the same group: announcements that open with the mesh key and pass validation,
//! except its own (multicast loops back), become store updates with method `lan` and endpoint
//! `<packet source IP>:<advertised WireGuard port>`. Packets of other meshes fail to authenticate
//! and are dropped without a trace above `debug`.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::crypto::envelope::{Envelope, MessageType};
use crate::keys::PublicKey;
use crate::node::LocalNode;
use crate::peers::{Method, PeerStore, PeerUpdate, UpdateOutcome};
use crate::wire::PeerAnnouncement;
use crate::wire::announcement::split_host_port;

/// Time between announcements.
pub const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(5);
/// Extra announcements right after start (delays between them): nodes started together miss
/// each other's very first packet, so a few early repeats let them meet in about a second instead
/// of one full interval.
pub const STARTUP_BURST: [Duration; 3] = [
    Duration::from_millis(250),
    Duration::from_millis(750),
    Duration::from_millis(1500),
];
/// Largest LAN datagram read (Go `LANMaxMessageSize`).
pub const MAX_LAN_DATAGRAM: usize = 4096;
/// WireGuard port assumed when an announcement's endpoint does not parse.
const DEFAULT_WG_PORT: u16 = 51820;

/// The WireGuard endpoint of a LAN peer: the packet's source address with the port it advertised
/// (the advertised host is always replaced: it is often a wildcard or a public address).
pub fn lan_endpoint(source: IpAddr, advertised: &str) -> SocketAddr {
    let port = split_host_port(advertised)
        .ok()
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .filter(|p| *p != 0)
        .unwrap_or(DEFAULT_WG_PORT);
    SocketAddr::new(source, port)
}

/// Turns a validated announcement heard from `source` into a store update. `None` for our own.
pub fn to_update(ann: &PeerAnnouncement, source: IpAddr, own: &PublicKey) -> Option<PeerUpdate> {
    let public_key: PublicKey = ann.wg_pubkey.parse().ok()?;
    if public_key == *own {
        return None;
    }
    Some(PeerUpdate {
        public_key,
        hostname: ann.hostname.clone(),
        mesh_ip: ann.mesh_ip.parse().ok(),
        mesh_ipv6: ann.mesh_ipv6.parse().ok(),
        endpoint: Some(lan_endpoint(source, &ann.wg_endpoint)),
        introducer: ann.introducer,
        routable_networks: Some(
            ann.routable_networks
                .iter()
                .filter_map(|n| n.parse().ok())
                .collect(),
        ),
        nat_type: (!ann.nat_type.is_empty()).then(|| ann.nat_type.clone()),
        last_seen: None,
    })
}

/// The LAN discovery task.
#[derive(Clone)]
pub struct LanDiscovery {
    /// Envelope codec with the mesh key.
    pub envelope: Envelope,
    /// Multicast group and port.
    pub group: SocketAddrV4,
    /// This node: its key (own packets are dropped) and what it announces (read at every send,
    /// so a reload is announced at once).
    pub local: watch::Receiver<LocalNode>,
    /// Where discovered peers go.
    pub store: Arc<PeerStore>,
}

fn receive_socket(group: SocketAddrV4) -> io::Result<UdpSocket> {
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    // Other wgmesh daemons (Go or Rust) on this host listen on the same group and port.
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    sock.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, group.port())).into())?;
    sock.join_multicast_v4(group.ip(), &Ipv4Addr::UNSPECIFIED)?;
    sock.set_multicast_loop_v4(true)?;
    sock.set_nonblocking(true)?;
    UdpSocket::from_std(sock.into())
}

impl LanDiscovery {
    /// Runs until `cancel` fires. Fails only if the sockets cannot be set up.
    pub async fn run(self, cancel: CancellationToken) -> io::Result<()> {
        let recv = receive_socket(self.group)?;
        let send = UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))).await?;
        send.set_multicast_ttl_v4(1)?;
        tracing::info!(group = %self.group, "LAN discovery running");
        let mut delays = STARTUP_BURST
            .into_iter()
            .chain(std::iter::repeat(ANNOUNCE_INTERVAL));
        let next = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(next);
        let mut buf = vec![0u8; MAX_LAN_DATAGRAM];
        loop {
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                () = &mut next => {
                    self.announce(&send).await;
                    let delay = delays.next().unwrap_or(ANNOUNCE_INTERVAL);
                    next.as_mut().reset(tokio::time::Instant::now() + delay);
                }
                received = recv.recv_from(&mut buf) => match received {
                    Ok((n, from)) => {
                        if self.handle(&buf[..n], from.ip()) == Some(UpdateOutcome::New) {
                            // Answer a newcomer at once so it learns about us in one round trip.
                            self.announce(&send).await;
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "LAN receive failed"),
                },
            }
        }
    }

    async fn announce(&self, send: &UdpSocket) {
        let mut ann = self.local.borrow().announcement();
        ann.timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let datagram = match self.envelope.seal(MessageType::Announce, &ann) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "cannot seal LAN announcement");
                return;
            }
        };
        if let Err(e) = send.send_to(&datagram, SocketAddr::V4(self.group)).await {
            tracing::debug!(error = %e, group = %self.group, "LAN announce failed");
        }
    }

    fn handle(&self, datagram: &[u8], source: IpAddr) -> Option<UpdateOutcome> {
        let ann = match self.envelope.open_announcement(datagram, SystemTime::now()) {
            Ok((_, ann)) => ann,
            Err(e) => {
                tracing::debug!(%source, error = %e, "dropped LAN packet");
                return None;
            }
        };
        let own_key = self.local.borrow().public_key;
        let update = to_update(&ann, source, &own_key)?;
        let key = update.public_key;
        let outcome = self.store.update(update, Method::Lan, Instant::now());
        if outcome == UpdateOutcome::New {
            tracing::info!(peer = %key, hostname = %ann.hostname, %source, "new peer on the LAN");
        }
        Some(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::PROTOCOL;

    #[test]
    fn endpoint_uses_the_source_address_and_the_advertised_port() {
        let src: IpAddr = "192.168.1.42".parse().unwrap();
        for (advertised, want) in [
            ("203.0.113.9:51820", "192.168.1.42:51820"),
            ("0.0.0.0:51999", "192.168.1.42:51999"),
            ("[2001:db8::1]:4000", "192.168.1.42:4000"),
            ("not-an-endpoint", "192.168.1.42:51820"),
            ("", "192.168.1.42:51820"),
        ] {
            assert_eq!(
                lan_endpoint(src, advertised).to_string(),
                want,
                "{advertised}"
            );
        }
    }

    #[test]
    fn own_announcements_are_ignored_and_others_become_lan_updates() {
        let own = PublicKey([0; 32]);
        let mut ann = PeerAnnouncement {
            protocol: PROTOCOL.into(),
            wg_pubkey: own.to_string(),
            hostname: "me".into(),
            mesh_ip: "10.1.0.1".into(),
            wg_endpoint: "0.0.0.0:51820".into(),
            routable_networks: vec!["192.168.50.0/24".into()],
            ..Default::default()
        };
        let src = "192.168.1.7".parse().unwrap();
        assert!(to_update(&ann, src, &own).is_none());
        ann.wg_pubkey = PublicKey([1; 32]).to_string();
        let u = to_update(&ann, src, &own).unwrap();
        assert_eq!(u.endpoint, Some("192.168.1.7:51820".parse().unwrap()));
        assert_eq!(u.mesh_ip, Some("10.1.0.1".parse().unwrap()));
        assert_eq!(
            u.routable_networks,
            Some(vec!["192.168.50.0/24".parse().unwrap()])
        );
    }
}
