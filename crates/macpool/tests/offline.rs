//! Commands that need no server: audit, hyperv ranges, hyperv export-script.

mod common;

use common::exe;
use predicates::prelude::*;

fn macpool() -> assert_cmd::Command {
    assert_cmd::Command::new(exe())
}

fn data(path: &str) -> String {
    format!(
        "{}/../macpool-audit/tests/data/{path}",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn audit_exit_status_is_usable_from_monitoring() {
    let dir = tempfile::tempdir().unwrap();
    let clean = dir.path().join("clean.txt");
    std::fs::write(&clean, "00:15:5d:00:00:01\n00:15:5d:00:00:02\n").unwrap();
    macpool()
        .arg("audit")
        .arg(&clean)
        .assert()
        .code(0)
        .stdout(predicate::str::contains(
            "2 records read, 0 bad records skipped; no conflicts",
        ));
    let dup = dir.path().join("dup.csv");
    std::fs::write(
        &dup,
        "mac,label\n00:15:5d:00:00:01,a\n00-15-5D-00-00-01,b\n",
    )
    .unwrap();
    macpool()
        .args(["--mac-format", "hyperv", "audit"])
        .arg(&dup)
        .assert()
        .code(1)
        .stdout(predicate::str::contains("live-duplicate  00155D000001"));
    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, "{ not json").unwrap();
    macpool().arg("audit").arg(&garbage).assert().code(2);
    macpool()
        .arg("audit")
        .arg(dir.path().join("missing"))
        .assert()
        .code(2);
}

#[test]
fn audit_json_reports_the_latent_conflict_of_the_sample_cluster() {
    let out = macpool()
        .args(["--json", "audit", &data("libvirt")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = v.to_string();
    assert!(text.contains("\"latent\""), "{text}");
    assert!(text.contains("52-54-00-AA-00-02"), "{text}");
}

#[test]
fn hyperv_ranges_flags_hosts_sharing_the_last_two_octets() {
    macpool()
        .args(["hyperv", "ranges", "--host", "HV1=10.0.1.5", "--host", "HV2=10.1.1.5"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains("Set-VMHost -ComputerName HV2 -MacAddressMinimum '00155DF00000' -MacAddressMaximum '00155DF000FF'"));
    macpool()
        .args([
            "hyperv",
            "ranges",
            "--host",
            "HV1=10.0.1.5",
            "--host",
            "HV2=10.0.1.6",
        ])
        .assert()
        .code(0);
    macpool()
        .args(["hyperv", "ranges", "--host", "HV1=10.0.1.500"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not an IPv4 address"));
}

#[test]
fn export_script_covers_live_and_checkpoint_adapters_and_the_cluster() {
    let out = macpool()
        .args(["hyperv", "export-script", "--cluster"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let script = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "Get-ClusterNode",
        "Get-VMSnapshot",
        "Get-VMNetworkAdapter",
        "Get-VMHost",
        "ConvertTo-Json",
    ] {
        assert!(script.contains(needle), "export script lacks {needle}");
    }
}

const WEVTUTIL_EXPORT: &str = r#"<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System><Provider Name='Microsoft-Windows-Hyper-V-Worker' Guid='{51ddfa29-d5c8-4803-be4b-2ecb715570fe}'/><EventID>18596</EventID><Version>0</Version><Level>4</Level><TimeCreated SystemTime='2015-10-14T12:00:05.1234567Z'/><EventRecordID>4711</EventRecordID><Channel>Microsoft-Windows-Hyper-V-Worker-Admin</Channel><Computer>HV2</Computer></System><UserData><VmlEventLog xmlns='http://www.microsoft.com/Windows/Virtualization/Events'><VmName>RDS Desk 01</VmName><VmId>6D1C3C1E-0B5A-4F44-9D39-6D1A7A0B0C01</VmId></VmlEventLog></UserData></Event>
<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System><Provider Name='Microsoft-Windows-Hyper-V-Worker'/><EventID>18500</EventID><TimeCreated SystemTime='2015-10-14T12:00:09.0000000Z'/><EventRecordID>4712</EventRecordID><Channel>Microsoft-Windows-Hyper-V-Worker-Admin</Channel><Computer>HV2</Computer></System><UserData><VmlEventLog xmlns='http://www.microsoft.com/Windows/Virtualization/Events'><VmName>RDS Desk 01</VmName><VmId>6D1C3C1E-0B5A-4F44-9D39-6D1A7A0B0C01</VmId></VmlEventLog></UserData></Event>
"#;

#[test]
fn hyperv_events_lists_a_wevtutil_export_by_vm_id() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("worker-admin.xml");
    std::fs::write(&file, WEVTUTIL_EXPORT).unwrap();
    let out = macpool()
        .args(["--json", "hyperv", "events"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let events = v.as_array().expect("a JSON array of events");
    assert_eq!(events.len(), 2);
    let text = v.to_string();
    for needle in [
        "4711",
        "18596",
        "RDS Desk 01",
        "6D1C3C1E-0B5A-4F44-9D39-6D1A7A0B0C01",
    ] {
        assert!(text.contains(needle), "{needle} missing from {text}");
    }
    macpool()
        .args(["hyperv", "events"])
        .arg(&file)
        .assert()
        .success()
        .stdout(predicate::str::contains("4712"));
    macpool()
        .args(["hyperv", "events"])
        .arg(dir.path().join("nope.xml"))
        .assert()
        .code(2);
}

#[test]
fn hyperv_task_xml_is_utf16_with_the_event_trigger_and_value_queries() {
    let out = macpool()
        .args([
            "hyperv",
            "task-xml",
            "--exe",
            r"C:\Program Files\macpool\macpool.exe",
            "--",
            "--server",
            "https://authority:7780",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(&out.stdout[..2], &[0xFF, 0xFE], "UTF-16LE BOM");
    let units: Vec<u16> = out.stdout[2..]
        .chunks(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let xml = String::from_utf16(&units).unwrap();
    for needle in [
        "EventID=18596",
        "eventRecordID",
        "Event/System/EventRecordID",
        "S-1-5-18",
        "HighestAvailable",
        "agent on-event",
        "https://authority:7780",
    ] {
        assert!(xml.contains(needle), "task XML lacks {needle}:\n{xml}");
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("task.xml");
    macpool()
        .args([
            "hyperv",
            "task-xml",
            "--exe",
            r"C:\Program Files\macpool\macpool.exe",
            "--output",
        ])
        .arg(&file)
        .args(["--", "--server", "https://authority:7780"])
        .assert()
        .success()
        .stdout("");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        out.stdout,
        "--output writes the same bytes"
    );
}

/// The printed script is the library's golden one (crates/macpool-agent/tests/data), so the
/// flags reach the builder unchanged; bad values are refused before anything is printed.
#[test]
fn hyperv_cluster_role_script_prints_the_golden_script_and_refuses_bad_values() {
    let golden = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../macpool-agent/tests/data/cluster-role-csv.ps1"
    ))
    .unwrap();
    macpool()
        .args([
            "hyperv",
            "cluster-role-script",
            "--address",
            "10.0.0.50",
            "--csv",
            r"C:\ClusterStorage\Volume1\macpool",
        ])
        .assert()
        .success()
        .stdout(golden);
    macpool()
        .args(["hyperv", "cluster-role-script", "--csv", r"D:\macpool"])
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains("Cluster Shared Volume"));
    // one store, and --disk needs its directory
    macpool()
        .args(["hyperv", "cluster-role-script"])
        .assert()
        .code(2);
    macpool()
        .args(["hyperv", "cluster-role-script", "--disk", "Cluster Disk 2"])
        .assert()
        .code(2);
}
