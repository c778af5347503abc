//! The conflicts of every host's latest inventory, kept up to date as the state changes, so that
//! a read costs O(conflicts + hosts) instead of a run of the engine over every adapter.
//!
//! The index remembers the versions of its inputs it was computed from (persistent maps, so
//! keeping them costs O(1)) and catches up by diffing them against the current ones, which
//! visits only what changed: a MAC whose sightings, lease/hold, pool or block changed, and every
//! MAC with a conflict of a host whose report has a new generation (the generation is part of
//! each sighting's evidence, not of whether there is a conflict). Each such MAC is classified again by the engine's own per-MAC classifier, on
//! exactly the sightings the full engine builds, so a read equals a rebuild;
//! `check_invariants` compares the two. Range overlaps are per host, not per MAC, and are
//! computed at each read: O(hosts).

use std::collections::{BTreeMap, HashSet};

use imbl::ordmap::DiffItem;

use super::*;
use crate::conflict::{
    self, Conflict, ConflictClass, MacFacts, Owner, PoolRange, Sighting, find_conflicts,
};

#[derive(Clone, Debug, Default)]
pub(super) struct ConflictIndex {
    /// The inputs as they were when the index was last brought up to date.
    seen: OrdMap<Mac, Vec<Seen>>,
    macs: OrdMap<Mac, MacEntry>,
    ranges: OrdMap<Mac, (MacRange, PoolName)>,
    blocks: OrdMap<u64, Block>,
    inventories: OrdMap<String, std::sync::Arc<StoredInventory>>,
    /// The conflicts about each MAC (at most a duplicate and an `unmanaged`, or `invalid`).
    by_mac: OrdMap<Mac, Vec<Conflict>>,
}

fn key<'a, K, V>(d: &DiffItem<'a, 'a, K, V>) -> &'a K {
    match d {
        DiffItem::Add(k, _) | DiffItem::Remove(k, _) => k,
        DiffItem::Update { new: (k, _), .. } => k,
    }
}

fn values<'a, K, V>(d: DiffItem<'a, 'a, K, V>) -> Vec<&'a V> {
    match d {
        DiffItem::Add(_, v) | DiffItem::Remove(_, v) => vec![v],
        DiffItem::Update { old, new } => vec![old.1, new.1],
    }
}

impl ConflictIndex {
    /// Reclassifies every MAC whose inputs changed since the last call, and remembers `a`'s
    /// inputs. Cost: O(what changed).
    fn catch_up(&mut self, a: &Authority) {
        let mut dirty: BTreeSet<Mac> = self.seen.diff(&a.seen).map(|d| *key(&d)).collect();
        dirty.extend(self.macs.diff(&a.macs).filter_map(|d| match d {
            // Only whether a lease or hold explains the MAC matters.
            DiffItem::Add(m, _) | DiffItem::Remove(m, _) => Some(*m),
            DiffItem::Update { .. } => None,
        }));
        let mut spans: Vec<MacRange> = Vec::new();
        for d in self.ranges.diff(&a.range_index) {
            spans.extend(values(d).into_iter().map(|(r, _)| *r));
        }
        for d in self.blocks.diff(&a.blocks) {
            spans.extend(values(d).into_iter().map(|b| b.range));
        }
        for r in spans {
            dirty.extend(a.seen.range(r.first()..=r.last()).map(|(m, _)| *m));
        }
        // Diffed, not looked up host by host: comparing every host's generation cost O(hosts)
        // string comparisons at each report.
        for d in self.inventories.diff(&a.inventories) {
            let s = match d {
                DiffItem::Add(_, s) => s,
                DiffItem::Update { old, new } if old.1.generation != new.1.generation => new.1,
                DiffItem::Update { .. } | DiffItem::Remove(..) => continue,
            };
            // The generation is only in a conflict's evidence, never in whether there is
            // one: MACs whose sightings changed are dirty already (`seen`), and of the
            // rest only those with a conflict need it again, for the new generation's
            // text. Classifying every adapter of the host at each report cost
            // O(host adapters) per push (issue 18).
            let inv = &s.inventory;
            dirty.extend(
                inv.vms()
                    .iter()
                    .flat_map(|v| v.adapters.iter().map(|x| x.mac))
                    .chain(inv.management_adapters.iter().map(|x| x.mac))
                    .filter(|m| self.by_mac.contains_key(m)),
            );
        }
        for mac in dirty {
            let found = a.classify_mac(mac);
            if found.is_empty() {
                self.by_mac.remove(&mac);
            } else {
                self.by_mac.insert(mac, found);
            }
        }
        self.seen = a.seen.clone();
        self.macs = a.macs.clone();
        self.ranges = a.range_index.clone();
        self.blocks = a.blocks.clone();
        self.inventories = a.inventories.clone();
    }
}

impl Authority {
    /// Brings the derived read views (the conflict index) up to date. Reads are right without
    /// it (they catch up a copy); calling it after a batch of mutations keeps them O(1).
    pub fn settle(&mut self) {
        let mut index = std::mem::take(&mut self.conflict_index);
        index.catch_up(self);
        self.conflict_index = index;
    }

    /// A copy for readers, with the read views up to date: O(1) (every collection is
    /// persistent), so a store publishes one after each batch and reads never wait for its
    /// writer.
    pub fn snapshot(&mut self) -> Authority {
        self.settle();
        self.clone()
    }

    /// The index as of now: the stored one when settled, else a caught-up copy.
    fn conflict_view(&self) -> ConflictIndex {
        let mut index = self.conflict_index.clone();
        index.catch_up(self);
        index
    }

    /// The sighting the engine builds from one entry of the who-has-which-MAC index.
    fn sighting(&self, mac: Mac, s: &Seen) -> Sighting {
        let generation = self.inventories.get(&s.host).map_or(0, |i| i.generation);
        let seen = match (&s.checkpoint, &s.checkpoint_id) {
            _ if s.management_os => conflict::Seen::ManagementOs,
            (Some(name), Some(id)) => conflict::Seen::Checkpoint {
                id: id.clone(),
                name: name.clone(),
            },
            _ => conflict::Seen::Live,
        };
        let vm = |v: &String| (!s.management_os).then(|| v.clone());
        Sighting {
            mac,
            dynamic: Some(s.dynamic),
            seen,
            owner: Owner {
                source: inventory_source(&s.host, generation),
                location: None,
                host: Some(s.host.clone()),
                vm_id: vm(&s.vm_id),
                vm_name: vm(&s.vm_name),
                adapter: Some(s.adapter.clone()),
            },
        }
    }

    /// The conflicts about `mac`, from every host's latest inventory.
    fn classify_mac(&self, mac: Mac) -> Vec<Conflict> {
        let Some(list) = self.seen.get(&mac) else {
            return Vec::new();
        };
        let sightings: Vec<Sighting> = list
            .iter()
            .map(|s| self.sighting(mac, s))
            .filter(|s| !s.is_unassigned())
            .collect();
        if sightings.is_empty() {
            return Vec::new();
        }
        let group: Vec<(usize, &Sighting)> = sightings.iter().enumerate().collect();
        let facts = MacFacts {
            explained: Some(self.macs.contains_key(&mac)),
            in_block: self.block_at(mac).is_some(),
            pool: self.pool_of(mac).map(|p| p.as_str()),
        };
        let mut out = Vec::new();
        conflict::classify_group(mac, &group, facts, &mut out);
        out
    }

    /// The pools as the engine sees them.
    fn pool_ranges(&self) -> Vec<PoolRange> {
        self.range_index
            .values()
            .map(|(r, p)| PoolRange {
                pool: p.to_string(),
                range: *r,
            })
            .collect()
    }

    /// Overlaps between hosts' dynamic ranges and pools: per host, so computed at each read.
    fn range_conflicts(&self) -> Vec<Conflict> {
        let mut host_ranges = Vec::new();
        for (host, s) in &self.inventories {
            let source = inventory_source(host, s.generation);
            host_ranges.extend(s.inventory.host_ranges().into_iter().map(|mut r| {
                r.source = source.clone();
                r
            }));
        }
        conflict::range_conflicts(&host_ranges, &self.pool_ranges(), &self.delegated_blocks())
    }

    /// Every conflict across all hosts' latest inventories, the pools and the lease/hold set,
    /// in the engine's order. O(conflicts + hosts) once settled.
    pub fn conflicts(&self) -> Vec<Conflict> {
        let index = self.conflict_view();
        let mut out: Vec<Conflict> = index.by_mac.values().flatten().cloned().collect();
        out.extend(self.range_conflicts());
        conflict::sort_conflicts(&mut out);
        out
    }

    /// How many conflicts of each class there are (every class present, 0 included), without
    /// copying them: what `/metrics` needs.
    pub fn conflict_counts(&self) -> BTreeMap<ConflictClass, u64> {
        let mut counts: BTreeMap<ConflictClass, u64> =
            ConflictClass::ALL.into_iter().map(|c| (c, 0)).collect();
        let index = self.conflict_view();
        for c in index.by_mac.values().flatten() {
            *counts.entry(c.class).or_default() += 1;
        }
        *counts.entry(ConflictClass::RangeOverlap).or_default() +=
            self.range_conflicts().len() as u64;
        counts
    }

    /// The MACs some conflict is about (the map and address pages mark them).
    pub fn conflicting_macs(&self) -> BTreeSet<Mac> {
        self.conflict_view().by_mac.keys().copied().collect()
    }

    /// The conflicts computed from scratch by the full engine: what the index must equal.
    pub fn conflicts_rebuilt(&self) -> Vec<Conflict> {
        let mut sightings = Vec::new();
        let mut host_ranges = Vec::new();
        for (host, s) in &self.inventories {
            let source = inventory_source(host, s.generation);
            sightings.extend(s.inventory.sightings(&source));
            host_ranges.extend(s.inventory.host_ranges().into_iter().map(|mut r| {
                r.source = source.clone();
                r
            }));
        }
        let explained: HashSet<Mac> = self.macs.keys().copied().collect();
        find_conflicts(&conflict::ConflictInput {
            sightings: &sightings,
            host_ranges: &host_ranges,
            pools: &self.pool_ranges(),
            blocks: &self.delegated_blocks(),
            explained: Some(&explained),
        })
    }

    /// The settled index equals a rebuild (for `check_invariants`).
    pub(super) fn check_conflict_index(&self) -> std::result::Result<(), String> {
        let (kept, rebuilt) = (self.conflicts(), self.conflicts_rebuilt());
        if kept != rebuilt {
            return Err(format!(
                "the conflict index differs from a rebuild: kept {kept:?}, rebuilt {rebuilt:?}"
            ));
        }
        Ok(())
    }
}

/// What `/metrics` shows, read in one go: O(pools + blocks + hosts + conflict classes), never
/// O(adapters).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Gauges {
    pub pools: Vec<PoolView>,
    /// Conflicts by class, every class present.
    pub conflicts: BTreeMap<ConflictClass, u64>,
    /// Blocks that are not free yet.
    pub blocks: Vec<Block>,
    /// When each host's latest inventory was accepted.
    pub received: Vec<(String, Timestamp)>,
    /// How each host's agent said it knows its allocator's cursor (hosts that said).
    pub cursor_sources: Vec<(String, crate::inventory::CursorSource)>,
}

impl Authority {
    pub fn gauges(&self) -> Gauges {
        Gauges {
            pools: self.pools(),
            conflicts: self.conflict_counts(),
            blocks: self.blocks(&BlockFilter::default()),
            received: self.inventory_received(),
            cursor_sources: self
                .inventories
                .iter()
                .filter_map(|(h, s)| Some((h.clone(), s.inventory.cursor_source?)))
                .collect(),
        }
    }
}

/// The evidence a sighting from an inventory carries: which report.
fn inventory_source(host: &str, generation: u64) -> String {
    format!("inventory {host} gen {generation}")
}
