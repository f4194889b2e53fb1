//! Smoke tests of the network lab itself (`wgmesh_tests::lab`): topologies, reachability,
//! link cut/heal, private `/run/wireguard`, process handling and cleanup (also after a panic).
//! They need root; without it they are skipped, except under `CI=true` where they fail.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use wgmesh_tests::lab::{self, Lab, NatKind, list_namespaces, wait_until};

/// Root and the tools these tests use; `false` = skip.
fn ready() -> bool {
    if !lab::require_root() {
        return false;
    }
    lab::require_tool("ping", "iputils-ping");
    true
}

fn ping(lab: &Lab, from: &str, to: Ipv4Addr) -> bool {
    lab.host(from)
        .ping(to)
        .unwrap_or_else(|e| panic!("ping from {from} to {to}: {e:#}"))
}

fn namespaces_with(prefix: &str) -> Vec<String> {
    list_namespaces()
        .expect("ip netns list")
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect()
}

fn assert_gone(prefix: &str, dir: &std::path::Path) {
    assert_eq!(
        namespaces_with(prefix),
        Vec::<String>::new(),
        "namespaces left behind"
    );
    assert!(!dir.exists(), "lab directory {dir:?} left behind");
}

fn pid_gone(pid: i32) -> bool {
    // Gone, or a zombie waiting for its (non-test) parent to reap it.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

#[test]
fn one_lan_hosts_reach_each_other() {
    if !ready() {
        return;
    }
    let t = Instant::now();
    let lab = Lab::one_lan("one_lan", &["a", "b", "c"]).expect("build lab");
    eprintln!("one LAN with 3 hosts built in {:?}", t.elapsed());
    for (i, h) in lab.hosts().iter().enumerate() {
        assert_eq!(h.ip(), Ipv4Addr::new(192, 168, 101, i as u8 + 1));
        assert_eq!(h.interfaces().len(), 1);
        assert!(h.state_dir().is_dir() && h.run_dir().is_dir());
        assert!(h.socket_path().starts_with(lab.dir()));
        assert!(h.ns().starts_with(lab.prefix()));
    }
    for from in ["a", "b", "c"] {
        for to in ["a", "b", "c"] {
            if from != to {
                let addr = lab.host(to).ip();
                assert!(ping(&lab, from, addr), "{from} cannot ping {to} ({addr})");
            }
        }
    }
    // Nothing in the root namespace: no lab address there.
    let root = std::process::Command::new("ip")
        .args(["-o", "addr", "show"])
        .output()
        .expect("ip addr show");
    assert!(!String::from_utf8_lossy(&root.stdout).contains("192.168.101."));
    eprintln!("one LAN test done in {:?}", t.elapsed());
}

#[test]
fn two_lans_are_joined_only_by_the_middle_host() {
    if !ready() {
        return;
    }
    let t = Instant::now();
    let lab = Lab::two_lans("two_lans", &["a"], "b", &["c"]).expect("build lab");
    let (a, b, c) = (lab.host("a"), lab.host("b"), lab.host("c"));
    let b1 = b.ip_on(1).expect("b on LAN 1");
    let b2 = b.ip_on(2).expect("b on LAN 2");
    assert_eq!(b.interfaces().len(), 2);
    assert_eq!(b.ip(), b1);
    assert_eq!(a.ip_on(2), None);
    assert!(ping(&lab, "a", b1), "a cannot ping b on LAN 1");
    assert!(ping(&lab, "c", b2), "c cannot ping b on LAN 2");
    assert!(!ping(&lab, "a", c.ip()), "a reaches c directly");
    assert!(!ping(&lab, "c", a.ip()), "c reaches a directly");
    assert!(!ping(&lab, "a", b2), "a reaches b's LAN 2 address");
    let fwd = b
        .exec_ok("cat", &["/proc/sys/net/ipv4/ip_forward"])
        .expect("read ip_forward");
    assert_eq!(fwd.trim(), "0", "the joining host forwards");
    eprintln!("two LANs test done in {:?}", t.elapsed());
}

#[test]
fn nat_hosts_reach_the_public_lan_only_through_their_router() {
    if !ready() {
        return;
    }
    let t = Instant::now();
    let lab = Lab::builder("nat")
        .public_lan(&["pub"])
        .nat_host("a", NatKind::Cone)
        .nat_host("b", NatKind::Symmetric)
        .build()
        .expect("build lab");
    eprintln!(
        "public LAN with 1 host and 2 NAT hosts built in {:?}",
        t.elapsed()
    );
    let (public, a, b) = (lab.host("pub"), lab.host("a"), lab.host("b"));
    // Numbering: the builder's hosts first, then router and host per NAT host.
    let addr = |s: &str| s.parse::<Ipv4Addr>().unwrap();
    assert_eq!(public.ip(), addr("203.0.113.1"));
    assert_eq!(lab.nat_router("a").ip(), addr("203.0.113.2"));
    assert_eq!(a.ip(), addr("192.168.102.3"));
    assert_eq!(lab.nat_router("b").ip(), addr("203.0.113.4"));
    assert_eq!(b.ip(), addr("192.168.103.5"));
    assert_eq!(
        a.interfaces().len(),
        1,
        "a NAT host is on its private LAN only"
    );
    assert_eq!(lab.nat_kind("b"), Some(NatKind::Symmetric));
    assert_eq!(lab.nat_kind("pub"), None);
    assert!(
        ping(&lab, "a", public.ip()),
        "a cannot reach the public LAN"
    );
    assert!(
        ping(&lab, "b", public.ip()),
        "b cannot reach the public LAN"
    );
    assert!(
        !ping(&lab, "pub", a.ip()),
        "the public LAN reaches a's private address"
    );
    assert!(!ping(&lab, "a", b.ip()), "a reaches b's private address");
    let ruleset = lab
        .nat_router("b")
        .exec_ok("nft", &["list", "ruleset"])
        .expect("nft list ruleset");
    assert!(ruleset.contains("masquerade fully-random"), "{ruleset}");
}

#[test]
fn cut_link_isolates_and_heal_link_restores() {
    if !ready() {
        return;
    }
    let t = Instant::now();
    let lab = Lab::one_lan("cut_heal", &["a", "b"]).expect("build lab");
    let (a, b) = (lab.host("a"), lab.host("b"));
    assert!(ping(&lab, "a", b.ip()), "a cannot ping b before the cut");
    b.cut_link().expect("cut");
    assert!(!ping(&lab, "a", b.ip()), "a still reaches b after the cut");
    assert!(!ping(&lab, "b", a.ip()), "b still reaches a after the cut");
    b.heal_link().expect("heal");
    assert!(
        a.wait_reachable(b.ip(), Duration::from_secs(3))
            .expect("ping"),
        "a cannot ping b after the heal"
    );
    eprintln!("cut/heal test done in {:?}", t.elapsed());
}

#[test]
fn drop_removes_namespaces_and_dirs() {
    if !ready() {
        return;
    }
    let lab = Lab::one_lan("drop", &["a", "b"]).expect("build lab");
    let prefix = format!("{}-", lab.prefix());
    let dir = lab.dir().to_owned();
    assert_eq!(
        namespaces_with(&prefix).len(),
        3,
        "2 hosts + bridge namespace"
    );
    drop(lab);
    assert_gone(&prefix, &dir);
}

#[test]
fn drop_cleans_up_after_a_panic() {
    if !ready() {
        return;
    }
    let seen = std::sync::Mutex::new(None::<(String, PathBuf, i32)>);
    let result = std::panic::catch_unwind(|| {
        let lab = Lab::one_lan("panic", &["a"]).expect("build lab");
        let p = lab
            .host("a")
            .spawn("sleep", &["30"], &[])
            .expect("spawn sleep");
        *seen.lock().unwrap() = Some((
            format!("{}-", lab.prefix()),
            lab.dir().to_owned(),
            p.pid() as i32,
        ));
        panic!("deliberate panic inside a lab (this message is expected)");
    });
    assert!(result.is_err(), "the closure should have panicked");
    let (prefix, dir, pid) = seen.lock().unwrap().take().expect("lab was built");
    assert_gone(&prefix, &dir);
    assert!(pid_gone(pid), "the spawned sleep survived the panic");
}

#[test]
fn parallel_labs_with_the_same_host_names_do_not_collide() {
    if !ready() {
        return;
    }
    let threads: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(|| {
                let lab = Lab::one_lan("parallel", &["a", "b"]).expect("build lab");
                let b = lab.host("b").ip();
                assert!(ping(&lab, "a", b), "a cannot ping b");
                lab.prefix().to_owned()
            })
        })
        .collect();
    let prefixes: Vec<String> = threads
        .into_iter()
        .map(|t| t.join().expect("lab thread"))
        .collect();
    assert_ne!(prefixes[0], prefixes[1]);
}

#[test]
fn spawn_gets_the_hosts_own_run_wireguard_and_is_stopped_on_drop() {
    if !ready() {
        return;
    }
    let t = Instant::now();
    let lab = Lab::one_lan("spawn", &["a", "b"]).expect("build lab");
    let (a, b) = (lab.host("a"), lab.host("b"));

    // A private /run/wireguard per host; drop kills the sleep, a grandchild of the pid we hold.
    let p = a
        .spawn(
            "sh",
            &["-c", "touch /run/wireguard/marker; echo started; sleep 30"],
            &[],
        )
        .expect("spawn in a");
    let marker = a.run_dir().join("marker");
    assert!(
        wait_until(Duration::from_secs(3), || marker.exists()),
        "no marker in a's run dir\n{}",
        p.logs()
    );
    assert!(!b.run_dir().join("marker").exists(), "marker leaked into b");
    assert!(
        !std::path::Path::new(lab::RUN_WIREGUARD)
            .join("marker")
            .exists(),
        "marker leaked into the root /run/wireguard"
    );
    assert!(wait_until(Duration::from_secs(3), || p
        .stdout()
        .contains("started")));

    // The recorded pid is the program's own (pure exec chain), with the given environment.
    let s = b
        .spawn(
            "sh",
            &["-c", "echo \"$LAB_VAR\" >&2; exec sleep 30"],
            &[("LAB_VAR", "hello")],
        )
        .expect("spawn in b");
    let comm = || std::fs::read_to_string(format!("/proc/{}/comm", s.pid())).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(3), || comm().trim() == "sleep"),
        "pid {} is `{}`, not sleep",
        s.pid(),
        comm().trim()
    );
    assert!(s.stderr().contains("hello"), "env not passed: {}", s.logs());
    assert!(s.is_running());

    // Piped stdin/stdout, line by line.
    let mut echo = b
        .spawn_piped("sh", &["-c", "while read l; do echo \"got $l\"; done"], &[])
        .expect("spawn piped");
    let line = echo.request("hi", Duration::from_secs(3)).expect("reply");
    assert_eq!(line, "got hi");
    echo.close_stdin();
    let st = echo
        .process()
        .wait_timeout(Duration::from_secs(3))
        .expect("wait");
    assert!(
        st.is_some_and(|s| s.success()),
        "echo loop did not exit on EOF"
    );

    let pids_in_a: Vec<i32> = {
        let out = std::process::Command::new("ip")
            .args(["netns", "pids", a.ns()])
            .output()
            .expect("ip netns pids");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    };
    assert!(
        pids_in_a.len() >= 2,
        "expected sh and sleep in a: {pids_in_a:?}"
    );
    let sleep_pid = s.pid() as i32;
    let t_drop = Instant::now();
    drop(lab);
    eprintln!("drop with running processes took {:?}", t_drop.elapsed());
    for pid in pids_in_a.into_iter().chain([sleep_pid]) {
        assert!(
            wait_until(Duration::from_secs(2), || pid_gone(pid)),
            "pid {pid} survived the lab"
        );
    }
    eprintln!("spawn test done in {:?}", t.elapsed());
}

#[test]
fn stale_namespaces_of_dead_processes_are_swept() {
    if !ready() {
        return;
    }
    // A PID above the largest possible pid_max never belongs to a live process.
    let stale = "wgl-4194305-0-stale-a";
    let st = std::process::Command::new("ip")
        .args(["netns", "add", stale])
        .status()
        .expect("ip netns add");
    // (It may already exist from an earlier run, or be swept by a parallel test's first lab.)
    let _ = st;
    lab::sweep_stale().expect("sweep");
    assert!(namespaces_with(stale).is_empty(), "{stale} not swept");
}
