//! Row mapping between SQLite and the domain types. The only place that knows column layouts.

use std::time::Duration;

use macpool_core::authority::Change;
use macpool_core::history::{HistoryAction, HistoryEntry};
use macpool_core::lease::{Hold, HoldReason, Lease, LeaseState, Owner};
use macpool_core::pool::{
    AllocationOrder, DuplicatePolicy, LowWater, PoolName, PoolPolicy, PoolSpec,
};
use macpool_core::{Mac, MacFormat, MacRange, Timestamp};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::{HistoryFilter, Role, TokenRecord};

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
    }
    Ok(())
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

pub struct Loaded {
    pub pools: Vec<(PoolSpec, Mac)>,
    pub leases: Vec<Lease>,
    pub holds: Vec<Hold>,
    pub cooling: Vec<(Mac, Timestamp)>,
}

/// Reads everything the in-memory authority is rebuilt from.
pub fn load(conn: &Connection) -> SqlResult<Loaded> {
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
    let mut leases = Vec::new();
    let mut stmt = conn.prepare(
        "SELECT vm_id, adapter_id, mac, pool, vm_name, host, cluster, state, created_ms, duplicate FROM leases",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        leases.push(Lease {
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
        });
    }
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
    Ok(Loaded {
        pools,
        leases,
        holds,
        cooling,
    })
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

/// History rows, newest first.
pub fn history(conn: &Connection, f: &HistoryFilter) -> SqlResult<Vec<HistoryEntry>> {
    let cols = "at_ms, actor, action, mac, pool, vm_id, vm_name, adapter_id, host, reason";
    let limit = i64::from(f.limit.max(1));
    let mut out = Vec::new();
    let mut push = |mut rows: rusqlite::Rows| -> SqlResult<()> {
        while let Some(r) = rows.next()? {
            out.push(history_row(r)?);
        }
        Ok(())
    };
    match (&f.mac, &f.vm_id) {
        (Some(mac), Some(vm)) => {
            let mut s = conn.prepare_cached(&format!(
                "SELECT {cols} FROM history WHERE mac = ?1 AND vm_id = ?2 ORDER BY id DESC LIMIT ?3"
            ))?;
            push(s.query(params![mac.to_u64() as i64, vm, limit])?)?;
        }
        (Some(mac), None) => {
            let mut s = conn.prepare_cached(&format!(
                "SELECT {cols} FROM history WHERE mac = ?1 ORDER BY id DESC LIMIT ?2"
            ))?;
            push(s.query(params![mac.to_u64() as i64, limit])?)?;
        }
        (None, Some(vm)) => {
            let mut s = conn.prepare_cached(&format!(
                "SELECT {cols} FROM history WHERE vm_id = ?1 ORDER BY id DESC LIMIT ?2"
            ))?;
            push(s.query(params![vm, limit])?)?;
        }
        (None, None) => {
            let mut s = conn.prepare_cached(&format!(
                "SELECT {cols} FROM history ORDER BY id DESC LIMIT ?1"
            ))?;
            push(s.query(params![limit])?)?;
        }
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
