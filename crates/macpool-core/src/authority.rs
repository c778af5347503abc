//! The authority's state machine: pools, leases, holds and cooling MACs, and every rule about
//! who may have which address.
//!
//! Each mutation validates first and changes nothing on error; on success it returns the
//! [`Change`]s a store must persist (in one transaction) for a restart to rebuild the same state
//! with [`Authority::restore`]. Time comes in through [`Context::now`], randomness as arguments.

use std::collections::{BTreeSet, HashMap};

use imbl::{HashMap as PHashMap, OrdMap, OrdSet};
use std::time::Duration;

use crate::Timestamp;
use crate::block::{Block, BlockState};
use crate::freespace::FreeSpace;
use crate::history::{HistoryAction, HistoryEntry};
use crate::lease::{Hold, HoldKey, HoldReason, Lease, LeaseState, Owner, OwnerKey, validate_field};
use crate::mac::Mac;
use crate::pool::{AllocationOrder, DuplicatePolicy, LowWater, PoolName, PoolSpec, PoolUsage};
use crate::range::MacRange;

pub use blocks::{BlockClaim, BlockFilter};
pub use conflict_index::Gauges;
pub use inventory::{Claimant, InventoryOutcome, InventoryPatch, StoredInventory};
pub use map::{
    AddressCell, AddressMap, AddressOrder, AddressRow, AddressSortKey, AddressState, HostSummary,
    MapCells, PoolSummary, SummaryCell,
};

/// Most ranges one pool may have; keeps specs readable and edits cheap.
pub const MAX_RANGES_PER_POOL: usize = 64;
/// Most addresses one allocation call may take.
pub const MAX_ALLOCATION_COUNT: u32 = 4096;

/// Who is acting, and on what they may act.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    /// Shown in the history: a token name, `bootstrap`, `agent:host1`.
    pub name: String,
    pub scope: Scope,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Admins: anything.
    All,
    /// Agents: only leases and holds of VMs on this host.
    Host(String),
}

impl Actor {
    pub fn admin(name: &str) -> Actor {
        Actor {
            name: name.to_string(),
            scope: Scope::All,
        }
    }

    fn may_act_on_host(&self, host: Option<&str>) -> bool {
        match &self.scope {
            Scope::All => true,
            Scope::Host(h) => host == Some(h.as_str()),
        }
    }

    /// Whether this actor may read `what`. An agent reads exactly what its strategies need:
    /// one MAC's status (guard asks who else uses an address) and its own host's blocks and
    /// inventory (delegate; the push's answer). Pools, leases, holds, history, conflicts, other
    /// hosts and metrics are for people and monitoring, so an agent token is refused them: a
    /// stolen agent token then shows neither the fleet's VMs nor their addresses wholesale.
    pub fn may_read(&self, what: Read<'_>) -> Result<()> {
        let Scope::Host(h) = &self.scope else {
            return Ok(());
        };
        match what {
            Read::Mac => Ok(()),
            Read::Host(host) if host == h => Ok(()),
            Read::Host(host) => Err(AuthorityError::Forbidden(format!(
                "this agent token is bound to host '{h}' and cannot read host '{host}'"
            ))),
            Read::Fleet(what) => Err(AuthorityError::Forbidden(format!(
                "an agent token (host '{h}') cannot read {what}; use a reader token"
            ))),
        }
    }
}

/// What a caller asks to read; see [`Actor::may_read`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read<'a> {
    /// One MAC's leases, holds and sightings (`GET /macs/{mac}`).
    Mac,
    /// One host's own records: its blocks, its latest inventory.
    Host(&'a str),
    /// Anything across the fleet, named for the refusal: "pools", "leases", "the history", …
    Fleet(&'a str),
}

/// The circumstances of one operation.
#[derive(Clone, Debug)]
pub struct Context {
    pub now: Timestamp,
    pub actor: Actor,
}

/// Why an operation was refused. `kind()` is the stable slug clients match on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    #[error("{0}")]
    InvalidInput(String),
    #[error("range {range} overlaps range {other_range} of pool '{other_pool}'")]
    RangeOverlap {
        range: MacRange,
        other_pool: PoolName,
        other_range: MacRange,
    },
    #[error("pool '{0}' already exists")]
    PoolExists(PoolName),
    #[error("no pool named '{0}'")]
    PoolNotFound(String),
    #[error(
        "pool '{pool}' still has {leased} leased and {held} held addresses and {blocks} blocks \
         delegated to hosts; release and drain them first"
    )]
    PoolInUse {
        pool: PoolName,
        leased: u64,
        held: u64,
        blocks: u64,
    },
    #[error(
        "pool '{pool}' is exhausted: {wanted} wanted, {free} free of {size} \
         ({leased} leased, {held} held, {cooling} cooling down)"
    )]
    PoolExhausted {
        pool: PoolName,
        wanted: u64,
        size: u64,
        free: u64,
        leased: u64,
        held: u64,
        cooling: u64,
    },
    #[error(
        "pool '{pool}' has no free run of {size} contiguous addresses for a block \
         ({free} free, longest run {longest})"
    )]
    NoBlock {
        pool: PoolName,
        size: u64,
        free: u64,
        longest: u64,
    },
    #[error("{mac} is already in use: {by}")]
    MacInUse { mac: Mac, by: String },
    #[error("{mac} was released recently and is cooling down until {until}")]
    MacCooling { mac: Mac, until: Timestamp },
    #[error("{mac} is not in pool '{pool}'{elsewhere}")]
    MacOutsidePool {
        mac: Mac,
        pool: PoolName,
        elsewhere: String,
    },
    #[error("{owner} already has {mac} from pool '{pool}'")]
    OwnerConflict {
        owner: OwnerKey,
        mac: Mac,
        pool: PoolName,
    },
    #[error(
        "cannot change the ranges of pool '{pool}': {mac} ({what}) lies outside the new ranges"
    )]
    RangeInUse {
        pool: PoolName,
        mac: Mac,
        what: String,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{mac} has {count} leases ({owners}); name the VM to release one")]
    Ambiguous {
        mac: Mac,
        count: usize,
        owners: String,
    },
    #[error("{0}")]
    Forbidden(String),
    #[error(
        "inventory generation {generation} of host '{host}' is not newer than the stored \
         generation {current}; send a higher generation"
    )]
    StaleGeneration {
        host: String,
        generation: u64,
        current: u64,
    },
}

impl AuthorityError {
    /// Stable machine-readable type, used as the problem+json `type` suffix.
    pub fn kind(&self) -> &'static str {
        match self {
            AuthorityError::InvalidInput(_) => "invalid-input",
            AuthorityError::RangeOverlap { .. } => "range-overlap",
            AuthorityError::PoolExists(_) => "pool-exists",
            AuthorityError::PoolNotFound(_) => "not-found",
            AuthorityError::PoolInUse { .. } => "pool-in-use",
            AuthorityError::PoolExhausted { .. } | AuthorityError::NoBlock { .. } => {
                "pool-exhausted"
            }
            AuthorityError::MacInUse { .. } => "mac-in-use",
            AuthorityError::MacCooling { .. } => "mac-cooling",
            AuthorityError::MacOutsidePool { .. } => "mac-outside-pool",
            AuthorityError::OwnerConflict { .. } => "owner-conflict",
            AuthorityError::RangeInUse { .. } => "range-in-use",
            AuthorityError::NotFound(_) => "not-found",
            AuthorityError::Ambiguous { .. } => "ambiguous",
            AuthorityError::Forbidden(_) => "forbidden",
            AuthorityError::StaleGeneration { .. } => "stale-generation",
        }
    }
}

type Result<T> = std::result::Result<T, AuthorityError>;

/// What a store must persist for one successful mutation.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Change {
    /// Insert or replace the pool definition (with its cursor).
    PoolSaved {
        spec: PoolSpec,
        cursor: Mac,
    },
    /// Delete the pool and every cooling entry inside its ranges.
    PoolDeleted {
        name: PoolName,
    },
    CursorMoved {
        pool: PoolName,
        cursor: Mac,
    },
    LeaseSaved(Lease),
    LeaseDeleted {
        mac: Mac,
        owner: OwnerKey,
    },
    HoldSaved(Hold),
    HoldDeleted(HoldKey),
    CoolingStarted {
        mac: Mac,
        until: Timestamp,
    },
    /// The MAC left cooling early because it was held or leased again.
    CoolingCleared {
        mac: Mac,
    },
    History(HistoryEntry),
    /// Insert or replace the latest inventory of `inventory.host()` (a host's first report).
    InventorySaved(StoredInventory),
    /// The latest inventory of `patch.host()` changed by a diff (every later report).
    InventoryPatched(InventoryPatch),
    /// Insert or replace a block (claimed, activated, draining, unused since, freed).
    BlockSaved(Block),
    /// Remember who had `lease.mac` before its VM vanished from its host's inventory, so that
    /// the VM showing up elsewhere with the same MAC (a live migration) gets its lease back.
    DepartedSaved(Lease),
    DepartedCleared {
        mac: Mac,
    },
}

/// Where one MAC stands, the answer to `lease show MAC`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MacStatus {
    pub mac: Mac,
    pub pool: Option<PoolName>,
    pub leases: Vec<Lease>,
    pub holds: Vec<Hold>,
    pub cooling_until: Option<Timestamp>,
    /// Every VM the hosts' latest inventories show with this MAC, leased or not: a MAC Hyper-V
    /// handed out dynamically has no lease, yet it is just as much in use.
    pub seen: Vec<Seen>,
}

/// One VM that a host's latest inventory shows with a MAC, live or in a checkpoint, or a vNIC of
/// its management OS.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Seen {
    pub host: String,
    pub vm_id: String,
    pub vm_name: String,
    /// `None`: the VM's live adapter; else the name of the checkpoint that has it.
    pub checkpoint: Option<String>,
    /// A vNIC of the host's management OS, not a VM's: `vm_id` is empty and `vm_name` is the
    /// vNIC's name.
    pub management_os: bool,
    /// The adapter's name (for a management OS vNIC, its name again).
    pub adapter: String,
    /// The checkpoint's id, with `checkpoint`.
    pub checkpoint_id: Option<String>,
    /// A dynamic adapter (Hyper-V picks its MAC), not a static one.
    pub dynamic: bool,
}

impl MacStatus {
    pub fn state(&self) -> &'static str {
        if !self.leases.is_empty() {
            "leased"
        } else if !self.holds.is_empty() {
            "held"
        } else if self.cooling_until.is_some() {
            "cooling"
        } else if self.pool.is_some() {
            "free"
        } else {
            "unmanaged"
        }
    }
}

/// A request for one (or `count`) MACs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocateRequest {
    pub pool: String,
    pub owner: Owner,
    /// A specific address instead of the next free one; with `count` above 1, the first of that
    /// many consecutive addresses, each of which must be free.
    pub mac: Option<Mac>,
    /// How many addresses; above 1 the adapters are named `<adapter_id>#1`, `#2`, … so that
    /// asking again returns the same set.
    pub count: u32,
    /// Why, recorded with the allocation in the history (the agent: which MAC this replaces and
    /// the event that caused it).
    pub reason: Option<String>,
}

/// The result for one owner: the lease, and whether it existed before this call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    pub lease: Lease,
    pub existing: bool,
    pub pool_low: bool,
}

/// Which leases to release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReleaseSelector {
    /// The lease(s) on this MAC; `vm_id` picks one when a duplicate is flagged.
    Mac { mac: Mac, vm_id: Option<String> },
    /// Every lease of this VM, or one adapter's.
    Vm {
        vm_id: String,
        adapter_id: Option<String>,
    },
}

/// The result of releasing one lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Released {
    pub lease: Lease,
    /// When the MAC becomes free again; `None` when something else still keeps it.
    pub cooling_until: Option<Timestamp>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldRequest {
    pub mac: Mac,
    pub vm_id: String,
    pub reason: HoldReason,
    pub reference: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnholdRequest {
    pub mac: Mac,
    pub vm_id: String,
    pub reason: Option<HoldReason>,
    pub reference: Option<String>,
}

/// Filter for lease listings; `None` matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseFilter {
    pub pool: Option<String>,
    pub host: Option<String>,
    pub vm_id: Option<String>,
}

/// A pool's definition, counters and low-water verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolView {
    pub spec: PoolSpec,
    pub usage: PoolUsage,
    pub low: bool,
}

/// The free addresses of a pool as runs, the answer to "what is free?".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Available {
    pub pool: PoolName,
    pub free: u64,
    pub size: u64,
    /// Runs in ascending order, cut at the requested number of addresses.
    pub runs: Vec<(Mac, Mac)>,
    pub truncated: bool,
}

/// A change to a pool; `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolEdit {
    /// Replace all ranges.
    pub ranges: Option<Vec<MacRange>>,
    pub add_ranges: Vec<MacRange>,
    pub remove_ranges: Vec<MacRange>,
    pub order: Option<AllocationOrder>,
    pub cooldown: Option<Duration>,
    pub duplicates: Option<DuplicatePolicy>,
    pub low_water: Option<LowWater>,
}

/// Which of the four states an address of a pool is in; counted per pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Free,
    Leased,
    Held,
    Cooling,
    /// Inside a block delegated to a host; the block, not a lease, accounts for it.
    Delegated,
}

#[derive(Clone, Debug)]
struct PoolState {
    spec: PoolSpec,
    free: FreeSpace,
    cursor: Mac,
    leased: u64,
    held: u64,
    cooling: u64,
    delegated: u64,
}

impl PoolState {
    fn usage(&self) -> PoolUsage {
        PoolUsage {
            size: self.spec.size(),
            leased: self.leased,
            held: self.held,
            cooling: self.cooling,
            delegated: self.delegated,
            free: self.free.len(),
        }
    }

    fn view(&self) -> PoolView {
        let usage = self.usage();
        PoolView {
            spec: self.spec.clone(),
            low: self.spec.policy.low_water.is_low(usage.free, usage.size),
            usage,
        }
    }

    fn count(&mut self, slot: Slot, delta: i64) {
        let counter = match slot {
            Slot::Free => return,
            Slot::Leased => &mut self.leased,
            Slot::Held => &mut self.held,
            Slot::Cooling => &mut self.cooling,
            Slot::Delegated => &mut self.delegated,
        };
        *counter = counter
            .checked_add_signed(delta)
            .expect("pool counter underflow");
    }
}

/// What the authority knows about one MAC besides the pool it belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct MacEntry {
    leases: Vec<OwnerKey>,
    holds: Vec<Hold>,
}

/// The whole in-memory state of the authority.
#[derive(Clone, Debug, Default)]
pub struct Authority {
    pools: OrdMap<PoolName, PoolState>,
    /// Every pool range by first address: answers "which pool owns this MAC" and overlap checks.
    range_index: OrdMap<Mac, (MacRange, PoolName)>,
    leases: PHashMap<OwnerKey, Lease>,
    /// The leases naming each host (derived from `leases`, kept by [`Authority::put_lease`] and
    /// [`Authority::take_lease`]): a host's report looks at its own leases, not at all of them.
    leases_by_host: OrdMap<String, OrdSet<OwnerKey>>,
    macs: OrdMap<Mac, MacEntry>,
    cooling: PHashMap<Mac, Timestamp>,
    cooling_queue: OrdSet<(Timestamp, Mac)>,
    /// The latest inventory of every host, by host name. Shared (`Arc`): a map node copied on
    /// write, after a snapshot, copies pointers, not its neighbours' whole inventories, and
    /// diffing the map compares them by pointer first.
    inventories: OrdMap<String, std::sync::Arc<StoredInventory>>,
    /// The last lease of a MAC released because its VM vanished from its host (see
    /// [`Change::DepartedSaved`]); only meaningful while nobody else leases or holds the MAC.
    departed: PHashMap<Mac, Lease>,
    /// Who the latest inventories show with each MAC (derived from `inventories`, sorted).
    seen: OrdMap<Mac, Vec<Seen>>,
    /// How many hosts' latest inventories ask for each checkpoint hold (derived).
    checkpoint_refs: PHashMap<HoldKey, u32>,
    /// Blocks delegated to hosts (pending, active, draining), by id.
    blocks: OrdMap<u64, Block>,
    /// Every block by first address: answers "which block holds this MAC".
    block_index: OrdMap<Mac, u64>,
    /// The id the next claimed block gets.
    next_block_id: u64,
    /// The conflicts, kept up to date (derived; see [`Authority::settle`]).
    conflict_index: conflict_index::ConflictIndex,
}

impl Authority {
    pub fn new() -> Authority {
        Authority::default()
    }

    /// Rebuilds the state from what a store persisted. Cooling entries already past `now` are
    /// dropped, as are entries for MACs outside every pool.
    pub fn restore(
        pools: Vec<(PoolSpec, Mac)>,
        leases: Vec<Lease>,
        holds: Vec<Hold>,
        cooling: Vec<(Mac, Timestamp)>,
        now: Timestamp,
    ) -> std::result::Result<Authority, String> {
        let mut a = Authority::new();
        for (mut spec, cursor) in pools {
            // Stores written before such ranges were refused may hold a range starting at the
            // all-zero address: it is read without that address, so it is never handed out. A
            // pool that was nothing but that address opens empty.
            let stored = spec.ranges.len();
            spec.ranges = spec
                .ranges
                .into_iter()
                .filter_map(MacRange::without_invalid)
                .collect();
            if !spec.ranges.is_empty() || stored == 0 {
                a.check_ranges(&spec.name, &spec.ranges)
                    .map_err(|e| format!("stored pool '{}': {e}", spec.name))?;
            }
            a.insert_pool(spec, cursor);
        }
        for lease in leases {
            let key = lease.owner.key();
            let mac = lease.mac;
            let before = a.slot(mac);
            a.macs.entry(mac).or_default().leases.push(key.clone());
            if a.put_lease(key.clone(), lease).is_some() {
                return Err(format!("stored leases name {key} twice"));
            }
            a.reclassify(mac, before);
        }
        for hold in holds {
            let mac = hold.mac;
            let before = a.slot(mac);
            a.macs.entry(mac).or_default().holds.push(hold);
            a.reclassify(mac, before);
        }
        for (mac, until) in cooling {
            if until > now && a.pool_of(mac).is_some() && a.slot(mac) == Some(Slot::Free) {
                a.start_cooling(mac, until);
            }
        }
        Ok(a)
    }

    // ----- queries -------------------------------------------------------------------------

    pub fn pools(&self) -> Vec<PoolView> {
        self.pools.values().map(PoolState::view).collect()
    }

    pub fn pool(&self, name: &str) -> Result<PoolView> {
        Ok(self.pool_state(name)?.view())
    }

    pub fn pool_cursor(&self, name: &str) -> Result<Mac> {
        Ok(self.pool_state(name)?.cursor)
    }

    /// Free runs of a pool, at most `limit` addresses' worth.
    pub fn available(&self, name: &str, limit: u64) -> Result<Available> {
        let p = self.pool_state(name)?;
        let mut runs = Vec::new();
        let mut left = limit;
        let mut truncated = false;
        for (first, last) in p.free.runs() {
            if left == 0 {
                truncated = true;
                break;
            }
            let len = last.to_u64() - first.to_u64() + 1;
            if len > left {
                runs.push((first, Mac::from_u64(first.to_u64() + left - 1).unwrap()));
                truncated = true;
                left = 0;
                break;
            }
            runs.push((first, last));
            left -= len;
        }
        Ok(Available {
            pool: p.spec.name.clone(),
            free: p.free.len(),
            size: p.spec.size(),
            runs,
            truncated: truncated || (left == 0 && p.free.len() > limit),
        })
    }

    pub fn leases(&self, filter: &LeaseFilter) -> Vec<Lease> {
        let mut out: Vec<Lease> = self
            .leases
            .values()
            .filter(|l| filter.pool.as_deref().is_none_or(|p| l.pool.as_str() == p))
            .filter(|l| filter.vm_id.as_deref().is_none_or(|v| l.owner.vm_id == v))
            .filter(|l| {
                filter
                    .host
                    .as_deref()
                    .is_none_or(|h| l.owner.host.as_deref() == Some(h))
            })
            .cloned()
            .collect();
        out.sort_by(|a, b| (a.mac, &a.owner.vm_id).cmp(&(b.mac, &b.owner.vm_id)));
        out
    }

    pub fn lease_count(&self) -> usize {
        self.leases.len()
    }

    pub fn holds(&self, vm_id: Option<&str>) -> Vec<Hold> {
        let mut out: Vec<Hold> = self
            .macs
            .values()
            .flat_map(|e| e.holds.iter())
            .filter(|h| vm_id.is_none_or(|v| h.vm_id == v))
            .cloned()
            .collect();
        out.sort_by_key(Hold::key);
        out
    }

    pub fn mac_status(&self, mac: Mac) -> MacStatus {
        let entry = self.macs.get(&mac);
        MacStatus {
            mac,
            pool: self.pool_of(mac).cloned(),
            leases: entry
                .map(|e| e.leases.iter().map(|k| self.leases[k].clone()).collect())
                .unwrap_or_default(),
            holds: entry.map(|e| e.holds.clone()).unwrap_or_default(),
            cooling_until: self.cooling.get(&mac).copied(),
            seen: self.seen.get(&mac).cloned().unwrap_or_default(),
        }
    }

    /// The pool whose ranges contain `mac`.
    pub fn pool_of(&self, mac: Mac) -> Option<&PoolName> {
        self.range_index
            .range(..=mac)
            .next_back()
            .filter(|(_, (r, _))| r.contains(mac))
            .map(|(_, (_, name))| name)
    }

    // ----- pools ---------------------------------------------------------------------------

    /// Creates a pool. `random` picks where the next-fit cursor starts.
    pub fn create_pool(
        &mut self,
        ctx: &Context,
        mut spec: PoolSpec,
        random: u64,
    ) -> Result<(PoolView, Vec<Change>)> {
        require_admin(ctx, "create pools")?;
        if self.pools.contains_key(&spec.name) {
            return Err(AuthorityError::PoolExists(spec.name));
        }
        spec.ranges.sort();
        self.check_ranges(&spec.name, &spec.ranges)?;
        let size = spec.size();
        let cursor = nth_address(&spec.ranges, random % size);
        self.insert_pool(spec.clone(), cursor);
        // Holds placed before the pool existed now count against it.
        let inside: Vec<Mac> = self
            .macs
            .keys()
            .copied()
            .filter(|m| spec.ranges.iter().any(|r| r.contains(*m)))
            .collect();
        for mac in inside {
            self.reclassify(mac, Some(Slot::Free));
        }
        let changes = vec![
            Change::PoolSaved {
                spec: spec.clone(),
                cursor,
            },
            history(
                ctx,
                HistoryAction::PoolCreated,
                None,
                Some(&spec.name),
                None,
                Some(describe_spec(&spec)),
            ),
        ];
        Ok((self.pools[&spec.name].view(), changes))
    }

    pub fn edit_pool(
        &mut self,
        ctx: &Context,
        name: &str,
        edit: PoolEdit,
    ) -> Result<(PoolView, Vec<Change>)> {
        require_admin(ctx, "edit pools")?;
        let current = self.pool_state(name)?.spec.clone();
        let mut spec = current.clone();
        if let Some(ranges) = edit.ranges {
            spec.ranges = ranges;
        }
        for r in &edit.remove_ranges {
            let before = spec.ranges.len();
            spec.ranges.retain(|x| x != r);
            if spec.ranges.len() == before {
                return Err(AuthorityError::InvalidInput(format!(
                    "pool '{name}' has no range {r} to remove"
                )));
            }
        }
        spec.ranges.extend(edit.add_ranges.iter().copied());
        spec.ranges.sort();
        if let Some(o) = edit.order {
            spec.policy.order = o;
        }
        if let Some(c) = edit.cooldown {
            spec.policy.cooldown = c;
        }
        if let Some(d) = edit.duplicates {
            spec.policy.duplicates = d;
        }
        if let Some(l) = edit.low_water {
            spec.policy.low_water = l;
        }
        if spec == current {
            return Ok((self.pools[&current.name].view(), Vec::new()));
        }
        let mut changes = Vec::new();
        if spec.ranges != current.ranges {
            self.check_ranges(&spec.name, &spec.ranges)?;
            // Every leased or held address must stay inside the pool.
            for (mac, entry) in &self.macs {
                let inside_old = current.ranges.iter().any(|r| r.contains(*mac));
                let inside_new = spec.ranges.iter().any(|r| r.contains(*mac));
                if inside_old && !inside_new && !entry.leases.is_empty() {
                    let owner = &self.leases[&entry.leases[0]].owner;
                    return Err(AuthorityError::RangeInUse {
                        pool: spec.name.clone(),
                        mac: *mac,
                        what: format!("leased to {}", owner.key()),
                    });
                }
                if inside_old && !inside_new && !entry.holds.is_empty() {
                    return Err(AuthorityError::RangeInUse {
                        pool: spec.name.clone(),
                        mac: *mac,
                        what: format!("held for VM {}", entry.holds[0].vm_id),
                    });
                }
            }
            if let Some(b) = self.blocks.values().find(|b| {
                b.pool == current.name && !spec.ranges.iter().any(|r| r.contains_range(&b.range))
            }) {
                return Err(AuthorityError::RangeInUse {
                    pool: spec.name.clone(),
                    mac: b.range.first(),
                    what: format!("block {} {} delegated to host {}", b.id, b.range, b.host),
                });
            }
            // Cooling addresses that leave the pool stop cooling.
            let leaving: Vec<Mac> = self
                .cooling
                .keys()
                .copied()
                .filter(|m| {
                    current.ranges.iter().any(|r| r.contains(*m))
                        && !spec.ranges.iter().any(|r| r.contains(*m))
                })
                .collect();
            for mac in leaving {
                let until = self.cooling.remove(&mac).unwrap();
                self.cooling_queue.remove(&(until, mac));
                changes.push(Change::CoolingCleared { mac });
            }
            let cursor = self.pools[&current.name].cursor;
            self.rebuild_pool(spec.clone(), cursor);
        } else {
            self.pools.get_mut(&current.name).unwrap().spec = spec.clone();
        }
        let cursor = self.pools[&spec.name].cursor;
        changes.push(Change::PoolSaved {
            spec: spec.clone(),
            cursor,
        });
        changes.push(history(
            ctx,
            HistoryAction::PoolEdited,
            None,
            Some(&spec.name),
            None,
            Some(describe_spec(&spec)),
        ));
        Ok((self.pools[&spec.name].view(), changes))
    }

    pub fn delete_pool(&mut self, ctx: &Context, name: &str) -> Result<Vec<Change>> {
        require_admin(ctx, "delete pools")?;
        let p = self.pool_state(name)?;
        let blocks = self
            .blocks
            .values()
            .filter(|b| b.pool == p.spec.name)
            .count() as u64;
        if p.leased > 0 || p.held > 0 || blocks > 0 {
            return Err(AuthorityError::PoolInUse {
                pool: p.spec.name.clone(),
                leased: p.leased,
                held: p.held,
                blocks,
            });
        }
        let spec = p.spec.clone();
        self.forget_pool(&spec.name);
        Ok(vec![
            Change::PoolDeleted {
                name: spec.name.clone(),
            },
            history(
                ctx,
                HistoryAction::PoolDeleted,
                None,
                Some(&spec.name),
                None,
                None,
            ),
        ])
    }

    // ----- leases --------------------------------------------------------------------------

    /// Allocates addresses, idempotently per owner: an owner that already has a lease gets it
    /// back. All or nothing: on error no lease is created.
    pub fn allocate(
        &mut self,
        ctx: &Context,
        req: AllocateRequest,
    ) -> Result<(Vec<Allocation>, Vec<Change>)> {
        self.expire(ctx.now);
        let mut owner = req.owner.clone();
        owner.validate().map_err(AuthorityError::InvalidInput)?;
        if let Some(r) = &req.reason {
            validate_field("reason", r).map_err(AuthorityError::InvalidInput)?;
        }
        if let Scope::Host(h) = &ctx.actor.scope {
            match owner.host.as_deref() {
                None => owner.host = Some(h.clone()),
                Some(x) if x == h => {}
                Some(x) => {
                    return Err(AuthorityError::Forbidden(format!(
                        "this agent token is bound to host '{h}' and cannot allocate for host '{x}'"
                    )));
                }
            }
        }
        if req.count == 0 || req.count > MAX_ALLOCATION_COUNT {
            return Err(AuthorityError::InvalidInput(format!(
                "count must be between 1 and {MAX_ALLOCATION_COUNT}, got {}",
                req.count
            )));
        }
        let pool_name = self.pool_state(&req.pool)?.spec.name.clone();
        let owners: Vec<Owner> = if req.count == 1 {
            vec![owner]
        } else {
            (1..=req.count)
                .map(|i| Owner {
                    adapter_id: format!("{}#{i}", owner.adapter_id),
                    ..owner.clone()
                })
                .collect()
        };
        // With a specific MAC and a count, the owners take consecutive addresses from it.
        let wanted_mac = |i: usize| -> Result<Option<Mac>> {
            let Some(first) = req.mac else {
                return Ok(None);
            };
            Mac::from_u64(first.to_u64() + i as u64)
                .filter(|m| m.is_unicast())
                .map(Some)
                .ok_or_else(|| {
                    AuthorityError::InvalidInput(format!(
                        "{} consecutive addresses from {first} run past the unicast space",
                        req.count
                    ))
                })
        };
        // Validate everything before changing anything.
        let mut new_owners = Vec::new();
        for (i, o) in owners.iter().enumerate() {
            let wanted = wanted_mac(i)?;
            match self.leases.get(&o.key()) {
                Some(existing) => {
                    if existing.pool != pool_name || wanted.is_some_and(|m| m != existing.mac) {
                        return Err(AuthorityError::OwnerConflict {
                            owner: o.key(),
                            mac: existing.mac,
                            pool: existing.pool.clone(),
                        });
                    }
                    if !ctx.actor.may_act_on_host(existing.owner.host.as_deref()) {
                        return Err(forbidden_host(&ctx.actor, existing));
                    }
                }
                None => new_owners.push((o.clone(), wanted)),
            }
        }
        let mut duplicate = false;
        if req.mac.is_some() {
            for (_, mac) in &new_owners {
                let mac = mac.expect("a specific MAC was asked for");
                let flagged = self.check_specific_mac(&pool_name, mac)?;
                if flagged && req.count > 1 {
                    // a run is asked for where it is free; a flagged duplicate is one MAC's choice
                    return Err(AuthorityError::MacInUse {
                        mac,
                        by: self.describe_users(mac),
                    });
                }
                duplicate |= flagged;
            }
        } else {
            let p = &self.pools[&pool_name];
            let wanted = new_owners.len() as u64;
            if p.free.len() < wanted {
                let u = p.usage();
                return Err(AuthorityError::PoolExhausted {
                    pool: pool_name,
                    wanted,
                    size: u.size,
                    free: u.free,
                    leased: u.leased,
                    held: u.held,
                    cooling: u.cooling,
                });
            }
        }

        let mut changes = Vec::new();
        let mut new_macs = HashMap::new();
        for (o, wanted) in &new_owners {
            let mac = match wanted {
                Some(m) => *m,
                None => self.pick_free(&pool_name),
            };
            let before = self.slot(mac);
            let lease = Lease {
                mac,
                pool: pool_name.clone(),
                owner: o.clone(),
                state: LeaseState::Reserved,
                created: ctx.now,
                duplicate,
            };
            self.macs.entry(mac).or_default().leases.push(o.key());
            self.put_lease(o.key(), lease.clone());
            self.reclassify(mac, before);
            self.forget_departed_unless(mac, &o.vm_id, &mut changes);
            let action = if duplicate {
                HistoryAction::AllocatedDuplicate
            } else {
                HistoryAction::Allocated
            };
            changes.push(Change::LeaseSaved(lease.clone()));
            changes.push(history(
                ctx,
                action,
                Some(mac),
                Some(&pool_name),
                Some(o),
                req.reason.clone(),
            ));
            new_macs.insert(o.key(), mac);
        }
        if req.mac.is_none() && !new_owners.is_empty() {
            let p = &self.pools[&pool_name];
            changes.push(Change::CursorMoved {
                pool: pool_name.clone(),
                cursor: p.cursor,
            });
        }
        let low = self.pools[&pool_name].view().low;
        let allocations = owners
            .iter()
            .map(|o| Allocation {
                lease: self.leases[&o.key()].clone(),
                existing: !new_macs.contains_key(&o.key()),
                pool_low: low,
            })
            .collect();
        Ok((allocations, changes))
    }

    /// Checks that `mac` may be leased from `pool`; returns whether it becomes a flagged duplicate.
    fn check_specific_mac(&self, pool: &PoolName, mac: Mac) -> Result<bool> {
        let p = &self.pools[pool];
        if !p.spec.ranges.iter().any(|r| r.contains(mac)) {
            let elsewhere = match self.pool_of(mac) {
                Some(other) => format!(" (it belongs to pool '{other}')"),
                None => String::new(),
            };
            return Err(AuthorityError::MacOutsidePool {
                mac,
                pool: pool.clone(),
                elsewhere,
            });
        }
        match self.slot(mac) {
            Some(Slot::Free) | None => Ok(false),
            Some(Slot::Cooling) => Err(AuthorityError::MacCooling {
                mac,
                until: self.cooling[&mac],
            }),
            Some(Slot::Delegated) => Err(AuthorityError::MacInUse {
                mac,
                by: self.describe_users(mac),
            }),
            Some(Slot::Leased | Slot::Held) => {
                if p.spec.policy.duplicates == DuplicatePolicy::AllowAndFlag {
                    Ok(true)
                } else {
                    Err(AuthorityError::MacInUse {
                        mac,
                        by: self.describe_users(mac),
                    })
                }
            }
        }
    }

    /// Takes the next free address by the pool's order and moves the cursor past it.
    fn pick_free(&mut self, pool: &PoolName) -> Mac {
        let p = self.pools.get_mut(pool).unwrap();
        let mac = match p.spec.policy.order {
            AllocationOrder::NextFit => p.free.next_fit(p.cursor),
            AllocationOrder::Lowest => p.free.lowest(),
        }
        .expect("caller checked that the pool has free addresses");
        // Unicast ranges never reach FF-FF-FF-FF-FF-FF, so there is always a successor.
        p.cursor = mac.next().unwrap_or(mac);
        mac
    }

    /// Marks a lease bound: its MAC was seen live on its VM.
    pub fn bind(&mut self, ctx: &Context, mac: Mac, vm_id: &str) -> Result<(Lease, Vec<Change>)> {
        let key = self.find_lease_key(mac, Some(vm_id))?;
        let lease = self.leases.get_mut(&key).unwrap();
        if !ctx.actor.may_act_on_host(lease.owner.host.as_deref()) {
            return Err(forbidden_host(&ctx.actor, lease));
        }
        if lease.state == LeaseState::Bound {
            return Ok((lease.clone(), Vec::new()));
        }
        lease.state = LeaseState::Bound;
        let lease = lease.clone();
        let changes = vec![
            Change::LeaseSaved(lease.clone()),
            history(
                ctx,
                HistoryAction::Bound,
                Some(mac),
                Some(&lease.pool),
                Some(&lease.owner),
                None,
            ),
        ];
        Ok((lease, changes))
    }

    pub fn release(
        &mut self,
        ctx: &Context,
        selector: ReleaseSelector,
    ) -> Result<(Vec<Released>, Vec<Change>)> {
        self.expire(ctx.now);
        let keys: Vec<OwnerKey> = match &selector {
            ReleaseSelector::Mac { mac, vm_id } => {
                vec![self.find_lease_key(*mac, vm_id.as_deref())?]
            }
            ReleaseSelector::Vm { vm_id, adapter_id } => {
                let mut keys: Vec<OwnerKey> = self
                    .leases
                    .keys()
                    .filter(|k| {
                        k.vm_id == *vm_id && adapter_id.as_ref().is_none_or(|a| k.adapter_id == *a)
                    })
                    .cloned()
                    .collect();
                if keys.is_empty() {
                    return Err(AuthorityError::NotFound(match adapter_id {
                        Some(a) => format!("VM {vm_id} adapter {a} has no lease"),
                        None => format!("VM {vm_id} has no lease"),
                    }));
                }
                keys.sort();
                keys
            }
        };
        for k in &keys {
            let lease = &self.leases[k];
            if !ctx.actor.may_act_on_host(lease.owner.host.as_deref()) {
                return Err(forbidden_host(&ctx.actor, lease));
            }
        }
        let mut changes = Vec::new();
        let mut released = Vec::new();
        for key in keys {
            let mac = self.leases[&key].mac;
            let before = self.slot(mac);
            let lease = self.take_lease(&key).unwrap();
            let entry = self.macs.get_mut(&mac).unwrap();
            entry.leases.retain(|k| *k != key);
            self.forget_if_empty(mac);
            changes.push(Change::LeaseDeleted { mac, owner: key });
            let cooling_until = self.after_last_user_left(mac, before, ctx.now, &mut changes);
            let reason = cooling_until.map(|t| format!("cooling until {t}"));
            changes.push(history(
                ctx,
                HistoryAction::Released,
                Some(mac),
                Some(&lease.pool),
                Some(&lease.owner),
                reason,
            ));
            released.push(Released {
                lease,
                cooling_until,
            });
        }
        Ok((released, changes))
    }

    // ----- holds ---------------------------------------------------------------------------

    /// Places a hold. Idempotent: the same hold twice is one hold. Refused when another VM leases
    /// or holds the MAC, unless its pool allows flagged duplicates.
    pub fn hold(&mut self, ctx: &Context, req: HoldRequest) -> Result<(Hold, Vec<Change>)> {
        self.expire(ctx.now);
        if let Some(why) = req.mac.invalid_reason() {
            return Err(AuthorityError::InvalidInput(format!("{}: {why}", req.mac)));
        }
        if req.vm_id.trim().is_empty() {
            return Err(AuthorityError::InvalidInput(
                "vm_id must not be empty".into(),
            ));
        }
        validate_field("vm_id", &req.vm_id).map_err(AuthorityError::InvalidInput)?;
        validate_field("reference", &req.reference).map_err(AuthorityError::InvalidInput)?;
        let hold = Hold {
            mac: req.mac,
            vm_id: req.vm_id.clone(),
            reason: req.reason,
            reference: req.reference.clone(),
            created: ctx.now,
        };
        if let Some(existing) = self
            .macs
            .get(&req.mac)
            .and_then(|e| e.holds.iter().find(|h| h.key() == hold.key()))
        {
            return Ok((existing.clone(), Vec::new()));
        }
        if self.block_at(req.mac).is_some() {
            return Err(AuthorityError::MacInUse {
                mac: req.mac,
                by: self.describe_users(req.mac),
            });
        }
        self.may_act_for_vm(&ctx.actor, &req.vm_id)?;
        let status = self.mac_status(req.mac);
        for lease in &status.leases {
            if !ctx.actor.may_act_on_host(lease.owner.host.as_deref()) {
                return Err(forbidden_host(&ctx.actor, lease));
            }
        }
        let foreign = status.leases.iter().any(|l| l.owner.vm_id != req.vm_id)
            || status.holds.iter().any(|h| h.vm_id != req.vm_id);
        let allows_duplicates = status
            .pool
            .as_ref()
            .is_some_and(|p| self.pools[p].spec.policy.duplicates == DuplicatePolicy::AllowAndFlag);
        if foreign && !allows_duplicates {
            return Err(AuthorityError::MacInUse {
                mac: req.mac,
                by: self.describe_users(req.mac),
            });
        }
        let mut changes = Vec::new();
        if self.cooling.contains_key(&req.mac) {
            changes.push(Change::CoolingCleared { mac: req.mac });
        }
        let before = self.slot(req.mac);
        self.macs
            .entry(req.mac)
            .or_default()
            .holds
            .push(hold.clone());
        self.reclassify(req.mac, before);
        self.forget_departed_unless(req.mac, &req.vm_id, &mut changes);
        changes.push(Change::HoldSaved(hold.clone()));
        changes.push(history(
            ctx,
            HistoryAction::Held,
            Some(req.mac),
            status.pool.as_ref(),
            Some(&Owner {
                vm_id: req.vm_id.clone(),
                ..Owner::default()
            }),
            Some(hold_reason_text(&hold)),
        ));
        Ok((hold, changes))
    }

    /// Removes the matching holds of one VM on one MAC.
    pub fn unhold(
        &mut self,
        ctx: &Context,
        req: UnholdRequest,
    ) -> Result<(Vec<Hold>, Vec<Change>)> {
        self.expire(ctx.now);
        let matches = |h: &Hold| {
            h.vm_id == req.vm_id
                && req.reason.is_none_or(|r| h.reason == r)
                && req.reference.as_ref().is_none_or(|x| h.reference == *x)
        };
        let found: Vec<Hold> = self
            .macs
            .get(&req.mac)
            .map(|e| e.holds.iter().filter(|h| matches(h)).cloned().collect())
            .unwrap_or_default();
        if found.is_empty() {
            return Err(AuthorityError::NotFound(format!(
                "no matching hold of VM {} on {}",
                req.vm_id, req.mac
            )));
        }
        self.may_act_for_vm(&ctx.actor, &req.vm_id)?;
        self.no_other_host_relies_on(&ctx.actor, req.mac, &req.vm_id)?;
        let status = self.mac_status(req.mac);
        for lease in &status.leases {
            if !ctx.actor.may_act_on_host(lease.owner.host.as_deref()) {
                return Err(forbidden_host(&ctx.actor, lease));
            }
        }
        let before = self.slot(req.mac);
        self.macs
            .get_mut(&req.mac)
            .unwrap()
            .holds
            .retain(|h| !matches(h));
        self.forget_if_empty(req.mac);
        let mut changes: Vec<Change> = found.iter().map(|h| Change::HoldDeleted(h.key())).collect();
        let cooling_until = self.after_last_user_left(req.mac, before, ctx.now, &mut changes);
        for h in &found {
            let mut reason = hold_reason_text(h);
            if let Some(t) = cooling_until {
                reason.push_str(&format!("; cooling until {t}"));
            }
            changes.push(history(
                ctx,
                HistoryAction::Unheld,
                Some(req.mac),
                status.pool.as_ref(),
                Some(&Owner {
                    vm_id: h.vm_id.clone(),
                    ..Owner::default()
                }),
                Some(reason),
            ));
        }
        Ok((found, changes))
    }

    // ----- internals -----------------------------------------------------------------------

    fn pool_state(&self, name: &str) -> Result<&PoolState> {
        PoolName::new(name)
            .ok()
            .and_then(|n| self.pools.get(&n))
            .ok_or_else(|| AuthorityError::PoolNotFound(name.to_string()))
    }

    /// Checks sizes, internal overlaps and overlaps with every other pool.
    fn check_ranges(&self, name: &PoolName, ranges: &[MacRange]) -> Result<()> {
        if ranges.is_empty() {
            return Err(AuthorityError::InvalidInput(format!(
                "pool '{name}' needs at least one range"
            )));
        }
        if ranges.len() > MAX_RANGES_PER_POOL {
            return Err(AuthorityError::InvalidInput(format!(
                "pool '{name}' has {} ranges; the limit is {MAX_RANGES_PER_POOL}",
                ranges.len()
            )));
        }
        if let Some((r, (mac, why))) = ranges
            .iter()
            .find_map(|r| r.invalid_address().map(|bad| (r, bad)))
        {
            let valid = r.without_invalid().map_or_else(
                || "leave it out".to_string(),
                |v| format!("use {v} instead"),
            );
            return Err(AuthorityError::InvalidInput(format!(
                "range {r} of pool '{name}' contains {mac}: {why}; {valid}"
            )));
        }
        for pair in ranges.windows(2) {
            if pair[0].overlaps(&pair[1]) {
                return Err(AuthorityError::RangeOverlap {
                    range: pair[1],
                    other_pool: name.clone(),
                    other_range: pair[0],
                });
            }
        }
        for r in ranges {
            // Any overlapping range starts before r ends; the latest such start is the candidate
            // unless one ends after r starts: check every range whose first <= r.last.
            if let Some((_, (other, owner))) = self
                .range_index
                .range(..=r.last())
                .rev()
                .find(|(_, (o, p))| p != name && o.overlaps(r))
            {
                return Err(AuthorityError::RangeOverlap {
                    range: *r,
                    other_pool: owner.clone(),
                    other_range: *other,
                });
            }
        }
        Ok(())
    }

    fn insert_pool(&mut self, spec: PoolSpec, cursor: Mac) {
        for r in &spec.ranges {
            self.range_index.insert(r.first(), (*r, spec.name.clone()));
        }
        let free = FreeSpace::with_ranges(&spec.ranges);
        self.pools.insert(
            spec.name.clone(),
            PoolState {
                spec,
                free,
                cursor,
                leased: 0,
                held: 0,
                cooling: 0,
                delegated: 0,
            },
        );
    }

    /// Replaces a pool whose ranges changed and recounts it from what lies inside the new
    /// ranges: leases, holds, cooling entries and blocks. Cooling entries outside were cleared.
    fn rebuild_pool(&mut self, spec: PoolSpec, cursor: Mac) {
        let name = spec.name.clone();
        self.remove_pool(&name);
        let inside: Vec<Mac> = self
            .macs
            .keys()
            .chain(self.cooling.keys())
            .copied()
            .filter(|m| spec.ranges.iter().any(|r| r.contains(*m)))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        self.insert_pool(spec, cursor);
        for mac in inside {
            self.reclassify(mac, Some(Slot::Free));
        }
        self.account_blocks_of(&name);
    }

    /// Removes a pool and the cooling entries inside it (it holds no leases, holds or blocks).
    fn forget_pool(&mut self, name: &PoolName) {
        let Some(p) = self.pools.get(name) else {
            return;
        };
        let ranges = p.spec.ranges.clone();
        let cooling: Vec<Mac> = self
            .cooling
            .keys()
            .copied()
            .filter(|m| ranges.iter().any(|r| r.contains(*m)))
            .collect();
        for mac in cooling {
            let until = self.cooling.remove(&mac).unwrap();
            self.cooling_queue.remove(&(until, mac));
        }
        self.remove_pool(name);
    }

    fn remove_pool(&mut self, name: &PoolName) {
        if let Some(p) = self.pools.remove(name) {
            for r in &p.spec.ranges {
                self.range_index.remove(&r.first());
            }
        }
    }

    /// The slot `mac` occupies in its pool, `None` outside every pool.
    fn slot(&self, mac: Mac) -> Option<Slot> {
        self.pool_of(mac)?;
        if self.block_at(mac).is_some() {
            return Some(Slot::Delegated);
        }
        let entry = self.macs.get(&mac);
        Some(if entry.is_some_and(|e| !e.leases.is_empty()) {
            Slot::Leased
        } else if entry.is_some_and(|e| !e.holds.is_empty()) {
            Slot::Held
        } else if self.cooling.contains_key(&mac) {
            Slot::Cooling
        } else {
            Slot::Free
        })
    }

    /// Brings counters and free space in line after `mac` moved from `before` to its current slot.
    /// The one place where pool accounting changes.
    fn reclassify(&mut self, mac: Mac, before: Option<Slot>) {
        let after = self.slot(mac);
        if before == after {
            return;
        }
        let Some(name) = self.pool_of(mac).cloned() else {
            return;
        };
        let (Some(before), Some(after)) = (before, after) else {
            return;
        };
        if after != Slot::Cooling
            && let Some(until) = self.cooling.remove(&mac)
        {
            self.cooling_queue.remove(&(until, mac));
        }
        let p = self.pools.get_mut(&name).unwrap();
        p.count(before, -1);
        p.count(after, 1);
        if before == Slot::Free {
            p.free.take(mac);
        }
        if after == Slot::Free {
            p.free.give(mac);
        }
    }

    /// After a lease or hold went away: starts the cooldown if nothing else keeps the MAC.
    fn after_last_user_left(
        &mut self,
        mac: Mac,
        before: Option<Slot>,
        now: Timestamp,
        changes: &mut Vec<Change>,
    ) -> Option<Timestamp> {
        let pool = self.pool_of(mac)?.clone();
        if self.macs.contains_key(&mac) {
            self.reclassify(mac, before);
            return None;
        }
        let cooldown = self.pools[&pool].spec.policy.cooldown;
        if cooldown.is_zero() {
            self.reclassify(mac, before);
            return Some(now);
        }
        let until = now.saturating_add(cooldown);
        self.cooling.insert(mac, until);
        self.cooling_queue.insert((until, mac));
        self.reclassify(mac, before);
        changes.push(Change::CoolingStarted { mac, until });
        Some(until)
    }

    fn start_cooling(&mut self, mac: Mac, until: Timestamp) {
        let before = self.slot(mac);
        self.cooling.insert(mac, until);
        self.cooling_queue.insert((until, mac));
        if before == Some(Slot::Free) {
            self.reclassify(mac, before);
        }
    }

    /// Returns addresses whose cooldown has ended to the free space. Not a durable change: a
    /// cooling entry past its end means free, whether or not its row is deleted yet.
    pub fn expire(&mut self, now: Timestamp) {
        while let Some(&(until, mac)) = self.cooling_queue.get_min() {
            if until > now {
                break;
            }
            self.cooling_queue.remove_min();
            let before = self.slot(mac);
            self.cooling.remove(&mac);
            self.reclassify(mac, before);
        }
    }

    fn forget_if_empty(&mut self, mac: Mac) {
        if self
            .macs
            .get(&mac)
            .is_some_and(|e| e.leases.is_empty() && e.holds.is_empty())
        {
            self.macs.remove(&mac);
        }
    }

    fn find_lease_key(&self, mac: Mac, vm_id: Option<&str>) -> Result<OwnerKey> {
        let keys: Vec<&OwnerKey> = self
            .macs
            .get(&mac)
            .map(|e| {
                e.leases
                    .iter()
                    .filter(|k| vm_id.is_none_or(|v| k.vm_id == v))
                    .collect()
            })
            .unwrap_or_default();
        match keys.as_slice() {
            [] => Err(AuthorityError::NotFound(match vm_id {
                Some(v) => format!("{mac} has no lease for VM {v}"),
                None => format!("{mac} has no lease"),
            })),
            [one] => Ok((*one).clone()),
            many => Err(AuthorityError::Ambiguous {
                mac,
                count: many.len(),
                owners: many
                    .iter()
                    .map(|k| k.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    fn describe_users(&self, mac: Mac) -> String {
        if let Some(b) = self.block_at(mac) {
            return format!(
                "delegated to host {} (block {}, {}, {})",
                b.host,
                b.id,
                b.range,
                b.state.name()
            );
        }
        let Some(entry) = self.macs.get(&mac) else {
            return "nobody".into();
        };
        let mut parts: Vec<String> = entry
            .leases
            .iter()
            .map(|k| {
                let l = &self.leases[k];
                match &l.owner.host {
                    Some(h) => format!("leased to {k} on host {h}"),
                    None => format!("leased to {k}"),
                }
            })
            .collect();
        parts.extend(
            entry
                .holds
                .iter()
                .map(|h| format!("held for VM {} ({})", h.vm_id, hold_reason_text(h))),
        );
        parts.join("; ")
    }
}

fn require_admin(ctx: &Context, what: &str) -> Result<()> {
    match &ctx.actor.scope {
        Scope::All => Ok(()),
        Scope::Host(h) => Err(AuthorityError::Forbidden(format!(
            "an agent token (host '{h}') cannot {what}"
        ))),
    }
}

fn forbidden_host(actor: &Actor, lease: &Lease) -> AuthorityError {
    let Scope::Host(h) = &actor.scope else {
        unreachable!("only host-scoped actors are refused")
    };
    AuthorityError::Forbidden(format!(
        "this agent token is bound to host '{h}'; {} belongs to {} on host '{}'",
        lease.mac,
        lease.owner.key(),
        lease.owner.host.as_deref().unwrap_or("(none)")
    ))
}

fn hold_reason_text(h: &Hold) -> String {
    if h.reference.is_empty() {
        h.reason.name().to_string()
    } else {
        format!("{} {}", h.reason.name(), h.reference)
    }
}

fn describe_spec(spec: &PoolSpec) -> String {
    let ranges: Vec<String> = spec.ranges.iter().map(|r| r.to_string()).collect();
    format!(
        "ranges {}; order {}; cooldown {}s; duplicates {}; low-water {}",
        ranges.join(", "),
        spec.policy.order.name(),
        spec.policy.cooldown.as_secs(),
        spec.policy.duplicates.name(),
        spec.policy.low_water
    )
}

/// The `offset`-th address across sorted ranges.
fn nth_address(ranges: &[MacRange], mut offset: u64) -> Mac {
    for r in ranges {
        if let Some(m) = r.nth(offset) {
            return m;
        }
        offset -= r.len();
    }
    ranges[0].first()
}

fn history(
    ctx: &Context,
    action: HistoryAction,
    mac: Option<Mac>,
    pool: Option<&PoolName>,
    owner: Option<&Owner>,
    reason: Option<String>,
) -> Change {
    Change::History(HistoryEntry {
        at: ctx.now,
        actor: ctx.actor.name.clone(),
        action,
        mac,
        pool: pool.cloned(),
        vm_id: owner.map(|o| o.vm_id.clone()),
        vm_name: owner.and_then(|o| o.vm_name.clone()),
        adapter_id: owner
            .map(|o| o.adapter_id.clone())
            .filter(|a| !a.is_empty()),
        host: owner.and_then(|o| o.host.clone()),
        reason,
    })
}

/// Exposed for stores and tests that want to check the invariant `free + leased + held +
/// cooling == size`, that the free space equals a rebuild, and that the conflict index equals
/// a run of the full engine.
impl Authority {
    /// Stores `lease` under `key` (replacing any), keeping `leases_by_host` in step; the only
    /// way a lease is added or changes host.
    fn put_lease(&mut self, key: OwnerKey, lease: Lease) -> Option<Lease> {
        let host = lease.owner.host.clone();
        let old = self.leases.insert(key.clone(), lease);
        if let Some(h) = old.as_ref().and_then(|o| o.owner.host.as_deref()) {
            self.unindex_lease(h, &key);
        }
        if let Some(h) = host {
            self.leases_by_host.entry(h).or_default().insert(key);
        }
        old
    }

    /// Removes the lease under `key`, keeping `leases_by_host` in step; the only way one goes.
    fn take_lease(&mut self, key: &OwnerKey) -> Option<Lease> {
        let old = self.leases.remove(key)?;
        if let Some(h) = old.owner.host.as_deref() {
            self.unindex_lease(h, key);
        }
        Some(old)
    }

    fn unindex_lease(&mut self, host: &str, key: &OwnerKey) {
        if let Some(keys) = self.leases_by_host.get_mut(host) {
            keys.remove(key);
            if keys.is_empty() {
                self.leases_by_host.remove(host);
            }
        }
    }

    /// The leases that name `host`, in key order.
    fn leases_on(&self, host: &str) -> impl Iterator<Item = &Lease> {
        self.leases_by_host
            .get(host)
            .into_iter()
            .flatten()
            .map(|k| &self.leases[k])
    }

    pub fn check_invariants(&self) -> std::result::Result<(), String> {
        let mut by_host: OrdMap<String, OrdSet<OwnerKey>> = OrdMap::new();
        for (k, l) in &self.leases {
            if let Some(h) = &l.owner.host {
                by_host.entry(h.clone()).or_default().insert(k.clone());
            }
        }
        if by_host != self.leases_by_host {
            return Err("the leases-by-host index differs from the leases".into());
        }
        for (name, p) in &self.pools {
            let u = p.usage();
            if u.free + u.leased + u.held + u.cooling + u.delegated != u.size {
                return Err(format!("pool {name}: counters {u:?} do not add up"));
            }
            let mut rebuilt = FreeSpace::with_ranges(&p.spec.ranges);
            let in_pool = |m: &Mac| p.spec.ranges.iter().any(|r| r.contains(*m));
            let (mut leased, mut held, mut cooling) = (0, 0, 0);
            for mac in self.macs.keys().filter(|m| in_pool(m)) {
                rebuilt.take(*mac);
                match self.slot(*mac) {
                    Some(Slot::Leased) => leased += 1,
                    Some(Slot::Held) => held += 1,
                    _ => return Err(format!("{mac} has an entry but is neither leased nor held")),
                }
            }
            for mac in self.cooling.keys().filter(|m| in_pool(m)) {
                if rebuilt.take(*mac) {
                    cooling += 1;
                }
            }
            let mut delegated = 0;
            for b in self.blocks.values().filter(|b| b.pool == *name) {
                if !rebuilt.take_range(b.range) {
                    return Err(format!("block {} overlaps a used address", b.id));
                }
                delegated += b.range.len();
            }
            if delegated != p.delegated {
                return Err(format!(
                    "pool {name}: blocks hold {delegated} addresses, counted {}",
                    p.delegated
                ));
            }
            if rebuilt != p.free {
                return Err(format!("pool {name}: free space differs from a rebuild"));
            }
            if (leased, held, cooling) != (p.leased, p.held, p.cooling) {
                return Err(format!(
                    "pool {name}: counted leased/held/cooling {:?}, stored {:?}",
                    (leased, held, cooling),
                    (p.leased, p.held, p.cooling)
                ));
            }
        }
        if self.cooling.len() != self.cooling_queue.len() {
            return Err("cooling map and queue differ".into());
        }
        self.check_conflict_index()
    }
}

mod blocks;
mod conflict_index;
mod follow;
mod inventory;
mod map;
#[cfg(test)]
mod tests;
