//! What a run found, as text for people and JSON for scripts (the same fields).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::checks::{GapStats, ReplayStats, Violation};
use crate::replicas::ReplicaEvent;
use crate::workload::{Kind, Outcome, RequestRecord};
use crate::{Config, POOL, redact};

#[derive(Clone, Debug, Default, Serialize)]
pub struct Counts {
    pub ok: u64,
    pub refused: u64,
    pub unknown: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct RunInfo {
    pub database: String,
    pub replicas: usize,
    pub clients: usize,
    pub duration_s: f64,
    /// `null`: no kills.
    pub kill_every_s: Option<f64>,
    pub seed: u64,
    pub pool: String,
    pub pool_size: u64,
    pub cooldown_ms: u64,
    pub clock_tolerance_ms: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ChecksInfo {
    /// Acknowledged leases looked for on each replica.
    pub acknowledged_leases: u64,
    pub replicas_read: usize,
    pub history_entries: u64,
    /// `one request`, or `pages of 10,000 rows` when the history is longer.
    pub history_source: String,
    pub history_requests: u64,
    pub history: ReplayStats,
    /// Certain owner intervals from the clients' logs, compared pairwise per MAC.
    pub client_intervals: usize,
    pub client_cooldown: GapStats,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub run: RunInfo,
    /// Logical operations (an operation and its retries count once).
    pub operations: u64,
    /// Operations that ended with a definite answer (ok, or a refusal).
    pub operations_answered: u64,
    /// Every HTTP request by kind and outcome.
    pub requests: BTreeMap<String, Counts>,
    pub requests_total: u64,
    /// Refusals by problem type.
    pub refused_by: BTreeMap<String, u64>,
    /// A few reasons for unknown outcomes, to see what the kills did.
    pub unknown_examples: Vec<String>,
    pub kills: u64,
    pub restarts: u64,
    pub replica_events: Vec<ReplicaEvent>,
    pub checks: ChecksInfo,
    pub violations: Vec<Violation>,
}

pub(crate) struct Inputs<'a> {
    pub cfg: &'a Config,
    pub workload: Duration,
    pub requests: &'a [RequestRecord],
    pub operations: u64,
    pub acknowledged: u64,
    pub events: Vec<ReplicaEvent>,
    pub history_entries: u64,
    pub history_source: &'static str,
    pub history_requests: u64,
    pub leases_checked: u64,
    pub replicas_read: usize,
    pub intervals: usize,
    pub replay: ReplayStats,
    pub client_gaps: GapStats,
    pub violations: Vec<Violation>,
}

impl Report {
    pub(crate) fn build(i: Inputs<'_>) -> Report {
        let mut requests: BTreeMap<String, Counts> = Kind::ALL
            .iter()
            .map(|k| (k.name().to_string(), Counts::default()))
            .collect();
        let mut refused_by = BTreeMap::new();
        let mut unknown_examples: Vec<String> = Vec::new();
        for r in i.requests {
            let c = requests.get_mut(r.kind.name()).unwrap();
            match &r.outcome {
                Outcome::Ok => c.ok += 1,
                Outcome::Refused { problem, .. } => {
                    c.refused += 1;
                    *refused_by.entry(problem.clone()).or_insert(0) += 1;
                }
                Outcome::Unknown { reason } => {
                    c.unknown += 1;
                    if unknown_examples.len() < 5 && !unknown_examples.contains(reason) {
                        unknown_examples.push(reason.clone());
                    }
                }
            }
        }
        let cfg = i.cfg;
        Report {
            run: RunInfo {
                database: redact(&cfg.database),
                replicas: cfg.replicas,
                clients: cfg.clients,
                duration_s: i.workload.as_secs_f64(),
                kill_every_s: cfg.kill_every.map(|k| k.as_secs_f64()),
                seed: cfg.seed,
                pool: POOL.into(),
                pool_size: cfg.pool_size,
                cooldown_ms: cfg.cooldown.as_millis() as u64,
                clock_tolerance_ms: cfg.clock_tolerance.as_millis() as u64,
            },
            operations: i.operations,
            operations_answered: i.acknowledged,
            requests_total: i.requests.len() as u64,
            requests,
            refused_by,
            unknown_examples,
            kills: i.events.iter().filter(|e| e.event == "kill").count() as u64,
            restarts: i.events.iter().filter(|e| e.event == "restart").count() as u64,
            replica_events: i.events,
            checks: ChecksInfo {
                acknowledged_leases: i.leases_checked,
                replicas_read: i.replicas_read,
                history_entries: i.history_entries,
                history_source: i.history_source.into(),
                history_requests: i.history_requests,
                history: i.replay,
                client_intervals: i.intervals,
                client_cooldown: i.client_gaps,
            },
            violations: i.violations,
        }
    }

    /// No violations.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap()
    }

    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let r = &self.run;
        let kills = match r.kill_every_s {
            Some(k) => format!("kill -9 every {k} s"),
            None => "no kills".into(),
        };
        let _ = writeln!(
            s,
            "macpool-checker: {} replica(s) on {}, {} clients, {:.1} s, {kills}, seed {}",
            r.replicas, r.database, r.clients, r.duration_s, r.seed
        );
        let _ = writeln!(
            s,
            "pool {}: {} addresses, next-fit, cooldown {} ms (clock tolerance {} ms)",
            r.pool, r.pool_size, r.cooldown_ms, r.clock_tolerance_ms
        );
        let _ = writeln!(
            s,
            "\noperations: {} ({} answered, {} left unknown), {} requests",
            self.operations,
            self.operations_answered,
            self.operations - self.operations_answered,
            self.requests_total
        );
        let _ = writeln!(
            s,
            "  {:<10} {:>8} {:>8} {:>8}",
            "", "ok", "refused", "unknown"
        );
        for (k, c) in &self.requests {
            let _ = writeln!(s, "  {k:<10} {:>8} {:>8} {:>8}", c.ok, c.refused, c.unknown);
        }
        if !self.refused_by.is_empty() {
            let list: Vec<String> = self
                .refused_by
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            let _ = writeln!(s, "  refused: {}", list.join(", "));
        }
        for e in &self.unknown_examples {
            let _ = writeln!(s, "  unknown, e.g.: {e}");
        }
        let _ = writeln!(
            s,
            "\nreplicas: {} kills, {} restarts",
            self.kills, self.restarts
        );
        for e in &self.replica_events {
            let started = e
                .startup_ms
                .map(|ms| format!(" (up in {ms} ms)"))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "  {:>8.3} s  {:<7}  {:<6} pid {:<7} {}{started}",
                e.at_ms as f64 / 1000.0,
                e.event,
                e.replica,
                e.pid,
                e.url
            );
        }
        let c = &self.checks;
        let gap = |g: &GapStats| match g.min_gap_ms {
            Some(ms) => format!("{} reuses, shortest gap {ms} ms", g.reuses),
            None => format!("{} reuses", g.reuses),
        };
        let _ = writeln!(s, "\nchecks:");
        let _ = writeln!(
            s,
            "  acknowledged leases present: {} leases looked up on each of {} replica(s)",
            c.acknowledged_leases, c.replicas_read
        );
        let _ = writeln!(
            s,
            "  one live owner per MAC:      {} history rows of {} MACs replayed ({}, {} \
             allocations, {} restores, {} holds); {} client intervals compared",
            c.history_entries,
            c.history.macs,
            c.history_source,
            c.history.allocations,
            c.history.restores,
            c.history.holds,
            c.client_intervals
        );
        let _ = writeln!(
            s,
            "  cooldown respected:          history: {}; clients: {}",
            gap(&c.history.gaps),
            gap(&c.client_cooldown)
        );
        let _ = writeln!(s, "\nviolations: {}", self.violations.len());
        const SHOWN: usize = 100;
        for v in self.violations.iter().take(SHOWN) {
            let _ = writeln!(s, "  [{}] {}", v.check, v.detail);
        }
        if self.violations.len() > SHOWN {
            let _ = writeln!(s, "  … and {} more", self.violations.len() - SHOWN);
        }
        s
    }
}
