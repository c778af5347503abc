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
        .stdout(predicate::str::contains("Set-VMHost -ComputerName HV2 -MacAddressMinimum 00155DF00000 -MacAddressMaximum 00155DF000FF"));
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
