//! Sockets of the TCP mesh probe (daemon-behaviour §9.2): a listener on one mesh address and
//! outgoing connections from our mesh address, both bound to the mesh interface
//! (`SO_BINDTODEVICE`) so probes never leave through another link. `IP_FREEBIND` lets the
//! listener bind an address that is still tentative (IPv6 duplicate address detection) or about
//! to change.

use std::io;
use std::net::{IpAddr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

fn socket_for(addr: SocketAddr, device: Option<&str>) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
        socket.set_freebind_v6(true)?;
    } else {
        socket.set_freebind_v4(true)?;
    }
    if let Some(device) = device {
        socket.bind_device(Some(device.as_bytes()))?;
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// A TCP listener on `addr`, bound to `device` when given.
///
/// # Errors
///
/// Socket creation, `SO_BINDTODEVICE`, bind or listen failed.
pub fn probe_listener(addr: SocketAddr, device: Option<&str>) -> io::Result<TcpListener> {
    let socket = socket_for(addr, device)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    TcpListener::from_std(socket.into())
}

/// Connects to `remote` from `local` (port chosen by the kernel), bound to `device` when given.
/// The caller bounds the time.
///
/// # Errors
///
/// Socket setup, bind or connect failed.
pub async fn probe_connect(
    remote: SocketAddr,
    local: IpAddr,
    device: Option<&str>,
) -> io::Result<TcpStream> {
    let socket = socket_for(remote, device)?;
    socket.bind(&SocketAddr::new(local, 0).into())?;
    socket.set_tcp_nodelay(true)?;
    let std_stream: std::net::TcpStream = socket.into();
    TcpSocket::from_std_stream(std_stream).connect(remote).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn listener_and_connect_on_loopback() {
        let listener = probe_listener("127.0.0.1:0".parse().unwrap(), None).unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut s = probe_connect(addr, "127.0.0.1".parse().unwrap(), None)
                .await
                .unwrap();
            s.write_all(b"x").await.unwrap();
        });
        let (mut conn, from) = listener.accept().await.unwrap();
        assert_eq!(from.ip(), "127.0.0.1".parse::<IpAddr>().unwrap());
        let mut b = [0u8; 1];
        conn.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"x");
        client.await.unwrap();
    }
}
