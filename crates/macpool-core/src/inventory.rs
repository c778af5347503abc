//! What an agent (or an offline export) observed on one hypervisor host: its VMs, their live and
//! checkpoint adapters, the host's dynamic MAC range and cursor, and its IPv4 addresses.
//!
//! An inventory is a snapshot, sent whole; conflicts are derived from it by
//! [`crate::conflict`], never stored in it. Wire formats convert to these types by hand.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use crate::conflict::{HostRange, Owner, Seen, Sighting};
use crate::mac::Mac;
use crate::range::MacRange;
use crate::time::Timestamp;

/// Why an inventory cannot be built as given.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InventoryError {
    #[error("host name is empty")]
    EmptyHostName,
    #[error("VM id is empty (VM '{vm_name}')")]
    EmptyVmId { vm_name: String },
    #[error("VM id {vm_id} appears twice on host {host}")]
    DuplicateVm { host: String, vm_id: String },
    #[error("allocation cursor {cursor} lies outside the host's dynamic range {range}")]
    CursorOutsideRange { cursor: Mac, range: MacRange },
    #[error("an inventory diff does not fit the stored inventory of host {host}")]
    PatchMismatch { host: String },
}

/// How an adapter got its MAC: Hyper-V's `DynamicMacAddressEnabled`, libvirt has only static.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum MacKind {
    Static,
    Dynamic,
}

/// A VM's power state as the hypervisor reports it; unknown spellings are kept, not guessed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum VmState {
    Running,
    Off,
    Saved,
    Paused,
    Other(String),
}

impl VmState {
    /// Lower-case name for the wire and the store; unknown states keep their own spelling.
    pub fn name(&self) -> &str {
        match self {
            VmState::Running => "running",
            VmState::Off => "off",
            VmState::Saved => "saved",
            VmState::Paused => "paused",
            VmState::Other(s) => s,
        }
    }

    /// The inverse of [`VmState::name`] (case-insensitive); anything else is kept as `Other`.
    pub fn parse(s: &str) -> VmState {
        match s.to_ascii_lowercase().as_str() {
            "running" => VmState::Running,
            "off" => VmState::Off,
            "saved" => VmState::Saved,
            "paused" => VmState::Paused,
            _ => VmState::Other(s.to_string()),
        }
    }
}

/// The kinds of Hyper-V checkpoint (`VMSnapshot.SnapshotType`); libvirt's are `Other`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum CheckpointType {
    Standard,
    Recovery,
    Planned,
    Missing,
    Replica,
    AppConsistentReplica,
    SyncedReplica,
    Other(String),
}

impl CheckpointType {
    /// Maps Hyper-V's `SnapshotType`, which PowerShell 7 writes as an integer and
    /// `-EnumsAsStrings` / Windows PowerShell as a name.
    pub fn from_hyperv(value: &str) -> CheckpointType {
        match value.trim() {
            "0" | "Standard" => CheckpointType::Standard,
            "1" | "Recovery" => CheckpointType::Recovery,
            "2" | "Planned" => CheckpointType::Planned,
            "3" | "Missing" => CheckpointType::Missing,
            "4" | "Replica" => CheckpointType::Replica,
            "5" | "AppConsistentReplica" => CheckpointType::AppConsistentReplica,
            "6" | "SyncedReplica" => CheckpointType::SyncedReplica,
            other => CheckpointType::Other(other.to_string()),
        }
    }
}

impl CheckpointType {
    /// Kebab-case name for the wire and the store; unknown types keep their own spelling.
    pub fn name(&self) -> &str {
        match self {
            CheckpointType::Standard => "standard",
            CheckpointType::Recovery => "recovery",
            CheckpointType::Planned => "planned",
            CheckpointType::Missing => "missing",
            CheckpointType::Replica => "replica",
            CheckpointType::AppConsistentReplica => "app-consistent-replica",
            CheckpointType::SyncedReplica => "synced-replica",
            CheckpointType::Other(s) => s,
        }
    }

    /// The inverse of [`CheckpointType::name`]; also takes Hyper-V's integers and names.
    pub fn parse(s: &str) -> CheckpointType {
        match s {
            "standard" => CheckpointType::Standard,
            "recovery" => CheckpointType::Recovery,
            "planned" => CheckpointType::Planned,
            "missing" => CheckpointType::Missing,
            "replica" => CheckpointType::Replica,
            "app-consistent-replica" => CheckpointType::AppConsistentReplica,
            "synced-replica" => CheckpointType::SyncedReplica,
            other => CheckpointType::from_hyperv(other),
        }
    }
}

/// A checkpoint (Hyper-V) or snapshot (libvirt) that froze an adapter's MAC.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Checkpoint {
    pub id: String,
    pub name: String,
    pub kind: CheckpointType,
    pub created: Option<Timestamp>,
}

impl Checkpoint {
    /// RDS pooled desktops roll back to this checkpoint on every logoff: "RDV_Rollback"
    /// anywhere in its name, in any case (Microsoft's RDS guidance; PowerShell's `-like`).
    pub fn is_rds_rollback(&self) -> bool {
        self.name.to_ascii_uppercase().contains("RDV_ROLLBACK")
    }
}

/// Whether an adapter is the VM's current one or frozen inside a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum AdapterLocation {
    Live,
    Checkpoint(Checkpoint),
}

/// One network adapter of a VM, live or in a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Adapter {
    /// Hyper-V adapter `Name` (e.g. `Network Adapter`) or libvirt alias / target dev: for
    /// display, not unique (Hyper-V names every new adapter "Network Adapter").
    pub name: String,
    /// The hypervisor's own unique adapter id (Hyper-V `Id`), which is how an adapter is
    /// addressed; `None` where the source has none (libvirt, the wire format, the store).
    #[cfg_attr(feature = "serde", serde(default))]
    pub id: Option<String>,
    pub mac: Mac,
    pub kind: MacKind,
    pub location: AdapterLocation,
}

/// How the agent knows how far its host's dynamic allocator got (what delegate rotates on).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum CursorSource {
    /// Read from the host (Hyper-V's `CurrentMacAddress` registry value), parsed.
    Registry,
    /// No readable cursor: a lower bound, the highest dynamic MAC of the range the host shows.
    InventoryBound,
}

impl CursorSource {
    pub fn name(self) -> &'static str {
        match self {
            CursorSource::Registry => "registry",
            CursorSource::InventoryBound => "inventory-bound",
        }
    }

    pub fn parse(s: &str) -> Result<CursorSource, String> {
        match s {
            "registry" => Ok(CursorSource::Registry),
            "inventory-bound" => Ok(CursorSource::InventoryBound),
            other => Err(format!(
                "unknown cursor source '{other}': expected registry or inventory-bound"
            )),
        }
    }
}

/// A VM registered on the host, with all its adapters (live and checkpoint ones).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Vm {
    id: String,
    pub name: String,
    pub state: VmState,
    pub adapters: Vec<Adapter>,
}

impl Vm {
    /// The id is what identifies a VM across hosts (a migrating VM keeps it), so it may not be empty.
    pub fn new(
        id: impl Into<String>,
        name: impl Into<String>,
        state: VmState,
    ) -> Result<Vm, InventoryError> {
        let id = id.into();
        let name = name.into();
        if id.trim().is_empty() {
            return Err(InventoryError::EmptyVmId { vm_name: name });
        }
        Ok(Vm {
            id,
            name,
            state,
            adapters: Vec::new(),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

/// The whole view of one host. Fields with invariants are private: the cursor must lie in the
/// range, and VM ids are unique on a host.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct HostInventory {
    host: String,
    pub cluster: Option<String>,
    pub ipv4: Vec<Ipv4Addr>,
    dynamic_range: Option<MacRange>,
    cursor: Option<Mac>,
    vms: Vec<Vm>,
    /// The management OS's own vNICs (Hyper-V `Get-VMNetworkAdapter -ManagementOS`): no VM's,
    /// but drawn from the same dynamic range, so they count when judging how far it is used.
    #[cfg_attr(feature = "serde", serde(default))]
    pub management_adapters: Vec<Adapter>,
    /// How the reporting agent knows the allocator's position; `None`: not said (an export, an
    /// older agent, or no strategy that needs one).
    #[cfg_attr(feature = "serde", serde(default))]
    pub cursor_source: Option<CursorSource>,
    /// The reporting agent's strategy (`guard`, `delegate+guard`, …), when it says.
    #[cfg_attr(feature = "serde", serde(default))]
    pub strategy: Option<String>,
}

impl HostInventory {
    pub fn new(host: impl Into<String>) -> Result<HostInventory, InventoryError> {
        let host = host.into();
        if host.trim().is_empty() {
            return Err(InventoryError::EmptyHostName);
        }
        Ok(HostInventory {
            host,
            cluster: None,
            ipv4: Vec::new(),
            dynamic_range: None,
            cursor: None,
            vms: Vec::new(),
            management_adapters: Vec::new(),
            cursor_source: None,
            strategy: None,
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn dynamic_range(&self) -> Option<MacRange> {
        self.dynamic_range
    }

    /// The last address the host's own allocator handed out, when known.
    pub fn cursor(&self) -> Option<Mac> {
        self.cursor
    }

    /// Sets the host's dynamic range and cursor together so the cursor is checked against the
    /// range it belongs to. A cursor without a range cannot be checked and is refused.
    pub fn set_dynamic_range(
        &mut self,
        range: Option<MacRange>,
        cursor: Option<Mac>,
    ) -> Result<(), InventoryError> {
        if let (Some(range), Some(cursor)) = (range, cursor)
            && !range.contains(cursor)
        {
            return Err(InventoryError::CursorOutsideRange { cursor, range });
        }
        self.dynamic_range = range;
        self.cursor = if range.is_some() { cursor } else { None };
        Ok(())
    }

    pub fn vms(&self) -> &[Vm] {
        &self.vms
    }

    /// The VMs for editing their adapters, name or state; ids stay fixed (the field is private)
    /// and none can be added or removed this way, so the uniqueness invariant holds.
    pub fn vms_mut(&mut self) -> &mut [Vm] {
        &mut self.vms
    }

    pub fn add_vm(&mut self, vm: Vm) -> Result<(), InventoryError> {
        if self.vms.iter().any(|v| v.id.eq_ignore_ascii_case(&vm.id)) {
            return Err(InventoryError::DuplicateVm {
                host: self.host.clone(),
                vm_id: vm.id,
            });
        }
        self.vms.push(vm);
        Ok(())
    }

    /// This inventory turned into another one given as a diff: `header`'s every field but its
    /// VMs (it has none), `len` VMs, of which those at the positions in `changed` (each below
    /// `len`) are replaced or appended, the others kept. Refused, and nothing changed, when the
    /// result would not be an inventory: another host, a position past the end, or two VMs
    /// with one id.
    pub fn patch(
        &mut self,
        header: &HostInventory,
        len: usize,
        changed: &[(usize, Vm)],
    ) -> Result<(), InventoryError> {
        let mismatch = || InventoryError::PatchMismatch {
            host: self.host.clone(),
        };
        if header.host != self.host || !header.vms.is_empty() {
            return Err(mismatch());
        }
        // Every position past the kept ones must be given, in order.
        let kept = self.vms.len().min(len);
        let mut next = kept;
        for (i, _) in changed.iter().filter(|(i, _)| *i >= kept) {
            if *i != next {
                return Err(mismatch());
            }
            next += 1;
        }
        if next != len || changed.iter().any(|(i, _)| *i >= len) {
            return Err(mismatch());
        }
        let mut vms = self.vms[..kept].to_vec();
        for (i, vm) in changed {
            match vms.get_mut(*i) {
                Some(v) => *v = vm.clone(),
                None => vms.push(vm.clone()),
            }
        }
        let mut ids = HashSet::with_capacity(vms.len());
        if let Some(dup) = vms.iter().find(|v| !ids.insert(v.id.to_ascii_lowercase())) {
            return Err(InventoryError::DuplicateVm {
                host: self.host.clone(),
                vm_id: dup.id.clone(),
            });
        }
        *self = HostInventory {
            vms,
            ..header.clone()
        };
        Ok(())
    }

    /// Every field but the VMs: what [`HostInventory::patch`] takes besides them.
    pub fn header(&self) -> HostInventory {
        HostInventory {
            host: self.host.clone(),
            cluster: self.cluster.clone(),
            ipv4: self.ipv4.clone(),
            dynamic_range: self.dynamic_range,
            cursor: self.cursor,
            vms: Vec::new(),
            management_adapters: self.management_adapters.clone(),
            cursor_source: self.cursor_source,
            strategy: self.strategy.clone(),
        }
    }

    /// Every adapter as a conflict-engine sighting, attributed to `source`.
    pub fn sightings(&self, source: &str) -> Vec<Sighting> {
        let mut out = Vec::new();
        for vm in &self.vms {
            for a in &vm.adapters {
                let seen = match &a.location {
                    AdapterLocation::Live => Seen::Live,
                    AdapterLocation::Checkpoint(c) => Seen::Checkpoint {
                        id: c.id.clone(),
                        name: c.name.clone(),
                    },
                };
                out.push(Sighting {
                    mac: a.mac,
                    dynamic: Some(a.kind == MacKind::Dynamic),
                    seen,
                    owner: Owner {
                        source: source.to_string(),
                        location: None,
                        host: Some(self.host.clone()),
                        vm_id: Some(vm.id.clone()),
                        vm_name: Some(vm.name.clone()),
                        adapter: Some(a.name.clone()),
                    },
                });
            }
        }
        for a in &self.management_adapters {
            out.push(Sighting {
                mac: a.mac,
                dynamic: Some(a.kind == MacKind::Dynamic),
                seen: Seen::ManagementOs,
                owner: Owner {
                    source: source.to_string(),
                    location: None,
                    host: Some(self.host.clone()),
                    vm_id: None,
                    vm_name: None,
                    adapter: Some(a.name.clone()),
                },
            });
        }
        out
    }

    /// The host's dynamic range(s) for overlap checks: the configured one when known, else the
    /// defaults Hyper-V would have derived from each of its IPs.
    pub fn host_ranges(&self) -> Vec<HostRange> {
        HostRange::for_host(
            &self.host,
            self.cluster.as_deref(),
            self.dynamic_range,
            &self.ipv4,
        )
    }

    /// The distinct MACs used by this host's VMs, live and frozen in checkpoints.
    pub fn macs(&self) -> HashSet<Mac> {
        self.vms
            .iter()
            .flat_map(|v| v.adapters.iter().map(|a| a.mac))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conflict::RangeOrigin;

    fn mac(s: &str) -> Mac {
        s.parse().unwrap()
    }

    fn range(s: &str) -> MacRange {
        s.parse().unwrap()
    }

    #[test]
    fn empty_names_and_ids_are_refused() {
        assert_eq!(HostInventory::new(" "), Err(InventoryError::EmptyHostName));
        assert_eq!(
            Vm::new("", "desk-01", VmState::Off),
            Err(InventoryError::EmptyVmId {
                vm_name: "desk-01".into()
            })
        );
    }

    #[test]
    fn duplicate_vm_id_on_one_host_is_refused_case_insensitively() {
        let mut h = HostInventory::new("HV1").unwrap();
        h.add_vm(Vm::new("5F0E-AA", "a", VmState::Running).unwrap())
            .unwrap();
        let err = h
            .add_vm(Vm::new("5f0e-aa", "b", VmState::Off).unwrap())
            .unwrap_err();
        assert_eq!(
            err,
            InventoryError::DuplicateVm {
                host: "HV1".into(),
                vm_id: "5f0e-aa".into()
            }
        );
        assert_eq!(h.vms().len(), 1);
    }

    #[test]
    fn cursor_must_lie_in_the_range() {
        let mut h = HostInventory::new("HV1").unwrap();
        let r = range("00155D018500-00155D0185FF");
        assert!(
            h.set_dynamic_range(Some(r), Some(mac("00155D018517")))
                .is_ok()
        );
        assert_eq!(h.cursor(), Some(mac("00155D018517")));
        assert_eq!(
            h.set_dynamic_range(Some(r), Some(mac("00155D018600"))),
            Err(InventoryError::CursorOutsideRange {
                cursor: mac("00155D018600"),
                range: r
            })
        );
        // the failed call changed nothing
        assert_eq!(h.cursor(), Some(mac("00155D018517")));
        h.set_dynamic_range(None, Some(mac("00155D018517")))
            .unwrap();
        assert_eq!(h.cursor(), None, "a cursor without a range is dropped");
    }

    #[test]
    fn sightings_keep_live_and_checkpoint_apart() {
        let mut h = HostInventory::new("HV1").unwrap();
        let mut vm = Vm::new("vm-1", "desk-01", VmState::Running).unwrap();
        vm.adapters.push(Adapter {
            id: None,
            name: "Network Adapter".into(),
            mac: mac("00155D018511"),
            kind: MacKind::Dynamic,
            location: AdapterLocation::Live,
        });
        vm.adapters.push(Adapter {
            id: None,
            name: "Network Adapter".into(),
            mac: mac("00155D018517"),
            kind: MacKind::Dynamic,
            location: AdapterLocation::Checkpoint(Checkpoint {
                id: "cp-1".into(),
                name: "RDV_ROLLBACK - 2015".into(),
                kind: CheckpointType::from_hyperv("0"),
                created: Some(Timestamp::from_millis(1_445_000_000_000)),
            }),
        });
        h.add_vm(vm).unwrap();
        let s = h.sightings("inventory HV1");
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].seen, Seen::Live);
        assert_eq!(
            s[1].seen,
            Seen::Checkpoint {
                id: "cp-1".into(),
                name: "RDV_ROLLBACK - 2015".into()
            }
        );
        assert_eq!(s[1].owner.vm_id.as_deref(), Some("vm-1"));
        assert_eq!(s[1].owner.host.as_deref(), Some("HV1"));
        assert_eq!(h.macs().len(), 2);
        let AdapterLocation::Checkpoint(c) = &h.vms()[0].adapters[1].location else {
            unreachable!()
        };
        assert!(c.is_rds_rollback());
        assert_eq!(c.kind, CheckpointType::Standard);
    }

    #[test]
    fn host_range_falls_back_to_the_ip_defaults() {
        let mut h = HostInventory::new("HV1").unwrap();
        h.ipv4 = vec!["192.168.1.133".parse().unwrap()];
        let derived = h.host_ranges();
        assert_eq!(derived.len(), 1);
        assert_eq!(derived[0].range, range("00155D018500-00155D0185FF"));
        assert_eq!(
            derived[0].origin,
            RangeOrigin::DerivedFromIp("192.168.1.133".parse().unwrap())
        );
        h.set_dynamic_range(Some(range("00155DF00000-00155DF000FF")), None)
            .unwrap();
        let configured = h.host_ranges();
        assert_eq!(configured.len(), 1);
        assert_eq!(configured[0].origin, RangeOrigin::Configured);
    }

    #[test]
    fn checkpoint_types_map_ints_and_names() {
        assert_eq!(
            CheckpointType::from_hyperv("5"),
            CheckpointType::AppConsistentReplica
        );
        assert_eq!(
            CheckpointType::from_hyperv("Recovery"),
            CheckpointType::Recovery
        );
        assert_eq!(
            CheckpointType::from_hyperv("42"),
            CheckpointType::Other("42".into())
        );
    }
}
