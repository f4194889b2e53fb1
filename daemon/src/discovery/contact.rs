//! What the discovery layers need from the exchange socket (crypto-and-wire §9–10), as a trait so
//! each layer is tested against a fake and the socket is tested alone.
//!
//! The exchange task (`discovery::exchange`) owns the one UDP socket on the mesh's gossip port.
//! Other layers *ask* it to contact an address ([`Exchange::hello`]) or to send a sealed datagram
//! from that socket ([`Exchange::send`]: gossip goes through the tunnel from the gossip port, as in
//! Go); messages it receives that belong to another layer (`ANNOUNCE`, `DANDELION_STEM`) are
//! handed over as [`Inbound`] on a channel; so are `RENDEZVOUS_OFFER` and `RENDEZVOUS_START`,
//! on a second channel, for the rendezvous layer.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use crate::crypto::envelope::OpenedEnvelope;
use crate::keys::PublicKey;
use crate::peers::Method;
use crate::wire::PeerAnnouncement;

/// A boxed future, so the trait stays object-safe without extra crates.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A peer that answered a HELLO.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contacted {
    /// The REPLY's announcement (already stored; known peers too).
    pub announcement: PeerAnnouncement,
    /// The address the REPLY came from (the peer's control endpoint).
    pub from: SocketAddr,
}

/// Why a HELLO exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ContactError {
    /// No REPLY within the exchange timeout (4 s).
    #[error("no reply from {0} within the exchange timeout")]
    Timeout(SocketAddr),
    /// The HELLO could not be sent.
    #[error("cannot send to {addr}: {error}")]
    Send {
        /// Destination.
        addr: SocketAddr,
        /// The socket error.
        error: std::io::Error,
    },
    /// The address belongs to this node (its own REPLY or its own endpoint).
    #[error("{0} is this node")]
    OwnAddress(SocketAddr),
    /// The exchange socket is not running (starting, retrying or shutting down).
    #[error("the exchange socket is not running")]
    NotRunning,
    /// Too many HELLOs are waiting for a REPLY already (the table of waiters is bounded).
    #[error("too many exchanges in progress; try again later")]
    Busy,
}

/// The exchange socket as other layers use it.
pub trait Exchange: Send + Sync + 'static {
    /// A HELLO exchange with `addr`: the same sealed HELLO is resent every 100 ms until a REPLY
    /// from exactly `addr` arrives or 4 s pass (once, without resends, when punching is off).
    /// On success the replier is stored with `method` (and its known peers as `dht-transitive`),
    /// and `addr` is remembered as its control endpoint.
    fn hello(
        &self,
        addr: SocketAddr,
        method: Method,
    ) -> BoxFuture<'_, Result<Contacted, ContactError>>;

    /// Sends an already sealed datagram from the exchange socket.
    fn send(&self, addr: SocketAddr, datagram: Vec<u8>) -> BoxFuture<'_, std::io::Result<()>>;

    /// The control (exchange-socket) address learned for `peer` (the address its last REPLY or
    /// HELLO came from), if any. Without one, a peer's control address is
    /// `<its WireGuard endpoint host>:<gossip port>`.
    fn control_endpoint(&self, peer: &PublicKey) -> Option<SocketAddr>;
}

/// A message received on the exchange socket for another layer: opened (authentic, fresh), not
/// yet decoded. `ANNOUNCE` goes to gossip (when enabled), `DANDELION_STEM` to privacy.
#[derive(Clone, Debug)]
pub struct Inbound {
    /// The opened envelope.
    pub opened: OpenedEnvelope,
    /// Its UDP source.
    pub source: SocketAddr,
}
