//! `macpool bench allocate`: durable allocations per second through the real HTTP API, with
//! latency percentiles and how many allocations shared each fsync (from the server's metrics).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use macpool_api::dto::{AllocateBody, AllocationResult, PoolCreate};
use macpool_client::Client;

use crate::cli::{BenchAllocateArgs, BenchCommand};
use crate::exit::{CmdResult, Failure, OK};
use crate::output::{Output, fields};

use super::bench_wire::LoadConnection;

pub async fn run(out: Output, token: &Option<String>, cmd: BenchCommand) -> CmdResult {
    let args = match cmd {
        BenchCommand::Allocate(args) => args,
        BenchCommand::Decide(args) => return super::bench_decide::run(out, args).await,
        BenchCommand::Sql(args) => return super::bench_sql::run(out, args).await,
        BenchCommand::Dashboard(args) => {
            return super::bench_dashboard::run(out, args).await;
        }
        BenchCommand::Fleet(args) => return super::bench_fleet::run(out, args).await,
    };
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

pub(crate) struct Report {
    pub ok: u64,
    pub errors: u64,
    pub distinct: u64,
    pub timed: Measured,
    pub latencies_us: Vec<u64>,
    pub first_error: Option<String>,
}

/// p50, p90, p99 and max of sorted microsecond samples, in milliseconds, for `--json`.
pub(crate) fn latency_json(sorted_us: &[u64]) -> serde_json::Value {
    serde_json::json!({
        "p50": percentile_ms(sorted_us, 50.0),
        "p90": percentile_ms(sorted_us, 90.0),
        "p99": percentile_ms(sorted_us, 99.0),
        "max": percentile_ms(sorted_us, 100.0),
    })
}

/// The same percentiles as [`latency_json`], as one line for people.
fn latency_line(sorted_us: &[u64]) -> String {
    format!(
        "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile_ms(sorted_us, 50.0),
        percentile_ms(sorted_us, 90.0),
        percentile_ms(sorted_us, 99.0),
        percentile_ms(sorted_us, 100.0)
    )
}

/// The `q`-th percentile (0..=100) of sorted microsecond samples, in milliseconds.
pub(crate) fn percentile_ms(sorted_us: &[u64], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let idx = ((q / 100.0) * (sorted_us.len() - 1) as f64).round() as usize;
    sorted_us[idx] as f64 / 1000.0
}

/// The timed part of a benchmark: wall time and, on Linux, the whole machine's CPU time. Where
/// the clients, the servers and PostgreSQL share a few cores, CPU time per allocation is the
/// cost figure: it scatters far less from run to run than throughput does.
pub(crate) struct Stopwatch {
    started: Instant,
    cpu: Option<CpuTicks>,
}

/// What a [`Stopwatch`] measured.
#[derive(Default)]
pub(crate) struct Measured {
    pub elapsed: Duration,
    /// The whole machine's CPU ticks (all cores, every process) over the window, if readable.
    machine_cpu: Option<CpuTicks>,
}

/// `/proc/stat`'s first line, or the difference of two: ticks (USER_HZ, 100 per second)
/// spent busy, and in all (summed over the cores).
#[derive(Clone, Copy, Debug, PartialEq)]
struct CpuTicks {
    busy: u64,
    total: u64,
}

impl CpuTicks {
    fn read() -> Option<CpuTicks> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        Self::parse(stat.lines().next()?)
    }

    /// `cpu user nice system idle iowait irq softirq steal …`: idle and iowait are not busy.
    fn parse(line: &str) -> Option<CpuTicks> {
        let mut fields = line.split_whitespace();
        if fields.next()? != "cpu" {
            return None;
        }
        let ticks: Vec<u64> = fields.map(|f| f.parse().ok()).collect::<Option<_>>()?;
        if ticks.len() < 5 {
            return None;
        }
        let total: u64 = ticks.iter().take(8).sum();
        Some(CpuTicks {
            busy: total - ticks[3] - ticks[4],
            total,
        })
    }
}

impl Stopwatch {
    pub fn start() -> Stopwatch {
        Stopwatch {
            started: Instant::now(),
            cpu: CpuTicks::read(),
        }
    }

    pub fn stop(&self) -> Measured {
        let elapsed = self.started.elapsed();
        let machine_cpu = match (self.cpu, CpuTicks::read()) {
            (Some(a), Some(b)) if b.total > a.total => Some(CpuTicks {
                busy: b.busy - a.busy,
                total: b.total - a.total,
            }),
            _ => None,
        };
        Measured {
            elapsed,
            machine_cpu,
        }
    }
}

impl Measured {
    /// Busy CPU seconds of the whole machine over the window.
    fn busy_seconds(&self) -> Option<f64> {
        Some(self.machine_cpu?.busy as f64 / 100.0)
    }

    /// Machine CPU per allocation, in microseconds.
    pub fn cpu_us_per(&self, allocations: u64) -> Option<f64> {
        let busy = self.busy_seconds()?;
        (allocations > 0).then(|| busy * 1e6 / allocations as f64)
    }

    /// Adds what every benchmark reports of its timed part to the `--json` object `report`:
    /// seconds, allocations per second, latency percentiles and the machine's CPU.
    pub fn add_json(&self, report: &mut serde_json::Value, allocations: u64, latencies_us: &[u64]) {
        let report = report
            .as_object_mut()
            .expect("a benchmark report is a JSON object");
        report.insert("seconds".into(), self.elapsed.as_secs_f64().into());
        let rate = self.per_second(allocations);
        report.insert("allocations_per_second".into(), rate.into());
        report.insert("latency_ms".into(), latency_json(latencies_us));
        report.insert("machine_cpu".into(), self.cpu_json(allocations));
    }

    /// The same as [`Measured::add_json`], as lines for people.
    pub fn lines(&self, allocations: u64, latencies_us: &[u64]) -> [(&'static str, String); 4] {
        [
            ("elapsed", format!("{:.2} s", self.elapsed.as_secs_f64())),
            (
                "throughput",
                format!("{:.0} allocations/s", self.per_second(allocations)),
            ),
            ("latency", latency_line(latencies_us)),
            ("machine CPU", self.cpu_line(allocations)),
        ]
    }

    fn per_second(&self, allocations: u64) -> f64 {
        allocations as f64 / self.elapsed.as_secs_f64()
    }

    /// Busy CPU seconds, the share of all cores that was busy (from the same ticks, so never
    /// above 100), and CPU per allocation.
    fn cpu_json(&self, allocations: u64) -> serde_json::Value {
        match self.machine_cpu {
            Some(t) => serde_json::json!({
                "busy_seconds": self.busy_seconds(),
                "busy_percent": 100.0 * t.busy as f64 / t.total as f64,
                "us_per_allocation": self.cpu_us_per(allocations),
            }),
            None => serde_json::Value::Null,
        }
    }

    /// The same as [`Measured::cpu_json`], as one line for people.
    fn cpu_line(&self, allocations: u64) -> String {
        match (self.cpu_us_per(allocations), self.busy_seconds()) {
            (Some(us), Some(busy)) => {
                format!("{us:.0} µs per allocation ({busy:.1} busy CPU seconds, all processes)")
            }
            _ => "not measured (no /proc/stat)".into(),
        }
    }
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

/// Runs the clients on their own single-threaded runtime and OS thread, so that the load
/// generator takes as little CPU from the server (which shares this machine) as it can.
pub(crate) async fn drive(
    servers: &[Client],
    token: &str,
    pool: &str,
    run_id: &str,
    args: &BenchAllocateArgs,
) -> Result<Report, Failure> {
    let (servers, token, pool, run_id, clients, per_client, warm_up) = (
        servers.to_vec(),
        token.to_string(),
        pool.to_string(),
        run_id.to_string(),
        args.clients,
        args.per_client,
        args.warm_up,
    );
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        let report = rt.map(|rt| {
            rt.block_on(load(
                servers, token, pool, run_id, clients, per_client, warm_up,
            ))
        });
        let _ = tx.send(report);
    });
    rx.await
        .map_err(|_| Failure::usage("the load generator thread died"))?
        .map_err(|e| Failure::usage(format!("cannot start the load generator: {e}")))
}

/// How one simulated client sends its allocations: over its own kept-alive connection where
/// the target is plain HTTP (the cheapest for the machine being measured), else through the
/// general client.
enum Sender {
    Wire(LoadConnection),
    General(Client),
}

impl Sender {
    fn new(server: &Client, token: &str) -> Sender {
        match LoadConnection::for_base(server.base(), token) {
            Some(wire) => Sender::Wire(wire),
            None => Sender::General(server.clone()),
        }
    }

    /// Opens the connection before the clock starts.
    async fn warm_up(&mut self) -> Result<(), String> {
        match self {
            Sender::Wire(wire) => wire.connect().await,
            Sender::General(server) => server.health().await.map(drop).map_err(|e| e.to_string()),
        }
    }

    /// Allocates one MAC; returns it as the server spelled it.
    async fn allocate(&mut self, body: &AllocateBody) -> Result<String, String> {
        let result: AllocationResult = match self {
            Sender::Wire(wire) => {
                let json = serde_json::to_vec(body).expect("an allocation body serializes");
                let reply = wire.post(&json).await?;
                serde_json::from_slice(reply)
                    .map_err(|e| format!("unexpected reply to an allocation: {e}"))?
            }
            Sender::General(server) => server.allocate(body).await.map_err(|e| e.to_string())?,
        };
        result
            .allocations
            .into_iter()
            .next()
            .map(|a| a.lease.mac)
            .ok_or_else(|| "the server allocated nothing".to_string())
    }
}

/// `clients` tasks, client `c` talking to `servers[c % servers.len()]`.
async fn load(
    servers: Vec<Client>,
    token: String,
    pool: String,
    run_id: String,
    clients: usize,
    per_client: usize,
    warm_up: bool,
) -> Report {
    let mut senders: Vec<Sender> = (0..clients)
        .map(|c| Sender::new(&servers[c % servers.len()], &token))
        .collect();
    if warm_up {
        // Each client's connection open before the clock starts, all at once (the general
        // client opens one per concurrent request). A failure here shows again, counted, on the
        // client's first timed request. The order they come back in does not matter: a
        // client's server is in its sender, and its index only makes its VM ids unique.
        let mut warming = tokio::task::JoinSet::new();
        for mut sender in senders {
            warming.spawn(async move {
                let _ = sender.warm_up().await;
                sender
            });
        }
        senders = warming.join_all().await;
    }
    let stopwatch = Stopwatch::start();
    let mut tasks = Vec::new();
    for (c, mut sender) in senders.into_iter().enumerate() {
        let pool = pool.clone();
        let run_id = run_id.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_client);
            let mut macs = Vec::with_capacity(per_client);
            let mut errors = 0u64;
            let mut first_error: Option<String> = None;
            for i in 0..per_client {
                let body = AllocateBody {
                    pool: Some(pool.clone()),
                    vm_id: format!("bench-{run_id}-{c}-{i}"),
                    ..AllocateBody::default()
                };
                let t = Instant::now();
                match sender.allocate(&body).await {
                    Ok(mac) => {
                        lat.push(t.elapsed().as_micros() as u64);
                        macs.push(mac);
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            (lat, macs, errors, first_error)
        }));
    }
    let mut latencies_us = Vec::new();
    let mut macs = std::collections::HashSet::new();
    let mut errors = 0;
    let mut first_error = None;
    let mut ok = 0;
    for t in tasks {
        let Ok((lat, m, e, first)) = t.await else {
            errors += per_client as u64;
            continue;
        };
        ok += m.len() as u64;
        latencies_us.extend(lat);
        macs.extend(m);
        errors += e;
        if first_error.is_none() {
            first_error = first;
        }
    }
    let timed = stopwatch.stop();
    latencies_us.sort_unstable();
    Report {
        ok,
        errors,
        distinct: macs.len() as u64,
        timed,
        latencies_us,
        first_error,
    }
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

/// A `macpool serve` child on a free port and a temporary store, stopped on drop.
/// A `macpool serve` child on a temporary (or given) store, stopped with SIGTERM on drop.
pub(crate) struct SpawnedServer {
    child: Child,
    pub(crate) url: String,
    pub(crate) token: String,
    _dir: Option<tempfile::TempDir>,
}

impl SpawnedServer {
    /// Starts `exe` (default: this binary) as `serve` on a fresh port over `data` (default: a
    /// temporary directory) and reads its address from its first line.
    pub(crate) fn start(
        exe: Option<&std::path::Path>,
        data: Option<std::path::PathBuf>,
    ) -> Result<SpawnedServer, Failure> {
        let (dir, path) = match data {
            Some(p) => (None, p),
            None => {
                let d = tempfile::tempdir().map_err(|e| Failure::usage(e.to_string()))?;
                let p = d.path().to_path_buf();
                (Some(d), p)
            }
        };
        let token = format!("bench-bootstrap-{:016x}", random_u64());
        let mut s = Self::spawn(exe, &["--data".as_ref(), path.as_os_str()], &token)?;
        s._dir = dir;
        Ok(s)
    }

    /// Starts `exe` as a replica on PostgreSQL database `url` with bootstrap token `token`
    /// (the same for every replica of one database).
    pub(crate) fn replica(
        exe: Option<&std::path::Path>,
        url: &str,
        token: &str,
    ) -> Result<SpawnedServer, Failure> {
        Self::spawn(exe, &["--database".as_ref(), url.as_ref()], token)
    }

    /// The server's process id (its CPU time and memory are read from /proc).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    fn spawn(
        exe: Option<&std::path::Path>,
        store: &[&std::ffi::OsStr],
        token: &str,
    ) -> Result<SpawnedServer, Failure> {
        let exe = match exe {
            Some(p) => p.to_path_buf(),
            None => std::env::current_exe().map_err(|e| Failure::usage(e.to_string()))?,
        };
        let mut child = Command::new(exe)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(store)
            .env("MACPOOL_BOOTSTRAP_TOKEN", token)
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
            token: token.to_string(),
            _dir: None,
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
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id().into());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_count_idle_and_iowait_as_not_busy() {
        let t = CpuTicks::parse("cpu  100 5 50 1000 20 3 2 7 0 0").unwrap();
        assert_eq!(t.total, 1187);
        assert_eq!(t.busy, 1187 - 1000 - 20);
    }

    #[test]
    fn cpu_ticks_refuse_other_lines_and_short_or_bad_ones() {
        assert!(CpuTicks::parse("cpu0 1 2 3 4 5 6 7 8").is_none());
        assert!(CpuTicks::parse("cpu 1 2 3").is_none());
        assert!(CpuTicks::parse("cpu 1 2 x 4 5").is_none());
    }

    #[test]
    fn cpu_per_allocation_is_busy_time_over_allocations() {
        let m = Measured {
            elapsed: Duration::from_secs(2),
            machine_cpu: Some(CpuTicks {
                busy: 300,
                total: 400,
            }),
        };
        assert_eq!(m.cpu_us_per(30_000), Some(100.0));
        assert_eq!(m.cpu_us_per(0), None);
        assert!(Measured::default().cpu_us_per(10).is_none());
        assert_eq!(m.cpu_json(30_000)["busy_percent"], 75.0);
    }
}
