//! Request and response bodies. Field names are the API contract: change them only with a new
//! API version.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// `POST /pools`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolCreate {
    pub name: String,
    /// `FIRST-LAST` ranges in any MAC spelling.
    pub ranges: Vec<String>,
    /// `next-fit` (default) or `lowest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<String>,
    /// Reuse cooldown, e.g. `24h`, `30m`, `0s` (default 24h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<String>,
    /// `deny` (default) or `allow-and-flag`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicates: Option<String>,
    /// Low-capacity threshold, e.g. `5%` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_water: Option<String>,
}

/// `PATCH /pools/{name}`: absent fields stay as they are.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolEditBody {
    /// Replaces all ranges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranges: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add_ranges: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove_ranges: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicates: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_water: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RangeView {
    pub first: String,
    pub last: String,
    pub size: u64,
}

/// A pool with its policy and counters. `free + leased + held + cooling + delegated == size`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PoolInfo {
    pub name: String,
    pub ranges: Vec<RangeView>,
    pub order: String,
    /// Cooldown as a duration string (`24h`).
    pub cooldown: String,
    pub cooldown_seconds: u64,
    pub duplicates: String,
    pub low_water: String,
    pub size: u64,
    pub leased: u64,
    pub held: u64,
    pub cooling: u64,
    /// Addresses in blocks delegated to hosts' own allocators.
    #[serde(default)]
    pub delegated: u64,
    pub free: u64,
    pub percent_used: f64,
    /// Free addresses are below the low-water mark.
    pub low: bool,
}

/// A run of consecutive free addresses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FreeRun {
    pub first: String,
    pub last: String,
    pub count: u64,
}

/// `GET /pools/{name}/available`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AvailableInfo {
    pub pool: String,
    pub size: u64,
    pub free: u64,
    pub runs: Vec<FreeRun>,
    /// Addresses listed in `runs` (at most the requested limit).
    pub listed: u64,
    /// More free addresses exist than were listed.
    pub truncated: bool,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AvailableQuery {
    /// Most addresses to list (default 65536).
    pub limit: Option<u64>,
}

/// A request for a MAC. Asking again for the same `vm_id` + `adapter_id` returns the same MAC.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AllocateBody {
    /// Required on `POST /leases`; taken from the path on `POST /pools/{name}/available`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    pub vm_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// A specific address instead of the next free one; with `count`, the first of `count`
    /// consecutive addresses (all free, or nothing is allocated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// How many addresses (default 1); adapters become `<adapter_id>#1`, `#2`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// Why, kept in the history with the allocation (≤ 256 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LeaseInfo {
    pub mac: String,
    pub pool: String,
    pub vm_id: String,
    pub adapter_id: String,
    pub vm_name: Option<String>,
    pub host: Option<String>,
    pub cluster: Option<String>,
    /// `reserved` or `bound`.
    pub state: String,
    pub created: String,
    /// Granted although the MAC was taken (pool policy `allow-and-flag`).
    pub duplicate: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AllocationInfo {
    pub lease: LeaseInfo,
    /// The owner had this lease before the call.
    pub existing: bool,
}

/// The answer to an allocation: one entry per adapter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AllocationResult {
    pub allocations: Vec<AllocationInfo>,
    /// The pool is below its low-water mark after this allocation.
    pub pool_low: bool,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LeaseQuery {
    pub pool: Option<String>,
    pub host: Option<String>,
    pub vm: Option<String>,
    /// Most leases (default 1000, at most 10000: a larger limit is capped, and the
    /// `Macpool-Limit-Capped` header says so), in MAC order. Declared int64: any u32 is taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<u64>, maximum = 4294967295_u64)]
    pub limit: Option<u32>,
    /// Only leases after this cursor (the previous page's `Macpool-Next-Cursor` header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

/// `POST /leases/release`: either `mac` (and `vm_id` to pick a flagged duplicate) or `vm_id`
/// (every lease of the VM, or `adapter_id`'s).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReleasedInfo {
    pub lease: LeaseInfo,
    /// When the MAC becomes free again; null when a hold or another lease still keeps it.
    pub cooling_until: Option<String>,
}

/// `POST /holds`
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldBody {
    pub mac: String,
    pub vm_id: String,
    /// `checkpoint`, `template`, `backup` or `departed`.
    pub reason: String,
    /// What keeps the MAC: a checkpoint id, a template name.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// `POST /holds/remove`: removes `vm_id`'s holds on `mac` (narrowed by reason and ref).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnholdBody {
    pub mac: String,
    pub vm_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HoldInfo {
    pub mac: String,
    pub vm_id: String,
    pub reason: String,
    #[serde(rename = "ref")]
    pub reference: String,
    pub created: String,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HoldQuery {
    pub vm: Option<String>,
}

/// Everything known about one MAC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MacInfo {
    pub mac: String,
    /// `leased`, `held`, `cooling`, `free` or `unmanaged` (outside every pool).
    pub state: String,
    pub pool: Option<String>,
    pub leases: Vec<LeaseInfo>,
    pub holds: Vec<HoldInfo>,
    pub cooling_until: Option<String>,
    /// Every VM the hosts' latest inventories show with this MAC, leased or not.
    #[serde(default)]
    pub seen: Vec<SeenInfo>,
}

/// A VM a host reported with a MAC: on its live adapter, or frozen in a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SeenInfo {
    pub host: String,
    pub vm_id: String,
    pub vm_name: String,
    /// The checkpoint's name; absent for a live adapter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
    /// A vNIC of the host's management OS: `vm_id` is empty, `vm_name` is the vNIC's name.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub management_os: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HistoryInfo {
    /// Increases with every entry; pass the last one of a page as `before` for the next page.
    pub id: u64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub mac: Option<String>,
    pub pool: Option<String>,
    pub vm_id: Option<String>,
    pub vm_name: Option<String>,
    pub adapter_id: Option<String>,
    pub host: Option<String>,
    pub reason: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    pub mac: Option<String>,
    pub vm: Option<String>,
    /// Most rows (default 100, at most 10000), newest first.
    pub limit: Option<u32>,
    /// Only entries older than this id (the last `id` of the previous page, also sent as its
    /// `Macpool-Next-Cursor` header).
    pub before: Option<u64>,
}

/// `POST /tokens`
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenCreate {
    pub name: String,
    /// `admin`, `agent` or `reader`.
    pub role: String,
    /// Required for `agent`: the host it acts for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub role: String,
    pub host: Option<String>,
    pub created: String,
    pub revoked: Option<String>,
}

/// A new token. `token` is shown this once; only its hash is stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenCreated {
    #[serde(flatten)]
    pub info: TokenInfo,
    pub token: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub version: String,
}

/// `PUT /hosts/{host}/inventory`: a host's whole view, sent whole. `generation` must grow with
/// every report of the same host (a stale one is refused with `stale-generation`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InventoryBody {
    pub generation: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ipv4: Vec<String>,
    /// The host's dynamic MAC range (Hyper-V `MacAddressMinimum`), any spelling; with `range_max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_min: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_max: Option<String>,
    /// The host allocator's cursor, when known; must lie in the range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    #[serde(default)]
    pub vms: Vec<InventoryVm>,
    /// The management OS's own vNICs (Hyper-V `Get-VMNetworkAdapter -ManagementOS`): drawn from
    /// the same dynamic range as the VMs', never leased.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub management_adapters: Vec<InventoryManagementAdapter>,
    /// How the agent knows its allocator's position: `registry` (the cursor, read) or
    /// `inventory-bound` (no readable cursor: delegate rotates on a lower bound from the
    /// inventory). Absent when not said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor_source: Option<String>,
    /// The agent's strategy: `guard`, `delegate`, `delegate+guard`, `blog-compatible`,
    /// `observe`, … (lower-case letters, digits, `+`, `-`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
}

/// A vNIC of the host's management OS.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InventoryManagementAdapter {
    #[serde(default)]
    pub name: String,
    pub mac: String,
    /// Hyper-V `DynamicMacAddressEnabled`; false means a static MAC.
    #[serde(default)]
    pub dynamic: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InventoryVm {
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// `running`, `off`, `saved`, `paused`, or the hypervisor's own word.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default)]
    pub adapters: Vec<InventoryAdapter>,
}

/// A live adapter, or (with `checkpoint`) one frozen in a checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InventoryAdapter {
    #[serde(default)]
    pub name: String,
    pub mac: String,
    /// Hyper-V `DynamicMacAddressEnabled`; false means a static MAC.
    #[serde(default)]
    pub dynamic: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<InventoryCheckpoint>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InventoryCheckpoint {
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// `standard`, `recovery`, `planned`, … or Hyper-V's integer.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
}

/// `GET /hosts/{host}/inventory`: the latest inventory the authority accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InventoryInfo {
    pub host: String,
    pub received: String,
    pub inventory: InventoryBody,
}

/// What applying an inventory did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InventoryResult {
    pub host: String,
    pub generation: u64,
    /// Leases bound, moved to this host, or restored after a live migration.
    pub bound: Vec<LeaseInfo>,
    /// Leases of VMs that vanished, released into cooldown.
    pub released: Vec<ReleasedInfo>,
    /// Checkpoint holds placed.
    pub held: Vec<HoldInfo>,
    /// Checkpoint holds removed (no host reports the checkpoint any more).
    pub unheld: Vec<HoldInfo>,
    /// Live MACs in a pool that no lease or hold explains.
    pub unmanaged: Vec<String>,
    /// What was not done, and why.
    pub notes: Vec<String>,
}

/// One owner involved in a conflict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConflictOwner {
    /// `live`, `checkpoint`, `management-os`, `listed` or `dhcp-lease`.
    pub seen: String,
    pub host: Option<String>,
    pub vm_id: Option<String>,
    pub vm_name: Option<String>,
    pub adapter: Option<String>,
    pub checkpoint_id: Option<String>,
    pub checkpoint_name: Option<String>,
    /// Where it was read: `inventory HV1 gen 7`.
    pub source: String,
    /// The VM's power state in its host's latest inventory (`running`, `off`, …), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The latest thing guard did about this MAC on this VM (from the history); absent: nothing
    /// yet, or not a VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<GuardActionInfo>,
}

/// A history row in which guard gave a conflicting adapter a fresh MAC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GuardActionInfo {
    /// The history row's id.
    pub id: u64,
    pub at: String,
    /// The MAC guard gave the adapter instead.
    pub new_mac: Option<String>,
    pub reason: Option<String>,
}

/// One side of a range overlap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RangeClaimInfo {
    /// `host` or `pool`.
    pub kind: String,
    /// The host or pool name.
    pub name: String,
    pub first: String,
    pub last: String,
}

/// A conflict, derived from the latest inventories, the pools and the leases and holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConflictInfo {
    /// `live-duplicate`, `latent`, `invalid`, `range-overlap` or `unmanaged`.
    pub class: String,
    /// The MAC, for every class but `range-overlap`.
    pub mac: Option<String>,
    /// For `range-overlap`: the two ranges and what they share.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranges: Vec<RangeClaimInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap: Option<RangeView>,
    pub owners: Vec<ConflictOwner>,
    pub explanation: String,
    pub fix: String,
}

/// Claim a block of a pool for a host's native dynamic allocator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimBlockBody {
    pub pool: String,
    /// Addresses in the block (8..=65536); default 256, one Hyper-V default range.
    pub size: Option<u64>,
}

/// A block delegated to a host: `pending` (claimed) → `active` (the host's dynamic range) →
/// `draining` (the host moved on; freed once no VM or checkpoint uses its MACs, plus cooldown).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BlockInfo {
    pub id: u64,
    pub pool: String,
    pub host: String,
    pub first: String,
    pub last: String,
    pub size: u64,
    pub state: String,
    pub claimed: String,
    pub changed: String,
    /// Draining blocks: since when nothing uses any of its MACs.
    pub unused_since: Option<String>,
    /// Set on a claim: the host's pending block already existed and is returned again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub existing: bool,
}

/// `GET /hosts`: one host that reported an inventory, as the dashboard's Hosts page shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HostInfo {
    pub host: String,
    pub cluster: Option<String>,
    /// The host's dynamic MAC range (Hyper-V `MacAddressMinimum`/`-Maximum`), when reported.
    pub range_min: Option<String>,
    pub range_max: Option<String>,
    /// The host allocator's cursor, when known.
    pub cursor: Option<String>,
    /// `registry` (read) or `inventory-bound`; absent when the agent did not say.
    pub cursor_source: Option<String>,
    /// No readable cursor (`inventory-bound`): delegate rotates on the highest dynamic MAC of
    /// the range the inventory shows.
    pub cursor_estimated: bool,
    /// Other reporting hosts whose dynamic range shares addresses with this one's.
    pub overlaps: Vec<String>,
    /// The host's blocks that are not free yet.
    pub blocks: Vec<BlockInfo>,
    pub vms: u64,
    pub live_adapters: u64,
    pub checkpoint_adapters: u64,
    /// The management OS's own vNICs.
    pub management_adapters: u64,
    /// When the latest inventory was received, and its generation.
    pub received: String,
    pub generation: u64,
    /// The agent's strategy, when it says.
    pub strategy: Option<String>,
}
