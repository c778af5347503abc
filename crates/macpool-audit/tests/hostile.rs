//! Hostile and broken files (issue 19): each is one file's problem, reported in a few lines, and
//! the rest is still audited. Plus the fuzz targets run over every seed input.

use std::path::{Path, PathBuf};

use macpool_audit::{
    AuditOptions, FileStatus, Report, Verdict, audit_paths, exit_code, hyperv_json, render_table,
};
use macpool_core::MacFormat;

fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn status<'a>(r: &'a Report, name: &str) -> &'a FileStatus {
    &r.files
        .iter()
        .find(|f| f.path.ends_with(name))
        .unwrap()
        .status
}

fn unreadable_because<'a>(r: &'a Report, name: &str) -> &'a str {
    match status(r, name) {
        FileStatus::Unreadable(why) => why,
        other => panic!("{name}: {other:?}"),
    }
}

const DUP: &str = "00:15:5d:00:00:01\n00:15:5d:00:00:01\n";

#[test]
fn xml_nested_15000_levels_is_refused_and_the_other_files_are_audited() {
    let dir = tempfile::tempdir().unwrap();
    let levels = 15_000;
    let deep = format!(
        "<domain><name>x</name>{}{}</domain>",
        "<a>".repeat(levels),
        "</a>".repeat(levels)
    );
    write(dir.path(), "deep.xml", deep);
    write(dir.path(), "dup.txt", DUP);
    let r = audit_paths(&[dir.path().to_path_buf()], &AuditOptions::default());
    let why = unreadable_because(&r, "deep.xml");
    assert!(
        why.starts_with("XML nested more than 256 levels deep (at line 1)"),
        "{why}"
    );
    assert_eq!(r.summary.files_read, 1);
    assert_eq!(r.conflicts.len(), 1, "the list was still audited");
}

#[test]
fn an_internal_entity_is_never_expanded() {
    let dir = tempfile::tempdir().unwrap();
    // the shape of the 130 KB bomb (one large entity referenced 10,000 times), scaled down so
    // that a parser expanding it would still finish quickly here, with a sighting to show for it
    let bomb = format!(
        "<?xml version='1.0'?>\n<!DOCTYPE domain [\n<!ENTITY e \"{}\">\n]>\n<domain><name>bomb</name><description>{}</description><devices><interface type='network'><mac address='52:54:00:00:00:01'/></interface></devices></domain>\n",
        "x".repeat(10_000),
        "&e;".repeat(1_000)
    );
    write(dir.path(), "bomb.xml", bomb);
    let r = audit_paths(&[dir.path().to_path_buf()], &AuditOptions::default());
    let why = unreadable_because(&r, "bomb.xml");
    assert!(
        why.contains("declares an entity") && why.contains("line 3"),
        "{why}"
    );
    assert_eq!(r.summary.records, 0);
    // a DTD without entities is still read
    write(
        dir.path(),
        "bomb.xml",
        "<!DOCTYPE domain><domain><name>d</name><devices><interface><mac address='52:54:00:00:00:01'/></interface></devices></domain>",
    );
    let r = audit_paths(&[dir.path().to_path_buf()], &AuditOptions::default());
    assert_eq!(r.summary.records, 1);
}

#[test]
fn json_nested_15000_levels_is_a_diagnostic_not_a_crash() {
    // serde_json stops at 128 levels on its own: this test pins that down
    let dir = tempfile::tempdir().unwrap();
    let levels = 15_000;
    write(
        dir.path(),
        "deep.json",
        format!("{}{}", "[".repeat(levels), "]".repeat(levels)),
    );
    write(
        dir.path(),
        "deep-objects.json",
        format!("{}1{}", "{\"value\":".repeat(levels), "}".repeat(levels)),
    );
    let r = audit_paths(&[dir.path().to_path_buf()], &AuditOptions::default());
    for name in ["deep.json", "deep-objects.json"] {
        let why = unreadable_because(&r, name);
        assert!(why.contains("recursion limit exceeded"), "{why}");
    }
    let (hosts, d) = hyperv_json::inventories("[".repeat(levels).as_bytes(), 10);
    assert!(hosts.is_empty() && !d.is_empty());
}

#[test]
fn diagnostics_quote_an_excerpt_of_a_huge_line() {
    let dir = tempfile::tempdir().unwrap();
    let huge = "0".repeat(5_000_000);
    write(
        dir.path(),
        "list.txt",
        format!("00:15:5d:00:00:01\n{huge}\n"),
    );
    write(
        dir.path(),
        "hv.json",
        format!(
            r#"[{{"Name":"n","VMName":"v","MacAddress":"00155D00000G{huge}"}},{{"Name":"n","VMName":"w","MacAddress":"00155D000002"}}]"#
        ),
    );
    let r = audit_paths(&[dir.path().to_path_buf()], &AuditOptions::default());
    for f in &r.files {
        for d in &f.diagnostics {
            assert!(d.message.chars().count() < 300, "{}", &d.message[..300]);
        }
    }
    let table = render_table(&r, MacFormat::Ieee);
    assert!(table.len() < 2_000, "{} bytes", table.len());
    assert!(table.contains("characters left out"), "{table}");
}

#[test]
fn a_missing_input_makes_the_report_incomplete_not_clean() {
    let dir = tempfile::tempdir().unwrap();
    let clean = write(dir.path(), "clean.txt", "00:15:5d:00:00:01\n");
    let r = audit_paths(
        &[clean.clone(), dir.path().join("missing.json")],
        &AuditOptions::default(),
    );
    assert_eq!((r.verdict(), exit_code(&r)), (Verdict::Incomplete, 4));
    let r = audit_paths(&[clean], &AuditOptions::default());
    assert_eq!((r.verdict(), exit_code(&r)), (Verdict::Clean, 0));
}

#[test]
fn every_mac_of_a_csv_line_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "nics.csv",
        "host,nic1,nic2\nsrv1,00:25:90:aa:bb:01,00:25:90:aa:bb:02\nsrv2,00:25:90:aa:bb:03,00:25:90:aa:bb:02\n",
    );
    let r = audit_paths(&[dir.path().to_path_buf()], &AuditOptions::default());
    assert_eq!(r.summary.records, 4);
    let dups: Vec<String> = r
        .conflicts
        .iter()
        .filter_map(|c| c.mac().map(|m| m.to_string()))
        .collect();
    assert_eq!(dups, ["00-25-90-AA-BB-02"]);
    let owners: Vec<_> = r.conflicts[0]
        .sightings()
        .iter()
        .map(|s| s.owner.location.clone().unwrap())
        .collect();
    assert_eq!(owners, ["line 2", "line 3"]);
}

#[test]
fn a_utf16_export_gives_the_same_inventories_as_utf8() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/hyperv/export-cluster-CL1.json");
    let utf8 = std::fs::read(path).unwrap();
    let text = std::str::from_utf8(&utf8).unwrap();
    let mut utf16 = vec![0xFF, 0xFE];
    utf16.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
    let (want, _) = hyperv_json::inventories(&utf8, 10);
    let (got, d) = hyperv_json::inventories(&utf16, 10);
    assert!(d.is_empty(), "{d:?}");
    assert_eq!(got.len(), 3);
    assert_eq!(format!("{got:?}"), format!("{want:?}"));
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// The stand-in for `fuzz/run.sh` where cargo-fuzz cannot build (it needs nightly): every seed
/// (the sample data, the hostile seeds, and a local `fuzz/corpus/` when one exists) through every
/// fuzz target's own body.
#[test]
fn corpus_inputs_run_through_every_fuzz_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut inputs = Vec::new();
    for dir in ["tests/data", "tests/seeds", "../../fuzz/corpus"] {
        files_under(&root.join(dir), &mut inputs);
    }
    assert!(
        inputs.iter().any(|p| p.ends_with("seeds/deep-nesting.xml"))
            && inputs
                .iter()
                .any(|p| p.ends_with("seeds/entity-expansion.xml")),
        "the hostile seeds are part of the corpus"
    );
    for input in &inputs {
        let bytes = std::fs::read(input).unwrap();
        for (name, target) in macpool_audit::fuzz::TARGETS {
            let run = std::panic::catch_unwind(|| target(&bytes));
            assert!(
                run.is_ok(),
                "fuzz target {name} failed on {}",
                input.display()
            );
        }
    }
}
