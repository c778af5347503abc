//! Hyper-V's own MAC conventions, as documented (see shared/reference/hyperv.md).

use std::net::Ipv4Addr;

use crate::mac::{HYPERV_OUI, Mac};
use crate::range::MacRange;

/// The dynamic range Hyper-V derives for a host when its role is installed:
/// `00-15-5D-<ip3>-<ip4>-00` .. `00-15-5D-<ip3>-<ip4>-FF` (256 addresses).
pub fn default_range_for_ip(ip: Ipv4Addr) -> MacRange {
    let [_, _, c, d] = ip.octets();
    let [o0, o1, o2] = HYPERV_OUI;
    let first = Mac::from_octets([o0, o1, o2, c, d, 0x00]);
    let last = Mac::from_octets([o0, o1, o2, c, d, 0xFF]);
    MacRange::new(first, last).expect("the Hyper-V OUI is unicast")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_example() {
        let r = default_range_for_ip("192.168.1.133".parse().unwrap());
        assert_eq!(r.first().to_string(), "00-15-5D-01-85-00");
        assert_eq!(r.last().to_string(), "00-15-5D-01-85-FF");
    }

    #[test]
    fn hosts_sharing_the_last_two_octets_collide() {
        let a = default_range_for_ip("10.0.1.5".parse().unwrap());
        let b = default_range_for_ip("10.1.1.5".parse().unwrap());
        assert_eq!(a, b);
    }
}
