//! Hyper-V's own MAC conventions, as documented (see shared/reference/hyperv.md).

use std::fmt::Write as _;
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

/// A host to plan a dynamic range for: its name, the IPv4 address Hyper-V derived its default
/// range from, and its configured range when known (`Get-VMHost`), which wins over the default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostSpec {
    pub name: String,
    pub ip: Ipv4Addr,
    pub current: Option<MacRange>,
}

impl HostSpec {
    /// Parses `NAME=IP` (as given to `--host`, or one line of a `--from` file).
    pub fn parse(input: &str) -> Result<HostSpec, String> {
        let s = input.trim();
        let Some((name, ip)) = s.split_once('=') else {
            return Err(format!("'{s}' is not NAME=IP (e.g. HV01=10.0.1.5)"));
        };
        let name = name.trim();
        if name.is_empty() {
            return Err(format!("'{s}' has an empty host name"));
        }
        let ip = ip
            .trim()
            .parse::<Ipv4Addr>()
            .map_err(|_| format!("'{}' in '{s}' is not an IPv4 address", ip.trim()))?;
        Ok(HostSpec {
            name: name.to_string(),
            ip,
            current: None,
        })
    }

    /// Parses a `--from` file: one `NAME=IP` per line; blank lines and `#` comments are skipped.
    /// The error names the line.
    pub fn parse_lines(text: &str) -> Result<Vec<HostSpec>, String> {
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .map(|(i, l)| HostSpec::parse(l).map_err(|e| format!("line {}: {e}", i + 1)))
            .collect()
    }

    /// The range the host hands out from today.
    pub fn current_range(&self) -> MacRange {
        self.current
            .unwrap_or_else(|| default_range_for_ip(self.ip))
    }
}

/// How to propose ranges. `base` is where new blocks are carved from; `avoid` are ranges already
/// in use elsewhere (pools, other clusters).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanConfig {
    pub block_size: u64,
    pub base: MacRange,
    pub avoid: Vec<MacRange>,
    /// Keep a host's current range when it collides with nothing (fewest changes). When false,
    /// every host gets a block from `base`.
    pub keep_unique: bool,
}

impl Default for PlanConfig {
    fn default() -> Self {
        PlanConfig {
            block_size: 256,
            base: MacRange::new(
                Mac::from_octets([0x00, 0x15, 0x5D, 0xF0, 0x00, 0x00]),
                Mac::from_octets([0x00, 0x15, 0x5D, 0xFF, 0xFF, 0xFF]),
            )
            .expect("a unicast range"),
            avoid: Vec::new(),
            keep_unique: true,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("block size must be at least 1")]
    ZeroBlockSize,
    #[error("host {0} is listed twice")]
    DuplicateHost(String),
    #[error(
        "the base range {base} has no free block of {block_size} addresses left for host {host}: \
         give a larger --base or a smaller --block-size"
    )]
    Exhausted {
        base: MacRange,
        block_size: u64,
        host: String,
    },
}

/// The outcome for one host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPlan {
    pub name: String,
    pub ip: Ipv4Addr,
    /// The range the host uses today (configured, or Hyper-V's default for `ip`).
    pub current: MacRange,
    pub current_is_default: bool,
    /// Other hosts (and `avoid` ranges, as `range …`) whose range overlaps `current`.
    pub collides_with: Vec<String>,
    pub proposed: MacRange,
}

impl HostPlan {
    pub fn changes(&self) -> bool {
        self.current != self.proposed
    }
}

/// Proposes a non-overlapping dynamic range for every host. Hosts are considered in name order,
/// so the plan is the same whatever the input order. New blocks never overlap any host's current
/// range either: VMs keep the MACs they already have, so an old range stays in use.
pub fn plan_ranges(hosts: &[HostSpec], cfg: &PlanConfig) -> Result<Vec<HostPlan>, PlanError> {
    if cfg.block_size == 0 {
        return Err(PlanError::ZeroBlockSize);
    }
    let mut order: Vec<&HostSpec> = hosts.iter().collect();
    order.sort_by(|a, b| {
        a.name
            .to_ascii_lowercase()
            .cmp(&b.name.to_ascii_lowercase())
    });
    if let Some(w) = order
        .windows(2)
        .find(|w| w[0].name.eq_ignore_ascii_case(&w[1].name))
    {
        return Err(PlanError::DuplicateHost(w[1].name.clone()));
    }

    let mut taken: Vec<MacRange> = cfg.avoid.clone();
    taken.extend(order.iter().map(|h| h.current_range()));
    let mut kept: Vec<MacRange> = Vec::new();
    let mut plans = Vec::with_capacity(order.len());
    for h in &order {
        let current = h.current_range();
        let mut collides_with: Vec<String> = order
            .iter()
            .filter(|o| {
                !o.name.eq_ignore_ascii_case(&h.name) && o.current_range().overlaps(&current)
            })
            .map(|o| o.name.clone())
            .collect();
        collides_with.extend(
            cfg.avoid
                .iter()
                .filter(|a| a.overlaps(&current))
                .map(|a| format!("range {a}")),
        );
        let keep = cfg.keep_unique
            && !cfg.avoid.iter().any(|a| a.overlaps(&current))
            && !kept.iter().any(|k| k.overlaps(&current));
        let proposed = if keep {
            kept.push(current);
            current
        } else {
            let block = next_free_block(cfg, &taken).ok_or_else(|| PlanError::Exhausted {
                base: cfg.base,
                block_size: cfg.block_size,
                host: h.name.clone(),
            })?;
            taken.push(block);
            block
        };
        plans.push(HostPlan {
            name: h.name.clone(),
            ip: h.ip,
            current,
            current_is_default: h.current.is_none(),
            collides_with,
            proposed,
        });
    }
    Ok(plans)
}

/// The first block of `cfg.block_size` addresses, aligned to the block size from the base's
/// start, that overlaps nothing taken.
fn next_free_block(cfg: &PlanConfig, taken: &[MacRange]) -> Option<MacRange> {
    let base = cfg.base;
    let mut offset = 0u64;
    while offset.checked_add(cfg.block_size)? <= base.len() {
        let first = base.nth(offset)?;
        let last = base.nth(offset + cfg.block_size - 1)?;
        let block = MacRange::new(first, last).ok()?;
        match taken
            .iter()
            .filter(|t| t.overlaps(&block))
            .map(|t| t.last())
            .max()
        {
            None => return Some(block),
            // jump past the last address of whatever is in the way, to the next aligned block
            Some(end) => {
                let past = end.to_u64() + 1 - base.first().to_u64();
                offset = past.div_ceil(cfg.block_size) * cfg.block_size;
            }
        }
    }
    None
}

/// The plan as a table for people and `Set-VMHost` lines to paste (printed, never run). Hosts that
/// keep their range get a comment, not a command.
pub fn render_plan(plan: &[HostPlan]) -> String {
    let hx = |m: Mac| m.display(crate::mac::MacFormat::Hyperv).to_string();
    let mut out = String::new();
    let name_w = plan.iter().map(|p| p.name.len()).max().unwrap_or(4).max(4);
    let _ = writeln!(
        out,
        "{:<name_w$}  {:<15}  {:<37}  COLLIDES WITH",
        "HOST", "IP", "CURRENT RANGE"
    );
    for p in plan {
        let current = format!(
            "{}{}",
            p.current,
            if p.current_is_default { "" } else { " (set)" }
        );
        let collides = if p.collides_with.is_empty() {
            "-".to_string()
        } else {
            p.collides_with.join(", ")
        };
        let _ = writeln!(
            out,
            "{:<name_w$}  {:<15}  {:<37}  {collides}",
            p.name,
            p.ip.to_string(),
            current
        );
    }
    out.push_str(
        "\n# Proposed plan: paste into an elevated PowerShell. Existing VMs keep their MACs;\n",
    );
    out.push_str(
        "# new ones (and VMs started after a move to another host) draw from the new range.\n",
    );
    for p in plan {
        if p.changes() {
            let _ = writeln!(
                out,
                // MACs quoted: a bare 020000000000 or 1E0000000000 lexes as a number
                "Set-VMHost -ComputerName {} -MacAddressMinimum '{}' -MacAddressMaximum '{}'",
                ps_quote(&p.name),
                hx(p.proposed.first()),
                hx(p.proposed.last())
            );
        } else {
            let _ = writeln!(
                out,
                "# {} keeps {} (collides with nothing)",
                p.name, p.current
            );
        }
    }
    out
}

/// Quotes a host name for PowerShell only when it needs it.
fn ps_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        s.to_string()
    } else {
        // PowerShell also ends '…' at U+2018..U+201B: double those as well (as quote.rs does)
        let mut q = String::from("'");
        for c in s.chars() {
            if matches!(c, '\'' | '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}') {
                q.push(c);
            }
            q.push(c);
        }
        q.push('\'');
        q
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> HostSpec {
        HostSpec::parse(s).unwrap()
    }

    #[test]
    fn host_spec_parses_name_equals_ip_and_says_what_is_wrong() {
        assert_eq!(spec(" HV1 = 10.0.1.5 ").name, "HV1");
        assert_eq!(spec("HV1=10.0.1.5").ip, Ipv4Addr::new(10, 0, 1, 5));
        assert_eq!(
            HostSpec::parse("HV1").unwrap_err(),
            "'HV1' is not NAME=IP (e.g. HV01=10.0.1.5)"
        );
        assert_eq!(
            HostSpec::parse("=10.0.1.5").unwrap_err(),
            "'=10.0.1.5' has an empty host name"
        );
        assert_eq!(
            HostSpec::parse("HV1=10.0.1.500").unwrap_err(),
            "'10.0.1.500' in 'HV1=10.0.1.500' is not an IPv4 address"
        );
    }

    #[test]
    fn host_file_skips_comments_and_names_the_bad_line() {
        let hosts = HostSpec::parse_lines("# cluster CL1\nHV1=10.0.1.5\n\nHV2=10.1.1.5\n").unwrap();
        assert_eq!(hosts.len(), 2);
        assert_eq!(hosts[1].name, "HV2");
        assert_eq!(
            HostSpec::parse_lines("HV1=10.0.1.5\nHV2 10.1.1.5\n").unwrap_err(),
            "line 2: 'HV2 10.1.1.5' is not NAME=IP (e.g. HV01=10.0.1.5)"
        );
    }

    fn no_overlaps(plan: &[HostPlan]) {
        for (i, a) in plan.iter().enumerate() {
            for b in &plan[i + 1..] {
                assert!(!a.proposed.overlaps(&b.proposed), "{a:?} overlaps {b:?}");
            }
        }
    }

    #[test]
    fn colliding_defaults_are_flagged_and_the_second_host_moves() {
        let hosts = [
            spec("HV2=10.1.1.5"),
            spec("HV1=10.0.1.5"),
            spec("HV3=10.0.1.6"),
        ];
        let plan = plan_ranges(&hosts, &PlanConfig::default()).unwrap();
        let names: Vec<_> = plan.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["HV1", "HV2", "HV3"]);
        assert_eq!(plan[0].collides_with, ["HV2"]);
        assert_eq!(plan[1].collides_with, ["HV1"]);
        assert!(plan[2].collides_with.is_empty());
        assert!(!plan[0].changes() && plan[1].changes() && !plan[2].changes());
        assert_eq!(
            plan[1].proposed.to_string(),
            "00-15-5D-F0-00-00 - 00-15-5D-F0-00-FF"
        );
        no_overlaps(&plan);
        let text = render_plan(&plan);
        assert!(text.contains("Set-VMHost -ComputerName HV2 -MacAddressMinimum '00155DF00000' -MacAddressMaximum '00155DF000FF'\n"), "{text}");
        assert!(text.contains("# HV1 keeps 00-15-5D-01-05-00 - 00-15-5D-01-05-FF"));
        assert_eq!(text.matches("Set-VMHost").count(), 1);
    }

    #[test]
    fn new_blocks_avoid_pools_and_every_hosts_current_range() {
        let cfg = PlanConfig {
            // a host whose IP derives a default inside the base, and a pool at its start
            avoid: vec!["00155DF00000-00155DF001FF".parse().unwrap()],
            ..PlanConfig::default()
        };
        let hosts = [
            spec("A=10.0.240.2"),
            spec("B=10.1.240.2"),
            spec("C=10.0.240.3"),
        ];
        let plan = plan_ranges(&hosts, &cfg).unwrap();
        no_overlaps(&plan);
        for p in &plan {
            assert!(!cfg.avoid[0].overlaps(&p.proposed));
            for h in &hosts {
                if p.changes() {
                    assert!(
                        !h.current_range().overlaps(&p.proposed),
                        "{p:?} lands on {h:?}"
                    );
                }
            }
        }
        // F0-00 and F0-01 are the pool, F0-02 is A (and B), F0-03 is C
        assert_eq!(plan[1].proposed.first().to_string(), "00-15-5D-F0-04-00");
    }

    #[test]
    fn configurable_block_size_renumbering_everyone() {
        let cfg = PlanConfig {
            block_size: 1024,
            keep_unique: false,
            ..PlanConfig::default()
        };
        let hosts = [spec("A=10.0.0.1"), spec("B=10.0.0.2")];
        let plan = plan_ranges(&hosts, &cfg).unwrap();
        assert!(plan.iter().all(|p| p.changes() && p.proposed.len() == 1024));
        no_overlaps(&plan);
    }

    #[test]
    fn plan_errors_are_precise() {
        let tiny = PlanConfig {
            base: "00155DF00000-00155DF000FF".parse().unwrap(),
            keep_unique: false,
            ..PlanConfig::default()
        };
        let err = plan_ranges(&[spec("A=10.0.0.1"), spec("B=10.0.0.2")], &tiny).unwrap_err();
        assert!(
            matches!(&err, PlanError::Exhausted { host, .. } if host == "B"),
            "{err}"
        );
        assert_eq!(
            plan_ranges(
                &[spec("A=10.0.0.1"), spec("a=10.0.0.2")],
                &PlanConfig::default()
            ),
            Err(PlanError::DuplicateHost("a".into()))
        );
        let zero = PlanConfig {
            block_size: 0,
            ..PlanConfig::default()
        };
        assert_eq!(plan_ranges(&[], &zero), Err(PlanError::ZeroBlockSize));
    }

    #[test]
    fn odd_host_names_are_quoted_for_powershell() {
        assert_eq!(ps_quote("HV-01.corp"), "HV-01.corp");
        assert_eq!(ps_quote("it's"), "'it''s'");
    }

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
