//! The STUN client's OS calls: resolving a server's name to an IPv4 address, one ephemeral UDP4
//! socket per probe run, sending a request and waiting for an acceptable answer from exactly
//! that server, and random transaction ids. What a request and an acceptable answer are is
//! decided above ([`crate::discovery::stun`]); this module only moves bytes.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use tokio::net::UdpSocket;

use crate::config::HostPort;

/// Largest STUN answer read (Go's 512-byte buffer); longer datagrams are cut to this and then
/// fail to parse.
pub const RESPONSE_BUFFER: usize = 512;

/// A STUN socket operation that failed; its `Display` goes to the log and the `stun` layer.
#[derive(Debug, thiserror::Error)]
pub enum StunSocketError {
    /// The ephemeral UDP4 socket could not be opened.
    #[error("cannot open a UDP socket: {0}")]
    Open(#[source] io::Error),
    /// The server's name did not resolve.
    #[error("cannot resolve {server}: {source}")]
    Resolve {
        /// The server as configured.
        server: String,
        /// The resolver's error.
        #[source]
        source: io::Error,
    },
    /// The server's name resolved, but to no IPv4 address (STUN is asked over IPv4, as in Go).
    #[error("{server} has no IPv4 address")]
    NoIpv4 {
        /// The server as configured.
        server: String,
    },
    /// The request could not be sent.
    #[error("cannot send to {server}: {source}")]
    Send {
        /// The server's address.
        server: SocketAddrV4,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// No acceptable answer in time.
    #[error("no answer within {} ms", .waited.as_millis())]
    Timeout {
        /// How long it waited.
        waited: Duration,
    },
}

/// The first IPv4 address of `server` (an IP literal needs no resolver).
///
/// # Errors
///
/// [`StunSocketError::Resolve`] or [`StunSocketError::NoIpv4`].
pub async fn resolve_v4(server: &HostPort) -> Result<SocketAddrV4, StunSocketError> {
    if let Some(addr) = server.as_socket_addr() {
        return match addr {
            SocketAddr::V4(v4) => Ok(v4),
            SocketAddr::V6(_) => Err(StunSocketError::NoIpv4 {
                server: server.to_string(),
            }),
        };
    }
    let found = tokio::net::lookup_host((server.host(), server.port()))
        .await
        .map_err(|source| StunSocketError::Resolve {
            server: server.to_string(),
            source,
        })?;
    found
        .filter_map(|a| match a {
            SocketAddr::V4(v4) => Some(v4),
            SocketAddr::V6(_) => None,
        })
        .next()
        .ok_or_else(|| StunSocketError::NoIpv4 {
            server: server.to_string(),
        })
}

/// A fresh random STUN transaction id.
///
/// # Errors
///
/// When the OS has no randomness to give (practically never).
pub fn transaction_id() -> Result<[u8; 12], getrandom::Error> {
    let mut id = [0u8; 12];
    getrandom::getrandom(&mut id)?;
    Ok(id)
}

/// One probe run's socket: bound to an ephemeral IPv4 port, so every server it asks sees the
/// same source (the NAT type compares their answers).
#[derive(Debug)]
pub struct ProbeSocket {
    sock: UdpSocket,
}

impl ProbeSocket {
    /// A socket on `0.0.0.0:<ephemeral>`.
    ///
    /// # Errors
    ///
    /// [`StunSocketError::Open`].
    pub async fn open() -> Result<Self, StunSocketError> {
        let sock = UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
            .await
            .map_err(StunSocketError::Open)?;
        Ok(Self { sock })
    }

    /// The socket's local address.
    ///
    /// # Errors
    ///
    /// The OS error.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    /// Sends `request` to `server` once, then waits up to `wait` for a datagram from exactly
    /// that address that `accept` takes (returns `Some`). Datagrams from anyone else are dropped
    /// unread and reported to `stray` with their source; those `accept` refuses are its own
    /// business (it logs and counts them). Receive errors (an ICMP error reported on the socket,
    /// say) are logged and the wait goes on.
    ///
    /// # Errors
    ///
    /// [`StunSocketError::Send`], or [`StunSocketError::Timeout`] when nothing acceptable came.
    pub async fn ask<R>(
        &self,
        server: SocketAddrV4,
        request: &[u8],
        wait: Duration,
        mut accept: impl FnMut(&[u8]) -> Option<R>,
        mut stray: impl FnMut(SocketAddr),
    ) -> Result<R, StunSocketError> {
        self.sock
            .send_to(request, SocketAddr::V4(server))
            .await
            .map_err(|source| StunSocketError::Send { server, source })?;
        let deadline = tokio::time::Instant::now() + wait;
        let mut buf = [0u8; RESPONSE_BUFFER];
        loop {
            let received = tokio::time::timeout_at(deadline, self.sock.recv_from(&mut buf)).await;
            match received {
                Err(_) => return Err(StunSocketError::Timeout { waited: wait }),
                Ok(Err(error)) => {
                    tracing::debug!(%server, %error, "STUN receive failed; still waiting");
                    // An error that repeats at once must not spin: wait a little.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Ok(Ok((n, from))) if from == SocketAddr::V4(server) => {
                    if let Some(answer) = accept(&buf[..n]) {
                        return Ok(answer);
                    }
                }
                Ok(Ok((_, from))) => stray(from),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ask_takes_only_what_the_server_sends_and_accept_likes() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let stranger = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let stranger_addr = stranger.local_addr().unwrap();
        let SocketAddr::V4(server_addr) = server.local_addr().unwrap() else {
            unreachable!()
        };
        let probe = ProbeSocket::open().await.unwrap();
        let answering = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            let (n, from) = server.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"ping");
            // A stranger first, then the server with something refused, then the answer.
            stranger.send_to(b"good", from).unwrap();
            server.send_to(b"junk", from).unwrap();
            server.send_to(b"good", from).unwrap();
        });
        let mut strays = Vec::new();
        let mut refused = 0;
        let answer = probe
            .ask(
                server_addr,
                b"ping",
                Duration::from_secs(5),
                |bytes| {
                    if bytes == b"good" {
                        Some(bytes.len())
                    } else {
                        refused += 1;
                        None
                    }
                },
                |from| strays.push(from),
            )
            .await
            .unwrap();
        answering.join().unwrap();
        assert_eq!(answer, 4);
        assert_eq!(refused, 1);
        assert_eq!(strays, [stranger_addr]);
    }

    #[tokio::test]
    async fn ask_times_out_when_nobody_answers() {
        // A bound socket that never answers.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let SocketAddr::V4(addr) = silent.local_addr().unwrap() else {
            unreachable!()
        };
        let probe = ProbeSocket::open().await.unwrap();
        let got = probe
            .ask(
                addr,
                b"ping",
                Duration::from_millis(100),
                |_| Some(()),
                |_| {},
            )
            .await;
        assert!(
            matches!(got, Err(StunSocketError::Timeout { .. })),
            "{got:?}"
        );
        assert_eq!(got.unwrap_err().to_string(), "no answer within 100 ms");
    }

    #[tokio::test]
    async fn ip_literals_resolve_without_dns_and_ipv6_is_refused() {
        let v4: HostPort = "203.0.113.5:3478".parse().unwrap();
        assert_eq!(
            resolve_v4(&v4).await.unwrap(),
            "203.0.113.5:3478".parse().unwrap()
        );
        let v6: HostPort = "[2001:db8::1]:3478".parse().unwrap();
        assert_eq!(
            resolve_v4(&v6).await.unwrap_err().to_string(),
            "[2001:db8::1]:3478 has no IPv4 address"
        );
        let local: HostPort = "localhost:3478".parse().unwrap();
        assert_eq!(
            resolve_v4(&local).await.unwrap(),
            "127.0.0.1:3478".parse().unwrap()
        );
    }
}
