//! The audit end to end over the sample files in `tests/data/`, written from the documented
//! shapes (see shared/reference/hyperv.md): Windows PowerShell 5.1 (UTF-16LE, `/Date()/`,
//! `{"value":…,"Count":…}`), PowerShell 7, the export-script document, libvirt XML, lists and
//! DHCP leases, plus broken files.

use std::path::{Path, PathBuf};

use macpool_audit::{
    AuditOptions, FileStatus, Format, Report, audit_paths, exit_code, hyperv_json, parse_bytes,
    render_csv, render_json, render_table,
};
use macpool_core::conflict::{ConflictClass, Seen, Subject};
use macpool_core::inventory::{AdapterLocation, CheckpointType, VmState};
use macpool_core::{Mac, MacFormat, Timestamp};
use proptest::prelude::*;

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

fn audit(rels: &[&str]) -> Report {
    let paths: Vec<PathBuf> = rels.iter().map(|r| data(r)).collect();
    audit_paths(&paths, &AuditOptions::default())
}

fn mac(s: &str) -> Mac {
    s.parse().unwrap()
}

/// (class, MAC) of every MAC conflict, in report order.
fn mac_conflicts(r: &Report) -> Vec<(&'static str, String)> {
    r.conflicts
        .iter()
        .filter_map(|c| c.mac().map(|m| (c.class.slug(), m.to_string())))
        .collect()
}

fn file<'a>(r: &'a Report, name: &str) -> &'a macpool_audit::FileReport {
    r.files
        .iter()
        .find(|f| f.path.ends_with(name))
        .unwrap_or_else(|| panic!("{name} not in report"))
}

#[test]
fn whole_data_dir_finds_every_planted_conflict() {
    let r = audit(&[""]);
    assert_eq!(
        mac_conflicts(&r),
        [
            ("live-duplicate", "00-15-5D-01-85-17".to_string()),
            ("live-duplicate", "00-15-5D-02-85-22".to_string()),
            ("live-duplicate", "00-25-90-AA-BB-01".to_string()),
            ("live-duplicate", "00-25-90-AA-BB-02".to_string()),
            ("latent", "52-54-00-AA-00-02".to_string()),
            ("invalid", "01-00-5E-00-00-01".to_string()),
        ]
    );
    let overlaps: Vec<_> = r
        .conflicts
        .iter()
        .filter(|c| c.class == ConflictClass::RangeOverlap)
        .collect();
    assert_eq!(overlaps.len(), 1);
    let Subject::Ranges { overlap, .. } = &overlaps[0].subject else {
        panic!()
    };
    assert_eq!(overlap.first(), mac("00-15-5D-01-05-00"));

    let s = &r.summary;
    assert_eq!(
        (s.files_read, s.files_skipped, s.files_unreadable),
        (15, 1, 2)
    );
    assert_eq!(s.records, 36);
    assert_eq!(s.bad_records, 6);
    assert_eq!(s.conflicts(), 7);
    assert_eq!(exit_code(&r), 1);
}

#[test]
fn the_seeds_scenario_across_two_hosts_exports_is_latent_and_migration_is_not() {
    let r = audit(&[
        "hyperv/hv1-ps51-utf16.json",
        "hyperv/hv2-checkpoints-ps7.json",
        "hyperv/hv2-live-single-object.json",
        "hyperv/hv2-wrapped-value-count.json",
    ]);
    // desk-02 is live on HV1 and HV2 (same VMId, different case) and in its own checkpoint;
    // desk-03's blanked checkpoint MAC is 000000000000 on a dynamic adapter: neither is a conflict.
    assert_eq!(
        mac_conflicts(&r),
        [("latent", "00-15-5D-01-85-17".to_string())]
    );
    let c = &r.conflicts[0];
    let hosts: Vec<_> = c
        .sightings()
        .iter()
        .map(|s| s.owner.host.as_deref().unwrap())
        .collect();
    assert_eq!(hosts, ["HV1", "HV2"]);
    assert!(
        matches!(&c.sightings()[1].seen, Seen::Checkpoint { name, .. } if name.starts_with("RDV_ROLLBACK"))
    );
    assert_eq!(r.summary.records, 8);
    assert_eq!(exit_code(&r), 1);
    let table = render_table(&r, MacFormat::Hyperv);
    assert!(table.contains("1. latent  00155D018517"), "{table}");
    assert!(table.contains("hv2-checkpoints-ps7.json ([0])"));
}

#[test]
fn powershell_5_utf16_and_7_utf8_read_the_same() {
    let utf16 = std::fs::read(data("hyperv/hv1-ps51-utf16.json")).unwrap();
    assert_eq!(
        &utf16[..2],
        &[0xFF, 0xFE],
        "the sample is UTF-16LE with a BOM"
    );
    let text = String::from_utf16(
        &utf16[2..]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let opts = AuditOptions::default();
    let (f16, p16) = parse_bytes("a", &utf16, &opts);
    let (f8, p8) = parse_bytes("a", text.as_bytes(), &opts);
    assert_eq!(
        (f16, f8),
        (Some(Format::HypervJson), Some(Format::HypervJson))
    );
    assert_eq!(p16.sightings, p8.sightings);
    assert_eq!(p16.sightings.len(), 2);
    assert_eq!(
        p16.sightings[0].owner.vm_id.as_deref(),
        Some("0b1e6a52-7c1f-4c55-9d2e-1f6a0e6b1717")
    );
    assert_eq!(p16.sightings[0].dynamic, Some(true));
}

#[test]
fn management_os_adapters_are_owned_by_the_host() {
    let (_, p) = parse_bytes(
        "w",
        &std::fs::read(data("hyperv/hv2-wrapped-value-count.json")).unwrap(),
        &AuditOptions::default(),
    );
    assert_eq!(p.sightings.len(), 2);
    assert_eq!(
        p.sightings[1].owner.vm_name.as_deref(),
        Some("HV2 (management OS)")
    );
    assert_eq!(
        p.sightings[1].owner.location.as_deref(),
        Some("[0].value[1]")
    );
}

#[test]
fn truncated_json_keeps_the_records_before_the_cut() {
    let r = audit(&["malformed/truncated-hyperv.json"]);
    let f = file(&r, "truncated-hyperv.json");
    assert_eq!(f.status, FileStatus::Read);
    assert_eq!(f.records, 2);
    assert_eq!(f.bad_records, 1);
    let d = f.diagnostics.last().unwrap();
    assert_eq!(d.location.as_deref(), Some("line 60 column 14"));
    assert!(
        d.message.contains("truncated") && d.message.contains("2 complete records"),
        "{}",
        d.message
    );
    assert_eq!(exit_code(&r), 0, "what was read is clean");
}

#[test]
fn bad_records_are_named_by_index_and_the_rest_is_audited() {
    let r = audit(&["malformed/bad-records-hyperv.json"]);
    let f = file(&r, "bad-records-hyperv.json");
    assert_eq!(f.records, 1);
    let got: Vec<(String, String)> = f
        .diagnostics
        .iter()
        .map(|d| (d.location.clone().unwrap(), d.message.clone()))
        .collect();
    assert_eq!(
        got[0],
        (
            "record [2]".into(),
            "adapter 'Network Adapter' of VM 'nomac' has no MacAddress".into()
        )
    );
    assert_eq!(got[1].0, "record [3]");
    assert!(
        got[1]
            .1
            .contains("bad digit 'G' at position 12 in '00155D0300BG'")
    );
    assert_eq!(
        got[2],
        ("record [4]".into(), "a string, not an object".into())
    );
}

#[test]
fn broken_files_are_unreadable_with_the_place_named() {
    let r = audit(&["malformed/not-json.json", "malformed/truncated-domain.xml"]);
    let FileStatus::Unreadable(why) = &file(&r, "not-json.json").status else {
        panic!()
    };
    assert!(
        why.starts_with("not valid JSON: line 1 column 18: invalid number"),
        "{why}"
    );
    let FileStatus::Unreadable(why) = &file(&r, "truncated-domain.xml").status else {
        panic!()
    };
    assert!(why.contains("ends at line 6"), "{why}");
    assert_eq!(exit_code(&r), 2, "nothing readable");
}

#[test]
fn export_document_reads_into_inventories() {
    let bytes = std::fs::read(data("hyperv/export-cluster-CL1.json")).unwrap();
    let (hosts, diagnostics) = hyperv_json::inventories(&bytes, 10);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    let names: Vec<_> = hosts.iter().map(|h| h.host()).collect();
    assert_eq!(names, ["HV3", "HV4", "HV5"]);
    let hv3 = &hosts[0];
    assert_eq!(hv3.cluster.as_deref(), Some("CL1"));
    assert_eq!(
        hv3.dynamic_range(),
        None,
        "empty MacAddressMinimum means unknown"
    );
    let vm = &hv3.vms()[0];
    assert_eq!(
        (vm.id(), vm.name.as_str(), &vm.state),
        (
            "c0c0c0c0-0000-4000-8000-000000000031",
            "web-31",
            &VmState::Running
        )
    );
    assert_eq!(vm.adapters.len(), 3);
    let AdapterLocation::Checkpoint(cp) = &vm.adapters[1].location else {
        panic!("{:?}", vm.adapters[1])
    };
    assert_eq!(cp.name, "before-patch");
    assert_eq!(cp.kind, CheckpointType::Standard);
    assert_eq!(cp.created, Some(Timestamp::from_millis(1_445_000_000_000)));
    assert_eq!(hosts[1].vms()[0].state, VmState::Off);
    let hv5 = &hosts[2];
    assert_eq!(
        hv5.dynamic_range().unwrap().to_string(),
        "00-15-5D-F0-00-00 - 00-15-5D-F0-00-FF"
    );
    assert_eq!(hv5.cursor(), Some(mac("00155DF00041")));
    assert_eq!(
        hosts[1].host_ranges().len(),
        2,
        "HV4 has two IPs and no configured range"
    );
}

#[test]
fn libvirt_snapshot_mac_live_on_another_domain_is_latent_and_networks_are_skipped() {
    let r = audit(&["libvirt"]);
    assert_eq!(
        mac_conflicts(&r),
        [("latent", "52-54-00-AA-00-02".to_string())]
    );
    // web01's own MAC in its own snapshot is not a conflict
    assert!(
        !mac_conflicts(&r)
            .iter()
            .any(|(_, m)| m == "52-54-00-6B-3C-58")
    );
    assert_eq!(
        file(&r, "network-default.xml").status,
        FileStatus::Skipped(
            "XML root element <network> is not a libvirt <domain> or <domainsnapshot>".into()
        )
    );
    assert_eq!((r.summary.files_read, r.summary.files_skipped), (3, 1));
}

#[test]
fn lists_find_repeats_within_and_across_files_and_against_inventories() {
    let r = audit(&["lists", "hyperv/hv2-live-single-object.json"]);
    assert_eq!(
        mac_conflicts(&r),
        [
            ("live-duplicate", "00-15-5D-02-85-22".to_string()),
            ("live-duplicate", "00-25-90-AA-BB-01".to_string()),
            ("live-duplicate", "00-25-90-AA-BB-02".to_string()),
        ]
    );
    let c = &r.conflicts[2];
    let places: Vec<_> = c
        .sightings()
        .iter()
        .map(|s| s.owner.location.clone().unwrap())
        .collect();
    assert_eq!(places, ["line 3", "line 4"]);
    assert_eq!(
        c.sightings()[1].seen,
        Seen::Listed {
            label: Some("printer floor 3 (reused NIC)".into())
        }
    );
    let f = file(&r, "physical-nics.txt");
    assert_eq!((f.records, f.bad_records), (6, 2));
    assert_eq!(f.diagnostics[0].location.as_deref(), Some("line 8"));
    assert_eq!(
        file(&r, "printers.csv").bad_records,
        0,
        "the header line is not an error"
    );
}

#[test]
fn dhcp_mac_with_two_client_ids_is_reported_and_renewals_are_not() {
    let r = audit(&["dhcp"]);
    assert_eq!(
        mac_conflicts(&r),
        [("live-duplicate", "00-15-5D-01-85-17".to_string())]
    );
    let formats: Vec<_> = r.files.iter().map(|f| f.format.unwrap()).collect();
    assert_eq!(
        formats,
        [
            Format::IscDhcpLeases,
            Format::DnsmasqLeases,
            Format::KeaLeases
        ]
    );
    assert_eq!(r.summary.records, 2 + 3 + 2);
}

#[test]
fn clean_input_exits_zero() {
    let r = audit(&["dhcp/kea-leases4.csv", "libvirt/web01.xml"]);
    assert!(r.conflicts.is_empty());
    assert_eq!(exit_code(&r), 0);
    assert!(render_table(&r, MacFormat::Ieee).ends_with("2 files read, 0 skipped, 0 unreadable; 4 records read, 0 bad records skipped; no conflicts\n"));
}

#[test]
fn missing_binary_and_empty_files_are_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty.txt"), b"").unwrap();
    std::fs::write(
        dir.path().join("image.bin"),
        [0x7F, b'E', b'L', b'F', 0, 0, 0, 1],
    )
    .unwrap();
    let missing = dir.path().join("nope.json");
    let r = audit_paths(
        &[dir.path().to_path_buf(), missing.clone()],
        &AuditOptions::default(),
    );
    assert_eq!(exit_code(&r), 2);
    assert_eq!(
        (r.summary.files_skipped, r.summary.files_unreadable),
        (2, 1)
    );
    let FileStatus::Unreadable(why) = &r.files.iter().find(|f| f.path == missing).unwrap().status
    else {
        panic!()
    };
    assert!(why.contains("No such file"), "{why}");
    assert!(r.files.iter().any(|f| f.status
        == FileStatus::Skipped("binary file (contains NUL bytes), not an inventory".into())));
}

#[test]
fn a_file_reached_twice_is_read_once() {
    let r = audit(&["lists", "lists/physical-nics.txt", "lists/../lists"]);
    assert_eq!(r.files.len(), 2);
    assert_eq!(mac_conflicts(&r).len(), 2);
}

#[test]
fn json_report_is_machine_readable() {
    let r = audit(&[""]);
    let v: serde_json::Value = serde_json::from_str(&render_json(&r, MacFormat::Unix)).unwrap();
    assert_eq!(v["summary"]["conflicts"], 7);
    assert_eq!(v["summary"]["conflicts_by_class"]["live-duplicate"], 4);
    assert_eq!(v["summary"]["files_unreadable"], 2);
    assert_eq!(v["conflicts"][0]["mac"], "00:15:5d:01:85:17");
    assert_eq!(v["conflicts"][0]["owners"].as_array().unwrap().len(), 4);
    let overlap = v["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["class"] == "range-overlap")
        .unwrap();
    assert_eq!(overlap["overlap"]["addresses"], 256);
    assert_eq!(overlap["ranges"][1]["origin"], "derived-from-ip 10.1.1.5");
    let files = v["files"].as_array().unwrap();
    assert!(
        files
            .iter()
            .any(|f| f["status"] == "skipped" && f["format"] == "libvirt-xml")
    );
}

#[test]
fn csv_has_a_row_per_owner_and_quotes_commas() {
    let r = audit(&["lists"]);
    let csv = render_csv(&r, MacFormat::Ieee);
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(
        rows[0],
        "conflict,class,mac_or_range,kind,owner,host,source,location,explanation,fix"
    );
    assert_eq!(rows.len(), 1 + 4);
    assert!(rows[1].starts_with("1,live-duplicate,00-25-90-AA-BB-01,listed,-,,"));
    assert!(
        rows[1].contains(",\"00-25-90-AA-BB-01 is in use by 2 different owners: line 2 of"),
        "{}",
        rows[1]
    );
}

#[test]
fn forced_format_overrides_detection() {
    let opts = AuditOptions {
        force_format: Some(Format::MacList),
        ..AuditOptions::default()
    };
    let (format, parsed) = parse_bytes("x", b"1445000000 00:15:5d:01:85:11 10.0.0.5 a *\n", &opts);
    assert_eq!(format, Some(Format::MacList));
    assert_eq!(
        parsed.records, 1,
        "the dnsmasq line read as a list: its second field is the MAC"
    );
}

fn samples() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for dir in ["hyperv", "libvirt", "lists", "dhcp", "malformed"] {
        for e in std::fs::read_dir(data(dir)).unwrap() {
            out.push(std::fs::read(e.unwrap().path()).unwrap());
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The stand-in for a fuzzer where `cargo fuzz` cannot run: every parser, forced onto
    /// arbitrary bytes, returns (no panic) and keeps its counters consistent.
    #[test]
    fn every_parser_survives_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600), f in 0usize..7) {
        let opts = AuditOptions { force_format: Format::ALL.get(f).copied(), max_diagnostics_per_file: 5, ..AuditOptions::default() };
        let (_, p) = parse_bytes("fuzz", &bytes, &opts);
        prop_assert!(p.diagnostics.iter().filter(|d| d.location.is_some()).count() as u64 <= p.bad_records.max(5) + 1);
        prop_assert!(p.sightings.len() as u64 <= p.records);
    }

    /// Truncated and bit-flipped copies of the real samples: the shapes a fuzzer reaches first.
    #[test]
    fn mangled_samples_never_panic(which in 0usize..64, cut in any::<prop::sample::Index>(), flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4)) {
        let all = samples();
        let mut bytes = all[which % all.len()].clone();
        if !bytes.is_empty() {
            for (at, b) in flips {
                let i = at.index(bytes.len());
                bytes[i] = b;
            }
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        let (_, p) = parse_bytes("mangled", &bytes, &AuditOptions::default());
        let _ = render_table(&Report { files: vec![], conflicts: vec![], summary: Default::default() }, MacFormat::Ieee);
        prop_assert!(p.sightings.len() as u64 <= p.records);
    }
}

#[test]
fn export_documents_give_hosts_for_the_range_plan() {
    let bytes = std::fs::read(data("hyperv/export-cluster-CL1.json")).unwrap();
    let (specs, diagnostics) = macpool_audit::host_specs_from_export(&bytes);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    let got: Vec<(String, String, bool)> = specs
        .iter()
        .map(|s| (s.name.clone(), s.ip.to_string(), s.current.is_some()))
        .collect();
    assert_eq!(
        got,
        [
            ("HV3".to_string(), "10.0.1.5".to_string(), false),
            ("HV4".to_string(), "10.1.1.5".to_string(), false),
            ("HV5".to_string(), "10.0.9.9".to_string(), true),
        ]
    );
    let plan = macpool_core::hyperv::plan_ranges(&specs, &Default::default()).unwrap();
    assert_eq!(
        plan.iter().filter(|p| p.changes()).count(),
        1,
        "HV4 moves off HV3's default range"
    );
    let (_, d) = macpool_audit::host_specs_from_export(br#"{"HostName":"HV9","Adapters":[]}"#);
    assert_eq!(
        d[0].message,
        "host HV9 has no IPv4 address in the export: give it with --host HV9=IP"
    );
}
