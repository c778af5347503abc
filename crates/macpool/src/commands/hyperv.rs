use macpool_core::MacRange;
use macpool_core::hyperv::{HostSpec, PlanConfig, plan_ranges, render_plan};

use std::io::Write;
use std::path::PathBuf;

use macpool_agent::events::{read_events_file, render_json, render_table};
use macpool_agent::taskxml::{TaskOptions, task_xml_utf8, task_xml_utf16};
use macpool_audit::excerpt;

use crate::cli::HypervCommand;
use crate::exit::{CmdResult, Failure, OK};
use crate::output::Output;

pub async fn run(out: Output, cmd: HypervCommand) -> CmdResult {
    match cmd {
        HypervCommand::Events { files } => events(out, &files),
        HypervCommand::ClusterRoleScript(args) => super::cluster_role::run(args),
        #[cfg(feature = "standin")]
        HypervCommand::Standin { args } => Ok(macpool_agent::standin::serve_stdio(&args)),
        HypervCommand::Selftest { powershell } => {
            let hv =
                macpool_agent::powershell::PowerShellHypervisor::new(powershell.child_config());
            let results = macpool_agent::selftest::run(&hv).await;
            if out.json {
                let rows: Vec<_> = results
                    .iter()
                    .map(|r| serde_json::json!({"check": r.name, "ok": r.ok, "detail": r.detail}))
                    .collect();
                out.print_json(&rows);
            } else {
                print!("{}", macpool_agent::selftest::render(&results));
            }
            Ok(if results.iter().all(|r| r.ok) {
                OK
            } else {
                crate::exit::NO
            })
        }
        HypervCommand::TaskXml {
            exe,
            utf8,
            output,
            extra_args,
        } => {
            let opts = TaskOptions {
                exe,
                extra_args,
                description: "macpool: on every RDV_ROLLBACK restore (event 18596), check the desktop's MACs with the authority and fix a duplicate".into(),
            };
            let bytes = if utf8 {
                task_xml_utf8(&opts)
            } else {
                task_xml_utf16(&opts)
            };
            match &output {
                Some(path) => std::fs::write(path, &bytes)
                    .map_err(|e| Failure::usage(format!("cannot write the task XML: {e}")))?,
                None => write_stdout(&bytes)?,
            }
            Ok(OK)
        }
        HypervCommand::BootstrapScript { output } => {
            let bytes = macpool_agent::powershell::bootstrap::file_bytes();
            match &output {
                Some(path) => path
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|()| std::fs::write(path, &bytes))
                    .map_err(|e| Failure::usage(format!("cannot write the bootstrap: {e}")))?,
                None => write_stdout(&bytes)?,
            }
            Ok(OK)
        }
        HypervCommand::ExportScript { cluster } => {
            print!("{}", macpool_audit::export_script(cluster));
            Ok(OK)
        }
        HypervCommand::Ranges {
            hosts,
            from,
            block_size,
            base,
            avoid,
            renumber_all,
        } => {
            let mut specs = Vec::new();
            for h in &hosts {
                specs.push(HostSpec::parse(h).map_err(Failure::usage)?);
            }
            if let Some(path) = from {
                let bytes = std::fs::read(&path)
                    .map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))?;
                let looks_json = bytes
                    .iter()
                    .find(|b| !b.is_ascii_whitespace())
                    .is_some_and(|b| matches!(b, b'{' | b'[' | 0xEF | 0xFF | 0xFE));
                if looks_json {
                    let (found, problems) = macpool_audit::host_specs_from_export(&bytes);
                    for p in &problems {
                        eprintln!(
                            "{}: {}{}",
                            path.display(),
                            p.location
                                .as_deref()
                                .map(|l| format!("{l}: "))
                                .unwrap_or_default(),
                            p.message
                        );
                    }
                    specs.extend(found);
                } else {
                    let text = String::from_utf8_lossy(&bytes);
                    specs.extend(
                        HostSpec::parse_lines(&text)
                            .map_err(|e| Failure::usage(format!("{}: {e}", path.display())))?,
                    );
                }
            }
            if specs.is_empty() {
                return Err(Failure::usage(
                    "give hosts with --host NAME=IP or --from FILE",
                ));
            }
            let range = |s: &str| MacRange::parse(s).map_err(|e| Failure::usage(e.to_string()));
            let cfg = PlanConfig {
                block_size,
                base: range(&base)?,
                avoid: avoid.iter().map(|a| range(a)).collect::<Result<_, _>>()?,
                keep_unique: !renumber_all,
            };
            let plan = plan_ranges(&specs, &cfg).map_err(|e| Failure::usage(e.to_string()))?;
            if out.json {
                let hosts: Vec<_> = plan
                    .iter()
                    .map(|p| {
                        serde_json::json!({
                            "host": p.name,
                            "ip": p.ip.to_string(),
                            "current": {"first": p.current.first().to_string(), "last": p.current.last().to_string()},
                            "current_is_default": p.current_is_default,
                            "collides_with": p.collides_with,
                            "proposed": {"first": p.proposed.first().to_string(), "last": p.proposed.last().to_string()},
                            "changes": p.changes(),
                        })
                    })
                    .collect();
                out.print_json(&hosts);
            } else {
                print!("{}", render_plan(&plan));
            }
            Ok(if plan.iter().any(|p| !p.collides_with.is_empty()) {
                crate::exit::NO
            } else {
                OK
            })
        }
    }
}

/// Problems reported per file; the rest are counted in one line (3 million empty events must
/// not become 200 MB of stderr).
const MAX_PROBLEMS_PER_FILE: usize = 20;

/// Lists events from every file; problems (malformed events, unreadable files) go to stderr with
/// an excerpt of the raw text. Exit 0 when every file gave events, 2 when nothing could be read,
/// 4 when some file could not be (an error, or every event in it malformed).
fn events(out: Output, files: &[PathBuf]) -> CmdResult {
    let mut all = Vec::new();
    let mut unreadable = 0;
    for f in files {
        match read_events_file(f) {
            Ok((records, problems)) => {
                for p in problems.iter().take(MAX_PROBLEMS_PER_FILE) {
                    eprintln!("{}: skipped: {}", f.display(), excerpt(p.message.clone()));
                    if let Some(raw) = &p.raw {
                        eprintln!("  {}", excerpt(raw.clone()));
                    }
                }
                if let Some(more) = problems.len().checked_sub(MAX_PROBLEMS_PER_FILE)
                    && more > 0
                {
                    eprintln!("{}: … and {more} more malformed events", f.display());
                }
                if records.is_empty() && !problems.is_empty() {
                    eprintln!("{}: no event could be read", f.display());
                    unreadable += 1;
                }
                all.extend(records);
            }
            Err(e) => {
                eprintln!("{}: {}", f.display(), excerpt(e));
                unreadable += 1;
            }
        }
    }
    let text = if out.json {
        render_json(&all)
    } else {
        render_table(&all)
    };
    write_stdout(text.as_bytes())?;
    Ok(if unreadable == 0 {
        OK
    } else if all.is_empty() {
        crate::exit::USAGE
    } else {
        crate::exit::INCOMPLETE
    })
}

/// Bytes to stdout; a closed pipe ends the command quietly (`exit::output_error`).
fn write_stdout(bytes: &[u8]) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(crate::exit::output_error)
}
