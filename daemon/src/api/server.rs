//! Serving a bound API socket: the accept loop and the life of each connection.
//!
//! What one client can cost the daemon is bounded here (per connection) and in
//! [`super::limits`] (per request):
//! - connections at once: at the cap the loop stops accepting, so further clients wait in the
//!   kernel's backlog, costing the daemon no memory, until a slot frees;
//! - connections per caller: one uid (from `SO_PEERCRED`) may hold only its share; beyond that a
//!   connection is closed at once, so a user flooding the socket starves only itself;
//! - time to send a request head, counted from accept and again from the end of each response:
//!   a silent client, a trickling one (slowloris) and an idle keep-alive connection are closed;
//! - size of a request head, so a held connection costs a bounded buffer;
//! - shutdown: stop accepting, let requests in flight finish for a bounded drain, drop the rest.
//!
//! Each connection's credentials are attached to every request on it as
//! `ConnectInfo<PeerCred>`; a connection whose credentials cannot be read is closed, never served
//! with guessed ones. Connection tasks are owned by the serving task and never outlive it.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::{Extension, Router};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::Layer as _;
use tracing::Instrument as _;

use super::auth::PeerCred;
use super::listener::ApiListener;
use super::slots::{ConnectionSlots, RefusalWarnings};
use super::{ApiError, ApiState, router};

/// Connections held at once, over all callers. A held connection costs 6 KiB (silent) to 18 KiB
/// (a request head in its buffer) of the daemon's memory (`benches/api_idle.rs`), so the cap
/// bounds that to under 5 MiB; local clients (`wgmeshctl`, monitoring) use one connection per
/// command, so 256 is far above honest use.
pub const MAX_CONNECTIONS: usize = 256;
/// Connections one uid may hold. An eighth of [`MAX_CONNECTIONS`]: filling the global cap takes
/// eight users who can all reach the socket (root or group `wgmesh`), while a monitoring agent
/// polling in parallel still has room.
pub const MAX_CONNECTIONS_PER_UID: usize = 32;
/// Time a client has to send a complete request head, from accept and again from the end of each
/// response (so it also bounds an idle keep-alive connection). Local clients write their request
/// in one go within milliseconds; 5 s still tolerates a heavily loaded host.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long requests in flight may still run after shutdown is asked for. A request is bounded by
/// the request timeout once its head is read; this bounds what is left (a head still trickling
/// in, a response the client does not read), so shutdown cannot be held open.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// hyper's read (and write) buffer cap, which also caps a request head: our clients send heads
/// of a few hundred bytes, and hyper's default (~400 KiB) would let each held connection pin that
/// much memory. 16 KiB leaves room for long paths and headers; bodies stream through it in chunks.
const MAX_BUF_BYTES: usize = 16 * 1024;
/// At most one warning per this interval about connections refused for a full per-uid share;
/// each refusal is also logged at debug. A flood must not flood the journal too.
const REFUSAL_WARN_INTERVAL: Duration = Duration::from_secs(60);
/// Pause before accepting again after `accept(2)` failed for lack of resources (file
/// descriptors, memory): retrying at once would spin a core and log in a loop.
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Bounds on the connections of one server. [`Default`] gives the production values; tests use
/// small ones to stay fast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeOptions {
    /// Connections held at once, over all callers; at least 1. At the cap the server stops
    /// accepting and further clients wait in the kernel's backlog. Default [`MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// Connections one uid may hold; more are closed at once. Default
    /// [`MAX_CONNECTIONS_PER_UID`].
    pub max_connections_per_uid: usize,
    /// Time a client has to send a complete request head, from accept and from the end of each
    /// response. Default [`HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Duration,
    /// How long connections still busy at shutdown may take to finish. Default
    /// [`DRAIN_TIMEOUT`].
    pub drain_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            max_connections: MAX_CONNECTIONS,
            max_connections_per_uid: MAX_CONNECTIONS_PER_UID,
            header_read_timeout: HEADER_READ_TIMEOUT,
            drain_timeout: DRAIN_TIMEOUT,
        }
    }
}

/// Serves the API on `listener` with the production limits until `shutdown` is cancelled.
///
/// See [`serve_with`].
///
/// # Errors
///
/// [`ApiError::Serve`] when the listening socket itself fails.
pub async fn serve(
    listener: ApiListener,
    state: ApiState,
    shutdown: CancellationToken,
) -> Result<(), ApiError> {
    serve_with(listener, state, shutdown, ServeOptions::default()).await
}

/// Serves the API on `listener` within `options` until `shutdown` is cancelled.
///
/// On cancellation it stops accepting, asks every connection to close after its request in
/// flight, waits at most `options.drain_timeout` for them, closes those still open and removes
/// the socket file.
///
/// # Errors
///
/// [`ApiError::Serve`] when the listening socket itself fails (not for lack of file descriptors
/// or memory, which is waited out); connections are drained and the file removed first.
pub async fn serve_with(
    listener: ApiListener,
    state: ApiState,
    shutdown: CancellationToken,
    options: ServeOptions,
) -> Result<(), ApiError> {
    serve_router(listener, router(state), shutdown, options).await
}

/// [`serve_with`] for any router; tests serve their own routes through it.
pub(super) async fn serve_router(
    listener: ApiListener,
    app: Router,
    shutdown: CancellationToken,
    options: ServeOptions,
) -> Result<(), ApiError> {
    let path = listener.path().to_owned();
    let ApiListener {
        listener,
        socket_file,
    } = listener;
    tracing::info!(
        socket = %path.display(),
        max_connections = options.max_connections,
        max_connections_per_uid = options.max_connections_per_uid,
        header_read_timeout_ms = options.header_read_timeout.as_millis(),
        "control API listening"
    );
    // Our own token, so a failing listener can close our connections without cancelling the
    // daemon; it follows `shutdown` otherwise.
    let stop = shutdown.child_token();
    let mut server = Server::new(&path, app, &options, stop.clone());
    let result = server.accept_loop(&listener).await;

    drop(listener);
    stop.cancel();
    server.drain(options.drain_timeout).await;
    drop(socket_file);
    tracing::info!(socket = %path.display(), "control API stopped");
    result.map_err(|source| ApiError::Serve { path, source })
}

/// The state of the accept loop.
struct Server<'a> {
    path: &'a Path,
    app: Router,
    http: http1::Builder,
    /// One permit per held connection: the global cap.
    global: Arc<Semaphore>,
    slots: ConnectionSlots,
    max_per_uid: usize,
    refusals: RefusalWarnings,
    connections: JoinSet<()>,
    stop: CancellationToken,
}

impl<'a> Server<'a> {
    fn new(path: &'a Path, app: Router, options: &ServeOptions, stop: CancellationToken) -> Self {
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(options.header_read_timeout)
            .max_buf_size(MAX_BUF_BYTES);
        let max_connections = options.max_connections.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            path,
            app,
            http,
            global: Arc::new(Semaphore::new(max_connections)),
            slots: ConnectionSlots::new(options.max_connections_per_uid),
            max_per_uid: options.max_connections_per_uid,
            refusals: RefusalWarnings::new(REFUSAL_WARN_INTERVAL),
            connections: JoinSet::new(),
            stop,
        }
    }

    /// Accepts and starts connections until `stop` is cancelled (`Ok`) or the listener fails.
    async fn accept_loop(&mut self, listener: &UnixListener) -> io::Result<()> {
        loop {
            while let Some(done) = self.connections.try_join_next() {
                connection_task_ended(done);
            }
            let Some((stream, permit)) = self.accept(listener).await? else {
                return Ok(());
            };
            self.start(stream, permit);
        }
    }

    /// Waits for a free slot under the global cap, then for a connection; `None` once `stop` is
    /// cancelled. Holding back `accept(2)` at the cap leaves excess clients in the backlog.
    async fn accept(
        &mut self,
        listener: &UnixListener,
    ) -> io::Result<Option<(UnixStream, OwnedSemaphorePermit)>> {
        loop {
            let permit = tokio::select! {
                biased;
                () = self.stop.cancelled() => return Ok(None),
                permit = Arc::clone(&self.global).acquire_owned() => permit,
            };
            // The semaphore is never closed; treat it like a stop rather than panic.
            let Ok(permit) = permit else {
                return Ok(None);
            };
            let accepted = tokio::select! {
                biased;
                () = self.stop.cancelled() => return Ok(None),
                accepted = listener.accept() => accepted,
            };
            let err = match accepted {
                Ok((stream, _addr)) => return Ok(Some((stream, permit))),
                Err(err) => err,
            };
            drop(permit);
            match AcceptFailure::of(&err) {
                AcceptFailure::Connection => {
                    tracing::debug!(socket = %self.path.display(), error = %err, "API connection lost before accept");
                }
                AcceptFailure::Resources => {
                    tracing::warn!(
                        socket = %self.path.display(),
                        error = %err,
                        backoff_ms = ACCEPT_BACKOFF.as_millis(),
                        "cannot accept API connections; retrying"
                    );
                    tokio::select! {
                        () = self.stop.cancelled() => return Ok(None),
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    }
                }
                AcceptFailure::Listener => return Err(err),
            }
        }
    }

    /// Admits `stream` by its caller's credentials and serves it in a task of its own, or closes
    /// it (by dropping it) when the credentials are unreadable or the caller holds its share.
    fn start(&mut self, stream: UnixStream, permit: OwnedSemaphorePermit) {
        let cred = match stream.peer_cred() {
            Ok(cred) => PeerCred::from(cred),
            Err(err) => {
                tracing::warn!(
                    socket = %self.path.display(),
                    error = %err,
                    "cannot read the credentials of an API client; closing its connection"
                );
                return;
            }
        };
        let Some(slot) = self.slots.acquire(cred.uid) else {
            self.refused(cred);
            return;
        };
        // Per connection: cheap (the router is shared behind an Arc), and it is what makes the
        // caller's credentials visible to every request on this connection.
        let service =
            TowerToHyperService::new(Extension(ConnectInfo(cred)).layer(self.app.clone()));
        let connection = self.http.serve_connection(TokioIo::new(stream), service);
        let stop = self.stop.clone();
        let span = tracing::debug_span!("api_connection", uid = cred.uid, pid = ?cred.pid);
        self.connections.spawn(
            async move {
                let result = {
                    let mut connection = std::pin::pin!(connection);
                    let result = tokio::select! {
                        result = connection.as_mut() => result,
                        () = stop.cancelled() => {
                            // Finishes the request in flight, if any, then closes; the drain
                            // bounds it.
                            connection.as_mut().graceful_shutdown();
                            connection.await
                        }
                    };
                    // The uid's slot is free before its client can see the socket close, the
                    // global one only after: the server never holds more sockets than the cap.
                    drop(slot);
                    result
                };
                drop(permit);
                connection_closed(result);
            }
            .instrument(span),
        );
    }

    /// Logs a connection refused because its uid holds its share: debug each, warn rate-limited.
    fn refused(&mut self, cred: PeerCred) {
        tracing::debug!(
            uid = cred.uid,
            pid = ?cred.pid,
            max_connections_per_uid = self.max_per_uid,
            "API connection refused: the caller holds its share of connections"
        );
        if let Some(refused) = self.refusals.refused(Instant::now()) {
            tracing::warn!(
                socket = %self.path.display(),
                uid = cred.uid,
                refused,
                max_connections_per_uid = self.max_per_uid,
                "API connections refused: a caller holds its share of connections"
            );
        }
    }

    /// Waits at most `deadline` for the connections (already told to stop), then aborts the rest.
    async fn drain(&mut self, deadline: Duration) {
        let connections = &mut self.connections;
        let drained = tokio::time::timeout(deadline, async {
            while let Some(done) = connections.join_next().await {
                connection_task_ended(done);
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                socket = %self.path.display(),
                still_open = self.connections.len(),
                drain_ms = deadline.as_millis(),
                "API connections still open after the drain; closing them"
            );
            self.connections.shutdown().await;
        }
    }
}

/// Logs how a connection ended. Everything here is the client's doing, hence debug.
fn connection_closed(result: Result<(), hyper::Error>) {
    match result {
        Ok(()) => tracing::debug!("API connection closed"),
        Err(err) if err.is_timeout() => {
            tracing::debug!("API connection closed: no complete request head in time");
        }
        Err(err) => tracing::debug!(error = %err, "API connection failed"),
    }
}

/// Reports a connection task that panicked; an aborted one (end of the drain) is expected.
fn connection_task_ended(done: Result<(), JoinError>) {
    if let Err(err) = done
        && err.is_panic()
    {
        tracing::error!(error = %err, "API connection task panicked");
    }
}

/// What a failed `accept(2)` means for the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AcceptFailure {
    /// One connection failed (aborted by the client, interrupted): take the next one.
    Connection,
    /// Out of file descriptors or memory: wait a moment, then accept again.
    Resources,
    /// The listening socket itself is broken: retrying would spin, so serving ends.
    Listener,
}

impl AcceptFailure {
    fn of(err: &io::Error) -> Self {
        match err.raw_os_error() {
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => Self::Resources,
            Some(libc::ECONNABORTED | libc::EINTR | libc::EAGAIN | libc::EPROTO | libc::EPERM) => {
                Self::Connection
            }
            Some(_) => Self::Listener,
            None => match err.kind() {
                io::ErrorKind::ConnectionAborted
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::Interrupted
                | io::ErrorKind::WouldBlock => Self::Connection,
                io::ErrorKind::OutOfMemory => Self::Resources,
                _ => Self::Listener,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use axum::routing::get;
    use http_body_util::{BodyExt as _, Empty};
    use hyper::body::Bytes;

    use super::*;

    #[test]
    fn accept_failures_are_classified() {
        // (name, error, what the loop does)
        let table = [
            (
                "client gave up",
                io::Error::from_raw_os_error(libc::ECONNABORTED),
                AcceptFailure::Connection,
            ),
            (
                "signal",
                io::Error::from_raw_os_error(libc::EINTR),
                AcceptFailure::Connection,
            ),
            (
                "nothing queued after all",
                io::Error::from_raw_os_error(libc::EAGAIN),
                AcceptFailure::Connection,
            ),
            (
                "denied by a security module",
                io::Error::from_raw_os_error(libc::EPERM),
                AcceptFailure::Connection,
            ),
            (
                "process out of fds",
                io::Error::from_raw_os_error(libc::EMFILE),
                AcceptFailure::Resources,
            ),
            (
                "system out of fds",
                io::Error::from_raw_os_error(libc::ENFILE),
                AcceptFailure::Resources,
            ),
            (
                "out of socket buffers",
                io::Error::from_raw_os_error(libc::ENOBUFS),
                AcceptFailure::Resources,
            ),
            (
                "out of memory",
                io::Error::from_raw_os_error(libc::ENOMEM),
                AcceptFailure::Resources,
            ),
            (
                "listener fd closed",
                io::Error::from_raw_os_error(libc::EBADF),
                AcceptFailure::Listener,
            ),
            (
                "not listening",
                io::Error::from_raw_os_error(libc::EINVAL),
                AcceptFailure::Listener,
            ),
            (
                "synthetic reset",
                io::Error::from(io::ErrorKind::ConnectionReset),
                AcceptFailure::Connection,
            ),
            (
                "synthetic other",
                io::Error::other("odd"),
                AcceptFailure::Listener,
            ),
        ];
        for (name, err, want) in table {
            assert_eq!(AcceptFailure::of(&err), want, "{name}");
        }
    }

    #[tokio::test]
    async fn every_request_carries_the_callers_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let listener = super::super::bind(&path).await.unwrap();
        let app = Router::new().route(
            "/whoami",
            get(|ConnectInfo(cred): ConnectInfo<PeerCred>| async move {
                format!("{} {} {:?}", cred.uid, cred.gid, cred.pid)
            }),
        );
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve_router(
            listener,
            app,
            stop.clone(),
            ServeOptions::default(),
        ));

        // /proc/self belongs to this process's effective uid and gid.
        let me = std::fs::metadata("/proc/self").unwrap();
        let want = format!("{} {} {:?}", me.uid(), me.gid(), Some(std::process::id()));
        let stream = UnixStream::connect(&path).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        let driver = tokio::spawn(conn);
        // Twice on one connection: the credentials are on every request, not only the first.
        for _ in 0..2 {
            let request = hyper::Request::get("/whoami")
                .header(hyper::header::HOST, "localhost")
                .body(Empty::<Bytes>::new())
                .unwrap();
            let response = sender.send_request(request).await.unwrap();
            assert_eq!(response.status(), 200);
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(String::from_utf8_lossy(&body), want);
        }
        driver.abort();
        stop.cancel();
        server.await.unwrap().unwrap();
    }
}
