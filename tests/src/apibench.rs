//! `wgmesh-lab bench-api`: what the control API costs a daemon with a full peer store.
//!
//! A real `wgmeshd join` (userspace WireGuard, `--log-level info`) runs in lab host `d`; a second
//! host `g` announces N synthetic nodes to it as sealed LAN ANNOUNCEs (unicast to its LAN port,
//! `wgmesh-labnode announce-many`), so the store, the device and the API all hold N peers exactly
//! as if they had been discovered. Then, in this order:
//!
//! 1. **idle**: after a settle time, the daemon's CPU time over an idle window (no API request,
//!    no announcement), from the scheduler's runtime of each of its threads
//!    (`/proc/<pid>/task/*/schedstat`), as a share of one core. The
//!    embedded WireGuard engine runs on the same threads and is not idle with 1000 synthetic
//!    peers: nobody answers their handshakes, so it initiates one with each of them every few
//!    seconds. So the same measurement is taken of a bare engine (`wgmesh-labnode serve` in host
//!    `b`, no daemon) given the same peers at the same time, kicked and configured as the daemon
//!    does it, measured over the same window; the difference is the daemon's own cost. The
//!    daemon's reconcile passes in the window (count, mean duration, from its `/metrics`) show
//!    what most of that is: a full device read every 5 s;
//! 2. **first read after idle**: one `GET /v1/peers`, the case where nothing was read for a while;
//! 3. **latency**: `GET /v1/peers` and `GET /v1/status`, each on a connection of its own (as
//!    `wgmeshctl` does), one after the other, p50/p99/max of connect-to-last-byte;
//! 4. **freshness**: one synthetic node announces a new hostname (shown from the store), then a
//!    new WireGuard port (shown from the device, so after the reconcile pass that applies it);
//!    the time from the announcing process's exit until `GET /v1/peers` shows it (polled every
//!    2 ms), median of a few rounds.
//!
//! The client is a minimal HTTP/1.1 `GET` over a blocking `UnixStream` that only reads the
//! response to its end: it measures the daemon, not a client's JSON parsing (a 1000-peer body
//! takes a JSON parser longer than the daemon takes to send it). Nothing here is asserted: the
//! numbers are printed for the README and the targets.

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};

use crate::Exe;
use crate::daemon::{self, Daemon};
use crate::lab::{Host, Lab};

/// First lab key number of the synthetic nodes (clear of the keys other lab tools use).
const FIRST_KEY: u16 = 20_000;
/// WireGuard port of synthetic node 0 (node `i` has `BASE_PORT + i`).
const BASE_PORT: u16 = 30_000;
/// Rounds of the freshness measurement.
const FRESHNESS_ROUNDS: usize = 5;
/// The mesh PSK of the bare engine's peers (any key; the daemon's is derived from its secret).
const BASELINE_PSK: &str = "LUOvekj3HqR1sGXDZQL0CcXHiik8aFRf3SmMlswA7FY=";
/// The daemon's persistent keepalive (Go's 25 s), given to the bare engine's peers too.
const KEEPALIVE: u16 = 25;

/// What to measure.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Synthetic peers in the daemon's store (its cap is 1000).
    pub peers: u16,
    /// Requests per latency row.
    pub requests: usize,
    /// Length of the idle window.
    pub idle: Duration,
    /// Time between the last peer appearing and the idle window (reconcile passes, handshake
    /// kicks and the first handshake retries of the new peers happen here).
    pub settle: Duration,
}

/// Latency figures of one route, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest.
    pub max: f64,
    /// Response size in bytes (the last response).
    pub bytes: usize,
}

/// Everything one run measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// Peers the daemon listed.
    pub peers: usize,
    /// Daemon CPU over the idle window, percent of one core.
    pub idle_cpu_percent: f64,
    /// The bare WireGuard engine with the same peers over the same window, percent of one core.
    pub engine_cpu_percent: f64,
    /// Reconcile passes in the window and their total duration in seconds, from the daemon's
    /// metrics (`None` when it serves none).
    pub reconcile: Option<(f64, f64)>,
    /// `GET /v1/peers` right after the idle window, in ms.
    pub first_read_ms: f64,
    /// `GET /v1/peers`.
    pub peers_latency: Latency,
    /// `GET /v1/status`.
    pub status_latency: Latency,
    /// A peer's new hostname announced → `GET /v1/peers` shows it, median ms.
    pub renamed_ms: f64,
    /// A peer's new endpoint announced → `GET /v1/peers` shows it (after the reconcile pass that
    /// puts it on the device), median ms.
    pub moved_ms: f64,
}

/// Runs the whole measurement in a fresh lab.
///
/// # Errors
///
/// Lab, daemon or API failures, and a daemon that does not list every synthetic peer.
pub fn run(exe: &Exe, opts: Options) -> anyhow::Result<Report> {
    let lab = Lab::one_lan("benchapi", &["d", "g", "b"])?;
    let (d, g) = (lab.host("d"), lab.host("g"));
    let secret = lab.dir().join("mesh.secret");
    daemon::write_secret(exe, &secret)?;

    let mut engine = crate::node::LabNode::start(exe, lab.host("b"))?;
    engine.up(51820, &["10.77.0.1/16"])?;
    let daemon = Daemon::start(exe, d, &secret, &["--log-level", "info"])?;
    let status = daemon.wait_api(Duration::from_secs(20))?;
    let lan_port = {
        let s = wgmeshd::config::resolve_secret(None, Some(&secret), |_| None)?;
        wgmeshd::crypto::DerivedKeys::derive(&s)
            .lan_multicast()
            .port()
    };
    let dest = format!("{}:{lan_port}", d.ip());
    let socket = d.socket_path();

    eprintln!("announcing {} synthetic peers…", opts.peers);
    let want = usize::from(opts.peers);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // Idempotent: a datagram lost in a full buffer is simply sent again in the next round.
        let all = Announce {
            count: opts.peers,
            port: BASE_PORT,
            hostname: "wgmesh-labnode",
        };
        announce(exe, g, &secret, &status.mesh_subnet, &all, &dest)?;
        std::thread::sleep(Duration::from_millis(500));
        let st = daemon.status()?;
        if st.peers.total >= want && st.peers.active >= want {
            break;
        }
        if Instant::now() >= deadline {
            bail!(
                "the daemon knows {} of {want} synthetic peers after 60 s",
                st.peers.total
            );
        }
    }
    let listed = daemon.peers()?.peers.len();
    eprintln!(
        "{listed} peers listed; the bare engine gets them too; settling for {:?}…",
        opts.settle
    );
    add_engine_peers(&mut engine, g, opts.peers)?;
    std::thread::sleep(opts.settle);

    eprintln!("idle for {:?}…", opts.idle);
    let (pid, engine_pid) = (daemon.process().pid(), engine.process().pid());
    let metrics_before = get(&socket, "/metrics").ok();
    let (before, engine_before) = (cpu_by_thread(pid)?, cpu_by_thread(engine_pid)?);
    let started = Instant::now();
    std::thread::sleep(opts.idle);
    let (after, engine_after) = (cpu_by_thread(pid)?, cpu_by_thread(engine_pid)?);
    let wall = started.elapsed().as_secs_f64();
    let idle_cpu_percent = idle_share(&before, &after, wall);
    let engine_cpu_percent = idle_share(&engine_before, &engine_after, wall);
    drop(engine);

    let first = Instant::now();
    get(&socket, "/v1/peers")?;
    let first_read_ms = ms(first.elapsed());
    // The reconcile passes of the window, from the daemon's own metrics (absent before them).
    let reconcile = metrics_before.and_then(|before| {
        let after = get(&socket, "/metrics").ok()?;
        reconcile_delta(&before, &after)
    });

    eprintln!("{} requests per route…", opts.requests);
    let peers_latency = latency(&socket, "/v1/peers", opts.requests)?;
    let status_latency = latency(&socket, "/v1/status", opts.requests)?;

    eprintln!("freshness…");
    let mut renamed = Vec::new();
    let mut moved = Vec::new();
    for round in 1..=FRESHNESS_ROUNDS {
        // A new hostname for node 0: the store's news alone.
        let hostname = format!("renamed-{round}");
        let needle = format!("\"{hostname}\"");
        let ann = Announce::node0(BASE_PORT, &hostname);
        renamed.push(until_listed(
            exe,
            g,
            &secret,
            &status.mesh_subnet,
            &dest,
            &socket,
            &ann,
            &needle,
        )?);
        // Node 0 moves to a port no other node uses: the endpoint shown is the device's, so
        // this goes through a reconcile pass.
        let port = BASE_PORT - u16::try_from(round).unwrap_or(1);
        let needle = format!("\"{}:{port}\"", g.ip());
        let ann = Announce::node0(port, &hostname);
        moved.push(until_listed(
            exe,
            g,
            &secret,
            &status.mesh_subnet,
            &dest,
            &socket,
            &ann,
            &needle,
        )?);
    }
    Ok(Report {
        peers: listed,
        idle_cpu_percent,
        engine_cpu_percent,
        reconcile,
        first_read_ms,
        peers_latency,
        status_latency,
        renamed_ms: median(renamed),
        moved_ms: median(moved),
    })
}

/// Gives the bare engine `node` the `count` synthetic peers as the daemon configures them
/// (endpoints on `peer_host` at [`BASE_PORT`] + i, a PSK, the keepalive, a /32 each) and kicks
/// their handshakes, as the daemon does with peers it adds.
fn add_engine_peers(
    node: &mut crate::node::LabNode,
    peer_host: &Host,
    count: u16,
) -> anyhow::Result<()> {
    let keys: Vec<String> = (0..count)
        .map(|i| crate::node::keypair(FIRST_KEY + i).1)
        .collect();
    let peers: Vec<serde_json::Value> = keys
        .iter()
        .zip(0u16..)
        .map(|(key, i)| {
            serde_json::json!({
                "public_key": key,
                "endpoint": format!("{}:{}", peer_host.ip(), BASE_PORT + i),
                "preshared_key": BASELINE_PSK,
                "keepalive": KEEPALIVE,
                "allowed_ips": [format!("10.78.{}.{}/32", i / 250, i % 250 + 1)],
            })
        })
        .collect();
    node.apply(serde_json::json!({"private_key": crate::node::keypair(1).0, "add": peers}))?;
    std::thread::sleep(Duration::from_millis(300));
    node.call(serde_json::json!({"cmd": "kick", "peers": keys}))?;
    Ok(())
}

/// Reconcile passes between two scrapes of `/metrics`: (passes, their total duration in s).
/// Reads the two unlabelled samples directly (a daemon without `/metrics` has none).
fn reconcile_delta(before: &str, after: &str) -> Option<(f64, f64)> {
    let value = |text: &str, name: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    };
    let delta = |name: &str| Some(value(after, name)? - value(before, name)?);
    Some((
        delta("wgmesh_reconcile_duration_seconds_count")?,
        delta("wgmesh_reconcile_duration_seconds_sum")?,
    ))
}

/// What synthetic nodes announce.
struct Announce<'a> {
    count: u16,
    port: u16,
    hostname: &'a str,
}

impl<'a> Announce<'a> {
    /// Node 0 alone, with WireGuard port `port` and `hostname`.
    fn node0(port: u16, hostname: &'a str) -> Self {
        Self {
            count: 1,
            port,
            hostname,
        }
    }
}

/// Synthetic nodes `0..count` announce themselves from `host`, node `i` with WireGuard port
/// `port + i`.
fn announce(
    exe: &Exe,
    host: &Host,
    secret: &Path,
    subnet: &str,
    ann: &Announce<'_>,
    dest: &str,
) -> anyhow::Result<()> {
    exe.in_host(host, "announce-many")
        .arg(secret)
        .args([
            FIRST_KEY.to_string(),
            ann.count.to_string(),
            subnet.to_owned(),
            ann.port.to_string(),
            dest.to_owned(),
            ann.hostname.to_owned(),
        ])
        .output_ok()
        .map(drop)
        .context("wgmesh-labnode announce-many")
}

/// Sends `ann`, then polls `GET /v1/peers` every 2 ms until the body contains `needle`; the ms
/// from the announcing process's exit (it sent the datagram just before) until then.
#[allow(clippy::too_many_arguments)]
fn until_listed(
    exe: &Exe,
    host: &Host,
    secret: &Path,
    subnet: &str,
    dest: &str,
    socket: &Path,
    ann: &Announce<'_>,
    needle: &str,
) -> anyhow::Result<f64> {
    announce(exe, host, secret, subnet, ann, dest)?;
    let sent = Instant::now();
    let deadline = sent + Duration::from_secs(5);
    loop {
        if get(socket, "/v1/peers")?.contains(needle) {
            let took = ms(sent.elapsed());
            // Let the daemon settle before the next round.
            std::thread::sleep(Duration::from_millis(300));
            return Ok(took);
        }
        ensure!(
            Instant::now() < deadline,
            "{needle} did not show in GET /v1/peers within 5 s"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `GET path` on the socket, on a connection of its own; the body.
fn get(socket: &Path, path: &str) -> anyhow::Result<String> {
    let mut stream =
        UnixStream::connect(socket).with_context(|| format!("connect to {}", socket.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: wgmeshd\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8(response).context("response is not UTF-8")?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("response without a head")?;
    ensure!(
        head.starts_with("HTTP/1.1 200"),
        "GET {path}: {}",
        head.lines().next().unwrap_or_default()
    );
    Ok(body.to_owned())
}

fn latency(socket: &Path, path: &str, requests: usize) -> anyhow::Result<Latency> {
    let mut times = Vec::with_capacity(requests);
    let mut bytes = 0;
    for _ in 0..requests.max(1) {
        let t = Instant::now();
        bytes = get(socket, path)?.len();
        times.push(ms(t.elapsed()));
    }
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    Ok(Latency {
        p50: at(0.50),
        p99: at(0.99),
        max: times[times.len() - 1],
        bytes,
    })
}

/// CPU time in ns of every thread of `pid`, by thread id. From the scheduler's exact runtime
/// (`/proc/<pid>/task/<tid>/schedstat`, first field): `utime + stime` in `stat` are sampled at
/// the clock tick, which at a load of 2 % of a core is off by several tenths of a percent over a
/// minute. `stat` only where `schedstat` is missing.
fn cpu_by_thread(pid: u32) -> anyhow::Result<Vec<(u64, u64)>> {
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let entry = entry?;
        let Ok(tid) = entry.file_name().to_string_lossy().parse::<u64>() else {
            continue;
        };
        // A thread may end between the listing and the read.
        let ns = match std::fs::read_to_string(entry.path().join("schedstat")) {
            Ok(text) => text.split_whitespace().next().and_then(|v| v.parse().ok()),
            Err(_) => None,
        };
        let ns = match ns {
            Some(ns) => ns,
            None => match std::fs::read_to_string(entry.path().join("stat")) {
                Ok(stat) => stat_ticks(&stat)? * 1_000_000_000 / hz,
                Err(_) => continue,
            },
        };
        out.push((tid, ns));
    }
    Ok(out)
}

/// `utime + stime` from a `stat` line; `comm` is in parentheses and may hold spaces.
fn stat_ticks(stat: &str) -> anyhow::Result<u64> {
    let close = stat.rfind(')').context("stat without comm")?;
    // After the comm: field 3 (state) is index 0, so utime (14) and stime (15) are 11 and 12.
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let tick = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .context("short stat line")?
            .parse()
            .context("stat field")
    };
    Ok(tick(11)? + tick(12)?)
}

/// CPU between two samples of the same process over `wall` seconds, percent of one core.
/// Threads that ended in between are not counted (the daemon's threads live as long as it).
fn idle_share(before: &[(u64, u64)], after: &[(u64, u64)], wall: f64) -> f64 {
    let ns: u64 = after
        .iter()
        .map(|(tid, ns)| {
            let was = before
                .iter()
                .find(|(t, _)| t == tid)
                .map_or(0, |(_, ns)| *ns);
            ns.saturating_sub(was)
        })
        .sum();
    ns as f64 / 1e9 / wall * 100.0
}

/// Prints `report` as the table the README quotes.
pub fn print(report: &Report, opts: &Options) {
    println!(
        "wgmesh API bench: {} peers in the store, {} requests per route (one connection each), idle window {} s",
        report.peers,
        opts.requests,
        opts.idle.as_secs()
    );
    println!("{:<52} {:>10}", "metric", "value");
    let row = |name: &str, v: String| println!("{name:<52} {v:>10}");
    row(
        "idle daemon CPU (% of one core)",
        format!("{:.2}", report.idle_cpu_percent),
    );
    row(
        "  of which the WireGuard engine alone, same peers",
        format!("{:.2}", report.engine_cpu_percent),
    );
    row(
        "  the daemon's own share (difference)",
        format!("{:.2}", report.idle_cpu_percent - report.engine_cpu_percent),
    );
    if let Some((passes, secs)) = report.reconcile {
        let window = opts.idle.as_secs_f64();
        row("  reconcile passes in the window", format!("{passes:.0}"));
        row(
            "  reconcile pass, mean duration (ms)",
            format!("{:.2}", secs * 1000.0 / passes.max(1.0)),
        );
        row(
            "  reconcile passes, wall time (% of the window)",
            format!("{:.2}", secs / window * 100.0),
        );
    }
    row(
        "first GET /v1/peers after idle (ms)",
        format!("{:.2}", report.first_read_ms),
    );
    for (route, l) in [
        ("GET /v1/peers", report.peers_latency),
        ("GET /v1/status", report.status_latency),
    ] {
        row(&format!("{route} p50 (ms)"), format!("{:.2}", l.p50));
        row(&format!("{route} p99 (ms)"), format!("{:.2}", l.p99));
        row(&format!("{route} max (ms)"), format!("{:.2}", l.max));
        row(&format!("{route} body (bytes)"), l.bytes.to_string());
    }
    row(
        "new hostname announced -> in GET /v1/peers (ms, median)",
        format!("{:.1}", report.renamed_ms),
    );
    row(
        "new endpoint announced -> in GET /v1/peers (ms, median)",
        format!("{:.1}", report.moved_ms),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_spaces_in_the_name_parse() {
        let line = "4242 (tokio-runtime w) S 1 2 3 4 5 6 7 8 9 10 17 5 0 0 20 0 3 0 100";
        assert_eq!(stat_ticks(line).unwrap(), 22);
    }
}
