//! The **delegate** strategy: the host's own dynamic allocator works on a block that the
//! authority delegated to this host alone, and the agent moves it to a fresh block *before*
//! Hyper-V would wrap around. Hyper-V's round-robin allocator reissues an address only after a
//! wrap-around (its in-use check sees only this host's VMs), so a host that never wraps never
//! hands out a MAC that lives on elsewhere, in a migrated VM or a checkpoint. No VM is restarted.
//!
//! One [`tick`] brings the host in line with the authority, in this order:
//! 1. a *pending* block (claimed, not yet applied: an agent that stopped half-way) is applied
//!    with `Set-VMHost` and then activated;
//! 2. no block yet: claim one, apply, activate;
//! 3. the host's range is not the active block (someone ran `Set-VMHost`): apply it again;
//! 4. the cursor (`CurrentMacAddress`) leaves `margin` or fewer addresses in the active block:
//!    claim the next block, apply, activate (the old one drains on the authority);
//! 5. otherwise nothing.
//!
//! The cursor's registry value is unverified ([`crate::hypervisor::HostRangeState::cursor`]): a
//! host is never called steady without a position. With no readable cursor the tick takes a
//! lower bound from the inventory (the highest dynamic MAC of the block seen on the host), says
//! so in its outcome, and rotates on that bound.
//!
//! Activation comes only after `Set-VMHost` succeeded, so the authority never believes in a range
//! the host does not have. Any failure leaves the block pending and the next tick resumes; ticks
//! come after VM created/started events and on the agent's timer, never in a retry loop.

use macpool_api::dto::{BlockInfo, ClaimBlockBody};
use macpool_core::inventory::{CursorSource, HostInventory, MacKind};
use macpool_core::{Mac, MacRange};

use crate::decide::{Authority, AuthorityError};
use crate::hypervisor::{HvError, Hypervisor};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DelegateConfig {
    /// The host name as the authority knows it.
    pub host: String,
    /// The pool blocks are claimed from.
    pub pool: String,
    /// Addresses per block (the authority's default is 256, one Hyper-V default range).
    pub block_size: Option<u64>,
    /// Rotate when this many or fewer addresses remain after the cursor. Must exceed the VMs
    /// the host can create between two ticks; the default is a quarter of the block.
    pub margin: Option<u64>,
    /// Decide, but change nothing (print what would be set).
    pub dry_run: bool,
}

impl DelegateConfig {
    pub fn new(host: impl Into<String>, pool: impl Into<String>) -> DelegateConfig {
        DelegateConfig {
            host: host.into(),
            pool: pool.into(),
            block_size: None,
            margin: None,
            dry_run: false,
        }
    }
}

/// What one tick did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DelegateOutcome {
    /// The host is on its active block with room to spare.
    Steady {
        block: u64,
        range: MacRange,
        remaining: u64,
        /// Where the position in the block came from.
        position: Position,
    },
    /// The block was applied to the host and is active now.
    Applied {
        block: u64,
        range: MacRange,
        reason: String,
    },
    /// Dry run: what would be applied (`None`: a block not claimed yet).
    Planned {
        range: Option<MacRange>,
        reason: String,
    },
    /// The authority did not answer; nothing was changed on the host.
    Deferred { reason: String },
    /// The hypervisor or the authority refused; reported, retried on the next tick.
    Failed { reason: String },
    /// The hypervisor has no host-wide dynamic range (libvirt): delegate does not apply.
    NotApplicable { reason: String },
}

/// How a tick knows how far the host's allocator got in its block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Position {
    /// The host's cursor (`CurrentMacAddress`).
    Cursor,
    /// No readable cursor: the highest dynamic MAC of the block in the inventory (`None`: none
    /// seen yet), a lower bound of the real position.
    InventoryBound(Option<Mac>),
}

impl Position {
    fn describe(self) -> String {
        match self {
            Position::Cursor => String::new(),
            Position::InventoryBound(m) => format!(
                " (no readable cursor: lower bound from the inventory, highest dynamic MAC {})",
                m.map_or_else(|| "none yet".into(), |m| m.to_string())
            ),
        }
    }
}

impl DelegateOutcome {
    pub fn summary(&self) -> String {
        match self {
            DelegateOutcome::Steady {
                block,
                range,
                remaining,
                position,
            } => format!(
                "on block {block} ({range}), {remaining} addresses left before rotation{}",
                position.describe()
            ),
            DelegateOutcome::Applied {
                block,
                range,
                reason,
            } => format!("applied block {block} ({range}): {reason}"),
            DelegateOutcome::Planned {
                range: Some(range),
                reason,
            } => format!("would set the host range to {range}: {reason}"),
            DelegateOutcome::Planned {
                range: None,
                reason,
            } => format!("would claim a new block and set the host range to it: {reason}"),
            DelegateOutcome::Deferred { reason } => format!("deferred: {reason}"),
            DelegateOutcome::Failed { reason } => format!("failed: {reason}"),
            DelegateOutcome::NotApplicable { reason } => format!("not applicable: {reason}"),
        }
    }
}

fn block_range(b: &BlockInfo) -> Result<MacRange, DelegateOutcome> {
    let parse = |s: &str| Mac::parse(s);
    match (parse(&b.first), parse(&b.last)) {
        (Ok(f), Ok(l)) => MacRange::new(f, l).map_err(|e| DelegateOutcome::Failed {
            reason: format!("block {} from the authority: {e}", b.id),
        }),
        _ => Err(DelegateOutcome::Failed {
            reason: format!("block {} from the authority has unreadable bounds", b.id),
        }),
    }
}

fn from_authority(e: AuthorityError) -> DelegateOutcome {
    match e {
        AuthorityError::Unreachable(m) => DelegateOutcome::Deferred { reason: m },
        AuthorityError::Refused(m) => DelegateOutcome::Failed { reason: m },
    }
}

/// Addresses the host can still hand out from `range` before wrapping, given its cursor (the
/// last address it handed out). A cursor outside the range (a fresh range) means all of them.
pub fn remaining(range: MacRange, cursor: Option<Mac>) -> u64 {
    match cursor {
        Some(c) if range.contains(c) => range.last().to_u64() - c.to_u64(),
        _ => range.len(),
    }
}

/// Brings the host's dynamic range in line with its blocks; see the module docs.
pub async fn tick<H: Hypervisor, A: Authority>(
    hv: &H,
    auth: &A,
    cfg: &DelegateConfig,
) -> DelegateOutcome {
    match run(hv, auth, cfg).await {
        Ok(o) | Err(o) => o,
    }
}

async fn run<H: Hypervisor, A: Authority>(
    hv: &H,
    auth: &A,
    cfg: &DelegateConfig,
) -> Result<DelegateOutcome, DelegateOutcome> {
    let host = hv.host_range().await.map_err(|e| match e {
        HvError::NotApplicable(m) => DelegateOutcome::NotApplicable { reason: m },
        other => DelegateOutcome::Failed {
            reason: format!("cannot read the host's range: {other}"),
        },
    })?;
    let blocks = auth.blocks(&cfg.host).await.map_err(from_authority)?;
    let mine = |state: &str| {
        blocks
            .iter()
            .find(|b| b.state == state && b.pool == cfg.pool)
            .cloned()
    };
    if let Some(p) = mine("pending") {
        return apply(
            hv,
            auth,
            cfg,
            &p,
            "resuming the block claimed before".into(),
        )
        .await;
    }
    let Some(active) = mine("active") else {
        let b = claim(auth, cfg).await?;
        return apply(hv, auth, cfg, &b, "the host had no block yet".into()).await;
    };
    let range = block_range(&active)?;
    if host.range != Some(range) {
        let was = host
            .range
            .map_or_else(|| "unknown".to_string(), |r| r.to_string());
        let reason = format!("the host's range was {was}, not its active block: set again");
        return apply(hv, auth, cfg, &active, reason).await;
    }
    let (cursor, position) = match host.cursor {
        Some(c) => (Some(c), Position::Cursor),
        None => {
            let bound = inventory_bound(hv, range).await?;
            (bound, Position::InventoryBound(bound))
        }
    };
    let left = remaining(range, cursor);
    let margin = cfg.margin.unwrap_or(range.len() / 4).min(range.len() - 1);
    if left > margin {
        return Ok(DelegateOutcome::Steady {
            block: active.id,
            range,
            remaining: left,
            position,
        });
    }
    let next = claim(auth, cfg).await?;
    let reason = format!(
        "cursor {} leaves {left} of {} addresses in block {}: rotating before Hyper-V wraps{}",
        cursor.map_or_else(|| "?".into(), |c| c.to_string()),
        range.len(),
        active.id,
        position.describe()
    );
    apply(hv, auth, cfg, &next, reason).await
}

/// The highest dynamic MAC of `range` on the host (live, in a checkpoint, or a management-OS
/// vNIC): the allocator has got at least that far.
async fn inventory_bound<H: Hypervisor>(
    hv: &H,
    range: MacRange,
) -> Result<Option<Mac>, DelegateOutcome> {
    let inv = hv.inventory().await.map_err(|e| DelegateOutcome::Failed {
        reason: format!("no readable cursor, and the inventory for a lower bound failed too: {e}"),
    })?;
    Ok(inv
        .vms()
        .iter()
        .flat_map(|v| &v.adapters)
        .chain(&inv.management_adapters)
        .filter(|a| a.kind == MacKind::Dynamic && range.contains(a.mac))
        .map(|a| a.mac)
        .max())
}

/// How the agent knows the position of `inv`'s allocator, as its inventory push says: the
/// cursor when the host shows one, else — when delegate runs, on a host with a dynamic range —
/// the lower bound [`tick`] falls back to; `None` when nothing needs a position.
pub fn cursor_source(inv: &HostInventory, delegating: bool) -> Option<CursorSource> {
    if inv.cursor().is_some() {
        Some(CursorSource::Registry)
    } else if delegating && inv.dynamic_range().is_some() {
        Some(CursorSource::InventoryBound)
    } else {
        None
    }
}

async fn claim<A: Authority>(auth: &A, cfg: &DelegateConfig) -> Result<BlockInfo, DelegateOutcome> {
    if cfg.dry_run {
        // never claim for a plan that will not run
        return Err(DelegateOutcome::Planned {
            range: None,
            reason: format!("pool {}", cfg.pool),
        });
    }
    let body = ClaimBlockBody {
        pool: cfg.pool.clone(),
        size: cfg.block_size,
    };
    auth.claim_block(&cfg.host, body)
        .await
        .map_err(from_authority)
}

async fn apply<H: Hypervisor, A: Authority>(
    hv: &H,
    auth: &A,
    cfg: &DelegateConfig,
    block: &BlockInfo,
    reason: String,
) -> Result<DelegateOutcome, DelegateOutcome> {
    let range = block_range(block)?;
    if cfg.dry_run {
        return Ok(DelegateOutcome::Planned {
            range: Some(range),
            reason,
        });
    }
    hv.set_host_range(range)
        .await
        .map_err(|e| DelegateOutcome::Failed {
            reason: format!("Set-VMHost to block {} ({range}) failed: {e}", block.id),
        })?;
    if block.state != "active" {
        auth.activate_block(&cfg.host, block.id)
            .await
            .map_err(from_authority)?;
    }
    tracing::info!(
        "host {}: dynamic range is block {} ({range}): {reason}",
        cfg.host,
        block.id
    );
    Ok(DelegateOutcome::Applied {
        block: block.id,
        range,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_counts_addresses_after_the_cursor() {
        let r = MacRange::parse("00155DF00000-00155DF000FF").unwrap();
        assert_eq!(remaining(r, None), 256);
        assert_eq!(remaining(r, Some("00155DF00000".parse().unwrap())), 255);
        assert_eq!(remaining(r, Some("00155DF000FF".parse().unwrap())), 0);
        // the previous block's cursor: the new range starts from its first address
        assert_eq!(remaining(r, Some("00155DE000FF".parse().unwrap())), 256);
    }
}
