//! libvirt domain / domainsnapshot XML on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use macpool_audit::{AuditOptions, Format, parse_bytes};

fuzz_target!(|data: &[u8]| {
    let opts = AuditOptions {
        force_format: Some(Format::LibvirtXml),
        ..AuditOptions::default()
    };
    let (_, parsed) = parse_bytes("fuzz.xml", data, &opts);
    assert!(parsed.sightings.len() as u64 <= parsed.records);
});
