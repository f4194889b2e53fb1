//! End to end, with LAN discovery off so that the exchange socket is the only way to meet:
//!
//! - four hosts on one LAN, three of which only know the first (`--peer <host 1>:<gossip
//!   port>`), form a full mesh that carries TCP between every pair; every pair met directly
//!   (method `dht`), not only through the first host's list; the time to full mesh is printed
//!   (median of three runs);
//! - a node stopped with SIGTERM says GOODBYE: the others drop it at once, not after 5 minutes;
//!   restarted without `--peer`, it gets back in through its peer cache (HELLO to each cached
//!   peer);
//! - a hostile host floods a node's exchange port with 100k datagrams (garbage, envelopes of
//!   another key, replays of a captured HELLO of a member, 65507-byte datagrams): the peer store
//!   and the member's endpoint are unchanged, the daemon's memory stays bounded, the rate limiter
//!   dropped most of it, and the API still answers.
//!
//! Needs root; without it the tests are skipped, except under `CI=true` where they fail.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use wgmesh_tests::daemon::{self, Daemon};
use wgmesh_tests::lab::{self, Host, Lab};
use wgmesh_tests::{Exe, labnode_exe};
use wgmeshd::metrics::parse::parse;

/// How long a daemon may take to serve its API after start.
const API_UP: Duration = Duration::from_secs(20);
/// How long a mesh may take to form.
const MESH_UP: Duration = Duration::from_secs(60);

// Failures panic (`unwrap`): the lab prints every daemon's log when it is dropped during a panic.

/// Starts host 1 with no peers and the others with `--peer <host 1>:<gossip port>`, LAN
/// discovery off; returns the daemons and the seconds from their start to a full mesh.
fn star(exe: &Exe, lab: &Lab) -> (Vec<Daemon>, f64) {
    let secret = lab.dir().join("mesh.secret");
    daemon::write_secret(exe, &secret).unwrap();
    let port = daemon::gossip_port(&secret).unwrap();
    let hosts = lab.hosts();
    let first = format!("{}:{port}", hosts[0].ip());
    let started = Instant::now();
    let daemons: Vec<Daemon> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let mut args = vec!["--no-lan-discovery"];
            if i > 0 {
                args.extend(["--peer", first.as_str()]);
            }
            Daemon::start(exe, h, &secret, &args).unwrap()
        })
        .collect();
    for d in &daemons {
        d.wait_api(API_UP).unwrap();
    }
    let refs: Vec<&Host> = hosts.iter().collect();
    daemon::wait_full_mesh(&refs, MESH_UP).unwrap();
    (daemons, started.elapsed().as_secs_f64())
}

#[test]
fn hosts_that_only_know_one_host_form_a_full_mesh_and_goodbye_removes_a_stopped_one() {
    if !lab::require_root() {
        return;
    }
    let exe = labnode_exe!();
    let names = ["h1", "h2", "h3", "h4"];
    let mut times = Vec::new();
    for run in 0..3 {
        let lab = Lab::one_lan(&format!("exstar{run}"), &names).unwrap();
        let (daemons, secs) = star(&exe, &lab);
        eprintln!(
            "--peer run {}: 4 hosts, full mesh {secs:.2} s after start",
            run + 1
        );
        times.push(secs);
        if run < 2 {
            continue;
        }
        let hosts: Vec<&Host> = lab.hosts().iter().collect();
        daemon::tcp_every_pair(&exe, &hosts).unwrap();
        let keys: Vec<String> = daemons
            .iter()
            .map(|d| d.status().unwrap().public_key)
            .collect();
        // Every pair met directly on the exchange port (h2..h4 only knew h1: the others were
        // contacted because an exchange named them).
        for (i, h) in hosts.iter().enumerate() {
            let peers = daemon::peers(h).unwrap().peers;
            for (j, key) in keys.iter().enumerate().filter(|(j, _)| *j != i) {
                let p = peers.iter().find(|p| &p.public_key == key).unwrap();
                assert!(
                    p.discovered_via.iter().any(|m| m == "dht"),
                    "{} met {} only through others: {:?}",
                    h.name(),
                    names[j],
                    p.discovered_via
                );
            }
            let st = daemon::status(h).unwrap();
            assert_eq!(st.discovery["exchange"].state, "running");
            assert_eq!(st.discovery["lan"].state, "off");
            let want = if i == 0 { "off" } else { "running" };
            assert_eq!(st.discovery["static"].state, want, "{}", h.name());
        }

        // SIGTERM on h4: it says GOODBYE, the others drop it at once.
        let stopped = Instant::now();
        let h4 = daemons[3].process();
        h4.signal(libc::SIGTERM).unwrap();
        let status = h4.wait_timeout(Duration::from_secs(15)).unwrap().unwrap();
        assert!(status.success(), "{}", h4.logs_tail(30));
        assert!(h4.stderr().contains("said GOODBYE"), "{}", h4.logs_tail(30));
        for h in &hosts[..3] {
            let gone = lab::wait_until(Duration::from_secs(10), || {
                daemon::peer(h, &keys[3]).unwrap().is_none()
            });
            assert!(gone, "{} still lists h4 10 s after its GOODBYE", h.name());
        }
        eprintln!(
            "GOODBYE: h1..h3 dropped the stopped h4 within {:.2} s of its SIGTERM",
            stopped.elapsed().as_secs_f64()
        );
        // The rest of the mesh is intact.
        daemon::wait_full_mesh(&hosts[..3], MESH_UP).unwrap();

        // h4 comes back with no --peer: its peer cache names the others, and its HELLOs put it
        // back into their stores (they forgot it at its GOODBYE).
        let secret = lab.dir().join("mesh.secret");
        let back = Instant::now();
        Daemon::start(&exe, hosts[3], &secret, &["--no-lan-discovery"])
            .unwrap()
            .wait_api(API_UP)
            .unwrap();
        daemon::wait_full_mesh(&hosts, MESH_UP).unwrap();
        eprintln!(
            "h4 restarted with only its peer cache: full mesh again {:.2} s later",
            back.elapsed().as_secs_f64()
        );
    }
    times.sort_by(f64::total_cmp);
    eprintln!(
        "--peer: time to full mesh over 3 runs: {:.2} / {:.2} / {:.2} s, median {:.2} s",
        times[0], times[1], times[2], times[1]
    );
}

/// `GET /metrics` on the daemon's API socket.
fn metrics(host: &Host) -> wgmeshd::metrics::parse::Parsed {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let socket = host.socket_path();
    let text = rt.block_on(async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut s = tokio::net::UnixStream::connect(socket).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).await.unwrap();
        text
    });
    let (_, body) = text.split_once("\r\n\r\n").unwrap();
    parse(body).unwrap_or_else(|e| panic!("{e}\n{body}"))
}

/// The exchange layer's drops by reason.
fn exchange_drops(host: &Host) -> BTreeMap<String, f64> {
    let p = metrics(host);
    [
        "rate_limited",
        "malformed",
        "oversized",
        "authentication",
        "stale",
        "replay",
        "bad_payload",
        "own",
    ]
    .into_iter()
    .map(|r| {
        let v = p
            .value(
                "wgmesh_discovery_drops_total",
                &[("layer", "exchange"), ("reason", r)],
            )
            .unwrap_or(0.0);
        (r.to_owned(), v)
    })
    .collect()
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_flood_on_the_exchange_port_changes_nothing_and_the_api_still_answers() {
    if !lab::require_root() {
        return;
    }
    const DATAGRAMS: u64 = 100_000;
    let exe = labnode_exe!();
    let lab = Lab::one_lan("exflood", &["a", "b", "x"]).unwrap();
    let (a, b, x) = (lab.host("a"), lab.host("b"), lab.host("x"));
    let secret = lab.dir().join("mesh.secret");
    daemon::write_secret(&exe, &secret).unwrap();
    let port = daemon::gossip_port(&secret).unwrap();
    // x captures a HELLO of b (b also "knows" x), then floods a with it and the rest.
    let mut flood = exe
        .in_host(x, "flood-udp")
        .args([
            port.to_string(),
            format!("{}:{port}", a.ip()),
            DATAGRAMS.to_string(),
        ])
        .spawn_piped()
        .unwrap();
    assert_eq!(
        flood.read_line(Duration::from_secs(10)).unwrap(),
        "listening"
    );
    let da = Daemon::start(&exe, a, &secret, &["--no-lan-discovery"]).unwrap();
    let (to_a, to_x) = (format!("{}:{port}", a.ip()), format!("{}:{port}", x.ip()));
    Daemon::start(
        &exe,
        b,
        &secret,
        &["--no-lan-discovery", "--peer", &to_a, "--peer", &to_x],
    )
    .unwrap();
    da.wait_api(API_UP).unwrap();
    let captured = flood.read_line(Duration::from_secs(30)).unwrap();
    eprintln!("flood-udp {captured} (b's HELLO)");
    daemon::wait_full_mesh(&[a, b], MESH_UP).unwrap();
    let before = daemon::peers(a).unwrap().peers;
    assert_eq!(before.len(), 1);
    let rss_before = rss_kib(da.process().pid());
    let drops_before = exchange_drops(a);

    let summary = flood.request("go", Duration::from_secs(300)).unwrap();
    eprintln!("flood: {summary}");
    let done = flood.wait_timeout(Duration::from_secs(10)).unwrap();
    assert!(
        done.is_some_and(|s| s.success()),
        "flood-udp failed:\n{}",
        flood.logs()
    );
    let asked = Instant::now();
    let status = daemon::status(a).unwrap();
    eprintln!(
        "GET /v1/status right after the flood answered in {:.1} ms",
        asked.elapsed().as_secs_f64() * 1000.0
    );
    assert!(status.discovery["exchange"].state == "running");
    // Let the socket drain what the kernel still holds.
    std::thread::sleep(Duration::from_secs(2));
    let rss_after = rss_kib(da.process().pid());
    eprintln!("wgmeshd RSS before the flood {rss_before} KiB, after {rss_after} KiB");
    assert!(
        rss_after < rss_before + 64 * 1024,
        "memory grew by {} KiB",
        rss_after - rss_before
    );

    // The store is unchanged: no new peer, b's endpoint not moved to x by the replays.
    let after = daemon::peers(a).unwrap().peers;
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0].public_key, before[0].public_key);
    assert_eq!(after[0].endpoint, before[0].endpoint);
    assert!(daemon::handshaked(a, &before[0].public_key).unwrap());

    let drops_after = exchange_drops(a);
    let delta: BTreeMap<&str, f64> = drops_after
        .iter()
        .map(|(r, v)| (r.as_str(), v - drops_before[r]))
        .collect();
    eprintln!("exchange drops during the flood: {delta:?}");
    let limited = delta["rate_limited"];
    let others: f64 = delta
        .iter()
        .filter(|(r, _)| **r != "rate_limited")
        .map(|(_, v)| v)
        .sum();
    assert!(
        limited > 10.0 * others && limited > 1000.0,
        "the rate limiter did not take the brunt: {delta:?}"
    );
    assert!(
        delta["replay"] > 0.0,
        "no replay got past the limiter and was recognised: {delta:?}"
    );
    assert!(da.process().is_running());
    daemon::wait_full_mesh(&[a, b], MESH_UP).unwrap();
}
