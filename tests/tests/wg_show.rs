//! End to end: Debian's `wg` (wireguard-tools) reads the embedded device of a real daemon through
//! its UAPI socket, exactly as it reads a kernel device: `wg show wg0`, `wg show wg0 dump`,
//! `wg show wg0 peers`. The socket is root only and read-only, survives garbage, and is gone
//! after SIGTERM.
//!
//! Each lab host's processes see their host's own directory as `/run/wireguard` (the lab
//! bind-mounts it in a private mount namespace), and `Daemon::start` points `--uapi-dir` at that
//! same directory, so `wg` run in host A finds A's `wg0.sock` and nobody else's.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use wgmesh_tests::daemon::{self, Daemon};
use wgmesh_tests::lab::{self, Host, Lab};
use wgmesh_tests::labnode_exe;
use wgmeshd::metrics::parse::parse;

/// How long a daemon may take to serve its API after start.
const API_UP: Duration = Duration::from_secs(20);
/// How long the mesh may take to form (every pair handshaked).
const MESH_UP: Duration = Duration::from_secs(60);
/// Requests timed for the latency numbers.
const TIMED: usize = 50;

// Failures panic (`unwrap`) rather than return `Err`: the lab prints every daemon's log when it is
// dropped during a panic.

fn uapi_socket(host: &Host) -> PathBuf {
    host.run_dir().join("wg0.sock")
}

/// `wg ARGS…` run as root in `host`: its stdout; panics with stderr on failure.
fn wg(host: &Host, args: &[&str]) -> String {
    host.exec_ok("wg", args)
        .unwrap_or_else(|e| panic!("wg {args:?} in {}: {e:#}", host.name()))
}

/// Sends `request` on the UAPI socket at `path` (as this test process: root) and reads the
/// answer until the server closes or sends its terminating empty line.
fn raw_uapi(path: &Path, request: &[u8]) -> String {
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The server may stop reading an oversized request and answer early: a failed write is fine.
    let _ = s.write_all(request);
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    while !got.ends_with(b"\n\n") {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading the UAPI answer: {e}"),
        }
    }
    String::from_utf8(got).unwrap()
}

/// `GET /metrics` on the host's API socket: the `wgmesh_discovery_drops_total` of layer `uapi`
/// for `reason`.
fn uapi_drops(host: &Host, reason: &str) -> f64 {
    let mut s = UnixStream::connect(host.socket_path()).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (_, body) = text.split_once("\r\n\r\n").unwrap();
    let parsed = parse(body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    parsed
        .value(
            "wgmesh_discovery_drops_total",
            &[("layer", "uapi"), ("reason", reason)],
        )
        .unwrap_or(0.0)
}

fn median_ms(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1000.0
}

#[test]
fn wg_show_reads_the_embedded_device_through_a_root_only_read_only_socket() {
    if !lab::require_root() {
        return;
    }
    let exe = labnode_exe!();
    let lab = Lab::one_lan("wgshow", &["a", "b", "c"]).unwrap();
    let secret = lab.dir().join("mesh.secret");
    daemon::write_secret(&exe, &secret).unwrap();
    let hosts: Vec<&Host> = lab.hosts().iter().collect();
    let daemons: Vec<Daemon> = hosts
        .iter()
        .map(|h| Daemon::start(&exe, h, &secret, &[]).unwrap())
        .collect();
    let statuses: Vec<_> = daemons
        .iter()
        .map(|d| d.wait_api(API_UP).unwrap())
        .collect();
    daemon::wait_full_mesh(&hosts, MESH_UP).unwrap();
    let (a, status_a) = (hosts[0], &statuses[0]);
    assert_eq!(status_a.discovery["uapi"].state, "running");
    assert_eq!(
        status_a.discovery["uapi"].detail.as_deref(),
        Some(&*uapi_socket(a).to_string_lossy())
    );
    let meta = std::fs::metadata(uapi_socket(a)).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "socket mode");

    // --- wg show wg0: the interface and every peer, as the daemon's API sees them.
    let show = wg(a, &["show", "wg0"]);
    println!("wg show wg0 in a:\n{show}");
    assert!(show.contains("interface: wg0"), "{show}");
    assert!(
        show.contains(&format!("public key: {}", status_a.public_key)),
        "{show}"
    );
    assert!(show.contains("private key: (hidden)"), "{show}");
    assert!(
        show.contains(&format!("listening port: {}", status_a.listen_port)),
        "{show}"
    );
    for (host, status) in hosts.iter().zip(&statuses).skip(1) {
        let section = show
            .split("\n\n")
            .find(|s| s.contains(&format!("peer: {}", status.public_key)))
            .unwrap_or_else(|| panic!("peer {} missing:\n{show}", host.name()));
        let endpoint = format!("endpoint: {}:{}", host.ip(), status.listen_port);
        assert!(section.contains(&endpoint), "{endpoint}?\n{section}");
        assert!(
            section.contains(&format!("{}/32", status.mesh_ip)),
            "{section}"
        );
        assert!(
            section.contains(&format!("{}/128", status.mesh_ipv6)),
            "{section}"
        );
        assert!(section.contains("latest handshake: "), "{section}");
        assert!(section.contains("preshared key: (hidden)"), "{section}");
        assert!(section.contains("transfer: "), "{section}");
    }

    // --- wg show wg0 dump: the private key is the node's own (state file), handshakes are real.
    let dump = wg(a, &["show", "wg0", "dump"]);
    let mut lines = dump.lines();
    let device: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.state_dir().join("wg0.json")).unwrap()).unwrap();
    assert!(
        device[0] == state["wg_private_key"].as_str().unwrap(),
        "the private key in the dump is not the node's"
    );
    assert_eq!(device[1], status_a.public_key);
    assert_eq!(device[2], status_a.listen_port.to_string());
    assert_eq!(device[3], "off", "fwmark");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut dumped_peers = BTreeSet::new();
    for line in lines {
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(f.len(), 8, "{line}");
        assert_ne!(f[1], "(none)", "the mesh PSK is set: {line}");
        let handshake: u64 = f[4].parse().unwrap();
        assert!(handshake > 0 && handshake <= now + 1, "{line}");
        assert_eq!(f[7], "25", "persistent keepalive: {line}");
        dumped_peers.insert(f[0].to_owned());
    }
    let others: BTreeSet<String> = statuses[1..].iter().map(|s| s.public_key.clone()).collect();
    assert_eq!(dumped_peers, others);

    // --- wg showconf: a configuration that would rebuild the device.
    let conf = wg(a, &["showconf", "wg0"]);
    assert!(
        conf.contains(&format!(
            "PrivateKey = {}",
            state["wg_private_key"].as_str().unwrap()
        )),
        "showconf lacks the node's private key"
    );
    assert!(conf.contains(&format!("ListenPort = {}", status_a.listen_port)));
    assert_eq!(conf.matches("[Peer]").count(), 2);

    // --- wg show wg0 peers, and `wg show` lists the interface among all of them.
    let peers: BTreeSet<String> = wg(a, &["show", "wg0", "peers"])
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(peers, others);
    assert_eq!(wg(a, &["show", "interfaces"]).trim(), "wg0");

    // --- Latency (printed, not asserted): `wg show wg0 dump` as a process, and one raw get.
    let mut process = Vec::new();
    let mut raw = Vec::new();
    for _ in 0..TIMED {
        let t = Instant::now();
        wg(a, &["show", "wg0", "dump"]);
        process.push(t.elapsed());
        let t = Instant::now();
        let answer = raw_uapi(&uapi_socket(a), b"get=1\n\n");
        raw.push(t.elapsed());
        assert!(answer.ends_with("errno=0\n\n"), "{answer}");
    }
    println!(
        "wg show with {} peers: `wg show wg0 dump` (process in the host) median {:.2} ms; raw UAPI get median {:.3} ms over {TIMED}",
        others.len(),
        median_ms(process),
        median_ms(raw)
    );

    // --- set is refused and changes nothing.
    let refused = a.run("wg", &["set", "wg0", "listen-port", "4242"]).unwrap();
    assert!(!refused.status.success(), "wg set succeeded");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("Operation not permitted"), "{err}");
    let victim = &statuses[1].public_key;
    let refused = a
        .run("wg", &["set", "wg0", "peer", victim, "remove"])
        .unwrap();
    assert!(!refused.status.success(), "wg set … remove succeeded");
    assert_eq!(
        wg(a, &["show", "wg0", "listen-port"]).trim(),
        status_a.listen_port.to_string()
    );
    let still: BTreeSet<String> = wg(a, &["show", "wg0", "peers"])
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(still, others, "a refused set changed the peers");
    assert_eq!(
        daemons[0].status().unwrap().listen_port,
        status_a.listen_port
    );
    assert!(uapi_drops(a, "set_refused") >= 2.0);

    // --- Not root: refused by the file mode, and by the daemon even when the file lets it in.
    let nobody = [
        "--reuid",
        "65534",
        "--regid",
        "65534",
        "--clear-groups",
        "wg",
    ];
    let as_nobody = |what: &str| {
        let out = a
            .run("setpriv", &[&nobody[..], &["show", "wg0", "dump"]].concat())
            .unwrap();
        assert!(!out.status.success(), "{what}: nobody read the device");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!stdout.contains(&status_a.public_key), "{what}: {stdout}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let run_dir = a.run_dir();
    let dir_mode = std::fs::metadata(&run_dir).unwrap().permissions().mode();
    std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = as_nobody("socket 0600");
    println!("nobody, socket 0600: {}", err.trim());
    let before = uapi_drops(a, "not_root");
    std::fs::set_permissions(uapi_socket(a), std::fs::Permissions::from_mode(0o666)).unwrap();
    let err = as_nobody("socket opened to everyone");
    println!("nobody, socket 0666: {}", err.trim());
    assert!(err.contains("Unable to access interface"), "{err}");
    assert_eq!(uapi_drops(a, "not_root"), before + 1.0, "SO_PEERCRED check");
    std::fs::set_permissions(uapi_socket(a), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(dir_mode)).unwrap();

    // --- Garbage and oversized requests: an errno, and the daemon does not mind.
    let socket = uapi_socket(a);
    assert_eq!(
        raw_uapi(&socket, b"GET / HTTP/1.1\r\n\r\n"),
        "errno=-22\n\n"
    );
    let binary = [&[0xff_u8; 300][..], b"\n"].concat();
    assert_eq!(raw_uapi(&socket, &binary), "errno=-22\n\n");
    let endless = vec![b'z'; 1 << 20];
    assert_eq!(raw_uapi(&socket, &endless), "errno=-90\n\n");
    let mut huge_set = b"set=1\n".to_vec();
    for _ in 0..2000 {
        huge_set.extend_from_slice(b"allowed_ip=10.99.99.99/32\n");
        huge_set.extend_from_slice(&[b'q'; 100]);
        huge_set.push(b'\n');
    }
    assert_eq!(raw_uapi(&socket, &huge_set), "errno=-90\n\n");
    assert_eq!(daemons[0].status().unwrap().public_key, status_a.public_key);
    assert_eq!(wg(a, &["show", "wg0", "peers"]).lines().count(), 2);
    assert!(uapi_drops(a, "unknown_operation") >= 1.0);

    // --- The private key never reaches the logs (hex as UAPI sends it, or base64).
    let key_b64 = state["wg_private_key"].as_str().unwrap();
    let key_hex: String = base64::engine::general_purpose::STANDARD
        .decode(key_b64)
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();

    // --- SIGTERM: the socket file is gone with the daemon.
    let process_a = daemons[0].process();
    process_a.signal(libc::SIGTERM).unwrap();
    let exit = process_a
        .wait_timeout(Duration::from_secs(15))
        .unwrap()
        .expect("wgmeshd exits on SIGTERM");
    assert!(exit.success(), "{exit:?}: {}", process_a.logs_tail(30));
    assert!(!uapi_socket(a).exists(), "UAPI socket left after SIGTERM");
    let logs = format!("{}{}", process_a.stdout(), process_a.stderr());
    assert!(
        !logs.contains(key_b64) && !logs.contains(&key_hex),
        "private key logged"
    );
    let gone = a.run("wg", &["show", "wg0"]).unwrap();
    assert!(
        !gone.status.success(),
        "wg still sees wg0 after the daemon left"
    );

    // --- --no-uapi: layer off, no socket.
    let again = Daemon::start(&exe, a, &secret, &["--no-uapi"]).unwrap();
    let status = again.wait_api(API_UP).unwrap();
    assert_eq!(status.discovery["uapi"].state, "off");
    assert!(!uapi_socket(a).exists());
}

#[test]
fn a_live_uapi_socket_of_another_process_is_not_stolen() {
    if !lab::require_root() {
        return;
    }
    let exe = labnode_exe!();
    let lab = Lab::one_lan("wgsteal", &["a"]).unwrap();
    let secret = lab.dir().join("mesh.secret");
    daemon::write_secret(&exe, &secret).unwrap();
    let a = lab.host("a");
    std::fs::create_dir_all(a.run_dir()).unwrap();
    // Another userspace WireGuard (say wireguard-go) serves wg0 already.
    let other = std::os::unix::net::UnixListener::bind(uapi_socket(a)).unwrap();
    let d = Daemon::start(&exe, a, &secret, &[]).unwrap();
    d.wait_api(API_UP).unwrap();
    let status = daemon::wait_status(a, Duration::from_secs(10), "uapi retrying", |s| {
        s.discovery["uapi"].state == "retrying"
    })
    .unwrap();
    let error = status.discovery["uapi"]
        .last_error
        .clone()
        .unwrap_or_default();
    println!("uapi layer: retrying, {error}");
    assert!(error.contains("another process serves"), "{error}");
    // The other process keeps its socket, and the daemon keeps running.
    assert!(uapi_socket(a).exists());
    let _client = UnixStream::connect(uapi_socket(a)).unwrap();
    assert!(other.accept().is_ok());
    assert!(d.process().try_wait().unwrap().is_none(), "the daemon died");

    // Once the other one is gone (its file left behind: stale), the next retry takes over.
    drop(other);
    daemon::wait_status(a, Duration::from_secs(40), "uapi running", |s| {
        s.discovery["uapi"].state == "running"
    })
    .unwrap();
    assert!(
        wg(a, &["show", "wg0", "listen-port"])
            .trim()
            .parse::<u16>()
            .is_ok()
    );
}
