//! `watch`: one line per event, `--json` passing the daemon's lines through, a clean end on
//! Ctrl-C, and a clear one when the daemon goes away.

use std::io::{BufRead as _, BufReader, Read as _};
use std::path::Path;
use std::process::{Child, Stdio};

use insta::assert_snapshot;
use wgmesh_api_types::{Change, Event, EventKind, ReloadChanges, ReloadSource};

use crate::fixtures::{ALPHA, BETA, GAMMA, event, plain_peers, plain_status};
use crate::harness::{Daemon, ctl_command, text};

/// A few events of each kind, ending with one that says the follower fell behind.
fn events() -> Vec<Event> {
    let kinds = [
        EventKind::PeerAdded {
            public_key: "cXVpdGUgYSBuZXcgcGVlciBrZXkgZm9yIHRlc3RzISE=".into(),
            hostname: "delta".into(),
            via: "lan".into(),
        },
        EventKind::PeerState {
            public_key: GAMMA.into(),
            from: "cached".into(),
            to: "active".into(),
        },
        EventKind::PeerChanged {
            public_key: "cXVpdGUgYSBuZXcgcGVlciBrZXkgZm9yIHRlc3RzISE=".into(),
        },
        EventKind::Reconciled {
            added: 1,
            updated: 1,
            removed: 0,
            failed: 0,
            duration_ms: 3,
        },
        EventKind::Reloaded {
            source: ReloadSource::Api,
            changed: ReloadChanges {
                advertise_routes: Some(Change {
                    from: vec!["192.168.10.0/24".into()],
                    to: vec!["10.9.0.0/24".into()],
                }),
                log_level: Some(Change {
                    from: "info".into(),
                    to: "debug".into(),
                }),
            },
        },
        EventKind::LayerState {
            layer: "lan".into(),
            state: "retrying".into(),
            error: Some("no multicast-capable interface is up".into()),
        },
        EventKind::TaskState {
            task: "lan-discovery".into(),
            state: "restarting".into(),
            error: Some("socket closed".into()),
        },
        EventKind::CacheFlushed {
            path: "/var/lib/wgmesh/wg0-peers.json".into(),
            peers: 3,
        },
        EventKind::PeerState {
            public_key: BETA.into(),
            from: "dead".into(),
            to: "active".into(),
        },
        EventKind::PeerRemoved {
            public_key: ALPHA.into(),
        },
        EventKind::Lagged { missed: 17 },
    ];
    kinds
        .into_iter()
        .zip(1..)
        .map(|(kind, seq)| event(seq, kind))
        .collect()
}

/// Starts `wgmeshctl ARGS…` (a watch) against `d`, sends `events` once it follows them, and
/// returns the child, its stdout and the line it printed for each event.
fn follow(
    d: &Daemon,
    args: &[&str],
    events: &[Event],
) -> (Child, BufReader<std::process::ChildStdout>, String) {
    let mut child = ctl_command(&d.socket, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    d.wait_for_followers(1);
    d.emit(events);
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    for _ in events {
        stdout.read_line(&mut seen).unwrap();
    }
    (child, stdout, seen)
}

/// Waits for `child` and returns its transcript, `seen` being what was read of stdout already.
fn finish(
    mut child: Child,
    mut stdout: BufReader<std::process::ChildStdout>,
    mut seen: String,
    socket: &Path,
) -> String {
    stdout.read_to_string(&mut seen).unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    let socket = socket.display().to_string();
    format!(
        "exit {}\n---- stdout\n{seen}---- stderr\n{}",
        status
            .code()
            .map_or_else(|| "by signal".to_owned(), |c| c.to_string()),
        stderr.replace(&socket, "<SOCKET>")
    )
}

fn interrupt(child: &Child) {
    let out = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "kill: {}", text(&out.stderr));
}

#[test]
fn watch_prints_a_line_per_event_and_says_when_the_daemon_goes_away() {
    let d = Daemon::real(plain_status(), plain_peers());
    let (child, stdout, seen) = follow(&d, &["watch"], &events());
    let socket = d.socket.clone();
    d.stop();
    let transcript = finish(child, stdout, seen, &socket);
    assert_snapshot!(transcript);
}

#[test]
fn watch_json_passes_the_lines_through_and_ends_on_ctrl_c() {
    let d = Daemon::real(plain_status(), plain_peers());
    let events = events();
    let (child, stdout, seen) = follow(&d, &["watch", "--json"], &events);
    let want: String = events
        .iter()
        .map(|e| format!("{}\n", serde_json::to_string(e).unwrap()))
        .collect();
    assert_eq!(seen, want);
    interrupt(&child);
    let transcript = finish(child, stdout, seen, &d.socket);
    assert!(transcript.starts_with("exit 0\n"), "{transcript}");
    assert_snapshot!(transcript);
}

#[test]
fn watch_ends_cleanly_on_ctrl_c() {
    let d = Daemon::real(plain_status(), plain_peers());
    let (child, stdout, seen) = follow(&d, &["watch"], &events()[..1]);
    interrupt(&child);
    assert_snapshot!(finish(child, stdout, seen, &d.socket));
}
