//! The core's MAC and range parsers, and the Set-VMHost host spec parser.
//! The body lives in `macpool_audit::fuzz`, so that `cargo test` runs it over the seeds too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| macpool_audit::fuzz::mac_and_range(data));
