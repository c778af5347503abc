//! `cargo run --release -p macpool-audit --example audit -- [--json|--csv] PATH…`: the audit
//! without the CLI, for benchmarks until `macpool audit` is wired. Exit status as the CLI's.

use std::path::PathBuf;

use macpool_audit::{AuditOptions, audit_paths, exit_code, render_csv, render_json, render_table};
use macpool_core::MacFormat;

fn main() {
    let mut render: fn(&macpool_audit::Report, MacFormat) -> String = render_table;
    let mut paths = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--json" => render = render_json,
            "--csv" => render = render_csv,
            _ => paths.push(PathBuf::from(arg)),
        }
    }
    if paths.is_empty() {
        eprintln!("usage: audit [--json|--csv] PATH…");
        std::process::exit(2);
    }
    let report = audit_paths(&paths, &AuditOptions::default());
    print!("{}", render(&report, MacFormat::Ieee));
    std::process::exit(exit_code(&report));
}
