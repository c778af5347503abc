//! `macpool-checker`: N clients against R `macpool serve` replicas on one database, with
//! `kill -9` and restarts, then checks that no MAC was ever leased twice.
//! Exit codes: 0 no violations, 1 violations (or the run could not be carried out), 2 usage.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use macpool_checker::{CheckerError, Config, DEFAULT_TOKEN};

#[derive(Parser, Debug)]
#[command(
    name = "macpool-checker",
    version,
    about = "Proves that no MAC is ever leased twice across several `macpool serve` replicas on \
             one database, while replicas are killed (-9) and restarted.",
    after_help = "Exit codes: 0 no violations, 1 violations (or the run failed), 2 usage.\n\
                  The database must be fresh: the checker creates its pool 'checker' in it."
)]
struct Args {
    /// The macpool binary.
    #[arg(long, value_name = "PATH")]
    macpool: PathBuf,
    /// postgres://… (any number of replicas) or sqlite:DIR (one replica).
    #[arg(long, value_name = "URL")]
    database: String,
    /// `macpool serve` processes on the database.
    #[arg(long, default_value_t = 2)]
    replicas: usize,
    /// Concurrent clients, each with its own VMs and host.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Seconds of workload.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    duration: u64,
    /// Every SECS, kill -9 one random replica and restart it on a new port (0: never).
    #[arg(long, value_name = "SECS", default_value_t = 3)]
    kill_every: u64,
    /// Milliseconds between a kill and the restart.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    restart_pause_ms: u64,
    /// Seed for the clients' choices and the kills (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// The admin token the replicas are started with (MACPOOL_BOOTSTRAP_TOKEN; ≥ 24 chars).
    #[arg(long, env = "MACPOOL_CHECKER_TOKEN", default_value = DEFAULT_TOKEN, hide_default_value = true, hide_env_values = true)]
    token: String,
    /// Addresses in the pool (small, so that addresses are reused).
    #[arg(long, default_value_t = 4096)]
    pool_size: u64,
    /// The pool's reuse cooldown in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 2)]
    cooldown: u64,
    /// Clock slack when comparing history times with the cooldown.
    #[arg(long, value_name = "MS", default_value_t = 50)]
    clock_tolerance_ms: u64,
    /// VMs per client.
    #[arg(long, default_value_t = 24)]
    vms_per_client: usize,
    /// Keep each replica's stderr and every request (requests.jsonl) here.
    #[arg(long, value_name = "DIR")]
    log_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let cfg = Config {
        replicas: args.replicas,
        clients: args.clients,
        duration: Duration::from_secs(args.duration),
        kill_every: (args.kill_every > 0).then(|| Duration::from_secs(args.kill_every)),
        restart_pause: Duration::from_millis(args.restart_pause_ms),
        seed,
        token: args.token,
        pool_size: args.pool_size,
        cooldown: Duration::from_secs(args.cooldown),
        clock_tolerance: Duration::from_millis(args.clock_tolerance_ms),
        vms_per_client: args.vms_per_client,
        log_dir: args.log_dir,
        ..Config::new(args.macpool, args.database)
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(macpool_checker::run(cfg)) {
        Ok(report) => {
            if args.json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.to_text());
            }
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(CheckerError::Usage(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
