use macpool_audit::{AuditOptions, audit_paths, exit_code, render_csv, render_json, render_table};

use crate::cli::AuditArgs;
use crate::exit::{CmdResult, Failure};
use crate::output::Output;

/// Exit status: 0 clean, 1 conflicts found, 2 usage error or nothing readable.
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
    let text = if out.json {
        render_json(&report, out.mac_format)
    } else if args.csv {
        render_csv(&report, out.mac_format)
    } else {
        render_table(&report, out.mac_format)
    };
    print!("{text}");
    if !text.ends_with('\n') {
        println!();
    }
    Ok(exit_code(&report))
}
