use super::*;
use crate::conformance;
use macpool_core::authority::Actor;

fn open(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(dir.path()).unwrap()
}

#[tokio::test]
async fn conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    conformance::run_all(|| async { open(&dir) }, true).await;
}

#[tokio::test]
async fn a_second_process_cannot_open_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(&dir);
    let err = SqliteStore::open(dir.path()).err().unwrap();
    assert!(err.contains("in use by another macpool process"), "{err}");
}

#[tokio::test]
async fn a_store_from_a_newer_macpool_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(&dir));
    let conn = Connection::open(dir.path().join("macpool.db")).unwrap();
    conn.pragma_update(None, "user_version", schema::SCHEMA_VERSION + 1)
        .unwrap();
    drop(conn);
    let err = SqliteStore::open(dir.path()).err().unwrap();
    assert!(err.contains("written by a newer macpool"), "{err}");
}

#[tokio::test]
async fn concurrent_mutations_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(&dir));
    conformance::create_pool(&*store, "p", "00155D000000-00155D00FFFF").await;
    let before = store.stats();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.allocate(
                Actor::admin("t"),
                conformance::request("p", &format!("vm{i}")),
            )
            .await
            .unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let after = store.stats();
    assert_eq!(after.mutations - before.mutations, 200);
    assert!(
        after.commits - before.commits < 200,
        "200 concurrent allocations took {} commits: no group commit",
        after.commits - before.commits
    );
}

#[tokio::test]
async fn the_database_itself_is_locked_when_the_lock_file_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(&dir);
    std::fs::remove_file(dir.path().join("macpool.lock")).unwrap();
    let err = SqliteStore::open(dir.path()).err().unwrap();
    assert!(err.contains("in use by another macpool process"), "{err}");
    assert!(err.contains("holds a lock on"), "{err}");
    assert!(err.contains(&dir.path().display().to_string()), "{err}");
}

/// A store with a pool, closed: `macpool.db`, `macpool.lock` and the marker remain.
async fn closed_store_with_a_pool() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    conformance::create_pool(&store, "p", "00155D000000-00155D0000FF").await;
    drop(store);
    dir
}

fn refusal(dir: &tempfile::TempDir) -> String {
    SqliteStore::open(dir.path())
        .err()
        .expect("the store opened")
}

#[tokio::test]
async fn an_emptied_database_is_refused_not_reinitialised() {
    let dir = closed_store_with_a_pool().await;
    let db = dir.path().join("macpool.db");
    File::create(&db).unwrap(); // a stray `>`
    let err = refusal(&dir);
    assert!(err.contains("is empty (0 bytes)"), "{err}");
    assert!(err.contains("macpool.store"), "{err}");
    assert!(err.contains("from a backup"), "{err}");
    assert_eq!(
        std::fs::metadata(&db).unwrap().len(),
        0,
        "the refusal wrote"
    );
    // A store from before the marker existed: its lock file is the sign.
    std::fs::remove_file(dir.path().join("macpool.store")).unwrap();
    let err = refusal(&dir);
    assert!(err.contains("macpool.lock (left by"), "{err}");
    // A deliberate fresh start: remove what the message names.
    for f in ["macpool.db", "macpool.lock"] {
        std::fs::remove_file(dir.path().join(f)).unwrap();
    }
    let store = open(&dir);
    assert!(store.pools().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_missing_database_beside_its_marker_is_refused() {
    let dir = closed_store_with_a_pool().await;
    std::fs::remove_file(dir.path().join("macpool.db")).unwrap();
    let err = refusal(&dir);
    assert!(err.contains("is missing"), "{err}");
    assert!(
        !dir.path().join("macpool.db").exists(),
        "the refusal created it"
    );
}

#[tokio::test]
async fn a_database_that_is_no_database_is_refused() {
    let dir = closed_store_with_a_pool().await;
    std::fs::write(dir.path().join("macpool.db"), vec![0x5a; 4096]).unwrap();
    let err = refusal(&dir);
    assert!(err.contains("not a readable macpool store"), "{err}");
}

#[tokio::test]
async fn a_write_ahead_log_beside_an_empty_database_is_refused() {
    // SQLite would delete this WAL (and everything in it) and start empty.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("macpool.db"), b"").unwrap();
    std::fs::write(dir.path().join("macpool.db-wal"), vec![1u8; 4096]).unwrap();
    let err = refusal(&dir);
    assert!(err.contains("macpool.db-wal (4096 bytes"), "{err}");
    assert_eq!(
        std::fs::metadata(dir.path().join("macpool.db-wal"))
            .unwrap()
            .len(),
        4096
    );
}

#[cfg(unix)]
#[tokio::test]
async fn the_data_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("new/data");
    let store = SqliteStore::open(&dir).unwrap();
    conformance::create_pool(&store, "p", "00155D000000-00155D0000FF").await;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    for f in [
        "macpool.db",
        "macpool.db-wal",
        "macpool.db-shm",
        "macpool.lock",
        "macpool.store",
    ] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
}

/// History reads run on reader connections, which see a commit before its fsync: they stop at
/// the newest row the syncer made durable.
#[tokio::test]
async fn history_reads_stop_at_the_newest_durable_row() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    crate::conformance::create_pool(&store, "p", "00155D0D0000-00155D0D00FF").await;
    let filter = || crate::HistoryFilter {
        limit: 10,
        ..crate::HistoryFilter::default()
    };
    let all = store.history(filter()).await.unwrap();
    assert!(!all.is_empty());
    // As if the newest row were committed but its fsync not yet done.
    store
        .counters
        .durable_history
        .store(all[0].id - 1, Ordering::SeqCst);
    let shown = store.history(filter()).await.unwrap();
    assert_eq!(shown, all[1..]);
}

/// Issue 18: a host's later report is written as its diff. A resend at a new generation that
/// changes nothing writes the header row and the history row only, and a report that changes
/// one VM of a thousand writes that VM's rows; the rows read back as the authority's inventory.
#[test]
fn a_report_writes_only_what_changed() {
    use macpool_core::authority::{Authority, Change, Context};
    use macpool_core::{Mac, Timestamp};
    let mut conn = Connection::open_in_memory().unwrap();
    schema::migrate(&mut conn).unwrap();
    let mut a = Authority::new();
    let mut written = |a: &mut Authority, inv, generation| -> u64 {
        let ctx = Context {
            now: Timestamp(1_700_000_000_000 + generation * 1000),
            actor: Actor::admin("t"),
        };
        let (_, changes) = a.apply_inventory(&ctx, inv, generation).unwrap();
        let before = conn.total_changes();
        let tx = conn.transaction().unwrap();
        for c in &changes {
            rows::apply_change(&tx, c).unwrap();
        }
        tx.commit().unwrap();
        let history = changes
            .iter()
            .filter(|c| matches!(c, Change::History(_)))
            .count() as u64;
        conn.total_changes() - before - history
    };
    let vms = |renamed: Option<usize>| {
        let m = |i: u64, k: u64| Mac::from_u64(0x00155D600000 + i * 4 + k).unwrap();
        let ids: Vec<String> = (0..1000).map(|i| format!("vm-{i}")).collect();
        let list = (0..1000u64)
            .map(|i| {
                let checkpoints = vec![(m(i, 1), "cp-1"), (m(i, 2), "cp-2"), (m(i, 3), "cp-3")];
                (ids[i as usize].as_str(), vec![m(i, 0)], checkpoints)
            })
            .collect();
        let mut inv = conformance::host("diff-h1", list);
        if let Some(i) = renamed {
            inv.vms_mut()[i].name = "renamed".into();
        }
        inv
    };
    let first = written(&mut a, vms(None), 1);
    assert!(first > 5000, "the first report writes every row: {first}");
    let resend = written(&mut a, vms(None), 2);
    assert_eq!(
        resend, 1,
        "a resend that changes nothing writes the header row only"
    );
    let one = written(&mut a, vms(Some(7)), 3);
    assert_eq!(
        one, 11,
        "one VM renamed: the header, and its row and 4 adapters replaced"
    );
    let loaded = rows::load(&conn).unwrap();
    assert_eq!(loaded.inventories, vec![a.inventory("diff-h1").unwrap()]);
}
