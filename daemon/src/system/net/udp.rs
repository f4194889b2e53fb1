//! The exchange socket's OS calls: one UDP socket on the mesh's gossip port on every address,
//! IPv6 and IPv4 (dual-stack, `IPV6_V6ONLY` off; IPv4 only on a host without IPv6), and name
//! resolution of `HOST:PORT` arguments.
//!
//! A dual-stack socket reports IPv4 senders as IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`);
//! [`ExchangeSocket::recv_from`] hands them out as plain IPv4, and [`ExchangeSocket::send_to`]
//! maps IPv4 destinations back, so callers only ever see one spelling of an address.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

/// Why the exchange socket could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on UDP port {port}: {source}")]
pub struct BindError {
    /// The port.
    pub port: u16,
    /// The OS error (e.g. address in use).
    #[source]
    pub source: io::Error,
}

/// The exchange socket.
#[derive(Debug)]
pub struct ExchangeSocket {
    socket: UdpSocket,
    /// Whether it is an IPv6 (dual-stack) socket; IPv4 destinations are then mapped.
    dual_stack: bool,
}

fn open(domain: Domain, addr: SocketAddr) -> io::Result<UdpSocket> {
    let sock = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if domain == Domain::IPV6 {
        sock.set_only_v6(false)?;
    }
    // Bursts of HELLOs from many peers at once should not be dropped by a small default buffer.
    if let Err(error) = sock.set_recv_buffer_size(1 << 20) {
        tracing::debug!(%error, "cannot enlarge the exchange socket's receive buffer");
    }
    sock.bind(&addr.into())?;
    sock.set_nonblocking(true)?;
    UdpSocket::from_std(sock.into())
}

impl ExchangeSocket {
    /// Binds `[::]:port` dual-stack, or `0.0.0.0:port` when the host has no IPv6.
    ///
    /// # Errors
    ///
    /// [`BindError`] when the port is taken or no socket can be opened.
    pub fn bind(port: u16) -> Result<Self, BindError> {
        match open(
            Domain::IPV6,
            SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)),
        ) {
            Ok(socket) => Ok(Self {
                socket,
                dual_stack: true,
            }),
            Err(v6) if v6.kind() == io::ErrorKind::AddrInUse => Err(BindError { port, source: v6 }),
            Err(v6) => {
                tracing::debug!(error = %v6, "no IPv6 exchange socket; using IPv4 only");
                let socket = open(
                    Domain::IPV4,
                    SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
                )
                .map_err(|source| BindError { port, source })?;
                Ok(Self {
                    socket,
                    dual_stack: false,
                })
            }
        }
    }

    /// The bound address.
    ///
    /// # Errors
    ///
    /// The OS error.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Receives one datagram into `buf` (a longer one is cut to `buf`'s size), with its sender
    /// (IPv4 senders as IPv4).
    ///
    /// # Errors
    ///
    /// The OS error.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let (n, from) = self.socket.recv_from(buf).await?;
        Ok((n, SocketAddr::new(from.ip().to_canonical(), from.port())))
    }

    /// Sends one datagram to `to`.
    ///
    /// # Errors
    ///
    /// The OS error (e.g. unreachable, an IPv6 destination on an IPv4-only socket).
    pub async fn send_to(&self, datagram: &[u8], to: SocketAddr) -> io::Result<()> {
        let to = match to {
            SocketAddr::V4(v4) if self.dual_stack => {
                SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
            }
            other => other,
        };
        self.socket.send_to(datagram, to).await.map(drop)
    }
}

/// Resolves `host:port` (an IP literal without DNS, else the system resolver).
///
/// # Errors
///
/// The resolver's error, or `NotFound` when it returns no address.
pub async fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let found: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    if found.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{host} has no address"),
        ));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ipv4_senders_and_destinations_are_plain_ipv4() {
        let a = ExchangeSocket::bind(0).unwrap();
        let port = a.local_addr().unwrap().port();
        let b = ExchangeSocket::bind(0).unwrap();
        let b_port = b.local_addr().unwrap().port();
        b.send_to(b"hi", SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
            .await
            .unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = a.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"hi");
        assert_eq!(from, SocketAddr::from((Ipv4Addr::LOCALHOST, b_port)));
    }

    #[tokio::test]
    async fn a_busy_port_is_an_error_naming_it() {
        let a = ExchangeSocket::bind(0).unwrap();
        let port = a.local_addr().unwrap().port();
        let err = ExchangeSocket::bind(port).unwrap_err();
        assert_eq!(err.port, port);
        assert!(
            err.to_string().contains(&format!("UDP port {port}")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn ip_literals_resolve_without_dns() {
        assert_eq!(
            resolve("192.0.2.1", 7).await.unwrap(),
            vec!["192.0.2.1:7".parse().unwrap()]
        );
        assert_eq!(
            resolve("2001:db8::1", 7).await.unwrap(),
            vec!["[2001:db8::1]:7".parse().unwrap()]
        );
    }
}
