//! The authority in the loop: the real core state machine ([`macpool_core::authority::Authority`])
//! in memory, with the simulation clock in every [`Context`]. No store: the core decides, a
//! store would only persist its `Change`s, which the simulator drops.
//!
//! [`AuthorityView`] is the agent's [`decide::Authority`] for one host. It answers exactly what
//! the HTTP API answers (`GET /api/v1/macs/{mac}` is `convert::mac_status` of the core's
//! `mac_status`; `POST /api/v1/leases` is the core's `allocate` of the body the server would
//! build), so the decision logic sees the same DTOs it sees in production.
//!
//! Pools the simulated deployment has:
//! - `hyperv-dynamic` (`-2`, `-3`, … when the hosts' ranges need more than 64 ranges): the
//!   hosts' own dynamic ranges, so that the agents can register the MACs Hyper-V hands out
//!   (see [`crate::agent`]). Duplicates `allow-and-flag` and no cooldown: Hyper-V, not the
//!   authority, decides when these addresses are reused, and the authority must record every
//!   use — a MAC another VM's checkpoint holds included — or guard would not see it.
//! - `rds-static`: `remedy_range`, where guard's fresh static MACs come from (next-fit,
//!   `deny`, `remedy_cooldown`).
//! - `host-blocks` (delegate only): `block_range`, where the hosts' blocks come from
//!   (`block_cooldown` before a drained block returns).

use std::collections::BTreeMap;
use std::future::{Future, ready};
use std::sync::Mutex;
use std::time::Duration;

use macpool_agent::decide::{self, AuthorityError as DecideError};
use macpool_api::convert;
use macpool_api::dto::{AllocateBody, BlockInfo, ClaimBlockBody, MacInfo};
use macpool_core::authority::{
    Actor, AllocateRequest, Authority, BlockClaim, BlockFilter, Context, HoldRequest,
    MAX_RANGES_PER_POOL, ReleaseSelector, Scope, UnholdRequest,
};
use macpool_core::inventory::HostInventory;
use macpool_core::lease::{HoldReason, Owner};
use macpool_core::pool::{AllocationOrder, DuplicatePolicy, PoolName, PoolPolicy, PoolSpec};
use macpool_core::{Mac, Timestamp};
use rand::Rng;

use crate::cluster::ADAPTER;
use crate::params::{AgentScope, Checked};

/// Where guard's fresh static MACs come from.
pub const REMEDY_POOL: &str = "rds-static";
/// The pool(s) over the hosts' own dynamic ranges.
pub const OBSERVED_POOL: &str = "hyperv-dynamic";
/// Where delegate's blocks come from.
pub const BLOCK_POOL: &str = "host-blocks";

struct Inner {
    core: Authority,
    now: Timestamp,
    scope: AgentScope,
    hosts: Vec<String>,
    cluster: String,
    observed: Vec<PoolName>,
    /// Refused calls by the core's error kind (`mac-in-use`, `owner-conflict`, …).
    refusals: BTreeMap<&'static str, u64>,
    inventory_pushes: u64,
    inventory_notes: u64,
    /// Blocks claimed (new ones, not a pending one handed back).
    blocks_claimed: u64,
    /// The last `GET /macs/{mac}` answer, valid until the next change (the agent's conflict
    /// check and the decision right after it ask about the same MAC).
    cached: Option<(Mac, MacInfo)>,
}

/// The authority shared by every simulated agent of one run.
pub struct SimAuthority {
    inner: Mutex<Inner>,
}

/// The real server's answer to a request the core refused: the error's text.
fn refused(e: &macpool_core::authority::AuthorityError) -> DecideError {
    DecideError::Refused(e.to_string())
}

impl Inner {
    fn ctx(&self, host: u32) -> Context {
        let h = &self.hosts[host as usize];
        Context {
            now: self.now,
            actor: Actor {
                name: format!("agent:{h}"),
                scope: match self.scope {
                    AgentScope::Host => Scope::Host(h.clone()),
                    AgentScope::Admin => Scope::All,
                },
            },
        }
    }

    fn refuse(&mut self, kind: &'static str) {
        *self.refusals.entry(kind).or_insert(0) += 1;
    }
}

impl SimAuthority {
    /// The authority with its pools, created by an admin at time 0.
    pub(crate) fn new(c: &Checked, delegate: bool, rng: &mut impl Rng) -> SimAuthority {
        let mut core = Authority::new();
        let admin = Context {
            now: crate::engine::EPOCH,
            actor: Actor::admin("sim-setup"),
        };
        let mut observed = Vec::new();
        for (i, ranges) in c
            .host_ranges_merged()
            .chunks(MAX_RANGES_PER_POOL)
            .enumerate()
        {
            let name = if i == 0 {
                OBSERVED_POOL.to_string()
            } else {
                format!("{OBSERVED_POOL}-{}", i + 1)
            };
            let spec = PoolSpec {
                name: PoolName::new(&name).expect("a valid pool name"),
                ranges: ranges.to_vec(),
                policy: PoolPolicy {
                    order: AllocationOrder::Lowest,
                    cooldown: Duration::ZERO,
                    duplicates: DuplicatePolicy::AllowAndFlag,
                    ..PoolPolicy::default()
                },
            };
            observed.push(spec.name.clone());
            core.create_pool(&admin, spec, rng.random())
                .expect("host ranges are disjoint after merging");
        }
        let spec = PoolSpec {
            name: PoolName::new(REMEDY_POOL).expect("a valid pool name"),
            ranges: vec![c.remedy],
            policy: PoolPolicy {
                order: AllocationOrder::NextFit,
                cooldown: Duration::from_millis(c.params.remedy_cooldown.ms()),
                duplicates: DuplicatePolicy::Deny,
                ..PoolPolicy::default()
            },
        };
        core.create_pool(&admin, spec, rng.random())
            .expect("the remedy range was checked not to overlap the host ranges");
        if delegate {
            let spec = PoolSpec {
                name: PoolName::new(BLOCK_POOL).expect("a valid pool name"),
                ranges: vec![c.blocks],
                policy: PoolPolicy {
                    order: AllocationOrder::Lowest,
                    cooldown: Duration::from_millis(c.params.block_cooldown.ms()),
                    duplicates: DuplicatePolicy::Deny,
                    ..PoolPolicy::default()
                },
            };
            core.create_pool(&admin, spec, rng.random())
                .expect("the block range was checked not to overlap the other ranges");
        }
        SimAuthority {
            inner: Mutex::new(Inner {
                core,
                now: crate::engine::EPOCH,
                scope: c.params.agent_scope,
                hosts: c.hosts.iter().map(|h| h.name.clone()).collect(),
                cluster: crate::engine::CLUSTER.into(),
                observed,
                refusals: BTreeMap::new(),
                inventory_pushes: 0,
                inventory_notes: 0,
                cached: None,
                blocks_claimed: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .expect("the authority lock is never poisoned")
    }

    /// The lock for a call that may change the state: forgets the cached answer.
    fn lock_mut(&self) -> std::sync::MutexGuard<'_, Inner> {
        let mut i = self.lock();
        i.cached = None;
        i
    }

    fn info(i: &mut Inner, mac: Mac) -> MacInfo {
        match &i.cached {
            Some((m, info)) if *m == mac => info.clone(),
            _ => {
                let info = convert::mac_status(&i.core.mac_status(mac));
                i.cached = Some((mac, info.clone()));
                info
            }
        }
    }

    pub(crate) fn set_now(&self, now: Timestamp) {
        self.lock().now = now;
    }

    /// The agent's view for one host.
    pub fn view(&self, host: u32) -> AuthorityView<'_> {
        AuthorityView { auth: self, host }
    }

    /// Whether `mac` lies in a pool over the hosts' own dynamic ranges.
    pub(crate) fn is_observed(&self, mac: Mac) -> bool {
        let i = self.lock();
        i.core.pool_of(mac).is_some_and(|p| i.observed.contains(p))
    }

    /// Records that `vm` uses `mac` (a MAC Hyper-V handed out) — `POST /leases` with `mac`.
    pub(crate) fn register(&self, host: u32, vm_id: &str, vm_name: &str, mac: Mac) -> bool {
        let mut i = self.lock_mut();
        let Some(pool) = i.core.pool_of(mac).cloned() else {
            return false;
        };
        let ctx = i.ctx(host);
        let req = AllocateRequest {
            pool: pool.to_string(),
            owner: Owner {
                vm_id: vm_id.into(),
                adapter_id: ADAPTER.into(),
                vm_name: Some(vm_name.into()),
                host: Some(i.hosts[host as usize].clone()),
                cluster: Some(i.cluster.clone()),
            },
            mac: Some(mac),
            count: 1,
            reason: None,
        };
        match i.core.allocate(&ctx, req) {
            Ok(_) => true,
            Err(e) => {
                i.refuse(e.kind());
                false
            }
        }
    }

    /// Releases `vm`'s lease on `mac` — `POST /leases/release` with `mac` and `vm_id`.
    pub(crate) fn release(&self, host: u32, vm_id: &str, mac: Mac) {
        let mut i = self.lock_mut();
        let ctx = i.ctx(host);
        let sel = ReleaseSelector::Mac {
            mac,
            vm_id: Some(vm_id.into()),
        };
        if let Err(e) = i.core.release(&ctx, sel) {
            i.refuse(e.kind());
        }
    }

    /// Keeps a checkpoint's MAC out of circulation — `POST /holds` with reason `checkpoint`
    /// and the checkpoint id, exactly the hold an inventory would place.
    pub(crate) fn hold(&self, host: u32, vm_id: &str, mac: Mac, checkpoint_id: &str) -> bool {
        let mut i = self.lock_mut();
        let ctx = i.ctx(host);
        let req = HoldRequest {
            mac,
            vm_id: vm_id.into(),
            reason: HoldReason::Checkpoint,
            reference: checkpoint_id.into(),
        };
        match i.core.hold(&ctx, req) {
            Ok(_) => true,
            Err(e) => {
                i.refuse(e.kind());
                false
            }
        }
    }

    /// Removes that hold when the checkpoint is gone — `DELETE /holds`.
    pub(crate) fn unhold(&self, host: u32, vm_id: &str, mac: Mac, checkpoint_id: &str) {
        let mut i = self.lock_mut();
        let ctx = i.ctx(host);
        let req = UnholdRequest {
            mac,
            vm_id: vm_id.into(),
            reason: Some(HoldReason::Checkpoint),
            reference: Some(checkpoint_id.into()),
        };
        // an inventory may have removed it first: nothing left to do then
        let _ = i.core.unhold(&ctx, req);
    }

    /// What the authority says about `mac`, as the API returns it.
    pub(crate) fn mac_info(&self, mac: Mac) -> MacInfo {
        Self::info(&mut self.lock(), mac)
    }

    /// `PUT /hosts/{host}/inventory`.
    pub(crate) fn push_inventory(&self, host: u32, inv: HostInventory, generation: u64) {
        let mut i = self.lock_mut();
        let ctx = i.ctx(host);
        i.inventory_pushes += 1;
        match i.core.apply_inventory(&ctx, inv, generation) {
            Ok((out, _)) => i.inventory_notes += out.notes.len() as u64,
            Err(e) => i.refuse(e.kind()),
        }
    }

    /// Addresses of the pools macpool hands out from (not the observed host ranges) that are
    /// not free: leased, held or cooling down.
    pub(crate) fn pool_used(&self) -> u64 {
        let i = self.lock();
        i.core
            .pools()
            .iter()
            .filter(|p| !i.observed.contains(&p.spec.name))
            .map(|p| p.usage.size - p.usage.free)
            .sum()
    }

    pub(crate) fn refusals(&self) -> BTreeMap<String, u64> {
        self.lock()
            .refusals
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect()
    }

    /// Whether `mac` lies in a block delegated to a host (the core explains those MACs by the
    /// block and refuses holds and specific allocations inside one).
    pub(crate) fn in_block(&self, mac: Mac) -> bool {
        self.lock().core.block_at(mac).is_some()
    }

    pub(crate) fn blocks_claimed(&self) -> u64 {
        self.lock().blocks_claimed
    }

    pub(crate) fn inventory_stats(&self) -> (u64, u64) {
        let i = self.lock();
        (i.inventory_pushes, i.inventory_notes)
    }

    /// The core's own accounting check (tests).
    pub fn check_invariants(&self) -> Result<(), String> {
        self.lock().core.check_invariants()
    }
}

/// The authority as one host's agent reaches it.
pub struct AuthorityView<'a> {
    auth: &'a SimAuthority,
    host: u32,
}

impl decide::Authority for AuthorityView<'_> {
    /// `GET /api/v1/macs/{mac}`: always an answer (`unmanaged` outside every pool), as the
    /// server gives.
    fn mac(&self, mac: Mac) -> impl Future<Output = Result<Option<MacInfo>, DecideError>> + Send {
        let info = SimAuthority::info(&mut self.auth.lock(), mac);
        ready(Ok(Some(info)))
    }

    /// `GET /api/v1/hosts/{host}/blocks`.
    fn blocks(
        &self,
        host: &str,
    ) -> impl Future<Output = Result<Vec<BlockInfo>, DecideError>> + Send {
        let filter = BlockFilter {
            host: Some(host.to_string()),
            pool: None,
        };
        let list = self
            .auth
            .lock()
            .core
            .blocks(&filter)
            .iter()
            .map(|b| convert::block(b, false))
            .collect();
        ready(Ok(list))
    }

    /// `POST /api/v1/hosts/{host}/blocks`.
    fn claim_block(
        &self,
        host: &str,
        body: ClaimBlockBody,
    ) -> impl Future<Output = Result<BlockInfo, DecideError>> + Send {
        let mut i = self.auth.lock_mut();
        let ctx = i.ctx(self.host);
        let claim = BlockClaim {
            host: host.to_string(),
            pool: body.pool,
            size: body.size,
        };
        let r = match i.core.claim_block(&ctx, claim) {
            Ok((b, existing, _)) => {
                if !existing {
                    i.blocks_claimed += 1;
                }
                Ok(convert::block(&b, existing))
            }
            Err(e) => {
                i.refuse(e.kind());
                Err(refused(&e))
            }
        };
        ready(r)
    }

    /// `POST /api/v1/hosts/{host}/blocks/{id}/activate`.
    fn activate_block(
        &self,
        host: &str,
        id: u64,
    ) -> impl Future<Output = Result<BlockInfo, DecideError>> + Send {
        let mut i = self.auth.lock_mut();
        let ctx = i.ctx(self.host);
        let r = match i.core.activate_block(&ctx, host, id) {
            Ok((b, _)) => Ok(convert::block(&b, false)),
            Err(e) => {
                i.refuse(e.kind());
                Err(refused(&e))
            }
        };
        ready(r)
    }

    /// `POST /api/v1/leases`, converted as the server converts the body.
    fn allocate(
        &self,
        body: AllocateBody,
    ) -> impl Future<Output = Result<Mac, DecideError>> + Send {
        let mut i = self.auth.lock_mut();
        let ctx = i.ctx(self.host);
        let r = (|| {
            let pool = body
                .pool
                .clone()
                .ok_or_else(|| DecideError::Refused("'pool' is required".into()))?;
            let req = convert::allocate_request(pool, body.clone())
                .map_err(|e| DecideError::Refused(format!("mac: {e}")))?;
            i.core
                .allocate(&ctx, req)
                .map(|(a, _)| a[0].lease.mac)
                .map_err(|e| (e.kind(), refused(&e)))
                .map_err(|(kind, e)| {
                    i.refuse(kind);
                    e
                })
        })();
        ready(r)
    }
}
