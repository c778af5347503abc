//! Row mapping between SQLite and the domain types. The only place that knows column layouts.

use std::time::Duration;

use macpool_core::authority::{Change, InventoryPatch, StoredInventory};
use macpool_core::block::{Block, BlockState};
use macpool_core::history::{HistoryAction, HistoryEntry};
use macpool_core::inventory::{
    Adapter, AdapterLocation, Checkpoint, CheckpointType, CursorSource, HostInventory, MacKind, Vm,
    VmState,
};
use macpool_core::lease::{Hold, HoldReason, Lease, LeaseState, Owner};
use macpool_core::pool::{
    AllocationOrder, DuplicatePolicy, LowWater, PoolName, PoolPolicy, PoolSpec,
};
use macpool_core::{Mac, MacFormat, MacRange, Timestamp};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::{HistoryFilter, HistoryRecord, PersistedState, Role, TokenRecord};

type SqlResult<T> = rusqlite::Result<T>;

fn mac_col(v: i64) -> SqlResult<Mac> {
    Mac::from_u64(v as u64).ok_or_else(|| corrupt(format!("MAC value {v} out of range")))
}

fn corrupt(msg: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, msg.into())
}

fn ranges_to_text(ranges: &[MacRange]) -> String {
    ranges
        .iter()
        .map(|r| r.display(MacFormat::Hyperv))
        .collect::<Vec<_>>()
        .join(",")
}

fn ranges_from_text(s: &str) -> SqlResult<Vec<MacRange>> {
    s.split(',')
        .map(|r| MacRange::parse(r).map_err(|e| corrupt(format!("stored range {r}: {e}"))))
        .collect()
}

/// Writes one change. Called inside the batch transaction.
pub fn apply_change(conn: &Connection, change: &Change) -> SqlResult<()> {
    match change {
        Change::PoolSaved { spec, cursor } => {
            conn.prepare_cached(
                "INSERT OR REPLACE INTO pools (name, ranges, alloc_order, cooldown_ms, duplicates, low_water_bp, cursor)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                spec.name.as_str(),
                ranges_to_text(&spec.ranges),
                spec.policy.order.name(),
                spec.policy.cooldown.as_millis() as i64,
                spec.policy.duplicates.name(),
                spec.policy.low_water.basis_points(),
                cursor.to_u64() as i64,
            ])?;
        }
        Change::PoolDeleted { name } => {
            let ranges: String = conn.query_row(
                "SELECT ranges FROM pools WHERE name = ?1",
                [name.as_str()],
                |r| r.get(0),
            )?;
            for r in ranges_from_text(&ranges)? {
                conn.prepare_cached("DELETE FROM cooling WHERE mac BETWEEN ?1 AND ?2")?
                    .execute(params![r.first().to_u64() as i64, r.last().to_u64() as i64])?;
            }
            conn.prepare_cached("DELETE FROM pools WHERE name = ?1")?
                .execute([name.as_str()])?;
        }
        Change::CursorMoved { pool, cursor } => {
            conn.prepare_cached("UPDATE pools SET cursor = ?2 WHERE name = ?1")?
                .execute(params![pool.as_str(), cursor.to_u64() as i64])?;
        }
        Change::LeaseSaved(l) => {
            conn.prepare_cached(
                "INSERT OR REPLACE INTO leases (vm_id, adapter_id, mac, pool, vm_name, host, cluster, state, created_ms, duplicate)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(params![
                l.owner.vm_id,
                l.owner.adapter_id,
                l.mac.to_u64() as i64,
                l.pool.as_str(),
                l.owner.vm_name,
                l.owner.host,
                l.owner.cluster,
                l.state.name(),
                l.created.as_millis() as i64,
                l.duplicate,
            ])?;
        }
        Change::LeaseDeleted { mac, owner } => {
            conn.prepare_cached(
                "DELETE FROM leases WHERE mac = ?1 AND vm_id = ?2 AND adapter_id = ?3",
            )?
            .execute(params![mac.to_u64() as i64, owner.vm_id, owner.adapter_id])?;
        }
        Change::HoldSaved(h) => {
            conn.prepare_cached(
                "INSERT OR REPLACE INTO holds (mac, vm_id, reason, reference, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                h.mac.to_u64() as i64,
                h.vm_id,
                h.reason.name(),
                h.reference,
                h.created.as_millis() as i64
            ])?;
        }
        Change::HoldDeleted(k) => {
            conn.prepare_cached(
                "DELETE FROM holds WHERE mac = ?1 AND vm_id = ?2 AND reason = ?3 AND reference = ?4",
            )?
            .execute(params![k.mac.to_u64() as i64, k.vm_id, k.reason.name(), k.reference])?;
        }
        Change::CoolingStarted { mac, until } => {
            conn.prepare_cached("INSERT OR REPLACE INTO cooling (mac, until_ms) VALUES (?1, ?2)")?
                .execute(params![mac.to_u64() as i64, until.as_millis() as i64])?;
        }
        Change::CoolingCleared { mac } => {
            conn.prepare_cached("DELETE FROM cooling WHERE mac = ?1")?
                .execute([mac.to_u64() as i64])?;
        }
        Change::History(h) => insert_history(conn, h)?,
        Change::InventorySaved(s) => save_inventory(conn, s)?,
        Change::InventoryPatched(p) => patch_inventory(conn, p)?,
        Change::DepartedSaved(l) => {
            conn.prepare_cached(
                "INSERT OR REPLACE INTO departed (mac, vm_id, adapter_id, pool, vm_name, host, cluster, created_ms, duplicate)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                l.mac.to_u64() as i64,
                l.owner.vm_id,
                l.owner.adapter_id,
                l.pool.as_str(),
                l.owner.vm_name,
                l.owner.host,
                l.owner.cluster,
                l.created.as_millis() as i64,
                l.duplicate,
            ])?;
        }
        Change::DepartedCleared { mac } => {
            conn.prepare_cached("DELETE FROM departed WHERE mac = ?1")?
                .execute([mac.to_u64() as i64])?;
        }
        Change::BlockSaved(b) => {
            conn.prepare_cached(
                "INSERT OR REPLACE INTO blocks (id, pool, host, first_mac, last_mac, state, claimed_ms, changed_ms, unused_since_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                b.id as i64,
                b.pool.as_str(),
                b.host,
                b.range.first().to_u64() as i64,
                b.range.last().to_u64() as i64,
                b.state.name(),
                b.claimed.as_millis() as i64,
                b.changed.as_millis() as i64,
                b.unused_since.map(|t| t.as_millis() as i64),
            ])?;
        }
    }
    Ok(())
}

/// Replaces the host's inventory rows with `s`.
/// A host's first inventory: every row of the host replaced.
fn save_inventory(conn: &Connection, s: &StoredInventory) -> SqlResult<()> {
    let inv = &s.inventory;
    let host = inv.host();
    for table in ["inventories", "inventory_vms", "inventory_adapters"] {
        conn.prepare_cached(&format!("DELETE FROM {table} WHERE host = ?1"))?
            .execute([host])?;
    }
    save_header(conn, s.generation, s.received, inv)?;
    for (i, vm) in inv.vms().iter().enumerate() {
        save_vm(conn, host, i, vm)?;
    }
    Ok(())
}

/// A later inventory as its diff: the header row, the management OS's few vNICs, and only the
/// VMs that changed or went, so a report that changes k VMs writes O(k) rows (none but the
/// header for a report that changes nothing).
fn patch_inventory(conn: &Connection, p: &InventoryPatch) -> SqlResult<()> {
    let host = p.host();
    conn.prepare_cached("DELETE FROM inventory_adapters WHERE host = ?1 AND vm_seq = ?2")?
        .execute(params![host, MANAGEMENT_OS_SEQ])?;
    save_header(conn, p.generation, p.received, &p.header)?;
    let len = p.len as i64;
    conn.prepare_cached("DELETE FROM inventory_vms WHERE host = ?1 AND seq >= ?2")?
        .execute(params![host, len])?;
    conn.prepare_cached("DELETE FROM inventory_adapters WHERE host = ?1 AND vm_seq >= ?2")?
        .execute(params![host, len])?;
    for (i, vm) in &p.vms {
        conn.prepare_cached("DELETE FROM inventory_vms WHERE host = ?1 AND seq = ?2")?
            .execute(params![host, *i as i64])?;
        conn.prepare_cached("DELETE FROM inventory_adapters WHERE host = ?1 AND vm_seq = ?2")?
            .execute(params![host, *i as i64])?;
        save_vm(conn, host, *i, vm)?;
    }
    Ok(())
}

/// The `inventories` row (replaced) and the management OS's vNICs, which the caller removed.
fn save_header(
    conn: &Connection,
    generation: u64,
    received: Timestamp,
    inv: &HostInventory,
) -> SqlResult<()> {
    let host = inv.host();
    let ipv4: Vec<String> = inv.ipv4.iter().map(|ip| ip.to_string()).collect();
    conn.prepare_cached(
        "INSERT OR REPLACE INTO inventories (host, generation, received_ms, cluster, ipv4, range_first, range_last,
         cursor, cursor_source, strategy) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        host,
        generation as i64,
        received.as_millis() as i64,
        inv.cluster,
        ipv4.join(","),
        inv.dynamic_range().map(|r| r.first().to_u64() as i64),
        inv.dynamic_range().map(|r| r.last().to_u64() as i64),
        inv.cursor().map(|m| m.to_u64() as i64),
        inv.cursor_source.map(|c| c.name()),
        inv.strategy,
    ])?;
    for (j, a) in inv.management_adapters.iter().enumerate() {
        conn.prepare_cached(
            "INSERT INTO inventory_adapters (host, vm_seq, seq, name, mac, dynamic) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            host,
            MANAGEMENT_OS_SEQ,
            j as i64,
            a.name,
            a.mac.to_u64() as i64,
            a.kind == MacKind::Dynamic,
        ])?;
    }
    Ok(())
}

/// The rows of the VM at position `i` of `host`'s inventory (none there yet).
fn save_vm(conn: &Connection, host: &str, i: usize, vm: &Vm) -> SqlResult<()> {
    conn.prepare_cached(
        "INSERT INTO inventory_vms (host, seq, vm_id, name, state) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![host, i as i64, vm.id(), vm.name, vm.state.name()])?;
    for (j, a) in vm.adapters.iter().enumerate() {
        let cp = match &a.location {
            AdapterLocation::Live => None,
            AdapterLocation::Checkpoint(c) => Some(c),
        };
        conn.prepare_cached(
            "INSERT INTO inventory_adapters (host, vm_seq, seq, name, mac, dynamic, checkpoint_id, checkpoint_name,
             checkpoint_type, checkpoint_created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?
        .execute(params![
            host,
            i as i64,
            j as i64,
            a.name,
            a.mac.to_u64() as i64,
            a.kind == MacKind::Dynamic,
            cp.map(|c| c.id.as_str()),
            cp.map(|c| c.name.as_str()),
            cp.map(|c| c.kind.name()),
            cp.and_then(|c| c.created).map(|t| t.as_millis() as i64),
        ])?;
    }
    Ok(())
}

/// The `vm_seq` of the management OS's vNICs in `inventory_adapters` (schema migration 4).
const MANAGEMENT_OS_SEQ: i64 = -1;

/// Every stored inventory, rebuilt through the domain constructors (which re-check them).
fn load_inventories(conn: &Connection) -> SqlResult<Vec<StoredInventory>> {
    let mut out = Vec::new();
    let mut stmt = conn.prepare(
        "SELECT host, generation, received_ms, cluster, ipv4, range_first, range_last, cursor, cursor_source, strategy
         FROM inventories ORDER BY host",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let host: String = r.get(0)?;
        let mut inv = HostInventory::new(host.clone()).map_err(|e| corrupt(e.to_string()))?;
        inv.cluster = r.get(3)?;
        let ipv4: String = r.get(4)?;
        inv.ipv4 = ipv4
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().map_err(|_| corrupt(format!("stored IPv4 {s}"))))
            .collect::<SqlResult<_>>()?;
        let range = match (r.get::<_, Option<i64>>(5)?, r.get::<_, Option<i64>>(6)?) {
            (Some(f), Some(l)) => Some(
                MacRange::new(mac_col(f)?, mac_col(l)?)
                    .map_err(|e| corrupt(format!("stored host range: {e}")))?,
            ),
            _ => None,
        };
        let cursor = r.get::<_, Option<i64>>(7)?.map(mac_col).transpose()?;
        inv.set_dynamic_range(range, cursor)
            .map_err(|e| corrupt(e.to_string()))?;
        inv.cursor_source = r
            .get::<_, Option<String>>(8)?
            .map(|c| CursorSource::parse(&c).map_err(corrupt))
            .transpose()?;
        inv.strategy = r.get(9)?;
        let mut mgmt_stmt = conn.prepare_cached(
            "SELECT name, mac, dynamic FROM inventory_adapters WHERE host = ?1 AND vm_seq = ?2 ORDER BY seq",
        )?;
        let mut mgmt = mgmt_stmt.query(params![host, MANAGEMENT_OS_SEQ])?;
        while let Some(a) = mgmt.next()? {
            inv.management_adapters.push(Adapter {
                id: None,
                name: a.get(0)?,
                mac: mac_col(a.get(1)?)?,
                kind: if a.get(2)? {
                    MacKind::Dynamic
                } else {
                    MacKind::Static
                },
                location: AdapterLocation::Live,
            });
        }
        let mut vms_stmt = conn.prepare_cached(
            "SELECT seq, vm_id, name, state FROM inventory_vms WHERE host = ?1 ORDER BY seq",
        )?;
        let mut vms = vms_stmt.query([&host])?;
        while let Some(v) = vms.next()? {
            let seq: i64 = v.get(0)?;
            let mut vm = Vm::new(
                v.get::<_, String>(1)?,
                v.get::<_, String>(2)?,
                VmState::parse(&v.get::<_, String>(3)?),
            )
            .map_err(|e| corrupt(e.to_string()))?;
            let mut ad_stmt = conn.prepare_cached(
                "SELECT name, mac, dynamic, checkpoint_id, checkpoint_name, checkpoint_type, checkpoint_created_ms
                 FROM inventory_adapters WHERE host = ?1 AND vm_seq = ?2 ORDER BY seq",
            )?;
            let mut ads = ad_stmt.query(params![host, seq])?;
            while let Some(a) = ads.next()? {
                let location = match a.get::<_, Option<String>>(3)? {
                    None => AdapterLocation::Live,
                    Some(id) => AdapterLocation::Checkpoint(Checkpoint {
                        id,
                        name: a.get::<_, Option<String>>(4)?.unwrap_or_default(),
                        kind: CheckpointType::parse(
                            &a.get::<_, Option<String>>(5)?.unwrap_or_default(),
                        ),
                        created: a.get::<_, Option<i64>>(6)?.map(|t| Timestamp(t as u64)),
                    }),
                };
                vm.adapters.push(Adapter {
                    id: None,
                    name: a.get(0)?,
                    mac: mac_col(a.get(1)?)?,
                    kind: if a.get(2)? {
                        MacKind::Dynamic
                    } else {
                        MacKind::Static
                    },
                    location,
                });
            }
            inv.add_vm(vm).map_err(|e| corrupt(e.to_string()))?;
        }
        out.push(StoredInventory {
            generation: r.get::<_, i64>(1)? as u64,
            received: Timestamp(r.get::<_, i64>(2)? as u64),
            inventory: inv,
        });
    }
    Ok(out)
}

fn load_departed(conn: &Connection) -> SqlResult<Vec<Lease>> {
    // A departed lease is bound by definition: only bound leases are released this way.
    let mut stmt = conn.prepare(
        "SELECT vm_id, adapter_id, mac, pool, vm_name, host, cluster, 'bound', created_ms, duplicate FROM departed",
    )?;
    let rows = stmt.query_map([], lease_row)?;
    rows.collect()
}

/// A lease from the columns `vm_id, adapter_id, mac, pool, vm_name, host, cluster, state,
/// created_ms, duplicate`, in that order.
fn lease_row(r: &Row) -> SqlResult<Lease> {
    Ok(Lease {
        owner: Owner {
            vm_id: r.get(0)?,
            adapter_id: r.get(1)?,
            vm_name: r.get(4)?,
            host: r.get(5)?,
            cluster: r.get(6)?,
        },
        mac: mac_col(r.get(2)?)?,
        pool: PoolName::new(&r.get::<_, String>(3)?).map_err(corrupt)?,
        state: LeaseState::parse(&r.get::<_, String>(7)?).map_err(corrupt)?,
        created: Timestamp(r.get::<_, i64>(8)? as u64),
        duplicate: r.get(9)?,
    })
}

fn insert_history(conn: &Connection, h: &HistoryEntry) -> SqlResult<()> {
    conn.prepare_cached(
        "INSERT INTO history (at_ms, actor, action, mac, pool, vm_id, vm_name, adapter_id, host, reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        h.at.as_millis() as i64,
        h.actor,
        h.action.name(),
        h.mac.map(|m| m.to_u64() as i64),
        h.pool.as_ref().map(|p| p.as_str().to_string()),
        h.vm_id,
        h.vm_name,
        h.adapter_id,
        h.host,
        h.reason,
    ])?;
    Ok(())
}

/// Reads everything the in-memory authority is rebuilt from.
pub fn load(conn: &Connection) -> SqlResult<PersistedState> {
    let mut pools = Vec::new();
    let mut stmt = conn.prepare(
        "SELECT name, ranges, alloc_order, cooldown_ms, duplicates, low_water_bp, cursor FROM pools ORDER BY name",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let name: String = r.get(0)?;
        let spec = PoolSpec {
            name: PoolName::new(&name).map_err(corrupt)?,
            ranges: ranges_from_text(&r.get::<_, String>(1)?)?,
            policy: PoolPolicy {
                order: AllocationOrder::parse(&r.get::<_, String>(2)?).map_err(corrupt)?,
                cooldown: Duration::from_millis(r.get::<_, i64>(3)? as u64),
                duplicates: DuplicatePolicy::parse(&r.get::<_, String>(4)?).map_err(corrupt)?,
                low_water: LowWater::from_basis_points(r.get(5)?).map_err(corrupt)?,
            },
        };
        pools.push((spec, mac_col(r.get(6)?)?));
    }
    let mut stmt = conn.prepare(
        "SELECT vm_id, adapter_id, mac, pool, vm_name, host, cluster, state, created_ms, duplicate FROM leases",
    )?;
    let leases = stmt
        .query_map([], lease_row)?
        .collect::<SqlResult<Vec<_>>>()?;
    let mut holds = Vec::new();
    let mut stmt = conn.prepare("SELECT mac, vm_id, reason, reference, created_ms FROM holds")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        holds.push(Hold {
            mac: mac_col(r.get(0)?)?,
            vm_id: r.get(1)?,
            reason: HoldReason::parse(&r.get::<_, String>(2)?).map_err(corrupt)?,
            reference: r.get(3)?,
            created: Timestamp(r.get::<_, i64>(4)? as u64),
        });
    }
    let mut cooling = Vec::new();
    let mut stmt = conn.prepare("SELECT mac, until_ms FROM cooling")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        cooling.push((mac_col(r.get(0)?)?, Timestamp(r.get::<_, i64>(1)? as u64)));
    }
    Ok(PersistedState {
        pools,
        leases,
        holds,
        cooling,
        inventories: load_inventories(conn)?,
        departed: load_departed(conn)?,
        blocks: load_blocks(conn)?,
    })
}

/// The blocks that still exist, plus the highest freed one (so ids are never reused).
fn load_blocks(conn: &Connection) -> SqlResult<Vec<Block>> {
    let mut stmt = conn.prepare(
        "SELECT id, pool, host, first_mac, last_mac, state, claimed_ms, changed_ms, unused_since_ms
         FROM blocks WHERE state <> 'free' OR id = (SELECT MAX(id) FROM blocks) ORDER BY id",
    )?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let state: String = r.get(5)?;
        let pool: String = r.get(1)?;
        out.push(Block {
            id: r.get::<_, i64>(0)? as u64,
            pool: PoolName::new(&pool).map_err(corrupt)?,
            host: r.get(2)?,
            range: MacRange::new(mac_col(r.get(3)?)?, mac_col(r.get(4)?)?)
                .map_err(|e| corrupt(e.to_string()))?,
            state: BlockState::parse(&state)
                .ok_or_else(|| corrupt(format!("block state {state}")))?,
            claimed: Timestamp(r.get::<_, i64>(6)? as u64),
            changed: Timestamp(r.get::<_, i64>(7)? as u64),
            unused_since: r.get::<_, Option<i64>>(8)?.map(|t| Timestamp(t as u64)),
        });
    }
    Ok(out)
}

fn history_row(r: &Row) -> SqlResult<HistoryEntry> {
    let action: String = r.get(2)?;
    let pool: Option<String> = r.get(4)?;
    Ok(HistoryEntry {
        at: Timestamp(r.get::<_, i64>(0)? as u64),
        actor: r.get(1)?,
        action: HistoryAction::parse(&action)
            .ok_or_else(|| corrupt(format!("history action {action}")))?,
        mac: r.get::<_, Option<i64>>(3)?.map(mac_col).transpose()?,
        pool: pool
            .map(|p| PoolName::new(&p).map_err(corrupt))
            .transpose()?,
        vm_id: r.get(5)?,
        vm_name: r.get(6)?,
        adapter_id: r.get(7)?,
        host: r.get(8)?,
        reason: r.get(9)?,
    })
}

/// The id of the newest history row (0 without any).
pub fn last_history_id(conn: &Connection) -> SqlResult<u64> {
    conn.query_row("SELECT COALESCE(MAX(id), 0) FROM history", [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|id| id as u64)
}

/// History rows, newest first, older than `f.before` when given. The statement is built from the
/// filter: constant text and placeholders only, the values travel as parameters. A MAC or VM
/// filter uses `history_mac` / `history_vm` (both end in `id`, so the cursor is part of the range).
pub fn history(conn: &Connection, f: &HistoryFilter) -> SqlResult<Vec<HistoryRecord>> {
    let mut sql = String::from(
        "SELECT at_ms, actor, action, mac, pool, vm_id, vm_name, adapter_id, host, reason, id \
         FROM history WHERE ",
    );
    let mut values: Vec<rusqlite::types::Value> = Vec::new();
    let mut cond = |column: &str, op: &str, v: rusqlite::types::Value| {
        values.push(v);
        sql += &format!("{column} {op} ?{} AND ", values.len());
    };
    let text = |s: &str| rusqlite::types::Value::Text(s.to_string());
    let int = |i: u64| rusqlite::types::Value::Integer(i.min(i64::MAX as u64) as i64);
    if let Some(mac) = f.mac {
        cond("mac", "=", int(mac.to_u64()));
    }
    if let Some(vm) = &f.vm_id {
        cond("vm_id", "=", text(vm));
    }
    if let Some(actor) = &f.actor {
        cond("actor", "=", text(actor));
    }
    if let Some(action) = f.action {
        cond("action", "=", text(action.name()));
    }
    if let Some(pool) = &f.pool {
        cond("pool", "=", text(pool));
    }
    if let Some(host) = &f.host {
        cond("host", "=", text(host));
    }
    if let Some(t) = f.since {
        cond("at_ms", ">=", int(t.0));
    }
    if let Some(t) = f.until {
        cond("at_ms", "<", int(t.0));
    }
    cond("id", "<", int(f.before.unwrap_or(u64::MAX)));
    values.push(rusqlite::types::Value::Integer(i64::from(f.limit.max(1))));
    let sql = format!(
        "{} ORDER BY id DESC LIMIT ?{}",
        sql.trim_end_matches(" AND "),
        values.len()
    );
    let mut s = conn.prepare_cached(&sql)?;
    let mut rows = s.query(rusqlite::params_from_iter(values))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(HistoryRecord {
            entry: history_row(r)?,
            id: r.get::<_, i64>(10)? as u64,
        });
    }
    Ok(out)
}

/// Every history entry, oldest first (for `store migrate`).
pub fn all_history(conn: &Connection) -> SqlResult<Vec<HistoryEntry>> {
    let mut s = conn.prepare(
        "SELECT at_ms, actor, action, mac, pool, vm_id, vm_name, adapter_id, host, reason FROM history ORDER BY id",
    )?;
    let mut rows = s.query([])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(history_row(r)?);
    }
    Ok(out)
}

pub fn save_token(conn: &Connection, t: &TokenRecord) -> SqlResult<()> {
    conn.prepare_cached(
        "INSERT INTO tokens (id, name, role, host, secret_hash, created_ms, revoked_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        t.id,
        t.name,
        t.role.name(),
        t.host,
        &t.secret_hash[..],
        t.created.as_millis() as i64,
        t.revoked.map(|r| r.as_millis() as i64),
    ])?;
    Ok(())
}

pub fn revoke_token(conn: &Connection, id: &str, at: Timestamp) -> SqlResult<Option<TokenRecord>> {
    conn.prepare_cached("UPDATE tokens SET revoked_ms = ?2 WHERE id = ?1 AND revoked_ms IS NULL")?
        .execute(params![id, at.as_millis() as i64])?;
    conn.query_row(
        "SELECT id, name, role, host, secret_hash, created_ms, revoked_ms FROM tokens WHERE id = ?1",
        [id],
        token_row,
    )
    .optional()
}

pub fn tokens(conn: &Connection) -> SqlResult<Vec<TokenRecord>> {
    let mut s = conn.prepare_cached(
        "SELECT id, name, role, host, secret_hash, created_ms, revoked_ms FROM tokens ORDER BY created_ms, id",
    )?;
    let rows = s.query_map([], token_row)?;
    rows.collect()
}

fn token_row(r: &Row) -> SqlResult<TokenRecord> {
    let hash: Vec<u8> = r.get(4)?;
    Ok(TokenRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        role: Role::parse(&r.get::<_, String>(2)?).map_err(corrupt)?,
        host: r.get(3)?,
        secret_hash: hash
            .try_into()
            .map_err(|_| corrupt("token hash is not 32 bytes".into()))?,
        created: Timestamp(r.get::<_, i64>(5)? as u64),
        revoked: r.get::<_, Option<i64>>(6)?.map(|v| Timestamp(v as u64)),
    })
}
