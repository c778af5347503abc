//! Hyper-V through one long-lived PowerShell child.
//!
//! - [`protocol`]: the line protocol (requests, responses, pushed events).
//! - [`child`]: spawning, restarting and talking to the child.
//! - [`bootstrap`]: the read-eval loop and event-log watcher the child runs.
//! - [`script`]: typed commands → exact PowerShell; [`quote`]: single-quoted literals.
//!
//! Results are parsed with the audit's Hyper-V JSON reader
//! ([`macpool_audit::hyperv_json::inventories`]), which already accepts PowerShell's quirks
//! (object vs array, enums as ints, `/Date(ms)/`, bare 12-hex MACs, UTF-16).

pub mod bootstrap;
pub mod child;
pub mod protocol;
pub mod quote;
pub mod script;

use std::time::{Duration, Instant};

use macpool_audit::hyperv_json;
use macpool_core::inventory::{AdapterLocation, Checkpoint, CheckpointType, HostInventory};
use macpool_core::{Mac, MacRange};
use serde_json::Value;

pub use child::{ChildConfig, PsChild};
pub use script::{Command, SelfCheck, Subscription};

use crate::events::{self, parse_event_xml};
use crate::hypervisor::{
    AdapterRef, Bookmarks, HostRangeState, HvError, HvEvent, HvResult, Hypervisor, MacSetting,
    VmStatus,
};

/// [`Hypervisor`] over a [`PsChild`].
pub struct PowerShellHypervisor {
    child: PsChild,
}

fn protocol(command: &str, message: impl Into<String>) -> HvError {
    HvError::Protocol {
        command: command.into(),
        message: message.into(),
    }
}

/// The inventory document (one host) as a domain inventory.
pub fn parse_inventory(result: &Value) -> HvResult<HostInventory> {
    let bytes = serde_json::to_vec(result).expect("a JSON value serialises");
    let (mut hosts, diagnostics) = hyperv_json::inventories(&bytes, usize::MAX);
    for d in &diagnostics {
        tracing::warn!(
            "inventory: {} {}",
            d.location.as_deref().unwrap_or(""),
            d.message
        );
    }
    match hosts.len() {
        1 => Ok(hosts.remove(0)),
        n => Err(protocol(
            "inventory",
            format!("expected one host document, got {n}: {result}"),
        )),
    }
}

/// The VM's current checkpoint from the inventory document's `VMs[].ParentCheckpointId/Name`.
/// `Err` when the properties are missing altogether ([likely] `ParentSnapshotId/Name` on
/// `Get-VM`'s objects: checked here, reported instead of guessed).
fn current_checkpoint(
    result: &Value,
    inv: &HostInventory,
    vm_id: &str,
) -> HvResult<Option<Checkpoint>> {
    let vms = result.get("VMs").map(protocol::as_list).unwrap_or_default();
    let Some(vm) = vms.into_iter().find(|v| {
        v.get("Id")
            .and_then(protocol::as_text)
            .is_some_and(|id| id.eq_ignore_ascii_case(vm_id))
    }) else {
        return Ok(None);
    };
    let (Some(id), Some(name)) = (vm.get("ParentCheckpointId"), vm.get("ParentCheckpointName"))
    else {
        return Err(protocol(
            "inventory",
            "the VM has no ParentCheckpointId/ParentCheckpointName properties: cannot tell its current checkpoint",
        ));
    };
    let (Some(id), name) = (protocol::as_text(id), protocol::as_text(name)) else {
        return Ok(None);
    };
    if id.trim().is_empty() || id == "00000000-0000-0000-0000-000000000000" {
        return Ok(None);
    }
    let known = inv
        .vms()
        .iter()
        .flat_map(|v| &v.adapters)
        .find_map(|a| match &a.location {
            AdapterLocation::Checkpoint(c) if c.id.eq_ignore_ascii_case(&id) => Some(c.clone()),
            _ => None,
        });
    Ok(Some(known.unwrap_or(Checkpoint {
        id,
        name: name.unwrap_or_default(),
        kind: CheckpointType::Other("unknown".into()),
        created: None,
    })))
}

fn parse_mac_field(v: &Value, key: &str) -> HvResult<Option<Mac>> {
    match v.get(key).and_then(protocol::as_text) {
        None => Ok(None),
        Some(s) if s.trim().is_empty() => Ok(None),
        Some(s) => Mac::parse(s.trim())
            .map(Some)
            .map_err(|e| protocol("host-range", format!("{key} '{s}': {e}"))),
    }
}

/// The host range document (`MacAddressMinimum`, `MacAddressMaximum`, `CurrentMacAddress`).
pub fn parse_host_range(v: &Value) -> HvResult<HostRangeState> {
    let min = parse_mac_field(v, "MacAddressMinimum")?;
    let max = parse_mac_field(v, "MacAddressMaximum")?;
    let range = match (min, max) {
        (Some(a), Some(b)) => Some(
            MacRange::new(a, b)
                .map_err(|e| protocol("host-range", format!("dynamic range: {e}")))?,
        ),
        _ => None,
    };
    // The cursor's value name, type and byte order are unverified: an unreadable one is
    // reported and treated as absent (delegate then falls back to the inventory), never fatal.
    let cursor = parse_mac_field(v, "CurrentMacAddress").unwrap_or_else(|e| {
        tracing::warn!("allocation cursor unreadable, treated as absent: {e}");
        None
    });
    // A cursor outside the range is reported, not trusted (the registry value is [likely]).
    let cursor = match (range, cursor) {
        (Some(r), Some(c)) if !r.contains(c) => {
            tracing::warn!("allocation cursor {c} lies outside the dynamic range {r}; ignored");
            None
        }
        (_, c) => c,
    };
    Ok(HostRangeState { range, cursor })
}

impl PowerShellHypervisor {
    pub fn new(cfg: ChildConfig) -> PowerShellHypervisor {
        PowerShellHypervisor {
            child: PsChild::new(cfg),
        }
    }

    /// The child, for tests (stand-in control requests) and diagnostics.
    pub fn child(&self) -> &PsChild {
        &self.child
    }

    /// Runs a read-only self-test check and returns its raw JSON.
    pub async fn check(&self, check: SelfCheck, channel: &str) -> HvResult<Value> {
        self.child
            .call(&Command::Check {
                check,
                channel: channel.into(),
            })
            .await
    }
}

impl Hypervisor for PowerShellHypervisor {
    async fn inventory(&self) -> HvResult<HostInventory> {
        let v = self.child.call(&Command::Inventory { vm_id: None }).await?;
        parse_inventory(&v)
    }

    async fn vm(&self, vm_id: &str) -> HvResult<Option<VmStatus>> {
        let v = self
            .child
            .call(&Command::Inventory {
                vm_id: Some(vm_id.into()),
            })
            .await?;
        let inv = parse_inventory(&v)?;
        let Some(vm) = inv
            .vms()
            .iter()
            .find(|x| x.id().eq_ignore_ascii_case(vm_id))
        else {
            return Ok(None);
        };
        let current_checkpoint = current_checkpoint(&v, &inv, vm_id)?;
        Ok(Some(VmStatus {
            vm: vm.clone(),
            current_checkpoint,
        }))
    }

    async fn host_range(&self) -> HvResult<HostRangeState> {
        let v = self.child.call(&Command::HostRange).await?;
        parse_host_range(&v)
    }

    async fn set_host_range(&self, range: MacRange) -> HvResult<()> {
        self.child
            .call(&Command::SetHostRange { range })
            .await
            .map(drop)
    }

    async fn set_adapter_mac(&self, adapter: &AdapterRef, setting: MacSetting) -> HvResult<()> {
        self.child
            .call(&Command::SetAdapterMac {
                adapter: adapter.clone(),
                setting,
            })
            .await
            .map(drop)
    }

    async fn turn_off(&self, vm_id: &str) -> HvResult<()> {
        self.child
            .call(&Command::TurnOff {
                vm_id: vm_id.into(),
            })
            .await
            .map(drop)
    }

    async fn start(&self, vm_id: &str) -> HvResult<()> {
        self.child
            .call(&Command::Start {
                vm_id: vm_id.into(),
            })
            .await
            .map(drop)
    }

    async fn watch(&self, resume: &Bookmarks) -> HvResult<()> {
        let subs = events::watched()
            .iter()
            .map(|(channel, ids)| Subscription {
                channel: channel.to_string(),
                event_ids: ids.to_vec(),
                after: resume.get(*channel).copied(),
            })
            .collect();
        self.child.watch(subs).await
    }

    async fn next_event(&self, wait: Duration) -> HvResult<Option<HvEvent>> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(line) = self.child.next_event(left).await? else {
                return Ok(None);
            };
            match parse_event_xml(&line.xml).and_then(|r| r.to_hv_event()) {
                Ok(ev) => return Ok(Some(ev)),
                Err(e) => tracing::warn!(
                    "event {} of {} skipped: {e}; raw: {}",
                    line.record_id,
                    line.channel,
                    line.xml
                ),
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    fn take_reanchored(&self) -> Bookmarks {
        self.child.take_reanchored()
    }

    async fn event(&self, channel: &str, record_id: u64) -> HvResult<Option<HvEvent>> {
        let v = self
            .child
            .call(&Command::GetEvent {
                channel: channel.into(),
                record_id,
            })
            .await?;
        let Some(xml) = protocol::as_list(&v)
            .into_iter()
            .find_map(protocol::as_text)
        else {
            return Ok(None);
        };
        parse_event_xml(&xml)
            .and_then(|r| r.to_hv_event())
            .map(Some)
            .map_err(|e| protocol("get-event", format!("{e}; raw: {xml}")))
    }
}

/// The exact PowerShell a plan's mutating steps would run (`--dry-run`).
pub fn plan_scripts(plan: &crate::decide::Plan) -> Vec<String> {
    use crate::decide::Step;
    plan.steps
        .iter()
        .map(|s| match s {
            Step::TurnOff { vm_id } => Command::TurnOff {
                vm_id: vm_id.clone(),
            }
            .script(),
            Step::Start { vm_id } => Command::Start {
                vm_id: vm_id.clone(),
            }
            .script(),
            Step::SetMac { adapter, new, .. } => Command::SetAdapterMac {
                adapter: adapter.clone(),
                setting: *new,
            }
            .script(),
            Step::Wait { seconds } => format!("Start-Sleep -Seconds {seconds}"),
        })
        .collect()
}
