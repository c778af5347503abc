//! Plain MAC lists: the parallel scan, the repeat finder and the second pass, on 1 to 4 threads.
//! The body lives in `macpool_audit::fuzz`, so that `cargo test` runs it over the seeds too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| macpool_audit::fuzz::mac_list(data));
