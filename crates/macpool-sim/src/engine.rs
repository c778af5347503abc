//! Runs the workload against each strategy and measures what the network sees.
//!
//! One run per strategy, each with its own cluster, authority, agents and random stream (named
//! after the strategy, so adding a strategy to a run changes no other strategy's numbers). The
//! workload is the same for all. Time is simulated milliseconds from [`EPOCH`]; nothing reads a
//! clock, and the only wall-clock use in the crate is the caller's progress display.
//!
//! Duplicates are measured on the *settled* state after each action and the agents' reaction to
//! it: an agent that turns a rolled-back desktop off before anybody could use the duplicated MAC
//! averted it (counted apart), and paid for it with a forced restart.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use macpool_agent::HvEvent;
use macpool_core::Timestamp;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::agent::Agents;
use crate::authority::SimAuthority;
use crate::cluster::{Cluster, VmKey};
use crate::params::{Checked, DAY, HOUR};
use crate::report::{Report, Series, StrategyResult, Unavailable};
use crate::strategy::Strategy;
use crate::workload::{Action, Workload, generate};

/// Simulated time zero: the seed's date, 2015-10-14T00:00:00Z.
pub const EPOCH: Timestamp = Timestamp(1_444_780_800_000);
/// The failover cluster's name, as agents report it.
pub const CLUSTER: &str = "CL1";

/// How often the progress callback is called, in actions.
const PROGRESS_EVERY: usize = 16_384;

/// FNV-1a, to derive a stable random stream per strategy name.
fn stream_of(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn rng_for(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(stream);
    r
}

/// Runs every requested strategy on `threads` threads (at least one) and collects the report.
/// `progress(strategy index, fraction of simulated time done)` is called now and then from the
/// worker threads.
pub fn simulate(c: &Checked, threads: usize, progress: &(dyn Fn(usize, f64) + Sync)) -> Report {
    let workload = generate(c, &mut rng_for(c.params.seed, 0));
    let mut unavailable = Vec::new();
    let mut runnable = Vec::new();
    for s in &c.strategies {
        match s.available() {
            Ok(()) => runnable.push(*s),
            Err(reason) => unavailable.push(Unavailable {
                strategy: s.name().into(),
                reason,
            }),
        }
    }
    let results: Mutex<Vec<Option<StrategyResult>>> = Mutex::new(vec![None; runnable.len()]);
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, runnable.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&s) = runnable.get(i) else { break };
                    let r = run_strategy(c, &workload, s, &|f| progress(i, f), false)
                        .expect("unchecked runs do not fail");
                    results.lock().expect("never poisoned")[i] = Some(r);
                }
            });
        }
    });
    Report::new(
        c,
        workload.counts.clone(),
        results
            .into_inner()
            .expect("never poisoned")
            .into_iter()
            .map(|r| r.expect("every strategy ran"))
            .collect(),
        unavailable,
    )
}

/// The sample interval of the time series: hourly, coarser for long runs (≤ 721 points).
fn sample_every(duration: u64) -> u64 {
    let hours = duration.div_ceil(HOUR).div_ceil(720).max(1);
    hours * HOUR
}

struct Meter {
    incidents: u64,
    by_cause: BTreeMap<String, u64>,
    averted: u64,
    restarts: u64,
    outage_ms: u64,
    outage_by_day: Vec<u64>,
    excess_ms: u128,
    last: u64,
    failed_starts: u64,
    peak_pool: Option<u64>,
    peak_addresses: u64,
    series: Series,
}

impl Meter {
    fn integrate_to(&mut self, cluster: &Mutex<Cluster>, t: u64) {
        if t > self.last {
            let excess = cluster.lock().expect("never poisoned").net.excess();
            self.excess_ms += u128::from(excess) * u128::from(t - self.last);
            self.last = t;
        }
    }

    fn sample(&mut self, cluster: &Mutex<Cluster>, auth: Option<&SimAuthority>, t: u64) {
        let (dups, addresses) = {
            let c = cluster.lock().expect("never poisoned");
            (c.net.duplicated_macs(), c.net.addresses_in_use())
        };
        let pool = auth.map(SimAuthority::pool_used);
        self.peak_addresses = self.peak_addresses.max(addresses);
        if let Some(p) = pool {
            self.peak_pool = Some(self.peak_pool.unwrap_or(0).max(p));
        }
        let s = &mut self.series;
        s.hours.push(t as f64 / HOUR as f64);
        s.duplicates_total.push(self.incidents);
        s.duplicated_macs.push(dups);
        s.addresses_in_use.push(addresses);
        s.pool_used.push(pool);
    }
}

/// One strategy against the workload, checking the cluster's bookkeeping against a recount and
/// the core's invariants after every action (tests: this is slow).
pub fn run_checked(c: &Checked, strategy: Strategy) -> Result<StrategyResult, String> {
    let workload = generate(c, &mut rng_for(c.params.seed, 0));
    run_strategy(c, &workload, strategy, &|_| {}, true)
}

/// One strategy against the workload; with `check`, invariants after every action.
pub(crate) fn run_strategy(
    c: &Checked,
    w: &Workload,
    strategy: Strategy,
    progress: &dyn Fn(f64),
    check: bool,
) -> Result<StrategyResult, String> {
    run_inspected(c, w, strategy, progress, check, &mut |_| {})
}

/// [`run_strategy`], showing the authority (if the strategy has one) to `inspect` at the end.
pub(crate) fn run_inspected(
    c: &Checked,
    w: &Workload,
    strategy: Strategy,
    progress: &dyn Fn(f64),
    check: bool,
    inspect: &mut dyn FnMut(&SimAuthority),
) -> Result<StrategyResult, String> {
    let setup = strategy.setup();
    let p = &c.params;
    let mut rng = rng_for(p.seed, stream_of(strategy.name()));
    let auth = setup
        .authority
        .then(|| SimAuthority::new(c, setup.delegate, &mut rng));
    let names: Vec<String> = c.hosts.iter().map(|h| h.name.clone()).collect();
    let block = (
        p.block_size as u64,
        (p.block_margin > 0).then_some(p.block_margin as u64),
    );
    let mut agents = Agents::new(
        setup,
        auth.as_ref(),
        &names,
        CLUSTER,
        block,
        p.inventory_interval.ms(),
    );
    agents.check_documents(check);
    let cluster = Mutex::new(Cluster::new(&c.hosts, CLUSTER, agents.active()));
    // No timer at all: the plan's `Wait` (blog-compatible's 5 s) is `HostView::pause`, which
    // completes at once, and anything else that reached for Tokio's clock would panic here
    // instead of making a simulated second wait for a real one.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime starts");
    let end = p.duration.ms();
    let days = end.div_ceil(DAY) as usize;
    let mut m = Meter {
        incidents: 0,
        by_cause: BTreeMap::new(),
        averted: 0,
        restarts: 0,
        outage_ms: 0,
        outage_by_day: vec![0; days.max(1)],
        excess_ms: 0,
        last: 0,
        failed_starts: 0,
        peak_pool: None,
        peak_addresses: 0,
        series: Series::default(),
    };
    let every = sample_every(end);
    let mut next_sample = 0u64;
    let mut slot_vm: Vec<Option<VmKey>> = vec![None; w.slots as usize];
    let mut slot_gen: Vec<u32> = vec![0; w.slots as usize];
    let mut events: Vec<(u32, HvEvent)> = Vec::new();
    let (lo, hi) = (p.restart_outage_min.ms(), p.restart_outage_max.ms());

    let set_clock = |t: u64| {
        let now = Timestamp(EPOCH.0 + t);
        cluster.lock().expect("never poisoned").now = now;
        if let Some(a) = &auth {
            a.set_now(now);
        }
    };

    // Samples and the agents' timed passes (pushes, timers) due up to `t`, in time order; both
    // before an action at the same time (a wait that runs out at `t` ends before an event
    // logged at `t` is read).
    let advance = |t: u64, m: &mut Meter, agents: &mut Agents, next_sample: &mut u64| loop {
        let wake = agents.next_wake().unwrap_or(u64::MAX);
        let due = (*next_sample).min(wake);
        if due > t {
            break;
        }
        m.integrate_to(&cluster, due);
        if *next_sample <= wake {
            m.sample(&cluster, auth.as_ref(), due);
            *next_sample += every;
        } else {
            set_clock(due);
            agents.timed_pass(&rt, &cluster, due);
        }
    };

    // The agents start before anything happens: delegate gives every host its first block.
    set_clock(0);
    agents.start(&rt, &cluster, 0);
    for (i, a) in w.actions.iter().enumerate() {
        advance(a.at, &mut m, &mut agents, &mut next_sample);
        m.integrate_to(&cluster, a.at);
        set_clock(a.at);
        {
            let mut cl = cluster.lock().expect("never poisoned");
            apply(
                &mut cl,
                a.action,
                &mut slot_vm,
                &mut slot_gen,
                &mut m.failed_starts,
            );
        }
        loop {
            cluster
                .lock()
                .expect("never poisoned")
                .take_events(&mut events);
            if events.is_empty() {
                break;
            }
            for (host, ev) in events.drain(..) {
                if agents.on_event(&rt, &cluster, host, &ev, a.at).is_some() {
                    m.restarts += 1;
                    let ms = if hi > lo {
                        rng.random_range(lo..=hi)
                    } else {
                        lo
                    };
                    m.outage_ms += ms;
                    let day = ((a.at / DAY) as usize).min(m.outage_by_day.len() - 1);
                    m.outage_by_day[day] += ms;
                }
            }
        }
        let s = cluster.lock().expect("never poisoned").net.settle();
        m.incidents += s.incidents;
        if s.incidents > 0 {
            *m.by_cause.entry(a.action.cause().into()).or_insert(0) += s.incidents;
        }
        m.averted += s.averted;
        if check {
            let at = format!("after action {i} {:?} at {} ms", a.action, a.at);
            cluster
                .lock()
                .expect("never poisoned")
                .check_invariants()
                .map_err(|e| format!("cluster {at}: {e}"))?;
            if let Some(au) = &auth {
                au.check_invariants()
                    .map_err(|e| format!("authority {at}: {e}"))?;
            }
        }
        if i % PROGRESS_EVERY == 0 {
            progress(a.at as f64 / end as f64);
        }
    }
    advance(end, &mut m, &mut agents, &mut next_sample);
    m.integrate_to(&cluster, end);
    if m.series.hours.last() != Some(&(end as f64 / HOUR as f64)) {
        m.sample(&cluster, auth.as_ref(), end);
    }
    progress(1.0);

    let duplicated_at_end = cluster
        .lock()
        .expect("never poisoned")
        .net
        .duplicated_macs();
    if let Some(a) = &auth {
        inspect(a);
    }
    let renew = p.dhcp_renew.ms().max(1) as u128;
    Ok(StrategyResult {
        strategy: strategy.name().into(),
        description: strategy.describe().into(),
        duplicate_incidents: m.incidents,
        incidents_by_cause: m.by_cause,
        duplicate_minutes: round2(m.excess_ms as f64 / 60_000.0),
        forced_restarts: m.restarts,
        outage_seconds: round2(m.outage_ms as f64 / 1000.0),
        dhcp_conflicts: m.incidents + (m.excess_ms / renew) as u64,
        pool_addresses_consumed: m.peak_pool,
        blocks_claimed: auth.as_ref().map_or(0, SimAuthority::blocks_claimed),
        averted_duplicates: m.averted,
        failed_starts: m.failed_starts,
        duplicated_macs_at_end: duplicated_at_end,
        peak_addresses_in_use: m.peak_addresses,
        outage_seconds_by_day: m
            .outage_by_day
            .iter()
            .map(|ms| round2(*ms as f64 / 1000.0))
            .collect(),
        agent: agents.active().then(|| agents.finish()),
        series: m.series,
    })
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// A desktop's VM id: GUID-shaped, unique per slot and generation.
fn vm_id(slot: u32, generation: u32) -> String {
    format!("{slot:08x}-{generation:04x}-4000-8000-00155d000000")
}

/// RDS provisions a desktop (create, first start, `RDV_ROLLBACK`), or an ordinary VM is created
/// and started.
fn provision(
    c: &mut Cluster,
    slot_vm: &mut [Option<VmKey>],
    slot_gen: &mut [u32],
    (slot, host, desktop): (u32, u32, bool),
    failed_starts: &mut u64,
) {
    let g = slot_gen[slot as usize];
    slot_gen[slot as usize] += 1;
    let name = if desktop {
        format!("RDS-DESK-{:05}", slot + 1)
    } else {
        format!("VM-{slot:05}")
    };
    let k = c.create_vm(vm_id(slot, g), name, host);
    slot_vm[slot as usize] = Some(k);
    if c.start(k).is_err() {
        *failed_starts += 1;
    } else if desktop {
        let cp = format!("{slot:08x}-{g:04x}-4000-9000-00155d000000");
        let name = format!("RDV_ROLLBACK - {}", c.now);
        c.checkpoint(k, cp, name);
    }
}

/// Applies one workload action to the cluster.
fn apply(
    c: &mut Cluster,
    action: Action,
    slot_vm: &mut [Option<VmKey>],
    slot_gen: &mut [u32],
    failed_starts: &mut u64,
) {
    let mut provision = |c: &mut Cluster, slot_vm: &mut [Option<VmKey>], slot, host, desktop| {
        provision(c, slot_vm, slot_gen, (slot, host, desktop), failed_starts)
    };
    match action {
        Action::Provision { slot, host } => provision(c, slot_vm, slot, host, true),
        Action::Recreate { slot, host } => {
            if let Some(k) = slot_vm[slot as usize].take() {
                c.delete(k);
            }
            provision(c, slot_vm, slot, host, true);
        }
        Action::CreateOther { slot, host } => provision(c, slot_vm, slot, host, false),
        Action::Delete { slot } => {
            if let Some(k) = slot_vm[slot as usize].take() {
                c.delete(k);
            }
        }
        Action::Logoff { slot } => {
            if let Some(k) = slot_vm[slot as usize] {
                let v = c.vm(k);
                // only a running desktop has a user to log off
                if v.running && v.checkpoint.is_some() {
                    c.restore(k).expect("a checkpoint exists");
                }
            }
        }
        Action::Migrate { slot, to } => {
            if let Some(k) = slot_vm[slot as usize] {
                debug_assert!(c.hosts[to as usize].vms.len() < u32::MAX as usize);
                c.migrate(k, to);
            }
        }
        Action::Failover { slot, to } => {
            if let Some(k) = slot_vm[slot as usize] {
                let was_running = c.vm(k).running;
                c.turn_off(k);
                c.migrate(k, to);
                if was_running && c.start(k).is_err() {
                    *failed_starts += 1;
                }
            }
        }
        Action::Shutdown { slot } => {
            if let Some(k) = slot_vm[slot as usize] {
                c.turn_off(k);
            }
        }
        Action::Start { slot } => {
            if let Some(k) = slot_vm[slot as usize]
                && !c.vm(k).running
                && c.start(k).is_err()
            {
                *failed_starts += 1;
            }
        }
        // A failed host's VMs leave by Failover actions just after it went down; the network
        // view needs nothing from the markers themselves.
        Action::HostDown { .. } | Action::HostUp { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_differ_per_strategy_and_are_stable() {
        assert_ne!(stream_of("guard"), stream_of("hyperv-default"));
        assert_eq!(stream_of("guard"), stream_of("guard"));
        assert_eq!(sample_every(30 * DAY), HOUR);
        assert_eq!(sample_every(60 * DAY), 2 * HOUR);
    }

    /// The blog run under `strategy`, with the authority as it is at the end.
    fn blog_authority<T>(strategy: Strategy, f: impl FnOnce(&SimAuthority) -> T) -> T {
        let c = crate::Scenario::Blog.params().check().unwrap();
        let w = generate(&c, &mut rng_for(c.params.seed, 0));
        let mut f = Some(f);
        let mut out = None;
        run_inspected(&c, &w, strategy, &|_| {}, true, &mut |a| {
            out = Some((f.take().unwrap())(a));
        })
        .unwrap();
        out.expect("the strategy has an authority")
    }

    #[test]
    fn the_authority_learns_the_hosts_macs_from_inventories_only() {
        let c = crate::Scenario::Blog.params().check().unwrap();
        // The desktop's first MAC: node 1's first address; node 1 gives it to the new VM
        // (slot 1 + BLOG_CHURN) after wrapping around.
        let original = c.hosts[0].range.first();
        let desktop = vm_id(0, 0);
        let newcomer = vm_id(1 + crate::params::BLOG_CHURN as u32, 0);
        let node1 = c.hosts[0].name.clone();
        let (leases, status) =
            blog_authority(Strategy::Guard, |a| (a.leases(), a.mac_status(original)));
        // Only guard's fresh static MAC for the rolled-back desktop is leased: nothing
        // registered the MACs Hyper-V handed out.
        assert_eq!(leases.len(), 1, "{leases:?}");
        assert_eq!(leases[0].owner.vm_id, desktop);
        assert_eq!(leases[0].pool.as_str(), crate::authority::REMEDY_POOL);
        // What guard saw about the original MAC came from node 1's inventory (the new VM,
        // live) and node 2's (the desktop's checkpoint, which also placed its hold).
        assert!(status.leases.is_empty(), "{status:?}");
        assert!(
            status
                .seen
                .iter()
                .any(|s| s.vm_id == newcomer && s.host == node1 && s.checkpoint.is_none()),
            "{status:?}"
        );
        assert!(
            status
                .seen
                .iter()
                .any(|s| s.vm_id == desktop && s.checkpoint.is_some()),
            "{status:?}"
        );
        assert!(
            status.holds.iter().all(|h| h.vm_id == desktop),
            "{status:?}"
        );
        for s in [Strategy::Delegate, Strategy::DelegateGuard] {
            let leases = blog_authority(s, |a| a.leases());
            assert!(leases.is_empty(), "{s}: {leases:?}");
        }
    }
}
