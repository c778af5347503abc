//! `macpool-checker`: proves that no MAC is ever leased twice across several `macpool serve`
//! replicas sharing one database, while replicas are killed with SIGKILL and restarted.
//!
//! A run: start R replicas (`macpool serve --database URL --listen 127.0.0.1:0`, one after the
//! other, each with `MACPOOL_BOOTSTRAP_TOKEN`), create one small pool with a short cooldown
//! through the API, let N clients ([`workload`]) allocate, release, hold, unhold and send
//! inventories against random live replicas for the given duration while the main task kills
//! one random replica every `kill_every` and restarts it on a new port after a short pause.
//! Then stop the clients, read the leases from every replica, the pools and the whole history
//! from one, and run the [`checks`]. The [`Report`] lists operations, kills, restarts and
//! violations; a run passes only with none.

pub mod checks;
pub mod replicas;
pub mod report;
pub mod workload;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use macpool_api::dto::{HistoryInfo, HistoryQuery, LeaseQuery, PoolCreate};
use macpool_client::{Client, ClientError};
use macpool_core::Mac;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::checks::{HistoryRow, Violation};
use crate::replicas::{Replicas, StoreArgs};
pub use crate::report::Report;
use crate::workload::{ClientLog, Worker};

/// The admin token the replicas are started with when none is given (at least 24 characters:
/// `macpool serve` refuses shorter bootstrap tokens).
pub const DEFAULT_TOKEN: &str = "macpool-checker-bootstrap-token-0123456789";
/// The pool the checker creates; the database must not have one of that name.
pub const POOL: &str = "checker";
/// The pool's first address (locally administered unicast).
pub const POOL_FIRST: u64 = 0x02c0_ffee_0000;
/// Most history rows one request returns (`GET /history?limit=`).
const HISTORY_LIMIT: u32 = 10_000;
/// Shortest bootstrap token `macpool serve` accepts.
const MIN_TOKEN_LEN: usize = 24;

#[derive(Clone, Debug)]
pub struct Config {
    /// The `macpool` binary.
    pub macpool: PathBuf,
    /// `postgres://…`, or `sqlite:DIR` (one replica only).
    pub database: String,
    pub replicas: usize,
    pub clients: usize,
    pub duration: Duration,
    /// Kill one random replica this often; `None`: never.
    pub kill_every: Option<Duration>,
    /// Between a kill and the restart of that replica.
    pub restart_pause: Duration,
    pub seed: u64,
    pub token: String,
    pub pool_size: u64,
    pub cooldown: Duration,
    /// Slack for comparing history times (milliseconds of wall clock) with the cooldown.
    pub clock_tolerance: Duration,
    /// VMs per client.
    pub vms_per_client: usize,
    /// Where to keep each replica's stderr and every request (`requests.jsonl`).
    pub log_dir: Option<PathBuf>,
}

impl Config {
    /// The defaults of the `macpool-checker` binary.
    pub fn new(macpool: impl Into<PathBuf>, database: impl Into<String>) -> Config {
        Config {
            macpool: macpool.into(),
            database: database.into(),
            replicas: 2,
            clients: 16,
            duration: Duration::from_secs(30),
            kill_every: Some(Duration::from_secs(3)),
            restart_pause: Duration::from_millis(500),
            seed: 1,
            token: DEFAULT_TOKEN.into(),
            pool_size: 4096,
            cooldown: Duration::from_secs(2),
            clock_tolerance: Duration::from_millis(50),
            vms_per_client: 24,
            log_dir: None,
        }
    }

    pub fn validate(&self) -> Result<(), CheckerError> {
        let usage = |m: String| Err(CheckerError::Usage(m));
        let db = self.database.as_str();
        let sqlite = db.starts_with("sqlite:");
        if !sqlite && !db.starts_with("postgres://") && !db.starts_with("postgresql://") {
            return usage(format!(
                "--database must be postgres://… or sqlite:DIR, not '{}'",
                redact(db)
            ));
        }
        if sqlite && self.replicas != 1 {
            return usage(format!(
                "sqlite:DIR is one process's store: use --replicas 1 with it, not {}",
                self.replicas
            ));
        }
        if self.replicas == 0 || self.clients == 0 || self.vms_per_client == 0 {
            return usage("--replicas, --clients and --vms-per-client must be at least 1".into());
        }
        if self.duration.is_zero() {
            return usage("--duration must be at least 1 second".into());
        }
        if self.kill_every.is_some_and(|k| k.is_zero()) {
            return usage(
                "--kill-every must be positive (0 on the command line means never)".into(),
            );
        }
        if self.token.len() < MIN_TOKEN_LEN {
            return usage(format!(
                "--token must be at least {MIN_TOKEN_LEN} characters (macpool serve refuses \
                 shorter bootstrap tokens)"
            ));
        }
        if !(16..=65_536).contains(&self.pool_size) {
            return usage("--pool-size must be between 16 and 65536".into());
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckerError {
    /// Bad flags: exit 2.
    #[error("{0}")]
    Usage(String),
    /// The run could not be carried out (a replica would not start, the setup failed): exit 1,
    /// nothing was proven.
    #[error("{0:#}")]
    Run(anyhow::Error),
}

impl From<anyhow::Error> for CheckerError {
    fn from(e: anyhow::Error) -> CheckerError {
        CheckerError::Run(e)
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some(x) => x,
        None => return url.to_string(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// Runs the whole check; the replicas are gone when it returns.
pub async fn run(cfg: Config) -> Result<Report, CheckerError> {
    cfg.validate()?;
    let store = StoreArgs::detect(&cfg.macpool, &cfg.database).await?;
    if let Some(d) = &cfg.log_dir {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let mut reps = Replicas::new(
        cfg.macpool.clone(),
        store,
        cfg.token.clone(),
        cfg.log_dir.clone(),
        cfg.replicas,
        Instant::now(),
    );
    let result = drive(&cfg, &mut reps).await;
    reps.stop_all().await;
    result
}

async fn drive(cfg: &Config, reps: &mut Replicas) -> Result<Report, CheckerError> {
    // One after the other: the first one creates the schema and the admin token.
    for slot in 0..reps.count() {
        reps.start(slot).await?;
    }
    let admin = reps.cluster.all()[0].client.clone();
    let last = POOL_FIRST + cfg.pool_size - 1;
    let range = format!(
        "{}..{}",
        Mac::from_u64(POOL_FIRST).unwrap(),
        Mac::from_u64(last).unwrap()
    );
    admin
        .create_pool(&PoolCreate {
            name: POOL.into(),
            ranges: vec![range],
            order: Some("next-fit".into()),
            cooldown: Some(format!("{}ms", cfg.cooldown.as_millis())),
            ..PoolCreate::default()
        })
        .await
        .map_err(|e| {
            anyhow!(
                "cannot create the pool '{POOL}' ({e}); the checker needs a fresh, empty \
                 database"
            )
        })?;

    let t0 = Instant::now();
    reps.set_origin(t0);
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for c in 0..cfg.clients {
        let w = Worker::new(
            c,
            cfg.seed,
            cfg.vms_per_client,
            POOL.into(),
            reps.cluster.clone(),
            t0,
            stop.clone(),
        );
        handles.push(tokio::spawn(w.run()));
    }

    let mut violations: Vec<Violation> = Vec::new();
    let mut rng = StdRng::seed_from_u64(cfg.seed.rotate_left(17) ^ 0x6b69_6c6c);
    let deadline = t0 + cfg.duration;
    let mut next_kill = cfg.kill_every.map(|k| t0 + k);
    let chaos = async {
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok::<(), anyhow::Error>(());
            }
            let wake = next_kill
                .map_or(deadline, |k| k.min(deadline))
                .min(now + Duration::from_millis(200));
            tokio::time::sleep_until(wake.into()).await;
            for (slot, msg) in reps.reap_exited() {
                violations.push(Violation {
                    check: checks::REPLICA.into(),
                    detail: msg,
                });
                reps.start(slot).await?;
            }
            if let (Some(k), Some(every)) = (next_kill, cfg.kill_every)
                && Instant::now() >= k
                && Instant::now() < deadline
            {
                let slot = rng.random_range(0..reps.count());
                reps.kill(slot).await?;
                tokio::time::sleep(cfg.restart_pause).await;
                reps.start(slot).await?;
                next_kill = Some((k + every).max(Instant::now()));
            }
        }
    };
    let chaos = chaos.await;
    stop.store(true, Ordering::Relaxed);
    if let Err(e) = chaos {
        for h in &handles {
            h.abort();
        }
        return Err(CheckerError::Run(e.context("the run was cut short")));
    }
    let mut logs: Vec<ClientLog> = Vec::new();
    let join_by = Instant::now() + Duration::from_secs(120);
    for h in handles {
        match tokio::time::timeout_at(join_by.into(), h).await {
            Ok(Ok(log)) => logs.push(log),
            Ok(Err(e)) => return Err(anyhow!("a client task failed: {e}").into()),
            Err(_) => {
                return Err(anyhow!("the clients did not finish within 120 s of the end").into());
            }
        }
    }
    let workload = t0.elapsed();
    for (slot, msg) in reps.reap_exited() {
        violations.push(Violation {
            check: checks::REPLICA.into(),
            detail: msg,
        });
        reps.start(slot).await?;
    }
    // Let every replica catch up with the others' last writes before reading.
    tokio::time::sleep(Duration::from_secs(1)).await;
    check(cfg, reps, logs, workload, violations).await
}

/// Retries a read a few times: the replicas are all up, but one may still be starting.
async fn read<T, F, Fut>(what: &str, f: F) -> anyhow::Result<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let mut last = None;
    for _ in 0..5 {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(anyhow!("cannot read {what}: {}", last.unwrap()))
}

async fn check(
    cfg: &Config,
    reps: &Replicas,
    logs: Vec<ClientLog>,
    workload: Duration,
    mut violations: Vec<Violation>,
) -> Result<Report, CheckerError> {
    let endpoints = reps.cluster.all();
    let expected: Vec<_> = logs
        .iter()
        .flat_map(|l| l.final_vms.iter().cloned())
        .collect();
    let mut leases_checked = 0;
    for ep in &endpoints {
        let q = LeaseQuery {
            pool: Some(POOL.into()),
            ..LeaseQuery::default()
        };
        let leases = read(&format!("the leases of replica {}", ep.name()), || {
            ep.client.leases(&q)
        })
        .await?;
        let (v, n) = checks::leases_present(&expected, &leases, &ep.name());
        violations.extend(v);
        leases_checked = n;
        let pools = read(&format!("the pools of replica {}", ep.name()), || {
            ep.client.pools()
        })
        .await?;
        for p in pools.iter().filter(|p| p.name == POOL) {
            violations.extend(checks::pool_accounting(p, &ep.name()));
        }
    }

    let (history, history_source, history_requests) =
        fetch_history(&endpoints[0].client, cfg.pool_size).await?;
    let (v, replay) = checks::replay(
        &history,
        cfg.cooldown.as_millis() as u64,
        cfg.clock_tolerance.as_millis() as u64,
    );
    violations.extend(v);

    let intervals: Vec<_> = logs
        .iter()
        .flat_map(|l| l.intervals.iter().cloned())
        .collect();
    violations.extend(checks::overlapping_owners(&intervals));
    let allocs: Vec<_> = logs.iter().flat_map(|l| l.allocs.iter().cloned()).collect();
    let releases: Vec<_> = logs
        .iter()
        .flat_map(|l| l.releases.iter().cloned())
        .collect();
    let (v, client_gaps) = checks::cooldown_from_logs(
        &allocs,
        &releases,
        cfg.cooldown.as_micros() as u64,
        cfg.clock_tolerance.as_micros() as u64,
    );
    violations.extend(v);
    for l in &logs {
        violations.extend(l.violations.iter().cloned());
    }
    if allocs.is_empty() {
        violations.push(Violation {
            check: checks::WORKLOAD.into(),
            detail: "no allocation was acknowledged: nothing was checked".into(),
        });
    }

    let mut requests: Vec<_> = logs
        .iter()
        .flat_map(|l| l.requests.iter().cloned())
        .collect();
    requests.sort_by_key(|r| (r.start_us, r.client));
    if let Some(d) = &cfg.log_dir {
        let mut text = String::new();
        for r in &requests {
            text.push_str(&serde_json::to_string(r).unwrap());
            text.push('\n');
        }
        std::fs::write(d.join("requests.jsonl"), text).context("cannot write requests.jsonl")?;
    }
    Ok(Report::build(report::Inputs {
        cfg,
        workload,
        requests: &requests,
        operations: logs.iter().map(|l| l.operations).sum(),
        acknowledged: logs.iter().map(|l| l.answered).sum(),
        events: reps.events.clone(),
        history_entries: replay.entries,
        history_source,
        history_requests,
        leases_checked,
        replicas_read: endpoints.len(),
        intervals: intervals.len(),
        replay,
        client_gaps,
        violations,
    }))
}

type PerMac = BTreeMap<Mac, Vec<HistoryRow>>;

/// The whole history of the pool's MACs, oldest first per MAC: `GET /history` page by page,
/// each page starting before the last id of the one before.
async fn fetch_history(client: &Client, size: u64) -> anyhow::Result<(PerMac, &'static str, u64)> {
    let mut newest_first = Vec::new();
    let mut before = None;
    let mut requests = 0;
    loop {
        let q = HistoryQuery {
            limit: Some(HISTORY_LIMIT),
            before,
            ..HistoryQuery::default()
        };
        let page = read("the history", || client.history(&q)).await?;
        requests += 1;
        let full = page.len() == HISTORY_LIMIT as usize;
        if let Some(last) = page.last() {
            anyhow::ensure!(
                before.is_none_or(|b| last.id < b),
                "GET /history returned id {} on the page before {before:?}",
                last.id
            );
            before = Some(last.id);
        }
        newest_first.extend(page);
        if !full {
            break;
        }
    }
    let mut out = PerMac::new();
    for h in newest_first.iter().rev() {
        if let Some((mac, row)) = history_row(h, size)? {
            out.entry(mac).or_default().push(row);
        }
    }
    let how = if requests == 1 {
        "one request"
    } else {
        "pages of 10,000 rows"
    };
    Ok((out, how, requests))
}

fn history_row(h: &HistoryInfo, size: u64) -> anyhow::Result<Option<(Mac, HistoryRow)>> {
    let Some(mac) = h.mac.as_deref() else {
        return Ok(None);
    };
    let mac = Mac::parse(mac).map_err(|e| anyhow!("history MAC {mac}: {e}"))?;
    if !(POOL_FIRST..POOL_FIRST + size).contains(&mac.to_u64()) {
        return Ok(None);
    }
    let at_ms = checks::parse_time_ms(&h.at).ok_or_else(|| anyhow!("history time '{}'", h.at))?;
    Ok(Some((
        mac,
        HistoryRow {
            at_ms,
            action: h.action.clone(),
            vm: h.vm_id.clone().unwrap_or_default(),
            adapter: h.adapter_id.clone().unwrap_or_default(),
        },
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_do_not_reach_the_report() {
        assert_eq!(
            redact("postgres://u:secret@127.0.0.1:5432/db"),
            "postgres://u:***@127.0.0.1:5432/db"
        );
        assert_eq!(
            redact("postgres://postgres@127.0.0.1/db"),
            "postgres://postgres@127.0.0.1/db"
        );
        assert_eq!(redact("sqlite:/tmp/x"), "sqlite:/tmp/x");
    }

    #[test]
    fn usage_errors() {
        let ok = Config::new("/bin/macpool", "postgres://x/y");
        assert!(ok.validate().is_ok());
        let bad = |f: fn(&mut Config)| {
            let mut c = ok.clone();
            f(&mut c);
            matches!(c.validate(), Err(CheckerError::Usage(_)))
        };
        assert!(bad(|c| c.database = "mysql://x".into()));
        assert!(bad(|c| c.database = "sqlite:/tmp/x".into()));
        assert!(bad(|c| c.replicas = 0));
        assert!(bad(|c| c.token = "short".into()));
        assert!(bad(|c| c.pool_size = 70_000));
        let mut one = ok.clone();
        one.database = "sqlite:/tmp/x".into();
        one.replicas = 1;
        assert!(one.validate().is_ok());
    }
}
