//! The address space of a pool as a person looks at it: every address's state for the
//! dashboard's map (one cell per address, or per 256 / 65,536 addresses zoomed out) and its
//! address table (used addresses interleaved with "N free" runs). Read-only views of the same
//! state the rules keep; nothing here decides anything.

use std::collections::BTreeSet;

use super::*;
use crate::inventory::AdapterLocation;

/// What one address of a pool is, in the dashboard's legend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddressState {
    /// Not in any range of the pool (a hole between ranges, or past its end).
    Outside,
    Free,
    Leased,
    Held(HoldReason),
    Cooling(Timestamp),
    /// Inside a block delegated to a host's own allocator.
    Delegated {
        block: u64,
        host: String,
    },
    /// Free in the pool, yet a host's latest inventory shows it: Hyper-V (or someone) uses it
    /// without a lease.
    Unmanaged,
}

impl AddressState {
    /// The legend's key, stable (CSS classes, filters, exports).
    pub fn key(&self) -> &'static str {
        match self {
            AddressState::Outside => "outside",
            AddressState::Free => "free",
            AddressState::Leased => "leased",
            AddressState::Held(_) => "held",
            AddressState::Cooling(_) => "cooling",
            AddressState::Delegated { .. } => "delegated",
            AddressState::Unmanaged => "unmanaged",
        }
    }

    /// Every key a filter may name, in legend order.
    pub const KEYS: [&'static str; 6] = [
        "free",
        "leased",
        "held",
        "cooling",
        "delegated",
        "unmanaged",
    ];
}

/// One address: its state, and whether the conflict engine names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressCell {
    pub mac: Mac,
    pub state: AddressState,
    pub conflict: bool,
}

/// A zoomed-out cell: `size` addresses from `first`, summarised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SummaryCell {
    pub first: Mac,
    pub size: u64,
    /// How many of them belong to the pool.
    pub in_pool: u64,
    /// How many of those are not free (leased, held, cooling or delegated).
    pub used: u64,
    /// Conflicting MACs inside.
    pub conflicts: u64,
}

/// The cells of one map page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapCells {
    Addresses(Vec<AddressCell>),
    Summaries(Vec<SummaryCell>),
}

/// One page of a pool's map: `cells` cells of `cell_size` addresses from `first`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressMap {
    pub pool: PoolName,
    pub first: Mac,
    pub cell_size: u64,
    pub cells: MapCells,
    /// The pool's lowest and highest address: the page can move inside them.
    pub span: (Mac, Mac),
}

/// One row of a pool's address table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddressRow {
    /// An address something uses or keeps: its whole status.
    Used {
        status: MacStatus,
        state: AddressState,
        conflict: bool,
    },
    /// A delegated block, as one row (its addresses belong to the host's allocator).
    Block(Block),
    /// A run of free addresses.
    Free { first: Mac, last: Mac },
}

impl AddressRow {
    /// The row's (first) address.
    pub fn first(&self) -> Mac {
        match self {
            AddressRow::Used { status, .. } => status.mac,
            AddressRow::Block(b) => b.range.first(),
            AddressRow::Free { first, .. } => *first,
        }
    }

    /// The legend's key of the row: a block is `delegated`, a free run `free`.
    pub fn state_key(&self) -> &'static str {
        match self {
            AddressRow::Used { state, .. } => state.key(),
            AddressRow::Block(_) => AddressState::Delegated {
                block: 0,
                host: String::new(),
            }
            .key(),
            AddressRow::Free { .. } => AddressState::Free.key(),
        }
    }

    /// The VM's name: its lease's, else the first inventory's that shows the address.
    pub fn vm_name(&self) -> Option<&str> {
        let AddressRow::Used { status, .. } = self else {
            return None;
        };
        let leased = status
            .leases
            .first()
            .and_then(|l| l.owner.vm_name.as_deref());
        leased
            .filter(|n| !n.is_empty())
            .or_else(|| status.seen.first().map(|s| s.vm_name.as_str()))
            .filter(|n| !n.is_empty())
    }

    /// The host: the block's, the lease's, else the first inventory's that shows the address.
    pub fn host(&self) -> Option<&str> {
        match self {
            AddressRow::Used { status, .. } => {
                let leased = status.leases.first().and_then(|l| l.owner.host.as_deref());
                leased
                    .filter(|h| !h.is_empty())
                    .or_else(|| status.seen.first().map(|s| s.host.as_str()))
                    .filter(|h| !h.is_empty())
            }
            AddressRow::Block(b) => Some(&b.host),
            AddressRow::Free { .. } => None,
        }
    }

    /// Since when: the lease's creation, or the block's claim.
    pub fn since(&self) -> Option<Timestamp> {
        match self {
            AddressRow::Used { status, .. } => status.leases.first().map(|l| l.created),
            AddressRow::Block(b) => Some(b.claimed),
            AddressRow::Free { .. } => None,
        }
    }
}

/// A column the address table can be sorted by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AddressSortKey {
    #[default]
    Mac,
    State,
    VmName,
    Host,
    Since,
}

impl AddressSortKey {
    /// Every key, as a query names it.
    pub const KEYS: [&'static str; 5] = ["mac", "state", "vm", "host", "since"];

    pub fn name(self) -> &'static str {
        match self {
            AddressSortKey::Mac => "mac",
            AddressSortKey::State => "state",
            AddressSortKey::VmName => "vm",
            AddressSortKey::Host => "host",
            AddressSortKey::Since => "since",
        }
    }

    pub fn parse(s: &str) -> std::result::Result<AddressSortKey, String> {
        Ok(match s {
            "mac" => AddressSortKey::Mac,
            "state" => AddressSortKey::State,
            "vm" => AddressSortKey::VmName,
            "host" => AddressSortKey::Host,
            "since" => AddressSortKey::Since,
            other => {
                return Err(format!(
                    "unknown sort '{other}': expected one of {}",
                    AddressSortKey::KEYS.join(", ")
                ));
            }
        })
    }
}

/// The order of a pool's address table: a column, ascending or descending.
///
/// Every row sorts by its value in that column, ties in MAC order. A state sorts in legend
/// order ([`AddressState::KEYS`]), names and hosts without regard to case, `since` by time. A
/// row without a value (no VM name, no host, no since) comes after every row with one, in
/// either direction. A free run is a row like the others: its state is `free` and it has no VM,
/// host or since, so it is never dropped by a sort, free runs keep MAC order among themselves,
/// and they gather where `free` sorts (by state) or after the used rows (by VM, host, since).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddressOrder {
    pub key: AddressSortKey,
    pub descending: bool,
}

impl AddressOrder {
    /// The table's own order: ascending MAC, the order `address_rows` pages in.
    pub fn is_mac_ascending(self) -> bool {
        self == AddressOrder::default()
    }

    /// `rows` (in MAC order) in this order.
    pub fn sort(self, rows: Vec<AddressRow>) -> Vec<AddressRow> {
        let rank = |k: &str| AddressState::KEYS.iter().position(|s| *s == k);
        let value = |r: &AddressRow| -> Option<(u64, String)> {
            match self.key {
                AddressSortKey::Mac => Some((r.first().to_u64(), String::new())),
                AddressSortKey::State => rank(r.state_key()).map(|i| (i as u64, String::new())),
                AddressSortKey::VmName => r.vm_name().map(|n| (0, n.to_lowercase())),
                AddressSortKey::Host => r.host().map(|h| (0, h.to_lowercase())),
                AddressSortKey::Since => r.since().map(|t| (t.0, String::new())),
            }
        };
        let mut keyed: Vec<(Option<(u64, String)>, AddressRow)> =
            rows.into_iter().map(|r| (value(&r), r)).collect();
        // stable: ties stay in the MAC order the rows came in
        keyed.sort_by(|(a, _), (b, _)| match (a, b) {
            (Some(a), Some(b)) if self.descending => b.cmp(a),
            (Some(a), Some(b)) => a.cmp(b),
            // no value: after every row with one
            (a, b) => b.is_some().cmp(&a.is_some()),
        });
        keyed.into_iter().map(|(_, r)| r).collect()
    }
}

impl Authority {
    /// The state of one address (of any pool, or none).
    pub fn address_state(&self, mac: Mac) -> AddressState {
        let Some(name) = self.pool_of(mac) else {
            return AddressState::Outside;
        };
        if let Some(b) = self.block_at(mac) {
            return AddressState::Delegated {
                block: b.id,
                host: b.host.clone(),
            };
        }
        if let Some(e) = self.macs.get(&mac) {
            if !e.leases.is_empty() {
                return AddressState::Leased;
            }
            if let Some(h) = e.holds.iter().map(|h| h.reason).min() {
                return AddressState::Held(h);
            }
        }
        if let Some(until) = self.cooling.get(&mac) {
            return AddressState::Cooling(*until);
        }
        if self.seen.contains_key(&mac) {
            return AddressState::Unmanaged;
        }
        debug_assert!(self.pools[name].free.is_free(mac));
        AddressState::Free
    }

    /// A page of `cells` cells of `cell_size` addresses from `first` (clamped to MAC space).
    /// `cell_size` 1 gives each address's state; larger sizes summarise. `conflicts` is
    /// [`Authority::conflicting_macs`], computed once by the caller.
    pub fn address_map(
        &self,
        pool: &str,
        first: Mac,
        cell_size: u64,
        cells: u64,
        conflicts: &BTreeSet<Mac>,
    ) -> Result<AddressMap> {
        let p = self.pool_state(pool)?;
        if cell_size == 0 || cells == 0 {
            return Err(AuthorityError::InvalidInput(
                "a map needs at least one cell of at least one address".into(),
            ));
        }
        let max = crate::mac::MAC_MAX;
        let start = first.to_u64();
        let cell_at = |i: u64| -> Option<(Mac, Mac)> {
            let a = start.checked_add(i.checked_mul(cell_size)?)?;
            if a > max {
                return None;
            }
            let b = a.saturating_add(cell_size - 1).min(max);
            Some((Mac::from_u64(a)?, Mac::from_u64(b)?))
        };
        let cells = if cell_size == 1 {
            MapCells::Addresses(
                (0..cells)
                    .map_while(cell_at)
                    .map(|(mac, _)| AddressCell {
                        mac,
                        state: if self.pool_of(mac) == Some(&p.spec.name) {
                            self.address_state(mac)
                        } else {
                            AddressState::Outside
                        },
                        conflict: conflicts.contains(&mac),
                    })
                    .collect(),
            )
        } else {
            MapCells::Summaries(
                (0..cells)
                    .map_while(cell_at)
                    .map(|(a, b)| {
                        let in_pool: u64 = p.spec.ranges.iter().map(|r| overlap(r, a, b)).sum();
                        SummaryCell {
                            first: a,
                            size: b.to_u64() - a.to_u64() + 1,
                            in_pool,
                            used: in_pool - p.free.free_between(a, b),
                            conflicts: conflicts.range(a..=b).count() as u64,
                        }
                    })
                    .collect(),
            )
        };
        Ok(AddressMap {
            pool: p.spec.name.clone(),
            first,
            cell_size,
            cells,
            span: p.spec.span(),
        })
    }

    /// The pool's addresses in order from `from`: each used address (leased, held, cooling, or
    /// free but seen in an inventory), each delegated block as one row, and the free runs between
    /// them; of those, at most `limit` rows that `keep` accepts. Also returns where the next page
    /// starts. O(log n + rows looked at).
    pub fn address_rows(
        &self,
        pool: &str,
        from: Mac,
        limit: usize,
        conflicts: &BTreeSet<Mac>,
        keep: &dyn Fn(&AddressRow) -> bool,
    ) -> Result<(Vec<AddressRow>, Option<Mac>)> {
        let p = self.pool_state(pool)?;
        let mut ranges = p.spec.ranges.clone();
        ranges.sort_by_key(MacRange::first);
        let mut rows = Vec::new();
        let push = |rows: &mut Vec<AddressRow>, row: AddressRow| {
            if keep(&row) {
                rows.push(row);
            }
        };
        for r in ranges.iter().filter(|r| r.last() >= from) {
            let mut at = r.first().max(from).to_u64();
            let end = r.last().to_u64();
            while at <= end {
                if rows.len() == limit {
                    return Ok((rows, Mac::from_u64(at)));
                }
                let mac = Mac::from_u64(at).expect("inside a range");
                let next_free = p.free.run_from(mac).filter(|(s, _)| *s <= r.last());
                match next_free {
                    Some((s, l)) if s <= mac => {
                        // a free run, cut where an inventory shows one of its addresses
                        let l = l.min(r.last());
                        match self.seen.range(mac..=l).next().map(|(m, _)| *m) {
                            Some(seen) if seen == mac => {
                                push(&mut rows, self.used_row(mac, conflicts));
                                at += 1;
                            }
                            Some(seen) => {
                                let last = Mac::from_u64(seen.to_u64() - 1).unwrap();
                                push(&mut rows, AddressRow::Free { first: mac, last });
                                at = seen.to_u64();
                            }
                            None => {
                                push(
                                    &mut rows,
                                    AddressRow::Free {
                                        first: mac,
                                        last: l,
                                    },
                                );
                                at = l.to_u64() + 1;
                            }
                        }
                    }
                    _ => {
                        if let Some(b) = self.block_at(mac) {
                            push(&mut rows, AddressRow::Block(b.clone()));
                            at = b.range.last().to_u64() + 1;
                        } else {
                            push(&mut rows, self.used_row(mac, conflicts));
                            at += 1;
                        }
                    }
                }
            }
        }
        Ok((rows, None))
    }

    /// The whole table of the pool (rows `keep` accepts) in `order`, from its `skip`th row: at
    /// most `limit` rows, and the `skip` of the next page. O(rows log rows): pages other than
    /// in MAC order cannot start from an address, use [`Authority::address_rows`] for those.
    pub fn address_rows_in_order(
        &self,
        pool: &str,
        order: AddressOrder,
        skip: usize,
        limit: usize,
        conflicts: &BTreeSet<Mac>,
        keep: &dyn Fn(&AddressRow) -> bool,
    ) -> Result<(Vec<AddressRow>, Option<usize>)> {
        let (rows, _) = self.address_rows(pool, Mac::ZERO, usize::MAX, conflicts, keep)?;
        let total = rows.len();
        let page: Vec<AddressRow> = order
            .sort(rows)
            .into_iter()
            .skip(skip)
            .take(limit)
            .collect();
        let next = skip.saturating_add(page.len());
        Ok((page, (next < total).then_some(next)))
    }

    fn used_row(&self, mac: Mac, conflicts: &BTreeSet<Mac>) -> AddressRow {
        AddressRow::Used {
            status: self.mac_status(mac),
            state: self.address_state(mac),
            conflict: conflicts.contains(&mac),
        }
    }
}

/// How many addresses `a..=b` shares with `r`.
fn overlap(r: &MacRange, a: Mac, b: Mac) -> u64 {
    let lo = r.first().max(a).to_u64();
    let hi = r.last().min(b).to_u64();
    if lo > hi { 0 } else { hi - lo + 1 }
}

/// One reporting host, as the hosts page lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostSummary {
    pub host: String,
    pub cluster: Option<String>,
    pub generation: u64,
    pub received: Timestamp,
    pub dynamic_range: Option<MacRange>,
    pub cursor: Option<Mac>,
    pub vms: usize,
    pub live_adapters: usize,
    pub checkpoint_adapters: usize,
    /// The management OS's own vNICs.
    pub management_adapters: usize,
    /// How the agent knows the allocator's position, and its strategy, when it says.
    pub cursor_source: Option<crate::inventory::CursorSource>,
    pub strategy: Option<String>,
    /// The other reporting hosts whose dynamic range shares an address with this one's, by name.
    pub overlaps: Vec<String>,
    /// The host's blocks that are not free yet (pending, active, draining), by id.
    pub blocks: Vec<Block>,
}

impl HostSummary {
    /// No readable cursor: the agent rotates on a lower bound from the inventory instead.
    pub fn cursor_estimated(&self) -> bool {
        self.cursor_source == Some(crate::inventory::CursorSource::InventoryBound)
    }
}

impl Authority {
    /// Every host that has reported an inventory, by name.
    pub fn host_summaries(&self) -> Vec<HostSummary> {
        let ranges: Vec<(&String, MacRange)> = self
            .inventories
            .iter()
            .filter_map(|(host, s)| Some((host, s.inventory.dynamic_range()?)))
            .collect();
        let mut blocks: HashMap<&str, Vec<Block>> = HashMap::new();
        for b in self.blocks.values() {
            blocks.entry(b.host.as_str()).or_default().push(b.clone());
        }
        self.inventories
            .iter()
            .map(|(host, s)| {
                let inv = &s.inventory;
                let adapters = inv.vms().iter().flat_map(|v| &v.adapters);
                let live = adapters
                    .clone()
                    .filter(|a| matches!(a.location, AdapterLocation::Live))
                    .count();
                HostSummary {
                    host: host.clone(),
                    cluster: inv.cluster.clone(),
                    generation: s.generation,
                    received: s.received,
                    dynamic_range: inv.dynamic_range(),
                    cursor: inv.cursor(),
                    vms: inv.vms().len(),
                    live_adapters: live,
                    checkpoint_adapters: adapters.count() - live,
                    management_adapters: inv.management_adapters.len(),
                    cursor_source: inv.cursor_source,
                    strategy: inv.strategy.clone(),
                    overlaps: inv
                        .dynamic_range()
                        .map(|mine| {
                            ranges
                                .iter()
                                .filter(|(other, r)| *other != host && r.overlaps(&mine))
                                .map(|(other, _)| (*other).clone())
                                .collect()
                        })
                        .unwrap_or_default(),
                    blocks: blocks.remove(host.as_str()).unwrap_or_default(),
                }
            })
            .collect()
    }
}

/// A pool as the pools page shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolSummary {
    pub view: PoolView,
    pub longest_free_run: u64,
    /// Conflicting MACs inside the pool's ranges.
    pub conflicts: u64,
    /// The newest inventory of a host that shows one of the pool's addresses.
    pub last_report: Option<Timestamp>,
}

impl Authority {
    /// Every pool with what its row needs beyond the counters.
    pub fn pool_summaries(&self, conflicts: &BTreeSet<Mac>) -> Vec<PoolSummary> {
        self.pools
            .values()
            .map(|p| {
                let mut n = 0;
                let mut hosts = BTreeSet::new();
                for r in &p.spec.ranges {
                    n += conflicts.range(r.first()..=r.last()).count() as u64;
                    for seen in self.seen.range(r.first()..=r.last()).map(|(_, s)| s) {
                        hosts.extend(seen.iter().map(|s| s.host.as_str()));
                    }
                }
                PoolSummary {
                    view: p.view(),
                    longest_free_run: p.free.longest_run(),
                    conflicts: n,
                    last_report: hosts
                        .iter()
                        .filter_map(|h| self.inventories.get(*h))
                        .map(|s| s.received)
                        .max(),
                }
            })
            .collect()
    }
}
