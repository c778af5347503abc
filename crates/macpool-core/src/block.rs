//! Blocks: sub-ranges of a pool delegated to one host's native dynamic allocator (Hyper-V
//! `Set-VMHost -MacAddressMinimum/-MacAddressMaximum`), in the spirit of Calico's IPAM blocks.
//!
//! Lifecycle: `pending` (claimed, not yet applied to the host) → `active` (the host's dynamic
//! range) → `draining` (the host moved on to a newer block; VMs and checkpoints may still carry
//! its MACs) → free (every address back in the pool). A draining block is freed only when no VM or
//! checkpoint in any host's latest inventory uses one of its MACs, no host's dynamic range lies in
//! it, and the pool's cooldown has passed since that was first seen; the rules live in
//! `authority/blocks.rs`.

use crate::Timestamp;
use crate::pool::PoolName;
use crate::range::MacRange;

/// Smallest block a host may claim: fewer addresses would make the agent rotate constantly.
pub const MIN_BLOCK_SIZE: u64 = 8;
/// Largest block: Hyper-V ranges are usually 256; 65,536 is a whole `00-15-5D-xx` slice.
pub const MAX_BLOCK_SIZE: u64 = 65_536;
/// The default block size: one Hyper-V default range.
pub const DEFAULT_BLOCK_SIZE: u64 = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum BlockState {
    Pending,
    Active,
    Draining,
    /// Back in the pool. Kept as a row (so ids are never reused), dropped from memory.
    Free,
}

impl BlockState {
    pub fn name(self) -> &'static str {
        match self {
            BlockState::Pending => "pending",
            BlockState::Active => "active",
            BlockState::Draining => "draining",
            BlockState::Free => "free",
        }
    }

    pub fn parse(s: &str) -> Option<BlockState> {
        match s {
            "pending" => Some(BlockState::Pending),
            "active" => Some(BlockState::Active),
            "draining" => Some(BlockState::Draining),
            "free" => Some(BlockState::Free),
            _ => None,
        }
    }
}

/// One delegated block.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Block {
    /// Assigned by the authority, increasing, never reused.
    pub id: u64,
    pub pool: PoolName,
    pub host: String,
    pub range: MacRange,
    pub state: BlockState,
    pub claimed: Timestamp,
    /// When it last changed state.
    pub changed: Timestamp,
    /// Draining only: since when nothing uses any of its MACs. The block is freed once the
    /// pool's cooldown has passed since then; a MAC seen again resets it.
    pub unused_since: Option<Timestamp>,
}

impl Block {
    /// Whether a draining block may return to the pool at `now`.
    pub fn freeable(&self, now: Timestamp, cooldown: std::time::Duration) -> bool {
        self.state == BlockState::Draining
            && self
                .unused_since
                .is_some_and(|t| t.saturating_add(cooldown) <= now)
    }
}
