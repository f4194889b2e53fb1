//! End to end: live reload through SIGHUP and the reload file `<state-dir>/wg0.reload`, on two
//! daemons meshed over the LAN.
//!
//! - new `advertise-routes` on a: b lists them and installs the kernel routes within a moment,
//!   because a announces a change of what it advertises at once (not at the next 5 s round; the
//!   times are printed);
//! - `log-level=debug` on a daemon started at `info`: debug lines start to appear in its log;
//! - an invalid file (a bad route next to a good level) changes nothing, and says why at warn,
//!   naming `<file>:<line>`; a missing file says what to put in it.
//!
//! Needs root; without it the tests are skipped, except under `CI=true` where they fail.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use wgmesh_tests::daemon::{self, Daemon};
use wgmesh_tests::lab::{self, Host, Lab};
use wgmesh_tests::labnode_exe;

/// How long a daemon may take to serve its API after start.
const API_UP: Duration = Duration::from_secs(20);
/// How long a mesh may take to form.
const MESH_UP: Duration = Duration::from_secs(60);
/// How long anything asked of a running daemon may take, at most, before the test gives up.
const SETTLE: Duration = Duration::from_secs(15);
/// A route change must reach the peer well inside one announcement interval (5 s): announced
/// at once, it takes a few hundred milliseconds; waiting for the next round would take 0–5 s, so
/// three rounds in a row under this bound do not happen by luck.
const ANNOUNCED_AT_ONCE: Duration = Duration::from_secs(2);

// Failures panic (`unwrap`) rather than return `Err`: the lab prints every daemon's log when it is
// dropped during a panic.

fn set(routes: &[&str]) -> BTreeSet<String> {
    routes.iter().map(|r| (*r).to_owned()).collect()
}

/// The networks `host`'s daemon lists for the peer `key` (empty when it does not list it).
fn routes_of_peer(host: &Host, key: &str) -> BTreeSet<String> {
    daemon::peer(host, key)
        .unwrap()
        .map(|p| p.routable_networks.into_iter().collect())
        .unwrap_or_default()
}

/// The IPv4 routes through the mesh interface in `host`'s kernel.
fn kernel_routes(host: &Host) -> String {
    host.exec_ok("ip", &["-4", "route", "show", "dev", "wg0"])
        .unwrap()
}

/// Writes the reload file and sends SIGHUP to the daemon; returns when the signal was sent.
fn reload_with(d: &Daemon, file: &Path, text: &str) -> Instant {
    std::fs::write(file, text).unwrap();
    let sent = Instant::now();
    d.process().signal(libc::SIGHUP).unwrap();
    sent
}

/// Waits until the daemon's log holds `n` lines containing `text`; panics with the log if not.
fn wait_log_lines(d: &Daemon, text: &str, n: usize) -> String {
    let mut log = String::new();
    let found = lab::wait_until(SETTLE, || {
        log = d.process().stderr();
        log.lines().filter(|l| l.contains(text)).count() >= n
    });
    assert!(
        found,
        "{n} log line(s) with {text:?} never appeared:\n{log}"
    );
    log
}

#[test]
fn sighup_reloads_routes_and_log_level_from_the_reload_file() {
    if !lab::require_root() {
        return;
    }
    let exe = labnode_exe!();
    let lab = Lab::one_lan("reload", &["a", "b"]).unwrap();
    let (a, b) = (lab.host("a"), lab.host("b"));
    let secret = lab.dir().join("mesh.secret");
    daemon::write_secret(&exe, &secret).unwrap();
    let da = Daemon::start(
        &exe,
        a,
        &secret,
        &["--log-level", "info", "--advertise-routes", "172.31.1.0/24"],
    )
    .unwrap();
    let db = Daemon::start(&exe, b, &secret, &[]).unwrap();
    let a_key = da.wait_api(API_UP).unwrap().public_key;
    db.wait_api(API_UP).unwrap();
    daemon::wait_full_mesh(&[a, b], MESH_UP).unwrap();
    assert!(
        lab::wait_until(SETTLE, || routes_of_peer(b, &a_key)
            == set(&["172.31.1.0/24"])),
        "b never listed a's start-up route"
    );
    let file = a.state_dir().join("wg0.reload");

    // 1. New routes: announced at once, listed by b, installed in b's kernel. Three rounds (add,
    //    remove, replace), each timed from the signal to b's API listing them.
    let rounds: [&[&str]; 3] = [
        &["172.31.1.0/24", "172.31.7.0/24"],
        &["172.31.7.0/24"],
        &["172.31.8.0/24", "172.31.7.0/24"],
    ];
    let mut took = Vec::new();
    for (i, routes) in rounds.iter().enumerate() {
        let sent = reload_with(
            &da,
            &file,
            &format!("# round {i}\nadvertise-routes = {}\n", routes.join(", ")),
        );
        let want = set(routes);
        let mut seen = BTreeSet::new();
        assert!(
            lab::wait_until(SETTLE, || {
                seen = routes_of_peer(b, &a_key);
                seen == want
            }),
            "round {i}: b lists {seen:?} for a, not {want:?}"
        );
        took.push(sent.elapsed());
        wait_log_lines(&da, "reload applied", i + 1);
    }
    eprintln!(
        "reload: SIGHUP on a -> new routes listed by b after {}",
        took.iter()
            .map(|t| format!("{} ms", t.as_millis()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (i, t) in took.iter().enumerate() {
        assert!(
            *t < ANNOUNCED_AT_ONCE,
            "round {i}: {t:?} from SIGHUP to b's listing; not announced at once ({took:?})"
        );
    }
    let mut routes = String::new();
    assert!(
        lab::wait_until(SETTLE, || {
            routes = kernel_routes(b);
            routes.contains("172.31.7.0/24")
                && routes.contains("172.31.8.0/24")
                && !routes.contains("172.31.1.0/24")
        }),
        "b's kernel routes through wg0 do not follow a's reload:\n{routes}"
    );
    let status = daemon::wait_status(a, SETTLE, "reloaded routes in a's status", |st| {
        st.advertise_routes.iter().cloned().collect::<BTreeSet<_>>()
            == set(&["172.31.7.0/24", "172.31.8.0/24"])
    })
    .unwrap();
    assert_eq!(status.log_level, "info");
    let log = da.process().stderr();
    assert!(
        log.contains(
            r#"reload applied source="signal" changed=advertise_routes: [172.31.1.0/24] -> [172.31.1.0/24, 172.31.7.0/24]"#
        ),
        "the reload is logged with its source and diff:\n{log}"
    );
    assert!(
        !log.contains(" DEBUG "),
        "debug lines at --log-level info:\n{log}"
    );

    // 2. The log level: debug lines appear once the file says so.
    reload_with(&da, &file, "log-level=debug\n");
    daemon::wait_status(a, SETTLE, "log level debug in a's status", |st| {
        st.log_level == "debug"
    })
    .unwrap();
    // A route change now also logs the LAN task's debug line about announcing it.
    reload_with(&da, &file, "advertise-routes=172.31.9.0/24\n");
    let log = wait_log_lines(&da, "announcing now", 1);
    assert!(log.contains(" DEBUG "), "{log}");
    assert!(
        lab::wait_until(SETTLE, || routes_of_peer(b, &a_key)
            == set(&["172.31.9.0/24"])),
        "b never listed a's last route"
    );

    // 3. An invalid file: a bad route next to a good level changes nothing, and says why.
    let before = daemon::status(a).unwrap();
    let refused = da
        .process()
        .stderr()
        .matches("reload refused; nothing changed")
        .count();
    reload_with(
        &da,
        &file,
        "log-level=error\nadvertise-routes=172.31.10.0/24, not-a-network\n",
    );
    let log = wait_log_lines(&da, "reload refused; nothing changed", refused + 1);
    let line = log
        .lines()
        .rfind(|l| l.contains("reload refused; nothing changed"))
        .unwrap();
    assert!(
        line.contains(" WARN ")
            && line.contains(&format!("{}:2: advertise-routes", file.display()))
            && line.contains("\"not-a-network\""),
        "{line}"
    );
    // Give a wrong change time to show (announcements go out at once, snapshots every second).
    std::thread::sleep(Duration::from_secs(2));
    let after = daemon::status(a).unwrap();
    assert_eq!(after.advertise_routes, before.advertise_routes);
    assert_eq!(after.log_level, "debug");
    assert_eq!(
        routes_of_peer(b, &a_key),
        set(&["172.31.9.0/24"]),
        "b saw a refused change"
    );

    // 4. No file: says which and what to put in it; nothing changes.
    std::fs::remove_file(&file).unwrap();
    da.process().signal(libc::SIGHUP).unwrap();
    let log = wait_log_lines(&da, "reload refused; nothing changed", refused + 2);
    let line = log
        .lines()
        .rfind(|l| l.contains("reload refused; nothing changed"))
        .unwrap();
    assert!(
        line.contains("no reload file") && line.contains("advertise-routes="),
        "{line}"
    );
    assert!(
        da.process().is_running(),
        "a stopped:\n{}",
        da.process().logs_tail(30)
    );
    assert_eq!(
        daemon::status(a).unwrap().advertise_routes,
        before.advertise_routes
    );
}

/// `wgmeshctl --socket SOCKET ARGS…` in `host`: (exit code, stdout, stderr).
fn ctl(host: &Host, args: &[&str]) -> (i32, String, String) {
    let out = labnode_exe!()
        .in_host(host, "wgmeshctl")
        .arg("--socket")
        .arg(host.socket_path())
        .args(args)
        .output_timeout(SETTLE)
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_api_reloads_settings_dry_runs_rereads_the_file_and_refuses_bad_input() {
    if !lab::require_root() {
        return;
    }
    let exe = labnode_exe!();
    let lab = Lab::one_lan("apireload", &["a", "b"]).unwrap();
    let (a, b) = (lab.host("a"), lab.host("b"));
    let secret = lab.dir().join("mesh.secret");
    daemon::write_secret(&exe, &secret).unwrap();
    let da = Daemon::start(&exe, a, &secret, &["--log-level", "info"]).unwrap();
    let db = Daemon::start(&exe, b, &secret, &[]).unwrap();
    let a_key = da.wait_api(API_UP).unwrap().public_key;
    db.wait_api(API_UP).unwrap();
    daemon::wait_full_mesh(&[a, b], MESH_UP).unwrap();

    // A dry run reports the diff and changes nothing.
    let (code, out, err) = ctl(
        a,
        &[
            "reload",
            "--json",
            "--advertise-routes",
            "172.31.4.0/24",
            "--dry-run",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let answer: wgmesh_api_types::ReloadResponse = serde_json::from_str(&out).unwrap();
    assert!(answer.dry_run && !answer.applied, "{answer:?}");
    assert_eq!(
        answer.changed.advertise_routes.map(|c| c.to),
        Some(vec!["172.31.4.0/24".to_owned()])
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        routes_of_peer(b, &a_key).is_empty(),
        "a dry run was applied"
    );
    assert!(daemon::status(a).unwrap().advertise_routes.is_empty());

    // Settings in the body: applied, announced, listed by b; the level changes the log.
    let debug_lines = || {
        da.process()
            .stderr()
            .lines()
            .filter(|l| l.contains("DEBUG"))
            .count()
    };
    let before = debug_lines();
    let sent = Instant::now();
    let (code, out, err) = ctl(
        a,
        &[
            "reload",
            "--advertise-routes",
            "172.31.4.0/24",
            "--log-level",
            "debug",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("172.31.4.0/24"), "{out}");
    assert!(
        lab::wait_until(SETTLE, || routes_of_peer(b, &a_key)
            == set(&["172.31.4.0/24"])),
        "b never listed the route reloaded through the API"
    );
    eprintln!(
        "reload: POST /v1/reload on a -> route listed by b after {} ms",
        sent.elapsed().as_millis()
    );
    let status = daemon::status(a).unwrap();
    assert_eq!(status.log_level, "debug");
    assert_eq!(status.advertise_routes, ["172.31.4.0/24"]);
    assert!(
        // Each API request logs its connection at debug: ask, and look.
        lab::wait_until(SETTLE, || {
            daemon::status(a).unwrap();
            debug_lines() > before
        }),
        "no debug line after the level went to debug"
    );

    // An empty body re-reads the reload file.
    std::fs::write(a.state_dir().join("wg0.reload"), "log-level=info\n").unwrap();
    let (code, out, err) = ctl(a, &["reload", "--json"]);
    assert_eq!(code, 0, "{err}");
    let answer: wgmesh_api_types::ReloadResponse = serde_json::from_str(&out).unwrap();
    assert_eq!(answer.source, wgmesh_api_types::ReloadSource::File);
    assert!(answer.applied, "{answer:?}");
    assert_eq!(daemon::status(a).unwrap().log_level, "info");

    // Bad input changes nothing and names the field.
    let (code, _, err) = ctl(a, &["reload", "--advertise-routes", "0.0.0.0/33"]);
    assert_eq!(code, 2, "a value that is no CIDR is a usage error: {err}");
    std::fs::write(
        a.state_dir().join("wg0.reload"),
        "log-level=debug\nadvertise-routes=not-a-cidr\n",
    )
    .unwrap();
    let (code, _, err) = ctl(a, &["reload"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("wg0.reload:2"), "{err}");
    let status = daemon::status(a).unwrap();
    assert_eq!(
        (status.log_level.as_str(), status.advertise_routes.clone()),
        ("info", vec!["172.31.4.0/24".to_owned()]),
        "a refused reload changed something"
    );
}
