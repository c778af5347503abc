//! Every knob of a run, the three scenarios' presets, and the checks that reject impossible
//! parameters before anything runs.
//!
//! Parameters come in layers: the scenario's preset, then a TOML file, then `key=value`
//! overrides (the CLI's `--set` and its shorthand flags). The merged table is read with
//! `deny_unknown_fields`, so a misspelt key is an error, never silently ignored. Counts are read
//! as signed integers and durations as text so that `-3` and `-5d` get this module's message
//! ("must not be negative") instead of a type error.

use std::fmt;
use std::net::Ipv4Addr;

use macpool_core::hyperv::default_range_for_ip;
use macpool_core::{Mac, MacRange};
use serde::{Deserialize, Serialize};

use crate::strategy::Strategy;

/// Why a parameter set cannot be simulated. The message says which parameter and what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParamError(pub String);

fn bad(msg: impl Into<String>) -> ParamError {
    ParamError(msg.into())
}

/// A non-negative span of simulated time, written like `30d`, `1h30m`, `15s`, `250ms`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dur(pub u64);

pub(crate) const SECOND: u64 = 1000;
pub(crate) const MINUTE: u64 = 60 * SECOND;
pub(crate) const HOUR: u64 = 60 * MINUTE;
pub(crate) const DAY: u64 = 24 * HOUR;

impl Dur {
    pub const fn ms(self) -> u64 {
        self.0
    }

    /// Parses `30d`, `1h30m`, `90s`, `250ms`, `2w`, `0`. Negative spans are refused with a
    /// message that says so.
    pub fn parse(text: &str) -> Result<Dur, String> {
        let s = text.trim();
        if s.starts_with('-') {
            return Err(format!(
                "duration '{text}' is negative; durations must be >= 0"
            ));
        }
        if s == "0" {
            return Ok(Dur(0));
        }
        let mut total: u64 = 0;
        let mut rest = s;
        if rest.is_empty() {
            return Err("empty duration: write e.g. 30d, 6h, 15m, 20s".into());
        }
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit() && c != '.')
                .unwrap_or(rest.len());
            if digits == 0 {
                return Err(format!(
                    "duration '{text}': expected a number before '{rest}' (e.g. 30d, 6h, 15m, 20s)"
                ));
            }
            let number: f64 = rest[..digits]
                .parse()
                .map_err(|_| format!("duration '{text}': '{}' is not a number", &rest[..digits]))?;
            rest = rest[digits..].trim_start();
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c.is_whitespace())
                .unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            rest = rest[unit_len..].trim_start();
            let scale = match unit {
                "ms" => 1,
                "s" | "sec" | "secs" => SECOND,
                "m" | "min" | "mins" => MINUTE,
                "h" | "hour" | "hours" => HOUR,
                "d" | "day" | "days" => DAY,
                "w" | "week" | "weeks" => 7 * DAY,
                "" => {
                    return Err(format!(
                        "duration '{text}' needs a unit: ms, s, m, h, d or w (e.g. 30d)"
                    ));
                }
                other => {
                    return Err(format!(
                        "duration '{text}': unknown unit '{other}' (use ms, s, m, h, d or w)"
                    ));
                }
            };
            let ms = number * scale as f64;
            if !ms.is_finite() || ms > 1e15 {
                return Err(format!("duration '{text}' is too long"));
            }
            total = total.saturating_add(ms.round() as u64);
        }
        Ok(Dur(total))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("0s");
        }
        let mut left = self.0;
        for (unit, scale) in [
            ("d", DAY),
            ("h", HOUR),
            ("m", MINUTE),
            ("s", SECOND),
            ("ms", 1),
        ] {
            if left >= scale {
                write!(f, "{}{unit}", left / scale)?;
                left %= scale;
            }
        }
        Ok(())
    }
}

impl Serialize for Dur {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Dur, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"30d\", \"6h\", \"15m\" or \"20s\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Dur, E> {
                Dur::parse(v).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Dur, E> {
                if v < 0 {
                    Err(E::custom(format!(
                        "duration {v} is negative; durations must be >= 0"
                    )))
                } else if v == 0 {
                    Ok(Dur(0))
                } else {
                    Err(E::custom(format!(
                        "duration {v} needs a unit: write e.g. \"{v}d\" or \"{v}s\""
                    )))
                }
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Dur, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Dur, E> {
                Err(E::custom(format!(
                    "duration {v} needs a unit: write e.g. \"{v}d\""
                )))
            }
        }
        d.deserialize_any(V)
    }
}

/// The preset a run starts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// The seed's exact sequence on two hosts (a fixed script, not a random workload).
    Blog,
    /// 8 hosts, 1,000 pooled desktops, 30 days.
    Campus,
    /// 64 hosts, 10,000 pooled desktops, 30 days.
    Large,
}

impl Scenario {
    pub const ALL: [Scenario; 3] = [Scenario::Blog, Scenario::Campus, Scenario::Large];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Blog => "blog",
            Scenario::Campus => "campus",
            Scenario::Large => "large",
        }
    }

    pub fn parse(s: &str) -> Result<Scenario, ParamError> {
        Scenario::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| {
                bad(format!(
                    "unknown scenario '{s}': expected blog, campus or large"
                ))
            })
    }

    /// The preset parameters of this scenario.
    pub fn params(self) -> Params {
        let base = Params::campus();
        match self {
            Scenario::Campus => base,
            Scenario::Blog => Params {
                scenario: Scenario::Blog,
                hosts: 2,
                host_ips: vec!["10.0.1.11".into(), "10.0.1.12".into()],
                desktops: 1,
                duration: Dur(DAY),
                ..base
            },
            Scenario::Large => Params {
                scenario: Scenario::Large,
                hosts: 64,
                desktops: 10_000,
                host_ips: Vec::new(),
                ..base
            },
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// With which authority token the simulated agents act.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentScope {
    /// An agent token bound to its host (`Scope::Host`), as deployed.
    Host,
    /// An admin token (`Scope::All`).
    Admin,
}

/// Every parameter of a run. Field docs say what each models; `docs` in the crate root list the
/// rules and their sources.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The preset these parameters started from (the blog scenario runs its fixed script).
    pub scenario: Scenario,
    /// Seeds every random choice; the same seed gives byte-identical results.
    pub seed: u64,
    /// Failover cluster nodes.
    pub hosts: i64,
    /// Each host's IPv4 address, from which Hyper-V derived its default dynamic range
    /// (`00-15-5D-<ip3>-<ip4>-00..FF`). Empty: `10.10.<1+i/200>.<11+i%200>`, all distinct.
    /// Hosts whose addresses share the last two octets get the same range, as in Hyper-V.
    pub host_ips: Vec<String>,
    /// Explicit dynamic ranges (`FIRST-LAST`, one per host) instead of the IP-derived ones
    /// (`Set-VMHost -MacAddressMinimum/-Maximum`).
    pub host_ranges: Vec<String>,
    /// RDS pooled desktops in the collection.
    pub desktops: i64,
    /// Simulated time.
    pub duration: Dur,
    /// User logoffs per desktop per day; each one rolls the desktop back to `RDV_ROLLBACK`.
    pub logoffs_per_desktop_per_day: f64,
    /// Cold starts (turned off, later turned on: the only moment Hyper-V re-checks a dynamic MAC)
    /// per desktop per day.
    pub cold_starts_per_desktop_per_day: f64,
    /// How long a cold-started desktop stays off.
    pub cold_start_off: Dur,
    /// Live migrations per host per day for load balancing (source and target uniform).
    pub balance_migrations_per_host_per_day: f64,
    /// Ordinary VMs (servers, test VMs: no checkpoint, no rollback) created per host per day —
    /// the seed's "new VM" that a host gives a freed MAC to.
    pub other_vms_per_host_per_day: f64,
    /// How long such a VM lives before it is deleted.
    pub other_vm_lifetime: Dur,
    /// Unplanned node failures per host per year: the host goes down at once and the cluster
    /// restarts its VMs on the other nodes (a cold start there), without fail-back.
    pub host_failures_per_host_per_year: f64,
    /// How long a failed host stays down.
    pub failure_repair: Dur,
    /// Time between two VM restarts of one failover.
    pub failover_gap: Dur,
    /// How often every host is drained, patched and rebooted in turn (`0` = never).
    pub patch_every: Dur,
    /// When the first rolling patch run starts.
    pub patch_first: Dur,
    /// How long a drained host is down for its reboot.
    pub reboot: Dur,
    /// Time between two live migrations of one drain or fail-back.
    pub migration_gap: Dur,
    /// How often the collection is re-created from an updated template (`0` = never).
    pub recreate_every: Dur,
    /// When the first re-creation starts.
    pub recreate_first: Dur,
    /// Time between two desktops of one re-creation.
    pub recreate_gap: Dur,
    /// A forced restart's user-visible outage is drawn uniformly from
    /// `[restart_outage_min, restart_outage_max]` (the seed: "15-30 seconds").
    pub restart_outage_min: Dur,
    pub restart_outage_max: Dur,
    /// DHCP lease renewal interval of the desktops (each renewal on a duplicated MAC is a
    /// DHCP conflict).
    pub dhcp_renew: Dur,
    /// The agents' timer (`macpool agent --inventory-every`, default the agent's own 60 s): each
    /// agent sends its host's whole inventory this often, changed or not, besides half a second
    /// after VM events (see `agent`). Keep it well below `block_cooldown`: the authority frees a
    /// drained block when no host's *latest* inventory uses it, so reports older than the
    /// cooldown can free a block a VM still has a MAC of (try `large` with
    /// `inventory_interval=7d`).
    pub inventory_interval: Dur,
    /// The token the simulated agents use.
    pub agent_scope: AgentScope,
    /// Where guard's fresh static MACs come from (`FIRST-LAST`); must not overlap a host range.
    pub remedy_range: String,
    /// Reuse cooldown of the remedy pool.
    pub remedy_cooldown: Dur,
    /// delegate: the pool the hosts' blocks are claimed from (`FIRST-LAST`); must not overlap a
    /// host's own range or `remedy_range`.
    pub block_range: String,
    /// delegate: addresses per block (8..=65536).
    pub block_size: i64,
    /// delegate: rotate when the host's cursor leaves this many addresses or fewer in its block
    /// (`0`: the agent's default, a quarter of the block).
    pub block_margin: i64,
    /// delegate: how long a drained block rests unused before it returns to the pool.
    pub block_cooldown: Dur,
    /// Strategies to compare, in order; empty = every strategy this build has.
    pub strategies: Vec<String>,
}

impl Params {
    fn campus() -> Params {
        Params {
            scenario: Scenario::Campus,
            seed: 1,
            hosts: 8,
            host_ips: Vec::new(),
            host_ranges: Vec::new(),
            desktops: 1000,
            duration: Dur(30 * DAY),
            logoffs_per_desktop_per_day: 2.0,
            cold_starts_per_desktop_per_day: 0.05,
            cold_start_off: Dur(10 * MINUTE),
            balance_migrations_per_host_per_day: 4.0,
            other_vms_per_host_per_day: 4.0,
            other_vm_lifetime: Dur(DAY),
            host_failures_per_host_per_year: 4.0,
            failure_repair: Dur(4 * HOUR),
            failover_gap: Dur(2 * SECOND),
            patch_every: Dur(30 * DAY),
            patch_first: Dur(10 * DAY),
            reboot: Dur(20 * MINUTE),
            migration_gap: Dur(20 * SECOND),
            recreate_every: Dur(30 * DAY),
            recreate_first: Dur(20 * DAY),
            recreate_gap: Dur(10 * SECOND),
            restart_outage_min: Dur(15 * SECOND),
            restart_outage_max: Dur(30 * SECOND),
            dhcp_renew: Dur(4 * HOUR),
            inventory_interval: Dur(crate::agent::LoopTiming::of_real_agent().every),
            agent_scope: AgentScope::Admin,
            remedy_range: "00155DFF0000-00155DFFFFFF".into(),
            remedy_cooldown: Dur(DAY),
            block_range: "00155DF00000-00155DFEFFFF".into(),
            block_size: 256,
            block_margin: 0,
            block_cooldown: Dur(DAY),
            strategies: Vec::new(),
        }
    }

    /// The scenario's preset, then `file` (TOML text), then each `key=value` in order. Values
    /// are TOML (`hosts=4`, `host_ips=["10.0.0.1"]`); a value that is not TOML is taken as a
    /// string (`duration=10d`).
    pub fn layered(
        scenario: Scenario,
        file: Option<&str>,
        overrides: &[(String, String)],
    ) -> Result<Params, ParamError> {
        let preset = scenario.params();
        let mut table = toml::Table::try_from(&preset).expect("parameters serialize to TOML");
        let mut scenario = scenario;
        if let Some(text) = file {
            let file: toml::Table = text
                .parse()
                .map_err(|e: toml::de::Error| bad(format!("parameter file: {}", e.message())))?;
            if let Some(s) = file.get("scenario") {
                let s = s
                    .as_str()
                    .ok_or_else(|| bad("parameter file: 'scenario' must be a string"))?;
                scenario = Scenario::parse(s)?;
                table = toml::Table::try_from(scenario.params()).expect("serializes");
            }
            for (k, v) in file {
                table.insert(k, v);
            }
        }
        for (k, v) in overrides {
            let key = k.trim().replace('-', "_");
            if key == "scenario" {
                return Err(bad(
                    "choose the scenario with --scenario, not with a key=value override",
                ));
            }
            let value = parse_value(v);
            table.insert(key, value);
        }
        table.insert(
            "scenario".into(),
            toml::Value::String(scenario.name().into()),
        );
        Params::deserialize(toml::Value::Table(table)).map_err(|e| {
            let msg = e.message().to_string();
            bad(format!("parameters: {msg}"))
        })
    }

    /// The parameters as a TOML document, ready for `--config`.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("parameters serialize to TOML")
    }

    /// Checks everything that can be checked before running and resolves the hosts' ranges.
    pub fn check(&self) -> Result<Checked, ParamError> {
        if self.hosts < 0 {
            return Err(bad(format!(
                "hosts = {}: the number of hosts must not be negative",
                self.hosts
            )));
        }
        if self.hosts == 0 {
            return Err(bad(
                "hosts = 0: a cluster needs at least one host (set hosts to 1 or more)",
            ));
        }
        if self.hosts > 4096 {
            return Err(bad(format!(
                "hosts = {}: at most 4096 hosts are simulated",
                self.hosts
            )));
        }
        if self.desktops < 0 {
            return Err(bad(format!(
                "desktops = {}: the number of desktops must not be negative",
                self.desktops
            )));
        }
        if self.desktops == 0 {
            return Err(bad(
                "desktops = 0: the collection needs at least one desktop",
            ));
        }
        if self.desktops > 1_000_000 {
            return Err(bad(format!(
                "desktops = {}: at most 1,000,000 desktops are simulated",
                self.desktops
            )));
        }
        if self.duration.ms() == 0 {
            return Err(bad("duration = 0s: simulate at least some time (e.g. 30d)"));
        }
        if self.duration.ms() > 3650 * DAY {
            return Err(bad(format!(
                "duration = {}: at most 3650 days are simulated",
                self.duration
            )));
        }
        let rates = [
            (
                "logoffs_per_desktop_per_day",
                self.logoffs_per_desktop_per_day,
            ),
            (
                "cold_starts_per_desktop_per_day",
                self.cold_starts_per_desktop_per_day,
            ),
            (
                "balance_migrations_per_host_per_day",
                self.balance_migrations_per_host_per_day,
            ),
            (
                "other_vms_per_host_per_day",
                self.other_vms_per_host_per_day,
            ),
            (
                "host_failures_per_host_per_year",
                self.host_failures_per_host_per_year,
            ),
        ];
        for (name, v) in rates {
            if !v.is_finite() || v < 0.0 {
                return Err(bad(format!(
                    "{name} = {v}: a rate must be a finite number >= 0"
                )));
            }
            if v > 1000.0 {
                return Err(bad(format!("{name} = {v}: at most 1000 per day")));
            }
        }
        if self.restart_outage_min > self.restart_outage_max {
            return Err(bad(format!(
                "restart_outage_min = {} is longer than restart_outage_max = {}",
                self.restart_outage_min, self.restart_outage_max
            )));
        }
        for (name, d) in [
            ("dhcp_renew", self.dhcp_renew),
            ("inventory_interval", self.inventory_interval),
            ("migration_gap", self.migration_gap),
            ("recreate_gap", self.recreate_gap),
            ("other_vm_lifetime", self.other_vm_lifetime),
        ] {
            if d.ms() == 0 {
                return Err(bad(format!("{name} must be longer than 0s")));
            }
        }
        let strategies = self.strategy_list()?;
        let n = self.hosts as usize;
        let ips = self.ips(n)?;
        let ranges: Vec<MacRange> = if self.host_ranges.is_empty() {
            ips.iter().map(|ip| default_range_for_ip(*ip)).collect()
        } else {
            if self.host_ranges.len() != n {
                return Err(bad(format!(
                    "host_ranges lists {} ranges for {n} hosts: give one per host, or none to derive them from host_ips",
                    self.host_ranges.len()
                )));
            }
            self.host_ranges
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    MacRange::parse(r).map_err(|e| bad(format!("host_ranges[{i}] '{r}': {e}")))
                })
                .collect::<Result<_, _>>()?
        };
        let hosts: Vec<HostSpec> = (0..n)
            .map(|i| HostSpec {
                name: host_name(i, n),
                ip: ips[i],
                range: ranges[i],
            })
            .collect();

        // Capacity: every desktop needs a MAC of its own, and a host can only hand out its range.
        let distinct = union_size(&ranges);
        let desktops = self.desktops as u64;
        let extra_vms = if self.scenario == Scenario::Blog {
            BLOG_CHURN + 1
        } else {
            0
        };
        if desktops + extra_vms > distinct {
            let shared = shared_ranges(&hosts);
            return Err(bad(format!(
                "{desktops} desktops need {desktops} distinct MACs, but the {n} host range(s) address only {distinct}{shared}: \
                 lower desktops or add hosts (or give wider host_ranges)"
            )));
        }
        let per_host = desktops.div_ceil(n as u64);
        if let Some(h) = hosts.iter().find(|h| h.range.len() < per_host) {
            return Err(bad(format!(
                "{desktops} desktops on {n} hosts place {per_host} on each host, more than host {}'s range {} addresses ({}): \
                 lower desktops or add hosts",
                h.name,
                h.range,
                h.range.len()
            )));
        }
        let remedy = MacRange::parse(&self.remedy_range)
            .map_err(|e| bad(format!("remedy_range '{}': {e}", self.remedy_range)))?;
        if let Some(h) = hosts.iter().find(|h| h.range.overlaps(&remedy)) {
            return Err(bad(format!(
                "remedy_range {remedy} overlaps host {}'s dynamic range {}: guard's static MACs must come from addresses no host hands out",
                h.name, h.range
            )));
        }
        let blocks = MacRange::parse(&self.block_range)
            .map_err(|e| bad(format!("block_range '{}': {e}", self.block_range)))?;
        if let Some(h) = hosts.iter().find(|h| h.range.overlaps(&blocks)) {
            return Err(bad(format!(
                "block_range {blocks} overlaps host {}'s dynamic range {}: blocks must come from addresses no host hands out yet",
                h.name, h.range
            )));
        }
        if blocks.overlaps(&remedy) {
            return Err(bad(format!(
                "block_range {blocks} overlaps remedy_range {remedy}: give them separate addresses"
            )));
        }
        if !(8..=65_536).contains(&self.block_size) {
            return Err(bad(format!(
                "block_size = {}: a block has 8 to 65536 addresses",
                self.block_size
            )));
        }
        if self.block_margin < 0 || self.block_margin >= self.block_size {
            return Err(bad(format!(
                "block_margin = {}: must be 0 (a quarter of the block) or less than block_size = {}",
                self.block_margin, self.block_size
            )));
        }
        if blocks.len() / (self.block_size as u64) < n as u64 {
            return Err(bad(format!(
                "block_range {blocks} holds {} blocks of {} addresses, fewer than the {n} hosts",
                blocks.len() / self.block_size as u64,
                self.block_size
            )));
        }
        if self.scenario == Scenario::Blog && n != 2 {
            return Err(bad(format!(
                "the blog scenario is the seed's fixed sequence on 2 hosts; hosts = {n} cannot run it"
            )));
        }
        let desktops_u = self.desktops as u64;
        let recreate_run = desktops_u * self.recreate_gap.ms();
        if self.recreate_every.ms() > 0 && recreate_run >= self.recreate_every.ms() {
            return Err(bad(format!(
                "re-creating {desktops_u} desktops {} apart takes {}, not less than recreate_every = {}: \
                 lower recreate_gap or raise recreate_every",
                self.recreate_gap,
                Dur(recreate_run),
                self.recreate_every
            )));
        }
        let per_host = desktops_u.div_ceil(self.hosts.max(1) as u64);
        let patch_run = self.hosts as u64
            * (2 * per_host * self.migration_gap.ms() + self.reboot.ms() + self.migration_gap.ms());
        if self.patch_every.ms() > 0 && self.hosts > 1 && patch_run >= self.patch_every.ms() {
            return Err(bad(format!(
                "draining, rebooting and failing back {} hosts takes about {}, not less than patch_every = {}: \
                 lower migration_gap or reboot, or raise patch_every",
                self.hosts,
                Dur(patch_run),
                self.patch_every
            )));
        }

        let estimate = self.event_estimate();
        if estimate > 50_000_000.0 {
            return Err(bad(format!(
                "these parameters would generate about {estimate:.0} events (at most 50,000,000): \
                 lower desktops, duration or the rates"
            )));
        }
        Ok(Checked {
            params: self.clone(),
            hosts,
            remedy,
            blocks,
            strategies,
        })
    }

    /// The strategies to run, validated, in the order given.
    fn strategy_list(&self) -> Result<Vec<Strategy>, ParamError> {
        if self.strategies.is_empty() {
            return Ok(Strategy::ALL.to_vec());
        }
        let mut out = Vec::new();
        for s in &self.strategies {
            let st = Strategy::parse(s.trim()).map_err(bad)?;
            if out.contains(&st) {
                return Err(bad(format!("strategy '{s}' is listed twice")));
            }
            out.push(st);
        }
        Ok(out)
    }

    fn ips(&self, n: usize) -> Result<Vec<Ipv4Addr>, ParamError> {
        if self.host_ips.is_empty() {
            return Ok((0..n)
                .map(|i| Ipv4Addr::new(10, 10, 1 + (i / 200) as u8, 11 + (i % 200) as u8))
                .collect());
        }
        if self.host_ips.len() != n {
            return Err(bad(format!(
                "host_ips lists {} addresses for {n} hosts: give one per host, or none for the defaults",
                self.host_ips.len()
            )));
        }
        self.host_ips
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.trim()
                    .parse()
                    .map_err(|_| bad(format!("host_ips[{i}] '{s}' is not an IPv4 address")))
            })
            .collect()
    }

    fn event_estimate(&self) -> f64 {
        let days = self.duration.ms() as f64 / DAY as f64;
        let d = self.desktops as f64;
        let h = self.hosts as f64;
        d * days * (self.logoffs_per_desktop_per_day + 2.0 * self.cold_starts_per_desktop_per_day)
            + h * days
                * (self.balance_migrations_per_host_per_day + 2.0 * self.other_vms_per_host_per_day)
            + d * 4.0
    }
}

/// Extra VMs the blog script creates on node 1 to walk its round-robin cursor around the range.
pub(crate) const BLOG_CHURN: u64 = 255;

/// Host names as a failover cluster shows them: `HV01`, `HV02`, …
pub fn host_name(i: usize, n: usize) -> String {
    let width = n.to_string().len().max(2);
    format!("HV{:0width$}", i + 1)
}

/// Distinct addresses covered by the ranges (shared ranges count once).
fn union_size(ranges: &[MacRange]) -> u64 {
    let mut sorted: Vec<(u64, u64)> = ranges
        .iter()
        .map(|r| (r.first().to_u64(), r.last().to_u64()))
        .collect();
    sorted.sort_unstable();
    let mut total = 0;
    let mut cur: Option<(u64, u64)> = None;
    for (a, b) in sorted {
        cur = match cur {
            Some((x, y)) if a <= y.saturating_add(1) => Some((x, y.max(b))),
            Some((x, y)) => {
                total += y - x + 1;
                Some((a, b))
            }
            None => Some((a, b)),
        };
    }
    if let Some((x, y)) = cur {
        total += y - x + 1;
    }
    total
}

/// Merges ranges into sorted, disjoint, non-adjacent runs.
pub(crate) fn merge_ranges(ranges: &[MacRange]) -> Vec<MacRange> {
    let mut sorted: Vec<(u64, u64)> = ranges
        .iter()
        .map(|r| (r.first().to_u64(), r.last().to_u64()))
        .collect();
    sorted.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (a, b) in sorted {
        match out.last_mut() {
            Some((_, y)) if a <= y.saturating_add(1) => *y = (*y).max(b),
            _ => out.push((a, b)),
        }
    }
    out.into_iter()
        .map(|(a, b)| {
            MacRange::new(
                Mac::from_u64(a).expect("in range"),
                Mac::from_u64(b).expect("in range"),
            )
            .expect("merged unicast ranges stay unicast")
        })
        .collect()
}

fn shared_ranges(hosts: &[HostSpec]) -> String {
    let mut seen: Vec<(MacRange, Vec<&str>)> = Vec::new();
    for h in hosts {
        match seen.iter_mut().find(|(r, _)| r.overlaps(&h.range)) {
            Some((_, names)) => names.push(&h.name),
            None => seen.push((h.range, vec![&h.name])),
        }
    }
    let shared: Vec<String> = seen
        .iter()
        .filter(|(_, names)| names.len() > 1)
        .map(|(r, names)| format!("{} share {r}", names.join(" and ")))
        .collect();
    if shared.is_empty() {
        String::new()
    } else {
        format!(" (hosts {})", shared.join("; "))
    }
}

/// A value from the command line: TOML when it parses as TOML, else the text itself.
fn parse_value(v: &str) -> toml::Value {
    let doc = format!("v = {v}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(v.into())),
        Err(_) => toml::Value::String(v.to_string()),
    }
}

/// One host as the run uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostSpec {
    pub name: String,
    pub ip: Ipv4Addr,
    pub range: MacRange,
}

/// Parameters that passed [`Params::check`], with the hosts resolved.
#[derive(Clone, Debug)]
pub struct Checked {
    pub params: Params,
    pub hosts: Vec<HostSpec>,
    pub remedy: MacRange,
    pub blocks: MacRange,
    pub strategies: Vec<Strategy>,
}

impl Checked {
    /// The distinct dynamic ranges of all hosts, merged.
    pub fn host_ranges_merged(&self) -> Vec<MacRange> {
        merge_ranges(&self.hosts.iter().map(|h| h.range).collect::<Vec<_>>())
    }

    /// Whether two hosts share (part of) a dynamic range.
    pub fn shared_ranges(&self) -> bool {
        let merged = union_size(&self.hosts.iter().map(|h| h.range).collect::<Vec<_>>());
        let total: u64 = self.hosts.iter().map(|h| h.range.len()).sum();
        merged < total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print() {
        assert_eq!(Dur::parse("30d").unwrap(), Dur(30 * DAY));
        assert_eq!(Dur::parse("1h30m").unwrap(), Dur(90 * MINUTE));
        assert_eq!(Dur::parse("250ms").unwrap(), Dur(250));
        assert_eq!(Dur::parse("0").unwrap(), Dur(0));
        assert_eq!(Dur::parse("1.5h").unwrap(), Dur(90 * MINUTE));
        assert!(Dur::parse("-5d").unwrap_err().contains("negative"));
        assert!(Dur::parse("5").unwrap_err().contains("unit"));
        assert!(Dur::parse("5y").unwrap_err().contains("unknown unit"));
        assert_eq!(Dur(90 * MINUTE + 5 * SECOND).to_string(), "1h30m5s");
        assert_eq!(Dur(0).to_string(), "0s");
    }

    #[test]
    fn presets_pass_their_own_checks() {
        for s in Scenario::ALL {
            let c = s.params().check().unwrap();
            assert_eq!(c.hosts.len() as i64, s.params().hosts);
        }
    }

    #[test]
    fn layers_apply_in_order_and_typos_are_refused() {
        let p = Params::layered(
            Scenario::Campus,
            Some("hosts = 4\nduration = \"10d\"\n"),
            &[
                ("hosts".into(), "6".into()),
                ("duration".into(), "2d".into()),
            ],
        )
        .unwrap();
        assert_eq!(p.hosts, 6);
        assert_eq!(p.duration, Dur(2 * DAY));
        let e =
            Params::layered(Scenario::Campus, None, &[("hostz".into(), "6".into())]).unwrap_err();
        assert!(e.0.contains("hostz"), "{e}");
        let e = Params::layered(Scenario::Campus, None, &[("duration".into(), "-5d".into())])
            .unwrap_err();
        assert!(e.0.contains("negative"), "{e}");
    }

    #[test]
    fn impossible_parameters_are_refused_with_the_reason() {
        let mut p = Scenario::Campus.params();
        p.hosts = 0;
        assert!(p.check().unwrap_err().0.contains("at least one host"));
        p.hosts = -2;
        assert!(p.check().unwrap_err().0.contains("negative"));
        let mut p = Scenario::Campus.params();
        p.desktops = 5000;
        let e = p.check().unwrap_err().0;
        assert!(e.contains("address only 2048"), "{e}");
        let mut p = Scenario::Campus.params();
        p.hosts = 2;
        p.desktops = 400;
        p.host_ips = vec!["10.0.1.5".into(), "10.1.1.5".into()];
        let e = p.check().unwrap_err().0;
        assert!(e.contains("HV01 and HV02 share"), "{e}");
        let mut p = Scenario::Campus.params();
        p.restart_outage_min = Dur(40 * SECOND);
        assert!(p.check().unwrap_err().0.contains("longer than"));
        let mut p = Scenario::Campus.params();
        p.remedy_range = "00155D010B00-00155D010BFF".into();
        assert!(p.check().unwrap_err().0.contains("overlaps host HV01"));
    }

    #[test]
    fn shared_last_octets_give_one_range() {
        let mut p = Scenario::Campus.params();
        p.hosts = 2;
        p.desktops = 10;
        p.host_ips = vec!["10.0.1.5".into(), "10.1.1.5".into()];
        let c = p.check().unwrap();
        assert_eq!(c.hosts[0].range, c.hosts[1].range);
        assert!(c.shared_ranges());
        assert_eq!(c.host_ranges_merged().len(), 1);
    }
}
