//! `cargo run --release -p macpool-audit --example audit -- [--json|--csv] PATH…`: the audit
//! without the CLI (and without its dependencies), streaming its report as the CLI does.
//! Exit status as the CLI's.

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use macpool_audit::{AuditOptions, audit_paths, exit_code, write_csv, write_json, write_table};
use macpool_core::MacFormat;

type Writer = fn(&mut dyn Write, &macpool_audit::Report, MacFormat) -> std::io::Result<()>;

fn main() {
    let mut write: Writer = write_table;
    let mut paths = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--json" => write = write_json,
            "--csv" => write = write_csv,
            _ => paths.push(PathBuf::from(arg)),
        }
    }
    if paths.is_empty() {
        eprintln!("usage: audit [--json|--csv] PATH…");
        std::process::exit(2);
    }
    let report = audit_paths(&paths, &AuditOptions::default());
    let mut out = BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    match write(&mut out, &report, MacFormat::Ieee).and_then(|()| out.flush()) {
        Ok(()) => {}
        // a closed pipe: the reader has what it wanted
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("audit: cannot write the report: {e}");
            std::process::exit(2);
        }
    }
    std::process::exit(exit_code(&report));
}
