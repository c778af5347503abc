//! The core's MAC and range parsers, and the Set-VMHost host spec parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use macpool_core::hyperv::HostSpec;
use macpool_core::{Mac, MacFormat, MacRange};

fuzz_target!(|data: &[u8]| {
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
});
