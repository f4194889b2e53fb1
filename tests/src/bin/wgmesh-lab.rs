//! `wgmesh-lab`: the network lab from the command line.
//!
//! `wgmesh-lab demo [--nodes N]` starts N hosts on one simulated LAN, each running a real
//! `wgmeshd join` with the same fresh secret, waits until they form a full WireGuard mesh on their
//! own, prints every node's `wgmeshctl status`, pings every node from every other over the mesh,
//! and keeps the mesh up until Ctrl-C, then removes everything. `wgmesh-lab demo down` cleans up
//! after a demo that was killed.
//!
//! `wgmesh-lab bench [--runs N]` measures the data plane in fresh lab hosts and prints a table
//! (run it as root, in release mode: `cargo run --release -p wgmesh-tests --bin wgmesh-lab -- bench`):
//! userspace device creation, applying and reading back 1000 peers in one call, and TCP
//! throughput through a tunnel between two hosts, next to the same path without the tunnel.
//!
//! `wgmesh-lab bench-api [--peers N] [--requests N] [--idle-secs N]` measures what the control
//! API costs a daemon holding N synthetic peers (default 1000): its idle CPU, `GET /v1/peers` and
//! `GET /v1/status` latency, and how soon a change shows ([`wgmesh_tests::apibench`]).
//!
//! `wgmesh-lab` is also the multi-call program of the lab ([`wgmesh_tests::labnode`]): the hosts
//! run this very executable with a hidden subcommand (`wgmeshd …`, `wgmeshctl …`, `serve`,
//! `tcp-check …`), so `cargo run --bin wgmesh-lab`, which builds only this binary, always runs the
//! daemon and the CLI of the same build.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use wgmesh_tests::Exe;
use wgmesh_tests::daemon::{self, Daemon};
use wgmesh_tests::lab::{Host, Lab};
use wgmesh_tests::node::{LabNode, keypair};

fn main() -> ExitCode {
    let hidden = std::env::args_os().nth(1).is_some_and(|c| {
        c.to_str()
            .is_some_and(|c| wgmesh_tests::labnode::COMMANDS.contains(&c))
    });
    if hidden {
        return wgmesh_tests::labnode::main_from(std::env::args_os());
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") if args.get(1).map(String::as_str) == Some("down") => demo_down(),
        Some("demo") => number_flag(&args, "--nodes", 3).and_then(demo),
        Some("bench") => number_flag(&args, "--runs", 5).and_then(bench),
        Some("bench-api") => bench_api(&args),
        _ => {
            eprintln!(
                "usage (as root):\n  wgmesh-lab demo [--nodes N]   start a mesh of N nodes (default 3) until Ctrl-C\n  wgmesh-lab demo down          remove what a killed demo left behind\n  wgmesh-lab bench [--runs N]   measure the data plane\n  wgmesh-lab bench-api [--peers N] [--requests N] [--idle-secs N]\n                                measure the control API with N peers (default 1000)"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wgmesh-lab: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The number after `flag` in `args`, or `default` when the flag is absent.
fn number_flag(args: &[String], flag: &str, default: usize) -> anyhow::Result<usize> {
    match args.iter().position(|a| a == flag) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{flag} takes a number")),
    }
}

const MIB: usize = 64;

struct Sample {
    create_ms: f64,
    apply_1000_ms: f64,
    read_1000_ms: f64,
    tunnel_mbit: f64,
    plain_mbit: f64,
}

fn tcp_mbit(exe: &Exe, from: &Host, to_addr: &str) -> anyhow::Result<f64> {
    let out = exe
        .in_host(from, "tcp-check")
        .args([
            &format!("{to_addr}:7000"),
            &(MIB << 20).to_string(),
            "60000",
        ])
        .output_timeout(Duration::from_secs(90))?;
    if !out.status.success() {
        bail!("tcp-check failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: Value = serde_json::from_slice(&out.stdout)?;
    v["mbit_per_s"].as_f64().context("no rate")
}

fn one_run(exe: &Exe) -> anyhow::Result<Sample> {
    let lab = Lab::one_lan("bench", &["a", "b", "c"])?;
    let (a, b, c) = (lab.host("a"), lab.host("b"), lab.host("c"));
    let mut na = LabNode::start(exe, a)?;
    let create_ms = na.up(51820, &["10.77.0.1/16"])?["create_ms"]
        .as_f64()
        .context("create_ms")?;
    let own = a.ip();
    let peers: Vec<Value> = (0..1000u16)
        .map(|i| {
            json!({
                "public_key": keypair(1000 + i).1,
                "endpoint": format!("{own}:{}", 20000 + i),
                "preshared_key": "LUOvekj3HqR1sGXDZQL0CcXHiik8aFRf3SmMlswA7FY=",
                "keepalive": 25,
                "allowed_ips": [format!("10.78.{}.{}/32", i / 250, i % 250 + 1), format!("fd00:78::{:x}/128", i + 1)],
            })
        })
        .collect();
    let apply_1000_ms = na.apply(json!({"private_key": keypair(1).0, "add": peers}))?["ms"]
        .as_f64()
        .context("ms")?;
    let read_1000_ms = na.call(json!({"cmd": "read"}))?["ms"]
        .as_f64()
        .context("ms")?;

    let (mut nb, mut nc) = (LabNode::start(exe, b)?, LabNode::start(exe, c)?);
    nb.up(51820, &["10.77.0.2/16"])?;
    nc.up(51820, &["10.77.0.3/16"])?;
    let (kb, kc) = (keypair(2), keypair(3));
    nb.apply(json!({"private_key": kb.0, "add": [{"public_key": kc.1, "endpoint": format!("{}:51820", c.ip()), "keepalive": 25, "allowed_ips": ["10.77.0.3/32"]}]}))?;
    nc.apply(json!({"private_key": kc.0, "add": [{"public_key": kb.1, "endpoint": format!("{}:51820", b.ip()), "keepalive": 25, "allowed_ips": ["10.77.0.2/32"]}]}))?;
    for addr in ["10.77.0.3:7000".to_owned(), format!("{}:7000", c.ip())] {
        let p = exe.in_host(c, "tcp-echo").arg(&addr).spawn()?;
        if !wgmesh_tests::lab::wait_until(Duration::from_secs(5), || {
            p.stdout().contains("listening")
        }) {
            bail!("echo server did not start: {}", p.logs());
        }
    }
    if !b.wait_reachable("10.77.0.3".parse()?, Duration::from_secs(10))? {
        bail!("tunnel b -> c does not come up");
    }
    let tunnel_mbit = tcp_mbit(exe, b, "10.77.0.3")?;
    let plain_mbit = tcp_mbit(exe, b, &c.ip().to_string())?;
    Ok(Sample {
        create_ms,
        apply_1000_ms,
        read_1000_ms,
        tunnel_mbit,
        plain_mbit,
    })
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn bench(runs: usize) -> anyhow::Result<()> {
    if !wgmesh_tests::lab::require_root() {
        bail!("the lab needs root");
    }
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    let exe = Exe::current()?;
    let mut samples = Vec::new();
    for i in 0..runs {
        eprintln!("run {}/{runs}…", i + 1);
        samples.push(one_run(&exe)?);
    }
    println!(
        "wgmesh data-plane bench: {runs} runs, TCP echo of {MIB} MiB (Mbit/s counts both directions)"
    );
    println!(
        "{:<44} {:>10} {:>10} {:>10}",
        "metric", "median", "min", "max"
    );
    type Metric = fn(&Sample) -> f64;
    let rows: [(&str, Metric); 5] = [
        ("userspace device creation (ms)", |s| s.create_ms),
        ("apply 1000 peers in one call (ms)", |s| s.apply_1000_ms),
        ("read back 1000 peers (ms)", |s| s.read_1000_ms),
        ("TCP through the tunnel (Mbit/s)", |s| s.tunnel_mbit),
        ("TCP same hosts, no tunnel (Mbit/s)", |s| s.plain_mbit),
    ];
    for (name, get) in rows {
        let (med, min, max) = stats(samples.iter().map(get).collect());
        println!("{name:<44} {med:>10.1} {min:>10.1} {max:>10.1}");
    }
    Ok(())
}

fn bench_api(args: &[String]) -> anyhow::Result<()> {
    if !wgmesh_tests::lab::require_root() {
        bail!("the lab needs root");
    }
    let peers = number_flag(args, "--peers", 1000)?;
    let opts = wgmesh_tests::apibench::Options {
        peers: u16::try_from(peers)
            .ok()
            .filter(|p| (1..=1000).contains(p))
            .context("--peers must be between 1 and 1000 (the store's cap)")?,
        requests: number_flag(args, "--requests", 2000)?.max(1),
        idle: Duration::from_secs(number_flag(args, "--idle-secs", 60)? as u64),
        settle: Duration::from_secs(15),
    };
    let report = wgmesh_tests::apibench::run(&Exe::current()?, opts)?;
    wgmesh_tests::apibench::print(&report, &opts);
    Ok(())
}

fn demo(nodes: usize) -> anyhow::Result<()> {
    if !(2..=50).contains(&nodes) {
        bail!("--nodes must be between 2 and 50");
    }
    if !wgmesh_tests::lab::require_root() {
        bail!("the demo needs root (network namespaces): run it with sudo");
    }
    let exe = Exe::current()?;
    let names: Vec<String> = (1..=nodes).map(|i| format!("node{i}")).collect();
    let lab = Lab::one_lan("demo", &names)?;
    let secret = lab.dir().join("mesh.secret");
    daemon::write_secret(&exe, &secret)?;
    println!(
        "Starting {nodes} wgmeshd nodes on one LAN (namespaces {}-*)…",
        lab.prefix()
    );
    let started = std::time::Instant::now();
    let mut daemons = Vec::new();
    for h in lab.hosts() {
        daemons.push(Daemon::start(&exe, h, &secret, &["--log-level", "info"])?);
    }
    for d in &daemons {
        d.wait_api(Duration::from_secs(20))?;
    }
    let hosts: Vec<&Host> = lab.hosts().iter().collect();
    if let Err(e) = daemon::wait_full_mesh(&hosts, Duration::from_secs(60)) {
        lab.print_logs(30);
        return Err(e.context("the nodes did not form a full mesh (logs above)"));
    }
    println!(
        "Full mesh after {:.1} s.\n",
        started.elapsed().as_secs_f64()
    );
    for h in &hosts {
        println!("── {} (wgmeshctl status) ──", h.name());
        let out = exe
            .wgmeshctl()
            .arg("--socket")
            .arg(h.socket_path())
            .arg("status")
            .output()?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        println!();
    }
    println!("Pings over the mesh:");
    let ips = hosts
        .iter()
        .map(|h| daemon::mesh_ip(h))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for h in &hosts {
        for (other, ip) in hosts.iter().zip(&ips) {
            if other.name() == h.name() {
                continue;
            }
            let ok = h.ping(*ip)?;
            println!(
                "  {} -> {} ({ip}): {}",
                h.name(),
                other.name(),
                if ok { "ok" } else { "FAILED" }
            );
        }
    }
    println!(
        "\nThe mesh stays up; inspect it with e.g.\n  wgmeshctl --socket {} peers\nPress Ctrl-C to stop and clean up.",
        lab.hosts()[0].socket_path().display()
    );
    wait_for_ctrl_c()?;
    println!("Stopping the nodes and removing the lab…");
    drop(lab);
    Ok(())
}

fn wait_for_ctrl_c() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        Ok::<_, std::io::Error>(())
    })?;
    Ok(())
}

fn demo_down() -> anyhow::Result<()> {
    if !wgmesh_tests::lab::require_root() {
        bail!("cleaning up the demo needs root");
    }
    wgmesh_tests::lab::sweep_stale()?;
    println!("Removed the namespaces and directories of labs whose process is gone.");
    Ok(())
}
