//! libvirt XML as `virsh dumpxml` (`<domain>`) and `virsh snapshot-dumpxml` (`<domainsnapshot>`
//! with the domain embedded) write it. A VM is its `<uuid>`, else its `<name>`; a snapshot's MACs
//! are checkpoint adapters of that VM. XML that is not a domain is skipped, not an error.

use std::collections::HashSet;

use macpool_core::Mac;
use macpool_core::conflict::{Owner, Seen, Sighting};
use roxmltree::{Document, Node, ParsingOptions};

use crate::{Diagnostic, Parsed, decode};

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

fn line_of(doc: &Document, n: Node) -> String {
    format!("line {}", doc.text_pos_at(n.range().start).row)
}

pub fn parse(source: &str, bytes: &[u8], max: usize) -> Parsed {
    let mut parsed = Parsed::default();
    let (text, note) = decode::text(bytes);
    if let Some(note) = note {
        parsed.diagnostics.push(Diagnostic::whole_file(note));
    }
    let opts = ParsingOptions {
        allow_dtd: true,
        ..ParsingOptions::default()
    };
    let doc = match Document::parse_with_options(&text, opts) {
        Ok(d) => d,
        Err(e) => {
            parsed.unreadable = Some(match e {
                // these carry no position: say where the text ends instead
                roxmltree::Error::UnclosedRootNode | roxmltree::Error::UnexpectedEndOfStream => {
                    format!(
                        "not well-formed XML: the file ends at line {} before the root element is closed: truncated?",
                        text.lines().count().max(1)
                    )
                }
                roxmltree::Error::NoRootNode => "not well-formed XML: no root element".to_string(),
                e => {
                    let pos = e.pos();
                    format!(
                        "not well-formed XML at line {} column {}: {e}",
                        pos.row, pos.col
                    )
                }
            });
            return parsed;
        }
    };
    let root = doc.root_element();
    match root.tag_name().name() {
        "domain" => domain(source, &doc, root, None, max, &mut parsed),
        "domainsnapshot" => {
            let name = child_text(root, "name").unwrap_or_default();
            let domains: Vec<Node> = ["domain", "inactiveDomain"]
                .iter()
                .filter_map(|n| child(root, n))
                .collect();
            if domains.is_empty() {
                parsed.bad(
                    max,
                    Diagnostic::at(
                        line_of(&doc, root),
                        format!("snapshot '{name}' embeds no <domain>: its MACs are unknown"),
                    ),
                );
            }
            for d in domains {
                domain(source, &doc, d, Some(&name), max, &mut parsed);
            }
            // a running snapshot repeats its interfaces in <inactiveDomain>: one VM, one MAC
            let mut seen = HashSet::new();
            parsed.sightings.retain(|s| seen.insert(s.mac));
            parsed.records = parsed.sightings.len() as u64;
        }
        other => {
            parsed.skipped = Some(format!(
                "XML root element <{other}> is not a libvirt <domain> or <domainsnapshot>"
            ));
        }
    }
    parsed
}

fn domain(
    source: &str,
    doc: &Document,
    d: Node,
    snapshot: Option<&str>,
    max: usize,
    parsed: &mut Parsed,
) {
    let uuid = child_text(d, "uuid");
    let name = child_text(d, "name");
    if uuid.is_none() && name.is_none() {
        parsed.bad(
            max,
            Diagnostic::at(
                line_of(doc, d),
                "<domain> has neither <uuid> nor <name>: its adapters cannot be attributed",
            ),
        );
        return;
    }
    let Some(devices) = child(d, "devices") else {
        return;
    };
    let interfaces = devices
        .children()
        .filter(|c| c.is_element() && c.tag_name().name() == "interface");
    for (i, iface) in interfaces.enumerate() {
        let at = line_of(doc, iface);
        let adapter = child(iface, "alias")
            .and_then(|a| a.attribute("name"))
            .or_else(|| child(iface, "target").and_then(|t| t.attribute("dev")))
            .map_or_else(|| format!("interface {}", i + 1), str::to_string);
        let Some(raw) = child(iface, "mac").and_then(|m| m.attribute("address")) else {
            parsed.bad(
                max,
                Diagnostic::at(
                    at,
                    format!("<interface> '{adapter}' has no <mac address='…'/>"),
                ),
            );
            continue;
        };
        let mac = match Mac::parse(raw) {
            Ok(m) => m,
            Err(e) => {
                parsed.bad(
                    max,
                    Diagnostic::at(at, format!("<interface> '{adapter}': {e}")),
                );
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
                vm_id: uuid.clone(),
                vm_name: name.clone(),
                adapter: Some(adapter),
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
                "<interface> 'interface 2' has no <mac address='…'/>"
            )]
        );
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
