//! What a MAC's bits and prefix say: the answer to `macpool mac explain`.

use crate::mac::{Mac, MacFormat};
use crate::range::MacRange;

/// Prefixes a virtualization admin meets, with who uses them.
const KNOWN_PREFIXES: &[([u8; 3], &str)] = &[
    ([0x00, 0x15, 0x5D], "Microsoft (Hyper-V dynamic ranges)"),
    ([0x00, 0x1D, 0xD8], "Microsoft (SCVMM default static pool)"),
    ([0x00, 0x50, 0x56], "VMware (vCenter / ESXi)"),
    (
        [0x00, 0x0C, 0x29],
        "VMware (Workstation / ESXi auto-generated)",
    ),
    ([0x00, 0x05, 0x69], "VMware (legacy)"),
    ([0x52, 0x54, 0x00], "QEMU/KVM (libvirt default prefix)"),
    ([0x00, 0x16, 0x3E], "Xen"),
    ([0x08, 0x00, 0x27], "Oracle VirtualBox"),
    ([0x00, 0x1A, 0x4A], "oVirt / Red Hat Virtualization"),
    (
        [0x02, 0x00, 0x00],
        "KubeMacPool default range (locally administered)",
    ),
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    pub mac: Mac,
    /// Every dialect, in [`MacFormat::ALL`] order.
    pub spellings: Vec<(MacFormat, String)>,
    pub multicast: bool,
    pub locally_administered: bool,
    pub zero: bool,
    pub broadcast: bool,
    pub oui: [u8; 3],
    /// Who is known to use this prefix, if we know.
    pub prefix_owner: Option<&'static str>,
    /// For `00-15-5D-xx-yy-zz`: the IPv4 suffix `(xx, yy)` of the host that issues it by default,
    /// and that host's default range.
    pub hyperv_default: Option<((u8, u8), MacRange)>,
    /// Why it cannot be an adapter address, if it cannot.
    pub invalid_reason: Option<&'static str>,
}

pub fn explain(mac: Mac) -> Explanation {
    let oui = mac.oui();
    Explanation {
        mac,
        spellings: MacFormat::ALL
            .iter()
            .map(|f| (*f, mac.display(*f).to_string()))
            .collect(),
        multicast: mac.is_multicast(),
        locally_administered: mac.is_local(),
        zero: mac.is_zero(),
        broadcast: mac.is_broadcast(),
        oui,
        prefix_owner: KNOWN_PREFIXES
            .iter()
            .find(|(p, _)| *p == oui)
            .map(|(_, who)| *who),
        hyperv_default: mac.hyperv_default_host_suffix().map(|(a, b)| {
            let o = mac.octets();
            let first = Mac::from_octets([o[0], o[1], o[2], a, b, 0x00]);
            let last = Mac::from_octets([o[0], o[1], o[2], a, b, 0xFF]);
            ((a, b), MacRange::new(first, last).expect("unicast OUI"))
        }),
        invalid_reason: mac.invalid_reason(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyperv_default_range_names_the_host_ip_suffix_in_decimal() {
        let e = explain("00-15-5D-0A-0B-0C".parse().unwrap());
        assert_eq!(e.hyperv_default.unwrap().0, (10, 11));
        assert_eq!(
            e.hyperv_default.unwrap().1.to_string(),
            "00-15-5D-0A-0B-00 - 00-15-5D-0A-0B-FF"
        );
        assert_eq!(e.prefix_owner, Some("Microsoft (Hyper-V dynamic ranges)"));
        assert!(!e.multicast && !e.locally_administered && e.invalid_reason.is_none());
    }

    #[test]
    fn libvirt_prefix_is_local_and_not_hyperv() {
        let e = explain("52:54:00:12:34:56".parse().unwrap());
        assert!(e.locally_administered);
        assert_eq!(e.hyperv_default, None);
    }

    #[test]
    fn broadcast_is_multicast_and_invalid() {
        let e = explain(Mac::BROADCAST);
        assert!(e.broadcast && e.multicast && e.invalid_reason.is_some());
    }
}
