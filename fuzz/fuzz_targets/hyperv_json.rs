//! Hyper-V PowerShell JSON: the audit reader and the inventory reader on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use macpool_audit::{AuditOptions, Format, hyperv_json, parse_bytes};

fuzz_target!(|data: &[u8]| {
    let opts = AuditOptions {
        force_format: Some(Format::HypervJson),
        ..AuditOptions::default()
    };
    let (_, parsed) = parse_bytes("fuzz.json", data, &opts);
    assert!(parsed.sightings.len() as u64 <= parsed.records);
    let _ = hyperv_json::inventories(data, 20);
});
