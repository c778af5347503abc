//! The embedded store guards its directory: one `macpool serve` per store even without
//! `macpool.lock`, and a store that existed is never silently replaced by an empty one.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Server, TOKEN, exe};
use serde_json::json;

async fn allocate(s: &Server, vm: &str) -> String {
    let body = s
        .api(
            reqwest::Method::POST,
            "/leases",
            Some(json!({"pool": "p", "vm_id": vm})),
        )
        .await;
    body["allocations"][0]["lease"]["mac"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `macpool serve` on `dir`, expected to refuse: its exit code and stderr.
fn refused_serve(dir: &Path) -> (i32, String) {
    let out = assert_cmd::Command::new(exe())
        .args(["serve", "--listen", "127.0.0.1:0", "--database"])
        .arg(format!("sqlite:{}", dir.display()))
        .env("MACPOOL_BOOTSTRAP_TOKEN", TOKEN)
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (
        out.status.code().expect("serve was killed: it started"),
        stderr,
    )
}

#[tokio::test]
async fn a_second_serve_is_refused_even_without_the_lock_file() {
    let dir = tempfile::tempdir().unwrap();
    let first = Server::start(dir.path());
    first
        .api(
            reqwest::Method::POST,
            "/pools",
            Some(json!({"name": "p", "ranges": ["00155D000000-00155D0000FF"]})),
        )
        .await;
    let mac = allocate(&first, "vm1").await;
    std::fs::remove_file(dir.path().join("macpool.lock")).unwrap();
    let (code, stderr) = refused_serve(dir.path());
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("in use by another macpool process"),
        "{stderr}"
    );
    assert!(stderr.contains("holds a lock on"), "{stderr}");
    assert!(
        stderr.contains(&dir.path().display().to_string()),
        "{stderr}"
    );
    // The first one is unharmed and keeps its lease.
    assert_eq!(allocate(&first, "vm1").await, mac);
}

#[tokio::test]
async fn an_emptied_database_stops_serve() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    server
        .api(
            reqwest::Method::POST,
            "/pools",
            Some(json!({"name": "p", "ranges": ["00155D000000-00155D0000FF"]})),
        )
        .await;
    allocate(&server, "vm1").await;
    assert!(server.terminate().success());
    let db = dir.path().join("macpool.db");
    std::fs::File::create(&db).unwrap();
    let (code, stderr) = refused_serve(dir.path());
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("is empty (0 bytes)"), "{stderr}");
    assert!(stderr.contains("from a backup"), "{stderr}");
    assert_eq!(std::fs::metadata(&db).unwrap().len(), 0);
}
