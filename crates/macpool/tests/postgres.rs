//! The real binary on PostgreSQL: replicas sharing one database, `store migrate`, and the
//! start-up errors. Tests that need a server are ignored, by name and with the reason, when
//! `MACPOOL_TEST_DATABASE_URL` is not set (see build.rs).

mod common;

use std::process::Command;

use common::{Server, exe};
use reqwest::Method;
use serde_json::json;

async fn scratch(name: &str) -> String {
    let base = std::env::var("MACPOOL_TEST_DATABASE_URL")
        .expect("MACPOOL_TEST_DATABASE_URL was set when this test was built");
    macpool_store::postgres::scratch_database(&base, &format!("macpool_e2e_{name}"))
        .await
        .unwrap()
}

#[tokio::test]
#[cfg_attr(not(postgres_tests), ignore = "MACPOOL_TEST_DATABASE_URL is not set")]
async fn two_replicas_serve_one_store() {
    let db = scratch("two_replicas").await;
    let mut a = Server::start_on(&db);
    let mut b = Server::start_on(&db);
    a.api(
        Method::POST,
        "/pools",
        Some(json!({"name": "rds", "ranges": ["00155D300000-00155D3000FF"], "order": "lowest"})),
    )
    .await;
    let on_a = a
        .api(
            Method::POST,
            "/leases",
            Some(json!({"pool": "rds", "vm_id": "vm-a"})),
        )
        .await;
    let on_b = b
        .api(
            Method::POST,
            "/leases",
            Some(json!({"pool": "rds", "vm_id": "vm-b"})),
        )
        .await;
    assert_eq!(on_a["allocations"][0]["lease"]["mac"], "00-15-5D-30-00-00");
    assert_eq!(
        on_b["allocations"][0]["lease"]["mac"], "00-15-5D-30-00-01",
        "b saw a's lease"
    );
    // a release on b is history on a
    b.api(
        Method::POST,
        "/leases/release",
        Some(json!({"vm_id": "vm-a"})),
    )
    .await;
    let history = a.api(Method::GET, "/history?vm=vm-a", None).await;
    let actions: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["released", "allocated"]);
    // killing one replica leaves the other fully working
    a.kill9();
    let on_b = b
        .api(
            Method::POST,
            "/leases",
            Some(json!({"pool": "rds", "vm_id": "vm-c"})),
        )
        .await;
    assert_eq!(
        on_b["allocations"][0]["lease"]["mac"], "00-15-5D-30-00-02",
        "the released MAC cools down"
    );
    b.terminate();
}

#[tokio::test]
#[cfg_attr(not(postgres_tests), ignore = "MACPOOL_TEST_DATABASE_URL is not set")]
async fn store_migrate_copies_everything_and_refuses_a_full_target() {
    let dir = tempfile::tempdir().unwrap();
    let mut old = Server::start(dir.path());
    old.api(
        Method::POST,
        "/pools",
        Some(json!({"name": "m", "ranges": ["00155D310000-00155D3100FF"], "order": "lowest"})),
    )
    .await;
    for vm in ["v1", "v2", "v3"] {
        old.api(
            Method::POST,
            "/leases",
            Some(json!({"pool": "m", "vm_id": vm})),
        )
        .await;
    }
    old.api(
        Method::POST,
        "/leases/release",
        Some(json!({"vm_id": "v2"})),
    )
    .await;
    let leases = old.api(Method::GET, "/leases", None).await;
    // while the server runs, the embedded store refuses a second opener
    let busy = Command::new(exe())
        .args(["store", "migrate", "--from"])
        .arg(format!("sqlite:{}", dir.path().display()))
        .args(["--to", "postgres://postgres@127.0.0.1:1/never"])
        .output()
        .unwrap();
    assert_eq!(busy.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&busy.stderr).contains("in use by another macpool"));
    old.terminate();

    let db = scratch("migrate").await;
    let migrate = || {
        Command::new(exe())
            .args(["store", "migrate", "--json", "--from"])
            .arg(format!("sqlite:{}", dir.path().display()))
            .args(["--to", &db])
            .output()
            .unwrap()
    };
    let out = migrate();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["verified"], true);
    assert_eq!(report["counts"]["leases"]["target"], 2);
    assert_eq!(report["counts"]["cooling"]["target"], 1);
    assert_eq!(report["counts"]["tokens"]["target"], 1);
    // five rows of leases and pools, and the bootstrap token's creation
    assert_eq!(report["counts"]["history"]["target"], 6, "{report}");

    // the same state, served from PostgreSQL, with the same token
    let mut new = Server::start_on(&db);
    assert_eq!(new.api(Method::GET, "/leases", None).await, leases);
    let pool = new.api(Method::GET, "/pools/m", None).await;
    assert_eq!(pool["cooling"], 1, "{pool}");
    new.terminate();

    // a second migration into the now full database is refused and changes nothing
    let again = migrate();
    assert_eq!(again.status.code(), Some(3));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("already holds macpool data"), "{err}");
}

#[test]
fn store_migrate_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let run = |from: &str, to: &str| {
        Command::new(exe())
            .args(["store", "migrate", "--from", from, "--to", to])
            .output()
            .unwrap()
    };
    let empty = run(
        &format!("sqlite:{}", dir.path().display()),
        "postgres://postgres@127.0.0.1:1/x",
    );
    assert_eq!(empty.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&empty.stderr).contains("holds no macpool store"));
    let to_sqlite = run("sqlite:/tmp/a", "sqlite:/tmp/b");
    assert_eq!(to_sqlite.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&to_sqlite.stderr).contains("--to must be a PostgreSQL"));
}

#[test]
fn serve_refuses_an_unreachable_database_with_exit_3() {
    let out = Command::new(exe())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database",
            "postgres://macpool:hunter2@127.0.0.1:1/macpool",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect to database"), "{err}");
    assert!(err.contains("Connection refused"), "{err}");
    assert!(!err.contains("hunter2"), "the password leaked: {err}");
    let bad = Command::new(exe())
        .args(["serve", "--database", "mysql://x/y"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}
