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

use super::*;
use crate::conflict::{Conflict, ConflictInput, PoolRange, find_conflicts};
use crate::inventory::{AdapterLocation, HostInventory};

/// A host's latest inventory as the authority keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct StoredInventory {
    pub generation: u64,
    /// When the authority accepted it.
    pub received: Timestamp,
    pub inventory: HostInventory,
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
}

fn same_vm(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

fn lists_vm(inv: &HostInventory, vm_id: &str) -> bool {
    inv.vms().iter().any(|v| same_vm(v.id(), vm_id))
}

/// Checks every free-text field of an inventory; the error names the VM and adapter.
fn validate_inventory(inv: &HostInventory) -> Result<()> {
    let bad = |what: String, e: String| AuthorityError::InvalidInput(format!("{what}: {e}"));
    let host = inv.host();
    validate_field("host", host).map_err(|e| bad(format!("inventory of host '{host}'"), e))?;
    if let Some(c) = &inv.cluster {
        validate_field("cluster", c).map_err(|e| bad(format!("host '{host}'"), e))?;
    }
    for vm in inv.vms() {
        let at = format!("host '{host}' VM {}", vm.id());
        validate_field("vm_id", vm.id()).map_err(|e| bad(at.clone(), e))?;
        validate_field("vm_name", &vm.name).map_err(|e| bad(at.clone(), e))?;
        validate_field("state", vm.state.name()).map_err(|e| bad(at.clone(), e))?;
        for a in &vm.adapters {
            let at = format!("{at} adapter '{}'", a.name);
            validate_field("adapter name", &a.name).map_err(|e| bad(at.clone(), e))?;
            if let AdapterLocation::Checkpoint(c) = &a.location {
                if c.id.trim().is_empty() {
                    return Err(bad(at, "checkpoint id must not be empty".into()));
                }
                validate_field("checkpoint id", &c.id).map_err(|e| bad(at.clone(), e))?;
                validate_field("checkpoint name", &c.name).map_err(|e| bad(at.clone(), e))?;
                validate_field("checkpoint type", c.kind.name()).map_err(|e| bad(at.clone(), e))?;
            }
        }
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
            self.inventories.insert(s.inventory.host().to_string(), s);
        }
        for l in departed {
            self.departed.insert(l.mac, l);
        }
        self
    }

    /// Adds (or removes) every adapter of `inv` to the who-has-which-MAC index, and its
    /// checkpoints to the reference counts of the holds they ask for; returns those holds.
    pub(super) fn index_seen(&mut self, inv: &HostInventory, add: bool) -> BTreeSet<HoldKey> {
        let keys = Self::checkpoint_keys(inv);
        for key in &keys {
            if add {
                *self.checkpoint_refs.entry(key.clone()).or_insert(0) += 1;
            } else if let Some(n) = self.checkpoint_refs.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    self.checkpoint_refs.remove(key);
                }
            }
        }
        for vm in inv.vms() {
            for a in &vm.adapters {
                let seen = Seen {
                    host: inv.host().to_string(),
                    vm_id: vm.id().to_string(),
                    vm_name: vm.name.clone(),
                    checkpoint: match &a.location {
                        AdapterLocation::Live => None,
                        AdapterLocation::Checkpoint(c) => Some(c.name.clone()),
                    },
                };
                let list = self.seen.entry(a.mac).or_default();
                match (add, list.binary_search(&seen)) {
                    (true, Err(at)) => list.insert(at, seen),
                    (false, Ok(at)) => {
                        list.remove(at);
                    }
                    _ => {}
                }
                if list.is_empty() {
                    self.seen.remove(&a.mac);
                }
            }
        }
        keys
    }

    /// Every host's latest inventory, by host name.
    pub fn inventories(&self) -> Vec<StoredInventory> {
        self.inventories.values().cloned().collect()
    }

    pub fn inventory(&self, host: &str) -> Result<StoredInventory> {
        self.inventories
            .get(host)
            .cloned()
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

    /// Every conflict across all hosts' latest inventories, the pools and the lease/hold set.
    pub fn conflicts(&self) -> Vec<Conflict> {
        let mut sightings = Vec::new();
        let mut host_ranges = Vec::new();
        for (host, s) in &self.inventories {
            let source = format!("inventory {host} gen {}", s.generation);
            sightings.extend(s.inventory.sightings(&source));
            host_ranges.extend(s.inventory.host_ranges().into_iter().map(|mut r| {
                r.source = source.clone();
                r
            }));
        }
        let pools: Vec<PoolRange> = self
            .range_index
            .values()
            .map(|(r, p)| PoolRange {
                pool: p.to_string(),
                range: *r,
            })
            .collect();
        let explained: HashSet<Mac> = self.macs.keys().copied().collect();
        let blocks = self.delegated_blocks();
        find_conflicts(&ConflictInput {
            sightings: &sightings,
            host_ranges: &host_ranges,
            pools: &pools,
            blocks: &blocks,
            explained: Some(&explained),
        })
    }

    /// The checkpoint holds one inventory asks for (blocks aside: see `hold_wanted`).
    fn checkpoint_keys(inv: &HostInventory) -> BTreeSet<HoldKey> {
        let mut out = BTreeSet::new();
        for vm in inv.vms() {
            for a in &vm.adapters {
                if let AdapterLocation::Checkpoint(c) = &a.location
                    && a.mac.invalid_reason().is_none()
                {
                    out.insert(HoldKey {
                        mac: a.mac,
                        vm_id: vm.id().to_string(),
                        reason: HoldReason::Checkpoint,
                        reference: c.id.clone(),
                    });
                }
            }
        }
        out
    }

    /// Whether some host's latest inventory asks for this checkpoint hold. MACs inside a block
    /// are the block's: never held.
    fn hold_wanted(&self, key: &HoldKey) -> bool {
        self.checkpoint_refs.contains_key(key) && self.block_at(key.mac).is_none()
    }

    /// Takes `inv` as the whole truth about its host at `generation`; see the module docs for
    /// the rules. Validates first and changes nothing on error.
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
        validate_inventory(&inv)?;
        // A resend of the generation already applied, with the same content, is the agent
        // retrying after a lost reply: answer it as done, change nothing.
        if let Some(current) = self.inventories.get(&host)
            && generation == current.generation
            && inv == current.inventory
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
        if let Some(current) = self.inventories.get(&host)
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
        let stored = StoredInventory {
            generation,
            received: ctx.now,
            inventory: inv,
        };
        // Only this host's inventory changes, so only its checkpoints can start or stop being
        // asked for; reference counts over all hosts say whether another host still asks.
        let asked_before = match self.inventories.remove(&host) {
            Some(old) => self.index_seen(&old.inventory, false),
            None => BTreeSet::new(),
        };
        let asked_now = self.index_seen(&stored.inventory, true);
        self.inventories.insert(host.clone(), stored.clone());
        let mut changes = vec![Change::InventorySaved(stored)];
        let inv = &self.inventories[&host].inventory.clone();

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
        let mut gone: Vec<OwnerKey> = self
            .leases
            .values()
            .filter(|l| {
                l.owner.host.as_deref() == Some(host.as_str())
                    && l.state == LeaseState::Bound
                    && !lists_vm(inv, &l.owner.vm_id)
            })
            .map(|l| l.owner.key())
            .collect();
        gone.sort();
        for key in gone {
            let elsewhere = self
                .inventories
                .iter()
                .find(|(h, s)| **h != host && lists_vm(&s.inventory, &key.vm_id))
                .map(|(h, _)| h.clone());
            if let Some(other) = elsewhere {
                let lease = self.leases.get_mut(&key).unwrap();
                lease.owner.host = Some(other.clone());
                let lease = lease.clone();
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

        // Checkpoint holds asked for and not there (yet): place them.
        let wanted: Vec<HoldKey> = asked_now
            .into_iter()
            .filter(|k| self.hold_wanted(k))
            .collect();
        for key in wanted {
            let exists = self
                .macs
                .get(&key.mac)
                .is_some_and(|e| e.holds.iter().any(|h| h.key() == key));
            if exists {
                continue;
            }
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
                Err(e) => out.notes.push(format!(
                    "checkpoint {} of VM {}: {} not held: {e}",
                    key.reference, key.vm_id, key.mac
                )),
            }
        }
        self.refresh_blocks(&inner, &mut changes);
        out.unmanaged.sort();
        out.unmanaged.dedup();
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
            let lease = self.leases.get_mut(&key).unwrap();
            let before = lease.clone();
            lease.state = LeaseState::Bound;
            if !vm.name.is_empty() {
                lease.owner.vm_name = Some(vm.name.clone());
            }
            if !in_flight {
                lease.owner.host = Some(host.to_string());
            }
            if *lease == before {
                return;
            }
            let lease = lease.clone();
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
            self.leases.insert(lease.owner.key(), lease.clone());
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
