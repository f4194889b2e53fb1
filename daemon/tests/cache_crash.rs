//! Killing a process at any moment while it rewrites the peer cache never leaves an unreadable
//! cache. The test re-executes this test binary as a child that saves the cache in a tight loop,
//! alternating between a small and a large peer list (so every save really replaces the file and
//! the writes take different times), SIGKILLs it after a varying delay, and checks that the file
//! still loads and holds one of the two lists, whole.

#![cfg(feature = "runtime")]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use wgmeshd::cache::{CacheEntry, load, save};

const CHILD_ENV: &str = "WGMESH_TEST_CACHE_CRASH_CHILD_DIR";
const SMALL: usize = 3;
const LARGE: usize = 1000;

fn entries(n: usize) -> Vec<CacheEntry> {
    (0..n)
        .map(|i| CacheEntry {
            wg_pubkey: format!("{i:043}="),
            hostname: format!("host-{i}"),
            mesh_ip: format!("10.42.{}.{}", i / 250, i % 250 + 1),
            endpoint: format!("192.168.{}.{}:51820", i / 250, i % 250 + 1),
            routable_networks: vec![format!("172.16.{}.0/24", i % 256)],
            last_seen: 1_700_000_000 + i as i64,
            ..CacheEntry::default()
        })
        .collect()
}

fn cache_file(dir: &Path) -> std::path::PathBuf {
    dir.join("wgcrash0-peers.json")
}

/// Child side: rewrite the cache until killed. Ignored in normal runs; the parent starts it with
/// `--ignored --exact`.
#[test]
#[ignore = "helper process of cache_survives_sigkill_during_writes"]
fn child_cache_writer_loop() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let path = cache_file(Path::new(&dir));
    let lists = [entries(SMALL), entries(LARGE)];
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut i = 0usize;
    while Instant::now() < deadline {
        save(&path, lists[i % 2].clone(), SystemTime::now()).unwrap();
        i += 1;
    }
}

#[test]
fn cache_survives_sigkill_during_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = cache_file(dir.path());
    save(&path, entries(SMALL), SystemTime::now()).unwrap();
    let (small, large) = (entries(SMALL), entries(LARGE));
    let exe = std::env::current_exe().unwrap();
    let mut seen = std::collections::BTreeSet::new();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id());
    for round in 0..60 {
        let mut child = Command::new(&exe)
            .args([
                "child_cache_writer_loop",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // xorshift: delays from 2 to 41 ms so kills land at different points of the write cycle
        // (create temp, write, fsync, rename, fsync dir).
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(2 + seed % 40));
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
        assert_eq!(rc, 0, "kill failed in round {round}");
        child.wait().unwrap();

        let file = match load(&path) {
            Ok(Some(file)) => file,
            Ok(None) => panic!("round {round}: the cache vanished"),
            Err(e) => panic!("round {round}: the cache does not load after a crash: {e}"),
        };
        assert!(
            file.peers == small || file.peers == large,
            "round {round}: a mix of two saves ({} peers)",
            file.peers.len()
        );
        seen.insert(file.peers.len());
    }
    // The children really were rewriting the file: both lists were observed.
    assert_eq!(
        seen,
        [SMALL, LARGE].into(),
        "children never rewrote the file"
    );
    // Temporary files of killed writes are the only leftovers, and only ours.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            name == "wgcrash0-peers.json" || name.starts_with(".wgcrash0-peers.json."),
            "unexpected file {name}"
        );
    }
}
