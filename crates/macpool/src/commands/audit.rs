use std::io::{BufWriter, Write};

use macpool_audit::{AuditOptions, audit_paths, write_csv, write_json, write_table};

use crate::cli::AuditArgs;
use crate::exit::{self, CmdResult, Failure};
use crate::output::Output;

/// Exit status: 0 clean, 1 conflicts found, 2 usage error or nothing readable, 4 some input could
/// not be read (decided in `exit::audit`). The report is written as it is rendered.
pub fn run(out: Output, args: AuditArgs) -> CmdResult {
    let force_format = args
        .format
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(Failure::usage)?;
    let opts = AuditOptions {
        threads: args.threads,
        force_format,
        ..AuditOptions::default()
    };
    let report = audit_paths(&args.paths, &opts);
    let mut w = BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    if out.json {
        write_json(&mut w, &report, out.mac_format)
    } else if args.csv {
        write_csv(&mut w, &report, out.mac_format)
    } else {
        write_table(&mut w, &report, out.mac_format)
    }
    .and_then(|()| w.flush())
    .map_err(exit::output_error)?;
    Ok(exit::audit(report.verdict()))
}
