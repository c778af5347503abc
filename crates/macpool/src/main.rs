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

/// Is this panic `println!` meeting a closed stdout (`macpool history | head -1`)? Rust ignores
/// SIGPIPE, so every `print!` then panics; the reader having had enough is no error.
fn is_closed_stdout(info: &std::panic::PanicHookInfo) -> bool {
    let payload = info.payload();
    let message = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("");
    message.starts_with("failed printing to stdout")
        && (message.contains("Broken pipe") || message.contains("os error 232"))
}

fn main() {
    // One place for every command: output into a closed pipe ends quietly with 0, like ripgrep.
    // (Commands that write through `io::Write` map the same error with `exit::output_error`.)
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if is_closed_stdout(info) {
            std::process::exit(exit::OK);
        }
        default_hook(info);
    }));
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
            if !f.message.is_empty() {
                eprintln!("macpool: {}", f.message);
            }
            f.code
        }
    };
    drop(runtime);
    std::process::exit(code);
}
