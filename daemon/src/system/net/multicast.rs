//! The LAN discovery sockets (IPv4 multicast): the only part of LAN discovery that calls the OS.
//!
//! - One **receive** socket bound to `0.0.0.0:<port>` (`SO_REUSEADDR`/`SO_REUSEPORT`, like Go's
//!   `ListenMulticastUDP`, so other wgmesh daemons on the host can listen too) with
//!   `IP_MULTICAST_ALL` off, so it only gets the groups it joined itself on the interfaces it
//!   joined them on. Memberships are added and dropped per interface **by index** (`ip_mreqn`):
//!   joining with `INADDR_ANY` asks the routing table for an interface, and on a host without a
//!   multicast or default route that fails with `ENODEV`.
//! - One non-blocking **send** socket per joined interface with `IP_MULTICAST_IF` set to the
//!   interface's address and TTL 1, so each announcement leaves on that interface whatever the
//!   routes say (the kernel assumes an on-link destination when a multicast output interface is
//!   given). Sends never wait: a full buffer is a failed send, retried at the next announcement.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockRef, Socket, Type};
use tokio::net::UdpSocket;

/// A LAN socket operation that failed; its `Display` is shown in the log and the API.
#[derive(Debug, thiserror::Error)]
pub enum LanSocketError {
    /// The receive socket could not be opened or bound.
    #[error("cannot listen on UDP port {port}: {source}")]
    Listen {
        /// The LAN port.
        port: u16,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The group could not be joined on an interface.
    #[error("cannot join {group}: {source}")]
    Join {
        /// The multicast group.
        group: Ipv4Addr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The per-interface send socket could not be set up.
    #[error("cannot open a send socket from {addr}: {source}")]
    SendSocket {
        /// The interface address it was to send from.
        addr: Ipv4Addr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// An announcement could not be sent.
    #[error("cannot send: {source}")]
    Send {
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// The receive socket on `port`, member of no group yet.
///
/// # Errors
///
/// [`LanSocketError::Listen`] when the socket cannot be created, bound or registered with tokio.
pub fn receive_socket(port: u16) -> Result<UdpSocket, LanSocketError> {
    let listen = |source| LanSocketError::Listen { port, source };
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(listen)?;
    // Other wgmesh daemons (Go or Rust) on this host listen on the same group and port.
    sock.set_reuse_address(true).map_err(listen)?;
    sock.set_reuse_port(true).map_err(listen)?;
    // Only what this socket joined, on the interfaces it joined it on: not another mesh's group
    // joined by another daemon, nor the group heard on an interface we left. Optional: without
    // it foreign packets only cost a failed decryption.
    if let Err(error) = sock.set_multicast_all_v4(false) {
        tracing::debug!(%error, "cannot turn IP_MULTICAST_ALL off");
    }
    sock.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).into())
        .map_err(listen)?;
    sock.set_nonblocking(true).map_err(listen)?;
    UdpSocket::from_std(sock.into()).map_err(listen)
}

/// Joins `group` on the interface with index `index`. Already being a member is success.
///
/// # Errors
///
/// [`LanSocketError::Join`] with the OS error (e.g. `ENODEV` when the interface is gone).
pub fn join(recv: &UdpSocket, group: Ipv4Addr, index: u32) -> Result<(), LanSocketError> {
    match SockRef::from(recv).join_multicast_v4_n(&group, &InterfaceIndexOrAddress::Index(index)) {
        Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => Ok(()),
        other => other.map_err(|source| LanSocketError::Join { group, source }),
    }
}

/// Leaves `group` on the interface with index `index`.
///
/// # Errors
///
/// The OS error; expected when the interface is gone (the kernel dropped the membership then).
pub fn leave(recv: &UdpSocket, group: Ipv4Addr, index: u32) -> io::Result<()> {
    SockRef::from(recv).leave_multicast_v4_n(&group, &InterfaceIndexOrAddress::Index(index))
}

/// A non-blocking socket whose multicast leaves from `addr`'s interface with TTL 1.
///
/// # Errors
///
/// [`LanSocketError::SendSocket`], e.g. `EADDRNOTAVAIL` when `addr` is no longer on the host.
pub fn send_socket(addr: Ipv4Addr) -> Result<Socket, LanSocketError> {
    let fail = |source| LanSocketError::SendSocket { addr, source };
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(fail)?;
    sock.set_multicast_if_v4(&addr).map_err(fail)?;
    sock.set_multicast_ttl_v4(1).map_err(fail)?;
    sock.set_nonblocking(true).map_err(fail)?;
    Ok(sock)
}

/// Sends `datagram` to `group` on `sock` without waiting.
///
/// # Errors
///
/// [`LanSocketError::Send`] (`EWOULDBLOCK` included: the next round sends again).
pub fn send(sock: &Socket, datagram: &[u8], group: SocketAddrV4) -> Result<(), LanSocketError> {
    sock.send_to(datagram, &SocketAddr::V4(group).into())
        .map(drop)
        .map_err(|source| LanSocketError::Send { source })
}
