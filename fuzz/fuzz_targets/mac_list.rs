//! Plain MAC lists: the parallel scan, the repeat finder and the second pass, on 1 to 4 threads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use macpool_audit::{AuditOptions, Format, parse_bytes};

fuzz_target!(|data: &[u8]| {
    let threads = data.first().map_or(1, |b| usize::from(b % 4) + 1);
    let opts = AuditOptions {
        force_format: Some(Format::MacList),
        threads,
        ..AuditOptions::default()
    };
    let (_, parsed) = parse_bytes("fuzz.txt", data, &opts);
    assert!(parsed.sightings.len() as u64 <= parsed.records);
});
