//! A real daemon for API tests: `wgmeshd::daemon::run` with the userspace backend and LAN
//! discovery off, on a thread of its own inside a fresh private network namespace (so its
//! interface never touches the host), with its own state directory and socket; plus an HTTP
//! client for its socket, optionally connecting as another uid. Needs root.

// Shared by several test programs, each of which uses a part.
#![allow(dead_code)]

use std::future::Future;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use wgmeshd::api::SocketGroup;
use wgmeshd::config::{MeshSecret, SecretOrigin};
use wgmeshd::daemon::{JoinOptions, run};
use wgmeshd::logging::LogLevel;
use wgmeshd::system::wg::BackendChoice;

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// True when a root-only test may run; otherwise prints a skip (or panics under `CI=true`).
pub fn privileged(test: &str) -> bool {
    if is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: needs root (a private network namespace) and CI=true");
    }
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: needs root");
    false
}

/// Runs `test` on a current-thread runtime in a thread inside a private network namespace.
pub fn isolated<F, Fut>(test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let thread = std::thread::spawn(move || {
        // SAFETY: plain syscall; it only changes this thread's network namespace.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(test());
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

/// A group of this system other than root's and nogroup (65534), to give the socket.
pub fn some_group() -> (u32, String) {
    let file = std::fs::read_to_string("/etc/group").unwrap();
    file.lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let gid: u32 = fields.nth(1)?.parse().ok()?;
            (gid != 0 && gid != 65_534).then(|| (gid, name.to_owned()))
        })
        .expect("a group besides root and nogroup in /etc/group")
}

/// A running daemon.
pub struct Daemon {
    _dir: tempfile::TempDir,
    /// Its API socket.
    pub socket: PathBuf,
    /// Its state directory (identity, peer cache, reload file).
    pub state: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Daemon {
    /// Starts a daemon for interface `iface` with socket group `group` and waits until its API
    /// answers. Call inside [`isolated`].
    pub async fn start(iface: &str, group: SocketGroup) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
        let socket = dir.path().join("run/wgmeshd.sock");
        let options = JoinOptions {
            secret: MeshSecret::parse(
                "wgmesh://v1/api-contract-test-secret-0123456789",
                SecretOrigin::Literal,
            )
            .unwrap(),
            interface: iface.parse().unwrap(),
            listen_port: 51_998,
            state_dir: state.clone(),
            socket: socket.clone(),
            socket_group: group,
            wg_backend: BackendChoice::Userspace,
            mesh_subnet: None,
            advertise_routes: Vec::new(),
            lan_discovery: false,
            discovery: wgmeshd::daemon::DiscoveryOptions::none(),
            introducer: false,
            force_relay: false,
            log_level: LogLevel::Info,
            log_control: None,
            hangups: None,
            metrics_listen: None,
            uapi_dir: Some(dir.path().join("uapi")),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(
            options,
            async move {
                let _ = stopped.await;
            },
            std::future::pending(),
        ));
        let daemon = Self {
            _dir: dir,
            socket,
            state,
            stop: Some(stop),
            task: Some(task),
        };
        daemon.wait_api().await;
        daemon
    }

    async fn wait_api(&self) {
        for _ in 0..400 {
            if let Ok(stream) = UnixStream::connect(&self.socket).await
                && let Ok(answer) = call(stream, "GET", "/v1/status", &[], "").await
                && answer.status == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "the daemon's API never answered on {}",
            self.socket.display()
        );
    }

    /// Stops the daemon and waits for it; how long that took.
    pub async fn stop(mut self) -> Duration {
        let started = Instant::now();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().expect("stopped once");
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the daemon stops")
            .expect("the daemon task")
            .expect("the daemon exits cleanly");
        started.elapsed()
    }

    /// `method path` with `headers` and `body`, on a new connection as this process (root).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Answer {
        let stream = UnixStream::connect(&self.socket).await.unwrap();
        call(stream, method, path, headers, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Lets every uid reach the socket, as an operator granting reads (say by an ACL) would.
    pub fn open_to_everyone(&self) {
        let dir = self.socket.parent().unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&self.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
        std::fs::set_permissions(
            dir.parent().unwrap(),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A test that failed half-way: stop it anyway (the namespace goes with the thread).
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// An answer, read whole.
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The problem `type` of an error answer.
    pub fn problem_type(&self) -> String {
        self.json()["type"].as_str().unwrap_or_default().to_owned()
    }
}

/// Sends a request on `stream` and reads the whole answer.
pub async fn call(
    stream: UnixStream,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<Answer, hyper::Error> {
    let response = send(stream, method, path, headers, body).await?;
    let status = response.status().as_u16();
    let content_type = content_type(&response);
    let body = response.into_body().collect().await?.to_bytes();
    Ok(Answer {
        status,
        content_type,
        body,
    })
}

/// Sends a request on `stream`; the response with its body still to read.
pub async fn send(
    stream: UnixStream,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<hyper::Response<Incoming>, hyper::Error> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, "localhost");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("a valid request");
    sender.send_request(request).await
}

pub fn content_type<B>(response: &hyper::Response<B>) -> String {
    response
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Connects to `socket` from a thread running as `uid`, primary group `gid` and supplementary
/// groups `groups`: the credentials the kernel records for the connection. Only that thread's
/// credentials change (the raw syscalls, not libc's process-wide wrappers).
pub async fn connect_as(socket: &Path, uid: u32, gid: u32, groups: &[u32]) -> UnixStream {
    let socket = socket.to_owned();
    let groups = groups.to_vec();
    let stream = tokio::task::spawn_blocking(move || {
        std::thread::spawn(move || {
            // SAFETY: each call changes the credentials of this thread only, which exits right
            // after connecting.
            unsafe {
                let rc = libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr());
                assert_eq!(rc, 0, "setgroups: {}", std::io::Error::last_os_error());
                let rc = libc::syscall(libc::SYS_setresgid, gid, gid, gid);
                assert_eq!(rc, 0, "setresgid: {}", std::io::Error::last_os_error());
                let rc = libc::syscall(libc::SYS_setresuid, uid, uid, uid);
                assert_eq!(rc, 0, "setresuid: {}", std::io::Error::last_os_error());
            }
            std::os::unix::net::UnixStream::connect(&socket)
        })
        .join()
        .expect("the connecting thread")
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("uid {uid} cannot connect: {e}"));
    stream.set_nonblocking(true).unwrap();
    UnixStream::from_std(stream).unwrap()
}
