//! Serving a bound API socket: the accept loop and the life of each connection.
//!
//! What one client can cost the daemon is bounded here (per connection) and in
//! [`super::limits`] (per request):
//! - connections at once, over all callers and per caller (uid, from `SO_PEERCRED`): every
//!   connection is accepted, then admitted, admitted in place of an idle connection that is
//!   closed for it, or closed (the decision is [`super::slots::admit`]). Idle connections, those
//!   not processing a request ([`super::activity`]), give way to new ones: a uid over its share
//!   loses its own oldest idle connection, and at the global cap the uid holding the most loses
//!   its oldest idle one. A flood of connections thus costs the daemon an `accept(2)` and a
//!   `close(2)` each and never stands between a normal client and its answer, whether the flood
//!   comes from another uid, many uids or the client's own; only when every connection in the
//!   way is processing a request is the new one closed;
//! - time to send a request head, counted from accept and again from the end of each response:
//!   a silent client, a trickling one (slowloris) and an idle keep-alive connection are closed;
//! - size of a request head, so a held connection costs a bounded buffer;
//! - shutdown: stop accepting, let requests in flight finish for a bounded drain, drop the rest.
//!
//! Each connection's credentials are attached to every request on it as
//! `ConnectInfo<PeerCred>`, with the server's stop signal ([`super::events::Shutdown`], so that
//! event streams end when serving does instead of holding the drain); a connection whose
//! credentials cannot be read is closed, never served with guessed ones. Connection tasks are
//! owned by the serving task and never outlive it.

use std::convert::Infallible;
use std::io;
use std::os::fd::AsFd as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::{Extension, Router};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::{self, JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::{Layer as _, ServiceExt as _};
use tracing::Instrument as _;

use super::activity::{Activity, TrackedBody};
use super::auth::PeerCred;
use super::events::Shutdown;
use super::limits::MAX_IN_FLIGHT;
use super::listener::ApiListener;
use super::slots::{Admission, Cap, Caps, ConnId, ConnView, RateLimitedWarning, admit};
use super::{ApiError, ApiState};

/// Connections held at once, over all callers. A held connection costs 6 KiB (silent) to 18 KiB
/// (a request head in its buffer) of the daemon's memory (`benches/api_idle.rs`), so the cap
/// bounds that to under 5 MiB; local clients (`wgmeshctl`, monitoring) use one connection per
/// command, so 256 is far above honest use. It is well above [`MAX_IN_FLIGHT`] (requests
/// processed at once; more are answered 503 at once), so at the cap most connections are idle
/// and a new one always finds one to replace.
pub const MAX_CONNECTIONS: usize = 256;
/// Connections one uid may hold; beyond it a new connection replaces the uid's own oldest idle
/// one. An eighth of [`MAX_CONNECTIONS`], so a single uid flooding the socket churns through its
/// own share and never reaches the global cap, where other uids would lose connections; a
/// monitoring agent polling in parallel still has room. The share also bounds how many
/// connections of one uid can be busy at once, which is when that uid's new ones are refused.
pub const MAX_CONNECTIONS_PER_UID: usize = 32;
/// Time a client has to send a complete request head, from accept and again from the end of each
/// response (so it also bounds an idle keep-alive connection). Local clients write their request
/// in one go within milliseconds; 5 s still tolerates a heavily loaded host. Under a flood, idle
/// connections are replaced long before this.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long requests in flight may still run after shutdown is asked for. A request is bounded by
/// the request timeout once its head is read; this bounds what is left (a head still trickling
/// in, a response the client does not read), so shutdown cannot be held open.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// hyper's read (and write) buffer cap, which also caps a request head: our clients send heads
/// of a few hundred bytes, and hyper's default (~400 KiB) would let each held connection pin that
/// much memory. 16 KiB leaves room for long paths and headers; bodies stream through it in chunks.
const MAX_BUF_BYTES: usize = 16 * 1024;
/// At most one warning per this interval about connections closed for lack of room (refused, or
/// idle ones replaced); each is also logged at debug. A flood must not flood the journal too.
const WARN_INTERVAL: Duration = Duration::from_secs(60);
/// Pause before accepting again after `accept(2)` failed for lack of resources (file
/// descriptors, memory): retrying at once would spin a core and log in a loop.
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

// At the cap, a new connection finds an idle one to replace unless every held connection is
// processing a request; keeping the cap above the requests processed at once rules that out.
const _: () = assert!(MAX_CONNECTIONS > MAX_IN_FLIGHT);

/// Bounds on the connections of one server. [`Default`] gives the production values; tests use
/// small ones to stay fast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeOptions {
    /// Connections held at once, over all callers; at least 1. At the cap a new connection
    /// replaces the oldest idle connection of the uid holding the most, and is closed when none
    /// is idle. Default [`MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// Connections one uid may hold. Beyond it a new connection replaces that uid's oldest idle
    /// connection, and is closed when all of them are processing requests (0 closes every
    /// connection). Default [`MAX_CONNECTIONS_PER_UID`].
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
    let app = super::router_with(state, listener.write_policy().clone());
    serve_router(listener, app, shutdown, options).await
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
        policy: _,
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

/// A connection the server holds, as the accept loop sees it.
struct Held {
    id: ConnId,
    /// Its task in [`Server::connections`], to forget it once the task has ended.
    task: task::Id,
    uid: u32,
    activity: Arc<Activity>,
    /// Closes it at once, without a drain (the connection task selects on it).
    close: CancellationToken,
    /// Cancelled by the connection task once it has dropped the connection (closed its socket).
    closed: CancellationToken,
}

/// The state of the accept loop.
struct Server<'a> {
    path: &'a Path,
    app: Router,
    http: http1::Builder,
    caps: Caps,
    /// Every connection not closed by the loop whose task has not been seen to end. At most
    /// `caps.max_connections` entries; a few microseconds of scanning per accept.
    held: Vec<Held>,
    next_id: u64,
    refusals: RateLimitedWarning,
    evictions: RateLimitedWarning,
    connections: JoinSet<()>,
    stop: CancellationToken,
}

impl<'a> Server<'a> {
    fn new(path: &'a Path, app: Router, options: &ServeOptions, stop: CancellationToken) -> Self {
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(options.header_read_timeout)
            .max_buf_size(MAX_BUF_BYTES);
        Self {
            path,
            app,
            http,
            caps: Caps {
                max_connections: options.max_connections.max(1),
                max_per_uid: options.max_connections_per_uid,
            },
            held: Vec::new(),
            next_id: 0,
            refusals: RateLimitedWarning::new(WARN_INTERVAL),
            evictions: RateLimitedWarning::new(WARN_INTERVAL),
            connections: JoinSet::new(),
            stop,
        }
    }

    /// Accepts and starts connections until `stop` is cancelled (`Ok`) or the listener fails.
    async fn accept_loop(&mut self, listener: &UnixListener) -> io::Result<()> {
        loop {
            let Some(stream) = self.accept(listener).await? else {
                return Ok(());
            };
            let accepted = Instant::now();
            self.forget_ended();
            if let Some(evicted) = self.start(stream, accepted) {
                // Its socket is released before the next accept: the server holds at most the
                // cap, plus for a moment the one connection just accepted.
                tokio::select! {
                    biased;
                    () = self.stop.cancelled() => return Ok(()),
                    () = evicted.cancelled() => {}
                }
            }
            // A flood keeps `accept` ready; let the connection just started read its request
            // head before the next accept, so a normal client's head is read while it is the
            // youngest idle connection.
            task::yield_now().await;
        }
    }

    /// Waits for a connection; `None` once `stop` is cancelled.
    async fn accept(&mut self, listener: &UnixListener) -> io::Result<Option<UnixStream>> {
        loop {
            let accepted = tokio::select! {
                biased;
                () = self.stop.cancelled() => return Ok(None),
                accepted = listener.accept() => accepted,
            };
            let err = match accepted {
                Ok((stream, _addr)) => return Ok(Some(stream)),
                Err(err) => err,
            };
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

    /// Forgets the connections whose tasks have ended.
    fn forget_ended(&mut self) {
        while let Some(done) = self.connections.try_join_next_with_id() {
            let task = match done {
                Ok((task, ())) => task,
                Err(err) => {
                    connection_task_failed(&err);
                    err.id()
                }
            };
            if let Some(at) = self.held.iter().position(|held| held.task == task) {
                self.held.swap_remove(at);
            }
        }
    }

    /// Admits `stream` by its caller's credentials (closing an idle connection for it if need
    /// be) and serves it in a task of its own, or closes it (by dropping it) when the credentials
    /// are unreadable or no connection in its way is idle. Returns the `closed` token of the
    /// connection it closed, if any.
    fn start(&mut self, stream: UnixStream, accepted: Instant) -> Option<CancellationToken> {
        let cred = match stream.peer_cred() {
            Ok(cred) => PeerCred::of_connection(cred, stream.as_fd()),
            Err(err) => {
                tracing::warn!(
                    socket = %self.path.display(),
                    error = %err,
                    "cannot read the credentials of an API client; closing its connection"
                );
                return None;
            }
        };
        let views: Vec<ConnView> = self
            .held
            .iter()
            .map(|held| ConnView {
                id: held.id,
                uid: held.uid,
                idle_since: held.activity.idle_since(),
            })
            .collect();
        let evicted = match admit(&views, cred.uid, self.caps) {
            Admission::Admit => None,
            Admission::AdmitEvicting { victim, cap } => self.evict(victim, cap, &cred, accepted),
            Admission::Refuse { cap } => {
                self.refused(cap, &cred, accepted);
                return None;
            }
        };
        self.spawn(stream, cred, accepted);
        evicted
    }

    /// Serves `stream` of caller `cred` in a task of its own and holds it.
    fn spawn(&mut self, stream: UnixStream, cred: PeerCred, accepted: Instant) {
        let activity = Activity::new(accepted);
        // Per connection: cheap (the router is shared behind an Arc), and it is what makes the
        // caller's credentials visible to every request on this connection.
        let (uid, pid) = (cred.uid, cred.pid);
        let app = Extension(Shutdown(self.stop.clone()))
            .layer(Extension(ConnectInfo(cred)).layer(self.app.clone()));
        let tracked = Arc::clone(&activity);
        let service = service_fn(move |request: hyper::Request<Incoming>| {
            // Busy from here (hyper has read the whole head) until the response body is done.
            let busy = tracked.busy();
            let response = app.clone().oneshot(request);
            async move {
                let response = response.await?;
                Ok::<_, Infallible>(response.map(|body| TrackedBody::new(body, busy)))
            }
        });
        let connection = self.http.serve_connection(TokioIo::new(stream), service);
        let stop = self.stop.clone();
        let close = CancellationToken::new();
        let closed_by_us = close.clone();
        let closed = CancellationToken::new();
        // Also dropped if the task is aborted at the end of the drain.
        let closed_guard = closed.clone().drop_guard();
        let id = ConnId(self.next_id);
        self.next_id += 1;
        let span = tracing::debug_span!("api_connection", id = id.0, uid, pid = ?pid);
        let task = self.connections.spawn(
            async move {
                let ended = {
                    let mut connection = std::pin::pin!(connection);
                    tokio::select! {
                        biased;
                        // Dropping the connection closes the socket; it was idle, nothing is
                        // lost.
                        () = closed_by_us.cancelled() => Ended::Evicted,
                        result = connection.as_mut() => Ended::Closed(result),
                        () = stop.cancelled() => {
                            // Finishes the request in flight, if any, then closes; the drain
                            // bounds it.
                            connection.as_mut().graceful_shutdown();
                            Ended::Closed(connection.await)
                        }
                    }
                };
                drop(closed_guard);
                ended.log();
            }
            .instrument(span),
        );
        self.held.push(Held {
            id,
            task: task.id(),
            uid,
            activity,
            close,
            closed,
        });
    }

    /// Closes the idle connection `victim` to make room for a new one of `cred` that ran into
    /// `cap`: debug each, warn rate-limited. Returns its `closed` token.
    fn evict(
        &mut self,
        victim: ConnId,
        cap: Cap,
        cred: &PeerCred,
        now: Instant,
    ) -> Option<CancellationToken> {
        let at = self.held.iter().position(|held| held.id == victim)?;
        // Forgotten at once: it must not be chosen again, and its task ends as soon as it runs.
        let held = self.held.swap_remove(at);
        held.close.cancel();
        tracing::debug!(
            conn = held.id.0,
            conn_uid = held.uid,
            uid = cred.uid,
            pid = ?cred.pid,
            cap = cap.name(),
            "API connection closed while idle to make room for a new one"
        );
        if let Some(closed) = self.evictions.occurred(now) {
            tracing::warn!(
                socket = %self.path.display(),
                uid = cred.uid,
                conn_uid = held.uid,
                closed,
                cap = cap.name(),
                max_connections = self.caps.max_connections,
                max_connections_per_uid = self.caps.max_per_uid,
                "idle API connections closed to make room for new ones; a client may be flooding the socket"
            );
        }
        Some(held.closed)
    }

    /// Logs a connection refused because every connection in its way is busy: debug each, warn
    /// rate-limited.
    fn refused(&mut self, cap: Cap, cred: &PeerCred, now: Instant) {
        tracing::debug!(
            uid = cred.uid,
            pid = ?cred.pid,
            cap = cap.name(),
            "API connection refused: no room, and every connection in its way is processing a request"
        );
        if let Some(refused) = self.refusals.occurred(now) {
            tracing::warn!(
                socket = %self.path.display(),
                uid = cred.uid,
                refused,
                cap = cap.name(),
                max_connections = self.caps.max_connections,
                max_connections_per_uid = self.caps.max_per_uid,
                "API connections refused: every connection in their way is processing a request"
            );
        }
    }

    /// Waits at most `deadline` for the connections (already told to stop), then aborts the rest.
    async fn drain(&mut self, deadline: Duration) {
        let connections = &mut self.connections;
        let drained = tokio::time::timeout(deadline, async {
            while let Some(done) = connections.join_next().await {
                if let Err(err) = done {
                    connection_task_failed(&err);
                }
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
        self.held.clear();
    }
}

/// How a connection task ended.
enum Ended {
    /// The server closed it while idle, to make room.
    Evicted,
    /// The connection ended: closed by the client, timed out, failed, or shut down.
    Closed(Result<(), hyper::Error>),
}

impl Ended {
    /// Logs it. Everything here is the client's doing or expected, hence debug.
    fn log(self) {
        match self {
            Self::Evicted => tracing::debug!("API connection closed: idle, room needed"),
            Self::Closed(Ok(())) => tracing::debug!("API connection closed"),
            Self::Closed(Err(err)) if err.is_timeout() => {
                tracing::debug!("API connection closed: no complete request head in time");
            }
            Self::Closed(Err(err)) => tracing::debug!(error = %err, "API connection failed"),
        }
    }
}

/// Reports a connection task that panicked; an aborted one (end of the drain) is expected.
fn connection_task_failed(err: &JoinError) {
    if err.is_panic() {
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
    use tokio::io::AsyncReadExt as _;
    use tokio::sync::{Semaphore, mpsc};

    use super::*;

    /// A test router: `/wait` reports that it was entered, then answers only once the test adds
    /// a permit to the semaphore (a request kept in flight); `/now` answers at once.
    fn waiting_app() -> (Router, mpsc::UnboundedReceiver<()>, Arc<Semaphore>) {
        let (entered_tx, entered) = mpsc::unbounded_channel();
        let release = Arc::new(Semaphore::new(0));
        let gate = Arc::clone(&release);
        let app = Router::new()
            .route(
                "/wait",
                get(move || {
                    let entered_tx = entered_tx.clone();
                    let gate = Arc::clone(&gate);
                    async move {
                        entered_tx.send(()).unwrap();
                        gate.acquire().await.unwrap().forget();
                        "released"
                    }
                }),
            )
            .route("/now", get(|| async { "now" }));
        (app, entered, release)
    }

    /// `GET uri` on a new connection to `path`, in a task: its status, or the error when the
    /// server closes the connection instead.
    async fn request(path: &Path, uri: &'static str) -> task::JoinHandle<Result<u16, String>> {
        let stream = UnixStream::connect(path).await.unwrap();
        tokio::spawn(async move {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
            let driver = tokio::spawn(conn);
            let request = hyper::Request::get(uri)
                .header(hyper::header::HOST, "localhost")
                .body(Empty::<Bytes>::new())
                .unwrap();
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| e.to_string())?;
            let code = response.status().as_u16();
            response.into_body().collect().await.unwrap();
            driver.abort();
            Ok(code)
        })
    }

    /// Asserts the server closes `stream` within a second without answering.
    async fn closed_at_once(stream: &mut UnixStream, name: &str) {
        let mut buf = [0_u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await;
        match read {
            Ok(Ok(0)) => {}
            Ok(Err(err)) if err.kind() == io::ErrorKind::ConnectionReset => {}
            other => panic!("{name}: connection not closed at once: {other:?}"),
        }
    }

    /// Asserts the server keeps `stream` open (silent) for a moment.
    async fn still_open(stream: &mut UnixStream, name: &str) {
        let mut buf = [0_u8; 64];
        let read = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await;
        assert!(read.is_err(), "{name}: connection closed: {read:?}");
    }

    #[tokio::test]
    async fn a_busy_connection_is_never_evicted() {
        // (name, options): the busy connection and the idle one fill the cap that applies.
        let table = [
            (
                "global cap",
                ServeOptions {
                    max_connections: 2,
                    max_connections_per_uid: 100,
                    header_read_timeout: Duration::from_secs(30),
                    ..ServeOptions::default()
                },
            ),
            (
                "per-uid share",
                ServeOptions {
                    max_connections: 100,
                    max_connections_per_uid: 2,
                    header_read_timeout: Duration::from_secs(30),
                    ..ServeOptions::default()
                },
            ),
        ];
        for (name, options) in table {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("api.sock");
            let listener = super::super::bind(&path).await.unwrap();
            let (app, mut entered, release) = waiting_app();
            let stop = CancellationToken::new();
            let server = tokio::spawn(serve_router(listener, app, stop.clone(), options));

            // The oldest connection, but busy with a request.
            let busy = request(&path, "/wait").await;
            entered.recv().await.unwrap();
            let mut idle = UnixStream::connect(&path).await.unwrap();
            // A newcomer takes the idle connection's place, not the busy one's.
            let newcomer = request(&path, "/now").await;
            let answered = tokio::time::timeout(Duration::from_secs(2), newcomer).await;
            assert_eq!(answered.unwrap().unwrap(), Ok(200), "{name}");
            closed_at_once(&mut idle, name).await;
            release.add_permits(1);
            assert_eq!(busy.await.unwrap(), Ok(200), "{name}: busy one answered");

            stop.cancel();
            server.await.unwrap().unwrap();
        }
    }

    #[tokio::test]
    async fn when_every_connection_in_the_way_is_busy_a_new_one_is_closed() {
        // (name, options, requests in flight that fill the cap that applies)
        let table = [
            (
                "global cap",
                ServeOptions {
                    max_connections: 2,
                    max_connections_per_uid: 100,
                    header_read_timeout: Duration::from_secs(30),
                    ..ServeOptions::default()
                },
                2,
            ),
            (
                "per-uid share",
                ServeOptions {
                    max_connections: 100,
                    max_connections_per_uid: 1,
                    header_read_timeout: Duration::from_secs(30),
                    ..ServeOptions::default()
                },
                1,
            ),
        ];
        for (name, options, in_flight) in table {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("api.sock");
            let listener = super::super::bind(&path).await.unwrap();
            let (app, mut entered, release) = waiting_app();
            let stop = CancellationToken::new();
            let server = tokio::spawn(serve_router(listener, app, stop.clone(), options));

            let mut busy = Vec::new();
            for _ in 0..in_flight {
                busy.push(request(&path, "/wait").await);
                entered.recv().await.unwrap();
            }
            for _ in 0..3 {
                let mut newcomer = UnixStream::connect(&path).await.unwrap();
                closed_at_once(&mut newcomer, name).await;
            }
            release.add_permits(in_flight);
            for answer in busy {
                assert_eq!(answer.await.unwrap(), Ok(200), "{name}: busy one answered");
            }
            // Idle again after their answers: a newcomer takes one's place.
            let mut newcomer = request(&path, "/now").await;
            let answered = tokio::time::timeout(Duration::from_secs(2), &mut newcomer).await;
            assert_eq!(answered.unwrap().unwrap(), Ok(200), "{name}: room again");

            stop.cancel();
            server.await.unwrap().unwrap();
        }
    }

    #[tokio::test]
    async fn an_evicted_idle_connection_leaves_the_others_alone() {
        // Share of 3: the fourth connection of the uid replaces the first, the rest stay.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let listener = super::super::bind(&path).await.unwrap();
        let (app, _entered, _release) = waiting_app();
        let stop = CancellationToken::new();
        let options = ServeOptions {
            max_connections: 100,
            max_connections_per_uid: 3,
            header_read_timeout: Duration::from_secs(30),
            ..ServeOptions::default()
        };
        let server = tokio::spawn(serve_router(listener, app, stop.clone(), options));
        let mut idle = Vec::new();
        for _ in 0..3 {
            idle.push(UnixStream::connect(&path).await.unwrap());
        }
        let mut fourth = UnixStream::connect(&path).await.unwrap();
        closed_at_once(&mut idle[0], "oldest").await;
        still_open(&mut idle[1], "second").await;
        still_open(&mut idle[2], "third").await;
        still_open(&mut fourth, "newest").await;
        stop.cancel();
        server.await.unwrap().unwrap();
    }

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
