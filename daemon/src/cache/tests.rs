//! The cache shell against a real directory: restore into a store, saves, the task's timer.

use std::time::{Instant, SystemTime};

use ipnet::{Ipv4Net, Ipv6Net};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::engine::reconcile::MeshNetworks;
use crate::keys::PublicKey;
use crate::peers::{CACHE_GRACE, Liveness, PeerUpdate};

fn key(n: u8) -> PublicKey {
    PublicKey([n; 32])
}

fn ctx() -> RestoreContext {
    RestoreContext {
        own_key: key(1),
        mesh: MeshNetworks {
            v4: "10.42.0.0/16".parse::<Ipv4Net>().unwrap(),
            v6: "fd00:1:2:3::/64".parse::<Ipv6Net>().unwrap(),
        },
    }
}

fn entry(n: u8, age_s: i64) -> CacheEntry {
    CacheEntry {
        wg_pubkey: key(n).to_string(),
        mesh_ip: format!("10.42.0.{n}"),
        endpoint: format!("192.168.1.{n}:51820"),
        last_seen: unix_seconds(SystemTime::now()) - age_s,
        ..CacheEntry::default()
    }
}

fn write_file(path: &Path, peers: Vec<CacheEntry>) {
    save(path, peers, SystemTime::now()).unwrap();
}

#[tokio::test]
async fn restore_puts_good_entries_on_the_device_as_cached_and_counts_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wg0-peers.json");
    write_file(
        &path,
        vec![
            entry(2, 60),
            entry(3, 3 * 3600), // dead by `last_seen` long ago; restored all the same
            entry(4, 25 * 3600),
            entry(1, 0), // this node
            CacheEntry {
                mesh_ip: "10.9.0.5".into(),
                ..entry(5, 0)
            },
            entry(2, 30), // listed twice
        ],
    );
    let store = PeerStore::default();
    let cache = PeerCache::new(path);
    let report = cache.restore(&store, &ctx()).await;
    assert_eq!(report.restored, 2);
    assert_eq!(
        report.skipped,
        BTreeMap::from([
            ("duplicate", 1),
            ("other_mesh", 1),
            ("own_key", 1),
            ("too_old", 1)
        ])
    );
    let now = Instant::now();
    let on_device: Vec<PublicKey> = store
        .for_device(now)
        .into_iter()
        .map(|p| p.public_key)
        .collect();
    assert_eq!(on_device, [key(2), key(3)]);
    assert!(
        store.active(now).is_empty(),
        "nothing live vouched for them"
    );
    for p in store.list() {
        assert_eq!(p.liveness(now), Liveness::Cached);
        assert_eq!(p.discovered_via, [Method::Cache]);
        assert_eq!(p.endpoint_method, Some(Method::Cache));
    }
    // Restored peers outlive the cleanup that would drop a peer that old.
    assert!(store.cleanup_stale(now).is_empty());
    assert_eq!(
        store.cleanup_stale(now + CACHE_GRACE).len(),
        1,
        "3 h old one"
    );
}

#[tokio::test]
async fn a_corrupt_or_unreadable_cache_is_ignored_and_replaced_by_the_next_save() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wg0-peers.json");
    for bytes in [&b"{\"peers\": [{\"wg_pub"[..], b"\x00\xff garbage"] {
        std::fs::write(&path, bytes).unwrap();
        let store = PeerStore::default();
        let cache = PeerCache::new(path.clone());
        assert_eq!(cache.restore(&store, &ctx()).await, Restored::default());
        assert_eq!(store.count(), 0);
        store.update(
            PeerUpdate {
                mesh_ip: Some("10.42.0.7".parse().unwrap()),
                ..PeerUpdate::new(key(7))
            },
            Method::Lan,
            Instant::now(),
        );
        assert_eq!(cache.save(&store).await.unwrap(), 1);
        let file = load(&path).unwrap().unwrap();
        assert_eq!(file.peers.len(), 1);
        assert_eq!(file.peers[0].wg_pubkey, key(7).to_string());
    }
    // A symlink at the cache's name is not followed on read.
    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink(dir.path().join("elsewhere"), &path).unwrap();
    let store = PeerStore::default();
    let cache = PeerCache::new(path.clone());
    assert_eq!(cache.restore(&store, &ctx()).await, Restored::default());
}

#[tokio::test]
async fn saves_keep_peers_the_store_forgot_and_never_refresh_cached_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wg0-peers.json");
    write_file(&path, vec![entry(2, 600), entry(3, 120)]);
    let store = PeerStore::default();
    let cache = PeerCache::new(path.clone());
    cache.restore(&store, &ctx()).await;
    // A live source confirms 3; 2 is forgotten (e.g. silent and swept after its grace).
    store.update(PeerUpdate::new(key(3)), Method::Lan, Instant::now());
    assert!(store.remove(&key(2)));
    assert_eq!(cache.save(&store).await.unwrap(), 2);
    let file = load(&path).unwrap().unwrap();
    let by_key: BTreeMap<String, i64> = file
        .peers
        .iter()
        .map(|e| (e.wg_pubkey.clone(), e.last_seen))
        .collect();
    let now = unix_seconds(SystemTime::now());
    assert_eq!(
        by_key[&key(2).to_string()],
        entry(2, 600).last_seen,
        "forgotten peer kept with its last_seen"
    );
    assert!(
        now - by_key[&key(3).to_string()] <= 1,
        "confirmed peer: seen now"
    );
}

#[tokio::test(start_paused = true)]
async fn the_task_saves_every_five_minutes_not_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wg0-peers.json");
    let cache = Arc::new(PeerCache::new(path.clone()));
    let store = Arc::new(PeerStore::default());
    let cancel = CancellationToken::new();
    let task = tokio::spawn(cache.clone().run(
        store.clone(),
        TaskContext {
            cancel: cancel.clone(),
        },
    ));
    tokio::time::sleep(SAVE_INTERVAL - Duration::from_secs(1)).await;
    assert!(!path.exists(), "no save before the first interval");
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The blocking write runs outside the paused clock: wait for it in real time.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() && Instant::now() < deadline {
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(load(&path).unwrap().is_some(), "saved after five minutes");
    cancel.cancel();
    task.await.unwrap().unwrap();
}
