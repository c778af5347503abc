//! `macpool bench allocate`: durable allocations per second through the real HTTP API, with
//! latency percentiles and how many allocations shared each fsync (from the server's metrics).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use macpool_api::dto::{AllocateBody, PoolCreate};
use macpool_client::Client;

use crate::cli::{BenchAllocateArgs, BenchCommand};
use crate::exit::{CmdResult, Failure, OK};
use crate::output::{Output, fields};

pub async fn run(out: Output, token: &Option<String>, cmd: BenchCommand) -> CmdResult {
    let args = match cmd {
        BenchCommand::Allocate(args) => args,
        BenchCommand::Decide(args) => return super::bench_decide::run(out, args).await,
    };
    let (server, _guard) = match &args.target {
        Some(url) => {
            let t = token
                .clone()
                .ok_or_else(|| Failure::usage("--target needs --token (or MACPOOL_TOKEN)"))?;
            (Client::new(url, Some(t))?, None)
        }
        None => {
            let s = SpawnedServer::start(args.data.clone())?;
            (Client::new(&s.url, Some(s.token.clone()))?, Some(s))
        }
    };
    let pool = format!("bench-{}", std::process::id());
    let first = 0x00155D400000u64 + u64::from(std::process::id() % 16) * 0x100000;
    let range = format!("{:012X}-{:012X}", first, first + 0xFFFFF);
    server
        .create_pool(&PoolCreate {
            name: pool.clone(),
            ranges: vec![range],
            ..PoolCreate::default()
        })
        .await?;
    let before = store_counters(&server).await?;
    let report = drive(&server, &pool, &args).await?;
    let after = store_counters(&server).await?;
    let commits = after.0.saturating_sub(before.0);
    let mutations = after.1.saturating_sub(before.1);
    let per_fsync = if commits == 0 {
        0.0
    } else {
        mutations as f64 / commits as f64
    };
    let check = server.available(&pool, Some(0)).await?;
    let total = (args.clients * args.per_client) as u64;
    if out.json {
        out.print_json(&serde_json::json!({
            "clients": args.clients,
            "allocations": report.ok,
            "errors": report.errors,
            "seconds": report.elapsed.as_secs_f64(),
            "allocations_per_second": report.ok as f64 / report.elapsed.as_secs_f64(),
            "latency_ms": {"p50": report.p(50.0), "p90": report.p(90.0), "p99": report.p(99.0), "max": report.p(100.0)},
            "commits": commits,
            "allocations_per_fsync": per_fsync,
            "distinct_macs": report.distinct,
            "pool_free_after": check.free,
            "pool_size": check.size,
        }));
    } else {
        print!(
            "{}",
            fields(&[
                ("clients", args.clients.to_string()),
                (
                    "allocations",
                    format!("{} ok, {} errors (of {total})", report.ok, report.errors)
                ),
                ("elapsed", format!("{:.2} s", report.elapsed.as_secs_f64())),
                (
                    "throughput",
                    format!(
                        "{:.0} allocations/s",
                        report.ok as f64 / report.elapsed.as_secs_f64()
                    )
                ),
                (
                    "latency",
                    format!(
                        "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                        report.p(50.0),
                        report.p(90.0),
                        report.p(99.0),
                        report.p(100.0)
                    )
                ),
                (
                    "commits",
                    format!("{commits} fsyncs, {per_fsync:.1} allocations per fsync")
                ),
                ("distinct MACs", report.distinct.to_string()),
                (
                    "pool after",
                    format!("{} free of {}", check.free, check.size)
                ),
            ])
        );
    }
    if report.errors > 0 || report.distinct != report.ok {
        return Err(Failure::no("the benchmark saw errors or duplicate MACs"));
    }
    Ok(OK)
}

struct Report {
    ok: u64,
    errors: u64,
    distinct: u64,
    elapsed: Duration,
    latencies_us: Vec<u64>,
}

impl Report {
    /// The `q`-th percentile latency in milliseconds.
    fn p(&self, q: f64) -> f64 {
        percentile_ms(&self.latencies_us, q)
    }
}

/// The `q`-th percentile (0..=100) of sorted microsecond samples, in milliseconds.
pub(crate) fn percentile_ms(sorted_us: &[u64], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let idx = ((q / 100.0) * (sorted_us.len() - 1) as f64).round() as usize;
    sorted_us[idx] as f64 / 1000.0
}

/// Runs the clients on their own single-threaded runtime and OS thread, so that the load
/// generator takes as little CPU from the server (which shares this machine) as it can.
async fn drive(server: &Client, pool: &str, args: &BenchAllocateArgs) -> Result<Report, Failure> {
    let (server, pool, clients, per_client) = (
        server.clone(),
        pool.to_string(),
        args.clients,
        args.per_client,
    );
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        let report = rt.map(|rt| rt.block_on(load(server, pool, clients, per_client)));
        let _ = tx.send(report);
    });
    rx.await
        .map_err(|_| Failure::usage("the load generator thread died"))?
        .map_err(|e| Failure::usage(format!("cannot start the load generator: {e}")))
}

async fn load(server: Client, pool: String, clients: usize, per_client: usize) -> Report {
    let server = Arc::new(server);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let server = server.clone();
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_client);
            let mut macs = Vec::with_capacity(per_client);
            let mut errors = 0u64;
            for i in 0..per_client {
                let body = AllocateBody {
                    pool: Some(pool.clone()),
                    vm_id: format!("bench-{c}-{i}"),
                    ..AllocateBody::default()
                };
                let t = Instant::now();
                match server.allocate(&body).await {
                    Ok(r) => {
                        lat.push(t.elapsed().as_micros() as u64);
                        macs.push(r.allocations[0].lease.mac.clone());
                    }
                    Err(_) => errors += 1,
                }
            }
            (lat, macs, errors)
        }));
    }
    let mut latencies_us = Vec::new();
    let mut macs = std::collections::HashSet::new();
    let mut errors = 0;
    let mut ok = 0;
    for t in tasks {
        let Ok((lat, m, e)) = t.await else {
            errors += per_client as u64;
            continue;
        };
        ok += m.len() as u64;
        latencies_us.extend(lat);
        macs.extend(m);
        errors += e;
    }
    let elapsed = started.elapsed();
    latencies_us.sort_unstable();
    Report {
        ok,
        errors,
        distinct: macs.len() as u64,
        elapsed,
        latencies_us,
    }
}

async fn store_counters(server: &Client) -> Result<(u64, u64), Failure> {
    let text = server.metrics_text().await?;
    let read = |name: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|v| v.trim().parse::<u64>().ok())
            })
            .unwrap_or(0)
    };
    Ok((
        read("macpool_store_commits_total "),
        read("macpool_store_mutations_total "),
    ))
}

/// A `macpool serve` child on a free port and a temporary store, stopped on drop.
/// A `macpool serve` child on a temporary (or given) store, stopped with SIGTERM on drop.
pub(crate) struct SpawnedServer {
    child: Child,
    pub(crate) url: String,
    pub(crate) token: String,
    _dir: Option<tempfile::TempDir>,
}

impl SpawnedServer {
    pub(crate) fn start(data: Option<std::path::PathBuf>) -> Result<SpawnedServer, Failure> {
        let (dir, path) = match data {
            Some(p) => (None, p),
            None => {
                let d = tempfile::tempdir().map_err(|e| Failure::usage(e.to_string()))?;
                let p = d.path().to_path_buf();
                (Some(d), p)
            }
        };
        let token = format!("bench-bootstrap-{:016x}", random_u64());
        let exe = std::env::current_exe().map_err(|e| Failure::usage(e.to_string()))?;
        let mut child = Command::new(exe)
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(&path)
            .env("MACPOOL_BOOTSTRAP_TOKEN", &token)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| Failure::usage(format!("cannot start the server: {e}")))?;
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            match lines.next() {
                Some(Ok(l)) => {
                    if let Some(rest) = l.strip_prefix("macpool listening on ") {
                        break rest
                            .split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_string();
                    }
                }
                _ => return Err(Failure::usage("the server exited before listening")),
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Ok(SpawnedServer {
            child,
            url,
            token,
            _dir: dir,
        })
    }
}

impl Drop for SpawnedServer {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// 64 random bits without another dependency: `RandomState` is seeded from the OS per process.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id().into());
    h.finish()
}
