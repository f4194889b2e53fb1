//! The TCP mesh probe, wire-compatible with Go wgmesh (daemon-behaviour §9.2): a line `ping\n`
//! answered by `pong\n`, on the gossip port + 2000 of each mesh address.
//!
//! [`ProbeServer`] (task `probe-server`) listens on our mesh IPv4 and IPv6, bound to the mesh
//! interface, and rebinds when [`LocalNode`]'s mesh addresses change (a collision re-derives
//! them). [`ping`] and [`dial`] are the client's steps; the health task runs them concurrently.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::state::PROBE_TIMEOUT;
use crate::metrics::LayerCounters;
use crate::node::LocalNode;
use crate::supervisor::{LayerHandle, TaskError};
use crate::system::net::probe::{probe_connect, probe_listener};

/// How long the server waits for a line (Go: 10 s).
pub const SERVER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the server may take to write `pong` (Go: 2 s).
pub const SERVER_WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest line read; a longer one closes the connection (Go reads unbounded lines).
pub const MAX_LINE: usize = 256;
/// Connections served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 256;

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("{what} timed out"))
}

/// Reads one line of at most [`MAX_LINE`] bytes within `limit`; `Ok(None)` at end of stream.
async fn read_line<R: AsyncRead + Unpin>(
    r: &mut BufReader<R>,
    limit: Duration,
) -> io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let n = tokio::time::timeout(
        limit,
        (&mut *r).take(MAX_LINE as u64).read_until(b'\n', &mut line),
    )
    .await
    .map_err(|_| timed_out("read"))??;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') && n >= MAX_LINE {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
    }
    Ok(Some(line))
}

/// Serves one probe connection: every line that trims to `ping` gets `pong\n`, others are
/// ignored; returns the number of pongs when the other side closes.
///
/// # Errors
///
/// A read that takes longer than [`SERVER_READ_TIMEOUT`], a write longer than
/// [`SERVER_WRITE_TIMEOUT`], a line longer than [`MAX_LINE`], or an I/O error.
pub async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(stream: S) -> io::Result<u64> {
    let mut stream = BufReader::new(stream);
    let mut pongs = 0;
    while let Some(line) = read_line(&mut stream, SERVER_READ_TIMEOUT).await? {
        if line.trim_ascii() == b"ping" {
            tokio::time::timeout(SERVER_WRITE_TIMEOUT, stream.get_mut().write_all(b"pong\n"))
                .await
                .map_err(|_| timed_out("write"))??;
            pongs += 1;
        }
    }
    Ok(pongs)
}

/// A probe session: one persistent connection to a peer.
pub type Session = BufReader<TcpStream>;

/// One probe on `session`: `ping\n`, then a line that trims to `pong`, each step within
/// [`PROBE_TIMEOUT`]. Returns the round-trip time (from before the write).
///
/// # Errors
///
/// A timeout, an I/O error, or an answer other than `pong` (the session must then be closed).
pub async fn ping<S: AsyncRead + AsyncWrite + Unpin>(
    session: &mut BufReader<S>,
) -> io::Result<Duration> {
    let started = tokio::time::Instant::now();
    tokio::time::timeout(PROBE_TIMEOUT, session.get_mut().write_all(b"ping\n"))
        .await
        .map_err(|_| timed_out("write"))??;
    match read_line(session, PROBE_TIMEOUT).await? {
        Some(line) if line.trim_ascii() == b"pong" => Ok(started.elapsed()),
        Some(_) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "answer is not pong",
        )),
        None => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "closed by the peer",
        )),
    }
}

/// Opens a session to the first of `targets` (remote, our local address of the same family)
/// that accepts within [`PROBE_TIMEOUT`], bound to `device` when given.
///
/// # Errors
///
/// The last failure when none accepts; `InvalidInput` when `targets` is empty.
pub async fn dial(targets: &[(SocketAddr, IpAddr)], device: Option<&str>) -> io::Result<Session> {
    let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no mesh address to probe");
    for (remote, local) in targets {
        match tokio::time::timeout(PROBE_TIMEOUT, probe_connect(*remote, *local, device)).await {
            Ok(Ok(stream)) => return Ok(BufReader::new(stream)),
            Ok(Err(e)) => last = e,
            Err(_) => last = timed_out("connect"),
        }
    }
    Err(last)
}

/// The probe responder (task `probe-server`, layer `probe`).
#[derive(Clone)]
pub struct ProbeServer {
    /// gossip port + 2000.
    pub port: u16,
    /// The mesh interface the sockets are bound to (`None` in tests).
    pub device: Option<String>,
    /// This node; the listeners follow its mesh addresses.
    pub local: watch::Receiver<LocalNode>,
    /// Whether to listen on the mesh IPv6 too.
    pub ipv6: bool,
    /// Layer state for `GET /v1/status`.
    pub layer: LayerHandle,
    /// Connections served (`events`) and dropped.
    pub counters: LayerCounters,
}

async fn accept(l: Option<&TcpListener>) -> io::Result<(TcpStream, SocketAddr)> {
    match l {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

impl ProbeServer {
    fn bind(&self, ip: IpAddr) -> Option<TcpListener> {
        let addr = SocketAddr::new(ip, self.port);
        match probe_listener(addr, self.device.as_deref()) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(%addr, error = %e, "cannot listen for mesh probes");
                None
            }
        }
    }

    /// Serves until `cancel`; rebinds when our mesh addresses change.
    ///
    /// # Errors
    ///
    /// No address could be bound (the supervisor retries with backoff).
    pub async fn run(mut self, cancel: CancellationToken) -> Result<(), TaskError> {
        loop {
            let (v4, v6) = {
                let l = self.local.borrow_and_update();
                (l.mesh_ip, l.mesh_ipv6)
            };
            let l4 = self.bind(v4.into());
            let l6 = if self.ipv6 {
                self.bind(v6.into())
            } else {
                None
            };
            if l4.is_none() && l6.is_none() {
                return Err(format!("cannot listen on tcp/{} of {v4} or {v6}", self.port).into());
            }
            tracing::info!(port = self.port, %v4, %v6, "mesh probe server listening");
            self.layer
                .running(Some(format!("tcp/{} on {v4}, {v6}", self.port)));
            let mut conns = JoinSet::new();
            loop {
                let accepted = tokio::select! {
                    () = cancel.cancelled() => return Ok(()),
                    changed = self.local.changed() => {
                        if changed.is_err() {
                            return Ok(());
                        }
                        let l = self.local.borrow();
                        if (l.mesh_ip, l.mesh_ipv6) != (v4, v6) {
                            tracing::info!(old = %v4, new = %l.mesh_ip, "mesh address changed; rebinding the probe server");
                            break;
                        }
                        continue;
                    }
                    Some(_) = conns.join_next() => continue,
                    a = accept(l4.as_ref()) => a,
                    a = accept(l6.as_ref()) => a,
                };
                match accepted {
                    Ok((stream, from)) if conns.len() < MAX_CONNECTIONS => {
                        self.counters.event();
                        conns.spawn(async move {
                            if let Err(e) = serve_connection(stream).await {
                                tracing::debug!(%from, error = %e, "probe connection closed");
                            }
                        });
                    }
                    Ok((_, from)) => {
                        tracing::debug!(%from, "too many probe connections; closing");
                        self.counters.dropped("too_many_connections");
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "probe accept failed");
                        self.counters.dropped("accept_error");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    #[tokio::test]
    async fn server_answers_ping_ignores_other_lines() {
        let (client, server) = duplex(1024);
        let task = tokio::spawn(serve_connection(server));
        let mut c = BufReader::new(client);
        c.get_mut().write_all(b"hello\n  ping \r\n").await.unwrap();
        let mut line = String::new();
        c.read_line(&mut line).await.unwrap();
        assert_eq!(line, "pong\n");
        ping(&mut c).await.unwrap();
        drop(c);
        assert_eq!(task.await.unwrap().unwrap(), 2);
    }

    #[tokio::test]
    async fn server_closes_on_long_line() {
        let (mut client, server) = duplex(4096);
        let task = tokio::spawn(serve_connection(server));
        client.write_all(&[b'a'; MAX_LINE + 10]).await.unwrap();
        let err = task.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test(start_paused = true)]
    async fn server_read_deadline() {
        let (_client, server) = duplex(64);
        let err = serve_connection(server).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn client_times_out_on_silence_and_rejects_wrong_answer() {
        let (client, _server) = duplex(64);
        let err = ping(&mut BufReader::new(client)).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let (client, mut server) = duplex(64);
        server.write_all(b"pang\n").await.unwrap();
        let err = ping(&mut BufReader::new(client)).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn server_follows_a_change_of_our_mesh_ip() {
        use crate::supervisor::{LayerState, Registry};
        // A free port on both loopback addresses used.
        let free = probe_listener("127.0.0.1:0".parse().unwrap(), None).unwrap();
        let port = free.local_addr().unwrap().port();
        drop(free);
        let local = LocalNode {
            mesh_ip: "127.0.0.1".parse().unwrap(),
            ..crate::node::tests::local()
        };
        let (tx, rx) = watch::channel(local.clone());
        let registry = Registry::default();
        let server = ProbeServer {
            port,
            device: None,
            local: rx,
            ipv6: false,
            layer: registry.layer("probe", LayerState::Running),
            counters: LayerCounters::default(),
        };
        let cancel = CancellationToken::new();
        let task = tokio::spawn(server.clone().run(cancel.clone()));
        let lo1: IpAddr = "127.0.0.1".parse().unwrap();
        let lo2: IpAddr = "127.0.0.2".parse().unwrap();
        let probe_once = |ip: IpAddr| async move {
            let mut s = dial(&[(SocketAddr::new(ip, port), ip)], None).await?;
            ping(&mut s).await
        };
        let mut up = false;
        for _ in 0..50 {
            if probe_once(lo1).await.is_ok() {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(up, "the server answers on 127.0.0.1");
        tx.send_replace(LocalNode {
            mesh_ip: "127.0.0.2".parse().unwrap(),
            ..local
        });
        let mut moved = false;
        for _ in 0..50 {
            if probe_once(lo2).await.is_ok() && probe_once(lo1).await.is_err() {
                moved = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(moved, "the server moved to 127.0.0.2 and left 127.0.0.1");
        cancel.cancel();
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn dial_and_ping_over_loopback_tcp() {
        let listener = probe_listener("127.0.0.1:0".parse().unwrap(), None).unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            serve_connection(s).await
        });
        // A closed port first (the IPv6-then-IPv4 fallback), then the listener.
        let closed = probe_listener("127.0.0.1:0".parse().unwrap(), None).unwrap();
        let closed_addr = closed.local_addr().unwrap();
        drop(closed);
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let mut s = dial(&[(closed_addr, lo), (addr, lo)], None).await.unwrap();
        let rtt = ping(&mut s).await.unwrap();
        println!("loopback probe rtt {rtt:?}");
        ping(&mut s).await.unwrap();
        assert!(dial(&[], None).await.is_err());
    }
}
