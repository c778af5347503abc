//! Inventories: what a host reports, diffed into leases and holds, and the conflicts derived from
//! every host's latest report.
//!
//! Rules of [`Authority::apply_inventory`] (all in one mutation, so one transaction):
//!
//! - **Who and when.** An agent token may only send its own host. The generation must be greater
//!   than the one stored for that host (else `stale-generation`); a host's first inventory may
//!   have any generation. Resending the generation already applied with the same content (an
//!   agent retrying after a lost reply) succeeds and changes nothing. Free-text fields are validated like owner fields. A refused inventory
//!   changes nothing.
//! - **Live adapters.** A live adapter whose MAC is leased to the same VM (ids compared
//!   case-insensitively) *binds* that lease: state `bound`, the VM name is refreshed and the
//!   lease's host becomes the reporting host — unless the lease's current host still lists the
//!   VM in its latest inventory (a live migration in flight: the lease stays put until the old
//!   host stops reporting the VM). A live MAC inside a pool that no lease or hold explains is
//!   reported as `unmanaged`; no lease is invented for it.
//! - **Migration after release.** When a VM vanished from its host and its lease was released
//!   (see below), the authority remembers that lease ([`Change::DepartedSaved`]). If the same VM
//!   then shows up live with that MAC on any host while nobody else leases or holds the MAC, its
//!   lease is re-created (bound, on the new host, cooldown cleared). So the order in which the
//!   two hosts report a migration does not matter.
//! - **Checkpoint adapters.** Every checkpoint adapter of every host's latest inventory keeps a
//!   hold `(mac, vm, checkpoint, checkpoint id)`. Holds are placed through [`Authority::hold`]
//!   (so a MAC another VM leases or holds is *not* held: that is a `latent` conflict, noted in
//!   the outcome) and removed through [`Authority::unhold`] once no host reports the checkpoint
//!   any more, so the MAC cools down like any other unheld MAC. A checkpoint that moved with its
//!   VM to another host is still reported, so its hold stays. Only the reporting host's
//!   checkpoints are looked at (reference counts say whether another host still asks), so one
//!   report costs O(that host), and a refused hold is tried again at that host's next report.
//! - **Vanished VMs.** A `bound` lease whose host is the reporting host and whose VM is not in
//!   the new inventory is released into cooldown through [`Authority::release`] — unless another
//!   host's latest inventory lists the VM: then the lease just moves to that host. `reserved`
//!   leases are never released this way (the VM may not exist yet).
//! - Invalid MACs (zero, multicast, broadcast) neither bind nor hold; the conflict engine
//!   reports them.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use super::*;
use crate::conflict::Conflict;
use crate::inventory::{AdapterLocation, HostInventory, InventoryError, MacKind, Vm, VmState};

/// A host's latest inventory as the authority keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct StoredInventory {
    pub generation: u64,
    /// When the authority accepted it.
    pub received: Timestamp,
    pub inventory: HostInventory,
}

/// A host's inventory at a new generation as a diff from the one stored before it, what a store
/// writes for every report after a host's first: the usual report changes a few VMs or none, so
/// it costs the store O(changed VMs), not O(VMs) (issue 18).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct InventoryPatch {
    pub generation: u64,
    /// When the authority accepted it.
    pub received: Timestamp,
    /// Every field of the new inventory but its VMs ([`HostInventory::header`]).
    pub header: HostInventory,
    /// How many VMs the new inventory has: those stored at and past it are gone.
    pub len: usize,
    /// The VMs at the positions that differ from the stored inventory, in position order.
    pub vms: Vec<(usize, Vm)>,
}

impl InventoryPatch {
    /// `new` as a diff: its header and the VMs at the positions `changed` (in order), the
    /// positions where it differs from the stored inventory.
    fn new(new: &HostInventory, changed: &[usize], generation: u64, received: Timestamp) -> Self {
        InventoryPatch {
            generation,
            received,
            header: new.header(),
            len: new.vms().len(),
            vms: changed.iter().map(|&i| (i, new.vms()[i].clone())).collect(),
        }
    }

    pub fn host(&self) -> &str {
        self.header.host()
    }

    /// `stored` turned into the inventory this patch describes; refused, with `stored`
    /// unchanged, when it does not fit.
    pub fn apply_to(
        &self,
        stored: &mut StoredInventory,
    ) -> std::result::Result<(), InventoryError> {
        stored.inventory.patch(&self.header, self.len, &self.vms)?;
        stored.generation = self.generation;
        stored.received = self.received;
        Ok(())
    }
}

/// One claimant of a conflict (a sighting), with what else is known of it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Claimant {
    /// The VM's power state in its host's latest inventory.
    pub state: Option<VmState>,
    /// The latest history row (id, entry) in which guard replaced this MAC on this VM.
    pub guard: Option<(u64, crate::history::HistoryEntry)>,
}

/// What applying one inventory did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InventoryOutcome {
    pub host: String,
    pub generation: u64,
    /// Leases bound, moved to this host or re-created after a migration.
    pub bound: Vec<Lease>,
    /// Leases of VMs that vanished, released into cooldown.
    pub released: Vec<Released>,
    /// Checkpoint holds placed.
    pub held: Vec<Hold>,
    /// Checkpoint holds removed because no host reports their checkpoint any more.
    pub unheld: Vec<Hold>,
    /// Live MACs inside a pool that no lease or hold explains.
    pub unmanaged: Vec<Mac>,
    /// Things the authority did not do, and why (e.g. a checkpoint MAC another VM leases).
    pub notes: Vec<String>,
    /// The checkpoint holds asked for that could not be placed (each has a note): tried again
    /// at the host's next report.
    pub refused: Vec<HoldKey>,
}

fn same_vm(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

fn lists_vm(inv: &HostInventory, vm_id: &str) -> bool {
    inv.vms().iter().any(|v| same_vm(v.id(), vm_id))
}

/// A VM id hashed and compared as [`same_vm`] compares (ASCII case ignored), to look up many
/// ids in one inventory.
struct VmId<'a>(&'a str);

impl PartialEq for VmId<'_> {
    fn eq(&self, other: &Self) -> bool {
        same_vm(self.0, other.0)
    }
}

impl Eq for VmId<'_> {}

impl std::hash::Hash for VmId<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        for b in self.0.bytes() {
            state.write_u8(b.to_ascii_lowercase());
        }
        state.write_u8(0xff);
    }
}

/// Checks every free-text field of an inventory; the error names the VM and adapter. Only the
/// VMs at positions `only` (ascending) are looked at: one equal to the VM the stored inventory
/// has at the same position passed these checks when it was stored, so a report costs
/// O(what changed).
fn validate_inventory(inv: &HostInventory, only: &[usize]) -> Result<()> {
    let bad = |what: String, e: String| AuthorityError::InvalidInput(format!("{what}: {e}"));
    let host = inv.host();
    validate_field("host", host).map_err(|e| bad(format!("inventory of host '{host}'"), e))?;
    if let Some(c) = &inv.cluster {
        validate_field("cluster", c).map_err(|e| bad(format!("host '{host}'"), e))?;
    }
    if let Some(strategy) = &inv.strategy {
        validate_strategy(strategy).map_err(|e| bad(format!("host '{host}'"), e))?;
    }
    for a in &inv.management_adapters {
        let at = || format!("host '{host}' management OS adapter '{}'", a.name);
        validate_field("adapter name", &a.name).map_err(|e| bad(at(), e))?;
        if a.location != AdapterLocation::Live {
            return Err(bad(
                at(),
                "a management OS adapter has no checkpoint".into(),
            ));
        }
    }
    for vm in only.iter().filter_map(|&i| inv.vms().get(i)) {
        let at = || format!("host '{host}' VM {}", vm.id());
        validate_field("vm_id", vm.id()).map_err(|e| bad(at(), e))?;
        validate_field("vm_name", &vm.name).map_err(|e| bad(at(), e))?;
        validate_field("state", vm.state.name()).map_err(|e| bad(at(), e))?;
        for a in &vm.adapters {
            let at = || format!("{} adapter '{}'", at(), a.name);
            validate_field("adapter name", &a.name).map_err(|e| bad(at(), e))?;
            if let AdapterLocation::Checkpoint(c) = &a.location {
                if c.id.trim().is_empty() {
                    return Err(bad(at(), "checkpoint id must not be empty".into()));
                }
                validate_field("checkpoint id", &c.id).map_err(|e| bad(at(), e))?;
                validate_field("checkpoint name", &c.name).map_err(|e| bad(at(), e))?;
                validate_field("checkpoint type", c.kind.name()).map_err(|e| bad(at(), e))?;
            }
        }
    }
    Ok(())
}

/// An agent's strategy name as it reports it: a short word like `delegate+guard` (lower-case
/// letters, digits, `+` and `-`), so that a page or metric label never shows arbitrary text.
fn validate_strategy(s: &str) -> std::result::Result<(), String> {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '+' || c == '-';
    if s.is_empty() || s.len() > 32 || !s.chars().all(ok) {
        return Err(format!(
            "strategy '{}' is not a strategy name (1 to 32 of a-z, 0-9, '+' and '-', e.g. delegate+guard)",
            s.escape_default()
        ));
    }
    Ok(())
}

impl Authority {
    /// Re-adds what [`Change::InventorySaved`] and [`Change::DepartedSaved`] persisted, after
    /// [`Authority::restore`].
    pub fn with_inventories(
        mut self,
        inventories: Vec<StoredInventory>,
        departed: Vec<Lease>,
    ) -> Authority {
        for s in inventories {
            let _ = self.index_seen(&s.inventory, true);
            self.inventories
                .insert(s.inventory.host().to_string(), Arc::new(s));
        }
        for l in departed {
            self.departed.insert(l.mac, l);
        }
        self
    }

    /// Adds (or removes) every adapter of `inv` to the who-has-which-MAC index, and its
    /// checkpoints to the reference counts of the holds they ask for; returns those holds.
    pub(super) fn index_seen(&mut self, inv: &HostInventory, add: bool) -> BTreeSet<HoldKey> {
        let mut keys = BTreeSet::new();
        for vm in inv.vms() {
            self.index_vm(inv.host(), vm, add, &mut keys);
        }
        self.index_management(inv, add);
        keys
    }

    /// An agent holds and unholds only for its own host's VMs: one its host's latest inventory
    /// lists, or one leased on its host. (Otherwise HV-A's token could free a MAC frozen in a
    /// checkpoint on HV-B and lease it to its own VM: the very duplicate macpool prevents.)
    pub(super) fn may_act_for_vm(&self, actor: &Actor, vm_id: &str) -> Result<()> {
        let Scope::Host(h) = &actor.scope else {
            return Ok(());
        };
        let listed = self
            .inventories
            .get(h)
            .is_some_and(|s| lists_vm(&s.inventory, vm_id));
        if listed
            || self
                .leases
                .values()
                .any(|l| same_vm(&l.owner.vm_id, vm_id) && l.owner.host.as_deref() == Some(h))
        {
            return Ok(());
        }
        Err(AuthorityError::Forbidden(format!(
            "this agent token is bound to host '{h}'; VM {vm_id} is neither in that host's \
             latest inventory nor leased on it"
        )))
    }

    /// An agent may not remove a hold that another host's latest inventory still shows the
    /// VM's MAC in (live or in a checkpoint): that host's inventory created it and relies on it.
    pub(super) fn no_other_host_relies_on(
        &self,
        actor: &Actor,
        mac: Mac,
        vm_id: &str,
    ) -> Result<()> {
        let Scope::Host(h) = &actor.scope else {
            return Ok(());
        };
        let other = self.seen.get(&mac).and_then(|seen| {
            seen.iter()
                .find(|s| s.host != *h && same_vm(&s.vm_id, vm_id))
        });
        match other {
            None => Ok(()),
            Some(s) => Err(AuthorityError::Forbidden(format!(
                "this agent token is bound to host '{h}'; host '{}' still reports {mac} of VM \
                 {vm_id}{}, so only its own inventory (or an admin) may remove the hold",
                s.host,
                s.checkpoint
                    .as_ref()
                    .map(|c| format!(" in checkpoint '{c}'"))
                    .unwrap_or_default()
            ))),
        }
    }

    /// Adds (or removes) the management OS's vNICs to the who-has-which-MAC index: they use
    /// their MACs as much as a VM does (a block they use is not free), but are never leased.
    fn index_management(&mut self, inv: &HostInventory, add: bool) {
        for a in &inv.management_adapters {
            let seen = Seen {
                host: inv.host().to_string(),
                vm_id: String::new(),
                vm_name: a.name.clone(),
                checkpoint: None,
                management_os: true,
                adapter: a.name.clone(),
                checkpoint_id: None,
                dynamic: a.kind == MacKind::Dynamic,
            };
            self.index_one(a.mac, seen, add);
        }
    }

    fn index_one(&mut self, mac: Mac, seen: Seen, add: bool) {
        let list = self.seen.entry(mac).or_default();
        match (add, list.binary_search(&seen)) {
            (true, Err(at)) => list.insert(at, seen),
            (false, Ok(at)) => {
                list.remove(at);
            }
            _ => {}
        }
        if list.is_empty() {
            self.seen.remove(&mac);
        }
    }

    /// Every host's latest inventory, by host name.
    pub fn inventories(&self) -> Vec<StoredInventory> {
        self.inventories
            .values()
            .map(|s| StoredInventory::clone(s))
            .collect()
    }

    /// When each host's latest inventory was accepted, by host name: what a staleness alert
    /// needs, without cloning every VM at each scrape.
    pub fn inventory_received(&self) -> Vec<(String, Timestamp)> {
        self.inventories
            .iter()
            .map(|(host, s)| (host.clone(), s.received))
            .collect()
    }

    pub fn inventory(&self, host: &str) -> Result<StoredInventory> {
        self.inventories
            .get(host)
            .map(|s| StoredInventory::clone(s))
            .ok_or_else(|| AuthorityError::NotFound(format!("no inventory of host '{host}'")))
    }

    /// The remembered last lease of `mac`, while it still means something: nobody leases the
    /// MAC and every hold on it is that VM's own.
    pub fn departed(&self, mac: Mac) -> Option<&Lease> {
        let l = self.departed.get(&mac)?;
        let entry = self.macs.get(&mac);
        let free = entry.is_none_or(|e| {
            e.leases.is_empty() && e.holds.iter().all(|h| same_vm(&h.vm_id, &l.owner.vm_id))
        });
        (free && self.pool_of(mac) == Some(&l.pool) && !self.leases.contains_key(&l.owner.key()))
            .then_some(l)
    }

    /// `mac` now goes to `vm_id`: a departed lease of another VM is forgotten, so that VM cannot
    /// take the MAC back later, once this one is gone again (inside its cooldown).
    pub(super) fn forget_departed_unless(
        &mut self,
        mac: Mac,
        vm_id: &str,
        changes: &mut Vec<Change>,
    ) {
        if self
            .departed
            .get(&mac)
            .is_some_and(|l| !same_vm(&l.owner.vm_id, vm_id))
        {
            self.departed.remove(&mac);
            changes.push(Change::DepartedCleared { mac });
        }
    }

    /// What the authority knows of each claimant of `c`, in the order of `c.sightings()`: its
    /// VM's power state in its host's latest inventory (`None`: no such VM — a management OS
    /// vNIC, a listed entry). `guard` is left for the history's keeper to fill.
    pub fn claimants(&self, c: &Conflict) -> Vec<Claimant> {
        c.sightings()
            .iter()
            .map(|s| {
                let state = (|| {
                    let (host, vm_id) = (s.owner.host.as_ref()?, s.owner.vm_id.as_ref()?);
                    let inv = &self.inventories.get(host)?.inventory;
                    inv.vms()
                        .iter()
                        .find(|v| same_vm(v.id(), vm_id))
                        .map(|v| v.state.clone())
                })();
                Claimant { state, guard: None }
            })
            .collect()
    }

    /// Whether some host's latest inventory asks for this checkpoint hold. MACs inside a block
    /// are the block's: never held.
    fn hold_wanted(&self, key: &HoldKey) -> bool {
        self.checkpoint_refs.contains_key(key) && self.block_at(key.mac).is_none()
    }

    /// Adds (or removes) one VM's adapters to the who-has-which-MAC index and its checkpoints to
    /// the reference counts; adds the checkpoint holds it asks for to `keys`. A host's VM ids are
    /// unique, so no two VMs of one inventory share an entry of either index: an inventory is
    /// indexed VM by VM ([`Authority::index_seen`]), and a changed VM alone.
    fn index_vm(
        &mut self,
        host: &str,
        vm: &crate::inventory::Vm,
        add: bool,
        keys: &mut BTreeSet<HoldKey>,
    ) {
        let mut own = BTreeSet::new();
        for a in &vm.adapters {
            if let AdapterLocation::Checkpoint(c) = &a.location
                && a.mac.invalid_reason().is_none()
            {
                own.insert(HoldKey {
                    mac: a.mac,
                    vm_id: vm.id().to_string(),
                    reason: HoldReason::Checkpoint,
                    reference: c.id.clone(),
                });
            }
        }
        for key in &own {
            if add {
                *self.checkpoint_refs.entry(key.clone()).or_insert(0) += 1;
            } else if let Some(n) = self.checkpoint_refs.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    self.checkpoint_refs.remove(key);
                }
            }
        }
        keys.extend(own);
        for a in &vm.adapters {
            let seen = Seen {
                host: host.to_string(),
                vm_id: vm.id().to_string(),
                vm_name: vm.name.clone(),
                checkpoint: match &a.location {
                    AdapterLocation::Live => None,
                    AdapterLocation::Checkpoint(c) => Some(c.name.clone()),
                },
                management_os: false,
                adapter: a.name.clone(),
                checkpoint_id: match &a.location {
                    AdapterLocation::Live => None,
                    AdapterLocation::Checkpoint(c) => Some(c.id.clone()),
                },
                dynamic: a.kind == MacKind::Dynamic,
            };
            self.index_one(a.mac, seen, add);
        }
    }

    /// Takes `inv` as the whole truth about its host at `generation`; see the module docs for
    /// the rules. Validates first and changes nothing on error.
    ///
    /// Cost: O(VMs of this host) comparisons plus O(VMs that changed since the host's last
    /// report) allocations and index updates — a VM equal to the one the stored inventory has
    /// at the same position is neither validated nor re-indexed again — plus one pass over the
    /// leases (those of VMs that vanished). The report itself ends up in the returned
    /// [`Change::InventorySaved`] (not copied); the stored copy is patched where it differs.
    pub fn apply_inventory(
        &mut self,
        ctx: &Context,
        inv: HostInventory,
        generation: u64,
    ) -> Result<(InventoryOutcome, Vec<Change>)> {
        self.expire(ctx.now);
        let host = inv.host().to_string();
        if let Scope::Host(h) = &ctx.actor.scope
            && *h != host
        {
            return Err(AuthorityError::Forbidden(format!(
                "this agent token is bound to host '{h}' and cannot send the inventory of host '{host}'"
            )));
        }
        let current = self.inventories.get(&host);
        // The positions whose VM differs from the one the stored inventory has there (all of
        // them for a host's first report): one comparison pass, the only O(VMs) work on
        // strings. Only these VMs are validated and re-indexed below.
        let n = inv.vms().len();
        let differ: Vec<usize> = match current {
            Some(s) => {
                let (ov, nv) = (s.inventory.vms(), inv.vms());
                (0..ov.len().max(n))
                    .filter(|&i| ov.get(i) != nv.get(i))
                    .collect()
            }
            None => (0..n).collect(),
        };
        validate_inventory(&inv, &differ)?;
        let same_content = current.is_some_and(|s| {
            differ.is_empty()
                && s.inventory.cluster == inv.cluster
                && s.inventory.ipv4 == inv.ipv4
                && s.inventory.dynamic_range() == inv.dynamic_range()
                && s.inventory.cursor() == inv.cursor()
                && s.inventory.management_adapters == inv.management_adapters
                && s.inventory.cursor_source == inv.cursor_source
                && s.inventory.strategy == inv.strategy
        });
        debug_assert_eq!(
            same_content,
            current.is_some_and(|s| s.inventory == inv),
            "every field of an inventory is compared"
        );
        // A resend of the generation already applied, with the same content, is the agent
        // retrying after a lost reply: answer it as done, change nothing.
        if let Some(current) = current
            && generation == current.generation
            && same_content
        {
            let outcome = InventoryOutcome {
                host,
                generation,
                notes: vec![format!(
                    "generation {generation} was already applied; nothing changed"
                )],
                ..InventoryOutcome::default()
            };
            return Ok((outcome, Vec::new()));
        }
        if let Some(current) = current
            && generation <= current.generation
        {
            return Err(AuthorityError::StaleGeneration {
                host,
                generation,
                current: current.generation,
            });
        }
        // The token's scope was checked for the inventory as a whole; what follows from it may
        // touch leases that still name another host (a VM migrating in).
        let inner = Context {
            now: ctx.now,
            actor: Actor {
                name: ctx.actor.name.clone(),
                scope: Scope::All,
            },
        };
        let mut out = InventoryOutcome {
            host: host.clone(),
            generation,
            ..InventoryOutcome::default()
        };
        // Only this host's inventory changes, so only its checkpoints can start or stop being
        // asked for; reference counts over all hosts say whether another host still asks. Only
        // the VMs that differ from the stored inventory (position by position) change the
        // indexes: removing and re-adding an equal VM would leave them as they are.
        let old = self.inventories.remove(&host);
        let old_len = old.as_ref().map_or(0, |o| o.inventory.vms().len());
        let old_changed: Vec<usize> = differ.iter().copied().filter(|&i| i < old_len).collect();
        let new_changed: Vec<usize> = differ.iter().copied().filter(|&i| i < n).collect();
        let mut asked_before = BTreeSet::new();
        let mut asked_now = BTreeSet::new();
        if let Some(o) = &old {
            for &i in &old_changed {
                self.index_vm(&host, &o.inventory.vms()[i], false, &mut asked_before);
            }
        }
        for &i in &new_changed {
            self.index_vm(&host, &inv.vms()[i], true, &mut asked_now);
        }
        // The management OS's vNICs: few, re-indexed whole when they changed.
        if old
            .as_ref()
            .is_none_or(|o| o.inventory.management_adapters != inv.management_adapters)
        {
            if let Some(o) = &old {
                self.index_management(&o.inventory, false);
            }
            self.index_management(&inv, true);
        }
        // A host's first report is stored whole; every later one as a diff from the stored
        // copy, which is patched in place (no copy of the VMs that stayed the same).
        let (stored, patch) = match old {
            Some(o) => {
                // Shared with the last snapshot: this one inventory is copied, as the map
                // copied it before.
                let mut o = Arc::unwrap_or_clone(o);
                let patch = InventoryPatch::new(&inv, &new_changed, generation, ctx.now);
                patch
                    .apply_to(&mut o)
                    .expect("a diff of two valid inventories fits the older one");
                debug_assert!(o.inventory == inv);
                (o, Some(patch))
            }
            None => {
                let stored = StoredInventory {
                    generation,
                    received: ctx.now,
                    inventory: inv.clone(),
                };
                (stored, None)
            }
        };
        self.inventories.insert(host.clone(), Arc::new(stored));
        let mut changes = Vec::new();

        // Checkpoint holds first: a VM's own hold never stands in the way of its lease.
        let dropped: Vec<HoldKey> = asked_before
            .difference(&asked_now)
            .filter(|k| !self.hold_wanted(k))
            .cloned()
            .collect();
        for key in &dropped {
            let req = UnholdRequest {
                mac: key.mac,
                vm_id: key.vm_id.clone(),
                reason: Some(key.reason),
                reference: Some(key.reference.clone()),
            };
            if let Ok((removed, ch)) = self.unhold(&inner, req) {
                out.unheld.extend(removed);
                changes.extend(ch);
            }
        }

        // Live adapters: bind, re-create after a migration, or report unmanaged.
        for vm in inv.vms() {
            for a in &vm.adapters {
                if a.location != AdapterLocation::Live || a.mac.invalid_reason().is_some() {
                    continue;
                }
                self.see_live(&inner, &host, vm, a.mac, &mut out, &mut changes);
            }
        }

        // Leases of VMs that vanished from this host.
        let bound_here: Vec<&Lease> = self
            .leases_on(&host)
            .filter(|l| l.state == LeaseState::Bound)
            .collect();
        let mut gone: Vec<OwnerKey> = if bound_here.is_empty() {
            Vec::new()
        } else {
            let listed: HashSet<VmId> = inv.vms().iter().map(|v| VmId(v.id())).collect();
            bound_here
                .into_iter()
                .filter(|l| !listed.contains(&VmId(&l.owner.vm_id)))
                .map(|l| l.owner.key())
                .collect()
        };
        gone.sort();
        for key in gone {
            let elsewhere = self
                .inventories
                .iter()
                .find(|(h, s)| **h != host && lists_vm(&s.inventory, &key.vm_id))
                .map(|(h, _)| h.clone());
            if let Some(other) = elsewhere {
                let mut lease = self.leases[&key].clone();
                lease.owner.host = Some(other.clone());
                self.put_lease(key.clone(), lease.clone());
                changes.push(Change::LeaseSaved(lease.clone()));
                changes.push(history(
                    &inner,
                    HistoryAction::Bound,
                    Some(lease.mac),
                    Some(&lease.pool),
                    Some(&lease.owner),
                    Some(format!("moved from host {host} to host {other}")),
                ));
                out.bound.push(lease);
                continue;
            }
            let selector = ReleaseSelector::Vm {
                vm_id: key.vm_id.clone(),
                adapter_id: Some(key.adapter_id.clone()),
            };
            if let Ok((released, ch)) = self.release(&inner, selector) {
                changes.extend(ch);
                for r in released {
                    self.departed.insert(r.lease.mac, r.lease.clone());
                    changes.push(Change::DepartedSaved(r.lease.clone()));
                    out.released.push(r);
                }
            }
        }

        // Checkpoint holds asked for and not there (yet): place them. Every checkpoint of this
        // report is asked for (its reference count includes this host), so `hold_wanted` comes
        // down to "not inside a block"; the keys are built only for the holds to place.
        let mut wanted = BTreeSet::new();
        for vm in inv.vms() {
            for a in &vm.adapters {
                let AdapterLocation::Checkpoint(c) = &a.location else {
                    continue;
                };
                if a.mac.invalid_reason().is_some() {
                    continue;
                }
                let exists = self.macs.get(&a.mac).is_some_and(|e| {
                    e.holds.iter().any(|h| {
                        h.reason == HoldReason::Checkpoint
                            && h.vm_id == vm.id()
                            && h.reference == c.id
                    })
                });
                if !exists && self.block_at(a.mac).is_none() {
                    wanted.insert(HoldKey {
                        mac: a.mac,
                        vm_id: vm.id().to_string(),
                        reason: HoldReason::Checkpoint,
                        reference: c.id.clone(),
                    });
                }
            }
        }
        for key in wanted {
            debug_assert!(self.hold_wanted(&key));
            let req = HoldRequest {
                mac: key.mac,
                vm_id: key.vm_id.clone(),
                reason: key.reason,
                reference: key.reference.clone(),
            };
            match self.hold(&inner, req) {
                Ok((h, ch)) => {
                    changes.extend(ch);
                    out.held.push(h);
                }
                Err(e) => {
                    out.notes.push(format!(
                        "checkpoint {} of VM {}: {} not held: {e}",
                        key.reference, key.vm_id, key.mac
                    ));
                    out.refused.push(key);
                }
            }
        }
        self.refresh_blocks(&inner, &mut changes);
        out.unmanaged.sort();
        out.unmanaged.dedup();
        let saved = match patch {
            Some(p) => Change::InventoryPatched(p),
            None => Change::InventorySaved(StoredInventory {
                generation,
                received: ctx.now,
                inventory: inv,
            }),
        };
        changes.insert(0, saved);
        // A report changes many MACs at once: the conflict index catches up here, O(this host).
        self.settle();
        Ok((out, changes))
    }

    /// One live adapter of `vm` on `host` with `mac`.
    fn see_live(
        &mut self,
        ctx: &Context,
        host: &str,
        vm: &crate::inventory::Vm,
        mac: Mac,
        out: &mut InventoryOutcome,
        changes: &mut Vec<Change>,
    ) {
        let key = self.macs.get(&mac).and_then(|e| {
            e.leases
                .iter()
                .find(|k| same_vm(&k.vm_id, vm.id()))
                .cloned()
        });
        if let Some(key) = key {
            let in_flight = {
                let l = &self.leases[&key];
                l.owner.host.as_deref().is_some_and(|h| {
                    h != host
                        && self
                            .inventories
                            .get(h)
                            .is_some_and(|s| lists_vm(&s.inventory, vm.id()))
                })
            };
            let before = self.leases[&key].clone();
            let mut lease = before.clone();
            lease.state = LeaseState::Bound;
            if !vm.name.is_empty() {
                lease.owner.vm_name = Some(vm.name.clone());
            }
            if !in_flight {
                lease.owner.host = Some(host.to_string());
            }
            if lease == before {
                return;
            }
            self.put_lease(key.clone(), lease.clone());
            let reason = match &before.owner.host {
                Some(h) if lease.owner.host != before.owner.host => {
                    format!("seen live on host {host}, moved from host {h}")
                }
                _ => format!("seen live on host {host}"),
            };
            changes.push(Change::LeaseSaved(lease.clone()));
            changes.push(history(
                ctx,
                HistoryAction::Bound,
                Some(mac),
                Some(&lease.pool),
                Some(&lease.owner),
                Some(reason),
            ));
            out.bound.push(lease);
            return;
        }
        if self.pool_of(mac).is_none() || self.block_at(mac).is_some() {
            return;
        }
        if let Some(last) = self.departed(mac).cloned()
            && same_vm(&last.owner.vm_id, vm.id())
        {
            let before = self.slot(mac);
            let mut lease = last;
            lease.state = LeaseState::Bound;
            lease.owner.host = Some(host.to_string());
            if !vm.name.is_empty() {
                lease.owner.vm_name = Some(vm.name.clone());
            }
            if self.cooling.contains_key(&mac) {
                changes.push(Change::CoolingCleared { mac });
            }
            self.macs
                .entry(mac)
                .or_default()
                .leases
                .push(lease.owner.key());
            self.put_lease(lease.owner.key(), lease.clone());
            self.reclassify(mac, before);
            self.departed.remove(&mac);
            changes.push(Change::DepartedCleared { mac });
            changes.push(Change::LeaseSaved(lease.clone()));
            changes.push(history(
                ctx,
                HistoryAction::Bound,
                Some(mac),
                Some(&lease.pool),
                Some(&lease.owner),
                Some(format!(
                    "seen live on host {host} after its release: lease restored (live migration)"
                )),
            ));
            out.bound.push(lease);
            return;
        }
        if !self.macs.contains_key(&mac) {
            out.unmanaged.push(mac);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The incremental parts of `apply_inventory`: only the VMs that changed are re-indexed,
    //! and the stored copy is patched; both must end where a rebuild from the inventories ends.

    use super::*;
    use crate::inventory::{Adapter, Checkpoint, CheckpointType, MacKind, Vm, VmState};

    fn admin(now: u64) -> Context {
        Context {
            now: Timestamp(now),
            actor: Actor::admin("test"),
        }
    }

    fn mac(n: u64) -> Mac {
        Mac::from_u64(0x0015_5D00_0000 + n).unwrap()
    }

    /// A VM with one live adapter (`live`) and a checkpoint (`cp`: MAC, checkpoint id).
    fn vm(id: &str, name: &str, live: u64, cp: Option<(u64, &str)>) -> Vm {
        let mut v = Vm::new(id, name, VmState::Running).unwrap();
        v.adapters.push(Adapter {
            id: None,
            name: "Network Adapter".into(),
            mac: mac(live),
            kind: MacKind::Dynamic,
            location: AdapterLocation::Live,
        });
        if let Some((m, c)) = cp {
            v.adapters.push(Adapter {
                id: None,
                name: "Network Adapter".into(),
                mac: mac(m),
                kind: MacKind::Dynamic,
                location: AdapterLocation::Checkpoint(Checkpoint {
                    id: c.into(),
                    name: format!("RDV_ROLLBACK {c}"),
                    kind: CheckpointType::Standard,
                    created: None,
                }),
            });
        }
        v
    }

    fn inv(host: &str, vms: Vec<Vm>) -> HostInventory {
        let mut h = HostInventory::new(host).unwrap();
        for v in vms {
            h.add_vm(v).unwrap();
        }
        h
    }

    /// The derived indexes of `a`, against those `with_inventories` builds from scratch.
    fn assert_indexes_rebuild(a: &Authority, step: &str) {
        let rebuilt = Authority::new().with_inventories(a.inventories(), Vec::new());
        assert_eq!(a.seen, rebuilt.seen, "who-has-which-MAC after {step}");
        assert_eq!(
            a.checkpoint_refs, rebuilt.checkpoint_refs,
            "checkpoint references after {step}"
        );
    }

    #[test]
    fn reports_that_change_some_vms_index_as_a_rebuild_would() {
        let mut a = Authority::new();
        let a1 = || vm("a", "A", 1, Some((1, "ca")));
        let b1 = || vm("b", "B", 2, Some((2, "cb")));
        let c1 = || vm("c", "C", 3, None);
        let reports = [
            ("h1", vec![a1(), b1(), c1()]),
            ("h2", vec![vm("a", "A", 1, Some((1, "ca")))]),
            // one VM changed in place (new MAC, new checkpoint), one renamed
            (
                "h1",
                vec![
                    vm("a", "A", 7, Some((7, "ca2"))),
                    vm("b", "B2", 2, Some((2, "cb"))),
                    c1(),
                ],
            ),
            // appended
            (
                "h1",
                vec![a1(), b1(), c1(), vm("d", "D", 4, Some((4, "cd")))],
            ),
            // the last one gone, the others reordered
            ("h1", vec![c1(), a1(), b1()]),
            // shrunk to one, then empty, then back
            ("h1", vec![b1()]),
            ("h2", vec![]),
            ("h1", vec![]),
            ("h1", vec![a1(), b1()]),
        ];
        for (i, (host, vms)) in reports.into_iter().enumerate() {
            let report = inv(host, vms);
            let before = a.inventory(host).ok();
            let (_, changes) = a
                .apply_inventory(&admin(i as u64), report.clone(), i as u64 + 1)
                .unwrap();
            // The change carries the report: whole the first time, else as a diff.
            let carried = match (&changes[0], before) {
                (Change::InventorySaved(s), None) => s.clone(),
                (Change::InventoryPatched(p), Some(mut stored)) => {
                    p.apply_to(&mut stored).unwrap();
                    stored
                }
                (other, _) => panic!("first change {other:?}"),
            };
            assert_eq!(carried.inventory, report, "the change carries the report");
            assert_eq!(carried.generation, i as u64 + 1);
            assert_eq!(a.inventory(host).unwrap().inventory, report, "stored copy");
            assert_indexes_rebuild(&a, &format!("report {i}"));
        }
    }

    #[test]
    fn an_unchanged_report_changes_only_its_generation() {
        let mut a = Authority::new();
        let report = inv("h1", vec![vm("a", "A", 1, Some((1, "ca")))]);
        let (first, _) = a.apply_inventory(&admin(1), report.clone(), 1).unwrap();
        assert_eq!(first.held.len(), 1);
        let (out, changes) = a.apply_inventory(&admin(5), report.clone(), 2).unwrap();
        assert_eq!(
            out,
            InventoryOutcome {
                host: "h1".into(),
                generation: 2,
                ..InventoryOutcome::default()
            }
        );
        assert_eq!(changes.len(), 1, "{changes:?}");
        let stored = a.inventory("h1").unwrap();
        assert_eq!((stored.generation, stored.received), (2, Timestamp(5)));
        assert_indexes_rebuild(&a, "the resend");
    }

    #[test]
    fn a_checkpoint_hold_refused_is_listed_with_its_note_and_tried_again() {
        let mut a = Authority::new();
        // Two desktops' checkpoints froze the same MAC (a host wrapped around): the first
        // report's hold stands, the second host's is refused.
        a.apply_inventory(
            &admin(1),
            inv("h1", vec![vm("a", "A", 1, Some((9, "ca")))]),
            1,
        )
        .unwrap();
        let (out, _) = a
            .apply_inventory(
                &admin(2),
                inv("h2", vec![vm("b", "B", 2, Some((9, "cb")))]),
                1,
            )
            .unwrap();
        assert_eq!(out.notes.len(), 1, "{:?}", out.notes);
        assert_eq!(
            out.refused,
            vec![HoldKey {
                mac: mac(9),
                vm_id: "b".into(),
                reason: HoldReason::Checkpoint,
                reference: "cb".into(),
            }]
        );
        // Still blocked: refused again at the next report.
        let (out, _) = a
            .apply_inventory(
                &admin(3),
                inv("h2", vec![vm("b", "B", 2, Some((9, "cb")))]),
                2,
            )
            .unwrap();
        assert_eq!(out.refused.len(), 1);
        // The first desktop is gone: its hold is removed, and the next report places the
        // other one.
        let (out, _) = a.apply_inventory(&admin(4), inv("h1", vec![]), 2).unwrap();
        assert_eq!(out.unheld.len(), 1);
        let (out, _) = a
            .apply_inventory(
                &admin(5),
                inv("h2", vec![vm("b", "B", 2, Some((9, "cb")))]),
                3,
            )
            .unwrap();
        assert!(out.refused.is_empty() && out.notes.is_empty(), "{out:?}");
        assert_eq!(out.held.len(), 1);
    }
}
