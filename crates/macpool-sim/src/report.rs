//! The results of a run, and their three renderings: a table for the terminal, JSON for
//! scripts (byte-identical for the same seed and parameters), and one self-contained HTML file
//! with inline SVG plots (no script, no network).

use std::fmt::Write as _;

use serde::Serialize;

use crate::agent::AgentStats;
use crate::params::{Checked, Params};
use crate::workload::WorkloadCounts;

/// Time series, one point per sample (hourly; coarser for runs longer than 30 days).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Series {
    /// Sample times, hours since the start.
    pub hours: Vec<f64>,
    /// Duplicate-MAC incidents so far.
    pub duplicates_total: Vec<u64>,
    /// MACs used by two or more powered-on VMs at that moment.
    pub duplicated_macs: Vec<u64>,
    /// Distinct MACs used by any VM, live or frozen in a checkpoint.
    pub addresses_in_use: Vec<u64>,
    /// Addresses of macpool's own pools not free (leased, held, cooling); `null` without an
    /// authority.
    pub pool_used: Vec<Option<u64>>,
}

/// One strategy's results.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StrategyResult {
    pub strategy: String,
    pub description: String,
    /// Times a powered-on VM came to share its MAC with another powered-on VM (and kept it past
    /// the agents' reaction).
    pub duplicate_incidents: u64,
    /// The incidents by the action that started them: `rollback` (a logoff's restore brought a
    /// checkpoint's MAC back), `new VM` (a host gave a new VM a MAC in use elsewhere), `cold
    /// start` and `failover` (a start re-checked the MAC and the host handed out one in use
    /// elsewhere).
    pub incidents_by_cause: std::collections::BTreeMap<String, u64>,
    /// Minutes during which a powered-on VM shared its MAC with another one (each extra VM
    /// counts).
    pub duplicate_minutes: f64,
    /// Turn-off + start cycles the agent forced on a desktop.
    pub forced_restarts: u64,
    /// Forced restarts × a draw from [restart_outage_min, restart_outage_max].
    pub outage_seconds: f64,
    /// DHCP exchanges on a duplicated MAC: the joining VM's request at each incident, plus one
    /// renewal per `dhcp_renew` of duplicated time.
    pub dhcp_conflicts: u64,
    /// Peak addresses of macpool's pools in use (leased, held or cooling); `null` without an
    /// authority.
    pub pool_addresses_consumed: Option<u64>,
    /// Blocks the hosts claimed from the authority (delegate).
    pub blocks_claimed: u64,
    /// Duplicates that existed only until the agents' reaction to the same event.
    pub averted_duplicates: u64,
    /// Starts Hyper-V refused ("Attempt to access invalid address": the host's range was full).
    pub failed_starts: u64,
    /// MACs still duplicated when the run ended.
    pub duplicated_macs_at_end: u64,
    /// Most distinct MACs in use (live or in checkpoints) at once.
    pub peak_addresses_in_use: u64,
    pub outage_seconds_by_day: Vec<f64>,
    /// What the agents did; `null` without an agent.
    pub agent: Option<AgentStats>,
    pub series: Series,
}

/// A strategy that was asked for and cannot run in this build.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Unavailable {
    pub strategy: String,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostRow {
    pub name: String,
    pub ip: String,
    pub range: String,
}

/// Everything a run produced.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// Version of this document's shape.
    pub format: &'static str,
    pub scenario: String,
    pub seed: u64,
    pub params: Params,
    pub hosts: Vec<HostRow>,
    pub workload: WorkloadCounts,
    pub strategies: Vec<StrategyResult>,
    pub unavailable: Vec<Unavailable>,
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn decimal(x: f64) -> String {
    let whole = x.trunc() as u64;
    let frac = ((x - x.trunc()) * 10.0).round() as u64;
    if frac >= 10 {
        format!("{}.0", thousands(whole + 1))
    } else {
        format!("{}.{frac}", thousands(whole))
    }
}

fn align(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = width[i] - c.chars().count();
            if i == 0 {
                s.push_str(c);
                s.push_str(&" ".repeat(pad));
            } else {
                s.push_str("  ");
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(&headers.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

impl Report {
    pub(crate) fn new(
        c: &Checked,
        workload: WorkloadCounts,
        strategies: Vec<StrategyResult>,
        unavailable: Vec<Unavailable>,
    ) -> Report {
        Report {
            format: "macpool-sim/1",
            scenario: c.params.scenario.name().into(),
            seed: c.params.seed,
            params: c.params.clone(),
            hosts: c
                .hosts
                .iter()
                .map(|h| HostRow {
                    name: h.name.clone(),
                    ip: h.ip.to_string(),
                    range: h.range.to_string(),
                })
                .collect(),
            workload,
            strategies,
            unavailable,
        }
    }

    /// The results table (one row per strategy).
    pub fn table(&self) -> String {
        let headers = [
            "STRATEGY",
            "DUPLICATES",
            "DUP-MINUTES",
            "FORCED RESTARTS",
            "OUTAGE (S)",
            "DHCP CONFLICTS",
            "POOL USED",
            "BLOCKS",
        ];
        let rows: Vec<Vec<String>> = self
            .strategies
            .iter()
            .map(|s| {
                vec![
                    s.strategy.clone(),
                    thousands(s.duplicate_incidents),
                    decimal(s.duplicate_minutes),
                    thousands(s.forced_restarts),
                    thousands(s.outage_seconds.round() as u64),
                    thousands(s.dhcp_conflicts),
                    s.pool_addresses_consumed.map_or("-".into(), thousands),
                    thousands(s.blocks_claimed),
                ]
            })
            .collect();
        align(&headers, &rows)
    }

    /// The table with a line about the workload before it and notes after it.
    pub fn summary(&self) -> String {
        let p = &self.params;
        let w = &self.workload;
        let mut out = format!(
            "scenario {} (seed {}): {} desktops on {} hosts for {}\n\
             workload: {} logoffs (rollbacks), {} live migrations, {} cold starts, {} host reboots, {} desktops re-created\n\n",
            self.scenario,
            self.seed,
            thousands(p.desktops as u64),
            p.hosts,
            p.duration,
            thousands(w.logoffs),
            thousands(w.live_migrations),
            thousands(w.cold_starts),
            thousands(w.host_reboots),
            thousands(w.desktops_recreated),
        );
        out.push_str(&self.table());
        let averted: Vec<String> = self
            .strategies
            .iter()
            .filter(|s| s.averted_duplicates > 0)
            .map(|s| format!("{} {}", s.strategy, thousands(s.averted_duplicates)))
            .collect();
        if !averted.is_empty() {
            let _ = writeln!(
                out,
                "\naverted by a forced restart before anyone used the duplicate: {}",
                averted.join(", ")
            );
        }
        let failed: Vec<String> = self
            .strategies
            .iter()
            .filter(|s| s.failed_starts > 0)
            .map(|s| format!("{} {}", s.strategy, thousands(s.failed_starts)))
            .collect();
        if !failed.is_empty() {
            let _ = writeln!(
                out,
                "starts refused because a host's range was full: {}",
                failed.join(", ")
            );
        }
        for u in &self.unavailable {
            let _ = writeln!(out, "{}: not run ({})", u.strategy, u.reason);
        }
        out
    }

    /// Pretty JSON; the same parameters and seed give the same bytes.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the report serializes") + "\n"
    }

    /// One self-contained HTML page: the table, three plots, the parameters.
    pub fn html(&self) -> String {
        crate::html::render(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(decimal(1234.56), "1,234.6");
        assert_eq!(decimal(0.96), "1.0");
        assert_eq!(
            align(&["A", "NUM"], &[vec!["xy".into(), "5".into()]]),
            "A   NUM\nxy    5\n"
        );
    }
}
