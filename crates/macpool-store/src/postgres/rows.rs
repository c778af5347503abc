//! Rows of the PostgreSQL store: one batch's [`Change`]s folded into their net effect per row and
//! written with one statement per table (arrays through `UNNEST`), the state read back, history
//! and tokens. Objects are kept as JSON (`jsonb`) next to the columns the database indexes or
//! constrains.

use std::collections::{BTreeMap, HashMap};

use macpool_core::authority::{Change, StoredInventory};
use macpool_core::block::{Block, BlockState};
use macpool_core::history::HistoryEntry;
use macpool_core::inventory::Vm;
use macpool_core::lease::{Hold, Lease};
use macpool_core::pool::PoolSpec;
use macpool_core::{Mac, MacRange, Timestamp};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::postgres::PgArguments;
use sqlx::{Arguments, PgConnection, Postgres, Row};

use crate::{Counts, HistoryFilter, HistoryRecord, PersistedState, Role, Snapshot, TokenRecord};

pub type DbResult<T> = Result<T, sqlx::Error>;

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("domain values always serialize")
}

fn parse<T: DeserializeOwned>(what: &str, s: &str) -> DbResult<T> {
    serde_json::from_str(s).map_err(|e| sqlx::Error::Decode(format!("stored {what}: {e}").into()))
}

fn mac_i64(mac: Mac) -> i64 {
    mac.to_u64() as i64
}

fn ms(t: Timestamp) -> i64 {
    t.0 as i64
}

fn block_state(s: BlockState) -> &'static str {
    match s {
        BlockState::Pending => "pending",
        BlockState::Active => "active",
        BlockState::Draining => "draining",
        BlockState::Free => "free",
    }
}

/// What a pool's row becomes by the end of a batch.
enum PoolRow {
    Saved { spec: PoolSpec, cursor: Mac },
    Cursor(Mac),
}

/// What a host's inventory rows become by the end of a batch: its header row, and the VM rows at
/// the positions that changed; rows at and past `len` go. A first report has every position, a
/// later one (a diff) only those that differ, so a report costs O(changed VMs) (issue 18). The
/// positions upserted are all below `len`, so no row is both deleted and written.
struct InventoryRows {
    /// The stored inventory with no VMs.
    header: StoredInventory,
    len: usize,
    vms: BTreeMap<usize, Vm>,
}

/// One batch's writes, net per row: a lease saved, moved and deleted in the same batch is one
/// delete. Executed in a fixed order, which is safe because only the last state of each row
/// matters and the one cross-row rule (one unflagged lease per MAC) is checked at commit.
#[derive(Default)]
pub struct RowWrites {
    /// Ranges of every pool as the batch goes along (needed when a pool is deleted).
    pool_ranges: HashMap<String, Vec<MacRange>>,
    deleted_pools: Vec<(String, Vec<MacRange>)>,
    pools: BTreeMap<String, PoolRow>,
    leases: BTreeMap<String, Option<Lease>>,
    holds: BTreeMap<String, Option<Hold>>,
    cooling: BTreeMap<i64, Option<i64>>,
    inventories: BTreeMap<String, InventoryRows>,
    departed: BTreeMap<i64, Option<Lease>>,
    blocks: BTreeMap<u64, Block>,
    history: Vec<HistoryEntry>,
    /// Only for `import`: tokens are otherwise written directly, not through batches.
    tokens_saved: Vec<TokenRecord>,
}

impl RowWrites {
    /// `pool_ranges`: every pool's ranges before the batch.
    pub fn new(pool_ranges: HashMap<String, Vec<MacRange>>) -> RowWrites {
        RowWrites {
            pool_ranges,
            ..RowWrites::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.deleted_pools.is_empty()
            && self.pools.is_empty()
            && self.leases.is_empty()
            && self.holds.is_empty()
            && self.cooling.is_empty()
            && self.inventories.is_empty()
            && self.departed.is_empty()
            && self.blocks.is_empty()
            && self.history.is_empty()
            && self.tokens_saved.is_empty()
    }

    pub fn add(&mut self, change: &Change) {
        match change {
            Change::PoolSaved { spec, cursor } => {
                self.pool_ranges
                    .insert(spec.name.to_string(), spec.ranges.clone());
                self.pools.insert(
                    spec.name.to_string(),
                    PoolRow::Saved {
                        spec: spec.clone(),
                        cursor: *cursor,
                    },
                );
            }
            Change::PoolDeleted { name } => {
                let ranges = self.pool_ranges.remove(name.as_str()).unwrap_or_default();
                // Cooling entries inside the pool go with it; later ones (a new pool on the
                // same range) stay.
                for (mac, row) in self.cooling.iter_mut() {
                    if ranges
                        .iter()
                        .any(|r| r.contains(Mac::from_u64(*mac as u64).unwrap()))
                    {
                        *row = None;
                    }
                }
                self.pools.remove(name.as_str());
                self.deleted_pools.push((name.to_string(), ranges));
            }
            Change::CursorMoved { pool, cursor } => match self.pools.get_mut(pool.as_str()) {
                Some(PoolRow::Saved { cursor: c, .. }) | Some(PoolRow::Cursor(c)) => *c = *cursor,
                None => {
                    self.pools
                        .insert(pool.to_string(), PoolRow::Cursor(*cursor));
                }
            },
            Change::LeaseSaved(l) => {
                self.leases.insert(json(&l.owner.key()), Some(l.clone()));
            }
            Change::LeaseDeleted { owner, .. } => {
                self.leases.insert(json(owner), None);
            }
            Change::HoldSaved(h) => {
                self.holds.insert(json(&h.key()), Some(h.clone()));
            }
            Change::HoldDeleted(k) => {
                self.holds.insert(json(k), None);
            }
            Change::CoolingStarted { mac, until } => {
                self.cooling.insert(mac_i64(*mac), Some(ms(*until)));
            }
            Change::CoolingCleared { mac } => {
                self.cooling.insert(mac_i64(*mac), None);
            }
            Change::History(h) => self.history.push(h.clone()),
            Change::InventorySaved(s) => {
                let rows = InventoryRows {
                    header: StoredInventory {
                        inventory: s.inventory.header(),
                        ..*s
                    },
                    len: s.inventory.vms().len(),
                    vms: s.inventory.vms().iter().cloned().enumerate().collect(),
                };
                self.inventories
                    .insert(s.inventory.host().to_string(), rows);
            }
            Change::InventoryPatched(p) => {
                let header = StoredInventory {
                    generation: p.generation,
                    received: p.received,
                    inventory: p.header.clone(),
                };
                let rows = self
                    .inventories
                    .entry(p.host().to_string())
                    .or_insert_with(|| InventoryRows {
                        header: header.clone(),
                        len: p.len,
                        vms: BTreeMap::new(),
                    });
                rows.header = header;
                rows.len = p.len;
                rows.vms.retain(|&pos, _| pos < p.len);
                rows.vms.extend(p.vms.iter().cloned());
            }
            Change::BlockSaved(b) => {
                self.blocks.insert(b.id, b.clone());
            }
            Change::DepartedSaved(l) => {
                self.departed.insert(mac_i64(l.mac), Some(l.clone()));
            }
            Change::DepartedCleared { mac } => {
                self.departed.insert(mac_i64(*mac), None);
            }
        }
    }

    /// Writes everything in the caller's transaction, with the batch's change-log entry and the
    /// new head when `log` is given: one statement (writable CTEs, arrays through `UNNEST`), so
    /// a batch costs one round trip whatever it holds. Each row appears in at most one of the
    /// parts (the maps are net), and the one cross-row rule is checked at commit.
    pub async fn execute(self, tx: &mut PgConnection, log: Option<LogEntry>) -> DbResult<()> {
        // Deleted pools first, as statements of their own: a pool deleted and created again in
        // one batch must not be two changes of one row in one statement.
        for (name, ranges) in &self.deleted_pools {
            sqlx::query("DELETE FROM pools WHERE name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?;
            for r in ranges {
                sqlx::query("DELETE FROM cooling WHERE mac BETWEEN $1 AND $2")
                    .bind(mac_i64(r.first()))
                    .bind(mac_i64(r.last()))
                    .execute(&mut *tx)
                    .await?;
            }
        }
        for t in &self.tokens_saved {
            save_token(tx, t).await?;
        }
        self.statement(log).execute(tx).await
    }

    /// The batch's one statement (everything but deleted pools and imported tokens).
    fn statement(&self, log: Option<LogEntry>) -> WriteStatement {
        let (mut names, mut specs, mut cursors) = (vec![], vec![], vec![]);
        let (mut moved, mut moved_to) = (vec![], vec![]);
        for (name, row) in &self.pools {
            match row {
                PoolRow::Saved { spec, cursor } => {
                    names.push(name.clone());
                    specs.push(json(spec));
                    cursors.push(mac_i64(*cursor));
                }
                PoolRow::Cursor(c) => {
                    moved.push(name.clone());
                    moved_to.push(mac_i64(*c));
                }
            }
        }
        let (leases_gone, leases) = split(&self.leases);
        let mut l = (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
        for (k, lease) in leases {
            l.0.push(k.clone());
            l.1.push(mac_i64(lease.mac));
            l.2.push(lease.pool.to_string());
            l.3.push(lease.owner.vm_id.clone());
            l.4.push(lease.owner.host.clone());
            l.5.push(lease.duplicate);
            l.6.push(json(lease));
        }
        let (holds_gone, holds) = split(&self.holds);
        let mut h = (vec![], vec![], vec![], vec![]);
        for (k, hold) in holds {
            h.0.push(k.clone());
            h.1.push(mac_i64(hold.mac));
            h.2.push(hold.vm_id.clone());
            h.3.push(json(hold));
        }
        let cooling_gone: Vec<i64> = gone_keys(&self.cooling);
        let (cooling_macs, cooling_until): (Vec<i64>, Vec<i64>) = self
            .cooling
            .iter()
            .filter_map(|(k, v)| v.map(|u| (*k, u)))
            .unzip();
        let mut inv = (vec![], vec![], vec![]);
        let mut vms = (vec![], vec![], vec![]);
        for (host, rows) in &self.inventories {
            inv.0.push(host.clone());
            inv.1.push(json(&rows.header));
            inv.2.push(rows.len as i32);
            for (pos, vm) in &rows.vms {
                vms.0.push(host.clone());
                vms.1.push(*pos as i32);
                vms.2.push(json(vm));
            }
        }
        let departed_gone: Vec<i64> = gone_keys(&self.departed);
        let (departed_macs, departed): (Vec<i64>, Vec<String>) = self
            .departed
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|l| (*k, json(l))))
            .unzip();
        let mut b = (vec![], vec![], vec![], vec![], vec![]);
        for block in self.blocks.values() {
            b.0.push(block.id as i64);
            b.1.push(block.pool.to_string());
            b.2.push(block.host.clone());
            b.3.push(block_state(block.state).to_string());
            b.4.push(json(block));
        }
        let mut hist = (vec![], vec![], vec![], vec![]);
        for e in &self.history {
            hist.0.push(ms(e.at));
            hist.1.push(e.mac.map(mac_i64));
            hist.2.push(e.vm_id.clone());
            hist.3.push(json(e));
        }
        let mut st = WriteStatement::default();
        if !names.is_empty() {
            let (n, s, c) = (st.bind(names), st.bind(specs), st.bind(cursors));
            st.part(format!(
                "INSERT INTO pools (name, spec, cursor)
                 SELECT n, s::jsonb, c FROM UNNEST({n}::text[], {s}::text[], {c}::bigint[]) AS u(n, s, c)
                 ON CONFLICT (name) DO UPDATE SET spec = EXCLUDED.spec, cursor = EXCLUDED.cursor"
            ));
        }
        if !moved.is_empty() {
            let (n, c) = (st.bind(moved), st.bind(moved_to));
            st.part(format!(
                "UPDATE pools SET cursor = u.c
                 FROM UNNEST({n}::text[], {c}::bigint[]) AS u(n, c) WHERE pools.name = u.n"
            ));
        }
        st.delete_rows("leases", "owner_key", "text", leases_gone);
        if !l.0.is_empty() {
            let (k, m, p, v) = (st.bind(l.0), st.bind(l.1), st.bind(l.2), st.bind(l.3));
            let (h, d, j) = (st.bind(l.4), st.bind(l.5), st.bind(l.6));
            st.part(format!(
                "INSERT INTO leases (owner_key, mac, pool, vm_id, host, duplicate, lease)
                 SELECT k, m, p, v, h, d, l::jsonb FROM UNNEST({k}::text[], {m}::bigint[],
                   {p}::text[], {v}::text[], {h}::text[], {d}::bool[], {j}::text[])
                   AS u(k, m, p, v, h, d, l)
                 ON CONFLICT (owner_key) DO UPDATE SET mac = EXCLUDED.mac, pool = EXCLUDED.pool,
                   vm_id = EXCLUDED.vm_id, host = EXCLUDED.host, duplicate = EXCLUDED.duplicate,
                   lease = EXCLUDED.lease"
            ));
        }
        st.delete_rows("holds", "hold_key", "text", holds_gone);
        if !h.0.is_empty() {
            let (k, m, v, j) = (st.bind(h.0), st.bind(h.1), st.bind(h.2), st.bind(h.3));
            st.part(format!(
                "INSERT INTO holds (hold_key, mac, vm_id, hold)
                 SELECT k, m, v, h::jsonb FROM UNNEST({k}::text[], {m}::bigint[], {v}::text[],
                   {j}::text[]) AS u(k, m, v, h)
                 ON CONFLICT (hold_key) DO UPDATE SET hold = EXCLUDED.hold"
            ));
        }
        st.delete_rows("cooling", "mac", "bigint", cooling_gone);
        if !cooling_macs.is_empty() {
            let (m, u) = (st.bind(cooling_macs), st.bind(cooling_until));
            st.part(format!(
                "INSERT INTO cooling (mac, until_ms) SELECT * FROM UNNEST({m}::bigint[], {u}::bigint[])
                 ON CONFLICT (mac) DO UPDATE SET until_ms = EXCLUDED.until_ms"
            ));
        }
        if !inv.0.is_empty() {
            let (h, j, n) = (st.bind(inv.0), st.bind(inv.1), st.bind(inv.2));
            st.part(format!(
                "INSERT INTO inventory_hosts (host, header)
                 SELECT h, j::jsonb FROM UNNEST({h}::text[], {j}::text[]) AS u(h, j)
                 ON CONFLICT (host) DO UPDATE SET header = EXCLUDED.header"
            ));
            // Only the hosts whose report got shorter have rows to delete, but which those are
            // is known to the database alone; the primary key makes each a short range scan.
            st.part(format!(
                "DELETE FROM inventory_vms d USING UNNEST({h}::text[], {n}::int[]) AS u(h, n)
                 WHERE d.host = u.h AND d.pos >= u.n"
            ));
        }
        if !vms.0.is_empty() {
            let (h, p, j) = (st.bind(vms.0), st.bind(vms.1), st.bind(vms.2));
            st.part(format!(
                "INSERT INTO inventory_vms (host, pos, vm)
                 SELECT h, p, j::jsonb FROM UNNEST({h}::text[], {p}::int[], {j}::text[]) AS u(h, p, j)
                 ON CONFLICT (host, pos) DO UPDATE SET vm = EXCLUDED.vm"
            ));
        }
        st.delete_rows("departed", "mac", "bigint", departed_gone);
        if !departed_macs.is_empty() {
            let (m, j) = (st.bind(departed_macs), st.bind(departed));
            st.part(format!(
                "INSERT INTO departed (mac, lease)
                 SELECT m, l::jsonb FROM UNNEST({m}::bigint[], {j}::text[]) AS u(m, l)
                 ON CONFLICT (mac) DO UPDATE SET lease = EXCLUDED.lease"
            ));
        }
        if !b.0.is_empty() {
            let (i, p, h) = (st.bind(b.0), st.bind(b.1), st.bind(b.2));
            let (s, j) = (st.bind(b.3), st.bind(b.4));
            st.part(format!(
                "INSERT INTO blocks (id, pool, host, state, block)
                 SELECT i, p, h, s, b::jsonb FROM UNNEST({i}::bigint[], {p}::text[], {h}::text[],
                   {s}::text[], {j}::text[]) AS u(i, p, h, s, b)
                 ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, block = EXCLUDED.block"
            ));
        }
        if !hist.0.is_empty() {
            let (a, m, v, e) = (
                st.bind(hist.0),
                st.bind(hist.1),
                st.bind(hist.2),
                st.bind(hist.3),
            );
            st.part(format!(
                "INSERT INTO history (at_ms, mac, vm_id, entry)
                 SELECT a, m, v, e::jsonb FROM UNNEST({a}::bigint[], {m}::bigint[], {v}::text[],
                   {e}::text[]) WITH ORDINALITY AS u(a, m, v, e, n) ORDER BY n"
            ));
        }
        if let Some(log) = log {
            let seq = st.bind(log.seq);
            let (a, r, c) = (
                st.bind(log.at_ms),
                st.bind(log.replica),
                st.bind(log.changes),
            );
            st.part(format!(
                "INSERT INTO change_log (seq, at_ms, replica, changes)
                 VALUES ({seq}, {a}, {r}, {c})"
            ));
            st.part(format!("UPDATE macpool_head SET seq = {seq} WHERE id = 1"));
        }
        st
    }
}

/// The values of a statement built from parts, each bound as its placeholder is written, so
/// that the SQL text holds only constant parts and `$n`.
#[derive(Default)]
struct Params(PgArguments);

impl Params {
    /// Adds a parameter and returns its placeholder.
    fn bind<'q, T: sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres> + 'q>(
        &mut self,
        value: T,
    ) -> String {
        self.0.add(value).expect("plain values always encode");
        format!("${}", self.0.len())
    }
}

/// One statement of writable CTEs holding only the parts a batch needs: a part with no rows
/// would still cost a scan of its table whenever the cached plan is generic.
#[derive(Default)]
struct WriteStatement {
    parts: Vec<String>,
    params: Params,
}

impl WriteStatement {
    /// Adds a parameter and returns its placeholder.
    fn bind<'q, T: sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres> + 'q>(
        &mut self,
        value: T,
    ) -> String {
        self.params.bind(value)
    }

    fn part(&mut self, sql: String) {
        self.parts.push(sql);
    }

    /// A part deleting the rows of `table` whose `column` (of SQL type `sql_type`) is one of
    /// `keys`; none when there are no keys. Names are this file's constants, never input.
    fn delete_rows<T>(&mut self, table: &str, column: &str, sql_type: &str, keys: Vec<T>)
    where
        Vec<T>: for<'q> sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres> + 'static,
    {
        if keys.is_empty() {
            return;
        }
        let k = self.bind(keys);
        self.part(format!(
            "DELETE FROM {table} WHERE {column} = ANY({k}::{sql_type}[])"
        ));
    }

    /// The statement's text: every part but the last as a CTE, the last as the main statement;
    /// `None` when there is nothing to write.
    fn sql(&self) -> Option<String> {
        let (last, first) = self.parts.split_last()?;
        let mut sql = String::new();
        for (i, part) in first.iter().enumerate() {
            sql.push_str(if i == 0 { "WITH " } else { ",\n" });
            sql.push_str(&format!("w{i} AS ({part})"));
        }
        sql.push('\n');
        sql.push_str(last);
        Some(sql)
    }

    async fn execute(self, tx: &mut PgConnection) -> DbResult<()> {
        let Some(sql) = self.sql() else {
            return Ok(());
        };
        // Only this file's constant parts and placeholder numbers make up `sql`; every value
        // travels as a parameter.
        sqlx::query_with(sqlx::AssertSqlSafe(sql), self.params.0)
            .execute(tx)
            .await?;
        Ok(())
    }
}

/// The change-log entry a batch adds, and the head it moves to.
pub struct LogEntry {
    pub seq: i64,
    pub at_ms: i64,
    pub replica: String,
    pub changes: String,
}

fn gone_keys<T>(rows: &BTreeMap<i64, Option<T>>) -> Vec<i64> {
    rows.iter()
        .filter(|(_, v)| v.is_none())
        .map(|(k, _)| *k)
        .collect()
}

/// Keys to delete and rows to upsert.
fn split<T>(rows: &BTreeMap<String, Option<T>>) -> (Vec<String>, Vec<(&String, &T)>) {
    let mut gone = Vec::new();
    let mut kept = Vec::new();
    for (k, v) in rows {
        match v {
            None => gone.push(k.clone()),
            Some(v) => kept.push((k, v)),
        }
    }
    (gone, kept)
}

/// Appends history entries in order (their ids give the order `history` reads back).
pub async fn insert_history(tx: &mut PgConnection, entries: &[HistoryEntry]) -> DbResult<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut cols = (vec![], vec![], vec![], vec![]);
    for h in entries {
        cols.0.push(ms(h.at));
        cols.1.push(h.mac.map(mac_i64));
        cols.2.push(h.vm_id.clone());
        cols.3.push(json(h));
    }
    sqlx::query(
        "INSERT INTO history (at_ms, mac, vm_id, entry)
         SELECT a, m, v, e::jsonb FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[])
           WITH ORDINALITY AS u(a, m, v, e, n) ORDER BY n",
    )
    .bind(cols.0)
    .bind(cols.1)
    .bind(cols.2)
    .bind(cols.3)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn all<T: DeserializeOwned>(
    tx: &mut PgConnection,
    what: &str,
    sql: &'static str,
) -> DbResult<Vec<T>> {
    let rows: Vec<String> = sqlx::query_scalar(sql).fetch_all(&mut *tx).await?;
    rows.iter().map(|s| parse(what, s)).collect()
}

/// Reads everything the in-memory authority is rebuilt from. Call inside one snapshot
/// (`REPEATABLE READ`) so the rows agree with each other and with the log's head.
pub async fn load(tx: &mut PgConnection) -> DbResult<PersistedState> {
    let mut pools = Vec::new();
    for r in sqlx::query("SELECT spec::text, cursor FROM pools ORDER BY name")
        .fetch_all(&mut *tx)
        .await?
    {
        let spec: PoolSpec = parse("pool", r.try_get::<&str, _>(0)?)?;
        let cursor = Mac::from_u64(r.try_get::<i64, _>(1)? as u64)
            .ok_or_else(|| sqlx::Error::Decode("stored pool cursor out of range".into()))?;
        pools.push((spec, cursor));
    }
    let mut cooling = Vec::new();
    for r in sqlx::query("SELECT mac, until_ms FROM cooling")
        .fetch_all(&mut *tx)
        .await?
    {
        if let Some(mac) = Mac::from_u64(r.try_get::<i64, _>(0)? as u64) {
            cooling.push((mac, Timestamp(r.try_get::<i64, _>(1)? as u64)));
        }
    }
    Ok(PersistedState {
        pools,
        leases: all(
            tx,
            "lease",
            "SELECT lease::text FROM leases ORDER BY mac, owner_key",
        )
        .await?,
        holds: all(tx, "hold", "SELECT hold::text FROM holds ORDER BY hold_key").await?,
        cooling,
        inventories: load_inventories(tx).await?,
        departed: all(
            tx,
            "departed lease",
            "SELECT lease::text FROM departed ORDER BY mac",
        )
        .await?,
        blocks: all(tx, "block", "SELECT block::text FROM blocks ORDER BY id").await?,
    })
}

/// The newest `limit` history rows of each of `vm_ids`, newest first, in one statement: one
/// walk of `history_vm` per VM (a lateral join), where a query per VM cost a round trip each.
pub async fn vm_histories(
    conn: &mut PgConnection,
    vm_ids: Vec<String>,
    limit: u32,
) -> DbResult<HashMap<String, Vec<HistoryRecord>>> {
    let rows: Vec<(String, i64, String)> = sqlx::query_as(
        "SELECT v.vm, h.id, h.entry::text FROM UNNEST($1::text[]) AS v(vm)
         CROSS JOIN LATERAL (SELECT id, entry FROM history WHERE vm_id = v.vm
                             ORDER BY id DESC LIMIT $2) h
         ORDER BY v.vm, h.id DESC",
    )
    .bind(&vm_ids)
    .bind(i64::from(limit.max(1)))
    .fetch_all(&mut *conn)
    .await?;
    let mut all: HashMap<String, Vec<HistoryRecord>> =
        vm_ids.into_iter().map(|vm| (vm, Vec::new())).collect();
    for (vm, id, entry) in rows {
        let record = HistoryRecord {
            id: id as u64,
            entry: parse("history entry", &entry)?,
        };
        all.entry(vm).or_default().push(record);
    }
    Ok(all)
}

/// History, newest first, as `HistoryFilter` asks (older than `f.before` when given). The
/// statement holds only the conditions given, so each filter shape is a statement of its own
/// and keeps its index under a generic plan: a single
/// `($1 IS NULL OR mac = $1)` form, once PostgreSQL planned it generically, walked the whole
/// table backwards (100 ms at 200,000 rows). `history_mac` and `history_vm` end in `id`, so the
/// cursor is part of the index range.
pub async fn history(conn: &mut PgConnection, f: &HistoryFilter) -> DbResult<Vec<HistoryRecord>> {
    let mut params = Params::default();
    let mut sql = String::from("SELECT id, entry::text FROM history WHERE ");
    if let Some(mac) = f.mac {
        sql += &format!("mac = {} AND ", params.bind(mac_i64(mac)));
    }
    if let Some(vm) = &f.vm_id {
        sql += &format!("vm_id = {} AND ", params.bind(vm.as_str()));
    }
    // the rest live in the entry's serde form (the column names of the JSON object)
    let json_fields = [
        ("actor", f.actor.clone()),
        ("pool", f.pool.clone()),
        ("host", f.host.clone()),
        (
            "action",
            f.action
                .map(|a| serde_json::to_value(a).expect("a unit variant serialises"))
                .and_then(|v| v.as_str().map(str::to_string)),
        ),
    ];
    for (field, value) in json_fields {
        if let Some(v) = value {
            sql += &format!("entry->>'{field}' = {} AND ", params.bind(v));
        }
    }
    if let Some(t) = f.since {
        sql += &format!("at_ms >= {} AND ", params.bind(t.0 as i64));
    }
    if let Some(t) = f.until {
        sql += &format!("at_ms < {} AND ", params.bind(t.0 as i64));
    }
    let before = params.bind(f.before.map_or(i64::MAX, |b| b.min(i64::MAX as u64) as i64));
    let limit = params.bind(i64::from(f.limit.max(1)));
    sql += &format!("id < {before} ORDER BY id DESC LIMIT {limit}");
    // Constant text and placeholder numbers only; the values travel as parameters.
    let rows: Vec<(i64, String)> = sqlx::query_as_with(sqlx::AssertSqlSafe(sql), params.0)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|(id, s)| {
            Ok(HistoryRecord {
                id: *id as u64,
                entry: parse("history entry", s)?,
            })
        })
        .collect()
}

/// Every history entry, oldest first (for `store migrate`).
pub async fn all_history(conn: &mut PgConnection) -> DbResult<Vec<HistoryEntry>> {
    all(
        conn,
        "history entry",
        "SELECT entry::text FROM history ORDER BY id",
    )
    .await
}

pub async fn save_token(tx: &mut PgConnection, t: &TokenRecord) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO tokens (id, name, role, host, secret_hash, created_ms, revoked_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, role = EXCLUDED.role,
           host = EXCLUDED.host, secret_hash = EXCLUDED.secret_hash, revoked_ms = EXCLUDED.revoked_ms",
    )
    .bind(&t.id)
    .bind(&t.name)
    .bind(t.role.name())
    .bind(t.host.as_deref())
    .bind(t.secret_hash.as_slice())
    .bind(ms(t.created))
    .bind(t.revoked.map(ms))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub async fn tokens(conn: &mut PgConnection) -> DbResult<Vec<TokenRecord>> {
    let rows = sqlx::query(
        "SELECT id, name, role, host, secret_hash, created_ms, revoked_ms FROM tokens
         ORDER BY created_ms, id",
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            let hash: Vec<u8> = r.try_get(4)?;
            Ok(TokenRecord {
                id: r.try_get(0)?,
                name: r.try_get(1)?,
                role: Role::parse(r.try_get(2)?).map_err(|e| sqlx::Error::Decode(e.into()))?,
                host: r.try_get(3)?,
                secret_hash: hash
                    .try_into()
                    .map_err(|_| sqlx::Error::Decode("stored token hash is not 32 bytes".into()))?,
                created: Timestamp(r.try_get::<i64, _>(5)? as u64),
                revoked: r.try_get::<Option<i64>, _>(6)?.map(|t| Timestamp(t as u64)),
            })
        })
        .collect()
}

/// Every stored inventory: its header row with its VM rows in position order, rebuilt through
/// the domain constructors (which re-check them).
async fn load_inventories(tx: &mut PgConnection) -> DbResult<Vec<StoredInventory>> {
    let mut hosts: Vec<StoredInventory> = all(
        tx,
        "inventory",
        "SELECT header::text FROM inventory_hosts ORDER BY host",
    )
    .await?;
    let rows = sqlx::query("SELECT host, pos, vm::text FROM inventory_vms ORDER BY host, pos")
        .fetch_all(&mut *tx)
        .await?;
    let mut at = 0;
    for r in rows {
        let host: &str = r.try_get(0)?;
        while hosts.get(at).is_some_and(|s| s.inventory.host() < host) {
            at += 1;
        }
        let bad =
            |why: String| sqlx::Error::Decode(format!("stored VM of host {host}: {why}").into());
        let stored = hosts
            .get_mut(at)
            .filter(|s| s.inventory.host() == host)
            .ok_or_else(|| bad("no inventory header".into()))?;
        let pos: i32 = r.try_get(1)?;
        if pos as usize != stored.inventory.vms().len() {
            return Err(bad(format!("position {pos} out of order")));
        }
        let vm: Vm = parse("inventory VM", r.try_get::<&str, _>(2)?)?;
        stored
            .inventory
            .add_vm(vm)
            .map_err(|e| bad(e.to_string()))?;
    }
    Ok(hosts)
}

/// How many rows each table holds.
pub async fn counts(conn: &mut PgConnection) -> DbResult<Counts> {
    let r = sqlx::query(
        "SELECT (SELECT count(*) FROM pools), (SELECT count(*) FROM leases),
                (SELECT count(*) FROM holds), (SELECT count(*) FROM cooling),
                (SELECT count(*) FROM inventory_hosts), (SELECT count(*) FROM departed),
                (SELECT count(*) FROM blocks), (SELECT count(*) FROM history),
                (SELECT count(*) FROM tokens)",
    )
    .fetch_one(&mut *conn)
    .await?;
    let n = |i: usize| -> DbResult<u64> { Ok(r.try_get::<i64, _>(i)? as u64) };
    Ok(Counts {
        pools: n(0)?,
        leases: n(1)?,
        holds: n(2)?,
        cooling: n(3)?,
        inventories: n(4)?,
        departed: n(5)?,
        blocks: n(6)?,
        history: n(7)?,
        tokens: n(8)?,
    })
}

/// Writes a whole snapshot into empty tables (the caller checked), in the caller's transaction.
pub async fn import(tx: &mut PgConnection, s: &Snapshot) -> DbResult<()> {
    let mut w = RowWrites::default();
    for (spec, cursor) in &s.state.pools {
        w.add(&Change::PoolSaved {
            spec: spec.clone(),
            cursor: *cursor,
        });
    }
    for l in &s.state.leases {
        w.add(&Change::LeaseSaved(l.clone()));
    }
    for h in &s.state.holds {
        w.add(&Change::HoldSaved(h.clone()));
    }
    for (mac, until) in &s.state.cooling {
        w.add(&Change::CoolingStarted {
            mac: *mac,
            until: *until,
        });
    }
    for i in &s.state.inventories {
        w.add(&Change::InventorySaved(i.clone()));
    }
    for l in &s.state.departed {
        w.add(&Change::DepartedSaved(l.clone()));
    }
    for b in &s.state.blocks {
        w.add(&Change::BlockSaved(b.clone()));
    }
    w.tokens_saved = s.tokens.clone();
    w.execute(tx, None).await?;
    // History in chunks: a big store has millions of rows.
    for chunk in s.history.chunks(10_000) {
        insert_history(tx, chunk).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use macpool_core::authority::{Actor, AllocateRequest, Authority, Context, ReleaseSelector};
    use macpool_core::pool::{PoolName, PoolPolicy};

    use super::*;

    const PARTS: [&str; 15] = [
        "INSERT INTO pools",
        "UPDATE pools",
        "DELETE FROM leases",
        "INSERT INTO leases",
        "DELETE FROM holds",
        "INSERT INTO holds",
        "DELETE FROM cooling",
        "INSERT INTO cooling",
        "INSERT INTO inventory_hosts",
        "DELETE FROM inventory_vms",
        "INSERT INTO inventory_vms",
        "DELETE FROM departed",
        "INSERT INTO departed",
        "INSERT INTO blocks",
        "INSERT INTO history",
    ];

    fn ctx() -> Context {
        Context {
            now: Timestamp(1_000),
            actor: Actor::admin("test"),
        }
    }

    fn statement_of(changes: &[Change], log: bool) -> WriteStatement {
        let mut writes = RowWrites::default();
        for c in changes {
            writes.add(c);
        }
        let log = log.then(|| LogEntry {
            seq: 7,
            at_ms: 1_000,
            replica: "r".into(),
            changes: "[]".into(),
        });
        writes.statement(log)
    }

    /// The parts of [`PARTS`] the statement holds.
    fn parts_in(st: &WriteStatement) -> Vec<&'static str> {
        let sql = st.sql().unwrap_or_default();
        PARTS.into_iter().filter(|p| sql.contains(p)).collect()
    }

    fn authority_with_pool() -> Authority {
        let mut a = Authority::new();
        let spec = PoolSpec {
            name: PoolName::new("p").unwrap(),
            ranges: vec![MacRange::parse("00155D000000-00155D0000FF").unwrap()],
            policy: PoolPolicy::default(),
        };
        a.create_pool(&ctx(), spec, 0).unwrap();
        a
    }

    fn request(vm: &str) -> AllocateRequest {
        crate::conformance::request("p", vm)
    }

    #[test]
    fn an_allocation_writes_its_lease_and_history_and_touches_no_other_table() {
        let mut a = authority_with_pool();
        let mut changes = Vec::new();
        for vm in ["vm-1", "vm-2"] {
            changes.extend(a.allocate(&ctx(), request(vm)).unwrap().1);
        }
        let st = statement_of(&changes, true);
        let parts = parts_in(&st);
        assert!(parts.contains(&"INSERT INTO leases"), "{parts:?}");
        assert!(parts.contains(&"INSERT INTO history"), "{parts:?}");
        // An empty part would still scan its table under a generic plan.
        assert!(!parts.iter().any(|p| p.starts_with("DELETE")), "{parts:?}");
        for table in ["holds", "cooling", "inventory_hosts", "departed", "blocks"] {
            assert!(!parts.iter().any(|p| p.ends_with(table)), "{parts:?}");
        }
        let sql = st.sql().unwrap();
        assert!(sql.contains("INSERT INTO change_log"));
        assert!(sql.contains("UPDATE macpool_head SET seq"));
    }

    #[test]
    fn a_release_deletes_the_lease_and_starts_its_cooldown() {
        let mut a = authority_with_pool();
        a.allocate(&ctx(), request("vm-1")).unwrap();
        let selector = ReleaseSelector::Vm {
            vm_id: "vm-1".into(),
            adapter_id: None,
        };
        let (_, changes) = a.release(&ctx(), selector).unwrap();
        let parts = parts_in(&statement_of(&changes, true));
        assert!(parts.contains(&"DELETE FROM leases"), "{parts:?}");
        assert!(parts.contains(&"INSERT INTO cooling"), "{parts:?}");
        assert!(!parts.contains(&"INSERT INTO leases"), "{parts:?}");
    }

    #[test]
    fn placeholders_are_numbered_as_bound_and_nothing_means_no_statement() {
        let mut a = authority_with_pool();
        let (_, changes) = a.allocate(&ctx(), request("vm-1")).unwrap();
        let st = statement_of(&changes, true);
        let sql = st.sql().unwrap();
        for n in 1..=st.params.0.len() {
            assert!(sql.contains(&format!("${n}")), "${n} missing from {sql}");
        }
        assert!(!sql.contains(&format!("${}", st.params.0.len() + 1)));
        assert!(statement_of(&[], false).sql().is_none());
    }
}
