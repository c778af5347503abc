//! What `macpool audit` does with a file: decode (BOMs, UTF-16), detect the format, parse.
#![no_main]

use libfuzzer_sys::fuzz_target;
use macpool_audit::{AuditOptions, parse_bytes};

fuzz_target!(|data: &[u8]| {
    let (_, parsed) = parse_bytes("fuzz", data, &AuditOptions::default());
    assert!(parsed.sightings.len() as u64 <= parsed.records);
});
