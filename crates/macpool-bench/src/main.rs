//! `macpool-bench`: the benchmarks and load generators, a tool kept out of the shipped
//! `macpool` binary (`cargo run -p macpool-bench --release -- <command>`).
//!
//! Modules, each importing only those below it (no circle):
//! - `allocate`, `dashboard`, `decide`, `fleet`, `sql`: one benchmark each;
//! - `load` (the allocating clients), `desktop` (the pooled desktops' adapters), `server` (the
//!   `macpool serve` child), `wire` (the lean HTTP/1.1 connection), `measure` (percentiles,
//!   wall time, CPU);
//! - `cli`, `exit`, `output`: flags, exit codes, reports.

mod allocate;
mod cli;
mod dashboard;
mod decide;
mod desktop;
mod exit;
mod fleet;
mod load;
mod measure;
mod output;
mod server;
mod sql;
mod wire;

use clap::Parser;

use cli::{Cli, Command, ServeArgs};
use exit::{CmdResult, Failure, OK, UNREACHABLE};
use output::Output;

/// As in `macpool`: the server the benchmarks start by default is this binary's `serve`, so it
/// runs on the allocator the shipped server runs on.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = Cli::parse();
    if let Command::Standin { args } = &cli.command {
        std::process::exit(macpool_agent::standin::serve_stdio(args));
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MACPOOL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("macpool-bench: cannot start the async runtime: {e}");
            std::process::exit(UNREACHABLE);
        }
    };
    let code = match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(f) => {
            if !f.message.is_empty() {
                eprintln!("macpool-bench: {}", f.message);
            }
            f.code
        }
    };
    drop(runtime);
    std::process::exit(code);
}

async fn run(cli: Cli) -> CmdResult {
    let out = Output { json: cli.json };
    let token = match &cli.token_file {
        Some(p) => {
            let t = std::fs::read_to_string(p).map_err(|e| {
                Failure::usage(format!("cannot read the token file {}: {e}", p.display()))
            })?;
            Some(t.trim().to_string()).filter(|t| !t.is_empty())
        }
        None => cli.token.clone(),
    };
    match cli.command {
        Command::Allocate(args) => allocate::run(out, &token, args).await,
        Command::Decide(args) => decide::run(out, args).await,
        Command::Sql(args) => sql::run(out, args).await,
        Command::Dashboard(args) => dashboard::run(out, args).await,
        Command::Fleet(args) => fleet::run(out, args).await,
        Command::Serve(args) => serve(args).await,
        Command::Standin { .. } => unreachable!("the stand-in runs before the runtime starts"),
    }
}

/// `macpool serve` as the shipped binary runs it, on what the benchmark chose: the bootstrap
/// token from `MACPOOL_BOOTSTRAP_TOKEN`, plain HTTP, metrics behind the token.
async fn serve(args: ServeArgs) -> CmdResult {
    let database = match (args.database, args.data) {
        (Some(db), _) => macpool_store::Location::parse(&db).map_err(Failure::usage)?,
        (None, Some(dir)) => macpool_store::Location::Sqlite(dir),
        (None, None) => return Err(Failure::usage("serve needs --data or --database")),
    };
    let opts = macpool_server::serve::ServeOptions {
        listen: args.listen,
        database,
        tls_cert: None,
        tls_key: None,
        public_metrics: false,
        bootstrap_token: std::env::var("MACPOOL_BOOTSTRAP_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
    };
    macpool_server::serve::run(opts)
        .await
        .map_err(|e| Failure {
            code: UNREACHABLE,
            message: format!("{e:#}"),
        })?;
    Ok(OK)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// As `macpool`'s help_descriptions test, which covered these flags while they were
    /// `macpool bench …`: every flag and subcommand `--help` shows has a description.
    #[test]
    fn every_option_in_help_has_a_description() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let clap_own = matches!(arg.get_id().as_str(), "help" | "version");
                if !arg.is_hide_set() && !clap_own && arg.get_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
                let sub_path = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() {
                    missing.push(format!("{sub_path} (the subcommand)"));
                }
                walk(sub, &sub_path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "macpool-bench", &mut missing);
        assert!(
            missing.is_empty(),
            "no description for:\n  {}",
            missing.join("\n  ")
        );
    }
}
