//! Domain and snapshot XML → inventory adapters, and the one edit the agent makes to a
//! persistent definition: an interface's `<mac>`. Reading is the audit's
//! ([`macpool_audit::libvirt::read`]), so the offline audit of a `virsh dumpxml` export and the
//! live agent see the same interfaces under the same names
//! ([`macpool_audit::libvirt::adapter_name`]).
//!
//! Pure functions over text: everything here is tested without libvirt.

use macpool_audit::libvirt::{DomainXml, LibvirtXml, read};
use macpool_core::inventory::{Adapter, AdapterLocation, Checkpoint, CheckpointType, MacKind};
use macpool_core::{Mac, MacFormat, Timestamp};

use crate::hypervisor::MacSetting;

/// Adapters of a domain XML, and one message per interface that could not be read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Adapters {
    pub adapters: Vec<Adapter>,
    pub problems: Vec<String>,
}

fn adapters_of(d: &DomainXml, location: &AdapterLocation, out: &mut Adapters) {
    for i in &d.interfaces {
        match &i.mac {
            // libvirt has no dynamic MACs: a generated one is written into the definition
            Ok(mac) => {
                if out
                    .adapters
                    .iter()
                    .any(|a| a.mac == *mac && a.name == i.name)
                {
                    continue;
                }
                out.adapters.push(Adapter {
                    id: None,
                    name: i.name.clone(),
                    mac: *mac,
                    kind: MacKind::Static,
                    location: location.clone(),
                })
            }
            Err(why) => out.problems.push(format!("line {}: {why}", i.line)),
        }
    }
}

/// The live adapters of a domain from `virDomainGetXMLDesc` (the live XML of a running domain,
/// the persistent one of a domain that is off). `Err` when the text is not a `<domain>` at all.
pub fn live_adapters(xml: &str) -> Result<Adapters, String> {
    match read(xml)? {
        LibvirtXml::Domain(d) => {
            let mut out = Adapters::default();
            adapters_of(&d, &AdapterLocation::Live, &mut out);
            Ok(out)
        }
        LibvirtXml::Snapshot(_) => Err("expected a <domain>, got a <domainsnapshot>".into()),
        LibvirtXml::Other(root) => Err(format!("expected a <domain>, got <{root}>")),
    }
}

/// A snapshot (`virDomainSnapshotGetXMLDesc`) as a checkpoint and its adapters.
///
/// The checkpoint's id and name are the snapshot's name (libvirt names snapshots uniquely per
/// domain and has no other id); its type is `libvirt-<state>` (`libvirt-running`,
/// `libvirt-shutoff`, …). The adapters are those of the embedded `<domain>` (the definition a
/// revert brings back), plus any other MAC of `<inactiveDomain>` (the persistent definition a
/// revert of a running snapshot restores): both can come back.
pub fn snapshot_adapters(xml: &str) -> Result<(Checkpoint, Adapters), String> {
    let s = match read(xml)? {
        LibvirtXml::Snapshot(s) => s,
        LibvirtXml::Domain(_) => return Err("expected a <domainsnapshot>, got a <domain>".into()),
        LibvirtXml::Other(root) => {
            return Err(format!("expected a <domainsnapshot>, got <{root}>"));
        }
    };
    let name = s
        .name
        .clone()
        .ok_or_else(|| format!("line {}: <domainsnapshot> has no <name>", s.line))?;
    let checkpoint = Checkpoint {
        id: name.clone(),
        name: name.clone(),
        kind: CheckpointType::Other(format!(
            "libvirt-{}",
            s.state.as_deref().unwrap_or("unknown")
        )),
        created: s
            .creation_time
            .and_then(|t| t.checked_mul(1000))
            .map(Timestamp::from_millis),
    };
    let mut out = Adapters::default();
    if s.domains.is_empty() {
        out.problems.push(format!(
            "snapshot '{name}' embeds no <domain>: its MACs are unknown"
        ));
    }
    let location = AdapterLocation::Checkpoint(checkpoint.clone());
    for d in &s.domains {
        adapters_of(d, &location, &mut out);
    }
    Ok((checkpoint, out))
}

/// The persistent domain XML with the `<mac>` of the interface named `adapter` changed:
/// `Static(mac)` writes `<mac address='…'/>`, `Dynamic` removes the element so that libvirt
/// generates a MAC when the XML is defined (libvirt's only kind of "dynamic").
///
/// Everything else in the text is kept byte for byte. `Err` when the adapter is not there or
/// its name is ambiguous, or the MAC is one no adapter may have.
pub fn set_interface_mac(xml: &str, adapter: &str, setting: MacSetting) -> Result<String, String> {
    let d = match read(xml)? {
        LibvirtXml::Domain(d) => d,
        _ => return Err("the persistent definition is not a <domain>".into()),
    };
    let matching: Vec<_> = d.interfaces.iter().filter(|i| i.name == adapter).collect();
    let iface = match matching.as_slice() {
        [one] => *one,
        [] => {
            let names: Vec<&str> = d.interfaces.iter().map(|i| i.name.as_str()).collect();
            return Err(format!(
                "the domain has no interface named '{adapter}' (it has: {})",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ));
        }
        many => {
            return Err(format!(
                "{} interfaces are named '{adapter}': cannot tell which one to change",
                many.len()
            ));
        }
    };
    let mut out = String::with_capacity(xml.len() + 40);
    match (setting, &iface.mac_range) {
        (MacSetting::Static(mac), _) if mac.invalid_reason().is_some() => {
            return Err(format!(
                "{mac} cannot be an adapter's MAC: {}",
                mac.invalid_reason().unwrap_or_default()
            ));
        }
        (MacSetting::Static(mac), Some(r)) => {
            out.push_str(&xml[..r.start]);
            out.push_str(&mac_element(mac));
            out.push_str(&xml[r.end..]);
        }
        (MacSetting::Static(mac), None) => {
            // after the start tag (libvirt escapes '>' in attribute values: the first one ends it)
            let open_end = xml[iface.range.clone()]
                .find('>')
                .map(|p| iface.range.start + p)
                .ok_or("the <interface> start tag has no end")?;
            if xml[..open_end].ends_with('/') {
                out.push_str(&xml[..open_end - 1]);
                out.push('>');
                out.push_str(&mac_element(mac));
                out.push_str("</interface>");
            } else {
                out.push_str(&xml[..=open_end]);
                out.push_str(&mac_element(mac));
            }
            out.push_str(&xml[open_end + 1..]);
        }
        (MacSetting::Dynamic, Some(r)) => {
            // the element and the indentation before it, so no blank line is left
            let before = &xml[..r.start];
            let start = before.trim_end_matches([' ', '\t']).len();
            let start = if before[..start].ends_with('\n') {
                start - 1
            } else {
                r.start
            };
            out.push_str(&xml[..start]);
            out.push_str(&xml[r.end..]);
        }
        (MacSetting::Dynamic, None) => out.push_str(xml),
    }
    Ok(out)
}

fn mac_element(mac: Mac) -> String {
    format!("<mac address='{}'/>", mac.display(MacFormat::Unix))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOMAIN: &str = "<domain type='kvm'>
  <name>desk-a</name>
  <uuid>11111111-1111-4111-8111-111111111111</uuid>
  <devices>
    <interface type='network'>
      <mac address='52:54:00:aa:00:01'/>
      <source network='default'/>
    </interface>
    <interface type='bridge'>
      <mac address='52:54:00:aa:00:02'/>
      <source bridge='br0'/>
      <target dev='tap-a1'/>
    </interface>
    <interface type='user'>
      <mac address='52:54:00:zz:00:03'/>
    </interface>
    <interface type='user'>
    </interface>
  </devices>
</domain>";

    fn mac(s: &str) -> Mac {
        s.parse().unwrap()
    }

    #[test]
    fn live_adapters_keep_the_readable_interfaces_and_name_the_bad_ones() {
        let a = live_adapters(DOMAIN).unwrap();
        let got: Vec<(&str, Mac)> = a
            .adapters
            .iter()
            .map(|a| (a.name.as_str(), a.mac))
            .collect();
        assert_eq!(
            got,
            [
                ("net0", mac("52:54:00:aa:00:01")),
                ("tap-a1", mac("52:54:00:aa:00:02"))
            ]
        );
        assert!(
            a.adapters
                .iter()
                .all(|a| a.location == AdapterLocation::Live)
        );
        assert_eq!(
            a.problems,
            [
                "line 14: <interface> 'net2': bad digit 'z' at position 10 in '52:54:00:zz:00:03': expected a hex digit 0-9 or A-F",
                "line 17: <interface> 'net3' has no <mac address='…'/>",
            ]
        );
        assert_eq!(
            live_adapters("<domain><name>x</name></domain>").unwrap(),
            Adapters::default()
        );
        let err = live_adapters("<domain><name>x</name>").unwrap_err();
        assert!(err.contains("truncated"), "{err}");
        assert_eq!(
            live_adapters("<network/>").unwrap_err(),
            "expected a <domain>, got <network>"
        );
    }

    #[test]
    fn snapshot_adapters_are_checkpoint_adapters_of_domain_and_inactive_domain() {
        let xml = "<domainsnapshot>
  <name>RDV_ROLLBACK</name>
  <state>running</state>
  <creationTime>1444800000</creationTime>
  <domain><name>desk-a</name><devices>
    <interface type='network'><mac address='52:54:00:aa:00:01'/></interface>
  </devices></domain>
  <inactiveDomain><name>desk-a</name><devices>
    <interface type='network'><mac address='52:54:00:aa:00:01'/></interface>
    <interface type='network'><mac address='52:54:00:aa:00:07'/></interface>
  </devices></inactiveDomain>
</domainsnapshot>";
        let (cp, a) = snapshot_adapters(xml).unwrap();
        assert_eq!(cp.id, "RDV_ROLLBACK");
        assert_eq!(cp.kind, CheckpointType::Other("libvirt-running".into()));
        assert_eq!(cp.created, Some(Timestamp::from_millis(1_444_800_000_000)));
        let got: Vec<(&str, Mac)> = a
            .adapters
            .iter()
            .map(|a| (a.name.as_str(), a.mac))
            .collect();
        assert_eq!(
            got,
            [
                ("net0", mac("52:54:00:aa:00:01")),
                ("net1", mac("52:54:00:aa:00:07"))
            ]
        );
        assert!(
            a.adapters
                .iter()
                .all(|a| a.location == AdapterLocation::Checkpoint(cp.clone()))
        );
        let (_, a) = snapshot_adapters("<domainsnapshot><name>s</name></domainsnapshot>").unwrap();
        assert_eq!(
            a.problems,
            ["snapshot 's' embeds no <domain>: its MACs are unknown"]
        );
        assert_eq!(
            snapshot_adapters("<domainsnapshot/>").unwrap_err(),
            "line 1: <domainsnapshot> has no <name>"
        );
    }

    #[test]
    fn set_static_replaces_only_the_mac_element() {
        let new = set_interface_mac(
            DOMAIN,
            "tap-a1",
            MacSetting::Static(mac("02:00:00:00:10:05")),
        )
        .unwrap();
        assert_eq!(
            new,
            DOMAIN.replace(
                "<mac address='52:54:00:aa:00:02'/>",
                "<mac address='02:00:00:00:10:05'/>"
            )
        );
        let got = live_adapters(&new).unwrap();
        assert_eq!(got.adapters[1].mac, mac("02:00:00:00:10:05"));
        assert_eq!(got.adapters[0].mac, mac("52:54:00:aa:00:01"));
    }

    #[test]
    fn set_static_adds_a_mac_where_there_is_none() {
        let new = set_interface_mac(DOMAIN, "net3", MacSetting::Static(mac("02:00:00:00:10:06")))
            .unwrap();
        assert!(
            new.contains(
                "<interface type='user'><mac address='02:00:00:00:10:06'/>\n    </interface>"
            ),
            "{new}"
        );
        let xml = "<domain><devices><interface type='user'/></devices></domain>";
        let new =
            set_interface_mac(xml, "net0", MacSetting::Static(mac("02:00:00:00:10:07"))).unwrap();
        assert_eq!(
            new,
            "<domain><devices><interface type='user'><mac address='02:00:00:00:10:07'/></interface></devices></domain>"
        );
    }

    #[test]
    fn dynamic_removes_the_mac_element_and_its_line() {
        let new = set_interface_mac(DOMAIN, "net0", MacSetting::Dynamic).unwrap();
        assert_eq!(
            new,
            DOMAIN.replace("\n      <mac address='52:54:00:aa:00:01'/>", "")
        );
        let a = live_adapters(&new).unwrap();
        assert_eq!(
            a.problems[0],
            "line 5: <interface> 'net0' has no <mac address='…'/>"
        );
    }

    #[test]
    fn bad_targets_are_refused_precisely() {
        assert_eq!(
            set_interface_mac(DOMAIN, "eth9", MacSetting::Dynamic).unwrap_err(),
            "the domain has no interface named 'eth9' (it has: net0, tap-a1, net2, net3)"
        );
        let twice = "<domain><devices>
  <interface><target dev='tap0'/><mac address='52:54:00:00:00:01'/></interface>
  <interface><target dev='tap0'/><mac address='52:54:00:00:00:02'/></interface>
</devices></domain>";
        assert_eq!(
            set_interface_mac(twice, "tap0", MacSetting::Dynamic).unwrap_err(),
            "2 interfaces are named 'tap0': cannot tell which one to change"
        );
        let err = set_interface_mac(DOMAIN, "net0", MacSetting::Static(mac("01:00:5e:00:00:01")))
            .unwrap_err();
        assert!(
            err.starts_with("01-00-5E-00-00-01 cannot be an adapter's MAC: "),
            "{err}"
        );
        assert!(
            set_interface_mac(DOMAIN, "net0", MacSetting::Static(Mac::ZERO)).is_err(),
            "the zero MAC is what Hyper-V shows for 'none': never written"
        );
    }
}
