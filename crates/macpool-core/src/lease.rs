//! Leases (a MAC given to one VM adapter) and holds (a MAC kept out of circulation because
//! something — a checkpoint, a template, a backup — can bring it back).

use std::fmt;

use crate::Timestamp;
use crate::mac::Mac;
use crate::pool::PoolName;

/// Longest owner field accepted (VM ids, names, hosts); protects tables and the history.
pub const MAX_FIELD_LEN: usize = 256;

/// Who a lease belongs to. `(vm_id, adapter_id)` is the identity; the rest describes where it
/// currently runs.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Owner {
    pub vm_id: String,
    pub adapter_id: String,
    pub vm_name: Option<String>,
    pub host: Option<String>,
    pub cluster: Option<String>,
}

impl Owner {
    pub fn key(&self) -> OwnerKey {
        OwnerKey {
            vm_id: self.vm_id.clone(),
            adapter_id: self.adapter_id.clone(),
        }
    }

    /// Checks lengths and emptiness; control characters are refused so that logs and tables
    /// cannot be forged.
    pub fn validate(&self) -> Result<(), String> {
        if self.vm_id.trim().is_empty() {
            return Err("vm_id must not be empty".into());
        }
        let fields = [
            ("vm_id", Some(&self.vm_id)),
            ("adapter_id", Some(&self.adapter_id)),
            ("vm_name", self.vm_name.as_ref()),
            ("host", self.host.as_ref()),
            ("cluster", self.cluster.as_ref()),
        ];
        for (name, value) in fields {
            if let Some(v) = value {
                validate_field(name, v)?;
            }
        }
        Ok(())
    }
}

/// Rejects over-long values and control characters in a free-text field.
pub fn validate_field(name: &str, value: &str) -> Result<(), String> {
    if value.len() > MAX_FIELD_LEN {
        return Err(format!(
            "{name} is {} bytes long; the limit is {MAX_FIELD_LEN}",
            value.len()
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{name} contains a control character"));
    }
    Ok(())
}

/// The identity of a lease owner: one MAC per VM adapter, across all pools.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct OwnerKey {
    pub vm_id: String,
    pub adapter_id: String,
}

impl fmt::Display for OwnerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.adapter_id.is_empty() {
            write!(f, "VM {}", self.vm_id)
        } else {
            write!(f, "VM {} adapter {}", self.vm_id, self.adapter_id)
        }
    }
}

/// `reserved` until an inventory shows the MAC live on its VM, then `bound`. Released leases
/// leave the live set; their MAC cools down in the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum LeaseState {
    Reserved,
    Bound,
}

impl LeaseState {
    pub fn name(self) -> &'static str {
        match self {
            LeaseState::Reserved => "reserved",
            LeaseState::Bound => "bound",
        }
    }

    pub fn parse(s: &str) -> Result<LeaseState, String> {
        match s {
            "reserved" => Ok(LeaseState::Reserved),
            "bound" => Ok(LeaseState::Bound),
            other => Err(format!("unknown lease state '{other}'")),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Lease {
    pub mac: Mac,
    pub pool: PoolName,
    pub owner: Owner,
    pub state: LeaseState,
    pub created: Timestamp,
    /// Granted although another lease or hold had the MAC (pool policy `allow-and-flag`).
    pub duplicate: bool,
}

/// Why a MAC is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum HoldReason {
    Checkpoint,
    Template,
    Backup,
    /// The VM left the cluster but may come back (exported, replicated, failed over).
    Departed,
}

impl HoldReason {
    pub const ALL: [HoldReason; 4] = [
        HoldReason::Checkpoint,
        HoldReason::Template,
        HoldReason::Backup,
        HoldReason::Departed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            HoldReason::Checkpoint => "checkpoint",
            HoldReason::Template => "template",
            HoldReason::Backup => "backup",
            HoldReason::Departed => "departed",
        }
    }

    pub fn parse(s: &str) -> Result<HoldReason, String> {
        HoldReason::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown hold reason '{s}': expected checkpoint, template, backup or departed"
                )
            })
    }
}

/// A MAC kept out of circulation on behalf of a VM. A VM's own holds never conflict with it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Hold {
    pub mac: Mac,
    pub vm_id: String,
    pub reason: HoldReason,
    /// What keeps it: a checkpoint id, a backup job, a template name.
    pub reference: String,
    pub created: Timestamp,
}

impl Hold {
    pub fn key(&self) -> HoldKey {
        HoldKey {
            mac: self.mac,
            vm_id: self.vm_id.clone(),
            reason: self.reason,
            reference: self.reference.clone(),
        }
    }
}

/// What makes a hold unique: placing the same hold twice is a no-op.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct HoldKey {
    pub mac: Mac,
    pub vm_id: String,
    pub reason: HoldReason,
    pub reference: String,
}
