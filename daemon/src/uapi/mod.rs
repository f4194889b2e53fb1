//! `wg show` for the embedded device: a read-only WireGuard UAPI socket,
//! `<uapi-dir>/<iface>.sock` (`/run/wireguard/wg0.sock` by default).
//!
//! `wg`, `wg show`, `wg showconf` and monitoring agents find a userspace WireGuard device by that
//! socket and speak the cross-platform UAPI text protocol to it ([`protocol`]). This task serves
//! `get` from the device itself, read fresh for every request (the same read the reconcile loop
//! makes: about 8 ms for 1000 peers on the embedded engine), so what `wg show` prints is what the
//! device holds at that moment, handshakes and counters included.
//!
//! - **Root only.** The socket is `0600` in a directory created `0700`, and every connection's
//!   uid (`SO_PEERCRED`) must be 0; anyone else gets `errno=-13` (EACCES) for its first request,
//!   without the device being read, and the connection closes.
//! - **The private key is in the answer**, as kernel WireGuard gives it to root over netlink:
//!   `wg` needs it to print the interface's public key (it shows the private key itself as
//!   "(hidden)"), and `wg showconf` prints it. Only root can ask, and root can read it from the
//!   state file (`<state-dir>/<iface>.json`, `0600`) anyway. It is never logged; the answer's
//!   buffer is zeroed after use.
//! - **Read-only.** `set` is read to its end and refused with `errno=-1` (EPERM): the daemon owns
//!   the device and would undo any change at its next reconcile pass; a debug line says so.
//! - **Bounded.** Lines and requests are capped ([`protocol::LINE_CAP`],
//!   [`protocol::REQUEST_CAP`]); a connection lives at most [`CONNECTION_TIMEOUT`] and serves at
//!   most [`MAX_REQUESTS`]; at most [`MAX_CONNECTIONS`] are served at once (more are closed at
//!   once). Anything refused is logged at debug level and counted as a drop of layer `uapi`
//!   (`GET /metrics`), by reason.
//! - **Never stolen, never left behind.** A stale socket file is replaced; one another process
//!   answers on is not: the task fails, logs an error, layer `uapi` shows `retrying` with the
//!   reason and the task tries again with backoff; the daemon goes on. The file is removed when
//!   the task ends, on every path (see [`crate::system::uapi`]).
//!
//! Only for the userspace backend: kernel devices are read by `wg` over netlink, so with the
//! kernel backend (and with `--no-uapi`) the layer is `off`. gotatun's own UAPI listener is not
//! used: it leaks its socket and re-creates peers on `set` (netlab GOTATUN.md G8).

pub mod protocol;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixStream;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use self::protocol::{Decoder, Errno, Refusal, Step, error_answer, get_answer};
use crate::keys::PrivateKey;
use crate::metrics::LayerCounters;
use crate::supervisor::{LayerHandle, LayerState, Supervisor, TaskError};
use crate::system::uapi::UapiListener;
use crate::system::wg::{AnyWireGuard, WireGuard};

/// Most connections served at once; more are closed on arrival.
pub const MAX_CONNECTIONS: usize = 8;
/// Longest life of one connection, whatever it does.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// Most requests answered on one connection (`wg` sends one).
pub const MAX_REQUESTS: usize = 16;
/// `EACCES`: the caller is not root.
const ACCESS_DENIED: Errno = Errno(13);

/// The UAPI server of one device.
pub struct UapiServer<W> {
    /// Directory of the socket (`--uapi-dir`).
    pub dir: PathBuf,
    /// Interface name: the socket is `<dir>/<iface>.sock`.
    pub iface: String,
    /// The device answered for.
    pub wg: Arc<W>,
    /// The daemon's private key, listed when the device runs with it.
    pub private_key: Arc<PrivateKey>,
    /// Layer `uapi`: running with the socket path, retrying with why not.
    pub layer: LayerHandle,
    /// Answers sent (`sent`) and requests or callers refused (`dropped`, by reason).
    pub counters: LayerCounters,
}

/// Who is on a connection, by its `SO_PEERCRED` uid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Caller {
    /// uid 0: served.
    Root,
    /// Anyone else (`None`: the kernel could not tell): refused.
    Other(Option<u32>),
}

/// How one read of a request line ended.
enum Line {
    /// A whole line (in the buffer, newline removed).
    Complete,
    /// Longer than [`protocol::LINE_CAP`]; not read to its end.
    TooLong,
    /// The stream ended (a partial line is dropped with it).
    Eof,
}

impl<W: WireGuard + 'static> UapiServer<W> {
    /// Binds the socket and serves it until `cancel`; the socket file is removed on return.
    ///
    /// # Errors
    ///
    /// When the socket cannot be set up (another process serves it, say) or `accept` fails; the
    /// supervisor retries.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) -> Result<(), TaskError> {
        let listener = match UapiListener::bind(&self.dir, &self.iface).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!(error = %e, "no UAPI socket: wg show will not see this device");
                return Err(e.into());
            }
        };
        let path = listener.path().display().to_string();
        self.layer.running(path.clone());
        tracing::info!(socket = %path, "UAPI socket ready: wg show reads this device");
        let mut connections = JoinSet::new();
        let result = loop {
            tokio::select! {
                () = cancel.cancelled() => break Ok(()),
                Some(ended) = connections.join_next(), if !connections.is_empty() => {
                    if let Err(e) = ended
                        && e.is_panic()
                    {
                        tracing::error!(error = %e, "a UAPI connection panicked; the server goes on");
                    }
                }
                accepted = listener.accept() => {
                    let (stream, uid) = match accepted {
                        Ok(accepted) => accepted,
                        Err(e) => break Err(io::Error::new(
                            e.kind(),
                            format!("accept on the UAPI socket {path}: {e}"),
                        )),
                    };
                    if connections.len() >= MAX_CONNECTIONS {
                        self.counters.dropped("busy");
                        tracing::debug!(limit = MAX_CONNECTIONS, "UAPI: too many connections; closed one");
                        continue;
                    }
                    // A caller that is not root is answered EACCES once its request is in (an
                    // answer before that would meet a client still writing, killing it with
                    // SIGPIPE instead of telling it why); nothing is read from the device for it.
                    let caller = if uid == Some(0) { Caller::Root } else { Caller::Other(uid) };
                    connections.spawn(self.clone().serve(stream, caller));
                }
            }
        };
        // Aborts the connections still open; the listener's drop removes the file.
        connections.shutdown().await;
        result.map_err(TaskError::from)
    }

    /// One connection, bounded by [`CONNECTION_TIMEOUT`].
    async fn serve(self: Arc<Self>, stream: UnixStream, caller: Caller) {
        match tokio::time::timeout(CONNECTION_TIMEOUT, self.converse(stream, caller)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "UAPI connection failed"),
            Err(_) => {
                self.counters.dropped("timeout");
                tracing::debug!(
                    timeout_s = CONNECTION_TIMEOUT.as_secs(),
                    "UAPI connection timed out; closed"
                );
            }
        }
    }

    async fn converse(&self, stream: UnixStream, caller: Caller) -> io::Result<()> {
        let (read, mut write) = stream.into_split();
        let mut reader = BufReader::new(read);
        let mut decoder = Decoder::new();
        let mut line = Vec::new();
        let mut answered = 0;
        while answered < MAX_REQUESTS {
            let step = match read_line(&mut reader, &mut line).await? {
                Line::Complete => decoder.line(&line),
                Line::TooLong => decoder.line_too_long(),
                Line::Eof => {
                    if decoder.in_request() {
                        self.counters.dropped("cut_request");
                        tracing::debug!("UAPI: the caller left in the middle of a request");
                    }
                    return Ok(());
                }
            };
            if step == Step::More {
                continue;
            }
            if let Caller::Other(uid) = caller {
                self.counters.dropped("not_root");
                tracing::debug!(?uid, "UAPI: refused a caller that is not root");
                write
                    .write_all(error_answer(ACCESS_DENIED).as_bytes())
                    .await?;
                return Ok(());
            }
            match step {
                Step::More => {}
                Step::Get => {
                    let answer = match self.wg.read().await {
                        Ok(device) => get_answer(&device, Some(&self.private_key)),
                        Err(e) => {
                            tracing::warn!(error = %e, "UAPI get: cannot read the device");
                            error_answer(Errno::IO).into()
                        }
                    };
                    write.write_all(answer.as_bytes()).await?;
                    self.counters.sent();
                    self.layer.success();
                }
                Step::Refuse(refusal) => {
                    self.refused(refusal);
                    write
                        .write_all(error_answer(refusal.errno()).as_bytes())
                        .await?;
                    if !refusal.keeps_connection() {
                        return Ok(());
                    }
                }
            }
            answered += 1;
        }
        Ok(())
    }

    fn refused(&self, refusal: Refusal) {
        self.counters.dropped(refusal.reason());
        if refusal == Refusal::SetRefused {
            tracing::debug!(
                "UAPI set refused: wgmeshd owns this device and would undo any change; the socket is read-only"
            );
        } else {
            tracing::debug!(reason = refusal.reason(), "UAPI: malformed request refused");
        }
    }
}

/// Reads one line into `buf` (cleared first, newline removed), never holding more than
/// [`protocol::LINE_CAP`] bytes of it.
async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R, buf: &mut Vec<u8>) -> io::Result<Line> {
    buf.clear();
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(Line::Eof);
        }
        let (take, done) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (i, true),
            None => (available.len(), false),
        };
        if buf.len() + take > protocol::LINE_CAP {
            return Ok(Line::TooLong);
        }
        buf.extend_from_slice(&available[..take]);
        reader.consume(take + usize::from(done));
        if done {
            return Ok(Line::Complete);
        }
    }
}

/// Spawns task `uapi` (layer `uapi`) for `wg`, serving in `dir`; with `dir` `None`
/// (`--no-uapi`) or a kernel device the layer is `off` and nothing is spawned.
pub fn spawn(
    sup: &Supervisor,
    dir: Option<PathBuf>,
    wg: Arc<AnyWireGuard>,
    private_key: Arc<PrivateKey>,
    counters: LayerCounters,
) {
    let iface = wg.name().to_owned();
    let Some(dir) = dir else {
        sup.registry().layer("uapi", LayerState::Off);
        tracing::info!("UAPI socket off (--no-uapi)");
        return;
    };
    if matches!(*wg, AnyWireGuard::Kernel(_)) {
        sup.registry().layer("uapi", LayerState::Off);
        tracing::info!(
            iface,
            "UAPI socket off: a kernel WireGuard device is read by wg over netlink"
        );
        return;
    }
    let layer = sup.registry().layer("uapi", LayerState::Running);
    let server = Arc::new(UapiServer {
        dir,
        iface,
        wg,
        private_key,
        layer: layer.clone(),
        counters,
    });
    sup.spawn_restarting("uapi", Some(layer), move |ctx| {
        server.clone().run(ctx.cancel)
    });
}

#[cfg(test)]
mod tests;
