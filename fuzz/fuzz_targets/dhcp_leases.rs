//! ISC dhcpd.leases, dnsmasq leases and Kea lease4 CSV, each on the same arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use macpool_audit::{AuditOptions, Format, parse_bytes};

fuzz_target!(|data: &[u8]| {
    for format in [
        Format::IscDhcpLeases,
        Format::DnsmasqLeases,
        Format::KeaLeases,
    ] {
        let opts = AuditOptions {
            force_format: Some(format),
            ..AuditOptions::default()
        };
        let (_, parsed) = parse_bytes("fuzz.leases", data, &opts);
        assert!(parsed.sightings.len() as u64 <= parsed.records);
    }
});
