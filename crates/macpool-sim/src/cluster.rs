//! The Hyper-V failover cluster: hosts with their own dynamic MAC allocators, VMs with one
//! network adapter and an `RDV_ROLLBACK` checkpoint, and the one L2 segment they share.
//!
//! Each rule here is one line of `shared/reference/hyperv.md` (cited at the function that
//! implements it); the crate docs list them all. The cluster also keeps the network's view —
//! which MACs powered-on VMs use, and how many — incrementally, so that counting duplicates
//! costs O(1) per change rather than a scan of the cluster.

use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;

use macpool_agent::events::{
    EV_CREATED, EV_DELETED, EV_RESTORED, EV_STARTED, VMMS_ADMIN, WORKER_ADMIN,
};
use macpool_agent::{EventKind, HvError, HvEvent, HvResult, MacSetting, VmStatus};
use macpool_core::inventory::{
    Adapter, AdapterLocation, Checkpoint, CheckpointType, HostInventory, MacKind, Vm, VmState,
};
use macpool_core::{Mac, MacRange, Timestamp};

use crate::params::HostSpec;

/// Index of a VM in the cluster's arena (reused after deletion).
pub(crate) type VmKey = u32;

/// The name every simulated VM gives its one adapter (Hyper-V's default).
pub const ADAPTER: &str = "Network Adapter";

/// How many past events each host keeps for `Hypervisor::event` (Task Scheduler mode).
const EVENT_LOG: usize = 32;

/// One adapter's MAC and whether Hyper-V assigns it (`DynamicMacAddressEnabled`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Nic {
    pub mac: Mac,
    pub dynamic: bool,
}

impl Nic {
    /// The adapter after `Set-VMNetworkAdapter`: a static MAC replaces it; dynamic keeps the
    /// current MAC until the next start re-checks it.
    fn with(self, setting: MacSetting) -> Nic {
        match setting {
            MacSetting::Static(mac) => Nic {
                mac,
                dynamic: false,
            },
            MacSetting::Dynamic => Nic {
                dynamic: true,
                ..self
            },
        }
    }
}

/// A checkpoint: the adapter as it was when the checkpoint was taken.
#[derive(Clone, Debug)]
pub(crate) struct Frozen {
    pub id: String,
    pub name: String,
    pub nic: Nic,
    pub created: Timestamp,
}

#[derive(Clone, Debug)]
pub(crate) struct VmRec {
    pub id: String,
    pub name: String,
    pub host: u32,
    /// Index in its host's `vms`.
    pos: u32,
    pub running: bool,
    pub nic: Nic,
    pub checkpoint: Option<Frozen>,
    /// Changes (at least) whenever anything the VM's inventory entry shows changes: see
    /// [`Cluster::refresh_inventory`].
    stamp: u64,
}

pub(crate) struct Host {
    pub name: String,
    pub ip: Ipv4Addr,
    pub range: MacRange,
    /// The last address this host's allocator handed out (`CurrentMacAddress`).
    pub cursor: Option<Mac>,
    pub vms: Vec<VmKey>,
    /// Live adapters' MACs of the VMs registered here: what the in-use check sees.
    live: HashMap<Mac, u32>,
    /// Per channel (worker, VMMS), the next event record id.
    next_record: [u64; 2],
    log: VecDeque<HvEvent>,
    pending: VecDeque<HvEvent>,
    watching: bool,
    /// Changes (at least) whenever anything the host's inventory shows changes: see
    /// [`Cluster::host_stamp`].
    stamp: u64,
}

/// The shared L2 segment as the network sees it, kept up to date on every change.
#[derive(Default)]
pub(crate) struct Network {
    /// Powered-on VMs per live MAC.
    powered: HashMap<Mac, u32>,
    /// Adapters (live of every VM, and frozen in checkpoints) per MAC.
    refs: HashMap<Mac, u32>,
    /// Σ over MACs of (powered-on VMs − 1), when positive: the extra VMs on duplicated MACs.
    excess: u64,
    /// MACs touched since the last settle: (mac, powered count before, peak count).
    window: Vec<(Mac, u32, u32)>,
}

/// What one settled step did to duplicates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Settled {
    /// Extra powered-on VMs that joined a MAC and are still on it.
    pub incidents: u64,
    /// Extra VMs that joined a MAC and were gone again by the end of the step (the agent's
    /// reaction removed the duplicate before the step ended).
    pub averted: u64,
}

impl Network {
    fn window_index(&mut self, mac: Mac, before: u32) -> usize {
        match self.window.iter().position(|w| w.0 == mac) {
            Some(i) => i,
            None => {
                self.window.push((mac, before, before));
                self.window.len() - 1
            }
        }
    }

    fn on(&mut self, mac: Mac) {
        if mac.is_zero() {
            return;
        }
        let c = self.powered.entry(mac).or_insert(0);
        let before = *c;
        *c += 1;
        let now = *c;
        if now >= 2 {
            self.excess += 1;
        }
        let i = self.window_index(mac, before);
        self.window[i].2 = self.window[i].2.max(now);
    }

    fn off(&mut self, mac: Mac) {
        if mac.is_zero() {
            return;
        }
        let Some(c) = self.powered.get_mut(&mac) else {
            debug_assert!(false, "powering off {mac} which no VM has on");
            return;
        };
        let before = *c;
        *c -= 1;
        if before >= 2 {
            self.excess -= 1;
        }
        if *c == 0 {
            self.powered.remove(&mac);
        }
        self.window_index(mac, before);
    }

    fn add_ref(&mut self, mac: Mac) {
        if !mac.is_zero() {
            *self.refs.entry(mac).or_insert(0) += 1;
        }
    }

    fn drop_ref(&mut self, mac: Mac) {
        if mac.is_zero() {
            return;
        }
        if let Some(c) = self.refs.get_mut(&mac) {
            *c -= 1;
            if *c == 0 {
                self.refs.remove(&mac);
            }
        }
    }

    /// Ends a step: compares each touched MAC's powered-on count with the one before the step.
    pub fn settle(&mut self) -> Settled {
        let mut s = Settled::default();
        for (mac, before, peak) in self.window.drain(..) {
            let after = self.powered.get(&mac).copied().unwrap_or(0);
            let base = before.max(1);
            s.incidents += u64::from(after.saturating_sub(base));
            s.averted += u64::from(peak.saturating_sub(after.max(base)));
        }
        s
    }

    /// Extra powered-on VMs on duplicated MACs right now.
    pub fn excess(&self) -> u64 {
        self.excess
    }

    /// MACs that at least two powered-on VMs use right now.
    pub fn duplicated_macs(&self) -> u64 {
        self.powered.values().filter(|c| **c >= 2).count() as u64
    }

    /// Powered-on VMs whose live adapter has `mac` right now.
    pub fn powered_on(&self, mac: Mac) -> u32 {
        self.powered.get(&mac).copied().unwrap_or(0)
    }

    /// Distinct MACs used by any VM, live or frozen in a checkpoint.
    pub fn addresses_in_use(&self) -> u64 {
        self.refs.len() as u64
    }
}

/// The whole cluster.
pub struct Cluster {
    pub(crate) hosts: Vec<Host>,
    vms: Vec<Option<VmRec>>,
    free: Vec<VmKey>,
    by_id: HashMap<String, VmKey>,
    pub(crate) net: Network,
    pub(crate) now: Timestamp,
    pub(crate) name: String,
    /// Whether anybody consumes events (hyperv-default does not; skipping them saves time).
    emit_events: bool,
    emitted: Vec<(u32, HvEvent)>,
    /// The last stamp handed out (stamps are unique across VMs and hosts).
    stamp: u64,
}

fn refuse(command: &str, message: impl Into<String>) -> HvError {
    HvError::Failed {
        command: command.into(),
        message: message.into(),
    }
}

impl Cluster {
    pub(crate) fn new(hosts: &[HostSpec], name: &str, emit_events: bool) -> Cluster {
        Cluster {
            hosts: hosts
                .iter()
                .map(|h| Host {
                    name: h.name.clone(),
                    ip: h.ip,
                    range: h.range,
                    cursor: None,
                    vms: Vec::new(),
                    live: HashMap::new(),
                    next_record: [1000, 1000],
                    log: VecDeque::new(),
                    pending: VecDeque::new(),
                    watching: false,
                    stamp: 0,
                })
                .collect(),
            vms: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::new(),
            net: Network::default(),
            now: Timestamp(0),
            name: name.into(),
            emit_events,
            emitted: Vec::new(),
            stamp: 0,
        }
    }

    /// A number that changes (at least) whenever anything the host's inventory shows changes:
    /// a VM arrives or leaves, one of its VMs may have changed, the cursor or range moved.
    /// Unchanged: [`Cluster::refresh_inventory`] has nothing to do.
    pub(crate) fn host_stamp(&self, host: u32) -> u64 {
        self.hosts[host as usize].stamp
    }

    fn touch_host(&mut self, host: u32) {
        self.stamp += 1;
        self.hosts[host as usize].stamp = self.stamp;
    }

    /// The VM's inventory entry (and so its host's inventory) may have changed.
    fn touch_vm(&mut self, key: VmKey) {
        self.stamp += 1;
        let stamp = self.stamp;
        let host = self.vm(key).host;
        self.hosts[host as usize].stamp = stamp;
        self.vm_mut(key).stamp = stamp;
    }

    pub(crate) fn vm(&self, key: VmKey) -> &VmRec {
        self.vms[key as usize].as_ref().expect("a live VM key")
    }

    fn vm_mut(&mut self, key: VmKey) -> &mut VmRec {
        self.vms[key as usize].as_mut().expect("a live VM key")
    }

    pub(crate) fn key_of(&self, vm_id: &str) -> Option<VmKey> {
        self.by_id.get(vm_id).copied()
    }

    /// Every VM currently registered, as (key, record).
    pub(crate) fn all_vms(&self) -> impl Iterator<Item = (VmKey, &VmRec)> {
        self.vms
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.as_ref().map(|v| (i as VmKey, v)))
    }

    /// Events produced since the last call, with the host that logged them.
    pub(crate) fn take_events(&mut self, into: &mut Vec<(u32, HvEvent)>) {
        into.clear();
        std::mem::swap(into, &mut self.emitted);
    }

    fn emit(&mut self, host: u32, kind: EventKind, key: VmKey) {
        if !self.emit_events {
            return;
        }
        let (channel, event_id, ch) = match kind {
            EventKind::Restored => (WORKER_ADMIN, EV_RESTORED, 0),
            EventKind::Started => (WORKER_ADMIN, EV_STARTED, 0),
            EventKind::Created => (VMMS_ADMIN, EV_CREATED, 1),
            EventKind::Deleted => (VMMS_ADMIN, EV_DELETED, 1),
            // hyperv.md: 18502 "turned off"; the agent does not watch it on Hyper-V
            EventKind::Stopped => (WORKER_ADMIN, 18502, 0),
        };
        let (vm_id, vm_name) = {
            let v = self.vm(key);
            (v.id.clone(), v.name.clone())
        };
        let h = &mut self.hosts[host as usize];
        let record_id = h.next_record[ch];
        h.next_record[ch] += 1;
        let ev = HvEvent {
            kind,
            channel: channel.to_string(),
            event_id,
            record_id,
            time: Some(self.now),
            vm_id,
            vm_name: Some(vm_name),
            raw: String::new(),
        };
        if h.log.len() == EVENT_LOG {
            h.log.pop_front();
        }
        h.log.push_back(ev.clone());
        if h.watching {
            h.pending.push_back(ev.clone());
        }
        self.emitted.push((host, ev));
    }

    /// hyperv.md "Dynamic MAC ranges": round-robin from the cursor through the host's range,
    /// wrapping around; the in-use check sees only the live adapters of VMs registered on *this*
    /// host. `None` when every address is in use here (the start then fails).
    fn allocate(&mut self, host: u32) -> Option<Mac> {
        let h = &mut self.hosts[host as usize];
        let first = h.range.first().to_u64();
        let size = h.range.len();
        let start = match h.cursor {
            Some(c) if h.range.contains(c) => c.to_u64() - first + 1,
            _ => 0,
        };
        for i in 0..size {
            let m = Mac::from_u64(first + (start + i) % size).expect("inside the range");
            if !h.live.contains_key(&m) {
                h.cursor = Some(m);
                self.touch_host(host);
                return Some(m);
            }
        }
        None
    }

    fn host_add_live(&mut self, host: u32, mac: Mac) {
        if !mac.is_zero() {
            *self.hosts[host as usize].live.entry(mac).or_insert(0) += 1;
        }
    }

    fn host_drop_live(&mut self, host: u32, mac: Mac) {
        if mac.is_zero() {
            return;
        }
        let live = &mut self.hosts[host as usize].live;
        if let Some(c) = live.get_mut(&mac) {
            *c -= 1;
            if *c == 0 {
                live.remove(&mac);
            }
        }
    }

    /// Replaces a VM's live adapter, keeping the host's in-use set, the address references and
    /// the powered-on counts right.
    fn set_live_nic(&mut self, key: VmKey, nic: Nic) {
        let (host, old, running) = {
            let v = self.vm(key);
            (v.host, v.nic, v.running)
        };
        if old.mac != nic.mac {
            self.host_drop_live(host, old.mac);
            self.host_add_live(host, nic.mac);
            self.net.drop_ref(old.mac);
            self.net.add_ref(nic.mac);
            if running {
                self.net.off(old.mac);
                self.net.on(nic.mac);
            }
        }
        if old != nic {
            self.vm_mut(key).nic = nic;
            self.touch_vm(key);
        }
    }

    /// A new VM with one dynamic adapter, off. Like the stand-in, the MAC is assigned at
    /// creation (zero when the range is exhausted; the start then tries again).
    pub(crate) fn create_vm(&mut self, id: String, name: String, host: u32) -> VmKey {
        let mac = self.allocate(host).unwrap_or(Mac::ZERO);
        let key = self.free.pop().unwrap_or_else(|| {
            self.vms.push(None);
            (self.vms.len() - 1) as VmKey
        });
        let pos = self.hosts[host as usize].vms.len() as u32;
        self.hosts[host as usize].vms.push(key);
        self.by_id.insert(id.clone(), key);
        self.vms[key as usize] = Some(VmRec {
            id,
            name,
            host,
            pos,
            running: false,
            nic: Nic { mac, dynamic: true },
            checkpoint: None,
            stamp: 0,
        });
        self.touch_vm(key);
        self.host_add_live(host, mac);
        self.net.add_ref(mac);
        self.emit(host, EventKind::Created, key);
        key
    }

    /// hyperv.md: "A dynamic MAC is (re)checked only when the VM is *started*: if it lies
    /// outside the current host's range, a new one is taken from that host's range." An
    /// exhausted range makes the start fail ("Attempt to access invalid address").
    pub(crate) fn start(&mut self, key: VmKey) -> HvResult<()> {
        let (host, nic, running) = {
            let v = self.vm(key);
            (v.host, v.nic, v.running)
        };
        if running {
            return Err(refuse(
                "start",
                format!(
                    "'{}' failed to change state: it is already running",
                    self.vm(key).name
                ),
            ));
        }
        let range = self.hosts[host as usize].range;
        if nic.dynamic && (nic.mac.is_zero() || !range.contains(nic.mac)) {
            let Some(fresh) = self.allocate(host) else {
                return Err(refuse("start", "Attempt to access invalid address."));
            };
            self.set_live_nic(
                key,
                Nic {
                    mac: fresh,
                    dynamic: true,
                },
            );
        }
        let mac = self.vm(key).nic.mac;
        self.vm_mut(key).running = true;
        self.touch_vm(key);
        self.net.on(mac);
        self.emit(host, EventKind::Started, key);
        Ok(())
    }

    /// Turned off (no guest shutdown); a VM already off stays off.
    pub(crate) fn turn_off(&mut self, key: VmKey) {
        let v = self.vm(key);
        if v.running {
            let mac = v.nic.mac;
            self.vm_mut(key).running = false;
            self.touch_vm(key);
            self.net.off(mac);
        }
    }

    /// DESIGN.md: "a checkpoint freezes the MAC it had". RDS takes `RDV_ROLLBACK` right after a
    /// pooled desktop's first start (seed: "shortly after the desktop powers on for the first
    /// time").
    pub(crate) fn checkpoint(&mut self, key: VmKey, id: String, name: String) {
        let nic = self.vm(key).nic;
        let now = self.now;
        if let Some(old) = self.vm_mut(key).checkpoint.take() {
            self.net.drop_ref(old.nic.mac);
        }
        self.net.add_ref(nic.mac);
        self.vm_mut(key).checkpoint = Some(Frozen {
            id,
            name,
            nic,
            created: now,
        });
        self.touch_vm(key);
    }

    /// Logoff → RDS restores `RDV_ROLLBACK`. hyperv.md: "a restore from a checkpoint with memory
    /// keeps the checkpoint's MAC" (no re-check: this is not a start); the desktop is running
    /// afterwards. Logs 18596.
    pub(crate) fn restore(&mut self, key: VmKey) -> HvResult<()> {
        let Some(frozen) = self.vm(key).checkpoint.as_ref().map(|c| c.nic) else {
            return Err(refuse("restore", "the VM has no checkpoint"));
        };
        self.set_live_nic(key, frozen);
        let v = self.vm(key);
        if !v.running {
            let mac = v.nic.mac;
            self.vm_mut(key).running = true;
            self.touch_vm(key);
            self.net.on(mac);
        }
        let host = self.vm(key).host;
        self.emit(host, EventKind::Restored, key);
        Ok(())
    }

    /// Live migration: seed "When a VM using dynamic MAC addressing live migrates to a new
    /// node in a failover cluster, it retains the same MAC address"; hyperv.md: not re-checked
    /// after live migration.
    pub(crate) fn migrate(&mut self, key: VmKey, to: u32) {
        let (from, pos, mac) = {
            let v = self.vm(key);
            (v.host, v.pos, v.nic.mac)
        };
        if from == to {
            return;
        }
        self.unlink(from, pos);
        self.host_drop_live(from, mac);
        let npos = self.hosts[to as usize].vms.len() as u32;
        self.hosts[to as usize].vms.push(key);
        self.host_add_live(to, mac);
        let v = self.vm_mut(key);
        v.host = to;
        v.pos = npos;
        self.touch_vm(key);
        self.touch_host(from);
    }

    /// Removes the VM at `pos` from a host's list in O(1).
    fn unlink(&mut self, host: u32, pos: u32) {
        let vms = &mut self.hosts[host as usize].vms;
        vms.swap_remove(pos as usize);
        if let Some(&moved) = vms.get(pos as usize) {
            self.vm_mut(moved).pos = pos;
        }
        self.touch_host(host);
    }

    /// The VM is turned off and deleted with its checkpoints. Logs 13003.
    pub(crate) fn delete(&mut self, key: VmKey) {
        self.turn_off(key);
        let host = self.vm(key).host;
        self.emit(host, EventKind::Deleted, key);
        let v = self.vms[key as usize].take().expect("a live VM key");
        self.unlink(host, v.pos);
        self.host_drop_live(host, v.nic.mac);
        self.net.drop_ref(v.nic.mac);
        if let Some(c) = &v.checkpoint {
            self.net.drop_ref(c.nic.mac);
        }
        self.by_id.remove(&v.id);
        self.free.push(key);
    }

    /// hyperv.md "Changing MACs": a live adapter only while the VM is off; a checkpoint's
    /// adapter any time (the published workaround does). Dynamic keeps the current MAC until
    /// the next start re-checks it, as the stand-in does.
    pub(crate) fn set_mac(
        &mut self,
        key: VmKey,
        checkpoint: Option<&str>,
        setting: MacSetting,
    ) -> HvResult<()> {
        match checkpoint {
            None => {
                if self.vm(key).running {
                    return Err(refuse(
                        "set-adapter-mac",
                        "The operation cannot be performed while the virtual machine is in its current state.",
                    ));
                }
                let nic = self.vm(key).nic.with(setting);
                self.set_live_nic(key, nic);
                Ok(())
            }
            Some(cp) => {
                let Some(frozen) =
                    (self.vm(key).checkpoint.clone()).filter(|f| f.id.eq_ignore_ascii_case(cp))
                else {
                    return Err(refuse(
                        "set-adapter-mac",
                        "Unable to find a snapshot matching the given criteria.",
                    ));
                };
                let nic = frozen.nic.with(setting);
                self.net.drop_ref(frozen.nic.mac);
                self.net.add_ref(nic.mac);
                if nic != frozen.nic {
                    self.vm_mut(key).checkpoint.as_mut().expect("checked").nic = nic;
                    self.touch_vm(key);
                }
                Ok(())
            }
        }
    }

    fn checkpoint_of(f: &Frozen) -> Checkpoint {
        Checkpoint {
            id: f.id.clone(),
            name: f.name.clone(),
            kind: CheckpointType::Standard,
            created: Some(f.created),
        }
    }

    fn domain_vm(v: &VmRec) -> Vm {
        let state = if v.running {
            VmState::Running
        } else {
            VmState::Off
        };
        let mut vm = Vm::new(v.id.clone(), v.name.clone(), state).expect("simulated ids are set");
        let kind = |n: Nic| {
            if n.dynamic {
                MacKind::Dynamic
            } else {
                MacKind::Static
            }
        };
        vm.adapters.push(Adapter {
            id: None,
            name: ADAPTER.into(),
            mac: v.nic.mac,
            kind: kind(v.nic),
            location: AdapterLocation::Live,
        });
        if let Some(c) = &v.checkpoint {
            vm.adapters.push(Adapter {
                id: None,
                name: ADAPTER.into(),
                mac: c.nic.mac,
                kind: kind(c.nic),
                location: AdapterLocation::Checkpoint(Self::checkpoint_of(c)),
            });
        }
        vm
    }

    /// [`Cluster::inventory`], with the VM key and stamp behind each VM for
    /// [`Cluster::refresh_inventory`].
    pub(crate) fn inventory_shown(&self, host: u32) -> (HostInventory, Vec<(VmKey, u64)>) {
        let shown = self.hosts[host as usize]
            .vms
            .iter()
            .map(|&k| (k, self.vm(k).stamp))
            .collect();
        (self.inventory(host), shown)
    }

    /// Everything on one host, as `Get-VM`/`Get-VMNetworkAdapter`/`Get-VMHost` would report it.
    pub(crate) fn inventory(&self, host: u32) -> HostInventory {
        let h = &self.hosts[host as usize];
        let mut inv = HostInventory::new(h.name.clone()).expect("host names are set");
        inv.cluster = Some(self.name.clone());
        inv.ipv4 = vec![h.ip];
        inv.set_dynamic_range(Some(h.range), h.cursor.filter(|c| h.range.contains(*c)))
            .expect("the cursor lies in the range");
        for &k in &h.vms {
            inv.add_vm(Self::domain_vm(self.vm(k)))
                .expect("VM ids are unique");
        }
        inv
    }

    /// Brings `inv`, an earlier [`Cluster::inventory`] of the same host, up to date: equal to
    /// what `inventory(host)` returns now; returns whether it changed. `shown` lists the VM key
    /// and stamp behind each of its VMs (kept by the caller with the document). A VM whose
    /// stamp did not change is not looked at; one whose stamp changed is compared field by
    /// field and replaced only if it differs (a desktop that guard gave a static MAC comes back
    /// to it after each rollback). Arrivals are appended; after a departure the document is
    /// put together again in the host's order, from the VMs it had where still current.
    pub(crate) fn refresh_inventory(
        &self,
        host: u32,
        inv: &mut HostInventory,
        shown: &mut Vec<(VmKey, u64)>,
    ) -> bool {
        let h = &self.hosts[host as usize];
        let kept = shown.len() <= h.vms.len()
            && inv.vms().len() == shown.len()
            && shown.iter().zip(&h.vms).all(|(s, &k)| s.0 == k);
        let mut changed = false;
        if kept {
            for (i, (&k, s)) in h.vms.iter().zip(shown.iter_mut()).enumerate() {
                let v = self.vm(k);
                if s.1 != v.stamp {
                    s.1 = v.stamp;
                    let d = &mut inv.vms_mut()[i];
                    if !Self::shows(d, v) {
                        *d = Self::domain_vm(v);
                        changed = true;
                    }
                }
            }
            for &k in &h.vms[shown.len()..] {
                let v = self.vm(k);
                inv.add_vm(Self::domain_vm(v)).expect("VM ids are unique");
                shown.push((k, v.stamp));
                changed = true;
            }
        } else {
            let placeholder = Vm::new("-", "", VmState::Off).expect("a valid id");
            let mut old: HashMap<(VmKey, u64), Vm> = shown
                .iter()
                .zip(inv.vms_mut())
                .map(|(s, vm)| (*s, std::mem::replace(vm, placeholder.clone())))
                .collect();
            let mut fresh = HostInventory::new(h.name.clone()).expect("host names are set");
            fresh.cluster = Some(self.name.clone());
            fresh.ipv4 = vec![h.ip];
            fresh
                .set_dynamic_range(inv.dynamic_range(), inv.cursor())
                .expect("the cursor lies in the range");
            shown.clear();
            for &k in &h.vms {
                let v = self.vm(k);
                let vm = old
                    .remove(&(k, v.stamp))
                    .unwrap_or_else(|| Self::domain_vm(v));
                fresh.add_vm(vm).expect("VM ids are unique");
                shown.push((k, v.stamp));
            }
            *inv = fresh;
            changed = true;
        }
        let cursor = h.cursor.filter(|c| h.range.contains(*c));
        if inv.dynamic_range() != Some(h.range) || inv.cursor() != cursor {
            inv.set_dynamic_range(Some(h.range), cursor)
                .expect("the cursor lies in the range");
            changed = true;
        }
        changed
    }

    /// Whether `d` is what [`Cluster::domain_vm`] makes of `v`.
    fn shows(d: &Vm, v: &VmRec) -> bool {
        let kind = |n: Nic| {
            if n.dynamic {
                MacKind::Dynamic
            } else {
                MacKind::Static
            }
        };
        let state = if v.running {
            VmState::Running
        } else {
            VmState::Off
        };
        let live = |a: &Adapter| {
            a.location == AdapterLocation::Live && a.mac == v.nic.mac && a.kind == kind(v.nic)
        };
        let frozen = |a: &Adapter, f: &Frozen| {
            a.mac == f.nic.mac
                && a.kind == kind(f.nic)
                && matches!(&a.location, AdapterLocation::Checkpoint(c)
                    if c.id == f.id && c.name == f.name && c.created == Some(f.created))
        };
        d.id() == v.id
            && d.name == v.name
            && d.state == state
            && match (&d.adapters[..], &v.checkpoint) {
                ([a], None) => live(a),
                ([a, b], Some(f)) => live(a) && frozen(b, f),
                _ => false,
            }
    }

    /// hyperv.md: `Set-VMHost -MacAddressMinimum/-Maximum` sets the range; existing VMs keep
    /// their MACs. The allocator continues from the new range's start.
    pub(crate) fn set_host_range(&mut self, host: u32, range: MacRange) {
        let h = &mut self.hosts[host as usize];
        if h.range != range {
            h.range = range;
            h.cursor = None;
            self.touch_host(host);
        }
    }

    /// One VM of this host, with its current checkpoint (RDS desktops always sit on
    /// `RDV_ROLLBACK`: it is taken after the first start and restored at every logoff).
    pub(crate) fn vm_status(&self, host: u32, vm_id: &str) -> Option<VmStatus> {
        let key = self.key_of(vm_id)?;
        let v = self.vm(key);
        if v.host != host {
            return None;
        }
        Some(VmStatus {
            vm: Self::domain_vm(v),
            current_checkpoint: v.checkpoint.as_ref().map(Self::checkpoint_of),
        })
    }

    pub(crate) fn watch(&mut self, host: u32) {
        let h = &mut self.hosts[host as usize];
        h.watching = true;
        h.pending.clear();
    }

    pub(crate) fn next_event(&mut self, host: u32) -> Option<HvEvent> {
        self.hosts[host as usize].pending.pop_front()
    }

    pub(crate) fn past_event(&self, host: u32, channel: &str, record_id: u64) -> Option<HvEvent> {
        self.hosts[host as usize]
            .log
            .iter()
            .find(|e| e.record_id == record_id && e.channel.eq_ignore_ascii_case(channel))
            .cloned()
    }

    /// Checks the incremental bookkeeping against a recount from scratch (tests).
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut powered: HashMap<Mac, u32> = HashMap::new();
        let mut refs: HashMap<Mac, u32> = HashMap::new();
        let mut live: Vec<HashMap<Mac, u32>> = vec![HashMap::new(); self.hosts.len()];
        for (k, v) in self.all_vms() {
            let h = &self.hosts[v.host as usize];
            if h.vms.get(v.pos as usize) != Some(&k) {
                return Err(format!(
                    "VM {} is not at its position on {}",
                    v.name, h.name
                ));
            }
            if !v.nic.mac.is_zero() {
                *refs.entry(v.nic.mac).or_default() += 1;
                *live[v.host as usize].entry(v.nic.mac).or_default() += 1;
                if v.running {
                    *powered.entry(v.nic.mac).or_default() += 1;
                }
            }
            if v.running && v.nic.mac.is_zero() {
                return Err(format!("VM {} runs without a MAC", v.name));
            }
            if let Some(c) = &v.checkpoint
                && !c.nic.mac.is_zero()
            {
                *refs.entry(c.nic.mac).or_default() += 1;
            }
        }
        if powered != self.net.powered {
            return Err("powered-on counts drifted from a recount".into());
        }
        if refs != self.net.refs {
            return Err("address references drifted from a recount".into());
        }
        let excess: u64 = powered.values().map(|c| u64::from(c - 1)).sum();
        if excess != self.net.excess {
            return Err(format!("excess {} != recount {excess}", self.net.excess));
        }
        for (i, h) in self.hosts.iter().enumerate() {
            if live[i] != h.live {
                return Err(format!(
                    "host {}'s in-use set drifted from a recount",
                    h.name
                ));
            }
            if let Some(c) = h.cursor
                && !h.range.contains(c)
            {
                return Err(format!("host {}'s cursor {c} left its range", h.name));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use macpool_agent::{AdapterRef, Hypervisor};

    use super::*;
    use crate::hv::HostView;

    fn cluster(ranges: &[&str]) -> Cluster {
        let hosts: Vec<HostSpec> = ranges
            .iter()
            .enumerate()
            .map(|(i, r)| HostSpec {
                name: format!("HV{}", i + 1),
                ip: Ipv4Addr::new(10, 0, 1, 11 + i as u8),
                range: MacRange::parse(r).unwrap(),
            })
            .collect();
        Cluster::new(&hosts, "CL1", true)
    }

    fn mac(s: &str) -> Mac {
        s.parse().unwrap()
    }

    fn vm(c: &mut Cluster, id: &str, host: u32) -> VmKey {
        c.create_vm(id.into(), id.into(), host)
    }

    #[test]
    fn round_robin_wraps_and_checks_only_this_host() {
        let mut c = cluster(&["00155D0A0000-00155D0A0002", "00155D0B0000-00155D0B0002"]);
        let a = vm(&mut c, "a", 0);
        let b = vm(&mut c, "b", 0);
        assert_eq!(c.vm(a).nic.mac, mac("00155D0A0000"));
        assert_eq!(c.vm(b).nic.mac, mac("00155D0A0001"));
        // a leaves for host 2: host 1 no longer sees its MAC
        c.migrate(a, 1);
        let x = vm(&mut c, "x", 0);
        assert_eq!(c.vm(x).nic.mac, mac("00155D0A0002"));
        let y = vm(&mut c, "y", 0);
        assert_eq!(
            c.vm(y).nic.mac,
            mac("00155D0A0000"),
            "wrapped around onto the MAC that lives on host 2"
        );
        // host 1 is full now: the next VM gets no MAC and cannot start
        let z = vm(&mut c, "z", 0);
        assert!(c.vm(z).nic.mac.is_zero());
        let e = c.start(z).unwrap_err();
        assert!(
            e.to_string().contains("Attempt to access invalid address"),
            "{e}"
        );
        c.check_invariants().unwrap();
    }

    #[test]
    fn only_a_start_rechecks_the_mac() {
        let mut c = cluster(&["00155D0A0000-00155D0A00FF", "00155D0B0000-00155D0B00FF"]);
        let d = vm(&mut c, "d", 0);
        c.start(d).unwrap();
        c.checkpoint(d, "cp".into(), "RDV_ROLLBACK - x".into());
        c.migrate(d, 1);
        assert_eq!(c.vm(d).nic.mac, mac("00155D0A0000"), "migration keeps it");
        c.restore(d).unwrap();
        assert_eq!(c.vm(d).nic.mac, mac("00155D0A0000"), "a restore keeps it");
        c.turn_off(d);
        c.start(d).unwrap();
        assert_eq!(c.vm(d).nic.mac, mac("00155D0B0000"), "a start replaces it");
        c.restore(d).unwrap();
        assert_eq!(
            c.vm(d).nic.mac,
            mac("00155D0A0000"),
            "the rollback brings the checkpoint's MAC back"
        );
        assert!(c.vm(d).running, "restored with memory: running");
        c.check_invariants().unwrap();
    }

    #[test]
    fn the_network_counts_duplicates_and_the_agent_sees_the_rules() {
        let c = Mutex::new(cluster(&[
            "00155D0A0000-00155D0A0001",
            "00155D0A0000-00155D0A0001",
        ]));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (p, q) = {
            let mut cl = c.lock().unwrap();
            // two hosts whose IPs share the last two octets: one range, two allocators
            let p = vm(&mut cl, "p", 0);
            let q = vm(&mut cl, "q", 1);
            cl.start(p).unwrap();
            cl.start(q).unwrap();
            let s = cl.net.settle();
            assert_eq!(s.incidents, 1, "both got 00-15-5D-0A-00-00");
            assert_eq!(cl.net.duplicated_macs(), 1);
            (p, q)
        };
        let hv = HostView::new(&c, 1);
        let nic = AdapterRef {
            vm_id: "q".into(),
            adapter: ADAPTER.into(),
            id: None,
            checkpoint_id: None,
        };
        let err = rt
            .block_on(hv.set_adapter_mac(&nic, MacSetting::Static(mac("02:00:00:00:00:01"))))
            .unwrap_err();
        assert!(err.to_string().contains("current state"), "running: {err}");
        rt.block_on(hv.turn_off("q")).unwrap();
        rt.block_on(hv.set_adapter_mac(&nic, MacSetting::Static(mac("02:00:00:00:00:01"))))
            .unwrap();
        rt.block_on(hv.start("q")).unwrap();
        let inv = rt.block_on(hv.inventory()).unwrap();
        assert_eq!(inv.vms()[0].adapters[0].mac, mac("02:00:00:00:00:01"));
        assert!(
            rt.block_on(hv.vm("p")).unwrap().is_none(),
            "p is on the other host"
        );
        let mut cl = c.lock().unwrap();
        let s = cl.net.settle();
        assert_eq!((s.incidents, s.averted), (0, 0));
        assert_eq!(cl.net.duplicated_macs(), 0, "the static MAC ended it");
        assert!(cl.vm(p).running && cl.vm(q).running);
        cl.check_invariants().unwrap();
    }
}
