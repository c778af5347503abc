//! `macpool-bench fleet`: a fleet of Hyper-V hosts running pooled desktops, each host pushing
//! its whole inventory through the HTTP API on the real agent's schedule (every
//! `inventory_every`, and `inventory_debounce` after a burst of events), with the churn of a VDI
//! estate (logoff bursts rolling desktops back, live migrations), Prometheus-style scrapes of
//! `/metrics` and admins reading `/api/v1/conflicts`, while 64 clients allocate. The allocations
//! run twice, side by side: alone, then under the fleet. Reports the latency of each kind of
//! request, the servers' CPU and their memory per 100,000 adapters (issue 18).
//!
//! The fleet is seeded (`--seed`): host h has the dynamic range 00-15-5D-00-00-00 + h·4096, its
//! desktops' live MACs come from a cursor in the lower half, their checkpoints keep older MACs
//! (the first one the desktop's MAC when it was taken), and `--duplicates` checkpoints hold a
//! MAC another host's desktop uses live (latent conflicts).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use macpool_agent::agent::AgentConfig;
use macpool_api::dto::{InventoryBody, InventoryVm, PoolCreate};
use macpool_client::Client;
use tokio::sync::Notify;

use crate::cli::{BenchAllocateArgs, BenchFleetArgs};
use crate::desktop::{desktop_adapter, mac};
use crate::exit::{CmdResult, Failure, OK, fail};
use crate::load::drive;
use crate::measure::{latency_json, percentile_ms, random_u64};
use crate::output::Output;
use crate::server::SpawnedServer;

/// The allocating clients' pool: 00-15-5D-F0-00-00 … 00-15-5D-FF-FF-FF, above every host's range.
const POOL: &str = "fleet";
const POOL_FIRST: u64 = 0x00155DF00000;
const POOL_SIZE: u64 = 0x10_0000;
/// Host h's dynamic range starts here + h · `HOST_RANGE`.
const RANGES_FIRST: u64 = 0x00155D000000;
const HOST_RANGE: u64 = 4096;
/// Live MACs come from the lower half of a host's range, checkpoints' older MACs the upper.
const LIVE_SPAN: u64 = HOST_RANGE / 2;
/// Seconds of fleet load before the allocations start, so that they meet it running.
const WARM_UP: Duration = Duration::from_secs(5);
/// How often each conflict reader reads the conflicts.
const CONFLICT_EVERY: Duration = Duration::from_secs(2);

/// The churn's random numbers: a xorshift, so one seed gives one fleet and one event sequence.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// Exponentially distributed seconds with mean `mean` (a Poisson process's gaps).
    fn exp(&mut self, mean: f64) -> Duration {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        Duration::from_secs_f64(-(1.0 - u).ln() * mean)
    }
}

struct Desktop {
    id: String,
    name: String,
    live: u64,
    checkpoints: Vec<u64>,
}

struct Host {
    name: String,
    first: u64,
    /// Where the host's allocator hands out the next live MAC (offset in the lower half).
    cursor: u64,
    generation: u64,
    desktops: Vec<Desktop>,
}

impl Host {
    fn new(h: u32, args: &BenchFleetArgs) -> Host {
        let first = RANGES_FIRST + u64::from(h) * HOST_RANGE;
        let desktops = (0..u64::from(args.desktops))
            .map(|v| Desktop {
                id: format!("vm-{h:04}-{v:04}"),
                name: format!("RDS-{h:04}-{v:03}"),
                live: first + v,
                checkpoints: (0..u64::from(args.checkpoints))
                    .map(|c| match c {
                        0 => first + v,
                        _ => first + LIVE_SPAN + v * u64::from(args.checkpoints) + c,
                    })
                    .collect(),
            })
            .collect();
        Host {
            name: format!("HV{h:04}"),
            first,
            cursor: u64::from(args.desktops),
            generation: 0,
            desktops,
        }
    }

    /// A logoff: the desktop goes back to its checkpoint and boots with the next MAC of the
    /// host's allocator (which wraps, as Hyper-V's does).
    fn roll_back(&mut self, desktop: usize) {
        let mac = self.first + self.cursor % LIVE_SPAN;
        self.cursor += 1;
        if let Some(d) = self.desktops.get_mut(desktop) {
            d.live = mac;
        }
    }

    /// The next report, as the agent sends it.
    fn report(&mut self) -> InventoryBody {
        self.generation += 1;
        let adapter = |m: u64, cp: Option<(usize, &str)>| {
            desktop_adapter(m, cp.map(|(c, vm)| (format!("{vm}-cp{c}"), c as u32)))
        };
        let vms = self
            .desktops
            .iter()
            .map(|d| InventoryVm {
                id: d.id.clone(),
                name: d.name.clone(),
                state: Some("running".into()),
                adapters: std::iter::once(adapter(d.live, None))
                    .chain(
                        d.checkpoints
                            .iter()
                            .enumerate()
                            .map(|(c, m)| adapter(*m, Some((c, &d.id)))),
                    )
                    .collect(),
            })
            .collect();
        InventoryBody {
            generation: self.generation,
            range_min: Some(mac(self.first)),
            range_max: Some(mac(self.first + HOST_RANGE - 1)),
            vms,
            strategy: Some("guard".into()),
            ..InventoryBody::default()
        }
    }
}

/// The fleet the tasks share: each host behind its own lock, and a bell that asks its agent for
/// a push (the agent then waits `inventory_debounce` for more events).
struct Fleet {
    hosts: Vec<Mutex<Host>>,
    bells: Vec<Notify>,
}

impl Fleet {
    fn new(args: &BenchFleetArgs) -> Fleet {
        let mut hosts: Vec<Host> = (0..args.hosts).map(|h| Host::new(h, args)).collect();
        let n = hosts.len() as u64;
        let per = u64::from(args.desktops);
        for d in 0..u64::from(args.duplicates) {
            let (a, v) = ((d % n) as usize, ((d / n) % per.max(1)) as usize);
            let b = ((a as u64 + 1) % n) as usize;
            let theirs = hosts[b].desktops.get(v).map(|x| x.live);
            if let (Some(m), Some(cp)) = (
                theirs,
                hosts[a]
                    .desktops
                    .get_mut(v)
                    .and_then(|x| x.checkpoints.last_mut()),
            ) {
                *cp = m;
            }
        }
        Fleet {
            bells: hosts.iter().map(|_| Notify::new()).collect(),
            hosts: hosts.into_iter().map(Mutex::new).collect(),
        }
    }

    fn report(&self, h: usize) -> (String, InventoryBody) {
        let mut host = self.hosts[h].lock().unwrap();
        (host.name.clone(), host.report())
    }
}

/// Latencies (µs) and failures of one kind of request.
#[derive(Default)]
struct Samples {
    us: Mutex<Vec<u64>>,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Samples {
    fn record<T, E: std::fmt::Display>(&self, started: Instant, r: Result<T, E>) -> Option<T> {
        match r {
            Ok(v) => {
                let us = started.elapsed().as_micros() as u64;
                self.us.lock().unwrap().push(us);
                Some(v)
            }
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                self.first_error
                    .lock()
                    .unwrap()
                    .get_or_insert_with(|| e.to_string());
                None
            }
        }
    }

    fn sorted(&self) -> Vec<u64> {
        let mut us = self.us.lock().unwrap().clone();
        us.sort_unstable();
        us
    }
}

/// CPU ticks (USER_HZ) and resident memory of the servers' processes, from /proc.
#[derive(Clone, Copy, Default)]
struct ProcStat {
    ticks: u64,
    rss_kib: u64,
    peak_kib: u64,
}

fn proc_stat(pids: &[u32]) -> ProcStat {
    let mut total = ProcStat::default();
    for pid in pids {
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // After the command's closing parenthesis: state is field 3, utime 14, stime 15.
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(|x| x.parse().unwrap_or(0))
                .collect();
            total.ticks += f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
        }
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            let kib = |key: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(key))
                    .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            total.rss_kib += kib("VmRSS:");
            total.peak_kib += kib("VmHWM:");
        }
    }
    total
}

/// Cores the servers kept busy between two readings `wall` apart.
fn cores(from: ProcStat, to: ProcStat, wall: Duration) -> f64 {
    (to.ticks.saturating_sub(from.ticks)) as f64 / 100.0 / wall.as_secs_f64().max(1e-9)
}

pub async fn run(out: Output, args: BenchFleetArgs) -> CmdResult {
    let adapters_per_desktop = 1 + u64::from(args.checkpoints);
    if args.hosts == 0 || args.hosts > 1024 {
        return Err(Failure::usage("--hosts must be in 1..=1024"));
    }
    if u64::from(args.desktops) >= LIVE_SPAN
        || u64::from(args.desktops) * u64::from(args.checkpoints) >= HOST_RANGE - LIVE_SPAN - 1
    {
        return Err(Failure::usage(
            "--desktops and --checkpoints must fit a host's 4096-address range: desktops < 2048, desktops × checkpoints < 2047",
        ));
    }
    if args.replicas == 0 || args.scrape_every_ms == 0 {
        return Err(Failure::usage(
            "--replicas and --scrape-every-ms must be at least 1",
        ));
    }
    let servers: Vec<SpawnedServer> = match &args.database {
        Some(base) => {
            let url = macpool_store::postgres::scratch_database(base, "macpool_bench_fleet")
                .await
                .map_err(fail)?;
            let token = format!("bench-bootstrap-{:016x}", random_u64());
            (0..args.replicas)
                .map(|_| SpawnedServer::replica(args.binary.as_deref(), &url, &token))
                .collect::<Result<_, _>>()?
        }
        None => vec![SpawnedServer::start(
            args.binary.as_deref(),
            args.data.clone(),
        )?],
    };
    let token = servers[0].token.clone();
    let pids: Vec<u32> = servers.iter().map(SpawnedServer::pid).collect();
    let apis: Vec<Client> = servers
        .iter()
        .map(|s| Client::new(&s.url, Some(token.clone())))
        .collect::<Result<_, _>>()?;
    apis[0]
        .create_pool(&PoolCreate {
            name: POOL.into(),
            ranges: vec![format!(
                "{}-{}",
                mac(POOL_FIRST),
                mac(POOL_FIRST + POOL_SIZE - 1)
            )],
            ..PoolCreate::default()
        })
        .await
        .map_err(fail)?;
    let empty = proc_stat(&pids);

    // Every host's first report, 16 at a time.
    let fleet = Arc::new(Fleet::new(&args));
    let seeded = Instant::now();
    let pushes = Arc::new(Samples::default());
    for chunk in (0..fleet.hosts.len()).collect::<Vec<_>>().chunks(16) {
        let mut set = tokio::task::JoinSet::new();
        for &h in chunk {
            let (fleet, api) = (fleet.clone(), apis[h % apis.len()].clone());
            set.spawn(async move {
                let (name, body) = fleet.report(h);
                api.put_inventory(&name, &body).await.map(drop)
            });
        }
        while let Some(r) = set.join_next().await {
            r.map_err(fail)?.map_err(fail)?;
        }
    }
    let seed_s = seeded.elapsed().as_secs_f64();
    let adapters = u64::from(args.hosts) * u64::from(args.desktops) * adapters_per_desktop;
    let after_seed = proc_stat(&pids);

    let bench = BenchAllocateArgs::beside_load(args.clients, args.per_client, POOL, POOL_SIZE);
    let run_id = format!("{:08x}", random_u64() as u32);
    let (alone_us, alone_cpu) = {
        let (from, t) = (proc_stat(&pids), Instant::now());
        let r = allocations(&apis, &token, &format!("{run_id}a"), &bench).await?;
        (r, cores(from, proc_stat(&pids), t.elapsed()))
    };

    // The fleet under load.
    let stop = Arc::new(AtomicBool::new(false));
    let (scrapes, conflict_reads) = (Arc::new(Samples::default()), Arc::new(Samples::default()));
    let conflicts_seen = Arc::new(AtomicU64::new(0));
    let timing = AgentConfig::new(None, "fleet", "");
    let interval = Duration::from_secs(args.push_interval.max(1));
    let mut tasks = tokio::task::JoinSet::new();
    let mut rng = Rng(args.seed.max(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    for h in 0..fleet.hosts.len() {
        let (fleet, api, pushes, stop) = (
            fleet.clone(),
            apis[h % apis.len()].clone(),
            pushes.clone(),
            stop.clone(),
        );
        let first = Duration::from_millis(rng.below(interval.as_millis() as u64));
        let debounce = timing.inventory_debounce;
        tasks.spawn(async move {
            let mut next = tokio::time::Instant::now() + first;
            while !stop.load(Ordering::Relaxed) {
                tokio::select! {
                    _ = tokio::time::sleep_until(next) => {}
                    _ = fleet.bells[h].notified() => tokio::time::sleep(debounce).await,
                    _ = tokio::time::sleep(Duration::from_millis(250)) => continue,
                }
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let (name, body) = fleet.report(h);
                let t = Instant::now();
                pushes.record(t, api.put_inventory(&name, &body).await);
                next = tokio::time::Instant::now() + interval;
            }
        });
    }
    // Logoff bursts: every desktop rolls back every `--rollback-every` on average, 1 to 10
    // desktops of one host at a time; and live migrations, one desktop every `--migrate-every`.
    {
        let (fleet, stop) = (fleet.clone(), stop.clone());
        let desktops = f64::from(args.hosts) * f64::from(args.desktops);
        let burst_gap = args.rollback_every.max(1) as f64 * 5.5 / desktops.max(1.0);
        let migrate_every = Duration::from_secs(args.migrate_every.max(1));
        let mut rng = Rng(rng.next() | 1);
        tasks.spawn(async move {
            let mut next_migration = Instant::now() + migrate_every;
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(rng.exp(burst_gap)).await;
                let h = rng.below(fleet.hosts.len() as u64) as usize;
                {
                    let mut host = fleet.hosts[h].lock().unwrap();
                    let n = host.desktops.len() as u64;
                    for _ in 0..=rng.below(10) {
                        let d = rng.below(n) as usize;
                        host.roll_back(d);
                    }
                }
                fleet.bells[h].notify_one();
                if Instant::now() >= next_migration && fleet.hosts.len() > 1 {
                    next_migration += migrate_every;
                    let to = (h + 1 + rng.below(fleet.hosts.len() as u64 - 1) as usize)
                        % fleet.hosts.len();
                    let moved = {
                        let mut from = fleet.hosts[h].lock().unwrap();
                        let n = from.desktops.len() as u64;
                        (n > 0).then(|| from.desktops.swap_remove(rng.below(n) as usize))
                    };
                    if let Some(d) = moved {
                        fleet.hosts[to].lock().unwrap().desktops.push(d);
                        fleet.bells[h].notify_one();
                        fleet.bells[to].notify_one();
                    }
                }
            }
        });
    }
    for i in 0..args.scrapers {
        let (api, scrapes, stop) = (apis[i % apis.len()].clone(), scrapes.clone(), stop.clone());
        let every = Duration::from_millis(args.scrape_every_ms);
        tasks.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                scrapes.record(t, api.metrics_text().await);
                tokio::time::sleep(every.saturating_sub(t.elapsed())).await;
            }
        });
    }
    for i in 0..args.conflict_readers {
        let (api, reads, stop, seen) = (
            apis[i % apis.len()].clone(),
            conflict_reads.clone(),
            stop.clone(),
            conflicts_seen.clone(),
        );
        tasks.spawn(async move {
            tokio::time::sleep(Duration::from_millis(700 * i as u64)).await;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                if let Some(c) = reads.record(t, api.conflicts().await) {
                    seen.store(c.len() as u64, Ordering::Relaxed);
                }
                tokio::time::sleep(CONFLICT_EVERY.saturating_sub(t.elapsed())).await;
            }
        });
    }
    let loaded = Instant::now();
    let from = proc_stat(&pids);
    tokio::time::sleep(WARM_UP).await;
    let under_us = allocations(&apis, &token, &format!("{run_id}b"), &bench).await?;
    let left = Duration::from_secs(args.duration).saturating_sub(loaded.elapsed());
    tokio::time::sleep(left).await;
    let wall = loaded.elapsed();
    let end = proc_stat(&pids);
    stop.store(true, Ordering::Relaxed);
    while tasks.join_next().await.is_some() {}
    let fleet_cpu = cores(from, end, wall);

    let (push_us, scrape_us, conflict_us) =
        (pushes.sorted(), scrapes.sorted(), conflict_reads.sorted());
    let per_100k = |kib: u64| kib as f64 / 1024.0 * 100_000.0 / adapters.max(1) as f64;
    let grown_kib = after_seed.rss_kib.saturating_sub(empty.rss_kib);
    let store = match &args.database {
        Some(_) => format!("postgresql, {} replicas", args.replicas),
        None => "embedded (sqlite)".into(),
    };
    let errors = |s: &Samples| {
        (
            s.errors.load(Ordering::Relaxed),
            s.first_error.lock().unwrap().clone(),
        )
    };
    if out.json {
        let kind = |us: &[u64], s: &Samples| {
            let (n, first) = errors(s);
            serde_json::json!({"count": us.len(), "latency_ms": latency_json(us), "errors": n, "first_error": first})
        };
        out.print_json(&serde_json::json!({
            "store": store,
            "fleet": {"hosts": args.hosts, "desktops_per_host": args.desktops,
                      "adapters": adapters, "duplicates": args.duplicates,
                      "seed_seconds": seed_s, "conflicts": conflicts_seen.load(Ordering::Relaxed)},
            "pushes": kind(&push_us, &pushes),
            "metrics_scrapes": kind(&scrape_us, &scrapes),
            "conflict_reads": kind(&conflict_us, &conflict_reads),
            "allocations_alone_ms": latency_json(&alone_us),
            "allocations_under_fleet_ms": latency_json(&under_us),
            "server_cores_busy": {"allocations_alone": alone_cpu, "fleet": fleet_cpu},
            "server_rss_mib": {"empty": empty.rss_kib as f64 / 1024.0,
                               "after_seed": after_seed.rss_kib as f64 / 1024.0,
                               "end": end.rss_kib as f64 / 1024.0, "peak": end.peak_kib as f64 / 1024.0,
                               "per_100k_adapters": per_100k(grown_kib)},
            "fleet_seconds": wall.as_secs_f64(),
        }));
        return Ok(OK);
    }
    println!(
        "{store}: {} hosts × {} desktops × {} adapters = {adapters} adapters, seeded in {seed_s:.1} s; {} conflicts",
        args.hosts,
        args.desktops,
        adapters_per_desktop,
        conflicts_seen.load(Ordering::Relaxed)
    );
    println!(
        "{:<28} {:>7} {:>9} {:>9} {:>9} {:>7}",
        "REQUESTS", "COUNT", "P50 MS", "P99 MS", "MAX MS", "ERRORS"
    );
    let row = |label: &str, us: &[u64], errs: u64| {
        println!(
            "{label:<28} {:>7} {:>9.2} {:>9.2} {:>9.2} {errs:>7}",
            us.len(),
            percentile_ms(us, 50.0),
            percentile_ms(us, 99.0),
            percentile_ms(us, 100.0)
        );
    };
    row("inventory pushes", &push_us, errors(&pushes).0);
    row("/metrics scrapes", &scrape_us, errors(&scrapes).0);
    row(
        "/api/v1/conflicts reads",
        &conflict_us,
        errors(&conflict_reads).0,
    );
    row("allocations alone", &alone_us, 0);
    row("allocations under the fleet", &under_us, 0);
    for (label, s) in [
        ("push", &*pushes),
        ("scrape", &*scrapes),
        ("conflicts", &*conflict_reads),
    ] {
        if let (n, Some(first)) = errors(s)
            && n > 0
        {
            println!("first {label} error: {first}");
        }
    }
    println!(
        "server CPU: {alone_cpu:.2} cores busy during the allocations alone, {fleet_cpu:.2} under the fleet ({:.0} s)",
        wall.as_secs_f64()
    );
    println!(
        "server RSS: {:.0} MiB empty, {:.0} MiB after the seed ({:.0} MiB per 100,000 adapters), {:.0} MiB at the end, peak {:.0} MiB",
        empty.rss_kib as f64 / 1024.0,
        after_seed.rss_kib as f64 / 1024.0,
        per_100k(grown_kib),
        end.rss_kib as f64 / 1024.0,
        end.peak_kib as f64 / 1024.0
    );
    Ok(OK)
}

/// One run of the allocating clients (the same load generator as `allocate`), spread over
/// the servers; the sorted latencies.
async fn allocations(
    apis: &[Client],
    token: &str,
    run_id: &str,
    bench: &BenchAllocateArgs,
) -> Result<Vec<u64>, Failure> {
    drive(apis, token, POOL, run_id, bench)
        .await?
        .into_sorted_latencies()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> BenchFleetArgs {
        BenchFleetArgs {
            hosts: 4,
            desktops: 10,
            checkpoints: 3,
            push_interval: 60,
            rollback_every: 1800,
            migrate_every: 10,
            duplicates: 3,
            duration: 1,
            scrapers: 1,
            scrape_every_ms: 1000,
            conflict_readers: 1,
            clients: 1,
            per_client: 1,
            seed: 1,
            database: None,
            replicas: 2,
            data: None,
            binary: None,
        }
    }

    /// The seeded duplicates are checkpoints holding the next host's desktop's live MAC, and a
    /// rollback takes the allocator's next MAC.
    #[test]
    fn the_fleet_has_its_duplicates_and_rollbacks_move_the_cursor() {
        let fleet = Fleet::new(&args());
        for d in 0..3usize {
            let a = fleet.hosts[d].lock().unwrap();
            let b = fleet.hosts[(d + 1) % 4].lock().unwrap();
            assert_eq!(a.desktops[0].checkpoints.last(), Some(&b.desktops[0].live));
        }
        let mut h = fleet.hosts[0].lock().unwrap();
        let before = h.desktops[2].live;
        h.roll_back(2);
        assert_eq!(h.desktops[2].live, h.first + 10);
        assert_ne!(h.desktops[2].live, before);
        let body = h.report();
        assert_eq!((body.generation, body.vms.len()), (1, 10));
        assert_eq!(body.vms[2].adapters.len(), 4);
        assert_eq!(
            body.vms[2].adapters[1].mac,
            mac(before),
            "the checkpoint keeps the old MAC"
        );
    }

    #[test]
    fn rng_is_seeded_and_exponential_gaps_average_their_mean() {
        let (mut a, mut b) = (Rng(7), Rng(7));
        assert_eq!(a.next(), b.next());
        let mean: f64 = (0..20_000).map(|_| a.exp(2.0).as_secs_f64()).sum::<f64>() / 20_000.0;
        assert!((mean - 2.0).abs() < 0.1, "{mean}");
    }
}
