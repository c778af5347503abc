//! The bodies of the cargo-fuzz targets in `fuzz/` (one function per target), here so that the
//! test suite runs the very same code over every seed input with the stable toolchain
//! (`tests/audit.rs`, `corpus_inputs_run_through_every_fuzz_target`); `cargo fuzz` needs nightly.

use macpool_core::hyperv::HostSpec;
use macpool_core::{Mac, MacFormat, MacRange};

use crate::{AuditOptions, Format, hyperv_json, parse_bytes};

/// A target's body: it panics on a finding.
pub type Target = fn(&[u8]);

/// Every target by its name in `fuzz/Cargo.toml`.
pub const TARGETS: [(&str, Target); 6] = [
    ("hyperv_json", hyperv_json),
    ("libvirt_xml", libvirt_xml),
    ("mac_list", mac_list),
    ("dhcp_leases", dhcp_leases),
    ("detect_and_parse", detect_and_parse),
    ("mac_and_range", mac_and_range),
];

fn forced(format: Format, threads: usize, source: &str, data: &[u8]) {
    let opts = AuditOptions {
        force_format: Some(format),
        threads,
        ..AuditOptions::default()
    };
    let (_, parsed) = parse_bytes(source, data, &opts);
    assert!(parsed.sightings.len() as u64 <= parsed.records);
}

/// Hyper-V PowerShell JSON: the audit reader and the inventory reader.
pub fn hyperv_json(data: &[u8]) {
    forced(Format::HypervJson, 0, "fuzz.json", data);
    let _ = hyperv_json::inventories(data, 20);
}

/// libvirt domain / domainsnapshot XML.
pub fn libvirt_xml(data: &[u8]) {
    forced(Format::LibvirtXml, 0, "fuzz.xml", data);
}

/// Plain MAC lists: the parallel scan, the repeat finder and the second pass, on 1 to 4 threads.
pub fn mac_list(data: &[u8]) {
    let threads = data.first().map_or(1, |b| usize::from(b % 4) + 1);
    forced(Format::MacList, threads, "fuzz.txt", data);
}

/// ISC dhcpd.leases, dnsmasq leases and Kea lease4 CSV, each on the same bytes.
pub fn dhcp_leases(data: &[u8]) {
    for format in [
        Format::IscDhcpLeases,
        Format::DnsmasqLeases,
        Format::KeaLeases,
    ] {
        forced(format, 0, "fuzz.leases", data);
    }
}

/// What `macpool audit` does with a file: decode (BOMs, UTF-16), detect the format, parse.
pub fn detect_and_parse(data: &[u8]) {
    let (_, parsed) = parse_bytes("fuzz", data, &AuditOptions::default());
    assert!(parsed.sightings.len() as u64 <= parsed.records);
}

/// The core's MAC and range parsers, and the Set-VMHost host spec parser.
pub fn mac_and_range(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(m) = Mac::parse(s) {
        for f in MacFormat::ALL {
            assert_eq!(Mac::parse(&m.display(f).to_string()), Ok(m));
        }
    }
    if let Ok(r) = MacRange::parse(s) {
        assert!(r.first() <= r.last());
    }
    let _ = HostSpec::parse(s);
}
