//! The authority in the loop: the real core state machine ([`macpool_core::authority::Authority`])
//! in memory, with the simulation clock in every [`Context`]. No store: the core decides, a
//! store would only persist its `Change`s, which the simulator drops.
//!
//! [`AuthorityView`] is the agent's [`decide::Authority`] for one host. It answers exactly what
//! the HTTP API answers (`GET /api/v1/macs/{mac}` is `convert::mac_status` of the core's
//! `mac_status`; `POST /api/v1/leases` is the core's `allocate` of the body the server would
//! build), so the decision logic sees the same DTOs it sees in production.
//!
//! Pools the simulated deployment has — the ones the README's deployment creates, nothing for
//! the simulator's sake:
//! - `rds-static`: `remedy_range`, where guard's fresh static MACs come from (next-fit,
//!   `deny`, `remedy_cooldown`).
//! - `host-blocks` (delegate only): `block_range`, where the hosts' blocks come from
//!   (`block_cooldown` before a drained block returns).
//!
//! The hosts' own dynamic ranges are in no pool: the authority learns about the MACs Hyper-V
//! hands out only from the inventories the agents push (`PUT /api/v1/hosts/{host}/inventory`),
//! and answers `GET /api/v1/macs/{mac}` with every VM those show with the MAC (`seen`), live or
//! in a checkpoint, and with the checkpoint holds the inventories placed.

use std::collections::{BTreeMap, HashMap};
use std::future::{Future, ready};
use std::sync::Mutex;
use std::time::Duration;

use macpool_agent::decide::{self, AuthorityError as DecideError};
use macpool_api::convert;
use macpool_api::dto::{AllocateBody, BlockInfo, ClaimBlockBody, MacInfo};
use macpool_core::authority::{Actor, Authority, BlockClaim, BlockFilter, Change, Context, Scope};
use macpool_core::block::BlockState;
use macpool_core::inventory::HostInventory;
use macpool_core::pool::{AllocationOrder, DuplicatePolicy, PoolName, PoolPolicy, PoolSpec};
use macpool_core::{Mac, Timestamp};
use rand::Rng;

use crate::params::{AgentScope, Checked};

/// Where guard's fresh static MACs come from.
pub const REMEDY_POOL: &str = "rds-static";
/// Where delegate's blocks come from.
pub const BLOCK_POOL: &str = "host-blocks";

struct Inner {
    core: Authority,
    now: Timestamp,
    scope: AgentScope,
    hosts: Vec<String>,
    /// Refused calls by the core's error kind (`mac-in-use`, `owner-conflict`, …).
    refusals: BTreeMap<&'static str, u64>,
    inventory_pushes: u64,
    inventory_notes: u64,
    /// Pushes of an unchanged inventory that were not handed to the core (see
    /// [`SimAuthority::resend_is_void`]).
    inventory_unchanged: u64,
    /// Blocks claimed (new ones, not a pending one handed back).
    blocks_claimed: u64,
    /// The last `GET /macs/{mac}` answer, valid until the next change (the agent's conflict
    /// check and the decision right after it ask about the same MAC).
    cached: Option<(Mac, MacInfo)>,
    /// Per host, what its last inventory handed to the core left behind.
    last: Vec<LastPush>,
    /// Inventories handed to the core so far.
    applied: u64,
    /// Per MAC, the inventory (its number in `applied`) that last released a lease of it or
    /// removed a hold on it (only inventories remove either here).
    removed: HashMap<Mac, u64>,
    /// Draining blocks by id, with their `unused_since` (from the core's `BlockSaved` changes).
    draining: BTreeMap<u64, Option<Timestamp>>,
    /// Over `draining`: the earliest and the latest `unused_since`.
    unused_span: Option<(Timestamp, Timestamp)>,
    /// The block pool's cooldown.
    block_cooldown: Duration,
    /// `GET /hosts/{host}/blocks` answers, by host, until one of its blocks changes (the
    /// answer depends on nothing else; delegate asks on every tick).
    block_answers: HashMap<String, Vec<BlockInfo>>,
}

/// What one host's last inventory handed to the core left behind.
#[derive(Clone, Default)]
struct LastPush {
    /// When the core received it (its `received`).
    at: Option<Timestamp>,
    /// Its number in `applied`.
    number: u64,
    /// The MACs of the checkpoint holds the core refused (one note each).
    refused: Vec<Mac>,
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

    /// Follows the draining blocks through the core's changes.
    fn track_blocks(&mut self, changes: &[Change]) {
        let mut touched = false;
        for c in changes {
            if let Change::BlockSaved(b) = c {
                touched = true;
                self.block_answers.remove(&b.host);
                if b.state == BlockState::Draining {
                    self.draining.insert(b.id, b.unused_since);
                } else {
                    self.draining.remove(&b.id);
                }
            }
        }
        if touched {
            let mut since = self.draining.values().flatten();
            self.unused_span = since
                .next()
                .map(|&t| since.fold((t, t), |(lo, hi), &u| (lo.min(u), hi.max(u))));
        }
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
                refusals: BTreeMap::new(),
                inventory_pushes: 0,
                inventory_notes: 0,
                inventory_unchanged: 0,
                cached: None,
                blocks_claimed: 0,
                last: vec![LastPush::default(); c.hosts.len()],
                applied: 0,
                removed: HashMap::new(),
                draining: BTreeMap::new(),
                unused_span: None,
                block_cooldown: Duration::from_millis(c.params.block_cooldown.ms()),
                block_answers: HashMap::new(),
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

    /// `PUT /hosts/{host}/inventory`: the core's `apply_inventory`, as the server calls it. Hands
    /// the document back (from the change it returns, or the core's copy for a diff) so that the agent can patch it for its next push instead of building it
    /// anew; `None` when the core refused it. `void`: the caller expects the push to change
    /// nothing but the stored inventory's generation and receive time (checked: tests).
    pub(crate) fn push_inventory(
        &self,
        host: u32,
        inv: HostInventory,
        generation: u64,
        void: bool,
    ) -> Option<HostInventory> {
        let mut i = self.lock_mut();
        let ctx = i.ctx(host);
        i.inventory_pushes += 1;
        match i.core.apply_inventory(&ctx, inv, generation) {
            Ok((out, changes)) => {
                let refused: Vec<Mac> = out.refused.iter().map(|k| k.mac).collect();
                if void {
                    assert!(
                        changes.len() == 1
                            && out.bound.is_empty()
                            && out.released.is_empty()
                            && out.held.is_empty()
                            && out.unheld.is_empty()
                            && out.notes.len() == refused.len()
                            && refused == i.last[host as usize].refused,
                        "a resend judged void changed something: {out:?} {changes:?}"
                    );
                    i.inventory_unchanged += 1;
                }
                i.inventory_notes += out.notes.len() as u64;
                i.applied += 1;
                let number = i.applied;
                for m in out.released.iter().map(|r| r.lease.mac) {
                    i.removed.insert(m, number);
                }
                for m in out.unheld.iter().map(|h| h.mac) {
                    i.removed.insert(m, number);
                }
                i.last[host as usize] = LastPush {
                    at: Some(ctx.now),
                    number,
                    refused,
                };
                i.track_blocks(&changes);
                changes.into_iter().find_map(|c| match c {
                    Change::InventorySaved(s) => Some(s.inventory),
                    // A later report is kept as a diff: the document is the core's patched copy.
                    Change::InventoryPatched(p) => {
                        i.core.inventory(p.host()).ok().map(|s| s.inventory)
                    }
                    _ => None,
                })
            }
            Err(e) => {
                i.refuse(e.kind());
                None
            }
        }
    }

    /// Whether the core, handed now the same inventory as `host`'s last one, would change
    /// nothing but that inventory's generation and receive time — and whether those could
    /// matter later. Everything `apply_inventory` does, for an unchanged document:
    /// - the derived indexes (who has which MAC, checkpoint reference counts): unchanged;
    /// - live adapters: a lease is bound, moved or re-created only for a VM whose MAC, host
    ///   or lease changed — the first two change the document; here leases are created only
    ///   by guard, for a fresh MAC the VM does not show yet (its document changes when it
    ///   does), and moved or released only by inventories: moved to a host whose latest
    ///   inventory lists the VM, released when none does;
    /// - vanished VMs: none;
    /// - departed leases (re-created for a VM seen again with its released MAC): a lease is
    ///   released only when no host's latest inventory lists its VM, so the VM is new in
    ///   whichever document shows it next;
    /// - checkpoint holds: the ones the last push placed are still there (a hold some host
    ///   asks for is removed by nothing here), the ones it could not place (`refused`, one note
    ///   each: another VM leases or holds the MAC) are refused again unless a lease or hold of
    ///   that MAC was removed since;
    /// - blocks: their use changes only with a document, and each change was followed by the
    ///   core's refresh; so this push can only free a draining block whose cooldown has passed,
    ///   and its receive time matters only to a block unused since before the host's last push;
    /// - expiring cooldowns: done by [`SimAuthority::resend_unchanged`] as the push would.
    pub(crate) fn resend_is_void(&self, host: u32) -> bool {
        let i = self.lock();
        let last = &i.last[host as usize];
        let Some(at) = last.at else { return false };
        let unblocked = last
            .refused
            .iter()
            .any(|m| i.removed.get(m).is_some_and(|&n| n > last.number));
        if unblocked {
            return false;
        }
        match i.unused_span {
            None => true,
            Some((lo, hi)) => at > hi && lo.0 + i.block_cooldown.as_millis() as u64 > i.now.0,
        }
    }

    /// A push of `host`'s unchanged inventory that [`SimAuthority::resend_is_void`] judged
    /// void: counted like one, with the notes it would return; the core only expires
    /// cooldowns, as `apply_inventory` would first.
    pub(crate) fn resend_unchanged(&self, host: u32) {
        let mut i = self.lock_mut();
        let now = i.now;
        i.core.expire(now);
        i.inventory_pushes += 1;
        i.inventory_unchanged += 1;
        i.inventory_notes += i.last[host as usize].refused.len() as u64;
    }

    /// Addresses of the pools macpool hands out from that are not free: leased, held, cooling
    /// down or delegated in a block.
    pub(crate) fn pool_used(&self) -> u64 {
        let i = self.lock();
        i.core
            .pools()
            .iter()
            .map(|p| p.usage.size - p.usage.free)
            .sum()
    }

    /// What the core knows about `mac` (tests).
    pub fn mac_status(&self, mac: Mac) -> macpool_core::authority::MacStatus {
        self.lock().core.mac_status(mac)
    }

    /// Every lease the authority has (tests: which VMs it knows about through a lease).
    pub fn leases(&self) -> Vec<macpool_core::lease::Lease> {
        self.lock()
            .core
            .leases(&macpool_core::authority::LeaseFilter::default())
    }

    /// The host's latest inventory and its generation, as the authority keeps it (tests).
    pub fn inventory(&self, host: &str) -> Option<(u64, HostInventory)> {
        self.lock()
            .core
            .inventory(host)
            .ok()
            .map(|s| (s.generation, s.inventory))
    }

    pub(crate) fn refusals(&self) -> BTreeMap<String, u64> {
        self.lock()
            .refusals
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect()
    }

    pub(crate) fn blocks_claimed(&self) -> u64 {
        self.lock().blocks_claimed
    }

    /// Pushes, of which unchanged and not handed to the core, and notes.
    pub(crate) fn inventory_stats(&self) -> (u64, u64, u64) {
        let i = self.lock();
        (i.inventory_pushes, i.inventory_unchanged, i.inventory_notes)
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
        let mut i = self.auth.lock();
        let list = match i.block_answers.get(host) {
            Some(list) => list.clone(),
            None => {
                let filter = BlockFilter {
                    host: Some(host.to_string()),
                    pool: None,
                };
                let list: Vec<BlockInfo> = i
                    .core
                    .blocks(&filter)
                    .iter()
                    .map(|b| convert::block(b, false))
                    .collect();
                i.block_answers.insert(host.to_string(), list.clone());
                list
            }
        };
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
            Ok((b, existing, changes)) => {
                if !existing {
                    i.blocks_claimed += 1;
                }
                i.track_blocks(&changes);
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
            Ok((b, changes)) => {
                i.track_blocks(&changes);
                Ok(convert::block(&b, false))
            }
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
