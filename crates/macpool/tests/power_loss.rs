//! Power loss: the real `macpool serve` on a filesystem that forgets every write not yet synced
//! (`macpool-powercut`, FUSE), under concurrent allocations; the power is cut at random moments,
//! over many cycles. After each restart: every acknowledged lease is there, no MAC is leased
//! twice, the store opens. Then the disk's syncs start failing: the store stops acknowledging
//! (503), nothing after the failure is reported durable, and a restart recovers.
//!
//! `cargo test -p macpool --test power_loss` runs a few cycles; the long form is
//! `MACPOOL_POWERCUT_CYCLES=200 cargo test --release -p macpool --test power_loss -- --nocapture`
//! (results in BENCHMARKS.md). `MACPOOL_POWERCUT_SEED` replays a run.

#![cfg(target_os = "linux")]

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Server, TOKEN};
use macpool_powercut::{Disk, Mount};
use serde_json::{Value, json};

const CLIENTS: usize = 8;

/// xorshift64*: enough randomness for when to cut, reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// One answer a client got: when the request left and when its answer came, its status, and
/// the MAC if it was granted.
#[derive(Debug)]
struct Answer {
    sent: Instant,
    received: Instant,
    status: u16,
    vm: String,
    mac: Option<String>,
}

/// `CLIENTS` clients allocating new leases until `stop` (or, unless `persist`, their first
/// failure): every answer received.
async fn load(url: &str, tag: &str, stop: Arc<AtomicBool>, persist: bool) -> Vec<Answer> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let answers = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (http, url, tag, stop, answers) = (
            http.clone(),
            url.to_string(),
            tag.to_string(),
            stop.clone(),
            answers.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let vm = format!("{tag}-{c}-{i}");
                let sent = Instant::now();
                let res = http
                    .post(format!("{url}/api/v1/leases"))
                    .bearer_auth(TOKEN)
                    .json(&json!({"pool": "p", "vm_id": vm}))
                    .send()
                    .await;
                let Ok(res) = res else { return };
                let status = res.status().as_u16();
                let Ok(body) = res.json::<Value>().await else {
                    return;
                };
                let mac = (200..300).contains(&status).then(|| {
                    body["allocations"][0]["lease"]["mac"]
                        .as_str()
                        .unwrap()
                        .to_string()
                });
                let failed = mac.is_none();
                answers.lock().unwrap().push(Answer {
                    sent,
                    received: Instant::now(),
                    status,
                    vm,
                    mac,
                });
                if failed && !persist {
                    return;
                }
                if failed {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    Arc::try_unwrap(answers).unwrap().into_inner().unwrap()
}

/// Everything acknowledged so far is stored, and no MAC has two owners.
async fn check(server: &Server, acked: &HashMap<String, String>, when: &str) -> usize {
    let stored = server.lease_owners("p").await;
    let lost: Vec<&String> = acked
        .iter()
        .filter(|(vm, mac)| stored.get(*vm) != Some(mac))
        .map(|(vm, _)| vm)
        .collect();
    assert!(
        lost.is_empty(),
        "{when}: {} acknowledged leases lost or changed, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    let distinct: HashSet<&String> = stored.values().collect();
    assert_eq!(
        distinct.len(),
        stored.len(),
        "{when}: a MAC is leased twice"
    );
    stored.len()
}

/// Records answers: every granted MAC must be new (nothing is ever released here).
fn record(acked: &mut HashMap<String, String>, macs: &mut HashSet<String>, answers: &[Answer]) {
    for a in answers {
        if let Some(mac) = &a.mac {
            assert!(
                macs.insert(mac.clone()),
                "{mac} was acknowledged to two VMs (the second: {})",
                a.vm
            );
            acked.insert(a.vm.clone(), mac.clone());
        }
    }
}

fn mount(disk: &Disk, at: &Path) -> Mount {
    disk.mount(at)
        .unwrap_or_else(|e| panic!("cannot mount the power-cut filesystem at {}: {e} (needs /dev/fuse and root or fusermount3)", at.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_leases_survive_power_cuts_and_failed_syncs() {
    let cycles = env_u64("MACPOOL_POWERCUT_CYCLES").unwrap_or(3);
    let seed = env_u64("MACPOOL_POWERCUT_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1
    });
    eprintln!("power cuts: {cycles} cycles, MACPOOL_POWERCUT_SEED={seed}");
    let mut rng = Rng(seed);
    let mnt = tempfile::tempdir().unwrap();
    let data = mnt.path().join("data");
    let disk = Disk::new();
    let mut acked: HashMap<String, String> = HashMap::new();
    let mut macs: HashSet<String> = HashSet::new();
    let started = Instant::now();

    for cycle in 0..=cycles {
        let m = mount(&disk, mnt.path());
        let mut server = Server::start(&data);
        if cycle == 0 {
            server
                .api(
                    reqwest::Method::POST,
                    "/pools",
                    Some(json!({"name": "p", "ranges": ["00155DC00000-00155DCFFFFF"]})),
                )
                .await;
        }
        let stored = check(&server, &acked, &format!("after power cut {cycle}")).await;
        if cycle == cycles {
            eprintln!(
                "{cycles} power cuts: {} acknowledged allocations, {stored} stored, lost 0, leased twice 0, {:?}",
                acked.len(),
                started.elapsed()
            );
            drop(server);
            drop(m);
            break;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (url, tag, s) = (server.url.clone(), format!("c{cycle}"), stop.clone());
        let running = tokio::spawn(async move { load(&url, &tag, s, false).await });
        tokio::time::sleep(Duration::from_millis(100 + rng.below(1400))).await;
        // The power cut: the process dies with the machine, the disk keeps only what was synced.
        server.kill9();
        stop.store(true, Ordering::SeqCst);
        let answers = running.await.unwrap();
        record(&mut acked, &mut macs, &answers);
        drop(m);
        disk.cut_power();
    }
    assert!(
        !acked.is_empty(),
        "no allocation acknowledged in {cycles} cycles"
    );

    // A failing disk: from one moment on, every sync fails.
    let m = mount(&disk, mnt.path());
    let mut server = Server::start(&data);
    let stop = Arc::new(AtomicBool::new(false));
    let (url, s) = (server.url.clone(), stop.clone());
    let running = tokio::spawn(async move { load(&url, "eio", s, true).await });
    tokio::time::sleep(Duration::from_millis(200 + rng.below(300))).await;
    let failing_since = Instant::now();
    disk.fail_syncs(true);
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::SeqCst);
    let answers = running.await.unwrap();
    // Once a refusal has come back, the store is in its failed state: a request sent after that
    // must be refused. (Requests sent before it, on other connections, may still reach the
    // server first and sit in a batch synced before the failure.)
    let first_refusal = answers
        .iter()
        .filter(|a| a.status == 503)
        .map(|a| a.received)
        .min()
        .expect("no request was refused with 503 after the syncs began to fail");
    let refusals = answers.iter().filter(|a| a.status == 503).count();
    let late: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.mac.is_some() && a.sent > first_refusal)
        .collect();
    assert!(
        late.is_empty(),
        "{} allocations were acknowledged after the store refused its first (e.g. {})",
        late.len(),
        late[0].vm
    );
    assert!(
        answers.iter().all(|a| a.mac.is_some() || a.status == 503),
        "an answer other than success or 503: {:?}",
        answers.iter().find(|a| a.mac.is_none()).map(|a| a.status)
    );
    let acked_after_failure = answers
        .iter()
        .filter(|a| a.mac.is_some() && a.sent > failing_since)
        .count();
    record(&mut acked, &mut macs, &answers);
    assert!(disk.stats().failed_syncs > 0);
    server.kill9();
    drop(m);
    disk.cut_power();
    disk.fail_syncs(false);

    // Restart on the repaired disk: everything acknowledged (also just before the failure) is
    // there, and the store works again.
    let _m = mount(&disk, mnt.path());
    let server = Server::start(&data);
    check(&server, &acked, "after the failed syncs").await;
    server
        .api(
            reqwest::Method::POST,
            "/leases",
            Some(json!({"pool": "p", "vm_id": "after-eio"})),
        )
        .await;
    eprintln!(
        "failing syncs: {refusals} requests refused with 503, {acked_after_failure} acknowledged \
         after the failure began (all durable), none after the first refusal; restart recovered"
    );
}
