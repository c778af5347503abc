//! The host agents of a run: the real decision logic and the real delegation, driven the way the
//! real agent's service loop ([`macpool_agent::agent::run`]) drives them, on the simulated clock.
//! The agents tell the authority about the hosts only through whole inventories, as the real
//! agent does; nothing here registers a MAC, places a hold or releases a lease.
//!
//! # The loop, pass by pass
//!
//! `run` passes through its loop once per hypervisor event, and once whenever its wait for an
//! event (`poll`, 1 s) runs out without one. The simulated agent of each host makes the same
//! passes at the same simulated times, and on every pass does what `run` does, in its order:
//!
//! 1. **An event** wants an inventory push `inventory_debounce` (0.5 s) later — unless one is due
//!    earlier already: the report queue keeps the earlier time (`InventoryQueue::want`), so the
//!    first event of a burst sets the time and later ones do not postpone it.
//! 2. **restored** (18596): [`decide::handle_event`] (guard, blog-compatible), unchanged; its plan
//!    runs against the simulated host.
//! 3. **created / started**: [`delegate::tick`] (delegate): each may have taken an address from
//!    the host's range.
//! 4. **The timer**: once `inventory_every` (60 s, the agent's `--inventory-every` default; the
//!    `inventory_interval` parameter) has passed since it last fired, it wants a push now and
//!    runs a delegate tick.
//! 5. **A push due by now** is sent: the host's whole inventory, `PUT /hosts/{host}/inventory`,
//!    with a generation above every earlier one (the agent uses wall-clock milliseconds; here the
//!    simulated ones).
//!
//! So an event's decision is made before the push that event asked for — at the earliest at the
//! first pass half a second later, in practice when the wait after the last event of a burst
//! runs out (a second after it). Guard's answer (`GET /macs/{mac}`) shows what the hosts' latest
//! *pushed* inventories show (`seen`, and the checkpoint holds those placed): a VM that got its
//! MAC less than a push ago is not in it yet, on the real agent as here. Such restores are
//! counted ([`AgentStats::unseen_conflicts`]). The timing values are read from the real agent's
//! [`AgentConfig::new`] ([`LoopTiming::of_real_agent`]), not restated.
//!
//! Passes whose only effect would be another wait (a poll that runs out with nothing due) are
//! not simulated one by one: the next pass that does something is computed from when the wait
//! began, in whole polls, which is exactly when `run` would make it.
//!
//! blog-compatible has no authority in the simulated deployment: its agents only decide.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use macpool_agent::agent::AgentConfig;
use macpool_agent::decide::{self, DecideConfig, Outcome, Remedy, Step};
use macpool_agent::delegate::{self, DelegateConfig, DelegateOutcome};
use macpool_agent::{EventKind, HvEvent};
use macpool_core::Mac;
use macpool_core::inventory::HostInventory;
use serde::Serialize;

use crate::authority::{BLOCK_POOL, REMEDY_POOL, SimAuthority};
use crate::cluster::{Cluster, VmKey};
use crate::hv::HostView;
use crate::strategy::Setup;

/// What the agents decided, by outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AgentStats {
    /// Restore events handed to the decision logic.
    pub decisions: u64,
    /// Nothing to do (no conflict, not a rollback).
    pub ignored: u64,
    /// Plans executed to the end.
    pub remediated: u64,
    /// The agent could not explain the state and changed nothing.
    pub unknown: u64,
    /// No answer from the authority (never happens in-process; kept for completeness).
    pub deferred: u64,
    /// A step of a plan failed.
    pub failed: u64,
    /// guard: restores it found no conflict for although another powered-on VM had the MAC —
    /// that VM's host had not pushed an inventory showing it yet (the debounce, or a live
    /// migration that only the next timer push reports).
    pub unseen_conflicts: u64,
    /// Inventories the agents sent.
    pub inventory_pushes: u64,
    /// Of those, resends of the host's last document that the simulator did not hand to the
    /// core because the core would have changed nothing that matters (see
    /// `SimAuthority::resend_is_void`; the property tests hand every one to the core and
    /// check that).
    pub inventory_unchanged: u64,
    /// delegate: ticks that applied a block to the host (first block or a rotation).
    pub blocks_applied: u64,
    /// delegate: ticks that failed (e.g. no free block left in the pool).
    pub delegate_failures: u64,
    /// Notes the authority returned with inventories (e.g. a checkpoint MAC not held because
    /// another VM's checkpoint holds it: a latent conflict; noted again at every push while it
    /// lasts).
    pub inventory_notes: u64,
    /// Calls the authority refused, by problem type.
    pub refusals: BTreeMap<String, u64>,
    /// Why decisions ended `unknown` or `failed` (first words of the reason), for the report.
    pub unexplained: BTreeMap<String, u64>,
}

/// One forced restart the agent caused (for the outage accounting).
pub(crate) struct Restart;

/// The real agent's loop timing, in simulated milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoopTiming {
    /// How long one wait for an event lasts before the loop passes anyway (`AgentConfig::poll`).
    pub poll: u64,
    /// How long after an event its inventory push is due (`AgentConfig::inventory_debounce`).
    pub debounce: u64,
    /// The periodic push and delegate tick (`AgentConfig::inventory_every`).
    pub every: u64,
}

impl LoopTiming {
    /// The values `macpool agent` runs with: [`AgentConfig::new`]'s (the CLI changes only
    /// `inventory_every`, whose default is the same 60 s).
    pub fn of_real_agent() -> LoopTiming {
        let cfg = AgentConfig::new(None, "sim", "sim.bookmark");
        let ms = |d: std::time::Duration| d.as_millis() as u64;
        LoopTiming {
            poll: ms(cfg.poll),
            debounce: ms(cfg.inventory_debounce),
            every: ms(cfg.inventory_every),
        }
    }
}

/// One host's agent loop: the state `macpool_agent::agent::run` keeps between passes.
struct HostLoop {
    /// When the loop last passed: its current wait for an event began then.
    last_pass: u64,
    /// When the inventory push is due (the report queue's `due`).
    due: Option<u64>,
    /// When the timer fires next.
    next_timer: u64,
    /// The generation of the last inventory sent.
    generation: u64,
    /// The pass scheduled in [`Agents::wakes`], if any.
    wake: Option<u64>,
    /// The document the authority last got, handed back by it, with the VM key and stamp
    /// behind each of its VMs: brought up to date for the next push.
    doc: Option<(HostInventory, Vec<(VmKey, u64)>)>,
    /// The host's stamp when `doc` was last brought up to date.
    fresh: u64,
}

impl HostLoop {
    /// `InventoryQueue::want`: a push at `at` unless one is due earlier already.
    fn want(&mut self, at: u64) {
        self.due = Some(self.due.map_or(at, |d| d.min(at)));
    }
}

pub(crate) struct Agents<'a> {
    setup: Setup,
    auth: Option<&'a SimAuthority>,
    configs: Vec<DecideConfig>,
    delegate: Option<Vec<DelegateConfig>>,
    timing: LoopTiming,
    loops: Vec<HostLoop>,
    /// Timed passes to come, as (time, host): the next one is the first.
    wakes: BTreeSet<(u64, u32)>,
    /// Check every pushed document against one built from scratch (tests).
    check: bool,
    pub stats: AgentStats,
}

/// The gist of a reason, for counting: its first words, with MACs, ids and numbers (anything
/// with a digit) replaced by `…` so that equal reasons count together.
fn first_words(s: &str) -> String {
    s.split_whitespace()
        .take(8)
        .map(|w| {
            if w.chars().any(|c| c.is_ascii_digit()) {
                "…"
            } else {
                w
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl<'a> Agents<'a> {
    /// `block`: delegate's block size and rotation margin (`None`: the agent's default).
    /// `inventory_every`: the timer (the real agent's default unless a run overrides it).
    pub fn new(
        setup: Setup,
        auth: Option<&'a SimAuthority>,
        hosts: &[String],
        cluster: &str,
        block: (u64, Option<u64>),
        inventory_every: u64,
    ) -> Agents<'a> {
        let configs = hosts
            .iter()
            .map(|h| {
                let strategy = setup.decide.unwrap_or(decide::Strategy::Observe);
                let remedy = Remedy::FreshStatic {
                    pool: REMEDY_POOL.into(),
                };
                let mut cfg = DecideConfig::new(strategy, h.clone(), remedy);
                cfg.cluster = Some(cluster.into());
                cfg
            })
            .collect();
        let delegate = (setup.delegate && auth.is_some()).then(|| {
            hosts
                .iter()
                .map(|h| {
                    let mut d = DelegateConfig::new(h.clone(), BLOCK_POOL);
                    d.block_size = Some(block.0);
                    d.margin = block.1;
                    d
                })
                .collect()
        });
        let timing = LoopTiming {
            every: inventory_every.max(1),
            ..LoopTiming::of_real_agent()
        };
        Agents {
            setup,
            auth,
            configs,
            delegate,
            timing,
            loops: hosts
                .iter()
                .map(|_| HostLoop {
                    last_pass: 0,
                    due: None,
                    next_timer: 0,
                    generation: 0,
                    wake: None,
                    doc: None,
                    fresh: 0,
                })
                .collect(),
            wakes: BTreeSet::new(),
            check: false,
            stats: AgentStats::default(),
        }
    }

    /// Compares every pushed document with one built from scratch (slow; tests).
    pub fn check_documents(&mut self, on: bool) {
        self.check = on;
    }

    pub fn active(&self) -> bool {
        self.setup.decide.is_some() || self.auth.is_some()
    }

    /// The agents start at `now`: delegate gives each host its first block, the first push is
    /// due at once (it goes out at the first pass) and the timer starts.
    pub fn start(&mut self, rt: &tokio::runtime::Runtime, cluster: &Mutex<Cluster>, now: u64) {
        if self.auth.is_none() {
            return;
        }
        for h in 0..self.loops.len() {
            let lp = &mut self.loops[h];
            lp.last_pass = now;
            lp.due = Some(now);
            lp.next_timer = now + self.timing.every;
            self.tick(rt, cluster, h as u32);
            self.schedule(h as u32);
        }
    }

    /// When the next timed pass of any agent is due.
    pub fn next_wake(&self) -> Option<u64> {
        self.wakes.first().map(|w| w.0)
    }

    /// Makes the next timed pass (its wait for an event ran out) at its time, `now`.
    pub fn timed_pass(&mut self, rt: &tokio::runtime::Runtime, cluster: &Mutex<Cluster>, now: u64) {
        let Some((at, host)) = self.wakes.pop_first() else {
            return;
        };
        debug_assert_eq!(at, now);
        self.loops[host as usize].wake = None;
        self.end_pass(rt, cluster, host, now);
    }

    /// Reschedules the host's next timed pass: the first time its wait, begun at the last pass
    /// and renewed every `poll`, runs out at or after the push or timer due.
    fn schedule(&mut self, host: u32) {
        let lp = &mut self.loops[host as usize];
        if let Some(w) = lp.wake.take() {
            self.wakes.remove(&(w, host));
        }
        if self.auth.is_none() {
            return;
        }
        let target = lp.due.map_or(lp.next_timer, |d| d.min(lp.next_timer));
        let poll = self.timing.poll.max(1);
        let polls = target.saturating_sub(lp.last_pass).div_ceil(poll).max(1);
        let at = lp.last_pass + polls * poll;
        lp.wake = Some(at);
        self.wakes.insert((at, host));
    }

    /// What every pass does after the events: the timer, the push if due; then the next wait.
    fn end_pass(
        &mut self,
        rt: &tokio::runtime::Runtime,
        cluster: &Mutex<Cluster>,
        host: u32,
        now: u64,
    ) {
        if self.auth.is_some() {
            let every = self.timing.every;
            let lp = &mut self.loops[host as usize];
            if now >= lp.next_timer {
                lp.next_timer = now + every;
                lp.want(now);
                self.tick(rt, cluster, host);
            }
            let lp = &mut self.loops[host as usize];
            if lp.due.is_some_and(|d| d <= now) {
                lp.due = None;
                self.push(cluster, host, now);
            }
        }
        self.loops[host as usize].last_pass = now;
        self.schedule(host);
    }

    /// One pass with an event, at `now`; returns the forced restart its decision caused.
    pub fn on_event(
        &mut self,
        rt: &tokio::runtime::Runtime,
        cluster: &Mutex<Cluster>,
        host: u32,
        ev: &HvEvent,
        now: u64,
    ) -> Option<Restart> {
        if self.auth.is_some() {
            let debounce = self.timing.debounce;
            self.loops[host as usize].want(now + debounce);
        }
        let restart = match ev.kind {
            EventKind::Restored if self.setup.decide.is_some() => {
                self.decide(rt, cluster, host, ev)
            }
            EventKind::Created | EventKind::Started => {
                self.tick(rt, cluster, host);
                None
            }
            _ => None,
        };
        self.end_pass(rt, cluster, host, now);
        restart
    }

    /// Sends the host's whole inventory, as it is now.
    ///
    /// The agent always sends; the simulator hands the document to the core unless it is the
    /// same as the host's last one *and* [`SimAuthority::resend_is_void`] shows that the core
    /// would change nothing that matters (that push is counted, with the notes it would
    /// return). Most pushes are such resends: the timer's, and a rollback's (the desktop comes
    /// back running with the MAC it had). `check`: every push is handed to the core, and the
    /// ones judged void are checked to change nothing.
    fn push(&mut self, cluster: &Mutex<Cluster>, host: u32, now: u64) {
        let Some(auth) = self.auth else { return };
        let lp = &mut self.loops[host as usize];
        lp.generation = (crate::engine::EPOCH.0 + now).max(lp.generation + 1);
        let c = cluster.lock().expect("never poisoned");
        let stamp = c.host_stamp(host);
        let (doc, shown, changed) = match lp.doc.take() {
            Some((d, s)) if lp.fresh == stamp => (d, s, false),
            Some((mut d, mut s)) => {
                let changed = c.refresh_inventory(host, &mut d, &mut s);
                (d, s, changed)
            }
            None => {
                let (d, s) = c.inventory_shown(host);
                (d, s, true)
            }
        };
        lp.fresh = stamp;
        if self.check {
            assert!(
                doc == c.inventory(host),
                "the patched inventory of host {host} differs from a fresh one"
            );
        }
        drop(c);
        let void = !changed && auth.resend_is_void(host);
        if void && !self.check {
            auth.resend_unchanged(host);
            lp.doc = Some((doc, shown));
            return;
        }
        lp.doc = auth
            .push_inventory(host, doc, lp.generation, void)
            .map(|d| (d, shown));
    }

    fn decide(
        &mut self,
        rt: &tokio::runtime::Runtime,
        cluster: &Mutex<Cluster>,
        host: u32,
        ev: &HvEvent,
    ) -> Option<Restart> {
        let hv = HostView::new(cluster, host);
        let cfg = &self.configs[host as usize];
        self.stats.decisions += 1;
        let d = match self.auth {
            Some(auth) => rt.block_on(decide::handle_event(&hv, &auth.view(host), cfg, ev)),
            None => rt.block_on(decide::handle_event(&hv, &NoAuthority, cfg, ev)),
        };
        let turned_off = |plan: &decide::Plan, upto: usize| {
            plan.steps
                .iter()
                .take(upto)
                .any(|s| matches!(s, Step::TurnOff { .. }))
        };
        match d.outcome {
            Outcome::Ignored { .. } | Outcome::Planned { .. } => {
                self.stats.ignored += 1;
                if self.auth.is_some() {
                    let c = cluster.lock().expect("never poisoned");
                    let live = c.key_of(&ev.vm_id).map(|k| c.vm(k));
                    if live.is_some_and(|v| v.running && c.net.powered_on(v.nic.mac) >= 2) {
                        self.stats.unseen_conflicts += 1;
                    }
                }
                None
            }
            Outcome::Deferred { .. } => {
                self.stats.deferred += 1;
                None
            }
            Outcome::Unknown { reason } => {
                self.stats.unknown += 1;
                *self
                    .stats
                    .unexplained
                    .entry(first_words(&reason))
                    .or_insert(0) += 1;
                None
            }
            Outcome::Done { plan, .. } => {
                self.stats.remediated += 1;
                turned_off(&plan, plan.steps.len()).then_some(Restart)
            }
            Outcome::Failed {
                plan, step, error, ..
            } => {
                self.stats.failed += 1;
                *self
                    .stats
                    .unexplained
                    .entry(first_words(&error))
                    .or_insert(0) += 1;
                turned_off(&plan, step).then_some(Restart)
            }
        }
    }

    /// delegate: one [`delegate::tick`] for the host.
    fn tick(&mut self, rt: &tokio::runtime::Runtime, cluster: &Mutex<Cluster>, host: u32) {
        let (Some(auth), Some(cfgs)) = (self.auth, &self.delegate) else {
            return;
        };
        let hv = HostView::new(cluster, host);
        let out = rt.block_on(delegate::tick(&hv, &auth.view(host), &cfgs[host as usize]));
        match out {
            DelegateOutcome::Applied { .. } => self.stats.blocks_applied += 1,
            DelegateOutcome::Failed { reason } | DelegateOutcome::Deferred { reason } => {
                self.stats.delegate_failures += 1;
                *self
                    .stats
                    .unexplained
                    .entry(first_words(&reason))
                    .or_insert(0) += 1;
            }
            _ => {}
        }
    }

    pub fn finish(mut self) -> AgentStats {
        if let Some(auth) = self.auth {
            self.stats.refusals = auth.refusals();
            let (pushes, unchanged, notes) = auth.inventory_stats();
            self.stats.inventory_pushes = pushes;
            self.stats.inventory_unchanged = unchanged;
            self.stats.inventory_notes = notes;
        }
        self.stats
    }
}

/// blog-compatible decides without an authority; this answers nothing if it ever asked.
struct NoAuthority;

impl decide::Authority for NoAuthority {
    fn mac(
        &self,
        _mac: Mac,
    ) -> impl std::future::Future<
        Output = Result<Option<macpool_api::dto::MacInfo>, decide::AuthorityError>,
    > + Send {
        std::future::ready(Err(decide::AuthorityError::Unreachable(
            "no authority under this strategy".into(),
        )))
    }

    fn allocate(
        &self,
        _body: macpool_api::dto::AllocateBody,
    ) -> impl std::future::Future<Output = Result<Mac, decide::AuthorityError>> + Send {
        std::future::ready(Err(decide::AuthorityError::Unreachable(
            "no authority under this strategy".into(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;
    use crate::engine::{CLUSTER, EPOCH};
    use crate::strategy::Strategy;
    use macpool_core::Timestamp;

    /// The blog's two hosts, an authority, and guard's agents started at 0.
    struct Rig {
        c: crate::Checked,
        rt: tokio::runtime::Runtime,
        cluster: Mutex<Cluster>,
        auth: SimAuthority,
    }

    impl Rig {
        fn new() -> Rig {
            let c = crate::Scenario::Blog.params().check().unwrap();
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
            let auth = SimAuthority::new(&c, false, &mut rng);
            let cluster = Mutex::new(Cluster::new(&c.hosts, CLUSTER, true));
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            Rig {
                c,
                rt,
                cluster,
                auth,
            }
        }

        fn agents(&self) -> Agents<'_> {
            let hosts: Vec<String> = self.c.hosts.iter().map(|h| h.name.clone()).collect();
            let every = LoopTiming::of_real_agent().every;
            let mut a = Agents::new(
                Strategy::Guard.setup(),
                Some(&self.auth),
                &hosts,
                CLUSTER,
                (256, None),
                every,
            );
            a.check_documents(true);
            a
        }

        fn clock(&self, t: u64) {
            self.cluster.lock().unwrap().now = Timestamp(EPOCH.0 + t);
            self.auth.set_now(Timestamp(EPOCH.0 + t));
        }

        /// Every timed pass up to `t`, as the engine makes them.
        fn until(&self, agents: &mut Agents, t: u64) {
            while let Some(w) = agents.next_wake().filter(|&w| w <= t) {
                self.clock(w);
                agents.timed_pass(&self.rt, &self.cluster, w);
            }
            self.clock(t);
        }

        /// Creates a VM on `host` at `t` and hands its event to the agents.
        fn create(&self, agents: &mut Agents, host: u32, n: u32, t: u64) {
            self.until(agents, t);
            let mut events = Vec::new();
            {
                let mut c = self.cluster.lock().unwrap();
                c.create_vm(
                    format!("{n:08x}-0000-4000-8000-00155d000000"),
                    format!("VM-{n}"),
                    host,
                );
                c.take_events(&mut events);
            }
            for (h, ev) in events {
                agents.on_event(&self.rt, &self.cluster, h, &ev, t);
            }
        }

        fn pushes(&self) -> (u64, u64) {
            let (pushes, unchanged, _) = self.auth.inventory_stats();
            (pushes, unchanged)
        }

        /// The generation the authority has for `host` (the simulated ms of its push) and the
        /// number of VMs that inventory lists.
        fn stored(&self, host: u32) -> (u64, usize) {
            let (g, inv) = self
                .auth
                .inventory(&self.c.hosts[host as usize].name)
                .unwrap();
            (g - EPOCH.0, inv.vms().len())
        }
    }

    #[test]
    fn the_timing_is_the_real_agents() {
        let t = LoopTiming::of_real_agent();
        assert_eq!((t.poll, t.debounce, t.every), (1000, 500, 60_000));
    }

    #[test]
    fn a_burst_of_events_on_one_host_gives_one_push_after_the_debounce() {
        let rig = Rig::new();
        let mut agents = rig.agents();
        agents.start(&rig.rt, &rig.cluster, 0);
        // The first push of each host goes out at the loop's first pass: its first wait for an
        // event runs out at 1 s.
        rig.until(&mut agents, 10_000);
        assert_eq!(rig.pushes(), (2, 0));
        assert_eq!(rig.stored(0), (1_000, 0));
        // Five VMs created on host 0 within 0.4 s: five events, one push. The first event
        // wants it at 20.5 s; it goes out when the wait after the last event runs out.
        for i in 0..5 {
            rig.create(&mut agents, 0, i, 20_000 + 100 * u64::from(i));
        }
        rig.until(&mut agents, 21_399);
        assert_eq!(
            rig.pushes(),
            (2, 0),
            "not before the wait after the last event ends"
        );
        rig.until(&mut agents, 30_000);
        assert_eq!(rig.pushes(), (3, 0));
        assert_eq!(
            rig.stored(0),
            (21_400, 5),
            "one push, after the burst, with all five VMs"
        );
        assert_eq!(rig.stored(1), (1_000, 0), "the other host did not push");
        // The timer: every host pushes once a minute, changed or not (here: unchanged, so the
        // simulator counts them without handing them to the core).
        rig.until(&mut agents, 61_000);
        assert_eq!(rig.pushes(), (5, 2));
        // Another event later: its own push, the document changed.
        rig.create(&mut agents, 1, 9, 70_000);
        rig.until(&mut agents, 72_000);
        assert_eq!(rig.pushes(), (6, 2));
        assert_eq!(rig.stored(1), (71_000, 1));
    }

    #[test]
    fn an_event_after_the_debounce_is_pushed_by_its_own_pass() {
        let rig = Rig::new();
        let mut agents = rig.agents();
        agents.start(&rig.rt, &rig.cluster, 0);
        rig.until(&mut agents, 10_000);
        rig.create(&mut agents, 0, 0, 20_000);
        rig.create(&mut agents, 0, 1, 20_700);
        // The second event's pass (20.7 s) is past the time the first one wanted (20.5 s):
        // after deciding, that pass pushes, with both VMs. Its own wish (21.2 s) was folded
        // into the earlier time (the queue keeps the earlier one), so nothing follows.
        assert_eq!(rig.stored(0), (20_700, 2));
        rig.until(&mut agents, 30_000);
        assert_eq!(rig.pushes(), (3, 0));
    }
}
