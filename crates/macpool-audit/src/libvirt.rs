//! libvirt XML as `virsh dumpxml` (`<domain>`) and `virsh snapshot-dumpxml` (`<domainsnapshot>`
//! with the domain embedded) write it. A VM is its `<uuid>`, else its `<name>`; a snapshot's MACs
//! are checkpoint adapters of that VM. XML that is not a domain is skipped, not an error.
//!
//! [`read`] is the structural reader, shared with the agent's libvirt hypervisor
//! (`macpool_agent::libvirt`): the offline audit of a `virsh dumpxml` export and the live agent
//! read the same interfaces and give them the same adapter names ([`adapter_name`]).

use std::collections::HashSet;
use std::ops::Range;

use macpool_core::Mac;
use macpool_core::conflict::{Owner, Seen, Sighting};
use roxmltree::{Document, Node, ParsingOptions};

use crate::{Diagnostic, Parsed, decode};

/// Interface name prefixes libvirt generates itself when the domain XML names no target:
/// `vnet` (qemu and bhyve taps), `macvtap` / `macvlan` (`type='direct'`), `vif` (Xen), `veth`
/// (LXC) and `testnet` (the test driver). qemu hands out a new `vnetN` at every start and drops
/// it from the persistent definition, so such a name cannot identify an adapter.
pub const GENERATED_IFNAME_PREFIXES: [&str; 6] =
    ["vnet", "macvtap", "macvlan", "vif", "veth", "testnet"];

/// The adapter name of the interface at `position` (0-based, document order):
///
/// 1. its `<target dev>`, unless libvirt generated it ([`GENERATED_IFNAME_PREFIXES`]);
/// 2. else its `<alias name>` when it is a user alias (`ua-…`: libvirt keeps those in the
///    persistent definition; the `net0`-style aliases it assigns exist only while running);
/// 3. else `net<position>`.
///
/// So a running domain (live XML) and the same domain shut off (persistent XML) name every
/// adapter alike, which is what lets the agent address an adapter it saw while the domain ran
/// after turning it off, and lets the audit of an export match the agent's inventory.
pub fn adapter_name(target_dev: Option<&str>, alias: Option<&str>, position: usize) -> String {
    let chosen_dev = target_dev
        .map(str::trim)
        .filter(|d| !d.is_empty() && !GENERATED_IFNAME_PREFIXES.iter().any(|p| d.starts_with(p)));
    let user_alias = alias
        .map(str::trim)
        .filter(|a| a.starts_with("ua-") && a.len() > 3);
    chosen_dev
        .or(user_alias)
        .map_or_else(|| format!("net{position}"), str::to_string)
}

/// One `<interface>` of a domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceXml {
    /// 0-based position among the domain's `<interface>` elements.
    pub position: usize,
    /// See [`adapter_name`].
    pub name: String,
    /// The MAC, or why there is none usable (the precise message for the report).
    pub mac: Result<Mac, String>,
    /// 1-based line of the `<interface>` element.
    pub line: u32,
    /// Byte range of the `<interface>` element in the text.
    pub range: Range<usize>,
    /// Byte range of its `<mac>` element, when it has one.
    pub mac_range: Option<Range<usize>>,
}

/// One `<domain>` (or a snapshot's embedded `<domain>` / `<inactiveDomain>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainXml {
    pub uuid: Option<String>,
    pub name: Option<String>,
    /// 1-based line of the element.
    pub line: u32,
    pub interfaces: Vec<InterfaceXml>,
}

/// One `<domainsnapshot>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotXml {
    pub name: Option<String>,
    /// `<state>`: the domain's state when the snapshot was taken (`running`, `shutoff`, …).
    pub state: Option<String>,
    /// `<creationTime>`, seconds since the Unix epoch.
    pub creation_time: Option<u64>,
    pub line: u32,
    /// The embedded `<domain>` and, for a running snapshot, `<inactiveDomain>` (in that order).
    pub domains: Vec<DomainXml>,
}

/// What a libvirt XML document is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LibvirtXml {
    Domain(DomainXml),
    Snapshot(SnapshotXml),
    /// Another root element (a `<network>`, …), by name.
    Other(String),
}

fn child<'a, 'i>(n: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    n.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

fn child_text(n: Node, name: &str) -> Option<String> {
    child(n, name)
        .and_then(|c| c.text())
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

fn line_of(doc: &Document, n: Node) -> u32 {
    doc.text_pos_at(n.range().start).row
}

/// Reads a libvirt XML document. `Err` is why it is not well-formed XML, with the position, or
/// why it is not read at all ([`crate::xml::check`]: too deep, or declaring entities).
pub fn read(text: &str) -> Result<LibvirtXml, String> {
    crate::xml::check(text)?;
    // a DTD without entity declarations is harmless (check refused any that declares one)
    let opts = ParsingOptions {
        allow_dtd: true,
        ..ParsingOptions::default()
    };
    let doc = Document::parse_with_options(text, opts).map_err(|e| match e {
        // these carry no position: say where the text ends instead
        roxmltree::Error::UnclosedRootNode | roxmltree::Error::UnexpectedEndOfStream => format!(
            "not well-formed XML: the file ends at line {} before the root element is closed: truncated?",
            text.lines().count().max(1)
        ),
        roxmltree::Error::NoRootNode => "not well-formed XML: no root element".to_string(),
        e => {
            let pos = e.pos();
            format!(
                "not well-formed XML at line {} column {}: {e}",
                pos.row, pos.col
            )
        }
    })?;
    let root = doc.root_element();
    Ok(match root.tag_name().name() {
        "domain" => LibvirtXml::Domain(read_domain(&doc, root)),
        "domainsnapshot" => LibvirtXml::Snapshot(SnapshotXml {
            name: child_text(root, "name"),
            state: child_text(root, "state"),
            creation_time: child_text(root, "creationTime").and_then(|t| t.parse().ok()),
            line: line_of(&doc, root),
            domains: ["domain", "inactiveDomain"]
                .iter()
                .filter_map(|n| child(root, n))
                .map(|d| read_domain(&doc, d))
                .collect(),
        }),
        other => LibvirtXml::Other(other.to_string()),
    })
}

fn read_domain(doc: &Document, d: Node) -> DomainXml {
    let interfaces = child(d, "devices")
        .map(|devices| {
            devices
                .children()
                .filter(|c| c.is_element() && c.tag_name().name() == "interface")
                .enumerate()
                .map(|(position, iface)| read_interface(doc, iface, position))
                .collect()
        })
        .unwrap_or_default();
    DomainXml {
        uuid: child_text(d, "uuid"),
        name: child_text(d, "name"),
        line: line_of(doc, d),
        interfaces,
    }
}

fn read_interface(doc: &Document, iface: Node, position: usize) -> InterfaceXml {
    let name = adapter_name(
        child(iface, "target").and_then(|t| t.attribute("dev")),
        child(iface, "alias").and_then(|a| a.attribute("name")),
        position,
    );
    let mac_node = child(iface, "mac");
    let mac = match mac_node.and_then(|m| m.attribute("address")) {
        None => Err(format!("<interface> '{name}' has no <mac address='…'/>")),
        Some(raw) => Mac::parse(raw).map_err(|e| format!("<interface> '{name}': {e}")),
    };
    InterfaceXml {
        position,
        mac,
        line: line_of(doc, iface),
        range: iface.range(),
        mac_range: mac_node.map(|m| m.range()),
        name,
    }
}

pub fn parse(source: &str, bytes: &[u8], max: usize) -> Parsed {
    let mut parsed = Parsed::default();
    let (text, note) = decode::text(bytes);
    if let Some(note) = note {
        parsed.diagnostics.push(Diagnostic::whole_file(note));
    }
    let xml = match read(&text) {
        Ok(x) => x,
        Err(why) => {
            parsed.unreadable = Some(why);
            return parsed;
        }
    };
    match xml {
        LibvirtXml::Domain(d) => domain(source, &d, None, max, &mut parsed),
        LibvirtXml::Snapshot(s) => {
            let name = s.name.clone().unwrap_or_default();
            if s.domains.is_empty() {
                parsed.bad(
                    max,
                    Diagnostic::at(
                        format!("line {}", s.line),
                        format!("snapshot '{name}' embeds no <domain>: its MACs are unknown"),
                    ),
                );
            }
            for d in &s.domains {
                domain(source, d, Some(&name), max, &mut parsed);
            }
            // a running snapshot repeats its interfaces in <inactiveDomain>: one VM, one MAC
            let mut seen = HashSet::new();
            parsed.sightings.retain(|s| seen.insert(s.mac));
            parsed.records = parsed.sightings.len() as u64;
        }
        LibvirtXml::Other(other) => {
            parsed.skipped = Some(format!(
                "XML root element <{other}> is not a libvirt <domain> or <domainsnapshot>"
            ));
        }
    }
    parsed
}

fn domain(source: &str, d: &DomainXml, snapshot: Option<&str>, max: usize, parsed: &mut Parsed) {
    if d.uuid.is_none() && d.name.is_none() {
        parsed.bad(
            max,
            Diagnostic::at(
                format!("line {}", d.line),
                "<domain> has neither <uuid> nor <name>: its adapters cannot be attributed",
            ),
        );
        return;
    }
    for iface in &d.interfaces {
        let at = format!("line {}", iface.line);
        let mac = match &iface.mac {
            Ok(m) => *m,
            Err(why) => {
                parsed.bad(max, Diagnostic::at(at, why.clone()));
                continue;
            }
        };
        parsed.records += 1;
        parsed.sightings.push(Sighting {
            mac,
            dynamic: Some(false),
            seen: match snapshot {
                Some(s) => Seen::Checkpoint {
                    id: s.to_string(),
                    name: s.to_string(),
                },
                None => Seen::Live,
            },
            owner: Owner {
                source: source.to_string(),
                location: Some(at),
                host: None,
                vm_id: d.uuid.clone(),
                vm_name: d.name.clone(),
                adapter: Some(iface.name.clone()),
            },
        });
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_interfaces_become_live_sightings() {
        let xml = br#"<domain type='kvm' id='3'>
  <name>web01</name>
  <uuid>4dea22b3-1d52-d8f3-2516-782e98ab3fa0</uuid>
  <devices>
    <interface type='network'>
      <mac address='52:54:00:6b:3c:58'/>
      <source network='default'/>
      <target dev='vnet0'/>
      <alias name='net0'/>
    </interface>
    <interface type='bridge'>
      <source bridge='br0'/>
    </interface>
  </devices>
</domain>"#;
        let p = parse("web01.xml", xml, 10);
        assert_eq!(p.records, 1);
        let s = &p.sightings[0];
        assert_eq!(s.mac.to_string(), "52-54-00-6B-3C-58");
        assert_eq!(s.seen, Seen::Live);
        assert_eq!(
            s.owner.vm_id.as_deref(),
            Some("4dea22b3-1d52-d8f3-2516-782e98ab3fa0")
        );
        assert_eq!(s.owner.adapter.as_deref(), Some("net0"));
        assert_eq!(s.owner.location.as_deref(), Some("line 5"));
        assert_eq!(
            p.diagnostics,
            [Diagnostic::at(
                "line 11",
                "<interface> 'net1' has no <mac address='…'/>"
            )]
        );
    }

    #[test]
    fn adapter_names_are_the_same_in_the_live_and_the_persistent_xml() {
        // qemu's live XML of a running domain: generated target devs and aliases
        let live = r#"<domain><name>d</name><devices>
  <interface type='network'><mac address='52:54:00:00:00:01'/><target dev='vnet7'/><alias name='net0'/></interface>
  <interface type='direct'><mac address='52:54:00:00:00:02'/><target dev='macvtap3'/><alias name='ua-uplink'/></interface>
  <interface type='ethernet'><mac address='52:54:00:00:00:03'/><target dev='tap-db'/><alias name='net2'/></interface>
</devices></domain>"#;
        // the same domain's persistent XML: libvirt dropped what it generated
        let inactive = r#"<domain><name>d</name><devices>
  <interface type='network'><mac address='52:54:00:00:00:01'/></interface>
  <interface type='direct'><mac address='52:54:00:00:00:02'/><alias name='ua-uplink'/></interface>
  <interface type='ethernet'><mac address='52:54:00:00:00:03'/><target dev='tap-db'/></interface>
</devices></domain>"#;
        let names = |text: &str| match read(text).unwrap() {
            LibvirtXml::Domain(d) => d
                .interfaces
                .iter()
                .map(|i| i.name.clone())
                .collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        assert_eq!(names(live), ["net0", "ua-uplink", "tap-db"]);
        assert_eq!(names(live), names(inactive));
        assert_eq!(adapter_name(Some("testnet0"), None, 4), "net4");
        assert_eq!(adapter_name(Some(" "), Some("ua-"), 1), "net1");
    }

    #[test]
    fn read_gives_the_byte_ranges_an_editor_needs() {
        let text = "<domain><devices><interface type='user'><mac address='zz'/></interface></devices></domain>";
        let LibvirtXml::Domain(d) = read(text).unwrap() else {
            panic!()
        };
        let i = &d.interfaces[0];
        assert_eq!(
            &text[i.range.clone()],
            "<interface type='user'><mac address='zz'/></interface>"
        );
        assert_eq!(&text[i.mac_range.clone().unwrap()], "<mac address='zz'/>");
        let why = i.mac.clone().unwrap_err();
        assert_eq!(
            why,
            "<interface> 'net0': bad digit 'z' at position 1 in 'zz': expected a hex digit 0-9 or A-F"
        );
        assert_eq!((d.uuid, d.name), (None, None));
    }

    #[test]
    fn running_snapshot_counts_each_mac_once_as_checkpoint() {
        let xml = br#"<domainsnapshot>
  <name>s1</name>
  <domain><name>vm</name><devices>
    <interface type='network'><mac address='52:54:00:00:00:01'/><alias name='net0'/></interface>
    <interface type='network'><mac address='52:54:00:00:00:02'/><alias name='net1'/></interface>
  </devices></domain>
  <inactiveDomain><name>vm</name><devices>
    <interface type='network'><mac address='52:54:00:00:00:01'/></interface>
    <interface type='network'><mac address='52:54:00:00:00:02'/></interface>
  </devices></inactiveDomain>
</domainsnapshot>"#;
        let p = parse("s1.xml", xml, 10);
        assert_eq!(p.records, 2);
        let cp = Seen::Checkpoint {
            id: "s1".into(),
            name: "s1".into(),
        };
        assert!(p.sightings.iter().all(|s| s.seen == cp));
        assert_eq!(p.sightings[0].owner.vm_name.as_deref(), Some("vm"));
        assert_eq!(
            p.sightings[0].owner.vm_id, None,
            "no <uuid>: the name identifies it"
        );
        let p = parse(
            "s2.xml",
            b"<domainsnapshot><name>s2</name></domainsnapshot>",
            10,
        );
        assert_eq!(
            p.diagnostics[0].message,
            "snapshot 's2' embeds no <domain>: its MACs are unknown"
        );
    }

    #[test]
    fn not_a_domain_is_skipped_and_broken_xml_is_unreadable() {
        let p = parse("net.xml", b"<network><name>default</name></network>", 10);
        assert!(p.skipped.unwrap().contains("<network>"));
        let p = parse("bad.xml", b"<domain>\n  <name>x</name>\n  <devices>\n", 10);
        let why = p.unreadable.unwrap();
        assert!(
            why.contains("ends at line 3") && why.contains("truncated"),
            "{why}"
        );
        let p = parse("bad.xml", b"<domain>\n  <name>x</nam>\n</domain>", 10);
        let why = p.unreadable.unwrap();
        assert!(why.starts_with("not well-formed XML at line 2"), "{why}");
    }
}
