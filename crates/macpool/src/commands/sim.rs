//! `macpool sim`: replays a Hyper-V failover cluster of RDS pooled desktops under each strategy
//! (see `macpool_sim`), prints the comparison as a table or `--json`, and writes an HTML report.
//! Needs no server: the authority core runs in-process.
//!
//! Parameters come in layers — the scenario's preset, `--config FILE.toml`, then `--set
//! KEY=VALUE` and the shorthand flags, in that order — and are all checked before anything
//! runs; an impossible set exits 2 with the reason.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use macpool_sim::{Params, Scenario, simulate};

use crate::exit::{CmdResult, Failure, OK};
use crate::output::Output;

#[derive(Args, Debug)]
pub struct SimArgs {
    /// blog (the seed's exact sequence, 2 hosts), campus (8 hosts, 1,000 desktops, 30 days) or
    /// large (64 hosts, 10,000 desktops, 30 days).
    #[arg(long, default_value = "campus")]
    pub scenario: String,
    /// A TOML file of parameters laid over the scenario (`--print-params` shows every key).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// KEY=VALUE for any parameter (repeatable), laid over --config. VALUE is TOML
    /// (`hosts=4`, `host_ips=["10.0.1.5","10.1.1.5"]`) or plain text (`duration=10d`).
    #[arg(long = "set", value_name = "KEY=VALUE", allow_hyphen_values = true)]
    pub set: Vec<String>,
    /// Random seed; the same seed and parameters give byte-identical --json.
    #[arg(long, allow_hyphen_values = true)]
    pub seed: Option<String>,
    /// Failover cluster nodes (shorthand for --set hosts=N).
    #[arg(long, allow_hyphen_values = true)]
    pub hosts: Option<String>,
    /// Pooled desktops (shorthand for --set desktops=N).
    #[arg(long, allow_hyphen_values = true)]
    pub desktops: Option<String>,
    /// Simulated time, e.g. 30d (shorthand for --set duration=D).
    #[arg(long, allow_hyphen_values = true)]
    pub duration: Option<String>,
    /// Strategies to compare, comma-separated: hyperv-default, blog-compatible, guard,
    /// delegate, delegate+guard (default: every one this build has).
    #[arg(long, value_delimiter = ',')]
    pub strategies: Vec<String>,
    /// Also write one self-contained HTML file with plots (no network needed to view it).
    #[arg(long, value_name = "FILE.html")]
    pub report: Option<PathBuf>,
    /// Strategies simulated in parallel (default: up to 2, one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print the parameters the run would use, as TOML for --config, and exit.
    #[arg(long)]
    pub print_params: bool,
}

fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The layered parameters of this invocation.
fn params(args: &SimArgs) -> Result<Params, Failure> {
    let scenario = Scenario::parse(&args.scenario).map_err(|e| Failure::usage(e.0))?;
    let file = match &args.config {
        Some(p) => Some(std::fs::read_to_string(p).map_err(|e| {
            Failure::usage(format!("cannot read parameter file {}: {e}", p.display()))
        })?),
        None => None,
    };
    let mut overrides = Vec::new();
    for kv in &args.set {
        let (k, v) = kv.split_once('=').ok_or_else(|| {
            Failure::usage(format!(
                "--set {kv}: expected KEY=VALUE, e.g. --set hosts=4"
            ))
        })?;
        overrides.push((k.trim().to_string(), v.trim().to_string()));
    }
    for (key, value) in [
        ("seed", &args.seed),
        ("hosts", &args.hosts),
        ("desktops", &args.desktops),
    ] {
        if let Some(v) = value {
            overrides.push((key.to_string(), v.clone()));
        }
    }
    if let Some(d) = &args.duration {
        overrides.push(("duration".into(), toml_string(d)));
    }
    if !args.strategies.is_empty() {
        let list: Vec<String> = args
            .strategies
            .iter()
            .map(|s| toml_string(s.trim()))
            .collect();
        overrides.push(("strategies".into(), format!("[{}]", list.join(", "))));
    }
    Params::layered(scenario, file.as_deref(), &overrides).map_err(|e| Failure::usage(e.0))
}

/// A progress bar on stderr, drawn only when stderr is a terminal and the run has taken more
/// than a second. Wall-clock time is used here and nowhere in the results.
struct Progress {
    names: Vec<String>,
    done: Vec<AtomicU64>,
    start: Instant,
    last: Mutex<Option<Instant>>,
    enabled: bool,
}

impl Progress {
    fn new(names: Vec<String>) -> Progress {
        Progress {
            done: names.iter().map(|_| AtomicU64::new(0)).collect(),
            names,
            start: Instant::now(),
            last: Mutex::new(None),
            enabled: std::io::stderr().is_terminal(),
        }
    }

    fn update(&self, i: usize, fraction: f64) {
        if let Some(d) = self.done.get(i) {
            d.store(fraction.to_bits(), Ordering::Relaxed);
        }
        if !self.enabled || self.start.elapsed() < Duration::from_secs(1) {
            return;
        }
        let Ok(mut last) = self.last.try_lock() else {
            return;
        };
        if last.is_some_and(|t| t.elapsed() < Duration::from_millis(100)) {
            return;
        }
        *last = Some(Instant::now());
        let parts: Vec<f64> = self
            .done
            .iter()
            .map(|d| f64::from_bits(d.load(Ordering::Relaxed)))
            .collect();
        let total = parts.iter().sum::<f64>() / parts.len().max(1) as f64;
        let width = 30;
        let filled = ((total * width as f64) as usize).min(width);
        let running: Vec<String> = self
            .names
            .iter()
            .zip(&parts)
            .filter(|(_, p)| **p > 0.0 && **p < 1.0)
            .map(|(n, p)| format!("{n} {:.0}%", p * 100.0))
            .collect();
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2K[{}{}] {:>3.0}%  {}",
            "#".repeat(filled),
            " ".repeat(width - filled),
            total * 100.0,
            running.join(", ")
        );
        let _ = err.flush();
    }

    fn finish(&self) {
        if self.enabled && self.last.lock().map(|l| l.is_some()).unwrap_or(false) {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }
}

pub async fn run(out: Output, args: SimArgs) -> CmdResult {
    let params = params(&args)?;
    if args.print_params {
        print!("{}", params.to_toml());
        return Ok(OK);
    }
    let checked = params.check().map_err(|e| Failure::usage(e.0))?;
    // Asked for by name (in any layer): run it or say why not. By default: what this build has.
    if !checked.params.strategies.is_empty() {
        for s in &checked.strategies {
            s.available().map_err(|why| {
                Failure::usage(format!("strategy {s} cannot run in this build: {why}"))
            })?;
        }
    }
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(2)
    });
    if threads == 0 {
        return Err(Failure::usage("--threads must be at least 1"));
    }
    let names: Vec<String> = checked
        .strategies
        .iter()
        .filter(|s| s.available().is_ok())
        .map(|s| s.name().to_string())
        .collect();
    let report = tokio::task::spawn_blocking(move || {
        let progress = Progress::new(names);
        let r = simulate(&checked, threads, &|i, f| progress.update(i, f));
        progress.finish();
        r
    })
    .await
    .map_err(|e| Failure {
        code: crate::exit::NO,
        message: format!("the simulation stopped: {e}"),
    })?;
    if let Some(path) = &args.report {
        std::fs::write(path, report.html())
            .map_err(|e| Failure::usage(format!("cannot write {}: {e}", path.display())))?;
    }
    if out.json {
        print!("{}", report.json());
    } else {
        print!("{}", report.summary());
        if let Some(path) = &args.report {
            println!("report: {}", path.display());
        }
    }
    Ok(OK)
}
