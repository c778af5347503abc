//! Versioned schema migrations. `PRAGMA user_version` holds the number of migrations applied;
//! a store written by a newer macpool is refused rather than misread.

use rusqlite::Connection;

/// Each entry is one migration, applied in order inside one transaction. Append only.
const MIGRATIONS: &[&str] = &[
    // 1: the authority's first schema.
    r#"
    CREATE TABLE pools (
        name          TEXT PRIMARY KEY,
        ranges        TEXT NOT NULL,      -- "FIRST-LAST,FIRST-LAST" as 12 hex digits each
        alloc_order   TEXT NOT NULL,
        cooldown_ms   INTEGER NOT NULL,
        duplicates    TEXT NOT NULL,
        low_water_bp  INTEGER NOT NULL,
        cursor        INTEGER NOT NULL
    );
    CREATE TABLE leases (
        vm_id       TEXT NOT NULL,
        adapter_id  TEXT NOT NULL,
        mac         INTEGER NOT NULL,
        pool        TEXT NOT NULL REFERENCES pools(name),
        vm_name     TEXT,
        host        TEXT,
        cluster     TEXT,
        state       TEXT NOT NULL,
        created_ms  INTEGER NOT NULL,
        duplicate   INTEGER NOT NULL,
        -- Keyed by MAC so that next-fit allocations append to the same pages; the core keeps
        -- (vm_id, adapter_id) unique.
        PRIMARY KEY (mac, vm_id, adapter_id)
    ) WITHOUT ROWID;
    -- Defence in depth for "no MAC leased twice": only flagged duplicates may share a MAC.
    CREATE UNIQUE INDEX leases_mac_unflagged ON leases(mac) WHERE duplicate = 0;
    CREATE TABLE holds (
        mac         INTEGER NOT NULL,
        vm_id       TEXT NOT NULL,
        reason      TEXT NOT NULL,
        reference   TEXT NOT NULL,
        created_ms  INTEGER NOT NULL,
        PRIMARY KEY (mac, vm_id, reason, reference)
    );
    CREATE TABLE cooling (
        mac       INTEGER PRIMARY KEY,
        until_ms  INTEGER NOT NULL
    );
    CREATE TABLE history (
        id          INTEGER PRIMARY KEY,
        at_ms       INTEGER NOT NULL,
        actor       TEXT NOT NULL,
        action      TEXT NOT NULL,
        mac         INTEGER,
        pool        TEXT,
        vm_id       TEXT,
        vm_name     TEXT,
        adapter_id  TEXT,
        host        TEXT,
        reason      TEXT
    );
    CREATE INDEX history_mac ON history(mac, id);
    CREATE INDEX history_vm ON history(vm_id, id);
    CREATE TABLE tokens (
        id          TEXT PRIMARY KEY,
        name        TEXT NOT NULL,
        role        TEXT NOT NULL,
        host        TEXT,
        secret_hash BLOB NOT NULL,
        created_ms  INTEGER NOT NULL,
        revoked_ms  INTEGER
    );
    "#,
    // 2: host inventories (the latest per host) and the last owner of MACs released because
    // their VM vanished (so a live migration gets its lease back).
    r#"
    CREATE TABLE inventories (
        host         TEXT PRIMARY KEY,
        generation   INTEGER NOT NULL,
        received_ms  INTEGER NOT NULL,
        cluster      TEXT,
        ipv4         TEXT NOT NULL,      -- comma-separated dotted quads
        range_first  INTEGER,
        range_last   INTEGER,
        cursor       INTEGER
    );
    CREATE TABLE inventory_vms (
        host   TEXT NOT NULL,
        seq    INTEGER NOT NULL,         -- order within the inventory
        vm_id  TEXT NOT NULL,
        name   TEXT NOT NULL,
        state  TEXT NOT NULL,
        PRIMARY KEY (host, seq)
    ) WITHOUT ROWID;
    CREATE TABLE inventory_adapters (
        host                   TEXT NOT NULL,
        vm_seq                 INTEGER NOT NULL,
        seq                    INTEGER NOT NULL,
        name                   TEXT NOT NULL,
        mac                    INTEGER NOT NULL,
        dynamic                INTEGER NOT NULL,
        checkpoint_id          TEXT,     -- NULL for a live adapter
        checkpoint_name        TEXT,
        checkpoint_type        TEXT,
        checkpoint_created_ms  INTEGER,
        PRIMARY KEY (host, vm_seq, seq)
    ) WITHOUT ROWID;
    CREATE TABLE departed (
        mac         INTEGER PRIMARY KEY,
        vm_id       TEXT NOT NULL,
        adapter_id  TEXT NOT NULL,
        pool        TEXT NOT NULL,
        vm_name     TEXT,
        host        TEXT,
        cluster     TEXT,
        created_ms  INTEGER NOT NULL,
        duplicate   INTEGER NOT NULL
    );
    "#,
    // 3: blocks delegated to hosts' native allocators. Freed blocks stay (state 'free') so that
    // ids are never reused.
    r#"
    CREATE TABLE blocks (
        id                INTEGER PRIMARY KEY,
        pool              TEXT NOT NULL,
        host              TEXT NOT NULL,
        first_mac         INTEGER NOT NULL,
        last_mac          INTEGER NOT NULL,
        state             TEXT NOT NULL,
        claimed_ms        INTEGER NOT NULL,
        changed_ms        INTEGER NOT NULL,
        unused_since_ms   INTEGER
    );
    CREATE INDEX blocks_live ON blocks(state) WHERE state <> 'free';
    "#,
    // 4: what an agent says with its inventory (how it knows the cursor, its strategy). The
    // management OS's vNICs are rows of inventory_adapters with vm_seq -1 (no VM's).
    r#"
    ALTER TABLE inventories ADD COLUMN cursor_source TEXT;
    ALTER TABLE inventories ADD COLUMN strategy TEXT;
    "#,
];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database to [`SCHEMA_VERSION`], or explains why it cannot.
pub fn migrate(conn: &mut Connection) -> Result<(), String> {
    let current: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    if current > SCHEMA_VERSION {
        return Err(format!(
            "the store has schema version {current}, but this macpool only knows up to \
             {SCHEMA_VERSION}: it was written by a newer macpool; run that version (or newer)"
        ));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction().map_err(|e| e.to_string())?;
        tx.execute_batch(sql)
            .map_err(|e| format!("migration {} failed: {e}", i + 1))?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(|e| e.to_string())?;
        tx.commit().map_err(|e| e.to_string())?;
    }
    Ok(())
}
