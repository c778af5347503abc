//! What `macpool audit` does with a file: decode (BOMs, UTF-16), detect the format, parse.
//! The body lives in `macpool_audit::fuzz`, so that `cargo test` runs it over the seeds too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| macpool_audit::fuzz::detect_and_parse(data));
