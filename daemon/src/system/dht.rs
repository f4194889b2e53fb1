//! The BitTorrent mainline DHT node (BEP 5), through the `mainline` crate, and the name lookups
//! of its bootstrap nodes: the OS side of the `dht` layer (`discovery::dht`).
//!
//! `mainline` runs each node on its own thread with its own UDP socket and hands out a channel
//! handle; its async API waits on channels and needs no particular executor, so awaiting it never
//! blocks a tokio worker. Only starting a node blocks (it waits for the thread to bind), so
//! [`DhtNode::start`] does that on the blocking pool. The thread exits, and the socket closes,
//! once every handle is dropped: dropping the [`DhtNode`] (and any operation still running)
//! stops it. The library is IPv4-only.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use futures_util::StreamExt as _;
use mainline::async_dht::AsyncDht;
use mainline::{Dht, Id};

use crate::discovery::dht::nodefile::NodeRecord;

/// Longest time a name lookup may take.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// How to start a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// Address to bind (`0.0.0.0` in the daemon).
    pub bind: Ipv4Addr,
    /// Preferred UDP port; when it is busy, the OS chooses one. 0: the OS chooses.
    pub port: u16,
    /// Nodes to bootstrap from; empty: none (the node only answers, as a lab bootstrap node).
    pub bootstrap: Vec<SocketAddrV4>,
}

/// A failure to start a node.
#[derive(Debug, thiserror::Error)]
pub enum DhtError {
    /// The socket could not be bound or the thread not started.
    #[error("cannot start a DHT node on {bind}:{port}: {source}")]
    Start {
        /// The address.
        bind: Ipv4Addr,
        /// The port (0: any).
        port: u16,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// A running DHT node in server mode (it answers queries and stores announcements).
#[derive(Debug)]
pub struct DhtNode {
    dht: AsyncDht,
    local: SocketAddrV4,
    id: [u8; 20],
    bootstrap: Vec<SocketAddrV4>,
}

impl DhtNode {
    /// Starts a node on `config.port` (or, when that fails, on a port the OS chooses).
    ///
    /// # Errors
    ///
    /// When no socket can be bound or the library fails to start.
    pub async fn start(config: NodeConfig) -> Result<Self, DhtError> {
        let bootstrap = config.bootstrap.clone();
        let started = tokio::task::spawn_blocking(move || {
            // Checked first because the library panics on some bind failures (see `build`).
            let free = config.port == 0
                || std::net::UdpSocket::bind((config.bind, config.port)).is_ok();
            let first = if free {
                build(&config, config.port)
            } else {
                Err(DhtError::Start {
                    bind: config.bind,
                    port: config.port,
                    source: io::ErrorKind::AddrInUse.into(),
                })
            };
            match first {
                Err(e) if config.port != 0 => {
                    tracing::info!(port = config.port, error = %e, "DHT port unavailable; letting the OS choose one");
                    build(&config, 0)
                }
                other => other,
            }
        })
        .await
        .unwrap_or_else(|e| {
            Err(DhtError::Start {
                bind: Ipv4Addr::UNSPECIFIED,
                port: 0,
                source: io::Error::other(format!("the start was interrupted: {e}")),
            })
        })?;
        let dht = started.as_async();
        let info = dht.info().await;
        Ok(Self {
            local: info.local_addr(),
            id: *info.id().as_bytes(),
            dht,
            bootstrap,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.local
    }

    /// The node's id.
    pub fn id(&self) -> [u8; 20] {
        self.id
    }

    /// The bootstrap nodes it was started with.
    pub fn bootstrap(&self) -> &[SocketAddrV4] {
        &self.bootstrap
    }

    /// Nodes in the routing table that are not stale.
    pub async fn table_size(&self) -> usize {
        self.dht.to_bootstrap().await.len()
    }

    /// A `find_node` traversal for the node's own id (how the table is filled, and how nodes
    /// with their ids are learned for the node file): the closest nodes that answered, this one
    /// left out.
    pub async fn find_self(&self) -> Vec<NodeRecord> {
        self.dht
            .find_node(Id::from(self.id))
            .await
            .iter()
            .filter(|n| *n.id().as_bytes() != self.id)
            .map(|n| NodeRecord {
                id: *n.id().as_bytes(),
                addr: SocketAddr::V4(n.address()),
            })
            .collect()
    }

    /// `get_peers` then `announce_peer` for `infohash` with `port` (explicit, not implied).
    ///
    /// # Errors
    ///
    /// The library's reason, as text (e.g. no node close to the infohash answered).
    pub async fn announce(&self, infohash: [u8; 20], port: u16) -> Result<(), String> {
        self.dht
            .announce_peer(Id::from(infohash), Some(port))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// A `get_peers` traversal for `infohash`: every peer address the answering nodes store,
    /// duplicates included (one per node), at most `limit`, gathered for at most `within` (what
    /// arrived by then is returned).
    pub async fn get_peers(
        &self,
        infohash: [u8; 20],
        limit: usize,
        within: Duration,
    ) -> Vec<SocketAddr> {
        let deadline = tokio::time::Instant::now() + within;
        let mut found = Vec::new();
        let mut stream = self.dht.get_peers(Id::from(infohash));
        while let Ok(Some(batch)) = tokio::time::timeout_at(deadline, stream.next()).await {
            for addr in batch {
                if found.len() >= limit {
                    return found;
                }
                found.push(SocketAddr::V4(addr));
            }
        }
        found
    }
}

fn build(config: &NodeConfig, port: u16) -> Result<Dht, DhtError> {
    let mut builder = Dht::builder();
    builder.server_mode().bind_address(config.bind).port(port);
    if config.bootstrap.is_empty() {
        builder.no_bootstrap();
    } else {
        // Addresses, never names: the library would resolve names here, blocking.
        builder.bootstrap(&config.bootstrap);
    }
    // The library panics (instead of returning the error) when its thread fails to bind before
    // the start-up check arrives; catch that here and report it as the error it is.
    let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| builder.build()))
        .unwrap_or_else(|_| {
            Err(io::Error::other(
                "the DHT thread stopped at start (the port is probably in use)",
            ))
        });
    built.map_err(|source| DhtError::Start {
        bind: config.bind,
        port,
        source,
    })
}

/// The addresses of `host:port` (an IP literal needs no lookup), within [`RESOLVE_TIMEOUT`].
///
/// # Errors
///
/// The resolver's error, or a timeout.
pub async fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port))).await {
        Ok(found) => found.map(Iterator::collect),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer within {} s", RESOLVE_TIMEOUT.as_secs()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(port: u16, bootstrap: Vec<SocketAddrV4>) -> NodeConfig {
        NodeConfig {
            bind: Ipv4Addr::LOCALHOST,
            port,
            bootstrap,
        }
    }

    /// Two nodes on the loopback: one announces, both find it; the node file's view (find_self)
    /// has ids; a busy port falls back to one the OS chooses; dropping a node frees its port (its
    /// thread has exited).
    #[tokio::test]
    async fn announce_find_and_stop_on_the_loopback() {
        let boot = DhtNode::start(config(0, vec![])).await.unwrap();
        let node = DhtNode::start(config(0, vec![boot.local_addr()]))
            .await
            .unwrap();
        assert_ne!(node.local_addr().port(), 0);
        assert_eq!(node.bootstrap(), [boot.local_addr()]);
        let nodes = node.find_self().await;
        assert_eq!(
            nodes.iter().map(|n| n.addr).collect::<Vec<_>>(),
            [SocketAddr::V4(boot.local_addr())]
        );
        assert_eq!(nodes[0].id, boot.id());
        assert_eq!(node.table_size().await, 1);

        let infohash = [42u8; 20];
        node.announce(infohash, 51999).await.unwrap();
        let want = SocketAddr::from((Ipv4Addr::LOCALHOST, 51999));
        for who in [&node, &boot] {
            let found = who.get_peers(infohash, 100, Duration::from_secs(10)).await;
            assert!(found.contains(&want), "{found:?}");
        }
        assert!(
            node.get_peers(infohash, 0, Duration::from_secs(10))
                .await
                .is_empty()
        );

        // The port is taken: the OS chooses another.
        let busy = node.local_addr().port();
        let other = DhtNode::start(config(busy, vec![boot.local_addr()]))
            .await
            .unwrap();
        assert_ne!(other.local_addr().port(), busy);

        drop(node);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        let mut freed = false;
        while !freed && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            freed = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, busy)).is_ok();
        }
        assert!(
            freed,
            "the DHT thread still holds port {busy} after the node was dropped"
        );
    }

    #[tokio::test]
    async fn a_lone_node_cannot_announce() {
        let node = DhtNode::start(config(0, vec![])).await.unwrap();
        let error = node.announce([1; 20], 1).await.unwrap_err();
        assert!(error.contains("nodes"), "{error}");
        assert_eq!(node.table_size().await, 0);
    }

    #[tokio::test]
    async fn literals_need_no_lookup() {
        assert_eq!(
            resolve("192.0.2.1", 6881).await.unwrap(),
            [SocketAddr::from(([192, 0, 2, 1], 6881))]
        );
        assert_eq!(
            resolve("2001:db8::1", 1).await.unwrap(),
            ["[2001:db8::1]:1".parse::<SocketAddr>().unwrap()]
        );
        // `localhost` comes from /etc/hosts: no DNS query leaves the host.
        let local = resolve("localhost", 6881).await.unwrap();
        assert!(local.iter().all(|a| a.ip().is_loopback()), "{local:?}");
    }
}
