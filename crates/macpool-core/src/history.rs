//! The history: every change to a lease, hold or pool is one entry (who, what, when, why).

use crate::Timestamp;
use crate::mac::Mac;
use crate::pool::PoolName;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum HistoryAction {
    PoolCreated,
    PoolEdited,
    PoolDeleted,
    Allocated,
    /// Allocated although the MAC was taken (`allow-and-flag`).
    AllocatedDuplicate,
    Bound,
    Released,
    Held,
    Unheld,
    /// A block was claimed for a host (pending).
    BlockClaimed,
    /// The host applied the block as its dynamic range.
    BlockActivated,
    /// The host moved on (or an admin drained it); the block waits for its MACs to disappear.
    BlockDraining,
    /// Nothing uses the block's MACs any more and the cooldown passed: back in the pool.
    BlockFreed,
    /// A token was created (its name, id, role and host in the reason; never its secret).
    TokenCreated,
    TokenRevoked,
}

impl HistoryAction {
    pub const ALL: [HistoryAction; 15] = [
        HistoryAction::PoolCreated,
        HistoryAction::PoolEdited,
        HistoryAction::PoolDeleted,
        HistoryAction::Allocated,
        HistoryAction::AllocatedDuplicate,
        HistoryAction::Bound,
        HistoryAction::Released,
        HistoryAction::Held,
        HistoryAction::Unheld,
        HistoryAction::BlockClaimed,
        HistoryAction::BlockActivated,
        HistoryAction::BlockDraining,
        HistoryAction::BlockFreed,
        HistoryAction::TokenCreated,
        HistoryAction::TokenRevoked,
    ];

    pub fn name(self) -> &'static str {
        match self {
            HistoryAction::PoolCreated => "pool-created",
            HistoryAction::PoolEdited => "pool-edited",
            HistoryAction::PoolDeleted => "pool-deleted",
            HistoryAction::Allocated => "allocated",
            HistoryAction::AllocatedDuplicate => "allocated-duplicate",
            HistoryAction::Bound => "bound",
            HistoryAction::Released => "released",
            HistoryAction::Held => "held",
            HistoryAction::Unheld => "unheld",
            HistoryAction::BlockClaimed => "block-claimed",
            HistoryAction::BlockActivated => "block-activated",
            HistoryAction::BlockDraining => "block-draining",
            HistoryAction::BlockFreed => "block-freed",
            HistoryAction::TokenCreated => "token-created",
            HistoryAction::TokenRevoked => "token-revoked",
        }
    }

    pub fn parse(s: &str) -> Option<HistoryAction> {
        HistoryAction::ALL.into_iter().find(|a| a.name() == s)
    }
}

/// One row of history. `mac` is absent for pool-level changes.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct HistoryEntry {
    pub at: Timestamp,
    pub actor: String,
    pub action: HistoryAction,
    pub mac: Option<Mac>,
    pub pool: Option<PoolName>,
    pub vm_id: Option<String>,
    pub vm_name: Option<String>,
    pub adapter_id: Option<String>,
    pub host: Option<String>,
    /// Why, in words: the hold reason, the pool change, "cooling until …".
    pub reason: Option<String>,
}

/// How the agent's guard words the reason of the allocation it makes for a conflicting
/// adapter: `guard: replaces MAC of adapter '…' (…) after rollback event …`.
pub const GUARD_REASON_PREFIX: &str = "guard: replaces ";

impl HistoryEntry {
    /// Whether this row is guard giving an adapter of `vm_id` a fresh MAC in place of `old`.
    pub fn is_guard_replacing(&self, vm_id: &str, old: Mac) -> bool {
        self.vm_id
            .as_deref()
            .is_some_and(|v| v.eq_ignore_ascii_case(vm_id))
            && self
                .reason
                .as_deref()
                .and_then(|r| r.strip_prefix(GUARD_REASON_PREFIX))
                .is_some_and(|r| r.starts_with(&old.to_string()))
    }
}
