//! Idle connections against the control API: how many the server holds, what they cost in memory,
//! and whether a normal client is still answered.
//!
//! `cargo bench -p wgmeshd --bench api_idle`. Each scenario runs in a child process of its own,
//! so its RSS starts fresh: the real API (`bind` + `serve`, production limits, fake snapshots) on
//! a temp socket, 3000 client connections that never send a byte (or only the start of a request
//! head, slowloris), one second to settle, then one normal `GET /v1/status`. Run as root, the idle
//! connections come from other uids than the normal client (thread-local `setresuid`), as in a
//! real attack by a local user; the "100 uids" scenarios need root. RSS is the whole process: the
//! client side's sockets are in it too, but they are plain fds (kernel memory), a few KiB of user
//! space in total.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use socket2::{Domain, SockAddr, Socket, Type};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use wgmesh_api_types::{PeerCounts, PeerList, SCHEMA_VERSION, Status};
use wgmeshd::api::{ApiState, bind, serve};

/// Idle connections opened per scenario (the figure of the hostile test in issue 7).
const CONNECTIONS: usize = 3000;
/// Time the server gets to accept what it will accept before the measurement; shorter than the
/// header-read timeout (5 s), so nothing has been timed out yet.
const SETTLE: Duration = Duration::from_secs(1);
/// Longest the normal request may wait.
const NORMAL_DEADLINE: Duration = Duration::from_secs(120);
/// uid of the flood in the one-uid scenario when running as root.
const NOBODY: u32 = 65534;
/// First uid of the flood in the many-uids scenario.
const FLOOD_UID_BASE: u32 = 60_000;
const SCENARIO_ENV: &str = "API_IDLE_SCENARIO";

/// What each idle connection sends: nothing, or the start of a request head it never finishes.
const PARTIAL_HEAD: &[u8] = b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\n";

#[derive(Clone, Copy)]
struct Scenario {
    name: &'static str,
    /// Distinct uids the idle connections come from (needs root when above 1).
    uids: u32,
    /// Each connection sends [`PARTIAL_HEAD`] (slowloris) instead of nothing.
    partial_head: bool,
}

const SCENARIOS: [Scenario; 4] = [
    Scenario {
        name: "1 uid, silent",
        uids: 1,
        partial_head: false,
    },
    Scenario {
        name: "1 uid, partial head",
        uids: 1,
        partial_head: true,
    },
    Scenario {
        name: "100 uids, silent",
        uids: 100,
        partial_head: false,
    },
    Scenario {
        name: "100 uids, partial head",
        uids: 100,
        partial_head: true,
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
        "api_idle: {CONNECTIONS} idle connections against the control API ({})",
        if root {
            "as root: idle connections from other uids"
        } else {
            "not root: idle connections from our own uid"
        }
    );
    println!(
        "{:<22} {:>9} {:>9} {:>11} {:>10} {:>10} {:>13}  normal GET /v1/status",
        "scenario",
        "attempted",
        "connected",
        "server held",
        "RSS before",
        "RSS after",
        "per held conn"
    );
    for scenario in SCENARIOS {
        if scenario.uids > 1 && !root {
            println!("{:<22} skipped: needs root", scenario.name);
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
                "{:<22} failed: {}",
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
    let state = ApiState {
        status: status_rx,
        peers: peers_rx,
    };
    let token = CancellationToken::new();

    // The only lines that differ against the old listener (`serve(&path, state, token)`).
    let listener = bind(&path).await.unwrap();
    let server = tokio::spawn(serve(listener, state, token.clone()));

    // Other uids must reach the socket; its mode is not what this measures.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = rss_kib();

    let flood_path = path.clone();
    let flood = tokio::task::spawn_blocking(move || flood(&flood_path, scenario))
        .await
        .unwrap();
    let connected = flood.len();
    let mut held = 0;
    let settle_until = Instant::now() + SETTLE;
    while Instant::now() < settle_until {
        held = held.max(server_connections(&path));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rss_after = rss_kib();

    let asked = Instant::now();
    let normal = match tokio::time::timeout(NORMAL_DEADLINE, get_status(&path)).await {
        Ok(Ok(code)) => format!("{code} after {}", millis(asked.elapsed())),
        Ok(Err(err)) => format!("failed after {}: {err}", millis(asked.elapsed())),
        Err(_) => format!("no answer within {} s", NORMAL_DEADLINE.as_secs()),
    };
    let per_conn = if held > 0 {
        format!(
            "{:.1} KiB",
            rss_after.saturating_sub(rss_before) as f64 / held as f64
        )
    } else {
        "-".to_owned()
    };
    println!(
        "ROW\t{:<22} {:>9} {:>9} {:>11} {:>10} {:>10} {:>13}  {normal}",
        scenario.name,
        CONNECTIONS,
        connected,
        held,
        mib(rss_before),
        mib(rss_after),
        per_conn,
    );

    drop(flood);
    token.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(15), server).await;
}

/// Opens [`CONNECTIONS`] idle connections to `path`, spread over the scenario's uids when root;
/// returns those the kernel took (a full backlog refuses the rest with `EAGAIN`).
fn flood(path: &Path, scenario: Scenario) -> Vec<Socket> {
    let uids = scenario.uids;
    let addr = SockAddr::unix(path).unwrap();
    let per_uid = CONNECTIONS.div_ceil(uids as usize);
    let mut sockets = Vec::with_capacity(CONNECTIONS);
    for i in 0..uids {
        let uid = match (is_root(), uids) {
            (false, _) => None,
            (true, 1) => Some(NOBODY),
            (true, _) => Some(FLOOD_UID_BASE + i),
        };
        let n = per_uid.min(CONNECTIONS - sockets.len());
        let addr = addr.clone();
        let batch = std::thread::spawn(move || {
            if let Some(uid) = uid {
                // SAFETY: changes the credentials of this thread only (raw syscall, not libc's
                // process-wide wrapper); the thread exits right after.
                let rc = unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) };
                assert_eq!(rc, 0, "setresuid: {}", std::io::Error::last_os_error());
            }
            (0..n)
                .filter_map(|_| {
                    let socket = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
                    socket.set_nonblocking(true).unwrap();
                    socket.connect(&addr).ok()?;
                    if scenario.partial_head {
                        // Small enough for the socket buffer: never blocks, never partial.
                        let _ = socket.send(PARTIAL_HEAD);
                    }
                    Some(socket)
                })
                .collect::<Vec<_>>()
        })
        .join()
        .unwrap();
        sockets.extend(batch);
    }
    sockets
}

/// One normal request; its status code.
async fn get_status(path: &Path) -> Result<u16, Box<dyn std::error::Error + Send + Sync>> {
    let stream = tokio::net::UnixStream::connect(path).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(conn);
    let request = hyper::Request::get("/v1/status")
        .header(hyper::header::HOST, "localhost")
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let code = response.status().as_u16();
    response.into_body().collect().await?;
    driver.abort();
    Ok(code)
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
