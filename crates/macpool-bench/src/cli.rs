//! The command line, as clap types: one subcommand per benchmark, with the flags
//! `macpool bench …` had, plus the hidden `serve` and `standin` the benchmarks start.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "macpool-bench",
    version,
    about = "Benchmarks and load generators for macpool (not shipped in the macpool binary): \
             run as `cargo run -p macpool-bench --release -- <command>`; BENCHMARKS.md has the \
             numbers and the commands that made them."
)]
pub struct Cli {
    /// Bearer token for `allocate --target` (a running server).
    #[arg(long, global = true, env = "MACPOOL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Read that token from this file instead. Surrounding whitespace is ignored.
    #[arg(
        long,
        global = true,
        env = "MACPOOL_TOKEN_FILE",
        conflicts_with = "token"
    )]
    pub token_file: Option<PathBuf>,
    /// Print machine-readable JSON instead of `key  value` lines.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// What the hidden `serve` takes: the store the benchmark chose, a free port.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: std::net::SocketAddr,
    /// The embedded store's directory.
    #[arg(long, conflicts_with = "database")]
    pub data: Option<PathBuf>,
    /// `sqlite:DIR` or `postgres://…`.
    #[arg(long)]
    pub database: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Durable allocations per second through the HTTP API.
    Allocate(BenchAllocateArgs),
    /// The agent's decision latency: rollback event arrival → guard decision (stand-in +
    /// authority) → first command sent to the hypervisor.
    Decide(BenchDecideArgs),
    /// Reference allocators driven directly in SQL on a PostgreSQL database (NetBox, Neutron,
    /// SKIP LOCKED, claimed chunks), each on fresh tables, for comparison with macpool.
    Sql(BenchSqlArgs),
    /// The dashboard on a seeded fleet-sized store: time and compressed bytes of each page, and
    /// the p99 of concurrent allocations with and without 10 browsers refreshing conflicts.
    Dashboard(BenchDashboardArgs),
    /// A fleet of Hyper-V hosts with pooled desktops pushing inventories on the agent's
    /// schedule (rollbacks, logoff bursts, migrations), Prometheus-style scrapes and conflict
    /// reads, beside allocating clients: push, scrape, conflict and allocation latency (the
    /// allocations also alone, side by side), server CPU and memory.
    Fleet(BenchFleetArgs),
    /// `macpool serve` on the given store: the server the benchmarks start unless `--binary`
    /// names another build (internal).
    #[command(hide = true)]
    Serve(ServeArgs),
    /// The Hyper-V stand-in on stdin/stdout, as `hyperv-standin` (the `decide` benchmark's
    /// hypervisor; internal).
    #[command(hide = true)]
    Standin {
        /// The stand-in's own flags (`--state FILE`, `--host NAME --range FIRST-LAST`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Args, Debug, Clone)]
pub struct BenchFleetArgs {
    /// Hyper-V hosts, each pushing its whole inventory.
    #[arg(long, default_value_t = 1000)]
    pub hosts: u32,
    /// Pooled desktops per host.
    #[arg(long, default_value_t = 100)]
    pub desktops: u32,
    /// Checkpoint adapters per desktop (besides its live one).
    #[arg(long, default_value_t = 3)]
    pub checkpoints: u32,
    /// Seconds between a host's timer pushes (the agent's `inventory_every`).
    #[arg(long, default_value_t = 60)]
    pub push_interval: u64,
    /// Seconds, on average, between two rollbacks (logoffs) of one desktop; they come in
    /// bursts of 1 to 10 desktops of one host, each burst followed by a debounced push.
    #[arg(long, default_value_t = 1800)]
    pub rollback_every: u64,
    /// Seconds between two live migrations of a desktop to another host (fleet-wide).
    #[arg(long, default_value_t = 10)]
    pub migrate_every: u64,
    /// Latent conflicts seeded: a checkpoint holding the MAC another host's desktop uses.
    #[arg(long, default_value_t = 100)]
    pub duplicates: u32,
    /// Seconds the fleet load runs (at least as long as the allocations under it).
    #[arg(long, default_value_t = 90)]
    pub duration: u64,
    /// Clients scraping `/metrics`, each once per `--scrape-every-ms`.
    #[arg(long, default_value_t = 2)]
    pub scrapers: usize,
    /// Milliseconds between two scrapes of one scraper (Prometheus: 15,000; shorter gives
    /// more samples and more load).
    #[arg(long, default_value_t = 1000)]
    pub scrape_every_ms: u64,
    /// Clients reading `/api/v1/conflicts`, each every 2 s (an admin's dashboard).
    #[arg(long, default_value_t = 2)]
    pub conflict_readers: usize,
    /// Allocating clients, in each of the two runs (alone and under the fleet).
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Allocations per client in each run.
    #[arg(long, default_value_t = 300)]
    pub per_client: usize,
    /// Seed of the churn (same seed, same fleet and events).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Run on PostgreSQL, with `--replicas` servers: the URL of any database on the server;
    /// the benchmark creates a fresh `macpool_bench_fleet` database next to it (dropped first).
    #[arg(long, value_name = "URL")]
    pub database: Option<String>,
    /// Replicas on `--database`; hosts and clients spread over them.
    #[arg(long, default_value_t = 2, requires = "database")]
    pub replicas: usize,
    /// Where the started server keeps its embedded store (default: a temporary directory).
    #[arg(long, conflicts_with = "database")]
    pub data: Option<PathBuf>,
    /// The `macpool` binary to start as the server (default: this binary's own `serve`, the
    /// same server code as `macpool serve`), so another build can be measured by the same
    /// client for a before/after.
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct BenchDashboardArgs {
    /// Leases to seed in the 1,048,576-address pool.
    #[arg(long, default_value_t = 100_000)]
    pub leases: u64,
    /// Holds to seed.
    #[arg(long, default_value_t = 10_000)]
    pub holds: u64,
    /// Hosts reporting an inventory of 250 VMs × 4 adapters (1 live, 3 checkpoints) each.
    #[arg(long, default_value_t = 64)]
    pub hosts: u32,
    /// Timed requests per page.
    #[arg(long, default_value_t = 50)]
    pub requests: usize,
    /// Browsers refreshing the conflicts page (once a second each) during the second
    /// allocation run.
    #[arg(long, default_value_t = 10)]
    pub browsers: usize,
    /// Allocating clients in each side-by-side run.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Allocations per client in each side-by-side run.
    #[arg(long, default_value_t = 200)]
    pub per_client: usize,
    /// Where the started server keeps its store (default: a temporary directory).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// The `macpool` binary to start as the server (default: this binary's own `serve`, the
    /// same server code as `macpool serve`), so another build can be measured by the same
    /// client for a before/after.
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct BenchSqlArgs {
    /// PostgreSQL URL (postgres://user@host:port/db); the bench creates and drops its own
    /// tables (`macpool_bench_*`) there.
    #[arg(long, env = "DATABASE_URL")]
    pub database: String,
    /// netbox (advisory lock, lowest free), neutron (random MAC, unique constraint, retry),
    /// skip-locked (table of free addresses, FOR UPDATE SKIP LOCKED) or chunks (each client
    /// claims 64-address chunks, then inserts into its own chunk).
    #[arg(long)]
    pub pattern: String,
    /// Concurrent clients, one database connection each.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Timed allocations in all (shared by the clients), each its own committed transaction.
    #[arg(long, default_value_t = 3200)]
    pub allocations: usize,
    /// Percent of the range allocated (at random addresses) before timing.
    #[arg(long, default_value_t = 0.0)]
    pub fill: f64,
    /// Addresses in the range.
    #[arg(long, default_value_t = 65536)]
    pub range_size: u64,
    /// Seed of the pre-fill and of the random choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Wrap every allocation in BEGIN … COMMIT with one statement per step, as an ORM sends
    /// it, instead of the fewest statements that keep each allocation one transaction.
    #[arg(long)]
    pub explicit_transactions: bool,
}

#[derive(Args, Debug, Clone)]
pub struct BenchDecideArgs {
    /// Rollbacks to decide (each one a real conflict that guard fixes).
    #[arg(long, default_value_t = 300)]
    pub iterations: u32,
}

#[derive(Args, Debug, Clone)]
pub struct BenchAllocateArgs {
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Allocations per client.
    #[arg(long, default_value_t = 1000)]
    pub per_client: usize,
    /// Benchmark this running server (needs --token) instead of starting one. Repeat it (or
    /// separate URLs with commas) for replicas on one database: clients go round-robin.
    #[arg(long, value_delimiter = ',')]
    pub target: Vec<String>,
    /// Where the started server keeps its store (default: a temporary directory).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// The `macpool` binary to start as the server (default: this binary's own `serve`, the
    /// same server code as `macpool serve`), so another build can be measured by the same
    /// client for a before/after.
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
    /// Allocate from this existing pool instead of creating `bench-<pid>`.
    #[arg(long)]
    pub pool: Option<String>,
    /// Addresses in the created pool.
    #[arg(long, default_value_t = 0x10_0000)]
    pub pool_size: u64,
    /// Allocation order of the created pool: next-fit or lowest (default: the server's).
    #[arg(long)]
    pub order: Option<String>,
    /// Before timing, allocate (untimed, in large requests) until this percent of the pool is
    /// in use, through each target in turn: replicas of one store find it filled already,
    /// separate stores (`--pool` on each) are each filled.
    #[arg(long, default_value_t = 0.0)]
    pub fill: f64,
    /// Before timing, let every client open its connection with one untimed request.
    #[arg(long)]
    pub warm_up: bool,
}

impl BenchAllocateArgs {
    /// The allocations the dashboard and fleet benchmarks run beside their load: `clients` ×
    /// `per_client` on the already seeded pool `pool` of `pool_size` addresses, warmed up, on
    /// the server they started.
    pub fn beside_load(clients: usize, per_client: usize, pool: &str, pool_size: u64) -> Self {
        BenchAllocateArgs {
            clients,
            per_client,
            target: vec![],
            data: None,
            binary: None,
            pool: Some(pool.into()),
            pool_size,
            order: None,
            fill: 0.0,
            warm_up: true,
        }
    }
}
