//! End to end: `wgmeshd join` under a systemd-style notify socket, and with its secret handed
//! over as a systemd credential (what `wgmesh.service` does). PID 1 here is not systemd, so the
//! test plays the service manager: it binds the datagram socket `$NOTIFY_SOCKET` names and reads
//! what the daemon says.
//!
//! Needs root; without it the tests are skipped, except under `CI=true` where they fail.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use wgmesh_tests::daemon::{self, Daemon};
use wgmesh_tests::lab::{self, Lab};
use wgmesh_tests::labnode_exe;

const API_UP: Duration = Duration::from_secs(20);
const MESH_UP: Duration = Duration::from_secs(60);

/// Reads datagrams until one contains `want` (or `deadline`); returns the one that did and
/// appends every datagram read to `seen`.
fn recv_until(
    sock: &UnixDatagram,
    want: &str,
    deadline: Instant,
    seen: &mut Vec<String>,
) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    while Instant::now() < deadline {
        match sock.recv(&mut buf) {
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                seen.push(text.clone());
                if text.lines().any(|l| l == want || l.starts_with(want)) {
                    return Some(text);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("notify socket: {e}"),
        }
    }
    None
}

/// READY=1 once the interface is up and the cached peer is on the device (the restarted daemon
/// restores its peer from the cache), WATCHDOG=1 pings with `WATCHDOG_USEC=2000000`, a STATUS=
/// line, and STOPPING=1 on SIGTERM.
#[test]
fn notify_socket_sees_ready_watchdog_status_and_stopping() {
    if !lab::require_root() {
        return;
    }
    let lab = Lab::one_lan("sdnotify", &["a", "b"]).unwrap();
    let (a, b) = (lab.host("a"), lab.host("b"));
    let exe = labnode_exe!();
    let secret = lab.dir().join("mesh.secret");
    daemon::write_secret(&exe, &secret).unwrap();

    // First run: A learns B and caches it at exit.
    let db = Daemon::start(&exe, b, &secret, &[]).unwrap();
    let first = Daemon::start(&exe, a, &secret, &[]).unwrap();
    first.wait_api(API_UP).unwrap();
    db.wait_api(API_UP).unwrap();
    daemon::wait_full_mesh(&[a, b], MESH_UP).unwrap();
    let st = first.status().unwrap();
    assert_eq!(
        st.discovery["systemd"].state, "off",
        "no NOTIFY_SOCKET: {st:#?}"
    );
    first.process().signal(libc::SIGTERM).unwrap();
    let exit = first
        .process()
        .wait_timeout(Duration::from_secs(20))
        .unwrap();
    assert!(exit.is_some_and(|e| e.success()), "{exit:?}");

    // Second run under a notify socket, without LAN discovery: B is on the device at READY only
    // because the cache put it there.
    let path = lab.dir().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let started = Instant::now();
    let da = Daemon::start_with_env(
        &exe,
        a,
        &secret,
        &["--no-lan-discovery"],
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "2000000"),
        ],
    )
    .unwrap();
    let mut seen = Vec::new();
    let ready = recv_until(&sock, "READY=1", started + API_UP, &mut seen)
        .unwrap_or_else(|| panic!("no READY=1; got {seen:?}\n{}", da.process().logs_tail(40)));
    let to_ready = started.elapsed();
    println!(
        "READY=1 after {:.0} ms: {ready:?}",
        to_ready.as_secs_f64() * 1000.0
    );
    // The API answers at once, with the interface up and a reconcile pass done.
    let st = da.status().unwrap();
    assert!(st.last_reconcile.is_some(), "{st:#?}");
    assert!(
        !st.health
            .reasons
            .iter()
            .any(|r| r.code.starts_with("interface")),
        "{st:#?}"
    );
    assert_eq!(st.discovery["systemd"].state, "running", "{st:#?}");
    // The datagram that says READY carries the status line: the cached peer is on the device.
    let status_line = ready
        .lines()
        .find_map(|l| l.strip_prefix("STATUS="))
        .unwrap_or_else(|| panic!("no STATUS= with READY: {ready:?}"));
    assert!(status_line.starts_with("1 peer: "), "{status_line}");

    let deadline = Instant::now() + Duration::from_secs(10);
    let mut pings = seen.iter().filter(|d| d.contains("WATCHDOG=1")).count();
    let ping_start = Instant::now();
    while pings < 3 {
        recv_until(&sock, "WATCHDOG=1", deadline, &mut seen)
            .unwrap_or_else(|| panic!("only {pings} WATCHDOG=1 pings: {seen:?}"));
        pings += 1;
    }
    println!(
        "{pings} WATCHDOG=1 pings within {:.0} ms of READY (WATCHDOG_USEC=2000000: one per second)",
        ping_start.elapsed().as_secs_f64() * 1000.0
    );

    da.process().signal(libc::SIGTERM).unwrap();
    let stopping = recv_until(
        &sock,
        "STOPPING=1",
        Instant::now() + Duration::from_secs(15),
        &mut seen,
    );
    assert!(stopping.is_some(), "no STOPPING=1: {seen:?}");
    let exit = da.process().wait_timeout(Duration::from_secs(20)).unwrap();
    assert!(exit.is_some_and(|e| e.success()), "{exit:?}");
    let ready_count = seen.iter().filter(|d| d.contains("READY=1")).count();
    assert_eq!(ready_count, 1, "{seen:?}");
}

/// A daemon whose secret comes only from `$CREDENTIALS_DIRECTORY/secret` (no `--secret-file`,
/// as `wgmesh.service` runs it) joins the mesh of a daemon given the same secret by file.
#[test]
fn secret_from_the_systemd_credential_joins_the_same_mesh() {
    if !lab::require_root() {
        return;
    }
    let lab = Lab::one_lan("sdcred", &["a", "b"]).unwrap();
    let (a, b) = (lab.host("a"), lab.host("b"));
    let exe = labnode_exe!();
    let secret = lab.dir().join("mesh.secret");
    daemon::write_secret(&exe, &secret).unwrap();
    let creds = lab.dir().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    std::fs::copy(&secret, creds.join("secret")).unwrap();

    let da = Daemon::start(&exe, a, &secret, &[]).unwrap();
    let db = Daemon::start_with_credential(&exe, b, &creds, &[]).unwrap();
    let sa = da.wait_api(API_UP).unwrap();
    let sb = db.wait_api(API_UP).unwrap();
    assert_eq!(sa.network_id, sb.network_id);
    daemon::wait_full_mesh(&[a, b], MESH_UP).unwrap();
}
