//! The daemons the tests talk to, and how they run `wgmeshctl`.
//!
//! - [`Daemon::real`]: the daemon's own listener and router (`wgmeshd::api::{bind, serve}`) on a
//!   temp-dir socket, serving snapshots the test publishes, with a task answering the API's
//!   control requests as the daemon's `control` task would ([`FakeControl`]).
//! - [`RawServer`]: fixed answers the real API cannot be made to give on demand (a problem such
//!   as "overloaded" or "forbidden" for root, an error that is not problem+json).

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use ipnet::IpNet;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use wgmesh_api_types::{
    CacheFlushResponse, Change, Event, PeerList, ReloadChanges, ReloadRequest, ReloadResponse,
    ReloadSource, SCHEMA_VERSION, Status,
};
use wgmeshd::api::{ApiState, ControlError, ControlRequest, bind, serve};

/// What the daemon's `control` task does with reloads and cache flushes, reduced to what the
/// CLI can see: current settings, the reload file's contents, the cache's fate, and a record of
/// what it was asked.
#[derive(Debug)]
pub struct FakeControl {
    /// Advertised networks now.
    pub routes: Vec<String>,
    /// Log level now.
    pub log_level: String,
    /// What reading the reload file gives.
    pub reload_file: Result<ReloadRequest, ControlError>,
    /// What writing the cache gives.
    pub cache: Result<CacheFlushResponse, ControlError>,
    /// Every reload request, as the API passed it on.
    pub received: Vec<ReloadRequest>,
    /// Cache flushes asked for.
    pub flushes: usize,
}

impl Default for FakeControl {
    fn default() -> Self {
        Self {
            routes: vec!["192.168.10.0/24".into()],
            log_level: "info".into(),
            reload_file: Ok(ReloadRequest {
                log_level: Some("debug".into()),
                ..ReloadRequest::default()
            }),
            cache: Ok(CacheFlushResponse {
                schema_version: SCHEMA_VERSION,
                path: "/var/lib/wgmesh/wg0-peers.json".into(),
                peers: 3,
            }),
            received: Vec::new(),
            flushes: 0,
        }
    }
}

impl FakeControl {
    /// Validates everything, then applies all or nothing, as `POST /v1/reload` promises.
    fn reload(&mut self, request: ReloadRequest) -> Result<ReloadResponse, ControlError> {
        self.received.push(request.clone());
        let (settings, source) = if request.is_empty() {
            (self.reload_file.clone()?, ReloadSource::File)
        } else {
            (request.clone(), ReloadSource::Api)
        };
        let invalid = |field: &str, detail: String| ControlError::Invalid {
            field: field.into(),
            detail,
        };
        if let Some(routes) = &settings.advertise_routes {
            for r in routes {
                let net: IpNet = r
                    .parse()
                    .map_err(|e| invalid("advertise_routes", format!("{r:?}: {e}")))?;
                if net.prefix_len() < 8 {
                    return Err(invalid(
                        "advertise_routes",
                        format!("{r} is broader than /8: it would capture Internet traffic"),
                    ));
                }
            }
        }
        if let Some(level) = &settings.log_level
            && !["debug", "info", "warn", "error"].contains(&level.as_str())
        {
            return Err(invalid("log_level", format!("unknown log level {level:?}")));
        }
        let mut changed = ReloadChanges::default();
        if let Some(to) = settings.advertise_routes.filter(|to| *to != self.routes) {
            changed.advertise_routes = Some(Change {
                from: self.routes.clone(),
                to,
            });
        }
        if let Some(to) = settings.log_level.filter(|to| *to != self.log_level) {
            changed.log_level = Some(Change {
                from: self.log_level.clone(),
                to,
            });
        }
        let apply = !request.dry_run && !changed.is_empty();
        if apply {
            if let Some(c) = &changed.advertise_routes {
                self.routes.clone_from(&c.to);
            }
            if let Some(c) = &changed.log_level {
                self.log_level.clone_from(&c.to);
            }
        }
        Ok(ReloadResponse {
            schema_version: SCHEMA_VERSION,
            source,
            dry_run: request.dry_run,
            applied: apply,
            changed,
        })
    }
}

/// Answers the API's control requests until the API is gone.
async fn answer(mut requests: mpsc::Receiver<ControlRequest>, control: Arc<Mutex<FakeControl>>) {
    while let Some(request) = requests.recv().await {
        let Ok(mut control) = control.lock() else {
            return;
        };
        match request {
            ControlRequest::Reload { request, reply } => {
                let _ = reply.send(control.reload(request));
            }
            ControlRequest::FlushCache { reply } => {
                control.flushes += 1;
                let _ = reply.send(control.cache.clone());
            }
        }
    }
}

/// A daemon's control API on a temp-dir socket, serving the snapshots it was given (which a test
/// may replace, as the daemon does after every reconcile) and the events a test sends. Runs on
/// its own runtime in a background thread; dropping it stops the API and checks that it stopped
/// cleanly.
pub struct Daemon {
    pub socket: PathBuf,
    pub status: watch::Sender<Status>,
    pub peers: watch::Sender<PeerList>,
    pub events: wgmeshd::events::EventBus,
    pub control: Arc<Mutex<FakeControl>>,
    stop: CancellationToken,
    thread: Option<JoinHandle<Result<(), String>>>,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// The daemon's real API.
    pub fn real(status: Status, peers: PeerList) -> Self {
        Self::start(status, peers)
    }

    fn start(status: Status, peers: PeerList) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("wgmeshd.sock");
        let (status_tx, status_rx) = watch::channel(status);
        let (peers_tx, peers_rx) = watch::channel(peers);
        let (state, requests) = ApiState::new(status_rx, peers_rx);
        let events = state.events.clone();
        let control = Arc::new(Mutex::new(FakeControl::default()));
        let stop = CancellationToken::new();
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn({
            let (socket, stop, control) = (socket.clone(), stop.clone(), control.clone());
            move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                runtime.block_on(async move {
                    let answering = tokio::spawn(answer(requests, control));
                    let result = async {
                        let bound = bind(&socket).await.map_err(|e| e.to_string());
                        let _ = bound_tx.send(bound.as_ref().map(|_| ()).map_err(Clone::clone));
                        serve(bound?, state, stop).await.map_err(|e| e.to_string())
                    }
                    .await;
                    answering.abort();
                    result
                })
            }
        });
        bound_rx
            .recv()
            .expect("API thread died before binding")
            .expect("bind the API socket");
        Self {
            socket,
            status: status_tx,
            peers: peers_tx,
            events,
            control,
            stop,
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// Sends events as the daemon emits them.
    pub fn emit(&self, events: &[Event]) {
        for e in events {
            self.events
                .send(e.clone())
                .expect("nobody follows the events");
        }
    }

    /// Waits until `n` clients follow the events (each `GET /v1/events` subscribes).
    pub fn wait_for_followers(&self, n: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.events.receiver_count() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "no one follows the events"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Stops the API as a daemon shutting down does, and checks it stopped cleanly.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        self.stop.cancel();
        let Some(thread) = self.thread.take() else {
            return;
        };
        let result = thread.join();
        if !std::thread::panicking() {
            result
                .expect("API thread panicked")
                .expect("API stopped with an error");
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// A raw HTTP/1.1 server answering one request per connection with a fixed
/// `(path, status line, content type, body)`, 404 text otherwise. Only for answers the daemon's
/// real API cannot be made to give (a problem document such as "overloaded", a 403 to root, an
/// error that is not problem+json); everything else uses [`Daemon`].
pub struct RawServer {
    _dir: tempfile::TempDir,
    pub socket: PathBuf,
}

impl RawServer {
    pub fn start(routes: Vec<(&'static str, &'static str, &'static str, String)>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("wgmeshd.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        // Detached: it blocks in accept until the test process exits.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                reader.read_line(&mut request_line).unwrap();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                        break;
                    }
                }
                let path = request_line.split(' ').nth(1).unwrap_or("").to_owned();
                let (status, ctype, body) = routes
                    .iter()
                    .find(|(p, ..)| *p == path)
                    .map(|(_, s, c, b)| (*s, *c, b.clone()))
                    .unwrap_or(("404 Not Found", "text/plain", "nope".to_owned()));
                let len = body.len();
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {len}\r\n\
                     connection: close\r\n\r\n{body}"
                );
                let _ = stream.write_all(response.as_bytes());
            }
        });
        Self { _dir: dir, socket }
    }
}

/// `wgmeshctl --socket SOCKET ARGS…`, with an environment that cannot change its output.
pub fn ctl_command(socket: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wgmeshctl"));
    cmd.arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("WGMESH_SOCKET")
        .env("COLUMNS", "100");
    cmd
}

/// Runs `wgmeshctl --socket SOCKET ARGS…`.
pub fn ctl(socket: &Path, args: &[&str]) -> Output {
    ctl_command(socket, args).output().unwrap()
}

/// Runs `wgmeshctl args` against `socket` and returns its stdout; fails the test otherwise.
pub fn ctl_ok(socket: &Path, args: &[&str]) -> String {
    let out = ctl(socket, args);
    assert!(
        out.status.success(),
        "wgmeshctl {args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// What a run shows a user: its exit status, stdout and stderr, with the (temporary) socket
/// path replaced by `<SOCKET>` and wgmeshctl's own version by `<VERSION>`. What the snapshots
/// hold.
pub fn transcript(out: &Output, socket: &Path) -> String {
    let clean = |b: &[u8]| {
        let t = text(b)
            .replace(&socket.display().to_string(), "<SOCKET>")
            .replace(concat!("(", env!("CARGO_PKG_VERSION"), ")"), "(<VERSION>)");
        if t.is_empty() || t.ends_with('\n') {
            t
        } else {
            format!("{t}\n")
        }
    };
    format!(
        "exit {}\n---- stdout\n{}---- stderr\n{}",
        out.status
            .code()
            .map_or_else(|| "by signal".to_owned(), |c| c.to_string()),
        clean(&out.stdout),
        clean(&out.stderr)
    )
}

/// Runs `wgmeshctl ARGS…` and returns its [`transcript`].
pub fn run(socket: &Path, args: &[&str]) -> String {
    transcript(&ctl(socket, args), socket)
}
