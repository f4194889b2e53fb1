//! Idle connections against the control API: how many the server holds, what they cost in memory,
//! and whether a normal client is still answered.
//!
//! `cargo bench -p wgmeshd --bench api_idle`. Each scenario runs in a child process of its own,
//! so its RSS starts fresh: the real API (`bind` + `serve`, production limits, fake snapshots) on
//! a temp socket, 3000 client connections that never send a byte (or only the start of a request
//! head, slowloris), one second to settle, then [`NORMAL_REQUESTS`] normal `GET /v1/status`, one
//! after the other, each on a connection of its own and from a thread with a runtime of its own,
//! like `wgmeshctl`. The flood comes from:
//! - "other uid": one uid that is not the normal client's (as root: `nobody`, by thread-local
//!   `setresuid`), a local user attacking;
//! - "same uid": the normal client's own uid (as root: root flooding while root asks, the likely
//!   external test; not root: the only choice);
//! - "100 uids": a hundred other uids, enough to fill the global cap (needs root).
//!
//! In the "ongoing" scenarios the flood does not stop after its 3000 connections: it keeps
//! connecting (dropping its oldest socket beyond 3000) while the normal requests run, so each of
//! them arrives among flood connections. A flood that connects faster than the server accepts
//! keeps the kernel's backlog full: a normal request first waits for every flood connection
//! ahead of it there (the listen backlog, capped by `net.core.somaxconn`) to be accepted and
//! closed, and a non-blocking `connect(2)` that finds the backlog full fails with `EAGAIN` and
//! is retried (counted in the table). RSS is the whole process: the client side's sockets are
//! in it too, but they are plain fds (kernel memory), a few KiB of user space in total. Where the
//! server closes idle connections to make room, RSS also keeps what the allocator retained from
//! the thousands of connections served and closed meanwhile, so "per held conn" overstates what
//! one held connection costs.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use socket2::{Domain, SockAddr, Socket, Type};
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;
use wgmesh_api_types::{PeerCounts, PeerList, SCHEMA_VERSION, Status};
use wgmeshd::api::{ApiState, bind, serve};

/// Idle connections opened per scenario (the figure of the hostile test in issue 7).
const CONNECTIONS: usize = 3000;
/// Time the server gets to accept what it will accept before the measurement; shorter than the
/// header-read timeout (5 s), so nothing has been timed out yet.
const SETTLE: Duration = Duration::from_secs(1);
/// Longest one normal request may wait.
const NORMAL_DEADLINE: Duration = Duration::from_secs(120);
/// Normal requests per scenario, one after the other.
const NORMAL_REQUESTS: usize = 10;
/// uid of the flood in the "other uid" scenarios when running as root.
const NOBODY: u32 = 65534;
/// First uid of the flood in the many-uids scenario.
const FLOOD_UID_BASE: u32 = 60_000;
const SCENARIO_ENV: &str = "API_IDLE_SCENARIO";

/// What each idle connection sends: nothing, or the start of a request head it never finishes.
const PARTIAL_HEAD: &[u8] = b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\n";

/// Whose connections the flood is made of.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flooder {
    /// One uid other than the normal client's (needs root).
    OtherUid,
    /// The normal client's own uid.
    SameUid,
    /// This many uids, none the normal client's (needs root).
    Uids(u32),
}

#[derive(Clone, Copy)]
struct Scenario {
    name: &'static str,
    flooder: Flooder,
    /// Each connection sends [`PARTIAL_HEAD`] (slowloris) instead of nothing.
    partial_head: bool,
    /// The flood keeps connecting while the normal requests run.
    ongoing: bool,
}

impl Scenario {
    fn needs_root(&self) -> bool {
        self.flooder != Flooder::SameUid
    }
}

const SCENARIOS: [Scenario; 8] = [
    Scenario {
        name: "other uid, silent",
        flooder: Flooder::OtherUid,
        partial_head: false,
        ongoing: false,
    },
    Scenario {
        name: "other uid, partial",
        flooder: Flooder::OtherUid,
        partial_head: true,
        ongoing: false,
    },
    Scenario {
        name: "same uid, silent",
        flooder: Flooder::SameUid,
        partial_head: false,
        ongoing: false,
    },
    Scenario {
        name: "same uid, partial",
        flooder: Flooder::SameUid,
        partial_head: true,
        ongoing: false,
    },
    Scenario {
        name: "same uid, ongoing",
        flooder: Flooder::SameUid,
        partial_head: false,
        ongoing: true,
    },
    Scenario {
        name: "100 uids, silent",
        flooder: Flooder::Uids(100),
        partial_head: false,
        ongoing: false,
    },
    Scenario {
        name: "100 uids, partial",
        flooder: Flooder::Uids(100),
        partial_head: true,
        ongoing: false,
    },
    Scenario {
        name: "100 uids, ongoing",
        flooder: Flooder::Uids(100),
        partial_head: false,
        ongoing: true,
    },
];

fn main() {
    match std::env::var(SCENARIO_ENV) {
        Ok(name) => child(&name),
        Err(_) => parent(),
    }
}

/// Runs every scenario in a child process and prints the table.
fn parent() {
    let root = is_root();
    println!(
        "api_idle: {CONNECTIONS} idle connections against the control API, then \
         {NORMAL_REQUESTS} normal requests ({})",
        if root {
            "as root: the normal client is root"
        } else {
            "not root: only same-uid scenarios"
        }
    );
    println!(
        "{:<20} {:>9} {:>12} {:>11} {:>10} {:>10} {:>13}  normal GET /v1/status",
        "scenario",
        "attempted",
        "connected",
        "held (max)",
        "RSS before",
        "RSS after",
        "per held conn"
    );
    for scenario in SCENARIOS {
        if scenario.needs_root() && !root {
            println!("{:<20} skipped: needs root", scenario.name);
            continue;
        }
        let output = Command::new(std::env::current_exe().unwrap())
            .env(SCENARIO_ENV, scenario.name)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        match stdout.lines().find_map(|l| l.strip_prefix("ROW\t")) {
            Some(row) => println!("{row}"),
            None => println!(
                "{:<20} failed: {}",
                scenario.name,
                String::from_utf8_lossy(&output.stderr)
            ),
        }
    }
}

/// One scenario, measured in this process; prints one `ROW\t` line.
fn child(name: &str) {
    let scenario = SCENARIOS
        .into_iter()
        .find(|s| s.name == name)
        .expect("known scenario");
    raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(measure(scenario));
}

async fn measure(scenario: Scenario) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wgmeshd.sock");
    let (_status_tx, status_rx) = watch::channel(status());
    let (_peers_tx, peers_rx) = watch::channel(PeerList {
        schema_version: SCHEMA_VERSION,
        peers: vec![],
    });
    let (state, _requests) = ApiState::new(status_rx, peers_rx);
    let token = CancellationToken::new();

    let listener = bind(&path).await.unwrap();
    let server = tokio::spawn(serve(listener, state, token.clone()));

    // Other uids must reach the socket; its mode is not what this measures.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = rss_kib();

    let (flood, started) = Flood::start(&path, scenario);
    let connected = started.await.unwrap();
    // Sampled while the server works through the flood, then once settled. A sample reads
    // `/proc/net/unix` in many chunks while sockets come and go, so it can count a closed
    // connection and its replacement both: the maximum may exceed the cap by a few.
    let mut most = 0;
    let settle_until = Instant::now() + SETTLE;
    while Instant::now() < settle_until {
        most = most.max(server_connections(&path));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let held = server_connections(&path);
    let rss_after = rss_kib();

    // Like `wgmeshctl`: a process of its own with a current-thread runtime, so the requests do
    // not queue behind the server's tasks on its runtime.
    let normal = {
        let (answer, answered) = oneshot::channel();
        let path = path.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let _ = answer.send(runtime.block_on(normal_requests(&path)));
        });
        answered.await.unwrap()
    };
    // An ongoing flood drops its oldest sockets while the server works through the backlog:
    // the connections held come and go, and a ratio means nothing.
    let per_conn = if held > 0 && !scenario.ongoing {
        format!(
            "{:.1} KiB",
            rss_after.saturating_sub(rss_before) as f64 / held as f64
        )
    } else {
        "-".to_owned()
    };
    let connected = match flood.stop() {
        Some(total) => format!("{connected}+{}", total - connected),
        None => connected.to_string(),
    };
    println!(
        "ROW\t{:<20} {:>9} {:>12} {:>11} {:>10} {:>10} {:>13}  {normal}",
        scenario.name,
        CONNECTIONS,
        connected,
        format!("{held} ({most})"),
        mib(rss_before),
        mib(rss_after),
        per_conn,
    );

    token.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(15), server).await;
}

/// [`NORMAL_REQUESTS`] requests one after the other, stopping at the first that is not answered
/// with 200; a summary for the table.
async fn normal_requests(path: &Path) -> String {
    let mut took = Vec::new();
    let mut full_backlog = 0;
    for i in 1..=NORMAL_REQUESTS {
        let asked = Instant::now();
        let failure = match tokio::time::timeout(NORMAL_DEADLINE, get_status(path)).await {
            Ok(Ok((200, retries))) => {
                took.push(asked.elapsed());
                full_backlog += retries;
                continue;
            }
            Ok(Ok((code, _))) => format!("{code} after {}", millis(asked.elapsed())),
            Ok(Err(err)) => format!("failed after {}: {err}", millis(asked.elapsed())),
            Err(_) => format!("no answer within {} s", NORMAL_DEADLINE.as_secs()),
        };
        let before = took
            .first()
            .map(|first| format!(" (first 200 after {})", millis(*first)))
            .unwrap_or_default();
        return format!("request {i}: {failure}{before}");
    }
    let max = took.iter().max().copied().unwrap_or_default();
    let retried = if full_backlog > 0 {
        format!(" ({full_backlog} connects retried: backlog full)")
    } else {
        String::new()
    };
    format!(
        "{}x 200, first after {}, slowest {}{retried}",
        took.len(),
        millis(took[0]),
        millis(max)
    )
}

/// The flooding client: a thread that opens [`CONNECTIONS`] idle connections, reports how many
/// the kernel took (a full backlog refuses the rest with `EAGAIN`), then holds them, or, when
/// the scenario is ongoing, keeps connecting until stopped.
struct Flood {
    stop: Arc<AtomicBool>,
    ongoing: bool,
    thread: std::thread::JoinHandle<usize>,
}

impl Flood {
    /// Starts the flood; the receiver yields the number of initial connections once made.
    fn start(path: &Path, scenario: Scenario) -> (Self, oneshot::Receiver<usize>) {
        let (started_tx, started) = oneshot::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let addr = SockAddr::unix(path).unwrap();
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || flood(&addr, scenario, started_tx, &stop))
        };
        let flood = Self {
            stop,
            ongoing: scenario.ongoing,
            thread,
        };
        (flood, started)
    }

    /// Stops the flood and closes its connections; how many connections the kernel took in
    /// total, for an ongoing flood.
    fn stop(self) -> Option<usize> {
        self.stop.store(true, Ordering::Relaxed);
        let total = self.thread.join().unwrap();
        self.ongoing.then_some(total)
    }
}

/// The flood thread's body; see [`Flood`]. Returns the connections the kernel took.
fn flood(
    addr: &SockAddr,
    scenario: Scenario,
    started: oneshot::Sender<usize>,
    stop: &AtomicBool,
) -> usize {
    let uids: Vec<Option<u32>> = match (is_root(), scenario.flooder) {
        (false, _) | (true, Flooder::SameUid) => vec![None],
        (true, Flooder::OtherUid) => vec![Some(NOBODY)],
        (true, Flooder::Uids(n)) => (0..n).map(|i| Some(FLOOD_UID_BASE + i)).collect(),
    };
    let connect = |uid: Option<u32>| {
        if let Some(uid) = uid {
            set_thread_euid(uid);
        }
        let socket = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
        socket.set_nonblocking(true).unwrap();
        let connected = socket.connect(addr);
        if uid.is_some() {
            set_thread_euid(0);
        }
        connected.ok()?;
        if scenario.partial_head {
            // Small enough for the socket buffer: never blocks, never partial.
            let _ = socket.send(PARTIAL_HEAD);
        }
        Some(socket)
    };
    // uid by uid, a share each, like separate scripts started one after the other.
    let per_uid = CONNECTIONS.div_ceil(uids.len());
    let mut sockets = std::collections::VecDeque::with_capacity(CONNECTIONS);
    for &uid in &uids {
        let n = per_uid.min(CONNECTIONS - sockets.len());
        sockets.extend((0..n).filter_map(|_| connect(uid)));
    }
    let mut total = sockets.len();
    started.send(total).unwrap();
    if !scenario.ongoing {
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(10));
        }
        return total;
    }
    for &uid in uids.iter().cycle() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        match connect(uid) {
            Some(socket) => {
                total += 1;
                sockets.push_back(socket);
                if sockets.len() > CONNECTIONS {
                    sockets.pop_front();
                }
            }
            // Backlog full: let the server catch up.
            None => std::thread::yield_now(),
        }
    }
    total
}

/// Sets the effective uid of the calling thread only (raw syscall, not libc's process-wide
/// wrapper); real and saved uid stay root, so the thread can switch back. `SO_PEERCRED` records
/// the effective uid at `connect(2)`.
fn set_thread_euid(uid: u32) {
    // SAFETY: changes the credentials of this thread only; -1 leaves real and saved uid as is.
    let rc = unsafe { libc::syscall(libc::SYS_setresuid, -1, uid, -1) };
    assert_eq!(rc, 0, "setresuid: {}", std::io::Error::last_os_error());
}

/// One normal request on a connection of its own; its status code, and how often connecting was
/// retried because the backlog was full.
///
/// The kernel refuses a non-blocking `connect(2)` on a full backlog (`EAGAIN`, where a blocking
/// one would sleep until the server accepts); an ongoing flood keeps the backlog full whatever
/// the server does, so the client waits a millisecond and tries again.
async fn get_status(path: &Path) -> Result<(u16, usize), Box<dyn std::error::Error + Send + Sync>> {
    let mut retries = 0;
    let stream = loop {
        match tokio::net::UnixStream::connect(path).await {
            Ok(stream) => break stream,
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                retries += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(err) => return Err(err.into()),
        }
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(conn);
    let request = hyper::Request::get("/v1/status")
        .header(hyper::header::HOST, "localhost")
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let code = response.status().as_u16();
    response.into_body().collect().await?;
    driver.abort();
    Ok((code, retries))
}

/// Accepted connections the server side holds on `socket`: sockets bound to its path in state
/// connected (`03`); those still waiting in the backlog show `02`, client sockets no path.
fn server_connections(socket: &Path) -> usize {
    let table = std::fs::read_to_string("/proc/net/unix").unwrap();
    let socket = socket.to_str().unwrap();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(5) == Some(&"03") && fields.get(7) == Some(&socket)
        })
        .count()
}

/// Resident set size of this process, KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn mib(kib: u64) -> String {
    format!("{:.1} MB", kib as f64 / 1024.0)
}

fn millis(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{:.1} ms", d.as_secs_f64() * 1000.0)
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Client and server ends of every connection are in this process: 2 × 3000 fds.
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn status() -> Status {
    Status {
        schema_version: SCHEMA_VERSION,
        version: "0.1.0".into(),
        interface: "wgbench0".into(),
        public_key: "pk".into(),
        mesh_ip: "10.9.8.7".into(),
        mesh_ipv6: "fd00::7".into(),
        mesh_subnet: "10.9.0.0/16".into(),
        network_id: "0123456789abcdef".into(),
        listen_port: 51820,
        wg_backend: "userspace".into(),
        wg_backend_reason: "bench".into(),
        uptime_seconds: 1,
        peers: PeerCounts::default(),
        ..Status::default()
    }
}
