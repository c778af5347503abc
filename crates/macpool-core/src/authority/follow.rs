//! Following another writer: applying the [`Change`]s a different `Authority` made (read back
//! from a shared store's change log) to this one, so several server replicas keep the same state
//! without reloading it. The rules were already checked by the writer; this only replays their
//! effect, through the same accounting helpers the writer used (`reclassify`, `start_cooling`,
//! `index_seen`, `take_block_range`). Property: after replaying a writer's changes, every query
//! answers as on the writer (`authority/tests.rs`).

use super::{Authority, Change};
use crate::block::BlockState;
use crate::lease::OwnerKey;
use crate::mac::Mac;

impl Authority {
    /// Replays changes persisted by another writer, in order. History entries are ignored: the
    /// authority keeps none in memory.
    ///
    /// `Err` when a change does not fit this state (an inventory diff for an inventory this
    /// state does not have): the follower has diverged and must reload; it may have applied
    /// part of `changes`.
    pub fn apply_persisted(&mut self, changes: &[Change]) -> Result<(), String> {
        for change in changes {
            self.apply_one(change)?;
        }
        Ok(())
    }

    fn apply_one(&mut self, change: &Change) -> Result<(), String> {
        match change {
            Change::PoolSaved { spec, cursor } => match self.pools.get_mut(&spec.name) {
                Some(p) if p.spec.ranges == spec.ranges => {
                    p.spec = spec.clone();
                    p.cursor = *cursor;
                }
                Some(_) => self.rebuild_pool(spec.clone(), *cursor),
                None => self.insert_pool(spec.clone(), *cursor),
            },
            Change::PoolDeleted { name } => self.forget_pool(name),
            Change::CursorMoved { pool, cursor } => {
                if let Some(p) = self.pools.get_mut(pool) {
                    p.cursor = *cursor;
                }
            }
            Change::LeaseSaved(lease) => {
                let key = lease.owner.key();
                if let Some(old) = self.leases.get(&key).map(|l| l.mac)
                    && old != lease.mac
                {
                    self.unlink_lease(old, &key);
                }
                let mac = lease.mac;
                let before = self.slot(mac);
                let entry = self.macs.entry(mac).or_default();
                if !entry.leases.contains(&key) {
                    entry.leases.push(key.clone());
                }
                self.put_lease(key, lease.clone());
                self.reclassify(mac, before);
            }
            Change::LeaseDeleted { mac, owner } => {
                self.take_lease(owner);
                self.unlink_lease(*mac, owner);
            }
            Change::HoldSaved(hold) => {
                let before = self.slot(hold.mac);
                let holds = &mut self.macs.entry(hold.mac).or_default().holds;
                match holds.iter_mut().find(|h| h.key() == hold.key()) {
                    Some(h) => *h = hold.clone(),
                    None => holds.push(hold.clone()),
                }
                self.reclassify(hold.mac, before);
            }
            Change::HoldDeleted(key) => {
                let before = self.slot(key.mac);
                if let Some(e) = self.macs.get_mut(&key.mac) {
                    e.holds.retain(|h| h.key() != *key);
                }
                self.forget_if_empty(key.mac);
                self.reclassify(key.mac, before);
            }
            Change::CoolingStarted { mac, until } => {
                if let Some(old) = self.cooling.remove(mac) {
                    self.cooling_queue.remove(&(old, *mac));
                }
                self.start_cooling(*mac, *until);
            }
            Change::CoolingCleared { mac } => {
                let before = self.slot(*mac);
                if let Some(until) = self.cooling.remove(mac) {
                    self.cooling_queue.remove(&(until, *mac));
                }
                self.reclassify(*mac, before);
            }
            Change::History(_) => {}
            Change::InventorySaved(stored) => {
                let host = stored.inventory.host().to_string();
                if let Some(old) = self.inventories.remove(&host) {
                    let _ = self.index_seen(&old.inventory, false);
                }
                let _ = self.index_seen(&stored.inventory, true);
                self.inventories
                    .insert(host, std::sync::Arc::new(stored.clone()));
            }
            Change::InventoryPatched(patch) => {
                let host = patch.host();
                let mut stored = self
                    .inventories
                    .get(host)
                    .map(|s| super::StoredInventory::clone(s))
                    .ok_or_else(|| {
                        format!("an inventory diff for host {host}, which has no inventory here")
                    })?;
                patch.apply_to(&mut stored).map_err(|e| e.to_string())?;
                if let Some(old) = self.inventories.remove(host) {
                    let _ = self.index_seen(&old.inventory, false);
                }
                let _ = self.index_seen(&stored.inventory, true);
                self.inventories
                    .insert(host.to_string(), std::sync::Arc::new(stored));
            }
            Change::BlockSaved(block) => {
                self.next_block_id = self.next_block_id.max(block.id + 1);
                let known = self.blocks.contains_key(&block.id);
                match (known, block.state) {
                    (true, BlockState::Free) => {
                        self.blocks.remove(&block.id);
                        self.block_index.remove(&block.range.first());
                        if let Some(p) = self.pools.get_mut(&block.pool) {
                            let given = p.free.give_range(block.range);
                            debug_assert!(given, "a block's addresses are never free");
                            p.delegated -= block.range.len();
                        }
                    }
                    (true, _) => {
                        self.blocks.insert(block.id, block.clone());
                    }
                    (false, BlockState::Free) => {}
                    (false, _) => {
                        if self.pools.contains_key(&block.pool) {
                            let taken = self.take_block_range(block);
                            debug_assert!(taken, "the writer claimed free addresses");
                        }
                        self.block_index.insert(block.range.first(), block.id);
                        self.blocks.insert(block.id, block.clone());
                    }
                }
            }
            Change::DepartedSaved(lease) => {
                self.departed.insert(lease.mac, lease.clone());
            }
            Change::DepartedCleared { mac } => {
                self.departed.remove(mac);
            }
        }
        Ok(())
    }

    /// Takes lease `key` off `mac`'s entry and recounts the MAC.
    fn unlink_lease(&mut self, mac: Mac, key: &OwnerKey) {
        let before = self.slot(mac);
        if let Some(e) = self.macs.get_mut(&mac) {
            e.leases.retain(|k| k != key);
        }
        self.forget_if_empty(mac);
        self.reclassify(mac, before);
    }
}
