//! The rendering as it was before it streamed (each conflict built as strings and `serde_json`
//! values, the whole report as one `String`), kept only so that a test can show the streamed
//! output is byte for byte the same.

use std::fmt::Write as _;

use macpool_core::conflict::{Conflict, RangeClaim, RangeOrigin, Seen, Sighting, Subject};
use macpool_core::{MacFormat, MacRange};
use serde_json::{Value, json};

use crate::{FileReport, FileStatus, Report};

fn kind(s: &Sighting) -> &'static str {
    match s.seen {
        Seen::Live => "live",
        Seen::ManagementOs => "management-os",
        Seen::Checkpoint { .. } => "checkpoint",
        Seen::Listed { .. } => "listed",
        Seen::DhcpLease { .. } => "dhcp-lease",
    }
}

/// The owner column: who uses the MAC, without the host (it has its own column).
fn owner(s: &Sighting) -> String {
    let o = &s.owner;
    let vm = || match (&o.vm_name, &o.vm_id) {
        (Some(n), _) if !n.is_empty() => format!("VM '{n}'"),
        (_, Some(id)) => format!("VM {id}"),
        _ => "-".to_string(),
    };
    let adapter = o
        .adapter
        .as_deref()
        .map(|a| format!(" adapter '{a}'"))
        .unwrap_or_default();
    match &s.seen {
        Seen::Live => format!("{}{adapter}", vm()),
        Seen::ManagementOs => format!("management OS{adapter}"),
        Seen::Checkpoint { name, .. } => format!("checkpoint '{name}' of {}{adapter}", vm()),
        Seen::Listed { label } => label.clone().unwrap_or_else(|| "-".into()),
        Seen::DhcpLease {
            ip,
            client_id,
            hostname,
        } => {
            let mut s = format!("lease {}", ip.as_deref().unwrap_or("?"));
            if let Some(h) = hostname {
                let _ = write!(s, " host '{h}'");
            }
            if let Some(c) = client_id {
                let _ = write!(s, " client-id {c}");
            }
            s
        }
    }
}

fn source(s: &Sighting) -> String {
    match &s.owner.location {
        Some(l) => format!("{} ({l})", s.owner.source),
        None => s.owner.source.clone(),
    }
}

/// `first - last`: the spaces keep IEEE ranges (which are full of dashes) readable.
fn range_text(r: &MacRange, f: MacFormat) -> String {
    format!("{} - {}", r.first().display(f), r.last().display(f))
}

fn claim_row(c: &RangeClaim, f: MacFormat) -> [String; 4] {
    match c {
        RangeClaim::Host(h) => [
            format!("host {}", h.host),
            range_text(&h.range, f),
            match h.origin {
                RangeOrigin::Configured => "configured".into(),
                RangeOrigin::DerivedFromIp(ip) => format!("Hyper-V default for {ip}"),
            },
            h.source.clone(),
        ],
        RangeClaim::Pool(p) => [
            format!("pool {}", p.pool),
            range_text(&p.range, f),
            "pool range".into(),
            String::new(),
        ],
    }
}

/// Rows as aligned columns, two spaces apart, each line indented.
fn table(out: &mut String, indent: &str, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::from(indent);
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i + 1 == widths.len() {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for r in rows {
        line(&mut r.iter().map(String::as_str));
    }
}

fn subject_title(c: &Conflict, f: MacFormat) -> String {
    match &c.subject {
        Subject::Mac { mac, .. } => mac.display(f).to_string(),
        Subject::Ranges { overlap, .. } => {
            format!("{} ({} addresses)", range_text(overlap, f), overlap.len())
        }
    }
}

fn problems(f: &FileReport) -> Vec<String> {
    let path = f.path.display();
    let mut out = Vec::new();
    match &f.status {
        FileStatus::Read => {}
        FileStatus::Skipped(why) => out.push(format!("{path}: skipped: {why}")),
        FileStatus::Unreadable(why) => out.push(format!("{path}: unreadable: {why}")),
    }
    for d in &f.diagnostics {
        match &d.location {
            Some(l) => out.push(format!("{path}: {l}: {}", d.message)),
            None => out.push(format!("{path}: {}", d.message)),
        }
    }
    let shown = f
        .diagnostics
        .iter()
        .filter(|d| d.location.is_some())
        .count() as u64;
    if f.bad_records > shown {
        out.push(format!(
            "{path}: … and {} more bad records",
            f.bad_records - shown
        ));
    }
    out
}

fn summary_line(r: &Report) -> String {
    let s = &r.summary;
    let mut line = format!(
        "{} files read, {} skipped, {} unreadable; {} records read, {} bad records skipped; ",
        s.files_read, s.files_skipped, s.files_unreadable, s.records, s.bad_records
    );
    if s.conflicts() == 0 {
        line.push_str("no conflicts");
    } else {
        let by: Vec<String> = s
            .conflicts_by_class
            .iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        let _ = write!(line, "{} conflicts ({})", s.conflicts(), by.join(", "));
    }
    line
}

/// The report for people: each conflict with its explanation, fix and every owner with its source
/// file, then the problems met while reading, then the summary.
pub fn render_table(report: &Report, format: MacFormat) -> String {
    let mut out = String::new();
    for (i, c) in report.conflicts.iter().enumerate() {
        let _ = writeln!(out, "{}. {}  {}", i + 1, c.class, subject_title(c, format));
        let _ = writeln!(out, "   {}", c.explanation);
        let _ = writeln!(out, "   fix: {}", c.fix);
        match &c.subject {
            Subject::Mac { sightings, .. } => {
                let rows: Vec<Vec<String>> = sightings
                    .iter()
                    .map(|s| {
                        vec![
                            kind(s).into(),
                            owner(s),
                            s.owner.host.clone().unwrap_or_else(|| "-".into()),
                            source(s),
                        ]
                    })
                    .collect();
                table(&mut out, "   ", &["KIND", "OWNER", "HOST", "SOURCE"], &rows);
            }
            Subject::Ranges { a, b, .. } => {
                let rows: Vec<Vec<String>> = [a, b]
                    .iter()
                    .map(|c| claim_row(c, format).to_vec())
                    .collect();
                table(
                    &mut out,
                    "   ",
                    &["OWNER", "RANGE", "ORIGIN", "SOURCE"],
                    &rows,
                );
            }
        }
        out.push('\n');
    }
    let problems: Vec<String> = report.files.iter().flat_map(problems).collect();
    if !problems.is_empty() {
        out.push_str("Problems:\n");
        for p in problems {
            let _ = writeln!(out, "  {p}");
        }
        out.push('\n');
    }
    let _ = writeln!(out, "Summary: {}", summary_line(report));
    out
}

fn sighting_json(s: &Sighting, f: MacFormat) -> Value {
    let o = &s.owner;
    let mut v = json!({
        "kind": kind(s),
        "mac": s.mac.display(f).to_string(),
        "source": o.source,
        "location": o.location,
        "host": o.host,
        "vm_id": o.vm_id,
        "vm_name": o.vm_name,
        "adapter": o.adapter,
        "dynamic": s.dynamic,
    });
    match &s.seen {
        Seen::Live | Seen::ManagementOs => {}
        Seen::Checkpoint { id, name } => {
            v["checkpoint_id"] = json!(id);
            v["checkpoint_name"] = json!(name);
        }
        Seen::Listed { label } => v["label"] = json!(label),
        Seen::DhcpLease {
            ip,
            client_id,
            hostname,
        } => {
            v["ip"] = json!(ip);
            v["client_id"] = json!(client_id);
            v["hostname"] = json!(hostname);
        }
    }
    v
}

fn claim_json(c: &RangeClaim, f: MacFormat) -> Value {
    match c {
        RangeClaim::Host(h) => json!({
            "kind": "host",
            "host": h.host,
            "cluster": h.cluster,
            "first": h.range.first().display(f).to_string(),
            "last": h.range.last().display(f).to_string(),
            "origin": match h.origin { RangeOrigin::Configured => "configured".to_string(), RangeOrigin::DerivedFromIp(ip) => format!("derived-from-ip {ip}") },
            "source": h.source,
        }),
        RangeClaim::Pool(p) => json!({
            "kind": "pool",
            "pool": p.pool,
            "first": p.range.first().display(f).to_string(),
            "last": p.range.last().display(f).to_string(),
        }),
    }
}

/// The report for scripts: `summary`, `conflicts` (class slug, MAC or ranges, owners) and `files`.
pub fn render_json(report: &Report, format: MacFormat) -> String {
    let s = &report.summary;
    let by_class: serde_json::Map<String, Value> = s
        .conflicts_by_class
        .iter()
        .map(|(c, n)| (c.slug().to_string(), json!(n)))
        .collect();
    let conflicts: Vec<Value> = report
        .conflicts
        .iter()
        .map(|c| {
            let mut v =
                json!({ "class": c.class.slug(), "explanation": c.explanation, "fix": c.fix });
            match &c.subject {
                Subject::Mac { mac, sightings } => {
                    v["mac"] = json!(mac.display(format).to_string());
                    v["owners"] =
                        Value::Array(sightings.iter().map(|s| sighting_json(s, format)).collect());
                }
                Subject::Ranges { a, b, overlap } => {
                    v["overlap"] = json!({
                        "first": overlap.first().display(format).to_string(),
                        "last": overlap.last().display(format).to_string(),
                        "addresses": overlap.len(),
                    });
                    v["ranges"] = json!([claim_json(a, format), claim_json(b, format)]);
                }
            }
            v
        })
        .collect();
    let files: Vec<Value> = report
        .files
        .iter()
        .map(|f| {
            let (status, reason) = match &f.status {
                FileStatus::Read => ("read", None),
                FileStatus::Skipped(r) => ("skipped", Some(r)),
                FileStatus::Unreadable(r) => ("unreadable", Some(r)),
            };
            json!({
                "path": f.path.display().to_string(),
                "format": f.format.map(|f| f.name()),
                "status": status,
                "reason": reason,
                "records": f.records,
                "bad_records": f.bad_records,
                "diagnostics": f.diagnostics.iter().map(|d| json!({"location": d.location, "message": d.message})).collect::<Vec<_>>(),
            })
        })
        .collect();
    let doc = json!({
        "summary": {
            "files_read": s.files_read,
            "files_skipped": s.files_skipped,
            "files_unreadable": s.files_unreadable,
            "records": s.records,
            "bad_records": s.bad_records,
            "conflicts": s.conflicts(),
            "conflicts_by_class": by_class,
        },
        "conflicts": conflicts,
        "files": files,
    });
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    text.push('\n');
    text
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// One row per owner of each conflict (a range overlap has one row per side), RFC 4180 quoting.
pub fn render_csv(report: &Report, format: MacFormat) -> String {
    let mut out = String::from(
        "conflict,class,mac_or_range,kind,owner,host,source,location,explanation,fix\n",
    );
    for (i, c) in report.conflicts.iter().enumerate() {
        let mut row = |cells: [String; 8]| {
            let mut fields = vec![(i + 1).to_string(), c.class.slug().to_string()];
            fields.extend(cells);
            let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
            out.push_str(&line.join(","));
            out.push('\n');
        };
        match &c.subject {
            Subject::Mac { mac, sightings } => {
                for s in sightings {
                    row([
                        mac.display(format).to_string(),
                        kind(s).into(),
                        owner(s),
                        s.owner.host.clone().unwrap_or_default(),
                        s.owner.source.clone(),
                        s.owner.location.clone().unwrap_or_default(),
                        c.explanation.clone(),
                        c.fix.clone(),
                    ]);
                }
            }
            Subject::Ranges { a, b, .. } => {
                for claim in [a, b] {
                    let [who, range, origin, src] = claim_row(claim, format);
                    row([
                        range,
                        "range".into(),
                        format!("{who} ({origin})"),
                        String::new(),
                        src,
                        String::new(),
                        c.explanation.clone(),
                        c.fix.clone(),
                    ]);
                }
            }
        }
    }
    out
}
