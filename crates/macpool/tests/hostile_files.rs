//! Hostile and broken files through the real binary (issue 19): XML that would overflow the
//! parser's stack, unbounded input in diagnostics, exit codes monitoring can trust, UTF-16
//! exports for `inventory push`, and output into a closed pipe.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{Server, exe};
use predicates::prelude::*;

fn macpool() -> assert_cmd::Command {
    assert_cmd::Command::new(exe())
}

const DUPLICATED: &str = "00:15:5d:00:00:01,a\n00-15-5D-00-00-01,b\n";

fn deep_xml(levels: usize) -> String {
    format!(
        "<domain><name>deep</name>{}{}</domain>\n",
        "<a>".repeat(levels),
        "</a>".repeat(levels)
    )
}

#[test]
fn deeply_nested_xml_is_one_file_s_problem_not_the_whole_audit_s() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a-deep.xml"), deep_xml(15_000)).unwrap();
    std::fs::write(dir.path().join("b-dup.csv"), DUPLICATED).unwrap();
    let out = macpool().arg("audit").arg(dir.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("live-duplicate  00-15-5D-00-00-01"),
        "{stdout}"
    );
    assert!(
        stdout.contains("a-deep.xml: unreadable: XML nested more than 256 levels deep"),
        "{stdout}"
    );
    // and `hyperv events` on the same shape
    let events = dir.path().join("events.xml");
    std::fs::write(
        &events,
        format!(
            "<Event>{}{}</Event>",
            "<a>".repeat(15_000),
            "</a>".repeat(15_000)
        ),
    )
    .unwrap();
    macpool()
        .args(["hyperv", "events"])
        .arg(&events)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("nested more than 256 levels deep"));
}

#[test]
fn an_unreadable_input_is_never_clean() {
    let dir = tempfile::tempdir().unwrap();
    let clean = dir.path().join("clean.txt");
    std::fs::write(&clean, "00:15:5d:00:00:01\n").unwrap();
    macpool()
        .arg("audit")
        .arg(&clean)
        .arg(dir.path().join("missing.json"))
        .assert()
        .code(4)
        .stdout(predicate::str::contains(
            "1 files read, 0 skipped, 1 unreadable",
        ));
    // conflicts are the finding: they outrank what could not be read
    let dup = dir.path().join("dup.csv");
    std::fs::write(&dup, DUPLICATED).unwrap();
    macpool()
        .arg("audit")
        .arg(&dup)
        .arg(dir.path().join("missing.json"))
        .assert()
        .code(1);
}

const EVENT: &str = "<Event><System><EventID>18596</EventID><EventRecordID>7</EventRecordID><Channel>Microsoft-Windows-Hyper-V-Worker-Admin</Channel></System></Event>\n";

#[test]
fn hyperv_events_summarises_malformed_events_and_says_when_a_file_gave_none() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.xml");
    std::fs::write(&good, EVENT).unwrap();
    let empty = dir.path().join("empty-events.xml");
    std::fs::write(&empty, "<Event></Event>\n".repeat(3_000)).unwrap();
    let out = macpool()
        .args(["hyperv", "events"])
        .arg(&good)
        .arg(&empty)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("empty-events.xml: … and 2980 more malformed events"),
        "{stderr}"
    );
    assert!(stderr.len() < 8_000, "{} bytes of stderr", stderr.len());
    // one huge malformed event is quoted, not echoed
    let huge = dir.path().join("huge.xml");
    std::fs::write(&huge, format!("<Event>{}", "x".repeat(5_000_000))).unwrap();
    let out = macpool()
        .args(["hyperv", "events"])
        .arg(&good)
        .arg(&huge)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(
        out.stderr.len() < 2_000,
        "{} bytes of stderr",
        out.stderr.len()
    );
}

#[test]
fn a_50_mb_line_is_quoted_in_a_few_hundred_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("list.txt");
    let mut text = String::from("00:15:5d:00:00:01\n");
    text.push_str(&"0".repeat(5_000_000));
    text.push('\n');
    std::fs::write(&list, text).unwrap();
    let out = macpool().arg("audit").arg(&list).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("list.txt: line 2: "), "{stdout}");
    assert!(stdout.contains("characters left out"), "{stdout}");
    assert!(stdout.len() < 2_000, "{} bytes of report", stdout.len());
}

/// A Windows PowerShell 5.1 `ConvertTo-Json > export.json`: UTF-16LE with a byte order mark.
fn utf16le(text: &str) -> Vec<u8> {
    let mut out = vec![0xFF, 0xFE];
    out.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
    out
}

#[test]
fn inventory_push_reads_a_utf16_export_like_audit() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"));
    let file = dir.path().join("hv1.json");
    let export = r#"[{"Name":"Network Adapter","IsManagementOs":false,"IsDeleted":false,"ComputerName":"HV1","VMName":"desk-01","VMId":"5f0e3c1a-0000-4000-8000-00000000d001","VMSnapshotId":"00000000-0000-0000-0000-000000000000","MacAddress":"00155D018511","DynamicMacAddressEnabled":true}]"#;
    std::fs::write(&file, utf16le(export)).unwrap();
    s.cli()
        .args(["inventory", "push", "--host", "HV1", "--generation", "1"])
        .arg(&file)
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "inventory of host HV1 generation 1 accepted (1 VMs)",
        ));
}

/// Runs `macpool args…` with its stdout a pipe whose reading end is already closed: every write
/// fails with EPIPE, as in `macpool history | head -1` once `head` has its line.
fn into_closed_pipe(args: &[&str], env: &[(&str, &str)], files: &[&Path]) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(exe())
        .args(args)
        .args(files)
        .envs(env.iter().copied())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    assert!(stderr.is_empty(), "{args:?} wrote to stderr: {stderr}");
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let dup = dir.path().join("dup.csv");
    std::fs::write(&dup, DUPLICATED.repeat(2_000)).unwrap();
    let events = dir.path().join("events.xml");
    std::fs::write(&events, EVENT).unwrap();
    for args in [
        &["audit"][..],
        &["--json", "audit"],
        &["audit", "--csv"],
        &["hyperv", "events"],
    ] {
        let file = if args.contains(&"events") {
            &events
        } else {
            &dup
        };
        into_closed_pipe(args, &[], &[file]);
    }
    into_closed_pipe(&["hyperv", "export-script", "--cluster"], &[], &[]);
    into_closed_pipe(
        &["hyperv", "task-xml", "--exe", r"C:\macpool.exe"],
        &[],
        &[],
    );
    into_closed_pipe(&["mac", "explain", "00-15-5D-00-00-01"], &[], &[]);
    let s = Server::start(&dir.path().join("data"));
    let env = [
        ("MACPOOL_SERVER", s.url.as_str()),
        ("MACPOOL_TOKEN", common::TOKEN),
    ];
    into_closed_pipe(&["history", "00-15-5D-00-00-01"], &env, &[]);
    into_closed_pipe(&["token", "list"], &env, &[]);
}
