//! `macpool-bench allocate`: durable allocations per second through the real HTTP API, with
//! latency percentiles and how many allocations shared each fsync (from the server's metrics).

use macpool_api::dto::{AllocateBody, PoolCreate};
use macpool_client::Client;

use crate::cli::BenchAllocateArgs;
use crate::exit::{CmdResult, Failure, OK};
use crate::load::drive;
use crate::measure::random_u64;
use crate::output::{Output, fields};
use crate::server::SpawnedServer;

pub async fn run(out: Output, token: &Option<String>, args: BenchAllocateArgs) -> CmdResult {
    if !(0.0..100.0).contains(&args.fill) {
        return Err(Failure::usage("--fill must be a percent in 0..100"));
    }
    let (servers, token, _guard) = if args.target.is_empty() {
        let s = SpawnedServer::start(args.binary.as_deref(), args.data.clone())?;
        let client = Client::new(&s.url, Some(s.token.clone()))?;
        (vec![client], s.token.clone(), Some(s))
    } else {
        let t = token
            .clone()
            .ok_or_else(|| Failure::usage("--target needs --token (or MACPOOL_TOKEN)"))?;
        let clients = args
            .target
            .iter()
            .map(|url| Client::new(url, Some(t.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        (clients, t, None)
    };
    let server = &servers[0];
    let pool = match &args.pool {
        Some(name) => name.clone(),
        None => {
            let name = format!("bench-{}", std::process::id());
            if args.pool_size == 0 || args.pool_size > 0x10_0000 {
                return Err(Failure::usage("--pool-size must be in 1..=1048576"));
            }
            let first = 0x00155D400000u64 + u64::from(std::process::id() % 16) * 0x100000;
            let range = format!("{:012X}-{:012X}", first, first + args.pool_size - 1);
            server
                .create_pool(&PoolCreate {
                    name: name.clone(),
                    ranges: vec![range],
                    order: args.order.clone(),
                    ..PoolCreate::default()
                })
                .await?;
            name
        }
    };
    // VM ids of this run, so that a rerun on the same server or pool never meets its own.
    let run_id = format!("{:08x}", random_u64() as u32);
    let mut filled = 0;
    for target in &servers {
        filled += fill(target, &pool, &run_id, args.fill).await?;
    }
    let before = store_counters(&servers).await?;
    let report = drive(&servers, &token, &pool, &run_id, &args).await?;
    let after = store_counters(&servers).await?;
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
        let mut json = serde_json::json!({
            "clients": args.clients,
            "targets": servers.len(),
            "pool": pool,
            "fill_percent": args.fill,
            "prefilled": filled,
            "allocations": report.ok,
            "errors": report.errors,
            "first_error": report.first_error,
            "commits": commits,
            "allocations_per_fsync": per_fsync,
            "distinct_macs": report.distinct,
            "pool_free_after": check.free,
            "pool_size": check.size,
        });
        report
            .timed
            .add_json(&mut json, report.ok, &report.latencies_us);
        out.print_json(&json);
    } else {
        let mut lines = vec![("clients", args.clients.to_string())];
        if servers.len() > 1 {
            lines.push((
                "targets",
                format!("{} (clients round-robin)", servers.len()),
            ));
        }
        if filled > 0 {
            lines.push((
                "pre-filled",
                format!("{filled} addresses (untimed), to {}%", args.fill),
            ));
        }
        lines.extend([(
            "allocations",
            format!("{} ok, {} errors (of {total})", report.ok, report.errors),
        )]);
        if let Some(e) = &report.first_error {
            lines.push(("first error", e.clone()));
        }
        lines.extend(report.timed.lines(report.ok, &report.latencies_us));
        lines.extend([
            (
                "commits",
                format!("{commits} fsyncs, {per_fsync:.1} allocations per fsync"),
            ),
            ("distinct MACs", report.distinct.to_string()),
            (
                "pool after",
                format!("{} free of {}", check.free, check.size),
            ),
        ]);
        print!("{}", fields(&lines));
    }
    if report.errors > 0 || report.distinct != report.ok {
        return Err(Failure::no("the benchmark saw errors or duplicate MACs"));
    }
    Ok(OK)
}

/// Allocates (untimed, up to the API's maximum per request) until `percent` of the pool is in
/// use; returns how many addresses it allocated.
async fn fill(server: &Client, pool: &str, run_id: &str, percent: f64) -> Result<u64, Failure> {
    if percent <= 0.0 {
        return Ok(0);
    }
    let info = server.pool(pool).await?;
    let want = (info.size as f64 * percent / 100.0).round() as u64;
    let mut todo = want.saturating_sub(info.size - info.free);
    let mut done = 0u64;
    let mut i = 0u32;
    while todo > 0 {
        let n = todo.min(u64::from(macpool_core::authority::MAX_ALLOCATION_COUNT));
        let r = server
            .allocate(&AllocateBody {
                pool: Some(pool.to_string()),
                vm_id: format!("bench-{run_id}-fill-{i}"),
                count: Some(n as u32),
                ..AllocateBody::default()
            })
            .await?;
        let got = r.allocations.len() as u64;
        if got == 0 {
            return Err(Failure::no("the pre-fill allocated nothing"));
        }
        todo = todo.saturating_sub(got);
        done += got;
        i += 1;
    }
    Ok(done)
}

/// Store commits and mutations, summed over every server (replicas count their own).
async fn store_counters(servers: &[Client]) -> Result<(u64, u64), Failure> {
    let (mut commits, mut mutations) = (0, 0);
    for server in servers {
        let text = server.metrics_text().await?;
        let read = |name: &str| {
            text.lines()
                .find_map(|l| {
                    l.strip_prefix(name)
                        .and_then(|v| v.trim().parse::<u64>().ok())
                })
                .unwrap_or(0)
        };
        commits += read("macpool_store_commits_total ");
        mutations += read("macpool_store_mutations_total ");
    }
    Ok((commits, mutations))
}
