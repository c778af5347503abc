//! `hyperv-standin [--state FILE] [--host NAME --range FIRST-LAST]`: the Hyper-V stand-in for
//! tests. Speaks the agent's line protocol on stdin/stdout; see `macpool_agent::standin`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(macpool_agent::standin::serve_stdio(&args));
}
