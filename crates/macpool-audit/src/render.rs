//! The report as a table for people, JSON for scripts and CSV for spreadsheets.
//!
//! Each is written as it goes into any `io::Write` (`write_*`): a report of 12,000 conflicts
//! must cost about as much to print as to find, so no conflict is built as strings or as a JSON
//! tree first; cells go into one reused buffer, JSON through `serde_json`'s streaming serializer.
//! `render_*` collect the same bytes into a `String`.

use std::fmt::Write as _;
use std::io::{self, Write};

use macpool_core::conflict::{Conflict, RangeClaim, RangeOrigin, Seen, Sighting, Subject};
use macpool_core::{Mac, MacFormat, MacRange};
use serde::ser::{Serialize, SerializeMap, Serializer};

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
fn write_owner(out: &mut String, s: &Sighting) {
    let o = &s.owner;
    let vm = |out: &mut String| match (&o.vm_name, &o.vm_id) {
        (Some(n), _) if !n.is_empty() => {
            let _ = write!(out, "VM '{n}'");
        }
        (_, Some(id)) => {
            let _ = write!(out, "VM {id}");
        }
        _ => out.push('-'),
    };
    let adapter = |out: &mut String| {
        if let Some(a) = o.adapter.as_deref() {
            let _ = write!(out, " adapter '{a}'");
        }
    };
    match &s.seen {
        Seen::Live => {
            vm(out);
            adapter(out);
        }
        Seen::ManagementOs => {
            out.push_str("management OS");
            adapter(out);
        }
        Seen::Checkpoint { name, .. } => {
            let _ = write!(out, "checkpoint '{name}' of ");
            vm(out);
            adapter(out);
        }
        Seen::Listed { label } => out.push_str(label.as_deref().unwrap_or("-")),
        Seen::DhcpLease {
            ip,
            client_id,
            hostname,
        } => {
            let _ = write!(out, "lease {}", ip.as_deref().unwrap_or("?"));
            if let Some(h) = hostname {
                let _ = write!(out, " host '{h}'");
            }
            if let Some(c) = client_id {
                let _ = write!(out, " client-id {c}");
            }
        }
    }
}

fn write_source(out: &mut String, s: &Sighting) {
    out.push_str(&s.owner.source);
    if let Some(l) = &s.owner.location {
        let _ = write!(out, " ({l})");
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

/// Table cells of one conflict, four to a row, in one buffer reused from conflict to conflict.
#[derive(Default)]
struct Cells {
    text: String,
    ends: Vec<usize>,
    line: String,
}

impl Cells {
    fn clear(&mut self) {
        self.text.clear();
        self.ends.clear();
    }

    fn push(&mut self, f: impl FnOnce(&mut String)) {
        f(&mut self.text);
        self.ends.push(self.text.len());
    }

    fn cell(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.text[start..self.ends[i]]
    }

    /// The rows as aligned columns, two spaces apart, each line indented and trimmed at the end.
    fn write(&mut self, w: &mut dyn Write, indent: &str, header: &[&str; 4]) -> io::Result<()> {
        let rows = self.ends.len() / 4;
        let mut widths = header.map(|h| h.chars().count());
        for r in 0..rows {
            for (c, width) in widths.iter_mut().enumerate() {
                *width = (*width).max(self.cell(r * 4 + c).chars().count());
            }
        }
        let mut line = std::mem::take(&mut self.line);
        for r in 0..=rows {
            line.clear();
            line.push_str(indent);
            for (c, width) in widths.iter().enumerate() {
                let cell = if r == 0 {
                    header[c]
                } else {
                    self.cell((r - 1) * 4 + c)
                };
                line.push_str(cell);
                if c + 1 < widths.len() {
                    let pad = width - cell.chars().count() + 2;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            w.write_all(line.trim_end().as_bytes())?;
            w.write_all(b"\n")?;
        }
        self.line = line;
        Ok(())
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
pub fn write_table(w: &mut dyn Write, report: &Report, format: MacFormat) -> io::Result<()> {
    let mut cells = Cells::default();
    for (i, c) in report.conflicts.iter().enumerate() {
        write!(w, "{}. {}  ", i + 1, c.class)?;
        match &c.subject {
            Subject::Mac { mac, .. } => writeln!(w, "{}", mac.display(format))?,
            Subject::Ranges { overlap, .. } => writeln!(
                w,
                "{} ({} addresses)",
                range_text(overlap, format),
                overlap.len()
            )?,
        }
        writeln!(w, "   {}", c.explanation)?;
        writeln!(w, "   fix: {}", c.fix)?;
        cells.clear();
        match &c.subject {
            Subject::Mac { sightings, .. } => {
                for s in sightings {
                    cells.push(|t| t.push_str(kind(s)));
                    cells.push(|t| write_owner(t, s));
                    cells.push(|t| t.push_str(s.owner.host.as_deref().unwrap_or("-")));
                    cells.push(|t| write_source(t, s));
                }
                cells.write(w, "   ", &["KIND", "OWNER", "HOST", "SOURCE"])?;
            }
            Subject::Ranges { a, b, .. } => {
                for claim in [a, b] {
                    for cell in claim_row(claim, format) {
                        cells.push(|t| t.push_str(&cell));
                    }
                }
                cells.write(w, "   ", &["OWNER", "RANGE", "ORIGIN", "SOURCE"])?;
            }
        }
        w.write_all(b"\n")?;
    }
    let problems: Vec<String> = report.files.iter().flat_map(problems).collect();
    if !problems.is_empty() {
        w.write_all(b"Problems:\n")?;
        for p in problems {
            writeln!(w, "  {p}")?;
        }
        w.write_all(b"\n")?;
    }
    writeln!(w, "Summary: {}", summary_line(report))
}

/// A MAC as a JSON string, formatted straight into the output.
struct MacJson(Mac, MacFormat);

impl Serialize for MacJson {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0.display(self.1))
    }
}

/// A JSON array of whatever the iterator yields.
struct Seq<I>(I);

impl<I, T> Serialize for Seq<I>
where
    I: Iterator<Item = T> + Clone,
    T: Serialize,
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.clone())
    }
}

struct SightingJson<'a>(&'a Sighting, MacFormat);

impl Serialize for SightingJson<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let (s, o) = (self.0, &self.0.owner);
        let extra = match &s.seen {
            Seen::Live | Seen::ManagementOs => 0,
            Seen::Checkpoint { .. } => 2,
            Seen::Listed { .. } => 1,
            Seen::DhcpLease { .. } => 3,
        };
        let mut m = ser.serialize_map(Some(9 + extra))?;
        m.serialize_entry("kind", kind(s))?;
        m.serialize_entry("mac", &MacJson(s.mac, self.1))?;
        m.serialize_entry("source", &o.source)?;
        m.serialize_entry("location", &o.location)?;
        m.serialize_entry("host", &o.host)?;
        m.serialize_entry("vm_id", &o.vm_id)?;
        m.serialize_entry("vm_name", &o.vm_name)?;
        m.serialize_entry("adapter", &o.adapter)?;
        m.serialize_entry("dynamic", &s.dynamic)?;
        match &s.seen {
            Seen::Live | Seen::ManagementOs => {}
            Seen::Checkpoint { id, name } => {
                m.serialize_entry("checkpoint_id", id)?;
                m.serialize_entry("checkpoint_name", name)?;
            }
            Seen::Listed { label } => m.serialize_entry("label", label)?,
            Seen::DhcpLease {
                ip,
                client_id,
                hostname,
            } => {
                m.serialize_entry("ip", ip)?;
                m.serialize_entry("client_id", client_id)?;
                m.serialize_entry("hostname", hostname)?;
            }
        }
        m.end()
    }
}

struct ClaimJson<'a>(&'a RangeClaim, MacFormat);

impl Serialize for ClaimJson<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let f = self.1;
        match self.0 {
            RangeClaim::Host(h) => {
                let mut m = ser.serialize_map(Some(7))?;
                m.serialize_entry("kind", "host")?;
                m.serialize_entry("host", &h.host)?;
                m.serialize_entry("cluster", &h.cluster)?;
                m.serialize_entry("first", &MacJson(h.range.first(), f))?;
                m.serialize_entry("last", &MacJson(h.range.last(), f))?;
                match h.origin {
                    RangeOrigin::Configured => m.serialize_entry("origin", "configured")?,
                    RangeOrigin::DerivedFromIp(ip) => {
                        m.serialize_entry("origin", &format!("derived-from-ip {ip}"))?
                    }
                }
                m.serialize_entry("source", &h.source)?;
                m.end()
            }
            RangeClaim::Pool(p) => {
                let mut m = ser.serialize_map(Some(4))?;
                m.serialize_entry("kind", "pool")?;
                m.serialize_entry("pool", &p.pool)?;
                m.serialize_entry("first", &MacJson(p.range.first(), f))?;
                m.serialize_entry("last", &MacJson(p.range.last(), f))?;
                m.end()
            }
        }
    }
}

struct OverlapJson<'a>(&'a MacRange, MacFormat);

impl Serialize for OverlapJson<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut m = ser.serialize_map(Some(3))?;
        m.serialize_entry("first", &MacJson(self.0.first(), self.1))?;
        m.serialize_entry("last", &MacJson(self.0.last(), self.1))?;
        m.serialize_entry("addresses", &self.0.len())?;
        m.end()
    }
}

struct ConflictJson<'a>(&'a Conflict, MacFormat);

impl Serialize for ConflictJson<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let (c, f) = (self.0, self.1);
        let mut m = ser.serialize_map(Some(5))?;
        m.serialize_entry("class", c.class.slug())?;
        m.serialize_entry("explanation", &c.explanation)?;
        m.serialize_entry("fix", &c.fix)?;
        match &c.subject {
            Subject::Mac { mac, sightings } => {
                m.serialize_entry("mac", &MacJson(*mac, f))?;
                m.serialize_entry("owners", &Seq(sightings.iter().map(|s| SightingJson(s, f))))?;
            }
            Subject::Ranges { a, b, overlap } => {
                m.serialize_entry("overlap", &OverlapJson(overlap, f))?;
                m.serialize_entry("ranges", &[ClaimJson(a, f), ClaimJson(b, f)])?;
            }
        }
        m.end()
    }
}

struct DiagnosticJson<'a>(&'a crate::Diagnostic);

impl Serialize for DiagnosticJson<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut m = ser.serialize_map(Some(2))?;
        m.serialize_entry("location", &self.0.location)?;
        m.serialize_entry("message", &self.0.message)?;
        m.end()
    }
}

struct FileJson<'a>(&'a FileReport);

impl Serialize for FileJson<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let f = self.0;
        let (status, reason) = match &f.status {
            FileStatus::Read => ("read", None),
            FileStatus::Skipped(r) => ("skipped", Some(r)),
            FileStatus::Unreadable(r) => ("unreadable", Some(r)),
        };
        let mut m = ser.serialize_map(Some(7))?;
        m.serialize_entry("path", &f.path.display().to_string())?;
        m.serialize_entry("format", &f.format.map(|f| f.name()))?;
        m.serialize_entry("status", status)?;
        m.serialize_entry("reason", &reason)?;
        m.serialize_entry("records", &f.records)?;
        m.serialize_entry("bad_records", &f.bad_records)?;
        m.serialize_entry(
            "diagnostics",
            &Seq(f.diagnostics.iter().map(DiagnosticJson)),
        )?;
        m.end()
    }
}

struct SummaryJson<'a>(&'a crate::Summary);

impl Serialize for SummaryJson<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let s = self.0;
        let mut m = ser.serialize_map(Some(7))?;
        m.serialize_entry("files_read", &s.files_read)?;
        m.serialize_entry("files_skipped", &s.files_skipped)?;
        m.serialize_entry("files_unreadable", &s.files_unreadable)?;
        m.serialize_entry("records", &s.records)?;
        m.serialize_entry("bad_records", &s.bad_records)?;
        m.serialize_entry("conflicts", &s.conflicts())?;
        // in class order, as the table's summary line
        let by_class = s.conflicts_by_class.iter().map(|(c, n)| (c.slug(), n));
        m.serialize_entry("conflicts_by_class", &ClassCounts(by_class))?;
        m.end()
    }
}

struct ClassCounts<I>(I);

impl<'a, I: Iterator<Item = (&'static str, &'a usize)> + Clone> Serialize for ClassCounts<I> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.clone())
    }
}

struct ReportJson<'a>(&'a Report, MacFormat);

impl Serialize for ReportJson<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let (r, f) = (self.0, self.1);
        let mut m = ser.serialize_map(Some(3))?;
        m.serialize_entry("summary", &SummaryJson(&r.summary))?;
        m.serialize_entry(
            "conflicts",
            &Seq(r.conflicts.iter().map(|c| ConflictJson(c, f))),
        )?;
        m.serialize_entry("files", &Seq(r.files.iter().map(FileJson)))?;
        m.end()
    }
}

/// The report for scripts: `summary`, `conflicts` (class slug, MAC or ranges, owners) and `files`,
/// pretty-printed, keys in a fixed order.
pub fn write_json(w: &mut dyn Write, report: &Report, format: MacFormat) -> io::Result<()> {
    let mut ser = serde_json::Serializer::pretty(&mut *w);
    ReportJson(report, format)
        .serialize(&mut ser)
        .map_err(io::Error::from)?;
    w.write_all(b"\n")
}

/// One CSV field, RFC 4180 quoting only when it needs it.
fn write_csv_field(w: &mut dyn Write, s: &str) -> io::Result<()> {
    if !s.contains([',', '"', '\n', '\r']) {
        return w.write_all(s.as_bytes());
    }
    w.write_all(b"\"")?;
    for (i, part) in s.split('"').enumerate() {
        if i > 0 {
            w.write_all(b"\"\"")?;
        }
        w.write_all(part.as_bytes())?;
    }
    w.write_all(b"\"")
}

/// One row per owner of each conflict (a range overlap has one row per side), RFC 4180 quoting.
pub fn write_csv(w: &mut dyn Write, report: &Report, format: MacFormat) -> io::Result<()> {
    w.write_all(b"conflict,class,mac_or_range,kind,owner,host,source,location,explanation,fix\n")?;
    let mut cell = String::new();
    for (i, c) in report.conflicts.iter().enumerate() {
        let row = |w: &mut dyn Write, cells: [&str; 8]| -> io::Result<()> {
            write!(w, "{},{}", i + 1, c.class.slug())?;
            for f in cells {
                w.write_all(b",")?;
                write_csv_field(w, f)?;
            }
            w.write_all(b"\n")
        };
        match &c.subject {
            Subject::Mac { mac, sightings } => {
                let mac = mac.display(format).to_string();
                for s in sightings {
                    cell.clear();
                    write_owner(&mut cell, s);
                    row(
                        w,
                        [
                            &mac,
                            kind(s),
                            &cell,
                            s.owner.host.as_deref().unwrap_or_default(),
                            &s.owner.source,
                            s.owner.location.as_deref().unwrap_or_default(),
                            &c.explanation,
                            &c.fix,
                        ],
                    )?;
                }
            }
            Subject::Ranges { a, b, .. } => {
                for claim in [a, b] {
                    let [who, range, origin, src] = claim_row(claim, format);
                    let owner = format!("{who} ({origin})");
                    row(
                        w,
                        [
                            &range,
                            "range",
                            &owner,
                            "",
                            &src,
                            "",
                            &c.explanation,
                            &c.fix,
                        ],
                    )?;
                }
            }
        }
    }
    Ok(())
}

fn to_string(write: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) -> String {
    let mut out = Vec::new();
    write(&mut out).expect("writing into a Vec cannot fail");
    String::from_utf8(out).expect("the report is text")
}

/// [`write_table`] into a `String`.
pub fn render_table(report: &Report, format: MacFormat) -> String {
    to_string(|w| write_table(w, report, format))
}

/// [`write_json`] into a `String`.
pub fn render_json(report: &Report, format: MacFormat) -> String {
    to_string(|w| write_json(w, report, format))
}

/// [`write_csv`] into a `String`.
pub fn render_csv(report: &Report, format: MacFormat) -> String {
    to_string(|w| write_csv(w, report, format))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::path::{Path, PathBuf};

    use macpool_core::conflict::{ConflictClass, HostRange, Owner, PoolRange};

    use super::*;
    use crate::{AuditOptions, Diagnostic, Summary, audit_paths};

    fn sighting(mac: Mac, seen: Seen, owner: Owner) -> Sighting {
        Sighting {
            mac,
            dynamic: Some(true),
            seen,
            owner,
        }
    }

    /// Every kind of owner, claim and file status, with text that needs quoting or is wide.
    fn every_shape() -> Report {
        let mac = Mac::from_u64(0x0015_5D01_8511).unwrap();
        let owner = Owner {
            source: "dir/hv1, \"export\".json".into(),
            location: Some("[0].Adapters[1]".into()),
            host: Some("HV1".into()),
            vm_id: Some("4dea22b3".into()),
            vm_name: Some("bürö\ndesk".into()),
            adapter: Some("Network Adapter".into()),
        };
        let bare = Owner {
            source: "list.txt".into(),
            ..Owner::default()
        };
        let sightings = vec![
            sighting(mac, Seen::Live, owner.clone()),
            sighting(
                mac,
                Seen::Checkpoint {
                    id: "c1".into(),
                    name: "RDV_ROLLBACK".into(),
                },
                Owner {
                    vm_name: Some(String::new()),
                    adapter: None,
                    ..owner.clone()
                },
            ),
            sighting(
                mac,
                Seen::Listed {
                    label: Some("printer, floor 1  ".into()),
                },
                bare.clone(),
            ),
            sighting(mac, Seen::Listed { label: None }, bare.clone()),
            sighting(
                mac,
                Seen::DhcpLease {
                    ip: Some("10.0.0.5".into()),
                    client_id: Some("01:00:15".into()),
                    hostname: Some("desk-01".into()),
                },
                bare.clone(),
            ),
            sighting(
                mac,
                Seen::DhcpLease {
                    ip: None,
                    client_id: None,
                    hostname: None,
                },
                Owner {
                    vm_id: Some("only-id".into()),
                    ..bare
                },
            ),
        ];
        let range = MacRange::parse("00-15-5D-01-05-00-00-15-5D-01-05-FF").unwrap();
        let conflicts = vec![
            Conflict {
                class: ConflictClass::LiveDuplicate,
                subject: Subject::Mac { mac, sightings },
                explanation: "two \"owners\", one MAC".into(),
                fix: "give one a new MAC".into(),
            },
            Conflict {
                class: ConflictClass::RangeOverlap,
                subject: Subject::Ranges {
                    a: RangeClaim::Host(HostRange {
                        host: "HV1".into(),
                        cluster: Some("CL1".into()),
                        range,
                        origin: RangeOrigin::DerivedFromIp(Ipv4Addr::new(10, 0, 1, 5)),
                        source: "hv1.json".into(),
                    }),
                    b: RangeClaim::Pool(PoolRange {
                        pool: "rds".into(),
                        range,
                    }),
                    overlap: range,
                },
                explanation: "ranges overlap".into(),
                fix: "move one".into(),
            },
        ];
        let file = |name: &str, status: FileStatus| FileReport {
            path: PathBuf::from(name),
            format: Some(crate::Format::MacList),
            status,
            records: 3,
            bad_records: 5,
            diagnostics: vec![
                Diagnostic::at("line 2", "bad digit 'g'"),
                Diagnostic::whole_file("read as UTF-16LE"),
            ],
        };
        let files = vec![
            file("a.txt", FileStatus::Read),
            file("b.xml", FileStatus::Skipped("not a domain".into())),
            FileReport {
                format: None,
                diagnostics: Vec::new(),
                ..file("c.json", FileStatus::Unreadable("truncated".into()))
            },
        ];
        let mut summary = Summary {
            files_read: 1,
            files_skipped: 1,
            files_unreadable: 1,
            records: 9,
            bad_records: 15,
            ..Summary::default()
        };
        for c in &conflicts {
            *summary.conflicts_by_class.entry(c.class).or_default() += 1;
        }
        Report {
            files,
            conflicts,
            summary,
        }
    }

    /// The renderer's bytes for these reports, as the string-building renderer it replaced
    /// wrote them (checked equal to it before that one was removed). tests/render/;
    /// `MACPOOL_BLESS=1` rewrites them after a deliberate change.
    #[test]
    fn streamed_output_is_byte_for_byte_the_old_rendering() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let reports = [
            // relative (tests run in the crate's directory), so the paths in the bytes are too
            (
                "data",
                audit_paths(&[PathBuf::from("tests/data")], &AuditOptions::default()),
            ),
            ("shapes", every_shape()),
            (
                "empty",
                Report {
                    files: Vec::new(),
                    conflicts: Vec::new(),
                    summary: Summary::default(),
                },
            ),
        ];
        let bless = std::env::var_os("MACPOOL_BLESS").is_some();
        for (name, r) in &reports {
            for f in MacFormat::ALL {
                for (ext, got) in [
                    ("txt", render_table(r, f)),
                    ("json", render_json(r, f)),
                    ("csv", render_csv(r, f)),
                ] {
                    let golden = root.join(format!("tests/render/{name}.{f:?}.{ext}"));
                    if bless {
                        std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
                        std::fs::write(&golden, &got).unwrap();
                    }
                    let want = std::fs::read_to_string(&golden)
                        .unwrap_or_else(|e| panic!("{}: {e}", golden.display()));
                    assert_eq!(got, want, "{}", golden.display());
                }
            }
        }
    }
}
