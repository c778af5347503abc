//! Blocks delegated to hosts' native allocators (see [`crate::block`] for the lifecycle).
//!
//! Rules:
//! - **Claim.** A block is a run of `size` *free* addresses of one pool (aligned to `size` when
//!   possible), taken out of the free space whole: the allocator never hands out an address in a
//!   block, and a specific allocation or a hold inside one is refused (`mac-in-use`). A host has
//!   at most one pending block: claiming again returns it (an agent that crashed between the claim
//!   and `Set-VMHost` picks it up again). An agent token claims only for its own host.
//! - **Activate.** The agent applied the block as the host's dynamic range. It becomes active and
//!   the host's previous active block starts draining. Activating an active block is a no-op.
//! - **Drain.** A pending or active block stops being handed to the host (admins: a host leaves
//!   the cluster). Draining twice is a no-op.
//! - **Free.** A draining block is *unused* when no live or checkpoint adapter in any host's latest
//!   inventory has one of its MACs and no host's dynamic range overlaps it. It is freed once the
//!   pool's cooldown has passed since it was first seen unused *and* every host has reported
//!   again since then (a host's older inventory may predate a VM that moved there); a MAC seen
//!   again in the meantime resets the clock. Checked after every inventory and block activation or drain (never on a
//!   path that can still fail, so a refused request changes nothing).
//! - MACs inside any block are explained by the delegation: neither `unmanaged` nor held.

use std::collections::HashSet;

use super::*;
use crate::block::{DEFAULT_BLOCK_SIZE, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE};
use crate::conflict::DelegatedBlock;

/// A request for a block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockClaim {
    pub host: String,
    pub pool: String,
    /// Addresses; [`DEFAULT_BLOCK_SIZE`] when `None`.
    pub size: Option<u64>,
}

/// Filter for block listings; `None` matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlockFilter {
    pub host: Option<String>,
    pub pool: Option<String>,
}

fn block_history(ctx: &Context, action: HistoryAction, b: &Block, reason: String) -> Change {
    Change::History(HistoryEntry {
        at: ctx.now,
        actor: ctx.actor.name.clone(),
        action,
        mac: Some(b.range.first()),
        pool: Some(b.pool.clone()),
        vm_id: None,
        vm_name: None,
        adapter_id: None,
        host: Some(b.host.clone()),
        reason: Some(reason),
    })
}

impl Authority {
    /// Blocks by id, filtered.
    pub fn blocks(&self, filter: &BlockFilter) -> Vec<Block> {
        self.blocks
            .values()
            .filter(|b| filter.host.as_deref().is_none_or(|h| b.host == h))
            .filter(|b| filter.pool.as_deref().is_none_or(|p| b.pool.as_str() == p))
            .cloned()
            .collect()
    }

    /// The block `mac` lies in, if any.
    pub fn block_at(&self, mac: Mac) -> Option<&Block> {
        let (_, id) = self.block_index.range(..=mac).next_back()?;
        let b = &self.blocks[id];
        b.range.contains(mac).then_some(b)
    }

    /// Re-adds persisted blocks after [`Authority::restore`]. A draining block whose cooldown
    /// has passed stays until the next refresh frees it durably (with its history row).
    pub fn with_blocks(mut self, blocks: Vec<Block>) -> std::result::Result<Authority, String> {
        for b in blocks {
            self.next_block_id = self.next_block_id.max(b.id + 1);
            if b.state == BlockState::Free {
                continue;
            }
            if !self.pools.contains_key(&b.pool) {
                return Err(format!(
                    "stored block {} names unknown pool '{}'",
                    b.id, b.pool
                ));
            }
            if !self.take_block_range(&b) {
                return Err(format!(
                    "stored block {} ({}) overlaps used addresses of pool '{}'",
                    b.id, b.range, b.pool
                ));
            }
            self.block_index.insert(b.range.first(), b.id);
            self.blocks.insert(b.id, b);
        }
        Ok(self)
    }

    /// Takes a block's addresses out of its pool's free space; false if any was not free.
    pub(super) fn take_block_range(&mut self, b: &Block) -> bool {
        let p = self
            .pools
            .get_mut(&b.pool)
            .expect("caller checked the pool");
        if !p.free.take_range(b.range) {
            return false;
        }
        p.delegated += b.range.len();
        true
    }

    /// After a pool was rebuilt (edit): takes its blocks out of the new free space again.
    pub(super) fn account_blocks_of(&mut self, pool: &PoolName) {
        let mine: Vec<Block> = self
            .blocks
            .values()
            .filter(|b| b.pool == *pool)
            .cloned()
            .collect();
        for b in mine {
            let taken = self.take_block_range(&b);
            debug_assert!(taken, "edit_pool checked that blocks stay inside");
        }
    }

    /// Blocks as the conflict engine sees them.
    pub(super) fn delegated_blocks(&self) -> Vec<DelegatedBlock> {
        self.blocks
            .values()
            .map(|b| DelegatedBlock {
                host: b.host.clone(),
                range: b.range,
            })
            .collect()
    }

    fn check_host_scope(ctx: &Context, host: &str) -> Result<()> {
        match &ctx.actor.scope {
            Scope::Host(h) if h != host => Err(AuthorityError::Forbidden(format!(
                "this agent token is bound to host '{h}' and cannot manage blocks of host '{host}'"
            ))),
            _ => Ok(()),
        }
    }

    fn host_block(&self, host: &str, id: u64) -> Result<&Block> {
        self.blocks
            .get(&id)
            .filter(|b| b.host == host)
            .ok_or_else(|| AuthorityError::NotFound(format!("host '{host}' has no block {id}")))
    }

    /// Claims a block for `claim.host`; returns it and whether it was the existing pending one.
    pub fn claim_block(
        &mut self,
        ctx: &Context,
        claim: BlockClaim,
    ) -> Result<(Block, bool, Vec<Change>)> {
        self.expire(ctx.now);
        Self::check_host_scope(ctx, &claim.host)?;
        validate_field("host", &claim.host).map_err(AuthorityError::InvalidInput)?;
        if claim.host.trim().is_empty() {
            return Err(AuthorityError::InvalidInput(
                "host must not be empty".into(),
            ));
        }
        let size = claim.size.unwrap_or(DEFAULT_BLOCK_SIZE);
        if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&size) {
            return Err(AuthorityError::InvalidInput(format!(
                "block size must be between {MIN_BLOCK_SIZE} and {MAX_BLOCK_SIZE}, got {size}"
            )));
        }
        let pool = self.pool_state(&claim.pool)?.spec.name.clone();
        if let Some(b) = self
            .blocks
            .values()
            .find(|b| b.host == claim.host && b.state == BlockState::Pending)
        {
            if b.pool != pool {
                return Err(AuthorityError::InvalidInput(format!(
                    "host '{}' already has pending block {} from pool '{}'; activate or drain it first",
                    b.host, b.id, b.pool
                )));
            }
            return Ok((b.clone(), true, Vec::new()));
        }
        let p = &self.pools[&pool];
        let Some(range) = p.free.find_range(size) else {
            return Err(AuthorityError::NoBlock {
                pool,
                size,
                free: p.free.len(),
                longest: p.free.longest_run(),
            });
        };
        let id = self.next_block_id.max(1);
        let block = Block {
            id,
            pool: pool.clone(),
            host: claim.host.clone(),
            range,
            state: BlockState::Pending,
            claimed: ctx.now,
            changed: ctx.now,
            unused_since: None,
        };
        self.next_block_id = id + 1;
        let taken = self.take_block_range(&block);
        debug_assert!(taken, "find_range returns free addresses");
        self.block_index.insert(range.first(), block.id);
        self.blocks.insert(block.id, block.clone());
        let changes = vec![
            Change::BlockSaved(block.clone()),
            block_history(
                ctx,
                HistoryAction::BlockClaimed,
                &block,
                format!("block {} {} ({size} addresses)", block.id, block.range),
            ),
        ];
        Ok((block, false, changes))
    }

    /// The host applied block `id`: it becomes active, the host's previous active block drains.
    pub fn activate_block(
        &mut self,
        ctx: &Context,
        host: &str,
        id: u64,
    ) -> Result<(Block, Vec<Change>)> {
        self.expire(ctx.now);
        Self::check_host_scope(ctx, host)?;
        let b = self.host_block(host, id)?;
        match b.state {
            BlockState::Active => return Ok((b.clone(), Vec::new())),
            BlockState::Draining => {
                return Err(AuthorityError::InvalidInput(format!(
                    "block {id} of host '{host}' is draining and cannot become active again; claim a new block"
                )));
            }
            BlockState::Pending => {}
            BlockState::Free => unreachable!("freed blocks are not kept"),
        }
        let mut changes = Vec::new();
        let previous: Vec<u64> = self
            .blocks
            .values()
            .filter(|b| b.host == host && b.state == BlockState::Active)
            .map(|b| b.id)
            .collect();
        for old in previous {
            let why = format!("host moved on to block {id}");
            self.change_state(ctx, old, BlockState::Draining, why, &mut changes);
        }
        let why = "the host's dynamic range".to_string();
        let b = self.change_state(ctx, id, BlockState::Active, why, &mut changes);
        self.refresh_blocks(ctx, &mut changes);
        Ok((b, changes))
    }

    /// Moves block `id` to `state` now, with its row and history entry.
    fn change_state(
        &mut self,
        ctx: &Context,
        id: u64,
        state: BlockState,
        why: String,
        changes: &mut Vec<Change>,
    ) -> Block {
        let b = self.blocks.get_mut(&id).expect("caller found the block");
        b.state = state;
        b.changed = ctx.now;
        let b = b.clone();
        let action = match state {
            BlockState::Active => HistoryAction::BlockActivated,
            BlockState::Draining => HistoryAction::BlockDraining,
            BlockState::Pending | BlockState::Free => unreachable!("not a state change by request"),
        };
        changes.push(Change::BlockSaved(b.clone()));
        changes.push(block_history(
            ctx,
            action,
            &b,
            format!("block {} {}: {why}", b.id, b.range),
        ));
        b
    }

    /// Stops handing block `id` to its host; it is freed once unused (see the module docs).
    pub fn drain_block(
        &mut self,
        ctx: &Context,
        host: &str,
        id: u64,
    ) -> Result<(Block, Vec<Change>)> {
        self.expire(ctx.now);
        Self::check_host_scope(ctx, host)?;
        let b = self.host_block(host, id)?;
        if b.state == BlockState::Draining {
            return Ok((b.clone(), Vec::new()));
        }
        let mut changes = Vec::new();
        let why = format!("drained by {}", ctx.actor.name);
        let b = self.change_state(ctx, id, BlockState::Draining, why, &mut changes);
        self.refresh_blocks(ctx, &mut changes);
        // freed at once (nothing used it and no cooldown): answer with its final state
        let b = changes
            .iter()
            .rev()
            .find_map(|c| match c {
                Change::BlockSaved(x) if x.id == id => Some(x.clone()),
                _ => None,
            })
            .unwrap_or(b);
        Ok((b, changes))
    }

    /// The draining blocks something still uses: a live or checkpoint MAC in any host's latest
    /// inventory (one range query in the who-has-which-MAC index), or a host's dynamic range
    /// overlapping the block.
    fn used_blocks(&self) -> HashSet<u64> {
        self.blocks
            .values()
            .filter(|b| b.state == BlockState::Draining)
            .filter(|b| {
                self.seen
                    .range(b.range.first()..=b.range.last())
                    .next()
                    .is_some()
                    || self.inventories.values().any(|s| {
                        s.inventory
                            .dynamic_range()
                            .is_some_and(|r| r.overlaps(&b.range))
                    })
            })
            .map(|b| b.id)
            .collect()
    }

    /// Updates the draining blocks' "unused since" and frees those whose cooldown has passed.
    pub(super) fn refresh_blocks(&mut self, ctx: &Context, changes: &mut Vec<Change>) {
        if !self
            .blocks
            .values()
            .any(|b| b.state == BlockState::Draining)
        {
            return;
        }
        let used = self.used_blocks();
        let draining: Vec<u64> = self
            .blocks
            .values()
            .filter(|b| b.state == BlockState::Draining)
            .map(|b| b.id)
            .collect();
        for id in draining {
            let b = self.blocks.get_mut(&id).unwrap();
            let unused_since = match (used.contains(&id), b.unused_since) {
                (true, _) => None,
                (false, Some(t)) => Some(t),
                (false, None) => Some(ctx.now),
            };
            if unused_since != b.unused_since {
                b.unused_since = unused_since;
                changes.push(Change::BlockSaved(b.clone()));
            }
            let cooldown = self.pools[&b.pool].spec.policy.cooldown;
            // Every host must have reported since the block went unused: a host whose latest
            // inventory is older may still run a VM with one of its MACs.
            let confirmed = b
                .unused_since
                .is_some_and(|t| self.inventories.values().all(|s| s.received > t));
            if confirmed && b.freeable(ctx.now, cooldown) {
                let mut b = self.blocks.remove(&id).unwrap();
                self.block_index.remove(&b.range.first());
                let p = self.pools.get_mut(&b.pool).unwrap();
                let given = p.free.give_range(b.range);
                debug_assert!(given, "a block's addresses are never free while it exists");
                p.delegated -= b.range.len();
                b.state = BlockState::Free;
                b.changed = ctx.now;
                changes.push(Change::BlockSaved(b.clone()));
                changes.push(block_history(
                    ctx,
                    HistoryAction::BlockFreed,
                    &b,
                    format!(
                        "block {} {} unused since {} and cooled down: back in the pool",
                        b.id,
                        b.range,
                        b.unused_since.unwrap_or(ctx.now)
                    ),
                ));
            }
        }
    }
}
