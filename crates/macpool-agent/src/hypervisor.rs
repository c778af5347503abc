//! The one interface the agent's decision logic is written against. Hyper-V (over PowerShell),
//! the test stand-in and the simulator implement it; nothing in here knows about PowerShell.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use macpool_core::inventory::{Checkpoint, HostInventory, Vm};
use macpool_core::{Mac, MacRange, Timestamp};

/// What a hypervisor reported, reduced to what the agent acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// A checkpoint was applied or saved state restored (Hyper-V Worker 18596).
    Restored,
    /// A VM was turned on (Hyper-V Worker 18500).
    Started,
    /// A VM was created (Hyper-V VMMS 13002 or 18304).
    Created,
    /// A VM was deleted (Hyper-V VMMS 13003).
    Deleted,
    /// A VM was turned off or shut down (libvirt `STOPPED`; not watched on Hyper-V).
    Stopped,
}

impl EventKind {
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Restored => "restored",
            EventKind::Started => "started",
            EventKind::Created => "created",
            EventKind::Deleted => "deleted",
            EventKind::Stopped => "stopped",
        }
    }
}

/// One hypervisor event. `channel` + `record_id` identify it (the bookmark); `raw` is the text it
/// was parsed from, kept for the log and for anything the agent cannot explain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HvEvent {
    pub kind: EventKind,
    pub channel: String,
    pub event_id: u32,
    pub record_id: u64,
    pub time: Option<Timestamp>,
    pub vm_id: String,
    pub vm_name: Option<String>,
    pub raw: String,
}

/// Per channel, the last event record id already handed to the agent. Resuming from it yields
/// exactly the later events.
pub type Bookmarks = BTreeMap<String, u64>;

/// One adapter, live (`checkpoint_id: None`) or frozen in a checkpoint. Addressed by `id` (the
/// Hyper-V adapter `Id`) where the hypervisor has one: names are not unique (every new Hyper-V
/// adapter is "Network Adapter"). Without an id, by name; an ambiguous name is an error of the
/// implementation, never a guess.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct AdapterRef {
    pub vm_id: String,
    /// The adapter's name, for display (and addressing where there is no `id`).
    pub adapter: String,
    #[serde(default)]
    pub id: Option<String>,
    pub checkpoint_id: Option<String>,
}

/// How an adapter should get its MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MacSetting {
    Static(Mac),
    Dynamic,
}

impl std::fmt::Display for MacSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MacSetting::Static(m) => write!(f, "static {m}"),
            MacSetting::Dynamic => f.write_str("dynamic"),
        }
    }
}

/// The host's own dynamic allocator: its range and the last address it handed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostRangeState {
    pub range: Option<MacRange>,
    pub cursor: Option<Mac>,
}

/// One VM as it is now: its adapters (live and checkpoint ones) and the checkpoint it was last
/// restored from / is based on (Hyper-V `ParentCheckpoint`), when it has one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmStatus {
    pub vm: Vm,
    pub current_checkpoint: Option<Checkpoint>,
}

/// Why a hypervisor call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HvError {
    /// The hypervisor could not be asked (the PowerShell child is down, timed out, restarting).
    /// Nothing is known about whether the command ran.
    #[error("hypervisor unavailable: {0}")]
    Unavailable(String),
    /// The hypervisor ran the command and refused it; the state is as it was unless it says so.
    #[error("{command} failed: {message}")]
    Failed { command: String, message: String },
    /// The answer could not be understood (logged with the raw text).
    #[error("unexpected answer to {command}: {message}")]
    Protocol { command: String, message: String },
    /// This hypervisor has no such thing (libvirt has no host-wide dynamic MAC range, so the
    /// `delegate` strategy cannot work there); asking again will not change the answer.
    #[error("not applicable: {0}")]
    NotApplicable(String),
}

pub type HvResult<T> = Result<T, HvError>;

/// The hypervisor as the agent sees it. Implementations must be cheap to share (`&self` only)
/// and must not retry mutations on their own: a failed command is reported, not repeated.
pub trait Hypervisor: Send + Sync {
    /// Everything on the host: VMs, live and checkpoint adapters, dynamic range and cursor.
    fn inventory(&self) -> impl Future<Output = HvResult<HostInventory>> + Send;

    /// One VM, or `None` when it is not registered on this host.
    fn vm(&self, vm_id: &str) -> impl Future<Output = HvResult<Option<VmStatus>>> + Send;

    /// The host's dynamic MAC range and its allocation cursor.
    fn host_range(&self) -> impl Future<Output = HvResult<HostRangeState>> + Send;

    /// Sets the host's dynamic MAC range (existing VMs keep their MACs).
    fn set_host_range(&self, range: MacRange) -> impl Future<Output = HvResult<()>> + Send;

    /// Sets one adapter's MAC static or dynamic. Live adapters: only while the VM is off.
    fn set_adapter_mac(
        &self,
        adapter: &AdapterRef,
        setting: MacSetting,
    ) -> impl Future<Output = HvResult<()>> + Send;

    /// Turns the VM off (no guest shutdown: the state it had is being discarded anyway).
    fn turn_off(&self, vm_id: &str) -> impl Future<Output = HvResult<()>> + Send;

    /// Starts (turns on) the VM.
    fn start(&self, vm_id: &str) -> impl Future<Output = HvResult<()>> + Send;

    /// Starts delivering events after `resume` (per channel); channels not in it start now.
    /// Calling it again replaces the subscription.
    fn watch(&self, resume: &Bookmarks) -> impl Future<Output = HvResult<()>> + Send;

    /// The next event, waiting at most `wait`; `Ok(None)` when none came in that time.
    /// Implementations restart their event source when it dies and resume after the last event
    /// they delivered, so none is lost or delivered twice.
    fn next_event(&self, wait: Duration) -> impl Future<Output = HvResult<Option<HvEvent>>> + Send;

    /// One past event by channel and record id (Task Scheduler mode), `None` when not found.
    fn event(
        &self,
        channel: &str,
        record_id: u64,
    ) -> impl Future<Output = HvResult<Option<HvEvent>>> + Send;

    /// Waits `wait` between two steps of a plan (blog-compatible's pause between turn-off and
    /// start). A real host waits on the clock; a simulated one has its own clock account for
    /// it, so the simulator needs no paused Tokio clock (tokio's `test-util`).
    fn pause(&self, wait: Duration) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(wait)
    }

    /// Channels whose saved bookmark was found ahead of the log (a cleared log, record ids
    /// restarted) and were re-anchored since the last call: channel → the record id now resumed
    /// after. The agent saves these and pushes an inventory to cover the gap.
    fn take_reanchored(&self) -> Bookmarks {
        Bookmarks::new()
    }
}
