//! The host agents of a run: the real decision logic, plus the calls an agent makes to keep the
//! authority informed.
//!
//! On every hypervisor event the agent of the host that logged it:
//! - **restored** (18596): hands the event to [`decide::handle_event`] (guard or
//!   blog-compatible), unchanged; whatever plan it executes runs against the simulated host.
//! - **started / restored**: *registers* the VM's live MAC when it lies in the hosts' dynamic
//!   ranges — `POST /leases` with that `mac` for the VM's adapter — and releases the MAC it had
//!   registered before. **The real agent does not do this**: it pushes the host's inventory
//!   shortly after every event, and the authority answers guard with every VM those inventories
//!   show (`seen`). Pushing per event costs too much at `large` scale today, so the simulator
//!   stands in with registrations between its periodic inventories (an open item).
//! - **restored, guard**: when the authority's answer for the restored MAC shows a conflict
//!   (`decide::conflict_of`, the decision's own test), the VM's registration is released
//!   *before* the decision: guard's fresh allocation for the same adapter would otherwise be
//!   refused as `owner-conflict` (one lease per VM adapter across all pools). It is redone
//!   after the decision.
//! - **started**: places the checkpoint hold of the VM's `RDV_ROLLBACK` checkpoint (RDS takes
//!   it right after the first start) — `POST /holds`, the hold an inventory would place.
//! - **deleted**: releases what it registered and guard's static lease of the VM, and removes
//!   the checkpoint hold.
//! - A VM that has guard's static lease is not registered again when a rollback brings its
//!   dynamic checkpoint MAC back: it keeps the static lease for the next conflict (the same MAC
//!   comes back instead of a fresh one), and the authority knows the checkpoint MAC through the
//!   checkpoint's hold.
//!
//! **delegate** runs the agent's own [`delegate::tick`] — at start, after every created and
//! started event on the host (each may have taken an address from its range) and on the agent's
//! timer, as `macpool agent` does — against the simulated host and the authority's blocks.
//! MACs inside a block are explained by the block: the core refuses holds and registrations
//! there, so the agent places none.
//!
//! Every `inventory_interval`, each agent whose host changed sends the whole inventory
//! (`PUT /hosts/{host}/inventory`): it binds the registered leases, moves them to the host a VM
//! migrated to, and reconciles checkpoint holds. The event-driven calls above keep the authority
//! current in between, so the interval can be long.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use macpool_agent::decide::{self, DecideConfig, Outcome, Remedy, Step};
use macpool_agent::delegate::{self, DelegateConfig, DelegateOutcome};
use macpool_agent::{EventKind, HvEvent, Hypervisor, MacSetting};
use macpool_core::Mac;
use serde::Serialize;

use crate::authority::{BLOCK_POOL, REMEDY_POOL, SimAuthority};
use crate::cluster::Cluster;
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
    /// MACs registered with the authority.
    pub registrations: u64,
    /// Inventories sent.
    pub inventory_pushes: u64,
    /// delegate: ticks that applied a block to the host (first block or a rotation).
    pub blocks_applied: u64,
    /// delegate: ticks that failed (e.g. no free block left in the pool).
    pub delegate_failures: u64,
    /// Notes the authority returned with inventories (e.g. a checkpoint MAC not held because
    /// another VM leases it: a latent conflict).
    pub inventory_notes: u64,
    /// Calls the authority refused, by problem type.
    pub refusals: BTreeMap<String, u64>,
    /// Why decisions ended `unknown` or `failed` (first words of the reason), for the report.
    pub unexplained: BTreeMap<String, u64>,
}

/// One forced restart the agent caused (for the outage accounting).
pub(crate) struct Restart;

pub(crate) struct Agents<'a> {
    setup: Setup,
    auth: Option<&'a SimAuthority>,
    configs: Vec<DecideConfig>,
    delegate: Option<Vec<DelegateConfig>>,
    /// vm id → the MAC registered for it in an observed pool.
    registered: HashMap<String, Mac>,
    /// vm id → guard's static MAC for it.
    statics: HashMap<String, Mac>,
    /// vm id → (MAC, checkpoint id) of the checkpoint hold placed for it.
    holds: HashMap<String, (Mac, String)>,
    generation: Vec<u64>,
    dirty: Vec<bool>,
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
    pub fn new(
        setup: Setup,
        auth: Option<&'a SimAuthority>,
        hosts: &[String],
        cluster: &str,
        block: (u64, Option<u64>),
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
        Agents {
            setup,
            auth,
            configs,
            delegate,
            registered: HashMap::new(),
            statics: HashMap::new(),
            holds: HashMap::new(),
            generation: vec![0; hosts.len()],
            dirty: vec![false; hosts.len()],
            stats: AgentStats::default(),
        }
    }

    pub fn active(&self) -> bool {
        self.setup.decide.is_some() || self.auth.is_some()
    }

    pub fn mark_dirty(&mut self, host: u32) {
        if self.auth.is_some() {
            self.dirty[host as usize] = true;
        }
    }

    /// Handles one event; returns the forced restarts it caused.
    pub fn on_event(
        &mut self,
        rt: &tokio::runtime::Runtime,
        cluster: &Mutex<Cluster>,
        host: u32,
        ev: &HvEvent,
    ) -> Option<Restart> {
        self.mark_dirty(host);
        match ev.kind {
            EventKind::Created => {
                self.tick(rt, cluster, host);
                None
            }
            EventKind::Stopped => None,
            EventKind::Started => {
                self.register(cluster, host, &ev.vm_id);
                self.hold_checkpoint(cluster, host, &ev.vm_id);
                self.tick(rt, cluster, host);
                None
            }
            EventKind::Deleted => {
                if let Some(auth) = self.auth {
                    if let Some(m) = self.registered.remove(&ev.vm_id) {
                        auth.release(host, &ev.vm_id, m);
                    }
                    if let Some(m) = self.statics.remove(&ev.vm_id) {
                        auth.release(host, &ev.vm_id, m);
                    }
                    if let Some((m, cp)) = self.holds.remove(&ev.vm_id) {
                        auth.unhold(host, &ev.vm_id, m, &cp);
                    }
                }
                None
            }
            EventKind::Restored => {
                let restart = match self.setup.decide {
                    Some(strategy) => {
                        if strategy == decide::Strategy::Guard
                            && let Some(auth) = self.auth
                            && self.registered.contains_key(&ev.vm_id)
                        {
                            let live = {
                                let c = cluster.lock().expect("never poisoned");
                                c.key_of(&ev.vm_id).map(|k| c.vm(k).nic.mac)
                            };
                            let conflict = live.is_some_and(|m| {
                                decide::conflict_of(&auth.mac_info(m), &ev.vm_id).is_some()
                            });
                            if conflict && let Some(m) = self.registered.remove(&ev.vm_id) {
                                auth.release(host, &ev.vm_id, m);
                            }
                        }
                        self.decide(rt, cluster, host, ev)
                    }
                    None => None,
                };
                self.register(cluster, host, &ev.vm_id);
                restart
            }
        }
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
            Outcome::Done { plan, changes, .. } => {
                self.stats.remediated += 1;
                for c in &changes {
                    if c.adapter.checkpoint_id.is_none()
                        && let MacSetting::Static(m) = c.new
                    {
                        self.statics.insert(c.vm_id.clone(), m);
                    }
                }
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

    /// Keeps the authority's record of the VM's live MAC current (see the module docs).
    fn register(&mut self, cluster: &Mutex<Cluster>, host: u32, vm_id: &str) {
        let Some(auth) = self.auth else { return };
        let (mac, name) = {
            let c = cluster.lock().expect("never poisoned");
            let Some(k) = c.key_of(vm_id) else { return };
            let v = c.vm(k);
            if self.registered.get(vm_id) == Some(&v.nic.mac) {
                return;
            }
            (v.nic.mac, v.name.clone())
        };
        if let Some(old) = self.registered.remove(vm_id) {
            auth.release(host, vm_id, old);
        }
        // A VM guard gave a static lease keeps it (so a later conflict gets the same MAC back,
        // not a fresh one): registering its dynamic MAC for the same adapter would be refused as
        // `owner-conflict`. Its checkpoint's MAC stays known through the checkpoint hold.
        if mac.is_zero() || self.statics.contains_key(vm_id) || !auth.is_observed(mac) {
            return;
        }
        if auth.register(host, vm_id, &name, mac) {
            self.stats.registrations += 1;
            self.registered.insert(vm_id.to_string(), mac);
        }
    }

    /// Holds the MAC frozen in the VM's checkpoint, once per checkpoint.
    fn hold_checkpoint(&mut self, cluster: &Mutex<Cluster>, host: u32, vm_id: &str) {
        let Some(auth) = self.auth else { return };
        let frozen = {
            let c = cluster.lock().expect("never poisoned");
            c.key_of(vm_id).and_then(|k| {
                c.vm(k)
                    .checkpoint
                    .as_ref()
                    .map(|f| (f.nic.mac, f.id.clone()))
            })
        };
        let Some((mac, cp)) = frozen else { return };
        if mac.is_zero()
            || self
                .holds
                .get(vm_id)
                .is_some_and(|h| h.0 == mac && h.1 == cp)
            || auth.in_block(mac)
        {
            return;
        }
        if let Some((m, old)) = self.holds.remove(vm_id) {
            auth.unhold(host, vm_id, m, &old);
        }
        if auth.hold(host, vm_id, mac, &cp) {
            self.holds.insert(vm_id.to_string(), (mac, cp));
        }
    }

    /// delegate: one [`delegate::tick`] for the host.
    pub fn tick(&mut self, rt: &tokio::runtime::Runtime, cluster: &Mutex<Cluster>, host: u32) {
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

    /// delegate: a tick for every host (at start and on the agents' timer).
    pub fn tick_all(&mut self, rt: &tokio::runtime::Runtime, cluster: &Mutex<Cluster>) {
        for h in 0..self.dirty.len() {
            self.tick(rt, cluster, h as u32);
        }
    }

    /// Sends the inventory of every host that changed since its last one.
    pub fn push_inventories(&mut self, rt: &tokio::runtime::Runtime, cluster: &Mutex<Cluster>) {
        let Some(auth) = self.auth else { return };
        for h in 0..self.dirty.len() {
            if !std::mem::take(&mut self.dirty[h]) {
                continue;
            }
            let hv = HostView::new(cluster, h as u32);
            let inv = rt
                .block_on(hv.inventory())
                .expect("the simulated host always answers");
            self.generation[h] += 1;
            auth.push_inventory(h as u32, inv, self.generation[h]);
        }
    }

    pub fn finish(mut self) -> AgentStats {
        if let Some(auth) = self.auth {
            self.stats.refusals = auth.refusals();
            let (pushes, notes) = auth.inventory_stats();
            self.stats.inventory_pushes = pushes;
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
