//! The simulated cluster as the agent sees it: one [`Hypervisor`] per host, over the shared
//! [`Cluster`]. The agent's decision logic runs against this exactly as against Hyper-V over
//! PowerShell or the stand-in.
//!
//! Every call completes at once (the futures are ready when returned); the cluster sits behind a
//! `Mutex` only because the trait asks for `Send + Sync` — a run is single-threaded, so the
//! lock is never contended and never held across an `.await`.

use std::future::{Future, ready};
use std::sync::Mutex;
use std::time::Duration;

use macpool_agent::{
    AdapterRef, Bookmarks, HostRangeState, HvError, HvEvent, HvResult, Hypervisor, MacSetting,
    VmStatus,
};
use macpool_core::MacRange;
use macpool_core::inventory::HostInventory;

use crate::cluster::{ADAPTER, Cluster};

/// One host of the simulated cluster.
pub struct HostView<'a> {
    cluster: &'a Mutex<Cluster>,
    host: u32,
}

impl<'a> HostView<'a> {
    pub fn new(cluster: &'a Mutex<Cluster>, host: u32) -> HostView<'a> {
        HostView { cluster, host }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Cluster) -> T) -> T {
        f(&mut self
            .cluster
            .lock()
            .expect("the cluster lock is never poisoned"))
    }

    /// The VM's key when it is registered on this host.
    fn key(c: &Cluster, host: u32, vm_id: &str) -> HvResult<u32> {
        c.key_of(vm_id)
            .filter(|k| c.vm(*k).host == host)
            .ok_or_else(|| HvError::Failed {
                command: "get-vm".into(),
                message: format!("Hyper-V was unable to find a virtual machine with id '{vm_id}'."),
            })
    }
}

impl Hypervisor for HostView<'_> {
    fn inventory(&self) -> impl Future<Output = HvResult<HostInventory>> + Send {
        ready(Ok(self.with(|c| c.inventory(self.host))))
    }

    fn vm(&self, vm_id: &str) -> impl Future<Output = HvResult<Option<VmStatus>>> + Send {
        ready(Ok(self.with(|c| c.vm_status(self.host, vm_id))))
    }

    fn host_range(&self) -> impl Future<Output = HvResult<HostRangeState>> + Send {
        ready(Ok(self.with(|c| {
            let h = &c.hosts[self.host as usize];
            HostRangeState {
                range: Some(h.range),
                cursor: h.cursor,
            }
        })))
    }

    /// hyperv.md: `Set-VMHost -MacAddressMinimum/-Maximum` sets the range; existing VMs keep
    /// their MACs. The allocator continues from the new range's start.
    fn set_host_range(&self, range: MacRange) -> impl Future<Output = HvResult<()>> + Send {
        self.with(|c| c.set_host_range(self.host, range));
        ready(Ok(()))
    }

    fn set_adapter_mac(
        &self,
        adapter: &AdapterRef,
        setting: MacSetting,
    ) -> impl Future<Output = HvResult<()>> + Send {
        let r = self.with(|c| {
            let key = Self::key(c, self.host, &adapter.vm_id)?;
            if !adapter.adapter.eq_ignore_ascii_case(ADAPTER) {
                return Err(HvError::Failed {
                    command: "set-adapter-mac".into(),
                    message: format!("expected one adapter named '{}', found 0", adapter.adapter),
                });
            }
            c.set_mac(key, adapter.checkpoint_id.as_deref(), setting)
        });
        ready(r)
    }

    fn turn_off(&self, vm_id: &str) -> impl Future<Output = HvResult<()>> + Send {
        ready(self.with(|c| {
            let key = Self::key(c, self.host, vm_id)?;
            c.turn_off(key);
            Ok(())
        }))
    }

    fn start(&self, vm_id: &str) -> impl Future<Output = HvResult<()>> + Send {
        ready(self.with(|c| {
            let key = Self::key(c, self.host, vm_id)?;
            c.start(key)
        }))
    }

    fn watch(&self, _resume: &Bookmarks) -> impl Future<Output = HvResult<()>> + Send {
        self.with(|c| c.watch(self.host));
        ready(Ok(()))
    }

    /// The pause costs no real time: a forced restart's whole outage, this wait included, is
    /// one draw on the simulated clock (the crate's docs, "one choice about time").
    fn pause(&self, _wait: Duration) -> impl Future<Output = ()> + Send {
        ready(())
    }

    fn next_event(
        &self,
        _wait: Duration,
    ) -> impl Future<Output = HvResult<Option<HvEvent>>> + Send {
        ready(Ok(self.with(|c| c.next_event(self.host))))
    }

    fn event(
        &self,
        channel: &str,
        record_id: u64,
    ) -> impl Future<Output = HvResult<Option<HvEvent>>> + Send {
        ready(Ok(
            self.with(|c| c.past_event(self.host, channel, record_id))
        ))
    }
}
