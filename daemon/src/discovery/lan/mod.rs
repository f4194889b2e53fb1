//! LAN discovery over IPv4 multicast, wire-compatible with Go wgmesh (crypto-and-wire §13).
//!
//! Every node sends an ANNOUNCE envelope (its announcement without `known_peers`) to
//! `239.192.<id0>.<id1>:51830` at start (plus a short burst of repeats), every 5 s, once more
//! right away when it hears a new LAN peer, so a newcomer is known to everyone within one round
//! trip instead of up to 5 s, and right away when what it announces changes (a reload of the
//! advertised routes, say), so peers need not wait for the next round. It receives on the same
//! group: announcements that open with the mesh key and pass validation, except its own
//! (multicast loops back), become store updates with method `lan` and endpoint
//! `<packet source IP>:<advertised WireGuard port>`. Packets of other meshes fail to
//! authenticate and are dropped without a trace above `debug`.
//!
//! Unlike Go, which joins once through the default route, the group is joined and announced on
//! **every** usable LAN interface (up, multicast-capable, IPv4, not the loopback, not the mesh
//! interface; see [`membership`]), by interface index, so a host without a default or multicast
//! route, or with legs on several LANs, still finds its neighbours. The task follows the host's
//! interface list (re-read every 2 s by the `interfaces` task): it joins an interface that
//! appears or comes up (and announces on it at once), leaves one that goes down, disappears or
//! changes address, and logs each change.
//!
//! It never gives up: a join or send that fails on one interface is logged with the interface
//! name and retried (at the next interface change, or after a backoff of 1 s doubling to 30 s),
//! while the other interfaces keep working; a socket that cannot be opened is retried with the
//! same backoff. The task returns only when cancelled. Its state is the `lan` layer of
//! `GET /v1/status`: `running` with the interfaces in use as detail, or `retrying` with why none
//! works; its last success is the last announcement sent or valid one heard.
//!
//! Its metrics ([`LayerCounters`] of layer `lan`): every valid announcement heard from a peer is a
//! discovery event, every announcement sent on an interface a send.
//!
//! Layout: [`membership`] holds the decisions (pure, table-tested),
//! [`crate::system::net::multicast`] the OS calls, this module the task that moves values between
//! them.

pub mod membership;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use socket2::Socket;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use self::membership::{
    IfaceHealth, LayerReport, Membership, layer_report, plan_membership, usable,
};
use crate::crypto::envelope::{Envelope, MessageType};
use crate::keys::PublicKey;
use crate::metrics::LayerCounters;
use crate::node::LocalNode;
use crate::peers::{Method, PeerStore, PeerUpdate, UpdateOutcome};
use crate::supervisor::{BACKOFF_MAX, BACKOFF_MIN, HEALTHY_RUN, LayerHandle};
use crate::system::net::HostInterfaces;
use crate::system::net::multicast::{self as sockets, LanSocketError};
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

/// Receive errors in a row after which the receive socket is considered broken and reopened.
const MAX_RECEIVE_ERRORS: u32 = 100;

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
    /// The host's interfaces, republished whenever they change: the group is joined on each
    /// usable one.
    pub interfaces: watch::Receiver<HostInterfaces>,
    /// Index of the mesh (WireGuard) interface, never joined (by index: names can be reused).
    pub wg_ifindex: u32,
    /// Where the `lan` layer's state goes.
    pub layer: LayerHandle,
    /// The `lan` layer's metrics.
    pub counters: LayerCounters,
}

/// Why a session (one receive socket and its memberships) ended.
enum SessionEnd {
    Cancelled,
    /// The receive socket kept failing; it is reopened after a backoff.
    Broken(std::io::Error),
}

/// The group joined on one interface, with the socket that announces on it.
struct Member {
    membership: Membership,
    socket: Socket,
    /// The last send's error, while sending fails.
    send_error: Option<String>,
}

/// The state of one session: the receive socket and what is joined on it.
struct Session<'a> {
    lan: &'a LanDiscovery,
    recv: UdpSocket,
    /// The interface list the memberships were last planned from.
    interfaces: HostInterfaces,
    /// Joined interfaces, by index.
    members: BTreeMap<u32, Member>,
    /// Wanted interfaces whose join failed, by index: (name, error).
    join_errors: BTreeMap<u32, (String, String)>,
    /// When failed joins are tried again (none pending: `None`).
    retry_at: Option<tokio::time::Instant>,
    /// The delay before the next retry if it fails again.
    retry_backoff: Duration,
    /// What the layer shows now (sent only when it changes).
    reported: Option<LayerReport>,
    /// What the last announcement said (timestamp aside), to announce a change of it at once.
    announced: Option<PeerAnnouncement>,
}

impl LanDiscovery {
    /// Runs until `cancel` fires; never returns before. Failures are logged, shown on the layer
    /// and retried (see the module documentation).
    pub async fn run(self, cancel: CancellationToken) {
        let mut backoff = BACKOFF_MIN;
        loop {
            let started = tokio::time::Instant::now();
            let error = match sockets::receive_socket(self.group.port()) {
                Ok(recv) => {
                    tracing::info!(group = %self.group, "LAN discovery listening");
                    let mut interfaces = self.interfaces.clone();
                    match Session::new(&self, recv)
                        .run(&mut interfaces, &cancel)
                        .await
                    {
                        SessionEnd::Cancelled => return,
                        SessionEnd::Broken(e) => format!("LAN receive socket failed: {e}"),
                    }
                }
                Err(e) => e.to_string(),
            };
            if started.elapsed() >= HEALTHY_RUN {
                backoff = BACKOFF_MIN;
            }
            tracing::warn!(%error, retry_in_s = backoff.as_secs(), "LAN discovery cannot work; retrying");
            self.layer.retrying(&error);
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// The announcement (without timestamp) and its datagram, sealed now (`None`, logged, if
    /// sealing fails).
    fn datagram(&self) -> Option<(PeerAnnouncement, Vec<u8>)> {
        let facts = self.local.borrow().announcement();
        let mut ann = facts.clone();
        ann.timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        match self.envelope.seal(MessageType::Announce, &ann) {
            Ok(d) => Some((facts, d)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot seal LAN announcement");
                None
            }
        }
    }

    /// Stores a valid announcement from a peer; `None` for anything else (own, foreign, invalid).
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
        self.counters.event();
        let key = update.public_key;
        let outcome = self.store.update(update, Method::Lan, Instant::now());
        if outcome == UpdateOutcome::New {
            tracing::info!(peer = %key, hostname = %ann.hostname, %source, "new peer on the LAN");
        }
        Some(outcome)
    }
}

impl<'a> Session<'a> {
    fn new(lan: &'a LanDiscovery, recv: UdpSocket) -> Self {
        Self {
            lan,
            recv,
            interfaces: HostInterfaces::new(),
            members: BTreeMap::new(),
            join_errors: BTreeMap::new(),
            retry_at: None,
            retry_backoff: BACKOFF_MIN,
            reported: None,
            announced: None,
        }
    }

    async fn run(
        mut self,
        interfaces: &mut watch::Receiver<HostInterfaces>,
        cancel: &CancellationToken,
    ) -> SessionEnd {
        self.interfaces = interfaces.borrow_and_update().clone();
        // The first announcement goes out at once below, on everything joined here.
        self.follow_interfaces();
        let mut delays = STARTUP_BURST
            .into_iter()
            .chain(std::iter::repeat(ANNOUNCE_INTERVAL));
        let next = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(next);
        let mut watching = true;
        let mut local = self.lan.local.clone();
        local.mark_unchanged();
        let mut following_local = true;
        let mut receive_errors = 0u32;
        let mut buf = vec![0u8; MAX_LAN_DATAGRAM];
        loop {
            // Far in the future when no retry is pending (the branch is disabled then anyway).
            let retry_at = self
                .retry_at
                .unwrap_or_else(|| tokio::time::Instant::now() + BACKOFF_MAX);
            tokio::select! {
                () = cancel.cancelled() => return SessionEnd::Cancelled,
                () = &mut next => {
                    self.announce(None);
                    let delay = delays.next().unwrap_or(ANNOUNCE_INTERVAL);
                    next.as_mut().reset(tokio::time::Instant::now() + delay);
                }
                changed = interfaces.changed(), if watching => {
                    if changed.is_ok() {
                        self.interfaces = interfaces.borrow_and_update().clone();
                        let joined = self.follow_interfaces();
                        self.announce(Some(&joined));
                    } else {
                        // The interfaces task is gone (the daemon is stopping): keep the last
                        // list.
                        watching = false;
                    }
                }
                changed = local.changed(), if following_local => {
                    if changed.is_err() {
                        // The daemon is stopping: keep announcing the last facts.
                        following_local = false;
                        continue;
                    }
                    let now = local.borrow_and_update().announcement();
                    if self.announced.as_ref() != Some(&now) {
                        tracing::debug!(
                            routes = ?now.routable_networks,
                            "LAN discovery: what this node announces changed; announcing now"
                        );
                        self.announce(None);
                    }
                }
                () = tokio::time::sleep_until(retry_at), if self.retry_at.is_some() => {
                    let joined = self.follow_interfaces();
                    self.announce(Some(&joined));
                }
                received = self.recv.recv_from(&mut buf) => match received {
                    Ok((n, from)) => {
                        receive_errors = 0;
                        let outcome = self.lan.handle(&buf[..n], from.ip());
                        if outcome.is_some() {
                            self.lan.layer.success();
                        }
                        if outcome == Some(UpdateOutcome::New) {
                            // Answer a newcomer at once so it learns about us in one round trip.
                            self.announce(None);
                        }
                    }
                    Err(e) => {
                        receive_errors += 1;
                        tracing::debug!(error = %e, "LAN receive failed");
                        if receive_errors >= MAX_RECEIVE_ERRORS {
                            return SessionEnd::Broken(e);
                        }
                    }
                },
            }
        }
    }

    /// Joins and leaves so that the memberships match the current interface list; returns the
    /// indexes newly joined.
    fn follow_interfaces(&mut self) -> Vec<u32> {
        let group = *self.lan.group.ip();
        let wg = self.lan.wg_ifindex;
        let joined: Vec<Membership> = self
            .members
            .values()
            .map(|m| m.membership.clone())
            .collect();
        let plan = plan_membership(&joined, &self.interfaces, wg);
        for gone in &plan.leave {
            self.members.remove(&gone.index);
            let now = self.interfaces.iter().find(|i| i.index == gone.index);
            let reason = match now.map(|i| usable(i, wg)) {
                None => "is gone".to_owned(),
                Some(Err(skip)) => skip.to_string(),
                Some(Ok(_)) if now.is_some_and(|i| i.name != gone.name) => "was renamed".to_owned(),
                Some(Ok(addr)) => format!("changed address to {addr}"),
            };
            tracing::info!(
                iface = %gone.name, %group, %reason,
                "LAN discovery: left {group} on {} ({reason})", gone.name
            );
            if let Err(error) = sockets::leave(&self.recv, group, gone.index) {
                // Expected when the interface is gone: the kernel dropped the membership.
                tracing::debug!(iface = %gone.name, %group, %error, "leaving the group failed");
            }
        }
        // Every wanted interface that is not joined is in `plan.join`: the other errors are
        // about interfaces no longer wanted.
        self.join_errors
            .retain(|index, _| plan.join.iter().any(|m| m.index == *index));
        let mut newly = Vec::new();
        for m in plan.join {
            match self.join(&m) {
                Ok(socket) => {
                    tracing::info!(
                        iface = %m.name, %group, addr = %m.addr,
                        "LAN discovery: joined {group} on {}", m.name
                    );
                    self.join_errors.remove(&m.index);
                    newly.push(m.index);
                    self.members.insert(
                        m.index,
                        Member {
                            membership: m,
                            socket,
                            send_error: None,
                        },
                    );
                }
                Err(error) => {
                    let text = error.to_string();
                    let repeated = self
                        .join_errors
                        .get(&m.index)
                        .is_some_and(|(_, previous)| *previous == text);
                    if repeated {
                        tracing::debug!(iface = %m.name, %group, %error, "LAN discovery: still cannot join");
                    } else {
                        tracing::warn!(
                            iface = %m.name, %group, %error,
                            "LAN discovery: cannot use {}; retrying", m.name
                        );
                    }
                    self.join_errors.insert(m.index, (m.name, text));
                }
            }
        }
        if self.join_errors.is_empty() {
            self.retry_at = None;
            self.retry_backoff = BACKOFF_MIN;
        } else {
            self.retry_at = Some(tokio::time::Instant::now() + self.retry_backoff);
            self.retry_backoff = (self.retry_backoff * 2).min(BACKOFF_MAX);
        }
        self.report();
        newly
    }

    /// Opens the send socket for `m` and joins the group on its interface.
    fn join(&self, m: &Membership) -> Result<Socket, LanSocketError> {
        let socket = sockets::send_socket(m.addr)?;
        sockets::join(&self.recv, *self.lan.group.ip(), m.index)?;
        Ok(socket)
    }

    /// Sends one announcement on every joined interface (`None`) or on those listed.
    fn announce(&mut self, only: Option<&[u32]>) {
        if only.is_some_and(<[u32]>::is_empty) || self.members.is_empty() {
            return;
        }
        let Some((facts, datagram)) = self.lan.datagram() else {
            return;
        };
        let group = self.lan.group;
        let mut sent = false;
        for (index, m) in &mut self.members {
            if only.is_some_and(|only| !only.contains(index)) {
                continue;
            }
            let iface = &m.membership.name;
            match sockets::send(&m.socket, &datagram, group) {
                Ok(()) => {
                    sent = true;
                    self.lan.counters.sent();
                    if m.send_error.take().is_some() {
                        tracing::info!(%iface, %group, "LAN discovery: sending on {iface} works again");
                    }
                }
                Err(error) => {
                    let text = error.to_string();
                    if m.send_error.as_deref() == Some(text.as_str()) {
                        tracing::debug!(%iface, %group, %error, "LAN announce failed again");
                    } else {
                        tracing::warn!(%iface, %group, %error, "LAN discovery: cannot send on {iface}");
                    }
                    m.send_error = Some(text);
                }
            }
        }
        if sent {
            self.lan.layer.success();
            self.announced = Some(facts);
        }
        self.report();
    }

    /// Publishes the layer's state when it changed.
    fn report(&mut self) {
        let mut health: BTreeMap<u32, IfaceHealth> = self
            .members
            .iter()
            .map(|(index, m)| {
                let health = IfaceHealth {
                    name: m.membership.name.clone(),
                    problem: m.send_error.clone(),
                };
                (*index, health)
            })
            .collect();
        for (index, (name, error)) in &self.join_errors {
            health.insert(
                *index,
                IfaceHealth {
                    name: name.clone(),
                    problem: Some(error.clone()),
                },
            );
        }
        let health: Vec<IfaceHealth> = health.into_values().collect();
        let report = layer_report(&self.interfaces, self.lan.wg_ifindex, &health);
        if self.reported.as_ref() == Some(&report) {
            return;
        }
        match &report {
            LayerReport::Running(detail) => {
                tracing::info!(interfaces = %detail, "LAN discovery running");
                self.lan.layer.running(Some(detail.clone()));
            }
            LayerReport::Retrying(error) => {
                tracing::warn!(%error, "LAN discovery has no working interface; retrying");
                self.lan.layer.retrying(error);
            }
        }
        self.reported = Some(report);
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::system::net::HostInterface;
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

    #[test]
    fn valid_announcements_from_peers_count_as_discovery_events() {
        let group = SocketAddrV4::new(Ipv4Addr::new(239, 255, 77, 3), 0);
        let (lan, _registry, _tx) = task(group, HostInterfaces::new());
        let metrics = crate::metrics::Metrics::default();
        let lan = LanDiscovery {
            counters: metrics.layer("lan"),
            ..lan
        };
        let src: IpAddr = "192.168.1.7".parse().unwrap();
        let own = lan.local.borrow().announcement();
        let peer = PeerAnnouncement {
            wg_pubkey: PublicKey([5; 32]).to_string(),
            ..own.clone()
        };
        let seal = |ann: &PeerAnnouncement| {
            let mut ann = ann.clone();
            ann.timestamp = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
            lan.envelope.seal(MessageType::Announce, &ann).unwrap()
        };
        // (datagram, counted)
        let table = [
            (seal(&peer), true),
            (seal(&peer), true),
            (seal(&own), false),
            (b"not an envelope".to_vec(), false),
            (
                Envelope::new(&[8; 32])
                    .seal(MessageType::Announce, &peer)
                    .unwrap(),
                false,
            ),
        ];
        let mut want = 0;
        for (datagram, counted) in table {
            lan.handle(&datagram, src);
            want += u64::from(counted);
            assert_eq!(metrics.values().layers["lan"], (want, 0));
        }
    }

    /// A LAN task on `group` with these interfaces, reporting to a fresh registry.
    fn task(
        group: SocketAddrV4,
        interfaces: HostInterfaces,
    ) -> (
        LanDiscovery,
        crate::supervisor::Registry,
        watch::Sender<HostInterfaces>,
    ) {
        let registry = crate::supervisor::Registry::default();
        let layer = registry.layer("lan", crate::supervisor::LayerState::Running);
        let (tx, rx) = watch::channel(interfaces);
        let lan = LanDiscovery {
            envelope: Envelope::new(&[7; 32]),
            group,
            local: watch::channel(crate::node::tests::local()).1,
            store: Arc::new(PeerStore::new(10)),
            interfaces: rx,
            wg_ifindex: 4,
            layer,
            counters: LayerCounters::default(),
        };
        (lan, registry, tx)
    }

    /// Waits (at most 10 s) until the `lan` layer's last error contains `text`.
    async fn wait_error(registry: &crate::supervisor::Registry, text: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let layer = registry.layers()["lan"].clone();
            if layer.state == crate::supervisor::LayerState::Retrying
                && layer
                    .last_error
                    .as_deref()
                    .is_some_and(|e| e.contains(text))
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never retrying with {text:?}: {layer:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_busy_port_is_retried_inside_the_task_until_it_is_free() {
        // A socket without SO_REUSEADDR holds the port: ours cannot bind it.
        let blocker = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        let port = blocker.local_addr().unwrap().port();
        let group = SocketAddrV4::new(Ipv4Addr::new(239, 255, 77, 1), port);
        let (lan, registry, _tx) = task(group, HostInterfaces::new());
        let cancel = CancellationToken::new();
        let run = tokio::spawn(lan.run(cancel.clone()));
        wait_error(&registry, &format!("cannot listen on UDP port {port}")).await;
        drop(blocker);
        // Retried after the backoff, inside the task: now it listens and says why it is idle.
        wait_error(
            &registry,
            "no up, multicast-capable IPv4 interface besides the mesh interface",
        )
        .await;
        assert!(!run.is_finished(), "the task ended");
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(2), run)
            .await
            .expect("the task stops on cancellation")
            .unwrap();
    }

    #[tokio::test]
    async fn a_failing_interface_is_named_and_forgotten_when_it_goes_away() {
        let group = SocketAddrV4::new(Ipv4Addr::new(239, 255, 77, 2), 0);
        // Usable as far as the flags go, but no such index exists: the join fails with ENODEV.
        let ghost = HostInterface {
            index: 999_999,
            name: "eth9".into(),
            up: true,
            multicast: true,
            loopback: false,
            addresses: vec!["127.0.0.1/8".parse().unwrap()],
        };
        let (lan, registry, tx) = task(group, vec![ghost]);
        let cancel = CancellationToken::new();
        let run = tokio::spawn(lan.run(cancel.clone()));
        wait_error(&registry, "eth9: cannot join 239.255.77.2: No such device").await;
        tx.send_replace(HostInterfaces::new());
        wait_error(
            &registry,
            "no up, multicast-capable IPv4 interface besides the mesh interface",
        )
        .await;
        assert!(!run.is_finished(), "the task ended");
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(2), run)
            .await
            .expect("the task stops on cancellation")
            .unwrap();
    }
}
