//! End-to-end: the real binary, a real socket, a real store on disk.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Server, TOKEN};
use serde_json::{Value, json};

async fn create_pool(s: &Server, name: &str, range: &str) {
    let res = s
        .client()
        .post(format!("{}/api/v1/pools", s.url))
        .bearer_auth(TOKEN)
        .json(&json!({"name": name, "ranges": [range]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
}

async fn get(s: &Server, path: &str) -> Value {
    let res = s
        .client()
        .get(format!("{}{path}", s.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "GET {path}: {}", res.status());
    res.json().await.unwrap()
}

/// `clients` tasks allocating `per_client` leases each; returns every acknowledged (vm, mac).
async fn allocate_concurrently(
    url: &str,
    pool: &str,
    clients: usize,
    per_client: usize,
    tag: &str,
) -> Vec<(String, String)> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (http, url, pool, acked, tag) = (
            http.clone(),
            url.to_string(),
            pool.to_string(),
            acked.clone(),
            tag.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            for i in 0..per_client {
                let vm = format!("{tag}-{c}-{i}");
                let res = http
                    .post(format!("{url}/api/v1/leases"))
                    .bearer_auth(TOKEN)
                    .json(&json!({"pool": pool, "vm_id": vm}))
                    .send()
                    .await;
                let Ok(res) = res else { return };
                if !res.status().is_success() {
                    return;
                }
                let Ok(body) = res.json::<Value>().await else {
                    return;
                };
                let mac = body["allocations"][0]["lease"]["mac"]
                    .as_str()
                    .unwrap()
                    .to_string();
                acked.lock().unwrap().push((vm, mac));
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    Arc::try_unwrap(acked).unwrap().into_inner().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_run_loses_no_acknowledged_allocation() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    create_pool(&server, "crash", "00155DC00000-00155DCFFFFF").await;
    let url = server.url.clone();
    let load =
        tokio::spawn(
            async move { allocate_concurrently(&url, "crash", 16, 100_000, "crash").await },
        );
    // Let a few thousand allocations through, then pull the plug.
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let n = get(&server, "/api/v1/pools/crash").await["leased"]
            .as_u64()
            .unwrap();
        if n >= 2000 || started.elapsed() > Duration::from_secs(20) {
            break;
        }
    }
    server.kill9();
    let acked = load.await.unwrap();
    assert!(
        acked.len() >= 1000,
        "only {} allocations before the kill",
        acked.len()
    );

    let server = Server::start(dir.path());
    let stored = server.lease_owners("crash").await;
    for (vm, mac) in &acked {
        assert_eq!(
            stored.get(vm),
            Some(mac),
            "acknowledged lease of {vm} lost or changed after kill -9"
        );
    }
    let distinct: HashSet<&String> = stored.values().collect();
    assert_eq!(
        distinct.len(),
        stored.len(),
        "a MAC is leased twice after restart"
    );
    let pool = get(&server, "/api/v1/pools/crash").await;
    assert_eq!(pool["leased"].as_u64().unwrap(), stored.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_clients_times_a_thousand_get_distinct_macs() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    create_pool(&server, "big", "00155DA00000-00155DA1FFFF").await;
    let acked = allocate_concurrently(&server.url, "big", 64, 1000, "big").await;
    assert_eq!(acked.len(), 64_000);
    let distinct: HashSet<&String> = acked.iter().map(|(_, m)| m).collect();
    assert_eq!(distinct.len(), 64_000, "duplicate MACs handed out");
    let pool = get(&server, "/api/v1/pools/big").await;
    assert_eq!(pool["size"], 131_072);
    assert_eq!(pool["leased"], 64_000);
    assert_eq!(pool["free"], 131_072 - 64_000);
    let avail = get(&server, "/api/v1/pools/big/available?limit=200000").await;
    let listed: u64 = avail["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["count"].as_u64().unwrap())
        .sum();
    assert_eq!(listed, 131_072 - 64_000);
    assert_eq!(avail["free"], 131_072 - 64_000);
    // Every free run is really free: no acknowledged MAC falls inside one.
    let runs: Vec<(u64, u64)> = avail["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (hex(&r["first"]), hex(&r["last"])))
        .collect();
    for (_, mac) in acked.iter().take(2000) {
        let v = u64::from_str_radix(&mac.replace('-', ""), 16).unwrap();
        assert!(
            !runs.iter().any(|(a, b)| *a <= v && v <= *b),
            "{mac} is leased but listed free"
        );
    }
}

fn hex(v: &Value) -> u64 {
    u64::from_str_radix(&v.as_str().unwrap().replace('-', ""), 16).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_cleanly_and_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    create_pool(&server, "t", "00155DB00000-00155DB000FF").await;
    allocate_concurrently(&server.url, "t", 4, 10, "t").await;
    let status = server.terminate();
    assert!(status.success(), "serve exited with {status}");
    let server = Server::start(dir.path());
    assert_eq!(get(&server, "/api/v1/pools/t").await["leased"], 40);
}

/// systemd's LoadCredential (and WinSW configs) hand the first admin token over as a file:
/// `MACPOOL_BOOTSTRAP_TOKEN_FILE` makes it the admin token, trailing newline ignored; a file
/// that cannot be read is a usage error, not a server with a generated token.
#[test]
fn bootstrap_token_file_creates_the_first_admin_token() {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("bootstrap-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let macpool_spawn::Listening {
        mut child,
        url,
        before: seen,
    } = macpool_spawn::spawn(
        Command::new(common::exe())
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(dir.path().join("data"))
            .env_remove("MACPOOL_BOOTSTRAP_TOKEN")
            .env("MACPOOL_BOOTSTRAP_TOKEN_FILE", &token_file),
    )
    .unwrap();
    assert!(
        seen.iter()
            .any(|l| l.contains("from MACPOOL_BOOTSTRAP_TOKEN")),
        "{seen:?}"
    );
    let status = Command::new(common::exe())
        .args(["--server", &url, "--token", TOKEN, "pool", "list"])
        .output()
        .unwrap()
        .status;
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(status.success(), "the file's token is not the admin token");

    let out = Command::new(common::exe())
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path().join("data2"))
        .env_remove("MACPOOL_BOOTSTRAP_TOKEN")
        .env("MACPOOL_BOOTSTRAP_TOKEN_FILE", dir.path().join("missing"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("MACPOOL_BOOTSTRAP_TOKEN_FILE"));
}
