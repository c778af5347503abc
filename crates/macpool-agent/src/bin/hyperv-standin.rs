//! `hyperv-standin [--state FILE] [--host NAME --range FIRST-LAST]`: the Hyper-V stand-in for
//! tests. Speaks the agent's line protocol on stdin/stdout; see `macpool_agent::standin`.

use std::io::{BufRead, Write};

use macpool_agent::standin::{Standin, StandinState};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let path = get("--state").map(std::path::PathBuf::from);
    let state = match &path {
        Some(p) if p.exists() => {
            let bytes = std::fs::read(p).expect("state file readable");
            serde_json::from_slice(&bytes).expect("state file is a stand-in state")
        }
        _ => {
            let host = get("--host").unwrap_or_else(|| "HV-STANDIN".into());
            let range = get("--range").unwrap_or_else(|| "00155D0A0000-00155D0A00FF".into());
            StandinState::new(&host, range.parse().expect("--range FIRST-LAST"))
        }
    };
    let mut s = Standin::new(state, path);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(out, "{{\"ready\":true,\"version\":\"hyperv-standin\"}}").ok();
    out.flush().ok();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let o = s.line(&line);
        for l in o.lines {
            writeln!(out, "{l}").ok();
        }
        out.flush().ok();
        if let Some(code) = s.exit {
            std::process::exit(code);
        }
    }
}
