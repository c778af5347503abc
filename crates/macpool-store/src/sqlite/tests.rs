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
