//! `macpool audit`: an offline conflict report from exported inventories, with no server.
//!
//! Reads Hyper-V PowerShell JSON (`Get-VMNetworkAdapter | ConvertTo-Json`, or the documents that
//! [`export_script`] writes), libvirt `virsh dumpxml` / `snapshot-dumpxml` XML, plain MAC lists
//! (text or CSV) and DHCP leases (ISC dhcpd, dnsmasq, Kea lease4 CSV). The format is detected per
//! file and directories are walked. Every sighting goes through the domain's conflict engine
//! ([`macpool_core::conflict`]); this crate only reads, counts and renders.
//!
//! Bad input never stops the audit: each problem becomes a [`Diagnostic`] naming the file and the
//! line or record, and the [`Summary`] says how much was skipped.
//!
//! Huge plain MAC lists take a fast path ([`maclist`]): memory-mapped, parsed on every core into
//! bare `u64`s, radix-sorted, and only the lines whose MAC matters are read a second time.

mod decode;
pub mod dhcp;
#[doc(hidden)]
pub mod fuzz;
pub mod hyperv_json;
pub mod libvirt;
pub mod maclist;
mod render;
pub mod script;
mod walk;
pub mod xml;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use macpool_core::conflict::{ConflictClass, ConflictInput, HostRange, Sighting, find_conflicts};
use macpool_core::hyperv::HostSpec;

pub use macpool_core::conflict::Conflict;
pub use render::{render_csv, render_json, render_table, write_csv, write_json, write_table};
pub use script::export_script;

/// The input formats the audit understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Format {
    HypervJson,
    LibvirtXml,
    MacList,
    IscDhcpLeases,
    DnsmasqLeases,
    KeaLeases,
}

impl Format {
    pub const ALL: [Format; 6] = [
        Format::HypervJson,
        Format::LibvirtXml,
        Format::MacList,
        Format::IscDhcpLeases,
        Format::DnsmasqLeases,
        Format::KeaLeases,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Format::HypervJson => "hyperv-json",
            Format::LibvirtXml => "libvirt-xml",
            Format::MacList => "mac-list",
            Format::IscDhcpLeases => "isc-dhcpd-leases",
            Format::DnsmasqLeases => "dnsmasq-leases",
            Format::KeaLeases => "kea-lease4-csv",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Format::ALL
            .into_iter()
            .find(|f| f.name() == s.trim())
            .ok_or_else(|| {
                let names: Vec<_> = Format::ALL.iter().map(|f| f.name()).collect();
                format!("unknown format '{s}': expected one of {}", names.join(", "))
            })
    }
}

/// Settings for one audit run.
#[derive(Clone, Debug)]
pub struct AuditOptions {
    /// Worker threads for huge MAC lists; 0 means one per core.
    pub threads: usize,
    /// Diagnostics kept per file; the rest are only counted (a broken 10-million-line file must
    /// not produce a 10-million-line report).
    pub max_diagnostics_per_file: usize,
    /// Read every file as this format instead of detecting it.
    pub force_format: Option<Format>,
}

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions {
            threads: 0,
            max_diagnostics_per_file: 20,
            force_format: None,
        }
    }
}

impl AuditOptions {
    fn worker_threads(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism().map_or(1, usize::from)
        }
    }
}

/// One problem in one file: where (`line 12`, `record [3].Adapters[5]`, `line 4 column 7`) and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub location: Option<String>,
    pub message: String,
}

impl Diagnostic {
    /// Both texts are cut to an [`excerpt`]: they may quote the input.
    pub fn at(location: impl Into<String>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            location: Some(excerpt(location.into())),
            message: excerpt(message.into()),
        }
    }

    pub fn whole_file(message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            location: None,
            message: excerpt(message.into()),
        }
    }
}

/// Longest text a diagnostic keeps, in characters.
pub const MAX_EXCERPT_CHARS: usize = 240;

/// `text` cut to at most about [`MAX_EXCERPT_CHARS`]: its head and tail with the number of
/// characters left out between them. Messages quote the input (a MAC that is not one, a line), and
/// a 50 MB line must not become a 50 MB report.
pub fn excerpt(text: String) -> String {
    let n = text.chars().count();
    if n <= MAX_EXCERPT_CHARS {
        return text;
    }
    let (head, tail) = (MAX_EXCERPT_CHARS * 2 / 3, MAX_EXCERPT_CHARS / 4);
    let start: String = text.chars().take(head).collect();
    let end: String = text.chars().skip(n - tail).collect();
    format!("{start}…[{} characters left out]…{end}", n - head - tail)
}

/// What happened to a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileStatus {
    /// Read; some records may still have been bad (see `bad_records`).
    Read,
    /// Not an inventory this audit reads (XML that is not a domain, binary, empty): not an error.
    Skipped(String),
    /// Meant to be read but could not be (I/O error, not well-formed, no record at all).
    Unreadable(String),
}

/// The outcome for one input file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileReport {
    pub path: PathBuf,
    pub format: Option<Format>,
    pub status: FileStatus,
    /// Records (adapters, list lines, leases) read successfully.
    pub records: u64,
    /// Records that could not be used (no MAC, bad MAC, truncated).
    pub bad_records: u64,
    /// The first `max_diagnostics_per_file` problems; `bad_records` counts them all.
    pub diagnostics: Vec<Diagnostic>,
}

impl FileReport {
    fn new(path: &Path) -> FileReport {
        FileReport {
            path: path.to_path_buf(),
            format: None,
            status: FileStatus::Read,
            records: 0,
            bad_records: 0,
            diagnostics: Vec::new(),
        }
    }
}

/// Totals for the report footer and for monitoring.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub files_read: usize,
    pub files_skipped: usize,
    pub files_unreadable: usize,
    pub records: u64,
    pub bad_records: u64,
    pub conflicts_by_class: BTreeMap<ConflictClass, usize>,
}

impl Summary {
    pub fn conflicts(&self) -> usize {
        self.conflicts_by_class.values().sum()
    }
}

/// Everything an audit found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub files: Vec<FileReport>,
    pub conflicts: Vec<Conflict>,
    pub summary: Summary,
}

/// What an audit amounts to for monitoring, most severe first. `macpool audit` turns it into its
/// exit status in one place (the CLI's `exit.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No file could be read at all: there is no report.
    NothingRead,
    /// Conflicts were found (whether or not every input could be read).
    Conflicts,
    /// No conflict in what was read, but some input could not be read (missing, unreadable,
    /// refused): the report is incomplete and must not pass for clean.
    Incomplete,
    /// Every input read (bad records aside), no conflict.
    Clean,
}

impl Report {
    pub fn verdict(&self) -> Verdict {
        if self.summary.files_read == 0 {
            Verdict::NothingRead
        } else if !self.conflicts.is_empty() {
            Verdict::Conflicts
        } else if self.summary.files_unreadable > 0 {
            Verdict::Incomplete
        } else {
            Verdict::Clean
        }
    }
}

/// The exit status `macpool audit` gives: 0 clean, 1 conflicts found, 2 nothing readable,
/// 4 some input unreadable (the CLI's `exit.rs` maps [`Verdict`]s to these, and a test there keeps
/// the two equal).
pub fn exit_code(report: &Report) -> i32 {
    match report.verdict() {
        Verdict::Clean => 0,
        Verdict::Conflicts => 1,
        Verdict::NothingRead => 2,
        Verdict::Incomplete => 4,
    }
}

/// What one parser got out of one file.
#[derive(Debug, Default)]
pub struct Parsed {
    pub sightings: Vec<Sighting>,
    pub host_ranges: Vec<HostRange>,
    pub records: u64,
    pub bad_records: u64,
    pub diagnostics: Vec<Diagnostic>,
    /// `Some` when the file is not of this kind after all (e.g. XML that is not a domain).
    pub skipped: Option<String>,
    /// `Some` when nothing in the file could be read at all.
    pub unreadable: Option<String>,
}

impl Parsed {
    /// Records a bad record, keeping at most `max` diagnostics.
    pub(crate) fn bad(&mut self, max: usize, d: Diagnostic) {
        self.bad_records += 1;
        if self.diagnostics.len() < max {
            self.diagnostics.push(d);
        }
    }
}

/// Detects the format of `bytes` and parses them as one file named `source`, self-contained (a
/// MAC list is checked only against itself). The fuzz targets and tests enter here.
pub fn parse_bytes(source: &str, bytes: &[u8], opts: &AuditOptions) -> (Option<Format>, Parsed) {
    match prepare(bytes, opts) {
        Ok((format, decoded)) => {
            let mut parsed = parse_as(format, source, &decoded.text, opts);
            if let Some(note) = decoded.note {
                parsed.diagnostics.insert(0, Diagnostic::whole_file(note));
            }
            (Some(format), parsed)
        }
        Err(reason) => (
            None,
            Parsed {
                skipped: Some(reason),
                ..Parsed::default()
            },
        ),
    }
}

/// Decodes a file's bytes and settles its format; `Err` is why it is skipped (binary).
fn prepare<'a>(
    bytes: &'a [u8],
    opts: &AuditOptions,
) -> Result<(Format, decode::Decoded<'a>), String> {
    let decoded = decode::decode(bytes)?;
    let format = opts
        .force_format
        .unwrap_or_else(|| decode::detect(&decoded.text));
    Ok((format, decoded))
}

fn parse_as(format: Format, source: &str, text: &[u8], opts: &AuditOptions) -> Parsed {
    let max = opts.max_diagnostics_per_file;
    match format {
        Format::HypervJson => hyperv_json::parse(source, text, max),
        Format::LibvirtXml => libvirt::parse(source, text, max),
        Format::IscDhcpLeases => dhcp::parse_isc(source, text, max),
        Format::DnsmasqLeases => dhcp::parse_dnsmasq(source, text, max),
        Format::KeaLeases => dhcp::parse_kea(source, text, max),
        Format::MacList => {
            let scan = maclist::scan(text, opts.worker_threads(), max);
            let wanted = maclist::Wanted::new(maclist::repeated_or_invalid(
                scan.values(),
                opts.worker_threads(),
            ));
            let mut parsed = scan.parsed();
            parsed.sightings = maclist::collect(source, text, &scan, &wanted);
            parsed
        }
    }
}

/// Audits every file under `paths` (directories are walked) and returns the report. Never
/// fails: unreadable paths are reported in it.
pub fn audit_paths(paths: &[PathBuf], opts: &AuditOptions) -> Report {
    let walked = walk::collect_files(paths);
    let max = opts.max_diagnostics_per_file;
    let mut files: Vec<FileReport> = walked.errors;
    let mut sightings: Vec<Sighting> = Vec::new();
    let mut host_ranges: Vec<HostRange> = Vec::new();
    // Plain MAC lists: their values stay compact until we know which MACs matter.
    let mut lists: Vec<(usize, walk::Content, maclist::Scan)> = Vec::new();

    for path in walked.files {
        let mut report = FileReport::new(&path);
        let source = path.display().to_string();
        let content = match walk::read(&path) {
            Ok(Some(c)) => c,
            Ok(None) => {
                report.status = FileStatus::Skipped("empty file".into());
                files.push(report);
                continue;
            }
            Err(e) => {
                report.status = FileStatus::Unreadable(e);
                files.push(report);
                continue;
            }
        };
        let (format, decoded) = match prepare(content.bytes(), opts) {
            Ok(prepared) => prepared,
            Err(reason) => {
                report.status = FileStatus::Skipped(reason);
                files.push(report);
                continue;
            }
        };
        report.format = Some(format);
        report
            .diagnostics
            .extend(decoded.note.clone().map(Diagnostic::whole_file));
        let mut parsed = if format == Format::MacList {
            let scan = maclist::scan(&decoded.text, opts.worker_threads(), max);
            // A UTF-16 list was decoded into a buffer of its own: keep that for the second pass.
            let content = match decoded.text {
                Cow::Owned(bytes) => walk::Content::Owned(bytes),
                Cow::Borrowed(_) => content,
            };
            let parsed = scan.parsed();
            if parsed.records > 0 {
                lists.push((files.len(), content, scan));
            }
            parsed
        } else {
            parse_as(format, &source, &decoded.text, opts)
        };
        report.records = parsed.records;
        report.bad_records = parsed.bad_records;
        report.diagnostics.append(&mut parsed.diagnostics);
        report.status = if let Some(reason) = parsed.skipped {
            FileStatus::Skipped(excerpt(reason))
        } else if let Some(reason) = parsed.unreadable {
            FileStatus::Unreadable(excerpt(reason))
        } else {
            FileStatus::Read
        };
        for r in &mut parsed.host_ranges {
            r.source.clone_from(&source);
        }
        sightings.append(&mut parsed.sightings);
        host_ranges.append(&mut parsed.host_ranges);
        files.push(report);
    }

    if !lists.is_empty() {
        // A listed MAC matters when it repeats (in one list or across lists), is invalid, or is
        // also seen in a structured inventory; only those lines are read again.
        let values = lists.iter().flat_map(|(_, _, scan)| scan.values());
        let mut wanted = maclist::repeated_or_invalid(values, opts.worker_threads());
        wanted.extend(sightings.iter().map(|s| s.mac.to_u64()));
        let wanted = maclist::Wanted::new(wanted);
        for (index, content, scan) in &lists {
            let source = files[*index].path.display().to_string();
            sightings.extend(maclist::collect(&source, content.text(), scan, &wanted));
        }
    }

    let conflicts = find_conflicts(&ConflictInput {
        sightings: &sightings,
        host_ranges: &host_ranges,
        ..ConflictInput::default()
    });
    let summary = summarize(&files, &conflicts);
    Report {
        files,
        conflicts,
        summary,
    }
}

/// Hosts for `macpool hyperv ranges --from FILE` when FILE is an export-script document: each
/// host with its first IPv4 address and its configured range. Hosts without an IPv4 address are
/// reported, not guessed.
pub fn host_specs_from_export(bytes: &[u8]) -> (Vec<HostSpec>, Vec<Diagnostic>) {
    let (hosts, mut diagnostics) = hyperv_json::inventories(bytes, usize::MAX);
    let mut specs = Vec::new();
    for h in hosts {
        match h.ipv4.first() {
            Some(ip) => specs.push(HostSpec {
                name: h.host().to_string(),
                ip: *ip,
                current: h.dynamic_range(),
            }),
            None => diagnostics.push(Diagnostic::whole_file(format!(
                "host {} has no IPv4 address in the export: give it with --host {}=IP",
                h.host(),
                h.host()
            ))),
        }
    }
    (specs, diagnostics)
}

fn summarize(files: &[FileReport], conflicts: &[Conflict]) -> Summary {
    let mut s = Summary::default();
    for f in files {
        match f.status {
            FileStatus::Read => s.files_read += 1,
            FileStatus::Skipped(_) => s.files_skipped += 1,
            FileStatus::Unreadable(_) => s.files_unreadable += 1,
        }
        s.records += f.records;
        s.bad_records += f.bad_records;
    }
    for c in conflicts {
        *s.conflicts_by_class.entry(c.class).or_default() += 1;
    }
    s
}
