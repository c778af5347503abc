//! DHCP lease databases: ISC `dhcpd.leases`, dnsmasq's lease file and Kea's `lease4` CSV. A MAC
//! leased to two different clients is a duplicate on the wire (the engine compares leases only
//! with each other).
//!
//! ISC and Kea append: a later record for an address replaces the earlier one, so only the last
//! record per address counts, and only leases that are in use (ISC `binding state active`, or no
//! binding state in old files; Kea `state` 0).

use std::collections::HashMap;

use macpool_core::Mac;
use macpool_core::conflict::{Owner, Seen, Sighting};

use crate::{Diagnostic, Parsed};

struct Lease {
    line: usize,
    ip: String,
    mac: Option<String>,
    client_id: Option<String>,
    hostname: Option<String>,
    active: bool,
}

/// Keeps the last record per address, then turns active ones into sightings.
fn finish(source: &str, leases: Vec<Lease>, max: usize, mut parsed: Parsed) -> Parsed {
    parsed.diagnostics.sort_by_key(line_number);
    let mut last: HashMap<String, usize> = HashMap::new();
    for (i, l) in leases.iter().enumerate() {
        last.insert(l.ip.clone(), i);
    }
    for (i, l) in leases.into_iter().enumerate() {
        if last.get(&l.ip) != Some(&i) || !l.active {
            continue;
        }
        let at = format!("line {}", l.line);
        let Some(raw) = l.mac.filter(|m| !m.is_empty()) else {
            parsed.bad(
                max,
                Diagnostic::at(
                    at,
                    format!("active lease of {} has no hardware address", l.ip),
                ),
            );
            continue;
        };
        let mac = match Mac::parse(&raw) {
            Ok(m) => m,
            Err(e) => {
                parsed.bad(max, Diagnostic::at(at, format!("lease of {}: {e}", l.ip)));
                continue;
            }
        };
        parsed.records += 1;
        parsed.sightings.push(Sighting {
            mac,
            dynamic: None,
            seen: Seen::DhcpLease {
                ip: Some(l.ip),
                client_id: l.client_id.filter(|c| !c.is_empty()),
                hostname: l.hostname.filter(|h| !h.is_empty()),
            },
            owner: Owner {
                source: source.to_string(),
                location: Some(at),
                ..Owner::default()
            },
        });
    }
    parsed.diagnostics.sort_by_key(line_number);
    parsed
}

fn line_number(d: &Diagnostic) -> usize {
    d.location
        .as_deref()
        .and_then(|l| l.strip_prefix("line "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    s.strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .unwrap_or(s)
        .to_string()
}

/// ISC dhcpd: `lease IP { … hardware ethernet MAC; uid …; client-hostname "…"; }` and
/// `host NAME { hardware ethernet MAC; … }` blocks.
pub fn parse_isc(source: &str, bytes: &[u8], max: usize) -> Parsed {
    let text = String::from_utf8_lossy(bytes);
    let mut parsed = Parsed::default();
    let mut leases = Vec::new();
    let mut current: Option<Lease> = None;
    let mut depth = 0usize;
    for (n, raw) in text.lines().enumerate() {
        let line_no = n + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if current.is_none() && depth == 0 {
            let head = line.trim_end_matches('{').trim();
            if let Some(ip) = head.strip_prefix("lease ") {
                current = Some(Lease {
                    line: line_no,
                    ip: ip.trim().to_string(),
                    mac: None,
                    client_id: None,
                    hostname: None,
                    active: true,
                });
                depth = 1;
                continue;
            }
            if let Some(name) = head.strip_prefix("host ") {
                let name = unquote(name);
                current = Some(Lease {
                    line: line_no,
                    ip: format!("host {name}"),
                    mac: None,
                    client_id: None,
                    hostname: Some(name),
                    active: true,
                });
                depth = 1;
                continue;
            }
            if line.ends_with('{') {
                depth = 1; // failover, class, group …: not leases
            }
            continue;
        }
        if line.ends_with('{') {
            depth += 1;
            continue;
        }
        if line.starts_with('}') {
            depth = depth.saturating_sub(1);
            if depth == 0
                && let Some(l) = current.take()
            {
                leases.push(l);
            }
            continue;
        }
        let Some(l) = current.as_mut() else { continue };
        if depth != 1 {
            continue;
        }
        let stmt = line.trim_end_matches(';').trim();
        if let Some(hw) = stmt.strip_prefix("hardware ") {
            // `hardware ethernet 00:15:5d:01:85:11`
            l.mac = hw.split_whitespace().nth(1).map(str::to_string);
        } else if let Some(uid) = stmt.strip_prefix("uid ") {
            l.client_id = Some(unquote(uid));
        } else if let Some(h) = stmt.strip_prefix("client-hostname ") {
            l.hostname = Some(unquote(h));
        } else if let Some(state) = stmt.strip_prefix("binding state ") {
            l.active = matches!(state.trim(), "active" | "static");
        } else if stmt == "deleted" {
            l.active = false;
        }
    }
    if let Some(l) = current {
        parsed.bad(
            max,
            Diagnostic::at(
                format!("line {}", l.line),
                format!(
                    "the block for {} is not closed: the file is truncated",
                    l.ip
                ),
            ),
        );
    }
    finish(source, leases, max, parsed)
}

/// dnsmasq: `EXPIRY MAC IP HOSTNAME CLIENT-ID` per line, `*` for unknown; IPv6 leases follow a
/// `duid` line and carry no MAC.
pub fn parse_dnsmasq(source: &str, bytes: &[u8], max: usize) -> Parsed {
    let text = String::from_utf8_lossy(bytes);
    let mut parsed = Parsed::default();
    let mut leases = Vec::new();
    let mut ipv6 = false;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f[0] == "duid" {
            ipv6 = true;
            continue;
        }
        if ipv6 {
            continue;
        }
        if f.len() < 3 {
            parsed.bad(
                max,
                Diagnostic::at(
                    format!("line {}", n + 1),
                    format!("expected EXPIRY MAC IP HOSTNAME CLIENT-ID, found '{line}'"),
                ),
            );
            continue;
        }
        let star = |i: usize| f.get(i).filter(|v| **v != "*").map(|v| v.to_string());
        // Non-Ethernet hardware is written TYPE-MAC (e.g. `06-00:15:5d:01:85:11`).
        let mac = f[1]
            .split_once('-')
            .filter(|(t, _)| t.len() <= 2)
            .map_or(f[1], |(_, m)| m);
        leases.push(Lease {
            line: n + 1,
            ip: f[2].to_string(),
            mac: Some(mac.to_string()),
            client_id: star(4),
            hostname: star(3),
            active: true,
        });
    }
    finish(source, leases, max, parsed)
}

/// Kea `lease4` memfile CSV, columns found by the header.
pub fn parse_kea(source: &str, bytes: &[u8], max: usize) -> Parsed {
    let text = String::from_utf8_lossy(bytes);
    let mut parsed = Parsed::default();
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        return parsed;
    };
    let cols: Vec<String> = header
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .collect();
    let col = |name: &str| cols.iter().position(|c| c == name);
    let (Some(address), Some(hwaddr)) = (col("address"), col("hwaddr")) else {
        parsed.unreadable =
            Some("Kea lease4 CSV header lacks the 'address' or 'hwaddr' column".into());
        return parsed;
    };
    let (client_id, hostname, state, lifetime) = (
        col("client_id"),
        col("hostname"),
        col("state"),
        col("valid_lifetime"),
    );
    let mut leases = Vec::new();
    for (n, line) in lines {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() < cols.len() {
            parsed.bad(
                max,
                Diagnostic::at(
                    format!("line {}", n + 1),
                    format!(
                        "{} fields where the header has {}: truncated?",
                        f.len(),
                        cols.len()
                    ),
                ),
            );
            continue;
        }
        let get = |i: Option<usize>| {
            i.and_then(|i| f.get(i))
                .map(|v| v.trim().replace("&#x2c", ","))
        };
        let in_use = get(state).is_none_or(|s| s.is_empty() || s == "0")
            && get(lifetime).is_none_or(|l| l != "0");
        leases.push(Lease {
            line: n + 1,
            ip: f[address].trim().to_string(),
            mac: get(Some(hwaddr)),
            client_id: get(client_id),
            hostname: get(hostname),
            active: in_use,
        });
    }
    finish(source, leases, max, parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isc_keeps_the_last_active_record_per_address() {
        let text = br#"# The format of this file is documented in the dhcpd.leases(5) manual page.
authoring-byte-order little-endian;

lease 10.0.0.5 {
  starts 3 2015/10/14 12:00:00;
  binding state active;
  hardware ethernet 00:15:5d:01:85:11;
  uid "\001\000\025]\001\205\021";
  client-hostname "desk-01";
}
lease 10.0.0.5 {
  binding state free;
  hardware ethernet 00:15:5d:01:85:11;
}
lease 10.0.0.6 {
  binding state active;
  hardware ethernet 00:15:5d:01:85:12;
  client-hostname "desk-02";
}
lease 10.0.0.7 {
  binding state active;
}
host printer {
  hardware ethernet 00:15:5d:01:85:13;
  fixed-address 10.0.0.9;
}
"#;
        let p = parse_isc("dhcpd.leases", text, 10);
        assert_eq!(p.records, 2, "10.0.0.5 was freed by its later record");
        assert_eq!(p.sightings[0].mac.to_string(), "00-15-5D-01-85-12");
        assert_eq!(p.sightings[0].owner.location.as_deref(), Some("line 15"));
        assert_eq!(
            p.sightings[1].seen,
            Seen::DhcpLease {
                ip: Some("host printer".into()),
                client_id: None,
                hostname: Some("printer".into())
            }
        );
        assert_eq!(p.bad_records, 1);
        assert_eq!(
            p.diagnostics[0],
            Diagnostic::at(
                "line 20",
                "active lease of 10.0.0.7 has no hardware address"
            )
        );
    }

    #[test]
    fn isc_truncated_block_is_reported() {
        let p = parse_isc(
            "x",
            b"lease 10.0.0.5 {\n  hardware ethernet 00:15:5d:01:85:11;\n",
            10,
        );
        assert_eq!(p.records, 0);
        assert_eq!(p.diagnostics[0].location.as_deref(), Some("line 1"));
        assert!(p.diagnostics[0].message.contains("truncated"));
    }

    #[test]
    fn dnsmasq_reads_v4_and_skips_v6() {
        let text = b"1445000000 00:15:5d:01:85:11 10.0.0.5 desk-01 01:00:15:5d:01:85:11\n\
                     1445000001 00:15:5d:01:85:11 10.0.0.9 * *\n\
                     garbage\n\
                     duid 00:01:00:01:1d:2f:3a:4b\n\
                     1445000002 123456 fd00::5 desk-01 00:01\n";
        let p = parse_dnsmasq("leases", text, 10);
        assert_eq!(p.records, 2);
        assert_eq!(
            p.sightings[0].seen,
            Seen::DhcpLease {
                ip: Some("10.0.0.5".into()),
                client_id: Some("01:00:15:5d:01:85:11".into()),
                hostname: Some("desk-01".into())
            }
        );
        assert_eq!(
            p.sightings[1].seen,
            Seen::DhcpLease {
                ip: Some("10.0.0.9".into()),
                client_id: None,
                hostname: None
            }
        );
        assert_eq!(p.diagnostics[0].location.as_deref(), Some("line 3"));
    }

    #[test]
    fn kea_uses_the_header_and_state() {
        let text = b"address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname,state,user_context\n\
                     10.0.0.5,00:15:5d:01:85:11,01:aa,3600,1445003600,1,0,0,desk-01,0,\n\
                     10.0.0.6,00:15:5d:01:85:11,01:bb,3600,1445003600,1,0,0,desk-02,0,\n\
                     10.0.0.7,,,3600,1445003600,1,0,0,,1,\n\
                     10.0.0.8,zz:15:5d:01:85:11,01:cc,3600,1445003600,1,0,0,x,0,\n\
                     10.0.0.9,00:15\n";
        let p = parse_kea("kea-leases4.csv", text, 10);
        assert_eq!(p.records, 2, "the declined lease (state 1) is not in use");
        assert_eq!(p.bad_records, 2);
        assert!(
            p.diagnostics[0].message.contains("bad digit 'z'"),
            "{:?}",
            p.diagnostics
        );
        assert_eq!(p.diagnostics[0].location.as_deref(), Some("line 5"));
        assert!(p.diagnostics[1].message.contains("truncated"));
        let c = macpool_core::conflict::find_conflicts(&macpool_core::conflict::ConflictInput {
            sightings: &p.sightings,
            ..Default::default()
        });
        assert_eq!(c.len(), 1, "one MAC, two client ids");
    }
}
