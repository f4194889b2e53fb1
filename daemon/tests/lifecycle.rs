//! The daemon's lifecycle in-process: it claims its lock and API socket before it touches any
//! device, and it removes what it built when it stops.
//!
//! As root each test runs on a thread inside a fresh private network namespace (`unshare`), so a
//! daemon that got too far would create its interface there, never on the host. The claim tests
//! also run unprivileged (the claim fails before anything needs privilege); the full start/stop
//! test needs root and skips without it, except under `CI=true` where that is a failure.

#![cfg(feature = "runtime")]

use std::future::Future;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::oneshot;
use wgmeshd::config::{MeshSecret, SecretOrigin};
use wgmeshd::daemon::{JoinOptions, lock_path, run};
use wgmeshd::logging::LogLevel;
use wgmeshd::system::fs::LockFile;
use wgmeshd::system::net::Netlink;
use wgmeshd::system::wg::BackendChoice;

const IFACE: &str = "wgtlife0";

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// True when a root-only test may run; otherwise prints a skip (or panics under `CI=true`).
fn privileged(test: &str) -> bool {
    if is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: needs root (a private network namespace) and CI=true");
    }
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: needs root");
    false
}

/// Runs `test` on a current-thread runtime, inside a private network namespace when root.
fn isolated<F, Fut>(test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let thread = std::thread::spawn(move || {
        if is_root() {
            // SAFETY: plain syscall; it only changes this thread's network namespace.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
        }
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

struct Dirs {
    _tmp: tempfile::TempDir,
    state: PathBuf,
    socket: PathBuf,
    /// `--uapi-dir`: never the real /run/wireguard.
    uapi: PathBuf,
}

fn dirs() -> Dirs {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let socket = tmp.path().join("run/wgmeshd.sock");
    Dirs {
        state,
        socket,
        uapi: tmp.path().join("uapi"),
        _tmp: tmp,
    }
}

fn options(dirs: &Dirs) -> JoinOptions {
    JoinOptions {
        secret: MeshSecret::parse(
            "wgmesh://v1/lifecycle-test-secret-0123456789",
            SecretOrigin::Literal,
        )
        .unwrap(),
        interface: IFACE.parse().unwrap(),
        listen_port: 51999,
        state_dir: dirs.state.clone(),
        socket: dirs.socket.clone(),
        socket_group: wgmeshd::api::SocketGroup::Default,
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
        uapi_dir: Some(dirs.uapi.clone()),
    }
}

async fn link_exists(name: &str) -> bool {
    let net = Netlink::connect().await.unwrap();
    net.link_index(name).await.unwrap().is_some()
}

async fn assert_untouched(dirs: &Dirs) {
    if is_root() {
        assert!(!link_exists(IFACE).await, "a device was created");
    }
    let state_files: Vec<String> = std::fs::read_dir(&dirs.state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    assert!(state_files.is_empty(), "identity written: {state_files:?}");
}

#[test]
fn a_held_lock_stops_a_second_daemon_before_any_device_or_socket() {
    isolated(|| async {
        let d = dirs();
        let lock = lock_path(&d.state, &IFACE.parse().unwrap());
        let _first = LockFile::acquire(&lock).unwrap();
        let err = run(options(&d), std::future::pending(), std::future::pending())
            .await
            .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("another wgmeshd already runs interface wgtlife0"),
            "{text}"
        );
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        assert!(!d.socket.exists(), "the API socket was bound");
        assert_untouched(&d).await;
    });
}

#[test]
fn a_live_api_socket_stops_a_second_daemon_before_any_device() {
    isolated(|| async {
        let d = dirs();
        std::fs::create_dir_all(d.socket.parent().unwrap()).unwrap();
        // Someone answers on the socket: a daemon for another interface or state directory.
        let _other = std::os::unix::net::UnixListener::bind(&d.socket).unwrap();
        let err = run(options(&d), std::future::pending(), std::future::pending())
            .await
            .unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("already serving"), "{text}");
        assert!(d.socket.exists(), "the other daemon's socket was removed");
        assert_untouched(&d).await;
        // The failed start released its lock.
        LockFile::acquire(&lock_path(&d.state, &IFACE.parse().unwrap())).unwrap();
    });
}

#[test]
fn a_busy_metrics_address_stops_the_daemon_before_any_device() {
    isolated(|| async {
        let d = dirs();
        // Any address works in a fresh namespace: its loopback is down, the wildcard is not.
        let busy = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let mut opts = options(&d);
        opts.metrics_listen = Some(busy.local_addr().unwrap());
        let err = run(opts, std::future::pending(), std::future::pending())
            .await
            .unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("cannot serve metrics on 0.0.0.0:"), "{text}");
        assert!(text.contains("already in use"), "{text}");
        assert_untouched(&d).await;
        // The failed start released its lock.
        LockFile::acquire(&lock_path(&d.state, &IFACE.parse().unwrap())).unwrap();
    });
}

#[test]
fn an_unknown_socket_group_stops_the_daemon_before_any_device() {
    isolated(|| async {
        let d = dirs();
        let mut opts = options(&d);
        opts.socket_group = wgmeshd::api::SocketGroup::Named("no-such-group-wgmesh".into());
        let err = run(opts, std::future::pending(), std::future::pending())
            .await
            .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("group \"no-such-group-wgmesh\"") && text.contains("does not exist"),
            "{text}"
        );
        assert!(!d.socket.exists(), "the API socket was bound");
        assert_untouched(&d).await;
    });
}

async fn wait_for(path: &Path) {
    for _ in 0..200 {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the API never answered on {}", path.display());
}

/// Starts a daemon, waits for its API, stops it with `stop` (and `force` right after when
/// `second_signal`), and checks that nothing is left behind.
async fn start_and_stop(second_signal: bool) {
    let d = dirs();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (force_tx, force_rx) = oneshot::channel::<()>();
    let daemon = tokio::spawn(run(
        options(&d),
        async move {
            let _ = stop_rx.await;
        },
        async move {
            let _ = force_rx.await;
        },
    ));
    wait_for(&d.socket).await;
    assert!(link_exists(IFACE).await, "no interface while running");
    let uapi_socket = d.uapi.join(format!("{IFACE}.sock"));
    wait_for(&uapi_socket).await;
    // While it runs, a second daemon with the same state directory is refused.
    let mut other = options(&d);
    other.socket = d.socket.with_file_name("other.sock");
    let err = run(other, std::future::pending(), std::future::pending())
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("another wgmeshd"), "{err:#}");
    assert!(
        link_exists(IFACE).await,
        "the refused daemon removed the device"
    );

    stop_tx.send(()).unwrap();
    if second_signal {
        force_tx.send(()).unwrap();
    }
    tokio::time::timeout(Duration::from_secs(20), daemon)
        .await
        .expect("the daemon stops")
        .unwrap()
        .unwrap();
    assert!(!link_exists(IFACE).await, "interface left behind");
    assert!(!d.socket.exists(), "API socket left behind");
    if !second_signal {
        // Every task ended before `run` returned; after a second signal a task may still be
        // ending (the process exit then drops it, and its socket file with it).
        assert!(!uapi_socket.exists(), "UAPI socket left behind");
    }
    LockFile::acquire(&lock_path(&d.state, &IFACE.parse().unwrap())).expect("lock released");
}

#[test]
fn a_stopped_daemon_leaves_no_interface_socket_or_lock() {
    if !privileged("a_stopped_daemon_leaves_no_interface_socket_or_lock") {
        return;
    }
    isolated(|| start_and_stop(false));
}

#[test]
fn a_second_signal_still_tears_everything_down() {
    if !privileged("a_second_signal_still_tears_everything_down") {
        return;
    }
    isolated(|| start_and_stop(true));
}
