//! Persistence for the authority. One async trait, [`Store`], with one method per use case,
//! domain types in and out; the server is generic over it. Back ends: [`sqlite`] (embedded,
//! default) and [`postgres`] (shared by several replicas). Contract for every mutating method: when it returns `Ok`, the change is durable
//! (fsync'd); when it returns `Err`, nothing changed.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::time::{SystemTime, UNIX_EPOCH};

use macpool_core::Mac;
use macpool_core::Timestamp;
use macpool_core::authority::{
    Actor, AddressMap, AddressOrder, AddressRow, AllocateRequest, Allocation, Authority,
    AuthorityError, Available, BlockClaim, BlockFilter, Change, Claimant, Context, Gauges,
    HoldRequest, HostSummary, InventoryOutcome, LeaseFilter, MacStatus, PoolEdit, PoolSummary,
    PoolView, ReleaseSelector, Released, StoredInventory, UnholdRequest,
};
use macpool_core::block::Block;
use macpool_core::conflict::{Conflict, ConflictClass};
use macpool_core::history::{HistoryAction, HistoryEntry};
use macpool_core::inventory::HostInventory;
use macpool_core::lease::{Hold, Lease};
use macpool_core::pool::PoolSpec;

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod postgres;
pub mod sqlite;

/// Why a store call failed. Domain refusals carry the core's error; everything else means the
/// store itself could not do its job (and nothing was changed).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Domain(#[from] AuthorityError),
    /// The database could not be reached or could not commit; retrying later may work.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A token, or another store-level record, was not found.
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    /// Revoking this token would leave no active admin token ([`revocable`]).
    #[error("this is the last active admin token; create another admin token first")]
    LastAdmin,
}

pub type StoreResult<T> = Result<T, StoreError>;

/// What a bearer token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Admin,
    /// Bound to one host: reports that host's inventory, leases for its VMs.
    Agent,
    Reader,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Agent => "agent",
            Role::Reader => "reader",
        }
    }

    pub fn parse(s: &str) -> Result<Role, String> {
        match s {
            "admin" => Ok(Role::Admin),
            "agent" => Ok(Role::Agent),
            "reader" => Ok(Role::Reader),
            other => Err(format!(
                "unknown role '{other}': expected admin, agent or reader"
            )),
        }
    }
}

/// A stored token: never the secret, only its SHA-256.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Public identifier, part of the token string; used to find the record.
    pub id: String,
    pub name: String,
    pub role: Role,
    /// For agent tokens: the one host they act for.
    pub host: Option<String>,
    pub secret_hash: [u8; 32],
    pub created: Timestamp,
    pub revoked: Option<Timestamp>,
}

impl std::fmt::Debug for TokenRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRecord")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("role", &self.role)
            .field("host", &self.host)
            .field("secret_hash", &"<redacted>")
            .field("revoked", &self.revoked)
            .finish()
    }
}

impl TokenRecord {
    /// The rule of a new token, which every back end checks as it saves one: an agent token is
    /// bound to the one host it acts for, and no other token is bound to a host.
    pub fn check_new(&self) -> StoreResult<()> {
        match (self.role, &self.host) {
            (Role::Agent, Some(h)) if !h.trim().is_empty() => Ok(()),
            (Role::Agent, _) => Err(StoreError::Invalid(
                "an agent token needs the host it acts for ('host')".into(),
            )),
            (_, Some(_)) => Err(StoreError::Invalid(
                "only agent tokens are bound to a host".into(),
            )),
            (_, None) => Ok(()),
        }
    }
}

/// Token `id` of `all`, if the rule every back end applies inside the transaction that revokes
/// it allows: the last active admin token is never revoked, so the authority always keeps an
/// admin. Checked there, against the tokens as that transaction sees them, so two replicas
/// cannot each revoke one of the last two admins.
pub fn revocable<'a>(all: &'a [TokenRecord], id: &str) -> StoreResult<&'a TokenRecord> {
    let target = all
        .iter()
        .find(|t| t.id == id)
        .ok_or_else(|| StoreError::NotFound(format!("no token with id '{id}'")))?;
    let active_admin = |t: &TokenRecord| t.role == Role::Admin && t.revoked.is_none();
    if active_admin(target) && all.iter().filter(|t| active_admin(t)).count() == 1 {
        return Err(StoreError::LastAdmin);
    }
    Ok(target)
}

/// The history row of a token's creation or revocation: who did it, and which token (name, id,
/// role, host) — never its secret or hash. Both back ends write it in the token's transaction.
pub(crate) fn token_history(
    actor: &Actor,
    action: HistoryAction,
    t: &TokenRecord,
    at: Timestamp,
) -> HistoryEntry {
    let host = t.host.as_deref().map(|h| format!(", host {h}"));
    HistoryEntry {
        at,
        actor: actor.name.clone(),
        action,
        mac: None,
        pool: None,
        vm_id: None,
        vm_name: None,
        adapter_id: None,
        host: t.host.clone(),
        reason: Some(format!(
            "token '{}' (id {}, role {}{})",
            t.name,
            t.id,
            t.role.name(),
            host.unwrap_or_default()
        )),
    }
}

/// How many of a VM's newest history rows [`Store::conflicts_claimed`] looks through for guard's
/// last action.
pub const GUARD_LOOKBACK: u32 = 200;

/// Which history rows to return, newest first.
#[derive(Clone, Debug, Default)]
pub struct HistoryFilter {
    pub mac: Option<Mac>,
    pub vm_id: Option<String>,
    /// Exact matches on the entry's fields (the dashboard's history filters).
    pub actor: Option<String>,
    pub action: Option<HistoryAction>,
    pub pool: Option<String>,
    pub host: Option<String>,
    /// Only entries written at or after / before these times.
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    pub limit: u32,
    /// Only rows older than this id: the last id of one page asks for the next.
    pub before: Option<u64>,
}

/// Where a lease stands in a lease listing: by MAC, then owner (flagged duplicates share a MAC).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LeaseKey {
    pub mac: Mac,
    pub vm_id: String,
    pub adapter_id: String,
}

impl LeaseKey {
    pub fn of(lease: &Lease) -> LeaseKey {
        LeaseKey {
            mac: lease.mac,
            vm_id: lease.owner.vm_id.clone(),
            adapter_id: lease.owner.adapter_id.clone(),
        }
    }
}

/// A page of [`Store::lease_page`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeasePage {
    pub leases: Vec<Lease>,
    /// Leases past this page exist.
    pub more: bool,
}

/// A history entry with the id the store gave it (increasing in the order entries were
/// written); the cursor for paging through [`Store::history`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryRecord {
    pub id: u64,
    pub entry: HistoryEntry,
}

/// Counters a store keeps about its own work, for /metrics and the benchmark.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Durable commits (each one fsync of the log).
    pub commits: u64,
    /// Mutations made durable by those commits.
    pub mutations: u64,
    /// The embedded store failed an fsync and refuses every change until macpool restarts
    /// (acknowledged data is safe; what was not acknowledged may be lost).
    pub poisoned: bool,
}

/// What a store persists for the in-memory authority: the rows its [`Change`]s leave behind.
///
/// [`Change`]: macpool_core::authority::Change
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PersistedState {
    pub pools: Vec<(PoolSpec, Mac)>,
    pub leases: Vec<Lease>,
    pub holds: Vec<Hold>,
    pub cooling: Vec<(Mac, Timestamp)>,
    pub inventories: Vec<StoredInventory>,
    pub departed: Vec<Lease>,
    pub blocks: Vec<Block>,
}

impl PersistedState {
    /// Rebuilds the in-memory authority (cooling entries past `now` are dropped).
    pub fn into_authority(self, now: Timestamp) -> Result<Authority, String> {
        let mut a = Authority::restore(self.pools, self.leases, self.holds, self.cooling, now)?
            .with_inventories(self.inventories, self.departed)
            .with_blocks(self.blocks)?;
        a.settle();
        Ok(a)
    }
}

/// A whole store, for `macpool store migrate`: the state, every history entry (oldest first)
/// and every token.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub state: PersistedState,
    pub history: Vec<HistoryEntry>,
    pub tokens: Vec<TokenRecord>,
}

/// How many of each thing a store holds; `store migrate` compares source and target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub pools: u64,
    pub leases: u64,
    pub holds: u64,
    pub cooling: u64,
    pub inventories: u64,
    pub departed: u64,
    pub blocks: u64,
    pub history: u64,
    pub tokens: u64,
}

impl Counts {
    pub fn of(s: &Snapshot) -> Counts {
        let n = |x: usize| x as u64;
        Counts {
            pools: n(s.state.pools.len()),
            leases: n(s.state.leases.len()),
            holds: n(s.state.holds.len()),
            cooling: n(s.state.cooling.len()),
            inventories: n(s.state.inventories.len()),
            departed: n(s.state.departed.len()),
            blocks: n(s.state.blocks.len()),
            history: n(s.history.len()),
            tokens: n(s.tokens.len()),
        }
    }

    /// `(what, count)` in a fixed order, for tables and JSON.
    pub fn rows(&self) -> [(&'static str, u64); 9] {
        [
            ("pools", self.pools),
            ("leases", self.leases),
            ("holds", self.holds),
            ("cooling", self.cooling),
            ("inventories", self.inventories),
            ("departed", self.departed),
            ("blocks", self.blocks),
            ("history", self.history),
            ("tokens", self.tokens),
        ]
    }
}

/// How a back end runs work on its in-memory authority: all that [`Store`]'s use-case methods
/// need, so they are written once, below, for every back end. Sealed (a public trait in a
/// private module): callers use the use-case methods and never reach the authority directly.
mod sealed {
    use super::*;

    pub trait Run {
        /// Runs `f` as one mutation. `Ok` means its changes are durable; on `Err` nothing
        /// changed.
        fn mutate<T: Send + 'static>(
            &self,
            actor: Actor,
            f: impl FnOnce(&mut Authority, &Context) -> Result<(T, Vec<Change>), AuthorityError>
            + Send
            + 'static,
        ) -> impl Future<Output = StoreResult<T>> + Send;

        /// A copy of the current state (expired holds and cooldowns already dropped, read views
        /// settled), reflecting at least every mutation acknowledged before the call. O(1) for
        /// the writer: `Authority::snapshot`.
        fn snapshot(&self) -> impl Future<Output = StoreResult<Authority>> + Send;

        /// Runs `f` on a snapshot, on a blocking thread: a read never runs on the writer, so a
        /// long one (the conflicts of a fleet, a map page) never stalls a write.
        fn read<T: Send + 'static>(
            &self,
            f: impl FnOnce(&Authority) -> StoreResult<T> + Send + 'static,
        ) -> impl Future<Output = StoreResult<T>> + Send
        where
            Self: Sync,
        {
            async move {
                let snapshot = self.snapshot().await?;
                tokio::task::spawn_blocking(move || f(&snapshot))
                    .await
                    .map_err(|e| StoreError::Unavailable(format!("a read stopped: {e}")))?
            }
        }
    }
}

/// The authority's storage, one method per use case. A back end implements how it runs work on
/// the authority (`sealed::Run`) and what lives outside it (history, tokens, counters); the use
/// cases are the same for all.
pub trait Store: sealed::Run + Send + Sync + 'static {
    fn create_pool(
        &self,
        actor: Actor,
        spec: PoolSpec,
    ) -> impl Future<Output = StoreResult<PoolView>> + Send {
        let random: u64 = rand::random();
        self.mutate(actor, move |a, ctx| a.create_pool(ctx, spec, random))
    }
    fn edit_pool(
        &self,
        actor: Actor,
        name: String,
        edit: PoolEdit,
    ) -> impl Future<Output = StoreResult<PoolView>> + Send {
        self.mutate(actor, move |a, ctx| a.edit_pool(ctx, &name, edit))
    }
    fn delete_pool(
        &self,
        actor: Actor,
        name: String,
    ) -> impl Future<Output = StoreResult<()>> + Send {
        self.mutate(actor, move |a, ctx| {
            a.delete_pool(ctx, &name).map(|c| ((), c))
        })
    }
    fn pools(&self) -> impl Future<Output = StoreResult<Vec<PoolView>>> + Send {
        self.read(|a| Ok(a.pools()))
    }
    fn pool(&self, name: String) -> impl Future<Output = StoreResult<PoolView>> + Send {
        self.read(move |a| Ok(a.pool(&name)?))
    }
    /// Free runs of a pool, at most `limit` addresses' worth.
    fn available(
        &self,
        name: String,
        limit: u64,
    ) -> impl Future<Output = StoreResult<Available>> + Send {
        self.read(move |a| Ok(a.available(&name, limit)?))
    }

    fn allocate(
        &self,
        actor: Actor,
        req: AllocateRequest,
    ) -> impl Future<Output = StoreResult<Vec<Allocation>>> + Send {
        self.mutate(actor, move |a, ctx| a.allocate(ctx, req))
    }
    fn release(
        &self,
        actor: Actor,
        selector: ReleaseSelector,
    ) -> impl Future<Output = StoreResult<Vec<Released>>> + Send {
        self.mutate(actor, move |a, ctx| a.release(ctx, selector))
    }
    fn hold(
        &self,
        actor: Actor,
        req: HoldRequest,
    ) -> impl Future<Output = StoreResult<Hold>> + Send {
        self.mutate(actor, move |a, ctx| a.hold(ctx, req))
    }
    fn unhold(
        &self,
        actor: Actor,
        req: UnholdRequest,
    ) -> impl Future<Output = StoreResult<Vec<Hold>>> + Send {
        self.mutate(actor, move |a, ctx| a.unhold(ctx, req))
    }
    fn leases(&self, filter: LeaseFilter) -> impl Future<Output = StoreResult<Vec<Lease>>> + Send {
        self.read(move |a| Ok(a.leases(&filter)))
    }
    /// One page of the leases `filter` selects, in [`LeaseKey`] order: at most `limit` leases
    /// after `after`, and whether more follow (the last one's key asks for the next page).
    fn lease_page(
        &self,
        filter: LeaseFilter,
        after: Option<LeaseKey>,
        limit: usize,
    ) -> impl Future<Output = StoreResult<LeasePage>> + Send {
        self.read(move |a| {
            let mut all = a.leases(&filter);
            all.sort_by_cached_key(LeaseKey::of);
            let start = after.map_or(0, |k| all.partition_point(|l| LeaseKey::of(l) <= k));
            let more = all.len() - start > limit;
            let leases = all.drain(start..).take(limit).collect();
            Ok(LeasePage { leases, more })
        })
    }
    fn holds(&self, vm_id: Option<String>) -> impl Future<Output = StoreResult<Vec<Hold>>> + Send {
        self.read(move |a| Ok(a.holds(vm_id.as_deref())))
    }
    fn mac_status(&self, mac: Mac) -> impl Future<Output = StoreResult<MacStatus>> + Send {
        self.read(move |a| Ok(a.mac_status(mac)))
    }
    /// History, newest first; kept by the back end beside the authority.
    fn history(
        &self,
        filter: HistoryFilter,
    ) -> impl Future<Output = StoreResult<Vec<HistoryRecord>>> + Send;
    /// The newest `limit` history rows of each VM of `vm_ids` (newest first), as
    /// [`Store::history`] with a `vm_id` filter gives them, in one read: a conflicts page
    /// looks through hundreds of VMs' rows (issue 18).
    fn vm_histories(
        &self,
        vm_ids: Vec<String>,
        limit: u32,
    ) -> impl Future<Output = StoreResult<HashMap<String, Vec<HistoryRecord>>>> + Send {
        async move {
            let mut all = HashMap::new();
            for vm in vm_ids {
                let filter = HistoryFilter {
                    vm_id: Some(vm.clone()),
                    limit,
                    ..HistoryFilter::default()
                };
                let rows = self.history(filter).await?;
                all.insert(vm, rows);
            }
            Ok(all)
        }
    }

    /// Takes a host's whole inventory at `generation` and diffs it into leases and holds, in one
    /// transaction (see `Authority::apply_inventory`).
    fn put_inventory(
        &self,
        actor: Actor,
        inventory: HostInventory,
        generation: u64,
    ) -> impl Future<Output = StoreResult<InventoryOutcome>> + Send {
        self.mutate(actor, move |a, ctx| {
            a.apply_inventory(ctx, inventory, generation)
        })
    }
    /// The latest inventory of `host` (a domain `not-found` when there is none).
    fn inventory(&self, host: String) -> impl Future<Output = StoreResult<StoredInventory>> + Send {
        self.read(move |a| Ok(a.inventory(&host)?))
    }
    /// When each host last reported its inventory (for the staleness gauge in /metrics).
    fn inventory_received(
        &self,
    ) -> impl Future<Output = StoreResult<Vec<(String, Timestamp)>>> + Send {
        self.read(|a| Ok(a.inventory_received()))
    }
    /// Every conflict across the latest inventories, pools, leases and holds (kept up to date by
    /// the core as they change).
    fn conflicts(&self) -> impl Future<Output = StoreResult<Vec<Conflict>>> + Send {
        self.read(|a| Ok(a.conflicts()))
    }
    /// Everything `/metrics` shows, from one snapshot.
    fn gauges(&self) -> impl Future<Output = StoreResult<Gauges>> + Send {
        self.read(|a| Ok(a.gauges()))
    }

    /// Every conflict with what is known of each claimant (in the order of its sightings): the
    /// VM's power state (the core) and the latest history row in which guard replaced the MAC
    /// on that VM — looked for among the VM's newest [`GUARD_LOOKBACK`] rows of every VM
    /// claiming a `live-duplicate` or `latent` MAC (what guard acts on), read at once.
    fn conflicts_claimed(
        &self,
    ) -> impl Future<Output = StoreResult<Vec<(Conflict, Vec<Claimant>)>>> + Send {
        async move {
            let mut all = self
                .read(|a| {
                    Ok(a.conflicts()
                        .into_iter()
                        .map(|c| {
                            let claimants = a.claimants(&c);
                            (c, claimants)
                        })
                        .collect::<Vec<_>>())
                })
                .await?;
            let guarded = |c: &Conflict| {
                matches!(
                    c.class,
                    ConflictClass::LiveDuplicate | ConflictClass::Latent
                )
            };
            let vms: BTreeSet<String> = all
                .iter()
                .filter(|(c, _)| c.mac().is_some() && guarded(c))
                .flat_map(|(c, _)| c.sightings().iter().filter_map(|s| s.owner.vm_id.clone()))
                .collect();
            let rows = self
                .vm_histories(vms.into_iter().collect(), GUARD_LOOKBACK)
                .await?;
            for (c, claimants) in &mut all {
                let Some(mac) = c.mac() else { continue };
                if !guarded(c) {
                    continue;
                }
                for (s, claimant) in c.sightings().iter().zip(claimants.iter_mut()) {
                    let Some(vm) = &s.owner.vm_id else { continue };
                    claimant.guard = rows
                        .get(vm)
                        .into_iter()
                        .flatten()
                        .find(|r| r.entry.is_guard_replacing(vm, mac))
                        .map(|r| (r.id, r.entry.clone()));
                }
            }
            Ok(all)
        }
    }

    /// One page of a pool's map (see `Authority::address_map`), conflicts marked.
    fn address_map(
        &self,
        pool: String,
        first: Mac,
        cell_size: u64,
        cells: u64,
    ) -> impl Future<Output = StoreResult<AddressMap>> + Send {
        self.read(move |a| {
            let conflicts = a.conflicting_macs();
            Ok(a.address_map(&pool, first, cell_size, cells, &conflicts)?)
        })
    }
    /// A pool's address table from `from`: at most `limit` rows that `keep` accepts, found in one
    /// read (one run of the conflict engine), and where the next page starts.
    fn address_rows(
        &self,
        pool: String,
        from: Mac,
        limit: usize,
        keep: impl Fn(&AddressRow) -> bool + Send + 'static,
    ) -> impl Future<Output = StoreResult<(Vec<AddressRow>, Option<Mac>)>> + Send {
        self.read(move |a| {
            let conflicts = a.conflicting_macs();
            Ok(a.address_rows(&pool, from, limit, &conflicts, &keep)?)
        })
    }
    /// A pool's whole address table (rows `keep` accepts) in `order`, from its `skip`th row:
    /// at most `limit` rows, and the `skip` of the next page (see
    /// `Authority::address_rows_in_order`).
    fn address_rows_in_order(
        &self,
        pool: String,
        order: AddressOrder,
        skip: usize,
        limit: usize,
        keep: impl Fn(&AddressRow) -> bool + Send + 'static,
    ) -> impl Future<Output = StoreResult<(Vec<AddressRow>, Option<usize>)>> + Send {
        self.read(move |a| {
            let conflicts = a.conflicting_macs();
            Ok(a.address_rows_in_order(&pool, order, skip, limit, &conflicts, &keep)?)
        })
    }
    /// Every pool with its longest free run, conflicts and last report (the pools page).
    fn pool_summaries(&self) -> impl Future<Output = StoreResult<Vec<PoolSummary>>> + Send {
        self.read(|a| Ok(a.pool_summaries(&a.conflicting_macs())))
    }
    /// Every host that reported an inventory, summarised.
    fn hosts(&self) -> impl Future<Output = StoreResult<Vec<HostSummary>>> + Send {
        self.read(|a| Ok(a.host_summaries()))
    }

    /// Claims a block for a host, or returns its pending one (`true`); see `Authority::claim_block`.
    fn claim_block(
        &self,
        actor: Actor,
        claim: BlockClaim,
    ) -> impl Future<Output = StoreResult<(Block, bool)>> + Send {
        self.mutate(actor, move |a, ctx| {
            a.claim_block(ctx, claim)
                .map(|(b, existing, ch)| ((b, existing), ch))
        })
    }
    /// The host applied the block: active; its previous active block drains.
    fn activate_block(
        &self,
        actor: Actor,
        host: String,
        id: u64,
    ) -> impl Future<Output = StoreResult<Block>> + Send {
        self.mutate(actor, move |a, ctx| a.activate_block(ctx, &host, id))
    }
    /// Stops delegating the block; it is freed once unused and cooled down.
    fn drain_block(
        &self,
        actor: Actor,
        host: String,
        id: u64,
    ) -> impl Future<Output = StoreResult<Block>> + Send {
        self.mutate(actor, move |a, ctx| a.drain_block(ctx, &host, id))
    }
    /// Blocks that are not free yet.
    fn blocks(&self, filter: BlockFilter) -> impl Future<Output = StoreResult<Vec<Block>>> + Send {
        self.read(move |a| Ok(a.blocks(&filter)))
    }

    /// Saves a new token; `actor` goes into the history row (`token-created`).
    fn save_token(
        &self,
        actor: Actor,
        token: TokenRecord,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Revokes a token (idempotent); the first revocation is in the history (`token-revoked`).
    fn revoke_token(
        &self,
        actor: Actor,
        id: String,
    ) -> impl Future<Output = StoreResult<TokenRecord>> + Send;
    /// All tokens, revoked ones included.
    fn tokens(&self) -> impl Future<Output = StoreResult<Vec<TokenRecord>>> + Send;

    fn stats(&self) -> StoreStats;
}

/// Wall-clock time as the core's [`Timestamp`]. The only clock the authority reads.
pub fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Timestamp(ms)
}

/// Where a store lives: `sqlite:DIR` (embedded, the default) or `postgres://…` (shared by
/// replicas). A bare path means `sqlite:PATH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

impl Location {
    pub fn parse(s: &str) -> Result<Location, String> {
        if postgres::is_postgres_url(s) {
            return Ok(Location::Postgres(s.to_string()));
        }
        let dir = s.strip_prefix("sqlite:").unwrap_or(s);
        if dir.is_empty() || s.contains("://") && !s.starts_with("sqlite:") {
            return Err(format!(
                "unknown store '{s}': expected sqlite:DIR or postgres://user@host/database"
            ));
        }
        Ok(Location::Sqlite(dir.into()))
    }
}

impl std::fmt::Display for Location {
    /// Never shows a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sqlite(dir) => write!(f, "sqlite:{}", dir.display()),
            Location::Postgres(url) => f.write_str(&postgres::redact(url)),
        }
    }
}

/// The back end chosen at start-up. An enum rather than a trait object because [`Store`]'s
/// methods are async; adding a back end adds a variant here and nowhere else.
pub enum AnyStore {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PostgresStore),
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            AnyStore::Sqlite($s) => $e,
            AnyStore::Postgres($s) => $e,
        }
    };
}

impl AnyStore {
    /// Opens (creating if needed) the store at `location`.
    pub async fn open(location: &Location) -> Result<AnyStore, String> {
        match location {
            Location::Sqlite(dir) => sqlite::SqliteStore::open(dir).map(AnyStore::Sqlite),
            Location::Postgres(url) => postgres::PostgresStore::open(url)
                .await
                .map(AnyStore::Postgres),
        }
    }

    /// Everything in the store, for `store migrate`.
    pub async fn export(&self) -> StoreResult<Snapshot> {
        dispatch!(self, s => s.export().await)
    }
}

impl sealed::Run for AnyStore {
    async fn mutate<T: Send + 'static>(
        &self,
        actor: Actor,
        f: impl FnOnce(&mut Authority, &Context) -> Result<(T, Vec<Change>), AuthorityError>
        + Send
        + 'static,
    ) -> StoreResult<T> {
        dispatch!(self, s => s.mutate(actor, f).await)
    }
    async fn snapshot(&self) -> StoreResult<Authority> {
        dispatch!(self, s => s.snapshot().await)
    }
}

impl Store for AnyStore {
    async fn history(&self, filter: HistoryFilter) -> StoreResult<Vec<HistoryRecord>> {
        dispatch!(self, s => s.history(filter).await)
    }
    async fn save_token(&self, actor: Actor, token: TokenRecord) -> StoreResult<()> {
        dispatch!(self, s => s.save_token(actor, token).await)
    }
    async fn revoke_token(&self, actor: Actor, id: String) -> StoreResult<TokenRecord> {
        dispatch!(self, s => s.revoke_token(actor, id).await)
    }
    async fn tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        dispatch!(self, s => s.tokens().await)
    }
    fn stats(&self) -> StoreStats {
        dispatch!(self, s => s.stats())
    }
}
