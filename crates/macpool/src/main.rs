//! The `macpool` binary: parses flags, wires the parts, and turns errors into exit codes.
//! All logic lives in the library crates; this only connects them.

mod cli;
mod commands;
mod exit;
#[cfg(test)]
mod help_descriptions;
mod output;

use clap::Parser;

/// The server allocates many small short-lived buffers per request; mimalloc handles that
/// pattern markedly better than glibc's allocator (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = cli::Cli::parse();
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
            eprintln!("macpool: cannot start the async runtime: {e}");
            std::process::exit(exit::UNREACHABLE);
        }
    };
    let code = match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(f) => {
            eprintln!("macpool: {}", f.message);
            f.code
        }
    };
    drop(runtime);
    std::process::exit(code);
}
